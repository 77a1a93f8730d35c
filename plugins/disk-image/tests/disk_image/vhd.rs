//! VHD images made by `qemu-img` (QEMU's `vpc` driver) read exactly as QEMU reads them, are
//! told apart from raw disks, and damaged ones are refused with the place named.

use std::path::{Path, PathBuf};

use tessera_disk_image::{
    DiskImage, Format, ImageError, ImageErrorKind, ImageFile, Run, Stored, no_backing, open,
};

use crate::support::*;

const MIB: usize = 1 << 20;

/// Converts raw content of `size` bytes to a VHD with `options`, then changes it with
/// `qemu-io` commands.
fn make(dir: &Path, name: &str, size: usize, options: &str, io: &[&str]) -> PathBuf {
    let out = image_of_content(dir, name, size, "vpc", options);
    if !io.is_empty() {
        qemu_io(&out, "vpc", io);
    }
    out
}

/// Writes and zero writes that do not line up with the 2 MiB blocks, in the first three
/// blocks.
const CHANGES: &[&str] = &[
    "write -P 0x5a 12345 70000",
    "write -z 3000000 5000",
    "write -P 0xc3 4500000 512",
];

/// The bytes of `file` with the VHD checksum at `field` of the `len`-byte structure at
/// `at` made right again (after a change).
fn fix_checksum(bytes: &mut [u8], at: usize, len: usize, field: usize) {
    bytes[at + field..at + field + 4].fill(0);
    let sum = bytes[at..at + len]
        .iter()
        .fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
    bytes[at + field..at + field + 4].copy_from_slice(&(!sum).to_be_bytes());
}

fn open_bytes(
    name: &str,
    bytes: Vec<u8>,
    format: Option<Format>,
) -> Result<Box<dyn DiskImage>, ImageError> {
    open(
        ImageFile::new(name, Box::new(bytes)),
        format,
        &mut no_backing,
    )
}

#[test]
fn dynamic_disks_read_as_qemu_reads_them() {
    let dir = tempdir();
    // Sizes rounded to QEMU's disk geometry, so the last block is cut short; and an
    // exact size (`force_size`), recorded by the creator `qem2`.
    for (name, options) in [
        ("dynamic.vhd", "subformat=dynamic"),
        ("exact.vhd", "subformat=dynamic,force_size=on"),
    ] {
        let image = make(dir.path(), name, 20 * MIB + 4096, options, CHANGES);
        assert_same_as_qemu(&image, "vpc");
        let probed = open_file(&image, None).unwrap();
        assert_eq!(probed.format(), Format::Vhd, "{}", probed.describe());
    }

    // Blocks never written are holes, and written ones lie verbatim in the file.
    let sparse = path(dir.path(), "sparse.vhd");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=dynamic",
        sparse.to_str().unwrap(),
        "64M",
    ]);
    qemu_io(&sparse, "vpc", CHANGES);
    assert_same_as_qemu(&sparse, "vpc");
    let mut disk = open_file(&sparse, None).unwrap();
    // The first three blocks, written, and no other.
    assert_eq!(data_extents(&mut *disk), [(0, 6 * MIB as u64)]);
    let runs = disk.runs(0, 2 * MIB as u64).unwrap();
    assert!(
        matches!(runs[..], [Run { stored: Stored::InFile(_), length, .. }] if length == 2 * MIB as u64),
        "{runs:?}"
    );
}

#[test]
fn fixed_disks_read_as_qemu_reads_them_and_are_told_from_raw_disks() {
    let dir = tempdir();
    let image = make(
        dir.path(),
        "fixed.vhd",
        9 * MIB + 512,
        "subformat=fixed",
        CHANGES,
    );
    assert_same_as_qemu(&image, "vpc");
    let file_len = std::fs::metadata(&image).unwrap().len();

    // Probed: the valid footer at the end makes it a VHD, whose disk stops before it.
    let mut probed = open_file(&image, None).unwrap();
    assert_eq!(probed.format(), Format::Vhd);
    assert_eq!(probed.virtual_size(), file_len - 512);
    let expected = qemu_raw(&image, "vpc", dir.path());
    let mut ours = vec![0u8; expected.len()];
    probed.read_at(0, &mut ours).unwrap();
    assert_same_bytes(&ours, &expected, &image);

    // A raw disk whose last sector holds a footer that does not give the file's size, or
    // whose checksum is wrong, stays a raw disk.
    let mut bytes = std::fs::read(&image).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    let moved = bytes.len() - 512;
    bytes.copy_within(moved - 4096..moved - 4096 + 512, moved);
    let raw = open_bytes("moved", bytes, None).unwrap();
    assert_eq!(raw.format(), Format::Raw);
    let mut bytes = std::fs::read(&image).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let raw = open_bytes("flipped", bytes.clone(), None).unwrap();
    assert_eq!(raw.format(), Format::Raw);
    // Told it is a VHD, the damaged footer is an error naming its offset.
    let err = expect_error(open_bytes("flipped", bytes, Some(Format::Vhd)), "flipped");
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == file_len - 512),
        "{err}"
    );
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn a_damaged_footer_at_the_end_falls_back_to_the_copy_at_the_start() {
    let dir = tempdir();
    let image = make(
        dir.path(),
        "copy.vhd",
        5 * MIB,
        "subformat=dynamic",
        CHANGES,
    );
    let expected = qemu_raw(&image, "vpc", dir.path());
    let mut bytes = std::fs::read(&image).unwrap();
    let end = bytes.len() - 512;
    bytes[end..end + 8].copy_from_slice(b"garbage!");
    let mut disk = open_bytes("copy", bytes.clone(), None).unwrap();
    let mut ours = vec![0u8; expected.len()];
    disk.read_at(0, &mut ours).unwrap();
    assert_same_bytes(&ours, &expected, &image);

    // Both damaged: the error names the footer at the end.
    bytes[0] ^= 0xff;
    let err = expect_error(open_bytes("both", bytes, Some(Format::Vhd)), "both");
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == end as u64),
        "{err}"
    );
}

#[test]
fn damaged_dynamic_disks_are_refused_with_the_place_named() {
    let dir = tempdir();
    let image = make(dir.path(), "damaged.vhd", 5 * MIB, "subformat=dynamic", &[]);
    let good = std::fs::read(&image).unwrap();
    let header = u64::from_be_bytes(good[16..24].try_into().unwrap()) as usize;
    let table = u64::from_be_bytes(good[header + 16..header + 24].try_into().unwrap()) as usize;

    // A header whose checksum does not match.
    let mut bytes = good.clone();
    bytes[header + 32] ^= 0x40;
    let err = expect_error(open_bytes("sum", bytes, None), "sum");
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == (header + 36) as u64),
        "{err}"
    );

    // A block size that is no power of two, checksum fixed.
    let mut bytes = good.clone();
    bytes[header + 32..header + 36].copy_from_slice(&3_000_000u32.to_be_bytes());
    fix_checksum(&mut bytes, header, 1024, 36);
    let err = expect_error(open_bytes("block", bytes, None), "block");
    assert!(err.to_string().contains("power of two"), "{err}");

    // Too few table entries for the disk.
    let mut bytes = good.clone();
    bytes[header + 28..header + 32].copy_from_slice(&1u32.to_be_bytes());
    fix_checksum(&mut bytes, header, 1024, 36);
    let err = expect_error(open_bytes("entries", bytes, None), "entries");
    assert!(err.to_string().contains("needs 3"), "{err}");

    // A block beyond the end of the file: the error names its table entry.
    let mut bytes = good.clone();
    bytes[table + 4..table + 8].copy_from_slice(&0x00ff_0000u32.to_be_bytes());
    let err = expect_error(open_bytes("beyond", bytes, None), "beyond");
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == (table + 4) as u64),
        "{err}"
    );
    assert!(err.to_string().contains("block 1"), "{err}");

    // A table beyond the end of the file.
    let mut bytes = good.clone();
    bytes[header + 16..header + 24].copy_from_slice(&(1u64 << 40).to_be_bytes());
    fix_checksum(&mut bytes, header, 1024, 36);
    let err = expect_error(open_bytes("table", bytes, None), "table");
    assert!(
        matches!(err.kind(), ImageErrorKind::BeyondEnd { .. }),
        "{err}"
    );

    // Cut short: the footer at the end is gone, the copy at the start leads to blocks
    // past the end.
    let cut = good[..good.len() - 1_500_000].to_vec();
    let err = expect_error(open_bytes("cut", cut, None), "cut");
    assert!(err.to_string().contains("past the end"), "{err}");
}

/// A differencing disk made from the dynamic disk `child` over the VHD `parent` by
/// `tests/scripts/vhd-differencing.py` (QEMU cannot write one): its header names the parent
/// by its unique id (or `parent_id`), `name` and `locators` (code and path), and in each
/// allocated block only the sectors in `present` (ranges of 512-byte sectors) stay its own.
fn differencing(
    child: &Path,
    parent: &Path,
    parent_id: Option<&str>,
    name: &str,
    locators: &[&str],
    present: &str,
) -> Vec<u8> {
    let out = child.with_extension("avhd");
    let mut args = vec![
        child.to_str().unwrap(),
        parent.to_str().unwrap(),
        "--name",
        name,
        "--present",
        present,
    ];
    for locator in locators {
        args.extend(["--locator", locator]);
    }
    if let Some(id) = parent_id {
        args.extend(["--parent-id", id]);
    }
    fixture_script("vhd-differencing.py", &args, &out)
}

#[test]
fn differencing_disks_read_over_their_parent() {
    let dir = tempdir();
    let size = 6 * MIB;
    let options = "subformat=dynamic,force_size=on";
    let base = make(dir.path(), "base.vhd", size, options, &[]);
    let base_raw = qemu_raw(&base, "vpc", dir.path());
    // The snapshot's writes: in the first and third blocks, none in the second.
    let child = written_disk(
        dir.path(),
        "dynamic-child.vhd",
        "vpc",
        options,
        "6M",
        &["write -P 0x5a 12345 70000", "write -P 0xc3 4500000 9000"],
    );
    let child_raw = qemu_raw(&child, "vpc", dir.path());
    // Of the first block, only sectors 0 to 99 are the snapshot's; the third block, whole.
    let present = |sector: u64| !(100..2 * 4096).contains(&sector);
    let listed = "0-99,8192-12287";
    let expected: Vec<u8> = (0..size)
        .map(|at| {
            let sector = at as u64 / 512;
            // The second block was never written in the snapshot.
            let allocated = !(4096..2 * 4096).contains(&sector);
            if allocated && present(sector) {
                child_raw[at]
            } else {
                base_raw[at]
            }
        })
        .collect();

    // Found by its relative locator; and by the file name of its absolute path when the
    // relative one leads nowhere, as after the VM's files were copied elsewhere.
    let by_relative = differencing(
        &child,
        &base,
        None,
        r"C:\VMs\base.vhd",
        &[r"W2ru:.\base.vhd"],
        listed,
    );
    let by_name = differencing(
        &child,
        &base,
        None,
        r"C:\VMs\base.vhd",
        &[r"W2ru:..\gone\base.vhd", r"W2ku:C:\VMs\base.vhd"],
        listed,
    );
    for (name, bytes) in [("snap.avhd", by_relative), ("moved.avhd", by_name)] {
        let image = write_raw(dir.path(), name, &bytes);
        // The snapshot's sectors in its file, the rest in the parent's.
        let own = [12345, 4500000];
        let parents = [100 * 512, 3 * MIB as u64];
        assert_reads_over_parent(&image, Format::Vhd, &expected, &own, &parents, "base.vhd");
    }

    // A parent replaced since the snapshot (another disk's unique id) is refused, and so is
    // a parent that cannot be found.
    let replaced = differencing(
        &child,
        &base,
        Some("09090909090909090909090909090909"),
        "base.vhd",
        &[r"W2ru:.\base.vhd"],
        listed,
    );
    let image = write_raw(dir.path(), "replaced.avhd", &replaced);
    let err = open_file(&image, None)
        .err()
        .expect("a replaced parent is refused");
    assert!(err.to_string().contains("replaced"), "{err}");
    assert!(err.to_string().contains("09090909-0909"), "{err}");
    let orphan = differencing(
        &child,
        &base,
        None,
        "nowhere.vhd",
        &[r"W2ru:.\nowhere.vhd"],
        listed,
    );
    let image = write_raw(dir.path(), "orphan.avhd", &orphan);
    let err = open_file(&image, None)
        .err()
        .expect("a missing parent is refused");
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingUnavailable { backing, .. } if backing == "nowhere.vhd"),
        "{err}"
    );
    // Without an opener, as `Vhd::open` has none, the parent cannot be reached.
    let bytes = std::fs::read(dir.path().join("snap.avhd")).unwrap();
    let err = expect_error(open_bytes("alone", bytes, None), "alone");
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingUnavailable { .. }),
        "{err}"
    );
}
