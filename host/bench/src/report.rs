//! The figures of a run, their targets, and how they are printed: a plain table for
//! people, a JSON object for scripts.

use std::path::PathBuf;

use serde_json::{Value, json};

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
    /// Incompressible data into a fresh vault, content-defined chunks.
    pub ingest_random: Ingest,
    /// Pseudo-English text into a fresh vault, content-defined chunks.
    pub ingest_text: Ingest,
    /// The incompressible data again, into the vault that already holds it.
    pub dedup: Ingest,
    /// Reading the incompressible data back.
    pub restore: Rate,
    /// Incompressible data into a fresh vault, fixed 64 KiB chunks.
    pub ingest_fixed: Ingest,
    /// Opening a vault whose index lists a million chunks.
    pub index: IndexOpen,
}

/// How a figure compares with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Miss,
}

impl Verdict {
    fn of(pass: bool) -> Self {
        if pass { Verdict::Pass } else { Verdict::Miss }
    }

    fn label(self) -> &'static str {
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
            "restore, CDC",
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
            "\nMB = 10^6 bytes. Ingest is timed from Backup::start to commit, fsyncs included;\n\
             restore reads packs just written, mostly from the page cache. Cores busy is the\n\
             process's CPU time over wall time: well below the CPU count means waiting on\n\
             storage or on a serial step.\n",
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
        let mut text = ingest(&self.ingest_text, None);
        text["compression_ratio"] = json!(self.text_compression());
        json!({
            "size_bytes": self.size,
            "cpus": self.cpus,
            "dir": self.dir.display().to_string(),
            "sha256": rate(&self.sha256),
            "ingest_incompressible": ingest(&self.ingest_random, Some((INGEST_TARGET, self.ingest_verdict()))),
            "ingest_text": text,
            "dedup_reingest": ingest(&self.dedup, Some((DEDUP_TARGET, self.dedup_verdict()))),
            "restore": restore,
            "ingest_fixed_64k": ingest(&self.ingest_fixed, None),
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
fn render<const N: usize>(rows: &[[String; N]], right: &[bool; N]) -> String {
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
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
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
