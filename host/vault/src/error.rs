//! The vault's error type.

use crate::backend::{BackendError, FileKind};
use crate::chunker::ChunkerError;
use crate::codec::DecodeError;
use crate::key::KeyError;
use crate::pack::PackError;
use crate::retention::RetentionError;
use crate::tree::TreeError;

/// Everything that can go wrong in the vault, each naming the object and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A key slot or credential problem (wrong password, damaged slot).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A pack could not be read.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// An entry path or order was refused.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Chunking parameters were refused.
    #[error(transparent)]
    Chunker(#[from] ChunkerError),
    /// A retention policy was refused.
    #[error(transparent)]
    Retention(#[from] RetentionError),
    /// The location holds no vault, or an unreadable config.
    #[error("no tessera vault at {location}: {detail}")]
    NotAVault {
        /// Where.
        location: String,
        /// Why.
        detail: String,
    },
    /// `init` found a vault already there.
    #[error("a vault already exists at {0}")]
    AlreadyExists(String),
    /// A stored object failed to decode.
    #[error("{kind} {name} is damaged: {source}")]
    Corrupt {
        /// Kind of object.
        kind: FileKind,
        /// Its name (short id).
        name: String,
        /// What failed.
        #[source]
        source: DecodeError,
    },
    /// A chunk a point refers to is not in the index.
    #[error("chunk {0} is not in the vault's index")]
    MissingChunk(String),
    /// A stored chunk could not be decoded.
    #[error("chunk {id} in pack {pack} is damaged: {source}")]
    BadChunk {
        /// The chunk.
        id: String,
        /// Its pack.
        pack: String,
        /// What failed.
        #[source]
        source: DecodeError,
    },
    /// A tree or list document did not parse.
    #[error("tree {id} is damaged: {detail}")]
    BadTree {
        /// The tree chunk.
        id: String,
        /// What failed.
        detail: String,
    },
    /// No point matches an id or prefix.
    #[error("no recovery point matches '{0}'")]
    PointNotFound(String),
    /// Several points match a prefix.
    #[error("'{0}' matches several recovery points; give more of the id")]
    AmbiguousPoint(String),
    /// A path does not exist in a point.
    #[error("'{path}' does not exist in the recovery point {point}")]
    PathNotFound {
        /// The point.
        point: String,
        /// The path.
        path: String,
    },
    /// Reading the source of a backup failed.
    #[error("cannot read {what}: {source}")]
    Source {
        /// What was being read.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A source file ended before bytes the caller had planned to read from it: it
    /// shrank while it was read.
    #[error(
        "{what} ended at byte {at} while being read, before the bytes planned from it: \
         it shrank during the backup"
    )]
    SourceEnded {
        /// The file.
        what: String,
        /// Its length when it was read.
        at: u64,
    },
    /// A caller passed a value the vault refuses.
    #[error("{0}")]
    Invalid(String),
    /// A background writer of this backup failed earlier.
    #[error("backup aborted: {0}")]
    Aborted(String),
}

/// Result with the vault's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
