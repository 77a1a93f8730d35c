//! Several writers at once, in threads and in processes, with no global lock.

use std::process::Command;

use tessera_tests::{
    TestVault, assert_sound, backup_files, options, random_bytes, read_file, small_cdc, writer_data,
};

#[test]
fn concurrent_writers_in_threads() {
    let tv = TestVault::encrypted();
    let shared = random_bytes(30, 2 << 20);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u64)
            .map(|i| {
                let vault = tv.reopen();
                let shared = &shared;
                scope.spawn(move || {
                    let own = random_bytes(31 + i, 1 << 20);
                    let files: Vec<(&str, &[u8])> = vec![("shared", shared), ("own", &own)];
                    let (_, point) =
                        backup_files(&vault, options(&format!("writer-{i}")), &files, small_cdc())
                            .unwrap();
                    (own, point)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let vault = tv.reopen();
    assert_sound(&vault);
    assert_eq!(vault.points().unwrap().len(), 4);
    for (own, point) in results {
        assert_eq!(read_file(&vault, &point, "own").unwrap(), own);
        assert_eq!(read_file(&vault, &point, "shared").unwrap(), shared);
    }
}

#[test]
fn concurrent_writers_in_processes() {
    let tv = TestVault::encrypted();
    let writer = env!("CARGO_BIN_EXE_tessera-test-writer");
    let mut running: Vec<_> = (1..=3)
        .map(|seed| {
            Command::new(writer)
                .arg(tv.path())
                .arg(seed.to_string())
                .arg("once")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in &mut running {
        assert!(child.wait().unwrap().success());
    }
    let vault = tv.reopen();
    assert_sound(&vault);
    let points = vault.points().unwrap();
    assert_eq!(points.len(), 3);
    for (_, point) in points {
        let seed: u64 = point.item.trim_start_matches("seed-").parse().unwrap();
        assert_eq!(read_file(&vault, &point, "f").unwrap(), writer_data(seed));
    }
}
