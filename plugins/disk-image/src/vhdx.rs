//! VHDX images (Virtual Hard Disk v2), as Hyper-V writes them by default: fixed and
//! dynamic disks. Differencing disks, and images whose log holds entries that may need
//! replaying, are refused.
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
//! Every number read is checked before use: the tables' sizes are bounded ([`MAX_BLOCKS`]),
//! every region, metadata item and present block must lie within the file, and the
//! structures' checksums must hold.

use crc::{CRC_32_ISCSI, Crc};

use crate::block_map::{self, BlockMap};
use crate::error::ImageError;
use crate::fields::{corrupt, le_u16, le_u32, le_u64, unsupported, within};
use crate::image::{DiskImage, Run};
use crate::{Extent, Format, ReadAt};

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

/// Payload block states of a BAT entry.
const BLOCK_NOT_PRESENT: u64 = 0;
const BLOCK_UNDEFINED: u64 = 1;
const BLOCK_ZERO: u64 = 2;
const BLOCK_UNMAPPED: u64 = 3;
const BLOCK_FULLY_PRESENT: u64 = 6;
const BLOCK_PARTIALLY_PRESENT: u64 = 7;

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
    reader: Box<dyn ReadAt>,
    name: String,
    map: BlockMap,
}

impl Vhdx {
    /// Opens the VHDX image `name` read by `reader`.
    pub fn open(mut reader: Box<dyn ReadAt>, name: impl Into<String>) -> Result<Vhdx, ImageError> {
        let name = name.into();
        let mut signature = [0u8; 8];
        read(&mut *reader, &name, 0, &mut signature)?;
        if &signature != SIGNATURE {
            return Err(corrupt(&name, Some(0), "no `vhdxfile` signature"));
        }
        check_header(&mut *reader, &name)?;
        let (bat, metadata) = regions(&mut *reader, &name)?;
        let params = Parameters::read(&mut *reader, &name, metadata)?;
        let blocks = read_bat(&mut *reader, &name, bat, &params)?;
        Ok(Vhdx {
            reader,
            name,
            map: BlockMap {
                size: params.size,
                block_size: params.block_size,
                blocks,
            },
        })
    }
}

/// Checks that a current header exists and that the image needs nothing this reader does
/// not do: a log to replay.
fn check_header(reader: &mut dyn ReadAt, name: &str) -> Result<(), ImageError> {
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
    Ok(())
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
                    return Err(unsupported(
                        name,
                        "the image is a differencing VHDX, which needs its parent; merge it into \
                         a whole disk first (`qemu-img convert -O vhdx` or Hyper-V's Merge)",
                    ));
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
                    if le_u32(item, 4) & 2 != 0 {
                        return Err(unsupported(
                            name,
                            "the image is a differencing VHDX, which needs its parent; merge it \
                             into a whole disk first (`qemu-img convert -O vhdx` or Hyper-V's \
                             Merge)",
                        ));
                    }
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
        Ok(Parameters {
            block_size,
            size,
            logical_sector: u64::from(sector),
        })
    }
}

/// Reads the BAT: where each payload block of the disk lies, `None` for one that reads as
/// zeros.
fn read_bat(
    reader: &mut dyn ReadAt,
    name: &str,
    region: Region,
    params: &Parameters,
) -> Result<Vec<Option<u64>>, ImageError> {
    // 2^23 sectors' worth of payload blocks share one sector bitmap block.
    let chunk_ratio = ((1u64 << 23) * params.logical_sector / params.block_size).max(1);
    let blocks = params.size.div_ceil(params.block_size);
    let entries = match blocks {
        0 => 0,
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
    let mut out = Vec::with_capacity(blocks as usize);
    for block in 0..blocks {
        let index = block + block / chunk_ratio;
        let entry_at = region.offset + index * 8;
        let entry = le_u64(&bat, (index * 8) as usize);
        let state = entry & 7;
        match state {
            BLOCK_NOT_PRESENT | BLOCK_UNDEFINED | BLOCK_ZERO | BLOCK_UNMAPPED => out.push(None),
            BLOCK_FULLY_PRESENT => {
                let start = (entry >> 20) << 20;
                let length = params
                    .block_size
                    .min(params.size - block * params.block_size);
                if start < MIB || start.checked_add(length).is_none_or(|end| end > file_size) {
                    return Err(corrupt(
                        name,
                        Some(entry_at),
                        format!(
                            "block {block} lies at offset {start:#x} ({length} bytes), outside \
                             the file ({file_size} bytes); the image is truncated or corrupt"
                        ),
                    ));
                }
                out.push(Some(start));
            }
            BLOCK_PARTIALLY_PRESENT => {
                return Err(corrupt(
                    name,
                    Some(entry_at),
                    format!(
                        "block {block} is partially present, which only a differencing disk's \
                         blocks may be"
                    ),
                ));
            }
            other => {
                return Err(corrupt(
                    name,
                    Some(entry_at),
                    format!("block {block} has the unknown state {other}"),
                ));
            }
        }
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
            "VHDX image {}: {} bytes, {} of {} blocks of {} MiB present",
            self.name,
            self.map.size,
            self.map.stored(),
            self.map.blocks.len(),
            self.map.block_size >> 20
        )
    }
}
