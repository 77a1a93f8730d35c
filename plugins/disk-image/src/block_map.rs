//! Where the fixed-size blocks of a disk lie in its image file, for formats that allocate
//! whole blocks (dynamic VHD, VHDX): each block is either stored verbatim at a file offset
//! or reads as zeros.

use crate::error::{ImageError, ImageErrorKind};
use crate::image::{ExtentList, Run, Stored, check_range, push_run};
use crate::{Extent, ExtentKind, ReadAt};

/// The blocks of a disk of `size` bytes: each one's file offset, `None` for one that reads
/// as zeros. The blocks cover the disk. Ranges are checked against the disk's size and
/// refused past it, with the image's name.
pub(crate) struct BlockMap {
    pub(crate) size: u64,
    pub(crate) block_size: u64,
    pub(crate) blocks: Vec<Option<u64>>,
}

impl BlockMap {
    /// Calls `piece` with each block piece of `offset..offset + length`: its guest offset,
    /// length, and where its bytes lie in the file (`None`: zeros). The range must lie
    /// within the disk (checked by the public methods first).
    fn pieces<E>(
        &self,
        offset: u64,
        length: u64,
        mut piece: impl FnMut(u64, u64, Option<u64>) -> Result<(), E>,
    ) -> Result<(), E> {
        let end = offset + length;
        let mut at = offset;
        while at < end {
            let block = at / self.block_size;
            let within = at % self.block_size;
            let len = (self.block_size - within).min(end - at);
            let stored = self.blocks[block as usize].map(|start| start + within);
            piece(at, len, stored)?;
            at += len;
        }
        Ok(())
    }

    /// Fills `buf` with the guest's bytes at `offset`, read from `reader` (the image `name`).
    pub(crate) fn read(
        &self,
        reader: &mut dyn ReadAt,
        name: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ImageError> {
        check_range(name, offset, <[u8]>::len(buf) as u64, self.size)?;
        self.pieces(offset, <[u8]>::len(buf) as u64, |at, len, stored| {
            let start = (at - offset) as usize;
            let target = &mut buf[start..start + len as usize];
            match stored {
                Some(file_offset) => read_exact(reader, name, file_offset, target),
                None => {
                    target.fill(0);
                    Ok(())
                }
            }
        })
    }

    /// The extents of `offset..offset + length`: stored blocks hold data, the rest zeros.
    pub(crate) fn map(
        &self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Extent>, ImageError> {
        check_range(name, offset, length, self.size)?;
        let mut list = ExtentList::default();
        let _ = self.pieces(offset, length, |at, len, stored| {
            let kind = match stored {
                Some(_) => ExtentKind::Data,
                None => ExtentKind::Zero,
            };
            list.push(at, len, kind);
            Ok::<(), ()>(())
        });
        Ok(list.into_vec())
    }

    /// The runs of `offset..offset + length`: stored blocks in the file, zeros elsewhere.
    pub(crate) fn runs(
        &self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Run>, ImageError> {
        check_range(name, offset, length, self.size)?;
        let mut runs = Vec::new();
        let _ = self.pieces(offset, length, |at, len, stored| {
            let stored = match stored {
                Some(file_offset) => Stored::InFile(file_offset),
                None => Stored::Elsewhere,
            };
            push_run(&mut runs, at, len, stored);
            Ok::<(), ()>(())
        });
        Ok(runs)
    }

    /// How many blocks are stored.
    pub(crate) fn stored(&self) -> usize {
        self.blocks.iter().filter(|b| b.is_some()).count()
    }
}

/// Reads `buf.len()` bytes at `offset` of the image `name`, a failure named as an I/O error
/// there.
pub(crate) fn read_exact(
    reader: &mut dyn ReadAt,
    name: &str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), ImageError> {
    let length = <[u8]>::len(buf) as u64;
    reader.read_exact_at(offset, buf).map_err(|cause| {
        ImageError::new(
            name,
            ImageErrorKind::Io {
                offset,
                length,
                cause,
            },
        )
    })
}
