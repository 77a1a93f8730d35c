//! Rewriting a recovery point without some of its paths: a file that should never have
//! been backed up (a key, a huge temporary file) goes from the point, and once the
//! original is forgotten, `prune` reclaims its data.
//!
//! The new point keeps everything the original recorded (item, plugin, times, tags,
//! figures) and names it in `original`. Its trees are written anew only where something
//! below them went: a directory with nothing removed keeps its stored tree. A hard link
//! whose file was removed takes the file's place (the first of its names to come, in the
//! point's order), and its other names link to it.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::id::{ChunkId, PointId};
use crate::point::Point;
use crate::tree::{Entry, EntryKind, child_path};
use crate::vault::Vault;

use super::backup::{Backup, BackupOptions};

/// What [`rewrite`] did to one point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewritten {
    /// The point rewritten.
    pub point: PointId,
    /// The new point, if anything was removed (and it was not a dry run).
    pub new: Option<PointId>,
    /// The paths removed, each with everything below it.
    pub removed: Vec<String>,
}

/// Writes a new point holding what `point` holds but the paths `excluded` matches, each
/// with everything below it; with `dry_run`, or when nothing matches, only says what
/// would go. The original point stays: forget it to be rid of the removed data.
pub fn rewrite(
    vault: &Vault,
    point: PointId,
    excluded: &dyn Fn(&str) -> bool,
    dry_run: bool,
) -> Result<Rewritten> {
    let record = vault.load_named_point(&point)?;
    let mut survey = Survey {
        vault,
        excluded,
        removed: Vec::new(),
        links: Vec::new(),
    };
    survey.walk(record.root, "")?;
    let removed = survey.removed;
    if removed.is_empty() || dry_run {
        return Ok(Rewritten {
            point,
            new: None,
            removed,
        });
    }
    let gone = |path: &str| {
        removed.iter().any(|r| {
            path == r
                || path
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    };
    // Directories to write anew: those above a removed path, or above a hard link whose
    // file went.
    let mut dirty: HashSet<String> = HashSet::new();
    let mut mark = |path: &str| {
        let mut at = path;
        while let Some((parent, _)) = at.rsplit_once('/') {
            dirty.insert(parent.to_owned());
            at = parent;
        }
    };
    for path in &removed {
        mark(path);
    }
    for (path, target) in &survey.links {
        if gone(target) {
            mark(path);
        }
    }

    let mut options = BackupOptions::new(record.item.clone(), record.plugin.clone());
    options.host = record.host.clone();
    let mut backup = Backup::start(vault, options)?;
    let mut writer = Writer {
        vault,
        record: &record,
        excluded,
        dirty: &dirty,
        gone: &gone,
        promoted: HashMap::new(),
    };
    let written = writer.write(&mut backup, record.root, "");
    let result = written.and_then(|()| backup.commit_rewrite((point, &record)));
    let (new, _) = result?;
    Ok(Rewritten {
        point,
        new: Some(new),
        removed,
    })
}

/// The first walk: what goes, and where the hard links point.
struct Survey<'a> {
    vault: &'a Vault,
    excluded: &'a dyn Fn(&str) -> bool,
    removed: Vec<String>,
    /// Every hard link kept, with its target.
    links: Vec<(String, String)>,
}

impl Survey<'_> {
    fn walk(&mut self, tree: ChunkId, dir: &str) -> Result<()> {
        let tree = self.vault.cached_tree(&tree)?;
        for entry in &tree.entries {
            let path = child_path(dir, &entry.name);
            if (self.excluded)(&path) {
                self.removed.push(path);
                continue;
            }
            match (&entry.kind, entry.subtree) {
                (EntryKind::Directory, Some(subtree)) => self.walk(subtree, &path)?,
                (EntryKind::Hardlink { target }, _) => self.links.push((path, target.clone())),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The second walk: the entries that stay, into the new point.
struct Writer<'a> {
    vault: &'a Vault,
    record: &'a Point,
    excluded: &'a dyn Fn(&str) -> bool,
    dirty: &'a HashSet<String>,
    gone: &'a dyn Fn(&str) -> bool,
    /// For each removed file, the name of the hard link that took its place.
    promoted: HashMap<String, String>,
}

impl Writer<'_> {
    fn write(&mut self, backup: &mut Backup, tree: ChunkId, dir: &str) -> Result<()> {
        let tree = self.vault.cached_tree(&tree)?;
        for entry in &tree.entries {
            let path = child_path(dir, &entry.name);
            if (self.excluded)(&path) {
                continue;
            }
            match (&entry.kind, entry.subtree) {
                (EntryKind::Directory, Some(subtree)) if self.dirty.contains(&path) => {
                    let mut opened = entry.clone();
                    opened.subtree = None;
                    backup.add_entry(&path, opened)?;
                    self.write(backup, subtree, &path)?;
                }
                (EntryKind::Hardlink { target }, _) if (self.gone)(target) => {
                    let entry = self.relink(&path, target, entry)?;
                    backup.add_entry(&path, entry)?;
                }
                _ => backup.add_entry(&path, entry.clone())?,
            }
        }
        Ok(())
    }

    /// A hard link whose file was removed: the first such link becomes the file, the
    /// others link to it.
    fn relink(&mut self, path: &str, target: &str, link: &Entry) -> Result<Entry> {
        if let Some(first) = self.promoted.get(target) {
            let mut entry = link.clone();
            entry.kind = EntryKind::Hardlink {
                target: first.clone(),
            };
            return Ok(entry);
        }
        let mut file = self.vault.find_entry(self.record, target)?;
        file.name = link.name.clone();
        self.promoted.insert(target.to_owned(), path.to_owned());
        Ok(file)
    }
}
