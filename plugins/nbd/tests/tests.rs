//! Integration tests of the NBD client: against real QEMU servers (qemu-nbd and
//! qemu-storage-daemon serving qcow2 images built with qemu-img and qemu-io), and against fake
//! servers on TCP that misbehave. The pipelined reads also run against qemu-nbd serving a raw
//! file under blkdebug, which injects read errors.
//!
//! The QEMU tools must be installed; a missing tool fails the test with a message saying so.

mod dirty_bitmap;
mod hostile;
mod qemu;
mod read;
mod read_ranges;
mod write;
