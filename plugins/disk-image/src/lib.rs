//! Disk image readers and writers for the vm-disk plugin: raw and qcow2 (v2/v3, compressed
//! clusters, backing chains), built for wasm32-wasip2 and tested natively.

mod read_at;

pub use read_at::{FileReader, ReadAt};
