//! `tessera check`: verifying the vault, and naming what each problem puts at risk.
//!
//! The exit status is the verdict: 0 only for a sound vault, so a scheduled
//! `tessera check --read-data` can alert on failure without parsing output.

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use tessera_vault::commands::check::{
    CheckOptions, CheckReport, DamageSettled, DataSubset, check, settle_damage,
};

use crate::context::Context;
use crate::output;
use crate::progress::Bar;

/// Flags of `tessera check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also read every pack, and decrypt, decompress and re-hash every chunk
    #[arg(long)]
    pub read_data: bool,
    /// Read only some packs: N/T (part N of T; parts 1 to T in turn read every pack once),
    /// a percentage (10%), or a size (500M, 2G) of packs chosen at random
    #[arg(long, value_name = "SUBSET")]
    pub read_data_subset: Option<DataSubset>,
}

/// The JSON result: the report with its verdict.
#[derive(Debug, Serialize)]
struct CheckSummary<'a> {
    ok: bool,
    #[serde(flatten)]
    report: &'a CheckReport,
    /// The damage records this check added and removed.
    damage: &'a DamageSettled,
}

/// Checks the vault, prints the findings, and fails if there are problems.
pub fn run(ctx: &Context, args: &CheckArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let read_data = args.read_data || args.read_data_subset.is_some();
    let message = if read_data {
        "checking structure and data"
    } else {
        "checking structure"
    };
    let bar = Bar::spinner(&ctx.output, message);
    let options = CheckOptions {
        read_data,
        subset: args.read_data_subset.unwrap_or_default(),
        ..CheckOptions::default()
    };
    let report = check(&vault, options)?;
    bar.finish();
    // A vault that cannot take the records (read-only media) only gets a warning.
    let settled = settle_damage(&vault, &report).unwrap_or_else(|e| {
        ctx.output
            .warn(&format!("cannot update the damage records: {e}"));
        DamageSettled::default()
    });

    if ctx.output.json() {
        ctx.output.print_json(&CheckSummary {
            ok: report.is_ok(),
            report: &report,
            damage: &settled,
        })?;
    } else {
        print_report(ctx, &report, read_data)?;
        if !settled.cleared.is_empty() {
            let points: Vec<_> = settled.cleared.iter().map(|p| p.short()).collect();
            ctx.output.line(&format!(
                "found sound again, no longer recorded as damaged: {}",
                points.join(", ")
            ))?;
        }
    }
    if !report.is_ok() {
        bail!(
            "the vault has {}; restoring the points listed may fail",
            output::count(report.problems.len() as u64, "problem", "problems")
        );
    }
    Ok(())
}

fn print_report(ctx: &Context, report: &CheckReport, read_data: bool) -> Result<()> {
    let out = &ctx.output;
    for problem in &report.problems {
        out.line(&format!("problem: {}", problem.message))?;
        for affected in &problem.affected {
            let path = if affected.path.is_empty() {
                "/"
            } else {
                &affected.path
            };
            out.line(&format!("  point {}  {path}", affected.point.short()))?;
        }
    }
    for note in &report.notes {
        out.line(&format!("note: {note}"))?;
    }
    let mut summary = format!(
        "checked {}, {}",
        output::count(report.points as u64, "recovery point", "recovery points"),
        output::count(report.trees as u64, "tree", "trees"),
    );
    if read_data {
        let packs = if report.packs_read == report.packs {
            output::count(report.packs_read as u64, "pack", "packs")
        } else {
            format!("{} of {} packs", report.packs_read, report.packs)
        };
        summary.push_str(&format!(
            "; read {packs} ({}), {}",
            output::bytes(report.bytes_read),
            output::count(report.chunks_read, "chunk", "chunks"),
        ));
    }
    out.line(&summary)?;
    if report.is_ok() {
        out.line("no problems found")?;
    }
    Ok(())
}
