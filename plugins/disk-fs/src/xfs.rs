//! XFS volumes (version 4 and version 5, the default of RHEL and its kin since 7), read
//! by this module directly. All on-disk values are big-endian.
//!
//! A volume is cut into allocation groups (AGs) of `agblocks` blocks each; the superblock
//! is the first sector of AG 0. Block and inode numbers carry the AG in their high bits, so
//! turning one into a byte offset needs the superblock's logarithms:
//!
//! ```text
//! block number: AG(rest) | AG BLOCK(agblklog bits)
//! inode number: AG(rest) | AG BLOCK(agblklog bits) | INODE IN BLOCK(inopblog bits)
//! byte offset:  (AG × agblocks + AG BLOCK) × blocksize (+ INODE IN BLOCK × inodesize)
//!
//! superblock: 0 MAGIC "XFSB" | 4 BLOCKSIZE(u32) | 8 DBLOCKS(u64) | 56 ROOTINO(u64)
//!   84 AGBLOCKS(u32) | 88 AGCOUNT(u32) | 100 VERSIONNUM(u16) | 104 INODESIZE(u16)
//!   108 FNAME(12) | 120 BLOCKLOG | 123 INOPBLOG | 124 AGBLKLOG | 192 DIRBLKLOG
//!   200 FEATURES2(u32) | 216 FEATURES_INCOMPAT(u32, v5)
//! inode: 0 "IN" | 2 MODE(u16) | 4 VERSION | 5 FORMAT | 8 UID | 12 GID | 16 NLINK
//!   24 BIG_NEXTENTS(u64, nrext64) | 32 ATIME | 40 MTIME | 48 CTIME (each sec,nsec or a
//!   bigtime u64) | 56 SIZE(u64) | 76 NEXTENTS(u32) | 80 ANEXTENTS(u16) | 82 FORKOFF
//!   83 AFORMAT | 90 FLAGS(u16) | v3: 100 CRC(le) | 120 FLAGS2(u64) | 144 CRTIME
//!   152 INO(u64) | 176 literal area (v1/v2: at 100): data fork, then the attribute fork
//!   at FORKOFF × 8
//! ```
//!
//! A fork is local (its bytes in the literal area: short directories, short symlinks, few
//! attributes), a list of extents (16-byte records packing an unwritten flag, a file
//! offset, a block number and a length), or the root of a B+tree of extents. A directory's
//! entries lie in its data blocks, the part of its address space below 32 GiB; the hash
//! index above is not needed to list or to look up by reading every entry.
//!
//! What is not read: files on a realtime device (refused: their data is not in the
//! volume), and the log. A volume unmounted cleanly, or frozen before its disk was
//! captured, has nothing in its log; otherwise the latest changes may be missing, as on an
//! ext volume whose journal is not replayed. Checksums of inodes and directory blocks (v5)
//! are checked; those of the other structures are not.

use std::rc::Rc;

use crc::{CRC_32_ISCSI, Crc};
use tessera_disk_image::ReadAt;

use crate::dir_cache::DirCache;
use crate::ext4::{MAX_DIR_BYTES, MAX_DIR_ENTRIES};
use crate::path::{self, MAX_PATH_BYTES, Step, Walk};
use crate::{Extras, FsEntry, FsError, FsKind, read_exact};

/// The superblock's first bytes.
pub(crate) const MAGIC: &[u8; 4] = b"XFSB";

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

const VERSION_DIRV2: u16 = 0x2000;
const VERSION_MOREBITS: u16 = 0x8000;
const FEATURES2_FTYPE: u32 = 0x200;
const INCOMPAT_FTYPE: u32 = 0x1;
/// Incompatible features that change nothing this module reads: sparse inode chunks,
/// a metadata UUID, big timestamps (read per inode), a repair pending, 64-bit extent
/// counters (read per inode), atomic file exchange (a log format) and parent pointers
/// (attributes, skipped).
const INCOMPAT_KNOWN: u32 = INCOMPAT_FTYPE | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80;
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;

const FORMAT_DEV: u8 = 0;
const FORMAT_LOCAL: u8 = 1;
const FORMAT_EXTENTS: u8 = 2;
const FORMAT_BTREE: u8 = 3;

const DIFLAG_REALTIME: u16 = 0x1;
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const DIFLAG2_NREXT64: u64 = 1 << 4;

const S_IFMT: u16 = 0o170_000;
const S_IFDIR: u16 = 0o040_000;
const S_IFREG: u16 = 0o100_000;
const S_IFLNK: u16 = 0o120_000;

/// Directory data lives below this byte offset of the directory's address space.
const DIR_LEAF_OFFSET: u64 = 32 << 30;
/// Longest symlink target XFS stores.
const MAX_SYMLINK: u64 = 1024;
/// Most extents of one fork read into memory (16 MiB of them).
const MAX_EXTENTS: usize = 1 << 20;
/// Deepest extent B+tree walked (XFS's own trees stay far below).
const MAX_BTREE_LEVELS: u16 = 10;
/// Blocks of one extent tree read (a tree of [`MAX_EXTENTS`] has a few thousand); a
/// tree whose nodes point at the same children again ends here.
const MAX_BTREE_BLOCKS: usize = 1 << 14;
/// Largest attribute value read.
const MAX_XATTR_VALUE: u64 = 1 << 16;
/// Attribute leaf blocks read for one inode.
const MAX_ATTR_BLOCKS: usize = 4096;

/// What the superblock says about the layout.
#[derive(Clone, Debug)]
struct Geometry {
    block_size: u64,
    ag_blocks: u64,
    ag_count: u64,
    ag_blk_log: u32,
    inode_size: u64,
    inop_log: u32,
    root: u64,
    dir_block: u64,
    v5: bool,
    ftype: bool,
}

/// An open XFS volume.
pub(crate) struct XfsVolume {
    reader: Box<dyn ReadAt>,
    what: String,
    geo: Geometry,
    label: Option<String>,
    warnings: Vec<String>,
    /// Entries of the directories read last, by inode number.
    dirs: DirCache<u64, DirEntry>,
}

/// One extent of a fork: `count` blocks at file block `offset`, stored at volume block
/// `block`; an unwritten (preallocated) extent reads as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extent {
    offset: u64,
    block: u64,
    count: u64,
    unwritten: bool,
}

/// The parts of an inode this module uses.
#[derive(Clone)]
pub(crate) struct Inode {
    number: u64,
    mode: u16,
    uid: u32,
    gid: u32,
    size: u64,
    atime: Option<i64>,
    mtime: Option<i64>,
    ctime: Option<i64>,
    crtime: Option<i64>,
    realtime: bool,
    format: u8,
    nextents: u64,
    data: Vec<u8>,
    attr_format: u8,
    anextents: u64,
    attr: Option<Vec<u8>>,
}

impl Inode {
    fn kind_bits(&self) -> u16 {
        self.mode & S_IFMT
    }
}

/// A directory entry as stored.
struct DirEntry {
    name: Vec<u8>,
    inode: u64,
}

/// A regular file of an XFS volume: its extents, read on demand.
pub(crate) struct XfsFile {
    path: String,
    extents: Vec<Extent>,
    size: u64,
    pos: u64,
}

impl XfsVolume {
    /// Reads and checks the superblock of the volume in `reader`.
    pub(crate) fn open(mut reader: Box<dyn ReadAt>, what: &str) -> Result<Self, FsError> {
        let mut sb = [0u8; 512];
        if reader.len() < 512 {
            return Err(FsError::corrupt(
                what,
                Some(0),
                "too short for an XFS superblock",
            ));
        }
        read_exact(&mut *reader, what, 0, &mut sb)?;
        let bad = |detail: String| FsError::corrupt(what, Some(0), detail);
        if &sb[..4] != MAGIC {
            return Err(bad("no XFS superblock magic".into()));
        }
        let version = be16(&sb, 100);
        let v5 = match version & 0xf {
            4 => false,
            5 => true,
            other => {
                return Err(FsError::unsupported(
                    what,
                    format!("XFS superblock version {other}"),
                ));
            }
        };
        if !v5 && version & VERSION_DIRV2 == 0 {
            return Err(FsError::unsupported(
                what,
                "XFS version 1 directories (IRIX-era volumes)",
            ));
        }
        let block_size = u64::from(be32(&sb, 4));
        let block_log = u32::from(sb[120]);
        if !(9..=16).contains(&block_log) || block_size != 1 << block_log {
            return Err(bad(format!("block size {block_size} (log {block_log})")));
        }
        let inode_size = u64::from(be16(&sb, 104));
        let inode_log = u32::from(sb[122]);
        if !(8..=11).contains(&inode_log) || inode_size != 1 << inode_log {
            return Err(bad(format!("inode size {inode_size}")));
        }
        let inop_log = u32::from(sb[123]);
        if inop_log + inode_log != block_log {
            return Err(bad(format!(
                "{} inodes per block of {block_size} bytes",
                1u64 << inop_log.min(63)
            )));
        }
        let ag_blocks = u64::from(be32(&sb, 84));
        let ag_count = u64::from(be32(&sb, 88));
        let ag_blk_log = u32::from(sb[124]);
        if ag_blocks == 0
            || ag_count == 0
            || ag_blk_log > 31
            || (1u64 << ag_blk_log) < ag_blocks
            || (ag_blk_log > 0 && (1u64 << (ag_blk_log - 1)) >= ag_blocks)
        {
            return Err(bad(format!(
                "allocation groups of {ag_blocks} blocks (log {ag_blk_log}), {ag_count} of them"
            )));
        }
        // Every byte offset computed later stays below this.
        if ag_blocks
            .checked_mul(ag_count)
            .and_then(|b| b.checked_mul(block_size))
            .is_none_or(|bytes| bytes > 1 << 62)
        {
            return Err(bad(format!(
                "{ag_count} allocation groups of {ag_blocks} blocks of {block_size} bytes"
            )));
        }
        let dir_log = u32::from(sb[192]);
        if block_log + dir_log > 16 {
            return Err(bad(format!(
                "directory blocks of 2^{} bytes",
                block_log + dir_log
            )));
        }
        let incompat = if v5 { be32(&sb, 216) } else { 0 };
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(FsError::unsupported(
                what,
                format!(
                    "XFS incompatible features {:#x}",
                    incompat & !INCOMPAT_KNOWN
                ),
            ));
        }
        let features2 = if version & VERSION_MOREBITS != 0 {
            be32(&sb, 200)
        } else {
            0
        };
        let ftype = if v5 {
            incompat & INCOMPAT_FTYPE != 0
        } else {
            features2 & FEATURES2_FTYPE != 0
        };
        if v5 && !ftype {
            return Err(bad(
                "a version 5 superblock without the ftype feature".into()
            ));
        }
        let mut warnings = Vec::new();
        if incompat & INCOMPAT_NEEDSREPAIR != 0 {
            warnings.push(format!(
                "{what}: the XFS volume is marked as needing xfs_repair; it is read as it is"
            ));
        }
        let name = &sb[108..120];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        let label = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
        let geo = Geometry {
            block_size,
            ag_blocks,
            ag_count,
            ag_blk_log,
            inode_size,
            inop_log,
            root: be64(&sb, 56),
            dir_block: block_size << dir_log,
            v5,
            ftype,
        };
        let mut volume = XfsVolume {
            reader,
            what: what.to_owned(),
            geo,
            label,
            warnings,
            dirs: DirCache::new(),
        };
        let root = volume.inode(volume.geo.root)?;
        if root.kind_bits() != S_IFDIR {
            return Err(volume.corrupt(
                None,
                format!("the root inode {} is not a directory", volume.geo.root),
            ));
        }
        Ok(volume)
    }

    pub(crate) fn kind(&self) -> &'static str {
        "xfs"
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
        if dir.kind_bits() != S_IFDIR {
            return Err(FsError::NotADirectory {
                what: self.what.clone(),
                path: path.to_owned(),
            });
        }
        let mut entries = Vec::new();
        for entry in self.dir_entries(&dir)?.iter() {
            let inode = self.inode(entry.inode)?;
            let name = String::from_utf8_lossy(&entry.name).into_owned();
            entries.push(self.entry(name, &inode)?);
        }
        Ok(entries)
    }

    pub(crate) fn extras(&mut self, path: &str) -> Result<Extras, FsError> {
        let (_, inode) = self.resolve(path)?;
        let mut extras = Extras::default();
        if inode.format == FORMAT_DEV && matches!(inode.kind_bits(), 0o020_000 | 0o060_000) {
            let dev = inode.data.get(..4).map_or(0, |b| be32(b, 0));
            extras.device = Some((dev >> 18, dev & 0x3ffff));
        }
        if inode.attr.is_some() {
            self.xattrs(&inode, &mut extras)?;
        }
        Ok(extras)
    }

    pub(crate) fn open_file(&mut self, path: &str) -> Result<XfsFile, FsError> {
        let (_, inode) = self.resolve(path)?;
        if inode.kind_bits() != S_IFREG {
            return Err(FsError::NotAFile {
                what: self.what.clone(),
                path: path.to_owned(),
            });
        }
        if inode.realtime {
            return Err(FsError::unsupported(
                &self.what,
                format!("{path:?} is on the XFS realtime device, which is not in this volume"),
            ));
        }
        let extents = self.data_extents(&inode)?;
        Ok(XfsFile {
            path: path.to_owned(),
            extents,
            size: inode.size,
            pos: 0,
        })
    }

    fn resolve(&mut self, path: &str) -> Result<(String, Inode), FsError> {
        path::resolve(self, path)
    }

    fn entry(&mut self, name: String, inode: &Inode) -> Result<FsEntry, FsError> {
        let kind = match inode.kind_bits() {
            S_IFDIR => FsKind::Directory,
            S_IFREG => FsKind::File,
            S_IFLNK => {
                FsKind::Symlink(String::from_utf8_lossy(&self.link_target(inode)?).into_owned())
            }
            _ => FsKind::Other,
        };
        Ok(FsEntry {
            name,
            kind,
            size: inode.size,
            mode: Some(u32::from(inode.mode)),
            uid: Some(inode.uid),
            gid: Some(inode.gid),
            mtime_ns: inode.mtime,
            atime_ns: inode.atime,
            ctime_ns: inode.ctime,
            btime_ns: inode.crtime,
        })
    }

    /// Reads inode `number`, checking where it is, its magic, its checksum (v5) and that
    /// its forks fit in it.
    fn inode(&mut self, number: u64) -> Result<Inode, FsError> {
        let geo = &self.geo;
        let in_block = number & ((1 << geo.inop_log) - 1);
        let block = (number >> geo.inop_log) & ((1 << geo.ag_blk_log) - 1);
        let ag = (number >> geo.inop_log) >> geo.ag_blk_log;
        if ag >= geo.ag_count || block >= geo.ag_blocks {
            return Err(self.corrupt(
                None,
                format!("inode number {number} lies outside the volume"),
            ));
        }
        let at = (ag * geo.ag_blocks + block) * geo.block_size + in_block * geo.inode_size;
        let mut raw = vec![0u8; geo.inode_size as usize];
        self.read(at, &mut raw)?;
        let bad = |detail: String| {
            FsError::corrupt(&self.what, Some(at), format!("inode {number}: {detail}"))
        };
        if &raw[..2] != b"IN" {
            return Err(bad("no inode magic".into()));
        }
        let version = raw[4];
        let literal = match (version, self.geo.v5) {
            (3, true) => 176,
            (1 | 2, false) => 100,
            _ => return Err(bad(format!("inode version {version} in this volume"))),
        };
        if version == 3 {
            let stored = u32::from_le_bytes(raw[100..104].try_into().expect("4 bytes"));
            let mut digest = CRC32C.digest();
            digest.update(&raw[..100]);
            digest.update(&[0; 4]);
            digest.update(&raw[104..]);
            if digest.finalize() != stored {
                return Err(bad("checksum mismatch".into()));
            }
            let recorded = be64(&raw, 152);
            if recorded != number {
                return Err(bad(format!("the inode there says it is inode {recorded}")));
            }
        }
        let flags2 = if version == 3 { be64(&raw, 120) } else { 0 };
        let big = flags2 & DIFLAG2_BIGTIME != 0;
        let (nextents, anextents) = if flags2 & DIFLAG2_NREXT64 != 0 {
            (be64(&raw, 24), u64::from(be32(&raw, 76)))
        } else {
            (u64::from(be32(&raw, 76)), u64::from(be16(&raw, 80)))
        };
        let forkoff = usize::from(raw[82]) * 8;
        let fork_end = raw.len();
        if literal + forkoff > fork_end {
            return Err(bad(format!(
                "attribute fork offset {forkoff} past the inode"
            )));
        }
        let data_end = if forkoff == 0 {
            fork_end
        } else {
            literal + forkoff
        };
        let attr = (forkoff != 0).then(|| raw[literal + forkoff..].to_vec());
        let mode = be16(&raw, 2);
        Ok(Inode {
            number,
            mode,
            uid: be32(&raw, 8),
            gid: be32(&raw, 12),
            size: be64(&raw, 56),
            atime: time(&raw, 32, big),
            mtime: time(&raw, 40, big),
            ctime: time(&raw, 48, big),
            crtime: (version == 3).then(|| time(&raw, 144, big)).flatten(),
            realtime: be16(&raw, 90) & DIFLAG_REALTIME != 0,
            format: raw[5],
            nextents,
            data: raw[literal..data_end].to_vec(),
            attr_format: raw[83],
            anextents,
            attr,
        })
    }

    /// The data fork's extents, sorted by file offset and checked not to overlap.
    fn data_extents(&mut self, inode: &Inode) -> Result<Vec<Extent>, FsError> {
        match inode.format {
            FORMAT_EXTENTS => self.fork_extents(inode.number, &inode.data, inode.nextents),
            FORMAT_BTREE => self.btree_extents(inode.number, &inode.data, inode.nextents),
            FORMAT_LOCAL if inode.size == 0 => Ok(Vec::new()),
            other => Err(self.corrupt(
                None,
                format!(
                    "inode {}: data fork format {other} for a file",
                    inode.number
                ),
            )),
        }
    }

    /// The extents of the attribute fork.
    fn attr_extents(&mut self, inode: &Inode, fork: &[u8]) -> Result<Vec<Extent>, FsError> {
        match inode.attr_format {
            FORMAT_EXTENTS => self.fork_extents(inode.number, fork, inode.anextents),
            FORMAT_BTREE => self.btree_extents(inode.number, fork, inode.anextents),
            other => Err(self.corrupt(
                None,
                format!("inode {}: attribute fork format {other}", inode.number),
            )),
        }
    }

    /// Extent records kept in the inode.
    fn fork_extents(&self, number: u64, fork: &[u8], count: u64) -> Result<Vec<Extent>, FsError> {
        if count > (fork.len() / 16) as u64 {
            return Err(self.corrupt(
                None,
                format!("inode {number}: {count} extents do not fit in its fork"),
            ));
        }
        let extents: Vec<Extent> = fork
            .chunks_exact(16)
            .take(count as usize)
            .map(extent)
            .collect();
        self.check_extents(number, &extents)?;
        Ok(extents)
    }

    /// Extent records in a B+tree whose root is in the inode.
    fn btree_extents(
        &mut self,
        number: u64,
        fork: &[u8],
        count: u64,
    ) -> Result<Vec<Extent>, FsError> {
        if fork.len() < 4 {
            return Err(self.corrupt(None, format!("inode {number}: extent tree root too small")));
        }
        let level = be16(fork, 0);
        let records = usize::from(be16(fork, 2));
        let max = (fork.len() - 4) / 16;
        if level == 0 || level > MAX_BTREE_LEVELS || records == 0 || records > max {
            return Err(self.corrupt(
                None,
                format!("inode {number}: extent tree root of level {level} with {records} records"),
            ));
        }
        let ptrs = 4 + max * 8;
        let mut extents = Vec::new();
        let mut budget = MAX_BTREE_BLOCKS;
        for i in 0..records {
            let child = be64(fork, ptrs + i * 8);
            self.btree_block(number, child, level - 1, &mut extents, &mut budget)?;
        }
        if extents.len() as u64 != count {
            self.warnings.push(format!(
                "{}: inode {number}: its extent tree holds {} extents, the inode counts {count}",
                self.what,
                extents.len()
            ));
        }
        self.check_extents(number, &extents)?;
        Ok(extents)
    }

    fn btree_block(
        &mut self,
        number: u64,
        block: u64,
        level: u16,
        out: &mut Vec<Extent>,
        budget: &mut usize,
    ) -> Result<(), FsError> {
        if *budget == 0 {
            return Err(FsError::limit(
                &self.what,
                format!("inode {number}: extent tree of more than {MAX_BTREE_BLOCKS} blocks"),
            ));
        }
        *budget -= 1;
        let at = self.block_offset(block)?;
        let mut buf = vec![0u8; self.geo.block_size as usize];
        self.read(at, &mut buf)?;
        let (magic, header): (&[u8], usize) = if self.geo.v5 {
            (b"BMA3", 72)
        } else {
            (b"BMAP", 24)
        };
        let bad = |detail: String| {
            FsError::corrupt(
                &self.what,
                Some(at),
                format!("inode {number}: extent tree block {block}: {detail}"),
            )
        };
        if &buf[..4] != magic {
            return Err(bad("no extent tree magic".into()));
        }
        if be16(&buf, 4) != level {
            return Err(bad(format!(
                "level {} where {level} was expected",
                be16(&buf, 4)
            )));
        }
        if self.geo.v5 && be64(&buf, 56) != number {
            return Err(bad(format!("belongs to inode {}", be64(&buf, 56))));
        }
        let records = usize::from(be16(&buf, 6));
        let max = (buf.len() - header) / 16;
        if records == 0 || records > max {
            return Err(bad(format!("{records} records")));
        }
        if level == 0 {
            if out.len() + records > MAX_EXTENTS {
                return Err(FsError::limit(
                    &self.what,
                    format!("inode {number} has more than {MAX_EXTENTS} extents"),
                ));
            }
            out.extend(
                buf[header..header + records * 16]
                    .chunks_exact(16)
                    .map(extent),
            );
            return Ok(());
        }
        let ptrs = header + max * 8;
        for i in 0..records {
            let child = be64(&buf, ptrs + i * 8);
            self.btree_block(number, child, level - 1, out, budget)?;
        }
        Ok(())
    }

    /// Checks that `extents` are in file order, do not overlap, and lie
    /// inside the volume.
    fn check_extents(&self, number: u64, extents: &[Extent]) -> Result<(), FsError> {
        let mut end = 0u64;
        for e in extents.iter() {
            let bad = |detail: &str| {
                self.corrupt(
                    None,
                    format!(
                        "inode {number}: extent of {} blocks at file block {} (volume block {}) {detail}",
                        e.count, e.offset, e.block
                    ),
                )
            };
            if e.count == 0 {
                return Err(bad("is empty"));
            }
            if e.offset < end {
                return Err(bad("overlaps the one before"));
            }
            end = e.offset + e.count;
            if end
                .checked_mul(self.geo.block_size)
                .is_none_or(|b| b > 1 << 63)
            {
                return Err(bad("ends past the largest file"));
            }
            let ag_block = e.block & ((1 << self.geo.ag_blk_log) - 1);
            let ag = e.block >> self.geo.ag_blk_log;
            if ag >= self.geo.ag_count || ag_block + e.count > self.geo.ag_blocks {
                return Err(bad("lies outside its allocation group"));
            }
        }
        Ok(())
    }

    /// The byte offset of volume block `block`.
    fn block_offset(&self, block: u64) -> Result<u64, FsError> {
        let ag_block = block & ((1 << self.geo.ag_blk_log) - 1);
        let ag = block >> self.geo.ag_blk_log;
        if ag >= self.geo.ag_count || ag_block >= self.geo.ag_blocks {
            return Err(self.corrupt(
                None,
                format!("block number {block} lies outside the volume"),
            ));
        }
        Ok((ag * self.geo.ag_blocks + ag_block) * self.geo.block_size)
    }

    /// Reads `<[u8]>::len(buf)` bytes of a fork's address space from `offset` (in bytes), through
    /// `extents`; holes and unwritten extents read as zeros.
    fn read_mapped(
        &mut self,
        extents: &[Extent],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), FsError> {
        let bs = self.geo.block_size;
        let mut done = 0usize;
        while done < <[u8]>::len(buf) {
            let pos = offset + done as u64;
            let block = pos / bs;
            let i = extents.partition_point(|e| e.offset + e.count <= block);
            let want = <[u8]>::len(buf) - done;
            match extents.get(i) {
                Some(e) if e.offset <= block => {
                    let end = (e.offset + e.count) * bs;
                    let n = (want as u64).min(end - pos) as usize;
                    if e.unwritten {
                        buf[done..done + n].fill(0);
                    } else {
                        let at = self.block_offset(e.block)? + (pos - e.offset * bs);
                        self.read(at, &mut buf[done..done + n])?;
                    }
                    done += n;
                }
                next => {
                    let gap_end = next.map_or(u64::MAX, |e| e.offset * bs);
                    let n = (want as u64).min(gap_end - pos) as usize;
                    buf[done..done + n].fill(0);
                    done += n;
                }
            }
        }
        Ok(())
    }

    /// The entries of directory `dir`, without `.` and `..`, read once and then kept for a
    /// while (see [`DirCache`]).
    fn dir_entries(&mut self, dir: &Inode) -> Result<Rc<Vec<DirEntry>>, FsError> {
        if let Some(entries) = self.dirs.get(&dir.number) {
            return Ok(entries);
        }
        let entries = self.read_dir_entries(dir)?;
        Ok(self.dirs.insert(dir.number, entries))
    }

    fn read_dir_entries(&mut self, dir: &Inode) -> Result<Vec<DirEntry>, FsError> {
        if dir.size > MAX_DIR_BYTES && dir.format != FORMAT_LOCAL {
            // The size of a block directory covers its data blocks only.
            return Err(FsError::limit(
                &self.what,
                format!(
                    "directory inode {} claims {} bytes (at most {MAX_DIR_BYTES} are read)",
                    dir.number, dir.size
                ),
            ));
        }
        let mut out = Vec::new();
        match dir.format {
            FORMAT_LOCAL => self.short_dir(dir, &mut out)?,
            FORMAT_EXTENTS | FORMAT_BTREE => {
                let extents = self.data_extents(dir)?;
                let per = self.geo.dir_block / self.geo.block_size;
                let leaf = DIR_LEAF_OFFSET / self.geo.block_size;
                let mut buf = vec![0u8; self.geo.dir_block as usize];
                let mut next = 0u64;
                let mut read = 0u64;
                for e in &extents {
                    let mut start = (e.offset / per * per).max(next);
                    let end = (e.offset + e.count).min(leaf);
                    while start < end {
                        read += self.geo.dir_block;
                        if read > MAX_DIR_BYTES {
                            return Err(FsError::limit(
                                &self.what,
                                format!(
                                    "directory inode {} holds more than {MAX_DIR_BYTES} bytes of entries",
                                    dir.number
                                ),
                            ));
                        }
                        self.read_mapped(&extents, start * self.geo.block_size, &mut buf)?;
                        self.dir_block(dir.number, start, &buf, &mut out)?;
                        start += per;
                        next = start;
                    }
                }
            }
            other => {
                return Err(self.corrupt(
                    None,
                    format!("directory inode {}: data fork format {other}", dir.number),
                ));
            }
        }
        Ok(out)
    }

    /// A directory kept in the inode:
    /// `COUNT | I8COUNT | PARENT(4 or 8) | { NAMELEN | OFFSET(2) | NAME | [FTYPE] | INODE(4 or 8) }`.
    fn short_dir(&self, dir: &Inode, out: &mut Vec<DirEntry>) -> Result<(), FsError> {
        let b = &dir.data;
        let bad = |detail: &str| {
            self.corrupt(
                None,
                format!("directory inode {}: short form {detail}", dir.number),
            )
        };
        if b.len() < 2 {
            return Err(bad("header past the fork"));
        }
        let count = usize::from(b[0]);
        let wide = b[1] != 0;
        let ino_len = if wide { 8 } else { 4 };
        let mut pos = 2 + ino_len;
        for _ in 0..count {
            let namelen = usize::from(*b.get(pos).ok_or_else(|| bad("entry past the fork"))?);
            let name_at = pos + 3;
            let ino_at = name_at + namelen + usize::from(self.geo.ftype);
            if namelen == 0 || ino_at + ino_len > b.len() {
                return Err(bad("entry past the fork"));
            }
            let inode = if wide {
                be64(b, ino_at)
            } else {
                u64::from(be32(b, ino_at))
            };
            out.push(DirEntry {
                name: b[name_at..name_at + namelen].to_vec(),
                inode,
            });
            pos = ino_at + ino_len;
        }
        Ok(())
    }

    /// The entries of one directory data block at file block `block`.
    fn dir_block(
        &self,
        number: u64,
        block: u64,
        b: &[u8],
        out: &mut Vec<DirEntry>,
    ) -> Result<(), FsError> {
        let bad = |detail: String| {
            self.corrupt(
                None,
                format!("directory inode {number}, block {block}: {detail}"),
            )
        };
        let magic = &b[..4];
        let (single, header) = match (magic, self.geo.v5) {
            (b"XD2B", false) => (true, 16),
            (b"XD2D", false) => (false, 16),
            (b"XDB3", true) => (true, 64),
            (b"XDD3", true) => (false, 64),
            _ => return Err(bad(format!("no directory data magic ({magic:02x?})"))),
        };
        if self.geo.v5 {
            let stored = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
            let mut digest = CRC32C.digest();
            digest.update(&b[..4]);
            digest.update(&[0; 4]);
            digest.update(&b[8..]);
            if digest.finalize() != stored {
                return Err(bad("checksum mismatch".into()));
            }
            if be64(b, 40) != number {
                return Err(bad(format!("belongs to inode {}", be64(b, 40))));
            }
        }
        let mut end = b.len();
        if single {
            let leaves = be32(b, b.len() - 8) as usize;
            end = leaves
                .checked_mul(8)
                .and_then(|l| (b.len() - 8).checked_sub(l))
                .filter(|&e| e >= header)
                .ok_or_else(|| bad(format!("{leaves} hash entries do not fit")))?;
        }
        let mut pos = header;
        while pos < end {
            if end - pos < 8 {
                return Err(bad(format!("entry at byte {pos} cut short")));
            }
            if be16(b, pos) == 0xffff {
                let len = usize::from(be16(b, pos + 2));
                if len < 8 || len % 8 != 0 || len > end - pos {
                    return Err(bad(format!("free space of {len} bytes at byte {pos}")));
                }
                pos += len;
                continue;
            }
            let inode = be64(b, pos);
            let namelen = usize::from(*b.get(pos + 8).unwrap_or(&0));
            let len = (8 + 1 + namelen + usize::from(self.geo.ftype) + 2).next_multiple_of(8);
            if namelen == 0 || len > end - pos {
                return Err(bad(format!(
                    "entry at byte {pos} with a name of {namelen} bytes"
                )));
            }
            let name = &b[pos + 9..pos + 9 + namelen];
            if name != b"." && name != b".." {
                if out.len() >= MAX_DIR_ENTRIES {
                    return Err(FsError::limit(
                        &self.what,
                        format!("directory inode {number} has more than {MAX_DIR_ENTRIES} entries"),
                    ));
                }
                out.push(DirEntry {
                    name: name.to_vec(),
                    inode,
                });
            }
            pos += len;
        }
        Ok(())
    }

    /// A symlink's target: in the inode, or in blocks (v5: each with a 56-byte header
    /// saying how many of its bytes are the target's).
    fn link_target(&mut self, inode: &Inode) -> Result<Vec<u8>, FsError> {
        let size = inode.size;
        if size == 0 || size > MAX_SYMLINK || size >= MAX_PATH_BYTES as u64 {
            return Err(self.corrupt(
                None,
                format!(
                    "symlink inode {} claims a target of {size} bytes",
                    inode.number
                ),
            ));
        }
        let size = size as usize;
        if inode.format == FORMAT_LOCAL {
            return inode.data.get(..size).map(<[u8]>::to_vec).ok_or_else(|| {
                self.corrupt(
                    None,
                    format!("symlink inode {}: target past its fork", inode.number),
                )
            });
        }
        let extents = self.data_extents(inode)?;
        let bs = self.geo.block_size as usize;
        let mut target = Vec::with_capacity(size);
        let mut block = vec![0u8; bs];
        let mut index = 0u64;
        while target.len() < size {
            if index > 2 {
                return Err(self.corrupt(
                    None,
                    format!("symlink inode {}: target blocks missing", inode.number),
                ));
            }
            self.read_mapped(&extents, index * bs as u64, &mut block)?;
            let data = if self.geo.v5 {
                if &block[..4] != b"XSLM" {
                    return Err(self.corrupt(
                        None,
                        format!(
                            "symlink inode {}: block {index} has no symlink magic",
                            inode.number
                        ),
                    ));
                }
                let bytes = be32(&block, 8) as usize;
                &block[56..(56 + bytes).min(bs)]
            } else {
                &block[..]
            };
            let take = data.len().min(size - target.len());
            if take == 0 {
                return Err(self.corrupt(
                    None,
                    format!("symlink inode {}: empty target block", inode.number),
                ));
            }
            target.extend_from_slice(&data[..take]);
            index += 1;
        }
        Ok(target)
    }

    /// The extended attributes of `inode`, into `extras`; what cannot be read becomes a
    /// warning there.
    fn xattrs(&mut self, inode: &Inode, extras: &mut Extras) -> Result<(), FsError> {
        let Some(fork) = &inode.attr else {
            return Ok(());
        };
        if inode.attr_format == FORMAT_LOCAL {
            // TOTSIZE(2) | COUNT | PAD | { NAMELEN | VALUELEN | FLAGS | NAME | VALUE }
            let count = usize::from(*fork.get(2).unwrap_or(&0));
            let mut pos = 4;
            for _ in 0..count {
                let Some(&[namelen, valuelen, flags]) = fork
                    .get(pos..pos + 3)
                    .map(|s| <&[u8; 3]>::try_from(s).expect("3 bytes"))
                else {
                    break;
                };
                let (namelen, valuelen) = (usize::from(namelen), usize::from(valuelen));
                let Some(name) = fork.get(pos + 3..pos + 3 + namelen) else {
                    break;
                };
                let Some(value) = fork.get(pos + 3 + namelen..pos + 3 + namelen + valuelen) else {
                    extras
                        .warnings
                        .push(format!("inode {}: attribute cut short", inode.number));
                    return Ok(());
                };
                push_xattr(inode.number, flags, name, value.to_vec(), extras);
                pos += 3 + namelen + valuelen;
            }
            return Ok(());
        }
        let extents = self.attr_extents(inode, fork)?;
        if let Err(why) = self.attr_leaves(inode.number, &extents, extras) {
            extras.warnings.push(format!(
                "inode {}: attributes not read: {why}",
                inode.number
            ));
        }
        Ok(())
    }

    /// Attributes kept in blocks: block 0 is a leaf or the root of a tree whose leftmost
    /// leaf starts a chain of leaves.
    fn attr_leaves(
        &mut self,
        number: u64,
        extents: &[Extent],
        extras: &mut Extras,
    ) -> Result<(), String> {
        let bs = self.geo.block_size as usize;
        let (leaf_magic, node_magic, info) = if self.geo.v5 {
            (0x3beeu16, 0x3ebeu16, 56usize)
        } else {
            (0xfbee, 0xfebe, 12)
        };
        let mut block = vec![0u8; bs];
        let mut index = 0u64;
        let mut seen = 0usize;
        loop {
            seen += 1;
            if seen > MAX_ATTR_BLOCKS {
                return Err(format!("more than {MAX_ATTR_BLOCKS} attribute blocks"));
            }
            self.read_mapped(extents, index * bs as u64, &mut block)
                .map_err(|e| e.to_string())?;
            let magic = be16(&block, 8);
            if magic == node_magic {
                // INFO | COUNT(2) | LEVEL(2) [| PAD(4), v5] | { HASH(4) | BEFORE(4) }
                let first = if self.geo.v5 { 64 } else { 16 };
                if be16(&block, info) == 0 {
                    return Err(format!("empty attribute node at block {index}"));
                }
                index = u64::from(be32(&block, first + 4));
                continue;
            }
            if magic != leaf_magic {
                return Err(format!(
                    "block {index} is neither an attribute leaf nor a node"
                ));
            }
            self.attr_leaf(number, extents, &block, info, extras)?;
            let forw = be32(&block, 0);
            if forw == 0 {
                return Ok(());
            }
            index = u64::from(forw);
        }
    }

    /// One attribute leaf: `HEADER | { HASH(4) | NAMEIDX(2) | FLAGS | PAD }` with each
    /// name and value at NAMEIDX, the value either there (`VALUELEN(2) | NAMELEN | NAME |
    /// VALUE`) or in blocks of its own (`VALUEBLK(4) | VALUELEN(4) | NAMELEN | NAME`).
    fn attr_leaf(
        &mut self,
        number: u64,
        extents: &[Extent],
        b: &[u8],
        info: usize,
        extras: &mut Extras,
    ) -> Result<(), String> {
        const LOCAL: u8 = 0x1;
        const INCOMPLETE: u8 = 0x80;
        let count = usize::from(be16(b, info));
        let entries = if self.geo.v5 { 80 } else { 32 };
        if entries + count * 8 > b.len() {
            return Err(format!("{count} attribute entries do not fit in a block"));
        }
        for i in 0..count {
            let e = entries + i * 8;
            let at = usize::from(be16(b, e + 4));
            let flags = b[e + 6];
            if flags & INCOMPLETE != 0 {
                continue;
            }
            if flags & LOCAL != 0 {
                let Some(head) = b.get(at..at + 3) else {
                    return Err(format!("attribute {i} past its block"));
                };
                let (valuelen, namelen) = (usize::from(be16(head, 0)), usize::from(head[2]));
                let Some(name) = b.get(at + 3..at + 3 + namelen) else {
                    return Err(format!("attribute {i} past its block"));
                };
                let Some(value) = b.get(at + 3 + namelen..at + 3 + namelen + valuelen) else {
                    return Err(format!("attribute {i} past its block"));
                };
                push_xattr(number, flags, name, value.to_vec(), extras);
            } else {
                let Some(head) = b.get(at..at + 9) else {
                    return Err(format!("attribute {i} past its block"));
                };
                let (blk, len, namelen) = (
                    u64::from(be32(head, 0)),
                    u64::from(be32(head, 4)),
                    usize::from(head[8]),
                );
                let Some(name) = b.get(at + 9..at + 9 + namelen) else {
                    return Err(format!("attribute {i} past its block"));
                };
                if len > MAX_XATTR_VALUE {
                    extras.warnings.push(format!(
                        "inode {number}: attribute {} of {len} bytes not read (at most {MAX_XATTR_VALUE})",
                        String::from_utf8_lossy(name)
                    ));
                    continue;
                }
                let value = self.remote_value(extents, blk, len as usize)?;
                push_xattr(number, flags, name, value, extras);
            }
        }
        Ok(())
    }

    /// A value kept in attribute blocks from `block` on (v5: each with a 56-byte header).
    fn remote_value(
        &mut self,
        extents: &[Extent],
        block: u64,
        len: usize,
    ) -> Result<Vec<u8>, String> {
        let bs = self.geo.block_size as usize;
        let mut value = Vec::with_capacity(len);
        let mut buf = vec![0u8; bs];
        let mut index = block;
        while value.len() < len {
            self.read_mapped(extents, index * bs as u64, &mut buf)
                .map_err(|e| e.to_string())?;
            let data = if self.geo.v5 {
                if &buf[..4] != b"XARM" {
                    return Err(format!("attribute value block {index} has no magic"));
                }
                &buf[56..]
            } else {
                &buf[..]
            };
            let take = data.len().min(len - value.len());
            value.extend_from_slice(&data[..take]);
            index += 1;
        }
        Ok(value)
    }

    fn read(&mut self, at: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let end = at.checked_add(<[u8]>::len(buf) as u64);
        if end.is_none_or(|end| end > self.reader.len()) {
            return Err(self.corrupt(
                Some(at),
                format!(
                    "a read of {} bytes past the end of the volume",
                    <[u8]>::len(buf)
                ),
            ));
        }
        read_exact(&mut *self.reader, &self.what, at, buf)
    }

    fn corrupt(&self, offset: Option<u64>, detail: String) -> FsError {
        FsError::corrupt(&self.what, offset, detail)
    }
}

impl Walk for XfsVolume {
    type Node = Inode;

    fn what(&self) -> &str {
        &self.what
    }

    fn root(&mut self) -> Result<Inode, FsError> {
        self.inode(self.geo.root)
    }

    fn step(&self, node: &Inode) -> Step {
        match node.kind_bits() {
            S_IFDIR => Step::Directory,
            S_IFLNK => Step::Symlink,
            _ => Step::Other,
        }
    }

    fn child(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<Inode>, FsError> {
        let found = self
            .dir_entries(dir)?
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.inode);
        found.map(|number| self.inode(number)).transpose()
    }

    fn target(&mut self, link: &Inode) -> Result<Vec<u8>, FsError> {
        self.link_target(link)
    }
}

impl XfsFile {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    pub(crate) fn read(&mut self, vol: &mut XfsVolume, buf: &mut [u8]) -> Result<usize, FsError> {
        if self.pos >= self.size {
            return Ok(0);
        }
        let n = (<[u8]>::len(buf) as u64).min(self.size - self.pos) as usize;
        vol.read_mapped(&self.extents, self.pos, &mut buf[..n])
            .map_err(|e| e.on_path(&self.path))?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Adds an attribute under its Linux name: the root namespace is `trusted.`, the secure
/// one `security.`, the rest `user.`; XFS's own ACLs become `system.posix_acl_*` in the
/// form `setxattr` takes. Parent pointers are not attributes a user sees.
fn push_xattr(number: u64, flags: u8, name: &[u8], value: Vec<u8>, extras: &mut Extras) {
    const ROOT: u8 = 0x2;
    const SECURE: u8 = 0x4;
    const PARENT: u8 = 0x8;
    if flags & PARENT != 0 {
        return;
    }
    let name = String::from_utf8_lossy(name);
    let full = if flags & ROOT != 0 {
        match name.as_ref() {
            "SGI_ACL_FILE" | "SGI_ACL_DEFAULT" => {
                let linux = if name == "SGI_ACL_FILE" {
                    "system.posix_acl_access"
                } else {
                    "system.posix_acl_default"
                };
                match acl_to_xattr(&value) {
                    Some(acl) => extras.xattrs.push((linux.to_owned(), acl)),
                    None => extras
                        .warnings
                        .push(format!("inode {number}: {linux} is not a valid XFS ACL")),
                }
                return;
            }
            _ => format!("trusted.{name}"),
        }
    } else if flags & SECURE != 0 {
        format!("security.{name}")
    } else {
        format!("user.{name}")
    };
    extras.xattrs.push((full, value));
}

/// Converts an XFS ACL (`COUNT(4) | { TAG(4) | ID(4) | PERM(2) | PAD(2) }`, big-endian) to
/// the form `setxattr` takes (version 2; `TAG(2) | PERM(2) | ID(4)`, little-endian).
fn acl_to_xattr(stored: &[u8]) -> Option<Vec<u8>> {
    const NAMED: [u32; 2] = [0x02, 0x08];
    let count = be32(stored.get(..4)?, 0) as usize;
    if count > 1024 || stored.len() != 4 + count * 12 {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    for e in stored[4..].chunks_exact(12) {
        let tag = be32(e, 0);
        if !matches!(tag, 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20) {
            return None;
        }
        let id = if NAMED.contains(&tag) {
            be32(e, 4)
        } else {
            u32::MAX
        };
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(&be16(e, 8).to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

/// Unpacks a 16-byte extent record: `UNWRITTEN(1) | OFFSET(54) | BLOCK(52) | COUNT(21)`.
fn extent(r: &[u8]) -> Extent {
    let hi = be64(r, 0);
    let lo = be64(r, 8);
    Extent {
        unwritten: hi >> 63 != 0,
        offset: (hi >> 9) & ((1 << 54) - 1),
        block: ((hi & 0x1ff) << 43) | (lo >> 21),
        count: lo & ((1 << 21) - 1),
    }
}

/// A timestamp at `at`: seconds and nanoseconds, or with big timestamps nanoseconds since
/// 1901-12-13 (the earliest 32-bit time).
fn time(b: &[u8], at: usize, big: bool) -> Option<i64> {
    if big {
        let ns = i128::from(be64(b, at)) - (1i128 << 31) * 1_000_000_000;
        return i64::try_from(ns).ok();
    }
    let secs = i64::from(be32(b, at) as i32);
    let nanos = i64::from(be32(b, at + 4));
    (nanos < 1_000_000_000).then_some(secs * 1_000_000_000 + nanos)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_records_unpack() {
        // Unwritten, file block 5, volume block (1 << 43) + 7, 300 blocks.
        let block = (1u64 << 43) + 7;
        let hi = (1u64 << 63) | (5 << 9) | (block >> 43);
        let lo = ((block & ((1 << 43) - 1)) << 21) | 300;
        let mut r = hi.to_be_bytes().to_vec();
        r.extend_from_slice(&lo.to_be_bytes());
        assert_eq!(
            extent(&r),
            Extent {
                offset: 5,
                block,
                count: 300,
                unwritten: true
            }
        );
    }

    #[test]
    fn timestamps_in_both_forms() {
        let mut b = Vec::new();
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&5u32.to_be_bytes());
        assert_eq!(time(&b, 0, false), Some(-1_000_000_000 + 5));
        let big = ((1u64 << 31) + 10) * 1_000_000_000 + 7;
        assert_eq!(time(&big.to_be_bytes(), 0, true), Some(10_000_000_007));
        let mut bad = 0u32.to_be_bytes().to_vec();
        bad.extend_from_slice(&2_000_000_000u32.to_be_bytes());
        assert_eq!(time(&bad, 0, false), None);
    }

    #[test]
    fn acls_convert_to_the_setxattr_form() {
        let mut stored = 2u32.to_be_bytes().to_vec();
        for (tag, id, perm) in [(1u32, 0u32, 6u16), (2, 1000, 4)] {
            stored.extend_from_slice(&tag.to_be_bytes());
            stored.extend_from_slice(&id.to_be_bytes());
            stored.extend_from_slice(&perm.to_be_bytes());
            stored.extend_from_slice(&[0, 0]);
        }
        let x = acl_to_xattr(&stored).unwrap();
        assert_eq!(x.len(), 4 + 16);
        assert_eq!(&x[4..12], &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&x[12..20], &[2, 0, 4, 0, 0xe8, 0x03, 0, 0]);
        assert!(acl_to_xattr(&stored[..20]).is_none());
        assert!(acl_to_xattr(&[0, 0, 0]).is_none());
    }
}
