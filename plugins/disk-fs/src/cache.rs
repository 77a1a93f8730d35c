//! Cached volumes (`dm-cache`, which LVM2 cache volumes are): a slow origin volume whose
//! blocks a faster cache holds copies of, the cache's metadata mapping each of its blocks
//! to the origin block it holds. Read here from the layout the kernel documents in its
//! sources (`drivers/md/dm-cache-metadata.c`, `persistent-data/dm-array.c`).
//!
//! The superblock (little-endian, block 0 of the metadata, see [`pdata`](crate::pdata)
//! for its B-trees) and the mapping array:
//!
//! ```text
//! superblock:
//!   0x000 CSUM(u32, crc32c of bytes 4..4096, xor 9031977) | 0x004 FLAGS(u32)
//!   0x008 BLOCKNR(u64 = 0) | 0x020 MAGIC(u64 = 1623043) | 0x028 VERSION(u32, 1 or 2)
//!   0x0c0 MAPPING_ROOT(u64) | 0x0e8 DATA_BLOCK_SIZE(u32, sectors)
//!   0x0ec METADATA_BLOCK_SIZE(u32, sectors = 8) | 0x0f0 CACHE_BLOCKS(u32)
//!   0x0fc INCOMPAT_FLAGS(u32 = 0)
//! array block:
//!   0x00 CSUM(u32, crc32c of bytes 4..4096, xor 595846735) | 0x04 MAX_ENTRIES(u32)
//!   0x08 NR_ENTRIES(u32) | 0x0c VALUE_SIZE(u32 = 8) | 0x10 BLOCKNR(u64) | 0x18 values
//! ```
//!
//! The mapping array is a B-tree keyed by array block index, whose values are the array
//! blocks; entry `n` of the array, for cache block `n`, is `origin block << 16 | flags`
//! (bit 0: the mapping is valid, bit 1: the cache block is dirty).
//!
//! A valid mapping's cache block is read in place of its origin block, dirty or not: the
//! cache holds the newest copy of every block it maps (a clean one equals the origin's),
//! and after a crash the kernel itself takes every mapped block for dirty, as a dirty
//! flag set after the metadata's last commit is not in it.

use std::io;

use tessera_disk_image::ReadAt;

use crate::FsError;
use crate::lvm::{u32_le, u64_le};
use crate::pdata::{BLOCK, Metadata};

const MAGIC: u64 = 0o6_142_003;
const SUPERBLOCK_CSUM_XOR: u32 = 9_031_977;
const ARRAY_CSUM_XOR: u32 = 595_846_735;
const ARRAY_HEADER: usize = 24;
/// Entries of 8 bytes in an array block.
const PER_BLOCK: u64 = ((BLOCK - ARRAY_HEADER) / 8) as u64;
const M_VALID: u64 = 1;
/// Most cache blocks read (LVM2 keeps a cache under a million by default).
const MAX_CACHE_BLOCKS: u64 = 1 << 24;

/// A volume read from `base` but for the blocks `map` sends to `over`: a cached volume's
/// origin and cache, a snapshot's origin and exception store.
pub(crate) struct Overlay {
    base: Box<dyn ReadAt>,
    over: Box<dyn ReadAt>,
    /// The blocks, in bytes.
    block: u64,
    /// (block of `base`, block of `over` read in its place), by the first; each block of
    /// `over` within its length.
    map: Vec<(u64, u64)>,
}

impl ReadAt for Overlay {
    fn len(&self) -> u64 {
        self.base.len()
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(<[u8]>::len(buf) as u64)
            .filter(|&end| end <= self.base.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let mut at = offset;
        while at < end {
            let (block, into) = (at / self.block, at % self.block);
            let n = (self.block - into).min(end - at);
            let out = &mut buf[(at - offset) as usize..][..n as usize];
            match self.map.binary_search_by_key(&block, |&(base, _)| base) {
                Ok(i) => self
                    .over
                    .read_exact_at(self.map[i].1 * self.block + into, out)?,
                Err(_) => self.base.read_exact_at(at, out)?,
            }
            at += n;
        }
        Ok(())
    }
}

impl Overlay {
    /// `base` with the blocks (of `block` bytes) `map` sends to `over` read there; `map`
    /// sorted, without repeats, and within `over`.
    pub(crate) fn new(
        (base, over): (Box<dyn ReadAt>, Box<dyn ReadAt>),
        block: u64,
        map: Vec<(u64, u64)>,
    ) -> Self {
        Overlay {
            base,
            over,
            block,
            map,
        }
    }
}

/// Reads `origin` cached in `cache`, as the metadata in `meta` maps it; `chunk` is the
/// cache's block size as the volume group's metadata gives it, in bytes, which the cache's
/// own metadata must agree with. `what` names the cached volume in errors.
pub(crate) fn open(
    meta: Box<dyn ReadAt>,
    (origin, cache): (Box<dyn ReadAt>, Box<dyn ReadAt>),
    chunk: u64,
    what: &str,
) -> Result<Overlay, FsError> {
    const KIND: &str = "cache metadata";
    let corrupt =
        |offset, detail: String| FsError::corrupt(what, offset, format!("{KIND}: {detail}"));
    let geometry = (0xfc, 0xec, 0xe8);
    let (mut meta, sb) = Metadata::open(
        meta,
        (MAGIC, SUPERBLOCK_CSUM_XOR),
        geometry,
        chunk,
        (what, KIND),
    )?;
    let blocks = u64::from(u32_le(&sb, 0xf0));
    if blocks > MAX_CACHE_BLOCKS {
        return Err(FsError::LimitExceeded {
            what: what.to_owned(),
            detail: format!("a cache of {blocks} blocks (at most {MAX_CACHE_BLOCKS} are read)"),
        });
    }
    if blocks.saturating_mul(chunk) > cache.len() {
        return Err(corrupt(
            Some(0xf0),
            format!(
                "{blocks} cache blocks of {chunk} bytes, past the end of the {}-byte cache",
                cache.len()
            ),
        ));
    }
    let origin_blocks = origin.len().div_ceil(chunk);
    let root = u64_le(&sb, 0xc0);
    let mut map = Vec::new();
    let io_error = |err: io::Error| FsError::corrupt(what, None, err.to_string());
    for index in 0..blocks.div_ceil(PER_BLOCK) {
        let at = meta
            .lookup(root, index)
            .map_err(io_error)?
            .ok_or_else(|| corrupt(None, format!("mapping array block {index} missing")))?;
        let array = meta
            .block(at, (ARRAY_CSUM_XOR, 0x10), "mapping array block")
            .map_err(io_error)?;
        let (max, entries, size) = (
            u64::from(u32_le(&array, 0x04)),
            u64::from(u32_le(&array, 0x08)),
            u32_le(&array, 0x0c),
        );
        let first = index * PER_BLOCK;
        if max != PER_BLOCK || size != 8 || entries > max || first + entries > blocks {
            return Err(corrupt(
                None,
                format!(
                    "mapping array block {index} (at block {at}) holds {entries} of {max} \
                     entries of {size} bytes"
                ),
            ));
        }
        for n in 0..entries {
            let value = u64_le(&array, ARRAY_HEADER + 8 * n as usize);
            if value & M_VALID == 0 {
                continue;
            }
            let block = value >> 16;
            if block >= origin_blocks {
                return Err(corrupt(
                    None,
                    format!(
                        "cache block {} maps origin block {block}, past the origin's end",
                        first + n
                    ),
                ));
            }
            map.push((block, first + n));
        }
    }
    map.sort_unstable();
    if let Some(pair) = map.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(corrupt(
            None,
            format!(
                "origin block {} is in cache blocks {} and {}",
                pair[0].0, pair[0].1, pair[1].1
            ),
        ));
    }
    Ok(Overlay::new((origin, cache), chunk, map))
}

/// Cache metadata built with its checksums right, for the tests.
#[cfg(test)]
mod tests_support {
    pub(super) use super::*;
    pub(super) use crate::pdata::LEAF_NODE;
    pub(super) use crate::pdata::build::{node, seal};

    pub(super) const CHUNK: u64 = 64 << 10;

    /// Cache metadata of `blocks` cache blocks whose mapping array's root is block 1,
    /// followed by `blocks_after` (blocks 1, 2…).
    pub(super) fn metadata(blocks: u32, blocks_after: &[Vec<u8>]) -> Vec<u8> {
        let mut sb = vec![0u8; BLOCK];
        sb[0x20..0x28].copy_from_slice(&MAGIC.to_le_bytes());
        sb[0x28..0x2c].copy_from_slice(&2u32.to_le_bytes());
        sb[0xc0..0xc8].copy_from_slice(&1u64.to_le_bytes());
        sb[0xe8..0xec].copy_from_slice(&128u32.to_le_bytes());
        sb[0xec..0xf0].copy_from_slice(&8u32.to_le_bytes());
        sb[0xf0..0xf4].copy_from_slice(&blocks.to_le_bytes());
        seal(&mut sb, SUPERBLOCK_CSUM_XOR);
        let mut meta = sb;
        for b in blocks_after {
            meta.extend_from_slice(b);
        }
        meta
    }

    /// Array block `number` holding `values`, of `max` entries.
    pub(super) fn array(number: u64, max: u32, values: &[u64]) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        b[4..8].copy_from_slice(&max.to_le_bytes());
        b[8..12].copy_from_slice(&(values.len() as u32).to_le_bytes());
        b[12..16].copy_from_slice(&8u32.to_le_bytes());
        b[16..24].copy_from_slice(&number.to_le_bytes());
        for (i, v) in values.iter().enumerate() {
            b[24 + 8 * i..32 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        seal(&mut b, ARRAY_CSUM_XOR);
        b
    }

    /// An origin of eight blocks filled with their numbers, a cache of four filled with
    /// 0xc0 and theirs.
    pub(super) fn open(meta: Vec<u8>) -> Result<Overlay, FsError> {
        let origin: Vec<u8> = (0..8u8).flat_map(|n| vec![n; CHUNK as usize]).collect();
        let cache: Vec<u8> = (0..4u8)
            .flat_map(|n| vec![0xc0 | n; CHUNK as usize])
            .collect();
        super::open(
            Box::new(meta),
            (Box::new(origin), Box::new(cache)),
            CHUNK,
            "c",
        )
    }

    pub(super) const PER: u32 = PER_BLOCK as u32;

    /// The mapping array's root: a leaf whose one entry is array block 0, at block 2.
    pub(super) fn leaf() -> Vec<u8> {
        node(1, LEAF_NODE, &[(0, 2)])
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;

    #[test]
    fn mapped_blocks_read_from_the_cache() {
        // Cache block 1 holds origin block 3; cache block 2's mapping is not valid.
        let meta = metadata(
            4,
            &[
                node(1, LEAF_NODE, &[(0, 2)]),
                array(2, PER, &[0, 3 << 16 | 3, 5 << 16 | 2, 0]),
            ],
        );
        let mut cache = open(meta).unwrap();
        let mut all = vec![0u8; 8 * CHUNK as usize];
        cache.read_exact_at(0, &mut all).unwrap();
        let fills: Vec<u8> = all.chunks(CHUNK as usize).map(|c| c[0]).collect();
        assert_eq!(fills, [0, 1, 2, 0xc1, 4, 5, 6, 7]);
        let mut two = [0u8; 2];
        cache.read_exact_at(4 * CHUNK - 1, &mut two).unwrap();
        assert_eq!(two, [0xc1, 4]);
    }

    #[test]
    fn hostile_mappings_are_errors() {
        let fails = |blocks: u32, after: &[Vec<u8>]| {
            open(metadata(blocks, after)).err().unwrap().to_string()
        };
        let past = fails(4, &[leaf(), array(2, PER, &[9 << 16 | 1])]);
        assert!(past.contains("past the origin's end"), "{past}");
        let twice = fails(4, &[leaf(), array(2, PER, &[3 << 16 | 1, 3 << 16 | 1])]);
        assert!(
            twice.contains("origin block 3 is in cache blocks 0 and 1"),
            "{twice}"
        );
        let shape = fails(4, &[leaf(), array(2, 7, &[])]);
        assert!(shape.contains("holds 0 of 7 entries"), "{shape}");
        let over = fails(2, &[leaf(), array(2, PER, &[0, 0, 0])]);
        assert!(over.contains("holds 3 of"), "{over}");
        let missing = fails(4, &[node(1, LEAF_NODE, &[(1, 2)])]);
        assert!(
            missing.contains("mapping array block 0 missing"),
            "{missing}"
        );
        let big = fails(5, &[leaf(), array(2, PER, &[])]);
        assert!(big.contains("past the end of the"), "{big}");
        let mut bad = array(2, PER, &[]);
        bad[100] ^= 1;
        let sum = fails(4, &[leaf(), bad]);
        assert!(sum.contains("checksum does not match"), "{sum}");
    }
}

#[cfg(test)]
mod fuzz {
    use super::tests_support::*;

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(500))]
        /// A mapping array of random entries and shape, its checksums right, never panics,
        /// and what opens reads.
        #[test]
        fn random_mappings_never_panic(
            blocks in 0u32..8,
            max in 500u32..520,
            values in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..12),
            small in proptest::prelude::any::<bool>(),
        ) {
            // Small origin blocks reach the reads; any others the checks.
            let values: Vec<u64> = values
                .iter()
                .map(|v| if small { (v % 10) << 16 | (v & 3) } else { *v })
                .collect();
            let meta = metadata(blocks, &[leaf(), array(2, max, &values)]);
            if let Ok(mut cache) = open(meta) {
                for at in [0, 3 * CHUNK - 1, 7 * CHUNK] {
                    let _ = cache.read_exact_at(at, &mut [0u8; 4096]);
                }
            }
        }
    }
}
