//! VDI images made by `qemu-img` read exactly as QEMU reads them, and differencing and
//! damaged ones are refused with the reason.

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

    // A differencing disk, by type and by a parent link.
    let mut bytes = good.clone();
    bytes[76..80].copy_from_slice(&4u32.to_le_bytes());
    let err = expect_error(open_bytes("diff", bytes), "diff");
    assert!(
        matches!(err.kind(), ImageErrorKind::Unsupported { .. }),
        "{err}"
    );
    let mut bytes = good.clone();
    bytes[424] = 1;
    let err = expect_error(open_bytes("linked", bytes), "linked");
    assert!(err.to_string().contains("parent"), "{err}");

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
