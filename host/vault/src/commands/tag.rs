//! Changing the tags of recovery points.
//!
//! A point is immutable and named by the hash of its sealed record, so new tags make a new
//! record under a new id: it is written first, the old point's damage records are moved
//! to it, and only then is the old record deleted. A crash in between leaves both, the
//! same point twice under two ids, never neither. The new record keeps everything else
//! and names the point it replaced in `original`.

use serde::Serialize;

use crate::backend::FileKind;
use crate::damage::DamageRecord;
use crate::error::{Error, Result};
use crate::format::{DAMAGE_MAGIC, POINT_MAGIC};
use crate::id::PointId;
use crate::vault::Vault;

/// How to change the tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChange {
    /// Replace the tags with these (an empty list removes every tag).
    pub set: Option<Vec<String>>,
    /// Add these, after `set`.
    pub add: Vec<String>,
    /// Remove these, last.
    pub remove: Vec<String>,
}

impl TagChange {
    /// The tags `tags` become.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let start = self.set.as_deref().unwrap_or(tags);
        for tag in start.iter().chain(&self.add) {
            if !tag.is_empty() && !out.contains(tag) && !self.remove.contains(tag) {
                out.push(tag.clone());
            }
        }
        out
    }
}

/// What became of one point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retagged {
    /// The point named.
    pub point: PointId,
    /// Whether its tags change (or with a dry run, would).
    pub changed: bool,
    /// Its new id, if its tags changed.
    pub new: Option<PointId>,
    /// Its tags now.
    pub tags: Vec<String>,
}

/// Applies `change` to each of `points` (a point named twice counts once); with
/// `dry_run`, only says what the tags would become. Every point is loaded before any is
/// changed, so a point that is not there or does not decode changes nothing.
pub fn retag(
    vault: &Vault,
    points: &[PointId],
    change: &TagChange,
    dry_run: bool,
) -> Result<Vec<Retagged>> {
    let mut loaded = Vec::with_capacity(points.len());
    for id in points {
        if loaded.iter().any(|(seen, _)| seen == id) {
            continue;
        }
        let point = vault.load_named_point(id)?;
        loaded.push((*id, point));
    }
    let mut out = Vec::with_capacity(loaded.len());
    for (id, mut point) in loaded {
        let tags = change.apply(&point.tags);
        if tags == point.tags {
            out.push(Retagged {
                point: id,
                changed: false,
                new: None,
                tags,
            });
            continue;
        }
        let new = if dry_run {
            None
        } else {
            point.tags = tags.clone();
            point.original = point.original.or(Some(id));
            let doc = serde_json::to_vec(&point).expect("points always serialize");
            let new: PointId = vault
                .write_sealed(FileKind::Point, POINT_MAGIC, &doc)?
                .parse()
                .expect("sealed names are hex ids");
            move_damage_records(vault, &id, &new)?;
            vault.backend().remove(FileKind::Point, &id.to_hex())?;
            Some(new)
        };
        out.push(Retagged {
            point: id,
            changed: true,
            new,
            tags,
        });
    }
    Ok(out)
}

/// Records the damage recorded for `from` for `to` as well, then removes `from`'s records.
fn move_damage_records(vault: &Vault, from: &PointId, to: &PointId) -> Result<()> {
    let Some(damaged) = vault.damage_records()?.remove(from) else {
        return Ok(());
    };
    for name in &damaged.records {
        let doc = vault.read_sealed(FileKind::Damage, DAMAGE_MAGIC, name)?;
        let record: DamageRecord = serde_json::from_slice(&doc).map_err(|e| Error::Corrupt {
            kind: FileKind::Damage,
            name: name.get(..8).unwrap_or(name).to_string(),
            source: crate::codec::DecodeError::Malformed(e.to_string()),
        })?;
        vault.record_damage(*to, &record.reason, &record.chunks)?;
    }
    vault.remove_damage_records(&damaged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn changes_apply_set_then_add_then_remove() {
        let now = tags(&["nightly", "db"]);
        let add = TagChange {
            add: tags(&["keep", "db"]),
            ..TagChange::default()
        };
        assert_eq!(add.apply(&now), tags(&["nightly", "db", "keep"]));
        let remove = TagChange {
            remove: tags(&["nightly", "absent"]),
            ..TagChange::default()
        };
        assert_eq!(remove.apply(&now), tags(&["db"]));
        let set = TagChange {
            set: Some(tags(&["release", "release"])),
            add: tags(&["audit"]),
            remove: tags(&["audit"]),
        };
        assert_eq!(set.apply(&now), tags(&["release"]));
        let clear = TagChange {
            set: Some(tags(&[""])),
            ..TagChange::default()
        };
        assert!(clear.apply(&now).is_empty());
    }
}
