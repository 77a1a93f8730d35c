//! ext2, ext3 and ext4 volumes: listings, contents and metadata against the source files,
//! symlink handling, and reads at offsets.

use std::path::{Path, PathBuf};

use tessera_disk_fs::{FsError, FsKind, Volume};

use crate::support::*;

/// A file-system image of 24 MiB made by `mke2fs -t kind` from the full source tree.
fn ext_image(kind: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 5 * MIB as usize + 123,
            with_symlinks: true,
            many: 300,
            sparse: true,
        },
    );
    let img = tmp.path().join("fs.img");
    mkfs_ext(kind, &src, &img, 24, extra);
    (tmp, img)
}

#[test]
fn ext4_reads_like_its_source() {
    let (tmp, img) = ext_image("ext4", &[]);
    let mut vol = open_image(&img, "disk0/part1");
    assert_eq!(vol.kind(), "ext4");
    let expect = Expect { unix: true };
    assert_same_tree(&mut vol, "", &tmp.path().join("src"), expect);
    check_metadata(&mut vol, &tmp.path().join("src"));
    check_symlinks(&mut vol);
    check_offsets(&mut vol, &tmp.path().join("src"));
}

#[test]
fn ext3_with_1k_blocks_reads_like_its_source() {
    let (tmp, img) = ext_image("ext3", &["-b", "1024"]);
    let mut vol = open_image(&img, "disk0/part6");
    assert_eq!(vol.kind(), "ext3");
    let expect = Expect { unix: true };
    assert_same_tree(&mut vol, "", &tmp.path().join("src"), expect);
    check_symlinks(&mut vol);
    check_offsets(&mut vol, &tmp.path().join("src"));
}

#[test]
fn ext2_with_128_byte_inodes_reads_like_its_source() {
    let (tmp, img) = ext_image("ext2", &["-b", "1024", "-I", "128"]);
    let mut vol = open_image(&img, "disk0/part5");
    assert_eq!(vol.kind(), "ext2");
    let expect = Expect { unix: true };
    assert_same_tree(&mut vol, "", &tmp.path().join("src"), expect);
    check_symlinks(&mut vol);
    // Small inodes keep no creation time.
    assert_eq!(vol.stat("hello.txt").unwrap().btime_ns, None);
}

fn check_metadata(vol: &mut Volume, src: &Path) {
    let script = vol.stat("dir/mode.sh").unwrap();
    assert_eq!(script.name, "mode.sh");
    assert_eq!(script.mode, Some(0o100_750));
    assert_eq!(script.mtime_ns, Some(MODE_SH_MTIME * 1_000_000_000));
    assert_eq!(script.size, 18);
    let root = vol.stat("").unwrap();
    assert_eq!(root.kind, FsKind::Directory);
    assert_eq!(root.mode.map(|m| m & 0o170_000), Some(0o040_000));
    assert!(
        vol.stat("/dir/./mode.sh").unwrap() == script,
        "leading slash and `.` are ignored"
    );
    assert_eq!(vol.stat("empty").unwrap().size, 0);
    assert_eq!(read_all(vol, "empty"), b"");
    assert!(
        vol.stat("hello.txt").unwrap().btime_ns.is_some(),
        "256-byte inodes keep a creation time"
    );
    let names: Vec<String> = vol
        .list("many")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names.len(), 300);
    assert_eq!(std::fs::read_dir(src.join("many")).unwrap().count(), 300);
}

fn check_symlinks(vol: &mut Volume) {
    assert_eq!(
        vol.stat("link").unwrap().kind,
        FsKind::Symlink("dir/nested".into())
    );
    assert_eq!(
        vol.stat("longlink").unwrap().kind,
        FsKind::Symlink("a".repeat(100)),
        "slow symlink"
    );
    assert_eq!(
        vol.stat("dangling").unwrap().kind,
        FsKind::Symlink("nowhere".into())
    );
    // The final component is never followed...
    assert!(matches!(
        vol.list("link"),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        vol.open_file("link"),
        Err(FsError::NotAFile { .. })
    ));
    // ...intermediate ones are, inside the volume, relative and absolute.
    let deep: Vec<String> = vol
        .list("link/deep")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(deep, ["file.txt"]);
    assert_eq!(read_all(vol, "abslink/file.txt"), b"deep\n");
    assert!(matches!(
        vol.stat("dangling/x"),
        Err(FsError::NotFound { .. })
    ));
    let err = vol.stat("dir/nested/missing").unwrap_err();
    assert!(matches!(err, FsError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("dir/nested/missing"), "{err}");
    assert!(matches!(
        vol.list("hello.txt"),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        vol.stat("hello.txt/x"),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        vol.open_file("dir"),
        Err(FsError::NotAFile { .. })
    ));
    assert!(matches!(
        vol.stat("dir/../etc"),
        Err(FsError::InvalidPath { .. })
    ));
}

#[test]
fn a_checksummed_journal_is_replayed() {
    let (_tmp, img) = ext_image("ext4", &[]);
    journal_transaction(&img, true);
    let mut vol = open_image(&img, "disk0/part1");
    assert!(vol.warnings().is_empty(), "{:?}", vol.warnings());
    // The size is the inode's (13 bytes); the block comes from the journal.
    assert_eq!(read_all(&mut vol, "hello.txt"), b"HELLO FROM TH");
}

#[test]
fn an_older_journal_needing_recovery_is_read_past_with_a_warning() {
    for (kind, extra) in [("ext3", &["-b", "1024"][..]), ("ext4", &[][..])] {
        let (_tmp, img) = ext_image(kind, extra);
        journal_transaction(&img, false);
        let mut vol = open_image(&img, "disk0/part1");
        assert_eq!(vol.warnings().len(), 1, "{kind}");
        assert!(
            vol.warnings()[0].contains("journal needs recovery"),
            "{:?}",
            vol.warnings()
        );
        assert_eq!(read_all(&mut vol, "hello.txt"), b"hello, world\n", "{kind}");
    }
}

/// The inode number of `path` in an image, from `debugfs stat`.
fn inode_number(img: &Path, path: &str) -> u64 {
    let stat = run(
        "debugfs",
        &["-R", &format!("stat {path}"), img.to_str().unwrap()],
        &[],
    );
    stat.split("Inode:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no inode number in: {stat}"))
}

/// Opens the ext4 image `img` as `disk0/part1` and checks that it opened without warnings
/// and reads like `src`; `context` names the case in failures.
fn open_like_source(img: &Path, src: &Path, context: &str) -> Volume {
    let mut vol = open_image(img, "disk0/part1");
    assert!(vol.warnings().is_empty(), "{context}: {:?}", vol.warnings());
    let expect = Expect { unix: true };
    assert_same_tree(&mut vol, "", src, expect);
    vol
}

/// `meta_bg` spreads the group descriptors over the volume: a block of them at the start
/// of each run of groups they describe (16 groups here, 1 KiB blocks of 64-byte
/// descriptors; 32 groups with 32-byte ones), after the group's backup superblock if it
/// has one (every group without `sparse_super`, two chosen ones with `sparse_super2`).
#[test]
fn meta_bg_volumes_read_like_their_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 2 * MIB as usize + 5,
            with_symlinks: true,
            many: 600,
            sparse: true,
        },
    );
    set_xattr(
        &src.join("many/file-599.txt"),
        "user.far",
        b"in a later meta group",
    );
    for features in [
        "meta_bg,^resize_inode",
        "meta_bg,^resize_inode,^64bit,^sparse_super",
        "meta_bg,^resize_inode,sparse_super2",
    ] {
        let img = tmp.path().join("fs.img");
        // 96 groups of 256 blocks and 8 inodes each: the tree's inodes fill 80 groups.
        let extra = ["-b", "1024", "-g", "256", "-N", "700", "-O", features];
        mkfs_ext("ext4", &src, &img, 24, &extra);
        let group = (inode_number(&img, "many/file-599.txt") - 1) / 8;
        assert!(group >= 64, "{features}: inode in group {group}");
        let mut vol = open_like_source(&img, &src, features);
        assert_eq!(vol.kind(), "ext4", "{features}");
        check_symlinks(&mut vol);
        let far = vol.extras("many/file-599.txt").unwrap();
        assert_eq!(
            xattr_of(&far, "user.far").as_deref(),
            Some(&b"in a later meta group"[..]),
            "{features}"
        );
        assert!(far.warnings.is_empty(), "{features}: {:?}", far.warnings);
    }
}

/// With `ea_inode`, a value too large for the attribute block is the data of an inode of
/// its own; multi-mount protection (`mmp`) changes nothing for a reader.
#[test]
fn attribute_values_in_inodes_of_their_own_and_mmp_volumes_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_tree(&src);
    let huge = pattern(3000, 11);
    set_xattr(&src.join("medium.bin"), "user.huge", &huge);
    set_xattr(&src.join("medium.bin"), "user.small", b"beside it");
    set_xattr(&src.join("hello.txt"), "user.note", b"in the inode");
    for features in ["ea_inode", "ea_inode,mmp", "ea_inode,^metadata_csum"] {
        let img = tmp.path().join("fs.img");
        mkfs_ext("ext4", &src, &img, 24, &["-O", features]);
        let listed = run(
            "debugfs",
            &["-R", "stat medium.bin", img.to_str().unwrap()],
            &[],
        );
        assert!(listed.contains("user.huge"), "{listed}");
        let mut vol = open_like_source(&img, &src, features);
        let medium = vol.extras("medium.bin").unwrap();
        assert_eq!(
            xattr_of(&medium, "user.huge"),
            Some(huge.clone()),
            "{features}"
        );
        assert_eq!(
            xattr_of(&medium, "user.small").as_deref(),
            Some(&b"beside it"[..])
        );
        assert!(
            medium.warnings.is_empty(),
            "{features}: {:?}",
            medium.warnings
        );
        let hello = vol.extras("hello.txt").unwrap();
        assert_eq!(
            xattr_of(&hello, "user.note").as_deref(),
            Some(&b"in the inode"[..])
        );
    }
}

/// `large_dir` only lets directories grow past 2 GiB and their hash indexes to three
/// levels: a volume with it reads like one without, indexed directories included.
#[test]
fn large_dir_volumes_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 1000,
            with_symlinks: true,
            many: 3000,
            sparse: false,
        },
    );
    let img = tmp.path().join("fs.img");
    mkfs_ext("ext4", &src, &img, 24, &["-b", "1024", "-O", "large_dir"]);
    // Index the directories (exit code 1: they were rewritten).
    let fsck = std::process::Command::new(tool("e2fsck"))
        .args(["-f", "-y", "-D"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(matches!(fsck.status.code(), Some(0 | 1)));
    let features = run("dumpe2fs", &["-h", img.to_str().unwrap()], &[]);
    assert!(features.contains("large_dir"), "{features}");
    let htree = run("debugfs", &["-R", "htree many", img.to_str().unwrap()], &[]);
    assert!(htree.contains("Root node dump"), "{htree}");
    let mut vol = open_like_source(&img, &src, "large_dir");
    assert_eq!(read_all(&mut vol, "many/file-2999.txt"), b"2999\n");
}

/// A volume whose journal is a device of its own: that device is not part of the disk
/// image, so the volume is read without it, with a warning when it needed recovery.
#[test]
fn a_volume_with_an_external_journal_is_read_without_it() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: making an external journal needs a loop device (root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_tree(&src);
    let journal = tmp.path().join("journal.img");
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-O",
            "journal_dev",
            "-b",
            "1024",
            journal.to_str().unwrap(),
            "4M",
        ],
        &[],
    );
    let img = tmp.path().join("fs.img");
    {
        let device = Loop::attach(&journal);
        let option = format!("device={}", device.0);
        mkfs_ext("ext4", &src, &img, 24, &["-b", "1024", "-J", &option]);
    }
    open_like_source(&img, &src, "external journal");

    run(
        "debugfs",
        &["-w", "-R", "feature needs_recovery", img.to_str().unwrap()],
        &[],
    );
    let mut vol = open_image(&img, "disk0/part1");
    assert_eq!(vol.warnings().len(), 1, "{:?}", vol.warnings());
    assert!(
        vol.warnings()[0].contains("on a device of its own"),
        "{:?}",
        vol.warnings()
    );
    let expect = Expect { unix: true };
    assert_same_tree(&mut vol, "", &src, expect);
    assert!(vol.extras("hello.txt").unwrap().warnings.is_empty());
}

#[test]
fn extended_attributes_acls_and_device_numbers_come_from_the_inodes() {
    let root = rustix::process::geteuid().is_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 1000,
            with_symlinks: true,
            many: 300,
            sparse: false,
        },
    );
    let small = src.join("hello.txt");
    set_xattr(&small, "user.note", b"kept in the inode");
    let big = src.join("medium.bin");
    let big_value = pattern(600, 7);
    set_xattr(&big, "user.big", &big_value);
    set_xattr(&big, "user.small", b"x");
    set_xattr(
        &src.join("dir/mode.sh"),
        "system.posix_acl_access",
        &acl_xattr(),
    );
    set_xattr(
        &src.join("many/file-150.txt"),
        "user.deep",
        b"in a big directory",
    );
    // Read back what the kernel keeps: the ACL in its canonical form.
    let mut acl = vec![0u8; 256];
    let n =
        rustix::fs::getxattr(src.join("dir/mode.sh"), "system.posix_acl_access", &mut acl).unwrap();
    acl.truncate(n);
    if root {
        use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
        let mode = Mode::from_raw_mode(0o640);
        mknodat(
            CWD,
            src.join("tty-like"),
            FileType::CharacterDevice,
            mode,
            makedev(4, 1),
        )
        .unwrap();
        mknodat(
            CWD,
            src.join("disk-like"),
            FileType::BlockDevice,
            mode,
            makedev(259, 300),
        )
        .unwrap();
    }
    // ext4 with 256-byte inodes (attributes in the inode, extents) and ext2 with 128-byte
    // inodes (attributes in a block, block maps); directories indexed by `e2fsck -D`.
    for (kind, extra) in [
        ("ext4", &[][..]),
        ("ext2", &["-b", "1024", "-I", "128"][..]),
    ] {
        let img = tmp.path().join(format!("{kind}.img"));
        mkfs_ext(kind, &src, &img, 24, extra);
        let fsck = std::process::Command::new(tool("e2fsck"))
            .args(["-f", "-y", "-D"])
            .arg(&img)
            .output()
            .unwrap();
        // 1 means the directories were rewritten, which is what -D asks for.
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck -D: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        let mut vol = open_image(&img, "disk0/part1");
        let hello = vol.extras("hello.txt").unwrap();
        assert_eq!(
            xattr_of(&hello, "user.note").as_deref(),
            Some(&b"kept in the inode"[..]),
            "{kind}"
        );
        let medium = vol.extras("medium.bin").unwrap();
        assert_eq!(
            xattr_of(&medium, "user.big"),
            Some(big_value.clone()),
            "{kind}"
        );
        assert_eq!(
            xattr_of(&medium, "user.small").as_deref(),
            Some(&b"x"[..]),
            "{kind}"
        );
        let script = vol.extras("/dir/./mode.sh").unwrap();
        assert_eq!(
            xattr_of(&script, "system.posix_acl_access"),
            Some(acl.clone()),
            "{kind}"
        );
        let deep = vol.extras("many/file-150.txt").unwrap();
        assert_eq!(
            xattr_of(&deep, "user.deep").as_deref(),
            Some(&b"in a big directory"[..])
        );
        assert!(vol.extras("many/file-151.txt").unwrap().xattrs.is_empty());
        // Through a symlink to a directory, and of the symlink itself.
        assert_eq!(
            vol.extras("link/deep/file.txt").unwrap(),
            Default::default()
        );
        assert_eq!(vol.extras("link").unwrap().device, None);
        assert!(matches!(vol.extras("nope"), Err(FsError::NotFound { .. })));
        if root {
            assert_eq!(
                vol.extras("tty-like").unwrap().device,
                Some((4, 1)),
                "{kind}"
            );
            assert_eq!(
                vol.extras("disk-like").unwrap().device,
                Some((259, 300)),
                "{kind}"
            );
        }
        for e in [&hello, &medium, &script, &deep] {
            assert!(e.warnings.is_empty(), "{kind}: {:?}", e.warnings);
        }
    }
}

#[test]
fn extras_read_through_the_journal_as_the_reader_replays_it() {
    for v3 in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write_tree(&src);
        let old = pattern(600, 7);
        set_xattr(&src.join("medium.bin"), "user.big", &old);
        let img = tmp.path().join("fs.img");
        mkfs_ext("ext4", &src, &img, 24, &[]);
        // The attribute lives in a block of its own; a committed transaction in the
        // journal carries a newer copy of that block.
        let stat = run(
            "debugfs",
            &["-R", "stat medium.bin", img.to_str().unwrap()],
            &[],
        );
        let block: u64 = stat
            .split("File ACL:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no attribute block in: {stat}"));
        let image = read_bytes(&img);
        let block_size = 1024 << u32::from_le_bytes(image[1048..1052].try_into().unwrap());
        let at = block as usize * block_size;
        let mut copy = image[at..at + block_size].to_vec();
        let value_at = copy
            .windows(old.len())
            .position(|w| w == old.as_slice())
            .expect("the value is in its block");
        let new = pattern(600, 8);
        copy[value_at..value_at + new.len()].copy_from_slice(&new);
        journal_block(&img, block, &copy, v3);

        let mut vol = open_image(&img, "disk0/part1");
        let extras = vol.extras("medium.bin").unwrap();
        if v3 {
            // Replayed by the reader beneath, and so here too.
            assert!(vol.warnings().is_empty(), "{:?}", vol.warnings());
            assert_eq!(xattr_of(&extras, "user.big"), Some(new));
        } else {
            // Read past by the reader beneath (with a warning), and so here too.
            assert!(!vol.warnings().is_empty());
            assert_eq!(xattr_of(&extras, "user.big"), Some(old));
        }
        assert!(extras.warnings.is_empty(), "{:?}", extras.warnings);
    }
}

/// A small source tree for images made only to test attributes.
fn write_tree(src: &Path) {
    source_tree(
        src,
        &Tree {
            big: 1000,
            with_symlinks: false,
            many: 5,
            sparse: false,
        },
    );
}

/// A directory of thousands of files without a hash index (as `mke2fs -d` leaves them):
/// every file reads back whole, with its metadata, whether its extents lie in its inode
/// (read through its map, the directory not searched again) or in a tree of their own
/// (read by the reader beneath), and a file looked up by name after the listing too.
#[test]
fn files_of_a_large_directory_without_an_index_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 10,
            with_symlinks: false,
            many: 3000,
            sparse: false,
        },
    );
    // A file of eight pieces between holes: eight extents, more than an inode holds, so
    // they go in a tree.
    let fragmented = src.join("many/fragmented.bin");
    let mut data = vec![0u8; 2 << 20];
    for i in 0..8 {
        let at = i * (256 << 10);
        data[at..at + (64 << 10)].copy_from_slice(&pattern(64 << 10, i as u32));
    }
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::create(&fragmented).unwrap();
        file.set_len(data.len() as u64).unwrap();
        for i in 0..8 {
            let at = i * (256 << 10);
            file.write_all_at(&data[at..at + (64 << 10)], at as u64)
                .unwrap();
        }
    }
    let img = tmp.path().join("fs.img");
    mkfs_ext("ext4", &src, &img, 64, &["-b", "1024"]);
    let htree = run("debugfs", &["-R", "htree many", img.to_str().unwrap()], &[]);
    assert!(!htree.contains("Root node dump"), "{htree}");
    let mut vol = open_image(&img, "many");
    assert_same_tree(&mut vol, "many", &src.join("many"), Expect { unix: true });
    assert_eq!(read_all(&mut vol, "many/file-2999.txt"), b"2999\n");
    assert_eq!(read_all(&mut vol, "many/fragmented.bin"), data);
    let stat = run(
        "debugfs",
        &["-R", "stat many/fragmented.bin", img.to_str().unwrap()],
        &[],
    );
    assert!(
        stat.contains("(ETB0)"),
        "the extents are not in a tree: {stat}"
    );
}
