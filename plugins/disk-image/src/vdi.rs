//! VDI images (VirtualBox's virtual disks), version 1.1: dynamic and fixed disks.
//! Differencing and undo disks (snapshots, which need their parent) are refused.
//!
//! A VDI file starts with a 64-byte text line, the signature `0xBEDA107F` and the version
//! (all numbers little-endian), then a header giving the disk's size, the block size
//! (1 MiB by default) and where the block map and the data start. The block map has one
//! 32-bit entry per block: the number of the block's slot in the data area, `0xFFFFFFFF`
//! for a block never written or `0xFFFFFFFE` for a block of zeros, both read as zeros.
//! Slot `n` lies at `data + n * (block + extra) + extra`; a fixed disk has every block in
//! a slot.
//!
//! Every number read is checked before use: the block map is bounded ([`MAX_BLOCKS`]) and
//! every slot a block uses must lie within the file.

use crate::block_map::{BlockMap, read_exact as read};
use crate::error::ImageError;
use crate::fields::{corrupt, le_u32, le_u64, unsupported, within};
use crate::image::{DiskImage, Run};
use crate::{Extent, Format, ReadAt};

/// The signature, at offset 64.
pub(crate) const SIGNATURE: [u8; 4] = 0xBEDA_107Fu32.to_le_bytes();
const SIGNATURE_AT: usize = 64;
/// Version 1.1, the only one VirtualBox and QEMU write.
const VERSION: u32 = 0x0001_0001;
/// The pre-header and the version 1.1 header.
const HEADER_LEN: usize = 512;

/// Image types.
const NORMAL: u32 = 1;
const FIXED: u32 = 2;
const UNDO: u32 = 3;
const DIFF: u32 = 4;

/// Block map entries of blocks that read as zeros.
const BLOCK_FREE: u32 = u32::MAX;
const BLOCK_ZERO: u32 = u32::MAX - 1;

/// Most blocks read: a map of 32 MiB, a disk of 8 TiB in 1 MiB blocks.
pub const MAX_BLOCKS: u32 = 8 << 20;

/// A VDI image over a [`ReadAt`] source.
pub struct Vdi {
    reader: Box<dyn ReadAt>,
    name: String,
    map: BlockMap,
}

impl Vdi {
    /// Opens the VDI image `name` read by `reader`.
    pub fn open(mut reader: Box<dyn ReadAt>, name: impl Into<String>) -> Result<Vdi, ImageError> {
        let name = name.into();
        let file_size = reader.len();
        within(&name, "VDI header", 0, HEADER_LEN as u64, file_size)?;
        let mut header = [0u8; HEADER_LEN];
        read(&mut *reader, &name, 0, &mut header)?;
        if header[SIGNATURE_AT..SIGNATURE_AT + 4] != SIGNATURE {
            return Err(corrupt(&name, Some(64), "no VDI signature"));
        }
        let version = le_u32(&header, 68);
        if version != VERSION {
            return Err(unsupported(
                &name,
                format!("VDI version {version:#010x}; only version 1.1 is read"),
            ));
        }
        match le_u32(&header, 76) {
            NORMAL | FIXED => {}
            UNDO | DIFF => {
                return Err(unsupported(
                    &name,
                    "the image is a VDI differencing disk (a snapshot), which needs its parent; \
                     merge the snapshots first (in VirtualBox, or `qemu-img convert -O vdi`)",
                ));
            }
            other => {
                return Err(corrupt(
                    &name,
                    Some(76),
                    format!("unknown VDI image type {other}"),
                ));
            }
        }
        if header[424..440].iter().any(|&b| b != 0) {
            return Err(unsupported(
                &name,
                "the VDI image is linked to a parent disk (a snapshot); merge the snapshots first",
            ));
        }
        let map_at = u64::from(le_u32(&header, 340));
        let data_at = u64::from(le_u32(&header, 344));
        let size = le_u64(&header, 368);
        let block = le_u32(&header, 376);
        let extra = u64::from(le_u32(&header, 380));
        let count = le_u32(&header, 384);
        if !block.is_power_of_two() || !(512..=256 << 20).contains(&block) {
            return Err(corrupt(
                &name,
                Some(376),
                format!("block size {block} is not a power of two from 512 bytes to 256 MiB"),
            ));
        }
        let block = u64::from(block);
        let needed = size.div_ceil(block);
        if count > MAX_BLOCKS || u64::from(count) < needed {
            return Err(corrupt(
                &name,
                Some(384),
                format!(
                    "the block map has {count} entries, where a disk of {size} bytes in blocks of \
                     {block} bytes needs {needed} (at most {MAX_BLOCKS} are read)"
                ),
            ));
        }
        within(&name, "VDI block map", map_at, needed * 4, file_size)?;
        // Bounded by MAX_BLOCKS above.
        let mut entries = vec![0u8; (needed * 4) as usize];
        read(&mut *reader, &name, map_at, &mut entries)?;
        let mut blocks = Vec::with_capacity(needed as usize);
        for (i, entry) in entries.chunks_exact(4).enumerate() {
            let slot = le_u32(entry, 0);
            if slot == BLOCK_FREE || slot == BLOCK_ZERO {
                blocks.push(None);
                continue;
            }
            let i = i as u64;
            let length = block.min(size - i * block);
            let start = u64::from(slot)
                .checked_mul(block + extra)
                .and_then(|o| o.checked_add(data_at + extra));
            match start {
                Some(start) if start.checked_add(length).is_some_and(|e| e <= file_size) => {
                    blocks.push(Some(start));
                }
                _ => {
                    return Err(corrupt(
                        &name,
                        Some(map_at + i * 4),
                        format!(
                            "block {i} is in slot {slot}, past the end of the file ({file_size} \
                             bytes); the image is truncated or corrupt"
                        ),
                    ));
                }
            }
        }
        Ok(Vdi {
            reader,
            name,
            map: BlockMap {
                size,
                block_size: block,
                blocks,
            },
        })
    }
}

impl DiskImage for Vdi {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> Format {
        Format::Vdi
    }

    fn virtual_size(&self) -> u64 {
        self.map.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        self.map.read(&mut *self.reader, &self.name, offset, buf)
    }

    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError> {
        self.map.map(&self.name, offset, length)
    }

    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        self.map.runs(&self.name, offset, length)
    }

    fn describe(&self) -> String {
        format!(
            "VDI image {}: {} bytes, {} of {} blocks of {} KiB allocated",
            self.name,
            self.map.size,
            self.map.stored(),
            self.map.blocks.len(),
            self.map.block_size >> 10
        )
    }
}
