//! Reads: [`Client::read`], [`Client::read_ranges`], and reads queued ahead with
//! [`Client::queue_read`] and taken with [`Client::take_read`], with several requests in flight.
//!
//! A read is split into requests of at most [`MAX_READ_REQUEST`] bytes (and the server's maximum
//! block size), sent ahead of their replies: at most [`MAX_READS_IN_FLIGHT`] requests, asking for
//! at most [`MAX_BYTES_IN_FLIGHT`] bytes together, wait for their replies, and each reply that
//! ends makes room for more. Every request the window allows leaves in one write before the
//! client waits for the next reply header; read requests carry no payload, so a window of them
//! fits the socket's buffers and never blocks against a server busy sending replies.
//!
//! Queued reads let a caller keep the server busy while it works on bytes it already has: the
//! requests of the next read go out when it is queued, the server answers them while the caller
//! stores the previous read's bytes, and the caller takes the reads in the order it queued them.
//! Each queued read has a buffer of its own, a [`ReadBuffer`], so replies for any of them land
//! in place whatever read is being taken. Until every queued read is taken, other requests are
//! refused ([`NbdErrorKind::ReadsQueued`]): their replies would mix with the reads'.
//!
//! The server may answer in any order and, with structured replies, interleave the chunks of
//! different replies. Each reply header is dispatched by its cookie to its request, checked by
//! the same [`ReplyState`] as every other reply, and its data lands straight in its read's
//! buffer at that request's place: the few bytes the client's read buffer took in with the
//! header are copied there, and the buffer takes the rest from the stream itself
//! ([`ReadBuffer::receive`]), so a buffer outside the client's memory is filled without the
//! data passing through the client. A cookie that matches no request in flight is a protocol
//! error. Without structured replies, a successful simple reply is followed by exactly the
//! request's length of data.
//!
//! A server error for one request stops new requests of its read; the replies of its requests
//! still in flight are read to their ends, so that the connection stays usable, and the read
//! fails with the error of its earliest failed request (in the order of its ranges). Other
//! queued reads go on. A stream failure or a protocol violation returns at once and breaks the
//! client.

use std::collections::VecDeque;
use std::fmt;
use std::io::{Read, Write};

use crate::buffer::ReadBuffer;
use crate::client::Client;
use crate::conn::{Conn, RequestInfo};
use crate::error::{NbdError, NbdErrorKind};
use crate::reply::{Coverage, CoverageError, MAX_READ_PIECES, Progress, Reply, ReplyState};
use crate::wire::{
    ChunkHeader, Command, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_TYPE_OFFSET_HOLE, be_u32, be_u64,
};

/// Most read requests in flight at once.
pub(crate) const MAX_READS_IN_FLIGHT: usize = 16;

/// Most bytes the read requests in flight ask for together. A single request larger than this
/// (possible only with a larger [`MAX_READ_REQUEST`]) still goes out, alone.
pub(crate) const MAX_BYTES_IN_FLIGHT: u64 = 8 * 1024 * 1024;

/// Largest read request sent: a quarter of [`MAX_BYTES_IN_FLIGHT`], so that one long range also
/// keeps several requests in flight and the server never waits for the client between them.
pub(crate) const MAX_READ_REQUEST: u32 = 2 * 1024 * 1024;

/// Most bytes one queued read may ask for: the client sizes its buffer, so a mistaken range
/// list must not make it allocate the whole export.
pub const MAX_QUEUED_READ: u64 = 256 * 1024 * 1024;

/// Reads queued and not yet taken, oldest first, and the requests in flight for them.
pub(crate) struct ReadQueue<B> {
    reads: VecDeque<QueuedRead<B>>,
    in_flight: Vec<InFlight>,
    bytes_in_flight: u64,
    /// Number of the next read queued.
    next_read: u64,
}

impl<B> Default for ReadQueue<B> {
    fn default() -> Self {
        ReadQueue {
            reads: VecDeque::new(),
            in_flight: Vec::new(),
            bytes_in_flight: 0,
            next_read: 0,
        }
    }
}

impl<B> ReadQueue<B> {
    /// Reads queued and not yet taken.
    pub(crate) fn len(&self) -> usize {
        self.reads.len()
    }
}

/// One queued read: its buffer, and its requests not sent or not answered yet.
struct QueuedRead<B> {
    number: u64,
    buf: B,
    unsent: VecDeque<Piece>,
    /// Requests sent whose replies have not ended.
    outstanding: usize,
    /// The failed request earliest in `buf`, by where its data goes, and its error.
    failed: Option<(usize, NbdError)>,
}

impl<B> QueuedRead<B> {
    /// Whether every reply the read waits for has ended: a failed read sends no more requests.
    fn is_done(&self) -> bool {
        self.outstanding == 0 && (self.unsent.is_empty() || self.failed.is_some())
    }
}

/// One request of a read: the export's bytes `offset..offset + length`, whose data goes at
/// `at` in the read's buffer.
#[derive(Debug, Clone, Copy)]
struct Piece {
    offset: u64,
    length: u64,
    at: usize,
}

impl<S: Read + Write, B: ReadBuffer<S>> Client<S, B> {
    /// Fills `buf` with the export's bytes at `offset`. Holes the server reports arrive as
    /// zeroes. `offset` and the length must be multiples of the minimum block size, except that
    /// the range may end at the end of the export. Long reads keep several requests in flight,
    /// as [`Client::read_ranges`] describes.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        self.read_ranges(&[(offset, buf.len() as u64)], buf)
    }

    /// Reads the ranges `(offset, length)` of the export into `buf`, one after the other
    /// (`buf.len()` must equal the sum of the lengths), keeping several requests in flight.
    ///
    /// Every range follows the rules of [`Client::read`]; ranges may come in any order, overlap
    /// or be empty. All of them and the buffer's length are checked before anything is sent
    /// ([`NbdErrorKind::OutOfRange`], [`NbdErrorKind::Unaligned`],
    /// [`NbdErrorKind::BufferLength`]). The ranges are split into requests of at most 2 MiB
    /// (and the server's maximum block size); up to 16 of them, asking for up to 8 MiB together,
    /// are in flight at once, and the server may answer them in any order. Reading many
    /// scattered blocks thus costs about one round trip per window instead of one per block.
    ///
    /// If the server fails requests, no further requests are sent, the replies of those in
    /// flight are read to their ends, and the error of the earliest failed request in the order
    /// of `ranges` is returned ([`NbdErrorKind::Server`]); the connection stays usable and the
    /// contents of `buf` are unspecified. A stream failure or a protocol violation breaks the
    /// client, as in every call.
    pub fn read_ranges(&mut self, ranges: &[(u64, u64)], buf: &mut [u8]) -> Result<(), NbdError> {
        self.usable()?;
        let total = self.check_ranges(ranges)?;
        let buffer = buf.len() as u64;
        if total != buffer {
            return Err(self.conn.error(NbdErrorKind::BufferLength {
                ranges: total,
                buffer,
            }));
        }
        if total == 0 {
            return Ok(());
        }
        let spare = std::mem::take(&mut self.spare);
        self.queue_read(ranges, spare)?;
        let data = self.take_read()?;
        let copied = data.read_at(0, buf);
        self.spare = data;
        copied.map_err(|e| {
            let doing = format_args!("copying {total} bytes out of the read buffer");
            self.conn.buffer_error(&doing, e)
        })
    }

    /// Queues a read of the ranges `(offset, length)` into `buf`, which is resized to their
    /// total (at most [`MAX_QUEUED_READ`]) with [`ReadBuffer::resize`]; its requests go out as
    /// far as the window of requests in flight allows. [`Client::take_read`] returns the buffer
    /// filled, queued reads in the order they were queued.
    ///
    /// The ranges follow the rules of [`Client::read_ranges`] and are checked before anything
    /// is sent. Several reads may be queued; until all of them are taken, other calls fail with
    /// [`NbdErrorKind::ReadsQueued`].
    pub fn queue_read(&mut self, ranges: &[(u64, u64)], mut buf: B) -> Result<(), NbdError> {
        self.check_open()?;
        let total = self.check_ranges(ranges)?;
        if total > MAX_QUEUED_READ {
            return Err(self.conn.error(NbdErrorKind::InvalidArgument {
                detail: format!(
                    "a queued read of {total} bytes exceeds the limit of {MAX_QUEUED_READ} bytes; \
                     queue smaller reads"
                ),
            }));
        }
        // Bounded by `MAX_QUEUED_READ` just above. Bytes already in the buffer need no
        // clearing: every request's reply covers its whole range before the read succeeds.
        if let Err(e) = buf.resize(total as usize) {
            let doing = format_args!("sizing the read buffer to {total} bytes");
            return Err(self.conn.buffer_error(&doing, e));
        }
        let step = u64::from(self.align_down(self.max_io_request().min(MAX_READ_REQUEST)));
        let mut unsent = VecDeque::new();
        let mut at = 0usize;
        // `check_ranges` bounded every range by the export's size, so none of this overflows.
        for &(offset, length) in ranges {
            for i in 0..length.div_ceil(step) {
                let start = i * step;
                let length = step.min(length - start);
                unsent.push_back(Piece {
                    offset: offset + start,
                    length,
                    at,
                });
                at += length as usize;
            }
        }
        let number = self.reads.next_read;
        self.reads.next_read += 1;
        self.reads.reads.push_back(QueuedRead {
            number,
            buf,
            unsent,
            outstanding: 0,
            failed: None,
        });
        self.run(|c| c.send_reads())
    }

    /// Waits for the oldest queued read and returns its buffer, filled; holes the server
    /// reports arrive as zeroes. Replies for later queued reads that arrive meanwhile land in
    /// their buffers, and their requests go out as the window makes room.
    ///
    /// If the server failed requests of the read, the error of the earliest of them in the
    /// order of its ranges ([`NbdErrorKind::Server`]), and the connection stays usable; with
    /// no read queued, [`NbdErrorKind::InvalidArgument`].
    pub fn take_read(&mut self) -> Result<B, NbdError> {
        self.check_open()?;
        if self.reads.reads.is_empty() {
            return Err(self.conn.error(NbdErrorKind::InvalidArgument {
                detail: "no read is queued to take".into(),
            }));
        }
        self.run(|c| {
            while !c.reads.reads.front().is_none_or(QueuedRead::is_done) {
                c.receive_read()?;
                c.send_reads()?;
            }
            match c.reads.reads.pop_front() {
                Some(QueuedRead {
                    failed: Some((_, error)),
                    ..
                }) => Err(error),
                Some(read) => Ok(read.buf),
                None => Err(c.conn.error(NbdErrorKind::InvalidArgument {
                    detail: "no read is queued to take".into(),
                })),
            }
        })
    }

    /// Reads queued and not yet taken.
    pub fn queued_reads(&self) -> usize {
        self.reads.len()
    }

    /// Checks every range; their total length.
    fn check_ranges(&self, ranges: &[(u64, u64)]) -> Result<u64, NbdError> {
        let mut total = 0u64;
        for &(offset, length) in ranges {
            self.check_range(offset, length)?;
            total = total.saturating_add(length);
        }
        Ok(total)
    }

    /// Sends the requests of the queued reads, oldest first, that the window of requests in
    /// flight has room for, in one write.
    fn send_reads(&mut self) -> Result<(), NbdError> {
        let mut sending = Vec::new();
        let queue = &mut self.reads;
        let mut count = queue.in_flight.len();
        let mut bytes = queue.bytes_in_flight;
        'reads: for read in queue.reads.iter_mut().filter(|r| r.failed.is_none()) {
            while let Some(&piece) = read.unsent.front() {
                let fits = count == 0
                    || (count < MAX_READS_IN_FLIGHT && bytes + piece.length <= MAX_BYTES_IN_FLIGHT);
                if !fits {
                    break 'reads;
                }
                read.unsent.pop_front();
                read.outstanding += 1;
                count += 1;
                bytes += piece.length;
                sending.push((read.number, piece));
            }
        }
        if sending.is_empty() {
            return Ok(());
        }
        let sent = self.reads.in_flight.len();
        for (read, piece) in sending {
            // `piece.length` is at most `MAX_READ_REQUEST`.
            let req = self.queue_request(Command::Read, 0, piece.offset, piece.length as u32, &[]);
            self.reads
                .in_flight
                .push(InFlight::new(req, read, piece.at, self.structured));
            self.reads.bytes_in_flight += piece.length;
        }
        self.conn.send(&InFlightText(&self.reads.in_flight[sent..]))
    }

    /// Takes one reply header of a read in flight and what follows it, into its read's buffer.
    fn receive_read(&mut self) -> Result<(), NbdError> {
        let ReadQueue {
            reads,
            in_flight,
            bytes_in_flight,
            ..
        } = &mut self.reads;
        let conn = &mut self.conn;
        let reply = conn.next_header(&InFlightText(in_flight))?;
        let cookie = reply.cookie();
        let Some(i) = in_flight.iter().position(|r| r.req.cookie == cookie) else {
            return Err(conn.protocol(
                &InFlightText(in_flight),
                format!("reply for cookie {cookie:#x}, which matches no request in flight"),
            ));
        };
        // A read stays queued until none of its requests is in flight.
        let Some(read) = reads.iter_mut().find(|r| r.number == in_flight[i].read) else {
            return Err(conn.protocol(&in_flight[i].req, "reply for a read no longer queued"));
        };
        let Some(result) = in_flight[i].receive(conn, reply, &mut read.buf)? else {
            return Ok(());
        };
        let ended = in_flight.remove(i);
        *bytes_in_flight -= ended.req.length;
        read.outstanding -= 1;
        if let Err(e) = result
            && read
                .failed
                .as_ref()
                .is_none_or(|(first, _)| ended.at < *first)
        {
            read.failed = Some((ended.at, e));
        }
        Ok(())
    }
}

/// A read request waiting for (the rest of) its reply.
struct InFlight {
    /// The request.
    req: RequestInfo,
    /// The queued read it belongs to.
    read: u64,
    /// Where its data goes in its read's buffer.
    at: usize,
    /// The parts of the request its content chunks covered so far.
    coverage: Coverage,
    /// The rules its reply has to follow.
    state: ReplyState,
}

impl InFlight {
    fn new(req: RequestInfo, read: u64, at: usize, structured: bool) -> Self {
        InFlight {
            req,
            read,
            at,
            coverage: Coverage::new(),
            state: ReplyState::new(structured),
        }
    }

    /// Takes one header of the request's reply, matched by its cookie, and the payload after
    /// it, into the request's part of `buf`, its read's buffer. `None` while the reply
    /// continues; when it ended, whether the server read the request or reported an error. An
    /// `Err` is fatal.
    fn receive<S: Read + Write, B: ReadBuffer<S>>(
        &mut self,
        conn: &mut Conn<S>,
        reply: Reply,
        buf: &mut B,
    ) -> Result<Option<Result<(), NbdError>>, NbdError> {
        // The request's part, `at..at + req.length`, lies inside `buf`: the client sized `buf`
        // to the read and split it into its requests.
        let at = self.at;
        let req = &self.req;
        let coverage = &mut self.coverage;
        let progress = self.state.step(conn, req, reply, |conn, h| {
            read_content_chunk(conn, req, h, buf, at, coverage)
        })?;
        match progress {
            Progress::Continues => Ok(None),
            Progress::Data => {
                conn.receive_into(buf, at, req.length as usize, req)?;
                Ok(Some(Ok(())))
            }
            Progress::Ended(Some(error)) => Ok(Some(Err(error))),
            Progress::Ended(None) => {
                if coverage.covered() != req.length {
                    return Err(conn.protocol(
                        req,
                        format!(
                            "the reply ended after covering {} of {} bytes",
                            coverage.covered(),
                            req.length
                        ),
                    ));
                }
                Ok(Some(Ok(())))
            }
        }
    }
}

/// Names the reads in flight in errors no single reply is to blame for: the oldest request,
/// and how many more wait for their replies.
struct InFlightText<'a>(&'a [InFlight]);

impl fmt::Display for InFlightText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str(Command::Read.name()),
            [only] => fmt::Display::fmt(&only.req, f),
            [oldest, rest @ ..] => write!(
                f,
                "{} and {} more read requests in flight",
                oldest.req,
                rest.len()
            ),
        }
    }
}

/// Reads one content chunk of a read reply into `buf`, the read's buffer, whose part for the
/// request starts at `at`:
///
/// ```text
/// NBD_REPLY_TYPE_OFFSET_DATA: offset (u64) || data (length - 8 bytes)
/// NBD_REPLY_TYPE_OFFSET_HOLE: offset (u64) || hole size (u32)
/// ```
///
/// Both must lie inside the request and overlap no earlier chunk; the data goes straight into
/// the read's buffer, so the chunk's announced length costs no allocation.
fn read_content_chunk<S: Read + Write, B: ReadBuffer<S>>(
    conn: &mut Conn<S>,
    req: &RequestInfo,
    h: &ChunkHeader,
    buf: &mut B,
    at: usize,
    coverage: &mut Coverage,
) -> Result<(), NbdError> {
    let (offset, length, hole) = match h.kind {
        NBD_REPLY_TYPE_OFFSET_DATA => {
            if h.length < 9 {
                return Err(conn.protocol(
                    req,
                    format!("NBD_REPLY_TYPE_OFFSET_DATA chunk of {} bytes", h.length),
                ));
            }
            let offset = be_u64(&conn.read_array::<8>(req)?);
            (offset, u64::from(h.length - 8), false)
        }
        NBD_REPLY_TYPE_OFFSET_HOLE => {
            if h.length != 12 {
                return Err(conn.protocol(
                    req,
                    format!(
                        "NBD_REPLY_TYPE_OFFSET_HOLE chunk of {} bytes, not 12",
                        h.length
                    ),
                ));
            }
            let b = conn.read_array::<12>(req)?;
            let size = be_u32(&b[8..12]);
            if size == 0 {
                return Err(conn.protocol(req, "NBD_REPLY_TYPE_OFFSET_HOLE of 0 bytes"));
            }
            (be_u64(&b[0..8]), u64::from(size), true)
        }
        _ => return Err(conn.unexpected_chunk(req, h)),
    };
    if !req.contains(offset, length) {
        return Err(conn.protocol(
            req,
            format!("chunk for {length} bytes at offset {offset} lies outside the request"),
        ));
    }
    let start = offset - req.offset;
    match coverage.insert(start, start + length) {
        Ok(()) => {}
        Err(CoverageError::Overlap) => {
            return Err(conn.protocol(
                req,
                format!("chunk for {length} bytes at offset {offset} overlaps an earlier chunk"),
            ));
        }
        Err(CoverageError::TooFragmented) => {
            return Err(conn.protocol(
                req,
                format!("the reply is split into more than {MAX_READ_PIECES} disjoint pieces"),
            ));
        }
    }
    // Inside the request, whose part of `buf` the client sized: no overflow.
    let (at, length) = (at + start as usize, length as usize);
    if hole {
        buf.zero(at, length).map_err(|e| {
            let doing = format_args!("zeroing a hole of {req} in the read buffer");
            conn.buffer_error(&doing, e)
        })
    } else {
        conn.receive_into(buf, at, length, req)
    }
}
