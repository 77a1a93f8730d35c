//! Browse: the point as an operator explores it. The root holds the disks and the
//! configuration document as stored; below a disk are its partitions (`diskN/partK`) or
//! the file system filling it (`diskN/fs`), below an LVM2 physical volume its logical
//! volumes (`diskN/partK/LV`), and below those the directories and files of the file
//! system, read from the stored disk on demand.

use tessera_plugin_sdk::error::from_host;
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::{meta, path, warn};

use crate::error::from_fs;
use crate::guest_fs::{self, Reached, StoredDisk};
use crate::layout::{self, PointPath};

/// The entries directly below `path`.
pub(crate) fn children(path: &str) -> Result<Vec<EntryInfo>, PluginError> {
    let path = path::parse_selection(path)
        .map_err(|err| PluginError::InvalidSettings(format!("cannot browse: {err}")))?;
    match PointPath::parse(&path) {
        PointPath::Root => stored_children(""),
        // Only a disk has a structure of its own; the document is as stored.
        PointPath::Top(name) if layout::disk_index(name).is_none() => stored_children(name),
        PointPath::Top(name) => {
            let disk = StoredDisk::open(name)?;
            for warning in disk.warnings() {
                warn!("{name}: {warning}");
            }
            let volumes = disk.volumes()?;
            Ok(volumes
                .into_iter()
                .map(|(volume, size)| EntryInfo {
                    path: layout::volume_label(name, volume),
                    kind: EntryKind::Directory,
                    meta: meta::bare(size),
                })
                .collect())
        }
        PointPath::BadVolume { top, name } => Err(no_volume(top, name)),
        PointPath::Inside { disk, volume, rest } => {
            let (mut volume, rest) = match StoredDisk::open(disk)?.reach(volume, rest)? {
                Reached::Fs { volume, rest } => (*volume, rest),
                Reached::Lvm(volumes) => {
                    return Ok(volumes
                        .into_iter()
                        .filter_map(|lv| match path::join(&path, &lv.name) {
                            Ok(child) => Some(EntryInfo {
                                path: child,
                                kind: EntryKind::Directory,
                                meta: meta::bare(lv.size),
                            }),
                            Err(err) => {
                                warn!("{path}: logical volume left out: {err}");
                                None
                            }
                        })
                        .collect());
                }
            };
            for warning in volume.warnings() {
                warn!("{warning}");
            }
            let listed = volume.list(rest).map_err(|err| from_fs(&err))?;
            let mut entries = Vec::with_capacity(listed.len());
            for entry in listed {
                match path::join(&path, &entry.name) {
                    Ok(child) => entries.push(EntryInfo {
                        path: child,
                        kind: guest_fs::entry_kind(&entry),
                        meta: guest_fs::metadata(&entry),
                    }),
                    // The readers never return such names; a damaged image should not
                    // hide the rest of the directory if one does.
                    Err(err) => warn!("{path}: entry left out: {err}"),
                }
            }
            Ok(entries)
        }
    }
}

/// The entries the point stores below `path`.
fn stored_children(path: &str) -> Result<Vec<EntryInfo>, PluginError> {
    point::children(path).map_err(|err| from_host(format_args!("listing {path:?}"), &err))
}

/// The error for a path naming something below a top-level entry that is not a volume.
pub(crate) fn no_volume(top: &str, name: &str) -> PluginError {
    if layout::disk_index(top).is_some() {
        PluginError::InvalidSettings(format!(
            "{top}/{name}: below a disk are its partitions (partN) or, without a partition \
             table, its file system (fs)"
        ))
    } else {
        PluginError::InvalidSettings(format!("{top}/{name}: {top} is not a disk"))
    }
}
