//! exFAT volumes, read by this module directly, as the FAT module reads FAT12/16/32: every
//! cluster number is checked, every chain bounded, and a directory that contains its own
//! ancestor is an error rather than an endless walk.
//!
//! Layout, in sectors: `BOOT REGION (12 sectors) || BACKUP BOOT REGION (12) || ... || FAT
//! (at FAT_OFFSET) || CLUSTER HEAP (at HEAP_OFFSET: clusters 2, 3, ...)`. The boot sector
//! (little-endian):
//!
//! ```text
//! 0x03 "EXFAT   " | 0x40 PARTITION_OFFSET(u64) | 0x48 VOLUME_LENGTH(u64, sectors)
//! 0x50 FAT_OFFSET(u32) | 0x54 FAT_LENGTH(u32) | 0x58 HEAP_OFFSET(u32) | 0x5C CLUSTER_COUNT(u32)
//! 0x60 ROOT_CLUSTER(u32) | 0x68 REVISION(minor u8, major u8) | 0x6A VOLUME_FLAGS(u16)
//! 0x6C BYTES_PER_SECTOR_SHIFT(u8) | 0x6D SECTORS_PER_CLUSTER_SHIFT(u8) | 0x6E NUMBER_OF_FATS
//! 0x1FE 55 AA
//! ```
//!
//! Sector 11 of the boot region repeats a checksum of sectors 0-10 (the volume flags and
//! the percentage in use left out); the backup region is read when the main one fails it.
//!
//! The FAT holds a 32-bit link per cluster (`0xFFFFFFFF` ends a chain, `0xFFFFFFF7` marks
//! a bad cluster), but a file whose clusters follow each other may skip it (`NoFatChain`).
//! A directory is an array of 32-byte entries; a file or directory is an entry set: a file
//! entry (0x85), a stream extension (0xC0) and the name in entries of 15 UTF-16 units
//! (0xC1), protected by a checksum over the set:
//!
//! ```text
//! 0x85: 1 SECONDARY_COUNT | 2 SET_CHECKSUM(u16) | 4 ATTRIBUTES(u16) | 8 CREATED(u32)
//!       12 MODIFIED(u32) | 16 ACCESSED(u32) | 20 CREATED_10MS | 21 MODIFIED_10MS
//!       22 CREATED_UTC_OFFSET | 23 MODIFIED_UTC_OFFSET | 24 ACCESSED_UTC_OFFSET
//! 0xC0: 1 FLAGS (bit 1: NoFatChain) | 3 NAME_LENGTH | 8 VALID_DATA_LENGTH(u64)
//!       20 FIRST_CLUSTER(u32) | 24 DATA_LENGTH(u64)
//! 0xC1: 2.. NAME (15 UTF-16 units)
//! ```
//!
//! Timestamps are FAT dates and times in one word; a UTC offset with its top bit set (in
//! 15-minute steps) turns the local time into UTC, else the time is taken as UTC. Bytes
//! past a file's valid data length read as zeros. Names are matched exactly, then ignoring
//! case.

use std::rc::Rc;

use tessera_disk_image::ReadAt;

use crate::dir_cache::DirCache;
use crate::fat::{ChainCursor, ChainWalk, FatWindow, Links, bare_root, dos_entry, fat_time};
use crate::path;
use crate::{FsEntry, FsError, read_exact};

/// The file system name at byte 3 of the boot sector.
pub(crate) const SIGNATURE: &[u8; 8] = b"EXFAT   ";
/// Bytes of one directory entry.
const ENTRY: usize = 32;
/// Sectors of a boot region; the backup region follows the main one.
const BOOT_SECTORS: u64 = 12;
/// The largest directory the specification allows.
const MAX_DIR_BYTES: u64 = 256 << 20;
/// Entry types: end of directory, volume label, file, stream extension, file name.
const END: u8 = 0x00;
const LABEL: u8 = 0x83;
const FILE: u8 = 0x85;
const STREAM: u8 = 0xc0;
const NAME: u8 = 0xc1;
/// The in-use bit of an entry type.
const IN_USE: u8 = 0x80;
const ATTR_DIRECTORY: u16 = 0x10;
/// Stream extension flag: the clusters follow each other and the FAT is not used.
const NO_FAT_CHAIN: u8 = 0x02;
/// FAT link values ending a chain and marking a bad cluster.
const END_OF_CHAIN: u32 = 0xffff_ffff;
const BAD_CLUSTER: u32 = 0xffff_fff7;

/// Whether `sector` (the first 512 bytes of a volume) is an exFAT boot sector.
pub(crate) fn looks_like_boot_sector(sector: &[u8; 512]) -> bool {
    &sector[3..11] == SIGNATURE && sector[510..] == [0x55, 0xaa]
}

/// Where a file's or directory's clusters are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Stream {
    first: u32,
    /// Bytes allocated; `None` for the root directory, which runs to its chain's end.
    len: Option<u64>,
    /// Bytes written; the rest up to `len` reads as zeros.
    valid: u64,
    contiguous: bool,
}

/// A file or directory entry set, decoded.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    attributes: u16,
    stream: Stream,
    mtime: Option<i64>,
    atime: Option<i64>,
    btime: Option<i64>,
    /// Byte offset of the file entry in the volume.
    offset: u64,
}

impl Entry {
    fn is_dir(&self) -> bool {
        self.attributes & ATTR_DIRECTORY != 0
    }
}

/// What a path names.
enum Found {
    Root,
    Entry(Entry),
}

/// An open exFAT volume.
pub(crate) struct ExfatVolume {
    reader: Box<dyn ReadAt>,
    what: String,
    cluster_size: u64,
    fat: FatWindow,
    heap_offset: u64,
    /// Highest valid cluster number (cluster count + 1).
    max_cluster: u32,
    root: Stream,
    label: Option<String>,
    warnings: Vec<String>,
    /// The entries of the directories read last: a lookup reads its directory whole.
    dirs: DirCache<Stream, Entry>,
}

impl ExfatVolume {
    /// Reads the boot region (or its backup), then the root directory for the label.
    pub(crate) fn open(mut reader: Box<dyn ReadAt>, what: &str) -> Result<Self, FsError> {
        let len = reader.len();
        let mut warnings = Vec::new();
        let (boot, base) = match boot_region(&mut *reader, what, false) {
            Ok(boot) => boot,
            Err(main) => match boot_region(&mut *reader, what, true) {
                Ok(boot) => {
                    warnings.push(format!("{main}; the backup boot region was read instead"));
                    boot
                }
                Err(_) => return Err(main),
            },
        };
        let s = &boot;
        let corrupt = |at: u64, detail: String| {
            FsError::corrupt(what, Some(base + at), format!("boot sector: {detail}"))
        };
        let u32_at =
            |at: usize| u64::from(u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]));
        let sector_shift = u32::from(s[0x6c]);
        let cluster_shift = u32::from(s[0x6d]);
        if !(9..=12).contains(&sector_shift) || sector_shift + cluster_shift > 25 {
            return Err(corrupt(
                0x6c,
                format!("sectors of 2^{sector_shift} bytes in clusters of 2^{cluster_shift}"),
            ));
        }
        if s[0x69] != 1 {
            return Err(FsError::unsupported(
                what,
                format!("exFAT revision {}.{:02}", s[0x69], s[0x68]),
            ));
        }
        let fats = u64::from(s[0x6e]);
        let volume_flags = u16::from_le_bytes([s[0x6a], s[0x6b]]);
        if !(1..=2).contains(&fats) {
            return Err(corrupt(0x6e, format!("{fats} FATs")));
        }
        let sector = 1u64 << sector_shift;
        let volume_sectors = u64::from_le_bytes(s[0x48..0x50].try_into().expect("8 bytes"));
        let fat_offset = u32_at(0x50);
        let fat_length = u32_at(0x54);
        let heap_offset = u32_at(0x58);
        let clusters = u32_at(0x5c);
        let root_cluster = u32_at(0x60);
        // Every factor below is under 2^32 and shifts are at most 25, so nothing overflows.
        if fat_offset < 2 * BOOT_SECTORS
            || fat_length == 0
            || heap_offset < fat_offset + fat_length * fats
            || heap_offset > volume_sectors
        {
            return Err(corrupt(
                0x50,
                format!(
                    "FAT at sector {fat_offset} ({fat_length} sectors, {fats} copies) and cluster \
                     heap at sector {heap_offset} do not fit a volume of {volume_sectors} sectors"
                ),
            ));
        }
        if volume_sectors
            .checked_mul(sector)
            .is_none_or(|bytes| bytes > len)
        {
            return Err(corrupt(
                0x48,
                format!(
                    "the file system claims {volume_sectors} sectors of {sector} bytes but the \
                     volume holds only {len} bytes (truncated image, or a partition smaller \
                     than its file system)"
                ),
            ));
        }
        let heap_clusters = (volume_sectors - heap_offset) >> cluster_shift;
        if clusters == 0 || clusters > heap_clusters || clusters > 0xffff_fff5 {
            return Err(corrupt(
                0x5c,
                format!("{clusters} clusters in a heap room for {heap_clusters}"),
            ));
        }
        if fat_length * sector < (clusters + 2) * 4 {
            return Err(corrupt(
                0x54,
                format!("a FAT of {fat_length} sectors cannot map {clusters} clusters"),
            ));
        }
        // clusters <= 0xFFFFFFF5, so this fits.
        let max_cluster = (clusters + 1) as u32;
        if !(2..=u64::from(max_cluster)).contains(&root_cluster) {
            return Err(corrupt(
                0x60,
                format!("root directory at cluster {root_cluster}"),
            ));
        }
        // The second FAT is the active one when the volume says so (TexFAT).
        let active = u64::from(volume_flags & 1).min(fats - 1);
        let mut volume = ExfatVolume {
            reader,
            what: what.to_owned(),
            cluster_size: sector << cluster_shift,
            fat: FatWindow::new(
                (fat_offset + active * fat_length) * sector,
                fat_length * sector,
            ),
            heap_offset: heap_offset * sector,
            max_cluster,
            root: Stream {
                first: root_cluster as u32,
                len: None,
                valid: 0,
                contiguous: false,
            },
            label: None,
            warnings,
            dirs: DirCache::new(),
        };
        // The label is in the root directory; damage there is reported when the root is
        // listed, and does not keep the rest of the volume from being read.
        match volume.read_dir(volume.root, "") {
            Ok(listing) => {
                volume.label = listing.label;
                volume.dirs.insert(volume.root, listing.entries);
            }
            Err(err) => volume
                .warnings
                .push(format!("the volume label cannot be read: {err}")),
        }
        Ok(volume)
    }

    pub(crate) fn kind(&self) -> &'static str {
        "exfat"
    }

    pub(crate) fn label(&self) -> Option<String> {
        self.label.clone()
    }

    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
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
        let stream = match found {
            Found::Root => self.root,
            Found::Entry(e) if e.is_dir() => {
                if seen[..seen.len() - 1].contains(&e.stream.first) {
                    return Err(self.dir_loop(path, &e));
                }
                e.stream
            }
            Found::Entry(_) => {
                return Err(FsError::NotADirectory {
                    what: self.what.clone(),
                    path: path.to_owned(),
                });
            }
        };
        Ok(self
            .entries(stream, path)?
            .iter()
            .cloned()
            .map(fs_entry)
            .collect())
    }

    pub(crate) fn open_file(&mut self, path: &str) -> Result<ExfatFile, FsError> {
        match self.lookup(path)?.0 {
            Found::Entry(e) if !e.is_dir() => Ok(ExfatFile {
                path: path.to_owned(),
                stream: e.stream,
                pos: 0,
                chain: ChainCursor::default(),
            }),
            _ => Err(FsError::NotAFile {
                what: self.what.clone(),
                path: path.to_owned(),
            }),
        }
    }

    /// Finds what `path` names, with the first clusters of the directories walked through
    /// and of what it names last (to catch a directory that contains its own ancestor).
    fn lookup(&mut self, path: &str) -> Result<(Found, Vec<u32>), FsError> {
        let parts = path::components(&self.what, path)?;
        let mut seen = vec![self.root.first];
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
                if seen[..seen.len() - 1].contains(&e.stream.first) {
                    return Err(self.dir_loop(&walked, e));
                }
                dir = e.stream;
            }
            let entries = self.entries(dir, &walked)?;
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(part);
            let entry = match entries.iter().find(|e| e.name == part) {
                Some(entry) => entry,
                None => {
                    let wanted = part.to_lowercase();
                    entries
                        .iter()
                        .find(|e| e.name.to_lowercase() == wanted)
                        .ok_or_else(|| FsError::NotFound {
                            what: self.what.clone(),
                            path: walked.clone(),
                        })?
                }
            };
            seen.push(entry.stream.first);
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
                e.stream.first
            ),
        )
    }

    fn valid_cluster(&self, cluster: u32) -> bool {
        (2..=self.max_cluster).contains(&cluster)
    }

    /// Byte offset of a cluster, which must be valid.
    fn cluster_offset(&self, cluster: u32) -> u64 {
        // cluster - 2 < 2^32 and cluster_size <= 2^25; the heap's clusters lie inside the
        // volume, whose size was checked.
        self.heap_offset + u64::from(cluster - 2) * self.cluster_size
    }

    /// Checks that a stream's clusters can exist: a valid first cluster, no more bytes
    /// than the heap holds, and for a contiguous stream, clusters inside the heap.
    fn check_stream(&self, stream: &Stream, path: &str, offset: u64) -> Result<(), FsError> {
        let len = stream.len.unwrap_or(0);
        let clusters = len.div_ceil(self.cluster_size);
        let bad = if len == 0 {
            None
        } else if !self.valid_cluster(stream.first) {
            Some(format!("starts at invalid cluster {}", stream.first))
        } else if clusters > u64::from(self.max_cluster - 1) {
            Some(format!("claims {len} bytes, more than the volume holds"))
        } else if stream.contiguous
            && u64::from(stream.first) + clusters - 1 > u64::from(self.max_cluster)
        {
            Some(format!(
                "runs from cluster {} over {clusters} clusters, past the last one",
                stream.first
            ))
        } else {
            None
        };
        match bad {
            Some(detail) => Err(FsError::corrupt(
                &self.what,
                Some(offset),
                format!("{path:?} {detail}"),
            )),
            None => Ok(()),
        }
    }

    /// The entries of a directory, from the cache or read.
    fn entries(&mut self, stream: Stream, path: &str) -> Result<Rc<Vec<Entry>>, FsError> {
        if let Some(entries) = self.dirs.get(&stream) {
            return Ok(entries);
        }
        let entries = self.read_dir(stream, path)?.entries;
        Ok(self.dirs.insert(stream, entries))
    }

    /// The entries of a directory and, for the root, the volume label.
    fn read_dir(&mut self, stream: Stream, path: &str) -> Result<Listing, FsError> {
        if stream.len.is_some_and(|len| len > MAX_DIR_BYTES) {
            return Err(FsError::corrupt(
                &self.what,
                None,
                format!("directory {path:?} claims more than {MAX_DIR_BYTES} bytes"),
            ));
        }
        let mut parser = DirParser::new(path);
        let mut raw = vec![0u8; self.cluster_size as usize];
        let limit = stream.len.unwrap_or(MAX_DIR_BYTES);
        let mut walk = ChainWalk::start(stream.first);
        let mut read = 0u64;
        while read < limit && !parser.ended {
            let cluster = if stream.contiguous {
                // check_stream kept the run inside the heap.
                stream.first + (read / self.cluster_size) as u32
            } else {
                if read > 0 && walk.advance(self, path)?.is_none() {
                    if stream.len.is_some() {
                        return Err(self.short_chain(path, read, limit));
                    }
                    break;
                }
                walk.cluster
            };
            let offset = self.cluster_offset(cluster);
            let n = self.cluster_size.min(limit - read) as usize;
            read_exact(&mut *self.reader, &self.what, offset, &mut raw[..n])?;
            parser.feed(self, &raw[..n], offset)?;
            read += n as u64;
        }
        if stream.len.is_none() && !parser.ended && read >= MAX_DIR_BYTES {
            return Err(FsError::corrupt(
                &self.what,
                None,
                format!("directory {path:?} runs past {MAX_DIR_BYTES} bytes"),
            ));
        }
        parser.finish(self)
    }

    fn short_chain(&self, path: &str, read: u64, len: u64) -> FsError {
        FsError::corrupt(
            &self.what,
            Some(self.fat.offset),
            format!("{path:?}: cluster chain ends before byte {read} of its {len} bytes"),
        )
    }

    /// The cluster after `cluster` in its chain, or `None` at the end of the chain.
    fn next(&mut self, cluster: u32) -> Result<Option<u32>, FsError> {
        let at = u64::from(cluster) * 4;
        let raw = self.fat.bytes(&mut *self.reader, &self.what, at, 4)?;
        let value = u32::from_le_bytes(raw);
        if value == END_OF_CHAIN {
            return Ok(None);
        }
        if value == BAD_CLUSTER || !self.valid_cluster(value) {
            return Err(FsError::corrupt(
                &self.what,
                Some(self.fat.offset + at),
                format!("FAT entry of cluster {cluster} holds {value:#x}, not a cluster in use"),
            ));
        }
        Ok(Some(value))
    }
}

impl Links for ExfatVolume {
    fn next_cluster(&mut self, cluster: u32) -> Result<Option<u32>, FsError> {
        self.next(cluster)
    }

    fn what(&self) -> &str {
        &self.what
    }

    fn fat_offset(&self) -> u64 {
        self.fat.offset
    }
}

/// Reads the main boot region, or the backup one that follows it, and checks its
/// checksum; its boot sector, and where that lies in the volume.
fn boot_region(
    reader: &mut dyn ReadAt,
    what: &str,
    backup: bool,
) -> Result<(Vec<u8>, u64), FsError> {
    let name = if backup { "backup " } else { "" };
    // The backup starts at sector 12, in sectors of the size the boot sector gives: the
    // one of the sizes exFAT allows whose position holds a boot sector giving that size.
    let mut found = None;
    for shift in 9..=12u32 {
        let at = if backup { BOOT_SECTORS << shift } else { 0 };
        let mut head = [0u8; 512];
        if at + 512 > reader.len() {
            break;
        }
        read_exact(reader, what, at, &mut head)?;
        let fits = !backup || u32::from(head[0x6c]) == shift;
        if looks_like_boot_sector(&head) && fits {
            found = Some((at, u32::from(head[0x6c])));
            break;
        }
        if !backup {
            break;
        }
    }
    let Some((start, shift)) = found else {
        return Err(FsError::corrupt(
            what,
            Some(if backup { BOOT_SECTORS * 512 } else { 0 }),
            format!("not an exFAT {name}boot sector"),
        ));
    };
    if !(9..=12).contains(&shift) {
        return Err(FsError::corrupt(
            what,
            Some(start + 0x6c),
            format!("{name}boot sector: sectors of 2^{shift} bytes"),
        ));
    }
    let sector = 1u64 << shift;
    if reader.len() < start + BOOT_SECTORS * sector {
        return Err(FsError::corrupt(
            what,
            Some(start),
            format!("too short for an exFAT {name}boot region"),
        ));
    }
    // 12 sectors of at most 4 KiB.
    let mut region = vec![0u8; (BOOT_SECTORS * sector) as usize];
    read_exact(reader, what, start, &mut region)?;
    let (body, sum_sector) = region.split_at((11 * sector) as usize);
    let sum = boot_checksum(body);
    if sum_sector
        .chunks_exact(4)
        .any(|word| u32::from_le_bytes(word.try_into().expect("4 bytes")) != sum)
    {
        return Err(FsError::corrupt(
            what,
            Some(start + 11 * sector),
            format!("the {name}boot region's checksum does not match (expected {sum:#010x})"),
        ));
    }
    region.truncate(512);
    Ok((region, start))
}

/// The boot region checksum over sectors 0-10, leaving out the volume flags and the
/// percentage in use, which change without the checksum being rewritten.
fn boot_checksum(body: &[u8]) -> u32 {
    body.iter().enumerate().fold(0u32, |sum, (i, &b)| {
        if matches!(i, 106 | 107 | 112) {
            sum
        } else {
            sum.rotate_right(1).wrapping_add(u32::from(b))
        }
    })
}

/// The checksum over an entry set, leaving out the checksum field of its first entry.
fn set_checksum(set: &[u8]) -> u16 {
    set.iter().enumerate().fold(0u16, |sum, (i, &b)| {
        if matches!(i, 2 | 3) {
            sum
        } else {
            sum.rotate_right(1).wrapping_add(u16::from(b))
        }
    })
}

/// A directory's decoded entries, and the volume label if it is the root.
struct Listing {
    entries: Vec<Entry>,
    label: Option<String>,
}

/// Decodes directory entries, carrying an entry set across cluster boundaries.
struct DirParser {
    path: String,
    listing: Listing,
    /// The entry set being gathered: its bytes and where its first entry is.
    set: Vec<u8>,
    set_offset: u64,
    /// Entries the set still needs.
    wanted: usize,
    ended: bool,
}

impl DirParser {
    fn new(path: &str) -> Self {
        DirParser {
            path: path.to_owned(),
            listing: Listing {
                entries: Vec::new(),
                label: None,
            },
            set: Vec::new(),
            set_offset: 0,
            wanted: 0,
            ended: false,
        }
    }

    fn feed(&mut self, vol: &ExfatVolume, raw: &[u8], base: u64) -> Result<(), FsError> {
        for (i, e) in raw.chunks_exact(ENTRY).enumerate() {
            if self.ended {
                break;
            }
            self.entry(vol, e, base + (i * ENTRY) as u64)?;
        }
        Ok(())
    }

    fn entry(&mut self, vol: &ExfatVolume, e: &[u8], offset: u64) -> Result<(), FsError> {
        if self.wanted > 0 {
            if e[0] & IN_USE == 0 || e[0] & 0x40 == 0 {
                return Err(self.corrupt(
                    vol,
                    offset,
                    format!("entry set ends early: entry type {:#04x}", e[0]),
                ));
            }
            self.set.extend_from_slice(e);
            self.wanted -= 1;
            if self.wanted == 0 {
                let set = std::mem::take(&mut self.set);
                let entry = self.decode(vol, &set)?;
                self.listing.entries.push(entry);
            }
            return Ok(());
        }
        match e[0] {
            END => self.ended = true,
            FILE => {
                let secondary = usize::from(e[1]);
                if !(2..=18).contains(&secondary) {
                    return Err(self.corrupt(
                        vol,
                        offset,
                        format!("file entry with {secondary} secondary entries"),
                    ));
                }
                self.set.clear();
                self.set.extend_from_slice(e);
                self.set_offset = offset;
                self.wanted = secondary;
            }
            LABEL => {
                let count = usize::from(e[1]).min(11);
                let units = e[2..2 + 2 * count]
                    .chunks_exact(2)
                    .map(|u| u16::from_le_bytes([u[0], u[1]]));
                let label: String = char::decode_utf16(units)
                    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect();
                self.listing.label = Some(label).filter(|l| !l.is_empty());
            }
            // Deleted sets, the allocation bitmap, the up-case table, the volume GUID and
            // vendor entries hold nothing a listing shows.
            _ => {}
        }
        Ok(())
    }

    /// Decodes a complete entry set.
    fn decode(&self, vol: &ExfatVolume, set: &[u8]) -> Result<Entry, FsError> {
        let offset = self.set_offset;
        let stored = u16::from_le_bytes([set[2], set[3]]);
        let sum = set_checksum(set);
        if stored != sum {
            return Err(self.corrupt(
                vol,
                offset,
                format!("entry set checksum {stored:#06x} does not match its entries ({sum:#06x})"),
            ));
        }
        let file = &set[..ENTRY];
        let stream = &set[ENTRY..2 * ENTRY];
        if stream[0] != STREAM {
            return Err(self.corrupt(
                vol,
                offset + ENTRY as u64,
                format!(
                    "file entry followed by entry type {:#04x}, not a stream extension",
                    stream[0]
                ),
            ));
        }
        let name_len = usize::from(stream[3]);
        let names = &set[2 * ENTRY..];
        if name_len == 0 || names.len() / ENTRY < name_len.div_ceil(15) {
            return Err(self.corrupt(
                vol,
                offset,
                format!(
                    "a name of {name_len} characters in {} name entries",
                    names.len() / ENTRY
                ),
            ));
        }
        let mut units = Vec::with_capacity(name_len);
        for chunk in names.chunks_exact(ENTRY).take(name_len.div_ceil(15)) {
            if chunk[0] != NAME {
                return Err(self.corrupt(
                    vol,
                    offset,
                    format!("entry type {:#04x} where a name entry belongs", chunk[0]),
                ));
            }
            units.extend(
                chunk[2..]
                    .chunks_exact(2)
                    .map(|u| u16::from_le_bytes([u[0], u[1]])),
            );
        }
        units.truncate(name_len);
        let name: String = char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        if name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(self.corrupt(vol, offset, format!("directory entry named {name:?}")));
        }
        let u32_at = |e: &[u8], at: usize| u32::from_le_bytes(e[at..at + 4].try_into().expect("4"));
        let u64_at = |e: &[u8], at: usize| u64::from_le_bytes(e[at..at + 8].try_into().expect("8"));
        let attributes = u16::from_le_bytes([file[4], file[5]]);
        let len = u64_at(stream, 24);
        let valid = u64_at(stream, 8).min(len);
        let entry = Entry {
            name,
            attributes,
            stream: Stream {
                first: u32_at(stream, 20),
                len: Some(len),
                valid,
                contiguous: stream[1] & NO_FAT_CHAIN != 0,
            },
            btime: timestamp(u32_at(file, 8), file[20], file[22]),
            mtime: timestamp(u32_at(file, 12), file[21], file[23]),
            atime: timestamp(u32_at(file, 16), 0, file[24]),
            offset,
        };
        let path = if self.path.is_empty() {
            entry.name.clone()
        } else {
            format!("{}/{}", self.path, entry.name)
        };
        vol.check_stream(&entry.stream, &path, offset)?;
        Ok(entry)
    }

    fn finish(self, vol: &ExfatVolume) -> Result<Listing, FsError> {
        if self.wanted > 0 {
            return Err(self.corrupt(
                vol,
                self.set_offset,
                "entry set cut off by the end of the directory".to_owned(),
            ));
        }
        Ok(self.listing)
    }

    fn corrupt(&self, vol: &ExfatVolume, offset: u64, detail: String) -> FsError {
        FsError::corrupt(
            &vol.what,
            Some(offset),
            format!("directory {:?}: {detail}", self.path),
        )
    }
}

/// An exFAT timestamp (a FAT date in the high half, a FAT time in the low half), with its
/// 10-millisecond increment and UTC offset, as nanoseconds since the Unix epoch.
fn timestamp(stamp: u32, centis: u8, utc_offset: u8) -> Option<i64> {
    let local = fat_time((stamp >> 16) as u16, stamp as u16, centis)?;
    if utc_offset & 0x80 == 0 {
        return Some(local);
    }
    // A signed 7-bit count of 15-minute steps east of UTC.
    let steps = i64::from(((utc_offset << 1) as i8) >> 1);
    Some(local - steps * 15 * 60 * 1_000_000_000)
}

fn fs_entry(e: Entry) -> FsEntry {
    let is_dir = e.is_dir();
    let size = e.stream.len.unwrap_or(0);
    dos_entry(e.name, is_dir, size, [e.mtime, e.atime, e.btime])
}

/// A regular file of an exFAT volume: its clusters are counted from the first when they
/// follow each other, else the chain is followed as the file is read.
pub(crate) struct ExfatFile {
    path: String,
    stream: Stream,
    pos: u64,
    chain: ChainCursor,
}

impl ExfatFile {
    pub(crate) fn size(&self) -> u64 {
        self.stream.len.unwrap_or(0)
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    pub(crate) fn read(&mut self, vol: &mut ExfatVolume, buf: &mut [u8]) -> Result<usize, FsError> {
        let size = self.size();
        let mut done = 0;
        while done < <[u8]>::len(buf) && self.pos < size {
            let want = ((<[u8]>::len(buf) - done) as u64).min(size - self.pos);
            if self.pos >= self.stream.valid {
                // Allocated but never written: zeros, as the format defines.
                let n = want as usize;
                buf[done..done + n].fill(0);
                done += n;
                self.pos += n as u64;
                continue;
            }
            let want = want.min(self.stream.valid - self.pos);
            let index = self.pos / vol.cluster_size;
            let within = self.pos % vol.cluster_size;
            let (cluster, run) = if self.stream.contiguous {
                // check_stream kept the whole run inside the heap.
                (self.stream.first + index as u32, want)
            } else {
                let cluster = self.cluster_at(vol, index)?;
                // Read on through clusters that follow each other on disk, in one request.
                let run = self.chain.contiguous_run(
                    vol,
                    vol.cluster_size - within,
                    want,
                    vol.cluster_size,
                    &self.path,
                )?;
                (cluster, run)
            };
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

    /// The cluster holding cluster `index` of a chained file.
    fn cluster_at(&mut self, vol: &mut ExfatVolume, index: u64) -> Result<u32, FsError> {
        let first = self.stream.first;
        self.chain
            .cluster_at(vol, first, index, &self.path)?
            .ok_or_else(|| vol.short_chain(&self.path, index * vol.cluster_size, self.size()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_apply_their_utc_offset() {
        // 2021-06-15 12:34:56.78 local.
        let date = ((2021 - 1980) << 9) | (6 << 5) | 15;
        let time = (12 << 11) | (34 << 5) | (56 / 2);
        let stamp = (date << 16) | time;
        let local = 1_623_760_496_780_000_000;
        assert_eq!(timestamp(stamp, 78, 0), Some(local));
        // UTC+2 (8 steps of 15 minutes): 10:34:56.78 UTC.
        assert_eq!(
            timestamp(stamp, 78, 0x80 | 8),
            Some(local - 2 * 3600 * 1_000_000_000)
        );
        // UTC-5:30 (-22 steps, 7-bit two's complement).
        assert_eq!(
            timestamp(stamp, 78, 0x80 | (128 - 22)),
            Some(local + 5 * 3600 * 1_000_000_000 + 1800 * 1_000_000_000)
        );
        assert_eq!(timestamp(0, 0, 0), None);
    }

    #[test]
    fn set_checksums_skip_their_own_field() {
        let mut set = vec![0u8; 96];
        set[0] = FILE;
        set[1] = 2;
        set[32] = STREAM;
        set[64] = NAME;
        let sum = set_checksum(&set);
        set[2] = 0xab;
        set[3] = 0xcd;
        assert_eq!(set_checksum(&set), sum);
        set[70] = 1;
        assert_ne!(set_checksum(&set), sum);
    }
}
