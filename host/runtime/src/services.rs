//! Host services every plugin may call: logging into `tracing`, progress, cancellation,
//! and POSIX metadata inside its grant.

use std::sync::Arc;

use rustix::fs::FileType;

use crate::bindings::host::{
    self, ByteRange, HostError, Level, PosixStat, RestoreMetadata, ScannedEntry, Xattr,
};
use crate::bindings::types;
use crate::convert::grant_error;
use crate::grant::{Grant, Scanned, Stat};
use crate::limits::MAX_LOG_MESSAGE;
use crate::scan_ahead::ScanAhead;
use crate::state::{JobState, PROGRESS_EVERY, Phase, ProgressUpdate};

impl types::Host for JobState {}

fn posix_stat(st: &Stat) -> PosixStat {
    PosixStat {
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        size: st.size,
        inode: st.inode,
        dev: st.dev,
        rdev: st.rdev,
        nlink: st.nlink,
        mtime_ns: st.mtime_ns,
        atime_ns: st.atime_ns,
        ctime_ns: st.ctime_ns,
    }
}

fn host_error_message(e: HostError) -> String {
    match e {
        HostError::Denied(m)
        | HostError::NotFound(m)
        | HostError::Invalid(m)
        | HostError::Limit(m)
        | HostError::Io(m)
        | HostError::Vault(m)
        | HostError::WrongPhase(m) => m,
    }
}

impl JobState {
    /// Scans a directory of the grant; during a capture through the read-ahead, which
    /// starts with the first scan.
    fn scan_dir(&mut self, path: &str) -> Result<Vec<Scanned>, HostError> {
        if matches!(self.phase, Phase::Capture(_)) && self.scan_ahead.is_none() {
            let grant = Arc::clone(
                self.grant
                    .as_ref()
                    .ok_or_else(|| HostError::Denied("this job grants no directory".into()))?,
            );
            match ScanAhead::start(grant) {
                Ok(ahead) => self.scan_ahead = Some(ahead),
                Err(e) => tracing::debug!(error = %e, "scanning without read-ahead"),
            }
        }
        match &self.scan_ahead {
            Some(ahead) => ahead.scan(path),
            None => self.grant()?.scan(path),
        }
        .map_err(grant_error)
    }

    fn grant(&self) -> Result<&Grant, HostError> {
        self.grant
            .as_deref()
            .ok_or_else(|| HostError::Denied("this job grants no directory".into()))
    }
}

impl host::Host for JobState {
    fn log(&mut self, level: Level, mut message: String) {
        self.touch();
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        let plugin = self.plugin.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn progress(&mut self, done_bytes: u64, total_bytes: u64, done_items: u64, total_items: u64) {
        self.touch();
        let due = self
            .last_progress
            .is_none_or(|last| last.elapsed() >= PROGRESS_EVERY);
        if !due {
            return;
        }
        self.last_progress = Some(self.last_host_call);
        if let Some(tx) = &self.progress {
            // The receiver only goes away once the job is over.
            let _ = tx.try_send(ProgressUpdate {
                done_bytes,
                total_bytes,
                done_items,
                total_items,
            });
        }
    }

    fn cancelled(&mut self) -> bool {
        self.touch();
        self.is_cancelled()
    }

    fn stat(&mut self, path: String) -> Result<PosixStat, HostError> {
        self.touch();
        self.settle(&path)?;
        let st = self.grant()?.stat(&path).map_err(grant_error)?;
        Ok(posix_stat(&st))
    }

    fn scan(&mut self, path: String) -> Result<Vec<ScannedEntry>, HostError> {
        self.touch();
        self.settle(&path)?;
        let found = self.scan_dir(&path)?;
        Ok(found
            .into_iter()
            .map(|entry| {
                let (xattrs, xattrs_error) = match entry.xattrs {
                    Ok(xattrs) => (xattrs, None),
                    Err(e) => (Vec::new(), Some(host_error_message(grant_error(e)))),
                };
                ScannedEntry {
                    name: entry.name,
                    stat: entry.stat.map(|st| posix_stat(&st)).map_err(grant_error),
                    xattrs: xattrs
                        .into_iter()
                        .map(|(name, value)| Xattr { name, value })
                        .collect(),
                    xattrs_error,
                    holes: entry
                        .holes
                        .into_iter()
                        .map(|(offset, length)| ByteRange { offset, length })
                        .collect(),
                }
            })
            .collect())
    }

    fn xattrs(&mut self, path: String) -> Result<Vec<Xattr>, HostError> {
        self.touch();
        self.settle(&path)?;
        let found = self.grant()?.xattrs(&path).map_err(grant_error)?;
        Ok(found
            .into_iter()
            .map(|(name, value)| Xattr { name, value })
            .collect())
    }

    fn holes(&mut self, path: String) -> Result<Vec<ByteRange>, HostError> {
        self.touch();
        self.settle(&path)?;
        let found = self.grant()?.holes(&path).map_err(grant_error)?;
        Ok(found
            .into_iter()
            .map(|(offset, length)| ByteRange { offset, length })
            .collect())
    }

    fn read_link(&mut self, path: String) -> Result<String, HostError> {
        self.touch();
        self.settle(&path)?;
        self.grant()?.read_link(&path).map_err(grant_error)
    }

    fn make_symlink(&mut self, path: String, target: String) -> Result<(), HostError> {
        self.touch();
        self.settle(&path)?;
        self.grant()?
            .make_symlink(&path, &target)
            .map_err(grant_error)
    }

    fn set_metadata(&mut self, path: String, meta: RestoreMetadata) -> Result<(), HostError> {
        self.touch();
        // A file still being written gets its metadata from its writer, afterwards; a
        // directory with files still being written below it, once they are.
        if let Some(pool) = &self.writes
            && let Some(grant) = &self.grant
            && (pool.defer_metadata(&path, &meta) || pool.defer_dir_metadata(&path, &meta, grant))
        {
            return Ok(());
        }
        self.settle(&path)?;
        let warnings = self
            .grant()?
            .set_metadata(&path, &meta)
            .map_err(grant_error)?;
        if warnings.is_empty() {
            Ok(())
        } else {
            // Everything else was applied; the plugin records these as warnings.
            Err(HostError::Denied(warnings.join("; ")))
        }
    }

    fn make_fifo(&mut self, path: String, mode: u32) -> Result<(), HostError> {
        self.touch();
        self.settle(&path)?;
        self.grant()?
            .make_node(&path, FileType::Fifo, mode, 0)
            .map_err(grant_error)
    }

    fn make_device(
        &mut self,
        path: String,
        mode: u32,
        rdev: u64,
        block: bool,
    ) -> Result<(), HostError> {
        self.touch();
        self.settle(&path)?;
        let kind = if block {
            FileType::BlockDevice
        } else {
            FileType::CharacterDevice
        };
        self.grant()?
            .make_node(&path, kind, mode, rdev)
            .map_err(grant_error)
    }
}
