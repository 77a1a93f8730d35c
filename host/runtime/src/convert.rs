//! Conversions between the contract's types and the vault's.

use tessera_vault::tree::{EntryKind, Metadata, Xattr};

use crate::bindings::types as wit;

pub fn kind_to_vault(kind: &wit::EntryKind) -> EntryKind {
    match kind {
        wit::EntryKind::Directory => EntryKind::Directory,
        wit::EntryKind::File => EntryKind::File,
        wit::EntryKind::Symlink(target) => EntryKind::Symlink {
            target: target.clone(),
        },
        wit::EntryKind::Hardlink(target) => EntryKind::Hardlink {
            target: target.clone(),
        },
        wit::EntryKind::CharDevice => EntryKind::CharDevice,
        wit::EntryKind::BlockDeviceNode => EntryKind::BlockDeviceNode,
        wit::EntryKind::Fifo => EntryKind::Fifo,
        wit::EntryKind::Socket => EntryKind::Socket,
        wit::EntryKind::BlockDevice => EntryKind::BlockDevice,
        wit::EntryKind::DatabaseStream => EntryKind::DatabaseStream,
        wit::EntryKind::LogSegment => EntryKind::LogSegment,
        wit::EntryKind::Blob => EntryKind::Blob,
    }
}

pub fn kind_to_wit(kind: &EntryKind) -> wit::EntryKind {
    match kind {
        EntryKind::Directory => wit::EntryKind::Directory,
        EntryKind::File => wit::EntryKind::File,
        EntryKind::Symlink { target } => wit::EntryKind::Symlink(target.clone()),
        EntryKind::Hardlink { target } => wit::EntryKind::Hardlink(target.clone()),
        EntryKind::CharDevice => wit::EntryKind::CharDevice,
        EntryKind::BlockDeviceNode => wit::EntryKind::BlockDeviceNode,
        EntryKind::Fifo => wit::EntryKind::Fifo,
        EntryKind::Socket => wit::EntryKind::Socket,
        EntryKind::BlockDevice => wit::EntryKind::BlockDevice,
        EntryKind::DatabaseStream => wit::EntryKind::DatabaseStream,
        EntryKind::LogSegment => wit::EntryKind::LogSegment,
        EntryKind::Blob => wit::EntryKind::Blob,
    }
}

/// A short word for a kind, as the command line shows it.
pub fn kind_word(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::Directory => "dir",
        EntryKind::File => "file",
        EntryKind::Symlink { .. } => "symlink",
        EntryKind::Hardlink { .. } => "hardlink",
        EntryKind::CharDevice => "chardev",
        EntryKind::BlockDeviceNode => "blockdev",
        EntryKind::Fifo => "fifo",
        EntryKind::Socket => "socket",
        EntryKind::BlockDevice => "disk",
        EntryKind::DatabaseStream => "db-stream",
        EntryKind::LogSegment => "log-segment",
        EntryKind::Blob => "blob",
    }
}

pub fn meta_to_vault(meta: &wit::Metadata) -> Metadata {
    Metadata {
        size: meta.size,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        mtime_ns: meta.mtime_ns,
        atime_ns: meta.atime_ns,
        ctime_ns: meta.ctime_ns,
        inode: meta.inode,
        dev: meta.dev,
        rdev: meta.rdev,
        nlink: meta.nlink,
        xattrs: meta
            .xattrs
            .iter()
            .map(|x| Xattr {
                name: x.name.clone(),
                value: x.value.clone(),
            })
            .collect(),
        holes: meta.holes.iter().map(|h| [h.offset, h.length]).collect(),
    }
}

pub fn meta_to_wit(meta: &Metadata) -> wit::Metadata {
    wit::Metadata {
        size: meta.size,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        mtime_ns: meta.mtime_ns,
        atime_ns: meta.atime_ns,
        ctime_ns: meta.ctime_ns,
        inode: meta.inode,
        dev: meta.dev,
        rdev: meta.rdev,
        nlink: meta.nlink,
        xattrs: meta
            .xattrs
            .iter()
            .map(|x| wit::Xattr {
                name: x.name.clone(),
                value: x.value.clone(),
            })
            .collect(),
        holes: meta
            .holes
            .iter()
            .map(|h| wit::ByteRange {
                offset: h[0],
                length: h[1],
            })
            .collect(),
    }
}

pub fn entry_to_wit(path: &str, entry: &tessera_vault::Entry) -> wit::EntryInfo {
    wit::EntryInfo {
        path: path.to_string(),
        kind: kind_to_wit(&entry.kind),
        meta: meta_to_wit(&entry.meta),
    }
}

pub fn vault_error(e: tessera_vault::Error) -> wit::HostError {
    match e {
        tessera_vault::Error::Tree(t) => wit::HostError::Invalid(t.to_string()),
        tessera_vault::Error::PathNotFound { .. } => wit::HostError::NotFound(e.to_string()),
        tessera_vault::Error::Invalid(m) => wit::HostError::Invalid(m),
        other => wit::HostError::Vault(other.to_string()),
    }
}

pub fn grant_error(e: crate::grant::GrantError) -> wit::HostError {
    use crate::grant::GrantError;
    match e {
        GrantError::Denied(m) => wit::HostError::Denied(m),
        GrantError::NotFound(m) => wit::HostError::NotFound(m),
        GrantError::Invalid(m) => wit::HostError::Invalid(m),
        GrantError::Io(m) => wit::HostError::Io(m),
    }
}
