//! UFS2, FreeBSD's file system (its cloud images', and its firewall distributions'
//! default where they do not use ZFS), and UFS1, the BSDs' older one (FreeBSD before 5.0,
//! NetBSD's and OpenBSD's FFS), read-only. No maintained crate reads it, so it is
//! read here, from the layout FreeBSD documents in its headers (`sys/ufs/ffs/fs.h`,
//! `sys/ufs/ufs/dinode.h`, `sys/ufs/ufs/dir.h`).
//!
//! Structures (little-endian, as on the architectures FreeBSD runs VMs on):
//!
//! ```text
//! superblock, at 64 KiB (FreeBSD's newfs), 8 KiB, 0 or 256 KiB:
//!   0x010 IBLKNO(i32, inode table's fragment in a cylinder group) | 0x02c NCG(u32)
//!   0x030 BSIZE(i32) | 0x034 FSIZE(i32, fragment) | 0x038 FRAG(i32, fragments a block)
//!   0x074 NINDIR(i32, addresses an indirect block) | 0x078 INOPB(i32, inodes a block)
//!   0x0b8 IPG(u32, inodes a group) | 0x0bc FPG(i32, fragments a group)
//!   0x0d1 CLEAN(u8) | 0x2a8 VOLNAME(32) | 0x3e8 SBLOCKLOC(i64) | 0x438 SIZE(i64, fragments)
//!   0x520 FLAGS(i32) | 0x528 MAXSYMLINKLEN(i32) | 0x55c MAGIC(i32 = 0x19540119)
//! inode (256 bytes), number N at fragment FPG x (N / IPG) + IBLKNO
//!   + (N % IPG) / INOPB x FRAG, slot N % INOPB:
//!   0x00 MODE(u16) | 0x04 UID(u32) | 0x08 GID(u32) | 0x10 SIZE(u64) | 0x18 BLOCKS(u64)
//!   0x20 ATIME(i64) | 0x28 MTIME | 0x30 CTIME | 0x38 BIRTHTIME | 0x40 MTIMENSEC(i32)
//!   | 0x44 ATIMENSEC | 0x48 CTIMENSEC | 0x4c BIRTHNSEC | 0x70 DB(12 x i64, fragment
//!   addresses of the first blocks; a short symlink's target instead) | 0xd0 IB(3 x i64:
//!   single, double and triple indirect blocks)
//! UFS1 differs: its inodes are 128 bytes (0x00 MODE | 0x08 SIZE(u64) | 0x10 ATIME(i32)
//!   | 0x14 ATIMENSEC | 0x18 MTIME | 0x1c MTIMENSEC | 0x20 CTIME | 0x24 CTIMENSEC
//!   | 0x28 DB(12 x u32) | 0x58 IB(3 x u32) | 0x68 BLOCKS(u32) | 0x70 UID | 0x74 GID),
//!   its addresses 32-bit, its size in fragments OLD_SIZE(i32 at 0x24), and a group's
//!   inodes CGOFFSET(i32 at 0x18) x (group & !CGMASK(i32 at 0x1c)) further in
//! directory, in 512-byte chunks of entries:
//!   INO(u32, 0 for none) | RECLEN(u16) | TYPE(u8) | NAMLEN(u8) | NAME
//! ```
//!
//! A block address of 0 is a hole. Every address, count and length is checked against the
//! volume before it is used; directories are limited as ext's are. The root is inode 2.

use std::collections::HashMap;
use std::rc::Rc;

use tessera_disk_image::ReadAt;

use crate::dir_cache::DirCache;
use crate::ext4::{MAX_DIR_BYTES, MAX_DIR_ENTRIES};
use crate::lvm::{u32_le, u64_le};
use crate::path::{self, Step, Walk};
use crate::{Extras, FsEntry, FsError, FsKind, read_exact};

/// UFS2's magic number.
pub(crate) const MAGIC: u32 = 0x1954_0119;
/// UFS1's.
pub(crate) const MAGIC_UFS1: u32 = 0x0001_1954;
/// Where the superblock may be, in the order FreeBSD looks.
pub(crate) const SUPERBLOCKS: [u64; 4] = [65_536, 8192, 0, 262_144];
pub(crate) const MAGIC_AT: u64 = 0x55c;
/// Where UFS1's superblock is.
pub(crate) const UFS1_AT: u64 = 8192;
const SUPERBLOCK_LEN: usize = 1376;
const INODE: u64 = 256;
const ROOT: u64 = 2;
const DIRECT: u64 = 12;
const DIRBLKSIZ: usize = 512;
/// `fs_flags`: the superblock's fields are only valid with the ones in the cylinder groups.
const FS_UNCLEAN: i32 = 0x01;
const S_IFMT: u16 = 0o170_000;
const S_IFDIR: u16 = 0o040_000;
const S_IFREG: u16 = 0o100_000;
const S_IFLNK: u16 = 0o120_000;
/// Longest symlink target read.
const MAX_SYMLINK: u64 = 4096;
/// Indirect blocks kept decoded (each a block of addresses).
const CACHED_INDIRECT: usize = 64;

/// The geometry the superblock gives.
#[derive(Clone, Copy)]
struct Geometry {
    /// UFS1: 128-byte inodes, 32-bit addresses, groups staggered.
    ufs1: bool,
    /// UFS1's stagger of each group's start: `cgoffset x (group & !cgmask)` fragments.
    cgoffset: u64,
    cgmask: u64,
    bsize: u64,
    fsize: u64,
    frag: u64,
    nindir: u64,
    inopb: u64,
    ipg: u64,
    fpg: u64,
    ncg: u64,
    iblkno: u64,
    /// The volume's size, in fragments.
    frags: u64,
    maxsymlinklen: u64,
}

impl Geometry {
    fn inode_size(&self) -> u64 {
        if self.ufs1 { 128 } else { INODE }
    }

    /// The fragment where group `group` starts, before UFS1's stagger.
    fn group_start(&self, group: u64) -> Option<u64> {
        let base = group.checked_mul(self.fpg)?;
        if self.ufs1 {
            base.checked_add(self.cgoffset.checked_mul(group & !self.cgmask)?)
        } else {
            Some(base)
        }
    }
}

/// An open UFS1 or UFS2 volume.
pub(crate) struct UfsVolume {
    reader: Box<dyn ReadAt>,
    what: String,
    geo: Geometry,
    label: Option<String>,
    warnings: Vec<String>,
    dirs: DirCache<u64, DirEntry>,
    /// Indirect blocks read last, by fragment address.
    indirect: HashMap<u64, Rc<Vec<u64>>>,
}

/// The parts of an inode this module uses.
#[derive(Clone)]
pub(crate) struct Inode {
    number: u64,
    mode: u16,
    uid: u32,
    gid: u32,
    size: u64,
    blocks: u64,
    times: [Option<i64>; 4],
    /// The 15 addresses: 12 direct, then single, double and triple indirect (a short
    /// symlink's target instead, in their bytes).
    addrs: [u64; 15],
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

/// A regular file of a UFS volume, read on demand.
pub(crate) struct UfsFile {
    path: String,
    inode: Inode,
    pos: u64,
}

impl UfsVolume {
    /// Finds and checks the superblock of the volume in `reader`.
    pub(crate) fn open(mut reader: Box<dyn ReadAt>, what: &str) -> Result<Self, FsError> {
        let corrupt =
            |offset, detail: String| FsError::corrupt(what, offset, format!("UFS: {detail}"));
        let mut found = None;
        for at in SUPERBLOCKS {
            if at + SUPERBLOCK_LEN as u64 > reader.len() {
                continue;
            }
            let mut sb = vec![0u8; SUPERBLOCK_LEN];
            read_exact(&mut *reader, what, at, &mut sb)?;
            let magic = u32_le(&sb, MAGIC_AT as usize);
            // UFS1 keeps its superblock at 8 KiB; a UFS1 magic elsewhere is a leftover.
            if magic == MAGIC || (magic == MAGIC_UFS1 && at == UFS1_AT) {
                found = Some((at, sb, magic == MAGIC_UFS1));
                break;
            }
        }
        let (at, sb, ufs1) = found.ok_or_else(|| corrupt(None, "no superblock".to_owned()))?;
        let i32_at = |o: usize| i64::from(u32_le(&sb, o) as i32);
        let positive = |o: usize, name: &str| {
            u64::try_from(i32_at(o))
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| corrupt(Some(at + o as u64), format!("{name} = {}", i32_at(o))))
        };
        let bsize = positive(0x30, "bsize")?;
        let fsize = positive(0x34, "fsize")?;
        let frag = positive(0x38, "frag")?;
        if !bsize.is_power_of_two()
            || !(4096..=65_536).contains(&bsize)
            || !fsize.is_power_of_two()
            || fsize < 512
            || fsize * frag != bsize
        {
            return Err(corrupt(
                Some(at + 0x30),
                format!("blocks of {bsize} bytes in {frag} fragments of {fsize}"),
            ));
        }
        let address = if ufs1 { 4 } else { 8 };
        let frags = if ufs1 {
            u64::try_from(i32_at(0x24)).unwrap_or(0)
        } else {
            u64::try_from(i64::from_le_bytes(
                sb[0x438..0x440].try_into().unwrap_or_default(),
            ))
            .unwrap_or(0)
        };
        let geo = Geometry {
            ufs1,
            cgoffset: u64::try_from(i32_at(0x18)).unwrap_or(0),
            cgmask: u64::from(u32_le(&sb, 0x1c)),
            bsize,
            fsize,
            frag,
            nindir: positive(0x74, "nindir")?,
            inopb: positive(0x78, "inopb")?,
            ipg: u64::from(u32_le(&sb, 0xb8)),
            fpg: positive(0xbc, "fpg")?,
            ncg: u64::from(u32_le(&sb, 0x2c)),
            iblkno: positive(0x10, "iblkno")?,
            frags,
            maxsymlinklen: u64::try_from(i32_at(0x528)).unwrap_or(0).min(15 * address),
        };
        if geo.nindir != bsize / address
            || geo.inopb != bsize / geo.inode_size()
            || geo.ipg == 0
            || geo.ncg == 0
            || geo.frags == 0
            || geo.ipg.checked_mul(geo.ncg).is_none()
        {
            return Err(corrupt(
                Some(at),
                format!(
                    "inconsistent geometry: {} addresses and {} inodes a block, {} inodes \
                     in each of {} groups, {} fragments",
                    geo.nindir, geo.inopb, geo.ipg, geo.ncg, geo.frags
                ),
            ));
        }
        if geo
            .frags
            .checked_mul(fsize)
            .is_none_or(|end| end > reader.len())
        {
            return Err(corrupt(
                Some(at + 0x438),
                format!(
                    "{} fragments of {fsize} bytes, past the end of the {}-byte volume",
                    geo.frags,
                    reader.len()
                ),
            ));
        }
        let name = &sb[0x2a8..0x2a8 + 32];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(32)];
        let label = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
        let mut warnings = Vec::new();
        if sb[0xd1] == 0 || i32_at(0x520) as i32 & FS_UNCLEAN != 0 {
            warnings.push(format!(
                "{what}: the UFS volume was not cleanly unmounted; files written last may \
                 read as they were before"
            ));
        }
        Ok(UfsVolume {
            reader,
            what: what.to_owned(),
            geo,
            label,
            warnings,
            dirs: DirCache::new(),
            indirect: HashMap::new(),
        })
    }

    pub(crate) fn kind(&self) -> &'static str {
        if self.geo.ufs1 { "ufs1" } else { "ufs2" }
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
        let (name, inode) = path::resolve(self, path)?;
        self.entry(name, &inode)
    }

    pub(crate) fn list(&mut self, path: &str) -> Result<Vec<FsEntry>, FsError> {
        let (_, dir) = path::resolve(self, path)?;
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

    /// Neither extended attributes nor device numbers are read from UFS.
    pub(crate) fn extras(&mut self, path: &str) -> Result<Extras, FsError> {
        path::resolve(self, path)?;
        Ok(Extras::default())
    }

    pub(crate) fn open_file(&mut self, path: &str) -> Result<UfsFile, FsError> {
        let (_, inode) = path::resolve(self, path)?;
        if inode.kind_bits() != S_IFREG {
            return Err(FsError::NotAFile {
                what: self.what.clone(),
                path: path.to_owned(),
            });
        }
        Ok(UfsFile {
            path: path.to_owned(),
            inode,
            pos: 0,
        })
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
        let [atime_ns, mtime_ns, ctime_ns, btime_ns] = inode.times;
        Ok(FsEntry {
            name,
            kind,
            size: inode.size,
            mode: Some(u32::from(inode.mode)),
            uid: Some(inode.uid),
            gid: Some(inode.gid),
            mtime_ns,
            atime_ns,
            ctime_ns,
            btime_ns,
        })
    }

    /// Reads inode `number`.
    fn inode(&mut self, number: u64) -> Result<Inode, FsError> {
        let geo = self.geo;
        if number >= geo.ipg * geo.ncg {
            return Err(self.corrupt(None, format!("inode {number} is past the inode tables")));
        }
        let (group, index) = (number / geo.ipg, number % geo.ipg);
        let fragment = geo
            .group_start(group)
            .and_then(|f| f.checked_add(geo.iblkno))
            .and_then(|f| f.checked_add(index / geo.inopb * geo.frag))
            .filter(|&f| f + geo.frag <= geo.frags)
            .ok_or_else(|| self.corrupt(None, format!("inode {number} is past the volume")))?;
        let size = geo.inode_size();
        let at = fragment * geo.fsize + index % geo.inopb * size;
        let mut raw = [0u8; INODE as usize];
        read_exact(&mut *self.reader, &self.what, at, &mut raw[..size as usize])?;
        let nanos = |seconds: i64, nanos: usize| {
            let ns = i64::from(u32_le(&raw, nanos) as i32);
            seconds
                .checked_mul(1_000_000_000)
                .and_then(|t| t.checked_add(ns))
        };
        let mut addrs = [0u64; 15];
        let mode = u16::from_le_bytes([raw[0], raw[1]]);
        if geo.ufs1 {
            let time = |at: usize, ns: usize| nanos(i64::from(u32_le(&raw, at) as i32), ns);
            for (i, a) in addrs.iter_mut().enumerate() {
                *a = u64::from(u32_le(&raw, 0x28 + 4 * i));
            }
            return Ok(Inode {
                number,
                mode,
                uid: u32_le(&raw, 0x70),
                gid: u32_le(&raw, 0x74),
                size: u64_le(&raw, 0x08),
                blocks: u64::from(u32_le(&raw, 0x68)),
                times: [time(0x10, 0x14), time(0x18, 0x1c), time(0x20, 0x24), None],
                addrs,
            });
        }
        let time = |at: usize, ns: usize| nanos(u64_le(&raw, at) as i64, ns);
        for (i, a) in addrs.iter_mut().enumerate() {
            *a = u64_le(&raw, 0x70 + 8 * i);
        }
        Ok(Inode {
            number,
            mode,
            uid: u32_le(&raw, 4),
            gid: u32_le(&raw, 8),
            size: u64_le(&raw, 0x10),
            blocks: u64_le(&raw, 0x18),
            times: [
                time(0x20, 0x44),
                time(0x28, 0x40),
                time(0x30, 0x48),
                time(0x38, 0x4c),
            ],
            addrs,
        })
    }

    /// The fragment address of logical block `lbn` of `inode` (0: a hole).
    fn block_address(&mut self, inode: &Inode, lbn: u64) -> Result<u64, FsError> {
        if lbn < DIRECT {
            return Ok(inode.addrs[lbn as usize]);
        }
        // Which indirect tree holds it, and its index in that tree.
        let per = self.geo.nindir;
        let mut index = lbn - DIRECT;
        let mut span = per;
        let mut level = 0;
        while index >= span {
            index -= span;
            level += 1;
            if level == 3 {
                return Err(FsError::corrupt(
                    &self.what,
                    None,
                    format!(
                        "inode {}: block {lbn} is past a triple indirect tree",
                        inode.number
                    ),
                ));
            }
            span = span.saturating_mul(per);
        }
        let mut address = inode.addrs[12 + level];
        for depth in (0..=level).rev() {
            if address == 0 {
                return Ok(0);
            }
            let table = self.indirect_block(inode.number, address)?;
            let stride = per.pow(depth as u32);
            address = table[(index / stride % per) as usize];
        }
        Ok(address)
    }

    /// The addresses in the indirect block at fragment `address`.
    fn indirect_block(&mut self, number: u64, address: u64) -> Result<Rc<Vec<u64>>, FsError> {
        if let Some(table) = self.indirect.get(&address) {
            return Ok(Rc::clone(table));
        }
        let at = self.fragment_offset(number, address, self.geo.bsize)?;
        let mut raw = vec![0u8; self.geo.bsize as usize];
        read_exact(&mut *self.reader, &self.what, at, &mut raw)?;
        let table: Vec<u64> = if self.geo.ufs1 {
            raw.chunks_exact(4)
                .map(|b| u64::from(u32_le(b, 0)))
                .collect()
        } else {
            raw.chunks_exact(8).map(|b| u64_le(b, 0)).collect()
        };
        if self.indirect.len() >= CACHED_INDIRECT {
            self.indirect.clear();
        }
        let table = Rc::new(table);
        self.indirect.insert(address, Rc::clone(&table));
        Ok(table)
    }

    /// The byte offset of fragment `address`, checked to hold `len` bytes.
    fn fragment_offset(&self, number: u64, address: u64, len: u64) -> Result<u64, FsError> {
        address
            .checked_mul(self.geo.fsize)
            .filter(|at| {
                at.checked_add(len)
                    .is_some_and(|end| end <= self.geo.frags * self.geo.fsize)
            })
            .ok_or_else(|| {
                self.corrupt(
                    None,
                    format!("inode {number}: block address {address} is past the volume"),
                )
            })
    }

    /// Reads `buf.len()` bytes of `inode`'s data at `offset` (holes as zeros).
    fn read_data(&mut self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let bsize = self.geo.bsize;
        let len = <[u8]>::len(buf);
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let (lbn, into) = (at / bsize, at % bsize);
            let n = ((bsize - into) as usize).min(len - done);
            let out = &mut buf[done..done + n];
            match self.block_address(inode, lbn)? {
                0 => out.fill(0),
                address => {
                    let start = self.fragment_offset(inode.number, address, into + n as u64)?;
                    read_exact(&mut *self.reader, &self.what, start + into, out)?;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn dir_entries(&mut self, dir: &Inode) -> Result<Rc<Vec<DirEntry>>, FsError> {
        if let Some(entries) = self.dirs.get(&dir.number) {
            return Ok(entries);
        }
        let entries = self.read_dir_entries(dir)?;
        Ok(self.dirs.insert(dir.number, entries))
    }

    fn read_dir_entries(&mut self, dir: &Inode) -> Result<Vec<DirEntry>, FsError> {
        if dir.size > MAX_DIR_BYTES {
            return Err(FsError::limit(
                &self.what,
                format!("directory inode {} holds {} bytes", dir.number, dir.size),
            ));
        }
        // A block at a time: the size is the image's to say.
        let mut entries = Vec::new();
        let mut raw = vec![0u8; self.geo.bsize as usize];
        for start in (0..dir.size).step_by(self.geo.bsize as usize) {
            let raw = &mut raw[..(dir.size - start).min(self.geo.bsize) as usize];
            self.read_data(dir, start, raw)?;
            self.parse_dir_block(dir, start, raw, &mut entries)?;
        }
        Ok(entries)
    }

    /// Adds the entries of `raw`, the directory's bytes from `start`, to `entries`.
    fn parse_dir_block(
        &self,
        dir: &Inode,
        start: u64,
        raw: &[u8],
        entries: &mut Vec<DirEntry>,
    ) -> Result<(), FsError> {
        for (chunk_no, chunk) in raw.chunks(DIRBLKSIZ).enumerate() {
            let mut at = 0usize;
            while at + 8 <= chunk.len() {
                let ino = u64::from(u32_le(chunk, at));
                let reclen = usize::from(u16::from_le_bytes([chunk[at + 4], chunk[at + 5]]));
                let namlen = usize::from(chunk[at + 7]);
                if reclen < 8 || at + reclen > chunk.len() || (ino != 0 && 8 + namlen > reclen) {
                    return Err(self.corrupt(
                        None,
                        format!(
                            "directory inode {}: entry at byte {} of its data has length {reclen}",
                            dir.number,
                            start + (chunk_no * DIRBLKSIZ + at) as u64
                        ),
                    ));
                }
                let name = &chunk[at + 8..at + 8 + namlen.min(reclen - 8)];
                if ino != 0 && name != b"." && name != b".." {
                    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                        return Err(self.corrupt(
                            None,
                            format!(
                                "directory inode {}: an entry's name is not valid",
                                dir.number
                            ),
                        ));
                    }
                    if entries.len() >= MAX_DIR_ENTRIES {
                        return Err(FsError::limit(
                            &self.what,
                            format!(
                                "directory inode {} has more than {MAX_DIR_ENTRIES} entries",
                                dir.number
                            ),
                        ));
                    }
                    entries.push(DirEntry {
                        name: name.to_vec(),
                        inode: ino,
                    });
                }
                at += reclen;
            }
        }
        Ok(())
    }

    /// A symlink's target: in the inode itself when short, else in its blocks.
    fn link_target(&mut self, link: &Inode) -> Result<Vec<u8>, FsError> {
        if link.size > MAX_SYMLINK {
            return Err(FsError::limit(
                &self.what,
                format!("symlink inode {} is {} bytes long", link.number, link.size),
            ));
        }
        if link.size < self.geo.maxsymlinklen && link.blocks == 0 {
            let width = if self.geo.ufs1 { 4 } else { 8 };
            let bytes: Vec<u8> = link
                .addrs
                .iter()
                .flat_map(|a| a.to_le_bytes().into_iter().take(width))
                .collect();
            return Ok(bytes[..link.size as usize].to_vec());
        }
        let mut target = vec![0u8; link.size as usize];
        self.read_data(link, 0, &mut target)?;
        Ok(target)
    }

    fn corrupt(&self, offset: Option<u64>, detail: String) -> FsError {
        FsError::corrupt(&self.what, offset, format!("UFS: {detail}"))
    }
}

impl Walk for UfsVolume {
    type Node = Inode;

    fn what(&self) -> &str {
        &self.what
    }

    fn root(&mut self) -> Result<Inode, FsError> {
        self.inode(ROOT)
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

impl UfsFile {
    pub(crate) fn size(&self) -> u64 {
        self.inode.size
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    pub(crate) fn read(&mut self, vol: &mut UfsVolume, buf: &mut [u8]) -> Result<usize, FsError> {
        if self.pos >= self.inode.size {
            return Ok(0);
        }
        let n = (<[u8]>::len(buf) as u64).min(self.inode.size - self.pos) as usize;
        vol.read_data(&self.inode, self.pos, &mut buf[..n])
            .map_err(|e| e.on_path(&self.path))?;
        self.pos += n as u64;
        Ok(n)
    }
}
