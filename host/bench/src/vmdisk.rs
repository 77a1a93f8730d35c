//! `tessera-bench vmdisk`: a virtual machine's disk backed up with the `tessera` command
//! line: in full from its image file, as a stopped VM's; and over NBD, in full and then
//! incrementally through a dirty bitmap, as a running VM's.
//!
//! A throwaway qcow2 disk (4 GiB by default) gets incompressible data in a few large runs
//! spread across it (1 GiB by default), the rest left unallocated, and an empty persistent
//! dirty bitmap. `tessera backup --plugin vm-disk IMAGE` backs the image file up into a
//! vault of its own, which should read the data and skip the holes. Then `qemu-nbd`
//! serves the image read-only with the bitmap, as a hypervisor exports a running guest's
//! disk for backup, and `tessera backup --plugin vm-disk --bitmap` takes a full backup
//! into another vault. Then two incremental backups follow, each after `qemu-io`
//! overwrote 1 % of the blocks with new incompressible data, which the enabled bitmap
//! records: first 1 % of the 64 KiB blocks that hold data (a guest rewriting some of its
//! files), then, with the bitmap cleared as a hypervisor clears it after a backup, 1 % of
//! all the disk's blocks, drawn in the data and in the holes alike (a guest also writing
//! where nothing was). Each incremental should read only the blocks changed.
//!
//! Each backup is one `tessera` process, timed on the wall clock from its start to its
//! exit, so opening the vault counts; the backups open it with a key file, as a scheduled
//! job does. Untimed: preparing and changing the image, starting `qemu-nbd`, creating the
//! vault and its key file, and `tessera plugin inspect vm-disk`, which compiles the plugin
//! into tessera's cache as the first use after an install does. The figures are set
//! against single-core SHA-256, measured as `tessera-bench vault` does, and against each
//! other, and against the NBD server alone: a native client (the plugin's NBD library)
//! making the reads each backup over NBD makes, storing nothing ([`crate::nbd_floor`]).
//!
//! It also prints what this machine allows. `qemu-nbd` shares the cores with `tessera`, so a
//! full backup over NBD cannot take less than the CPU time the server spent serving it plus
//! the CPU time `tessera` spent storing the same bytes from the image file, spread over
//! every core. An incremental cannot take much less than one with nothing changed (the
//! bitmap cleared: starting, opening the vault, asking for the bitmap, committing) plus the
//! server alone serving its changed blocks.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::compare::{self, Tool};
use crate::data::{self, SplitMix64};
use crate::measure;
use crate::nbd_floor::{self, Wanted};
use crate::phases::{self, Rate};
use crate::report::{Verdict, render};
use crate::{Context, Failure, Result, progress};

/// Default size of the virtual disk, in GiB.
pub const DEFAULT_DISK_GIB: u64 = 4;
/// Default amount of data written to the disk, in MiB.
pub const DEFAULT_DATA_MIB: u64 = 1024;

/// Minimum throughput of the full backup on the allocated data, as a multiple of SHA-256.
pub const FULL_TARGET: f64 = 0.8;
/// Maximum time of an incremental backup, as a percentage of the full backup's.
pub const INCREMENTAL_TARGET_PERCENT: f64 = 5.0;
/// How far the bytes a backup reads may stray from the bytes it should read (the data for
/// the full backup, the changed blocks for the incremental one) and still count as about
/// equal: room for the partition table and file-system headers the plugin may look at.
pub const READ_TOLERANCE: f64 = 0.1;

/// Runs the data is written in, spread evenly over the disk: a guest's files sit in a few
/// large extents with unallocated space between them.
const DATA_RUNS: u64 = 8;
/// Granularity of the dirty bitmap, and size of each changed block.
const BLOCK: u64 = 64 << 10;
/// Share of the disk's blocks changed between the two backups, in percent.
const CHANGED_PERCENT: u64 = 1;
/// Bytes generated and written at a time while filling the disk; also the data the
/// SHA-256 yardstick cycles through.
const WRITE_PIECE: u64 = 128 << 20;
/// Changed blocks written per `qemu-io` process: keeps its command line far below the
/// kernel's limit on the size of arguments whatever the disk's size.
const WRITES_PER_QEMU_IO: usize = 512;

/// Seeds: fixed so every run writes the same bytes at the same places.
const DATA_SEED: u64 = 0x7E55_E7A0_0000_0011;
const CHANGED_OFFSETS_SEED: u64 = 0x7E55_E7A0_0000_0012;
const CHANGED_DATA_SEED: u64 = 0x7E55_E7A0_0000_0013;
const CHANGED_IN_DATA_OFFSETS_SEED: u64 = 0x7E55_E7A0_0000_0014;

/// The password of the throwaway vault.
const PASSWORD: &str = "bench";
/// The plugin under test.
const PLUGIN: &str = "vm-disk";
/// The persistent dirty bitmap of the disk, and the export's name.
const BITMAP: &str = "b0";
const EXPORT: &str = "disk";
/// The protected item both backups go to, so the second has the first as its parent.
const ITEM: &str = "bench";

/// How long `qemu-nbd` may take to accept connections, and how often to try.
const NBD_START_TIMEOUT: Duration = Duration::from_secs(10);
const NBD_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Lines of `qemu-nbd`'s log quoted when it fails to start.
const LOG_LINES: usize = 10;

/// Bytes in a MiB.
const MIB: f64 = (1u64 << 20) as f64;

/// Options of `tessera-bench vmdisk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdiskArgs {
    /// Where to create the throwaway disk and vault.
    pub dir: Option<PathBuf>,
    /// The `tessera` executable; next to this one when not given.
    pub tessera: Option<PathBuf>,
    /// Data written to the disk, in MiB.
    pub data_mib: u64,
    /// Size of the virtual disk, in GiB.
    pub disk_gib: u64,
    /// How many times each backup is timed; the figures are the medians.
    pub runs: u64,
    /// Print JSON instead of the table.
    pub json: bool,
}

impl Default for VmdiskArgs {
    fn default() -> Self {
        VmdiskArgs {
            dir: None,
            tessera: None,
            data_mib: DEFAULT_DATA_MIB,
            disk_gib: DEFAULT_DISK_GIB,
            runs: 1,
            json: false,
        }
    }
}

/// Where the data and the changes go on the virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLayout {
    /// Virtual size of the disk.
    pub disk_bytes: u64,
    /// Bytes of data written to it.
    pub data_bytes: u64,
}

impl DiskLayout {
    /// The layout of `data_mib` MiB of data on a disk of `disk_gib` GiB, or why there is
    /// none.
    pub fn new(disk_gib: u64, data_mib: u64) -> std::result::Result<Self, String> {
        let disk_bytes = disk_gib
            .checked_mul(1 << 30)
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--disk-gib {disk_gib} is out of range"))?;
        let data_bytes = data_mib
            .checked_mul(1 << 20)
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--data-mib {data_mib} is out of range"))?;
        if data_bytes > disk_bytes {
            return Err(format!(
                "--data-mib {data_mib} does not fit on a disk of --disk-gib {disk_gib}"
            ));
        }
        Ok(DiskLayout {
            disk_bytes,
            data_bytes,
        })
    }

    /// Offset and length of each run of data: one at the start of each [`DATA_RUNS`]th
    /// of the disk. A MiB over [`DATA_RUNS`] and a GiB over it are whole 64 KiB blocks,
    /// so every run is block-aligned.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> {
        let len = self.run_bytes();
        let stride = self.disk_bytes / DATA_RUNS;
        (0..DATA_RUNS).map(move |i| (i * stride, len))
    }

    /// Bytes in each run of data.
    pub fn run_bytes(&self) -> u64 {
        self.data_bytes / DATA_RUNS
    }

    /// Blocks of the dirty bitmap's granularity on the disk.
    pub fn blocks(&self) -> u64 {
        self.disk_bytes / BLOCK
    }

    /// Offsets of [`CHANGED_PERCENT`] % of the blocks of `scope`, rounded up, distinct,
    /// in ascending order: of the disk's blocks, drawn anywhere on it (in the data and in
    /// the holes alike), or of the blocks holding data, drawn in the data runs.
    pub fn changed_blocks(&self, scope: Scope, seed: u64) -> Vec<u64> {
        let run_blocks = self.run_bytes() / BLOCK;
        let blocks = match scope {
            Scope::Disk => self.blocks(),
            Scope::Data => run_blocks * DATA_RUNS,
        };
        let count = (blocks * CHANGED_PERCENT).div_ceil(100).min(blocks);
        let mut rng = SplitMix64::new(seed);
        let mut chosen = BTreeSet::new();
        while (chosen.len() as u64) < count {
            let n = rng.below(blocks);
            chosen.insert(match scope {
                Scope::Disk => n * BLOCK,
                // The nth block holding data: block n % run_blocks of run n / run_blocks.
                Scope::Data => {
                    (n / run_blocks) * (self.disk_bytes / DATA_RUNS) + (n % run_blocks) * BLOCK
                }
            });
        }
        chosen.into_iter().collect()
    }
}

/// Which blocks an incremental backup finds changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// 1 % of the blocks that hold data.
    Data,
    /// 1 % of all the disk's blocks.
    Disk,
}

impl Scope {
    /// Short name, in the table.
    fn label(self) -> &'static str {
        match self {
            Scope::Data => "1 % of the data",
            Scope::Disk => "1 % of the disk",
        }
    }

    /// Key in the JSON report.
    fn key(self) -> &'static str {
        match self {
            Scope::Data => "data",
            Scope::Disk => "disk",
        }
    }
}

/// The figures `tessera backup --json` prints that this benchmark reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The recovery point created.
    pub point: String,
    /// Bytes the plugin read from the disk.
    pub bytes_read: u64,
    /// Bytes of chunks the vault did not hold yet, before compression.
    pub bytes_new: u64,
    /// Bytes those chunks take in the vault.
    pub bytes_stored: u64,
    /// Bytes carried forward from the parent point without being read.
    pub bytes_carried: u64,
    /// The time tessera reports for the capture, in milliseconds.
    pub duration_ms: u64,
}

impl BackupSummary {
    /// Reads the JSON object `tessera backup --json` prints on its standard output.
    pub fn parse(stdout: &[u8]) -> std::result::Result<Self, String> {
        let value: Value = serde_json::from_slice(stdout)
            .map_err(|e| format!("its output is not a JSON object: {e}"))?;
        let number = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("its JSON output has no whole number '{key}'"))
        };
        let point = value
            .get("point")
            .and_then(Value::as_str)
            .ok_or_else(|| "its JSON output has no string 'point'".to_string())?
            .to_string();
        Ok(BackupSummary {
            point,
            bytes_read: number("bytes_read")?,
            bytes_new: number("bytes_new")?,
            bytes_stored: number("bytes_stored")?,
            bytes_carried: number("bytes_carried")?,
            duration_ms: number("duration_ms")?,
        })
    }

    fn json(&self) -> Value {
        json!({
            "point": self.point,
            "bytes_read": self.bytes_read,
            "bytes_new": self.bytes_new,
            "bytes_stored": self.bytes_stored,
            "bytes_carried": self.bytes_carried,
            "duration_ms": self.duration_ms,
        })
    }
}

/// One timed backup.
#[derive(Debug, Clone)]
pub struct BackupRun {
    /// Wall-clock time from starting `tessera` to its exit.
    pub elapsed: Duration,
    /// CPU time `tessera` used, all its threads.
    pub cpu: Duration,
    /// CPU time the NBD server used meanwhile, for a backup over NBD.
    pub server_cpu: Option<Duration>,
    /// What it printed.
    pub summary: BackupSummary,
}

/// The same backup timed one or more times, each from the same state of the vault.
#[derive(Debug, Clone)]
pub struct Runs(Vec<BackupRun>);

impl Runs {
    /// The runs, in the order taken; at least one.
    pub fn new(runs: Vec<BackupRun>) -> Runs {
        assert!(!runs.is_empty(), "a backup is timed at least once");
        Runs(runs)
    }

    /// The run of median time (of two middle ones, the faster).
    pub fn median(&self) -> &BackupRun {
        let mut sorted: Vec<&BackupRun> = self.0.iter().collect();
        sorted.sort_by_key(|run| run.elapsed);
        sorted[(sorted.len() - 1) / 2]
    }

    /// Every run's time, in seconds, in the order taken.
    pub fn seconds(&self) -> Vec<f64> {
        self.0.iter().map(|run| run.elapsed.as_secs_f64()).collect()
    }

    fn describe(&self) -> String {
        describe_spread(&self.seconds())
    }
}

/// "X CPU-s (qemu-nbd Y CPU-s)": the CPU time of a backup and of the server meanwhile.
fn describe_cpu(run: &BackupRun) -> String {
    match run.server_cpu {
        Some(server) => format!(
            "{:.2} CPU-s (qemu-nbd {:.2} CPU-s)",
            run.cpu.as_secs_f64(),
            server.as_secs_f64()
        ),
        None => format!("{:.2} CPU-s", run.cpu.as_secs_f64()),
    }
}

/// "median of N, A–B s; " for times of more than one run, in seconds.
fn describe_spread(seconds: &[f64]) -> String {
    if seconds.len() < 2 {
        return String::new();
    }
    let min = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let max = seconds.iter().copied().fold(0.0, f64::max);
    format!("median of {}, {min:.3}–{max:.3} s; ", seconds.len())
}

/// The NBD server alone: a native client reading what a backup reads, storing nothing
/// ([`nbd_floor`]), timed as often as the backup.
#[derive(Debug, Clone)]
pub struct Floor {
    times: Vec<Duration>,
    /// Bytes read (the same each time).
    pub bytes: u64,
}

impl Floor {
    /// Times of the runs, in the order taken; at least one.
    pub fn new(times: Vec<Duration>, bytes: u64) -> Floor {
        assert!(!times.is_empty(), "the reads are timed at least once");
        Floor { times, bytes }
    }

    /// The median time (of two middle ones, the shorter).
    pub fn median(&self) -> Duration {
        let mut sorted = self.times.clone();
        sorted.sort();
        sorted[(sorted.len() - 1) / 2]
    }

    /// Every run's time, in seconds, in the order taken.
    pub fn seconds(&self) -> Vec<f64> {
        self.times.iter().map(Duration::as_secs_f64).collect()
    }

    fn describe(&self) -> String {
        describe_spread(&self.seconds())
    }

    fn json(&self) -> Value {
        json!({
            "seconds": self.median().as_secs_f64(),
            "runs_seconds": self.seconds(),
            "bytes_read": self.bytes,
        })
    }
}

/// Times the NBD server alone serving what a backup of `wanted` reads, `runs` times.
fn time_floor(runs: u64, server: &NbdServer, wanted: Wanted) -> Result<Floor> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs.max(1) {
        let (elapsed, read) = nbd_floor::read_export(server.port, EXPORT, BITMAP, wanted)?;
        times.push(elapsed);
        bytes = read;
    }
    Ok(Floor::new(times, bytes))
}

/// One incremental backup and the change before it.
#[derive(Debug, Clone)]
pub struct Incremental {
    /// Which blocks were changed.
    pub scope: Scope,
    /// How many.
    pub changed_blocks: u64,
    /// The backup.
    pub run: Runs,
    /// The server alone reading the changed blocks.
    pub floor: Floor,
    /// The backup of the image file itself, as of the VM stopped after the change, through
    /// the image's persistent bitmap.
    pub file: Runs,
}

impl Incremental {
    /// Bytes the backup should read: the changed blocks.
    pub fn changed_bytes(&self) -> u64 {
        self.changed_blocks * BLOCK
    }
}

/// Everything one run of `tessera-bench vmdisk` measured.
#[derive(Debug, Clone)]
pub struct VmdiskReport {
    /// Where the data and the changes went.
    pub layout: DiskLayout,
    /// The directory the throwaway disk and vault were created in.
    pub dir: PathBuf,
    /// CPUs available.
    pub cpus: usize,
    /// The `tessera` executable run.
    pub program: PathBuf,
    /// The first line it prints about its version.
    pub version: String,
    /// Single-core SHA-256, the yardstick.
    pub sha256: Rate,
    /// As much incompressible data as the disk holds, written as pack files through the
    /// local backend without the engine: the storage's own speed for new data, which a
    /// full backup needs too.
    pub storage: Rate,
    /// The full backup of the image file.
    pub image: Runs,
    /// The full backup over NBD.
    pub full: Runs,
    /// The server alone reading the data.
    pub full_floor: Floor,
    /// The incremental backups over NBD, in the order taken.
    pub incrementals: Vec<Incremental>,
    /// An incremental backup over NBD with nothing changed: what every incremental costs
    /// besides its reads.
    pub unchanged: Runs,
}

/// `measured` over `expected`, and whether that is about one.
fn read_ratio(measured: u64, expected: u64) -> (f64, Verdict) {
    let ratio = measured as f64 / expected.max(1) as f64;
    (ratio, Verdict::of((ratio - 1.0).abs() <= READ_TOLERANCE))
}

impl VmdiskReport {
    /// Throughput of a full backup on the allocated data, in MB/s (10^6 bytes).
    pub fn mb_per_s(&self, run: &BackupRun) -> f64 {
        self.layout.data_bytes as f64 / 1e6 / run.elapsed.as_secs_f64().max(1e-9)
    }

    /// A full backup's throughput as a multiple of SHA-256's.
    pub fn ratio(&self, run: &BackupRun) -> f64 {
        self.mb_per_s(run) / self.sha256.mb_per_s()
    }

    /// An incremental backup's time as a percentage of the full backup's.
    pub fn incremental_percent(&self, incremental: &Incremental) -> f64 {
        self.percent_of_full(incremental.run.median().elapsed)
    }

    /// `time` as a percentage of the full backup's over NBD.
    fn percent_of_full(&self, time: Duration) -> f64 {
        100.0 * time.as_secs_f64() / self.full.median().elapsed.as_secs_f64().max(1e-9)
    }

    /// Throughput of reading the data in `time`, as a multiple of SHA-256's.
    fn data_ratio(&self, time: Duration) -> f64 {
        self.layout.data_bytes as f64 / 1e6 / time.as_secs_f64().max(1e-9) / self.sha256.mb_per_s()
    }

    /// How long the storage takes to write `bytes` of pack files, at the rate measured for
    /// it alone.
    fn storage_time(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / 1e6 / self.storage.mb_per_s().max(1e-9))
    }

    /// The least wall-clock time a full backup of the image file can take on this machine:
    /// tessera's CPU time on it spread evenly over every core, or the storage writing
    /// what it stored, whichever is longer.
    pub fn image_bound(&self) -> Duration {
        let run = self.image.median();
        (run.cpu / self.cpus.max(1) as u32).max(self.storage_time(run.summary.bytes_stored))
    }

    /// The least wall-clock time a full backup over NBD can take on this machine: the CPU
    /// time the NBD server spent serving it plus the CPU time tessera spent on the image
    /// file (the same bytes stored, with no protocol to speak), spread evenly over every
    /// core, or the storage writing what it stored, whichever is longer. `None` when the
    /// server's time is unknown.
    pub fn full_bound(&self) -> Option<Duration> {
        let run = self.full.median();
        let server = run.server_cpu?;
        let image = self.image.median().cpu;
        let cpu = (server + image) / self.cpus.max(1) as u32;
        Some(cpu.max(self.storage_time(run.summary.bytes_stored)))
    }

    /// Which of the CPU or the storage sets a bound `bound` that the CPU alone would set
    /// at `cpu`.
    fn bound_by(bound: Duration, cpu: Duration) -> &'static str {
        if bound > cpu {
            "the storage"
        } else {
            "the CPU"
        }
    }

    /// About the least an incremental of `incremental`'s blocks can take here: one with
    /// nothing to read, plus the server alone serving the changed blocks or, when longer,
    /// the CPU time the server spent on the incremental and the CPU time tessera spends
    /// storing that many new bytes (at its rate on the image file) spread evenly over
    /// every core.
    pub fn incremental_bound(&self, incremental: &Incremental) -> Duration {
        self.unchanged.median().elapsed + incremental.floor.median().max(self.storing(incremental))
    }

    /// The second part of [`VmdiskReport::incremental_bound`]: the server's and tessera's
    /// CPU time for the changed blocks over the cores.
    fn storing(&self, incremental: &Incremental) -> Duration {
        let image = self.image.median();
        let share = incremental.changed_bytes() as f64 / image.summary.bytes_read.max(1) as f64;
        let server = incremental.run.median().server_cpu.unwrap_or_default();
        (server + image.cpu.mul_f64(share)) / self.cpus.max(1) as u32
    }

    fn verdict(&self, run: &BackupRun) -> Verdict {
        Verdict::of(self.ratio(run) >= FULL_TARGET)
    }

    fn incremental_verdict(&self, incremental: &Incremental) -> Verdict {
        Verdict::of(self.incremental_percent(incremental) <= INCREMENTAL_TARGET_PERCENT)
    }

    fn read(&self, run: &BackupRun) -> (f64, Verdict) {
        read_ratio(run.summary.bytes_read, self.layout.data_bytes)
    }

    fn incremental_read(incremental: &Incremental) -> (f64, Verdict) {
        read_ratio(
            incremental.run.median().summary.bytes_read,
            incremental.changed_bytes(),
        )
    }

    /// The image file's incremental's time as a percentage of the image file's full
    /// backup's.
    pub fn file_incremental_percent(&self, incremental: &Incremental) -> f64 {
        100.0 * incremental.file.median().elapsed.as_secs_f64()
            / self.image.median().elapsed.as_secs_f64().max(1e-9)
    }

    fn file_incremental_verdict(&self, incremental: &Incremental) -> Verdict {
        Verdict::of(self.file_incremental_percent(incremental) <= INCREMENTAL_TARGET_PERCENT)
    }

    fn file_incremental_read(incremental: &Incremental) -> (f64, Verdict) {
        read_ratio(
            incremental.file.median().summary.bytes_read,
            incremental.changed_bytes(),
        )
    }

    /// Whether every target is met and every backup read about what it should.
    pub fn all_pass(&self) -> bool {
        let mut verdicts = vec![
            self.verdict(self.image.median()),
            self.verdict(self.full.median()),
            self.read(self.image.median()).1,
            self.read(self.full.median()).1,
        ];
        for incremental in &self.incrementals {
            verdicts.push(self.incremental_verdict(incremental));
            verdicts.push(Self::incremental_read(incremental).1);
            verdicts.push(self.file_incremental_verdict(incremental));
            verdicts.push(Self::file_incremental_read(incremental).1);
        }
        verdicts.iter().all(|v| *v == Verdict::Pass)
    }

    /// The report as a plain-text table with a short header and footnote.
    pub fn table(&self) -> String {
        let seconds = |run: &BackupRun| run.elapsed.as_secs_f64();
        let own = |run: &BackupRun| run.summary.duration_ms as f64 / 1000.0;
        let read_target = format!("1.00x +-{:.0}%", READ_TOLERANCE * 100.0);
        let mut rows: Vec<[String; 6]> = vec![
            ["measure", "figure", "ratio", "target", "result", "detail"].map(String::from),
            [
                "SHA-256, one core".into(),
                format!("{:.1} MB/s", self.sha256.mb_per_s()),
                String::new(),
                String::new(),
                String::new(),
                "the yardstick".into(),
            ],
            [
                "storage, pack files written".into(),
                format!("{:.1} MB/s", self.storage.mb_per_s()),
                format!("{:.2}x", self.storage.mb_per_s() / self.sha256.mb_per_s()),
                String::new(),
                String::new(),
                format!(
                    "as much data as the disk holds, as pack files, {} at a time",
                    self.cpus
                ),
            ],
        ];
        for (name, runs) in [("image file", &self.image), ("over NBD", &self.full)] {
            let run = runs.median();
            let (read, read_verdict) = self.read(run);
            rows.push([
                format!("full, {name}"),
                format!("{:.2} s", seconds(run)),
                String::new(),
                String::new(),
                String::new(),
                format!(
                    "{}tessera's own {:.2} s; {:.1} MiB new, {:.1} MiB stored; {}",
                    runs.describe(),
                    own(run),
                    run.summary.bytes_new as f64 / MIB,
                    run.summary.bytes_stored as f64 / MIB,
                    describe_cpu(run)
                ),
            ]);
            rows.push([
                format!("full, {name}, on the data"),
                format!("{:.1} MB/s", self.mb_per_s(run)),
                format!("{:.2}x", self.ratio(run)),
                format!(">= {FULL_TARGET:.2}x"),
                self.verdict(run).label().into(),
                format!(
                    "{:.0} MiB of data over the wall-clock time, vs SHA-256",
                    self.layout.data_bytes as f64 / MIB
                ),
            ]);
            rows.push([
                format!("full, {name}, bytes read"),
                format!("{:.1} MiB", run.summary.bytes_read as f64 / MIB),
                format!("{read:.2}x"),
                read_target.clone(),
                read_verdict.label().into(),
                "of the data: holes should cost nothing".into(),
            ]);
        }
        let floor = self.full_floor.median();
        rows.push([
            "NBD server alone, full".into(),
            format!("{:.2} s", floor.as_secs_f64()),
            format!("{:.2}x", self.data_ratio(floor)),
            String::new(),
            String::new(),
            format!(
                "{}a native client reading the {:.0} MiB of data as the plugin does, storing \
                 nothing",
                self.full_floor.describe(),
                self.full_floor.bytes as f64 / MIB
            ),
        ]);
        let image = self.image.median();
        let image_bound = self.image_bound();
        let image_cpu = image.cpu / self.cpus.max(1) as u32;
        rows.push([
            "bound, full image file".into(),
            format!("{:.2} s", image_bound.as_secs_f64()),
            format!("{:.2}x", self.data_ratio(image_bound)),
            String::new(),
            String::new(),
            format!(
                "set by {}: tessera's {:.2} CPU-s on the image file spread over {} cores, \
                 or the storage writing its {:.1} MiB at {:.1} MB/s, whichever is longer",
                Self::bound_by(image_bound, image_cpu),
                image.cpu.as_secs_f64(),
                self.cpus,
                image.summary.bytes_stored as f64 / MIB,
                self.storage.mb_per_s()
            ),
        ]);
        if let (Some(bound), Some(server)) = (self.full_bound(), self.full.median().server_cpu) {
            let cpu = (server + image.cpu) / self.cpus.max(1) as u32;
            rows.push([
                "bound, full over NBD".into(),
                format!("{:.2} s", bound.as_secs_f64()),
                format!("{:.2}x", self.data_ratio(bound)),
                String::new(),
                String::new(),
                format!(
                    "set by {}: qemu-nbd's {:.2} CPU-s serving the full backup plus \
                     tessera's {:.2} CPU-s on the image file, spread over {} cores, or the \
                     storage writing what it stored: no full backup over NBD is faster here",
                    Self::bound_by(bound, cpu),
                    server.as_secs_f64(),
                    image.cpu.as_secs_f64(),
                    self.cpus
                ),
            ]);
        }
        let unchanged = self.unchanged.median();
        rows.push([
            "incremental, nothing changed".into(),
            format!("{:.3} s", seconds(unchanged)),
            format!("{:.1}%", self.percent_of_full(unchanged.elapsed)),
            String::new(),
            String::new(),
            format!(
                "{}starting, opening the vault, asking for the bitmap, committing: what \
                 every incremental costs besides its reads; {}",
                self.unchanged.describe(),
                describe_cpu(unchanged)
            ),
        ]);
        for incremental in &self.incrementals {
            let (read, read_verdict) = Self::incremental_read(incremental);
            let run = incremental.run.median();
            let name = format!("incremental, {}", incremental.scope.label());
            rows.push([
                name.clone(),
                format!("{:.3} s", seconds(run)),
                format!("{:.1}%", self.incremental_percent(incremental)),
                format!("<= {INCREMENTAL_TARGET_PERCENT:.1}%"),
                self.incremental_verdict(incremental).label().into(),
                format!(
                    "{}of the full backup's time over NBD; tessera's own {:.3} s",
                    incremental.run.describe(),
                    own(run)
                ),
            ]);
            rows.push([
                format!("{name}, read"),
                format!("{:.1} MiB", run.summary.bytes_read as f64 / MIB),
                format!("{read:.2}x"),
                read_target.clone(),
                read_verdict.label().into(),
                format!(
                    "of the {:.1} MiB changed ({} blocks of {} KiB); {:.1} MiB carried",
                    incremental.changed_bytes() as f64 / MIB,
                    incremental.changed_blocks,
                    BLOCK >> 10,
                    run.summary.bytes_carried as f64 / MIB
                ),
            ]);
            let floor = incremental.floor.median();
            rows.push([
                format!("NBD server alone, {}", incremental.scope.label()),
                format!("{:.3} s", floor.as_secs_f64()),
                format!("{:.1}%", self.percent_of_full(floor)),
                String::new(),
                String::new(),
                format!(
                    "{}the same client reading the changed blocks",
                    incremental.floor.describe()
                ),
            ]);
            let bound = self.incremental_bound(incremental);
            let storing = self.storing(incremental);
            rows.push([
                format!("bound, {}", incremental.scope.label()),
                format!("{:.3} s", bound.as_secs_f64()),
                format!("{:.1}%", self.percent_of_full(bound)),
                String::new(),
                String::new(),
                format!(
                    "nothing changed plus {}: about the least an incremental of these \
                     blocks takes here",
                    if storing > floor {
                        format!(
                            "storing them, {:.3} s: qemu-nbd's {:.3} CPU-s and tessera's \
                             on the image file for as many bytes, spread over {} cores",
                            storing.as_secs_f64(),
                            run.server_cpu.unwrap_or_default().as_secs_f64(),
                            self.cpus
                        )
                    } else {
                        "the server alone".to_owned()
                    }
                ),
            ]);
            let file = incremental.file.median();
            let (file_read, file_read_verdict) = Self::file_incremental_read(incremental);
            rows.push([
                format!("stopped VM, {}", incremental.scope.label()),
                format!("{:.3} s", seconds(file)),
                format!("{:.1}%", self.file_incremental_percent(incremental)),
                format!("<= {INCREMENTAL_TARGET_PERCENT:.1}%"),
                self.file_incremental_verdict(incremental).label().into(),
                format!(
                    "{}an incremental of the image file through its persistent bitmap; of \
                     the image file's full backup; tessera's own {:.3} s; {}",
                    incremental.file.describe(),
                    own(file),
                    describe_cpu(file)
                ),
            ]);
            rows.push([
                format!("stopped VM, {}, read", incremental.scope.label()),
                format!("{:.1} MiB", file.summary.bytes_read as f64 / MIB),
                format!("{file_read:.2}x"),
                read_target.clone(),
                file_read_verdict.label().into(),
                "of the changed blocks".into(),
            ]);
        }
        let mut out = format!(
            "tessera vm-disk benchmark: {} GiB qcow2 disk, {} MiB of data in {DATA_RUNS} runs, \
             read from its file and served by qemu-nbd\n{} CPUs, files in {}\n\
             tessera: {} ({})\n\n",
            self.layout.disk_bytes >> 30,
            self.layout.data_bytes >> 20,
            self.cpus,
            self.dir.display(),
            self.version,
            self.program.display()
        );
        out.push_str(&render(&rows, &[false, true, true, false, false, false]));
        out.push_str(
            "\nMB = 10^6 bytes, MiB = 2^20 bytes. Each backup is one `tessera backup` process\n\
             timed on the wall clock from start to exit, opening the vault (with a key\n\
             file) included; tessera's own is the capture time it reports. The two full\n\
             backups go to vaults of their own. The disk was just written, so it is read\n\
             mostly from the page cache. Before each incremental backup over NBD, 1 % of\n\
             the blocks holding data, then (the bitmap cleared) 1 % of all the disk's\n\
             blocks, were overwritten with new incompressible data; the last incremental\n\
             had nothing to read. qemu-nbd runs on the same cores as tessera, so the\n\
             bounds count its CPU time: a full backup over NBD needs the server's work\n\
             and at least the work of storing the image file's bytes. No full backup is\n\
             faster than the storage, measured alone above, writes what it stores.\n",
        );
        out
    }

    /// The report as a JSON object.
    pub fn json(&self) -> Value {
        let full = |runs: &Runs| {
            let run = runs.median();
            let (read, read_verdict) = self.read(run);
            json!({
                "seconds": run.elapsed.as_secs_f64(),
                "runs_seconds": runs.seconds(),
                "mb_per_s": self.mb_per_s(run),
                "ratio_to_sha256": self.ratio(run),
                "target_ratio": FULL_TARGET,
                "pass": self.verdict(run) == Verdict::Pass,
                "bytes_read_ratio_to_data": read,
                "bytes_read_as_expected": read_verdict == Verdict::Pass,
                "summary": run.summary.json(),
                "cpu_seconds": run.cpu.as_secs_f64(),
                "server_cpu_seconds": run.server_cpu.map(|cpu| cpu.as_secs_f64()),
            })
        };
        let incrementals: Vec<Value> = self
            .incrementals
            .iter()
            .map(|incremental| {
                let (read, read_verdict) = Self::incremental_read(incremental);
                json!({
                    "changed": incremental.scope.key(),
                    "changed_blocks": incremental.changed_blocks,
                    "changed_bytes": incremental.changed_bytes(),
                    "seconds": incremental.run.median().elapsed.as_secs_f64(),
                    "runs_seconds": incremental.run.seconds(),
                    "percent_of_full": self.incremental_percent(incremental),
                    "target_percent": INCREMENTAL_TARGET_PERCENT,
                    "pass": self.incremental_verdict(incremental) == Verdict::Pass,
                    "bytes_read_ratio_to_changed": read,
                    "bytes_read_as_expected": read_verdict == Verdict::Pass,
                    "summary": incremental.run.median().summary.json(),
                    "server_alone": incremental.floor.json(),
                    "server_alone_percent_of_full": self.percent_of_full(incremental.floor.median()),
                    "storing_seconds": self.storing(incremental).as_secs_f64(),
                    "bound_seconds": self.incremental_bound(incremental).as_secs_f64(),
                    "bound_percent_of_full": self.percent_of_full(self.incremental_bound(incremental)),
                    "image_file": {
                        "seconds": incremental.file.median().elapsed.as_secs_f64(),
                        "runs_seconds": incremental.file.seconds(),
                        "percent_of_full": self.file_incremental_percent(incremental),
                        "pass": self.file_incremental_verdict(incremental) == Verdict::Pass,
                        "bytes_read_as_expected":
                            Self::file_incremental_read(incremental).1 == Verdict::Pass,
                        "summary": incremental.file.median().summary.json(),
                        "cpu_seconds": incremental.file.median().cpu.as_secs_f64(),
                    },
                })
            })
            .collect();
        json!({
            "disk_bytes": self.layout.disk_bytes,
            "data_bytes": self.layout.data_bytes,
            "data_runs": DATA_RUNS,
            "block_bytes": BLOCK,
            "dir": self.dir.display().to_string(),
            "cpus": self.cpus,
            "tessera": {
                "program": self.program.display().to_string(),
                "version": self.version,
            },
            "sha256": {
                "bytes": self.sha256.bytes,
                "seconds": self.sha256.elapsed.as_secs_f64(),
                "mb_per_s": self.sha256.mb_per_s(),
            },
            "storage_write": {
                "bytes": self.storage.bytes,
                "seconds": self.storage.elapsed.as_secs_f64(),
                "mb_per_s": self.storage.mb_per_s(),
                "ratio_to_sha256": self.storage.mb_per_s() / self.sha256.mb_per_s(),
            },
            "image_backup": full(&self.image),
            "full_backup": full(&self.full),
            "server_alone": {
                "full": self.full_floor.json(),
                "ratio_to_sha256": self.data_ratio(self.full_floor.median()),
            },
            "image_backup_bound": {
                "seconds": self.image_bound().as_secs_f64(),
                "ratio_to_sha256": self.data_ratio(self.image_bound()),
            },
            "full_backup_bound": self.full_bound().map(|bound| json!({
                "seconds": bound.as_secs_f64(),
                "ratio_to_sha256": self.data_ratio(bound),
            })),
            "incremental_backups": incrementals,
            "unchanged_incremental": {
                "seconds": self.unchanged.median().elapsed.as_secs_f64(),
                "runs_seconds": self.unchanged.seconds(),
                "percent_of_full": self.percent_of_full(self.unchanged.median().elapsed),
                "cpu_seconds": self.unchanged.median().cpu.as_secs_f64(),
            },
            "read_tolerance": READ_TOLERANCE,
            "all_pass": self.all_pass(),
        })
    }
}

/// QEMU's tools, found on `PATH`.
struct Qemu {
    img: PathBuf,
    io: PathBuf,
    nbd: PathBuf,
}

impl Qemu {
    fn find() -> Result<Qemu> {
        let path = std::env::var_os("PATH");
        let find = |name: &str| {
            compare::find_on_path(name, path.as_deref()).ok_or_else(|| {
                Failure::new(format!(
                    "no {name} on PATH: install QEMU's tools \
                     (Debian and Ubuntu: `apt-get install qemu-utils`)"
                ))
            })
        };
        Ok(Qemu {
            img: find("qemu-img")?,
            io: find("qemu-io")?,
            nbd: find("qemu-nbd")?,
        })
    }
}

/// Writes the data runs into a sparse raw file, which leaves everything else a hole, and
/// converts it into the qcow2 `image`, holes unallocated; then adds the empty, enabled,
/// persistent dirty bitmap.
fn create_image(qemu: &Qemu, layout: &DiskLayout, raw: &Path, image: &Path) -> Result<()> {
    let file = File::create(raw).context(format!("cannot create {}", raw.display()))?;
    file.set_len(layout.disk_bytes)
        .context(format!("cannot size {}", raw.display()))?;
    let mut rng = SplitMix64::new(DATA_SEED);
    let mut buffer = vec![0u8; layout.run_bytes().min(WRITE_PIECE) as usize];
    for (offset, len) in layout.runs() {
        let mut done = 0;
        while done < len {
            let piece = &mut buffer[..(len - done).min(WRITE_PIECE) as usize];
            rng.fill(piece);
            file.write_all_at(piece, offset + done)
                .context(format!("cannot write {}", raw.display()))?;
            done += piece.len() as u64;
        }
    }
    drop(file);

    let mut convert = Command::new(&qemu.img);
    convert
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(image);
    measure::run(convert, "qemu-img convert to qcow2")?;
    std::fs::remove_file(raw).context(format!("cannot remove {}", raw.display()))?;

    let mut bitmap = Command::new(&qemu.img);
    bitmap
        .args(["bitmap", "--add", "--enable", "-g"])
        .arg(BLOCK.to_string())
        .arg(image)
        .arg(BITMAP);
    measure::run(bitmap, "qemu-img bitmap --add")?;
    Ok(())
}

/// Overwrites the blocks at `offsets` of `image` with new incompressible data through
/// `qemu-io`, which records them in the enabled bitmap; the data comes from `seed`, so
/// that no change repeats an earlier one's blocks. Each block's data is a file in
/// `scratch` that a `write -s` command reads; the files have short relative names
/// because `qemu-io` splits its commands at blanks.
fn change_blocks(
    qemu: &Qemu,
    image: &Path,
    offsets: &[u64],
    seed: u64,
    scratch: &Path,
) -> Result<()> {
    std::fs::create_dir(scratch).context(format!("cannot create {}", scratch.display()))?;
    let mut rng = SplitMix64::new(seed);
    let mut block = vec![0u8; BLOCK as usize];
    for batch in offsets.chunks(WRITES_PER_QEMU_IO) {
        let mut command = Command::new(&qemu.io);
        command.current_dir(scratch).args(["-f", "qcow2"]);
        for (i, offset) in batch.iter().enumerate() {
            let source = scratch.join(i.to_string());
            rng.fill(&mut block);
            std::fs::write(&source, &block)
                .context(format!("cannot write {}", source.display()))?;
            command
                .arg("-c")
                .arg(format!("write -q -s {i} {offset} {BLOCK}"));
        }
        command.arg(image);
        measure::run(command, "qemu-io writing the changed blocks")?;
    }
    std::fs::remove_dir_all(scratch).context(format!("cannot remove {}", scratch.display()))
}

/// A port on the loopback interface that nothing listens on right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free port for qemu-nbd")?;
    Ok(listener
        .local_addr()
        .context("cannot find a free port for qemu-nbd")?
        .port())
}

/// The last lines of a log file, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(LOG_LINES)..].join("\n  ")
}

/// `qemu-nbd` serving the disk read-only with its dirty bitmap, as a hypervisor exports a
/// running guest's disk for backup. Killed when dropped, so no failure leaves it running.
struct NbdServer {
    child: Child,
    port: u16,
}

impl NbdServer {
    /// Starts `qemu-nbd` on `image`, its messages going to `log`, and waits until it
    /// accepts connections.
    fn start(qemu: &Qemu, image: &Path, log: &Path) -> Result<NbdServer> {
        let port = free_port()?;
        let log_file = File::create(log).context(format!("cannot create {}", log.display()))?;
        let child = Command::new(&qemu.nbd)
            .args(["-f", "qcow2", "--persistent", "--shared=4"])
            .args(["--bind", "127.0.0.1"])
            .arg(format!("--port={port}"))
            .args(["-x", EXPORT, "-B", BITMAP, "-r"])
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("qemu-nbd: cannot start the program")?;
        let mut server = NbdServer { child, port };
        server.wait_until_listening(log)?;
        Ok(server)
    }

    fn wait_until_listening(&mut self, log: &Path) -> Result<()> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + NBD_START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("qemu-nbd: cannot watch it")? {
                return Err(Failure::new(format!(
                    "qemu-nbd: exited at start ({status}):\n  {}",
                    log_tail(log)
                )));
            }
            if TcpStream::connect_timeout(&address, NBD_POLL_INTERVAL).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(format!(
                    "qemu-nbd: not accepting connections on port {} after {} s",
                    self.port,
                    NBD_START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(NBD_POLL_INTERVAL);
        }
    }

    /// CPU time the server has used so far, all its threads: fields 14 and 15 of
    /// `/proc/PID/stat`, in clock ticks.
    fn cpu(&self) -> Result<Duration> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = std::fs::read_to_string(&path).context(format!("cannot read {path}"))?;
        let ticks = proc_stat_cpu_ticks(&stat)
            .ok_or_else(|| Failure::new(format!("{path}: no CPU times in {stat:?}")))?;
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&n| n > 0)
            .unwrap_or(100);
        Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
    }

    /// The export's address as `tessera backup` takes it.
    fn url(&self) -> String {
        format!("nbd://127.0.0.1:{}/{EXPORT}", self.port)
    }
}

/// User plus system clock ticks in a `/proc/PID/stat` line. The command name, field 2,
/// is in parentheses and may hold spaces and parentheses itself, so fields are counted
/// from the last `)`: utime and stime are the 12th and 13th after it.
fn proc_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        // It may have exited already; either way nothing is left running or unreaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `tessera` command line on the throwaway vault.
struct Tessera<'a> {
    program: &'a Path,
    vault: PathBuf,
    /// The key file the backups open the vault with, as a scheduled job does: a password
    /// would add its Argon2id derivation to every run.
    key_file: PathBuf,
}

impl Tessera<'_> {
    /// The program set up to run `args` on the vault, its environment holding the
    /// password and not the variable that would override `--vault`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.program);
        command
            .arg("--vault")
            .arg(&self.vault)
            .args(args)
            .env_remove("TESSERA_VAULT")
            .env("TESSERA_PASSWORD", PASSWORD);
        command
    }

    /// Runs `args` untimed.
    fn run(&self, args: &[&str], what: &str) -> Result<Output> {
        measure::run(self.command(args), &format!("tessera {what}"))
    }

    /// Creates the vault and the key file the backups open it with.
    fn init(&self) -> Result<()> {
        self.run(&["vault", "init"], "vault init")?;
        let key_file = self.key_file.to_string_lossy();
        self.run(&["key", "add", "--new-key-file", &key_file], "key add")?;
        Ok(())
    }

    /// Backs the export of `server` up through its bitmap, timed on the wall clock, with
    /// the CPU time the server spent meanwhile.
    fn backup(&self, server: &NbdServer, what: &str) -> Result<BackupRun> {
        let before = server.cpu()?;
        let mut run = self.backup_disk(&server.url(), &["--bitmap", BITMAP], what)?;
        run.server_cpu = Some(server.cpu()?.saturating_sub(before));
        Ok(run)
    }

    /// Backs `disk` (an image file or an NBD address) up as the item, timed on the wall
    /// clock.
    fn backup_disk(&self, disk: &str, extra: &[&str], what: &str) -> Result<BackupRun> {
        let key_file = self.key_file.to_string_lossy();
        let mut args = vec![
            "--password-file",
            &key_file,
            "backup",
            "--plugin",
            PLUGIN,
            disk,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--item", ITEM, "--json"]);
        let command = self.command(&args);
        let what = format!("tessera {what}");
        let cpu_before = measure::children_cpu()?;
        let start = Instant::now();
        let output = measure::run(command, &what)?;
        let elapsed = start.elapsed();
        // Only this child was waited for in between.
        let cpu = measure::children_cpu()?.saturating_sub(cpu_before);
        let summary = BackupSummary::parse(&output.stdout)
            .map_err(|e| Failure::new(format!("{what}: {e}")))?;
        Ok(BackupRun {
            elapsed,
            cpu,
            server_cpu: None,
            summary,
        })
    }
}

/// Times `backup` `runs` times, each from the state the vault is in now: the files a run
/// added to the vault (every vault file is written once and never changed; an
/// incremental adds a few packs) are removed before the next one, and those of the last
/// run are kept, so later backups have its point as their parent. Dirty pages are
/// written out before each run, so that none of the earlier work falls on it.
fn repeat(runs: u64, vault: &Path, mut backup: impl FnMut() -> Result<BackupRun>) -> Result<Runs> {
    let before = vault_files(vault)?;
    let mut timed = Vec::new();
    for i in 0..runs.max(1) {
        if i > 0 {
            for added in vault_files(vault)?.difference(&before) {
                std::fs::remove_file(added)
                    .context(format!("cannot remove {}", added.display()))?;
            }
        }
        nix::unistd::sync();
        timed.push(backup()?);
    }
    Ok(Runs::new(timed))
}

/// Every file below `dir`.
fn vault_files(dir: &Path) -> Result<BTreeSet<PathBuf>> {
    let mut files = BTreeSet::new();
    crate::tree::walk_files(dir, |path, _| {
        files.insert(path);
    })?;
    Ok(files)
}

/// Runs every measurement of `tessera-bench vmdisk`.
pub fn run_vmdisk(args: &VmdiskArgs) -> Result<VmdiskReport> {
    let layout = DiskLayout::new(args.disk_gib, args.data_mib).map_err(Failure::new)?;
    let program = compare::require(
        match &args.tessera {
            Some(path) => path.clone(),
            None => compare::default_tessera()?,
        },
        "build it with `cargo build --release -p tessera-cli`, or give --tessera PATH",
    )?;
    let qemu = Qemu::find()?;
    let base = args.dir.clone().unwrap_or_else(crate::default_dir);
    // A fresh directory inside the chosen one: whatever else lives there is never
    // touched, and dropping it removes the disk and the vault even when a step fails.
    let workdir = tempfile::Builder::new()
        .prefix("tessera-vmdisk-")
        .tempdir_in(&base)
        .context(format!(
            "cannot create a work directory in {}",
            base.display()
        ))?;
    let work = workdir.path();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    // A vault and the plugin first: a tessera without the plugin fails in a moment,
    // before the disk is written.
    let version = compare::version(Tool::Tessera, &program)?;
    let vault = |name: &str| Tessera {
        program: &program,
        vault: work.join(name),
        key_file: work.join(format!("{name}.key")),
    };
    progress("tessera: creating a vault");
    let probe = vault("vault-probe");
    probe.init()?;
    probe.run(
        &["plugin", "inspect", PLUGIN],
        &format!("plugin inspect {PLUGIN}"),
    )?;

    progress("hashing with SHA-256 on one core");
    let sample = data::random_bytes(layout.data_bytes.min(WRITE_PIECE) as usize, DATA_SEED)?;
    let sha256 = phases::sha256(&sample)?;
    drop(sample);

    progress(&format!(
        "writing {} MiB of data to a {} GiB qcow2 disk",
        args.data_mib, args.disk_gib
    ));
    let image = work.join("disk.qcow2");
    create_image(&qemu, &layout, &work.join("disk.raw"), &image)?;
    let log = work.join("qemu-nbd.log");

    // Every full backup goes to a new vault: in one that held the image already it would
    // find every chunk stored, and files deleted just before slow down the next writes
    // on some file systems.
    let runs = args.runs.max(1);
    progress("tessera: full backup of the image file");
    let mut timed = Vec::new();
    let mut last_image = None;
    for i in 0..runs {
        let image_vault = vault(&format!("vault-image-{i}"));
        image_vault.init()?;
        nix::unistd::sync();
        timed.push(image_vault.backup_disk(
            &image.to_string_lossy(),
            &[],
            "full backup of the image file",
        )?);
        last_image = Some(image_vault);
    }
    let image_run = Runs::new(timed);
    // The image file's incrementals have its last full backup as their parent.
    let image_tessera = last_image.expect("at least one run");

    progress("tessera: full backup over NBD");
    let mut timed = Vec::new();
    let mut last = None;
    let full_floor = {
        let server = NbdServer::start(&qemu, &image, &log)?;
        for i in 0..runs {
            let nbd_vault = vault(&format!("vault-{i}"));
            nbd_vault.init()?;
            nix::unistd::sync();
            timed.push(nbd_vault.backup(&server, "full backup")?);
            last = Some(nbd_vault);
        }
        progress("NBD server alone: reading the data with a native client");
        time_floor(runs, &server, Wanted::Allocated)?
    };
    let full = Runs::new(timed);
    // The incrementals have the last full backup as their parent.
    let tessera = last.expect("at least one run");

    // 1 % of the data, then 1 % of the whole disk, each change new data.
    let mut incrementals = Vec::new();
    let changes = [
        (Scope::Data, CHANGED_IN_DATA_OFFSETS_SEED, CHANGED_DATA_SEED),
        (Scope::Disk, CHANGED_OFFSETS_SEED, CHANGED_DATA_SEED + 1),
    ];
    for (i, (scope, offsets_seed, data_seed)) in changes.into_iter().enumerate() {
        if i > 0 {
            // As a hypervisor does once a backup succeeded: the next change alone is marked.
            let mut clear = Command::new(&qemu.img);
            clear.args(["bitmap", "--clear"]).arg(&image).arg(BITMAP);
            measure::run(clear, "qemu-img bitmap --clear")?;
        }
        let changed = layout.changed_blocks(scope, offsets_seed);
        progress(&format!(
            "changing {} blocks of {} KiB ({})",
            changed.len(),
            BLOCK >> 10,
            scope.label()
        ));
        change_blocks(&qemu, &image, &changed, data_seed, &work.join("blocks"))?;
        progress(&format!(
            "tessera: incremental backup over NBD ({})",
            scope.label()
        ));
        let (run, floor) = {
            let server = NbdServer::start(&qemu, &image, &log)?;
            let run = repeat(runs, &tessera.vault, || {
                tessera.backup(&server, "incremental backup")
            })?;
            progress("NBD server alone: reading the changed blocks with a native client");
            (run, time_floor(runs, &server, Wanted::Dirty)?)
        };
        progress(&format!(
            "tessera: incremental backup of the image file ({})",
            scope.label()
        ));
        let file = repeat(runs, &image_tessera.vault, || {
            image_tessera.backup_disk(
                &image.to_string_lossy(),
                &["--bitmap", BITMAP],
                "incremental backup of the image file",
            )
        })?;
        incrementals.push(Incremental {
            scope,
            changed_blocks: changed.len() as u64,
            run,
            floor,
            file,
        });
    }

    // What an incremental costs besides its reads: the bitmap cleared, nothing changed.
    let mut clear = Command::new(&qemu.img);
    clear.args(["bitmap", "--clear"]).arg(&image).arg(BITMAP);
    measure::run(clear, "qemu-img bitmap --clear")?;
    progress("tessera: incremental backup over NBD (nothing changed)");
    let unchanged = {
        let server = NbdServer::start(&qemu, &image, &log)?;
        repeat(runs, &tessera.vault, || {
            tessera.backup(&server, "incremental backup of an unchanged disk")
        })?
    };

    // Last, since it deletes what it wrote, and deleting slows the next writes on some
    // file systems.
    progress("writing as much data to storage as pack files");
    let data = data::random_bytes(layout.data_bytes as usize, DATA_SEED)?;
    let storage = phases::storage_write(&work.join("storage"), &data, cpus)?;
    drop(data);

    workdir
        .close()
        .context("cannot remove the work directory")?;
    Ok(VmdiskReport {
        layout,
        dir: base,
        cpus,
        program,
        version,
        sha256,
        storage,
        image: image_run,
        full,
        full_floor,
        incrementals,
        unchanged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_runs_are_spread_over_the_disk() {
        let layout = DiskLayout::new(4, 1024).unwrap();
        let runs: Vec<_> = layout.runs().collect();
        assert_eq!(runs.len(), DATA_RUNS as usize);
        assert_eq!(runs[0], (0, 128 << 20));
        assert_eq!(runs[7], (7 * (512 << 20), 128 << 20));
        assert_eq!(runs.iter().map(|r| r.1).sum::<u64>(), 1 << 30);

        // The smallest data set still gives block-aligned runs that do not overlap.
        let layout = DiskLayout::new(1, 1).unwrap();
        let runs: Vec<_> = layout.runs().collect();
        assert!(
            runs.iter()
                .all(|&(at, len)| at % BLOCK == 0 && len % BLOCK == 0)
        );
        assert!(runs.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
    }

    #[test]
    fn one_percent_of_the_blocks_change() {
        let layout = DiskLayout::new(4, 1024).unwrap();
        let changed = layout.changed_blocks(Scope::Disk, CHANGED_OFFSETS_SEED);
        assert_eq!(changed.len(), 656);
        assert!(changed.windows(2).all(|w| w[0] < w[1]));
        assert!(
            changed
                .iter()
                .all(|&at| at % BLOCK == 0 && at + BLOCK <= layout.disk_bytes)
        );
        assert_eq!(
            changed,
            layout.changed_blocks(Scope::Disk, CHANGED_OFFSETS_SEED)
        );
        // Some land in the holes.
        let stride = layout.disk_bytes / DATA_RUNS;
        assert!(changed.iter().any(|&at| at % stride >= layout.run_bytes()));

        // 1 % of the 16384 blocks holding data, every one of them inside a data run,
        // spread over all the runs.
        let changed = layout.changed_blocks(Scope::Data, CHANGED_IN_DATA_OFFSETS_SEED);
        assert_eq!(changed.len(), 164);
        assert!(changed.windows(2).all(|w| w[0] < w[1]));
        assert!(
            changed
                .iter()
                .all(|&at| at % BLOCK == 0 && at % stride + BLOCK <= layout.run_bytes())
        );
        let runs: BTreeSet<u64> = changed.iter().map(|&at| at / stride).collect();
        assert_eq!(runs.len() as u64, DATA_RUNS);
    }

    #[test]
    fn impossible_layouts_are_refused() {
        assert!(DiskLayout::new(0, 1).is_err());
        assert!(DiskLayout::new(1, 0).is_err());
        assert!(DiskLayout::new(1, 1025).is_err());
        assert!(DiskLayout::new(u64::MAX, 1).is_err());
        assert_eq!(
            DiskLayout::new(1, 1024),
            Ok(DiskLayout {
                disk_bytes: 1 << 30,
                data_bytes: 1 << 30
            })
        );
    }

    #[test]
    fn backup_summaries_are_read_from_json() {
        let summary = BackupSummary::parse(
            br#"{"point":"ab12","item":"bench","parent":null,"bytes_read":10,
                 "bytes_new":9,"bytes_stored":8,"bytes_carried":7,"entries":1,
                 "partial":false,"warnings":[],"duration_ms":1500}"#,
        )
        .unwrap();
        assert_eq!(
            summary,
            BackupSummary {
                point: "ab12".into(),
                bytes_read: 10,
                bytes_new: 9,
                bytes_stored: 8,
                bytes_carried: 7,
                duration_ms: 1500,
            }
        );
        assert!(BackupSummary::parse(b"").is_err());
        assert!(BackupSummary::parse(b"backed up").is_err());
        let error = BackupSummary::parse(br#"{"point":"ab12","bytes_read":-1}"#).unwrap_err();
        assert_eq!(error, "its JSON output has no whole number 'bytes_read'");
    }

    fn report(
        full_seconds: f64,
        incremental_seconds: [f64; 2],
        incremental_read: u64,
    ) -> VmdiskReport {
        // Each backup uses 1.5 cores; the server a core for 2/5 of its time (half a
        // CPU-second for a full backup of 1.25 s) over NBD.
        let run = |seconds: f64, bytes_read: u64| BackupRun {
            elapsed: Duration::from_secs_f64(seconds),
            cpu: Duration::from_secs_f64(seconds * 1.5),
            server_cpu: Some(Duration::from_secs_f64(seconds * 0.4)),
            summary: BackupSummary {
                point: "p".into(),
                bytes_read,
                bytes_new: bytes_read,
                bytes_stored: bytes_read,
                bytes_carried: 0,
                duration_ms: (seconds * 900.0) as u64,
            },
        };
        VmdiskReport {
            layout: DiskLayout::new(4, 1024).unwrap(),
            dir: PathBuf::from("/var/tmp"),
            cpus: 2,
            program: PathBuf::from("/bin/tessera"),
            version: "tessera 1.0".into(),
            sha256: Rate {
                bytes: 1 << 30,
                elapsed: Duration::from_secs_f64((1u64 << 30) as f64 / 1e9),
                cpu: None,
            },
            // 2000 MB/s: 0.54 s for the 1 GiB a full backup stores.
            storage: Rate {
                bytes: 1 << 30,
                elapsed: Duration::from_secs_f64((1u64 << 30) as f64 / 2e9),
                cpu: None,
            },
            image: Runs::new(vec![BackupRun {
                server_cpu: None,
                ..run(full_seconds * 0.8, 1 << 30)
            }]),
            // The median of three runs is the one in the middle, whatever their order.
            full: Runs::new(vec![
                run(full_seconds * 1.5, 1 << 30),
                run(full_seconds, 1 << 30),
                run(full_seconds * 0.9, 1 << 30),
            ]),
            full_floor: Floor::new(
                vec![
                    Duration::from_secs_f64(full_seconds * 0.7),
                    Duration::from_secs_f64(full_seconds * 0.6),
                ],
                1 << 30,
            ),
            incrementals: vec![
                Incremental {
                    scope: Scope::Data,
                    changed_blocks: 164,
                    run: Runs::new(vec![run(incremental_seconds[0], 164 * BLOCK)]),
                    floor: Floor::new(vec![Duration::from_millis(10)], 164 * BLOCK),
                    file: Runs::new(vec![BackupRun {
                        server_cpu: None,
                        ..run(incremental_seconds[0] * 0.8, 164 * BLOCK)
                    }]),
                },
                Incremental {
                    scope: Scope::Disk,
                    changed_blocks: 656,
                    run: Runs::new(vec![run(incremental_seconds[1], incremental_read)]),
                    floor: Floor::new(vec![Duration::from_millis(30)], 656 * BLOCK),
                    file: Runs::new(vec![BackupRun {
                        server_cpu: None,
                        ..run(incremental_seconds[1] * 0.8, 656 * BLOCK)
                    }]),
                },
            ],
            unchanged: Runs::new(vec![run(0.02, 0)]),
        }
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (qemu (nbd) x) S 1 4242 4242 0 -1 4194560 1100 0 0 0 \
                    37 5 0 0 20 0 3 0 123 456 789";
        assert_eq!(proc_stat_cpu_ticks(stat), Some(42));
        assert_eq!(proc_stat_cpu_ticks("4242 (qemu-nbd) S 1"), None);
        assert_eq!(proc_stat_cpu_ticks("no parentheses"), None);
    }

    #[test]
    fn targets_and_checks() {
        // 1 GiB in 1.25 s is 859 MB/s, 0.86x a SHA-256 of 1000 MB/s.
        let good = report(1.25, [0.025, 0.05], 656 * BLOCK);
        assert!(good.all_pass());
        let table = good.table();
        for line in [
            "SHA-256, one core                   1000.0 MB/s",
            "full, image file, on the data       1073.7 MB/s  1.07x  >= 0.80x     PASS",
            "full, over NBD, on the data          859.0 MB/s  0.86x  >= 0.80x     PASS",
            "full, over NBD, bytes read           1024.0 MiB  1.00x  1.00x +-10%  PASS",
            "full, over NBD                           1.25 s                              \
             median of 3, 1.125–1.875 s; tessera's own 1.12 s",
            "incremental, 1 % of the data            0.025 s   2.0%  <= 5.0%      PASS",
            "incremental, 1 % of the data, read     10.2 MiB  1.00x  1.00x +-10%  PASS",
            "incremental, 1 % of the disk            0.050 s   4.0%  <= 5.0%      PASS",
            "incremental, 1 % of the disk, read     41.0 MiB  1.00x  1.00x +-10%  PASS",
            // 40 ms of the image file's full backup of 1.00 s.
            "stopped VM, 1 % of the disk             0.040 s   4.0%  <= 5.0%      PASS    \
             an incremental of the image file",
            "stopped VM, 1 % of the data, read      10.2 MiB  1.00x  1.00x +-10%  PASS",
            // The server alone: the median of two is the shorter, 0.75 s, 1.43x.
            "NBD server alone, full                   0.75 s  1.43x                       \
             median of 2, 0.750–0.875 s; a native client reading the 1024 MiB of data",
            "NBD server alone, 1 % of the data       0.010 s   0.8%",
            "NBD server alone, 1 % of the disk       0.030 s   2.4%",
            // 1.5 CPU-s on the image file and the server's 0.5 over two cores.
            "bound, full over NBD                     1.00 s  1.07x                       \
             set by the CPU: qemu-nbd's 0.50 CPU-s serving the full backup plus tessera's \
             1.50 CPU-s",
            // 1.5 CPU-s on the image file over two cores.
            "bound, full image file                   0.75 s  1.43x                       \
             set by the CPU: tessera's 1.50 CPU-s on the image file spread over 2 cores, or \
             the storage writing its 1024.0 MiB at 2000.0 MB/s",
            "full, image file                         1.00 s                              \
             tessera's own 0.90 s; 1024.0 MiB new, 1024.0 MiB stored; 1.50 CPU-s\n",
            "1.88 CPU-s (qemu-nbd 0.50 CPU-s)",
            "incremental, nothing changed            0.020 s   1.6%",
            // Nothing changed, 20 ms, and storing 41 MiB, longer than the server alone's
            // 30 ms: the server's 20 ms of CPU and 1.5 CPU-s per GiB over two cores.
            "bound, 1 % of the disk                  0.060 s   4.8%                       \
             nothing changed plus storing them, 0.040 s: qemu-nbd's 0.020 CPU-s",
        ] {
            assert!(table.contains(line), "{table}");
        }
        let json = good.json();
        assert_eq!(json["incremental_backups"][0]["percent_of_full"], 2.0);
        assert_eq!(
            json["full_backup"]["runs_seconds"],
            serde_json::json!([1.875, 1.25, 1.125])
        );
        assert_eq!(json["incremental_backups"][1]["percent_of_full"], 4.0);
        assert_eq!(json["incremental_backups"][1]["changed"], "disk");
        assert_eq!(
            json["incremental_backups"][1]["image_file"]["percent_of_full"],
            4.0
        );
        assert_eq!(json["full_backup"]["summary"]["bytes_read"], 1u64 << 30);
        assert_eq!(json["all_pass"], true);
        assert_eq!(json["full_backup_bound"]["seconds"], 1.0);
        assert_eq!(json["image_backup_bound"]["seconds"], 0.75);
        assert_eq!(json["full_backup"]["server_cpu_seconds"], 0.5);
        assert_eq!(json["image_backup"]["server_cpu_seconds"], Value::Null);
        assert_eq!(json["unchanged_incremental"]["seconds"], 0.02);
        let seconds = |key: &str| json["incremental_backups"][1][key].as_f64().unwrap();
        assert!((seconds("bound_seconds") - 0.06).abs() < 1e-3);
        assert!((seconds("storing_seconds") - 0.04).abs() < 1e-3);
        assert_eq!(json["server_alone"]["full"]["seconds"], 0.75);
        assert_eq!(
            json["incremental_backups"][1]["server_alone"]["bytes_read"],
            656 * BLOCK
        );

        // Too slow, and the incremental read the whole data again.
        let bad = report(2.0, [0.05, 0.2], 1 << 30);
        assert!(!bad.all_pass());
        let table = bad.table();
        assert!(table.contains("0.54x  >= 0.80x     MISS"), "{table}");
        assert!(table.contains("10.0%  <= 5.0%      MISS"), "{table}");
        assert_eq!(
            bad.json()["incremental_backups"][1]["bytes_read_as_expected"],
            false
        );
        assert_eq!(
            bad.json()["incremental_backups"][0]["bytes_read_as_expected"],
            true
        );

        // A server alone slower than storing sets the incremental's bound.
        let mut slow_server = report(1.25, [0.025, 0.05], 656 * BLOCK);
        slow_server.incrementals[0].floor =
            Floor::new(vec![Duration::from_millis(50)], 164 * BLOCK);
        let table = slow_server.table();
        assert!(
            table.contains(
                "bound, 1 % of the data                  0.070 s   5.6%                       \
                 nothing changed plus the server alone: about the least"
            ),
            "{table}"
        );

        // A slow storage sets both full bounds: 1 GiB at 500 MB/s is 2.15 s.
        let mut slow_storage = report(1.25, [0.025, 0.05], 656 * BLOCK);
        slow_storage.storage.elapsed = Duration::from_secs_f64((1u64 << 30) as f64 / 5e8);
        let table = slow_storage.table();
        for line in [
            "bound, full image file                   2.15 s  0.50x                       \
             set by the storage",
            "bound, full over NBD                     2.15 s  0.50x                       \
             set by the storage",
        ] {
            assert!(table.contains(line), "{table}");
        }

        // One incremental over its target fails the run.
        let one_slow = report(1.25, [0.1, 0.05], 656 * BLOCK);
        assert!(!one_slow.all_pass());
    }
}
