//! DOS master boot records: four primary entries in sector 0, and logical partitions in a
//! chain of extended boot records inside one extended partition.
//!
//! A boot record (sector 0 or an EBR) is one 512-byte sector:
//!
//! ```text
//! 0      446             462             478             494             510   512
//! | code | entry 1 (16)  | entry 2 (16)  | entry 3 (16)  | entry 4 (16)  | 55 AA |
//!
//! entry: BOOT(1: 0x00 or 0x80) || CHS(3) || TYPE(1) || CHS(3) || START_LBA(u32 le) || SECTORS(u32 le)
//! ```
//!
//! In an EBR, entry 1 is the logical partition (start relative to the EBR) and entry 2 links
//! to the next EBR (start relative to the extended partition). LBAs count 512-byte sectors.
//!
//! A FreeBSD, OpenBSD or NetBSD slice (type 0xA5, 0xA6, 0xA9) holds partitions of its own
//! in a BSD disklabel, in its sector 1 (little-endian):
//!
//! ```text
//! 0 MAGIC(u32 = 0x82564557) | 132 MAGIC2(u32, the same) | 136 CHECKSUM(u16: the xor of
//! every u16 of the label, it among them, is 0) | 138 NPARTITIONS(u16) | 148 partitions
//! (16 each): SIZE(u32, sectors) | OFFSET(u32, sectors from the disk's start; from the
//! slice's where partition `c` starts at 0, as FreeBSD writes them) | FSIZE(u32)
//! | FSTYPE(u8, 0 unused) | FRAG(u8) | CPG(u16)
//! ```
//!
//! As Linux does, its partitions are numbered after the logical ones (from 5 where there
//! are none), in label order; an unused one, one that is the whole slice (the raw `c`
//! partition) and one reaching outside the slice are left out.

use tessera_disk_image::ReadAt;

use crate::partition::{Partition, TABLE};
use crate::{FsError, read_exact};

/// Bytes in a sector, the unit of MBR addresses.
pub(crate) const SECTOR: u64 = 512;
/// Offset of the first of the four entries.
const ENTRIES: usize = 446;
/// Size of one entry.
const ENTRY_LEN: usize = 16;
/// Offset of the boot signature `55 AA`.
const SIGNATURE: usize = 510;
/// The type of a protective MBR entry covering a GPT disk.
const TYPE_PROTECTIVE: u8 = 0xee;
/// Types of an extended partition (CHS, LBA, Linux).
const TYPES_EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
/// At most this many logical partitions are read: guards against an EBR chain made to keep
/// the reader busy (Linux itself stops far earlier in practice).
const MAX_LOGICAL: usize = 256;
/// Types of a BSD slice: FreeBSD, OpenBSD, NetBSD.
const TYPES_BSD: [u8; 3] = [0xa5, 0xa6, 0xa9];
const BSD_MAGIC: u32 = 0x8256_4557;
/// Most partitions a BSD disklabel holds (OpenBSD's and NetBSD's 16, FreeBSD's 8 fit).
const BSD_MAX_PARTITIONS: usize = 16;

/// One entry of a boot record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    boot: u8,
    kind: u8,
    start_lba: u32,
    sectors: u32,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.kind == 0 || self.sectors == 0
    }

    fn is_extended(&self) -> bool {
        TYPES_EXTENDED.contains(&self.kind)
    }
}

/// The four entries of a boot record, or `None` without the `55 AA` signature or with a
/// boot flag other than 0x00/0x80 (then the sector is no partition table, e.g. a FAT boot
/// sector whose code fills the entry area).
pub(crate) fn parse_boot_record(sector: &[u8; SECTOR as usize]) -> Option<[Entry; 4]> {
    if sector[SIGNATURE..] != [0x55, 0xaa] {
        return None;
    }
    let mut entries = [Entry {
        boot: 0,
        kind: 0,
        start_lba: 0,
        sectors: 0,
    }; 4];
    for (i, entry) in entries.iter_mut().enumerate() {
        let raw = &sector[ENTRIES + i * ENTRY_LEN..][..ENTRY_LEN];
        *entry = Entry {
            boot: raw[0],
            kind: raw[4],
            start_lba: u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]),
            sectors: u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]),
        };
        if entry.boot != 0 && entry.boot != 0x80 {
            return None;
        }
    }
    Some(entries)
}

/// Whether the record is a protective MBR, the sign of a GPT disk.
pub(crate) fn is_protective(entries: &[Entry; 4]) -> bool {
    entries.iter().any(|e| e.kind == TYPE_PROTECTIVE)
}

/// Whether sector 0 is a partition table rather than the boot sector of a file system that
/// fills the whole disk: a record with no partitions in a sector that starts like a FAT boot
/// sector (a jump instruction) is taken for the latter.
pub(crate) fn holds_partitions(entries: &[Entry; 4], sector: &[u8; SECTOR as usize]) -> bool {
    let looks_like_boot_sector = sector[0] == 0xeb || sector[0] == 0xe9;
    !(entries.iter().all(Entry::is_empty) && looks_like_boot_sector)
}

/// The primary and logical partitions of an MBR disk.
pub(crate) fn read(disk: &mut dyn ReadAt, entries: &[Entry; 4]) -> Result<Vec<Partition>, FsError> {
    let mut partitions = Vec::new();
    let mut extended = None;
    for (slot, entry) in (1u32..).zip(entries) {
        if entry.is_empty() {
            continue;
        }
        if entry.is_extended() {
            // Like Linux, only the first extended partition holds logical partitions.
            extended.get_or_insert(*entry);
            continue;
        }
        partitions.push(partition(slot, u64::from(entry.start_lba), entry));
    }
    if let Some(extended) = extended {
        read_logical(disk, &extended, &mut partitions)?;
    }
    let mut next = partitions
        .iter()
        .map(|p| p.number + 1)
        .max()
        .unwrap_or(5)
        .max(5);
    for (slot, entry) in (1u32..).zip(entries) {
        if !entry.is_empty() && TYPES_BSD.contains(&entry.kind) {
            let slice = partition(slot, u64::from(entry.start_lba), entry);
            for sub in bsd_partitions(disk, &slice)? {
                partitions.push(Partition {
                    number: next,
                    ..sub
                });
                next += 1;
            }
        }
    }
    Ok(partitions)
}

/// The partitions of the BSD disklabel in `slice`, numbered 0, if it holds a valid one.
fn bsd_partitions(disk: &mut dyn ReadAt, slice: &Partition) -> Result<Vec<Partition>, FsError> {
    let at = slice.start + SECTOR;
    if slice.length < 2 * SECTOR || at + SECTOR > disk.len() {
        return Ok(Vec::new());
    }
    let mut label = [0u8; SECTOR as usize];
    read_exact(disk, TABLE, at, &mut label)?;
    let u32_at =
        |o: usize| u32::from_le_bytes([label[o], label[o + 1], label[o + 2], label[o + 3]]);
    let count = usize::from(u16::from_le_bytes([label[138], label[139]]));
    let end = 148 + 16 * count;
    if u32_at(0) != BSD_MAGIC || u32_at(132) != BSD_MAGIC || count > BSD_MAX_PARTITIONS {
        return Ok(Vec::new());
    }
    let sum = label[..end]
        .chunks_exact(2)
        .fold(0u16, |sum, w| sum ^ u16::from_le_bytes([w[0], w[1]]));
    if sum != 0 {
        return Ok(Vec::new());
    }
    let first = slice.start / SECTOR;
    // FreeBSD's offsets count from the slice when its raw partition `c` starts at 0.
    let relative = count > 2 && u32_at(148 + 16 * 2 + 4) == 0;
    let mut found = Vec::new();
    for i in 0..count {
        let raw = 148 + 16 * i;
        let (size, offset, fstype) = (u32_at(raw), u32_at(raw + 4), label[raw + 12]);
        if fstype == 0 || size == 0 {
            continue;
        }
        let start = u64::from(offset) + if relative { first } else { 0 };
        let (start, length) = (start * SECTOR, u64::from(size) * SECTOR);
        if (start, length) == (slice.start, slice.length)
            || start < slice.start
            || start + length > slice.start + slice.length
        {
            continue;
        }
        found.push(Partition {
            number: 0,
            start,
            length,
            type_name: format!("bsd:{fstype}"),
            name: Some(char::from(b'a' + i as u8).to_string()),
            bootable: false,
        });
    }
    Ok(found)
}

fn partition(number: u32, start_sector: u64, entry: &Entry) -> Partition {
    Partition {
        number,
        // u64 products of u32 values and 512 cannot overflow.
        start: start_sector * SECTOR,
        length: u64::from(entry.sectors) * SECTOR,
        type_name: format!("0x{:02x}", entry.kind),
        name: None,
        bootable: entry.boot == 0x80,
    }
}

/// Walks the EBR chain of `extended`, numbering logical partitions from 5.
fn read_logical(
    disk: &mut dyn ReadAt,
    extended: &Entry,
    partitions: &mut Vec<Partition>,
) -> Result<(), FsError> {
    let base = u64::from(extended.start_lba);
    let mut ebr = base;
    let mut visited = Vec::new();
    let mut number = 5u32;
    loop {
        if visited.contains(&ebr) {
            return Err(FsError::corrupt(
                TABLE,
                Some(ebr * SECTOR),
                format!("the chain of extended boot records loops back to sector {ebr}"),
            ));
        }
        if visited.len() >= MAX_LOGICAL {
            return Err(FsError::limit(
                TABLE,
                format!("more than {MAX_LOGICAL} extended boot records"),
            ));
        }
        visited.push(ebr);
        let offset = ebr * SECTOR;
        if offset.saturating_add(SECTOR) > disk.len() {
            return Err(FsError::corrupt(
                TABLE,
                Some(offset),
                format!("extended boot record at sector {ebr} lies past the end of the disk"),
            ));
        }
        let mut sector = [0u8; SECTOR as usize];
        read_exact(disk, TABLE, offset, &mut sector)?;
        let Some(entries) = parse_boot_record(&sector) else {
            if ebr == base {
                // An extended partition with no logical partitions need not hold an EBR.
                return Ok(());
            }
            return Err(FsError::corrupt(
                TABLE,
                Some(offset),
                format!("extended boot record at sector {ebr} has no valid signature"),
            ));
        };
        let mut next = None;
        for entry in &entries {
            if entry.is_empty() {
                continue;
            }
            if entry.is_extended() {
                next.get_or_insert(*entry);
                continue;
            }
            partitions.push(partition(number, ebr + u64::from(entry.start_lba), entry));
            number += 1;
        }
        match next {
            None => return Ok(()),
            Some(link) => {
                if link.start_lba >= extended.sectors {
                    return Err(FsError::corrupt(
                        TABLE,
                        Some(offset),
                        format!(
                            "extended boot record at sector {ebr} links to sector {} outside \
                             the extended partition ({} sectors from sector {base})",
                            base + u64::from(link.start_lba),
                            extended.sectors
                        ),
                    ));
                }
                ebr = base + u64::from(link.start_lba);
            }
        }
    }
}
