//! VMDK images made by `qemu-img` read exactly as QEMU reads them, and what this reader
//! does not read (split, flat and delta disks) or finds damaged is refused with the reason.

use std::path::{Path, PathBuf};

use tessera_disk_image::{
    DiskImage, Format, ImageError, ImageErrorKind, ImageFile, no_backing, open,
};

use crate::support::*;

const MIB: usize = 1 << 20;

/// Converts raw content of `size` bytes to a VMDK with `options`.
fn make(dir: &Path, name: &str, size: usize, options: &str) -> PathBuf {
    image_of_content(dir, name, size, "vmdk", options)
}

fn open_bytes(name: &str, bytes: Vec<u8>) -> Result<Box<dyn DiskImage>, ImageError> {
    open(ImageFile::new(name, Box::new(bytes)), None, &mut no_backing)
}

/// `bytes` with the first `from` replaced by `to`, which is as long.
fn replaced(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(from)));
    bytes[at..at + to.len()].copy_from_slice(to);
    bytes
}

#[test]
fn sparse_and_stream_optimized_disks_read_as_qemu_reads_them() {
    let dir = tempdir();
    for (name, options, changes) in [
        ("sparse.vmdk", "subformat=monolithicSparse", true),
        ("zeroed.vmdk", "zeroed_grain=on", true),
        ("version6.vmdk", "compat6=on", true),
        // QEMU writes a stream-optimized disk only front to back, while converting.
        ("stream.vmdk", "subformat=streamOptimized", false),
    ] {
        let image = make(dir.path(), name, 9 * MIB + 4096, options);
        if changes {
            qemu_io(
                &image,
                "vmdk",
                &[
                    "write -P 0x5a 12345 70000",
                    "write -z 3000000 200000",
                    "write -P 0xc3 8000000 512",
                ],
            );
        }
        assert_same_as_qemu(&image, "vmdk");
        let disk = open_file(&image, None).unwrap();
        assert_eq!(disk.format(), Format::Vmdk, "{}", disk.describe());
    }

    // Grains never written are holes; zero writes are zeroed grains.
    let sparse = path(dir.path(), "holes.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "zeroed_grain=on",
        sparse.to_str().unwrap(),
        "64M",
    ]);
    qemu_io(
        &sparse,
        "vmdk",
        &["write -z 0 1M", "write -P 1 40000000 70000"],
    );
    assert_same_as_qemu(&sparse, "vmdk");
    let mut disk = open_file(&sparse, None).unwrap();
    let data = data_extents(&mut *disk);
    // The two 64 KiB grains the write touches.
    assert_eq!(data, [(39_976_960, 131_072)]);
}

#[test]
fn a_directory_found_through_the_footer_reads_the_same() {
    let dir = tempdir();
    let image = make(
        dir.path(),
        "footer.vmdk",
        5 * MIB,
        "subformat=streamOptimized",
    );
    let expected = qemu_raw(&image, "vmdk", dir.path());
    let mut bytes = std::fs::read(&image).unwrap();
    // As VMware's stream writers leave it: the header says "at the end", and the footer
    // (a footer marker, the header with the directory's place, an end-of-stream marker)
    // says where.
    let header = bytes[..512].to_vec();
    bytes[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut marker = vec![0u8; 512];
    marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&marker);
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&[0u8; 512]);
    let mut disk = open_bytes("footer", bytes.clone()).unwrap();
    let mut ours = vec![0u8; expected.len()];
    disk.read_at(0, &mut ours).unwrap();
    assert_same_bytes(&ours, &expected, &image);

    // Without the footer: refused, naming the place.
    bytes.truncate(bytes.len() - 1536);
    let err = expect_error(open_bytes("nofooter", bytes), "nofooter");
    assert!(err.to_string().contains("footer"), "{err}");
}

#[test]
fn split_delta_and_damaged_disks_are_refused_with_the_reason() {
    let dir = tempdir();
    let image = make(
        dir.path(),
        "refused.vmdk",
        3 * MIB,
        "subformat=monolithicSparse",
    );
    let good = std::fs::read(&image).unwrap();

    // Another kind of disk, a delta disk (a snapshot) and a lone extent.
    let other = replaced(good.clone(), b"monolithicSparse", b"twoGbMaxExtentSp");
    let err = expect_error(open_bytes("split", other), "split");
    assert!(
        matches!(err.kind(), ImageErrorKind::Unsupported { .. })
            && err.to_string().contains("twoGbMaxExtentSp"),
        "{err}"
    );
    let delta = replaced(good.clone(), b"parentCID=ffffffff", b"parentCID=1234abcd");
    let err = expect_error(open_bytes("delta", delta), "delta");
    assert!(err.to_string().contains("delta disk"), "{err}");
    let mut extent = good.clone();
    extent[28..36].fill(0);
    let err = expect_error(open_bytes("extent", extent), "extent");
    assert!(err.to_string().contains("one extent"), "{err}");

    // A grain size that is no power of two.
    let mut bytes = good.clone();
    bytes[20..28].copy_from_slice(&100u64.to_le_bytes());
    let err = expect_error(open_bytes("grain", bytes), "grain");
    assert!(
        matches!(
            err.kind(),
            ImageErrorKind::Corrupt {
                offset: Some(20),
                ..
            }
        ),
        "{err}"
    );

    // A grain past the end of the file: the error names its table entry.
    let gd = u64::from_le_bytes(good[56..64].try_into().unwrap()) as usize * 512;
    let gt = u32::from_le_bytes(good[gd..gd + 4].try_into().unwrap()) as usize * 512;
    let mut bytes = good.clone();
    bytes[gt + 4..gt + 8].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let err = expect_error(open_bytes("beyond", bytes), "beyond");
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == gt as u64 + 4),
        "{err}"
    );

    // A compressed grain whose bytes were damaged: refused when read, with its place.
    let stream = make(
        dir.path(),
        "damaged.vmdk",
        3 * MIB,
        "subformat=streamOptimized",
    );
    let mut bytes = std::fs::read(&stream).unwrap();
    let gd = u64::from_le_bytes(bytes[56..64].try_into().unwrap()) as usize * 512;
    let gt = u32::from_le_bytes(bytes[gd..gd + 4].try_into().unwrap()) as usize * 512;
    // The first grain stored.
    let (index, grain) = (0..512)
        .map(|i| {
            let at = gt + i * 4;
            (
                i,
                u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize * 512,
            )
        })
        .find(|&(_, grain)| grain != 0)
        .unwrap();
    for b in &mut bytes[grain + 14..grain + 40] {
        *b ^= 0x5a;
    }
    let mut disk = open_bytes("inflate", bytes).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = disk.read_at(index as u64 * 65536, &mut buf).unwrap_err();
    assert!(
        matches!(err.kind(), ImageErrorKind::Decompress { offset, .. } if *offset == grain as u64 + 12),
        "{err}"
    );
}
