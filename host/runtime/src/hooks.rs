//! Pre- and post-snapshot commands: what an operator runs around a capture to make it
//! application-consistent (a guest agent's `fsfreeze`, a database's backup mode). The
//! host runs them, never the plugin: a sandboxed plugin cannot start processes, and the
//! commands are the operator's, not the plugin's.
//!
//! Each command runs through `/bin/sh -c` in its own process group with a time limit; at
//! the limit the whole group is killed. The post command always runs once the pre command
//! was attempted, whatever happened in between.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output kept from a command for its error message: the end, where the cause usually is.
const KEPT_OUTPUT: usize = 4096;

/// The commands configured around one capture.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Run before the capture; the point is application-consistent only if it succeeds.
    pub pre: Option<String>,
    /// Run after the capture, whatever happened.
    pub post: Option<String>,
    /// How long each command may run before its process group is killed.
    pub timeout: Duration,
}

/// When a command runs, passed to it as `TESSERA_HOOK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPhase {
    /// Before the capture.
    Pre,
    /// After it.
    Post,
}

impl HookPhase {
    fn name(self) -> &'static str {
        match self {
            HookPhase::Pre => "pre",
            HookPhase::Post => "post",
        }
    }
}

/// Runs `command` for `item` and reports why it failed, if it did: a non-zero exit, a
/// signal, or the time limit, with the end of what it printed.
pub fn run_hook(
    command: &str,
    phase: HookPhase,
    item: &str,
    timeout: Duration,
) -> Result<(), String> {
    let what = format!("{}-snapshot command `{command}`", phase.name());
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("TESSERA_HOOK", phase.name())
        .env("TESSERA_ITEM", item)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{what} could not be started: {e}"))?;
    let output = Arc::new(Mutex::new(Vec::new()));
    // Readers drain both pipes so a talkative command never blocks on a full pipe. They
    // are not joined: a command that leaves a process behind keeps its pipes open.
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let output = output.clone();
        std::thread::spawn(move || drain(pipe, &output));
    }
    let status = wait_with_timeout(&mut child, timeout);
    // Give the readers a moment to collect the last words of a command that exited.
    std::thread::sleep(Duration::from_millis(20));
    let printed = {
        let bytes = output.lock().expect("lock");
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!("; it printed: {text}")
        }
    };
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{what} failed ({status}){printed}")),
        Err(Timeout) => Err(format!(
            "{what} did not finish within {} s and was killed{printed}",
            timeout.as_secs_f64()
        )),
    }
}

struct Timeout;

/// Waits for `child`; at the deadline kills its process group and reports the timeout.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<ExitStatus, Timeout> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            // Out of time, or the child cannot be waited for: stop it and everything it
            // started.
            _ => {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(Timeout);
            }
        }
    }
}

fn drain(mut pipe: Box<dyn Read + Send>, output: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut kept = output.lock().expect("lock");
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > KEPT_OUTPUT {
            let cut = kept.len() - KEPT_OUTPUT;
            kept.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_succeeding_command_passes_and_sees_its_phase() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("mark");
        let command = format!("echo \"$TESSERA_HOOK $TESSERA_ITEM\" > {}", mark.display());
        run_hook(&command, HookPhase::Pre, "vm1", Duration::from_secs(10)).unwrap();
        assert_eq!(std::fs::read_to_string(&mark).unwrap(), "pre vm1\n");
    }

    #[test]
    fn a_failing_command_reports_its_status_and_output() {
        let err = run_hook(
            "echo freeze refused >&2; exit 3",
            HookPhase::Pre,
            "vm1",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("freeze refused"), "{err}");
    }

    #[test]
    fn a_hanging_command_and_its_children_are_killed_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let command = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let started = Instant::now();
        let err =
            run_hook(&command, HookPhase::Pre, "vm1", Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.contains("was killed"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background `sleep` died with its group (it may linger briefly as a zombie
        // of the killed shell until reaped by init).
        std::thread::sleep(Duration::from_millis(100));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z"),
            "sleep still running: {state}"
        );
    }
}
