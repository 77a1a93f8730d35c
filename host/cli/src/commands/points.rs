//! `tessera points`: listing recovery points, oldest first.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tessera_vault::{BackupStats, Consistency, Point, PointId};

use crate::context::Context;
use crate::output::{self, Align, Table};

/// Flags of `tessera points`.
#[derive(Debug, Args)]
pub struct PointsArgs {
    /// Only points of this protected item
    #[arg(long, value_name = "NAME")]
    pub item: Option<String>,
    /// Only points with this tag (repeatable: points with any of them)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

/// One point as JSON: the stored record, flattened for scripts (`time` is the end).
#[derive(Debug, Serialize)]
struct PointSummary<'a> {
    id: PointId,
    item: &'a str,
    plugin: &'a str,
    plugin_version: &'a str,
    host: &'a str,
    start: jiff::Timestamp,
    time: jiff::Timestamp,
    consistency: Consistency,
    consistency_reason: Option<&'a str>,
    parent: Option<PointId>,
    /// The id the point had before its tags changed.
    original: Option<PointId>,
    tags: &'a [String],
    partial: bool,
    warnings: &'a [String],
    /// What the plugin recorded about the capture (a disk's format, settings used).
    attributes: &'a BTreeMap<String, String>,
    size: u64,
    stats: &'a BackupStats,
}

impl<'a> PointSummary<'a> {
    fn new(id: PointId, point: &'a Point) -> Self {
        PointSummary {
            id,
            item: &point.item,
            plugin: &point.plugin.name,
            plugin_version: &point.plugin.version,
            host: &point.host,
            start: point.start,
            time: point.end,
            consistency: point.consistency,
            consistency_reason: point.consistency_reason.as_deref(),
            parent: point.parent,
            original: point.original,
            tags: &point.tags,
            partial: point.partial,
            warnings: &point.warnings,
            attributes: &point.attributes,
            size: size(point),
            stats: &point.stats,
        }
    }
}

/// The size of what a point holds: content read plus content carried from its parent.
pub fn size(point: &Point) -> u64 {
    point.stats.bytes_read + point.stats.bytes_carried
}

/// Prints the points.
pub fn run(ctx: &Context, args: &PointsArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let points: Vec<(PointId, Point)> = vault
        .points()?
        .into_iter()
        .filter(|(_, p)| args.item.as_ref().is_none_or(|item| *item == p.item))
        .filter(|(_, p)| args.tags.is_empty() || p.tags.iter().any(|t| args.tags.contains(t)))
        .collect();
    if ctx.output.json() {
        let summaries: Vec<PointSummary> = points
            .iter()
            .map(|(id, point)| PointSummary::new(*id, point))
            .collect();
        ctx.output.print_json(&summaries)?;
        return Ok(());
    }
    if points.is_empty() {
        ctx.output.note("no recovery points");
        return Ok(());
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("TIME", Align::Left),
        ("ITEM", Align::Left),
        ("PLUGIN", Align::Left),
        ("CONSISTENCY", Align::Left),
        ("SIZE", Align::Right),
        ("TAGS", Align::Left),
    ]);
    for (id, point) in &points {
        let consistency = if point.partial {
            format!("{}, partial", point.consistency)
        } else {
            point.consistency.to_string()
        };
        table.row(vec![
            id.short(),
            output::local_time(point.end),
            point.item.clone(),
            point.plugin.name.clone(),
            consistency,
            output::bytes(size(point)),
            point.tags.join(","),
        ]);
    }
    table.print()?;
    Ok(())
}
