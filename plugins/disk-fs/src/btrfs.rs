//! btrfs volumes (the default of Fedora and openSUSE), read by this module directly. All
//! on-disk values are little-endian.
//!
//! Everything lives in copy-on-write B-trees of 17-byte keys `OBJECTID(u64) | TYPE(u8) |
//! OFFSET(u64)`, addressed by *logical* byte numbers that the chunk tree maps to places on
//! the devices. The superblock (at 64 KiB) carries the chunks of the system chunks, enough
//! to read the chunk tree, and the roots of the chunk and root trees:
//!
//! ```text
//! superblock: 0 CSUM(32) | 0x40 MAGIC "_BHRfS_M" | 0x50 ROOT | 0x58 CHUNK_ROOT | 0x60 LOG_ROOT
//!   0x88 NUM_DEVICES | 0x90 SECTORSIZE(u32) | 0x94 NODESIZE(u32) | 0xa0 SYS_CHUNK_ARRAY_SIZE(u32)
//!   0xbc INCOMPAT(u64) | 0xc4 CSUM_TYPE(u16) | 0xc6 ROOT_LEVEL | 0xc7 CHUNK_ROOT_LEVEL
//!   0xc9 DEV_ITEM (its DEVID first) | 0x12b LABEL(256) | 0x32b SYS_CHUNK_ARRAY(2048)
//! chunk:  LENGTH | OWNER | STRIPE_LEN | TYPE | ... | 0x2c NUM_STRIPES(u16) | 0x30 { DEVID | OFFSET | UUID(16) }
//! node:   CSUM(32) | FSID(16) | 0x30 BYTENR | ... | 0x60 NRITEMS(u32) | 0x64 LEVEL | 0x65 items
//!   leaf item: KEY | OFFSET(u32, from 0x65) | SIZE(u32); inner item: KEY | BLOCKPTR | GENERATION
//! ```
//!
//! The root tree holds a `ROOT_ITEM` for each file tree: the top-level one (5) and every
//! subvolume and snapshot. A file tree holds, per inode, an `INODE_ITEM` (mode, owner,
//! size, times), `DIR_INDEX` items for a directory's entries in the order they were made,
//! `XATTR_ITEM`s, and `EXTENT_DATA` items mapping file offsets to extents: inline bytes,
//! a range of a (possibly zlib- or zstd-compressed) extent, or a preallocated range. A
//! directory entry may point into another file tree: a subvolume, shown here as a
//! directory of its name (Fedora's `root` and `home`).
//!
//! A multi-device volume is read through the devices given with the one it is opened
//! from (the vm-disk plugin finds them among a VM's disks by the volume's UUID): every
//! profile's chunks (single, DUP, RAID0, RAID1, RAID1C3/4, RAID10, RAID5 and RAID6) are
//! mapped to their devices as the kernel maps them, a copy on a missing device read from
//! another, a RAID5/6 stripe rebuilt from its row's parity ([`BtrfsVolume::rebuild`]).
//!
//! What is not read: data or metadata only on devices that are not there (the error names
//! the device), LZO-compressed extents
//! and encrypted ones (an error naming the file), and the log tree of `fsync`s not yet
//! committed (a warning says so). Tree blocks' CRC-32C checksums are checked; other
//! checksum types are not.

use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use crc::{CRC_32_ISCSI, Crc};
use tessera_disk_image::ReadAt;

use crate::dir_cache::DirCache;
use crate::ext4::{MAX_DIR_BYTES, MAX_DIR_ENTRIES};
use crate::path::{self, MAX_PATH_BYTES, Step, Walk};
use crate::{Extras, FsEntry, FsError, FsKind, read_exact};

/// Where the primary superblock is.
pub(crate) const SUPERBLOCK: u64 = 0x1_0000;
/// The magic, at [`MAGIC_AT`] in the superblock.
pub(crate) const MAGIC: &[u8; 8] = b"_BHRfS_M";
pub(crate) const MAGIC_AT: u64 = 0x40;

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

const HEADER: usize = 0x65;
const KEY: usize = 17;

const FS_TREE: u64 = 5;
const FIRST_CHUNK_TREE: u64 = 256;

const INODE_ITEM: u8 = 1;
const XATTR_ITEM: u8 = 24;
const DIR_INDEX: u8 = 96;
const EXTENT_DATA: u8 = 108;
const ROOT_ITEM: u8 = 132;
const CHUNK_ITEM: u8 = 228;

const CHUNK_RAID0: u64 = 1 << 3;
const CHUNK_RAID1: u64 = 1 << 4;
const CHUNK_DUP: u64 = 1 << 5;
const CHUNK_RAID10: u64 = 1 << 6;
const CHUNK_RAID5: u64 = 1 << 7;
const CHUNK_RAID6: u64 = 1 << 8;
const CHUNK_RAID1C3: u64 = 1 << 9;
const CHUNK_RAID1C4: u64 = 1 << 10;

/// Incompatible features this module reads: mixed back references, a default subvolume,
/// mixed block groups, LZO and zstd (per extent), big metadata, extended inode refs,
/// RAID5/6 (per chunk), skinny metadata, no holes, a metadata UUID, RAID1C3/4 (per chunk),
/// zoned allocation and simple quotas. Others (extent tree v2, the RAID stripe tree) are
/// refused.
const INCOMPAT_KNOWN: u64 = 0x1
    | 0x2
    | 0x4
    | 0x8
    | 0x10
    | 0x20
    | 0x40
    | 0x80
    | 0x100
    | 0x200
    | 0x400
    | 0x800
    | 0x1000
    | 0x1_0000;

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Deepest tree accepted (btrfs's own limit is 8 levels).
const MAX_LEVEL: u8 = 8;
/// Tree blocks kept in memory.
const CACHE_NODES: usize = 512;
/// Tree blocks read for one search: a search that would read more meets a damaged tree.
const MAX_SEARCH_NODES: usize = 1 << 16;
/// Most chunks mapped.
const MAX_CHUNKS: usize = 1 << 16;
/// Most extents of one file held in memory.
const MAX_EXTENTS: usize = 1 << 20;
/// Largest extent decompressed (btrfs compresses 128 KiB at a time).
const MAX_COMPRESSED: u64 = 128 << 10;
/// Largest Zstandard window accepted (btrfs uses at most 128 KiB).
const MAX_ZSTD_WINDOW: u64 = 1 << 20;

/// A key of a tree item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    objectid: u64,
    kind: u8,
    offset: u64,
}

impl Key {
    fn new(objectid: u64, kind: u8, offset: u64) -> Key {
        Key {
            objectid,
            kind,
            offset,
        }
    }

    fn parse(b: &[u8]) -> Key {
        Key::new(le64(b, 0), b[8], le64(b, 9))
    }
}

/// A chunk: `length` logical bytes from `logical`, spread over its stripes (each a
/// device and where on it the stripe starts) as its profile says.
#[derive(Clone, Debug)]
struct Chunk {
    logical: u64,
    length: u64,
    /// The profile bits of the chunk's type (none for a single copy).
    profile: u64,
    stripe_len: u64,
    /// Copies of each stripe in a RAID10 chunk.
    sub_stripes: u64,
    stripes: Vec<(u64, u64)>,
}

/// Where a run of logical bytes lies: any one of `copies` (device, byte on it) holds it,
/// `len` bytes in a row; for a RAID5/6 chunk, its place in the stripe and the others', to
/// rebuild it from when its device is missing.
struct Run {
    copies: Vec<(u64, u64)>,
    len: u64,
    parity: Option<ParityRow>,
}

/// A RAID5/6 row of a run: the devices and offsets of its data stripes (in order), its P
/// and Q, and which data stripe the run is in.
struct ParityRow {
    data: Vec<(u64, u64)>,
    p: (u64, u64),
    q: Option<(u64, u64)>,
    index: usize,
}

impl Chunk {
    /// Where logical byte `o` of the chunk (below its length) lies.
    fn run(&self, o: u64) -> Run {
        let n = self.stripes.len() as u64;
        let sl = self.stripe_len;
        let rest = self.length - o;
        let striped = CHUNK_RAID0 | CHUNK_RAID10 | CHUNK_RAID5 | CHUNK_RAID6;
        if self.profile & striped == 0 || sl == 0 {
            // One copy per stripe, the whole chunk in each.
            return Run {
                copies: self
                    .stripes
                    .iter()
                    .map(|&(d, at)| (d, at.saturating_add(o)))
                    .collect(),
                len: rest,
                parity: None,
            };
        }
        let (nr, within) = (o / sl, o % sl);
        let len = (sl - within).min(rest);
        // Offsets from a damaged chunk item saturate; the read past the device then fails.
        let at = |(d, start): (u64, u64), row: u64| {
            (
                d,
                start
                    .saturating_add(row.saturating_mul(sl))
                    .saturating_add(within),
            )
        };
        if self.profile & CHUNK_RAID0 != 0 {
            let (index, row) = (nr % n, nr / n);
            return Run {
                copies: vec![at(self.stripes[index as usize], row)],
                len,
                parity: None,
            };
        }
        if self.profile & CHUNK_RAID10 != 0 {
            let sub = self.sub_stripes.clamp(1, n);
            let factor = (n / sub).max(1);
            let (first, row) = ((nr % factor) * sub, nr / factor);
            return Run {
                copies: (first..first + sub)
                    .map(|i| at(self.stripes[i as usize], row))
                    .collect(),
                len,
                parity: None,
            };
        }
        // RAID5/6: each row holds `data` stripes and the parity, rotating by row.
        let parities = if self.profile & CHUNK_RAID6 != 0 {
            2
        } else {
            1
        };
        let data = n - parities;
        let (row, index) = (nr / data, nr % data);
        let place = |i: u64| at(self.stripes[((row + i) % n) as usize], row);
        Run {
            copies: vec![place(index)],
            len,
            parity: Some(ParityRow {
                data: (0..data).map(place).collect(),
                p: place(data),
                q: (parities == 2).then(|| place(data + 1)),
                index: index as usize,
            }),
        }
    }
}

/// An inode: its file tree and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Ino {
    tree: u64,
    number: u64,
}

/// What an `INODE_ITEM` says.
#[derive(Clone)]
pub(crate) struct Inode {
    ino: Ino,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    rdev: u64,
    atime: Option<i64>,
    mtime: Option<i64>,
    ctime: Option<i64>,
    otime: Option<i64>,
}

/// A file tree's root block.
#[derive(Clone, Copy, Debug)]
struct TreeRoot {
    bytenr: u64,
    level: u8,
    root_dir: u64,
}

/// One `EXTENT_DATA` item, for file offsets `offset..offset + len`.
#[derive(Clone, Debug)]
enum Extent {
    /// Bytes kept in the item (compressed with `compression` if not 0).
    Inline {
        offset: u64,
        len: u64,
        compression: u8,
        data: Rc<Vec<u8>>,
    },
    /// A range of an extent on disk.
    Regular {
        offset: u64,
        len: u64,
        compression: u8,
        disk: u64,
        disk_len: u64,
        /// Where the range starts in the extent's uncompressed bytes.
        skip: u64,
    },
    /// A hole, or preallocated space never written: zeros.
    Zero { offset: u64, len: u64 },
}

impl Extent {
    fn range(&self) -> (u64, u64) {
        match self {
            Extent::Inline { offset, len, .. }
            | Extent::Regular { offset, len, .. }
            | Extent::Zero { offset, len } => (*offset, *len),
        }
    }
}

/// An open btrfs volume.
pub(crate) struct BtrfsVolume {
    /// The volume's devices by id: the one it was opened from and those given with it.
    devices: HashMap<u64, Box<dyn ReadAt>>,
    what: String,
    node_size: u64,
    csum_crc32c: bool,
    fsid: [u8; 16],
    devid: u64,
    chunks: Vec<Chunk>,
    root_tree: (u64, u8),
    roots: HashMap<u64, TreeRoot>,
    cache: HashMap<u64, Rc<Vec<u8>>>,
    label: Option<String>,
    warnings: Vec<String>,
    /// Entries of the directories read last.
    dirs: DirCache<Ino, DirEntry>,
}

/// One entry of a directory or attribute item: `LOCATION(key) | TRANSID(8) | DATA_LEN(2)
/// | NAME_LEN(2) | TYPE | NAME | DATA`; an attribute item may hold several in a row.
struct DirItem<'a> {
    location: Key,
    name: &'a [u8],
    data: &'a [u8],
    /// Bytes of the item the entry takes.
    len: usize,
}

impl<'a> DirItem<'a> {
    fn parse(b: &'a [u8]) -> Option<DirItem<'a>> {
        let head = b.get(..30)?;
        let (data_len, name_len) = (usize::from(le16(head, 25)), usize::from(le16(head, 27)));
        let len = 30 + name_len + data_len;
        Some(DirItem {
            location: Key::parse(head),
            name: b.get(30..30 + name_len)?,
            data: b.get(30 + name_len..len)?,
            len,
        })
    }
}

/// A regular file of a btrfs volume: its extents, read on demand.
pub(crate) struct BtrfsFile {
    path: String,
    extents: Vec<Extent>,
    size: u64,
    pos: u64,
    /// The last compressed extent decompressed: its disk address and bytes.
    unpacked: Option<(u64, Rc<Vec<u8>>)>,
}

/// A directory entry as stored.
struct DirEntry {
    name: Vec<u8>,
    target: Ino,
}

impl BtrfsVolume {
    /// Reads the superblock, the chunk tree and the root tree of the volume in `reader`.
    /// `others` are the volume's other devices (of a multi-device volume), in any order;
    /// devices of other volumes among them are left out.
    pub(crate) fn open(
        mut reader: Box<dyn ReadAt>,
        what: &str,
        others: Vec<Box<dyn ReadAt>>,
    ) -> Result<Self, FsError> {
        let mut sb = vec![0u8; 4096];
        if reader.len() < SUPERBLOCK + 4096 {
            return Err(FsError::corrupt(
                what,
                Some(SUPERBLOCK),
                "too short for a btrfs superblock",
            ));
        }
        read_exact(&mut *reader, what, SUPERBLOCK, &mut sb)?;
        let bad = |at: usize, detail: String| {
            FsError::corrupt(what, Some(SUPERBLOCK + at as u64), detail)
        };
        if &sb[0x40..0x48] != MAGIC {
            return Err(bad(0x40, "no btrfs magic".into()));
        }
        let csum_type = le16(&sb, 0xc4);
        if csum_type == 0 {
            let stored = le32(&sb, 0);
            if CRC32C.checksum(&sb[32..]) != stored {
                return Err(bad(0, "superblock checksum mismatch".into()));
            }
        }
        let incompat = le64(&sb, 0xbc);
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(FsError::unsupported(
                what,
                format!(
                    "btrfs incompatible features {:#x}",
                    incompat & !INCOMPAT_KNOWN
                ),
            ));
        }
        let node_size = u64::from(le32(&sb, 0x94));
        let sector_size = u64::from(le32(&sb, 0x90));
        if !node_size.is_power_of_two() || !(4096..=65536).contains(&node_size) {
            return Err(bad(0x94, format!("node size {node_size}")));
        }
        if !sector_size.is_power_of_two() || !(512..=65536).contains(&sector_size) {
            return Err(bad(0x90, format!("sector size {sector_size}")));
        }
        let label = &sb[0x12b..0x22b];
        let label = &label[..label.iter().position(|&b| b == 0).unwrap_or(label.len())];
        let mut warnings = Vec::new();
        if le64(&sb, 0x60) != 0 {
            warnings.push(format!(
                "{what}: the btrfs log holds fsync()ed changes not yet committed; they are not read"
            ));
        }
        let fsid: [u8; 16] = sb[0x20..0x30].try_into().expect("16 bytes");
        let devid = le64(&sb, 0xc9);
        let mut devices = HashMap::new();
        devices.insert(devid, reader);
        for mut other in others {
            if let Some((other_fsid, other_devid, _)) = identity(&mut *other)
                && other_fsid == fsid
            {
                devices.entry(other_devid).or_insert(other);
            }
        }
        let mut volume = BtrfsVolume {
            devices,
            what: what.to_owned(),
            node_size,
            csum_crc32c: csum_type == 0,
            fsid,
            devid,
            chunks: Vec::new(),
            root_tree: (le64(&sb, 0x50), sb[0xc6]),
            roots: HashMap::new(),
            cache: HashMap::new(),
            label: (!label.is_empty()).then(|| String::from_utf8_lossy(label).into_owned()),
            warnings,
            dirs: DirCache::new(),
        };
        // The system chunks, to find the chunk tree.
        let size = le32(&sb, 0xa0) as usize;
        if size > 2048 {
            return Err(bad(0xa0, format!("system chunk array of {size} bytes")));
        }
        let array = &sb[0x32b..0x32b + size];
        let mut pos = 0;
        while pos < array.len() {
            let key = array
                .get(pos..pos + KEY)
                .map(Key::parse)
                .ok_or_else(|| bad(0x32b + pos, "system chunk array cut short".into()))?;
            if key.kind != CHUNK_ITEM {
                return Err(bad(
                    0x32b + pos,
                    format!("item of type {} in the system chunk array", key.kind),
                ));
            }
            let item = &array[pos + KEY..];
            let len = volume
                .chunk(key.offset, item)
                .ok_or_else(|| bad(0x32b + pos, "system chunk cut short".into()))?;
            pos += KEY + len;
        }
        // All chunks, from the chunk tree.
        let chunk_root = (le64(&sb, 0x58), sb[0xc7]);
        let lo = Key::new(FIRST_CHUNK_TREE, CHUNK_ITEM, 0);
        let hi = Key::new(FIRST_CHUNK_TREE, CHUNK_ITEM, u64::MAX);
        let items = volume.search(chunk_root, lo, hi)?;
        volume.chunks.clear();
        for (key, item) in items {
            if volume.chunks.len() >= MAX_CHUNKS {
                return Err(FsError::limit(
                    what,
                    format!("more than {MAX_CHUNKS} chunks"),
                ));
            }
            if volume.chunk(key.offset, &item).is_none() {
                return Err(volume.corrupt(
                    None,
                    format!("chunk item at logical {} cut short", key.offset),
                ));
            }
        }
        let root = volume.tree_root(FS_TREE)?;
        let inode = volume.inode(Ino {
            tree: FS_TREE,
            number: root.root_dir,
        })?;
        if inode.mode & S_IFMT != S_IFDIR {
            return Err(volume.corrupt(None, "the top-level directory is not a directory".into()));
        }
        Ok(volume)
    }

    pub(crate) fn kind(&self) -> &'static str {
        "btrfs"
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
        let (name, inode) = self.resolve(path)?;
        self.entry(name, &inode)
    }

    pub(crate) fn list(&mut self, path: &str) -> Result<Vec<FsEntry>, FsError> {
        let (_, dir) = self.resolve(path)?;
        if dir.mode & S_IFMT != S_IFDIR {
            return Err(FsError::NotADirectory {
                what: self.what.clone(),
                path: path.to_owned(),
            });
        }
        let mut entries = Vec::new();
        for entry in self.dir_entries(dir.ino)?.iter() {
            let inode = self.inode(entry.target)?;
            let name = String::from_utf8_lossy(&entry.name).into_owned();
            entries.push(self.entry(name, &inode)?);
        }
        Ok(entries)
    }

    pub(crate) fn extras(&mut self, path: &str) -> Result<Extras, FsError> {
        let (_, inode) = self.resolve(path)?;
        let mut extras = Extras::default();
        if matches!(inode.mode & S_IFMT, 0o020_000 | 0o060_000) {
            // The kernel's own dev_t: 12 bits of major above 20 bits of minor.
            let dev = inode.rdev;
            let (major, minor) = ((dev >> 20) as u32 & 0xfff, dev as u32 & 0xf_ffff);
            extras.device = Some((major, minor));
        }
        let lo = Key::new(inode.ino.number, XATTR_ITEM, 0);
        let hi = Key::new(inode.ino.number, XATTR_ITEM, u64::MAX);
        let root = self.tree_root(inode.ino.tree)?;
        for (_, item) in self.search((root.bytenr, root.level), lo, hi)? {
            let mut rest = item.as_slice();
            while !rest.is_empty() {
                let Some(entry) = DirItem::parse(rest) else {
                    extras
                        .warnings
                        .push(format!("inode {}: attribute cut short", inode.ino.number));
                    break;
                };
                extras.xattrs.push((
                    String::from_utf8_lossy(entry.name).into_owned(),
                    entry.data.to_vec(),
                ));
                rest = &rest[entry.len..];
            }
        }
        Ok(extras)
    }

    pub(crate) fn open_file(&mut self, path: &str) -> Result<BtrfsFile, FsError> {
        let (_, inode) = self.resolve(path)?;
        if inode.mode & S_IFMT != S_IFREG {
            return Err(FsError::NotAFile {
                what: self.what.clone(),
                path: path.to_owned(),
            });
        }
        let extents = self.extents(inode.ino, path)?;
        Ok(BtrfsFile {
            path: path.to_owned(),
            extents,
            size: inode.size,
            pos: 0,
            unpacked: None,
        })
    }

    fn resolve(&mut self, path: &str) -> Result<(String, Inode), FsError> {
        path::resolve(self, path)
    }

    fn entry(&mut self, name: String, inode: &Inode) -> Result<FsEntry, FsError> {
        let kind = match inode.mode & S_IFMT {
            S_IFDIR => FsKind::Directory,
            S_IFREG => FsKind::File,
            S_IFLNK => {
                FsKind::Symlink(String::from_utf8_lossy(&self.link_target(inode)?).into_owned())
            }
            _ => FsKind::Other,
        };
        let size = if inode.mode & S_IFMT == S_IFDIR {
            0
        } else {
            inode.size
        };
        Ok(FsEntry {
            name,
            kind,
            size,
            mode: Some(inode.mode & 0o177_777),
            uid: Some(inode.uid),
            gid: Some(inode.gid),
            mtime_ns: inode.mtime,
            atime_ns: inode.atime,
            ctime_ns: inode.ctime,
            btime_ns: inode.otime,
        })
    }

    /// Parses a chunk item for logical address `logical` and records it; the item's
    /// length, or `None` if it is cut short or its stripes do not fit its profile.
    fn chunk(&mut self, logical: u64, item: &[u8]) -> Option<usize> {
        if item.len() < 0x30 {
            return None;
        }
        let length = le64(item, 0);
        let stripe_len = le64(item, 0x10);
        let kind = le64(item, 0x18);
        let stripes = usize::from(le16(item, 0x2c));
        let sub_stripes = u64::from(le16(item, 0x2e));
        let len = 0x30 + stripes * 32;
        if item.len() < len || stripes == 0 {
            return None;
        }
        let profile = kind
            & (CHUNK_RAID0
                | CHUNK_RAID1
                | CHUNK_DUP
                | CHUNK_RAID10
                | CHUNK_RAID5
                | CHUNK_RAID6
                | CHUNK_RAID1C3
                | CHUNK_RAID1C4);
        let striped = CHUNK_RAID0 | CHUNK_RAID10 | CHUNK_RAID5 | CHUNK_RAID6;
        let parities = match profile {
            CHUNK_RAID5 => 1,
            CHUNK_RAID6 => 2,
            _ => 0,
        };
        if profile & striped != 0
            && (!stripe_len.is_power_of_two() || stripes <= parities || stripe_len > length)
        {
            return None;
        }
        let chunk = Chunk {
            logical,
            length,
            profile,
            stripe_len,
            sub_stripes,
            stripes: (0..stripes)
                .map(|i| (le64(item, 0x30 + i * 32), le64(item, 0x38 + i * 32)))
                .collect(),
        };
        let at = self.chunks.partition_point(|c| c.logical < logical);
        if self.chunks.get(at).is_some_and(|c| c.logical == logical) {
            self.chunks[at] = chunk;
        } else {
            self.chunks.insert(at, chunk);
        }
        Some(len)
    }

    /// Reads `buf.len()` bytes at logical address `logical`, run by run, each from the
    /// first of its copies whose device is there; a RAID5/6 stripe whose device is
    /// missing is rebuilt from its row's others and parity.
    fn read_logical(&mut self, logical: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let mut done = 0usize;
        while done < <[u8]>::len(buf) {
            let at = logical + done as u64;
            let i = self.chunks.partition_point(|c| c.logical <= at);
            let chunk = i
                .checked_sub(1)
                .map(|i| &self.chunks[i])
                .filter(|c| at - c.logical < c.length)
                .ok_or_else(|| {
                    self.corrupt(None, format!("logical address {at} is in no chunk"))
                })?;
            let run = chunk.run(at - chunk.logical);
            let n = run.len.min((<[u8]>::len(buf) - done) as u64) as usize;
            let out = &mut buf[done..done + n];
            match run
                .copies
                .iter()
                .find(|(dev, _)| self.devices.contains_key(dev))
            {
                Some(&(dev, offset)) => self.read_device(dev, offset, out, at)?,
                None => match run.parity {
                    Some(row) => self.rebuild(&row, out, at)?,
                    None => {
                        let devices: Vec<String> =
                            run.copies.iter().map(|(d, _)| d.to_string()).collect();
                        return Err(FsError::unsupported(
                            &self.what,
                            format!(
                                "logical address {at} is on device {} of the volume, which is \
                                 not among the disks (this is device {})",
                                devices.join(" or "),
                                self.devid
                            ),
                        ));
                    }
                },
            }
            done += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` of device `dev`, which is there, for logical
    /// address `logical`.
    fn read_device(
        &mut self,
        dev: u64,
        offset: u64,
        buf: &mut [u8],
        logical: u64,
    ) -> Result<(), FsError> {
        let reader = self.devices.get_mut(&dev).expect("a device that is there");
        if offset
            .checked_add(<[u8]>::len(buf) as u64)
            .is_none_or(|e| e > reader.len())
        {
            return Err(self.corrupt(
                None,
                format!("logical address {logical} maps past the end of device {dev}"),
            ));
        }
        read_exact(&mut **reader, &self.what, offset, buf)
    }

    /// Rebuilds the data stripe `row.index` of a RAID5/6 row, whose device is missing:
    /// `buf.len()` bytes from the same place in each stripe of the row.
    fn rebuild(&mut self, row: &ParityRow, buf: &mut [u8], logical: u64) -> Result<(), FsError> {
        let len = <[u8]>::len(buf);
        let read = |volume: &mut Self, (dev, offset): (u64, u64)| {
            if !volume.devices.contains_key(&dev) {
                return Ok(None);
            }
            let mut bytes = vec![0u8; len];
            volume.read_device(dev, offset, &mut bytes, logical)?;
            Ok::<_, FsError>(Some(bytes))
        };
        // Q counts the data stripes in their order.
        let mut stripes = Vec::with_capacity(row.data.len());
        for (power, &place) in row.data.iter().enumerate() {
            stripes.push((power, read(self, place)?));
        }
        let p = read(self, row.p)?;
        let q = match row.q {
            Some(place) => read(self, place)?,
            None => None,
        };
        if crate::md::recover(&stripes, row.index, p.as_deref(), q.as_deref(), buf) {
            Ok(())
        } else {
            Err(FsError::unsupported(
                &self.what,
                format!(
                    "logical address {logical} is in a RAID5/6 row that misses more devices \
                     than its parity makes up for (this is device {})",
                    self.devid
                ),
            ))
        }
    }

    /// The tree block at `logical`, checked.
    fn node(&mut self, logical: u64, level: u8) -> Result<Rc<Vec<u8>>, FsError> {
        if let Some(node) = self.cache.get(&logical) {
            return Ok(Rc::clone(node));
        }
        let mut buf = vec![0u8; self.node_size as usize];
        self.read_logical(logical, &mut buf)?;
        let bad = |detail: String| {
            FsError::corrupt(
                &self.what,
                None,
                format!("tree block at logical {logical}: {detail}"),
            )
        };
        if self.csum_crc32c && CRC32C.checksum(&buf[32..]) != le32(&buf, 0) {
            return Err(bad("checksum mismatch".into()));
        }
        if buf[0x20..0x30] != self.fsid && le64(&buf, 0x30) != logical {
            return Err(bad("not a block of this volume".into()));
        }
        if le64(&buf, 0x30) != logical {
            return Err(bad(format!("says it is at {}", le64(&buf, 0x30))));
        }
        if buf[0x64] != level {
            return Err(bad(format!(
                "level {} where {level} was expected",
                buf[0x64]
            )));
        }
        let count = le32(&buf, 0x60) as usize;
        let item = if level == 0 { 25 } else { 33 };
        if HEADER + count * item > buf.len() {
            return Err(bad(format!("{count} items do not fit")));
        }
        if level == 0 {
            for i in 0..count {
                let at = HEADER + i * 25;
                let (off, size) = (le32(&buf, at + 17) as usize, le32(&buf, at + 21) as usize);
                if HEADER + off + size > buf.len() {
                    return Err(bad(format!("item {i} lies past the block")));
                }
            }
        }
        if self.cache.len() >= CACHE_NODES {
            self.cache.clear();
        }
        let node = Rc::new(buf);
        self.cache.insert(logical, Rc::clone(&node));
        Ok(node)
    }

    /// The items of the tree at `root` with keys in `lo..=hi`, in key order.
    fn search(
        &mut self,
        root: (u64, u8),
        lo: Key,
        hi: Key,
    ) -> Result<Vec<(Key, Vec<u8>)>, FsError> {
        if root.1 > MAX_LEVEL {
            return Err(self.corrupt(None, format!("tree of level {}", root.1)));
        }
        let mut out = Vec::new();
        let mut budget = MAX_SEARCH_NODES;
        self.visit(root.0, root.1, lo, hi, &mut out, &mut budget)?;
        Ok(out)
    }

    fn visit(
        &mut self,
        logical: u64,
        level: u8,
        lo: Key,
        hi: Key,
        out: &mut Vec<(Key, Vec<u8>)>,
        budget: &mut usize,
    ) -> Result<(), FsError> {
        if *budget == 0 {
            return Err(FsError::limit(
                &self.what,
                format!("a tree search read more than {MAX_SEARCH_NODES} blocks"),
            ));
        }
        *budget -= 1;
        let node = self.node(logical, level)?;
        let count = le32(&node, 0x60) as usize;
        if level == 0 {
            for i in 0..count {
                let at = HEADER + i * 25;
                let key = Key::parse(&node[at..]);
                if key < lo {
                    continue;
                }
                if key > hi {
                    break;
                }
                if out.len() >= MAX_EXTENTS {
                    return Err(FsError::limit(
                        &self.what,
                        format!("a tree search found more than {MAX_EXTENTS} items"),
                    ));
                }
                let (off, size) = (le32(&node, at + 17) as usize, le32(&node, at + 21) as usize);
                out.push((key, node[HEADER + off..HEADER + off + size].to_vec()));
            }
            return Ok(());
        }
        for i in 0..count {
            let at = HEADER + i * 33;
            let key = Key::parse(&node[at..]);
            if key > hi {
                break;
            }
            // The child holds keys from its own up to the next child's.
            let next = (i + 1 < count).then(|| Key::parse(&node[at + 33..]));
            if next.is_some_and(|n| n <= lo) {
                continue;
            }
            let child = le64(&node, at + KEY);
            self.visit(child, level - 1, lo, hi, out, budget)?;
        }
        Ok(())
    }

    /// The root block of file tree `tree`, from its `ROOT_ITEM`.
    fn tree_root(&mut self, tree: u64) -> Result<TreeRoot, FsError> {
        if let Some(root) = self.roots.get(&tree) {
            return Ok(*root);
        }
        let items = self.search(
            self.root_tree,
            Key::new(tree, ROOT_ITEM, 0),
            Key::new(tree, ROOT_ITEM, u64::MAX),
        )?;
        let (_, item) = items
            .last()
            .ok_or_else(|| self.corrupt(None, format!("no root item for tree {tree}")))?;
        if item.len() < 239 {
            return Err(self.corrupt(None, format!("root item of tree {tree} cut short")));
        }
        let root = TreeRoot {
            bytenr: le64(item, 176),
            level: item[238],
            root_dir: le64(item, 168),
        };
        if root.level > MAX_LEVEL {
            return Err(self.corrupt(None, format!("tree {tree} of level {}", root.level)));
        }
        self.roots.insert(tree, root);
        Ok(root)
    }

    fn inode(&mut self, ino: Ino) -> Result<Inode, FsError> {
        let root = self.tree_root(ino.tree)?;
        let key = Key::new(ino.number, INODE_ITEM, 0);
        let items = self.search((root.bytenr, root.level), key, key)?;
        let (_, b) = items.first().ok_or_else(|| {
            self.corrupt(
                None,
                format!("tree {}: inode {} has no inode item", ino.tree, ino.number),
            )
        })?;
        if b.len() < 160 {
            return Err(self.corrupt(
                None,
                format!("tree {}: inode {} item cut short", ino.tree, ino.number),
            ));
        }
        Ok(Inode {
            ino,
            size: le64(b, 16),
            uid: le32(b, 44),
            gid: le32(b, 48),
            mode: le32(b, 52),
            rdev: le64(b, 56),
            atime: time(b, 112),
            ctime: time(b, 124),
            mtime: time(b, 136),
            otime: time(b, 148),
        })
    }

    /// The entries of directory `dir` in the order they were made (`DIR_INDEX` items),
    /// read once and then kept for a while (see [`DirCache`]); an entry for a subvolume
    /// leads to its tree's top directory.
    fn dir_entries(&mut self, dir: Ino) -> Result<Rc<Vec<DirEntry>>, FsError> {
        if let Some(entries) = self.dirs.get(&dir) {
            return Ok(entries);
        }
        let entries = self.read_dir_entries(dir)?;
        Ok(self.dirs.insert(dir, entries))
    }

    fn read_dir_entries(&mut self, dir: Ino) -> Result<Vec<DirEntry>, FsError> {
        let root = self.tree_root(dir.tree)?;
        let items = self.search(
            (root.bytenr, root.level),
            Key::new(dir.number, DIR_INDEX, 0),
            Key::new(dir.number, DIR_INDEX, u64::MAX),
        )?;
        if items.len() > MAX_DIR_ENTRIES {
            return Err(FsError::limit(
                &self.what,
                format!(
                    "directory inode {} has more than {MAX_DIR_ENTRIES} entries",
                    dir.number
                ),
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        let mut bytes = 0u64;
        for (key, item) in items {
            let Some(DirItem { location, name, .. }) =
                DirItem::parse(&item).filter(|e| !e.name.is_empty())
            else {
                return Err(self.corrupt(
                    None,
                    format!(
                        "directory inode {}: entry {} cut short",
                        dir.number, key.offset
                    ),
                ));
            };
            bytes += name.len() as u64;
            if bytes > MAX_DIR_BYTES {
                return Err(FsError::limit(
                    &self.what,
                    format!("directory inode {} is too large", dir.number),
                ));
            }
            let target = match location.kind {
                INODE_ITEM => Ino {
                    tree: dir.tree,
                    number: location.objectid,
                },
                ROOT_ITEM => Ino {
                    tree: location.objectid,
                    number: self.tree_root(location.objectid)?.root_dir,
                },
                other => {
                    return Err(self.corrupt(
                        None,
                        format!(
                            "directory inode {}: entry points at an item of type {other}",
                            dir.number
                        ),
                    ));
                }
            };
            if name.contains(&b'/') || name == b"." || name == b".." {
                return Err(self.corrupt(
                    None,
                    format!(
                        "directory inode {}: entry named {:?}",
                        dir.number,
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            out.push(DirEntry {
                name: name.to_vec(),
                target,
            });
        }
        Ok(out)
    }

    /// The `EXTENT_DATA` items of a file, in file order, checked not to overlap.
    fn extents(&mut self, ino: Ino, path: &str) -> Result<Vec<Extent>, FsError> {
        let root = self.tree_root(ino.tree)?;
        let items = self.search(
            (root.bytenr, root.level),
            Key::new(ino.number, EXTENT_DATA, 0),
            Key::new(ino.number, EXTENT_DATA, u64::MAX),
        )?;
        let mut out = Vec::with_capacity(items.len());
        let mut end = 0u64;
        for (key, b) in items {
            let bad = |detail: &str| {
                self.corrupt(
                    None,
                    format!("{path:?}: extent at file offset {}: {detail}", key.offset),
                )
            };
            if b.len() < 21 {
                return Err(bad("cut short"));
            }
            let (compression, encryption, kind) = (b[16], b[17], b[20]);
            if encryption != 0 || le16(&b, 18) != 0 {
                return Err(FsError::unsupported(
                    &self.what,
                    format!("{path:?} is encrypted"),
                ));
            }
            let extent = match kind {
                0 => Extent::Inline {
                    offset: key.offset,
                    len: le64(&b, 8),
                    compression,
                    data: Rc::new(b[21..].to_vec()),
                },
                1 | 2 => {
                    if b.len() < 53 {
                        return Err(bad("cut short"));
                    }
                    let (disk, disk_len, skip, len) =
                        (le64(&b, 21), le64(&b, 29), le64(&b, 37), le64(&b, 45));
                    if disk == 0 || kind == 2 {
                        Extent::Zero {
                            offset: key.offset,
                            len,
                        }
                    } else {
                        Extent::Regular {
                            offset: key.offset,
                            len,
                            compression,
                            disk,
                            disk_len,
                            skip,
                        }
                    }
                }
                other => return Err(bad(&format!("type {other}"))),
            };
            let (offset, len) = extent.range();
            if offset < end || offset.checked_add(len).is_none_or(|e| e > 1 << 62) {
                return Err(bad("overlaps the one before or ends past the largest file"));
            }
            end = offset + len;
            out.push(extent);
        }
        Ok(out)
    }

    /// A symlink's target: the inline bytes of its one extent.
    fn link_target(&mut self, inode: &Inode) -> Result<Vec<u8>, FsError> {
        if inode.size == 0 || inode.size >= MAX_PATH_BYTES as u64 {
            return Err(self.corrupt(
                None,
                format!(
                    "symlink inode {} claims a target of {} bytes",
                    inode.ino.number, inode.size
                ),
            ));
        }
        let extents = self.extents(inode.ino, "symlink")?;
        let mut file = BtrfsFile {
            path: String::new(),
            extents,
            size: inode.size,
            pos: 0,
            unpacked: None,
        };
        let mut target = vec![0u8; inode.size as usize];
        let mut done = 0;
        while done < target.len() {
            let n = file.read(self, &mut target[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(target)
    }

    fn corrupt(&self, offset: Option<u64>, detail: String) -> FsError {
        FsError::corrupt(&self.what, offset, detail)
    }
}

impl Walk for BtrfsVolume {
    type Node = Inode;

    fn what(&self) -> &str {
        &self.what
    }

    fn root(&mut self) -> Result<Inode, FsError> {
        let number = self.tree_root(FS_TREE)?.root_dir;
        self.inode(Ino {
            tree: FS_TREE,
            number,
        })
    }

    fn step(&self, node: &Inode) -> Step {
        match node.mode & S_IFMT {
            S_IFDIR => Step::Directory,
            S_IFLNK => Step::Symlink,
            _ => Step::Other,
        }
    }

    fn child(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<Inode>, FsError> {
        let found = self
            .dir_entries(dir.ino)?
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.target);
        found.map(|ino| self.inode(ino)).transpose()
    }

    fn target(&mut self, link: &Inode) -> Result<Vec<u8>, FsError> {
        self.link_target(link)
    }
}

impl BtrfsFile {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    pub(crate) fn read(&mut self, vol: &mut BtrfsVolume, buf: &mut [u8]) -> Result<usize, FsError> {
        if self.pos >= self.size || <[u8]>::len(buf) == 0 {
            return Ok(0);
        }
        let pos = self.pos;
        let want = (<[u8]>::len(buf) as u64).min(self.size - pos);
        let i = self.extents.partition_point(|e| {
            let (o, l) = e.range();
            o + l <= pos
        });
        let n = match self.extents.get(i).cloned() {
            Some(e) if e.range().0 <= pos => {
                let (offset, len) = e.range();
                let n = want.min(offset + len - pos) as usize;
                let inside = pos - offset;
                match e {
                    Extent::Zero { .. } => buf[..n].fill(0),
                    Extent::Inline {
                        compression, data, ..
                    } => {
                        let bytes = if compression == 0 {
                            data
                        } else {
                            Rc::new(self.unpack(vol, compression, &data, len)?)
                        };
                        copy_or_zero(&bytes, inside as usize, &mut buf[..n]);
                    }
                    Extent::Regular {
                        compression: 0,
                        disk,
                        skip,
                        ..
                    } => {
                        let at = skip
                            .checked_add(inside)
                            .and_then(|o| disk.checked_add(o))
                            .ok_or_else(|| {
                                vol.corrupt(
                                    None,
                                    format!("{:?}: extent address overflows", self.path),
                                )
                            })?;
                        vol.read_logical(at, &mut buf[..n])?;
                    }
                    Extent::Regular {
                        compression,
                        disk,
                        disk_len,
                        skip,
                        ..
                    } => {
                        let bytes = match &self.unpacked {
                            Some((at, bytes)) if *at == disk => Rc::clone(bytes),
                            _ => {
                                if disk_len > MAX_COMPRESSED {
                                    return Err(vol.corrupt(
                                        None,
                                        format!(
                                            "{:?}: compressed extent of {disk_len} bytes",
                                            self.path
                                        ),
                                    ));
                                }
                                let mut packed = vec![0u8; disk_len as usize];
                                vol.read_logical(disk, &mut packed)?;
                                let bytes = Rc::new(self.unpack(
                                    vol,
                                    compression,
                                    &packed,
                                    MAX_COMPRESSED,
                                )?);
                                self.unpacked = Some((disk, Rc::clone(&bytes)));
                                bytes
                            }
                        };
                        let from = skip.saturating_add(inside).try_into().unwrap_or(usize::MAX);
                        copy_or_zero(&bytes, from, &mut buf[..n]);
                    }
                }
                n
            }
            next => {
                // A hole (`no_holes` volumes keep no item for one).
                let gap_end = next.map_or(self.size, |e| e.range().0);
                let n = want.min(gap_end - pos) as usize;
                buf[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }

    /// Decompresses an extent's bytes (zlib or zstd), at most `limit` bytes of output.
    fn unpack(
        &self,
        vol: &BtrfsVolume,
        compression: u8,
        packed: &[u8],
        limit: u64,
    ) -> Result<Vec<u8>, FsError> {
        let limit = limit.min(MAX_COMPRESSED) as usize;
        let failed = |why: String| {
            FsError::corrupt(
                &vol.what,
                None,
                format!("{:?}: compressed extent: {why}", self.path),
            )
        };
        match compression {
            1 => miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(packed, limit)
                .map_err(|e| failed(format!("zlib: {:?}", e.status))),
            3 => {
                let mut frames = ruzstd::decoding::FrameDecoder::new();
                frames.set_max_window_size(MAX_ZSTD_WINDOW);
                let mut input = packed;
                let decoder =
                    ruzstd::decoding::StreamingDecoder::new_with_decoder(&mut input, &mut frames)
                        .map_err(|e| failed(format!("zstd: {e}")))?;
                let mut out = Vec::new();
                decoder
                    .take(limit as u64)
                    .read_to_end(&mut out)
                    .map_err(|e| failed(format!("zstd: {e}")))?;
                Ok(out)
            }
            2 => Err(FsError::unsupported(
                &vol.what,
                format!("{:?} is compressed with LZO, which is not read", self.path),
            )),
            other => Err(failed(format!("compression type {other}"))),
        }
    }
}

/// Copies `src[from..]` into `dst`, zeros where `src` ends (an extent's uncompressed bytes
/// may be fewer than the file range says).
fn copy_or_zero(src: &[u8], from: usize, dst: &mut [u8]) {
    let avail = src.get(from..).unwrap_or(&[]);
    let n = avail.len().min(<[u8]>::len(dst));
    dst[..n].copy_from_slice(&avail[..n]);
    dst[n..].fill(0);
}

/// A timestamp: seconds (i64) and nanoseconds (u32).
fn time(b: &[u8], at: usize) -> Option<i64> {
    let secs = le64(b, at) as i64;
    let nanos = i64::from(le32(b, at + 8));
    if nanos >= 1_000_000_000 {
        return None;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The volume UUID, device id and device count the btrfs superblock of `reader` gives,
/// if it has one.
pub(crate) fn identity(reader: &mut dyn ReadAt) -> Option<([u8; 16], u64, u64)> {
    let mut sb = vec![0u8; 4096];
    if reader.len() < SUPERBLOCK + 4096 || reader.read_exact_at(SUPERBLOCK, &mut sb).is_err() {
        return None;
    }
    // The checksum is checked when it is CRC-32C; other types are not checked here, as
    // `open` does not check them either.
    let crc_ok = le16(&sb, 0xc4) != 0 || CRC32C.checksum(&sb[32..]) == le32(&sb, 0);
    if &sb[0x40..0x48] != MAGIC || !crc_ok {
        return None;
    }
    Some((
        sb[0x20..0x30].try_into().expect("16 bytes"),
        le64(&sb, 0xc9),
        le64(&sb, 0x88),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_object_type_and_offset() {
        let a = Key::new(256, INODE_ITEM, 0);
        let b = Key::new(256, DIR_INDEX, 2);
        let c = Key::new(257, INODE_ITEM, 0);
        assert!(a < b && b < c);
        let mut raw = 256u64.to_le_bytes().to_vec();
        raw.push(DIR_INDEX);
        raw.extend_from_slice(&2u64.to_le_bytes());
        assert_eq!(Key::parse(&raw), b);
    }

    #[test]
    fn directory_items_parse_in_a_row_and_refuse_cuts() {
        let mut item = Vec::new();
        for (name, data) in [(&b"user.a"[..], &b"1"[..]), (b"user.bb", b"22")] {
            // Location key and transaction id.
            item.extend_from_slice(&[0; 17 + 8]);
            item.extend_from_slice(&(data.len() as u16).to_le_bytes());
            item.extend_from_slice(&(name.len() as u16).to_le_bytes());
            item.push(0);
            item.extend_from_slice(name);
            item.extend_from_slice(data);
        }
        let first = DirItem::parse(&item).unwrap();
        assert_eq!((first.name, first.data), (&b"user.a"[..], &b"1"[..]));
        let second = DirItem::parse(&item[first.len..]).unwrap();
        assert_eq!((second.name, second.data), (&b"user.bb"[..], &b"22"[..]));
        assert_eq!(first.len + second.len, item.len());
        assert!(DirItem::parse(&item[..item.len() - 1][first.len..]).is_none());
        assert!(DirItem::parse(&item[..29]).is_none());
    }

    #[test]
    fn extent_bytes_past_their_source_read_as_zeros() {
        let mut out = [9u8; 6];
        copy_or_zero(b"abcd", 2, &mut out);
        assert_eq!(&out, b"cd\0\0\0\0");
        copy_or_zero(b"abcd", usize::MAX, &mut out);
        assert_eq!(out, [0; 6]);
    }

    #[test]
    fn times_are_checked() {
        let mut b = (-2i64).to_le_bytes().to_vec();
        b.extend_from_slice(&7u32.to_le_bytes());
        assert_eq!(time(&b, 0), Some(-2_000_000_000 + 7));
        b[8..12].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert_eq!(time(&b, 0), None);
        let mut huge = i64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(time(&huge, 0), None);
    }
}
