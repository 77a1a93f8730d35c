//! `tessera prune`: reclaiming the space no recovery point uses.
//!
//! Deletion is two-phase (see the vault crate): this run marks what is unused, and a
//! later run deletes it once the grace period has passed and no backup that could rely
//! on it is running. `--grace 0s` deletes at once, for a vault nothing else writes to.

use anyhow::Result;
use clap::Args;
use jiff::SignedDuration;
use tessera_vault::commands::prune::{PruneOptions, PruneStats, prune};

use crate::cli::{parse_duration, parse_percent};
use crate::context::Context;
use crate::output;
use crate::progress::Bar;

/// Flags of `tessera prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be marked, deleted and repacked without changing anything
    #[arg(long)]
    pub dry_run: bool,
    /// How long marked packs wait before deletion [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Option<SignedDuration>,
    /// Repack a pack when at least this percentage of it is unused [default: 20]
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub repack_threshold: Option<f64>,
}

/// Prunes and prints what was done.
pub fn run(ctx: &Context, args: &PruneArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let defaults = PruneOptions::default();
    let options = PruneOptions {
        dry_run: args.dry_run,
        grace: args.grace.unwrap_or(defaults.grace),
        repack_threshold: args.repack_threshold.unwrap_or(defaults.repack_threshold),
    };
    let bar = Bar::spinner(&ctx.output, "pruning");
    let stats = prune(&vault, &options)?;
    bar.finish();
    if ctx.output.json() {
        ctx.output.print_json(&stats)?;
    } else {
        print_stats(ctx, &stats, args.dry_run)?;
    }
    Ok(())
}

/// Prints what a prune did (or, in a dry run, would do), one line per kind of work.
pub fn print_stats(ctx: &Context, stats: &PruneStats, dry_run: bool) -> Result<()> {
    let (mark, delete, repack, rewrite) = if dry_run {
        (
            "would mark",
            "would delete",
            "would repack",
            "would rewrite",
        )
    } else {
        ("marked", "deleted", "repacked", "rewrote")
    };
    let mut lines = vec![
        format!(
            "{mark} {} ({}) for deletion",
            output::count(stats.packs_marked as u64, "pack", "packs"),
            output::bytes(stats.bytes_marked)
        ),
        format!(
            "{delete} {}, freeing {}",
            output::count(stats.packs_deleted as u64, "pack", "packs"),
            output::bytes(stats.bytes_deleted)
        ),
        format!(
            "{repack} {}, copying {} still in use",
            output::count(stats.packs_repacked as u64, "pack", "packs"),
            output::bytes(stats.bytes_repacked)
        ),
    ];
    if stats.packs_waiting > 0 {
        lines.push(format!(
            "{} wait for the grace period or a running backup",
            output::count(stats.packs_waiting as u64, "marked pack", "marked packs")
        ));
    }
    if stats.packs_unmarked > 0 {
        lines.push(format!(
            "{} kept: their data is in use again",
            output::count(stats.packs_unmarked as u64, "marked pack", "marked packs")
        ));
    }
    if stats.index_files_rewritten > 0 {
        lines.push(format!(
            "{rewrite} {} into one",
            output::count(
                stats.index_files_rewritten as u64,
                "index file",
                "index files"
            )
        ));
    }
    // `bytes_in_use` counts the packs left as they were; the blobs repacking copied are
    // in use too, in the packs it wrote.
    lines.push(format!(
        "{} in use",
        output::bytes(stats.bytes_in_use + stats.bytes_repacked)
    ));
    for line in lines {
        ctx.output.line(&line)?;
    }
    Ok(())
}
