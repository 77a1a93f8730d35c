//! Comparing two recovery points: which paths were added, removed or changed between
//! them, and how much data only one of them holds.
//!
//! The trees are compared side by side from the root down. A directory whose tree has
//! the same id in both points is equal all the way down and is not read, so comparing two
//! backups of a large, mostly unchanged tree reads only the trees along the changed
//! paths. The data figures need every chunk of both points, which a walk of each point
//! collects.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::id::ChunkId;
use crate::tree::{Entry, EntryKind, Metadata, Tree, child_path};
use crate::vault::Vault;

use super::walk::{WalkEvent, walk};

/// How a path differs between the two points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Only in the second point.
    Added,
    /// Only in the first point.
    Removed,
    /// In both, of another kind (a file became a directory or a link, say).
    TypeChanged,
    /// In both, with other content (a file's bytes, a link's target).
    Modified,
    /// In both with the same content, but other metadata (mode, owner, times, extended
    /// attributes). A directory's times change with its entries and are not counted.
    Metadata,
}

impl ChangeKind {
    /// The one-letter mark `tessera diff` prints: `+`, `-`, `T`, `M` or `U`.
    pub fn mark(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::TypeChanged => 'T',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
        }
    }
}

/// One path that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The path in the points (directories end without a slash).
    pub path: String,
    /// How it differs.
    pub change: ChangeKind,
    /// Whether it is a directory (in the point that has it, or in the second one).
    pub directory: bool,
}

/// What [`diff`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffReport {
    /// Paths that differ, in path order.
    pub changes: Vec<Change>,
    /// Paths only in the second point.
    pub added: u64,
    /// Paths only in the first point.
    pub removed: u64,
    /// Paths in both whose kind or content differ.
    pub modified: u64,
    /// Paths in both whose metadata alone differs.
    pub metadata_only: u64,
    /// Bytes of the chunks only the second point uses (what it added to the vault, had
    /// the first point been the only other one).
    pub bytes_added: u64,
    /// Bytes of the chunks only the first point uses.
    pub bytes_removed: u64,
    /// Chunks the points refer to whose size the index does not know (missing from the
    /// vault): left out of the byte figures.
    pub chunks_unknown: u64,
}

/// Compares the trees rooted at `first` and `second` (the older point first, usually).
pub fn diff(vault: &Vault, first: ChunkId, second: ChunkId) -> Result<DiffReport> {
    let mut report = DiffReport::default();
    compare_trees(vault, first, second, "", &mut report)?;
    report.changes.sort_by(|a, b| a.path.cmp(&b.path));
    for change in &report.changes {
        match change.change {
            ChangeKind::Added => report.added += 1,
            ChangeKind::Removed => report.removed += 1,
            ChangeKind::TypeChanged | ChangeKind::Modified => report.modified += 1,
            ChangeKind::Metadata => report.metadata_only += 1,
        }
    }
    let (first_chunks, unread_first) = chunks_of(vault, first);
    let (second_chunks, unread_second) = chunks_of(vault, second);
    if let Some(error) = unread_first.or(unread_second) {
        return Err(error);
    }
    let index = vault.index();
    let mut size = |id: &ChunkId| match index.lookup(id) {
        Some(location) => u64::from(location.raw_len),
        None => {
            report.chunks_unknown += 1;
            0
        }
    };
    let added: u64 = second_chunks.difference(&first_chunks).map(&mut size).sum();
    let removed: u64 = first_chunks.difference(&second_chunks).map(&mut size).sum();
    report.bytes_added = added;
    report.bytes_removed = removed;
    Ok(report)
}

/// Compares two directories' trees, recording what differs below `dir`.
fn compare_trees(
    vault: &Vault,
    first: ChunkId,
    second: ChunkId,
    dir: &str,
    report: &mut DiffReport,
) -> Result<()> {
    if first == second {
        return Ok(());
    }
    let a = vault.cached_tree(&first)?;
    let b = vault.cached_tree(&second)?;
    for new in &b.entries {
        let path = child_path(dir, &new.name);
        let Some(old) = a.get(&new.name) else {
            everything_below(vault, new, &path, ChangeKind::Added, report)?;
            continue;
        };
        if kind_name(&old.kind) != kind_name(&new.kind) {
            report.changes.push(Change {
                path: path.clone(),
                change: ChangeKind::TypeChanged,
                directory: new.is_dir(),
            });
            children(vault, old, &path, ChangeKind::Removed, report)?;
            children(vault, new, &path, ChangeKind::Added, report)?;
            continue;
        }
        let change = if new.is_dir() {
            (!same_dir_meta(&old.meta, &new.meta)).then_some(ChangeKind::Metadata)
        } else if old.kind != new.kind || old.content != new.content {
            Some(ChangeKind::Modified)
        } else {
            (!same_meta(&old.meta, &new.meta)).then_some(ChangeKind::Metadata)
        };
        if let Some(change) = change {
            report.changes.push(Change {
                path: path.clone(),
                change,
                directory: new.is_dir(),
            });
        }
        if let (Some(old_tree), Some(new_tree)) = (old.subtree, new.subtree) {
            compare_trees(vault, old_tree, new_tree, &path, report)?;
        }
    }
    for old in a.entries.iter().filter(|old| b.get(&old.name).is_none()) {
        let path = child_path(dir, &old.name);
        everything_below(vault, old, &path, ChangeKind::Removed, report)?;
    }
    Ok(())
}

/// Records `entry` at `path` and, for a directory, everything below it, as `change`.
fn everything_below(
    vault: &Vault,
    entry: &Entry,
    path: &str,
    change: ChangeKind,
    report: &mut DiffReport,
) -> Result<()> {
    report.changes.push(Change {
        path: path.to_string(),
        change,
        directory: entry.is_dir(),
    });
    children(vault, entry, path, change, report)
}

/// Records everything below the directory `entry` at `path` as `change`; nothing for
/// another kind of entry.
fn children(
    vault: &Vault,
    entry: &Entry,
    path: &str,
    change: ChangeKind,
    report: &mut DiffReport,
) -> Result<()> {
    let Some(subtree) = entry.subtree else {
        return Ok(());
    };
    let tree: Arc<Tree> = vault.cached_tree(&subtree)?;
    for child in &tree.entries {
        everything_below(vault, child, &child_path(path, &child.name), change, report)?;
    }
    Ok(())
}

/// Every chunk the point rooted at `root` refers to (data, trees and lists), and the
/// first error met reading its trees.
fn chunks_of(vault: &Vault, root: ChunkId) -> (HashSet<ChunkId>, Option<crate::Error>) {
    let mut chunks = HashSet::new();
    let mut error = None;
    // A tree met twice adds no chunk the first walk through it did not.
    let mut visited = HashSet::new();
    walk(vault, root, Some(&mut visited), &mut |event| match event {
        WalkEvent::Meta { id, .. } | WalkEvent::Data { id, .. } => {
            chunks.insert(id);
        }
        WalkEvent::Unreadable { error: e, path } => {
            if error.is_none() {
                error = Some(crate::Error::Invalid(format!(
                    "cannot read the tree of '{path}': {e}"
                )));
            }
        }
    });
    (chunks, error)
}

/// The kind's name alone: a symlink whose target changed is still a symlink.
fn kind_name(kind: &EntryKind) -> std::mem::Discriminant<EntryKind> {
    std::mem::discriminant(kind)
}

/// Whether two directories' own metadata agree, leaving out the times that change
/// whenever an entry is added or removed.
fn same_dir_meta(a: &Metadata, b: &Metadata) -> bool {
    a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.xattrs == b.xattrs
}

/// Whether two entries' metadata agree in what a user set or sees: mode, owner,
/// modification time, extended attributes and device number. Access times move with
/// every read, and the change time, inode and device with every rename or restore,
/// without the file being any different.
fn same_meta(a: &Metadata, b: &Metadata) -> bool {
    same_dir_meta(a, b) && a.mtime_ns == b.mtime_ns && a.rdev == b.rdev
}
