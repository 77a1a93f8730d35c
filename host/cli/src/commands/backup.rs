//! `tessera backup`: capturing a protected item into a new recovery point.
//!
//! The plugin does the reading; this verb picks the item's name and its parent point
//! (the newest point of the same item by the same plugin, so an unchanged file is carried
//! forward instead of read again), and passes excludes and includes on as settings.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use serde::Serialize;
use tessera_runtime::CaptureJob;
use tessera_vault::{PointId, Vault};

use crate::cli::parse_setting;
use crate::context::Context;
use crate::output::{self, millis};
use crate::progress::Bar;

/// The plugin used when `--plugin` is not given.
pub const DEFAULT_PLUGIN: &str = "file-share";

/// The setting that carries `--exclude` patterns to the plugin.
const EXCLUDE_SETTING: &str = "exclude";
/// The setting that carries `--include` patterns to the plugin.
const INCLUDE_SETTING: &str = "include";

/// Flags of `tessera backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// What to back up: a directory or file for file-share, whatever the plugin reads
    pub path: PathBuf,
    /// The plugin: a builtin's name or a component file
    #[arg(long, value_name = "NAME|FILE.wasm", default_value = DEFAULT_PLUGIN)]
    pub plugin: String,
    /// The protected item's name [default: the absolute path]
    #[arg(long, value_name = "NAME")]
    pub item: Option<String>,
    /// Leave out paths matching this pattern (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Back up only paths matching this pattern (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// A tag for the recovery point (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// A plugin setting (repeatable; see `tessera plugin inspect`)
    #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct BackupSummary {
    point: PointId,
    item: String,
    parent: Option<PointId>,
    bytes_read: u64,
    bytes_new: u64,
    bytes_stored: u64,
    bytes_carried: u64,
    entries: u64,
    partial: bool,
    warnings: Vec<String>,
    duration_ms: u64,
}

/// Backs up `args.path` and prints the new point's id.
pub fn run(ctx: &Context, args: &BackupArgs) -> Result<()> {
    let source = args
        .path
        .canonicalize()
        .with_context(|| format!("cannot back up {}", args.path.display()))?;
    let item = match &args.item {
        Some(item) => item.clone(),
        None => source
            .to_str()
            .ok_or_else(|| {
                anyhow!(
                    "the path {} is not valid UTF-8: name the item with --item",
                    source.display()
                )
            })?
            .to_string(),
    };
    let vault = ctx.open_or_create_vault()?;
    let runtime = ctx.runtime()?;
    let plugin = runtime
        .load(&args.plugin)
        .with_context(|| format!("cannot load the plugin '{}'", args.plugin))?;
    let parent = parent_point(&vault, &item, &plugin.info().name)?;

    let mut settings = args.settings.clone();
    settings.extend(
        args.exclude
            .iter()
            .map(|g| (EXCLUDE_SETTING.into(), g.clone())),
    );
    settings.extend(
        args.include
            .iter()
            .map(|g| (INCLUDE_SETTING.into(), g.clone())),
    );
    let job = CaptureJob {
        item: item.clone(),
        source,
        settings,
        parent,
        tags: args.tags.clone(),
    };
    let bar = Bar::new(&ctx.output, "backing up");
    let outcome = runtime
        .capture(&plugin, &vault, &job, &bar)
        .with_context(|| format!("backup of '{item}' failed"))?;
    bar.finish();

    let point = &outcome.record;
    for warning in &point.warnings {
        ctx.output.warn(warning);
    }
    if point.partial {
        ctx.output.warn(&format!(
            "recovery point {} is partial: some of the source could not be read",
            outcome.point.short()
        ));
    }
    let stats = &point.stats;
    if ctx.output.json() {
        ctx.output.print_json(&BackupSummary {
            point: outcome.point,
            item,
            parent: point.parent,
            bytes_read: stats.bytes_read,
            bytes_new: stats.bytes_new,
            bytes_stored: stats.bytes_stored,
            bytes_carried: stats.bytes_carried,
            entries: stats.entries,
            partial: point.partial,
            warnings: point.warnings.clone(),
            duration_ms: millis(outcome.duration),
        })?;
        return Ok(());
    }
    ctx.output.note(&format!(
        "{}, {} read, {} carried from the parent, {} new, {} stored, in {}",
        output::count(stats.entries, "entry", "entries"),
        output::bytes(stats.bytes_read),
        output::bytes(stats.bytes_carried),
        output::bytes(stats.bytes_new),
        output::bytes(stats.bytes_stored),
        output::seconds(outcome.duration),
    ));
    ctx.output.line(&outcome.point.to_hex())?;
    Ok(())
}

/// The newest point of `item` made by `plugin`: a point of another plugin has entries
/// this one would not understand, so it cannot serve as a parent.
fn parent_point(vault: &Vault, item: &str, plugin: &str) -> Result<Option<PointId>> {
    Ok(vault
        .points()?
        .into_iter()
        .rev()
        .find(|(_, p)| p.item == item && p.plugin.name == plugin)
        .map(|(id, _)| id))
}
