//! Verifying a vault: structure always, and with `read_data` every byte.
//!
//! Structural checks: every index file decodes; every indexed pack exists; every point
//! decodes and its trees and lists decode; every chunk a point refers to is indexed.
//! Reading data additionally reads every pack, checks its name against its SHA-256, its
//! header against the index, and decrypts, decompresses and re-hashes every blob. Each
//! problem is reported with the recovery points and paths it affects.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;

use crate::backend::FileKind;
use crate::codec;
use crate::error::Result;
use crate::id::{ChunkId, PackId, PointId};
use crate::pack::{self, PackEntry};
use crate::vault::Vault;

use super::walk::{WalkEvent, walk};

/// Options of [`check`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Read, decrypt, decompress and re-hash every chunk.
    pub read_data: bool,
    /// Threads reading packs; the number of CPUs when 0.
    pub workers: usize,
}

/// Where a problem bites: a point and a path in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Affected {
    /// The recovery point.
    pub point: PointId,
    /// The path in it (`""` for the root).
    pub path: String,
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What is wrong, naming the object.
    pub message: String,
    /// Points and paths that cannot be restored because of it.
    pub affected: Vec<Affected>,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Chunks found missing or damaged: a backup stores them again rather than
    /// deduplicating against the bad copy.
    pub bad_chunks: Vec<ChunkId>,
    /// Problems; empty for a sound vault.
    pub problems: Vec<Problem>,
    /// Notes that need no action (leftovers prune will reclaim).
    pub notes: Vec<String>,
    /// Points checked.
    pub points: usize,
    /// Distinct trees and lists read.
    pub trees: usize,
    /// Packs read in full (with `read_data`).
    pub packs_read: usize,
    /// Chunks decoded and re-hashed (with `read_data`).
    pub chunks_read: u64,
    /// Bytes read from packs.
    pub bytes_read: u64,
}

impl CheckReport {
    /// Whether the vault is sound.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Most affected paths listed per problem; the rest are counted.
const MAX_AFFECTED: usize = 50;

/// Checks the vault.
pub fn check(vault: &Vault, options: CheckOptions) -> Result<CheckReport> {
    vault.reload_index()?;
    let index = vault.index();
    let mut report = CheckReport::default();
    for (name, error) in vault.damaged_index_files() {
        report.problems.push(Problem {
            message: format!("index file {name}: {error}"),
            affected: vec![],
        });
    }

    let listed: HashMap<PackId, u64> = vault.pack_sizes()?;
    let by_pack = index.by_pack();
    // Chunks that cannot be read, with the reason.
    let mut bad: HashMap<ChunkId, String> = HashMap::new();
    for (pack, entries) in &by_pack {
        if !listed.contains_key(pack) {
            for e in entries {
                if index
                    .locations(&e.id)
                    .iter()
                    .all(|l| !listed.contains_key(&l.pack))
                {
                    bad.insert(e.id, format!("its pack {} is missing", pack.short()));
                }
            }
            report.problems.push(Problem {
                message: format!("pack {pack} is listed in the index but missing from the vault"),
                affected: vec![],
            });
        }
    }
    let marked: HashSet<PackId> = vault.marked_packs()?;
    let unindexed = listed
        .keys()
        .filter(|p| !index.has_pack(p) && !marked.contains(p))
        .count();
    if unindexed > 0 {
        report.notes.push(format!(
            "{unindexed} pack(s) are in no index: left by an interrupted backup (the next backup reuses them) or being written now; prune reclaims unused ones"
        ));
    }

    if options.read_data {
        read_all_packs(vault, options, &listed, &by_pack, &mut bad, &mut report);
    }

    let (points, damaged_points) = vault.points_with_errors()?;
    for (name, error) in damaged_points {
        report.problems.push(Problem {
            message: format!("recovery point {name}: {error}"),
            affected: vec![],
        });
    }
    report.points = points.len();

    // Walk every point; collect missing chunks, unreadable trees, and paths using bad chunks.
    let mut trees = HashSet::new();
    let mut missing: HashMap<ChunkId, BTreeSet<Affected>> = HashMap::new();
    let mut damaged_chunks: HashMap<ChunkId, BTreeSet<Affected>> = HashMap::new();
    let mut unreadable: Vec<(String, Affected)> = Vec::new();
    for (point_id, point) in &points {
        walk(vault, point.root, None, &mut |event| match event {
            WalkEvent::Meta { id, path } | WalkEvent::Data { id, path } => {
                let affected = || Affected {
                    point: *point_id,
                    path: path.to_string(),
                };
                if matches!(event, WalkEvent::Meta { .. }) {
                    trees.insert(id);
                }
                if bad.contains_key(&id) {
                    damaged_chunks.entry(id).or_default().insert(affected());
                } else if index.lookup(&id).is_none() {
                    missing.entry(id).or_default().insert(affected());
                }
            }
            WalkEvent::Unreadable { path, error } => {
                unreadable.push((
                    error.to_string(),
                    Affected {
                        point: *point_id,
                        path: path.to_string(),
                    },
                ));
            }
        });
    }
    report.trees = trees.len();
    let limited = |set: BTreeSet<Affected>| set.into_iter().take(MAX_AFFECTED).collect::<Vec<_>>();
    for (id, affected) in missing {
        report.problems.push(Problem {
            message: format!(
                "chunk {id} is referenced but not in the index ({} place(s))",
                affected.len()
            ),
            affected: limited(affected),
        });
    }
    for (id, affected) in damaged_chunks {
        let reason = &bad[&id];
        report.problems.push(Problem {
            message: format!(
                "chunk {id} is damaged: {reason} ({} place(s))",
                affected.len()
            ),
            affected: limited(affected),
        });
    }
    for (error, affected) in unreadable {
        report.problems.push(Problem {
            message: error,
            affected: vec![affected],
        });
    }
    report.problems.sort_by(|a, b| a.message.cmp(&b.message));
    report.bad_chunks = bad.keys().copied().collect();
    report.bad_chunks.sort_unstable();
    Ok(report)
}

fn read_all_packs(
    vault: &Vault,
    options: CheckOptions,
    listed: &HashMap<PackId, u64>,
    by_pack: &HashMap<PackId, Vec<PackEntry>>,
    bad: &mut HashMap<ChunkId, String>,
    report: &mut CheckReport,
) {
    let workers = crate::vault::worker_threads(options.workers);
    let queue: Mutex<Vec<PackId>> = Mutex::new(listed.keys().copied().collect());
    let results = Mutex::new(PackTotals::default());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let Some(pack) = queue.lock().expect("lock").pop() else {
                        break;
                    };
                    let outcome = check_pack(vault, &pack, by_pack.get(&pack).map(Vec::as_slice));
                    let mut totals = results.lock().expect("lock");
                    totals.bad.extend(outcome.bad);
                    totals.problems.extend(outcome.problems);
                    totals.packs += 1;
                    totals.chunks += outcome.chunks;
                    totals.bytes += outcome.bytes;
                }
            });
        }
    });
    let PackTotals {
        bad: pack_bad,
        problems,
        packs,
        chunks,
        bytes,
    } = results.into_inner().expect("lock");
    // A chunk with an intact copy elsewhere is not lost.
    let index = vault.index();
    for (id, reason) in pack_bad {
        let locations = index.locations(&id);
        let intact = locations
            .iter()
            .any(|l| listed.contains_key(&l.pack) && vault.read_chunk_at(&id, l).is_ok());
        if !intact {
            bad.insert(id, reason);
        }
    }
    report.problems.extend(problems);
    report.packs_read = packs;
    report.chunks_read = chunks;
    report.bytes_read = bytes;
}

#[derive(Default)]
struct PackTotals {
    bad: HashMap<ChunkId, String>,
    problems: Vec<Problem>,
    packs: usize,
    chunks: u64,
    bytes: u64,
}

struct PackOutcome {
    bad: HashMap<ChunkId, String>,
    problems: Vec<Problem>,
    chunks: u64,
    bytes: u64,
}

fn check_pack(vault: &Vault, pack: &PackId, indexed: Option<&[PackEntry]>) -> PackOutcome {
    let mut out = PackOutcome {
        bad: HashMap::new(),
        problems: Vec::new(),
        chunks: 0,
        bytes: 0,
    };
    let problem = |message: String| Problem {
        message,
        affected: vec![],
    };
    let mark_all_bad = |out: &mut PackOutcome, reason: &str| {
        for e in indexed.unwrap_or_default() {
            out.bad
                .insert(e.id, format!("pack {} {reason}", pack.short()));
        }
    };
    let bytes = match vault.backend().read(FileKind::Pack, &pack.to_hex()) {
        Ok(b) => b,
        Err(e) => {
            out.problems.push(problem(format!("pack {pack}: {e}")));
            mark_all_bad(&mut out, "cannot be read");
            return out;
        }
    };
    out.bytes = bytes.len() as u64;
    let header = match pack::parse_pack(vault.crypto(), pack, &bytes) {
        Ok(h) => h,
        Err(e) => {
            out.problems.push(problem(e.to_string()));
            // Blobs may still decode where the index says they are.
            Vec::new()
        }
    };
    let header_map: HashMap<(ChunkId, u32), &PackEntry> =
        header.iter().map(|e| ((e.id, e.offset), e)).collect();
    let to_check: Vec<PackEntry> = match indexed {
        Some(entries) => {
            for e in entries {
                if !header.is_empty() && header_map.get(&(e.id, e.offset)).is_none_or(|h| **h != *e)
                {
                    out.problems.push(problem(format!(
                        "pack {}: index entry for chunk {} at offset {} does not match the pack header",
                        pack.short(),
                        e.id.short(),
                        e.offset
                    )));
                }
            }
            entries.to_vec()
        }
        None => header,
    };
    for e in to_check {
        out.chunks += 1;
        let start = e.offset as usize;
        let Some(blob) = start
            .checked_add(e.len as usize)
            .and_then(|end| bytes.get(start..end))
        else {
            out.bad.insert(
                e.id,
                format!("blob lies past the end of pack {}", pack.short()),
            );
            continue;
        };
        let decoded = codec::decode_blob(vault.crypto(), &e.id, blob.to_vec(), e.raw_len);
        match decoded {
            Ok(data) if vault.crypto().chunk_id(&data) == e.id => {}
            Ok(_) => {
                out.bad.insert(
                    e.id,
                    format!("in pack {} it does not hash to its id", pack.short()),
                );
            }
            Err(err) => {
                out.bad.insert(
                    e.id,
                    format!("in pack {} at offset {}: {err}", pack.short(), e.offset),
                );
            }
        }
    }
    if !out.bad.is_empty() {
        out.problems.push(problem(format!(
            "pack {pack}: {} damaged blob(s)",
            out.bad.len()
        )));
    }
    out
}
