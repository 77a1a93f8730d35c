//! Rebuilding the index from the packs themselves, after index files were lost or
//! damaged.
//!
//! Every pack ends in an encrypted header listing its blobs, so the index is a cache of
//! what the packs say: [`repair_index`] reads every pack's header, writes index files
//! listing every pack whose header reads, and then removes the index files that were
//! there before. In that order a crash at any moment leaves an index at least as complete
//! as before: until the old files are gone, both list the same packs, which the index
//! allows.
//!
//! Packs marked for deletion by prune are left out (prune deletes them, and its marks
//! already keep backups from using them). Index files written by a backup that runs at
//! the same time are not among those removed, since only files listed before the headers
//! were read are. A pack whose header cannot be read is reported, and an old index file
//! that lists it is kept, since its blobs may still read where that file says they are;
//! a pack no index file lists and whose header cannot be read is lost, and `check` names
//! the points and paths that used it.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::Result;
use crate::id::PackId;
use crate::index::IndexFile;
use crate::pack::{self, PackEntry};
use crate::vault::Vault;

/// Packs listed per index file written.
const PACKS_PER_INDEX_FILE: usize = 1000;

/// Options of [`repair_index`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairOptions {
    /// Read the headers and say what would be written, changing nothing.
    pub dry_run: bool,
    /// Threads reading pack headers; the number of CPUs when 0.
    pub workers: usize,
}

/// A pack whose header could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct UnreadablePack {
    /// The pack.
    pub pack: PackId,
    /// Why.
    pub error: String,
}

/// What [`repair_index`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Packs whose header was read and which the new index lists.
    pub packs_indexed: usize,
    /// Blobs the new index lists.
    pub blobs_indexed: usize,
    /// Packs the old index did not list (left by an interrupted backup, or listed in a
    /// lost or damaged index file).
    pub packs_found: usize,
    /// Packs marked for deletion, left out.
    pub packs_marked: usize,
    /// Packs whose header could not be read, left out.
    pub unreadable: Vec<UnreadablePack>,
    /// Index files written.
    pub index_files_written: usize,
    /// Index files removed (the old ones, including damaged ones).
    pub index_files_removed: usize,
    /// Old index files kept because they list a pack whose header could not be read.
    pub index_files_kept: usize,
    /// Damaged index files there were.
    pub index_files_damaged: usize,
}

/// Rebuilds the index from the packs' headers (see the module's documentation).
pub fn repair_index(vault: &Vault, options: RepairOptions) -> Result<RepairReport> {
    vault.reload_index()?;
    let old_files: BTreeSet<String> = vault
        .backend()
        .list(FileKind::Index)?
        .into_iter()
        .map(|info| info.name)
        .collect();
    let indexed: HashSet<PackId> = vault.index().packs().iter().copied().collect();
    let marked = vault.marked_packs()?;
    let mut report = RepairReport {
        index_files_damaged: vault.damaged_index_files().len(),
        ..RepairReport::default()
    };
    let mut packs = Vec::new();
    for info in vault.backend().list(FileKind::Pack)? {
        let Ok(pack) = info.name.parse::<PackId>() else {
            continue;
        };
        if marked.contains(&pack) {
            report.packs_marked += 1;
        } else {
            packs.push((pack, info.size));
        }
    }

    let Headers {
        read: mut headers,
        unreadable,
    } = read_headers(vault, &packs, options.workers);
    headers.sort_unstable_by_key(|(pack, _)| *pack);
    report.unreadable = unreadable;
    report.unreadable.sort_by_key(|u| u.pack);
    report.packs_indexed = headers.len();
    report.blobs_indexed = headers.iter().map(|(_, entries)| entries.len()).sum();
    report.packs_found = headers
        .iter()
        .filter(|(pack, _)| !indexed.contains(pack))
        .count();

    let files: Vec<IndexFile> = headers
        .chunks(PACKS_PER_INDEX_FILE)
        .map(|chunk| IndexFile {
            packs: chunk.to_vec(),
        })
        .collect();
    report.index_files_written = files.len();
    let mut written = HashSet::new();
    if !options.dry_run {
        for file in &files {
            let (id, bytes) = file.seal(vault.crypto());
            vault
                .backend()
                .write(FileKind::Index, &id.to_hex(), &bytes)?;
            written.insert(id.to_hex());
        }
    }
    let unreadable: HashSet<PackId> = report.unreadable.iter().map(|u| u.pack).collect();
    for name in &old_files {
        if written.contains(name) {
            continue;
        }
        if lists_any(vault, name, &unreadable) {
            report.index_files_kept += 1;
            continue;
        }
        if !options.dry_run {
            vault.backend().remove(FileKind::Index, name)?;
        }
        report.index_files_removed += 1;
    }
    if !options.dry_run {
        vault.reload_index()?;
    }
    Ok(report)
}

/// Whether the index file `name` reads and lists one of `packs`.
fn lists_any(vault: &Vault, name: &str, packs: &HashSet<PackId>) -> bool {
    if packs.is_empty() {
        return false;
    }
    let bytes = match vault.backend().read(FileKind::Index, name) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return false,
        // Kept when in doubt: another repair removes it once it reads.
        Err(_) => return true,
    };
    if vault.check_name(FileKind::Index, name, &bytes).is_err() {
        return false;
    }
    IndexFile::open(vault.crypto(), &bytes)
        .is_ok_and(|file| file.packs.iter().any(|(pack, _)| packs.contains(pack)))
}

/// What [`read_headers`] found.
#[derive(Default)]
struct Headers {
    /// The packs whose header was read, with their blobs.
    read: Vec<(PackId, Vec<PackEntry>)>,
    /// The packs whose header could not be read.
    unreadable: Vec<UnreadablePack>,
}

/// The headers of `packs` (names and sizes), read by `workers` threads.
fn read_headers(vault: &Vault, packs: &[(PackId, u64)], workers: usize) -> Headers {
    let next = Mutex::new(packs.iter());
    let results = Mutex::new(Headers::default());
    std::thread::scope(|scope| {
        for _ in 0..crate::vault::worker_threads(workers) {
            scope.spawn(|| {
                loop {
                    let Some(&(pack, size)) = next.lock().expect("lock").next() else {
                        break;
                    };
                    let header =
                        pack::read_header(vault.backend().as_ref(), vault.crypto(), &pack, size);
                    let mut results = results.lock().expect("lock");
                    match header {
                        Ok(entries) => results.read.push((pack, entries)),
                        Err(e) => results.unreadable.push(UnreadablePack {
                            pack,
                            error: e.to_string(),
                        }),
                    }
                }
            });
        }
    });
    results.into_inner().expect("lock")
}
