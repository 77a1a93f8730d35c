//! Changed blocks through `qemu:dirty-bitmap:NAME`: a persistent bitmap enabled on an empty
//! qcow2 image records exactly the clusters qemu-io writes, rounded out to its granularity.

use std::path::{Path, PathBuf};

use tessera_nbd::{BASE_ALLOCATION, NbdErrorKind};

use crate::qemu::{self, Server};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const SIZE: u64 = 16 * MIB;
const GRANULARITY: u64 = 64 * KIB;
const CONTEXT: &str = "qemu:dirty-bitmap:b0";

/// Writes made after the bitmap was enabled, as (offset, length).
const WRITES: [(u64, u64); 5] = [
    (100 * KIB, 10 * KIB),
    (MIB, 64 * KIB),
    (MIB + 64 * KIB, KIB),
    (5000 * KIB, 300 * KIB),
    (SIZE - 4 * KIB, 4 * KIB),
];

/// The image: data written before the bitmap existed (not dirty), then the bitmap, then
/// [`WRITES`].
fn build(dir: &Path) -> PathBuf {
    let image = dir.join("disk.qcow2");
    qemu::create_qcow2(&image, SIZE);
    qemu::qemu_io(&image, &["write -P 0x01 8M 1M".into()]);
    qemu::run(
        "qemu-img",
        &[
            "bitmap",
            "--add",
            "--enable",
            "-g",
            &GRANULARITY.to_string(),
            image.to_str().unwrap(),
            "b0",
        ],
    );
    let commands: Vec<String> = WRITES
        .iter()
        .map(|(offset, length)| format!("write -P 0x5a {offset} {length}"))
        .collect();
    qemu::qemu_io(&image, &commands);
    image
}

/// [`WRITES`] rounded out to the granularity, merged, clipped to `[from, to)`.
fn expected(from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut writes = WRITES.to_vec();
    writes.sort();
    for (offset, length) in writes {
        let start = (offset / GRANULARITY * GRANULARITY).max(from);
        let end = (offset + length)
            .div_ceil(GRANULARITY)
            .saturating_mul(GRANULARITY)
            .min(to);
        if start >= end {
            continue;
        }
        match runs.last_mut() {
            Some((s, l)) if *s + *l >= start => *l = (*l).max(end - *s),
            _ => runs.push((start, end - start)),
        }
    }
    runs
}

#[test]
fn dirty_ranges_are_the_written_clusters_with_qemu_nbd() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path());
    let server = Server::qemu_nbd(dir.path(), &image, "disk", &["-r", "-B", "b0"]);
    let mut client = server.connect(&[BASE_ALLOCATION, CONTEXT]).unwrap();

    assert_eq!(client.dirty(CONTEXT, 0, SIZE).unwrap(), expected(0, SIZE));
    // A window that starts and ends inside dirty runs is clipped to the window.
    let (from, to) = (MIB + 32 * KIB, 5 * MIB);
    assert_eq!(
        client.dirty(CONTEXT, from, to - from).unwrap(),
        expected(from, to)
    );
    // The data written before the bitmap existed is allocated but not dirty.
    let allocation = client.allocation(8 * MIB, MIB).unwrap();
    assert!(allocation.iter().all(|e| e.data), "{allocation:?}");
    assert!(client.dirty(CONTEXT, 8 * MIB, MIB).unwrap().is_empty());
}

#[test]
fn dirty_ranges_with_qemu_storage_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path());
    let server = Server::storage_daemon(dir.path(), &image, "disk", false, Some("b0"));
    let mut client = server.connect(&[CONTEXT]).unwrap();
    assert_eq!(client.dirty(CONTEXT, 0, SIZE).unwrap(), expected(0, SIZE));
    client.disconnect().unwrap();
}

#[test]
fn a_missing_bitmap_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path());
    let server = Server::qemu_nbd(dir.path(), &image, "disk", &["-r", "-B", "b0"]);
    let e = server
        .connect(&[BASE_ALLOCATION, "qemu:dirty-bitmap:b1"])
        .err()
        .unwrap();
    match e.kind() {
        NbdErrorKind::ContextNotGranted { context } => assert_eq!(context, "qemu:dirty-bitmap:b1"),
        other => panic!("expected ContextNotGranted, got {other:?}"),
    }
    assert!(e.to_string().contains("qemu:dirty-bitmap:b1"), "{e}");
}
