//! tessera's vault.
#![forbid(unsafe_code)]

pub mod backend;
pub mod chunker;
pub mod codec;
pub mod commands;
pub mod crypto;
pub mod error;
pub mod format;
pub mod id;
pub mod index;
pub mod key;
pub mod pack;
pub mod point;
pub mod retention;
pub mod session;
pub mod tree;
pub mod vault;

pub use backend::{Backend, BackendError, FileKind, LocalBackend};
pub use chunker::{CdcParams, Chunking};
pub use commands::backup::{Backup, BackupOptions, CommitOptions, StreamResult, StreamWriter};
pub use commands::restore::{ContentReader, Piece};
pub use error::{Error, Result};
pub use id::{ChunkId, PackId, PointId};
pub use key::{Credential, KdfParams};
pub use point::{BackupStats, Consistency, PluginRef, Point};
pub use tree::{Content, Entry, EntryKind, Extent, Metadata, Tree};
pub use vault::{Clock, Encryption, InitOptions, OpenOptions, SystemClock, Vault};
