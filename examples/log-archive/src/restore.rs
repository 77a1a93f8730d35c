//! Restore: writes the selected entries of a point (or all of them) under the granted
//! target directory, each at its path relative to the point's root. The host writes each
//! file's content itself (`content-reader.write-to`); a directory's metadata is applied
//! after its children are written, so its times and a read-only mode stick.

use std::fs;
use std::path::Path;

use tessera_plugin_sdk::content::{self, ReadError};
use tessera_plugin_sdk::error::{from_host, from_io};
use tessera_plugin_sdk::meta;
use tessera_plugin_sdk::path::{self, Mount};
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::target::{self, Tally};

/// Runs a restore job.
pub(crate) fn run(request: &RestoreRequest) -> Result<RestoreSummary, PluginError> {
    let target = target::locate(&request.target)?;
    let selection = path::restore_selection(&request.paths)
        .map_err(|err| PluginError::InvalidSettings(format!("cannot restore: {err}")))?;
    let mut job = Job {
        target,
        tally: Tally::default(),
    };
    for selected in path::minimal_cover(selection) {
        let top = if selected.is_empty() {
            Dir {
                entry: None,
                children: job.list("")?,
            }
        } else {
            let entry = target::selected_entry(&selected)?;
            // The selection keeps its place in the tree, inside parents created plainly.
            let parent = job.target.sandbox(path::parent(&selected));
            fs::create_dir_all(&parent)
                .map_err(|err| from_io(format_args!("creating {}", parent.display()), &err))?;
            match job.entry(entry)? {
                Some(dir) => dir,
                None => continue,
            }
        };
        job.tree(top)?;
    }
    Ok(job.tally.summary())
}

/// A restored directory whose children are being restored.
struct Dir {
    /// Its entry, whose metadata is applied once the children are done; `None` for the
    /// point's root, which is the target itself.
    entry: Option<EntryInfo>,
    children: std::vec::IntoIter<EntryInfo>,
}

/// The state of one restore.
struct Job {
    target: Mount,
    tally: Tally,
}

impl Job {
    /// Restores everything below `top`, depth first, with a stack of directories rather
    /// than recursion, so a deep point cannot overflow the plugin's stack.
    fn tree(&mut self, top: Dir) -> Result<(), PluginError> {
        let mut stack = vec![top];
        while let Some(dir) = stack.last_mut() {
            let Some(child) = dir.children.next() else {
                if let Some(entry) = stack.pop().and_then(|dir| dir.entry) {
                    self.finish(&entry);
                }
                continue;
            };
            let parent = dir.entry.as_ref().map_or("", |entry| entry.path.as_str());
            if !path::is_child_of(&child.path, parent) {
                return Err(PluginError::CorruptSource(format!(
                    "listing {parent:?} returned {:?}, which is not directly inside it",
                    child.path
                )));
            }
            stack.extend(self.entry(child)?);
        }
        Ok(())
    }

    /// Restores one entry; a directory is returned to have its children restored.
    fn entry(&mut self, entry: EntryInfo) -> Result<Option<Dir>, PluginError> {
        // The host confines every call to the grant, but a plugin must never even try
        // to write outside it.
        path::validate(&entry.path)
            .map_err(|err| PluginError::CorruptSource(format!("refusing an entry: {err}")))?;
        if host::cancelled() {
            return Err(PluginError::Cancelled);
        }
        let dest = self.target.sandbox(&entry.path);
        match entry.kind {
            EntryKind::Directory => {
                target::make_dir(&entry.path, &dest)?;
                let children = self.list(&entry.path)?;
                let entry = Some(entry);
                return Ok(Some(Dir { entry, children }));
            }
            EntryKind::File => self.file(&entry, &dest)?,
            _ => {
                let path = &entry.path;
                let warning = format!("{path}: not restored, log-archive restores only files");
                self.tally.warn(warning);
                return Ok(None);
            }
        }
        self.finish(&entry);
        Ok(None)
    }

    /// Counts a restored entry and applies its stored metadata (a directory's once its
    /// children are written, so its times and a read-only mode stick).
    fn finish(&mut self, entry: &EntryInfo) {
        self.tally.entries += 1;
        let wanted = meta::restore_metadata(&entry.kind, &entry.meta);
        let host_path = self.target.host(&entry.path);
        self.tally.apply_metadata(&entry.path, &host_path, &wanted);
        host::progress(self.tally.bytes_written, 0, self.tally.entries, 0);
    }

    /// The entries directly below `dir` in the point.
    fn list(&self, dir: &str) -> Result<std::vec::IntoIter<EntryInfo>, PluginError> {
        let children = point::children(dir)
            .map_err(|err| from_host(format_args!("listing {dir:?} in the point"), &err))?;
        Ok(children.into_iter())
    }

    /// Has the host write a file's stored content into a new file at `dest`.
    fn file(&mut self, entry: &EntryInfo, dest: &Path) -> Result<(), PluginError> {
        let path = entry.path.as_str();
        // Whatever is in the way goes, so nothing is written through an old symlink.
        target::clear(path, dest)?;
        let reader = match point::open(path) {
            Ok(reader) => reader,
            // An empty file may be stored without any content at all.
            Err(HostError::NotFound(_)) if entry.meta.size == 0 => {
                fs::File::create_new(dest)
                    .map_err(|err| from_io(format_args!("creating {path:?}"), &err))?;
                return Ok(());
            }
            Err(err) => {
                return Err(from_host(
                    format_args!("opening the content of {path:?}"),
                    &err,
                ));
            }
        };
        let written =
            content::restore_file(&reader, &self.target.host(path)).map_err(|err| match err {
                ReadError::Host(err) => from_host(format_args!("restoring {path:?}"), &err),
                other => PluginError::Io(format!("restoring {path:?}: {other}")),
            })?;
        self.tally.bytes_written += written;
        Ok(())
    }
}
