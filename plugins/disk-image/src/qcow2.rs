//! qcow2 images, read only: versions 2 and 3, standard, zero and compressed clusters,
//! extended L2 entries (subclusters) and backing chains. Guest offsets map to the file
//! through two levels of tables:
//!
//! ```text
//! guest offset = (l1_index << (l2_bits + cluster_bits)) | (l2_index << cluster_bits) | in_cluster
//!
//! L1 table (l1_size u64 entries at l1_table_offset)
//!   bits  9..=55  offset of the L2 table (one cluster); 0: no table, all unallocated
//!   bit      63   refcount is exactly one (ignored when reading)
//!
//! L2 table (one cluster of u64 entries; of u64 pairs with extended L2 entries)
//!   bit      62   0: standard cluster, 1: compressed cluster
//!   bit      63   refcount is exactly one (ignored when reading)
//!   standard:   bit 0 reads as zeros (not with extended L2 entries)
//!               bits 9..=55 offset of the data cluster; 0: unallocated
//!   compressed: bits 0..x offset of the compressed bytes (x = 70 - cluster_bits)
//!               bits x..=61 number of 512-byte sectors they span, minus one
//!   extended L2 entries add a second u64 for 32 subclusters: bits 0..=31 allocated,
//!               bits 32..=63 reads as zeros
//! ```
//!
//! Unallocated ranges read from the backing image, and as zeros past its end or without one.
//! Every offset taken from the file is checked (alignment, end of file) before use, and
//! every buffer is bounded by the cluster size or the L1 limit, never by a raw header value.

mod bitmap;
mod compressed;
mod header;
pub(crate) mod writer;

pub(crate) use header::MAGIC;

use crate::chain::{self, BackingOpener, BackingRef, BackingRole, ImageFile};
use crate::error::{ImageError, ImageErrorKind};
use crate::image::{
    DiskImage, ExtentList, Run, Stored, check_range, lower_file_name, push_lower_runs, push_run,
};
use crate::{Extent, ExtentKind, Format};
use header::{Compression, Header, read_exact};

/// Bits 9..=55 of L1 and L2 entries: a host offset.
pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: the cluster is compressed.
pub(crate) const L2_COMPRESSED: u64 = 1 << 62;
/// L1 and L2 entry bit 63: the table or cluster has refcount exactly one.
pub(crate) const COPIED: u64 = 1 << 63;
/// Standard L2 entry bit 0: the cluster reads as zeros.
const L2_ZERO: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
const SUBCLUSTERS: u32 = 32;
/// Compressed lengths are counted in sectors of this size.
const SECTOR: u64 = 512;

/// Largest L1 table read: 32 MiB (4 Mi entries), QEMU's limit. With 64 KiB clusters that
/// covers 256 TiB of guest disk; it bounds what a header can make the reader allocate.
pub(crate) const MAX_L1_BYTES: u64 = 32 << 20;
/// Memory given to cached L2 tables per image, at least two tables and at most 64.
const L2_CACHE_BYTES: u64 = 1 << 20;

/// A read-only qcow2 image and, below it, its backing chain.
pub struct Qcow2 {
    name: String,
    reader: Box<dyn crate::ReadAt>,
    file_size: u64,
    header: Header,
    cluster_bits: u32,
    /// log2 of the entries per L2 table.
    l2_bits: u32,
    /// The active L1 table, as many entries as the virtual size needs.
    l1: Vec<u64>,
    /// The persistent bitmaps, read when first asked for: damage there must not keep a
    /// full backup from reading the disk.
    bitmaps: Option<bitmap::Directory>,
    l2_cache: L2Cache,
    /// The last decompressed cluster, keyed by its L2 entry.
    decompressed: Option<(u64, Vec<u8>)>,
    decompressor: compressed::Decompressor,
    backing: Option<Box<dyn DiskImage>>,
}

impl std::fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2")
            .field("name", &self.name)
            .field("header", &self.header)
            .field(
                "backing",
                &self.backing.as_ref().map(|b| b.name().to_owned()),
            )
            .finish_non_exhaustive()
    }
}

/// Where the bytes at a guest offset come from, for a run of bytes from that offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Not in this image: the backing image, or zeros.
    Unallocated,
    /// Zeros.
    Zero,
    /// The file, at this offset.
    Data(u64),
    /// The compressed cluster with this L2 entry.
    Compressed(u64),
}

impl Qcow2 {
    /// Opens a qcow2 image and its backing chain; `opener` resolves each backing file (pass
    /// [`no_backing`](crate::no_backing) when there can be none).
    pub fn open(file: ImageFile, opener: &mut BackingOpener<'_>) -> Result<Qcow2, ImageError> {
        let mut names = vec![file.name.clone()];
        Self::open_in_chain(file, opener, &mut names)
    }

    /// Opens `file`, whose name is already the last of `names`, and what lies below it.
    pub(crate) fn open_in_chain(
        mut file: ImageFile,
        opener: &mut BackingOpener<'_>,
        names: &mut Vec<String>,
    ) -> Result<Qcow2, ImageError> {
        let name = file.name;
        let header = Header::parse(&mut *file.reader, &name)?;
        let file_size = file.reader.len();
        let cluster_bits = header.cluster_bits;
        let cluster_size = header.cluster_size();
        // 8-byte entries, or 16 with extended L2 entries.
        let l2_bits = cluster_bits - if header.extended_l2 { 4 } else { 3 };
        let corrupt = |offset, reason| {
            ImageError::new(
                &name,
                ImageErrorKind::Corrupt {
                    offset: Some(offset),
                    reason,
                },
            )
        };

        // cluster_bits + l2_bits <= 39, so neither shift nor division can overflow.
        let l1_needed = header.size.div_ceil(1u64 << (cluster_bits + l2_bits));
        if l1_needed > MAX_L1_BYTES / 8 {
            return Err(corrupt(
                24,
                format!(
                    "the virtual size ({} bytes) needs an L1 table of {l1_needed} entries, more \
                     than the limit of {} entries",
                    header.size,
                    MAX_L1_BYTES / 8
                ),
            ));
        }
        if u64::from(header.l1_size) < l1_needed {
            return Err(corrupt(
                36,
                format!(
                    "the L1 table has {} entries, too few for the virtual size ({} bytes, which \
                     needs {l1_needed})",
                    header.l1_size, header.size
                ),
            ));
        }
        let mut l1 = Vec::new();
        if l1_needed > 0 {
            let offset = header.l1_table_offset;
            if offset & (cluster_size - 1) != 0 {
                return Err(ImageError::new(
                    &name,
                    ImageErrorKind::Misaligned {
                        what: "L1 table",
                        offset,
                        alignment: cluster_size,
                    },
                ));
            }
            // At most MAX_L1_BYTES, and checked to lie in the file before it is allocated.
            let length = l1_needed * 8;
            if offset.checked_add(length).is_none_or(|end| end > file_size) {
                return Err(ImageError::new(
                    &name,
                    ImageErrorKind::BeyondEnd {
                        what: "L1 table",
                        offset,
                        length,
                        file_size,
                    },
                ));
            }
            let mut bytes = vec![0u8; length as usize];
            read_exact(&mut *file.reader, &name, "L1 table", offset, &mut bytes)?;
            l1 = be_u64s(&bytes);
            check_l2_tables_unshared(&l1, offset, &name)?;
        }

        let backing = match &header.backing_file {
            None => None,
            Some(backing_name) => {
                let format = match &header.backing_format {
                    None => None,
                    Some(f) => Some(Format::from_name(f).ok_or_else(|| {
                        ImageError::new(
                            &name,
                            ImageErrorKind::Unsupported {
                                what: format!(
                                    "the backing file {backing_name:?} is a {f} image, and {f} \
                                     backing files are not supported"
                                ),
                            },
                        )
                    })?),
                };
                let reference = BackingRef {
                    name: backing_name.clone(),
                    referenced_by: name.clone(),
                    format,
                    role: BackingRole::Backing,
                };
                let backing_file = opener(&reference)?;
                Some(chain::open_in_chain(backing_file, format, opener, names)?)
            }
        };

        let l2_capacity = (L2_CACHE_BYTES >> cluster_bits).clamp(2, 64) as usize;
        Ok(Qcow2 {
            name,
            reader: file.reader,
            file_size,
            header,
            cluster_bits,
            l2_bits,
            l1,
            bitmaps: None,
            l2_cache: L2Cache::new(l2_capacity),
            decompressed: None,
            decompressor: compressed::Decompressor::default(),
            backing,
        })
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The qcow2 version, 2 or 3.
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The backing image, if any.
    pub fn backing(&self) -> Option<&dyn DiskImage> {
        self.backing.as_deref()
    }

    fn error(&self, kind: ImageErrorKind) -> ImageError {
        ImageError::new(&self.name, kind)
    }

    /// Checks that a cluster-sized structure at `offset` is aligned and starts in the file;
    /// `whole` also requires all of it to lie in the file.
    fn check_cluster(
        &self,
        what: &'static str,
        offset: u64,
        whole: bool,
    ) -> Result<(), ImageError> {
        let cluster_size = self.cluster_size();
        if offset & (cluster_size - 1) != 0 {
            return Err(self.error(ImageErrorKind::Misaligned {
                what,
                offset,
                alignment: cluster_size,
            }));
        }
        let need = if whole { cluster_size } else { 1 };
        if offset
            .checked_add(need)
            .is_none_or(|end| end > self.file_size)
        {
            return Err(self.error(ImageErrorKind::BeyondEnd {
                what,
                offset,
                length: cluster_size,
                file_size: self.file_size,
            }));
        }
        Ok(())
    }

    /// Where the bytes at guest offset `pos` (below the virtual size) come from, and for how
    /// many bytes from `pos` on that holds (at least one).
    fn locate(&mut self, pos: u64) -> Result<(Source, u64), ImageError> {
        let cluster_size = self.cluster_size();
        let in_cluster = pos & (cluster_size - 1);
        let to_cluster_end = cluster_size - in_cluster;
        let cluster = pos >> self.cluster_bits;
        let l1_index = cluster >> self.l2_bits;
        let l2_index = cluster & ((1 << self.l2_bits) - 1);

        let l1_entry = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i).copied())
            .unwrap_or(0);
        let l2_offset = l1_entry & OFFSET_MASK;
        if l2_offset == 0 {
            // The whole range of this L1 entry is unallocated. l1_index < 4 Mi and the span
            // is at most 2^39 bytes, so this cannot overflow.
            let span_end = (l1_index + 1) << (self.l2_bits + self.cluster_bits);
            return Ok((Source::Unallocated, span_end - pos));
        }
        self.check_cluster("L2 table", l2_offset, true)?;
        let (entry, bitmap) = self.l2_entry(l2_offset, l2_index)?;

        if entry & L2_COMPRESSED != 0 {
            return Ok((Source::Compressed(entry), to_cluster_end));
        }
        let host = entry & OFFSET_MASK;
        if !self.header.extended_l2 {
            if entry & L2_ZERO != 0 {
                return Ok((Source::Zero, to_cluster_end));
            }
            if host == 0 {
                return Ok((Source::Unallocated, to_cluster_end));
            }
            self.check_cluster("data cluster", host, false)?;
            return Ok((Source::Data(host + in_cluster), to_cluster_end));
        }

        // Extended L2 entries: one status per subcluster, runs of equal status.
        let allocated = bitmap as u32;
        let zero = (bitmap >> 32) as u32;
        if allocated & zero != 0 {
            let entry_offset = l2_offset + l2_index * 16;
            return Err(self.error(ImageErrorKind::Corrupt {
                offset: Some(entry_offset + 8),
                reason: format!(
                    "subcluster bitmap {bitmap:#018x} marks subclusters both allocated and zero"
                ),
            }));
        }
        let sub_bits = self.cluster_bits - SUBCLUSTERS.trailing_zeros();
        let status = |i: u32| {
            if allocated & (1 << i) != 0 {
                Source::Data(0)
            } else if zero & (1 << i) != 0 {
                Source::Zero
            } else {
                Source::Unallocated
            }
        };
        let first = (in_cluster >> sub_bits) as u32;
        let kind = status(first);
        let last = (first..SUBCLUSTERS)
            .take_while(|&i| status(i) == kind)
            .last()
            .unwrap_or(first);
        let run = (u64::from(last + 1) << sub_bits) - in_cluster;
        if kind == Source::Data(0) {
            if host == 0 {
                return Err(self.error(ImageErrorKind::Corrupt {
                    offset: Some(l2_offset + l2_index * 16),
                    reason: "allocated subclusters have no host cluster".into(),
                }));
            }
            self.check_cluster("data cluster", host, false)?;
            return Ok((Source::Data(host + in_cluster), run));
        }
        Ok((kind, run))
    }

    /// Entry `index` of the L2 table at `offset` and, with extended L2 entries, its
    /// subcluster bitmap (else 0).
    fn l2_entry(&mut self, offset: u64, index: u64) -> Result<(u64, u64), ImageError> {
        let table = match self.l2_cache.find(offset) {
            Some(table) => table,
            None => {
                let mut bytes = vec![0u8; self.cluster_size() as usize];
                read_exact(
                    &mut *self.reader,
                    &self.name,
                    "L2 table",
                    offset,
                    &mut bytes,
                )?;
                self.l2_cache.insert(offset, be_u64s(&bytes))
            }
        };
        let entries = &self.l2_cache.tables[table].entries;
        let at = |i: u64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| entries.get(i).copied())
        };
        let found = if self.header.extended_l2 {
            at(index * 2).zip(at(index * 2 + 1))
        } else {
            at(index).map(|e| (e, 0))
        };
        // index < entries per table by construction; a miss would be a bug, not bad input.
        found.ok_or_else(|| {
            self.error(ImageErrorKind::Corrupt {
                offset: Some(offset),
                reason: format!("L2 index {index} outside its table"),
            })
        })
    }

    /// The decompressed cluster of the compressed L2 entry `entry`.
    fn decompress(&mut self, entry: u64) -> Result<&[u8], ImageError> {
        if self.decompressed.as_ref().is_none_or(|(e, _)| *e != entry) {
            let offset_bits = 70 - self.cluster_bits;
            let offset = entry & ((1 << offset_bits) - 1);
            let sectors = ((entry >> offset_bits) & ((1 << (self.cluster_bits - 8)) - 1)) + 1;
            let length = sectors * SECTOR - (offset & (SECTOR - 1));
            if offset >= self.file_size {
                return Err(self.error(ImageErrorKind::BeyondEnd {
                    what: "compressed cluster",
                    offset,
                    length,
                    file_size: self.file_size,
                }));
            }
            // The last compressed cluster may end mid-sector at the end of the file.
            let available = length.min(self.file_size - offset);
            let mut input = vec![0u8; available as usize];
            read_exact(
                &mut *self.reader,
                &self.name,
                "compressed cluster",
                offset,
                &mut input,
            )?;
            // Reuse the previous cluster's buffer.
            let mut out = self.decompressed.take().map(|(_, d)| d).unwrap_or_default();
            out.resize(self.cluster_size() as usize, 0);
            let compression = self.header.compression;
            let decoded = self
                .decompressor
                .decompress_cluster(compression, &input, &mut out);
            decoded.map_err(|reason| {
                self.error(ImageErrorKind::Decompress {
                    offset,
                    length: available,
                    reason,
                })
            })?;
            self.decompressed = Some((entry, out));
        }
        Ok(self
            .decompressed
            .as_ref()
            .map(|(_, d)| d.as_slice())
            .unwrap_or_default())
    }

    /// Reads the data cluster bytes at `host` into `buf`. QEMU would read bytes past the end
    /// of the file as zeros, but it never writes a data cluster short, so a file that ends
    /// inside one has been cut and its missing bytes are reported, not invented.
    fn read_file(&mut self, host: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        self.check_data(host, buf.len() as u64)?;
        read_exact(&mut *self.reader, &self.name, "data cluster", host, buf)
    }

    /// Checks that `length` bytes of data clusters at `host` lie in the file.
    fn check_data(&self, host: u64, length: u64) -> Result<(), ImageError> {
        if host
            .checked_add(length)
            .is_none_or(|end| end > self.file_size)
        {
            // A run may span clusters: name the one the file ends in.
            let cluster = host.max(self.file_size) & !(self.cluster_size() - 1);
            return Err(self.error(ImageErrorKind::BeyondEnd {
                what: "data cluster",
                offset: cluster,
                length: self.cluster_size(),
                file_size: self.file_size,
            }));
        }
        Ok(())
    }

    /// Reads unallocated guest bytes: the backing image's, zeros past its end.
    fn read_backing(&mut self, pos: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let Some(backing) = &mut self.backing else {
            buf.fill(0);
            return Ok(());
        };
        let covered = backing
            .virtual_size()
            .saturating_sub(pos)
            .min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(covered);
        if !head.is_empty() {
            backing.read_at(pos, head)?;
        }
        tail.fill(0);
        Ok(())
    }
}

impl DiskImage for Qcow2 {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        check_range(&self.name, offset, buf.len() as u64, self.header.size)?;
        let mut done = 0usize;
        // Consecutive data runs contiguous in the file are read in one go.
        let mut pending: Option<(u64, usize, usize)> = None; // (host, buf start, length)
        while done < buf.len() {
            let pos = offset + done as u64;
            let (source, run) = self.locate(pos)?;
            let n = run.min((buf.len() - done) as u64) as usize;
            if let Source::Data(host) = source {
                match &mut pending {
                    // A pending run always ends at `done`; extend it if the file agrees.
                    Some((start, _, len)) if start.checked_add(*len as u64) == Some(host) => {
                        *len += n;
                    }
                    _ => {
                        if let Some((host, at, len)) = pending.take() {
                            self.read_file(host, &mut buf[at..at + len])?;
                        }
                        pending = Some((host, done, n));
                    }
                }
                done += n;
                continue;
            }
            if let Some((host, at, len)) = pending.take() {
                self.read_file(host, &mut buf[at..at + len])?;
            }
            let chunk = &mut buf[done..done + n];
            match source {
                Source::Zero => chunk.fill(0),
                Source::Unallocated => self.read_backing(pos, chunk)?,
                Source::Compressed(entry) => {
                    let in_cluster = (pos & (self.cluster_size() - 1)) as usize;
                    let cluster = self.decompress(entry)?;
                    match cluster.get(in_cluster..in_cluster + n) {
                        Some(bytes) => chunk.copy_from_slice(bytes),
                        None => chunk.fill(0),
                    }
                }
                Source::Data(_) => {}
            }
            done += n;
        }
        if let Some((host, at, len)) = pending {
            self.read_file(host, &mut buf[at..at + len])?;
        }
        Ok(())
    }

    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError> {
        check_range(&self.name, offset, length, self.header.size)?;
        let end = offset + length;
        let mut list = ExtentList::default();
        let mut pos = offset;
        while pos < end {
            let (source, run) = self.locate(pos)?;
            let n = run.min(end - pos);
            match source {
                Source::Data(_) | Source::Compressed(_) => list.push(pos, n, ExtentKind::Data),
                Source::Zero => list.push(pos, n, ExtentKind::Zero),
                Source::Unallocated => match &mut self.backing {
                    Some(backing) => {
                        let covered = backing.virtual_size().saturating_sub(pos).min(n);
                        if covered > 0 {
                            list.extend(backing.map(pos, covered)?);
                        }
                        list.push(pos + covered, n - covered, ExtentKind::Zero);
                    }
                    None => list.push(pos, n, ExtentKind::Zero),
                },
            }
            pos += n;
        }
        Ok(list.into_vec())
    }

    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        check_range(&self.name, offset, length, self.header.size)?;
        let end = offset + length;
        let mut runs: Vec<Run> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let (source, run) = self.locate(pos)?;
            let n = run.min(end - pos);
            match source {
                Source::Data(host) => {
                    self.check_data(host, n)?;
                    push_run(&mut runs, pos, n, Stored::InFile(host));
                }
                // The backing chain's files are numbered from 0 on (see `file_name`).
                Source::Unallocated if let Some(backing) = &mut self.backing => {
                    let covered = backing.virtual_size().saturating_sub(pos).min(n);
                    if covered > 0 {
                        push_lower_runs(&mut runs, &mut **backing, 0, pos, covered)?;
                    }
                    push_run(&mut runs, pos + covered, n - covered, Stored::Elsewhere);
                }
                _ => push_run(&mut runs, pos, n, Stored::Elsewhere),
            }
            pos += n;
        }
        Ok(runs)
    }

    /// What the image's bitmap named `bitmap` records: QEMU's persistent dirty bitmaps
    /// (`qemu-img bitmap`, libvirt checkpoints). Refused unless the bitmap is sure to show
    /// every write: present, enabled, not in use, not invalidated.
    fn dirty_ranges(
        &mut self,
        bitmap: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<(u64, u64)>, ImageError> {
        check_range(&self.name, offset, length, self.header.size)?;
        if self.bitmaps.is_none() {
            let cluster_size = self.cluster_size();
            let directory = bitmap::read_directory(
                &mut *self.reader,
                &self.name,
                self.header.bitmaps,
                cluster_size,
                self.header.size,
            )?;
            self.bitmaps = Some(directory);
        }
        let directory = self.bitmaps.as_ref().expect("read just above");
        let found = bitmap::find(directory, &self.name, bitmap)?.clone();
        let cluster_size = self.cluster_size();
        bitmap::dirty_ranges(
            &mut *self.reader,
            &self.name,
            &found,
            cluster_size,
            self.header.size,
            offset,
            length,
        )
    }

    /// The backing chain's files: the backing image's own file is 0, and the files it
    /// numbers follow.
    fn file_name(&self, file: u32) -> Option<&str> {
        lower_file_name(self.backing.as_deref()?, 0, file)
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "qcow2 v{} image {}: {} bytes, {} KiB clusters",
            self.header.version,
            self.name,
            self.header.size,
            self.cluster_size() / 1024
        );
        if self.header.extended_l2 {
            s.push_str(", extended L2 entries");
        }
        if self.header.compression == Compression::Zstd {
            s.push_str(", zstd compression");
        }
        if let Some(backing) = &self.backing {
            s.push_str("; backed by ");
            s.push_str(&backing.describe());
        }
        s
    }
}

/// Refuses an L1 table (at `l1_offset`) whose entries share an L2 table. No valid image has
/// one, and a crafted one could map a small file to an unbounded number of extents.
fn check_l2_tables_unshared(l1: &[u64], l1_offset: u64, name: &str) -> Result<(), ImageError> {
    let mut tables: Vec<(u64, usize)> = l1
        .iter()
        .enumerate()
        .map(|(i, e)| (e & OFFSET_MASK, i))
        .filter(|&(offset, _)| offset != 0)
        .collect();
    tables.sort_unstable();
    match tables.windows(2).find(|w| w[0].0 == w[1].0) {
        None => Ok(()),
        Some(w) => Err(ImageError::new(
            name,
            ImageErrorKind::Corrupt {
                offset: Some(l1_offset + w[1].1 as u64 * 8),
                reason: format!(
                    "L1 entries {} and {} both point to the L2 table at offset {:#x}",
                    w[0].1, w[1].1, w[0].0
                ),
            },
        )),
    }
}

/// Big-endian u64s of `bytes` (whose length is a multiple of 8).
fn be_u64s(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_be_bytes(b)
        })
        .collect()
}

/// A few recently used L2 tables, evicting the least recently used.
#[derive(Debug)]
struct L2Cache {
    tables: Vec<CachedTable>,
    capacity: usize,
    clock: u64,
}

#[derive(Debug)]
struct CachedTable {
    offset: u64,
    entries: Vec<u64>,
    used: u64,
}

impl L2Cache {
    fn new(capacity: usize) -> Self {
        L2Cache {
            tables: Vec::with_capacity(capacity),
            capacity,
            clock: 0,
        }
    }

    /// The index of the cached table at `offset`, marking it used.
    fn find(&mut self, offset: u64) -> Option<usize> {
        self.clock += 1;
        let i = self.tables.iter().position(|t| t.offset == offset)?;
        self.tables[i].used = self.clock;
        Some(i)
    }

    /// Caches a table, returning its index.
    fn insert(&mut self, offset: u64, entries: Vec<u64>) -> usize {
        let table = CachedTable {
            offset,
            entries,
            used: self.clock,
        };
        if self.tables.len() < self.capacity {
            self.tables.push(table);
            return self.tables.len() - 1;
        }
        let oldest = self
            .tables
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| t.used)
            .map_or(0, |(i, _)| i);
        self.tables[oldest] = table;
        oldest
    }
}
