//! `tessera backup`: capturing a protected item into a new recovery point.
//!
//! The plugin does the reading; this verb picks the item's name and its parent point
//! (the newest point of the same item by the same plugin, so an unchanged file is carried
//! forward instead of read again), and passes excludes and includes on as settings.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use serde::Serialize;
use std::io::Read as _;

use tessera_runtime::{CaptureJob, CaptureOutcome, CaptureSource, Hooks};
use tessera_vault::{
    Backup, BackupOptions, Chunking, CommitOptions, Consistency, Entry, EntryKind, PluginRef,
    PointId, Vault,
};

use crate::cli::parse_setting;
use crate::context::Context;
use crate::output::{self, millis};
use crate::progress::{self, Bar};

/// The plugin used when `--plugin` is not given.
pub const DEFAULT_PLUGIN: &str = "file-share";

/// The setting that carries `--exclude` patterns to the plugin.
pub(crate) const EXCLUDE_SETTING: &str = "exclude";
/// The setting that carries `--include` patterns to the plugin.
pub(crate) const INCLUDE_SETTING: &str = "include";

/// Parses a size for clap: a number of bytes with an optional binary unit.
fn parse_size(text: &str) -> Result<u64, String> {
    tessera_vault::size::parse_size(text).map_err(|why| format!("'{text}': {why}"))
}

/// The setting that carries `--bitmap` to the plugin.
const BITMAP_SETTING: &str = "bitmap";
/// The setting that carries `--config` to the plugin.
const CONFIG_SETTING: &str = "config";

/// Flags of `tessera backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// What to back up: directories or files for file-share (one directory is stored as
    /// the point's root; several sources each under its name); disk images, block devices
    /// (or nbd://HOST:PORT/EXPORT addresses of live disks) for vm-disk, stored as disk0,
    /// disk1, ... in this order
    #[arg(required_unless_present = "stdin", value_name = "PATH|URL")]
    pub paths: Vec<String>,
    /// Back up what is read from standard input as one file (a database dump piped in),
    /// named by --stdin-filename
    #[arg(long, conflicts_with_all = [
        "paths", "stdin_from_command", "pre_hook", "post_hook", "bitmap", "config", "grants",
    ])]
    pub stdin: bool,
    /// Run the command given in place of paths (after `--`) and back up its standard
    /// output as one file; if the command fails, no point is made
    #[arg(long, requires = "paths", conflicts_with_all = [
        "pre_hook", "post_hook", "bitmap", "config", "grants",
    ])]
    pub stdin_from_command: bool,
    /// The name of the file --stdin or --stdin-from-command stores [default: stdin]
    #[arg(long, value_name = "NAME")]
    pub stdin_filename: Option<String>,
    /// The plugin: a builtin's name or a component file
    #[arg(long, value_name = "NAME|FILE.wasm", default_value = DEFAULT_PLUGIN)]
    pub plugin: String,
    /// The protected item's name [default: the absolute path; with several, the paths
    /// joined by ", "]
    #[arg(long, value_name = "NAME")]
    pub item: Option<String>,
    /// Leave out paths matching this pattern (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Back up only paths matching this pattern (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out paths matching the patterns in this file, one per line; blank lines and
    /// lines starting with # are skipped (repeatable)
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Back up only paths matching the patterns in this file, one per line (repeatable)
    #[arg(long, value_name = "FILE")]
    pub include_file: Vec<PathBuf>,
    /// Leave out directories holding an entry of this name, such as .nobackup (repeatable)
    #[arg(long, value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Leave out directories tagged as caches (a CACHEDIR.TAG with its signature)
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out files larger than this (4096, 500M, 2G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Do not descend into other file systems mounted below the source
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// A tag for the recovery point (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// A plugin setting (repeatable; see `tessera plugin inspect`)
    #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
    /// Read only the blocks this QEMU dirty bitmap marks as changed since the previous
    /// point (live disks over NBD)
    #[arg(long, value_name = "NAME")]
    pub bitmap: Option<String>,
    /// A configuration document to store with the disks (a libvirt XML, a JSON file)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also grant the plugin read access to this directory (where backing files of a
    /// disk image live; repeatable)
    #[arg(long = "grant", value_name = "DIR")]
    pub grants: Vec<PathBuf>,
    /// A shell command run before the capture (a guest file-system freeze); the point is
    /// application-consistent only if it succeeds
    #[arg(long, value_name = "COMMAND")]
    pub pre_hook: Option<String>,
    /// A shell command run after the capture, whatever happened (a thaw)
    #[arg(long, value_name = "COMMAND")]
    pub post_hook: Option<String>,
    /// Seconds each hook may run before it is killed
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub hook_timeout: u64,
    /// zstd level of this backup's new chunks, 1 (fastest) to 22 (smallest), or 0 to store
    /// them uncompressed [default: the vault's, set by `vault init --compression`]
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(0..=22))]
    pub compression: Option<i32>,
    /// Read, chunk and encode everything as a backup would, and say what it would store,
    /// writing nothing to the vault (hooks do not run)
    #[arg(long)]
    pub dry_run: bool,
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct BackupSummary {
    /// The new point, or none after a dry run.
    point: Option<PointId>,
    dry_run: bool,
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

/// What a command-line source names: an address, a directory or a file (an image, or a
/// block device, which the runtime grants alone).
fn source(given: &str) -> Result<CaptureSource> {
    if given.contains("://") {
        return Ok(CaptureSource::Address(given.to_string()));
    }
    let path = PathBuf::from(given)
        .canonicalize()
        .with_context(|| format!("cannot back up {given}"))?;
    Ok(if path.is_dir() {
        CaptureSource::Directory(path)
    } else {
        CaptureSource::File(path)
    })
}

/// How a source names the item by default: an address as given, a path absolute.
fn source_name(source: &CaptureSource, given: &str) -> Result<String> {
    let path = match source {
        CaptureSource::Address(url) => return Ok(url.clone()),
        CaptureSource::Directory(path) | CaptureSource::File(path) => path,
    };
    // A device's own name (dm-3, loop0) may be another disk's after a reboot; the
    // operator's link to it (/dev/vg0/lv0) is not.
    let named = if is_block_device(path) {
        std::path::absolute(given).with_context(|| format!("cannot back up {given}"))?
    } else {
        path.clone()
    };
    named.to_str().map(str::to_string).ok_or_else(|| {
        anyhow!(
            "the path {} is not valid UTF-8: name the item with --item",
            named.display()
        )
    })
}

/// The patterns of a pattern file: one per line, without blank lines and `#` comments
/// (a pattern starting with `#` is written `\#`, the glob's escape); surrounding spaces
/// are dropped.
pub(crate) fn patterns_in(file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the pattern file {}", file.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Whether `path` is (or links to) a block device.
fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Backs up `args.paths` (or standard input) and prints the new point's id.
pub fn run(ctx: &Context, args: &BackupArgs) -> Result<()> {
    if args.stdin || args.stdin_from_command {
        return run_stdin(ctx, args);
    }
    if args.stdin_filename.is_some() {
        bail!("--stdin-filename names what --stdin or --stdin-from-command stores");
    }
    let sources = args
        .paths
        .iter()
        .map(|given| source(given))
        .collect::<Result<Vec<_>>>()?;
    let item = match &args.item {
        Some(item) => item.clone(),
        None => sources
            .iter()
            .zip(&args.paths)
            .map(|(source, given)| source_name(source, given))
            .try_fold(Vec::new(), |mut names, name| {
                let name = name?;
                if !names.contains(&name) {
                    names.push(name);
                }
                Ok::<_, anyhow::Error>(names)
            })?
            .join(", "),
    };
    let grants = args
        .grants
        .iter()
        .map(|dir| {
            dir.canonicalize()
                .with_context(|| format!("cannot grant {}", dir.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut file_settings = Vec::new();
    if let Some(config) = &args.config {
        let config = config
            .canonicalize()
            .with_context(|| format!("cannot read the configuration {}", config.display()))?;
        file_settings.push((CONFIG_SETTING.to_string(), config));
    }
    // A dry run stores nothing, so there is nothing to make consistent.
    let hooks =
        (!args.dry_run && (args.pre_hook.is_some() || args.post_hook.is_some())).then(|| Hooks {
            pre: args.pre_hook.clone(),
            post: args.post_hook.clone(),
            timeout: Duration::from_secs(args.hook_timeout),
        });
    let vault = open_vault(ctx, args.dry_run)?;
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
    for (files, setting) in [
        (&args.exclude_file, EXCLUDE_SETTING),
        (&args.include_file, INCLUDE_SETTING),
    ] {
        for file in files {
            settings.extend(
                patterns_in(file)?
                    .into_iter()
                    .map(|glob| (setting.to_string(), glob)),
            );
        }
    }
    if let Some(bitmap) = &args.bitmap {
        settings.push((BITMAP_SETTING.into(), bitmap.clone()));
    }
    settings.extend(
        args.exclude_if_present
            .iter()
            .map(|name| ("exclude-if-present".to_string(), name.clone())),
    );
    if args.exclude_caches {
        settings.push(("exclude-caches".into(), "true".into()));
    }
    if let Some(size) = args.exclude_larger_than {
        settings.push(("exclude-larger-than".into(), size.to_string()));
    }
    if args.one_file_system {
        settings.push(("one-file-system".into(), "true".into()));
    }
    let job = CaptureJob {
        item: item.clone(),
        sources,
        grants,
        settings,
        file_settings,
        parent,
        tags: args.tags.clone(),
        hooks,
        compression_level: args.compression,
    };
    let bar = Bar::new(&ctx.output, "backing up");
    let outcome = runtime
        .capture(&plugin, &vault, &job, &bar)
        .with_context(|| format!("backup of '{item}' failed"))?;
    bar.finish();

    report(ctx, args, item, &outcome)
}

/// Backs up standard input, or a command's standard output, as the one file of a point,
/// as the file-share plugin would have stored a file of that name: the host reads the
/// bytes itself, so no plugin runs.
fn run_stdin(ctx: &Context, args: &BackupArgs) -> Result<()> {
    let name = args.stdin_filename.as_deref().unwrap_or(STDIN_NAME);
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("--stdin-filename must be a file name without '/', not '{name}'");
    }
    if args.plugin != DEFAULT_PLUGIN {
        bail!(
            "--stdin stores a file as the {DEFAULT_PLUGIN} plugin does; --plugin cannot be given with it"
        );
    }
    let item = args
        .item
        .clone()
        .unwrap_or_else(|| format!("{STDIN_NAME}:{name}"));
    let vault = open_vault(ctx, args.dry_run)?;
    let runtime = ctx.runtime()?;
    let plugin = runtime
        .load(DEFAULT_PLUGIN)
        .with_context(|| format!("cannot load the plugin '{DEFAULT_PLUGIN}'"))?;
    let info = plugin.info();
    let mut options = BackupOptions::new(
        item.clone(),
        PluginRef {
            name: info.name.clone(),
            version: info.version.clone(),
        },
    );
    options.parent = parent_point(&vault, &item, &info.name)?;
    options.tags = args.tags.clone();
    options.host = tessera_runtime::hostname();
    options.compression_level = args.compression;
    let started = std::time::Instant::now();
    let bar = Bar::new(&ctx.output, "backing up standard input");
    let mut backup = Backup::start(&vault, options)?;
    let mut stream = backup.stream(Chunking::ContentDefined(vault.config().chunker))?;
    let (mut input, mut child): (Box<dyn std::io::Read>, _) = if args.stdin_from_command {
        let mut child = std::process::Command::new(&args.paths[0])
            .args(&args.paths[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", args.paths[0]))?;
        let stdout = child.stdout.take().expect("piped");
        (Box::new(stdout), Some(child))
    } else {
        (Box::new(std::io::stdin().lock()), None)
    };
    let mut buf = vec![0u8; STDIN_READ];
    let mut size = 0u64;
    loop {
        let read = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The stream is dropped unfinished and the backup aborted: no point.
            Err(e) => return Err(e).context("cannot read the input"),
        };
        if progress::cancelled() {
            bail!("interrupted: no recovery point was made");
        }
        stream.write(&buf[..read])?;
        size += read as u64;
        tessera_runtime::Progress::update(&bar, size, 0, 0, 0);
    }
    let content = stream.finish()?.content;
    // A dump cut short by a failing command is not a backup.
    if let Some(child) = &mut child {
        let status = child.wait().context("cannot wait for the command")?;
        if !status.success() {
            bail!(
                "{} failed ({status}) after writing {size} bytes: no recovery point was made",
                args.paths[0]
            );
        }
    }
    let now = jiff::Timestamp::now().as_nanosecond();
    let mut entry = Entry::new(name, EntryKind::File);
    entry.meta.size = size;
    entry.meta.mode = Some(0o100644);
    entry.meta.uid = Some(rustix::process::getuid().as_raw());
    entry.meta.gid = Some(rustix::process::getgid().as_raw());
    entry.meta.mtime_ns = i64::try_from(now).ok();
    entry.content = content;
    backup.add_entry(name, entry)?;
    let commit = CommitOptions {
        consistency: Consistency::Crash,
        consistency_reason: Some("read from standard input as it was written".into()),
        ..CommitOptions::default()
    };
    let (point, record) = backup.commit(commit)?;
    bar.finish();
    let outcome = CaptureOutcome {
        point,
        record,
        duration: started.elapsed(),
    };
    report(ctx, args, item, &outcome)
}

/// The file name `--stdin` stores when not told one, and the prefix of its item's name.
const STDIN_NAME: &str = "stdin";
/// Bytes read from standard input at a time.
const STDIN_READ: usize = 1 << 20;

/// Prints what a backup made.
fn report(ctx: &Context, args: &BackupArgs, item: String, outcome: &CaptureOutcome) -> Result<()> {
    let point = &outcome.record;
    for warning in &point.warnings {
        ctx.output.warn(warning);
    }
    if point.partial && !args.dry_run {
        ctx.output.warn(&format!(
            "recovery point {} is partial: some of the source could not be read",
            outcome.point.short()
        ));
    }
    let stats = &point.stats;
    if ctx.output.json() {
        ctx.output.print_json(&BackupSummary {
            point: (!args.dry_run).then_some(outcome.point),
            dry_run: args.dry_run,
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
    let figures = format!(
        "{}, {} read, {} carried from the parent, {} new, {} stored",
        output::count(stats.entries, "entry", "entries"),
        output::bytes(stats.bytes_read),
        output::bytes(stats.bytes_carried),
        output::bytes(stats.bytes_new),
        output::bytes(stats.bytes_stored),
    );
    if args.dry_run {
        // The result of a dry run is this line, so it goes to standard output.
        let partial = if point.partial {
            " (partial: some of the source could not be read)"
        } else {
            ""
        };
        ctx.output.line(&format!(
            "dry run: would store a point of {figures}{partial}; nothing was written"
        ))?;
        return Ok(());
    }
    ctx.output.note(&format!(
        "{figures}, in {}",
        output::seconds(outcome.duration)
    ));
    ctx.output.line(&outcome.point.to_hex())?;
    Ok(())
}

/// The vault a backup writes to: for a dry run, one that writes nowhere (and is never
/// created).
fn open_vault(ctx: &Context, dry_run: bool) -> Result<Vault> {
    if dry_run {
        ctx.open_vault_dry_run()
    } else {
        ctx.open_or_create_vault()
    }
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
