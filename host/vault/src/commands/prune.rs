//! Forgetting recovery points by policy, and reclaiming the space nothing refers to.
//!
//! Prune is two-phase so that it can run while backups run. The *mark* phase finds packs
//! that no recovery point refers to (including packs of interrupted backups that no index
//! lists), repacks packs that are mostly unused, and writes a deletion mark. The *sweep*
//! phase, in a later run (or the same run with a zero grace period), deletes a marked pack
//! only when the mark is older than the grace period, no writer session that started
//! before the mark may still hold references, and no recovery point refers to a chunk
//! that has no other copy.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{ChunkId, IndexId, PackId, PointId};
use crate::index::IndexFile;
use crate::pack::{PackEntry, PackWriter};
use crate::retention::{self, RetentionPolicy};
use crate::session::{self, Mark, SESSION_STALE_AFTER};
use crate::vault::Vault;

use super::walk::{WalkEvent, walk};

/// Options of [`forget`].
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    /// Which points to keep.
    pub policy: RetentionPolicy,
    /// Only this protected item (all items, each on its own, when `None`).
    pub item: Option<String>,
    /// Say what would be forgotten without doing it.
    pub dry_run: bool,
    /// Time zone for hourly/daily/... buckets.
    pub time_zone: jiff::tz::TimeZone,
}

/// One kept or forgotten point.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetDecision {
    /// The point.
    pub point: PointId,
    /// Its protected item (`""` for a point whose record does not decode).
    pub item: String,
    /// Its time (`None` for a point whose record does not decode).
    pub time: Option<jiff::Timestamp>,
    /// Whether it stays.
    pub keep: bool,
    /// The rules that keep it.
    pub reasons: Vec<&'static str>,
}

/// Applies a retention policy to each protected item and deletes the points it does not
/// keep (nothing else: run [`prune`] to reclaim space).
pub fn forget(vault: &Vault, options: &ForgetOptions) -> Result<Vec<ForgetDecision>> {
    if options.policy.is_empty() {
        return Err(retention::RetentionError::EmptyPolicy.into());
    }
    let mut groups: HashMap<String, Vec<(PointId, crate::point::Point)>> = HashMap::new();
    for (id, point) in vault.points()? {
        if options.item.as_ref().is_none_or(|i| *i == point.item) {
            groups
                .entry(point.item.clone())
                .or_default()
                .push((id, point));
        }
    }
    let mut out = Vec::new();
    let mut items: Vec<_> = groups.into_iter().collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    for (item, points) in items {
        let times: Vec<jiff::Timestamp> = points.iter().map(|(_, p)| p.end).collect();
        let decisions = retention::apply(&options.policy, &times, &options.time_zone)?;
        for ((id, point), mut decision) in points.into_iter().zip(decisions) {
            if options.policy.keeps_tagged(&point.tags) {
                decision.keep = true;
                decision.reasons.push(retention::REASON_TAG);
            }
            out.push(ForgetDecision {
                point: id,
                item: item.clone(),
                time: Some(point.end),
                keep: decision.keep,
                reasons: decision.reasons,
            });
        }
    }
    if !options.dry_run {
        remove_points(vault, out.iter().filter(|d| !d.keep).map(|d| &d.point))?;
    }
    Ok(out)
}

/// Deletes the points named (nothing else: run [`prune`] to reclaim space), or with
/// `dry_run` only says which would go. Every point must exist; the first that does not
/// is an error and nothing is deleted.
pub fn forget_points(
    vault: &Vault,
    points: &[PointId],
    dry_run: bool,
) -> Result<Vec<ForgetDecision>> {
    let mut out = Vec::with_capacity(points.len());
    for id in points {
        if out.iter().any(|d: &ForgetDecision| d.point == *id) {
            continue;
        }
        // A point whose record is damaged can be forgotten too: that is how it goes.
        let (item, time) = match vault.load_named_point(id) {
            Ok(point) => (point.item, Some(point.end)),
            Err(Error::Corrupt { .. }) => (String::new(), None),
            Err(e) => return Err(e),
        };
        out.push(ForgetDecision {
            point: *id,
            item,
            time,
            keep: false,
            reasons: Vec::new(),
        });
    }
    if !dry_run {
        remove_points(vault, points)?;
    }
    Ok(out)
}

/// Deletes point records, each with its damage records.
fn remove_points<'a>(vault: &Vault, points: impl IntoIterator<Item = &'a PointId>) -> Result<()> {
    let damaged = vault.damage_records()?;
    for point in points {
        match vault.backend().remove(FileKind::Point, &point.to_hex()) {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
        // A forgotten point's damage records go with it.
        if let Some(damaged) = damaged.get(point) {
            vault.remove_damage_records(damaged)?;
        }
    }
    Ok(())
}

/// Options of [`prune`].
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Say what would happen without changing anything.
    pub dry_run: bool,
    /// How long a deletion mark waits before its packs may be deleted.
    pub grace: jiff::SignedDuration,
    /// Repack a pack when at least this share of its bytes is unused (0.0..=1.0).
    pub repack_threshold: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            grace: jiff::SignedDuration::from_hours(1),
            repack_threshold: 0.2,
        }
    }
}

/// What [`prune`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneStats {
    /// Packs newly marked for deletion.
    pub packs_marked: usize,
    /// Their size.
    pub bytes_marked: u64,
    /// Packs deleted now.
    pub packs_deleted: usize,
    /// Space freed now.
    pub bytes_deleted: u64,
    /// Packs rewritten because they were mostly unused.
    pub packs_repacked: usize,
    /// Bytes of used blobs copied out of them.
    pub bytes_repacked: u64,
    /// Marked packs kept because a chunk in them is in use again.
    pub packs_unmarked: usize,
    /// Packs waiting for their grace period or for a running backup.
    pub packs_waiting: usize,
    /// Index files replaced by a consolidated one.
    pub index_files_rewritten: usize,
    /// Writer-session records removed.
    pub sessions_removed: usize,
    /// Half-written packs of killed backups removed.
    pub spools_removed: u64,
    /// Bytes in packs still in use.
    pub bytes_in_use: u64,
}

/// Every chunk some recovery point refers to. Fails if any point or tree cannot be read:
/// deleting data on a partial picture could destroy what the unreadable point needs.
fn referenced_chunks(vault: &Vault) -> Result<HashSet<ChunkId>> {
    let (points, errors) = vault.points_with_errors()?;
    if let Some((name, error)) = errors.into_iter().next() {
        return Err(Error::Invalid(format!(
            "prune refuses to run: recovery point {name} cannot be read ({error}); run check"
        )));
    }
    let mut used = HashSet::new();
    let mut visited = HashSet::new();
    let mut failure = None;
    for (_, point) in &points {
        walk(
            vault,
            point.root,
            Some(&mut visited),
            &mut |event| match event {
                WalkEvent::Meta { id, .. } | WalkEvent::Data { id, .. } => {
                    used.insert(id);
                }
                WalkEvent::Unreadable { path, error } => {
                    failure.get_or_insert(format!("'{path}': {error}"));
                }
            },
        );
    }
    if let Some(failure) = failure {
        return Err(Error::Invalid(format!(
            "prune refuses to run: a tree cannot be read at {failure}; run check"
        )));
    }
    Ok(used)
}

/// Removes unused data: sweeps due deletion marks, then marks what is newly unused.
pub fn prune(vault: &Vault, options: &PruneOptions) -> Result<PruneStats> {
    if !(0.0..=1.0).contains(&options.repack_threshold) {
        return Err(Error::Invalid(format!(
            "repack threshold {} is outside 0..=1",
            options.repack_threshold
        )));
    }
    let mut stats = PruneStats::default();
    vault.reload_index()?;
    let used = referenced_chunks(vault)?;
    let marks = vault.marks()?;
    sweep(vault, options, &used, &marks, &mut stats)?;
    let new_mark = mark(vault, options, &used, &mut stats)?;
    if options.grace.is_zero()
        && let Some(mark) = new_mark
    {
        sweep(vault, options, &used, &[mark], &mut stats)?;
    }
    clean_sessions(vault, options, &mut stats)?;
    Ok(stats)
}

fn sweep(
    vault: &Vault,
    options: &PruneOptions,
    used: &HashSet<ChunkId>,
    marks: &[(String, Mark)],
    stats: &mut PruneStats,
) -> Result<()> {
    if marks.is_empty() {
        return Ok(());
    }
    let now = vault.clock().now();
    let sessions = session::load_sessions(vault)?;
    vault.reload_index()?;
    let index = vault.index();
    let by_pack = index.by_pack();
    let sizes: HashMap<PackId, u64> = vault.pack_sizes()?;
    let all_marked: HashSet<PackId> = vault.marked_packs()?;
    let mut delete: Vec<PackId> = Vec::new();
    let mut done_marks = Vec::new();
    for (name, mark) in marks {
        let due = now.duration_since(mark.created) >= options.grace;
        let blocked = sessions
            .iter()
            .any(|s| s.started <= mark.created && s.may_hold_references(now, options.grace));
        if !due || blocked {
            stats.packs_waiting += mark.packs.len();
            continue;
        }
        for pack in &mark.packs {
            // A chunk in use must keep a copy in a pack that is not being deleted.
            let needed = by_pack.get(pack).is_some_and(|entries| {
                entries.iter().any(|e| {
                    used.contains(&e.id)
                        && !index.locations(&e.id).iter().any(|l| {
                            l.pack != *pack
                                && !all_marked.contains(&l.pack)
                                && sizes.contains_key(&l.pack)
                        })
                })
            });
            if needed {
                stats.packs_unmarked += 1;
            } else if let Some(size) = sizes.get(pack) {
                stats.packs_deleted += 1;
                stats.bytes_deleted += size;
                delete.push(*pack);
            }
        }
        done_marks.push(name.clone());
    }
    if options.dry_run || done_marks.is_empty() {
        return Ok(());
    }
    let deleted: HashSet<PackId> = delete.iter().copied().collect();
    // Order matters for crash safety: the index stops naming the packs before they go,
    // so no reader is sent to a missing pack; a crash in between leaves unindexed packs
    // that the next prune marks again.
    rewrite_index(vault, &deleted, stats)?;
    for pack in &delete {
        vault.backend().remove(FileKind::Pack, &pack.to_hex())?;
    }
    for name in done_marks {
        vault.backend().remove(FileKind::Mark, &name)?;
    }
    vault.reload_index()?;
    Ok(())
}

/// Replaces every current index file with one that omits `deleted` packs.
fn rewrite_index(vault: &Vault, deleted: &HashSet<PackId>, stats: &mut PruneStats) -> Result<()> {
    let old: Vec<String> = vault
        .backend()
        .list(FileKind::Index)?
        .into_iter()
        .map(|i| i.name)
        .collect();
    // Re-read the files rather than trusting the in-memory index alone, so entries added
    // by a backup since we loaded are kept.
    let mut keep: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for name in &old {
        let bytes = vault.backend().read(FileKind::Index, name)?;
        let file = IndexFile::open(vault.crypto(), &bytes).map_err(|source| Error::Corrupt {
            kind: FileKind::Index,
            name: name.clone(),
            source,
        })?;
        for (pack, entries) in file.packs {
            if !deleted.contains(&pack) {
                keep.entry(pack).or_default().extend(entries);
            }
        }
    }
    let mut packs: Vec<(PackId, Vec<PackEntry>)> = keep.into_iter().collect();
    packs.sort_by_key(|p| p.0);
    for (_, entries) in &mut packs {
        entries.sort_by_key(|e| e.offset);
        entries.dedup();
    }
    let file = IndexFile { packs };
    let (id, bytes) = file.seal(vault.crypto());
    vault
        .backend()
        .write(FileKind::Index, &id.to_hex(), &bytes)?;
    for name in old.iter().filter(|n| **n != id.to_hex()) {
        vault.backend().remove(FileKind::Index, name)?;
        stats.index_files_rewritten += 1;
    }
    Ok(())
}

fn mark(
    vault: &Vault,
    options: &PruneOptions,
    used: &HashSet<ChunkId>,
    stats: &mut PruneStats,
) -> Result<Option<(String, Mark)>> {
    vault.reload_index()?;
    let index = vault.index();
    let by_pack = index.by_pack();
    let listed: HashMap<PackId, u64> = vault.pack_sizes()?;
    let already: HashSet<PackId> = vault.marked_packs()?;
    let mut to_mark = Vec::new();
    let mut to_repack: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    for (pack, size) in &listed {
        if already.contains(pack) {
            continue;
        }
        let Some(entries) = by_pack.get(pack) else {
            // In no index: an interrupted backup's leftover, or a backup writing now (the
            // sweep waits for it).
            to_mark.push(*pack);
            stats.bytes_marked += size;
            continue;
        };
        let used_entries: Vec<PackEntry> = entries
            .iter()
            .filter(|e| used.contains(&e.id))
            .copied()
            .collect();
        let used_bytes: u64 = used_entries.iter().map(|e| e.len as u64).sum();
        if used_entries.is_empty() {
            to_mark.push(*pack);
            stats.bytes_marked += size;
        } else if options.repack_threshold < 1.0
            && size.saturating_sub(used_bytes) as f64 >= options.repack_threshold * *size as f64
        {
            to_repack.push((*pack, used_entries));
        } else {
            stats.bytes_in_use += size;
        }
    }
    // Repack: copy the used blobs into new packs, index them, then mark the old packs.
    if !to_repack.is_empty() {
        stats.packs_repacked = to_repack.len();
        for (pack, entries) in &to_repack {
            stats.bytes_repacked += entries.iter().map(|e| e.len as u64).sum::<u64>();
            stats.bytes_marked += listed[pack];
            to_mark.push(*pack);
        }
        if !options.dry_run {
            stats.bytes_in_use += repack(vault, &to_repack)?;
        }
    }
    stats.packs_marked = to_mark.len();
    if to_mark.is_empty() || options.dry_run {
        return Ok(None);
    }
    to_mark.sort();
    let mark = Mark {
        created: vault.clock().now(),
        packs: to_mark,
    };
    let name = session::write_mark(vault, &mark)?;
    vault.reload_index()?;
    Ok(Some((name, mark)))
}

/// Copies the used blobs of `packs` into new packs; returns the bytes written.
fn repack(vault: &Vault, packs: &[(PackId, Vec<PackEntry>)]) -> Result<u64> {
    let crypto = vault.crypto();
    let mut copied: HashSet<ChunkId> = HashSet::new();
    let mut writer = PackWriter::new();
    let mut written: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let mut written_bytes = 0u64;
    let mut flush =
        |writer: PackWriter, written: &mut Vec<(PackId, Vec<PackEntry>)>| -> Result<()> {
            if writer.is_empty() {
                return Ok(());
            }
            written_bytes += writer.size() as u64;
            let mut finished = writer.finish(crypto)?;
            let entries = std::mem::take(&mut finished.entries);
            let id = finished.id;
            finished.upload(vault.backend().as_ref())?;
            written.push((id, entries));
            Ok(())
        };
    for (pack, entries) in packs {
        for e in entries {
            if !copied.insert(e.id) {
                continue;
            }
            let blob = vault.backend().read_range(
                FileKind::Pack,
                &pack.to_hex(),
                e.offset as u64,
                e.len as u64,
            )?;
            // Verify before copying so damage is not carried into a fresh pack; the blob
            // itself is copied as stored (its encryption does not depend on the pack).
            crate::codec::decode_blob(crypto, &e.id, blob.clone(), e.raw_len).map_err(
                |source| Error::BadChunk {
                    id: e.id.short(),
                    pack: pack.short(),
                    source,
                },
            )?;
            writer.add(e.id, e.kind, e.raw_len, &blob)?;
            if writer.size() >= crate::format::PACK_TARGET_SIZE {
                flush(std::mem::take(&mut writer), &mut written)?;
            }
        }
    }
    flush(writer, &mut written)?;
    let file = IndexFile { packs: written };
    let (id, bytes): (IndexId, Vec<u8>) = file.seal(crypto);
    vault
        .backend()
        .write(FileKind::Index, &id.to_hex(), &bytes)?;
    Ok(written_bytes)
}

fn clean_sessions(vault: &Vault, options: &PruneOptions, stats: &mut PruneStats) -> Result<()> {
    let now = vault.clock().now();
    // Packs a killed backup was still filling: no live writer leaves a spool untouched
    // for as long as a session takes to go stale.
    if !options.dry_run {
        let idle = (SESSION_STALE_AFTER + options.grace)
            .unsigned_abs()
            .max(std::time::Duration::from_secs(60));
        stats.spools_removed += vault.backend().remove_stale_spools(FileKind::Pack, idle)?;
    }
    for record in session::load_sessions(vault)? {
        let finished_long_ago = record
            .finished
            .is_some_and(|f| now.duration_since(f) >= options.grace);
        let dead = record.finished.is_none()
            && now.duration_since(record.heartbeat) >= SESSION_STALE_AFTER + options.grace;
        if finished_long_ago || dead {
            stats.sessions_removed += 1;
            if !options.dry_run {
                vault
                    .backend()
                    .remove(FileKind::Session, &record.id.to_hex())?;
            }
        }
    }
    Ok(())
}
