//! Fixtures shared by tessera's end-to-end tests: vaults in temporary directories, a
//! backend that fails or stops after a number of writes, a manual clock and
//! deterministic test data.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use tessera_vault::backend::ObjectInfo;
use tessera_vault::chunker::Chunking;
use tessera_vault::commands::backup::{Backup, BackupOptions, CommitOptions};
use tessera_vault::{
    Backend, BackendError, Clock, Credential, Encryption, Entry, EntryKind, FileKind, InitOptions,
    KdfParams, LocalBackend, OpenOptions, PluginRef, Point, PointId, Vault,
};

/// The password of test vaults.
pub const PASSWORD: &str = "test password";

/// Argon2id parameters cheap enough for tests.
pub fn cheap_kdf() -> KdfParams {
    KdfParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    }
}

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct ManualClock {
    seconds: AtomicI64,
}

impl ManualClock {
    /// A clock at a fixed date.
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock {
            seconds: AtomicI64::new(1_800_000_000),
        })
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: jiff::SignedDuration) {
        self.seconds.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(self.seconds.load(Ordering::SeqCst)).expect("valid time")
    }
}

/// A vault in a temporary directory.
pub struct TestVault {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The vault.
    pub vault: Vault,
    /// Its clock.
    pub clock: Arc<ManualClock>,
}

impl TestVault {
    /// A new encrypted vault.
    pub fn encrypted() -> Self {
        Self::with(Encryption::Credential(Credential::password(PASSWORD)))
    }

    /// A new unencrypted vault.
    pub fn plain() -> Self {
        Self::with(Encryption::None)
    }

    fn with(encryption: Encryption) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new();
        let mut options = InitOptions::new(encryption);
        options.kdf = cheap_kdf();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("vault")));
        let vault = Vault::init(backend, options, clock.clone()).expect("init vault");
        TestVault { dir, vault, clock }
    }

    /// The vault's directory.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("vault")
    }

    /// Opens another handle on the same vault (as another process would).
    pub fn reopen(&self) -> Vault {
        self.open_with(Arc::new(LocalBackend::new(self.path())))
    }

    /// Opens the vault through another backend (for fault injection).
    pub fn open_with(&self, backend: Arc<dyn Backend>) -> Vault {
        let mut options = OpenOptions::new(Some(Credential::password(PASSWORD)));
        options.clock = self.clock.clone();
        Vault::open(backend, options).expect("open vault")
    }
}

/// Deterministic pseudo-random bytes (splitmix64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Options for a test backup of `item`.
pub fn options(item: &str) -> BackupOptions {
    BackupOptions::new(
        item,
        PluginRef {
            name: "test".into(),
            version: "1".into(),
        },
    )
}

/// Backs up `files` (path, bytes) as one point; returns its id.
pub fn backup_files(
    vault: &Vault,
    mut opts: BackupOptions,
    files: &[(&str, &[u8])],
    chunking: Chunking,
) -> tessera_vault::Result<(PointId, Point)> {
    opts.pack_size = opts.pack_size.min(1 << 20);
    let mut backup = Backup::start(vault, opts)?;
    for (path, data) in files {
        let mut stream = backup.stream(chunking)?;
        for piece in data.chunks(100_000) {
            stream.write(piece)?;
        }
        let result = stream.finish()?;
        let mut entry = Entry::new("", EntryKind::File);
        entry.meta.size = data.len() as u64;
        entry.content = result.content;
        backup.add_entry(path, entry)?;
    }
    backup.commit(CommitOptions::default())
}

/// Reads the content at `path` of a point.
pub fn read_file(vault: &Vault, point: &Point, path: &str) -> tessera_vault::Result<Vec<u8>> {
    let entry = vault.find_entry(point, path)?;
    let mut out = Vec::new();
    vault.content_reader(&entry.content).copy_to(&mut out)?;
    Ok(out)
}

/// The default content-defined chunking of a vault, with small chunks so tests make
/// many of them.
pub fn small_cdc() -> Chunking {
    Chunking::ContentDefined(tessera_vault::CdcParams {
        min_size: 16 * 1024,
        avg_size: 64 * 1024,
        max_size: 256 * 1024,
    })
}

/// What a [`FaultyBackend`] does once its budget of writes is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every later write and delete fails, as if the process died or the disk vanished.
    Stop,
    /// Only the one write fails.
    FailOnce,
}

/// A backend that fails after a number of writes.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: LocalBackend,
    writes: AtomicUsize,
    fail_at: AtomicUsize,
    fault: Fault,
    pack_lists: AtomicUsize,
}

impl FaultyBackend {
    /// Fails the `fail_at`-th write (1-based) and, with [`Fault::Stop`], all after it.
    pub fn new(root: impl Into<std::path::PathBuf>, fail_at: usize, fault: Fault) -> Self {
        FaultyBackend {
            inner: LocalBackend::new(root),
            writes: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(fail_at),
            fault,
            pack_lists: AtomicUsize::new(0),
        }
    }

    /// Listings of the packs so far.
    pub fn pack_lists(&self) -> usize {
        self.pack_lists.load(Ordering::SeqCst)
    }

    /// Writes attempted so far.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// From now on every write fails, as if the machine lost power.
    pub fn stop_now(&self) {
        self.fail_at
            .store(self.writes.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    }

    fn should_fail(&self, n: usize) -> bool {
        let fail_at = self.fail_at.load(Ordering::SeqCst);
        match self.fault {
            Fault::Stop => n >= fail_at,
            Fault::FailOnce => n == fail_at,
        }
    }

    fn injected(what: &str) -> BackendError {
        BackendError::Io {
            op: "write",
            path: what.to_string(),
            source: std::io::Error::other("injected fault"),
        }
    }
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<(), BackendError> {
        self.inner.create()
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.should_fail(n) {
            return Err(Self::injected(name));
        }
        self.inner.write(kind, name, data)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, BackendError> {
        self.inner.read(kind, name)
    }
    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        self.inner.read_range(kind, name, offset, len)
    }
    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>, BackendError> {
        if kind == FileKind::Pack {
            self.pack_lists.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.list(kind)
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<(), BackendError> {
        if self.fault == Fault::Stop
            && self.writes.load(Ordering::SeqCst) >= self.fail_at.load(Ordering::SeqCst)
        {
            return Err(Self::injected(name));
        }
        self.inner.remove(kind, name)
    }
}

/// The data `tessera-test-writer` backs up as item `seed-N`.
pub fn writer_data(seed: u64) -> Vec<u8> {
    random_bytes(1000 + seed, 6 << 20)
}

/// The `tessera` binary built alongside the tests (`cargo test --workspace` builds it).
pub fn tessera_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test> -> target/<profile>/tessera
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("tests run from target/<profile>/deps");
    let bin = dir.join("tessera");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p tessera-cli`",
        bin.display()
    );
    bin
}

/// A temporary directory holding an initialised vault (`vault`) and an empty directory to
/// back up (`source`), for tests that drive the `tessera` binary; removed when dropped.
pub struct CliEnv {
    _dir: tempfile::TempDir,
    /// The temporary directory.
    pub root: std::path::PathBuf,
    /// The vault, made with `tessera vault init`.
    pub vault: std::path::PathBuf,
    /// An empty directory for the test to fill.
    pub source: std::path::PathBuf,
}

impl CliEnv {
    /// Makes the directory, the vault and the source directory.
    pub fn new() -> CliEnv {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let vault = root.join("vault");
        let source = root.join("source");
        std::fs::create_dir(&source).unwrap();
        run_ok(tessera(&vault).args(["vault", "init"]));
        CliEnv {
            _dir: dir,
            root,
            vault,
            source,
        }
    }
}

impl Default for CliEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// A `tessera` command against `vault`, with the test password and quiet logs.
pub fn tessera(vault: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(tessera_binary());
    command
        .arg("--vault")
        .arg(vault)
        .env("TESSERA_PASSWORD", PASSWORD)
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("tessera-test-cache"),
        )
        .env_remove("TESSERA_VAULT")
        .env_remove("TESSERA_LOG");
    command
}

/// A vault mounted by `tessera mount`, unmounted (by SIGTERM to the command, as a
/// service manager stops it) when dropped.
pub struct Mounted {
    child: std::process::Child,
    /// The mount point.
    pub path: std::path::PathBuf,
}

impl Mounted {
    /// Mounts `vault` on `path` (created if missing) and waits until it serves.
    pub fn new(vault: &std::path::Path, path: &std::path::Path) -> Mounted {
        std::fs::create_dir_all(path).unwrap();
        let child = tessera(vault)
            .arg("mount")
            .arg(path)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tessera mount starts");
        let mut mounted = Mounted {
            child,
            path: path.to_path_buf(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !path.join("ids").is_dir() {
            if let Some(status) = mounted.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                if let Some(stderr) = mounted.child.stderr.as_mut() {
                    stderr.read_to_string(&mut err).unwrap();
                }
                panic!("tessera mount ended ({status}): {err}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the mount never came up"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        mounted
    }

    /// Stops the command as a service manager would and returns its exit status once
    /// the file system is gone.
    pub fn unmount(mut self) -> std::process::ExitStatus {
        self.stop()
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(status) = self.child.try_wait().unwrap() {
            return status;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.child.wait().unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a command, failing the test with its output if it fails; returns stdout.
pub fn run_ok(command: &mut std::process::Command) -> String {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("output is UTF-8")
}

/// Checks the vault in full (structure and every byte) and fails the test with the
/// problems found, if any.
pub fn assert_sound(vault: &Vault) {
    let options = tessera_vault::commands::check::CheckOptions {
        read_data: true,
        ..Default::default()
    };
    let report = tessera_vault::commands::check::check(vault, options).expect("check runs");
    assert!(
        report.is_ok(),
        "the vault is damaged: {:#?}",
        report.problems
    );
}
