//! Restore: writes a point's tree, or the selected parts of it, under the granted target
//! directory, each entry at its path relative to the point's root. Entries come from the
//! point depth first; a directory's metadata is applied once its children are written,
//! so its times and a read-only mode do not get in the way. Metadata the host cannot
//! apply becomes a warning in the summary rather than a failure.
//!
//! The `include` and `exclude` settings filter what is restored as they filter a
//! capture: an excluded entry is left out with everything below it; with include
//! patterns only the entries that match, and everything below a directory that matches,
//! are restored, and a directory on the way to one is created when the first entry below
//! it is, with its stored metadata.
//!
//! What is already in the target is replaced (`overwrite=always`), kept unless the
//! stored file differs in size or modification time (`if-changed`, whose metadata is still
//! applied) or is newer (`if-newer`), or always kept (`never`); existing directories are
//! merged into. With `delete`, a directory restored whole loses the entries the point
//! does not hold there (but not those an exclude pattern matches).

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};

use tessera_plugin_sdk::content::{self, ReadError};
use tessera_plugin_sdk::error::{from_host, from_io, host_error_text};
use tessera_plugin_sdk::filter::PathFilter;
use tessera_plugin_sdk::meta::{self, PERMISSION_BITS};
use tessera_plugin_sdk::path;
use tessera_plugin_sdk::path::Mount;
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::settings::Settings;
use tessera_plugin_sdk::target::{self, Tally};
use tessera_plugin_sdk::{debug, info};

use crate::{DELETE, EXCLUDE, INCLUDE, OVERWRITE};

/// Mode of a fifo whose stored mode is unknown: what `mkfifo` gives under umask 022.
const DEFAULT_FIFO_MODE: u32 = 0o644;

/// Runs a restore job.
pub(crate) fn run(request: &RestoreRequest) -> Result<RestoreSummary, PluginError> {
    let target = target::locate(&request.target)?;
    let selection = path::restore_selection(&request.paths)
        .map_err(|err| PluginError::InvalidSettings(format!("cannot restore: {err}")))?;
    let settings = Settings::new(&request.settings);
    let filter = PathFilter::new(&settings.all(INCLUDE), &settings.all(EXCLUDE))
        .map_err(|err| PluginError::InvalidSettings(err.to_string()))?;

    let overwrite = match settings.get(OVERWRITE)? {
        None | Some("always") => Overwrite::Always,
        Some("if-changed") => Overwrite::IfChanged,
        Some("if-newer") => Overwrite::IfNewer,
        Some("never") => Overwrite::Never,
        Some(other) => {
            return Err(PluginError::InvalidSettings(format!(
                "setting `{OVERWRITE}` is always, if-changed, if-newer or never, not {other:?}"
            )));
        }
    };
    let delete = settings.bool(DELETE, false)?;

    let mut job = Job {
        target,
        filter,
        overwrite,
        delete,
        inodes: HashMap::new(),
        tally: Tally::default(),
        in_created_dir: false,
        kept: 0,
        deleted: 0,
    };
    for selected in path::minimal_cover(selection) {
        job.restore_selection(&selected)?;
    }
    if job.kept > 0 || job.deleted > 0 {
        info!(
            "kept {} entries already in the target, deleted {} the point does not hold",
            job.kept, job.deleted
        );
    }
    Ok(job.tally.summary())
}

/// What to do with an entry already in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overwrite {
    /// Replace it.
    Always,
    /// Keep a regular file of the stored size and modification time.
    IfChanged,
    /// Keep it unless the stored entry is newer.
    IfNewer,
    /// Keep it.
    Never,
}

/// Whether an entry already in the target stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// No: restore the entry.
    Replace,
    /// Yes, its content; the stored metadata is applied to it.
    KeepContent,
    /// Yes, as it is.
    Keep,
}

/// A restored directory whose children are being restored.
struct Dir {
    /// Its entry, whose metadata is applied when the children are done; `None` for the
    /// point's root, which is the target itself.
    entry: Option<EntryInfo>,
    children: std::vec::IntoIter<EntryInfo>,
    /// Whether this restore created it, rather than finding it in the target.
    created: bool,
    /// Whether everything below it is restored: it or a directory above it matched an
    /// include pattern, or there are none.
    whole: bool,
    /// Whether it is still to be created: a directory that matched no include pattern
    /// is created only once an entry below it is restored.
    pending: bool,
    /// With `delete`, the names the point holds in it.
    names: Option<HashSet<String>>,
}

/// The state of one restore.
struct Job {
    target: Mount,
    filter: PathFilter,
    /// For each stored file that others link to, the path where its content now is:
    /// the file itself, or the first link restored in its place when it was not selected.
    inodes: HashMap<String, String>,
    tally: Tally,
    /// Whether the entry being restored goes into a directory this restore created.
    in_created_dir: bool,
    overwrite: Overwrite,
    /// Whether directories restored whole lose what the point does not hold.
    delete: bool,
    /// Entries kept as they were in the target.
    kept: u64,
    /// Entries deleted from the target.
    deleted: u64,
}

impl Job {
    /// Restores `selected` and everything below it (`""`: the whole point).
    fn restore_selection(&mut self, selected: &str) -> Result<(), PluginError> {
        let top = if selected.is_empty() {
            let whole = !self.filter.has_includes();
            let (children, names) = self.list_dir("", whole)?;
            Dir {
                entry: None,
                children,
                created: false,
                whole,
                pending: false,
                names,
            }
        } else {
            let entry = target::selected_entry(selected)?;
            // Like `restic restore --include a/b`: the selection keeps its place in the
            // tree, inside parents created plainly (their stored metadata is not applied,
            // since they were not asked for).
            let parent = self.target.sandbox(path::parent(selected));
            fs::create_dir_all(&parent)
                .map_err(|err| from_io(format_args!("creating {}", parent.display()), &err))?;
            self.in_created_dir = false;
            // A selection is restored whole unless a filter says otherwise below it.
            if self.filter.is_excluded(&entry.path) {
                return Ok(());
            }
            let whole = self.filter.is_included(&entry.path);
            if !whole && entry.kind != EntryKind::Directory {
                return Ok(());
            }
            match self.restore_entry(entry, whole)? {
                Some(dir) => dir,
                None => return Ok(()),
            }
        };

        let mut stack = vec![top];
        while let Some(dir) = stack.last_mut() {
            let Some(child) = dir.children.next() else {
                if let Some(dir) = stack.pop() {
                    self.finish_dir(dir)?;
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
            if host::cancelled() {
                return Err(PluginError::Cancelled);
            }
            if self.filter.is_excluded(&child.path) {
                continue;
            }
            let whole = dir.whole || self.filter.is_included(&child.path);
            if !whole {
                // Not asked for itself: a directory is looked into, anything else skipped.
                if child.kind == EntryKind::Directory {
                    let (children, names) = self.list_dir(&child.path, false)?;
                    stack.push(Dir {
                        entry: Some(child),
                        children,
                        created: false,
                        whole: false,
                        pending: true,
                        names,
                    });
                }
                continue;
            }
            self.create_pending(&mut stack)?;
            let dir = stack.last().expect("the directory being restored");
            self.in_created_dir = dir.created;
            if let Some(dir) = self.restore_entry(child, whole)? {
                stack.push(dir);
            }
            host::progress(self.tally.bytes_written, 0, self.tally.entries, 0);
        }
        Ok(())
    }

    /// Creates the directories of `stack` still pending, from the top down, before an
    /// entry is restored in the last of them.
    fn create_pending(&mut self, stack: &mut [Dir]) -> Result<(), PluginError> {
        let mut in_created = false;
        for dir in stack.iter_mut() {
            if dir.pending {
                let entry = dir
                    .entry
                    .as_ref()
                    .expect("a pending directory has an entry");
                let path = entry.path.as_str();
                dir.created = self.make_dir(path, &self.target.sandbox(path), in_created)?;
                dir.pending = false;
                self.tally.entries += 1;
            }
            in_created = dir.created;
        }
        Ok(())
    }

    /// Makes the directory `path` at `dest`; returns whether this restore created it. In
    /// a directory this restore created (`in_created`) nothing can be in the way.
    fn make_dir(
        &self,
        path: &str,
        dest: &std::path::Path,
        in_created: bool,
    ) -> Result<bool, PluginError> {
        if !in_created {
            return target::make_dir(path, dest);
        }
        fs::create_dir(dest)
            .map_err(|err| from_io(format_args!("creating directory {path:?}"), &err))?;
        Ok(true)
    }

    /// Restores one entry; a directory is returned to have its children restored, all of
    /// them if `whole`.
    fn restore_entry(&mut self, entry: EntryInfo, whole: bool) -> Result<Option<Dir>, PluginError> {
        // The host confines every call to the grant, but a plugin must never even try
        // to write outside it.
        path::validate(&entry.path)
            .map_err(|err| PluginError::CorruptSource(format!("refusing an entry: {err}")))?;
        let path = entry.path.as_str();
        let dest = self.target.sandbox(path);
        let existing = self.existing(&entry)?;
        if existing == Existing::Keep {
            debug!("{path}: kept as it is in the target");
            self.kept += 1;
            return Ok(None);
        }
        match &entry.kind {
            EntryKind::Directory => {
                let created = self.make_dir(path, &dest, self.in_created_dir)?;
                self.tally.entries += 1;
                let (children, names) = self.list_dir(path, whole)?;
                return Ok(Some(Dir {
                    entry: Some(entry),
                    children,
                    created,
                    whole,
                    pending: false,
                    names,
                }));
            }
            EntryKind::File if existing == Existing::KeepContent => {
                debug!("{path}: same size and time in the target, content kept");
                self.kept += 1;
                if entry.meta.nlink.is_none_or(|links| links > 1) {
                    self.inodes.insert(path.to_owned(), path.to_owned());
                }
            }
            // Content of other workloads' kinds is written as a plain file: the bytes are
            // what an operator restoring them through this plugin wants.
            EntryKind::File
            | EntryKind::Blob
            | EntryKind::BlockDevice
            | EntryKind::DatabaseStream
            | EntryKind::LogSegment => {
                self.write_file(path, path, &entry.meta, &dest)?;
                // Only a file with other names can be the target of a hard link.
                if entry.meta.nlink.is_none_or(|links| links > 1) {
                    self.inodes.insert(path.to_owned(), path.to_owned());
                }
            }
            EntryKind::Hardlink(first) => {
                if self.hardlink(path, first, &entry.meta, &dest)? {
                    // A new name of a restored file shares its metadata.
                    self.tally.entries += 1;
                    return Ok(None);
                }
            }
            EntryKind::Symlink(target) => {
                if !self.symlink(path, target, &dest)? {
                    return Ok(None);
                }
            }
            EntryKind::Fifo => {
                self.clear(path, &dest)?;
                let mode = entry
                    .meta
                    .mode
                    .map_or(DEFAULT_FIFO_MODE, |mode| mode & PERMISSION_BITS);
                host::make_fifo(&self.target.host(path), mode)
                    .map_err(|err| from_host(format_args!("creating fifo {path:?}"), &err))?;
            }
            EntryKind::CharDevice | EntryKind::BlockDeviceNode => {
                if !self.device(&entry, &dest)? {
                    return Ok(None);
                }
            }
            EntryKind::Socket => {
                // A socket belongs to the program listening on it, which creates it anew.
                debug!("{path}: socket not restored");
                return Ok(None);
            }
        }
        self.tally.entries += 1;
        self.apply_metadata(&entry);
        Ok(None)
    }

    /// Writes the content stored at `content_path` into a new file at `dest`, keeping
    /// its holes.
    fn write_file(
        &mut self,
        path: &str,
        content_path: &str,
        meta: &Metadata,
        dest: &std::path::Path,
    ) -> Result<(), PluginError> {
        self.clear(path, dest)?;
        let reader = match point::open(content_path) {
            Ok(reader) => reader,
            // An empty file may be stored without any content at all.
            Err(HostError::NotFound(_)) if meta.size == 0 => {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dest)
                    .map_err(|err| from_io(format_args!("creating {path:?}"), &err))?;
                return Ok(());
            }
            Err(err) => {
                return Err(from_host(
                    format_args!("opening the content of {content_path:?}"),
                    &err,
                ));
            }
        };
        let written =
            content::restore_file(&reader, &self.target.host(path)).map_err(|err| match err {
                ReadError::Host(err) => from_host(
                    format_args!("reading the content of {content_path:?}"),
                    &err,
                ),
                ReadError::Write(err) => from_io(format_args!("writing {path:?}"), &err),
                short @ ReadError::Short { .. } => {
                    PluginError::CorruptSource(format!("{content_path:?}: {short}"))
                }
            })?;
        self.tally.bytes_written += written;
        Ok(())
    }

    /// Restores another name of the file stored at `first`: a hard link when that file
    /// was restored, else a copy of its content that later names link to. Returns whether
    /// a link was made (a copy still needs its metadata applied).
    fn hardlink(
        &mut self,
        path: &str,
        first: &str,
        meta: &Metadata,
        dest: &std::path::Path,
    ) -> Result<bool, PluginError> {
        path::validate(first).map_err(|err| {
            PluginError::CorruptSource(format!(
                "refusing hard link {path:?}: its target is invalid: {err}"
            ))
        })?;
        if let Some(existing) = self.inodes.get(first).cloned() {
            self.clear(path, dest)?;
            // The host may still be writing the first name; a host call on it waits for
            // the file to be there.
            let _ = host::stat(&self.target.host(&existing));
            match fs::hard_link(self.target.sandbox(&existing), dest) {
                Ok(()) => return Ok(true),
                Err(err) => self.tally.warn(format!(
                    "{path}: not linked to {existing} ({err}); restored as a copy"
                )),
            }
        }
        self.write_file(path, first, meta, dest)?;
        self.inodes
            .entry(first.to_owned())
            .or_insert_with(|| path.to_owned());
        Ok(false)
    }

    /// Creates a symlink; returns whether it was created.
    fn symlink(
        &mut self,
        path: &str,
        target: &str,
        dest: &std::path::Path,
    ) -> Result<bool, PluginError> {
        self.clear(path, dest)?;
        // The host stores the target verbatim; WASI's own `symlink-at` refuses absolute
        // targets.
        host::make_symlink(&self.target.host(path), target).map_err(|err| {
            from_host(
                format_args!("creating symlink {path:?} -> {target:?}"),
                &err,
            )
        })?;
        Ok(true)
    }

    /// Creates a device node; returns whether it was created. Creating one needs
    /// privilege the host may not have, which is worth a warning, not a failed restore.
    fn device(&mut self, entry: &EntryInfo, dest: &std::path::Path) -> Result<bool, PluginError> {
        let path = entry.path.as_str();
        let block = entry.kind == EntryKind::BlockDeviceNode;
        let Some(rdev) = entry.meta.rdev else {
            self.tally.warn(format!(
                "{path}: device node not created, its device number was not captured"
            ));
            return Ok(false);
        };
        self.clear(path, dest)?;
        let mode = entry.meta.mode.unwrap_or(0o600) & PERMISSION_BITS;
        match host::make_device(&self.target.host(path), mode, rdev, block) {
            Ok(()) => Ok(true),
            Err(err) => {
                self.tally.warn(format!(
                    "{path}: device node not created: {}",
                    host_error_text(&err)
                ));
                Ok(false)
            }
        }
    }

    /// Removes what is in the way of the entry `path` at `dest`; nothing can be in a
    /// directory this restore created, so that needs no look.
    fn clear(&self, path: &str, dest: &std::path::Path) -> Result<(), PluginError> {
        if self.in_created_dir {
            return Ok(());
        }
        target::clear(path, dest)
    }

    /// Applies an entry's stored metadata; what the host cannot apply is a warning.
    fn apply_metadata(&mut self, entry: &EntryInfo) {
        let wanted = meta::restore_metadata(&entry.kind, &entry.meta);
        self.tally
            .apply_metadata(&entry.path, &self.target.host(&entry.path), &wanted);
    }

    /// The entries directly below `path` in the point.
    fn list(&self, path: &str) -> Result<std::vec::IntoIter<EntryInfo>, PluginError> {
        let entries = point::children(path)
            .map_err(|err| from_host(format_args!("listing {path:?} in the point"), &err))?;
        Ok(entries.into_iter())
    }

    /// [`Job::list`], with the entries' names when the directory is restored `whole` and
    /// loses what the point does not hold.
    #[allow(clippy::type_complexity)]
    fn list_dir(
        &self,
        path: &str,
        whole: bool,
    ) -> Result<(std::vec::IntoIter<EntryInfo>, Option<HashSet<String>>), PluginError> {
        let entries = self.list(path)?;
        let names = (self.delete && whole).then(|| {
            entries
                .as_slice()
                .iter()
                .map(|entry| path::name(&entry.path).to_owned())
                .collect()
        });
        Ok((entries, names))
    }

    /// Whether what the target has at `entry`'s path stays, by the `overwrite` setting.
    fn existing(&self, entry: &EntryInfo) -> Result<Existing, PluginError> {
        if self.overwrite == Overwrite::Always || self.in_created_dir {
            return Ok(Existing::Replace);
        }
        let there = match host::stat(&self.target.host(&entry.path)) {
            Ok(stat) => stat,
            Err(HostError::NotFound(_)) => return Ok(Existing::Replace),
            Err(err) => {
                return Err(from_host(
                    format_args!("looking at {:?} in the target", entry.path),
                    &err,
                ));
            }
        };
        let there_type = meta::FileType::from_mode(there.mode);
        // A directory is merged into, whatever the setting.
        if entry.kind == EntryKind::Directory && there_type == meta::FileType::Directory {
            return Ok(Existing::Replace);
        }
        Ok(match self.overwrite {
            Overwrite::Always => Existing::Replace,
            Overwrite::Never => Existing::Keep,
            Overwrite::IfNewer => match entry.meta.mtime_ns {
                Some(stored) if stored > there.mtime_ns => Existing::Replace,
                _ => Existing::Keep,
            },
            Overwrite::IfChanged => {
                let same = entry.kind == EntryKind::File
                    && there_type == meta::FileType::Regular
                    && there.size == entry.meta.size
                    && entry.meta.mtime_ns == Some(there.mtime_ns);
                if same {
                    Existing::KeepContent
                } else {
                    Existing::Replace
                }
            }
        })
    }

    /// Ends a directory whose children are restored: deletes what the point does not
    /// hold there (with `delete`), then applies its metadata. A directory kept with
    /// `overwrite=never` keeps its own metadata too.
    fn finish_dir(&mut self, dir: Dir) -> Result<(), PluginError> {
        if dir.pending {
            return Ok(());
        }
        let path = dir.entry.as_ref().map_or("", |entry| entry.path.as_str());
        if let Some(names) = &dir.names
            && !dir.created
        {
            self.delete_extra(path, names)?;
        }
        if let Some(entry) = &dir.entry
            && (dir.created || self.overwrite != Overwrite::Never)
        {
            self.apply_metadata(entry);
        }
        Ok(())
    }

    /// Deletes the entries of the target directory at `path` whose names are not in
    /// `names`, unless an exclude pattern matches them.
    fn delete_extra(&mut self, path: &str, names: &HashSet<String>) -> Result<(), PluginError> {
        let dir = self.target.sandbox(path);
        let listing = fs::read_dir(&dir).map_err(|err| {
            from_io(
                format_args!("listing {} in the target", dir.display()),
                &err,
            )
        })?;
        for found in listing {
            let found = found.map_err(|err| {
                from_io(
                    format_args!("listing {} in the target", dir.display()),
                    &err,
                )
            })?;
            let Some(name) = found.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if names.contains(&name) {
                continue;
            }
            let shown = path::join(path, &name).unwrap_or_else(|_| name.clone());
            if self.filter.is_excluded(&shown) {
                continue;
            }
            let dest = found.path();
            let removed = match fs::symlink_metadata(&dest) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&dest),
                Ok(_) => fs::remove_file(&dest),
                Err(err) => Err(err),
            };
            removed.map_err(|err| from_io(format_args!("deleting {shown:?}"), &err))?;
            info!("{shown}: deleted, the point does not hold it");
            self.deleted += 1;
        }
        Ok(())
    }
}
