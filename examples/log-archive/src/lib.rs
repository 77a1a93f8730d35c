//! The `log-archive` plugin, an example for plugin authors: protects a directory of
//! append-only files (application logs, audit trails, archived WAL segments). Capture
//! walks the granted source directory and stores its regular files and directories with
//! their metadata; restore writes a point, or parts of it, into the granted target; browse
//! lists a point as stored.
//!
//! Files are stored in fixed 1 MiB chunks, which is what lets a later capture keep most
//! of a grown file without reading it. For each file the parent point holds:
//!
//! - size, modification time, change time and inode all equal: the entry is carried
//!   forward whole (`sink::carry-forward`), nothing is read;
//! - same inode and not shorter: the parent's whole chunks are carried
//!   (`content-writer.carry`) and only the bytes after them are read;
//! - anything else (a new inode after rotation, a truncated file, no parent entry): the
//!   file is read in full.
//!
//! **Trust assumption.** The second case assumes that a file which kept its inode and
//! did not shrink was only appended to: the prefix is taken from the parent point without
//! a look at the bytes now on disk. A file rewritten in place and grown would be stored
//! with its old prefix. Set `verify=true` for sources where that can happen: every file
//! is then read in full.

mod capture;
mod restore;

use tessera_plugin_sdk::error::from_host;
use tessera_plugin_sdk::prelude::*;

/// The plugin; all its state lives in the job being run.
struct LogArchive;

/// Setting: glob of paths to capture (repeatable).
const INCLUDE: &str = "include";
/// Setting: glob of paths to leave out (repeatable).
const EXCLUDE: &str = "exclude";
/// Setting: whether to read every file in full instead of trusting the parent point.
const VERIFY: &str = "verify";

impl describe::Guest for LogArchive {
    fn describe() -> PluginInfo {
        let setting = |name: &str, kind, description: &str, default: Option<&str>| SettingSpec {
            name: name.to_owned(),
            kind,
            description: description.to_owned(),
            required: false,
            default: default.map(str::to_owned),
        };
        PluginInfo {
            name: "log-archive".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            workload: WorkloadKind::FileShare,
            contract: tessera_plugin_sdk::CONTRACT_VERSION.to_owned(),
            capabilities: vec![Capability::ReadSource, Capability::WriteTarget],
            settings: vec![
                setting(
                    INCLUDE,
                    SettingKind::TextList,
                    "Glob of paths to capture; when given, only matching files and everything \
                     below matching directories are captured.",
                    None,
                ),
                setting(
                    EXCLUDE,
                    SettingKind::TextList,
                    "Glob of paths to leave out, with everything below them; wins over include.",
                    None,
                ),
                setting(
                    VERIFY,
                    SettingKind::Boolean,
                    "Read every file in full: for files that may be rewritten in place rather \
                     than only appended to.",
                    Some("false"),
                ),
            ],
            description: "Backs up a directory of append-only files (logs, audit trails, WAL \
                          archives) in fixed 1 MiB chunks. A file that grew under the same \
                          inode keeps the whole chunks of its previous point unread; only the \
                          bytes after them are read."
                .to_owned(),
        }
    }
}

// The SDK's `capture` and `restore` interfaces are named in full: this crate's own
// modules of those names shadow the prelude's.
impl tessera_plugin_sdk::capture::Guest for LogArchive {
    fn capture(request: CaptureRequest) -> Result<CaptureSummary, PluginError> {
        capture::run(&request)
    }
}

impl tessera_plugin_sdk::restore::Guest for LogArchive {
    fn restore(request: RestoreRequest) -> Result<RestoreSummary, PluginError> {
        restore::run(&request)
    }
}

impl browse::Guest for LogArchive {
    fn children(path: String) -> Result<Vec<EntryInfo>, PluginError> {
        // The stored tree is the file tree, so the host's view needs no translation.
        point::children(&path).map_err(|err| from_host(format_args!("listing {path:?}"), &err))
    }
}

tessera_plugin_sdk::export_plugin!(LogArchive);
