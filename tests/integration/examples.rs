//! The example plugin `examples/log-archive`, loaded from its `.wasm` file as a
//! third-party plugin would be and driven through the `tessera` command: appended logs
//! are read only past their carried chunks (asserted from the backup's figures), rotated,
//! truncated and new files are read in full, both points restore byte for byte with
//! modes and times, `verify=true` reads everything, a file rewritten in place is trusted
//! only without it, globs and non-regular files leave entries out, and a tree near the
//! path-length limit neither overflows the plugin's stack on capture nor on restore.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tessera_tests::{CliEnv, random_bytes, run_ok, tessera};

/// The example's chunk size: what it carries of a grown file is a multiple of it.
const MIB: u64 = 1 << 20;

/// The example plugin's component, built into the plugins' build directory.
fn plugin() -> String {
    let path =
        PathBuf::from(tessera_runtime::PLUGIN_BUILD_DIR).join("tessera_example_log_archive.wasm");
    assert!(
        path.exists(),
        "the example {} was not built",
        path.display()
    );
    path.display().to_string()
}

/// A vault and a source directory, and the example plugin's file.
struct Env {
    cli: CliEnv,
    plugin: String,
}

impl std::ops::Deref for Env {
    type Target = CliEnv;

    fn deref(&self) -> &CliEnv {
        &self.cli
    }
}

fn env() -> Env {
    Env {
        cli: CliEnv::new(),
        plugin: plugin(),
    }
}

impl Env {
    /// Backs the source up with the example; returns the JSON summary.
    fn backup(&self, extra: &[&str]) -> serde_json::Value {
        let out = run_ok(
            tessera(&self.vault)
                .arg("--json")
                .arg("backup")
                .arg(&self.source)
                .args(["--plugin", &self.plugin])
                .args(extra),
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("backup --json printed {out:?}: {e}"))
    }

    /// Restores `paths` of `summary`'s point (all when empty) into a new directory `name`.
    fn restore(&self, summary: &serde_json::Value, name: &str, paths: &[&str]) -> PathBuf {
        let target = self.root.join(name);
        let mut command = tessera(&self.vault);
        command
            .args([
                "restore",
                point(summary),
                "--plugin",
                &self.plugin,
                "--target",
            ])
            .arg(&target);
        for path in paths {
            command.args(["--path", path]);
        }
        run_ok(&mut command);
        target
    }

    /// The paths `tessera ls` shows directly below `dir` of `summary`'s point, with sizes.
    fn ls(&self, summary: &serde_json::Value, dir: &str) -> BTreeMap<String, u64> {
        let out = run_ok(tessera(&self.vault).args([
            "--json",
            "ls",
            point(summary),
            dir,
            "--plugin",
            &self.plugin,
        ]));
        let entries: serde_json::Value = serde_json::from_str(&out).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap().to_owned(),
                    e["size"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

fn point(summary: &serde_json::Value) -> &str {
    summary["point"].as_str().unwrap()
}

fn figure(summary: &serde_json::Value, name: &str) -> u64 {
    summary[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
}

/// What a restore must reproduce of an object: its kind, permission bits, modification
/// time and, for a file, its bytes.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    mtime_ns: i64,
    content: Option<Vec<u8>>,
}

/// Every object below `root` (not `root` itself).
fn snapshot(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = if meta.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if meta.is_file() {
                "file"
            } else {
                "other"
            };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let seen = Seen {
                kind,
                mode: meta.mode() & 0o7777,
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                content: meta.is_file().then(|| fs::read(&path).unwrap()),
            };
            out.insert(rel, seen);
        }
    }
    out
}

/// What the example stores of a source: its files and directories.
fn stored(source: &Path) -> BTreeMap<String, Seen> {
    let mut seen = snapshot(source);
    seen.retain(|_, seen| seen.kind != "other");
    seen
}

fn assert_same_tree(restored: &Path, expected: &BTreeMap<String, Seen>) {
    let restored = snapshot(restored);
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (path, seen) in expected {
        let got = &restored[path];
        // Contents are compared without printing them: they run to megabytes.
        let shown = |s: &Seen| (s.kind, s.mode, s.mtime_ns, s.content.as_ref().map(Vec::len));
        assert_eq!(shown(got), shown(seen), "{path} differs after restore");
        assert!(
            got.content == seen.content,
            "{path}: the bytes differ after restore"
        );
    }
}

fn set_mtime(path: &Path, secs: u64) {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let file = fs::File::open(path).unwrap();
    file.set_times(fs::FileTimes::new().set_modified(when))
        .unwrap();
}

fn append(path: &Path, data: &[u8]) {
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(data).unwrap();
}

fn size(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn inode(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

#[test]
fn appended_logs_are_read_only_past_their_carried_chunks() {
    let env = env();
    let src = &env.source;
    // app.log: three whole chunks and half of a fourth.
    fs::write(
        src.join("app.log"),
        random_bytes(1, (3 * MIB + MIB / 2) as usize),
    )
    .unwrap();
    fs::set_permissions(src.join("app.log"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(src.join("small.log"), random_bytes(2, 5000)).unwrap();
    fs::create_dir_all(src.join("audit/2024")).unwrap();
    fs::write(src.join("audit/2024/trail.log"), random_bytes(3, 200_000)).unwrap();
    fs::set_permissions(
        src.join("audit/2024/trail.log"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    set_mtime(&src.join("audit/2024/trail.log"), 1_600_000_000);
    fs::set_permissions(src.join("audit"), fs::Permissions::from_mode(0o750)).unwrap();
    // Not an append-only file: skipped, and the point is not partial for it.
    std::os::unix::fs::symlink("app.log", src.join("current")).unwrap();

    let first = env.backup(&[]);
    assert_eq!(
        figure(&first, "bytes_read"),
        3 * MIB + MIB / 2 + 5000 + 200_000,
        "a first backup reads everything: {first}"
    );
    assert_eq!(first["partial"], false, "{first}");
    let at_first = stored(src);

    // The big log grows, the small one is rotated (a new file under its name: a new
    // inode, even though it is larger), a file is added, the audit trail is left alone.
    append(&src.join("app.log"), &random_bytes(4, 100 << 10));
    let old_inode = inode(&src.join("small.log"));
    fs::write(src.join("small.log.new"), random_bytes(5, 7000)).unwrap();
    fs::rename(src.join("small.log.new"), src.join("small.log")).unwrap();
    assert_ne!(inode(&src.join("small.log")), old_inode);
    fs::write(src.join("audit/2024/new.log"), random_bytes(6, 30_000)).unwrap();

    let second = env.backup(&[]);
    assert_eq!(second["parent"], first["point"], "{second}");
    let app = size(&src.join("app.log"));
    assert_eq!(
        figure(&second, "bytes_read"),
        (app - 3 * MIB) + 7000 + 30_000,
        "only app.log's last chunk and new bytes, the rotated and the new file are read: \
         {second}"
    );
    assert_eq!(
        figure(&second, "bytes_carried"),
        3 * MIB + 200_000,
        "app.log's three whole chunks and the untouched trail are carried: {second}"
    );
    let at_second = stored(src);

    // Each point restores to what the source held when it was taken.
    assert_same_tree(&env.restore(&first, "r1", &[]), &at_first);
    let r2 = env.restore(&second, "r2", &[]);
    assert_same_tree(&r2, &at_second);
    assert!(fs::symlink_metadata(r2.join("current")).is_err());

    // One path of a point restores under its place in the tree, alone.
    let one = env.restore(&second, "one", &["audit/2024/new.log"]);
    assert_eq!(
        fs::read(one.join("audit/2024/new.log")).unwrap(),
        fs::read(src.join("audit/2024/new.log")).unwrap()
    );
    assert!(!one.join("app.log").exists());
    assert!(!one.join("audit/2024/trail.log").exists());

    // Browsing shows the stored files with their sizes, and no symlink.
    let root = env.ls(&second, "");
    assert_eq!(
        root.keys().collect::<Vec<_>>(),
        ["app.log", "audit", "small.log"]
    );
    assert_eq!((root["app.log"], root["small.log"]), (app, 7000));
    let year = env.ls(&second, "audit/2024");
    assert_eq!(
        year.keys().collect::<Vec<_>>(),
        ["audit/2024/new.log", "audit/2024/trail.log"]
    );

    // verify=true trusts nothing from the parent: every byte is read again.
    let verified = env.backup(&["--setting", "verify=true"]);
    assert_eq!(
        figure(&verified, "bytes_read"),
        app + 7000 + 200_000 + 30_000,
        "{verified}"
    );
    assert_eq!(figure(&verified, "bytes_carried"), 0, "{verified}");
    assert_same_tree(&env.restore(&verified, "r3", &[]), &at_second);
    run_ok(tessera(&env.vault).args(["check", "--read-data"]));
}

#[test]
fn a_file_rewritten_in_place_is_trusted_unless_verify_is_set() {
    let env = env();
    let file = env.source.join("data.log");
    let old = random_bytes(10, (2 * MIB + MIB / 2) as usize);
    fs::write(&file, &old).unwrap();
    env.backup(&[]);

    // Rewritten from the start without truncation, and longer: the same inode and a
    // larger size look exactly like an append.
    let before = inode(&file);
    let new = random_bytes(11, (3 * MIB) as usize);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all_at(&new, 0)
        .unwrap();
    assert_eq!(inode(&file), before);

    // By default the parent's two whole chunks are trusted: the point holds the old
    // prefix and the new tail. This is the documented trust assumption.
    let trusted = env.backup(&[]);
    assert_eq!(figure(&trusted, "bytes_read"), MIB, "{trusted}");
    let restored = fs::read(env.restore(&trusted, "trusted", &[]).join("data.log")).unwrap();
    let split = (2 * MIB) as usize;
    assert_eq!(restored.len(), new.len());
    assert!(
        restored[..split] == old[..split],
        "the old prefix was carried"
    );
    assert!(restored[split..] == new[split..], "the tail was read");
    assert!(restored != new);

    // With verify=true the file is read in full and restores as it is on disk.
    let verified = env.backup(&["--setting", "verify=true"]);
    assert_eq!(figure(&verified, "bytes_read"), 3 * MIB, "{verified}");
    let restored = fs::read(env.restore(&verified, "verified", &[]).join("data.log")).unwrap();
    assert!(restored == new, "verify=true restores the bytes on disk");
}

#[test]
fn rotated_and_truncated_files_are_read_in_full() {
    let env = env();
    let rotated = env.source.join("rotated.log");
    let truncated = env.source.join("copytruncate.log");
    fs::write(&rotated, random_bytes(20, (MIB + MIB / 2) as usize)).unwrap();
    fs::write(&truncated, random_bytes(21, (2 * MIB + 10) as usize)).unwrap();
    env.backup(&[]);

    // Rotated by creating a new file under the name: a new inode, and larger, so only
    // the inode tells it from an append.
    let old_inode = inode(&rotated);
    let renewed = random_bytes(22, (2 * MIB) as usize);
    fs::write(env.source.join("rotated.log.new"), &renewed).unwrap();
    fs::rename(env.source.join("rotated.log.new"), &rotated).unwrap();
    assert_ne!(inode(&rotated), old_inode);
    // Rotated by copy and truncate: the same inode, shorter, new lines appended since.
    fs::File::options()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(0)
        .unwrap();
    let fresh = random_bytes(23, (MIB + 100) as usize);
    append(&truncated, &fresh);

    let second = env.backup(&[]);
    assert_eq!(
        figure(&second, "bytes_read"),
        2 * MIB + MIB + 100,
        "{second}"
    );
    assert_eq!(figure(&second, "bytes_carried"), 0, "{second}");
    let restored = env.restore(&second, "r", &[]);
    assert!(fs::read(restored.join("rotated.log")).unwrap() == renewed);
    assert!(fs::read(restored.join("copytruncate.log")).unwrap() == fresh);
}

#[test]
fn globs_and_non_regular_files_leave_entries_out() {
    let env = env();
    let src = &env.source;
    fs::write(src.join("a.log"), b"a\n").unwrap();
    fs::write(src.join("a.log.1.gz"), b"compressed").unwrap();
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("cache/x.log"), b"noise").unwrap();
    fs::create_dir_all(src.join("wal/deep")).unwrap();
    fs::write(src.join("wal/deep/000001"), b"segment").unwrap();
    std::os::unix::fs::symlink("a.log", src.join("link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();

    let summary = env.backup(&["--exclude", "*.gz", "--exclude", "cache"]);
    assert_eq!(summary["partial"], false, "{summary}");
    let root = env.ls(&summary, "");
    assert_eq!(
        root.keys().collect::<Vec<_>>(),
        ["a.log", "wal"],
        "excluded, symlink and fifo entries are left out"
    );

    // With an include pattern only what it matches is stored, with the directories
    // above it.
    let only = env.backup(&["--item", "wal-only", "--include", "000001"]);
    assert_eq!(env.ls(&only, "").keys().collect::<Vec<_>>(), ["wal"]);
    assert_eq!(
        env.ls(&only, "wal/deep").keys().collect::<Vec<_>>(),
        ["wal/deep/000001"]
    );
    assert_eq!(figure(&only, "bytes_read"), 7);
}

#[test]
fn inspect_describes_the_example() {
    let env = env();
    let out = run_ok(tessera(&env.vault).args(["--json", "plugin", "inspect", &env.plugin]));
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["name"], "log-archive", "{info}");
    assert_eq!(info["workload"], "file-share", "{info}");
    assert_eq!(
        info["capabilities"],
        serde_json::json!(["read-source", "write-target"])
    );
    let settings: BTreeMap<&str, &serde_json::Value> = info["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s))
        .collect();
    assert_eq!(
        settings.keys().copied().collect::<Vec<_>>(),
        ["exclude", "include", "verify"]
    );
    assert_eq!(settings["verify"]["kind"], "boolean");
    assert_eq!(settings["verify"]["default"], "false");
    let text = run_ok(tessera(&env.vault).args(["plugin", "inspect", &env.plugin]));
    assert!(text.contains("log-archive"), "{text}");
}

#[test]
fn a_deep_tree_neither_overflows_capture_nor_restore() {
    let env = env();
    // Close to the 4 KiB path limit of host calls: walked with a stack of directories,
    // not recursion, on both sides.
    let deep = ["d"; 1900].join("/");
    fs::create_dir_all(env.source.join(&deep)).unwrap();
    fs::write(env.source.join(&deep).join("f.log"), b"deep").unwrap();
    let summary = env.backup(&[]);
    assert_eq!(figure(&summary, "entries"), 1901, "{summary}");
    let restored = env.restore(&summary, "r", &[]);
    assert_eq!(
        fs::read(restored.join(&deep).join("f.log")).unwrap(),
        b"deep"
    );
}
