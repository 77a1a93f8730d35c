//! What every restore into a target directory does the same way: finding the target,
//! clearing the way for an entry without writing through what was there, making
//! directories, applying metadata, and tallying entries, bytes and warnings into the
//! `restore-summary`.

use std::fs;
use std::io;
use std::path::Path;

use crate::error::{from_host, from_io, host_error_text};
use crate::host::{self, RestoreMetadata};
use crate::path::Mount;
use crate::point;
use crate::restore::RestoreSummary;
use crate::types::{EntryInfo, HostError, PluginError};
use crate::{info, warn};

/// Warnings listed in a summary; the rest are only counted (all are logged), so a tree of
/// a million files restored without privilege does not produce a huge summary.
const MAX_WARNINGS: usize = 1000;

/// The target directory of a request, which must exist and be a directory.
pub fn locate(given: &str) -> Result<Mount, PluginError> {
    let mount = Mount::new(given).map_err(|err| {
        PluginError::Io(format!(
            "target {given:?} is not a path inside the grant: {err}"
        ))
    })?;
    match fs::metadata(given) {
        Ok(meta) if meta.is_dir() => Ok(mount),
        Ok(_) => Err(PluginError::Io(format!(
            "target {given:?} is not a directory"
        ))),
        Err(err) => Err(from_io(format_args!("target {given:?}"), &err)),
    }
}

/// The point's entry at the path the operator selected for restore: not being in the
/// point is the operator's mistake (`invalid-settings`), an entry under another path is
/// the vault's (`corrupt-source`).
pub fn selected_entry(selected: &str) -> Result<EntryInfo, PluginError> {
    let entry = point::entry(selected).map_err(|err| match err {
        HostError::NotFound(_) => {
            PluginError::InvalidSettings(format!("path {selected:?} is not in the point"))
        }
        err => from_host(format_args!("looking up {selected:?}"), &err),
    })?;
    if entry.path != selected {
        return Err(PluginError::CorruptSource(format!(
            "looking up {selected:?} returned the entry {:?}",
            entry.path
        )));
    }
    Ok(entry)
}

/// Removes a file, symlink or special file at `dest` (the entry `path`), so that what
/// replaces it is a new object: writing through an old symlink or into another name's
/// inode would change something other than the entry. A directory in the way is an
/// error, since removing it would delete what the operator keeps there.
pub fn clear(path: &str, dest: &Path) -> Result<(), PluginError> {
    match fs::symlink_metadata(dest) {
        Ok(existing) if existing.is_dir() => Err(PluginError::Io(format!(
            "cannot restore {path:?}: a directory is in the way in the target"
        ))),
        Ok(_) => {
            fs::remove_file(dest).map_err(|err| from_io(format_args!("replacing {path:?}"), &err))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(from_io(format_args!("inspecting {path:?}"), &err)),
    }
}

/// Makes sure a directory exists at `dest`, replacing a non-directory in the way;
/// returns whether it created the directory.
pub fn make_dir(path: &str, dest: &Path) -> Result<bool, PluginError> {
    match fs::symlink_metadata(dest) {
        Ok(existing) if existing.is_dir() => return Ok(false),
        Ok(_) => clear(path, dest)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(from_io(format_args!("inspecting {path:?}"), &err)),
    }
    fs::create_dir(dest)
        .map_err(|err| from_io(format_args!("creating directory {path:?}"), &err))?;
    Ok(true)
}

/// The running totals of a restore.
#[derive(Debug, Default)]
pub struct Tally {
    /// Entries restored.
    pub entries: u64,
    /// Bytes of data written.
    pub bytes_written: u64,
    warnings: Vec<String>,
    unlisted: usize,
}

impl Tally {
    /// Records a warning (and logs it).
    pub fn warn(&mut self, warning: String) {
        warn!("{warning}");
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        } else {
            self.unlisted += 1;
        }
    }

    /// Applies metadata to the restored entry `shown` at `host_path` in the grant; what
    /// the host cannot apply (ownership without privilege, ...) is a warning.
    pub fn apply_metadata(&mut self, shown: &str, host_path: &str, wanted: &RestoreMetadata) {
        if let Err(err) = host::set_metadata(host_path, wanted) {
            self.warn(format!(
                "{shown}: metadata not applied: {}",
                host_error_text(&err)
            ));
        }
    }

    /// The summary the restore returns.
    pub fn summary(self) -> RestoreSummary {
        info!(
            "restored {} entries, wrote {} bytes, {} warnings",
            self.entries,
            self.bytes_written,
            self.warnings.len() + self.unlisted
        );
        let mut warnings = self.warnings;
        if self.unlisted > 0 {
            warnings.push(format!("{} more warnings are in the log", self.unlisted));
        }
        RestoreSummary {
            entries: self.entries,
            bytes_written: self.bytes_written,
            warnings,
        }
    }
}
