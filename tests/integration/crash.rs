//! A backup that stops at any write leaves a vault that checks clean, keeps every
//! committed point, and whose next backup succeeds and reuses what was uploaded.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tessera_tests::{
    Fault, FaultyBackend, TestVault, assert_sound, backup_files, options, random_bytes, read_file,
    small_cdc,
};
use tessera_vault::{Backend, LocalBackend, Vault};

fn small_packs(item: &str) -> tessera_vault::BackupOptions {
    let mut o = options(item);
    o.pack_size = 128 << 10;
    o
}

/// Runs the interrupted backup through a faulty backend; returns whether it committed.
fn interrupted_backup(tv: &TestVault, fail_at: usize, fault: Fault, data: &[u8]) -> (bool, usize) {
    let backend = Arc::new(FaultyBackend::new(tv.path(), fail_at, fault));
    let vault = tv.open_with(backend.clone() as Arc<dyn Backend>);
    let result = backup_files(&vault, small_packs("item"), &[("f", data)], small_cdc());
    (result.is_ok(), backend.writes())
}

#[test]
fn backup_stopped_at_every_write_leaves_a_sound_vault() {
    let base = random_bytes(20, 700_000);
    let data = random_bytes(21, 1_500_000);
    // Count the writes of an uninterrupted run.
    let (_, total_writes) = {
        let tv = TestVault::encrypted();
        interrupted_backup(&tv, usize::MAX, Fault::Stop, &data)
    };
    assert!(total_writes > 8, "expected many writes, got {total_writes}");
    for fail_at in 1..=total_writes {
        let tv = TestVault::encrypted();
        let (_, committed) =
            backup_files(&tv.vault, small_packs("base"), &[("f", &base)], small_cdc()).unwrap();
        let (ok, _) = interrupted_backup(&tv, fail_at, Fault::Stop, &data);

        let vault = tv.reopen();
        assert_sound(&vault);
        assert_eq!(
            read_file(&vault, &committed, "f").unwrap(),
            base,
            "stop at write {fail_at}"
        );
        let points = vault.points().unwrap();
        assert_eq!(
            points.len(),
            if ok { 2 } else { 1 },
            "stop at write {fail_at}"
        );

        let (_, next) =
            backup_files(&vault, small_packs("item"), &[("f", &data)], small_cdc()).unwrap();
        assert_eq!(read_file(&vault, &next, "f").unwrap(), data);
        // Once a pack of the interrupted run was written, the next run reuses it.
        if fail_at > 3 {
            assert!(
                next.stats.bytes_new < data.len() as u64,
                "stop at write {fail_at}: next backup stored {} new bytes, nothing reused",
                next.stats.bytes_new
            );
        }
        assert_sound(&vault);
    }
}

#[test]
fn backups_look_for_unindexed_packs_only_after_a_session_without_an_end() {
    let tv = TestVault::encrypted();
    let data = random_bytes(23, 1_500_000);
    backup_files(&tv.vault, small_packs("item"), &[("f", &data)], small_cdc()).unwrap();
    let counting = |tv: &TestVault| {
        let backend = Arc::new(FaultyBackend::new(tv.path(), usize::MAX, Fault::Stop));
        (tv.open_with(backend.clone() as Arc<dyn Backend>), backend)
    };

    // After clean runs there is nothing to look for.
    let (vault, backend) = counting(&tv);
    let changed = random_bytes(24, 1_500_000);
    backup_files(&vault, small_packs("item"), &[("f", &changed)], small_cdc()).unwrap();
    assert_eq!(
        backend.pack_lists(),
        0,
        "a backup after clean runs listed the packs"
    );

    // A backup stopped after some of its packs were written leaves its session open; the
    // next backup finds those packs and reuses them.
    let fresh = random_bytes(25, 1_500_000);
    let (ok, _) = interrupted_backup(&tv, 6, Fault::Stop, &fresh);
    assert!(!ok, "the interrupted backup committed");
    let (vault, backend) = counting(&tv);
    let (_, next) =
        backup_files(&vault, small_packs("item"), &[("f", &fresh)], small_cdc()).unwrap();
    assert_eq!(backend.pack_lists(), 1);
    assert!(
        next.stats.bytes_new < fresh.len() as u64,
        "nothing of the interrupted backup was reused"
    );
    assert_eq!(read_file(&vault, &next, "f").unwrap(), fresh);
    assert_sound(&vault);
}

#[test]
fn a_single_failed_write_never_damages_the_vault() {
    let data = random_bytes(22, 1_000_000);
    for fail_at in 1..=12 {
        let tv = TestVault::encrypted();
        let (ok, _) = interrupted_backup(&tv, fail_at, Fault::FailOnce, &data);
        let vault = tv.reopen();
        assert_sound(&vault);
        if ok {
            let (_, point) = vault.latest_point(Some("item")).unwrap().unwrap();
            assert_eq!(read_file(&vault, &point, "f").unwrap(), data);
        }
        let (_, next) =
            backup_files(&vault, small_packs("item"), &[("f", &data)], small_cdc()).unwrap();
        assert_eq!(read_file(&vault, &next, "f").unwrap(), data);
    }
}

#[test]
fn kill_9_at_random_moments_never_damages_the_vault() {
    let tv = TestVault::encrypted();
    let writer = env!("CARGO_BIN_EXE_tessera-test-writer");
    // Kill after a varying amount of progress: each line is one MiB streamed.
    for (round, lines) in [1usize, 3, 7, 12, 20, 33].into_iter().enumerate() {
        let mut child = Command::new(writer)
            .arg(tv.path())
            .arg(round.to_string())
            .arg("loop")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        for _ in 0..lines {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let vault = tv.reopen();
        assert_sound(&vault);
        for (_, point) in vault.points().unwrap() {
            let seed: u64 = point.item.trim_start_matches("seed-").parse().unwrap();
            assert_eq!(
                read_file(&vault, &point, "f").unwrap(),
                writer_data(seed),
                "point of {}",
                point.item
            );
        }
    }
    // The vault still takes backups after all that.
    let vault = Vault::open(
        Arc::new(LocalBackend::new(tv.path())),
        tessera_vault::OpenOptions::new(Some(tessera_vault::Credential::password(
            tessera_tests::PASSWORD,
        ))),
    )
    .unwrap();
    let data = writer_data(99);
    let (_, point) =
        backup_files(&vault, small_packs("seed-99"), &[("f", &data)], small_cdc()).unwrap();
    assert_eq!(read_file(&vault, &point, "f").unwrap(), data);
}

/// The data the writer process backs up for a seed (kept in step with `src/bin/writer.rs`).
fn writer_data(seed: u64) -> Vec<u8> {
    tessera_tests::writer_data(seed)
}
