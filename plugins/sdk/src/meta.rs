//! Entry metadata: building the contract's `metadata` from the host's `posix-stat` or
//! from `std::fs::Metadata`, reading the file type out of a POSIX mode, and turning a
//! stored entry's metadata back into what `host::set-metadata` applies on restore.
//! WASI exposes neither modes nor owners, so the host's `stat` is the primary source and
//! `std` the fallback.

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::host::{PosixStat, RestoreMetadata};
use crate::types::{EntryKind, Metadata};

/// Mask of the file-type bits of a POSIX mode (`S_IFMT`).
pub const S_IFMT: u32 = 0o170_000;
/// Socket (`S_IFSOCK`).
pub const S_IFSOCK: u32 = 0o140_000;
/// Symbolic link (`S_IFLNK`).
pub const S_IFLNK: u32 = 0o120_000;
/// Regular file (`S_IFREG`).
pub const S_IFREG: u32 = 0o100_000;
/// Block device node (`S_IFBLK`).
pub const S_IFBLK: u32 = 0o060_000;
/// Directory (`S_IFDIR`).
pub const S_IFDIR: u32 = 0o040_000;
/// Character device node (`S_IFCHR`).
pub const S_IFCHR: u32 = 0o020_000;
/// Fifo (`S_IFIFO`).
pub const S_IFIFO: u32 = 0o010_000;
/// Permission bits with set-user-id, set-group-id and sticky (`07777`).
pub const PERMISSION_BITS: u32 = 0o7777;

/// The type of a file system object, as its mode tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A directory.
    Directory,
    /// A regular file.
    Regular,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
    /// A Unix domain socket.
    Socket,
    /// A type this code does not know.
    Unknown,
}

impl FileType {
    /// The type encoded in a POSIX `st_mode`.
    pub fn from_mode(mode: u32) -> Self {
        match mode & S_IFMT {
            S_IFDIR => Self::Directory,
            S_IFREG => Self::Regular,
            S_IFLNK => Self::Symlink,
            S_IFIFO => Self::Fifo,
            S_IFCHR => Self::CharDevice,
            S_IFBLK => Self::BlockDevice,
            S_IFSOCK => Self::Socket,
            _ => Self::Unknown,
        }
    }

    /// The type `std` sees, which on WASI distinguishes only directories, regular files
    /// and symlinks; anything else is `Unknown`.
    pub fn from_std(file_type: fs::FileType) -> Self {
        if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_file() {
            Self::Regular
        } else if file_type.is_symlink() {
            Self::Symlink
        } else {
            Self::Unknown
        }
    }

    /// The entry kind of an object of this type that carries no extra data, or `None`
    /// for symlinks (they need their target) and unknown types.
    pub fn entry_kind(self) -> Option<EntryKind> {
        match self {
            Self::Directory => Some(EntryKind::Directory),
            Self::Regular => Some(EntryKind::File),
            Self::Fifo => Some(EntryKind::Fifo),
            Self::CharDevice => Some(EntryKind::CharDevice),
            Self::BlockDevice => Some(EntryKind::BlockDeviceNode),
            Self::Socket => Some(EntryKind::Socket),
            Self::Symlink | Self::Unknown => None,
        }
    }
}

/// Metadata of `size` bytes with nothing else known, for entries that are not files on
/// disk (a generated document, a stream).
pub fn bare(size: u64) -> Metadata {
    Metadata {
        size,
        mode: None,
        uid: None,
        gid: None,
        mtime_ns: None,
        atime_ns: None,
        ctime_ns: None,
        inode: None,
        dev: None,
        rdev: None,
        nlink: None,
        xattrs: Vec::new(),
        holes: Vec::new(),
    }
}

/// Metadata from the host's `stat`; extended attributes and holes are left empty for the
/// caller to fill in.
pub fn from_stat(stat: &PosixStat) -> Metadata {
    Metadata {
        size: stat.size,
        mode: Some(stat.mode),
        uid: Some(stat.uid),
        gid: Some(stat.gid),
        mtime_ns: Some(stat.mtime_ns),
        atime_ns: Some(stat.atime_ns),
        ctime_ns: Some(stat.ctime_ns),
        inode: Some(stat.inode),
        dev: Some(stat.dev),
        rdev: Some(stat.rdev),
        nlink: Some(stat.nlink),
        xattrs: Vec::new(),
        holes: Vec::new(),
    }
}

/// Metadata from `std`, for when the host cannot stat a path: only the size and times
/// are known through WASI.
pub fn from_std(meta: &fs::Metadata) -> Metadata {
    Metadata {
        mtime_ns: meta.modified().ok().map(unix_ns),
        atime_ns: meta.accessed().ok().map(unix_ns),
        ..bare(meta.len())
    }
}

/// Nanoseconds since the Unix epoch, negative before it, saturating past the range of
/// an `i64` (years before 1678 or after 2262).
pub fn unix_ns(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |ns| -ns),
    }
}

/// Whether a file is unchanged since `previous` was recorded, judged as backup tools
/// usually do: same size, modification time, change time and inode. The change time
/// catches writes that restore the old modification time; the inode catches a file
/// replaced by another one. Unknown values never match.
pub fn unchanged(previous: &Metadata, current: &Metadata) -> bool {
    fn same<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
        a.is_some() && a == b
    }
    previous.size == current.size
        && same(previous.mtime_ns, current.mtime_ns)
        && same(previous.ctime_ns, current.ctime_ns)
        && same(previous.inode, current.inode)
}

/// What to apply to a restored object of `kind` with stored metadata `meta`.
///
/// Only permission bits are passed on, since the type bits are fixed by how the object
/// was created. Symlinks get no mode: Linux cannot change a symlink's mode, and asking
/// would only produce a warning per link.
pub fn restore_metadata(kind: &EntryKind, meta: &Metadata) -> RestoreMetadata {
    let mode = match kind {
        EntryKind::Symlink(_) => None,
        _ => meta.mode.map(|mode| mode & PERMISSION_BITS),
    };
    RestoreMetadata {
        mode,
        uid: meta.uid,
        gid: meta.gid,
        mtime_ns: meta.mtime_ns,
        atime_ns: meta.atime_ns,
        xattrs: meta.xattrs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stat(mode: u32) -> PosixStat {
        PosixStat {
            mode,
            uid: 1000,
            gid: 100,
            size: 42,
            inode: 7,
            dev: 3,
            rdev: 0,
            nlink: 1,
            mtime_ns: 1_700_000_000_000_000_001,
            atime_ns: 5,
            ctime_ns: 6,
        }
    }

    #[test]
    fn reads_file_types_from_modes() {
        assert_eq!(FileType::from_mode(0o100_644), FileType::Regular);
        assert_eq!(FileType::from_mode(0o040_755), FileType::Directory);
        assert_eq!(FileType::from_mode(0o120_777), FileType::Symlink);
        assert_eq!(FileType::from_mode(0o010_600), FileType::Fifo);
        assert_eq!(FileType::from_mode(0o020_660), FileType::CharDevice);
        assert_eq!(FileType::from_mode(0o060_660), FileType::BlockDevice);
        assert_eq!(FileType::from_mode(0o140_755), FileType::Socket);
        assert_eq!(FileType::from_mode(0o000_644), FileType::Unknown);
        assert_eq!(
            FileType::BlockDevice.entry_kind(),
            Some(EntryKind::BlockDeviceNode)
        );
        assert_eq!(FileType::Symlink.entry_kind(), None);
    }

    #[test]
    fn converts_stat() {
        let meta = from_stat(&stat(0o100_644));
        assert_eq!(meta.size, 42);
        assert_eq!(meta.mode, Some(0o100_644));
        assert_eq!(meta.inode, Some(7));
        assert_eq!(meta.mtime_ns, Some(1_700_000_000_000_000_001));
    }

    #[test]
    fn converts_times() {
        assert_eq!(unix_ns(UNIX_EPOCH + Duration::new(1, 5)), 1_000_000_005);
        assert_eq!(unix_ns(UNIX_EPOCH - Duration::from_nanos(3)), -3);
    }

    #[test]
    fn detects_changes() {
        let before = from_stat(&stat(0o100_644));
        assert!(unchanged(&before, &before));
        let mut touched = before.clone();
        touched.ctime_ns = Some(99);
        assert!(!unchanged(&before, &touched));
        let mut unknown = before.clone();
        unknown.inode = None;
        assert!(!unchanged(&unknown, &unknown));
    }

    #[test]
    fn restores_permission_bits_only() {
        let meta = from_stat(&stat(0o104_755));
        assert_eq!(restore_metadata(&EntryKind::File, &meta).mode, Some(0o4755));
        assert_eq!(
            restore_metadata(&EntryKind::Symlink("x".into()), &meta).mode,
            None
        );
        assert_eq!(restore_metadata(&EntryKind::File, &meta).uid, Some(1000));
    }
}
