//! Persistent dirty bitmaps in qcow2 images, made and written to by QEMU's tools: a bitmap
//! marks exactly the granules written while it was enabled, and one that may have missed
//! writes is refused with the reason.

use std::path::Path;

use tessera_disk_image::{DiskImage, ImageErrorKind};

use crate::support::*;

const MIB: u64 = 1 << 20;

/// Adds a bitmap to `image` with `qemu-img bitmap --add`, and `extra` options.
fn add_bitmap(image: &Path, name: &str, extra: &[&str]) {
    let mut args = vec!["bitmap", "--add"];
    args.extend(extra);
    args.extend([image.to_str().unwrap(), name]);
    qemu_img(&args);
}

/// `ranges` (offset, length) rounded out to `granularity` and merged.
fn granules(ranges: &[(u64, u64)], granularity: u64) -> Vec<(u64, u64)> {
    let mut sorted: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(at, len)| {
            let start = at / granularity * granularity;
            (start, (at + len).next_multiple_of(granularity) - start)
        })
        .collect();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (at, len) in sorted {
        match merged.last_mut() {
            Some(last) if last.0 + last.1 >= at => {
                last.1 = last.1.max(at + len - last.0);
            }
            _ => merged.push((at, len)),
        }
    }
    merged
}

/// `ranges` clipped to `offset..offset + length`.
fn clipped(ranges: &[(u64, u64)], offset: u64, length: u64) -> Vec<(u64, u64)> {
    let end = offset + length;
    ranges
        .iter()
        .filter_map(|&(at, len)| {
            let (start, stop) = (at.max(offset), (at + len).min(end));
            (start < stop).then(|| (start, stop - start))
        })
        .collect()
}

/// Where the first bitmap directory entry of the qcow2 `bytes` lies, read from its header.
fn first_bitmap_entry(bytes: &[u8]) -> usize {
    let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let be64 = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    let mut pos = be32(100) as usize;
    loop {
        let (kind, len) = (be32(pos), be32(pos + 4) as usize);
        assert_ne!(kind, 0, "no bitmaps extension");
        if kind == 0x2385_2875 {
            return be64(pos + 8 + 16) as usize;
        }
        pos += 8 + len.next_multiple_of(8);
    }
}

#[test]
fn bitmaps_mark_the_granules_written_while_they_were_enabled() {
    let dir = tempdir();
    let d = dir.path();
    let image = image_of_content(d, "vm.qcow2", 16 << 20, "qcow2", "cluster_size=65536");
    // Written before any bitmap existed: in none.
    qemu_io(&image, "qcow2", &["write -P 1 5000000 4096"]);
    add_bitmap(&image, "b0", &[]);
    add_bitmap(&image, "fine", &["-g", "4096"]);
    add_bitmap(&image, "coarse", &["-g", "1048576"]);
    let first = [(100_000, 5_000), (3 * MIB - 10, 20), (9 * MIB, 3 * MIB + 1)];
    qemu_io(
        &image,
        "qcow2",
        &[
            "write -P 2 100000 5000",
            "write -P 3 3145718 20",
            "write -z 9437184 3145729",
        ],
    );
    // Made after those writes: only what follows.
    add_bitmap(&image, "late", &[]);
    let second = [(15 * MIB, 4096)];
    qemu_io(&image, "qcow2", &["write -P 4 15728640 4096"]);
    let all: Vec<(u64, u64)> = first.iter().chain(&second).copied().collect();

    let mut disk = open_file(&image, None).unwrap();
    let size = disk.virtual_size();
    for (bitmap, granularity, written) in [
        ("b0", 65536, &all[..]),
        ("fine", 4096, &all[..]),
        ("coarse", MIB, &all[..]),
        ("late", 65536, &second[..]),
    ] {
        let expected = granules(written, granularity);
        assert_eq!(
            disk.dirty_ranges(bitmap, 0, size).unwrap(),
            expected,
            "bitmap {bitmap}"
        );
        // Windows that start and end inside granules see the same, clipped.
        for (offset, length) in [
            (0, 1),
            (100_001, 3 * MIB),
            (7 * MIB + 3, 8 * MIB),
            (size - 1, 1),
        ] {
            assert_eq!(
                disk.dirty_ranges(bitmap, offset, length).unwrap(),
                clipped(&expected, offset, length),
                "bitmap {bitmap} over {offset}+{length}"
            );
        }
    }
    assert!(disk.dirty_ranges("b0", size, 1).is_err(), "past the disk");
}

#[test]
fn bitmaps_that_may_miss_writes_are_refused_with_the_reason() {
    let dir = tempdir();
    let d = dir.path();
    let image = image_of_content(d, "vm.qcow2", 4 << 20, "qcow2", "cluster_size=65536");
    add_bitmap(&image, "active", &[]);
    add_bitmap(&image, "off", &["--disable"]);
    qemu_io(&image, "qcow2", &["write -P 2 100000 5000"]);
    let reason = |image: &Path, bitmap: &str| {
        let mut disk = open_file(image, None).unwrap();
        let size = disk.virtual_size();
        let err = expect_error(disk.dirty_ranges(bitmap, 0, size), image.to_str().unwrap());
        assert!(
            matches!(err.kind(), ImageErrorKind::Bitmap { bitmap: b, .. } if b == bitmap),
            "{err}"
        );
        err.to_string()
    };
    let message = reason(&image, "off");
    assert!(message.contains("disabled"), "{message}");
    let message = reason(&image, "missing");
    assert!(
        message.contains("no bitmap of that name") && message.contains("\"active\""),
        "{message}"
    );

    // Marked in use, as QEMU leaves a bitmap it had open when it crashed.
    let mut bytes = std::fs::read(&image).unwrap();
    let entry = first_bitmap_entry(&bytes);
    bytes[entry + 15] |= 1;
    let in_use = path(d, "in-use.qcow2");
    std::fs::write(&in_use, &bytes).unwrap();
    let message = reason(&in_use, "active");
    assert!(
        message.contains("in use") && message.contains("NBD"),
        "{message}"
    );

    // Invalidated: the autoclear bit cleared by a program that does not know bitmaps.
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[95] &= !1;
    let invalidated = path(d, "invalidated.qcow2");
    std::fs::write(&invalidated, &bytes).unwrap();
    assert!(reason(&invalidated, "active").contains("invalidated"));

    // No bitmaps at all, and a format that has none.
    let plain = image_of_content(
        d,
        "plain.qcow2",
        MIB as usize,
        "qcow2",
        "cluster_size=65536",
    );
    assert!(reason(&plain, "active").contains("no persistent bitmaps"));
    let raw = write_raw(d, "disk.raw", &content(MIB as usize, 3));
    assert!(reason(&raw, "active").contains("qcow2"));

    // A damaged table: the wrong number of entries, then an entry with reserved bits.
    let mut bytes = std::fs::read(&image).unwrap();
    let entry = first_bitmap_entry(&bytes);
    bytes[entry + 11] ^= 2;
    let short = path(d, "short.qcow2");
    std::fs::write(&short, &bytes).unwrap();
    let mut disk = open_file(&short, None).unwrap();
    let err = expect_error(disk.dirty_ranges("active", 0, MIB), short.to_str().unwrap());
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(at), .. } if *at == entry as u64 + 8),
        "{err}"
    );
    // A full read still works: the damage is only in the bitmaps.
    let mut buf = vec![0u8; 4096];
    disk.read_at(0, &mut buf).unwrap();

    // Extra data said to be 4 GiB long: past the directory's end, whatever usize is.
    let mut bytes = std::fs::read(&image).unwrap();
    let entry = first_bitmap_entry(&bytes);
    bytes[entry + 20..entry + 24].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
    let long = path(d, "long.qcow2");
    std::fs::write(&long, &bytes).unwrap();
    let mut disk = open_file(&long, None).unwrap();
    let err = expect_error(disk.dirty_ranges("active", 0, MIB), long.to_str().unwrap());
    assert!(
        err.to_string().contains("past the end of the directory"),
        "{err}"
    );

    let mut bytes = std::fs::read(&image).unwrap();
    let entry = first_bitmap_entry(&bytes);
    let table = u64::from_be_bytes(bytes[entry..entry + 8].try_into().unwrap()) as usize;
    bytes[table] |= 0x80;
    let reserved = path(d, "reserved.qcow2");
    std::fs::write(&reserved, &bytes).unwrap();
    let mut disk = open_file(&reserved, None).unwrap();
    let err = expect_error(
        disk.dirty_ranges("active", 0, MIB),
        reserved.to_str().unwrap(),
    );
    assert!(err.to_string().contains("reserved bits"), "{err}");
}
