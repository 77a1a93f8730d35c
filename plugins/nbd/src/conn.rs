//! The byte stream under a session: buffered reads, batched writes and the errors that name
//! the export and the step that failed.
//!
//! Outgoing bytes collect in one buffer and leave in a single `write_all` just before the client
//! waits for an answer. A request header and its payload, or the client flags and the first
//! option, therefore never go out as two small writes, which on a TCP stream with Nagle's
//! algorithm on (WASI offers no way to turn it off) would stall for a delayed acknowledgement.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};

use crate::buffer::ReadBuffer;
use crate::error::{NbdError, NbdErrorKind};
use crate::wire::Command;

/// Capacity of the read buffer: a reply header and the first bytes after it cost one read
/// call. A larger buffer would take most of every read payload in with the header and then
/// copy it out again; with this one, all but the first bytes of a payload go from the stream
/// straight into the read's buffer ([`Conn::receive_into`]).
const READ_BUFFER: usize = 256;

/// Size of the scratch buffer used to skip payload the client does not need.
const DISCARD_BUFFER: usize = 8 * 1024;

/// A stream with the export's name, for errors.
pub(crate) struct Conn<S> {
    stream: BufReader<S>,
    out: Vec<u8>,
    export: String,
}

impl<S> Conn<S> {
    /// The export's name, for messages.
    pub(crate) fn export(&self) -> &str {
        &self.export
    }
}

impl<S: Read + Write> Conn<S> {
    pub(crate) fn new(stream: S, export: &str) -> Self {
        Conn {
            stream: BufReader::with_capacity(READ_BUFFER, stream),
            out: Vec::new(),
            export: export.to_owned(),
        }
    }

    pub(crate) fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// An error about this export.
    pub(crate) fn error(&self, kind: NbdErrorKind) -> NbdError {
        NbdError::new(&self.export, kind)
    }

    /// The server sent something the protocol forbids.
    pub(crate) fn protocol(
        &self,
        during: &dyn fmt::Display,
        detail: impl Into<String>,
    ) -> NbdError {
        self.error(NbdErrorKind::Protocol {
            during: during.to_string(),
            detail: detail.into(),
        })
    }

    fn io(&self, during: &dyn fmt::Display, source: io::Error) -> NbdError {
        let source = if source.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )
        } else {
            source
        };
        self.error(NbdErrorKind::Io {
            during: during.to_string(),
            source,
        })
    }

    /// Bytes to send with the next [`Conn::send`].
    pub(crate) fn queue(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Sends everything queued.
    pub(crate) fn send(&mut self, during: &dyn fmt::Display) -> Result<(), NbdError> {
        let stream = self.stream.get_mut();
        let result = stream.write_all(&self.out).and_then(|()| stream.flush());
        // The buffer keeps its capacity: it grows to the largest write request once
        // (at most [`crate::MAX_IO_REQUEST`] and a header) instead of on every request.
        self.out.clear();
        result.map_err(|e| self.io(during, e))
    }

    /// Fills `buf` from the stream.
    pub(crate) fn read_exact(
        &mut self,
        buf: &mut [u8],
        during: &dyn fmt::Display,
    ) -> Result<(), NbdError> {
        self.stream.read_exact(buf).map_err(|e| self.io(during, e))
    }

    /// Fills the `len` bytes at `at` of `buf` with payload from the stream: first the bytes
    /// the read buffer already took in, copied, then the rest straight from the stream through
    /// [`ReadBuffer::receive`], so that a buffer the stream fills itself gets all but those
    /// first bytes without the client reading them.
    pub(crate) fn receive_into<B: ReadBuffer<S>>(
        &mut self,
        buf: &mut B,
        at: usize,
        len: usize,
        during: &dyn fmt::Display,
    ) -> Result<(), NbdError> {
        let held = self.stream.buffer();
        let n = held.len().min(len);
        if n > 0 {
            if let Err(e) = buf.write_at(at, &held[..n]) {
                return Err(self.buffer_error(
                    &format_args!("storing the data of {during} in the read buffer"),
                    e,
                ));
            }
            self.stream.consume(n);
        }
        if n < len {
            // The read buffer is empty now: the stream's next byte is the payload's next one.
            buf.receive(self.stream.get_mut(), at + n, len - n)
                .map_err(|e| self.io(during, e))?;
        }
        Ok(())
    }

    /// The buffer of a read failed while the client was `doing` something with it. Reported
    /// as an I/O failure: in the middle of a reply it leaves the position in the byte stream
    /// unknown, as a stream failure does.
    pub(crate) fn buffer_error(&self, doing: &dyn fmt::Display, source: io::Error) -> NbdError {
        self.error(NbdErrorKind::Io {
            during: doing.to_string(),
            source,
        })
    }

    /// Reads a fixed number of bytes.
    pub(crate) fn read_array<const N: usize>(
        &mut self,
        during: &dyn fmt::Display,
    ) -> Result<[u8; N], NbdError> {
        let mut buf = [0u8; N];
        self.read_exact(&mut buf, during)?;
        Ok(buf)
    }

    /// Reads `len` bytes into a new vector. Callers bound `len` before calling: it comes from
    /// the server.
    pub(crate) fn read_vec(
        &mut self,
        len: usize,
        during: &dyn fmt::Display,
    ) -> Result<Vec<u8>, NbdError> {
        let mut buf = vec![0u8; len];
        self.read_exact(&mut buf, during)?;
        Ok(buf)
    }

    /// Reads and drops `len` bytes through a small scratch buffer.
    pub(crate) fn discard(&mut self, len: u64, during: &dyn fmt::Display) -> Result<(), NbdError> {
        let mut scratch = [0u8; DISCARD_BUFFER];
        let mut left = len;
        while left > 0 {
            let n = left.min(DISCARD_BUFFER as u64) as usize;
            self.read_exact(&mut scratch[..n], during)?;
            left -= n as u64;
        }
        Ok(())
    }
}

/// A request in flight, for matching replies and naming it in errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestInfo {
    pub(crate) command: Command,
    pub(crate) cookie: u64,
    pub(crate) offset: u64,
    pub(crate) length: u64,
}

impl RequestInfo {
    /// Whether `[offset, offset + length)` lies inside the request.
    pub(crate) fn contains(&self, offset: u64, length: u64) -> bool {
        offset >= self.offset
            && offset
                .checked_add(length)
                .is_some_and(|end| end <= self.offset.saturating_add(self.length))
    }
}

impl fmt::Display for RequestInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.command {
            Command::Flush | Command::Disconnect => f.write_str(self.command.name()),
            _ => write!(
                f,
                "{} of {} bytes at offset {}",
                self.command, self.length, self.offset
            ),
        }
    }
}
