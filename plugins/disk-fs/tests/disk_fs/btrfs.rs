//! btrfs volumes: made by `mkfs.btrfs --rootdir` from a source tree (no root needed), and
//! filled through the kernel's btrfs (a loop mount, as root) with subvolumes and
//! compressed extents.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tessera_disk_fs::{FsError, FsKind};
use tessera_disk_image::ReadAt;

use crate::support::*;

/// A btrfs image of `size_mib` at `img`, labelled `label`, filled from `root` if given
/// (`extra` options: `--mixed` for a volume under 114 MiB).
pub fn mkfs_btrfs(img: &Path, size_mib: u64, label: &str, root: Option<&Path>, extra: &[&str]) {
    fs::File::create(img)
        .unwrap()
        .set_len(size_mib * MIB)
        .unwrap();
    let mut args = vec!["-q", "-f", "-L", label];
    args.extend_from_slice(extra);
    if let Some(root) = root {
        args.extend_from_slice(&["--rootdir", root.to_str().unwrap()]);
    }
    args.push(img.to_str().unwrap());
    run("mkfs.btrfs", &args, &[]);
}

#[test]
fn btrfs_made_from_a_tree_reads_like_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = root.join("data");
    source_tree(
        &src,
        &Tree {
            big: 5 * MIB as usize + 123,
            with_symlinks: true,
            many: 3000,
            sparse: true,
        },
    );
    set_xattr(&src.join("hello.txt"), "user.note", b"an attribute");
    let img = tmp.path().join("fs.img");
    mkfs_btrfs(&img, 128, "fedora", Some(&root), &[]);
    let mut vol = open_image(&img, "disk0/part3");
    assert_eq!(vol.kind(), "btrfs");
    assert_eq!(vol.label().as_deref(), Some("fedora"));
    assert!(vol.warnings().is_empty(), "{:?}", vol.warnings());
    assert_same_tree(&mut vol, "data", &src, Expect { unix: true });
    check_offsets_under(&mut vol, "data", &src);
    let hello = vol.extras("data/hello.txt").unwrap();
    assert_eq!(
        xattr_of(&hello, "user.note").as_deref(),
        Some(&b"an attribute"[..])
    );
    assert_eq!(read_all(&mut vol, "data/link/deep/file.txt"), b"deep\n");
    assert!(matches!(
        vol.stat("data/nope"),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        vol.list("data/hello.txt"),
        Err(FsError::NotADirectory { .. })
    ));
}

/// Fedora's layout: subvolumes `root` and `home` below the top level, written through the
/// kernel with zstd compression, then zlib; small files inline in the tree; a file of
/// many extents, a preallocated one, attributes, an ACL and a device node.
#[test]
fn btrfs_subvolumes_and_compressed_extents_read_like_their_source() {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("skipped: filling a btrfs image through the kernel needs root and loop devices");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 3 * MIB as usize + 5,
            with_symlinks: true,
            many: 500,
            sparse: true,
        },
    );
    let text: Vec<u8> = (0..60_000)
        .flat_map(|i| format!("log line {i:06} says the same thing again\n").into_bytes())
        .collect();
    fs::write(src.join("log.txt"), &text).unwrap();
    set_xattr(
        &src.join("dir/mode.sh"),
        "system.posix_acl_access",
        &acl_xattr(),
    );
    let mut acl = vec![0u8; 256];
    let n =
        rustix::fs::getxattr(src.join("dir/mode.sh"), "system.posix_acl_access", &mut acl).unwrap();
    acl.truncate(n);

    let img = tmp.path().join("fs.img");
    mkfs_btrfs(&img, 256, "fedora", None, &[]);
    let fragmented_bytes;
    {
        let mnt_at = tmp.path().join("mnt");
        let Some(mnt) = Mounted::new(
            "mount",
            &["-t", "btrfs", "-o", "loop,compress-force=zstd"],
            &img,
            &mnt_at,
        ) else {
            eprintln!("skipped: this kernel does not mount btrfs");
            return;
        };
        let at = |name: &str| mnt.0.join(name).to_str().unwrap().to_owned();
        let remount = |options: &str| {
            let options = format!("remount,{options}");
            run("mount", &["-o", &options, &at("")], &[]);
        };
        for subvolume in ["root", "home"] {
            run("btrfs", &["-q", "subvolume", "create", &at(subvolume)], &[]);
        }
        run("cp", &["-a", src.to_str().unwrap(), &at("root/srv")], &[]);
        // The same tree again, compressed with zlib.
        remount("compress-force=zlib");
        run("cp", &["-a", src.to_str().unwrap(), &at("home/alice")], &[]);
        // LZO, which is not read.
        remount("compress-force=lzo");
        fs::write(mnt.0.join("lzo.txt"), &text).unwrap();
        // Uncompressed from here: a file of many extents and a preallocated one.
        remount("compress=no");
        let f = fs::File::create(mnt.0.join("fragmented.bin")).unwrap();
        for i in 0..300u64 {
            let piece = pattern(4096, i as u32 + 3);
            f.write_all_at(&piece, i * 12288).unwrap();
            f.sync_data().unwrap();
        }
        let mut expect = vec![0u8; (299 * 12288 + 4096) as usize];
        for i in 0..300usize {
            expect[i * 12288..i * 12288 + 4096].copy_from_slice(&pattern(4096, i as u32 + 3));
        }
        fragmented_bytes = expect;
        let pre = fs::File::create(mnt.0.join("prealloc.bin")).unwrap();
        rustix::fs::fallocate(&pre, rustix::fs::FallocateFlags::empty(), 0, 1 << 20).unwrap();
        pre.write_all_at(b"written", 300_000).unwrap();
        use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
        mknodat(
            CWD,
            mnt.0.join("disk-like"),
            FileType::BlockDevice,
            Mode::from_raw_mode(0o640),
            makedev(259, 300),
        )
        .unwrap();
        let _ = &mnt;
    }
    let mut vol = open_image(&img, "disk0/part3");
    assert_eq!(vol.kind(), "btrfs");
    let top: Vec<String> = vol.list("").unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(
        top,
        [
            "root",
            "home",
            "lzo.txt",
            "fragmented.bin",
            "prealloc.bin",
            "disk-like"
        ]
    );
    let err = vol
        .open_file("lzo.txt")
        .unwrap()
        .read(&mut [0u8; 100])
        .unwrap_err();
    assert!(matches!(err, FsError::Unsupported { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("\"lzo.txt\" is compressed with LZO"),
        "{err}"
    );
    assert_eq!(vol.stat("root").unwrap().kind, FsKind::Directory);
    for dir in ["root/srv", "home/alice"] {
        assert_same_tree(&mut vol, dir, &src, Expect { unix: true });
        check_offsets_under(&mut vol, dir, &src);
        let script = vol.extras(&format!("{dir}/dir/mode.sh")).unwrap();
        assert_eq!(
            xattr_of(&script, "system.posix_acl_access"),
            Some(acl.clone()),
            "{dir}"
        );
    }
    assert!(read_all(&mut vol, "fragmented.bin") == fragmented_bytes);
    let mut pre = vec![0u8; 1 << 20];
    pre[300_000..300_007].copy_from_slice(b"written");
    assert!(read_all(&mut vol, "prealloc.bin") == pre);
    assert_eq!(vol.extras("disk-like").unwrap().device, Some((259, 300)));
}

/// Whether the tree `data` of `vol` reads as `src`: every file, whole; the first error
/// met otherwise.
fn reads_whole(vol: &mut tessera_disk_fs::Volume, src: &Path) -> Result<(), FsError> {
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        let path = format!("data/{}", entry.file_name().to_str().unwrap());
        let mut file = vol.open_file(&path)?;
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        assert!(bytes == fs::read(entry.path()).unwrap(), "{path}");
    }
    Ok(())
}

/// A volume over three devices, each a disk of its own, made with each data profile
/// (metadata RAID1, or the data's profile where that keeps more copies): opened from any
/// device with the others, every profile reads whole. With a device missing, RAID1,
/// RAID10 and RAID5 read from the copies or rebuild from parity, RAID0 is refused naming
/// the device; with two missing, RAID6 still reads whole, rebuilding from P and Q.
#[test]
fn btrfs_over_three_devices_reads_every_profile() {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("skipped: a multi-device btrfs needs root and loop devices");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_tree(
        &src,
        &Tree {
            big: 3 * MIB as usize,
            with_symlinks: false,
            many: 20,
            sparse: false,
        },
    );
    for (data, metadata) in [
        ("raid1", "raid1"),
        ("raid0", "raid1"),
        ("raid10", "raid10"),
        ("raid5", "raid5"),
        ("raid6", "raid6"),
    ] {
        let images: Vec<_> = (0..3)
            .map(|i| tmp.path().join(format!("{data}-{i}.img")))
            .collect();
        for img in &images {
            fs::File::create(img).unwrap().set_len(160 * MIB).unwrap();
        }
        {
            let loops: Vec<Loop> = images.iter().map(|i| Loop::attach(i)).collect();
            let devices: Vec<&str> = loops.iter().map(|l| l.0.as_str()).collect();
            let args = [&["-q", "-f", "-d", data, "-m", metadata][..], &devices].concat();
            run("mkfs.btrfs", &args, &[]);
            let Some(mnt) = Mounted::new(
                "mount",
                &["-t", "btrfs"],
                Path::new(devices[0]),
                &tmp.path().join("mnt"),
            ) else {
                eprintln!("skipped: this kernel does not mount btrfs");
                return;
            };
            run(
                "cp",
                &[
                    "-a",
                    src.to_str().unwrap(),
                    mnt.0.join("data").to_str().unwrap(),
                ],
                &[],
            );
        }
        let open = |first: usize, others: &[usize]| {
            let others = others
                .iter()
                .map(|&i| Box::new(open_disk(&images[i])) as Box<dyn ReadAt>)
                .collect();
            let what = format!("disk{first}");
            tessera_disk_fs::open_volume_with(Box::new(open_disk(&images[first])), &what, others)
        };
        // Opened from each device, the others given in any order.
        for (first, others) in [(0, [1, 2]), (1, [2, 0]), (2, [0, 1])] {
            let mut vol = open(first, &others).unwrap();
            assert_same_tree(&mut vol, "data", &src, Expect { unix: true });
        }
        // A device missing.
        let mut vol = open(0, &[1]).unwrap();
        match (data, reads_whole(&mut vol, &src)) {
            ("raid0", Err(err)) => assert!(
                matches!(err, FsError::Unsupported { .. })
                    && err.to_string().contains("not among the disks"),
                "{err}"
            ),
            ("raid0", Ok(())) => panic!("raid0 read whole without a device"),
            (_, result) => result.unwrap_or_else(|e| panic!("{data} without a device: {e}")),
        }
        // Two missing: RAID6 alone rebuilds two stripes of a row.
        if data == "raid6" {
            let mut vol = open(2, &[]).unwrap();
            reads_whole(&mut vol, &src).unwrap();
        }
    }
}
