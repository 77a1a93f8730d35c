//! Where an ext volume keeps its block group descriptors.
//!
//! Without the `meta_bg` feature the descriptors form one table in the blocks after the
//! superblock. With it, the groups are taken in runs whose descriptors fill one block (a
//! "meta group"), and each run's block lies at the start of the run's first group, after
//! that group's copy of the superblock if it holds one; runs before `s_first_meta_bg` keep
//! the old table. (A file system grown past what its reserved table could hold uses this
//! layout, as does `mke2fs -O meta_bg`.)
//!
//! Superblock fields read (offsets inside the superblock; little-endian):
//!
//! ```text
//! 0x14 FIRST_DATA_BLOCK(u32) | 0x20 BLOCKS_PER_GROUP(u32) | 0x5C FEATURE_COMPAT(u32)
//! 0x60 FEATURE_INCOMPAT(u32) | 0x64 FEATURE_RO_COMPAT(u32) | 0xFE DESC_SIZE(u16)
//! 0x104 FIRST_META_BG(u32) | 0x24C BACKUP_BGS(2 x u32, with sparse_super2)
//! ```

use crate::ext4::SUPERBLOCK;

const COMPAT_SPARSE_SUPER2: u32 = 0x200;
pub(crate) const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;

/// Which groups hold a copy of the superblock (and so start with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backups {
    /// Every group (no `sparse_super`).
    All,
    /// Groups 0 and 1 and the powers of 3, 5 and 7 (`sparse_super`).
    Sparse,
    /// Group 0 and the two groups named in the superblock (`sparse_super2`).
    Two([u64; 2]),
}

/// The geometry that places each group's descriptor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DescriptorLayout {
    block_size: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    desc_size: u64,
    /// The first meta group laid out with `meta_bg`; `None` without the feature.
    first_meta_bg: Option<u64>,
    backups: Backups,
}

impl DescriptorLayout {
    /// Reads the layout from the superblock `sb`, whose block size the caller validated;
    /// `Err` names the field that makes it unusable.
    pub(crate) fn new(sb: &[u8; 1024], block_size: u64) -> Result<Self, String> {
        let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
        let (compat, incompat, ro_compat) = (u32_at(0x5c), u32_at(0x60), u32_at(0x64));
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            u64::from(u16::from_le_bytes([sb[0xfe], sb[0xff]]))
        } else {
            32
        };
        if desc_size < 32 || !desc_size.is_power_of_two() || desc_size > block_size {
            return Err(format!(
                "the superblock gives group descriptors of {desc_size} bytes"
            ));
        }
        let blocks_per_group = u64::from(u32_at(0x20));
        if blocks_per_group == 0 {
            return Err("the superblock gives zero blocks per group".to_owned());
        }
        let backups = if compat & COMPAT_SPARSE_SUPER2 != 0 {
            Backups::Two([u64::from(u32_at(0x24c)), u64::from(u32_at(0x250))])
        } else if ro_compat & RO_COMPAT_SPARSE_SUPER != 0 {
            Backups::Sparse
        } else {
            Backups::All
        };
        Ok(DescriptorLayout {
            block_size,
            first_data_block: u64::from(u32_at(0x14)),
            blocks_per_group,
            desc_size,
            first_meta_bg: (incompat & INCOMPAT_META_BG != 0).then(|| u64::from(u32_at(0x104))),
            backups,
        })
    }

    /// The size of one descriptor.
    pub(crate) fn desc_size(&self) -> u64 {
        self.desc_size
    }

    /// The byte offset of group `group`'s descriptor; `None` if it cannot be represented.
    pub(crate) fn offset(&self, group: u64) -> Option<u64> {
        let per_block = self.block_size / self.desc_size;
        let block = self.table_block(group / per_block)?;
        block
            .checked_mul(self.block_size)?
            .checked_add(group % per_block * self.desc_size)
    }

    /// The block holding the `nr`th block of descriptors (as the kernel's
    /// `descriptor_loc` places it).
    pub(crate) fn table_block(&self, nr: u64) -> Option<u64> {
        // The superblock's own block: 1 with 1 KiB blocks, else 0.
        let superblock_block = SUPERBLOCK / self.block_size;
        match self.first_meta_bg {
            Some(first) if nr >= first => {
                let group = nr.checked_mul(self.block_size / self.desc_size)?;
                let mut skip = u64::from(self.has_superblock(group));
                if self.block_size == 1024 && nr == 0 && self.first_data_block == 0 {
                    skip += 1;
                }
                group
                    .checked_mul(self.blocks_per_group)?
                    .checked_add(self.first_data_block)?
                    .checked_add(skip)
            }
            _ => superblock_block.checked_add(nr)?.checked_add(1),
        }
    }

    fn has_superblock(&self, group: u64) -> bool {
        if group == 0 {
            return true;
        }
        match self.backups {
            Backups::All => true,
            Backups::Two(groups) => groups.contains(&group),
            Backups::Sparse => {
                group == 1
                    || (!group.is_multiple_of(2)
                        && [3, 5, 7].iter().any(|&base| is_power_of(group, base)))
            }
        }
    }
}

/// Whether `n` is `base` raised to some power.
fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(
        block_size: u64,
        incompat: u32,
        ro_compat: u32,
        first_meta_bg: u32,
    ) -> [u8; 1024] {
        let mut sb = [0u8; 1024];
        let first_data_block = u32::from(block_size == 1024);
        sb[0x14..0x18].copy_from_slice(&first_data_block.to_le_bytes());
        sb[0x20..0x24].copy_from_slice(&((block_size * 8) as u32).to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        sb[0x64..0x68].copy_from_slice(&ro_compat.to_le_bytes());
        sb[0xfe..0x100].copy_from_slice(&64u16.to_le_bytes());
        sb[0x104..0x108].copy_from_slice(&first_meta_bg.to_le_bytes());
        sb
    }

    #[test]
    fn the_old_table_follows_the_superblock() {
        let layout = DescriptorLayout::new(&superblock(4096, INCOMPAT_64BIT, 1, 0), 4096).unwrap();
        assert_eq!(layout.offset(0), Some(4096));
        assert_eq!(layout.offset(64), Some(2 * 4096));
        let small = DescriptorLayout::new(&superblock(1024, 0, 1, 0), 1024).unwrap();
        assert_eq!(small.offset(0), Some(2 * 1024));
        assert_eq!(small.offset(33), Some(3 * 1024 + 32));
    }

    #[test]
    fn meta_groups_keep_their_descriptors_after_their_first_superblock() {
        // 1 KiB blocks, 64-byte descriptors: 16 groups of 8192 blocks per meta group.
        let sb = superblock(1024, INCOMPAT_64BIT | INCOMPAT_META_BG, 1, 0);
        let layout = DescriptorLayout::new(&sb, 1024).unwrap();
        // Meta group 0 starts at group 0 (superblock in block 1): block 2.
        assert_eq!(layout.table_block(0), Some(2));
        // Meta group 1 starts at group 16 (no backup: not 1 or a power of 3, 5, 7).
        assert_eq!(layout.table_block(1), Some(16 * 8192 + 1));
        assert_eq!(layout.table_block(2), Some(32 * 8192 + 1));
        assert_eq!(layout.offset(17), Some((16 * 8192 + 1) * 1024 + 64));
        // With 32-byte descriptors a meta group is 32 groups.
        let narrow =
            DescriptorLayout::new(&superblock(1024, INCOMPAT_META_BG, 1, 0), 1024).unwrap();
        assert_eq!(narrow.table_block(1), Some(32 * 8192 + 1));
        let wide = DescriptorLayout::new(
            &superblock(4096, INCOMPAT_64BIT | INCOMPAT_META_BG, 1, 0),
            4096,
        )
        .unwrap();
        // 64 groups per meta group with 4 KiB blocks; group 0 holds the superblock.
        assert_eq!(wide.table_block(0), Some(1));
        assert_eq!(wide.table_block(1), Some(64 * 32768));
        // Before the first meta group, the old table.
        let mixed = DescriptorLayout::new(
            &superblock(4096, INCOMPAT_64BIT | INCOMPAT_META_BG, 1, 2),
            4096,
        )
        .unwrap();
        assert_eq!(mixed.table_block(1), Some(2));
        assert_eq!(mixed.table_block(2), Some(128 * 32768));
    }

    #[test]
    fn backup_superblocks_shift_the_table() {
        let every = DescriptorLayout::new(
            &superblock(4096, INCOMPAT_64BIT | INCOMPAT_META_BG, 0, 0),
            4096,
        )
        .unwrap();
        assert_eq!(every.table_block(1), Some(64 * 32768 + 1));
        let sparse = DescriptorLayout::new(
            &superblock(4096, INCOMPAT_64BIT | INCOMPAT_META_BG, 1, 0),
            4096,
        )
        .unwrap();
        for (group, has) in [
            (0, true),
            (1, true),
            (2, false),
            (3, true),
            (9, true),
            (25, true),
            (27, true),
            (49, true),
            (45, false),
            (343, true),
            (64, false),
        ] {
            assert_eq!(sparse.has_superblock(group), has, "group {group}");
        }
        let mut sb = superblock(4096, INCOMPAT_64BIT | INCOMPAT_META_BG, 0, 0);
        sb[0x5c..0x60].copy_from_slice(&COMPAT_SPARSE_SUPER2.to_le_bytes());
        sb[0x24c..0x250].copy_from_slice(&1u32.to_le_bytes());
        sb[0x250..0x254].copy_from_slice(&64u32.to_le_bytes());
        let two = DescriptorLayout::new(&sb, 4096).unwrap();
        assert_eq!(two.table_block(1), Some(64 * 32768 + 1));
        assert_eq!(two.table_block(2), Some(128 * 32768));
    }

    #[test]
    fn hostile_fields_are_refused_or_give_none() {
        let mut sb = superblock(4096, INCOMPAT_64BIT, 1, 0);
        sb[0xfe..0x100].copy_from_slice(&48u16.to_le_bytes());
        assert!(DescriptorLayout::new(&sb, 4096).is_err());
        sb[0xfe..0x100].copy_from_slice(&8192u16.to_le_bytes());
        assert!(DescriptorLayout::new(&sb, 4096).is_err());
        let mut sb = superblock(4096, INCOMPAT_64BIT | INCOMPAT_META_BG, 1, 0);
        sb[0x20..0x24].copy_from_slice(&u32::MAX.to_le_bytes());
        let layout = DescriptorLayout::new(&sb, 4096).unwrap();
        assert_eq!(layout.offset(u64::MAX), None);
        sb[0x20..0x24].fill(0);
        assert!(DescriptorLayout::new(&sb, 4096).is_err());
    }
}
