//! The state of one job inside its `Store`: the sandbox's WASI context, the grant, the
//! limits, and what the job is doing (capturing into a backup, or reading a point).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;
use tessera_vault::commands::backup::{Backup, CommitOptions};
use tessera_vault::{Point, Vault};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::grant::Grant;

/// Shortest interval between two progress reports relayed.
pub(crate) const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A progress report relayed to the thread that started the job.
#[derive(Debug, Clone, Copy)]
pub struct ProgressUpdate {
    /// Bytes done.
    pub done_bytes: u64,
    /// Bytes in all, 0 if unknown.
    pub total_bytes: u64,
    /// Items done.
    pub done_items: u64,
    /// Items in all, 0 if unknown.
    pub total_items: u64,
}

/// What the job does.
pub enum Phase {
    /// Loading the plugin: only `describe` runs, with no grant.
    Describe,
    /// Capturing into a backup.
    Capture(Box<CaptureState>),
    /// Reading a point (restore or browse).
    Read(Box<ReadState>),
}

/// A capture in progress.
pub struct CaptureState {
    /// The writer session.
    pub backup: Backup,
    /// How the capture ends, filled in by the plugin's calls.
    pub commit: CommitOptions,
}

/// A point being read.
pub struct ReadState {
    /// The vault.
    pub vault: Vault,
    /// The point.
    pub point: Point,
}

/// Store data of one job.
pub struct JobState {
    /// The plugin's name, for log records and errors.
    pub plugin: String,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    /// The directory the plugin may use through host calls.
    pub grant: Option<Arc<Grant>>,
    /// What the job does.
    pub phase: Phase,
    /// When the plugin last called the host: a plugin that computes for longer than the
    /// CPU limit without calling is stopped.
    pub last_host_call: Instant,
    pub(crate) progress: Option<Sender<ProgressUpdate>>,
    /// When progress was last relayed: reports are passed on at most every
    /// [`PROGRESS_EVERY`], so a plugin reporting per file does not wake a thread per file.
    pub(crate) last_progress: Option<Instant>,
    pub(crate) cancel: Arc<AtomicBool>,
    /// Threads writing restored files, started by the first `write-to`.
    pub(crate) writes: Option<crate::writes::WritePool>,
    /// The directory scans of a capture, read ahead; started by the first `scan`.
    pub(crate) scan_ahead: Option<crate::scan_ahead::ScanAhead>,
    /// Handles open: content readers and writers, connections and buffers.
    pub open_handles: usize,
    /// The network addresses the plugin may connect to.
    pub(crate) network: Vec<std::net::SocketAddr>,
    /// Bytes held in the plugin's buffers ([`crate::net::Buffer`]).
    pub(crate) buffer_bytes: u64,
}

impl JobState {
    /// State for a job of `plugin`.
    pub fn new(
        plugin: String,
        wasi: WasiCtx,
        limits: StoreLimits,
        grant: Option<Grant>,
        phase: Phase,
    ) -> Self {
        JobState {
            plugin,
            wasi,
            table: ResourceTable::new(),
            limits,
            grant: grant.map(Arc::new),
            phase,
            last_host_call: Instant::now(),
            progress: None,
            last_progress: None,
            cancel: Arc::new(AtomicBool::new(false)),
            writes: None,
            scan_ahead: None,
            open_handles: 0,
            network: Vec::new(),
            buffer_bytes: 0,
        }
    }

    /// Waits for restored files being written at or below `path`; reports a failed one.
    pub(crate) fn settle(&self, path: &str) -> Result<(), crate::bindings::types::HostError> {
        match &self.writes {
            Some(pool) => pool
                .settle(path)
                .map_err(crate::bindings::types::HostError::Io),
            None => Ok(()),
        }
    }

    /// Notes a host call (the plugin is alive and making progress).
    pub fn touch(&mut self) {
        self.last_host_call = Instant::now();
    }

    /// Whether the job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
