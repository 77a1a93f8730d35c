//! Hostile plugins: each ends in a clear error, the host survives, and the vault checks
//! clean with its committed points intact.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use tessera_runtime::{CaptureJob, NoProgress, Runtime, RuntimeError, RuntimeOptions};
use tessera_tests::{
    TestVault, assert_sound, backup_files, options, random_bytes, read_file, small_cdc,
};
use tessera_vault::Vault;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(tessera_runtime::PLUGIN_BUILD_DIR)
        .join(format!("tessera_fixture_{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "fixture {} was not built", path.display());
    path.display().to_string()
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        cache_dir: None,
        memory_limit: 64 << 20,
        cpu_limit: Duration::from_secs(2),
    })
    .unwrap()
}

struct Setup {
    tv: TestVault,
    source: tempfile::TempDir,
    committed: tessera_vault::Point,
    data: Vec<u8>,
}

/// A vault with one committed point, and a source directory to hand to plugins.
fn setup() -> Setup {
    let tv = TestVault::encrypted();
    let data = random_bytes(60, 300_000);
    let (_, committed) =
        backup_files(&tv.vault, options("before"), &[("f", &data)], small_cdc()).unwrap();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("file.txt"), b"inside the grant").unwrap();
    Setup {
        tv,
        source,
        committed,
        data,
    }
}

fn job(setup: &Setup, settings: Vec<(String, String)>) -> CaptureJob {
    let mut job = CaptureJob::directory("hostile", setup.source.path());
    job.settings = settings;
    job
}

/// The vault is sound and holds exactly the point committed before the hostile run.
fn assert_untouched(setup: &Setup) {
    let vault: Vault = setup.tv.reopen();
    assert_sound(&vault);
    let points = vault.points().unwrap();
    assert_eq!(
        points.len(),
        1,
        "no point may be committed by a failed capture"
    );
    assert_eq!(
        read_file(&vault, &setup.committed, "f").unwrap(),
        setup.data
    );
}

fn capture(
    name: &str,
    setup: &Setup,
    settings: Vec<(String, String)>,
) -> Result<tessera_runtime::CaptureOutcome, RuntimeError> {
    let runtime = runtime();
    let plugin = runtime.load(&fixture(name)).unwrap();
    runtime.capture(&plugin, &setup.tv.vault, &job(setup, settings), &NoProgress)
}

#[test]
fn an_infinite_loop_is_stopped_by_the_cpu_limit() {
    let setup = setup();
    let err = capture("spin", &setup, vec![]).unwrap_err();
    assert!(matches!(err, RuntimeError::Trap { .. }), "{err}");
    assert!(err.to_string().contains("CPU limit"), "{err}");
    assert!(err.to_string().contains("spin"), "{err}");
    assert_untouched(&setup);
}

#[test]
fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    let setup = setup();
    let err = capture("memory-bomb", &setup, vec![]).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Trap { .. } | RuntimeError::Plugin { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("memory"), "{err}");
    assert_untouched(&setup);
}

#[test]
fn reads_outside_the_grant_fail() {
    let setup = setup();
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("secret"), b"top secret").unwrap();
    let settings = vec![(
        "path".to_string(),
        secret.path().join("secret").display().to_string(),
    )];
    let err = capture("escape-read", &setup, settings).unwrap_err();
    assert!(matches!(err, RuntimeError::Plugin { .. }), "{err}");
    assert!(!err.to_string().contains("top secret"));
    assert_untouched(&setup);
}

#[test]
fn symlinks_cannot_lead_out_of_the_grant() {
    let setup = setup();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"top secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), setup.source.path().join("link")).unwrap();
    let err = capture("symlink-escape", &setup, vec![]).unwrap_err();
    assert!(matches!(err, RuntimeError::Plugin { .. }), "{err}");
    assert!(!err.to_string().contains("top secret"));
    assert_untouched(&setup);
}

#[test]
fn the_network_is_closed() {
    let setup = setup();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let err = capture("network", &setup, vec![("address".into(), address)]).unwrap_err();
    assert!(matches!(err, RuntimeError::Plugin { .. }), "{err}");
    assert!(
        listener.accept().is_err(),
        "the plugin reached the listener"
    );
    assert_untouched(&setup);
}

#[test]
fn the_hosts_connections_reach_only_allowed_addresses() {
    let setup = setup();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let settings = vec![
        ("address".into(), address.clone()),
        ("via".into(), "host".into()),
    ];
    let err = capture("network", &setup, settings).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("connecting to {address}"))
            && message.contains("the job allows no network address"),
        "{message}"
    );
    assert!(
        listener.accept().is_err(),
        "the plugin reached the listener"
    );
    assert_untouched(&setup);
}

#[test]
fn malformed_entries_are_refused() {
    let setup = setup();
    let err = capture("malformed", &setup, vec![]).unwrap_err();
    assert!(matches!(err, RuntimeError::Plugin { .. }), "{err}");
    assert!(
        err.to_string().contains("evil") || err.to_string().contains("invalid entry path"),
        "{err}"
    );
    assert_untouched(&setup);
}

#[test]
fn oversized_host_calls_are_refused() {
    let setup = setup();
    let err = capture("oversized", &setup, vec![]).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    assert_untouched(&setup);
}

#[test]
fn a_minimal_plugin_loads_from_a_file_and_captures() {
    let setup = setup();
    let runtime = runtime();
    let plugin = runtime.load(&fixture("minimal")).unwrap();
    assert_eq!(plugin.info().name, "minimal");
    assert_eq!(plugin.info().contract, tessera_runtime::CONTRACT_VERSION);
    let outcome = runtime
        .capture(&plugin, &setup.tv.vault, &job(&setup, vec![]), &NoProgress)
        .unwrap();
    assert_eq!(
        read_file(&setup.tv.vault, &outcome.record, "hello.txt").unwrap(),
        b"hello from a plugin\n"
    );
    let listed = runtime
        .browse(&plugin, &setup.tv.vault, &outcome.point, "", false)
        .unwrap();
    assert_eq!(
        listed.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["hello.txt"]
    );
}

#[test]
fn a_recursive_listing_stops_where_a_plugin_would_have_it_walk_forever() {
    let setup = setup();
    let runtime = runtime();
    let minimal = runtime.load(&fixture("minimal")).unwrap();
    let outcome = runtime
        .capture(&minimal, &setup.tv.vault, &job(&setup, vec![]), &NoProgress)
        .unwrap();
    let malformed = runtime.load(&fixture("malformed")).unwrap();
    let browse = |path: &str| {
        runtime
            .browse(&malformed, &setup.tv.vault, &outcome.point, path, true)
            .unwrap_err()
            .to_string()
    };
    // Deeper and deeper: stopped at the depth limit.
    let err = browse("deep");
    assert!(err.contains("more than 4096 directories deep"), "{err}");
    // A directory that holds itself: refused at once.
    let err = browse("");
    assert!(
        err.contains("listing \"loop\" returned \"loop\", which is not directly inside it"),
        "{err}"
    );
    // One level is still listed as the plugin says.
    let top = runtime
        .browse(&malformed, &setup.tv.vault, &outcome.point, "", false)
        .unwrap();
    assert_eq!(top.len(), 2);
}

#[test]
fn garbage_instead_of_a_plugin_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.wasm");
    std::fs::write(&path, b"\0asm junk").unwrap();
    let err = runtime().load(&path.display().to_string()).unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidPlugin { .. }), "{err}");
    assert!(err.to_string().contains("junk.wasm"));
    let err = runtime().load("no-such-plugin").unwrap_err();
    assert!(err.to_string().contains("file-share"), "{err}");
}
