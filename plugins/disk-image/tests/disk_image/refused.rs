//! Damaged images and features the reader does not implement fail with the right kind of
//! error, and the message names the disk and, where there is one, the offset.

use std::path::{Path, PathBuf};

use tessera_disk_image::{
    DiskImage, Format, ImageError, ImageErrorKind, ImageFile, Qcow2, no_backing,
};

use crate::support::*;

const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

fn be64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn put64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

/// A 4 MiB qcow2 image with data everywhere, 64 KiB clusters.
fn full_image(dir: &Path, compress: bool) -> PathBuf {
    let mut data = content(4 << 20, 11);
    // No zero clusters, so every L2 entry is allocated.
    for (i, b) in data.iter_mut().enumerate() {
        if *b == 0 {
            *b = (i % 251) as u8 | 1;
        }
    }
    let raw = write_raw(dir, "full.src", &data);
    let out = dir.join(if compress {
        "full-c.qcow2"
    } else {
        "full.qcow2"
    });
    let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2"];
    if compress {
        args.push("-c");
    }
    args.extend([raw.to_str().unwrap(), out.to_str().unwrap()]);
    qemu_img(&args);
    out
}

/// The offset in the file of the first L2 table and of its first entry matching `pred`.
fn find_l2_entry(bytes: &[u8], pred: impl Fn(u64) -> bool) -> (usize, usize) {
    let l1_offset = be64(bytes, 40) as usize;
    let l2 = (be64(bytes, l1_offset) & OFFSET_MASK) as usize;
    let index = (0..8192).find(|i| pred(be64(bytes, l2 + i * 8))).unwrap();
    (l2, l2 + index * 8)
}

/// Opens an in-memory image as qcow2 and reads and maps all of it.
fn open_and_read(name: &str, bytes: Vec<u8>) -> Result<(), ImageError> {
    let mut image = Qcow2::open(ImageFile::new(name, Box::new(bytes)), &mut no_backing)?;
    let size = image.virtual_size();
    image.map(0, size)?;
    // Where the bytes lie is checked as strictly as reading them.
    image.runs(0, size)?;
    let mut buf = vec![0u8; size as usize];
    image.read_at(0, &mut buf)
}

fn hex(offset: u64) -> String {
    format!("{offset:#x}")
}

#[test]
fn truncated_images() {
    let dir = tempdir();
    let bytes = std::fs::read(full_image(dir.path(), false)).unwrap();
    let l1_offset = be64(&bytes, 40) as usize;
    for cut in [
        0,
        50,
        100,
        4096,
        l1_offset + 4,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let name = format!("disk0 (cut at {cut})");
        let err = expect_error(open_and_read(&name, bytes[..cut].to_vec()), &name);
        match err.kind() {
            ImageErrorKind::BeyondEnd {
                offset, file_size, ..
            } => {
                assert_eq!(*file_size, cut as u64);
                assert!(err.to_string().contains(&hex(*offset)), "{err}");
            }
            ImageErrorKind::Corrupt { .. } if cut == 0 => {}
            other => panic!("cut at {cut}: expected a truncation error, got {other}"),
        }
    }
}

#[test]
fn table_and_data_offsets_past_the_end() {
    let dir = tempdir();
    let bytes = std::fs::read(full_image(dir.path(), false)).unwrap();
    let past = (bytes.len() as u64).next_multiple_of(65536) + 16 * 65536;

    let mut data_past = bytes.clone();
    let (_, entry) = find_l2_entry(&data_past, |e| e & OFFSET_MASK != 0);
    put64(&mut data_past, entry, past | COPIED);
    let err = expect_error(
        open_and_read("disk0 (vm.qcow2)", data_past),
        "disk0 (vm.qcow2)",
    );
    assert!(
        matches!(err.kind(), ImageErrorKind::BeyondEnd { what: "data cluster", offset, .. } if *offset == past),
        "{err}"
    );
    assert!(err.to_string().contains(&hex(past)), "{err}");

    let mut l2_past = bytes.clone();
    let l1_offset = be64(&l2_past, 40) as usize;
    put64(&mut l2_past, l1_offset, past | COPIED);
    let err = expect_error(open_and_read("disk1", l2_past), "disk1");
    assert!(
        matches!(err.kind(), ImageErrorKind::BeyondEnd { what: "L2 table", offset, .. } if *offset == past),
        "{err}"
    );

    let mut l1_past = bytes.clone();
    put64(&mut l1_past, 40, past);
    let err = expect_error(open_and_read("disk2", l1_past), "disk2");
    assert!(
        matches!(
            err.kind(),
            ImageErrorKind::BeyondEnd {
                what: "L1 table",
                ..
            }
        ),
        "{err}"
    );

    let mut misaligned = bytes.clone();
    let (_, entry) = find_l2_entry(&misaligned, |e| e & OFFSET_MASK != 0);
    let host = be64(&misaligned, entry) & OFFSET_MASK;
    put64(&mut misaligned, entry, (host + 512) | COPIED);
    let err = expect_error(open_and_read("disk3", misaligned), "disk3");
    assert!(
        matches!(err.kind(), ImageErrorKind::Misaligned { offset, .. } if *offset == host + 512),
        "{err}"
    );
    assert!(err.to_string().contains(&hex(host + 512)), "{err}");
}

#[test]
fn undecodable_compressed_clusters() {
    let dir = tempdir();
    let mut bytes = std::fs::read(full_image(dir.path(), true)).unwrap();
    let (_, entry) = find_l2_entry(&bytes, |e| e & COMPRESSED != 0);
    let descriptor = be64(&bytes, entry);
    let offset = descriptor & ((1 << (70 - 16)) - 1);
    for b in &mut bytes[offset as usize..offset as usize + 64] {
        *b = 0xff;
    }
    let err = expect_error(open_and_read("disk0", bytes.clone()), "disk0");
    assert!(
        matches!(err.kind(), ImageErrorKind::Decompress { offset: o, .. } if *o == offset),
        "{err}"
    );
    assert!(err.to_string().contains(&hex(offset)), "{err}");

    // A compressed cluster starting past the end of the file.
    let past = bytes.len() as u64 + 4096;
    put64(&mut bytes, entry, COMPRESSED | past);
    let err = expect_error(open_and_read("disk1", bytes), "disk1");
    assert!(
        matches!(
            err.kind(),
            ImageErrorKind::BeyondEnd {
                what: "compressed cluster",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn encrypted_images() {
    let dir = tempdir();
    let image = path(dir.path(), "secret.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s0,data=x",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0",
        image.to_str().unwrap(),
        "1M",
    ]);
    let name = image.canonicalize().unwrap().to_string_lossy().into_owned();
    let err = expect_error(open_file(&image, None), &name);
    assert!(
        matches!(err.kind(), ImageErrorKind::Unsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("LUKS-encrypted"), "{err}");
}

#[test]
fn external_data_files() {
    let dir = tempdir();
    let image = path(dir.path(), "meta.qcow2");
    let data = path(dir.path(), "data.raw");
    let option = format!("data_file={}", data.to_str().unwrap());
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &option,
        image.to_str().unwrap(),
        "1M",
    ]);
    let name = image.canonicalize().unwrap().to_string_lossy().into_owned();
    let err = expect_error(open_file(&image, None), &name);
    assert!(
        matches!(err.kind(), ImageErrorKind::Unsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("external data file"), "{err}");
    assert!(err.to_string().contains("data.raw"), "{err}");
}

#[test]
fn dirty_corrupt_and_unknown_feature_bits() {
    let dir = tempdir();
    let bytes = std::fs::read(full_image(dir.path(), false)).unwrap();
    let with_bits = |bits: u64| {
        let mut b = bytes.clone();
        let features = be64(&b, 72);
        put64(&mut b, 72, features | bits);
        b
    };
    let err = expect_error(open_and_read("d", with_bits(1)), "d");
    assert!(matches!(err.kind(), ImageErrorKind::InUse), "{err}");
    let err = expect_error(open_and_read("d", with_bits(2)), "d");
    assert!(matches!(err.kind(), ImageErrorKind::MarkedCorrupt), "{err}");
    let err = expect_error(open_and_read("d", with_bits(1 << 40)), "d");
    assert!(
        matches!(err.kind(), ImageErrorKind::Unsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("bit 40"), "{err}");
}

#[test]
fn reads_past_the_virtual_size() {
    let dir = tempdir();
    let image = path(dir.path(), "small.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "1M"]);
    let mut disk = open_file(&image, Some(Format::Qcow2)).unwrap();
    let mut buf = [0u8; 2];
    disk.read_at((1 << 20) - 2, &mut buf).unwrap();
    let err = disk.read_at((1 << 20) - 1, &mut buf).unwrap_err();
    assert!(
        matches!(err.kind(), ImageErrorKind::OutOfRange { .. }),
        "{err}"
    );
    assert!(disk.map(1 << 20, 1).is_err());
    assert!(disk.read_at(u64::MAX, &mut buf).is_err());
    assert_eq!(disk.map(1 << 20, 0).unwrap(), vec![]);
}
