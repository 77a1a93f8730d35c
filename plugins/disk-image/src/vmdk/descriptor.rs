//! The text descriptor of a VMDK disk: embedded in a sparse file, or a file of its own
//! (`# Disk DescriptorFile`) that lists the extent files holding the disk's bytes.
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! CID=3c3d218e                       the disk's content id, changed on every first write
//! parentCID=ffffffff                 the parent's CID when the snapshot was taken, or none
//! createType="twoGbMaxExtentFlat"
//! parentFileNameHint="base.vmdk"     a delta disk's parent
//! RW 4192256 FLAT "disk-f001.vmdk" 0 access, sectors, type, file, offset (sectors)
//! RW 2048 SPARSE "disk-s002.vmdk"
//! RW 2048 ZERO
//! ddb.geometry.cylinders = "10"      the disk database: geometry, adapter, tools
//! ```
//!
//! Extents follow each other in the order listed. Every line this reader acts on is
//! checked, and an error names the line and its offset in the file.

use crate::error::ImageError;
use crate::fields::{corrupt, unsupported};

use super::SECTOR;
use super::esx::EsxFormat;

/// The first line of a descriptor file.
pub(crate) const MAGIC: &[u8] = b"# Disk DescriptorFile";
/// A `parentCID` that says the disk has no parent.
const NO_PARENT: u32 = 0xffff_ffff;
/// Most extents a descriptor may list: a 62 TB disk split into 2 GB extents needs about
/// 31,000; the limit bounds the files a crafted descriptor makes the reader open.
pub(crate) const MAX_EXTENTS: usize = 32 << 10;

/// Where a line lies: its number (from 1) and the file offset of its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) number: usize,
    pub(super) offset: u64,
}

/// How an extent holds its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExtentType {
    /// A hosted sparse extent file.
    Sparse,
    /// A range of a raw file, from this byte offset (`FLAT`, or ESXi's `VMFS`).
    Flat(u64),
    /// Zeros, with no file.
    Zero,
    /// An ESXi snapshot extent file: `VMFSSPARSE` (a `COWD` file) or `SESPARSE`.
    Esx(super::esx::EsxFormat),
}

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExtentLine {
    /// Its length in bytes.
    pub(super) length: u64,
    pub(super) kind: ExtentType,
    /// The file as the line names it; empty for a zero extent.
    pub(super) file: String,
    pub(super) line: Line,
    /// The line itself, for messages.
    pub(super) text: String,
}

/// A delta disk's parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParentRef {
    /// The parent's CID when the delta was made.
    pub(super) cid: u32,
    /// The parent file's name as recorded.
    pub(super) hint: String,
    /// The `parentCID` line.
    pub(super) line: Line,
}

/// What a descriptor says.
#[derive(Debug, Default)]
pub(super) struct Descriptor {
    pub(super) cid: Option<u32>,
    pub(super) create_type: Option<String>,
    pub(super) parent: Option<ParentRef>,
    pub(super) extents: Vec<ExtentLine>,
    /// `ddb.geometry.cylinders`, `heads` and `sectors` when all three are given, and the
    /// line of the last of them.
    pub(super) geometry: Option<(u64, u64, u64, Line)>,
}

impl Descriptor {
    /// Parses the descriptor `text` of the file `name`, where it starts at file offset
    /// `base`. Text after a NUL byte (the padding of an embedded descriptor) is ignored.
    pub(super) fn parse(text: &[u8], base: u64, name: &str) -> Result<Descriptor, ImageError> {
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        let mut descriptor = Descriptor::default();
        let mut parent_cid = None;
        let mut hint = None;
        let (mut cylinders, mut heads, mut sectors) = (None, None, None);
        let mut offset = base;
        // Lines are split as bytes, so that offsets stay true past bytes that are not UTF-8.
        for (i, raw) in text[..end].split_inclusive(|&b| b == b'\n').enumerate() {
            let line = Line {
                number: i + 1,
                offset,
            };
            offset += raw.len() as u64;
            let raw = String::from_utf8_lossy(raw);
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let bad = |reason: String| {
                corrupt(
                    name,
                    Some(line.offset),
                    format!("descriptor line {} ({trimmed:?}): {reason}", line.number),
                )
            };
            if let Some((key, value)) = trimmed.split_once('=')
                && !is_extent_line(trimmed)
            {
                let value = value.trim().trim_matches('"');
                match key.trim() {
                    "CID" => descriptor.cid = Some(parse_cid(value).map_err(&bad)?),
                    "parentCID" => parent_cid = Some((parse_cid(value).map_err(&bad)?, line)),
                    "createType" => descriptor.create_type = Some(value.to_owned()),
                    "parentFileNameHint" => hint = Some(value.to_owned()),
                    "ddb.geometry.cylinders" => cylinders = Some(parse_number(value, &bad)?),
                    "ddb.geometry.heads" => heads = Some(parse_number(value, &bad)?),
                    "ddb.geometry.sectors" => sectors = Some((parse_number(value, &bad)?, line)),
                    _ => {}
                }
                continue;
            }
            if !is_extent_line(trimmed) {
                return Err(bad(
                    "neither a comment, a `key=value` setting nor an extent line".into(),
                ));
            }
            if descriptor.extents.len() == MAX_EXTENTS {
                return Err(bad(format!(
                    "more than {MAX_EXTENTS} extents are listed; the limit guards against \
                     descriptors that would open files without end"
                )));
            }
            let extent = parse_extent(trimmed, line, name, &bad)?;
            descriptor.extents.push(extent);
        }
        if let (Some(c), Some(h), Some((s, line))) = (cylinders, heads, sectors) {
            descriptor.geometry = Some((c, h, s, line));
        }
        descriptor.parent = match parent_cid {
            None | Some((NO_PARENT, _)) => None,
            Some((cid, line)) => {
                let hint = hint.filter(|h| !h.is_empty()).ok_or_else(|| {
                    corrupt(
                        name,
                        Some(line.offset),
                        format!(
                            "descriptor line {}: the disk is a delta disk (parentCID {cid:08x}) \
                             but names no parent (parentFileNameHint)",
                            line.number
                        ),
                    )
                })?;
                Some(ParentRef { cid, hint, line })
            }
        };
        Ok(descriptor)
    }
}

/// Whether a line is an extent line: an access keyword and a space.
fn is_extent_line(line: &str) -> bool {
    let word = line.split_whitespace().next().unwrap_or_default();
    matches!(word, "RW" | "RDONLY" | "NOACCESS") && line.len() > word.len()
}

/// A CID: eight hexadecimal digits at most.
fn parse_cid(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 16).map_err(|_| format!("{value:?} is not a hexadecimal CID"))
}

fn parse_number(value: &str, bad: &impl Fn(String) -> ImageError) -> Result<u64, ImageError> {
    value
        .parse()
        .map_err(|_| bad(format!("{value:?} is not a number")))
}

/// Parses `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
fn parse_extent(
    text: &str,
    line: Line,
    name: &str,
    bad: &impl Fn(String) -> ImageError,
) -> Result<ExtentLine, ImageError> {
    // Three words, then the rest: `"FILE"` and, for a flat extent, its offset (a file
    // name may hold spaces).
    let mut rest = text;
    let mut word = || {
        let trimmed = rest.trim_start();
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let (word, tail) = trimmed.split_at(end);
        rest = tail;
        word
    };
    let (access, sectors, kind) = (word(), word(), word());
    let rest = rest.trim();
    let unsupported_line = |what: &str| {
        unsupported(
            name,
            format!(
                "descriptor line {} ({text:?}, at offset {:#x}): {what}",
                line.number, line.offset
            ),
        )
    };
    if access == "NOACCESS" {
        return Err(unsupported_line(
            "an extent the disk may not read (NOACCESS) cannot be backed up",
        ));
    }
    let sectors: u64 = sectors
        .parse()
        .map_err(|_| bad(format!("{sectors:?} is not a number of sectors")))?;
    if sectors == 0 {
        return Err(bad("an extent of no sectors".into()));
    }
    let length = sectors
        .checked_mul(SECTOR)
        .ok_or_else(|| bad(format!("{sectors} sectors overflow a byte count")))?;
    let (file, tail) = if rest.is_empty() {
        (String::new(), "")
    } else {
        let quoted = rest
            .strip_prefix('"')
            .and_then(|r| r.split_once('"'))
            .ok_or_else(|| bad("the file name is not in double quotes".into()))?;
        (quoted.0.to_owned(), quoted.1.trim())
    };
    let needs_file = |file: &str| {
        if file.is_empty() {
            Err(bad(format!("a {kind} extent must name its file")))
        } else {
            Ok(())
        }
    };
    let no_tail = |tail: &str| {
        if tail.is_empty() {
            Ok(())
        } else {
            Err(bad(format!("unexpected {tail:?} after the extent")))
        }
    };
    let kind = match kind {
        "SPARSE" => {
            needs_file(&file)?;
            no_tail(tail)?;
            ExtentType::Sparse
        }
        "FLAT" | "VMFS" => {
            needs_file(&file)?;
            let start = match tail {
                "" if kind == "VMFS" => 0,
                "" => return Err(bad("a FLAT extent must give its offset".into())),
                offset => offset
                    .parse::<u64>()
                    .map_err(|_| bad(format!("{offset:?} is not an offset in sectors")))?,
            };
            let start = start
                .checked_mul(SECTOR)
                .ok_or_else(|| bad(format!("offset of {start} sectors overflows")))?;
            ExtentType::Flat(start)
        }
        "ZERO" => {
            no_tail(tail)?;
            if !file.is_empty() {
                return Err(bad("a ZERO extent names no file".into()));
            }
            ExtentType::Zero
        }
        "VMFSSPARSE" | "SESPARSE" => {
            needs_file(&file)?;
            no_tail(tail)?;
            ExtentType::Esx(if kind == "SESPARSE" {
                EsxFormat::SeSparse
            } else {
                EsxFormat::VmfsSparse
            })
        }
        "VMFSRDM" | "VMFSRAW" => {
            return Err(unsupported_line(&format!(
                "{kind} extents (raw device mappings) are not read; back up the mapped \
                 device itself"
            )));
        }
        other => {
            return Err(unsupported_line(&format!(
                "extents of type {other:?} are not read; SPARSE, FLAT, VMFS, VMFSSPARSE, SESPARSE and ZERO are"
            )));
        }
    };
    Ok(ExtentLine {
        length,
        kind,
        file,
        line,
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_lines_and_settings_are_read_with_their_places() {
        let text = b"# Disk DescriptorFile\nversion=1\nCID=0bba4260\nparentCID=1234abcd\n\
            createType=\"twoGbMaxExtentSparse\"\nparentFileNameHint=\"my base.vmdk\"\n\n\
            RW 10240 SPARSE \"a b-s001.vmdk\"\nRDONLY 20 FLAT \"f.vmdk\" 7\nRW 8 ZERO\n\
            RW 16 VMFS \"v.vmdk\"\nddb.geometry.cylinders = \"10\"\nddb.geometry.heads = \"16\"\n\
            ddb.geometry.sectors = \"63\"\n\0\0junk";
        let d = Descriptor::parse(text, 512, "d").unwrap();
        assert_eq!(d.cid, Some(0x0bba_4260));
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentSparse"));
        let parent = d.parent.unwrap();
        assert_eq!(
            (parent.cid, parent.hint.as_str()),
            (0x1234_abcd, "my base.vmdk")
        );
        assert_eq!(parent.line.number, 4);
        let kinds: Vec<_> = d
            .extents
            .iter()
            .map(|e| (e.length, e.kind, e.file.as_str(), e.line.number))
            .collect();
        assert_eq!(
            kinds,
            [
                (10240 * 512, ExtentType::Sparse, "a b-s001.vmdk", 8),
                (20 * 512, ExtentType::Flat(7 * 512), "f.vmdk", 9),
                (8 * 512, ExtentType::Zero, "", 10),
                (16 * 512, ExtentType::Flat(0), "v.vmdk", 11),
            ]
        );
        let first = text.windows(3).position(|w| w == b"RW ").unwrap() as u64;
        assert_eq!(d.extents[0].line.offset, 512 + first);
        let (c, h, s, _) = d.geometry.unwrap();
        assert_eq!((c, h, s), (10, 16, 63));
    }

    #[test]
    fn bad_and_unsupported_lines_are_named() {
        for (line, expect) in [
            ("RW 10 SESPARSE", "must name its file"),
            ("RW 10 VMFSRDM \"d-rdm.vmdk\"", "raw device"),
            ("RW 10 FANCY \"x\"", "FANCY"),
            ("NOACCESS 10 FLAT \"x\" 0", "NOACCESS"),
            ("RW 0 SPARSE \"x\"", "no sectors"),
            ("RW ten SPARSE \"x\"", "not a number"),
            ("RW 10 FLAT \"x\"", "offset"),
            ("RW 10 FLAT x 0", "double quotes"),
            ("RW 10 SPARSE \"x\" 5", "unexpected"),
            ("RW 99999999999999999999 ZERO", "not a number"),
            ("RW 36028797018963968 ZERO", "overflow"),
            ("CID=nothex", "CID"),
            ("what is this", "neither"),
        ] {
            let text = format!("# Disk DescriptorFile\nversion=1\n{line}\n");
            let err = Descriptor::parse(text.as_bytes(), 0, "d").unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("descriptor line 3") && message.contains(expect),
                "{line}: {message}"
            );
            assert!(message.contains("offset 0x20"), "{message}");
        }
        let err = Descriptor::parse(b"parentCID=12345678\n", 0, "d").unwrap_err();
        assert!(err.to_string().contains("parentFileNameHint"), "{err}");
    }
}
