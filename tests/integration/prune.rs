//! Retention and space reclamation, including prune running while a backup runs.

use tessera_tests::{
    Fault, FaultyBackend, TestVault, assert_sound, backup_files, options, random_bytes, read_file,
    small_cdc,
};
use tessera_vault::commands::backup::{Backup, CommitOptions};
use tessera_vault::commands::prune::{ForgetOptions, PruneOptions, forget, prune};
use tessera_vault::retention::RetentionPolicy;
use tessera_vault::{Entry, EntryKind, FileKind, Vault};

fn vault_bytes(vault: &Vault) -> u64 {
    vault
        .backend()
        .list(FileKind::Pack)
        .unwrap()
        .iter()
        .map(|i| i.size)
        .sum()
}

fn keep_last(n: u32) -> ForgetOptions {
    ForgetOptions {
        policy: RetentionPolicy {
            keep_last: Some(n),
            ..Default::default()
        },
        item: None,
        dry_run: false,
        time_zone: jiff::tz::TimeZone::UTC,
    }
}

fn now_prune() -> PruneOptions {
    PruneOptions {
        grace: jiff::SignedDuration::ZERO,
        ..Default::default()
    }
}

#[test]
fn forget_and_prune_reclaim_space() {
    let tv = TestVault::encrypted();
    let old = random_bytes(40, 3 << 20);
    let new = random_bytes(41, 3 << 20);
    backup_files(&tv.vault, options("item"), &[("f", &old)], small_cdc()).unwrap();
    tv.clock.advance(jiff::SignedDuration::from_hours(1));
    let (_, kept) = backup_files(&tv.vault, options("item"), &[("f", &new)], small_cdc()).unwrap();
    let before = vault_bytes(&tv.vault);

    let decisions = forget(&tv.vault, &keep_last(1)).unwrap();
    assert_eq!(decisions.iter().filter(|d| !d.keep).count(), 1);
    assert_eq!(tv.vault.points().unwrap().len(), 1);

    let dry = prune(
        &tv.vault,
        &PruneOptions {
            dry_run: true,
            ..now_prune()
        },
    )
    .unwrap();
    assert!(dry.bytes_marked > 2 << 20, "{dry:?}");
    assert_eq!(vault_bytes(&tv.vault), before, "a dry run changes nothing");

    let stats = prune(&tv.vault, &now_prune()).unwrap();
    assert!(stats.bytes_deleted > 2 << 20, "{stats:?}");
    assert!(vault_bytes(&tv.vault) < before - (2 << 20));
    assert_sound(&tv.vault);
    assert_eq!(read_file(&tv.vault, &kept, "f").unwrap(), new);
}

/// A vault opened before prune marked packs sees the marks when it next reloads its
/// index, though no index file came or went, and no longer deduplicates against them.
#[test]
fn marks_made_after_opening_reach_the_next_reload() {
    let tv = TestVault::encrypted();
    let data = random_bytes(42, 2 << 20);
    backup_files(&tv.vault, options("gone"), &[("f", &data)], small_cdc()).unwrap();
    tv.clock.advance(jiff::SignedDuration::from_hours(1));
    let other = tv.reopen();
    let points: Vec<_> = tv
        .vault
        .points()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    tessera_vault::commands::prune::forget_points(&tv.vault, &points, false).unwrap();
    // A grace period, so the packs are marked and not yet deleted.
    let stats = prune(&tv.vault, &PruneOptions::default()).unwrap();
    assert!(stats.bytes_marked > 1 << 20, "{stats:?}");
    let marked = tv.vault.marked_packs().unwrap();
    assert!(!marked.is_empty());
    assert!(marked.iter().all(|pack| !other.index().is_excluded(pack)));
    other.reload_index().unwrap();
    assert!(marked.iter().all(|pack| other.index().is_excluded(pack)));
}

#[test]
fn prune_during_backup_never_loses_data_the_backup_uses() {
    let tv = TestVault::encrypted();
    let data = random_bytes(42, 2 << 20);
    let (old_id, _) =
        backup_files(&tv.vault, options("old"), &[("f", &data)], small_cdc()).unwrap();

    // A backup starts and finds all its data already stored (by the point about to go).
    let backup_vault = tv.reopen();
    let mut backup = Backup::start(&backup_vault, options("new")).unwrap();
    let mut stream = backup.stream(small_cdc()).unwrap();
    stream.write(&data).unwrap();
    let result = stream.finish().unwrap();
    assert_eq!(
        result.stats.bytes_new, 0,
        "everything deduplicated against the old point"
    );

    // Meanwhile the old point is forgotten and prune marks its packs.
    let pruner = tv.reopen();
    // (Removed by hand: a retention policy never forgets an item's only point.)
    pruner
        .backend()
        .remove(FileKind::Point, &old_id.to_hex())
        .unwrap();
    let grace = jiff::SignedDuration::from_hours(1);
    let options = PruneOptions {
        grace,
        ..Default::default()
    };
    let first = prune(&pruner, &options).unwrap();
    assert!(first.packs_marked > 0, "{first:?}");

    // Hours pass; the backup is still running (it heartbeats) so nothing may go.
    tv.clock.advance(jiff::SignedDuration::from_hours(2));
    let mut entry = Entry::new("", EntryKind::File);
    entry.content = result.content;
    backup.add_entry("f", entry).unwrap();
    let blocked = prune(&pruner, &options).unwrap();
    assert_eq!(blocked.packs_deleted, 0, "{blocked:?}");
    assert!(blocked.packs_waiting > 0);

    let (_, point) = backup.commit(CommitOptions::default()).unwrap();
    tv.clock.advance(jiff::SignedDuration::from_hours(2));
    let after = prune(&pruner, &options).unwrap();
    // Only the old point's own tree may go (trees have packs of their own); the data
    // packs the new point uses are unmarked and kept.
    assert!(
        after.bytes_deleted < 64 << 10,
        "the new point uses the data packs: {after:?}"
    );
    assert!(after.packs_unmarked > 0);
    assert_sound(&pruner);
    assert_eq!(read_file(&pruner, &point, "f").unwrap(), data);
}

#[test]
fn a_dead_backup_stops_blocking_prune_once_stale() {
    let tv = TestVault::encrypted();
    let data = random_bytes(43, 1 << 20);
    let mut opts = options("crashed");
    opts.pack_size = 64 << 10;
    let backend = std::sync::Arc::new(FaultyBackend::new(tv.path(), usize::MAX, Fault::Stop));
    let mut backup = Backup::start(&tv.open_with(backend.clone()), opts).unwrap();
    let mut stream = backup.stream(small_cdc()).unwrap();
    stream.write(&data).unwrap();
    stream.finish().unwrap();
    // Power is lost: nothing more reaches the vault, not even the end of the session.
    backend.stop_now();
    drop(backup);

    let options = PruneOptions {
        grace: jiff::SignedDuration::from_hours(1),
        ..Default::default()
    };
    let marked = prune(&tv.vault, &options).unwrap();
    assert!(marked.packs_marked > 0);
    tv.clock.advance(jiff::SignedDuration::from_mins(20));
    assert_eq!(
        prune(&tv.vault, &options).unwrap().packs_deleted,
        0,
        "within the grace period"
    );
    tv.clock.advance(jiff::SignedDuration::from_hours(3));
    let swept = prune(&tv.vault, &options).unwrap();
    assert!(swept.packs_deleted > 0, "{swept:?}");
    assert_eq!(swept.sessions_removed, 1);
    assert_eq!(vault_bytes(&tv.vault), 0);
    assert_sound(&tv.vault);
}

#[test]
fn mostly_unused_packs_are_repacked() {
    let tv = TestVault::encrypted();
    let keep = random_bytes(44, 1 << 20);
    let drop_me = random_bytes(45, 3 << 20);
    let mut opts = options("a");
    opts.pack_size = 64 << 20;
    // One pack holds both files: with one chunk worker, every data chunk goes to its pack.
    opts.workers = 1;
    let mut backup = Backup::start(&tv.vault, opts).unwrap();
    for (name, data) in [("keep", &keep), ("drop", &drop_me)] {
        let mut stream = backup.stream(small_cdc()).unwrap();
        stream.write(data).unwrap();
        let mut entry = Entry::new("", EntryKind::File);
        entry.content = stream.finish().unwrap().content;
        backup.add_entry(name, entry).unwrap();
    }
    backup.commit(CommitOptions::default()).unwrap();
    tv.clock.advance(jiff::SignedDuration::from_hours(1));
    let (_, second) =
        backup_files(&tv.vault, options("a"), &[("keep", &keep)], small_cdc()).unwrap();
    forget(&tv.vault, &keep_last(1)).unwrap();
    let before = vault_bytes(&tv.vault);
    let stats = prune(&tv.vault, &now_prune()).unwrap();
    assert_eq!(stats.packs_repacked, 1, "{stats:?}");
    assert!(vault_bytes(&tv.vault) < before - (2 << 20));
    assert_sound(&tv.vault);
    assert_eq!(read_file(&tv.vault, &second, "keep").unwrap(), keep);
}

#[test]
fn new_tags_give_a_point_a_new_id_and_keep_everything_else() {
    use tessera_vault::commands::tag::{TagChange, retag};
    let tv = TestVault::encrypted();
    let data = random_bytes(80, 300_000);
    let mut opts = options("db");
    opts.tags = vec!["nightly".into()];
    let (first, point) =
        backup_files(&tv.vault, opts, &[("dump.sql", &data)], small_cdc()).unwrap();
    tv.clock.advance(jiff::SignedDuration::from_hours(1));
    let (second, _) = backup_files(
        &tv.vault,
        options("db"),
        &[("dump.sql", &data)],
        small_cdc(),
    )
    .unwrap();
    tv.vault
        .record_damage(first, "bit rot in dump.sql", &[])
        .unwrap();
    let keep = TagChange {
        add: vec!["keep".into()],
        ..TagChange::default()
    };

    // A point that is not there stops the change before anything is written.
    let absent = tessera_vault::PointId::hash_of(b"absent");
    assert!(retag(&tv.vault, &[first, absent], &keep, false).is_err());
    let dry = retag(&tv.vault, &[first], &keep, true).unwrap();
    assert!(dry[0].changed && dry[0].new.is_none(), "{dry:?}");
    let ids = |vault: &Vault| -> Vec<_> {
        vault
            .points()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(ids(&tv.vault), [first, second]);

    let done = retag(&tv.vault, &[first, first], &keep, false).unwrap();
    assert_eq!(done.len(), 1);
    let renamed = done[0].new.unwrap();
    assert_eq!(done[0].tags, ["nightly", "keep"]);
    assert_eq!(ids(&tv.vault), [renamed, second]);
    let moved = tv.vault.load_point(&renamed).unwrap();
    assert_eq!(moved.original, Some(first));
    assert_eq!(
        (moved.end, moved.root, &moved.item),
        (point.end, point.root, &point.item)
    );
    assert_eq!(read_file(&tv.vault, &moved, "dump.sql").unwrap(), data);
    // The damage record follows the point.
    assert_eq!(tv.vault.damage(&first).unwrap(), None);
    assert_eq!(
        tv.vault.damage(&renamed).unwrap().as_deref(),
        Some("bit rot in dump.sql")
    );

    // Unchanged tags keep the id; a second change keeps the first original.
    assert_eq!(
        retag(&tv.vault, &[renamed], &keep, false).unwrap()[0].new,
        None
    );
    let clear = TagChange {
        set: Some(Vec::new()),
        ..TagChange::default()
    };
    let again = retag(&tv.vault, &[renamed], &clear, false).unwrap()[0]
        .new
        .unwrap();
    let cleared = tv.vault.load_point(&again).unwrap();
    assert!(cleared.tags.is_empty());
    assert_eq!(cleared.original, Some(first));
    assert_sound(&tv.vault);
}

#[test]
fn a_rewritten_point_loses_the_paths_excluded_and_keeps_the_rest() {
    use tessera_vault::commands::prune::forget_points;
    use tessera_vault::commands::rewrite::rewrite;
    let tv = TestVault::encrypted();
    let secret = random_bytes(91, 400_000);
    let kept = random_bytes(92, 300_000);
    let linked = random_bytes(93, 200_000);
    let mut backup = Backup::start(&tv.vault, options("host")).unwrap();
    let file = |backup: &mut Backup, path: &str, data: &[u8], links: u64| {
        let mut stream = backup.stream(small_cdc()).unwrap();
        stream.write(data).unwrap();
        let mut entry = Entry::new("", EntryKind::File);
        entry.meta.size = data.len() as u64;
        entry.meta.nlink = Some(links);
        entry.content = stream.finish().unwrap().content;
        backup.add_entry(path, entry).unwrap();
    };
    let dir = |backup: &mut Backup, path: &str| {
        backup
            .add_entry(path, Entry::new("", EntryKind::Directory))
            .unwrap();
    };
    let link = |backup: &mut Backup, path: &str, target: &str| {
        let kind = EntryKind::Hardlink {
            target: target.into(),
        };
        backup.add_entry(path, Entry::new("", kind)).unwrap();
    };
    dir(&mut backup, "app");
    file(&mut backup, "app/config", &kept, 1);
    file(&mut backup, "app/data", &linked, 3);
    link(&mut backup, "app/links", "app/data");
    dir(&mut backup, "home");
    link(&mut backup, "home/one", "app/data");
    file(&mut backup, "home/secret.key", &secret, 1);
    let (original, before) = backup.commit(CommitOptions::default()).unwrap();
    let excluded = |path: &str| path == "app/data" || path.ends_with(".key");

    let dry = rewrite(&tv.vault, original, &excluded, true).unwrap();
    assert_eq!(dry.removed, ["app/data", "home/secret.key"]);
    assert_eq!(dry.new, None);
    assert_eq!(tv.vault.points().unwrap().len(), 1);

    let done = rewrite(&tv.vault, original, &excluded, false).unwrap();
    let new = done.new.unwrap();
    let points = tv.vault.points().unwrap();
    assert_eq!(
        points.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [original, new],
        "the rewrite keeps the original's time and comes after it"
    );
    let after = &points[1].1;
    assert_eq!(after.original, Some(original));
    assert_eq!(
        (after.end, &after.item, &after.stats),
        (before.end, &before.item, &before.stats)
    );
    assert_eq!(read_file(&tv.vault, after, "app/config").unwrap(), kept);
    assert!(tv.vault.find_entry(after, "home/secret.key").is_err());
    assert!(tv.vault.find_entry(after, "app/data").is_err());
    // The first remaining name of the removed file holds its content; the next links to it.
    let first = tv.vault.find_entry(after, "app/links").unwrap();
    assert_eq!(first.kind, EntryKind::File);
    assert_eq!(read_file(&tv.vault, after, "app/links").unwrap(), linked);
    let second = tv.vault.find_entry(after, "home/one").unwrap();
    assert_eq!(
        second.kind,
        EntryKind::Hardlink {
            target: "app/links".into()
        }
    );
    // The original is untouched until forgotten; then prune reclaims the secret.
    assert_eq!(
        read_file(&tv.vault, &before, "home/secret.key").unwrap(),
        secret
    );
    let tessera_vault::Content::Extents(extents) = tv
        .vault
        .find_entry(&before, "home/secret.key")
        .unwrap()
        .content
    else {
        panic!("a small file's extents are in its entry")
    };
    let secret_chunks: Vec<_> = extents.iter().filter_map(|e| e.id).collect();
    assert!(!secret_chunks.is_empty());
    forget_points(&tv.vault, &[original], false).unwrap();
    // Every pack holding some of the secret is repacked, however little of it.
    let every_pack = PruneOptions {
        repack_threshold: 0.0,
        ..now_prune()
    };
    prune(&tv.vault, &every_pack).unwrap();
    let vault = tv.reopen();
    for id in &secret_chunks {
        assert!(vault.index().lookup(id).is_none(), "{id:?} is still stored");
    }
    assert_eq!(read_file(&vault, after, "app/links").unwrap(), linked);
    assert_sound(&vault);
}
