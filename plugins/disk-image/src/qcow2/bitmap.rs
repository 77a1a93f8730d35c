//! Persistent dirty bitmaps: what QEMU recorded in a qcow2 image about which parts of the
//! disk were written since a bitmap was created or last cleared. A stopped VM's image
//! then tells an incremental backup what to read, as a live disk's NBD export does.
//!
//! The header's bitmaps extension points to the bitmap directory, one entry per bitmap:
//!
//! ```text
//! offset  size  field                (all numbers big-endian)
//!      0     8  bitmap_table_offset  cluster aligned
//!      8     4  bitmap_table_size    entries in the bitmap table
//!     12     4  flags                bit 0 in use, 1 auto (enabled), 2 extra data compatible
//!     16     1  type                 1: dirty tracking
//!     17     1  granularity_bits     each bit covers 1 << granularity_bits guest bytes
//!     18     2  name_size
//!     20     4  extra_data_size
//!     24        extra data, then the name, then zero padding to a multiple of 8
//! ```
//!
//! The bitmap table holds one u64 per cluster of bitmap data: bits 9..=55 the cluster's
//! offset in the file, or 0 with bit 0 telling whether the cluster reads as all ones or
//! all zeros. Bit `n` of the data (least significant bit of each byte first) covers guest
//! bytes `n * granularity .. (n + 1) * granularity`.
//!
//! A bitmap is used only if it can have missed no write: the image's bitmaps were not
//! invalidated by a program that did not know them, the bitmap is not in use (QEMU sets
//! that while it has the image open, and a crash leaves it set), and it is enabled.

use crate::error::{ImageError, ImageErrorKind};
use crate::qcow2::OFFSET_MASK;
use crate::qcow2::header::{Bitmaps, be32, be64, corrupt, field, read_exact};

/// Longest bitmap directory read, QEMU's limit: 65535 bitmaps of at most 1 KiB each.
const MAX_DIRECTORY: u64 = 64 << 20;
/// Most bitmaps in an image, QEMU's limit.
const MAX_BITMAPS: u32 = 65535;
/// A directory entry's fixed part.
const ENTRY_LEN: usize = 24;
/// Longest bitmap name, QEMU's limit.
const MAX_NAME: usize = 1023;
/// Granularities QEMU writes: 512 bytes to 2 GiB.
const GRANULARITY_BITS: std::ops::RangeInclusive<u8> = 9..=31;
/// Entry flags.
const FLAG_IN_USE: u32 = 1 << 0;
const FLAG_AUTO: u32 = 1 << 1;
const FLAG_EXTRA_DATA_COMPATIBLE: u32 = 1 << 2;
const KNOWN_FLAGS: u32 = FLAG_IN_USE | FLAG_AUTO | FLAG_EXTRA_DATA_COMPATIBLE;
/// The one bitmap type there is.
const TYPE_DIRTY_TRACKING: u8 = 1;
/// Bitmap table entry bit 0: an unallocated cluster of bitmap data reads as all ones.
const TABLE_ALL_ONES: u64 = 1;
/// Bitmap table entries read at a time: a bound on memory whatever the request.
const TABLE_ENTRIES_AT_ONCE: u64 = 1 << 16;

/// One bitmap of the directory.
#[derive(Debug, Clone)]
pub(crate) struct Bitmap {
    pub name: String,
    table_offset: u64,
    table_size: u64,
    flags: u32,
    kind: u8,
    granularity_bits: u8,
    extra_data: bool,
    /// Where its directory entry lies in the file, for errors.
    at: u64,
}

/// The image's bitmaps, or why it has none to use.
#[derive(Debug, Clone)]
pub(crate) enum Directory {
    Absent,
    Invalidated,
    Read(Vec<Bitmap>),
}

/// Reads and checks the bitmap directory the header points to. `size` is the virtual
/// disk's, which every bitmap covers.
pub(crate) fn read_directory(
    reader: &mut dyn crate::ReadAt,
    name: &str,
    bitmaps: Bitmaps,
    cluster_size: u64,
    size: u64,
) -> Result<Directory, ImageError> {
    let (count, offset, length, extension_at) = match bitmaps {
        Bitmaps::Absent => return Ok(Directory::Absent),
        Bitmaps::Invalidated => return Ok(Directory::Invalidated),
        Bitmaps::Directory {
            count,
            offset,
            size,
            extension_at,
        } => (count, offset, size, extension_at),
    };
    if count == 0 || count > MAX_BITMAPS {
        return Err(corrupt(
            name,
            extension_at,
            format!("the bitmaps extension counts {count} bitmaps, not 1 to {MAX_BITMAPS}"),
        ));
    }
    if length < (ENTRY_LEN as u64) * u64::from(count) || length > MAX_DIRECTORY {
        return Err(corrupt(
            name,
            extension_at,
            format!(
                "the bitmap directory is {length} bytes long, which cannot hold {count} \
                 bitmaps or exceeds {MAX_DIRECTORY} bytes"
            ),
        ));
    }
    if !offset.is_multiple_of(cluster_size) {
        return Err(ImageError::new(
            name,
            ImageErrorKind::Misaligned {
                what: "bitmap directory",
                offset,
                alignment: cluster_size,
            },
        ));
    }
    // At most MAX_DIRECTORY, and read_exact checks it lies in the file first.
    let mut bytes = vec![0u8; length as usize];
    read_exact(reader, name, "bitmap directory", offset, &mut bytes)?;
    let file_size = reader.len();
    let mut entries = Vec::with_capacity(count as usize);
    let mut pos = 0usize;
    for _ in 0..count {
        let at = offset + pos as u64;
        let fixed = bytes
            .get(pos..pos + ENTRY_LEN)
            .ok_or_else(|| corrupt(name, at, "the bitmap directory ends inside an entry".into()))?;
        let name_size = usize::from(u16::from_be_bytes(field(fixed, 18)));
        let extra_size = u64::from(be32(fixed, 20));
        // Counted in u64: usize is 32 bits in the sandbox. An entry that fits in the
        // directory, at most MAX_DIRECTORY bytes, fits in usize.
        let entry_len = (ENTRY_LEN as u64 + extra_size + name_size as u64).next_multiple_of(8);
        let Some(entry) = (entry_len <= length - pos as u64)
            .then(|| bytes.get(pos..pos + entry_len as usize))
            .flatten()
        else {
            return Err(corrupt(
                name,
                at,
                "a bitmap directory entry runs past the end of the directory".into(),
            ));
        };
        let extra_size = extra_size as usize;
        if name_size == 0 || name_size > MAX_NAME {
            return Err(corrupt(
                name,
                at,
                format!("a bitmap's name is {name_size} bytes long, not 1 to {MAX_NAME}"),
            ));
        }
        let name_start = ENTRY_LEN + extra_size;
        let bitmap_name =
            String::from_utf8_lossy(&entry[name_start..name_start + name_size]).into_owned();
        let bitmap = Bitmap {
            name: bitmap_name,
            table_offset: be64(fixed, 0),
            table_size: u64::from(be32(fixed, 8)),
            flags: be32(fixed, 12),
            kind: fixed[16],
            granularity_bits: fixed[17],
            extra_data: extra_size > 0,
            at,
        };
        bitmap.check(name, cluster_size, size, file_size)?;
        entries.push(bitmap);
        pos += entry.len();
    }
    if pos as u64 != length {
        return Err(corrupt(
            name,
            extension_at,
            format!(
                "the bitmap directory is {length} bytes long, but its {count} entries take \
                 {pos}"
            ),
        ));
    }
    Ok(Directory::Read(entries))
}

impl Bitmap {
    /// Checks what a read of the bitmap relies on: its table is where it can be and as long
    /// as the disk needs.
    fn check(
        &self,
        name: &str,
        cluster_size: u64,
        size: u64,
        file_size: u64,
    ) -> Result<(), ImageError> {
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(corrupt(
                name,
                self.at + 12,
                format!(
                    "bitmap {:?} has reserved flags set ({:#x})",
                    self.name, self.flags
                ),
            ));
        }
        if self.kind != TYPE_DIRTY_TRACKING || !GRANULARITY_BITS.contains(&self.granularity_bits) {
            // Not one this reader can use; asking for it says so.
            return Ok(());
        }
        let expected = self.data_bytes(size).div_ceil(cluster_size);
        if self.table_size != expected {
            return Err(corrupt(
                name,
                self.at + 8,
                format!(
                    "bitmap {:?} has {} table entries, where a disk of {size} bytes at its \
                     granularity needs {expected}",
                    self.name, self.table_size
                ),
            ));
        }
        if !self.table_offset.is_multiple_of(cluster_size) {
            return Err(ImageError::new(
                name,
                ImageErrorKind::Misaligned {
                    what: "bitmap table",
                    offset: self.table_offset,
                    alignment: cluster_size,
                },
            ));
        }
        let length = self.table_size * 8;
        if self
            .table_offset
            .checked_add(length)
            .is_none_or(|end| end > file_size)
        {
            return Err(ImageError::new(
                name,
                ImageErrorKind::BeyondEnd {
                    what: "bitmap table",
                    offset: self.table_offset,
                    length,
                    file_size,
                },
            ));
        }
        Ok(())
    }

    fn granularity(&self) -> u64 {
        1 << self.granularity_bits
    }

    /// Bytes of bitmap data for a disk of `size` bytes.
    fn data_bytes(&self, size: u64) -> u64 {
        size.div_ceil(self.granularity()).div_ceil(8)
    }

    /// Why the bitmap cannot be trusted to show every write, if it cannot.
    fn unusable(&self) -> Option<&'static str> {
        if self.kind != TYPE_DIRTY_TRACKING {
            Some("it is not a dirty tracking bitmap")
        } else if !GRANULARITY_BITS.contains(&self.granularity_bits) {
            Some("its granularity is outside 512 bytes to 2 GiB")
        } else if self.flags & FLAG_IN_USE != 0 {
            Some(
                "it is marked in use: the image is open in a running QEMU, or QEMU did not \
                 close it cleanly, so the bitmap may miss writes; back a running VM up over \
                 NBD, or take a full backup",
            )
        } else if self.flags & FLAG_AUTO == 0 {
            Some(
                "it is disabled and records no writes, so it would miss the changes made \
                 since; enable it, or name the bitmap that is active",
            )
        } else if self.extra_data && self.flags & FLAG_EXTRA_DATA_COMPATIBLE == 0 {
            Some("it carries extra data of a kind this reader does not know")
        } else {
            None
        }
    }
}

/// The bitmap named `wanted` in `directory`, if it can be used.
pub(crate) fn find<'a>(
    directory: &'a Directory,
    name: &str,
    wanted: &str,
) -> Result<&'a Bitmap, ImageError> {
    let refuse = |reason: String| {
        ImageError::new(
            name,
            ImageErrorKind::Bitmap {
                bitmap: wanted.to_owned(),
                reason,
            },
        )
    };
    let bitmaps = match directory {
        Directory::Absent => return Err(refuse("the image has no persistent bitmaps".into())),
        Directory::Invalidated => {
            return Err(refuse(
                "the image's bitmaps were invalidated: a program that does not know them \
                 wrote the image since, so they may miss writes; take a full backup and \
                 create the bitmap again"
                    .into(),
            ));
        }
        Directory::Read(bitmaps) => bitmaps,
    };
    let Some(bitmap) = bitmaps.iter().find(|b| b.name == wanted) else {
        let names: Vec<String> = bitmaps.iter().map(|b| format!("{:?}", b.name)).collect();
        return Err(refuse(format!(
            "the image has no bitmap of that name (it has {})",
            names.join(", ")
        )));
    };
    match bitmap.unusable() {
        Some(reason) => Err(refuse(reason.into())),
        None => Ok(bitmap),
    }
}

/// The ranges of guest bytes `offset..offset + length` (inside the disk of `size` bytes)
/// that `bitmap` marks as written: sorted, merged, clipped to the range.
pub(crate) fn dirty_ranges(
    reader: &mut dyn crate::ReadAt,
    name: &str,
    bitmap: &Bitmap,
    cluster_size: u64,
    size: u64,
    offset: u64,
    length: u64,
) -> Result<Vec<(u64, u64)>, ImageError> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let end = offset.saturating_add(length).min(size);
    if offset >= end {
        return Ok(ranges);
    }
    let granularity = bitmap.granularity();
    let mut push = |start: u64, stop: u64| {
        let (start, stop) = (start.max(offset), stop.min(end));
        if start >= stop {
            return;
        }
        match ranges.last_mut() {
            Some(last) if last.0 + last.1 == start => last.1 += stop - start,
            _ => ranges.push((start, stop - start)),
        }
    };
    // Bits first_bit..=last_bit, in bytes of bitmap data first_byte..=last_byte, in table
    // entries (clusters of data) first_entry..=last_entry.
    let first_bit = offset / granularity;
    let last_bit = (end - 1) / granularity;
    let bits_per_cluster = cluster_size * 8;
    let first_entry = first_bit / bits_per_cluster;
    let last_entry = last_bit / bits_per_cluster;
    let file_size = reader.len();
    let mut data = Vec::new();
    let mut entry = first_entry;
    while entry <= last_entry {
        let count = (last_entry - entry + 1).min(TABLE_ENTRIES_AT_ONCE);
        let mut table = vec![0u8; (count * 8) as usize];
        let table_at = bitmap.table_offset + entry * 8;
        read_exact(reader, name, "bitmap table", table_at, &mut table)?;
        for (i, raw) in table.chunks_exact(8).enumerate() {
            let index = entry + i as u64;
            let value = be64(raw, 0);
            let host = value & OFFSET_MASK;
            let at = table_at + i as u64 * 8;
            if value & !(OFFSET_MASK | TABLE_ALL_ONES) != 0
                || (host != 0 && value & TABLE_ALL_ONES != 0)
            {
                return Err(corrupt(
                    name,
                    at,
                    format!(
                        "entry {index} of bitmap {:?}'s table ({value:#018x}) has reserved \
                         bits set",
                        bitmap.name
                    ),
                ));
            }
            // The bits of this cluster the request covers.
            let cluster_first = index * bits_per_cluster;
            let lo = first_bit.max(cluster_first);
            let hi = last_bit.min(cluster_first + bits_per_cluster - 1);
            if host == 0 {
                if value & TABLE_ALL_ONES != 0 {
                    push(lo * granularity, (hi + 1) * granularity);
                }
                continue;
            }
            if !host.is_multiple_of(cluster_size) {
                return Err(ImageError::new(
                    name,
                    ImageErrorKind::Misaligned {
                        what: "bitmap data cluster",
                        offset: host,
                        alignment: cluster_size,
                    },
                ));
            }
            if host.checked_add(cluster_size).is_none_or(|e| e > file_size) {
                return Err(ImageError::new(
                    name,
                    ImageErrorKind::BeyondEnd {
                        what: "bitmap data cluster",
                        offset: host,
                        length: cluster_size,
                        file_size,
                    },
                ));
            }
            // The bytes holding bits lo..=hi; at most one cluster.
            let byte_lo = (lo - cluster_first) / 8;
            let byte_hi = (hi - cluster_first) / 8;
            data.resize((byte_hi - byte_lo + 1) as usize, 0);
            read_exact(reader, name, "bitmap data", host + byte_lo, &mut data)?;
            for (j, &byte) in data.iter().enumerate() {
                if byte == 0 {
                    continue;
                }
                let byte_first = cluster_first + (byte_lo + j as u64) * 8;
                if byte == 0xff {
                    push(byte_first * granularity, (byte_first + 8) * granularity);
                    continue;
                }
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        let n = byte_first + bit;
                        push(n * granularity, (n + 1) * granularity);
                    }
                }
            }
        }
        entry += count;
    }
    Ok(ranges)
}
