//! Errors of the plugin runtime.

use std::path::PathBuf;

/// Everything that can go wrong running a plugin, naming the plugin and the cause.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The WebAssembly engine could not be set up.
    #[error("cannot start the plugin engine: {0}")]
    Engine(String),
    /// A plugin file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    ReadPlugin {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No builtin plugin has that name.
    #[error(
        "no plugin named '{name}' (builtin plugins: {known}); give a path to a .wasm file to load another"
    )]
    UnknownPlugin {
        /// The name asked for.
        name: String,
        /// The builtin names.
        known: String,
    },
    /// The component is not a valid tessera plugin.
    #[error("{what} is not a valid tessera plugin: {detail}")]
    InvalidPlugin {
        /// The plugin file or name.
        what: String,
        /// Why.
        detail: String,
    },
    /// The plugin needs a capability the job does not grant.
    #[error("plugin '{plugin}' {detail}")]
    Capability {
        /// The plugin.
        plugin: String,
        /// What is missing.
        detail: String,
    },
    /// The plugin reported a failure.
    #[error("plugin '{plugin}' failed: {message}")]
    Plugin {
        /// The plugin.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// The plugin was stopped: a limit was exceeded, or it crashed.
    #[error("plugin '{plugin}' was stopped: {reason}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// What happened.
        reason: String,
    },
    /// The operator cancelled the job.
    #[error("cancelled")]
    Cancelled,
    /// A setting is unknown, missing or malformed.
    #[error("plugin '{plugin}': {detail}")]
    Settings {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        detail: String,
    },
    /// A grant (source or target directory) cannot be used.
    #[error("cannot use {what} {path}: {detail}")]
    Grant {
        /// "source" or "target".
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Restored files could not be written.
    #[error("cannot write into the target: {}", failures.join("; "))]
    Write {
        /// What failed, a message per file.
        failures: Vec<String>,
    },
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] tessera_vault::Error),
}

/// Result with [`RuntimeError`].
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
