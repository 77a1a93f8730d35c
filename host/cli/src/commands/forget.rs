//! `tessera forget`: deleting the recovery points named, or those a retention policy does
//! not keep.
//!
//! The policy applies to each protected item on its own. Forgetting deletes only point
//! records; the data they alone used stays until `prune` (or `--prune`) reclaims it.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::{ArgGroup, Args};
use jiff::SignedDuration;
use serde::Serialize;
use tessera_vault::commands::prune::{ForgetDecision, ForgetOptions, PruneOptions, PruneStats};
use tessera_vault::commands::prune::{forget, forget_points, prune};
use tessera_vault::retention::RetentionPolicy;

use crate::cli::parse_duration;
use crate::commands::find_points;
use crate::commands::prune::print_stats;
use crate::context::Context;
use crate::output::{self, Align, Table};
use crate::progress::Bar;

/// Flags of `tessera forget`: the points to forget, or a policy of at least one
/// `--keep-*`, because a policy that keeps nothing would forget every point.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("keep").multiple(true)))]
#[command(group(
    ArgGroup::new("what")
        .required(true)
        .multiple(true)
        .args([
            "points",
            "keep_last",
            "keep_within",
            "keep_hourly",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
            "keep_yearly",
            "keep_tags",
        ])
))]
pub struct ForgetArgs {
    /// Recovery points to forget: ids or unique prefixes of them (instead of a policy)
    #[arg(value_name = "POINT", conflicts_with_all = ["keep", "item"])]
    pub points: Vec<String>,
    /// Only points of this protected item
    #[arg(long, value_name = "NAME")]
    pub item: Option<String>,
    /// Keep the N newest points
    #[arg(long, group = "keep", value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep points less than this much older than the newest one (e.g. 7d, 12h, 2w)
    #[arg(long, group = "keep", value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<SignedDuration>,
    /// Keep the newest point of each of the last N hours that have points
    #[arg(long, group = "keep", value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest point of each of the last N days that have points
    #[arg(long, group = "keep", value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest point of each of the last N weeks that have points
    #[arg(long, group = "keep", value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest point of each of the last N months that have points
    #[arg(long, group = "keep", value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest point of each of the last N years that have points
    #[arg(long, group = "keep", value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every point with this tag (repeatable: a point with any of them is kept)
    #[arg(long = "keep-tag", group = "keep", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Prune afterwards, reclaiming the space of the forgotten points
    #[arg(long)]
    pub prune: bool,
    /// Show what would be forgotten (and pruned) without changing anything
    #[arg(long)]
    pub dry_run: bool,
}

impl ForgetArgs {
    fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last,
            keep_within: self.keep_within,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_tags: self.keep_tags.clone(),
        }
    }
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct ForgetSummary<'a> {
    dry_run: bool,
    decisions: &'a [ForgetDecision],
    prune: Option<&'a PruneStats>,
}

/// Applies the policy, prints each point's fate, and prunes if asked.
pub fn run(ctx: &Context, args: &ForgetArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let decisions = if args.points.is_empty() {
        let options = ForgetOptions {
            policy: args.policy(),
            item: args.item.clone(),
            dry_run: args.dry_run,
            time_zone: jiff::tz::TimeZone::system(),
        };
        forget(&vault, &options)?
    } else {
        let ids = find_points(&vault, &args.points)?;
        forget_points(&vault, &ids, args.dry_run)?
    };
    if !ctx.output.json() {
        print_decisions(ctx, &decisions, args.dry_run)?;
    }
    let stats = if args.prune {
        let bar = Bar::spinner(&ctx.output, "pruning");
        let options = PruneOptions {
            dry_run: args.dry_run,
            ..PruneOptions::default()
        };
        let stats = prune(&vault, &options)?;
        bar.finish();
        Some(stats)
    } else {
        None
    };
    if ctx.output.json() {
        ctx.output.print_json(&ForgetSummary {
            dry_run: args.dry_run,
            decisions: &decisions,
            prune: stats.as_ref(),
        })?;
    } else if let Some(stats) = &stats {
        print_stats(ctx, stats, args.dry_run)?;
    }
    Ok(())
}

fn print_decisions(ctx: &Context, decisions: &[ForgetDecision], dry_run: bool) -> Result<()> {
    let mut by_item: BTreeMap<&str, Vec<&ForgetDecision>> = BTreeMap::new();
    for decision in decisions {
        by_item.entry(&decision.item).or_default().push(decision);
    }
    let removed_word = if dry_run { "would remove" } else { "remove" };
    for (item, decisions) in by_item {
        if item.is_empty() {
            ctx.output.line("points whose records do not decode")?;
        } else {
            ctx.output.line(&format!("item {item}"))?;
        }
        let mut table = Table::new(&[
            ("ACTION", Align::Left),
            ("ID", Align::Left),
            ("TIME", Align::Left),
            ("REASONS", Align::Left),
        ]);
        for d in decisions {
            table.row(vec![
                if d.keep { "keep" } else { removed_word }.to_string(),
                d.point.short(),
                d.time
                    .map_or_else(|| "(damaged record)".into(), output::local_time),
                d.reasons.join(", "),
            ]);
        }
        table.print()?;
    }
    let kept = decisions.iter().filter(|d| d.keep).count();
    let removed = decisions.len() - kept;
    let verb = if dry_run { "would forget" } else { "forgot" };
    let points = |n| output::count(n as u64, "recovery point", "recovery points");
    if kept == 0 {
        ctx.output.line(&format!("{verb} {}", points(removed)))?;
    } else {
        ctx.output
            .line(&format!("kept {}, {verb} {removed}", points(kept)))?;
    }
    Ok(())
}
