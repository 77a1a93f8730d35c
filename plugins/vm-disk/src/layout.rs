//! How a recovery point of this plugin is laid out, and how paths into it are read. Disk
//! `N` of the capture's sources is the top-level entry `diskN` (a `block-device`); the
//! configuration document is a `blob` next to the disks under its own file name. Browse and
//! file-level restore look inside a disk through the names `diskN/partK` (partition `K` as
//! Linux numbers it) and `diskN/fs` (the volume filling a disk without a partition
//! table), then, in an LVM2 physical volume, the name of a logical volume, and a path
//! inside the file system.

use std::fmt;

/// The prefix of a disk's entry name; the source's position follows it.
const DISK_PREFIX: &str = "disk";
/// The prefix of a partition's name below a disk; its number follows it.
const PARTITION_PREFIX: &str = "part";
/// The name below a disk of the volume that fills the whole disk: a file system, or an
/// LVM2 physical volume.
pub(crate) const WHOLE_DISK: &str = "fs";

/// Extended attribute recorded on a disk entry with the fixed chunk size its content was
/// cut with, in decimal: an incremental capture may carry the parent's chunks over only
/// when they were cut the same way.
pub(crate) const CHUNK_SIZE_XATTR: &str = "tessera.chunk-size";

/// The entry name of the disk captured from the source at `index`.
pub(crate) fn disk_name(index: usize) -> String {
    format!("{DISK_PREFIX}{index}")
}

/// The index of a disk entry name (`disk0` → 0), or `None` for any other name. Only the
/// canonical spelling counts: `disk01` is not disk 1.
pub(crate) fn disk_index(name: &str) -> Option<usize> {
    canonical_number(name.strip_prefix(DISK_PREFIX)?)
}

/// Parses a decimal number written without a sign or leading zeros.
fn canonical_number<T: std::str::FromStr>(digits: &str) -> Option<T> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

/// Whether a document may not be stored under `name` because the name belongs to a disk,
/// or to the file a disk is restored into (`disk0`, `disk0.raw`, `disk0.qcow2`).
pub(crate) fn is_reserved_name(name: &str) -> bool {
    let stem = name
        .strip_suffix(".raw")
        .or_else(|| name.strip_suffix(".qcow2"))
        .unwrap_or(name);
    disk_index(stem).is_some()
}

/// Which file system of a disk a path goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VolumeRef {
    /// The partition with this number.
    Partition(u32),
    /// The volume (a file system or an LVM2 physical volume) filling a disk without a
    /// partition table.
    WholeDisk,
}

impl VolumeRef {
    /// Parses the name below a disk: `partK` or `fs`.
    pub(crate) fn parse(name: &str) -> Option<VolumeRef> {
        if name == WHOLE_DISK {
            return Some(VolumeRef::WholeDisk);
        }
        canonical_number(name.strip_prefix(PARTITION_PREFIX)?)
            .filter(|&number| number > 0)
            .map(VolumeRef::Partition)
    }
}

impl fmt::Display for VolumeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeRef::Partition(number) => write!(f, "{PARTITION_PREFIX}{number}"),
            VolumeRef::WholeDisk => f.write_str(WHOLE_DISK),
        }
    }
}

/// A path of the point as browse and restore see it, split at the disk and the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PointPath<'a> {
    /// The point's root.
    Root,
    /// A top-level entry: a disk, or the configuration document.
    Top(&'a str),
    /// A top-level entry followed by a name that is not a volume of a disk.
    BadVolume {
        /// The top-level entry.
        top: &'a str,
        /// The name below it.
        name: &'a str,
    },
    /// Inside a volume of a disk.
    Inside {
        /// The disk's entry name.
        disk: &'a str,
        /// The volume.
        volume: VolumeRef,
        /// The path inside the volume's file system (`""` for its root).
        rest: &'a str,
    },
}

impl<'a> PointPath<'a> {
    /// Splits a validated entry path (`""` for the root).
    pub(crate) fn parse(path: &'a str) -> PointPath<'a> {
        if path.is_empty() {
            return PointPath::Root;
        }
        let (top, below) = match path.split_once('/') {
            Some((top, below)) => (top, Some(below)),
            None => (path, None),
        };
        let Some(below) = below else {
            return PointPath::Top(top);
        };
        let (name, rest) = below.split_once('/').unwrap_or((below, ""));
        match VolumeRef::parse(name) {
            Some(volume) => PointPath::Inside {
                disk: top,
                volume,
                rest,
            },
            None => PointPath::BadVolume { top, name },
        }
    }
}

/// The label of a volume in messages and entry paths: `disk0/part1`.
pub(crate) fn volume_label(disk: &str, volume: VolumeRef) -> String {
    format!("{disk}/{volume}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_round_trip() {
        assert_eq!(disk_name(0), "disk0");
        assert_eq!(disk_name(12), "disk12");
        assert_eq!(disk_index("disk0"), Some(0));
        assert_eq!(disk_index("disk12"), Some(12));
        for name in [
            "disk", "disk01", "disk-1", "disk+1", "Disk0", "disk0a", "vm.xml",
        ] {
            assert_eq!(disk_index(name), None, "{name}");
        }
    }

    #[test]
    fn reserves_disk_names_and_their_files() {
        for name in ["disk0", "disk3.raw", "disk10.qcow2"] {
            assert!(is_reserved_name(name), "{name}");
        }
        for name in ["vm.xml", "disk0.xml", "disks", "disk.raw"] {
            assert!(!is_reserved_name(name), "{name}");
        }
    }

    #[test]
    fn volumes_parse_and_print() {
        assert_eq!(VolumeRef::parse("part1"), Some(VolumeRef::Partition(1)));
        assert_eq!(VolumeRef::parse("fs"), Some(VolumeRef::WholeDisk));
        for name in ["part0", "part", "part01", "partx", "p1", "etc"] {
            assert_eq!(VolumeRef::parse(name), None, "{name}");
        }
        assert_eq!(
            volume_label("disk0", VolumeRef::Partition(2)),
            "disk0/part2"
        );
        assert_eq!(volume_label("disk1", VolumeRef::WholeDisk), "disk1/fs");
    }

    #[test]
    fn splits_point_paths() {
        assert_eq!(PointPath::parse(""), PointPath::Root);
        assert_eq!(PointPath::parse("disk0"), PointPath::Top("disk0"));
        assert_eq!(
            PointPath::parse("disk0/part1"),
            PointPath::Inside {
                disk: "disk0",
                volume: VolumeRef::Partition(1),
                rest: ""
            }
        );
        assert_eq!(
            PointPath::parse("disk0/fs/etc/hostname"),
            PointPath::Inside {
                disk: "disk0",
                volume: VolumeRef::WholeDisk,
                rest: "etc/hostname"
            }
        );
        assert_eq!(
            PointPath::parse("vm.xml/x/y"),
            PointPath::BadVolume {
                top: "vm.xml",
                name: "x"
            }
        );
    }
}
