//! `tessera-bench`: throughput figures of tessera's vault engine, set against single-core
//! SHA-256 so they read the same on any machine.
//!
//! `tessera-bench vault` hashes a yardstick, then backs up incompressible data, text, the
//! same data again (deduplicated) and with fixed-size chunks into throwaway encrypted
//! vaults on disk, restores it, and opens a vault whose index lists a million chunks.
//! Every input is generated in memory before its clock starts.

// The allocator tessera's binaries use: it keeps freed chunk buffers for reuse instead
// of handing them back to the kernel, so a backup does not page-fault on every chunk.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod data;
mod phases;
mod report;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tessera_vault::Chunking;

use crate::report::Report;

const USAGE: &str = "\
usage: tessera-bench vault [--size-mib N] [--dir DIR] [--json]

Measures tessera's vault engine: SHA-256 yardstick, ingest (incompressible, text,
deduplicated, fixed chunks), restore, and opening a vault of a million chunks.

options:
  --size-mib N   size of each generated data set in MiB (default 1024)
  --dir DIR      where to create the throwaway vaults (default: $TMPDIR, else /var/tmp)
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
}

/// Parses the arguments after the program name. Accepts `--flag value` and `--flag=value`.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> std::result::Result<Command, String> {
    let mut args = args.into_iter();
    let command = match args.next() {
        None => return Err("missing command".into()),
        Some(c) => c,
    };
    match command.to_str() {
        Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("vault") => {}
        _ => return Err(format!("unknown command '{}'", command.to_string_lossy())),
    }
    let mut parsed = VaultArgs {
        size_mib: DEFAULT_SIZE_MIB,
        dir: None,
        json: false,
    };
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            return Err(format!("unexpected argument '{}'", arg.to_string_lossy()));
        };
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(OsString::from(value))),
            _ => (text, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "--json" if inline.is_none() => parsed.json = true,
            "--size-mib" => {
                let raw = value("--size-mib")?;
                parsed.size_mib = raw
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|&n: &u64| n > 0)
                    .ok_or_else(|| {
                        format!(
                            "--size-mib wants a positive whole number, not '{}'",
                            raw.to_string_lossy()
                        )
                    })?;
            }
            "--dir" => parsed.dir = Some(PathBuf::from(value("--dir")?)),
            _ => return Err(format!("unknown option '{text}'")),
        }
    }
    Ok(Command::Vault(parsed))
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

    let cdc_root = workdir.path().join("cdc");
    let vault = phases::create_vault(&cdc_root)?;
    let cdc = Chunking::ContentDefined(vault.config().chunker);
    progress("ingesting random data (content-defined chunks)");
    let ingest_random = phases::ingest(&vault, &random, cdc)?;
    progress("ingesting the same data again (deduplicated)");
    let dedup = phases::ingest(&vault, &random, cdc)?;
    progress("restoring the random data");
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
        ingest_random,
        ingest_text,
        dedup,
        restore,
        ingest_fixed,
        index,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Vault(args)) => args,
        Err(message) => {
            eprintln!("tessera-bench: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run_vault(&args) {
        Ok(report) if args.json => match serde_json::to_string_pretty(&report.json()) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tessera-bench: cannot format the report: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(report) => {
            print!("{}", report.table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tessera-bench: {e}");
            ExitCode::FAILURE
        }
    }
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
    }
}
