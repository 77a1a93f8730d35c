//! ESXi's snapshot extents, the delta files of a `vmfsSparse` or `seSparse` disk: a grain
//! directory whose entries point to grain tables of 4,096 entries, each saying where a
//! grain of the delta lies, that it reads as zeros, or that it was never written (the
//! parent's bytes). Tables are read as they are needed and a few are kept: seSparse
//! grains are 4 KiB, so a terabyte disk has a quarter of a billion of them.
//!
//! - `VMFSSPARSE` extents are `COWD` files (ESX's redo logs, and ESXi's snapshots on VMFS
//!   5 of disks below 2 TB): a header of 32-bit numbers (the disk's sectors, the grain
//!   size in sectors, the directory's sector and length), 32-bit directory and table
//!   entries giving sectors, 0 for none.
//! - `SESPARSE` extents (ESXi 6.5 and later): a constant header of 64-bit numbers (magic
//!   `0xcafebabe`, version 2.1, grains of 8 sectors, tables of 64 sectors, and the sectors
//!   of each region: the volatile header, the journal, the directory, the tables, the
//!   grains), and a volatile header (magic `0xcafecafe`) saying whether the journal must be
//!   replayed, which is refused. A directory entry `0x1000_0000_XXXX_XXXX` names table
//!   `XXXX_XXXX`; a table entry's top four bits say: 0 never written, 1 unmapped and 2
//!   zero (both read as zeros), 3 a grain, whose number is spread over the other bits
//!   (its low 12 bits in bits 48 to 59, the rest in bits 0 to 47).
//!
//! Every number is checked before use, as QEMU checks it: a header not of the layout
//! above is refused, the directory is bounded by [`MAX_TABLES`], and a table or grain past
//! the end of the file is an error naming the entry that points there.

use crate::ReadAt;
use crate::block_map::read_exact as read;
use crate::error::ImageError;
use crate::fields::{corrupt, le_u32, le_u64, unsupported, within};

use super::SECTOR;
use super::sparse::Grain;

/// The magic of a `COWD` file, at offset 0.
pub(crate) const COWD_MAGIC: &[u8; 4] = b"COWD";
/// The first bytes of a seSparse file: its magic, a little-endian `0xcafebabe`.
pub(crate) const SESPARSE_MAGIC: [u8; 8] = 0xcafe_babe_u64.to_le_bytes();
const SESPARSE_VOLATILE_MAGIC: u64 = 0xcafe_cafe;
const SESPARSE_VERSION: u64 = 0x0000_0002_0000_0001;
/// seSparse's only grain size and table size, in sectors.
const SESPARSE_GRAIN: u64 = 8;
const SESPARSE_TABLE: u64 = 64;
/// Entries per grain table, in both formats.
const TABLE_ENTRIES: u64 = 4096;
/// Most grain tables a disk's directory may name: a directory of 8 MiB, a seSparse disk
/// of 16 TiB (64 TiB is seSparse's limit; such disks are refused) or a COWD disk of 2 TiB
/// in grains of 512 bytes.
pub const MAX_TABLES: u64 = 1 << 20;
/// Grain tables kept in memory, each 32 KiB or less.
const CACHED_TABLES: usize = 16;
/// A table entry of a grain that reads as zeros (no grain lies at byte 1 of a file).
const ZERO: u64 = 1;

/// Which of the two formats an extent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EsxFormat {
    /// A `VMFSSPARSE` extent, a `COWD` file.
    VmfsSparse,
    /// A `SESPARSE` extent.
    SeSparse,
}

/// An ESXi snapshot extent over a [`ReadAt`] source.
pub(super) struct EsxSparse {
    reader: Box<dyn ReadAt>,
    name: String,
    format: EsxFormat,
    /// Capacity and grain size in bytes.
    capacity: u64,
    grain: u64,
    /// Each table's file offset, 0 for a table never allocated.
    tables: Vec<u64>,
    /// Where seSparse grains start (unused for `COWD`).
    grains_at: u64,
    /// Tables read last: their number and entries (file offsets, 0 or [`ZERO`]).
    cache: Vec<(u64, Vec<u64>)>,
}

impl EsxSparse {
    /// Opens the `format` extent `name` read by `reader`.
    pub(super) fn open(
        reader: Box<dyn ReadAt>,
        name: String,
        format: EsxFormat,
    ) -> Result<EsxSparse, ImageError> {
        match format {
            EsxFormat::VmfsSparse => Self::open_cowd(reader, name),
            EsxFormat::SeSparse => Self::open_sesparse(reader, name),
        }
    }

    fn open_cowd(mut reader: Box<dyn ReadAt>, name: String) -> Result<EsxSparse, ImageError> {
        let file_size = reader.len();
        within(&name, "COWD header", 0, SECTOR, file_size)?;
        let mut header = [0u8; SECTOR as usize];
        read(&mut *reader, &name, 0, &mut header)?;
        if &header[..4] != COWD_MAGIC {
            return Err(corrupt(
                &name,
                Some(0),
                "no `COWD` magic: not a VMFSSPARSE extent",
            ));
        }
        let version = le_u32(&header, 4);
        if version != 1 {
            return Err(unsupported(
                &name,
                format!("COWD version {version}; version 1 is read"),
            ));
        }
        let sectors = u64::from(le_u32(&header, 12));
        let grain_sectors = u64::from(le_u32(&header, 16));
        let directory = u64::from(le_u32(&header, 20)) * SECTOR;
        let entries = u64::from(le_u32(&header, 24));
        if grain_sectors == 0 || grain_sectors > 1 << 21 {
            return Err(corrupt(
                &name,
                Some(16),
                format!("grain size of {grain_sectors} sectors is not from 1 to 2097152"),
            ));
        }
        let tables = directory_length(&name, sectors, grain_sectors, entries, 24)?;
        within(
            &name,
            "COWD grain directory",
            directory,
            tables * 4,
            file_size,
        )?;
        // Bounded by MAX_TABLES.
        let mut raw = vec![0u8; (tables * 4) as usize];
        read(&mut *reader, &name, directory, &mut raw)?;
        let table_bytes = TABLE_ENTRIES * 4;
        let mut offsets = Vec::with_capacity(tables as usize);
        for (t, entry) in raw.chunks_exact(4).enumerate() {
            let at = u64::from(le_u32(entry, 0)) * SECTOR;
            if at != 0 && at.saturating_add(table_bytes) > file_size {
                return Err(past_end(
                    &name,
                    "grain table",
                    t as u64,
                    at,
                    directory + t as u64 * 4,
                    file_size,
                ));
            }
            offsets.push(at);
        }
        Ok(EsxSparse {
            reader,
            name,
            format: EsxFormat::VmfsSparse,
            capacity: sectors * SECTOR,
            grain: grain_sectors * SECTOR,
            tables: offsets,
            grains_at: 0,
            cache: Vec::new(),
        })
    }

    fn open_sesparse(mut reader: Box<dyn ReadAt>, name: String) -> Result<EsxSparse, ImageError> {
        let file_size = reader.len();
        within(&name, "seSparse header", 0, SECTOR, file_size)?;
        let mut header = [0u8; SECTOR as usize];
        read(&mut *reader, &name, 0, &mut header)?;
        let field = |i: usize| le_u64(&header, i * 8);
        if header[..8] != SESPARSE_MAGIC {
            return Err(corrupt(
                &name,
                Some(0),
                "no seSparse magic (0xcafebabe): not a SESPARSE extent",
            ));
        }
        let checks = [
            (1, SESPARSE_VERSION, "version"),
            (3, SESPARSE_GRAIN, "grain size"),
            (4, SESPARSE_TABLE, "grain table size"),
            (5, 0, "flags"),
            (6, 0, "reserved field"),
            (7, 0, "reserved field"),
            (8, 0, "reserved field"),
            (9, 0, "reserved field"),
        ];
        for (i, want, what) in checks {
            if field(i) != want {
                return Err(unsupported(
                    &name,
                    format!(
                        "seSparse {what} {:#x} at offset {:#x}, where {want:#x} is read",
                        field(i),
                        i * 8
                    ),
                ));
            }
        }
        if header[26 * 8..].iter().any(|&b| b != 0) {
            return Err(unsupported(&name, "seSparse header padding is not zero"));
        }
        let sectors = field(2);
        let at = |i: usize| field(i).saturating_mul(SECTOR);
        let volatile = at(10);
        within(
            &name,
            "seSparse volatile header",
            volatile,
            SECTOR,
            file_size,
        )?;
        let mut state = [0u8; SECTOR as usize];
        read(&mut *reader, &name, volatile, &mut state)?;
        if le_u64(&state, 0) != SESPARSE_VOLATILE_MAGIC {
            return Err(corrupt(
                &name,
                Some(volatile),
                "no seSparse volatile header magic (0xcafecafe)",
            ));
        }
        if le_u64(&state, 24) != 0 {
            return Err(unsupported(
                &name,
                "the seSparse journal must be replayed (the snapshot was not closed cleanly); \
                 power the virtual machine on and off in ESXi, or consolidate the snapshots",
            ));
        }
        let directory = at(16);
        let entries = field(17).saturating_mul(SECTOR) / 8;
        let tables = directory_length(&name, sectors, SESPARSE_GRAIN, entries, 17 * 8)?;
        within(
            &name,
            "seSparse grain directory",
            directory,
            tables * 8,
            file_size,
        )?;
        // Bounded by MAX_TABLES.
        let mut raw = vec![0u8; (tables * 8) as usize];
        read(&mut *reader, &name, directory, &mut raw)?;
        let tables_at = at(18);
        let table_bytes = TABLE_ENTRIES * 8;
        let mut offsets = Vec::with_capacity(tables as usize);
        for (t, entry) in raw.chunks_exact(8).enumerate() {
            let value = le_u64(entry, 0);
            let entry_at = directory + t as u64 * 8;
            if value == 0 {
                offsets.push(0);
                continue;
            }
            if value & 0xffff_ffff_0000_0000 != 0x1000_0000_0000_0000 {
                return Err(corrupt(
                    &name,
                    Some(entry_at),
                    format!("grain directory entry {t} is {value:#018x}, not a table's"),
                ));
            }
            // At most 2^32 tables of 32 KiB past a u64 offset: saturating is exact enough
            // to tell that it lies past the end.
            let table_at = (value & 0xffff_ffff)
                .saturating_mul(table_bytes)
                .saturating_add(tables_at);
            if table_at.saturating_add(table_bytes) > file_size {
                return Err(past_end(
                    &name,
                    "grain table",
                    t as u64,
                    table_at,
                    entry_at,
                    file_size,
                ));
            }
            offsets.push(table_at);
        }
        Ok(EsxSparse {
            reader,
            name,
            format: EsxFormat::SeSparse,
            capacity: sectors * SECTOR,
            grain: SESPARSE_GRAIN * SECTOR,
            tables: offsets,
            grains_at: at(24),
            cache: Vec::new(),
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

    /// Its format.
    pub(super) fn format(&self) -> EsxFormat {
        self.format
    }

    /// How many grain tables are allocated.
    pub(super) fn allocated_tables(&self) -> usize {
        self.tables.iter().filter(|&&at| at != 0).count()
    }

    /// Where the byte at `at` (below the capacity) is, and how many bytes from `at` on lie
    /// in its grain; a stored grain's offset is that of the byte at `at`. A grain whose
    /// table was never allocated is unallocated whole.
    pub(super) fn locate(&mut self, at: u64) -> Result<(Grain, u64), ImageError> {
        let index = at / self.grain;
        let within = at % self.grain;
        let len = (self.grain - within).min(self.capacity - at);
        let table = index / TABLE_ENTRIES;
        let entry = self
            .table(table)?
            .map_or(0, |t| t[(index % TABLE_ENTRIES) as usize]);
        let grain = match entry {
            0 => Grain::Unallocated,
            ZERO => Grain::Zero,
            offset => Grain::Stored(offset + within),
        };
        Ok((grain, len))
    }

    /// Fills `buf` with the bytes stored from file offset `at` on, within one grain.
    pub(super) fn read(&mut self, at: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        read(&mut *self.reader, &self.name, at, buf)
    }

    /// The entries of table `table`, read if not kept; `None` if it was never allocated.
    fn table(&mut self, table: u64) -> Result<Option<&[u64]>, ImageError> {
        let at = self.tables[table as usize];
        if at == 0 {
            return Ok(None);
        }
        if let Some(i) = self.cache.iter().position(|(t, _)| *t == table) {
            return Ok(Some(&self.cache[i].1));
        }
        let entries = self.read_table(table, at)?;
        if self.cache.len() == CACHED_TABLES {
            self.cache.remove(0);
        }
        self.cache.push((table, entries));
        Ok(Some(&self.cache.last().expect("just pushed").1))
    }

    /// Reads and checks table `table` at file offset `at`: each entry a grain's file
    /// offset (checked to lie in the file), 0 or [`ZERO`].
    fn read_table(&mut self, table: u64, at: u64) -> Result<Vec<u64>, ImageError> {
        let file_size = self.reader.len();
        let width = match self.format {
            EsxFormat::VmfsSparse => 4,
            EsxFormat::SeSparse => 8,
        };
        let mut raw = vec![0u8; (TABLE_ENTRIES * width) as usize];
        read(&mut *self.reader, &self.name, at, &mut raw)?;
        let mut entries = Vec::with_capacity(TABLE_ENTRIES as usize);
        for (i, bytes) in raw.chunks_exact(width as usize).enumerate() {
            let entry_at = at + i as u64 * width;
            let offset = match self.format {
                EsxFormat::VmfsSparse => u64::from(le_u32(bytes, 0)) * SECTOR,
                EsxFormat::SeSparse => {
                    let value = le_u64(bytes, 0);
                    match value >> 60 {
                        0 if value == 0 => 0,
                        1 | 2 => ZERO,
                        3 => {
                            let number = ((value & 0x0fff_0000_0000_0000) >> 48)
                                | ((value & 0x0000_ffff_ffff_ffff) << 12);
                            number
                                .checked_mul(self.grain)
                                .and_then(|o| o.checked_add(self.grains_at))
                                .unwrap_or(u64::MAX)
                        }
                        _ => {
                            return Err(corrupt(
                                &self.name,
                                Some(entry_at),
                                format!(
                                    "grain table {table} entry {i} is {value:#018x}, of no \
                                     known kind"
                                ),
                            ));
                        }
                    }
                }
            };
            if offset > ZERO && offset.saturating_add(self.grain) > file_size {
                let grain = table * TABLE_ENTRIES + i as u64;
                return Err(past_end(
                    &self.name, "grain", grain, offset, entry_at, file_size,
                ));
            }
            entries.push(offset);
        }
        Ok(entries)
    }
}

/// The number of tables a disk of `sectors` in grains of `grain_sectors` needs, checked
/// against the `entries` its directory has (the field at `field`) and [`MAX_TABLES`].
fn directory_length(
    name: &str,
    sectors: u64,
    grain_sectors: u64,
    entries: u64,
    field: u64,
) -> Result<u64, ImageError> {
    let tables = sectors.div_ceil(grain_sectors).div_ceil(TABLE_ENTRIES);
    if tables > MAX_TABLES || sectors > u64::MAX / SECTOR {
        return Err(unsupported(
            name,
            format!(
                "a disk of {sectors} sectors in grains of {grain_sectors} needs {tables} grain \
                 tables, more than the {MAX_TABLES} read"
            ),
        ));
    }
    if entries < tables {
        return Err(corrupt(
            name,
            Some(field),
            format!(
                "the grain directory has {entries} entries, where a disk of {sectors} sectors \
                 in grains of {grain_sectors} needs {tables}"
            ),
        ));
    }
    Ok(tables)
}

/// The error for `what` number `number`, which entry `entry_at` places at `at`, past the
/// end of a file of `file_size` bytes.
fn past_end(
    name: &str,
    what: &str,
    number: u64,
    at: u64,
    entry_at: u64,
    file_size: u64,
) -> ImageError {
    corrupt(
        name,
        Some(entry_at),
        format!(
            "{what} {number} lies at offset {at:#x}, past the end of the file ({file_size} \
             bytes); the extent is truncated or corrupt"
        ),
    )
}
