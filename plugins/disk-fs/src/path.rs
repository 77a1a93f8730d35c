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
