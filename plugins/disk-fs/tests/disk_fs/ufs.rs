//! UFS2 and UFS1 volumes made by `makefs` (FreeBSD's image builder, as Debian ports it)
//! from a source tree: with its default geometry and with FreeBSD `newfs`'s, files
//! reaching through single and double indirect blocks, symlinks short and long, and
//! damaged copies.

use std::path::Path;

use tessera_disk_fs::{FsError, FsKind, open_volume};

use crate::support::*;

/// A UFS2 image of `mib` MiB at `img`, holding `root` (`makefs -t ffs`, with `options`).
pub fn makefs(img: &Path, root: &Path, mib: u64, options: &str) {
    let size = format!("{mib}m");
    run(
        "makefs",
        &[
            "-t",
            "ffs",
            "-o",
            options,
            "-s",
            &size,
            img.to_str().unwrap(),
            root.to_str().unwrap(),
        ],
        &[],
    );
}

/// The source tree under `root/data`: the shared tree with a file past the single
/// indirect blocks of 8 KiB blocks (8 MiB and 96 KiB), 300 names in one directory, and a
/// symlink too long to keep in its inode.
fn source(root: &Path) -> std::path::PathBuf {
    let src = root.join("data");
    source_tree(
        &src,
        &Tree {
            big: 9 * MIB as usize + 77,
            with_symlinks: true,
            many: 300,
            sparse: true,
        },
    );
    std::os::unix::fs::symlink("t".repeat(300), src.join("dir/longer-link")).unwrap();
    src
}

#[test]
fn ufs2_volumes_read_like_their_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = source(&root);
    for (name, options, kind) in [
        ("makefs", "version=2", "ufs2"),
        ("newfs", "version=2,bsize=32768,fsize=4096", "ufs2"),
        ("ufs1", "version=1", "ufs1"),
    ] {
        let img = tmp.path().join(format!("{name}.ufs"));
        makefs(&img, &root, 64, options);
        let mut vol = open_volume(Box::new(open_disk(&img)), "disk0/part2").unwrap();
        assert_eq!(vol.kind(), kind);
        assert_eq!(vol.label(), None, "{name}");
        assert!(vol.warnings().is_empty(), "{:?}", vol.warnings());
        assert_same_tree(&mut vol, "data", &src, Expect { unix: true });
        check_offsets_under(&mut vol, "data", &src);
        // Through an intermediate symlink, and one stored in blocks.
        assert_eq!(read_all(&mut vol, "data/link/deep/file.txt"), b"deep\n");
        let long = vol.stat("data/dir/longer-link").unwrap();
        assert_eq!(long.kind, FsKind::Symlink("t".repeat(300)));
        assert!(matches!(
            vol.open_file("data/dir"),
            Err(FsError::NotAFile { .. })
        ));
        assert!(matches!(
            vol.list("data/nothing"),
            Err(FsError::NotFound { .. })
        ));
    }
}

/// The volume name, which `makefs` cannot set, and the state a crash leaves, set in the
/// superblock as FreeBSD's `tunefs -L` and an unclean shutdown would.
#[test]
fn ufs2_label_and_unclean_state_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"fw01\n").unwrap();
    let img = tmp.path().join("v.ufs");
    makefs(&img, &root, 4, "version=2");
    let mut bytes = read_bytes(&img);
    let sb = bytes
        .windows(4)
        .position(|w| w == 0x1954_0119u32.to_le_bytes())
        .unwrap()
        - 0x55c;
    bytes[sb + 0x2a8..sb + 0x2a8 + 7].copy_from_slice(b"rootfs\0");
    bytes[sb + 0xd1] = 0;
    let mut vol = open_volume(Box::new(bytes), "disk0/part2").unwrap();
    assert_eq!(vol.label().as_deref(), Some("rootfs"));
    assert!(
        vol.warnings()[0].contains("not cleanly unmounted"),
        "{:?}",
        vol.warnings()
    );
    assert_eq!(read_all(&mut vol, "etc/hostname"), b"fw01\n");
}

/// Damage anywhere in the metadata is an error naming the volume, never a panic: every
/// byte of the superblock, the root directory's inode and the first inodes changed in
/// turn, and every block of the inode table and the directories overwritten.
#[test]
fn damaged_ufs2_volumes_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = root.join("data");
    source_tree(
        &src,
        &Tree {
            big: 200_000,
            with_symlinks: true,
            many: 30,
            sparse: false,
        },
    );
    let img = tmp.path().join("v.ufs");
    makefs(&img, &root, 8, "version=2");
    let good = read_bytes(&img);
    let sb = good
        .windows(4)
        .position(|w| w == 0x1954_0119u32.to_le_bytes())
        .unwrap()
        - 0x55c;
    let walk = |bytes: Vec<u8>| {
        let Ok(mut vol) = open_volume(Box::new(bytes), "disk0/part1") else {
            return;
        };
        let mut pending = vec![String::new()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = vol.list(&dir) else {
                continue;
            };
            for e in entries {
                let path = if dir.is_empty() {
                    e.name.clone()
                } else {
                    format!("{dir}/{}", e.name)
                };
                match e.kind {
                    FsKind::Directory if pending.len() < 64 => pending.push(path),
                    FsKind::File => {
                        let _ = vol.read_file(&path, 0, &mut [0u8; 4096]);
                    }
                    _ => {}
                }
            }
        }
    };
    for at in (sb..sb + 0x560).step_by(3) {
        let mut bytes = good.clone();
        bytes[at] ^= 0xa5;
        walk(bytes);
    }
    // The inode table and directory data: the first 256 KiB after the superblock's
    // cylinder group start, 1 KiB at a time overwritten with a pattern.
    for block in 0..256 {
        let mut bytes = good.clone();
        let at = sb + 8192 + block * 1024;
        bytes[at..at + 1024].copy_from_slice(&pattern(1024, block as u32));
        walk(bytes);
    }
}
