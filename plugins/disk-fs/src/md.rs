//! Linux software RAID (MD, `mdadm`) members with version 1 metadata: the superblock that
//! says where the array's data starts on the member and which part of the array it is,
//! so that the file system or LVM2 physical volume of an array can be read through its
//! members, as from a partition. The layout is the kernel's (`include/uapi/linux/raid/md_p.h`).
//!
//! ```text
//! superblock (little-endian), at byte 0 (metadata 1.1) or 4096 (1.2) of the member, or
//! 8 KiB before its end rounded down to 4 KiB (1.0):
//!   0x00 MAGIC(u32 = 0xa92b4efc) | 0x04 MAJOR_VERSION(u32 = 1) | 0x08 FEATURE_MAP(u32)
//!   0x10 SET_UUID(16) | 0x20 SET_NAME(32) | 0x48 LEVEL(i32) | 0x4c LAYOUT(u32)
//!   0x50 SIZE(u64, sectors)
//!   0x58 CHUNKSIZE(u32, sectors) | 0x5c RAID_DISKS(u32) | 0x80 DATA_OFFSET(u64, sectors)
//!   0x88 DATA_SIZE(u64, sectors) | 0x90 SUPER_OFFSET(u64, sectors) | 0xa0 DEV_NUMBER(u32)
//!   0xd8 SB_CSUM(u32) | 0xdc MAX_DEV(u32)
//!   0x100 DEV_ROLES(u16 * MAX_DEV: each device's role, 0xfffe and above none)
//! ```
//!
//! The checksum is the sum of the superblock's little-endian 32-bit words (with `SB_CSUM`
//! taken as zero) over its 256 bytes and the roles, folded from 64 to 32 bits. Metadata
//! 0.90, mdadm's default before version 1, lies in the last 64 KiB-aligned 64 KiB of
//! the member, with the data from its first byte ([`read_v090`]).
//!
//! A RAID1 (or one-member linear) array is read through any one member: every member
//! holds all the data. The others are read through all their members together
//! ([`MdArray`]), found by role:
//!
//! - RAID0 deals the array's chunks to the members in turn; members of unequal sizes
//!   make zones, each over the members that reach into it, whose member for a chunk the
//!   superblock's layout says (`original` or `alternate`). Linear puts the members one
//!   after the other.
//! - RAID4, 5 and 6 cut the array into stripes of one chunk per member but one (two for
//!   RAID6) that holds the stripe's parity. Where the parity and each data chunk of a
//!   stripe lie is the layout's (the kernel's `raid5_compute_sector`): RAID4 keeps the
//!   parity on the last member; RAID5 and 6 rotate it from stripe to stripe (left or
//!   right, the data after it in member order or wrapping round after it), or keep it on
//!   the first or last members; RAID6's `-6` layouts are a RAID5 layout over all members
//!   but the last, which holds Q, and its DDF layouts (LVM2's `raid6_zr`, `raid6_nr`,
//!   `raid6_nc`) rotate P and Q their own ways. Data is read where it lies; parity is
//!   not needed while every member is there. With one member missing, its chunks are the
//!   XOR of the stripe's other data chunks and its P parity; RAID6 rebuilds up to two
//!   from its P and Q syndromes ([`MdArray::rebuild`]).
//! - RAID10 writes each chunk `near` times on neighbouring members (`n2`, mdadm's
//!   default) and `far` times further on (`f2`, in a later band; `o2`, in the next
//!   stripe). The first copy is read; with members missing, a `near` layout reads another
//!   copy of each chunk whose first is gone.
//!
//! A member being rebuilt, an array in the middle of a reshape, RAID4/5 arrays missing
//! more than one member and RAID6 arrays missing more than two are refused with the
//! reason.

use tessera_disk_image::ReadAt;

use crate::{FsError, read_exact};

const SECTOR: u64 = 512;
const MAGIC: u32 = 0xa92b_4efc;
/// Where the superblock lies: metadata 1.1 at the start, 1.2 4 KiB in.
const PLACES: [(u64, &str); 2] = [(0, "1.1"), (4096, "1.2")];
/// The fixed part of the superblock.
const FIXED: usize = 256;
/// Most roles a superblock lists: mdadm's limit for version 1 metadata.
const MAX_DEVICES: u32 = 1920;
/// Feature bits: a member being rebuilt (its data not all there yet), and a reshape in
/// progress (the layout changing under the data).
const FEATURE_RECOVERY: u32 = 1 << 1;
const FEATURE_RESHAPE: u32 = 1 << 2;
/// RAID levels: linear is -1.
const LINEAR: i32 = -1;
const RAID0: i32 = 0;
const RAID1: i32 = 1;
const RAID4: i32 = 4;
const RAID5: i32 = 5;
const RAID6: i32 = 6;
const RAID10: i32 = 10;
/// RAID4/5/6 layouts (`ALGORITHM_*` of the kernel's `raid5.h`): parity rotating from the
/// last member down or from the first up, data in member order after it or wrapping
/// round after it; parity on the first or the last members; and RAID6's RAID5 layouts
/// over all members but the last (`_6`, 16 to 20).
const LEFT_ASYMMETRIC: u32 = 0;
const RIGHT_ASYMMETRIC: u32 = 1;
const LEFT_SYMMETRIC: u32 = 2;
const RIGHT_SYMMETRIC: u32 = 3;
const PARITY_0: u32 = 4;
const PARITY_N: u32 = 5;
/// RAID6's DDF layouts (LVM2's `raid6_zr`, its default, `raid6_nr` and `raid6_nc`): P
/// rotating from the first member up, or from the last down starting one further on, the
/// data in member order after it; or from the last down with Q before P and the data
/// wrapping round after P. Their Q counts the data by member, P's and Q's places
/// included.
const ROTATING_ZERO_RESTART: u32 = 8;
const ROTATING_N_RESTART: u32 = 9;
const ROTATING_N_CONTINUE: u32 = 10;
const RAID5_LAYOUTS_6: u32 = 16;
const PARITY_0_6: u32 = 20;
/// RAID10 layout bits past the near (bits 0-7) and far (8-15) copies: far copies one
/// stripe on rather than in a later band, and far copies kept within sets of members.
const RAID10_OFFSET: u32 = 1 << 16;
const RAID10_FAR_SETS: u32 = 1 << 17;
/// The two layouts of a RAID0 array of unequal members (several zones): the member of a
/// chunk counted by its number in the array (the kernel's before 3.14, `original`) or in
/// its zone (since, `alternate`). Arrays of equal members read the same either way.
const RAID0_ORIG_LAYOUT: u32 = 1;
const RAID0_ALT_LAYOUT: u32 = 2;
/// A role that is not an active member's (a spare's, a faulty one's).
const NO_ROLE: u16 = 0xfffe;

/// A member of an MD array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdMember {
    /// The metadata version: `0.90`, `1.0`, `1.1` or `1.2` (`lvm2` for the images of an
    /// LVM2 RAID volume).
    pub version: &'static str,
    /// The array's name (`host:name`, as mdadm sets it).
    pub name: String,
    /// The array's UUID, as mdadm prints it.
    pub uuid: String,
    /// This member's place in the array, `None` for a spare or a faulty member.
    pub role: Option<u32>,
    /// The chunk size of a striped array, in bytes.
    pub chunk: u64,
    /// The RAID level (-1 for linear).
    pub level: i32,
    /// Where a striped array's parity or copies lie (the superblock's `layout`).
    pub layout: u32,
    /// How many members the array has.
    pub members: u32,
    /// Where the array's data starts on this member, in bytes.
    pub data_offset: u64,
    /// The length of the array's data, in bytes.
    pub data_length: u64,
}

impl MdMember {
    /// Whether this one member holds all of the array's data.
    pub fn holds_all(&self) -> bool {
        self.level == RAID1 || (self.level == LINEAR && self.members == 1)
    }

    /// Whether the array's data is read through all its members together
    /// ([`MdArray::assemble`]).
    pub fn needs_all(&self) -> bool {
        !self.holds_all() && matches!(self.level, LINEAR | RAID0 | RAID4 | RAID5 | RAID6 | RAID10)
    }

    /// How many members an array of this one's can be missing and still be read.
    fn may_miss(&self) -> usize {
        match self.level {
            RAID4 | RAID5 => 1,
            RAID6 => 2,
            RAID10 => {
                let (near, far) = raid10_copies(self.layout);
                if far == 1 && near > 1 && self.layout & RAID10_OFFSET == 0 {
                    // As many as leave each chunk a copy (`copies_left`).
                    self.members as usize - 1
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    /// Why the superblock's layout cannot be read, if it cannot.
    fn layout_problem(&self) -> Option<String> {
        let n = self.members;
        match self.level {
            RAID0 if self.layout > RAID0_ALT_LAYOUT => Some(format!(
                "RAID0 layout {} is not one the kernel has",
                self.layout
            )),
            RAID5 if self.layout > PARITY_N => Some(format!(
                "RAID5 layout {} is not one the kernel has",
                self.layout
            )),
            RAID6
                if self.layout > PARITY_0_6
                    || (PARITY_N < self.layout && self.layout < ROTATING_ZERO_RESTART)
                    || (ROTATING_N_CONTINUE < self.layout && self.layout < RAID5_LAYOUTS_6) =>
            {
                Some(format!(
                    "RAID6 layout {} is not one the kernel has",
                    self.layout
                ))
            }
            RAID4 | RAID5 if n < 2 => Some(format!("a RAID{} array of {n} members", self.level)),
            RAID6 if n < 4 => Some(format!("a RAID6 array of {n} members")),
            RAID10 => {
                let (near, far) = raid10_copies(self.layout);
                let known = 0xffff | RAID10_OFFSET | RAID10_FAR_SETS;
                if self.layout & !known != 0 || near == 0 || far == 0 {
                    Some(format!(
                        "RAID10 layout {:#x} is not one the kernel has",
                        self.layout
                    ))
                } else if near * far < 2 || near > n || far > n {
                    Some(format!(
                        "RAID10 layout of {near} near and {far} far copies on {n} members"
                    ))
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// The near and far copies of a RAID10 layout.
fn raid10_copies(layout: u32) -> (u32, u32) {
    (layout & 0xff, (layout >> 8) & 0xff)
}

/// The MD superblock of `reader` (a partition or a disk), `None` if it has none;
/// `what` names it in errors. Version 1 superblocks are looked for at the start, 4 KiB
/// in and near the end (1.1, 1.2, 1.0), then a version 0.90 one at the end.
pub fn read_md_member(reader: &mut dyn ReadAt, what: &str) -> Result<Option<MdMember>, FsError> {
    let size = reader.len();
    // Metadata 1.0: 8 KiB before the end, on a 4 KiB boundary.
    let end_place = (size / SECTOR).checked_sub(16).map(|s| (s & !7) * SECTOR);
    let places = PLACES.into_iter().chain(end_place.map(|at| (at, "1.0")));
    for (at, version) in places {
        if let Some(member) = read_v1(reader, what, at, version)? {
            return check_member(member, what).map(Some);
        }
    }
    match read_v090(reader, what)? {
        Some(member) => check_member(member, what).map(Some),
        None => Ok(None),
    }
}

/// The version 1 superblock at `at` of `reader`, if one is there.
fn read_v1(
    reader: &mut dyn ReadAt,
    what: &str,
    at: u64,
    version: &'static str,
) -> Result<Option<MdMember>, FsError> {
    let size = reader.len();
    if at + FIXED as u64 > size {
        return Ok(None);
    }
    let mut sb = vec![0u8; FIXED];
    read_exact(reader, what, at, &mut sb)?;
    if le32(&sb, 0) != MAGIC {
        return Ok(None);
    }
    let corrupt = |offset: u64, detail: String| FsError::Corrupt {
        what: what.to_owned(),
        offset: Some(at + offset),
        detail,
    };
    let major = le32(&sb, 4);
    if major != 1 {
        return Err(corrupt(
            4,
            format!("MD superblock of major version {major}, where 1 is read"),
        ));
    }
    let max_dev = le32(&sb, 0xdc);
    if max_dev > MAX_DEVICES {
        return Err(corrupt(
            0xdc,
            format!("the MD superblock lists {max_dev} devices, more than {MAX_DEVICES}"),
        ));
    }
    let roles = 2 * max_dev as usize;
    if at + (FIXED + roles) as u64 > size {
        return Err(corrupt(
            0xdc,
            format!("the MD superblock's {max_dev} device roles pass the end of the volume"),
        ));
    }
    let mut whole = sb;
    whole.resize(FIXED + roles, 0);
    read_exact(reader, what, at + FIXED as u64, &mut whole[FIXED..])?;
    let stored = le32(&whole, 0xd8);
    let computed = checksum(&whole, 0xd8 / 4);
    if stored != computed {
        return Err(corrupt(
            0xd8,
            format!("MD superblock checksum {stored:#010x}, where its bytes give {computed:#010x}"),
        ));
    }
    let sectors = |field: usize| le64(&whole, field).checked_mul(SECTOR);
    // RAID0 and linear members give the array all their data area (`DATA_SIZE`); the
    // others the size the array uses of each (`SIZE`), as the kernel takes them.
    let level = le32(&whole, 0x48) as i32;
    let length_field = if matches!(level, LINEAR | RAID0) {
        0x88
    } else {
        0x50
    };
    let (Some(data_offset), Some(data_length)) = (sectors(0x80), sectors(length_field)) else {
        return Err(corrupt(0x80, "MD data offset or size overflows".to_owned()));
    };
    if data_offset
        .checked_add(data_length)
        .is_none_or(|end| end > size)
    {
        return Err(corrupt(
            0x80,
            format!(
                "the MD array's {data_length} bytes at offset {data_offset:#x} pass the end \
                 of the volume ({size} bytes)"
            ),
        ));
    }
    let members = le32(&whole, 0x5c);
    if members == 0 || members > max_dev {
        return Err(corrupt(
            0x5c,
            format!(
                "the MD array has {members} members, where its superblock lists {max_dev} roles"
            ),
        ));
    }
    let dev_number = le32(&whole, 0xa0);
    let role = (dev_number < max_dev)
        .then(|| {
            u16::from_le_bytes([
                whole[FIXED + 2 * dev_number as usize],
                whole[FIXED + 2 * dev_number as usize + 1],
            ])
        })
        .filter(|&role| role < NO_ROLE)
        .map(u32::from);
    let member = MdMember {
        version,
        name: String::from_utf8_lossy(&whole[0x20..0x40])
            .trim_end_matches('\0')
            .to_owned(),
        uuid: uuid(&whole[0x10..0x20]),
        role,
        chunk: u64::from(le32(&whole, 0x58)) * SECTOR,
        level,
        layout: le32(&whole, 0x4c),
        members,
        data_offset,
        data_length,
    };
    let features = le32(&whole, 8);
    let unsupported = |detail: String| FsError::Unsupported {
        what: what.to_owned(),
        detail,
    };
    if features & FEATURE_RECOVERY != 0 {
        return Err(unsupported(format!(
            "this member of MD array {} was being rebuilt, so its data is incomplete; \
             restore from another member",
            member.name
        )));
    }
    if features & FEATURE_RESHAPE != 0 {
        return Err(unsupported(format!(
            "MD array {} was being reshaped; let the reshape finish first",
            member.name
        )));
    }
    Ok(Some(member))
}

/// Refuses a member whose array is not read, with the reason: a level that is not, a
/// spare of an array read through all its members, a bad chunk size or layout.
fn check_member(member: MdMember, what: &str) -> Result<MdMember, FsError> {
    let unsupported = |detail: String| FsError::Unsupported {
        what: what.to_owned(),
        detail,
    };
    if !member.holds_all() && !member.needs_all() {
        return Err(unsupported(format!(
            "this is one of the {} members of MD array {} ({}), a level that is not \
             read; RAID0, 1, 4, 5, 6, 10 and linear arrays are",
            member.members,
            member.name,
            level_name(member.level)
        )));
    }
    if member.needs_all() && member.role.is_none() {
        return Err(unsupported(format!(
            "this member of MD array {} is a spare or faulty, and holds none of its data",
            member.name
        )));
    }
    let striped = matches!(member.level, RAID0 | RAID4 | RAID5 | RAID6 | RAID10);
    if striped && (member.chunk == 0 || !member.chunk.is_power_of_two()) {
        return Err(FsError::Corrupt {
            what: what.to_owned(),
            offset: None,
            detail: format!(
                "MD {} chunk of {} bytes is not a power of two",
                level_name(member.level),
                member.chunk
            ),
        });
    }
    if member.needs_all()
        && let Some(problem) = member.layout_problem()
    {
        return Err(unsupported(format!("MD array {}: {problem}", member.name)));
    }
    Ok(member)
}

/// The version 0.90 superblock of `reader`, if it has one: 4 KiB of 32-bit words
/// (little-endian, as x86 writes them) in the last 64 KiB-aligned 64 KiB of the member,
/// the array's data from its first byte up to there.
///
/// ```text
/// word 0 MAGIC | 1 MAJOR (0) | 2 MINOR (90; 91 during a reshape) | 5 UUID0 | 7 LEVEL
/// 8 SIZE (KiB per member) | 10 RAID_DISKS | 11 MD_MINOR | 13..16 UUID1..3 | 38 SB_CSUM
/// 64 LAYOUT | 65 CHUNK_SIZE (bytes) | 992.. THIS_DISK: NUMBER, MAJOR, MINOR, RAID_DISK, STATE
/// ```
///
/// The checksum is the sum of the 1,024 words (`SB_CSUM` taken as zero) folded from 64
/// to 32 bits. A disk's state has bit 1 (active) and bit 2 (in sync) set when it holds
/// its part of the array.
fn read_v090(reader: &mut dyn ReadAt, what: &str) -> Result<Option<MdMember>, FsError> {
    const RESERVED: u64 = 64 << 10;
    const BYTES: usize = 4096;
    let size = reader.len();
    let Some(at) = (size & !(RESERVED - 1)).checked_sub(RESERVED) else {
        return Ok(None);
    };
    let mut sb = vec![0u8; BYTES];
    read_exact(reader, what, at, &mut sb)?;
    let word = |i: usize| le32(&sb, 4 * i);
    if word(0) != MAGIC || word(1) != 0 {
        return Ok(None);
    }
    let corrupt = |i: usize, detail: String| FsError::Corrupt {
        what: what.to_owned(),
        offset: Some(at + 4 * i as u64),
        detail,
    };
    let stored = word(38);
    let computed = checksum(&sb, 38);
    if stored != computed {
        return Err(corrupt(
            38,
            format!("MD superblock checksum {stored:#010x}, where its bytes give {computed:#010x}"),
        ));
    }
    let name = format!("md{}", word(11));
    match word(2) {
        90 => {}
        91 => {
            return Err(FsError::Unsupported {
                what: what.to_owned(),
                detail: format!("MD array {name} was being reshaped; let the reshape finish first"),
            });
        }
        minor => {
            return Err(corrupt(
                2,
                format!("MD superblock version 0.{minor}, where 0.90 is read"),
            ));
        }
    }
    let level = word(7) as i32;
    let members = word(10);
    if members == 0 || members > 27 {
        return Err(corrupt(
            10,
            format!("the MD array has {members} members, where a 0.90 superblock lists 27"),
        ));
    }
    // RAID0 and linear members give the array all they hold below the superblock; the
    // others the size the superblock records.
    let data_length = match level {
        LINEAR | RAID0 => at,
        _ => u64::from(word(8)) * 1024,
    };
    if data_length > at {
        return Err(corrupt(
            8,
            format!(
                "the MD array's {data_length} bytes per member reach past its superblock at \
                 byte {at}"
            ),
        ));
    }
    let state = word(992 + 4);
    let raid_disk = word(992 + 3);
    let in_sync = state & 0b110 == 0b110 && state & 1 == 0;
    if level != LINEAR && level != RAID0 && raid_disk < members && !in_sync {
        return Err(FsError::Unsupported {
            what: what.to_owned(),
            detail: format!(
                "this member of MD array {name} was being rebuilt, so its data is \
                 incomplete; restore from another member"
            ),
        });
    }
    let uuid = [5, 13, 14, 15]
        .map(|i| format!("{:08x}", word(i)))
        .join(":");
    Ok(Some(MdMember {
        version: "0.90",
        name,
        uuid,
        role: (raid_disk < members && state & 1 == 0).then_some(raid_disk),
        chunk: u64::from(word(65)),
        level,
        layout: word(64),
        members,
        data_offset: 0,
        data_length,
    }))
}

/// The sum of `sb`'s little-endian 32-bit words but word `skip` (the checksum's own, taken
/// as zero), folded to 32 bits as the kernel does (`calc_sb_1_csum`, `calc_sb_csum`).
fn checksum(sb: &[u8], skip: usize) -> u32 {
    let mut sum: u64 = sb
        .chunks_exact(4)
        .enumerate()
        .filter(|&(i, _)| i != skip)
        .map(|(_, w)| u64::from(u32::from_le_bytes(w.try_into().expect("4 bytes"))))
        .sum();
    if sb.len() % 4 == 2 {
        sum += u64::from(u16::from_le_bytes([sb[sb.len() - 2], sb[sb.len() - 1]]));
    }
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

fn level_name(level: i32) -> String {
    match level {
        LINEAR => "linear".to_owned(),
        n => format!("RAID{n}"),
    }
}

/// A UUID as mdadm prints it: four groups of eight hex digits, joined by colons.
fn uuid(bytes: &[u8]) -> String {
    bytes
        .chunks(4)
        .map(|group| group.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(":")
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// A member of an assembled array: its reader, where the array's data starts on it, and
/// how much of that data it holds.
type Placed = (Box<dyn ReadAt>, u64, u64);

/// An array read through all its members.
pub struct MdArray {
    level: i32,
    layout: u32,
    chunk: u64,
    /// A RAID0 array's zones: one when its members are of one size.
    zones: Vec<Zone>,
    /// The members by role, each with where the array's data starts on it and how much
    /// of it is there; `None` for one that is missing.
    members: Vec<Option<Placed>>,
    len: u64,
    /// The name and UUID of the array, for messages.
    name: String,
}

impl MdArray {
    /// Puts the members of one array together: `members` holds each with its superblock,
    /// in any order; `what` names the array in errors. Every role must be there once but
    /// as many as the level can do without, and a RAID0 array's members must be of one
    /// size (one zone).
    pub fn assemble(
        members: Vec<(MdMember, Box<dyn ReadAt>)>,
        what: &str,
    ) -> Result<MdArray, FsError> {
        let unsupported = |detail: String| FsError::Unsupported {
            what: what.to_owned(),
            detail,
        };
        let Some(first) = members.first().map(|(member, _)| member.clone()) else {
            return Err(unsupported("an MD array without members".to_owned()));
        };
        let (level, chunk, count) = (first.level, first.chunk, first.members);
        let name = format!("{} ({})", first.name, first.uuid);
        if let Some(problem) = first.layout_problem() {
            return Err(unsupported(format!("MD array {name}: {problem}")));
        }
        if level != LINEAR && !chunk.is_power_of_two() {
            return Err(unsupported(format!(
                "MD array {name}: a chunk of {chunk} bytes, not a power of two"
            )));
        }
        let mut by_role: Vec<Option<Placed>> = (0..count).map(|_| None).collect();
        for (member, reader) in members {
            let same = member.uuid == first.uuid
                && member.level == level
                && member.chunk == chunk
                && member.layout == first.layout
                && member.members == count
                && (level == RAID0 || level == LINEAR || member.data_length == first.data_length);
            let role = member.role.filter(|&r| r < count).ok_or_else(|| {
                unsupported(format!("a member of MD array {name} has no role in it"))
            })?;
            if !same || by_role[role as usize].is_some() {
                return Err(unsupported(format!(
                    "the members found for MD array {name} disagree about it, or two claim \
                     role {role}"
                )));
            }
            let length = match level {
                LINEAR if chunk == 0 => member.data_length,
                // Linear members are rounded to the chunk when one is set.
                _ => member.data_length - member.data_length % chunk,
            };
            by_role[role as usize] = Some((reader, member.data_offset, length));
        }
        let missing: Vec<usize> = (0..by_role.len())
            .filter(|&role| by_role[role].is_none())
            .collect();
        if let Some(&role) = missing.first()
            && (missing.len() > first.may_miss() || !first.copies_left(&missing))
        {
            let roles = missing
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let why = match (level, missing.len()) {
                (LINEAR | RAID0, _) => format!("the one of role {role} is not among the disks"),
                (_, 1) => format!("the one of role {role} is not among the disks"),
                _ => format!(
                    "those of roles {roles} are not among the disks, and some of its data \
                     was on no other member"
                ),
            };
            return Err(unsupported(format!(
                "MD array {name} has {count} members, and {why}"
            )));
        }
        let zones = if level == RAID0 {
            let sizes: Vec<u64> = by_role.iter().flatten().map(|m| m.2).collect();
            let zones = raid0_zones(&sizes);
            if zones.len() > 1 && !matches!(first.layout, RAID0_ORIG_LAYOUT | RAID0_ALT_LAYOUT) {
                return Err(unsupported(format!(
                    "the members of MD RAID0 array {name} differ in size, which spreads its \
                     data over several zones, and its superblock does not say which of the \
                     kernel's two multi-zone layouts it has (layout {}); `mdadm --grow \
                     --layout=original` or `alternate` records it",
                    first.layout
                )));
            }
            zones
        } else {
            Vec::new()
        };
        let size = by_role.iter().flatten().map(|m| m.2).next().unwrap_or(0);
        let n = u64::from(count);
        let len = match level {
            LINEAR => by_role.iter().flatten().map(|m| m.2).sum(),
            RAID0 => zones.last().map_or(0, |z| z.end),
            RAID4 | RAID5 => size * (n - 1),
            RAID6 => size * (n - 2),
            _ => {
                let (near, far) = raid10_copies(first.layout);
                (size / chunk / u64::from(far) * n / u64::from(near)) * chunk
            }
        };
        Ok(MdArray {
            level,
            layout: first.layout,
            chunk,
            zones,
            members: by_role,
            len,
            name,
        })
    }

    /// The roles of the members missing from the array, which its other members stand in
    /// for.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.members.len() as u32)
            .filter(|&role| self.members[role as usize].is_none())
            .collect()
    }

    /// The array's name and UUID, as messages give them.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the array's byte at `pos` lies: the role of the member holding it, the
    /// offset from the start of the array's data on that member, and how many bytes from
    /// there on it holds in a row.
    fn locate(&self, pos: u64) -> (usize, u64, u64) {
        if self.level == LINEAR {
            let mut start = 0;
            for (role, member) in self.members.iter().enumerate() {
                let length = member.as_ref().map_or(0, |m| m.2);
                if pos < start + length {
                    return (role, pos - start, start + length - pos);
                }
                start += length;
            }
            unreachable!("positions are below the array's length")
        }
        let n = self.members.len() as u64;
        let chunk = pos / self.chunk;
        let within = pos % self.chunk;
        let run = self.chunk - within;
        match self.level {
            RAID4 | RAID5 | RAID6 => {
                let data = n - self.parities();
                let stripe = chunk / data;
                let (member, _, _) = self.stripe_roles(stripe, chunk % data);
                (member as usize, stripe * self.chunk + within, run)
            }
            RAID10 => {
                let (near, far) = raid10_copies(self.layout);
                let slot = chunk * u64::from(near);
                let mut stripe = slot / n;
                if self.layout & RAID10_OFFSET != 0 {
                    stripe *= u64::from(far);
                }
                ((slot % n) as usize, stripe * self.chunk + within, run)
            }
            _ => {
                // RAID0: the zone, then its member by the chunk's number in the array
                // (the original layout) or in the zone (the alternate one).
                let at = self.zones.partition_point(|z| z.end <= pos);
                let zone = &self.zones[at];
                let start = at.checked_sub(1).map_or(0, |i| self.zones[i].end);
                let in_zone = (pos - start) / self.chunk;
                let count = zone.roles.len() as u64;
                let index = if self.layout == RAID0_ALT_LAYOUT {
                    in_zone % count
                } else {
                    chunk % count
                };
                let at = zone.dev_start + in_zone / count * self.chunk + within;
                (zone.roles[index as usize], at, run)
            }
        }
    }

    /// The parity chunks of each stripe: 1 for RAID4 and 5, 2 for RAID6.
    fn parities(&self) -> u64 {
        if self.level == RAID6 { 2 } else { 1 }
    }

    /// The roles of the members holding data chunk `k` of stripe `stripe`, the stripe's P
    /// parity and its Q parity (RAID6).
    fn stripe_roles(&self, stripe: u64, k: u64) -> (u64, u64, Option<u64>) {
        let n = self.members.len() as u64;
        match self.level {
            RAID4 => (k, n - 1, None),
            RAID5 => {
                let (data, parity) = raid5_place(self.layout, n, stripe, k);
                (data, parity, None)
            }
            _ if self.layout >= RAID5_LAYOUTS_6 => {
                let base = if self.layout == PARITY_0_6 {
                    PARITY_0
                } else {
                    self.layout - RAID5_LAYOUTS_6
                };
                let (data, parity) = raid5_place(base, n - 1, stripe, k);
                (data, parity, Some(n - 1))
            }
            _ => match self.layout {
                LEFT_ASYMMETRIC | RIGHT_ASYMMETRIC => {
                    let p = if self.layout == LEFT_ASYMMETRIC {
                        n - 1 - stripe % n
                    } else {
                        stripe % n
                    };
                    if p == n - 1 {
                        (k + 1, p, Some(0))
                    } else {
                        (if k >= p { k + 2 } else { k }, p, Some(p + 1))
                    }
                }
                LEFT_SYMMETRIC | RIGHT_SYMMETRIC => {
                    let p = if self.layout == LEFT_SYMMETRIC {
                        n - 1 - stripe % n
                    } else {
                        stripe % n
                    };
                    ((p + 2 + k) % n, p, Some((p + 1) % n))
                }
                ROTATING_ZERO_RESTART | ROTATING_N_RESTART => {
                    let p = if self.layout == ROTATING_ZERO_RESTART {
                        stripe % n
                    } else {
                        n - 1 - (stripe + 1) % n
                    };
                    if p == n - 1 {
                        (k + 1, p, Some(0))
                    } else {
                        (if k >= p { k + 2 } else { k }, p, Some(p + 1))
                    }
                }
                ROTATING_N_CONTINUE => {
                    let p = n - 1 - stripe % n;
                    ((p + 1 + k) % n, p, Some((p + n - 1) % n))
                }
                PARITY_0 => (k + 2, 0, Some(1)),
                _ => (k, n - 2, Some(n - 1)),
            },
        }
    }

    /// Whether Q counts the data by member (DDF's way) rather than from the member after
    /// Q (md's).
    fn ddf(&self) -> bool {
        self.level == RAID6 && (ROTATING_ZERO_RESTART..=ROTATING_N_CONTINUE).contains(&self.layout)
    }

    /// Reads `buf.len()` bytes at `at` of the array's data on the member of `role`, which
    /// holds them; a missing member's are rebuilt from the others.
    fn read_member(
        &mut self,
        role: usize,
        pos: u64,
        at: u64,
        buf: &mut [u8],
    ) -> std::io::Result<()> {
        if let Some((reader, offset, _)) = &mut self.members[role] {
            return reader.read_exact_at(*offset + at, buf);
        }
        let n = self.members.len() as u64;
        match self.level {
            RAID4 | RAID5 | RAID6 => {
                let data = n - self.parities();
                let chunk = pos / self.chunk;
                self.rebuild(chunk / data, chunk % data, at, buf)
            }
            RAID10 => {
                // The next near copies lie on the members after it, wrapping round to the
                // next chunk of the first.
                let (near, _) = raid10_copies(self.layout);
                let slot = (at / self.chunk) * n + role as u64;
                for copy in 1..u64::from(near) {
                    let next = slot + copy;
                    let within = at % self.chunk;
                    if let Some((reader, offset, _)) = &mut self.members[(next % n) as usize] {
                        let at = (next / n) * self.chunk + within;
                        return reader.read_exact_at(*offset + at, buf);
                    }
                }
                Err(self.lost(role))
            }
            _ => Err(self.lost(role)),
        }
    }

    /// Rebuilds data chunk `k` of stripe `stripe`, whose member is missing: the bytes at
    /// `at` of the array's data on the members, into `buf`.
    ///
    /// With P there and no other data chunk of the stripe missing, it is the XOR of P and
    /// the stripe's other data chunks. Otherwise (RAID6) the Q syndrome rebuilds it:
    /// `Q = sum of g^i * D_i` over GF(2^8) (polynomial 0x11d, g = 2), `i` counting the
    /// stripe's data chunks in member order from the one after Q, wrapping round, as the
    /// kernel numbers them. With P missing too, `D = (Q + Q') / g^i`, where `Q'` is the
    /// syndrome of the chunks that are there; with another data chunk `j` missing, P and
    /// Q give both (`raid6_2data_recov`).
    fn rebuild(&mut self, stripe: u64, k: u64, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let n = self.members.len() as u64;
        let data = n - self.parities();
        let target = self.stripe_roles(stripe, k).0 as usize;
        let (_, p, q) = self.stripe_roles(stripe, 0);
        let (p, q) = (p as usize, q.map(|q| q as usize));
        // Data roles in syndrome order, each with the power of g Q multiplies it by: md
        // counts them from the member after Q, DDF by member.
        let first = q.map_or(0, |q| (q + 1) % n as usize);
        let ddf = self.ddf();
        let slots: Vec<(usize, usize)> = (0..n as usize)
            .map(|j| (first + j) % n as usize)
            .filter(|&role| role != p && Some(role) != q)
            .enumerate()
            .map(|(i, role)| (role, if ddf { role } else { i }))
            .collect();
        debug_assert_eq!(slots.len() as u64, data);
        let len = <[u8]>::len(buf);
        let read =
            |members: &mut Vec<Option<Placed>>, role: usize| -> std::io::Result<Option<Vec<u8>>> {
                match &mut members[role] {
                    Some((reader, offset, _)) => {
                        let mut bytes = vec![0u8; len];
                        reader.read_exact_at(*offset + at, &mut bytes)?;
                        Ok(Some(bytes))
                    }
                    None => Ok(None),
                }
            };
        let mut stripes = Vec::with_capacity(slots.len());
        for &(role, power) in &slots {
            stripes.push((power, read(&mut self.members, role)?));
        }
        let index = slots
            .iter()
            .position(|&(r, _)| r == target)
            .expect("a data role");
        let parity_p = read(&mut self.members, p)?;
        let parity_q = match q {
            Some(q) => read(&mut self.members, q)?,
            None => None,
        };
        if recover(
            &stripes,
            index,
            parity_p.as_deref(),
            parity_q.as_deref(),
            buf,
        ) {
            Ok(())
        } else {
            Err(self.lost(target))
        }
    }

    fn lost(&self, role: usize) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "MD array {}: the member of role {role} is missing and no other holds its data",
                self.name
            ),
        )
    }
}

impl MdMember {
    /// Whether every chunk of the array keeps a copy with the members of the roles in
    /// `missing` gone: for RAID10, no `near` members in a row holding one chunk's copies
    /// are all missing.
    fn copies_left(&self, missing: &[usize]) -> bool {
        if self.level != RAID10 {
            return true;
        }
        let (near, _) = raid10_copies(self.layout);
        let n = self.members as usize;
        let near = near as usize;
        // A chunk's copies start on role (chunk * near) mod n: those starts repeat after n
        // chunks.
        (0..n).all(|chunk| {
            let first = chunk * near % n;
            (0..near).any(|copy| !missing.contains(&((first + copy) % n)))
        })
    }
}

/// A zone of a RAID0 array: where it ends in the array, where it starts on its members,
/// and its members' roles, in order.
#[derive(Debug, Clone)]
struct Zone {
    end: u64,
    dev_start: u64,
    roles: Vec<usize>,
}

/// The zones of a RAID0 array whose members (by role) hold `sizes` bytes each, rounded to
/// the chunk, as the kernel makes them (`create_strip_zones`): the first spans all
/// members up to the smallest one's size; each next one the members larger than that,
/// from there up to the smallest of them.
fn raid0_zones(sizes: &[u64]) -> Vec<Zone> {
    let mut zones: Vec<Zone> = Vec::new();
    let mut dev_start = 0;
    loop {
        let roles: Vec<usize> = (0..sizes.len()).filter(|&r| sizes[r] > dev_start).collect();
        let Some(smallest) = roles.iter().map(|&r| sizes[r]).min() else {
            break;
        };
        let start = zones.last().map_or(0, |z| z.end);
        zones.push(Zone {
            end: start + (smallest - dev_start) * roles.len() as u64,
            dev_start,
            roles,
        });
        dev_start = smallest;
    }
    if zones.is_empty() {
        zones.push(Zone {
            end: 0,
            dev_start: 0,
            roles: (0..sizes.len()).collect(),
        });
    }
    zones
}

/// Rebuilds data stripe `target` of a parity row into `buf`: `stripes` holds each data
/// stripe of the row with the power of g its Q term has and its bytes (`None` for one
/// that is missing), `p` and `q` the row's parity (`None` when missing). With P there and
/// one data stripe missing it is the XOR of P and the others; otherwise, over GF(2^8), P
/// and Q give up to two: with P missing, `D = (Q + Q') / g^i`, `Q'` the syndrome of the
/// stripes that are there; with two data stripes `a` and `b` missing,
/// `P + P' = Da + Db` and `Q + Q' = g^a Da + g^b Db` (the kernel's `raid6_2data_recov`).
/// False when more is missing than the parity makes up for.
pub(crate) fn recover(
    stripes: &[(usize, Option<Vec<u8>>)],
    target: usize,
    p: Option<&[u8]>,
    q: Option<&[u8]>,
    buf: &mut [u8],
) -> bool {
    let len = <[u8]>::len(buf);
    let mut p_sum = vec![0u8; len];
    let mut q_sum = vec![0u8; len];
    let mut lost = Vec::new();
    for (power, bytes) in stripes {
        match bytes {
            Some(bytes) if bytes.len() == len => {
                let coefficient = gf::exp(*power);
                for ((ps, qs), b) in p_sum.iter_mut().zip(q_sum.iter_mut()).zip(bytes) {
                    *ps ^= b;
                    *qs ^= gf::mul(coefficient, *b);
                }
            }
            _ => lost.push(*power),
        }
    }
    let Some(&(target_power, _)) = stripes.get(target) else {
        return false;
    };
    if !lost.contains(&target_power) {
        return false;
    }
    match (lost.as_slice(), p, q) {
        ([_], Some(parity), _) => {
            for ((b, s), pp) in buf.iter_mut().zip(&p_sum).zip(parity) {
                *b = s ^ pp;
            }
            true
        }
        ([_], None, Some(parity)) => {
            let inverse = gf::inv(gf::exp(target_power));
            for ((b, s), qq) in buf.iter_mut().zip(&q_sum).zip(parity) {
                *b = gf::mul(inverse, s ^ qq);
            }
            true
        }
        (&[a, b], Some(pp), Some(qq)) if a != b => {
            // Db = (g^a (P + P') + (Q + Q')) / (g^a + g^b), and Da = Db + (P + P').
            let (ga, gb) = (gf::exp(a), gf::exp(b));
            if ga == gb {
                return false;
            }
            let inverse = gf::inv(ga ^ gb);
            for i in 0..len {
                let px = pp[i] ^ p_sum[i];
                let qx = qq[i] ^ q_sum[i];
                let db = gf::mul(inverse, gf::mul(ga, px) ^ qx);
                buf[i] = if target_power == b { db } else { db ^ px };
            }
            true
        }
        _ => false,
    }
}

/// Where a RAID5 layout over `n` members puts data chunk `k` of stripe `stripe`, and the
/// stripe's parity: member roles.
fn raid5_place(layout: u32, n: u64, stripe: u64, k: u64) -> (u64, u64) {
    match layout {
        LEFT_ASYMMETRIC | RIGHT_ASYMMETRIC => {
            let p = if layout == LEFT_ASYMMETRIC {
                n - 1 - stripe % n
            } else {
                stripe % n
            };
            (if k >= p { k + 1 } else { k }, p)
        }
        LEFT_SYMMETRIC | RIGHT_SYMMETRIC => {
            let p = if layout == LEFT_SYMMETRIC {
                n - 1 - stripe % n
            } else {
                stripe % n
            };
            ((p + 1 + k) % n, p)
        }
        PARITY_0 => (k + 1, 0),
        _ => (k, n - 1),
    }
}

impl ReadAt for MdArray {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if offset
            .checked_add(<[u8]>::len(buf) as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{} bytes at {offset} pass the end of the MD array",
                    <[u8]>::len(buf)
                ),
            ));
        }
        let mut done = 0usize;
        while done < <[u8]>::len(buf) {
            let pos = offset + done as u64;
            let (role, at, run) = self.locate(pos);
            let n = (run as usize).min(<[u8]>::len(buf) - done);
            self.read_member(role, pos, at, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

/// Arithmetic in GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), RAID6's.
mod gf {
    use std::sync::LazyLock;

    /// Powers of the generator 2 (`EXP[i] = 2^i`, twice over so sums of logarithms
    /// need no reduction) and their logarithms.
    static TABLES: LazyLock<([u8; 512], [u8; 256])> = LazyLock::new(|| {
        let mut exp = [0u8; 512];
        let mut log = [0u8; 256];
        let mut x: u16 = 1;
        for i in 0..255 {
            exp[i] = x as u8;
            exp[i + 255] = x as u8;
            log[x as usize] = i as u8;
            x <<= 1;
            if x & 0x100 != 0 {
                x ^= 0x11d;
            }
        }
        (exp, log)
    });

    /// `2^i`.
    pub(super) fn exp(i: usize) -> u8 {
        TABLES.0[i % 255]
    }

    pub(super) fn mul(a: u8, b: u8) -> u8 {
        if a == 0 || b == 0 {
            return 0;
        }
        let (exp, log) = &*TABLES;
        exp[usize::from(log[usize::from(a)]) + usize::from(log[usize::from(b)])]
    }

    /// The inverse of `a`, which is not zero.
    pub(super) fn inv(a: u8) -> u8 {
        let (exp, log) = &*TABLES;
        exp[255 - usize::from(log[usize::from(a)])]
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn field_laws_hold() {
            for a in 1..=255u8 {
                assert_eq!(mul(a, inv(a)), 1, "{a}");
                assert_eq!(mul(a, 1), a);
                assert_eq!(mul(a, 0), 0);
                // Multiplying by 2 is a shift with the polynomial folded in.
                let doubled = (u16::from(a) << 1) ^ if a & 0x80 != 0 { 0x11d } else { 0 };
                assert_eq!(mul(a, 2), doubled as u8, "{a}");
            }
            for (a, b, c) in [(3u8, 7u8, 200u8), (0x53, 0xca, 0x11), (255, 254, 2)] {
                assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c));
                assert_eq!(mul(mul(a, b), c), mul(a, mul(b, c)));
            }
        }
    }
}
