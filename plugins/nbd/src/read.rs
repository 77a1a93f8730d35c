//! Reads: [`Client::read`] and [`Client::read_ranges`], with several requests in flight.
//!
//! A read is split into requests of at most [`MAX_READ_REQUEST`] bytes (and the server's maximum
//! block size), sent ahead of their replies: at most [`MAX_READS_IN_FLIGHT`] requests, asking for
//! at most [`MAX_BYTES_IN_FLIGHT`] bytes together, wait for their replies, and each reply that
//! ends makes room for more. Every request the window allows leaves in one write before the
//! client waits for the next reply header; read requests carry no payload, so a window of them
//! fits the socket's buffers and never blocks against a server busy sending replies.
//!
//! The server may answer in any order and, with structured replies, interleave the chunks of
//! different replies. Each reply header is dispatched by its cookie to its request, checked by
//! the same [`ReplyState`] as every other reply, and its data lands straight in the caller's
//! buffer at that request's place; a cookie that matches no request in flight is a protocol
//! error. Without structured replies, a successful simple reply is followed by exactly the
//! request's length of data.
//!
//! A server error for one request stops new requests; the replies of the requests still in
//! flight are read to their ends, so that the connection stays usable, and then the error of the
//! earliest failed request (in the order of the caller's ranges) is returned. A stream failure or
//! a protocol violation returns at once and breaks the client.

use std::fmt;
use std::io::{Read, Write};

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

impl<S: Read + Write> Client<S> {
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
        let mut total = 0u64;
        for &(offset, length) in ranges {
            self.check_range(offset, length)?;
            total = total.saturating_add(length);
        }
        let buffer = buf.len() as u64;
        if total != buffer {
            return Err(self.conn.error(NbdErrorKind::BufferLength {
                ranges: total,
                buffer,
            }));
        }
        if total == 0 {
            return self.usable();
        }
        let step = u64::from(self.align_down(self.max_io_request().min(MAX_READ_REQUEST)));
        // Each range in pieces of `step` bytes; `check_range` bounded every range by the
        // export's size, so none of this overflows.
        let requests = ranges.iter().flat_map(move |&(offset, length)| {
            (0..length.div_ceil(step)).map(move |i| {
                let start = i * step;
                (offset + start, step.min(length - start))
            })
        });
        self.transact(|c| c.pipeline(requests, buf))
    }

    /// Sends the read requests `(offset, length)`, whose data lies one after the other in
    /// `buf`, keeping the window of requests in flight full, and reads their replies into
    /// `buf`.
    fn pipeline(
        &mut self,
        mut requests: impl Iterator<Item = (u64, u64)>,
        buf: &mut [u8],
    ) -> Result<(), NbdError> {
        let mut in_flight: Vec<InFlight> = Vec::with_capacity(MAX_READS_IN_FLIGHT);
        let mut bytes_in_flight = 0u64;
        let mut next = requests.next();
        // Where the next request's data goes in `buf`.
        let mut at = 0usize;
        // The failed request earliest in `buf`, by where its data goes, and its error.
        let mut failed: Option<(usize, NbdError)> = None;
        loop {
            if failed.is_none() {
                let queued = in_flight.len();
                while let Some((offset, length)) = next {
                    let fits = in_flight.is_empty()
                        || (in_flight.len() < MAX_READS_IN_FLIGHT
                            && bytes_in_flight + length <= MAX_BYTES_IN_FLIGHT);
                    if !fits {
                        break;
                    }
                    // `length` is at most `MAX_READ_REQUEST`.
                    let req = self.queue_request(Command::Read, 0, offset, length as u32, &[]);
                    in_flight.push(InFlight::new(req, at, self.structured));
                    at += length as usize;
                    bytes_in_flight += length;
                    next = requests.next();
                }
                if in_flight.len() > queued {
                    self.conn.send(&InFlightText(&in_flight[queued..]))?;
                }
            }
            if in_flight.is_empty() {
                break;
            }
            let reply = self.conn.next_header(&InFlightText(&in_flight))?;
            let cookie = reply.cookie();
            let Some(i) = in_flight.iter().position(|r| r.req.cookie == cookie) else {
                return Err(self.conn.protocol(
                    &InFlightText(&in_flight),
                    format!("reply for cookie {cookie:#x}, which matches no request in flight"),
                ));
            };
            let Some(error) = in_flight[i].receive(&mut self.conn, reply, buf)? else {
                continue;
            };
            let ended = in_flight.remove(i);
            bytes_in_flight -= ended.req.length;
            if let Err(e) = error
                && failed.as_ref().is_none_or(|(first, _)| ended.at < *first)
            {
                failed = Some((ended.at, e));
            }
        }
        failed.map_or(Ok(()), |(_, e)| Err(e))
    }
}

/// A read request waiting for (the rest of) its reply.
struct InFlight {
    /// The request.
    req: RequestInfo,
    /// Where its data goes in the caller's buffer.
    at: usize,
    /// The parts of the request its content chunks covered so far.
    coverage: Coverage,
    /// The rules its reply has to follow.
    state: ReplyState,
}

impl InFlight {
    fn new(req: RequestInfo, at: usize, structured: bool) -> Self {
        InFlight {
            req,
            at,
            coverage: Coverage::new(),
            state: ReplyState::new(structured),
        }
    }

    /// Takes one header of the request's reply, matched by its cookie, and the payload after
    /// it, into the request's part of `buf`. `None` while the reply continues; when it ended,
    /// whether the server read the request or reported an error. An `Err` is fatal.
    fn receive<S: Read + Write>(
        &mut self,
        conn: &mut Conn<S>,
        reply: Reply,
        buf: &mut [u8],
    ) -> Result<Option<Result<(), NbdError>>, NbdError> {
        // The request's part lies inside `buf`: the client split `buf` into its requests.
        let target = &mut buf[self.at..self.at + self.req.length as usize];
        let req = &self.req;
        let coverage = &mut self.coverage;
        let progress = self.state.step(conn, req, reply, |conn, h| {
            read_content_chunk(conn, req, h, target, coverage)
        })?;
        match progress {
            Progress::Continues => Ok(None),
            Progress::Data => {
                conn.read_exact(target, req)?;
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

/// Reads one content chunk of a read reply into `buf`, the request's part of the caller's
/// buffer:
///
/// ```text
/// NBD_REPLY_TYPE_OFFSET_DATA: offset (u64) || data (length - 8 bytes)
/// NBD_REPLY_TYPE_OFFSET_HOLE: offset (u64) || hole size (u32)
/// ```
///
/// Both must lie inside the request and overlap no earlier chunk; the data goes straight into
/// the caller's buffer, so the chunk's announced length costs no allocation.
fn read_content_chunk<S: Read + Write>(
    conn: &mut Conn<S>,
    req: &RequestInfo,
    h: &ChunkHeader,
    buf: &mut [u8],
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
    let target = &mut buf[start as usize..(start + length) as usize];
    if hole {
        target.fill(0);
        Ok(())
    } else {
        conn.read_exact(target, req)
    }
}
