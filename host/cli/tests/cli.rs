//! The `tessera` binary as scripts see it: exit statuses, messages and JSON. Most tests
//! need no plugin; one round trip goes through the builtin file-share plugin. Every run
//! gets its own home, data and cache directories, so no test reads or writes the user's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The password the tests' vaults are created with.
const PASSWORD: &str = "correct horse battery staple";

/// A sandbox for running `tessera`: a temporary home with its own data directory.
struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The explicit vault most tests use.
    fn vault(&self) -> PathBuf {
        self.path("vault")
    }

    /// The default vault, under the sandbox's data directory.
    fn default_vault(&self) -> PathBuf {
        self.path("data").join("tessera").join("vault")
    }

    /// `tessera` with the sandbox's environment and no password.
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        command
            .env_remove("TESSERA_PASSWORD")
            .env_remove("TESSERA_VAULT")
            .env_remove("TESSERA_LOG")
            .env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CACHE_HOME", self.path("cache"));
        command
    }

    /// Runs `tessera ARGS` on the explicit vault with `password`.
    fn run_with(&self, password: &str, args: &[&str]) -> Output {
        self.command()
            .env("TESSERA_PASSWORD", password)
            .arg("--vault")
            .arg(self.vault())
            .args(args)
            .output()
            .expect("tessera runs")
    }

    /// Runs `tessera ARGS` on the explicit vault with the right password.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(PASSWORD, args)
    }

    /// Backs `source` up and returns the new point's id.
    fn backup_point(&self, source: &Path) -> String {
        let out = self.run(&["--json", "backup", source.to_str().unwrap()]);
        assert_success(&out);
        json(&out)["point"].as_str().unwrap().to_string()
    }

    /// Creates the explicit vault.
    fn init(&self) {
        let out = self.run(&["vault", "init"]);
        assert_success(&out);
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "tessera failed with {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

/// Writes `bytes` to `path` below `root`, making the directories on the way.
fn write_under(root: &Path, path: &str, bytes: &[u8]) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn exists(path: &Path) -> bool {
    path.try_exists().expect("stat")
}

#[test]
fn init_creates_a_vault_and_prints_its_path() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["vault", "init"]);
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), sandbox.vault().display().to_string());
    assert!(exists(&sandbox.vault().join("config")));
}

#[test]
fn init_refuses_an_existing_vault() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = sandbox.run(&["vault", "init"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[test]
fn init_json_says_whether_the_vault_is_encrypted() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["--json", "vault", "init", "--unencrypted"]);
    assert_success(&out);
    let summary = json(&out);
    assert_eq!(summary["encrypted"], false);
    assert_eq!(summary["vault"], sandbox.vault().display().to_string());
}

#[test]
fn a_new_vault_without_a_password_is_refused() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .command()
        .arg("--vault")
        .arg(sandbox.vault())
        .args(["vault", "init"])
        .output()
        .expect("tessera runs");
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("TESSERA_PASSWORD"),
        "{}",
        stderr(&out)
    );
    assert!(!exists(&sandbox.vault().join("config")));
}

#[test]
fn points_of_an_empty_vault() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = sandbox.run(&["points"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "");
    let out = sandbox.run(&["points", "--json"]);
    assert_success(&out);
    assert_eq!(json(&out), serde_json::json!([]));
}

#[test]
fn a_wrong_password_fails_with_a_clear_message() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = sandbox.run_with("not the password", &["points"]);
    assert_exit(&out, 1);
    let message = stderr(&out);
    assert!(message.starts_with("tessera: "), "{message}");
    assert!(message.contains("wrong password"), "{message}");
    assert!(!message.contains("backtrace"), "{message}");
}

#[test]
fn an_encrypted_vault_needs_a_password() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = sandbox
        .command()
        .arg("--vault")
        .arg(sandbox.vault())
        .arg("points")
        .output()
        .expect("tessera runs");
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("--password-file"), "{}", stderr(&out));
}

#[test]
fn a_missing_vault_is_reported() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["points"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("no tessera vault"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_password_file_may_hold_a_password_or_a_key_file() {
    let sandbox = Sandbox::new();
    let password_file = sandbox.path("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let vault = sandbox.vault();
    let with_file = |file: &Path, args: &[&str]| {
        sandbox
            .command()
            .arg("--vault")
            .arg(&vault)
            .arg("--password-file")
            .arg(file)
            .args(args)
            .output()
            .expect("tessera runs")
    };
    assert_success(&with_file(&password_file, &["vault", "init"]));

    let key_file = sandbox.path("extra.key");
    let key_file_arg = key_file.to_str().unwrap();
    let out = with_file(
        &password_file,
        &[
            "key",
            "add",
            "--new-key-file",
            key_file_arg,
            "--label",
            "spare",
        ],
    );
    assert_success(&out);
    assert!(
        stdout(&out).starts_with("added key slot "),
        "{}",
        stdout(&out)
    );

    let out = with_file(&key_file, &["--json", "key", "list"]);
    assert_success(&out);
    let slots = json(&out);
    let slots = slots.as_array().expect("an array of slots");
    assert_eq!(slots.len(), 2);
    let current: Vec<_> = slots.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["kind"], "key-file");
    assert_eq!(current[0]["label"], "spare");
}

#[test]
fn the_default_vault_is_opened_by_its_key_file() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .command()
        .args(["vault", "init"])
        .output()
        .expect("tessera runs");
    assert_success(&out);
    assert_eq!(
        stdout(&out).trim(),
        sandbox.default_vault().display().to_string()
    );
    let key_file = sandbox.path("data").join("tessera").join("vault.key");
    assert!(stderr(&out).contains("vault.key"), "{}", stderr(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = sandbox
        .command()
        .args(["points", "--json"])
        .output()
        .expect("tessera runs");
    assert_success(&out);
    assert_eq!(json(&out), serde_json::json!([]));
}

#[test]
fn usage_errors_exit_2() {
    let sandbox = Sandbox::new();
    for args in [
        &["no-such-verb"][..],
        &["backup"],
        &["restore", "latest"],
        &["prune", "--grace", "soon"],
        &["forget", "--keep-within", "1 month"],
    ] {
        let out = sandbox.command().args(args).output().expect("tessera runs");
        assert_exit(&out, 2);
    }
}

#[test]
fn forget_without_a_keep_option_is_a_usage_error() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = sandbox.run(&["forget"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--keep-last"), "{}", stderr(&out));
    let out = sandbox.run(&["forget", "--prune", "--dry-run"]);
    assert_exit(&out, 2);
}

/// The ids `tessera points` lists, with `extra` flags, oldest first.
fn point_ids(sandbox: &Sandbox, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--json", "points"];
    args.extend_from_slice(extra);
    let out = sandbox.run(&args);
    assert_success(&out);
    json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// Backs up the directory `source` `count` times, its file `f` holding "version N" in the
/// Nth; returns the points' ids, oldest first.
fn versions(sandbox: &Sandbox, count: usize) -> Vec<String> {
    let source = sandbox.path("source");
    std::fs::create_dir_all(&source).unwrap();
    let mut ids = Vec::new();
    for i in 0..count {
        std::fs::write(source.join("f"), format!("version {i}")).unwrap();
        let out = sandbox.run(&["--json", "backup", source.to_str().unwrap()]);
        assert_success(&out);
        ids.push(json(&out)["point"].as_str().unwrap().to_string());
    }
    ids
}

#[test]
fn forget_named_points_even_damaged_ones() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let ids = versions(&sandbox, 4);
    let listed = || point_ids(&sandbox, &[]);
    // Points or a policy, not both; a point that is not there is an error.
    let out = sandbox.run(&["forget", &ids[0], "--keep-last", "1"]);
    assert_exit(&out, 2);
    let out = sandbox.run(&["forget", &ids[0], "ffff"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("no recovery point matches 'ffff'"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listed().len(), 4, "nothing was forgotten");

    let out = sandbox.run(&["forget", &ids[1][..8], "--dry-run"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("would forget 1 recovery point"),
        "{}",
        stdout(&out)
    );
    assert_eq!(listed().len(), 4);
    let out = sandbox.run(&["--json", "forget", &ids[1][..8], "latest"]);
    assert_success(&out);
    let decisions = json(&out)["decisions"].clone();
    let forgotten: Vec<&str> = decisions
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["point"].as_str().unwrap())
        .collect();
    assert_eq!(forgotten, [ids[1].as_str(), ids[3].as_str()]);
    assert_eq!(listed(), [ids[0].clone(), ids[2].clone()]);

    // A point record that no longer decodes is skipped by `points`, and can be forgotten.
    let record = sandbox.vault().join("points").join(&ids[2]);
    let mut bytes = std::fs::read(&record).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&record, bytes).unwrap();
    let out = sandbox.run(&["forget", &ids[2][..10]]);
    assert_success(&out);
    assert!(stdout(&out).contains("do not decode"), "{}", stdout(&out));
    assert!(!record.exists());
    let out = sandbox.run(&["forget", "latest", "--prune"]);
    assert_success(&out);
    assert!(listed().is_empty());
    assert_success(&sandbox.run(&["check", "--read-data"]));
}

#[test]
fn a_point_tagged_later_is_kept_by_its_tag() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let ids = versions(&sandbox, 3);
    assert_exit(&sandbox.run(&["tag", &ids[0]]), 2);
    let out = sandbox.run(&["tag", &ids[0][..8], "--add", "audit", "--dry-run"]);
    assert_success(&out);
    assert!(stdout(&out).contains("(a new id)"), "{}", stdout(&out));
    let out = sandbox.run(&["--json", "tag", &ids[0][..8], "--add", "audit"]);
    assert_success(&out);
    let tagged = json(&out)["points"][0].clone();
    assert_eq!(tagged["tags"], serde_json::json!(["audit"]), "{tagged}");
    let renamed = tagged["new"].as_str().unwrap().to_string();
    assert_ne!(renamed, ids[0]);

    let out = sandbox.run(&["--json", "points", "--tag", "audit"]);
    let listed = json(&out);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], renamed.as_str());
    assert_eq!(listed[0]["original"], ids[0].as_str());
    // The old id is gone; the tagged point outlives a policy that keeps only the newest.
    assert_exit(&sandbox.run(&["ls", &ids[0]]), 1);
    let out = sandbox.run(&["forget", "--keep-last", "1", "--keep-tag", "audit"]);
    assert_success(&out);
    assert_eq!(point_ids(&sandbox, &[]), [renamed.clone(), ids[2].clone()]);
    let out = sandbox.run(&["dump", &renamed, "f"]);
    assert_eq!(out.stdout, b"version 0");
    // Removing the tag gives it another id, still naming the first as its original.
    let out = sandbox.run(&["--json", "tag", &renamed, "--set", ""]);
    assert_success(&out);
    let cleared = json(&out)["points"][0]["new"].as_str().unwrap().to_string();
    let out = sandbox.run(&["--json", "points"]);
    assert_eq!(json(&out)[0]["id"], cleared.as_str());
    assert_eq!(json(&out)[0]["original"], ids[0].as_str());
    assert_eq!(json(&out)[0]["tags"], serde_json::json!([]));
}

#[test]
fn forget_and_prune_an_empty_vault() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = sandbox.run(&["--json", "forget", "--keep-daily", "7", "--prune"]);
    assert_success(&out);
    let summary = json(&out);
    assert_eq!(summary["decisions"], serde_json::json!([]));
    assert_eq!(summary["prune"]["packs_deleted"], 0);
    let out = sandbox.run(&["prune", "--grace", "0s", "--repack-threshold", "50"]);
    assert_success(&out);
}

#[test]
fn tagged_points_are_listed_and_kept_by_their_tags() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let source = sandbox.path("source");
    std::fs::create_dir_all(&source).unwrap();
    let mut ids = Vec::new();
    for (i, tags) in [
        &["release"][..],
        &["nightly"],
        &[],
        &["nightly", "audit"],
        &[],
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(source.join("f"), format!("version {i}")).unwrap();
        let mut args = vec!["--json", "backup", source.to_str().unwrap()];
        for tag in *tags {
            args.extend(["--tag", tag]);
        }
        let out = sandbox.run(&args);
        assert_success(&out);
        ids.push(json(&out)["point"].as_str().unwrap().to_string());
    }
    let listed = |extra: &[&str]| point_ids(&sandbox, extra);
    assert_eq!(
        listed(&["--tag", "nightly"]),
        [ids[1].clone(), ids[3].clone()]
    );
    assert_eq!(
        listed(&["--tag", "release", "--tag", "audit"]),
        [ids[0].clone(), ids[3].clone()]
    );
    assert!(listed(&["--tag", "none"]).is_empty());

    // The newest point and the tagged ones stay; the rest go.
    let out = sandbox.run(&[
        "--json",
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "release",
        "--keep-tag",
        "audit",
    ]);
    assert_success(&out);
    let decisions = json(&out)["decisions"].clone();
    let reasons = |id: &str| {
        decisions
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["point"] == id)
            .unwrap()["reasons"]
            .clone()
    };
    assert_eq!(reasons(&ids[0]), serde_json::json!(["tag"]));
    assert_eq!(reasons(&ids[3]), serde_json::json!(["tag"]));
    assert_eq!(reasons(&ids[4]), serde_json::json!(["last"]));
    assert_eq!(
        listed(&[]),
        [ids[0].clone(), ids[3].clone(), ids[4].clone()]
    );

    // A tag alone is a policy.
    let out = sandbox.run(&["forget", "--keep-tag", "release"]);
    assert_success(&out);
    assert_eq!(listed(&[]), [ids[0].clone()]);
}

#[test]
fn check_of_a_fresh_vault_succeeds() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = sandbox.run(&["check"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("no problems found"),
        "{}",
        stdout(&out)
    );
    let out = sandbox.run(&["check", "--read-data", "--json"]);
    assert_success(&out);
    assert_eq!(json(&out)["ok"], true);
}

#[test]
fn check_reads_a_subset_of_the_packs() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let source = sandbox.path("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), b"alpha").unwrap();
    assert_success(&sandbox.run(&["backup", source.to_str().unwrap()]));

    let out = sandbox.run(&["--json", "check", "--read-data-subset", "1/1"]);
    assert_success(&out);
    let report = json(&out);
    let packs = report["packs"].as_u64().unwrap();
    assert!(packs >= 2, "{report}");
    assert_eq!(report["packs_read"], packs, "{report}");

    // One byte's worth of packs is one pack.
    let out = sandbox.run(&["check", "--read-data-subset", "1"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("read 1 of {packs} packs")),
        "{}",
        stdout(&out)
    );

    for bad in ["0/3", "4/3", "0%", "150%", "5X"] {
        let out = sandbox.run(&["check", "--read-data-subset", bad]);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains(&format!("invalid data subset '{bad}'")),
            "{bad}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn diff_names_every_path_that_changed_between_two_points() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    sandbox.init();
    let source = sandbox.path("source");
    let write = |path: &str, bytes: &[u8]| write_under(&source, path, bytes);
    write("a/x", b"one");
    write("a/b/z", b"three");
    write("c/q", b"gone soon");
    write("y", b"two");
    write("same.txt", b"never touched");
    // Random bytes, which content-defined chunking cuts into chunks of about 1 MiB.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..3_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    write("big", &big);
    std::os::unix::fs::symlink("y", source.join("l")).unwrap();
    let backup = || sandbox.backup_point(&source);
    let first = backup();

    write("y", b"changed");
    std::fs::remove_dir_all(source.join("a/b")).unwrap();
    write("new/n", b"new");
    std::fs::set_permissions(source.join("a/x"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(source.join("l")).unwrap();
    write("l/f", b"a directory now");
    std::fs::remove_file(source.join("c/q")).unwrap();
    let mut grown = big.clone();
    grown.extend_from_slice(&[7u8; 100_000]);
    write("big", &grown);
    let second = backup();

    let out = sandbox.run(&["diff", &first, &second]);
    assert_success(&out);
    let expected = "\
-    a/b/
-    a/b/z
U    a/x
M    big
-    c/q
T    l/
+    l/f
+    new/
+    new/n
M    y
3 added, 3 removed, 3 modified, 1 with other metadata; ";
    assert!(stdout(&out).starts_with(expected), "{}", stdout(&out));

    let out = sandbox.run(&["--json", "diff", &first[..12], "latest"]);
    assert_success(&out);
    let report = json(&out);
    assert_eq!(report["first"], first.as_str());
    assert_eq!(report["second"], second.as_str());
    assert_eq!(report["changes"].as_array().unwrap().len(), 10, "{report}");
    assert_eq!(report["changes"][5]["change"], "type-changed", "{report}");
    // The appended 100 kB and the rewritten small files are new data; what was cut off
    // is the old tail of the big file and the removed files.
    let added = report["bytes_added"].as_u64().unwrap();
    let removed = report["bytes_removed"].as_u64().unwrap();
    assert!(added >= 100_000, "{report}");
    assert!(added < 2_000_000, "{report}");
    assert!(removed > 0 && removed < added, "{report}");

    let out = sandbox.run(&["--json", "diff", &second, &second]);
    assert_success(&out);
    let report = json(&out);
    assert_eq!(report["changes"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["bytes_added"], 0, "{report}");

    let out = sandbox.run(&["diff", &first, "0000"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("0000"), "{}", stderr(&out));
}

#[test]
fn dump_writes_one_entry_to_standard_output() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let source = sandbox.path("source");
    std::fs::create_dir_all(source.join("dir")).unwrap();
    std::fs::write(source.join("dir/notes.txt"), b"remember the milk\n").unwrap();
    // A sparse file: its hole comes out as zeros.
    let sparse = std::fs::File::create(source.join("sparse")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"tail", (3 << 20) - 4).unwrap();
    drop(sparse);
    std::fs::hard_link(source.join("dir/notes.txt"), source.join("again.txt")).unwrap();
    std::os::unix::fs::symlink("dir/notes.txt", source.join("link")).unwrap();
    assert_success(&sandbox.run(&["backup", source.to_str().unwrap()]));

    let out = sandbox.run(&["dump", "latest", "dir/notes.txt"]);
    assert_success(&out);
    assert_eq!(out.stdout, b"remember the milk\n");
    let out = sandbox.run(&["dump", "latest", "/sparse"]);
    assert_success(&out);
    let mut expected = vec![0u8; (3 << 20) - 4];
    expected.extend_from_slice(b"tail");
    assert!(out.stdout == expected, "the sparse file differs");
    // Whichever name holds the content, both dump it.
    let first = sandbox.run(&["dump", "latest", "again.txt"]);
    assert_success(&first);
    assert_eq!(first.stdout, b"remember the milk\n");

    for (path, says) in [
        ("dir", "is a directory"),
        ("link", "is a symbolic link to 'dir/notes.txt'"),
        (
            "missing.txt",
            "'missing.txt' is not an entry the point stores",
        ),
    ] {
        let out = sandbox.run(&["dump", "latest", path]);
        assert_exit(&out, 1);
        assert!(out.stdout.is_empty(), "{path}");
        assert!(stderr(&out).contains(says), "{path}: {}", stderr(&out));
    }
}

#[test]
fn find_lists_the_points_holding_matching_paths() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let source = sandbox.path("source");
    let write = |path: &str, bytes: &[u8]| write_under(&source, path, bytes);
    write("etc/app.conf", b"port = 1");
    write("etc/nginx/site.conf", b"listen 80;");
    write("srv/README", b"read me");
    let backup = || sandbox.backup_point(&source);
    let first = backup();
    std::fs::remove_file(source.join("etc/nginx/site.conf")).unwrap();
    write("etc/app.conf", b"port = 22");
    let second = backup();

    let found = |args: &[&str]| {
        let mut all = vec!["--json", "find"];
        all.extend_from_slice(args);
        let out = sandbox.run(&all);
        assert_success(&out);
        json(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let point = m["point"].as_str().unwrap();
                let which = if point == first { "first" } else { "second" };
                assert!(point == first || point == second, "{m}");
                format!("{which} {} {}", m["path"].as_str().unwrap(), m["size"])
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        found(&["*.conf"]),
        [
            "first etc/app.conf 8",
            "first etc/nginx/site.conf 10",
            "second etc/app.conf 9"
        ]
    );
    assert_eq!(
        found(&["/etc/*.conf"]),
        ["first etc/app.conf 8", "second etc/app.conf 9"]
    );
    assert_eq!(found(&["nginx"]).len(), 2, "the directory, in both points");
    assert!(found(&["readme"]).is_empty());
    assert_eq!(
        found(&["-i", "readme"]),
        ["first srv/README 7", "second srv/README 7"]
    );

    let out = sandbox.run(&["find", "site.conf"]);
    assert_success(&out);
    assert!(
        stdout(&out).ends_with("1 match in 1 recovery point\n"),
        "{}",
        stdout(&out)
    );
    let out = sandbox.run(&["find", "etc/[a"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("'etc/[a' is not a valid glob"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn repair_index_rebuilds_a_lost_index() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let source = sandbox.path("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), b"alpha").unwrap();
    assert_success(&sandbox.run(&["backup", source.to_str().unwrap()]));
    for entry in std::fs::read_dir(sandbox.vault().join("index")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_exit(&sandbox.run(&["check"]), 1);

    let out = sandbox.run(&["repair", "index", "--dry-run"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("would write 1 index file"),
        "{}",
        stdout(&out)
    );
    assert_exit(&sandbox.run(&["check"]), 1);

    let out = sandbox.run(&["--json", "repair", "index"]);
    assert_success(&out);
    let report = json(&out);
    assert!(report["packs_found"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["index_files_written"], 1, "{report}");
    // The check that found the point damaged recorded it; a clean check clears that.
    let out = sandbox.run(&["--json", "check", "--read-data"]);
    assert_success(&out);
    let cleared = json(&out)["damage"]["cleared"].clone();
    assert_eq!(cleared.as_array().map(Vec::len), Some(1), "{cleared}");
    let out = sandbox.run(&["--json", "backup", source.to_str().unwrap()]);
    assert_success(&out);
    let backup = json(&out);
    assert_eq!(
        backup["bytes_read"], 0,
        "the point is trusted again: {backup}"
    );
    assert_eq!(backup["warnings"], serde_json::json!([]), "{backup}");
    let out = sandbox.run(&["dump", "latest", "a.txt"]);
    assert_eq!(out.stdout, b"alpha");
}

#[test]
fn check_fails_on_a_damaged_vault() {
    let sandbox = Sandbox::new();
    sandbox.init();
    // An index file that does not hash to its name is damage check must report.
    let index = sandbox.vault().join("index").join("00".repeat(32));
    std::fs::write(index, b"not an index").unwrap();
    let out = sandbox.run(&["check"]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("problem: "), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "tessera: the vault has 1 problem; restoring the points listed may fail\n"
    );
}

#[test]
fn stats_of_an_empty_vault() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = sandbox.run(&["--json", "stats"]);
    assert_success(&out);
    let stats = json(&out);
    assert_eq!(stats["points"], 0);
    assert_eq!(stats["packs"], 0);
}

#[test]
fn restore_of_a_point_that_does_not_exist_fails() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let target = sandbox.path("target");
    let out = sandbox.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("no recovery point"),
        "{}",
        stderr(&out)
    );
    let out = sandbox.run(&["ls", "abcdef12"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("abcdef12"), "{}", stderr(&out));
}

#[test]
fn backup_ls_and_restore_with_the_builtin_file_share_plugin() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let source = sandbox.path("source");
    std::fs::create_dir_all(source.join("docs")).unwrap();
    std::fs::write(source.join("docs").join("a.txt"), b"alpha").unwrap();
    std::fs::write(source.join("b.txt"), b"bravo").unwrap();
    let source_arg = source.to_str().unwrap();

    let out = sandbox.run(&["backup", source_arg, "--tag", "first"]);
    assert_success(&out);
    let first = stdout(&out).trim().to_string();
    assert_eq!(first.len(), 64, "{first}");

    let out = sandbox.run(&["--json", "backup", source_arg, "--exclude", "b.txt"]);
    assert_success(&out);
    let second = json(&out);
    assert_eq!(second["parent"], first.as_str());
    assert_eq!(
        second["item"],
        source.canonicalize().unwrap().to_str().unwrap()
    );

    let out = sandbox.run(&["--json", "points"]);
    assert_success(&out);
    let points = json(&out);
    let points = points.as_array().expect("an array of points");
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["id"], first.as_str());
    assert_eq!(points[0]["plugin"], "file-share");
    assert_eq!(points[0]["tags"], serde_json::json!(["first"]));
    assert_eq!(points[1]["parent"], first.as_str());

    let out = sandbox.run(&["--json", "ls", &first[..8]]);
    assert_success(&out);
    let mut paths: Vec<String> = json(&out)
        .as_array()
        .expect("an array of entries")
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(paths, ["b.txt", "docs"]);

    let target = sandbox.path("restored");
    let item = source.canonicalize().unwrap();
    let out = sandbox.run(&[
        "restore",
        "latest",
        "--item",
        item.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--path",
        "docs/a.txt",
    ]);
    assert_success(&out);
    assert_eq!(
        std::fs::read(target.join("docs").join("a.txt")).unwrap(),
        b"alpha"
    );
    assert!(!exists(&target.join("b.txt")));

    // The diagnostic log: off by default, on with a filter, and a filter that does not
    // parse is ignored with a warning.
    let logged = |filter: Option<&str>| {
        let mut command = sandbox.command();
        if let Some(filter) = filter {
            command.env("TESSERA_LOG", filter);
        }
        let out = command
            .env("TESSERA_PASSWORD", PASSWORD)
            .arg("--vault")
            .arg(sandbox.vault())
            .args(["backup", source_arg])
            .output()
            .expect("tessera runs");
        assert_success(&out);
        stderr(&out)
    };
    assert_eq!(logged(None), "");
    let log = logged(Some("info"));
    let committed = log
        .lines()
        .find(|line| line.contains("recovery point committed"))
        .unwrap_or_else(|| panic!("no commit in the log: {log}"));
    // Seconds since start, the level, the thread.
    let fields: Vec<&str> = committed.split_whitespace().collect();
    assert!(
        fields[0].ends_with('s') && fields[0].trim_end_matches('s').parse::<f64>().is_ok(),
        "{committed}"
    );
    assert_eq!(fields[1..3], ["INFO", "main"], "{committed}");
    assert!(
        !logged(Some("tessera_vault=warn")).contains("committed"),
        "the filter is applied"
    );
    let warned = logged(Some("[not a filter"));
    assert!(
        warned.contains("TESSERA_LOG") && warned.contains("ignored"),
        "{warned}"
    );
}

#[test]
fn compression_is_the_vaults_unless_a_backup_sets_its_own() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["--json", "vault", "init", "--compression", "0"]);
    assert_success(&out);
    assert_eq!(json(&out)["compression"], 0);
    let source = sandbox.path("logs");
    std::fs::create_dir_all(&source).unwrap();
    let text: String = (0..40_000)
        .map(|i| format!("line {i}: the service answered in {} ms\n", i % 97))
        .collect();
    let source_arg = source.to_str().unwrap();
    let backup = |text: &str, extra: &[&str]| {
        std::fs::write(source.join("app.log"), text).unwrap();
        let mut args = vec!["--json", "backup", source_arg];
        args.extend_from_slice(extra);
        let out = sandbox.run(&args);
        assert_success(&out);
        let summary = json(&out);
        let new = summary["bytes_new"].as_u64().unwrap();
        let stored = summary["bytes_stored"].as_u64().unwrap();
        assert!(new > 1_000_000, "{summary}");
        (new, stored)
    };
    // The vault's level 0: stored as it is.
    let (new, stored) = backup(&text, &[]);
    assert!(stored >= new, "{new} new bytes stored in {stored}");
    // This backup's own level.
    let (new, stored) = backup(&text.replace("ms", "us"), &["--compression", "19"]);
    assert!(stored * 4 < new, "{new} new bytes stored in {stored}");

    for bad in [
        &["vault", "init", "--compression", "23"][..],
        &["backup", source_arg, "--compression", "-1"],
    ] {
        assert_exit(&sandbox.run(bad), 2);
    }
}
