//! VHDX images made by `qemu-img` read exactly as QEMU reads them, and damaged ones are
//! refused with the place named.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crc::{CRC_32_ISCSI, Crc};
use tessera_disk_image::{
    DiskImage, ExtentKind, Format, ImageError, ImageErrorKind, ImageFile, no_backing, open,
};

use crate::support::*;

const MIB: usize = 1 << 20;

/// Writes and zero writes that do not line up with blocks.
const CHANGES: &[&str] = &[
    "write -P 0x5a 12345 70000",
    "write -z 3000000 5000",
    "write -P 0xc3 4500000 512",
];

/// Converts raw content of `size` bytes to a VHDX with `options`, then changes it.
fn make(dir: &Path, name: &str, size: usize, options: &str) -> PathBuf {
    let out = image_of_content(dir, name, size, "vhdx", options);
    qemu_io(&out, "vhdx", CHANGES);
    out
}

/// Checks that our reader sees the bytes QEMU sees, read in pieces and through the runs,
/// and that every range it maps as zeros is zeros. (QEMU's VHDX driver reports every
/// block as data, so the maps are not compared.)
fn assert_reads_as_qemu(image: &Path) -> Box<dyn DiskImage> {
    let dir = image.parent().unwrap();
    let expected = qemu_raw(image, "vhdx", dir);
    let mut disk = open_file(image, None).unwrap();
    assert_eq!(disk.format(), Format::Vhdx);
    assert_eq!(disk.virtual_size(), expected.len() as u64);
    let mut ours = vec![0xa5u8; expected.len()];
    for start in (0..ours.len()).step_by(1_000_003) {
        let end = (start + 1_000_003).min(ours.len());
        disk.read_at(start as u64, &mut ours[start..end]).unwrap();
    }
    assert_same_bytes(&ours, &expected, image);
    let file = std::fs::File::open(image).unwrap();
    let through_runs = read_by_runs(&mut *disk, &file, 0, expected.len() as u64);
    assert_same_bytes(&through_runs, &expected, image);
    for extent in disk.map(0, expected.len() as u64).unwrap() {
        if extent.kind == ExtentKind::Zero {
            let range = extent.offset as usize..extent.end() as usize;
            assert!(
                expected[range].iter().all(|&b| b == 0),
                "{extent:?} is not zeros"
            );
        }
    }
    disk
}

fn crc32c(bytes: &[u8]) -> u32 {
    Crc::<u32>::new(&CRC_32_ISCSI).checksum(bytes)
}

/// Makes the CRC-32C at offset 4 of the `len`-byte structure at `at` right again.
fn fix_checksum(bytes: &mut [u8], at: usize, len: usize) {
    bytes[at + 4..at + 8].fill(0);
    let sum = crc32c(&bytes[at..at + len]);
    bytes[at + 4..at + 8].copy_from_slice(&sum.to_le_bytes());
}

fn open_bytes(name: &str, bytes: Vec<u8>) -> Result<Box<dyn DiskImage>, ImageError> {
    open(ImageFile::new(name, Box::new(bytes)), None, &mut no_backing)
}

/// The current header's offset and the file offsets of the BAT and metadata regions.
fn layout(bytes: &[u8]) -> (usize, usize) {
    let table = 192 << 10;
    let count = u32::from_le_bytes(bytes[table + 8..table + 12].try_into().unwrap()) as usize;
    let (mut bat, mut metadata) = (0, 0);
    for i in 0..count {
        let entry = &bytes[table + 16 + i * 32..table + 48 + i * 32];
        let offset = u64::from_le_bytes(entry[16..24].try_into().unwrap()) as usize;
        // The BAT region's GUID starts 66 77 c2 2d.
        if entry[..4] == [0x66, 0x77, 0xc2, 0x2d] {
            bat = offset;
        } else {
            metadata = offset;
        }
    }
    (bat, metadata)
}

#[test]
fn dynamic_and_fixed_disks_read_as_qemu_reads_them() {
    let dir = tempdir();
    for (name, options) in [
        ("dynamic.vhdx", "subformat=dynamic"),
        ("small-blocks.vhdx", "subformat=dynamic,block_size=1M"),
        ("fixed.vhdx", "subformat=fixed,block_size=1M"),
    ] {
        let image = make(dir.path(), name, 20 * MIB + 4096, options);
        assert_reads_as_qemu(&image);
    }

    // Blocks never written are holes, and written ones lie verbatim in the file.
    let sparse = path(dir.path(), "sparse.vhdx");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "block_size=1M",
        sparse.to_str().unwrap(),
        "64M",
    ]);
    qemu_io(
        &sparse,
        "vhdx",
        &["write -P 1 12345 512", "write -P 2 40000000 70000"],
    );
    let mut disk = assert_reads_as_qemu(&sparse);
    let data = data_extents(&mut *disk);
    // Block 0, and the one or two blocks the second write touches.
    assert_eq!(data[0], (0, 1 << 20), "{data:?}");
    assert_eq!(data[1].0, 38 << 20, "{data:?}");
    assert_eq!(data.len(), 2, "{data:?}");
}

#[test]
fn blocks_past_the_first_sector_bitmap_entry_are_found() {
    // Every 4 GiB of a disk with 512-byte sectors (2^23 sectors), the block table holds
    // an entry for a sector bitmap between the blocks' entries.
    let dir = tempdir();
    let image = path(dir.path(), "large.vhdx");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "block_size=8M",
        image.to_str().unwrap(),
        "9G",
    ]);
    let far = (8u64 << 30) + 12345;
    qemu_io(
        &image,
        "vhdx",
        &[
            "write -P 0x11 0 4096",
            &format!("write -P 0x33 {far} 70000"),
        ],
    );
    let mut disk = open_file(&image, None).unwrap();
    let mut buf = vec![0u8; 70000];
    disk.read_at(far, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x33));
    disk.read_at(far - 70000, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    let data = data_extents(&mut *disk);
    assert_eq!(data, [(0, 8 << 20), (8 << 30, 8 << 20)]);
}

#[test]
fn damaged_headers_and_tables_are_refused_with_the_place_named() {
    let dir = tempdir();
    let image = make(dir.path(), "damaged.vhdx", 5 * MIB, "block_size=1M");
    let good = std::fs::read(&image).unwrap();
    let (bat, metadata) = layout(&good);

    // One header damaged: the other is used.
    let mut bytes = good.clone();
    bytes[(64 << 10) + 100] ^= 1;
    assert_eq!(
        open_bytes("one", bytes.clone()).unwrap().format(),
        Format::Vhdx
    );
    // Both: refused, naming the first.
    bytes[(128 << 10) + 100] ^= 1;
    let err = expect_error(open_bytes("headers", bytes), "headers");
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == 64 << 10),
        "{err}"
    );

    // Both region tables damaged.
    let mut bytes = good.clone();
    bytes[(192 << 10) + 20] ^= 1;
    bytes[(256 << 10) + 20] ^= 1;
    let err = expect_error(open_bytes("regions", bytes), "regions");
    assert!(err.to_string().contains("region table"), "{err}");

    // A log GUID in both headers (checksums made right), as Hyper-V leaves it: with no
    // entry of that log, nothing is to replay and the image reads.
    let mut bytes = good.clone();
    for header in [64 << 10, 128 << 10] {
        bytes[header + 48..header + 64].fill(0x42);
        fix_checksum(&mut bytes, header, 4096);
    }
    let mut disk = open_bytes("clean", bytes.clone()).unwrap();
    let mut first = vec![0u8; 4096];
    disk.read_at(0, &mut first).unwrap();
    // An entry of that log: refused with what to do, the entry named.
    let log = u64::from_le_bytes(bytes[(64 << 10) + 72..(64 << 10) + 80].try_into().unwrap());
    let entry = log as usize + 8192;
    bytes[entry..entry + 4].copy_from_slice(b"loge");
    bytes[entry + 32..entry + 48].fill(0x42);
    let err = expect_error(open_bytes("log", bytes), "log");
    assert!(
        matches!(err.kind(), ImageErrorKind::Unsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("{entry:#x}")), "{err}");

    // A present block beyond the end of the file: the error names its BAT entry.
    let mut bytes = good.clone();
    let entry = (1u64 << 40) | 6;
    bytes[bat + 8..bat + 16].copy_from_slice(&entry.to_le_bytes());
    let err = expect_error(open_bytes("beyond", bytes), "beyond");
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == bat as u64 + 8),
        "{err}"
    );
    assert!(err.to_string().contains("block 1"), "{err}");

    // An unknown block state.
    let mut bytes = good.clone();
    bytes[bat] = (bytes[bat] & !7) | 4;
    let err = expect_error(open_bytes("state", bytes), "state");
    assert!(err.to_string().contains("unknown state 4"), "{err}");

    // The file parameters: a block size that is no power of two, and the flag of a
    // differencing disk. Find the item through the metadata table.
    let count = u16::from_le_bytes(good[metadata + 10..metadata + 12].try_into().unwrap());
    let params = (0..count as usize)
        .map(|i| metadata + 32 + i * 32)
        .find(|&e| good[e..e + 4] == [0x37, 0x67, 0xa1, 0xca])
        .map(|e| metadata + u32::from_le_bytes(good[e + 16..e + 20].try_into().unwrap()) as usize)
        .unwrap();
    let mut bytes = good.clone();
    bytes[params..params + 4].copy_from_slice(&3_000_000u32.to_le_bytes());
    let err = expect_error(open_bytes("block", bytes), "block");
    assert!(err.to_string().contains("power of two"), "{err}");
    let mut bytes = good.clone();
    bytes[params + 4] |= 2;
    let err = expect_error(open_bytes("child", bytes), "child");
    assert!(err.to_string().contains("no parent locator"), "{err}");

    // Cut short.
    let file = std::fs::File::open(&image).unwrap();
    let mut cut = vec![0u8; good.len() - (2 << 20)];
    file.read_exact_at(&mut cut, 0).unwrap();
    let err = expect_error(open_bytes("cut", cut), "cut");
    assert!(err.to_string().contains("outside the file"), "{err}");
}

/// A differencing disk made from the dynamic disk `writes` over the VHDX `parent` by
/// `tests/scripts/vhdx-differencing.py` (QEMU cannot write one): its parent locator holds
/// `locators` (`KEY=VALUE`) and the parent's `DataWriteGuid` (or `linkage`), and of its
/// present blocks only the sectors in `present` stay its own.
fn differencing(
    writes: &Path,
    parent: &Path,
    linkage: Option<&str>,
    locators: &[&str],
    present: &str,
) -> Vec<u8> {
    let out = writes.with_extension("avhdx");
    let mut args = vec![
        writes.to_str().unwrap(),
        parent.to_str().unwrap(),
        "--present",
        present,
    ];
    for locator in locators {
        args.extend(["--locator", locator]);
    }
    if let Some(linkage) = linkage {
        args.extend(["--linkage", linkage]);
    }
    fixture_script("vhdx-differencing.py", &args, &out)
}

#[test]
fn differencing_disks_read_over_their_parent() {
    let dir = tempdir();
    let size = 8 * MIB;
    let options = "subformat=dynamic,block_size=1M";
    let base = image_of_content(dir.path(), "base.vhdx", size, "vhdx", options);
    let base_raw = qemu_raw(&base, "vhdx", dir.path());
    // The checkpoint's writes, in blocks 0, 4 and 7 of 1 MiB.
    let writes = written_disk(
        dir.path(),
        "writes.vhdx",
        "vhdx",
        options,
        "8M",
        &[
            "write -P 0x5a 12345 70000",
            "write -P 0xc3 4500000 9000",
            "write -P 0x11 7M 1M",
        ],
    );
    let writes_raw = qemu_raw(&writes, "vhdx", dir.path());
    // Of block 0 only sectors 0 to 99 stay the checkpoint's, of block 4 sectors 8800 to
    // 8810 (partly present, through the chunk's sector bitmap), and block 7 whole.
    let listed = "0-99,8800-8810,14336-16383";
    let present =
        |sector: usize| sector < 100 || (8800..=8810).contains(&sector) || sector >= 14336;
    let written = |sector: usize| [0, 4, 7].contains(&(sector / 2048));
    let expected: Vec<u8> = (0..size)
        .map(|at| {
            if written(at / 512) && present(at / 512) {
                writes_raw[at]
            } else {
                base_raw[at]
            }
        })
        .collect();

    // Found by its relative path; and by the file name of its absolute path when the
    // relative one leads nowhere.
    let by_relative = differencing(
        &writes,
        &base,
        None,
        &[r"relative_path=.\base.vhdx"],
        listed,
    );
    let by_name = differencing(
        &writes,
        &base,
        None,
        &[
            r"relative_path=..\gone\base.vhdx",
            r"absolute_win32_path=\\?\D:\VMs\base.vhdx",
        ],
        listed,
    );
    for (name, bytes) in [("checkpoint.avhdx", by_relative), ("moved.avhdx", by_name)] {
        let image = write_raw(dir.path(), name, &bytes);
        let own = [12345, 8800 * 512, 7 * MIB as u64];
        let parents = [100 * 512, 8811 * 512];
        assert_reads_over_parent(&image, Format::Vhdx, &expected, &own, &parents, "base.vhdx");
    }

    // A checkpoint of that checkpoint, as Hyper-V chains them: read top down, each
    // sector from the newest disk that holds it.
    let writes2 = written_disk(
        dir.path(),
        "writes2.vhdx",
        "vhdx",
        options,
        "8M",
        &["write -P 0x99 12000 1000", "write -P 0x66 1M 600000"],
    );
    let writes2_raw = qemu_raw(&writes2, "vhdx", dir.path());
    let top = differencing(
        &writes2,
        &dir.path().join("checkpoint.avhdx"),
        None,
        &[r"relative_path=.\checkpoint.avhdx"],
        "23-25,2048-3219",
    );
    let top_sector = |sector: usize| (23..=25).contains(&sector) || (2048..=3219).contains(&sector);
    let expected2: Vec<u8> = (0..size)
        .map(|at| {
            if top_sector(at / 512) {
                writes2_raw[at]
            } else {
                expected[at]
            }
        })
        .collect();
    let image = write_raw(dir.path(), "top.avhdx", &top);
    let own = [12000, MIB as u64];
    let parents = [50 * 512, 7 * MIB as u64];
    assert_reads_over_parent(
        &image,
        Format::Vhdx,
        &expected2,
        &own,
        &parents,
        "checkpoint.avhdx",
    );
    let mut disk = open_file(&image, None).unwrap();
    assert_eq!(stored_in(&mut *disk, 3 * MIB as u64), "base.vhdx");

    // A parent written to since the checkpoint (another DataWriteGuid) is refused.
    let stale = differencing(
        &writes,
        &base,
        Some("{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"),
        &[r"relative_path=.\base.vhdx"],
        listed,
    );
    let image = write_raw(dir.path(), "stale.avhdx", &stale);
    let err = open_file(&image, None)
        .err()
        .expect("a changed parent is refused");
    assert!(err.to_string().contains("written to or replaced"), "{err}");
    assert!(
        err.to_string()
            .contains("{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"),
        "{err}"
    );
    // A parent that cannot be found, or opened without an opener.
    let orphan = differencing(
        &writes,
        &base,
        None,
        &[r"relative_path=.\nowhere.vhdx"],
        listed,
    );
    let image = write_raw(dir.path(), "orphan.avhdx", &orphan);
    let err = open_file(&image, None)
        .err()
        .expect("a missing parent is refused");
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingUnavailable { backing, .. } if backing == "nowhere.vhdx"),
        "{err}"
    );
    let bytes = std::fs::read(dir.path().join("checkpoint.avhdx")).unwrap();
    let err = expect_error(open_bytes("alone", bytes), "alone");
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingUnavailable { .. }),
        "{err}"
    );
}
