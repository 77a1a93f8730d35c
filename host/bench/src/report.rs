//! The figures of a run, their targets, and how they are printed: a plain table for
//! people, a JSON object for scripts.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::compare::{Comparison, ToolFigures};
use crate::measure::Run;
use crate::phases::{IndexOpen, Ingest, Rate};

/// Minimum ingest throughput of incompressible data, as a multiple of SHA-256.
pub const INGEST_TARGET: f64 = 0.8;
/// Minimum throughput of re-ingesting data the vault already holds, as a multiple of
/// SHA-256.
pub const DEDUP_TARGET: f64 = 0.8;
/// Minimum restore throughput, as a multiple of SHA-256.
pub const RESTORE_TARGET: f64 = 1.0;
/// Maximum memory of the loaded index per chunk, in bytes.
pub const BYTES_PER_CHUNK_TARGET: f64 = 64.0;
/// Maximum time to open a vault of a million chunks: "well under a second", taken as
/// half of one.
pub const OPEN_TARGET_SECONDS: f64 = 0.5;

/// Maximum time of each of tessera's backups and of its restore, as a multiple of
/// restic's.
pub const COMPARE_TIME_TARGET: f64 = 0.5;
/// Maximum size of tessera's repository, as a multiple of restic's.
pub const COMPARE_SIZE_TARGET: f64 = 1.0;
/// Maximum peak resident set size of any tessera run, in bytes (100 MB).
pub const COMPARE_RSS_TARGET: u64 = 100_000_000;

/// Everything one run of `tessera-bench vault` measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Bytes in each data set.
    pub size: u64,
    /// CPUs available to the engine's worker threads.
    pub cpus: usize,
    /// The directory the throwaway vaults were created in.
    pub dir: PathBuf,
    /// Single-core SHA-256, the yardstick.
    pub sha256: Rate,
    /// Single-core SHA-256 of two messages side by side, as chunk ids are hashed.
    pub sha256_pairs: Rate,
    /// Incompressible data into a fresh vault, content-defined chunks.
    pub ingest_random: Ingest,
    /// Pseudo-English text into a fresh vault, content-defined chunks.
    pub ingest_text: Ingest,
    /// The incompressible data again, into the vault that already holds it.
    pub dedup: Ingest,
    /// Reading the incompressible data back, its packs read from storage (dropped from
    /// the page cache first).
    pub restore_storage: Rate,
    /// Reading the incompressible data back again, its packs now in the page cache: what
    /// the restore pipeline itself achieves.
    pub restore: Rate,
    /// Incompressible data into a fresh vault, fixed 64 KiB chunks.
    pub ingest_fixed: Ingest,
    /// Opening a vault whose index lists a million chunks.
    pub index: IndexOpen,
    /// The incompressible data written as pack files through the local backend, without
    /// the engine: the storage's own speed for new data.
    pub storage: Rate,
}

/// How a figure compares with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The figure meets its target.
    Pass,
    /// It does not.
    Miss,
}

impl Verdict {
    /// `Pass` if `pass`, else `Miss`.
    pub fn of(pass: bool) -> Self {
        if pass { Verdict::Pass } else { Verdict::Miss }
    }

    /// The word printed in a table's result column.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
        }
    }
}

impl Report {
    fn ratio(&self, rate: &Rate) -> f64 {
        rate.mb_per_s() / self.sha256.mb_per_s()
    }

    /// Compression achieved on the text: bytes read per byte stored.
    pub fn text_compression(&self) -> f64 {
        let stats = &self.ingest_text.stats;
        stats.bytes_read as f64 / stats.bytes_stored.max(1) as f64
    }

    fn ingest_verdict(&self) -> Verdict {
        Verdict::of(self.ratio(&self.ingest_random.rate) >= INGEST_TARGET)
    }

    fn dedup_verdict(&self) -> Verdict {
        Verdict::of(self.ratio(&self.dedup.rate) >= DEDUP_TARGET)
    }

    fn restore_verdict(&self) -> Verdict {
        Verdict::of(self.ratio(&self.restore) >= RESTORE_TARGET)
    }

    fn open_verdict(&self) -> Verdict {
        Verdict::of(self.index.elapsed.as_secs_f64() <= OPEN_TARGET_SECONDS)
    }

    fn memory_verdict(&self) -> Verdict {
        Verdict::of(self.index.bytes_per_chunk <= BYTES_PER_CHUNK_TARGET)
    }

    /// Whether every figure with a target meets it.
    pub fn all_pass(&self) -> bool {
        [
            self.ingest_verdict(),
            self.dedup_verdict(),
            self.restore_verdict(),
            self.open_verdict(),
            self.memory_verdict(),
        ]
        .iter()
        .all(|v| *v == Verdict::Pass)
    }

    /// The report as a plain-text table with a short header and footnote.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 7]> = vec![
            [
                "measure",
                "figure",
                "vs SHA-256",
                "cores busy",
                "target",
                "result",
                "detail",
            ]
            .map(String::from),
        ];
        let mut rate_row =
            |name: &str, rate: &Rate, target: Option<(f64, Verdict)>, detail: String| {
                let (target, verdict) = match target {
                    Some((t, v)) => (format!(">= {t:.2}x"), v.label().to_string()),
                    None => ("-".to_string(), String::new()),
                };
                rows.push([
                    name.to_string(),
                    format!("{:.1} MB/s", rate.mb_per_s()),
                    format!("{:.2}x", self.ratio(rate)),
                    rate.cores_busy()
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or_default(),
                    target,
                    verdict,
                    detail,
                ]);
            };
        rate_row(
            "SHA-256, one core",
            &self.sha256,
            None,
            "the yardstick".into(),
        );
        rate_row(
            "SHA-256, one core, in pairs",
            &self.sha256_pairs,
            None,
            format!(
                "two messages side by side{}, as chunk ids are hashed",
                if tessera_sha256::pairs_side_by_side() {
                    ""
                } else {
                    " (not on this CPU: one after the other)"
                }
            ),
        );
        let random = &self.ingest_random.stats;
        rate_row(
            "ingest incompressible, CDC",
            &self.ingest_random.rate,
            Some((INGEST_TARGET, self.ingest_verdict())),
            format!(
                "{} chunks, {:.2} MiB average",
                random.chunks_new,
                mean_chunk_mib(random.bytes_new, random.chunks_new)
            ),
        );
        rate_row(
            "ingest text, CDC",
            &self.ingest_text.rate,
            None,
            format!("compressed {:.2}:1", self.text_compression()),
        );
        rate_row(
            "dedup re-ingest, CDC",
            &self.dedup.rate,
            Some((DEDUP_TARGET, self.dedup_verdict())),
            format!(
                "{} new bytes, {} chunks reused",
                self.dedup.stats.bytes_new, self.dedup.stats.chunks_reused
            ),
        );
        rate_row(
            "restore, packs from storage",
            &self.restore_storage,
            None,
            format!(
                "{} bytes, equal to the original",
                self.restore_storage.bytes
            ),
        );
        rate_row(
            "restore, packs in page cache",
            &self.restore,
            Some((RESTORE_TARGET, self.restore_verdict())),
            format!("{} bytes, equal to the original", self.restore.bytes),
        );
        rate_row(
            "ingest incompressible, fixed 64 KiB",
            &self.ingest_fixed.rate,
            None,
            format!("{} chunks", self.ingest_fixed.stats.chunks_new),
        );
        rate_row(
            "storage, pack files written",
            &self.storage,
            None,
            format!("the data alone, as pack files, {} at a time", self.cpus),
        );
        rows.push([
            format!(
                "open, index of {} chunks",
                thousands(self.index.chunks as u64)
            ),
            format!("{:.3} s", self.index.elapsed.as_secs_f64()),
            String::new(),
            String::new(),
            format!("<= {OPEN_TARGET_SECONDS:.2} s"),
            self.open_verdict().label().into(),
            "includes key derivation (8 MiB Argon2id)".into(),
        ]);
        rows.push([
            "index memory per chunk".into(),
            format!("{:.1} B", self.index.bytes_per_chunk),
            String::new(),
            String::new(),
            format!("<= {BYTES_PER_CHUNK_TARGET:.0} B"),
            self.memory_verdict().label().into(),
            String::new(),
        ]);

        let mut out = format!(
            "tessera vault benchmark: {} MiB per data set, {} CPUs, vaults in {}\n\n",
            self.size >> 20,
            self.cpus,
            self.dir.display()
        );
        out.push_str(&render(
            &rows,
            &[false, true, true, true, false, false, false],
        ));
        out.push_str(
            "\nMB = 10^6 bytes. Ingest is timed from Backup::start to commit, fsyncs included.\n\
             The first restore reads the packs from storage (dropped from the page cache),\n\
             the second from the page cache. Cores busy is the process's CPU time over\n\
             wall time: well below the CPU count means waiting on storage or on a serial\n\
             step.\n",
        );
        out
    }

    /// The report as a JSON object.
    pub fn json(&self) -> Value {
        let rate = |rate: &Rate| {
            json!({
                "bytes": rate.bytes,
                "seconds": rate.elapsed.as_secs_f64(),
                "mb_per_s": rate.mb_per_s(),
                "ratio_to_sha256": self.ratio(rate),
                "cpu_seconds": rate.cpu.map(|c| c.as_secs_f64()),
                "cores_busy": rate.cores_busy(),
            })
        };
        let ingest = |ingest: &Ingest, target: Option<(f64, Verdict)>| {
            let mut value = rate(&ingest.rate);
            value["stats"] = json!(ingest.stats);
            if let Some((t, v)) = target {
                value["target_ratio"] = json!(t);
                value["pass"] = json!(v == Verdict::Pass);
            }
            value
        };
        let mut restore = rate(&self.restore);
        restore["target_ratio"] = json!(RESTORE_TARGET);
        restore["pass"] = json!(self.restore_verdict() == Verdict::Pass);
        restore["verified"] = json!(true);
        let mut restore_storage = rate(&self.restore_storage);
        restore_storage["verified"] = json!(true);
        let mut text = ingest(&self.ingest_text, None);
        text["compression_ratio"] = json!(self.text_compression());
        json!({
            "size_bytes": self.size,
            "cpus": self.cpus,
            "dir": self.dir.display().to_string(),
            "sha256": rate(&self.sha256),
            "sha256_pairs": rate(&self.sha256_pairs),
            "ingest_incompressible": ingest(&self.ingest_random, Some((INGEST_TARGET, self.ingest_verdict()))),
            "ingest_text": text,
            "dedup_reingest": ingest(&self.dedup, Some((DEDUP_TARGET, self.dedup_verdict()))),
            "restore": restore,
            "restore_from_storage": restore_storage,
            "ingest_fixed_64k": ingest(&self.ingest_fixed, None),
            "storage_write": rate(&self.storage),
            "index": {
                "chunks": self.index.chunks,
                "open_seconds": self.index.elapsed.as_secs_f64(),
                "target_open_seconds": OPEN_TARGET_SECONDS,
                "open_pass": self.open_verdict() == Verdict::Pass,
                "bytes_per_chunk": self.index.bytes_per_chunk,
                "target_bytes_per_chunk": BYTES_PER_CHUNK_TARGET,
                "bytes_per_chunk_pass": self.memory_verdict() == Verdict::Pass,
            },
            "all_pass": self.all_pass(),
        })
    }
}

/// One row of the comparison: a figure of each tool and how tessera's meets its target.
struct CompareRow {
    name: &'static str,
    key: &'static str,
    tessera: f64,
    restic: f64,
    unit: Unit,
    target: Target,
}

/// What a comparison figure measures.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Seconds,
    Bytes,
}

/// The bound on tessera's figure.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// At most this multiple of restic's figure.
    Ratio(f64),
    /// At most this many bytes, whatever restic's figure.
    Bytes(u64),
}

impl CompareRow {
    /// tessera's figure over restic's; `None` when restic's is zero.
    fn ratio(&self) -> Option<f64> {
        (self.restic > 0.0).then(|| self.tessera / self.restic)
    }

    fn verdict(&self) -> Verdict {
        Verdict::of(match self.target {
            Target::Ratio(max) => self.ratio().is_some_and(|r| r <= max),
            Target::Bytes(max) => self.tessera <= max as f64,
        })
    }

    fn figure(&self, value: f64) -> String {
        match self.unit {
            Unit::Seconds => format!("{value:.2}"),
            Unit::Bytes => format!("{:.1}", value / MIB),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::Ratio(max) => format!("ratio <= {max:.2}x"),
            Target::Bytes(max) => format!("tessera <= {} MB", max / 1_000_000),
        }
    }

    fn json(&self) -> Value {
        let (tessera, restic) = match self.unit {
            Unit::Seconds => ("tessera_seconds", "restic_seconds"),
            Unit::Bytes => ("tessera_bytes", "restic_bytes"),
        };
        let value = |v: f64| match self.unit {
            Unit::Seconds => json!(v),
            Unit::Bytes => json!(v as u64),
        };
        let mut out = json!({
            tessera: value(self.tessera),
            restic: value(self.restic),
            "ratio": self.ratio(),
            "pass": self.verdict() == Verdict::Pass,
        });
        match self.target {
            Target::Ratio(max) => out["target_ratio"] = json!(max),
            Target::Bytes(max) => out["target_tessera_bytes"] = json!(max),
        }
        out
    }
}

/// Bytes in a MiB.
const MIB: f64 = (1u64 << 20) as f64;

impl Comparison {
    fn rows(&self) -> [CompareRow; 5] {
        let (t, r) = (&self.tessera, &self.restic);
        let seconds = |run: &Run| run.elapsed.as_secs_f64();
        let timed = |name, key, tessera: &Run, restic: &Run| CompareRow {
            name,
            key,
            tessera: seconds(tessera),
            restic: seconds(restic),
            unit: Unit::Seconds,
            target: Target::Ratio(COMPARE_TIME_TARGET),
        };
        [
            timed(
                "initial backup, s",
                "initial_backup",
                &t.initial,
                &r.initial,
            ),
            timed(
                "no-change re-backup, s",
                "rebackup",
                &t.rebackup,
                &r.rebackup,
            ),
            timed("restore, s", "restore", &t.restore, &r.restore),
            CompareRow {
                name: "repository size, MiB",
                key: "repository_size",
                tessera: t.repository_bytes as f64,
                restic: r.repository_bytes as f64,
                unit: Unit::Bytes,
                target: Target::Ratio(COMPARE_SIZE_TARGET),
            },
            CompareRow {
                name: "peak RSS, MiB",
                key: "peak_rss",
                tessera: t.peak_rss() as f64,
                restic: r.peak_rss() as f64,
                unit: Unit::Bytes,
                target: Target::Bytes(COMPARE_RSS_TARGET),
            },
        ]
    }

    /// Whether every figure of tessera meets its target and both restores equal the tree.
    pub fn all_pass(&self) -> bool {
        self.rows().iter().all(|row| row.verdict() == Verdict::Pass)
            && self.tessera.differences.is_empty()
            && self.restic.differences.is_empty()
    }

    /// The comparison as a plain-text table with a short header and footnote.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 6]> =
            vec![["measure", "tessera", "restic", "ratio", "target", "result"].map(String::from)];
        for row in self.rows() {
            rows.push([
                row.name.to_string(),
                row.figure(row.tessera),
                row.figure(row.restic),
                row.ratio()
                    .map(|r| format!("{r:.2}x"))
                    .unwrap_or("-".into()),
                row.target_text(),
                row.verdict().label().to_string(),
            ]);
        }
        let size = &self.tree_size;
        let mut out = format!(
            "tessera vs restic: {}, {} files ({:.1} MiB), {} directories, {} symlinks\n\
             {} CPUs, repositories in {}\n",
            self.tree.display(),
            thousands(size.files),
            size.bytes as f64 / MIB,
            thousands(size.dirs),
            thousands(size.symlinks),
            self.cpus,
            self.dir.display()
        );
        for tool in [&self.tessera, &self.restic] {
            out.push_str(&format!(
                "{:<8} {} ({})\n",
                format!("{}:", tool.tool.name()),
                tool.version,
                tool.program.display()
            ));
        }
        out.push('\n');
        out.push_str(&render(&rows, &[false, true, true, true, false, false]));
        out.push('\n');
        for tool in [&self.tessera, &self.restic] {
            let name = tool.tool.name();
            if tool.differences.is_empty() {
                out.push_str(&format!("{name}'s restore equals the original.\n"));
            } else {
                out.push_str(&format!(
                    "warning: {name}'s restore differs from the original: {}\n",
                    tool.differences.summary()
                ));
            }
        }
        out.push_str(
            "\nWall-clock time of each command, run as a fresh process, with the tree already\n\
             in the page cache; each restore starts after a pause (--settle), into a file\n\
             system where no restored tree was deleted during the run (both are removed at\n\
             the end). Ratio is tessera / restic. Repository\n\
             size is the apparent size of its files after both backups. Peak RSS is the\n\
             largest peak resident set size of the three commands. MiB = 2^20 bytes,\n\
             MB = 10^6 bytes.\n",
        );
        out
    }

    /// The comparison as a JSON object.
    pub fn json(&self) -> Value {
        let run = |run: &Run| {
            json!({
                "seconds": run.elapsed.as_secs_f64(),
                "cpu_seconds": run.cpu.as_secs_f64(),
                "peak_rss_bytes": run.peak_rss,
            })
        };
        let tool = |figures: &ToolFigures| {
            json!({
                "program": figures.program.display().to_string(),
                "version": figures.version,
                "initial_backup": run(&figures.initial),
                "rebackup": run(&figures.rebackup),
                "restore": run(&figures.restore),
                "repository_bytes": figures.repository_bytes,
                "peak_rss_bytes": figures.peak_rss(),
                "restore_equal": figures.differences.is_empty(),
                "restore_differences": {
                    "missing": figures.differences.missing,
                    "extra": figures.differences.extra,
                    "changed": figures.differences.changed,
                    "examples": figures.differences.examples,
                },
            })
        };
        let comparison: serde_json::Map<String, Value> = self
            .rows()
            .iter()
            .map(|row| (row.key.to_string(), row.json()))
            .collect();
        let size = &self.tree_size;
        json!({
            "tree": {
                "path": self.tree.display().to_string(),
                "files": size.files,
                "dirs": size.dirs,
                "symlinks": size.symlinks,
                "special": size.special,
                "bytes": size.bytes,
            },
            "dir": self.dir.display().to_string(),
            "cpus": self.cpus,
            "tessera": tool(&self.tessera),
            "restic": tool(&self.restic),
            "comparison": comparison,
            "all_pass": self.all_pass(),
        })
    }
}

fn mean_chunk_mib(bytes: u64, chunks: u64) -> f64 {
    bytes as f64 / chunks.max(1) as f64 / (1u64 << 20) as f64
}

/// `1000000` as `1,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Lays rows out in columns two spaces apart; `right[i]` right-aligns column `i`. The last
/// column is not padded so lines carry no trailing blanks.
pub fn render<const N: usize>(rows: &[[String; N]], right: &[bool; N]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i] - cell.chars().count();
            if right[i] {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i + 1 < N {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::compare::Tool;
    use crate::tree::{Differences, TreeSize};

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    fn figures(tool: Tool, seconds: [u64; 3], repository_mib: u64, rss_mib: u64) -> ToolFigures {
        let run = |s: u64| Run {
            elapsed: Duration::from_secs(s),
            cpu: Duration::from_secs(s),
            peak_rss: rss_mib << 20,
        };
        ToolFigures {
            tool,
            program: PathBuf::from(format!("/bin/{}", tool.name())),
            version: format!("{} 1.0", tool.name()),
            initial: run(seconds[0]),
            rebackup: run(seconds[1]),
            restore: run(seconds[2]),
            repository_bytes: repository_mib << 20,
            differences: Differences::default(),
        }
    }

    fn comparison(tessera: ToolFigures) -> Comparison {
        Comparison {
            tree: PathBuf::from("/usr/share"),
            tree_size: TreeSize {
                files: 12_345,
                dirs: 678,
                symlinks: 9,
                special: 0,
                bytes: 600 << 20,
            },
            dir: PathBuf::from("/var/tmp"),
            cpus: 2,
            tessera,
            restic: figures(Tool::Restic, [40, 10, 20], 400, 150),
        }
    }

    #[test]
    fn comparison_targets() {
        let good = comparison(figures(Tool::Tessera, [20, 5, 10], 400, 95));
        assert!(good.all_pass());
        let table = good.table();
        assert!(table.starts_with(
            "tessera vs restic: /usr/share, 12,345 files (600.0 MiB), 678 directories, 9 symlinks\n\
             2 CPUs, repositories in /var/tmp\n\
             tessera: tessera 1.0 (/bin/tessera)\n\
             restic:  restic 1.0 (/bin/restic)\n\n\
             measure                 tessera  restic  ratio  target             result\n\
             initial backup, s         20.00   40.00  0.50x  ratio <= 0.50x     PASS\n\
             no-change re-backup, s     5.00   10.00  0.50x  ratio <= 0.50x     PASS\n\
             restore, s                10.00   20.00  0.50x  ratio <= 0.50x     PASS\n\
             repository size, MiB      400.0   400.0  1.00x  ratio <= 1.00x     PASS\n\
             peak RSS, MiB              95.0   150.0  0.63x  tessera <= 100 MB  PASS\n\n\
             tessera's restore equals the original.\n\
             restic's restore equals the original.\n"
        ), "{table}");
        let json = good.json();
        assert_eq!(json["comparison"]["restore"]["ratio"], 0.5);
        assert_eq!(json["comparison"]["peak_rss"]["tessera_bytes"], 95u64 << 20);
        assert_eq!(json["tessera"]["peak_rss_bytes"], 95u64 << 20);
        assert_eq!(json["all_pass"], true);

        // 96 MiB is over 100 MB; one second over half of restic's time misses too.
        let bad = comparison(figures(Tool::Tessera, [21, 5, 10], 401, 96));
        assert!(!bad.all_pass());
        let table = bad.table();
        for line in [
            "initial backup, s         21.00   40.00  0.53x  ratio <= 0.50x     MISS",
            "repository size, MiB      401.0   400.0  1.00x  ratio <= 1.00x     MISS",
            "peak RSS, MiB              96.0   150.0  0.64x  tessera <= 100 MB  MISS",
        ] {
            assert!(table.contains(line), "{table}");
        }

        let mut differing = comparison(figures(Tool::Tessera, [20, 5, 10], 400, 95));
        differing.tessera.differences.missing = 1;
        assert!(!differing.all_pass());
        assert_eq!(differing.json()["tessera"]["restore_equal"], false);
    }

    #[test]
    fn columns_align() {
        let rows = [
            ["a".to_string(), "1".to_string()],
            ["bbb".to_string(), "22".to_string()],
        ];
        assert_eq!(render(&rows, &[false, true]), "a     1\nbbb  22\n");
    }
}
