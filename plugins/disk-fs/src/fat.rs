//! FAT12, FAT16 and FAT32 volumes, read by this module directly: the format is small, and
//! reading it here keeps every cluster number checked and every chain bounded (a chain that
//! loops, or a directory that contains its own ancestor, is an error rather than an endless
//! walk).
//!
//! Layout, in sectors: `RESERVED (boot sector first) || FAT × NUM_FATS || ROOT DIR (FAT12/16
//! only) || DATA (clusters 2, 3, ...)`. The boot sector's BPB (little-endian):
//!
//! ```text
//! 0x00 JUMP(3: EB xx 90 or E9 xx xx) | 0x0B BYTES_PER_SECTOR(u16) | 0x0D SECTORS_PER_CLUSTER(u8)
//! 0x0E RESERVED_SECTORS(u16) | 0x10 NUM_FATS(u8) | 0x11 ROOT_ENTRIES(u16) | 0x13 TOTAL16(u16)
//! 0x16 FAT_SECTORS16(u16) | 0x20 TOTAL32(u32) | 0x24 FAT_SECTORS32(u32, FAT32)
//! 0x2C ROOT_CLUSTER(u32, FAT32) | 0x1FE 55 AA
//! ```
//!
//! The FAT type follows from the cluster count alone (fewer than 4085: FAT12; fewer than
//! 65525: FAT16; else FAT32), as the specification says.
//!
//! A directory is an array of 32-byte entries; a long name precedes its short entry as
//! entries of attribute 0x0F holding 13 UTF-16 units each, last part first, each carrying a
//! checksum of the short name:
//!
//! ```text
//! short: NAME(8) EXT(3) | 11 ATTR | 12 CASE | 13 CTIME_10MS | 14 CTIME | 16 CDATE | 18 ADATE
//!        20 CLUSTER_HI(u16) | 22 MTIME | 24 MDATE | 26 CLUSTER_LO(u16) | 28 SIZE(u32)
//! long:  0 ORDER (0x40 = last) | 1 UNITS 0-4 | 11 ATTR = 0x0F | 13 CHECKSUM | 14 UNITS 5-10
//!        | 28 UNITS 11-12
//! ```
//!
//! Times are local time without a zone; they are reported as if they were UTC.

use std::rc::Rc;

use tessera_disk_image::ReadAt;

use crate::dir_cache::DirCache;
use crate::path;
use crate::{FsEntry, FsError, FsKind, read_exact};

/// Bytes of one directory entry.
const ENTRY: usize = 32;
const ATTR_VOLUME_LABEL: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0f;
/// A directory holds at most 65536 entries (the specification's limit), so at most this
/// many bytes are read for one; this also ends a directory cluster chain that loops.
const MAX_DIR_BYTES: u64 = 65536 * ENTRY as u64;
/// Bytes of the FAT read at once.
const FAT_WINDOW: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FatKind {
    Fat12,
    Fat16,
    Fat32,
}

/// Where a directory's entries are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Dir {
    /// The fixed root directory region of FAT12/16.
    FixedRoot { offset: u64, len: u64 },
    /// A cluster chain (subdirectories, and the FAT32 root).
    Chain(u32),
}

/// Whether `sector` (the first 512 bytes of a volume) is plausibly a FAT boot sector.
pub(crate) fn looks_like_boot_sector(s: &[u8; 512]) -> bool {
    let jump = (s[0] == 0xeb && s[2] == 0x90) || s[0] == 0xe9;
    let bps = u16::from_le_bytes([s[0x0b], s[0x0c]]);
    let spc = s[0x0d];
    let reserved = u16::from_le_bytes([s[0x0e], s[0x0f]]);
    let total16 = u16::from_le_bytes([s[0x13], s[0x14]]);
    let total32 = u32::from_le_bytes([s[0x20], s[0x21], s[0x22], s[0x23]]);
    jump && matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc.is_power_of_two()
        && reserved >= 1
        && s[0x10] >= 1
        && (total16 != 0 || total32 != 0)
        && s[510..] == [0x55, 0xaa]
}

/// An open FAT volume.
pub(crate) struct FatVolume {
    reader: Box<dyn ReadAt>,
    what: String,
    kind: FatKind,
    cluster_size: u64,
    fat: FatWindow,
    root: Dir,
    data_offset: u64,
    /// Highest valid cluster number (cluster count + 1).
    max_cluster: u32,
    label: Option<String>,
    /// The entries of the directories read last: a lookup reads its directory whole.
    dirs: DirCache<Dir, Entry>,
}

/// A directory entry as stored, with its names decoded.
#[derive(Clone, Debug)]
struct Entry {
    /// The long name if present and intact, else the short name.
    name: String,
    /// The 8.3 name, also accepted in lookups.
    short: String,
    attr: u8,
    cluster: u32,
    size: u32,
    mtime: Option<i64>,
    atime: Option<i64>,
    btime: Option<i64>,
    /// Byte offset of the short entry in the volume.
    offset: u64,
}

impl Entry {
    fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }
}

/// What a path names.
enum Found {
    Root,
    Entry(Entry),
}

impl FatVolume {
    /// Reads and validates the boot sector.
    pub(crate) fn open(mut reader: Box<dyn ReadAt>, what: &str) -> Result<Self, FsError> {
        let len = reader.len();
        if len < 512 {
            return Err(FsError::corrupt(
                what,
                Some(0),
                "too short for a FAT boot sector",
            ));
        }
        let mut s = [0u8; 512];
        read_exact(&mut *reader, what, 0, &mut s)?;
        let corrupt = |at: u64, detail: String| {
            FsError::corrupt(what, Some(at), format!("boot sector: {detail}"))
        };
        if !looks_like_boot_sector(&s) {
            return Err(corrupt(0, "not a FAT boot sector".to_owned()));
        }
        let u16_at = |at: usize| u64::from(u16::from_le_bytes([s[at], s[at + 1]]));
        let u32_at =
            |at: usize| u64::from(u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]));
        let bps = u16_at(0x0b);
        let spc = u64::from(s[0x0d]);
        let reserved = u16_at(0x0e);
        let num_fats = u64::from(s[0x10]);
        let root_entries = u16_at(0x11);
        let total = match u16_at(0x13) {
            0 => u32_at(0x20),
            n => n,
        };
        let fat_sectors = match u16_at(0x16) {
            0 => u32_at(0x24),
            n => n,
        };
        if fat_sectors == 0 {
            return Err(corrupt(0x16, "zero sectors per FAT".to_owned()));
        }
        // All factors are below 2^32, so these sums and products fit in u64.
        let root_sectors = (root_entries * ENTRY as u64).div_ceil(bps);
        let first_data = reserved + num_fats * fat_sectors + root_sectors;
        if first_data >= total {
            return Err(corrupt(
                0x13,
                format!(
                    "{total} sectors leave no room for data after {first_data} sectors of metadata"
                ),
            ));
        }
        if total * bps > len {
            return Err(corrupt(
                0x13,
                format!(
                    "the file system claims {total} sectors of {bps} bytes but the volume holds only \
                     {len} bytes (truncated image, or a partition smaller than its file system)"
                ),
            ));
        }
        let clusters = (total - first_data) / spc;
        let kind = if clusters < 4085 {
            FatKind::Fat12
        } else if clusters < 65525 {
            FatKind::Fat16
        } else {
            FatKind::Fat32
        };
        if clusters == 0 || clusters > 0x0fff_fff5 {
            return Err(corrupt(0x0d, format!("{clusters} clusters")));
        }
        // clusters <= 0x0FFFFFF5, so this fits.
        let max_cluster = (clusters + 1) as u32;
        let fat_len = fat_sectors * bps;
        let fat_needed = match kind {
            FatKind::Fat12 => (u64::from(max_cluster) + 1) * 3 / 2 + 1,
            FatKind::Fat16 => (u64::from(max_cluster) + 1) * 2,
            FatKind::Fat32 => (u64::from(max_cluster) + 1) * 4,
        };
        if fat_len < fat_needed {
            return Err(corrupt(
                0x16,
                format!("a FAT of {fat_len} bytes cannot map {clusters} clusters"),
            ));
        }
        let root = if kind == FatKind::Fat32 {
            let root_cluster = u32_at(0x2c);
            if root_entries != 0 || !(2..=u64::from(max_cluster)).contains(&root_cluster) {
                return Err(corrupt(
                    0x2c,
                    format!(
                        "FAT32 root directory at cluster {root_cluster} with {root_entries} fixed root entries"
                    ),
                ));
            }
            Dir::Chain(root_cluster as u32)
        } else {
            if root_entries == 0 {
                return Err(corrupt(
                    0x11,
                    "FAT12/16 without root directory entries".to_owned(),
                ));
            }
            Dir::FixedRoot {
                offset: (reserved + num_fats * fat_sectors) * bps,
                len: root_entries * ENTRY as u64,
            }
        };
        let label_at = if kind == FatKind::Fat32 { 0x47 } else { 0x2b };
        let sig_at = if kind == FatKind::Fat32 { 0x42 } else { 0x26 };
        let label = (s[sig_at] == 0x29)
            .then(|| {
                short_text(&s[label_at..label_at + 11])
                    .trim_end()
                    .to_owned()
            })
            .filter(|l| !l.is_empty() && l != "NO NAME");
        Ok(FatVolume {
            reader,
            what: what.to_owned(),
            kind,
            cluster_size: bps * spc,
            fat: FatWindow::new(reserved * bps, fat_len),
            root,
            data_offset: first_data * bps,
            max_cluster,
            label,
            dirs: DirCache::new(),
        })
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self.kind {
            FatKind::Fat12 => "fat12",
            FatKind::Fat16 => "fat16",
            FatKind::Fat32 => "fat32",
        }
    }

    pub(crate) fn label(&self) -> Option<String> {
        self.label.clone()
    }

    pub(crate) fn warnings(&self) -> &[String] {
        &[]
    }

    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    pub(crate) fn stat(&mut self, path: &str) -> Result<FsEntry, FsError> {
        match self.lookup(path)?.0 {
            Found::Root => Ok(bare_root()),
            Found::Entry(e) => Ok(fs_entry(e)),
        }
    }

    pub(crate) fn list(&mut self, path: &str) -> Result<Vec<FsEntry>, FsError> {
        let (found, seen) = self.lookup(path)?;
        let dir = match found {
            Found::Root => self.root,
            Found::Entry(e) if e.is_dir() => {
                let dir = self.dir_of(&e, path)?;
                if matches!(dir, Dir::Chain(c) if seen.contains(&c)) {
                    return Err(self.dir_loop(path, &e));
                }
                dir
            }
            Found::Entry(_) => {
                return Err(FsError::NotADirectory {
                    what: self.what.clone(),
                    path: path.to_owned(),
                });
            }
        };
        Ok(self
            .entries(dir, path)?
            .iter()
            .cloned()
            .map(fs_entry)
            .collect())
    }

    pub(crate) fn open_file(&mut self, path: &str) -> Result<FatFile, FsError> {
        let entry = match self.lookup(path)?.0 {
            Found::Entry(e) if !e.is_dir() => e,
            _ => {
                return Err(FsError::NotAFile {
                    what: self.what.clone(),
                    path: path.to_owned(),
                });
            }
        };
        let size = u64::from(entry.size);
        let clusters_needed = size.div_ceil(self.cluster_size);
        if size > 0 && !self.valid_cluster(entry.cluster) {
            return Err(FsError::corrupt(
                &self.what,
                Some(entry.offset),
                format!(
                    "{path:?} of {size} bytes starts at invalid cluster {}",
                    entry.cluster
                ),
            ));
        }
        if clusters_needed > u64::from(self.max_cluster - 1) {
            return Err(FsError::corrupt(
                &self.what,
                Some(entry.offset),
                format!("{path:?} claims {size} bytes, more than the volume holds"),
            ));
        }
        Ok(FatFile {
            path: path.to_owned(),
            first: entry.cluster,
            size,
            pos: 0,
            chain: ChainCursor::default(),
        })
    }

    /// Finds what `path` names, with the chain clusters of the directories walked through
    /// (to catch a directory that contains its own ancestor).
    fn lookup(&mut self, path: &str) -> Result<(Found, Vec<u32>), FsError> {
        let parts = path::components(&self.what, path)?;
        let mut seen = Vec::new();
        if let Dir::Chain(c) = self.root {
            seen.push(c);
        }
        let mut dir = self.root;
        let mut found = Found::Root;
        let mut walked = String::new();
        for part in parts {
            if let Found::Entry(e) = &found {
                if !e.is_dir() {
                    return Err(FsError::NotADirectory {
                        what: self.what.clone(),
                        path: walked,
                    });
                }
                dir = self.dir_of(e, &walked)?;
                if let Dir::Chain(c) = dir {
                    if seen.contains(&c) {
                        return Err(self.dir_loop(&walked, e));
                    }
                    seen.push(c);
                }
            }
            let entries = self.entries(dir, &walked)?;
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(part);
            // An exact name needs no case folding, which would cost an allocation for
            // every entry of a large directory on every lookup.
            let exact = entries.iter().find(|e| e.name == part || e.short == part);
            let entry = match exact {
                Some(entry) => entry,
                None => {
                    let wanted = part.to_lowercase();
                    entries
                        .iter()
                        .find(|e| {
                            e.name.to_lowercase() == wanted || e.short.to_lowercase() == wanted
                        })
                        .ok_or_else(|| FsError::NotFound {
                            what: self.what.clone(),
                            path: walked.clone(),
                        })?
                }
            };
            found = Found::Entry(entry.clone());
        }
        Ok((found, seen))
    }

    fn dir_loop(&self, path: &str, e: &Entry) -> FsError {
        FsError::corrupt(
            &self.what,
            Some(e.offset),
            format!(
                "directory {path:?} (cluster {}) is also one of its own ancestors: a directory loop",
                e.cluster
            ),
        )
    }

    fn dir_of(&self, e: &Entry, path: &str) -> Result<Dir, FsError> {
        if self.valid_cluster(e.cluster) {
            Ok(Dir::Chain(e.cluster))
        } else {
            Err(FsError::corrupt(
                &self.what,
                Some(e.offset),
                format!("directory {path:?} starts at invalid cluster {}", e.cluster),
            ))
        }
    }

    fn valid_cluster(&self, cluster: u32) -> bool {
        (2..=self.max_cluster).contains(&cluster)
    }

    /// Byte offset of a cluster, which must be valid.
    fn cluster_offset(&self, cluster: u32) -> u64 {
        // cluster - 2 < 2^28 and cluster_size <= 2^19; the result lies inside the volume,
        // whose size was checked against the cluster count.
        self.data_offset + u64::from(cluster - 2) * self.cluster_size
    }

    /// The cluster after `cluster` in its chain, or `None` at the end of the chain.
    fn next_cluster(&mut self, cluster: u32) -> Result<Option<u32>, FsError> {
        let (at, width) = match self.kind {
            FatKind::Fat12 => (u64::from(cluster) * 3 / 2, 2),
            FatKind::Fat16 => (u64::from(cluster) * 2, 2),
            FatKind::Fat32 => (u64::from(cluster) * 4, 4),
        };
        let raw = self.fat.bytes(&mut *self.reader, &self.what, at, width)?;
        let (value, end_min, bad) = match self.kind {
            FatKind::Fat12 => {
                let v = u32::from(u16::from_le_bytes([raw[0], raw[1]]));
                let v = if cluster % 2 == 1 { v >> 4 } else { v & 0xfff };
                (v, 0xff8, 0xff7)
            }
            FatKind::Fat16 => (
                u32::from(u16::from_le_bytes([raw[0], raw[1]])),
                0xfff8,
                0xfff7,
            ),
            FatKind::Fat32 => (
                u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) & 0x0fff_ffff,
                0x0fff_fff8,
                0x0fff_fff7,
            ),
        };
        if value >= end_min {
            return Ok(None);
        }
        if value == bad || !self.valid_cluster(value) {
            return Err(FsError::corrupt(
                &self.what,
                Some(self.fat.offset + at),
                format!("FAT entry of cluster {cluster} holds {value:#x}, not a cluster in use"),
            ));
        }
        Ok(Some(value))
    }

    /// The entries of a directory, from the cache or read.
    fn entries(&mut self, dir: Dir, path: &str) -> Result<Rc<Vec<Entry>>, FsError> {
        if let Some(entries) = self.dirs.get(&dir) {
            return Ok(entries);
        }
        let entries = self.read_dir(dir, path)?;
        Ok(self.dirs.insert(dir, entries))
    }

    /// The entries of a directory, without `.` and `..`.
    fn read_dir(&mut self, dir: Dir, path: &str) -> Result<Vec<Entry>, FsError> {
        let mut parser = DirParser::default();
        match dir {
            Dir::FixedRoot { offset, len } => {
                // len <= 65535 * 32.
                let mut raw = vec![0u8; len as usize];
                read_exact(&mut *self.reader, &self.what, offset, &mut raw)?;
                parser.feed(&self.what, &raw, offset)?;
            }
            Dir::Chain(first) => {
                let mut walk = ChainWalk::start(first);
                // cluster_size <= 2^19.
                let mut raw = vec![0u8; self.cluster_size as usize];
                loop {
                    let offset = self.cluster_offset(walk.cluster);
                    read_exact(&mut *self.reader, &self.what, offset, &mut raw)?;
                    parser.feed(&self.what, &raw, offset)?;
                    if parser.ended || walk.advance(self, path)?.is_none() {
                        break;
                    }
                    if walk.index.saturating_mul(self.cluster_size) >= MAX_DIR_BYTES {
                        return Err(FsError::corrupt(
                            &self.what,
                            Some(offset),
                            format!(
                                "directory {path:?} runs past {MAX_DIR_BYTES} bytes (65536 entries)"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(parser.entries)
    }
}

/// The FAT a FAT or exFAT volume follows (the first, or exFAT's active one), read
/// through a window of a few kilobytes.
pub(crate) struct FatWindow {
    /// Where the FAT starts in the volume, and its length in bytes.
    pub(crate) offset: u64,
    len: u64,
    /// The window: its offset inside the FAT, and its bytes.
    window: (u64, Vec<u8>),
}

impl FatWindow {
    pub(crate) fn new(offset: u64, len: u64) -> Self {
        FatWindow {
            offset,
            len,
            window: (0, Vec::new()),
        }
    }

    /// `width` (at most 4) bytes of the FAT at offset `at`.
    pub(crate) fn bytes(
        &mut self,
        reader: &mut dyn ReadAt,
        what: &str,
        at: u64,
        width: usize,
    ) -> Result<[u8; 4], FsError> {
        let end = at + width as u64;
        if end > self.len {
            return Err(FsError::corrupt(
                what,
                Some(self.offset + at),
                "FAT entry lies past the end of the FAT",
            ));
        }
        let (start, data) = &self.window;
        if at < *start || end > *start + data.len() as u64 {
            let start = at - at % FAT_WINDOW;
            // The window overlaps the next one by a few bytes so an entry never straddles it.
            let len = (FAT_WINDOW + 4).min(self.len - start);
            let mut data = vec![0u8; len as usize];
            read_exact(reader, what, self.offset + start, &mut data)?;
            self.window = (start, data);
        }
        let (start, data) = &self.window;
        let from = (at - start) as usize;
        let mut out = [0u8; 4];
        out[..width].copy_from_slice(&data[from..from + width]);
        Ok(out)
    }
}

/// A volume whose files are cluster chains linked through a FAT.
pub(crate) trait Links {
    /// The cluster after `cluster` in its chain, or `None` at the end of the chain.
    fn next_cluster(&mut self, cluster: u32) -> Result<Option<u32>, FsError>;
    /// The volume's name, for errors.
    fn what(&self) -> &str;
    /// Where its FAT starts, for errors.
    fn fat_offset(&self) -> u64;
}

impl Links for FatVolume {
    fn next_cluster(&mut self, cluster: u32) -> Result<Option<u32>, FsError> {
        FatVolume::next_cluster(self, cluster)
    }

    fn what(&self) -> &str {
        &self.what
    }

    fn fat_offset(&self) -> u64 {
        self.fat.offset
    }
}

/// Follows a cluster chain link by link and notices when it comes back on itself (Brent's
/// cycle detection: constant memory, and a loop is found within a few times its length).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChainWalk {
    /// The current cluster and its index in the chain.
    pub(crate) cluster: u32,
    pub(crate) index: u64,
    tortoise: u32,
    power: u64,
    steps: u64,
}

impl ChainWalk {
    pub(crate) fn start(first: u32) -> Self {
        ChainWalk {
            cluster: first,
            index: 0,
            tortoise: first,
            power: 1,
            steps: 0,
        }
    }

    /// Moves to the next cluster; `None` at the end of the chain.
    pub(crate) fn advance(
        &mut self,
        vol: &mut impl Links,
        path: &str,
    ) -> Result<Option<u32>, FsError> {
        let Some(next) = vol.next_cluster(self.cluster)? else {
            return Ok(None);
        };
        if self.power == self.steps {
            self.tortoise = self.cluster;
            self.power = self.power.saturating_mul(2);
            self.steps = 0;
        }
        self.cluster = next;
        self.index += 1;
        self.steps += 1;
        if self.cluster == self.tortoise {
            return Err(FsError::corrupt(
                vol.what(),
                Some(vol.fat_offset()),
                format!("the cluster chain of {path:?} loops back to cluster {next}"),
            ));
        }
        Ok(Some(next))
    }
}

/// Where the reads of a chained file left its chain: reading on costs one link a cluster,
/// and only a backward seek walks the chain again from its start.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ChainCursor {
    walk: Option<ChainWalk>,
}

impl ChainCursor {
    /// The cluster holding cluster `index` of the chain starting at `first`, or `None` if
    /// the chain ends before it.
    pub(crate) fn cluster_at(
        &mut self,
        vol: &mut impl Links,
        first: u32,
        index: u64,
        path: &str,
    ) -> Result<Option<u32>, FsError> {
        let mut walk = match self.walk {
            Some(w) if w.index <= index => w,
            _ => ChainWalk::start(first),
        };
        while walk.index < index {
            if walk.advance(vol, path)?.is_none() {
                return Ok(None);
            }
        }
        self.walk = Some(walk);
        Ok(Some(walk.cluster))
    }

    /// Bytes readable in one request from the cluster [`ChainCursor::cluster_at`] gave
    /// last, `run` of them in that cluster: the clusters after it that follow it on disk
    /// are added until `want` bytes are reached.
    pub(crate) fn contiguous_run(
        &mut self,
        vol: &mut impl Links,
        mut run: u64,
        want: u64,
        cluster_size: u64,
        path: &str,
    ) -> Result<u64, FsError> {
        while run < want {
            let Some(walk) = self.walk.as_mut() else {
                break;
            };
            let last = walk.cluster;
            if vol.next_cluster(last)? != last.checked_add(1) {
                break;
            }
            walk.advance(vol, path)?;
            run += cluster_size;
        }
        Ok(run)
    }
}

/// The root directory's entry on volumes that keep no metadata for it (FAT and exFAT).
pub(crate) fn bare_root() -> FsEntry {
    dos_entry(String::new(), true, 0, [None; 3])
}

/// An entry of a volume that keeps no owner or mode (FAT and exFAT): a directory or a
/// file of `size` bytes (0 for a directory), with its modification, access and creation
/// times.
pub(crate) fn dos_entry(name: String, is_dir: bool, size: u64, times: [Option<i64>; 3]) -> FsEntry {
    let [mtime_ns, atime_ns, btime_ns] = times;
    FsEntry {
        name,
        kind: if is_dir {
            FsKind::Directory
        } else {
            FsKind::File
        },
        size: if is_dir { 0 } else { size },
        mode: None,
        uid: None,
        gid: None,
        mtime_ns,
        atime_ns,
        ctime_ns: None,
        btime_ns,
    }
}

/// A regular file of a FAT volume: the chain is followed as the file is read, and walked
/// again from its start only when seeking backwards.
pub(crate) struct FatFile {
    path: String,
    first: u32,
    size: u64,
    pos: u64,
    chain: ChainCursor,
}

impl FatFile {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    pub(crate) fn read(&mut self, vol: &mut FatVolume, buf: &mut [u8]) -> Result<usize, FsError> {
        let mut done = 0;
        while done < <[u8]>::len(buf) && self.pos < self.size {
            let index = self.pos / vol.cluster_size;
            let within = self.pos % vol.cluster_size;
            let cluster = self.cluster_at(vol, index)?;
            let want = ((<[u8]>::len(buf) - done) as u64).min(self.size - self.pos);
            // Read on through clusters that follow each other on disk, in one request.
            let run = self.chain.contiguous_run(
                vol,
                vol.cluster_size - within,
                want,
                vol.cluster_size,
                &self.path,
            )?;
            // n <= buf.len() - done, a usize.
            let n = want.min(run) as usize;
            let offset = vol.cluster_offset(cluster) + within;
            read_exact(
                &mut *vol.reader,
                &vol.what,
                offset,
                &mut buf[done..done + n],
            )?;
            done += n;
            self.pos += n as u64;
        }
        Ok(done)
    }

    /// The cluster holding cluster `index` of the file.
    fn cluster_at(&mut self, vol: &mut FatVolume, index: u64) -> Result<u32, FsError> {
        self.chain
            .cluster_at(vol, self.first, index, &self.path)?
            .ok_or_else(|| {
                FsError::corrupt(
                    &vol.what,
                    None,
                    format!(
                        "{:?}: cluster chain ends before cluster {} of its {} bytes",
                        self.path,
                        index + 1,
                        self.size
                    ),
                )
            })
    }
}

/// Decodes directory entries, carrying a long name across cluster boundaries.
#[derive(Default)]
struct DirParser {
    entries: Vec<Entry>,
    /// Parts of the long name being read, indexed by order - 1.
    long: Vec<[u16; 13]>,
    /// The order expected next (counting down to 1), 0 when none is.
    expect: u8,
    checksum: u8,
    /// Set when all parts of a long name were read; the next short entry takes it.
    complete: bool,
    /// Set at the end-of-directory marker.
    ended: bool,
}

impl DirParser {
    fn feed(&mut self, what: &str, raw: &[u8], base: u64) -> Result<(), FsError> {
        for (i, e) in raw.chunks_exact(ENTRY).enumerate() {
            if self.ended {
                return Ok(());
            }
            self.entry(what, e, base + (i * ENTRY) as u64)?;
        }
        Ok(())
    }

    fn entry(&mut self, what: &str, e: &[u8], offset: u64) -> Result<(), FsError> {
        let attr = e[11];
        match e[0] {
            0x00 => {
                self.ended = true;
                return Ok(());
            }
            0xe5 => {
                self.expect = 0;
                self.complete = false;
                return Ok(());
            }
            _ => {}
        }
        if attr & 0x3f == ATTR_LONG_NAME {
            self.long_part(e);
            return Ok(());
        }
        self.expect = 0;
        let pending_long = std::mem::take(&mut self.complete);
        if attr & ATTR_VOLUME_LABEL != 0 || e[..11] == *b".          " || e[..11] == *b"..         "
        {
            return Ok(());
        }
        let short = short_name(e);
        let long = (pending_long && self.checksum == checksum(&e[..11])).then(|| {
            let units: Vec<u16> = self
                .long
                .iter()
                .flatten()
                .copied()
                .take_while(|&u| u != 0)
                .collect();
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect::<String>()
        });
        let name = long.unwrap_or_else(|| short.clone());
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(FsError::corrupt(
                what,
                Some(offset),
                format!("directory entry named {name:?}"),
            ));
        }
        let u16_at = |at: usize| u16::from_le_bytes([e[at], e[at + 1]]);
        let hi = u32::from(u16_at(20));
        self.entries.push(Entry {
            name,
            short,
            attr,
            cluster: (hi << 16) | u32::from(u16_at(26)),
            size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
            mtime: fat_time(u16_at(24), u16_at(22), 0),
            atime: fat_time(u16_at(18), 0, 0),
            btime: fat_time(u16_at(16), u16_at(14), e[13]),
            offset,
        });
        Ok(())
    }

    /// Takes one long-name entry; an out-of-order part drops the long name, and the short
    /// name is used instead.
    fn long_part(&mut self, e: &[u8]) {
        self.complete = false;
        let order = e[0] & 0x1f;
        if e[0] & 0x40 != 0 {
            if !(1..=20).contains(&order) {
                self.expect = 0;
                return;
            }
            self.long = vec![[0xffff; 13]; usize::from(order)];
            self.expect = order;
            self.checksum = e[13];
        }
        if self.expect == 0 || order != self.expect || e[13] != self.checksum {
            self.expect = 0;
            return;
        }
        let part = &mut self.long[usize::from(order) - 1];
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (unit, at) in part.iter_mut().zip(offsets) {
            *unit = u16::from_le_bytes([e[at], e[at + 1]]);
        }
        self.expect = order - 1;
        self.complete = order == 1;
    }
}

fn fs_entry(e: Entry) -> FsEntry {
    let is_dir = e.is_dir();
    dos_entry(
        e.name,
        is_dir,
        u64::from(e.size),
        [e.mtime, e.atime, e.btime],
    )
}

/// The 8.3 name, with the lower-case flags Windows NT keeps in byte 12 applied.
fn short_name(e: &[u8]) -> String {
    let mut raw = [0u8; 11];
    raw.copy_from_slice(&e[..11]);
    if raw[0] == 0x05 {
        // 0x05 stands for a leading 0xE5, which would otherwise mean "deleted".
        raw[0] = 0xe5;
    }
    let mut base = short_text(&raw[..8]).trim_end().to_owned();
    let mut ext = short_text(&raw[8..]).trim_end().to_owned();
    if e[12] & 0x08 != 0 {
        base = base.to_lowercase();
    }
    if e[12] & 0x10 != 0 {
        ext = ext.to_lowercase();
    }
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// Short names are in an OEM code page that the volume does not record; they are decoded
/// as code page 850, the default of mtools and dosfstools (ASCII is the same in all).
fn short_text(raw: &[u8]) -> String {
    raw.iter()
        .map(|&b| match b.checked_sub(0x80) {
            None => char::from(b),
            Some(high) => CP850_HIGH[usize::from(high)],
        })
        .collect()
}

/// Bytes 0x80-0xFF of code page 850.
const CP850_HIGH: [char; 128] = [
    '\u{00c7}', '\u{00fc}', '\u{00e9}', '\u{00e2}', '\u{00e4}', '\u{00e0}', '\u{00e5}', '\u{00e7}',
    '\u{00ea}', '\u{00eb}', '\u{00e8}', '\u{00ef}', '\u{00ee}', '\u{00ec}', '\u{00c4}', '\u{00c5}',
    '\u{00c9}', '\u{00e6}', '\u{00c6}', '\u{00f4}', '\u{00f6}', '\u{00f2}', '\u{00fb}', '\u{00f9}',
    '\u{00ff}', '\u{00d6}', '\u{00dc}', '\u{00f8}', '\u{00a3}', '\u{00d8}', '\u{00d7}', '\u{0192}',
    '\u{00e1}', '\u{00ed}', '\u{00f3}', '\u{00fa}', '\u{00f1}', '\u{00d1}', '\u{00aa}', '\u{00ba}',
    '\u{00bf}', '\u{00ae}', '\u{00ac}', '\u{00bd}', '\u{00bc}', '\u{00a1}', '\u{00ab}', '\u{00bb}',
    '\u{2591}', '\u{2592}', '\u{2593}', '\u{2502}', '\u{2524}', '\u{00c1}', '\u{00c2}', '\u{00c0}',
    '\u{00a9}', '\u{2563}', '\u{2551}', '\u{2557}', '\u{255d}', '\u{00a2}', '\u{00a5}', '\u{2510}',
    '\u{2514}', '\u{2534}', '\u{252c}', '\u{251c}', '\u{2500}', '\u{253c}', '\u{00e3}', '\u{00c3}',
    '\u{255a}', '\u{2554}', '\u{2569}', '\u{2566}', '\u{2560}', '\u{2550}', '\u{256c}', '\u{00a4}',
    '\u{00f0}', '\u{00d0}', '\u{00ca}', '\u{00cb}', '\u{00c8}', '\u{0131}', '\u{00cd}', '\u{00ce}',
    '\u{00cf}', '\u{2518}', '\u{250c}', '\u{2588}', '\u{2584}', '\u{00a6}', '\u{00cc}', '\u{2580}',
    '\u{00d3}', '\u{00df}', '\u{00d4}', '\u{00d2}', '\u{00f5}', '\u{00d5}', '\u{00b5}', '\u{00fe}',
    '\u{00de}', '\u{00da}', '\u{00db}', '\u{00d9}', '\u{00fd}', '\u{00dd}', '\u{00af}', '\u{00b4}',
    '\u{00ad}', '\u{00b1}', '\u{2017}', '\u{00be}', '\u{00b6}', '\u{00a7}', '\u{00f7}', '\u{00b8}',
    '\u{00b0}', '\u{00a8}', '\u{00b7}', '\u{00b9}', '\u{00b3}', '\u{00b2}', '\u{25a0}', '\u{00a0}',
];

/// The checksum of a short name that its long-name entries carry.
fn checksum(name: &[u8]) -> u8 {
    name.iter().fold(0u8, |sum, &b| {
        (sum >> 1).wrapping_add(sum << 7).wrapping_add(b)
    })
}

/// A FAT date and time (2-second resolution, plus 10 ms units for creation times) as
/// nanoseconds since the Unix epoch, taking the local time it holds as UTC.
pub(crate) fn fat_time(date: u16, time: u16, centis: u8) -> Option<i64> {
    if date == 0 {
        return None;
    }
    let year = 1980 + i64::from(date >> 9);
    let month = u32::from((date >> 5) & 0xf);
    let day = u32::from(date & 0x1f);
    let (hour, minute, second) = (
        i64::from(time >> 11),
        i64::from((time >> 5) & 0x3f),
        i64::from(time & 0x1f) * 2,
    );
    if !(1..=12).contains(&month)
        || day == 0
        || hour > 23
        || minute > 59
        || second > 59
        || centis > 199
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1_000_000_000 + i64::from(centis) * 10_000_000)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count years from March so the leap day ends the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        // 2021-06-15 12:34:56 -> 1623760496.
        let date = ((2021 - 1980) << 9) | (6 << 5) | 15;
        let time = (12 << 11) | (34 << 5) | (56 / 2);
        assert_eq!(fat_time(date, time, 0), Some(1_623_760_496_000_000_000));
        assert_eq!(fat_time(0, 0, 0), None);
        assert_eq!(fat_time((1 << 9) | (13 << 5) | 1, 0, 0), None);
    }

    #[test]
    fn short_name_checksum_matches_a_known_value() {
        // Computed by hand from the definition for "FOO     BAR".
        let mut sum = 0u8;
        for &b in b"FOO     BAR" {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(sum >> 1)
                .wrapping_add(b);
        }
        assert_eq!(checksum(b"FOO     BAR"), sum);
    }
}
