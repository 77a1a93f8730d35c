//! Builds real disk images with the system's tools (mke2fs, mkfs.fat, mtools, sfdisk,
//! sgdisk) in temporary directories, and compares what the crate reads with the source
//! files the images were made from.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use tessera_disk_fs::{FsEntry, FsKind, Partition, Slice, Volume, open_volume, read_partitions};
use tessera_disk_image::{FileReader, ReadAt};

pub const MIB: u64 = 1024 * 1024;
/// 2021-06-15 12:34:56 UTC, the mtime given to `dir/mode.sh`.
pub const MODE_SH_MTIME: i64 = 1_623_760_496;

/// The path of a required tool; the test fails (never skips) when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the tests need `{name}` to build disk images; install e2fsprogs, dosfstools, mtools, lvm2, thin-provisioning-tools, ntfs-3g, makefs, \
         fdisk (sfdisk) and gdisk (sgdisk)"
    );
}

/// Runs a tool and fails the test with its output if it fails.
pub fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(tool(name))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic bytes that do not compress to nothing.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// What a source tree holds, with sizes chosen to reach indirect and double-indirect blocks
/// (1 KiB-block ext2/3), multi-cluster directories and files, and long names.
pub struct Tree {
    pub big: usize,
    pub with_symlinks: bool,
    pub many: usize,
    /// Add `sparse.bin`: 2 MiB of zeros, then a few bytes.
    pub sparse: bool,
}

/// Writes the source tree under `root`.
pub fn source_tree(root: &Path, tree: &Tree) {
    write(&root.join("hello.txt"), b"hello, world\n");
    write(&root.join("empty"), b"");
    write(&root.join("big.bin"), &pattern(tree.big, 1));
    write(&root.join("medium.bin"), &pattern(300_000, 2));
    if tree.sparse {
        // Zero blocks become holes in ext images (mke2fs -d skips them).
        let mut sparse = vec![0u8; 2 * MIB as usize];
        sparse.extend_from_slice(b"after the hole");
        write(&root.join("sparse.bin"), &sparse);
    }
    let script = root.join("dir/mode.sh");
    write(&script, b"#!/bin/sh\necho hi\n");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o750)).unwrap();
    let f = fs::File::options().write(true).open(&script).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(MODE_SH_MTIME as u64))
        .unwrap();
    write(&root.join("dir/nested/deep/file.txt"), b"deep\n");
    write(&root.join("Long File Name With Spaces.txt"), b"long\n");
    // Fits 8.3 in code page 850 (a short name only, with lower-case flags)...
    write(&root.join("ünïcødé.txt"), "unicode\n".as_bytes());
    // ...and does not (a long name).
    write(&root.join("Ωmega Ünïcode.txt"), "omega\n".as_bytes());
    for i in 0..tree.many {
        write(
            &root.join(format!("many/file-{i:03}.txt")),
            format!("{i}\n").as_bytes(),
        );
    }
    if tree.with_symlinks {
        std::os::unix::fs::symlink("dir/nested", root.join("link")).unwrap();
        std::os::unix::fs::symlink("/dir/nested/deep", root.join("abslink")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        std::os::unix::fs::symlink("a".repeat(100), root.join("longlink")).unwrap();
    }
}

/// An ext2/3/4 image of `size_mib` populated from `src` (`mke2fs -d`).
pub fn mkfs_ext(kind: &str, src: &Path, img: &Path, size_mib: u64, extra: &[&str]) {
    let size = format!("{size_mib}M");
    let mut args = vec!["-q", "-F", "-t", kind, "-d", src.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[img.to_str().unwrap(), &size]);
    run("mke2fs", &args, &[("E2FSPROGS_FAKE_TIME", "1700000000")]);
}

/// A FAT image of `size_kib` (`mkfs.fat`), populated from `src` with `mcopy -s -m`.
pub fn mkfs_fat(bits: u8, src: &Path, img: &Path, size_kib: u64) {
    let _ = fs::remove_file(img);
    run(
        "mkfs.fat",
        &[
            "-F",
            &bits.to_string(),
            "-n",
            "TESTVOL",
            "-C",
            img.to_str().unwrap(),
            &size_kib.to_string(),
        ],
        &[],
    );
    let mut args = vec!["-s", "-m", "-i", img.to_str().unwrap()];
    let entries: Vec<String> = fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_owned())
        .collect();
    args.extend(entries.iter().map(String::as_str));
    args.push("::/");
    run("mcopy", &args, &[("TZ", "UTC"), ("MTOOLS_SKIP_CHECK", "1")]);
}

/// Copies `img` into `disk` at `offset`, like `dd conv=notrunc`.
pub fn dd_into(disk: &Path, img: &Path, offset: u64) {
    let data = fs::read(img).unwrap();
    let f = fs::File::options().write(true).open(disk).unwrap();
    f.write_all_at(&data, offset).unwrap();
}

/// A zero-filled file of `len` bytes.
pub fn blank(path: &Path, len: u64) {
    run(
        "truncate",
        &["-s", &len.to_string(), path.to_str().unwrap()],
        &[],
    );
}

/// Applies an `sfdisk` script to `disk`.
pub fn sfdisk(disk: &Path, script: &str) {
    let disk = disk.to_str().unwrap();
    run_with_input("sfdisk", &["--no-reread", "--no-tell-kernel", disk], script);
}

/// Runs a tool with `input` on its standard input, and fails the test if it fails.
pub fn run_with_input(name: &str, args: &[&str], input: &str) {
    let mut child = Command::new(tool(name))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The partitions `sfdisk -d` reports, without MBR extended containers: number -> (start
/// sector, sectors).
pub fn sfdisk_dump(disk: &Path) -> BTreeMap<u32, (u64, u64)> {
    let dump = run("sfdisk", &["-d", disk.to_str().unwrap()], &[]);
    let name = disk.to_str().unwrap();
    dump.lines()
        .filter_map(|line| {
            let (dev, rest) = line.split_once(" : ")?;
            let number = dev.trim().strip_prefix(name)?.parse().ok()?;
            let field = |key: &str| -> &str {
                let at = rest.find(key).unwrap() + key.len();
                rest[at..].trim_start().split(',').next().unwrap().trim()
            };
            if ["5", "f", "85"].contains(&field("type=")) {
                return None;
            }
            Some((
                number,
                (
                    field("start=").parse().unwrap(),
                    field("size=").parse().unwrap(),
                ),
            ))
        })
        .collect()
}

pub fn open_disk(path: &Path) -> FileReader {
    FileReader::new(fs::File::open(path).unwrap()).unwrap()
}

/// Opens partition `number` of the disk image at `path` as `what`.
pub fn open_partition(path: &Path, number: u32, what: &str) -> Volume {
    let mut disk = open_disk(path);
    let table = read_partitions(&mut disk).unwrap();
    let part: &Partition = table
        .partitions
        .iter()
        .find(|p| p.number == number)
        .unwrap_or_else(|| panic!("no partition {number} in {table:?}"));
    let slice = Slice::partition(disk, part).unwrap();
    open_volume(Box::new(slice), what).unwrap()
}

/// Opens a file-system image that fills the whole reader.
pub fn open_image(path: &Path, what: &str) -> Volume {
    open_volume(Box::new(open_disk(path)), what).unwrap()
}

/// Reads a whole file through a handle, in odd-sized pieces.
pub fn read_all(vol: &mut Volume, path: &str) -> Vec<u8> {
    let mut file = vol
        .open_file(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_537];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {path}: {e}"));
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        out.len() as u64,
        file.size(),
        "{path}: read length differs from size"
    );
    out
}

/// What [`assert_same_tree`] checks beyond names, kinds, sizes and contents.
#[derive(Clone, Copy)]
pub struct Expect {
    /// Modes, owners and mtimes (ext).
    pub unix: bool,
}

/// Compares the volume's tree under `path` with the source directory `src` recursively.
pub fn assert_same_tree(vol: &mut Volume, path: &str, src: &Path, expect: Expect) {
    let unix = expect.unix;
    let mut listed: BTreeMap<String, FsEntry> = vol
        .list(path)
        .unwrap_or_else(|e| panic!("list {path:?}: {e}"))
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
    let mut expected: Vec<(String, PathBuf)> = fs::read_dir(src)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), e.path())
        })
        .collect();
    expected.sort();
    for (name, src_path) in expected {
        let child = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}/{name}")
        };
        let entry = listed
            .remove(&name)
            .unwrap_or_else(|| panic!("{child} missing from the listing"));
        assert_eq!(
            vol.stat(&child).unwrap(),
            entry,
            "stat and list disagree on {child}"
        );
        let meta = fs::symlink_metadata(&src_path).unwrap();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&src_path).unwrap();
            assert_eq!(
                entry.kind,
                FsKind::Symlink(target.to_str().unwrap().to_owned()),
                "{child}"
            );
        } else if meta.is_dir() {
            assert_eq!(entry.kind, FsKind::Directory, "{child}");
            assert_same_tree(vol, &child, &src_path, expect);
        } else {
            assert_eq!(entry.kind, FsKind::File, "{child}");
            assert_eq!(entry.size, meta.len(), "{child}: size");
            assert!(
                read_all(vol, &child) == fs::read(&src_path).unwrap(),
                "{child}: contents differ"
            );
        }
        if unix {
            assert_eq!(entry.mode, Some(meta.permissions().mode()), "{child}: mode");
            use std::os::unix::fs::MetadataExt;
            assert_eq!(entry.uid, Some(meta.uid()), "{child}: uid");
            assert_eq!(
                entry.mtime_ns.map(|t| t.div_euclid(1_000_000_000)),
                Some(meta.mtime()),
                "{child}: mtime"
            );
        }
    }
    if unix && path.is_empty() {
        // mke2fs makes it; the source has none.
        let lost = listed
            .remove("lost+found")
            .expect("ext volumes have lost+found");
        assert_eq!(lost.kind, FsKind::Directory);
    }
    assert!(
        listed.is_empty(),
        "unexpected entries in {path:?}: {:?}",
        listed.keys()
    );
}

/// All bytes of a reader, for tests on in-memory copies.
pub fn read_bytes(path: &Path) -> Vec<u8> {
    let mut r = open_disk(path);
    let mut out = vec![0u8; r.len() as usize];
    r.read_exact_at(0, &mut out).unwrap();
    out
}

/// Writes one transaction into the journal of `img` (as a running kernel would have left
/// it) that replaces the first data block of `hello.txt`; `v3` selects journal checksums v3.
pub fn journal_transaction(img: &Path, v3: bool) {
    let image = img.to_str().unwrap();
    let bmap = run("debugfs", &["-R", "bmap hello.txt 0", image], &[]);
    let block: u64 = bmap.trim().parse().unwrap();
    let block_size = 1024usize
        << u32::from_le_bytes(std::fs::read(img).unwrap()[1048..1052].try_into().unwrap());
    let mut data = b"HELLO FROM THE JOURNAL\n".to_vec();
    data.resize(block_size, 0);
    journal_block(img, block, &data, v3);
}

/// Writes one committed journal transaction carrying `data` as the new content of file
/// system block `block`, leaving the volume needing recovery (`debugfs` `jo`/`jw`/`jc`;
/// with `v3`, checksums of version 3).
pub fn journal_block(img: &Path, block: u64, data: &[u8], v3: bool) {
    let dir = img.parent().unwrap();
    std::fs::write(dir.join("block"), data).unwrap();
    let open = if v3 { "jo -c" } else { "jo" };
    let cmds = format!(
        "{open}\njw -b {block} {}\njc\n",
        dir.join("block").display()
    );
    std::fs::write(dir.join("cmds"), cmds).unwrap();
    run(
        "debugfs",
        &[
            "-w",
            "-f",
            dir.join("cmds").to_str().unwrap(),
            img.to_str().unwrap(),
        ],
        &[],
    );
}

/// A loop device over a file, detached when dropped.
pub struct Loop(pub String);

impl Loop {
    pub fn attach(file: &Path) -> Loop {
        let dev = run(
            "losetup",
            &["--find", "--show", file.to_str().unwrap()],
            &[],
        );
        Loop(dev.trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new(tool("losetup"))
            .args(["-d", &self.0])
            .status();
    }
}

/// Reads `big.bin` and `sparse.bin` of the source tree at offsets, through
/// [`Volume::read_file`] and on one handle forwards and backwards, against the sources.
pub fn check_offsets(vol: &mut Volume, src: &Path) {
    let big = std::fs::read(src.join("big.bin")).unwrap();
    let mut buf = vec![0u8; 10_000];
    assert_eq!(
        vol.read_file("big.bin", 3_000_000, &mut buf).unwrap(),
        10_000
    );
    assert!(buf == big[3_000_000..3_010_000]);
    let tail = big.len() as u64 - 100;
    assert_eq!(vol.read_file("big.bin", tail, &mut buf).unwrap(), 100);
    assert!(buf[..100] == big[big.len() - 100..]);
    assert_eq!(
        vol.read_file("big.bin", big.len() as u64 + 5, &mut buf)
            .unwrap(),
        0
    );
    // Backwards and forwards on one handle.
    let mut file = vol.open_file("big.bin").unwrap();
    for at in [4_000_000u64, 1_000_000, 1_000_100, 5_000_000, 0] {
        file.seek(at);
        let mut piece = [0u8; 333];
        assert_eq!(file.read(&mut piece).unwrap(), 333);
        assert!(piece[..] == big[at as usize..at as usize + 333], "at {at}");
        assert_eq!(file.position(), at + 333);
    }
    // A sparse file: on ext2/3 its hole spans indirect blocks, read through the block map.
    let sparse = std::fs::read(src.join("sparse.bin")).unwrap();
    let mut file = vol.open_file("sparse.bin").unwrap();
    let end = sparse.len() as u64;
    for at in [end - 5, 1 << 20, 5000, end - 700, 0, 12 * 1024 - 3] {
        file.seek(at);
        let mut piece = [1u8; 700];
        let n = file.read(&mut piece).unwrap();
        let want = &sparse[at as usize..(at as usize + 700).min(sparse.len())];
        assert_eq!(n, want.len(), "at {at}");
        assert!(piece[..n] == *want, "at {at}");
        assert_eq!(file.position(), at + n as u64);
    }
}

/// The ACL `user::rw-, user:1234:r--, group::r--, mask::r--, other::---` as `setxattr`
/// takes it.
pub fn acl_xattr() -> Vec<u8> {
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1234),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    acl
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::setxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

pub fn xattr_of(extras: &tessera_disk_fs::Extras, name: &str) -> Option<Vec<u8>> {
    extras
        .xattrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// A file system image mounted at a directory of its own; unmounted when dropped.
/// Why a FUSE file system (ntfs-3g, exfat-fuse) cannot be mounted here, if it cannot:
/// mounting needs root and `/dev/fuse`.
pub fn fuse_unavailable() -> Option<&'static str> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root");
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse");
    }
    None
}

pub struct Mounted(pub PathBuf);

impl Mounted {
    /// Runs `command` with `args`, then the image and the directory; `None` if that fails
    /// (a kernel without the file system).
    pub fn new(command: &str, args: &[&str], img: &Path, at: &Path) -> Option<Mounted> {
        fs::create_dir_all(at).unwrap();
        let status = Command::new(tool(command))
            .args(args)
            .arg(img)
            .arg(at)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        status.success().then(|| Mounted(at.to_owned()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Reads `big.bin` of the source tree copied under `dir` at offsets, through
/// [`Volume::read_file`] and on one handle forwards and backwards, against the source.
pub fn check_offsets_under(vol: &mut Volume, dir: &str, src: &Path) {
    let big = fs::read(src.join("big.bin")).unwrap();
    let mut buf = vec![0u8; 10_000];
    let path = format!("{dir}/big.bin");
    assert_eq!(vol.read_file(&path, 3_000_000, &mut buf).unwrap(), 10_000);
    assert!(buf == big[3_000_000..3_010_000]);
    let mut file = vol.open_file(&path).unwrap();
    file.seek(2_000_001);
    let mut one = [0u8; 7];
    file.read(&mut one).unwrap();
    assert_eq!(one, big[2_000_001..2_000_008]);
    file.seek(17);
    file.read(&mut one).unwrap();
    assert_eq!(one, big[17..24]);
}

/// The member `name` in `dir` of an MD array holding `data`, made by
/// `tests/scripts/md-member.py` with `extra` arguments, as bytes.
pub fn md_member(dir: &Path, data: &Path, name: &str, extra: &[&str]) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scripts/md-member.py");
    let out = dir.join(name);
    let mut args = vec![
        script.to_str().unwrap(),
        data.to_str().unwrap(),
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("python3", &args, &[]);
    fs::read(out).unwrap()
}
