//! MD (software RAID) members laid out by `tests/scripts/md-member.py` as mdadm lays them
//! out (checked against `mdadm --examine` when the script was written): a RAID1 member's
//! array data opens as the file system it holds, and damaged members and members of
//! striped arrays are refused with the reason.

use std::path::{Path, PathBuf};

use tessera_disk_fs::{FsError, MdArray, Slice, open_volume, read_md_member};
use tessera_disk_image::ReadAt;

use crate::support::*;

/// The member `name` in `dir` of an array holding `data`, made by the script with `extra`
/// arguments, as bytes.
fn member(dir: &Path, data: &Path, name: &str, extra: &[&str]) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scripts/md-member.py");
    let out: PathBuf = dir.join(name);
    let mut args = vec![
        script.to_str().unwrap(),
        data.to_str().unwrap(),
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("python3", &args, &[]);
    std::fs::read(out).unwrap()
}

#[test]
fn raid1_members_read_as_their_array_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"raid\n").unwrap();
    let ext4 = dir.path().join("array.ext4");
    mkfs_ext("ext4", &src, &ext4, 8, &[]);
    let array = std::fs::read(&ext4).unwrap();

    // Metadata 1.2 (the superblock 4 KiB in) and 1.1 (at the start): the array's data
    // from the data offset on is the file system.
    for (metadata, offset) in [("1.2", 4096), ("1.1", 0)] {
        let bytes = member(dir.path(), &ext4, "m", &["--metadata", metadata]);
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

    // A member being rebuilt, and one of a RAID5 array.
    for (extra, expect) in [
        (&["--recovering"][..], "rebuilt"),
        (&["--level", "5", "--disks", "3"][..], "RAID5"),
    ] {
        let mut bytes = member(dir.path(), &ext4, "x", extra);
        let err = read_md_member(&mut bytes, "x").unwrap_err();
        assert!(
            matches!(&err, FsError::Unsupported { detail, .. } if detail.contains(expect)),
            "{extra:?}: {err}"
        );
    }
    // A one-member linear array holds all its data.
    let mut bytes = member(dir.path(), &ext4, "l", &["--level", "-1", "--disks", "1"]);
    assert!(read_md_member(&mut bytes, "l").unwrap().is_some());

    // A member cut short of its data.
    let bytes = member(dir.path(), &ext4, "c", &[]);
    let mut cut = bytes[..bytes.len() - (1 << 20)].to_vec();
    let err = read_md_member(&mut cut, "c").unwrap_err();
    assert!(err.to_string().contains("pass the end"), "{err}");
}

#[test]
fn mutated_md_superblocks_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, pattern(64 << 10, 3)).unwrap();
    let good = member(dir.path(), &data, "m", &[]);
    let mut state = 7u64;
    for round in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + round % 4 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = 4096 + (state >> 33) as usize % 512;
            bytes[at] = (state >> 13) as u8;
        }
        // With the checksum made right again half of the time, so the fields are used.
        if round % 2 == 0 {
            let max_dev = u32::from_le_bytes(bytes[4096 + 0xdc..4096 + 0xe0].try_into().unwrap());
            let end = (4096 + 256 + 2 * max_dev.min(1920) as usize).min(bytes.len());
            let mut sum: u64 = bytes[4096..end]
                .chunks_exact(4)
                .enumerate()
                .filter(|&(i, _)| i != 0xd8 / 4)
                .map(|(_, w)| u64::from(u32::from_le_bytes(w.try_into().unwrap())))
                .sum();
            if (end - 4096) % 4 == 2 {
                sum += u64::from(u16::from_le_bytes([bytes[end - 2], bytes[end - 1]]));
            }
            let csum = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
            bytes[4096 + 0xd8..4096 + 0xdc].copy_from_slice(&csum.to_le_bytes());
        }
        let _ = read_md_member(&mut bytes, "m");
    }
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
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"striped\n").unwrap();
    let ext4 = dir.path().join("array.ext4");
    mkfs_ext("ext4", &src, &ext4, 8, &[]);
    let array = std::fs::read(&ext4).unwrap();
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
                let mut bytes = member(dir.path(), &ext4, &format!("m{role}"), &args);
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
        let mut bytes = member(dir.path(), &ext4, "r", &args);
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
