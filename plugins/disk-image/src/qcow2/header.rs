//! The qcow2 header: the fixed fields at the start of the first cluster, the header
//! extensions after them, and the backing file name. Parsing checks every field a reader
//! depends on and refuses what it cannot read correctly (encryption, external data files,
//! unknown incompatible features) before any table is loaded.
//!
//! ```text
//! offset  size  field                    (all numbers big-endian)
//!      0     4  magic "QFI\xfb"
//!      4     4  version                  2 or 3
//!      8     8  backing_file_offset      0: no backing file
//!     16     4  backing_file_size        at most 1023
//!     20     4  cluster_bits             cluster size = 1 << cluster_bits
//!     24     8  size                     virtual disk size in bytes
//!     32     4  crypt_method             0 none, 1 AES, 2 LUKS
//!     36     4  l1_size                  entries in the active L1 table
//!     40     8  l1_table_offset          cluster aligned
//!     48     8  refcount_table_offset    cluster aligned
//!     56     4  refcount_table_clusters
//!     60     4  nb_snapshots
//!     64     8  snapshots_offset
//!   -- version 3 only (a version 2 header ends at 72) --
//!     72     8  incompatible_features    bit 0 dirty, 1 corrupt, 2 external data file,
//!                                        3 compression type, 4 extended L2 entries
//!     80     8  compatible_features      bit 0 lazy refcounts
//!     88     8  autoclear_features       bit 0: the bitmaps extension is consistent
//!     96     4  refcount_order           refcount width = 1 << refcount_order bits
//!    100     4  header_length            >= 104, a multiple of 8
//!    104     1  compression_type         0 zlib, 1 zstd (present if header_length > 104)
//! ```
//!
//! Header extensions follow the header (at `header_length`, or 72 for version 2) up to the
//! backing file name or the end of the first cluster:
//!
//! ```text
//! TYPE (u32) || LENGTH (u32) || DATA (LENGTH bytes) || zero padding to a multiple of 8
//! ```
//!
//! ending with an extension of type 0.

use crate::error::{ImageError, ImageErrorKind};

/// The first four bytes of every qcow2 image.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Length of a version 2 header, and where its extensions start.
pub(crate) const V2_HEADER_LEN: u32 = 72;
/// The shortest version 3 header.
pub(crate) const V3_MIN_HEADER_LEN: u32 = 104;

/// Smallest cluster size: 512 bytes.
pub(crate) const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster size: 2 MiB, QEMU's limit. Bounds every per-cluster buffer.
pub(crate) const MAX_CLUSTER_BITS: u32 = 21;
/// Extended L2 entries need clusters of at least 16 KiB.
const MIN_EXTENDED_L2_CLUSTER_BITS: u32 = 14;
/// Longest backing file name.
const MAX_BACKING_NAME: u32 = 1023;
/// Widest refcount: 64 bits.
const MAX_REFCOUNT_ORDER: u32 = 6;

/// Incompatible feature: refcounts may be stale (the image is open in a VM, or crashed).
pub(crate) const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature: QEMU found the metadata inconsistent.
pub(crate) const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature: guest clusters live in a separate data file.
pub(crate) const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature: `compression_type` is not zlib.
pub(crate) const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature: 128-bit L2 entries with 32 subclusters per cluster.
pub(crate) const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const KNOWN_INCOMPAT: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTENDED_L2;

/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_DATA_FILE: u32 = 0x4441_5441;
const EXT_BITMAPS: u32 = 0x2385_2875;
/// The bitmaps extension: nb_bitmaps (u32) || reserved (u32) || bitmap_directory_size
/// (u64) || bitmap_directory_offset (u64).
const BITMAPS_EXT_LEN: usize = 24;
/// Autoclear feature: the bitmaps extension's data is consistent. A program that writes
/// the image without knowing bitmaps clears it, and the bitmaps no longer show its writes.
const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// One feature name table entry: type (u8) || bit (u8) || name (46 bytes, zero padded).
const FEATURE_ENTRY_LEN: usize = 48;

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Raw deflate (no zlib header), 4 KiB window.
    Zlib,
    /// Zstandard frames.
    Zstd,
}

/// What the reader needs from a parsed header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub extended_l2: bool,
    pub compression: Compression,
    /// The backing file name as recorded, if any.
    pub backing_file: Option<String>,
    /// The backing format extension's string, if present.
    pub backing_format: Option<String>,
    /// The persistent bitmaps the header points to.
    pub bitmaps: Bitmaps,
}

/// What the header says of persistent bitmaps (qcow2 version 3 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bitmaps {
    /// The image has none.
    Absent,
    /// The image has some, but a program that did not know them wrote it since (the
    /// autoclear bit is clear), so they may miss writes.
    Invalidated,
    /// The bitmap directory: its entries, where it lies and its length in bytes, and where
    /// the extension that points to it lies (for errors).
    Directory {
        count: u32,
        offset: u64,
        size: u64,
        extension_at: u64,
    },
}

/// Copies `N` bytes at `at`, or zeros where `buf` is shorter (callers check lengths first).
pub(crate) fn field<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(at..at.saturating_add(N)) {
        out.copy_from_slice(src);
    }
    out
}

/// The big-endian u32 at `at`, as [`field`] reads it.
pub(crate) fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(field(buf, at))
}

/// The big-endian u64 at `at`, as [`field`] reads it.
pub(crate) fn be64(buf: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(field(buf, at))
}

/// A [`ImageErrorKind::Corrupt`] error about the image `name` at file offset `offset`.
pub(crate) fn corrupt(name: &str, offset: u64, reason: String) -> ImageError {
    ImageError::new(
        name,
        ImageErrorKind::Corrupt {
            offset: Some(offset),
            reason,
        },
    )
}

fn unsupported(name: &str, what: String) -> ImageError {
    ImageError::new(name, ImageErrorKind::Unsupported { what })
}

/// Reads `len` bytes at `offset` of the file, failing with [`ImageErrorKind::BeyondEnd`]
/// naming `what` if the file is shorter.
pub(crate) fn read_exact(
    reader: &mut dyn crate::ReadAt,
    name: &str,
    what: &'static str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), ImageError> {
    let length = buf.len() as u64;
    let file_size = reader.len();
    if offset.checked_add(length).is_none_or(|end| end > file_size) {
        return Err(ImageError::new(
            name,
            ImageErrorKind::BeyondEnd {
                what,
                offset,
                length,
                file_size,
            },
        ));
    }
    reader.read_exact_at(offset, buf).map_err(|cause| {
        ImageError::new(
            name,
            ImageErrorKind::Io {
                offset,
                length,
                cause,
            },
        )
    })
}

impl Header {
    /// Parses and checks the header of the qcow2 image in `reader`.
    pub(crate) fn parse(reader: &mut dyn crate::ReadAt, name: &str) -> Result<Header, ImageError> {
        let file_size = reader.len();
        let mut fixed = [0u8; V3_MIN_HEADER_LEN as usize];
        let fixed_len = if file_size >= u64::from(V3_MIN_HEADER_LEN) {
            V3_MIN_HEADER_LEN
        } else {
            V2_HEADER_LEN
        };
        read_exact(
            reader,
            name,
            "qcow2 header",
            0,
            &mut fixed[..fixed_len as usize],
        )?;

        if field::<4>(&fixed, 0) != MAGIC {
            return Err(corrupt(
                name,
                0,
                "not a qcow2 image (no qcow2 magic)".into(),
            ));
        }
        let version = be32(&fixed, 4);
        match version {
            2 | 3 => {}
            1 => {
                return Err(unsupported(
                    name,
                    "QCOW version 1 images are not supported; convert the image with \
                     `qemu-img convert -O qcow2`"
                        .into(),
                ));
            }
            v => {
                return Err(unsupported(
                    name,
                    format!("qcow2 version {v} is not supported"),
                ));
            }
        }
        let cluster_bits = be32(&fixed, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(corrupt(
                name,
                20,
                format!(
                    "cluster_bits is {cluster_bits}, outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS} \
                     (512 bytes to 2 MiB clusters)"
                ),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;

        let (incompatible, autoclear, header_length) = if version == 2 {
            (0, 0, V2_HEADER_LEN)
        } else {
            if fixed_len < V3_MIN_HEADER_LEN {
                return Err(ImageError::new(
                    name,
                    ImageErrorKind::BeyondEnd {
                        what: "qcow2 version 3 header",
                        offset: 0,
                        length: u64::from(V3_MIN_HEADER_LEN),
                        file_size,
                    },
                ));
            }
            let header_length = be32(&fixed, 100);
            if header_length < V3_MIN_HEADER_LEN
                || !header_length.is_multiple_of(8)
                || u64::from(header_length) > cluster_size
            {
                return Err(corrupt(
                    name,
                    100,
                    format!(
                        "header_length is {header_length}; it must be a multiple of 8 from \
                         {V3_MIN_HEADER_LEN} to the cluster size ({cluster_size})"
                    ),
                ));
            }
            let refcount_order = be32(&fixed, 96);
            if refcount_order > MAX_REFCOUNT_ORDER {
                return Err(corrupt(
                    name,
                    96,
                    format!("refcount_order is {refcount_order}, more than {MAX_REFCOUNT_ORDER}"),
                ));
            }
            (be64(&fixed, 72), be64(&fixed, 88), header_length)
        };

        // The rest of the first cluster holds the extensions and the backing file name.
        let first_len = cluster_size.min(file_size);
        let mut first = vec![0u8; first_len as usize];
        read_exact(reader, name, "qcow2 header cluster", 0, &mut first)?;

        let backing_file_offset = be64(&first, 8);
        let backing_file_size = be32(&first, 16);
        let extensions_end = if backing_file_offset != 0 {
            backing_file_offset.min(cluster_size)
        } else {
            cluster_size
        };
        let ext = parse_extensions(&first, name, u64::from(header_length), extensions_end)?;

        let compression_type = if header_length > V3_MIN_HEADER_LEN {
            first.get(V3_MIN_HEADER_LEN as usize).copied().unwrap_or(0)
        } else {
            0
        };

        let unknown = incompatible & !KNOWN_INCOMPAT;
        if unknown != 0 {
            let bits: Vec<String> = (0..64)
                .filter(|bit| unknown & (1u64 << bit) != 0)
                .map(
                    |bit| match ext.feature_names.iter().find(|(b, _)| *b == bit) {
                        Some((_, feature)) => format!("bit {bit} ({feature})"),
                        None => format!("bit {bit}"),
                    },
                )
                .collect();
            return Err(unsupported(
                name,
                format!(
                    "the image uses unknown incompatible qcow2 features ({}), which are not \
                     supported",
                    bits.join(", ")
                ),
            ));
        }
        if incompatible & INCOMPAT_DIRTY != 0 {
            return Err(ImageError::new(name, ImageErrorKind::InUse));
        }
        if incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(ImageError::new(name, ImageErrorKind::MarkedCorrupt));
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            let file = ext
                .data_file
                .map_or_else(String::new, |f| format!(" ({f:?})"));
            return Err(unsupported(
                name,
                format!(
                    "the image keeps its data in an external data file{file}, which is not \
                     supported; convert it with `qemu-img convert -O qcow2`"
                ),
            ));
        }
        let compression = if incompatible & INCOMPAT_COMPRESSION != 0 {
            match compression_type {
                1 => Compression::Zstd,
                0 => {
                    return Err(corrupt(
                        name,
                        104,
                        "the compression type bit is set but compression_type is 0".into(),
                    ));
                }
                t => {
                    return Err(unsupported(
                        name,
                        format!("qcow2 compression type {t} is not supported"),
                    ));
                }
            }
        } else if compression_type != 0 {
            return Err(corrupt(
                name,
                104,
                format!(
                    "compression_type is {compression_type} but the compression type bit is not set"
                ),
            ));
        } else {
            Compression::Zlib
        };
        let extended_l2 = incompatible & INCOMPAT_EXTENDED_L2 != 0;
        if extended_l2 && cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS {
            return Err(corrupt(
                name,
                20,
                format!(
                    "extended L2 entries need clusters of at least 16 KiB, but cluster_bits is \
                     {cluster_bits}"
                ),
            ));
        }

        match be32(&first, 32) {
            0 => {}
            method => {
                let which = match method {
                    1 => "AES-encrypted",
                    2 => "LUKS-encrypted",
                    _ => "encrypted",
                };
                return Err(unsupported(
                    name,
                    format!(
                        "the image is {which} (crypt_method {method}), and encrypted images are \
                         not supported; decrypt it with `qemu-img convert` first"
                    ),
                ));
            }
        }

        let backing_file = if backing_file_offset == 0 || backing_file_size == 0 {
            None
        } else {
            if backing_file_size > MAX_BACKING_NAME {
                return Err(corrupt(
                    name,
                    16,
                    format!(
                        "the backing file name is {backing_file_size} bytes long, more than \
                         {MAX_BACKING_NAME}"
                    ),
                ));
            }
            let end = backing_file_offset.saturating_add(u64::from(backing_file_size));
            if end > cluster_size {
                return Err(corrupt(
                    name,
                    8,
                    format!(
                        "the backing file name at offset {backing_file_offset:#x} \
                         ({backing_file_size} bytes) does not lie in the first cluster"
                    ),
                ));
            }
            // Within the first cluster, so both fit in usize.
            match first.get(backing_file_offset as usize..end as usize) {
                Some(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
                None => {
                    return Err(ImageError::new(
                        name,
                        ImageErrorKind::BeyondEnd {
                            what: "backing file name",
                            offset: backing_file_offset,
                            length: u64::from(backing_file_size),
                            file_size,
                        },
                    ));
                }
            }
        };

        // Version 2 has no autoclear bits, so no consistent bitmaps either.
        let bitmaps = match ext.bitmaps {
            None => Bitmaps::Absent,
            Some(_) if autoclear & AUTOCLEAR_BITMAPS == 0 => Bitmaps::Invalidated,
            Some((count, size, offset, extension_at)) => Bitmaps::Directory {
                count,
                offset,
                size,
                extension_at,
            },
        };

        Ok(Header {
            version,
            cluster_bits,
            size: be64(&first, 24),
            l1_size: be32(&first, 36),
            l1_table_offset: be64(&first, 40),
            extended_l2,
            compression,
            backing_file,
            backing_format: ext.backing_format,
            bitmaps,
        })
    }

    /// Bytes per cluster.
    pub(crate) fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
}

/// What the header extensions say.
#[derive(Debug, Default)]
struct Extensions {
    backing_format: Option<String>,
    data_file: Option<String>,
    /// The bitmaps extension: nb_bitmaps, directory size and offset, and where it lies.
    bitmaps: Option<(u32, u64, u64, u64)>,
    /// Names of incompatible features by bit.
    feature_names: Vec<(u32, String)>,
}

/// Walks the header extensions in `first[start..end]`. An area cut short by the end of the
/// file ends the walk like an end marker would; an extension running past the area is an
/// error.
fn parse_extensions(
    first: &[u8],
    name: &str,
    start: u64,
    end: u64,
) -> Result<Extensions, ImageError> {
    let mut ext = Extensions::default();
    let end = end.min(first.len() as u64);
    let mut pos = start;
    while pos.saturating_add(8) <= end {
        // pos + 8 <= end <= first.len(), so these fit in usize.
        let ext_type = be32(first, pos as usize);
        let ext_len = u64::from(be32(first, pos as usize + 4));
        if ext_type == EXT_END {
            break;
        }
        let data_start = pos + 8;
        let data_end = data_start + ext_len;
        // data_end <= end <= first.len() before the casts, so they cannot truncate.
        let data = (data_end <= end)
            .then(|| first.get(data_start as usize..data_end as usize))
            .flatten();
        let Some(data) = data else {
            return Err(corrupt(
                name,
                pos,
                format!(
                    "header extension {ext_type:#010x} ({ext_len} bytes) runs past the end of \
                     the header extension area ({end:#x})"
                ),
            ));
        };
        let text = || String::from_utf8_lossy(data).into_owned();
        match ext_type {
            EXT_BITMAPS => {
                if data.len() != BITMAPS_EXT_LEN {
                    return Err(corrupt(
                        name,
                        pos,
                        format!(
                            "the bitmaps extension holds {} bytes, not {BITMAPS_EXT_LEN}",
                            data.len()
                        ),
                    ));
                }
                ext.bitmaps = Some((be32(data, 0), be64(data, 8), be64(data, 16), pos));
            }
            EXT_BACKING_FORMAT => ext.backing_format = Some(text()),
            EXT_DATA_FILE => ext.data_file = Some(text()),
            EXT_FEATURE_TABLE => {
                for entry in data.chunks_exact(FEATURE_ENTRY_LEN) {
                    if entry.first() == Some(&0) {
                        let bit = u32::from(entry.get(1).copied().unwrap_or(0));
                        let raw = entry.get(2..).unwrap_or_default();
                        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                        let feature = String::from_utf8_lossy(raw.get(..len).unwrap_or_default());
                        ext.feature_names.push((bit, feature.into_owned()));
                    }
                }
            }
            _ => {}
        }
        pos = data_end.next_multiple_of(8);
    }
    Ok(ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid version 3 header in a 64 KiB first cluster.
    pub(crate) fn header_v3() -> Vec<u8> {
        let mut h = vec![0u8; 65536];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&65536u64.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h
    }

    fn parse(mut bytes: Vec<u8>) -> Result<Header, ImageError> {
        Header::parse(&mut bytes, "t")
    }

    #[test]
    fn a_minimal_header_parses() {
        let h = parse(header_v3()).unwrap();
        assert_eq!((h.version, h.cluster_bits, h.size), (3, 16, 1 << 20));
        assert_eq!(h.compression, Compression::Zlib);
        assert!(h.backing_file.is_none());
    }

    #[test]
    fn extensions_and_backing_name_are_read() {
        let mut h = header_v3();
        h[104..108].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        h[108..112].copy_from_slice(&5u32.to_be_bytes());
        h[112..117].copy_from_slice(b"qcow2");
        h[8..16].copy_from_slice(&512u64.to_be_bytes());
        h[16..20].copy_from_slice(&8u32.to_be_bytes());
        h[512..520].copy_from_slice(b"base.img");
        let h = parse(h).unwrap();
        assert_eq!(h.backing_file.as_deref(), Some("base.img"));
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
    }

    #[test]
    fn refused_features_say_why() {
        let mut h = header_v3();
        h[72..80].copy_from_slice(&(1u64 << 9).to_be_bytes());
        h[104..108].copy_from_slice(&EXT_FEATURE_TABLE.to_be_bytes());
        h[108..112].copy_from_slice(&48u32.to_be_bytes());
        h[113] = 9;
        h[114..118].copy_from_slice(b"warp");
        let err = parse(h).unwrap_err();
        assert!(err.to_string().contains("bit 9 (warp)"), "{err}");

        let mut h = header_v3();
        h[79] = 1;
        assert!(matches!(
            parse(h).unwrap_err().kind(),
            ImageErrorKind::InUse
        ));

        let mut h = header_v3();
        h[35] = 2;
        let err = parse(h).unwrap_err();
        assert!(err.to_string().contains("LUKS"), "{err}");

        let mut h = header_v3();
        h[23] = 30;
        let err = parse(h).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ImageErrorKind::Corrupt {
                    offset: Some(20),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_extension_past_its_area_is_corrupt() {
        let mut h = header_v3();
        h[104..108].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        h[108..112].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = parse(h).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ImageErrorKind::Corrupt {
                    offset: Some(104),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_headers_are_beyond_the_end() {
        let err = parse(header_v3()[..50].to_vec()).unwrap_err();
        assert!(
            matches!(err.kind(), ImageErrorKind::BeyondEnd { .. }),
            "{err}"
        );
        let err = parse(header_v3()[..80].to_vec()).unwrap_err();
        assert!(
            matches!(err.kind(), ImageErrorKind::BeyondEnd { .. }),
            "{err}"
        );
    }
}
