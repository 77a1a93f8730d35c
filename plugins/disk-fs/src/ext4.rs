//! ext2, ext3 and ext4 volumes, read through the `ext4-view` crate (extents and block maps,
//! hashed directories, metadata checksums, and replay of a journal left needing recovery, as
//! in a crash-consistent image of a running machine).
//!
//! This module checks what that crate would otherwise trust: it validates the superblock
//! sizes before loading (so a hostile block count cannot size an allocation), resolves
//! paths itself (so a symlink is read only after its length is checked), and keeps each
//! open file's reads within the block range a block map can address. It also shows that
//! crate volumes it would refuse though nothing it reads depends on the feature: with
//! `meta_bg`, `ea_inode` and `mmp` cleared from the superblock it is given, and for
//! `meta_bg` the group descriptors served where it looks for them (see `Source`).
//!
//! That crate does not read inline data (`inline_data`): it is shown the volume without
//! the feature, and never asked about an inode that keeps its data inline nor about a
//! path through a directory that keeps its entries inline. On such a volume every path is
//! first walked by `ext_raw`, which answers for those inodes itself (see
//! [`ExtVolume::lstat`]).
//!
//! The superblock fields read here (offsets inside the superblock, which starts at byte
//! 1024; all little-endian):
//!
//! ```text
//! 0x04 BLOCKS_COUNT_LO(u32) | 0x14 FIRST_DATA_BLOCK(u32) | 0x18 LOG_BLOCK_SIZE(u32)
//! 0x20 BLOCKS_PER_GROUP(u32) | 0x28 INODES_PER_GROUP(u32) | 0x38 MAGIC(u16 = 0xEF53)
//! 0x5C FEATURE_COMPAT(u32) | 0x60 FEATURE_INCOMPAT(u32) | 0x64 FEATURE_RO_COMPAT(u32)
//! 0x78 VOLUME_NAME(16) | 0xFE DESC_SIZE(u16) | 0x150 BLOCKS_COUNT_HI(u32)
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::io;
use std::rc::Rc;

use crc::{CRC_32_ISCSI, Crc};
use ext4_view::{Ext4, Ext4Error, Ext4Read, FileType, Metadata, Timestamp};
use tessera_disk_image::ReadAt;

use crate::ext_layout::{DescriptorLayout, INCOMPAT_META_BG};
use crate::ext_raw::{FileMap, InodeStat, RawExt, RawInode, Run};
use crate::path::{self, MAX_DEPTH, MAX_PATH_BYTES};
use crate::{Extras, FsEntry, FsError, FsKind, read_exact};

/// Offset of the superblock in the volume.
pub(crate) const SUPERBLOCK: u64 = 1024;
/// Offset of the magic number inside the superblock.
pub(crate) const MAGIC_AT: u64 = 0x38;
/// The superblock magic number.
pub(crate) const MAGIC: u16 = 0xef53;
const SUPERBLOCK_LEN: usize = 1024;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
/// ro_compat features ext3 lacks: huge_file, gdt_csum, dir_nlink, extra_isize, metadata_csum.
const RO_COMPAT_EXT4: u32 = 0x8 | 0x10 | 0x20 | 0x40 | 0x400;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
/// Offset of the superblock checksum: CRC-32C of the bytes before it.
const CHECKSUM_AT: usize = 0x3fc;

/// Most block groups accepted: 2^20 groups of 128 MiB (4 KiB blocks) is 128 TiB. Guards the
/// descriptor table that is read and kept in memory when the volume opens.
const MAX_BLOCK_GROUPS: u64 = 1 << 20;
/// Largest descriptor table served for a `meta_bg` volume (a million groups of 64-byte
/// descriptors, 128 TiB of 4 KiB blocks).
const MAX_DESCRIPTOR_TABLE: u64 = 64 << 20;
/// Most entries returned by one listing: guards memory against a directory built to be huge.
pub(crate) const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Largest directory read or searched, in bytes (ten million entries take about 300 MiB): a
/// directory inode can claim terabytes that map onto the same few blocks, and scanning them
/// would never end.
pub(crate) const MAX_DIR_BYTES: u64 = 1 << 30;
/// Most symlinks followed while resolving one path (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// An open ext2/3/4 volume.
pub(crate) struct ExtVolume {
    fs: Ext4,
    /// The inodes as stored, for what `fs` does not show; `Err` says why they are not read.
    raw: Result<Rc<RefCell<RawExt>>, String>,
    what: String,
    kind: &'static str,
    block_size: u64,
    /// Whether the volume has the `inline_data` feature, so that paths are walked by the
    /// raw reader first.
    inline: bool,
    /// What `lstat` found, by path, for the entries looked up or listed last: the reader
    /// beneath finds a name by reading its directory from the start unless the directory
    /// has a hash index (which `mke2fs -d` does not build), so restoring the files of a
    /// large directory would read it several times per file.
    nodes: HashMap<Vec<u8>, Node>,
    warnings: Vec<String>,
}

/// Entries [`ExtVolume::nodes`] keeps; past it the cache starts again empty.
const MAX_CACHED_NODES: usize = 1 << 18;

/// An entry as `lstat` finds it: its metadata, and the inode as stored when the reader
/// beneath must not be asked about it (it keeps its data inline, or lies below a directory
/// that keeps its entries inline).
#[derive(Clone)]
struct Node {
    stat: InodeStat,
    raw: Option<RawInode>,
}

impl ExtVolume {
    /// Validates the superblock and loads the volume.
    pub(crate) fn open(mut reader: Box<dyn ReadAt>, what: &str) -> Result<Self, FsError> {
        let len = reader.len();
        if len < SUPERBLOCK + SUPERBLOCK_LEN as u64 {
            return Err(FsError::corrupt(
                what,
                Some(SUPERBLOCK),
                format!("volume of {len} bytes is too short to hold an ext superblock"),
            ));
        }
        let mut sb = [0u8; SUPERBLOCK_LEN];
        read_exact(&mut *reader, what, SUPERBLOCK, &mut sb)?;
        let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
        let corrupt = |field: usize, detail: String| {
            FsError::corrupt(
                what,
                Some(SUPERBLOCK + field as u64),
                format!("superblock: {detail}"),
            )
        };
        if u16::from_le_bytes([sb[0x38], sb[0x39]]) != MAGIC {
            return Err(corrupt(0x38, "no ext magic number 0xEF53".to_owned()));
        }
        let (compat, incompat, ro_compat) = (u32_at(0x5c), u32_at(0x60), u32_at(0x64));
        let log_block_size = u32_at(0x18);
        if log_block_size > 6 {
            return Err(corrupt(
                0x18,
                format!("block size 2^(10+{log_block_size}) out of range"),
            ));
        }
        let block_size = 1024u64 << log_block_size;
        let blocks_hi = u32_at(0x150);
        if blocks_hi != 0 && incompat & INCOMPAT_64BIT == 0 {
            // The kernel ignores the field then, ext4-view does not: refuse the ambiguity.
            return Err(corrupt(
                0x150,
                format!("high half of the block count is {blocks_hi} without the 64bit feature"),
            ));
        }
        let blocks = u64::from(u32_at(0x04)) | u64::from(blocks_hi) << 32;
        let fs_bytes = blocks.checked_mul(block_size);
        if fs_bytes.is_none_or(|b| b > len) {
            return Err(corrupt(
                0x04,
                format!(
                    "the file system claims {blocks} blocks of {block_size} bytes but the volume \
                     holds only {len} bytes (truncated image, or a partition smaller than its file system)"
                ),
            ));
        }
        let first_data_block = u64::from(u32_at(0x14));
        let per_group = u64::from(u32_at(0x20));
        if per_group == 0 || first_data_block >= blocks {
            return Err(corrupt(
                0x14,
                format!(
                    "{per_group} blocks per group, first data block {first_data_block} of {blocks}"
                ),
            ));
        }
        let groups = (blocks - first_data_block).div_ceil(per_group);
        if groups > MAX_BLOCK_GROUPS {
            return Err(FsError::limit(
                what,
                format!("{groups} block groups (at most {MAX_BLOCK_GROUPS} are read)"),
            ));
        }
        if u32_at(0x28) == 0 {
            return Err(corrupt(0x28, "zero inodes per group".to_owned()));
        }
        if incompat & INCOMPAT_FILETYPE == 0 {
            return Err(FsError::unsupported(
                what,
                "ext2 without the filetype feature (made by a very old mke2fs)",
            ));
        }
        let kind = if incompat
            & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_META_BG)
            != 0
            || ro_compat & RO_COMPAT_EXT4 != 0
        {
            "ext4"
        } else if compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let mut warnings = Vec::new();
        let mut replayed = incompat & INCOMPAT_RECOVER != 0;
        // Features the reader beneath refuses although reading loses nothing by them: the
        // descriptors of `meta_bg` are served where it looks for them (see `Source`),
        // attribute values in inodes of their own (`ea_inode`) are read by `ext_raw`, and
        // multi-mount protection (`mmp`) only guards mounting, and `large_dir` lets
        // directories pass 2 GiB (more than is read, see `MAX_DIR_BYTES`) and their hash
        // indexes reach three levels (the reader beneath descends any number).
        // Inline data (`inline_data`) is read by `ext_raw`, and the reader beneath never
        // sees an inode that has it (see `lstat`).
        let inline = incompat & INCOMPAT_INLINE_DATA != 0;
        let mut hidden = incompat
            & (INCOMPAT_META_BG
                | INCOMPAT_MMP
                | INCOMPAT_EA_INODE
                | INCOMPAT_LARGEDIR
                | INCOMPAT_INLINE_DATA);
        if compat & COMPAT_HAS_JOURNAL != 0 && u32_at(0xe0) == 0 && replayed {
            // An external journal is another device: not in this image, so not replayed.
            hidden |= INCOMPAT_RECOVER;
            replayed = false;
            warnings.push(format!(
                "the journal needs recovery but is on a device of its own (UUID {}), not in \
                 this image; read without it, so changes from just before the backup may be \
                 missing",
                uuid_text(&sb[0xd0..0xe0])
            ));
        }
        let descriptors = if incompat & INCOMPAT_META_BG != 0 {
            Some(Rc::new(descriptor_table(
                &mut *reader,
                what,
                &sb,
                block_size,
                groups,
            )?))
        } else {
            None
        };
        let reader = Rc::new(RefCell::new(reader));
        let raw = RawExt::new(Rc::clone(&reader), what, &sb, block_size);
        let source = |hidden: u32| {
            let superblock = (hidden != 0).then(|| view(&sb, hidden));
            Box::new(Source {
                reader: Rc::clone(&reader),
                superblock,
                reads_left: if descriptors.is_some() { groups } else { 0 },
                descriptors: descriptors.clone(),
            })
        };
        let fs = match Ext4::load(source(hidden)) {
            Ok(fs) => fs,
            // ext4-view replays only journals with 64-bit block numbers and v3 checksums
            // (what the kernel writes on file systems with metadata_csum). Any other journal
            // left needing recovery is read past, as `mount -o ro,noload` would.
            Err(Ext4Error::Incompatible(e)) if replayed && e.to_string().contains("journal") => {
                warnings.push(format!(
                    "the journal needs recovery but cannot be replayed ({e}); read without it, \
                     so changes from just before the backup may be missing"
                ));
                replayed = false;
                Ext4::load(source(hidden | INCOMPAT_RECOVER)).map_err(|e| map_err(what, "", e))?
            }
            Err(e) => return Err(map_err(what, "", e)),
        };
        // Attributes and device numbers are read from the inodes as stored, through the
        // same journal transactions the reader beneath replayed (or read past).
        let raw = raw.and_then(|mut raw| {
            if replayed {
                raw.replay_journal(&sb)?;
            }
            Ok(Rc::new(RefCell::new(raw)))
        });
        if inline && let Err(why) = &raw {
            return Err(FsError::unsupported(
                what,
                format!("the ext4 inline_data feature, as the inodes cannot be read: {why}"),
            ));
        }
        Ok(ExtVolume {
            fs,
            raw,
            what: what.to_owned(),
            kind,
            block_size,
            inline,
            nodes: HashMap::new(),
            warnings,
        })
    }

    /// Damage or limits worked around while opening.
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `"ext2"`, `"ext3"` or `"ext4"`, judged by the features like `blkid` does.
    pub(crate) fn kind(&self) -> &'static str {
        self.kind
    }

    /// The volume label, if set.
    pub(crate) fn label(&self) -> Option<String> {
        let label = self.fs.label().to_str().ok()?.trim_end_matches('\0');
        (!label.is_empty()).then(|| label.to_owned())
    }

    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    pub(crate) fn stat(&mut self, path: &str) -> Result<FsEntry, FsError> {
        let resolved = self.resolve(path)?;
        let node = self.lstat(&resolved, path)?;
        let name = last_name(path);
        self.entry(name, &resolved, &node, path)
    }

    /// The extended attributes and device number of the entry at `path`.
    pub(crate) fn extras(&mut self, path: &str) -> Result<Extras, FsError> {
        let resolved = self.resolve(path)?;
        // Whether it exists, as the reader beneath sees it: a name missing from the
        // directory blocks below is then damage, not a typo.
        self.lstat(&resolved, path)?;
        match &self.raw {
            Ok(raw) => {
                let inode = raw.borrow_mut().extras(&resolved)?;
                Ok(Extras {
                    xattrs: inode.xattrs,
                    device: inode.device,
                    warnings: inode.warnings,
                })
            }
            Err(why) => Err(FsError::unsupported(
                &self.what,
                format!("extended attributes and device numbers are not read: {why}"),
            )),
        }
    }

    pub(crate) fn list(&mut self, path: &str) -> Result<Vec<FsEntry>, FsError> {
        let resolved = self.resolve(path)?;
        let node = self.lstat(&resolved, path)?;
        if !node.stat.is_dir() {
            return Err(FsError::NotADirectory {
                what: self.what.clone(),
                path: path.to_owned(),
            });
        }
        self.check_dir_size(&node.stat, path)?;
        if let Some(dir) = &node.raw {
            return self.list_raw(dir, &resolved, path);
        }
        let dir = self
            .fs
            .read_dir(resolved.as_slice())
            .map_err(|e| map_err(&self.what, path, e))?;
        let mut entries = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| map_err(&self.what, path, e))?;
            let name = entry.file_name();
            if name.as_ref() == b"." || name.as_ref() == b".." {
                continue;
            }
            if entries.len() >= MAX_DIR_ENTRIES {
                return Err(FsError::limit(
                    &self.what,
                    format!("directory {path:?} has more than {MAX_DIR_ENTRIES} entries"),
                ));
            }
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            let child = entry.path();
            let md = entry
                .metadata()
                .map_err(|e| map_err(&self.what, &name, e))?;
            let node = Node {
                stat: view_stat(&md),
                raw: None,
            };
            entries.push(self.entry(name, child.as_ref(), &node, path)?);
            if !self.inline {
                // As `lstat` would find it; on an `inline_data` volume it would also ask
                // the raw reader whether the inode keeps its data inline.
                self.remember(child.as_ref().to_vec(), node);
            }
        }
        Ok(entries)
    }

    /// Lists a directory the reader beneath must not be asked about, at `resolved`.
    fn list_raw(
        &mut self,
        dir: &RawInode,
        resolved: &[u8],
        path: &str,
    ) -> Result<Vec<FsEntry>, FsError> {
        let raw = self.raw()?;
        let children = raw.borrow().list(dir).map_err(|e| e.on_path(path))?;
        let mut entries = Vec::with_capacity(children.len());
        for (name, inode) in children {
            let stat = raw.borrow().stat(&inode).map_err(|e| e.on_path(path))?;
            let mut child = resolved.to_vec();
            if child.last() != Some(&b'/') {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            let node = Node {
                stat,
                raw: Some(inode),
            };
            let name = String::from_utf8_lossy(&name).into_owned();
            entries.push(self.entry(name, &child, &node, path)?);
        }
        Ok(entries)
    }

    /// The map of the file at `resolved` when all of its extents lie in its inode, which
    /// the reader beneath has checked (its checksum included) for `lstat`: read through
    /// that map, the file is not looked up again by name, which in a large directory
    /// without a hash index means reading the directory from its start. `None` for other
    /// files, and whenever the raw reader sees something else than the reader beneath
    /// (which then reads the file, and says what is wrong with it).
    fn map_of_small_file(&mut self, resolved: &[u8], stat: &InodeStat) -> Option<FileMap> {
        let raw = self.raw.as_ref().ok()?;
        let mut raw = raw.borrow_mut();
        let located = raw.locate(resolved).ok()??;
        // The inode the reader beneath found, as far as its metadata tells.
        if raw.stat(&located.inode).ok()? != *stat {
            return None;
        }
        match raw.file_map(&located.inode).ok()? {
            FileMap::Extents(field) if extent_depth(&field) == 0 => Some(FileMap::Extents(field)),
            _ => None,
        }
    }

    /// The raw reader, which an `inline_data` volume is not opened without.
    fn raw(&self) -> Result<Rc<RefCell<RawExt>>, FsError> {
        match &self.raw {
            Ok(raw) => Ok(Rc::clone(raw)),
            Err(why) => Err(FsError::unsupported(
                &self.what,
                format!("the inodes cannot be read as stored: {why}"),
            )),
        }
    }

    pub(crate) fn open_file(&mut self, path: &str) -> Result<ExtFile, FsError> {
        let resolved = self.resolve(path)?;
        let node = self.lstat(&resolved, path)?;
        if !node.stat.is_file() {
            return Err(FsError::NotAFile {
                what: self.what.clone(),
                path: path.to_owned(),
            });
        }
        let (file, mapping) = match &node.raw {
            Some(inode) => {
                let blocks = node.stat.size.div_ceil(self.block_size);
                if blocks > u64::from(u32::MAX) {
                    return Err(FsError::corrupt(
                        &self.what,
                        None,
                        format!(
                            "{path:?} claims {} bytes, past the 2^32 blocks a file may have",
                            node.stat.size
                        ),
                    ));
                }
                let map = self.raw()?.borrow().file_map(inode);
                (None, Some(map.map_err(|e| e.on_path(path))?))
            }
            None => match self.map_of_small_file(&resolved, &node.stat) {
                Some(map) => (None, Some(map)),
                None => {
                    let file = self
                        .fs
                        .open(resolved.as_slice())
                        .map_err(|e| map_err(&self.what, path, e))?;
                    (Some(file), None)
                }
            },
        };
        // A block map addresses 12 direct blocks and one single, one double and one triple
        // indirect block of block_size / 4 entries each.
        let per_block = self.block_size / 4;
        let addressable =
            12 + per_block + per_block * per_block + per_block * per_block * per_block;
        Ok(ExtFile {
            fs: self.fs.clone(),
            what: self.what.clone(),
            path: path.to_owned(),
            resolved,
            file,
            size: node.stat.size,
            pos: 0,
            block_size: self.block_size,
            addressable_blocks: addressable,
            failed: false,
            raw: self.raw.as_ref().ok().cloned(),
            mapping,
            run: None,
        })
    }

    /// Resolves `path` to an absolute path free of symlinks except possibly its final
    /// component, which is never followed. Intermediate symlinks are followed inside the
    /// volume: an absolute target starts again at the volume root, a relative one at the
    /// directory holding the link, and `..` in a target never climbs above the root.
    fn resolve(&mut self, path: &str) -> Result<Vec<u8>, FsError> {
        let mut pending: Vec<Vec<u8>> = path::components(&self.what, path)?
            .into_iter()
            .rev()
            .map(|c| c.as_bytes().to_vec())
            .collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        if !pending.is_empty() {
            let root = self.lstat(b"/", path)?;
            self.check_dir_size(&root.stat, path)?;
        }
        while let Some(part) = pending.pop() {
            match part.as_slice() {
                b"." => continue,
                b".." => {
                    done.pop();
                    continue;
                }
                _ => done.push(part),
            }
            if done.len() > MAX_DEPTH || pending.len() > MAX_DEPTH {
                return Err(FsError::limit(
                    &self.what,
                    format!("path {path:?} resolves deeper than {MAX_DEPTH} components"),
                ));
            }
            if pending.is_empty() {
                break;
            }
            let prefix = join(&done);
            let node = self.lstat(&prefix, path)?;
            if node.stat.is_symlink() {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(FsError::limit(
                        &self.what,
                        format!("more than {MAX_SYMLINKS} symlinks while resolving {path:?}"),
                    ));
                }
                let target = self.link_target(&prefix, &node, path)?;
                done.pop();
                if target.first() == Some(&b'/') {
                    done.clear();
                }
                pending.extend(
                    target
                        .split(|&b| b == b'/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(<[u8]>::to_vec),
                );
            } else if node.stat.is_dir() {
                self.check_dir_size(&node.stat, path)?;
            } else {
                return Err(FsError::NotADirectory {
                    what: self.what.clone(),
                    path: String::from_utf8_lossy(&prefix).into_owned(),
                });
            }
        }
        Ok(join(&done))
    }

    fn check_dir_size(&self, stat: &InodeStat, path: &str) -> Result<(), FsError> {
        if stat.size > MAX_DIR_BYTES {
            return Err(FsError::limit(
                &self.what,
                format!(
                    "a directory on the way to {path:?} claims {} bytes (at most {MAX_DIR_BYTES} are read)",
                    stat.size
                ),
            ));
        }
        Ok(())
    }

    /// Metadata of `resolved` without following its final component. On an `inline_data`
    /// volume the raw reader walks the path first: below a directory keeping its entries
    /// inline, it alone answers; elsewhere the reader beneath gives the metadata (checking
    /// the inodes' checksums on the way), and an inode keeping its data inline is kept
    /// for the raw reader to read.
    fn lstat(&mut self, resolved: &[u8], path: &str) -> Result<Node, FsError> {
        if let Some(node) = self.nodes.get(resolved) {
            return Ok(node.clone());
        }
        let node = self.lstat_uncached(resolved, path)?;
        self.remember(resolved.to_vec(), node.clone());
        Ok(node)
    }

    /// Keeps what `lstat` finds at `resolved`.
    fn remember(&mut self, resolved: Vec<u8>, node: Node) {
        if self.nodes.len() >= MAX_CACHED_NODES {
            self.nodes.clear();
        }
        self.nodes.insert(resolved, node);
    }

    fn lstat_uncached(&mut self, resolved: &[u8], path: &str) -> Result<Node, FsError> {
        let located = if self.inline {
            let raw = self.raw()?;
            let located = raw
                .borrow_mut()
                .locate(resolved)
                .map_err(|e| e.on_path(path))?;
            let Some(located) = located else {
                return Err(FsError::NotFound {
                    what: self.what.clone(),
                    path: path.to_owned(),
                });
            };
            if located.via_inline {
                let stat = raw
                    .borrow()
                    .stat(&located.inode)
                    .map_err(|e| e.on_path(path))?;
                return Ok(Node {
                    stat,
                    raw: Some(located.inode),
                });
            }
            Some(located)
        } else {
            None
        };
        let md = self
            .fs
            .symlink_metadata(resolved)
            .map_err(|e| map_err(&self.what, path, e))?;
        Ok(Node {
            stat: view_stat(&md),
            raw: located.map(|l| l.inode).filter(RawInode::is_inline),
        })
    }

    /// The target of the symlink at `resolved`, after checking its length: the crate
    /// beneath would otherwise allocate whatever length the inode claims.
    fn link_target(
        &mut self,
        resolved: &[u8],
        node: &Node,
        path: &str,
    ) -> Result<Vec<u8>, FsError> {
        let len = node.stat.size;
        if len == 0 || len >= MAX_PATH_BYTES as u64 {
            return Err(FsError::corrupt(
                &self.what,
                None,
                format!(
                    "symlink {:?} claims a target of {len} bytes",
                    String::from_utf8_lossy(resolved),
                ),
            ));
        }
        if let Some(inode) = &node.raw {
            let target = self.raw()?.borrow().link_target(inode, len as usize);
            return target.map_err(|e| e.on_path(path));
        }
        let target = self
            .fs
            .read_link(resolved)
            .map_err(|e| map_err(&self.what, path, e))?;
        Ok(target.as_ref().to_vec())
    }

    fn entry(
        &mut self,
        name: String,
        resolved: &[u8],
        node: &Node,
        path: &str,
    ) -> Result<FsEntry, FsError> {
        let stat = node.stat;
        let kind = if stat.is_dir() {
            FsKind::Directory
        } else if stat.is_file() {
            FsKind::File
        } else if stat.is_symlink() {
            let target = if node.raw.is_none() && self.inline {
                // Listed by the reader beneath, which must not read the target if it is
                // kept inline: looked up again to find out.
                let node = self.lstat(resolved, path)?;
                self.link_target(resolved, &node, path)?
            } else {
                self.link_target(resolved, node, path)?
            };
            FsKind::Symlink(String::from_utf8_lossy(&target).into_owned())
        } else {
            FsKind::Other
        };
        Ok(FsEntry {
            name,
            kind,
            size: stat.size,
            mode: Some(stat.mode),
            uid: Some(stat.uid),
            gid: Some(stat.gid),
            mtime_ns: stat.mtime_ns,
            atime_ns: stat.atime_ns,
            ctime_ns: None,
            btime_ns: stat.btime_ns,
        })
    }
}

/// A regular file of an ext volume, read in order; seeking backwards reopens it, seeking
/// forwards reads through (holes cost no I/O). Files the reader beneath must not read (kept
/// inline, or below an inline directory) are read here through their [`FileMap`].
pub(crate) struct ExtFile {
    fs: Ext4,
    what: String,
    path: String,
    resolved: Vec<u8>,
    /// The file as the reader beneath reads it; `None` when `mapping` reads it all.
    file: Option<ext4_view::File>,
    size: u64,
    pos: u64,
    block_size: u64,
    addressable_blocks: u64,
    /// Set once a read fails: the crate beneath must not be asked again after an error.
    failed: bool,
    /// The volume's own structures, to read the file through its map where the crate
    /// beneath cannot (see [`ExtFile::read_block`]).
    raw: Option<Rc<RefCell<RawExt>>>,
    /// How the file's bytes are found once reads go through the volume's own structures.
    mapping: Option<FileMap>,
    /// The run of blocks found last, from its first logical block.
    run: Option<(u64, Run)>,
}

impl ExtFile {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, FsError> {
        if self.failed {
            return Err(FsError::corrupt(
                &self.what,
                None,
                format!("{:?}: an earlier read of this file failed", self.path),
            ));
        }
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let result = self.read_inner(buf);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// The file as the reader beneath reads it.
    fn view(&mut self) -> Result<&mut ext4_view::File, FsError> {
        let (what, path) = (&self.what, &self.path);
        self.file.as_mut().ok_or_else(|| {
            FsError::corrupt(
                what,
                None,
                format!("{path:?}: read neither inline nor by the reader beneath"),
            )
        })
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize, FsError> {
        if self.mapping.is_some() {
            return self.read_mapped(buf);
        }
        if self.view()?.position() > self.pos {
            let file = self
                .fs
                .open(self.resolved.as_slice())
                .map_err(|e| map_err(&self.what, &self.path, e))?;
            self.file = Some(file);
        }
        let mut scratch = Vec::new();
        while self.view()?.position() < self.pos {
            if scratch.is_empty() {
                scratch = vec![0u8; 64 * 1024];
            }
            let gap = self.pos - self.view()?.position();
            let n = usize::try_from(gap)
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            match self.read_block(&mut scratch[..n]) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                // Stopped at a hole the crate beneath cannot read: the block map reads on
                // from the position asked for.
                Err(_) if self.mapping.is_some() => return self.read_inner(buf),
                Err(err) => return Err(err),
            }
        }
        let mut done = 0;
        while done < <[u8]>::len(buf) {
            let n = match self.read_block(&mut buf[done..]) {
                Ok(n) => n,
                Err(_) if self.mapping.is_some() => {
                    // The crate beneath stopped at a hole it cannot read; the block map
                    // goes on from where it stopped.
                    self.pos = self.view()?.position();
                    return Ok(done + self.read_mapped(&mut buf[done..])?);
                }
                Err(err) => return Err(err),
            };
            if n == 0 {
                break;
            }
            done += n;
        }
        self.pos = self.view()?.position();
        Ok(done)
    }

    /// Reads at the file's position through its map: inline bytes, or blocks where a
    /// hole reads as zeros.
    fn read_mapped(&mut self, buf: &mut [u8]) -> Result<usize, FsError> {
        let end = self
            .size
            .min(self.pos.saturating_add(<[u8]>::len(buf) as u64));
        let bad = |what: &str, detail: String| FsError::corrupt(what, None, detail);
        let map = match &self.mapping {
            Some(FileMap::Inline(data)) => {
                // `data` holds the file's `size` bytes (checked when it was read).
                let (from, to) = (self.pos as usize, end as usize);
                let piece = data.get(from..to).ok_or_else(|| {
                    bad(
                        &self.what,
                        format!(
                            "{:?}: inline data of {} bytes read at {from}..{to}",
                            self.path,
                            data.len()
                        ),
                    )
                })?;
                buf[..piece.len()].copy_from_slice(piece);
                self.pos = end;
                return Ok(piece.len());
            }
            Some(map) => map.clone(),
            None => {
                return Err(bad(
                    &self.what,
                    format!("{:?}: no map to read the file by", self.path),
                ));
            }
        };
        let Some(raw) = self.raw.clone() else {
            return Err(bad(
                &self.what,
                format!("{:?}: the volume's structures cannot be read", self.path),
            ));
        };
        let raw = raw.borrow();
        let mut done = 0;
        while self.pos < end {
            let (logical, within) = (self.pos / self.block_size, self.pos % self.block_size);
            let run = match self.run {
                Some((first, run)) if first <= logical && logical - first < run.blocks => Run {
                    at: run.at.map(|at| at + (logical - first) * self.block_size),
                    blocks: run.blocks - (logical - first),
                },
                _ => {
                    let run = raw.run(&map, logical).map_err(|e| e.on_path(&self.path))?;
                    self.run = Some((logical, run));
                    run
                }
            };
            let n =
                (run.blocks.saturating_mul(self.block_size) - within).min(end - self.pos) as usize;
            let piece = &mut buf[done..done + n];
            match run.at {
                Some(at) => raw
                    .read_at(at + within, piece)
                    .map_err(|e| e.on_path(&self.path))?,
                None => piece.fill(0),
            }
            self.pos += n as u64;
            done += n;
        }
        Ok(done)
    }

    /// One call into the crate beneath, which reads at most to the end of a block.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<usize, FsError> {
        let position = self.view()?.position();
        if position >= self.size {
            return Ok(0);
        }
        if position / self.block_size >= self.addressable_blocks {
            return Err(FsError::unsupported(
                &self.what,
                format!(
                    "{:?}: reading past byte {} (the most a block-mapped file can address)",
                    self.path,
                    self.addressable_blocks.saturating_mul(self.block_size)
                ),
            ));
        }
        let result = self.view()?.read_bytes(buf);
        result.map_err(|e| {
            // ext4-view reads a zero block number in a block map's indirect levels as a
            // block rather than as a hole, and refuses it: the file is sparse, with a hole
            // covering a whole indirect block (ext2/ext3, or ext4 files without extents).
            // The file is then read through its block map here (see `read_inner`), unless
            // the volume's own structures cannot be read.
            if e.to_string().contains("from block 0 (originally 0)") {
                let map = match &self.raw {
                    Some(raw) => raw.borrow_mut().block_map(&self.resolved),
                    None => Ok(None),
                };
                if let Ok(Some(map)) = map {
                    self.mapping = Some(FileMap::Blocks(map));
                }
                FsError::unsupported(
                    &self.what,
                    format!(
                        "{:?}: sparse block-mapped file with a hole spanning an indirect block \
                         near byte {position}, and its block map cannot be read",
                        self.path
                    ),
                )
            } else {
                map_err(&self.what, &self.path, e)
            }
        })
    }
}

/// The volume as `ext4-view` is shown it: the superblock, when given, in place of the
/// stored one; and for a `meta_bg` volume, the group descriptors gathered into the one
/// table after the superblock where that crate reads them. It reads them, one by one and
/// in order, right after the superblock when it loads the volume, so the first
/// `reads_left` reads inside the table are served from it; every later read, of any
/// block, comes from the volume.
struct Source {
    reader: Rc<RefCell<Box<dyn ReadAt>>>,
    superblock: Option<Box<[u8; SUPERBLOCK_LEN]>>,
    descriptors: Option<Rc<DescriptorTable>>,
    reads_left: u64,
}

/// Group descriptors gathered from where `meta_bg` puts them, and where they are served.
struct DescriptorTable {
    start: u64,
    bytes: Vec<u8>,
}

/// A failed read, kept whole so the error can name the offset.
#[derive(Debug)]
struct ReadFailed {
    offset: u64,
    len: usize,
    source: io::Error,
}

impl fmt::Display for ReadFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read of {} bytes at byte {} failed: {}",
            self.len, self.offset, self.source
        )
    }
}

impl Error for ReadFailed {}

impl Ext4Read for Source {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn Error + Send + Sync + 'static>> {
        if self.reads_left > 0
            && let Some(table) = &self.descriptors
        {
            let len = <[u8]>::len(dst) as u64;
            if let Some(from) = start_byte.checked_sub(table.start)
                && from.saturating_add(len) <= table.bytes.len() as u64
            {
                dst.copy_from_slice(&table.bytes[from as usize..(from + len) as usize]);
                self.reads_left -= 1;
                if self.reads_left == 0 {
                    self.descriptors = None;
                }
                return Ok(());
            }
        }
        self.reader
            .borrow_mut()
            .read_exact_at(start_byte, dst)
            .map_err(|source| {
                Box::new(ReadFailed {
                    offset: start_byte,
                    len: <[u8]>::len(dst),
                    source,
                }) as Box<dyn Error + Send + Sync>
            })?;
        if let Some(patch) = &self.superblock {
            // Copy the part of the patched superblock that the read overlaps.
            let end = start_byte.saturating_add(<[u8]>::len(dst) as u64);
            let from = start_byte.max(SUPERBLOCK);
            let to = end.min(SUPERBLOCK + SUPERBLOCK_LEN as u64);
            if from < to {
                let (d, p) = ((from - start_byte) as usize, (from - SUPERBLOCK) as usize);
                let n = (to - from) as usize;
                dst[d..d + n].copy_from_slice(&patch[p..p + n]);
            }
        }
        Ok(())
    }
}

/// The superblock `sb` with the incompatible features `hidden` cleared (and its checksum
/// made again where the volume has one).
fn view(sb: &[u8; SUPERBLOCK_LEN], hidden: u32) -> Box<[u8; SUPERBLOCK_LEN]> {
    let mut patched = Box::new(*sb);
    let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
    patched[0x60..0x64].copy_from_slice(&(incompat & !hidden).to_le_bytes());
    if u32::from_le_bytes([sb[0x64], sb[0x65], sb[0x66], sb[0x67]]) & RO_COMPAT_METADATA_CSUM != 0 {
        let crc = Crc::<u32>::new(&CRC_32_ISCSI).checksum(&patched[..CHECKSUM_AT]) ^ !0;
        patched[CHECKSUM_AT..].copy_from_slice(&crc.to_le_bytes());
    }
    patched
}

/// The descriptors of `groups` groups of a `meta_bg` volume, read from where that layout
/// keeps them, to be served where the table would be without it.
fn descriptor_table(
    reader: &mut dyn ReadAt,
    what: &str,
    sb: &[u8; SUPERBLOCK_LEN],
    block_size: u64,
    groups: u64,
) -> Result<DescriptorTable, FsError> {
    let layout = DescriptorLayout::new(sb, block_size).map_err(|detail| {
        FsError::corrupt(what, Some(SUPERBLOCK), format!("superblock: {detail}"))
    })?;
    let bytes = groups * layout.desc_size();
    if bytes > MAX_DESCRIPTOR_TABLE {
        return Err(FsError::limit(
            what,
            format!("{bytes} bytes of group descriptors (at most {MAX_DESCRIPTOR_TABLE} are read)"),
        ));
    }
    let len = reader.len();
    let mut table = vec![0u8; bytes.next_multiple_of(block_size) as usize];
    for (nr, block) in table.chunks_exact_mut(block_size as usize).enumerate() {
        let at = layout
            .table_block(nr as u64)
            .and_then(|b| b.checked_mul(block_size))
            .filter(|at| at.saturating_add(block_size) <= len)
            .ok_or_else(|| {
                FsError::corrupt(
                    what,
                    None,
                    format!(
                        "block {nr} of the group descriptors (meta_bg) lies past the end of \
                         the volume"
                    ),
                )
            })?;
        read_exact(reader, what, at, block)?;
    }
    table.truncate(bytes as usize);
    Ok(DescriptorTable {
        start: (SUPERBLOCK / block_size + 1) * block_size,
        bytes: table,
    })
}

/// A UUID as `blkid` prints it.
fn uuid_text(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Turns an error of the crate beneath into one naming the volume and path.
fn map_err(what: &str, path: &str, e: Ext4Error) -> FsError {
    let what_s = what.to_owned();
    let path_s = path.to_owned();
    match e {
        Ext4Error::NotFound => FsError::NotFound {
            what: what_s,
            path: path_s,
        },
        Ext4Error::NotADirectory => FsError::NotADirectory {
            what: what_s,
            path: path_s,
        },
        Ext4Error::IsADirectory | Ext4Error::IsASpecialFile => FsError::NotAFile {
            what: what_s,
            path: path_s,
        },
        Ext4Error::Io(inner) => match inner.downcast::<ReadFailed>() {
            Ok(r) => FsError::io(what, r.offset, r.len, r.source),
            Err(other) => FsError::io(what, 0, 0, io::Error::other(other.to_string())),
        },
        Ext4Error::Incompatible(i) => FsError::unsupported(what, i.to_string()),
        Ext4Error::Encrypted => FsError::unsupported(what, format!("{path:?} is encrypted")),
        Ext4Error::FileTooLarge | Ext4Error::PathTooLong | Ext4Error::TooManySymlinks => {
            FsError::limit(what, format!("{path:?}: {e}"))
        }
        Ext4Error::MalformedPath | Ext4Error::NotUtf8 => FsError::InvalidPath {
            what: what_s,
            path: path_s,
            reason: e.to_string(),
        },
        other => {
            let detail = if path.is_empty() {
                other.to_string()
            } else {
                format!("{path:?}: {other}")
            };
            FsError::corrupt(what, None, detail)
        }
    }
}

/// The depth of the extent tree whose header starts an inode's block field: 0 when the
/// extents themselves follow it in the inode.
fn extent_depth(field: &[u8; 60]) -> u16 {
    u16::from_le_bytes([field[6], field[7]])
}

fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 1);
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn last_name(path: &str) -> String {
    path.split('/')
        .rfind(|c| !c.is_empty() && *c != ".")
        .unwrap_or("")
        .to_owned()
}

/// What `lstat` shows, as the reader beneath gives it.
fn view_stat(md: &Metadata) -> InodeStat {
    InodeStat {
        mode: type_bits(md.file_type()) | u32::from(md.mode()),
        size: md.len(),
        uid: md.uid(),
        gid: md.gid(),
        atime_ns: nanos(md.accessed()),
        mtime_ns: nanos(md.modified()),
        btime_ns: md.created().and_then(nanos),
    }
}

/// The `S_IFMT` bits of `st_mode` for a file type.
fn type_bits(t: FileType) -> u32 {
    if t.is_dir() {
        0o040_000
    } else if t.is_regular_file() {
        0o100_000
    } else if t.is_symlink() {
        0o120_000
    } else if t.is_char_dev() {
        0o020_000
    } else if t.is_block_dev() {
        0o060_000
    } else if t.is_fifo() {
        0o010_000
    } else if t.is_socket() {
        0o140_000
    } else {
        0
    }
}

fn nanos(t: Timestamp) -> Option<i64> {
    t.seconds()
        .checked_mul(1_000_000_000)?
        .checked_add(i64::from(t.nanoseconds()))
}
