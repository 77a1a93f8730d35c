//! Recovery points: the single commit point of a backup.
//!
//! A point file is a sealed object (magic `TSPT`) holding a JSON document, named by the
//! SHA-256 of its bytes. Writing it is the last step of a backup: everything it refers to
//! (packs, then the index files listing them) was written before, so a point that exists
//! is always complete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{ChunkId, PointId};

/// How consistent the captured data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// As after a power loss: what was on disk at one instant, or less.
    Crash,
    /// File systems were frozen or synced.
    FileSystem,
    /// Applications flushed and paused their state (pre/post hooks succeeded).
    Application,
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Consistency::Crash => "crash",
            Consistency::FileSystem => "file-system",
            Consistency::Application => "application",
        })
    }
}

/// The plugin that captured a point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
}

/// Figures of one backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStats {
    /// Bytes of content read from the source.
    pub bytes_read: u64,
    /// Bytes of content not already in the vault.
    pub bytes_new: u64,
    /// Bytes written to packs for new chunks, after compression and encryption.
    pub bytes_stored: u64,
    /// Bytes found in the vault already (deduplicated).
    pub bytes_reused: u64,
    /// Bytes of holes (all-zero fixed chunks), never stored.
    pub bytes_holes: u64,
    /// Bytes of entries carried forward from the parent point without being read.
    pub bytes_carried: u64,
    /// Chunks stored by this backup.
    pub chunks_new: u64,
    /// Chunks found in the vault already.
    pub chunks_reused: u64,
    /// Entries in the point.
    pub entries: u64,
    /// Entries carried forward from the parent point.
    pub entries_carried: u64,
}

impl BackupStats {
    /// Adds another stream's figures.
    pub fn add(&mut self, other: &BackupStats) {
        self.bytes_read += other.bytes_read;
        self.bytes_new += other.bytes_new;
        self.bytes_stored += other.bytes_stored;
        self.bytes_reused += other.bytes_reused;
        self.bytes_holes += other.bytes_holes;
        self.bytes_carried += other.bytes_carried;
        self.chunks_new += other.chunks_new;
        self.chunks_reused += other.chunks_reused;
        self.entries += other.entries;
        self.entries_carried += other.entries_carried;
    }
}

/// A recovery point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Format version.
    pub version: u32,
    /// The protected item's name.
    pub item: String,
    /// The plugin that captured it.
    pub plugin: PluginRef,
    /// The machine that ran the backup.
    #[serde(default)]
    pub host: String,
    /// When the backup started.
    pub start: jiff::Timestamp,
    /// When the backup was committed.
    pub end: jiff::Timestamp,
    /// The consistency achieved.
    pub consistency: Consistency,
    /// Why the consistency is lower than asked for, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_reason: Option<String>,
    /// Operator tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The point this one was made incrementally from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<PointId>,
    /// The point this one replaced when its tags changed (the first of a chain of such
    /// changes): the id scripts and logs may still name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<PointId>,
    /// Whether some of the source could not be read.
    #[serde(default)]
    pub partial: bool,
    /// What went wrong while capturing, for partial points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Plugin-defined attributes (settings used, source description).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Figures of the backup.
    pub stats: BackupStats,
    /// The root tree.
    pub root: ChunkId,
}
