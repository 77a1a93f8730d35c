//! Timing another program and reading its peak memory.
//!
//! The kernel keeps the peak resident set size of every process, and hands it to the
//! parent with the exit status (`wait4`) or, summed up as a maximum over every child the
//! parent has waited for, through `getrusage(RUSAGE_CHILDREN)`. The standard library
//! offers neither, so each measured program runs under a small relay: this same
//! executable started as `tessera-bench __measure PROGRAM ARGS...`. The relay's only
//! child is the program, so once it has waited for it, `getrusage(RUSAGE_CHILDREN)` is
//! exactly that program's peak (and CPU time). The relay prints those figures on its
//! standard output and exits with the program's status.
//!
//! Nothing outside this executable is needed (no GNU `time`), and the figures are the
//! kernel's own rather than samples of `/proc`. The relay adds one `exec` of this
//! executable, a few milliseconds, to each measured wall-clock time.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeValLike;

use crate::{Context, Failure, Result};

/// The hidden command that starts the relay.
pub const RELAY_COMMAND: &str = "__measure";

/// Lines of a failed program's standard error quoted in the failure message.
const STDERR_LINES: usize = 10;

/// What one measured run of a program took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    /// Wall-clock time from starting the relay to its exit.
    pub elapsed: Duration,
    /// CPU time of the program, user and system, all threads.
    pub cpu: Duration,
    /// Peak resident set size of the program, in bytes.
    pub peak_rss: u64,
}

/// Runs `program` (its arguments and environment as set) through the relay and measures
/// it. The program's standard output is discarded; its standard error is kept to explain
/// a failure, which `what` names.
pub fn measured(program: &Command, what: &str) -> Result<Run> {
    let relay = std::env::current_exe().context("cannot find this executable")?;
    let mut command = Command::new(relay);
    command
        .arg(RELAY_COMMAND)
        .arg(program.get_program())
        .args(program.get_args());
    // The relay passes its environment on to the program.
    for (key, value) in program.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let start = Instant::now();
    let output = run(command, what)?;
    let elapsed = start.elapsed();
    let (peak_rss, cpu) = parse_relay_output(&output.stdout).ok_or_else(|| {
        Failure::new(format!(
            "{what}: the measuring relay printed '{}'",
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    })?;
    Ok(Run {
        elapsed,
        cpu,
        peak_rss,
    })
}

/// Runs `command` to completion, capturing its output, and turns a failure to start or a
/// non-zero exit into a [`Failure`] naming `what` and quoting the end of standard error.
pub fn run(mut command: Command, what: &str) -> Result<Output> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .context(format!("{what}: cannot start the program"))?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n  ");
    let status = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "failed".to_string(),
    };
    Err(Failure::new(if tail.is_empty() {
        format!("{what}: {status}")
    } else {
        format!("{what}: {status}:\n  {tail}")
    }))
}

/// CPU time, user and system, of every child this process has waited for so far: the
/// difference across one [`run`] is that program's.
pub fn children_cpu() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)
        .map_err(|e| Failure::new(format!("cannot read the children's resource usage: {e}")))?;
    Ok(cpu_time(&usage))
}

/// User plus system time in `usage`.
fn cpu_time(usage: &nix::sys::resource::Usage) -> Duration {
    let micros = (usage.user_time() + usage.system_time()).num_microseconds();
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// Reads the relay's line: peak RSS in bytes and CPU time in microseconds.
fn parse_relay_output(stdout: &[u8]) -> Option<(u64, Duration)> {
    let text = std::str::from_utf8(stdout).ok()?;
    let mut fields = text.split_whitespace();
    let peak_rss = fields.next()?.parse().ok()?;
    let cpu_micros = fields.next()?.parse().ok()?;
    fields
        .next()
        .is_none()
        .then(|| (peak_rss, Duration::from_micros(cpu_micros)))
}

/// The relay: runs `args[0]` with the rest as its arguments, standard output discarded and
/// standard error shared, then prints its peak RSS and CPU time and exits as it did (128
/// plus the signal number when a signal killed it).
pub fn relay_main(args: Vec<OsString>) -> ExitCode {
    let mut args = args.into_iter();
    let Some(program) = args.next().map(PathBuf::from) else {
        eprintln!("tessera-bench: {RELAY_COMMAND} needs a program to run");
        return ExitCode::from(2);
    };
    let status = match Command::new(&program)
        .args(args)
        .stdout(Stdio::null())
        .status()
    {
        Ok(status) => status,
        Err(e) => {
            eprintln!("tessera-bench: cannot start {}: {e}", program.display());
            return ExitCode::from(127);
        }
    };
    let usage = match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(usage) => usage,
        Err(e) => {
            eprintln!("tessera-bench: cannot read the resource usage: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cpu = cpu_time(&usage);
    let peak_rss = max_rss_bytes(usage.max_rss());
    let printed = writeln!(std::io::stdout(), "{peak_rss} {}", cpu.as_micros());
    if let Err(e) = printed {
        eprintln!("tessera-bench: cannot report the resource usage: {e}");
        return ExitCode::FAILURE;
    }
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(255)),
        (None, None) => ExitCode::FAILURE,
    }
}

/// `ru_maxrss` in bytes: the kernel reports kibibytes, except on Apple systems.
fn max_rss_bytes(max_rss: std::ffi::c_long) -> u64 {
    let value = u64::try_from(max_rss).unwrap_or(0);
    if cfg!(target_vendor = "apple") {
        value
    } else {
        value * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_output_is_two_numbers() {
        assert_eq!(
            parse_relay_output(b"1048576 2500000\n"),
            Some((1 << 20, Duration::from_millis(2500)))
        );
        assert_eq!(parse_relay_output(b""), None);
        assert_eq!(parse_relay_output(b"1048576\n"), None);
        assert_eq!(parse_relay_output(b"1 2 3\n"), None);
        assert_eq!(parse_relay_output(b"-1 2\n"), None);
    }

    #[test]
    fn failures_quote_standard_error() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo first >&2; echo; echo last >&2; exit 3"]);
        let error = run(command, "the step").unwrap_err().to_string();
        assert_eq!(error, "the step: exit status 3:\n  first\n  last");

        let error = run(Command::new("/nonexistent/program"), "the step")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("the step: cannot start the program: "));
    }
}
