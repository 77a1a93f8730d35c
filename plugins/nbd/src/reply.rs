//! Replies of the transmission phase: the simple reply, and the structured reply as a series of
//! chunks ending in one flagged done.
//!
//! Every field the server sends is checked before it is used: the magic, the cookie, each
//! chunk's length against what its type allows, and every offset against the request. Reading a
//! reply is split in two steps that every caller shares: [`Conn::next_header`] reads and checks
//! one header, and [`ReplyState::step`] applies the rules of a reply (error chunks collected and
//! bounded, `NBD_REPLY_TYPE_NONE` only as the last chunk, no simple reply inside a structured
//! one, the done flag) to a header already matched to its request. A caller with one request in
//! flight reads it with [`Conn::read_reply`], which refuses every other cookie; a pipelined read
//! (`Client::read_ranges`) has several requests in flight, dispatches each header by its cookie
//! and refuses cookies that match none of them. Replies to different requests may arrive in any
//! order and, with structured replies, their chunks may interleave.
//!
//! Error chunks are collected and the reply is read to its end, so that a server-side error
//! leaves the connection usable; anything malformed is a protocol error, after which the
//! connection is abandoned.

use std::collections::BTreeMap;
use std::fmt;

use crate::conn::{Conn, RequestInfo};
use crate::error::{Errno, NbdError, NbdErrorKind};
use crate::wire::{
    CHUNK_HEADER_REST_LEN, ChunkHeader, Command, MAX_STRING, NBD_REPLY_TYPE_ERROR_OFFSET,
    NBD_REPLY_TYPE_FLAG_ERROR, NBD_REPLY_TYPE_NONE, NBD_SIMPLE_REPLY_MAGIC,
    NBD_STRUCTURED_REPLY_MAGIC, SIMPLE_REPLY_REST_LEN, be_u16, be_u32, be_u64, chunk_name,
};
use std::io::{Read, Write};

/// Largest error chunk accepted: the fixed fields and the longest message a 16-bit length can
/// announce. Guards against a server making the client allocate by announcing a huge error.
const MAX_ERROR_CHUNK: u32 = 14 + u16::MAX as u32;

/// Most error chunks one reply may carry. Errors cover no bytes of the request, so without a
/// limit a server could keep a reply going forever.
const MAX_ERROR_CHUNKS: u32 = 1024;

/// The start of a reply.
pub(crate) enum Reply {
    /// A simple reply with its error field and cookie.
    Simple { error: u32, cookie: u64 },
    /// A structured reply chunk.
    Chunk(ChunkHeader),
}

impl Reply {
    /// The cookie of the request the reply answers.
    pub(crate) fn cookie(&self) -> u64 {
        match self {
            Reply::Simple { cookie, .. } => *cookie,
            Reply::Chunk(h) => h.cookie,
        }
    }
}

/// Where a reply stands after one of its headers.
pub(crate) enum Progress {
    /// More chunks of the reply follow.
    Continues,
    /// A successful simple reply to a read: the request's data, `length` bytes, follows the
    /// header and ends the reply. Only without structured replies.
    Data,
    /// The reply ended, with the first error the server reported in it, if any.
    Ended(Option<NbdError>),
}

/// What one reply has shown so far, for the rules that span its chunks.
pub(crate) struct ReplyState {
    /// Whether structured replies were negotiated.
    structured: bool,
    /// Structured chunks seen.
    chunks: u64,
    /// Error chunks seen, bounded by [`MAX_ERROR_CHUNKS`].
    error_chunks: u32,
    /// The first error the server reported in the reply.
    first_error: Option<NbdError>,
}

impl ReplyState {
    /// A reply of which nothing has arrived yet, on a connection that negotiated structured
    /// replies or not.
    pub(crate) fn new(structured: bool) -> Self {
        ReplyState {
            structured,
            chunks: 0,
            error_chunks: 0,
            first_error: None,
        }
    }

    /// Applies one header of the reply to `req`, whose cookie the caller matched. `content`
    /// handles each chunk that is neither an error nor `NBD_REPLY_TYPE_NONE` and must consume
    /// exactly its payload, or fail; error chunks are read here. A simple reply is accepted in
    /// place of a structured one, as the protocol allows for every command but a successful
    /// read; a successful simple reply to a read without structured replies returns
    /// [`Progress::Data`], and the caller reads the data. An `Err` is fatal: the stream failed
    /// or the server broke the protocol.
    pub(crate) fn step<S: Read + Write>(
        &mut self,
        conn: &mut Conn<S>,
        req: &RequestInfo,
        reply: Reply,
        content: impl FnOnce(&mut Conn<S>, &ChunkHeader) -> Result<(), NbdError>,
    ) -> Result<Progress, NbdError> {
        let h = match reply {
            Reply::Simple { error, .. } => {
                if self.chunks > 0 {
                    return Err(conn.protocol(req, "simple reply inside a structured reply"));
                }
                return match error {
                    0 if req.command == Command::Read && self.structured => Err(conn.protocol(
                        req,
                        "simple reply to a read although structured replies were negotiated",
                    )),
                    0 if req.command == Command::Read => Ok(Progress::Data),
                    0 => Ok(Progress::Ended(None)),
                    // The server sends no data after an error, or closes the connection.
                    errno => Ok(Progress::Ended(Some(conn.server_error(
                        req,
                        errno,
                        req.offset,
                        String::new(),
                    )))),
                };
            }
            Reply::Chunk(h) => h,
        };
        if !self.structured {
            return Err(conn.protocol(
                req,
                format!(
                    "structured reply chunk (type {:#06x}) although structured replies were not negotiated",
                    h.kind
                ),
            ));
        }
        self.chunks += 1;
        if h.kind == NBD_REPLY_TYPE_NONE {
            if h.length != 0 {
                return Err(conn.protocol(
                    req,
                    format!(
                        "NBD_REPLY_TYPE_NONE chunk with {} bytes of payload",
                        h.length
                    ),
                ));
            }
            if !h.done() {
                return Err(conn.protocol(req, "NBD_REPLY_TYPE_NONE chunk without the done flag"));
            }
        } else if h.kind & NBD_REPLY_TYPE_FLAG_ERROR != 0 {
            self.error_chunks += 1;
            if self.error_chunks > MAX_ERROR_CHUNKS {
                return Err(conn.protocol(
                    req,
                    format!("more than {MAX_ERROR_CHUNKS} error chunks in one reply"),
                ));
            }
            let error = conn.error_chunk(req, &h)?;
            self.first_error.get_or_insert(error);
        } else {
            content(conn, &h)?;
        }
        Ok(if h.done() {
            Progress::Ended(self.first_error.take())
        } else {
            Progress::Continues
        })
    }
}

impl<S: Read + Write> Conn<S> {
    /// Reads the next reply header, whichever request it answers; `during` names what the
    /// client waits for, in errors.
    pub(crate) fn next_header(&mut self, during: &dyn fmt::Display) -> Result<Reply, NbdError> {
        let magic = be_u32(&self.read_array::<4>(during)?);
        match magic {
            NBD_SIMPLE_REPLY_MAGIC => {
                let b = self.read_array::<SIMPLE_REPLY_REST_LEN>(during)?;
                Ok(Reply::Simple {
                    error: be_u32(&b[0..4]),
                    cookie: be_u64(&b[4..12]),
                })
            }
            NBD_STRUCTURED_REPLY_MAGIC => Ok(Reply::Chunk(ChunkHeader::decode(
                &self.read_array::<CHUNK_HEADER_REST_LEN>(during)?,
            ))),
            other => {
                Err(self.protocol(during, format!("reply magic {other:#010x} is not a reply")))
            }
        }
    }

    /// Reads the next reply header and checks it answers `req`, the one request in flight.
    pub(crate) fn next_reply(&mut self, req: &RequestInfo) -> Result<Reply, NbdError> {
        let reply = self.next_header(req)?;
        let cookie = reply.cookie();
        if cookie != req.cookie {
            return Err(self.protocol(
                req,
                format!(
                    "reply for cookie {cookie:#x}, but the request in flight has cookie {:#x}",
                    req.cookie
                ),
            ));
        }
        Ok(reply)
    }

    /// Reads a whole reply to `req`, the one request in flight, as [`ReplyState::step`]
    /// describes. Returns the first error the server reported, after the reply ended. Not for
    /// reads without structured replies, whose data follows a simple reply.
    pub(crate) fn read_reply(
        &mut self,
        req: &RequestInfo,
        structured: bool,
        mut content: impl FnMut(&mut Self, &ChunkHeader) -> Result<(), NbdError>,
    ) -> Result<(), NbdError> {
        let mut state = ReplyState::new(structured);
        loop {
            let reply = self.next_reply(req)?;
            match state.step(self, req, reply, &mut content)? {
                Progress::Continues => {}
                Progress::Ended(error) => return error.map_or(Ok(()), Err),
                Progress::Data => {
                    return Err(self.protocol(
                        req,
                        "simple reply with read data where a structured reply was expected",
                    ));
                }
            }
        }
    }

    /// Reads the payload of an error chunk:
    ///
    /// ```text
    /// error (u32) || message length (u16) || message || offset (u64, NBD_REPLY_TYPE_ERROR_OFFSET only)
    /// ```
    ///
    /// Error types this client does not know carry the same first fields; their remaining
    /// payload is skipped.
    fn error_chunk(&mut self, req: &RequestInfo, h: &ChunkHeader) -> Result<NbdError, NbdError> {
        let name = chunk_name(h.kind);
        let fixed = if h.kind == NBD_REPLY_TYPE_ERROR_OFFSET {
            14
        } else {
            6
        };
        if h.length < fixed || h.length > MAX_ERROR_CHUNK {
            return Err(self.protocol(
                req,
                format!("{name} chunk of {} bytes (type {:#06x})", h.length, h.kind),
            ));
        }
        let head = self.read_array::<6>(req)?;
        let errno = be_u32(&head[0..4]);
        let message_len = u32::from(be_u16(&head[4..6]));
        if errno == 0 {
            return Err(self.protocol(req, format!("{name} chunk with error number 0")));
        }
        if message_len > h.length - fixed {
            return Err(self.protocol(
                req,
                format!(
                    "{name} chunk announces a {message_len}-byte message in a {}-byte payload",
                    h.length
                ),
            ));
        }
        let message = self.read_vec(message_len as usize, req)?;
        let mut message = String::from_utf8_lossy(&message).into_owned();
        truncate_message(&mut message);
        let rest = h.length - 6 - message_len;
        let offset = match h.kind {
            NBD_REPLY_TYPE_ERROR_OFFSET => {
                if rest != 8 {
                    return Err(self.protocol(
                        req,
                        format!("{name} chunk has {rest} bytes after its message, not 8"),
                    ));
                }
                let offset = be_u64(&self.read_array::<8>(req)?);
                if req.length > 0 && !req.contains(offset, 1) {
                    return Err(self.protocol(
                        req,
                        format!("{name} chunk reports offset {offset} outside the request"),
                    ));
                }
                offset
            }
            // NBD_REPLY_TYPE_ERROR and unknown error types: no offset.
            _ => {
                self.discard(u64::from(rest), req)?;
                req.offset
            }
        };
        Ok(self.server_error(req, errno, offset, message))
    }

    /// The server reported `errno` for `req`.
    pub(crate) fn server_error(
        &self,
        req: &RequestInfo,
        errno: u32,
        offset: u64,
        message: String,
    ) -> NbdError {
        self.error(NbdErrorKind::Server {
            command: req.command.name(),
            offset,
            length: req.length,
            errno: Errno(errno),
            message,
        })
    }

    /// A chunk type `req` cannot receive.
    pub(crate) fn unexpected_chunk(&self, req: &RequestInfo, h: &ChunkHeader) -> NbdError {
        self.protocol(
            req,
            format!(
                "{} chunk (type {:#06x}) in reply to {}",
                chunk_name(h.kind),
                h.kind,
                req.command
            ),
        )
    }
}

/// Keeps a server's message to the protocol's string limit, on a character boundary.
fn truncate_message(message: &mut String) {
    if message.len() > MAX_STRING {
        let mut end = MAX_STRING;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
}

/// Most disjoint pieces the content chunks of one read may form before they join up. A server
/// sending chunks in order forms one piece; the limit bounds the memory a server scattering tiny
/// chunks could make the client spend on tracking them.
pub(crate) const MAX_READ_PIECES: usize = 65536;

/// The parts of a read request that content chunks have covered, as disjoint `[start, end)`
/// pieces keyed by start, joined when they touch.
pub(crate) struct Coverage {
    pieces: BTreeMap<u64, u64>,
    covered: u64,
}

/// Why a content chunk cannot be accepted.
pub(crate) enum CoverageError {
    /// It overlaps an earlier chunk.
    Overlap,
    /// It would leave too many disjoint pieces.
    TooFragmented,
}

impl Coverage {
    pub(crate) fn new() -> Self {
        Coverage {
            pieces: BTreeMap::new(),
            covered: 0,
        }
    }

    /// Records `[start, end)`, which the caller checked lies inside the request and is not empty.
    pub(crate) fn insert(&mut self, start: u64, end: u64) -> Result<(), CoverageError> {
        let before = self
            .pieces
            .range(..=start)
            .next_back()
            .map(|(&s, &e)| (s, e));
        if before.is_some_and(|(_, e)| e > start) {
            return Err(CoverageError::Overlap);
        }
        let after = self.pieces.range(start..).next().map(|(&s, &e)| (s, e));
        if after.is_some_and(|(s, _)| s < end) {
            return Err(CoverageError::Overlap);
        }
        let mut new_start = start;
        let mut new_end = end;
        if let Some((s, e)) = before
            && e == start
        {
            self.pieces.remove(&s);
            new_start = s;
        }
        if let Some((s, e)) = after
            && s == end
        {
            self.pieces.remove(&s);
            new_end = e;
        }
        if self.pieces.len() >= MAX_READ_PIECES {
            return Err(CoverageError::TooFragmented);
        }
        self.pieces.insert(new_start, new_end);
        self.covered += end - start;
        Ok(())
    }

    /// Bytes covered so far.
    pub(crate) fn covered(&self) -> u64 {
        self.covered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_joins_touching_pieces_and_refuses_overlap() {
        let mut c = Coverage::new();
        assert!(c.insert(10, 20).is_ok());
        assert!(c.insert(30, 40).is_ok());
        assert!(matches!(c.insert(15, 16), Err(CoverageError::Overlap)));
        assert!(matches!(c.insert(5, 11), Err(CoverageError::Overlap)));
        assert!(matches!(c.insert(39, 45), Err(CoverageError::Overlap)));
        assert!(matches!(c.insert(0, 100), Err(CoverageError::Overlap)));
        assert!(c.insert(20, 30).is_ok());
        assert_eq!(c.pieces.len(), 1);
        assert_eq!(c.covered(), 30);
        assert!(c.insert(0, 10).is_ok());
        assert!(c.insert(40, 41).is_ok());
        assert_eq!(c.pieces.into_iter().collect::<Vec<_>>(), vec![(0, 41)]);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let mut m = "é".repeat(3000);
        truncate_message(&mut m);
        assert!(m.len() <= MAX_STRING + '…'.len_utf8());
        assert!(m.ends_with('…'));
    }
}
