//! Thin volumes of a device-mapper thin pool (`dm-thin`, which LVM2 thin pools are): the
//! pool's metadata maps each thin device's blocks onto the pool's data, and a block it
//! does not map reads as zeros. Snapshots are thin devices sharing blocks with their
//! origin, so they read the same way. Read here from the layout the kernel documents in
//! its sources (`drivers/md/dm-thin-metadata.c`, `persistent-data/dm-btree*`).
//!
//! Structures (little-endian; the metadata is in 4096-byte blocks):
//!
//! ```text
//! superblock, block 0:
//!   0x000 CSUM(u32, crc32c of bytes 4..4096, xor 160774) | 0x008 BLOCKNR(u64 = 0)
//!   0x020 MAGIC(u64 = 27022010) | 0x028 VERSION(u32, 1 or 2)
//!   0x140 DATA_MAPPING_ROOT(u64) | 0x150 DATA_BLOCK_SIZE(u32, sectors)
//!   0x154 METADATA_BLOCK_SIZE(u32, sectors = 8) | 0x168 INCOMPAT_FLAGS(u32 = 0)
//! B-tree node:
//!   0x00 CSUM(u32, crc32c of bytes 4..4096, xor 121107) | 0x04 FLAGS(u32: 1 internal, 2 leaf)
//!   0x08 BLOCKNR(u64) | 0x10 NR_ENTRIES(u32) | 0x14 MAX_ENTRIES(u32) | 0x18 VALUE_SIZE(u32)
//!   0x20 keys (u64 x MAX_ENTRIES, sorted), then values (VALUE_SIZE x MAX_ENTRIES); an
//!   internal node's values are its children's block numbers, each child holding the keys
//!   from its own key up to the next one's
//! ```
//!
//! The data mapping is a tree of trees: keyed by thin device id, its leaves hold the root
//! of that device's own tree, keyed by the device's block number, whose leaves hold
//! `data block << 24 | time`. A crc32c here is the kernel's: seeded with `!0`, without the
//! final inversion.
//!
//! Every block number and count is checked before use, and a lookup descends at most
//! [`MAX_DEPTH`] levels, so a damaged or hostile pool gives errors, not loops or panics.

use std::collections::HashMap;
use std::io;

use crc::{CRC_32_ISCSI, Crc};
use tessera_disk_image::ReadAt;

use crate::lvm::{u32_le, u64_le};
use crate::{FsError, read_exact};

/// The metadata's block size: the only one the kernel writes.
const BLOCK: usize = 4096;
const MAGIC: u64 = 27_022_010;
const SUPERBLOCK_CSUM_XOR: u32 = 160_774;
const BTREE_CSUM_XOR: u32 = 121_107;
const INTERNAL_NODE: u32 = 1;
const LEAF_NODE: u32 = 2;
const NODE_HEADER: usize = 32;
/// Deepest a lookup descends: a tree of 4096-byte nodes over 2^64 keys has at most 9
/// levels below its root, and the device tree sits below the pool's.
const MAX_DEPTH: usize = 24;
/// Most metadata blocks kept decoded (4 MiB): the nodes near the roots, and the leaves
/// that reads in order go through.
const CACHED_NODES: usize = 1024;

/// A crc32c as the kernel keeps it in these structures: the raw register, then `xor`.
fn checksum(bytes: &[u8], xor: u32) -> u32 {
    !Crc::<u32>::new(&CRC_32_ISCSI).checksum(bytes) ^ xor
}

/// A thin device of a pool, read through the pool's metadata and data volumes.
pub(crate) struct ThinReader {
    meta: Box<dyn ReadAt>,
    data: Box<dyn ReadAt>,
    /// The pool's data block, in bytes.
    block: u64,
    /// The root of the device's own tree.
    root: u64,
    size: u64,
    nodes: HashMap<u64, Box<[u8]>>,
    what: String,
}

impl ThinReader {
    /// Reads thin device `device` (`size` bytes) of the pool whose metadata volume is
    /// `meta` and data volume `data`; `chunk` is the pool's data block size as the volume
    /// group's metadata gives it, in bytes, which the pool's own metadata must agree with.
    /// `what` names the thin volume in errors.
    pub(crate) fn open(
        meta: Box<dyn ReadAt>,
        data: Box<dyn ReadAt>,
        (device, size, chunk): (u64, u64, u64),
        what: &str,
    ) -> Result<Self, FsError> {
        let corrupt = |offset, detail: String| {
            FsError::corrupt(what, offset, format!("thin pool metadata: {detail}"))
        };
        let mut reader = ThinReader {
            meta,
            data,
            block: chunk,
            root: 0,
            size,
            nodes: HashMap::new(),
            what: what.to_owned(),
        };
        let mut sb = vec![0u8; BLOCK];
        read_exact(&mut *reader.meta, what, 0, &mut sb)?;
        if u64_le(&sb, 0x20) != MAGIC {
            return Err(corrupt(Some(0), "no superblock (magic missing)".to_owned()));
        }
        if checksum(&sb[4..], SUPERBLOCK_CSUM_XOR) != u32_le(&sb, 0) {
            return Err(corrupt(
                Some(0),
                "the superblock's checksum does not match".to_owned(),
            ));
        }
        if u64_le(&sb, 0x08) != 0 {
            return Err(corrupt(
                Some(0),
                "the superblock names another block as its own".to_owned(),
            ));
        }
        let version = u32_le(&sb, 0x28);
        let incompat = u32_le(&sb, 0x168);
        if !(1..=2).contains(&version) || incompat != 0 {
            return Err(FsError::unsupported(
                what,
                format!(
                    "thin pool metadata of version {version} with incompatible features \
                     {incompat:#x}; version 1 and 2 without them are read"
                ),
            ));
        }
        let meta_block = u64::from(u32_le(&sb, 0x154)) * 512;
        if meta_block != BLOCK as u64 {
            return Err(corrupt(
                Some(0x154),
                format!("metadata blocks of {meta_block} bytes, where the kernel writes 4096"),
            ));
        }
        let data_block = u64::from(u32_le(&sb, 0x150)) * 512;
        if data_block != chunk || chunk == 0 {
            return Err(corrupt(
                Some(0x150),
                format!(
                    "data blocks of {data_block} bytes, where the volume group's metadata \
                     gives chunks of {chunk}"
                ),
            ));
        }
        let mapping = u64_le(&sb, 0x140);
        reader.root = reader
            .lookup(mapping, device)
            .map_err(|err| corrupt(None, err.to_string()))?
            .ok_or_else(|| corrupt(None, format!("no thin device {device} in the pool")))?;
        Ok(reader)
    }

    /// Metadata block `number`, checked as a B-tree node.
    fn node(&mut self, number: u64) -> io::Result<&[u8]> {
        if !self.nodes.contains_key(&number) {
            let at = number
                .checked_mul(BLOCK as u64)
                .filter(|at| {
                    at.checked_add(BLOCK as u64)
                        .is_some_and(|end| end <= self.meta.len())
                })
                .ok_or_else(|| {
                    self.bad(format!("node block {number} is past the metadata's end"))
                })?;
            let mut node = vec![0u8; BLOCK].into_boxed_slice();
            self.meta.read_exact_at(at, &mut node)?;
            let flags = u32_le(&node, 0x04);
            let (entries, max, value) = (
                u32_le(&node, 0x10) as usize,
                u32_le(&node, 0x14) as usize,
                u32_le(&node, 0x18) as usize,
            );
            let problem = if checksum(&node[4..], BTREE_CSUM_XOR) != u32_le(&node, 0) {
                Some("checksum does not match")
            } else if u64_le(&node, 0x08) != number {
                Some("the node names another block as its own")
            } else if flags != INTERNAL_NODE && flags != LEAF_NODE {
                Some("neither an internal node nor a leaf")
            } else if value != 8 {
                Some("values are not 8 bytes (not a data mapping tree)")
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

    /// The value for `key` in the tree whose root is metadata block `root`.
    fn lookup(&mut self, root: u64, key: u64) -> io::Result<Option<u64>> {
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

    fn bad(&self, detail: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: thin pool metadata: {detail}", self.what),
        )
    }
}

impl ReadAt for ThinReader {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(<[u8]>::len(buf) as u64)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let mut at = offset;
        while at < end {
            let (block, into) = (at / self.block, at % self.block);
            let n = (self.block - into).min(end - at);
            let out = &mut buf[(at - offset) as usize..][..n as usize];
            match self.lookup(self.root, block)? {
                None => out.fill(0),
                Some(value) => {
                    let data = value >> 24;
                    let from = data
                        .checked_mul(self.block)
                        .filter(|from| {
                            from.checked_add(self.block)
                                .is_some_and(|end| end <= self.data.len())
                        })
                        .ok_or_else(|| {
                            self.bad(format!(
                                "block {block} maps to data block {data}, past the pool's end"
                            ))
                        })?;
                    self.data.read_exact_at(from + into, out)?;
                }
            }
            at += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metadata block `number` as a B-tree node of `flags` holding `entries`, its checksum
    /// right.
    fn node(number: u64, flags: u32, entries: &[(u64, u64)]) -> Vec<u8> {
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

    fn seal(block: &mut [u8], xor: u32) {
        let sum = checksum(&block[4..], xor);
        block[..4].copy_from_slice(&sum.to_le_bytes());
    }

    /// Metadata whose mapping tree's root is block 1, followed by `nodes` (blocks 1, 2…).
    fn metadata(nodes: &[Vec<u8>]) -> Vec<u8> {
        let mut sb = vec![0u8; BLOCK];
        sb[0x20..0x28].copy_from_slice(&MAGIC.to_le_bytes());
        sb[0x28..0x2c].copy_from_slice(&2u32.to_le_bytes());
        sb[0x140..0x148].copy_from_slice(&1u64.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&128u32.to_le_bytes());
        sb[0x154..0x158].copy_from_slice(&8u32.to_le_bytes());
        seal(&mut sb, SUPERBLOCK_CSUM_XOR);
        let mut meta = sb;
        for n in nodes {
            meta.extend_from_slice(n);
        }
        meta
    }

    const CHUNK: u64 = 64 << 10;

    fn open(meta: Vec<u8>, data: Vec<u8>) -> Result<ThinReader, FsError> {
        ThinReader::open(Box::new(meta), Box::new(data), (7, 4 * CHUNK, CHUNK), "t")
    }

    #[test]
    fn blocks_map_onto_the_pool_and_unmapped_ones_read_as_zeros() {
        // Device 7's tree: an internal root (block 2) over two leaves (blocks 3 and 4).
        let meta = metadata(&[
            node(1, LEAF_NODE, &[(3, 9), (7, 2)]),
            node(2, INTERNAL_NODE, &[(0, 3), (2, 4)]),
            node(3, LEAF_NODE, &[(0, 1 << 24 | 5)]),
            node(4, LEAF_NODE, &[(3, 0)]),
        ]);
        let mut data = vec![0u8; 2 * CHUNK as usize];
        data[..CHUNK as usize].fill(0xd0);
        data[CHUNK as usize..].fill(0xd1);
        let mut thin = open(meta, data).unwrap();
        let mut all = vec![0xffu8; 4 * CHUNK as usize];
        thin.read_exact_at(0, &mut all).unwrap();
        let fills: Vec<u8> = all.chunks(CHUNK as usize).map(|c| c[0]).collect();
        assert_eq!(fills, [0xd1, 0, 0, 0xd0]);
        assert!(
            all.chunks(CHUNK as usize)
                .all(|c| c.iter().all(|&b| b == c[0]))
        );
        // Across a block's end.
        let mut two = [0u8; 2];
        thin.read_exact_at(CHUNK - 1, &mut two).unwrap();
        assert_eq!(two, [0xd1, 0]);
        assert!(thin.read_exact_at(4 * CHUNK - 1, &mut two).is_err());
    }

    #[test]
    fn hostile_trees_are_errors() {
        let data = vec![0u8; CHUNK as usize];
        let read = |nodes: &[Vec<u8>]| -> String {
            match open(metadata(nodes), data.clone()) {
                Err(err) => err.to_string(),
                Ok(mut thin) => thin
                    .read_exact_at(0, &mut vec![0u8; CHUNK as usize])
                    .map_or_else(|e| e.to_string(), |()| "read".to_owned()),
            }
        };
        // An internal node that is its own child.
        let looped = read(&[
            node(1, LEAF_NODE, &[(7, 2)]),
            node(2, INTERNAL_NODE, &[(0, 2)]),
        ]);
        assert!(looped.contains("more than 24 levels"), "{looped}");
        // A data block past the pool's end.
        let past = read(&[
            node(1, LEAF_NODE, &[(7, 2)]),
            node(2, LEAF_NODE, &[(0, 1 << 24)]),
        ]);
        assert!(past.contains("past the pool's end"), "{past}");
        // A child past the metadata's end; a node naming another block.
        let beyond = read(&[
            node(1, LEAF_NODE, &[(7, 2)]),
            node(2, INTERNAL_NODE, &[(0, 1 << 60)]),
        ]);
        assert!(beyond.contains("past the metadata's end"), "{beyond}");
        let moved = read(&[node(1, LEAF_NODE, &[(7, 2)]), node(5, LEAF_NODE, &[])]);
        assert!(moved.contains("names another block"), "{moved}");
        // More entries than the node has room for.
        let mut full = node(2, LEAF_NODE, &[]);
        full[16..20].copy_from_slice(&1000u32.to_le_bytes());
        seal(&mut full, BTREE_CSUM_XOR);
        let over = read(&[node(1, LEAF_NODE, &[(7, 2)]), full]);
        assert!(over.contains("more entries"), "{over}");
        // No device 7; a pool of another data block size.
        let absent = read(&[node(1, LEAF_NODE, &[(6, 2)])]);
        assert!(absent.contains("no thin device 7"), "{absent}");
        let other = ThinReader::open(
            Box::new(metadata(&[node(1, LEAF_NODE, &[])])),
            Box::new(data.clone()),
            (7, CHUNK, 2 * CHUNK),
            "t",
        );
        assert!(other.is_err_and(|e| e.to_string().contains("data blocks of 65536 bytes")));
    }
}
