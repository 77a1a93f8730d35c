//! VHD images (Virtual Hard Disk 1.0, which QEMU calls `vpc`), as Hyper-V, Azure and
//! Virtual PC write them: fixed, dynamic and differencing disks.
//!
//! Every VHD ends in a 512-byte footer: the cookie `conectix`, the disk's size, its type
//! and a checksum, all big-endian. A **fixed** disk is the guest's bytes followed by the
//! footer, so it reads as a raw disk of the footer's size (holes of a sparse file are
//! holes here too). A **dynamic** disk starts with a copy of the footer, points from it to
//! a 1024-byte header (cookie `cxsparse`, with a checksum of its own), and from that to the
//! block allocation table: one big-endian sector number per block of the disk (2 MiB by
//! default), or `0xFFFFFFFF` for a block never written, which reads as zeros. An allocated
//! block is a sector bitmap followed by the block's bytes, which lie verbatim in the file.
//!
//! Like QEMU, the reader takes a dynamic disk's allocated block's bytes as they are and
//! does not consult its sector bitmap: writers fill a dynamic disk's new blocks with zeros.
//! A **differencing** disk has a dynamic disk's layout over a parent VHD, and there the
//! bitmap decides: see [`differencing`]. When the footer at the end is damaged, a dynamic
//! or differencing disk's copy at the start is used.
//!
//! Every number read is checked before use: the table's size is bounded ([`MAX_BLOCKS`]),
//! and every allocated block must lie within the file, before anything is read from it.

mod differencing;

use crate::block_map::{BlockMap, read_exact as read};
use crate::chain::{BackingOpener, ImageFile, no_backing};
use crate::error::ImageError;
use crate::fields::{be_u32, be_u64, corrupt, within};
use crate::image::{DiskImage, Run};
use crate::overlay::Overlay;
use crate::raw::Raw;
use crate::{Extent, Format, ReadAt};

/// The footer's cookie, at its start.
pub(crate) const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// The dynamic disk header's cookie.
const HEADER_COOKIE: &[u8; 8] = b"cxsparse";
/// Length of the footer, and of the sectors block numbers count in.
const SECTOR: u64 = 512;
/// Length of the dynamic disk header.
const HEADER_LEN: usize = 1024;
/// The footer's and header's format version, 1.0.
const VERSION: u32 = 0x0001_0000;
/// The table entry of a block never written.
const UNALLOCATED: u32 = u32::MAX;
/// A fixed disk's `data offset`: no header.
const NO_HEADER: u64 = u64::MAX;

/// Disk types of the footer.
const FIXED: u32 = 2;
const DYNAMIC: u32 = 3;
const DIFFERENCING: u32 = 4;

/// Most blocks a dynamic disk may have: a table of 32 MiB (a disk of 16 TiB with blocks of
/// 2 MiB; the format's limit is 2 TiB).
pub const MAX_BLOCKS: u32 = 8 << 20;
/// Largest block accepted. Writers use 2 MiB (Hyper-V also 512 KiB); the format only asks
/// for a power of two.
const MAX_BLOCK_SIZE: u32 = 256 << 20;

/// The one's complement of the sum of `bytes`' bytes, the four at `field` (the checksum's
/// own place) counted as zeros.
fn checksum(bytes: &[u8], field: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|&(i, _)| !(field..field + 4).contains(&i))
        .fold(0u32, |sum, (_, &b)| sum.wrapping_add(u32::from(b)));
    !sum
}

/// What a valid footer says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Footer {
    disk_type: u32,
    data_offset: u64,
    size: u64,
    /// The disk's identifier, which a differencing disk names its parent by.
    unique_id: [u8; 16],
}

impl Footer {
    /// Parses a footer; `Err` says why the bytes are not a valid one.
    fn parse(bytes: &[u8; SECTOR as usize]) -> Result<Footer, String> {
        if &bytes[..8] != FOOTER_COOKIE {
            return Err("no `conectix` cookie".into());
        }
        let stored = be_u32(bytes, 64);
        let computed = checksum(bytes, 64);
        if stored != computed {
            return Err(format!(
                "checksum {stored:#010x} does not match its contents ({computed:#010x})"
            ));
        }
        let version = be_u32(bytes, 12);
        if version >> 16 != VERSION >> 16 {
            return Err(format!("format version {version:#010x}, not 1.x"));
        }
        Ok(Footer {
            disk_type: be_u32(bytes, 60),
            data_offset: be_u64(bytes, 16),
            size: be_u64(bytes, 48),
            unique_id: bytes[68..84].try_into().expect("16 bytes"),
        })
    }

    /// Whether this is a fixed disk's footer that ends a file of `file_len` bytes.
    pub(crate) fn is_fixed_for(&self, file_len: u64) -> bool {
        self.disk_type == FIXED && self.size.checked_add(SECTOR) == Some(file_len)
    }
}

/// Reads the footer at `offset` of `reader`: `Ok(Err(reason))` when the bytes there are no
/// valid footer, an error when they cannot be read.
fn read_footer(
    reader: &mut dyn ReadAt,
    name: &str,
    offset: u64,
) -> Result<Result<Footer, String>, ImageError> {
    let mut bytes = [0u8; SECTOR as usize];
    read(reader, name, offset, &mut bytes)?;
    Ok(Footer::parse(&bytes))
}

/// The valid footer at the end of a file, if it has one (used when probing).
pub(crate) fn trailing_footer(
    reader: &mut dyn ReadAt,
    name: &str,
) -> Result<Option<Footer>, ImageError> {
    let len = reader.len();
    if len < SECTOR {
        return Ok(None);
    }
    Ok(read_footer(reader, name, len - SECTOR)?.ok())
}

/// Largest disk a VHD holds: the format's 2040 GiB.
pub const MAX_VHD_SIZE: u64 = 2040 << 30;

/// The footer that makes a raw disk of `size` bytes a fixed VHD when appended to it: the
/// file is then the disk followed by these 512 bytes. `timestamp` is in seconds since the
/// Unix epoch (before 2000 counts as 2000), `unique_id` the disk's identifier.
///
/// The geometry is the format's own computation from the size; when that does not cover
/// the size exactly, the largest geometry is written instead, which tells readers that go
/// by geometry (QEMU) to take the size from the footer, as Hyper-V and Azure do. `None` for
/// a size the format cannot hold: not whole 512-byte sectors, or over [`MAX_VHD_SIZE`].
pub fn fixed_footer(size: u64, timestamp: u64, unique_id: [u8; 16]) -> Option<[u8; 512]> {
    if !size.is_multiple_of(SECTOR) || size > MAX_VHD_SIZE {
        return None;
    }
    let (cylinders, heads, sectors) = match geometry(size / SECTOR) {
        (c, h, s) if u64::from(c) * u64::from(h) * u64::from(s) * SECTOR == size => (c, h, s),
        _ => (65535, 16, 255),
    };
    let mut footer = [0u8; SECTOR as usize];
    footer[..8].copy_from_slice(FOOTER_COOKIE);
    // Features: the bit the format reserves, always set.
    footer[8..12].copy_from_slice(&2u32.to_be_bytes());
    footer[12..16].copy_from_slice(&VERSION.to_be_bytes());
    footer[16..24].copy_from_slice(&NO_HEADER.to_be_bytes());
    // Seconds since 2000-01-01 00:00:00 UTC.
    let since_2000 = timestamp.saturating_sub(946_684_800);
    footer[24..28].copy_from_slice(&(since_2000.min(u64::from(u32::MAX)) as u32).to_be_bytes());
    footer[28..32].copy_from_slice(b"tess");
    footer[32..36].copy_from_slice(&VERSION.to_be_bytes());
    footer[36..40].copy_from_slice(b"Wi2k");
    footer[40..48].copy_from_slice(&size.to_be_bytes());
    footer[48..56].copy_from_slice(&size.to_be_bytes());
    footer[56..58].copy_from_slice(&cylinders.to_be_bytes());
    footer[58] = heads;
    footer[59] = sectors;
    footer[60..64].copy_from_slice(&FIXED.to_be_bytes());
    footer[68..84].copy_from_slice(&unique_id);
    let sum = checksum(&footer, 64);
    footer[64..68].copy_from_slice(&sum.to_be_bytes());
    Some(footer)
}

/// Cylinders, heads and sectors per track for a disk of `total` sectors, computed as the
/// VHD specification does (at most 65535 x 16 x 255).
fn geometry(total: u64) -> (u16, u8, u8) {
    let total = total.min(65535 * 16 * 255);
    let (sectors, heads, cylinder_heads) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut sectors = 17;
        let mut cylinder_heads = total / sectors;
        let mut heads = cylinder_heads.div_ceil(1024).max(4);
        if cylinder_heads >= heads * 1024 || heads > 16 {
            sectors = 31;
            heads = 16;
            cylinder_heads = total / sectors;
        }
        if cylinder_heads >= heads * 1024 {
            sectors = 63;
            heads = 16;
            cylinder_heads = total / sectors;
        }
        (sectors, heads, cylinder_heads)
    };
    // Bounded above: cylinders at most 65535, heads at most 16, sectors at most 255.
    ((cylinder_heads / heads) as u16, heads as u8, sectors as u8)
}

/// A VHD image over a [`ReadAt`] source.
pub struct Vhd {
    name: String,
    size: u64,
    /// The footer's unique id, by which a differencing disk names its parent.
    unique_id: [u8; 16],
    layout: Layout,
}

enum Layout {
    /// The guest's bytes are the file's first `size` bytes.
    Fixed(Raw<Prefix>),
    Dynamic(Dynamic),
    Differencing(Box<Overlay>),
}

struct Dynamic {
    reader: Box<dyn ReadAt>,
    /// Where each block's bytes start, after its sector bitmap.
    map: BlockMap,
    /// Length of each block's sector bitmap, which comes before its bytes.
    bitmap: u64,
}

impl Vhd {
    /// Opens the VHD image `name` read by `reader`. `data_ranges` are the ranges of the file
    /// the host reported as holding data (see [`Raw::new`]); only a fixed disk uses them.
    /// A differencing disk is refused: its parent cannot be opened here ([`crate::open`]
    /// opens it with its parent).
    pub fn open(
        reader: Box<dyn ReadAt>,
        name: impl Into<String>,
        data_ranges: Option<Vec<(u64, u64)>>,
    ) -> Result<Vhd, ImageError> {
        let name = name.into();
        let file = ImageFile {
            name: name.clone(),
            reader,
            data_ranges,
        };
        Vhd::open_in_chain(file, &mut no_backing, &mut vec![name])
    }

    /// Opens `file`, whose name is already the last of `chain`, and, for a differencing
    /// disk, its parents through `opener`.
    pub(crate) fn open_in_chain(
        file: ImageFile,
        opener: &mut BackingOpener<'_>,
        chain: &mut Vec<String>,
    ) -> Result<Vhd, ImageError> {
        let ImageFile {
            name,
            mut reader,
            data_ranges,
        } = file;
        let file_len = reader.len();
        within(&name, "VHD footer", 0, SECTOR, file_len)?;
        let end = file_len - SECTOR;
        let footer = match read_footer(&mut *reader, &name, end)? {
            Ok(footer) => footer,
            // A dynamic disk keeps a copy of its footer at the start.
            Err(at_end) => match read_footer(&mut *reader, &name, 0)? {
                Ok(copy) if copy.disk_type != FIXED => copy,
                _ => {
                    return Err(corrupt(
                        &name,
                        Some(end),
                        format!("the VHD footer at the end of the file is invalid: {at_end}"),
                    ));
                }
            },
        };
        let layout = match footer.disk_type {
            FIXED => {
                if footer.size != end {
                    return Err(corrupt(
                        &name,
                        Some(end),
                        format!(
                            "the fixed VHD's footer gives a disk of {} bytes, but the file holds \
                             {end} bytes before its footer",
                            footer.size
                        ),
                    ));
                }
                let prefix = Prefix {
                    reader,
                    len: footer.size,
                };
                Layout::Fixed(Raw::new(prefix, name.clone(), data_ranges))
            }
            DYNAMIC => Layout::Dynamic(Dynamic::open(reader, &name, &footer)?.0),
            DIFFERENCING => {
                let (dynamic, header) = Dynamic::open(reader, &name, &footer)?;
                Layout::Differencing(Box::new(differencing::open(
                    dynamic, &name, &header, opener, chain,
                )?))
            }
            other => {
                return Err(corrupt(
                    &name,
                    Some(end + 60),
                    format!(
                        "unknown VHD disk type {other} (2 is fixed, 3 dynamic, 4 differencing)"
                    ),
                ));
            }
        };
        Ok(Vhd {
            name,
            size: footer.size,
            unique_id: footer.unique_id,
            layout,
        })
    }
}

/// A dynamic or differencing disk's header: where it lies, and its bytes.
struct Header {
    at: u64,
    bytes: [u8; HEADER_LEN],
}

impl Dynamic {
    /// Opens the layout of a dynamic or differencing disk: its header and block table.
    fn open(
        mut reader: Box<dyn ReadAt>,
        name: &str,
        footer: &Footer,
    ) -> Result<(Dynamic, Header), ImageError> {
        let file_len = reader.len();
        let at = footer.data_offset;
        within(
            name,
            "VHD dynamic disk header",
            at,
            HEADER_LEN as u64,
            file_len,
        )?;
        let mut header = [0u8; HEADER_LEN];
        read(&mut *reader, name, at, &mut header)?;
        if &header[..8] != HEADER_COOKIE {
            return Err(corrupt(
                name,
                Some(at),
                "the dynamic disk header has no `cxsparse` cookie",
            ));
        }
        let stored = be_u32(&header, 36);
        let computed = checksum(&header, 36);
        if stored != computed {
            return Err(corrupt(
                name,
                Some(at + 36),
                format!(
                    "the dynamic disk header's checksum {stored:#010x} does not match its \
                     contents ({computed:#010x})"
                ),
            ));
        }
        let table = be_u64(&header, 16);
        let entries = be_u32(&header, 28);
        let block_size = be_u32(&header, 32);
        if !block_size.is_power_of_two() || !(SECTOR as u32..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(corrupt(
                name,
                Some(at + 32),
                format!(
                    "block size {block_size} is not a power of two from 512 bytes to {} MiB",
                    MAX_BLOCK_SIZE >> 20
                ),
            ));
        }
        let block_size = u64::from(block_size);
        let needed = footer.size.div_ceil(block_size);
        if needed > u64::from(MAX_BLOCKS) {
            return Err(corrupt(
                name,
                Some(at + 28),
                format!(
                    "a disk of {} bytes in blocks of {block_size} bytes needs {needed} blocks; at \
                     most {MAX_BLOCKS} are read",
                    footer.size
                ),
            ));
        }
        if u64::from(entries) < needed {
            return Err(corrupt(
                name,
                Some(at + 28),
                format!(
                    "the block table has {entries} entries, but a disk of {} bytes in blocks of \
                     {block_size} bytes needs {needed}",
                    footer.size
                ),
            ));
        }
        let table_len = needed * 4;
        within(name, "VHD block table", table, table_len, file_len)?;
        // Bounded by MAX_BLOCKS above.
        let mut raw = vec![0u8; table_len as usize];
        read(&mut *reader, name, table, &mut raw)?;
        // One bit per sector, padded to whole sectors.
        let bitmap = (block_size / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
        let mut blocks = Vec::with_capacity(needed as usize);
        for (i, entry) in raw.chunks_exact(4).enumerate() {
            let sector = u32::from_be_bytes(entry.try_into().expect("four bytes"));
            if sector == UNALLOCATED {
                blocks.push(None);
                continue;
            }
            let i = i as u64;
            // The last block may be cut short by the disk's end.
            let length = block_size.min(footer.size - i * block_size);
            let start = u64::from(sector) * SECTOR + bitmap;
            if start.checked_add(length).is_none_or(|e| e > file_len) {
                return Err(corrupt(
                    name,
                    Some(table + i * 4),
                    format!(
                        "block {i} lies at offset {start:#x} ({length} bytes), past the end of \
                         the file ({file_len} bytes); the image is truncated or corrupt"
                    ),
                ));
            }
            blocks.push(Some(start));
        }
        let dynamic = Dynamic {
            reader,
            map: BlockMap {
                size: footer.size,
                block_size,
                blocks,
            },
            bitmap,
        };
        Ok((dynamic, Header { at, bytes: header }))
    }
}

impl DiskImage for Vhd {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> Format {
        Format::Vhd
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let dynamic = match &mut self.layout {
            Layout::Fixed(raw) => return raw.read_at(offset, buf),
            Layout::Differencing(d) => return d.read_at(&self.name, offset, buf),
            Layout::Dynamic(dynamic) => dynamic,
        };
        dynamic
            .map
            .read(&mut *dynamic.reader, &self.name, offset, buf)
    }

    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError> {
        let dynamic = match &mut self.layout {
            Layout::Fixed(raw) => return raw.map(offset, length),
            Layout::Differencing(d) => return d.map(&self.name, offset, length),
            Layout::Dynamic(dynamic) => dynamic,
        };
        dynamic.map.map(&self.name, offset, length)
    }

    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        let dynamic = match &mut self.layout {
            Layout::Fixed(raw) => return raw.runs(offset, length),
            Layout::Differencing(d) => return d.runs(&self.name, offset, length),
            Layout::Dynamic(dynamic) => dynamic,
        };
        dynamic.map.runs(&self.name, offset, length)
    }

    /// A differencing disk's parents' files, the parent's own first (see
    /// [`DiskImage::file_name`]).
    fn file_name(&self, file: u32) -> Option<&str> {
        match &self.layout {
            Layout::Differencing(d) => d.file_name(file),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match &self.layout {
            Layout::Fixed(_) => format!("fixed VHD image {}: {} bytes", self.name, self.size),
            Layout::Dynamic(d) => format!(
                "dynamic VHD image {}: {} bytes, {} of {} blocks of {} KiB allocated",
                self.name,
                self.size,
                d.map.stored(),
                d.map.blocks.len(),
                d.map.block_size >> 10
            ),
            Layout::Differencing(d) => format!(
                "differencing VHD image {}: {} bytes, {} of {} blocks of {} KiB its own; over {}",
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

/// The first `len` bytes of a source: a fixed disk without its footer.
struct Prefix {
    reader: Box<dyn ReadAt>,
    len: u64,
}

impl ReadAt for Prefix {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let fits = offset
            .checked_add(<[u8]>::len(buf) as u64)
            .is_some_and(|end| end <= self.len);
        if !fits {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.reader.read_exact_at(offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_specification() {
        // 20 MiB: 17 sectors per track, 4 heads; 127 GiB and more: the largest.
        assert_eq!(geometry(40960), (602, 4, 17));
        assert_eq!(geometry(65535 * 16 * 255 + 1), (65535, 16, 255));
        assert_eq!(geometry(0), (0, 4, 17));
    }

    #[test]
    fn a_fixed_footer_reads_back_and_names_the_size() {
        for size in [512, 20 << 20, (1 << 30) + 4096, MAX_VHD_SIZE] {
            let footer = fixed_footer(size, 1_700_000_000, [7; 16]).unwrap();
            let parsed = Footer::parse(&footer).unwrap();
            assert!(parsed.is_fixed_for(size + 512), "{size}");
            assert_eq!(parsed.size, size);
        }
        assert!(fixed_footer(1000, 0, [0; 16]).is_none());
        assert!(fixed_footer(MAX_VHD_SIZE + 512, 0, [0; 16]).is_none());
    }
}
