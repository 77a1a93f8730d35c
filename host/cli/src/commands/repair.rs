//! `tessera repair index`: rebuilding the index from the packs' own headers.

use anyhow::Result;
use clap::{Args, Subcommand};
use tessera_vault::commands::repair::{RepairOptions, RepairReport, repair_index};

use crate::context::Context;
use crate::output;
use crate::progress::Bar;

/// What `tessera repair` mends.
#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' headers, after index files were lost or damaged
    Index(RepairIndexArgs),
}

/// Flags of `tessera repair index`.
#[derive(Debug, Args)]
pub struct RepairIndexArgs {
    /// Read the headers and say what would be written, changing nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs a repair.
pub fn run(ctx: &Context, command: &RepairCommand) -> Result<()> {
    let RepairCommand::Index(args) = command;
    let vault = ctx.open_vault()?;
    let bar = Bar::spinner(&ctx.output, "reading the packs' headers");
    let report = repair_index(
        &vault,
        RepairOptions {
            dry_run: args.dry_run,
            ..RepairOptions::default()
        },
    )?;
    bar.finish();
    if ctx.output.json() {
        ctx.output.print_json(&report)?;
    } else {
        print_report(ctx, &report, args.dry_run)?;
    }
    Ok(())
}

fn print_report(ctx: &Context, report: &RepairReport, dry_run: bool) -> Result<()> {
    let out = &ctx.output;
    for unreadable in &report.unreadable {
        out.warn(&format!(
            "pack {} left out, its header cannot be read: {}",
            unreadable.pack, unreadable.error
        ));
    }
    let (write, remove) = if dry_run {
        ("would write", "would remove")
    } else {
        ("wrote", "removed")
    };
    out.line(&format!(
        "read the headers of {} ({} not in the old index, {} unreadable, {} marked for \
         deletion left out)",
        output::count(report.packs_indexed as u64, "pack", "packs"),
        report.packs_found,
        report.unreadable.len(),
        report.packs_marked,
    ))?;
    out.line(&format!(
        "{write} {} listing {}; {remove} {} of {} old ({} damaged){}",
        output::count(
            report.index_files_written as u64,
            "index file",
            "index files"
        ),
        output::count(report.blobs_indexed as u64, "chunk", "chunks"),
        report.index_files_removed,
        report.index_files_removed + report.index_files_kept,
        report.index_files_damaged,
        if report.index_files_kept > 0 {
            format!(
                "; kept {} that list an unreadable pack",
                report.index_files_kept
            )
        } else {
            String::new()
        },
    ))?;
    if !report.unreadable.is_empty() {
        out.line("run `tessera check` to see which points the unreadable packs affect")?;
    }
    Ok(())
}
