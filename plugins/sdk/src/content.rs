//! Moving content across the contract: [`Writer`] streams bytes (from a
//! [`std::io::Read`] or in memory) into a `sink::content-writer` in pieces of
//! [`PIECE`](crate::PIECE), and [`read_into`] / [`write_sparse`] read a
//! `point::content-reader` back out. Both sides keep holes as holes, so sparse files and
//! disk images stay sparse through a capture and a restore.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::PIECE;
use crate::error::host_error_text;
use crate::net::Buffer;
use crate::point::ContentReader;
use crate::sink::{self, ContentWriter};
use crate::types::{ByteRange, Chunking, HostError};

/// One stretch of a content stream: data to move, or a hole of zeros to skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Where the stretch starts.
    pub offset: u64,
    /// How long it is (never zero).
    pub length: u64,
    /// Whether it is a hole.
    pub hole: bool,
}

/// Splits `0..length` into alternating data and hole segments, given holes as a host
/// reports them: possibly unsorted, overlapping, touching or reaching past the end.
pub fn segments(length: u64, holes: &[ByteRange]) -> Vec<Segment> {
    let mut holes: Vec<(u64, u64)> = holes
        .iter()
        .filter_map(|hole| {
            let start = hole.offset.min(length);
            let end = hole.offset.saturating_add(hole.length).min(length);
            (start < end).then_some((start, end))
        })
        .collect();
    holes.sort_unstable();
    let mut out = Vec::with_capacity(holes.len() * 2 + 1);
    let mut position = 0;
    for (start, end) in holes {
        let start = start.max(position);
        if start >= end {
            continue;
        }
        if start > position {
            out.push(Segment {
                offset: position,
                length: start - position,
                hole: false,
            });
        }
        // Touching or overlapping holes merge into one.
        match out.last_mut() {
            Some(last) if last.hole && last.offset + last.length == start => {
                last.length += end - start
            }
            _ => out.push(Segment {
                offset: start,
                length: end - start,
                hole: true,
            }),
        }
        position = end;
    }
    if position < length {
        out.push(Segment {
            offset: position,
            length: length - position,
            hole: false,
        });
    }
    out
}

/// Why copying from a reader into a content stream stopped.
#[derive(Debug)]
pub enum CopyError {
    /// The source could not be read; the stream is incomplete.
    Read(io::Error),
    /// The host refused a piece.
    Host(HostError),
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(err) => write!(f, "reading the source failed: {err}"),
            Self::Host(err) => write!(f, "the host refused content: {}", host_error_text(err)),
        }
    }
}

impl std::error::Error for CopyError {}

/// Writes of at least this many bytes onto an empty buffer go to the host as they are:
/// copying them into the buffer would cost more than the host call it saves.
const DIRECT_WRITE: usize = 64 << 10;

/// Most bytes one `content-writer.write-buffer` call moves: the host's limit on a call.
const MAX_WRITE_BUFFER: u64 = 16 << 20;

/// A content stream being written, buffering bytes into pieces of [`PIECE`] so that
/// small writes do not each cost a host call.
pub struct Writer {
    /// Taken out by [`Writer::finish`].
    inner: Option<ContentWriter>,
    /// Allocated on the first buffered write, so a stream of only holes or of whole
    /// pieces never allocates.
    buffer: Vec<u8>,
    filled: usize,
    offset: u64,
}

impl Writer {
    /// Starts a content stream with the given chunking.
    pub fn begin(chunking: Chunking) -> Result<Self, HostError> {
        sink::begin_content(chunking).map(Self::new)
    }

    /// Wraps a stream started with `sink::begin-content`.
    pub fn new(inner: ContentWriter) -> Self {
        Self {
            inner: Some(inner),
            buffer: Vec::new(),
            filled: 0,
            offset: 0,
        }
    }

    /// The length of the stream so far, holes included.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends bytes.
    pub fn write_bytes(&mut self, mut data: &[u8]) -> Result<(), HostError> {
        while !data.is_empty() {
            if self.filled == 0 && data.len() >= DIRECT_WRITE {
                // Enough bytes to be worth a host call of their own go out without being
                // copied into the buffer, a piece at most.
                let (piece, rest) = data.split_at(data.len().min(PIECE));
                self.stream().write(piece)?;
                self.offset += piece.len() as u64;
                data = rest;
                continue;
            }
            let space = self.space();
            let take = space.len().min(data.len());
            space[..take].copy_from_slice(&data[..take]);
            self.filled += take;
            self.offset += take as u64;
            data = &data[take..];
            if self.filled == PIECE {
                self.flush_buffer()?;
            }
        }
        Ok(())
    }

    /// Copies at most `limit` bytes from `reader`, fewer if it ends first; returns how
    /// many were copied.
    pub fn copy_from(&mut self, reader: &mut impl Read, limit: u64) -> Result<u64, CopyError> {
        let mut copied = 0;
        while copied < limit {
            let want = usize::try_from(limit - copied).unwrap_or(usize::MAX);
            let space = self.space();
            let take = space.len().min(want);
            let read = match reader.read(&mut space[..take]) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(CopyError::Read(err)),
            };
            self.filled += read;
            self.offset += read as u64;
            copied += read as u64;
            if self.filled == PIECE {
                self.flush_buffer().map_err(CopyError::Host)?;
            }
        }
        Ok(copied)
    }

    /// Appends bytes `offset..offset + length` of the regular file at `host_path` (a
    /// path in the grant, see [`Mount::host`](crate::path::Mount::host)), which the host
    /// reads itself: the fastest way to capture a file. Returns the bytes appended, fewer
    /// than `length` only when the file ends first.
    pub fn write_file(
        &mut self,
        host_path: &str,
        offset: u64,
        length: u64,
    ) -> Result<u64, HostError> {
        self.flush_buffer()?;
        let appended = self.stream().write_file(host_path, offset, length)?;
        self.offset += appended;
        Ok(appended)
    }

    /// Appends `length` bytes of a host buffer from `at` on, copied within the host: bytes
    /// received into it from a connection (`net::connection::receive-into`) never pass
    /// through the plugin's memory.
    pub fn write_buffer(&mut self, buffer: &Buffer, at: u64, length: u64) -> Result<(), HostError> {
        if length == 0 {
            return Ok(());
        }
        self.flush_buffer()?;
        let mut done = 0;
        while done < length {
            // A call moves at most `MAX_WRITE_BUFFER`, the host's limit.
            let piece = (length - done).min(MAX_WRITE_BUFFER);
            self.stream().write_buffer(buffer, at + done, piece)?;
            done += piece;
        }
        self.offset += length;
        Ok(())
    }

    /// Appends the parent point's content of the entry at `path`, bytes
    /// `offset..offset + length`, without reading it: how an incremental capture keeps the
    /// unchanged regions of a disk. The stream must use fixed chunking, and the stream's
    /// offset, `offset` and `length` must fall on its chunk boundaries (`length` may end
    /// at the end of the parent's content).
    pub fn carry(&mut self, path: &str, offset: u64, length: u64) -> Result<(), HostError> {
        if length == 0 {
            return Ok(());
        }
        self.flush_buffer()?;
        self.stream().carry(path, offset, length)?;
        self.offset += length;
        Ok(())
    }

    /// Appends a hole of `length` zero bytes that is not stored.
    pub fn hole(&mut self, length: u64) -> Result<(), HostError> {
        if length == 0 {
            return Ok(());
        }
        self.flush_buffer()?;
        self.stream().write_hole(length)?;
        self.offset += length;
        Ok(())
    }

    /// Sends what is buffered; returns the underlying stream for `sink::add-entry`.
    pub fn finish(mut self) -> Result<ContentWriter, HostError> {
        self.flush_buffer()?;
        Ok(self.inner.take().expect("present until finished"))
    }

    fn stream(&self) -> &ContentWriter {
        self.inner.as_ref().expect("present until finished")
    }

    /// The free part of the buffer (never empty: a full buffer is always flushed).
    fn space(&mut self) -> &mut [u8] {
        if self.buffer.is_empty() {
            self.buffer = SPARE.take();
            if self.buffer.len() != PIECE {
                self.buffer = vec![0; PIECE];
            }
        }
        &mut self.buffer[self.filled..]
    }

    fn flush_buffer(&mut self) -> Result<(), HostError> {
        if self.filled > 0 {
            self.stream().write(&self.buffer[..self.filled])?;
            self.filled = 0;
        }
        Ok(())
    }
}

thread_local! {
    /// The buffer of the last finished [`Writer`], reused by the next one: a tree of small
    /// files would otherwise allocate and clear a whole piece per file.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.buffer.len() == PIECE {
            SPARE.set(std::mem::take(&mut self.buffer));
        }
    }
}

impl Write for Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_bytes(data)
            .map_err(|err| io::Error::other(host_error_text(&err)))?;
        Ok(data.len())
    }

    /// Sends buffered bytes as a short piece; only needed before handing the stream on.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer()
            .map_err(|err| io::Error::other(host_error_text(&err)))
    }
}

/// Why reading a content stream out stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The host failed to deliver content.
    Host(HostError),
    /// Writing the content out failed.
    Write(io::Error),
    /// The content ended before its declared length.
    Short {
        /// Where it ended.
        offset: u64,
        /// The length it declared.
        length: u64,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(err) => write!(f, "reading stored content failed: {}", host_error_text(err)),
            Self::Write(err) => write!(f, "writing failed: {err}"),
            Self::Short { offset, length } => {
                write!(f, "stored content ended at byte {offset} of {length}")
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// Adds a file entry at `path` whose content is `data`, with `meta` (its size is set from
/// `data`): the whole sequence for documents a plugin has in memory.
pub fn add_file(
    path: &str,
    data: &[u8],
    mut meta: crate::types::Metadata,
) -> Result<(), HostError> {
    let mut writer = Writer::begin(Chunking::ContentDefined)?;
    writer.write_bytes(data)?;
    let content = writer.finish()?;
    meta.size = data.len() as u64;
    let entry = crate::types::EntryInfo {
        path: path.to_owned(),
        kind: crate::types::EntryKind::File,
        meta,
    };
    sink::add_entry(&entry, Some(content))
}

/// Copies a whole content stream, in order, into `out`; returns the bytes copied. Holes
/// arrive as zeros: use [`write_sparse`] to keep them.
pub fn read_into(reader: &ContentReader, out: &mut impl Write) -> Result<u64, ReadError> {
    let length = reader.length();
    let mut copied = 0;
    loop {
        let piece = reader.read(PIECE as u32).map_err(ReadError::Host)?;
        if piece.is_empty() {
            break;
        }
        out.write_all(&piece).map_err(ReadError::Write)?;
        copied += piece.len() as u64;
    }
    if copied < length {
        return Err(ReadError::Short {
            offset: copied,
            length,
        });
    }
    Ok(copied)
}

/// Has the host write a whole content stream into the regular file at `host_path` in the
/// target grant (see [`Mount::host`](crate::path::Mount::host)), created if missing,
/// keeping holes as holes: the fastest way to restore a file. The host may finish after
/// this returns (see `content-reader.write-to`). Returns the bytes of data written.
pub fn restore_file(reader: &ContentReader, host_path: &str) -> Result<u64, ReadError> {
    reader.write_to(host_path).map_err(ReadError::Host)
}

/// Writes a content stream into a new, empty file, seeking over its holes instead of
/// writing zeros and setting the final length, so the file is as sparse as the stored
/// content. Returns the bytes of data written.
pub fn write_sparse(reader: &ContentReader, file: &mut File) -> Result<u64, ReadError> {
    let length = reader.length();
    let holes = if length > 0 {
        reader.holes(0, length).map_err(ReadError::Host)?
    } else {
        Vec::new()
    };
    let mut written = 0;
    let mut position = 0;
    for segment in segments(length, &holes)
        .into_iter()
        .filter(|segment| !segment.hole)
    {
        let end = segment.offset + segment.length;
        let mut offset = segment.offset;
        while offset < end {
            let want = (end - offset).min(PIECE as u64) as u32;
            let data = reader.read_at(offset, want).map_err(ReadError::Host)?;
            if data.is_empty() {
                return Err(ReadError::Short { offset, length });
            }
            // A host handing back more than asked would shift everything after it.
            let data = &data[..data.len().min(want as usize)];
            if position != offset {
                file.seek(SeekFrom::Start(offset))
                    .map_err(ReadError::Write)?;
            }
            file.write_all(data).map_err(ReadError::Write)?;
            offset += data.len() as u64;
            position = offset;
            written += data.len() as u64;
        }
    }
    // Trailing holes are made by the length alone.
    file.set_len(length).map_err(ReadError::Write)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(offset: u64, length: u64) -> ByteRange {
        ByteRange { offset, length }
    }

    fn data(offset: u64, length: u64) -> Segment {
        Segment {
            offset,
            length,
            hole: false,
        }
    }

    fn hole(offset: u64, length: u64) -> Segment {
        Segment {
            offset,
            length,
            hole: true,
        }
    }

    #[test]
    fn dense_content_is_one_segment() {
        assert_eq!(segments(10, &[]), [data(0, 10)]);
        assert_eq!(segments(0, &[]), []);
        assert_eq!(segments(0, &[range(0, 5)]), []);
    }

    #[test]
    fn splits_around_holes() {
        assert_eq!(
            segments(10, &[range(2, 3)]),
            [data(0, 2), hole(2, 3), data(5, 5)]
        );
        assert_eq!(segments(10, &[range(0, 10)]), [hole(0, 10)]);
        assert_eq!(segments(10, &[range(6, 100)]), [data(0, 6), hole(6, 4)]);
    }

    #[test]
    fn tolerates_messy_hole_lists() {
        let holes = [
            range(8, 1),
            range(2, 3),
            range(4, 2),
            range(5, 0),
            range(20, 5),
            range(u64::MAX, 9),
        ];
        assert_eq!(
            segments(10, &holes),
            [data(0, 2), hole(2, 4), data(6, 2), hole(8, 1), data(9, 1)]
        );
        assert_eq!(
            segments(10, &[range(1, 2), range(3, 2)]),
            [data(0, 1), hole(1, 4), data(5, 5)]
        );
    }
}
