//! XFS volumes made by `mkfs.xfs` and filled through the kernel's own XFS (a loop mount,
//! as root): version 5 with its defaults, with 1 KiB blocks and larger directory blocks,
//! and version 4.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tessera_disk_fs::{FsError, FsKind};

use crate::support::*;

/// Why the image cannot be filled here, if it cannot: a loop mount needs root and the
/// kernel's XFS.
fn cannot_mount() -> Option<&'static str> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root");
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices");
    }
    None
}

/// An XFS image of `size_mib` at `img` (`mkfs.xfs` with `extra` options).
fn mkfs_xfs(img: &Path, size_mib: u64, label: &str, extra: &[&str]) {
    fs::File::create(img)
        .unwrap()
        .set_len(size_mib * MIB)
        .unwrap();
    let mut args = vec!["-q", "-f", "-L", label];
    args.extend_from_slice(extra);
    args.push(img.to_str().unwrap());
    // These let mkfs.xfs make volumes below its 300 MiB minimum, as for its own tests.
    run(
        "mkfs.xfs",
        &args,
        &[("TEST_DIR", "1"), ("TEST_DEV", "1"), ("QA_CHECK_FS", "1")],
    );
}

/// A small XFS image (`v5` or version 4) filled by `mkfs.xfs` from the source tree
/// `src` through a prototype (names with spaces left out), with a device node and a link
/// to the root; for tests without root.
pub fn xfs_from_prototype(src: &Path, img: &Path, size_mib: u64, v5: bool) {
    let mut proto = String::from("/dev/null\n0 0\nd--755 0 0\n data d--755 0 0\n");
    prototype(src, 2, &mut proto);
    proto.push_str(" $\n disk-like b--640 0 0 259 300\n rootlink l--777 0 0 /data/dir\n$\n");
    let proto_path = img.with_extension("proto");
    fs::write(&proto_path, proto).unwrap();
    let features = if v5 { "crc=1" } else { "crc=0,finobt=0" };
    mkfs_xfs(
        img,
        size_mib,
        if v5 { "new" } else { "old" },
        &[
            "-m",
            features,
            "-b",
            "size=1024",
            "-p",
            proto_path.to_str().unwrap(),
        ],
    );
}

/// A file of `extents` separate 4 KiB pieces with holes between them: more extents than
/// an inode holds, so its map is a B+tree.
fn fragmented(path: &Path, extents: u64) -> Vec<u8> {
    let f = fs::File::create(path).unwrap();
    let mut expect = vec![0u8; (extents * 8192) as usize];
    for i in 0..extents {
        let piece = pattern(4096, i as u32 + 10);
        f.write_all_at(&piece, i * 8192).unwrap();
        expect[(i * 8192) as usize..(i * 8192 + 4096) as usize].copy_from_slice(&piece);
    }
    f.sync_all().unwrap();
    expect.truncate(((extents - 1) * 8192 + 4096) as usize);
    expect
}

#[test]
fn xfs_reads_like_its_source() {
    if let Some(why) = cannot_mount() {
        eprintln!("skipped: filling an XFS image needs a loop mount ({why})");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 5 * MIB as usize + 123,
            with_symlinks: true,
            many: 3000,
            sparse: true,
        },
    );
    set_xattr(&src.join("hello.txt"), "user.note", b"kept in the inode");
    let medium = src.join("medium.bin");
    let big_value = pattern(3000, 7);
    set_xattr(&medium, "user.big", &big_value);
    set_xattr(
        &src.join("dir/mode.sh"),
        "system.posix_acl_access",
        &acl_xattr(),
    );
    set_xattr(&src.join("dir/mode.sh"), "trusted.origin", b"root only");
    let mut acl = vec![0u8; 256];
    let n =
        rustix::fs::getxattr(src.join("dir/mode.sh"), "system.posix_acl_access", &mut acl).unwrap();
    acl.truncate(n);
    // A symlink longer than an inode holds.
    std::os::unix::fs::symlink(format!("dir/{}", "x".repeat(700)), src.join("farlink")).unwrap();

    for (label, extra) in [
        ("v5", &[][..]),
        (
            "v5small",
            &[
                "-b",
                "size=1024",
                "-n",
                "size=8192",
                "-i",
                "size=512,nrext64=1",
            ][..],
        ),
    ] {
        let img = tmp.path().join(format!("{label}.img"));
        mkfs_xfs(&img, 300, label, extra);
        let expect_fragmented;
        {
            let Some(mnt) = Mounted::new(
                "mount",
                &["-t", "xfs", "-o", "loop"],
                &img,
                &tmp.path().join(format!("mnt-{label}")),
            ) else {
                eprintln!("skipped {label}: this kernel does not mount it");
                continue;
            };
            let data = mnt.0.join("data");
            run(
                "cp",
                &["-a", src.to_str().unwrap(), data.to_str().unwrap()],
                &[],
            );
            {
                use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
                mknodat(
                    CWD,
                    mnt.0.join("disk-like"),
                    FileType::BlockDevice,
                    Mode::from_raw_mode(0o640),
                    makedev(259, 300),
                )
                .unwrap();
            }
            // Enough attributes for a tree of attribute blocks (more than the source's
            // file system takes).
            for i in 0..400 {
                let name = format!("user.n{i:03}");
                set_xattr(
                    &data.join("medium.bin"),
                    &name,
                    format!("value {i}").as_bytes(),
                );
            }
            std::os::unix::fs::symlink("/data/dir/nested", mnt.0.join("rootlink")).unwrap();
            std::os::unix::fs::symlink("../data", mnt.0.join("dir-up")).unwrap();
            expect_fragmented = fragmented(&mnt.0.join("fragmented.bin"), 600);
            // Preallocated but never written: an unwritten extent, which reads as zeros.
            let pre = fs::File::create(mnt.0.join("prealloc.bin")).unwrap();
            rustix::fs::fallocate(&pre, rustix::fs::FallocateFlags::empty(), 0, 1 << 20).unwrap();
            pre.write_all_at(b"written", 300_000).unwrap();
        }
        let mut vol = open_image(&img, "disk0/part1");
        assert_eq!(vol.kind(), "xfs");
        assert_eq!(vol.label().as_deref(), Some(label));
        assert!(vol.warnings().is_empty(), "{label}: {:?}", vol.warnings());
        assert_same_tree(&mut vol, "data", &src, Expect { unix: true });
        assert!(
            read_all(&mut vol, "fragmented.bin") == expect_fragmented,
            "{label}: fragmented.bin"
        );
        let mut pre = vec![0u8; 1 << 20];
        pre[300_000..300_007].copy_from_slice(b"written");
        assert!(
            read_all(&mut vol, "prealloc.bin") == pre,
            "{label}: prealloc.bin"
        );

        // Attributes: in the inode, in a leaf block with a value of its own blocks, the
        // ACL converted, the root namespace; the device number.
        let hello = vol.extras("data/hello.txt").unwrap();
        assert_eq!(
            xattr_of(&hello, "user.note").as_deref(),
            Some(&b"kept in the inode"[..]),
            "{label}"
        );
        let m = vol.extras("data/medium.bin").unwrap();
        assert!(m.warnings.is_empty(), "{label}: {:?}", m.warnings);
        assert_eq!(xattr_of(&m, "user.big"), Some(big_value.clone()), "{label}");
        assert_eq!(
            xattr_of(&m, "user.n399").as_deref(),
            Some(&b"value 399"[..]),
            "{label}"
        );
        let script = vol.extras("data/dir/mode.sh").unwrap();
        assert_eq!(
            xattr_of(&script, "system.posix_acl_access"),
            Some(acl.clone()),
            "{label}"
        );
        assert_eq!(
            xattr_of(&script, "trusted.origin").as_deref(),
            Some(&b"root only"[..]),
            "{label}"
        );
        assert_eq!(
            vol.extras("disk-like").unwrap().device,
            Some((259, 300)),
            "{label}"
        );

        // Paths through symlinks, and lookups that fail.
        assert_eq!(read_all(&mut vol, "data/link/deep/file.txt"), b"deep\n");
        assert_eq!(read_all(&mut vol, "rootlink/deep/file.txt"), b"deep\n");
        assert_eq!(read_all(&mut vol, "dir-up/hello.txt"), b"hello, world\n");
        // An absolute target starts at the volume root, where the source tree is not.
        assert!(matches!(
            vol.stat("data/abslink/file.txt"),
            Err(FsError::NotFound { .. })
        ));
        assert!(matches!(
            vol.stat("data/nope"),
            Err(FsError::NotFound { .. })
        ));
        assert!(matches!(
            vol.list("data/hello.txt"),
            Err(FsError::NotADirectory { .. })
        ));
        assert!(matches!(
            vol.open_file("data/dir"),
            Err(FsError::NotAFile { .. })
        ));
        let far = vol.stat("data/farlink").unwrap();
        assert_eq!(
            far.kind,
            FsKind::Symlink(format!("dir/{}", "x".repeat(700)))
        );
        check_offsets_under(&mut vol, "data", &src);
    }
}

/// Version 4 volumes (no checksums; 32-bit times), which current kernels no longer mount:
/// filled by `mkfs.xfs` itself from a prototype file listing the source tree.
#[test]
fn xfs_version_4_reads_like_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 3 * MIB as usize + 7,
            with_symlinks: true,
            many: 3000,
            sparse: false,
        },
    );
    std::os::unix::fs::symlink(format!("dir/{}", "y".repeat(900)), src.join("farlink")).unwrap();
    // A prototype cannot name files with spaces.
    fs::remove_file(src.join("Long File Name With Spaces.txt")).unwrap();
    fs::remove_file(src.join("Ωmega Ünïcode.txt")).unwrap();
    let img = tmp.path().join("v4.img");
    xfs_from_prototype(&src, &img, 64, false);
    let mut vol = open_image(&img, "disk0/part1");
    assert_eq!(vol.kind(), "xfs");
    assert_eq!(vol.label().as_deref(), Some("old"));
    assert_same_tree(&mut vol, "data", &src, Expect { unix: false });
    let script = vol.stat("data/dir/mode.sh").unwrap();
    assert_eq!(script.mode, Some(0o100_750));
    assert_eq!(vol.extras("disk-like").unwrap().device, Some((259, 300)));
    assert_eq!(read_all(&mut vol, "data/link/deep/file.txt"), b"deep\n");
    assert_eq!(
        read_all(&mut vol, "rootlink/nested/deep/file.txt"),
        b"deep\n"
    );
    check_offsets_under(&mut vol, "data", &src);
}

/// Appends the entries of directory `dir` to a `mkfs.xfs` prototype, `depth` levels in.
fn prototype(dir: &Path, depth: usize, out: &mut String) {
    use std::fmt::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let indent = " ".repeat(depth);
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.contains(' ') {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap();
            writeln!(out, "{indent}{name} l--{mode:03o} 0 0 {}", target.display()).unwrap();
        } else if meta.is_dir() {
            writeln!(out, "{indent}{name} d--{mode:03o} 0 0").unwrap();
            prototype(&path, depth + 1, out);
            writeln!(out, "{indent}$").unwrap();
        } else {
            writeln!(out, "{indent}{name} ---{mode:03o} 0 0 {}", path.display()).unwrap();
        }
    }
}
