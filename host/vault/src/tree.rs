//! Trees: the directory structure of a recovery point, stored as chunks so unchanged
//! subtrees deduplicate.
//!
//! A tree blob is a JSON document `{"version":1,"entries":[ENTRY...]}` with entries sorted
//! by name. A directory entry names its subtree's chunk id. Content is a list of extents
//! (chunk id and length, or a hole); past [`INLINE_EXTENTS`] extents the list moves into
//! separate list blobs of [`LIST_EXTENTS`] each, so a terabyte disk's entry stays small and
//! unchanged regions share list blobs. List blobs are binary (see [`LIST_MAGIC`]): a disk's
//! lists hold an extent per 64 KiB, and as JSON, with ids in hex, they cost an incremental
//! backup more to decode and encode than the changed blocks cost to store. A run of chunks
//! of one length, a disk's, is written as its length and the ids, so the list is as small
//! as its ids and nothing is left to compress. Lists written in the binary form of version
//! 2 or as JSON (`{"version":1,"extents":[...]}`) by earlier versions still read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::format::{
    ID_LEN, INLINE_EXTENTS, LIST_EXTENTS, LIST_MAGIC, LIST_MAGIC_V2, TREE_VERSION,
};
use crate::id::ChunkId;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EntryKind {
    /// A directory; its children are in `subtree`.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link, never followed.
    Symlink {
        /// The link's target, as stored in the link.
        target: String,
    },
    /// A further name of a file stored earlier in the same point.
    Hardlink {
        /// Path (within the point) of the entry holding the content.
        target: String,
    },
    /// A character device node (metadata only; `rdev` holds the device number).
    CharDevice,
    /// A block device node (metadata only; `rdev` holds the device number).
    BlockDeviceNode,
    /// A named pipe (metadata only).
    Fifo,
    /// A Unix socket (metadata only).
    Socket,
    /// The content of a block device or disk image.
    BlockDevice,
    /// A database backup stream (a dump or a base backup).
    DatabaseStream,
    /// A segment of a database's write-ahead log.
    LogSegment,
    /// An opaque document, such as a VM or app configuration.
    Blob,
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Attribute name.
    pub name: String,
    /// Attribute value.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

/// POSIX-style metadata of an entry; every field is optional because not every workload
/// has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Size in bytes of the content (or of the file the entry describes).
    #[serde(default)]
    pub size: u64,
    /// Permission and type bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Modification time, nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
    /// Access time, nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime_ns: Option<i64>,
    /// Status-change time, nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime_ns: Option<i64>,
    /// Inode number at capture, used to detect unchanged files and hardlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Device of the file system at capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    /// Device number of a device node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Link count at capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlink: Option<u64>,
    /// Extended attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Holes of a sparse file as `[offset, length]` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<[u64; 2]>,
}

/// A run of content: a stored chunk, or a hole of zeros that was never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// The chunk, or `None` for a hole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ChunkId>,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// A stored chunk.
    pub fn chunk(id: ChunkId, len: u64) -> Self {
        Extent { id: Some(id), len }
    }

    /// A hole.
    pub fn hole(len: u64) -> Self {
        Extent { id: None, len }
    }
}

/// A list blob of extents, referenced from an entry with a long content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRef {
    /// The list blob.
    pub id: ChunkId,
    /// Bytes of content the list covers.
    pub len: u64,
    /// Number of extents in the list.
    pub count: u32,
}

/// The content of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Content {
    /// Extents held in the entry itself.
    Extents(Vec<Extent>),
    /// Extents held in list blobs.
    Lists(Vec<ListRef>),
}

impl Default for Content {
    fn default() -> Self {
        Content::Extents(Vec::new())
    }
}

impl Content {
    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        match self {
            Content::Extents(e) => e.is_empty(),
            Content::Lists(l) => l.is_empty(),
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Extents(e) => e.iter().map(|x| x.len).sum(),
            Content::Lists(l) => l.iter().map(|x| x.len).sum(),
        }
    }
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Name within its directory.
    pub name: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: EntryKind,
    /// Metadata.
    #[serde(default)]
    pub meta: Metadata,
    /// Content.
    #[serde(default, skip_serializing_if = "Content::is_empty")]
    pub content: Content,
    /// For directories, the tree of children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<ChunkId>,
}

impl Entry {
    /// An entry of the given kind with empty metadata and content.
    pub fn new(name: impl Into<String>, kind: EntryKind) -> Self {
        Entry {
            name: name.into(),
            kind,
            meta: Metadata::default(),
            content: Content::default(),
            subtree: None,
        }
    }

    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Directory
    }
}

/// A directory's entries, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Format version.
    pub version: u32,
    /// Entries sorted by name.
    pub entries: Vec<Entry>,
}

impl Tree {
    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// A list blob's document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentList {
    /// Format version.
    pub version: u32,
    /// The extents.
    pub extents: Vec<Extent>,
}

/// Version of the binary list blobs.
const LIST_VERSION: u32 = 3;
const LIST_HOLE: u8 = 0;
const LIST_CHUNK: u8 = 1;
const LIST_RUN: u8 = 2;
/// Fewest bytes one extent of a list takes: a hole's record (kind and length). A count
/// of extents the bytes cannot hold is refused before it sizes an allocation.
const LIST_MIN_RECORD: usize = 1 + 8;

impl ExtentList {
    /// Encodes `extents` as a binary list blob (see [`LIST_MAGIC`]): chunks of one
    /// length in a row share a record.
    pub fn encode(extents: &[Extent]) -> Vec<u8> {
        let count = u32::try_from(extents.len()).expect("list blobs hold LIST_EXTENTS extents");
        let mut out = Vec::with_capacity(8 + extents.len() * ID_LEN + 16);
        out.extend_from_slice(&LIST_MAGIC);
        out.extend_from_slice(&count.to_le_bytes());
        let mut rest = extents;
        while let Some((first, _)) = rest.split_first() {
            if first.id.is_none() {
                out.push(LIST_HOLE);
                out.extend_from_slice(&first.len.to_le_bytes());
                rest = &rest[1..];
                continue;
            }
            let run = rest
                .iter()
                .take_while(|e| e.id.is_some() && e.len == first.len)
                .count();
            if run == 1 {
                out.push(LIST_CHUNK);
            } else {
                out.push(LIST_RUN);
                // At most `count` extents, which fits a u32.
                out.extend_from_slice(&(run as u32).to_le_bytes());
            }
            out.extend_from_slice(&first.len.to_le_bytes());
            for extent in &rest[..run] {
                let id = extent.id.as_ref().expect("runs hold chunks only");
                out.extend_from_slice(&id.0);
            }
            rest = &rest[run..];
        }
        out
    }

    /// Decodes a list blob, binary (version 3 or 2) or (as written by earlier versions)
    /// JSON; the error says what is wrong and at which byte.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let extents = if let Some(rest) = bytes.strip_prefix(&LIST_MAGIC) {
            decode_records(bytes, rest)?
        } else if let Some(rest) = bytes.strip_prefix(&LIST_MAGIC_V2) {
            decode_v2(bytes, rest)?
        } else {
            return serde_json::from_slice(bytes).map_err(|e| e.to_string());
        };
        Ok(ExtentList {
            version: LIST_VERSION,
            extents,
        })
    }
}

/// A list's extent count, and the bytes after it, checked against what the bytes can
/// hold at `min_record` bytes an extent.
fn list_count(rest: &[u8], min_record: usize) -> Result<(usize, &[u8]), String> {
    let (count, rest) = rest
        .split_first_chunk::<4>()
        .ok_or("the list ends inside its extent count")?;
    let count = u32::from_le_bytes(*count) as usize;
    if count > rest.len() / min_record {
        return Err(format!(
            "the list claims {count} extents but holds only {} bytes",
            rest.len()
        ));
    }
    Ok((count, rest))
}

/// Takes `N` bytes off the front of `rest`, or says that the list ends inside `what` at
/// its byte in `bytes`.
fn take<'a, const N: usize>(
    bytes: &[u8],
    rest: &mut &'a [u8],
    what: &str,
) -> Result<&'a [u8; N], String> {
    let at = bytes.len() - rest.len();
    let (taken, after) = rest
        .split_first_chunk::<N>()
        .ok_or_else(|| format!("the list ends inside {what} at byte {at}"))?;
    *rest = after;
    Ok(taken)
}

/// Refuses bytes left after a list's last extent, `rest` being the end of `bytes`.
fn all_read(bytes: &[u8], rest: &[u8]) -> Result<(), String> {
    if rest.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} bytes follow the last extent at byte {}",
        rest.len(),
        bytes.len() - rest.len()
    ))
}

/// Decodes the records of a version 3 list, `rest` being what follows the magic in
/// `bytes`.
fn decode_records(bytes: &[u8], rest: &[u8]) -> Result<Vec<Extent>, String> {
    let (count, mut rest) = list_count(rest, LIST_MIN_RECORD)?;
    let mut extents = Vec::with_capacity(count);
    while extents.len() < count {
        let at = bytes.len() - rest.len();
        let [kind] = *take::<1>(bytes, &mut rest, "a record")?;
        let run = match kind {
            LIST_HOLE | LIST_CHUNK => 1,
            LIST_RUN => {
                let n = u32::from_le_bytes(*take::<4>(bytes, &mut rest, "a run")?) as usize;
                let left = count - extents.len();
                if n < 2 || n > left {
                    return Err(format!(
                        "a run of {n} chunks at byte {at}: a run holds 2 or more, and the \
                         list has {left} extents left"
                    ));
                }
                n
            }
            other => return Err(format!("unknown extent kind {other} at byte {at}")),
        };
        let len = u64::from_le_bytes(*take::<8>(bytes, &mut rest, "an extent")?);
        if kind == LIST_HOLE {
            extents.push(Extent::hole(len));
            continue;
        }
        for _ in 0..run {
            let id = take::<ID_LEN>(bytes, &mut rest, "a chunk id")?;
            extents.push(Extent::chunk(ChunkId(*id), len));
        }
    }
    all_read(bytes, rest)?;
    Ok(extents)
}

/// Decodes the extents of a version 2 list, `rest` being what follows the magic in
/// `bytes`.
fn decode_v2(bytes: &[u8], rest: &[u8]) -> Result<Vec<Extent>, String> {
    let (count, mut rest) = list_count(rest, 8 + 1)?;
    let mut extents = Vec::with_capacity(count);
    for _ in 0..count {
        let at = bytes.len() - rest.len();
        let len = u64::from_le_bytes(*take::<8>(bytes, &mut rest, "an extent")?);
        let [kind] = *take::<1>(bytes, &mut rest, "an extent")?;
        match kind {
            LIST_HOLE => extents.push(Extent::hole(len)),
            LIST_CHUNK => {
                let id = take::<ID_LEN>(bytes, &mut rest, "a chunk id")?;
                extents.push(Extent::chunk(ChunkId(*id), len));
            }
            other => return Err(format!("unknown extent kind {other} at byte {}", at + 8)),
        }
    }
    all_read(bytes, rest)?;
    Ok(extents)
}

/// Why a path or an entry sequence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// A path is empty, absolute, or has `.`/`..`/empty components.
    #[error("invalid entry path '{0}': use relative paths with '/' separators and no '.' or '..'")]
    BadPath(String),
    /// An entry name appears twice in a directory.
    #[error(
        "entry '{0}' was added twice (entries of a directory must be added together, depth first)"
    )]
    Duplicate(String),
    /// A directory given with a subtree also got children.
    #[error("directory '{0}' was carried forward with its subtree and also given new children")]
    SubtreeConflict(String),
}

/// The path of the entry `name` in the directory at `dir` (`""` for the root).
pub(crate) fn child_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Splits and validates a relative entry path.
pub fn split_path(path: &str) -> Result<Vec<&str>, TreeError> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() || trimmed.starts_with('/') {
        return Err(TreeError::BadPath(path.to_string()));
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(TreeError::BadPath(path.to_string()));
    }
    Ok(parts)
}

/// Serializes a tree for storage.
pub fn encode_tree(entries: Vec<Entry>) -> Vec<u8> {
    serde_json::to_vec(&Tree {
        version: TREE_VERSION,
        entries,
    })
    .expect("trees always serialize")
}

/// Splits a long extent list into list-blob documents, returning `(document, len, count)`
/// for each; short lists stay inline (`None`).
pub fn split_extents(extents: &[Extent]) -> Option<Vec<(Vec<u8>, u64, u32)>> {
    if extents.len() <= INLINE_EXTENTS {
        return None;
    }
    Some(
        extents
            .chunks(LIST_EXTENTS)
            .map(|part| {
                let len = part.iter().map(|e| e.len).sum();
                (ExtentList::encode(part), len, part.len() as u32)
            })
            .collect(),
    )
}

struct OpenDir {
    name: String,
    entry: Option<Entry>,
    children: Vec<Entry>,
}

/// Builds the trees of a point from entries added depth first, storing each directory as
/// soon as it is complete so memory grows with the tree's depth, not its size.
///
/// A directory's entry must come before its children, and all of a directory's
/// descendants must come before the next entry outside it. Directories never given an
/// entry of their own are created with empty metadata.
pub struct TreeBuilder {
    stack: Vec<OpenDir>,
}

impl Default for TreeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeBuilder {
    /// A builder holding only the (empty) root.
    pub fn new() -> Self {
        TreeBuilder {
            stack: vec![OpenDir {
                name: String::new(),
                entry: None,
                children: Vec::new(),
            }],
        }
    }

    /// Adds an entry at `path`. `store` saves a finished tree document and returns its id.
    pub fn add<E: From<TreeError>>(
        &mut self,
        path: &str,
        mut entry: Entry,
        store: &mut impl FnMut(Vec<u8>) -> Result<ChunkId, E>,
    ) -> Result<(), E> {
        let parts = split_path(path)?;
        let (name, parents) = parts
            .split_last()
            .expect("split_path returns at least one part");
        let common = self.stack[1..]
            .iter()
            .zip(parents.iter())
            .take_while(|(dir, part)| dir.name == **part)
            .count();
        while self.stack.len() > common + 1 {
            self.close_top(store)?;
        }
        for part in &parents[common..] {
            self.stack.push(OpenDir {
                name: part.to_string(),
                entry: None,
                children: Vec::new(),
            });
        }
        entry.name = name.to_string();
        if entry.is_dir() {
            self.stack.push(OpenDir {
                name: name.to_string(),
                entry: Some(entry),
                children: Vec::new(),
            });
        } else {
            self.stack
                .last_mut()
                .expect("root is never popped")
                .children
                .push(entry);
        }
        Ok(())
    }

    fn close_top<E: From<TreeError>>(
        &mut self,
        store: &mut impl FnMut(Vec<u8>) -> Result<ChunkId, E>,
    ) -> Result<(), E> {
        let dir = self
            .stack
            .pop()
            .expect("close_top is called above the root");
        let mut entry = dir
            .entry
            .unwrap_or_else(|| Entry::new("", EntryKind::Directory));
        entry.name = dir.name;
        match (entry.subtree, dir.children.is_empty()) {
            (Some(_), true) => {}
            (Some(_), false) => return Err(TreeError::SubtreeConflict(entry.name).into()),
            (None, _) => entry.subtree = Some(store(encode_children(dir.children)?)?),
        }
        self.stack
            .last_mut()
            .expect("root is never popped")
            .children
            .push(entry);
        Ok(())
    }

    /// Closes every open directory and stores the root tree; returns its id.
    pub fn finish<E: From<TreeError>>(
        mut self,
        store: &mut impl FnMut(Vec<u8>) -> Result<ChunkId, E>,
    ) -> Result<ChunkId, E> {
        while self.stack.len() > 1 {
            self.close_top(store)?;
        }
        let root = self.stack.pop().expect("root");
        store(encode_children(root.children)?)
    }
}

fn encode_children(mut children: Vec<Entry>) -> Result<Vec<u8>, TreeError> {
    children.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = children.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(TreeError::Duplicate(pair[0].name.clone()));
    }
    Ok(encode_tree(children))
}

/// Lists every path in a set of trees held in memory (used by tests and `ls`).
pub fn flatten(
    root: &Tree,
    trees: &BTreeMap<ChunkId, Tree>,
    prefix: &str,
    out: &mut Vec<(String, Entry)>,
) {
    for entry in &root.entries {
        let path = if prefix.is_empty() {
            entry.name.clone()
        } else {
            format!("{prefix}/{}", entry.name)
        };
        out.push((path.clone(), entry.clone()));
        if let Some(sub) = entry.subtree.and_then(|id| trees.get(&id)) {
            flatten(sub, trees, &path, out);
        }
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(text.as_ref()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(paths: &[(&str, EntryKind)]) -> Result<(ChunkId, BTreeMap<ChunkId, Tree>), TreeError> {
        let mut trees = BTreeMap::new();
        let mut store = |doc: Vec<u8>| -> Result<ChunkId, TreeError> {
            let id = ChunkId::hash_of(&doc);
            trees.insert(id, serde_json::from_slice::<Tree>(&doc).unwrap());
            Ok(id)
        };
        let mut builder = TreeBuilder::new();
        for (path, kind) in paths {
            builder.add(path, Entry::new("", kind.clone()), &mut store)?;
        }
        let root = builder.finish(&mut store)?;
        Ok((root, trees))
    }

    #[test]
    fn builds_nested_trees_depth_first() {
        let (root, trees) = build(&[
            ("a", EntryKind::Directory),
            ("a/x", EntryKind::File),
            ("a/b/y", EntryKind::File),
            ("c", EntryKind::File),
            ("d/e/f", EntryKind::File),
        ])
        .unwrap();
        let mut out = Vec::new();
        flatten(&trees[&root], &trees, "", &mut out);
        let paths: Vec<&str> = out.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["a", "a/b", "a/b/y", "a/x", "c", "d", "d/e", "d/e/f"]
        );
    }

    #[test]
    fn identical_subtrees_share_ids() {
        let (_, trees) = build(&[("a/x", EntryKind::File), ("b/x", EntryKind::File)]).unwrap();
        // root, and one shared tree for both "a" and "b"
        assert_eq!(trees.len(), 2);
    }

    #[test]
    fn rejects_bad_paths_and_out_of_order_entries() {
        assert!(matches!(
            build(&[("../x", EntryKind::File)]),
            Err(TreeError::BadPath(_))
        ));
        assert!(matches!(
            build(&[("/x", EntryKind::File)]),
            Err(TreeError::BadPath(_))
        ));
        assert!(matches!(
            build(&[("a//x", EntryKind::File)]),
            Err(TreeError::BadPath(_))
        ));
        assert!(matches!(
            build(&[("a/x", EntryKind::File), ("b", EntryKind::File), ("a/y", EntryKind::File)]),
            Err(TreeError::Duplicate(name)) if name == "a"
        ));
    }

    #[test]
    fn long_extent_lists_split() {
        let extents: Vec<Extent> = (0..20_000u32)
            .map(|i| Extent::chunk(ChunkId::hash_of(&i.to_le_bytes()), 10))
            .collect();
        let lists = split_extents(&extents).unwrap();
        assert_eq!(lists.len(), 3);
        assert_eq!(lists.iter().map(|l| l.2).sum::<u32>(), 20_000);
        assert!(split_extents(&extents[..10]).is_none());
        let decoded: Vec<Extent> = lists
            .iter()
            .flat_map(|(doc, _, _)| ExtentList::decode(doc).unwrap().extents)
            .collect();
        assert_eq!(decoded, extents);
    }

    /// `extents` as a list blob of version 2, as earlier versions wrote it.
    fn encode_v2(extents: &[Extent]) -> Vec<u8> {
        let mut out = LIST_MAGIC_V2.to_vec();
        out.extend_from_slice(&(extents.len() as u32).to_le_bytes());
        for extent in extents {
            out.extend_from_slice(&extent.len.to_le_bytes());
            match &extent.id {
                Some(id) => {
                    out.push(LIST_CHUNK);
                    out.extend_from_slice(&id.0);
                }
                None => out.push(LIST_HOLE),
            }
        }
        out
    }

    #[test]
    fn binary_lists_round_trip_and_older_lists_still_read() {
        let extents = vec![
            Extent::chunk(ChunkId::hash_of(b"a"), 65536),
            Extent::hole(1 << 40),
            Extent::chunk(ChunkId::hash_of(b"b"), 7),
        ];
        let binary = ExtentList::encode(&extents);
        assert_eq!(binary.len(), 8 + 3 * 9 + 2 * 32);
        assert_eq!(ExtentList::decode(&binary).unwrap().extents, extents);
        let v2 = encode_v2(&extents);
        assert_eq!(ExtentList::decode(&v2).unwrap().extents, extents);
        let json = serde_json::to_vec(&ExtentList {
            version: 1,
            extents: extents.clone(),
        })
        .unwrap();
        assert_eq!(ExtentList::decode(&json).unwrap().extents, extents);
    }

    #[test]
    fn runs_of_chunks_of_one_length_cost_their_ids() {
        let id = |i: u32| ChunkId::hash_of(&i.to_le_bytes());
        let mut extents: Vec<Extent> = (0..1000).map(|i| Extent::chunk(id(i), 65536)).collect();
        // A hole, a lone chunk of another length, then another run.
        extents.push(Extent::hole(1 << 20));
        extents.push(Extent::chunk(id(1000), 4096));
        extents.extend((1001..1500).map(|i| Extent::chunk(id(i), 65536)));
        let binary = ExtentList::encode(&extents);
        // Two runs, a hole and a lone chunk: 1,500 ids and four record heads.
        assert_eq!(binary.len(), 8 + 1500 * 32 + 2 * (1 + 4 + 8) + 9 + (1 + 8));
        assert_eq!(ExtentList::decode(&binary).unwrap().extents, extents);
        assert_eq!(
            ExtentList::decode(&encode_v2(&extents)).unwrap().extents,
            extents
        );
        // A run claiming more chunks than the count leaves is refused.
        let mut long_run = binary.clone();
        long_run[9..13].copy_from_slice(&1502u32.to_le_bytes());
        let err = ExtentList::decode(&long_run).unwrap_err();
        assert!(err.contains("run of 1502 chunks at byte 8"), "{err}");
        let mut short_run = binary;
        short_run[9..13].copy_from_slice(&1u32.to_le_bytes());
        assert!(
            ExtentList::decode(&short_run)
                .unwrap_err()
                .contains("run of 1 ")
        );
    }

    #[test]
    fn damaged_binary_lists_are_errors() {
        let extents: Vec<Extent> = (0..50u32)
            .map(|i| match i % 5 {
                0 => Extent::hole(u64::from(i)),
                1 => Extent::chunk(ChunkId::hash_of(&i.to_le_bytes()), u64::from(i)),
                _ => Extent::chunk(ChunkId::hash_of(&i.to_le_bytes()), 4096),
            })
            .collect();
        for good in [ExtentList::encode(&extents), encode_v2(&extents)] {
            assert_eq!(ExtentList::decode(&good).unwrap().extents, extents);
            for cut in 0..good.len() {
                assert!(ExtentList::decode(&good[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = good.clone();
            longer.push(0);
            assert!(ExtentList::decode(&longer).unwrap_err().contains("follow"));
            let mut huge = good.clone();
            huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(ExtentList::decode(&huge).unwrap_err().contains("claims"));
        }
        let mut kind = ExtentList::encode(&extents);
        kind[8] = 9;
        assert!(
            ExtentList::decode(&kind)
                .unwrap_err()
                .contains("kind 9 at byte 8")
        );
        let mut kind = encode_v2(&extents);
        kind[8 + 8] = 9;
        assert!(
            ExtentList::decode(&kind)
                .unwrap_err()
                .contains("kind 9 at byte 16")
        );
        let good = ExtentList::encode(&extents);
        // Whatever the bytes, decoding returns.
        let mut state = 1u64;
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..4 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (state >> 33) as usize % bytes.len();
                bytes[at] = (state >> 13) as u8;
            }
            let _ = ExtentList::decode(&bytes);
        }
    }
}
