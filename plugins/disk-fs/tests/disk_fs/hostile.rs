//! Damaged and hostile images: targeted corruptions must give errors that name the volume
//! and the place, and random or mutated images must never panic, hang or allocate without
//! bound (the test binary's heap is capped in `main.rs`).

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config;
use tessera_disk_fs::{
    FsError, FsKind, LogicalVolumeReader, Slice, Volume, open_volume, read_partitions,
    read_physical_volume,
};
use tessera_disk_image::ReadAt;

use crate::support::*;

fn ext_bytes(kind: &str, size_mib: u64, extra: &[&str], tweak: &[&str]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 300_000,
            with_symlinks: true,
            many: 40,
            sparse: false,
        },
    );
    // Attributes in the inode and in an attribute block, for mutations to land in.
    for (file, name, len) in [
        ("hello.txt", "user.small", 12),
        ("big.bin", "user.big", 700),
    ] {
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::setxattr(src.join(file), name, &pattern(len, 3), flags).unwrap();
    }
    let img = tmp.path().join("fs.img");
    mkfs_ext(kind, &src, &img, size_mib, extra);
    for request in tweak {
        run(
            "debugfs",
            &["-w", "-R", request, img.to_str().unwrap()],
            &[],
        );
    }
    read_bytes(&img)
}

fn fat_bytes(bits: u8, size_kib: u64) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 300_000,
            with_symlinks: false,
            many: 40,
            sparse: false,
        },
    );
    let img = tmp.path().join("fs.img");
    mkfs_fat(bits, &src, &img, size_kib);
    read_bytes(&img)
}

fn open(bytes: Vec<u8>, what: &str) -> Result<Volume, FsError> {
    open_volume(Box::new(bytes), what)
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn corrupt_ext_superblocks_are_named() {
    let good = ext_bytes("ext4", 8, &[], &[]);

    let mut img = good.clone();
    img[1024 + 4..1024 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let msg = open(img, "disk0/part1").unwrap_err().to_string();
    assert!(
        msg.starts_with("disk0/part1: corrupt at byte 1028"),
        "{msg}"
    );
    assert!(msg.contains("4294967295 blocks"), "{msg}");

    let mut img = good.clone();
    img[1024 + 0x18] = 20;
    let msg = open(img, "disk0/part1").unwrap_err().to_string();
    assert!(
        msg.contains("corrupt at byte 1048") && msg.contains("block size"),
        "{msg}"
    );

    let mut img = good.clone();
    img[1024 + 0x38] = 0;
    let err = open(img, "disk0/part1").unwrap_err();
    assert!(matches!(err, FsError::UnknownFilesystem { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("disk0/part1: no ext2/ext3/ext4, XFS, btrfs, NTFS, FAT or exFAT"),
        "{err}"
    );

    // Any other damage to a checksummed superblock is caught by its checksum.
    let mut img = good;
    img[1024 + 0x78] ^= 0x55;
    let msg = open(img, "disk0/part1").unwrap_err().to_string();
    assert!(
        msg.starts_with("disk0/part1: corrupt") && msg.contains("checksum"),
        "{msg}"
    );
}

#[test]
fn truncated_images_are_refused_with_their_sizes() {
    let mut img = ext_bytes("ext4", 8, &[], &[]);
    img.truncate(3 * MIB as usize);
    let msg = open(img, "disk1/part2").unwrap_err().to_string();
    assert!(
        msg.contains("disk1/part2") && msg.contains("holds only 3145728 bytes"),
        "{msg}"
    );

    let mut img = fat_bytes(16, 16 * 1024);
    img.truncate(10 * MIB as usize);
    let msg = open(img, "disk1/part3").unwrap_err().to_string();
    assert!(
        msg.contains("disk1/part3") && msg.contains("holds only 10485760 bytes"),
        "{msg}"
    );

    // A partition table whose disk was cut short: reading a volume past the cut fails with
    // the offset of the failed read.
    let img = ext_bytes("ext2", 8, &["-b", "1024"], &[]);
    let mut cut = img.clone();
    cut.truncate(2 * MIB as usize);
    let sliced = Slice::new(cut, 0, 2 * MIB).unwrap();
    let msg = open_volume(Box::new(sliced), "disk0/part1")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("truncated image"), "{msg}");
}

/// Byte offset of an inode in an image, from `debugfs imap`.
fn inode_offset(img: &[u8], inode: u32) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("fs.img");
    std::fs::write(&path, img).unwrap();
    let out = run(
        "debugfs",
        &["-R", &format!("imap <{inode}>"), path.to_str().unwrap()],
        &[],
    );
    let block: usize = out
        .split("located at block ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let offset = usize::from_str_radix(out.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
    let block_size = 1024 << u32_le(img, 1024 + 0x18);
    block * block_size + offset
}

#[test]
fn a_corrupt_root_inode_is_an_error_naming_the_volume() {
    // ext2: no checksums; the root directory's first block points far outside the volume.
    let mut img = ext_bytes("ext2", 4, &["-b", "1024"], &[]);
    let root = inode_offset(&img, 2);
    img[root + 40..root + 44].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let mut vol = open(img, "disk0/part5").unwrap();
    let msg = vol.list("").unwrap_err().to_string();
    assert!(
        msg.starts_with("disk0/part5: corrupt") && msg.contains("block"),
        "{msg}"
    );

    // ext4: the inode checksum catches a flipped mode bit.
    let mut img = ext_bytes("ext4", 8, &[], &[]);
    let root = inode_offset(&img, 2);
    img[root] ^= 0x01;
    let mut vol = open(img, "disk0/part1").unwrap();
    let msg = vol.list("").unwrap_err().to_string();
    assert!(
        msg.starts_with("disk0/part1: corrupt") && msg.contains("checksum"),
        "{msg}"
    );
}

#[test]
fn an_ext_directory_loop_ends_at_the_depth_limit() {
    // A second link to `dir` inside its own subdirectory.
    let img = ext_bytes("ext2", 4, &["-b", "1024"], &["link dir dir/nested/loop"]);
    let mut vol = open(img, "disk0/part1").unwrap();
    assert_eq!(vol.stat("dir/nested/loop").unwrap().kind, FsKind::Directory);
    let mut path = String::from("dir");
    for _ in 0..1000 {
        path.push_str("/nested/loop");
        match vol.list(&path) {
            Ok(entries) => assert!(entries.iter().any(|e| e.name == "nested")),
            Err(FsError::LimitExceeded { what, detail }) => {
                assert_eq!(what, "disk0/part1");
                assert!(detail.contains("256 components"), "{detail}");
                return;
            }
            Err(other) => panic!("{other}"),
        }
    }
    panic!("the walk never ended");
}

/// Offset of the short directory entry named `name` (11 bytes, padded) with attribute `attr`.
fn short_entry(img: &[u8], name: &[u8; 11], attr: u8) -> usize {
    (0..img.len() - 32)
        .step_by(32)
        .find(|&at| &img[at..at + 11] == name && img[at + 11] == attr)
        .unwrap_or_else(|| panic!("no entry {:?}", String::from_utf8_lossy(name)))
}

#[test]
fn fat_directory_and_cluster_loops_are_errors() {
    let good = fat_bytes(16, 16 * 1024);

    // `dir/nested` made to point at `dir` itself.
    let mut img = good.clone();
    let dir = short_entry(&img, b"DIR        ", 0x10);
    let nested = short_entry(&img, b"NESTED     ", 0x10);
    let (lo, hi) = (img[dir + 26], img[dir + 27]);
    img[nested + 26] = lo;
    img[nested + 27] = hi;
    let mut vol = open(img, "disk0/part1").unwrap();
    for path in ["dir/nested", "dir/nested/nested/deep"] {
        let err = vol.list(path).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("disk0/part1: corrupt at byte") && msg.contains("directory loop"),
            "{path}: {msg}"
        );
    }

    // The cluster chain of `big.bin` made to loop.
    let mut img = good;
    let big = short_entry(&img, b"BIG     BIN", 0x20);
    let first = usize::from(u16::from_le_bytes([img[big + 26], img[big + 27]]));
    let fat = 512 * usize::from(u16::from_le_bytes([img[14], img[15]]));
    let entry = fat + 2 * (first + 3);
    assert_eq!(
        usize::from(u16::from_le_bytes([img[entry], img[entry + 1]])),
        first + 4,
        "mcopy allocates contiguously"
    );
    img[entry..entry + 2].copy_from_slice(&(first as u16).to_le_bytes());
    let mut vol = open(img, "disk0/part1").unwrap();
    let mut buf = vec![0u8; 300_000];
    let msg = vol
        .read_file("big.bin", 0, &mut buf)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("disk0/part1") && msg.contains("loops back to cluster"),
        "{msg}"
    );
}

/// Lists, stats and reads everything reachable, ignoring errors, within fixed budgets.
fn exercise(vol: &mut Volume) {
    let _ = (vol.kind(), vol.label(), vol.stat(""));
    let mut stack = vec![(String::new(), 0)];
    let mut visited = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while let Some((path, depth)) = stack.pop() {
        let Ok(entries) = vol.list(&path) else {
            continue;
        };
        for entry in entries.into_iter().take(100) {
            visited += 1;
            if visited > 400 {
                return;
            }
            let child = if path.is_empty() {
                entry.name.clone()
            } else {
                format!("{path}/{}", entry.name)
            };
            let _ = vol.stat(&child);
            let _ = vol.extras(&child);
            match entry.kind {
                FsKind::Directory if depth < 6 => stack.push((child, depth + 1)),
                FsKind::File => {
                    if let Ok(mut file) = vol.open_file(&child) {
                        let mut total = 0;
                        while let Ok(n) = file.read(&mut buf) {
                            total += n;
                            if n == 0 || total > 2 * MIB as usize {
                                break;
                            }
                        }
                        file.seek(u64::MAX);
                        let _ = file.read(&mut buf);
                    }
                    let _ = vol.read_file(&child, 1, &mut buf[..100]);
                }
                _ => {}
            }
        }
    }
}

/// Opens every partition of `disk` (or the whole disk) and exercises it, as the vm-disk
/// plugin opens them: an LVM2 physical volume's logical volumes, or the file system.
fn exercise_disk(disk: Vec<u8>) {
    let table = read_partitions(&mut disk.clone());
    match table {
        Ok(table) if !table.partitions.is_empty() => {
            for p in &table.partitions {
                if let Ok(mut slice) = Slice::partition(disk.clone(), p) {
                    let mut bytes = vec![0u8; slice.len() as usize];
                    if slice.read_exact_at(0, &mut bytes).is_ok() {
                        exercise_volume(bytes);
                    }
                }
            }
        }
        _ => exercise_volume(disk),
    }
}

fn exercise_volume(mut bytes: Vec<u8>) {
    match read_physical_volume(&mut bytes, "fuzz") {
        Ok(Some(pv)) => {
            for lv in &pv.volumes {
                let open = |_: &str| Some(Box::new(bytes.clone()) as Box<dyn ReadAt>);
                if let Ok(lv) = LogicalVolumeReader::new(lv, open, "fuzz")
                    && let Ok(mut vol) = open_volume(Box::new(lv), "fuzz")
                {
                    exercise(&mut vol);
                }
            }
        }
        Ok(None) => {
            if let Ok(mut vol) = open_volume(Box::new(bytes), "fuzz") {
                exercise(&mut vol);
            }
        }
        Err(_) => {}
    }
}

/// Valid images to mutate, made once.
fn corpus() -> &'static [(&'static str, Vec<u8>)] {
    static CORPUS: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        source_tree(
            &tmp.path().join("src"),
            &Tree {
                big: 30_000,
                with_symlinks: true,
                many: 10,
                sparse: false,
            },
        );
        vec![
            ("ext4", ext_bytes("ext4", 4, &[], &[])),
            ("ext3", ext_bytes("ext3", 4, &["-b", "1024"], &[])),
            // Marked as needing recovery, so opening it reads the journal: one that cannot be
            // replayed, and one holding a transaction to replay.
            (
                "ext3-recovery",
                ext_bytes("ext3", 4, &["-b", "1024"], &["feature needs_recovery"]),
            ),
            ("ext4-journal", {
                let img = tmp.path().join("journal.img");
                mkfs_ext("ext4", &tmp.path().join("src"), &img, 4, &[]);
                journal_transaction(&img, true);
                read_bytes(&img)
            }),
            (
                "ext2",
                ext_bytes("ext2", 2, &["-b", "1024", "-I", "128"], &[]),
            ),
            (
                "ext4-4k",
                ext_bytes("ext4", 8, &["-b", "4096", "-O", "^metadata_csum"], &[]),
            ),
            // Group descriptors spread over 32 groups, an attribute value in an inode.
            (
                "ext4-meta_bg",
                ext_bytes(
                    "ext4",
                    8,
                    &[
                        "-g",
                        "256",
                        "-O",
                        "meta_bg,^resize_inode,ea_inode,^metadata_csum",
                    ],
                    &[&format!(
                        "ea_set /big.bin user.ea_inode {}",
                        "v".repeat(1500)
                    )],
                ),
            ),
            // Files, symlinks and directories kept in their inodes (`dir` and those below
            // it); without checksums, so that mutations reach the inline parsers.
            (
                "ext4-inline_data",
                ext_bytes("ext4", 4, &["-O", "inline_data,^metadata_csum"], &[]),
            ),
            ("ntfs", {
                let img = tmp.path().join("ntfs.img");
                crate::ntfs::mkntfs(&img, 4, "FUZZ");
                read_bytes(&img)
            }),
            ("xfs", {
                let img = tmp.path().join("xfs.img");
                crate::xfs::xfs_from_prototype(&tmp.path().join("src"), &img, 16, true);
                read_bytes(&img)
            }),
            ("xfs-v4", {
                let img = tmp.path().join("xfs4.img");
                crate::xfs::xfs_from_prototype(&tmp.path().join("src"), &img, 16, false);
                read_bytes(&img)
            }),
            ("btrfs", {
                let img = tmp.path().join("btrfs.img");
                let root = tmp.path().join("btrfs-root");
                source_tree(
                    &root,
                    &Tree {
                        big: 300_000,
                        with_symlinks: true,
                        many: 200,
                        sparse: true,
                    },
                );
                crate::btrfs::mkfs_btrfs(&img, 16, "FUZZ", Some(&root), &["--mixed"]);
                read_bytes(&img)
            }),
            ("exfat", {
                let img = tmp.path().join("exfat.img");
                crate::exfat::mkfs_exfat(&img, 4, "FUZZ");
                // Filled where it can be mounted (as root); empty, with only its
                // bitmap, up-case table and label, elsewhere.
                if crate::exfat::cannot_mount().is_none() {
                    // exFAT has no symlinks.
                    let src = tmp.path().join("exfat-src");
                    source_tree(
                        &src,
                        &Tree {
                            big: 30_000,
                            with_symlinks: false,
                            many: 10,
                            sparse: false,
                        },
                    );
                    crate::exfat::with_mounted(&img, &tmp.path().join("exfat-mnt"), |mnt| {
                        run(
                            "cp",
                            &["-r", &format!("{}/.", src.display()), mnt.to_str().unwrap()],
                            &[],
                        );
                    });
                }
                read_bytes(&img)
            }),
            ("ufs2", {
                let img = tmp.path().join("ufs.img");
                crate::ufs::makefs(&img, &tmp.path().join("src"), 4, "version=2");
                read_bytes(&img)
            }),
            ("ufs1", {
                let img = tmp.path().join("ufs1.img");
                crate::ufs::makefs(&img, &tmp.path().join("src"), 4, "version=1");
                read_bytes(&img)
            }),
            ("fat12", fat_bytes(12, 1024)),
            ("fat16", fat_bytes(16, 16 * 1024)),
            ("fat32", fat_bytes(32, 40 * 1024)),
            ("gpt", partitioned(tmp.path(), true)),
            ("mbr", partitioned(tmp.path(), false)),
        ]
    })
}

/// A 6 MiB disk with a FAT12 and an ext2 partition (GPT), or a FAT12 primary and an ext2
/// logical partition (MBR).
fn partitioned(tmp: &Path, gpt: bool) -> Vec<u8> {
    let disk = tmp.join(if gpt { "gpt.img" } else { "mbr.img" });
    blank(&disk, 6 * MIB);
    if gpt {
        run(
            "sgdisk",
            &["-n", "1:2048:+1M", "-n", "2:0:+2M", disk.to_str().unwrap()],
            &[],
        );
    } else {
        let d = disk.to_str().unwrap();
        sfdisk(
            &disk,
            &format!(
                "label: dos\nunit: sectors\n\n{d}1 : start=2048, size=2048, type=1\n{d}2 : start=4096, size=8192, type=5\n{d}5 : start=6144, size=4096, type=83\n"
            ),
        );
    }
    let table = read_partitions(&mut open_disk(&disk)).unwrap();
    let fat = tmp.join("p-fat.img");
    let ext = tmp.join("p-ext.img");
    let src = tmp.join("p-src");
    if !src.exists() {
        source_tree(
            &src,
            &Tree {
                big: 50_000,
                with_symlinks: false,
                many: 5,
                sparse: false,
            },
        );
    }
    mkfs_fat(12, &src, &fat, 1024);
    mkfs_ext("ext2", &src, &ext, 2, &["-b", "1024"]);
    dd_into(&disk, &fat, table.partitions[0].start);
    dd_into(&disk, &ext, table.partitions[1].start);
    read_bytes(&disk)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Failures are reported, never saved into the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..70_000), ext in any::<bool>(), fat in any::<bool>(), lvm in any::<bool>(), ntfs in any::<bool>()) {
        let mut disk = bytes;
        if ntfs && disk.len() > 512 {
            disk[3..11].copy_from_slice(b"NTFS    ");
        }
        if lvm && disk.len() > 1024 {
            disk[512..520].copy_from_slice(b"LABELONE");
            disk[520..528].copy_from_slice(&1u64.to_le_bytes());
            disk[536..544].copy_from_slice(b"LVM2 001");
        }
        // Plant the signatures that send the bytes down each parser.
        if ext && disk.len() > 1082 {
            disk[1080..1082].copy_from_slice(&[0x53, 0xef]);
        }
        if fat && disk.len() > 512 {
            disk[0] = 0xeb;
            disk[2] = 0x90;
            disk[510..512].copy_from_slice(&[0x55, 0xaa]);
        }
        exercise_disk(disk);
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn mutated_images_never_panic(
        which in any::<prop::sample::Index>(),
        // (region, position in region, new byte): regions cover the first 4 KiB (boot
        // sector, partition tables, superblock), 512 KiB and 2 MiB (group descriptors,
        // bitmaps, inode tables, FATs, root directories), and the whole image.
        mutations in proptest::collection::vec((0usize..4, any::<u64>(), any::<u8>()), 1..24),
    ) {
        let corpus = corpus();
        let (_, image) = &corpus[which.index(corpus.len())];
        let mut disk = image.clone();
        for (region, at, byte) in mutations {
            let span = [4096, 512 * 1024, 2 * 1024 * 1024, disk.len()][region].min(disk.len()) as u64;
            disk[(at % span) as usize] = byte;
        }
        exercise_disk(disk);
    }
}

/// Sets the CRC-32C of the btrfs superblock and of every tree block of `disk` (found by
/// the volume's fsid in their header), so that the parsers behind the checksums see what
/// a mutation did.
fn fix_btrfs_checksums(disk: &mut [u8]) {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let fsid = disk[0x1_0020..0x1_0030].to_vec();
    let node = u32::from_le_bytes(disk[0x1_0094..0x1_0098].try_into().unwrap()) as usize;
    let node = if node.is_power_of_two() && (4096..=65536).contains(&node) {
        node
    } else {
        4096
    };
    for at in (0..<[u8]>::len(disk) - node + 1).step_by(node) {
        if disk[at + 0x20..at + 0x30] == fsid[..] {
            let sum = crc.checksum(&disk[at + 32..at + node]);
            disk[at..at + 4].copy_from_slice(&sum.to_le_bytes());
        }
    }
    let sum = crc.checksum(&disk[0x1_0000 + 32..0x1_0000 + 4096]);
    disk[0x1_0000..0x1_0004].copy_from_slice(&sum.to_le_bytes());
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn mutated_btrfs_trees_never_panic(
        mutations in proptest::collection::vec((0usize..2, any::<u64>(), any::<u8>()), 1..24),
    ) {
        let corpus = corpus();
        let (_, image) = corpus.iter().find(|(name, _)| *name == "btrfs").unwrap();
        let mut disk = image.clone();
        for (region, at, byte) in mutations {
            let span = [2 * 1024 * 1024, disk.len()][region] as u64;
            disk[(at % span) as usize] = byte;
        }
        fix_btrfs_checksums(&mut disk);
        exercise_disk(disk);
    }
}

/// Sets the checksum of the exFAT boot region and of every entry set of `disk` (file
/// entries found at entry boundaries, as a mutation left them), so that the parsers behind
/// the checksums see what a mutation did.
fn fix_exfat_checksums(disk: &mut [u8]) {
    let sum = disk[..11 * 512]
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 106 | 107 | 112))
        .fold(0u32, |sum, (_, &b)| {
            sum.rotate_right(1).wrapping_add(u32::from(b))
        });
    for word in disk[11 * 512..12 * 512].chunks_exact_mut(4) {
        word.copy_from_slice(&sum.to_le_bytes());
    }
    let len = <[u8]>::len(disk);
    for set in (0..len - 1).step_by(32) {
        let entries = usize::from(disk[set + 1]) + 1;
        if disk[set] == 0x85 && (3..=19).contains(&entries) && set + entries * 32 <= len {
            crate::exfat::fix_set_checksum(disk, set);
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn mutated_exfat_volumes_never_panic(
        mutations in proptest::collection::vec((0usize..2, any::<u64>(), any::<u8>()), 1..24),
    ) {
        let corpus = corpus();
        let (_, image) = corpus.iter().find(|(name, _)| *name == "exfat").unwrap();
        let mut disk = image.clone();
        for (region, at, byte) in mutations {
            let span = [2 * 1024 * 1024, disk.len()][region] as u64;
            disk[(at % span) as usize] = byte;
        }
        fix_exfat_checksums(&mut disk);
        exercise_disk(disk);
    }
}

#[test]
fn ambiguous_signatures_open_the_right_file_system() {
    // A FAT16 volume whose FAT happens to hold the ext magic where ext keeps it.
    let mut fat = fat_bytes(16, 16 * 1024);
    fat[1080..1082].copy_from_slice(&[0x53, 0xef]);
    assert_eq!(open(fat.clone(), "disk0/part1").unwrap().kind(), "fat16");

    // An ext volume with a FAT boot sector left in its unused first sector.
    let mut ext = ext_bytes("ext4", 4, &[], &[]);
    ext[..512].copy_from_slice(&fat[..512]);
    let mut vol = open(ext, "disk0/part1").unwrap();
    assert_eq!(vol.kind(), "ext4");
    assert_eq!(vol.stat("hello.txt").unwrap().size, 13);
}
