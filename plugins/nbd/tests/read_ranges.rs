//! Pipelined reads of many scattered ranges through qemu-nbd, which answers requests in
//! parallel and out of order: the bytes match the image and reading range by range, with and
//! without structured replies, also when queued ahead in groups, and a block the server fails
//! to read fails its range without breaking the connection.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tessera_nbd::{Client, ConnectOptions, Errno, NbdErrorKind};

use crate::qemu::{self, Server};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// 32 MiB + 12 KiB: the end is not a whole number of clusters.
const SIZE: u64 = 32 * MIB + 12 * KIB;

/// The block size of a changed-block backup.
const BLOCK: u64 = 64 * KIB;

/// A small deterministic generator (xorshift64*), so that a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` random bytes.
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for c in out.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes()[..c.len()]);
        }
        out
    }

    /// Shuffles `v` (Fisher–Yates).
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Random contents with zeroed regions (every seventh 64 KiB block, 2 MiB at 10 MiB, 1 MiB at
/// 20 MiB), written raw and converted to a qcow2 image that leaves the zeroes unallocated.
/// Returns the image and its contents.
fn build(dir: &Path, rng: &mut Rng) -> (PathBuf, Vec<u8>) {
    let mut contents = rng.bytes(SIZE as usize);
    for block in (0..SIZE / BLOCK).step_by(7) {
        let at = (block * BLOCK) as usize;
        contents[at..at + BLOCK as usize].fill(0);
    }
    contents[(10 * MIB) as usize..(12 * MIB) as usize].fill(0);
    contents[(20 * MIB) as usize..(21 * MIB) as usize].fill(0);
    let raw = dir.join("contents.raw");
    std::fs::write(&raw, &contents).unwrap();
    let image = dir.join("disk.qcow2");
    qemu::run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=65536",
            raw.to_str().unwrap(),
            image.to_str().unwrap(),
        ],
    );
    (image, contents)
}

/// 300 random 64 KiB blocks and a few ranges of several requests each (across holes, off
/// cluster boundaries, to the unaligned end of the export), in random order.
fn scattered_ranges(rng: &mut Rng) -> Vec<(u64, u64)> {
    let blocks = SIZE / BLOCK;
    let mut ranges: Vec<(u64, u64)> = (0..300)
        .map(|_| (rng.below(blocks) * BLOCK, BLOCK))
        .collect();
    ranges.extend([
        (9 * MIB, 4 * MIB),
        (3 * MIB + 512, 5 * MIB),
        (SIZE - 5 * MIB, 5 * MIB),
        (19 * MIB + 4 * KIB, 3 * MIB),
        (4 * KIB + 512, 1536),
    ]);
    rng.shuffle(&mut ranges);
    assert!(
        ranges.windows(2).any(|w| w[0] > w[1]),
        "the ranges are not in order"
    );
    ranges
}

/// Reads `ranges` with one `read_ranges` and with one `read` per range, and checks both
/// against `contents`.
fn check(client: &mut Client<TcpStream>, ranges: &[(u64, u64)], contents: &[u8], what: &str) {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mut pipelined = vec![0xee; total as usize];
    let started = Instant::now();
    client.read_ranges(ranges, &mut pipelined).unwrap();
    let pipelined_time = started.elapsed();

    let mut one_by_one = vec![0xee; total as usize];
    let started = Instant::now();
    let mut at = 0;
    for &(offset, length) in ranges {
        let length = length as usize;
        client
            .read(offset, &mut one_by_one[at..at + length])
            .unwrap();
        at += length;
    }
    let one_by_one_time = started.elapsed();
    eprintln!(
        "{what}: {} ranges, {total} bytes: read_ranges {pipelined_time:?}, one read per range \
         {one_by_one_time:?}",
        ranges.len()
    );

    let mut at = 0;
    for &(offset, length) in ranges {
        let (offset, length) = (offset as usize, length as usize);
        assert!(
            pipelined[at..at + length] == contents[offset..offset + length],
            "{what}: {length} bytes at offset {offset} differ from the image"
        );
        at += length;
    }
    assert!(
        pipelined == one_by_one,
        "{what}: read_ranges differs from reading range by range"
    );

    // The same ranges as queued reads of about 4 MiB each, the next one always queued
    // before the previous one is taken, as a backup streams them.
    let mut groups: Vec<&[(u64, u64)]> = Vec::new();
    let mut rest = ranges;
    while !rest.is_empty() {
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|r| {
                bytes += r.1;
                bytes <= 4 * MIB
            })
            .count()
            .max(1);
        groups.push(&rest[..n]);
        rest = &rest[n..];
    }
    let mut queued = Vec::with_capacity(total as usize);
    client.queue_read(groups[0], Vec::new()).unwrap();
    for next in groups.iter().skip(1).map(Some).chain([None]) {
        if let Some(next) = next {
            client.queue_read(next, Vec::new()).unwrap();
        }
        queued.extend(client.take_read().unwrap());
    }
    assert_eq!(client.queued_reads(), 0);
    assert!(
        queued == pipelined,
        "{what}: queued reads differ from read_ranges"
    );
}

#[test]
fn scattered_ranges_match_the_image_and_single_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (image, contents) = build(dir.path(), &mut rng);
    // The zeroed regions are unallocated, so the server answers them with hole chunks.
    let map = qemu::qemu_img_map(&image);
    let unallocated = |p: u64| {
        map.iter()
            .any(|m| m.start <= p && p < m.start + m.length && !m.data)
    };
    assert!(unallocated(10 * MIB) && unallocated(20 * MIB) && unallocated(7 * BLOCK));
    let ranges = scattered_ranges(&mut rng);
    let server = Server::qemu_nbd(dir.path(), &image, "disk", &["-r"]);

    let mut client = server.connect(&[]).unwrap();
    assert!(client.structured_replies());
    check(&mut client, &ranges, &contents, "structured replies");
    // The same ranges once more on the same connection, and a single long read.
    check(&mut client, &ranges, &contents, "structured replies, again");
    check(&mut client, &[(0, SIZE)], &contents, "the whole export");
    client.disconnect().unwrap();

    let mut simple = server
        .connect_with(&ConnectOptions::new("disk").structured_replies(false))
        .unwrap();
    assert!(!simple.structured_replies());
    check(&mut simple, &ranges, &contents, "simple replies");
    check(
        &mut simple,
        &[(0, SIZE)],
        &contents,
        "the whole export, simple replies",
    );
    simple.disconnect().unwrap();
}

#[test]
fn a_block_the_server_cannot_read_fails_its_range_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let size = 8 * MIB;
    let contents = rng.bytes(size as usize);
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, &contents).unwrap();
    // blkdebug fails every read that touches the sector at 5 MiB + 4 KiB.
    let bad = 5 * MIB + 4 * KIB;
    let config = dir.path().join("blkdebug.conf");
    std::fs::write(
        &config,
        format!(
            "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"{}\"\nonce = \"off\"\n",
            bad / 512
        ),
    )
    .unwrap();
    let server = Server::qemu_nbd_image_opts(
        dir.path(),
        &format!(
            "driver=raw,file.driver=blkdebug,file.config={},file.image.driver=file,file.image.filename={}",
            config.display(),
            raw.display()
        ),
        "disk",
    );

    // 40 good blocks, more than one window of requests, and the bad one among them.
    let bad_block = (bad / BLOCK * BLOCK, BLOCK);
    let mut good: Vec<(u64, u64)> = Vec::new();
    while good.len() < 40 {
        let r = (rng.below(size / BLOCK) * BLOCK, BLOCK);
        if r != bad_block {
            good.push(r);
        }
    }
    let mut with_bad = good.clone();
    with_bad.insert(10, bad_block);

    // Simple replies: the server answers the bad block with an error reply and goes on.
    let mut client = server
        .connect_with(&ConnectOptions::new("disk").structured_replies(false))
        .unwrap();
    let mut buf = vec![0u8; with_bad.len() * BLOCK as usize];
    let e = client.read_ranges(&with_bad, &mut buf).unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    match e.kind() {
        NbdErrorKind::Server { errno, offset, .. } => {
            assert_eq!(*errno, Errno::EIO, "{e}");
            assert_eq!(*offset, bad_block.0, "{e}");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    // The replies of the requests in flight were read: the connection is still in step.
    check(&mut client, &good, &contents, "after a failed block");
    client.disconnect().unwrap();

    // Structured replies: qemu-nbd 10 ends the session when a read fails in the middle of a
    // structured reply ("Disconnect client, due to: Failed to send reply: reading from file
    // failed"); a server that sends an error chunk instead leaves the connection usable.
    let mut client = server.connect(&[]).unwrap();
    assert!(client.structured_replies());
    let e = client.read_ranges(&with_bad, &mut buf).unwrap_err();
    match e.kind() {
        NbdErrorKind::Server { errno, offset, .. } => {
            assert_eq!(*errno, Errno::EIO, "{e}");
            assert!((bad_block.0..bad_block.0 + BLOCK).contains(offset), "{e}");
            check(
                &mut client,
                &good,
                &contents,
                "after a failed block, structured",
            );
        }
        NbdErrorKind::Io { .. } => {
            assert!(e.is_fatal());
            let again = client.read_ranges(&good, &mut buf[..good.len() * BLOCK as usize]);
            assert!(
                matches!(again.unwrap_err().kind(), NbdErrorKind::Broken),
                "a dropped connection breaks the client"
            );
            // A new connection reads the good blocks.
            let mut client = server.connect(&[]).unwrap();
            check(
                &mut client,
                &good,
                &contents,
                "reconnected after a failed block",
            );
        }
        other => panic!("expected a server or connection error, got {other:?}"),
    }
}
