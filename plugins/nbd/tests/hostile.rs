//! Fake servers on a loopback TCP port that misbehave after a correct handshake, or during it.
//! Every case must end in an error within the stream's timeout: no panic, no hang.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tessera_nbd::{BASE_ALLOCATION, Client, NbdError, NbdErrorKind};

/// Read timeout of the client in these tests.
const TIMEOUT: Duration = Duration::from_millis(500);

const SIZE: u64 = 1 << 20;

/// A fake server thread serving one connection on a free port.
struct Fake {
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    fn spawn(serve: impl FnOnce(&mut TcpStream) + Send + 'static) -> Fake {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            serve(&mut stream);
            let _ = stream.shutdown(Shutdown::Both);
        });
        Fake {
            port,
            thread: Some(thread),
        }
    }

    fn stream(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s
    }

    fn connect(&self, contexts: &[&str]) -> Result<Client<TcpStream>, NbdError> {
        Client::connect(self.stream(), "disk", contexts)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            // The server's own failures (the client hung up early) do not matter here.
            let _ = t.join();
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn option_reply(s: &mut TcpStream, option: u32, reply: u32, data: &[u8]) {
    let mut m = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
    m.extend_from_slice(&option.to_be_bytes());
    m.extend_from_slice(&reply.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    s.write_all(&m).unwrap();
}

/// A correct handshake: structured replies, every requested context granted (ids 1, 2, …),
/// `NBD_OPT_GO` with the export's size and no block size constraints.
fn handshake(s: &mut TcpStream) {
    let mut greeting = b"NBDMAGICIHAVEOPT".to_vec();
    greeting.extend_from_slice(&3u16.to_be_bytes());
    s.write_all(&greeting).unwrap();
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags).unwrap();
    loop {
        let mut head = [0u8; 16];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head[..8], b"IHAVEOPT");
        let option = be32(&head[8..]);
        let mut data = vec![0u8; be32(&head[12..]) as usize];
        s.read_exact(&mut data).unwrap();
        match option {
            8 => option_reply(s, 8, 1, &[]),
            10 => {
                let name_len = be32(&data) as usize;
                let mut at = 4 + name_len;
                let count = be32(&data[at..]);
                at += 4;
                for id in 1..=count {
                    let len = be32(&data[at..]) as usize;
                    let mut reply = id.to_be_bytes().to_vec();
                    reply.extend_from_slice(&data[at + 4..at + 4 + len]);
                    option_reply(s, 10, 4, &reply);
                    at += 4 + len;
                }
                option_reply(s, 10, 1, &[]);
            }
            7 => {
                let mut info = 0u16.to_be_bytes().to_vec();
                info.extend_from_slice(&SIZE.to_be_bytes());
                info.extend_from_slice(&(1u16 | 4).to_be_bytes());
                option_reply(s, 7, 3, &info);
                option_reply(s, 7, 1, &[]);
                return;
            }
            other => panic!("unexpected option {other}"),
        }
    }
}

/// Reads one request header: (type, cookie, offset, length).
fn request(s: &mut TcpStream) -> (u16, u64, u64, u32) {
    let mut h = [0u8; 28];
    s.read_exact(&mut h).unwrap();
    assert_eq!(be32(&h), 0x2560_9513);
    (
        u16::from_be_bytes([h[6], h[7]]),
        u64::from_be_bytes(h[8..16].try_into().unwrap()),
        u64::from_be_bytes(h[16..24].try_into().unwrap()),
        be32(&h[24..]),
    )
}

fn chunk(flags: u16, kind: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = 0x668e_33efu32.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&cookie.to_be_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// Waits until the client hangs up, so the server never closes first.
fn drain(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

fn assert_fatal(result: Result<impl std::fmt::Debug, NbdError>, what: &str) -> NbdError {
    let e = result.expect_err(what);
    assert!(e.is_fatal(), "{what}: {e}");
    e
}

#[test]
fn a_server_that_stops_talking_times_out() {
    let fake = Fake::spawn(|s| {
        handshake(s);
        let _ = request(s);
        drain(s);
    });
    let mut client = fake.connect(&[]).unwrap();
    let started = Instant::now();
    let e = assert_fatal(client.read(0, &mut [0; 512]), "read from a silent server");
    assert!(matches!(e.kind(), NbdErrorKind::Io { .. }), "{e}");
    assert!(started.elapsed() < TIMEOUT * 10);
    drop(client);
}

#[test]
fn a_greeting_that_stops_halfway_times_out() {
    let fake = Fake::spawn(|s| {
        s.write_all(b"NBDMAGICIHAV").unwrap();
        drain(s);
    });
    let e = assert_fatal(fake.connect(&[]), "half a greeting");
    assert!(e.to_string().contains("greeting"), "{e}");
}

#[test]
fn a_reply_with_another_cookie_is_refused() {
    let fake = Fake::spawn(|s| {
        handshake(s);
        let (_, cookie, offset, length) = request(s);
        let mut payload = offset.to_be_bytes().to_vec();
        payload.extend_from_slice(&length.to_be_bytes());
        s.write_all(&chunk(1, 2, cookie ^ 0x100, &payload)).unwrap();
        drain(s);
    });
    let mut client = fake.connect(&[]).unwrap();
    let e = assert_fatal(client.read(0, &mut [0; 512]), "wrong cookie");
    assert!(e.to_string().contains("cookie"), "{e}");
}

#[test]
fn a_huge_announced_length_is_refused_without_reading_it() {
    let fake = Fake::spawn(|s| {
        handshake(s);
        let (_, cookie, _, _) = request(s);
        // A block status chunk announcing 4 GiB of descriptors, then nothing.
        let mut m = chunk(1, 5, cookie, &[]);
        let n = m.len();
        m[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        s.write_all(&m).unwrap();
        drain(s);
    });
    let mut client = fake.connect(&[BASE_ALLOCATION]).unwrap();
    let started = Instant::now();
    let e = assert_fatal(
        client.block_status(BASE_ALLOCATION, 0, 4096),
        "a 4 GiB block status chunk",
    );
    assert!(matches!(e.kind(), NbdErrorKind::Protocol { .. }), "{e}");
    assert!(
        started.elapsed() < TIMEOUT,
        "refused before waiting for the payload"
    );
}

#[test]
fn a_server_closing_in_the_middle_of_data_is_an_error() {
    let fake = Fake::spawn(|s| {
        handshake(s);
        let (_, cookie, offset, _) = request(s);
        let mut payload = offset.to_be_bytes().to_vec();
        payload.extend_from_slice(&[7; 4096]);
        let m = chunk(1, 1, cookie, &payload);
        s.write_all(&m[..m.len() / 2]).unwrap();
    });
    let mut client = fake.connect(&[]).unwrap();
    let e = assert_fatal(client.read(0, &mut [0; 4096]), "truncated data");
    assert!(e.to_string().contains("closed the connection"), "{e}");
    let again = client.read(0, &mut [0; 4096]).unwrap_err();
    assert!(matches!(again.kind(), NbdErrorKind::Broken), "{again}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random bytes answering a read, over a real socket: an error, promptly.
    #[test]
    fn random_replies_over_tcp_fail(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let fake = Fake::spawn(move |s| {
            handshake(s);
            let _ = request(s);
            let _ = s.write_all(&bytes);
        });
        let mut client = fake.connect(&[]).unwrap();
        prop_assert!(client.read(0, &mut [0; 4096]).is_err());
    }
}
