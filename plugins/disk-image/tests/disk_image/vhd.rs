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

#[test]
fn differencing_disks_are_refused() {
    let dir = tempdir();
    let image = make(dir.path(), "child.vhd", 3 * MIB, "subformat=dynamic", &[]);
    let mut bytes = std::fs::read(&image).unwrap();
    // QEMU cannot write a differencing disk: mark this one as such, in both footers.
    let end = bytes.len() - 512;
    for at in [0, end] {
        bytes[at + 60..at + 64].copy_from_slice(&4u32.to_be_bytes());
        fix_checksum(&mut bytes, at, 512, 64);
    }
    let err = expect_error(open_bytes("child", bytes, None), "child");
    assert!(
        matches!(err.kind(), ImageErrorKind::Unsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("differencing VHD"), "{err}");
}
