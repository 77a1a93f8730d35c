//! The file-share plugin end to end through the `tessera` command: every entry kind with
//! its metadata, incremental backups, single-file restore, exclusions, unreadable files and
//! path escapes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_tests::{CliEnv, Mounted, random_bytes, run_ok, tessera};

fn env() -> CliEnv {
    CliEnv::new()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Writes `bytes` to `path` below `root`, making the directories on the way.
fn write_under(root: &Path, path: &str, bytes: &[u8]) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos);
    let file = fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| fs::File::open(path))
        .unwrap();
    file.set_times(fs::FileTimes::new().set_modified(when).set_accessed(when))
        .unwrap();
}

/// A tree with every kind of entry the file share captures.
fn populate(source: &Path) {
    fs::create_dir_all(source.join("docs/deep/er")).unwrap();
    fs::write(source.join("docs/readme.txt"), b"read me\n".repeat(1000)).unwrap();
    fs::write(
        source.join("docs/deep/er/random.bin"),
        random_bytes(70, 3 << 20),
    )
    .unwrap();
    fs::write(source.join("empty"), b"").unwrap();
    fs::set_permissions(
        source.join("docs/readme.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    fs::set_permissions(source.join("docs/deep"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("docs/readme.txt", source.join("link-relative")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", source.join("link-dangling")).unwrap();
    fs::write(source.join("hard-a"), b"shared content").unwrap();
    fs::hard_link(source.join("hard-a"), source.join("docs/hard-b")).unwrap();
    // A sparse file: 16 MiB with 8 KiB of data in the middle.
    let sparse = fs::File::create(source.join("sparse.img")).unwrap();
    sparse.set_len(16 << 20).unwrap();
    sparse
        .write_all_at(&random_bytes(71, 8192), 8 << 20)
        .unwrap();
    drop(sparse);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        source.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(
        source.join("docs/readme.txt"),
        "user.origin",
        b"tessera test",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            source.join("null-device"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        rustix::fs::chown(
            source.join("hard-a"),
            Some(rustix::fs::Uid::from_raw(1234)),
            Some(rustix::fs::Gid::from_raw(5678)),
        )
        .unwrap();
    }
    set_mtime(&source.join("docs/readme.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&source.join("empty"), 1_500_000_000, 1);
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: Option<i64>,
    size: u64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    rdev: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Everything a user would compare between the original and the restored tree.
fn snapshot(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "special"
            };
            let mut names = vec![0u8; 4096];
            let mut xattrs = Vec::new();
            if ft.is_file() || ft.is_dir() {
                let n = rustix::fs::llistxattr(&path, &mut names).unwrap_or(0);
                for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    let name = String::from_utf8(name.to_vec()).unwrap();
                    let mut value = vec![0u8; 4096];
                    let len = rustix::fs::lgetxattr(&path, name.as_str(), &mut value).unwrap();
                    value.truncate(len);
                    xattrs.push((name, value));
                }
            }
            out.insert(
                rel,
                Seen {
                    kind: kind.into(),
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    // A directory's time is restored after its entries are; symlink times
                    // are not restored everywhere.
                    mtime_ns: (ft.is_file() || ft.is_dir())
                        .then(|| meta.mtime() * 1_000_000_000 + meta.mtime_nsec()),
                    size: if ft.is_dir() { 0 } else { meta.size() },
                    content: ft.is_file().then(|| fs::read(&path).unwrap()),
                    link: ft.is_symlink().then(|| fs::read_link(&path).unwrap()),
                    rdev: meta.rdev(),
                    xattrs,
                },
            );
        }
    }
    out
}

fn backup(env: &CliEnv, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        tessera(&env.vault)
            .arg("--json")
            .arg("backup")
            .arg(&env.source)
            .args(extra),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("backup --json printed {out:?}: {e}"))
}

fn restore(env: &CliEnv, point: &str, target: &Path, paths: &[&str]) {
    let mut command = tessera(&env.vault);
    command.args(["restore", point, "--target"]).arg(target);
    for p in paths {
        command.args(["--path", p]);
    }
    run_ok(&mut command);
}

#[test]
fn every_entry_kind_round_trips_with_metadata() {
    let env = env();
    populate(&env.source);
    let summary = backup(&env, &[]);
    let point = summary["point"].as_str().unwrap().to_string();
    assert!(summary["entries"].as_u64().unwrap() >= 12, "{summary}");
    let target = env.root.join("restored");
    restore(&env, &point, &target, &[]);
    let original = snapshot(&env.source);
    let restored = snapshot(&target);
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        restored.keys().collect::<Vec<_>>()
    );
    for (path, seen) in &original {
        assert_eq!(&restored[path], seen, "{path} differs");
    }
    // Hardlinks are restored as hardlinks, and the sparse file stays sparse.
    let a = fs::metadata(target.join("hard-a")).unwrap();
    let b = fs::metadata(target.join("docs/hard-b")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    let sparse = fs::metadata(target.join("sparse.img")).unwrap();
    assert!(
        sparse.blocks() * 512 < 4 << 20,
        "sparse file takes {} bytes on disk",
        sparse.blocks() * 512
    );
    // Check passes.
    run_ok(tessera(&env.vault).args(["check", "--read-data"]));
}

#[test]
fn a_second_backup_reads_only_changed_files_and_both_points_restore() {
    let env = env();
    populate(&env.source);
    let first = backup(&env, &[]);
    let before = snapshot(&env.source);
    // Change one file; touch nothing else.
    fs::write(env.source.join("docs/readme.txt"), b"changed\n").unwrap();
    fs::write(env.source.join("new.txt"), b"brand new\n").unwrap();
    let second = backup(&env, &[]);
    let read = second["bytes_read"].as_u64().unwrap();
    assert_eq!(
        read,
        8 + 10,
        "only the changed and new files are read: {second}"
    );
    assert_ne!(first["point"], second["point"]);

    let t1 = env.root.join("r1");
    restore(&env, first["point"].as_str().unwrap(), &t1, &[]);
    assert_eq!(snapshot(&t1), before);
    let t2 = env.root.join("r2");
    restore(&env, "latest", &t2, &[]);
    assert_eq!(snapshot(&t2), snapshot(&env.source));
}

#[test]
fn a_single_file_backs_up_as_the_one_entry_named_like_it() {
    let env = env();
    // A sparse file with an extended attribute, in a directory with other files that
    // stay out of the point.
    let file = env.source.join("disk.img");
    let data = random_bytes(31, 300 << 10);
    let f = fs::File::create(&file).unwrap();
    f.write_all_at(&data, 2 << 20).unwrap();
    f.set_len(6 << 20).unwrap();
    drop(f);
    rustix::fs::setxattr(
        &file,
        "user.origin",
        b"lab",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    set_mtime(&file, 1_700_000_000, 123_456_789);
    fs::write(env.source.join("other.txt"), b"not asked for").unwrap();
    let backup_file = || {
        let out = run_ok(tessera(&env.vault).arg("--json").arg("backup").arg(&file));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };

    let first = backup_file();
    assert_eq!(first["entries"], 1, "{first}");
    assert_eq!(first["item"], file.to_str().unwrap(), "{first}");
    assert_eq!(
        first["bytes_read"],
        300 << 10,
        "only the data is read, not the holes: {first}"
    );
    let listed = run_ok(tessera(&env.vault).args(["ls", "latest"]));
    assert!(listed.contains("disk.img"), "{listed}");
    assert!(!listed.contains("other.txt"), "{listed}");

    let unchanged = backup_file();
    assert_eq!(unchanged["bytes_read"], 0, "{unchanged}");
    assert_eq!(unchanged["bytes_carried"], 6 << 20, "{unchanged}");

    let target = env.root.join("restored");
    restore(&env, "latest", &target, &[]);
    let original = snapshot(&env.source);
    let restored = snapshot(&target);
    assert_eq!(restored.keys().collect::<Vec<_>>(), ["disk.img"]);
    assert_eq!(restored["disk.img"], original["disk.img"]);
    let sparse = fs::metadata(target.join("disk.img")).unwrap();
    assert!(
        sparse.blocks() * 512 < 2 << 20,
        "{} blocks",
        sparse.blocks()
    );

    // Changed, it is read again.
    fs::write(&file, b"rewritten").unwrap();
    let changed = backup_file();
    assert_eq!(changed["bytes_read"], 9, "{changed}");
}

#[test]
fn several_sources_go_under_their_names_in_one_point() {
    let env = env();
    // Two directories from different places and a file from a third.
    let conf = env.source.join("etc/conf");
    populate(&conf);
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o750)).unwrap();
    let www = env.source.join("srv/www");
    write_under(&www, "index.html", b"<html></html>");
    write_under(&www, "cache/page", b"rendered");
    write_under(&www, "static/app.js", &random_bytes(5, 200 << 10));
    let notes = env.source.join("home/notes.txt");
    write_under(&env.source, "home/notes.txt", b"remember");
    set_mtime(&notes, 1_600_000_000, 42);
    set_mtime(&conf, 1_650_000_000, 7);
    let backup_all = |extra: &[&str]| {
        let out = run_ok(
            tessera(&env.vault)
                .args(["--json", "backup"])
                .args([&conf, &www, &notes])
                .args(extra),
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };

    let first = backup_all(&["--exclude", "www/cache"]);
    let item = format!("{}, {}, {}", conf.display(), www.display(), notes.display());
    assert_eq!(first["item"], item.as_str(), "{first}");
    let point = first["point"].as_str().unwrap();
    let target = env.root.join("restored");
    restore(&env, point, &target, &[]);
    let restored = snapshot(&target);
    // Each source under its name, its own metadata on the top entry.
    let mut expected = BTreeMap::new();
    for (name, dir) in [("conf", &conf), ("www", &www)] {
        for (path, seen) in snapshot(dir) {
            expected.insert(format!("{name}/{path}"), seen);
        }
    }
    let parents = snapshot(&env.source);
    expected.insert("conf".into(), parents["etc/conf"].clone());
    expected.insert("www".into(), parents["srv/www"].clone());
    expected.insert("notes.txt".into(), parents["home/notes.txt"].clone());
    expected.retain(|path, _| !path.starts_with("www/cache"));
    assert_eq!(restored, expected);

    // Unchanged, everything is carried forward; a changed file in one source is read.
    let total = first["bytes_read"].as_u64().unwrap();
    let again = backup_all(&["--exclude", "www/cache"]);
    assert_eq!(again["parent"], point, "{again}");
    assert_eq!(again["bytes_read"], 0, "{again}");
    assert_eq!(again["bytes_new"], 0, "{again}");
    // Carried: every file's size once, holes included, hard links counted once.
    let mut inodes = std::collections::HashSet::new();
    let sizes: u64 = [conf.as_path(), www.as_path(), notes.as_path()]
        .iter()
        .flat_map(|source| walkdir(source))
        .filter(|path| !path.starts_with(www.join("cache")))
        .filter_map(|path| fs::symlink_metadata(path).ok())
        .filter(|meta| meta.is_file() && inodes.insert((meta.dev(), meta.ino())))
        .map(|meta| meta.len())
        .sum();
    assert_eq!(again["bytes_carried"], sizes, "{again}");
    assert!(total < sizes, "the sparse file's holes are not read");
    fs::write(www.join("index.html"), b"<html>new</html>").unwrap();
    let changed = backup_all(&["--exclude", "www/cache"]);
    assert_eq!(changed["bytes_read"], 16, "{changed}");
    let one = env.root.join("one");
    restore(&env, "latest", &one, &["www/index.html"]);
    assert_eq!(
        fs::read(one.join("www/index.html")).unwrap(),
        b"<html>new</html>"
    );
}

/// `root` and every path below it.
fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut at = 0;
    while at < out.len() {
        if fs::symlink_metadata(&out[at]).unwrap().is_dir() {
            let below: Vec<_> = fs::read_dir(&out[at])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            out.extend(below);
        }
        at += 1;
    }
    out
}

#[test]
fn sources_that_cannot_be_told_apart_are_refused() {
    let env = env();
    let a = env.source.join("a/data");
    let b = env.source.join("b/data");
    write_under(&a, "x", b"x");
    write_under(&b, "y", b"y");
    let points = || run_ok(tessera(&env.vault).args(["--json", "points"]));
    let before = points();
    for sources in [
        vec![a.clone(), b.clone()],
        vec![PathBuf::from("/"), a.clone()],
    ] {
        let out = tessera(&env.vault)
            .arg("backup")
            .args(&sources)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let named = if sources[0] == Path::new("/") {
            "source / has no name to store it under".to_string()
        } else {
            format!(
                "sources {} and {} would both be stored as \"data\"",
                a.display(),
                b.display()
            )
        };
        assert!(stderr.contains(&named), "{stderr}");
    }
    assert_eq!(points(), before, "no point is committed");
    // The same directory named twice is one source.
    let out = run_ok(
        tessera(&env.vault)
            .args(["--json", "backup"])
            .args([&a, &a]),
    );
    let twice: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(twice["item"], a.to_str().unwrap(), "{twice}");
    assert_eq!(point_paths(&env, twice["point"].as_str().unwrap()), ["x"]);
}

/// Asserts that the trees at `got` and `want` hold the same entries with the same
/// metadata and content, naming the paths that differ.
fn assert_same_tree(got: &Path, want: &Path) {
    let (got, want) = (snapshot(got), snapshot(want));
    let differ: std::collections::BTreeSet<&String> = got
        .keys()
        .chain(want.keys())
        .filter(|path| got.get(*path) != want.get(*path))
        .collect();
    for path in &differ {
        let show = |seen: Option<&Seen>| {
            seen.map(|s| format!("{} {:o} {:?} {} B", s.kind, s.mode, s.mtime_ns, s.size))
        };
        eprintln!(
            "{path}: {:?} instead of {:?}",
            show(got.get(*path)),
            show(want.get(*path))
        );
    }
    assert!(differ.is_empty(), "{} paths differ", differ.len());
}

/// Every file under `root` with its bytes.
fn files_with_bytes(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir(root)
        .into_iter()
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

#[test]
fn a_dry_run_says_what_a_backup_would_store_and_writes_nothing() {
    let env = env();
    populate(&env.source);
    let hook_ran = env.root.join("hook-ran");
    let dry = |extra: &[&str]| {
        let before = files_with_bytes(&env.vault);
        let pre = format!("touch {}", hook_ran.display());
        let mut args = vec!["--dry-run", "--pre-hook", pre.as_str()];
        args.extend_from_slice(extra);
        let summary = backup(&env, &args);
        assert_eq!(
            files_with_bytes(&env.vault),
            before,
            "the vault is as it was"
        );
        assert!(!hook_ran.exists(), "a dry run runs no hooks");
        assert_eq!(summary["dry_run"], true, "{summary}");
        assert_eq!(summary["point"], serde_json::Value::Null, "{summary}");
        summary
    };
    let figures = |summary: &serde_json::Value| {
        ["bytes_read", "bytes_new", "bytes_carried", "entries"]
            .map(|key| summary[key].as_u64().unwrap())
    };

    // What the dry run says is what the backup then stores. Reading a symlink moves its
    // access time on, which its entry records, so the trees may compress a few bytes
    // differently the second time.
    let first = dry(&[]);
    let real = backup(&env, &[]);
    assert_eq!(figures(&first), figures(&real), "{first}\n{real}");
    let stored = |summary: &serde_json::Value| summary["bytes_stored"].as_i64().unwrap();
    assert!(
        (stored(&first) - stored(&real)).abs() < 64,
        "{first}\n{real}"
    );
    assert!(first["bytes_new"].as_u64().unwrap() > 3 << 20, "{first}");

    // After a change: the changed file alone is read, against the real point.
    fs::write(env.source.join("docs/readme.txt"), b"edited").unwrap();
    let second = dry(&["--exclude", "*.bin"]);
    assert_eq!(second["parent"], real["point"], "{second}");
    assert_eq!(second["bytes_read"], 6, "{second}");
    assert_eq!(second["bytes_new"], 6, "{second}");
    let points = run_ok(tessera(&env.vault).args(["--json", "points"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&points)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A dry run never creates a vault.
    let missing = env.root.join("no-vault");
    let out = tessera(&missing)
        .args(["backup", "--dry-run"])
        .arg(&env.source)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!missing.exists());
}

#[test]
fn restoring_over_an_earlier_restore_replaces_what_is_in_the_way() {
    let env = env();
    populate(&env.source);
    let summary = backup(&env, &[]);
    let point = summary["point"].as_str().unwrap();
    let target = env.root.join("restored");
    restore(&env, point, &target, &[]);
    // The restored tree changed since: a file became a symlink out of the target, another
    // was rewritten, a directory went.
    let outside = env.root.join("outside.txt");
    fs::write(&outside, b"keep me").unwrap();
    fs::remove_file(target.join("docs/readme.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("docs/readme.txt")).unwrap();
    fs::write(target.join("empty"), b"not empty any more").unwrap();
    fs::remove_dir_all(target.join("docs/deep")).unwrap();
    restore(&env, point, &target, &[]);
    assert_eq!(snapshot(&target), snapshot(&env.source));
    assert_eq!(fs::read(&outside).unwrap(), b"keep me");
}

#[test]
fn restoring_into_a_used_target_keeps_or_replaces_and_deletes_as_asked() {
    let env = env();
    populate(&env.source);
    let point = backup(&env, &[])["point"].as_str().unwrap().to_owned();
    let target = env.root.join("restored");
    restore(&env, &point, &target, &[]);
    let restore_with = |args: &[&str]| {
        let out = run_ok(
            tessera(&env.vault)
                .args(["--json", "restore", &point, "--target"])
                .arg(&target)
                .args(args),
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    // Since the restore: a file edited, one removed, things added.
    let readme = target.join("docs/readme.txt");
    fs::write(&readme, b"edited in place").unwrap();
    fs::remove_file(target.join("empty")).unwrap();
    write_under(&target, "new.txt", b"added");
    write_under(&target, "junk/deeper/file", b"added");
    write_under(&target, "docs/notes.keep", b"mine");

    // never: what is there stays, what is missing comes back.
    restore_with(&["--overwrite", "never"]);
    assert_eq!(fs::read(&readme).unwrap(), b"edited in place");
    assert!(target.join("empty").exists());
    assert!(target.join("new.txt").exists());

    // if-changed: only the edited file is written again; --delete removes the additions
    // but what an exclude matches.
    let summary = restore_with(&[
        "--overwrite",
        "if-changed",
        "--delete",
        "--exclude",
        "*.keep",
    ]);
    assert_eq!(summary["bytes_written"], 8000, "only readme.txt: {summary}");
    assert!(target.join("docs/notes.keep").exists());
    // Once it is gone, nothing is left to write but the directory's time.
    fs::remove_file(target.join("docs/notes.keep")).unwrap();
    let again = restore_with(&["--overwrite", "if-changed"]);
    assert_eq!(again["bytes_written"], 0, "{again}");
    assert_same_tree(&target, &env.source);

    // if-newer: a file changed later in the target stays, an older one is replaced.
    fs::write(&readme, b"newer than the point").unwrap();
    set_mtime(&readme, 4_000_000_000, 0);
    let random = target.join("docs/deep/er/random.bin");
    fs::write(&random, b"older than the point").unwrap();
    set_mtime(&random, 1_000_000_000, 0);
    restore_with(&["--overwrite", "if-newer"]);
    assert_eq!(fs::read(&readme).unwrap(), b"newer than the point");
    assert_eq!(
        fs::read(&random).unwrap(),
        fs::read(env.source.join("docs/deep/er/random.bin")).unwrap()
    );

    // --delete within a selected path leaves the rest of the target alone.
    write_under(&target, "docs/deep/stray", b"x");
    write_under(&target, "outside", b"x");
    let out = run_ok(
        tessera(&env.vault)
            .args([
                "restore",
                &point,
                "--delete",
                "--path",
                "docs/deep",
                "--target",
            ])
            .arg(&target),
    );
    assert!(out.contains("restored"), "{out}");
    assert!(!target.join("docs/deep/stray").exists());
    assert!(target.join("outside").exists());
}

#[test]
fn points_mount_as_a_read_only_file_system() {
    let env = env();
    populate(&env.source);
    let first = backup(&env, &[])["point"].as_str().unwrap().to_owned();
    let before = env.root.join("before");
    restore(&env, &first, &before, &[]);
    fs::write(env.source.join("docs/readme.txt"), b"second version").unwrap();
    let second = backup(&env, &["--tag", "release"])["point"]
        .as_str()
        .unwrap()
        .to_owned();

    let mounted = Mounted::new(&env.vault, &env.root.join("mnt"));
    let ids = mounted.path.join("ids");
    let mut names: Vec<String> = fs::read_dir(&ids)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![first[..8].to_owned(), second[..8].to_owned()];
    expected.sort();
    assert_eq!(names, expected);
    // Each point reads as its files were, with their metadata, links and xattrs.
    assert_same_tree(&ids.join(&first[..8]), &before);
    assert_same_tree(&ids.join(&second[..8]), &env.source);
    // The item's points by time, and its newest as `latest`.
    let item = env.source.to_str().unwrap().replace('/', "%2F");
    let latest = mounted.path.join("items").join(&item).join("latest");
    assert_eq!(
        fs::read_link(&latest).unwrap(),
        Path::new("../../ids").join(&second[..8])
    );
    assert_eq!(
        fs::read(latest.join("docs/readme.txt")).unwrap(),
        b"second version"
    );
    assert_eq!(fs::read_dir(latest.parent().unwrap()).unwrap().count(), 3);
    // By tag: only the tagged point.
    let tags = mounted.path.join("tags");
    let names: Vec<_> = fs::read_dir(&tags)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["release"]);
    assert_eq!(fs::read_dir(tags.join("release")).unwrap().count(), 2);
    assert_eq!(
        fs::read_link(tags.join("release/latest")).unwrap(),
        Path::new("../../ids").join(&second[..8])
    );
    // Read at any offset, and never written.
    let random = fs::File::open(ids.join(&first[..8]).join("docs/deep/er/random.bin")).unwrap();
    let mut piece = vec![0u8; 5000];
    random.read_exact_at(&mut piece, 1_000_003).unwrap();
    let original = fs::read(env.source.join("docs/deep/er/random.bin")).unwrap();
    assert_eq!(piece, original[1_000_003..1_005_003]);
    let refused = fs::write(ids.join(&first[..8]).join("new.txt"), b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(30), "{refused}"); // EROFS

    // Stopped as a service is, it unmounts and ends well, once the files open there
    // are closed.
    let path = mounted.path.clone();
    let (status, left_open) = std::thread::scope(|scope| {
        let stopping = scope.spawn(|| mounted.unmount());
        std::thread::sleep(std::time::Duration::from_millis(1500));
        // Still served while the file is open.
        random.read_exact_at(&mut piece, 7).unwrap();
        let left_open = stopping.is_finished();
        drop(random);
        (stopping.join().unwrap(), left_open)
    });
    assert!(
        !left_open,
        "the command ended with a file open on the mount"
    );
    assert_eq!(piece, original[7..5007]);
    assert!(status.success(), "{status}");
    assert_eq!(fs::read_dir(&path).unwrap().count(), 0);
}

#[test]
fn points_made_and_forgotten_while_mounted_come_and_go() {
    let env = env();
    populate(&env.source);
    let first = backup(&env, &[])["point"].as_str().unwrap().to_owned();
    let mounted = Mounted::new(&env.vault, &env.root.join("mnt"));
    let ids = mounted.path.join("ids");
    let listed = || {
        let mut names: Vec<String> = fs::read_dir(&ids)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    // Within a few listings, at most a few seconds apart.
    let shows = |expected: &[&str]| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while listed() != expected && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert_eq!(listed(), expected);
    };
    let item = env.source.to_str().unwrap().replace('/', "%2F");
    let latest = mounted.path.join("items").join(&item).join("latest");
    assert_eq!(listed(), [&first[..8]]);
    assert_eq!(
        fs::read_link(&latest).unwrap(),
        Path::new("../../ids").join(&first[..8])
    );

    fs::write(env.source.join("docs/readme.txt"), b"made while mounted").unwrap();
    let second = backup(&env, &["--tag", "later"])["point"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut both = [&first[..8], &second[..8]];
    both.sort();
    shows(&both);
    // `latest` moved to the new point, which reads as the files are now.
    assert_eq!(
        fs::read_link(&latest).unwrap(),
        Path::new("../../ids").join(&second[..8])
    );
    assert_eq!(
        fs::read(latest.join("docs/readme.txt")).unwrap(),
        b"made while mounted"
    );
    assert_eq!(
        fs::read_link(mounted.path.join("tags/later/latest")).unwrap(),
        Path::new("../../ids").join(&second[..8])
    );

    run_ok(tessera(&env.vault).args(["forget", &first]));
    shows(&[&second[..8]]);
    assert_eq!(fs::read_dir(latest.parent().unwrap()).unwrap().count(), 2);
    let status = mounted.unmount();
    assert!(status.success(), "{status}");
}

#[test]
fn standard_input_and_a_commands_output_back_up_as_one_file() {
    let env = env();
    let dump = random_bytes(90, 3 << 20);
    let piped = |extra: &[&str]| {
        let mut child = tessera(&env.vault)
            .args([
                "--json",
                "backup",
                "--stdin",
                "--stdin-filename",
                "dump.sql",
            ])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&dump).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = piped(&[]);
    assert_eq!(first["item"], "stdin:dump.sql", "{first}");
    assert_eq!(first["bytes_read"], 3 << 20, "{first}");
    // The same dump again stores nothing new, and a dry run writes nothing.
    let second = piped(&["--tag", "nightly"]);
    assert_eq!(second["bytes_new"], 0, "{second}");
    assert_eq!(second["parent"], first["point"], "{second}");
    let vault_files = files_with_bytes(&env.vault);
    let dry = piped(&["--dry-run"]);
    assert_eq!(dry["point"], serde_json::Value::Null, "{dry}");
    assert_eq!(files_with_bytes(&env.vault), vault_files);
    let target = env.root.join("restored");
    run_ok(
        tessera(&env.vault)
            .args(["restore", "latest", "--item", "stdin:dump.sql", "--target"])
            .arg(&target),
    );
    assert_eq!(fs::read(target.join("dump.sql")).unwrap(), dump);

    // A command's output is kept only if the command succeeds.
    let out = run_ok(tessera(&env.vault).args([
        "--json",
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "lines.txt",
        "--",
        "sh",
        "-c",
        "printf 'one\\ntwo\\n'",
    ]));
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dumped =
        run_ok(tessera(&env.vault).args(["dump", made["point"].as_str().unwrap(), "lines.txt"]));
    assert_eq!(dumped, "one\ntwo\n");
    let points = |vault: &Path| run_ok(tessera(vault).args(["--json", "points"]));
    let before = points(&env.vault);
    let failed = tessera(&env.vault)
        .args([
            "backup",
            "--stdin-from-command",
            "--",
            "sh",
            "-c",
            "echo partial; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("sh failed (exit status: 3) after writing 8 bytes: no recovery point"),
        "{stderr}"
    );
    assert_eq!(points(&env.vault), before);
}

#[test]
fn a_point_rewritten_without_a_file_restores_without_it() {
    let env = env();
    populate(&env.source);
    let point = backup(&env, &[])["point"].as_str().unwrap().to_owned();
    let out = run_ok(tessera(&env.vault).args([
        "--json",
        "rewrite",
        &point,
        "--exclude",
        "*.bin",
        "--exclude",
        "docs/hard-b",
        "--forget",
    ]));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let done = &summary["points"][0];
    assert_eq!(
        done["removed"],
        serde_json::json!(["docs/deep/er/random.bin", "docs/hard-b"]),
        "{summary}"
    );
    assert_eq!(summary["forgotten"], serde_json::json!([point]));
    let new = done["new"].as_str().unwrap();
    run_ok(tessera(&env.vault).args(["prune", "--grace", "0s", "--repack-threshold", "0"]));
    run_ok(tessera(&env.vault).args(["check", "--read-data"]));
    let target = env.root.join("restored");
    restore(&env, new, &target, &[]);
    fs::remove_file(env.source.join("docs/deep/er/random.bin")).unwrap();
    fs::remove_file(env.source.join("docs/hard-b")).unwrap();
    // Removing them changed their directories' times in the source: put them back.
    for dir in ["docs/deep/er", "docs"] {
        let stored = fs::metadata(target.join(dir)).unwrap().modified().unwrap();
        let handle = fs::File::open(env.source.join(dir)).unwrap();
        handle
            .set_times(fs::FileTimes::new().set_modified(stored))
            .unwrap();
    }
    assert_same_tree(&target, &env.source);
}

#[test]
fn backups_leave_access_times_alone() {
    let env = env();
    fs::create_dir(env.source.join("dir")).unwrap();
    let file = env.source.join("dir/read-me");
    fs::write(&file, b"content a backup reads").unwrap();
    // Accessed long before its last change: any read would move the access time on.
    let accessed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for path in [&file, &env.source.join("dir")] {
        let handle = fs::File::open(path).unwrap();
        handle
            .set_times(fs::FileTimes::new().set_accessed(accessed))
            .unwrap();
    }
    let first = backup(&env, &[]);
    let second = backup(&env, &[]);
    for path in [&file, &env.source.join("dir")] {
        let atime = fs::metadata(path).unwrap().accessed().unwrap();
        assert_eq!(atime, accessed, "{} was touched", path.display());
    }
    // Nothing changed, so the second backup stores nothing new, trees included.
    assert_eq!(
        second["bytes_stored"].as_u64(),
        Some(0),
        "{first}\n{second}"
    );
}

#[test]
fn single_files_restore_under_their_path() {
    let env = env();
    populate(&env.source);
    let summary = backup(&env, &[]);
    let target = env.root.join("one");
    restore(
        &env,
        summary["point"].as_str().unwrap(),
        &target,
        &["docs/deep/er/random.bin"],
    );
    assert_eq!(
        fs::read(target.join("docs/deep/er/random.bin")).unwrap(),
        fs::read(env.source.join("docs/deep/er/random.bin")).unwrap()
    );
    assert!(!target.join("docs/readme.txt").exists());
    assert!(!target.join("empty").exists());
}

#[test]
fn restore_filters_choose_entries_and_keep_the_directories_on_the_way() {
    let env = env();
    let write = |path: &str, bytes: &[u8]| write_under(&env.source, path, bytes);
    write("docs/readme.txt", b"read me");
    write("docs/deep/er/notes.txt", b"notes");
    write("docs/img.png", b"\x89PNG");
    write("src/main.rs", b"fn main() {}");
    write("src/skip/x.txt", b"left out");
    write("top.txt", b"top");
    fs::set_permissions(env.source.join("docs"), fs::Permissions::from_mode(0o750)).unwrap();
    for dir in ["docs/deep/er", "docs/deep", "docs"] {
        set_mtime(&env.source.join(dir), 1_600_000_000, 42);
    }
    let point = backup(&env, &[])["point"].as_str().unwrap().to_string();
    let original = snapshot(&env.source);
    let restored = |name: &str, args: &[&str]| {
        let target = env.root.join(name);
        run_ok(
            tessera(&env.vault)
                .args(["restore", &point, "--target"])
                .arg(&target)
                .args(args),
        );
        let seen = snapshot(&target);
        for (path, entry) in &seen {
            assert_eq!(entry, &original[path], "{name}: {path} differs");
        }
        seen.into_keys().collect::<Vec<_>>()
    };

    // The directories on the way to a match come back with their stored mode and time.
    assert_eq!(
        restored("txt", &["--include", "*.txt", "--exclude", "src/skip"]),
        [
            "docs",
            "docs/deep",
            "docs/deep/er",
            "docs/deep/er/notes.txt",
            "docs/readme.txt",
            "top.txt"
        ]
    );
    // A matching directory comes back whole.
    assert_eq!(
        restored("deep", &["--include", "docs/deep"]),
        [
            "docs",
            "docs/deep",
            "docs/deep/er",
            "docs/deep/er/notes.txt"
        ]
    );
    assert_eq!(
        restored(
            "docs",
            &["--path", "docs", "--exclude", "*.png", "--exclude", "deep"]
        ),
        ["docs", "docs/readme.txt"]
    );
    let out = tessera(&env.vault)
        .args(["restore", &point, "--include", "x[", "--target"])
        .arg(env.root.join("bad"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("glob \"x[\" is invalid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exclusions_leave_files_out() {
    let env = env();
    populate(&env.source);
    fs::write(env.source.join("docs/debug.log"), b"noise").unwrap();
    fs::create_dir(env.source.join("cache")).unwrap();
    fs::write(env.source.join("cache/blob"), b"noise").unwrap();
    fs::write(env.source.join("#scratch"), b"noise").unwrap();
    // Patterns from a file: comments and blank lines skipped, `\#` for a leading `#`.
    let patterns = env.root.join("excludes");
    fs::write(&patterns, "# build leftovers\n\n  cache  \n\\#scratch\n").unwrap();
    let summary = backup(
        &env,
        &[
            "--exclude",
            "*.log",
            "--exclude-file",
            patterns.to_str().unwrap(),
        ],
    );
    let listing = run_ok(tessera(&env.vault).args([
        "--json",
        "ls",
        summary["point"].as_str().unwrap(),
        "docs",
    ]));
    assert!(!listing.contains("debug.log"), "{listing}");
    assert!(listing.contains("readme.txt"), "{listing}");
    let root =
        run_ok(tessera(&env.vault).args(["--json", "ls", summary["point"].as_str().unwrap()]));
    assert!(!root.contains("\"cache\""), "{root}");
    assert!(!root.contains("scratch"), "{root}");
    assert!(root.contains("\"empty\""), "{root}");
    // Everything below a path, each directory followed by what it holds.
    let all = run_ok(tessera(&env.vault).args([
        "--json",
        "ls",
        "--recursive",
        summary["point"].as_str().unwrap(),
        "docs",
    ]));
    let paths: Vec<String> = serde_json::from_str::<serde_json::Value>(&all)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "docs/deep",
            "docs/deep/er",
            "docs/deep/er/random.bin",
            "docs/hard-b",
            "docs/readme.txt"
        ]
    );
}

/// The paths a point holds, from `tessera ls` down the tree.
fn point_paths(env: &CliEnv, point: &str) -> Vec<String> {
    let restored = env.root.join(format!("listing-{point}"));
    restore(env, point, &restored, &[]);
    snapshot(&restored).into_keys().collect()
}

#[test]
fn markers_caches_large_files_and_other_file_systems_are_left_out() {
    let env = env();
    let write = |path: &str, bytes: &[u8]| write_under(&env.source, path, bytes);
    write(
        "cache/CACHEDIR.TAG",
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write("cache/blob", b"cached");
    write("not-a-cache/CACHEDIR.TAG", b"Signature: something else\n");
    write("private/.nobackup", b"");
    write("private/secret", b"secret");
    write("keep/small", &[1u8; 4096]);
    write("keep/large", &[2u8; 4097]);
    // A file system mounted inside the tree (where this runs as root and may mount).
    let mount = env.source.join("mnt");
    fs::create_dir(&mount).unwrap();
    let mounted = is_root()
        && Command::new("mount")
            .args(["-t", "tmpfs", "tessera-test", mount.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success());
    if mounted {
        fs::write(mount.join("elsewhere"), b"on another file system").unwrap();
    }

    let everything = backup(&env, &[]);
    let all = point_paths(&env, everything["point"].as_str().unwrap());
    let filtered = backup(
        &env,
        &[
            "--exclude-caches",
            "--exclude-if-present",
            ".nobackup",
            "--exclude-larger-than",
            "4K",
            "--one-file-system",
        ],
    );
    let some = point_paths(&env, filtered["point"].as_str().unwrap());
    if mounted {
        Command::new("umount").arg(&mount).status().unwrap();
    }
    for path in ["cache/blob", "private/secret", "keep/large"] {
        assert!(all.contains(&path.to_string()), "{path} in {all:?}");
    }
    if mounted {
        assert!(all.contains(&"mnt/elsewhere".to_string()), "{all:?}");
    }
    // The mount point stays, empty.
    assert_eq!(
        some,
        [
            "keep",
            "keep/small",
            "mnt",
            "not-a-cache",
            "not-a-cache/CACHEDIR.TAG"
        ]
    );

    let bad = tessera(&env.vault)
        .args(["backup", "--exclude-larger-than", "4Q"])
        .arg(&env.source)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn restores_never_write_outside_the_target() {
    let env = env();
    fs::create_dir(env.source.join("a")).unwrap();
    fs::write(env.source.join("a/b.txt"), b"payload").unwrap();
    let summary = backup(&env, &[]);
    let point = summary["point"].as_str().unwrap();
    // A target whose "a" already is a symlink to a directory outside it.
    let outside = env.root.join("outside");
    fs::create_dir(&outside).unwrap();
    let target = env.root.join("target");
    fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("a")).unwrap();
    let _ = tessera(&env.vault)
        .args(["restore", point, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        !outside.join("b.txt").exists(),
        "the restore followed a symlink out of the target"
    );
    // Paths that climb out are refused with a clear message.
    let output = tessera(&env.vault)
        .args(["restore", point, "--path", "../etc/passwd", "--target"])
        .arg(env.root.join("t2"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("../etc/passwd"), "{stderr}");
}

#[test]
fn unreadable_files_are_reported_and_the_point_is_partial() {
    let env = env();
    fs::write(env.source.join("ok.txt"), b"fine").unwrap();
    fs::write(env.source.join("secret.txt"), b"no access").unwrap();
    fs::set_permissions(
        env.source.join("secret.txt"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    // Root reads everything, so run the backup as an unprivileged user when we are root.
    let mut command = if is_root() {
        for dir in [&env.root, &env.vault, &env.source] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
        }
        make_world_writable(&env.vault);
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(tessera_tests::tessera_binary());
        c.arg("--vault")
            .arg(&env.vault)
            .env("TESSERA_PASSWORD", tessera_tests::PASSWORD);
        c.env("XDG_CACHE_HOME", env.root.join("cache"));
        c
    } else {
        tessera(&env.vault)
    };
    let out = run_ok(command.arg("--json").arg("backup").arg(&env.source));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let points = run_ok(tessera(&env.vault).args(["--json", "points"]));
    let points: serde_json::Value = serde_json::from_str(&points).unwrap();
    let point = &points.as_array().unwrap()[0];
    assert_eq!(point["partial"], true, "{point}");
    assert_eq!(point["id"], summary["point"]);
    let target = env.root.join("restored");
    restore(&env, summary["point"].as_str().unwrap(), &target, &[]);
    assert_eq!(fs::read(target.join("ok.txt")).unwrap(), b"fine");
    assert!(!target.join("secret.txt").exists());
}

fn make_world_writable(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
            make_world_writable(&path);
        } else {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        }
    }
}
