//! VDI images made by `qemu-img` read exactly as QEMU reads them, differencing disks
//! (VirtualBox's snapshots) read over the parent found by its UUID, and damaged ones are
//! refused with the reason.

use tessera_disk_image::{
    DiskImage, Format, ImageError, ImageErrorKind, ImageFile, no_backing, open,
};

use crate::support::*;

const MIB: usize = 1 << 20;

fn open_bytes(name: &str, bytes: Vec<u8>) -> Result<Box<dyn DiskImage>, ImageError> {
    open(ImageFile::new(name, Box::new(bytes)), None, &mut no_backing)
}

#[test]
fn dynamic_and_fixed_disks_read_as_qemu_reads_them() {
    let dir = tempdir();
    for (name, options) in [("dynamic.vdi", "static=off"), ("fixed.vdi", "static=on")] {
        let image = image_of_content(dir.path(), name, 9 * MIB + 4096, "vdi", options);
        qemu_io(
            &image,
            "vdi",
            &[
                "write -P 0x5a 12345 70000",
                "write -z 3000000 200000",
                "write -P 0xc3 8000000 512",
            ],
        );
        assert_same_as_qemu(&image, "vdi");
        let disk = open_file(&image, None).unwrap();
        assert_eq!(disk.format(), Format::Vdi, "{}", disk.describe());
    }

    // Blocks never written are holes.
    let sparse = path(dir.path(), "holes.vdi");
    qemu_img(&["create", "-q", "-f", "vdi", sparse.to_str().unwrap(), "64M"]);
    qemu_io(&sparse, "vdi", &["write -P 1 40000000 70000"]);
    assert_same_as_qemu(&sparse, "vdi");
    let mut disk = open_file(&sparse, None).unwrap();
    let data = data_extents(&mut *disk);
    assert_eq!(data, [(38 << 20, 1 << 20)]);
}

#[test]
fn differencing_and_damaged_disks_are_refused_with_the_reason() {
    let dir = tempdir();
    let image = image_of_content(dir.path(), "refused.vdi", 3 * MIB, "vdi", "static=off");
    let good = std::fs::read(&image).unwrap();

    // A differencing disk without a parent UUID, one whose parent cannot be looked for,
    // a disk linked to a parent that is not a differencing disk, an undo disk.
    let mut bytes = good.clone();
    bytes[76..80].copy_from_slice(&4u32.to_le_bytes());
    let err = expect_error(open_bytes("diff", bytes.clone()), "diff");
    assert!(
        matches!(
            err.kind(),
            ImageErrorKind::Corrupt {
                offset: Some(424),
                ..
            }
        ),
        "{err}"
    );
    bytes[424] = 1;
    let err = expect_error(open_bytes("orphan", bytes), "orphan");
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingUnavailable { .. }),
        "{err}"
    );
    let mut bytes = good.clone();
    bytes[424] = 1;
    let err = expect_error(open_bytes("linked", bytes), "linked");
    assert!(err.to_string().contains("parent"), "{err}");
    let mut bytes = good.clone();
    bytes[76..80].copy_from_slice(&3u32.to_le_bytes());
    let err = expect_error(open_bytes("undo", bytes), "undo");
    assert!(err.to_string().contains("undo"), "{err}");

    // Another version, a bad block size, too few map entries.
    let mut bytes = good.clone();
    bytes[68..72].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    let err = expect_error(open_bytes("version", bytes), "version");
    assert!(err.to_string().contains("version"), "{err}");
    let mut bytes = good.clone();
    bytes[376..380].copy_from_slice(&3_000_000u32.to_le_bytes());
    let err = expect_error(open_bytes("block", bytes), "block");
    assert!(
        matches!(
            err.kind(),
            ImageErrorKind::Corrupt {
                offset: Some(376),
                ..
            }
        ),
        "{err}"
    );
    let mut bytes = good.clone();
    bytes[384..388].copy_from_slice(&1u32.to_le_bytes());
    let err = expect_error(open_bytes("count", bytes), "count");
    assert!(err.to_string().contains("needs 3"), "{err}");

    // A block in a slot past the end of the file: the error names its map entry.
    let map = u32::from_le_bytes(good[340..344].try_into().unwrap()) as usize;
    let mut bytes = good.clone();
    bytes[map + 4..map + 8].copy_from_slice(&1000u32.to_le_bytes());
    let err = expect_error(open_bytes("beyond", bytes), "beyond");
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == map as u64 + 4),
        "{err}"
    );

    // Cut short.
    let cut = good[..good.len() - MIB].to_vec();
    let err = expect_error(open_bytes("cut", cut), "cut");
    assert!(err.to_string().contains("past the end"), "{err}");
}

/// The snapshot over `parent` whose blocks are those `dynamic` allocated, as
/// `tests/scripts/vdi-differencing.py` makes it with `extra` arguments, at `out`.
fn snapshot(
    dynamic: &std::path::Path,
    parent: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) {
    let mut args = vec![dynamic.to_str().unwrap(), parent.to_str().unwrap()];
    args.extend_from_slice(extra);
    fixture_script("vdi-differencing.py", &args, out);
}

/// What a snapshot over a disk reading `below` reads: its own blocks (`own`) whole from
/// `written`, the blocks in `zero` as zeros, the others from `below`.
fn over(below: &[u8], written: &[u8], own: &[usize], zero: &[usize]) -> Vec<u8> {
    let mut disk = below.to_vec();
    for (i, block) in disk.chunks_mut(MIB).enumerate() {
        let from = &written[i * MIB..i * MIB + block.len()];
        if own.contains(&i) {
            block.copy_from_slice(from);
        } else if zero.contains(&i) {
            block.fill(0);
        }
    }
    disk
}

#[test]
fn differencing_disks_read_over_their_parent() {
    let dir = tempdir();
    let size = 9 * MIB + 4096;
    let base = image_of_content(dir.path(), "base.vdi", size, "vdi", "static=off");
    let base_raw = qemu_raw(&base, "vdi", dir.path());
    // Another disk, found first, which the search passes over.
    image_of_content(dir.path(), "a-other.vdi", size, "vdi", "static=off");
    let snapshots = dir.path().join("Snapshots");
    std::fs::create_dir(&snapshots).unwrap();
    // The snapshot's blocks: the first, the fourth (partly written, so the rest of it reads
    // as zeros, not as the parent's) and the last, short one; the sixth reads as zeros.
    let writes = written_disk(
        dir.path(),
        "writes.vdi",
        "vdi",
        "static=off",
        &size.to_string(),
        &[
            "write -P 0x5a 0 1M",
            "write -P 0xc3 3200000 9000",
            "write -P 0x77 9437184 4096",
        ],
    );
    let writes_raw = qemu_raw(&writes, "vdi", dir.path());
    let first = snapshots.join("{first}.vdi");
    snapshot(&writes, &base, &first, &["--zero", "5"]);
    let expected = over(&base_raw, &writes_raw, &[0, 3, 9], &[5]);
    let own = [12345, 3 * MIB as u64 + 100, 9 * MIB as u64];
    let parents = [MIB as u64 + 512, 7 * MIB as u64];
    assert_reads_over_parent(&first, Format::Vdi, &expected, &own, &parents, "base.vdi");

    // A snapshot of the snapshot, beside it, reads top down: its own blocks, then the
    // first snapshot's, then the base's.
    let more = written_disk(
        dir.path(),
        "more.vdi",
        "vdi",
        "static=off",
        &size.to_string(),
        &["write -P 0x11 1048576 1M", "write -P 0x22 3145728 512"],
    );
    let more_raw = qemu_raw(&more, "vdi", dir.path());
    let second = snapshots.join("{second}.vdi");
    snapshot(&more, &first, &second, &[]);
    let top = over(&expected, &more_raw, &[1, 3], &[]);
    let mut disk = open_file(&second, None).unwrap();
    let mut ours = vec![0u8; size];
    disk.read_at(0, &mut ours).unwrap();
    assert_same_bytes(&ours, &top, &second);
    assert_eq!(stored_in(&mut *disk, MIB as u64 + 7), "{second}.vdi");
    assert_eq!(stored_in(&mut *disk, 7), "{first}.vdi");
    assert_eq!(stored_in(&mut *disk, 2 * MIB as u64), "base.vdi");
    let file = std::fs::File::open(&second).unwrap();
    assert_same_bytes(
        &read_by_runs(&mut *disk, &file, 0, size as u64),
        &top,
        &second,
    );

    // A parent written to after the snapshot (another modification UUID) is refused, and
    // so is a snapshot whose parent is nowhere to be found.
    let stale = snapshots.join("{stale}.vdi");
    snapshot(
        &writes,
        &base,
        &stale,
        &["--parent-modify", &"01".repeat(16)],
    );
    let err = open_file(&stale, None)
        .err()
        .expect("a stale parent is refused");
    assert!(err.to_string().contains("written to after"), "{err}");
    let lost = snapshots.join("{lost}.vdi");
    snapshot(&writes, &base, &lost, &["--parent-uuid", &"ab".repeat(16)]);
    let err = open_file(&lost, None)
        .err()
        .expect("a missing parent is refused");
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingUnavailable { .. }),
        "{err}"
    );
}
