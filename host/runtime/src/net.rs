//! The network interface: TCP connections the host opens to the addresses a job allows,
//! and buffers the host keeps bytes in for the plugin.
//!
//! A plugin reading a live disk over NBD parses the protocol in its sandbox but has the
//! disk's blocks received into host buffers and appended to the stream from there. Over
//! WASI sockets each byte was copied into a freshly zeroed host buffer, into the plugin's
//! memory, into the NBD client's buffer and out of the plugin again, then into a chunk
//! buffer and into a pack. This way the kernel copies it into a host buffer, whose whole
//! chunks the stream hands to its workers as they are (`StreamWriter::write_shared`), and
//! each worker copies its chunk into its pack's write stage, where it hashes and encrypts
//! it. A buffer the plugin changes while chunks still share its bytes is copied first
//! (the plugin keeps enough buffers that this does not happen in practice).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use wasmtime::component::Resource;

use crate::bindings::net::{self, HostError};
use crate::limits::{MAX_IO_CALL, MAX_OPEN_HANDLES};
use crate::state::JobState;

/// Bytes one buffer may hold: a queued read of an NBD client asks for at most this much.
pub const MAX_BUFFER: u64 = 256 << 20;
/// Bytes the buffers of one job may hold together.
pub const MAX_BUFFERS_TOTAL: u64 = 1 << 30;
/// How long a connection waits for the peer to connect, to send anything or to take what
/// is sent before the call fails: a server that hangs must not hang a scheduled job.
const PEER_TIMEOUT: Duration = Duration::from_secs(600);

/// A TCP connection a plugin opened.
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
}

impl Connection {
    fn io_error(&self, doing: &str, e: &std::io::Error) -> HostError {
        let reason = match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                format!("no progress for {} s", PEER_TIMEOUT.as_secs())
            }
            _ => e.to_string(),
        };
        HostError::Io(format!("{doing} {}: {reason}", self.peer))
    }
}

/// Bytes a plugin keeps in the host.
pub struct Buffer {
    held: Held,
}

/// A buffer's bytes: its own, or shared with the chunks of a stream that
/// `content-writer.write-buffer` handed them to and the workers have not stored yet.
enum Held {
    Own(BytesMut),
    Shared(Bytes),
}

impl Buffer {
    fn new(len: usize) -> Buffer {
        Buffer {
            held: Held::Own(BytesMut::zeroed(len)),
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.held {
            Held::Own(bytes) => bytes,
            Held::Shared(bytes) => bytes,
        }
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }

    /// The bytes, to change: still shared with a stream's chunks (the plugin reuses a
    /// buffer before the workers stored what it held), they are copied first.
    fn bytes_mut(&mut self) -> &mut BytesMut {
        if let Held::Shared(shared) = &mut self.held {
            let own = std::mem::take(shared)
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            self.held = Held::Own(own);
        }
        match &mut self.held {
            Held::Own(bytes) => bytes,
            Held::Shared(_) => unreachable!("made its own just above"),
        }
    }

    /// The bytes, shared: a stream's chunks keep them without a copy.
    fn share(&mut self) -> Bytes {
        let bytes = match std::mem::replace(&mut self.held, Held::Shared(Bytes::new())) {
            Held::Own(bytes) => bytes.freeze(),
            Held::Shared(bytes) => bytes,
        };
        self.held = Held::Shared(bytes.clone());
        bytes
    }
}

/// `at..at + length` as a range of `len` bytes, or why it is not one.
fn range_in(len: usize, at: u64, length: u64) -> Result<std::ops::Range<usize>, HostError> {
    at.checked_add(length)
        .filter(|&end| end <= len as u64)
        .map(|end| at as usize..end as usize)
        .ok_or_else(|| {
            HostError::Invalid(format!(
                "bytes {at}..{} lie outside a buffer of {len} bytes",
                at.saturating_add(length)
            ))
        })
}

/// Refuses a call moving more than [`MAX_IO_CALL`] bytes.
fn check_io_len(what: &str, len: u64) -> Result<(), HostError> {
    if len > MAX_IO_CALL as u64 {
        return Err(HostError::Limit(format!(
            "{what} of {len} bytes in one call; the limit is {MAX_IO_CALL}"
        )));
    }
    Ok(())
}

impl JobState {
    fn connection(&mut self, this: &Resource<Connection>) -> Result<&mut Connection, HostError> {
        self.table
            .get_mut(this)
            .map_err(|e| HostError::Invalid(format!("bad connection handle: {e}")))
    }

    fn buffer(&mut self, this: &Resource<Buffer>) -> Result<&mut Buffer, HostError> {
        self.table
            .get_mut(this)
            .map_err(|e| HostError::Invalid(format!("bad buffer handle: {e}")))
    }

    /// Counts a new handle, refusing one over [`MAX_OPEN_HANDLES`].
    fn open_handle(&mut self, what: &str) -> Result<(), HostError> {
        if self.open_handles >= MAX_OPEN_HANDLES {
            return Err(HostError::Limit(format!(
                "more than {MAX_OPEN_HANDLES} open handles ({what})"
            )));
        }
        self.open_handles += 1;
        Ok(())
    }

    /// Accounts for `new` bytes in buffers in place of `old`, refusing a buffer larger
    /// than [`MAX_BUFFER`] or a total over [`MAX_BUFFERS_TOTAL`].
    fn account_buffer(&mut self, old: u64, new: u64) -> Result<(), HostError> {
        if new > MAX_BUFFER {
            return Err(HostError::Limit(format!(
                "a buffer of {new} bytes; the limit is {MAX_BUFFER}"
            )));
        }
        let total = self.buffer_bytes - old + new;
        if total > MAX_BUFFERS_TOTAL {
            return Err(HostError::Limit(format!(
                "buffers of {total} bytes in all; the limit is {MAX_BUFFERS_TOTAL}"
            )));
        }
        self.buffer_bytes = total;
        Ok(())
    }

    /// The bytes `at..at + length` of `buffer`, shared rather than copied, for
    /// `content-writer.write-buffer`.
    pub(crate) fn share_buffer(
        &mut self,
        buffer: &Resource<Buffer>,
        at: u64,
        length: u64,
    ) -> Result<Bytes, HostError> {
        let buffer = self.buffer(buffer)?;
        let range = range_in(buffer.len(), at, length)?;
        Ok(buffer.share().slice(range))
    }
}

impl net::Host for JobState {}

impl net::HostBuffer for JobState {
    fn create(&mut self, length: u64) -> Result<Resource<Buffer>, HostError> {
        self.touch();
        self.account_buffer(0, length)?;
        if let Err(e) = self.open_handle("buffers") {
            self.buffer_bytes -= length;
            return Err(e);
        }
        // Bounded by `MAX_BUFFER` above.
        self.table
            .push(Buffer::new(length as usize))
            .map_err(|e| HostError::Limit(format!("cannot keep another buffer: {e}")))
    }

    fn length(&mut self, this: Resource<Buffer>) -> u64 {
        self.buffer(&this).map_or(0, |b| b.len() as u64)
    }

    fn resize(&mut self, this: Resource<Buffer>, length: u64) -> Result<(), HostError> {
        self.touch();
        let old = self.buffer(&this)?.len() as u64;
        self.account_buffer(old, length)?;
        self.buffer(&this)?.bytes_mut().resize(length as usize, 0);
        Ok(())
    }

    fn write(&mut self, this: Resource<Buffer>, at: u64, data: Vec<u8>) -> Result<(), HostError> {
        self.touch();
        let buffer = self.buffer(&this)?;
        let range = range_in(buffer.len(), at, data.len() as u64)?;
        buffer.bytes_mut()[range].copy_from_slice(&data);
        Ok(())
    }

    fn zero(&mut self, this: Resource<Buffer>, at: u64, length: u64) -> Result<(), HostError> {
        self.touch();
        let buffer = self.buffer(&this)?;
        let range = range_in(buffer.len(), at, length)?;
        buffer.bytes_mut()[range].fill(0);
        Ok(())
    }

    fn read(&mut self, this: Resource<Buffer>, at: u64, length: u64) -> Result<Vec<u8>, HostError> {
        self.touch();
        check_io_len("a buffer read", length)?;
        let bytes = self.buffer(&this)?.bytes();
        Ok(bytes[range_in(bytes.len(), at, length)?].to_vec())
    }

    fn drop(&mut self, rep: Resource<Buffer>) -> wasmtime::Result<()> {
        let buffer = self.table.delete(rep)?;
        self.buffer_bytes = self.buffer_bytes.saturating_sub(buffer.len() as u64);
        self.open_handles = self.open_handles.saturating_sub(1);
        Ok(())
    }
}

impl net::HostConnection for JobState {
    fn open(&mut self, address: String) -> Result<Resource<Connection>, HostError> {
        self.touch();
        let peer: SocketAddr = address.parse().map_err(|_| {
            HostError::Invalid(format!(
                "'{address}' is not an IP address and port (such as 127.0.0.1:10809)"
            ))
        })?;
        if !self.network.contains(&peer) {
            return Err(HostError::Denied(if self.network.is_empty() {
                format!("connecting to {peer}: the job allows no network address")
            } else {
                let allowed: Vec<String> = self.network.iter().map(|a| a.to_string()).collect();
                format!(
                    "connecting to {peer}: the job allows only {}",
                    allowed.join(", ")
                )
            }));
        }
        let stream = TcpStream::connect_timeout(&peer, PEER_TIMEOUT)
            .map_err(|e| HostError::Io(format!("connecting to {peer}: {e}")))?;
        let configured = stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(PEER_TIMEOUT)))
            .and_then(|()| stream.set_write_timeout(Some(PEER_TIMEOUT)));
        if let Err(e) = configured {
            return Err(HostError::Io(format!(
                "setting up the connection to {peer}: {e}"
            )));
        }
        self.open_handle("connections")?;
        self.table
            .push(Connection { stream, peer })
            .map_err(|e| HostError::Limit(format!("cannot keep another connection: {e}")))
    }

    fn send(&mut self, this: Resource<Connection>, data: Vec<u8>) -> Result<(), HostError> {
        self.touch();
        check_io_len("a send", data.len() as u64)?;
        let conn = self.connection(&this)?;
        let sent = conn.stream.write_all(&data);
        sent.map_err(|e| conn.io_error("sending to", &e))
    }

    fn receive(&mut self, this: Resource<Connection>, max: u32) -> Result<Vec<u8>, HostError> {
        self.touch();
        check_io_len("a receive", u64::from(max))?;
        let conn = self.connection(&this)?;
        let mut bytes = vec![0; max as usize];
        loop {
            match conn.stream.read(&mut bytes) {
                Ok(n) => {
                    bytes.truncate(n);
                    return Ok(bytes);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(conn.io_error("receiving from", &e)),
            }
        }
    }

    fn receive_into(
        &mut self,
        this: Resource<Connection>,
        buffer: Resource<Buffer>,
        at: u64,
        length: u64,
    ) -> Result<(), HostError> {
        self.touch();
        // The bytes leave the table for the call, as the connection is in it too.
        let mut bytes = std::mem::take(self.buffer(&buffer)?.bytes_mut());
        let received = receive_exact(self.connection(&this), &mut bytes, at, length);
        if let Ok(buffer) = self.buffer(&buffer) {
            buffer.held = Held::Own(bytes);
        }
        // A long receive counts as a host call for the CPU limit.
        self.touch();
        received
    }

    fn drop(&mut self, rep: Resource<Connection>) -> wasmtime::Result<()> {
        let conn = self.table.delete(rep)?;
        // The peer sees the end at once, whoever else holds the socket.
        let _ = conn.stream.shutdown(Shutdown::Both);
        self.open_handles = self.open_handles.saturating_sub(1);
        Ok(())
    }
}

/// Fills `bytes[at..at + length]` from the connection.
fn receive_exact(
    conn: Result<&mut Connection, HostError>,
    bytes: &mut [u8],
    at: u64,
    length: u64,
) -> Result<(), HostError> {
    let conn = conn?;
    let range = range_in(bytes.len(), at, length)?;
    let target = &mut bytes[range];
    let mut done = 0;
    while done < target.len() {
        match conn.stream.read(&mut target[done..]) {
            Ok(0) => {
                return Err(HostError::Io(format!(
                    "{} closed the connection after {done} of {length} bytes",
                    conn.peer
                )));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(conn.io_error("receiving from", &e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_changed_while_shared_leaves_the_shared_bytes_alone() {
        let mut buffer = Buffer::new(8);
        buffer.bytes_mut().copy_from_slice(b"abcdefgh");
        let shared = buffer.share().slice(2..6);
        buffer.bytes_mut()[..4].copy_from_slice(b"WXYZ");
        assert_eq!(
            &shared[..],
            b"cdef",
            "a stream's chunk keeps what it was given"
        );
        assert_eq!(buffer.bytes(), b"WXYZefgh");

        // Shared no longer, its bytes are changed where they are.
        drop(buffer.share());
        let before = buffer.bytes().as_ptr();
        buffer.bytes_mut()[0] = b'!';
        assert_eq!(buffer.bytes().as_ptr(), before);
        assert_eq!(buffer.bytes(), b"!XYZefgh");
        buffer.bytes_mut().resize(10, 0);
        assert_eq!(buffer.len(), 10);
        assert_eq!(&buffer.bytes()[8..], [0, 0]);
    }

    #[test]
    fn ranges_must_lie_inside_the_buffer() {
        assert_eq!(range_in(10, 2, 8).unwrap(), 2..10);
        assert_eq!(range_in(10, 10, 0).unwrap(), 10..10);
        for (at, length) in [(2, 9), (11, 0), (u64::MAX, 2)] {
            let Err(HostError::Invalid(message)) = range_in(10, at, length) else {
                panic!("{at}+{length} accepted");
            };
            assert!(
                message.contains("outside a buffer of 10 bytes"),
                "{message}"
            );
        }
    }
}
