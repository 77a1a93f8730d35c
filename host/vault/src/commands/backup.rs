//! Writing a recovery point: streams in, chunks, deduplication, packs, index, point.
//!
//! The caller's thread cuts streams into chunks; worker threads hash, deduplicate,
//! compress and encrypt them, each appending to a pack of its own; an uploader thread
//! writes finished packs so a slow `fsync` or upload never stalls the CPU work. Entries
//! are added depth first and each directory's tree is stored as soon as it is complete.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::backend::FileKind;
use crate::chunker::{CdcChunker, CdcScan, Chunking};
use crate::codec;
use crate::error::{Error, Result};
use crate::format::{PACK_TARGET_SIZE, POINT_MAGIC, TREE_VERSION};
use crate::id::{ChunkId, PackId, PointId, SessionId};
use crate::index::{Index, IndexFile};
use crate::pack::{self, BlobKind, BlobMade, FinishedPack, PackEntry, PackWriter};
use crate::point::{BackupStats, Consistency, PluginRef, Point};
use crate::session::{self, HEARTBEAT_INTERVAL, SessionRecord};
use crate::tree::{Content, Entry, Extent, ListRef, Tree, TreeBuilder, split_extents};
use crate::vault::Vault;

/// Uploaded packs after which an index file is written mid-backup, so that a killed
/// backup leaves most of its data indexed.
const INDEX_FLUSH_PACKS: usize = 64;

/// Options of [`Backup::start`].
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The protected item.
    pub item: String,
    /// The plugin capturing it.
    pub plugin: PluginRef,
    /// The point to carry unchanged entries forward from.
    pub parent: Option<PointId>,
    /// Operator tags.
    pub tags: Vec<String>,
    /// The machine's name, recorded in the point.
    pub host: String,
    /// zstd level; the vault's default when `None`.
    pub compression_level: Option<i32>,
    /// Worker threads; the number of CPUs when 0.
    pub workers: usize,
    /// Size at which a pack is closed and uploaded.
    pub pack_size: usize,
}

impl BackupOptions {
    /// Options for an item captured by a plugin, with no parent.
    pub fn new(item: impl Into<String>, plugin: PluginRef) -> Self {
        BackupOptions {
            item: item.into(),
            plugin,
            parent: None,
            tags: Vec::new(),
            host: String::new(),
            compression_level: None,
            workers: 0,
            pack_size: PACK_TARGET_SIZE,
        }
    }
}

/// How the capture ended, given at commit.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// The consistency achieved.
    pub consistency: Consistency,
    /// Why it is lower than asked for, if it is.
    pub consistency_reason: Option<String>,
    /// Whether some of the source could not be read.
    pub partial: bool,
    /// What went wrong while capturing.
    pub warnings: Vec<String>,
    /// Plugin-defined attributes.
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            consistency: Consistency::Crash,
            consistency_reason: None,
            partial: false,
            warnings: Vec::new(),
            attributes: Default::default(),
        }
    }
}

struct Job {
    seq: usize,
    data: ChunkBuf,
    /// Where the worker reads the chunk itself, `data` being empty: a fixed-size chunk of
    /// a file ([`StreamWriter::write_file_at`]) or of shared bytes
    /// ([`StreamWriter::write_shared`]).
    read: Option<ChunkRead>,
    /// The chunk's id when the stream already hashed and claimed it: the worker only
    /// stores it and does not reply.
    claimed: Option<ChunkId>,
    /// The id of `data`, hashed by the worker together with another chunk's.
    hashed: Option<ChunkId>,
    reply: Option<Sender<(usize, Result<Outcome, String>)>>,
}

impl Job {
    /// The bytes of a chunk still to be hashed that are in memory already, not in a
    /// file.
    fn in_memory(&self) -> Option<&[u8]> {
        if self.claimed.is_some() || self.hashed.is_some() {
            return None;
        }
        match &self.read {
            None => Some(&self.data),
            Some(ChunkRead {
                from: ReadFrom::Memory(bytes),
                hashed: None,
                ..
            }) => Some(bytes),
            Some(_) => None,
        }
    }

    /// Whether the job's bytes are recorded as a hole and never hashed: zeros shared by
    /// the stream's caller, where the stream cut them as fixed-size chunks.
    fn becomes_hole(&self) -> bool {
        match &self.read {
            Some(ChunkRead {
                from: ReadFrom::Memory(bytes),
                ..
            }) => is_zero(bytes),
            _ => false,
        }
    }

    /// Records the id of the chunk's bytes, hashed already.
    fn set_hashed(&mut self, id: ChunkId) {
        match &mut self.read {
            Some(read) => read.hashed = Some(id),
            None => self.hashed = Some(id),
        }
    }
}

#[derive(Debug, Clone)]
struct Outcome {
    /// `None` for a chunk of zeros, recorded as a hole.
    id: Option<ChunkId>,
    len: u64,
    stored: Option<u64>,
    /// For a chunk read from a file that ended first: where, and the file.
    ended: Option<(u64, Arc<str>)>,
}

/// A chunk a worker reads itself, from a file or from bytes in memory, straight into the
/// room its pack's write stage has for the blob ([`Shared::store_read`]), where it
/// hashes and encrypts it, or else into a buffer of its own. Read on the stream's thread
/// into a chunk buffer and then copied into the stage, each byte was copied twice more,
/// once serially on the thread that also plans the reads: a full backup of a 1 GiB
/// image file took 0.86 s that way, 0.66 s this way.
struct ChunkRead {
    from: ReadFrom,
    len: usize,
    /// The chunk's id, when the worker hashed bytes in memory together with another
    /// chunk's before storing them ([`worker`]).
    hashed: Option<ChunkId>,
}

/// Where a [`ChunkRead`] finds its bytes.
enum ReadFrom {
    /// A file, from `offset` on.
    File {
        file: Arc<File>,
        offset: u64,
        /// The file, as errors name it.
        what: Arc<str>,
    },
    /// Bytes the stream's caller shared, exactly the chunk.
    Memory(Bytes),
}

impl ChunkRead {
    /// Reads the chunk into `buf`, which it replaces; returns where the file ended if it
    /// ended before the chunk did (it shrank since the caller planned the read).
    fn fill(&self, buf: &mut ChunkBuf) -> std::result::Result<Option<u64>, String> {
        buf.clear();
        let ended = self.read_into(buf.spare(self.len, self.len))?;
        if ended.is_none() {
            buf.grow(self.len);
        }
        Ok(ended)
    }

    /// Reads the chunk into `chunk`, its length; returns where the file ended if it ended
    /// first.
    fn read_into(&self, chunk: &mut [u8]) -> std::result::Result<Option<u64>, String> {
        let (file, offset, what) = match &self.from {
            ReadFrom::File { file, offset, what } => (file, *offset, what),
            ReadFrom::Memory(bytes) => {
                chunk.copy_from_slice(bytes);
                return Ok(None);
            }
        };
        let mut got = 0;
        while got < chunk.len() {
            let at = offset + got as u64;
            match file.read_at(&mut chunk[got..], at) {
                Ok(0) => return Ok(Some(at)),
                Ok(read) => got += read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot read {what} at byte {at}: {e}")),
            }
        }
        Ok(None)
    }

    /// The outcome of a chunk that is not stored: where the file ended, or `None` for a
    /// chunk of zeros, recorded as a hole.
    fn not_stored(&self, ended: Option<u64>) -> Outcome {
        let ended = match (&self.from, ended) {
            (ReadFrom::File { what, .. }, Some(at)) => Some((at, Arc::clone(what))),
            _ => None,
        };
        Outcome {
            id: None,
            len: if ended.is_some() { 0 } else { self.len as u64 },
            stored: None,
            ended,
        }
    }

    /// Reads the chunk into `buf` and stores it, or records it as a hole if all zeros.
    fn store(
        &self,
        shared: &Shared,
        packer: usize,
        buf: &mut ChunkBuf,
    ) -> std::result::Result<Outcome, String> {
        let ended = self.fill(buf)?;
        self.store_filled(shared, packer, buf, ended, self.hashed)
    }

    /// Stores the chunk [`ChunkRead::fill`] read into `buf` (the file `ended` first if
    /// it says where), or records it as a hole if all zeros; `hashed` is its id when
    /// known already.
    fn store_filled(
        &self,
        shared: &Shared,
        packer: usize,
        buf: &mut ChunkBuf,
        ended: Option<u64>,
        hashed: Option<ChunkId>,
    ) -> std::result::Result<Outcome, String> {
        if let Some(at) = ended {
            return Ok(self.not_stored(Some(at)));
        }
        if is_zero(buf) {
            return Ok(self.not_stored(None));
        }
        shared.hash_and_store(packer, buf, hashed)
    }

    /// Whether the chunk is read from a file.
    fn reads_a_file(&self) -> bool {
        matches!(self.from, ReadFrom::File { .. })
    }

    /// Reads the chunk into `room`, which has the head- and tailroom of an encoded chunk
    /// around it, and when it is new encodes it there as a blob: what
    /// [`PackWriter::add_in_place`] asks for, with the chunk's outcome.
    fn encode_into(
        &self,
        shared: &Shared,
        room: &mut [u8],
    ) -> (std::result::Result<Outcome, String>, Option<BlobMade>) {
        let chunk = &mut room[codec::CHUNK_HEADROOM..codec::CHUNK_HEADROOM + self.len];
        match self.read_into(chunk) {
            Err(e) => return (Err(e), None),
            Ok(Some(at)) => return (Ok(self.not_stored(Some(at))), None),
            Ok(None) if is_zero(chunk) => return (Ok(self.not_stored(None)), None),
            Ok(None) => {}
        }
        let id = self
            .hashed
            .unwrap_or_else(|| shared.vault.crypto().chunk_id(chunk));
        let len = self.len as u64;
        if !shared.claim(&id) {
            let reused = Outcome {
                id: Some(id),
                len,
                stored: None,
                ended: None,
            };
            return (Ok(reused), None);
        }
        let blob_len = BLOB.with_borrow_mut(|scratch| {
            codec::encode_chunk_in_place(
                shared.vault.crypto(),
                &id,
                room,
                self.len,
                shared.level,
                scratch,
            )
        });
        let stored = Outcome {
            id: Some(id),
            len,
            stored: Some(blob_len as u64),
            ended: None,
        };
        let made = BlobMade {
            id,
            kind: BlobKind::Data,
            raw_len: self.len as u32,
            len: blob_len,
        };
        (Ok(stored), Some(made))
    }
}

thread_local! {
    /// The buffer a thread encodes blobs in, kept from one chunk to the next: a fresh
    /// buffer per chunk costs the kernel a page fault and a cleared page per 4 KiB.
    static BLOB: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Chunks shorter than this that end a stream are copied out of the stream's buffer.
const SMALL_CHUNK: usize = 256 << 10;

/// Bytes a content-defined stream reads at a time from a source past a chunk's minimum
/// size ([`StreamWriter::write_from`]): what follows a boundary in a read is copied into
/// the next chunk, on average half of this per chunk.
const CDC_READ: usize = 64 << 10;

/// A blob buffer grown past this (by a chunk of unusual size) is not kept.
const KEPT_BLOB_CAPACITY: usize = 8 << 20;

/// Highest zstd level extent lists are stored at (see [`Shared::store_list`]).
const LIST_LEVEL: i32 = 1;

/// A file read from a position of its own, leaving the descriptor's offset alone.
struct FileAt<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> FileAt<'a> {
    fn new(file: &'a File, offset: u64) -> Self {
        FileAt { file, offset }
    }
}

impl Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.file.read_at(buf, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

/// State shared by the session's threads.
struct Shared {
    vault: Vault,
    index: Arc<Index>,
    level: i32,
    pack_size: usize,
    /// Chunks stored (or being stored) by this session, and chunks of recovered packs.
    seen: Mutex<HashSet<ChunkId>>,
    /// The packs being filled, spooled to the backend as blobs arrive: one per chunk
    /// worker, so workers never wait on each other to append, and a last one for trees
    /// and lists ([`Shared::tree_packer`]).
    packers: Vec<Mutex<Option<PackWriter>>>,
    upload_tx: Mutex<Option<Sender<FinishedPack>>>,
    /// Packs uploaded (or recovered) and not yet listed in an index file.
    unindexed: Mutex<Vec<(PackId, Vec<PackEntry>)>>,
    index_files: Mutex<Vec<(String, IndexFile)>>,
    failed: AtomicBool,
    error: Mutex<Option<String>>,
    stats: Mutex<BackupStats>,
    session: Mutex<SessionRecord>,
    /// Chunks `check` found bad: stored again when met, not deduplicated.
    distrusted: HashSet<ChunkId>,
    /// Hashed chunks of ended streams waiting to go to the workers together: a tree of
    /// small files would otherwise wake a worker thread per file.
    batch: Mutex<Batch>,
    buffers: Arc<BufferPool>,
}

/// Chunk buffers of a session, reused from one chunk to the next: a fresh buffer per
/// chunk costs a page fault and a cleared page per 4 KiB, as much as hashing the chunk.
#[derive(Default)]
struct BufferPool {
    free: Mutex<FreeBuffers>,
}

#[derive(Default)]
struct FreeBuffers {
    buffers: Vec<Vec<u8>>,
    /// Capacity of `buffers`, summed.
    bytes: usize,
}

impl BufferPool {
    /// Capacity kept: what can be on its way to the workers (sixteen chunks of the
    /// default content-defined maximum, or the batches of small fixed-size chunks), so a
    /// steady stream allocates none. Only the bytes chunks filled are resident.
    const KEPT_BYTES: usize = 16 * (4 << 20) + (4 << 20);

    /// A buffer with room for a chunk of `capacity` bytes, and the head- and tailroom
    /// to encode it in place. Its length still covers what earlier chunks initialised,
    /// so new bytes are read or copied over them without clearing them first.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = {
            let mut free = self.free.lock().expect("lock");
            let buf = free.buffers.pop().unwrap_or_default();
            free.bytes -= buf.capacity();
            buf
        };
        let room = CHUNK_ALIGN + codec::CHUNK_HEADROOM + capacity + codec::CHUNK_TAILROOM;
        if buf.capacity() < room {
            buf.reserve_exact(room - buf.len());
        }
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().expect("lock");
        if free.bytes + buf.capacity() <= Self::KEPT_BYTES {
            free.bytes += buf.capacity();
            free.buffers.push(buf);
        }
    }
}

/// Where a chunk's first byte lies in its buffer, at a multiple of this address. The
/// kernel copies into a destination so aligned four times as fast as into one 13 bytes
/// past it, where the chunk began after its headroom before: `pread` of 64 KiB from
/// the page cache ran at 7 GB/s against 1.7.
const CHUNK_ALIGN: usize = 64;

/// A chunk's bytes: while it is cut and on its way to a worker. A buffer of the
/// session's pool goes back to it when the chunk is dropped.
struct ChunkBuf {
    /// Up to `start` unused bytes, [`codec::CHUNK_HEADROOM`] free bytes, then the chunk
    /// up to `end`; empty before the first bytes arrive. Bytes past `end` are left from
    /// earlier chunks.
    data: Vec<u8>,
    /// Where the headroom begins in `data`: the chunk's first byte comes
    /// [`CHUNK_ALIGN`]-aligned after it.
    start: usize,
    /// Where the chunk ends in `data`.
    end: usize,
    pool: Option<Arc<BufferPool>>,
}

impl ChunkBuf {
    /// An empty chunk that takes its buffer from `pool` when bytes arrive.
    fn pooled(pool: &Arc<BufferPool>) -> ChunkBuf {
        ChunkBuf {
            data: Vec::new(),
            start: 0,
            end: codec::CHUNK_HEADROOM,
            pool: Some(Arc::clone(pool)),
        }
    }

    /// An empty chunk that gets a buffer of its own when bytes arrive.
    fn detached() -> ChunkBuf {
        ChunkBuf {
            data: Vec::new(),
            start: 0,
            end: codec::CHUNK_HEADROOM,
            pool: None,
        }
    }

    /// A chunk in a buffer of its own, exactly as long as `bytes` and the tailroom.
    fn copy_of(bytes: &[u8]) -> ChunkBuf {
        let end = codec::CHUNK_HEADROOM + bytes.len();
        let mut data = Vec::with_capacity(end + codec::CHUNK_TAILROOM);
        data.resize(codec::CHUNK_HEADROOM, 0);
        data.extend_from_slice(bytes);
        ChunkBuf {
            data,
            start: 0,
            end,
            pool: None,
        }
    }

    /// Empties the chunk, keeping its buffer.
    fn clear(&mut self) {
        self.end = self.start + codec::CHUNK_HEADROOM;
    }

    /// Ends the chunk after its first `len` bytes.
    fn truncate(&mut self, len: usize) {
        self.end = self.end.min(self.start + codec::CHUNK_HEADROOM + len);
    }

    /// The `len` bytes after the chunk, to be filled and then added with
    /// [`ChunkBuf::grow`]; a first call takes a buffer of `capacity` bytes.
    fn spare(&mut self, len: usize, capacity: usize) -> &mut [u8] {
        if self.data.is_empty() {
            debug_assert_eq!(self.end, self.start + codec::CHUNK_HEADROOM, "no bytes yet");
            self.data = match &self.pool {
                Some(pool) => pool.take(capacity),
                None => Vec::with_capacity(
                    CHUNK_ALIGN + codec::CHUNK_HEADROOM + capacity + codec::CHUNK_TAILROOM,
                ),
            };
            // Within the capacity reserved, so the buffer does not move from here on.
            let first = self.data.as_ptr() as usize + codec::CHUNK_HEADROOM;
            self.start = (CHUNK_ALIGN - first % CHUNK_ALIGN) % CHUNK_ALIGN;
            self.end = self.start + codec::CHUNK_HEADROOM;
            if self.data.len() < self.end {
                self.data.resize(self.end, 0);
            }
        }
        let want = self.end + len;
        if self.data.len() < want {
            // Cleared only the first time a buffer reaches this far.
            self.data.resize(want, 0);
        }
        &mut self.data[self.end..want]
    }

    /// Adds `len` bytes written into [`ChunkBuf::spare`] to the chunk.
    fn grow(&mut self, len: usize) {
        debug_assert!(self.end + len <= self.data.len());
        self.end += len;
    }

    /// Appends `bytes`; a first append takes a buffer of `capacity` bytes.
    fn extend(&mut self, bytes: &[u8], capacity: usize) {
        self.spare(bytes.len(), capacity).copy_from_slice(bytes);
        self.grow(bytes.len());
    }

    /// The buffer up to the chunk's tailroom, and the chunk's length: what
    /// [`codec::encode_chunk`] takes.
    fn for_encoding(&mut self) -> (&mut [u8], usize) {
        let len = self.len();
        let room = self.end + codec::CHUNK_TAILROOM;
        if self.data.len() < room {
            self.data.resize(room, 0);
        }
        (&mut self.data[self.start..room], len)
    }
}

impl std::ops::Deref for ChunkBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.data
            .get(self.start + codec::CHUNK_HEADROOM..self.end)
            .unwrap_or_default()
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool
            && self.data.capacity() > 0
        {
            pool.give(std::mem::take(&mut self.data));
        }
    }
}

/// Jobs collected for one hand-over to the workers.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    bytes: usize,
}

impl Batch {
    /// Hand-over thresholds: enough work to be worth a thread wake-up, little enough to
    /// keep both workers busy while the plugin produces.
    const MAX_JOBS: usize = 32;
    const MAX_BYTES: usize = 1 << 20;

    fn is_full(&self) -> bool {
        self.jobs.len() >= Self::MAX_JOBS || self.bytes >= Self::MAX_BYTES
    }
}

impl Shared {
    /// Records the first failure, which ends the backup; the failures it causes in the
    /// other threads ("backup aborted") are not reported again.
    fn fail(&self, message: String) {
        let mut slot = self.error.lock().expect("lock");
        if slot.is_none() {
            tracing::error!(error = %message, "backup writer failed");
            *slot = Some(message);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// The error that ended the backup: the first failure recorded, else `message`.
    fn failure(&self, message: String) -> Error {
        let first = self.error.lock().expect("lock").clone();
        Error::Aborted(first.unwrap_or(message))
    }

    fn check(&self) -> Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(self.failure(String::new()));
        }
        Ok(())
    }

    /// Whether `id` must be stored by this session (and claims it if so).
    fn claim(&self, id: &ChunkId) -> bool {
        (!self.index.has_usable(id) || self.needs_new_copy(id))
            && self.seen.lock().expect("lock").insert(*id)
    }

    /// Whether a chunk of an earlier point may be referred to again: indexed in a pack a
    /// new backup may rely on, and not found bad by `check` unless stored again since.
    fn reusable(&self, id: &ChunkId) -> bool {
        self.index.has_usable(id) && !self.needs_new_copy(id)
    }

    /// The first chunk of `extents` that cannot be [`reusable`](Shared::reusable).
    /// The index is asked about all of them at once, which is faster for the thousands
    /// of chunks of a disk carried forward.
    fn first_unusable(&self, extents: &[Extent]) -> Option<ChunkId> {
        let ids = extents.iter().filter_map(|e| e.id.as_ref());
        let missing = self.index.first_unusable(ids.clone());
        let bad = if self.distrusted.is_empty() {
            None
        } else {
            ids.clone().position(|id| self.needs_new_copy(id))
        };
        let first = match (missing, bad) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        first.and_then(|at| ids.clone().nth(at).copied())
    }

    /// Why an entry of an earlier point cannot be carried forward as it is, if it
    /// cannot: a chunk of its content, or of its subtree, is missing or bad. The parent
    /// is checked this way entry by entry as it is used, not all at once when a backup
    /// starts.
    fn unusable(&self, entry: &Entry) -> Option<String> {
        let missing = |id: &ChunkId| format!("its chunk {} is missing or damaged", id.short());
        match &entry.content {
            Content::Extents(extents) => {
                if let Some(id) = self.first_unusable(extents) {
                    return Some(missing(&id));
                }
            }
            Content::Lists(lists) => {
                for list in lists {
                    if !self.reusable(&list.id) {
                        return Some(missing(&list.id));
                    }
                    let extents = match self.vault.read_extent_list(&list.id) {
                        Ok(list) => list.extents,
                        Err(e) => return Some(format!("its extent list cannot be read: {e}")),
                    };
                    if let Some(id) = self.first_unusable(&extents) {
                        return Some(missing(&id));
                    }
                }
            }
        }
        let subtree = entry.subtree?;
        let mut problem = None;
        crate::commands::walk::walk(&self.vault, subtree, None, &mut |event| {
            use crate::commands::walk::WalkEvent;
            if problem.is_some() {
                return;
            }
            match event {
                WalkEvent::Meta { id, path } | WalkEvent::Data { id, path } => {
                    if !self.reusable(&id) {
                        problem = Some(format!("'{path}' below it refers to {}", missing(&id)));
                    }
                }
                WalkEvent::Unreadable { path, error } => {
                    problem = Some(format!("'{path}' below it cannot be read: {error}"));
                }
            }
        });
        problem
    }

    /// Whether a chunk `check` found bad has no second copy yet (once one backup stored
    /// it again, the next ones use that).
    fn needs_new_copy(&self, id: &ChunkId) -> bool {
        self.distrusted.contains(id) && self.index.locations(id).len() < 2
    }

    /// The packer trees and lists go to, whichever thread stores them.
    fn tree_packer(&self) -> usize {
        self.packers.len() - 1
    }

    /// Encodes and appends a tree or list document at compression `level`; returns the
    /// stored size.
    fn store(&self, id: ChunkId, kind: BlobKind, data: &[u8], level: i32) -> Result<u64> {
        BLOB.with_borrow_mut(|blob| {
            blob.clear();
            codec::encode_blob(self.vault.crypto(), &id, data, level, blob);
            let stored = blob.len() as u64;
            self.append_blob(self.tree_packer(), id, kind, data.len() as u32, blob)?;
            if blob.capacity() > KEPT_BLOB_CAPACITY {
                *blob = Vec::new();
            }
            Ok(stored)
        })
    }

    /// Encodes a data chunk and appends it to the pack of worker `packer`, sealing it in
    /// its own buffer when it is stored raw; returns the stored size.
    fn store_chunk(&self, packer: usize, id: ChunkId, chunk: &mut ChunkBuf) -> Result<u64> {
        BLOB.with_borrow_mut(|scratch| {
            let raw_len = chunk.len() as u32;
            let (buf, len) = chunk.for_encoding();
            let blob = codec::encode_chunk(self.vault.crypto(), &id, buf, len, self.level, scratch);
            let stored = blob.len() as u64;
            self.append_blob(packer, id, BlobKind::Data, raw_len, blob)?;
            if scratch.capacity() > KEPT_BLOB_CAPACITY {
                *scratch = Vec::new();
            }
            Ok(stored)
        })
    }

    /// Appends an encoded blob to pack `packer`, sending the pack off when full.
    fn append_blob(
        &self,
        packer: usize,
        id: ChunkId,
        kind: BlobKind,
        raw_len: u32,
        blob: &[u8],
    ) -> Result<()> {
        self.add_to_pack(packer, |writer| Ok(writer.add(id, kind, raw_len, blob)?))
    }

    /// Runs `add` on the pack being filled by `packer` (started if there is none), then
    /// sends the pack off if that filled it.
    fn add_to_pack<T>(
        &self,
        packer: usize,
        add: impl FnOnce(&mut PackWriter) -> Result<T>,
    ) -> Result<T> {
        let (added, full) = {
            let mut slot = self.packers[packer].lock().expect("lock");
            let writer = match slot.as_mut() {
                Some(writer) => writer,
                None => slot.insert(PackWriter::spooled(
                    self.vault.backend().spool(FileKind::Pack)?,
                )?),
            };
            let added = add(writer)?;
            let full = if writer.size() >= self.pack_size {
                slot.take()
            } else {
                None
            };
            (added, full)
        };
        if let Some(full) = full {
            self.send_pack(full)?;
        }
        Ok(added)
    }

    /// Reads, hashes and stores a chunk of a file, straight into the room the pack of
    /// worker `packer` has for its blob when it has some, else through `own`.
    fn store_read(
        &self,
        packer: usize,
        read: &ChunkRead,
        own: &mut ChunkBuf,
    ) -> std::result::Result<Outcome, String> {
        let room = codec::CHUNK_HEADROOM + read.len + codec::CHUNK_TAILROOM;
        let mut outcome = None;
        let encoded = self
            .add_to_pack(packer, |writer| {
                Ok(writer.add_in_place(room, |room| {
                    let (result, blob) = read.encode_into(self, room);
                    outcome = Some(result);
                    blob
                })?)
            })
            .map_err(|e| e.to_string())?;
        if !encoded {
            return read.store(self, packer, own);
        }
        outcome.unwrap_or_else(|| Err("the pack's spool kept room it never offered".into()))
    }

    /// Hashes a chunk, unless its id is `hashed` already, and stores it unless the vault
    /// or this session has it already.
    fn hash_and_store(
        &self,
        packer: usize,
        chunk: &mut ChunkBuf,
        hashed: Option<ChunkId>,
    ) -> std::result::Result<Outcome, String> {
        let id = hashed.unwrap_or_else(|| self.vault.crypto().chunk_id(chunk));
        let len = chunk.len() as u64;
        let stored = if self.claim(&id) {
            Some(
                self.store_chunk(packer, id, chunk)
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        Ok(Outcome {
            id: Some(id),
            len,
            stored,
            ended: None,
        })
    }

    fn send_pack(&self, writer: PackWriter) -> Result<()> {
        let finished = writer.finish(self.vault.crypto())?;
        let tx = self.upload_tx.lock().expect("lock").clone();
        match tx {
            Some(tx) if tx.send(finished).is_ok() => Ok(()),
            _ => {
                self.check()?;
                Err(Error::Aborted("the pack uploader has stopped".into()))
            }
        }
    }

    /// Stores a tree or list document synchronously; returns its id.
    fn store_tree(&self, doc: Vec<u8>) -> Result<ChunkId> {
        self.store_doc(doc, self.level)
    }

    /// Stores an extent list blob, at a fast compression level whatever the vault's:
    /// mostly chunk ids, which do not compress, it is written again by every backup of
    /// a disk that changed, and the backup's end waits for it.
    fn store_list(&self, doc: Vec<u8>) -> Result<ChunkId> {
        self.store_doc(doc, self.level.min(LIST_LEVEL))
    }

    fn store_doc(&self, doc: Vec<u8>, level: i32) -> Result<ChunkId> {
        self.check()?;
        let id = self.vault.crypto().chunk_id(&doc);
        if self.claim(&id) {
            let stored = self.store(id, BlobKind::Tree, &doc, level)?;
            let mut stats = self.stats.lock().expect("lock");
            stats.bytes_stored += stored;
        }
        Ok(id)
    }

    fn heartbeat(&self) {
        let now = self.vault.clock().now();
        let mut record = self.session.lock().expect("lock");
        if now.duration_since(record.heartbeat) >= HEARTBEAT_INTERVAL {
            record.heartbeat = now;
            // A heartbeat lost in a crash leaves the session stale, as it is then anyway.
            if let Err(e) = session::write_session(&self.vault, &record, false) {
                tracing::warn!(error = %e, "cannot refresh the writer session");
            }
        }
    }

    /// Writes an index file for the packs uploaded so far.
    /// Stores a finished pack and queues its entries for the next index file, writing
    /// one when enough packs wait for it. A failure fails the backup.
    fn upload(&self, mut pack: FinishedPack) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let entries = std::mem::take(&mut pack.entries);
        let id = pack.id;
        if let Err(e) = pack.upload(self.vault.backend().as_ref()) {
            self.fail(e.to_string());
            return;
        }
        let count = {
            let mut unindexed = self.unindexed.lock().expect("lock");
            unindexed.push((id, entries));
            unindexed.len()
        };
        if count >= INDEX_FLUSH_PACKS
            && let Err(e) = self.flush_index()
        {
            self.fail(e.to_string());
        }
        self.heartbeat();
    }

    fn flush_index(&self) -> Result<()> {
        let packs = std::mem::take(&mut *self.unindexed.lock().expect("lock"));
        if packs.is_empty() {
            return Ok(());
        }
        let file = IndexFile { packs };
        let (id, bytes) = file.seal(self.vault.crypto());
        if let Err(e) = self
            .vault
            .backend()
            .write(FileKind::Index, &id.to_hex(), &bytes)
        {
            // Still unindexed: a later flush may succeed, and until one does the session
            // must not be recorded as ended (see `Backup::end_session`).
            self.unindexed.lock().expect("lock").extend(file.packs);
            return Err(e.into());
        }
        self.index_files
            .lock()
            .expect("lock")
            .push((id.to_hex(), file));
        Ok(())
    }
}

/// Chunk worker `packer`: hashes, encodes and stores the chunks of the batches it
/// receives in a pack of its own, until an empty batch or the channel's end. Chunks it
/// reads itself go through two buffers of its own, kept warm in its core's cache, or
/// straight into its pack's write stage.
///
/// Chunks are hashed two at a time ([`Crypto::chunk_ids`]) where they can be: one whose
/// bytes are in memory with the next such chunk of the batch, or of the next batch if
/// one is waiting already; one the worker reads from a file with the next job of the
/// batch if that reads from a file too ([`run_file_pair`]). Hashing is most of a
/// backup's work on new data, and a pair hashes in little more time than one chunk.
///
/// [`Crypto::chunk_ids`]: crate::crypto::Crypto::chunk_ids
fn worker(shared: Arc<Shared>, packer: usize, batches: Receiver<Vec<Job>>) {
    let mut own = ChunkBuf::detached();
    let mut second = ChunkBuf::detached();
    let mut queue: VecDeque<Job> = VecDeque::new();
    // Whether the batches have not ended yet (an empty batch ends them).
    let mut open = true;
    loop {
        if queue.is_empty() {
            if !open {
                return;
            }
            match batches.recv() {
                Ok(batch) if !batch.is_empty() => queue.extend(batch),
                _ => return,
            }
        }
        let Some(mut job) = queue.pop_front() else {
            continue;
        };
        if job.in_memory().is_some() && !shared.failed.load(Ordering::Relaxed) {
            if open && !queue.iter().any(|j| j.in_memory().is_some()) {
                match batches.try_recv() {
                    Ok(batch) if batch.is_empty() => open = false,
                    Ok(batch) => queue.extend(batch),
                    Err(_) => {}
                }
            }
            if let Some(at) = queue.iter().position(|j| j.in_memory().is_some()) {
                let mut partner = queue.remove(at).expect("found just above");
                // Each chunk's bytes are looked at for zeros once, here.
                let holes = [job.becomes_hole(), partner.becomes_hole()];
                if holes == [false, false]
                    && let (Some(a), Some(b)) = (job.in_memory(), partner.in_memory())
                {
                    let [id_a, id_b] = shared.vault.crypto().chunk_ids(a, b);
                    job.set_hashed(id_a);
                    partner.set_hashed(id_b);
                }
                for (job, hole) in [job, partner].into_iter().zip(holes) {
                    match &job.read {
                        Some(read) if hole => {
                            let outcome = read.not_stored(None);
                            reply(&shared, job, Ok(outcome));
                        }
                        _ => run_job(&shared, packer, job, &mut own),
                    }
                }
                continue;
            }
        }
        if job.read.as_ref().is_some_and(ChunkRead::reads_a_file)
            && queue
                .front()
                .is_some_and(|next| next.read.as_ref().is_some_and(ChunkRead::reads_a_file))
            && !shared.failed.load(Ordering::Relaxed)
        {
            let partner = queue.pop_front().expect("looked at just above");
            run_file_pair(&shared, packer, [job, partner], [&mut own, &mut second]);
            continue;
        }
        run_job(&shared, packer, job, &mut own);
    }
}

/// Reads the chunks of two jobs from their files into the worker's two buffers, hashes
/// them side by side and stores them. Each could be read straight into its pack's write
/// stage and stored there, as a chunk without a partner is, but the copy of 64 KiB from
/// a buffer the worker just filled costs a small part of what hashing the chunks one at
/// a time adds: a full backup of a 1 GiB image file took 0.93–1.01 CPU-seconds this
/// way, 1.16–1.22 that way.
fn run_file_pair(shared: &Shared, packer: usize, jobs: [Job; 2], bufs: [&mut ChunkBuf; 2]) {
    let [mut a, mut b] = jobs;
    let [buf_a, buf_b] = bufs;
    let (Some(read_a), Some(read_b)) = (a.read.take(), b.read.take()) else {
        unreachable!("both jobs read from files");
    };
    let filled_a = read_a.fill(buf_a);
    let filled_b = read_b.fill(buf_b);
    // Each chunk's bytes are looked at for zeros once, here.
    let holes = [
        matches!(filled_a, Ok(None)) && is_zero(buf_a),
        matches!(filled_b, Ok(None)) && is_zero(buf_b),
    ];
    let hashed = match (&filled_a, &filled_b) {
        (Ok(None), Ok(None)) if holes == [false, false] => {
            let [id_a, id_b] = shared.vault.crypto().chunk_ids(buf_a, buf_b);
            [Some(id_a), Some(id_b)]
        }
        _ => [None, None],
    };
    let pair = [(a, read_a, filled_a, buf_a), (b, read_b, filled_b, buf_b)];
    for ((job, read, filled, buf), (hole, id)) in
        pair.into_iter().zip(holes.into_iter().zip(hashed))
    {
        let result = if hole {
            Ok(read.not_stored(None))
        } else {
            filled.and_then(|ended| read.store_filled(shared, packer, buf, ended, id))
        };
        reply(shared, job, result);
    }
}

/// Stores the chunk of one job and replies with its outcome.
fn run_job(shared: &Shared, packer: usize, mut job: Job, own: &mut ChunkBuf) {
    if let Some(id) = job.claimed {
        if !shared.failed.load(Ordering::Relaxed) {
            match shared.store_chunk(packer, id, &mut job.data) {
                Ok(stored) => shared.stats.lock().expect("lock").bytes_stored += stored,
                Err(e) => shared.fail(e.to_string()),
            }
        }
        return;
    }
    let result = if shared.failed.load(Ordering::Relaxed) {
        Err("backup aborted".to_string())
    } else {
        match &job.read {
            Some(read) => shared.store_read(packer, read, own),
            None => shared.hash_and_store(packer, &mut job.data, job.hashed),
        }
    };
    reply(shared, job, result);
}

/// Tells the stream the outcome of `job`, failing the backup if it failed.
fn reply(shared: &Shared, job: Job, result: std::result::Result<Outcome, String>) {
    if let Err(e) = &result {
        shared.fail(e.clone());
    }
    // The stream may have been dropped after an error; nothing else to tell.
    if let Some(reply) = job.reply {
        let _ = reply.send((job.seq, result));
    }
}

fn uploader(shared: Arc<Shared>, packs: Receiver<FinishedPack>) {
    for pack in packs {
        shared.upload(pack);
    }
}

/// A backup in progress: one writer session.
pub struct Backup {
    shared: Arc<Shared>,
    job_tx: Option<Sender<Vec<Job>>>,
    workers: Vec<JoinHandle<()>>,
    uploader: Option<JoinHandle<()>>,
    tree: Option<TreeBuilder>,
    options: BackupOptions,
    start: jiff::Timestamp,
    parent: Option<ParentView>,
    chunkers: HashMap<crate::chunker::CdcParams, Arc<CdcChunker>>,
    finished: bool,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup")
            .field("item", &self.options.item)
            .finish()
    }
}

impl Backup {
    /// Starts a writer session.
    pub fn start(vault: &Vault, options: BackupOptions) -> Result<Backup> {
        let now = vault.clock().now();
        let record = SessionRecord {
            id: SessionId::random(),
            item: options.item.clone(),
            host: options.host.clone(),
            pid: std::process::id(),
            started: now,
            heartbeat: now,
            finished: None,
        };
        // Announce the session before looking at the index: a prune that marks packs
        // after this point will wait for us.
        // Durable: after a power loss, the next backup finds this session without an end
        // and reuses the packs it uploaded.
        session::write_session(vault, &record, true)?;
        vault.reload_index()?;
        let index = vault.index();
        let level = options
            .compression_level
            .unwrap_or(vault.config().compression_level);
        if !(0..=22).contains(&level) {
            return Err(Error::Invalid(format!(
                "compression level {level} is outside 0..=22"
            )));
        }
        let parent = match options.parent {
            Some(id) => Some(ParentView::new(vault.clone(), vault.load_point(&id)?)),
            None => None,
        };
        let workers = crate::vault::worker_threads(options.workers);
        // Finished packs are already in the backend's spool: one waiting costs no memory
        // and keeps the workers from stalling while the uploader commits the last one.
        let (upload_tx, upload_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            vault: vault.clone(),
            index,
            level,
            pack_size: options.pack_size.max(1),
            seen: Mutex::new(HashSet::new()),
            packers: (0..=workers).map(|_| Mutex::new(None)).collect(),
            upload_tx: Mutex::new(Some(upload_tx)),
            unindexed: Mutex::new(Vec::new()),
            index_files: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            stats: Mutex::new(BackupStats::default()),
            session: Mutex::new(record),
            batch: Mutex::new(Batch::default()),
            buffers: Arc::default(),
            distrusted: vault.distrusted_chunks().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the damage records");
                HashSet::new()
            }),
        });
        if another_session_unfinished(vault, &shared.session.lock().expect("lock").id)? {
            recover_unindexed_packs(&shared)?;
        }
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Vec<Job>>(workers * 4);
        let worker_handles = (0..workers)
            .map(|i| {
                let shared = shared.clone();
                let rx = job_rx.clone();
                std::thread::Builder::new()
                    .name(format!("tessera-chunk-{i}"))
                    .spawn(move || worker(shared, i, rx))
                    .map_err(|e| Error::Aborted(format!("cannot start a worker thread: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let uploader_shared = shared.clone();
        let uploader_handle = std::thread::Builder::new()
            .name("tessera-upload".into())
            .spawn(move || uploader(uploader_shared, upload_rx))
            .map_err(|e| Error::Aborted(format!("cannot start the uploader thread: {e}")))?;
        Ok(Backup {
            shared,
            job_tx: Some(job_tx),
            workers: worker_handles,
            uploader: Some(uploader_handle),
            tree: Some(TreeBuilder::new()),
            start: now,
            options,
            parent,
            chunkers: HashMap::new(),
            finished: false,
        })
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.shared.vault
    }

    /// Opens a content stream cut as `chunking` says.
    pub fn stream(&mut self, chunking: Chunking) -> Result<StreamWriter> {
        chunking.validate()?;
        self.shared.check()?;
        let cutter = match chunking {
            Chunking::ContentDefined(params) => {
                let chunker = match self.chunkers.get(&params) {
                    Some(c) => c.clone(),
                    None => {
                        let c = Arc::new(self.shared.vault.cdc_chunker(params)?);
                        self.chunkers.insert(params, c.clone());
                        c
                    }
                };
                Cutter::Cdc(chunker)
            }
            Chunking::Fixed { size } => Cutter::Fixed(size as usize),
        };
        let (reply_tx, reply_rx) = crossbeam_channel::unbounded();
        Ok(StreamWriter {
            shared: self.shared.clone(),
            job_tx: self
                .job_tx
                .clone()
                .ok_or_else(|| Error::Aborted("backup already finished".into()))?,
            cur: ChunkBuf::pooled(&self.shared.buffers),
            scan: CdcScan::default(),
            cutter,
            slots: Vec::new(),
            pending: 0,
            batch: Batch::default(),
            reply_tx,
            reply_rx,
            ended: None,
            stats: BackupStats::default(),
        })
    }

    /// Stores everything `reader` yields as one content.
    pub fn store_reader(
        &mut self,
        reader: &mut dyn std::io::Read,
        chunking: Chunking,
        what: &str,
    ) -> Result<StreamResult> {
        let mut stream = self.stream(chunking)?;
        stream.write_from(reader, u64::MAX, what)?;
        stream.finish()
    }

    /// Stores a small document (configuration, metadata) as one content.
    pub fn store_bytes(&mut self, data: &[u8]) -> Result<StreamResult> {
        let mut stream =
            self.stream(Chunking::ContentDefined(self.shared.vault.config().chunker))?;
        stream.write(data)?;
        stream.finish()
    }

    /// Adds an entry at `path` (depth first; a directory before its children).
    pub fn add_entry(&mut self, path: &str, entry: Entry) -> Result<()> {
        self.shared.check()?;
        let shared = self.shared.clone();
        let mut store = |doc: Vec<u8>| shared.store_tree(doc);
        self.tree
            .as_mut()
            .ok_or_else(|| Error::Aborted("backup already finished".into()))?
            .add(path, entry, &mut store)?;
        self.shared.stats.lock().expect("lock").entries += 1;
        self.shared.heartbeat();
        Ok(())
    }

    /// Whether the backup has a parent point to look entries up in.
    pub fn has_parent(&self) -> bool {
        self.parent.is_some()
    }

    /// The parent point's entry at `path`, if there is a parent and it has the path.
    ///
    /// A parent tree that cannot be read is as good as no parent for the paths below
    /// it: they are reported missing, with a warning, so the caller reads them again.
    pub fn parent_entry(&mut self, path: &str) -> Result<Option<Entry>> {
        let Some(parent) = &mut self.parent else {
            return Ok(None);
        };
        match parent.entry(path) {
            Ok(found) => Ok(found),
            Err(e @ (Error::Invalid(_) | Error::Tree(_))) => Err(e),
            Err(e) => {
                if !std::mem::replace(&mut parent.warned, true) {
                    tracing::warn!(
                        path,
                        error = %e,
                        "the parent point's tree cannot be read; what lies below is read again"
                    );
                }
                Ok(None)
            }
        }
    }

    /// The parent point, if any.
    pub fn parent_point(&self) -> Option<&Point> {
        self.parent.as_ref().map(|p| &p.point)
    }

    /// Adds the parent's entry at `path` unchanged, without reading its content. For a
    /// directory this carries the whole subtree. Returns false if the parent has no such
    /// entry.
    pub fn carry_forward(&mut self, path: &str) -> Result<bool> {
        self.carry_forward_with(path, None)
    }

    /// Like [`Backup::carry_forward`], replacing the stored metadata with `meta` when given
    /// (the content is unchanged, but times or ownership may have moved).
    pub fn carry_forward_with(
        &mut self,
        path: &str,
        meta: Option<crate::tree::Metadata>,
    ) -> Result<bool> {
        let Some(mut entry) = self.parent_entry(path)? else {
            return Ok(false);
        };
        if let Some(problem) = self.shared.unusable(&entry) {
            tracing::warn!(path, "not carried forward from the parent point: {problem}");
            return Ok(false);
        }
        if let Some(meta) = meta {
            entry.meta = meta;
        }
        let len = entry.content.len();
        self.add_entry(path, entry)?;
        let mut stats = self.shared.stats.lock().expect("lock");
        stats.bytes_carried += len;
        stats.entries_carried += 1;
        Ok(true)
    }

    /// Figures so far.
    pub fn stats(&self) -> BackupStats {
        *self.shared.stats.lock().expect("lock")
    }

    fn stop_threads(&mut self) -> Result<()> {
        // Hand over the last batch, let the workers drain, then the uploader, and store
        // the packs left open.
        let last_batch = std::mem::take(&mut *self.shared.batch.lock().expect("lock"));
        if let Some(tx) = self.job_tx.take() {
            // Sends fail only once the workers stopped after an error, which `check`
            // reports below.
            if !last_batch.jobs.is_empty() {
                let _ = tx.send(last_batch.jobs);
            }
            // A stream left open keeps the channel open: an empty batch per worker
            // stops them once everything sent before is stored.
            for _ in &self.workers {
                let _ = tx.send(Vec::new());
            }
        }
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                self.shared.fail("a chunk worker panicked".into());
            }
        }
        let mut last_packs = Vec::new();
        for packer in &self.shared.packers {
            let last = packer.lock().expect("lock").take();
            if let Some(last) = last
                && !last.is_empty()
                && !self.shared.failed.load(Ordering::SeqCst)
            {
                last_packs.push(last.finish(self.shared.vault.crypto())?);
            }
        }
        *self.shared.upload_tx.lock().expect("lock") = None;
        if let Some(handle) = self.uploader.take()
            && handle.join().is_err()
        {
            self.shared.fail("the pack uploader panicked".into());
        }
        // Each worker leaves a pack open. Stored side by side, their `fsync`s share the
        // file system's journal commits instead of waiting for one another's, which is
        // most of the time a small backup spends ending.
        let shared = &self.shared;
        std::thread::scope(|scope| {
            let uploads: Vec<_> = last_packs
                .into_iter()
                .filter_map(|pack| {
                    std::thread::Builder::new()
                        .name("tessera-upload".into())
                        .spawn_scoped(scope, move || shared.upload(pack))
                        .map_err(|e| shared.fail(format!("cannot start an upload thread: {e}")))
                        .ok()
                })
                .collect();
            for upload in uploads {
                if upload.join().is_err() {
                    shared.fail("a pack upload panicked".into());
                }
            }
        });
        Ok(())
    }

    /// Records the end of the session, once every pack it uploaded is in an index file.
    ///
    /// A session left without an end (killed, or its index could not be written) is what
    /// tells the next backup to look for packs in no index file and reuse them, so a
    /// session whose packs are not all indexed keeps its record open until it goes stale.
    fn end_session(&self) {
        if let Err(e) = self.shared.flush_index() {
            tracing::warn!(error = %e, "cannot index the data of an unfinished backup");
            return;
        }
        let mut record = self.shared.session.lock().expect("lock");
        record.finished = Some(self.shared.vault.clock().now());
        // An end lost in a crash makes the session look unfinished: the next backup then
        // looks for packs it left, and prune waits for it; both are safe.
        if let Err(e) = session::write_session(&self.shared.vault, &record, false) {
            tracing::warn!(error = %e, "cannot record the end of the writer session");
        }
    }

    /// Finishes the backup: stores the trees, closes and uploads the last pack, writes the
    /// index and finally the recovery point, which is the commit.
    pub fn commit(mut self, options: CommitOptions) -> Result<(PointId, Point)> {
        let result = self.commit_inner(options);
        self.finished = true;
        if result.is_err() {
            // Every pack uploaded before `end_session` indexes them, so the next run
            // reuses them.
            let _ = self.stop_threads();
        }
        self.end_session();
        result
    }

    /// Finishes a backup that rewrote the point `original` (see
    /// [`crate::commands::rewrite`]): the new point keeps everything the original
    /// recorded (times, item, plugin, tags, figures) but its tree, and names it in
    /// `original`.
    pub fn commit_rewrite(mut self, original: (PointId, &Point)) -> Result<(PointId, Point)> {
        let (id, point) = original;
        let result = self.write_point(|root, _| Point {
            original: point.original.or(Some(id)),
            root,
            ..point.clone()
        });
        self.finished = true;
        if result.is_err() {
            let _ = self.stop_threads();
        }
        self.end_session();
        result
    }

    fn commit_inner(&mut self, options: CommitOptions) -> Result<(PointId, Point)> {
        let start = self.start;
        let options_of_backup = self.options.clone();
        let clock = self.shared.vault.clock().clone();
        self.write_point(move |root, stats| Point {
            version: TREE_VERSION,
            item: options_of_backup.item,
            plugin: options_of_backup.plugin,
            host: options_of_backup.host,
            start,
            end: clock.now(),
            consistency: options.consistency,
            consistency_reason: options.consistency_reason,
            tags: options_of_backup.tags,
            parent: options_of_backup.parent,
            original: None,
            partial: options.partial,
            warnings: options.warnings,
            attributes: options.attributes,
            stats,
            root,
        })
    }

    /// Stores the trees, closes the packs, writes the index, then the point `make`
    /// builds around the root tree and the backup's figures: the commit.
    fn write_point(
        &mut self,
        make: impl FnOnce(ChunkId, BackupStats) -> Point,
    ) -> Result<(PointId, Point)> {
        self.shared.check()?;
        let tree = self
            .tree
            .take()
            .ok_or_else(|| Error::Aborted("backup already finished".into()))?;
        let shared = self.shared.clone();
        let mut store = |doc: Vec<u8>| shared.store_tree(doc);
        let root = tree.finish(&mut store)?;
        self.stop_threads()?;
        self.shared.check()?;
        self.shared.flush_index()?;
        let point = make(root, self.stats());
        let vault = &self.shared.vault;
        let doc = serde_json::to_vec(&point).expect("points always serialize");
        let name = vault.write_sealed(FileKind::Point, POINT_MAGIC, &doc)?;
        let id: PointId = name.parse().expect("sealed names are hex ids");
        let files = std::mem::take(&mut *self.shared.index_files.lock().expect("lock"));
        vault.merge_into_index(files);
        tracing::info!(point = %id.short(), item = %point.item, "recovery point committed");
        Ok((id, point))
    }

    /// Abandons the backup. Uploaded data stays indexed for the next run; prune reclaims
    /// it if nothing uses it.
    pub fn abort(mut self) {
        self.abort_inner();
    }

    fn abort_inner(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let _ = self.stop_threads();
        self.end_session();
    }
}

impl Drop for Backup {
    fn drop(&mut self) {
        self.abort_inner();
    }
}

/// Whether a writer session other than `ours` has no recorded end: it was killed, could
/// not index what it uploaded, or is still running. Only then can packs exist that no
/// index file lists, so only then is listing every pack worth its cost (on an object
/// store, a listing of the whole vault).
fn another_session_unfinished(vault: &Vault, ours: &SessionId) -> Result<bool> {
    Ok(session::load_sessions(vault)?
        .iter()
        .any(|s| s.id != *ours && s.finished.is_none()))
}

/// Packs that exist but are in no index (an earlier backup was killed before writing its
/// index, or another writer has not written it yet) are read back from their headers so
/// their chunks are reused; they are indexed by this session's index file.
fn recover_unindexed_packs(shared: &Shared) -> Result<()> {
    let vault = &shared.vault;
    let marked: HashSet<PackId> = vault.marked_packs()?;
    let mut recovered = 0usize;
    for info in vault.backend().list(FileKind::Pack)? {
        let Ok(pack) = info.name.parse::<PackId>() else {
            continue;
        };
        if shared.index.has_pack(&pack) || marked.contains(&pack) {
            continue;
        }
        match pack::read_header(vault.backend().as_ref(), vault.crypto(), &pack, info.size) {
            Ok(entries) => {
                let mut seen = shared.seen.lock().expect("lock");
                seen.extend(entries.iter().map(|e| e.id));
                drop(seen);
                shared.unindexed.lock().expect("lock").push((pack, entries));
                recovered += 1;
            }
            Err(e) => {
                tracing::warn!(pack = %pack.short(), error = %e, "ignoring unreadable unindexed pack")
            }
        }
    }
    if recovered > 0 {
        tracing::info!(packs = recovered, "reusing packs of an interrupted backup");
    }
    Ok(())
}

enum Cutter {
    Cdc(Arc<CdcChunker>),
    Fixed(usize),
}

impl Cutter {
    fn max(&self) -> usize {
        match self {
            Cutter::Cdc(c) => c.params().max_size as usize,
            Cutter::Fixed(size) => *size,
        }
    }
}

/// The result of one content stream.
#[derive(Debug, Clone)]
pub struct StreamResult {
    /// The content, ready to put in an entry.
    pub content: Content,
    /// Figures of this stream. `bytes_stored` counts only the chunks stored before the
    /// stream ended; the backup's own figures ([`Backup::stats`], the point's stats)
    /// count every chunk once it is written.
    pub stats: BackupStats,
}

/// One content stream being written: push bytes, then [`StreamWriter::finish`].
pub struct StreamWriter {
    shared: Arc<Shared>,
    job_tx: Sender<Vec<Job>>,
    cutter: Cutter,
    /// The chunk being filled.
    cur: ChunkBuf,
    /// Where a content-defined cut stands in `cur`.
    scan: CdcScan,
    /// Extents in order; `None` while a worker has the chunk.
    slots: Vec<Option<Extent>>,
    pending: usize,
    /// Chunks cut but not yet handed to the workers: small fixed-size chunks go in
    /// batches, so the job queue holds megabytes of work rather than a few chunks.
    batch: Batch,
    reply_tx: Sender<(usize, Result<Outcome, String>)>,
    reply_rx: Receiver<(usize, Result<Outcome, String>)>,
    /// The first chunk, in the stream's order, whose file ended before it: its place,
    /// where the file ended, and the file. The stream fails from then on.
    ended: Option<(usize, u64, Arc<str>)>,
    stats: BackupStats,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("extents", &self.slots.len())
            .finish()
    }
}

fn is_zero(data: &[u8]) -> bool {
    // OR-folding fixed-size blocks lets the compiler vectorise; exit per block.
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

impl StreamWriter {
    /// Appends bytes to the stream.
    ///
    /// Each byte is scanned for a chunk boundary once and copied once, into the buffer
    /// of the chunk it belongs to.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        self.shared.check()?;
        self.stats.bytes_read += data.len() as u64;
        let capacity = self.cutter.max();
        while !data.is_empty() {
            let end = match &self.cutter {
                Cutter::Cdc(chunker) => chunker.feed(&mut self.scan, data),
                Cutter::Fixed(size) => {
                    let room = size - self.cur.len();
                    (data.len() >= room).then_some(room)
                }
            };
            let Some(len) = end else {
                self.cur.extend(data, capacity);
                break;
            };
            self.cur.extend(&data[..len], capacity);
            data = &data[len..];
            self.cut(false)?;
        }
        self.collect_ready(false)
    }

    /// Appends up to `len` bytes read from `source`, read straight into the buffers of
    /// the chunks they belong to, where [`StreamWriter::write`] copies the caller's bytes
    /// there. Returns how many bytes were appended: fewer than `len` only when `source`
    /// ends first. A failed read is an [`Error::Source`] naming `what` and where in the
    /// range it failed; the bytes read before it stay in the stream.
    pub fn write_from(
        &mut self,
        source: &mut (impl Read + ?Sized),
        len: u64,
        what: &str,
    ) -> Result<u64> {
        self.shared.check()?;
        let capacity = self.cutter.max();
        let mut done = 0u64;
        while done < len {
            let left = usize::try_from(len - done).unwrap_or(usize::MAX);
            let want = match &self.cutter {
                Cutter::Fixed(size) => size - self.cur.len(),
                // No boundary falls before the minimum size, so that much is read at
                // once; past it, reads are short, so the bytes of a read that follow a
                // boundary and move to the next chunk's buffer are few.
                Cutter::Cdc(chunker) => {
                    let min = chunker.params().min_size as usize;
                    min.saturating_sub(self.scan.len())
                        .max(CDC_READ)
                        .min(capacity - self.cur.len())
                }
            }
            .min(left);
            // Bytes moved over from the last chunk leave the end of this one unaligned: a
            // short read first brings it to where the kernel copies fast.
            let want = match self.cur.len() % CHUNK_ALIGN {
                0 => want,
                off => want.min(CHUNK_ALIGN - off),
            };
            let read = match source.read(self.cur.spare(want, capacity)) {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Source {
                        what: format!("{what} at byte {done}"),
                        source,
                    });
                }
            };
            let start = self.cur.len();
            self.cur.grow(read);
            done += read as u64;
            self.stats.bytes_read += read as u64;
            self.cut_in_place(start, capacity)?;
        }
        self.collect_ready(false)?;
        Ok(done)
    }

    /// Appends `len` bytes of `file` from byte `offset` on, as [`StreamWriter::write_from`]
    /// would read them, naming the file `what` in errors. The whole fixed-size chunks of
    /// the range are read by the chunk workers, each into a buffer of its own that it
    /// hashes and stores at once; other bytes are read here. Returns how many bytes were
    /// appended: fewer than `len` only when the file ends first. A file that shrinks
    /// while the workers read it fails the stream with [`Error::SourceEnded`], naming
    /// where it ended first.
    pub fn write_file_at(
        &mut self,
        file: &Arc<File>,
        offset: u64,
        len: u64,
        what: &str,
    ) -> Result<u64> {
        let Cutter::Fixed(size) = self.cutter else {
            return self.read_here(file, offset, len, what);
        };
        let mut done = 0;
        if !self.cur.is_empty() {
            let want = ((size - self.cur.len()) as u64).min(len);
            done = self.read_here(file, offset, want, what)?;
            if done < want {
                return Ok(done);
            }
        }
        // Only bytes before the file's end as it is now go to the workers, so that a range
        // past the end comes back short, as from `write_from`; a file that shrinks from
        // here on fails the stream instead.
        let file_len = (&**file)
            .seek(SeekFrom::End(0))
            .map_err(|source| Error::Source {
                what: what.to_string(),
                source,
            })?;
        let in_file = file_len.saturating_sub(offset).min(len);
        let what: Arc<str> = Arc::from(what);
        while in_file.saturating_sub(done) >= size as u64 {
            let from = ReadFrom::File {
                file: Arc::clone(file),
                offset: offset + done,
                what: Arc::clone(&what),
            };
            self.queue_read(from, size)?;
            done += size as u64;
        }
        if done < len {
            done += self.read_here(file, offset + done, len - done, &what)?;
        }
        self.collect_ready(false)?;
        Ok(done)
    }

    /// Appends `data`, like [`StreamWriter::write`] but without copying it here: the whole
    /// chunks of a fixed-size stream in it go to the workers as they are, and each is
    /// copied once, by the worker that hashes and encrypts it, into its pack's write stage
    /// (as [`StreamWriter::write_file_at`] has them read there). Other bytes, and every
    /// byte of a content-defined stream, are copied here. For a caller whose bytes are
    /// already in memory of their own (a live disk's blocks received from the network),
    /// the copy into chunk buffers on its thread was its largest cost: the bytes had left
    /// the cache by the time it ran.
    pub fn write_shared(&mut self, data: Bytes) -> Result<()> {
        let Cutter::Fixed(size) = self.cutter else {
            return self.write(&data);
        };
        let mut done = 0;
        if !self.cur.is_empty() {
            done = (size - self.cur.len()).min(data.len());
            self.write(&data[..done])?;
        }
        while data.len() - done >= size {
            self.queue_read(ReadFrom::Memory(data.slice(done..done + size)), size)?;
            done += size;
        }
        if done < data.len() {
            self.write(&data[done..])?;
        }
        self.collect_ready(false)
    }

    /// [`StreamWriter::write_from`] of `file` from byte `offset` on; a failed read names
    /// the byte of the file it failed at.
    fn read_here(&mut self, file: &File, offset: u64, len: u64, what: &str) -> Result<u64> {
        let mut source = FileAt::new(file, offset);
        self.write_from(&mut source, len, what)
            .map_err(|e| match e {
                Error::Source { source: err, .. } => Error::Source {
                    what: format!("{what} at byte {}", source.offset),
                    source: err,
                },
                other => other,
            })
    }

    /// Cuts the chunk being filled where a boundary falls in its bytes from `from` on,
    /// which have not been scanned yet; bytes after a boundary start the next chunk.
    fn cut_in_place(&mut self, mut from: usize, capacity: usize) -> Result<()> {
        loop {
            let end = match &self.cutter {
                Cutter::Fixed(size) => (self.cur.len() == *size).then_some(*size),
                Cutter::Cdc(chunker) => chunker
                    .feed(&mut self.scan, &self.cur[from..])
                    .map(|len| from + len),
            };
            let Some(end) = end else {
                return Ok(());
            };
            let mut next = ChunkBuf::pooled(&self.shared.buffers);
            if end < self.cur.len() {
                next.extend(&self.cur[end..], capacity);
                self.cur.truncate(end);
            }
            self.cut(false)?;
            self.cur = next;
            from = 0;
            if self.cur.is_empty() {
                return Ok(());
            }
        }
    }

    /// Ends the chunk being filled where the stream is now. A content-defined stream may
    /// end a chunk anywhere; a fixed-size stream only at a multiple of its chunk size,
    /// because its chunks must stay aligned to the stream offset.
    fn end_chunk(&mut self, what: &str) -> Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        if let Cutter::Fixed(size) = self.cutter {
            return Err(Error::Invalid(format!(
                "{what} must start at a multiple of the {size}-byte chunk size"
            )));
        }
        self.cut(true)
    }

    /// Appends extents of an earlier point without reading them (unchanged regions of a
    /// disk).
    ///
    /// Fails with [`Error::Invalid`] if a chunk of them is missing from the index or was
    /// found bad: the caller then reads the region instead.
    pub fn push_extents(&mut self, extents: &[Extent]) -> Result<()> {
        if let Some(id) = self.shared.first_unusable(extents) {
            return Err(Error::Invalid(format!(
                "chunk {} of the earlier point is missing or damaged",
                id.short()
            )));
        }
        self.end_chunk("carried extents")?;
        for e in extents {
            self.stats.bytes_carried += e.len;
            self.slots.push(Some(*e));
        }
        Ok(())
    }

    /// Appends a hole of `len` zero bytes that is never stored.
    pub fn push_hole(&mut self, len: u64) -> Result<()> {
        self.end_chunk("a hole")?;
        self.stats.bytes_holes += len;
        self.slots.push(Some(Extent::hole(len)));
        Ok(())
    }

    /// Ends the chunk being filled and hands it on; `at_end` when the stream ends.
    fn cut(&mut self, at_end: bool) -> Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        self.scan = CdcScan::default();
        let chunk = if at_end && self.cur.len() < SMALL_CHUNK {
            // The tail of a file: copied out, so the stream's buffer serves the next one
            // instead of a batch of small chunks holding large buffers.
            let chunk = ChunkBuf::copy_of(&self.cur);
            self.cur.clear();
            chunk
        } else {
            std::mem::replace(&mut self.cur, ChunkBuf::pooled(&self.shared.buffers))
        };
        self.emit(chunk, at_end)
    }

    /// Hands a chunk to the workers. The chunks cut when a stream ends are hashed here,
    /// so that `finish` returns without waiting for them and the caller (a plugin going
    /// through many small files) overlaps its next file with their compression and
    /// encryption.
    fn emit(&mut self, chunk: ChunkBuf, at_end: bool) -> Result<()> {
        if matches!(self.cutter, Cutter::Fixed(_)) && is_zero(&chunk) {
            self.stats.bytes_holes += chunk.len() as u64;
            self.slots.push(Some(Extent::hole(chunk.len() as u64)));
            return Ok(());
        }
        let len = chunk.len() as u64;
        if at_end {
            let id = self.shared.vault.crypto().chunk_id(&chunk);
            self.slots.push(Some(Extent::chunk(id, len)));
            if !self.shared.claim(&id) {
                self.stats.bytes_reused += len;
                self.stats.chunks_reused += 1;
                return Ok(());
            }
            self.stats.bytes_new += len;
            self.stats.chunks_new += 1;
            let full = {
                let mut batch = self.shared.batch.lock().expect("lock");
                batch.bytes += chunk.len();
                batch.jobs.push(Job {
                    seq: 0,
                    data: chunk,
                    read: None,
                    claimed: Some(id),
                    hashed: None,
                    reply: None,
                });
                batch.is_full().then(|| std::mem::take(&mut *batch))
            };
            return match full {
                Some(batch) => self
                    .job_tx
                    .send(batch.jobs)
                    .map_err(|_| Error::Aborted("the chunk workers have stopped".into())),
                None => Ok(()),
            };
        }
        let bytes = chunk.len();
        self.queue(chunk, None, bytes)
    }

    /// Has the workers read a whole chunk of `len` bytes from `from` themselves, and counts
    /// it as read.
    fn queue_read(&mut self, from: ReadFrom, len: usize) -> Result<()> {
        self.shared.check()?;
        self.stats.bytes_read += len as u64;
        let read = ChunkRead {
            from,
            len,
            hashed: None,
        };
        self.queue(ChunkBuf::detached(), Some(read), len)
    }

    /// Batches a chunk of `bytes` bytes for the workers, held in `data` or to be read as
    /// `read` says, and takes its place in the stream.
    fn queue(&mut self, data: ChunkBuf, read: Option<ChunkRead>, bytes: usize) -> Result<()> {
        let seq = self.slots.len();
        self.slots.push(None);
        self.pending += 1;
        self.batch.bytes += bytes;
        self.batch.jobs.push(Job {
            seq,
            data,
            read,
            claimed: None,
            hashed: None,
            reply: Some(self.reply_tx.clone()),
        });
        if self.batch.is_full() {
            self.send_batch()?;
        }
        Ok(())
    }

    /// Hands the chunks batched so far to the workers.
    fn send_batch(&mut self) -> Result<()> {
        if self.batch.jobs.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.job_tx
            .send(batch.jobs)
            .map_err(|_| Error::Aborted("the chunk workers have stopped".into()))
    }

    fn record(&mut self, seq: usize, result: Result<Outcome, String>) -> Result<()> {
        self.pending -= 1;
        // A chunk that failed because an earlier one did reports that one's cause.
        let outcome = result.map_err(|message| self.shared.failure(message))?;
        if let Some((at, what)) = outcome.ended {
            // The first such chunk in the stream's order is the one reported.
            if self.ended.as_ref().is_none_or(|(first, ..)| seq < *first) {
                self.ended = Some((seq, at, what));
            }
            return Ok(());
        }
        match outcome.stored {
            _ if outcome.id.is_none() => self.stats.bytes_holes += outcome.len,
            Some(stored) => {
                self.stats.bytes_new += outcome.len;
                self.stats.bytes_stored += stored;
                self.stats.chunks_new += 1;
            }
            None => {
                self.stats.bytes_reused += outcome.len;
                self.stats.chunks_reused += 1;
            }
        }
        self.slots[seq] = Some(match outcome.id {
            Some(id) => Extent::chunk(id, outcome.len),
            None => Extent::hole(outcome.len),
        });
        Ok(())
    }

    /// Records the workers' replies that have arrived, or with `wait` all of them. A
    /// source file found to have ended is an error once every chunk before it is in, so
    /// the error names where the file ended first.
    fn collect_ready(&mut self, wait: bool) -> Result<()> {
        while self.pending > 0 {
            let message = if wait || self.ended.is_some() {
                // Chunks still batched here would never come back.
                self.send_batch()?;
                self.reply_rx
                    .recv()
                    .map_err(|_| Error::Aborted("chunk workers stopped".into()))?
            } else {
                match self.reply_rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => return Ok(()),
                }
            };
            self.record(message.0, message.1)?;
        }
        match &self.ended {
            Some((_, at, what)) => Err(Error::SourceEnded {
                what: what.to_string(),
                at: *at,
            }),
            None => Ok(()),
        }
    }

    /// Ends the stream: cuts the last chunk, waits for every chunk to be stored, and
    /// returns the content.
    pub fn finish(mut self) -> Result<StreamResult> {
        self.cut(true)?;
        self.send_batch()?;
        self.collect_ready(true)?;
        let mut extents: Vec<Extent> = Vec::with_capacity(self.slots.len());
        for extent in self.slots.drain(..) {
            let extent = extent.expect("every chunk was collected");
            match (extents.last_mut(), extent.id) {
                (Some(last), None) if last.id.is_none() => last.len += extent.len,
                _ => extents.push(extent),
            }
        }
        let content = match split_extents(&extents) {
            None => Content::Extents(extents),
            Some(lists) => {
                let mut refs = Vec::with_capacity(lists.len());
                for (doc, len, count) in lists {
                    refs.push(ListRef {
                        id: self.shared.store_list(doc)?,
                        len,
                        count,
                    });
                }
                Content::Lists(refs)
            }
        };
        self.shared.stats.lock().expect("lock").add(&self.stats);
        Ok(StreamResult {
            content,
            stats: self.stats,
        })
    }
}

/// Lazily loaded trees of the parent point, for carrying entries forward.
struct ParentView {
    vault: Vault,
    point: Point,
    trees: HashMap<String, Arc<Tree>>,
    /// Whether an unreadable tree was reported already.
    warned: bool,
}

/// Directories of the parent kept in memory at once; depth-first capture needs only
/// the current path's ancestors.
const PARENT_TREE_CACHE: usize = 256;

impl ParentView {
    fn new(vault: Vault, point: Point) -> Self {
        ParentView {
            vault,
            point,
            trees: HashMap::new(),
            warned: false,
        }
    }

    fn tree(&mut self, dir: &str, id: ChunkId) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.get(dir) {
            return Ok(t.clone());
        }
        if self.trees.len() >= PARENT_TREE_CACHE {
            self.trees.clear();
        }
        let tree = self.vault.cached_tree(&id)?;
        self.trees.insert(dir.to_string(), tree.clone());
        Ok(tree)
    }

    fn entry(&mut self, path: &str) -> Result<Option<Entry>> {
        // A capture asks for the entries of one directory after another: its tree is
        // usually at hand already, under the directory's path.
        if let Some((dir, name)) = path.rsplit_once('/')
            && !matches!(name, "" | "." | "..")
            && let Some(tree) = self.trees.get(dir)
        {
            return Ok(tree.get(name).cloned());
        }
        let parts = crate::tree::split_path(path)?;
        let mut tree = self.tree("", self.point.root)?;
        let mut dir = String::new();
        for (i, part) in parts.iter().enumerate() {
            let Some(entry) = tree.get(part) else {
                return Ok(None);
            };
            if i + 1 == parts.len() {
                return Ok(Some(entry.clone()));
            }
            let Some(sub) = entry.subtree else {
                return Ok(None);
            };
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(part);
            tree = self.tree(&dir, sub)?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::is_zero;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 10_000]));
        let mut data = vec![0u8; 10_000];
        data[9_999] = 1;
        assert!(!is_zero(&data));
    }
}
