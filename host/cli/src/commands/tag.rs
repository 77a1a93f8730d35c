//! `tessera tag`: changing the tags of recovery points after the fact, say to keep one
//! with `forget --keep-tag` or to find it with `points --tag`.
//!
//! A point's record is immutable, so a point whose tags change gets a new id (the old id
//! is kept in its `original` field).

use anyhow::Result;
use clap::{ArgGroup, Args};
use serde::Serialize;
use tessera_vault::commands::tag::{Retagged, TagChange, retag};

use crate::commands::find_points;
use crate::context::Context;
use crate::output::{Align, Table};

/// Flags of `tessera tag`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)))]
pub struct TagArgs {
    /// Recovery points: ids, unique prefixes of them, or `latest`
    #[arg(value_name = "POINT", required = true)]
    pub points: Vec<String>,
    /// Replace the tags with these (repeatable; `--set ''` removes every tag)
    #[arg(long, group = "change", value_name = "TAG")]
    pub set: Vec<String>,
    /// Add this tag (repeatable)
    #[arg(long, group = "change", value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long, group = "change", value_name = "TAG")]
    pub remove: Vec<String>,
    /// Show what the tags would become without changing anything
    #[arg(long)]
    pub dry_run: bool,
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct TagSummary<'a> {
    dry_run: bool,
    points: &'a [Retagged],
}

/// Changes the tags and prints each point's new id and tags.
pub fn run(ctx: &Context, args: &TagArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let ids = find_points(&vault, &args.points)?;
    let change = TagChange {
        set: (!args.set.is_empty()).then(|| args.set.clone()),
        add: args.add.clone(),
        remove: args.remove.clone(),
    };
    let done = retag(&vault, &ids, &change, args.dry_run)?;
    if ctx.output.json() {
        ctx.output.print_json(&TagSummary {
            dry_run: args.dry_run,
            points: &done,
        })?;
        return Ok(());
    }
    let mut table = Table::new(&[
        ("POINT", Align::Left),
        ("NOW", Align::Left),
        ("TAGS", Align::Left),
    ]);
    for point in &done {
        let now = match (&point.new, point.changed) {
            (Some(new), _) => new.short(),
            (None, true) => "(a new id)".into(),
            (None, false) => "(unchanged)".into(),
        };
        table.row(vec![point.point.short(), now, point.tags.join(", ")]);
    }
    Ok(table.print()?)
}
