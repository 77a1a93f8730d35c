//! MD (software RAID) members laid out by `tests/scripts/md-member.py` as mdadm lays them
//! out (checked against `mdadm --examine` when the script was written): a RAID1 member's
//! array data opens as the file system it holds; RAID0, linear, RAID4, 5, 6 and 10 arrays
//! of every layout read through all their members, or with members missing as far as
//! their parity or copies stand in for them; damaged members are refused with the reason.

use std::path::{Path, PathBuf};

use tessera_disk_fs::{FsError, MdArray, Slice, open_volume, read_md_member};
use tessera_disk_image::ReadAt;

use crate::support::*;

#[test]
fn raid1_members_read_as_their_array_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ext4, array) = hostname_fs(dir.path(), "raid", false);

    // Metadata 1.2 (the superblock 4 KiB in) and 1.1 (at the start): the array's data
    // from the data offset on is the file system.
    for (metadata, offset) in [("1.2", 4096), ("1.1", 0)] {
        let bytes = md_member(dir.path(), &ext4, "m", &["--metadata", metadata]);
        let found = read_md_member(&mut bytes.clone(), "m").unwrap().unwrap();
        assert_eq!(found.version, metadata);
        assert_eq!((found.level, found.members), (1, 2));
        assert_eq!(found.name, "host:md0");
        assert_eq!(found.data_offset, 1 << 20);
        assert_eq!(found.data_length, array.len() as u64);
        let data = Slice::new(bytes.clone(), found.data_offset, found.data_length).unwrap();
        let mut volume = open_volume(Box::new(data), "m").unwrap();
        let mut buf = [0u8; 16];
        let n = volume.read_file("etc/hostname", 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"raid\n");

        // A changed byte fails the checksum, named at its field.
        let mut damaged = bytes.clone();
        damaged[offset + 0x50] ^= 1;
        let err = read_md_member(&mut damaged, "m").unwrap_err();
        assert!(
            matches!(&err, FsError::Corrupt { offset: Some(o), detail, .. }
                if *o == offset as u64 + 0xd8 && detail.contains("checksum")),
            "{err}"
        );
    }

    // Not a member at all: the file system itself.
    assert_eq!(read_md_member(&mut array.clone(), "fs").unwrap(), None);

    // A member being rebuilt, and members of arrays of layouts the kernel does not have.
    for (extra, expect) in [
        (&["--recovering"][..], "rebuilt"),
        (
            &["--level", "6", "--disks", "4", "--layout", "11"][..],
            "layout 11",
        ),
        (
            &["--level", "5", "--disks", "3", "--layout", "7"][..],
            "layout 7",
        ),
    ] {
        let mut bytes = md_member(dir.path(), &ext4, "x", extra);
        let err = read_md_member(&mut bytes, "x").unwrap_err();
        assert!(
            matches!(&err, FsError::Unsupported { detail, .. } if detail.contains(expect)),
            "{extra:?}: {err}"
        );
    }
    // A one-member linear array holds all its data.
    let mut bytes = md_member(dir.path(), &ext4, "l", &["--level", "-1", "--disks", "1"]);
    assert!(read_md_member(&mut bytes, "l").unwrap().is_some());

    // A member cut short of its data.
    let bytes = md_member(dir.path(), &ext4, "c", &[]);
    let mut cut = bytes[..bytes.len() - (1 << 20)].to_vec();
    let err = read_md_member(&mut cut, "c").unwrap_err();
    assert!(err.to_string().contains("pass the end"), "{err}");
}

/// Steps the fuzz tests' linear congruential generator (Knuth's MMIX constants) and
/// gives its new state.
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state
}

#[test]
fn mutated_md_superblocks_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, pattern(64 << 10, 3)).unwrap();
    let good = md_member(dir.path(), &data, "m", &[]);
    let mut state = 7u64;
    for round in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + round % 4 {
            let state = lcg(&mut state);
            let at = 4096 + (state >> 33) as usize % 512;
            bytes[at] = (state >> 13) as u8;
        }
        // With the checksum made right again half of the time, so the fields are used.
        if round % 2 == 0 {
            fix_checksum(&mut bytes);
        }
        let _ = read_md_member(&mut bytes, "m");
    }
}

/// An 8 MiB ext4 image in `dir` whose `etc/hostname` holds `name` and a newline (and
/// with `big`, a 3 MiB `etc/big` too): its path and its bytes.
fn hostname_fs(dir: &Path, name: &str, big: bool) -> (PathBuf, Vec<u8>) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), format!("{name}\n")).unwrap();
    if big {
        std::fs::write(src.join("etc/big"), pattern(3 << 20, 9)).unwrap();
    }
    let ext4 = dir.join("array.ext4");
    mkfs_ext("ext4", &src, &ext4, 8, &[]);
    let bytes = std::fs::read(&ext4).unwrap();
    (ext4, bytes)
}

/// Reads `etc/hostname` of the file system in `array`.
fn hostname(array: Box<dyn ReadAt>) -> Vec<u8> {
    let mut volume = open_volume(array, "md").unwrap();
    let mut buf = [0u8; 16];
    let n = volume.read_file("etc/hostname", 0, &mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn raid0_and_linear_arrays_read_through_all_their_members() {
    let dir = tempfile::tempdir().unwrap();
    let (ext4, array) = hostname_fs(dir.path(), "striped", false);
    let uuid = ["--uuid", "00112233445566778899aabbccddeeff"];
    for (level, disks) in [("0", 2), ("0", 4), ("-1", 2)] {
        let members: Vec<_> = (0..disks)
            .map(|role| {
                let role = role.to_string();
                let count = disks.to_string();
                let args = [
                    &uuid[..],
                    &["--level", level, "--disks", &count, "--role", &role],
                ]
                .concat();
                let mut bytes = md_member(dir.path(), &ext4, &format!("m{role}"), &args);
                let found = read_md_member(&mut bytes, "m").unwrap().unwrap();
                assert!(found.needs_all(), "{found:?}");
                (found, Box::new(bytes) as Box<dyn ReadAt>)
            })
            .collect();
        // In any order.
        let mut shuffled = members;
        shuffled.reverse();
        let mut md = MdArray::assemble(shuffled, "md").unwrap();
        assert_eq!(md.len(), array.len() as u64, "level {level}");
        let mut all = vec![0u8; array.len()];
        md.read_exact_at(0, &mut all).unwrap();
        assert!(all == array, "level {level} with {disks} members");
        assert_eq!(hostname(Box::new(md)), b"striped\n");
    }

    // A member missing, and a member of another array among them.
    let raid0 = |role: &str, uuid: &str| {
        let args = ["--uuid", uuid, "--level", "0", "--role", role];
        let mut bytes = md_member(dir.path(), &ext4, "r", &args);
        (
            read_md_member(&mut bytes, "r").unwrap().unwrap(),
            Box::new(bytes) as Box<dyn ReadAt>,
        )
    };
    let err = MdArray::assemble(vec![raid0("0", &"11".repeat(16))], "md")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("role 1 is not among the disks"),
        "{err}"
    );
    let err = MdArray::assemble(
        vec![raid0("0", &"11".repeat(16)), raid0("1", &"22".repeat(16))],
        "md",
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("disagree"), "{err}");
}

/// The members of an array of `level` over `disks` members with `layout` holding `data`
/// (a file), each read back with its superblock.
fn array_members(
    dir: &Path,
    data: &Path,
    level: &str,
    disks: usize,
    layout: &str,
) -> Vec<(tessera_disk_fs::MdMember, Vec<u8>)> {
    let count = disks.to_string();
    (0..disks)
        .map(|role| {
            let role = role.to_string();
            let args = [
                "--uuid",
                "00112233445566778899aabbccddeeff",
                "--level",
                level,
                "--disks",
                &count,
                "--role",
                &role,
                "--layout",
                layout,
                "--chunk",
                "128",
            ];
            let mut bytes = md_member(dir, data, &format!("m{role}"), &args);
            let found = read_md_member(&mut bytes, "m").unwrap().unwrap();
            assert!(found.needs_all(), "{found:?}");
            (found, bytes)
        })
        .collect()
}

/// Assembles `members` but those of the roles in `without`, in reverse order.
fn assemble_without(
    members: &[(tessera_disk_fs::MdMember, Vec<u8>)],
    without: &[usize],
) -> Result<MdArray, FsError> {
    let chosen = members
        .iter()
        .enumerate()
        .rev()
        .filter(|(role, _)| !without.contains(role))
        .map(|(_, (found, bytes))| (found.clone(), Box::new(bytes.clone()) as Box<dyn ReadAt>))
        .collect();
    MdArray::assemble(chosen, "md")
}

#[test]
fn parity_and_mirrored_stripes_read_in_every_layout_and_with_members_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, fs) = hostname_fs(dir.path(), "parity", true);

    // (level, members, layouts): RAID4, RAID5's six layouts, RAID6's fourteen (DDF's
    // three among them), RAID10 with near, far and offset copies.
    let cases: &[(&str, usize, &[&str])] = &[
        ("4", 3, &["0"]),
        ("5", 3, &["0", "1", "2", "3", "4", "5"]),
        ("5", 4, &["0", "2"]),
        (
            "6",
            4,
            &[
                "0", "1", "2", "3", "4", "5", "8", "9", "10", "16", "17", "18", "19", "20",
            ],
        ),
        ("6", 5, &["2", "0", "8", "9", "10"]),
        ("10", 2, &["0x102", "0x201", "0x10201"]),
        ("10", 3, &["0x102", "0x201", "0x10201", "0x103"]),
        ("10", 4, &["0x102"]),
    ];
    let chunk = 64 << 10;
    for &(level, disks, layouts) in cases {
        // The array's data padded to whole stripes (RAID10: rows of chunks).
        let data_disks = match level {
            "4" | "5" => disks - 1,
            "6" => disks - 2,
            _ => disks,
        };
        let mut array = fs.clone();
        array.resize(
            array.len().div_ceil(chunk * data_disks) * chunk * data_disks,
            0,
        );
        let data = dir.path().join("data");
        std::fs::write(&data, &array).unwrap();
        for &layout in layouts {
            let case = format!("RAID{level} of {disks}, layout {layout}");
            let members = array_members(dir.path(), &data, level, disks, layout);
            let check = |mut md: MdArray, what: &str| {
                assert_eq!(md.len(), array.len() as u64, "{case}{what}");
                let mut all = vec![0u8; array.len()];
                md.read_exact_at(0, &mut all).unwrap();
                assert!(all == array, "{case}{what}: the data differs");
                // Reads across chunk ends and at odd offsets.
                let mut piece = vec![0u8; chunk + 4097];
                md.read_exact_at(chunk as u64 - 1234, &mut piece).unwrap();
                assert!(
                    piece[..] == array[chunk - 1234..2 * chunk + 2863],
                    "{case}{what}"
                );
                assert_eq!(hostname(Box::new(md)), b"parity\n", "{case}{what}");
            };
            let md = assemble_without(&members, &[]).unwrap();
            assert!(md.missing().is_empty());
            check(md, "");
            // Each member missing in turn: parity rebuilds it (RAID4/5/6); another near
            // copy holds it (RAID10 n2, n3); far and offset copies are not read. RAID6
            // also without each pair: P and Q, or Q alone, rebuild them.
            for gone in 0..disks {
                let without = format!(" without role {gone}");
                match assemble_without(&members, &[gone]) {
                    Ok(md) => {
                        assert_eq!(md.missing(), vec![gone as u32]);
                        check(md, &without);
                    }
                    Err(err) => {
                        assert!(
                            level == "10" && layout != "0x102" && layout != "0x103",
                            "{case}{without}: {err}"
                        );
                        assert!(
                            err.to_string().contains("on no other member")
                                || err.to_string().contains(&format!("role {gone}")),
                            "{err}"
                        );
                    }
                }
            }
            if level == "6" {
                for a in 0..disks {
                    for b in a + 1..disks {
                        let md = assemble_without(&members, &[a, b]).unwrap();
                        check(md, &format!(" without roles {a} and {b}"));
                    }
                }
            }
        }
    }

    // Members missing beyond what parity makes up for: two of RAID5, three of RAID6,
    // refused with the roles named; RAID10 reads on while each chunk keeps a copy.
    let mut array = fs.clone();
    array.resize(array.len().div_ceil(chunk * 2) * chunk * 2, 0);
    let data = dir.path().join("data");
    std::fs::write(&data, &array).unwrap();
    let raid6 = array_members(dir.path(), &data, "6", 4, "2");
    let err = assemble_without(&raid6, &[0, 1, 3]).err().unwrap();
    assert!(err.to_string().contains("roles 0, 1, 3"), "{err}");
    let raid5 = array_members(dir.path(), &data, "5", 3, "2");
    let err = assemble_without(&raid5, &[1, 2]).err().unwrap();
    assert!(err.to_string().contains("roles 1, 2"), "{err}");
    let raid10 = array_members(dir.path(), &data, "10", 4, "0x102");
    let mut md = assemble_without(&raid10, &[0, 3]).unwrap();
    let mut all = vec![0u8; array.len()];
    md.read_exact_at(0, &mut all).unwrap();
    assert!(all == array, "RAID10 without roles 0 and 3");
    let err = assemble_without(&raid10, &[2, 3]).err().unwrap();
    assert!(err.to_string().contains("on no other member"), "{err}");
}

/// Sets the checksum of the superblock at 4096 in `bytes` right again.
fn fix_checksum(bytes: &mut [u8]) {
    let max_dev = u32::from_le_bytes(bytes[4096 + 0xdc..4096 + 0xe0].try_into().unwrap());
    let end = (4096 + 256 + 2 * max_dev.min(1920) as usize).min(<[u8]>::len(bytes));
    let csum = md_checksum(&bytes[4096..end], 0xd8 / 4);
    bytes[4096 + 0xd8..4096 + 0xdc].copy_from_slice(&csum.to_le_bytes());
}

/// An MD superblock's checksum, as the kernel computes it: the sum of its little-endian
/// 32-bit words (a last half word too) but word `skip`, folded to 32 bits.
fn md_checksum(sb: &[u8], skip: usize) -> u32 {
    let mut sum: u64 = sb
        .chunks_exact(4)
        .enumerate()
        .filter(|&(i, _)| i != skip)
        .map(|(_, w)| u64::from(u32::from_le_bytes(w.try_into().unwrap())))
        .sum();
    if sb.len() % 4 == 2 {
        sum += u64::from(u16::from_le_bytes([sb[sb.len() - 2], sb[sb.len() - 1]]));
    }
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

#[test]
fn striped_arrays_of_mutated_members_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, pattern(768 << 10, 5)).unwrap();
    let mut sets = Vec::new();
    for (level, disks, layout) in [("5", 3, "2"), ("6", 4, "18"), ("10", 3, "0x102")] {
        sets.push(array_members(dir.path(), &data, level, disks, layout));
    }
    // The fields the array's geometry comes from: level, layout, size, chunk, members,
    // data offset, role.
    let fields = [0x48, 0x4c, 0x50, 0x58, 0x5c, 0x80, 0xa0, 0x100];
    let mut state = 11u64;
    let mut next = || lcg(&mut state) >> 33;
    for round in 0..1500 {
        let set = &sets[round % sets.len()];
        let mut members: Vec<_> = set.iter().map(|(_, bytes)| bytes.clone()).collect();
        let victim = next() as usize % members.len();
        let field = fields[next() as usize % fields.len()];
        let value: u32 = match next() % 4 {
            0 => next() as u32,
            1 => next() as u32 % 24,
            2 => u32::MAX - next() as u32 % 4,
            _ => 1 << (next() % 32),
        };
        let at = 4096 + field;
        members[victim][at..at + 4].copy_from_slice(&value.to_le_bytes());
        fix_checksum(&mut members[victim]);
        // Dropping a member now and then, so degraded reads run too.
        let drop = (next() % 3 == 0).then(|| next() as usize % members.len());
        let mut found = Vec::new();
        for (role, mut bytes) in members.into_iter().enumerate() {
            if Some(role) == drop {
                continue;
            }
            if let Ok(Some(member)) = read_md_member(&mut bytes, "m") {
                found.push((member, Box::new(bytes) as Box<dyn ReadAt>));
            }
        }
        if found.is_empty() {
            continue;
        }
        if let Ok(mut md) = MdArray::assemble(found, "md") {
            let len = md.len();
            let mut buf = vec![0u8; 96 << 10];
            for at in [0, len / 3, len.saturating_sub(buf.len() as u64)] {
                let n = (buf.len() as u64).min(len - at.min(len)) as usize;
                let _ = md.read_exact_at(at, &mut buf[..n]);
            }
        }
    }
}

/// The version 0.90 superblock's place in a member of `len` bytes.
fn v090_place(len: usize) -> usize {
    (len & !0xffff) - 0x10000
}

/// Sets the checksum of the 0.90 superblock of `bytes` right again.
fn fix_v090_checksum(bytes: &mut [u8]) {
    let at = v090_place(<[u8]>::len(bytes));
    let csum = md_checksum(&bytes[at..at + 4096], 38);
    bytes[at + 4 * 38..at + 4 * 39].copy_from_slice(&csum.to_le_bytes());
}

#[test]
fn members_with_their_superblock_at_the_end_read_too() {
    let dir = tempfile::tempdir().unwrap();
    let (ext4, array) = hostname_fs(dir.path(), "at-the-end", false);
    let uuid = ["--uuid", "00112233445566778899aabbccddeeff"];
    for metadata in ["1.0", "0.90"] {
        // RAID1: the data from the first byte, all of it.
        let mut bytes = md_member(
            dir.path(),
            &ext4,
            "m",
            &[&uuid[..], &["--metadata", metadata]].concat(),
        );
        let found = read_md_member(&mut bytes.clone(), "m").unwrap().unwrap();
        assert_eq!(found.version, metadata);
        assert_eq!((found.level, found.members, found.role), (1, 2, Some(0)));
        assert_eq!(
            (found.data_offset, found.data_length),
            (0, array.len() as u64)
        );
        if metadata == "0.90" {
            assert_eq!(found.uuid, "33221100:77665544:bbaa9988:ffeeddcc");
        }
        let data = Slice::new(bytes.clone(), 0, found.data_length).unwrap();
        assert_eq!(hostname(Box::new(data)), b"at-the-end\n");

        // A changed byte fails the checksum, named at its field.
        let (sb, csum) = if metadata == "1.0" {
            let at = ((bytes.len() as u64 / 512 - 16) & !7) * 512;
            (at, at + 0xd8)
        } else {
            let at = v090_place(bytes.len()) as u64;
            (at, at + 4 * 38)
        };
        bytes[sb as usize + 0x50] ^= 1;
        let err = read_md_member(&mut bytes, "m").unwrap_err();
        assert!(
            matches!(&err, FsError::Corrupt { offset: Some(o), detail, .. }
                if *o == csum && detail.contains("checksum")),
            "{metadata}: {err}"
        );

        // Arrays read through their members: RAID0, linear, and RAID5 whole and without
        // a member.
        for (level, disks) in [("0", 2), ("-1", 2), ("5", 3)] {
            let count = disks.to_string();
            let members: Vec<_> = (0..disks)
                .map(|role| {
                    let role = role.to_string();
                    let args = [
                        &uuid[..],
                        &["--metadata", metadata, "--level", level, "--disks", &count],
                        &["--role", &role],
                    ]
                    .concat();
                    let mut bytes = md_member(dir.path(), &ext4, &format!("m{role}"), &args);
                    let found = read_md_member(&mut bytes, "m").unwrap().unwrap();
                    assert_eq!(found.version, metadata);
                    (found, bytes)
                })
                .collect();
            let case = format!("metadata {metadata}, level {level}");
            let mut md = assemble_without(&members, &[]).unwrap();
            assert_eq!(md.len(), array.len() as u64, "{case}");
            let mut all = vec![0u8; array.len()];
            md.read_exact_at(0, &mut all).unwrap();
            assert!(all == array, "{case}");
            if level == "5" {
                let md = assemble_without(&members, &[0]).unwrap();
                assert_eq!(hostname(Box::new(md)), b"at-the-end\n", "{case}");
            }
        }
    }

    // A 0.90 member not in sync (being rebuilt) is refused; so is a reshape (0.91).
    let mut bytes = md_member(
        dir.path(),
        &ext4,
        "r",
        &[
            "--metadata",
            "0.90",
            "--level",
            "5",
            "--disks",
            "3",
            "--recovering",
        ],
    );
    let err = read_md_member(&mut bytes.clone(), "r").unwrap_err();
    assert!(err.to_string().contains("rebuilt"), "{err}");
    let at = v090_place(bytes.len());
    bytes[at + 8..at + 12].copy_from_slice(&91u32.to_le_bytes());
    bytes[at + 4 * 996..at + 4 * 997].copy_from_slice(&6u32.to_le_bytes());
    fix_v090_checksum(&mut bytes);
    let err = read_md_member(&mut bytes, "r").unwrap_err();
    assert!(err.to_string().contains("reshaped"), "{err}");
}

#[test]
fn mutated_v090_superblocks_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, pattern(1 << 20, 4)).unwrap();
    let good: Vec<Vec<u8>> = (0..3)
        .map(|role| {
            let role = role.to_string();
            let args = [
                "--metadata",
                "0.90",
                "--level",
                "5",
                "--disks",
                "3",
                "--role",
                &role,
            ];
            md_member(dir.path(), &data, &format!("m{role}"), &args)
        })
        .collect();
    // Words the geometry comes from: level, size, raid disks, layout, chunk, this disk's
    // role and state; and any word now and then.
    let words = [7, 8, 10, 64, 65, 995, 996];
    let mut state = 5u64;
    let mut next = || lcg(&mut state) >> 33;
    for round in 0..1500 {
        let mut members = good.clone();
        let victim = next() as usize % members.len();
        let word = if round % 5 == 0 {
            next() as usize % 1024
        } else {
            words[next() as usize % words.len()]
        };
        let value = match next() % 3 {
            0 => next() as u32,
            1 => next() as u32 % 32,
            _ => 1 << (next() % 32),
        };
        let at = v090_place(members[victim].len()) + 4 * word;
        members[victim][at..at + 4].copy_from_slice(&value.to_le_bytes());
        if round % 4 != 0 {
            fix_v090_checksum(&mut members[victim]);
        }
        let mut found = Vec::new();
        for mut bytes in members {
            if let Ok(Some(member)) = read_md_member(&mut bytes, "m") {
                found.push((member, Box::new(bytes) as Box<dyn ReadAt>));
            }
        }
        if let Some(first) = found.first().map(|(m, _)| m.clone())
            && first.needs_all()
            && let Ok(mut md) = MdArray::assemble(found, "md")
        {
            let len = md.len();
            let mut buf = vec![0u8; 80 << 10];
            let n = (buf.len() as u64).min(len) as usize;
            let _ = md.read_exact_at(len - n as u64, &mut buf[..n]);
        }
    }
}

/// A RAID0 array of members of unequal sizes (1, 4 and 4 chunks) spreads its data over
/// two zones, the second starting at chunk 3 over two members, where the kernel's two
/// layouts differ; each reads back equal to the data, given in the superblock, and one
/// that does not say is refused.
#[test]
fn raid0_arrays_of_unequal_members_read_through_their_zones() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = 64 << 10;
    let data_bytes = pattern(9 * chunk, 11);
    let data = dir.path().join("data");
    std::fs::write(&data, &data_bytes).unwrap();
    for layout in ["1", "2", "0"] {
        let members: Vec<_> = (0..3)
            .map(|role| {
                let role = role.to_string();
                let args = [
                    "--uuid",
                    "00112233445566778899aabbccddeeff",
                    "--level",
                    "0",
                    "--disks",
                    "3",
                    "--role",
                    &role,
                    "--chunk",
                    "128",
                    "--sizes",
                    "1,4,4",
                    "--layout",
                    layout,
                ];
                let mut bytes = md_member(dir.path(), &data, &format!("z{role}"), &args);
                let found = read_md_member(&mut bytes, "z").unwrap().unwrap();
                (found, bytes)
            })
            .collect();
        match assemble_without(&members, &[]) {
            Ok(mut md) => {
                assert_ne!(layout, "0");
                assert_eq!(md.len(), data_bytes.len() as u64, "layout {layout}");
                let mut all = vec![0u8; data_bytes.len()];
                md.read_exact_at(0, &mut all).unwrap();
                assert!(all == data_bytes, "layout {layout}: the data differs");
            }
            Err(err) => {
                assert_eq!(layout, "0");
                assert!(err.to_string().contains("zones"), "{err}");
            }
        }
    }
}
