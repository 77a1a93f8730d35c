//! Capture: a depth-first walk of the granted source tree in sorted name order, adding
//! each object as an entry with the host's POSIX metadata. A source that is a single file
//! (the runtime then grants its directory and names the file in it) is captured as the
//! one entry named like the file. With several sources each is stored under its own name
//! (the last component of its host path), so `/etc` and `/srv/www` give the top-level
//! entries `etc` and `www`; two sources of the same name are refused, since one would
//! hide the other. Regular files are streamed
//! with their holes kept, hard links are stored once, and with a parent point unchanged
//! files are carried forward unread. A path that cannot be read is reported and skipped,
//! so one bad file does not cost the whole point.

use std::collections::HashMap;

use tessera_plugin_sdk::content::{self, Writer};
use tessera_plugin_sdk::error::{from_host, host_error_text};
use tessera_plugin_sdk::filter::PathFilter;
use tessera_plugin_sdk::host::{PosixStat, ScannedEntry};
use tessera_plugin_sdk::meta::{self, FileType};
use tessera_plugin_sdk::path::Mount;
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::settings::Settings;
use tessera_plugin_sdk::{debug, info, path, warn};

use crate::{
    EXCLUDE, EXCLUDE_CACHES, EXCLUDE_IF_PRESENT, EXCLUDE_LARGER_THAN, INCLUDE, ONE_FILE_SYSTEM,
};

/// The file that marks a cache directory, and how it must start
/// (<https://bford.info/cachedir/>).
const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Why the point is only crash-consistent: files are read one after another from a live
/// tree, with nothing freezing it. `crash` is the lowest level the contract has; even it
/// overstates a tree read over minutes, but `file-system` would claim a freeze or sync
/// that never happened.
const CONSISTENCY_REASON: &str = "files were read while in use; no file-system snapshot";

/// How much of a file is read between two checks for cancellation and progress reports,
/// so a huge file neither delays a cancel nor looks stuck.
const CHECK_EVERY: u64 = 64 << 20;

/// Runs a capture job.
pub(crate) fn run(request: &CaptureRequest) -> Result<CaptureSummary, PluginError> {
    let settings = Settings::new(&request.settings);
    let filter = PathFilter::new(&settings.all(INCLUDE), &settings.all(EXCLUDE))
        .map_err(|err| PluginError::InvalidSettings(err.to_string()))?;
    let one_file_system = settings.bool(ONE_FILE_SYSTEM, false)?;
    let markers = settings
        .all(EXCLUDE_IF_PRESENT)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let caches = settings.bool(EXCLUDE_CACHES, false)?;
    let larger_than = match settings.int(EXCLUDE_LARGER_THAN, -1)? {
        -1 => None,
        size => Some(u64::try_from(size).map_err(|_| {
            PluginError::InvalidSettings(format!(
                "setting `{EXCLUDE_LARGER_THAN}` must be a size in bytes, not {size}"
            ))
        })?),
    };
    let sources = locate_sources(&request.sources, &request.mounts)?;

    let mut walk = Walk {
        source: Mount::new(SOURCE_MOUNT).expect("the source mount is a valid path"),
        root: String::new(),
        filter,
        has_parent: request.has_parent,
        device: None,
        markers,
        caches,
        larger_than,
        links: HashMap::new(),
        stack: Vec::new(),
        entries: 0,
        bytes_read: 0,
        bytes_done: 0,
        unreadable: 0,
    };
    for source in sources {
        walk.device = if one_file_system {
            let stat = host::stat(source.mount.prefix()).map_err(|err| {
                PluginError::SourceUnavailable(format!(
                    "{ONE_FILE_SYSTEM} needs the device of the source root {:?}, but stat \
                     failed: {}",
                    source.mount.prefix(),
                    host_error_text(&err)
                ))
            })?;
            Some(stat.dev)
        } else {
            None
        };
        walk.source = source.mount;
        walk.root = source.root;
        match source.file {
            Some(SingleFile { name, stat }) => walk.one_file(name, stat)?,
            None => walk.run()?,
        }
    }

    sink::set_consistency(Consistency::Crash, Some(CONSISTENCY_REASON));
    info!(
        "captured {} entries, read {} bytes, {} paths unreadable",
        walk.entries, walk.bytes_read, walk.unreadable
    );
    Ok(CaptureSummary {
        entries: walk.entries,
        bytes_read: walk.bytes_read,
    })
}

/// Where the sandbox shows the source grant, as `std` opens it.
const SOURCE_MOUNT: &str = "source";

/// A source that is a single file: its name in the source directory, and its metadata.
struct SingleFile {
    name: String,
    stat: PosixStat,
}

/// One source of the request, located.
struct Source {
    /// Its directory (for a file, the directory holding it).
    mount: Mount,
    /// The entry path its directory's content is stored under: `""` for the only
    /// source, its name among several (a file is stored under its own name either way).
    root: String,
    /// The file, when the source is one.
    file: Option<SingleFile>,
}

/// Locates the request's sources (a source named twice counts once). One directory is
/// stored as the point's root; with several sources each goes under its name, and two of
/// the same name, or a name a path cannot have (the root directory `/`), are refused.
fn locate_sources(
    sources: &[String],
    mounts: &[capture::Mount],
) -> Result<Vec<Source>, PluginError> {
    let mut given: Vec<&str> = Vec::new();
    for source in sources {
        if !given.contains(&source.as_str()) {
            given.push(source);
        }
    }
    match given.as_slice() {
        [] => Err(PluginError::SourceUnavailable(
            "the request names no source".to_owned(),
        )),
        [one] => Ok(vec![locate_source(one)?]),
        many => {
            let mut located: Vec<Source> = Vec::with_capacity(many.len());
            // Each stored name, with the host path it comes from.
            let mut names: Vec<(String, String)> = Vec::with_capacity(many.len());
            for &sandbox in many {
                let mut source = locate_source(sandbox)?;
                let shown = host_path(sandbox, mounts).unwrap_or_else(|| sandbox.to_owned());
                let name = match &source.file {
                    Some(file) => file.name.clone(),
                    None => {
                        let name = shown.rsplit('/').find(|part| !part.is_empty());
                        let name = name.filter(|&n| path::validate_name(n).is_ok());
                        let Some(name) = name else {
                            return Err(PluginError::Unsupported(format!(
                                "source {shown} has no name to store it under beside the \
                                 other sources: back it up alone"
                            )));
                        };
                        source.root = name.to_owned();
                        name.to_owned()
                    }
                };
                if let Some((_, other)) = names.iter().find(|(n, _)| *n == name) {
                    return Err(PluginError::Unsupported(format!(
                        "sources {other} and {shown} would both be stored as {name:?}: back \
                         them up as separate items, or back up a directory holding both"
                    )));
                }
                names.push((name, shown));
                located.push(source);
            }
            Ok(located)
        }
    }
}

/// The host path of the sandbox path `sandbox`, through the grant it lies in.
fn host_path(sandbox: &str, mounts: &[capture::Mount]) -> Option<String> {
    let sandbox = sandbox.trim_start_matches('/').trim_end_matches('/');
    mounts.iter().find_map(|mount| {
        let granted = mount.sandbox.trim_start_matches('/').trim_end_matches('/');
        let below = sandbox.strip_prefix(granted)?;
        if below.is_empty() {
            Some(mount.host.clone())
        } else {
            let below = below.strip_prefix('/')?;
            Some(format!("{}/{below}", mount.host.trim_end_matches('/')))
        }
    })
}

/// Finds one source: the grant (`source`) or a path below it. When that path is a file
/// rather than a directory, returns its directory's mount, with the file.
fn locate_source(given: &str) -> Result<Source, PluginError> {
    let mount = |path: &str| {
        Mount::new(path).map_err(|err| {
            PluginError::SourceUnavailable(format!(
                "source {path:?} is not a path inside the grant: {err}"
            ))
        })
    };
    let directory = |mount| Source {
        mount,
        root: String::new(),
        file: None,
    };
    let source = mount(given)?;
    // A root that cannot be looked at is reported by the walk, which lists it.
    let Ok(stat) = host::stat(source.prefix()) else {
        return Ok(directory(source));
    };
    if FileType::from_mode(stat.mode) == FileType::Directory {
        return Ok(directory(source));
    }
    match given.trim_end_matches('/').rsplit_once('/') {
        Some((dir, name)) if !source.prefix().is_empty() => Ok(Source {
            mount: mount(dir)?,
            root: String::new(),
            file: Some(SingleFile {
                name: name.to_owned(),
                stat,
            }),
        }),
        // The grant itself is the file: a device, granted alone.
        _ => Err(PluginError::Unsupported(format!(
            "source {given:?} is granted alone, as a device is, and is not a directory: \
             back up disks with the vm-disk plugin"
        ))),
    }
}

/// A directory being walked.
struct Frame {
    /// Its entry path (`""` for the root).
    path: String,
    /// Its entries not visited yet, with their metadata.
    names: std::vec::IntoIter<ScannedEntry>,
    /// Its entry while it is held back: with include patterns a directory that matches
    /// none is added only once something below it is.
    pending: Option<EntryInfo>,
    /// Whether everything below it is included, because it or an ancestor matched an
    /// include pattern (or there are none).
    whole: bool,
}

/// The state of one capture.
struct Walk {
    /// The directory of the source being walked.
    source: Mount,
    /// The entry path that directory's content is stored under (see [`Source::root`]).
    root: String,
    filter: PathFilter,
    has_parent: bool,
    /// Names whose presence leaves a directory out.
    markers: Vec<String>,
    /// Whether directories tagged as caches are left out.
    caches: bool,
    /// Regular files larger than this are left out.
    larger_than: Option<u64>,
    /// The root's device, when the walk must stay on it.
    device: Option<u64>,
    /// The first path captured for each (device, inode) with more than one link.
    links: HashMap<(u64, u64), String>,
    /// The directories from the root down to the one being walked.
    stack: Vec<Frame>,
    entries: u64,
    bytes_read: u64,
    /// Bytes read or carried forward, for progress.
    bytes_done: u64,
    unreadable: u64,
}

/// What became of one object.
enum Outcome<T> {
    /// It was read.
    Done(T),
    /// It disappeared between being listed and being read, as files in a live tree do;
    /// it was simply not there to back up.
    Vanished,
    /// It could not be read, for this reason.
    Unreadable(String),
}

impl Walk {
    /// Captures the single file `name` of the source directory, as the walk would have
    /// found it there.
    fn one_file(&mut self, name: String, stat: PosixStat) -> Result<(), PluginError> {
        let scanned = self.scanned(&name, name.clone(), stat);
        self.visit(name, false, scanned)
    }

    /// What a listing would have said of the object at `path` (named `name`), whose
    /// metadata is `stat`.
    fn scanned(&self, path: &str, name: String, stat: PosixStat) -> ScannedEntry {
        let at = self.host(path);
        let (xattrs, xattrs_error) = match host::xattrs(&at) {
            Ok(xattrs) => (xattrs, None),
            Err(err) => (Vec::new(), Some(host_error_text(&err))),
        };
        let holes = if FileType::from_mode(stat.mode) == FileType::Regular {
            host::holes(&at).unwrap_or_default()
        } else {
            Vec::new()
        };
        ScannedEntry {
            name,
            stat: Ok(stat),
            xattrs,
            xattrs_error,
            holes,
        }
    }

    /// Walks the source directory; among several sources, as the directory entry
    /// [`Walk::root`].
    fn run(&mut self) -> Result<(), PluginError> {
        let unavailable = |what: &str, err: HostError| {
            PluginError::SourceUnavailable(format!(
                "cannot {what} the source root {}: {}",
                self.source.sandbox("").display(),
                host_error_text(&err)
            ))
        };
        if self.root.is_empty() {
            let names = host::scan(&self.host("")).map_err(|err| unavailable("list", err))?;
            self.stack.push(Frame {
                path: String::new(),
                names: names.into_iter(),
                pending: None,
                whole: false,
            });
        } else {
            let stat = host::stat(&self.host("")).map_err(|err| unavailable("stat", err))?;
            let root = self.root.clone();
            let scanned = self.scanned(&root, root.clone(), stat);
            self.visit(root, false, scanned)?;
        }
        while let Some(frame) = self.stack.last_mut() {
            let Some(scanned) = frame.names.next() else {
                self.stack.pop();
                continue;
            };
            let whole = frame.whole;
            let joined = path::join(&frame.path, &scanned.name)
                .map_err(|err| (format!("{}/{}", frame.path, scanned.name), err));
            if host::cancelled() {
                return Err(PluginError::Cancelled);
            }
            match joined {
                Ok(path) => self.visit(path, whole, scanned)?,
                // Listing never yields such names; if a file system does, the name cannot
                // be stored, and the operator should know.
                Err((shown, err)) => {
                    self.unreadable(shown.trim_start_matches('/'), &err.to_string())
                }
            }
            self.progress();
        }
        Ok(())
    }

    fn visit(
        &mut self,
        path: String,
        whole: bool,
        scanned: ScannedEntry,
    ) -> Result<(), PluginError> {
        if self.filter.is_excluded(&path) {
            debug!("{path}: excluded");
            return Ok(());
        }
        let stat = match scanned.stat {
            Ok(stat) => stat,
            Err(HostError::NotFound(_)) => return Ok(()),
            Err(err) => {
                let reason = format!("stat failed: {}", host_error_text(&err));
                self.unreadable(&path, &reason);
                return Ok(());
            }
        };
        let included = whole || self.filter.is_included(&path);
        let meta = || {
            let mut meta = meta::from_stat(&stat);
            meta.xattrs = scanned.xattrs;
            // Missing attributes cost only the attributes, so they are logged rather
            // than marking the point partial.
            if let Some(reason) = &scanned.xattrs_error {
                warn!("{path}: extended attributes not captured: {reason}");
            }
            meta
        };
        match FileType::from_mode(stat.mode) {
            FileType::Directory => {
                let meta = meta();
                self.directory(path, &stat, meta, included)
            }
            _ if !included => Ok(()),
            FileType::Regular if self.larger_than.is_some_and(|limit| stat.size > limit) => {
                debug!("{path}: left out, {} bytes", stat.size);
                Ok(())
            }
            FileType::Regular => {
                let meta = meta();
                self.file(path, &stat, meta, &scanned.holes)
            }
            FileType::Symlink => self.symlink(path, &stat),
            // Special files are stored as metadata alone: their type and, for device
            // nodes, `rdev` are all a restore needs.
            FileType::Fifo => self.add(special(path, EntryKind::Fifo, &stat), None),
            FileType::CharDevice => self.add(special(path, EntryKind::CharDevice, &stat), None),
            FileType::BlockDevice => {
                self.add(special(path, EntryKind::BlockDeviceNode, &stat), None)
            }
            FileType::Socket => self.add(special(path, EntryKind::Socket, &stat), None),
            FileType::Unknown => {
                let reason = format!("unknown file type (mode {:#o})", stat.mode);
                self.unreadable(&path, &reason);
                Ok(())
            }
        }
    }

    fn directory(
        &mut self,
        path: String,
        stat: &PosixStat,
        meta: Metadata,
        included: bool,
    ) -> Result<(), PluginError> {
        let names = if self.device.is_some_and(|device| device != stat.dev) {
            info!("{path}: on another file system, kept empty");
            Vec::new()
        } else {
            match host::scan(&self.host(&path)) {
                Ok(names) => names,
                Err(HostError::NotFound(_)) => return Ok(()),
                Err(err) => {
                    let reason = format!("cannot list the directory: {}", host_error_text(&err));
                    self.unreadable(&path, &reason);
                    return Ok(());
                }
            }
        };
        if let Some(marker) = self.marker_in(&path, &names) {
            debug!("{path}: left out, it holds {marker}");
            return Ok(());
        }
        let entry = EntryInfo {
            path: path.clone(),
            kind: EntryKind::Directory,
            meta,
        };
        let pending = if included {
            self.add(entry, None)?;
            None
        } else {
            Some(entry)
        };
        self.stack.push(Frame {
            path,
            names: names.into_iter(),
            pending,
            whole: included,
        });
        Ok(())
    }

    /// The entry of `names`, the listing of the directory at `path`, that leaves the
    /// directory out, if one does.
    fn marker_in<'n>(&self, path: &str, names: &'n [ScannedEntry]) -> Option<&'n str> {
        names.iter().map(|e| e.name.as_str()).find(|name| {
            self.markers.iter().any(|marker| marker == name)
                || (self.caches && *name == CACHEDIR_TAG && self.is_cache_tag(path))
        })
    }

    /// Whether the `CACHEDIR.TAG` in the directory at `path` starts with the signature; a
    /// file that cannot be read marks nothing.
    fn is_cache_tag(&self, path: &str) -> bool {
        use std::io::Read;
        let tag = path::join(self.in_source(path), CACHEDIR_TAG).unwrap_or_default();
        let tag = self.source.sandbox(&tag);
        let mut start = [0u8; CACHEDIR_SIGNATURE.len()];
        std::fs::File::open(tag)
            .and_then(|mut file| file.read_exact(&mut start))
            .is_ok_and(|()| start == CACHEDIR_SIGNATURE)
    }

    fn file(
        &mut self,
        path: String,
        stat: &PosixStat,
        mut meta: Metadata,
        holes: &[ByteRange],
    ) -> Result<(), PluginError> {
        let inode = (stat.dev, stat.inode);
        if stat.nlink > 1
            && let Some(first) = self.links.get(&inode)
        {
            let kind = EntryKind::Hardlink(first.clone());
            return self.add(EntryInfo { path, kind, meta }, None);
        }
        if self.has_parent && self.carry_forward(&path, &mut meta)? {
            self.bytes_done += stat.size;
            self.remember_link(stat, inode, path);
            return Ok(());
        }
        let writer = match self.read_content(&path, stat, holes, &mut meta)? {
            Outcome::Done(writer) => writer,
            Outcome::Vanished => return Ok(()),
            Outcome::Unreadable(reason) => {
                self.unreadable(&path, &reason);
                return Ok(());
            }
        };
        let content = writer
            .finish()
            .map_err(|err| from_host(format_args!("storing {path:?}"), &err))?;
        self.add(
            EntryInfo {
                path: path.clone(),
                kind: EntryKind::File,
                meta,
            },
            Some(content),
        )?;
        self.remember_link(stat, inode, path);
        Ok(())
    }

    /// Streams a file's content, data ranges read by the host and holes skipped, and sets
    /// the size and holes in `meta` to what was stored. A failure to read drops the
    /// stream, which the host discards.
    fn read_content(
        &mut self,
        path: &str,
        stat: &PosixStat,
        holes: &[ByteRange],
        meta: &mut Metadata,
    ) -> Result<Outcome<Writer>, PluginError> {
        let host_path = self.host(path);
        let stored = |err: HostError| from_host(format_args!("storing {path:?}"), &err);
        let mut writer = Writer::begin(Chunking::ContentDefined).map_err(stored)?;
        let mut holes_kept = Vec::new();
        'segments: for segment in content::segments(stat.size, holes) {
            if segment.hole {
                writer.hole(segment.length).map_err(stored)?;
                holes_kept.push(ByteRange {
                    offset: segment.offset,
                    length: segment.length,
                });
                continue;
            }
            let end = segment.offset + segment.length;
            let mut offset = segment.offset;
            while offset < end {
                let step = (end - offset).min(CHECK_EVERY);
                let copied = match writer.write_file(&host_path, offset, step) {
                    Ok(copied) => copied,
                    Err(HostError::NotFound(_)) => return Ok(Outcome::Vanished),
                    Err(
                        err @ (HostError::Io(_) | HostError::Denied(_) | HostError::Invalid(_)),
                    ) => {
                        return Ok(Outcome::Unreadable(format!(
                            "reading failed at byte {offset}: {}",
                            host_error_text(&err)
                        )));
                    }
                    Err(err) => return Err(stored(err)),
                };
                offset += copied;
                self.bytes_read += copied;
                self.bytes_done += copied;
                if copied < step {
                    // Truncated while being read: what was read is what the file held.
                    warn!(
                        "{path}: shrank from {} to {offset} bytes while being read",
                        stat.size
                    );
                    break 'segments;
                }
                if host::cancelled() {
                    return Err(PluginError::Cancelled);
                }
                self.progress();
            }
        }
        meta.size = writer.offset();
        meta.holes = holes_kept;
        Ok(Outcome::Done(writer))
    }

    /// Carries the file forward from the parent point if it is unchanged there; `meta`
    /// replaces the stored metadata, keeping the stored holes since the content is the
    /// same.
    fn carry_forward(&mut self, path: &str, meta: &mut Metadata) -> Result<bool, PluginError> {
        let parent = match sink::lookup_parent(path) {
            Ok(Some(parent)) => parent,
            Ok(None) | Err(HostError::NotFound(_)) => return Ok(false),
            Err(err) => {
                return Err(from_host(
                    format_args!("looking up {path:?} in the parent point"),
                    &err,
                ));
            }
        };
        if parent.entry.kind != EntryKind::File || !meta::unchanged(&parent.entry.meta, meta) {
            return Ok(false);
        }
        meta.holes = parent.entry.meta.holes;
        self.flush_pending()?;
        let carried = sink::carry_forward(path, Some(meta))
            .map_err(|err| from_host(format_args!("carrying {path:?} forward"), &err))?;
        if carried {
            self.entries += 1;
        }
        Ok(carried)
    }

    fn symlink(&mut self, path: String, stat: &PosixStat) -> Result<(), PluginError> {
        // The host reads the target verbatim: WASI refuses to reveal absolute targets.
        let target = match host::read_link(&self.host(&path)) {
            Ok(target) => target,
            Err(HostError::NotFound(_)) => return Ok(()),
            Err(err) => {
                self.unreadable(
                    &path,
                    &format!("cannot read the link: {}", host_error_text(&err)),
                );
                return Ok(());
            }
        };
        // Symlinks carry no extended attributes the host reads (see `host::xattrs`).
        let meta = meta::from_stat(stat);
        self.add(
            EntryInfo {
                path,
                kind: EntryKind::Symlink(target),
                meta,
            },
            None,
        )
    }

    /// Adds an entry after the held-back directories above it.
    fn add(
        &mut self,
        entry: EntryInfo,
        content: Option<sink::ContentWriter>,
    ) -> Result<(), PluginError> {
        self.flush_pending()?;
        sink::add_entry(&entry, content)
            .map_err(|err| from_host(format_args!("adding {:?}", entry.path), &err))?;
        self.entries += 1;
        Ok(())
    }

    /// Adds the held-back directories on the current path, outermost first, so the
    /// entries stay depth first.
    fn flush_pending(&mut self) -> Result<(), PluginError> {
        for frame in &mut self.stack {
            if let Some(dir) = frame.pending.take() {
                sink::add_entry(&dir, None)
                    .map_err(|err| from_host(format_args!("adding {:?}", dir.path), &err))?;
                self.entries += 1;
            }
        }
        Ok(())
    }

    fn remember_link(&mut self, stat: &PosixStat, inode: (u64, u64), path: String) {
        if stat.nlink > 1 {
            self.links.entry(inode).or_insert(path);
        }
    }

    fn unreadable(&mut self, path: &str, reason: &str) {
        self.unreadable += 1;
        sink::report_unreadable(path, reason);
    }

    fn progress(&self) {
        host::progress(self.bytes_done, 0, self.entries, 0);
    }

    /// The grant-relative path, for host calls, of the entry at `path`.
    fn host(&self, path: &str) -> String {
        self.source.host(self.in_source(path))
    }

    /// The path below the source directory of the entry at `path`.
    fn in_source<'p>(&self, path: &'p str) -> &'p str {
        if self.root.is_empty() {
            return path;
        }
        match path.strip_prefix(self.root.as_str()) {
            Some(below) => below.trim_start_matches('/'),
            None => path,
        }
    }
}

/// The entry of a special file.
fn special(path: String, kind: EntryKind, stat: &PosixStat) -> EntryInfo {
    EntryInfo {
        path,
        kind,
        meta: meta::from_stat(stat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(host: &str, sandbox: &str) -> capture::Mount {
        capture::Mount {
            host: host.to_owned(),
            sandbox: sandbox.to_owned(),
        }
    }

    #[test]
    fn sandbox_paths_map_to_host_paths_through_their_grant() {
        let mounts = [
            granted("/etc", "source/0"),
            granted("/srv/www/", "/source/1"),
        ];
        assert_eq!(host_path("source/0", &mounts).as_deref(), Some("/etc"));
        assert_eq!(host_path("/source/0/", &mounts).as_deref(), Some("/etc"));
        assert_eq!(
            host_path("source/1/index.html", &mounts).as_deref(),
            Some("/srv/www/index.html")
        );
        // `source/10` is not below `source/1`.
        assert_eq!(host_path("source/10", &mounts), None);
        assert_eq!(host_path("target", &mounts), None);
    }
}
