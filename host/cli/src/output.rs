//! Printing results: JSON for scripts, aligned tables and short lines for people.
//!
//! Results go to standard output; notes meant for a person (what was created, a summary
//! of work done) go to standard error, and only when it is a terminal, so a script that
//! captures `tessera backup` gets the point id and nothing else. Write errors are
//! returned rather than panicking, so `tessera points | head` ends quietly.

use std::io::{self, IsTerminal, Write};

use indicatif::HumanBytes;
use serde::Serialize;

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    stderr_is_terminal: bool,
}

impl Output {
    /// Output as JSON (`--json`) or for people.
    pub fn new(json: bool) -> Self {
        Output {
            json,
            stderr_is_terminal: io::stderr().is_terminal(),
        }
    }

    /// Whether results are printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Whether standard error is a terminal (progress bars and notes are shown).
    pub fn interactive(&self) -> bool {
        self.stderr_is_terminal
    }

    /// Prints a value as pretty JSON on standard output.
    pub fn print_json<T: Serialize + ?Sized>(&self, value: &T) -> io::Result<()> {
        let mut out = io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        out.flush()
    }

    /// Prints one line on standard output.
    pub fn line(&self, text: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()
    }

    /// Tells a person at a terminal something that is not part of the result.
    pub fn note(&self, text: &str) {
        if self.stderr_is_terminal {
            eprintln!("{text}");
        }
    }

    /// Reports something the user should know even in a script (partial captures,
    /// metadata a restore could not apply).
    pub fn warn(&self, text: &str) {
        eprintln!("tessera: warning: {text}");
    }
}

/// Whether a table column's cells line up on their left or right edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers and sizes.
    Right,
}

/// A table printed with its columns aligned; the last column is never padded, so long
/// paths do not leave trailing blanks.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings and alignments.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Prints the heading and the rows on standard output.
    pub fn print(&self) -> io::Result<()> {
        let mut out = io::stdout().lock();
        write!(out, "{}", self.render())?;
        out.flush()
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let headings: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        let mut text = String::new();
        for row in std::iter::once(&headings).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                match self.columns[i].1 {
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                    Align::Left if i == last => line.push_str(cell),
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// A count with its noun, singular or plural (`1 entry`, `3 entries`).
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A byte count for people, in binary units (`1.50 MiB`).
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// A time for people, in the system's time zone, to the second.
pub fn local_time(time: jiff::Timestamp) -> String {
    time.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A duration for people, in seconds with one decimal.
pub fn seconds(duration: std::time::Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// Milliseconds, as JSON output gives durations.
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_leave_no_trailing_blanks() {
        let mut table = Table::new(&[
            ("ID", Align::Left),
            ("SIZE", Align::Right),
            ("PATH", Align::Left),
        ]);
        table.row(vec!["a".into(), "1 B".into(), "x".into()]);
        table.row(vec!["bcd".into(), "10.0 KiB".into(), "longer/path".into()]);
        assert_eq!(
            table.render(),
            "ID       SIZE  PATH\n\
             a         1 B  x\n\
             bcd  10.0 KiB  longer/path\n"
        );
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(1u64, "entry", "entries"), "1 entry");
        assert_eq!(count(0u64, "entry", "entries"), "0 entries");
        assert_eq!(count(2u32, "pack", "packs"), "2 packs");
    }

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.50 KiB");
    }
}
