//! The entries of the directories read last, for the readers that look names up by
//! reading a whole directory (XFS, btrfs, FAT, exFAT): restoring a directory of many files
//! then reads it once, not once per file.

use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

/// Entries kept over all cached directories; past it the cache starts again empty.
const MAX_CACHED_ENTRIES: usize = 1 << 18;

/// Directory entries by directory.
pub(crate) struct DirCache<K, E> {
    dirs: HashMap<K, Rc<Vec<E>>>,
    entries: usize,
}

impl<K: Eq + Hash, E> DirCache<K, E> {
    pub(crate) fn new() -> Self {
        DirCache {
            dirs: HashMap::new(),
            entries: 0,
        }
    }

    pub(crate) fn get(&self, dir: &K) -> Option<Rc<Vec<E>>> {
        self.dirs.get(dir).cloned()
    }

    /// Keeps `entries` as those of `dir` and returns them.
    pub(crate) fn insert(&mut self, dir: K, entries: Vec<E>) -> Rc<Vec<E>> {
        if self.entries + entries.len() > MAX_CACHED_ENTRIES {
            self.dirs.clear();
            self.entries = 0;
        }
        self.entries += entries.len();
        let entries = Rc::new(entries);
        self.dirs.insert(dir, Rc::clone(&entries));
        entries
    }
}
