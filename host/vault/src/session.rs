//! Writer sessions and deletion marks: what lets backups and prune run at the same time.
//!
//! A backup announces itself with a session object under `sessions/`, named by a random
//! id, rewritten as a heartbeat while it runs and once more when it ends. Prune never
//! deletes anything at once: it writes a deletion mark listing the packs nothing refers
//! to, and a later prune deletes a marked pack only after the grace period, only if it is
//! still unreferenced, and only if no session that started before the mark is still
//! running (or ended less than a grace period ago). See the crate documentation.

use serde::{Deserialize, Serialize};

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::{MARK_MAGIC, SESSION_MAGIC};
use crate::id::{PackId, SessionId};
use crate::vault::Vault;

/// How often a running backup rewrites its session object.
pub const HEARTBEAT_INTERVAL: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);
/// A session whose heartbeat is older than this is taken to have died (killed, power loss).
pub const SESSION_STALE_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_secs(30 * 60);

/// A writer session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session's id.
    pub id: SessionId,
    /// The protected item being backed up.
    pub item: String,
    /// The machine.
    pub host: String,
    /// The process.
    pub pid: u32,
    /// When the session started.
    pub started: jiff::Timestamp,
    /// Last sign of life.
    pub heartbeat: jiff::Timestamp,
    /// When the session ended, committed or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<jiff::Timestamp>,
}

impl SessionRecord {
    /// Whether the session may still refer to chunks it saw in the index, at `now`.
    pub fn may_hold_references(&self, now: jiff::Timestamp, grace: jiff::SignedDuration) -> bool {
        match self.finished {
            // Its point may not be listable yet; give listings a grace period to catch up.
            Some(finished) => now.duration_since(finished) < grace,
            None => now.duration_since(self.heartbeat) < SESSION_STALE_AFTER,
        }
    }
}

/// A deletion mark as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// When prune wrote it.
    pub created: jiff::Timestamp,
    /// Packs unreferenced at that time.
    pub packs: Vec<PackId>,
}

/// Writes a session's record; `durable` waits until it is on the disk.
pub(crate) fn write_session(vault: &Vault, record: &SessionRecord, durable: bool) -> Result<()> {
    let doc = serde_json::to_vec(record).expect("sessions always serialize");
    let sealed = crate::codec::seal_object(vault.crypto(), SESSION_MAGIC, &doc, false);
    let backend = vault.backend();
    let name = record.id.to_hex();
    if durable {
        backend.write(FileKind::Session, &name, &sealed)?;
    } else {
        backend.write_relaxed(FileKind::Session, &name, &sealed)?;
    }
    Ok(())
}

/// Every session object that can be read.
pub fn load_sessions(vault: &Vault) -> Result<Vec<SessionRecord>> {
    let mut out = Vec::new();
    for info in vault.backend().list(FileKind::Session)? {
        let bytes = match vault.backend().read(FileKind::Session, &info.name) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let parsed = crate::codec::open_object(vault.crypto(), SESSION_MAGIC, &bytes)
            .map_err(|e| e.to_string())
            .and_then(|doc| {
                serde_json::from_slice::<SessionRecord>(&doc).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(record) => out.push(record),
            Err(e) => {
                tracing::warn!(session = %info.name, error = %e, "skipping unreadable session")
            }
        }
    }
    Ok(out)
}

pub(crate) fn write_mark(vault: &Vault, mark: &Mark) -> Result<String> {
    let doc = serde_json::to_vec(mark).expect("marks always serialize");
    vault.write_sealed(FileKind::Mark, MARK_MAGIC, &doc)
}

/// Every deletion mark, with its name.
pub fn load_marks(vault: &Vault) -> Result<Vec<(String, Mark)>> {
    let mut out = Vec::new();
    for info in vault.backend().list(FileKind::Mark)? {
        let doc = match vault.read_sealed(FileKind::Mark, MARK_MAGIC, &info.name) {
            Ok(doc) => doc,
            Err(Error::Backend(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let mark: Mark = serde_json::from_slice(&doc).map_err(|e| Error::Corrupt {
            kind: FileKind::Mark,
            name: info.name.clone(),
            source: crate::codec::DecodeError::Malformed(e.to_string()),
        })?;
        out.push((info.name, mark));
    }
    Ok(out)
}
