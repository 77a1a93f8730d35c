//! VHDX images (Virtual Hard Disk v2), as Hyper-V writes them by default: fixed, dynamic
//! and differencing disks (Hyper-V's checkpoints, `.avhdx`). Images whose log holds
//! entries that may need replaying are refused.
//!
//! A VHDX file starts with the identifier `vhdxfile`, then two copies of a 4 KiB header
//! (at 64 and 128 KiB; the valid one with the higher sequence number is current) and two
//! copies of a 64 KiB region table (at 192 and 256 KiB), each protected by a CRC-32C. The
//! region table points to the metadata region, whose table gives the block size, the
//! virtual disk's size and its logical sector size, and to the block allocation table
//! (BAT). All numbers are little-endian. The BAT has one 64-bit entry per payload block
//! (1 to 256 MiB): its low three bits give the block's state, and its upper 44 bits the
//! block's file offset in MiB when the block is fully present. After every *chunk ratio*
//! payload entries (2^23 sectors' worth of blocks) comes one entry for a sector bitmap,
//! which only differencing disks use. Blocks in any other state read as zeros.
//!
//! A **differencing** disk (the file parameters' `HasParent` bit) has a parent locator
//! among its metadata: key-value pairs in UTF-16, `parent_linkage` the parent's
//! `DataWriteGuid` (which must match the parent's current header) and the parent's path
//! as `relative_path`, `volume_path` and `absolute_win32_path`. The parent is looked for
//! by its relative path, then by the file name of the others, beside the disk. A block
//! not present is the parent's; a partially present one is the disk's own for the
//! sectors whose bit is set in its chunk's sector bitmap block (bit 0 of byte 0 the
//! chunk's first sector), the parent's for the others; zero, unmapped and undefined
//! blocks read as zeros.
//!
//! Every number read is checked before use: the tables' sizes are bounded ([`MAX_BLOCKS`]),
//! every region, metadata item and present block must lie within the file, and the
//! structures' checksums must hold.

use crc::{CRC_32_ISCSI, Crc};

use crate::block_map::{self, BlockMap};
use crate::chain::{BackingOpener, ImageFile, no_backing};
use crate::error::ImageError;
use crate::fields::{corrupt, guid_text, le_u16, le_u32, le_u64, unsupported, within};
use crate::image::{DiskImage, Run};
use crate::overlay::{self, BitOrder, Block, Overlay};
use crate::{Extent, Format, ReadAt};

mod writer;
pub use writer::VhdxWriter;

/// The file type identifier's signature, at offset 0.
pub(crate) const SIGNATURE: &[u8; 8] = b"vhdxfile";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The two headers, and their length.
const HEADERS: [u64; 2] = [64 * KIB, 128 * KIB];
const HEADER_LEN: usize = 4096;
/// The two region tables, and their length.
const REGION_TABLES: [u64; 2] = [192 * KIB, 256 * KIB];
const REGION_TABLE_LEN: usize = 64 * 1024;
/// Length of the metadata table at the start of the metadata region.
const METADATA_TABLE_LEN: usize = 64 * 1024;

/// Most entries a region or metadata table may hold.
const MAX_TABLE_ENTRIES: u32 = 2047;
/// Most payload blocks read: a table of 64 MiB, a disk of 256 TiB in the default 32 MiB
/// blocks (the format's limit is 64 TiB).
pub const MAX_BLOCKS: u64 = 8 << 20;

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// A GUID as VHDX stores it: the first three fields little-endian, the rest as bytes.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

const BAT_REGION: [u8; 16] = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
const METADATA_REGION: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
const FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const LOGICAL_SECTOR_SIZE: [u8; 16] = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
const PHYSICAL_SECTOR_SIZE: [u8; 16] = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
const PAGE_83_DATA: [u8; 16] = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
const PARENT_LOCATOR: [u8; 16] = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);
/// The parent locator type of a VHDX parent.
const VHDX_PARENT: [u8; 16] = guid(
    0xB04A_EFB7,
    0xD19E,
    0x4A81,
    [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13],
);
/// Largest metadata item: the format's limit.
const MAX_ITEM_LEN: u64 = MIB;

/// Payload block states of a BAT entry.
const BLOCK_NOT_PRESENT: u64 = 0;
const BLOCK_UNDEFINED: u64 = 1;
const BLOCK_ZERO: u64 = 2;
const BLOCK_UNMAPPED: u64 = 3;
const BLOCK_FULLY_PRESENT: u64 = 6;
const BLOCK_PARTIALLY_PRESENT: u64 = 7;
/// The state of a sector bitmap block's BAT entry when the block is in the file.
const SB_BLOCK_PRESENT: u64 = 6;

/// Whether the CRC-32C of `bytes`, with its own field at offset 4 counted as zeros,
/// matches that field.
fn checksum_holds(bytes: &[u8]) -> bool {
    let mut digest = CRC32C.digest();
    digest.update(&bytes[..4]);
    digest.update(&[0; 4]);
    digest.update(&bytes[8..]);
    digest.finalize() == le_u32(bytes, 4)
}

fn read(
    reader: &mut dyn ReadAt,
    name: &str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), ImageError> {
    within(
        name,
        "VHDX structure",
        offset,
        <[u8]>::len(buf) as u64,
        reader.len(),
    )?;
    block_map::read_exact(reader, name, offset, buf)
}

/// A VHDX image over a [`ReadAt`] source.
pub struct Vhdx {
    name: String,
    /// The current header's `DataWriteGuid`, by which a differencing disk names its
    /// parent.
    data_write_guid: [u8; 16],
    logical_sector: u64,
    layout: Layout,
}

enum Layout {
    /// A fixed or dynamic disk.
    Whole {
        reader: Box<dyn ReadAt>,
        map: BlockMap,
    },
    Differencing(Box<Overlay>),
}

impl Vhdx {
    /// Opens the VHDX image `name` read by `reader`. A differencing disk is refused: its
    /// parent cannot be opened here ([`crate::open`] opens it with its parent).
    pub fn open(reader: Box<dyn ReadAt>, name: impl Into<String>) -> Result<Vhdx, ImageError> {
        let name = name.into();
        let file = ImageFile::new(name.clone(), reader);
        Vhdx::open_in_chain(file, &mut no_backing, &mut vec![name])
    }

    /// Opens `file`, whose name is already the last of `chain`, and, for a differencing
    /// disk, its parents through `opener`.
    pub(crate) fn open_in_chain(
        file: ImageFile,
        opener: &mut BackingOpener<'_>,
        chain: &mut Vec<String>,
    ) -> Result<Vhdx, ImageError> {
        let ImageFile {
            name, mut reader, ..
        } = file;
        let mut signature = [0u8; 8];
        read(&mut *reader, &name, 0, &mut signature)?;
        if &signature != SIGNATURE {
            return Err(corrupt(&name, Some(0), "no `vhdxfile` signature"));
        }
        let data_write_guid = check_header(&mut *reader, &name)?;
        let (bat, metadata) = regions(&mut *reader, &name)?;
        let params = Parameters::read(&mut *reader, &name, metadata)?;
        let entries = read_bat(&mut *reader, &name, bat, &params)?;
        let layout = match &params.parent {
            None => Layout::Whole {
                map: BlockMap {
                    size: params.size,
                    block_size: params.block_size,
                    blocks: whole_blocks(&name, &entries)?,
                },
                reader,
            },
            Some(locator) => {
                let parent = open_parent(&mut *reader, &name, locator, &params, opener, chain)?;
                Layout::Differencing(Box::new(Overlay::new(
                    reader,
                    params.size,
                    params.block_size,
                    params.logical_sector,
                    entries.iter().map(|entry| entry.block).collect(),
                    BitOrder::LeastSignificantFirst,
                    Box::new(parent),
                )))
            }
        };
        Ok(Vhdx {
            name,
            data_write_guid,
            logical_sector: params.logical_sector,
            layout,
        })
    }
}

/// The blocks of a fixed or dynamic disk: each one's file offset, `None` for zeros.
fn whole_blocks(name: &str, entries: &[BatEntry]) -> Result<Vec<Option<u64>>, ImageError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| match entry.block {
            Block::Own(start) => Ok(Some(start)),
            Block::Zero | Block::Parent => Ok(None),
            Block::Partial { .. } => Err(corrupt(
                name,
                Some(entry.at),
                format!(
                    "block {i} is partially present, which only a differencing disk's blocks \
                     may be"
                ),
            )),
        })
        .collect()
}

/// Finds and opens the parent of the differencing disk `name` from its parent
/// `locator`, and checks that it is the disk the differences were taken over.
fn open_parent(
    reader: &mut dyn ReadAt,
    name: &str,
    locator: &Region,
    params: &Parameters,
    opener: &mut BackingOpener<'_>,
    chain: &mut Vec<String>,
) -> Result<Vhdx, ImageError> {
    let entries = parent_locator(reader, name, locator)?;
    let value = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let linkage_of = |key: &str| -> Result<Option<[u8; 16]>, ImageError> {
        value(key)
            .map(|text| {
                parse_guid(text).ok_or_else(|| {
                    corrupt(
                        name,
                        Some(locator.offset),
                        format!("the parent locator's {key} {text:?} is not a GUID"),
                    )
                })
            })
            .transpose()
    };
    let Some(linkage) = linkage_of("parent_linkage")? else {
        return Err(corrupt(
            name,
            Some(locator.offset),
            "the parent locator has no parent_linkage, the parent's identity",
        ));
    };
    let linkage2 = linkage_of("parent_linkage2")?;
    let others = ["volume_path", "absolute_win32_path"]
        .into_iter()
        .filter_map(value);
    let candidates = overlay::parent_candidates(value("relative_path"), others);
    if candidates.is_empty() {
        return Err(corrupt(
            name,
            Some(locator.offset),
            "the parent locator has no relative_path, volume_path or absolute_win32_path",
        ));
    }
    let parent = overlay::open_parent(
        name,
        &candidates,
        Format::Vhdx,
        opener,
        chain,
        Vhdx::open_in_chain,
    )?;
    if parent.data_write_guid != linkage && Some(parent.data_write_guid) != linkage2 {
        return Err(corrupt(
            name,
            Some(locator.offset),
            format!(
                "the differencing VHDX was made over the parent data {}, and its parent {} \
                 holds the data {}: the parent was written to or replaced since, and the \
                 differences no longer apply over it",
                guid_text(&linkage),
                parent.name,
                guid_text(&parent.data_write_guid)
            ),
        ));
    }
    if parent.logical_sector != params.logical_sector {
        return Err(corrupt(
            name,
            Some(locator.offset),
            format!(
                "the disk's sectors are {} bytes and its parent {}'s {}",
                params.logical_sector, parent.name, parent.logical_sector
            ),
        ));
    }
    Ok(parent)
}

/// The key-value pairs of a VHDX parent locator.
fn parent_locator(
    reader: &mut dyn ReadAt,
    name: &str,
    locator: &Region,
) -> Result<Vec<(String, String)>, ImageError> {
    // Bounded by MAX_ITEM_LEN when the metadata was read.
    let mut item = vec![0u8; locator.length as usize];
    read(reader, name, locator.offset, &mut item)?;
    if item.len() < 20 || item[..16] != VHDX_PARENT {
        return Err(unsupported(
            name,
            format!(
                "the parent locator at offset {:#x} is not of a VHDX parent; only VHDX \
                 parents are read",
                locator.offset
            ),
        ));
    }
    let count = usize::from(le_u16(&item, 18));
    let mut pairs = Vec::with_capacity(count.min(64));
    for i in 0..count {
        let at = 20 + i * 12;
        let text = |offset: u32, length: u16| {
            let start = offset as usize;
            let end = start + usize::from(length);
            item.get(start..end)
                .filter(|_| length.is_multiple_of(2))
                .map(|bytes| {
                    let units: Vec<u16> = bytes
                        .chunks_exact(2)
                        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
                        .collect();
                    String::from_utf16_lossy(&units)
                })
        };
        let pair = item.get(at..at + 12).and_then(|entry| {
            Some((
                text(le_u32(entry, 0), le_u16(entry, 8))?,
                text(le_u32(entry, 4), le_u16(entry, 10))?,
            ))
        });
        let Some(pair) = pair else {
            return Err(corrupt(
                name,
                Some(locator.offset + at as u64),
                format!(
                    "parent locator entry {i} lies outside the {}-byte locator, or is not \
                     UTF-16",
                    item.len()
                ),
            ));
        };
        pairs.push(pair);
    }
    Ok(pairs)
}

/// A GUID written as `{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}`, as VHDX stores GUIDs.
fn parse_guid(text: &str) -> Option<[u8; 16]> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let parts: Vec<&str> = inner.split('-').collect();
    let [a, b, c, d, e] = parts[..] else {
        return None;
    };
    if [a.len(), b.len(), c.len(), d.len(), e.len()] != [8, 4, 4, 4, 12] {
        return None;
    }
    let a = u32::from_str_radix(a, 16).ok()?;
    let b = u16::from_str_radix(b, 16).ok()?;
    let c = u16::from_str_radix(c, 16).ok()?;
    let tail = u64::from_str_radix(&format!("{d}{e}"), 16).ok()?;
    Some(guid(a, b, c, tail.to_be_bytes()))
}

/// Checks that a current header exists and that the image needs nothing this reader does
/// not do: a log to replay. Returns the current header's `DataWriteGuid`.
fn check_header(reader: &mut dyn ReadAt, name: &str) -> Result<[u8; 16], ImageError> {
    let mut current: Option<(u64, u64, [u8; HEADER_LEN])> = None;
    for at in HEADERS {
        let mut header = [0u8; HEADER_LEN];
        read(reader, name, at, &mut header)?;
        if &header[..4] != b"head" || !checksum_holds(&header) {
            continue;
        }
        let sequence = le_u64(&header, 8);
        if current.as_ref().is_none_or(|(s, _, _)| sequence > *s) {
            current = Some((sequence, at, header));
        }
    }
    let Some((_, at, header)) = current else {
        return Err(corrupt(
            name,
            Some(HEADERS[0]),
            "neither VHDX header (at 64 and 128 KiB) has a valid signature and checksum",
        ));
    };
    let version = le_u16(&header, 66);
    if version != 1 {
        return Err(unsupported(
            name,
            format!("VHDX version {version} (header at offset {at:#x}); only version 1 is read"),
        ));
    }
    let log_guid = &header[48..64];
    if log_guid.iter().any(|&b| b != 0) {
        let log = Region {
            offset: le_u64(&header, 72),
            length: u64::from(le_u32(&header, 68)),
        };
        if let Some(entry) = log_entry(reader, name, log, log_guid)? {
            return Err(unsupported(
                name,
                format!(
                    "the VHDX image has writes in its log (an entry at offset {entry:#x}) that \
                     may not have been applied: it was not closed cleanly; open it once in \
                     Hyper-V, or repair it with `qemu-img check -r all`"
                ),
            ));
        }
    }
    Ok(header[32..48].try_into().expect("16 bytes"))
}

/// The offset of the first entry of the log `log_guid` in the log region, if any. A log
/// GUID alone does not mean there is anything to replay: Hyper-V leaves it in images it
/// closed cleanly, with no entry of that log left.
fn log_entry(
    reader: &mut dyn ReadAt,
    name: &str,
    log: Region,
    log_guid: &[u8],
) -> Result<Option<u64>, ImageError> {
    within(name, "VHDX log", log.offset, log.length, reader.len())?;
    // Entries start on 4 KiB boundaries with the signature `loge` and their log's GUID.
    let mut piece = vec![0u8; 64 << 10];
    let mut at = 0;
    while at < log.length {
        let len = (log.length - at).min(piece.len() as u64) as usize;
        read(reader, name, log.offset + at, &mut piece[..len])?;
        for (i, sector) in piece[..len].chunks_exact(4096).enumerate() {
            if &sector[..4] == b"loge" && &sector[32..48] == log_guid {
                return Ok(Some(log.offset + at + i as u64 * 4096));
            }
        }
        at += len as u64;
    }
    Ok(None)
}

/// A region: file offset and length.
#[derive(Debug, Clone, Copy)]
struct Region {
    offset: u64,
    length: u64,
}

/// The BAT and metadata regions, from the first region table whose checksum holds.
fn regions(reader: &mut dyn ReadAt, name: &str) -> Result<(Region, Region), ImageError> {
    let mut table = vec![0u8; REGION_TABLE_LEN];
    let mut found = None;
    for at in REGION_TABLES {
        read(reader, name, at, &mut table)?;
        if &table[..4] == b"regi" && checksum_holds(&table) {
            found = Some(at);
            break;
        }
    }
    let Some(at) = found else {
        return Err(corrupt(
            name,
            Some(REGION_TABLES[0]),
            "neither VHDX region table (at 192 and 256 KiB) has a valid signature and checksum",
        ));
    };
    let count = le_u32(&table, 8);
    if count > MAX_TABLE_ENTRIES {
        return Err(corrupt(
            name,
            Some(at + 8),
            format!("the region table claims {count} entries; at most {MAX_TABLE_ENTRIES} fit"),
        ));
    }
    let file_size = reader.len();
    let (mut bat, mut metadata) = (None, None);
    for i in 0..count as usize {
        let entry = &table[16 + i * 32..16 + (i + 1) * 32];
        let entry_at = at + 16 + i as u64 * 32;
        let region = Region {
            offset: le_u64(entry, 16),
            length: u64::from(le_u32(entry, 24)),
        };
        let guid: [u8; 16] = entry[..16].try_into().expect("sixteen bytes");
        let slot = if guid == BAT_REGION {
            &mut bat
        } else if guid == METADATA_REGION {
            &mut metadata
        } else if le_u32(entry, 28) & 1 != 0 {
            return Err(unsupported(
                name,
                format!(
                    "the VHDX image requires a region this reader does not know (entry at \
                     offset {entry_at:#x})"
                ),
            ));
        } else {
            continue;
        };
        if region.offset < MIB {
            return Err(corrupt(
                name,
                Some(entry_at + 16),
                format!(
                    "a region at offset {:#x} lies in the first MiB, which the headers hold",
                    region.offset
                ),
            ));
        }
        within(name, "VHDX region", region.offset, region.length, file_size)?;
        *slot = Some(region);
    }
    match (bat, metadata) {
        (Some(bat), Some(metadata)) => Ok((bat, metadata)),
        _ => Err(corrupt(
            name,
            Some(at),
            "the region table lacks the block allocation table or the metadata region",
        )),
    }
}

/// What the metadata region says about the disk.
struct Parameters {
    block_size: u64,
    size: u64,
    logical_sector: u64,
    /// Where a differencing disk's parent locator lies.
    parent: Option<Region>,
}

impl Parameters {
    fn read(reader: &mut dyn ReadAt, name: &str, region: Region) -> Result<Parameters, ImageError> {
        if region.length < METADATA_TABLE_LEN as u64 {
            return Err(corrupt(
                name,
                Some(region.offset),
                format!(
                    "the metadata region holds {} bytes, less than its 64 KiB table",
                    region.length
                ),
            ));
        }
        let mut table = vec![0u8; METADATA_TABLE_LEN];
        read(reader, name, region.offset, &mut table)?;
        if &table[..8] != b"metadata" {
            return Err(corrupt(
                name,
                Some(region.offset),
                "the metadata table has no `metadata` signature",
            ));
        }
        let count = le_u16(&table, 10);
        if u32::from(count) > MAX_TABLE_ENTRIES {
            return Err(corrupt(
                name,
                Some(region.offset + 10),
                format!(
                    "the metadata table claims {count} entries; at most {MAX_TABLE_ENTRIES} fit"
                ),
            ));
        }
        let (mut block_size, mut size, mut logical_sector) = (None, None, None);
        let (mut has_parent, mut locator) = (false, None);
        for i in 0..usize::from(count) {
            let entry = &table[32 + i * 32..32 + (i + 1) * 32];
            let entry_at = region.offset + 32 + i as u64 * 32;
            let guid: [u8; 16] = entry[..16].try_into().expect("sixteen bytes");
            let item_offset = u64::from(le_u32(entry, 16));
            let item_length = u64::from(le_u32(entry, 20));
            let required = le_u32(entry, 24) & 4 != 0;
            let wanted = match guid {
                FILE_PARAMETERS => 8,
                VIRTUAL_DISK_SIZE => 8,
                LOGICAL_SECTOR_SIZE => 4,
                PARENT_LOCATOR => {
                    if item_length > MAX_ITEM_LEN
                        || item_offset
                            .checked_add(item_length)
                            .is_none_or(|end| end > region.length)
                    {
                        return Err(corrupt(
                            name,
                            Some(entry_at),
                            format!(
                                "the parent locator of {item_length} bytes at {item_offset:#x} \
                                 does not fit the {}-byte metadata region",
                                region.length
                            ),
                        ));
                    }
                    locator = Some(Region {
                        offset: region.offset + item_offset,
                        length: item_length,
                    });
                    continue;
                }
                PHYSICAL_SECTOR_SIZE | PAGE_83_DATA => continue,
                _ if required => {
                    return Err(unsupported(
                        name,
                        format!(
                            "the VHDX image requires a metadata item this reader does not know \
                             (entry at offset {entry_at:#x})"
                        ),
                    ));
                }
                _ => continue,
            };
            if item_length < wanted
                || item_offset
                    .checked_add(wanted)
                    .is_none_or(|end| end > region.length)
            {
                return Err(corrupt(
                    name,
                    Some(entry_at),
                    format!(
                        "metadata item of {item_length} bytes at {item_offset:#x} does not fit \
                         the {}-byte metadata region",
                        region.length
                    ),
                ));
            }
            let mut item = [0u8; 8];
            let item = &mut item[..wanted as usize];
            read(reader, name, region.offset + item_offset, item)?;
            match guid {
                FILE_PARAMETERS => {
                    has_parent = le_u32(item, 4) & 2 != 0;
                    block_size = Some((le_u32(item, 0), region.offset + item_offset));
                }
                VIRTUAL_DISK_SIZE => size = Some((le_u64(item, 0), region.offset + item_offset)),
                _ => logical_sector = Some((le_u32(item, 0), region.offset + item_offset)),
            }
        }
        let (Some((block_size, block_at)), Some((size, size_at)), Some((sector, sector_at))) =
            (block_size, size, logical_sector)
        else {
            return Err(corrupt(
                name,
                Some(region.offset),
                "the metadata table lacks the file parameters, the disk's size or its logical \
                 sector size",
            ));
        };
        if !block_size.is_power_of_two() || !(1 << 20..=256 << 20).contains(&block_size) {
            return Err(corrupt(
                name,
                Some(block_at),
                format!("block size {block_size} is not a power of two from 1 to 256 MiB"),
            ));
        }
        if sector != 512 && sector != 4096 {
            return Err(corrupt(
                name,
                Some(sector_at),
                format!("logical sector size {sector} is neither 512 nor 4096"),
            ));
        }
        let block_size = u64::from(block_size);
        if !size.is_multiple_of(u64::from(sector)) || size.div_ceil(block_size) > MAX_BLOCKS {
            return Err(corrupt(
                name,
                Some(size_at),
                format!(
                    "a disk of {size} bytes is not whole sectors of {sector} bytes, or needs more \
                     than {MAX_BLOCKS} blocks of {block_size} bytes"
                ),
            ));
        }
        let parent = match (has_parent, locator) {
            (false, _) => None,
            (true, Some(locator)) => Some(locator),
            (true, None) => {
                return Err(corrupt(
                    name,
                    Some(block_at),
                    "the file parameters say the disk has a parent, and the metadata holds no \
                     parent locator",
                ));
            }
        };
        Ok(Parameters {
            block_size,
            size,
            logical_sector: u64::from(sector),
            parent,
        })
    }
}

/// A payload block's BAT entry: what the block holds, and where the entry lies.
struct BatEntry {
    block: Block,
    at: u64,
}

/// Reads the BAT: what each payload block of the disk holds. A block not present is the
/// parent's (zeros for a disk without one); a partially present one, allowed only in a
/// differencing disk, is found through its chunk's sector bitmap block.
fn read_bat(
    reader: &mut dyn ReadAt,
    name: &str,
    region: Region,
    params: &Parameters,
) -> Result<Vec<BatEntry>, ImageError> {
    // 2^23 sectors' worth of payload blocks share one sector bitmap block.
    let chunk_ratio = ((1u64 << 23) * params.logical_sector / params.block_size).max(1);
    let blocks = params.size.div_ceil(params.block_size);
    // A differencing disk's table goes on to the sector bitmap entry of the last chunk,
    // which follows a whole chunk's payload entries even when the disk ends before.
    let entries = match blocks {
        0 => 0,
        n if params.parent.is_some() => n.div_ceil(chunk_ratio) * (chunk_ratio + 1),
        n => n + (n - 1) / chunk_ratio,
    };
    // Bounded by MAX_BLOCKS: at most 64 MiB and change.
    let bat_len = entries * 8;
    if bat_len > region.length {
        return Err(corrupt(
            name,
            Some(region.offset),
            format!(
                "the block allocation table holds {} bytes; a disk of {} bytes in blocks of {} \
                 bytes needs {bat_len}",
                region.length, params.size, params.block_size
            ),
        ));
    }
    let mut bat = vec![0u8; bat_len as usize];
    read(reader, name, region.offset, &mut bat)?;
    let file_size = reader.len();
    // Where a block or bitmap entry says its bytes start, checked to lie in the file.
    let located = |entry: u64, entry_at: u64, length: u64, what: String| {
        let start = (entry >> 20) << 20;
        if start < MIB || start.checked_add(length).is_none_or(|end| end > file_size) {
            return Err(corrupt(
                name,
                Some(entry_at),
                format!(
                    "{what} lies at offset {start:#x} ({length} bytes), outside the file \
                     ({file_size} bytes); the image is truncated or corrupt"
                ),
            ));
        }
        Ok(start)
    };
    let parent = params.parent.is_some();
    // One bit per sector of a block, in its chunk's bitmap.
    let bitmap_per_block = params.block_size / params.logical_sector / 8;
    let mut out = Vec::with_capacity(blocks as usize);
    for block in 0..blocks {
        let index = block + block / chunk_ratio;
        let entry_at = region.offset + index * 8;
        let entry = le_u64(&bat, (index * 8) as usize);
        let length = params
            .block_size
            .min(params.size - block * params.block_size);
        let what = || format!("block {block}");
        let kind = match entry & 7 {
            BLOCK_NOT_PRESENT if parent => Block::Parent,
            BLOCK_NOT_PRESENT | BLOCK_UNDEFINED | BLOCK_ZERO | BLOCK_UNMAPPED => Block::Zero,
            BLOCK_FULLY_PRESENT => Block::Own(located(entry, entry_at, length, what())?),
            BLOCK_PARTIALLY_PRESENT if parent => {
                let data = located(entry, entry_at, length, what())?;
                let chunk = block / chunk_ratio;
                let bitmap_index = (chunk + 1) * (chunk_ratio + 1) - 1;
                let bitmap_at = region.offset + bitmap_index * 8;
                let bitmap_entry = le_u64(&bat, (bitmap_index * 8) as usize);
                if bitmap_entry & 7 != SB_BLOCK_PRESENT {
                    return Err(corrupt(
                        name,
                        Some(bitmap_at),
                        format!(
                            "block {block} is partially present, and the sector bitmap of its \
                             chunk is not in the file (state {})",
                            bitmap_entry & 7
                        ),
                    ));
                }
                let bitmap = located(
                    bitmap_entry,
                    bitmap_at,
                    MIB,
                    format!("the sector bitmap of chunk {chunk}"),
                )?;
                Block::Partial {
                    data,
                    bitmap: bitmap + (block % chunk_ratio) * bitmap_per_block,
                }
            }
            BLOCK_PARTIALLY_PRESENT => Block::Partial { data: 0, bitmap: 0 },
            other => {
                return Err(corrupt(
                    name,
                    Some(entry_at),
                    format!("block {block} has the unknown state {other}"),
                ));
            }
        };
        out.push(BatEntry {
            block: kind,
            at: entry_at,
        });
    }
    Ok(out)
}

impl DiskImage for Vhdx {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn virtual_size(&self) -> u64 {
        match &self.layout {
            Layout::Whole { map, .. } => map.size,
            Layout::Differencing(overlay) => overlay.size,
        }
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        match &mut self.layout {
            Layout::Whole { reader, map } => map.read(&mut **reader, &self.name, offset, buf),
            Layout::Differencing(overlay) => overlay.read_at(&self.name, offset, buf),
        }
    }

    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError> {
        match &mut self.layout {
            Layout::Whole { map, .. } => map.map(&self.name, offset, length),
            Layout::Differencing(overlay) => overlay.map(&self.name, offset, length),
        }
    }

    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        match &mut self.layout {
            Layout::Whole { map, .. } => map.runs(&self.name, offset, length),
            Layout::Differencing(overlay) => overlay.runs(&self.name, offset, length),
        }
    }

    /// A differencing disk's parents' files, the parent's own first.
    fn file_name(&self, file: u32) -> Option<&str> {
        match &self.layout {
            Layout::Whole { .. } => None,
            Layout::Differencing(overlay) => overlay.file_name(file),
        }
    }

    fn describe(&self) -> String {
        match &self.layout {
            Layout::Whole { map, .. } => format!(
                "VHDX image {}: {} bytes, {} of {} blocks of {} MiB present",
                self.name,
                map.size,
                map.stored(),
                map.blocks.len(),
                map.block_size >> 20
            ),
            Layout::Differencing(overlay) => format!(
                "differencing VHDX image {}: {} bytes, {} of {} blocks of {} MiB present; \
                 over {}",
                self.name,
                overlay.size,
                overlay.own_blocks(),
                overlay.blocks.len(),
                overlay.block_size >> 20,
                overlay.parent.describe()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_read_as_vhdx_writes_them() {
        let text = "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}";
        let id = parse_guid(text).unwrap();
        assert_eq!(
            id,
            guid(
                0x83ed_0ec3,
                0x24c8,
                0x49a6,
                [0xa9, 0x59, 0x5e, 0x4b, 0xf1, 0x28, 0x8b, 0xfb]
            )
        );
        assert_eq!(guid_text(&id), text);
        assert_eq!(
            parse_guid("{83ED0EC3-24C8-49A6-A959-5E4BF1288BFB}"),
            Some(id)
        );
        for bad in [
            "83ed0ec3-24c8-49a6-a959-5e4bf1288bfb",
            "{83ed0ec3-24c8-49a6-a9595e4bf1288bfb}",
            "{x3ed0ec3-24c8-49a6-a959-5e4bf1288bfb}",
            "",
        ] {
            assert_eq!(parse_guid(bad), None, "{bad}");
        }
    }
}
