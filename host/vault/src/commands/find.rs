//! Finding entries by path in recovery points: which backups hold a file, and how it
//! looked in each.
//!
//! The caller decides what matches (`tessera find` compiles a glob); this module walks
//! the points' trees. Consecutive backups of a tree share most of their directories, so
//! what was found below a directory is remembered by its tree's id and path, and every
//! later point holding the same directory at the same place reuses it without reading it
//! again.

use std::collections::HashMap;
use std::sync::Arc;

use crate::id::ChunkId;
use crate::tree::{Entry, EntryKind, child_path};
use crate::vault::Vault;

/// An entry whose path matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its path in the point.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time in nanoseconds since the epoch, when known.
    pub mtime_ns: Option<i64>,
}

/// What matched in one directory, in name order: its own entries and what matched in
/// its subdirectories, shared with every point holding the same directory at the same
/// path.
#[derive(Debug, Default)]
struct Below {
    items: Vec<Item>,
}

#[derive(Debug)]
enum Item {
    Found(Found),
    Directory(Arc<Below>),
    /// A tree that could not be read, and why.
    Unreadable(String),
}

impl Below {
    fn flatten_into(&self, out: &mut FindResult) {
        for item in &self.items {
            match item {
                Item::Found(found) => out.found.push(found.clone()),
                Item::Directory(below) => below.flatten_into(out),
                Item::Unreadable(why) => out.unreadable.push(why.clone()),
            }
        }
    }
}

/// Searches points for paths that match, remembering what it found below each directory
/// for the next point.
pub struct Finder<'a> {
    vault: &'a Vault,
    matches: &'a dyn Fn(&str) -> bool,
    seen: HashMap<(ChunkId, String), Arc<Below>>,
}

impl std::fmt::Debug for Finder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finder")
            .field("directories_seen", &self.seen.len())
            .finish()
    }
}

/// The entries of one point that matched, in path order, and the directories whose tree
/// could not be read (with why), which may have held more.
#[derive(Debug, Default)]
pub struct FindResult {
    /// The entries that matched.
    pub found: Vec<Found>,
    /// Directories (`""` for the root) whose trees could not be read, with the reason.
    pub unreadable: Vec<String>,
}

impl<'a> Finder<'a> {
    /// A finder of the entries whose path `matches` accepts.
    pub fn new(vault: &'a Vault, matches: &'a dyn Fn(&str) -> bool) -> Self {
        Finder {
            vault,
            matches,
            seen: HashMap::new(),
        }
    }

    /// The entries of the point whose root tree is `root` that match.
    pub fn find(&mut self, root: ChunkId) -> FindResult {
        let mut result = FindResult::default();
        self.directory(root, "").flatten_into(&mut result);
        result
    }

    /// What matched below the directory at `path` with tree `tree`.
    fn directory(&mut self, tree: ChunkId, path: &str) -> Arc<Below> {
        let key = (tree, path.to_string());
        if let Some(below) = self.seen.get(&key) {
            return Arc::clone(below);
        }
        let mut below = Below::default();
        match self.vault.cached_tree(&tree) {
            Ok(entries) => {
                for entry in &entries.entries {
                    let child = child_path(path, &entry.name);
                    if (self.matches)(&child) {
                        below.items.push(Item::Found(found(&child, entry)));
                    }
                    if let Some(subtree) = entry.subtree {
                        let deeper = self.directory(subtree, &child);
                        if !deeper.items.is_empty() {
                            below.items.push(Item::Directory(deeper));
                        }
                    }
                }
            }
            Err(e) => below.items.push(Item::Unreadable(format!("'{path}': {e}"))),
        }
        let below = Arc::new(below);
        self.seen.insert(key, Arc::clone(&below));
        below
    }
}

fn found(path: &str, entry: &Entry) -> Found {
    Found {
        path: path.to_string(),
        kind: entry.kind.clone(),
        size: entry.meta.size,
        mtime_ns: entry.meta.mtime_ns,
    }
}
