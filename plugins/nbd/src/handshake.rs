//! The handshake: fixed newstyle negotiation from the server's greeting to the transmission
//! phase.
//!
//! ```text
//! S: NBDMAGIC (u64) || IHAVEOPT (u64) || handshake flags (u16)
//! C: client flags (u32)
//! C: NBD_OPT_STRUCTURED_REPLY            S: NBD_REP_ACK | NBD_REP_ERR_UNSUP
//! C: NBD_OPT_SET_META_CONTEXT (if any)   S: NBD_REP_META_CONTEXT* || NBD_REP_ACK
//! C: NBD_OPT_GO + NBD_INFO_BLOCK_SIZE    S: NBD_REP_INFO* || NBD_REP_ACK
//! ```
//!
//! A server without `NBD_OPT_GO` gets `NBD_OPT_EXPORT_NAME` instead; a server without fixed
//! newstyle gets only that. Every option reply is bounded in size and in number, so a hostile
//! server cannot make the handshake allocate without limit or run forever.

use std::io::{Read, Write};

use crate::conn::Conn;
use crate::error::{NbdError, NbdErrorKind};
use crate::wire::{
    CLISERV_MAGIC, IHAVEOPT, MAX_STRING, NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES,
    NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_HAS_FLAGS, NBD_FLAG_NO_ZEROES, NBD_INFO_BLOCK_SIZE,
    NBD_INFO_EXPORT, NBD_MAGIC, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_SET_META_CONTEXT,
    NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NBD_REP_ERR_SHUTDOWN, NBD_REP_ERR_TLS_REQD,
    NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP, NBD_REP_FLAG_ERROR, NBD_REP_INFO, NBD_REP_META_CONTEXT,
    OPTION_REPLY_HEADER_LEN, OPTION_REPLY_MAGIC, OptionReplyHeader, be_u16, be_u32, be_u64,
    encode_option, option_name, reply_name,
};

/// Largest option reply payload accepted. The protocol's replies carry at most a 4096-byte
/// string and a few fixed fields; the margin leaves room for information types this client
/// skips. Guards against a server making the client allocate by announcing a huge reply.
const MAX_OPTION_REPLY: u32 = 64 * 1024;

/// Most replies to one option. Informational replies cost the server nothing to repeat, so
/// without a limit a server could keep the handshake going forever.
const MAX_OPTION_REPLIES: usize = 1024;

/// Most metadata contexts one connection asks for.
const MAX_CONTEXTS: usize = 64;

/// Largest block size a server may impose as the minimum, per the protocol.
const MAX_MINIMUM_BLOCK_SIZE: u32 = 64 * 1024;

/// The 124 zero bytes that follow `NBD_OPT_EXPORT_NAME`'s reply unless both sides agreed to
/// omit them.
const EXPORT_NAME_ZEROES: usize = 124;

/// How to connect: which export, which metadata contexts, which extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The export's name; empty for the server's default export.
    pub export: String,
    /// Metadata contexts to select for block status queries, for example `base:allocation`
    /// and `qemu:dirty-bitmap:NAME`. Connecting fails if the server does not select one.
    pub contexts: Vec<String>,
    /// Whether to ask for structured replies (default on). Without them reads cannot skip
    /// holes and block status is unavailable; turning them off is for servers that mishandle
    /// them, and for tests.
    pub structured_replies: bool,
}

impl ConnectOptions {
    /// Options for the export `export`, with structured replies and no metadata contexts.
    pub fn new(export: impl Into<String>) -> Self {
        ConnectOptions {
            export: export.into(),
            contexts: Vec::new(),
            structured_replies: true,
        }
    }

    /// Adds a metadata context to select.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.contexts.push(context.into());
        self
    }

    /// Sets whether to ask for structured replies.
    pub fn structured_replies(mut self, on: bool) -> Self {
        self.structured_replies = on;
        self
    }
}

/// The block size constraints a server advertised with `NBD_INFO_BLOCK_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Every request's offset and length must be a multiple of this (a power of two).
    pub minimum: u32,
    /// Requests aligned to this avoid read-modify-write on the server (a power of two).
    pub preferred: u32,
    /// Largest read, write or write-zeroes request the server accepts.
    pub maximum: u32,
}

/// A metadata context the server selected, with the id its block status chunks carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetaContext {
    pub(crate) id: u32,
    pub(crate) name: String,
}

/// What the handshake settled.
#[derive(Debug)]
pub(crate) struct Negotiated {
    pub(crate) size: u64,
    pub(crate) flags: u16,
    pub(crate) block_sizes: Option<BlockSizes>,
    pub(crate) structured: bool,
    pub(crate) contexts: Vec<MetaContext>,
}

/// Runs the handshake for `options` on `conn`.
pub(crate) fn negotiate<S: Read + Write>(
    conn: &mut Conn<S>,
    options: &ConnectOptions,
) -> Result<Negotiated, NbdError> {
    check_arguments(conn, options)?;
    let contexts = unique(&options.contexts);

    let greeting = conn.read_array::<18>(&"the server's greeting")?;
    if be_u64(&greeting[0..8]) != NBD_MAGIC {
        return Err(conn.protocol(
            &"the server's greeting",
            "it does not start with NBDMAGIC; this is not an NBD server",
        ));
    }
    match be_u64(&greeting[8..16]) {
        IHAVEOPT => {}
        CLISERV_MAGIC => {
            return Err(conn.error(NbdErrorKind::Unsupported {
                what: "newstyle negotiation (it offers only the obsolete oldstyle handshake)"
                    .into(),
            }));
        }
        other => {
            return Err(conn.protocol(
                &"the server's greeting",
                format!("unknown negotiation magic {other:#018x}"),
            ));
        }
    }
    let handshake_flags = be_u16(&greeting[16..18]);
    let fixed = handshake_flags & NBD_FLAG_FIXED_NEWSTYLE != 0;
    let no_zeroes = handshake_flags & NBD_FLAG_NO_ZEROES != 0;
    let mut client_flags = 0;
    if fixed {
        client_flags |= NBD_FLAG_C_FIXED_NEWSTYLE;
    }
    if no_zeroes {
        client_flags |= NBD_FLAG_C_NO_ZEROES;
    }
    // Sent together with the first option: see `Conn`.
    conn.queue().extend_from_slice(&client_flags.to_be_bytes());

    if !fixed && !contexts.is_empty() {
        return Err(conn.error(NbdErrorKind::Unsupported {
            what: "fixed newstyle negotiation, which metadata contexts need".into(),
        }));
    }

    let structured = fixed && options.structured_replies && structured_replies(conn)?;

    let mut granted = Vec::new();
    if !contexts.is_empty() {
        if !structured {
            return Err(conn.error(NbdErrorKind::Unsupported {
                what: "structured replies, which block status queries need".into(),
            }));
        }
        granted = set_meta_context(conn, &options.export, &contexts)?;
        for wanted in &contexts {
            if !granted.iter().any(|c| &c.name == wanted) {
                return Err(conn.error(NbdErrorKind::ContextNotGranted {
                    context: (*wanted).to_owned(),
                }));
            }
        }
    }

    let export = if fixed {
        match go(conn, &options.export)? {
            Some(export) => export,
            None => export_name(conn, &options.export, no_zeroes)?,
        }
    } else {
        export_name(conn, &options.export, no_zeroes)?
    };
    let during = if fixed {
        "NBD_OPT_GO"
    } else {
        "NBD_OPT_EXPORT_NAME"
    };
    if export.flags & NBD_FLAG_HAS_FLAGS == 0 {
        return Err(conn.protocol(
            &during,
            format!(
                "transmission flags {:#06x} lack NBD_FLAG_HAS_FLAGS",
                export.flags
            ),
        ));
    }
    Ok(Negotiated {
        size: export.size,
        flags: export.flags,
        block_sizes: export.block_sizes,
        structured,
        contexts: granted,
    })
}

fn check_arguments<S: Read + Write>(
    conn: &Conn<S>,
    options: &ConnectOptions,
) -> Result<(), NbdError> {
    let invalid = |detail: String| conn.error(NbdErrorKind::InvalidArgument { detail });
    if options.export.len() > MAX_STRING {
        return Err(invalid(format!(
            "the export name is {} bytes long; the protocol allows {MAX_STRING}",
            options.export.len()
        )));
    }
    if options.export.contains('\0') {
        return Err(invalid("the export name contains a NUL character".into()));
    }
    if options.contexts.len() > MAX_CONTEXTS {
        return Err(invalid(format!(
            "{} metadata contexts requested; at most {MAX_CONTEXTS} are supported",
            options.contexts.len()
        )));
    }
    for context in &options.contexts {
        if context.is_empty() || context.len() > MAX_STRING || context.contains('\0') {
            return Err(invalid(format!(
                "metadata context name {context:?} is empty, contains NUL or exceeds {MAX_STRING} bytes"
            )));
        }
        if !context.contains(':') {
            return Err(invalid(format!(
                "metadata context name {context:?} lacks a namespace (NAMESPACE:NAME)"
            )));
        }
    }
    Ok(())
}

/// The requested contexts without repeats, in order.
fn unique(contexts: &[String]) -> Vec<&str> {
    let mut unique: Vec<&str> = Vec::with_capacity(contexts.len());
    for c in contexts {
        if !unique.contains(&c.as_str()) {
            unique.push(c);
        }
    }
    unique
}

/// One option reply: its type and data.
struct OptionReply {
    reply: u32,
    data: Vec<u8>,
}

impl OptionReply {
    fn is_error(&self) -> bool {
        self.reply & NBD_REP_FLAG_ERROR != 0
    }

    /// The data of an error reply, as the message the protocol says it is.
    fn message(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

fn send_option<S: Read + Write>(
    conn: &mut Conn<S>,
    option: u32,
    data: &[u8],
) -> Result<(), NbdError> {
    encode_option(option, data, conn.queue());
    conn.send(&option_name(option))
}

fn read_option_reply<S: Read + Write>(
    conn: &mut Conn<S>,
    option: u32,
) -> Result<OptionReply, NbdError> {
    let during = option_name(option);
    let header = OptionReplyHeader::decode(&conn.read_array::<OPTION_REPLY_HEADER_LEN>(&during)?);
    if header.magic != OPTION_REPLY_MAGIC {
        return Err(conn.protocol(
            &during,
            format!("option reply magic {:#018x} is wrong", header.magic),
        ));
    }
    if header.option != option {
        return Err(conn.protocol(
            &during,
            format!("reply names option {} instead", header.option),
        ));
    }
    if header.length > MAX_OPTION_REPLY {
        return Err(conn.protocol(
            &during,
            format!(
                "{} reply of {} bytes exceeds the {MAX_OPTION_REPLY}-byte limit",
                reply_name(header.reply),
                header.length
            ),
        ));
    }
    let data = conn.read_vec(header.length as usize, &during)?;
    Ok(OptionReply {
        reply: header.reply,
        data,
    })
}

/// An error reply the client cannot work around.
fn refused<S: Read + Write>(conn: &Conn<S>, option: u32, reply: &OptionReply) -> NbdError {
    conn.error(NbdErrorKind::Refused {
        option: option_name(option),
        reply: reply.reply,
        message: reply.message(),
    })
}

/// A reply type that does not belong to the option.
fn unexpected<S: Read + Write>(conn: &Conn<S>, option: u32, reply: &OptionReply) -> NbdError {
    conn.protocol(
        &option_name(option),
        format!(
            "unexpected {} ({:#x})",
            reply_name(reply.reply),
            reply.reply
        ),
    )
}

/// An `NBD_REP_ACK` must carry no data.
fn check_ack<S: Read + Write>(
    conn: &Conn<S>,
    option: u32,
    reply: &OptionReply,
) -> Result<(), NbdError> {
    if reply.data.is_empty() {
        Ok(())
    } else {
        Err(conn.protocol(
            &option_name(option),
            format!("NBD_REP_ACK with {} bytes of data", reply.data.len()),
        ))
    }
}

/// Asks for structured replies; whether the server agreed.
fn structured_replies<S: Read + Write>(conn: &mut Conn<S>) -> Result<bool, NbdError> {
    send_option(conn, NBD_OPT_STRUCTURED_REPLY, &[])?;
    let reply = read_option_reply(conn, NBD_OPT_STRUCTURED_REPLY)?;
    match reply.reply {
        NBD_REP_ACK => {
            check_ack(conn, NBD_OPT_STRUCTURED_REPLY, &reply)?;
            Ok(true)
        }
        // Neither leaves a way forward: TLS is not spoken here, and a server shutting down
        // will refuse the rest too.
        NBD_REP_ERR_TLS_REQD | NBD_REP_ERR_SHUTDOWN => {
            Err(refused(conn, NBD_OPT_STRUCTURED_REPLY, &reply))
        }
        // Any other refusal means simple replies, which the client also speaks.
        _ if reply.is_error() => Ok(false),
        _ => Err(unexpected(conn, NBD_OPT_STRUCTURED_REPLY, &reply)),
    }
}

/// Selects `contexts` on `export`; the contexts the server selected.
///
/// ```text
/// C: export name length (u32) || export name || query count (u32)
///        || (query length (u32) || query)*
/// S: NBD_REP_META_CONTEXT: context id (u32) || context name     (repeated)
/// S: NBD_REP_ACK
/// ```
fn set_meta_context<S: Read + Write>(
    conn: &mut Conn<S>,
    export: &str,
    contexts: &[&str],
) -> Result<Vec<MetaContext>, NbdError> {
    const OPTION: u32 = NBD_OPT_SET_META_CONTEXT;
    let mut data = Vec::new();
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&(contexts.len() as u32).to_be_bytes());
    for context in contexts {
        data.extend_from_slice(&(context.len() as u32).to_be_bytes());
        data.extend_from_slice(context.as_bytes());
    }
    send_option(conn, OPTION, &data)?;

    let mut granted: Vec<MetaContext> = Vec::new();
    for _ in 0..MAX_OPTION_REPLIES {
        let reply = read_option_reply(conn, OPTION)?;
        match reply.reply {
            NBD_REP_META_CONTEXT => {
                if reply.data.len() < 4 || reply.data.len() > 4 + MAX_STRING {
                    return Err(conn.protocol(
                        &option_name(OPTION),
                        format!("NBD_REP_META_CONTEXT of {} bytes", reply.data.len()),
                    ));
                }
                let id = be_u32(&reply.data[0..4]);
                let Ok(name) = std::str::from_utf8(&reply.data[4..]) else {
                    return Err(conn.protocol(
                        &option_name(OPTION),
                        format!("metadata context {id} has a name that is not UTF-8"),
                    ));
                };
                if granted.iter().any(|c| c.id == id) {
                    return Err(conn.protocol(
                        &option_name(OPTION),
                        format!("metadata context id {id} selected twice"),
                    ));
                }
                granted.push(MetaContext {
                    id,
                    name: name.to_owned(),
                });
            }
            NBD_REP_ACK => {
                check_ack(conn, OPTION, &reply)?;
                return Ok(granted);
            }
            _ if reply.is_error() => return Err(refused(conn, OPTION, &reply)),
            _ => return Err(unexpected(conn, OPTION, &reply)),
        }
    }
    Err(conn.protocol(
        &option_name(OPTION),
        format!("more than {MAX_OPTION_REPLIES} replies"),
    ))
}

/// What the server said about the export.
struct ExportInfo {
    size: u64,
    flags: u16,
    block_sizes: Option<BlockSizes>,
}

/// Enters transmission with `NBD_OPT_GO`, asking for block sizes; `None` if the server does not
/// know the option.
///
/// ```text
/// C: export name length (u32) || export name || info count (u16) || NBD_INFO_BLOCK_SIZE (u16)
/// S: NBD_REP_INFO: NBD_INFO_EXPORT (u16) || size (u64) || transmission flags (u16)
/// S: NBD_REP_INFO: NBD_INFO_BLOCK_SIZE (u16) || minimum (u32) || preferred (u32) || maximum (u32)
/// S: NBD_REP_ACK
/// ```
fn go<S: Read + Write>(conn: &mut Conn<S>, export: &str) -> Result<Option<ExportInfo>, NbdError> {
    const OPTION: u32 = NBD_OPT_GO;
    let during = option_name(OPTION);
    let mut data = Vec::new();
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&NBD_INFO_BLOCK_SIZE.to_be_bytes());
    send_option(conn, OPTION, &data)?;

    let mut size_flags: Option<(u64, u16)> = None;
    let mut block_sizes = None;
    for _ in 0..MAX_OPTION_REPLIES {
        let reply = read_option_reply(conn, OPTION)?;
        match reply.reply {
            NBD_REP_INFO => {
                let d = &reply.data;
                if d.len() < 2 {
                    return Err(conn.protocol(&during, "NBD_REP_INFO without an information type"));
                }
                match be_u16(&d[0..2]) {
                    NBD_INFO_EXPORT => {
                        if d.len() != 12 {
                            return Err(conn.protocol(
                                &during,
                                format!("NBD_INFO_EXPORT of {} bytes, not 12", d.len()),
                            ));
                        }
                        size_flags = Some((be_u64(&d[2..10]), be_u16(&d[10..12])));
                    }
                    NBD_INFO_BLOCK_SIZE => {
                        if d.len() != 14 {
                            return Err(conn.protocol(
                                &during,
                                format!("NBD_INFO_BLOCK_SIZE of {} bytes, not 14", d.len()),
                            ));
                        }
                        let sizes = BlockSizes {
                            minimum: be_u32(&d[2..6]),
                            preferred: be_u32(&d[6..10]),
                            maximum: be_u32(&d[10..14]),
                        };
                        check_block_sizes(&sizes)
                            .map_err(|detail| conn.protocol(&during, detail))?;
                        block_sizes = Some(sizes);
                    }
                    // Names, descriptions and later additions: not needed.
                    _ => {}
                }
            }
            NBD_REP_ACK => {
                check_ack(conn, OPTION, &reply)?;
                let Some((size, flags)) = size_flags else {
                    return Err(conn.protocol(&during, "NBD_REP_ACK before NBD_INFO_EXPORT"));
                };
                return Ok(Some(ExportInfo {
                    size,
                    flags,
                    block_sizes,
                }));
            }
            NBD_REP_ERR_UNSUP => return Ok(None),
            NBD_REP_ERR_UNKNOWN => {
                return Err(conn.error(NbdErrorKind::UnknownExport {
                    message: reply.message(),
                }));
            }
            _ if reply.is_error() => return Err(refused(conn, OPTION, &reply)),
            _ => return Err(unexpected(conn, OPTION, &reply)),
        }
    }
    Err(conn.protocol(&during, format!("more than {MAX_OPTION_REPLIES} replies")))
}

/// The constraints the protocol puts on advertised block sizes.
fn check_block_sizes(s: &BlockSizes) -> Result<(), String> {
    if !s.minimum.is_power_of_two() || s.minimum > MAX_MINIMUM_BLOCK_SIZE {
        return Err(format!(
            "minimum block size {} is not a power of two up to {MAX_MINIMUM_BLOCK_SIZE}",
            s.minimum
        ));
    }
    if !s.preferred.is_power_of_two() || s.preferred < s.minimum {
        return Err(format!(
            "preferred block size {} is not a power of two at least the minimum {}",
            s.preferred, s.minimum
        ));
    }
    if s.maximum < s.minimum || (s.maximum != u32::MAX && !s.maximum.is_multiple_of(s.minimum)) {
        return Err(format!(
            "maximum block size {} is not a multiple of the minimum {}",
            s.maximum, s.minimum
        ));
    }
    Ok(())
}

/// Enters transmission with `NBD_OPT_EXPORT_NAME`, for servers without `NBD_OPT_GO`.
///
/// ```text
/// C: export name
/// S: size (u64) || transmission flags (u16) || 124 zero bytes (unless NBD_FLAG_C_NO_ZEROES)
/// ```
///
/// The server answers an unknown export by closing the connection.
fn export_name<S: Read + Write>(
    conn: &mut Conn<S>,
    export: &str,
    no_zeroes: bool,
) -> Result<ExportInfo, NbdError> {
    const OPTION: u32 = NBD_OPT_EXPORT_NAME;
    send_option(conn, OPTION, export.as_bytes())?;
    let during = option_name(OPTION);
    let reply = match conn.read_array::<10>(&during) {
        Ok(reply) => reply,
        Err(e) if is_eof(&e) => {
            return Err(conn.error(NbdErrorKind::UnknownExport {
                message: "the server closed the connection when asked for the export".into(),
            }));
        }
        Err(e) => return Err(e),
    };
    if !no_zeroes {
        conn.discard(EXPORT_NAME_ZEROES as u64, &during)?;
    }
    Ok(ExportInfo {
        size: be_u64(&reply[0..8]),
        flags: be_u16(&reply[8..10]),
        block_sizes: None,
    })
}

fn is_eof(e: &NbdError) -> bool {
    matches!(e.kind(), NbdErrorKind::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_follow_the_protocol() {
        let ok = |min, pref, max| {
            check_block_sizes(&BlockSizes {
                minimum: min,
                preferred: pref,
                maximum: max,
            })
        };
        assert!(ok(1, 4096, 32 << 20).is_ok());
        assert!(ok(512, 4096, u32::MAX).is_ok());
        assert!(ok(0, 4096, 1 << 20).is_err());
        assert!(ok(3, 4096, 1 << 20).is_err());
        assert!(ok(1 << 17, 1 << 17, 1 << 20).is_err());
        assert!(ok(512, 256, 1 << 20).is_err());
        assert!(ok(512, 4096, 256).is_err());
        assert!(ok(512, 4096, 1000).is_err());
    }

    #[test]
    fn repeated_contexts_are_asked_once() {
        let c = vec!["a:x".to_owned(), "b:y".to_owned(), "a:x".to_owned()];
        assert_eq!(unique(&c), vec!["a:x", "b:y"]);
    }
}
