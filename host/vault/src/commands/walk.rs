//! Walking every chunk a recovery point refers to, for check and prune.

use std::collections::HashSet;

use crate::error::Error;
use crate::id::ChunkId;
use crate::tree::{Content, child_path};
use crate::vault::Vault;

/// One thing met while walking a point.
#[derive(Debug)]
pub enum WalkEvent<'a> {
    /// A tree or extent-list blob, at the path of the directory or entry using it.
    Meta {
        /// The blob.
        id: ChunkId,
        /// Where it is used.
        path: &'a str,
    },
    /// A data chunk of the entry at `path`.
    Data {
        /// The chunk.
        id: ChunkId,
        /// The entry.
        path: &'a str,
    },
    /// A tree or list that could not be read; what lies below it is unknown.
    Unreadable {
        /// The directory or entry.
        path: &'a str,
        /// Why.
        error: Error,
    },
}

/// Walks the trees below `root` depth first. With `visited`, trees already walked (by
/// another point, or elsewhere in this one) are not walked again: every chunk is still
/// reported at least once, which is all prune needs.
pub fn walk(
    vault: &Vault,
    root: ChunkId,
    mut visited: Option<&mut HashSet<ChunkId>>,
    f: &mut dyn FnMut(WalkEvent<'_>),
) {
    let mut stack = vec![(root, String::new())];
    while let Some((tree_id, dir)) = stack.pop() {
        if let Some(visited) = visited.as_deref_mut()
            && !visited.insert(tree_id)
        {
            continue;
        }
        f(WalkEvent::Meta {
            id: tree_id,
            path: &dir,
        });
        let tree = match vault.read_tree(&tree_id) {
            Ok(tree) => tree,
            Err(error) => {
                f(WalkEvent::Unreadable { path: &dir, error });
                continue;
            }
        };
        for entry in &tree.entries {
            let path = child_path(&dir, &entry.name);
            match &entry.content {
                Content::Extents(extents) => {
                    for id in extents.iter().filter_map(|e| e.id) {
                        f(WalkEvent::Data { id, path: &path });
                    }
                }
                Content::Lists(lists) => {
                    for list in lists {
                        f(WalkEvent::Meta {
                            id: list.id,
                            path: &path,
                        });
                        if visited.as_deref().is_some_and(|v| v.contains(&list.id)) {
                            continue;
                        }
                        if let Some(v) = visited.as_deref_mut() {
                            v.insert(list.id);
                        }
                        match vault.read_extent_list(&list.id) {
                            Ok(l) => {
                                for id in l.extents.iter().filter_map(|e| e.id) {
                                    f(WalkEvent::Data { id, path: &path });
                                }
                            }
                            Err(error) => f(WalkEvent::Unreadable { path: &path, error }),
                        }
                    }
                }
            }
            if let Some(sub) = entry.subtree {
                stack.push((sub, path));
            }
        }
    }
}
