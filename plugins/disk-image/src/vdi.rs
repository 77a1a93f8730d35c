//! VDI images (VirtualBox's virtual disks), version 1.1: dynamic, fixed and
//! differencing disks. Undo disks (a type older VirtualBox versions wrote) are refused.
//!
//! A VDI file starts with a 64-byte text line, the signature `0xBEDA107F` and the version
//! (all numbers little-endian), then a header giving the disk's size, the block size
//! (1 MiB by default) and where the block map and the data start. The block map has one
//! 32-bit entry per block: the number of the block's slot in the data area, `0xFFFFFFFF`
//! for a block never written or `0xFFFFFFFE` for a block of zeros, both read as zeros.
//! Slot `n` lies at `data + n * (block + extra) + extra`; a fixed disk has every block in
//! a slot.
//!
//! A differencing disk (a snapshot, `Snapshots/{UUID}.vdi`) holds the blocks written since
//! the snapshot, each whole; a block never written is its parent's. The header names the
//! parent only by its UUID (VirtualBox keeps the parent's path in the machine's
//! settings), so the parent is looked for among the `.vdi` files beside the snapshot and
//! in the directory above it ([`BackingRole::Search`]): the one whose UUID it is. The
//! parent's modification UUID must be the one the snapshot recorded, or the parent was
//! written to since and the snapshot's blocks no longer apply over it.
//!
//! Every number read is checked before use: the block map is bounded ([`MAX_BLOCKS`]) and
//! every slot a block uses must lie within the file.

use crate::block_map::{BlockMap, read_exact as read};
use crate::chain::{self, BackingOpener, BackingRef, BackingRole, ImageFile, ParentIdentity};
use crate::error::ImageError;
use crate::fields::{corrupt, guid_text, le_u32, le_u64, unsupported, within};
use crate::image::{DiskImage, Run};
use crate::overlay::{BitOrder, Block, Overlay};
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

/// Where the header keeps its UUIDs: the image's own, the one that changes when it is
/// written, its parent's, and its parent's modification UUID when the image was made.
const UUID_CREATE: usize = 392;
const UUID_MODIFY: usize = 408;
const UUID_LINKAGE: usize = 424;
const UUID_PARENT_MODIFY: usize = 440;

/// Block map entries of blocks that read as zeros (in a differencing disk, a block never
/// written is its parent's).
const BLOCK_FREE: u32 = u32::MAX;
const BLOCK_ZERO: u32 = u32::MAX - 1;

/// Most blocks read: a map of 32 MiB, a disk of 8 TiB in 1 MiB blocks.
pub const MAX_BLOCKS: u32 = 8 << 20;

/// A VDI image over a [`ReadAt`] source.
pub struct Vdi {
    name: String,
    size: u64,
    /// Its UUID and modification UUID, which a differencing disk over it names.
    uuid: [u8; 16],
    modified: [u8; 16],
    layout: Layout,
}

enum Layout {
    /// A dynamic or fixed disk: its blocks in its file.
    Plain {
        reader: Box<dyn ReadAt>,
        map: BlockMap,
    },
    /// A differencing disk: its blocks over its parent.
    Differencing(Box<Overlay>),
}

/// The 16 bytes at `at` of `header`.
fn uuid_at(header: &[u8], at: usize) -> [u8; 16] {
    header[at..at + 16].try_into().expect("16 bytes")
}

/// The creation UUID of the VDI image `reader` holds, if it holds one.
pub(crate) fn creation_uuid(reader: &mut dyn ReadAt) -> Option<[u8; 16]> {
    let mut header = [0u8; HEADER_LEN];
    if reader.len() < HEADER_LEN as u64 || reader.read_exact_at(0, &mut header).is_err() {
        return None;
    }
    (header[SIGNATURE_AT..SIGNATURE_AT + 4] == SIGNATURE && le_u32(&header, 68) == VERSION)
        .then(|| uuid_at(&header, UUID_CREATE))
}

impl Vdi {
    /// Opens the VDI image `name` read by `reader`, which must not be a differencing disk.
    pub fn open(reader: Box<dyn ReadAt>, name: impl Into<String>) -> Result<Vdi, ImageError> {
        Self::open_in_chain(
            ImageFile::new(name, reader),
            &mut chain::no_backing,
            &mut Vec::new(),
        )
    }

    /// Opens `file`, below the images in `chain`; a differencing disk's parent comes
    /// from `opener`.
    pub(crate) fn open_in_chain(
        file: ImageFile,
        opener: &mut BackingOpener<'_>,
        chain: &mut Vec<String>,
    ) -> Result<Vdi, ImageError> {
        let ImageFile {
            name, mut reader, ..
        } = file;
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
        let image_type = le_u32(&header, 76);
        match image_type {
            NORMAL | FIXED | DIFF => {}
            UNDO => {
                return Err(unsupported(
                    &name,
                    "the image is a VDI undo disk, which needs the disk below it; merge it \
                     first (in VirtualBox, or `qemu-img convert -O vdi`)",
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
        let linkage = uuid_at(&header, UUID_LINKAGE);
        let linked = linkage.iter().any(|&b| b != 0);
        if image_type != DIFF && linked {
            return Err(unsupported(
                &name,
                "the VDI image is linked to a parent disk but is not a differencing disk; \
                 merge the snapshots first",
            ));
        }
        if image_type == DIFF && !linked {
            return Err(corrupt(
                &name,
                Some(UUID_LINKAGE as u64),
                "the differencing VDI names no parent: its parent UUID is zero",
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
                blocks.push(match (slot, image_type) {
                    (BLOCK_FREE, DIFF) => Block::Parent,
                    _ => Block::Zero,
                });
                continue;
            }
            let i = i as u64;
            let length = block.min(size - i * block);
            let start = u64::from(slot)
                .checked_mul(block + extra)
                .and_then(|o| o.checked_add(data_at + extra));
            match start {
                Some(start) if start.checked_add(length).is_some_and(|e| e <= file_size) => {
                    blocks.push(Block::Own(start));
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
        let layout = if image_type == DIFF {
            let recorded = uuid_at(&header, UUID_PARENT_MODIFY);
            let parent = open_parent(&name, linkage, recorded, opener, chain)?;
            Layout::Differencing(Box::new(Overlay::new(
                reader,
                size,
                block,
                block,
                blocks,
                BitOrder::LeastSignificantFirst,
                Box::new(parent),
            )))
        } else {
            let blocks = blocks
                .into_iter()
                .map(|b| match b {
                    Block::Own(start) => Some(start),
                    _ => None,
                })
                .collect();
            Layout::Plain {
                reader,
                map: BlockMap {
                    size,
                    block_size: block,
                    blocks,
                },
            }
        };
        Ok(Vdi {
            name,
            size,
            uuid: uuid_at(&header, UUID_CREATE),
            modified: uuid_at(&header, UUID_MODIFY),
            layout,
        })
    }
}

/// Finds and opens the parent of the differencing disk `name`: the VDI image whose UUID
/// is `linkage`, whose modification UUID must be `recorded` (unless that is zero, as in
/// disks made before VirtualBox recorded it).
fn open_parent(
    name: &str,
    linkage: [u8; 16],
    recorded: [u8; 16],
    opener: &mut BackingOpener<'_>,
    chain: &mut Vec<String>,
) -> Result<Vdi, ImageError> {
    let reference = BackingRef {
        name: format!("the .vdi file of the disk {}", guid_text(&linkage)),
        referenced_by: name.to_owned(),
        format: Some(Format::Vdi),
        role: BackingRole::Search(ParentIdentity::VdiUuid(linkage)),
    };
    let file = opener(&reference)?;
    let parent = chain::in_chain(file, chain, |mut file, chain| {
        if chain::probe(&mut *file.reader, &file.name)? != Format::Vdi {
            return Err(unsupported(
                &file.name,
                format!("the parent of the differencing disk {name} is not a VDI image"),
            ));
        }
        Vdi::open_in_chain(file, opener, chain)
    })?;
    if parent.uuid != linkage {
        return Err(corrupt(
            name,
            Some(UUID_LINKAGE as u64),
            format!(
                "the differencing VDI was made over the disk {}, and the parent found, {}, \
                 is the disk {}",
                guid_text(&linkage),
                parent.name,
                guid_text(&parent.uuid)
            ),
        ));
    }
    if recorded.iter().any(|&b| b != 0) && parent.modified != recorded {
        return Err(corrupt(
            name,
            Some(UUID_PARENT_MODIFY as u64),
            format!(
                "its parent {} was written to after the snapshot was taken (its modification \
                 UUID is {}, the snapshot recorded {}): the snapshot's blocks no longer apply \
                 over it",
                parent.name,
                guid_text(&parent.modified),
                guid_text(&recorded)
            ),
        ));
    }
    Ok(parent)
}

impl DiskImage for Vdi {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> Format {
        Format::Vdi
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        match &mut self.layout {
            Layout::Plain { reader, map } => map.read(&mut **reader, &self.name, offset, buf),
            Layout::Differencing(d) => d.read_at(&self.name, offset, buf),
        }
    }

    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError> {
        match &mut self.layout {
            Layout::Plain { map, .. } => map.map(&self.name, offset, length),
            Layout::Differencing(d) => d.map(&self.name, offset, length),
        }
    }

    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        match &mut self.layout {
            Layout::Plain { map, .. } => map.runs(&self.name, offset, length),
            Layout::Differencing(d) => d.runs(&self.name, offset, length),
        }
    }

    /// A differencing disk's parents' files, the parent's own first (see
    /// [`DiskImage::file_name`]).
    fn file_name(&self, file: u32) -> Option<&str> {
        match &self.layout {
            Layout::Differencing(d) => d.file_name(file),
            Layout::Plain { .. } => None,
        }
    }

    fn describe(&self) -> String {
        match &self.layout {
            Layout::Plain { map, .. } => format!(
                "VDI image {}: {} bytes, {} of {} blocks of {} KiB allocated",
                self.name,
                self.size,
                map.stored(),
                map.blocks.len(),
                map.block_size >> 10
            ),
            Layout::Differencing(d) => format!(
                "differencing VDI image {}: {} bytes, {} of {} blocks of {} KiB its own; over {}",
                self.name,
                self.size,
                d.own_blocks(),
                d.blocks.len(),
                d.block_size >> 10,
                d.parent.describe()
            ),
        }
    }
}
