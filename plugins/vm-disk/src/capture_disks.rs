//! Capture: each selected source becomes the disk entry `diskN`, streamed in fixed chunks
//! so that unchanged regions deduplicate from one point to the next, and the
//! configuration document, when one is named, is stored beside the disks.
//!
//! A disk is walked window by window. For each window the source tells which ranges may
//! hold data (a raw file's holes, qcow2's allocation tables, NBD's `base:allocation`) and,
//! with a dirty bitmap and a parent point, which ranges changed; [`plan`] turns that into
//! holes, carried chunks and reads, all aligned to the chunk size. A file image that has
//! not changed at all since the parent point (same size, times, inode and device, no
//! backing file) is carried forward whole without being read. A block device never is:
//! its node's times do not change when its content does, so it is read whole every time
//! and the vault's deduplication stores only the chunks that changed.
//!
//! All sources are opened before anything is stored, so a missing file, a broken backing
//! chain or an unreachable server fails the job at once.

use std::collections::VecDeque;

use tessera_disk_image::{Run, Stored};
use tessera_plugin_sdk::content::Writer;
use tessera_plugin_sdk::error::{from_host, host_error_text};
use tessera_plugin_sdk::meta::{self, FileType};
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::settings::Settings;
use tessera_plugin_sdk::{PIECE, debug, info, path, warn};

use crate::backing::GrantedDir;
use crate::layout::{self, CHUNK_SIZE_XATTR};
use crate::options::CaptureOptions;
use crate::plan::{Step, Window, plan};
use crate::source::{self, ReadBytes, Source};

/// Why the point is only crash-consistent: the disks are read while the guest may be
/// writing, and nothing inside the guest is frozen. Hooks the operator runs around the
/// capture may do better; the host raises the level when they ran.
const CONSISTENCY_REASON: &str = "disks were read as they are; no guest freeze";

/// How much of a disk is planned at once, at least: each window costs a round trip to
/// an NBD server for its allocation map and another for its dirty bitmap.
const MIN_WINDOW: u64 = 256 << 20;

/// Most chunks in a window: its allocation map, dirty bitmap and plan stay small (at
/// most one extent and one step per chunk).
const WINDOW_CHUNKS: u64 = 16 << 10;

/// Bytes of reads issued at once: enough requests in flight to keep an NBD server busy,
/// little enough memory in the sandbox.
const BATCH_BYTES: u64 = 2 << 20;

/// Groups of reads queued ahead of the one being streamed.
const GROUPS_AHEAD: usize = 3;

/// Buffers of streamed groups left to rest before one is read into again. The host hands
/// a host buffer's bytes to the stream's workers without copying them
/// (`content-writer.write-buffer`), and changing bytes they have not stored yet costs a
/// copy of the buffer; the workers lag the stream by at most about 11 MiB (eight
/// batches of 1 MiB queued, one at each worker, one being filled), less than the
/// 16 MiB of these.
const RESTING_BUFFERS: usize = 8;

/// The `(offset, length)` ranges the reads of `group` ask for, in order.
fn reads_of(group: &[Step]) -> Vec<(u64, u64)> {
    group
        .iter()
        .filter_map(|step| match *step {
            Step::Read { offset, length } => Some((offset, length)),
            _ => None,
        })
        .collect()
}

/// Splits planned steps into groups whose reads total at most `limit` bytes (a group
/// holds at least one step), so each group's reads can be issued together.
fn batches(steps: &[Step], limit: u64) -> impl Iterator<Item = &[Step]> {
    let mut rest = steps;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0u64;
        let mut len = 0;
        for step in rest {
            if let Step::Read { length, .. } = *step {
                if len > 0 && bytes + length > limit {
                    break;
                }
                bytes += length;
            }
            len += 1;
        }
        let (group, tail) = rest.split_at(len);
        rest = tail;
        Some(group)
    })
}

/// Runs a capture job.
pub(crate) fn run(request: &CaptureRequest) -> Result<CaptureSummary, PluginError> {
    let settings = Settings::new(&request.settings);
    let options = CaptureOptions::parse(&settings, request.sources.len())?;
    let mounts: Vec<GrantedDir> = request
        .mounts
        .iter()
        .filter_map(|mount| {
            let dir = GrantedDir::new(&mount.host, &mount.sandbox);
            if dir.is_none() {
                warn!(
                    "granted directory {:?} at {:?} is not usable for backing files",
                    mount.host, mount.sandbox
                );
            }
            dir
        })
        .collect();
    let document = options
        .config
        .as_deref()
        .map(Document::locate)
        .transpose()?;

    let mut disks = Vec::with_capacity(options.disks.len());
    for &index in &options.disks {
        let name = layout::disk_name(index);
        let given = request.sources.get(index).cloned().unwrap_or_default();
        let parent = if request.has_parent {
            parent_disk(&name)?
        } else {
            None
        };
        let source = open(&name, &given, &options, &mounts, parent.as_ref())?;
        disks.push(Disk {
            name,
            given,
            source,
            parent,
        });
    }

    let mut job = Job {
        chunk: u64::from(options.chunk_size),
        chunk_size: options.chunk_size,
        total_bytes: disks.iter().fold(0u64, |total, d| {
            total.saturating_add(d.source.virtual_size())
        }),
        total_items: (disks.len() + usize::from(document.is_some())) as u64,
        entries: 0,
        bytes_read: 0,
        bytes_done: 0,
        buffer: Vec::new(),
        batches: VecDeque::new(),
    };
    for disk in disks {
        job.capture_disk(disk)?;
    }
    if let Some(document) = document {
        job.capture_document(&document)?;
    }

    sink::set_consistency(Consistency::Crash, Some(CONSISTENCY_REASON));
    info!(
        "captured {} entries, read {} of {} bytes",
        job.entries, job.bytes_read, job.total_bytes
    );
    Ok(CaptureSummary {
        entries: job.entries,
        bytes_read: job.bytes_read,
    })
}

/// The parent point's entry of a disk, if it has one.
fn parent_disk(name: &str) -> Result<Option<sink::ParentEntry>, PluginError> {
    match sink::lookup_parent(name) {
        Ok(Some(parent)) if parent.entry.kind == EntryKind::BlockDevice => Ok(Some(parent)),
        Ok(_) | Err(HostError::NotFound(_)) => Ok(None),
        Err(err) => Err(from_host(
            format_args!("looking up {name} in the parent point"),
            &err,
        )),
    }
}

/// The chunk size a stored disk's content was cut with, from its metadata.
fn stored_chunk_size(meta: &Metadata) -> Option<u32> {
    let xattr = meta.xattrs.iter().find(|x| x.name == CHUNK_SIZE_XATTR)?;
    std::str::from_utf8(&xattr.value).ok()?.parse().ok()
}

/// Opens the source of a disk. A dirty bitmap is asked for only when the parent point
/// holds the disk cut in chunks of the same size, the one case it can be used in.
fn open(
    name: &str,
    given: &str,
    options: &CaptureOptions,
    mounts: &[GrantedDir],
    parent: Option<&sink::ParentEntry>,
) -> Result<Source, PluginError> {
    let usable_parent =
        parent.is_some_and(|p| stored_chunk_size(&p.entry.meta) == Some(options.chunk_size));
    if options.bitmap.is_some() && !usable_parent {
        info!(
            "{name}: no parent point holds this disk cut in {}-byte chunks; the dirty \
             bitmap is not used and the whole disk is read",
            options.chunk_size
        );
    }
    if source::is_url(given) {
        let context = options.bitmap_context().filter(|_| usable_parent);
        source::open_nbd(name, given, context.as_deref()).map(Source::Nbd)
    } else {
        let mut source = source::open_path(name, given, options.image_format, mounts)?;
        if let Some(bitmap) = options.bitmap.as_deref().filter(|_| usable_parent) {
            source.use_file_bitmap(name, bitmap)?;
        }
        Ok(source)
    }
}

/// A disk opened for capture.
struct Disk {
    /// Its entry name, `diskN`.
    name: String,
    /// The source as the request gave it.
    given: String,
    source: Source,
    /// The parent point's entry for it.
    parent: Option<sink::ParentEntry>,
}

/// The state of one capture.
struct Job {
    /// The chunk size as a length.
    chunk: u64,
    /// The chunk size as the contract takes it.
    chunk_size: u32,
    total_bytes: u64,
    total_items: u64,
    entries: u64,
    /// Bytes read from the sources (not carried, not holes).
    bytes_read: u64,
    /// Bytes of the disks dealt with, for progress.
    bytes_done: u64,
    /// The read buffer, kept from one read to the next.
    buffer: Vec<u8>,
    /// The buffers of the batches of reads (one streamed while the next are read), kept
    /// likewise, and reused oldest first ([`RESTING_BUFFERS`]).
    batches: VecDeque<ReadBytes>,
}

impl Job {
    /// Captures one disk.
    fn capture_disk(&mut self, disk: Disk) -> Result<(), PluginError> {
        let Disk {
            name,
            given,
            mut source,
            parent,
        } = disk;
        let size = source.virtual_size();
        info!("{name}: {given}: {}", source.describe());
        sink::set_attribute(&format!("{name}.source"), &given);
        sink::set_attribute(&format!("{name}.format"), source.format_name());
        sink::set_attribute(&format!("{name}.virtual-size"), &size.to_string());
        sink::set_attribute(&format!("{name}.chunk-size"), &self.chunk.to_string());

        let mut meta = match &source {
            Source::File(file) => meta::from_stat(&file.stat),
            // A device node's metadata says nothing of the disk on it.
            Source::Device(_) | Source::Nbd(_) => meta::bare(0),
        };
        meta.size = size;
        meta.xattrs = vec![Xattr {
            name: CHUNK_SIZE_XATTR.to_owned(),
            value: self.chunk_size.to_string().into_bytes(),
        }];

        if let Source::File(file) = &source
            && let Some(parent) = &parent
        {
            if file.backed {
                debug!("{name}: has a backing chain, whose changes its metadata does not show");
            } else if self.unchanged(parent, &meta) {
                let carried = sink::carry_forward(&name, Some(&meta))
                    .map_err(|err| from_host(format_args!("carrying {name} forward"), &err))?;
                if carried {
                    info!("{name}: {} unchanged since the parent point", file.sandbox);
                    self.entries += 1;
                    self.bytes_done += size;
                    self.progress();
                    source.close(&name);
                    return Ok(());
                }
            }
        }

        if let Source::Device(_) = &source
            && parent.is_some()
        {
            info!(
                "{name}: a block device is read whole on every backup (its times do not \
                 change with its content); the vault stores only the chunks that changed"
            );
        }

        let incremental = source.has_bitmap()
            && parent.as_ref().is_some_and(|p| {
                let same = p.entry.meta.size == size && p.content_length == size;
                if !same {
                    info!(
                        "{name}: the disk was {} bytes in the parent point and is {size} now; \
                         reading it whole",
                        p.content_length
                    );
                }
                same
            });
        if incremental {
            info!("{name}: reading only the blocks the dirty bitmap marks");
        }

        let stored = |err: HostError| from_host(format_args!("storing {name}"), &err);
        let mut writer = Writer::begin(Chunking::Fixed(self.chunk_size)).map_err(stored)?;
        let mut planner = Planner {
            next: 0,
            size,
            chunk: self.chunk,
            max_read: self.max_read(),
            incremental,
            steps: Vec::new(),
            at: 0,
            window: 0,
        };
        if source.host_path().is_some() {
            // The host reads an image file into the stream itself, range by range.
            while let Some(window) = planner.plan_window(&name, &mut source)? {
                if host::cancelled() {
                    return Err(PluginError::Cancelled);
                }
                for step in std::mem::take(&mut planner.steps) {
                    self.run_step(&name, &mut source, &mut writer, step)?;
                }
                self.window_done(window);
            }
        } else {
            self.run_pipelined(&name, &mut source, &mut writer, &mut planner)?;
        }
        let content = writer.finish().map_err(stored)?;
        let entry = EntryInfo {
            path: name.clone(),
            kind: EntryKind::BlockDevice,
            meta,
        };
        sink::add_entry(&entry, Some(content))
            .map_err(|err| from_host(format_args!("adding {name}"), &err))?;
        self.entries += 1;
        source.close(&name);
        Ok(())
    }

    /// Whether a file image is unchanged since the parent point: the tests of
    /// [`meta::unchanged`], the same device, and content cut in chunks of the same size.
    fn unchanged(&self, parent: &sink::ParentEntry, current: &Metadata) -> bool {
        let stored = &parent.entry.meta;
        meta::unchanged(stored, current)
            && stored.dev.is_some()
            && stored.dev == current.dev
            && parent.content_length == current.size
            && stored_chunk_size(stored) == Some(self.chunk_size)
    }

    /// Runs the planned steps of a disk whose bytes the plugin reads (over NBD, or through
    /// an image's backing chain) in groups whose reads total about [`BATCH_BYTES`]. The
    /// reads of up to [`GROUPS_AHEAD`] groups are issued before a group's bytes are
    /// streamed, so an NBD server reads while the host stores. A new window is planned
    /// (its block status asked for) when the last group of the previous one was taken and
    /// before its bytes are streamed, as no read is queued then.
    fn run_pipelined(
        &mut self,
        name: &str,
        source: &mut Source,
        writer: &mut Writer,
        planner: &mut Planner,
    ) -> Result<(), PluginError> {
        let mut queued: VecDeque<Group> = VecDeque::with_capacity(GROUPS_AHEAD);
        let mut buffers = std::mem::take(&mut self.batches);
        self.queue_groups(name, source, planner, &mut queued, &mut buffers)?;
        while let Some(group) = queued.pop_front() {
            if host::cancelled() {
                return Err(PluginError::Cancelled);
            }
            let bytes = source.take_read(name)?;
            self.queue_groups(name, source, planner, &mut queued, &mut buffers)?;
            self.run_group(name, source, writer, &group.steps, &bytes)?;
            if let Some(window) = group.ends_window {
                self.window_done(window);
            }
            buffers.push_back(bytes);
        }
        self.batches = buffers;
        Ok(())
    }

    /// Queues the reads of the next groups until [`GROUPS_AHEAD`] are queued, planning
    /// the next window only when none is.
    fn queue_groups(
        &mut self,
        name: &str,
        source: &mut Source,
        planner: &mut Planner,
        queued: &mut VecDeque<Group>,
        buffers: &mut VecDeque<ReadBytes>,
    ) -> Result<(), PluginError> {
        while queued.len() < GROUPS_AHEAD {
            let group = if queued.is_empty() {
                planner.next_group(name, source)?
            } else {
                planner.next_in_window()
            };
            let Some(group) = group else {
                break;
            };
            let buffer = if buffers.len() > RESTING_BUFFERS {
                buffers.pop_front().unwrap_or_default()
            } else {
                ReadBytes::default()
            };
            source.queue_read(name, &reads_of(&group.steps), buffer)?;
            queued.push_back(group);
        }
        Ok(())
    }

    /// Counts a window of `length` bytes as dealt with.
    fn window_done(&mut self, length: u64) {
        self.bytes_done += length;
        self.progress();
    }

    /// Runs the steps of `group`, whose reads' bytes are `bytes`, one after the other.
    fn run_group(
        &mut self,
        name: &str,
        source: &mut Source,
        writer: &mut Writer,
        group: &[Step],
        bytes: &ReadBytes,
    ) -> Result<(), PluginError> {
        let mut at = 0usize;
        for &step in group {
            match step {
                Step::Read { length, .. } => {
                    // A group's reads fill `bytes` in order, and its length is their sum.
                    bytes
                        .write_to(writer, at, length as usize)
                        .map_err(|err| from_host(format_args!("storing {name}"), &err))?;
                    at += length as usize;
                    self.bytes_read += length;
                }
                _ => self.run_step(name, source, writer, step)?,
            }
        }
        Ok(())
    }

    /// Runs one step, reading what it reads.
    fn run_step(
        &mut self,
        name: &str,
        source: &mut Source,
        writer: &mut Writer,
        step: Step,
    ) -> Result<(), PluginError> {
        let stored = |err: HostError| from_host(format_args!("storing {name}"), &err);
        match step {
            Step::Hole { length, .. } => writer.hole(length).map_err(stored),
            Step::Carry { offset, length } => match writer.carry(name, offset, length) {
                Ok(()) => Ok(()),
                // The parent's chunks do not line up with this range (it was stored
                // differently): read it instead.
                Err(err @ (HostError::Invalid(_) | HostError::NotFound(_))) => {
                    debug!(
                        "{name}: bytes {offset}..{} not carried ({}); reading them",
                        offset + length,
                        host_error_text(&err)
                    );
                    self.read_range(name, source, writer, offset, length)
                }
                Err(err) => Err(stored(err)),
            },
            Step::Read { offset, length } => self.read_range(name, source, writer, offset, length),
        }
    }

    /// Reads `offset..offset + length` of a disk into its stream.
    fn read_range(
        &mut self,
        name: &str,
        source: &mut Source,
        writer: &mut Writer,
        offset: u64,
        length: u64,
    ) -> Result<(), PluginError> {
        let end = offset + length;
        let mut at = offset;
        while at < end {
            let piece = self.max_read().min(end - at);
            for run in source.runs(name, at, piece)? {
                match (run.stored, source.host_path()) {
                    (Stored::InFile(file_offset), Some(host_path)) => {
                        let host_path = host_path.to_owned();
                        let device = matches!(source, Source::Device(_));
                        self.read_from_file(name, &host_path, device, writer, run, file_offset)?;
                    }
                    (Stored::InNamedFile(file, file_offset), _) => {
                        match source.named_host_path(file) {
                            Some(host_path) => self.read_from_file(
                                name,
                                &host_path,
                                false,
                                writer,
                                run,
                                file_offset,
                            )?,
                            None => {
                                self.read_through(name, source, writer, run.offset, run.length)?
                            }
                        }
                    }
                    _ => self.read_through(name, source, writer, run.offset, run.length)?,
                }
            }
            at += piece;
        }
        Ok(())
    }

    /// Has the host read `run` of a disk, stored in the image file (or the `device`) at
    /// `host_path` from `file_offset` on, into the stream: its bytes never pass through
    /// the plugin.
    fn read_from_file(
        &mut self,
        name: &str,
        host_path: &str,
        device: bool,
        writer: &mut Writer,
        run: Run,
        file_offset: u64,
    ) -> Result<(), PluginError> {
        let copied = writer
            .write_file(host_path, file_offset, run.length)
            .map_err(|err| {
                from_host(
                    format_args!("{name}: reading {host_path} at byte {file_offset}"),
                    &err,
                )
            })?;
        self.bytes_read += copied;
        if copied < run.length {
            let what = if device { "device" } else { "image" };
            return Err(PluginError::Io(format!(
                "{name}: {host_path} ended at byte {} while being read, though the disk's \
                 bytes at {} lie there; the {what} shrank during the backup: stop the \
                 virtual machine or back up a snapshot of the {what}",
                file_offset + copied,
                run.offset + copied,
            )));
        }
        Ok(())
    }

    /// Reads `offset..offset + length` of a disk (at most [`Self::max_read`] bytes)
    /// through the plugin into the stream.
    fn read_through(
        &mut self,
        name: &str,
        source: &mut Source,
        writer: &mut Writer,
        offset: u64,
        length: u64,
    ) -> Result<(), PluginError> {
        let stored = |err: HostError| from_host(format_args!("storing {name}"), &err);
        // At most `max_read`, a few MiB.
        let len = length as usize;
        if self.buffer.len() < len {
            self.buffer.resize(len, 0);
        }
        let buffer = &mut self.buffer[..len];
        source.read(name, offset, buffer)?;
        writer.write_bytes(buffer).map_err(stored)?;
        self.bytes_read += length;
        Ok(())
    }

    /// The longest read: one piece of the contract, or one chunk if chunks are larger.
    fn max_read(&self) -> u64 {
        (PIECE as u64).max(self.chunk)
    }

    /// Stores the configuration document.
    fn capture_document(&mut self, document: &Document) -> Result<(), PluginError> {
        let Document {
            sandbox,
            host_path,
            name,
            stat,
        } = document;
        let stored = |err: HostError| from_host(format_args!("storing {sandbox}"), &err);
        let mut writer = Writer::begin(Chunking::ContentDefined).map_err(stored)?;
        let copied = writer
            .write_file(host_path, 0, stat.size)
            .map_err(|err| from_host(format_args!("reading {sandbox}"), &err))?;
        let content = writer.finish().map_err(stored)?;
        let mut meta = meta::from_stat(stat);
        meta.size = copied;
        let entry = EntryInfo {
            path: name.clone(),
            kind: EntryKind::Blob,
            meta,
        };
        sink::add_entry(&entry, Some(content)).map_err(stored)?;
        sink::set_attribute(crate::CONFIG, name);
        self.bytes_read += copied;
        self.entries += 1;
        self.progress();
        info!("stored configuration document {sandbox} as {name}");
        Ok(())
    }

    fn progress(&self) {
        host::progress(
            self.bytes_done,
            self.total_bytes,
            self.entries,
            self.total_items,
        );
    }
}

/// Plans a disk's capture window by window, as its reads are issued: the allocation map
/// and dirty bitmap of one window at a time, never the whole disk's at once.
struct Planner {
    /// First byte of the next window to plan.
    next: u64,
    /// The disk's size.
    size: u64,
    /// The fixed chunk size.
    chunk: u64,
    /// Longest read to plan.
    max_read: u64,
    /// Whether only the blocks the dirty bitmap marks are read.
    incremental: bool,
    /// The steps of the window planned last; those from `at` on are not handed out yet.
    steps: Vec<Step>,
    at: usize,
    /// Length of the window planned last.
    window: u64,
}

/// Steps whose reads are issued together.
struct Group {
    steps: Vec<Step>,
    /// The length of the window the group ends, if it is the window's last.
    ends_window: Option<u64>,
}

impl Planner {
    /// Plans the next window into `steps`, asking the source for its allocation map and,
    /// for an incremental capture, its dirty blocks; returns the window's length, or
    /// `None` past the end of the disk.
    fn plan_window(&mut self, name: &str, source: &mut Source) -> Result<Option<u64>, PluginError> {
        if self.next >= self.size {
            return Ok(None);
        }
        let start = self.next;
        let window = MIN_WINDOW.max(self.chunk.saturating_mul(WINDOW_CHUNKS));
        let end = start + window.min(self.size - start);
        let data = source.data_ranges(name, start, end - start)?;
        let dirty = if self.incremental {
            source.dirty_ranges(name, start, end - start)?
        } else {
            None
        };
        self.steps = plan(&Window {
            start,
            end,
            chunk: self.chunk,
            data: &data,
            dirty: dirty.as_deref(),
            max_read: self.max_read,
        });
        self.at = 0;
        self.next = end;
        self.window = end - start;
        Ok(Some(self.window))
    }

    /// The next group of steps whose reads total at most [`BATCH_BYTES`] (or one read),
    /// planning the next window when this one is used up. It asks an NBD source for block
    /// status then, so no read may be queued.
    fn next_group(
        &mut self,
        name: &str,
        source: &mut Source,
    ) -> Result<Option<Group>, PluginError> {
        while self.at >= self.steps.len() {
            if self.plan_window(name, source)?.is_none() {
                return Ok(None);
            }
        }
        Ok(self.next_in_window())
    }

    /// The next group of the window planned last, if any is left.
    fn next_in_window(&mut self) -> Option<Group> {
        let rest = &self.steps[self.at..];
        let len = batches(rest, BATCH_BYTES).next()?.len();
        let steps = rest[..len].to_vec();
        self.at += len;
        Some(Group {
            steps,
            ends_window: (self.at == self.steps.len()).then_some(self.window),
        })
    }
}

/// The configuration document to store.
struct Document {
    /// Its canonical sandbox path.
    sandbox: String,
    /// Its path for host calls.
    host_path: String,
    /// Its entry name: its file name.
    name: String,
    /// Its metadata when the job started.
    stat: host::PosixStat,
}

impl Document {
    /// Checks the `config` setting's path, the file it names and the name the document
    /// gets, before any disk is read.
    fn locate(given: &str) -> Result<Document, PluginError> {
        let Some((sandbox, host_path)) = source::sandbox_paths(given) else {
            return Err(PluginError::InvalidSettings(format!(
                "setting `{}` must be a file inside a granted directory (source/...), not \
                 {given:?}",
                crate::CONFIG
            )));
        };
        let name = path::name(&sandbox).to_owned();
        path::validate_name(&name).map_err(|err| {
            PluginError::InvalidSettings(format!("setting `{}`: {err}", crate::CONFIG))
        })?;
        if layout::is_reserved_name(&name) {
            return Err(PluginError::InvalidSettings(format!(
                "setting `{}`: the configuration document {sandbox} cannot be stored as \
                 {name:?}, a name that belongs to a disk; rename or copy it",
                crate::CONFIG
            )));
        }
        let stat = host::stat(&host_path).map_err(|err| {
            PluginError::SourceUnavailable(format!(
                "configuration document {sandbox}: {}; check setting `{}` and that its \
                 directory is granted",
                host_error_text(&err),
                crate::CONFIG
            ))
        })?;
        if FileType::from_mode(stat.mode) != FileType::Regular {
            return Err(PluginError::InvalidSettings(format!(
                "setting `{}`: the configuration document {sandbox} is not a regular file",
                crate::CONFIG
            )));
        }
        Ok(Document {
            sandbox,
            host_path,
            name,
            stat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(offset: u64, length: u64) -> Step {
        Step::Read { offset, length }
    }

    fn carry(offset: u64, length: u64) -> Step {
        Step::Carry { offset, length }
    }

    #[test]
    fn batches_hold_reads_up_to_the_limit_and_every_step_once() {
        let steps = vec![
            carry(0, 64),
            read(64, 64),
            carry(128, 64),
            read(192, 64),
            read(256, 64),
            Step::Hole {
                offset: 320,
                length: 64,
            },
            read(384, 256),
            carry(640, 64),
        ];
        let groups: Vec<&[Step]> = batches(&steps, 128).collect();
        assert_eq!(groups.concat(), steps);
        assert_eq!(
            groups,
            vec![
                &steps[0..4],
                &steps[4..6],
                // A read larger than the limit still forms a group.
                &steps[6..8],
            ]
        );
        for group in &groups {
            let bytes: u64 = group
                .iter()
                .filter_map(|s| match *s {
                    Step::Read { length, .. } => Some(length),
                    _ => None,
                })
                .sum();
            assert!(
                bytes <= 128
                    || group
                        .iter()
                        .filter(|s| matches!(s, Step::Read { .. }))
                        .count()
                        == 1
            );
        }
        assert_eq!(batches(&[], 128).count(), 0);
    }
}
