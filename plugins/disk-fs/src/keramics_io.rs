//! The bridge to the `keramics-formats` readers (NTFS): a data stream over this
//! crate's readers, files read through the streams those readers give, and their errors.
//!
//! That crate reads from a `DataStream`, which must be `Send + Sync`. The readers here
//! are not (a disk read back from the vault is shared through `Rc`), so the stream given
//! to the crate holds only a slot number in a table of readers kept per thread; the
//! volumes built on it, like every [`Volume`](crate::Volume), stay on the thread that
//! opened them.

use std::cell::RefCell;
use std::io::SeekFrom;
use std::sync::{Arc, RwLock};

use keramics_core::{DataStream, DataStreamReference, ErrorTrace};
use tessera_disk_image::ReadAt;

use crate::FsError;

/// A data stream for `keramics-formats` over `reader`.
pub(crate) fn stream(reader: Box<dyn ReadAt>) -> DataStreamReference {
    Arc::new(RwLock::new(SlotStream::new(reader)))
}

thread_local! {
    /// The readers behind the streams given to `keramics-formats`, by slot.
    static READERS: RefCell<Vec<Option<Box<dyn ReadAt>>>> = const { RefCell::new(Vec::new()) };
}

/// A reader put in [`READERS`] for as long as the stream that names its slot lives.
struct SlotStream {
    slot: usize,
    len: u64,
    offset: u64,
}

impl SlotStream {
    fn new(reader: Box<dyn ReadAt>) -> SlotStream {
        let len = reader.len();
        let slot = READERS.with(|readers| {
            let mut readers = readers.borrow_mut();
            match readers.iter().position(Option::is_none) {
                Some(free) => {
                    readers[free] = Some(reader);
                    free
                }
                None => {
                    readers.push(Some(reader));
                    readers.len() - 1
                }
            }
        });
        SlotStream {
            slot,
            len,
            offset: 0,
        }
    }
}

impl Drop for SlotStream {
    fn drop(&mut self) {
        // Nothing to free when the thread is already gone.
        let _ = READERS.try_with(|readers| readers.borrow_mut()[self.slot] = None);
    }
}

impl DataStream for SlotStream {
    fn get_offset(&mut self) -> Result<u64, ErrorTrace> {
        Ok(self.offset)
    }

    fn get_size(&mut self) -> Result<u64, ErrorTrace> {
        Ok(self.len)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorTrace> {
        let n = (<[u8]>::len(buf) as u64).min(self.len.saturating_sub(self.offset)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let offset = self.offset;
        READERS
            .with(|readers| match readers.borrow_mut().get_mut(self.slot) {
                Some(Some(reader)) => reader
                    .read_exact_at(offset, &mut buf[..n])
                    .map_err(|e| format!("read of {n} bytes at byte {offset} failed: {e}")),
                _ => Err("the volume's reader belongs to another thread".to_owned()),
            })
            .map_err(ErrorTrace::new)?;
        self.offset += n as u64;
        Ok(n)
    }

    fn seek(&mut self, pos: SeekFrom) -> Result<u64, ErrorTrace> {
        let to = match pos {
            SeekFrom::Start(to) => Some(to),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.offset.checked_add_signed(delta),
        };
        self.offset = to.ok_or_else(|| ErrorTrace::new(format!("seek to {pos:?} out of range")))?;
        Ok(self.offset)
    }
}

/// A file's data, read through the stream its volume's reader gives for it.
pub(crate) struct StreamFile {
    stream: Option<DataStreamReference>,
    what: String,
    path: String,
    size: u64,
    pos: u64,
    /// No read crosses a multiple of this (see [`StreamFile::in_pieces`]).
    piece: u64,
}

impl StreamFile {
    /// Reads `size` bytes of `stream` (`None` for a file without data) as the file `path`
    /// of the volume `what`.
    pub(crate) fn new(
        stream: Option<DataStreamReference>,
        what: &str,
        path: &str,
        size: u64,
    ) -> Self {
        StreamFile {
            stream,
            what: what.to_owned(),
            path: path.to_owned(),
            size,
            pos: 0,
            piece: u64::MAX,
        }
    }

    /// Keeps every read inside one aligned piece of `piece` bytes. `keramics-formats`
    /// 0.0.1 fails (by panicking) on a read of an NTFS-compressed stream that runs past the
    /// end of a compression unit; units are 8 to 64 KiB, all multiples of 4 KiB.
    pub(crate) fn in_pieces(mut self, piece: u64) -> Self {
        self.piece = piece.max(1);
        self
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, FsError> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let Some(stream) = &self.stream else {
            return Ok(0);
        };
        let want = (<[u8]>::len(buf) as u64).min(self.size - self.pos) as usize;
        let mut stream = stream.write().map_err(|_| {
            FsError::corrupt(
                &self.what,
                None,
                format!("{:?}: an earlier read failed", self.path),
            )
        })?;
        // The stream reads at most to the end of a run of clusters: read on to fill `buf`.
        let mut done = 0;
        while done < want {
            let to_piece_end = self.piece - self.pos % self.piece;
            let end =
                want.min(done.saturating_add(usize::try_from(to_piece_end).unwrap_or(usize::MAX)));
            let n = stream
                .read_at_position(&mut buf[done..end], SeekFrom::Start(self.pos))
                .map_err(|e| {
                    FsError::corrupt(
                        &self.what,
                        None,
                        format!("{:?} at byte {}: {}", self.path, self.pos, last_message(&e)),
                    )
                })?;
            if n == 0 {
                break;
            }
            self.pos += n as u64;
            done += n;
        }
        Ok(done)
    }
}

/// The innermost message of an error trace: what went wrong, without the frames above.
pub(crate) fn last_message(e: &ErrorTrace) -> String {
    let text = e.to_string();
    text.lines()
        .next()
        .map(|first| {
            first
                .trim_start_matches(|c: char| c == '#' || c.is_ascii_digit())
                .trim()
        })
        .unwrap_or("unreadable")
        .to_owned()
}
