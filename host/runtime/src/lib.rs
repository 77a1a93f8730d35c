//! tessera's plugin runtime: workload plugins as sandboxed WebAssembly components.
//!
//! One [`Runtime`] holds one wasmtime `Engine` and one `Linker`; each plugin is compiled
//! once (and cached on disk, keyed by the component's hash and the engine's settings) and
//! pre-instantiated; every job gets a fresh `Store` with its own sandbox:
//!
//! * **no ambient authority**: the plugin sees only its grant, the source directory
//!   read-only during capture (as `source`) or the target directory during restore (as
//!   `target`), through WASI preopens backed by `cap-std` (a block device source is
//!   granted alone, to host calls only); no environment, arguments,
//!   standard streams or network;
//! * **limits**: linear memory is capped per job, and a plugin that computes for longer
//!   than the CPU limit without calling the host is interrupted (epoch interruption);
//!   host calls are bounded in size (see [`limits`]);
//! * **errors**: a plugin's own failures arrive as the contract's `plugin-error`; a trap
//!   (limit, crash) fails the job with the plugin's name. Either way the backup is
//!   abandoned before its commit point, so the vault is untouched.
//!
//! The host keeps the heavy work: while the plugin produces content, the vault's worker
//! threads chunk, hash, compress and encrypt it.

mod bindings;
mod builtin;
mod component_cache;
mod convert;
mod error;
mod grant;
pub mod hooks;
pub mod limits;
#[cfg(test)]
mod loop_device;
mod net;
mod point;
mod runtime;
mod sandbox;
mod scan_ahead;
mod services;
mod sink;
mod state;
mod writes;

pub use builtin::WASM_DIR as PLUGIN_BUILD_DIR;
pub use convert::kind_word;
pub use error::{Result, RuntimeError};
pub use hooks::Hooks;
pub use runtime::{
    BrowseEntry, CONTRACT_VERSION, CaptureJob, CaptureOutcome, NoProgress, Plugin, PluginInfo,
    Progress, RestoreJob, RestoreOutcome, Runtime, RuntimeOptions, SOURCE_MOUNT, SettingSpec,
    TARGET_MOUNT, hostname,
};
pub use sandbox::{CaptureSource, RestoreTarget};
