//! The NBD client over the host's connections (`net` in the contract): replies are parsed
//! here, in the sandbox, while the disk's blocks go from the socket into host buffers and
//! from there into the stream, never into the plugin's memory.

use std::io::{self, Read, Write};

use tessera_nbd::{Client, ReadBuffer};
use tessera_plugin_sdk::content::Writer;
use tessera_plugin_sdk::error::host_error_text;
use tessera_plugin_sdk::net::{Buffer, Connection};
use tessera_plugin_sdk::types::HostError;

/// Most bytes one `receive` asks for. Replies' headers are read through the client's small
/// buffer; larger reads (an error message, bytes skipped) take this much at a time.
const MAX_RECEIVE: usize = 1 << 20;

/// An NBD client whose reads land in host buffers.
pub(crate) type NbdClient = Client<HostStream, HostBuf>;

fn io_error(err: &HostError) -> io::Error {
    io::Error::other(host_error_text(err))
}

/// A TCP connection the host opened to an address the job allows.
pub(crate) struct HostStream(Connection);

impl HostStream {
    /// Connects to `host:port`; `host` is an IP address, as the host resolved the job's
    /// address before the plugin started.
    pub(crate) fn connect(host: &str, port: u16) -> io::Result<HostStream> {
        let address = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Connection::open(&address)
            .map(HostStream)
            .map_err(|err| io_error(&err))
    }
}

impl Read for HostStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let max = buf.len().min(MAX_RECEIVE) as u32;
        let bytes = self.0.receive(max).map_err(|err| io_error(&err))?;
        // The host returns at most `max` bytes; more would be its fault, not a panic here.
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }
}

impl Write for HostStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf).map_err(|err| io_error(&err))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Every `send` hands its bytes to the socket.
        Ok(())
    }
}

/// A read's bytes, kept in a host buffer created on first use.
#[derive(Default)]
pub(crate) struct HostBuf {
    buffer: Option<Buffer>,
    len: usize,
}

impl HostBuf {
    fn buffer(&self) -> io::Result<&Buffer> {
        self.buffer
            .as_ref()
            .ok_or_else(|| io::Error::other("the host buffer holds no bytes"))
    }

    /// Appends `length` bytes from `at` on to `writer`, copied within the host.
    pub(crate) fn write_to(
        &self,
        writer: &mut Writer,
        at: usize,
        length: usize,
    ) -> Result<(), HostError> {
        if length == 0 {
            return Ok(());
        }
        let buffer = self
            .buffer
            .as_ref()
            .ok_or_else(|| HostError::Invalid("a read's host buffer was never filled".into()))?;
        writer.write_buffer(buffer, at as u64, length as u64)
    }
}

impl ReadBuffer<HostStream> for HostBuf {
    fn len(&self) -> usize {
        self.len
    }

    fn resize(&mut self, len: usize) -> io::Result<()> {
        match &self.buffer {
            Some(buffer) => buffer.resize(len as u64).map_err(|err| io_error(&err))?,
            None => {
                self.buffer = Some(Buffer::create(len as u64).map_err(|err| io_error(&err))?);
            }
        }
        self.len = len;
        Ok(())
    }

    fn write_at(&mut self, at: usize, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.buffer()?
            .write(at as u64, bytes)
            .map_err(|err| io_error(&err))
    }

    fn zero(&mut self, at: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.buffer()?
            .zero(at as u64, len as u64)
            .map_err(|err| io_error(&err))
    }

    fn receive(&mut self, stream: &mut HostStream, at: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        stream
            .0
            .receive_into(self.buffer()?, at as u64, len as u64)
            .map_err(|err| io_error(&err))
    }

    fn read_at(&self, at: usize, out: &mut [u8]) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let bytes = self
            .buffer()?
            .read(at as u64, out.len() as u64)
            .map_err(|err| io_error(&err))?;
        if bytes.len() != out.len() {
            return Err(io::Error::other(format!(
                "the host returned {} bytes of a buffer for {}",
                bytes.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&bytes);
        Ok(())
    }
}
