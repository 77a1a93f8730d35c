//! The one error type of the crate. Every variant names what failed to read (the partition
//! table, or a volume such as `disk0/part1`) and, where known, the byte offset inside it, so a
//! message shown to a user says where a damaged image is damaged.

use std::io;

/// Why reading a partition table or a file system failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The path names nothing in the volume.
    #[error("{what}: {path:?}: no such file or directory")]
    NotFound {
        /// The volume.
        what: String,
        /// The path as given, relative to the volume root.
        path: String,
    },

    /// A directory was expected (for listing, or as an intermediate path component).
    #[error("{what}: {path:?}: not a directory")]
    NotADirectory {
        /// The volume.
        what: String,
        /// The path that is not a directory.
        path: String,
    },

    /// A regular file was expected (for reading).
    #[error("{what}: {path:?}: not a regular file")]
    NotAFile {
        /// The volume.
        what: String,
        /// The path that is not a regular file.
        path: String,
    },

    /// The path itself is malformed (`..`, a NUL byte, an overlong component).
    #[error("{what}: {path:?}: invalid path: {reason}")]
    InvalidPath {
        /// The volume.
        what: String,
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An on-disk structure contradicts itself or the size of what holds it.
    #[error("{what}: corrupt{}: {detail}", at(.offset))]
    Corrupt {
        /// The partition table or volume.
        what: String,
        /// Byte offset of the bad structure inside `what`, where known.
        offset: Option<u64>,
        /// What is wrong, in the terms of the format.
        detail: String,
    },

    /// A valid structure uses a feature this crate does not read.
    #[error("{what}: unsupported: {detail}")]
    Unsupported {
        /// The volume.
        what: String,
        /// The feature, and what can be done instead.
        detail: String,
    },

    /// A value read from the image asks for more than this crate allows itself (memory,
    /// directory size, path depth); the limits guard against images built to exhaust the
    /// reader.
    #[error("{what}: limit exceeded: {detail}")]
    LimitExceeded {
        /// The volume.
        what: String,
        /// Which limit, and the value met.
        detail: String,
    },

    /// Neither an ext2/3/4 superblock nor a FAT boot sector is where they belong.
    #[error("{what}: no ext2/ext3/ext4, XFS, btrfs, NTFS, FAT or exFAT file system found{}", found(.other))]
    UnknownFilesystem {
        /// The volume.
        what: String,
        /// A format recognised by its signature but not readable here (`"NTFS"`, `"LVM2"`...).
        other: Option<&'static str>,
    },

    /// A byte range (a partition, a slice) extends past the end of what holds it.
    #[error("{what} spans bytes {start}..{end} but the disk holds only {disk_len} bytes")]
    PastEnd {
        /// The range, e.g. `partition 3`.
        what: String,
        /// First byte of the range.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// Length of the disk (or of the reader sliced).
        disk_len: u64,
    },

    /// The reader beneath failed (including a read past its end: a truncated image).
    #[error("{what}: read of {len} bytes at byte {offset} failed: {source}")]
    Io {
        /// The partition table or volume.
        what: String,
        /// Byte offset of the read inside `what`.
        offset: u64,
        /// Length of the read.
        len: usize,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
}

fn at(offset: &Option<u64>) -> String {
    offset.map(|o| format!(" at byte {o}")).unwrap_or_default()
}

fn found(other: &Option<&'static str>) -> String {
    other
        .map(|o| format!(" (found {o}, which is not supported)"))
        .unwrap_or_default()
}

impl FsError {
    /// The same error naming `path`, for damage found by a reader that knows only the
    /// inode or the extent it was reading.
    pub(crate) fn on_path(self, path: &str) -> Self {
        match self {
            FsError::Corrupt {
                what,
                offset,
                detail,
            } => FsError::Corrupt {
                what,
                offset,
                detail: format!("{path:?}: {detail}"),
            },
            other => other,
        }
    }

    pub(crate) fn corrupt(what: &str, offset: Option<u64>, detail: impl Into<String>) -> Self {
        FsError::Corrupt {
            what: what.to_owned(),
            offset,
            detail: detail.into(),
        }
    }

    pub(crate) fn limit(what: &str, detail: impl Into<String>) -> Self {
        FsError::LimitExceeded {
            what: what.to_owned(),
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(what: &str, detail: impl Into<String>) -> Self {
        FsError::Unsupported {
            what: what.to_owned(),
            detail: detail.into(),
        }
    }

    pub(crate) fn io(what: &str, offset: u64, len: usize, source: io::Error) -> Self {
        FsError::Io {
            what: what.to_owned(),
            offset,
            len,
            source,
        }
    }
}
