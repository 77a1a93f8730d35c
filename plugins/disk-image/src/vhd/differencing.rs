//! Differencing VHDs: Hyper-V's and Virtual PC's snapshots (`.avhd`, or a `.vhd` made
//! "differencing"). The disk has a dynamic disk's footer, header and block table, and the
//! header names a parent VHD. Each allocated block starts with a sector bitmap, one bit per
//! 512-byte sector, the first sector's in the most significant bit of the first byte: a set
//! bit means the sector's bytes are in this file, a clear one that they are the parent's. A
//! block never allocated is the parent's whole.
//!
//! The header names the parent three ways: its *unique id* (that of the parent's footer,
//! which is checked), its name in UTF-16 (big-endian), and up to eight *parent locators*,
//! each a path stored elsewhere in the file: `W2ru` a Windows path relative to this file,
//! `W2ku` an absolute one (both UTF-16 little-endian), `MacX` a file URL in UTF-8. The
//! parent is looked for in that order: the relative path, then the file name of each other
//! path, beside this file, as copying a VM's files elsewhere keeps them. The first found is
//! the parent; if its unique id is not the one recorded, the parent was replaced and the
//! differences no longer apply over it, and the disk is refused. A parent smaller than the
//! disk (one expanded after the snapshot) reads as zeros past its end.

use crate::block_map::read_exact as read;
use crate::chain::{self, BackingOpener, BackingRef, BackingRole};
use crate::error::ImageError;
use crate::fields::{be_u32, be_u64, corrupt, unsupported};
use crate::image::{
    DiskImage, ExtentList, Run, Stored, check_range, lower_file_name, push_lower_runs, push_run,
};
use crate::{Extent, ExtentKind, Format, ReadAt};

use super::{Dynamic, Header, SECTOR, Vhd};

/// Where the parent locators start in the header, and how many there are.
const LOCATORS_AT: usize = 576;
const LOCATORS: usize = 8;
const LOCATOR_LEN: usize = 24;
/// Where the parent's UTF-16 name lies in the header.
const PARENT_NAME: std::ops::Range<usize> = 64..576;
/// Longest parent locator read: a path, so far below this.
const MAX_LOCATOR_LEN: u32 = 64 << 10;

/// A differencing disk's own layout and its parent.
pub(crate) struct Differencing {
    own: Dynamic,
    parent: Box<Vhd>,
    /// The sector bitmap of the block looked at last, and that block's number.
    bitmap: Option<(u64, Vec<u8>)>,
}

/// A piece of the disk: a guest range and where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Piece {
    offset: u64,
    length: u64,
    /// In this file, from this offset on; `None`: the parent's.
    own: Option<u64>,
}

impl Differencing {
    /// Opens the parent of the differencing disk `name` (its layout `own`, its `footer`
    /// and `header`) through `opener`, below the images in `chain`, and checks that it is
    /// the disk the differences were taken over.
    pub(super) fn open(
        own: Dynamic,
        name: &str,
        header: &Header,
        opener: &mut BackingOpener<'_>,
        chain: &mut Vec<String>,
    ) -> Result<Differencing, ImageError> {
        let mut own = own;
        let candidates = parent_names(&mut *own.reader, name, header)?;
        if candidates.is_empty() {
            return Err(corrupt(
                name,
                Some(header.at + PARENT_NAME.start as u64),
                "the differencing VHD names no parent: neither a parent locator nor a parent \
                 name is set",
            ));
        }
        let mut first_error = None;
        let mut file = None;
        for candidate in &candidates {
            let reference = BackingRef {
                name: candidate.clone(),
                referenced_by: name.to_owned(),
                format: Some(Format::Vhd),
                role: BackingRole::Backing,
            };
            match opener(&reference) {
                Ok(found) => {
                    file = Some(found);
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some(file) = file else {
            return Err(first_error.expect("a candidate was tried"));
        };
        let parent = chain::in_chain(file, chain, |mut file, chain| {
            let format = chain::probe(&mut *file.reader, &file.name)?;
            if format != Format::Vhd {
                return Err(unsupported(
                    &file.name,
                    format!(
                        "the parent of the differencing VHD {name} is a {format} image; a \
                         differencing VHD's parent is a VHD"
                    ),
                ));
            }
            Vhd::open_in_chain(file, opener, chain)
        })?;
        let wanted: [u8; 16] = header.bytes[40..56].try_into().expect("16 bytes");
        let found = parent.unique_id;
        if found != wanted {
            return Err(corrupt(
                name,
                Some(header.at + 40),
                format!(
                    "the differencing VHD was made over the disk {}, and its parent {} is the \
                     disk {}: the parent was replaced, and the differences no longer apply \
                     over it",
                    uuid(&wanted),
                    parent.name,
                    uuid(&found)
                ),
            ));
        }
        Ok(Differencing {
            own,
            parent: Box::new(parent),
            bitmap: None,
        })
    }

    /// The parent disk.
    pub(super) fn parent(&self) -> &Vhd {
        &self.parent
    }

    /// What this file itself holds, for messages.
    pub(super) fn describe_own(&self) -> String {
        format!(
            "{} of {} blocks of {} KiB allocated",
            self.own.map.stored(),
            self.own.map.blocks.len(),
            self.own.map.block_size >> 10
        )
    }

    /// The pieces of `offset..offset + length` (within the disk), neighbours of one place
    /// merged.
    fn pieces(&mut self, name: &str, offset: u64, length: u64) -> Result<Vec<Piece>, ImageError> {
        let map = &self.own.map;
        let end = offset + length;
        let mut pieces: Vec<Piece> = Vec::new();
        let mut push = |piece: Piece| {
            if let Some(last) = pieces.last_mut() {
                let contiguous = match (last.own, piece.own) {
                    (Some(a), Some(b)) => a + last.length == b,
                    (None, None) => true,
                    _ => false,
                };
                if contiguous {
                    last.length += piece.length;
                    return;
                }
            }
            pieces.push(piece);
        };
        let mut at = offset;
        while at < end {
            let block = at / map.block_size;
            let within = at % map.block_size;
            let len = (map.block_size - within).min(end - at);
            let Some(start) = map.blocks[block as usize] else {
                push(Piece {
                    offset: at,
                    length: len,
                    own: None,
                });
                at += len;
                continue;
            };
            if self.bitmap.as_ref().is_none_or(|(b, _)| *b != block) {
                let mut bits = vec![0u8; self.own.bitmap as usize];
                // The open checked that the block lies in the file; its bitmap precedes it.
                read(
                    &mut *self.own.reader,
                    name,
                    start - self.own.bitmap,
                    &mut bits,
                )?;
                self.bitmap = Some((block, bits));
            }
            let bits = &self.bitmap.as_ref().expect("just read").1;
            let present = |sector: u64| bits[(sector / 8) as usize] & (0x80 >> (sector % 8)) != 0;
            let block_end = at + len;
            let mut pos = at;
            while pos < block_end {
                let sector = (pos - block * map.block_size) / SECTOR;
                let sector_end =
                    ((block * map.block_size + (sector + 1) * SECTOR).min(block_end)).max(pos + 1);
                let n = sector_end - pos;
                push(Piece {
                    offset: pos,
                    length: n,
                    own: present(sector).then(|| start + (pos - block * map.block_size)),
                });
                pos += n;
            }
            at += len;
        }
        Ok(pieces)
    }

    pub(super) fn read_at(
        &mut self,
        name: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ImageError> {
        check_range(name, offset, <[u8]>::len(buf) as u64, self.own.map.size)?;
        for piece in self.pieces(name, offset, <[u8]>::len(buf) as u64)? {
            let from = (piece.offset - offset) as usize;
            let target = &mut buf[from..from + piece.length as usize];
            match piece.own {
                Some(file_offset) => read(&mut *self.own.reader, name, file_offset, target)?,
                None => {
                    let covered = self
                        .parent
                        .virtual_size()
                        .saturating_sub(piece.offset)
                        .min(piece.length) as usize;
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

    pub(super) fn map(
        &mut self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Extent>, ImageError> {
        check_range(name, offset, length, self.own.map.size)?;
        let mut list = ExtentList::default();
        for piece in self.pieces(name, offset, length)? {
            if piece.own.is_some() {
                list.push(piece.offset, piece.length, ExtentKind::Data);
                continue;
            }
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
        Ok(list.into_vec())
    }

    /// The runs of `offset..offset + length`: this file's sectors in it, the parent's in
    /// its files, numbered from 0 (see [`Differencing::file_name`]).
    pub(super) fn runs(
        &mut self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Run>, ImageError> {
        check_range(name, offset, length, self.own.map.size)?;
        let mut runs = Vec::new();
        for piece in self.pieces(name, offset, length)? {
            if let Some(file_offset) = piece.own {
                push_run(
                    &mut runs,
                    piece.offset,
                    piece.length,
                    Stored::InFile(file_offset),
                );
                continue;
            }
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
        Ok(runs)
    }

    /// The parent's own file is 0, its parents' files follow.
    pub(super) fn file_name(&self, file: u32) -> Option<&str> {
        lower_file_name(&*self.parent, 0, file)
    }

    /// How much of `piece` the parent holds: all of it but what lies past its end.
    fn parent_covers(&self, piece: &Piece) -> u64 {
        self.parent
            .virtual_size()
            .saturating_sub(piece.offset)
            .min(piece.length)
    }
}

/// The names to look for the parent under, in order, without repeats: the relative
/// locator's path, then the file names of the absolute locator, the parent's name and a
/// file URL locator.
fn parent_names(
    reader: &mut dyn ReadAt,
    name: &str,
    header: &Header,
) -> Result<Vec<String>, ImageError> {
    let mut relative = None;
    let mut others = Vec::new();
    for i in 0..LOCATORS {
        let at = LOCATORS_AT + i * LOCATOR_LEN;
        let entry = &header.bytes[at..at + LOCATOR_LEN];
        let code = &entry[..4];
        let length = be_u32(entry, 8);
        let offset = be_u64(entry, 16);
        let utf16_le = match code {
            b"W2ru" | b"W2ku" => true,
            b"MacX" => false,
            // Empty entries, and platforms whose paths are not kept (`Wi2r`, `Wi2k` and
            // `Mac ` are deprecated).
            _ => continue,
        };
        let field = header.at + at as u64;
        if length == 0 || length > MAX_LOCATOR_LEN {
            return Err(corrupt(
                name,
                Some(field + 8),
                format!(
                    "parent locator {i} ({}) is {length} bytes long; a path takes 1 to \
                     {MAX_LOCATOR_LEN}",
                    String::from_utf8_lossy(code)
                ),
            ));
        }
        crate::fields::within(
            name,
            "VHD parent locator",
            offset,
            length.into(),
            reader.len(),
        )?;
        let mut bytes = vec![0u8; length as usize];
        read(reader, name, offset, &mut bytes)?;
        let text = if utf16_le {
            utf16(&bytes, u16::from_le_bytes)
        } else {
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\0')
                .to_owned()
        };
        if text.is_empty() {
            continue;
        }
        if code == b"W2ru" {
            relative.get_or_insert(relative_path(&text));
        } else {
            others.push(file_name(&text));
        }
    }
    let parent_name = utf16(&header.bytes[PARENT_NAME], u16::from_be_bytes);
    if !parent_name.is_empty() {
        others.push(file_name(&parent_name));
    }
    let mut names: Vec<String> = Vec::new();
    for candidate in relative.into_iter().chain(others) {
        if !candidate.is_empty() && !names.contains(&candidate) {
            names.push(candidate);
        }
    }
    Ok(names)
}

/// UTF-16 text up to its first NUL, undecodable units replaced.
fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| unit([pair[0], pair[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// A Windows path relative to the disk's directory (`.\base.vhd`, `..\vms\base.vhd`) as
/// a relative path with `/`.
fn relative_path(path: &str) -> String {
    let mut path = path.replace('\\', "/");
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.to_owned();
    }
    path
}

/// The last component of a Windows path or a file URL.
fn file_name(path: &str) -> String {
    path.rsplit(['\\', '/']).next().unwrap_or("").to_owned()
}

/// A unique id as Windows writes GUIDs; the VHD footer stores it as the bytes are.
fn uuid(id: &[u8; 16]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locator_paths_become_names_to_look_for() {
        assert_eq!(relative_path(r".\base.vhd"), "base.vhd");
        assert_eq!(relative_path(r"..\vms\base.vhd"), "../vms/base.vhd");
        assert_eq!(file_name(r"C:\VMs\web\base.vhd"), "base.vhd");
        assert_eq!(file_name("file://localhost/Users/a/base.vhd"), "base.vhd");
        let utf16_be: Vec<u8> = "C:\\b.vhd\0x"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        assert_eq!(utf16(&utf16_be, u16::from_be_bytes), "C:\\b.vhd");
    }

    #[test]
    fn unique_ids_print_as_guids() {
        let id: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(uuid(&id), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
