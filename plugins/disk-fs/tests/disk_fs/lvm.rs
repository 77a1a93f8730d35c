//! LVM2 physical volumes made by the LVM tools (without device-mapper: the volumes are
//! never activated), with file systems written where LVM itself reports each logical
//! volume's extents to lie.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use tessera_disk_fs::{FsError, LogicalVolumeReader, open_volume, read_physical_volume};
use tessera_disk_image::ReadAt;

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

/// One segment of a logical volume as `lvs` reports it: the volume's name, its first
/// extent and extent count, the stripe size in bytes (0 for one stripe), and each
/// stripe's device and first extent on it.
struct Run {
    name: String,
    start: u64,
    count: u64,
    stripe_size: u64,
    stripes: Vec<(String, u64)>,
}

fn segments(group: &str) -> Vec<Run> {
    let out = lvm(
        "lvs",
        &[
            "--noheadings",
            "--separator",
            ",",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "lv_name,seg_start_pe,seg_size_pe,stripe_size,seg_pe_ranges",
            group,
        ],
    );
    out.lines()
        .map(|line| {
            let fields: Vec<&str> = line.trim().split(',').collect();
            let stripes = fields[4]
                .split_whitespace()
                .map(|range| {
                    let (dev, extents) = range.split_once(':').unwrap();
                    (
                        dev.to_owned(),
                        extents.split('-').next().unwrap().parse().unwrap(),
                    )
                })
                .collect();
            Run {
                name: fields[0].to_owned(),
                start: fields[1].parse().unwrap(),
                count: fields[2].parse().unwrap(),
                stripe_size: fields[3].parse().unwrap(),
                stripes,
            }
        })
        .collect()
}

/// Physical volume images at `pv` and `other`, one group, 1 MiB extents: `root` (16 MiB
/// in two runs of extents on `pv`, ext4 of `src`), `data` (6 MiB on `pv`, ext2 of `src`),
/// `elsewhere` (4 MiB on `other`, ext4 of `small`) and `striped` (8 MiB in 64 KiB stripes
/// over both, ext4 of `src`). Each file system is written where `lvs` reports the
/// volume's extents, in stripe order as device-mapper's striped target lays them out.
/// Returns the group's name. Needs root.
fn physical_volumes(tmp: &Path, pv: &Path, other: &Path, src: &Path, small: &Path) -> String {
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
    lvm("vgcreate", &["-q", "-s", "1m", &group, a, b]);
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
    lv(&["-L", "4m", "-n", "elsewhere", &group, b]);
    lv(&[
        "-i", "2", "-I", "64k", "-L", "8m", "-n", "striped", &group, a, b,
    ]);
    let pe_start = |dev: &str| -> u64 {
        lvm(
            "pvs",
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "pe_start",
                dev,
            ],
        )
        .trim()
        .parse()
        .unwrap()
    };
    let devices = [
        (a.to_owned(), pv, pe_start(a)),
        (b.to_owned(), other, pe_start(b)),
    ];
    let runs = segments(&group);
    drop((loop_a, loop_b));

    let mut images = Vec::new();
    for (name, kind, tree, mib) in [
        ("root", "ext4", src, 16),
        ("data", "ext2", src, 6),
        ("elsewhere", "ext4", small, 4),
        ("striped", "ext4", src, 8),
    ] {
        let image = tmp.join(format!("{name}.img"));
        mkfs_ext(kind, tree, &image, mib, &[]);
        images.push((name, read_bytes(&image)));
    }
    let mut placed = 0;
    for run in runs {
        let (_, bytes) = images.iter().find(|(n, _)| *n == run.name).unwrap();
        let bytes = &bytes[(run.start * MIB) as usize..((run.start + run.count) * MIB) as usize];
        let stripes = run.stripes.len();
        let chunk = if stripes == 1 {
            bytes.len()
        } else {
            run.stripe_size as usize
        };
        for (i, piece) in bytes.chunks(chunk).enumerate() {
            let (dev, first) = &run.stripes[i % stripes];
            let (_, file, start) = devices.iter().find(|(d, _, _)| d == dev).unwrap();
            let at = start + first * MIB + (i / stripes * chunk) as u64;
            let file = std::fs::OpenOptions::new().write(true).open(file).unwrap();
            file.write_all_at(piece, at).unwrap();
        }
        placed += run.count;
    }
    assert_eq!(placed, 34, "LVM placed the volumes in {placed} extents");
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
    let (src, small) = (tmp.path().join("src"), tmp.path().join("small"));
    small_tree(&src);
    source_tree(
        &small,
        &Tree {
            big: 1000,
            with_symlinks: false,
            many: 3,
            sparse: false,
        },
    );
    let (pv, other) = (tmp.path().join("pv.img"), tmp.path().join("other.img"));
    let group = physical_volumes(tmp.path(), &pv, &other, &src, &small);

    let found = read_physical_volume(&mut open_disk(&pv), "disk0/part2")
        .unwrap()
        .expect("an LVM2 label");
    // The other physical volume's metadata names the same group.
    let second = read_physical_volume(&mut open_disk(&other), "disk1")
        .unwrap()
        .unwrap();
    assert_eq!((&found.group, &second.group), (&group, &group));
    assert_ne!(found.uuid, second.uuid);
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
            ("elsewhere", 4 * MIB),
            ("striped", 8 * MIB)
        ]
    );
    let open = |uuid: &str| -> Option<Box<dyn ReadAt>> {
        if uuid == found.uuid {
            Some(Box::new(open_disk(&pv)))
        } else if uuid == second.uuid {
            Some(Box::new(open_disk(&other)))
        } else {
            None
        }
    };
    for (i, kind, tree) in [
        (0, "ext4", &src),
        (1, "ext2", &src),
        (2, "ext4", &small),
        (3, "ext4", &src),
    ] {
        let expect = Expect {
            unix: true,
            // ext2 block maps with a hole over an indirect block are not read (yet).
            sparse_unsupported: kind == "ext2",
        };
        let lv = &found.volumes[i];
        assert_eq!(lv.unsupported(), None);
        let what = format!("disk0/part2/{}", lv.name);
        let reader = LogicalVolumeReader::new(lv, open, &what).unwrap();
        let mut vol = open_volume(Box::new(reader), &what).unwrap();
        assert_eq!(vol.kind(), kind);
        assert_same_tree(&mut vol, "", tree, expect);
    }
    // Without the second physical volume, what lies on it cannot be read.
    for lv in &found.volumes[2..] {
        let only_first = |uuid: &str| -> Option<Box<dyn ReadAt>> {
            (uuid == found.uuid).then(|| Box::new(open_disk(&pv)) as Box<dyn ReadAt>)
        };
        match LogicalVolumeReader::new(lv, only_first, "disk0/part2/x") {
            Err(FsError::Unsupported { what, detail }) => {
                assert_eq!(what, "disk0/part2/x");
                assert!(detail.contains(&second.uuid), "{detail}");
            }
            other => panic!("{:?}", other.err()),
        }
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
