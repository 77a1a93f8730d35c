//! The `vm-disk` plugin: protects the disks of a virtual machine. Capture reads each disk
//! from an image file (raw, or qcow2 with its backing chain) in a granted directory, from
//! a host block device (raw, read by the host) or from an NBD export, skipping what is
//! known to be zeros and, with a dirty bitmap, what did not change; restore writes disks
//! back as sparse raw files, qcow2 images or onto an NBD export, and single files out of
//! the disks' file systems; browse lists the partitions and files inside a stored disk.
//!
//! A point holds `disk0`, `disk1`, ... (one `block-device` entry per source, by position)
//! and the configuration document under its file name; see [`layout`] for the paths
//! browse and restore accept.

mod backing;
mod browse;
mod capture_disks;
mod error;
mod files;
mod guest_fs;
mod host_net;
mod layout;
mod options;
mod plan;
mod restore_disks;
mod source;
mod vault_disk;

use tessera_plugin_sdk::prelude::*;

/// The plugin; all its state lives in the job being run.
struct VmDisk;

/// Setting: the format of file sources (`auto`, `raw`, `qcow2`).
const IMAGE_FORMAT: &str = "image-format";
/// Setting: the QEMU dirty bitmap of NBD sources.
const BITMAP: &str = "bitmap";
/// Setting: the fixed chunk size of the disks' streams.
const CHUNK_SIZE: &str = "chunk-size";
/// Setting: the configuration document to store with the disks.
const CONFIG: &str = "config";
/// Setting: a disk to capture (repeatable).
const DISK: &str = "disk";
/// Setting: a disk to leave out (repeatable).
const EXCLUDE_DISK: &str = "exclude-disk";
/// Setting: the format of disks restored into a directory (`raw`, `qcow2`).
const FORMAT: &str = "format";

/// A setting the plugin accepts.
fn setting(name: &str, kind: SettingKind, default: Option<&str>, description: &str) -> SettingSpec {
    SettingSpec {
        name: name.to_owned(),
        kind,
        description: description.to_owned(),
        required: false,
        default: default.map(str::to_owned),
    }
}

impl describe::Guest for VmDisk {
    fn describe() -> PluginInfo {
        let default_chunk = options::DEFAULT_CHUNK_SIZE.to_string();
        PluginInfo {
            name: "vm-disk".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            workload: WorkloadKind::VmDisk,
            contract: tessera_plugin_sdk::CONTRACT_VERSION.to_owned(),
            capabilities: vec![
                Capability::ReadSource,
                Capability::WriteTarget,
                Capability::TcpConnect,
                Capability::Hooks,
            ],
            settings: vec![
                setting(
                    IMAGE_FORMAT,
                    SettingKind::Text,
                    Some("auto"),
                    "Format of image file sources: auto (qcow2, VHDX, VMDK or VDI if the \
                     file starts with their signature, VHD if it carries a valid VHD footer, \
                     else raw), raw, qcow2, vhd, vhdx, vmdk or vdi. Block devices are raw.",
                ),
                setting(
                    BITMAP,
                    SettingKind::Text,
                    None,
                    "Name of a QEMU dirty bitmap: one the NBD server exports \
                     (qemu:dirty-bitmap:NAME), or a persistent bitmap of a qcow2 image file \
                     (qemu-img bitmap, libvirt checkpoints). With a parent point, only the \
                     blocks it marks are read; the rest is carried over from the parent.",
                ),
                setting(
                    CHUNK_SIZE,
                    SettingKind::Integer,
                    Some(&default_chunk),
                    "Fixed chunk size of the disks in bytes: a power of two from 4096 to \
                     4194304. Changing it makes the next point read every disk in full.",
                ),
                setting(
                    CONFIG,
                    SettingKind::Path,
                    None,
                    "A configuration document to store with the disks (libvirt XML, JSON, \
                     ...), under its file name.",
                ),
                setting(
                    DISK,
                    SettingKind::TextList,
                    None,
                    "Back up only this disk (disk0, disk1, ...: the sources by position).",
                ),
                setting(
                    EXCLUDE_DISK,
                    SettingKind::TextList,
                    None,
                    "Leave this disk out (disk0, disk1, ...: the sources by position).",
                ),
                setting(
                    FORMAT,
                    SettingKind::Text,
                    Some("raw"),
                    "Restore: the format of disks written into a directory: raw (a sparse \
                     diskN.raw), qcow2 (diskN.qcow2) or vhd (a fixed diskN.vhd, sparse, as \
                     Hyper-V and Azure take disks).",
                ),
            ],
            description: "Backs up virtual machine disks: raw, qcow2 (with backing chains), \
                          VHD, VHDX, VMDK and VDI image files, host block devices and NBD \
                          exports, \
                          reading only allocated data and, with a QEMU dirty bitmap, only \
                          changed blocks. Restores whole disks as raw, qcow2 or fixed VHD \
                          files or onto an NBD export, and single files out of the file \
                          systems inside the disks."
                .to_owned(),
        }
    }
}

impl capture::Guest for VmDisk {
    fn capture(request: CaptureRequest) -> Result<CaptureSummary, PluginError> {
        capture_disks::run(&request)
    }
}

impl restore::Guest for VmDisk {
    fn restore(request: RestoreRequest) -> Result<RestoreSummary, PluginError> {
        restore_disks::run(&request)
    }
}

impl tessera_plugin_sdk::browse::Guest for VmDisk {
    fn children(path: String) -> Result<Vec<EntryInfo>, PluginError> {
        browse::children(&path)
    }
}

tessera_plugin_sdk::export_plugin!(VmDisk);
