//! A hosted sparse extent: the grain-allocated file of a `monolithicSparse` or
//! `streamOptimized` disk, or one `SPARSE` extent of a disk a descriptor file lists.
//!
//! The file starts with a 512-byte header (magic `KDMV`, little-endian numbers, offsets in
//! 512-byte sectors): the extent's capacity, the grain size (the unit of allocation, 64 KiB
//! by default), where an embedded text descriptor lies, and the grain directory. Each
//! directory entry points to a grain table of 512 entries, each the sector where a grain
//! lies, 0 for a grain never written (zeros, or the parent's bytes in a delta disk), or 1
//! for a grain written as zeros when the header allows it. In a stream-optimized extent
//! every grain is deflate-compressed (zlib) behind a 12-byte marker (its disk sector and
//! compressed size), and the header may say that the directory is found through a copy
//! of the header at the end of the file.

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

use crate::ReadAt;
use crate::block_map::read_exact as read;
use crate::error::{ImageError, ImageErrorKind};
use crate::fields::{corrupt, le_u16, le_u32, le_u64, unsupported, within};

use super::SECTOR;

/// The header's magic, `KDMV`, at offset 0.
pub(crate) const MAGIC: &[u8; 4] = b"KDMV";
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

/// Where a grain's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grain {
    /// Never written: zeros, or the parent's bytes in a delta disk.
    Unallocated,
    /// Written as zeros.
    Zero,
    /// Verbatim in the file, from this offset.
    Stored(u64),
    /// Compressed behind a marker at this file offset.
    Compressed(u64),
}

/// A sparse extent over a [`ReadAt`] source.
pub(super) struct SparseExtent {
    reader: Box<dyn ReadAt>,
    name: String,
    /// Capacity in bytes.
    capacity: u64,
    /// Grain size in bytes.
    grain: u64,
    /// Each grain's table entry: the sector it lies at, or 0 or [`ZEROED_GRAIN`].
    entries: Vec<u32>,
    zeroed_grain: bool,
    compressed: bool,
    /// The embedded descriptor's `(offset, length)` in bytes, `None` when there is none.
    descriptor: Option<(u64, u64)>,
    /// The grain inflated last, and its number.
    inflated: Option<(u64, Vec<u8>)>,
    inflater: Box<DecompressorOxide>,
}

impl SparseExtent {
    /// Opens the sparse extent `name` read by `reader`, refusing one of more than
    /// `max_grains` grains (the caller's share of [`super::MAX_GRAINS`]).
    pub(super) fn open(
        mut reader: Box<dyn ReadAt>,
        name: String,
        max_grains: u64,
    ) -> Result<SparseExtent, ImageError> {
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
        let descriptor = match (le_u64(&header, 28), le_u64(&header, 36)) {
            (0, _) => None,
            (offset, sectors) => Some((
                offset.saturating_mul(SECTOR),
                sectors.saturating_mul(SECTOR),
            )),
        };
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
        if grains > max_grains || capacity > u64::MAX / SECTOR {
            return Err(corrupt(
                &name,
                Some(at + 12),
                format!(
                    "an extent of {capacity} sectors in grains of {grain_sectors} sectors has \
                     more than the {max_grains} grains left to read"
                ),
            ));
        }
        let entries = read_tables(&mut *reader, &name, directory, grains, compressed, grain)?;
        Ok(SparseExtent {
            reader,
            name,
            capacity: capacity * SECTOR,
            grain,
            entries,
            zeroed_grain: flags & FLAG_ZEROED_GRAIN != 0,
            compressed,
            descriptor,
            inflated: None,
            inflater: Box::default(),
        })
    }

    /// The extent file's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Capacity in bytes.
    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether grains are compressed (stream-optimized).
    pub(super) fn compressed(&self) -> bool {
        self.compressed
    }

    /// How many grains there are.
    pub(super) fn grains(&self) -> usize {
        self.entries.len()
    }

    /// How many grains are stored in the file.
    pub(super) fn stored_grains(&self) -> usize {
        (0..self.entries.len() as u64)
            .filter(|&i| matches!(self.grain(i), Grain::Stored(_) | Grain::Compressed(_)))
            .count()
    }

    /// The embedded descriptor's text and its file offset, `None` when the header gives
    /// none (the extent of a disk described elsewhere).
    pub(super) fn embedded_descriptor(
        &mut self,
        max: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, ImageError> {
        let Some((start, length)) = self.descriptor else {
            return Ok(None);
        };
        let length = length.min(max);
        within(
            &self.name,
            "VMDK descriptor",
            start,
            length,
            self.reader.len(),
        )?;
        let mut text = vec![0u8; length as usize];
        read(&mut *self.reader, &self.name, start, &mut text)?;
        Ok(Some((text, start)))
    }

    /// Where grain `index` is.
    fn grain(&self, index: u64) -> Grain {
        match self.entries[index as usize] {
            0 => Grain::Unallocated,
            ZEROED_GRAIN if self.zeroed_grain => Grain::Zero,
            sector if self.compressed => Grain::Compressed(u64::from(sector) * SECTOR),
            sector => Grain::Stored(u64::from(sector) * SECTOR),
        }
    }

    /// Where the byte at `at` (below the capacity) is, and how many bytes from `at` on lie
    /// in its grain. A stored grain's offset is that of the byte at `at`.
    pub(super) fn locate(&self, at: u64) -> (Grain, u64) {
        let index = at / self.grain;
        let within = at % self.grain;
        let len = (self.grain - within).min(self.capacity - at);
        let grain = match self.grain(index) {
            Grain::Stored(offset) => Grain::Stored(offset + within),
            other => other,
        };
        (grain, len)
    }

    /// Fills `buf` with the bytes at `at`, which lie in one grain that is stored or
    /// compressed.
    pub(super) fn read(&mut self, at: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let index = at / self.grain;
        let within = at % self.grain;
        match self.grain(index) {
            Grain::Stored(offset) => read(&mut *self.reader, &self.name, offset + within, buf),
            Grain::Compressed(offset) => {
                let grain = self.inflate(index, offset)?;
                let start = within as usize;
                buf.copy_from_slice(&grain[start..start + <[u8]>::len(buf)]);
                Ok(())
            }
            Grain::Unallocated | Grain::Zero => {
                buf.fill(0);
                Ok(())
            }
        }
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
            let want = self.grain.min(self.capacity - index * self.grain) as usize;
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
