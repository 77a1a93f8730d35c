//! Block status: which parts of the export hold data (`base:allocation`) and which changed
//! since a checkpoint (`qemu:dirty-bitmap:NAME`).
//!
//! One `NBD_CMD_BLOCK_STATUS` request covers at most 4 GiB and the server may answer for less
//! than asked, so [`Client::allocation`] and [`Client::dirty`] repeat the request from the first
//! offset not yet described until the whole range is. Every answer describes at least one byte,
//! so the walk always advances.

use std::io::{Read, Write};

use crate::buffer::ReadBuffer;
use crate::client::Client;
use crate::conn::{Conn, RequestInfo};
use crate::error::{NbdError, NbdErrorKind};
use crate::wire::{
    BASE_ALLOCATION, ChunkHeader, Command, NBD_REPLY_TYPE_BLOCK_STATUS, NBD_STATE_DIRTY,
    NBD_STATE_HOLE, NBD_STATE_ZERO, be_u32,
};

/// Most descriptors one block status chunk may carry. A descriptor describes at least one
/// byte and only the last may reach past the request, so a conforming server needs no more than
/// the request's length; the limit bounds what one chunk makes the client allocate.
const MAX_DESCRIPTORS: u32 = 1 << 17;

/// Most extents one call of [`Client::allocation`] or [`Client::dirty`] returns. Bounds the
/// memory a server reporting a pathological number of tiny extents can make the client spend;
/// query large exports in windows (for example 1 GiB at a time).
pub const MAX_EXTENTS: usize = 1 << 20;

/// Largest range one block status request asks about.
const MAX_STATUS_REQUEST: u32 = 1 << 31;

/// One extent of a block status reply, clipped to the request: its flags as the metadata
/// context defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockExtent {
    /// Start, in bytes from the start of the export.
    pub offset: u64,
    /// Length in bytes (never zero).
    pub length: u64,
    /// Status flags of the context, for example `NBD_STATE_HOLE | NBD_STATE_ZERO` (3) for
    /// `base:allocation`.
    pub flags: u32,
}

/// A run of the export as `base:allocation` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Start, in bytes from the start of the export.
    pub offset: u64,
    /// Length in bytes (never zero).
    pub length: u64,
    /// Whether the run must be read: `false` when the server guarantees it reads as zeroes
    /// (`NBD_STATE_ZERO`).
    pub data: bool,
    /// Whether the run is unallocated on the server (`NBD_STATE_HOLE`). A hole that is not
    /// also zero has undefined contents and still counts as data.
    pub hole: bool,
}

impl<S: Read + Write, B: ReadBuffer<S>> Client<S, B> {
    /// Asks the server for the status of `length` bytes at `offset` in the metadata
    /// `context`, which must have been selected when connecting. The extents start at `offset`
    /// and are contiguous, but may cover less than asked: the server decides how much it
    /// describes.
    pub fn block_status(
        &mut self,
        context: &str,
        offset: u64,
        length: u32,
    ) -> Result<Vec<BlockExtent>, NbdError> {
        let Some(id) = self
            .contexts
            .iter()
            .find(|c| c.name == context)
            .map(|c| c.id)
        else {
            return Err(self.conn.error(NbdErrorKind::ContextNotNegotiated {
                context: context.to_owned(),
            }));
        };
        let offset_end = offset.checked_add(u64::from(length));
        if offset_end.is_none_or(|end| end > self.size()) {
            return Err(self.conn.error(NbdErrorKind::OutOfRange {
                offset,
                length: u64::from(length),
                size: self.size(),
            }));
        }
        if length == 0 {
            return self.usable().map(|()| Vec::new());
        }
        self.transact(|c| c.block_status_request(id, offset, length))
    }

    /// Where the data is in `length` bytes at `offset`: contiguous runs covering the whole
    /// range, neighbours with equal status merged. Needs `base:allocation` selected when
    /// connecting.
    pub fn allocation(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, NbdError> {
        let mut extents: Vec<Extent> = Vec::new();
        self.walk(BASE_ALLOCATION, offset, length, |e| {
            let data = e.flags & NBD_STATE_ZERO == 0;
            let hole = e.flags & NBD_STATE_HOLE != 0;
            match extents.last_mut() {
                Some(last) if last.data == data && last.hole == hole => last.length += e.length,
                _ => {
                    if extents.len() == MAX_EXTENTS {
                        return false;
                    }
                    extents.push(Extent {
                        offset: e.offset,
                        length: e.length,
                        data,
                        hole,
                    });
                }
            }
            true
        })?;
        Ok(extents)
    }

    /// The dirty runs, as `(offset, length)`, in `length` bytes at `offset` of the QEMU dirty
    /// bitmap context `context` (`qemu:dirty-bitmap:NAME`, selected when connecting). Adjacent
    /// runs are merged; clean bytes are left out.
    pub fn dirty(
        &mut self,
        context: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<(u64, u64)>, NbdError> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        self.walk(context, offset, length, |e| {
            if e.flags & NBD_STATE_DIRTY == 0 {
                return true;
            }
            match runs.last_mut() {
                Some((start, len)) if *start + *len == e.offset => *len += e.length,
                _ => {
                    if runs.len() == MAX_EXTENTS {
                        return false;
                    }
                    runs.push((e.offset, e.length));
                }
            }
            true
        })?;
        Ok(runs)
    }

    /// Feeds `visit` the extents of `context` over the whole range, in order. `visit` returns
    /// `false` when it cannot take more.
    fn walk(
        &mut self,
        context: &str,
        offset: u64,
        length: u64,
        mut visit: impl FnMut(BlockExtent) -> bool,
    ) -> Result<(), NbdError> {
        let end = offset.checked_add(length);
        if end.is_none_or(|end| end > self.size()) {
            return Err(self.conn.error(NbdErrorKind::OutOfRange {
                offset,
                length,
                size: self.size(),
            }));
        }
        let end = offset + length;
        let step = u64::from(self.align_down(MAX_STATUS_REQUEST));
        let mut at = offset;
        while at < end {
            let ask = step.min(end - at) as u32;
            for e in self.block_status(context, at, ask)? {
                if !visit(e) {
                    return Err(self.conn.error(NbdErrorKind::TooManyExtents {
                        offset,
                        limit: MAX_EXTENTS,
                    }));
                }
                at = e.offset + e.length;
            }
        }
        Ok(())
    }

    fn block_status_request(
        &mut self,
        id: u32,
        offset: u64,
        length: u32,
    ) -> Result<Vec<BlockExtent>, NbdError> {
        let req = self.send_request(Command::BlockStatus, 0, offset, length, &[])?;
        let known: Vec<u32> = self.contexts.iter().map(|c| c.id).collect();
        let mut seen: Vec<u32> = Vec::new();
        let mut extents: Option<Vec<BlockExtent>> = None;
        self.conn.read_reply(&req, true, |conn, h| {
            if h.kind != NBD_REPLY_TYPE_BLOCK_STATUS {
                return Err(conn.unexpected_chunk(&req, h));
            }
            let chunk_id = status_chunk_id(conn, &req, h)?;
            if !known.contains(&chunk_id) {
                return Err(conn.protocol(
                    &req,
                    format!(
                        "block status for metadata context id {chunk_id}, which was never selected"
                    ),
                ));
            }
            if seen.contains(&chunk_id) {
                return Err(conn.protocol(
                    &req,
                    format!("two block status chunks for metadata context id {chunk_id}"),
                ));
            }
            seen.push(chunk_id);
            let count = (h.length - 4) / 8;
            if chunk_id == id {
                extents = Some(read_descriptors(conn, &req, count)?);
            } else {
                conn.discard(u64::from(count) * 8, &req)?;
            }
            Ok(())
        })?;
        extents.ok_or_else(|| {
            self.conn.protocol(
                &req,
                "the reply ended without block status for the requested context",
            )
        })
    }
}

/// Checks a block status chunk's length and reads its context id:
///
/// ```text
/// context id (u32) || (extent length (u32) || status flags (u32))+
/// ```
fn status_chunk_id<S: Read + Write>(
    conn: &mut Conn<S>,
    req: &RequestInfo,
    h: &ChunkHeader,
) -> Result<u32, NbdError> {
    let length = h.length;
    if length < 12 || !(length - 4).is_multiple_of(8) || (length - 4) / 8 > MAX_DESCRIPTORS {
        return Err(conn.protocol(
            req,
            format!(
                "NBD_REPLY_TYPE_BLOCK_STATUS chunk of {length} bytes (must be 4 plus 1 to {MAX_DESCRIPTORS} 8-byte descriptors)"
            ),
        ));
    }
    Ok(be_u32(&conn.read_array::<4>(req)?))
}

/// Reads `count` descriptors and turns them into extents from the request's offset. Every
/// descriptor must be non-empty, and only the last may reach past the request's end; it is
/// clipped there.
fn read_descriptors<S: Read + Write>(
    conn: &mut Conn<S>,
    req: &RequestInfo,
    count: u32,
) -> Result<Vec<BlockExtent>, NbdError> {
    let end = req.offset + req.length;
    let mut at = req.offset;
    let mut extents = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let b = conn.read_array::<8>(req)?;
        let length = u64::from(be_u32(&b[0..4]));
        let flags = be_u32(&b[4..8]);
        if length == 0 {
            return Err(conn.protocol(req, "block status descriptor of length 0"));
        }
        if at >= end {
            return Err(conn.protocol(
                req,
                "block status descriptors continue after the requested range was covered",
            ));
        }
        let length = length.min(end - at);
        extents.push(BlockExtent {
            offset: at,
            length,
            flags,
        });
        at += length;
    }
    Ok(extents)
}
