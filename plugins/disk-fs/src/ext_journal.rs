//! The committed transactions of an ext3/ext4 journal (JBD2), as a map from file-system
//! blocks to their newer copies in the journal, so the inodes and directory blocks read
//! by [`crate::ext_raw`] match what the `ext4-view` crate shows after its own replay.
//!
//! The journal is a file (inode 8) read as a ring of blocks; every field is big-endian:
//!
//! ```text
//! block header    MAGIC(u32 = 0xC03B3998) TYPE(u32) SEQUENCE(u32)
//! superblock      header (type 4), 0x0C BLOCKSIZE, 0x10 MAXLEN, 0x14 FIRST, 0x18 SEQUENCE,
//!                 0x1C START (0: nothing to replay), 0x28 FEATURE_INCOMPAT
//! descriptor      header (type 1), then tags, each followed by a 16-byte UUID unless
//!                 flagged SAME_UUID; the blocks the tags name follow it in the ring
//!   tag (csum v3) BLOCKNR(u32) FLAGS(u32) BLOCKNR_HIGH(u32) CHECKSUM(u32)
//!   tag (older)   BLOCKNR(u32) CHECKSUM(u16) FLAGS(u16) [BLOCKNR_HIGH(u32), 64bit]
//!                 [2 more bytes with csum v2]
//! commit          header (type 2): the transaction of its sequence is complete
//! revoke          header (type 5), COUNT(u32: bytes used, header included), block numbers
//!                 (u64 with 64bit, else u32): earlier copies of them must not be replayed
//! ```
//!
//! As in the kernel's replay: transactions are read from START with consecutive
//! sequence numbers until a block does not continue them; only transactions with their
//! commit block count; a block revoked in a transaction is not replayed from that
//! transaction or earlier ones; a later copy of a block replaces an earlier one.

use std::cell::RefCell;
use std::collections::HashMap;

use tessera_disk_image::ReadAt;

/// Magic number opening every journal block but data blocks.
const MAGIC: u32 = 0xc03b_3998;
const DESCRIPTOR: u32 = 1;
const COMMIT: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;
const REVOKE: u32 = 5;
const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
/// Tag flags.
const FLAG_ESCAPE: u32 = 0x1;
const FLAG_SAME_UUID: u32 = 0x2;
const FLAG_LAST_TAG: u32 = 0x8;

/// Where the newest committed copy of a file-system block lies in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoggedBlock {
    /// Byte offset of the copy in the volume.
    pub(crate) at: u64,
    /// The block began with the journal's magic number, which the copy holds as zeros.
    pub(crate) escaped: bool,
}

/// Committed journal copies by file-system block number.
pub(crate) type Overlay = HashMap<u64, LoggedBlock>;

/// The journal's blocks as the volume holds them: byte offsets of journal blocks 0, 1, ...,
/// and the volume (named `what`) to read them from.
pub(crate) struct Journal<'a> {
    pub(crate) blocks: &'a [u64],
    pub(crate) block_size: usize,
    pub(crate) reader: &'a RefCell<Box<dyn ReadAt>>,
    pub(crate) what: &'a str,
}

/// The journal's features, from its superblock.
struct Features {
    revoke: bool,
    is_64bit: bool,
    tail: usize,
    tag_bytes: usize,
    tag3: bool,
}

/// A transaction being read, not yet committed.
#[derive(Default)]
struct Pending {
    copies: Vec<(u64, LoggedBlock)>,
    revoked: Vec<u64>,
}

impl Journal<'_> {
    /// Reads journal block `n` into `buf`.
    fn block(&mut self, n: u64, buf: &mut [u8]) -> Result<(), String> {
        let at = self.offset(n)?;
        crate::read_exact(&mut **self.reader.borrow_mut(), self.what, at, buf)
            .map_err(|e| e.to_string())
    }

    /// The byte offset of journal block `n`.
    fn offset(&self, n: u64) -> Result<u64, String> {
        usize::try_from(n)
            .ok()
            .and_then(|n| self.blocks.get(n).copied())
            .ok_or_else(|| format!("the journal has no block {n}"))
    }

    /// The overlay of the committed transactions. `Err` says why the journal cannot be
    /// read; an empty journal gives an empty overlay.
    pub(crate) fn replay(&mut self) -> Result<Overlay, String> {
        let mut buf = vec![0u8; self.block_size];
        self.block(0, &mut buf)?;
        let kind = be32(&buf, 4);
        if be32(&buf, 0) != MAGIC || !matches!(kind, SUPERBLOCK_V1 | SUPERBLOCK_V2) {
            return Err("the journal's superblock has no JBD2 magic number".to_owned());
        }
        if be32(&buf, 0x0c) as usize != self.block_size {
            return Err(format!(
                "the journal's blocks are of {} bytes, the file system's of {}",
                be32(&buf, 0x0c),
                self.block_size
            ));
        }
        let maxlen = u64::from(be32(&buf, 0x10)).min(self.blocks.len() as u64);
        let first = u64::from(be32(&buf, 0x14));
        let mut sequence = be32(&buf, 0x18);
        let start = u64::from(be32(&buf, 0x1c));
        if start == 0 {
            return Ok(Overlay::new());
        }
        if first == 0 || first >= maxlen || start < first || start >= maxlen {
            return Err(format!(
                "the journal's log runs from block {first} to {maxlen}, its start is {start}"
            ));
        }
        let incompat = if kind == SUPERBLOCK_V2 {
            be32(&buf, 0x28)
        } else {
            0
        };
        let csum = incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0;
        let is_64bit = incompat & INCOMPAT_64BIT != 0;
        let tag3 = incompat & INCOMPAT_CSUM_V3 != 0;
        let features = Features {
            revoke: incompat & INCOMPAT_REVOKE != 0,
            is_64bit,
            tail: if csum { 4 } else { 0 },
            tag_bytes: match (tag3, incompat & INCOMPAT_CSUM_V2 != 0, is_64bit) {
                (true, _, _) => 16,
                (false, csum2, is_64bit) => 8 + 2 * usize::from(csum2) + 4 * usize::from(is_64bit),
            },
            tag3,
        };
        let next = |n: u64| if n + 1 >= maxlen { first } else { n + 1 };

        let mut committed: Vec<(u32, Pending)> = Vec::new();
        let mut pending = Pending::default();
        let mut pos = start;
        // Every block of the ring is read at most once per pass around it.
        let mut budget = maxlen - first;
        while budget > 0 {
            budget -= 1;
            self.block(pos, &mut buf)?;
            if be32(&buf, 0) != MAGIC || be32(&buf, 8) != sequence {
                break;
            }
            match be32(&buf, 4) {
                DESCRIPTOR => {
                    let tags = self.tags(&buf, &features);
                    for (block, escaped) in tags {
                        pos = next(pos);
                        if budget == 0 {
                            break;
                        }
                        budget -= 1;
                        let at = self.offset(pos)?;
                        pending.copies.push((block, LoggedBlock { at, escaped }));
                    }
                }
                COMMIT => {
                    committed.push((sequence, std::mem::take(&mut pending)));
                    sequence = sequence.wrapping_add(1);
                }
                REVOKE if features.revoke => self.revokes(&buf, &features, &mut pending.revoked),
                _ => break,
            }
            pos = next(pos);
        }

        // The last transaction to revoke each block.
        let mut revoked: HashMap<u64, u32> = HashMap::new();
        for (sequence, transaction) in &committed {
            for &block in &transaction.revoked {
                revoked.insert(block, *sequence);
            }
        }
        let mut overlay = Overlay::new();
        for (sequence, transaction) in committed {
            for (block, copy) in transaction.copies {
                let revoked_later = revoked
                    .get(&block)
                    .is_some_and(|&r| r.wrapping_sub(sequence) as i32 >= 0);
                if !revoked_later {
                    overlay.insert(block, copy);
                }
            }
        }
        Ok(overlay)
    }

    /// The blocks a descriptor block names, with whether each was escaped.
    fn tags(&self, desc: &[u8], features: &Features) -> Vec<(u64, bool)> {
        let end = desc.len() - features.tail;
        let mut tags = Vec::new();
        let mut pos = 12;
        while pos + features.tag_bytes <= end {
            let low = u64::from(be32(desc, pos));
            let (flags, high) = if features.tag3 {
                (be32(desc, pos + 4), be32(desc, pos + 8))
            } else {
                let flags = u32::from(u16::from_be_bytes([desc[pos + 6], desc[pos + 7]]));
                let high = if features.is_64bit {
                    be32(desc, pos + 8)
                } else {
                    0
                };
                (flags, high)
            };
            let high = if features.is_64bit {
                u64::from(high)
            } else {
                0
            };
            tags.push((low | high << 32, flags & FLAG_ESCAPE != 0));
            pos += features.tag_bytes;
            if flags & FLAG_SAME_UUID == 0 {
                pos += 16;
            }
            if flags & FLAG_LAST_TAG != 0 {
                break;
            }
        }
        tags
    }

    /// Adds the block numbers a revoke block lists.
    fn revokes(&self, block: &[u8], features: &Features, out: &mut Vec<u64>) {
        let used = (be32(block, 12) as usize).min(block.len() - features.tail);
        let width = if features.is_64bit { 8 } else { 4 };
        let mut pos = 16;
        while pos + width <= used {
            let number = if features.is_64bit {
                u64::from(be32(block, pos)) << 32 | u64::from(be32(block, pos + 4))
            } else {
                u64::from(be32(block, pos))
            };
            out.push(number);
            pos += width;
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The journal's magic number as a copied block begins with when it was escaped.
pub(crate) const ESCAPED_MAGIC: [u8; 4] = MAGIC.to_be_bytes();
