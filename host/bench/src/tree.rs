//! Walking directory trees: the manifest a restore is checked against, and the bytes a
//! repository takes on disk.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Context, Result};

/// Bytes read from a file at a time while hashing it.
const READ_SIZE: usize = 1 << 20;

/// Differences listed by name in [`Differences::examples`].
const EXAMPLES: usize = 5;

/// One entry of a tree, as far as a restore has to reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file, by size and SHA-256 of its content.
    File {
        /// Length in bytes.
        size: u64,
        /// SHA-256 of the content.
        digest: [u8; 32],
    },
    /// A symbolic link, by its target.
    Symlink(PathBuf),
    /// A device node, FIFO or socket: only its kind is compared.
    Special,
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Dir => "directory",
            Node::File { .. } => "file",
            Node::Symlink(_) => "symlink",
            Node::Special => "special file",
        }
    }
}

/// Every entry below a directory, by path relative to it (the directory itself is not
/// listed). Building one reads every regular file in full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    nodes: BTreeMap<PathBuf, Node>,
}

/// Counts of a tree's entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSize {
    /// Regular files.
    pub files: u64,
    /// Directories, not counting the root.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Device nodes, FIFOs and sockets.
    pub special: u64,
    /// Bytes in regular files.
    pub bytes: u64,
}

impl Manifest {
    /// Walks `root` without following symbolic links, hashing every regular file. Any
    /// entry that cannot be read is an error naming it: a tree that cannot be read in
    /// full cannot be compared.
    pub fn build(root: &Path) -> Result<Manifest> {
        let mut nodes = BTreeMap::new();
        let mut buffer = vec![0u8; READ_SIZE];
        // Directories still to list: absolute, and relative to the root.
        let mut pending = vec![(root.to_path_buf(), PathBuf::new())];
        while let Some((dir, relative)) = pending.pop() {
            for entry in fs::read_dir(&dir).context(format!("cannot list {}", dir.display()))? {
                let entry = entry.context(format!("cannot list {}", dir.display()))?;
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .context(format!("cannot inspect {}", path.display()))?;
                let name = relative.join(entry.file_name());
                let node = if kind.is_dir() {
                    pending.push((path.clone(), name.clone()));
                    Node::Dir
                } else if kind.is_file() {
                    let (size, digest) = hash_file(&path, &mut buffer)?;
                    Node::File { size, digest }
                } else if kind.is_symlink() {
                    let target = fs::read_link(&path)
                        .context(format!("cannot read the link {}", path.display()))?;
                    Node::Symlink(target)
                } else {
                    Node::Special
                };
                nodes.insert(name, node);
            }
        }
        Ok(Manifest { nodes })
    }

    /// How many entries of each kind the tree holds, and the bytes of its files.
    pub fn size(&self) -> TreeSize {
        let mut size = TreeSize::default();
        for node in self.nodes.values() {
            match node {
                Node::Dir => size.dirs += 1,
                Node::File { size: bytes, .. } => {
                    size.files += 1;
                    size.bytes += bytes;
                }
                Node::Symlink(_) => size.symlinks += 1,
                Node::Special => size.special += 1,
            }
        }
        size
    }

    /// What `copy` lacks, adds or holds differently compared with this manifest.
    pub fn compare(&self, copy: &Manifest) -> Differences {
        let mut differences = Differences::default();
        for (path, node) in &self.nodes {
            match copy.nodes.get(path) {
                None => {
                    differences.missing += 1;
                    differences.note(format!("{}: missing", path.display()));
                }
                Some(other) if other != node => {
                    differences.changed += 1;
                    let how = match (node, other) {
                        (Node::File { size, .. }, Node::File { size: other, .. })
                            if size != other =>
                        {
                            format!("{size} bytes restored as {other}")
                        }
                        (Node::File { .. }, Node::File { .. }) => "content differs".to_string(),
                        (Node::Symlink(_), Node::Symlink(_)) => "link target differs".to_string(),
                        _ => format!("{} restored as {}", node.kind(), other.kind()),
                    };
                    differences.note(format!("{}: {how}", path.display()));
                }
                Some(_) => {}
            }
        }
        for path in copy.nodes.keys() {
            if !self.nodes.contains_key(path) {
                differences.extra += 1;
                differences.note(format!("{}: not in the original", path.display()));
            }
        }
        differences
    }
}

/// How a restored tree differs from the original.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Differences {
    /// Entries of the original the copy lacks.
    pub missing: u64,
    /// Entries of the copy the original lacks.
    pub extra: u64,
    /// Entries both hold, of another kind, size, content or link target.
    pub changed: u64,
    /// The first few differences, one line each.
    pub examples: Vec<String>,
}

impl Differences {
    /// Whether the copy equals the original.
    pub fn is_empty(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.changed == 0
    }

    /// Keeps `what` as an example, unless there are enough already.
    fn note(&mut self, what: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(what);
        }
    }

    /// A one-line summary: the counts and the first difference.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} missing, {} extra, {} different",
            self.missing, self.extra, self.changed
        );
        if let Some(first) = self.examples.first() {
            text.push_str(&format!(" (first: {first})"));
        }
        text
    }
}

/// Size and SHA-256 of a file's content.
fn hash_file(path: &Path, buffer: &mut [u8]) -> Result<(u64, [u8; 32])> {
    let mut file = File::open(path).context(format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = file
            .read(buffer)
            .context(format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize().into()))
}

/// Calls `visit` with the path and metadata of everything below `root` that is not a
/// directory (symbolic links not followed).
pub fn walk_files(root: &Path, mut visit: impl FnMut(PathBuf, &fs::Metadata)) -> Result<()> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).context(format!("cannot list {}", dir.display()))? {
            let entry = entry.context(format!("cannot list {}", dir.display()))?;
            let metadata = entry
                .metadata()
                .context(format!("cannot inspect {}", entry.path().display()))?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                visit(entry.path(), &metadata);
            }
        }
    }
    Ok(())
}

/// The apparent size of every regular file below `root` (symbolic links not followed): the
/// bytes a repository's objects hold, whatever the file system's block size.
pub fn apparent_size(root: &Path) -> Result<u64> {
    let mut total = 0u64;
    walk_files(root, |_, metadata| {
        if metadata.is_file() {
            total += metadata.len();
        }
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn sample(root: &Path) {
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        fs::write(root.join("top.txt"), b"hello").unwrap();
        fs::write(root.join("a/b/deep.bin"), vec![7u8; 3 * READ_SIZE + 5]).unwrap();
        fs::write(root.join("a/zero"), b"").unwrap();
        symlink("a/b/deep.bin", root.join("link")).unwrap();
        symlink("/nowhere", root.join("a/dangling")).unwrap();
    }

    #[test]
    fn a_manifest_counts_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let manifest = Manifest::build(dir.path()).unwrap();
        assert_eq!(
            manifest.size(),
            TreeSize {
                files: 3,
                dirs: 3,
                symlinks: 2,
                special: 0,
                bytes: 5 + 3 * READ_SIZE as u64 + 5,
            }
        );
        assert_eq!(
            apparent_size(dir.path()).unwrap(),
            5 + 3 * READ_SIZE as u64 + 5
        );
    }

    #[test]
    fn equal_trees_compare_equal() {
        let original = tempfile::tempdir().unwrap();
        let copy = tempfile::tempdir().unwrap();
        sample(original.path());
        sample(copy.path());
        let differences = Manifest::build(original.path())
            .unwrap()
            .compare(&Manifest::build(copy.path()).unwrap());
        assert!(differences.is_empty(), "{differences:?}");
    }

    #[test]
    fn every_kind_of_difference_is_found() {
        let original = tempfile::tempdir().unwrap();
        let copy = tempfile::tempdir().unwrap();
        sample(original.path());
        sample(copy.path());
        let root = copy.path();
        fs::remove_file(root.join("top.txt")).unwrap();
        fs::write(root.join("a/zero"), b"x").unwrap();
        fs::write(root.join("a/b/deep.bin"), vec![8u8; 3 * READ_SIZE + 5]).unwrap();
        fs::remove_file(root.join("link")).unwrap();
        symlink("elsewhere", root.join("link")).unwrap();
        fs::remove_dir(root.join("empty")).unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        fs::write(root.join("new"), b"").unwrap();

        let differences = Manifest::build(original.path())
            .unwrap()
            .compare(&Manifest::build(root).unwrap());
        assert_eq!((differences.missing, differences.extra), (1, 1));
        assert_eq!(differences.changed, 4);
        assert_eq!(
            differences.examples,
            [
                "a/b/deep.bin: content differs",
                "a/zero: 0 bytes restored as 1",
                "empty: directory restored as file",
                "link: link target differs",
                "top.txt: missing",
            ]
        );
        assert_eq!(
            differences.summary(),
            "1 missing, 1 extra, 4 different (first: a/b/deep.bin: content differs)"
        );
    }

    #[test]
    fn an_unreadable_tree_is_an_error() {
        let error = Manifest::build(Path::new("/nonexistent/tree")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot list /nonexistent/tree: ")
        );
    }
}
