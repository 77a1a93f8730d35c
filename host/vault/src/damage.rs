//! Damage records: the recovery points `check` found damaged, so that later backups do
//! not build on them. An incremental backup carries unchanged data forward from its
//! parent point; carrying it from a point whose data is corrupt would make the new point
//! just as broken. A backup whose parent has a record reads everything again instead.
//!
//! A record is a sealed object under `damage/` (magic `TSDR`) holding
//! `{"point": ID, "found": TIMESTAMP, "reason": TEXT, "chunks": [ID, ...]}` as JSON.
//! Forgetting a point removes its records, and so does a later check that verifies what
//! the records found wrong and finds the point sound (after `repair index`, or once the
//! bad chunks have good copies): a structural check clears records of structural damage
//! (chunks missing from the index, trees that did not decode), and only a check that
//! read every pack clears records naming bad chunks (see
//! [`crate::commands::check::settle_damage`]).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::DAMAGE_MAGIC;
use crate::id::{ChunkId, PointId};
use crate::vault::Vault;

/// A point found damaged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamageRecord {
    /// The point.
    pub point: PointId,
    /// When the damage was found.
    pub found: jiff::Timestamp,
    /// What is wrong with it.
    pub reason: String,
    /// The chunks found bad: later backups store them again instead of deduplicating
    /// against the bad copy.
    #[serde(default)]
    pub chunks: Vec<ChunkId>,
}

impl Vault {
    /// Records that `point` is damaged, for the reason given.
    pub fn record_damage(&self, point: PointId, reason: &str, chunks: &[ChunkId]) -> Result<()> {
        let record = DamageRecord {
            point,
            found: self.clock().now(),
            reason: reason.to_string(),
            chunks: chunks.to_vec(),
        };
        let doc = serde_json::to_vec(&record).expect("records always serialize");
        self.write_sealed(FileKind::Damage, DAMAGE_MAGIC, &doc)?;
        Ok(())
    }

    /// The damaged points with their records. Unreadable records are skipped with a
    /// warning.
    pub fn damage_records(&self) -> Result<HashMap<PointId, DamagedPoint>> {
        let mut out: HashMap<PointId, DamagedPoint> = HashMap::new();
        for info in self.backend().list(FileKind::Damage)? {
            let doc = match self.read_sealed(FileKind::Damage, DAMAGE_MAGIC, &info.name) {
                Ok(doc) => doc,
                Err(Error::Backend(e)) if e.is_not_found() => continue,
                Err(e) => {
                    tracing::warn!(record = %info.name, error = %e, "skipping unreadable damage record");
                    continue;
                }
            };
            match serde_json::from_slice::<DamageRecord>(&doc) {
                Ok(record) => {
                    let point = out.entry(record.point).or_insert_with(|| DamagedPoint {
                        records: Vec::new(),
                        reason: record.reason,
                        bad_chunks: false,
                    });
                    point.records.push(info.name);
                    point.bad_chunks |= !record.chunks.is_empty();
                }
                Err(e) => {
                    tracing::warn!(record = %info.name, error = %e, "skipping malformed damage record")
                }
            }
        }
        Ok(out)
    }

    /// Removes the records of a damaged point (which [`Vault::damage_records`] gave).
    pub fn remove_damage_records(&self, damaged: &DamagedPoint) -> Result<()> {
        for name in &damaged.records {
            match self.backend().remove(FileKind::Damage, name) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Every chunk a damage record names as bad.
    pub fn distrusted_chunks(&self) -> Result<HashSet<ChunkId>> {
        let mut out = HashSet::new();
        for info in self.backend().list(FileKind::Damage)? {
            if let Ok(doc) = self.read_sealed(FileKind::Damage, DAMAGE_MAGIC, &info.name)
                && let Ok(record) = serde_json::from_slice::<DamageRecord>(&doc)
            {
                out.extend(record.chunks);
            }
        }
        Ok(out)
    }

    /// Why `point` was recorded damaged, if it was.
    pub fn damage(&self, point: &PointId) -> Result<Option<String>> {
        Ok(self.damage_records()?.remove(point).map(|d| d.reason))
    }
}

/// A point recorded damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedPoint {
    /// The object names of its records.
    pub records: Vec<String>,
    /// The first reason recorded.
    pub reason: String,
    /// Whether a record names bad chunks: damage to the data, which only a check that
    /// reads the data can clear.
    pub bad_chunks: bool,
}

#[cfg(test)]
mod tests {
    use crate::id::PointId;

    #[test]
    fn records_are_found_by_point() {
        let dir = tempfile::tempdir().unwrap();
        let backend = std::sync::Arc::new(crate::LocalBackend::new(dir.path()));
        let options = crate::InitOptions::new(crate::Encryption::None);
        let vault =
            crate::Vault::init(backend, options, std::sync::Arc::new(crate::SystemClock)).unwrap();
        let a = PointId::hash_of(b"a");
        let b = PointId::hash_of(b"b");
        assert_eq!(vault.damage(&a).unwrap(), None);
        vault
            .record_damage(a, "chunk 1234 is corrupt", &[])
            .unwrap();
        vault.record_damage(a, "again", &[]).unwrap();
        let reason = vault.damage(&a).unwrap().unwrap();
        assert!(
            reason == "chunk 1234 is corrupt" || reason == "again",
            "{reason}"
        );
        assert_eq!(vault.damage(&b).unwrap(), None);
        let damaged = &vault.damage_records().unwrap()[&a];
        assert_eq!(damaged.records.len(), 2);
        assert!(!damaged.bad_chunks);
        vault.remove_damage_records(damaged).unwrap();
        assert_eq!(vault.damage(&a).unwrap(), None);
    }
}
