//! A file system on a partition (or a whole disk), whatever its format: [`open_volume`]
//! recognises it by its signature and [`Volume`] answers listings, metadata and file reads
//! the same way for ext, XFS, btrfs, FAT, exFAT and NTFS.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use tessera_disk_image::ReadAt;

use crate::btrfs::{self, BtrfsFile, BtrfsVolume};
use crate::exfat::{self, ExfatFile, ExfatVolume};
use crate::ext4::{self, ExtFile, ExtVolume};
use crate::fat::{self, FatFile, FatVolume};
use crate::keramics_io::StreamFile;
use crate::ntfs::NtfsVolume;
use crate::ufs::{self, UfsFile, UfsVolume};
use crate::xfs::{self, XfsFile, XfsVolume};
use crate::{FsError, read_exact};

/// What a directory entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link, with its target as stored (never followed for the entry itself).
    Symlink(String),
    /// A device node, FIFO or socket: [`FsEntry::mode`] says which.
    Other,
}

/// A file, directory or other object in a volume, with the metadata the format keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsEntry {
    /// The name in its directory (`""` for the root). ext names that are not UTF-8 are
    /// converted lossily. Never empty otherwise, never `.` or `..`, never holds `/` or NUL.
    pub name: String,
    /// What it is.
    pub kind: FsKind,
    /// Size in bytes (0 for FAT and exFAT directories).
    pub size: u64,
    /// `st_mode`: permission bits and file type bits (`None` on FAT and exFAT).
    pub mode: Option<u32>,
    /// Owner (`None` on FAT and exFAT).
    pub uid: Option<u32>,
    /// Group (`None` on FAT and exFAT).
    pub gid: Option<u32>,
    /// Last modification, nanoseconds since the Unix epoch.
    pub mtime_ns: Option<i64>,
    /// Last access (FAT keeps only the date).
    pub atime_ns: Option<i64>,
    /// Last status change (`None` on FAT and exFAT, which have none, and on ext, whose
    /// reader does not expose it).
    pub ctime_ns: Option<i64>,
    /// Creation (ext4 inodes of 256 bytes or more, XFS version 5, btrfs, FAT, exFAT and
    /// NTFS).
    pub btime_ns: Option<i64>,
}

/// What a listing does not carry: an entry's extended attributes and, for a device node,
/// its device number (ext, XFS and btrfs: FAT, exFAT and NTFS give neither here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    /// `(name, value)`, the name with its namespace (`user.`, `security.`, `trusted.`,
    /// `system.posix_acl_access`, ...); ACLs in the form `setxattr` takes.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// `(major, minor)` of a character or block device node.
    pub device: Option<(u32, u32)>,
    /// Attributes that could not be read, each with the reason.
    pub warnings: Vec<String>,
}

/// An open file system.
///
/// Paths are `/`-separated and relative to the volume root (a leading `/` is allowed, `""`
/// is the root); `.` and empty components are ignored and `..` is refused. The final
/// component is never followed if it is a symlink. Intermediate symlinks (ext, XFS and btrfs) are
/// followed inside the volume: an absolute target starts at the volume root, so a link never
/// leads out of it. FAT lookups ignore case and also accept the 8.3 short name; exFAT
/// lookups take an exact match, else one that ignores case.
///
/// A corrupt image can make a directory its own descendant. FAT lookups detect it; on ext,
/// paths are limited to 256 components, so a recursive walk ends with
/// [`FsError::LimitExceeded`].
pub struct Volume {
    inner: Inner,
}

enum Inner {
    Ext(ExtVolume),
    Fat(FatVolume),
    Exfat(ExfatVolume),
    Ntfs(NtfsVolume),
    Xfs(XfsVolume),
    Btrfs(BtrfsVolume),
    Ufs(UfsVolume),
}

/// Opens the file system in `reader` (a partition's [`Slice`](crate::Slice), or a whole
/// disk without a partition table). `what` names the volume in errors, e.g. `disk0/part1`.
///
/// ext2/3/4 is recognised by the superblock magic 0xEF53 at byte 1080, XFS by `XFSB` at
/// byte 0, btrfs by `_BHRfS_M` in its superblock at 64 KiB, NTFS and exFAT by the
/// `NTFS    ` and `EXFAT   ` signatures of their boot sectors, UFS2 by its magic number in
/// a superblock where FreeBSD looks for one (64 KiB, 8 KiB, 0, 256 KiB) and UFS1 by its
/// own at 8 KiB, FAT by its boot sector;
/// anything else is [`FsError::UnknownFilesystem`], naming the format if its signature is
/// known.
pub fn open_volume(reader: Box<dyn ReadAt>, what: &str) -> Result<Volume, FsError> {
    open_volume_with(reader, what, Vec::new())
}

/// [`open_volume`], with the other devices of a multi-device volume (btrfs over several
/// disks; [`btrfs_identity`] tells which), in any order: the devices of other volumes
/// among them are left out.
pub fn open_volume_with(
    mut reader: Box<dyn ReadAt>,
    what: &str,
    others: Vec<Box<dyn ReadAt>>,
) -> Result<Volume, FsError> {
    let len = reader.len();
    let mut sector = [0u8; 512];
    let fat_like = len >= 512 && {
        read_exact(&mut *reader, what, 0, &mut sector)?;
        fat::looks_like_boot_sector(&sector)
    };
    let mut magic = [0u8; 2];
    let ext_like = len >= ext4::SUPERBLOCK + ext4::MAGIC_AT + 2 && {
        read_exact(
            &mut *reader,
            what,
            ext4::SUPERBLOCK + ext4::MAGIC_AT,
            &mut magic,
        )?;
        u16::from_le_bytes(magic) == ext4::MAGIC
    };
    let mut oem = [0u8; 8];
    let ntfs_like = len >= 512 && {
        read_exact(&mut *reader, what, 3, &mut oem)?;
        &oem == b"NTFS    "
    };
    if ntfs_like {
        return Ok(Volume {
            inner: Inner::Ntfs(NtfsVolume::open(reader, what)?),
        });
    }
    if len >= 512 && &oem == exfat::SIGNATURE {
        return Ok(Volume {
            inner: Inner::Exfat(ExfatVolume::open(reader, what)?),
        });
    }
    let mut magic4 = [0u8; 4];
    let xfs_like = len >= 512 && {
        read_exact(&mut *reader, what, 0, &mut magic4)?;
        &magic4 == xfs::MAGIC
    };
    if xfs_like {
        return Ok(Volume {
            inner: Inner::Xfs(XfsVolume::open(reader, what)?),
        });
    }
    let mut magic8 = [0u8; 8];
    let btrfs_like = len >= btrfs::SUPERBLOCK + 4096 && {
        read_exact(
            &mut *reader,
            what,
            btrfs::SUPERBLOCK + btrfs::MAGIC_AT,
            &mut magic8,
        )?;
        &magic8 == btrfs::MAGIC
    };
    if btrfs_like {
        return Ok(Volume {
            inner: Inner::Btrfs(BtrfsVolume::open(reader, what, others)?),
        });
    }
    let mut ufs_like = false;
    for at in ufs::SUPERBLOCKS {
        if at + ufs::MAGIC_AT + 4 <= len {
            read_exact(&mut *reader, what, at + ufs::MAGIC_AT, &mut magic4)?;
            let magic = u32::from_le_bytes(magic4);
            ufs_like |= magic == ufs::MAGIC || (magic == ufs::MAGIC_UFS1 && at == ufs::UFS1_AT);
        }
    }
    if ufs_like {
        return Ok(Volume {
            inner: Inner::Ufs(UfsVolume::open(reader, what)?),
        });
    }
    match (ext_like, fat_like) {
        (true, false) => Ok(Volume {
            inner: Inner::Ext(ExtVolume::open(reader, what)?),
        }),
        (false, true) => Ok(Volume {
            inner: Inner::Fat(FatVolume::open(reader, what)?),
        }),
        // Both signatures: the ext magic can be a FAT entry of a FAT12/16 volume, and a FAT
        // boot sector can be left in the unused first kilobyte of an ext volume. The ext
        // reader is asked first (its checks are the stricter), and the FAT one if it refuses.
        (true, true) => {
            let shared = Rc::new(RefCell::new(reader));
            match ExtVolume::open(Box::new(Shared(Rc::clone(&shared))), what) {
                Ok(v) => Ok(Volume {
                    inner: Inner::Ext(v),
                }),
                Err(ext_err) => match FatVolume::open(Box::new(Shared(shared)), what) {
                    Ok(v) => Ok(Volume {
                        inner: Inner::Fat(v),
                    }),
                    Err(_) => Err(ext_err),
                },
            }
        }
        (false, false) => Err(FsError::UnknownFilesystem {
            what: what.to_owned(),
            other: recognise_other(&mut *reader),
        }),
    }
}

/// A reader shared by two attempts to open a volume.
struct Shared(Rc<RefCell<Box<dyn ReadAt>>>);

impl ReadAt for Shared {
    fn len(&self) -> u64 {
        self.0.borrow().len()
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.borrow_mut().read_exact_at(offset, buf)
    }
}

/// Names formats this crate does not read, by their signatures, for a clearer error.
fn recognise_other(reader: &mut dyn ReadAt) -> Option<&'static str> {
    let signatures: &[(u64, &[u8], &'static str)] = &[
        (0, b"LUKS\xba\xbe", "LUKS"),
        (512, b"LABELONE", "LVM2 physical volume"),
        (4086, b"SWAPSPACE2", "Linux swap"),
    ];
    signatures.iter().find_map(|&(at, sig, name)| {
        let mut buf = vec![0u8; sig.len()];
        let fits = at
            .checked_add(sig.len() as u64)
            .is_some_and(|end| end <= reader.len());
        (fits && reader.read_exact_at(at, &mut buf).is_ok() && buf == sig).then_some(name)
    })
}

impl Volume {
    /// The format: `"ext2"`, `"ext3"`, `"ext4"`, `"xfs"`, `"btrfs"`, `"fat12"`, `"fat16"`,
    /// `"fat32"`, `"exfat"`, `"ntfs"`, `"ufs1"` or `"ufs2"`.
    pub fn kind(&self) -> &'static str {
        match &self.inner {
            Inner::Ext(v) => v.kind(),
            Inner::Fat(v) => v.kind(),
            Inner::Exfat(v) => v.kind(),
            Inner::Ntfs(v) => v.kind(),
            Inner::Xfs(v) => v.kind(),
            Inner::Btrfs(v) => v.kind(),
            Inner::Ufs(v) => v.kind(),
        }
    }

    /// The volume label, if one is set.
    pub fn label(&self) -> Option<String> {
        match &self.inner {
            Inner::Ext(v) => v.label(),
            Inner::Fat(v) => v.label(),
            Inner::Exfat(v) => v.label(),
            Inner::Ntfs(v) => v.label(),
            Inner::Xfs(v) => v.label(),
            Inner::Btrfs(v) => v.label(),
            Inner::Ufs(v) => v.label(),
        }
    }

    /// Damage or limits worked around while opening, to show the user: e.g. a journal
    /// that needed recovery but could not be replayed.
    pub fn warnings(&self) -> &[String] {
        match &self.inner {
            Inner::Ext(v) => v.warnings(),
            Inner::Fat(v) => v.warnings(),
            Inner::Exfat(v) => v.warnings(),
            Inner::Ntfs(_) => &[],
            Inner::Xfs(v) => v.warnings(),
            Inner::Btrfs(v) => v.warnings(),
            Inner::Ufs(v) => v.warnings(),
        }
    }

    /// The name given to [`open_volume`].
    pub fn what(&self) -> &str {
        match &self.inner {
            Inner::Ext(v) => v.what(),
            Inner::Fat(v) => v.what(),
            Inner::Exfat(v) => v.what(),
            Inner::Ntfs(v) => v.what(),
            Inner::Xfs(v) => v.what(),
            Inner::Btrfs(v) => v.what(),
            Inner::Ufs(v) => v.what(),
        }
    }

    /// The entries of the directory at `path`, without `.` and `..`, in directory order.
    pub fn list(&mut self, path: &str) -> Result<Vec<FsEntry>, FsError> {
        match &mut self.inner {
            Inner::Ext(v) => v.list(path),
            Inner::Fat(v) => v.list(path),
            Inner::Exfat(v) => v.list(path),
            Inner::Ntfs(v) => v.list(path),
            Inner::Xfs(v) => v.list(path),
            Inner::Btrfs(v) => v.list(path),
            Inner::Ufs(v) => v.list(path),
        }
    }

    /// The entry at `path` (a symlink itself, not its target).
    pub fn stat(&mut self, path: &str) -> Result<FsEntry, FsError> {
        match &mut self.inner {
            Inner::Ext(v) => v.stat(path),
            Inner::Fat(v) => v.stat(path),
            Inner::Exfat(v) => v.stat(path),
            Inner::Ntfs(v) => v.stat(path),
            Inner::Xfs(v) => v.stat(path),
            Inner::Btrfs(v) => v.stat(path),
            Inner::Ufs(v) => v.stat(path),
        }
    }

    /// The extended attributes and device number of the entry at `path` (a symlink itself,
    /// not its target). On ext they are read from the inode, found through the directory
    /// blocks, through the journal transactions the volume's reader replayed; a layout
    /// this cannot read is [`FsError::Unsupported`]. On XFS they come from the inode's
    /// attribute fork (XFS's own ACLs converted to the `system.posix_acl_*` form), on btrfs
    /// from its attribute items; values that cannot be read are [`Extras::warnings`]. FAT,
    /// exFAT and NTFS give none.
    pub fn extras(&mut self, path: &str) -> Result<Extras, FsError> {
        match &mut self.inner {
            Inner::Ext(v) => v.extras(path),
            Inner::Fat(v) => v.stat(path).map(|_| Extras::default()),
            Inner::Exfat(v) => v.stat(path).map(|_| Extras::default()),
            Inner::Ntfs(v) => v.stat(path).map(|_| Extras::default()),
            Inner::Xfs(v) => v.extras(path),
            Inner::Btrfs(v) => v.extras(path),
            Inner::Ufs(v) => v.extras(path),
        }
    }

    /// Opens the regular file at `path` for reading; nothing is read until asked for.
    pub fn open_file(&mut self, path: &str) -> Result<VolumeFile<'_>, FsError> {
        let inner = match &mut self.inner {
            Inner::Ext(v) => FileInner::Ext(Box::new(v.open_file(path)?)),
            Inner::Fat(v) => {
                let file = v.open_file(path)?;
                FileInner::Fat(file, v)
            }
            Inner::Exfat(v) => {
                let file = v.open_file(path)?;
                FileInner::Exfat(file, v)
            }
            Inner::Ntfs(v) => FileInner::Stream(v.open_file(path)?),
            Inner::Xfs(v) => {
                let file = v.open_file(path)?;
                FileInner::Xfs(file, v)
            }
            Inner::Btrfs(v) => {
                let file = v.open_file(path)?;
                FileInner::Btrfs(file, v)
            }
            Inner::Ufs(v) => {
                let file = Box::new(v.open_file(path)?);
                FileInner::Ufs(file, v)
            }
        };
        Ok(VolumeFile { inner })
    }

    /// Reads from the file at `path` at `offset` into `buf`, returning the bytes read (fewer
    /// only at the end of the file). Each call opens the file anew and, on ext, reads
    /// through to `offset`: stream large files with [`Volume::open_file`] instead.
    pub fn read_file(&mut self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let mut file = self.open_file(path)?;
        file.seek(offset);
        let mut done = 0;
        while done < <[u8]>::len(buf) {
            let n = file.read(&mut buf[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("what", &self.what())
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// A regular file opened for reading, borrowing its volume. Reads go forward from the
/// position without holding more than the caller's buffer; [`VolumeFile::seek`] moves the
/// position (cheap on FAT and exFAT; on ext a backward seek reopens the file and reads
/// through).
pub struct VolumeFile<'v> {
    inner: FileInner<'v>,
}

enum FileInner<'v> {
    Ext(Box<ExtFile>),
    Fat(FatFile, &'v mut FatVolume),
    Exfat(ExfatFile, &'v mut ExfatVolume),
    Stream(StreamFile),
    Xfs(XfsFile, &'v mut XfsVolume),
    Btrfs(BtrfsFile, &'v mut BtrfsVolume),
    Ufs(Box<UfsFile>, &'v mut UfsVolume),
}

impl VolumeFile<'_> {
    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        match &self.inner {
            FileInner::Ext(f) => f.size(),
            FileInner::Fat(f, _) => f.size(),
            FileInner::Exfat(f, _) => f.size(),
            FileInner::Stream(f) => f.size(),
            FileInner::Xfs(f, _) => f.size(),
            FileInner::Btrfs(f, _) => f.size(),
            FileInner::Ufs(f, _) => f.size(),
        }
    }

    /// Offset of the next read.
    pub fn position(&self) -> u64 {
        match &self.inner {
            FileInner::Ext(f) => f.position(),
            FileInner::Fat(f, _) => f.position(),
            FileInner::Exfat(f, _) => f.position(),
            FileInner::Stream(f) => f.position(),
            FileInner::Xfs(f, _) => f.position(),
            FileInner::Btrfs(f, _) => f.position(),
            FileInner::Ufs(f, _) => f.position(),
        }
    }

    /// Moves the position; past the end, reads return 0.
    pub fn seek(&mut self, pos: u64) {
        match &mut self.inner {
            FileInner::Ext(f) => f.seek(pos),
            FileInner::Fat(f, _) => f.seek(pos),
            FileInner::Exfat(f, _) => f.seek(pos),
            FileInner::Stream(f) => f.seek(pos),
            FileInner::Xfs(f, _) => f.seek(pos),
            FileInner::Btrfs(f, _) => f.seek(pos),
            FileInner::Ufs(f, _) => f.seek(pos),
        }
    }

    /// Reads from the position into `buf`; 0 means the end of the file. After an error on
    /// ext, later reads of this handle fail too.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, FsError> {
        match &mut self.inner {
            FileInner::Ext(f) => f.read(buf),
            FileInner::Fat(f, v) => f.read(v, buf),
            FileInner::Exfat(f, v) => f.read(v, buf),
            FileInner::Stream(f) => f.read(buf),
            FileInner::Xfs(f, v) => f.read(v, buf),
            FileInner::Btrfs(f, v) => f.read(v, buf),
            FileInner::Ufs(f, v) => f.read(v, buf),
        }
    }
}

impl io::Read for VolumeFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        VolumeFile::read(self, buf).map_err(|e| match e {
            FsError::Io { source, .. } => source,
            other => io::Error::other(other),
        })
    }
}
