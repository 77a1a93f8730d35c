//! FAT12, FAT16 and FAT32 volumes: listings, contents and times against the source files,
//! long and short names.

use std::path::{Path, PathBuf};

use tessera_disk_fs::{FsError, FsKind, Volume};

use crate::support::*;

/// A FAT image of `size_kib` made by mkfs.fat and filled by mcopy from a source tree.
fn fat_image(bits: u8, size_kib: u64, tree: &Tree) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(&src, tree);
    let img = tmp.path().join("fs.img");
    mkfs_fat(bits, &src, &img, size_kib);
    (tmp, img)
}

const PLAIN: Expect = Expect { unix: false };

#[test]
fn fat32_reads_like_its_source() {
    let tree = Tree {
        big: 5 * MIB as usize + 123,
        with_symlinks: false,
        many: 300,
        sparse: true,
    };
    let (tmp, img) = fat_image(32, 40 * 1024, &tree);
    let mut vol = open_image(&img, "disk0/part2");
    assert_eq!(vol.kind(), "fat32");
    assert_eq!(vol.label().as_deref(), Some("TESTVOL"));
    let src = tmp.path().join("src");
    assert_same_tree(&mut vol, "", &src, PLAIN);
    check_names_and_times(&mut vol);
    check_offsets(&mut vol, &src);
}

#[test]
fn fat16_reads_like_its_source() {
    let tree = Tree {
        big: MIB as usize + 7,
        with_symlinks: false,
        many: 40,
        sparse: false,
    };
    let (tmp, img) = fat_image(16, 16 * 1024, &tree);
    let mut vol = open_image(&img, "disk0/part1");
    assert_eq!(vol.kind(), "fat16");
    let src = tmp.path().join("src");
    assert_same_tree(&mut vol, "", &src, PLAIN);
    check_names_and_times(&mut vol);
    check_offsets(&mut vol, &src);
}

#[test]
fn fat12_reads_like_its_source() {
    let tree = Tree {
        big: 200_001,
        with_symlinks: false,
        many: 20,
        sparse: false,
    };
    let (tmp, img) = fat_image(12, 2 * 1024, &tree);
    let mut vol = open_image(&img, "disk0/part3");
    assert_eq!(vol.kind(), "fat12");
    let src = tmp.path().join("src");
    assert_same_tree(&mut vol, "", &src, PLAIN);
    check_names_and_times(&mut vol);
    check_offsets(&mut vol, &src);
}

fn check_names_and_times(vol: &mut Volume) {
    let script = vol.stat("dir/mode.sh").unwrap();
    // FAT keeps local time in 2-second steps; mcopy ran with TZ=UTC.
    assert_eq!(script.mtime_ns, Some(MODE_SH_MTIME * 1_000_000_000));
    assert_eq!(
        (script.mode, script.uid, script.gid, script.ctime_ns),
        (None, None, None, None)
    );
    assert!(script.atime_ns.is_some());
    // Lookups ignore case and accept the 8.3 alias of a long name.
    assert_eq!(vol.stat("DIR/Mode.SH").unwrap(), script);
    let long = vol.stat("Long File Name With Spaces.txt").unwrap();
    assert_eq!(vol.stat("LONGFI~1.TXT").unwrap(), long);
    assert_eq!(long.name, "Long File Name With Spaces.txt");
    assert_eq!(vol.stat("ünïcødé.txt").unwrap().size, 8);
    let root = vol.stat("").unwrap();
    assert_eq!((root.name.as_str(), root.kind), ("", FsKind::Directory));
    assert!(matches!(
        vol.list("hello.txt"),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        vol.open_file("dir"),
        Err(FsError::NotAFile { .. })
    ));
    let err = vol.stat("dir/none").unwrap_err();
    assert!(
        matches!(err, FsError::NotFound { .. }) && err.to_string().contains("dir/none"),
        "{err}"
    );
}

fn check_offsets(vol: &mut Volume, src: &Path) {
    let big = std::fs::read(src.join("big.bin")).unwrap();
    let mut file = vol.open_file("big.bin").unwrap();
    for at in [150_000u64, 10, 199_000, 4097, 0] {
        file.seek(at);
        let mut piece = [0u8; 1000];
        assert_eq!(file.read(&mut piece).unwrap(), 1000);
        assert!(piece[..] == big[at as usize..at as usize + 1000], "at {at}");
    }
    let mut buf = [0u8; 10];
    assert_eq!(
        vol.read_file("big.bin", big.len() as u64 - 3, &mut buf)
            .unwrap(),
        3
    );
}
