//! What the `ext4-view` crate does not expose, read from the volume's own structures:
//! inode numbers (from directory blocks), and from the inodes, extended attributes and the
//! numbers of device nodes.
//!
//! Fields read (little-endian; offsets inside each structure):
//!
//! ```text
//! superblock   0x00 INODES_COUNT(u32) | 0x28 INODES_PER_GROUP(u32) | 0x4C REV_LEVEL(u32)
//!              0x58 INODE_SIZE(u16) | 0x60 FEATURE_INCOMPAT(u32) | 0xFE DESC_SIZE(u16)
//! group desc.  0x08 INODE_TABLE_LO(u32) | 0x28 INODE_TABLE_HI(u32, 64-byte descriptors)
//! inode        0x00 MODE(u16) | 0x02 UID_LO(u16) | 0x04 SIZE_LO(u32) | 0x08 ATIME(u32)
//!              0x10 MTIME(u32) | 0x18 GID_LO(u16) | 0x20 FLAGS(u32) | 0x28 BLOCK(60 bytes)
//!              0x68 FILE_ACL_LO(u32) | 0x6C SIZE_HIGH(u32) | 0x76 FILE_ACL_HIGH(u16)
//!              0x78 UID_HI(u16) | 0x7A GID_HI(u16) | 0x80 EXTRA_ISIZE(u16)
//!              0x88 MTIME_EXTRA(u32) | 0x8C ATIME_EXTRA(u32) | 0x90 CRTIME(u32)
//!              0x94 CRTIME_EXTRA(u32); in-inode attributes start at 128 + EXTRA_ISIZE;
//!              an EXTRA word holds 2 more bits of seconds, then 30 of nanoseconds
//! extent node  MAGIC(u16 = 0xF30A) ENTRIES(u16) MAX(u16) DEPTH(u16) GENERATION(u32), then
//!              leaves: BLOCK(u32) LEN(u16) START_HI(u16) START_LO(u32)
//!              or indexes: BLOCK(u32) LEAF_LO(u32) LEAF_HI(u16) UNUSED(u16)
//! dir. entry   INODE(u32) REC_LEN(u16) NAME_LEN(u8) FILE_TYPE(u8) NAME
//! attributes   block: MAGIC(u32 = 0xEA020000) REFCOUNT(u32) BLOCKS(u32) ..., entries
//!              from byte 32, values at offsets from the block's start;
//!              in the inode: MAGIC(u32), entries after it, values at offsets from the
//!              first entry; entry: NAME_LEN(u8) NAME_INDEX(u8) VALUE_OFFS(u16)
//!              VALUE_INUM(u32) VALUE_SIZE(u32) HASH(u32) NAME, padded to 4 bytes;
//!              a VALUE_INUM other than 0 (the `ea_inode` feature) holds the value as
//!              its data instead, and carries the inode flag EA_INODE (0x200000)
//! inline data  (inode flag INLINE_DATA, 0x10000000, feature `inline_data`): a file's
//!              first 60 bytes in BLOCK, the rest in the value of the in-inode attribute
//!              `system.data` (NAME_INDEX 7, NAME "data"); SIZE says how many are used.
//!              A directory: BLOCK holds PARENT_INODE(u32), then entries filling its
//!              other 56 bytes; the value holds more entries filling it whole; neither
//!              stores `.` or `..`
//! ```
//!
//! Group descriptors are found where `ext_layout` places them (`meta_bg` included).
//!
//! The reader beneath knows nothing of inline data: it would take an inline inode's bytes
//! for a block map. Such inodes, and everything reached through an inline directory, are
//! answered here instead (see [`RawExt::locate`]): listings, metadata, file contents
//! (inline, or through extents and block maps) and symlink targets.
//!
//! Directory blocks are read linearly: the internal blocks of a hashed (htree) directory
//! look like one unused entry each, so a linear read finds every name as the kernel's
//! fallback does. Like the rest of the crate, every value read is checked before it is used
//! as an offset, a count or a length.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tessera_disk_image::ReadAt;

use crate::FsError;
use crate::ext_journal::{ESCAPED_MAGIC, Journal, Overlay};
use crate::ext_layout::DescriptorLayout;
use crate::ext4::{MAX_DIR_BYTES, MAX_DIR_ENTRIES};

/// The root directory's inode.
const ROOT_INODE: u32 = 2;
/// Inode flag: the block field holds an extent tree.
const EXTENTS_FL: u32 = 0x8_0000;
const EXTENT_MAGIC: u16 = 0xf30a;
/// Deepest extent tree the kernel builds (a root in the inode and up to four levels).
const MAX_EXTENT_DEPTH: u16 = 5;
const XATTR_MAGIC: u32 = 0xea02_0000;
/// Inode flag: the inode holds an attribute's value (`ea_inode`).
const EA_INODE_FL: u32 = 0x20_0000;
/// Inode flag: the inode keeps its data itself (`inline_data`).
const INLINE_DATA_FL: u32 = 0x1000_0000;
/// Bytes of inline data the block field holds.
const INLINE_BLOCK_LEN: usize = 60;
/// Bytes at the start of an inline directory's block field naming its parent.
const INLINE_PARENT_LEN: usize = 4;
/// Namespace index and name of the attribute holding inline data past the block field.
const SYSTEM_DATA_INDEX: u8 = 7;
const SYSTEM_DATA_NAME: &[u8] = b"data";
/// Offset of the block field in an inode.
const BLOCK_AT: usize = 0x28;
/// Largest attribute value Linux sets (`XATTR_SIZE_MAX`).
const MAX_XATTR_VALUE: usize = 1 << 16;
/// Most directories remembered as walked through (see `RawExt::walked`): bounds the memory
/// a tree of many directories takes.
const MAX_WALKED: usize = 4096;
/// Largest journal replayed, in blocks (16 GiB of 4 KiB blocks; mke2fs makes at most 1 GiB
/// by default). Its block list is held in memory.
const MAX_JOURNAL_BLOCKS: u64 = 1 << 22;
/// File-type bits of `st_mode`.
const S_IFMT: u16 = 0o170_000;
const S_IFCHR: u16 = 0o020_000;
const S_IFBLK: u16 = 0o060_000;
const S_IFDIR: u16 = 0o040_000;
const S_IFLNK: u16 = 0o120_000;

/// A directory's entries: inode numbers by name.
type DirEntries = HashMap<Vec<u8>, u32>;

/// An inode as stored, and where.
#[derive(Clone, Debug)]
pub(crate) struct RawInode {
    /// The inode number.
    pub(crate) number: u32,
    /// Byte offset of the inode in the volume.
    at: u64,
    bytes: Vec<u8>,
}

impl RawInode {
    /// Whether the inode keeps its data itself (`inline_data`).
    pub(crate) fn is_inline(&self) -> bool {
        u32_le(&self.bytes, 0x20) & INLINE_DATA_FL != 0
    }

    fn mode(&self) -> u16 {
        u16_le(&self.bytes, 0x00)
    }

    fn size(&self) -> u64 {
        file_size(&self.bytes)
    }
}

/// An inode found by path: whether a directory on the way keeps its entries inline, in
/// which case the reader beneath cannot reach it.
#[derive(Clone, Debug)]
pub(crate) struct Located {
    pub(crate) inode: RawInode,
    pub(crate) via_inline: bool,
}

/// What `lstat` shows of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InodeStat {
    /// `st_mode`: the file-type bits and the permissions.
    pub(crate) mode: u32,
    pub(crate) size: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime_ns: Option<i64>,
    pub(crate) mtime_ns: Option<i64>,
    /// Creation time, kept by inodes of more than 128 bytes.
    pub(crate) btime_ns: Option<i64>,
}

impl InodeStat {
    fn file_type(&self) -> u16 {
        (self.mode & u32::from(S_IFMT)) as u16
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    pub(crate) fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }

    pub(crate) fn is_file(&self) -> bool {
        self.file_type() == 0o100_000
    }
}

/// How a file's bytes are found.
#[derive(Clone, Debug)]
pub(crate) enum FileMap {
    /// All of them, kept in the inode.
    Inline(Vec<u8>),
    /// A block map: the inode's block field.
    Blocks([u8; 60]),
    /// The root of an extent tree: the inode's block field.
    Extents([u8; 60]),
}

/// Consecutive blocks of a file from the one asked for: where they lie in the volume, or
/// `None` for a hole (or an unwritten extent), both reading as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) at: Option<u64>,
    pub(crate) blocks: u64,
}

/// The directory listed last, by its resolved path.
struct LastDir {
    path: Vec<u8>,
    entries: DirEntries,
    /// Whether it, or a directory above it, keeps its entries inline.
    via_inline: bool,
}

/// Extended attributes and the device number of one inode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct InodeExtras {
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
    pub(crate) device: Option<(u32, u32)>,
    pub(crate) warnings: Vec<String>,
}

/// The geometry needed to find inodes, and the volume beneath.
pub(crate) struct RawExt {
    reader: Rc<RefCell<Box<dyn ReadAt>>>,
    what: String,
    len: u64,
    block_size: u64,
    inodes_count: u32,
    inodes_per_group: u32,
    inode_size: u64,
    desc_size: u64,
    layout: DescriptorLayout,
    /// The directory listed last: its entries' inodes by name.
    last_dir: Option<LastDir>,
    /// Directories walked through, by resolved path: their inode numbers, and whether a
    /// directory above them keeps its entries inline. Spares reading every directory on
    /// the way again for each path looked up.
    walked: HashMap<Vec<u8>, (u32, bool)>,
    /// Newer copies of blocks in the journal's committed transactions.
    overlay: Overlay,
}

impl RawExt {
    /// Reads the geometry from the superblock `sb` (validated for block size, counts and
    /// groups by the caller); `Err` says why inodes cannot be found this way.
    pub(crate) fn new(
        reader: Rc<RefCell<Box<dyn ReadAt>>>,
        what: &str,
        sb: &[u8; 1024],
        block_size: u64,
    ) -> Result<Self, String> {
        let u32_at = |at: usize| u32_le(sb, at);
        let u16_at = |at: usize| u64::from(u16_le(sb, at));
        let inode_size = if u32_at(0x4c) == 0 { 128 } else { u16_at(0x58) };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
            return Err(format!("the superblock gives inodes of {inode_size} bytes"));
        }
        let layout = DescriptorLayout::new(sb, block_size)?;
        let len = reader.borrow().len();
        Ok(RawExt {
            reader,
            what: what.to_owned(),
            len,
            block_size,
            inodes_count: u32_at(0x00),
            inodes_per_group: u32_at(0x28),
            inode_size,
            desc_size: layout.desc_size(),
            layout,
            last_dir: None,
            walked: HashMap::new(),
            overlay: Overlay::new(),
        })
    }

    /// Reads through the committed transactions of the journal (the inode the superblock
    /// `sb` names), as the reader beneath did when it replayed it.
    pub(crate) fn replay_journal(&mut self, sb: &[u8; 1024]) -> Result<(), String> {
        let number = u32_le(sb, 0xe0);
        if number == 0 {
            return Err("the journal is on a device of its own".to_owned());
        }
        let text = |e: FsError| format!("the journal cannot be read: {e}");
        let inode = self.inode(number).map_err(text)?.bytes;
        let size = file_size(&inode);
        let blocks = size / self.block_size;
        if blocks > MAX_JOURNAL_BLOCKS {
            return Err(format!(
                "the journal holds {blocks} blocks (at most {MAX_JOURNAL_BLOCKS} are read)"
            ));
        }
        let offsets = self.data_blocks(number, &inode, blocks).map_err(text)?;
        if offsets.len() as u64 != blocks {
            return Err("the journal file has holes".to_owned());
        }
        let mut journal = Journal {
            blocks: &offsets,
            block_size: self.block_size as usize,
            reader: &self.reader,
            what: &self.what,
        };
        self.overlay = journal.replay()?;
        Ok(())
    }

    /// The extras of the inode at `resolved` (an absolute path free of symlinks but for
    /// its final component, as the volume's resolver gives it).
    pub(crate) fn extras(&mut self, resolved: &[u8]) -> Result<InodeExtras, FsError> {
        let number = self.lookup(resolved)?;
        let inode = self.inode(number)?;
        let mode = u16_le(&inode.bytes, 0x00);
        let mut extras = InodeExtras::default();
        if matches!(mode & S_IFMT, S_IFCHR | S_IFBLK) {
            extras.device = Some(device_number(&inode.bytes));
        }
        self.xattrs(number, &inode.bytes, &mut extras)?;
        Ok(extras)
    }

    /// The block map (the inode's 60-byte block field) of the regular file at `resolved`,
    /// for reading it here when the reader beneath cannot; `None` if the file's blocks are
    /// mapped by extents instead.
    pub(crate) fn block_map(&mut self, resolved: &[u8]) -> Result<Option<[u8; 60]>, FsError> {
        let number = self.lookup(resolved)?;
        let inode = self.inode(number)?;
        match self.file_map(&inode)? {
            FileMap::Blocks(map) => Ok(Some(map)),
            FileMap::Extents(_) | FileMap::Inline(_) => Ok(None),
        }
    }

    /// The inode at `resolved` (an absolute path free of symlinks but for its final
    /// component), walking its directories from the root; `None` if a name on the way is
    /// missing.
    pub(crate) fn locate(&mut self, resolved: &[u8]) -> Result<Option<Located>, FsError> {
        let parts: Vec<&[u8]> = resolved
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty())
            .collect();
        let Some((name, dirs)) = parts.split_last() else {
            let inode = self.inode(ROOT_INODE)?;
            return Ok(Some(Located {
                inode,
                via_inline: false,
            }));
        };
        let dir_path: Vec<u8> = dirs.iter().flat_map(|d| [&b"/"[..], d].concat()).collect();
        if self
            .last_dir
            .as_ref()
            .is_none_or(|last| last.path != dir_path)
        {
            let mut number = ROOT_INODE;
            let mut via_inline = false;
            let mut path = Vec::with_capacity(dir_path.len());
            for dir in dirs {
                path.push(b'/');
                path.extend_from_slice(dir);
                if let Some(&(child, via)) = self.walked.get(&path) {
                    (number, via_inline) = (child, via);
                    continue;
                }
                let (entries, inline) = self.dir_entries(number)?;
                via_inline |= inline;
                match entries.get(*dir) {
                    Some(&child) => number = child,
                    None => return Ok(None),
                }
                if self.walked.len() >= MAX_WALKED {
                    self.walked.clear();
                }
                self.walked.insert(path.clone(), (number, via_inline));
            }
            let (entries, inline) = self.dir_entries(number)?;
            self.last_dir = Some(LastDir {
                path: dir_path,
                entries,
                via_inline: via_inline || inline,
            });
        }
        let last = self.last_dir.as_ref().expect("filled above");
        let (Some(&number), via_inline) = (last.entries.get(*name), last.via_inline) else {
            return Ok(None);
        };
        let inode = self.inode(number)?;
        Ok(Some(Located { inode, via_inline }))
    }

    /// The entries of directory inode `dir`, in the order stored, with their inodes.
    pub(crate) fn list(&self, dir: &RawInode) -> Result<Vec<(Vec<u8>, RawInode)>, FsError> {
        let names = self.dir_listing(dir)?;
        let mut entries = Vec::with_capacity(names.len());
        for (name, number) in names {
            entries.push((name, self.inode(number)?));
        }
        Ok(entries)
    }

    /// The metadata of `inode`.
    pub(crate) fn stat(&self, inode: &RawInode) -> Result<InodeStat, FsError> {
        let b = &inode.bytes;
        let time = |secs_at: usize, extra_at: Option<usize>| {
            // The extra words are read where the inode is long enough to hold them.
            let extra = extra_at
                .filter(|&at| at + 4 <= b.len())
                .map(|at| u32_le(b, at));
            timestamp(u32_le(b, secs_at), extra).ok_or_else(|| {
                self.corrupt(
                    Some(inode.at + secs_at as u64),
                    format!(
                        "inode {}: a timestamp's nanoseconds are past a second",
                        inode.number
                    ),
                )
            })
        };
        let btime = if b.len() >= 0x98 {
            Some(time(0x90, Some(0x94))?)
        } else {
            None
        };
        Ok(InodeStat {
            mode: u32::from(inode.mode()),
            size: inode.size(),
            uid: u32::from(u16_le(b, 0x02)) | u32::from(u16_le(b, 0x78)) << 16,
            gid: u32::from(u16_le(b, 0x18)) | u32::from(u16_le(b, 0x7a)) << 16,
            atime_ns: time(0x08, Some(0x8c))?,
            mtime_ns: time(0x10, Some(0x88))?,
            btime_ns: btime.flatten(),
        })
    }

    /// How the bytes of `inode` are found; inline data is read and checked here.
    pub(crate) fn file_map(&self, inode: &RawInode) -> Result<FileMap, FsError> {
        let flags = u32_le(&inode.bytes, 0x20);
        let mut field = [0u8; 60];
        field.copy_from_slice(&inode.bytes[BLOCK_AT..BLOCK_AT + 60]);
        if flags & INLINE_DATA_FL != 0 {
            Ok(FileMap::Inline(self.inline_data(inode)?))
        } else if flags & EXTENTS_FL != 0 {
            Ok(FileMap::Extents(field))
        } else {
            Ok(FileMap::Blocks(field))
        }
    }

    /// The target of the symlink `inode`, of `len` bytes (checked by the caller): inline
    /// data, the block field itself (a target of under 60 bytes), or the first block.
    pub(crate) fn link_target(&self, inode: &RawInode, len: usize) -> Result<Vec<u8>, FsError> {
        let target = match self.file_map(inode)? {
            FileMap::Inline(data) => data,
            _ if len < INLINE_BLOCK_LEN => inode.bytes[BLOCK_AT..BLOCK_AT + len].to_vec(),
            map => {
                let mut target = vec![0u8; len];
                let mut done = 0;
                while done < len {
                    let logical = (done as u64) / self.block_size;
                    let n = (self.block_size as usize).min(len - done);
                    match self.run(&map, logical)?.at {
                        Some(at) => self.read(at, &mut target[done..done + n])?,
                        None => {
                            return Err(self.corrupt(
                                Some(inode.at),
                                format!("symlink inode {} has a hole", inode.number),
                            ));
                        }
                    }
                    done += n;
                }
                target
            }
        };
        if target.len() != len {
            return Err(self.corrupt(
                Some(inode.at),
                format!(
                    "symlink inode {} holds {} bytes where its size says {len}",
                    inode.number,
                    target.len()
                ),
            ));
        }
        Ok(target)
    }

    /// The blocks of a file mapped by `map` from logical block `logical` on.
    pub(crate) fn run(&self, map: &FileMap, logical: u64) -> Result<Run, FsError> {
        match map {
            FileMap::Blocks(field) => Ok(Run {
                at: self.mapped_block(field, logical)?,
                blocks: 1,
            }),
            FileMap::Extents(root) => self.extent_run(root, logical),
            FileMap::Inline(_) => Err(self.corrupt(
                None,
                "inline data has no blocks (a bug: the caller reads it whole)".to_owned(),
            )),
        }
    }

    /// The extent covering logical block `logical` (or the hole around it), descending
    /// the tree from its root in the inode.
    fn extent_run(&self, root: &[u8; 60], logical: u64) -> Result<Run, FsError> {
        let bad = |detail: String| self.corrupt(None, format!("extent tree: {detail}"));
        let mut node = root.to_vec();
        let mut depth_left = MAX_EXTENT_DEPTH;
        loop {
            let (entries, depth) = extent_node(&node, depth_left).map_err(bad)?;
            depth_left = depth;
            let mut items = node[12..12 + entries * 12].chunks_exact(12);
            if depth > 0 {
                // The last index starting at or before the block asked for.
                let Some(index) = items.rfind(|e| u64::from(u32_le(e, 0)) <= logical) else {
                    return Ok(Run {
                        at: None,
                        blocks: 1,
                    });
                };
                let child = u64::from(u32_le(index, 4)) | u64::from(u16_le(index, 8)) << 32;
                let mut block = vec![0u8; self.block_size as usize];
                self.read(self.block_offset(child)?, &mut block)?;
                node = block;
                continue;
            }
            let mut next = None::<u64>;
            for extent in items {
                let start = u64::from(u32_le(extent, 0));
                let raw_len = u16_le(extent, 4);
                // Lengths above 32768 mark unwritten extents, which read as zeros.
                let unwritten = raw_len > 32_768;
                let len = u64::from(if unwritten { raw_len - 32_768 } else { raw_len });
                if start <= logical && logical < start + len {
                    let within = logical - start;
                    let blocks = len - within;
                    let at = if unwritten {
                        None
                    } else {
                        let first =
                            u64::from(u32_le(extent, 8)) | u64::from(u16_le(extent, 6)) << 32;
                        // The whole run must lie inside the volume.
                        self.block_offset(first + len - 1)?;
                        Some(self.block_offset(first + within)?)
                    };
                    return Ok(Run { at, blocks });
                }
                if start > logical {
                    next = Some(next.map_or(start, |n| n.min(start)));
                }
            }
            return Ok(Run {
                at: None,
                blocks: next.map_or(1, |n| n - logical),
            });
        }
    }

    /// The byte offset of logical block `logical` of a file with block map `map` (12
    /// direct blocks, then single, double and triple indirect ones), or `None` where the
    /// file has a hole: a zero pointer at any level.
    pub(crate) fn mapped_block(
        &self,
        map: &[u8; 60],
        logical: u64,
    ) -> Result<Option<u64>, FsError> {
        let per_block = self.block_size / 4;
        // The slot in the inode and the indexes below it, most significant first.
        let (slot, mut below) = if logical < 12 {
            (logical as usize, Vec::new())
        } else {
            let mut rest = logical - 12;
            let mut level = 1u32;
            loop {
                let span = per_block.checked_pow(level);
                match span {
                    Some(span) if rest >= span => {
                        rest -= span;
                        level += 1;
                        if level > 3 {
                            return Err(self.corrupt(
                                None,
                                format!("block {logical} is past what a block map addresses"),
                            ));
                        }
                    }
                    _ => break,
                }
            }
            let mut indexes = Vec::with_capacity(level as usize);
            for _ in 0..level {
                indexes.push(rest % per_block);
                rest /= per_block;
            }
            indexes.reverse();
            (11 + level as usize, indexes)
        };
        let mut block = u64::from(u32_le(map, slot * 4));
        let mut pointer = [0u8; 4];
        for index in below.drain(..) {
            if block == 0 {
                return Ok(None);
            }
            self.read(self.block_offset(block)? + index * 4, &mut pointer)?;
            block = u64::from(u32::from_le_bytes(pointer));
        }
        if block == 0 {
            return Ok(None);
        }
        self.block_offset(block).map(Some)
    }

    /// Reads `buf` at byte `at` of the volume, as it stands after the journal's committed
    /// transactions that the reader beneath replayed.
    pub(crate) fn read_at(&self, at: u64, buf: &mut [u8]) -> Result<(), FsError> {
        self.read(at, buf)
    }

    /// The inode number of `resolved`, walking its directories from the root.
    fn lookup(&mut self, resolved: &[u8]) -> Result<u32, FsError> {
        match self.locate(resolved)? {
            Some(found) => Ok(found.inode.number),
            None => Err(self.corrupt(
                None,
                format!(
                    "the directories on the way to {:?} hold no entry for it in their blocks",
                    String::from_utf8_lossy(resolved)
                ),
            )),
        }
    }

    /// Inode `number`, as stored.
    fn inode(&self, number: u32) -> Result<RawInode, FsError> {
        if number == 0 || number > self.inodes_count || self.inodes_per_group == 0 {
            return Err(self.corrupt(
                None,
                format!(
                    "inode {number} is outside 1..={} (a damaged directory entry)",
                    self.inodes_count
                ),
            ));
        }
        let group = u64::from((number - 1) / self.inodes_per_group);
        let index = u64::from((number - 1) % self.inodes_per_group);
        let descriptor = self.layout.offset(group).ok_or_else(|| {
            self.corrupt(
                None,
                format!("the descriptor of group {group} lies past any possible offset"),
            )
        })?;
        let mut desc = vec![0u8; self.desc_size as usize];
        self.read(descriptor, &mut desc)?;
        let mut table = u64::from(u32_le(&desc, 0x08));
        if self.desc_size >= 64 {
            table |= u64::from(u32_le(&desc, 0x28)) << 32;
        }
        let at = table
            .checked_mul(self.block_size)
            .and_then(|t| t.checked_add(index * self.inode_size))
            .filter(|&at| at.saturating_add(self.inode_size) <= self.len)
            .ok_or_else(|| {
                self.corrupt(
                    Some(descriptor + 0x08),
                    format!(
                        "the descriptor of group {group} puts its inode table at block \
                         {table}, past the end of the volume"
                    ),
                )
            })?;
        let mut bytes = vec![0u8; self.inode_size as usize];
        self.read(at, &mut bytes)?;
        Ok(RawInode { number, at, bytes })
    }

    /// The entries of directory inode `number`: inode numbers by name, and whether they
    /// are kept inline.
    fn dir_entries(&self, number: u32) -> Result<(DirEntries, bool), FsError> {
        let inode = self.inode(number)?;
        let entries = self.dir_listing(&inode)?.into_iter().collect();
        Ok((entries, inode.is_inline()))
    }

    /// The names and inode numbers in directory `dir`, in the order stored.
    fn dir_listing(&self, dir: &RawInode) -> Result<Vec<(Vec<u8>, u32)>, FsError> {
        let number = dir.number;
        if dir.mode() & S_IFMT != S_IFDIR {
            return Err(self.corrupt(None, format!("inode {number} is not a directory")));
        }
        let size = dir.size();
        if size > MAX_DIR_BYTES {
            return Err(FsError::limit(
                &self.what,
                format!("directory inode {number} claims {size} bytes"),
            ));
        }
        let mut entries = Vec::new();
        if dir.is_inline() {
            let field = &dir.bytes[BLOCK_AT + INLINE_PARENT_LEN..BLOCK_AT + INLINE_BLOCK_LEN];
            let field_at = dir.at + (BLOCK_AT + INLINE_PARENT_LEN) as u64;
            self.parse_dir_block(field, field_at, &mut entries)?;
            let value = self.inline_value(dir)?;
            let capacity = INLINE_BLOCK_LEN as u64 + value.bytes.len() as u64;
            if size > capacity {
                return Err(self.inline_overrun(dir, size, capacity));
            }
            self.parse_dir_block(value.bytes, value.at, &mut entries)?;
            return Ok(entries);
        }
        let physical = self.data_blocks(number, &dir.bytes, size.div_ceil(self.block_size))?;
        let mut block = vec![0u8; self.block_size as usize];
        for at in physical {
            self.read(at, &mut block)?;
            self.parse_dir_block(&block, at, &mut entries)?;
        }
        Ok(entries)
    }

    /// The `size` bytes of an inline inode: the block field, then the `system.data` value.
    fn inline_data(&self, inode: &RawInode) -> Result<Vec<u8>, FsError> {
        let size = inode.size();
        let value = self.inline_value(inode)?;
        let capacity = INLINE_BLOCK_LEN as u64 + value.bytes.len() as u64;
        if size > capacity {
            return Err(self.inline_overrun(inode, size, capacity));
        }
        let size = size as usize;
        let head = size.min(INLINE_BLOCK_LEN);
        let mut data = Vec::with_capacity(size);
        data.extend_from_slice(&inode.bytes[BLOCK_AT..BLOCK_AT + head]);
        data.extend_from_slice(&value.bytes[..size - head]);
        Ok(data)
    }

    /// The error for an inline inode claiming more bytes than it holds.
    fn inline_overrun(&self, inode: &RawInode, size: u64, capacity: u64) -> FsError {
        self.corrupt(
            Some(inode.at + 0x04),
            format!(
                "inode {} claims {size} bytes of inline data, but its block field and \
                 system.data value hold {capacity}",
                inode.number
            ),
        )
    }

    /// The value of the `system.data` attribute in the body of `inode`, which holds its
    /// inline data past the block field; empty if the inode has none.
    fn inline_value<'a>(&self, inode: &'a RawInode) -> Result<InlineValue<'a>, FsError> {
        let none = InlineValue {
            at: inode.at,
            bytes: &[],
        };
        let b = &inode.bytes;
        if b.len() <= 128 {
            return Ok(none);
        }
        let start = 128 + usize::from(u16_le(b, 0x80));
        if start + 4 > b.len() || u32_le(b, start) != XATTR_MAGIC {
            return Ok(none);
        }
        let table = &b[start + 4..];
        let table_at = inode.at + start as u64 + 4;
        for entry in xattr_entries(table) {
            let XattrEntry {
                pos,
                name,
                index,
                value_offs,
                value_inum,
                value_size,
            } = entry.map_err(|pos| {
                self.corrupt(
                    Some(table_at + pos as u64),
                    format!(
                        "inode {}: an extended attribute entry runs past the inode",
                        inode.number
                    ),
                )
            })?;
            if index == SYSTEM_DATA_INDEX && name == SYSTEM_DATA_NAME {
                let bytes = table
                    .get(value_offs..value_offs.saturating_add(value_size))
                    .filter(|_| value_inum == 0)
                    .ok_or_else(|| {
                        self.corrupt(
                            Some(table_at + pos as u64),
                            format!(
                                "inode {}: its inline data (system.data, {value_size} bytes \
                                 at {value_offs}) lies outside the inode",
                                inode.number
                            ),
                        )
                    })?;
                return Ok(InlineValue {
                    at: table_at + value_offs as u64,
                    bytes,
                });
            }
        }
        Ok(none)
    }

    /// The byte offsets of the first `blocks` blocks of inode `number`'s data, holes
    /// left out.
    fn data_blocks(&self, number: u32, inode: &[u8], blocks: u64) -> Result<Vec<u64>, FsError> {
        let mut physical = Vec::new();
        let map = &inode[0x28..0x28 + 60];
        if u32_le(inode, 0x20) & EXTENTS_FL != 0 {
            // Each leaf read maps at least one block and index nodes are fewer than leaves,
            // so a tree needing more reads than this is built to loop.
            let mut walk = ExtentWalk {
                number,
                blocks,
                reads: 2 * blocks + 8,
                out: &mut physical,
            };
            self.extent_blocks(map, MAX_EXTENT_DEPTH, &mut walk)?;
        } else {
            self.mapped_blocks(map, blocks, &mut physical)?;
        }
        Ok(physical)
    }

    /// Appends the byte offsets of the blocks an extent (sub)tree maps below logical
    /// block `walk.blocks`, in logical order; unwritten extents read as zeros and are
    /// skipped.
    fn extent_blocks(
        &self,
        node: &[u8],
        depth_left: u16,
        walk: &mut ExtentWalk,
    ) -> Result<(), FsError> {
        let (blocks, number) = (walk.blocks, walk.number);
        let bad =
            |detail: String| self.corrupt(None, format!("inode {number}: extent tree: {detail}"));
        let (entries, depth) = extent_node(node, depth_left).map_err(bad)?;
        for entry in node[12..12 + entries * 12].chunks_exact(12) {
            let start_hi = u64::from(u16_le(entry, 6 + usize::from(depth > 0) * 2));
            if depth > 0 {
                let leaf = u64::from(u32_le(entry, 4)) | start_hi << 32;
                walk.reads = walk
                    .reads
                    .checked_sub(1)
                    .ok_or_else(|| bad(format!("more nodes than {blocks} blocks need")))?;
                let mut child = vec![0u8; self.block_size as usize];
                self.read(self.block_offset(leaf)?, &mut child)?;
                self.extent_blocks(&child, depth, walk)?;
                continue;
            }
            let logical = u64::from(u32_le(entry, 0));
            let raw_len = u16_le(entry, 4);
            // Lengths above 32768 mark unwritten extents, which read as zeros.
            if raw_len > 32_768 {
                continue;
            }
            let start = u64::from(u32_le(entry, 8)) | start_hi << 32;
            for i in 0..u64::from(raw_len) {
                if logical + i >= blocks {
                    break;
                }
                if walk.out.len() as u64 >= blocks {
                    return Err(bad(format!("more than the {blocks} blocks the size gives")));
                }
                walk.out.push(self.block_offset(start + i)?);
            }
        }
        Ok(())
    }

    /// Appends the byte offsets of the first `blocks` blocks of a block map (12 direct
    /// blocks, then single, double and triple indirect ones); holes are skipped.
    fn mapped_blocks(&self, map: &[u8], blocks: u64, out: &mut Vec<u64>) -> Result<(), FsError> {
        let mut left = blocks;
        for slot in 0..15 {
            if left == 0 {
                break;
            }
            let block = u64::from(u32_le(map, slot * 4));
            let level = slot.saturating_sub(11) as u32;
            self.mapped(block, level, &mut left, out)?;
        }
        Ok(())
    }

    /// One block-map pointer of `level` (0 for a data block): appends the data blocks it
    /// leads to, counting `left` down.
    fn mapped(
        &self,
        block: u64,
        level: u32,
        left: &mut u64,
        out: &mut Vec<u64>,
    ) -> Result<(), FsError> {
        let per_block = self.block_size / 4;
        if block == 0 {
            // A hole: as many blocks as the pointer would cover.
            *left = left.saturating_sub(per_block.saturating_pow(level));
            return Ok(());
        }
        if level == 0 {
            *left -= 1;
            out.push(self.block_offset(block)?);
            return Ok(());
        }
        let mut pointers = vec![0u8; self.block_size as usize];
        self.read(self.block_offset(block)?, &mut pointers)?;
        for pointer in pointers.chunks_exact(4) {
            if *left == 0 {
                break;
            }
            self.mapped(u64::from(u32_le(pointer, 0)), level - 1, left, out)?;
        }
        Ok(())
    }

    /// Adds the live entries of one directory block read at `at` (or of one part of an
    /// inline directory), whose records must fill it exactly.
    fn parse_dir_block(
        &self,
        block: &[u8],
        at: u64,
        entries: &mut Vec<(Vec<u8>, u32)>,
    ) -> Result<(), FsError> {
        let mut pos = 0;
        while pos + 8 <= block.len() {
            let number = u32_le(block, pos);
            let rec_len = usize::from(u16_le(block, pos + 4));
            let name_len = usize::from(block[pos + 6]);
            if rec_len < 8 || pos + rec_len > block.len() || 8 + name_len > rec_len {
                return Err(self.corrupt(
                    Some(at + pos as u64),
                    format!(
                        "directory entry of {rec_len} bytes with a name of {name_len} in a \
                         record area of {} bytes at its byte {pos}",
                        block.len()
                    ),
                ));
            }
            let name = &block[pos + 8..pos + 8 + name_len];
            if number != 0 && name != b"." && name != b".." && !name.is_empty() {
                if entries.len() >= MAX_DIR_ENTRIES {
                    return Err(FsError::limit(
                        &self.what,
                        format!("a directory has more than {MAX_DIR_ENTRIES} entries"),
                    ));
                }
                entries.push((name.to_vec(), number));
            }
            pos += rec_len;
        }
        if pos != block.len() {
            return Err(self.corrupt(
                Some(at + pos as u64),
                format!(
                    "directory entries end {} bytes short of their record area",
                    block.len() - pos
                ),
            ));
        }
        Ok(())
    }

    /// The attributes in the inode body and in the attribute block of inode `number`.
    fn xattrs(&self, number: u32, inode: &[u8], extras: &mut InodeExtras) -> Result<(), FsError> {
        if inode.len() > 128 {
            let start = 128 + usize::from(u16_le(inode, 0x80));
            if start + 4 <= inode.len() && u32_le(inode, start) == XATTR_MAGIC {
                let body = &inode[start + 4..];
                self.parse_xattrs(number, body, body, extras);
            }
        }
        let mut acl = u64::from(u32_le(inode, 0x68));
        if self.desc_size >= 64 {
            acl |= u64::from(u16_le(inode, 0x76)) << 32;
        }
        if acl != 0 {
            let mut block = vec![0u8; self.block_size as usize];
            self.read(self.block_offset(acl)?, &mut block)?;
            if u32_le(&block, 0) != XATTR_MAGIC || u32_le(&block, 8) != 1 {
                extras.warnings.push(format!(
                    "inode {number}: the extended attribute block {acl} has no valid header"
                ));
            } else {
                self.parse_xattrs(number, &block[32..], &block, extras);
            }
        }
        Ok(())
    }

    /// Parses the entries in `table`, whose values lie in `values` at their offsets.
    fn parse_xattrs(&self, number: u32, table: &[u8], values: &[u8], extras: &mut InodeExtras) {
        for entry in xattr_entries(table) {
            let Ok(XattrEntry {
                name,
                index,
                value_offs,
                value_inum,
                value_size,
                ..
            }) = entry
            else {
                extras.warnings.push(format!(
                    "inode {number}: an extended attribute entry runs past its table"
                ));
                return;
            };
            if index == SYSTEM_DATA_INDEX && name == SYSTEM_DATA_NAME {
                // Inline data (read as the file's contents); `getxattr` does not show it.
                continue;
            }
            let name = String::from_utf8_lossy(name);
            let Some(full) = full_name(index, &name) else {
                extras.warnings.push(format!(
                    "inode {number}: extended attribute {name:?} in unknown namespace {index} skipped"
                ));
                continue;
            };
            let held;
            let value = if value_inum != 0 {
                match self.value_inode(value_inum, value_size) {
                    Ok(value) => {
                        held = value;
                        Some(&held[..])
                    }
                    Err(why) => {
                        extras.warnings.push(format!(
                            "inode {number}: the value of extended attribute {full} is kept in \
                             inode {value_inum}, which {why}"
                        ));
                        continue;
                    }
                }
            } else {
                values.get(value_offs..value_offs.saturating_add(value_size))
            };
            let Some(value) = value else {
                extras.warnings.push(format!(
                    "inode {number}: the value of extended attribute {full} lies outside its \
                     block ({value_size} bytes at {value_offs})"
                ));
                continue;
            };
            let value = if index == 2 || index == 3 {
                match acl_to_xattr(value) {
                    Some(v) => v,
                    None => {
                        extras
                            .warnings
                            .push(format!("inode {number}: {full} is not a valid ext4 ACL"));
                        continue;
                    }
                }
            } else {
                value.to_vec()
            };
            extras.xattrs.push((full, value));
        }
    }

    /// The `size` bytes of an attribute value kept in inode `number` (the `ea_inode`
    /// feature); `Err` completes "which ..." with why it is not read.
    fn value_inode(&self, number: u32, size: usize) -> Result<Vec<u8>, String> {
        if size > MAX_XATTR_VALUE {
            return Err(format!(
                "is said to hold {size} bytes (Linux allows at most {MAX_XATTR_VALUE})"
            ));
        }
        let inode = self
            .inode(number)
            .map_err(|e| format!("cannot be read: {e}"))?
            .bytes;
        if u32_le(&inode, 0x20) & EA_INODE_FL == 0 {
            return Err("is not marked as an attribute's inode".to_owned());
        }
        if file_size(&inode) != size as u64 {
            return Err(format!(
                "holds {} bytes where the entry says {size}",
                file_size(&inode)
            ));
        }
        let blocks = (size as u64).div_ceil(self.block_size);
        let offsets = self
            .data_blocks(number, &inode, blocks)
            .map_err(|e| format!("cannot be read: {e}"))?;
        if offsets.len() as u64 != blocks {
            return Err("has holes".to_owned());
        }
        let mut value = vec![0u8; blocks as usize * self.block_size as usize];
        for (block, at) in value
            .chunks_exact_mut(self.block_size as usize)
            .zip(offsets)
        {
            self.read(at, block)
                .map_err(|e| format!("cannot be read: {e}"))?;
        }
        value.truncate(size);
        Ok(value)
    }

    /// The byte offset of block `block`, which must lie inside the volume.
    fn block_offset(&self, block: u64) -> Result<u64, FsError> {
        block
            .checked_mul(self.block_size)
            .filter(|&at| at.saturating_add(self.block_size) <= self.len)
            .ok_or_else(|| {
                self.corrupt(
                    None,
                    format!("block {block} lies past the end of the volume"),
                )
            })
    }

    /// Reads `buf` at `at`, taking each block's newest committed copy in the journal
    /// where there is one.
    fn read(&self, mut at: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let mut reader = self.reader.borrow_mut();
        if self.overlay.is_empty() {
            return crate::read_exact(&mut **reader, &self.what, at, buf);
        }
        let len = <[u8]>::len(buf);
        let mut done = 0;
        while done < len {
            let (block, within) = (at / self.block_size, at % self.block_size);
            let n = ((self.block_size - within) as usize).min(len - done);
            let part = &mut buf[done..done + n];
            match self.overlay.get(&block) {
                Some(copy) => {
                    crate::read_exact(&mut **reader, &self.what, copy.at + within, part)?;
                    if copy.escaped && within < 4 {
                        let magic = &ESCAPED_MAGIC[within as usize..];
                        let k = magic.len().min(n);
                        part[..k].copy_from_slice(&magic[..k]);
                    }
                }
                None => crate::read_exact(&mut **reader, &self.what, at, part)?,
            }
            done += n;
            at += n as u64;
        }
        Ok(())
    }

    fn corrupt(&self, offset: Option<u64>, detail: String) -> FsError {
        FsError::corrupt(&self.what, offset, detail)
    }
}

/// One entry of an extended attribute table, at byte `pos` of the table:
///
/// ```text
/// NAME_LEN(u8) NAME_INDEX(u8) VALUE_OFFS(u16) VALUE_INUM(u32) VALUE_SIZE(u32) HASH(u32) NAME
/// ```
///
/// padded to a multiple of 4 bytes.
struct XattrEntry<'a> {
    pos: usize,
    name: &'a [u8],
    index: u8,
    value_offs: usize,
    value_inum: u32,
    value_size: usize,
}

/// The entries of an attribute table, up to the four zero bytes that end it (or its end).
/// An entry whose name runs past the table is `Err` with its position, and the last.
fn xattr_entries(table: &[u8]) -> impl Iterator<Item = Result<XattrEntry<'_>, usize>> {
    let mut pos = Some(0);
    std::iter::from_fn(move || {
        let at = pos.take()?;
        if at + 16 > table.len() || u32_le(table, at) == 0 {
            return None;
        }
        let name_len = usize::from(table[at]);
        let Some(name) = table.get(at + 16..at + 16 + name_len) else {
            return Some(Err(at));
        };
        pos = Some(at + (16 + name_len).next_multiple_of(4));
        Some(Ok(XattrEntry {
            pos: at,
            name,
            index: table[at + 1],
            value_offs: usize::from(u16_le(table, at + 2)),
            value_inum: u32_le(table, at + 4),
            value_size: u32_le(table, at + 8) as usize,
        }))
    })
}

/// Checks the header of an extent tree node found where a node of depth below
/// `depth_left` belongs; returns its entry count and depth.
fn extent_node(node: &[u8], depth_left: u16) -> Result<(usize, u16), String> {
    if u16_le(node, 0) != EXTENT_MAGIC {
        return Err("no extent header magic".to_owned());
    }
    let entries = usize::from(u16_le(node, 2));
    let depth = u16_le(node, 6);
    if 12 + entries * 12 > node.len() {
        return Err(format!(
            "{entries} entries in a node of {} bytes",
            node.len()
        ));
    }
    if depth >= depth_left {
        return Err(format!("a node of depth {depth} below the allowed depth"));
    }
    Ok((entries, depth))
}

/// An extent tree being walked: whose it is, how many blocks are wanted, how many more
/// nodes may be read, and the blocks found.
struct ExtentWalk<'a> {
    number: u32,
    blocks: u64,
    reads: u64,
    out: &'a mut Vec<u64>,
}

/// Where the value of `system.data` lies in the volume, and its bytes.
struct InlineValue<'a> {
    at: u64,
    bytes: &'a [u8],
}

/// Nanoseconds since 1970 of a timestamp: signed seconds, and where the inode holds one,
/// the extra word (two more bits of seconds, then nanoseconds); `None` for nanoseconds
/// past a second.
fn timestamp(seconds: u32, extra: Option<u32>) -> Option<Option<i64>> {
    let mut secs = i64::from(seconds as i32);
    let mut nanos = 0;
    if let Some(extra) = extra {
        secs += i64::from(extra & 0x3) << 32;
        nanos = extra >> 2;
        if nanos >= 1_000_000_000 {
            return None;
        }
    }
    Some(
        secs.checked_mul(1_000_000_000)
            .and_then(|s| s.checked_add(i64::from(nanos))),
    )
}

/// The size field of an inode.
fn file_size(inode: &[u8]) -> u64 {
    u64::from(u32_le(inode, 0x04)) | u64::from(u32_le(inode, 0x6c)) << 32
}

/// The full name of an attribute stored with namespace `index` and suffix `name`, as
/// `getxattr` shows it; `None` for namespaces Linux does not show.
fn full_name(index: u8, name: &str) -> Option<String> {
    let prefix = match index {
        1 => "user.",
        2 => return Some("system.posix_acl_access".to_owned()),
        3 => return Some("system.posix_acl_default".to_owned()),
        4 => "trusted.",
        6 => "security.",
        7 => "system.",
        8 => "system.richacl",
        _ => return None,
    };
    Some(format!("{prefix}{name}"))
}

/// Converts an ACL from ext4's compact form (version 1; entries of 4 bytes, 8 for named
/// users and groups) to the form `setxattr` takes (version 2; entries of 8 bytes).
fn acl_to_xattr(stored: &[u8]) -> Option<Vec<u8>> {
    const USER: u16 = 0x02;
    const GROUP: u16 = 0x08;
    if stored.len() < 4 || u32_le(stored, 0) != 1 {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut pos = 4;
    while pos < stored.len() {
        let tag = u16_le(stored.get(pos..pos + 4)?, 0);
        let perm = u16_le(stored, pos + 2);
        let id = if tag == USER || tag == GROUP {
            let id = u32_le(stored.get(pos..pos + 8)?, 4);
            pos += 8;
            id
        } else {
            pos += 4;
            u32::MAX
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

/// `(major, minor)` from a device inode's block field: the old 8-bit encoding in its first
/// word, or the new one in its second.
fn device_number(inode: &[u8]) -> (u32, u32) {
    let old = u32_le(inode, 0x28);
    if old != 0 {
        return ((old >> 8) & 0xff, old & 0xff);
    }
    let new = u32_le(inode, 0x2c);
    (
        (new & 0xf_ff00) >> 8,
        (new & 0xff) | ((new >> 12) & 0xf_ff00),
    )
}

fn u16_le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_convert_to_the_setxattr_form() {
        // user::rw-, user:1000:r--, group::r--, mask::r--, other::---
        let mut stored = 1u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, None),
            (2, 4, Some(1000u32)),
            (4, 4, None),
            (0x10, 4, None),
            (0x20, 0, None),
        ] {
            stored.extend_from_slice(&tag.to_le_bytes());
            stored.extend_from_slice(&perm.to_le_bytes());
            if let Some(id) = id {
                stored.extend_from_slice(&id.to_le_bytes());
            }
        }
        let xattr = acl_to_xattr(&stored).unwrap();
        assert_eq!(xattr.len(), 4 + 5 * 8);
        assert_eq!(u32_le(&xattr, 0), 2);
        assert_eq!((u16_le(&xattr, 12), u32_le(&xattr, 16)), (2, 1000));
        assert_eq!(u32_le(&xattr, 8), u32::MAX);
        for cut in 0..stored.len() {
            // Cuts inside an entry are refused; cuts between entries give a shorter ACL.
            let _ = acl_to_xattr(&stored[..cut]);
        }
        assert!(acl_to_xattr(&stored[..10]).is_none());
        assert!(acl_to_xattr(&[2, 0, 0, 0]).is_none());
    }

    #[test]
    fn timestamps_decode_with_and_without_their_extra_word() {
        assert_eq!(
            timestamp(1_700_000_000, None),
            Some(Some(1_700_000_000_000_000_000))
        );
        // Before 1970: the seconds are signed.
        assert_eq!(timestamp(u32::MAX, None), Some(Some(-1_000_000_000)));
        // Two more bits of seconds, then nanoseconds.
        let extra = (5 << 2) | 1;
        assert_eq!(
            timestamp(0, Some(extra)),
            Some(Some((1i64 << 32) * 1_000_000_000 + 5))
        );
        assert_eq!(timestamp(0, Some(1_000_000_000 << 2)), None);
    }

    #[test]
    fn device_numbers_decode_in_both_encodings() {
        let mut inode = vec![0u8; 256];
        inode[0x28..0x2c].copy_from_slice(&((8u32 << 8) | 1).to_le_bytes());
        assert_eq!(device_number(&inode), (8, 1));
        inode[0x28..0x2c].fill(0);
        // major 259, minor 300 in the kernel's new_encode_dev.
        let (major, minor) = (259u32, 300u32);
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        inode[0x2c..0x30].copy_from_slice(&new.to_le_bytes());
        assert_eq!(device_number(&inode), (major, minor));
    }
}
