//! The NBD wire format: every magic number, option, command, flag and reply type this client
//! sends or understands, and the fixed-size headers that frame the two phases of a session.
//!
//! All values come from the NBD protocol specification (`doc/proto.md` of the reference
//! implementation) and, for the `qemu:` metadata namespace, from QEMU's `docs/interop/nbd.rst`.
//! They are fixed by the protocol: changing one breaks interoperability with every server.
//! Integers on the wire are big-endian.

use std::fmt;

// ---------------------------------------------------------------------------------------------
// Handshake phase
// ---------------------------------------------------------------------------------------------

/// `NBDMAGIC` in ASCII: the first eight bytes every server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT` in ASCII: follows [`NBD_MAGIC`] in newstyle negotiation, and prefixes every
/// option the client sends.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Follows [`NBD_MAGIC`] in the obsolete oldstyle negotiation, which this client refuses.
pub const CLISERV_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Prefixes every option reply of fixed newstyle negotiation.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flag: the server speaks fixed newstyle negotiation.
pub const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;

/// Client flag: the client speaks fixed newstyle negotiation.
pub const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: the server must not send the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const NBD_FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Option: choose the export and enter transmission without a chance of an error reply.
pub const NBD_OPT_EXPORT_NAME: u32 = 1;
/// Option: choose the export and enter transmission, with `NBD_REP_INFO` replies.
pub const NBD_OPT_GO: u32 = 7;
/// Option: ask for structured replies in the transmission phase.
pub const NBD_OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: select the metadata contexts `NBD_CMD_BLOCK_STATUS` reports.
pub const NBD_OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: the option succeeded (or a list of replies ended).
pub const NBD_REP_ACK: u32 = 1;
/// Option reply: one piece of information about the export (`NBD_OPT_GO`).
pub const NBD_REP_INFO: u32 = 3;
/// Option reply: one selected metadata context and its id (`NBD_OPT_SET_META_CONTEXT`).
pub const NBD_REP_META_CONTEXT: u32 = 4;
/// Bit 31 marks every option reply type that is an error.
pub const NBD_REP_FLAG_ERROR: u32 = 1 << 31;
/// Error reply: the server does not know the option.
pub const NBD_REP_ERR_UNSUP: u32 = NBD_REP_FLAG_ERROR | 1;
/// Error reply: the server's policy forbids the option.
pub const NBD_REP_ERR_POLICY: u32 = NBD_REP_FLAG_ERROR | 2;
/// Error reply: the option was syntactically or semantically invalid.
pub const NBD_REP_ERR_INVALID: u32 = NBD_REP_FLAG_ERROR | 3;
/// Error reply: the option is not supported on the server's platform.
pub const NBD_REP_ERR_PLATFORM: u32 = NBD_REP_FLAG_ERROR | 4;
/// Error reply: the server requires TLS first.
pub const NBD_REP_ERR_TLS_REQD: u32 = NBD_REP_FLAG_ERROR | 5;
/// Error reply: the export does not exist.
pub const NBD_REP_ERR_UNKNOWN: u32 = NBD_REP_FLAG_ERROR | 6;
/// Error reply: the server is shutting down.
pub const NBD_REP_ERR_SHUTDOWN: u32 = NBD_REP_FLAG_ERROR | 7;
/// Error reply: the client must request block size constraints.
pub const NBD_REP_ERR_BLOCK_SIZE_REQD: u32 = NBD_REP_FLAG_ERROR | 8;
/// Error reply: the request or its reply is too large.
pub const NBD_REP_ERR_TOO_BIG: u32 = NBD_REP_FLAG_ERROR | 9;

/// `NBD_REP_INFO` type: export size and transmission flags.
pub const NBD_INFO_EXPORT: u16 = 0;
/// `NBD_REP_INFO` type: minimum, preferred and maximum block sizes.
pub const NBD_INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag: always set by a conforming server.
pub const NBD_FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: the server understands `NBD_CMD_FLUSH`.
pub const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: the server understands `NBD_CMD_FLAG_FUA`.
pub const NBD_FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: the server understands `NBD_CMD_TRIM`.
pub const NBD_FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: the server understands `NBD_CMD_WRITE_ZEROES`.
pub const NBD_FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: flushes and FUA writes are visible across connections.
pub const NBD_FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag: the server understands `NBD_CMD_FLAG_FAST_ZERO`.
pub const NBD_FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// Largest string the protocol allows (export names, context names, messages).
pub const MAX_STRING: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Transmission phase
// ---------------------------------------------------------------------------------------------

/// Prefixes every request.
pub const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefixes a simple reply.
pub const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Prefixes a structured reply chunk.
pub const NBD_STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Structured reply flag: this chunk is the last of its reply.
pub const NBD_REPLY_FLAG_DONE: u16 = 1 << 0;

/// Chunk type: no payload; ends a reply.
pub const NBD_REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset (`NBD_CMD_READ`).
pub const NBD_REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: a run of zeroes at an offset (`NBD_CMD_READ`).
pub const NBD_REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk type: extents of one metadata context (`NBD_CMD_BLOCK_STATUS`).
pub const NBD_REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Bit 15 marks every chunk type that is an error.
pub const NBD_REPLY_TYPE_FLAG_ERROR: u16 = 1 << 15;
/// Chunk type: an error without an offset.
pub const NBD_REPLY_TYPE_ERROR: u16 = NBD_REPLY_TYPE_FLAG_ERROR | 1;
/// Chunk type: an error at an offset inside the request.
pub const NBD_REPLY_TYPE_ERROR_OFFSET: u16 = NBD_REPLY_TYPE_FLAG_ERROR | 2;

/// `base:allocation` flag: the extent is not allocated on the server.
pub const NBD_STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: the extent reads as zeroes.
pub const NBD_STATE_ZERO: u32 = 1 << 1;
/// `qemu:dirty-bitmap:NAME` flag: the extent is dirty in the bitmap.
pub const NBD_STATE_DIRTY: u32 = 1 << 0;

/// The metadata context that reports holes and zeroes.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// Prefix of QEMU's dirty bitmap metadata contexts: `qemu:dirty-bitmap:NAME`.
pub const QEMU_DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";

/// A transmission-phase command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ` (0).
    Read,
    /// `NBD_CMD_WRITE` (1).
    Write,
    /// `NBD_CMD_DISC` (2).
    Disconnect,
    /// `NBD_CMD_FLUSH` (3).
    Flush,
    /// `NBD_CMD_WRITE_ZEROES` (6).
    WriteZeroes,
    /// `NBD_CMD_BLOCK_STATUS` (7).
    BlockStatus,
}

impl Command {
    /// The command's type field on the wire.
    pub fn code(self) -> u16 {
        match self {
            Command::Read => 0,
            Command::Write => 1,
            Command::Disconnect => 2,
            Command::Flush => 3,
            Command::WriteZeroes => 6,
            Command::BlockStatus => 7,
        }
    }

    /// The command's name in the specification.
    pub fn name(self) -> &'static str {
        match self {
            Command::Read => "NBD_CMD_READ",
            Command::Write => "NBD_CMD_WRITE",
            Command::Disconnect => "NBD_CMD_DISC",
            Command::Flush => "NBD_CMD_FLUSH",
            Command::WriteZeroes => "NBD_CMD_WRITE_ZEROES",
            Command::BlockStatus => "NBD_CMD_BLOCK_STATUS",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of an option, for messages.
pub fn option_name(option: u32) -> &'static str {
    match option {
        NBD_OPT_EXPORT_NAME => "NBD_OPT_EXPORT_NAME",
        NBD_OPT_GO => "NBD_OPT_GO",
        NBD_OPT_STRUCTURED_REPLY => "NBD_OPT_STRUCTURED_REPLY",
        NBD_OPT_SET_META_CONTEXT => "NBD_OPT_SET_META_CONTEXT",
        _ => "an unknown option",
    }
}

/// The name of an option reply type, for messages.
pub fn reply_name(reply: u32) -> &'static str {
    match reply {
        NBD_REP_ACK => "NBD_REP_ACK",
        NBD_REP_INFO => "NBD_REP_INFO",
        NBD_REP_META_CONTEXT => "NBD_REP_META_CONTEXT",
        NBD_REP_ERR_UNSUP => "NBD_REP_ERR_UNSUP (option not supported)",
        NBD_REP_ERR_POLICY => "NBD_REP_ERR_POLICY (forbidden by server policy)",
        NBD_REP_ERR_INVALID => "NBD_REP_ERR_INVALID (invalid option)",
        NBD_REP_ERR_PLATFORM => "NBD_REP_ERR_PLATFORM (not supported on the server's platform)",
        NBD_REP_ERR_TLS_REQD => "NBD_REP_ERR_TLS_REQD (the server requires TLS)",
        NBD_REP_ERR_UNKNOWN => "NBD_REP_ERR_UNKNOWN (no such export)",
        NBD_REP_ERR_SHUTDOWN => "NBD_REP_ERR_SHUTDOWN (the server is shutting down)",
        NBD_REP_ERR_BLOCK_SIZE_REQD => "NBD_REP_ERR_BLOCK_SIZE_REQD (block sizes required)",
        NBD_REP_ERR_TOO_BIG => "NBD_REP_ERR_TOO_BIG (request too large)",
        r if r & NBD_REP_FLAG_ERROR != 0 => "an unknown error reply",
        _ => "an unknown reply type",
    }
}

/// The name of a structured reply chunk type, for messages.
pub fn chunk_name(kind: u16) -> &'static str {
    match kind {
        NBD_REPLY_TYPE_NONE => "NBD_REPLY_TYPE_NONE",
        NBD_REPLY_TYPE_OFFSET_DATA => "NBD_REPLY_TYPE_OFFSET_DATA",
        NBD_REPLY_TYPE_OFFSET_HOLE => "NBD_REPLY_TYPE_OFFSET_HOLE",
        NBD_REPLY_TYPE_BLOCK_STATUS => "NBD_REPLY_TYPE_BLOCK_STATUS",
        NBD_REPLY_TYPE_ERROR => "NBD_REPLY_TYPE_ERROR",
        NBD_REPLY_TYPE_ERROR_OFFSET => "NBD_REPLY_TYPE_ERROR_OFFSET",
        k if k & NBD_REPLY_TYPE_FLAG_ERROR != 0 => "an unknown error chunk",
        _ => "an unknown chunk type",
    }
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

/// An option request of fixed newstyle negotiation:
///
/// ```text
/// IHAVEOPT (u64) || option (u32) || length (u32) || data (length bytes)
/// ```
pub fn encode_option(option: u32, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    // Callers bound `data` by the protocol's string limits, far below 4 GiB.
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Size of an option reply header.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;

/// The header of an option reply:
///
/// ```text
/// OPTION_REPLY_MAGIC (u64) || option (u32) || reply type (u32) || length (u32)
/// ```
///
/// followed by `length` bytes of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The magic number as received; the caller checks it.
    pub magic: u64,
    /// The option this replies to, as the server echoes it.
    pub option: u32,
    /// `NBD_REP_*`.
    pub reply: u32,
    /// Length of the data that follows.
    pub length: u32,
}

impl OptionReplyHeader {
    /// Decodes the header's bytes.
    pub fn decode(b: &[u8; OPTION_REPLY_HEADER_LEN]) -> Self {
        OptionReplyHeader {
            magic: be_u64(&b[0..8]),
            option: be_u32(&b[8..12]),
            reply: be_u32(&b[12..16]),
            length: be_u32(&b[16..20]),
        }
    }
}

/// Size of a request header.
pub const REQUEST_HEADER_LEN: usize = 28;

/// A request of the transmission phase:
///
/// ```text
/// NBD_REQUEST_MAGIC (u32) || command flags (u16) || type (u16) || cookie (u64)
///     || offset (u64) || length (u32)
/// ```
///
/// followed by `length` bytes of data for `NBD_CMD_WRITE` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// `NBD_CMD_FLAG_*`.
    pub flags: u16,
    /// The command.
    pub command: Command,
    /// The value the server echoes in every reply to this request.
    pub cookie: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Byte length.
    pub length: u32,
}

impl RequestHeader {
    /// Appends the header's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.command.code().to_be_bytes());
        out.extend_from_slice(&self.cookie.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

/// Size of a simple reply header after its magic number.
pub const SIMPLE_REPLY_REST_LEN: usize = 12;
/// Size of a structured reply chunk header after its magic number.
pub const CHUNK_HEADER_REST_LEN: usize = 16;

/// The header of a structured reply chunk:
///
/// ```text
/// NBD_STRUCTURED_REPLY_MAGIC (u32) || flags (u16) || type (u16) || cookie (u64)
///     || length (u32)
/// ```
///
/// followed by `length` bytes of payload. The simple reply is
///
/// ```text
/// NBD_SIMPLE_REPLY_MAGIC (u32) || error (u32) || cookie (u64)
/// ```
///
/// followed, for a successful `NBD_CMD_READ` only, by the data requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// `NBD_REPLY_FLAG_*`.
    pub flags: u16,
    /// `NBD_REPLY_TYPE_*`.
    pub kind: u16,
    /// The cookie of the request this answers.
    pub cookie: u64,
    /// Length of the payload that follows.
    pub length: u32,
}

impl ChunkHeader {
    /// Decodes the header's bytes after the magic number.
    pub fn decode(b: &[u8; CHUNK_HEADER_REST_LEN]) -> Self {
        ChunkHeader {
            flags: be_u16(&b[0..2]),
            kind: be_u16(&b[2..4]),
            cookie: be_u64(&b[4..12]),
            length: be_u32(&b[12..16]),
        }
    }

    /// Whether this is the last chunk of its reply.
    pub fn done(&self) -> bool {
        self.flags & NBD_REPLY_FLAG_DONE != 0
    }
}

/// A big-endian `u16` from the first two bytes of `b`.
pub fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A big-endian `u32` from the first four bytes of `b`.
pub fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A big-endian `u64` from the first eight bytes of `b`.
pub fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header_layout() {
        let mut out = Vec::new();
        RequestHeader {
            flags: 0x0102,
            command: Command::BlockStatus,
            cookie: 0x1122_3344_5566_7788,
            offset: 0x0a0b_0c0d_0e0f_1011,
            length: 0xdead_beef,
        }
        .encode(&mut out);
        assert_eq!(out.len(), REQUEST_HEADER_LEN);
        assert_eq!(
            out,
            [
                0x25, 0x60, 0x95, 0x13, 0x01, 0x02, 0x00, 0x07, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
                0x77, 0x88, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0xde, 0xad, 0xbe, 0xef
            ]
        );
    }

    #[test]
    fn magics_spell_their_ascii_names() {
        assert_eq!(&NBD_MAGIC.to_be_bytes(), b"NBDMAGIC");
        assert_eq!(&IHAVEOPT.to_be_bytes(), b"IHAVEOPT");
    }

    #[test]
    fn option_layout() {
        let mut out = Vec::new();
        encode_option(NBD_OPT_GO, b"ab", &mut out);
        assert_eq!(&out[..8], b"IHAVEOPT");
        assert_eq!(&out[8..], &[0, 0, 0, 7, 0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn chunk_header_decodes() {
        let h = ChunkHeader::decode(&[0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 12]);
        assert_eq!(
            h,
            ChunkHeader {
                flags: NBD_REPLY_FLAG_DONE,
                kind: NBD_REPLY_TYPE_OFFSET_HOLE,
                cookie: 9,
                length: 12
            }
        );
        assert!(h.done());
    }
}
