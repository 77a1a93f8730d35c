//! LVM2 physical volumes made by the LVM tools (without device-mapper: the volumes are
//! never activated), with file systems written where LVM itself reports each logical
//! volume's extents to lie.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use tessera_disk_fs::{FsError, LogicalVolumeReader, open_volume, read_physical_volume};

use crate::support::*;

/// Runs an LVM tool without device-mapper.
fn lvm(command: &str, args: &[&str]) -> String {
    let mut all = vec!["--driverloaded", "n"];
    all.extend_from_slice(args);
    run(command, &all, &[("LVM_SUPPRESS_FD_WARNINGS", "1")])
}

/// A volume group name no other test uses at the same time.
fn group_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "tessera{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The extents of each logical volume of `group` as LVM reports them:
/// `(name, first LV extent, extents, first PV extent)`, the PV extents on `device`.
fn segments(group: &str, device: &str) -> Vec<(String, u64, u64, u64)> {
    let out = lvm(
        "lvs",
        &[
            "--noheadings",
            "--separator",
            ",",
            "-o",
            "lv_name,seg_start_pe,seg_size_pe,seg_pe_ranges",
            group,
        ],
    );
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.trim().split(',').collect();
            let (dev, range) = fields[3].split_once(':')?;
            if dev != device {
                return None;
            }
            let first = range.split('-').next()?.parse().ok()?;
            Some((
                fields[0].to_owned(),
                fields[1].parse().ok()?,
                fields[2].parse().ok()?,
                first,
            ))
        })
        .collect()
}

/// A physical volume image at `pv` (with a second PV at `other` in the same group):
/// `root` (16 MiB in two runs of extents, ext4 of `src`), `data` (6 MiB, ext2 of `src`)
/// and `elsewhere` (4 MiB on the other PV). Returns the group's name. Needs root.
fn physical_volume(tmp: &Path, pv: &Path, other: &Path, src: &Path) -> String {
    let group = group_name();
    for (file, mib) in [(pv, 48), (other, 16)] {
        std::fs::File::create(file)
            .unwrap()
            .set_len(mib * MIB)
            .unwrap();
    }
    let (loop_a, loop_b) = (Loop::attach(pv), Loop::attach(other));
    let (a, b) = (loop_a.0.as_str(), loop_b.0.as_str());
    lvm("pvcreate", &["-q", a, b]);
    lvm("vgcreate", &["-q", "-s", "1m", &group, a]);
    let lv = |args: &[&str]| {
        let mut all = vec!["-q", "--activate", "n", "--zero", "n"];
        all.extend_from_slice(args);
        lvm("lvcreate", &all);
    };
    lv(&["-L", "12m", "-n", "root", &group, a]);
    lv(&["-L", "6m", "-n", "data", &group, a]);
    lvm(
        "lvextend",
        &["-q", "-L", "+4m", &format!("{group}/root"), a],
    );
    lvm("vgextend", &["-q", &group, b]);
    lv(&["-L", "4m", "-n", "elsewhere", &group, b]);
    let pe_start: u64 = lvm(
        "pvs",
        &[
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pe_start",
            a,
        ],
    )
    .trim()
    .parse()
    .unwrap();
    let runs = segments(&group, a);
    drop((loop_a, loop_b));

    let root = tmp.join("root.ext4");
    mkfs_ext("ext4", src, &root, 16, &[]);
    let data = tmp.join("data.ext2");
    mkfs_ext("ext2", src, &data, 6, &[]);
    let file = std::fs::OpenOptions::new().write(true).open(pv).unwrap();
    let mut placed = 0;
    for (name, start, count, first) in runs {
        let image = match name.as_str() {
            "root" => &root,
            "data" => &data,
            other => panic!("unexpected volume {other}"),
        };
        let bytes = read_bytes(image);
        let from = (start * MIB) as usize;
        let piece = &bytes[from..from + (count * MIB) as usize];
        file.write_all_at(piece, pe_start + first * MIB).unwrap();
        placed += count;
    }
    assert_eq!(placed, 22, "LVM placed root and data in {placed} extents");
    group
}

fn small_tree(src: &Path) {
    source_tree(
        src,
        &Tree {
            big: 2 * MIB as usize + 77,
            with_symlinks: true,
            many: 40,
            sparse: true,
        },
    );
}

#[test]
fn logical_volumes_read_like_their_sources() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: making LVM physical volumes needs loop devices (root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    small_tree(&src);
    let (pv, other) = (tmp.path().join("pv.img"), tmp.path().join("other.img"));
    let group = physical_volume(tmp.path(), &pv, &other, &src);

    let found = read_physical_volume(&mut open_disk(&pv), "disk0/part2")
        .unwrap()
        .expect("an LVM2 label");
    assert_eq!(found.group, group);
    let names: Vec<(&str, u64)> = found
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.size))
        .collect();
    assert_eq!(
        names,
        [
            ("root", 16 * MIB),
            ("data", 6 * MIB),
            ("elsewhere", 4 * MIB)
        ]
    );
    for (i, kind) in [(0, "ext4"), (1, "ext2")] {
        let expect = Expect {
            unix: true,
            // ext2 block maps with a hole over an indirect block are not read (yet).
            sparse_unsupported: kind == "ext2",
        };
        let lv = &found.volumes[i];
        assert_eq!(lv.unsupported(), None);
        let what = format!("disk0/part2/{}", lv.name);
        let reader = LogicalVolumeReader::new(open_disk(&pv), lv, &what).unwrap();
        let mut vol = open_volume(Box::new(reader), &what).unwrap();
        assert_eq!(vol.kind(), kind);
        assert_same_tree(&mut vol, "", &src, expect);
    }
    // The other physical volume's metadata names the same group.
    let second = read_physical_volume(&mut open_disk(&other), "disk1")
        .unwrap()
        .unwrap();
    assert_eq!(second.group, group);
    let elsewhere = &found.volumes[2];
    let why = elsewhere.unsupported().expect("on the other PV");
    assert!(why.contains("another physical volume"), "{why}");
    match LogicalVolumeReader::new(open_disk(&pv), elsewhere, "disk0/part2/elsewhere") {
        Err(FsError::Unsupported { what, detail }) => {
            assert_eq!(what, "disk0/part2/elsewhere");
            assert!(detail.contains("another physical volume"), "{detail}");
        }
        other => panic!("{:?}", other.err()),
    }

    // Damage is named: the label's checksum, the metadata's, a truncated volume.
    let bytes = read_bytes(&pv);
    let label = (0..4)
        .map(|s| s * 512)
        .find(|&at| &bytes[at..at + 8] == b"LABELONE")
        .unwrap();
    let mut bad = bytes.clone();
    bad[label + 40] ^= 1;
    let err = read_physical_volume(&mut bad.clone(), "disk0/part2").unwrap_err();
    assert!(err.to_string().contains("label's checksum"), "{err}");
    // The newest copy of the text is the last one in the metadata area's ring.
    let text = bytes[..MIB as usize]
        .windows(8)
        .rposition(|w| w == b"seqno = ")
        .unwrap();
    let mut bad = bytes.clone();
    bad[text] ^= 0x20;
    let err = read_physical_volume(&mut bad, "disk0/part2").unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    let mut short = bytes.clone();
    short.truncate(20 * MIB as usize);
    let err = read_physical_volume(&mut short, "disk0/part2").unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
    assert!(
        read_physical_volume(&mut vec![0u8; 4096], "x")
            .unwrap()
            .is_none()
    );
}
