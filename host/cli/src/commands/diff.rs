//! `tessera diff`: what changed between two recovery points.

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;
use tessera_vault::PointId;
use tessera_vault::commands::diff::{DiffReport, diff};

use crate::commands::select_point;
use crate::context::Context;
use crate::output;

/// Flags of `tessera diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first recovery point (the older one, usually): an id, a unique prefix of one,
    /// or `latest`
    pub first: String,
    /// The second recovery point
    pub second: String,
    /// The protected item whose points `latest` chooses from
    #[arg(long, value_name = "NAME")]
    pub item: Option<String>,
}

/// The JSON result: the two points and what differs.
#[derive(Debug, Serialize)]
struct DiffSummary<'a> {
    first: PointId,
    second: PointId,
    #[serde(flatten)]
    report: &'a DiffReport,
}

/// Prints each path that differs with its mark, then the totals.
pub fn run(ctx: &Context, args: &DiffArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let (first_id, first) = select_point(&vault, &args.first, args.item.as_deref())?;
    let (second_id, second) = select_point(&vault, &args.second, args.item.as_deref())?;
    let report = diff(&vault, first.root, second.root).with_context(|| {
        format!(
            "cannot compare recovery points {} and {}",
            first_id.short(),
            second_id.short()
        )
    })?;
    if ctx.output.json() {
        ctx.output.print_json(&DiffSummary {
            first: first_id,
            second: second_id,
            report: &report,
        })?;
        return Ok(());
    }
    let out = &ctx.output;
    for change in &report.changes {
        let slash = if change.directory { "/" } else { "" };
        out.line(&format!(
            "{}    {}{slash}",
            change.change.mark(),
            change.path
        ))?;
    }
    out.line(&format!(
        "{} added, {} removed, {} modified, {} with other metadata; data: {} added, {} removed",
        report.added,
        report.removed,
        report.modified,
        report.metadata_only,
        output::bytes(report.bytes_added),
        output::bytes(report.bytes_removed),
    ))?;
    if report.chunks_unknown > 0 {
        out.warn(&format!(
            "{} the points use are missing from the vault's index and not counted: run \
             `tessera check`",
            output::count(report.chunks_unknown, "chunk", "chunks")
        ));
    }
    Ok(())
}
