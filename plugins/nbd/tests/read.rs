//! Reading a qcow2 image with data, unallocated clusters and zero clusters through qemu-nbd:
//! the bytes match `qemu-img convert`, and `base:allocation` matches `qemu-img map`.

use std::path::Path;

use tessera_nbd::{BASE_ALLOCATION, ConnectOptions, Extent, MAX_IO_REQUEST, NbdErrorKind};

use crate::qemu::{self, Server};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// 40 MiB + 12 KiB: larger than one 32 MiB request, and not a whole number of clusters.
const SIZE: u64 = 40 * MIB + 12 * KIB;

/// Builds the image: data, a partly written cluster, zero clusters on unallocated and on
/// allocated space, and data running to the unaligned end.
fn build(dir: &Path) -> std::path::PathBuf {
    let image = dir.join("disk.qcow2");
    qemu::create_qcow2(&image, SIZE);
    qemu::qemu_io(
        &image,
        &[
            "write -P 0x11 0 1M".into(),
            "write -P 0x22 3M 100k".into(),
            "write -z 8M 2M".into(),
            "write -P 0x44 12M 1M".into(),
            "write -z 12M 512k".into(),
            "write -P 0x66 20M 4k".into(),
            "write -P 0x55 39M 1036k".into(),
        ],
    );
    image
}

#[test]
fn reads_match_qemu_img_convert() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path());
    let expected = qemu::raw_contents(&image, dir.path());
    assert_eq!(expected.len() as u64, SIZE);
    let server = Server::qemu_nbd(dir.path(), &image, "disk", &["-r"]);

    let mut client = server.connect(&[BASE_ALLOCATION]).unwrap();
    assert_eq!(client.size(), SIZE);
    assert!(client.read_only());
    assert!(client.structured_replies());
    assert!(client.has_context(BASE_ALLOCATION));

    // The whole export in one call: more than one request's worth.
    assert!(SIZE > u64::from(MAX_IO_REQUEST));
    let mut all = vec![0xee; SIZE as usize];
    client.read(0, &mut all).unwrap();
    assert!(
        all == expected,
        "the export's bytes differ from qemu-img convert"
    );

    // Pieces at awkward places: across cluster and data/zero boundaries, up to the end.
    let minimum = client.block_sizes().map_or(1, |b| u64::from(b.minimum));
    for (offset, length) in [
        (0, 512),
        (MIB - 512, 4 * KIB),
        (3 * MIB + 96 * KIB, 64 * KIB),
        (8 * MIB - 4 * KIB, 3 * MIB),
        (12 * MIB + 500 * KIB, 100 * KIB),
        (SIZE - 12 * KIB - 512, 12 * KIB + 512),
    ] {
        let offset = offset / minimum * minimum;
        let mut buf = vec![0xee; length as usize];
        client.read(offset, &mut buf).unwrap();
        let at = offset as usize;
        assert!(
            buf == expected[at..at + buf.len()],
            "{length} bytes at {offset} differ"
        );
    }

    // Writes are refused on a read-only export before anything is sent.
    let e = client.write(0, &[0; 512]).unwrap_err();
    assert!(matches!(e.kind(), NbdErrorKind::ReadOnly), "{e}");
    // Reads past the end are refused.
    let e = client.read(SIZE - 512, &mut [0; 1024]).unwrap_err();
    assert!(matches!(e.kind(), NbdErrorKind::OutOfRange { .. }), "{e}");
    client.disconnect().unwrap();

    // The same with simple replies only.
    let mut simple = server
        .connect_with(&ConnectOptions::new("disk").structured_replies(false))
        .unwrap();
    assert!(!simple.structured_replies());
    let mut all = vec![0xee; SIZE as usize];
    simple.read(0, &mut all).unwrap();
    assert!(
        all == expected,
        "simple-reply reads differ from qemu-img convert"
    );
    let e = simple.allocation(0, SIZE).unwrap_err();
    assert!(
        matches!(e.kind(), NbdErrorKind::ContextNotNegotiated { .. }),
        "{e}"
    );
}

#[test]
fn allocation_matches_qemu_img_map() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path());
    let expected = qemu::raw_contents(&image, dir.path());
    let map = qemu::qemu_img_map(&image);
    let server = Server::qemu_nbd(dir.path(), &image, "disk", &["-r"]);
    let mut client = server.connect(&[BASE_ALLOCATION]).unwrap();

    let extents = client.allocation(0, SIZE).unwrap();
    check_contiguous(&extents, 0, SIZE);

    // Every byte the client may skip reads as zero.
    for e in extents.iter().filter(|e| !e.data) {
        let range = e.offset as usize..(e.offset + e.length) as usize;
        assert!(
            expected[range].iter().all(|&b| b == 0),
            "extent {e:?} is reported as zero but holds data"
        );
    }
    // The client's view and QEMU's agree at every boundary either of them draws.
    let mut points: Vec<u64> = extents.iter().map(|e| e.offset).collect();
    points.extend(map.iter().map(|m| m.start));
    for p in points {
        let ours = extents
            .iter()
            .find(|e| e.offset <= p && p < e.offset + e.length)
            .unwrap();
        let theirs = map
            .iter()
            .find(|m| m.start <= p && p < m.start + m.length)
            .unwrap();
        assert_eq!(ours.data, !theirs.zero, "zero status at offset {p}");
        assert_eq!(ours.hole, !theirs.data, "allocation status at offset {p}");
    }
    // Spot checks of what the image was built with.
    let at = |p: u64| {
        *extents
            .iter()
            .find(|e| e.offset <= p && p < e.offset + e.length)
            .unwrap()
    };
    assert!(at(0).data && !at(0).hole);
    assert!(!at(2 * MIB).data && at(2 * MIB).hole, "never written");
    assert!(!at(9 * MIB).data, "zero clusters");
    assert!(!at(12 * MIB + 4 * KIB).data, "zeroed after being written");
    assert!(at(12 * MIB + 600 * KIB).data);
    assert!(at(SIZE - 1).data);

    // A window in the middle, not aligned to extents, is clipped to the window.
    let window = client.allocation(900 * KIB, 3 * MIB).unwrap();
    check_contiguous(&window, 900 * KIB, 3 * MIB);

    // One raw query describes at least the start of the range and no more than asked.
    let raw = client
        .block_status(BASE_ALLOCATION, 0, 16 * MIB as u32)
        .unwrap();
    assert_eq!(raw[0].offset, 0);
    assert!(raw.iter().map(|e| e.length).sum::<u64>() <= 16 * MIB);
}

fn check_contiguous(extents: &[Extent], offset: u64, length: u64) {
    assert!(!extents.is_empty());
    let mut at = offset;
    for e in extents {
        assert_eq!(e.offset, at, "extents must be contiguous: {extents:?}");
        assert!(e.length > 0);
        at += e.length;
    }
    assert_eq!(at, offset + length, "extents must cover the range");
    for pair in extents.windows(2) {
        assert!(
            (pair[0].data, pair[0].hole) != (pair[1].data, pair[1].hole),
            "neighbours with equal status must be merged: {pair:?}"
        );
    }
}

#[test]
fn an_unknown_export_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("small.qcow2");
    qemu::create_qcow2(&image, MIB);
    let server = Server::qemu_nbd(dir.path(), &image, "disk", &["-r"]);
    let e = tessera_nbd::Client::connect(server.stream(), "no-such-disk", &[])
        .err()
        .unwrap();
    assert!(
        matches!(e.kind(), NbdErrorKind::UnknownExport { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("\"no-such-disk\""), "{e}");
}
