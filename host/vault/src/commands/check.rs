//! Verifying a vault: structure always, and with `read_data` every byte.
//!
//! Structural checks: every index file decodes; every indexed pack exists; every point
//! decodes and its trees and lists decode; every chunk a point refers to is indexed.
//! Reading data additionally reads every pack, checks its name against its SHA-256, its
//! header against the index, and decrypts, decompresses and re-hashes every blob; a
//! [`DataSubset`] limits that to some of the packs, so a large vault can be read through
//! over several runs. Each problem is reported with the recovery points and paths it
//! affects, and [`settle_damage`] keeps the vault's damage records in step with what a
//! check found.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use rand::seq::SliceRandom;
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
    /// Read, decrypt, decompress and re-hash every chunk of the packs `subset` selects.
    pub read_data: bool,
    /// Which packs `read_data` reads.
    pub subset: DataSubset,
    /// Threads reading packs; the number of CPUs when 0.
    pub workers: usize,
}

/// Which packs a check that reads data reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum DataSubset {
    /// Every pack.
    #[default]
    All,
    /// Part `n` of `of` (counted from 1): the packs whose name, read as a number, leaves
    /// `n - 1` divided by `of`. Pack names are hashes, so the parts are of about equal
    /// size, and checking parts 1 to `of` in turn reads every pack once.
    Part {
        /// Which part, from 1 to `of`.
        n: u32,
        /// How many parts.
        of: u32,
    },
    /// Packs chosen at random, this percentage of them (rounded up), above 0 and at
    /// most 100.
    Percent(f64),
    /// Packs chosen at random adding up to at most this many bytes; at least one.
    Bytes(u64),
}

impl DataSubset {
    /// The packs of `packs` (names and sizes) to read.
    fn select(self, packs: &HashMap<PackId, u64>) -> Vec<PackId> {
        let mut all: Vec<(PackId, u64)> = packs.iter().map(|(p, s)| (*p, *s)).collect();
        all.sort_unstable();
        match self {
            DataSubset::All => all.into_iter().map(|(p, _)| p).collect(),
            DataSubset::Part { n, of } => all
                .into_iter()
                .filter(|(p, _)| pack_number(p) % u64::from(of) == u64::from(n - 1))
                .map(|(p, _)| p)
                .collect(),
            DataSubset::Percent(percent) => {
                all.shuffle(&mut rand::rng());
                let wanted = (all.len() as f64 * percent / 100.0).ceil() as usize;
                all.into_iter().take(wanted).map(|(p, _)| p).collect()
            }
            DataSubset::Bytes(limit) => {
                all.shuffle(&mut rand::rng());
                let mut total = 0u64;
                let mut chosen = Vec::new();
                for (pack, size) in all {
                    if chosen.is_empty() || total.saturating_add(size) <= limit {
                        total = total.saturating_add(size);
                        chosen.push(pack);
                    }
                }
                chosen
            }
        }
    }
}

/// The first eight bytes of a pack's name as a number, for [`DataSubset::Part`].
fn pack_number(pack: &PackId) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&pack.0[..8]);
    u64::from_be_bytes(first)
}

impl fmt::Display for DataSubset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSubset::All => f.write_str("all"),
            DataSubset::Part { n, of } => write!(f, "{n}/{of}"),
            DataSubset::Percent(percent) => write!(f, "{percent}%"),
            DataSubset::Bytes(bytes) => write!(f, "{bytes} bytes"),
        }
    }
}

/// Why a [`DataSubset`] did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid data subset '{text}': {reason} (give N/T, a percentage such as 10%, or a size such as 500M or 2G)"
)]
pub struct ParseSubsetError {
    text: String,
    reason: &'static str,
}

impl FromStr for DataSubset {
    type Err = ParseSubsetError;

    /// Parses `N/T` (part N of T), `P%` (a percentage, fractions allowed) or a size in
    /// bytes with an optional binary suffix: `K`, `M`, `G` or `T` (`KiB`, ... too).
    fn from_str(text: &str) -> Result<Self, ParseSubsetError> {
        let fail = |reason| ParseSubsetError {
            text: text.to_string(),
            reason,
        };
        let trimmed = text.trim();
        if let Some((n, of)) = trimmed.split_once('/') {
            let n: u32 = n
                .trim()
                .parse()
                .map_err(|_| fail("N is not a whole number"))?;
            let of: u32 = of
                .trim()
                .parse()
                .map_err(|_| fail("T is not a whole number"))?;
            if of == 0 || n == 0 || n > of {
                return Err(fail("N must be from 1 to T"));
            }
            return Ok(DataSubset::Part { n, of });
        }
        if let Some(number) = trimmed.strip_suffix('%') {
            let percent: f64 = number
                .trim()
                .parse()
                .map_err(|_| fail("the percentage is not a number"))?;
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(fail("the percentage must be above 0 and at most 100"));
            }
            return Ok(DataSubset::Percent(percent));
        }
        let bytes = crate::size::parse_size(trimmed).map_err(fail)?;
        if bytes == 0 {
            return Err(fail("the size must be above 0"));
        }
        Ok(DataSubset::Bytes(bytes))
    }
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
    /// Packs in the vault.
    pub packs: usize,
    /// Packs read in full (with `read_data`: all of them, or the subset's).
    pub packs_read: usize,
    /// Chunks decoded and re-hashed (with `read_data`).
    pub chunks_read: u64,
    /// Bytes read from packs.
    pub bytes_read: u64,
    /// The points whose trees were walked.
    #[serde(skip)]
    pub checked: Vec<PointId>,
    /// Every point a problem affects, with the first such problem (a problem lists at
    /// most a few dozen places).
    #[serde(skip)]
    pub damaged: BTreeMap<PointId, String>,
    /// Whether every pack was read, so every chunk's data was verified.
    #[serde(skip)]
    pub read_every_pack: bool,
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
    report.packs = listed.len();
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
    report.checked = points.iter().map(|(id, _)| *id).collect();
    report.read_every_pack = options.read_data && report.packs_read == listed.len();

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
    let mut problems: Vec<(String, BTreeSet<Affected>)> = Vec::new();
    for (id, affected) in missing {
        let message = format!(
            "chunk {id} is referenced but not in the index ({} place(s))",
            affected.len()
        );
        problems.push((message, affected));
    }
    for (id, affected) in damaged_chunks {
        let reason = &bad[&id];
        let message = format!(
            "chunk {id} is damaged: {reason} ({} place(s))",
            affected.len()
        );
        problems.push((message, affected));
    }
    for (error, affected) in unreadable {
        problems.push((error, BTreeSet::from([affected])));
    }
    for (message, affected) in problems {
        for place in &affected {
            report
                .damaged
                .entry(place.point)
                .or_insert_with(|| message.clone());
        }
        report.problems.push(Problem {
            message,
            affected: affected.into_iter().take(MAX_AFFECTED).collect(),
        });
    }
    report.problems.sort_by(|a, b| a.message.cmp(&b.message));
    report.bad_chunks = bad.keys().copied().collect();
    report.bad_chunks.sort_unstable();
    Ok(report)
}

/// What [`settle_damage`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DamageSettled {
    /// Points newly recorded damaged.
    pub recorded: Vec<PointId>,
    /// Points whose records were removed: the check verified what they had found wrong
    /// and found the point sound.
    pub cleared: Vec<PointId>,
}

/// Brings the damage records (see [`crate::damage`]) in step with `report`: records each
/// point a problem affects, once, so backups stop carrying data forward from it; and
/// removes the records of a point the check found sound, if it verified what they found
/// wrong. A record of structural damage is settled by any check; one that names bad
/// chunks only by a check that read every pack.
pub fn settle_damage(vault: &Vault, report: &CheckReport) -> Result<DamageSettled> {
    let known = vault.damage_records()?;
    let mut settled = DamageSettled::default();
    for (point, reason) in &report.damaged {
        if known.contains_key(point) {
            continue;
        }
        vault.record_damage(*point, reason, &report.bad_chunks)?;
        settled.recorded.push(*point);
    }
    for point in &report.checked {
        let Some(damaged) = known.get(point) else {
            continue;
        };
        if report.damaged.contains_key(point) || (damaged.bad_chunks && !report.read_every_pack) {
            continue;
        }
        vault.remove_damage_records(damaged)?;
        settled.cleared.push(*point);
    }
    settled.cleared.sort_unstable();
    Ok(settled)
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
    let queue: Mutex<Vec<PackId>> = Mutex::new(options.subset.select(listed));
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
    let crypto = vault.crypto();
    // A decoded blob waiting for another to be hashed with (two at a time).
    let mut waiting: Option<(ChunkId, bytes::Bytes)> = None;
    let hashed = |out: &mut PackOutcome, id: ChunkId, hash: ChunkId| {
        if hash != id {
            out.bad.insert(
                id,
                format!("in pack {} it does not hash to its id", pack.short()),
            );
        }
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
        match codec::decode_blob(crypto, &e.id, blob.to_vec(), e.raw_len) {
            // Decoding a blob of an unencrypted vault hashed it already.
            Ok(_) if !crypto.is_encrypted() => {}
            Ok(data) => match waiting.take() {
                None => waiting = Some((e.id, data)),
                Some((first, first_data)) => {
                    let [a, b] = crypto.chunk_ids(&first_data, &data);
                    hashed(&mut out, first, a);
                    hashed(&mut out, e.id, b);
                }
            },
            Err(err) => {
                out.bad.insert(
                    e.id,
                    format!("in pack {} at offset {}: {err}", pack.short(), e.offset),
                );
            }
        }
    }
    if let Some((id, data)) = waiting {
        hashed(&mut out, id, crypto.chunk_id(&data));
    }
    if !out.bad.is_empty() {
        out.problems.push(problem(format!(
            "pack {pack}: {} damaged blob(s)",
            out.bad.len()
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob sealed under an id its bytes do not hash to (what a bug in the hashing
    /// would store) decrypts, since the id is only its associated data; reading the data
    /// finds it, among blobs hashed two at a time, in a pack of an odd and of an even
    /// number of blobs.
    #[test]
    fn read_data_finds_blobs_that_do_not_hash_to_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let backend = std::sync::Arc::new(crate::LocalBackend::new(dir.path()));
        let mut options = crate::InitOptions::new(crate::Encryption::Credential(
            crate::Credential::password("pw"),
        ));
        options.kdf = crate::KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let vault = Vault::init(backend, options, std::sync::Arc::new(crate::SystemClock)).unwrap();
        let crypto = vault.crypto();
        for (count, wrong) in [(5, 2), (4, 3), (1, 0)] {
            let mut writer = pack::PackWriter::new();
            let mut ids = Vec::new();
            for i in 0..count {
                let data = vec![i as u8 + count as u8; 1000 + 700 * i];
                let id = if i == wrong {
                    crypto.chunk_id(b"other bytes")
                } else {
                    crypto.chunk_id(&data)
                };
                let mut blob = Vec::new();
                codec::encode_blob(crypto, &id, &data, 3, &mut blob);
                writer
                    .add(id, pack::BlobKind::Data, data.len() as u32, &blob)
                    .unwrap();
                ids.push(id);
            }
            let finished = writer.finish(crypto).unwrap();
            let name = finished.id;
            finished.upload(vault.backend().as_ref()).unwrap();
            let out = check_pack(&vault, &name, None);
            assert_eq!(out.chunks, count as u64);
            let bad: Vec<&ChunkId> = out.bad.keys().collect();
            assert_eq!(bad, [&ids[wrong]], "{count} blobs: {:?}", out.bad);
            assert!(out.bad[&ids[wrong]].contains("does not hash to its id"));
        }
    }

    #[test]
    fn subsets_parse_and_bad_ones_say_why() {
        let ok = [
            ("1/5", DataSubset::Part { n: 1, of: 5 }),
            ("5/5", DataSubset::Part { n: 5, of: 5 }),
            (" 2 / 3 ", DataSubset::Part { n: 2, of: 3 }),
            ("10%", DataSubset::Percent(10.0)),
            ("0.5%", DataSubset::Percent(0.5)),
            ("100%", DataSubset::Percent(100.0)),
            ("4096", DataSubset::Bytes(4096)),
            ("500M", DataSubset::Bytes(500 << 20)),
            ("2G", DataSubset::Bytes(2 << 30)),
            ("2GiB", DataSubset::Bytes(2 << 30)),
            ("3k", DataSubset::Bytes(3 << 10)),
            ("1T", DataSubset::Bytes(1 << 40)),
        ];
        for (text, subset) in ok {
            assert_eq!(text.parse::<DataSubset>(), Ok(subset), "{text}");
        }
        let bad = [
            ("0/5", "N must be from 1 to T"),
            ("6/5", "N must be from 1 to T"),
            ("1/0", "N must be from 1 to T"),
            ("a/5", "N is not a whole number"),
            ("1/-5", "T is not a whole number"),
            ("0%", "above 0 and at most 100"),
            ("101%", "above 0 and at most 100"),
            ("NaN%", "above 0 and at most 100"),
            ("ten%", "not a number"),
            ("0", "the size must be above 0"),
            ("5X", "unknown size unit"),
            ("G", "the size is not a number"),
            ("99999999999T", "too large"),
            ("", "the size is not a number"),
        ];
        for (text, reason) in bad {
            let err = text.parse::<DataSubset>().expect_err(text).to_string();
            assert!(err.contains(reason), "{text}: {err}");
            assert!(err.contains(&format!("'{text}'")), "{text}: {err}");
        }
    }

    fn packs(count: u8) -> HashMap<PackId, u64> {
        (0..count)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(
                    &u64::from(i)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .to_be_bytes(),
                );
                (PackId(id), 1000 + u64::from(i))
            })
            .collect()
    }

    #[test]
    fn the_parts_of_a_vault_cover_every_pack_once() {
        let all = packs(200);
        let mut seen = Vec::new();
        for n in 1..=7 {
            let part = DataSubset::Part { n, of: 7 }.select(&all);
            assert!(
                (10..=50).contains(&part.len()),
                "part {n} of 7 has {} of 200 packs",
                part.len()
            );
            // The same part every time.
            assert_eq!(part, DataSubset::Part { n, of: 7 }.select(&all));
            seen.extend(part);
        }
        seen.sort_unstable();
        let mut expected: Vec<PackId> = all.keys().copied().collect();
        expected.sort_unstable();
        assert_eq!(seen, expected);
        assert_eq!(DataSubset::All.select(&all), expected);
    }

    #[test]
    fn random_subsets_take_their_share() {
        let all = packs(200);
        for (percent, wanted) in [(100.0, 200), (10.0, 20), (0.1, 1), (12.3, 25)] {
            let chosen = DataSubset::Percent(percent).select(&all);
            assert_eq!(chosen.len(), wanted, "{percent}%");
            assert!(chosen.iter().all(|p| all.contains_key(p)));
            let distinct: HashSet<_> = chosen.iter().collect();
            assert_eq!(distinct.len(), chosen.len());
        }
        for limit in [1, 1000, 1199, 5000, 50_000, u64::MAX] {
            let chosen = DataSubset::Bytes(limit).select(&all);
            let total: u64 = chosen.iter().map(|p| all[p]).sum();
            assert!(!chosen.is_empty(), "{limit}: at least one pack");
            assert!(
                total <= limit || chosen.len() == 1,
                "{limit}: {total} bytes in {} packs",
                chosen.len()
            );
            // Packs of 1000 to 1199 bytes: the sizes leave little room unused.
            if limit >= 1199 {
                assert!(
                    total + 1199 > limit.min(all.values().sum()),
                    "{limit}: {total}"
                );
            }
        }
        assert!(DataSubset::Percent(50.0).select(&HashMap::new()).is_empty());
    }
}
