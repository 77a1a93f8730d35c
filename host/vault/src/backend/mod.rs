//! Where the vault's objects live: a trait for stores of whole, immutable objects.
//!
//! The trait is shaped after object stores (Azure Blob, S3): objects are written once and
//! whole, read whole or by byte range, listed by prefix and deleted. Nothing in the vault
//! relies on rename or on a listing showing a just-written object at once; see the crate
//! documentation for the rules that make that safe.

mod local;

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
}

impl FileKind {
    /// Every kind, in the order a full listing walks them.
    pub const ALL: [FileKind; 7] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Point,
        FileKind::Session,
        FileKind::Mark,
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
}
