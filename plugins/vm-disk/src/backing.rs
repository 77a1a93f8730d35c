//! Following a qcow2 image's backing file into the sandbox. An image records its backing
//! file as the host path QEMU was given: absolute, or relative to the directory of the
//! image that names it. The plugin sees granted directories at other paths (`source`, or
//! `source/0`, `source/1`, ...), so a name is resolved on the host side of the request's
//! mounts and mapped back into the sandbox through the granted directory that holds it.
//! The result is a canonical sandbox path, which also identifies the image when the
//! backing chain is checked for loops.

use std::fmt;

/// A granted directory, normalised: where it is on the host and in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantedDir {
    /// Absolute host path without `.`, `..` or a trailing `/` (`/` for the root).
    host: String,
    /// Sandbox path without a leading `/` (`source`, `source/1`).
    sandbox: String,
}

impl GrantedDir {
    /// A granted directory as the request lists it; `None` if either path is unusable
    /// (a relative host path, a sandbox path leaving the sandbox).
    pub(crate) fn new(host: &str, sandbox: &str) -> Option<GrantedDir> {
        if !host.starts_with('/') {
            return None;
        }
        Some(GrantedDir {
            host: format!("/{}", normalize(host)?),
            sandbox: normalize(sandbox).filter(|s| !s.is_empty())?,
        })
    }
}

/// Why a backing file cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BackingError {
    /// The name is not a file path (`json:{...}`, `nbd://...`).
    NotAFile,
    /// The name leaves the file system root (too many `..`).
    Escapes,
    /// The file lies outside every granted directory; granting `dir` would reach it.
    OutsideGrants {
        /// The file's host path.
        path: String,
        /// Its directory on the host.
        dir: String,
    },
}

impl fmt::Display for BackingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackingError::NotAFile => f.write_str(
                "it is not a file path (QEMU protocol and json: backing names are not \
                 supported); rebase the image onto a file with `qemu-img rebase`",
            ),
            BackingError::Escapes => f.write_str("it climbs above the file system root"),
            BackingError::OutsideGrants { path, dir } => write!(
                f,
                "{path} is outside the granted directories; grant its directory too \
                 (--grant {dir})"
            ),
        }
    }
}

/// The canonical sandbox path of the backing file `name` recorded in the image at the
/// canonical sandbox path `referenced_by`.
pub(crate) fn resolve(
    name: &str,
    referenced_by: &str,
    mounts: &[GrantedDir],
) -> Result<String, BackingError> {
    if name.is_empty() || name.contains("://") || name.starts_with("json:") || name.contains('\0') {
        return Err(BackingError::NotAFile);
    }
    let referrer_dir = parent(referenced_by);
    let host_path = if name.starts_with('/') {
        Some(normalize(name).ok_or(BackingError::Escapes)?)
    } else {
        match to_host(referrer_dir, mounts) {
            Some(dir) => Some(normalize(&format!("{dir}/{name}")).ok_or(BackingError::Escapes)?),
            None => None,
        }
    };
    let Some(host_path) = host_path else {
        // The referrer's directory is on no known mount: resolve in the sandbox, staying
        // below the referrer's top directory.
        let joined = normalize(&format!("{referrer_dir}/{name}")).ok_or(BackingError::Escapes)?;
        let top = referenced_by.split('/').next().unwrap_or_default();
        return if joined.starts_with(&format!("{top}/")) {
            Ok(joined)
        } else {
            Err(BackingError::Escapes)
        };
    };
    let host_path = format!("/{host_path}");
    to_sandbox(&host_path, mounts).ok_or_else(|| BackingError::OutsideGrants {
        dir: match parent(&host_path) {
            "" => "/".to_owned(),
            dir => dir.to_owned(),
        },
        path: host_path,
    })
}

/// Normalises a `/`-separated path lexically: drops empty and `.` components, applies
/// `..`, and returns it without a leading `/`. `None` if `..` climbs above the start.
pub(crate) fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// The part of `path` below the directory `dir`, if `path` is `dir` or lies below it.
fn below<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    if dir == "/" {
        return path.strip_prefix('/');
    }
    match path.strip_prefix(dir)? {
        "" => Some(""),
        rest => rest.strip_prefix('/'),
    }
}

/// Joins a directory and a relative path that may be empty.
fn join(dir: &str, rest: &str) -> String {
    match (dir, rest) {
        (dir, "") => dir.to_owned(),
        ("/", rest) => format!("/{rest}"),
        (dir, rest) => format!("{dir}/{rest}"),
    }
}

/// The host path of a sandbox path, through the deepest mount holding it.
fn to_host(sandbox: &str, mounts: &[GrantedDir]) -> Option<String> {
    mounts
        .iter()
        .filter_map(|mount| Some((mount, below_relative(sandbox, &mount.sandbox)?)))
        .max_by_key(|(mount, _)| mount.sandbox.len())
        .map(|(mount, rest)| join(&mount.host, rest))
}

/// Like [`below`], for relative paths.
fn below_relative<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    match path.strip_prefix(dir)? {
        "" => Some(""),
        rest => rest.strip_prefix('/'),
    }
}

/// The sandbox path of a host path, through the deepest granted directory holding it.
fn to_sandbox(host: &str, mounts: &[GrantedDir]) -> Option<String> {
    mounts
        .iter()
        .filter_map(|mount| Some((mount, below(host, &mount.host)?)))
        .max_by_key(|(mount, _)| mount.host.len())
        .map(|(mount, rest)| join(&mount.sandbox, rest))
}

/// The directory part of a `/`-separated path (`""` for a bare name).
fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) if path.starts_with('/') => "/",
        Some((dir, _)) => dir,
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(list: &[(&str, &str)]) -> Vec<GrantedDir> {
        list.iter()
            .map(|(host, sandbox)| GrantedDir::new(host, sandbox).unwrap())
            .collect()
    }

    #[test]
    fn normalises_lexically() {
        assert_eq!(normalize("/a//b/./c/").as_deref(), Some("a/b/c"));
        assert_eq!(normalize("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(normalize("a/../.."), None);
        assert_eq!(normalize("/").as_deref(), Some(""));
    }

    #[test]
    fn granted_dirs_are_normalised() {
        let dir = GrantedDir::new("/var/lib/images/", "/source").unwrap();
        assert_eq!(dir.host, "/var/lib/images");
        assert_eq!(dir.sandbox, "source");
        assert!(GrantedDir::new("relative", "/source").is_none());
        assert!(GrantedDir::new("/x", "/").is_none());
    }

    #[test]
    fn relative_names_resolve_beside_the_image() {
        let m = mounts(&[("/images", "/source")]);
        assert_eq!(
            resolve("base.qcow2", "source/vm.qcow2", &m).as_deref(),
            Ok("source/base.qcow2")
        );
        assert_eq!(
            resolve("./bases/../base.qcow2", "source/sub/vm.qcow2", &m).as_deref(),
            Ok("source/sub/base.qcow2")
        );
        assert_eq!(
            resolve("../base.qcow2", "source/sub/vm.qcow2", &m).as_deref(),
            Ok("source/base.qcow2")
        );
    }

    #[test]
    fn names_leaving_a_grant_map_through_another_one() {
        let m = mounts(&[("/vm/top", "/source/0"), ("/vm/base", "/source/1")]);
        assert_eq!(
            resolve("../base/b.qcow2", "source/0/a.qcow2", &m).as_deref(),
            Ok("source/1/b.qcow2")
        );
        assert_eq!(
            resolve("/vm/base/b.raw", "source/0/a.qcow2", &m).as_deref(),
            Ok("source/1/b.raw")
        );
    }

    #[test]
    fn the_deepest_grant_wins() {
        let m = mounts(&[("/vm", "/source/0"), ("/vm/base", "/source/1")]);
        assert_eq!(
            resolve("/vm/base/b.raw", "source/0/a.qcow2", &m).as_deref(),
            Ok("source/1/b.raw")
        );
        assert_eq!(
            resolve("/vm/other/c.raw", "source/0/a.qcow2", &m).as_deref(),
            Ok("source/0/other/c.raw")
        );
        // A sibling whose name starts like a grant is not inside it.
        let m = mounts(&[("/vm", "/source")]);
        assert!(matches!(
            resolve("/vm2/b.raw", "source/a.qcow2", &m),
            Err(BackingError::OutsideGrants { .. })
        ));
    }

    #[test]
    fn files_outside_every_grant_name_the_directory_to_grant() {
        let m = mounts(&[("/images", "/source")]);
        let err = resolve("/srv/bases/base.qcow2", "source/vm.qcow2", &m).unwrap_err();
        assert_eq!(
            err,
            BackingError::OutsideGrants {
                path: "/srv/bases/base.qcow2".into(),
                dir: "/srv/bases".into()
            }
        );
        assert!(err.to_string().contains("--grant /srv/bases"), "{err}");
        let err = resolve("../base.qcow2", "source/vm.qcow2", &m).unwrap_err();
        assert!(err.to_string().contains("--grant /"), "{err}");
    }

    #[test]
    fn protocols_and_escapes_are_refused() {
        let m = mounts(&[("/images", "/source")]);
        assert_eq!(
            resolve("nbd://h/x", "source/vm.qcow2", &m),
            Err(BackingError::NotAFile)
        );
        assert_eq!(
            resolve("json:{}", "source/vm.qcow2", &m),
            Err(BackingError::NotAFile)
        );
        assert_eq!(
            resolve("", "source/vm.qcow2", &m),
            Err(BackingError::NotAFile)
        );
        assert_eq!(
            resolve("../../../../x", "source/vm.qcow2", &m),
            Err(BackingError::Escapes)
        );
    }

    #[test]
    fn without_mounts_names_stay_in_the_sandbox() {
        assert_eq!(
            resolve("b.raw", "source/a.qcow2", &[]).as_deref(),
            Ok("source/b.raw")
        );
        assert_eq!(
            resolve("../b.raw", "source/a.qcow2", &[]),
            Err(BackingError::Escapes)
        );
        assert_eq!(
            resolve("/abs/b.raw", "source/a.qcow2", &[])
                .map_err(|e| matches!(e, BackingError::OutsideGrants { .. })),
            Err(true)
        );
    }
}
