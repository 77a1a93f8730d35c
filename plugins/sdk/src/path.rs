//! Entry paths as the contract defines them: relative to the point's root, separated by
//! `/`, with no empty, `.` or `..` components. Everything a plugin hands the host or
//! turns into a file-system path goes through here, so a hostile or corrupt name can
//! never address anything outside the tree it belongs to.

use std::fmt;

/// Why a path is not a valid entry path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// The offending path, as given.
    pub path: String,
    /// What is wrong with it.
    pub cause: &'static str,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "path {:?} is not a valid entry path: {}",
            self.path, self.cause
        )
    }
}

impl std::error::Error for PathError {}

fn reject(path: &str, cause: &'static str) -> PathError {
    PathError {
        path: path.to_owned(),
        cause,
    }
}

/// Checks one component of an entry path (a file name).
pub fn validate_name(name: &str) -> Result<(), PathError> {
    match name {
        "" => Err(reject(name, "it is empty")),
        "." | ".." => Err(reject(name, "it is `.` or `..`")),
        _ if name.contains('/') => Err(reject(name, "a name cannot contain `/`")),
        // A NUL cannot be part of a POSIX file name; letting one through would let the
        // host and a C library disagree about where the name ends.
        _ if name.contains('\0') => Err(reject(name, "it contains a NUL character")),
        _ => Ok(()),
    }
}

/// Checks an entry path: non-empty, relative, `/`-separated, with no empty, `.` or `..`
/// components.
pub fn validate(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(reject(path, "it is empty"));
    }
    if path.starts_with('/') {
        return Err(reject(path, "it is absolute"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(reject(path, "it has an empty component")),
            "." | ".." => return Err(reject(path, "it has a `.` or `..` component")),
            _ if component.contains('\0') => {
                return Err(reject(path, "it contains a NUL character"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses a path an operator selected (for restore or browse): an entry path, or `""`
/// for the root. Trailing slashes are dropped since people type them for directories.
pub fn parse_selection(path: &str) -> Result<String, PathError> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        // "/" alone would mean the root, but a leading slash is otherwise refused, so
        // accept only the truly empty selection as the root.
        return if path.is_empty() {
            Ok(String::new())
        } else {
            Err(reject(path, "it is absolute"))
        };
    }
    validate(trimmed).map_err(|err| PathError {
        path: path.to_owned(),
        ..err
    })?;
    Ok(trimmed.to_owned())
}

/// The paths a restore request selects, each checked with [`parse_selection`]; the whole
/// point (`""`) when it names none.
pub fn restore_selection(paths: &[String]) -> Result<Vec<String>, PathError> {
    if paths.is_empty() {
        return Ok(vec![String::new()]);
    }
    paths.iter().map(|path| parse_selection(path)).collect()
}

/// The path of `name` inside the directory `parent` (`""` for the root).
pub fn join(parent: &str, name: &str) -> Result<String, PathError> {
    validate_name(name)?;
    if parent.is_empty() {
        Ok(name.to_owned())
    } else {
        validate(parent)?;
        Ok(format!("{parent}/{name}"))
    }
}

/// The directory holding `path` (`""` for a top-level entry).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// The last component of `path`.
pub fn name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

/// Whether `path` is `ancestor` or lies below it; everything lies below the root `""`.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor.is_empty()
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `path` is directly inside the directory `dir` (`""` for the root).
pub fn is_child_of(path: &str, dir: &str) -> bool {
    let rest = if dir.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(dir)
            .and_then(|rest| rest.strip_prefix('/'))
    };
    rest.is_some_and(|name| validate_name(name).is_ok())
}

/// Drops every selected path that another selected path already covers, so each part
/// of a point is visited once; the result is sorted.
pub fn minimal_cover(mut paths: Vec<String>) -> Vec<String> {
    paths.sort();
    paths.dedup();
    let mut kept: Vec<String> = Vec::with_capacity(paths.len());
    for path in paths {
        // Sorting puts a directory right before the paths below it ("a" < "a/b"), but
        // "a-b" sorts between them, so compare with every kept path, not just the last.
        if !kept.iter().any(|ancestor| is_within(&path, ancestor)) {
            kept.push(path);
        }
    }
    kept
}

/// A directory the host mounted in the sandbox (`source` or `target`), or a directory
/// below one, seen two ways: as `std` opens it, and as host calls take paths (relative to
/// the grant).
#[derive(Debug, Clone)]
pub struct Mount {
    /// The directory as `std` opens it, e.g. `source`.
    root: std::path::PathBuf,
    /// The directory relative to the grant: empty when it is the granted directory.
    prefix: String,
}

impl Mount {
    /// The mount at the sandbox path `given` (`source`, `/source` or `source/sub`).
    pub fn new(given: &str) -> Result<Self, PathError> {
        // WASI has no working directory beyond its preopens, so `/source` and `source`
        // are the same place.
        let relative = given.trim_start_matches('/');
        validate(relative)?;
        let prefix = relative
            .split_once('/')
            .map_or("", |(_, below)| below)
            .to_owned();
        Ok(Mount {
            root: std::path::PathBuf::from(given),
            prefix,
        })
    }

    /// The sandbox path of the entry at `path`.
    pub fn sandbox(&self, path: &str) -> std::path::PathBuf {
        self.root.join(path)
    }

    /// The grant-relative path of the entry at `path`, for host calls.
    pub fn host(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }

    /// The mount's own path relative to the grant (`""` for the grant itself).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_selects_the_paths_given_or_the_whole_point() {
        assert_eq!(restore_selection(&[]).unwrap(), vec![String::new()]);
        let given = vec!["etc/".to_owned(), "var/log".to_owned()];
        assert_eq!(restore_selection(&given).unwrap(), vec!["etc", "var/log"]);
        let bad = vec!["etc".to_owned(), "../x".to_owned()];
        assert_eq!(restore_selection(&bad).unwrap_err().path, "../x");
    }

    #[test]
    fn mounts_map_entries_to_sandbox_and_grant_paths() {
        let whole = Mount::new("/source").unwrap();
        assert_eq!(
            whole.sandbox("a/b"),
            std::path::PathBuf::from("/source/a/b")
        );
        assert_eq!(whole.host("a/b"), "a/b");
        assert_eq!(whole.prefix(), "");
        let below = Mount::new("source/sub").unwrap();
        assert_eq!(below.host("a"), "sub/a");
        assert!(Mount::new("source/../x").is_err());
    }

    #[test]
    fn accepts_relative_paths() {
        for path in ["a", "a/b", "a b/c.txt", ".hidden/x", "a/..b", "a\\b"] {
            assert_eq!(validate(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn refuses_escaping_and_malformed_paths() {
        let cases = [
            ("", "it is empty"),
            ("/abs", "it is absolute"),
            ("../evil", "it has a `.` or `..` component"),
            ("a/../../b", "it has a `.` or `..` component"),
            ("a/./b", "it has a `.` or `..` component"),
            ("a//b", "it has an empty component"),
            ("a/", "it has an empty component"),
            ("a\0b", "it contains a NUL character"),
        ];
        for (path, cause) in cases {
            assert_eq!(
                validate(path),
                Err(PathError {
                    path: path.into(),
                    cause
                }),
                "{path:?}"
            );
        }
        let message = validate("../evil").unwrap_err().to_string();
        assert!(message.contains("\"../evil\""), "{message}");
    }

    #[test]
    fn joins_and_splits() {
        assert_eq!(join("", "a").as_deref(), Ok("a"));
        assert_eq!(join("a/b", "c").as_deref(), Ok("a/b/c"));
        assert!(join("a", "..").is_err());
        assert!(join("a", "b/c").is_err());
        assert!(join("/a", "b").is_err());
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a"), "");
        assert_eq!(name("a/b/c"), "c");
        assert_eq!(name("a"), "a");
    }

    #[test]
    fn relates_paths() {
        assert!(is_within("a/b", "a"));
        assert!(is_within("a", "a"));
        assert!(is_within("a", ""));
        assert!(!is_within("ab", "a"));
        assert!(is_child_of("a/b", "a"));
        assert!(is_child_of("a", ""));
        assert!(!is_child_of("a/b/c", "a"));
        assert!(!is_child_of("a/b", ""));
        assert!(!is_child_of("ab", "a"));
        assert!(!is_child_of("a/", "a"));
    }

    #[test]
    fn parses_selections() {
        assert_eq!(parse_selection("").as_deref(), Ok(""));
        assert_eq!(parse_selection("a/b/").as_deref(), Ok("a/b"));
        assert!(parse_selection("/").is_err());
        assert!(parse_selection("/a").is_err());
        assert!(parse_selection("a/../b").is_err());
    }

    #[test]
    fn keeps_only_uncovered_selections() {
        let paths = ["a/b", "a", "a-b", "c/d", "a/b/c", "c/d"]
            .map(String::from)
            .to_vec();
        assert_eq!(minimal_cover(paths), ["a", "a-b", "c/d"]);
        let paths = ["x", ""].map(String::from).to_vec();
        assert_eq!(minimal_cover(paths), [""]);
    }
}
