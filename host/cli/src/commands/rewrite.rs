//! `tessera rewrite`: recovery points made anew without some of their paths, say a key
//! or a huge temporary file that should never have been backed up.
//!
//! The new point keeps the original's item, times, tags and figures, and names it in
//! `original`; the original stays unless `--forget` is given, and its data goes only
//! once `prune` runs.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use globset::GlobMatcher;
use serde::Serialize;
use tessera_vault::commands::prune::forget_points;
use tessera_vault::commands::rewrite::{Rewritten, rewrite};

use crate::commands::backup::patterns_in;
use crate::commands::find::matcher;
use crate::commands::find_points;
use crate::context::Context;
use crate::output::{Align, Table};

/// Flags of `tessera rewrite`.
#[derive(Debug, Args)]
pub struct RewriteArgs {
    /// Recovery points: ids, unique prefixes of them, or `latest`
    #[arg(value_name = "POINT", required = true)]
    pub points: Vec<String>,
    /// Remove the paths matching this pattern, with everything below them (repeatable;
    /// a pattern without `/` matches a name at any depth)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Remove the paths matching the patterns in this file, one per line (repeatable)
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Forget each original once its new point is written
    #[arg(long)]
    pub forget: bool,
    /// Show what would be removed without writing anything
    #[arg(long)]
    pub dry_run: bool,
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct RewriteSummary<'a> {
    dry_run: bool,
    points: &'a [Rewritten],
    forgotten: Vec<tessera_vault::PointId>,
}

/// Rewrites the points and prints what went from each.
pub fn run(ctx: &Context, args: &RewriteArgs) -> Result<()> {
    let mut patterns = args.exclude.clone();
    for file in &args.exclude_file {
        patterns.extend(patterns_in(file)?);
    }
    if patterns.is_empty() {
        bail!("give the paths to remove with --exclude or --exclude-file");
    }
    let globs = patterns
        .iter()
        .map(|pattern| matcher(pattern, false))
        .collect::<Result<Vec<GlobMatcher>>>()?;
    let excluded = |path: &str| globs.iter().any(|glob| glob.is_match(path));
    let vault = ctx.open_vault()?;
    let ids = find_points(&vault, &args.points)?;
    let mut done = Vec::with_capacity(ids.len());
    for id in ids {
        if done.iter().any(|d: &Rewritten| d.point == id) {
            continue;
        }
        done.push(rewrite(&vault, id, &excluded, args.dry_run)?);
    }
    let mut forgotten = Vec::new();
    if args.forget && !args.dry_run {
        let originals: Vec<_> = done
            .iter()
            .filter(|d| d.new.is_some())
            .map(|d| d.point)
            .collect();
        forget_points(&vault, &originals, false)?;
        forgotten = originals;
    }
    if ctx.output.json() {
        ctx.output.print_json(&RewriteSummary {
            dry_run: args.dry_run,
            points: &done,
            forgotten,
        })?;
        return Ok(());
    }
    let mut table = Table::new(&[
        ("POINT", Align::Left),
        ("NOW", Align::Left),
        ("REMOVED", Align::Left),
    ]);
    for point in &done {
        let now = match (&point.new, point.removed.is_empty()) {
            (Some(new), _) => new.short(),
            (None, true) => "(unchanged)".into(),
            (None, false) => "(a new point)".into(),
        };
        table.row(vec![point.point.short(), now, point.removed.join(", ")]);
    }
    table.print()?;
    if !forgotten.is_empty() {
        ctx.output.line(&format!(
            "forgot {} original points; `tessera prune` reclaims their data",
            forgotten.len()
        ))?;
    }
    Ok(())
}
