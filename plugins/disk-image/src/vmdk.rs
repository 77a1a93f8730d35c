//! VMDK disks (VMware's virtual disks): one sparse file (`monolithicSparse`, VMware's
//! default for a growable disk, and `streamOptimized`, its compressed form in OVF/OVA
//! exports), or a text descriptor file listing the extents that hold the disk's bytes in
//! order (`monolithicFlat`, `twoGbMaxExtentSparse`, `twoGbMaxExtentFlat`, ESXi's `vmfs`),
//! and delta disks (snapshots) over their parent, ESXi's `vmfsSparse` and `seSparse`
//! snapshots among them.
//!
//! An extent is a hosted sparse file ([`sparse`]), an ESXi snapshot file ([`esx`]:
//! `VMFSSPARSE`, `SESPARSE`), a range of a raw file (`FLAT`, `VMFS`) or zeros (`ZERO`). Extent files are opened through the caller's opener, as files the
//! descriptor names, relative to it. A delta disk (`parentCID` other than `ffffffff`)
//! reads the grains it never wrote from its parent (`parentFileNameHint`), opened through
//! the opener as a backing file; the parent's `CID` must still be the `parentCID` the
//! delta recorded, or the parent was written after the snapshot and the delta no longer
//! applies over it. Raw-device extents (`VMFSRDM`, `VMFSRAW`) are refused.
//!
//! Every number read is checked before use: the grain tables are bounded ([`MAX_GRAINS`]
//! for all extents of a disk together), the descriptor by [`MAX_DESCRIPTOR`] bytes and
//! [`descriptor::MAX_EXTENTS`] extents, every extent must lie in its file and a sparse
//! extent hold exactly the sectors its line gives, and a compressed grain must inflate to
//! its full size. Only the bytes of the opened file itself (a monolithic sparse file's
//! uncompressed grains) are reported as stored in it; extents in other files are read
//! through [`DiskImage::read_at`].

mod descriptor;
mod esx;
mod sparse;

pub(crate) use descriptor::MAGIC as DESCRIPTOR_MAGIC;
pub(crate) use esx::{COWD_MAGIC, SESPARSE_MAGIC};
pub(crate) use sparse::MAGIC;

use crate::block_map::read_exact as read;
use crate::chain::{self, BackingOpener, BackingRef, BackingRole, ImageFile};
use crate::error::ImageError;
use crate::fields::{corrupt, unsupported};
use crate::image::{
    DiskImage, ExtentList, Run, Stored, check_range, lower_file_name, push_lower_runs, push_run,
};
use crate::raw::Raw;
use crate::{Extent, ExtentKind, Format, ReadAt};
use descriptor::{Descriptor, ExtentLine, ExtentType, ParentRef};
use esx::{EsxFormat, EsxSparse};
use sparse::{Grain, SparseExtent};

/// VMDK counts in sectors of 512 bytes.
const SECTOR: u64 = 512;
/// Most grains read, over all the extents of one disk: tables of 128 MiB, a disk of 2 TiB
/// in 64 KiB grains.
pub const MAX_GRAINS: u64 = 32 << 20;
/// Largest descriptor read, embedded or a file of its own.
pub const MAX_DESCRIPTOR: u64 = 1 << 20;
/// Largest disk a descriptor may describe: 256 TiB, well above VMware's 62 TB.
const MAX_SIZE: u64 = 1 << 48;
/// `createType`s of a disk in one sparse file.
const MONOLITHIC_TYPES: &[&str] = &["monolithicSparse", "streamOptimized"];
/// `createType`s of a disk described by a descriptor file that this reader reads; their
/// extent lines decide the rest.
const DESCRIBED_TYPES: &[&str] = &[
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "vmfs",
    "vmfsThin",
    "monolithicSparse",
    "vmfsSparse",
    "seSparse",
];

/// A VMDK disk: its extents in order, and a delta disk's parent.
pub struct Vmdk {
    name: String,
    size: u64,
    create_type: String,
    /// The disk's content id, which a delta disk over it records.
    cid: Option<u32>,
    /// The extents, contiguous from guest offset 0 to the disk's size.
    parts: Vec<Part>,
    parent: Option<Box<Vmdk>>,
}

/// One extent of the disk, at its place in the guest disk.
struct Part {
    /// Guest offset of its first byte.
    start: u64,
    /// Its length in bytes, never 0.
    length: u64,
    data: PartData,
}

/// Where an extent's bytes are.
enum PartData {
    /// A sparse extent; `own_file` when it is the opened file itself, whose uncompressed
    /// grains the caller may read straight from it.
    Sparse {
        extent: SparseExtent,
        own_file: bool,
    },
    /// An ESXi snapshot extent, in a file of its own.
    Esx(EsxSparse),
    /// The bytes of a raw file from byte `start` on.
    Flat {
        file: Raw<Box<dyn ReadAt>>,
        start: u64,
    },
    /// Zeros.
    Zero,
}

impl Vmdk {
    /// Opens a VMDK disk (a sparse file or a descriptor file) and, for a delta disk, its
    /// parents; `opener` resolves extent files and parents (pass
    /// [`no_backing`](crate::no_backing) for a disk in one file).
    pub fn open(file: ImageFile, opener: &mut BackingOpener<'_>) -> Result<Vmdk, ImageError> {
        let mut names = vec![file.name.clone()];
        Self::open_in_chain(file, opener, &mut names)
    }

    /// Opens `file`, whose name is already the last of `chain`, and its parents.
    pub(crate) fn open_in_chain(
        mut file: ImageFile,
        opener: &mut BackingOpener<'_>,
        chain: &mut Vec<String>,
    ) -> Result<Vmdk, ImageError> {
        let mut head = [0u8; 4];
        let n = file.reader.len().min(4) as usize;
        read(&mut *file.reader, &file.name, 0, &mut head[..n])?;
        if &head == MAGIC {
            return Self::open_sparse(file, opener, chain);
        }
        if &head == COWD_MAGIC || head == SESPARSE_MAGIC[..4] {
            return Err(unsupported(
                &file.name,
                "the file is the extent of an ESXi snapshot (a vmfsSparse or seSparse delta); \
                 open the descriptor file that names it (`NAME-000001.vmdk`) instead",
            ));
        }
        Self::open_descriptor(file, opener, chain)
    }

    /// Opens a disk in one sparse file, its descriptor embedded.
    fn open_sparse(
        file: ImageFile,
        opener: &mut BackingOpener<'_>,
        chain: &mut Vec<String>,
    ) -> Result<Vmdk, ImageError> {
        let name = file.name;
        let mut extent = SparseExtent::open(file.reader, name.clone(), MAX_GRAINS)?;
        let Some((text, base)) = extent.embedded_descriptor(MAX_DESCRIPTOR)? else {
            return Err(unsupported(
                &name,
                "the VMDK file is one extent of a disk described by a separate descriptor \
                 file (a split or snapshot disk); open the descriptor file instead",
            ));
        };
        let descriptor = Descriptor::parse(&text, base, &name)?;
        let create_type = descriptor.create_type.clone().unwrap_or_default();
        if !create_type.is_empty() && !MONOLITHIC_TYPES.contains(&create_type.as_str()) {
            return Err(unsupported(
                &name,
                format!(
                    "a VMDK disk of type {create_type:?} in a sparse file; only \
                     monolithicSparse and streamOptimized disks are held in one file (open \
                     the descriptor file of a disk of another type)"
                ),
            ));
        }
        let size = extent.capacity();
        let parts = vec![Part {
            start: 0,
            length: size,
            data: PartData::Sparse {
                extent,
                own_file: true,
            },
        }];
        let parent = open_parent(descriptor.parent.as_ref(), &name, opener, chain)?;
        Ok(Vmdk {
            name,
            size,
            create_type,
            cid: descriptor.cid,
            parts,
            parent,
        })
    }

    /// Opens a disk described by a descriptor file, and its extent files.
    fn open_descriptor(
        mut file: ImageFile,
        opener: &mut BackingOpener<'_>,
        chain: &mut Vec<String>,
    ) -> Result<Vmdk, ImageError> {
        let name = file.name;
        let len = file.reader.len();
        let neither = |why: &str| {
            corrupt(
                &name,
                Some(0),
                format!(
                    "neither a sparse VMDK file (`KDMV` magic) nor a VMDK descriptor file \
                     (`# Disk DescriptorFile`): {why}"
                ),
            )
        };
        if len > MAX_DESCRIPTOR {
            return Err(neither(&format!(
                "it has {len} bytes, more than the {MAX_DESCRIPTOR} a descriptor may have"
            )));
        }
        let mut text = vec![0u8; len as usize];
        read(&mut *file.reader, &name, 0, &mut text)?;
        if !text.starts_with(DESCRIPTOR_MAGIC) {
            return Err(neither("no magic at offset 0"));
        }
        let descriptor = Descriptor::parse(&text, 0, &name)?;
        let create_type = descriptor.create_type.clone().unwrap_or_default();
        match create_type.as_str() {
            "" => return Err(corrupt(&name, None, "the descriptor gives no createType")),
            t if DESCRIBED_TYPES.contains(&t) => {}
            _ => {
                return Err(unsupported(
                    &name,
                    format!(
                        "a VMDK disk of type {create_type:?}; the types read are {} and, in \
                         one file, {}",
                        DESCRIBED_TYPES.join(", "),
                        MONOLITHIC_TYPES.join(", ")
                    ),
                ));
            }
        }
        if descriptor.extents.is_empty() {
            return Err(corrupt(&name, None, "the descriptor lists no extents"));
        }
        let mut parts = Vec::with_capacity(descriptor.extents.len());
        let mut start = 0u64;
        let mut grains_left = MAX_GRAINS;
        for line in &descriptor.extents {
            let end = start
                .checked_add(line.length)
                .filter(|&end| end <= MAX_SIZE)
                .ok_or_else(|| {
                    line_error(
                        &name,
                        line,
                        format!("the disk grows past the {MAX_SIZE} bytes a disk may have here"),
                    )
                })?;
            let data = open_extent(&name, line, opener, &mut grains_left)?;
            parts.push(Part {
                start,
                length: line.length,
                data,
            });
            start = end;
        }
        let size = start;
        // QEMU and VMware round the geometry down from the size: a geometry larger than
        // the extents says that extent lines are missing.
        if let Some((c, h, s, line)) = descriptor.geometry
            && c.saturating_mul(h).saturating_mul(s) > size / SECTOR
        {
            return Err(corrupt(
                &name,
                Some(line.offset),
                format!(
                    "descriptor line {}: the geometry ({c} cylinders, {h} heads, {s} sectors) \
                     is larger than the {} sectors the extents hold; an extent line is missing",
                    line.number,
                    size / SECTOR
                ),
            ));
        }
        let parent = open_parent(descriptor.parent.as_ref(), &name, opener, chain)?;
        Ok(Vmdk {
            name,
            size,
            create_type,
            cid: descriptor.cid,
            parts,
            parent,
        })
    }

    /// The parent of a delta disk, if it is one.
    pub fn parent(&self) -> Option<&Vmdk> {
        self.parent.as_deref()
    }

    /// The extent at guest offset `pos` (below the size), and `pos` within it.
    fn part_at(&self, pos: u64) -> (usize, u64) {
        let i = self.parts.partition_point(|p| p.start + p.length <= pos);
        (i, pos - self.parts[i].start)
    }
}

/// An error about the extent line `line` of the descriptor `name`.
fn line_error(name: &str, line: &ExtentLine, reason: String) -> ImageError {
    corrupt(
        name,
        Some(line.line.offset),
        format!(
            "descriptor line {} ({:?}): {reason}",
            line.line.number, line.text
        ),
    )
}

/// Opens the extent of `line` in the descriptor `name`, a sparse one sharing
/// `grains_left`.
fn open_extent(
    name: &str,
    line: &ExtentLine,
    opener: &mut BackingOpener<'_>,
    grains_left: &mut u64,
) -> Result<PartData, ImageError> {
    let format = match line.kind {
        ExtentType::Zero => return Ok(PartData::Zero),
        ExtentType::Sparse | ExtentType::Esx(_) => Format::Vmdk,
        ExtentType::Flat(_) => Format::Raw,
    };
    let reference = BackingRef {
        name: line.file.clone(),
        referenced_by: name.to_owned(),
        format: Some(format),
        role: BackingRole::Extent,
    };
    let mut file = opener(&reference)?;
    let file_size = file.reader.len();
    match line.kind {
        ExtentType::Flat(start) => {
            if start
                .checked_add(line.length)
                .is_none_or(|end| end > file_size)
            {
                return Err(line_error(
                    name,
                    line,
                    format!(
                        "the extent's {} bytes at offset {start:#x} of {} pass the end of that \
                         file ({file_size} bytes)",
                        line.length, file.name
                    ),
                ));
            }
            Ok(PartData::Flat {
                file: Raw::new(file.reader, file.name, file.data_ranges),
                start,
            })
        }
        ExtentType::Esx(format) => {
            let extent = EsxSparse::open(file.reader, file.name, format)?;
            check_capacity(name, line, extent.name(), extent.capacity())?;
            Ok(PartData::Esx(extent))
        }
        _ => {
            let mut head = [0u8; 4];
            let n = file_size.min(4) as usize;
            read(&mut *file.reader, &file.name, 0, &mut head[..n])?;
            if &head == COWD_MAGIC {
                return Err(unsupported(
                    name,
                    format!(
                        "descriptor line {} ({:?}): {} is an ESXi snapshot extent (COWD), which \
                         the line should give as VMFSSPARSE",
                        line.line.number, line.text, file.name
                    ),
                ));
            }
            let extent = SparseExtent::open(file.reader, file.name, *grains_left)?;
            *grains_left -= extent.grains() as u64;
            check_capacity(name, line, extent.name(), extent.capacity())?;
            Ok(PartData::Sparse {
                extent,
                own_file: false,
            })
        }
    }
}

/// Refuses the extent file `file` of `capacity` bytes when the line `line` of the
/// descriptor `name` gives it another length.
fn check_capacity(
    name: &str,
    line: &ExtentLine,
    file: &str,
    capacity: u64,
) -> Result<(), ImageError> {
    if capacity == line.length {
        return Ok(());
    }
    Err(line_error(
        name,
        line,
        format!(
            "the extent file {file} holds {} sectors, where the line gives {}",
            capacity / SECTOR,
            line.length / SECTOR
        ),
    ))
}

/// Opens the parent `parent` of the delta disk `name` through `opener`, below the images
/// in `chain`, and checks that it is the disk the delta was made over.
fn open_parent(
    parent: Option<&ParentRef>,
    name: &str,
    opener: &mut BackingOpener<'_>,
    chain: &mut Vec<String>,
) -> Result<Option<Box<Vmdk>>, ImageError> {
    let Some(parent) = parent else {
        return Ok(None);
    };
    let reference = BackingRef {
        name: parent.hint.clone(),
        referenced_by: name.to_owned(),
        format: Some(Format::Vmdk),
        role: BackingRole::Backing,
    };
    let file = opener(&reference)?;
    let opened = chain::in_chain(file, chain, |mut file, chain| {
        let format = chain::probe(&mut *file.reader, &file.name)?;
        if format != Format::Vmdk {
            return Err(unsupported(
                &file.name,
                format!(
                    "the parent of the VMDK delta disk {name} is a {format} image; a delta \
                     disk's parent is a VMDK disk"
                ),
            ));
        }
        Vmdk::open_in_chain(file, opener, chain)
    })?;
    if opened.cid != Some(parent.cid) {
        let found = opened
            .cid
            .map_or_else(|| "none".to_owned(), |cid| format!("{cid:08x}"));
        return Err(corrupt(
            name,
            Some(parent.line.offset),
            format!(
                "descriptor line {}: the delta disk was made over a parent of CID {:08x}, and \
                 its parent {} has CID {found}: the parent changed after the snapshot was \
                 taken, and the delta's grains no longer apply over it",
                parent.line.number, parent.cid, opened.name
            ),
        ));
    }
    Ok(Some(Box::new(opened)))
}

impl PartData {
    /// Where the byte at `within` of a part held in grains (sparse or ESXi) is, and how
    /// many bytes from it on lie in its grain.
    fn locate(&mut self, within: u64) -> Result<(Grain, u64), ImageError> {
        match self {
            PartData::Sparse { extent, .. } => Ok(extent.locate(within)),
            PartData::Esx(extent) => extent.locate(within),
            PartData::Flat { .. } | PartData::Zero => {
                unreachable!("only parts held in grains are located")
            }
        }
    }
}

/// Fills `buf` with the bytes at guest offset `pos` of a delta disk's `parent`, zeros past
/// its end or without one.
fn read_parent(parent: &mut Option<Box<Vmdk>>, pos: u64, buf: &mut [u8]) -> Result<(), ImageError> {
    let Some(parent) = parent else {
        buf.fill(0);
        return Ok(());
    };
    let covered = parent
        .virtual_size()
        .saturating_sub(pos)
        .min(<[u8]>::len(buf) as u64) as usize;
    let (head, tail) = buf.split_at_mut(covered);
    if !head.is_empty() {
        parent.read_at(pos, head)?;
    }
    tail.fill(0);
    Ok(())
}

impl DiskImage for Vmdk {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> Format {
        Format::Vmdk
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let length = <[u8]>::len(buf) as u64;
        check_range(&self.name, offset, length, self.size)?;
        let mut done = 0u64;
        while done < length {
            let pos = offset + done;
            let (i, within) = self.part_at(pos);
            let part = &mut self.parts[i];
            let left = (part.length - within).min(length - done);
            let n = match &mut part.data {
                PartData::Zero => {
                    buf[done as usize..(done + left) as usize].fill(0);
                    left
                }
                PartData::Flat { file, start } => {
                    file.read_at(
                        *start + within,
                        &mut buf[done as usize..(done + left) as usize],
                    )?;
                    left
                }
                PartData::Sparse { .. } | PartData::Esx(_) => {
                    let (grain, run) = part.data.locate(within)?;
                    let n = run.min(left);
                    let chunk = &mut buf[done as usize..(done + n) as usize];
                    match (grain, &mut part.data) {
                        (Grain::Unallocated, _) => read_parent(&mut self.parent, pos, chunk)?,
                        (Grain::Zero, _) => chunk.fill(0),
                        (_, PartData::Sparse { extent, .. }) => extent.read(within, chunk)?,
                        (Grain::Stored(at), PartData::Esx(extent)) => extent.read(at, chunk)?,
                        _ => unreachable!("ESXi grains are stored uncompressed"),
                    }
                    n
                }
            };
            done += n;
        }
        Ok(())
    }

    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError> {
        check_range(&self.name, offset, length, self.size)?;
        let end = offset + length;
        let mut list = ExtentList::default();
        let mut pos = offset;
        while pos < end {
            let (i, within) = self.part_at(pos);
            let part = &mut self.parts[i];
            let left = (part.length - within).min(end - pos);
            let n = match &mut part.data {
                PartData::Zero => {
                    list.push(pos, left, ExtentKind::Zero);
                    left
                }
                PartData::Flat { file, start } => {
                    // File offsets back to guest offsets.
                    let shift = part.start;
                    for e in file.map(*start + within, left)? {
                        list.push(e.offset - *start + shift, e.length, e.kind);
                    }
                    left
                }
                PartData::Sparse { .. } | PartData::Esx(_) => {
                    let (grain, run) = part.data.locate(within)?;
                    let n = run.min(left);
                    match (grain, &mut self.parent) {
                        (Grain::Stored(_) | Grain::Compressed(_), _) => {
                            list.push(pos, n, ExtentKind::Data);
                        }
                        (Grain::Unallocated, Some(parent)) => {
                            let covered = parent.virtual_size().saturating_sub(pos).min(n);
                            if covered > 0 {
                                list.extend(parent.map(pos, covered)?);
                            }
                            list.push(pos + covered, n - covered, ExtentKind::Zero);
                        }
                        (Grain::Unallocated | Grain::Zero, _) => {
                            list.push(pos, n, ExtentKind::Zero);
                        }
                    }
                    n
                }
            };
            pos += n;
        }
        Ok(list.into_vec())
    }

    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        check_range(&self.name, offset, length, self.size)?;
        let end = offset + length;
        // The parent's files are numbered after the parts (see `file_name`).
        let first_below = self.parts.len() as u32;
        let mut runs = Vec::new();
        let mut pos = offset;
        while pos < end {
            let (i, within) = self.part_at(pos);
            let part = &mut self.parts[i];
            let left = (part.length - within).min(end - pos);
            let n = match &part.data {
                // An extent file's bytes lie in it as they are: it is named by the number
                // of its part. (The open checked that the part, or each stored grain of a
                // sparse extent, lies inside it.)
                PartData::Flat { start, .. } => {
                    push_run(
                        &mut runs,
                        pos,
                        left,
                        Stored::InNamedFile(i as u32, start + within),
                    );
                    left
                }
                PartData::Sparse { .. } | PartData::Esx(_) => {
                    let own_file = matches!(part.data, PartData::Sparse { own_file: true, .. });
                    let (grain, run) = part.data.locate(within)?;
                    let n = run.min(left);
                    match (grain, &mut self.parent) {
                        (Grain::Stored(at), _) => {
                            let stored = if own_file {
                                Stored::InFile(at)
                            } else {
                                Stored::InNamedFile(i as u32, at)
                            };
                            push_run(&mut runs, pos, n, stored);
                        }
                        (Grain::Unallocated, Some(parent)) => {
                            let covered = parent.virtual_size().saturating_sub(pos).min(n);
                            if covered > 0 {
                                push_lower_runs(
                                    &mut runs,
                                    &mut **parent,
                                    first_below,
                                    pos,
                                    covered,
                                )?;
                            }
                            push_run(&mut runs, pos + covered, n - covered, Stored::Elsewhere);
                        }
                        _ => push_run(&mut runs, pos, n, Stored::Elsewhere),
                    }
                    n
                }
                PartData::Zero => {
                    push_run(&mut runs, pos, left, Stored::Elsewhere);
                    left
                }
            };
            pos += n;
        }
        Ok(runs)
    }

    /// Files are numbered by the parts they hold, a part's number being its place in the
    /// descriptor; the parent's files come after them.
    fn file_name(&self, file: u32) -> Option<&str> {
        let first_below = self.parts.len() as u32;
        if file >= first_below {
            return lower_file_name(&**self.parent.as_ref()?, first_below, file);
        }
        match &self.parts.get(usize::try_from(file).ok()?)?.data {
            PartData::Flat { file, .. } => Some(file.name()),
            PartData::Sparse {
                extent,
                own_file: false,
            } => Some(extent.name()),
            PartData::Esx(extent) => Some(extent.name()),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        let extents: Vec<String> = self
            .parts
            .iter()
            .map(|part| match &part.data {
                PartData::Sparse { extent, own_file } => {
                    let kind = if extent.compressed() {
                        "stream-optimized"
                    } else {
                        "sparse"
                    };
                    let place = if *own_file {
                        String::new()
                    } else {
                        format!(" {}", extent.name())
                    };
                    format!(
                        "{kind} extent{place}: {} of {} grains stored",
                        extent.stored_grains(),
                        extent.grains()
                    )
                }
                PartData::Esx(extent) => format!(
                    "ESXi {} extent {}: {} grain tables allocated",
                    match extent.format() {
                        EsxFormat::VmfsSparse => "vmfsSparse",
                        EsxFormat::SeSparse => "seSparse",
                    },
                    extent.name(),
                    extent.allocated_tables()
                ),
                PartData::Flat { file, start } => {
                    format!("flat extent {} from offset {start:#x}", file.name())
                }
                PartData::Zero => format!("{} bytes of zeros", part.length),
            })
            .collect();
        let mut s = format!(
            "VMDK image {} ({}): {} bytes; {}",
            self.name,
            if self.create_type.is_empty() {
                "sparse"
            } else {
                &self.create_type
            },
            self.size,
            extents.join(", ")
        );
        if let Some(parent) = &self.parent {
            s.push_str("; delta over ");
            s.push_str(&parent.describe());
        }
        s
    }
}
