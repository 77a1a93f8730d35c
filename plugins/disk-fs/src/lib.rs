//! Read-only views of partition tables (MBR, GPT, BSD disklabels), LVM2 volumes (thin,
//! cached and snapshot ones among them), MD arrays and file systems (ext2/3/4, XFS, btrfs,
//! FAT, exFAT, NTFS, UFS1/2) inside a disk image, read by random access.
//!
//! The vm-disk plugin restores single files straight from a backed-up disk image: it reads
//! the image through [`ReadAt`] (a file, an NBD export, a recovery point read back from the
//! vault), finds the partitions with [`read_partitions`], cuts one out with [`Slice`], and
//! opens its file system with [`open_volume`] to list directories and stream files.
//!
//! Everything read is treated as hostile: images come from backed-up machines, which may
//! have been compromised or damaged. No input makes this crate panic, loop without end or
//! allocate in proportion to a size field; every value taken from the image is checked
//! before it is used as an offset, a count or a length, and the limits that bound memory
//! and work are named where they are defined. Errors say what was being read (the
//! partition table, or the volume name given to [`open_volume`]) and the byte offset inside
//! it where known.
//!
//! Nothing is ever written, and nothing is cached beyond a few blocks: a [`Volume`] can be
//! reopened at any time, and two volumes over the same image are independent. A [`Volume`]
//! is not `Send` (the ext reader beneath shares its state through `Rc`); open one per
//! thread.
//!
//! What is not read, and what is read around the crate beneath: sparse block-mapped files
//! (ext2/3) whose hole covers a whole indirect block, which `ext4-view` refuses, are read
//! through their block map here; so is everything the ext4 `inline_data` feature keeps in
//! an inode (files, symlinks, directories) and everything below such a directory, which
//! that crate would misread; a journal needing recovery
//! is replayed only if it has v3 checksums (any file system with `metadata_csum`) and is
//! otherwise read past with a [`Volume::warnings`] entry; the ext change time (`ctime`) is
//! not available; FAT short names are decoded as code page 850. A journal on a device of
//! its own is not part of the image: such a volume is read without it (with a warning if
//! it needed recovery). Group descriptors spread over the volume (`meta_bg`), attribute
//! values kept in inodes of their own (`ea_inode`), multi-mount protection (`mmp`)
//! and `large_dir` are read.
//!
//! Formats, one module each: `mbr` and `gpt` for partition tables, `ext4` for ext2/3/4
//! (through the `ext4-view` crate, after checks of its own), `ext_raw` for what that crate
//! does not expose (inode numbers, extended attributes, device numbers, inline data, read
//! from the volume's own structures) with `ext_journal` for the journal transactions it reads
//! through and `ext_layout` for where the group descriptors lie, `fat` for FAT12/16/32
//! (read here), `xfs` for XFS versions 4 and 5 (read here; its log is not replayed, and
//! files on a realtime device are refused), `btrfs` for btrfs (read here; subvolumes are
//! directories, zlib and zstd extents are read, LZO ones and striped RAID chunks refused),
//! `ntfs` for NTFS (through the `keramics-formats` crate), `lvm` for LVM2
//! physical and logical volumes (read here).

mod btrfs;
mod cache;
mod dir_cache;
mod error;
mod exfat;
mod ext4;
mod ext_journal;
mod ext_layout;
mod ext_raw;
mod fat;
mod gpt;
mod keramics_io;
mod lvm;
mod mbr;
mod md;
mod ntfs;
mod partition;
mod path;
mod pdata;
mod slice;
mod snapshot;
mod thin;
mod ufs;
mod volume;
mod xfs;

use tessera_disk_image::ReadAt;

pub use error::FsError;
pub use lvm::{LogicalVolume, LogicalVolumeReader, PhysicalVolume, read_physical_volume};
pub use md::{MdArray, MdMember, read_md_member};
pub use partition::{Partition, PartitionTable, Scheme, read_partitions};
pub use slice::Slice;
pub use volume::{Extras, FsEntry, FsKind, Volume, VolumeFile, open_volume, open_volume_with};

/// The volume UUID, device id and device count of a btrfs device: what tells the devices
/// of one multi-device volume apart. `None` if `reader` holds no btrfs superblock.
pub fn btrfs_identity(reader: &mut dyn ReadAt) -> Option<([u8; 16], u64, u64)> {
    btrfs::identity(reader)
}

/// Reads exactly `<[u8]>::len(buf)` bytes at `offset`, naming `what` and the offset on failure.
pub(crate) fn read_exact(
    reader: &mut dyn ReadAt,
    what: &str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), FsError> {
    reader
        .read_exact_at(offset, buf)
        .map_err(|e| FsError::io(what, offset, <[u8]>::len(buf), e))
}
