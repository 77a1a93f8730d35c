//! Thin volumes of a device-mapper thin pool (`dm-thin`, which LVM2 thin pools are): the
//! pool's metadata maps each thin device's blocks onto the pool's data, and a block it
//! does not map reads as zeros. Snapshots are thin devices sharing blocks with their
//! origin, so they read the same way. Read here from the layout the kernel documents in
//! its sources (`drivers/md/dm-thin-metadata.c`).
//!
//! The superblock (little-endian, block 0 of the metadata, see [`pdata`](crate::pdata)
//! for its B-trees):
//!
//! ```text
//!   0x000 CSUM(u32, crc32c of bytes 4..4096, xor 160774) | 0x008 BLOCKNR(u64 = 0)
//!   0x020 MAGIC(u64 = 27022010) | 0x028 VERSION(u32, 1 or 2)
//!   0x140 DATA_MAPPING_ROOT(u64) | 0x150 DATA_BLOCK_SIZE(u32, sectors)
//!   0x154 METADATA_BLOCK_SIZE(u32, sectors = 8) | 0x168 INCOMPAT_FLAGS(u32 = 0)
//! ```
//!
//! The data mapping is a tree of trees: keyed by thin device id, its leaves hold the root
//! of that device's own tree, keyed by the device's block number, whose leaves hold
//! `data block << 24 | time`.

use std::io;

use tessera_disk_image::ReadAt;

use crate::FsError;
use crate::lvm::u64_le;
use crate::pdata::Metadata;

const MAGIC: u64 = 27_022_010;
const SUPERBLOCK_CSUM_XOR: u32 = 160_774;

/// A thin device of a pool, read through the pool's metadata and data volumes.
pub(crate) struct ThinReader {
    meta: Metadata,
    data: Box<dyn ReadAt>,
    /// The pool's data block, in bytes.
    block: u64,
    /// The root of the device's own tree.
    root: u64,
    size: u64,
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
        const KIND: &str = "thin pool metadata";
        let corrupt =
            |offset, detail: String| FsError::corrupt(what, offset, format!("{KIND}: {detail}"));
        let geometry = (0x168, 0x154, 0x150);
        let (mut meta, sb) = Metadata::open(
            meta,
            (MAGIC, SUPERBLOCK_CSUM_XOR),
            geometry,
            chunk,
            (what, KIND),
        )?;
        let root = meta
            .lookup(u64_le(&sb, 0x140), device)
            .map_err(|err| FsError::corrupt(what, None, err.to_string()))?
            .ok_or_else(|| corrupt(None, format!("no thin device {device} in the pool")))?;
        Ok(ThinReader {
            meta,
            data,
            block: chunk,
            root,
            size,
        })
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
            match self.meta.lookup(self.root, block)? {
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
                            self.meta.bad(format!(
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
    use crate::pdata::BLOCK;
    use crate::pdata::build::{NODE_XOR, node, seal};
    use crate::pdata::{INTERNAL_NODE, LEAF_NODE};
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
        seal(&mut full, NODE_XOR);
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

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::pdata::BLOCK;
    use crate::pdata::build::{NODE_XOR, seal};

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(500))]
        /// Metadata of random nodes, their checksums and block numbers made right (so the
        /// rest is read), never panics, whatever its flags, counts, keys and values.
        #[test]
        fn random_trees_never_panic(
            nodes in proptest::collection::vec(
                (0u32..4, 0u32..300, 0u32..300, proptest::collection::vec(proptest::prelude::any::<u64>(), 0..64)),
                1..6,
            ),
            reads in proptest::collection::vec(0u64..64, 1..8),
        ) {
            let mut meta = vec![0u8; BLOCK];
            meta[0x20..0x28].copy_from_slice(&MAGIC.to_le_bytes());
            meta[0x28..0x2c].copy_from_slice(&1u32.to_le_bytes());
            meta[0x140..0x148].copy_from_slice(&1u64.to_le_bytes());
            meta[0x150..0x154].copy_from_slice(&128u32.to_le_bytes());
            meta[0x154..0x158].copy_from_slice(&8u32.to_le_bytes());
            seal(&mut meta, SUPERBLOCK_CSUM_XOR);
            for (i, (flags, entries, max, words)) in nodes.iter().enumerate() {
                let mut b = vec![0u8; BLOCK];
                b[4..8].copy_from_slice(&flags.to_le_bytes());
                b[8..16].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                b[16..20].copy_from_slice(&entries.to_le_bytes());
                b[20..24].copy_from_slice(&max.to_le_bytes());
                b[24..28].copy_from_slice(&8u32.to_le_bytes());
                for (w, word) in words.iter().enumerate() {
                    // Small numbers, so keys and children point at the other nodes.
                    let value = if w % 2 == 0 { word % 8 } else { *word };
                    let at = 32 + 8 * w;
                    b[at..at + 8].copy_from_slice(&value.to_le_bytes());
                }
                seal(&mut b, NODE_XOR);
                meta.extend_from_slice(&b);
            }
            let data = vec![0u8; 4 << 16];
            if let Ok(mut thin) = ThinReader::open(
                Box::new(meta),
                Box::new(data),
                (0, 64 << 16, 64 << 10),
                "t",
            ) {
                for block in reads {
                    let _ = thin.read_exact_at(block << 16, &mut [0u8; 512]);
                }
            }
        }
    }
}
