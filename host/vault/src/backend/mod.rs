//! Where the vault's objects live: a trait for stores of whole, immutable objects.
//!
//! The trait is shaped after object stores (Azure Blob, S3): objects are written once and
//! whole, read whole or by byte range, listed by prefix and deleted. Nothing in the vault
//! relies on rename or on a listing showing a just-written object at once; see the crate
//! documentation for the rules that make that safe.

mod dry_run;
mod local;
mod spool_file;

pub use dry_run::DryRunBackend;
pub use local::LocalBackend;

use std::fmt;

/// The kinds of objects in a vault, each under its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The vault's `config` document.
    Config,
    /// Key slots: the data key wrapped by a password or key file.
    Key,
    /// Pack files holding chunks.
    Pack,
    /// Index files mapping chunks to packs.
    Index,
    /// Recovery points.
    Point,
    /// Writer sessions announcing a backup in progress.
    Session,
    /// Deletion marks written by prune.
    Mark,
    /// Records of recovery points `check` found damaged.
    Damage,
}

impl FileKind {
    /// Every kind, in the order a full listing walks them.
    pub const ALL: [FileKind; 8] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Point,
        FileKind::Session,
        FileKind::Mark,
        FileKind::Damage,
    ];

    /// The prefix (directory) under which objects of this kind are stored.
    pub fn prefix(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Pack => "data",
            FileKind::Index => "index",
            FileKind::Point => "points",
            FileKind::Session => "sessions",
            FileKind::Mark => "marks",
            FileKind::Damage => "damage",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Config => "config",
            FileKind::Key => "key slot",
            FileKind::Pack => "pack",
            FileKind::Index => "index file",
            FileKind::Point => "recovery point",
            FileKind::Session => "writer session",
            FileKind::Mark => "deletion mark",
            FileKind::Damage => "damage record",
        })
    }
}

/// One object found by [`Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's name within its kind.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A failure of the storage backend, naming the object and the operation.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist.
    #[error("{kind} '{name}' not found in {location}")]
    NotFound {
        /// Kind of the object.
        kind: FileKind,
        /// Its name.
        name: String,
        /// Where the backend stores objects.
        location: String,
    },
    /// The object is shorter than a range read asked for.
    #[error("{kind} '{name}' is truncated: wanted bytes {offset}..{end}, it holds {size}")]
    Truncated {
        /// Kind of the object.
        kind: FileKind,
        /// Its name.
        name: String,
        /// Start of the wanted range.
        offset: u64,
        /// End of the wanted range.
        end: u64,
        /// Actual size of the object.
        size: u64,
    },
    /// An I/O error of the underlying store.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done: "write", "read", "list", "delete".
        op: &'static str,
        /// The path or URL of the object.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    /// Whether the error means the object is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

/// A store of whole, immutable objects.
///
/// Implementations must make `write` atomic: a reader sees either no object or the whole
/// object, never a prefix. Overwriting an existing name replaces it atomically; the vault
/// only does that for writer-session heartbeats.
pub trait Backend: Send + Sync + fmt::Debug {
    /// A human-readable location, used in messages.
    fn location(&self) -> String;

    /// Prepares an empty store (creates directories, a container, ...).
    fn create(&self) -> Result<(), BackendError>;

    /// Writes a whole object.
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), BackendError>;

    /// Writes a whole object whose loss in a crash harms nothing (a writer session's
    /// record): other processes see it at once, as any object, but after a power loss it
    /// may be missing or be its previous version. A store that makes every write durable
    /// anyway does just that; the local store skips its flushes to the disk.
    fn write_relaxed(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.write(kind, name, data)
    }

    /// Writes a whole object given in pieces (a pack's blobs), without first joining them
    /// when the store can avoid it.
    fn write_parts(&self, kind: FileKind, name: &str, parts: &[&[u8]]) -> Result<(), BackendError> {
        self.write(kind, name, &parts.concat())
    }

    /// Reads a whole object.
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, BackendError>;

    /// Reads `len` bytes at `offset`. Fails with [`BackendError::Truncated`] if the object
    /// ends before `offset + len`.
    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError>;

    /// Lists the objects of one kind. The listing may lag behind recent writes.
    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>, BackendError>;

    /// Deletes an object. Deleting a missing object is not an error.
    fn remove(&self, kind: FileKind, name: &str) -> Result<(), BackendError>;

    /// Deletes spools of `kind` untouched for `idle_for` (left by a writer that was
    /// killed); returns how many. Stores whose spools live in memory have none.
    fn remove_stale_spools(
        &self,
        kind: FileKind,
        idle_for: std::time::Duration,
    ) -> Result<u64, BackendError> {
        let _ = (kind, idle_for);
        Ok(0)
    }

    /// A place to assemble a large object (a pack) piece by piece before its name is
    /// known, without holding it in memory when the store can avoid that. The default
    /// keeps the pieces in memory and writes the object whole.
    fn spool(&self, kind: FileKind) -> Result<Box<dyn Spool>, BackendError> {
        Ok(Box::new(MemorySpool {
            kind,
            data: Vec::new(),
        }))
    }
}

/// An object being assembled; see [`Backend::spool`]. Dropped without
/// [`Spool::commit`], it leaves nothing behind.
pub trait Spool: Send + fmt::Debug {
    /// Appends bytes.
    fn append(&mut self, data: &[u8]) -> Result<(), BackendError>;

    /// Bytes appended so far.
    fn len(&self) -> u64;

    /// Offers room for `len` more bytes to `fill`, which writes into it and returns how
    /// many of them, from the start, to append (none, or up to `len`): bytes made where
    /// they are stored need no copy. Returns what `fill` returned, or `None` without
    /// calling it when the spool has no such room at the moment; the caller then
    /// appends. The default never has room.
    fn append_in_place(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<Option<usize>, BackendError> {
        let _ = (len, fill);
        Ok(None)
    }

    /// Whether nothing was appended.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores the object under `name`, atomically as [`Backend::write`] does.
    fn commit(self: Box<Self>, backend: &dyn Backend, name: &str) -> Result<(), BackendError>;
}

/// The default spool: the object in memory until it is written whole.
#[derive(Debug)]
struct MemorySpool {
    kind: FileKind,
    data: Vec<u8>,
}

impl Spool for MemorySpool {
    fn append(&mut self, data: &[u8]) -> Result<(), BackendError> {
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn commit(self: Box<Self>, backend: &dyn Backend, name: &str) -> Result<(), BackendError> {
        backend.write(self.kind, name, &self.data)
    }
}
