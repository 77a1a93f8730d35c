//! A differencing disk's blocks over its parent, for the formats that keep one bit per
//! sector saying whether the sector is the disk's own or its parent's (differencing VHD
//! and VHDX). Each block is the parent's whole, zeros, the disk's own whole, or partly
//! the disk's own as a sector bitmap in the file says.

use crate::block_map::read_exact as read;
use crate::chain::{self, BackingOpener, BackingRef, BackingRole, ImageFile};
use crate::error::ImageError;
use crate::fields::unsupported;
use crate::image::{
    DiskImage, ExtentList, Run, Stored, check_range, lower_file_name, push_lower_runs, push_run,
};
use crate::{Extent, ExtentKind, Format, ReadAt};

/// Opens the parent of the differencing disk `name` (a `format` image, as the only kind
/// of parent it can have): the first of `candidates` (names to resolve, best first) the
/// opener finds, below the images in `chain`, with `open`. A parent that cannot be found
/// fails with the first candidate's error.
pub(crate) fn open_parent<T>(
    name: &str,
    candidates: &[String],
    format: Format,
    opener: &mut BackingOpener<'_>,
    chain: &mut Vec<String>,
    open: impl FnOnce(ImageFile, &mut BackingOpener<'_>, &mut Vec<String>) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    let mut first_error = None;
    let mut found = None;
    for candidate in candidates {
        let reference = BackingRef {
            name: candidate.clone(),
            referenced_by: name.to_owned(),
            format: Some(format),
            role: BackingRole::Backing,
        };
        match opener(&reference) {
            Ok(file) => {
                found = Some(file);
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some(file) = found else {
        return Err(first_error.unwrap_or_else(|| {
            unsupported(name, "the differencing disk names no file for its parent")
        }));
    };
    chain::in_chain(file, chain, |mut file, chain| {
        let probed = chain::probe(&mut *file.reader, &file.name)?;
        if probed != format {
            return Err(unsupported(
                &file.name,
                format!(
                    "the parent of the differencing disk {name} is a {probed} image; its \
                     parent must be a {format} image"
                ),
            ));
        }
        open(file, opener, chain)
    })
}

/// The names to look for a parent under, best first and without repeats: the Windows path
/// `relative` to the disk's directory as a relative path, then the file name of each of
/// the `others` (absolute paths, file URLs), beside the disk, as copying a VM's files
/// elsewhere keeps them.
pub(crate) fn parent_candidates<'a>(
    relative: Option<&str>,
    others: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let others = others.into_iter().map(file_name);
    for candidate in relative.map(relative_path).into_iter().chain(others) {
        if !candidate.is_empty() && !names.contains(&candidate) {
            names.push(candidate);
        }
    }
    names
}

/// The last component of a Windows path or a file URL.
fn file_name(path: &str) -> String {
    path.rsplit(['\\', '/']).next().unwrap_or("").to_owned()
}

/// A Windows path relative to the disk's directory (`.\base.vhd`, `..\vms\base.vhd`)
/// as a relative path with `/`.
fn relative_path(path: &str) -> String {
    let mut path = path.replace('\\', "/");
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.to_owned();
    }
    path
}

/// What a block of a differencing disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    /// Its parent's bytes.
    Parent,
    /// Zeros.
    Zero,
    /// Its own bytes, from this file offset on.
    Own(u64),
    /// Its own bytes from file offset `data` on for the sectors whose bit is set in the
    /// bitmap at file offset `bitmap`, its parent's for the others.
    Partial { data: u64, bitmap: u64 },
}

/// The order of the bits of a sector bitmap's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BitOrder {
    /// The first sector's bit is the most significant (VHD).
    MostSignificantFirst,
    /// The first sector's bit is the least significant (VHDX).
    LeastSignificantFirst,
}

/// A differencing disk: its blocks in its file, over its parent. The blocks cover the
/// disk; every offset in them was checked to lie in the file.
pub(crate) struct Overlay {
    pub(crate) reader: Box<dyn ReadAt>,
    pub(crate) size: u64,
    pub(crate) block_size: u64,
    /// The sector size the bitmaps count in.
    pub(crate) sector: u64,
    pub(crate) blocks: Vec<Block>,
    pub(crate) bit_order: BitOrder,
    pub(crate) parent: Box<dyn DiskImage>,
    /// The bitmap of the block looked at last, and that block's number.
    bitmap: Option<(u64, Vec<u8>)>,
}

/// A piece of the disk and where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Piece {
    offset: u64,
    length: u64,
    place: Place,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the disk's file, from this offset on.
    Own(u64),
    Parent,
    Zero,
}

impl Overlay {
    pub(crate) fn new(
        reader: Box<dyn ReadAt>,
        size: u64,
        block_size: u64,
        sector: u64,
        blocks: Vec<Block>,
        bit_order: BitOrder,
        parent: Box<dyn DiskImage>,
    ) -> Overlay {
        Overlay {
            reader,
            size,
            block_size,
            sector,
            blocks,
            bit_order,
            parent,
            bitmap: None,
        }
    }

    /// How many blocks hold some of the disk's own bytes.
    pub(crate) fn own_blocks(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| matches!(b, Block::Own(_) | Block::Partial { .. }))
            .count()
    }

    /// The pieces of `offset..offset + length` (within the disk), neighbours of one place
    /// merged.
    fn pieces(&mut self, name: &str, offset: u64, length: u64) -> Result<Vec<Piece>, ImageError> {
        let end = offset + length;
        let mut pieces: Vec<Piece> = Vec::new();
        let mut push = |offset: u64, length: u64, place: Place| {
            if let Some(last) = pieces.last_mut() {
                let contiguous = match (last.place, place) {
                    (Place::Own(a), Place::Own(b)) => a + last.length == b,
                    (a, b) => a == b,
                };
                if contiguous {
                    last.length += length;
                    return;
                }
            }
            pieces.push(Piece {
                offset,
                length,
                place,
            });
        };
        let mut at = offset;
        while at < end {
            let block = at / self.block_size;
            let block_start = block * self.block_size;
            let len = (block_start + self.block_size - at).min(end - at);
            match self.blocks[block as usize] {
                Block::Parent => push(at, len, Place::Parent),
                Block::Zero => push(at, len, Place::Zero),
                Block::Own(data) => push(at, len, Place::Own(data + (at - block_start))),
                Block::Partial { data, bitmap } => {
                    if self.bitmap.as_ref().is_none_or(|(b, _)| *b != block) {
                        let sectors = self.block_size / self.sector;
                        let mut bits = vec![0u8; sectors.div_ceil(8) as usize];
                        read(&mut *self.reader, name, bitmap, &mut bits)?;
                        self.bitmap = Some((block, bits));
                    }
                    let bits = &self.bitmap.as_ref().expect("just read").1;
                    let mask = |sector: u64| match self.bit_order {
                        BitOrder::MostSignificantFirst => 0x80u8 >> (sector % 8),
                        BitOrder::LeastSignificantFirst => 1u8 << (sector % 8),
                    };
                    let mut pos = at;
                    while pos < at + len {
                        let sector = (pos - block_start) / self.sector;
                        let sector_end = (block_start + (sector + 1) * self.sector).min(at + len);
                        let place = if bits[(sector / 8) as usize] & mask(sector) != 0 {
                            Place::Own(data + (pos - block_start))
                        } else {
                            Place::Parent
                        };
                        push(pos, sector_end - pos, place);
                        pos = sector_end;
                    }
                }
            }
            at += len;
        }
        Ok(pieces)
    }

    /// How much of `piece` the parent holds: all of it but what lies past its end (a disk
    /// grown after the snapshot).
    fn parent_covers(&self, piece: &Piece) -> u64 {
        self.parent
            .virtual_size()
            .saturating_sub(piece.offset)
            .min(piece.length)
    }

    pub(crate) fn read_at(
        &mut self,
        name: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ImageError> {
        check_range(name, offset, <[u8]>::len(buf) as u64, self.size)?;
        for piece in self.pieces(name, offset, <[u8]>::len(buf) as u64)? {
            let from = (piece.offset - offset) as usize;
            let target = &mut buf[from..from + piece.length as usize];
            match piece.place {
                Place::Own(file_offset) => read(&mut *self.reader, name, file_offset, target)?,
                Place::Zero => target.fill(0),
                Place::Parent => {
                    let covered = self.parent_covers(&piece) as usize;
                    let (head, tail) = target.split_at_mut(covered);
                    if !head.is_empty() {
                        self.parent.read_at(piece.offset, head)?;
                    }
                    tail.fill(0);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn map(
        &mut self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Extent>, ImageError> {
        check_range(name, offset, length, self.size)?;
        let mut list = ExtentList::default();
        for piece in self.pieces(name, offset, length)? {
            match piece.place {
                Place::Own(_) => list.push(piece.offset, piece.length, ExtentKind::Data),
                Place::Zero => list.push(piece.offset, piece.length, ExtentKind::Zero),
                Place::Parent => {
                    let covered = self.parent_covers(&piece);
                    if covered > 0 {
                        list.extend(self.parent.map(piece.offset, covered)?);
                    }
                    list.push(
                        piece.offset + covered,
                        piece.length - covered,
                        ExtentKind::Zero,
                    );
                }
            }
        }
        Ok(list.into_vec())
    }

    /// The runs of `offset..offset + length`: the disk's own sectors in its file, its
    /// parent's in the parent's files, numbered from 0 (see [`Overlay::file_name`]).
    pub(crate) fn runs(
        &mut self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Run>, ImageError> {
        check_range(name, offset, length, self.size)?;
        let mut runs = Vec::new();
        for piece in self.pieces(name, offset, length)? {
            match piece.place {
                Place::Own(file_offset) => push_run(
                    &mut runs,
                    piece.offset,
                    piece.length,
                    Stored::InFile(file_offset),
                ),
                Place::Zero => push_run(&mut runs, piece.offset, piece.length, Stored::Elsewhere),
                Place::Parent => {
                    let covered = self.parent_covers(&piece);
                    if covered > 0 {
                        push_lower_runs(&mut runs, &mut *self.parent, 0, piece.offset, covered)?;
                    }
                    push_run(
                        &mut runs,
                        piece.offset + covered,
                        piece.length - covered,
                        Stored::Elsewhere,
                    );
                }
            }
        }
        Ok(runs)
    }

    /// The parent's own file is 0, its parents' files follow.
    pub(crate) fn file_name(&self, file: u32) -> Option<&str> {
        lower_file_name(&*self.parent, 0, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_looked_for_by_relative_path_then_by_file_name() {
        assert_eq!(relative_path(r".\base.vhd"), "base.vhd");
        assert_eq!(relative_path(r"..\vms\base.vhd"), "../vms/base.vhd");
        assert_eq!(file_name(r"C:\VMs\web\base.vhd"), "base.vhd");
        assert_eq!(file_name("file://localhost/Users/a/base.vhd"), "base.vhd");
        assert_eq!(
            parent_candidates(
                Some(r"..\gone\base.vhdx"),
                [r"\\?\D:\VMs\base.vhdx", r"C:\base.vhdx", ""]
            ),
            ["../gone/base.vhdx", "base.vhdx"]
        );
        assert!(parent_candidates(None, []).is_empty());
    }
}
