//! GUID partition tables: a header in LBA 1 pointing at an array of partition entries, with
//! a backup header in the last LBA and its own copy of the array. Both carry CRC-32s, and the
//! backup is used when the primary fails them.
//!
//! Header (little-endian, `HEADER_SIZE` bytes covered by `HEADER_CRC`, taken with that
//! field zeroed):
//!
//! ```text
//! 0 "EFI PART" | 8 REVISION(u32) | 12 HEADER_SIZE(u32) | 16 HEADER_CRC(u32) | 20 reserved(u32)
//! 24 MY_LBA(u64) | 32 ALTERNATE_LBA(u64) | 40 FIRST_USABLE(u64) | 48 LAST_USABLE(u64)
//! 56 DISK_GUID(16) | 72 ENTRIES_LBA(u64) | 80 ENTRY_COUNT(u32) | 84 ENTRY_SIZE(u32)
//! 88 ENTRIES_CRC(u32)
//! ```
//!
//! Entry (`ENTRY_SIZE` bytes, a multiple of 128):
//!
//! ```text
//! 0 TYPE_GUID(16) | 16 UNIQUE_GUID(16) | 32 FIRST_LBA(u64) | 40 LAST_LBA(u64, inclusive)
//! 48 ATTRIBUTES(u64) | 56 NAME(36 × UTF-16LE)
//! ```
//!
//! The LBA size is not stored; it is 512 or 4096 bytes, found by where the header is.

use crc::{CRC_32_ISO_HDLC, Crc};
use tessera_disk_image::ReadAt;

use crate::partition::{Partition, PartitionTable, Scheme, TABLE};
use crate::{FsError, read_exact};

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// LBA sizes tried, in order.
const LBA_SIZES: [u64; 2] = [512, 4096];
/// Smallest header the specification allows.
const MIN_HEADER_SIZE: usize = 92;
/// Size of the fields of an entry that this crate reads.
const ENTRY_MIN: u32 = 128;
/// Largest entry size accepted.
const ENTRY_MAX: u32 = 4096;
/// Largest entry array read (the usual one is 128 × 128 bytes = 16 KiB): guards against a
/// header that asks for gigabytes.
const MAX_ARRAY_BYTES: u64 = 1 << 20;
/// The "legacy BIOS bootable" attribute bit.
const ATTR_BOOTABLE: u64 = 1 << 2;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Whether a GPT header signature sits in LBA 1 for either LBA size.
pub(crate) fn probe(disk: &mut dyn ReadAt) -> Result<bool, FsError> {
    for lba_size in LBA_SIZES {
        if disk.len() >= lba_size + 8 {
            let mut sig = [0u8; 8];
            read_exact(disk, TABLE, lba_size, &mut sig)?;
            if &sig == SIGNATURE {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The fields of a header that matter here.
struct Header {
    alternate_lba: u64,
    entries_lba: u64,
    entry_count: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Reads the table, from the primary copy if it is intact and from the backup otherwise.
pub(crate) fn read(disk: &mut dyn ReadAt) -> Result<PartitionTable, FsError> {
    let lba_size = LBA_SIZES
        .into_iter()
        .find(|&size| {
            let mut sig = [0u8; 8];
            disk.len() >= size + 8
                && disk.read_exact_at(size, &mut sig).is_ok()
                && &sig == SIGNATURE
        })
        .unwrap_or(LBA_SIZES[0]);
    let primary = read_header(disk, lba_size, 1).and_then(|h| {
        let partitions = read_entries(disk, lba_size, &h)?;
        Ok((h, partitions))
    });
    let primary_err = match primary {
        Ok((_, partitions)) => return Ok(table(partitions, Vec::new())),
        Err(e) => e,
    };
    // The backup header sits in the last LBA; a primary header that is intact (only its
    // entries are bad) says where.
    let last_lba = (disk.len() / lba_size).saturating_sub(1);
    let backup_lba = match read_header(disk, lba_size, 1) {
        Ok(h) if h.alternate_lba > 1 => h.alternate_lba,
        _ => last_lba,
    };
    let backup =
        read_header(disk, lba_size, backup_lba).and_then(|h| read_entries(disk, lba_size, &h));
    match backup {
        Ok(partitions) => Ok(table(
            partitions,
            vec![format!(
                "primary GPT unusable ({primary_err}); read the backup GPT at LBA {backup_lba}"
            )],
        )),
        Err(backup_err) => Err(FsError::corrupt(
            TABLE,
            None,
            format!(
                "no usable GPT: primary: {primary_err}; backup at LBA {backup_lba}: {backup_err}"
            ),
        )),
    }
}

fn table(partitions: Vec<Partition>, warnings: Vec<String>) -> PartitionTable {
    PartitionTable {
        scheme: Scheme::Gpt,
        partitions,
        warnings,
    }
}

fn read_header(disk: &mut dyn ReadAt, lba_size: u64, lba: u64) -> Result<Header, FsError> {
    let offset = lba
        .checked_mul(lba_size)
        .filter(|o| o.saturating_add(lba_size) <= disk.len())
        .ok_or_else(|| {
            FsError::corrupt(
                TABLE,
                None,
                format!("GPT header LBA {lba} lies past the end of the disk"),
            )
        })?;
    let corrupt =
        |detail: String| FsError::corrupt(TABLE, Some(offset), format!("GPT header: {detail}"));
    // lba_size is 512 or 4096.
    let mut raw = vec![0u8; lba_size as usize];
    read_exact(disk, TABLE, offset, &mut raw)?;
    if &raw[..8] != SIGNATURE {
        return Err(corrupt("no \"EFI PART\" signature".to_owned()));
    }
    let u32_at = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let header_size = usize::try_from(u32_at(12)).unwrap_or(usize::MAX);
    if !(MIN_HEADER_SIZE..=raw.len()).contains(&header_size) {
        return Err(corrupt(format!("header size {header_size} out of range")));
    }
    let stored_crc = u32_at(16);
    let mut digest = CRC32.digest();
    digest.update(&raw[..16]);
    digest.update(&[0; 4]);
    digest.update(&raw[20..header_size]);
    let crc = digest.finalize();
    if crc != stored_crc {
        return Err(corrupt(format!(
            "CRC-32 mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        )));
    }
    if u64_at(24) != lba {
        return Err(corrupt(format!(
            "claims to sit at LBA {} rather than {lba}",
            u64_at(24)
        )));
    }
    let header = Header {
        alternate_lba: u64_at(32),
        entries_lba: u64_at(72),
        entry_count: u32_at(80),
        entry_size: u32_at(84),
        entries_crc: u32_at(88),
    };
    if header.entry_size < ENTRY_MIN
        || header.entry_size > ENTRY_MAX
        || !header.entry_size.is_multiple_of(ENTRY_MIN)
    {
        return Err(corrupt(format!(
            "entry size {} out of range",
            header.entry_size
        )));
    }
    let array = u64::from(header.entry_count) * u64::from(header.entry_size);
    if array > MAX_ARRAY_BYTES {
        return Err(FsError::limit(
            TABLE,
            format!(
                "GPT header at byte {offset} asks for {} entries of {} bytes (at most {MAX_ARRAY_BYTES} bytes are read)",
                header.entry_count, header.entry_size
            ),
        ));
    }
    Ok(header)
}

fn read_entries(
    disk: &mut dyn ReadAt,
    lba_size: u64,
    header: &Header,
) -> Result<Vec<Partition>, FsError> {
    // Bounded by MAX_ARRAY_BYTES in read_header.
    let array_len = u64::from(header.entry_count) * u64::from(header.entry_size);
    let offset = header
        .entries_lba
        .checked_mul(lba_size)
        .filter(|o| {
            o.checked_add(array_len)
                .is_some_and(|end| end <= disk.len())
        })
        .ok_or_else(|| {
            FsError::corrupt(
                TABLE,
                None,
                format!(
                    "GPT entry array at LBA {} lies past the end of the disk",
                    header.entries_lba
                ),
            )
        })?;
    let mut raw = vec![0u8; array_len as usize];
    read_exact(disk, TABLE, offset, &mut raw)?;
    let crc = CRC32.checksum(&raw);
    if crc != header.entries_crc {
        return Err(FsError::corrupt(
            TABLE,
            Some(offset),
            format!(
                "GPT entry array CRC-32 mismatch (stored {:#010x}, computed {crc:#010x})",
                header.entries_crc
            ),
        ));
    }
    let mut partitions = Vec::new();
    for (index, entry) in raw.chunks_exact(header.entry_size as usize).enumerate() {
        if entry[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&entry[at..at + 8]);
            u64::from_le_bytes(b)
        };
        // index < entry_count, a u32.
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let (first, last) = (u64_at(32), u64_at(40));
        let bad = |detail: String| {
            FsError::corrupt(
                TABLE,
                Some(offset + index as u64 * u64::from(header.entry_size)),
                format!("GPT entry {number}: {detail}"),
            )
        };
        if last < first {
            return Err(bad(format!("last LBA {last} precedes first LBA {first}")));
        }
        let start = first.checked_mul(lba_size);
        let length = (last - first)
            .checked_add(1)
            .and_then(|n| n.checked_mul(lba_size));
        let (Some(start), Some(length)) = (start, length) else {
            return Err(bad(format!("LBAs {first}..={last} overflow a byte offset")));
        };
        let name: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = String::from_utf16_lossy(&name);
        partitions.push(Partition {
            number,
            start,
            length,
            type_name: guid(&entry[..16]),
            name: (!name.is_empty()).then_some(name),
            bootable: u64_at(48) & ATTR_BOOTABLE != 0,
        });
    }
    Ok(partitions)
}

/// A GUID in its usual text form: the first three fields are stored little-endian.
fn guid(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_print_mixed_endian() {
        // The Linux filesystem data type as stored on disk.
        let raw = [
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ];
        assert_eq!(guid(&raw), "0fc63daf-8483-4772-8e79-3d69d8477de4");
    }
}
