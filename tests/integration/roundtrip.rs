//! Data goes in and comes back bit for bit.

use std::io::Read;

use tessera_tests::{
    TestVault, assert_sound, backup_files, options, random_bytes, read_file, small_cdc,
};
use tessera_vault::chunker::Chunking;
use tessera_vault::commands::backup::{Backup, CommitOptions};
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
        assert_sound(&reopened);
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
fn file_ranges_read_by_the_workers_store_what_the_file_holds() {
    for tv in [TestVault::encrypted(), TestVault::plain()] {
        file_ranges_round_trip(&tv);
    }
}

fn file_ranges_round_trip(tv: &TestVault) {
    let chunk = 16 << 10;
    // Data, a run of zeros the workers turn into holes, text that compresses, data again
    // (twice the same, deduplicated), and an odd tail.
    let mut image = random_bytes(7, 4 << 20);
    image[1 << 20..(2 << 20) + 100].fill(0);
    let text = b"the quick brown fox jumps over the lazy dog\n".repeat(24_000);
    image[2 << 20..(2 << 20) + text.len()].copy_from_slice(&text);
    image.copy_within(0..512 << 10, 3 << 20);
    image.truncate((4 << 20) - 777);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, &image).unwrap();
    let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());

    let mut backup = Backup::start(&tv.vault, options("vm")).unwrap();
    let mut stream = backup.stream(Chunking::Fixed { size: chunk }).unwrap();
    // Ranges that start and end inside chunks, and one that runs past the file's end.
    let mut at = 0u64;
    for len in [1000u64, 40_000, 1 << 20, 5, 4 << 20] {
        let read = stream.write_file_at(&file, at, len, "disk.img").unwrap();
        at += read;
        if read < len {
            break;
        }
    }
    assert_eq!(
        at,
        image.len() as u64,
        "the last range stops at the file's end"
    );
    let result = stream.finish().unwrap();
    let stats = result.stats;
    assert_eq!(stats.bytes_read, image.len() as u64);
    assert_eq!(stats.bytes_holes, 1 << 20, "the whole chunks of zeros");
    // The copied run, and the text's chunks, which repeat every 11.
    assert!(
        stats.bytes_reused > (512 << 10) + (text.len() as u64) / 2,
        "{stats:?}"
    );
    assert!(
        stats.bytes_stored < stats.bytes_new,
        "the text was compressed: {stats:?}"
    );
    assert_ids_of(tv, &result.content, &image);
    commit_disk(tv, backup, result.content, &image);

    // A range wholly past the file's end appends nothing. (A file that shrinks while
    // the workers read it is tested end to end in `vmdisk`, on a FUSE file.)
    let mut backup = Backup::start(&tv.vault, options("vm")).unwrap();
    let mut stream = backup.stream(Chunking::Fixed { size: chunk }).unwrap();
    let past = (image.len() as u64).next_multiple_of(chunk as u64);
    assert_eq!(
        stream
            .write_file_at(&file, past, 1 << 20, "disk.img")
            .unwrap(),
        0
    );
    assert_eq!(stream.finish().unwrap().stats.bytes_read, 0);
    backup.abort();
}

/// Commits `content` as the block device `disk0`, then checks that it reads back as
/// `expected`, also from the vault reopened, and that the vault checks clean.
fn commit_disk(tv: &TestVault, mut backup: Backup, content: Content, expected: &[u8]) {
    let mut entry = Entry::new("", EntryKind::BlockDevice);
    entry.content = content;
    backup.add_entry("disk0", entry).unwrap();
    let (_, point) = backup.commit(CommitOptions::default()).unwrap();
    assert_eq!(read_file(&tv.vault, &point, "disk0").unwrap(), expected);
    assert_eq!(read_file(&tv.reopen(), &point, "disk0").unwrap(), expected);
    assert_sound(&tv.vault);
}

#[test]
fn shared_bytes_stored_by_the_workers_round_trip() {
    for tv in [TestVault::encrypted(), TestVault::plain()] {
        shared_bytes_round_trip(&tv);
    }
}

fn shared_bytes_round_trip(tv: &TestVault) {
    let chunk = 16 << 10;
    // Data, zeros the workers turn into holes, text that compresses, a repeat, an odd tail.
    let mut disk = random_bytes(8, 3 << 20);
    disk[512 << 10..(1 << 20) + 300].fill(0);
    let text = b"pack my box with five dozen liquor jugs\n".repeat(20_000);
    disk[1 << 20..(1 << 20) + text.len()].copy_from_slice(&text);
    disk.copy_within(0..256 << 10, 2 << 20);
    disk.truncate((3 << 20) - 333);

    let mut backup = Backup::start(&tv.vault, options("vm")).unwrap();
    let mut stream = backup.stream(Chunking::Fixed { size: chunk }).unwrap();
    // Pieces that start and end inside chunks, some shorter than a chunk, each handed
    // over as one shared allocation, as a host buffer is.
    let mut at = 0;
    for len in [100, 20_000, 16 << 10, 1 << 20, 7, usize::MAX] {
        let end = at + len.min(disk.len() - at);
        stream
            .write_shared(bytes::Bytes::copy_from_slice(&disk[at..end]))
            .unwrap();
        at = end;
    }
    let result = stream.finish().unwrap();
    let stats = result.stats;
    assert_eq!(stats.bytes_read, disk.len() as u64);
    assert_eq!(stats.bytes_holes, 512 << 10, "the whole chunks of zeros");
    assert!(stats.bytes_reused >= 256 << 10, "{stats:?}");
    assert!(
        stats.bytes_stored < stats.bytes_new,
        "the text was compressed: {stats:?}"
    );
    assert_ids_of(tv, &result.content, &disk);
    commit_disk(tv, backup, result.content, &disk);

    // Content-defined streams take shared bytes too, copying them.
    let mut backup = Backup::start(&tv.vault, options("files")).unwrap();
    let mut stream = backup.stream(small_cdc()).unwrap();
    stream
        .write_shared(bytes::Bytes::copy_from_slice(&disk))
        .unwrap();
    let result = stream.finish().unwrap();
    assert_ids_of(tv, &result.content, &disk);
    let mut entry = Entry::new("", EntryKind::File);
    entry.content = result.content;
    backup.add_entry("f", entry).unwrap();
    let (_, point) = backup.commit(CommitOptions::default()).unwrap();
    assert_eq!(read_file(&tv.vault, &point, "f").unwrap(), disk);
}

/// Checks that each chunk of `content`, which holds `data`, is named by the id of its
/// bytes as one chunk alone is hashed: the workers hash chunks two at a time, and an id
/// that differed would still restore, but never deduplicate against the same bytes
/// stored another way.
fn assert_ids_of(tv: &TestVault, content: &Content, data: &[u8]) {
    let extents = match content {
        Content::Extents(extents) => extents.clone(),
        Content::Lists(lists) => lists
            .iter()
            .flat_map(|list| tv.vault.read_extent_list(&list.id).unwrap().extents)
            .collect(),
    };
    let mut at = 0;
    let mut chunks = 0;
    for extent in extents {
        let bytes = &data[at..at + extent.len as usize];
        match extent.id {
            Some(id) => {
                assert_eq!(id, tv.vault.crypto().chunk_id(bytes), "the chunk at {at}");
                chunks += 1;
            }
            None => assert!(bytes.iter().all(|&b| b == 0), "the hole at {at}"),
        }
        at += extent.len as usize;
    }
    assert_eq!(at, data.len());
    assert!(chunks > 2, "{chunks} chunks");
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
fn parent_entries_with_bad_chunks_are_not_carried_forward() {
    let tv = TestVault::encrypted();
    let a = random_bytes(13, 300_000);
    let b = random_bytes(14, 300_000);
    let (first_id, first) = backup_files(
        &tv.vault,
        options("item"),
        &[("d/a", &a), ("d/b", &b)],
        small_cdc(),
    )
    .unwrap();
    // `check` found a chunk of `d/a` bad.
    let bad = match tv.vault.find_entry(&first, "d/a").unwrap().content {
        Content::Extents(extents) => extents[1].id.unwrap(),
        Content::Lists(_) => unreachable!("a short file has its extents inline"),
    };
    tv.vault
        .record_damage(first_id, "bit rot in d/a", &[bad])
        .unwrap();
    let vault = tv.reopen();

    let mut opts = options("item");
    opts.parent = Some(first_id);
    let mut backup = Backup::start(&vault, opts).unwrap();
    // The whole directory holds the bad chunk; `d/b` alone does not.
    assert!(!backup.carry_forward("d").unwrap());
    assert!(!backup.carry_forward("d/a").unwrap());
    assert!(backup.carry_forward("d/b").unwrap());
    let parent_a = backup.parent_entry("d/a").unwrap().unwrap();
    let Content::Extents(extents) = &parent_a.content else {
        unreachable!()
    };
    let mut stream = backup.stream(small_cdc()).unwrap();
    let refused = stream.push_extents(extents).unwrap_err();
    assert!(
        refused.to_string().contains("missing or damaged"),
        "{refused}"
    );
    // Read again instead, the chunk is stored anew.
    let mut stream = backup.stream(small_cdc()).unwrap();
    stream.write(&a).unwrap();
    let mut entry = Entry::new("", EntryKind::File);
    entry.content = stream.finish().unwrap().content;
    backup.add_entry("d/a", entry).unwrap();
    let (_, second) = backup.commit(CommitOptions::default()).unwrap();
    assert_eq!(second.stats.entries_carried, 1);
    assert!(second.stats.bytes_new > 0, "the bad chunk was stored again");
    assert_eq!(read_file(&vault, &second, "d/a").unwrap(), a);
    assert_eq!(read_file(&vault, &second, "d/b").unwrap(), b);
}

#[test]
fn a_parent_tree_that_cannot_be_read_hides_its_entries() {
    let tv = TestVault::encrypted();
    let a = random_bytes(15, 100_000);
    let (first_id, _) =
        backup_files(&tv.vault, options("item"), &[("d/a", &a)], small_cdc()).unwrap();
    // Every index file gone: no chunk of the point can be located.
    for entry in std::fs::read_dir(tv.path().join("index")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let vault = tv.reopen();
    let mut opts = options("item");
    opts.parent = Some(first_id);
    let mut backup = Backup::start(&vault, opts).unwrap();
    assert!(backup.parent_entry("d/a").unwrap().is_none());
    assert!(!backup.carry_forward("d/a").unwrap());
    let mut stream = backup.stream(small_cdc()).unwrap();
    stream.write(&a).unwrap();
    let mut entry = Entry::new("", EntryKind::File);
    entry.content = stream.finish().unwrap().content;
    backup.add_entry("d/a", entry).unwrap();
    let (_, second) = backup.commit(CommitOptions::default()).unwrap();
    assert_eq!(read_file(&vault, &second, "d/a").unwrap(), a);
}

#[test]
fn a_stream_left_open_does_not_hold_up_the_commit() {
    let tv = TestVault::encrypted();
    let data = random_bytes(16, 500_000);
    let mut backup = Backup::start(&tv.vault, options("item")).unwrap();
    let mut open = backup.stream(small_cdc()).unwrap();
    open.write(&data).unwrap();
    let (_, point) = backup.commit(CommitOptions::default()).unwrap();
    assert_eq!(point.stats.entries_carried, 0);
    // The workers are gone: the stream fails instead of waiting forever.
    assert!(
        open.write(&data)
            .and_then(|()| open.finish().map(|_| ()))
            .is_err()
    );
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

#[test]
fn vault_stats_report_dedup_and_compression() {
    let tv = TestVault::encrypted();
    let data = random_bytes(12, 2 << 20);
    let text = b"all work and no play makes jack a dull boy\n".repeat(40_000);
    backup_files(
        &tv.vault,
        options("a"),
        &[("f", &data), ("t", &text)],
        small_cdc(),
    )
    .unwrap();
    backup_files(
        &tv.vault,
        options("b"),
        &[("f", &data), ("t", &text)],
        small_cdc(),
    )
    .unwrap();
    let stats = tessera_vault::commands::stats::stats(&tv.vault).unwrap();
    assert_eq!((stats.points, stats.items), (2, 2));
    let logical = 2 * (data.len() + text.len()) as u64;
    assert_eq!(stats.bytes_logical, logical);
    assert!((stats.dedup_ratio - 2.0).abs() < 0.05, "{stats:?}");
    assert!(stats.compression_ratio > 1.2, "{stats:?}");
    assert!(stats.bytes_stored < (data.len() + text.len()) as u64);
    assert!(
        stats.index_bytes_per_chunk <= 64.0 || stats.chunks < 1000,
        "{stats:?}"
    );
}

mod random_edits {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Edit {
        Insert(usize, Vec<u8>),
        Delete(usize, usize),
        Overwrite(usize, Vec<u8>),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 1..5000)
            )
                .prop_map(|(a, b)| Edit::Insert(a, b)),
            (any::<usize>(), 1usize..50_000).prop_map(|(a, n)| Edit::Delete(a, n)),
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 1..5000)
            )
                .prop_map(|(a, b)| Edit::Overwrite(a, b)),
        ]
    }

    fn apply(data: &mut Vec<u8>, edit: &Edit) {
        let at = |a: usize, data: &Vec<u8>| if data.is_empty() { 0 } else { a % data.len() };
        match edit {
            Edit::Insert(a, bytes) => {
                let at = at(*a, data);
                data.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(a, n) => {
                let at = at(*a, data);
                let end = (at + n).min(data.len());
                data.drain(at..end);
            }
            Edit::Overwrite(a, bytes) => {
                let at = at(*a, data);
                let end = (at + bytes.len()).min(data.len());
                data[at..end].copy_from_slice(&bytes[..end - at]);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        #[test]
        fn random_data_and_random_edits_round_trip(
            seed in any::<u64>(),
            len in 0usize..3_000_000,
            edits in proptest::collection::vec(edit(), 0..6),
            fixed in any::<bool>(),
        ) {
            let tv = TestVault::encrypted();
            let chunking = if fixed { Chunking::Fixed { size: 16 * 1024 } } else { small_cdc() };
            let original = random_bytes(seed, len);
            let mut edited = original.clone();
            for e in &edits {
                apply(&mut edited, e);
            }
            let (_, first) = backup_files(&tv.vault, options("p"), &[("f", &original)], chunking).unwrap();
            let (_, second) = backup_files(&tv.vault, options("p"), &[("f", &edited)], chunking).unwrap();
            prop_assert_eq!(read_file(&tv.vault, &first, "f").unwrap(), original);
            prop_assert_eq!(read_file(&tv.vault, &second, "f").unwrap(), edited);
        }
    }
}

mod read_from_sources {
    use proptest::prelude::*;

    use super::*;

    /// A source that hands out its bytes in reads of the given sizes, in turn, and then
    /// fails if `fail` says so instead of ending.
    struct Trickle<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        turn: usize,
        fail: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.data.is_empty() && self.fail {
                return Err(std::io::Error::other("the disk went away"));
            }
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            let n = size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn content_written(tv: &TestVault, chunking: Chunking, data: &[u8]) -> Content {
        let mut backup = Backup::start(&tv.vault, options("w")).unwrap();
        let mut stream = backup.stream(chunking).unwrap();
        for piece in data.chunks(100_000) {
            stream.write(piece).unwrap();
        }
        stream.finish().unwrap().content
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Bytes read from a source in place are cut into the chunks written bytes give,
        /// whatever the reads' sizes, the ranges asked for, and the bytes written between.
        #[test]
        fn reading_in_place_cuts_the_chunks_writing_does(
            seed in any::<u64>(),
            len in 0usize..1_500_000,
            sizes in proptest::collection::vec(1usize..200_000, 1..5),
            ranges in proptest::collection::vec(1u64..400_000, 1..6),
            written in 0usize..70_000,
            kind in 0u8..3,
        ) {
            let tv = TestVault::encrypted();
            let chunking = match kind {
                0 => Chunking::Fixed { size: 16 * 1024 },
                1 => small_cdc(),
                _ => Chunking::ContentDefined(tessera_vault::CdcParams {
                    min_size: 100_000,
                    avg_size: 128 * 1024,
                    max_size: 300_000,
                }),
            };
            let data = random_bytes(seed, len);
            let expected = content_written(&tv, chunking, &data);

            let mut backup = Backup::start(&tv.vault, options("r")).unwrap();
            let mut stream = backup.stream(chunking).unwrap();
            // A fixed-size stream's written bytes stay aligned to its chunks; the rest
            // of it comes from the source in ranges of the given lengths.
            let written = match chunking {
                Chunking::Fixed { size } => written.min(len) / size as usize * size as usize,
                _ => written.min(len),
            };
            stream.write(&data[..written]).unwrap();
            let mut source = Trickle { data: &data[written..], sizes, turn: 0, fail: false };
            let mut at = written as u64;
            for want in ranges.iter().cycle() {
                let got = stream.write_from(&mut source, *want, "the source").unwrap();
                at += got;
                if got < *want {
                    break;
                }
            }
            prop_assert_eq!(at, len as u64);
            let result = stream.finish().unwrap();
            prop_assert_eq!(result.stats.bytes_read, len as u64);
            prop_assert_eq!(&result.content, &expected);
            let mut entry = Entry::new("", EntryKind::File);
            entry.content = result.content;
            backup.add_entry("f", entry).unwrap();
            let (_, point) = backup.commit(CommitOptions::default()).unwrap();
            prop_assert_eq!(read_file(&tv.vault, &point, "f").unwrap(), data);
        }
    }

    #[test]
    fn a_source_that_fails_is_named_with_where_it_failed() {
        let tv = TestVault::encrypted();
        let data = random_bytes(7, 300_000);
        let mut backup = Backup::start(&tv.vault, options("r")).unwrap();
        let mut stream = backup.stream(small_cdc()).unwrap();
        let mut source = Trickle {
            data: &data,
            sizes: vec![70_000],
            turn: 0,
            fail: true,
        };
        let err = stream
            .write_from(&mut source, 1 << 20, "disk.img")
            .unwrap_err();
        assert!(
            matches!(&err, tessera_vault::Error::Source { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cannot read disk.img at byte 300000: the disk went away"
        );
        // The bytes read before the failure are in the stream, and it goes on.
        stream.write(b"more").unwrap();
        let content = stream.finish().unwrap().content;
        let mut expected = data.clone();
        expected.extend_from_slice(b"more");
        let mut entry = Entry::new("", EntryKind::File);
        entry.content = content;
        backup.add_entry("f", entry).unwrap();
        let (_, point) = backup.commit(CommitOptions::default()).unwrap();
        assert_eq!(read_file(&tv.vault, &point, "f").unwrap(), expected);
    }
}

#[test]
fn a_backups_chunks_are_in_its_vault_handles_index_after_the_commit() {
    let tv = TestVault::encrypted();
    let data = random_bytes(5, 4 << 20);
    let before = tv.vault.index().len();
    let (_, first) =
        backup_files(&tv.vault, options("item"), &[("f", &data)], small_cdc()).unwrap();
    // The handle's index takes the backup's index files when next asked for, without
    // reading the vault again: its data chunks and the tree blobs.
    let after = tv.vault.index().len();
    assert!(
        after > before + first.stats.chunks_new as usize,
        "{before} -> {after} records, {} new chunks",
        first.stats.chunks_new
    );
    // A second backup through the same handle finds every chunk stored.
    let (_, second) =
        backup_files(&tv.vault, options("other"), &[("f", &data)], small_cdc()).unwrap();
    assert_eq!(second.stats.bytes_new, 0);
    assert_eq!(second.stats.chunks_reused, first.stats.chunks_new);
    // Reading the index files from the vault gives the same records.
    tv.vault.reload_index().unwrap();
    let reloaded = tv.vault.index().len();
    assert_eq!(reloaded, tv.reopen().index().len());
    assert!(reloaded >= after);
}
