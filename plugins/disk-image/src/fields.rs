//! Fixed-width numbers at byte offsets of a structure read from an image, and the errors
//! the readers of VHD, VHDX and VMDK name damage with. Callers index only within the
//! buffers they read, of sizes fixed by the format.

use crate::error::{ImageError, ImageErrorKind};

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes[at..at + N].try_into().expect("N bytes")
}

pub(crate) fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(bytes, at))
}

pub(crate) fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(bytes, at))
}

pub(crate) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(bytes, at))
}

pub(crate) fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(bytes, at))
}

pub(crate) fn be_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(array(bytes, at))
}

/// A field of the image `name` holds what the format forbids.
/// A GUID stored as Windows and VirtualBox store them (the first three fields
/// little-endian), in the usual text form with braces.
pub(crate) fn guid_text(id: &[u8; 16]) -> String {
    let a = u32::from_le_bytes(id[..4].try_into().expect("4 bytes"));
    let b = u16::from_le_bytes(id[4..6].try_into().expect("2 bytes"));
    let c = u16::from_le_bytes(id[6..8].try_into().expect("2 bytes"));
    let d: String = id[8..10].iter().map(|x| format!("{x:02x}")).collect();
    let e: String = id[10..].iter().map(|x| format!("{x:02x}")).collect();
    format!("{{{a:08x}-{b:04x}-{c:04x}-{d}-{e}}}")
}

pub(crate) fn corrupt(name: &str, offset: Option<u64>, reason: impl Into<String>) -> ImageError {
    ImageError::new(
        name,
        ImageErrorKind::Corrupt {
            offset,
            reason: reason.into(),
        },
    )
}

/// The image `name` uses what this reader does not read.
pub(crate) fn unsupported(name: &str, what: impl Into<String>) -> ImageError {
    ImageError::new(name, ImageErrorKind::Unsupported { what: what.into() })
}

/// Checks that `length` bytes at `offset` lie within a file of `file_size` bytes, naming
/// the structure `what` when they do not.
pub(crate) fn within(
    name: &str,
    what: &'static str,
    offset: u64,
    length: u64,
    file_size: u64,
) -> Result<(), ImageError> {
    if offset
        .checked_add(length)
        .is_some_and(|end| end <= file_size)
    {
        return Ok(());
    }
    Err(ImageError::new(
        name,
        ImageErrorKind::BeyondEnd {
            what,
            offset,
            length,
            file_size,
        },
    ))
}
