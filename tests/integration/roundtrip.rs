//! Data goes in and comes back bit for bit.

use std::io::Read;

use tessera_tests::{TestVault, backup_files, options, random_bytes, read_file, small_cdc};
use tessera_vault::chunker::Chunking;
use tessera_vault::commands::backup::{Backup, CommitOptions};
use tessera_vault::commands::check::{CheckOptions, check};
use tessera_vault::{Content, Entry, EntryKind};

#[test]
fn files_round_trip_in_encrypted_and_plain_vaults() {
    for tv in [TestVault::encrypted(), TestVault::plain()] {
        let big = random_bytes(1, 5 << 20);
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(50_000);
        let files: Vec<(&str, &[u8])> = vec![
            ("empty", b""),
            ("one", b"x"),
            ("dir/big", &big),
            ("dir/sub/text", &text),
        ];
        let (_, point) = backup_files(&tv.vault, options("item"), &files, small_cdc()).unwrap();
        for (path, data) in &files {
            assert_eq!(read_file(&tv.vault, &point, path).unwrap(), *data, "{path}");
        }
        // Compression worked on the text; nothing was lost on the random data.
        assert!(point.stats.bytes_stored < point.stats.bytes_read);
        let reopened = tv.reopen();
        assert_eq!(read_file(&reopened, &point, "dir/big").unwrap(), big);
        let report = check(
            &reopened,
            CheckOptions {
                read_data: true,
                workers: 0,
            },
        )
        .unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }
}

#[test]
fn edits_deduplicate_and_both_points_restore() {
    let tv = TestVault::encrypted();
    let original = random_bytes(2, 8 << 20);
    let (_, first) =
        backup_files(&tv.vault, options("item"), &[("f", &original)], small_cdc()).unwrap();
    let mut edited = original.clone();
    // An insertion, a deletion and an overwrite, far apart.
    edited.splice(1_000_000..1_000_000, random_bytes(3, 777));
    edited.drain(4_000_000..4_010_000);
    edited[6_000_000..6_000_100].copy_from_slice(&random_bytes(4, 100));
    let (_, second) =
        backup_files(&tv.vault, options("item"), &[("f", &edited)], small_cdc()).unwrap();
    assert!(
        second.stats.bytes_new < edited.len() as u64 / 5,
        "edited file stored {} new bytes of {}",
        second.stats.bytes_new,
        edited.len()
    );
    assert!(second.stats.chunks_reused > 0);
    assert_eq!(read_file(&tv.vault, &first, "f").unwrap(), original);
    assert_eq!(read_file(&tv.vault, &second, "f").unwrap(), edited);
}

#[test]
fn fixed_chunks_store_holes_and_read_at_random_offsets() {
    let tv = TestVault::encrypted();
    let chunk = 4096;
    // 48 MiB with data islands between zero runs: > 8192 extents, so lists are used.
    let mut disk = vec![0u8; 48 << 20];
    for (i, at) in (0..disk.len()).step_by(3 << 20).enumerate() {
        let island = random_bytes(i as u64, 100_000);
        disk[at..at + island.len()].copy_from_slice(&island);
    }
    let mut backup = Backup::start(&tv.vault, options("vm")).unwrap();
    let mut stream = backup.stream(Chunking::Fixed { size: chunk }).unwrap();
    for piece in disk.chunks(1 << 20) {
        stream.write(piece).unwrap();
    }
    let result = stream.finish().unwrap();
    assert!(result.stats.bytes_holes > 40 << 20);
    assert!(
        matches!(result.content, Content::Lists(_))
            || matches!(result.content, Content::Extents(_))
    );
    let mut entry = Entry::new("", EntryKind::BlockDevice);
    entry.content = result.content.clone();
    backup.add_entry("disk0", entry).unwrap();
    let (_, point) = backup.commit(CommitOptions::default()).unwrap();
    assert_eq!(read_file(&tv.vault, &point, "disk0").unwrap(), disk);

    let mut reader = tv.vault.content_reader(&result.content);
    assert_eq!(reader.len(), disk.len() as u64);
    for (offset, len) in [
        (0u64, 10usize),
        (4095, 2),
        (3 << 20, 200_000),
        ((48 << 20) - 5, 5),
        (12_345_678, 65_536),
    ] {
        let mut buf = vec![0xAAu8; len];
        let n = reader.read_at(offset, &mut buf).unwrap();
        assert_eq!(n, len);
        assert_eq!(
            &buf[..],
            &disk[offset as usize..offset as usize + len],
            "at {offset}"
        );
    }
    // Past the end reads nothing.
    assert_eq!(reader.read_at(disk.len() as u64, &mut [0u8; 4]).unwrap(), 0);
    // std::io::Read in odd-sized pieces.
    let mut out = Vec::new();
    let mut buf = vec![0u8; 7777];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, disk);
}

#[test]
fn carry_forward_reuses_parent_entries_without_reading() {
    let tv = TestVault::encrypted();
    let a = random_bytes(10, 300_000);
    let b = random_bytes(11, 300_000);
    let (first_id, first) = backup_files(
        &tv.vault,
        options("item"),
        &[("d/a", &a), ("d/b", &b)],
        small_cdc(),
    )
    .unwrap();
    let mut opts = options("item");
    opts.parent = Some(first_id);
    let mut backup = Backup::start(&tv.vault, opts).unwrap();
    assert!(backup.carry_forward("d").unwrap());
    assert!(!backup.carry_forward("missing").unwrap());
    let (_, second) = backup.commit(CommitOptions::default()).unwrap();
    assert_eq!(second.stats.bytes_read, 0);
    assert_eq!(second.stats.entries_carried, 1);
    assert_eq!(second.parent, Some(first_id));
    assert_eq!(
        second.root, first.root,
        "identical trees deduplicate to the same root"
    );
    assert_eq!(read_file(&tv.vault, &second, "d/b").unwrap(), b);
}

#[test]
fn entries_out_of_order_are_refused() {
    let tv = TestVault::encrypted();
    let mut backup = Backup::start(&tv.vault, options("item")).unwrap();
    backup
        .add_entry("a/x", Entry::new("", EntryKind::File))
        .unwrap();
    backup
        .add_entry("b", Entry::new("", EntryKind::File))
        .unwrap();
    backup
        .add_entry("a/y", Entry::new("", EntryKind::File))
        .unwrap();
    let err = backup.commit(CommitOptions::default()).unwrap_err();
    assert!(err.to_string().contains("added twice"), "{err}");
    assert!(
        Backup::start(&tv.vault, options("item"))
            .unwrap()
            .add_entry("../x", Entry::new("", EntryKind::File))
            .is_err()
    );
}
