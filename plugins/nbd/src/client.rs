//! The client: a connected export, and the writes, zeroing and flushes of the transmission
//! phase. Reads are in `read.rs`, block status in `block_status.rs`.
//!
//! Writes, zeroing, flushes and block status queries send their requests one at a time and read
//! each reply to its end before the next. Reads ([`Client::read`], [`Client::read_ranges`]) keep
//! several requests in flight and take their replies in whatever order the server sends them.
//! Either way the connection is between requests, with nothing in flight, whenever a call
//! returns, except that reads queued with [`Client::queue_read`] stay in flight until
//! [`Client::take_read`] takes them; other requests wait for that. Large calls are split into requests no longer than the server's maximum block size
//! and [`MAX_IO_REQUEST`]. A request that fails on the server returns its error and leaves the
//! connection usable; a failure of the stream or a protocol violation marks the client broken
//! and every later call fails with [`NbdErrorKind::Broken`].
//!
//! The bytes of reads are kept in a [`ReadBuffer`] of the client's type `B`, a `Vec<u8>` unless
//! the caller chose another with [`Client::with_buffers`].

use std::fmt;
use std::io::{Read, Write};

use crate::buffer::ReadBuffer;
use crate::conn::{Conn, RequestInfo};
use crate::error::{NbdError, NbdErrorKind};
use crate::handshake::{BlockSizes, ConnectOptions, MetaContext, negotiate};
use crate::read::ReadQueue;
use crate::wire::{
    Command, NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_FAST_ZERO,
    NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES,
    REQUEST_HEADER_LEN, RequestHeader,
};

/// Largest read or write request sent, whatever the server allows: 32 MiB, the size the
/// protocol says every server should accept and no server should take for a denial of service.
pub const MAX_IO_REQUEST: u32 = 32 * 1024 * 1024;

/// Largest write-zeroes request sent when the server advertises no maximum block size. The
/// request carries no payload; the limit keeps each one short enough to answer promptly.
const MAX_ZERO_REQUEST: u32 = 1 << 30;

/// Size of the buffer of zeroes written when the server cannot write zeroes itself.
const ZERO_BUFFER: usize = 1024 * 1024;

/// A connection to one NBD export, in the transmission phase.
///
/// `S` is the byte stream: a `std::net::TcpStream` in a plugin, anything that reads and writes
/// in tests. Timeouts are the stream's business: set them before connecting.
///
/// `B` is where the bytes of queued reads are kept ([`ReadBuffer`]): a `Vec<u8>` unless the
/// caller picks another buffer with [`Client::with_buffers`] right after connecting.
pub struct Client<S, B = Vec<u8>> {
    pub(crate) conn: Conn<S>,
    size: u64,
    flags: u16,
    block_sizes: Option<BlockSizes>,
    pub(crate) structured: bool,
    pub(crate) contexts: Vec<MetaContext>,
    next_cookie: u64,
    broken: bool,
    zeroes: Vec<u8>,
    /// Reads queued ahead ([`Client::queue_read`]).
    pub(crate) reads: ReadQueue<B>,
    /// The buffer [`Client::read_ranges`] reads into, kept from one call to the next.
    pub(crate) spare: B,
}

impl<S, B> fmt::Debug for Client<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("export", &self.conn.export())
            .field("size", &self.size)
            .field("flags", &format_args!("{:#06x}", self.flags))
            .field("block_sizes", &self.block_sizes)
            .field("structured", &self.structured)
            .field("contexts", &self.contexts)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<S: Read + Write> Client<S> {
    /// Performs the handshake on `stream` for the export `export`, selecting the metadata
    /// `contexts` (for example `base:allocation`, `qemu:dirty-bitmap:b0`) for block status
    /// queries. Fails if the server does not select every context asked for.
    pub fn connect(stream: S, export: &str, contexts: &[&str]) -> Result<Client<S>, NbdError> {
        let mut options = ConnectOptions::new(export);
        options.contexts = contexts.iter().map(|c| (*c).to_owned()).collect();
        Client::connect_with(stream, &options)
    }

    /// Performs the handshake on `stream` as `options` say.
    pub fn connect_with(stream: S, options: &ConnectOptions) -> Result<Client<S>, NbdError> {
        let mut conn = Conn::new(stream, &options.export);
        let negotiated = negotiate(&mut conn, options)?;
        Ok(Client {
            conn,
            size: negotiated.size,
            flags: negotiated.flags,
            block_sizes: negotiated.block_sizes,
            structured: negotiated.structured,
            contexts: negotiated.contexts,
            next_cookie: 1,
            broken: false,
            zeroes: Vec::new(),
            reads: ReadQueue::default(),
            spare: Vec::new(),
        })
    }
}

impl<S: Read + Write, B: ReadBuffer<S>> Client<S, B> {
    /// The same session, with the bytes of reads kept in buffers of type `B2` from now on:
    /// [`Client::queue_read`] takes and [`Client::take_read`] returns a `B2`. Meant for right
    /// after connecting; fails with [`NbdErrorKind::ReadsQueued`] while reads are queued (their
    /// buffers are of the old type), and with [`NbdErrorKind::Broken`] after a failure broke
    /// the client; either way the client, and with it the connection, is dropped.
    pub fn with_buffers<B2: ReadBuffer<S>>(self) -> Result<Client<S, B2>, NbdError> {
        self.usable()?;
        let Client {
            conn,
            size,
            flags,
            block_sizes,
            structured,
            contexts,
            next_cookie,
            broken,
            zeroes,
            reads: _,
            spare: _,
        } = self;
        Ok(Client {
            conn,
            size,
            flags,
            block_sizes,
            structured,
            contexts,
            next_cookie,
            broken,
            zeroes,
            reads: ReadQueue::default(),
            spare: B2::default(),
        })
    }

    /// The export's name.
    pub fn export(&self) -> &str {
        self.conn.export()
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The transmission flags the server sent (`NBD_FLAG_*`).
    pub fn transmission_flags(&self) -> u16 {
        self.flags
    }

    /// Whether the server refuses writes.
    pub fn read_only(&self) -> bool {
        self.flags & NBD_FLAG_READ_ONLY != 0
    }

    /// Whether the server understands flushes; [`Client::flush`] does nothing when it does not.
    pub fn can_flush(&self) -> bool {
        self.flags & NBD_FLAG_SEND_FLUSH != 0
    }

    /// Whether the server understands forced unit access.
    pub fn can_fua(&self) -> bool {
        self.flags & NBD_FLAG_SEND_FUA != 0
    }

    /// Whether the server understands trim.
    pub fn can_trim(&self) -> bool {
        self.flags & NBD_FLAG_SEND_TRIM != 0
    }

    /// Whether the server writes zeroes itself; [`Client::write_zeroes`] sends zero-filled
    /// writes when it does not.
    pub fn can_write_zeroes(&self) -> bool {
        self.flags & NBD_FLAG_SEND_WRITE_ZEROES != 0
    }

    /// Whether the server can tell quickly whether zeroing is cheap.
    pub fn can_fast_zero(&self) -> bool {
        self.flags & NBD_FLAG_SEND_FAST_ZERO != 0
    }

    /// Whether several connections to the export see each other's flushed writes.
    pub fn can_multi_conn(&self) -> bool {
        self.flags & NBD_FLAG_CAN_MULTI_CONN != 0
    }

    /// The block size constraints the server advertised, if it did.
    pub fn block_sizes(&self) -> Option<BlockSizes> {
        self.block_sizes
    }

    /// Whether structured replies were negotiated (reads skip holes; block status works).
    pub fn structured_replies(&self) -> bool {
        self.structured
    }

    /// The metadata contexts the server selected.
    pub fn contexts(&self) -> impl Iterator<Item = &str> {
        self.contexts.iter().map(|c| c.name.as_str())
    }

    /// Whether the server selected the metadata context `name`.
    pub fn has_context(&self, name: &str) -> bool {
        self.contexts.iter().any(|c| c.name == name)
    }

    /// The stream, for example to change its timeouts.
    pub fn get_ref(&self) -> &S {
        self.conn.get_ref()
    }

    /// Writes `data` to the export at `offset`, with the same alignment rules as
    /// [`Client::read`].
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), NbdError> {
        self.check_writable()?;
        self.check_range(offset, data.len() as u64)?;
        let step = self.max_io_request() as usize;
        let mut at = offset;
        for piece in data.chunks(step) {
            self.transact(|c| c.simple_request(Command::Write, at, piece.len() as u32, piece))?;
            at += piece.len() as u64;
        }
        Ok(())
    }

    /// Makes `length` bytes at `offset` read as zeroes, letting the server deallocate them.
    /// Sends zero-filled writes if the server cannot write zeroes itself.
    pub fn write_zeroes(&mut self, offset: u64, length: u64) -> Result<(), NbdError> {
        self.check_writable()?;
        self.check_range(offset, length)?;
        if !self.can_write_zeroes() {
            return self.write_zero_buffers(offset, length);
        }
        let step = match self.block_sizes {
            Some(b) => b.maximum.min(MAX_ZERO_REQUEST),
            None => MAX_ZERO_REQUEST,
        };
        let step = u64::from(self.align_down(step));
        let end = offset + length;
        let mut at = offset;
        while at < end {
            let n = step.min(end - at) as u32;
            self.transact(|c| c.simple_request(Command::WriteZeroes, at, n, &[]))?;
            at += u64::from(n);
        }
        Ok(())
    }

    /// Asks the server to make every completed write durable. Does nothing if the server does
    /// not understand flushes ([`Client::can_flush`]), as the protocol then forbids asking.
    pub fn flush(&mut self) -> Result<(), NbdError> {
        if !self.can_flush() {
            return self.usable();
        }
        self.transact(|c| c.simple_request(Command::Flush, 0, 0, &[]))
    }

    /// Ends the session cleanly: the server finishes and closes the connection. Writes are not
    /// flushed by this; call [`Client::flush`] first.
    pub fn disconnect(mut self) -> Result<(), NbdError> {
        self.usable()?;
        self.send_request(Command::Disconnect, 0, 0, 0, &[])?;
        Ok(())
    }

    fn write_zero_buffers(&mut self, offset: u64, length: u64) -> Result<(), NbdError> {
        let step = (self.max_io_request() as usize).min(ZERO_BUFFER);
        let step = self.align_down(step as u32) as usize;
        if self.zeroes.len() < step {
            self.zeroes = vec![0; step];
        }
        let zeroes = std::mem::take(&mut self.zeroes);
        let end = offset + length;
        let mut at = offset;
        let mut result = Ok(());
        while at < end {
            let n = (step as u64).min(end - at) as usize;
            result =
                self.transact(|c| c.simple_request(Command::Write, at, n as u32, &zeroes[..n]));
            if result.is_err() {
                break;
            }
            at += n as u64;
        }
        self.zeroes = zeroes;
        result
    }

    /// Runs one request's exchange, marking the client broken if the stream or the protocol
    /// failed in the middle of it.
    pub(crate) fn transact<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, NbdError>,
    ) -> Result<T, NbdError> {
        self.usable()?;
        self.run(f)
    }

    /// [`Client::transact`] for the queued reads themselves, which may run while reads are
    /// queued.
    pub(crate) fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, NbdError>,
    ) -> Result<T, NbdError> {
        self.check_open()?;
        let result = f(self);
        if let Err(e) = &result
            && e.is_fatal()
        {
            self.broken = true;
        }
        result
    }

    /// Fails if an earlier failure left the connection unusable, or if queued reads wait to
    /// be taken: a new request's reply would mix with theirs.
    pub(crate) fn usable(&self) -> Result<(), NbdError> {
        self.check_open()?;
        match self.reads.len() {
            0 => Ok(()),
            count => Err(self.conn.error(NbdErrorKind::ReadsQueued { count })),
        }
    }

    /// Fails if an earlier failure left the connection unusable.
    pub(crate) fn check_open(&self) -> Result<(), NbdError> {
        if self.broken {
            Err(self.conn.error(NbdErrorKind::Broken))
        } else {
            Ok(())
        }
    }

    fn check_writable(&self) -> Result<(), NbdError> {
        self.usable()?;
        if self.read_only() {
            return Err(self.conn.error(NbdErrorKind::ReadOnly));
        }
        Ok(())
    }

    /// Checks that `[offset, offset + length)` lies in the export and honours the minimum block
    /// size.
    pub(crate) fn check_range(&self, offset: u64, length: u64) -> Result<(), NbdError> {
        let end = offset.checked_add(length);
        if end.is_none_or(|end| end > self.size) {
            return Err(self.conn.error(NbdErrorKind::OutOfRange {
                offset,
                length,
                size: self.size,
            }));
        }
        let minimum = self.minimum_block();
        let aligned = |v: u64| v.is_multiple_of(u64::from(minimum));
        if !aligned(offset) || !(aligned(length) || offset + length == self.size) {
            return Err(self.conn.error(NbdErrorKind::Unaligned {
                offset,
                length,
                minimum,
            }));
        }
        Ok(())
    }

    pub(crate) fn minimum_block(&self) -> u32 {
        self.block_sizes.map_or(1, |b| b.minimum)
    }

    /// Rounds `n` down to the minimum block size, never below it.
    pub(crate) fn align_down(&self, n: u32) -> u32 {
        let minimum = self.minimum_block();
        (n - n % minimum).max(minimum)
    }

    /// Largest read or write request to send.
    pub(crate) fn max_io_request(&self) -> u32 {
        let max = match self.block_sizes {
            Some(b) => b.maximum.min(MAX_IO_REQUEST),
            None => MAX_IO_REQUEST,
        };
        self.align_down(max)
    }

    /// Sends one request with its payload; what to match its reply against.
    pub(crate) fn send_request(
        &mut self,
        command: Command,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Result<RequestInfo, NbdError> {
        let info = self.queue_request(command, flags, offset, length, payload);
        self.conn.send(&info)?;
        Ok(info)
    }

    /// Queues one request with its payload under a new cookie, to leave with the next
    /// [`Conn::send`]; what to match its reply against.
    pub(crate) fn queue_request(
        &mut self,
        command: Command,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> RequestInfo {
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        let header = RequestHeader {
            flags,
            command,
            cookie,
            offset,
            length,
        };
        let out = self.conn.queue();
        out.reserve(REQUEST_HEADER_LEN + payload.len());
        header.encode(out);
        out.extend_from_slice(payload);
        RequestInfo {
            command,
            cookie,
            offset,
            length: u64::from(length),
        }
    }

    /// A request whose successful reply carries nothing: write, write zeroes, flush.
    fn simple_request(
        &mut self,
        command: Command,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Result<(), NbdError> {
        let req = self.send_request(command, 0, offset, length, payload)?;
        let structured = self.structured;
        self.conn.read_reply(&req, structured, |conn, h| {
            Err(conn.unexpected_chunk(&req, h))
        })
    }
}
