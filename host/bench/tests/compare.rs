//! `tessera-bench compare` end to end, against stand-ins for `tessera` and `restic`: shell
//! scripts that take the same command lines, keep a copy of the tree as their
//! "repository", and copy it back on restore.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Stands in for `tessera`: `--version`, then `--vault V` and a verb.
const FAKE_TESSERA: &str = r#"#!/bin/sh
set -e
if [ "$1" = --version ]; then echo "tessera 9.9.9"; exit 0; fi
[ "$TESSERA_PASSWORD" = bench ] || { echo "no password" >&2; exit 1; }
[ "$1" = --vault ] || { echo "no --vault" >&2; exit 2; }
vault=$2; shift 2
case "$1" in
  vault) mkdir "$vault"; echo config > "$vault/config" ;;
  plugin) ;;
  backup) FAIL_BACKUP_HOOK
          rm -rf "$vault/data"; cp -a "$2" "$vault/data" ;;
  restore) [ "$2 $3 $5" = "latest --item --target" ] || exit 2
           mkdir -p "$6"; cp -a "$vault/data/." "$6/" ;;
  *) exit 2 ;;
esac
"#;

/// Stands in for `restic`: `version`, then `--repo R --cache-dir C` and a verb. Restores
/// put the tree below its absolute path, as restic does.
const FAKE_RESTIC: &str = r#"#!/bin/sh
set -e
if [ "$1" = version ]; then echo "restic 0.0.1 compiled with nothing"; exit 0; fi
[ "$RESTIC_PASSWORD" = bench ] || { echo "no password" >&2; exit 1; }
[ "$1 $3" = "--repo --cache-dir" ] || { echo "no --repo" >&2; exit 2; }
repo=$2; cache=$4; shift 4
mkdir -p "$cache"
case "$1" in
  init) mkdir "$repo"; echo config > "$repo/config" ;;
  backup) rm -rf "$repo/data"; cp -a "$2" "$repo/data"; echo "$2" > "$cache/path" ;;
  restore) [ "$2 $3" = "latest --target" ] || exit 2
           dest="$4$(cat "$cache/path")"; mkdir -p "$dest"; cp -a "$repo/data/." "$dest/"
           RESTORE_HOOK ;;
  *) exit 2 ;;
esac
"#;

struct Setup {
    _dir: tempfile::TempDir,
    tree: PathBuf,
    work: PathBuf,
    tessera: PathBuf,
    restic: PathBuf,
}

fn write_script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A small tree, an empty work directory and the two stand-ins, with `restore_hook` run
/// by the restic stand-in after it restores and `backup_hook` by tessera's before it
/// backs up.
fn setup(backup_hook: &str, restore_hook: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("docs/empty")).unwrap();
    fs::write(tree.join("docs/readme.txt"), "read me\n".repeat(1000)).unwrap();
    fs::write(tree.join("data.bin"), [0u8, 1, 2, 3]).unwrap();
    symlink("docs/readme.txt", tree.join("link")).unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let tessera = dir.path().join("tessera");
    let restic = dir.path().join("restic");
    write_script(
        &tessera,
        &FAKE_TESSERA.replace("FAIL_BACKUP_HOOK", backup_hook),
    );
    write_script(&restic, &FAKE_RESTIC.replace("RESTORE_HOOK", restore_hook));
    Setup {
        _dir: dir,
        tree,
        work,
        tessera,
        restic,
    }
}

fn compare(setup: &Setup, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .arg("compare")
        .arg("--tree")
        .arg(&setup.tree)
        .arg("--dir")
        .arg(&setup.work)
        .arg("--tessera")
        .arg(&setup.tessera)
        .arg("--restic")
        .arg(&setup.restic)
        .args(["--settle", "0"])
        .args(extra)
        .output()
        .unwrap()
}

fn assert_work_dir_empty(setup: &Setup) {
    let left: Vec<_> = fs::read_dir(&setup.work).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn both_tools_are_measured_and_cleaned_up() {
    let setup = setup(":", ":");
    let output = compare(&setup, &["--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(report["tree"]["files"], 2);
    assert_eq!(report["tree"]["dirs"], 2);
    assert_eq!(report["tree"]["symlinks"], 1);
    assert_eq!(report["tree"]["bytes"], 8004);
    for (tool, version) in [("tessera", "tessera 9.9.9"), ("restic", "restic 0.0.1")] {
        let figures = &report[tool];
        assert!(
            figures["version"].as_str().unwrap().starts_with(version),
            "{figures}"
        );
        assert_eq!(figures["restore_equal"], true, "{figures}");
        // The copy of the tree and the config file.
        assert_eq!(figures["repository_bytes"], 8004 + 7, "{figures}");
        for run in ["initial_backup", "rebackup", "restore"] {
            assert!(figures[run]["seconds"].as_f64().unwrap() > 0.0);
            assert!(figures[run]["peak_rss_bytes"].as_u64().unwrap() > 0);
        }
    }
    assert_eq!(report["comparison"]["repository_size"]["ratio"], 1.0);
    assert_eq!(report["comparison"]["repository_size"]["pass"], true);
    assert_eq!(report["comparison"]["peak_rss"]["pass"], true);
    assert_work_dir_empty(&setup);
}

#[test]
fn restores_go_to_the_restore_directory() {
    // The restic stand-in leaves a mark of where it restored, next to its target.
    let setup = setup(":", r#"echo "$4" > "$4.where""#);
    let elsewhere = setup.work.parent().unwrap().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let output = compare(&setup, &["--restore-dir", elsewhere.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let marks: Vec<String> = fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Each restored tree is removed after the comparison; the mark stays.
    assert_eq!(marks, ["restore-restic.where"], "{stderr}");
    assert_work_dir_empty(&setup);

    let inside = setup.tree.join("docs");
    let output = compare(&setup, &["--restore-dir", inside.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is inside the tree"), "{stderr}");
}

#[test]
fn a_faulty_restore_is_reported() {
    let setup = setup(":", r#"rm "$dest/data.bin""#);
    let output = compare(&setup, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains("tessera's restore equals the original."),
        "{table}"
    );
    assert!(
        table.contains(
            "warning: restic's restore differs from the original: \
             1 missing, 0 extra, 0 different (first: data.bin: missing)"
        ),
        "{table}"
    );
    for row in [
        "initial backup, s",
        "no-change re-backup, s",
        "restore, s",
        "repository size, MiB",
        "peak RSS, MiB",
    ] {
        assert!(table.contains(row), "{table}");
    }
    assert!(
        stderr.contains("warning: restic's restore differs"),
        "{stderr}"
    );
    assert_work_dir_empty(&setup);
}

#[test]
fn a_failing_tool_stops_the_run_and_is_cleaned_up() {
    let setup = setup(r#"echo "disk on fire" >&2; exit 4"#, ":");
    let output = compare(&setup, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tessera backup: exit status 4:\n  disk on fire"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    assert_work_dir_empty(&setup);
}

#[test]
fn a_missing_program_is_explained() {
    let mut setup = setup(":", ":");
    setup.tessera = setup.work.join("no-such-tessera");
    let output = compare(&setup, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cargo build --release -p tessera-cli"),
        "{stderr}"
    );
}

#[test]
fn the_relay_reports_peak_memory_and_the_exit_status() {
    let relay = |script: &str| {
        Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
            .args(["__measure", "sh", "-c", script])
            .output()
            .unwrap()
    };
    // A shell holding a 40 MB string in a variable.
    let output = relay("x=$(head -c 40000000 /dev/zero | tr '\\0' a); echo ignored; exit 0");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let peak: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    assert!(peak > 40_000_000, "{text}");

    let output = relay("exit 7");
    assert_eq!(output.status.code(), Some(7));
    let output = relay("kill -9 $$");
    assert_eq!(output.status.code(), Some(128 + 9));
}
