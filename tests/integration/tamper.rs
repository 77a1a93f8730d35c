//! Damaged, tampered or truncated files are detected by check and reported with what they
//! affect; nothing panics.

use std::fs;
use std::path::{Path, PathBuf};

use tessera_tests::{TestVault, backup_files, options, random_bytes, read_file, small_cdc};
use tessera_vault::commands::check::{CheckOptions, DataSubset, check, settle_damage};
use tessera_vault::{Error, Vault};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn setup() -> (TestVault, Vec<u8>, tessera_vault::Point) {
    let tv = TestVault::encrypted();
    let data = random_bytes(50, 1 << 20);
    let (_, point) =
        backup_files(&tv.vault, options("item"), &[("dir/f", &data)], small_cdc()).unwrap();
    (tv, data, point)
}

fn full_check(vault: &Vault) -> tessera_vault::commands::check::CheckReport {
    check(
        vault,
        CheckOptions {
            read_data: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn damage(path: &Path, how: &str) {
    let mut bytes = fs::read(path).unwrap();
    match how {
        "flip" => {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
        }
        "truncate" => bytes.truncate(bytes.len() / 2),
        "empty" => bytes.clear(),
        _ => unreachable!(),
    }
    fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_packs_are_reported_with_affected_paths() {
    for how in ["flip", "truncate", "empty"] {
        let (tv, data, point) = setup();
        for pack in files_under(&tv.path().join("data")) {
            damage(&pack, how);
        }
        let vault = tv.reopen();
        let report = full_check(&vault);
        assert!(!report.is_ok(), "{how}: damage went unnoticed");
        let affected: Vec<&str> = report
            .problems
            .iter()
            .flat_map(|p| p.affected.iter().map(|a| a.path.as_str()))
            .collect();
        // The damage lands in the file's data or in a tree above it; either way the
        // report names the file or the directory that can no longer be restored.
        assert!(
            affected.iter().any(|p| "dir/f".starts_with(p)),
            "{how}: {:#?}",
            report.problems
        );
        // Restoring fails with an error naming the chunk, never a panic or wrong bytes.
        match read_file(&vault, &point, "dir/f") {
            Ok(bytes) => assert_eq!(bytes, data),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn a_data_subset_reads_only_its_packs_and_its_parts_cover_the_vault() {
    let tv = TestVault::encrypted();
    let data = random_bytes(52, 8 << 20);
    let mut opts = options("item");
    opts.pack_size = 1 << 20;
    backup_files(&tv.vault, opts, &[("dir/f", &data)], small_cdc()).unwrap();
    let mut packs = files_under(&tv.path().join("data"));
    assert!(packs.len() >= 6, "{} packs", packs.len());
    // The largest pack holds file data, not the trees every check reads.
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let victim = packs.last().unwrap();
    let victim_name = victim.file_name().unwrap().to_str().unwrap().to_string();
    damage(victim, "flip");
    let vault = tv.reopen();
    let subset_check = |subset| {
        check(
            &vault,
            CheckOptions {
                read_data: true,
                subset,
                ..Default::default()
            },
        )
        .unwrap()
    };

    let mut read = 0;
    let mut found = 0;
    for n in 1..=3 {
        let report = subset_check(DataSubset::Part { n, of: 3 });
        assert_eq!(report.packs, packs.len());
        assert!(report.packs_read < packs.len(), "part {n} read every pack");
        read += report.packs_read;
        if report.is_ok() {
            continue;
        }
        found += 1;
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.message.contains(&victim_name)),
            "part {n}: {:#?}",
            report.problems
        );
        assert!(
            report
                .problems
                .iter()
                .flat_map(|p| &p.affected)
                .any(|a| a.path == "dir/f"),
            "part {n}: {:#?}",
            report.problems
        );
    }
    assert_eq!(read, packs.len(), "the three parts read every pack once");
    assert_eq!(found, 1, "exactly one part holds the damaged pack");

    assert_eq!(subset_check(DataSubset::Bytes(1)).packs_read, 1);
    assert_eq!(
        subset_check(DataSubset::Percent(100.0)).packs_read,
        packs.len()
    );
    let everything = subset_check(DataSubset::All);
    assert_eq!(everything.packs_read, packs.len());
    assert!(!everything.is_ok());
}

fn repair(vault: &Vault, dry_run: bool) -> tessera_vault::commands::repair::RepairReport {
    let options = tessera_vault::commands::repair::RepairOptions {
        dry_run,
        ..Default::default()
    };
    tessera_vault::commands::repair::repair_index(vault, options).unwrap()
}

#[test]
fn a_lost_or_damaged_index_is_rebuilt_from_the_packs() {
    for how in ["delete", "flip", "truncate"] {
        let (tv, data, point) = setup();
        let index_files = files_under(&tv.path().join("index"));
        let packs = files_under(&tv.path().join("data")).len();
        for file in &index_files {
            match how {
                "delete" => fs::remove_file(file).unwrap(),
                other => damage(file, other),
            }
        }
        let vault = tv.reopen();
        assert!(!full_check(&vault).is_ok(), "{how}: nothing was missing");

        // A dry run reads and reports, and changes nothing.
        let dry = repair(&vault, true);
        assert_eq!(dry.packs_indexed, packs, "{how}");
        let left = if how == "delete" {
            0
        } else {
            index_files.len()
        };
        assert_eq!(files_under(&tv.path().join("index")).len(), left, "{how}");

        let report = repair(&vault, false);
        assert_eq!(report.packs_indexed, packs, "{how}");
        assert_eq!(report.packs_found, packs, "{how}");
        assert!(report.unreadable.is_empty(), "{how}");
        assert_eq!(report.index_files_removed, left, "{how}");
        let vault = tv.reopen();
        let check = full_check(&vault);
        assert!(check.is_ok(), "{how}: {:#?}", check.problems);
        assert!(vault.damaged_index_files().is_empty(), "{how}");
        assert_eq!(read_file(&vault, &point, "dir/f").unwrap(), data, "{how}");
        // Repairing a sound vault changes nothing it lists.
        let again = repair(&vault, false);
        assert_eq!(again.packs_found, 0, "{how}");
        assert_eq!(again.blobs_indexed, report.blobs_indexed, "{how}");
    }
}

#[test]
fn repair_keeps_the_index_of_a_pack_whose_header_is_damaged() {
    let (tv, data, point) = setup();
    let mut packs = files_under(&tv.path().join("data"));
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    // The header is at the end: the largest pack's blobs stay intact.
    let victim = packs.last().unwrap();
    let mut bytes = fs::read(victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(victim, bytes).unwrap();
    let vault = tv.reopen();
    let report = repair(&vault, false);
    assert_eq!(report.unreadable.len(), 1, "{report:#?}");
    assert_eq!(
        report.unreadable[0].pack.to_hex(),
        victim.file_name().unwrap().to_str().unwrap()
    );
    assert!(report.index_files_kept >= 1, "{report:#?}");
    let vault = tv.reopen();
    assert_eq!(read_file(&vault, &point, "dir/f").unwrap(), data);
}

fn structural_check(vault: &Vault) -> tessera_vault::commands::check::CheckReport {
    check(vault, CheckOptions::default()).unwrap()
}

#[test]
fn damage_records_come_and_go_with_what_checks_find() {
    // Chunks missing from the index: a structural check records the point, and once the
    // index is repaired a structural check clears it.
    let tv = TestVault::encrypted();
    let data = random_bytes(53, 1 << 20);
    let (id, _) =
        backup_files(&tv.vault, options("item"), &[("dir/f", &data)], small_cdc()).unwrap();
    for file in files_under(&tv.path().join("index")) {
        fs::remove_file(file).unwrap();
    }
    let vault = tv.reopen();
    let settled = settle_damage(&vault, &structural_check(&vault)).unwrap();
    assert_eq!(settled.recorded, [id]);
    assert!(
        vault
            .damage(&id)
            .unwrap()
            .unwrap()
            .contains("not in the index")
    );
    // Still missing: recorded once, and kept.
    let settled = settle_damage(&vault, &structural_check(&vault)).unwrap();
    assert!(
        settled.recorded.is_empty() && settled.cleared.is_empty(),
        "{settled:?}"
    );
    repair(&vault, false);
    let vault = tv.reopen();
    let settled = settle_damage(&vault, &structural_check(&vault)).unwrap();
    assert_eq!(settled.cleared, [id]);
    assert_eq!(vault.damage(&id).unwrap(), None);

    // Bad bytes in a pack of the file's data: only reading every pack clears the record,
    // once a later backup stored good copies of the bad chunks.
    let tv = TestVault::encrypted();
    let data = random_bytes(54, 4 << 20);
    let mut opts = options("item");
    opts.pack_size = 1 << 20;
    let (first, _) = backup_files(&tv.vault, opts, &[("dir/f", &data)], small_cdc()).unwrap();
    let mut packs = files_under(&tv.path().join("data"));
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    damage(packs.last().unwrap(), "flip");
    let vault = tv.reopen();
    let report = full_check(&vault);
    assert!(!report.bad_chunks.is_empty());
    let settled = settle_damage(&vault, &report).unwrap();
    assert_eq!(settled.recorded, [first]);
    let (second, point) =
        backup_files(&vault, options("item"), &[("dir/f", &data)], small_cdc()).unwrap();
    assert_ne!(first, second);
    assert!(point.stats.bytes_new > 0, "the bad chunks are stored again");
    let vault = tv.reopen();
    let report = structural_check(&vault);
    assert!(report.is_ok(), "{:#?}", report.problems);
    let settled = settle_damage(&vault, &report).unwrap();
    assert!(
        settled.cleared.is_empty(),
        "the data was not read: {settled:?}"
    );
    // The damaged pack is still there, but every chunk has a good copy.
    let report = full_check(&vault);
    assert!(report.bad_chunks.is_empty(), "{:#?}", report.problems);
    let settled = settle_damage(&vault, &report).unwrap();
    assert_eq!(settled.cleared, [first]);
    assert!(settled.recorded.is_empty());
    let (_, point) = vault
        .points()
        .unwrap()
        .into_iter()
        .find(|(id, _)| *id == first)
        .unwrap();
    assert_eq!(read_file(&vault, &point, "dir/f").unwrap(), data);
}

#[test]
fn damaged_index_files_are_reported_and_the_vault_still_opens() {
    for how in ["flip", "truncate", "empty"] {
        let (tv, _, _) = setup();
        for file in files_under(&tv.path().join("index")) {
            damage(&file, how);
        }
        let vault = tv.reopen();
        let report = full_check(&vault);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.message.contains("index file")),
            "{how}: {:#?}",
            report.problems
        );
    }
}

#[test]
fn damaged_points_are_reported_and_other_points_survive() {
    for how in ["flip", "truncate", "empty"] {
        let (tv, _, _) = setup();
        let other = random_bytes(51, 100_000);
        let points_before = files_under(&tv.path().join("points"));
        let (_, second) =
            backup_files(&tv.vault, options("other"), &[("g", &other)], small_cdc()).unwrap();
        for file in &points_before {
            damage(file, how);
        }
        let vault = tv.reopen();
        let report = full_check(&vault);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.message.contains("recovery point")),
            "{how}: {:#?}",
            report.problems
        );
        assert_eq!(read_file(&vault, &second, "g").unwrap(), other);
        assert_eq!(vault.points().unwrap().len(), 1);
    }
}

#[test]
fn a_swapped_blob_is_detected() {
    let (tv, _, point) = setup();
    let vault = tv.reopen();
    // Overwrite one pack's bytes with another valid pack: names no longer match contents.
    let packs = files_under(&tv.path().join("data"));
    assert!(!packs.is_empty());
    let entry = vault.find_entry(&point, "dir/f").unwrap();
    assert!(!entry.content.is_empty());
    if packs.len() >= 2 {
        fs::copy(&packs[0], &packs[1]).unwrap();
        assert!(!full_check(&vault).is_ok());
    }
}

#[test]
fn garbage_in_place_of_a_vault_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config"), b"not json").unwrap();
    let err = Vault::open(
        std::sync::Arc::new(tessera_vault::LocalBackend::new(dir.path())),
        tessera_vault::OpenOptions::new(None),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotAVault { .. }), "{err}");
    assert!(err.to_string().contains("config does not parse"));
}
