//! Whole-session tests against scripted servers: a stream that replays prepared server bytes
//! and records what the client sends. The scripts know the client's cookies (1, 2, 3, … in
//! request order), which lets them answer correctly, or wrongly on purpose: every malformed
//! reply must end in an error, never a panic, a hang or a large allocation.

use std::io::{self, Cursor, Read, Write};

use proptest::prelude::*;

use crate::wire::*;
use crate::{Client, Errno, NbdError, NbdErrorKind, ReadBuffer};

/// Replays `input` and records the client's bytes; end of input reads as a closed connection.
struct Mock {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
    /// Positions in `input` where a read stops short, as a socket's read stops at what has
    /// arrived so far.
    breaks: Vec<u64>,
}

impl Read for Mock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let at = self.input.position();
        let n = match self.breaks.iter().find(|&&b| b > at) {
            Some(&b) => buf.len().min((b - at) as usize),
            None => buf.len(),
        };
        self.input.read(&mut buf[..n])
    }
}

impl Write for Mock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Server bytes, built message by message.
#[derive(Clone, Default)]
struct Script(Vec<u8>);

const SIZE: u64 = 1 << 20;
const FLAGS: u16 = NBD_FLAG_HAS_FLAGS
    | NBD_FLAG_SEND_FLUSH
    | NBD_FLAG_SEND_WRITE_ZEROES
    | NBD_FLAG_SEND_TRIM
    | NBD_FLAG_SEND_FUA;

impl Script {
    fn greeting(flags: u16) -> Script {
        let mut s = Script::default();
        s.0.extend_from_slice(&NBD_MAGIC.to_be_bytes());
        s.0.extend_from_slice(&IHAVEOPT.to_be_bytes());
        s.0.extend_from_slice(&flags.to_be_bytes());
        s
    }

    fn raw(mut self, bytes: &[u8]) -> Script {
        self.0.extend_from_slice(bytes);
        self
    }

    fn option_reply(mut self, option: u32, reply: u32, data: &[u8]) -> Script {
        self.0.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
        self.0.extend_from_slice(&option.to_be_bytes());
        self.0.extend_from_slice(&reply.to_be_bytes());
        self.0.extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.0.extend_from_slice(data);
        self
    }

    fn meta_context(self, id: u32, name: &str) -> Script {
        let mut data = id.to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        self.option_reply(NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, &data)
    }

    fn info_export(self, size: u64, flags: u16) -> Script {
        let mut data = NBD_INFO_EXPORT.to_be_bytes().to_vec();
        data.extend_from_slice(&size.to_be_bytes());
        data.extend_from_slice(&flags.to_be_bytes());
        self.option_reply(NBD_OPT_GO, NBD_REP_INFO, &data)
    }

    fn info_block_size(self, minimum: u32, preferred: u32, maximum: u32) -> Script {
        let mut data = NBD_INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for v in [minimum, preferred, maximum] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        self.option_reply(NBD_OPT_GO, NBD_REP_INFO, &data)
    }

    /// A whole successful handshake: structured replies, the given contexts, `NBD_OPT_GO`.
    fn handshake(contexts: &[(u32, &str)], size: u64, flags: u16) -> Script {
        let mut s = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES).option_reply(
            NBD_OPT_STRUCTURED_REPLY,
            NBD_REP_ACK,
            &[],
        );
        if !contexts.is_empty() {
            for (id, name) in contexts {
                s = s.meta_context(*id, name);
            }
            s = s.option_reply(NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, &[]);
        }
        s.info_export(size, flags)
            .info_block_size(512, 4096, 1 << 20)
            .option_reply(NBD_OPT_GO, NBD_REP_ACK, &[])
    }

    fn simple(mut self, error: u32, cookie: u64, data: &[u8]) -> Script {
        self.0
            .extend_from_slice(&NBD_SIMPLE_REPLY_MAGIC.to_be_bytes());
        self.0.extend_from_slice(&error.to_be_bytes());
        self.0.extend_from_slice(&cookie.to_be_bytes());
        self.0.extend_from_slice(data);
        self
    }

    fn chunk(mut self, flags: u16, kind: u16, cookie: u64, payload: &[u8]) -> Script {
        self.0
            .extend_from_slice(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes());
        self.0.extend_from_slice(&flags.to_be_bytes());
        self.0.extend_from_slice(&kind.to_be_bytes());
        self.0.extend_from_slice(&cookie.to_be_bytes());
        self.0
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.0.extend_from_slice(payload);
        self
    }

    fn data(self, flags: u16, cookie: u64, offset: u64, data: &[u8]) -> Script {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(data);
        self.chunk(flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, &p)
    }

    fn hole(self, flags: u16, cookie: u64, offset: u64, size: u32) -> Script {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(&size.to_be_bytes());
        self.chunk(flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, &p)
    }

    fn done(self, cookie: u64) -> Script {
        self.chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, &[])
    }

    fn error(self, flags: u16, cookie: u64, errno: u32, message: &str) -> Script {
        let mut p = errno.to_be_bytes().to_vec();
        p.extend_from_slice(&(message.len() as u16).to_be_bytes());
        p.extend_from_slice(message.as_bytes());
        self.chunk(flags, NBD_REPLY_TYPE_ERROR, cookie, &p)
    }

    fn error_offset(self, flags: u16, cookie: u64, errno: u32, offset: u64) -> Script {
        let mut p = errno.to_be_bytes().to_vec();
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&offset.to_be_bytes());
        self.chunk(flags, NBD_REPLY_TYPE_ERROR_OFFSET, cookie, &p)
    }

    fn status(self, flags: u16, cookie: u64, id: u32, extents: &[(u32, u32)]) -> Script {
        let mut p = id.to_be_bytes().to_vec();
        for (length, status) in extents {
            p.extend_from_slice(&length.to_be_bytes());
            p.extend_from_slice(&status.to_be_bytes());
        }
        self.chunk(flags, NBD_REPLY_TYPE_BLOCK_STATUS, cookie, &p)
    }

    fn mock(self) -> Mock {
        Mock {
            input: Cursor::new(self.0),
            output: Vec::new(),
            breaks: Vec::new(),
        }
    }

    fn connect(self, contexts: &[&str]) -> Result<Client<Mock>, NbdError> {
        Client::connect(self.mock(), "disk", contexts)
    }
}

/// A client connected to a scripted server with `base:allocation` (id 7) whose transmission
/// replies follow `replies`.
fn client_with(replies: impl FnOnce(Script) -> Script) -> Client<Mock> {
    replies(Script::handshake(&[(7, BASE_ALLOCATION)], SIZE, FLAGS))
        .connect(&[BASE_ALLOCATION])
        .expect("the scripted handshake succeeds")
}

/// Checks that `e` is fatal and names the request it happened `during`, and that the
/// client refuses the next read as broken.
fn assert_broke(client: &mut Client<Mock>, name: &str, e: &NbdError, during: &str) {
    assert!(e.is_fatal(), "{name}: {e}");
    assert!(e.to_string().contains(during), "{name}: {e}");
    let again = client.read(0, &mut [0u8; 512]).unwrap_err();
    assert!(
        matches!(again.kind(), NbdErrorKind::Broken),
        "{name}: {again}"
    );
}

fn protocol_detail(e: &NbdError) -> &str {
    match e.kind() {
        NbdErrorKind::Protocol { detail, .. } => detail,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// The requests the client sent after the handshake, as (type, cookie, offset, length).
fn requests<B: ReadBuffer<Mock>>(client: &Client<Mock, B>) -> Vec<(u16, u64, u64, u32)> {
    let out = &client.get_ref().output;
    let start = out
        .windows(4)
        .position(|w| w == NBD_REQUEST_MAGIC.to_be_bytes())
        .unwrap_or(out.len());
    let mut rest = &out[start..];
    let mut found = Vec::new();
    while rest.len() >= REQUEST_HEADER_LEN {
        assert_eq!(be_u32(rest), NBD_REQUEST_MAGIC);
        let kind = be_u16(&rest[6..]);
        let length = be_u32(&rest[24..]);
        found.push((kind, be_u64(&rest[8..]), be_u64(&rest[16..]), length));
        let payload = if kind == Command::Write.code() {
            length as usize
        } else {
            0
        };
        rest = &rest[REQUEST_HEADER_LEN + payload..];
    }
    found
}

mod handshake {
    use super::*;

    #[test]
    fn negotiates_structured_replies_contexts_and_block_sizes() {
        let client = Script::handshake(
            &[(7, BASE_ALLOCATION), (9, "qemu:dirty-bitmap:b0")],
            SIZE,
            FLAGS,
        )
        .connect(&[BASE_ALLOCATION, "qemu:dirty-bitmap:b0"])
        .unwrap();
        assert_eq!(client.size(), SIZE);
        assert!(!client.read_only());
        assert!(client.can_flush() && client.can_write_zeroes() && client.can_trim());
        assert!(client.can_fua() && !client.can_fast_zero() && !client.can_multi_conn());
        assert!(client.structured_replies());
        assert_eq!(client.block_sizes().unwrap().minimum, 512);
        assert_eq!(
            client.contexts().collect::<Vec<_>>(),
            [BASE_ALLOCATION, "qemu:dirty-bitmap:b0"]
        );

        // Client flags and the three options, in order, each well formed.
        let out = &client.get_ref().output;
        assert_eq!(
            be_u32(out),
            NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES
        );
        let mut rest = &out[4..];
        let mut options = Vec::new();
        while !rest.is_empty() {
            assert_eq!(be_u64(rest), IHAVEOPT);
            let len = be_u32(&rest[12..]) as usize;
            options.push((be_u32(&rest[8..]), rest[16..16 + len].to_vec()));
            rest = &rest[16 + len..];
        }
        let names: Vec<u32> = options.iter().map(|o| o.0).collect();
        assert_eq!(
            names,
            [
                NBD_OPT_STRUCTURED_REPLY,
                NBD_OPT_SET_META_CONTEXT,
                NBD_OPT_GO
            ]
        );
        let mut meta = Vec::new();
        meta.extend_from_slice(&4u32.to_be_bytes());
        meta.extend_from_slice(b"disk");
        meta.extend_from_slice(&2u32.to_be_bytes());
        meta.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
        meta.extend_from_slice(BASE_ALLOCATION.as_bytes());
        meta.extend_from_slice(&20u32.to_be_bytes());
        meta.extend_from_slice(b"qemu:dirty-bitmap:b0");
        assert_eq!(options[1].1, meta);
        assert_eq!(options[2].1, b"\0\0\0\x04disk\0\x01\0\x03");
    }

    #[test]
    fn unknown_export_is_reported_with_the_servers_message() {
        let e = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &[])
            .option_reply(
                NBD_OPT_GO,
                NBD_REP_ERR_UNKNOWN,
                b"export 'disk' not present",
            )
            .connect(&[])
            .err()
            .unwrap();
        assert!(matches!(e.kind(), NbdErrorKind::UnknownExport { .. }));
        assert_eq!(
            e.to_string(),
            "NBD export \"disk\": the server has no such export: export 'disk' not present"
        );
    }

    #[test]
    fn a_context_the_server_does_not_select_is_named() {
        let e = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &[])
            .meta_context(1, BASE_ALLOCATION)
            .option_reply(NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, &[])
            .connect(&[BASE_ALLOCATION, "qemu:dirty-bitmap:missing"])
            .err()
            .unwrap();
        match e.kind() {
            NbdErrorKind::ContextNotGranted { context } => {
                assert_eq!(context, "qemu:dirty-bitmap:missing");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_carry_the_option_and_message() {
        let e = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &[])
            .option_reply(NBD_OPT_GO, NBD_REP_ERR_POLICY, b"not for you")
            .connect(&[])
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "NBD export \"disk\": the server refused NBD_OPT_GO: NBD_REP_ERR_POLICY (forbidden \
             by server policy): not for you"
        );
        let e = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_TLS_REQD, &[])
            .connect(&[])
            .err()
            .unwrap();
        assert!(matches!(e.kind(), NbdErrorKind::Refused { .. }), "{e}");
    }

    #[test]
    fn without_structured_replies_reads_use_simple_replies() {
        let data: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
        let mut client = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP, &[])
            .info_export(SIZE, FLAGS)
            .option_reply(NBD_OPT_GO, NBD_REP_ACK, &[])
            .simple(0, 1, &data)
            .simple(Errno::EIO.0, 2, &[])
            .connect(&[])
            .unwrap();
        assert!(!client.structured_replies());
        assert_eq!(client.block_sizes(), None);
        let mut buf = vec![1u8; 512];
        client.read(4096, &mut buf).unwrap();
        assert_eq!(buf, data);
        let e = client.read(0, &mut buf).unwrap_err();
        assert!(matches!(
            e.kind(),
            NbdErrorKind::Server {
                errno: Errno::EIO,
                ..
            }
        ));
    }

    #[test]
    fn contexts_need_structured_replies() {
        let e = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP, &[])
            .connect(&[BASE_ALLOCATION])
            .err()
            .unwrap();
        assert!(matches!(e.kind(), NbdErrorKind::Unsupported { .. }), "{e}");
    }

    #[test]
    fn falls_back_to_export_name_without_go() {
        let mut tail = 4096u64.to_be_bytes().to_vec();
        tail.extend_from_slice(&(NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY).to_be_bytes());
        let client = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &[])
            .option_reply(NBD_OPT_GO, NBD_REP_ERR_UNSUP, &[])
            .raw(&tail)
            .connect(&[])
            .unwrap();
        assert_eq!(client.size(), 4096);
        assert!(client.read_only());
    }

    #[test]
    fn speaks_plain_newstyle_with_the_zero_padding() {
        let mut tail = 8192u64.to_be_bytes().to_vec();
        tail.extend_from_slice(&NBD_FLAG_HAS_FLAGS.to_be_bytes());
        tail.extend_from_slice(&[0; 124]);
        let client = Script::greeting(0).raw(&tail).connect(&[]).unwrap();
        assert_eq!(client.size(), 8192);
        assert!(!client.structured_replies());
        // Client flags 0, then NBD_OPT_EXPORT_NAME straight away.
        let out = &client.get_ref().output;
        assert_eq!(be_u32(out), 0);
        assert_eq!(be_u32(&out[12..]), NBD_OPT_EXPORT_NAME);
    }

    #[test]
    fn export_name_closing_means_no_such_export() {
        let e = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &[])
            .option_reply(NBD_OPT_GO, NBD_REP_ERR_UNSUP, &[])
            .connect(&[])
            .err()
            .unwrap();
        assert!(
            matches!(e.kind(), NbdErrorKind::UnknownExport { .. }),
            "{e}"
        );
    }

    #[test]
    fn oldstyle_and_strangers_are_refused() {
        let e = Script::default()
            .raw(&NBD_MAGIC.to_be_bytes())
            .raw(&CLISERV_MAGIC.to_be_bytes())
            .raw(&[0; 2])
            .connect(&[])
            .err()
            .unwrap();
        assert!(matches!(e.kind(), NbdErrorKind::Unsupported { .. }), "{e}");
        let e = Script::default()
            .raw(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .connect(&[])
            .err()
            .unwrap();
        assert!(protocol_detail(&e).contains("not an NBD server"), "{e}");
    }

    #[test]
    fn every_truncation_of_a_handshake_fails_cleanly() {
        let full = Script::handshake(&[(7, BASE_ALLOCATION)], SIZE, FLAGS).0;
        for cut in 0..full.len() {
            let e = Script(full[..cut].to_vec())
                .connect(&[BASE_ALLOCATION])
                .err()
                .unwrap_or_else(|| panic!("a handshake cut at {cut} bytes succeeded"));
            assert!(e.is_fatal(), "cut at {cut}: {e}");
        }
    }

    #[test]
    fn malformed_option_replies_are_protocol_errors() {
        let base = || {
            Script::greeting(NBD_FLAG_FIXED_NEWSTYLE).option_reply(
                NBD_OPT_STRUCTURED_REPLY,
                NBD_REP_ACK,
                &[],
            )
        };
        let cases: Vec<(&str, Script)> = vec![
            (
                "huge reply",
                base()
                    .raw(&OPTION_REPLY_MAGIC.to_be_bytes())
                    .raw(&[0, 0, 0, 7, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff]),
            ),
            (
                "wrong option echoed",
                base().option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &[]),
            ),
            (
                "ack before export info",
                base().option_reply(NBD_OPT_GO, NBD_REP_ACK, &[]),
            ),
            (
                "short export info",
                base().option_reply(NBD_OPT_GO, NBD_REP_INFO, &[0, 0, 1, 2, 3]),
            ),
            ("bad block sizes", base().info_block_size(3, 4096, 1 << 20)),
            (
                "ack with data",
                base()
                    .info_export(SIZE, FLAGS)
                    .option_reply(NBD_OPT_GO, NBD_REP_ACK, b"x"),
            ),
            (
                "no HAS_FLAGS",
                base().info_export(SIZE, NBD_FLAG_SEND_FLUSH).option_reply(
                    NBD_OPT_GO,
                    NBD_REP_ACK,
                    &[],
                ),
            ),
            (
                "unexpected reply type",
                base().option_reply(NBD_OPT_GO, NBD_REP_META_CONTEXT, &[0; 8]),
            ),
            ("bad magic", base().raw(&[0x55; 20])),
        ];
        for (name, script) in cases {
            let e = script
                .connect(&[])
                .err()
                .unwrap_or_else(|| panic!("{name}"));
            protocol_detail(&e);
        }
        let e = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &[])
            .meta_context(1, BASE_ALLOCATION)
            .meta_context(1, "qemu:dirty-bitmap:b0")
            .connect(&[BASE_ALLOCATION, "qemu:dirty-bitmap:b0"])
            .err()
            .unwrap();
        assert!(protocol_detail(&e).contains("twice"), "{e}");
    }

    #[test]
    fn endless_informational_replies_end_in_an_error() {
        let mut s = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE).option_reply(
            NBD_OPT_STRUCTURED_REPLY,
            NBD_REP_ACK,
            &[],
        );
        for _ in 0..1100 {
            s = s.info_export(SIZE, FLAGS);
        }
        let e = s.connect(&[]).err().unwrap();
        assert!(protocol_detail(&e).contains("more than"), "{e}");
    }

    #[test]
    fn bad_arguments_are_refused_before_sending() {
        let long = "x".repeat(MAX_STRING + 1);
        let e = Client::connect(Script::default().mock(), &long, &[])
            .err()
            .unwrap();
        assert!(matches!(e.kind(), NbdErrorKind::InvalidArgument { .. }));
        let e = Script::default().connect(&["nonamespace"]).err().unwrap();
        assert!(matches!(e.kind(), NbdErrorKind::InvalidArgument { .. }));
    }
}

mod read {
    use super::*;

    #[test]
    fn reassembles_out_of_order_data_and_holes() {
        let mut client = client_with(|s| {
            s.data(0, 1, 1024 + 512, &[0xbb; 512])
                .hole(0, 1, 1024, 512)
                .data(0, 1, 0, &[0xaa; 1024])
                .error_offset(0, 1, Errno::EIO.0, 1024) // ignored? no: reported
                .done(1)
        });
        let mut buf = vec![0x11; 2048];
        let e = client.read(0, &mut buf).unwrap_err();
        match e.kind() {
            NbdErrorKind::Server { offset, errno, .. } => {
                assert_eq!((*offset, *errno), (1024, Errno::EIO));
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.is_fatal());

        let mut client = client_with(|s| {
            s.data(0, 1, 1024 + 512, &[0xbb; 512])
                .hole(0, 1, 1024, 512)
                .data(NBD_REPLY_FLAG_DONE, 1, 0, &[0xaa; 1024])
        });
        client.read(0, &mut buf).unwrap();
        assert_eq!(&buf[..1024], &[0xaa; 1024]);
        assert_eq!(&buf[1024..1536], &[0; 512]);
        assert_eq!(&buf[1536..], &[0xbb; 512]);
    }

    #[test]
    fn a_server_error_leaves_the_connection_usable() {
        let mut client = client_with(|s| {
            s.error(NBD_REPLY_FLAG_DONE, 1, Errno::EIO.0, "bad sector")
                .hole(NBD_REPLY_FLAG_DONE, 2, 0, 512)
        });
        let mut buf = [7u8; 512];
        let e = client.read(0, &mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            "NBD export \"disk\": NBD_CMD_READ of 512 bytes at offset 0 failed on the server: \
             EIO (5, input/output error): bad sector"
        );
        client.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0; 512]);
    }

    #[test]
    fn splits_reads_at_the_maximum_block_size() {
        // Maximum block size 1 MiB: a 1 MiB + 512 read takes two requests.
        let mut client = client_with(|s| s.hole(NBD_REPLY_FLAG_DONE, 1, 0, 1 << 20));
        let mut buf = vec![1u8; 1 << 20];
        client.read(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(requests(&client), [(Command::Read.code(), 1, 0, 1 << 20)]);

        let mut big = Script::handshake(&[], 4 << 20, FLAGS);
        big =
            big.hole(NBD_REPLY_FLAG_DONE, 1, 0, 1 << 20)
                .hole(NBD_REPLY_FLAG_DONE, 2, 1 << 20, 512);
        let mut client = big.connect(&[]).unwrap();
        let mut buf = vec![1u8; (1 << 20) + 512];
        client.read(0, &mut buf).unwrap();
        assert_eq!(
            requests(&client),
            [
                (Command::Read.code(), 1, 0, 1 << 20),
                (Command::Read.code(), 2, 1 << 20, 512)
            ]
        );
    }

    #[test]
    fn refuses_ranges_outside_the_export_or_unaligned() {
        let mut client = client_with(|s| s);
        let mut buf = [0u8; 512];
        let e = client.read(SIZE - 256, &mut buf).unwrap_err();
        assert!(matches!(e.kind(), NbdErrorKind::OutOfRange { .. }), "{e}");
        let e = client.read(u64::MAX - 10, &mut buf).unwrap_err();
        assert!(matches!(e.kind(), NbdErrorKind::OutOfRange { .. }), "{e}");
        let e = client.read(100, &mut buf).unwrap_err();
        assert!(
            matches!(e.kind(), NbdErrorKind::Unaligned { minimum: 512, .. }),
            "{e}"
        );
        let e = client.read(0, &mut buf[..100]).unwrap_err();
        assert!(matches!(e.kind(), NbdErrorKind::Unaligned { .. }), "{e}");
        assert!(requests(&client).is_empty());
        // Nothing was sent, so the connection is still fine.
        client.read(0, &mut []).unwrap();
    }

    /// Malformed replies to a 1024-byte read at offset 4096 (cookie 1).
    pub(super) fn malformed() -> Vec<(&'static str, Script)> {
        let s = Script::default;
        let mut big_error = Errno::EIO.0.to_be_bytes().to_vec();
        big_error.extend_from_slice(&100u16.to_be_bytes());
        big_error.extend_from_slice(&[b'x'; 10]);
        vec![
            ("wrong cookie", s().hole(NBD_REPLY_FLAG_DONE, 2, 4096, 1024)),
            (
                "bad magic",
                s().raw(&[0x12, 0x34, 0x56, 0x78]).raw(&[0; 16]),
            ),
            (
                "extended header magic",
                s().raw(&0x6e8a_278cu32.to_be_bytes()).raw(&[0; 28]),
            ),
            (
                "data before the request",
                s().data(NBD_REPLY_FLAG_DONE, 1, 4095, &[0; 2]),
            ),
            (
                "data past the request",
                s().data(NBD_REPLY_FLAG_DONE, 1, 4096 + 1000, &[0; 25]),
            ),
            (
                "data offset overflows",
                s().data(NBD_REPLY_FLAG_DONE, 1, u64::MAX - 3, &[0; 8]),
            ),
            (
                "hole past the request",
                s().hole(NBD_REPLY_FLAG_DONE, 1, 4096, 1025),
            ),
            ("hole of 0 bytes", s().hole(NBD_REPLY_FLAG_DONE, 1, 4096, 0)),
            (
                "hole of the wrong length",
                s().chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, 1, &[0; 16]),
            ),
            (
                "empty data chunk",
                s().chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 1, &[0; 8]),
            ),
            (
                "overlapping chunks",
                s().data(0, 1, 4096, &[0; 600])
                    .hole(NBD_REPLY_FLAG_DONE, 1, 4096 + 512, 512),
            ),
            (
                "not covering the request",
                s().hole(NBD_REPLY_FLAG_DONE, 1, 4096, 512),
            ),
            ("done with nothing", s().done(1)),
            (
                "none without done",
                s().chunk(0, NBD_REPLY_TYPE_NONE, 1, &[]),
            ),
            (
                "none with payload",
                s().chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 1, &[0]),
            ),
            (
                "unknown chunk type",
                s().chunk(NBD_REPLY_FLAG_DONE, 77, 1, &[0; 4]),
            ),
            (
                "block status in a read",
                s().status(NBD_REPLY_FLAG_DONE, 1, 7, &[(1024, 0)]),
            ),
            (
                "simple success in structured mode",
                s().simple(0, 1, &[0; 1024]),
            ),
            (
                "simple reply after chunks",
                s().hole(0, 1, 4096, 512).simple(5, 1, &[]),
            ),
            (
                "error without errno",
                s().error(NBD_REPLY_FLAG_DONE, 1, 0, ""),
            ),
            (
                "error message longer than the chunk",
                s().chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 1, &big_error),
            ),
            (
                "short error chunk",
                s().chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 1, &[0, 0, 0, 5]),
            ),
            (
                "error offset outside",
                s().error_offset(NBD_REPLY_FLAG_DONE, 1, 5, 0),
            ),
            (
                "huge error chunk",
                s().raw(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes()).raw(&[
                    0, 1, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff,
                ]),
            ),
            (
                "huge data chunk",
                s().raw(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes())
                    .raw(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff])
                    .raw(&4096u64.to_be_bytes()),
            ),
            (
                "truncated chunk",
                s().raw(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes())
                    .raw(&[0, 1, 0]),
            ),
            (
                "truncated data",
                s().raw(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes())
                    .raw(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 4, 8])
                    .raw(&4096u64.to_be_bytes())
                    .raw(&[0; 100]),
            ),
            ("silence", s()),
        ]
    }

    #[test]
    fn malformed_replies_fail_and_break_the_connection() {
        for (name, replies) in malformed() {
            let mut client =
                client_with(|s| s.raw(&replies.0).hole(NBD_REPLY_FLAG_DONE, 2, 0, 512));
            let mut buf = [0u8; 1024];
            let e = client
                .read(4096, &mut buf)
                .err()
                .unwrap_or_else(|| panic!("{name}: the read succeeded"));
            assert_broke(
                &mut client,
                name,
                &e,
                "NBD_CMD_READ of 1024 bytes at offset 4096",
            );
        }
    }

    #[test]
    fn scattered_tiny_chunks_are_bounded() {
        let mut client = client_with(|mut s| {
            // Every other byte of the first 1 MiB... cut short by the piece limit.
            for i in 0..70_000u64 {
                s = s.data(0, 1, i * 2, &[1]);
            }
            s
        });
        let minimum_ok = vec![0u8; 1 << 20];
        let mut buf = minimum_ok;
        let e = client.read(0, &mut buf).unwrap_err();
        assert!(protocol_detail(&e).contains("disjoint pieces"), "{e}");
    }
}

mod read_ranges {
    use super::*;

    /// Bytes that differ with their position in the export, so misplaced data shows.
    pub(super) fn bytes_at(offset: u64, len: usize) -> Vec<u8> {
        (offset..offset + len as u64)
            .map(|p| (p ^ (p >> 9) ^ (p >> 17)) as u8)
            .collect()
    }

    /// The read requests the client sent, as (cookie, offset, length).
    pub(super) fn reads(client: &Client<Mock>) -> Vec<(u64, u64, u32)> {
        requests(client)
            .into_iter()
            .filter(|r| r.0 == Command::Read.code())
            .map(|r| (r.1, r.2, r.3))
            .collect()
    }

    /// A handshake without structured replies, for an export of [`SIZE`] bytes without block
    /// size constraints.
    pub(super) fn simple_handshake() -> Script {
        Script::greeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP, &[])
            .info_export(SIZE, FLAGS)
            .option_reply(NBD_OPT_GO, NBD_REP_ACK, &[])
    }

    /// A client connected by [`simple_handshake`], whose transmission replies follow `replies`.
    fn simple_client_with(replies: impl FnOnce(Script) -> Script) -> Client<Mock> {
        let client = replies(simple_handshake()).connect(&[]).unwrap();
        assert!(!client.structured_replies());
        client
    }

    /// 20 distinct 512-byte blocks scattered over the export, not in order.
    fn scattered() -> Vec<(u64, u64)> {
        (0..20u64).map(|i| (i * 7919 % 2048 * 512, 512)).collect()
    }

    /// What reading `ranges` must give, with every byte as [`bytes_at`] has it.
    fn expected(ranges: &[(u64, u64)]) -> Vec<u8> {
        ranges
            .iter()
            .flat_map(|&(offset, length)| bytes_at(offset, length as usize))
            .collect()
    }

    #[test]
    fn replies_out_of_order_land_in_their_places() {
        // Overlapping and repeated ranges are fine; each is its own request.
        let ranges = [(8192, 1024), (0, 512), (65536, 2048), (0, 512)];
        let mut client = client_with(|s| {
            s.data(NBD_REPLY_FLAG_DONE, 3, 65536, &bytes_at(65536, 2048))
                .data(0, 1, 8192 + 512, &bytes_at(8192 + 512, 512))
                .data(NBD_REPLY_FLAG_DONE, 4, 0, &bytes_at(0, 512))
                .hole(NBD_REPLY_FLAG_DONE, 1, 8192, 512)
                .data(NBD_REPLY_FLAG_DONE, 2, 0, &bytes_at(0, 512))
        });
        let mut buf = vec![0x11; 4096];
        client.read_ranges(&ranges, &mut buf).unwrap();
        let mut want = vec![0; 512];
        want.extend(bytes_at(8192 + 512, 512));
        want.extend(bytes_at(0, 512));
        want.extend(bytes_at(65536, 2048));
        want.extend(bytes_at(0, 512));
        assert_eq!(buf, want);
        // All four went out before any reply was read: cookies in the order of the ranges.
        assert_eq!(
            reads(&client),
            [(1, 8192, 1024), (2, 0, 512), (3, 65536, 2048), (4, 0, 512)]
        );
    }

    #[test]
    fn chunks_of_different_replies_may_interleave() {
        let mut client = client_with(|s| {
            s.data(0, 2, 4096 + 512, &bytes_at(4096 + 512, 512))
                .data(0, 1, 0, &bytes_at(0, 512))
                .hole(0, 2, 4096, 512)
                .data(0, 1, 512, &bytes_at(512, 512))
                .done(2)
                .done(1)
        });
        let mut buf = vec![0x11; 2048];
        client
            .read_ranges(&[(0, 1024), (4096, 1024)], &mut buf)
            .unwrap();
        assert_eq!(&buf[..1024], bytes_at(0, 1024));
        assert_eq!(&buf[1024..1536], &[0; 512]);
        assert_eq!(&buf[1536..], bytes_at(4096 + 512, 512));
    }

    #[test]
    fn sixteen_requests_wait_for_their_replies_at_once() {
        // Newest first: answerable only if the first 16 requests are all in flight. Each reply
        // that ends lets one more request out.
        let ranges = scattered();
        let mut client = client_with(|mut s| {
            for cookie in (1..=16u64).rev().chain((17..=20).rev()) {
                let (offset, length) = ranges[cookie as usize - 1];
                s = s.data(
                    NBD_REPLY_FLAG_DONE,
                    cookie,
                    offset,
                    &bytes_at(offset, length as usize),
                );
            }
            s
        });
        let mut buf = vec![0x11; 20 * 512];
        client.read_ranges(&ranges, &mut buf).unwrap();
        assert_eq!(buf, expected(&ranges));
        let sent: Vec<(u64, u64, u32)> = ranges
            .iter()
            .zip(1..)
            .map(|(&(offset, length), cookie)| (cookie, offset, length as u32))
            .collect();
        assert_eq!(reads(&client), sent);
    }

    #[test]
    fn no_more_than_sixteen_requests_are_in_flight() {
        let ranges = scattered();
        let (offset, _) = ranges[16];
        let mut client =
            client_with(|s| s.data(NBD_REPLY_FLAG_DONE, 17, offset, &bytes_at(offset, 512)));
        let mut buf = vec![0; 20 * 512];
        let e = client.read_ranges(&ranges, &mut buf).unwrap_err();
        assert!(e.is_fatal(), "{e}");
        assert!(
            protocol_detail(&e).contains("reply for cookie 0x11, which matches no request"),
            "{e}"
        );
        assert!(
            e.to_string().contains(&format!(
                "NBD_CMD_READ of 512 bytes at offset {} and 15 more read requests in flight",
                ranges[0].0
            )),
            "{e}"
        );
        assert_eq!(reads(&client).len(), 16);
    }

    #[test]
    fn the_bytes_in_flight_are_bounded() {
        // Requests of 1 MiB, the server's maximum block size: 8 fit in the 8 MiB budget.
        const MIB: u64 = 1 << 20;
        let hole = |s: Script, cookie: u64| {
            s.hole(NBD_REPLY_FLAG_DONE, cookie, (cookie - 1) * MIB, MIB as u32)
        };
        let mut s = Script::handshake(&[], 16 * MIB, FLAGS);
        for cookie in (1..=8).rev().chain((9..=12).rev()) {
            s = hole(s, cookie);
        }
        let mut client = s.connect(&[]).unwrap();
        let mut buf = vec![1u8; 12 * MIB as usize];
        client.read(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        let sent: Vec<(u64, u64, u32)> = (1..=12).map(|c| (c, (c - 1) * MIB, 1 << 20)).collect();
        assert_eq!(reads(&client), sent);

        // A reply for the ninth request before any other ended: it was not sent yet.
        let mut client = hole(Script::handshake(&[], 16 * MIB, FLAGS), 9)
            .connect(&[])
            .unwrap();
        let e = client.read(0, &mut buf).unwrap_err();
        assert!(protocol_detail(&e).contains("matches no request"), "{e}");
        assert_eq!(reads(&client).len(), 8);
    }

    #[test]
    fn long_ranges_are_split_to_keep_several_requests_in_flight() {
        // No maximum block size advertised, yet requests stay at 2 MiB so that a long read
        // keeps the server busy; the last one takes the rest.
        const MIB: u64 = 1 << 20;
        let mut client = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)
            .option_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, &[])
            .info_export(8 * MIB, FLAGS)
            .option_reply(NBD_OPT_GO, NBD_REP_ACK, &[])
            .hole(NBD_REPLY_FLAG_DONE, 3, 4 * MIB, 512)
            .hole(NBD_REPLY_FLAG_DONE, 2, 2 * MIB, 2 << 20)
            .data(NBD_REPLY_FLAG_DONE, 1, 0, &bytes_at(0, 2 << 20))
            .connect(&[])
            .unwrap();
        let mut buf = vec![1u8; (4 << 20) + 512];
        client.read(0, &mut buf).unwrap();
        assert_eq!(&buf[..2 << 20], bytes_at(0, 2 << 20));
        assert!(buf[2 << 20..].iter().all(|&b| b == 0));
        assert_eq!(
            reads(&client),
            [(1, 0, 2 << 20), (2, 2 * MIB, 2 << 20), (3, 4 * MIB, 512)]
        );
    }

    #[test]
    fn a_reply_for_no_request_in_flight_breaks_the_client() {
        let s = Script::default;
        for (name, script) in [
            (
                "never sent",
                s().hole(NBD_REPLY_FLAG_DONE, 1, 0, 512)
                    .hole(NBD_REPLY_FLAG_DONE, 99, 4096, 512),
            ),
            (
                "already answered",
                s().hole(NBD_REPLY_FLAG_DONE, 1, 0, 512)
                    .hole(NBD_REPLY_FLAG_DONE, 1, 0, 512),
            ),
            (
                "simple reply with another cookie",
                s().hole(NBD_REPLY_FLAG_DONE, 1, 0, 512)
                    .simple(Errno::EIO.0, 3, &[]),
            ),
        ] {
            let mut client =
                client_with(|c| c.raw(&script.0).hole(NBD_REPLY_FLAG_DONE, 2, 4096, 512));
            let mut buf = [0u8; 1024];
            let e = client
                .read_ranges(&[(0, 512), (4096, 512)], &mut buf)
                .unwrap_err();
            assert!(
                protocol_detail(&e).contains("matches no request in flight"),
                "{name}: {e}"
            );
            // Named after the request still waiting.
            assert_broke(
                &mut client,
                name,
                &e,
                "during NBD_CMD_READ of 512 bytes at offset 4096:",
            );
        }
    }

    #[test]
    fn a_server_error_stops_new_requests_and_drains_those_in_flight() {
        let ranges = scattered();
        let data = |s: Script, cookie: u64| {
            let (offset, length) = ranges[cookie as usize - 1];
            s.data(
                NBD_REPLY_FLAG_DONE,
                cookie,
                offset,
                &bytes_at(offset, length as usize),
            )
        };
        let mut client = client_with(|mut s| {
            // The first reply makes room for request 17; then two requests fail, the later
            // one first, and the other 15 requests in flight succeed.
            s = data(s, 1);
            s = s.error_offset(NBD_REPLY_FLAG_DONE, 5, Errno::ENOSPC.0, ranges[4].0);
            s = s.error(NBD_REPLY_FLAG_DONE, 2, Errno::EIO.0, "bad sector");
            for cookie in (3..=17).filter(|&c| c != 5) {
                s = data(s, cookie);
            }
            // The next call.
            s.hole(NBD_REPLY_FLAG_DONE, 18, 0, 512)
        });
        let mut buf = vec![0x11; 20 * 512];
        let e = client.read_ranges(&ranges, &mut buf).unwrap_err();
        assert!(!e.is_fatal(), "{e}");
        // The failed request earliest in the ranges, not the first to fail.
        assert_eq!(
            e.to_string(),
            format!(
                "NBD export \"disk\": NBD_CMD_READ of 512 bytes at offset {} failed on the server: \
                 EIO (5, input/output error): bad sector",
                ranges[1].0
            )
        );
        // Nothing was sent after the first error, and every reply was read.
        assert_eq!(reads(&client).len(), 17);
        let mut block = [7u8; 512];
        client.read(0, &mut block).unwrap();
        assert_eq!(block, [0; 512]);
        assert_eq!(reads(&client)[17], (18, 0, 512));
    }

    #[test]
    fn simple_replies_may_arrive_out_of_order() {
        // Without block size constraints any length goes.
        let mut client = simple_client_with(|s| {
            s.simple(0, 3, &bytes_at(8192, 100))
                .simple(Errno::EIO.0, 2, &[])
                .simple(0, 1, &bytes_at(0, 300))
                .simple(0, 5, &bytes_at(8192, 100))
                .simple(0, 4, &bytes_at(0, 300))
        });
        let mut buf = vec![0x11; 600];
        let e = client
            .read_ranges(&[(0, 300), (5000, 200), (8192, 100)], &mut buf)
            .unwrap_err();
        assert!(!e.is_fatal(), "{e}");
        assert!(
            matches!(
                e.kind(),
                NbdErrorKind::Server {
                    errno: Errno::EIO,
                    offset: 5000,
                    ..
                }
            ),
            "{e}"
        );
        let ranges = [(0, 300), (8192, 100)];
        let mut buf = vec![0x11; 400];
        client.read_ranges(&ranges, &mut buf).unwrap();
        assert_eq!(buf, expected(&ranges));
        assert_eq!(
            reads(&client),
            [
                (1, 0, 300),
                (2, 5000, 200),
                (3, 8192, 100),
                (4, 0, 300),
                (5, 8192, 100)
            ]
        );
    }

    #[test]
    fn a_chunk_without_structured_replies_breaks_the_client() {
        let mut client = simple_client_with(|s| {
            s.simple(0, 2, &bytes_at(4096, 512))
                .hole(NBD_REPLY_FLAG_DONE, 1, 0, 512)
        });
        let mut buf = [0u8; 1024];
        let e = client
            .read_ranges(&[(0, 512), (4096, 512)], &mut buf)
            .unwrap_err();
        assert!(
            protocol_detail(&e).contains("structured replies were not negotiated"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("NBD_CMD_READ of 512 bytes at offset 0"),
            "{e}"
        );
    }

    #[test]
    fn bad_ranges_and_buffers_are_refused_before_sending() {
        let mut client = client_with(|s| s.hole(NBD_REPLY_FLAG_DONE, 1, 0, 512));
        let mut buf = [0u8; 1536];
        let cases: [(&[(u64, u64)], usize); 7] = [
            (&[(0, 512), (SIZE - 512, 1024)], 1536),
            (&[(0, 512), (u64::MAX - 511, 512)], 1024),
            (&[(0, 512), (100, 512)], 1024),
            (&[(0, 512), (512, 100)], 612),
            (&[(0, 512), (512, 512)], 1536),
            (&[(0, 512), (512, 512)], 512),
            (&[], 512),
        ];
        let mut kinds = Vec::new();
        for (ranges, len) in cases {
            let e = client.read_ranges(ranges, &mut buf[..len]).unwrap_err();
            assert!(!e.is_fatal(), "{e}");
            kinds.push(e.into_kind());
        }
        assert!(
            matches!(kinds[0], NbdErrorKind::OutOfRange { offset, length: 1024, size: SIZE } if offset == SIZE - 512)
        );
        assert!(matches!(kinds[1], NbdErrorKind::OutOfRange { .. }));
        assert!(matches!(
            kinds[2],
            NbdErrorKind::Unaligned {
                offset: 100,
                minimum: 512,
                ..
            }
        ));
        assert!(matches!(
            kinds[3],
            NbdErrorKind::Unaligned { length: 100, .. }
        ));
        assert!(matches!(
            kinds[4],
            NbdErrorKind::BufferLength {
                ranges: 1024,
                buffer: 1536
            }
        ));
        assert!(matches!(
            kinds[5],
            NbdErrorKind::BufferLength {
                ranges: 1024,
                buffer: 512
            }
        ));
        assert_eq!(
            kinds[6].to_string(),
            "the ranges to read add up to 0 bytes, but the buffer holds 512 bytes"
        );
        assert!(requests(&client).is_empty());
        // Empty reads send nothing either; the connection is still fine.
        client.read_ranges(&[], &mut []).unwrap();
        client.read_ranges(&[(512, 0), (SIZE, 0)], &mut []).unwrap();
        assert!(requests(&client).is_empty());
        client
            .read_ranges(&[(0, 512), (SIZE, 0)], &mut buf[..512])
            .unwrap();
        assert_eq!(reads(&client), [(1, 0, 512)]);
    }

    #[test]
    fn malformed_replies_break_a_pipelined_read() {
        // The malformed reply answers the first of two requests, after the second succeeded.
        for (name, replies) in super::read::malformed() {
            let mut client = client_with(|s| {
                s.hole(NBD_REPLY_FLAG_DONE, 2, 0, 512).raw(&replies.0).hole(
                    NBD_REPLY_FLAG_DONE,
                    3,
                    0,
                    512,
                )
            });
            let mut buf = [0u8; 1536];
            let e = client
                .read_ranges(&[(4096, 1024), (0, 512)], &mut buf)
                .err()
                .unwrap_or_else(|| panic!("{name}: the read succeeded"));
            assert_broke(
                &mut client,
                name,
                &e,
                "NBD_CMD_READ of 1024 bytes at offset 4096",
            );
        }
    }
}

mod queued_reads {
    use super::read_ranges::{bytes_at, reads};
    use super::*;
    use crate::MAX_QUEUED_READ;

    #[test]
    fn replies_of_a_later_read_land_in_its_buffer_while_an_earlier_one_is_taken() {
        // Cookies 1-2 belong to the first read, 3 to the second; the server answers the
        // second read first and interleaves the first's chunks around it.
        let mut client = client_with(|s| {
            s.data(0, 2, 8192, &bytes_at(8192, 256))
                .data(NBD_REPLY_FLAG_DONE, 3, 65536, &bytes_at(65536, 1024))
                .data(NBD_REPLY_FLAG_DONE, 1, 0, &bytes_at(0, 512))
                .hole(NBD_REPLY_FLAG_DONE, 2, 8192 + 256, 256)
        });
        client
            .queue_read(&[(0, 512), (8192, 512)], vec![0xAA; 7])
            .unwrap();
        client.queue_read(&[(65536, 1024)], Vec::new()).unwrap();
        assert_eq!(client.queued_reads(), 2);
        // Both reads' requests left before any reply was read.
        assert_eq!(
            reads(&client),
            [(1, 0, 512), (2, 8192, 512), (3, 65536, 1024)]
        );
        let first = client.take_read().unwrap();
        let mut want = bytes_at(0, 512);
        want.extend(bytes_at(8192, 256));
        want.extend([0; 256]);
        assert_eq!(first, want);
        assert_eq!(client.queued_reads(), 1);
        assert_eq!(client.take_read().unwrap(), bytes_at(65536, 1024));
        assert_eq!(client.queued_reads(), 0);
    }

    #[test]
    fn a_failed_read_leaves_the_next_one_and_the_connection_usable() {
        let mut client = client_with(|s| {
            s.error(NBD_REPLY_FLAG_DONE, 1, Errno::EIO.0, "bad sector")
                .data(NBD_REPLY_FLAG_DONE, 2, 4096, &bytes_at(4096, 512))
                // The next call.
                .hole(NBD_REPLY_FLAG_DONE, 3, 0, 512)
        });
        client.queue_read(&[(0, 512)], Vec::new()).unwrap();
        client.queue_read(&[(4096, 512)], Vec::new()).unwrap();
        let e = client.take_read().unwrap_err();
        assert!(!e.is_fatal(), "{e}");
        assert!(e.to_string().contains("bad sector"), "{e}");
        assert_eq!(client.take_read().unwrap(), bytes_at(4096, 512));
        let mut block = [7u8; 512];
        client.read(0, &mut block).unwrap();
        assert_eq!(block, [0; 512]);
    }

    #[test]
    fn later_reads_wait_for_room_in_the_window() {
        // Twenty 512-byte reads queued one at a time: sixteen go out at once, the rest as
        // replies make room, while the first read is taken.
        let mut client = client_with(|mut s| {
            for cookie in 1..=20u64 {
                let offset = (cookie - 1) * 512;
                s = s.data(NBD_REPLY_FLAG_DONE, cookie, offset, &bytes_at(offset, 512));
            }
            s
        });
        for i in 0..20u64 {
            client.queue_read(&[(i * 512, 512)], Vec::new()).unwrap();
        }
        assert_eq!(reads(&client).len(), 16);
        for i in 0..20u64 {
            assert_eq!(
                client.take_read().unwrap(),
                bytes_at(i * 512, 512),
                "read {i}"
            );
        }
        assert_eq!(reads(&client).len(), 20);
    }

    #[test]
    fn other_requests_wait_until_every_queued_read_is_taken() {
        let mut client = client_with(|s| s.hole(NBD_REPLY_FLAG_DONE, 1, 0, 512).done(2));
        client.queue_read(&[(0, 512)], Vec::new()).unwrap();
        let e = client.flush().unwrap_err();
        assert!(
            matches!(e.kind(), NbdErrorKind::ReadsQueued { count: 1 }),
            "{e}"
        );
        assert!(!e.is_fatal());
        let e = client.read(0, &mut [0; 512]).unwrap_err();
        assert!(
            matches!(e.kind(), NbdErrorKind::ReadsQueued { count: 1 }),
            "{e}"
        );
        assert_eq!(client.take_read().unwrap(), [0; 512]);
        client.flush().unwrap();
    }

    #[test]
    fn bad_queued_reads_are_refused_before_sending() {
        let mut client = client_with(|s| s);
        let e = client.take_read().unwrap_err();
        assert!(
            matches!(e.kind(), NbdErrorKind::InvalidArgument { .. }),
            "{e}"
        );
        let e = client
            .queue_read(&[(SIZE - 512, 1024)], Vec::new())
            .unwrap_err();
        assert!(matches!(e.kind(), NbdErrorKind::OutOfRange { .. }), "{e}");
        // Many ranges adding up past the limit, each within the export.
        let many = vec![(0, SIZE); (MAX_QUEUED_READ / SIZE + 1) as usize];
        let e = client.queue_read(&many, Vec::new()).unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        assert_eq!(client.queued_reads(), 0);
        assert!(requests(&client).is_empty());
    }

    #[test]
    fn a_broken_stream_fails_the_queued_reads() {
        // The server closes the connection in the middle of the second reply.
        let mut client = client_with(|s| {
            s.data(NBD_REPLY_FLAG_DONE, 1, 0, &bytes_at(0, 512))
                .raw(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes())
        });
        client.queue_read(&[(0, 512)], Vec::new()).unwrap();
        client.queue_read(&[(512, 512)], Vec::new()).unwrap();
        assert_eq!(client.take_read().unwrap(), bytes_at(0, 512));
        let e = client.take_read().unwrap_err();
        assert!(e.is_fatal(), "{e}");
        let again = client.take_read().unwrap_err();
        assert!(matches!(again.kind(), NbdErrorKind::Broken), "{again}");
    }
}

mod read_buffers {
    use super::read_ranges::{bytes_at, simple_handshake};
    use super::*;

    /// A buffer outside the client's memory, as far as the client can tell: it keeps its bytes
    /// to itself, takes payload from the mock's input directly (never through `Mock::read`),
    /// and counts how each byte reached it.
    #[derive(Debug, Default)]
    struct Outside {
        bytes: Vec<u8>,
        /// Bytes taken from the stream by `receive`.
        received: usize,
        /// Bytes copied in by `write_at`.
        written: usize,
        /// Bytes set to zero by `zero`.
        zeroed: usize,
        /// The method that fails, if any.
        failing: Option<&'static str>,
    }

    impl Outside {
        fn check(&self, method: &str) -> io::Result<()> {
            if self.failing == Some(method) {
                return Err(io::Error::other(format!("{method} refused")));
            }
            Ok(())
        }
    }

    impl ReadBuffer<Mock> for Outside {
        fn len(&self) -> usize {
            self.bytes.len()
        }

        fn resize(&mut self, len: usize) -> io::Result<()> {
            self.check("resize")?;
            // Bytes no reply filled show as 0xEE.
            self.bytes.resize(len, 0xEE);
            Ok(())
        }

        fn write_at(&mut self, at: usize, bytes: &[u8]) -> io::Result<()> {
            self.check("write_at")?;
            self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
            self.written += bytes.len();
            Ok(())
        }

        fn zero(&mut self, at: usize, len: usize) -> io::Result<()> {
            self.check("zero")?;
            self.bytes[at..at + len].fill(0);
            self.zeroed += len;
            Ok(())
        }

        fn receive(&mut self, stream: &mut Mock, at: usize, len: usize) -> io::Result<()> {
            self.check("receive")?;
            stream.input.read_exact(&mut self.bytes[at..at + len])?;
            self.received += len;
            Ok(())
        }

        fn read_at(&self, at: usize, out: &mut [u8]) -> io::Result<()> {
            self.check("read_at")?;
            out.copy_from_slice(&self.bytes[at..at + out.len()]);
            Ok(())
        }
    }

    /// Server bytes whose stream stops every read where read data starts, so that the
    /// client's read buffer never takes data in with a header: every data byte has to reach
    /// the read's buffer through `receive`.
    struct Paced {
        script: Script,
        breaks: Vec<u64>,
    }

    impl Paced {
        fn new(handshake: Script) -> Paced {
            Paced {
                script: handshake,
                breaks: Vec::new(),
            }
        }

        /// A successful simple reply to a read, with its data.
        fn simple(mut self, cookie: u64, data: &[u8]) -> Paced {
            let start = self.script.0.len() + 4 + SIMPLE_REPLY_REST_LEN;
            self.breaks.push(start as u64);
            self.script = self.script.simple(0, cookie, data);
            self
        }

        /// An `NBD_REPLY_TYPE_OFFSET_DATA` chunk.
        fn data(mut self, flags: u16, cookie: u64, offset: u64, data: &[u8]) -> Paced {
            let start = self.script.0.len() + 4 + CHUNK_HEADER_REST_LEN + 8;
            self.breaks.push(start as u64);
            self.script = self.script.data(flags, cookie, offset, data);
            self
        }

        fn map(mut self, f: impl FnOnce(Script) -> Script) -> Paced {
            self.script = f(self.script);
            self
        }

        fn connect(self, contexts: &[&str]) -> Client<Mock, Outside> {
            let mut mock = self.script.mock();
            mock.breaks = self.breaks;
            Client::connect(mock, "disk", contexts)
                .unwrap()
                .with_buffers::<Outside>()
                .unwrap()
        }
    }

    #[test]
    fn simple_replies_reach_the_buffer_through_receive() {
        let ranges = [(8192, 1024), (0, 512), (65536, 2048)];
        let mut client = Paced::new(simple_handshake())
            .simple(3, &bytes_at(65536, 2048))
            .simple(1, &bytes_at(8192, 1024))
            .simple(2, &bytes_at(0, 512))
            // The `read_ranges` below.
            .simple(4, &bytes_at(4096, 512))
            .connect(&[]);
        let garbage = Outside {
            bytes: vec![0xAA; 5],
            ..Outside::default()
        };
        client.queue_read(&ranges, garbage).unwrap();
        let read = client.take_read().unwrap();
        let mut want = bytes_at(8192, 1024);
        want.extend(bytes_at(0, 512));
        want.extend(bytes_at(65536, 2048));
        assert_eq!(read.bytes, want);
        assert_eq!((read.received, read.written, read.zeroed), (3584, 0, 0));
        // `read_ranges` reads through a spare buffer of the client's type and copies out.
        let mut block = [0u8; 512];
        client.read_ranges(&[(4096, 512)], &mut block).unwrap();
        assert_eq!(block, bytes_at(4096, 512)[..]);
        assert_eq!(client.spare.received, 512);
        let input = &client.get_ref().input;
        assert_eq!(input.position(), input.get_ref().len() as u64);
    }

    #[test]
    fn structured_chunks_out_of_order_and_holes_reach_the_buffer() {
        let mut client = Paced::new(Script::handshake(&[(7, BASE_ALLOCATION)], SIZE, FLAGS))
            .data(0, 2, 4096 + 512, &bytes_at(4096 + 512, 512))
            .data(0, 1, 512, &bytes_at(512, 512))
            .map(|s| s.hole(0, 2, 4096, 512))
            .data(0, 1, 0, &bytes_at(0, 512))
            .map(|s| s.done(2).done(1))
            .connect(&[BASE_ALLOCATION]);
        client
            .queue_read(&[(0, 1024), (4096, 1024)], Outside::default())
            .unwrap();
        let read = client.take_read().unwrap();
        let mut want = bytes_at(0, 1024);
        want.extend([0; 512]);
        want.extend(bytes_at(4096 + 512, 512));
        assert_eq!(read.bytes, want);
        assert_eq!((read.received, read.written, read.zeroed), (1536, 0, 512));
        let input = &client.get_ref().input;
        assert_eq!(input.position(), input.get_ref().len() as u64);
    }

    #[test]
    fn data_that_arrived_with_its_header_is_copied_in() {
        // Without breaks, the client's read buffer takes the first data bytes in with the
        // header; they are written in, and the rest is received.
        let mut client = simple_handshake()
            .simple(0, 1, &bytes_at(0, 1024))
            .connect(&[])
            .unwrap()
            .with_buffers::<Outside>()
            .unwrap();
        client.queue_read(&[(0, 1024)], Outside::default()).unwrap();
        let read = client.take_read().unwrap();
        assert_eq!(read.bytes, bytes_at(0, 1024));
        assert!(read.written > 0 && read.received > 0);
        assert_eq!(read.written + read.received, 1024);
    }

    #[test]
    fn buffers_cannot_change_while_reads_are_queued() {
        let mut client = client_with(|s| s.hole(NBD_REPLY_FLAG_DONE, 1, 0, 512));
        client.queue_read(&[(0, 512)], Vec::new()).unwrap();
        let e = client.with_buffers::<Outside>().unwrap_err();
        assert!(
            matches!(e.kind(), NbdErrorKind::ReadsQueued { count: 1 }),
            "{e}"
        );
        assert!(!e.is_fatal());
    }

    #[test]
    fn a_failing_buffer_fails_the_read() {
        let mut client = client_with(|s| s.hole(NBD_REPLY_FLAG_DONE, 1, 0, 512))
            .with_buffers::<Outside>()
            .unwrap();
        // Refused before anything is sent.
        let refusing = Outside {
            failing: Some("resize"),
            ..Outside::default()
        };
        let e = client.queue_read(&[(0, 512)], refusing).unwrap_err();
        assert!(matches!(e.kind(), NbdErrorKind::Io { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("sizing the read buffer to 512 bytes: resize refused"),
            "{e}"
        );
        assert!(requests(&client).is_empty());
        // In the middle of a reply: the rest of it is unread, so the client breaks.
        let refusing = Outside {
            failing: Some("zero"),
            ..Outside::default()
        };
        client.queue_read(&[(0, 512)], refusing).unwrap();
        let e = client.take_read().unwrap_err();
        assert!(
            e.to_string().contains(
                "zeroing a hole of NBD_CMD_READ of 512 bytes at offset 0 in the read buffer"
            ),
            "{e}"
        );
        assert!(e.is_fatal(), "{e}");
        let again = client.take_read().unwrap_err();
        assert!(matches!(again.kind(), NbdErrorKind::Broken), "{again}");
    }
}

mod write {
    use super::*;

    #[test]
    fn writes_zeroes_and_flushes_with_the_right_requests() {
        let mut client = client_with(|s| {
            s.simple(0, 1, &[])
                .done(2)
                .simple(0, 3, &[])
                .simple(0, 4, &[])
        });
        client.write(512, &[9; 1024]).unwrap();
        client.write_zeroes(4096, 2048).unwrap();
        client.flush().unwrap();
        client.write(0, &[]).unwrap();
        client.write_zeroes(0, 0).unwrap();
        let reqs = requests(&client);
        assert_eq!(
            reqs,
            [
                (Command::Write.code(), 1, 512, 1024),
                (Command::WriteZeroes.code(), 2, 4096, 2048),
                (Command::Flush.code(), 3, 0, 0),
            ]
        );
        let out = &client.get_ref().output;
        let first = out
            .windows(4)
            .position(|w| w == NBD_REQUEST_MAGIC.to_be_bytes())
            .unwrap();
        assert_eq!(
            &out[first + REQUEST_HEADER_LEN..first + REQUEST_HEADER_LEN + 1024],
            &[9; 1024]
        );
        client.disconnect().unwrap();
    }

    #[test]
    fn write_errors_name_the_offset() {
        let mut client = client_with(|s| {
            s.simple(Errno::ENOSPC.0, 1, &[]).error_offset(
                NBD_REPLY_FLAG_DONE,
                2,
                Errno::EIO.0,
                2048,
            )
        });
        let e = client.write(1024, &[0; 512]).unwrap_err();
        assert!(matches!(
            e.kind(),
            NbdErrorKind::Server {
                errno: Errno::ENOSPC,
                offset: 1024,
                ..
            }
        ));
        let e = client.write(1024, &[0; 2048]).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                NbdErrorKind::Server {
                    errno: Errno::EIO,
                    offset: 2048,
                    ..
                }
            ),
            "{e}"
        );
        // Data chunks make no sense in a write reply.
        let mut client = client_with(|s| s.hole(NBD_REPLY_FLAG_DONE, 1, 0, 512));
        let e = client.write(0, &[0; 512]).unwrap_err();
        assert!(
            protocol_detail(&e).contains("in reply to NBD_CMD_WRITE"),
            "{e}"
        );
    }

    #[test]
    fn zeroes_are_written_when_the_server_cannot_zero() {
        let mut client = Script::handshake(&[], 2 * SIZE, NBD_FLAG_HAS_FLAGS)
            .simple(0, 1, &[])
            .simple(0, 2, &[])
            .connect(&[])
            .unwrap();
        // Maximum block size 1 MiB: 1 MiB + 512 bytes takes two writes of zeroes.
        client.write_zeroes(0, (1 << 20) + 512).unwrap();
        assert_eq!(
            requests(&client),
            [
                (Command::Write.code(), 1, 0, 1 << 20),
                (Command::Write.code(), 2, 1 << 20, 512)
            ]
        );
        let out = &client.get_ref().output;
        let first = out
            .windows(4)
            .position(|w| w == NBD_REQUEST_MAGIC.to_be_bytes())
            .unwrap();
        assert!(
            out[first + REQUEST_HEADER_LEN..first + REQUEST_HEADER_LEN + (1 << 20)]
                .iter()
                .all(|&b| b == 0)
        );
        // No flush support: flush sends nothing.
        client.flush().unwrap();
        assert_eq!(requests(&client).len(), 2);
    }

    #[test]
    fn read_only_exports_refuse_writes_locally() {
        let mut client = Script::handshake(&[], SIZE, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY)
            .connect(&[])
            .unwrap();
        for e in [
            client.write(0, &[0; 512]).unwrap_err(),
            client.write_zeroes(0, 512).unwrap_err(),
        ] {
            assert!(matches!(e.kind(), NbdErrorKind::ReadOnly), "{e}");
        }
        assert!(requests(&client).is_empty());
    }
}

mod block_status {
    use super::*;

    const HOLE_ZERO: u32 = NBD_STATE_HOLE | NBD_STATE_ZERO;

    #[test]
    fn allocation_walks_short_answers_and_merges() {
        // The server answers for less than asked; the client asks again from where it stopped.
        let mut client = client_with(|s| {
            s.status(
                NBD_REPLY_FLAG_DONE,
                1,
                7,
                &[(4096, 0), (4096, 0), (8192, HOLE_ZERO)],
            )
            .status(
                NBD_REPLY_FLAG_DONE,
                2,
                7,
                &[(4096, HOLE_ZERO), (4096, NBD_STATE_HOLE)],
            )
            .status(0, 3, 7, &[(1 << 20, 0)])
            .done(3)
        });
        let extents = client.allocation(0, 32768).unwrap();
        let e = |offset, length, data, hole| crate::Extent {
            offset,
            length,
            data,
            hole,
        };
        assert_eq!(
            extents,
            [
                e(0, 8192, true, false),
                e(8192, 12288, false, true),
                e(20480, 4096, true, true),
                e(24576, 8192, true, false),
            ]
        );
        assert_eq!(
            requests(&client),
            [
                (Command::BlockStatus.code(), 1, 0, 32768),
                (Command::BlockStatus.code(), 2, 16384, 16384),
                (Command::BlockStatus.code(), 3, 24576, 8192),
            ]
        );
    }

    #[test]
    fn dirty_lists_only_dirty_runs() {
        let mut client = Script::handshake(&[(3, "qemu:dirty-bitmap:b0")], SIZE, FLAGS)
            .status(
                NBD_REPLY_FLAG_DONE,
                1,
                3,
                &[(65536, 0), (65536, 1), (65536, 1), (131072, 0), (65536, 1)],
            )
            .connect(&["qemu:dirty-bitmap:b0"])
            .unwrap();
        assert_eq!(
            client.dirty("qemu:dirty-bitmap:b0", 0, 393216).unwrap(),
            [(65536, 131072), (327680, 65536)]
        );
        let e = client.allocation(0, 512).unwrap_err();
        assert!(
            matches!(e.kind(), NbdErrorKind::ContextNotNegotiated { .. }),
            "{e}"
        );
    }

    #[test]
    fn chunks_for_other_contexts_are_skipped() {
        let mut client = Script::handshake(
            &[(7, BASE_ALLOCATION), (9, "qemu:dirty-bitmap:b0")],
            SIZE,
            FLAGS,
        )
        .status(0, 1, 9, &[(512, 1), (512, 0)])
        .status(NBD_REPLY_FLAG_DONE, 1, 7, &[(1024, HOLE_ZERO)])
        .connect(&[BASE_ALLOCATION, "qemu:dirty-bitmap:b0"])
        .unwrap();
        assert_eq!(
            client.block_status(BASE_ALLOCATION, 0, 1024).unwrap(),
            [crate::BlockExtent {
                offset: 0,
                length: 1024,
                flags: HOLE_ZERO
            }]
        );
    }

    #[test]
    fn malformed_status_replies_fail() {
        let s = Script::default;
        let cases = vec![
            (
                "zero-length descriptor",
                s().status(NBD_REPLY_FLAG_DONE, 1, 7, &[(0, 0)]),
            ),
            (
                "descriptor after coverage",
                s().status(NBD_REPLY_FLAG_DONE, 1, 7, &[(1024, 0), (512, 0)]),
            ),
            (
                "unknown context id",
                s().status(NBD_REPLY_FLAG_DONE, 1, 8, &[(1024, 0)]),
            ),
            (
                "context twice",
                s().status(0, 1, 7, &[(512, 0)])
                    .status(NBD_REPLY_FLAG_DONE, 1, 7, &[(512, 0)]),
            ),
            ("no descriptors", s().status(NBD_REPLY_FLAG_DONE, 1, 7, &[])),
            (
                "ragged length",
                s().chunk(
                    NBD_REPLY_FLAG_DONE,
                    NBD_REPLY_TYPE_BLOCK_STATUS,
                    1,
                    &[0; 15],
                ),
            ),
            (
                "too many descriptors",
                s().raw(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes())
                    .raw(&[0, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1])
                    .raw(&(4 + 8 * (1u32 << 20)).to_be_bytes()),
            ),
            ("no status at all", s().done(1)),
            (
                "data chunk",
                s().data(NBD_REPLY_FLAG_DONE, 1, 0, &[0; 1024]),
            ),
        ];
        for (name, replies) in cases {
            let mut client = client_with(|s| s.raw(&replies.0));
            let e = client
                .block_status(BASE_ALLOCATION, 0, 1024)
                .err()
                .unwrap_or_else(|| panic!("{name}: succeeded"));
            protocol_detail(&e);
        }
    }

    #[test]
    fn status_errors_are_server_errors() {
        let mut client = client_with(|s| {
            s.error(NBD_REPLY_FLAG_DONE, 1, Errno::EINVAL.0, "out of bounds")
                .status(NBD_REPLY_FLAG_DONE, 2, 7, &[(512, 0)])
        });
        let e = client.block_status(BASE_ALLOCATION, 0, 1024).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                NbdErrorKind::Server {
                    errno: Errno::EINVAL,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            client.block_status(BASE_ALLOCATION, 0, 512).unwrap().len(),
            1
        );
    }

    #[test]
    fn walks_stop_at_the_extent_limit() {
        // Alternating one-block extents over a window larger than the limit allows.
        let blocks = crate::MAX_EXTENTS as u64 + 8;
        let size = blocks * 512;
        let mut s = Script::handshake(&[(7, BASE_ALLOCATION)], size, FLAGS);
        let per_chunk = 1u64 << 16;
        let mut cookie = 1;
        let mut at = 0;
        while at < blocks {
            let n = per_chunk.min(blocks - at);
            let extents: Vec<(u32, u32)> = (at..at + n)
                .map(|i| (512, if i % 2 == 0 { 0 } else { HOLE_ZERO }))
                .collect();
            s = s.status(NBD_REPLY_FLAG_DONE, cookie, 7, &extents);
            cookie += 1;
            at += n;
        }
        let mut client = s.connect(&[BASE_ALLOCATION]).unwrap();
        let e = client.allocation(0, size).unwrap_err();
        assert!(
            matches!(e.kind(), NbdErrorKind::TooManyExtents { .. }),
            "{e}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes at all as a handshake: an error or a client, never a panic.
    #[test]
    fn random_handshakes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Script(bytes).connect(&[BASE_ALLOCATION]);
    }

    /// A valid greeting followed by random option replies.
    #[test]
    fn random_option_replies_never_panic(
        replies in proptest::collection::vec(
            (prop_oneof![Just(NBD_OPT_STRUCTURED_REPLY), Just(NBD_OPT_SET_META_CONTEXT), Just(NBD_OPT_GO), any::<u32>()],
             prop_oneof![Just(NBD_REP_ACK), Just(NBD_REP_INFO), Just(NBD_REP_META_CONTEXT), Just(NBD_REP_ERR_UNSUP), any::<u32>()],
             proptest::collection::vec(any::<u8>(), 0..20)),
            0..8),
    ) {
        let mut s = Script::greeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
        for (option, reply, data) in &replies {
            s = s.option_reply(*option, *reply, data);
        }
        let _ = s.connect(&[BASE_ALLOCATION]);
    }

    /// Random bytes where a read reply belongs.
    #[test]
    fn random_read_replies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut client = client_with(|s| s.raw(&bytes));
        let mut buf = [0u8; 1024];
        prop_assert!(client.read(0, &mut buf).is_err());
    }

    /// Random but plausibly framed chunks for the three requests of a pipelined read, and for
    /// cookies no request has: errors or a read that only data (0xcd) and holes filled.
    #[test]
    fn random_pipelined_chunks_never_panic(
        chunks in proptest::collection::vec(
            (any::<bool>(), 0u64..5,
             prop_oneof![Just(NBD_REPLY_TYPE_NONE), Just(NBD_REPLY_TYPE_OFFSET_DATA), Just(NBD_REPLY_TYPE_OFFSET_HOLE),
                         Just(NBD_REPLY_TYPE_ERROR), Just(NBD_REPLY_TYPE_ERROR_OFFSET), any::<u16>()],
             0u64..10_000, 0u32..1500),
            1..12),
    ) {
        let mut s = Script::default();
        for (done, cookie, kind, offset, length) in &chunks {
            let flags = if *done { NBD_REPLY_FLAG_DONE } else { 0 };
            s = match *kind {
                NBD_REPLY_TYPE_OFFSET_DATA => s.data(flags, *cookie, *offset, &vec![0xcd; (*length % 1100) as usize]),
                NBD_REPLY_TYPE_OFFSET_HOLE => s.hole(flags, *cookie, *offset, *length),
                NBD_REPLY_TYPE_ERROR => s.error(flags, *cookie, *length, "e"),
                NBD_REPLY_TYPE_ERROR_OFFSET => s.error_offset(flags, *cookie, *length, *offset),
                kind => s.chunk(flags, kind, *cookie, &vec![0; (*length % 64) as usize]),
            };
        }
        let mut client = client_with(|c| c.raw(&s.0));
        let mut buf = [0x11u8; 2560];
        if client.read_ranges(&[(0, 1024), (4096, 512), (8192, 1024)], &mut buf).is_ok() {
            prop_assert!(buf.iter().all(|&b| b == 0 || b == 0xcd));
        }
    }

    /// A correct pipelined reply with bytes changed or cut off: an error or a read, never a
    /// panic. Cut off, it must fail; untouched, it must succeed.
    #[test]
    fn mutated_pipelined_replies_never_panic(
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..), 0..4),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
    ) {
        let valid = Script::default()
            .data(0, 3, 8192, &[0xcd; 512])
            .hole(0, 1, 0, 512)
            .error_offset(0, 2, Errno::EIO.0, 4096)
            .data(NBD_REPLY_FLAG_DONE, 2, 4096, &[0xcd; 512])
            .data(0, 1, 512, &[0xcd; 512])
            .hole(NBD_REPLY_FLAG_DONE, 3, 8192 + 512, 512)
            .done(1);
        let mut bytes = valid.0;
        for (at, bits) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= bits;
        }
        if let Some(cut) = &cut {
            let at = cut.index(bytes.len());
            bytes.truncate(at);
        }
        let mut client = client_with(|c| c.raw(&bytes));
        let mut buf = [0x11u8; 2560];
        let result = client.read_ranges(&[(0, 1024), (4096, 512), (8192, 1024)], &mut buf);
        if cut.is_some() {
            prop_assert!(result.is_err());
        } else if flips.is_empty() {
            // Request 2 reported an error: not fatal, and the others were read to their ends.
            let e = result.unwrap_err();
            prop_assert!(!e.is_fatal(), "{}", e);
        }
    }

    /// Random but plausibly framed chunks with the right cookie: the checks of each field, not
    /// the framing, must catch them. A read that succeeds must have been fully covered.
    #[test]
    fn random_chunks_never_panic(
        chunks in proptest::collection::vec(
            (any::<bool>(),
             prop_oneof![Just(NBD_REPLY_TYPE_NONE), Just(NBD_REPLY_TYPE_OFFSET_DATA), Just(NBD_REPLY_TYPE_OFFSET_HOLE),
                         Just(NBD_REPLY_TYPE_BLOCK_STATUS), Just(NBD_REPLY_TYPE_ERROR), Just(NBD_REPLY_TYPE_ERROR_OFFSET), any::<u16>()],
             0u64..3000, 0u32..1500),
            1..6),
        status in any::<bool>(),
    ) {
        let mut s = Script::default();
        for (done, kind, offset, length) in &chunks {
            let flags = if *done { NBD_REPLY_FLAG_DONE } else { 0 };
            s = match *kind {
                NBD_REPLY_TYPE_OFFSET_DATA => s.data(flags, 1, *offset, &vec![0xcd; (*length % 1100) as usize]),
                NBD_REPLY_TYPE_OFFSET_HOLE => s.hole(flags, 1, *offset, *length),
                NBD_REPLY_TYPE_BLOCK_STATUS => s.status(flags, 1, (*offset % 9) as u32, &[(*length, 3), (*length / 2, 0)]),
                NBD_REPLY_TYPE_ERROR => s.error(flags, 1, *length, "e"),
                NBD_REPLY_TYPE_ERROR_OFFSET => s.error_offset(flags, 1, *length, *offset),
                kind => s.chunk(flags, kind, 1, &vec![0; (*length % 64) as usize]),
            };
        }
        let mut client = client_with(|c| c.raw(&s.0));
        if status {
            if let Ok(extents) = client.block_status(BASE_ALLOCATION, 0, 1024) {
                prop_assert!(!extents.is_empty());
                prop_assert_eq!(extents[0].offset, 0);
                prop_assert!(extents.iter().map(|e| e.length).sum::<u64>() <= 1024);
            }
        } else {
            let mut buf = [0x11u8; 1024];
            if client.read(0, &mut buf).is_ok() {
                // Only data chunks (0xcd) and holes (0) can have filled it.
                prop_assert!(buf.iter().all(|&b| b == 0 || b == 0xcd));
            }
        }
    }
}
