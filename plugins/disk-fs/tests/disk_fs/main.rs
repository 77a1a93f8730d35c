//! Integration tests of `tessera-disk-fs` on images made by the real tools: partition
//! tables from sfdisk and sgdisk, file systems from mke2fs, mkfs.fat/mtools, mkfs.exfat and
//! the other formats' tools, and hostile
//! variants of them.

mod btrfs;
mod exfat;
mod ext;
mod ext_inline;
mod fat;
mod hostile;
mod lvm;
mod md;
mod ntfs;
mod partitions;
mod support;
mod ufs;
mod xfs;

/// Caps the heap of this test binary: an allocation sized from a hostile image field fails
/// the run instead of passing unnoticed on a machine with memory to spare.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 3 << 30);
