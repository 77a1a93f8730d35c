//! What every image format offers its readers: the guest's bytes, and a map that tells which
//! ranges hold data and which are known zeros, so a backup reads and stores only the former.

use std::fmt;
use std::io;

use crate::error::{ImageError, ImageErrorKind};
use crate::read_at::ReadAt;

/// An image format this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The guest's bytes as they are, byte for byte.
    Raw,
    /// QEMU copy-on-write image, version 2 or 3.
    Qcow2,
    /// Virtual Hard Disk 1.0 (QEMU's `vpc`): fixed or dynamic.
    Vhd,
    /// Virtual Hard Disk v2: fixed or dynamic.
    Vhdx,
    /// VMware virtual disk: monolithic sparse or stream-optimized in one file, or flat or
    /// split over extent files a descriptor file lists; a delta disk over its parent.
    Vmdk,
    /// VirtualBox disk image, version 1.1: dynamic or fixed.
    Vdi,
}

impl Format {
    /// The format named as QEMU names it (`raw`, `qcow2`, `vpc`, `vhdx`, `vmdk`, `vdi`), as
    /// recorded in a qcow2
    /// image's backing-format extension; `vhd` is taken for `vpc` too. `None` for any other
    /// name.
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            "vpc" | "vhd" => Some(Format::Vhd),
            "vhdx" => Some(Format::Vhdx),
            "vmdk" => Some(Format::Vmdk),
            "vdi" => Some(Format::Vdi),
            _ => None,
        }
    }

    /// QEMU's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a range of the guest disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtentKind {
    /// Bytes stored somewhere in the image or its backing chain: read them. They may still
    /// happen to be zeros.
    Data,
    /// Known zeros that need not be read: qcow2 zero clusters, clusters unallocated in the
    /// whole backing chain, holes of a raw file, the part of a disk past its backing file.
    Zero,
}

/// A range of the guest disk and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Guest offset of the first byte.
    pub offset: u64,
    /// Length in bytes, never 0.
    pub length: u64,
    /// What the range holds.
    pub kind: ExtentKind,
}

impl Extent {
    /// The guest offset just past the extent.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// Where a run of guest bytes is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stored {
    /// Verbatim in the image's own file, from this file offset on.
    InFile(u64),
    /// Verbatim in another file the image is made of (a VMDK descriptor's extent files,
    /// the files of a backing chain), the one [`DiskImage::file_name`] names by this
    /// number, from the file offset on.
    InNamedFile(u32, u64),
    /// Anywhere else: compressed, or zeros. Read it with [`DiskImage::read_at`].
    Elsewhere,
}

/// A run of guest bytes and where it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Run {
    /// Guest offset of the first byte.
    pub offset: u64,
    /// Length in bytes, never 0.
    pub length: u64,
    /// Where the bytes are.
    pub stored: Stored,
}

/// Appends a run of `length` bytes at `offset`, merged into the last run when it goes on
/// where that one ends, in the guest and in the file.
pub(crate) fn push_run(runs: &mut Vec<Run>, offset: u64, length: u64, stored: Stored) {
    if length == 0 {
        return;
    }
    if let Some(last) = runs.last_mut() {
        let follows = match (last.stored, stored) {
            (Stored::InFile(a), Stored::InFile(b)) => a.checked_add(last.length) == Some(b),
            (Stored::InNamedFile(f, a), Stored::InNamedFile(g, b)) => {
                f == g && a.checked_add(last.length) == Some(b)
            }
            (Stored::Elsewhere, Stored::Elsewhere) => true,
            _ => false,
        };
        if follows && last.offset + last.length == offset {
            last.length += length;
            return;
        }
    }
    runs.push(Run {
        offset,
        length,
        stored,
    });
}

/// Appends the runs of `lower`, the image below another (a qcow2 image's backing file, a
/// VMDK delta disk's parent), over `offset..offset + length`, with the files they lie in
/// numbered for the image above from `first` on: `lower`'s own file becomes
/// `InNamedFile(first, _)` and its file `f` `InNamedFile(first + 1 + f, _)`, as
/// [`lower_file_name`] names them back. A whole chain is numbered this way, each image
/// counting the files of those below it after its own.
pub(crate) fn push_lower_runs(
    runs: &mut Vec<Run>,
    lower: &mut dyn DiskImage,
    first: u32,
    offset: u64,
    length: u64,
) -> Result<(), ImageError> {
    for run in lower.runs(offset, length)? {
        let file = match run.stored {
            Stored::InFile(at) => Some((first, at)),
            Stored::InNamedFile(f, at) => first
                .checked_add(1)
                .and_then(|n| n.checked_add(f))
                .map(|f| (f, at)),
            Stored::Elsewhere => None,
        };
        let stored = match file {
            Some((f, at)) => Stored::InNamedFile(f, at),
            // Past the numbers there are: read through the image instead.
            None => Stored::Elsewhere,
        };
        push_run(runs, run.offset, run.length, stored);
    }
    Ok(())
}

/// The name of the file numbered `file` by [`push_lower_runs`] with `first`; `None` for
/// a number below `first` or one `lower` does not give.
pub(crate) fn lower_file_name(lower: &dyn DiskImage, first: u32, file: u32) -> Option<&str> {
    match file.checked_sub(first)? {
        0 => Some(lower.name()),
        f => lower.file_name(f - 1),
    }
}

/// A disk image opened for reading: the virtual disk the guest sees.
///
/// Object safe; [`crate::open`] returns a `Box<dyn DiskImage>`. Methods take `&mut self`
/// because reading goes through caches.
pub trait DiskImage {
    /// The name the image was opened under (for messages).
    fn name(&self) -> &str;

    /// The image's format.
    fn format(&self) -> Format;

    /// Size of the virtual disk in bytes.
    fn virtual_size(&self) -> u64;

    /// Fills `buf` with the guest's bytes at `offset`. Unallocated and zero ranges read as
    /// zeros; a read passing the virtual size is an [`ImageErrorKind::OutOfRange`] error.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError>;

    /// The extents covering `offset .. offset + length`: sorted, non-overlapping, adjacent
    /// extents of the same kind merged, exactly covering the range (empty for `length` 0).
    /// A range passing the virtual size is an [`ImageErrorKind::OutOfRange`] error.
    ///
    /// The result holds one extent per change of kind, so it grows with fragmentation (at
    /// worst about one extent per cluster); map a large disk window by window to bound it.
    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError>;

    /// Where the guest bytes `offset .. offset + length` are stored: runs in order
    /// exactly covering the range, runs contiguous in the image's own file merged. A
    /// caller that can read the file itself (the host, straight into a backup) reads the
    /// runs stored in it there and only the rest through [`DiskImage::read_at`], saving
    /// a copy of every byte. A run said to be in the file lies wholly inside it. A range
    /// passing the virtual size is an [`ImageErrorKind::OutOfRange`] error.
    ///
    /// The default stores everything elsewhere.
    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        check_range(self.name(), offset, length, self.virtual_size())?;
        let mut runs = Vec::new();
        push_run(&mut runs, offset, length, Stored::Elsewhere);
        Ok(runs)
    }

    /// The name, as the opener gave it, of the file [`Stored::InNamedFile`] runs call
    /// `file`; `None` for a number no run gave. The default names none.
    fn file_name(&self, file: u32) -> Option<&str> {
        let _ = file;
        None
    }

    /// The ranges of `offset..offset + length`, sorted and merged, that the image's
    /// persistent dirty bitmap named `bitmap` marks as written since the bitmap was created
    /// or last cleared: what an incremental backup of a stopped VM's disk must read.
    /// Refused with [`ImageErrorKind::Bitmap`] when the image has no such bitmap or it may
    /// miss writes. The default, for formats without bitmaps, refuses every name.
    fn dirty_ranges(
        &mut self,
        bitmap: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<(u64, u64)>, ImageError> {
        let _ = (offset, length);
        Err(ImageError::new(
            self.name(),
            ImageErrorKind::Bitmap {
                bitmap: bitmap.to_owned(),
                reason: format!(
                    "{} images hold no persistent dirty bitmaps (qcow2 images and NBD exports do)",
                    self.format().name()
                ),
            },
        ))
    }

    /// One line about the image and its backing chain, for logs.
    fn describe(&self) -> String;
}

impl<T: DiskImage + ?Sized> DiskImage for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn format(&self) -> Format {
        (**self).format()
    }
    fn virtual_size(&self) -> u64 {
        (**self).virtual_size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        (**self).read_at(offset, buf)
    }
    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError> {
        (**self).map(offset, length)
    }
    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        (**self).runs(offset, length)
    }
    fn file_name(&self, file: u32) -> Option<&str> {
        (**self).file_name(file)
    }
    fn dirty_ranges(
        &mut self,
        bitmap: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<(u64, u64)>, ImageError> {
        (**self).dirty_ranges(bitmap, offset, length)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// The guest disk of an image as a [`ReadAt`], for readers of partition tables and file
/// systems that sit on top of it. Image errors become [`io::Error`]s that wrap the
/// [`ImageError`] (recover it with `io::Error::get_ref` and `downcast_ref`).
#[derive(Debug)]
pub struct GuestReader<I> {
    image: I,
}

impl<I: DiskImage> GuestReader<I> {
    /// Wraps an opened image.
    pub fn new(image: I) -> Self {
        GuestReader { image }
    }

    /// The wrapped image.
    pub fn image(&mut self) -> &mut I {
        &mut self.image
    }

    /// Unwraps the image.
    pub fn into_inner(self) -> I {
        self.image
    }
}

impl<I: DiskImage> ReadAt for GuestReader<I> {
    fn len(&self) -> u64 {
        self.image.virtual_size()
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.image.read_at(offset, buf).map_err(|e| {
            let kind = match e.kind() {
                ImageErrorKind::OutOfRange { .. } => io::ErrorKind::UnexpectedEof,
                _ => io::ErrorKind::InvalidData,
            };
            io::Error::new(kind, e)
        })
    }
}

/// Checks that `offset .. offset + length` lies within a disk of `size` bytes.
pub(crate) fn check_range(
    name: &str,
    offset: u64,
    length: u64,
    size: u64,
) -> Result<(), ImageError> {
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(ImageError::new(
            name,
            ImageErrorKind::OutOfRange {
                offset,
                length,
                size,
            },
        )),
    }
}

/// Builds a map from contiguous pieces given in order, merging neighbours of one kind.
#[derive(Debug, Default)]
pub(crate) struct ExtentList {
    extents: Vec<Extent>,
}

impl ExtentList {
    /// Appends `length` bytes at `offset` (which must be where the last piece ended).
    pub(crate) fn push(&mut self, offset: u64, length: u64, kind: ExtentKind) {
        if length == 0 {
            return;
        }
        if let Some(last) = self.extents.last_mut() {
            debug_assert_eq!(last.end(), offset, "extents must be contiguous");
            if last.kind == kind && last.end() == offset {
                last.length = last.length.saturating_add(length);
                return;
            }
        }
        self.extents.push(Extent {
            offset,
            length,
            kind,
        });
    }

    /// Appends extents already sorted and contiguous with the last piece.
    pub(crate) fn extend(&mut self, extents: impl IntoIterator<Item = Extent>) {
        for e in extents {
            self.push(e.offset, e.length, e.kind);
        }
    }

    /// The finished map.
    pub(crate) fn into_vec(self) -> Vec<Extent> {
        self.extents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_list_merges_neighbours_of_one_kind() {
        let mut list = ExtentList::default();
        list.push(0, 10, ExtentKind::Data);
        list.push(10, 5, ExtentKind::Data);
        list.push(15, 0, ExtentKind::Zero);
        list.push(15, 5, ExtentKind::Zero);
        list.extend([Extent {
            offset: 20,
            length: 1,
            kind: ExtentKind::Zero,
        }]);
        assert_eq!(
            list.into_vec(),
            vec![
                Extent {
                    offset: 0,
                    length: 15,
                    kind: ExtentKind::Data
                },
                Extent {
                    offset: 15,
                    length: 6,
                    kind: ExtentKind::Zero
                },
            ]
        );
    }

    #[test]
    fn guest_reader_reads_the_guest_disk() {
        let raw = crate::Raw::new(vec![1u8, 2, 3, 4], "r", None);
        let mut reader = GuestReader::new(raw);
        assert_eq!(reader.len(), 4);
        let mut buf = [0u8; 2];
        reader.read_exact_at(2, &mut buf).unwrap();
        assert_eq!(buf, [3, 4]);
        let err = reader.read_exact_at(3, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<ImageError>());
        assert_eq!(inner.map(ImageError::disk), Some("r"));
    }

    #[test]
    fn ranges_are_checked_without_overflow() {
        assert!(check_range("d", 0, 10, 10).is_ok());
        assert!(check_range("d", 1, 10, 10).is_err());
        assert!(check_range("d", u64::MAX, 2, u64::MAX).is_err());
    }
}
