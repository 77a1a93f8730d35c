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
