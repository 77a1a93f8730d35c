//! `tessera-bench`: throughput figures of tessera's vault engine, set against single-core
//! SHA-256 so they read the same on any machine.
//!
//! `tessera-bench vault` hashes a yardstick, then backs up incompressible data, text, the
//! same data again (deduplicated) and with fixed-size chunks into throwaway encrypted
//! vaults on disk, restores it, and opens a vault whose index lists a million chunks.
//! Every input is generated in memory before its clock starts.
//!
//! `tessera-bench compare` backs a directory tree up with the `tessera` command line and
//! with restic, backs it up again unchanged, restores it, and sets time, repository size
//! and peak memory of the two side by side (see [`compare`]).
//!
//! `tessera-bench vmdisk` serves a qcow2 disk with `qemu-nbd` and backs it up with
//! tessera's vm-disk plugin, in full and then incrementally through a dirty bitmap after
//! 1 % of the blocks holding data, then of all its blocks, changed (see [`vmdisk`]).

// The allocator tessera's binaries use: it keeps freed chunk buffers for reuse instead
// of handing them back to the kernel, so a backup does not page-fault on every chunk.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod compare;
mod data;
mod measure;
mod nbd_floor;
mod phases;
mod report;
mod tree;
mod vmdisk;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use tessera_vault::Chunking;

use crate::compare::CompareArgs;
use crate::report::Report;
use crate::vmdisk::VmdiskArgs;

const USAGE: &str = "\
usage: tessera-bench vault [--size-mib N] [--dir DIR] [--json]
       tessera-bench compare [--tree DIR] [--dir DIR] [--tessera PATH] [--restic PATH] [--json]
       tessera-bench vmdisk [--dir DIR] [--tessera PATH] [--data-mib N] [--disk-gib N] [--runs N] [--json]

vault: measures tessera's vault engine: SHA-256 yardstick, ingest (incompressible,
text, deduplicated, fixed chunks), restore, and opening a vault of a million chunks.

  --size-mib N   size of each generated data set in MiB (default 1024)
  --dir DIR      where to create the throwaway vaults (default: $TMPDIR, else /var/tmp)
  --json         print a JSON object instead of the table

compare: backs a directory tree up with tessera and with restic, backs it up again
unchanged and restores it, then compares times, repository sizes and peak memory.

  --tree DIR     the tree to back up (default /usr/share)
  --dir DIR      where to create the throwaway repositories and restores
                 (default: $TMPDIR, else /var/tmp)
  --restore-dir DIR
                 restore into DIR instead, for example a freshly made file system
  --tessera PATH the tessera executable (default: `tessera` next to this program;
                 build it with `cargo build --release -p tessera-cli`)
  --restic PATH  the restic executable (default: `restic` on PATH; Debian and
                 Ubuntu: `apt-get install restic`)
  --settle SECS  pause before each restore, after syncing, so ext4's slowness next to
                 just-deleted inodes does not fall on one tool (default 65)
  --json         print a JSON object instead of the table

vmdisk: serves a qcow2 disk with qemu-nbd and backs it up with tessera's vm-disk plugin,
in full and then incrementally through a dirty bitmap, twice: after 1 % of the blocks
holding data changed, and after 1 % of all its blocks changed. A native NBD client then
makes the same reads, storing nothing: what the server alone needs.
Needs qemu-img, qemu-io and qemu-nbd on PATH (Debian and Ubuntu: `apt-get install
qemu-utils`).

  --dir DIR      where to create the throwaway disk and vault
                 (default: $TMPDIR, else /var/tmp)
  --tessera PATH the tessera executable (default: `tessera` next to this program;
                 build it with `cargo build --release -p tessera-cli`)
  --data-mib N   incompressible data written to the disk in 8 runs spread over it,
                 in MiB (default 1024)
  --disk-gib N   virtual size of the disk in GiB (default 4)
  --runs N       time each backup N times, each from the same state of its vault, and
                 report the medians (default 1)
  --json         print a JSON object instead of the table

  -h, --help     print this help";

/// Default size of each data set, in MiB.
const DEFAULT_SIZE_MIB: u64 = 1024;

/// Seeds of the generated data: fixed so every run backs up the same bytes.
const RANDOM_SEED: u64 = 0x7E55_E7A0_0000_0001;
const TEXT_SEED: u64 = 0x7E55_E7A0_0000_0002;
const INDEX_SEED: u64 = 0x7E55_E7A0_0000_0003;

/// Fixed chunk size of the block-device style ingest.
const FIXED_CHUNK_SIZE: u32 = 64 << 10;

/// A failure of the benchmark, as a one-line message naming the step that failed.
#[derive(Debug)]
pub struct Failure(String);

impl Failure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Failure(message.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// Result of a benchmark step.
pub type Result<T> = std::result::Result<T, Failure>;

/// Adds what was being done to an error.
pub trait Context<T> {
    /// Turns the error into a [`Failure`] reading "`what`: error".
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Failure(format!("{what}: {e}")))
    }
}

/// Options of `tessera-bench vault`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VaultArgs {
    size_mib: u64,
    dir: Option<PathBuf>,
    json: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Help,
    Vault(VaultArgs),
    Compare(CompareArgs),
    Vmdisk(VmdiskArgs),
    /// The measuring relay of [`measure`]: a program and its arguments.
    Relay(Vec<OsString>),
}

/// Walks the options after a command: `--flag value`, `--flag=value` and bare flags.
struct Flags<I> {
    args: I,
}

impl<I: Iterator<Item = OsString>> Flags<I> {
    /// The next option, split into its name and the value given after `=`, if any.
    fn next(&mut self) -> Option<std::result::Result<(String, Option<OsString>), String>> {
        let arg = self.args.next()?;
        let Some(text) = arg.to_str() else {
            return Some(Err(format!(
                "unexpected argument '{}'",
                arg.to_string_lossy()
            )));
        };
        Some(Ok(match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(OsString::from(value)))
            }
            _ => (text.to_string(), None),
        }))
    }

    /// The value of `flag`: the one given after `=`, else the next argument.
    fn value(
        &mut self,
        flag: &str,
        inline: Option<OsString>,
    ) -> std::result::Result<OsString, String> {
        inline
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{flag} needs a value"))
    }
}

/// Parses the arguments after the program name. Accepts `--flag value` and `--flag=value`.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> std::result::Result<Command, String> {
    let mut args = args.into_iter();
    let command = match args.next() {
        None => return Err("missing command".into()),
        Some(c) => c,
    };
    let flags = Flags { args };
    match command.to_str() {
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("vault") => parse_vault(flags),
        Some("compare") => parse_compare(flags),
        Some("vmdisk") => parse_vmdisk(flags),
        Some(measure::RELAY_COMMAND) => Ok(Command::Relay(flags.args.collect())),
        _ => Err(format!("unknown command '{}'", command.to_string_lossy())),
    }
}

fn parse_vault(
    mut flags: Flags<impl Iterator<Item = OsString>>,
) -> std::result::Result<Command, String> {
    let mut parsed = VaultArgs {
        size_mib: DEFAULT_SIZE_MIB,
        dir: None,
        json: false,
    };
    while let Some(flag) = flags.next() {
        let (flag, inline) = flag?;
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--json" if inline.is_none() => parsed.json = true,
            "--size-mib" => parsed.size_mib = positive(&flag, flags.value(&flag, inline)?)?,
            "--dir" => parsed.dir = Some(PathBuf::from(flags.value(&flag, inline)?)),
            _ => return Err(unknown_option(&flag, inline)),
        }
    }
    Ok(Command::Vault(parsed))
}

fn parse_compare(
    mut flags: Flags<impl Iterator<Item = OsString>>,
) -> std::result::Result<Command, String> {
    let mut parsed = CompareArgs::default();
    while let Some(flag) = flags.next() {
        let (flag, inline) = flag?;
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--json" if inline.is_none() => parsed.json = true,
            "--tree" => parsed.tree = PathBuf::from(flags.value(&flag, inline)?),
            "--dir" => parsed.dir = Some(PathBuf::from(flags.value(&flag, inline)?)),
            "--restore-dir" => {
                parsed.restore_dir = Some(PathBuf::from(flags.value(&flag, inline)?));
            }
            "--tessera" => parsed.tessera = Some(PathBuf::from(flags.value(&flag, inline)?)),
            "--restic" => parsed.restic = Some(PathBuf::from(flags.value(&flag, inline)?)),
            "--settle" => {
                let raw = flags.value(&flag, inline)?;
                let secs = raw.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                    format!(
                        "--settle wants a whole number of seconds, not '{}'",
                        raw.to_string_lossy()
                    )
                })?;
                parsed.settle = std::time::Duration::from_secs(secs);
            }
            _ => return Err(unknown_option(&flag, inline)),
        }
    }
    Ok(Command::Compare(parsed))
}

fn parse_vmdisk(
    mut flags: Flags<impl Iterator<Item = OsString>>,
) -> std::result::Result<Command, String> {
    let mut parsed = VmdiskArgs::default();
    while let Some(flag) = flags.next() {
        let (flag, inline) = flag?;
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--json" if inline.is_none() => parsed.json = true,
            "--dir" => parsed.dir = Some(PathBuf::from(flags.value(&flag, inline)?)),
            "--tessera" => parsed.tessera = Some(PathBuf::from(flags.value(&flag, inline)?)),
            "--data-mib" => parsed.data_mib = positive(&flag, flags.value(&flag, inline)?)?,
            "--disk-gib" => parsed.disk_gib = positive(&flag, flags.value(&flag, inline)?)?,
            "--runs" => parsed.runs = positive(&flag, flags.value(&flag, inline)?)?,
            _ => return Err(unknown_option(&flag, inline)),
        }
    }
    vmdisk::DiskLayout::new(parsed.disk_gib, parsed.data_mib)?;
    Ok(Command::Vmdisk(parsed))
}

/// The value of `flag` as a positive whole number.
fn positive(flag: &str, raw: OsString) -> std::result::Result<u64, String> {
    raw.to_str()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &u64| n > 0)
        .ok_or_else(|| {
            format!(
                "{flag} wants a positive whole number, not '{}'",
                raw.to_string_lossy()
            )
        })
}

fn unknown_option(flag: &str, inline: Option<OsString>) -> String {
    match inline {
        Some(value) => format!("unknown option '{flag}={}'", value.to_string_lossy()),
        None => format!("unknown option '{flag}'"),
    }
}

/// `$TMPDIR` if set, else `/var/tmp`: `/tmp` is often a RAM file system, where fsync
/// costs nothing and ingest figures would flatter the engine.
fn default_dir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

fn progress(what: &str) {
    eprintln!("tessera-bench: {what}");
}

/// Deletes a vault as soon as its phases are over, so at most two data sets' worth of
/// vaults sit on disk at once.
fn remove_vault(root: &Path) -> Result<()> {
    std::fs::remove_dir_all(root).context(format!("cannot remove {}", root.display()))
}

/// Runs every measurement of `tessera-bench vault`.
fn run_vault(args: &VaultArgs) -> Result<Report> {
    let size = args
        .size_mib
        .checked_mul(1 << 20)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Failure::new(format!("--size-mib {} is too large", args.size_mib)))?;
    let base = args.dir.clone().unwrap_or_else(default_dir);
    // A fresh directory inside the chosen one: whatever else lives there is never touched,
    // and dropping it removes every vault even when a step fails.
    let workdir = tempfile::Builder::new()
        .prefix("tessera-bench-")
        .tempdir_in(&base)
        .context(format!(
            "cannot create a work directory in {}",
            base.display()
        ))?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    progress(&format!("generating {} MiB of random data", args.size_mib));
    let random = data::random_bytes(size, RANDOM_SEED)?;
    progress("hashing with SHA-256 on one core");
    let sha256 = phases::sha256(&random)?;
    let sha256_pairs = phases::sha256_pairs(&random)?;

    let cdc_root = workdir.path().join("cdc");
    let vault = phases::create_vault(&cdc_root)?;
    let cdc = Chunking::ContentDefined(vault.config().chunker);
    progress("ingesting random data (content-defined chunks)");
    let ingest_random = phases::ingest(&vault, &random, cdc)?;
    progress("ingesting the same data again (deduplicated)");
    let dedup = phases::ingest(&vault, &random, cdc)?;
    progress("restoring the random data, packs from storage");
    phases::drop_from_page_cache(&cdc_root)?;
    let restore_storage = phases::restore(&vault, &ingest_random.point, &random)?;
    progress("restoring the random data again, packs in the page cache");
    let restore = phases::restore(&vault, &ingest_random.point, &random)?;
    drop(vault);
    remove_vault(&cdc_root)?;

    let fixed_root = workdir.path().join("fixed");
    let vault = phases::create_vault(&fixed_root)?;
    progress("ingesting random data (fixed 64 KiB chunks)");
    let ingest_fixed = phases::ingest(
        &vault,
        &random,
        Chunking::Fixed {
            size: FIXED_CHUNK_SIZE,
        },
    )?;
    drop(vault);
    remove_vault(&fixed_root)?;
    progress("writing the random data to storage as pack files");
    let storage = phases::storage_write(&workdir.path().join("storage"), &random, cpus)?;
    drop(random);

    progress(&format!("generating {} MiB of text", args.size_mib));
    let text = data::english_text(size, TEXT_SEED)?;
    let text_root = workdir.path().join("text");
    let vault = phases::create_vault(&text_root)?;
    progress("ingesting text (content-defined chunks)");
    let ingest_text = phases::ingest(
        &vault,
        &text,
        Chunking::ContentDefined(vault.config().chunker),
    )?;
    drop(vault);
    drop(text);
    remove_vault(&text_root)?;

    progress(&format!(
        "opening a vault of {} chunks",
        phases::INDEX_CHUNKS
    ));
    let index = phases::index_open(&workdir.path().join("index"), INDEX_SEED)?;

    workdir
        .close()
        .context("cannot remove the work directory")?;
    Ok(Report {
        size: size as u64,
        cpus,
        dir: base,
        sha256,
        sha256_pairs,
        ingest_random,
        ingest_text,
        dedup,
        restore_storage,
        restore,
        ingest_fixed,
        index,
        storage,
    })
}

/// Prints a report as JSON or as its table.
fn print_report(
    json: bool,
    value: impl FnOnce() -> Value,
    table: impl FnOnce() -> String,
) -> ExitCode {
    if !json {
        print!("{}", table());
        return ExitCode::SUCCESS;
    }
    match serde_json::to_string_pretty(&value()) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tessera-bench: cannot format the report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Relay(args)) => return measure::relay_main(args),
        Ok(command) => command,
        Err(message) => {
            eprintln!("tessera-bench: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = match &command {
        Command::Vault(args) => run_vault(args)
            .map(|report| print_report(args.json, || report.json(), || report.table())),
        Command::Compare(args) => compare::run_compare(args)
            .map(|comparison| print_report(args.json, || comparison.json(), || comparison.table())),
        Command::Vmdisk(args) => vmdisk::run_vmdisk(args)
            .map(|report| print_report(args.json, || report.json(), || report.table())),
        Command::Help | Command::Relay(_) => unreachable!("handled above"),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("tessera-bench: {e}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Command, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_and_flags() {
        assert_eq!(
            parse(&["vault"]),
            Ok(Command::Vault(VaultArgs {
                size_mib: DEFAULT_SIZE_MIB,
                dir: None,
                json: false
            }))
        );
        assert_eq!(
            parse(&["vault", "--size-mib", "8", "--dir=/x", "--json"]),
            Ok(Command::Vault(VaultArgs {
                size_mib: 8,
                dir: Some("/x".into()),
                json: true
            }))
        );
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["vault", "-h"]), Ok(Command::Help));
        assert_eq!(parse(&["compare", "--help"]), Ok(Command::Help));
    }

    #[test]
    fn compare_defaults_and_flags() {
        assert_eq!(
            parse(&["compare"]),
            Ok(Command::Compare(CompareArgs {
                tree: PathBuf::from("/usr/share"),
                dir: None,
                restore_dir: None,
                tessera: None,
                restic: None,
                json: false,
                settle: compare::SETTLE,
            }))
        );
        assert_eq!(
            parse(&[
                "compare",
                "--tree=/srv/files",
                "--dir",
                "/scratch",
                "--restore-dir=/mnt/fresh",
                "--tessera",
                "/opt/tessera",
                "--restic=/opt/restic",
                "--settle",
                "0",
                "--json",
            ]),
            Ok(Command::Compare(CompareArgs {
                tree: PathBuf::from("/srv/files"),
                dir: Some("/scratch".into()),
                restore_dir: Some("/mnt/fresh".into()),
                tessera: Some("/opt/tessera".into()),
                restic: Some("/opt/restic".into()),
                json: true,
                settle: std::time::Duration::ZERO,
            }))
        );
    }

    #[test]
    fn vmdisk_defaults_and_flags() {
        assert_eq!(
            parse(&["vmdisk"]),
            Ok(Command::Vmdisk(VmdiskArgs {
                dir: None,
                tessera: None,
                data_mib: 1024,
                disk_gib: 4,
                runs: 1,
                json: false,
            }))
        );
        assert_eq!(
            parse(&[
                "vmdisk",
                "--dir=/scratch",
                "--tessera",
                "/opt/tessera",
                "--data-mib",
                "256",
                "--disk-gib=1",
                "--runs",
                "5",
                "--json",
            ]),
            Ok(Command::Vmdisk(VmdiskArgs {
                dir: Some("/scratch".into()),
                tessera: Some("/opt/tessera".into()),
                data_mib: 256,
                disk_gib: 1,
                runs: 5,
                json: true,
            }))
        );
        assert_eq!(parse(&["vmdisk", "--help"]), Ok(Command::Help));
        assert!(parse(&["vmdisk", "--data-mib", "0"]).is_err());
        assert!(parse(&["vmdisk", "--runs", "0"]).is_err());
        assert!(parse(&["vmdisk", "--disk-gib", "-1"]).is_err());
        assert!(parse(&["vmdisk", "--data-mib"]).is_err());
        assert!(parse(&["vmdisk", "--size-mib", "8"]).is_err());
        assert_eq!(
            parse(&["vmdisk", "--disk-gib", "1", "--data-mib", "2048"]),
            Err("--data-mib 2048 does not fit on a disk of --disk-gib 1".into())
        );
    }

    #[test]
    fn the_relay_takes_everything_verbatim() {
        assert_eq!(
            parse(&["__measure", "restic", "--json", "backup", "-h"]),
            Ok(Command::Relay(
                ["restic", "--json", "backup", "-h"]
                    .map(OsString::from)
                    .into()
            ))
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["disk"]).is_err());
        assert!(parse(&["vault", "--size-mib"]).is_err());
        assert!(parse(&["vault", "--size-mib", "0"]).is_err());
        assert!(parse(&["vault", "--size-mib", "lots"]).is_err());
        assert!(parse(&["vault", "--json=yes"]).is_err());
        assert!(parse(&["vault", "--verbose"]).is_err());
        assert!(parse(&["vault", "--tree", "/x"]).is_err());
        assert!(parse(&["compare", "--tree"]).is_err());
        assert!(parse(&["compare", "--size-mib", "8"]).is_err());
        assert_eq!(
            parse(&["compare", "--json=yes"]),
            Err("unknown option '--json=yes'".into())
        );
    }
}
