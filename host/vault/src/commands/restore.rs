//! Reading content back: in order with parallel read-ahead, or at any byte offset.
//!
//! Long contents keep their extents in list blobs; the reader loads a list only when a
//! read reaches it, so opening a terabyte disk image costs one small tree, and a read in
//! the middle of it costs one list and one chunk.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::index::Index;
use crate::tree::{Content, Extent};
use crate::vault::Vault;

/// A run of content returned by [`ContentReader::next_piece`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Stored bytes.
    Data(Bytes),
    /// A hole of this many zero bytes.
    Hole(u64),
}

impl Piece {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Data(d) => d.len() as u64,
            Piece::Hole(n) => *n,
        }
    }

    /// Whether the piece is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A content's extents, with list blobs loaded on demand.
#[derive(Clone)]
struct ExtentMap {
    vault: Vault,
    segments: Vec<Segment>,
    /// Segments whose list blob is loaded, oldest first.
    loaded: VecDeque<usize>,
    len: u64,
}

/// A run of extents: inline in the entry, or one list blob.
#[derive(Clone)]
struct Segment {
    start: u64,
    list: Option<(crate::id::ChunkId, u32)>,
    extents: Option<Arc<LoadedExtents>>,
}

struct LoadedExtents {
    extents: Vec<Extent>,
    /// Start of each extent relative to the segment.
    starts: Vec<u64>,
}

impl LoadedExtents {
    fn new(extents: Vec<Extent>) -> Self {
        let mut starts = Vec::with_capacity(extents.len());
        let mut at = 0;
        for e in &extents {
            starts.push(at);
            at += e.len;
        }
        LoadedExtents { extents, starts }
    }
}

/// List blobs held in memory per reader: reads move forward, so a few suffice, and a
/// terabyte image's lists never all sit in memory at once.
const LOADED_LISTS: usize = 4;

impl ExtentMap {
    fn new(vault: &Vault, content: &Content) -> Self {
        let mut segments = Vec::new();
        let mut at = 0;
        match content {
            Content::Extents(extents) => {
                let loaded = LoadedExtents::new(extents.clone());
                segments.push(Segment {
                    start: 0,
                    list: None,
                    extents: Some(Arc::new(loaded)),
                });
                at = extents.iter().map(|e| e.len).sum();
            }
            Content::Lists(lists) => {
                for list in lists {
                    segments.push(Segment {
                        start: at,
                        list: Some((list.id, list.count)),
                        extents: None,
                    });
                    at += list.len;
                }
            }
        }
        ExtentMap {
            vault: vault.clone(),
            segments,
            loaded: VecDeque::new(),
            len: at,
        }
    }

    fn load(&mut self, segment: usize) -> Result<Arc<LoadedExtents>> {
        if let Some(extents) = &self.segments[segment].extents {
            return Ok(extents.clone());
        }
        let (id, count) = self.segments[segment]
            .list
            .expect("unloaded segments are lists");
        let list = self.vault.read_extent_list(&id)?;
        if list.extents.len() != count as usize {
            return Err(Error::BadTree {
                id: id.short(),
                detail: format!(
                    "list holds {} extents, expected {count}",
                    list.extents.len()
                ),
            });
        }
        let loaded = Arc::new(LoadedExtents::new(list.extents));
        if self.loaded.len() >= LOADED_LISTS
            && let Some(old) = self.loaded.pop_front()
        {
            self.segments[old].extents = None;
        }
        self.loaded.push_back(segment);
        self.segments[segment].extents = Some(loaded.clone());
        Ok(loaded)
    }

    /// The extent containing `offset`: `(position, extent start, extent)`.
    fn find(&mut self, offset: u64) -> Result<Option<(Position, u64, Extent)>> {
        if offset >= self.len {
            return Ok(None);
        }
        let segment = self.segments.partition_point(|s| s.start <= offset) - 1;
        let loaded = self.load(segment)?;
        let rel = offset - self.segments[segment].start;
        let i = loaded.starts.partition_point(|&s| s <= rel) - 1;
        let start = self.segments[segment].start + loaded.starts[i];
        Ok(Some((
            Position { segment, extent: i },
            start,
            loaded.extents[i],
        )))
    }

    /// The extent after `pos`.
    fn next(&mut self, pos: Position) -> Result<Option<(Position, Extent)>> {
        let mut pos = Position {
            segment: pos.segment,
            extent: pos.extent + 1,
        };
        loop {
            if pos.segment >= self.segments.len() {
                return Ok(None);
            }
            let loaded = self.load(pos.segment)?;
            if let Some(e) = loaded.extents.get(pos.extent) {
                return Ok(Some((pos, *e)));
            }
            pos = Position {
                segment: pos.segment + 1,
                extent: 0,
            };
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    segment: usize,
    extent: usize,
}

/// Decoded chunks kept for random access; file systems inside disk images read many
/// small blocks from the same chunk.
const RANDOM_CACHE_CHUNKS: usize = 16;

/// Reads an entry's content.
pub struct ContentReader {
    map: ExtentMap,
    pos: u64,
    /// The piece covering `pos` during sequential reads, with its start.
    current: Option<(u64, Piece)>,
    prefetch: Option<Prefetcher>,
    cache: VecDeque<(u64, Bytes)>,
    workers: usize,
}

impl std::fmt::Debug for ContentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentReader")
            .field("len", &self.map.len)
            .field("pos", &self.pos)
            .finish()
    }
}

impl Vault {
    /// A reader of `content`.
    pub fn content_reader(&self, content: &Content) -> ContentReader {
        ContentReader {
            map: ExtentMap::new(self, content),
            pos: 0,
            current: None,
            prefetch: None,
            cache: VecDeque::new(),
            workers: crate::vault::worker_threads(0),
        }
    }
}

fn decode_extent(vault: &Vault, index: &Index, extent: &Extent) -> Result<Piece> {
    match extent.id {
        None => Ok(Piece::Hole(extent.len)),
        Some(id) => {
            let data = vault.read_chunk_from(index, &id)?;
            if data.len() as u64 != extent.len {
                return Err(Error::BadTree {
                    id: id.short(),
                    detail: format!(
                        "extent says {} bytes, chunk holds {}",
                        extent.len,
                        data.len()
                    ),
                });
            }
            Ok(Piece::Data(data))
        }
    }
}

impl ContentReader {
    /// Total length.
    pub fn len(&self) -> u64 {
        self.map.len
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }

    /// Current position of sequential reads.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Moves sequential reads to `offset`.
    pub fn seek_to(&mut self, offset: u64) {
        if offset != self.pos {
            self.pos = offset;
            self.current = None;
            self.prefetch = None;
        }
    }

    /// The next piece from the current position (a whole chunk or hole, or the rest of
    /// one after a seek), with read-ahead on all cores.
    pub fn next_piece(&mut self) -> Result<Option<Piece>> {
        if let Some((start, piece)) = self.current.take() {
            let end = start + piece.len();
            if self.pos >= start && self.pos < end {
                let skip = self.pos - start;
                let rest = match piece {
                    Piece::Hole(n) => Piece::Hole(n - skip),
                    Piece::Data(d) if skip == 0 => Piece::Data(d),
                    Piece::Data(d) => Piece::Data(d.slice(skip as usize..)),
                };
                self.pos = end;
                return Ok(Some(rest));
            }
        }
        if self.pos >= self.map.len {
            return Ok(None);
        }
        if self.prefetch.is_none() {
            let Some((position, start, extent)) = self.map.find(self.pos)? else {
                return Ok(None);
            };
            // A content of one extent (most files) is decoded here: starting read-ahead
            // threads would cost more than the read.
            if start + extent.len >= self.map.len {
                let index = self.map.vault.index();
                let piece = decode_extent(&self.map.vault, &index, &extent)?;
                self.current = Some((start, piece));
                return self.next_piece();
            }
            self.prefetch = Some(Prefetcher::start(
                self.map.clone(),
                position,
                start,
                extent,
                self.workers,
            ));
        }
        let prefetch = self.prefetch.as_mut().expect("just set");
        match prefetch.next()? {
            None => Ok(None),
            Some((start, piece)) => {
                self.current = Some((start, piece));
                self.next_piece()
            }
        }
    }

    /// Reads at `offset` into `buf`, without disturbing sequential reads; returns the
    /// bytes read (0 at the end).
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let Some((_, start, extent)) = self.map.find(at)? else {
                break;
            };
            let skip = (at - start) as usize;
            let n = ((extent.len as usize) - skip).min(buf.len() - done);
            match extent.id {
                None => buf[done..done + n].fill(0),
                Some(id) => {
                    let data = match self.cache.iter().find(|(s, _)| *s == start) {
                        Some((_, d)) => d.clone(),
                        None => {
                            let index = self.map.vault.index();
                            let Piece::Data(d) = decode_extent(
                                &self.map.vault,
                                &index,
                                &Extent::chunk(id, extent.len),
                            )?
                            else {
                                unreachable!("a chunk extent decodes to data")
                            };
                            if self.cache.len() >= RANDOM_CACHE_CHUNKS {
                                self.cache.pop_front();
                            }
                            self.cache.push_back((start, d.clone()));
                            d
                        }
                    };
                    buf[done..done + n].copy_from_slice(&data[skip..skip + n]);
                }
            }
            done += n;
        }
        Ok(done)
    }

    /// The extents covering `offset..offset + len`, which must start and end on extent
    /// boundaries (how a disk's unchanged regions are carried into a new point).
    pub fn extents_in(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.map.len)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "range {offset}+{len} lies outside the {}-byte content",
                    self.map.len
                ))
            })?;
        let mut out = Vec::new();
        if len == 0 {
            return Ok(out);
        }
        let Some((mut pos, start, first)) = self.map.find(offset)? else {
            return Ok(out);
        };
        if start != offset {
            return Err(Error::Invalid(format!(
                "offset {offset} is not at a chunk boundary"
            )));
        }
        let mut at = start + first.len;
        out.push(first);
        while at < end {
            let Some((next_pos, extent)) = self.map.next(pos)? else {
                break;
            };
            pos = next_pos;
            at += extent.len;
            out.push(extent);
        }
        if at != end {
            return Err(Error::Invalid(format!(
                "offset {end} is not at a chunk boundary"
            )));
        }
        Ok(out)
    }

    /// The holes overlapping `offset..offset + len`, as `(offset, length)` clipped to the
    /// range.
    pub fn holes(&mut self, offset: u64, len: u64) -> Result<Vec<(u64, u64)>> {
        let end = offset.saturating_add(len).min(self.map.len);
        let mut out: Vec<(u64, u64)> = Vec::new();
        let Some((mut pos, mut start, mut extent)) = self.map.find(offset)? else {
            return Ok(out);
        };
        while start < end {
            if extent.id.is_none() {
                let from = start.max(offset);
                let to = (start + extent.len).min(end);
                match out.last_mut() {
                    Some(last) if last.0 + last.1 == from => last.1 += to - from,
                    _ => out.push((from, to - from)),
                }
            }
            start += extent.len;
            match self.map.next(pos)? {
                Some((p, e)) => {
                    pos = p;
                    extent = e;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Writes the whole content to `out` from the current position.
    pub fn copy_to(&mut self, out: &mut dyn io::Write) -> Result<u64> {
        let mut total = 0;
        let zeros = vec![0u8; 1 << 20];
        while let Some(piece) = self.next_piece()? {
            let io_err = |source| Error::Source {
                what: "restore output".into(),
                source,
            };
            match &piece {
                Piece::Data(d) => out.write_all(d).map_err(io_err)?,
                Piece::Hole(n) => {
                    let mut left = *n;
                    while left > 0 {
                        let k = left.min(zeros.len() as u64) as usize;
                        out.write_all(&zeros[..k]).map_err(io_err)?;
                        left -= k as u64;
                    }
                }
            }
            total += piece.len();
        }
        Ok(total)
    }
}

impl io::Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let start = self.pos;
        let piece = self.next_piece().map_err(io::Error::other)?;
        let Some(piece) = piece else { return Ok(0) };
        let n = (piece.len().min(buf.len() as u64)) as usize;
        match &piece {
            Piece::Data(d) => buf[..n].copy_from_slice(&d[..n]),
            Piece::Hole(_) => buf[..n].fill(0),
        }
        // Give back what did not fit.
        self.pos = start + n as u64;
        self.current = Some((start, piece));
        Ok(n)
    }
}

type Decoded = (usize, u64, Result<Piece>);

/// Decodes the extents after a position on worker threads, handing them out in order.
struct Prefetcher {
    results: Receiver<Decoded>,
    tokens: Sender<()>,
    waiting: BTreeMap<usize, (u64, Result<Piece>)>,
    next_seq: usize,
}

impl Prefetcher {
    fn start(
        mut map: ExtentMap,
        position: Position,
        start: u64,
        first: Extent,
        workers: usize,
    ) -> Self {
        let window = workers * 2 + 2;
        let (token_tx, token_rx) = crossbeam_channel::unbounded::<()>();
        for _ in 0..window {
            token_tx.send(()).expect("receiver alive");
        }
        let (job_tx, job_rx) = crossbeam_channel::bounded::<(usize, u64, Extent)>(window);
        let (result_tx, result_rx) = crossbeam_channel::unbounded::<Decoded>();
        let vault = map.vault.clone();
        let feeder_results = result_tx.clone();
        std::thread::spawn(move || {
            let mut item = Some((position, first));
            let mut at = start;
            let mut seq = 0;
            while let Some((pos, extent)) = item {
                if token_rx.recv().is_err() {
                    return;
                }
                if job_tx.send((seq, at, extent)).is_err() {
                    return;
                }
                seq += 1;
                at += extent.len;
                item = match map.next(pos) {
                    Ok(next) => next,
                    Err(e) => {
                        let _ = feeder_results.send((seq, at, Err(e)));
                        return;
                    }
                };
            }
        });
        for _ in 0..workers {
            let jobs = job_rx.clone();
            let results = result_tx.clone();
            let vault = vault.clone();
            std::thread::spawn(move || {
                let index = vault.index();
                for (seq, at, extent) in jobs {
                    let piece = decode_extent(&vault, &index, &extent);
                    if results.send((seq, at, piece)).is_err() {
                        return;
                    }
                }
            });
        }
        Prefetcher {
            results: result_rx,
            tokens: token_tx,
            waiting: BTreeMap::new(),
            next_seq: 0,
        }
    }

    fn next(&mut self) -> Result<Option<(u64, Piece)>> {
        loop {
            if let Some((at, piece)) = self.waiting.remove(&self.next_seq) {
                self.next_seq += 1;
                let _ = self.tokens.send(());
                return piece.map(|p| Some((at, p)));
            }
            match self.results.recv() {
                Ok((seq, at, piece)) => {
                    self.waiting.insert(seq, (at, piece));
                }
                // Every sender is gone: the feeder reached the end.
                Err(_) => return Ok(None),
            }
        }
    }
}
