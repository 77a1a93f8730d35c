//! Where the bytes of a queued read are kept: [`ReadBuffer`], implemented for `Vec<u8>`.
//!
//! The client never holds a read's payload itself. It tells the buffer where each piece goes:
//! bytes that arrived with a reply header are copied in ([`ReadBuffer::write_at`]), holes are
//! zeroed ([`ReadBuffer::zero`]), and everything else is handed over as a length to take from
//! the stream ([`ReadBuffer::receive`]). A buffer that lives outside the client's memory, which
//! the stream fills by itself, thus receives a read's data without it passing through the
//! client, apart from the few bytes the client's own read buffer took in with a header.

use std::io::{self, Read};

/// The buffer of a queued read ([`Client::queue_read`](crate::Client::queue_read)): a
/// `Vec<u8>`, or a buffer outside the client's memory that the stream `S` fills itself.
///
/// The client only ever addresses the bytes `0..len()` after [`ReadBuffer::resize`]. A failure
/// of the buffer fails the call with [`NbdErrorKind::Io`](crate::NbdErrorKind::Io); one in the
/// middle of a reply breaks the client, as a stream failure does, since the rest of the reply
/// is left unread.
pub trait ReadBuffer<S>: Default {
    /// Number of bytes held.
    fn len(&self) -> usize;

    /// Whether it holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes it hold `len` bytes. Bytes kept or added may have any value: the client
    /// overwrites every one of them before a read succeeds.
    fn resize(&mut self, len: usize) -> io::Result<()>;

    /// Copies `bytes` in at `at`.
    fn write_at(&mut self, at: usize, bytes: &[u8]) -> io::Result<()>;

    /// Sets the `len` bytes at `at` to zero: a hole the server reported.
    fn zero(&mut self, at: usize, len: usize) -> io::Result<()>;

    /// Fills the `len` bytes at `at` with the next `len` bytes of `stream`, taking no more. A
    /// stream that ends first is an error of kind [`io::ErrorKind::UnexpectedEof`], as with
    /// [`Read::read_exact`].
    fn receive(&mut self, stream: &mut S, at: usize, len: usize) -> io::Result<()>;

    /// Copies the `out.len()` bytes at `at` into `out`.
    fn read_at(&self, at: usize, out: &mut [u8]) -> io::Result<()>;
}

/// The buffer every client starts with: the bytes live in the vector, and
/// [`ReadBuffer::receive`] reads them straight into it.
impl<S: Read> ReadBuffer<S> for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn resize(&mut self, len: usize) -> io::Result<()> {
        Vec::resize(self, len, 0);
        Ok(())
    }

    fn write_at(&mut self, at: usize, bytes: &[u8]) -> io::Result<()> {
        range_mut(self, at, bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    fn zero(&mut self, at: usize, len: usize) -> io::Result<()> {
        range_mut(self, at, len)?.fill(0);
        Ok(())
    }

    fn receive(&mut self, stream: &mut S, at: usize, len: usize) -> io::Result<()> {
        stream.read_exact(range_mut(self, at, len)?)
    }

    fn read_at(&self, at: usize, out: &mut [u8]) -> io::Result<()> {
        let held = at
            .checked_add(out.len())
            .and_then(|end| self.get(at..end))
            .ok_or_else(|| outside(at, out.len(), Vec::len(self)))?;
        out.copy_from_slice(held);
        Ok(())
    }
}

/// The `len` bytes at `at` of `buf`, or an error if they reach past its end.
fn range_mut(buf: &mut [u8], at: usize, len: usize) -> io::Result<&mut [u8]> {
    let held = buf.len();
    at.checked_add(len)
        .and_then(|end| buf.get_mut(at..end))
        .ok_or_else(|| outside(at, len, held))
}

fn outside(at: usize, len: usize, held: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{len} bytes at {at} lie outside a read buffer of {held} bytes"),
    )
}
