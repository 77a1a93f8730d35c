//! Integration tests of the disk image readers and writer, checked against QEMU's own tools
//! (`qemu-img`, `qemu-io`), which must be installed.

/// The most the whole test binary may hold at once. The largest test images are tens of
/// MiB; the reader's own buffers are bounded by the cluster size and the L1 limit, so a
/// buffer sized from a crafted header would cross this and abort the run.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 1 << 30);

mod support;

mod backing;
mod bitmaps;
mod hostile;
mod qemu_read;
mod refused;
mod vdi;
mod vhd;
mod vhdx;
mod vmdk;
mod writer;
