//! Capture: a depth-first walk of the granted source directory in sorted name order,
//! storing regular files in fixed chunks and directories as entries. With a parent point
//! an unchanged file is carried forward whole and a grown one has its whole chunks
//! carried, so only new bytes are read (see the crate docs for what that trusts).
//! Symlinks and special files are skipped with a warning in the log: an archive of
//! append-only files has no use for them, and they are not a failure to read the source.

use tessera_plugin_sdk::content::Writer;
use tessera_plugin_sdk::error::{from_host, host_error_text};
use tessera_plugin_sdk::filter::PathFilter;
use tessera_plugin_sdk::host::{PosixStat, ScannedEntry};
use tessera_plugin_sdk::meta::{self, FileType};
use tessera_plugin_sdk::path::{self, Mount};
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::settings::Settings;
use tessera_plugin_sdk::sink::ParentEntry;
use tessera_plugin_sdk::{debug, info, warn};

use crate::{EXCLUDE, INCLUDE, VERIFY};

/// The fixed chunk size of stored files, and so the unit of carrying: `carry` takes whole
/// chunks of the parent's content, so a grown file rereads at most its last partial chunk.
/// Chunks start at multiples of it, so a log renamed by rotation, read again under its new
/// name, cuts into the chunks already stored. Larger chunks mean fewer index entries per
/// GiB of log but more bytes read again.
const CHUNK_SIZE: u32 = 1 << 20;

/// How much of a file is read between two checks for cancellation and progress reports.
const CHECK_EVERY: u64 = 64 << 20;

/// Why the point is only crash-consistent: files are read while writers append to them.
const CONSISTENCY_REASON: &str = "files were read while in use; no file-system snapshot";

/// What a capture does with a file, given the parent point's entry at its path.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Unchanged: the parent's entry is kept as it is and nothing is read.
    Keep,
    /// Grown (or rewritten at the same size) under the same inode, so trusted to be the
    /// parent's bytes with more appended: the parent's first `carried` bytes (its whole
    /// chunks) are carried and only the rest is read.
    Append {
        /// Bytes taken from the parent, a multiple of [`CHUNK_SIZE`].
        carried: u64,
    },
    /// New, rotated (another inode) or truncated: read in full.
    Read,
}

/// Decides what to do with a file whose current metadata is `current`.
fn plan(parent: Option<&ParentEntry>, current: &Metadata) -> Plan {
    let Some(parent) = parent else {
        return Plan::Read;
    };
    let before = &parent.entry.meta;
    if meta::unchanged(before, current) {
        Plan::Keep
    } else if before.inode.is_some()
        && before.inode == current.inode
        && parent.content_length <= current.size
    {
        let chunk = u64::from(CHUNK_SIZE);
        Plan::Append {
            carried: parent.content_length / chunk * chunk,
        }
    } else {
        Plan::Read
    }
}

/// Runs a capture job.
pub(crate) fn run(request: &CaptureRequest) -> Result<CaptureSummary, PluginError> {
    let settings = Settings::new(&request.settings);
    let filter = PathFilter::new(&settings.all(INCLUDE), &settings.all(EXCLUDE))
        .map_err(|err| PluginError::InvalidSettings(err.to_string()))?;
    let verify = settings.bool(VERIFY, false)?;
    let source = match request.sources.as_slice() {
        [one] => Mount::new(one)
            .map_err(|err| PluginError::SourceUnavailable(format!("source {one:?}: {err}")))?,
        many => {
            return Err(PluginError::Unsupported(format!(
                "log-archive captures one directory, but the request names {} sources",
                many.len()
            )));
        }
    };
    let mut walk = Walk {
        source,
        filter,
        incremental: request.has_parent && !verify,
        pending: Vec::new(),
        summary: CaptureSummary {
            entries: 0,
            bytes_read: 0,
        },
        bytes_done: 0,
    };
    walk.run()?;
    sink::set_consistency(Consistency::Crash, Some(CONSISTENCY_REASON));
    info!(
        "captured {} entries, read {} bytes",
        walk.summary.entries, walk.summary.bytes_read
    );
    Ok(walk.summary)
}

/// The state of one capture.
struct Walk {
    source: Mount,
    filter: PathFilter,
    /// Whether to use the parent point: there is one and `verify` is off.
    incremental: bool,
    /// Directories on the current path held back because no include pattern matched
    /// them: each is added only once something below it is.
    pending: Vec<EntryInfo>,
    /// Entries added and bytes actually read from the source (carried bytes are not).
    summary: CaptureSummary,
    /// Bytes read or carried, for progress.
    bytes_done: u64,
}

/// A directory being walked.
struct Frame {
    /// Its entry path (`""` for the source root).
    path: String,
    /// Its entries not visited yet, with their metadata.
    listing: std::vec::IntoIter<ScannedEntry>,
    /// Whether everything below it is included: it or an ancestor matched an include
    /// pattern, or there are none.
    whole: bool,
    /// The length of [`Walk::pending`] before its own entry was held back.
    mark: usize,
}

impl Walk {
    /// Walks the source depth first with a stack of directories rather than recursion,
    /// so a deep tree cannot overflow the plugin's stack.
    fn run(&mut self) -> Result<(), PluginError> {
        let listing = host::scan(&self.source.host("")).map_err(|err| {
            PluginError::SourceUnavailable(format!(
                "cannot list the source: {}",
                host_error_text(&err)
            ))
        })?;
        let mut stack = vec![Frame {
            path: String::new(),
            listing: listing.into_iter(),
            whole: false,
            mark: 0,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(scanned) = frame.listing.next() else {
                // A directory still held back had nothing captured below it: left out.
                let mark = frame.mark;
                stack.pop();
                self.pending.truncate(mark);
                continue;
            };
            if host::cancelled() {
                return Err(PluginError::Cancelled);
            }
            let whole = frame.whole;
            match path::join(&frame.path, &scanned.name) {
                Ok(path) => stack.extend(self.visit(path, whole, scanned)?),
                Err(err) => unreadable(
                    &format!("{}/{}", frame.path, scanned.name),
                    &err.to_string(),
                ),
            }
            host::progress(self.bytes_done, 0, self.summary.entries, 0);
        }
        Ok(())
    }

    /// Captures one object of the source; a directory is returned to be walked.
    fn visit(
        &mut self,
        path: String,
        whole: bool,
        scanned: ScannedEntry,
    ) -> Result<Option<Frame>, PluginError> {
        if self.filter.is_excluded(&path) {
            debug!("{path}: excluded");
            return Ok(None);
        }
        let stat = match scanned.stat {
            Ok(stat) => stat,
            Err(HostError::NotFound(_)) => return Ok(None),
            Err(err) => {
                unreadable(&path, &format!("stat failed: {}", host_error_text(&err)));
                return Ok(None);
            }
        };
        // Mode, ownership and times; extended attributes are left out.
        let meta = meta::from_stat(&stat);
        let included = whole || self.filter.is_included(&path);
        match FileType::from_mode(stat.mode) {
            FileType::Directory => return self.directory(path, meta, included),
            _ if !included => {}
            FileType::Regular => self.file(path, &stat, meta)?,
            other => warn!("{path}: skipped, log-archive keeps no {other:?} entries"),
        }
        Ok(None)
    }

    /// Adds a directory, or holds it back when no include pattern covers it; returns it
    /// to be walked.
    fn directory(
        &mut self,
        path: String,
        meta: Metadata,
        included: bool,
    ) -> Result<Option<Frame>, PluginError> {
        let listing = match host::scan(&self.source.host(&path)) {
            Ok(listing) => listing,
            Err(HostError::NotFound(_)) => return Ok(None),
            Err(err) => {
                unreadable(&path, &format!("cannot list: {}", host_error_text(&err)));
                return Ok(None);
            }
        };
        let mark = self.pending.len();
        let entry = EntryInfo {
            path: path.clone(),
            kind: EntryKind::Directory,
            meta,
        };
        if included {
            self.add(entry, None)?;
        } else {
            self.pending.push(entry);
        }
        Ok(Some(Frame {
            path,
            listing: listing.into_iter(),
            whole: included,
            mark,
        }))
    }

    /// Captures one regular file, carrying from the parent point what it can.
    fn file(
        &mut self,
        path: String,
        stat: &PosixStat,
        mut meta: Metadata,
    ) -> Result<(), PluginError> {
        let parent = if self.incremental {
            self.parent(&path)?
        } else {
            None
        };
        let prefix = match plan(parent.as_ref(), &meta) {
            Plan::Keep => {
                self.flush_pending()?;
                let kept = sink::carry_forward(&path, Some(&meta))
                    .map_err(|err| from_host(format_args!("carrying {path:?} forward"), &err))?;
                if kept {
                    self.summary.entries += 1;
                    self.bytes_done += stat.size;
                    return Ok(());
                }
                0
            }
            Plan::Append { carried } => carried,
            Plan::Read => 0,
        };
        let Some(writer) = self.content(&path, stat.size, prefix)? else {
            return Ok(());
        };
        meta.size = writer.offset();
        let content = writer
            .finish()
            .map_err(|err| from_host(format_args!("storing {path:?}"), &err))?;
        let kind = EntryKind::File;
        self.add(EntryInfo { path, kind, meta }, Some(content))
    }

    /// The parent point's entry at `path`, if it is a file.
    fn parent(&self, path: &str) -> Result<Option<ParentEntry>, PluginError> {
        match sink::lookup_parent(path) {
            Ok(Some(parent)) if parent.entry.kind == EntryKind::File => Ok(Some(parent)),
            Ok(_) | Err(HostError::NotFound(_)) => Ok(None),
            Err(err) => Err(from_host(
                format_args!("looking up {path:?} in the parent point"),
                &err,
            )),
        }
    }

    /// A content stream holding the parent's first `prefix` bytes of `path`, carried, and
    /// the file's bytes from there to `size`, read by the host. `None` when the file
    /// vanished or could not be read (reported); the dropped stream is discarded.
    fn content(
        &mut self,
        path: &str,
        size: u64,
        prefix: u64,
    ) -> Result<Option<Writer>, PluginError> {
        let stored = |err: HostError| from_host(format_args!("storing {path:?}"), &err);
        let mut writer = Writer::begin(Chunking::Fixed(CHUNK_SIZE)).map_err(stored)?;
        if prefix > 0 {
            match writer.carry(path, 0, prefix) {
                Ok(()) => {
                    debug!("{path}: {prefix} bytes carried from the parent point");
                    self.bytes_done += prefix;
                }
                // The host refuses a range it cannot carry: the parent's chunks do not end
                // at its edges, or one is missing from the vault or was found bad.
                // Reading the file again is always correct.
                Err(err) => {
                    info!(
                        "{path}: parent content not carried ({}), reading the whole file",
                        host_error_text(&err)
                    );
                    writer = Writer::begin(Chunking::Fixed(CHUNK_SIZE)).map_err(stored)?;
                }
            }
        }
        let host_path = self.source.host(path);
        let mut offset = writer.offset();
        while offset < size {
            let step = (size - offset).min(CHECK_EVERY);
            let copied = match writer.write_file(&host_path, offset, step) {
                Ok(copied) => copied,
                Err(HostError::NotFound(_)) => return Ok(None),
                Err(err @ (HostError::Io(_) | HostError::Denied(_) | HostError::Invalid(_))) => {
                    let reason = format!("reading failed at byte {offset}");
                    unreadable(path, &format!("{reason}: {}", host_error_text(&err)));
                    return Ok(None);
                }
                Err(err) => return Err(stored(err)),
            };
            offset += copied;
            self.summary.bytes_read += copied;
            self.bytes_done += copied;
            if copied < step {
                warn!("{path}: shrank from {size} to {offset} bytes while being read");
                break;
            }
            if host::cancelled() {
                return Err(PluginError::Cancelled);
            }
            host::progress(self.bytes_done, 0, self.summary.entries, 0);
        }
        Ok(Some(writer))
    }

    /// Adds an entry after the held-back directories above it.
    fn add(
        &mut self,
        entry: EntryInfo,
        content: Option<sink::ContentWriter>,
    ) -> Result<(), PluginError> {
        self.flush_pending()?;
        sink::add_entry(&entry, content)
            .map_err(|err| from_host(format_args!("adding {:?}", entry.path), &err))?;
        self.summary.entries += 1;
        Ok(())
    }

    /// Adds the held-back directories on the current path, outermost first, so entries
    /// stay depth first.
    fn flush_pending(&mut self) -> Result<(), PluginError> {
        for dir in std::mem::take(&mut self.pending) {
            sink::add_entry(&dir, None)
                .map_err(|err| from_host(format_args!("adding {:?}", dir.path), &err))?;
            self.summary.entries += 1;
        }
        Ok(())
    }
}

/// Records a path that could not be read; the host marks the point partial.
fn unreadable(path: &str, reason: &str) {
    sink::report_unreadable(path, reason);
}

#[cfg(test)]
mod tests {
    use tessera_plugin_sdk::meta::bare;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn file(size: u64, inode: u64, mtime_ns: i64) -> Metadata {
        Metadata {
            inode: Some(inode),
            mtime_ns: Some(mtime_ns),
            ctime_ns: Some(mtime_ns),
            ..bare(size)
        }
    }

    fn parent(meta: Metadata) -> ParentEntry {
        ParentEntry {
            content_length: meta.size,
            chunk_count: meta.size.div_ceil(MIB),
            entry: EntryInfo {
                path: "app.log".to_owned(),
                kind: EntryKind::File,
                meta,
            },
        }
    }

    #[test]
    fn unchanged_files_are_kept() {
        let before = parent(file(5 * MIB, 7, 1));
        assert_eq!(plan(Some(&before), &file(5 * MIB, 7, 1)), Plan::Keep);
    }

    #[test]
    fn grown_files_carry_the_whole_chunks_of_the_parent() {
        let before = parent(file(3 * MIB + 10, 7, 1));
        let grown = file(4 * MIB, 7, 2);
        assert_eq!(
            plan(Some(&before), &grown),
            Plan::Append { carried: 3 * MIB }
        );
        // Touched without growing: the same rule, nothing is lost by rereading the tail.
        let touched = file(3 * MIB + 10, 7, 2);
        assert_eq!(
            plan(Some(&before), &touched),
            Plan::Append { carried: 3 * MIB }
        );
        let small = parent(file(MIB - 1, 7, 1));
        assert_eq!(
            plan(Some(&small), &file(MIB + 1, 7, 2)),
            Plan::Append { carried: 0 }
        );
    }

    #[test]
    fn rotated_truncated_and_new_files_are_read() {
        let before = parent(file(3 * MIB, 7, 1));
        assert_eq!(plan(Some(&before), &file(4 * MIB, 8, 2)), Plan::Read);
        assert_eq!(plan(Some(&before), &file(2 * MIB, 7, 2)), Plan::Read);
        assert_eq!(plan(None, &file(4 * MIB, 7, 2)), Plan::Read);
        let unknown = parent(Metadata {
            inode: None,
            ..file(3 * MIB, 7, 1)
        });
        let no_inode = Metadata {
            inode: None,
            ..file(4 * MIB, 7, 2)
        };
        assert_eq!(plan(Some(&unknown), &no_inode), Plan::Read);
    }
}
