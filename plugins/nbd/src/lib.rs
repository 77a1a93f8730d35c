//! A blocking NBD client: fixed newstyle handshake, structured replies, block status with
//! `base:allocation` and QEMU dirty bitmaps.
//!
//! The vm-disk plugin uses it to back up disks that QEMU, qemu-storage-daemon or qemu-nbd
//! serve over TCP (reading only allocated data, or only the blocks a dirty bitmap marks) and
//! to restore a disk onto an export. It is pure Rust over any `S: Read + Write`, so the plugin
//! passes a `std::net::TcpStream` when built for `wasm32-wasip2` and the tests pass whatever
//! stream suits them.
//!
//! ```no_run
//! use std::net::TcpStream;
//! use tessera_nbd::{Client, NbdUrl};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let url = NbdUrl::parse("nbd://127.0.0.1:10809/vda")?;
//! let stream = TcpStream::connect(url.address())?;
//! let mut client = Client::connect(stream, &url.export, &["base:allocation"])?;
//! let mut buf = vec![0; 1 << 20];
//! for extent in client.allocation(0, client.size())? {
//!     if !extent.data {
//!         continue; // reads as zeroes: nothing to fetch
//!     }
//!     let end = extent.offset + extent.length;
//!     let mut at = extent.offset;
//!     while at < end {
//!         let n = (end - at).min(buf.len() as u64) as usize;
//!         client.read(at, &mut buf[..n])?;
//!         // ... store buf[..n] as the bytes at offset `at` ...
//!         at += n as u64;
//!     }
//! }
//! client.disconnect()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Session rules
//!
//! - Reads keep several requests in flight ([`Client::read_ranges`] for many scattered ranges
//!   in one call) and take their replies in any order; every other call sends one request at a
//!   time and reads its whole reply before the next. Nothing is in flight when a call
//!   returns, except reads queued ahead with [`Client::queue_read`], which the server works on
//!   while the caller uses earlier data, until [`Client::take_read`] takes them (in the order
//!   queued); meanwhile other calls fail with [`NbdErrorKind::ReadsQueued`]. Calls take
//!   `&mut self`; use one client per thread, and several
//!   connections for parallel transfers if the server allows them ([`Client::can_multi_conn`]).
//! - A server-side error (an error reply or error chunk) fails the call with
//!   [`NbdErrorKind::Server`] and leaves the connection usable. A stream failure or a protocol
//!   violation fails the call and breaks the client: the position in the byte stream is unknown,
//!   so every later call fails with [`NbdErrorKind::Broken`] and the caller reconnects.
//! - The bytes of queued reads are kept in a [`ReadBuffer`]: a `Vec<u8>`, or, chosen with
//!   [`Client::with_buffers`] right after connecting, a buffer outside the client's memory that
//!   the stream fills itself, so that read data need not pass through the client.
//! - Writes are durable only after [`Client::flush`] returns; [`Client::disconnect`] does not
//!   flush.
//! - Timeouts belong to the stream (`TcpStream::set_read_timeout`): a server that stops sending
//!   blocks a call until the stream gives up.
//!
//! # Hostile servers
//!
//! The server is not trusted. Every length it sends is checked against what its message type
//! allows and capped before anything is allocated; read data goes straight into the read's
//! buffer; every offset is checked against the request; replies must carry the cookie of a
//! request in flight, end with the done flag, and cover exactly what was asked. Counts of option replies,
//! error chunks, read pieces and extents are bounded, so no sequence of bytes makes the client
//! panic, allocate without limit, or loop without consuming input.

mod block_status;
mod buffer;
mod client;
mod conn;
mod error;
mod handshake;
mod read;
mod reply;
mod url;
mod wire;

pub use block_status::{BlockExtent, Extent, MAX_EXTENTS};
pub use buffer::ReadBuffer;
pub use client::{Client, MAX_IO_REQUEST};
pub use error::{Errno, NbdError, NbdErrorKind};
pub use handshake::{BlockSizes, ConnectOptions};
pub use read::MAX_QUEUED_READ;
pub use url::{DEFAULT_PORT, NbdUrl, UrlError};
pub use wire::{
    BASE_ALLOCATION, NBD_STATE_DIRTY, NBD_STATE_HOLE, NBD_STATE_ZERO, QEMU_DIRTY_BITMAP_PREFIX,
};

#[cfg(test)]
mod tests;
