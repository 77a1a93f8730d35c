//! Disk image readers and writers for the vm-disk plugin: raw, qcow2 (v2/v3, compressed
//! clusters, backing chains), VHD, VHDX and VDI (fixed and dynamic) and VMDK (monolithic
//! sparse and stream-optimized, flat and split disks described by a descriptor file, and
//! delta disks over their parent), built for wasm32-wasip2 and tested natively.
//!
//! Reading: [`open`] probes or is told the format of an [`ImageFile`] and returns a
//! [`DiskImage`], the virtual disk the guest sees. Its [`DiskImage::map`] tells which
//! ranges hold data and which are known zeros (holes, zero clusters, clusters unallocated in
//! the whole backing chain), so a backup reads only the data; [`DiskImage::read_at`] reads
//! the guest's bytes. Backing files and the extent files of a VMDK descriptor are resolved
//! by the caller's opener (the plugin's sandbox decides which files it may open) and the
//! whole chain is opened up front.
//!
//! Writing: [`Qcow2Writer`] writes a qcow2 v3 image from clusters given in increasing guest
//! order, appending only, so a restore streams the disk without buffering it.
//!
//! Images are untrusted input. Every offset and size read from an image is checked before
//! use, buffers are bounded by the cluster size (at most 2 MiB) or the L1 table limit
//! (32 MiB), and a malformed image yields an [`ImageError`] naming the disk and the offset,
//! never a panic. Nothing here writes to an image being read, and a [`DiskImage`] is used by
//! one caller at a time (`&mut self`): it holds caches, not locks.

mod block_map;
mod chain;
mod error;
mod fields;
mod image;
mod overlay;
mod qcow2;
mod raw;
mod read_at;
mod vdi;
mod vhd;
mod vhdx;
mod vmdk;

pub use chain::{
    BackingOpener, BackingRef, BackingRole, ImageFile, MAX_BACKING_DEPTH, ParentIdentity,
    no_backing, open, probe,
};
pub use error::{ImageError, ImageErrorKind};
pub use image::{DiskImage, Extent, ExtentKind, Format, GuestReader, Run, Stored};
pub use qcow2::Qcow2;
pub use qcow2::writer::{Qcow2Writer, Qcow2WriterOptions, WriteError};
pub use raw::Raw;
pub use read_at::{FileReader, ReadAt};
pub use vdi::Vdi;
pub use vhd::{MAX_VHD_SIZE, Vhd, fixed_footer as vhd_fixed_footer};
pub use vhdx::{Vhdx, VhdxWriter};
pub use vmdk::Vmdk;
