//! NTFS volumes made by `mkntfs` and filled through `ntfs-3g` (a FUSE mount, as root), with
//! a symbolic link written as the reparse point Windows makes.

use std::path::Path;

use tessera_disk_fs::{FsError, FsKind, open_volume};

use crate::support::*;

/// An NTFS image of `size_mib` at `img`, labelled `label` (`mkntfs`; needs no root).
pub fn mkntfs(img: &Path, size_mib: u64, label: &str) {
    std::fs::File::create(img)
        .unwrap()
        .set_len(size_mib * MIB)
        .unwrap();
    run(
        "mkntfs",
        &["-q", "-F", "-f", "-L", label, img.to_str().unwrap()],
        &[],
    );
}

/// The reparse data of a relative symbolic link to `target` (Windows' `mklink`).
fn symlink_reparse(target: &str) -> Vec<u8> {
    let name: Vec<u8> = target
        .replace('/', "\\")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let len = name.len() as u16;
    let mut data = Vec::new();
    data.extend_from_slice(&0xa000_000cu32.to_le_bytes());
    data.extend_from_slice(&(12 + 2 * len).to_le_bytes());
    data.extend_from_slice(&0u16.to_le_bytes());
    // Substitute name at 0, print name after it; flag 1: relative.
    for field in [0, len, len, len] {
        data.extend_from_slice(&field.to_le_bytes());
    }
    data.extend_from_slice(&1u32.to_le_bytes());
    data.extend_from_slice(&name);
    data.extend_from_slice(&name);
    data
}

/// 3 MiB of text that compresses.
fn compressible() -> Vec<u8> {
    (0..100_000)
        .flat_map(|i| format!("line {i:08} of a log that repeats itself\n").into_bytes())
        .take(3 << 20)
        .collect()
}

#[test]
fn ntfs_reads_like_its_source() {
    if let Some(why) = fuse_unavailable() {
        eprintln!("skipped: filling an NTFS image needs ntfs-3g ({why})");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 5 * MIB as usize + 123,
            with_symlinks: false,
            many: 300,
            sparse: true,
        },
    );
    let img = tmp.path().join("ntfs.img");
    mkntfs(&img, 32, "WINDATA");
    {
        let mnt = Mounted::new("ntfs-3g", &[], &img, &tmp.path().join("mnt"))
            .expect("ntfs-3g mounts the image");
        run(
            "cp",
            &[
                "-r",
                "--preserve=timestamps",
                &format!("{}/.", src.display()),
                mnt.0.to_str().unwrap(),
            ],
            &[],
        );
        // A directory whose new files ntfs-3g compresses (LZNT1), as Windows' "compress
        // contents" does.
        let packed = mnt.0.join("packed");
        std::fs::create_dir(&packed).unwrap();
        rustix::fs::setxattr(
            &packed,
            "system.ntfs_attrib_be",
            &0x800u32.to_be_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        std::fs::write(packed.join("log.txt"), compressible()).unwrap();
        let mut attrib = [0u8; 4];
        rustix::fs::getxattr(packed.join("log.txt"), "system.ntfs_attrib_be", &mut attrib).unwrap();
        assert_ne!(
            u32::from_be_bytes(attrib) & 0x800,
            0,
            "log.txt is compressed"
        );
        let link = mnt.0.join("link");
        std::fs::File::create(&link).unwrap();
        rustix::fs::setxattr(
            &link,
            "system.ntfs_reparse_data",
            &symlink_reparse("dir/nested"),
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    let mut vol = open_image(&img, "disk0/part2");
    assert_eq!(vol.kind(), "ntfs");
    assert_eq!(vol.label().as_deref(), Some("WINDATA"));
    assert!(vol.warnings().is_empty());
    // The link is checked on its own; the rest is the source tree, metafiles hidden.
    let link = vol.stat("link").unwrap();
    let FsKind::Symlink(target) = &link.kind else {
        panic!("link is {:?}", link.kind);
    };
    assert!(
        target.replace('\\', "/").ends_with("dir/nested"),
        "{target}"
    );
    // The root holds the source's names and the link, and no metafile (`$MFT`, ...).
    let mut names: Vec<String> = vol.list("").unwrap().into_iter().map(|e| e.name).collect();
    names.sort();
    let mut want: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .chain(["link".to_owned(), "packed".to_owned()])
        .collect();
    want.sort();
    assert_eq!(names, want);
    let expect = Expect { unix: false };
    for dir in ["dir", "many"] {
        assert_same_tree(&mut vol, dir, &src.join(dir), expect);
    }
    for file in [
        "hello.txt",
        "empty",
        "big.bin",
        "medium.bin",
        "sparse.bin",
        "Long File Name With Spaces.txt",
        "ünïcødé.txt",
        "Ωmega Ünïcode.txt",
    ] {
        let want = std::fs::read(src.join(file)).unwrap();
        assert!(read_all(&mut vol, file) == want, "{file}");
        assert_eq!(vol.stat(file).unwrap().size, want.len() as u64);
    }
    assert!(read_all(&mut vol, "packed/log.txt") == compressible());
    // Times survive (cp kept them), reached case-insensitively as on Windows.
    let script = vol.stat("DIR/Mode.SH").unwrap();
    assert_eq!(
        script.mtime_ns.map(|t| t.div_euclid(1_000_000_000)),
        Some(MODE_SH_MTIME)
    );
    assert_eq!(script.mode, None);
    check_offsets(&mut vol, &src);
    for (path, is) in [("$MFT", "hidden"), ("nope", "missing")] {
        assert!(
            matches!(vol.stat(path), Err(FsError::NotFound { .. })),
            "{path} {is}"
        );
    }
    assert!(matches!(
        vol.list("hello.txt"),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        vol.open_file("dir"),
        Err(FsError::NotAFile { .. })
    ));
}

#[test]
fn an_empty_ntfs_volume_opens_without_root() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("ntfs.img");
    mkntfs(&img, 8, "EMPTY");
    let mut vol = open_volume(Box::new(open_disk(&img)), "disk0/part1").unwrap();
    assert_eq!(vol.kind(), "ntfs");
    assert_eq!(vol.list("").unwrap(), []);
}
