//! `tessera stats`: figures of the whole vault.

use anyhow::Result;
use tessera_vault::commands::stats::stats;

use crate::context::Context;
use crate::output;

/// Prints the vault's size, deduplication and compression figures.
pub fn run(ctx: &Context) -> Result<()> {
    let vault = ctx.open_vault()?;
    let stats = stats(&vault)?;
    if ctx.output.json() {
        ctx.output.print_json(&stats)?;
        return Ok(());
    }
    let lines = [
        ("recovery points", stats.points.to_string()),
        ("protected items", stats.items.to_string()),
        ("logical size", output::bytes(stats.bytes_logical)),
        (
            "unique data",
            format!(
                "{} in {}",
                output::bytes(stats.bytes_unique),
                output::count(stats.chunks as u64, "chunk", "chunks")
            ),
        ),
        (
            "stored",
            format!(
                "{} in {}",
                output::bytes(stats.bytes_stored),
                output::count(stats.packs as u64, "pack", "packs")
            ),
        ),
        ("deduplication", format!("{:.2}x", stats.dedup_ratio)),
        ("compression", format!("{:.2}x", stats.compression_ratio)),
    ];
    for (label, value) in lines {
        ctx.output.line(&format!("{label:<16} {value}"))?;
    }
    Ok(())
}
