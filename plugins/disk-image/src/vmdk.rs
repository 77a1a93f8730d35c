//! VMDK images (VMware's virtual disks) in one file: `monolithicSparse`, VMware's default
//! for a growable disk, and `streamOptimized`, its compressed form in OVF/OVA exports.
//! Disks split over several files, flat disks (their data is a raw file next to a text
//! descriptor) and delta disks (snapshots, which need their parent) are refused.
//!
//! A sparse VMDK starts with a 512-byte header (magic `KDMV`, little-endian numbers,
//! offsets in 512-byte sectors): the disk's capacity, the grain size (the unit of
//! allocation, 64 KiB by default), the embedded text descriptor, and the grain directory.
//! Each directory entry points to a grain table of 512 entries, each the sector where a
//! grain lies, 0 for a grain never written (zeros), or 1 for a grain written as zeros when
//! the header allows it. In a stream-optimized disk every grain is deflate-compressed
//! (zlib) behind a 12-byte marker (its disk sector and compressed size), and the header
//! may say that the directory is found through a copy of the header at the end of the file.
//!
//! Every number read is checked before use: the grain tables are bounded ([`MAX_GRAINS`]),
//! every table and uncompressed grain must lie within the file, and a compressed grain
//! must inflate to its full size.

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

use crate::block_map::read_exact as read;
use crate::error::{ImageError, ImageErrorKind};
use crate::fields::{corrupt, le_u16, le_u32, le_u64, unsupported, within};
use crate::image::{DiskImage, ExtentList, Run, Stored, check_range, push_run};
use crate::{Extent, ExtentKind, Format, ReadAt};

/// The header's magic, `KDMV`, at offset 0.
pub(crate) const MAGIC: &[u8; 4] = b"KDMV";

const SECTOR: u64 = 512;
/// A grain directory at the end of the file, found through the footer's copy of the header.
const GD_AT_END: u64 = u64::MAX;
/// Grain table entries per grain table: the format's fixed 512.
const GTES_PER_GT: u64 = 512;
/// Header flags.
const FLAG_ZEROED_GRAIN: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
/// `compressAlgorithm`: deflate.
const DEFLATE: u16 = 1;
/// The grain table entry of a grain written as zeros, when [`FLAG_ZEROED_GRAIN`] is set.
const ZEROED_GRAIN: u32 = 1;
/// Bytes before a compressed grain's data: its disk sector (u64) and compressed size (u32).
const GRAIN_MARKER: u64 = 12;

/// Most grains read: tables of 128 MiB, a disk of 2 TiB (the format's limit) in 64 KiB
/// grains.
pub const MAX_GRAINS: u64 = 32 << 20;
/// Largest embedded descriptor read.
const MAX_DESCRIPTOR: u64 = 1 << 20;

/// A VMDK image over a [`ReadAt`] source.
pub struct Vmdk {
    reader: Box<dyn ReadAt>,
    name: String,
    size: u64,
    /// Grain size in bytes.
    grain: u64,
    /// Each grain's table entry: the sector it lies at, or 0 or [`ZEROED_GRAIN`].
    entries: Vec<u32>,
    zeroed_grain: bool,
    compressed: bool,
    /// The grain inflated last, and its number.
    inflated: Option<(u64, Vec<u8>)>,
    inflater: Box<DecompressorOxide>,
}

impl Vmdk {
    /// Opens the VMDK image `name` read by `reader`.
    pub fn open(mut reader: Box<dyn ReadAt>, name: impl Into<String>) -> Result<Vmdk, ImageError> {
        let name = name.into();
        let file_size = reader.len();
        within(&name, "VMDK header", 0, SECTOR, file_size)?;
        let mut header = [0u8; SECTOR as usize];
        read(&mut *reader, &name, 0, &mut header)?;
        if &header[..4] != MAGIC {
            return Err(corrupt(&name, Some(0), "no `KDMV` magic"));
        }
        let version = le_u32(&header, 4);
        if !(1..=3).contains(&version) {
            return Err(unsupported(
                &name,
                format!("VMDK sparse extent version {version}; versions 1 to 3 are read"),
            ));
        }
        check_descriptor(&mut *reader, &name, &header)?;
        // A stream-optimized disk may leave the directory's place to a copy of the header
        // in the footer: a marker, the header, and an end-of-stream marker.
        let mut at = 0;
        if le_u64(&header, 56) == GD_AT_END {
            at = file_size
                .checked_sub(2 * SECTOR)
                .filter(|&a| a > 0)
                .ok_or_else(|| {
                    corrupt(
                        &name,
                        Some(56),
                        "the grain directory is said to be at the end, but the file has no footer",
                    )
                })?;
            read(&mut *reader, &name, at, &mut header)?;
            if &header[..4] != MAGIC || le_u64(&header, 56) == GD_AT_END {
                return Err(corrupt(
                    &name,
                    Some(at),
                    "the footer holds no copy of the header giving the grain directory",
                ));
            }
        }
        let flags = le_u32(&header, 8);
        let capacity = le_u64(&header, 12);
        let grain_sectors = le_u64(&header, 20);
        let gtes = u64::from(le_u32(&header, 44));
        let directory = le_u64(&header, 56);
        let compression = le_u16(&header, 77);
        if !grain_sectors.is_power_of_two() || !(8..=4096).contains(&grain_sectors) {
            return Err(corrupt(
                &name,
                Some(at + 20),
                format!(
                    "grain size of {grain_sectors} sectors is not a power of two from 8 (4 KiB) \
                     to 4096 (2 MiB)"
                ),
            ));
        }
        if gtes != GTES_PER_GT {
            return Err(corrupt(
                &name,
                Some(at + 44),
                format!("{gtes} entries per grain table, where the format has {GTES_PER_GT}"),
            ));
        }
        let compressed = flags & FLAG_COMPRESSED != 0;
        if compressed && compression != DEFLATE {
            return Err(unsupported(
                &name,
                format!(
                    "VMDK grains compressed with algorithm {compression}; only deflate is read"
                ),
            ));
        }
        let grain = grain_sectors * SECTOR;
        let grains = capacity.div_ceil(grain_sectors);
        if grains > MAX_GRAINS || capacity > u64::MAX / SECTOR {
            return Err(corrupt(
                &name,
                Some(at + 12),
                format!(
                    "a disk of {capacity} sectors in grains of {grain_sectors} sectors has more \
                     than {MAX_GRAINS} grains"
                ),
            ));
        }
        let size = capacity * SECTOR;
        let entries = read_tables(&mut *reader, &name, directory, grains, compressed, grain)?;
        Ok(Vmdk {
            reader,
            name,
            size,
            grain,
            entries,
            zeroed_grain: flags & FLAG_ZEROED_GRAIN != 0,
            compressed,
            inflated: None,
            inflater: Box::default(),
        })
    }

    /// Where grain `index` lies in the file, `None` when it reads as zeros.
    fn stored(&self, index: u64) -> Option<u64> {
        match self.entries[index as usize] {
            0 => None,
            ZEROED_GRAIN if self.zeroed_grain => None,
            sector => Some(u64::from(sector) * SECTOR),
        }
    }

    /// Calls `piece` with each grain piece of `offset..offset + length` (within the disk):
    /// its guest offset, length, grain number and offset within the grain.
    fn pieces<E>(
        &self,
        offset: u64,
        length: u64,
        mut piece: impl FnMut(u64, u64, u64, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let end = offset + length;
        let mut at = offset;
        while at < end {
            let index = at / self.grain;
            let within = at % self.grain;
            let len = (self.grain - within).min(end - at);
            piece(at, len, index, within)?;
            at += len;
        }
        Ok(())
    }

    /// Inflates compressed grain `index`, stored at `offset`, into the cache.
    fn inflate(&mut self, index: u64, offset: u64) -> Result<&[u8], ImageError> {
        if self
            .inflated
            .as_ref()
            .is_none_or(|(cached, _)| *cached != index)
        {
            let file_size = self.reader.len();
            let mut marker = [0u8; GRAIN_MARKER as usize];
            within(
                &self.name,
                "VMDK grain marker",
                offset,
                GRAIN_MARKER,
                file_size,
            )?;
            read(&mut *self.reader, &self.name, offset, &mut marker)?;
            let compressed = u64::from(le_u32(&marker, 8));
            // Deflate never grows data by more than a few bytes per 16 KiB block.
            if compressed == 0 || compressed > 2 * self.grain + 4096 {
                return Err(corrupt(
                    &self.name,
                    Some(offset + 8),
                    format!("grain {index} claims {compressed} compressed bytes"),
                ));
            }
            within(
                &self.name,
                "VMDK compressed grain",
                offset + GRAIN_MARKER,
                compressed,
                file_size,
            )?;
            let mut input = vec![0u8; compressed as usize];
            read(
                &mut *self.reader,
                &self.name,
                offset + GRAIN_MARKER,
                &mut input,
            )?;
            let mut out = match self.inflated.take() {
                Some((_, buf)) => buf,
                None => vec![0u8; self.grain as usize],
            };
            let want = self.grain.min(self.size - index * self.grain) as usize;
            self.inflater.init();
            let flags = inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER
                | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
            let (status, _, written) = decompress(&mut self.inflater, &input, &mut out, 0, flags);
            let complete = matches!(status, TINFLStatus::Done | TINFLStatus::HasMoreOutput);
            if !complete || written < want {
                return Err(ImageError::new(
                    &self.name,
                    ImageErrorKind::Decompress {
                        offset: offset + GRAIN_MARKER,
                        length: compressed,
                        reason: format!(
                            "grain {index} inflates to {written} of {want} bytes ({status:?})"
                        ),
                    },
                ));
            }
            self.inflated = Some((index, out));
        }
        Ok(&self.inflated.as_ref().expect("filled above").1)
    }
}

/// Refuses what the embedded descriptor says this reader cannot read: no descriptor (one
/// extent of a disk described elsewhere), a delta disk, or another kind of disk.
fn check_descriptor(
    reader: &mut dyn ReadAt,
    name: &str,
    header: &[u8; SECTOR as usize],
) -> Result<(), ImageError> {
    let offset = le_u64(header, 28);
    let sectors = le_u64(header, 36);
    if offset == 0 {
        return Err(unsupported(
            name,
            "the VMDK file is one extent of a disk described by a separate descriptor file \
             (split or snapshot disks); convert the whole disk first (`qemu-img convert -O \
             vmdk` of its descriptor)",
        ));
    }
    let length = sectors.saturating_mul(SECTOR).min(MAX_DESCRIPTOR);
    let start = offset.saturating_mul(SECTOR);
    within(name, "VMDK descriptor", start, length, reader.len())?;
    let mut text = vec![0u8; length as usize];
    read(reader, name, start, &mut text)?;
    let text = String::from_utf8_lossy(&text);
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim() {
            "parentCID" if !value.eq_ignore_ascii_case("ffffffff") => {
                return Err(unsupported(
                    name,
                    "the image is a VMDK delta disk (a snapshot), which needs its parent; \
                     consolidate the snapshots first (in VMware, or `qemu-img convert -O vmdk`)",
                ));
            }
            "createType" if value != "monolithicSparse" && value != "streamOptimized" => {
                return Err(unsupported(
                    name,
                    format!(
                        "a VMDK disk of type {value:?}; only monolithicSparse and \
                         streamOptimized disks, held in one file, are read"
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads the grain directory at sector `directory` and its grain tables: each of `grains`
/// grains' entry.
fn read_tables(
    reader: &mut dyn ReadAt,
    name: &str,
    directory: u64,
    grains: u64,
    compressed: bool,
    grain: u64,
) -> Result<Vec<u32>, ImageError> {
    let file_size = reader.len();
    let tables = grains.div_ceil(GTES_PER_GT);
    let gd_at = directory.saturating_mul(SECTOR);
    within(name, "VMDK grain directory", gd_at, tables * 4, file_size)?;
    // Bounded by MAX_GRAINS.
    let mut gd = vec![0u8; (tables * 4) as usize];
    read(reader, name, gd_at, &mut gd)?;
    let mut entries = vec![0u32; grains as usize];
    let mut table = vec![0u8; (GTES_PER_GT * 4) as usize];
    for (t, slot) in gd.chunks_exact(4).enumerate() {
        let sector = u64::from(u32::from_le_bytes(slot.try_into().expect("four bytes")));
        if sector == 0 {
            continue;
        }
        let gt_at = sector * SECTOR;
        if gt_at
            .checked_add(GTES_PER_GT * 4)
            .is_none_or(|end| end > file_size)
        {
            return Err(corrupt(
                name,
                Some(gd_at + t as u64 * 4),
                format!(
                    "grain table {t} lies at offset {gt_at:#x}, past the end of the file \
                     ({file_size} bytes)"
                ),
            ));
        }
        read(reader, name, gt_at, &mut table)?;
        let first = t as u64 * GTES_PER_GT;
        for (i, entry) in table.chunks_exact(4).enumerate() {
            let index = first + i as u64;
            if index >= grains {
                break;
            }
            let value = u32::from_le_bytes(entry.try_into().expect("four bytes"));
            // Uncompressed grains are read by the host straight from the file: they must
            // lie in it. A compressed grain's size is known only from its marker.
            let need = if compressed { GRAIN_MARKER } else { grain };
            if value > 1 && (u64::from(value) * SECTOR).saturating_add(need) > file_size {
                return Err(corrupt(
                    name,
                    Some(gt_at + i as u64 * 4),
                    format!(
                        "grain {index} lies at offset {:#x}, past the end of the file \
                         ({file_size} bytes)",
                        u64::from(value) * SECTOR
                    ),
                ));
            }
            entries[index as usize] = value;
        }
    }
    Ok(entries)
}

impl DiskImage for Vmdk {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> Format {
        Format::Vmdk
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        check_range(&self.name, offset, <[u8]>::len(buf) as u64, self.size)?;
        let mut pieces = Vec::new();
        self.pieces(offset, <[u8]>::len(buf) as u64, |at, len, index, within| {
            pieces.push((at, len, index, within));
            Ok::<(), ImageError>(())
        })?;
        for (at, len, index, within) in pieces {
            let start = (at - offset) as usize;
            let target = &mut buf[start..start + len as usize];
            match self.stored(index) {
                None => target.fill(0),
                Some(file_offset) if !self.compressed => {
                    read(&mut *self.reader, &self.name, file_offset + within, target)?;
                }
                Some(file_offset) => {
                    let grain = self.inflate(index, file_offset)?;
                    target.copy_from_slice(&grain[within as usize..(within + len) as usize]);
                }
            }
        }
        Ok(())
    }

    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError> {
        check_range(&self.name, offset, length, self.size)?;
        let mut list = ExtentList::default();
        self.pieces(offset, length, |at, len, index, _| {
            let kind = match self.stored(index) {
                Some(_) => ExtentKind::Data,
                None => ExtentKind::Zero,
            };
            list.push(at, len, kind);
            Ok::<(), ImageError>(())
        })?;
        Ok(list.into_vec())
    }

    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        check_range(&self.name, offset, length, self.size)?;
        let mut runs = Vec::new();
        self.pieces(offset, length, |at, len, index, within| {
            let stored = match self.stored(index) {
                Some(file_offset) if !self.compressed => Stored::InFile(file_offset + within),
                _ => Stored::Elsewhere,
            };
            push_run(&mut runs, at, len, stored);
            Ok::<(), ImageError>(())
        })?;
        Ok(runs)
    }

    fn describe(&self) -> String {
        let kind = if self.compressed {
            "stream-optimized"
        } else {
            "sparse"
        };
        let stored = (0..self.entries.len() as u64)
            .filter(|&i| self.stored(i).is_some())
            .count();
        format!(
            "{kind} VMDK image {}: {} bytes, {stored} of {} grains of {} KiB stored",
            self.name,
            self.size,
            self.entries.len(),
            self.grain >> 10
        )
    }
}
