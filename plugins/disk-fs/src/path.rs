//! Paths inside a volume as callers give them: `/`-separated, relative to the volume root,
//! `""` for the root. Parsing refuses what could escape or confuse a lookup (`..`, NUL) and
//! bounds length and depth, which also ends walks through a directory that a corrupt image
//! makes its own descendant.

use crate::FsError;

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub(crate) const MAX_PATH_BYTES: usize = 4096;
/// Most components accepted in a path, after symlinks are resolved.
pub(crate) const MAX_DEPTH: usize = 256;
/// Longest name of one component, in bytes (ext4's limit; FAT long names are shorter).
pub(crate) const MAX_NAME_BYTES: usize = 255;
/// Symlinks followed while resolving one path.
pub(crate) const MAX_SYMLINKS: usize = 40;

/// Splits `path` into its components, dropping empty ones and `.`.
pub(crate) fn components<'p>(what: &str, path: &'p str) -> Result<Vec<&'p str>, FsError> {
    let invalid = |reason: &str| FsError::InvalidPath {
        what: what.to_owned(),
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid("longer than 4096 bytes"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("\"..\" is not accepted")),
            _ if part.contains('\0') => return Err(invalid("contains a NUL byte")),
            _ if part.len() > MAX_NAME_BYTES => {
                return Err(invalid("a component is longer than 255 bytes"));
            }
            _ => parts.push(part),
        }
    }
    if parts.len() > MAX_DEPTH {
        return Err(FsError::limit(
            what,
            format!("path {path:?} is deeper than {MAX_DEPTH} components"),
        ));
    }
    Ok(parts)
}

/// What a path walk needs to know of what a name leads to.
pub(crate) enum Step {
    Directory,
    Symlink,
    Other,
}

/// A volume whose names are looked up one directory at a time, for [`resolve`].
pub(crate) trait Walk {
    /// An inode, as the volume reads it.
    type Node: Clone;

    /// The volume's name, for errors.
    fn what(&self) -> &str;
    /// The root directory.
    fn root(&mut self) -> Result<Self::Node, FsError>;
    fn step(&self, node: &Self::Node) -> Step;
    /// The entry `name` of directory `dir`, if it has one.
    fn child(&mut self, dir: &Self::Node, name: &[u8]) -> Result<Option<Self::Node>, FsError>;
    /// The target of symlink `link`.
    fn target(&mut self, link: &Self::Node) -> Result<Vec<u8>, FsError>;
}

/// The final name and node of `path` in `volume`. Intermediate symlinks are followed
/// inside the volume (an absolute target starts again at the root, `..` never climbs above
/// it), the final component never; depth and the number of links followed are bounded.
pub(crate) fn resolve<W: Walk>(volume: &mut W, path: &str) -> Result<(String, W::Node), FsError> {
    let mut pending: Vec<Vec<u8>> = components(volume.what(), path)?
        .into_iter()
        .rev()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    // The names walked through, each with the directory holding it.
    let mut stack: Vec<(Vec<u8>, W::Node)> = Vec::new();
    let mut current = volume.root()?;
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_slice() {
            b"." => continue,
            b".." => {
                if let Some((_, parent)) = stack.pop() {
                    current = parent;
                }
                continue;
            }
            _ => {}
        }
        if !matches!(volume.step(&current), Step::Directory) {
            return Err(FsError::NotADirectory {
                what: volume.what().to_owned(),
                path: stack
                    .iter()
                    .map(|(n, _)| String::from_utf8_lossy(n))
                    .collect::<Vec<_>>()
                    .join("/"),
            });
        }
        let child = volume
            .child(&current, &part)?
            .ok_or_else(|| FsError::NotFound {
                what: volume.what().to_owned(),
                path: path.to_owned(),
            })?;
        stack.push((part, current));
        if stack.len() > MAX_DEPTH || pending.len() > MAX_DEPTH {
            return Err(FsError::limit(
                volume.what(),
                format!("path {path:?} resolves deeper than {MAX_DEPTH} components"),
            ));
        }
        if matches!(volume.step(&child), Step::Symlink) && !pending.is_empty() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(FsError::limit(
                    volume.what(),
                    format!("more than {MAX_SYMLINKS} symlinks while resolving {path:?}"),
                ));
            }
            let target = volume.target(&child)?;
            let (_, parent) = stack.pop().expect("pushed above");
            current = parent;
            if target.first() == Some(&b'/') {
                stack.clear();
                current = volume.root()?;
            }
            pending.extend(
                target
                    .split(|&b| b == b'/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(<[u8]>::to_vec),
            );
            continue;
        }
        current = child;
    }
    let name = stack
        .last()
        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default();
    Ok((name, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_refuses() {
        assert_eq!(components("v", "").unwrap(), Vec::<&str>::new());
        assert_eq!(
            components("v", "/etc//./hostname/").unwrap(),
            ["etc", "hostname"]
        );
        assert!(components("v", "etc/../x").is_err());
        assert!(components("v", "a\0b").is_err());
        assert!(components("v", &"x".repeat(256)).is_err());
        assert!(components("v", &"a/".repeat(300)).is_err());
    }
}
