//! File-system helpers for plugins: directory listings in a stable order, so captures are
//! reproducible. Links are read and created through the host (`host::read-link`,
//! `host::make-symlink`), which, unlike WASI, keeps absolute targets verbatim.

use std::io;
use std::path::Path;

/// The names in directory `dir`, sorted by their bytes so captures are reproducible.
/// A name that is not UTF-8 (impossible through WASI, whose names are strings) is an
/// `InvalidData` error naming it.
pub fn sorted_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().into_string().map_err(|name| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file name {name:?} is not UTF-8"),
            )
        })?;
        names.push(name);
    }
    names.sort_unstable();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_names_sorted() {
        let dir = std::env::temp_dir().join(format!("tessera-sdk-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["b", "a", "C", "a b"] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        let names = sorted_names(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names.unwrap(), ["C", "a", "a b", "b"]);
    }
}
