//! Restoring onto an export: writes, zeroing and a flush through qemu-storage-daemon and
//! qemu-nbd, checked with `qemu-img compare` against the raw image the test expects.

use std::path::Path;

use tessera_nbd::NbdErrorKind;

use crate::qemu::{self, Server};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const SIZE: u64 = 8 * MIB;

/// Bytes that differ from their neighbours, so misplaced writes show.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn restore(server: Server, dir: &Path, image: &Path) {
    let mut expected = vec![0u8; SIZE as usize];
    let mut client = server.connect(&[]).unwrap();
    assert!(!client.read_only());
    assert!(client.can_flush(), "QEMU servers support flush");
    assert!(
        client.can_write_zeroes(),
        "QEMU servers support write zeroes"
    );

    // A restore starts from a disk that reads as zeroes, whatever it held before.
    client.write_zeroes(0, SIZE).unwrap();

    let steps: Vec<(u64, Vec<u8>)> = vec![
        (0, pattern(MIB as usize, 1)),
        (2 * MIB + 512, pattern(300 * KIB as usize, 2)),
        (SIZE - 4 * KIB, pattern(4 * KIB as usize, 3)),
        (5 * MIB, vec![0x77; 2 * MIB as usize]),
    ];
    for (offset, data) in &steps {
        client.write(*offset, data).unwrap();
        expected[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
    }
    // Zero part of written data, and a range that was never written.
    for (offset, length) in [
        (256 * KIB, 128 * KIB),
        (5 * MIB + 4 * KIB, MIB),
        (4 * MIB, 64 * KIB),
    ] {
        client.write_zeroes(offset, length).unwrap();
        expected[offset as usize..(offset + length) as usize].fill(0);
    }
    // What was written reads back before the flush, too.
    let mut back = vec![0u8; SIZE as usize];
    client.read(0, &mut back).unwrap();
    assert!(back == expected, "read-back differs from what was written");
    client.flush().unwrap();
    client.disconnect().unwrap();
    server.stop();

    let raw = dir.join("expected.raw");
    std::fs::write(&raw, &expected).unwrap();
    qemu::run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            image.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
}

#[test]
fn restore_through_qemu_storage_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("target.qcow2");
    qemu::create_qcow2(&image, SIZE);
    let server = Server::storage_daemon(dir.path(), &image, "disk", true, None);
    restore(server, dir.path(), &image);
}

#[test]
fn restore_through_qemu_nbd() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("target.qcow2");
    qemu::create_qcow2(&image, SIZE);
    // Old contents the restore must overwrite or zero.
    qemu::qemu_io(&image, &["write -P 0xcc 0 8M".into()]);
    let server = Server::qemu_nbd(dir.path(), &image, "disk", &[]);
    restore(server, dir.path(), &image);
}

#[test]
fn writes_past_the_end_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("target.qcow2");
    qemu::create_qcow2(&image, SIZE);
    let server = Server::qemu_nbd(dir.path(), &image, "disk", &[]);
    let mut client = server.connect(&[]).unwrap();
    let e = client.write(SIZE - 512, &[0; 1024]).unwrap_err();
    assert!(matches!(e.kind(), NbdErrorKind::OutOfRange { .. }), "{e}");
    let e = client.write_zeroes(SIZE, 512).unwrap_err();
    assert!(matches!(e.kind(), NbdErrorKind::OutOfRange { .. }), "{e}");
    // The connection is still fine.
    client.write(SIZE - 512, &[1; 512]).unwrap();
    client.flush().unwrap();
}
