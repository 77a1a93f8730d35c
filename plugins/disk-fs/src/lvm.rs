//! LVM2 physical volumes: the volume group's metadata found through the PV label, and each
//! logical volume's extents mapped onto the physical volume, so a file system inside a
//! logical volume can be read like one in a partition. No maintained crate reads this
//! format, so it is read here, from the layout LVM2 documents in its sources
//! (`lib/format_text/layout.h`, `lib/label/label.h`).
//!
//! Structures (little-endian; sectors are 512 bytes):
//!
//! ```text
//! label, in one of sectors 0-3:
//!   0x00 "LABELONE" | 0x08 SECTOR(u64, its own sector) | 0x10 CRC(u32, of bytes 0x14..512)
//!   0x14 OFFSET(u32, of the PV header in the sector) | 0x18 "LVM2 001"
//! PV header:  UUID(32 chars) | DEVICE_SIZE(u64) | data areas {OFFSET(u64) SIZE(u64)}... {0 0}
//!             | metadata areas {OFFSET(u64) SIZE(u64)}... {0 0}
//! metadata area header (512 bytes at the area's offset):
//!   0x00 CRC(u32, of bytes 4..512) | 0x04 MAGIC(" LVM2 x[5A%r0N*>") | 0x14 VERSION(u32 = 1)
//!   0x18 START(u64) | 0x20 SIZE(u64) | 0x28 locations {OFFSET(u64) SIZE(u64) CRC(u32) FLAGS(u32)}
//!   the first location holds the current metadata text, at OFFSET inside the area; a text
//!   running past the area's end continues right after the 512-byte header
//! ```
//!
//! The CRCs are CRC-32 (the reflected 0x04C11DB7 polynomial) seeded with `0xF597A6CF` and
//! without the final inversion.
//!
//! The metadata text names the volume group and holds sections and `key = value` pairs:
//!
//! ```text
//! vg0 {
//!     extent_size = 8192                       # sectors
//!     physical_volumes { pv0 { id = "..." pe_start = 2048 pe_count = 255 } }
//!     logical_volumes {
//!         root {
//!             status = ["READ", "WRITE", "VISIBLE"]
//!             segment_count = 1
//!             segment1 { start_extent = 0 extent_count = 100 type = "striped"
//!                        stripe_count = 1 stripes = ["pv0", 0] }
//!         }
//!     }
//! }
//! ```
//!
//! What is read: linear and striped logical volumes, with their extents on any of the
//! group's physical volumes (the caller finds the others, by UUID: the other disks of a
//! virtual machine), and mirrored ones (`raid1`, and the older `mirror`), through the
//! first of their images (hidden linear or striped volumes, each holding all the data)
//! whose physical volumes are all there ([`mirrored`]), and RAID0, 4, 5, 6 and 10 ones
//! (one segment each), as `dm-raid` hands their images to MD: an MD array of the images
//! in order ([`MdArray`]), the segment type naming the level and layout (`raid5` is
//! `raid5_ls`, `raid6` is `raid6_zr`, `raid10` two near copies), so that images whose
//! physical volumes are missing are rebuilt from parity or read from a copy
//! ([`LogicalVolumeReader::raid`]). Thin volumes, snapshots of thin volumes among them,
//! are read through their pool ([`thin`](crate::thin)): its metadata and data volumes,
//! each read as a volume of its own (linear, striped, mirrored or RAID); the pool itself
//! holds no file system and is not listed. Cached volumes are read as their origin, with
//! the blocks their cache maps read from the cache ([`cache`](crate::cache)), whether it
//! is a cache pool (its own metadata and data volumes) or a cache volume (both in one);
//! in `passthrough` mode, from the origin alone. Old-style (copy-on-write) snapshots are
//! read as their origin with the chunks their exception store holds copies of read from
//! there ([`snapshot`](crate::snapshot)); a snapshot is listed under the name of the
//! volume holding its store, which LVM2 shows as the snapshot. Write-cached
//! (`writecache`) volumes, snapshots being merged, thin volumes with an external origin
//! and RAID volumes of several segments are listed but refused with the reason when
//! opened. Every number
//! from the image is checked before it is used as an offset or a length; the metadata
//! text is limited in size and nesting.

use std::collections::HashMap;
use std::io;

use crc::{Algorithm, Crc};
use tessera_disk_image::ReadAt;

use crate::md::{MdArray, MdMember};
use crate::slice::Slice;
use crate::thin::ThinReader;
use crate::{FsError, read_exact};
use crate::{cache, snapshot};

const SECTOR: u64 = 512;
const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// Location flag: this metadata area is ignored.
const RAW_LOCN_IGNORED: u32 = 0x1;
/// Largest metadata text read (LVM2 makes areas of 1 MiB by default).
const MAX_TEXT: u64 = 16 << 20;
/// Deepest nesting of sections and lists accepted in the metadata text.
const MAX_DEPTH: usize = 32;
/// Most logical volumes, and most segments in one, accepted.
const MAX_VOLUMES: usize = 1 << 16;
/// Most images of a mirrored segment (LVM2 allows 10).
const MAX_IMAGES: usize = 64;

/// CRC-32 as LVM2 computes it: the reflected polynomial, its own seed, no final xor.
const LVM_CRC: Algorithm<u32> = Algorithm {
    width: 32,
    poly: 0x04c1_1db7,
    // Given unreflected: the crate reflects it into the register, where LVM2 puts it as is.
    init: 0xf597_a6cf_u32.reverse_bits(),
    refin: true,
    refout: true,
    xorout: 0,
    check: 0,
    residue: 0,
};

/// An LVM2 physical volume: its volume group and the logical volumes that group holds.
#[derive(Debug, Clone)]
pub struct PhysicalVolume {
    /// The volume group's name.
    pub group: String,
    /// This physical volume's UUID, as its label holds it (without dashes).
    pub uuid: String,
    /// The visible logical volumes, in the metadata's order.
    pub volumes: Vec<LogicalVolume>,
}

/// A logical volume and where its bytes lie on the group's physical volumes.
#[derive(Debug, Clone)]
pub struct LogicalVolume {
    /// Its name in the group.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The physical volumes its extents lie on.
    on: Vec<Member>,
    /// Its segments, or why they cannot be read.
    map: Result<Vec<Segment>, String>,
    /// Other ways to read it: for a mirrored volume (`raid1`, `mirror`), its segments
    /// through its second, third… image, tried in turn when a physical volume of the
    /// ones before is not among the disks.
    others: Vec<Vec<Segment>>,
    /// For a RAID0, 4, 5, 6 or 10 volume (whose `map` is empty), its images.
    striped: Option<StripedRaid>,
    /// For a thin volume (whose `map` is empty), its device in the pool.
    thin: Option<ThinVolume>,
    /// For a cached volume (whose `map` is empty), its origin and cache.
    cached: Option<CachedVolume>,
    /// For an old-style snapshot (whose `map` is empty), its origin and exception store.
    snapshot: Option<SnapshotVolume>,
}

/// A thin volume: its device in the pool, the pool's data block (`chunk_size`, in bytes),
/// and the pool's metadata and data volumes, read as volumes of their own.
#[derive(Debug, Clone)]
struct ThinVolume {
    device: u64,
    chunk: u64,
    meta: Box<LogicalVolume>,
    data: Box<LogicalVolume>,
}

/// A cached volume: its origin volume, and its cache's metadata and data, each a volume
/// or (in a cache volume, `--cachevol`) a range of bytes of one. The cache's block
/// (`chunk_size`) is in bytes; in `passthrough` mode the origin holds everything.
#[derive(Debug, Clone)]
struct CachedVolume {
    origin: Box<LogicalVolume>,
    meta: (Box<LogicalVolume>, Option<(u64, u64)>),
    data: (Box<LogicalVolume>, Option<(u64, u64)>),
    chunk: u64,
    passthrough: bool,
}

/// An old-style snapshot: its origin volume, and the volume holding its exception store
/// (the snapshot's own, visible one), with its chunk in bytes.
#[derive(Debug, Clone)]
struct SnapshotVolume {
    origin: Box<LogicalVolume>,
    store: Box<LogicalVolume>,
    chunk: u64,
}

/// A physical volume of the group, as its metadata describes it.
#[derive(Debug, Clone)]
struct Member {
    /// Its name in the metadata (`pv0`).
    key: String,
    /// Its label's UUID, without dashes.
    uuid: String,
    /// The bytes it must hold: up to the end of its last extent.
    len: u64,
}

/// A run of the logical volume: `len` bytes from `start`, spread over the stripes in
/// chunks of `chunk` bytes, round robin (one stripe: a single chunk covers the run). Each
/// stripe is a physical volume (an index into [`LogicalVolume::on`]) and the byte where
/// the stripe's area starts on it.
#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    len: u64,
    chunk: u64,
    stripes: Vec<(usize, u64)>,
}

impl LogicalVolume {
    /// Volume `name`, its segments not read yet.
    fn named(name: &str) -> Self {
        LogicalVolume {
            name: name.to_owned(),
            size: 0,
            on: Vec::new(),
            map: Ok(Vec::new()),
            others: Vec::new(),
            striped: None,
            thin: None,
            cached: None,
            snapshot: None,
        }
    }

    /// Why the volume cannot be read, if it cannot.
    pub fn unsupported(&self) -> Option<&str> {
        self.map.as_ref().err().map(String::as_str)
    }

    /// The UUIDs (without dashes) of the physical volumes the volume's extents lie on.
    pub fn physical_volumes(&self) -> impl Iterator<Item = &str> {
        self.on.iter().map(|m| m.uuid.as_str())
    }
}

/// Reads the LVM2 label and metadata of a physical volume; `Ok(None)` if `reader` holds no
/// LVM2 label. `what` names the volume in errors.
pub fn read_physical_volume(
    reader: &mut dyn ReadAt,
    what: &str,
) -> Result<Option<PhysicalVolume>, FsError> {
    let corrupt = |offset: u64, detail: String| {
        FsError::corrupt(what, Some(offset), format!("LVM2: {detail}"))
    };
    let len = reader.len();
    let crc = Crc::<u32>::new(&LVM_CRC);
    let mut found = None;
    for sector in 0..4u64 {
        if (sector + 1) * SECTOR > len {
            break;
        }
        let mut buf = [0u8; SECTOR as usize];
        read_exact(reader, what, sector * SECTOR, &mut buf)?;
        if &buf[..8] == LABEL_ID && u64_le(&buf, 8) == sector && &buf[24..32] == LABEL_TYPE {
            found = Some((sector * SECTOR, buf));
            break;
        }
    }
    let Some((label_at, label)) = found else {
        return Ok(None);
    };
    if crc.checksum(&label[20..]) != u32_le(&label, 16) {
        return Err(corrupt(
            label_at + 16,
            "the label's checksum does not match".into(),
        ));
    }
    let header = u32_le(&label, 20) as usize;
    if header < 32 || header + 32 + 8 + 16 > label.len() {
        return Err(corrupt(
            label_at + 20,
            format!("PV header at byte {header} of the label"),
        ));
    }
    let uuid = String::from_utf8_lossy(&label[header..header + 32]).into_owned();
    // Data areas, then metadata areas, each list ended by a zero entry; all inside the
    // label's sector.
    let mut pos = header + 40;
    let mut areas: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for list in &mut areas {
        loop {
            if pos + 16 > label.len() {
                return Err(corrupt(
                    label_at + pos as u64,
                    "area list runs past the label".into(),
                ));
            }
            let (offset, size) = (u64_le(&label, pos), u64_le(&label, pos + 8));
            pos += 16;
            if offset == 0 && size == 0 {
                break;
            }
            list.push((offset, size));
        }
    }
    let mut last_err = None;
    for &(offset, size) in &areas[1] {
        match read_metadata(reader, what, &crc, offset, size) {
            Ok(Some(text)) => {
                let root = parse(&text)
                    .map_err(|detail| corrupt(offset, format!("metadata text: {detail}")))?;
                return group(&root, &uuid, len)
                    .map(Some)
                    .map_err(|detail| corrupt(offset, format!("metadata: {detail}")));
            }
            Ok(None) => {}
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        FsError::unsupported(
            what,
            "LVM2 physical volume without metadata of its own (its group's metadata is on \
             another physical volume)",
        )
    }))
}

/// The current metadata text of the area at `offset`; `None` if the area is ignored or empty.
fn read_metadata(
    reader: &mut dyn ReadAt,
    what: &str,
    crc: &Crc<u32>,
    offset: u64,
    size: u64,
) -> Result<Option<String>, FsError> {
    let corrupt = |at: u64, detail: String| {
        FsError::corrupt(what, Some(at), format!("LVM2 metadata area: {detail}"))
    };
    if size < SECTOR
        || offset
            .checked_add(size)
            .is_none_or(|end| end > reader.len())
    {
        return Err(corrupt(
            offset,
            format!("{size} bytes at {offset} do not fit the volume"),
        ));
    }
    let mut header = [0u8; SECTOR as usize];
    read_exact(reader, what, offset, &mut header)?;
    if &header[4..20] != MDA_MAGIC {
        return Err(corrupt(offset + 4, "no metadata area magic".into()));
    }
    if crc.checksum(&header[4..]) != u32_le(&header, 0) {
        return Err(corrupt(
            offset,
            "the header's checksum does not match".into(),
        ));
    }
    let (text_at, text_len) = (u64_le(&header, 40), u64_le(&header, 48));
    let (text_crc, flags) = (u32_le(&header, 56), u32_le(&header, 60));
    if text_len == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    if text_len > MAX_TEXT || text_len > size - SECTOR || text_at < SECTOR || text_at >= size {
        return Err(corrupt(
            offset + 40,
            format!("metadata of {text_len} bytes at {text_at} in an area of {size}"),
        ));
    }
    let mut text = vec![0u8; text_len as usize];
    let first = text_len.min(size - text_at);
    read_exact(reader, what, offset + text_at, &mut text[..first as usize])?;
    if first < text_len {
        // The area is a ring: the rest follows the header.
        read_exact(reader, what, offset + SECTOR, &mut text[first as usize..])?;
    }
    if crc.checksum(&text) != text_crc {
        return Err(corrupt(
            offset + 56,
            "the metadata's checksum does not match".into(),
        ));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    String::from_utf8(text)
        .map(Some)
        .map_err(|_| corrupt(offset + text_at, "metadata text is not UTF-8".into()))
}

/// A value of the metadata text.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Section(Vec<(String, Value)>),
}

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Section(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Result<u64, String> {
        match self.get(key) {
            Some(Value::Int(n)) => u64::try_from(*n).map_err(|_| format!("{key} = {n}")),
            Some(_) => Err(format!("{key} is not a number")),
            None => Err(format!("no {key}")),
        }
    }

    fn str(&self, key: &str) -> Result<&str, String> {
        match self.get(key) {
            Some(Value::Str(s)) => Ok(s),
            Some(_) => Err(format!("{key} is not a string")),
            None => Err(format!("no {key}")),
        }
    }

    fn sections(&self) -> impl Iterator<Item = (&str, &Value)> {
        let items = match self {
            Value::Section(items) => &items[..],
            _ => &[],
        };
        items
            .iter()
            .filter(|(_, v)| matches!(v, Value::Section(_)))
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// Parses the metadata text into its top-level section.
fn parse(text: &str) -> Result<Value, String> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let items = parser.items(0)?;
    if parser.pos < parser.bytes.len() {
        return Err(format!("unexpected '}}' at byte {}", parser.pos));
    }
    Ok(Value::Section(items))
}

struct Parser<'t> {
    bytes: &'t [u8],
    pos: usize,
}

impl Parser<'_> {
    /// `key = value` and `name { ... }` items up to a `}` or the end.
    fn items(&mut self, depth: usize) -> Result<Vec<(String, Value)>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("sections nested deeper than {MAX_DEPTH}"));
        }
        let mut items = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None | Some(b'}') => return Ok(items),
                _ => {}
            }
            let key = self.name()?;
            self.skip_space();
            match self.next() {
                Some(b'=') => {
                    let value = self.value(depth + 1)?;
                    items.push((key, value));
                }
                Some(b'{') => {
                    let inner = self.items(depth + 1)?;
                    if self.next() != Some(b'}') {
                        return Err(format!("section {key:?} is not closed"));
                    }
                    items.push((key, Value::Section(inner)));
                }
                _ => {
                    return Err(format!(
                        "expected '=' or '{{' after {key:?} at byte {}",
                        self.pos
                    ));
                }
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("lists nested deeper than {MAX_DEPTH}"));
        }
        self.skip_space();
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.next() {
                        None => return Err("unterminated string".to_owned()),
                        Some(b'"') => break,
                        Some(b'\\') => out.push(self.next().ok_or("unterminated string")?),
                        Some(b) => out.push(b),
                    }
                }
                String::from_utf8(out)
                    .map(Value::Str)
                    .map_err(|_| "a string is not UTF-8".to_owned())
            }
            Some(b'[') => {
                self.pos += 1;
                let mut list = Vec::new();
                loop {
                    self.skip_space();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::List(list));
                    }
                    if !list.is_empty() {
                        if self.next() != Some(b',') {
                            return Err(format!("expected ',' in a list at byte {}", self.pos));
                        }
                        self.skip_space();
                    }
                    list.push(self.value(depth + 1)?);
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.pos += 1;
                while matches!(self.peek(), Some(b'0'..=b'9' | b'.')) {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(&self.bytes[start..self.pos]).unwrap_or("");
                match digits.parse() {
                    Ok(n) => Ok(Value::Int(n)),
                    // A fraction or a number too large: kept as text, never used as a number.
                    Err(_) => Ok(Value::Str(digits.to_owned())),
                }
            }
            _ => Err(format!("expected a value at byte {}", self.pos)),
        }
    }

    /// A key or section name: LVM2 names use letters, digits and `+_.-`.
    fn name(&mut self) -> Result<String, String> {
        let start = self.pos;
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b"+_.-".contains(&b)) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(format!("expected a name at byte {start}"));
        }
        Ok(String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned())
    }

    fn skip_space(&mut self) {
        while let Some(b) = self.peek() {
            if b == b'#' {
                while !matches!(self.next(), None | Some(b'\n')) {}
            } else if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }
}

/// The volume group of the parsed metadata `root`, as seen from the physical volume with
/// label UUID `uuid` and `len` bytes.
fn group(root: &Value, uuid: &str, len: u64) -> Result<PhysicalVolume, String> {
    let (name, vg) = root.sections().next().ok_or("no volume group section")?;
    let extent = vg
        .int("extent_size")?
        .checked_mul(SECTOR)
        .filter(|&e| e > 0)
        .ok_or("extent_size out of range")?;
    let mut members = Vec::new();
    for (key, pv) in vg
        .get("physical_volumes")
        .ok_or("no physical_volumes")?
        .sections()
    {
        let pe_start = pv
            .int("pe_start")?
            .checked_mul(SECTOR)
            .ok_or("pe_start out of range")?;
        let pe_count = pv.int("pe_count")?;
        let end = pe_count
            .checked_mul(extent)
            .and_then(|b| b.checked_add(pe_start))
            .ok_or("pe_count out of range")?;
        let member = Member {
            key: key.to_owned(),
            uuid: pv.str("id")?.replace('-', ""),
            len: end,
        };
        members.push((member, pe_start, pe_count));
    }
    let (this, _, _) = members
        .iter()
        .find(|(m, _, _)| m.uuid == uuid)
        .ok_or_else(|| format!("this physical volume ({uuid}) is not in group {name:?}"))?;
    if this.len > len {
        return Err(format!(
            "{} holds extents up to byte {}, past the end of the {len}-byte volume",
            this.key, this.len
        ));
    }
    let mut volumes = Vec::new();
    let lvs = vg.get("logical_volumes");
    let group = Group {
        members: &members,
        extent,
        lvs,
    };
    if let Some(listed) = lvs {
        // A snapshot is the volume its exception store is in, which is not marked visible
        // but shows as the snapshot: the snapshot segments by the volume they name so.
        let snapshots: HashMap<&str, &Value> = listed
            .sections()
            .filter_map(|(_, lv)| {
                let segment = lv.get("segment1")?;
                let store = segment
                    .get("cow_store")
                    .or_else(|| segment.get("merging_store"));
                match store {
                    Some(Value::Str(store)) if kind_of(segment) == Some("snapshot") => {
                        Some((store.as_str(), segment))
                    }
                    _ => None,
                }
            })
            .collect();
        for (lv_name, lv) in listed.sections() {
            let snapshot = snapshots.get(lv_name).copied();
            let visible = matches!(lv.get("status"), Some(Value::List(flags))
                if flags.contains(&Value::Str("VISIBLE".into())));
            if !visible && snapshot.is_none() {
                continue;
            }
            if volumes.len() >= MAX_VOLUMES {
                return Err(format!("more than {MAX_VOLUMES} logical volumes"));
            }
            // A thin pool holds its thin volumes' data, not a file system of its own; a
            // snapshot segment ties a snapshot's exception store to its origin.
            if lv
                .get("segment1")
                .is_some_and(|s| matches!(kind_of(s), Some("thin-pool" | "snapshot")))
            {
                continue;
            }
            let mut volume = LogicalVolume::named(lv_name);
            let read = match snapshot {
                Some(segment) => snapshot_of(segment, lv_name, &group, &mut volume),
                None => segments(lv, &group, &mut volume, 0),
            };
            read.map_err(|detail| format!("logical volume {lv_name:?}: {detail}"))?;
            volumes.push(volume);
        }
    }
    Ok(PhysicalVolume {
        group: name.to_owned(),
        uuid: uuid.to_owned(),
        volumes,
    })
}

/// The type of `segment`, without the flags LVM2 appends to it that say where settings
/// are (`cache-pool+METADATA_FORMAT`: the segment gives its metadata format;
/// `cache+CACHE_USES_CACHEVOL`: its cache is a cache volume). Other flags stay, so a type
/// carrying them is not taken for one read here.
fn kind_of(segment: &Value) -> Option<&str> {
    let Some(Value::Str(kind)) = segment.get("type") else {
        return None;
    };
    let mut kind = kind.as_str();
    while let Some(plain) = ["+METADATA_FORMAT", "+CACHE_USES_CACHEVOL"]
        .iter()
        .find_map(|flag| kind.strip_suffix(flag))
    {
        kind = plain;
    }
    Some(kind)
}

/// Fills in `volume`'s size, physical volumes and segments from its metadata `lv`; a
/// segment of a kind not read here leaves the reason in its map. `Err` for metadata that
/// contradicts itself. `lvs` holds the group's volumes, hidden ones among them, which a
/// mirrored segment's images are (`depth` of them already followed).
fn segments(
    lv: &Value,
    group: &Group<'_>,
    volume: &mut LogicalVolume,
    depth: usize,
) -> Result<(), String> {
    let Group {
        members, extent, ..
    } = *group;
    let count = lv.int("segment_count")?;
    if count > MAX_VOLUMES as u64 {
        return Err(format!("segment_count = {count}"));
    }
    // Each segment's runs, one list per way to read it (a mirrored segment has one per
    // image).
    let mut options: Vec<Vec<Vec<Segment>>> = Vec::new();
    let mut refused = None;
    let mut next = 0u64;
    for n in 1..=count {
        let segment = lv
            .get(&format!("segment{n}"))
            .ok_or_else(|| format!("no segment{n}"))?;
        let start = segment.int("start_extent")?;
        let extents = segment.int("extent_count")?;
        if extents == 0 {
            return Err(format!("segment{n} holds no extents"));
        }
        if start != next {
            return Err(format!(
                "segment{n} starts at extent {start} where extent {next} was due"
            ));
        }
        next = start
            .checked_add(extents)
            .filter(|&end| end.checked_mul(extent).is_some())
            .ok_or("extent_count out of range")?;
        let kind = kind_of(segment).ok_or("no type")?;
        if let Some((level, layout)) = raid_geometry(kind, segment) {
            if count != 1 {
                refused.get_or_insert(format!(
                    "segment{n} is a {kind} segment of one of several; RAID volumes of one \
                     segment are read"
                ));
                continue;
            }
            match striped_raid(segment, (level, layout), group, volume, depth) {
                Ok(raid) => volume.striped = Some(raid),
                Err(Refused(why)) => {
                    refused.get_or_insert(format!("segment{n}: {why}"));
                }
                Err(Broken(why)) => return Err(format!("segment{n}: {why}")),
            }
            continue;
        }
        if matches!(kind, "thin" | "cache") {
            if count != 1 || depth > 0 {
                refused.get_or_insert(format!(
                    "segment{n} is a {kind} segment of one of several, or inside another \
                     volume; {kind} volumes of one segment are read"
                ));
                continue;
            }
            let read = if kind == "thin" {
                thin(segment, group, volume).map(|thin| volume.thin = Some(thin))
            } else {
                cached(segment, group, volume).map(|cached| volume.cached = Some(cached))
            };
            match read {
                Ok(()) => {}
                Err(Refused(why)) => {
                    refused.get_or_insert(format!("segment{n}: {why}"));
                }
                Err(Broken(why)) => return Err(format!("segment{n}: {why}")),
            }
            continue;
        }
        if matches!(kind, "raid1" | "mirror") {
            match mirrored(segment, kind, (start, extents), group, volume, depth) {
                Ok(images) => options.push(images),
                Err(Refused(why)) => {
                    refused.get_or_insert(format!("segment{n}: {why}"));
                }
                Err(Broken(why)) => return Err(format!("segment{n}: {why}")),
            }
            continue;
        }
        if kind != "striped" {
            refused.get_or_insert(format!(
                "segment{n} is of type {kind:?}; linear, striped, mirrored (raid1, \
                 mirror), RAID, thin and cached volumes are read"
            ));
            continue;
        }
        let stripe_count = segment.int("stripe_count")?;
        let stripes = match segment.get("stripes") {
            Some(Value::List(s)) if s.len() as u64 == 2 * stripe_count && stripe_count > 0 => s,
            _ => return Err(format!("segment{n}: stripes do not match stripe_count")),
        };
        if !extents.is_multiple_of(stripe_count) {
            return Err(format!(
                "segment{n}: {extents} extents over {stripe_count} stripes"
            ));
        }
        let per_stripe = extents / stripe_count;
        let chunk = if stripe_count == 1 {
            extents * extent
        } else {
            segment
                .int("stripe_size")?
                .checked_mul(SECTOR)
                .filter(|&c| c > 0 && extent.is_multiple_of(c))
                .ok_or_else(|| format!("segment{n}: stripe_size does not divide the extents"))?
        };
        let mut placed = Vec::new();
        for pair in stripes.chunks_exact(2) {
            let [Value::Str(key), Value::Int(first)] = pair else {
                return Err(format!(
                    "segment{n}: stripes are not [\"pvN\", extent] pairs"
                ));
            };
            let Some((member, pe_start, pe_count)) = members.iter().find(|(m, _, _)| m.key == *key)
            else {
                return Err(format!(
                    "segment{n}: no physical volume {key:?} in the group"
                ));
            };
            let first = u64::try_from(*first)
                .ok()
                .filter(|f| {
                    f.checked_add(per_stripe)
                        .is_some_and(|end| end <= *pe_count)
                })
                .ok_or_else(|| {
                    format!(
                        "segment{n}: extents {first}+{per_stripe} of {key}, which has {pe_count}"
                    )
                })?;
            let on = match volume.on.iter().position(|m| m.key == member.key) {
                Some(on) => on,
                None => {
                    volume.on.push(member.clone());
                    volume.on.len() - 1
                }
            };
            // Bounded by the member's length, computed without overflow above.
            placed.push((on, pe_start + first * extent));
        }
        options.push(vec![vec![Segment {
            start: start * extent,
            len: extents * extent,
            chunk,
            stripes: placed,
        }]]);
    }
    volume.size = next * extent;
    // Way `c` reads each mirrored segment through its image `c` (its last, if it has
    // fewer).
    let ways = options.iter().map(Vec::len).max().unwrap_or(1);
    let mut maps: Vec<Vec<Segment>> = (0..ways)
        .map(|c| {
            options
                .iter()
                .flat_map(|o| o[c.min(o.len() - 1)].iter().cloned())
                .collect()
        })
        .collect();
    let first = maps.remove(0);
    volume.others = maps;
    volume.map = refused.map_or(Ok(first), Err);
    Ok(())
}

/// Why a mirrored segment is not read: metadata this reader does not follow, or metadata
/// that contradicts itself.
enum Problem {
    Refused(String),
    Broken(String),
}
use Problem::{Broken, Refused};

/// The runs of a mirrored segment (`raid1`, `mirror`) of `extents` extents from extent
/// `start`, once through each of its images: hidden linear or striped volumes, each
/// holding the whole segment (from the extent the metadata gives, 0 for `raid1`). The
/// physical volumes they lie on join `volume`'s.
fn mirrored(
    segment: &Value,
    kind: &str,
    (start, extents): (u64, u64),
    group: &Group<'_>,
    volume: &mut LogicalVolume,
    depth: usize,
) -> Result<Vec<Vec<Segment>>, Problem> {
    let list = |key: &str| match segment.get(key) {
        Some(Value::List(items)) => Ok(items),
        _ => Err(Broken(format!("no {key} list"))),
    };
    // (image volume, its first extent)
    let images: Vec<(&str, u64)> = if kind == "raid1" {
        raid_images(segment)?
            .into_iter()
            .map(|name| (name, 0))
            .collect()
    } else {
        list("mirrors")?
            .chunks(2)
            .map(|pair| match pair {
                [Value::Str(name), Value::Int(first)] if *first >= 0 => {
                    Ok((name.as_str(), *first as u64))
                }
                _ => Err(Broken(
                    "mirrors are not [\"volume\", extent] pairs".to_owned(),
                )),
            })
            .collect::<Result<_, _>>()?
    };
    if images.is_empty() || images.len() > MAX_IMAGES {
        return Err(Broken(format!("{} images", images.len())));
    }
    // LVM2 mirrors linear and striped volumes only.
    if depth > 0 {
        return Err(Refused("an image is mirrored itself".to_owned()));
    }
    images
        .into_iter()
        .map(|(name, first)| {
            let place = start * group.extent;
            image_runs(name, (first, extents), place, group, volume, depth)
        })
        .collect()
}

/// The runs of image `name` (a hidden linear or striped volume of the group) over its
/// `extents` extents from extent `first`, moved to byte `place` of the volume they are
/// part of, their physical volumes numbered as `volume`'s (and added to it).
fn image_runs(
    name: &str,
    (first, extents): (u64, u64),
    place: u64,
    group: &Group<'_>,
    volume: &mut LogicalVolume,
    depth: usize,
) -> Result<Vec<Segment>, Problem> {
    let extent = group.extent;
    let lv = group.volume(name)?;
    let mut image = LogicalVolume::named(name);
    segments(lv, group, &mut image, depth + 1)
        .map_err(|why| Broken(format!("image {name:?}: {why}")))?;
    if image.striped.is_some() {
        return Err(Refused(format!("image {name:?} is a RAID volume itself")));
    }
    let map = image
        .map
        .map_err(|why| Refused(format!("image {name:?}: {why}")))?;
    let len = extents.saturating_mul(extent);
    let from = first.saturating_mul(extent);
    if from.checked_add(len).is_none_or(|end| end > image.size) {
        return Err(Broken(format!(
            "image {name:?} holds {} bytes, short of extents {first}+{extents}",
            image.size
        )));
    }
    let mut runs = Vec::new();
    for run in map {
        let (run_start, run_end) = (run.start.max(from), (run.start + run.len).min(from + len));
        if run_start >= run_end {
            continue;
        }
        let cut = run_start - run.start;
        let row = run.chunk * run.stripes.len() as u64;
        if cut % row != 0 {
            return Err(Refused(format!(
                "image {name:?} is cut inside a row of its stripes"
            )));
        }
        let stripes = run
            .stripes
            .iter()
            .map(|&(pv, area)| {
                let member = &image.on[pv];
                let on = match volume.on.iter().position(|m| m.key == member.key) {
                    Some(on) => on,
                    None => {
                        volume.on.push(member.clone());
                        volume.on.len() - 1
                    }
                };
                (on, area + cut / run.stripes.len() as u64)
            })
            .collect();
        runs.push(Segment {
            start: place + (run_start - from),
            len: run_end - run_start,
            chunk: if run.stripes.len() == 1 {
                run_end - run_start
            } else {
                run.chunk
            },
            stripes,
        });
    }
    Ok(runs)
}

/// The device of thin `segment` (a thin volume's only one) and its pool's volumes, whose
/// physical volumes join `volume`'s.
fn thin(
    segment: &Value,
    group: &Group<'_>,
    volume: &mut LogicalVolume,
) -> Result<ThinVolume, Problem> {
    if segment.get("external_origin").is_some() {
        return Err(Refused(
            "a thin volume with an external origin (the blocks it does not map are read \
             from another volume)"
                .to_owned(),
        ));
    }
    let device = segment.int("device_id").map_err(Broken)?;
    let name = segment.str("thin_pool").map_err(Broken)?;
    let pool = group
        .volume(name)?
        .get("segment1")
        .filter(|s| kind_of(s) == Some("thin-pool"))
        .ok_or_else(|| Broken(format!("thin_pool {name:?} is not a thin pool")))?;
    // dm-thin's data blocks: 64 KiB to 1 GiB, in steps of 64 KiB.
    let chunk = pool
        .int("chunk_size")
        .map_err(Broken)?
        .checked_mul(SECTOR)
        .filter(|&c| (64 << 10..=1 << 30).contains(&c) && c.is_multiple_of(64 << 10))
        .ok_or_else(|| Broken(format!("pool {name:?}: chunk_size out of range")))?;
    let what = format!("pool {name:?}");
    let meta = part_of(group, pool.str("metadata").map_err(Broken)?, &what, volume)?;
    let data = part_of(group, pool.str("pool").map_err(Broken)?, &what, volume)?;
    Ok(ThinVolume {
        device,
        chunk,
        meta,
        data,
    })
}

/// Volume `name`, a part of another (`what`, in errors: a thin pool's metadata or data
/// volume, a cached volume's origin or cache), read as a volume of its own, whose physical
/// volumes join `volume`'s. Its segments are linear, striped, mirrored or RAID; one that is
/// thin or cached itself (which could lead back to a volume with parts) is refused.
fn part_of(
    group: &Group<'_>,
    name: &str,
    what: &str,
    volume: &mut LogicalVolume,
) -> Result<Box<LogicalVolume>, Problem> {
    let lv = group.volume(name)?;
    let count = lv
        .int("segment_count")
        .map_err(Broken)?
        .min(MAX_VOLUMES as u64);
    let nested = (1..=count).any(|n| {
        lv.get(&format!("segment{n}")).is_some_and(|s| {
            kind_of(s).is_some_and(|t| t.starts_with("thin") || t.starts_with("cache"))
        })
    });
    if nested {
        // LVM2 can cache a thin pool's data volume; not read here.
        return Err(Refused(format!(
            "{what}: its volume {name:?} is thin or cached itself"
        )));
    }
    let mut read = LogicalVolume::named(name);
    segments(lv, group, &mut read, 0)
        .map_err(|why| Broken(format!("{what}: volume {name:?}: {why}")))?;
    for member in &read.on {
        if !volume.on.iter().any(|m| m.key == member.key) {
            volume.on.push(member.clone());
        }
    }
    Ok(Box::new(read))
}

/// The origin and cache of cache `segment` (a cached volume's only one): a cache pool
/// (`--cachepool`: its own metadata and data volumes) or a cache volume (`--cachevol`:
/// both in one volume, where the segment says); their physical volumes join `volume`'s.
fn cached(
    segment: &Value,
    group: &Group<'_>,
    volume: &mut LogicalVolume,
) -> Result<CachedVolume, Problem> {
    let origin = part_of(
        group,
        segment.str("origin").map_err(Broken)?,
        "cache origin",
        volume,
    )?;
    let name = segment.str("cache_pool").map_err(Broken)?;
    let pool = group
        .volume(name)?
        .get("segment1")
        .ok_or_else(|| Broken(format!("cache {name:?} has no segment1")))?;
    let what = format!("cache {name:?}");
    let is_pool = kind_of(pool) == Some("cache-pool");
    // A cache pool's settings are in its own segment, a cache volume's in the cached one.
    let settings = if is_pool { pool } else { segment };
    let passthrough = match settings.get("cache_mode") {
        // LVM2's default.
        None => false,
        Some(Value::Str(mode)) if matches!(mode.as_str(), "writethrough" | "writeback") => false,
        Some(Value::Str(mode)) if mode == "passthrough" => true,
        Some(other) => return Err(Refused(format!("{what}: cache_mode {other:?}"))),
    };
    // dm-cache's blocks: 32 KiB to 1 GiB, in steps of 32 KiB.
    let chunk = settings
        .int("chunk_size")
        .map_err(Broken)?
        .checked_mul(SECTOR)
        .filter(|&c| (32 << 10..=1 << 30).contains(&c) && c.is_multiple_of(32 << 10))
        .ok_or_else(|| Broken(format!("{what}: chunk_size out of range")))?;
    let (meta, data) = if is_pool {
        (
            (
                part_of(group, pool.str("metadata").map_err(Broken)?, &what, volume)?,
                None,
            ),
            (
                part_of(group, pool.str("data").map_err(Broken)?, &what, volume)?,
                None,
            ),
        )
    } else {
        let cache = part_of(group, name, &what, volume)?;
        let range = |key: &str| -> Result<Option<(u64, u64)>, Problem> {
            let sectors = |k: String| {
                segment
                    .int(&k)
                    .map_err(Broken)?
                    .checked_mul(SECTOR)
                    .ok_or_else(|| Broken(format!("{what}: {k} out of range")))
            };
            let (start, len) = (
                sectors(format!("{key}_start"))?,
                sectors(format!("{key}_len"))?,
            );
            if start.checked_add(len).is_none_or(|end| end > cache.size) {
                return Err(Broken(format!(
                    "{what}: its {key} runs past the end of the {}-byte volume",
                    cache.size
                )));
            }
            Ok(Some((start, len)))
        };
        let (meta_range, data_range) = (range("metadata")?, range("data")?);
        ((cache.clone(), meta_range), (cache, data_range))
    };
    Ok(CachedVolume {
        origin,
        meta,
        data,
        chunk,
        passthrough,
    })
}

/// Fills in `volume` (volume `store`, holding an exception store) as the snapshot that
/// snapshot `segment` makes of its origin; what is not read here leaves the reason in its
/// map. `Err` for metadata that contradicts itself.
fn snapshot_of(
    segment: &Value,
    store: &str,
    group: &Group<'_>,
    volume: &mut LogicalVolume,
) -> Result<(), String> {
    let extents = segment.int("extent_count")?;
    volume.size = extents
        .checked_mul(group.extent)
        .ok_or("extent_count out of range")?;
    let read = |volume: &mut LogicalVolume| -> Result<SnapshotVolume, Problem> {
        if segment.get("merging_store").is_some() {
            return Err(Refused(
                "a snapshot being merged into its origin".to_owned(),
            ));
        }
        // dm-snapshot's chunks: 4 KiB to 512 KiB, powers of two.
        let chunk = segment
            .int("chunk_size")
            .map_err(Broken)?
            .checked_mul(SECTOR)
            .filter(|&c| c.is_power_of_two() && (4 << 10..=512 << 10).contains(&c))
            .ok_or_else(|| Broken("chunk_size out of range".to_owned()))?;
        let origin = segment.str("origin").map_err(Broken)?;
        let origin = part_of(group, origin, "snapshot origin", volume)?;
        let store = part_of(group, store, "snapshot exception store", volume)?;
        Ok(SnapshotVolume {
            origin,
            store,
            chunk,
        })
    };
    match read(volume) {
        Ok(snapshot) => volume.snapshot = Some(snapshot),
        Err(Refused(why)) => volume.map = Err(why),
        Err(Broken(why)) => return Err(why),
    }
    Ok(())
}

/// The group a volume's segments are read in: its physical volumes (each with where its
/// extents start and how many it has), its extent size, and its volumes, hidden ones
/// among them.
struct Group<'a> {
    members: &'a [(Member, u64, u64)],
    extent: u64,
    lvs: Option<&'a Value>,
}

impl Group<'_> {
    /// The metadata of volume `name`.
    fn volume(&self, name: &str) -> Result<&Value, Problem> {
        self.lvs
            .and_then(|lvs| lvs.get(name))
            .ok_or_else(|| Broken(format!("no logical volume {name:?} in the group")))
    }
}

/// The image volumes of a RAID segment, in order: `raids` lists them after their
/// metadata volumes (`[meta, image]` pairs) or alone, counted by `device_count`; a RAID0
/// segment lists them as `raid0_lvs`, counted by `stripe_count`.
fn raid_images(segment: &Value) -> Result<Vec<&str>, Problem> {
    let count = segment
        .int("device_count")
        .or_else(|_| segment.int("stripe_count"))
        .map_err(Broken)?;
    if count == 0 || count > MAX_IMAGES as u64 {
        return Err(Broken(format!("{count} images")));
    }
    let raids = match segment.get("raids").or_else(|| segment.get("raid0_lvs")) {
        Some(Value::List(items)) => items,
        _ => return Err(Broken("no raids list".to_owned())),
    };
    let step = match raids.len() as u64 {
        len if len == 2 * count => 2,
        len if len == count => 1,
        _ => return Err(Broken("raids do not match the image count".to_owned())),
    };
    raids
        .iter()
        .skip(step - 1)
        .step_by(step)
        .map(|v| match v {
            Value::Str(name) => Ok(name.as_str()),
            _ => Err(Broken("raids are not names".to_owned())),
        })
        .collect()
}

/// The MD level and layout of an LVM2 RAID segment type that stripes (RAID0, 4, 5, 6,
/// 10), as device-mapper's `dm-raid` hands it to MD; `None` for other types.
fn raid_geometry(kind: &str, segment: &Value) -> Option<(i32, u32)> {
    Some(match kind {
        "raid0" | "raid0_meta" => (0, 0),
        // Parity on the last image.
        "raid4" => (4, 0),
        "raid5_la" => (5, 0),
        "raid5_ra" => (5, 1),
        "raid5" | "raid5_ls" => (5, 2),
        "raid5_rs" => (5, 3),
        "raid5_n" => (5, 5),
        "raid6_n_6" => (6, 5),
        "raid6" | "raid6_zr" => (6, 8),
        "raid6_nr" => (6, 9),
        "raid6_nc" => (6, 10),
        "raid6_la_6" => (6, 16),
        "raid6_ra_6" => (6, 17),
        "raid6_ls_6" => (6, 18),
        "raid6_rs_6" => (6, 19),
        // Near copies, two unless the metadata says otherwise.
        "raid10" | "raid10_near" => {
            let copies = segment.int("data_copies").unwrap_or(2).min(255) as u32;
            (10, (1 << 8) | copies)
        }
        _ => return None,
    })
}

/// A RAID0, 4, 5, 6 or 10 volume: its images and how MD spreads its data over them.
#[derive(Debug, Clone)]
struct StripedRaid {
    level: i32,
    layout: u32,
    /// The chunk (`stripe_size`), in bytes.
    chunk: u64,
    /// Each image's runs, and its length.
    images: Vec<(Vec<Segment>, u64)>,
    /// Where the data starts in each image.
    data_offset: u64,
}

/// The images of a RAID segment (the volume's only one) of MD `level` and `layout`.
fn striped_raid(
    segment: &Value,
    (level, layout): (i32, u32),
    group: &Group<'_>,
    volume: &mut LogicalVolume,
    depth: usize,
) -> Result<StripedRaid, Problem> {
    let extent = group.extent;
    if depth > 0 {
        return Err(Refused("an image is a RAID volume itself".to_owned()));
    }
    let names = raid_images(segment)?;
    let min = match level {
        6 => 4,
        _ => 2,
    };
    if names.len() < min {
        return Err(Broken(format!(
            "a RAID{level} volume of {} images",
            names.len()
        )));
    }
    let chunk = segment
        .int("stripe_size")
        .map_err(Broken)?
        .checked_mul(SECTOR)
        .filter(|c| c.is_power_of_two())
        .ok_or_else(|| Broken("stripe_size is not a power of two".to_owned()))?;
    let data_offset = match segment.get("data_offset") {
        None => 0,
        Some(_) => segment
            .int("data_offset")
            .map_err(Broken)?
            .checked_mul(SECTOR)
            .ok_or_else(|| Broken("data_offset out of range".to_owned()))?,
    };
    let mut images = Vec::new();
    for name in names {
        let lv = group.volume(name)?;
        let image_extents = (1..=lv.int("segment_count").map_err(Broken)?)
            .map(|n| {
                lv.get(&format!("segment{n}"))
                    .ok_or_else(|| Broken(format!("image {name:?}: no segment{n}")))
                    .and_then(|s| s.int("extent_count").map_err(Broken))
            })
            .try_fold(0u64, |sum, n| n.map(|n| sum.saturating_add(n)))?;
        let runs = image_runs(name, (0, image_extents), 0, group, volume, depth)?;
        let len = image_extents.saturating_mul(extent);
        if data_offset >= len {
            return Err(Broken(format!(
                "data_offset past the end of image {name:?}"
            )));
        }
        images.push((runs, len));
    }
    Ok(StripedRaid {
        level,
        layout,
        chunk,
        images,
        data_offset,
    })
}

/// What gives a physical volume by UUID, if it is among the disks.
type Opener<'a> = dyn FnMut(&str) -> Option<Box<dyn ReadAt>> + 'a;

/// A logical volume read from the physical volumes it lies on.
pub struct LogicalVolumeReader {
    pvs: Vec<Box<dyn ReadAt>>,
    size: u64,
    map: Vec<Segment>,
    /// What reads a volume that is not a map of extents (`map` is empty): a RAID0, 4, 5,
    /// 6 or 10 volume's MD array over its images, a thin volume's pool, a cached volume's
    /// origin and cache, a snapshot's origin and exception store.
    inner: Option<Box<dyn ReadAt>>,
    /// What is read in place of what is missing, if anything is.
    degraded: Option<String>,
}

impl LogicalVolumeReader {
    /// Reads `volume` from its physical volumes, which `open` gives by UUID (as
    /// [`LogicalVolume::physical_volumes`] lists them); fails with the reason for a volume
    /// that cannot be read, or whose physical volumes `open` does not have or are shorter
    /// than the metadata says. `what` names it in errors.
    pub fn new(
        volume: &LogicalVolume,
        mut open: impl FnMut(&str) -> Option<Box<dyn ReadAt>>,
        what: &str,
    ) -> Result<Self, FsError> {
        Self::open(volume, &mut open, what)
    }

    /// [`LogicalVolumeReader::new`], through one `open` shared with the volumes it is
    /// read through (a thin pool's, a cache's and its origin, a snapshot's origin and
    /// store).
    fn open(volume: &LogicalVolume, open: &mut Opener<'_>, what: &str) -> Result<Self, FsError> {
        let map = volume
            .map
            .as_ref()
            .map_err(|why| FsError::unsupported(what, format!("LVM2 logical volume: {why}")))?;
        if let Some(raid) = &volume.striped {
            return Self::raid(volume, raid, open, what);
        }
        if let Some(thin) = &volume.thin {
            return Self::thin(volume, thin, open, what);
        }
        if let Some(cached) = &volume.cached {
            return Self::cached(volume, cached, open, what);
        }
        if let Some(snapshot) = &volume.snapshot {
            return Self::snapshot(volume, snapshot, open, what);
        }
        // Every physical volume there is; a mirrored volume reads through the first of its
        // images whose physical volumes all are.
        let mut pvs: Vec<Option<Box<dyn ReadAt>>> = Vec::with_capacity(volume.on.len());
        for member in &volume.on {
            let reader = open(&member.uuid);
            if let Some(reader) = &reader
                && reader.len() < member.len
            {
                return Err(FsError::corrupt(
                    what,
                    None,
                    format!(
                        "LVM2 physical volume {} holds {} bytes, but its extents reach byte {}",
                        member.key,
                        reader.len(),
                        member.len
                    ),
                ));
            }
            pvs.push(reader);
        }
        let readable = |map: &[Segment]| {
            map.iter()
                .all(|s| s.stripes.iter().all(|&(pv, _)| pvs[pv].is_some()))
        };
        let mut ways = std::iter::once(map).chain(&volume.others).enumerate();
        let chosen = ways.find(|(_, map)| readable(map));
        let degraded = match chosen {
            Some((way, _)) if way > 0 => Some(format!(
                "read through mirror image {way}: a physical volume of the ones before is \
                 not among the disks"
            )),
            _ => None,
        };
        let chosen = chosen.map(|(_, map)| map);
        let Some(chosen) = chosen else {
            let missing = map
                .iter()
                .flat_map(|s| &s.stripes)
                .find(|&&(pv, _)| pvs[pv].is_none())
                .map(|&(pv, _)| &volume.on[pv])
                .expect("a map that cannot be read misses a physical volume");
            let images = if volume.others.is_empty() {
                ""
            } else {
                ", nor are those of its other mirror images"
            };
            return Err(FsError::unsupported(
                what,
                format!(
                    "LVM2 logical volume: its extents lie on physical volume {} (UUID {}) \
                     too, which is not among the disks{images}",
                    missing.key, missing.uuid
                ),
            ));
        };
        let map = chosen.clone();
        // A missing one, which the chosen map never reads, stands as an empty reader.
        let pvs = pvs
            .into_iter()
            .map(|pv| pv.unwrap_or_else(|| Box::new(Vec::new())))
            .collect();
        Ok(LogicalVolumeReader {
            pvs,
            size: volume.size,
            map,
            inner: None,
            degraded,
        })
    }

    /// What is read in place of what is missing, if anything is: a mirror's other image,
    /// a RAID volume's images rebuilt from parity or read from copies.
    pub fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }

    /// Reads a RAID0, 4, 5, 6 or 10 volume as MD reads the array `dm-raid` makes of its
    /// images, each image through its own runs; an image whose physical volumes are not
    /// all among the disks is missing, which the array's parity or copies may make up for.
    fn raid(
        volume: &LogicalVolume,
        raid: &StripedRaid,
        open: &mut Opener<'_>,
        what: &str,
    ) -> Result<Self, FsError> {
        let count = raid.images.len() as u32;
        let mut members = Vec::new();
        for (role, (runs, len)) in raid.images.iter().enumerate() {
            let mut pvs: Vec<Box<dyn ReadAt>> = Vec::with_capacity(volume.on.len());
            let mut whole = true;
            for (pv, member) in volume.on.iter().enumerate() {
                let used = runs.iter().any(|r| r.stripes.iter().any(|&(p, _)| p == pv));
                match used.then(|| open(&member.uuid)).flatten() {
                    Some(reader) if reader.len() < member.len => {
                        return Err(FsError::corrupt(
                            what,
                            None,
                            format!(
                                "LVM2 physical volume {} holds {} bytes, but its extents reach \
                                 byte {}",
                                member.key,
                                reader.len(),
                                member.len
                            ),
                        ));
                    }
                    Some(reader) => pvs.push(reader),
                    None => {
                        whole &= !used;
                        pvs.push(Box::new(Vec::new()));
                    }
                }
            }
            if !whole {
                continue;
            }
            let image = LogicalVolumeReader {
                pvs,
                size: *len,
                map: runs.clone(),
                inner: None,
                degraded: None,
            };
            let member = MdMember {
                version: "lvm2",
                name: volume.name.clone(),
                uuid: volume.name.clone(),
                role: Some(role as u32),
                chunk: raid.chunk,
                level: raid.level,
                layout: raid.layout,
                members: count,
                data_offset: raid.data_offset,
                data_length: len - raid.data_offset,
            };
            members.push((member, Box::new(image) as Box<dyn ReadAt>));
        }
        if members.is_empty() {
            return Err(FsError::unsupported(
                what,
                "LVM2 logical volume: none of its RAID images has all its physical volumes \
                 among the disks",
            ));
        }
        let array = MdArray::assemble(members, what)?;
        if array.len() < volume.size {
            return Err(FsError::corrupt(
                what,
                None,
                format!(
                    "LVM2 RAID logical volume of {} bytes, whose images hold {}",
                    volume.size,
                    array.len()
                ),
            ));
        }
        let missing = array.missing();
        let degraded = (!missing.is_empty()).then(|| {
            let images: Vec<String> = missing.iter().map(u32::to_string).collect();
            format!(
                "RAID image {} not among the disks: rebuilt from parity or read from copies",
                images.join(", ")
            )
        });
        Ok(LogicalVolumeReader {
            pvs: Vec::new(),
            size: volume.size,
            map: Vec::new(),
            inner: Some(Box::new(array)),
            degraded,
        })
    }

    /// Reads a thin volume through its pool: the pool's metadata and data volumes, each
    /// read as a volume of its own (through a mirror's other image, or rebuilt from RAID
    /// parity, where that is what they are).
    fn thin(
        volume: &LogicalVolume,
        thin: &ThinVolume,
        open: &mut Opener<'_>,
        what: &str,
    ) -> Result<Self, FsError> {
        let mut parts = Parts::new(open, what);
        let meta = parts.read(&thin.meta, "thin pool metadata", None)?;
        let data = parts.read(&thin.data, "thin pool data", None)?;
        let pool = ThinReader::open(meta, data, (thin.device, volume.size, thin.chunk), what)?;
        parts.reader(volume, Box::new(pool))
    }

    /// Reads a cached volume: its origin, with the blocks its cache maps read from the
    /// cache (the origin alone in `passthrough` mode, where the cache may be stale).
    fn cached(
        volume: &LogicalVolume,
        cached: &CachedVolume,
        open: &mut Opener<'_>,
        what: &str,
    ) -> Result<Self, FsError> {
        let mut parts = Parts::new(open, what);
        let origin = parts.read(&cached.origin, "cache origin", None)?;
        let inner: Box<dyn ReadAt> = if cached.passthrough {
            origin
        } else {
            let meta = parts.read(&cached.meta.0, "cache metadata", cached.meta.1)?;
            let data = parts.read(&cached.data.0, "cache data", cached.data.1)?;
            Box::new(cache::open(meta, (origin, data), cached.chunk, what)?)
        };
        parts.reader(volume, inner)
    }

    /// Reads an old-style snapshot: its origin, with the chunks its exception store holds
    /// copies of read from there.
    fn snapshot(
        volume: &LogicalVolume,
        snapshot: &SnapshotVolume,
        open: &mut Opener<'_>,
        what: &str,
    ) -> Result<Self, FsError> {
        let mut parts = Parts::new(open, what);
        let origin = parts.read(&snapshot.origin, "snapshot origin", None)?;
        let store = parts.read(&snapshot.store, "snapshot exception store", None)?;
        let inner = snapshot::open(origin, store, snapshot.chunk, what)?;
        parts.reader(volume, Box::new(inner))
    }
}

/// The volumes a thin, cached or snapshot volume is read through, opened with one
/// `open`, and what is read in place of what is missing in them.
struct Parts<'o, 'a> {
    open: &'o mut Opener<'a>,
    what: &'o str,
    notes: Vec<String>,
}

impl<'o, 'a> Parts<'o, 'a> {
    fn new(open: &'o mut Opener<'a>, what: &'o str) -> Self {
        Parts {
            open,
            what,
            notes: Vec::new(),
        }
    }

    /// Volume `part`, the `role` of the volume being read (its bytes `range`, if given).
    fn read(
        &mut self,
        part: &LogicalVolume,
        role: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Box<dyn ReadAt>, FsError> {
        let label = format!("{} ({role} volume {})", self.what, part.name);
        let reader = LogicalVolumeReader::open(part, self.open, &label)?;
        if let Some(note) = reader.degraded() {
            self.notes.push(format!("{}: {note}", part.name));
        }
        Ok(match range {
            Some((start, len)) => Box::new(Slice::new(reader, start, len)?),
            None => Box::new(reader),
        })
    }

    /// `volume`, read through `inner`, which must hold all of it.
    fn reader(
        self,
        volume: &LogicalVolume,
        inner: Box<dyn ReadAt>,
    ) -> Result<LogicalVolumeReader, FsError> {
        if inner.len() < volume.size {
            return Err(FsError::corrupt(
                self.what,
                None,
                format!(
                    "LVM2 logical volume of {} bytes, whose parts hold {}",
                    volume.size,
                    inner.len()
                ),
            ));
        }
        Ok(LogicalVolumeReader {
            pvs: Vec::new(),
            size: volume.size,
            map: Vec::new(),
            inner: Some(inner),
            degraded: (!self.notes.is_empty()).then(|| self.notes.join("; ")),
        })
    }
}

impl ReadAt for LogicalVolumeReader {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(<[u8]>::len(buf) as u64)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if let Some(inner) = &mut self.inner {
            return inner.read_exact_at(offset, buf);
        }
        let mut at = offset;
        while at < end {
            // The segments are in order and cover the volume without gaps.
            let s = &self.map[self.map.partition_point(|s| s.start + s.len <= at)];
            let within = at - s.start;
            let (chunk, into) = (within / s.chunk, within % s.chunk);
            let stripes = s.stripes.len() as u64;
            let (pv, area) = s.stripes[(chunk % stripes) as usize];
            let n = (s.chunk - into).min(s.start + s.len - at).min(end - at);
            let from = (at - offset) as usize;
            self.pvs[pv].read_exact_at(
                area + chunk / stripes * s.chunk + into,
                &mut buf[from..from + n as usize],
            )?;
            at += n;
        }
        Ok(())
    }
}

pub(crate) fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_text_parses() {
        let text = r#"vg0 {
id = "abc"
seqno = 3
status = ["RESIZEABLE", "READ"] # comment
flags = []
nested { a = -1 b = "q\"uote" c = 1.5 }
}
# Generated by LVM2
contents = "Text Format Volume Group"
version = 1
"#;
        let root = parse(text).unwrap();
        let (name, vg) = root.sections().next().unwrap();
        assert_eq!(name, "vg0");
        assert_eq!(vg.int("seqno"), Ok(3));
        assert_eq!(vg.str("id"), Ok("abc"));
        let nested = vg.get("nested").unwrap();
        assert_eq!(nested.get("a"), Some(&Value::Int(-1)));
        assert!(nested.int("a").is_err());
        assert_eq!(nested.str("b"), Ok("q\"uote"));
        assert_eq!(nested.str("c"), Ok("1.5"));
        assert_eq!(
            vg.get("status"),
            Some(&Value::List(vec![
                Value::Str("RESIZEABLE".into()),
                Value::Str("READ".into())
            ]))
        );
        assert_eq!(root.int("version"), Ok(1));
    }

    #[test]
    fn bad_text_is_an_error_not_a_panic() {
        for text in [
            "vg {",
            "vg { a = }",
            "vg { a = [1 2] }",
            "a = \"x",
            "}",
            "vg { = 1 }",
            "a = [",
            "a b",
            "a = [1,",
            "a = \"\\",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        let deep = "a {".repeat(100) + &"}".repeat(100);
        assert!(parse(&deep).is_err());
        let deep_list = "a = ".to_owned() + &"[".repeat(100);
        assert!(parse(&deep_list).is_err());
    }

    /// A physical volume of 8 MiB with the metadata `text`, as LVM2 lays it out: the label
    /// in sector 1, one metadata area at 4 KiB, extents from 1 MiB.
    fn image(text: &[u8]) -> Vec<u8> {
        let crc = Crc::<u32>::new(&LVM_CRC);
        let mut img = vec![0u8; 8 << 20];
        let put64 =
            |img: &mut [u8], at: usize, v: u64| img[at..at + 8].copy_from_slice(&v.to_le_bytes());
        let label = 512;
        img[label..label + 8].copy_from_slice(LABEL_ID);
        put64(&mut img, label + 8, 1);
        img[label + 20..label + 24].copy_from_slice(&32u32.to_le_bytes());
        img[label + 24..label + 32].copy_from_slice(LABEL_TYPE);
        img[label + 32..label + 64].copy_from_slice(&[b'A'; 32]);
        put64(&mut img, label + 64, 8 << 20);
        put64(&mut img, label + 72, 1 << 20);
        put64(&mut img, label + 104, 4096);
        put64(&mut img, label + 112, (1 << 20) - 4096);
        let sum = crc.checksum(&img[label + 20..label + 512]);
        img[label + 16..label + 20].copy_from_slice(&sum.to_le_bytes());
        let mda = 4096;
        img[mda + 4..mda + 20].copy_from_slice(MDA_MAGIC);
        img[mda + 20..mda + 24].copy_from_slice(&1u32.to_le_bytes());
        put64(&mut img, mda + 24, 4096);
        put64(&mut img, mda + 32, (1 << 20) - 4096);
        put64(&mut img, mda + 40, 512);
        put64(&mut img, mda + 48, text.len() as u64);
        img[mda + 56..mda + 60].copy_from_slice(&crc.checksum(text).to_le_bytes());
        let sum = crc.checksum(&img[mda + 4..mda + 512]);
        img[mda..mda + 4].copy_from_slice(&sum.to_le_bytes());
        img[mda + 512..mda + 512 + text.len()].copy_from_slice(text);
        img
    }

    const TEXT: &str = r#"vg {
extent_size = 2048
physical_volumes {
pv0 { id = "AAAAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAAAA" pe_start = 2048 pe_count = 7 }
pv1 { id = "BBBBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBBBB" pe_start = 4096 pe_count = 2 }
}
logical_volumes {
a { status = ["READ", "VISIBLE"] segment_count = 2
segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 4] }
segment2 { start_extent = 2 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 0] } }
hidden { status = ["READ"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 1] } }
t { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "thin" thin_pool = "p" external_origin = "a" } }
s { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 2 stripe_size = 128
stripes = ["pv0", 2, "pv1", 0] } }
}
}
"#;

    /// Mirrored, RAID, thin and cached volumes and a snapshot, their images and parts hidden
    /// volumes on `pv0`.
    const TEXT_RAID: &str = r#"vg {
extent_size = 2048
physical_volumes {
pv0 { id = "AAAAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAAAA" pe_start = 2048 pe_count = 7 }
}
logical_volumes {
meta { status = ["READ"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 0] } }
i1 { status = ["READ"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 1] } }
i2 { status = ["READ"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 2] } }
i3 { status = ["READ"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 3] } }
m { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "raid1" device_count = 2
raids = ["meta", "i1", "meta", "i2"] } }
o { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "mirror" mirror_count = 2
mirrors = ["i2", 0, "i3", 0] } }
r { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 2 type = "raid5_ls" device_count = 3 stripe_size = 128
raids = ["meta", "i1", "meta", "i2", "meta", "i3"] } }
z { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 2 type = "raid0" stripe_count = 2 stripe_size = 128
raid0_lvs = ["i1", "i3"] } }
p { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "thin-pool" metadata = "meta" pool = "i3"
chunk_size = 128 } }
th { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 4 type = "thin" thin_pool = "p" device_id = 1 } }
cp { status = ["READ"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "cache-pool+METADATA_FORMAT" data = "i2"
metadata = "meta" metadata_format = 2 chunk_size = 128 cache_mode = "writeback" } }
ca { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "cache" cache_pool = "cp" origin = "i1" } }
p2 { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "thin-pool" metadata = "meta" pool = "ca"
chunk_size = 128 } }
th2 { status = ["VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "thin" thin_pool = "p2" device_id = 1 } }
cow { status = ["READ"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 4] } }
snapshot0 { status = ["READ"] segment_count = 1
segment1 { start_extent = 0 extent_count = 1 type = "snapshot" chunk_size = 8 origin = "i1"
cow_store = "cow" } }
}
}
"#;

    #[test]
    fn mirrored_and_raid_volumes_read_through_their_images() {
        let mut img = image(TEXT_RAID.as_bytes());
        for (extent, fill) in [(1usize, 0x11u8), (2, 0x22), (3, 0x33)] {
            let at = (1 << 20) + extent * (1 << 20);
            img[at..at + (1 << 20)].fill(fill);
        }
        let pv = read_physical_volume(&mut img.clone(), "d")
            .unwrap()
            .unwrap();
        let names: Vec<(&str, u64)> = pv
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.size))
            .collect();
        assert_eq!(
            names,
            [
                ("m", 1 << 20),
                ("o", 1 << 20),
                ("r", 2 << 20),
                ("z", 2 << 20),
                ("th", 4 << 20),
                ("ca", 1 << 20),
                ("th2", 1 << 20),
                ("cow", 1 << 20)
            ]
        );
        // Through the first image: i1, then i2.
        assert!(
            read_lv(&pv.volumes[0], &img, &[], 0, 1 << 20)
                .iter()
                .all(|&b| b == 0x11)
        );
        assert!(
            read_lv(&pv.volumes[1], &img, &[], 0, 1 << 20)
                .iter()
                .all(|&b| b == 0x22)
        );
        // RAID5 over i1, i2, i3 (left-symmetric, 64 KiB chunks): stripe 0 has its parity
        // on image 2, data on 0 then 1; stripe 1 parity on 1, data on 2 then 0.
        let r = read_lv(&pv.volumes[2], &img, &[], 0, 4 << 16);
        let fills: Vec<u8> = r.chunks(1 << 16).map(|c| c[0]).collect();
        assert_eq!(fills, [0x11, 0x22, 0x33, 0x11]);
        // RAID0 over i1 and i3.
        let z = read_lv(&pv.volumes[3], &img, &[], 0, 3 << 16);
        let fills: Vec<u8> = z.chunks(1 << 16).map(|c| c[0]).collect();
        assert_eq!(fills, [0x11, 0x33, 0x11]);
        // A thin volume is read through its pool's metadata, which is not there.
        let thin = LogicalVolumeReader::new(&pv.volumes[4], |_| Some(Box::new(img.clone())), "d");
        assert!(thin.is_err_and(|e| e.to_string().contains("thin pool metadata: no superblock")));
        // A cached one through its cache's, a snapshot through its exception store.
        let cached = LogicalVolumeReader::new(&pv.volumes[5], |_| Some(Box::new(img.clone())), "d");
        assert!(cached.is_err_and(|e| e.to_string().contains("cache metadata: no superblock")));
        let snapshot =
            LogicalVolumeReader::new(&pv.volumes[7], |_| Some(Box::new(img.clone())), "d");
        assert!(snapshot.is_err_and(|e| e.to_string().contains("exception store: no header")));
        // A pool whose data volume is cached is refused, the group's other volumes read.
        let why = pv.volumes[6].unsupported().unwrap();
        assert!(why.contains("\"ca\" is thin or cached itself"), "{why}");
    }

    /// Reads `len` bytes at `at` of logical volume `lv`, its physical volumes `pv0`
    /// (UUID `A...`) and `pv1` (`B...`).
    fn read_lv(lv: &LogicalVolume, pv0: &[u8], pv1: &[u8], at: u64, len: usize) -> Vec<u8> {
        let mut reader = LogicalVolumeReader::new(
            lv,
            |uuid| match uuid.as_bytes()[0] {
                b'A' => Some(Box::new(pv0.to_vec())),
                b'B' => Some(Box::new(pv1.to_vec())),
                _ => None,
            },
            "d",
        )
        .unwrap();
        let mut buf = vec![0u8; len];
        reader.read_exact_at(at, &mut buf).unwrap();
        buf
    }

    #[test]
    fn extents_map_onto_the_physical_volumes() {
        let mut img = image(TEXT.as_bytes());
        for (extent, fill) in [(4u64, 0xa4u8), (5, 0xa5), (0, 0xa0)] {
            let at = (1 << 20) + extent as usize * (1 << 20);
            img[at..at + (1 << 20)].fill(fill);
        }
        // Each 64 KiB stripe chunk of extents 2 and 3 of pv0 and 0 and 1 of pv1 (from
        // 2 MiB) holds its place in the striped volume.
        let mut other = vec![0u8; 8 << 20];
        for chunk in 0..64u64 {
            let (pv, row) = (chunk % 2, chunk / 2);
            let (buf, base) = if pv == 0 {
                (&mut img, 3 << 20)
            } else {
                (&mut other, 2 << 20)
            };
            let at = (base + row * 65536) as usize;
            buf[at..at + 65536].fill(chunk as u8);
        }
        let pv = read_physical_volume(&mut img.clone(), "d")
            .unwrap()
            .unwrap();
        assert_eq!(
            (pv.group.as_str(), pv.uuid.as_str()),
            ("vg", &*"A".repeat(32))
        );
        let names: Vec<&str> = pv.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["a", "t", "s"]);
        assert!(pv.volumes[1].unsupported().unwrap().contains("thin"));
        // A read across both runs of the first segment and into the second.
        let a = read_lv(&pv.volumes[0], &img, &other, (1 << 20) - 1, (2 << 20) + 1);
        assert_eq!(a[0], 0xa4);
        assert!(a[1..(1 << 20) + 1].iter().all(|&b| b == 0xa5));
        assert!(a[(1 << 20) + 1..].iter().all(|&b| b == 0xa0));
        let striped = &pv.volumes[2];
        assert_eq!(striped.size, 4 << 20);
        let uuids: Vec<&str> = striped.physical_volumes().collect();
        assert_eq!(uuids, ["A".repeat(32), "B".repeat(32)]);
        let s = read_lv(striped, &img, &other, 0, 4 << 20);
        for (chunk, bytes) in s.chunks(65536).enumerate() {
            assert!(bytes.iter().all(|&b| b == chunk as u8), "chunk {chunk}");
        }
        // Reads that cross chunk boundaries, at odd places.
        assert_eq!(read_lv(striped, &img, &other, 65535, 3), [0, 1, 1]);
        assert_eq!(read_lv(striped, &img, &other, (4 << 20) - 2, 2), [63, 63]);
        // Past the end; a missing or short physical volume.
        let mut reader =
            LogicalVolumeReader::new(&pv.volumes[0], |_| Some(Box::new(img.clone())), "d").unwrap();
        assert!(reader.read_exact_at((3 << 20) - 1, &mut [0u8; 2]).is_err());
        let missing = LogicalVolumeReader::new(
            striped,
            |u| (u.starts_with('A')).then(|| Box::new(img.clone()) as Box<dyn ReadAt>),
            "d/s",
        );
        assert!(missing.is_err_and(
            |e| e.to_string().contains("pv1") && e.to_string().contains("not among the disks")
        ));
        let short =
            LogicalVolumeReader::new(striped, |_| Some(Box::new(vec![0u8; 1 << 20])), "d/s");
        assert!(short.is_err_and(|e| e.to_string().contains("reach byte")));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]
        /// Mutated metadata (with its checksum made right) never panics, and neither does
        /// reading what it describes.
        #[test]
        fn mutated_metadata_never_panics(
            edits in proptest::collection::vec((0usize..2000, proptest::prelude::any::<u8>()), 1..6),
            digits in proptest::collection::vec((0usize..2000, "[0-9]{1,25}"), 0..3),
            raid in proptest::prelude::any::<bool>(),
        ) {
            let mut text = if raid { TEXT_RAID } else { TEXT }.as_bytes().to_vec();
            for (at, digits) in &digits {
                let at = at % text.len();
                text.splice(at..at, digits.bytes());
            }
            for &(at, byte) in &edits {
                let at = at % text.len();
                text[at] = byte;
            }
            let mut img = image(&text);
            if let Ok(Some(pv)) = read_physical_volume(&mut img, "d") {
                for v in &pv.volumes {
                    if let Ok(mut lv) = LogicalVolumeReader::new(v, |_| Some(Box::new(img.clone())), "d") {
                        let len = lv.len();
                        let mut buf = [0u8; 4096];
                        for at in [0, len / 2, len.saturating_sub(4096)] {
                            let _ = lv.read_exact_at(at, &mut buf);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_crc_is_lvm2s() {
        // calc_crc(INITIAL_CRC, "", 0) is the seed itself; one byte by LVM2's nibble loop.
        let crc = Crc::<u32>::new(&LVM_CRC);
        assert_eq!(crc.checksum(b""), 0xf597_a6cf);
        let mut expect = 0xf597_a6cfu32 ^ u32::from(b'a');
        for _ in 0..8 {
            expect = if expect & 1 != 0 {
                (expect >> 1) ^ 0xedb8_8320
            } else {
                expect >> 1
            };
        }
        assert_eq!(crc.checksum(b"a"), expect);
    }
}
