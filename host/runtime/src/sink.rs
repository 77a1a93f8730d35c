//! The capture sink: the plugin's entries and content streams go into a vault backup.

use tessera_vault::commands::backup::StreamWriter;
use tessera_vault::{Chunking, Consistency, Content, Entry};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, WasmList};

use crate::bindings::sink::{
    self, Chunking as WitChunking, Consistency as WitConsistency, EntryInfo, HostError, Metadata,
    ParentEntry,
};
use std::fs::File;
use std::sync::Arc;

use crate::convert::{entry_to_wit, grant_error, kind_to_vault, meta_to_vault, vault_error};
use crate::limits::{MAX_IO_CALL, MAX_OPEN_HANDLES, check_path};
use crate::state::{CaptureState, JobState, Phase};

/// A content stream a plugin is writing.
pub struct ContentWriter {
    /// The vault stream; `None` only while [`write_from_guest`] writes the plugin's
    /// bytes into it.
    stream: Option<StreamWriter>,
    /// The source file `write-file` read last, kept open for its next piece.
    source: Option<(String, Arc<File>)>,
    /// The parent's content `carry` used last, kept with its loaded extent lists: a
    /// disk's unchanged regions are carried in many calls.
    parent: Option<(String, tessera_vault::ContentReader)>,
}

impl ContentWriter {
    fn stream(&mut self) -> Result<&mut StreamWriter, HostError> {
        self.stream
            .as_mut()
            .ok_or_else(|| HostError::Invalid("the content writer is busy".into()))
    }
}

/// Bytes `write-file` reads from a source file at a time.
const FILE_READ: u64 = 1 << 20;

fn not_capturing() -> HostError {
    HostError::WrongPhase("this call is only available during capture".into())
}

/// Moves `offset..offset+length` of the writer's open source file into its stream,
/// read straight into the stream's chunk buffers.
fn pump(
    writer: &mut ContentWriter,
    path: &str,
    offset: u64,
    length: u64,
    last_host_call: &mut std::time::Instant,
) -> Result<u64, HostError> {
    let Some((_, file)) = writer.source.as_ref() else {
        return Err(HostError::Invalid(format!("'{path}' is not open")));
    };
    let stream = writer
        .stream
        .as_mut()
        .ok_or_else(|| HostError::Invalid("the content writer is busy".into()))?;
    let mut done = 0u64;
    while done < length {
        let at = offset.saturating_add(done);
        let want = (length - done).min(FILE_READ);
        let read = stream
            .write_file_at(file, at, want, path)
            .map_err(|e| match e {
                tessera_vault::Error::Source { what, source } => {
                    HostError::Io(format!("reading {what}: {source}"))
                }
                other => vault_error(other),
            })?;
        done += read;
        // A long read counts as a host call for the CPU limit.
        *last_host_call = std::time::Instant::now();
        if read < want {
            break;
        }
    }
    Ok(done)
}

impl JobState {
    fn capture_state(&mut self) -> Result<&mut CaptureState, HostError> {
        match &mut self.phase {
            Phase::Capture(state) => Ok(state),
            _ => Err(not_capturing()),
        }
    }

    fn writer(&mut self, this: &Resource<ContentWriter>) -> Result<&mut ContentWriter, HostError> {
        self.table
            .get_mut(this)
            .map_err(|e| HostError::Invalid(format!("bad content-writer handle: {e}")))
    }
}

impl sink::HostContentWriter for JobState {
    fn write(&mut self, this: Resource<ContentWriter>, data: Vec<u8>) -> Result<(), HostError> {
        self.touch();
        check_write_len(data.len())?;
        self.writer(&this)?
            .stream()?
            .write(&data)
            .map_err(vault_error)
    }

    fn write_hole(&mut self, this: Resource<ContentWriter>, length: u64) -> Result<(), HostError> {
        self.touch();
        self.writer(&this)?
            .stream()?
            .push_hole(length)
            .map_err(vault_error)
    }

    fn carry(
        &mut self,
        this: Resource<ContentWriter>,
        path: String,
        offset: u64,
        length: u64,
    ) -> Result<(), HostError> {
        self.touch();
        check_path(&path)?;
        let cached = matches!(&self.writer(&this)?.parent, Some((p, _)) if *p == path);
        if !cached {
            let state = self.capture_state()?;
            let entry = state
                .backup
                .parent_entry(&path)
                .map_err(vault_error)?
                .ok_or_else(|| {
                    HostError::NotFound(format!("the parent point has no entry '{path}'"))
                })?;
            let reader = state.backup.vault().content_reader(&entry.content);
            self.writer(&this)?.parent = Some((path.clone(), reader));
        }
        let writer = self.writer(&this)?;
        let (_, reader) = writer.parent.as_mut().expect("set above");
        let extents = reader.extents_in(offset, length).map_err(vault_error)?;
        writer.stream()?.push_extents(&extents).map_err(vault_error)
    }

    fn write_file(
        &mut self,
        this: Resource<ContentWriter>,
        path: String,
        offset: u64,
        length: u64,
    ) -> Result<u64, HostError> {
        self.touch();
        check_path(&path)?;
        self.capture_state()?;
        let reopen = !matches!(&self.writer(&this)?.source, Some((open, _)) if *open == path);
        if reopen {
            let grant = self
                .grant
                .as_ref()
                .ok_or_else(|| HostError::Denied("this job grants no directory".into()))?;
            let fd = grant.open_source(&path).map_err(grant_error)?;
            self.writer(&this)?.source = Some((path.clone(), Arc::new(File::from(fd))));
        }
        let writer = self
            .table
            .get_mut(&this)
            .map_err(|e| HostError::Invalid(format!("bad content-writer handle: {e}")))?;
        pump(writer, &path, offset, length, &mut self.last_host_call)
    }

    fn write_buffer(
        &mut self,
        this: Resource<ContentWriter>,
        buffer: Resource<crate::net::Buffer>,
        at: u64,
        length: u64,
    ) -> Result<(), HostError> {
        self.touch();
        check_write_len(usize::try_from(length).unwrap_or(usize::MAX))?;
        let data = self.share_buffer(&buffer, at, length)?;
        self.writer(&this)?
            .stream()?
            .write_shared(data)
            .map_err(vault_error)
    }

    fn drop(&mut self, rep: Resource<ContentWriter>) -> wasmtime::Result<()> {
        // An abandoned stream's chunks stay in the vault unreferenced until prune.
        self.table.delete(rep)?;
        self.open_handles = self.open_handles.saturating_sub(1);
        Ok(())
    }
}

impl sink::Host for JobState {
    fn begin_content(
        &mut self,
        chunking: WitChunking,
    ) -> Result<Resource<ContentWriter>, HostError> {
        self.touch();
        if self.open_handles >= MAX_OPEN_HANDLES {
            return Err(HostError::Limit(format!(
                "more than {MAX_OPEN_HANDLES} open content streams"
            )));
        }
        let state = self.capture_state()?;
        let chunking = match chunking {
            WitChunking::ContentDefined => {
                Chunking::ContentDefined(state.backup.vault().config().chunker)
            }
            WitChunking::Fixed(size) => Chunking::Fixed { size },
        };
        let stream = state.backup.stream(chunking).map_err(vault_error)?;
        let handle = self
            .table
            .push(ContentWriter {
                stream: Some(stream),
                source: None,
                parent: None,
            })
            .map_err(|e| HostError::Limit(e.to_string()))?;
        self.open_handles += 1;
        Ok(handle)
    }

    fn add_entry(
        &mut self,
        entry: EntryInfo,
        content: Option<Resource<ContentWriter>>,
    ) -> Result<(), HostError> {
        self.touch();
        check_path(&entry.path)?;
        let writer = match content {
            Some(handle) => {
                let writer = self
                    .table
                    .delete(handle)
                    .map_err(|e| HostError::Invalid(format!("bad content-writer handle: {e}")))?;
                self.open_handles = self.open_handles.saturating_sub(1);
                Some(writer)
            }
            None => None,
        };
        let state = self.capture_state()?;
        let mut vault_entry = Entry::new("", kind_to_vault(&entry.kind));
        vault_entry.meta = meta_to_vault(&entry.meta);
        if let Some(writer) = writer {
            if vault_entry.is_dir() {
                return Err(HostError::Invalid(format!(
                    "directory '{}' cannot have content",
                    entry.path
                )));
            }
            let Some(stream) = writer.stream else {
                return Err(HostError::Invalid("the content writer is busy".into()));
            };
            vault_entry.content = stream.finish().map_err(vault_error)?.content;
        }
        state
            .backup
            .add_entry(&entry.path, vault_entry)
            .map_err(vault_error)
    }

    fn lookup_parent(&mut self, path: String) -> Result<Option<ParentEntry>, HostError> {
        self.touch();
        check_path(&path)?;
        let state = self.capture_state()?;
        let Some(entry) = state.backup.parent_entry(&path).map_err(vault_error)? else {
            return Ok(None);
        };
        let chunk_count = match &entry.content {
            Content::Extents(extents) => extents.iter().filter(|e| e.id.is_some()).count() as u64,
            Content::Lists(lists) => lists.iter().map(|l| l.count as u64).sum(),
        };
        Ok(Some(ParentEntry {
            entry: entry_to_wit(&path, &entry),
            content_length: entry.content.len(),
            chunk_count,
        }))
    }

    fn carry_forward(&mut self, path: String, meta: Option<Metadata>) -> Result<bool, HostError> {
        self.touch();
        check_path(&path)?;
        let state = self.capture_state()?;
        state
            .backup
            .carry_forward_with(&path, meta.as_ref().map(meta_to_vault))
            .map_err(vault_error)
    }

    fn report_unreadable(&mut self, path: String, reason: String) {
        self.touch();
        let plugin = self.plugin.clone();
        if let Ok(state) = self.capture_state() {
            tracing::warn!(plugin, path, reason, "source entry skipped");
            state.commit.partial = true;
            // A hostile plugin could report millions; the point keeps a bounded list.
            if state.commit.warnings.len() < 1000 {
                state.commit.warnings.push(format!("{path}: {reason}"));
            }
        }
    }

    fn set_consistency(&mut self, level: WitConsistency, reason: Option<String>) {
        self.touch();
        if let Ok(state) = self.capture_state() {
            state.commit.consistency = match level {
                WitConsistency::Crash => Consistency::Crash,
                WitConsistency::FileSystem => Consistency::FileSystem,
                WitConsistency::Application => Consistency::Application,
            };
            state.commit.consistency_reason = reason;
        }
    }

    fn set_attribute(&mut self, name: String, value: String) {
        self.touch();
        if let Ok(state) = self.capture_state()
            && state.commit.attributes.len() < 256
            && name.len() <= 256
            && value.len() <= 64 * 1024
        {
            state.commit.attributes.insert(name, value);
        }
    }
}

/// Refuses a write of more than [`MAX_IO_CALL`] bytes in one call.
fn check_write_len(len: usize) -> Result<(), HostError> {
    if len > MAX_IO_CALL {
        return Err(HostError::Limit(format!(
            "write of {len} bytes in one call; the limit is {MAX_IO_CALL}"
        )));
    }
    Ok(())
}

/// `content-writer.write` without copying the plugin's bytes out of its memory first:
/// the generated binding would lift them into a fresh vector, a copy and a page fault per
/// 4 KiB for every byte a plugin streams. [`add_to_linker`] puts this in its place.
fn write_from_guest(
    store: &mut StoreContextMut<'_, JobState>,
    this: &Resource<ContentWriter>,
    data: &WasmList<u8>,
) -> Result<(), HostError> {
    let state = store.data_mut();
    state.touch();
    check_write_len(data.len())?;
    // The bytes borrow the store, so the stream leaves its writer for the call.
    let writer = state.writer(this)?;
    let mut stream = writer
        .stream
        .take()
        .ok_or_else(|| HostError::Invalid("the content writer is busy".into()))?;
    let result = stream.write(data.as_le_slice(&*store)).map_err(vault_error);
    if let Ok(writer) = store.data_mut().writer(this) {
        writer.stream = Some(stream);
    }
    result
}

/// Defines `content-writer.write` as [`write_from_guest`] in `linker`, which already holds
/// the generated bindings.
pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let defined = linker.instance(SINK_INSTANCE).and_then(|mut sink| {
        sink.func_wrap(
            "[method]content-writer.write",
            |mut store: StoreContextMut<'_, JobState>,
             (this, data): (Resource<ContentWriter>, WasmList<u8>)| {
                Ok((write_from_guest(&mut store, &this, &data),))
            },
        )
    });
    linker.allow_shadowing(false);
    defined
}

/// The contract's sink interface, as components import it.
const SINK_INSTANCE: &str = "tessera:plugin/sink@0.1.0";
