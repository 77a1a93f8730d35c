//! exFAT volumes made by `mkfs.exfat` and filled through `mount.exfat-fuse` (a FUSE mount
//! of a loop device, as root): listings, contents and times against the source, files
//! whose clusters are chained through the FAT and files that skip it, and the backup boot
//! region.

use std::io::Write;
use std::path::Path;

use tessera_disk_fs::{FsError, FsKind, open_volume};

use crate::support::*;

/// An empty exFAT image of `size_mib` at `img`, labelled `label` (`mkfs.exfat`; needs no
/// root).
pub fn mkfs_exfat(img: &Path, size_mib: u64, label: &str) {
    std::fs::File::create(img)
        .unwrap()
        .set_len(size_mib * MIB)
        .unwrap();
    run("mkfs.exfat", &["-L", label, img.to_str().unwrap()], &[]);
}

/// Why an image cannot be filled here, if it cannot: `mount.exfat-fuse` needs root, FUSE
/// and a loop device.
pub fn cannot_mount() -> Option<&'static str> {
    fuse_unavailable()
        .or_else(|| (!Path::new("/dev/loop-control").exists()).then_some("no loop devices"))
}

/// Runs `fill` on the mounted volume of `img`, then unmounts it.
pub fn with_mounted(img: &Path, at: &Path, fill: impl FnOnce(&Path)) {
    let device = Loop::attach(img);
    let mnt = Mounted::new("mount.exfat-fuse", &[], Path::new(&device.0), at)
        .expect("mount.exfat-fuse mounts the image");
    fill(&mnt.0);
}

/// Writes `a.bin` and `b.bin` 64 KiB at a time, in turn, so that their clusters interleave
/// and each file's chain goes through the FAT. Returns their contents.
fn interleaved(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let (a, b) = (pattern(1_300_000, 7), pattern(1_100_000, 8));
    let mut fa = std::fs::File::create(dir.join("a.bin")).unwrap();
    let mut fb = std::fs::File::create(dir.join("b.bin")).unwrap();
    for (pa, pb) in a
        .chunks(65536)
        .zip(b.chunks(65536).chain(std::iter::repeat(&[][..])))
    {
        fa.write_all(pa).unwrap();
        fa.sync_data().unwrap();
        fb.write_all(pb).unwrap();
        fb.sync_data().unwrap();
    }
    (a, b)
}

#[test]
fn exfat_reads_like_its_source() {
    if let Some(why) = cannot_mount() {
        eprintln!("skipped: filling an exFAT image needs mount.exfat-fuse ({why})");
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
    let img = tmp.path().join("exfat.img");
    mkfs_exfat(&img, 32, "EXDATA");
    let mut times = Vec::new();
    with_mounted(&img, &tmp.path().join("mnt"), |mnt| {
        run(
            "cp",
            &[
                "-r",
                "--preserve=timestamps",
                &format!("{}/.", src.display()),
                mnt.to_str().unwrap(),
            ],
            &[],
        );
        // The same files in the source tree, to compare.
        let frag = mnt.join("frag");
        std::fs::create_dir(&frag).unwrap();
        let (a, b) = interleaved(&frag);
        std::fs::create_dir(src.join("frag")).unwrap();
        std::fs::write(src.join("frag/a.bin"), a).unwrap();
        std::fs::write(src.join("frag/b.bin"), b).unwrap();
        for path in ["hello.txt", "dir/mode.sh", "frag/a.bin"] {
            let meta = std::fs::metadata(mnt.join(path)).unwrap();
            let mtime = meta
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            times.push((path, mtime.as_secs() as i64));
        }
    });
    let mut vol = open_image(&img, "disk0/part1");
    assert_eq!(vol.kind(), "exfat");
    assert_eq!(vol.label().as_deref(), Some("EXDATA"));
    assert!(vol.warnings().is_empty(), "{:?}", vol.warnings());

    assert_same_tree(&mut vol, "", &src, Expect { unix: false });
    check_offsets_under(&mut vol, "", &src);

    // Times as the mount showed them (2-second steps).
    for (path, secs) in times {
        let entry = vol.stat(path).unwrap();
        assert_eq!(
            entry.mtime_ns.map(|t| t.div_euclid(1_000_000_000)),
            Some(secs),
            "{path}: mtime"
        );
        assert!(
            entry.btime_ns.is_some() && entry.atime_ns.is_some(),
            "{path}"
        );
    }
    assert_eq!(
        vol.stat("dir/mode.sh").unwrap().mtime_ns,
        Some(MODE_SH_MTIME * 1_000_000_000)
    );

    // Lookups take an exact name, else one that ignores case.
    let script = vol.stat("dir/mode.sh").unwrap();
    assert_eq!(
        (script.mode, script.uid, script.gid, script.ctime_ns),
        (None, None, None, None)
    );
    assert_eq!(vol.stat("DIR/Mode.SH").unwrap(), script);
    assert_eq!(vol.stat("ΩMEGA ÜNÏCODE.TXT").unwrap().size, 6);
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
    drop(vol);

    // Bytes past a file's valid data length (allocated ahead, as Windows and the kernel's
    // driver do when a file is extended) read as zeros.
    let mut bytes = std::fs::read(&img).unwrap();
    let set = entry_set(&bytes, "hello.txt");
    bytes[set + 32 + 8..set + 32 + 16].copy_from_slice(&5u64.to_le_bytes());
    fix_set_checksum(&mut bytes, set);
    let mut vol = open_volume(Box::new(bytes.clone()), "disk0/part1").unwrap();
    assert_eq!(vol.stat("hello.txt").unwrap().size, 13);
    assert_eq!(read_all(&mut vol, "hello.txt"), b"hello\0\0\0\0\0\0\0\0");

    // A directory whose clusters are its parent's is a loop, not an endless walk.
    let mut looped = bytes.clone();
    let dir = entry_set(&looped, "dir");
    let root_cluster = looped[0x60..0x64].to_vec();
    looped[dir + 32 + 20..dir + 32 + 24].copy_from_slice(&root_cluster);
    fix_set_checksum(&mut looped, dir);
    let mut vol = open_volume(Box::new(looped), "disk0/part1").unwrap();
    for path in ["dir", "dir/dir/hello.txt"] {
        let err = vol.stat(path).and_then(|_| vol.list(path)).unwrap_err();
        assert!(err.to_string().contains("directory loop"), "{path}: {err}");
    }

    // A damaged entry set is an error naming the directory and the entry's offset.
    bytes[set + 32 + 20] ^= 1;
    let mut vol = open_volume(Box::new(bytes), "disk0/part1").unwrap();
    assert!(vol.label().is_none() && vol.warnings()[0].contains("label"));
    let err = vol.list("").unwrap_err().to_string();
    assert!(
        err.contains("disk0/part1") && err.contains("checksum") && err.contains(&set.to_string()),
        "{err}"
    );
}

/// The offset of the entry set of the file `name` in the image: its file entry, two
/// entries before the first name entry.
pub fn entry_set(img: &[u8], name: &str) -> usize {
    let mut wanted = vec![0xc1, 0x00];
    wanted.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
    let at = img
        .chunks_exact(32)
        .position(|e| e.starts_with(&wanted))
        .unwrap_or_else(|| panic!("no name entry for {name}"));
    (at - 2) * 32
}

/// Sets the checksum of the entry set at `set` (the file entry's secondary count says how
/// many entries follow), as the exFAT specification computes it.
pub fn fix_set_checksum(img: &mut [u8], set: usize) {
    let len = (usize::from(img[set + 1]) + 1) * 32;
    let sum = img[set..set + len]
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 2 | 3))
        .fold(0u16, |sum, (_, &b)| {
            ((sum & 1) << 15 | sum >> 1).wrapping_add(u16::from(b))
        });
    img[set + 2..set + 4].copy_from_slice(&sum.to_le_bytes());
}

/// Sets the checksum sector of the boot region at sector `first` (of `sector` bytes) to
/// `value`.
fn set_boot_checksum(img: &mut [u8], first: usize, sector: usize, value: u32) {
    let at = (first + 11) * sector;
    for word in img[at..at + sector].chunks_exact_mut(4) {
        word.copy_from_slice(&value.to_le_bytes());
    }
}

/// An empty exFAT volume of 8 MiB in sectors of 512 bytes, and, as root, one in sectors
/// of 4 KiB (`mkfs.exfat` on a loop device of that sector size).
fn boot_test_images(tmp: &Path) -> Vec<(usize, Vec<u8>)> {
    let img = tmp.join("exfat.img");
    mkfs_exfat(&img, 8, "BOOTS");
    let mut images = vec![(512, std::fs::read(&img).unwrap())];
    if rustix::process::geteuid().is_root() {
        let img = tmp.join("exfat4k.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(8 * MIB)
            .unwrap();
        let device = run(
            "losetup",
            &[
                "--find",
                "--show",
                "--sector-size",
                "4096",
                img.to_str().unwrap(),
            ],
            &[],
        );
        let device = Loop(device.trim().to_owned());
        run("mkfs.exfat", &["-L", "BOOTS", &device.0], &[]);
        drop(device);
        images.push((4096, std::fs::read(&img).unwrap()));
    } else {
        eprintln!("4 KiB sectors skipped: a loop device of that sector size needs root");
    }
    images
}

#[test]
fn a_damaged_boot_region_falls_back_to_its_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let open = |bytes: Vec<u8>| open_volume(Box::new(bytes), "disk0/part1");
    for (sector, good) in boot_test_images(tmp.path()) {
        let vol = open(good.clone()).unwrap();
        assert_eq!(vol.kind(), "exfat");
        assert_eq!(vol.label().as_deref(), Some("BOOTS"));
        assert!(vol.warnings().is_empty());

        // A changed byte in the main boot sector fails its checksum: the backup is read.
        let mut damaged = good.clone();
        damaged[0x60] ^= 0x40;
        let vol = open(damaged.clone()).unwrap();
        assert_eq!(
            vol.label().as_deref(),
            Some("BOOTS"),
            "{sector}-byte sectors"
        );
        let warning = vol.warnings().join("\n");
        assert!(
            warning.contains("disk0/part1")
                && warning.contains("checksum")
                && warning.contains("backup")
                && warning.contains(&(11 * sector).to_string()),
            "{warning}"
        );

        // With both damaged, the error names the main region's checksum sector.
        set_boot_checksum(&mut damaged, 12, sector, 0x1234_5678);
        let err = open(damaged).unwrap_err().to_string();
        assert!(
            err.contains("disk0/part1")
                && err.contains("checksum")
                && err.contains(&(11 * sector).to_string()),
            "{err}"
        );

        // A file system larger than its volume is refused with both sizes.
        let err = open(good[..4 * MIB as usize].to_vec())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("truncated") && err.contains(&(4 * MIB).to_string()),
            "{err}"
        );
    }
}
