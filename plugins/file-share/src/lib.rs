//! The `file-share` plugin: protects a directory tree, the way a file server's share is
//! backed up. Capture walks the granted source directory and stores every file, link,
//! special file and its metadata; restore writes a point's tree, or parts of it, into the
//! granted target directory; browse lists a point's directories as stored.

mod capture_tree;
mod restore_tree;

use tessera_plugin_sdk::error::from_host;
use tessera_plugin_sdk::prelude::*;

/// The plugin; all its state lives in the job being run.
struct FileShare;

/// Setting: glob of paths to capture (repeatable).
const INCLUDE: &str = "include";
/// Setting: glob of paths to leave out (repeatable).
const EXCLUDE: &str = "exclude";
/// Setting: whether to stay on the source root's file system.
const ONE_FILE_SYSTEM: &str = "one-file-system";
/// Setting: a file name whose presence leaves its directory out (repeatable).
const EXCLUDE_IF_PRESENT: &str = "exclude-if-present";
/// Setting: whether to leave out directories tagged as caches (`CACHEDIR.TAG`).
const EXCLUDE_CACHES: &str = "exclude-caches";
/// Setting: the size in bytes above which files are left out.
const EXCLUDE_LARGER_THAN: &str = "exclude-larger-than";
/// Setting (restore): what to do with entries already in the target.
const OVERWRITE: &str = "overwrite";
/// Setting (restore): whether restored directories lose what the point does not hold.
const DELETE: &str = "delete";

impl describe::Guest for FileShare {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "file-share".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            workload: WorkloadKind::FileShare,
            contract: tessera_plugin_sdk::CONTRACT_VERSION.to_owned(),
            capabilities: vec![Capability::ReadSource, Capability::WriteTarget],
            settings: vec![
                SettingSpec {
                    name: INCLUDE.to_owned(),
                    kind: SettingKind::TextList,
                    description: "Glob of paths to capture (or restore); when given, only \
                                  matching entries and everything below matching directories are \
                                  captured (restored). A pattern without `/` matches a name at any \
                                  depth."
                        .to_owned(),
                    required: false,
                    default: None,
                },
                SettingSpec {
                    name: EXCLUDE.to_owned(),
                    kind: SettingKind::TextList,
                    description: "Glob of paths to leave out of a capture or a restore, with \
                                  everything below them; wins over include."
                        .to_owned(),
                    required: false,
                    default: None,
                },
                SettingSpec {
                    name: EXCLUDE_IF_PRESENT.to_owned(),
                    kind: SettingKind::TextList,
                    description: "Leave out every directory below the source root that holds \
                                  an entry of this name (`.nobackup`), with everything in it."
                        .to_owned(),
                    required: false,
                    default: None,
                },
                SettingSpec {
                    name: EXCLUDE_CACHES.to_owned(),
                    kind: SettingKind::Boolean,
                    description: "Leave out directories marked as caches: those holding a \
                                  `CACHEDIR.TAG` file that starts with the Cache Directory \
                                  Tagging signature."
                        .to_owned(),
                    required: false,
                    default: Some("false".to_owned()),
                },
                SettingSpec {
                    name: EXCLUDE_LARGER_THAN.to_owned(),
                    kind: SettingKind::Integer,
                    description: "Leave out regular files larger than this many bytes.".to_owned(),
                    required: false,
                    default: None,
                },
                SettingSpec {
                    name: OVERWRITE.to_owned(),
                    kind: SettingKind::Text,
                    description: "Restore: what to do with a file already in the target: \
                                  `always` replace it, `if-changed` keep it if it has the \
                                  stored size and modification time (its metadata is still \
                                  restored), `if-newer` keep it unless the stored one is newer, \
                                  `never` keep it. Directories are merged into."
                        .to_owned(),
                    required: false,
                    default: Some("always".to_owned()),
                },
                SettingSpec {
                    name: DELETE.to_owned(),
                    kind: SettingKind::Boolean,
                    description: "Restore: delete from each directory restored whole the \
                                  entries the point does not hold there (not those an exclude \
                                  pattern matches), so the target ends up as the point."
                        .to_owned(),
                    required: false,
                    default: Some("false".to_owned()),
                },
                SettingSpec {
                    name: ONE_FILE_SYSTEM.to_owned(),
                    kind: SettingKind::Boolean,
                    description: "Do not descend into directories on another file system than \
                                  the source root (mount points are kept, empty)."
                        .to_owned(),
                    required: false,
                    default: Some("false".to_owned()),
                },
            ],
            description: "Backs up a directory tree: regular and sparse files, directories, \
                          symlinks, hard links, fifos and device nodes, with ownership, modes, \
                          times and extended attributes. Unchanged files are carried forward \
                          from the previous point without being read."
                .to_owned(),
        }
    }
}

impl capture::Guest for FileShare {
    fn capture(request: CaptureRequest) -> Result<CaptureSummary, PluginError> {
        capture_tree::run(&request)
    }
}

impl restore::Guest for FileShare {
    fn restore(request: RestoreRequest) -> Result<RestoreSummary, PluginError> {
        restore_tree::run(&request)
    }
}

impl browse::Guest for FileShare {
    fn children(path: String) -> Result<Vec<EntryInfo>, PluginError> {
        // The stored tree is the file tree, so the host's view needs no translation.
        point::children(&path).map_err(|err| from_host(format_args!("listing {path:?}"), &err))
    }
}

tessera_plugin_sdk::export_plugin!(FileShare);
