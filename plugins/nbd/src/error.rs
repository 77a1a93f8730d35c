//! Errors of an NBD session. Every error names the export it concerns and, for transmission
//! requests, the command, offset and length, so that a failed job says which disk and which
//! bytes were at fault and whether the server refused or misbehaved.

use std::fmt;
use std::io;

/// A failure of an NBD session: the export's name and what went wrong.
///
/// Displays as `NBD export "NAME": WHAT`, for example
/// `NBD export "disk0": NBD_CMD_READ of 65536 bytes at offset 1048576 failed on the server: EIO (5, input/output error): Input/output error`.
#[derive(Debug)]
pub struct NbdError {
    export: String,
    kind: NbdErrorKind,
}

impl NbdError {
    /// An error about the export named `export`.
    pub fn new(export: impl Into<String>, kind: NbdErrorKind) -> Self {
        NbdError {
            export: export.into(),
            kind,
        }
    }

    /// The name of the export the error concerns (empty for the server's default export).
    pub fn export(&self) -> &str {
        &self.export
    }

    /// What went wrong.
    pub fn kind(&self) -> &NbdErrorKind {
        &self.kind
    }

    /// Consumes the error, returning what went wrong.
    pub fn into_kind(self) -> NbdErrorKind {
        self.kind
    }

    /// Whether the connection can no longer be used after this error: the stream failed or the
    /// server broke the protocol, so the position in the byte stream is unknown.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.kind,
            NbdErrorKind::Io { .. } | NbdErrorKind::Protocol { .. } | NbdErrorKind::Broken
        )
    }
}

impl fmt::Display for NbdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NBD export {:?}: {}", self.export, self.kind)
    }
}

impl std::error::Error for NbdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// What went wrong in an NBD session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdErrorKind {
    /// Reading from or writing to the connection failed (including the server closing it, or
    /// a read timeout set on the stream expiring).
    #[error("connection failed during {during}: {source}")]
    Io {
        /// The step: the handshake, an option, or a request with its offset and length.
        during: String,
        /// The stream's error.
        #[source]
        source: io::Error,
    },
    /// The server sent something the protocol does not allow; the connection is abandoned.
    #[error("the server broke the NBD protocol during {during}: {detail}")]
    Protocol {
        /// The step: the handshake, an option, or a request with its offset and length.
        during: String,
        /// What was wrong with what the server sent.
        detail: String,
    },
    /// The server answered a request with an error; the connection stays usable.
    #[error(
        "{} failed on the server: {errno}{}",
        request_text(command, *offset, *length),
        message_suffix(message)
    )]
    Server {
        /// The command, for example `NBD_CMD_READ`.
        command: &'static str,
        /// The offset the server reported the error at, or the request's offset.
        offset: u64,
        /// The request's length.
        length: u64,
        /// The error the server reported.
        errno: Errno,
        /// The server's message, if it sent one.
        message: String,
    },
    /// The server refused an option of the handshake.
    #[error("the server refused {option}: {}{}", crate::wire::reply_name(*reply), message_suffix(message))]
    Refused {
        /// The option, for example `NBD_OPT_GO`.
        option: &'static str,
        /// The error reply type (`NBD_REP_ERR_*`).
        reply: u32,
        /// The server's message, if it sent one.
        message: String,
    },
    /// The server does not have the export.
    #[error("the server has no such export{}", message_suffix(message))]
    UnknownExport {
        /// The server's message, if it sent one.
        message: String,
    },
    /// The server did not select a metadata context the client asked for.
    #[error(
        "the server does not offer metadata context {context:?}{}",
        context_hint(context)
    )]
    ContextNotGranted {
        /// The context's name, for example `qemu:dirty-bitmap:b0`.
        context: String,
    },
    /// A block status query named a context not selected when connecting.
    #[error("metadata context {context:?} was not requested when connecting")]
    ContextNotNegotiated {
        /// The context's name.
        context: String,
    },
    /// The server lacks a feature the operation needs.
    #[error("the server does not support {what}")]
    Unsupported {
        /// The missing feature.
        what: String,
    },
    /// The range lies (partly) beyond the end of the export.
    #[error("{length} bytes at offset {offset} extend past the end of the export ({size} bytes)")]
    OutOfRange {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        length: u64,
        /// Size of the export.
        size: u64,
    },
    /// The range is not aligned to the server's minimum block size.
    #[error(
        "{length} bytes at offset {offset} are not aligned to the export's minimum block size of {minimum} bytes"
    )]
    Unaligned {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        length: u64,
        /// The server's minimum block size.
        minimum: u32,
    },
    /// The buffer of [`Client::read_ranges`](crate::Client::read_ranges) is not as long as the
    /// ranges to read add up to.
    #[error("the ranges to read add up to {ranges} bytes, but the buffer holds {buffer} bytes")]
    BufferLength {
        /// The sum of the ranges' lengths (saturated at `u64::MAX`).
        ranges: u64,
        /// The buffer's length.
        buffer: u64,
    },
    /// A write was attempted on a read-only export.
    #[error("the export is read-only")]
    ReadOnly,
    /// A block status walk produced more extents than one call may return.
    #[error("more than {limit} extents from offset {offset}; query the export in smaller windows")]
    TooManyExtents {
        /// Where the walk started.
        offset: u64,
        /// The limit.
        limit: usize,
    },
    /// An argument cannot be sent, for example a name longer than the protocol allows.
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// What is wrong with it.
        detail: String,
    },
    /// An earlier I/O or protocol error left the connection in an unknown state.
    #[error("the connection is unusable after an earlier failure; reconnect")]
    Broken,
    /// A request was made while queued reads wait to be taken.
    #[error("{count} queued reads must be taken before another request")]
    ReadsQueued {
        /// Reads queued and not yet taken.
        count: usize,
    },
}

/// `NBD_CMD_READ of 4096 bytes at offset 0`; commands without a range by name alone.
fn request_text(command: &str, offset: u64, length: u64) -> String {
    if command == crate::wire::Command::Flush.name() {
        command.to_owned()
    } else {
        format!("{command} of {length} bytes at offset {offset}")
    }
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn context_hint(context: &str) -> &'static str {
    if context.starts_with(crate::wire::QEMU_DIRTY_BITMAP_PREFIX) {
        " (check that the bitmap exists on the disk and that the server exports it)"
    } else {
        ""
    }
}

/// An error number from the server, as the protocol defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub u32);

impl Errno {
    /// Operation not permitted (for example a write to a read-only export).
    pub const EPERM: Errno = Errno(1);
    /// Input/output error.
    pub const EIO: Errno = Errno(5);
    /// Cannot allocate memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(22);
    /// No space left on device.
    pub const ENOSPC: Errno = Errno(28);
    /// Value too large.
    pub const EOVERFLOW: Errno = Errno(75);
    /// Operation not supported.
    pub const ENOTSUP: Errno = Errno(95);
    /// The server is shutting down.
    pub const ESHUTDOWN: Errno = Errno(108);

    /// The symbolic name and description, for a value the protocol defines.
    pub fn describe(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Errno::EPERM => ("EPERM", "operation not permitted"),
            Errno::EIO => ("EIO", "input/output error"),
            Errno::ENOMEM => ("ENOMEM", "cannot allocate memory"),
            Errno::EINVAL => ("EINVAL", "invalid argument"),
            Errno::ENOSPC => ("ENOSPC", "no space left on device"),
            Errno::EOVERFLOW => ("EOVERFLOW", "value too large"),
            Errno::ENOTSUP => ("ENOTSUP", "operation not supported"),
            Errno::ESHUTDOWN => ("ESHUTDOWN", "server is shutting down"),
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.describe() {
            Some((name, text)) => write!(f, "{name} ({}, {text})", self.0),
            None => write!(f, "error {} (not defined by the protocol)", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_export_command_and_offset() {
        let e = NbdError::new(
            "disk0",
            NbdErrorKind::Server {
                command: "NBD_CMD_READ",
                offset: 1_048_576,
                length: 65536,
                errno: Errno::EIO,
                message: "Input/output error".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "NBD export \"disk0\": NBD_CMD_READ of 65536 bytes at offset 1048576 failed on the \
             server: EIO (5, input/output error): Input/output error"
        );
        assert!(!e.is_fatal());
    }

    #[test]
    fn missing_bitmap_gets_a_hint() {
        let e = NbdError::new(
            "vda",
            NbdErrorKind::ContextNotGranted {
                context: "qemu:dirty-bitmap:b1".into(),
            },
        );
        let text = e.to_string();
        assert!(text.contains("\"qemu:dirty-bitmap:b1\""), "{text}");
        assert!(text.contains("bitmap exists"), "{text}");
    }

    #[test]
    fn unknown_errno_is_shown_by_number() {
        assert_eq!(
            Errno(4711).to_string(),
            "error 4711 (not defined by the protocol)"
        );
    }
}
