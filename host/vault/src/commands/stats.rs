//! Figures of a whole vault.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::Result;
use crate::vault::Vault;

/// Figures of a vault.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VaultStats {
    /// Recovery points.
    pub points: usize,
    /// Protected items.
    pub items: usize,
    /// Pack files.
    pub packs: usize,
    /// Bytes of all pack files: what the vault occupies.
    pub bytes_stored: u64,
    /// Distinct chunks indexed.
    pub chunks: usize,
    /// Plaintext bytes of the distinct chunks.
    pub bytes_unique: u64,
    /// Bytes the points describe, counting each point in full (holes excluded).
    pub bytes_logical: u64,
    /// `bytes_logical / bytes_unique`: what deduplication saves.
    pub dedup_ratio: f64,
    /// `bytes_unique / bytes_stored`: what compression saves (net of overhead).
    pub compression_ratio: f64,
    /// Memory the in-memory index takes per chunk, in bytes.
    pub index_bytes_per_chunk: f64,
}

/// Computes the figures of a vault.
pub fn stats(vault: &Vault) -> Result<VaultStats> {
    vault.reload_index()?;
    let index = vault.index();
    let points = vault.points()?;
    let packs = vault.backend().list(FileKind::Pack)?;
    let mut s = VaultStats {
        points: points.len(),
        items: points
            .iter()
            .map(|(_, p)| p.item.as_str())
            .collect::<BTreeSet<_>>()
            .len(),
        packs: packs.len(),
        bytes_stored: packs.iter().map(|p| p.size).sum(),
        index_bytes_per_chunk: index.bytes_per_chunk(),
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for entries in index.by_pack().values() {
        for e in entries {
            if seen.insert(e.id) {
                s.chunks += 1;
                s.bytes_unique += e.raw_len as u64;
            }
        }
    }
    s.bytes_logical = points
        .iter()
        .map(|(_, p)| p.stats.bytes_new + p.stats.bytes_reused + p.stats.bytes_carried)
        .sum();
    if s.bytes_unique > 0 {
        s.dedup_ratio = s.bytes_logical as f64 / s.bytes_unique as f64;
    }
    if s.bytes_stored > 0 {
        s.compression_ratio = s.bytes_unique as f64 / s.bytes_stored as f64;
    }
    Ok(s)
}
