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
use crate::chain::BackingOpener;
use crate::error::ImageError;
use crate::fields::{be_u32, be_u64, corrupt};
use crate::overlay::{self, BitOrder, Block, Overlay};
use crate::{Format, ReadAt};

use super::{Dynamic, Header, SECTOR, Vhd};

/// Where the parent locators start in the header, and how many there are.
const LOCATORS_AT: usize = 576;
const LOCATORS: usize = 8;
const LOCATOR_LEN: usize = 24;
/// Where the parent's UTF-16 name lies in the header.
const PARENT_NAME: std::ops::Range<usize> = 64..576;
/// Longest parent locator read: a path, so far below this.
const MAX_LOCATOR_LEN: u32 = 64 << 10;

/// Opens the parent of the differencing disk `name`, whose layout is `own` and header
/// `header`, and lays the disk's blocks, each with its sector bitmap, over it.
pub(super) fn open(
    mut own: Dynamic,
    name: &str,
    header: &Header,
    opener: &mut BackingOpener<'_>,
    chain: &mut Vec<String>,
) -> Result<Overlay, ImageError> {
    let candidates = parent_names(&mut *own.reader, name, header)?;
    if candidates.is_empty() {
        return Err(corrupt(
            name,
            Some(header.at + PARENT_NAME.start as u64),
            "the differencing VHD names no parent: neither a parent locator nor a parent \
                 name is set",
        ));
    }
    let parent = overlay::open_parent(
        name,
        &candidates,
        Format::Vhd,
        opener,
        chain,
        Vhd::open_in_chain,
    )?;
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
    let Dynamic {
        reader,
        map,
        bitmap,
    } = own;
    let blocks = map
        .blocks
        .iter()
        .map(|block| match block {
            // The bitmap comes before the block's bytes (the open checked both lie in
            // the file).
            Some(data) => Block::Partial {
                data: *data,
                bitmap: data - bitmap,
            },
            None => Block::Parent,
        })
        .collect();
    Ok(Overlay::new(
        reader,
        map.size,
        map.block_size,
        SECTOR,
        blocks,
        BitOrder::MostSignificantFirst,
        Box::new(parent),
    ))
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
            relative.get_or_insert(text);
        } else {
            others.push(text);
        }
    }
    let parent_name = utf16(&header.bytes[PARENT_NAME], u16::from_be_bytes);
    others.push(parent_name);
    Ok(overlay::parent_candidates(
        relative.as_deref(),
        others.iter().map(String::as_str),
    ))
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
    fn utf16_names_end_at_their_first_nul() {
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
