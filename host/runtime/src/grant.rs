//! A directory granted to a plugin, and the POSIX operations the host performs in it on the
//! plugin's behalf.
//!
//! Every path a plugin passes is resolved beneath the grant with `cap-std`, which refuses
//! `..` past the root, absolute paths and symlinks leading outside. The last component is
//! then used with the `*at` system calls on its parent directory without following a
//! symlink, so a plugin can neither read nor change anything outside what it was granted.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom, Timespec, Timestamps, XattrFlags};

use crate::limits::{MAX_PATH_LEN, MAX_XATTR_VALUE, MAX_XATTRS};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading only (capture sources).
    Read,
    /// Reading and writing (restore targets).
    ReadWrite,
}

/// A granted directory.
#[derive(Debug)]
pub struct Grant {
    /// What the plugin may do in it.
    pub access: Access,
    dir: Dir,
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

impl Grant {
    /// Opens a grant on a host directory.
    pub fn open(host_path: &Path, access: Access) -> std::io::Result<Grant> {
        let dir = Dir::open_ambient_dir(host_path, ambient_authority())?;
        Ok(Grant { access, dir })
    }

    /// Splits a plugin path into its parent directory (opened beneath the grant) and last
    /// component. `""` and `"."` mean the grant's root.
    fn resolve(&self, path: &str) -> Result<(Dir, String), GrantError> {
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
        let parts: Vec<&str> = trimmed
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(GrantError::Denied(format!(
                "'{path}' leaves the grant through '..'"
            )));
        }
        let Some((name, parents)) = parts.split_last() else {
            let root = self.dir.try_clone().map_err(|e| io_error(path, e))?;
            return Ok((root, ".".to_string()));
        };
        let parent = if parents.is_empty() {
            self.dir.try_clone().map_err(|e| io_error(path, e))?
        } else {
            // cap-std resolves every component beneath the grant, following symlinks only
            // while they stay inside it.
            self.dir
                .open_dir(parents.join("/"))
                .map_err(|e| io_error(path, e))?
        };
        Ok((parent, name.to_string()))
    }

    fn require_write(&self, path: &str) -> Result<(), GrantError> {
        if self.access != Access::ReadWrite {
            return Err(GrantError::Denied(format!(
                "'{path}': the grant is read-only"
            )));
        }
        Ok(())
    }

    /// Metadata of a path, not following a final symlink.
    pub fn stat(&self, path: &str) -> Result<Stat, GrantError> {
        let (parent, name) = self.resolve(path)?;
        let st = rustix::fs::statat(parent.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| errno(path, e))?;
        Ok(Stat {
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
        })
    }

    /// Opens a regular file or directory without following a final symlink, for calls that
    /// need a descriptor (xattrs, holes). `None` for other kinds of entries.
    fn open_nofollow(&self, path: &str, write: bool) -> Result<Option<OwnedFd>, GrantError> {
        let (parent, name) = self.resolve(path)?;
        let st = rustix::fs::statat(parent.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| errno(path, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let mut flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        match kind {
            FileType::RegularFile if write => flags |= OFlags::WRONLY,
            FileType::RegularFile => flags |= OFlags::RDONLY,
            FileType::Directory => flags |= OFlags::RDONLY | OFlags::DIRECTORY,
            _ => return Ok(None),
        }
        let fd = rustix::fs::openat(parent.as_fd(), name.as_str(), flags, Mode::empty())
            .map_err(|e| errno(path, e))?;
        Ok(Some(fd))
    }

    /// Extended attributes of a file or directory (none for other kinds).
    pub fn xattrs(&self, path: &str) -> Result<Vec<(String, Vec<u8>)>, GrantError> {
        let Some(fd) = self.open_nofollow(path, false)? else {
            return Ok(Vec::new());
        };
        let mut names = vec![0u8; 64 * 1024];
        let n = match rustix::fs::flistxattr(&fd, &mut names) {
            Ok(n) => n,
            // File systems without xattr support have none to report.
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(errno(path, e)),
        };
        let mut out = Vec::new();
        for raw in names[..n]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .take(MAX_XATTRS)
        {
            let Ok(name) = std::str::from_utf8(raw) else {
                continue;
            };
            let mut value = vec![0u8; MAX_XATTR_VALUE];
            match rustix::fs::fgetxattr(&fd, name, &mut value) {
                Ok(len) => {
                    value.truncate(len);
                    out.push((name.to_string(), value));
                }
                Err(rustix::io::Errno::NODATA) => {}
                Err(e) => return Err(errno(path, e)),
            }
        }
        Ok(out)
    }

    /// Holes of a regular file as `(offset, length)`.
    pub fn holes(&self, path: &str) -> Result<Vec<(u64, u64)>, GrantError> {
        let Some(fd) = self.open_nofollow(path, false)? else {
            return Ok(Vec::new());
        };
        let size = rustix::fs::fstat(&fd).map_err(|e| errno(path, e))?.st_size as u64;
        let mut holes = Vec::new();
        let mut at = 0u64;
        while at < size {
            let hole = match rustix::fs::seek(&fd, SeekFrom::Hole(at)) {
                Ok(h) => h,
                // No SEEK_HOLE support: the file is reported as fully allocated.
                Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(errno(path, e)),
            };
            if hole >= size {
                break;
            }
            let data = match rustix::fs::seek(&fd, SeekFrom::Data(hole)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => size,
                Err(e) => return Err(errno(path, e)),
            };
            holes.push((hole, data - hole));
            at = data;
        }
        Ok(holes)
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
        let is_symlink = FileType::from_raw_mode(st.st_mode) == FileType::Symlink;
        let mut warnings = Vec::new();
        if meta.uid.is_some() || meta.gid.is_some() {
            let uid = meta.uid.map(rustix::fs::Uid::from_raw);
            let gid = meta.gid.map(rustix::fs::Gid::from_raw);
            if let Err(e) = rustix::fs::chownat(
                parent.as_fd(),
                name.as_str(),
                uid,
                gid,
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                warnings.push(format!("'{path}': cannot set owner: {e}"));
            }
        }
        if !meta.xattrs.is_empty()
            && let Some(fd) = self.open_nofollow(path, false)?
        {
            for x in &meta.xattrs {
                if let Err(e) =
                    rustix::fs::fsetxattr(&fd, x.name.as_str(), &x.value, XattrFlags::empty())
                {
                    warnings.push(format!(
                        "'{path}': cannot set extended attribute {}: {e}",
                        x.name
                    ));
                }
            }
        }
        // Mode after ownership: chown clears set-user-id bits.
        if let Some(mode) = meta.mode
            && !is_symlink
            && let Err(e) = rustix::fs::chmodat(
                parent.as_fd(),
                name.as_str(),
                Mode::from_raw_mode(mode & 0o7777),
                AtFlags::empty(),
            )
        {
            warnings.push(format!("'{path}': cannot set mode: {e}"));
        }
        if meta.mtime_ns.is_some() || meta.atime_ns.is_some() {
            let keep = |t: Option<i64>, current: Timespec| t.map(timespec).unwrap_or(current);
            let times = Timestamps {
                last_access: keep(
                    meta.atime_ns,
                    Timespec {
                        tv_sec: st.st_atime,
                        tv_nsec: st.st_atime_nsec as _,
                    },
                ),
                last_modification: keep(
                    meta.mtime_ns,
                    Timespec {
                        tv_sec: st.st_mtime,
                        tv_nsec: st.st_mtime_nsec as _,
                    },
                ),
            };
            rustix::fs::utimensat(
                parent.as_fd(),
                name.as_str(),
                &times,
                AtFlags::SYMLINK_NOFOLLOW,
            )
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
