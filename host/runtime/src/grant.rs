//! A directory granted to a plugin, and the POSIX operations the host performs in it on the
//! plugin's behalf.
//!
//! Every path a plugin passes is resolved beneath the grant with `cap-std`, which refuses
//! `..` past the root, absolute paths and symlinks leading outside. The last component is
//! then used with the `*at` system calls on its parent directory without following a
//! symlink, so a plugin can neither read nor change anything outside what it was granted.
//!
//! A block device is granted on its own, never through the directory holding it (that is
//! `/dev`, every device of the host): its root holds no directory at all, only the device,
//! opened read-only when the grant is made. A path naming it can be stat'ed and read
//! (`write-file`); any other path under that root is refused.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::limits::{MAX_LIST_ENTRIES, MAX_PATH_LEN, MAX_XATTR_VALUE, MAX_XATTRS};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading only (capture sources).
    Read,
    /// Reading and writing (restore targets).
    ReadWrite,
}

/// What a root of a grant is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// A directory and everything beneath it.
    Directory,
    /// One block device, read-only, named by its file name (`loop0` for `/dev/loop0`).
    Device,
}

/// A granted directory.
#[derive(Debug)]
pub struct Grant {
    /// What the plugin may do in it.
    pub access: Access,
    /// The granted roots: with one, paths are relative to it; with several, a path's
    /// first component is the root's number (`1/disk.qcow2`).
    roots: Vec<Root>,
    /// The directory the last written file went to, by root and parent path: a restore
    /// writes a directory's files one after another, and resolving it again for each
    /// costs a walk of the whole path.
    write_dir: Mutex<Option<(ParentKey, Arc<Dir>)>>,
}

/// A directory of a grant: the number of its root and its path there.
type ParentKey = (usize, String);

/// A root of a grant.
#[derive(Debug)]
enum Root {
    /// A directory.
    Dir(Dir),
    /// A block device granted alone.
    Device(Device),
}

/// A block device granted on its own: the plugin reaches it by its name, through host
/// calls only, and nothing else under its root.
#[derive(Debug)]
struct Device {
    /// Its file name on the host, the only name its root holds.
    name: String,
    /// The device, opened read-only when the grant was made.
    file: OwnedFd,
}

/// What a plugin path names: an entry of a granted directory, by its parent and name, or
/// a granted device.
enum Located<'g> {
    Entry(Dir, String),
    Device(&'g Device),
}

/// Why a grant operation failed; turned into the WIT `host-error` by the caller.
#[derive(Debug)]
pub enum GrantError {
    /// Outside the grant, or not allowed by it.
    Denied(String),
    /// Missing.
    NotFound(String),
    /// A malformed path.
    Invalid(String),
    /// Another I/O error.
    Io(String),
}

/// POSIX metadata of a path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stat {
    /// `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size.
    pub size: u64,
    /// Inode.
    pub inode: u64,
    /// Device of the file system.
    pub dev: u64,
    /// Device number of a device node.
    pub rdev: u64,
    /// Link count.
    pub nlink: u64,
    /// Times in ns since the epoch.
    pub mtime_ns: i64,
    /// Access time.
    pub atime_ns: i64,
    /// Status change time.
    pub ctime_ns: i64,
}

impl std::fmt::Display for GrantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrantError::Denied(m)
            | GrantError::NotFound(m)
            | GrantError::Invalid(m)
            | GrantError::Io(m) => f.write_str(m),
        }
    }
}

fn io_error(path: &str, e: impl std::fmt::Display + Into<std::io::Error>) -> GrantError {
    let message = e.to_string();
    let err: std::io::Error = e.into();
    match err.kind() {
        std::io::ErrorKind::NotFound => GrantError::NotFound(format!("'{path}': {message}")),
        std::io::ErrorKind::PermissionDenied => GrantError::Denied(format!("'{path}': {message}")),
        _ => GrantError::Io(format!("'{path}': {message}")),
    }
}

fn errno(path: &str, e: rustix::io::Errno) -> GrantError {
    io_error(path, std::io::Error::from(e))
}

fn ns(t: &Timespec) -> i64 {
    t.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec)
}

fn timespec(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    }
}

/// Where [`Grant::apply_metadata`] applies metadata: an entry by its directory and name
/// (not following a final symlink), or an open file.
#[derive(Clone, Copy)]
enum MetaTarget<'a> {
    At {
        parent: &'a Dir,
        name: &'a str,
        symlink: bool,
    },
    Fd(&'a OwnedFd),
}

/// Opens `name` in `dir` with `flags` (a read), asking the kernel not to update its access
/// time: a backup leaves what it reads as it found it, and an unchanged tree then gives
/// the same metadata, hence the same stored trees, on every run. Only the owner (or a
/// holder of `CAP_FOWNER`) may ask; anyone else gets a plain open.
fn open_untouched(dir: BorrowedFd<'_>, name: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        opened => opened,
    }
}

/// The status of a metadata target, not following a final symlink.
fn status(path: &str, target: MetaTarget<'_>) -> Result<rustix::fs::Stat, GrantError> {
    match target {
        MetaTarget::Fd(fd) => rustix::fs::fstat(fd),
        MetaTarget::At { parent, name, .. } => {
            rustix::fs::statat(parent.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
        }
    }
    .map_err(|e| errno(path, e))
}

/// A directory entry found by [`Grant::scan`].
#[derive(Debug)]
pub struct Scanned {
    /// Its name.
    pub name: String,
    /// Its metadata.
    pub stat: Result<Stat, GrantError>,
    /// Its extended attributes (files and directories only).
    pub xattrs: Result<Vec<(String, Vec<u8>)>, GrantError>,
    /// Its holes (regular files that may be sparse only).
    pub holes: Vec<(u64, u64)>,
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() || dir == "." {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn stat_of(st: &rustix::fs::Stat) -> Stat {
    Stat {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        inode: st.st_ino,
        dev: st.st_dev,
        rdev: st.st_rdev,
        nlink: st.st_nlink,
        mtime_ns: ns(&Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        }),
        atime_ns: ns(&Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        }),
        ctime_ns: ns(&Timespec {
            tv_sec: st.st_ctime,
            tv_nsec: st.st_ctime_nsec as _,
        }),
    }
}

/// The holes of an open regular file of `size` bytes, found with `SEEK_HOLE`/`SEEK_DATA`.
fn holes_of(fd: &OwnedFd, size: u64) -> Result<Vec<(u64, u64)>, rustix::io::Errno> {
    let mut holes = Vec::new();
    let mut at = 0u64;
    while at < size {
        let hole = match rustix::fs::seek(fd, SeekFrom::Hole(at)) {
            Ok(h) => h,
            // No SEEK_HOLE support: the file is reported as fully allocated.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e),
        };
        if hole >= size {
            break;
        }
        let data = match rustix::fs::seek(fd, SeekFrom::Data(hole)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e),
        };
        holes.push((hole, data - hole));
        at = data;
    }
    Ok(holes)
}

/// Buffers reused across the extended-attribute reads of one listing.
#[derive(Default)]
struct XattrScratch {
    names: Vec<u8>,
    value: Vec<u8>,
}

impl XattrScratch {
    /// The extended attributes of `path` (not following a final symlink).
    fn read(&mut self, path: &str) -> Result<Vec<(String, Vec<u8>)>, rustix::io::Errno> {
        self.read_with(
            |names| rustix::fs::llistxattr(path, names),
            |name, value| rustix::fs::lgetxattr(path, name, value),
        )
    }

    /// The extended attributes `list` names and `get` reads: at most [`MAX_XATTRS`], names
    /// that are not UTF-8 skipped, none on a file system without them.
    fn read_with(
        &mut self,
        list: impl FnOnce(&mut [u8]) -> Result<usize, rustix::io::Errno>,
        mut get: impl FnMut(&str, &mut [u8]) -> Result<usize, rustix::io::Errno>,
    ) -> Result<Vec<(String, Vec<u8>)>, rustix::io::Errno> {
        if self.names.is_empty() {
            self.names = vec![0; 64 * 1024];
            self.value = vec![0; MAX_XATTR_VALUE];
        }
        let n = match list(&mut self.names) {
            Ok(n) => n,
            // File systems without xattr support have none to report.
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for raw in self.names[..n]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .take(MAX_XATTRS)
        {
            let Ok(name) = std::str::from_utf8(raw) else {
                continue;
            };
            match get(name, &mut self.value) {
                Ok(len) => out.push((name.to_string(), self.value[..len].to_vec())),
                Err(rustix::io::Errno::NODATA) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Opens the block device at `path` for a grant: read-only, not following a final
/// symlink (the caller resolved the operator's links already), and only a block device.
fn open_device(path: &Path, access: Access) -> std::io::Result<Device> {
    let invalid = |detail: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, detail);
    if access != Access::Read {
        return Err(invalid("a device can be granted for reading only"));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid("the device's name is not UTF-8"))?
        .to_string();
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
        let e = std::io::Error::from(e);
        std::io::Error::new(
            e.kind(),
            format!("cannot open the block device for reading: {e}"),
        )
    })?;
    let st = rustix::fs::fstat(&file)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice {
        return Err(invalid("not a block device"));
    }
    Ok(Device { name, file })
}

impl Device {
    /// The error for a path under the device's root that is not the device.
    fn outside(&self, path: &str) -> GrantError {
        GrantError::Denied(format!(
            "'{path}' is outside the grant: it holds the device {} only",
            self.name
        ))
    }

    /// The device's status, with its size in bytes: the position of its end.
    fn stat(&self, path: &str) -> Result<Stat, GrantError> {
        let st = rustix::fs::fstat(&self.file).map_err(|e| errno(path, e))?;
        // Only `pread` reads the device, so moving the descriptor's offset is harmless.
        let size = rustix::fs::seek(&self.file, SeekFrom::End(0)).map_err(|e| errno(path, e))?;
        Ok(Stat {
            size,
            ..stat_of(&st)
        })
    }
}

impl Grant {
    /// Opens a grant on a host directory.
    #[cfg(test)]
    pub fn open(host_path: &Path, access: Access) -> std::io::Result<Grant> {
        Self::open_many(&[(host_path, RootKind::Directory)], access).map_err(|(_, e)| e)
    }

    /// Opens a grant on several host directories and devices, numbered in the order
    /// given. Each device is opened here, read-only and without following a symlink, and
    /// must be a block device; a device cannot be granted for writing. On failure, returns
    /// the number of the root that could not be opened with the error.
    pub fn open_many(
        roots: &[(&Path, RootKind)],
        access: Access,
    ) -> Result<Grant, (usize, std::io::Error)> {
        let roots = roots
            .iter()
            .enumerate()
            .map(|(i, &(path, kind))| {
                match kind {
                    RootKind::Directory => {
                        Dir::open_ambient_dir(path, ambient_authority()).map(Root::Dir)
                    }
                    RootKind::Device => open_device(path, access).map(Root::Device),
                }
                .map_err(|e| (i, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Grant {
            access,
            roots,
            write_dir: Mutex::new(None),
        })
    }

    /// Splits a plugin path into its parent directory (opened beneath the grant) and last
    /// component. `""` and `"."` mean the grant's root. A path under a granted device's
    /// root is refused: such a root is no directory.
    pub(crate) fn resolve(&self, path: &str) -> Result<(Dir, String), GrantError> {
        match self.locate(path)? {
            Located::Entry(parent, name) => Ok((parent, name)),
            Located::Device(device) => Err(GrantError::Denied(format!(
                "'{path}' is the granted device {}: it can only be stat'ed and read",
                device.name
            ))),
        }
    }

    /// What a plugin path names: an entry beneath a granted directory, or a granted device
    /// by its exact name. Any other path under a device's root is refused.
    fn locate(&self, path: &str) -> Result<Located<'_>, GrantError> {
        let (root, parents, name) = self.split(path)?;
        match &self.roots[root] {
            Root::Dir(_) => Ok(Located::Entry(
                self.open_parent(root, &parents, path)?,
                name,
            )),
            Root::Device(device) if parents.is_empty() && name == device.name => {
                Ok(Located::Device(device))
            }
            Root::Device(device) => Err(device.outside(path)),
        }
    }

    /// The granted device a path names, `None` for a path in a granted directory, without
    /// opening anything. Any other path under a device's root is refused.
    fn device_at(&self, path: &str) -> Result<Option<&Device>, GrantError> {
        let (root, parents, name) = self.split(path)?;
        match &self.roots[root] {
            Root::Dir(_) => Ok(None),
            Root::Device(device) if parents.is_empty() && name == device.name => Ok(Some(device)),
            Root::Device(device) => Err(device.outside(path)),
        }
    }

    /// Checks a plugin path and splits it into the number of its root, the components of
    /// its parent and its last component (`"."` for a root itself).
    fn split<'p>(&self, path: &'p str) -> Result<(usize, Vec<&'p str>, String), GrantError> {
        if path.len() > MAX_PATH_LEN {
            return Err(GrantError::Invalid(format!(
                "a path of {} bytes is too long",
                path.len()
            )));
        }
        if path.starts_with('/') || path.contains('\0') {
            return Err(GrantError::Denied(format!(
                "'{path}' is not a path inside the grant"
            )));
        }
        let trimmed = path.trim_matches('/');
        let mut parts: Vec<&str> = trimmed
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(GrantError::Denied(format!(
                "'{path}' leaves the grant through '..'"
            )));
        }
        let root = match self.roots.len() {
            1 => 0,
            count => {
                let index = parts.first().and_then(|first| first.parse::<usize>().ok());
                match index.filter(|&i| i < count) {
                    Some(i) => {
                        parts.remove(0);
                        i
                    }
                    None => {
                        return Err(GrantError::Invalid(format!(
                            "'{path}' names none of the {count} granted directories (0 to {})",
                            count.saturating_sub(1)
                        )));
                    }
                }
            }
        };
        let name = parts.pop().unwrap_or(".").to_string();
        Ok((root, parts, name))
    }

    /// Opens the directory `parents` of root `root`.
    fn open_parent(&self, root: usize, parents: &[&str], path: &str) -> Result<Dir, GrantError> {
        let dir = match &self.roots[root] {
            Root::Dir(dir) => dir,
            Root::Device(device) => return Err(device.outside(path)),
        };
        if parents.is_empty() {
            dir.try_clone().map_err(|e| io_error(path, e))
        } else {
            // cap-std resolves every component beneath the grant, following symlinks only
            // while they stay inside it.
            dir.open_dir(parents.join("/"))
                .map_err(|e| io_error(path, e))
        }
    }

    fn require_write(&self, path: &str) -> Result<(), GrantError> {
        if self.access != Access::ReadWrite {
            return Err(GrantError::Denied(format!(
                "'{path}': the grant is read-only"
            )));
        }
        Ok(())
    }

    /// Metadata of a path, not following a final symlink. A granted device's size is its
    /// size in bytes (its `st_size` is 0).
    pub fn stat(&self, path: &str) -> Result<Stat, GrantError> {
        let (parent, name) = match self.locate(path)? {
            Located::Entry(parent, name) => (parent, name),
            Located::Device(device) => return device.stat(path),
        };
        let st = rustix::fs::statat(parent.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| errno(path, e))?;
        Ok(stat_of(&st))
    }

    /// Opens a regular file or directory without following a final symlink, for calls that
    /// need a descriptor (xattrs, holes). `None` for other kinds of entries.
    fn open_nofollow(&self, path: &str) -> Result<Option<OwnedFd>, GrantError> {
        let (parent, name) = self.resolve(path)?;
        let st = rustix::fs::statat(parent.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| errno(path, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let mut flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        match kind {
            FileType::RegularFile => flags |= OFlags::RDONLY,
            FileType::Directory => flags |= OFlags::RDONLY | OFlags::DIRECTORY,
            _ => return Ok(None),
        }
        let fd = open_untouched(parent.as_fd(), &name, flags).map_err(|e| errno(path, e))?;
        Ok(Some(fd))
    }

    /// Extended attributes of a file or directory (none for other kinds).
    pub fn xattrs(&self, path: &str) -> Result<Vec<(String, Vec<u8>)>, GrantError> {
        if self.device_at(path)?.is_some() {
            return Ok(Vec::new());
        }
        let Some(fd) = self.open_nofollow(path)? else {
            return Ok(Vec::new());
        };
        XattrScratch::default()
            .read_with(
                |names| rustix::fs::flistxattr(&fd, names),
                |name, value| rustix::fs::fgetxattr(&fd, name, value),
            )
            .map_err(|e| errno(path, e))
    }

    /// Holes of a regular file as `(offset, length)`. A granted device has none known:
    /// every byte of it is read.
    pub fn holes(&self, path: &str) -> Result<Vec<(u64, u64)>, GrantError> {
        if self.device_at(path)?.is_some() {
            return Ok(Vec::new());
        }
        let Some(fd) = self.open_nofollow(path)? else {
            return Ok(Vec::new());
        };
        let size = rustix::fs::fstat(&fd).map_err(|e| errno(path, e))?.st_size as u64;
        holes_of(&fd, size).map_err(|e| errno(path, e))
    }

    /// The directory and name where a file at `path` is written, in a writable grant.
    pub fn resolve_for_write(&self, path: &str) -> Result<(Arc<Dir>, String), GrantError> {
        self.require_write(path)?;
        let (root, parents, name) = self.split(path)?;
        if name == "." {
            return Err(GrantError::Invalid(format!("'{path}' is not a file path")));
        }
        let key = (root, parents.join("/"));
        let mut last = self.write_dir.lock().expect("lock");
        if let Some((at, dir)) = last.as_ref()
            && *at == key
        {
            return Ok((Arc::clone(dir), name));
        }
        let dir = Arc::new(self.open_parent(root, &parents, path)?);
        *last = Some((key, Arc::clone(&dir)));
        Ok((dir, name))
    }

    /// Opens a regular file for reading, without following a final symlink; or, for the
    /// path of a granted device, a new descriptor of the device opened with the grant.
    /// A device in a granted directory is refused like any other non-regular file.
    pub fn open_source(&self, path: &str) -> Result<OwnedFd, GrantError> {
        let (parent, name) = match self.locate(path)? {
            Located::Entry(parent, name) => (parent, name),
            Located::Device(device) => {
                return device.file.try_clone().map_err(|e| io_error(path, e));
            }
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = open_untouched(parent.as_fd(), &name, flags).map_err(|e| match e {
            rustix::io::Errno::LOOP => {
                GrantError::Invalid(format!("'{path}' is a symlink, not a regular file"))
            }
            e => errno(path, e),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| errno(path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(GrantError::Invalid(format!(
                "'{path}' is not a regular file"
            )));
        }
        Ok(fd)
    }

    /// Lists the directory at `path` with each entry's stat, extended attributes and
    /// holes, sorted by name: a tree walk's whole need for one directory, in one call.
    pub fn scan(&self, path: &str) -> Result<Vec<Scanned>, GrantError> {
        let (parent, name) = self.resolve(path)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = open_untouched(parent.as_fd(), &name, flags).map_err(|e| errno(path, e))?;
        let mut names = Vec::new();
        let mut listing = rustix::fs::Dir::read_from(&dir).map_err(|e| errno(path, e))?;
        while let Some(entry) = listing.read() {
            let entry = entry.map_err(|e| errno(path, e))?;
            let raw = entry.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            names.push(raw.to_vec());
            if names.len() > MAX_LIST_ENTRIES {
                return Err(GrantError::Invalid(format!(
                    "'{path}' holds more than {MAX_LIST_ENTRIES} entries"
                )));
            }
        }
        names.sort_unstable();
        // Attribute lookups go through the directory's descriptor in /proc, so each costs
        // one system call and no open; without /proc each entry is opened instead.
        let proc_dir = format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd());
        let via_proc = rustix::fs::stat(proc_dir.as_str()).is_ok();
        let mut scratch = XattrScratch::default();
        let mut out = Vec::with_capacity(names.len());
        for raw in names {
            let name = match String::from_utf8(raw) {
                Ok(name) => name,
                Err(e) => {
                    let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
                    out.push(Scanned {
                        stat: Err(GrantError::Invalid(format!(
                            "'{}': the name is not UTF-8",
                            join(path, &shown)
                        ))),
                        name: shown,
                        xattrs: Ok(Vec::new()),
                        holes: Vec::new(),
                    });
                    continue;
                }
            };
            let shown = join(path, &name);
            let st = match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Deleted since the listing: a live tree changes while it is walked.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => {
                    out.push(Scanned {
                        name,
                        stat: Err(errno(&shown, e)),
                        xattrs: Ok(Vec::new()),
                        holes: Vec::new(),
                    });
                    continue;
                }
            };
            let kind = FileType::from_raw_mode(st.st_mode);
            let xattrs = match kind {
                FileType::RegularFile | FileType::Directory if via_proc => {
                    let at = format!("{proc_dir}/{name}");
                    scratch.read(&at).map_err(|e| errno(&shown, e))
                }
                FileType::RegularFile | FileType::Directory => self.xattrs(&shown),
                _ => Ok(Vec::new()),
            };
            let size = st.st_size as u64;
            // A file holding fewer blocks than its size needs may have holes; any other
            // file has none, and is not opened to ask.
            let maybe_sparse = (st.st_blocks as u64).saturating_mul(512) < size;
            let holes = if kind == FileType::RegularFile && maybe_sparse {
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
                rustix::fs::openat(&dir, name.as_str(), flags, Mode::empty())
                    .and_then(|fd| holes_of(&fd, size))
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            out.push(Scanned {
                name,
                stat: Ok(stat_of(&st)),
                xattrs,
                holes,
            });
        }
        Ok(out)
    }

    /// The target of a symlink, verbatim.
    pub fn read_link(&self, path: &str) -> Result<String, GrantError> {
        let (parent, name) = self.resolve(path)?;
        let target = rustix::fs::readlinkat(parent.as_fd(), name.as_str(), Vec::new())
            .map_err(|e| errno(path, e))?;
        target
            .into_string()
            .map_err(|_| GrantError::Invalid(format!("'{path}': the link's target is not UTF-8")))
    }

    /// Creates a symlink storing `target` verbatim.
    pub fn make_symlink(&self, path: &str, target: &str) -> Result<(), GrantError> {
        self.require_write(path)?;
        let (parent, name) = self.resolve(path)?;
        if name == "." {
            return Err(GrantError::Invalid(
                "cannot create a link at the grant's root".into(),
            ));
        }
        if target.len() > MAX_PATH_LEN || target.contains('\0') {
            return Err(GrantError::Invalid(format!(
                "'{path}': the link target is not valid"
            )));
        }
        rustix::fs::symlinkat(target, parent.as_fd(), name.as_str()).map_err(|e| errno(path, e))
    }

    /// Applies metadata to a path in a writable grant. Returns what could not be applied.
    pub fn set_metadata(
        &self,
        path: &str,
        meta: &crate::bindings::host::RestoreMetadata,
    ) -> Result<Vec<String>, GrantError> {
        self.require_write(path)?;
        let (parent, name) = self.resolve(path)?;
        let st = rustix::fs::statat(parent.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| errno(path, e))?;
        let target = MetaTarget::At {
            parent: &parent,
            name: &name,
            symlink: FileType::from_raw_mode(st.st_mode) == FileType::Symlink,
        };
        self.apply_metadata(path, target, Some(&st), meta)
    }

    /// Applies metadata to `file`, a regular file at `path` of a writable grant that the
    /// host just wrote: through its descriptor, without resolving the path again.
    pub fn set_file_metadata(
        &self,
        path: &str,
        file: &OwnedFd,
        meta: &crate::bindings::host::RestoreMetadata,
    ) -> Result<Vec<String>, GrantError> {
        self.require_write(path)?;
        self.apply_metadata(path, MetaTarget::Fd(file), None, meta)
    }

    /// Ownership, extended attributes, mode, then times (chown clears set-user-id bits,
    /// so the mode comes after it). `st` is the entry's status when already known.
    fn apply_metadata(
        &self,
        path: &str,
        target: MetaTarget<'_>,
        st: Option<&rustix::fs::Stat>,
        meta: &crate::bindings::host::RestoreMetadata,
    ) -> Result<Vec<String>, GrantError> {
        let mut warnings = Vec::new();
        let mut known = st.copied();
        if meta.uid.is_some() || meta.gid.is_some() {
            // A chown dirties the inode even when the owner stays the same, which on a
            // journaling file system costs a transaction: an entry that already has the
            // owner (every file a restore creates as that owner) is left alone.
            if known.is_none() {
                known = status(path, target).ok();
            }
            let owned = known.is_some_and(|st| {
                meta.uid.is_none_or(|uid| uid == st.st_uid)
                    && meta.gid.is_none_or(|gid| gid == st.st_gid)
            });
            let uid = meta.uid.map(rustix::fs::Uid::from_raw);
            let gid = meta.gid.map(rustix::fs::Gid::from_raw);
            let chowned = match target {
                _ if owned => Ok(()),
                MetaTarget::At { parent, name, .. } => {
                    rustix::fs::chownat(parent.as_fd(), name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                }
                MetaTarget::Fd(fd) => rustix::fs::fchown(fd, uid, gid),
            };
            if let Err(e) = chowned {
                warnings.push(format!("'{path}': cannot set owner: {e}"));
            }
        }
        if !meta.xattrs.is_empty() {
            let opened;
            let fd = match target {
                MetaTarget::Fd(fd) => Some(fd),
                MetaTarget::At { .. } => {
                    opened = self.open_nofollow(path)?;
                    opened.as_ref()
                }
            };
            // Entries other than files and directories get none.
            if let Some(fd) = fd {
                for x in &meta.xattrs {
                    if let Err(e) =
                        rustix::fs::fsetxattr(fd, x.name.as_str(), &x.value, XattrFlags::empty())
                    {
                        warnings.push(format!(
                            "'{path}': cannot set extended attribute {}: {e}",
                            x.name
                        ));
                    }
                }
            }
        }
        if let Some(mode) = meta.mode {
            let mode = Mode::from_raw_mode(mode & 0o7777);
            let changed = match target {
                MetaTarget::At { symlink: true, .. } => Ok(()),
                MetaTarget::At { parent, name, .. } => {
                    rustix::fs::chmodat(parent.as_fd(), name, mode, AtFlags::empty())
                }
                MetaTarget::Fd(fd) => rustix::fs::fchmod(fd, mode),
            };
            if let Err(e) = changed {
                warnings.push(format!("'{path}': cannot set mode: {e}"));
            }
        }
        if meta.mtime_ns.is_some() || meta.atime_ns.is_some() {
            let times = match (meta.atime_ns, meta.mtime_ns) {
                (Some(atime), Some(mtime)) => Timestamps {
                    last_access: timespec(atime),
                    last_modification: timespec(mtime),
                },
                // A time not given keeps its current value.
                (atime, mtime) => {
                    let st = match known {
                        Some(st) => st,
                        None => status(path, target)?,
                    };
                    Timestamps {
                        last_access: atime.map(timespec).unwrap_or(Timespec {
                            tv_sec: st.st_atime,
                            tv_nsec: st.st_atime_nsec as _,
                        }),
                        last_modification: mtime.map(timespec).unwrap_or(Timespec {
                            tv_sec: st.st_mtime,
                            tv_nsec: st.st_mtime_nsec as _,
                        }),
                    }
                }
            };
            match target {
                MetaTarget::At { parent, name, .. } => {
                    rustix::fs::utimensat(parent.as_fd(), name, &times, AtFlags::SYMLINK_NOFOLLOW)
                }
                MetaTarget::Fd(fd) => rustix::fs::futimens(fd, &times),
            }
            .map_err(|e| errno(path, e))?;
        }
        Ok(warnings)
    }

    /// Creates a fifo or device node in a writable grant.
    pub fn make_node(
        &self,
        path: &str,
        kind: FileType,
        mode: u32,
        rdev: u64,
    ) -> Result<(), GrantError> {
        self.require_write(path)?;
        let (parent, name) = self.resolve(path)?;
        if name == "." {
            return Err(GrantError::Invalid(
                "cannot create a node at the grant's root".into(),
            ));
        }
        rustix::fs::mknodat(
            parent.as_fd(),
            name.as_str(),
            kind,
            Mode::from_raw_mode(mode & 0o7777),
            rdev,
        )
        .map_err(|e| errno(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_grant() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("grant");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(outer.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outer.path(), root.join("link")).unwrap();
        std::fs::write(root.join("file"), b"hello").unwrap();
        let grant = Grant::open(&root, Access::Read).unwrap();
        assert_eq!(grant.stat("file").unwrap().size, 5);
        assert!(grant.stat("").is_ok());
        assert!(matches!(
            grant.stat("../secret"),
            Err(GrantError::Denied(_))
        ));
        assert!(matches!(
            grant.stat("/etc/passwd"),
            Err(GrantError::Denied(_))
        ));
        assert!(grant.stat("link/secret").is_err());
        assert!(grant.xattrs("link/secret").is_err());
        // The link itself is visible, as a symlink, without being followed.
        let link = grant.stat("link").unwrap();
        assert_eq!(FileType::from_raw_mode(link.mode), FileType::Symlink);
        let meta = crate::bindings::host::RestoreMetadata {
            mode: Some(0o600),
            uid: None,
            gid: None,
            mtime_ns: None,
            atime_ns: None,
            xattrs: vec![],
        };
        assert!(matches!(
            grant.set_metadata("file", &meta),
            Err(GrantError::Denied(_))
        ));
    }

    #[test]
    fn files_to_write_resolve_beneath_the_grant_and_reuse_their_directory() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("grant");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(outer.path(), root.join("out")).unwrap();
        let grant = Grant::open(&root, Access::ReadWrite).unwrap();
        let (first, name) = grant.resolve_for_write("a/b/one").unwrap();
        assert_eq!(name, "one");
        let (second, _) = grant.resolve_for_write("a//b/./two").unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the same directory is reused");
        let (other, _) = grant.resolve_for_write("a/three").unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        for bad in ["../x", "a/../../x", "/etc/x", "out/x", "a/b/..", ""] {
            assert!(
                grant.resolve_for_write(bad).is_err(),
                "{bad:?} was accepted"
            );
        }
        let read_only = Grant::open(&root, Access::Read).unwrap();
        assert!(matches!(
            read_only.resolve_for_write("a/b/one"),
            Err(GrantError::Denied(_))
        ));
    }

    #[test]
    fn scan_lists_a_directory_with_metadata_in_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/b"), b"bee").unwrap();
        std::fs::write(root.join("a"), b"a").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(8 << 20).unwrap();
        let with_xattr = rustix::fs::setxattr(
            root.join("a").as_path(),
            "user.tessera",
            b"value",
            XattrFlags::empty(),
        )
        .is_ok();
        let grant = Grant::open(root, Access::Read).unwrap();

        let found = grant.scan("").unwrap();
        let names: Vec<&str> = found.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "link", "sparse", "sub"]);
        let a = &found[0];
        assert_eq!(a.stat.as_ref().unwrap().size, 1);
        if with_xattr {
            assert_eq!(
                a.xattrs.as_ref().unwrap(),
                &[("user.tessera".to_string(), b"value".to_vec())]
            );
        }
        assert!(a.holes.is_empty());
        let link = &found[1];
        assert_eq!(link.stat.as_ref().unwrap().mode & 0o170000, 0o120000);
        assert!(link.xattrs.as_ref().unwrap().is_empty());
        assert_eq!(found[2].holes, [(0, 8 << 20)]);

        let below = grant.scan("sub").unwrap();
        assert_eq!(below.len(), 1);
        assert_eq!(below[0].name, "b");
        // A symlink is not a directory to list, and `..` never leaves the grant.
        assert!(grant.scan("link").is_err());
        assert!(matches!(grant.scan(".."), Err(GrantError::Denied(_))));
    }

    #[test]
    fn open_source_refuses_links_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"data").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("link")).unwrap();
        let grant = Grant::open(dir.path(), Access::Read).unwrap();
        assert!(grant.open_source("f").is_ok());
        assert!(matches!(
            grant.open_source("link"),
            Err(GrantError::Invalid(_))
        ));
        assert!(matches!(
            grant.open_source("."),
            Err(GrantError::Invalid(_))
        ));
        assert!(matches!(
            grant.open_source("../f"),
            Err(GrantError::Denied(_))
        ));
    }

    /// A 4 MiB image with a marker at its start, attached as a loop device; `None` (the
    /// test says why it is skipped) where loop devices are out of reach.
    fn loop_device(dir: &Path) -> Option<crate::loop_device::LoopDevice> {
        let image = dir.join("disk.raw");
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(4 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"tessera device", 0).unwrap();
        match crate::loop_device::LoopDevice::attach(&image) {
            Ok(device) => Some(device),
            Err(reason) => {
                eprintln!("skipped: {reason}");
                None
            }
        }
    }

    #[test]
    fn a_device_grant_reaches_that_device_only() {
        let dir = tempfile::tempdir().unwrap();
        let Some(device) = loop_device(dir.path()) else {
            return;
        };
        let name = device.name();
        let grant =
            Grant::open_many(&[(device.path.as_path(), RootKind::Device)], Access::Read).unwrap();

        let st = grant.stat(name).unwrap();
        assert_eq!(FileType::from_raw_mode(st.mode), FileType::BlockDevice);
        assert_eq!(st.size, 4 << 20, "the size is the device's, not st_size");
        assert!(grant.holes(name).unwrap().is_empty());
        assert!(grant.xattrs(name).unwrap().is_empty());
        let fd = grant.open_source(name).unwrap();
        let mut start = [0u8; 14];
        rustix::io::pread(&fd, &mut start, 0).unwrap();
        assert_eq!(&start, b"tessera device");

        // Nothing else of /dev: not its other entries, not the directory, not `..`.
        let sibling = if name == "loop0" { "loop1" } else { "loop0" };
        for other in [
            "",
            ".",
            "null",
            "loop-control",
            sibling,
            "../null",
            "/dev/null",
            &format!("{name}/x"),
            &format!("{name}/.."),
            &format!("./{name}/../null"),
        ] {
            assert!(
                matches!(grant.stat(other), Err(GrantError::Denied(_))),
                "stat {other:?} was not denied"
            );
            assert!(grant.open_source(other).is_err(), "{other:?} opened");
            assert!(grant.holes(other).is_err(), "holes of {other:?}");
            assert!(grant.xattrs(other).is_err(), "xattrs of {other:?}");
            assert!(grant.read_link(other).is_err(), "link {other:?} read");
        }
        assert!(matches!(grant.scan(""), Err(GrantError::Denied(_))));
        assert!(matches!(grant.scan(name), Err(GrantError::Denied(_))));
        assert!(grant.read_link(name).is_err());
        assert!(grant.resolve_for_write(name).is_err());

        // Only block devices, and only for reading.
        let device_root = [(device.path.as_path(), RootKind::Device)];
        assert!(Grant::open_many(&device_root, Access::ReadWrite).is_err());
        for not_block in ["/dev/null", "/dev/zero"] {
            assert!(
                Grant::open_many(&[(Path::new(not_block), RootKind::Device)], Access::Read)
                    .is_err(),
                "{not_block} granted as a device"
            );
        }
    }

    #[test]
    fn a_device_in_a_granted_directory_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let Some(device) = loop_device(dir.path()) else {
            return;
        };
        let rdev = rustix::fs::stat(&device.path).unwrap().st_rdev;
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tree.join("disk"),
            FileType::BlockDevice,
            Mode::from_raw_mode(0o600),
            rdev,
        )
        .unwrap();
        let grant = Grant::open(&tree, Access::Read).unwrap();
        assert!(matches!(
            grant.open_source("disk"),
            Err(GrantError::Invalid(_))
        ));
        // Its metadata is there, as for any device node of a tree.
        assert_eq!(grant.stat("disk").unwrap().size, 0);
    }

    #[test]
    fn holes_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("sparse")).unwrap();
        file.set_len(8 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(&[1u8; 4096], 4 << 20).unwrap();
        let grant = Grant::open(dir.path(), Access::Read).unwrap();
        let holes = grant.holes("sparse").unwrap();
        let total: u64 = holes.iter().map(|h| h.1).sum();
        assert!(total >= (8 << 20) - (1 << 20), "{holes:?}");
    }
}
