//! tessera's vault: a chunked, deduplicated, compressed, encrypted store of recovery points.
//!
//! Everything tessera captures ends here. A plugin's content streams are cut into chunks
//! (content-defined for files, fixed and offset-aligned for block devices), each chunk is
//! identified by a keyed hash, stored once per vault, compressed with zstd when that
//! helps, encrypted with AES-256-GCM, and packed with others into immutable pack files.
//! Index files map chunks to packs. A recovery point names the root of a tree of entries
//! whose contents are lists of chunks. The crate knows nothing of plugins or WebAssembly.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use tessera_vault::commands::backup::{Backup, BackupOptions, CommitOptions};
//! use tessera_vault::*;
//!
//! # fn main() -> tessera_vault::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let backend = Arc::new(LocalBackend::new(dir.path().join("vault")));
//! let mut options = InitOptions::new(Encryption::Credential(Credential::password("secret")));
//! # options.kdf = KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
//! let vault = Vault::init(backend, options, Arc::new(SystemClock))?;
//!
//! let plugin = PluginRef { name: "example".into(), version: "1".into() };
//! let mut backup = Backup::start(&vault, BackupOptions::new("my-item", plugin))?;
//! let mut stream = backup.stream(Chunking::ContentDefined(vault.config().chunker))?;
//! stream.write(b"hello")?;
//! let mut entry = Entry::new("", EntryKind::File);
//! entry.content = stream.finish()?.content;
//! backup.add_entry("greeting.txt", entry)?;
//! let (_point_id, point) = backup.commit(CommitOptions::default())?;
//!
//! let entry = vault.find_entry(&point, "greeting.txt")?;
//! let mut restored = Vec::new();
//! vault.content_reader(&entry.content).copy_to(&mut restored)?;
//! assert_eq!(restored, b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! ```text
//! config                 public parameters (JSON)          vault::Config
//! keys/<slot>            wrapped master key (JSON)          key
//! data/<xx>/<pack>       blobs + encrypted header           pack
//! index/<id>             chunk -> pack, offset, length      index
//! points/<id>            one recovery point                 point
//! sessions/<id>          a backup in progress               session
//! marks/<id>             packs prune will delete            session
//! damage/<id>            a point check found damaged        damage
//! ```
//!
//! Packs, index files, points, marks and damage records are named by the SHA-256 of their
//! bytes: names are unique per writer without coordination, and damage is visible from
//! the name alone.
//!
//! # Crash safety
//!
//! Objects appear whole or not at all (the backend guarantees atomic writes; a pack being
//! filled is spooled under a temporary name that listing ignores and renamed into place
//! when full) and are never modified, except writer-session heartbeats. A backup writes
//! in this order:
//!
//! 1. its session object, before it reads the index;
//! 2. packs, as they fill;
//! 3. index files listing those packs (every 64 packs, and at the end);
//! 4. the point: **the commit point**. A point is written only after every index file
//!    naming its chunks, so a point that exists is always complete.
//!
//! Killed at any instant, a backup leaves at worst packs that no index lists, or index
//! entries no point uses. Neither is damage: the next backup reads the headers of
//! unindexed packs and reuses their chunks (indexing them itself), and prune reclaims
//! whatever stays unused. A session records its end only once every pack it uploaded
//! is in an index file, so a backup lists the vault's packs to look for unindexed ones
//! only when some other session has no recorded end (killed, unable to write its
//! index, or still running): after clean runs it never lists them.
//!
//! # Concurrency
//!
//! There is no global lock. Any number of processes may back up into one vault at once:
//! each writes only objects with unique names, and a chunk stored twice by two racing
//! writers is harmless (the index keeps both copies; prune drops the spare).
//!
//! Deletion is what needs care, because a running backup may rely on a chunk it found in
//! the index without uploading it. Prune therefore deletes in two phases:
//!
//! * **mark**: packs that no point refers to (and packs in no index) are listed in a
//!   deletion mark. A backup that starts after the mark treats marked packs as absent and
//!   uploads its own copy of anything it needs.
//! * **sweep**, in a later prune once the grace period (one hour by default) has passed:
//!   a marked pack is deleted only if no writer session that started before the mark may
//!   still hold references (one still heartbeating, or one that ended less than a grace
//!   period ago, so its point has had time to appear in listings), and only if every chunk
//!   of it that a point uses has another copy. The index is rewritten without the pack
//!   before the pack is deleted.
//!
//! Sessions heartbeat every two minutes; one silent for thirty minutes is taken as dead.
//! A session's first record is flushed to the disk, so that after a power loss the next
//! backup finds it without an end and reuses its packs; its heartbeats and its end are
//! not, since losing them only makes the session look alive or unfinished for longer.
//! Forget (deleting point files) and check may run at any time. Two prunes should not run
//! at once; doing so loses no data but may repeat work.
//!
//! # Memory
//!
//! The index holds 48 bytes per chunk in one sorted array, plus under a byte per chunk for
//! the table that takes lookups to the right run of records. A backup holds the chunks it
//! stored in a set and the entry list of the open pack, whose bytes go to the backend's
//! spool as chunks arrive (a file on a local vault, written by a thread of its own in
//! 1 MiB stages, with direct I/O where the file system allows it); trees are stored as
//! soon as each directory is complete. Chunk buffers are reused from one chunk to the
//! next, and a chunk stored without compression is encrypted in its own buffer, so the
//! pipeline's memory stays flat. Spools of a killed backup are removed by prune once idle
//! for longer than a session takes to go stale.
#![forbid(unsafe_code)]

pub mod backend;
pub mod chunker;
pub mod codec;
pub mod commands;
pub mod crypto;
pub mod damage;
pub mod error;
pub mod format;
pub mod id;
pub mod index;
pub mod key;
pub mod pack;
pub mod point;
pub mod retention;
pub mod session;
pub mod size;
pub mod tree;
pub mod vault;

pub use backend::{Backend, BackendError, DryRunBackend, FileKind, LocalBackend, Spool};
pub use chunker::{CdcParams, Chunking};
pub use commands::backup::{Backup, BackupOptions, CommitOptions, StreamResult, StreamWriter};
pub use commands::restore::{ContentReader, Piece};
pub use error::{Error, Result};
pub use id::{ChunkId, PackId, PointId};
pub use key::{Credential, KdfParams};
pub use point::{BackupStats, Consistency, PluginRef, Point};
pub use tree::{Content, Entry, EntryKind, Extent, Metadata, Tree};
pub use vault::{Clock, Encryption, InitOptions, OpenOptions, SystemClock, Vault};
