//! Linux software RAID (MD, `mdadm`) members with version 1 metadata: the superblock that
//! says where the array's data starts on the member and which part of the array it is,
//! so that the file system or LVM2 physical volume of an array can be read through its
//! members, as from a partition. The layout is the kernel's (`include/uapi/linux/raid/md_p.h`).
//!
//! ```text
//! superblock (little-endian), at byte 0 (metadata 1.1) or 4096 (1.2) of the member:
//!   0x00 MAGIC(u32 = 0xa92b4efc) | 0x04 MAJOR_VERSION(u32 = 1) | 0x08 FEATURE_MAP(u32)
//!   0x10 SET_UUID(16) | 0x20 SET_NAME(32) | 0x48 LEVEL(i32) | 0x50 SIZE(u64, sectors)
//!   0x58 CHUNKSIZE(u32, sectors) | 0x5c RAID_DISKS(u32) | 0x80 DATA_OFFSET(u64, sectors)
//!   0x88 DATA_SIZE(u64, sectors) | 0x90 SUPER_OFFSET(u64, sectors) | 0xa0 DEV_NUMBER(u32)
//!   0xd8 SB_CSUM(u32) | 0xdc MAX_DEV(u32)
//!   0x100 DEV_ROLES(u16 * MAX_DEV: each device's role, 0xfffe and above none)
//! ```
//!
//! The checksum is the sum of the superblock's little-endian 32-bit words (with `SB_CSUM`
//! taken as zero) over its 256 bytes and the roles, folded from 64 to 32 bits. Metadata
//! 0.90 and 1.0 lie at the end of the member with the data from its first byte, so their
//! RAID1 members read as the file system they hold without any of this.
//!
//! A RAID1 (or one-member linear) array is read through any one member: every member
//! holds all the data. A RAID0 array of equal members (one zone, as mdadm makes it) and a
//! linear array are read through all their members together ([`MdArray`]): RAID0 deals
//! the array's chunks to the members in turn, by role; linear puts the members one after
//! the other. Members of RAID4, 5, 6 and 10 arrays, a member being rebuilt, and an array in
//! the middle of a reshape are refused with the reason.

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
/// A role that is not an active member's (a spare's, a faulty one's).
const NO_ROLE: u16 = 0xfffe;

/// A member of an MD array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdMember {
    /// The metadata version: `1.1` or `1.2`.
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
        !self.holds_all() && matches!(self.level, RAID0 | LINEAR)
    }
}

/// The MD superblock of `reader` (a partition or a disk), `None` if it has none;
/// `what` names it in errors.
pub fn read_md_member(reader: &mut dyn ReadAt, what: &str) -> Result<Option<MdMember>, FsError> {
    let size = reader.len();
    for (at, version) in PLACES {
        if at + FIXED as u64 > size {
            continue;
        }
        let mut sb = vec![0u8; FIXED];
        read_exact(reader, what, at, &mut sb)?;
        if le32(&sb, 0) != MAGIC {
            continue;
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
        let computed = checksum(&whole);
        if stored != computed {
            return Err(corrupt(
                0xd8,
                format!(
                    "MD superblock checksum {stored:#010x}, where its bytes give {computed:#010x}"
                ),
            ));
        }
        let sectors = |field: usize| le64(&whole, field).checked_mul(SECTOR);
        let (Some(data_offset), Some(data_length)) = (sectors(0x80), sectors(0x50)) else {
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
            level: le32(&whole, 0x48) as i32,
            members: le32(&whole, 0x5c),
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
        if !member.holds_all() && !member.needs_all() {
            return Err(unsupported(format!(
                "this is one of the {} members of MD array {} ({}), whose data and parity \
                 are spread over all of them; RAID1, RAID0 and linear arrays are read",
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
        if member.level == RAID0 && (member.chunk == 0 || !member.chunk.is_power_of_two()) {
            return Err(corrupt(
                0x58,
                format!(
                    "MD RAID0 chunk of {} bytes is not a power of two",
                    member.chunk
                ),
            ));
        }
        return Ok(Some(member));
    }
    Ok(None)
}

/// The sum of `sb`'s little-endian 32-bit words, its checksum field taken as zero, folded
/// to 32 bits as the kernel does (`calc_sb_1_csum`).
fn checksum(sb: &[u8]) -> u32 {
    let mut sum: u64 = sb
        .chunks_exact(4)
        .enumerate()
        .filter(|&(i, _)| i != 0xd8 / 4)
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

/// A RAID0 or linear array read through all its members.
pub struct MdArray {
    level: i32,
    chunk: u64,
    /// The members by role, each with where the array's data starts on it and how much
    /// of it is there.
    members: Vec<Placed>,
    len: u64,
}

impl MdArray {
    /// Puts the members of one array together: `members` holds each with its superblock,
    /// in any order; `what` names the array in errors. Every role must be there once,
    /// and a RAID0 array's members must be of one size (one zone).
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
        let mut by_role: Vec<Option<Placed>> = (0..count).map(|_| None).collect();
        for (member, reader) in members {
            let same = member.uuid == first.uuid && member.level == level && member.chunk == chunk;
            let role = member.role.filter(|&r| r < count).ok_or_else(|| {
                unsupported(format!(
                    "a member of MD array {} has no role in it",
                    first.name
                ))
            })?;
            if !same || by_role[role as usize].is_some() {
                return Err(unsupported(format!(
                    "the members found for MD array {} ({}) disagree about it, or two claim \
                     role {role}",
                    first.name, first.uuid
                )));
            }
            let length = match level {
                RAID0 => member.data_length - member.data_length % chunk,
                _ => member.data_length,
            };
            by_role[role as usize] = Some((reader, member.data_offset, length));
        }
        let mut ordered = Vec::with_capacity(by_role.len());
        for (role, member) in by_role.into_iter().enumerate() {
            ordered.push(member.ok_or_else(|| {
                unsupported(format!(
                    "MD array {} ({}) has {count} members, and the one of role {role} is not \
                     among the disks",
                    first.name, first.uuid
                ))
            })?);
        }
        if level == RAID0 && ordered.windows(2).any(|w| w[0].2 != w[1].2) {
            return Err(unsupported(format!(
                "the members of MD RAID0 array {} differ in size, which spreads its data over \
                 several zones; arrays of equal members are read",
                first.name
            )));
        }
        let len = ordered.iter().map(|m| m.2).sum();
        Ok(MdArray {
            level,
            chunk,
            members: ordered,
            len,
        })
    }

    /// The member holding the array's byte at `pos`, the offset on it, and how many bytes
    /// from there on it holds in a row.
    fn locate(&self, pos: u64) -> (usize, u64, u64) {
        if self.level == RAID0 {
            let n = self.members.len() as u64;
            let chunk = pos / self.chunk;
            let within = pos % self.chunk;
            let member = (chunk % n) as usize;
            let at = (chunk / n) * self.chunk + within;
            return (member, self.members[member].1 + at, self.chunk - within);
        }
        let mut start = 0;
        for (i, (_, offset, length)) in self.members.iter().enumerate() {
            if pos < start + length {
                return (i, offset + pos - start, start + length - pos);
            }
            start += length;
        }
        unreachable!("positions are below the array's length")
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
            let (member, at, run) = self.locate(offset + done as u64);
            let n = (run as usize).min(<[u8]>::len(buf) - done);
            self.members[member]
                .0
                .read_exact_at(at, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}
