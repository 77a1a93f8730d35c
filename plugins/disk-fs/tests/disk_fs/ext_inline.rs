//! ext4 volumes with `inline_data`: small files, symlinks and directories kept in their
//! inodes, beside ordinary ones, read against the source tree and against `debugfs`; and
//! damaged inline inodes refused with errors that say where.

use std::path::{Path, PathBuf};

use tessera_disk_fs::{FsError, FsKind, Volume};

use crate::support::*;

/// The source tree of the usual tests, with what inline data changes added: files of 60
/// bytes and less (in the block field), of 100 (continued in `system.data`) and too big to
/// be inline, under a chain of small directories (inline) and in a big one (blocks); a
/// hard link, a symlink longer than the block field, and attributes beside inline data.
fn inline_tree(src: &Path) {
    source_tree(
        src,
        &Tree {
            big: 5 * MIB as usize + 123,
            with_symlinks: true,
            many: 60,
            sparse: true,
        },
    );
    let small = src.join("small");
    std::fs::create_dir_all(small.join("sub/deeper")).unwrap();
    std::fs::write(small.join("sixty.bin"), pattern(60, 21)).unwrap();
    std::fs::write(small.join("sub/hundred.bin"), pattern(100, 22)).unwrap();
    std::fs::write(small.join("sub/large.bin"), pattern(70_000, 23)).unwrap();
    std::fs::write(small.join("sub/holes.bin"), holes()).unwrap();
    std::fs::write(small.join("sub/deeper/tiny.txt"), b"tiny\n").unwrap();
    std::fs::write(small.join("sub/deeper/nothing"), b"").unwrap();
    std::os::unix::fs::symlink("../sixty.bin", small.join("sub/short")).unwrap();
    std::os::unix::fs::symlink(format!("deeper/{}", "x".repeat(90)), small.join("sub/long"))
        .unwrap();
    std::fs::hard_link(src.join("hello.txt"), small.join("hello-again")).unwrap();
    set_xattr(&src.join("hello.txt"), "user.note", b"beside inline data");
    set_xattr(
        &small.join("sub/hundred.bin"),
        "user.far",
        b"below inline directories",
    );
}

/// Eight runs of data with holes between them and a tail: more extents than the inode
/// holds, so an extent tree with an index level (mke2fs leaves zero blocks unwritten).
fn holes() -> Vec<u8> {
    let mut data = Vec::new();
    for run in 0..8 {
        data.extend_from_slice(&pattern(4096, 30 + run));
        data.extend_from_slice(&[0; 12_288]);
    }
    data.extend_from_slice(b"end");
    data
}

/// `debugfs -R request` on `img`.
fn debugfs(img: &Path, request: &str) -> String {
    run("debugfs", &["-R", request, img.to_str().unwrap()], &[])
}

/// An inline_data volume made from `inline_tree` with `features` added.
fn inline_image(tmp: &Path, features: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let src = tmp.join("src");
    if !src.exists() {
        inline_tree(&src);
    }
    let img = tmp.join("fs.img");
    let features = format!("inline_data{features}");
    let mut args = vec!["-I", "256", "-O", features.as_str()];
    args.extend_from_slice(extra);
    mkfs_ext("ext4", &src, &img, 32, &args);
    (src, img)
}

/// Whether `debugfs` shows the inode flag of inline data (0x10000000) on `path`.
fn is_inline(img: &Path, path: &str) -> bool {
    let stat = debugfs(img, &format!("stat /{path}"));
    let flags = stat
        .split("Flags: 0x")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no flags in: {stat}"));
    flags & 0x1000_0000 != 0
}

#[test]
fn inline_data_volumes_read_like_their_source() {
    let tmp = tempfile::tempdir().unwrap();
    for (features, extra) in [
        ("", &[][..]),
        (",^metadata_csum", &[][..]),
        // Block maps, not extents, for the files that are not inline.
        (",^extent,^64bit,^flex_bg", &["-b", "1024"][..]),
    ] {
        let (src, img) = inline_image(tmp.path(), features, extra);
        // The cases the tree is meant to hold, as the tools that made it see them.
        for path in [
            "hello.txt",
            "empty",
            "small",
            "small/sixty.bin",
            "small/sub/hundred.bin",
            "small/sub/long",
            "small/sub/deeper",
            "small/sub/deeper/tiny.txt",
            "dir/nested/deep",
        ] {
            assert!(is_inline(&img, path), "{features}: {path} is not inline");
        }
        // `small/sub` outgrew its inode: an inline directory, one in blocks, then inline
        // ones again on the way down.
        for path in [
            "",
            "many",
            "small/sub",
            "big.bin",
            "small/sub/large.bin",
            "small/sub/short",
        ] {
            assert!(!is_inline(&img, path), "{features}: {path} is inline");
        }
        assert!(
            debugfs(&img, "stat /small/sub/hundred.bin").contains("system.data (40)"),
            "{features}"
        );
        if !features.contains("^extent") {
            let tree = debugfs(&img, "ex /small/sub/holes.bin");
            assert!(tree.contains(" 1/ 1 "), "{features}: {tree}");
        }

        let mut vol = open_image(&img, "disk0/part1");
        assert!(
            vol.warnings().is_empty(),
            "{features}: {:?}",
            vol.warnings()
        );
        assert_eq!(vol.kind(), "ext4");
        assert_same_tree(&mut vol, "", &src, Expect { unix: true });
        check_offsets(&mut vol, &src);
        check_inline_reads(&mut vol, &img, features);
    }
}

/// What the tree comparison leaves out: reads at offsets, attributes, hard links, paths
/// through symlinks and inline directories, and a second opinion from `debugfs`.
fn check_inline_reads(vol: &mut Volume, img: &Path, features: &str) {
    let hundred = pattern(100, 22);
    let mut buf = [0u8; 30];
    // Across the end of the block field into `system.data`, and past the end.
    assert_eq!(
        vol.read_file("small/sub/hundred.bin", 45, &mut buf)
            .unwrap(),
        30
    );
    assert_eq!(buf[..], hundred[45..75]);
    assert_eq!(
        vol.read_file("small/sub/hundred.bin", 90, &mut buf)
            .unwrap(),
        10
    );
    assert_eq!(buf[..10], hundred[90..]);
    assert_eq!(
        vol.read_file("small/sub/hundred.bin", 100, &mut buf)
            .unwrap(),
        0
    );
    let mut file = vol.open_file("small/sub/large.bin").unwrap();
    let large = pattern(70_000, 23);
    for at in [65_000u64, 3, 40_000, 69_990] {
        file.seek(at);
        let mut piece = [0u8; 10];
        assert_eq!(file.read(&mut piece).unwrap(), 10, "{features}: at {at}");
        assert_eq!(piece[..], large[at as usize..at as usize + 10]);
    }

    // Holes between extents (or block-map entries) below an inline directory.
    let holes = holes();
    let mut file = vol.open_file("small/sub/holes.bin").unwrap();
    for at in [100_000u64, 4090, 16_380, 0, 131_070, 60_000] {
        file.seek(at);
        let mut piece = [7u8; 20];
        let n = file.read(&mut piece).unwrap();
        let want = &holes[at as usize..(at as usize + 20).min(holes.len())];
        assert_eq!(&piece[..n], want, "{features}: at {at}");
    }

    // A hard link: one inode, two names, one in an inline directory.
    let hello = vol.stat("hello.txt").unwrap();
    let again = vol.stat("small/hello-again").unwrap();
    assert_eq!(
        (again.size, again.mode, again.mtime_ns),
        (hello.size, hello.mode, hello.mtime_ns)
    );
    assert_eq!(read_all(vol, "small/hello-again"), b"hello, world\n");

    // Attributes beside inline data; `system.data` itself is the file's contents.
    for path in ["hello.txt", "small/hello-again"] {
        let extras = vol.extras(path).unwrap();
        assert_eq!(
            extras.xattrs,
            vec![("user.note".to_owned(), b"beside inline data".to_vec())],
            "{features}: {path}"
        );
        assert!(extras.warnings.is_empty(), "{:?}", extras.warnings);
    }
    let far = vol.extras("small/sub/hundred.bin").unwrap();
    assert_eq!(
        far.xattrs,
        vec![("user.far".to_owned(), b"below inline directories".to_vec())]
    );
    assert!(vol.extras("small/sub/deeper").unwrap().xattrs.is_empty());

    // Symlinks inside and through inline directories.
    assert_eq!(
        vol.stat("small/sub/long").unwrap().kind,
        FsKind::Symlink(format!("deeper/{}", "x".repeat(90)))
    );
    assert_eq!(
        vol.stat("small/sub/short").unwrap().kind,
        FsKind::Symlink("../sixty.bin".to_owned())
    );
    assert_eq!(read_all(vol, "link/deep/file.txt"), b"deep\n");
    assert!(matches!(
        vol.stat("small/sub/missing"),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        vol.list("small/sixty.bin"),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        vol.open_file("small/sub"),
        Err(FsError::NotAFile { .. })
    ));
    assert!(matches!(
        vol.stat("small/sixty.bin/under"),
        Err(FsError::NotADirectory { .. })
    ));

    // What `debugfs` reads, byte for byte, and its metadata.
    for path in [
        "hello.txt",
        "small/sub/hundred.bin",
        "small/sub/deeper/tiny.txt",
        "small/sub/large.bin",
    ] {
        let mut theirs = std::process::Command::new(tool("debugfs"))
            .args(["-R", &format!("cat /{path}"), img.to_str().unwrap()])
            .output()
            .unwrap()
            .stdout;
        let entry = vol.stat(path).unwrap();
        // `debugfs cat` writes the whole block field of an inline file shorter than it.
        if theirs.len() == 60 && entry.size < 60 {
            assert!(theirs[entry.size as usize..].iter().all(|&b| b == 0));
            theirs.truncate(entry.size as usize);
        }
        assert!(read_all(vol, path) == theirs, "{features}: {path}");
        let stat = debugfs(img, &format!("stat /{path}"));
        assert!(
            stat.contains(&format!("Size: {}\n", entry.size)),
            "{features}: {path}: {stat}"
        );
        let mode = entry.mode.unwrap() & 0o7777;
        assert!(
            stat.contains(&format!("Mode:  {mode:04o}")),
            "{path}: {stat}"
        );
    }
}

/// The byte offset of `path`'s inode in `img`, from `debugfs imap`.
fn inode_at(img: &Path, path: &str) -> usize {
    let out = debugfs(img, &format!("imap /{path}"));
    let block: usize = out
        .split("located at block ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let offset = out
        .split("offset 0x")
        .nth(1)
        .and_then(|n| usize::from_str_radix(n.trim(), 16).ok())
        .unwrap_or_else(|| panic!("{out}"));
    block * 4096 + offset
}

/// The offset inside an inode of the `system.data` entry of its in-inode attributes.
fn system_data_entry(inode: &[u8]) -> usize {
    let start = 128 + usize::from(u16::from_le_bytes([inode[0x80], inode[0x81]])) + 4;
    let mut pos = start;
    loop {
        let name_len = usize::from(inode[pos]);
        assert!(name_len != 0, "no system.data entry");
        if inode[pos + 1] == 7 && &inode[pos + 16..pos + 16 + name_len] == b"data" {
            return pos;
        }
        pos += (16 + name_len).next_multiple_of(4);
    }
}

fn corrupt_message(result: Result<impl std::fmt::Debug, FsError>) -> String {
    match result {
        Err(e @ FsError::Corrupt { .. }) => e.to_string(),
        other => panic!("expected a corrupt-volume error, got {other:?}"),
    }
}

/// Inline inodes contradicting themselves: sizes past what they hold, directory records
/// running past their area. Without metadata checksums, so that the checks here (and not
/// the checksums of the reader beneath) are what catches them.
#[test]
fn damaged_inline_data_is_an_error_naming_the_place() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, img) = inline_image(tmp.path(), ",^metadata_csum", &["-b", "4096"]);
    let clean = read_bytes(&img);
    let open =
        |bytes: Vec<u8>| tessera_disk_fs::open_volume(Box::new(bytes), "disk0/part1").unwrap();

    // The size says more than the block field and the value hold.
    let mut bytes = clean.clone();
    let at = inode_at(&img, "small/sub/hundred.bin");
    bytes[at + 4..at + 8].copy_from_slice(&101u32.to_le_bytes());
    let msg = corrupt_message(open(bytes).open_file("small/sub/hundred.bin").map(|_| ()));
    assert!(
        msg.starts_with(&format!("disk0/part1: corrupt at byte {}", at + 4))
            && msg.contains("small/sub/hundred.bin")
            && msg.contains("claims 101 bytes of inline data")
            && msg.contains("hold 100"),
        "{msg}"
    );

    // The value's size runs past the inode.
    let mut bytes = clean.clone();
    let entry = system_data_entry(&clean[at..at + 256]);
    bytes[at + entry + 8..at + entry + 12].copy_from_slice(&4000u32.to_le_bytes());
    let msg = corrupt_message(open(bytes).open_file("small/sub/hundred.bin").map(|_| ()));
    assert!(
        msg.starts_with(&format!("disk0/part1: corrupt at byte {}", at + entry))
            && msg.contains("system.data, 4000 bytes")
            && msg.contains("outside the inode"),
        "{msg}"
    );

    // A directory entry in the block field running past its 56 bytes: the directory
    // cannot be listed, nor any path through it resolved.
    let mut bytes = clean.clone();
    let at = inode_at(&img, "small/sub/deeper");
    let first = at + 0x28 + 4;
    assert!(
        bytes[first..first + 4] != [0; 4],
        "an entry in the block field"
    );
    bytes[first + 4..first + 6].copy_from_slice(&64u16.to_le_bytes());
    let mut vol = open(bytes);
    let msg = corrupt_message(vol.list("small/sub/deeper"));
    assert!(
        msg.starts_with(&format!("disk0/part1: corrupt at byte {first}"))
            && msg.contains("directory entry of 64 bytes")
            && msg.contains("record area of 56 bytes"),
        "{msg}"
    );
    let msg = corrupt_message(vol.stat("small/sub/deeper/tiny.txt"));
    assert!(msg.contains("small/sub/deeper/tiny.txt"), "{msg}");
    // The rest of the volume still reads.
    assert_eq!(
        read_all(&mut vol, "small/sub/hundred.bin"),
        pattern(100, 22)
    );

    // A name longer than its record.
    let mut bytes = clean.clone();
    bytes[first + 6] = 200;
    let msg = corrupt_message(open(bytes).list("small/sub/deeper"));
    assert!(msg.contains("with a name of 200"), "{msg}");

    // An inline symlink whose size exceeds what it holds.
    let mut bytes = clean;
    let at = inode_at(&img, "small/sub/long");
    bytes[at + 4..at + 8].copy_from_slice(&300u32.to_le_bytes());
    let msg = corrupt_message(open(bytes).stat("small/sub/long"));
    assert!(msg.contains("claims 300 bytes of inline data"), "{msg}");
}

/// Moves the last entry of the inline directory whose inode is at `at` from the block field
/// to the `system.data` value (as the kernel does when a directory grows past its block
/// field), placing the value at the end of the inode; returns the value's offset in `img`.
fn move_entry_to_system_data(img: &mut [u8], at: usize) -> usize {
    let inode = &mut img[at..at + 256];
    let field = 0x28 + 4;
    // The entries in the block field: (offset, record length, name length).
    let mut entries = Vec::new();
    let mut pos = field;
    while pos < 0x28 + 60 {
        let rec_len = usize::from(u16::from_le_bytes([inode[pos + 4], inode[pos + 5]]));
        entries.push((pos, rec_len, usize::from(inode[pos + 6])));
        pos += rec_len;
    }
    assert_eq!(pos, 0x28 + 60, "{entries:?}");
    let [.., (prev, prev_len, _), (last, last_len, name_len)] = entries[..] else {
        panic!("fewer than two entries: {entries:?}");
    };
    let value_len = (8 + name_len).next_multiple_of(4);
    let mut record = inode[last..last + 8 + name_len].to_vec();
    record[4..6].copy_from_slice(&(value_len as u16).to_le_bytes());
    inode[last..last + last_len].fill(0);
    inode[prev + 4..prev + 6].copy_from_slice(&((prev_len + last_len) as u16).to_le_bytes());
    let entry = system_data_entry(inode);
    let first = 128 + usize::from(u16::from_le_bytes([inode[0x80], inode[0x81]])) + 4;
    let value_at = 256 - value_len;
    inode[entry + 2..entry + 4].copy_from_slice(&((value_at - first) as u16).to_le_bytes());
    inode[entry + 8..entry + 12].copy_from_slice(&(value_len as u32).to_le_bytes());
    inode[entry + 12..entry + 16].fill(0);
    inode[value_at..value_at + record.len()].copy_from_slice(&record);
    inode[4..8].copy_from_slice(&((60 + value_len) as u32).to_le_bytes());
    at + value_at
}

/// A directory whose entries continue in `system.data`, as the kernel leaves one that
/// grew past its block field (mke2fs moves such a directory to blocks instead).
#[test]
fn inline_directory_entries_continued_in_system_data_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, img) = inline_image(tmp.path(), ",^metadata_csum", &["-b", "4096"]);
    let mut bytes = read_bytes(&img);
    let at = inode_at(&img, "small/sub/deeper");
    let value_at = move_entry_to_system_data(&mut bytes, at);
    std::fs::write(&img, &bytes).unwrap();
    // `debugfs` reads the directory so too.
    let listed = debugfs(&img, "ls /small/sub/deeper");
    assert!(
        listed.contains("tiny.txt") && listed.contains("nothing"),
        "{listed}"
    );
    assert!(debugfs(&img, "stat /small/sub/deeper").contains("system.data (16)"));

    let mut vol = open_image(&img, "disk0/part1");
    let mut names: Vec<String> = vol
        .list("small/sub/deeper")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["nothing", "tiny.txt"]);
    assert_eq!(vol.stat("small/sub/deeper").unwrap().size, 76);
    assert_eq!(read_all(&mut vol, "small/sub/deeper/tiny.txt"), b"tiny\n");
    assert_eq!(read_all(&mut vol, "small/sub/deeper/nothing"), b"");

    // The record in the value claiming more than the value holds.
    bytes[value_at + 4..value_at + 6].copy_from_slice(&20u16.to_le_bytes());
    let mut vol = tessera_disk_fs::open_volume(Box::new(bytes.clone()), "disk0/part1").unwrap();
    let msg = corrupt_message(vol.list("small/sub/deeper"));
    assert!(
        msg.starts_with(&format!("disk0/part1: corrupt at byte {value_at}"))
            && msg.contains("record area of 16 bytes"),
        "{msg}"
    );
    // The directory's size claiming more than the block field and the value hold.
    bytes[value_at + 4..value_at + 6].copy_from_slice(&16u16.to_le_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&100u32.to_le_bytes());
    let mut vol = tessera_disk_fs::open_volume(Box::new(bytes), "disk0/part1").unwrap();
    let msg = corrupt_message(vol.list("small/sub/deeper"));
    assert!(msg.contains("claims 100 bytes of inline data"), "{msg}");
}
