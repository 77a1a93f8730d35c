//! The runtime: one engine and linker, a pre-instantiated component per plugin, and a
//! fresh sandboxed store per job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_vault::commands::backup::{Backup, BackupOptions, CommitOptions};
use tessera_vault::{Consistency, PluginRef, Point, PointId, Vault};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use crate::bindings::{self, PluginPre, types};
use crate::component_cache::ComponentCache;
use crate::error::{Result, RuntimeError};
use crate::grant::Access;
use crate::hooks::{HookPhase, Hooks, run_hook};
use crate::sandbox::{CapturePlan, CaptureSource, RestoreTarget, Sandbox};
use crate::state::{CaptureState, JobState, Phase, ProgressUpdate, ReadState};

/// The contract version this host implements.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// Where a capture's source directory appears inside the sandbox.
pub const SOURCE_MOUNT: &str = "source";
/// Where a restore's target directory appears inside the sandbox.
pub const TARGET_MOUNT: &str = "target";
/// How often the engine's epoch advances; the granularity of the CPU limit.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Options of [`Runtime::new`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled components are cached (uncompressed, mapped on load, in a
    /// directory per engine configuration); no cache when `None`.
    pub cache_dir: Option<PathBuf>,
    /// Most linear memory one job may use, in bytes.
    pub memory_limit: usize,
    /// Longest a plugin may compute without calling the host before it is stopped.
    pub cpu_limit: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: None,
            memory_limit: 1 << 30,
            cpu_limit: Duration::from_secs(60),
        }
    }
}

/// What a plugin says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Workload kind: vm-disk, file-share, sql-database, app-service, other.
    pub workload: String,
    /// Contract version it was built against.
    pub contract: String,
    /// Capabilities it needs.
    pub capabilities: Vec<String>,
    /// Settings it accepts.
    pub settings: Vec<SettingSpec>,
    /// What it does.
    pub description: String,
}

/// A setting a plugin accepts.
#[derive(Debug, Clone, Serialize)]
pub struct SettingSpec {
    /// Name.
    pub name: String,
    /// Value type.
    pub kind: String,
    /// What it does.
    pub description: String,
    /// Whether it must be given.
    pub required: bool,
    /// Its default value.
    pub default: Option<String>,
}

/// A loaded plugin, ready to instantiate.
pub struct Plugin {
    info: PluginInfo,
    pre: PluginPre<JobState>,
    needs: Vec<types::Capability>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.info.name)
            .finish()
    }
}

impl Plugin {
    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }
}

/// A capture job.
#[derive(Debug, Clone)]
pub struct CaptureJob {
    /// The protected item's name.
    pub item: String,
    /// What to capture, in order; granted read-only (see [`CaptureSource`]).
    pub sources: Vec<CaptureSource>,
    /// More directories granted read-only (where a disk image's backing files live).
    pub grants: Vec<PathBuf>,
    /// Settings for the plugin.
    pub settings: Vec<(String, String)>,
    /// Settings whose values are host files (a configuration document): granted
    /// read-only, and passed as the files' sandbox paths.
    pub file_settings: Vec<(String, PathBuf)>,
    /// The point to capture incrementally from.
    pub parent: Option<PointId>,
    /// Operator tags.
    pub tags: Vec<String>,
    /// Commands to run before and after the capture.
    pub hooks: Option<Hooks>,
    /// The zstd level of this backup's chunks (0 stores them raw); the vault's own when
    /// `None`.
    pub compression_level: Option<i32>,
}

impl CaptureJob {
    /// A capture of one directory tree.
    pub fn directory(item: impl Into<String>, source: impl Into<PathBuf>) -> Self {
        CaptureJob {
            item: item.into(),
            sources: vec![CaptureSource::Directory(source.into())],
            grants: Vec::new(),
            settings: Vec::new(),
            file_settings: Vec::new(),
            parent: None,
            tags: Vec::new(),
            hooks: None,
            compression_level: None,
        }
    }
}

/// The result of a capture.
#[derive(Debug, Clone)]
pub struct CaptureOutcome {
    /// The new point.
    pub point: PointId,
    /// Its record.
    pub record: Point,
    /// How long the job took.
    pub duration: Duration,
}

/// A restore job.
#[derive(Debug, Clone)]
pub struct RestoreJob {
    /// Where to write: a directory granted read-write, or an address.
    pub target: RestoreTarget,
    /// Paths of the point to restore; empty for all.
    pub paths: Vec<String>,
    /// Settings for the plugin.
    pub settings: Vec<(String, String)>,
}

/// The result of a restore.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// Entries written.
    pub entries: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Metadata that could not be applied.
    pub warnings: Vec<String>,
    /// How long the job took.
    pub duration: Duration,
}

/// An entry as browsing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BrowseEntry {
    /// Path in the point.
    pub path: String,
    /// Kind, as a short word.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Mode bits.
    pub mode: Option<u32>,
    /// Modification time in ns.
    pub mtime_ns: Option<i64>,
    /// Symlink or hardlink target.
    pub target: Option<String>,
}

/// Receives a job's progress; asked whether the operator cancelled.
pub trait Progress: Send + Sync {
    /// Progress so far; totals are 0 when unknown.
    fn update(&self, done_bytes: u64, total_bytes: u64, done_items: u64, total_items: u64);
    /// Whether to stop.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _: u64, _: u64, _: u64, _: u64) {}
}

/// The plugin runtime.
pub struct Runtime {
    engine: Engine,
    linker: Linker<JobState>,
    /// Compiled components on disk, when `options.cache_dir` names a place for them.
    cache: Option<ComponentCache>,
    options: RuntimeOptions,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("options", &self.options)
            .finish()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn engine_error(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Engine(e.to_string())
}

impl Runtime {
    /// Sets up the engine, the on-disk cache of compiled components and the linker.
    pub fn new(options: RuntimeOptions) -> Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(engine_error)?;
        let cache = options
            .cache_dir
            .as_deref()
            .map(|dir| ComponentCache::new(dir, &engine));
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        bindings::Plugin::add_to_linker::<JobState, HasSelf<JobState>>(&mut linker, |s| s)
            .map_err(engine_error)?;
        crate::sink::add_to_linker(&mut linker).map_err(engine_error)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        let ticking = engine.weak();
        std::thread::Builder::new()
            .name("tessera-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticking.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(engine_error)?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            options,
            ticker_stop,
        })
    }

    /// Names of the plugins embedded in this build.
    pub fn builtin_names(&self) -> Vec<&'static str> {
        crate::builtin::PLUGINS
            .iter()
            .map(|plugin| plugin.name)
            .collect()
    }

    /// Loads a builtin plugin by name, or a component from a `.wasm` file.
    pub fn load(&self, spec: &str) -> Result<Plugin> {
        if spec.ends_with(".wasm") || spec.contains('/') {
            let path = Path::new(spec);
            let bytes = std::fs::read(path).map_err(|source| RuntimeError::ReadPlugin {
                path: path.to_path_buf(),
                source,
            })?;
            return self.load_bytes(&path.display().to_string(), &bytes);
        }
        let builtin = crate::builtin::PLUGINS
            .iter()
            .find(|plugin| plugin.name == spec)
            .ok_or_else(|| RuntimeError::UnknownPlugin {
                name: spec.to_string(),
                known: self.builtin_names().join(", "),
            })?;
        self.load_component(spec, builtin.bytes, Some(&builtin.digest))
    }

    /// Loads a plugin from component bytes; `what` names it in errors.
    pub fn load_bytes(&self, what: &str, bytes: &[u8]) -> Result<Plugin> {
        self.load_component(what, bytes, None)
    }

    /// Loads a plugin from component bytes, whose SHA-256 is `digest` when known.
    fn load_component(
        &self,
        what: &str,
        bytes: &[u8],
        digest: Option<&[u8; 32]>,
    ) -> Result<Plugin> {
        let invalid = |detail: String| RuntimeError::InvalidPlugin {
            what: what.to_string(),
            detail,
        };
        let component = match (&self.cache, digest) {
            (Some(cache), Some(digest)) => cache.load_hashed(&self.engine, bytes, digest),
            (Some(cache), None) => cache.load(&self.engine, bytes),
            (None, _) => Component::new(&self.engine, bytes),
        }
        .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = PluginPre::new(pre).map_err(|e| invalid(format!("{e:#}")))?;
        let mut store = self.store(JobState::new(
            what.to_string(),
            WasiCtxBuilder::new().build(),
            self.limits(),
            None,
            Phase::Describe,
        ));
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let raw = instance
            .tessera_plugin_describe()
            .call_describe(&mut store)
            .map_err(|e| trap(what, &e, &self.options))?;
        let major = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
        if major(&raw.contract) != major(CONTRACT_VERSION) {
            return Err(invalid(format!(
                "it was built for contract {}, this host implements {CONTRACT_VERSION}",
                raw.contract
            )));
        }
        if raw.name.is_empty() || raw.name.len() > 64 {
            return Err(invalid("its name is empty or longer than 64 bytes".into()));
        }
        let info = PluginInfo {
            name: raw.name.clone(),
            version: raw.version.clone(),
            workload: workload_word(raw.workload).to_string(),
            contract: raw.contract.clone(),
            capabilities: raw
                .capabilities
                .iter()
                .map(capability_word)
                .map(String::from)
                .collect(),
            settings: raw
                .settings
                .iter()
                .map(|s| SettingSpec {
                    name: s.name.clone(),
                    kind: setting_kind_word(s.kind).to_string(),
                    description: s.description.clone(),
                    required: s.required,
                    default: s.default.clone(),
                })
                .collect(),
            description: raw.description.clone(),
        };
        Ok(Plugin {
            info,
            pre,
            needs: raw.capabilities,
        })
    }

    fn limits(&self) -> wasmtime::StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.options.memory_limit)
            .instances(64)
            .tables(64)
            .memories(16)
            .table_elements(1 << 20)
            .build()
    }

    fn store(&self, state: JobState) -> Store<JobState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (self.options.cpu_limit.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        let cpu_limit = self.options.cpu_limit;
        store.set_epoch_deadline(ticks);
        // A plugin that keeps calling the host is making progress; one that computes for the
        // whole limit without a call is a runaway and is stopped.
        store.epoch_deadline_callback(move |ctx| {
            if ctx.data().last_host_call.elapsed() < cpu_limit {
                Ok(UpdateDeadline::Continue(ticks))
            } else {
                Ok(UpdateDeadline::Interrupt)
            }
        });
        store
    }

    fn check_settings(&self, plugin: &Plugin, settings: &[(String, String)]) -> Result<()> {
        let bad = |detail: String| RuntimeError::Settings {
            plugin: plugin.info.name.clone(),
            detail,
        };
        for (name, _) in settings {
            if !plugin.info.settings.iter().any(|s| s.name == *name) {
                let known: Vec<&str> = plugin
                    .info
                    .settings
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                return Err(bad(format!(
                    "unknown setting '{name}' (it accepts: {})",
                    known.join(", ")
                )));
            }
        }
        for spec in plugin.info.settings.iter().filter(|s| s.required) {
            if !settings.iter().any(|(n, _)| *n == spec.name) && spec.default.is_none() {
                return Err(bad(format!(
                    "the setting '{}' is required: {}",
                    spec.name, spec.description
                )));
            }
        }
        Ok(())
    }

    fn require(&self, plugin: &Plugin, capability: types::Capability, what: &str) -> Result<()> {
        let has = plugin
            .needs
            .iter()
            .any(|c| std::mem::discriminant(c) == std::mem::discriminant(&capability));
        if !has {
            return Err(RuntimeError::Capability {
                plugin: plugin.info.name.clone(),
                detail: format!("does not declare the capability to {what}"),
            });
        }
        Ok(())
    }

    /// Runs `job` on a fresh store in a worker thread while this thread relays progress
    /// and cancellation.
    fn run<R: Send>(
        &self,
        mut state: JobState,
        progress: &dyn Progress,
        job: impl FnOnce(&mut Store<JobState>) -> R + Send,
    ) -> (R, Store<JobState>) {
        let (tx, rx) = crossbeam_channel::bounded::<ProgressUpdate>(64);
        state.progress = Some(tx);
        let cancel = state.cancel.clone();
        let mut store = self.store(state);
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                let result = job(&mut store);
                store.data_mut().progress = None;
                (result, store)
            });
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(update) => progress.update(
                        update.done_bytes,
                        update.total_bytes,
                        update.done_items,
                        update.total_items,
                    ),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
                if progress.cancelled() {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Captures an item with a plugin into a new recovery point.
    pub fn capture(
        &self,
        plugin: &Plugin,
        vault: &Vault,
        job: &CaptureJob,
        progress: &dyn Progress,
    ) -> Result<CaptureOutcome> {
        let started = Instant::now();
        self.require(plugin, types::Capability::ReadSource, "read a source")?;
        let CapturePlan {
            sandbox,
            sources,
            settings: file_settings,
        } = Sandbox::for_capture(&job.sources, &job.grants, &job.file_settings, SOURCE_MOUNT)?;
        let mut settings = job.settings.clone();
        settings.extend(file_settings);
        self.check_settings(plugin, &settings)?;
        if !sandbox.network.is_empty() {
            self.require(
                plugin,
                types::Capability::TcpConnect,
                "connect to a network source",
            )?;
        }
        let grant = sandbox.grant(Access::Read, "source")?;
        let wasi = sandbox.wasi(Access::Read, "source")?.build();
        let mut options = BackupOptions::new(
            job.item.clone(),
            PluginRef {
                name: plugin.info.name.clone(),
                version: plugin.info.version.clone(),
            },
        );
        // A parent with missing data cannot be trusted for carrying anything forward:
        // without it the plugin reads everything again.
        let mut warnings = Vec::new();
        options.parent = match job.parent {
            Some(parent) => match parent_problem(vault, &parent) {
                None => Some(parent),
                Some(problem) => {
                    let warning = format!(
                        "the previous point {} is damaged ({problem}); everything was read again",
                        parent.short()
                    );
                    tracing::warn!("{warning}");
                    warnings.push(warning);
                    None
                }
            },
            None => None,
        };
        options.tags = job.tags.clone();
        options.host = hostname();
        options.compression_level = job.compression_level;
        let hooks = job.hooks.clone().unwrap_or_default();
        let pre_hook = hooks
            .pre
            .as_deref()
            .map(|command| run_hook(command, HookPhase::Pre, &job.item, hooks.timeout));
        let run_post = || {
            hooks.post.as_deref().and_then(|command| {
                run_hook(command, HookPhase::Post, &job.item, hooks.timeout).err()
            })
        };
        let backup = match Backup::start(vault, options) {
            Ok(backup) => backup,
            Err(e) => {
                run_post();
                return Err(e.into());
            }
        };
        let has_parent = backup.has_parent();
        let mut state = JobState::new(
            plugin.info.name.clone(),
            wasi,
            self.limits(),
            grant,
            Phase::Capture(Box::new(CaptureState {
                backup,
                commit: CommitOptions::default(),
            })),
        );
        state.network = sandbox.network.clone();
        let request = bindings::capture::CaptureRequest {
            item: job.item.clone(),
            settings,
            sources,
            // The directories only: a granted device is a source, not a place to look for
            // backing files.
            mounts: sandbox
                .directories()
                .map(|(host, sandbox)| bindings::capture::Mount {
                    host: host.to_string_lossy().into_owned(),
                    sandbox: sandbox.to_string(),
                })
                .collect(),
            has_parent,
        };
        let pre = plugin.pre.clone();
        let (result, mut store) = self.run(state, progress, move |store| {
            let instance = pre.instantiate(&mut *store)?;
            instance
                .tessera_plugin_capture()
                .call_capture(&mut *store, &request)
        });
        let cancelled = store.data().is_cancelled();
        let phase = std::mem::replace(&mut store.data_mut().phase, Phase::Describe);
        // Open streams hold the backup's worker channels; they go before the commit.
        drop(store);
        let Phase::Capture(state) = phase else {
            unreachable!("capture jobs stay in the capture phase")
        };
        let CaptureState { backup, mut commit } = *state;
        let post_failure = run_post();
        commit.warnings.extend(warnings);
        match pre_hook {
            // The operator's commands made the data application-consistent.
            Some(Ok(())) => {
                commit.consistency = Consistency::Application;
                commit.consistency_reason = None;
            }
            Some(Err(reason)) => {
                tracing::warn!(item = %job.item, "{reason}");
                commit.consistency = Consistency::Crash;
                commit.consistency_reason = Some(reason.clone());
                commit.warnings.push(reason);
            }
            None => {}
        }
        if let Some(reason) = post_failure {
            tracing::warn!(item = %job.item, "{reason}");
            commit.warnings.push(reason);
        }
        match result {
            Ok(Ok(_summary)) => {
                let (point, record) = backup.commit(commit)?;
                Ok(CaptureOutcome {
                    point,
                    record,
                    duration: started.elapsed(),
                })
            }
            Ok(Err(error)) => {
                backup.abort();
                if cancelled || matches!(error, types::PluginError::Cancelled) {
                    return Err(RuntimeError::Cancelled);
                }
                Err(RuntimeError::Plugin {
                    plugin: plugin.info.name.clone(),
                    message: plugin_error_message(&error),
                })
            }
            Err(e) => {
                backup.abort();
                Err(trap(&plugin.info.name, &e, &self.options))
            }
        }
    }

    /// Restores (part of) a point with a plugin into a target directory.
    pub fn restore(
        &self,
        plugin: &Plugin,
        vault: &Vault,
        point: &PointId,
        job: &RestoreJob,
        progress: &dyn Progress,
    ) -> Result<RestoreOutcome> {
        let started = Instant::now();
        self.require(
            plugin,
            types::Capability::WriteTarget,
            "write a restore target",
        )?;
        self.check_settings(plugin, &job.settings)?;
        let record = vault.load_point(point)?;
        for path in &job.paths {
            check_selected(vault, &record, path)?;
        }
        if let RestoreTarget::Directory(dir) = &job.target {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::Grant {
                what: "target",
                path: dir.clone(),
                detail: e.to_string(),
            })?;
        }
        let (sandbox, target) = Sandbox::for_restore(&job.target, TARGET_MOUNT)?;
        if !sandbox.network.is_empty() {
            self.require(
                plugin,
                types::Capability::TcpConnect,
                "connect to a network target",
            )?;
        }
        let grant = sandbox.grant(Access::ReadWrite, "target")?;
        let wasi = sandbox.wasi(Access::ReadWrite, "target")?.build();
        let mut state = JobState::new(
            plugin.info.name.clone(),
            wasi,
            self.limits(),
            grant,
            Phase::Read(Box::new(ReadState {
                vault: vault.clone(),
                point: record,
            })),
        );
        state.network = sandbox.network.clone();
        let request = bindings::restore::RestoreRequest {
            settings: job.settings.clone(),
            paths: job.paths.clone(),
            target,
        };
        let pre = plugin.pre.clone();
        let (result, mut store) = self.run(state, progress, move |store| {
            let instance = pre.instantiate(&mut *store)?;
            instance
                .tessera_plugin_restore()
                .call_restore(&mut *store, &request)
        });
        let cancelled = store.data().is_cancelled();
        // Files the host was still writing for the plugin are part of the restore.
        let (failures, late_warnings) = store
            .data_mut()
            .writes
            .take()
            .map(|pool| pool.finish())
            .unwrap_or_default();
        match result {
            Ok(Ok(_)) if !failures.is_empty() => Err(RuntimeError::Write { failures }),
            Ok(Ok(summary)) => Ok(RestoreOutcome {
                entries: summary.entries,
                bytes_written: summary.bytes_written,
                warnings: summary.warnings.into_iter().chain(late_warnings).collect(),
                duration: started.elapsed(),
            }),
            Ok(Err(_)) if cancelled => Err(RuntimeError::Cancelled),
            Ok(Err(error)) => Err(RuntimeError::Plugin {
                plugin: plugin.info.name.clone(),
                message: plugin_error_message(&error),
            }),
            Err(e) => Err(trap(&plugin.info.name, &e, &self.options)),
        }
    }

    /// Lists the entries below `path` of a point as the plugin sees them: those directly
    /// below it, or with `recursive` everything below it, each directory followed by
    /// what it holds. A recursive listing asks one instance of the plugin for every
    /// directory, and refuses a listing whose entries are not directly inside the
    /// directory listed (a plugin that would have it walk in circles).
    pub fn browse(
        &self,
        plugin: &Plugin,
        vault: &Vault,
        point: &PointId,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<BrowseEntry>> {
        let record = vault.load_point(point)?;
        let state = JobState::new(
            plugin.info.name.clone(),
            WasiCtxBuilder::new().build(),
            self.limits(),
            None,
            Phase::Read(Box::new(ReadState {
                vault: vault.clone(),
                point: record,
            })),
        );
        let pre = plugin.pre.clone();
        let path = path.trim_matches('/').to_string();
        let (result, _store) = self.run(state, &NoProgress, move |store| {
            let instance = pre.instantiate(&mut *store)?;
            let browse = instance.tessera_plugin_browse();
            let mut listed = Vec::new();
            let top = match browse.call_children(&mut *store, &path)? {
                Ok(entries) => entries,
                Err(error) => return Ok(Err(error)),
            };
            if !recursive {
                return Ok(Ok(top));
            }
            // Directories being listed, each with its entries not yet visited.
            let mut stack = vec![(path, top.into_iter())];
            while let Some((dir, entries)) = stack.last_mut() {
                let Some(entry) = entries.next() else {
                    stack.pop();
                    continue;
                };
                if !is_child_of(&entry.path, dir) {
                    return Ok(Err(types::PluginError::CorruptSource(format!(
                        "listing {dir:?} returned {:?}, which is not directly inside it",
                        entry.path
                    ))));
                }
                if matches!(entry.kind, types::EntryKind::Directory) {
                    if stack.len() >= MAX_BROWSE_DEPTH {
                        return Ok(Err(types::PluginError::CorruptSource(format!(
                            "{:?} is more than {MAX_BROWSE_DEPTH} directories deep",
                            entry.path
                        ))));
                    }
                    let below = match browse.call_children(&mut *store, &entry.path)? {
                        Ok(below) => below,
                        Err(error) => return Ok(Err(error)),
                    };
                    let dir = entry.path.clone();
                    listed.push(entry);
                    stack.push((dir, below.into_iter()));
                } else {
                    listed.push(entry);
                }
            }
            Ok(Ok(listed))
        });
        match result {
            Ok(Ok(entries)) => Ok(entries.into_iter().map(browse_entry).collect()),
            Ok(Err(error)) => Err(RuntimeError::Plugin {
                plugin: plugin.info.name.clone(),
                message: plugin_error_message(&error),
            }),
            Err(e) => Err(trap(&plugin.info.name, &e, &self.options)),
        }
    }
}

/// Deepest directory a recursive listing goes into.
const MAX_BROWSE_DEPTH: usize = 4096;

/// Whether the point path `path` is directly inside the directory `dir` (`""`: the root).
fn is_child_of(path: &str, dir: &str) -> bool {
    let name = if dir.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(dir)
            .and_then(|rest| rest.strip_prefix('/'))
    };
    name.is_some_and(|name| !name.is_empty() && !name.contains('/') && name != "." && name != "..")
}

fn browse_entry(e: types::EntryInfo) -> BrowseEntry {
    let kind = crate::convert::kind_to_vault(&e.kind);
    let target = match &e.kind {
        types::EntryKind::Symlink(t) | types::EntryKind::Hardlink(t) => Some(t.clone()),
        _ => None,
    };
    BrowseEntry {
        path: e.path,
        kind: crate::convert::kind_word(&kind).to_string(),
        size: e.meta.size,
        mode: e.meta.mode,
        mtime_ns: e.meta.mtime_ns,
        target,
    }
}

/// Turns a trap into a message naming the limit that stopped the plugin.
fn trap(plugin: &str, e: &wasmtime::Error, options: &RuntimeOptions) -> RuntimeError {
    let reason = match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!(
            "it computed for more than {:?} without calling the host (CPU limit)",
            options.cpu_limit
        ),
        Some(wasmtime::Trap::StackOverflow) => "it overflowed its stack".to_string(),
        Some(other) => format!("it crashed: {other}"),
        None => {
            let text = format!("{e:#}");
            if text.contains("memory")
                && (text.contains("limit") || text.contains("grow") || text.contains("allocat"))
            {
                format!(
                    "it exceeded the memory limit of {} MiB ({text})",
                    options.memory_limit >> 20
                )
            } else {
                text
            }
        }
    };
    let reason = if reason.contains("unreachable") {
        format!(
            "{reason} (a plugin aborts this way when it panics or runs out of memory; the memory limit is {} MiB)",
            options.memory_limit >> 20
        )
    } else {
        reason
    };
    RuntimeError::Trap {
        plugin: plugin.to_string(),
        reason,
    }
}

fn plugin_error_message(e: &types::PluginError) -> String {
    match e {
        types::PluginError::InvalidSettings(m) => format!("invalid settings: {m}"),
        types::PluginError::SourceUnavailable(m) => format!("source unavailable: {m}"),
        types::PluginError::Unsupported(m) => format!("unsupported: {m}"),
        types::PluginError::CorruptSource(m) => format!("corrupt source: {m}"),
        types::PluginError::Io(m) => format!("I/O error: {m}"),
        types::PluginError::Cancelled => "cancelled".to_string(),
        types::PluginError::Internal(m) => format!("internal error: {m}"),
    }
}

fn workload_word(w: types::WorkloadKind) -> &'static str {
    match w {
        types::WorkloadKind::VmDisk => "vm-disk",
        types::WorkloadKind::FileShare => "file-share",
        types::WorkloadKind::SqlDatabase => "sql-database",
        types::WorkloadKind::AppService => "app-service",
        types::WorkloadKind::Other => "other",
    }
}

fn capability_word(c: &types::Capability) -> &'static str {
    match c {
        types::Capability::ReadSource => "read-source",
        types::Capability::WriteTarget => "write-target",
        types::Capability::TcpConnect => "tcp-connect",
        types::Capability::Hooks => "hooks",
    }
}

fn setting_kind_word(k: types::SettingKind) -> &'static str {
    match k {
        types::SettingKind::Text => "text",
        types::SettingKind::Integer => "integer",
        types::SettingKind::Boolean => "boolean",
        types::SettingKind::Path => "path",
        types::SettingKind::Address => "address",
        types::SettingKind::Duration => "duration",
        types::SettingKind::TextList => "text-list",
    }
}

/// The name of this machine, as points record it.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Whether a path selected for restore exists in the point: an entry of its tree, or a
/// path below a non-directory entry (a file inside a disk image), which only the plugin
/// can resolve.
fn check_selected(vault: &Vault, point: &Point, path: &str) -> Result<()> {
    let trimmed = path.trim_matches('/');
    match vault.find_entry(point, trimmed) {
        Ok(_) => Ok(()),
        Err(not_found) => {
            let mut prefix = trimmed;
            while let Some((parent, _)) = prefix.rsplit_once('/') {
                prefix = parent;
                if let Ok(entry) = vault.find_entry(point, prefix) {
                    if entry.subtree.is_none() {
                        return Ok(());
                    }
                    break;
                }
            }
            Err(not_found.into())
        }
    }
}

/// Why a point cannot serve as a parent, if it cannot: `check` recorded it damaged, or
/// its record is unreadable.
fn parent_problem(vault: &Vault, id: &PointId) -> Option<String> {
    match vault.damage(id) {
        Ok(Some(reason)) => return Some(format!("check found it damaged: {reason}")),
        Ok(None) => {}
        Err(e) => return Some(format!("its damage records cannot be read: {e}")),
    }
    // Chunks the point refers to are checked as its entries are carried forward: one
    // that is missing gets its entry read again instead.
    vault.load_point(id).err().map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::is_child_of;

    #[test]
    fn a_recursive_listing_accepts_only_direct_children() {
        assert!(is_child_of("etc", ""));
        assert!(is_child_of("etc/hosts", "etc"));
        assert!(is_child_of("disk0/part1", "disk0"));
        assert!(!is_child_of("etc", "etc"));
        assert!(!is_child_of("etc/ssl/certs", "etc"));
        assert!(!is_child_of("etcetera", "etc"));
        assert!(!is_child_of("etc/..", "etc"));
        assert!(!is_child_of("", ""));
        assert!(!is_child_of("a/b", ""));
    }
}
