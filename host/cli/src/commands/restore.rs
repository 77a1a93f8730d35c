//! `tessera restore`: writing a recovery point, or paths of it, into a directory.
//!
//! The plugin that captured the point restores it, since only it knows what its entries
//! mean (a file share's files, a disk image's blocks). Paths are relative to the point's
//! root and keep that shape under the target: `--path a/b.txt` gives `TARGET/a/b.txt`.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;
use tessera_runtime::{RestoreJob, RestoreTarget};
use tessera_vault::PointId;

use crate::cli::parse_setting;
use crate::commands::backup::{EXCLUDE_SETTING, INCLUDE_SETTING};
use crate::commands::{plugin_for_point, select_point};
use crate::context::Context;
use crate::output::{self, millis};
use crate::progress::Bar;

/// The setting that carries `--format` to the plugin.
const FORMAT_SETTING: &str = "format";
/// The setting that carries `--overwrite` to the plugin.
const OVERWRITE_SETTING: &str = "overwrite";
/// The setting that carries `--delete` to the plugin.
const DELETE_SETTING: &str = "delete";

/// Flags of `tessera restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The recovery point: an id, a unique prefix of one, or `latest`
    pub point: String,
    /// The directory to restore into (created if missing), or for a disk an NBD export
    /// to write it onto (nbd://HOST:PORT/EXPORT)
    #[arg(long, value_name = "DIR|URL")]
    pub target: String,
    /// The format of restored disk images: raw (sparse), qcow2, vhd (fixed, sparse), vhdx
    /// (dynamic) or vmdk (a flat extent, sparse, and its descriptor)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Restore only this path of the point, with everything below it (repeatable)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Leave out paths matching this pattern, with everything below them (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Restore only paths matching this pattern, with everything below them (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// The protected item whose points `latest` chooses from
    #[arg(long, value_name = "NAME")]
    pub item: Option<String>,
    /// Restore with this plugin instead of the one that made the point
    #[arg(long, value_name = "NAME|FILE.wasm")]
    pub plugin: Option<String>,
    /// What to do with a file already in the target: replace it (always), keep it if it
    /// has the stored size and modification time (if-changed), keep it unless the stored
    /// one is newer (if-newer), or keep it (never) [default: always]
    #[arg(long, value_name = "WHEN", value_parser = ["always", "if-changed", "if-newer", "never"])]
    pub overwrite: Option<String>,
    /// Delete from the directories restored what the point does not hold there, so the
    /// target ends up as the point (paths an --exclude matches are left alone)
    #[arg(long)]
    pub delete: bool,
    /// A plugin setting (repeatable)
    #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct RestoreSummary {
    point: PointId,
    target: String,
    entries: u64,
    bytes_written: u64,
    warnings: Vec<String>,
    duration_ms: u64,
}

/// Restores the point and prints what was written.
pub fn run(ctx: &Context, args: &RestoreArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let (id, point) = select_point(&vault, &args.point, args.item.as_deref())?;
    let runtime = ctx.runtime()?;
    let plugin = plugin_for_point(&runtime, &point, args.plugin.as_deref())?;
    let (target, shown) = if args.target.contains("://") {
        (
            RestoreTarget::Address(args.target.clone()),
            args.target.clone(),
        )
    } else {
        let dir = PathBuf::from(&args.target);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot restore into {}", dir.display()))?;
        let shown = dir.display().to_string();
        (RestoreTarget::Directory(dir), shown)
    };
    let mut settings = args.settings.clone();
    if let Some(format) = &args.format {
        settings.push((FORMAT_SETTING.to_string(), format.clone()));
    }
    settings.extend(
        args.exclude
            .iter()
            .map(|g| (EXCLUDE_SETTING.to_string(), g.clone())),
    );
    settings.extend(
        args.include
            .iter()
            .map(|g| (INCLUDE_SETTING.to_string(), g.clone())),
    );
    if let Some(overwrite) = &args.overwrite {
        settings.push((OVERWRITE_SETTING.to_string(), overwrite.clone()));
    }
    if args.delete {
        settings.push((DELETE_SETTING.to_string(), "true".to_string()));
    }
    let job = RestoreJob {
        target,
        paths: args.paths.iter().map(|p| point_path(p)).collect(),
        settings,
    };
    let bar = Bar::new(&ctx.output, "restoring");
    let outcome = runtime
        .restore(&plugin, &vault, &id, &job, &bar)
        .with_context(|| format!("restore of recovery point {} failed", id.short()))?;
    bar.finish();

    for warning in &outcome.warnings {
        ctx.output.warn(warning);
    }
    if ctx.output.json() {
        ctx.output.print_json(&RestoreSummary {
            point: id,
            target: shown.clone(),
            entries: outcome.entries,
            bytes_written: outcome.bytes_written,
            warnings: outcome.warnings,
            duration_ms: millis(outcome.duration),
        })?;
        return Ok(());
    }
    ctx.output.line(&format!(
        "restored {} ({}) of recovery point {} into {} in {}",
        output::count(outcome.entries, "entry", "entries"),
        output::bytes(outcome.bytes_written),
        id.short(),
        shown,
        output::seconds(outcome.duration),
    ))?;
    Ok(())
}

/// A path as the point names it: relative to its root, so `/a/b/` and `a/b` agree.
pub fn point_path(path: &str) -> String {
    path.trim_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_root() {
        assert_eq!(point_path("/a/b.txt"), "a/b.txt");
        assert_eq!(point_path("a/dir/"), "a/dir");
        assert_eq!(point_path("/"), "");
    }
}
