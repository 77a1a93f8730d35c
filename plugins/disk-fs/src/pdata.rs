//! The kernel's persistent-data structures, which device-mapper's thin pools and caches
//! keep their metadata in: 4096-byte blocks, each checked by a crc32c and naming its own
//! block number, and B-trees of them keyed by `u64`. Read here from the layout the kernel
//! documents in its sources (`drivers/md/persistent-data/dm-btree*`, `dm-array.c`).
//!
//! ```text
//! B-tree node:
//!   0x00 CSUM(u32, crc32c of bytes 4..4096, xor 121107) | 0x04 FLAGS(u32: 1 internal, 2 leaf)
//!   0x08 BLOCKNR(u64) | 0x10 NR_ENTRIES(u32) | 0x14 MAX_ENTRIES(u32) | 0x18 VALUE_SIZE(u32)
//!   0x20 keys (u64 x MAX_ENTRIES, sorted), then values (VALUE_SIZE x MAX_ENTRIES); an
//!   internal node's values are its children's block numbers, each child holding the keys
//!   from its own key up to the next one's
//! ```
//!
//! A crc32c here is the kernel's: seeded with `!0`, without the final inversion. Every
//! block number and count is checked before use, and a lookup descends at most
//! [`MAX_DEPTH`] levels, so damaged or hostile metadata gives errors, not loops or panics.

use std::collections::HashMap;
use std::io;

use crc::{CRC_32_ISCSI, Crc};
use tessera_disk_image::ReadAt;

use crate::lvm::{u32_le, u64_le};
use crate::{FsError, read_exact};

/// The metadata's block size: the only one the kernel writes.
pub(crate) const BLOCK: usize = 4096;
const BTREE_CSUM_XOR: u32 = 121_107;
pub(crate) const INTERNAL_NODE: u32 = 1;
pub(crate) const LEAF_NODE: u32 = 2;
pub(crate) const NODE_HEADER: usize = 32;
/// Deepest a lookup descends: a tree of 4096-byte nodes over 2^64 keys has at most 9
/// levels below its root, and a thin device's tree sits below the pool's.
pub(crate) const MAX_DEPTH: usize = 24;
/// Most metadata blocks kept decoded (4 MiB): the nodes near the roots, and the leaves
/// that reads in order go through.
const CACHED_NODES: usize = 1024;

/// A crc32c as the kernel keeps it in these structures: the raw register, then `xor`.
pub(crate) fn checksum(bytes: &[u8], xor: u32) -> u32 {
    !Crc::<u32>::new(&CRC_32_ISCSI).checksum(bytes) ^ xor
}

/// The metadata volume of a thin pool or a cache, and the B-tree nodes read from it.
pub(crate) struct Metadata {
    reader: Box<dyn ReadAt>,
    nodes: HashMap<u64, Box<[u8]>>,
    /// What the metadata is (`thin pool metadata`), after the volume's name, in errors.
    what: String,
}

impl Metadata {
    /// The metadata in `reader`, `what` naming it in errors (`disk0/thin1: thin pool
    /// metadata`).
    fn new(reader: Box<dyn ReadAt>, what: String) -> Self {
        Metadata {
            reader,
            nodes: HashMap::new(),
            what,
        }
    }

    /// The metadata (`kind`, of volume `what`, in errors) in `reader`, and its superblock,
    /// checked: its `magic` number at 0x20, its checksum (with `xor`), its block number,
    /// and the `geometry` and `chunk` [`check_geometry`] checks.
    pub(crate) fn open(
        reader: Box<dyn ReadAt>,
        (magic, xor): (u64, u32),
        geometry: (usize, usize, usize),
        chunk: u64,
        (what, kind): (&str, &str),
    ) -> Result<(Self, Vec<u8>), FsError> {
        let mut meta = Metadata::new(reader, format!("{what}: {kind}"));
        let sb = meta.superblock(magic, xor, (what, kind))?;
        check_geometry(&sb, geometry, chunk, (what, kind))?;
        Ok((meta, sb))
    }

    /// Block 0 of `kind` (its name in errors), checked: its magic number at 0x20, its
    /// checksum with `xor`, and its block number. `volume` names the volume in errors.
    fn superblock(
        &mut self,
        magic: u64,
        xor: u32,
        (volume, kind): (&str, &str),
    ) -> Result<Vec<u8>, FsError> {
        let mut sb = vec![0u8; BLOCK];
        read_exact(&mut *self.reader, volume, 0, &mut sb)?;
        let problem = if u64_le(&sb, 0x20) != magic {
            "no superblock (magic missing)"
        } else if checksum(&sb[4..], xor) != u32_le(&sb, 0) {
            "the superblock's checksum does not match"
        } else if u64_le(&sb, 0x08) != 0 {
            "the superblock names another block as its own"
        } else {
            return Ok(sb);
        };
        Err(FsError::corrupt(
            volume,
            Some(0),
            format!("{kind}: {problem}"),
        ))
    }

    /// Metadata block `number`, checked against its checksum (with `xor`) and its own
    /// block number (a `u64` at `own_at`); `kind` names it in errors.
    pub(crate) fn block(
        &mut self,
        number: u64,
        (xor, own_at): (u32, usize),
        kind: &str,
    ) -> io::Result<Box<[u8]>> {
        let at = number
            .checked_mul(BLOCK as u64)
            .filter(|at| {
                at.checked_add(BLOCK as u64)
                    .is_some_and(|end| end <= self.reader.len())
            })
            .ok_or_else(|| self.bad(format!("{kind} block {number} is past the metadata's end")))?;
        let mut block = vec![0u8; BLOCK].into_boxed_slice();
        self.reader.read_exact_at(at, &mut block)?;
        if checksum(&block[4..], xor) != u32_le(&block, 0) {
            return Err(self.bad(format!("{kind} at block {number}: checksum does not match")));
        }
        if u64_le(&block, own_at) != number {
            return Err(self.bad(format!(
                "{kind} at block {number}: names another block as its own"
            )));
        }
        Ok(block)
    }

    /// Metadata block `number`, checked as a B-tree node of 8-byte values.
    fn node(&mut self, number: u64) -> io::Result<&[u8]> {
        if !self.nodes.contains_key(&number) {
            let node = self.block(number, (BTREE_CSUM_XOR, 0x08), "B-tree node")?;
            let flags = u32_le(&node, 0x04);
            let (entries, max, value) = (
                u32_le(&node, 0x10) as usize,
                u32_le(&node, 0x14) as usize,
                u32_le(&node, 0x18) as usize,
            );
            let problem = if flags != INTERNAL_NODE && flags != LEAF_NODE {
                Some("neither an internal node nor a leaf")
            } else if value != 8 {
                Some("values are not 8 bytes")
            } else if entries > max || NODE_HEADER + max * (8 + value) > BLOCK {
                Some("more entries than the node holds")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(self.bad(format!("B-tree node at block {number}: {problem}")));
            }
            if self.nodes.len() >= CACHED_NODES {
                self.nodes.clear();
            }
            self.nodes.insert(number, node);
        }
        Ok(&self.nodes[&number])
    }

    /// The value for `key` in the tree (of 8-byte values) whose root is block `root`.
    pub(crate) fn lookup(&mut self, root: u64, key: u64) -> io::Result<Option<u64>> {
        let mut block = root;
        for _ in 0..MAX_DEPTH {
            let node = self.node(block)?;
            let (entries, max) = (u32_le(node, 0x10) as usize, u32_le(node, 0x14) as usize);
            let key_at = |i: usize| u64_le(node, NODE_HEADER + 8 * i);
            let value_at = |i: usize| u64_le(node, NODE_HEADER + 8 * max + 8 * i);
            // Entries whose key is at most `key`; the last of them covers it.
            let (mut low, mut high) = (0, entries);
            while low < high {
                let mid = (low + high) / 2;
                if key_at(mid) <= key {
                    low = mid + 1;
                } else {
                    high = mid;
                }
            }
            if low == 0 {
                return Ok(None);
            }
            if u32_le(node, 0x04) == LEAF_NODE {
                return Ok((key_at(low - 1) == key).then(|| value_at(low - 1)));
            }
            block = value_at(low - 1);
        }
        Err(self.bad(format!(
            "a lookup descends more than {MAX_DEPTH} levels (a loop in the tree?)"
        )))
    }

    /// An error in the metadata.
    pub(crate) fn bad(&self, detail: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {detail}", self.what),
        )
    }
}

/// Checks what the kernel requires of a thin pool's or cache's superblock `sb` (`kind`, of
/// volume `what`, in errors): version 1 or 2 (at 0x28) without incompatible features (the
/// flags at `incompat_at`), metadata blocks of 4096 bytes (in sectors at `meta_at`), and
/// data blocks (in sectors at `data_at`) of `chunk` bytes, as the volume group's metadata
/// gives them.
fn check_geometry(
    sb: &[u8],
    (incompat_at, meta_at, data_at): (usize, usize, usize),
    chunk: u64,
    (what, kind): (&str, &str),
) -> Result<(), FsError> {
    let version = u32_le(sb, 0x28);
    let incompat = u32_le(sb, incompat_at);
    if !(1..=2).contains(&version) || incompat != 0 {
        return Err(FsError::unsupported(
            what,
            format!(
                "{kind} of version {version} with incompatible features {incompat:#x}; \
                 version 1 and 2 without them are read"
            ),
        ));
    }
    let meta_block = u64::from(u32_le(sb, meta_at)) * 512;
    if meta_block != BLOCK as u64 {
        return Err(FsError::corrupt(
            what,
            Some(meta_at as u64),
            format!("{kind}: metadata blocks of {meta_block} bytes, where the kernel writes 4096"),
        ));
    }
    let data_block = u64::from(u32_le(sb, data_at)) * 512;
    if data_block != chunk || chunk == 0 {
        return Err(FsError::corrupt(
            what,
            Some(data_at as u64),
            format!(
                "{kind}: data blocks of {data_block} bytes, where the volume group's metadata \
                 gives blocks of {chunk}"
            ),
        ));
    }
    Ok(())
}

/// Test helpers: blocks and nodes made with their checksums right.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    /// Sets `block`'s checksum, with `xor`.
    pub(crate) fn seal(block: &mut [u8], xor: u32) {
        let sum = checksum(&block[4..], xor);
        block[..4].copy_from_slice(&sum.to_le_bytes());
    }

    /// Metadata block `number` as a B-tree node of `flags` holding `entries`.
    pub(crate) fn node(number: u64, flags: u32, entries: &[(u64, u64)]) -> Vec<u8> {
        let max = (BLOCK - NODE_HEADER) / 16;
        let mut b = vec![0u8; BLOCK];
        b[4..8].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&number.to_le_bytes());
        b[16..20].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        b[20..24].copy_from_slice(&(max as u32).to_le_bytes());
        b[24..28].copy_from_slice(&8u32.to_le_bytes());
        for (i, (key, value)) in entries.iter().enumerate() {
            let k = NODE_HEADER + 8 * i;
            b[k..k + 8].copy_from_slice(&key.to_le_bytes());
            let v = NODE_HEADER + 8 * max + 8 * i;
            b[v..v + 8].copy_from_slice(&value.to_le_bytes());
        }
        seal(&mut b, BTREE_CSUM_XOR);
        b
    }

    /// An empty B-tree node's checksum is sealed with this.
    pub(crate) const NODE_XOR: u32 = BTREE_CSUM_XOR;
}
