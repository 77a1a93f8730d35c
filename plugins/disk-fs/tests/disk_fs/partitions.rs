//! MBR and GPT partition tables made by sfdisk and sgdisk, with file systems in their
//! partitions, checked against what `sfdisk -d` reports.

use std::path::Path;

use tessera_disk_fs::{FsError, Scheme, read_partitions};

use crate::support::*;

/// Checks the partitions read against `sfdisk -d`, which numbers them like Linux.
fn assert_matches_sfdisk(disk: &Path) -> tessera_disk_fs::PartitionTable {
    let table = read_partitions(&mut open_disk(disk)).unwrap();
    let read: Vec<(u32, (u64, u64))> = table
        .partitions
        .iter()
        .map(|p| (p.number, (p.start / 512, p.length / 512)))
        .collect();
    let expected: Vec<(u32, (u64, u64))> = sfdisk_dump(disk).into_iter().collect();
    assert_eq!(read, expected);
    table
}

#[test]
fn gpt_disk_with_ext4_and_fat32_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let (src_ext, src_fat) = (tmp.path().join("src-ext"), tmp.path().join("src-fat"));
    source_tree(
        &src_ext,
        &Tree {
            big: 5 * MIB as usize + 123,
            with_symlinks: true,
            many: 300,
            sparse: true,
        },
    );
    source_tree(
        &src_fat,
        &Tree {
            big: 3 * MIB as usize + 1,
            with_symlinks: false,
            many: 100,
            sparse: false,
        },
    );
    let disk = tmp.path().join("disk.img");
    blank(&disk, 64 * MIB);
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+24M",
            "-t",
            "1:8300",
            "-c",
            "1:root",
            "-n",
            "2:0:+36M",
            "-t",
            "2:0700",
            "-c",
            "2:data",
            "-A",
            "2:set:2",
            disk.to_str().unwrap(),
        ],
        &[],
    );
    let table = assert_matches_sfdisk(&disk);
    assert_eq!(table.scheme, Scheme::Gpt);
    assert!(table.warnings.is_empty());
    let [root, data] = &table.partitions[..] else {
        panic!("{table:?}")
    };
    assert_eq!((root.number, root.start, root.length), (1, MIB, 24 * MIB));
    assert_eq!(root.type_name, "0fc63daf-8483-4772-8e79-3d69d8477de4");
    assert_eq!(root.type_description(), Some("Linux filesystem"));
    assert_eq!((root.name.as_deref(), root.bootable), (Some("root"), false));
    assert_eq!(
        (data.number, data.start, data.length),
        (2, 25 * MIB, 36 * MIB)
    );
    assert_eq!(data.type_description(), Some("Microsoft basic data"));
    assert_eq!((data.name.as_deref(), data.bootable), (Some("data"), true));

    let (ext_img, fat_img) = (tmp.path().join("ext.img"), tmp.path().join("fat.img"));
    mkfs_ext("ext4", &src_ext, &ext_img, 24, &[]);
    mkfs_fat(32, &src_fat, &fat_img, 36 * 1024);
    dd_into(&disk, &ext_img, root.start);
    dd_into(&disk, &fat_img, data.start);

    let mut vol = open_partition(&disk, 1, "disk0/part1");
    assert_eq!(vol.kind(), "ext4");
    assert_same_tree(&mut vol, "", &src_ext, Expect { unix: true });
    let mut vol = open_partition(&disk, 2, "disk0/part2");
    assert_eq!(vol.kind(), "fat32");
    assert_same_tree(&mut vol, "", &src_fat, Expect { unix: false });
}

#[test]
fn mbr_disk_with_primary_and_logical_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let (src_ext, src_fat, src_small) = (
        tmp.path().join("src-ext"),
        tmp.path().join("src-fat"),
        tmp.path().join("src-small"),
    );
    source_tree(
        &src_ext,
        &Tree {
            big: 5 * MIB as usize + 123,
            with_symlinks: true,
            many: 300,
            sparse: true,
        },
    );
    source_tree(
        &src_fat,
        &Tree {
            big: MIB as usize,
            with_symlinks: false,
            many: 50,
            sparse: false,
        },
    );
    source_tree(
        &src_small,
        &Tree {
            big: 100_000,
            with_symlinks: false,
            many: 10,
            sparse: false,
        },
    );
    let disk = tmp.path().join("disk.img");
    blank(&disk, 64 * MIB);
    // Slot 2 stays empty; logical partitions follow in the extended partition of slot 4.
    let d = disk.to_str().unwrap();
    sfdisk(
        &disk,
        &format!(
            "label: dos\nunit: sectors\n\n\
             {d}1 : start=2048, size=32768, type=e, bootable\n\
             {d}3 : start=34816, size=4096, type=1\n\
             {d}4 : start=38912, size=92160, type=5\n\
             {d}5 : start=40960, size=40960, type=83\n\
             {d}6 : start=83968, size=40960, type=83\n"
        ),
    );
    let table = assert_matches_sfdisk(&disk);
    assert_eq!(table.scheme, Scheme::Mbr);
    let summary: Vec<(u32, &str, bool)> = table
        .partitions
        .iter()
        .map(|p| (p.number, p.type_name.as_str(), p.bootable))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "0x0e", true),
            (3, "0x01", false),
            (5, "0x83", false),
            (6, "0x83", false)
        ]
    );

    let images = [
        (1, "fat16", tmp.path().join("p1.img")),
        (3, "fat12", tmp.path().join("p3.img")),
        (5, "ext2", tmp.path().join("p5.img")),
        (6, "ext3", tmp.path().join("p6.img")),
    ];
    mkfs_fat(16, &src_fat, &images[0].2, 16 * 1024);
    mkfs_fat(12, &src_small, &images[1].2, 2 * 1024);
    mkfs_ext("ext2", &src_ext, &images[2].2, 20, &[]);
    mkfs_ext("ext3", &src_ext, &images[3].2, 20, &[]);
    for (number, _, img) in &images {
        let part = table
            .partitions
            .iter()
            .find(|p| p.number == *number)
            .unwrap();
        assert_eq!(std::fs::metadata(img).unwrap().len(), part.length);
        dd_into(&disk, img, part.start);
    }
    for (number, kind, _) in &images {
        let mut vol = open_partition(&disk, *number, &format!("disk0/part{number}"));
        assert_eq!(vol.kind(), *kind);
        let (src, expect) = match *kind {
            "fat16" => (&src_fat, Expect { unix: false }),
            "fat12" => (&src_small, Expect { unix: false }),
            _ => (&src_ext, Expect { unix: true }),
        };
        assert_same_tree(&mut vol, "", src, expect);
    }
}

#[test]
fn a_disk_without_a_table_is_one_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 10_000,
            with_symlinks: false,
            many: 3,
            sparse: false,
        },
    );
    let fat = tmp.path().join("fat.img");
    mkfs_fat(12, &src, &fat, 1024);
    let ext = tmp.path().join("ext.img");
    mkfs_ext("ext4", &src, &ext, 4, &[]);
    for img in [&fat, &ext] {
        let table = read_partitions(&mut open_disk(img)).unwrap();
        assert_eq!(table.scheme, Scheme::None, "{img:?}");
        assert!(table.partitions.is_empty());
        let mut vol = open_image(img, "disk0");
        assert_eq!(read_all(&mut vol, "hello.txt"), b"hello, world\n");
    }
}

/// A 16 MiB GPT disk with two partitions, as bytes.
fn small_gpt(tmp: &Path) -> Vec<u8> {
    let disk = tmp.join("gpt.img");
    blank(&disk, 16 * MIB);
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+4M",
            "-n",
            "2:0:+4M",
            "-c",
            "2:second",
            disk.to_str().unwrap(),
        ],
        &[],
    );
    read_bytes(&disk)
}

#[test]
fn a_corrupt_primary_gpt_falls_back_to_the_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let good = small_gpt(tmp.path());
    let intact = read_partitions(&mut good.clone()).unwrap();
    assert_eq!(intact.partitions.len(), 2);

    // A damaged header (its CRC fails), then a damaged entry array.
    for at in [512 + 40, 1024 + 130] {
        let mut disk = good.clone();
        disk[at] ^= 0xff;
        let table = read_partitions(&mut disk).unwrap();
        assert_eq!(table.partitions, intact.partitions, "damage at byte {at}");
        assert_eq!(table.warnings.len(), 1, "{:?}", table.warnings);
        assert!(
            table.warnings[0].contains("backup GPT"),
            "{:?}",
            table.warnings
        );
    }

    // Both copies damaged: an error naming both.
    let mut disk = good.clone();
    let last = disk.len() - 512;
    disk[512 + 40] ^= 0xff;
    disk[last + 40] ^= 0xff;
    let err = read_partitions(&mut disk).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FsError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("primary") && msg.contains("backup") && msg.contains("CRC"),
        "{msg}"
    );
}

#[test]
fn a_partition_past_the_end_of_the_disk_is_refused() {
    // A real table on a truncated image: the primary GPT is intact, partition 2 is not.
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = small_gpt(tmp.path());
    disk.truncate(8 * MIB as usize);
    let err = read_partitions(&mut disk).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FsError::PastEnd { .. }), "{msg}");
    assert!(
        msg.contains("partition 2") && msg.contains(&format!("{}", 8 * MIB)),
        "{msg}"
    );

    // An MBR entry reaching past the end.
    let mut disk = vec![0u8; MIB as usize];
    mbr_entry(&mut disk, 0, 1, 0x83, 2048, 4096);
    disk[510..512].copy_from_slice(&[0x55, 0xaa]);
    let err = read_partitions(&mut disk).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "partition 2 spans bytes {}..{}",
            2048 * 512,
            6144 * 512
        )),
        "{err}"
    );
}

/// Writes MBR entry `slot` (0-based) of the boot record at `sector`.
fn mbr_entry(disk: &mut [u8], sector: usize, slot: usize, kind: u8, start: u32, sectors: u32) {
    let at = sector * 512 + 446 + slot * 16;
    disk[at + 4] = kind;
    disk[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
    disk[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    disk[sector * 512 + 510..sector * 512 + 512].copy_from_slice(&[0x55, 0xaa]);
}

#[test]
fn logical_partitions_follow_the_ebr_chain_and_a_loop_is_an_error() {
    let mut disk = vec![0u8; 4 * MIB as usize];
    // Slot 2: data; slot 3: extended from sector 2048 to the end.
    mbr_entry(&mut disk, 0, 1, 0x83, 100, 100);
    mbr_entry(&mut disk, 0, 2, 0x05, 2048, 8192 - 2048);
    // EBR 1 at 2048: logical at +1, link to EBR 2 at extended + 1000.
    mbr_entry(&mut disk, 2048, 0, 0x83, 1, 500);
    mbr_entry(&mut disk, 2048, 1, 0x05, 1000, 600);
    // EBR 2 at 3048: logical at +2, no link.
    mbr_entry(&mut disk, 3048, 0, 0x0c, 2, 500);
    let table = read_partitions(&mut disk.clone()).unwrap();
    let got: Vec<(u32, u64, u64, &str)> = table
        .partitions
        .iter()
        .map(|p| {
            (
                p.number,
                p.start / 512,
                p.length / 512,
                p.type_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, 100, 100, "0x83"),
            (5, 2049, 500, "0x83"),
            (6, 3050, 500, "0x0c")
        ]
    );

    // EBR 2 links back to EBR 1.
    mbr_entry(&mut disk, 3048, 1, 0x05, 0, 600);
    let err = read_partitions(&mut disk).unwrap_err();
    assert!(
        err.to_string().contains("loops back to sector 2048"),
        "{err}"
    );
}

/// Runs util-linux's `fdisk` on `disk`, answering its prompts with `script`.
fn fdisk(disk: &Path, script: &str) {
    run_with_input("fdisk", &[disk.to_str().unwrap()], script);
}

/// A FreeBSD slice (MBR type 0xA5) holding a BSD disklabel that util-linux's `fdisk`
/// writes (`a` 4.2BSD, `b` swap): its partitions are numbered as `partx` (libblkid)
/// numbers them, after the primary ones, from 5; `a` holds a UFS2 volume, written past
/// the label as FreeBSD lays one out, which reads like its source. A label whose checksum
/// does not hold adds no partitions.
#[test]
fn bsd_disklabel_partitions_are_numbered_as_linux_does() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("bsd.img");
    blank(&disk, 64 * MIB);
    fdisk(&disk, "o\nn\np\n1\n2048\n\nt\na5\nw\n");
    fdisk(
        &disk,
        "b\ny\nn\na\n2048\n+40M\nt\na\n7\nn\nb\n86016\n\nt\nb\n1\nw\nq\n",
    );
    let shown = run(
        "partx",
        &[
            "--show",
            "--noheadings",
            "-o",
            "NR,START,SECTORS",
            disk.to_str().unwrap(),
        ],
        &[],
    );
    let expected: Vec<(u32, u64, u64)> = shown
        .lines()
        .map(|l| {
            let f: Vec<u64> = l.split_whitespace().map(|v| v.parse().unwrap()).collect();
            (f[0] as u32, f[1], f[2])
        })
        .collect();
    let table = read_partitions(&mut open_disk(&disk)).unwrap();
    let read: Vec<(u32, u64, u64)> = table
        .partitions
        .iter()
        .map(|p| (p.number, p.start / 512, p.length / 512))
        .collect();
    assert_eq!(read, expected);
    let named: Vec<(u32, &str, Option<&str>)> = table
        .partitions
        .iter()
        .map(|p| (p.number, p.type_name.as_str(), p.name.as_deref()))
        .collect();
    assert_eq!(
        named,
        [
            (1, "0xa5", None),
            (5, "bsd:7", Some("a")),
            (6, "bsd:1", Some("b"))
        ]
    );

    // UFS2 in `a`: its first 8 KiB, boot blocks the label lies in, left as they are.
    let root = tmp.path().join("root");
    let src = root.join("data");
    source_tree(
        &src,
        &Tree {
            big: 3 * MIB as usize + 1,
            with_symlinks: true,
            many: 20,
            sparse: false,
        },
    );
    let ufs = tmp.path().join("a.ufs");
    crate::ufs::makefs(&ufs, &root, 40, "version=2");
    let image = read_bytes(&ufs);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(&image[8192..], 2048 * 512 + 8192).unwrap();
    }
    assert_eq!(
        read_partitions(&mut open_disk(&disk))
            .unwrap()
            .partitions
            .len(),
        3
    );
    let mut vol = open_partition(&disk, 5, "disk0/part5");
    assert_eq!(vol.kind(), "ufs2");
    assert_same_tree(&mut vol, "data", &src, Expect { unix: true });

    // A damaged label: its checksum no longer holds.
    let mut bytes = read_bytes(&disk);
    bytes[2049 * 512 + 148] ^= 1;
    let table = read_partitions(&mut bytes).unwrap();
    let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1]);
}
