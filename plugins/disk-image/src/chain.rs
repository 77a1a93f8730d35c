//! Opening an image and its backing chain. An image names its backing file (and a VMDK
//! descriptor its extent files) as a string the host must resolve (a path relative to the
//! image, usually); this crate cannot open files itself, so the caller passes an opener
//! that turns each [`BackingRef`] into an [`ImageFile`]. The chain is opened whole before any read, so a missing or looping backing
//! file fails the open, not a read half-way through a backup.

use crate::error::{ImageError, ImageErrorKind};
use crate::qcow2::{MAGIC as QCOW2_MAGIC, Qcow2};
use crate::raw::Raw;
use crate::vdi::{self, Vdi};
use crate::vhd::{self, Vhd};
use crate::vhdx::{self, Vhdx};
use crate::vmdk::{self, Vmdk};
use crate::{DiskImage, Format, ReadAt};

/// Most backing files below one image. Real chains (snapshots of snapshots) stay far below;
/// the limit bounds the memory and open files a crafted chain can claim.
pub const MAX_BACKING_DEPTH: usize = 32;

/// An image file to open: its name, its bytes, and, for raw files, where its data lies.
pub struct ImageFile {
    /// A name that identifies the file uniquely (a canonical path, say): it appears in error
    /// messages, and a backing chain that reaches the same name twice is refused as a loop.
    pub name: String,
    /// The file's bytes.
    pub reader: Box<dyn ReadAt>,
    /// For a raw file, the `(offset, length)` ranges holding data as the host reported them
    /// (`SEEK_DATA`/`SEEK_HOLE`); the rest maps as zeros. `None`: all of it is data. Ignored
    /// for qcow2, whose own tables say what is allocated.
    pub data_ranges: Option<Vec<(u64, u64)>>,
}

impl ImageFile {
    /// A file with no hole information.
    pub fn new(name: impl Into<String>, reader: Box<dyn ReadAt>) -> Self {
        ImageFile {
            name: name.into(),
            reader,
            data_ranges: None,
        }
    }

    /// The same file with the host's data ranges.
    pub fn with_data_ranges(mut self, ranges: Vec<(u64, u64)>) -> Self {
        self.data_ranges = Some(ranges);
        self
    }
}

impl std::fmt::Debug for ImageFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFile")
            .field("name", &self.name)
            .field("len", &self.reader.len())
            .field("data_ranges", &self.data_ranges.as_ref().map(Vec::len))
            .finish()
    }
}

/// What a file named by an image is to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackingRole {
    /// A backing file (a qcow2 image's backing file, a VMDK delta disk's parent): a whole
    /// disk below the image.
    Backing,
    /// An extent file of a VMDK disk described by a descriptor: a range of the disk's
    /// bytes, stored in a file of its own.
    Extent,
    /// A parent the image knows only by an identity its file carries (a VDI differencing
    /// disk's, whose path VirtualBox keeps in the machine's settings): the opener looks
    /// at the files whose names end in `.` and [`ParentIdentity::extension`] beside the
    /// image and in the directory above it, in name order, and opens the first one
    /// [`ParentIdentity::matches`]. [`BackingRef::name`] says what is looked for.
    Search(ParentIdentity),
}

/// What the file of a parent an image knows only by identity carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParentIdentity {
    /// A VDI image whose creation UUID is this (bytes as stored).
    VdiUuid([u8; 16]),
}

impl ParentIdentity {
    /// The extension of the files the parent may be, without the dot.
    pub fn extension(&self) -> &'static str {
        match self {
            ParentIdentity::VdiUuid(_) => "vdi",
        }
    }

    /// Whether `reader` holds the parent. A file that cannot be read is not it.
    pub fn matches(&self, reader: &mut dyn ReadAt) -> bool {
        match self {
            ParentIdentity::VdiUuid(uuid) => vdi::creation_uuid(reader).as_ref() == Some(uuid),
        }
    }
}

/// A file an image refers to (a backing file, or an extent of a VMDK disk), handed to the
/// opener to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingRef {
    /// The backing file's name exactly as the image records it (bytes that are not UTF-8
    /// are replaced with U+FFFD). QEMU resolves a relative name against the directory of the
    /// image that refers to it.
    pub name: String,
    /// The [`ImageFile::name`] of the image that refers to it.
    pub referenced_by: String,
    /// The backing file's format if the image records it; `None` means it is probed. An
    /// extent is [`Format::Raw`] (flat) or [`Format::Vmdk`] (sparse).
    pub format: Option<Format>,
    /// Whether the file is a backing file or an extent.
    pub role: BackingRole,
}

impl BackingRef {
    /// The error of an opener that cannot open the file, for `reason`: about the image
    /// that refers to it, [`ImageErrorKind::BackingUnavailable`] or
    /// [`ImageErrorKind::ExtentUnavailable`] by its role.
    pub fn unavailable(&self, reason: impl Into<String>) -> ImageError {
        let reason = reason.into();
        let kind = match self.role {
            BackingRole::Backing | BackingRole::Search(_) => ImageErrorKind::BackingUnavailable {
                backing: self.name.clone(),
                reason,
            },
            BackingRole::Extent => ImageErrorKind::ExtentUnavailable {
                extent: self.name.clone(),
                reason,
            },
        };
        ImageError::new(&self.referenced_by, kind)
    }
}

/// Resolves a backing file reference to an open file, or fails (typically with
/// [`ImageErrorKind::BackingUnavailable`]).
pub type BackingOpener<'a> = dyn FnMut(&BackingRef) -> Result<ImageFile, ImageError> + 'a;

/// An opener for images that must not refer to other files: refuses every reference.
pub fn no_backing(backing: &BackingRef) -> Result<ImageFile, ImageError> {
    Err(backing.unavailable("other files are not available here"))
}

/// Opens an image and its backing chain. With `format` `None` the format is probed (see
/// [`probe`]). `opener` is called once for each backing file, top down.
pub fn open(
    file: ImageFile,
    format: Option<Format>,
    opener: &mut BackingOpener<'_>,
) -> Result<Box<dyn DiskImage>, ImageError> {
    open_in_chain(file, format, opener, &mut Vec::new())
}

/// Opens `file` below the images named in `chain` (top first).
pub(crate) fn open_in_chain(
    file: ImageFile,
    format: Option<Format>,
    opener: &mut BackingOpener<'_>,
    chain: &mut Vec<String>,
) -> Result<Box<dyn DiskImage>, ImageError> {
    in_chain(file, chain, |mut file, chain| {
        let format = match format {
            Some(f) => f,
            None => probe(&mut *file.reader, &file.name)?,
        };
        match format {
            Format::Raw => Ok(Box::new(Raw::new(file.reader, file.name, file.data_ranges)) as _),
            Format::Qcow2 => Qcow2::open_in_chain(file, opener, chain).map(|q| Box::new(q) as _),
            Format::Vhd => Vhd::open_in_chain(file, opener, chain).map(|v| Box::new(v) as _),
            Format::Vhdx => Vhdx::open_in_chain(file, opener, chain).map(|v| Box::new(v) as _),
            Format::Vmdk => Vmdk::open_in_chain(file, opener, chain).map(|v| Box::new(v) as _),
            Format::Vdi => Vdi::open_in_chain(file, opener, chain).map(|v| Box::new(v) as _),
        }
    })
}

/// Runs `open` on `file` with its name pushed on `chain` (top first), after refusing a
/// name already in the chain (a loop) and a chain deeper than [`MAX_BACKING_DEPTH`].
pub(crate) fn in_chain<T>(
    file: ImageFile,
    chain: &mut Vec<String>,
    open: impl FnOnce(ImageFile, &mut Vec<String>) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    let referrer = chain.last().cloned().unwrap_or_default();
    if chain.contains(&file.name) {
        let mut looped = chain.clone();
        looped.push(file.name);
        return Err(ImageError::new(
            referrer,
            ImageErrorKind::BackingLoop { chain: looped },
        ));
    }
    if chain.len() > MAX_BACKING_DEPTH {
        let mut names = chain.clone();
        names.push(file.name);
        return Err(ImageError::new(
            referrer,
            ImageErrorKind::BackingTooDeep {
                max: MAX_BACKING_DEPTH,
                chain: names,
            },
        ));
    }
    chain.push(file.name.clone());
    let opened = open(file, chain);
    chain.pop();
    opened
}

/// Other formats' signatures: `(offset, bytes, name)`. A file that starts with one of these
/// is almost surely not a raw disk, and reading it as one would back up container metadata
/// as if it were the guest's disk.
const FOREIGN_MAGICS: &[(usize, &[u8], &str)] = &[(0, b"QED\0", "QED")];

/// Guesses the format of a file: the qcow2 magic means qcow2, the VDI signature VDI, the
/// VMDK magic a sparse VMDK, a VMDK descriptor's first line a VMDK disk described by
/// that descriptor (and an ESXi snapshot extent's magic VMDK, refused when opened), the
/// VHDX signature VHDX, the VHD footer cookie at the start a
/// dynamic VHD, and a valid VHD footer ending the file a fixed VHD of the file's size less
/// the footer. The magic of another known format (QED) is refused; anything else is raw.
pub fn probe(reader: &mut dyn ReadAt, name: &str) -> Result<Format, ImageError> {
    const PROBE_LEN: u64 = 128;
    let mut head = [0u8; PROBE_LEN as usize];
    let n = reader.len().min(PROBE_LEN);
    let head = &mut head[..n as usize];
    reader.read_exact_at(0, head).map_err(|cause| {
        ImageError::new(
            name,
            ImageErrorKind::Io {
                offset: 0,
                length: n,
                cause,
            },
        )
    })?;
    if head.starts_with(&QCOW2_MAGIC) {
        return Ok(Format::Qcow2);
    }
    // A dynamic VHD starts with a copy of its footer; a fixed one has it only at the end,
    // and is taken for one only when that footer is valid and gives the file's size.
    if head.get(64..68) == Some(&vdi::SIGNATURE[..]) {
        return Ok(Format::Vdi);
    }
    // ESXi's snapshot extents too, so that one named on its own is refused as such,
    // not read as a raw disk.
    if [
        &vmdk::MAGIC[..],
        vmdk::DESCRIPTOR_MAGIC,
        vmdk::COWD_MAGIC,
        &vmdk::SESPARSE_MAGIC,
    ]
    .iter()
    .any(|magic| head.starts_with(magic))
    {
        return Ok(Format::Vmdk);
    }
    if head.starts_with(vhdx::SIGNATURE) {
        return Ok(Format::Vhdx);
    }
    if head.starts_with(vhd::FOOTER_COOKIE) {
        return Ok(Format::Vhd);
    }
    // A last sector that cannot be read holds no footer to go by; the disk's own reads
    // report why (an image that shrank, a failing device) where they meet it.
    let len = reader.len();
    if matches!(vhd::trailing_footer(reader, name), Ok(Some(f)) if f.is_fixed_for(len)) {
        return Ok(Format::Vhd);
    }
    for &(offset, magic, format) in FOREIGN_MAGICS {
        if head.get(offset..offset + magic.len()) == Some(magic) {
            return Err(ImageError::new(
                name,
                ImageErrorKind::Unsupported {
                    what: format!(
                        "the file looks like a {format} image, and {format} images are not \
                         supported; convert it with `qemu-img convert -O qcow2`, or open it \
                         as raw if it is a raw disk"
                    ),
                },
            ));
        }
    }
    Ok(Format::Raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probing_tells_qcow2_raw_and_foreign_formats_apart() {
        let mut qcow = b"QFI\xfb\0\0\0\x03".to_vec();
        assert_eq!(probe(&mut qcow, "q").unwrap(), Format::Qcow2);
        let mut empty = Vec::new();
        assert_eq!(probe(&mut empty, "e").unwrap(), Format::Raw);
        let mut mbr = vec![0u8; 512];
        assert_eq!(probe(&mut mbr, "m").unwrap(), Format::Raw);
        let mut vhdx = b"vhdxfile".to_vec();
        assert_eq!(probe(&mut vhdx, "x").unwrap(), Format::Vhdx);
        let mut vhd = b"conectix".to_vec();
        assert_eq!(probe(&mut vhd, "d").unwrap(), Format::Vhd);
        let mut vmdk = b"KDMV\x01\0\0\0".to_vec();
        assert_eq!(probe(&mut vmdk, "v").unwrap(), Format::Vmdk);
        let mut descriptor = b"# Disk DescriptorFile\nversion=1\n".to_vec();
        assert_eq!(probe(&mut descriptor, "t").unwrap(), Format::Vmdk);
        let mut cowd = b"COWD\x01\0\0\0".to_vec();
        assert_eq!(probe(&mut cowd, "c").unwrap(), Format::Vmdk);
        let mut sesparse = b"\xbe\xba\xfe\xca\0\0\0\0".to_vec();
        assert_eq!(probe(&mut sesparse, "s").unwrap(), Format::Vmdk);
        let mut qed = b"QED\0\0\0\0\0".to_vec();
        let err = probe(&mut qed, "q").unwrap_err();
        assert!(err.to_string().contains("QED"), "{err}");
    }
}
