//! The partitions of a disk, whatever table describes them: [`read_partitions`] decides
//! between MBR and GPT from sector 0 and hands the details to the `mbr` and `gpt` modules.

use tessera_disk_image::ReadAt;

use crate::{FsError, gpt, mbr, read_exact};

/// What names the partition table in errors.
pub(crate) const TABLE: &str = "partition table";

/// Which kind of table describes the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// A DOS master boot record, with logical partitions in an extended partition.
    Mbr,
    /// A GUID partition table (behind a protective MBR).
    Gpt,
    /// No partition table: the disk may hold a file system directly.
    None,
}

/// The partitions found on a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTable {
    /// The kind of table.
    pub scheme: Scheme,
    /// The partitions that hold data, in number order. An MBR extended partition is a
    /// container of logical partitions and is not listed itself.
    pub partitions: Vec<Partition>,
    /// Damage that was worked around, e.g. a corrupt primary GPT replaced by the backup.
    pub warnings: Vec<String>,
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based number as Linux gives it: MBR primaries 1-4 by slot (empty slots leave gaps),
    /// logical partitions from 5 in chain order, then the partitions of BSD slices'
    /// disklabels; GPT entries by their index in the entry array plus one (empty entries
    /// leave gaps).
    pub number: u32,
    /// Offset of the first byte on the disk.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// The type as the table stores it: `"0x83"` for MBR, the type GUID in lower case for GPT,
    /// `"bsd:7"` for a BSD disklabel's partition (its `fstype`).
    pub type_name: String,
    /// The GPT partition name, if set; a BSD disklabel partition's letter (`a`).
    pub name: Option<String>,
    /// The MBR boot flag, or the GPT "legacy BIOS bootable" attribute.
    pub bootable: bool,
}

impl Partition {
    /// A human name for well-known partition types (`"Linux filesystem"`, `"EFI System"`).
    pub fn type_description(&self) -> Option<&'static str> {
        let known: &[(&str, &str)] = &[
            ("0x01", "FAT12"),
            ("0x04", "FAT16 <32M"),
            ("0x06", "FAT16"),
            ("0x07", "HPFS/NTFS/exFAT"),
            ("0x0b", "W95 FAT32"),
            ("0x0c", "W95 FAT32 (LBA)"),
            ("0x0e", "W95 FAT16 (LBA)"),
            ("0x82", "Linux swap"),
            ("0x83", "Linux"),
            ("0x8e", "Linux LVM"),
            ("0xef", "EFI (FAT-12/16/32)"),
            ("0xfd", "Linux raid autodetect"),
            ("0xa5", "FreeBSD"),
            ("0xa6", "OpenBSD"),
            ("0xa9", "NetBSD"),
            ("bsd:1", "BSD swap"),
            ("bsd:7", "4.2BSD (UFS)"),
            ("bsd:27", "ZFS"),
            ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System"),
            ("21686148-6449-6e6f-744e-656564454649", "BIOS boot"),
            ("0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem"),
            (
                "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
                "Linux root (x86-64)",
            ),
            ("933ac7e1-2eb4-4f13-b844-0e14e2aef915", "Linux home"),
            (
                "bc13c2ff-59e6-4262-a352-b275fd6f7172",
                "Linux extended boot",
            ),
            ("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap"),
            ("e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM"),
            ("a19d880f-05fc-4d3b-a006-743f0f84911e", "Linux RAID"),
            (
                "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
                "Microsoft basic data",
            ),
            ("e3c9e316-0b5c-4db8-817d-f92df00215ae", "Microsoft reserved"),
        ];
        known
            .iter()
            .find(|(t, _)| *t == self.type_name)
            .map(|(_, d)| *d)
    }

    /// One past the last byte, or `None` if that overflows.
    pub(crate) fn end(&self) -> Option<u64> {
        self.start.checked_add(self.length)
    }
}

/// Reads the partition table of `disk`.
///
/// Sector 0 decides: a protective MBR (type `0xEE`) means GPT, whose primary header and
/// entries are used if their CRCs hold and the backup ones otherwise; a boot signature with
/// sane entries means MBR; a FAT boot sector without partitions, or nothing recognisable,
/// means [`Scheme::None`]. Every partition must lie inside the disk.
pub fn read_partitions(disk: &mut dyn ReadAt) -> Result<PartitionTable, FsError> {
    let mut table = if disk.len() < mbr::SECTOR {
        none()
    } else {
        let mut sector0 = [0u8; mbr::SECTOR as usize];
        read_exact(disk, TABLE, 0, &mut sector0)?;
        match mbr::parse_boot_record(&sector0) {
            Some(entries) if mbr::is_protective(&entries) => gpt::read(disk)?,
            Some(entries) if mbr::holds_partitions(&entries, &sector0) => PartitionTable {
                scheme: Scheme::Mbr,
                partitions: mbr::read(disk, &entries)?,
                warnings: Vec::new(),
            },
            // A GPT disk whose protective MBR was wiped is still a GPT disk.
            _ if gpt::probe(disk)? => gpt::read(disk)?,
            _ => none(),
        }
    };
    let disk_len = disk.len();
    for p in &table.partitions {
        match p.end() {
            Some(end) if end <= disk_len => {}
            end => {
                return Err(FsError::PastEnd {
                    what: format!("partition {}", p.number),
                    start: p.start,
                    end: end.unwrap_or(u64::MAX),
                    disk_len,
                });
            }
        }
    }
    table.partitions.sort_by_key(|p| p.number);
    Ok(table)
}

fn none() -> PartitionTable {
    PartitionTable {
        scheme: Scheme::None,
        partitions: Vec::new(),
        warnings: Vec::new(),
    }
}
