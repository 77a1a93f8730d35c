//! LVM2 physical volumes made by the LVM tools (without device-mapper: the volumes are
//! never activated), with file systems written where LVM itself reports each logical
//! volume's extents to lie.

use std::path::{Path, PathBuf};
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

/// The script that writes file-system images where `lvs` places each volume's extents.
const PLACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/scripts/lvm-place.py"
);

/// Physical volume images at `pv` and `other`, one group, 1 MiB extents: `root` (16 MiB
/// in two runs of extents on `pv`, ext4 of `src`), `data` (6 MiB on `pv`, ext2 of `src`),
/// `elsewhere` (4 MiB on `other`, ext4 of `small`) and `striped` (8 MiB in 64 KiB stripes
/// over both, ext4 of `src`). Each file system is written where `lvs` reports the
/// volume's extents. Returns the group's name. Needs root.
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
    let mut args = vec![
        PLACE.to_owned(),
        group.clone(),
        format!("{a}={}", pv.display()),
        format!("{b}={}", other.display()),
        "--".to_owned(),
    ];
    for (name, kind, tree, mib) in [
        ("root", "ext4", src, 16),
        ("data", "ext2", src, 6),
        ("elsewhere", "ext4", small, 4),
        ("striped", "ext4", src, 8),
    ] {
        let image = tmp.join(format!("{name}.img"));
        mkfs_ext(kind, tree, &image, mib, &[]);
        args.push(format!("{name}={}", image.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let placed = run("python3", &args, &[]);
    let mut segments: Vec<String> = placed
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let on = if fields[3] == a {
                "pv"
            } else if fields[3] == b {
                "other"
            } else {
                "both"
            };
            format!("{} {on}", fields[0])
        })
        .collect();
    segments.sort();
    assert_eq!(
        segments,
        [
            "data pv",
            "elsewhere other",
            "root pv",
            "root pv",
            "striped both"
        ],
        "{placed}"
    );
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
    assert_eq!(
        names(&found),
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
        let expect = Expect { unix: true };
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

/// The names and sizes of the volumes `pv`'s group lists.
fn names(pv: &tessera_disk_fs::PhysicalVolume) -> Vec<(&str, u64)> {
    pv.volumes
        .iter()
        .map(|v| (v.name.as_str(), v.size))
        .collect()
}

/// Makes a volume group of 1 MiB extents over the physical volumes `files` (through loop
/// devices) and restores into its metadata, with `vgcfgrestore`, which checks them, the
/// logical volumes whose sections `volumes` writes given the metadata's names of the
/// files' physical volumes (`pvN`), in order. Returns what `lvs -a` reports of every
/// volume (`name type stripes size ranges`, each file's device shown as `#N`).
fn restore_volumes(files: &[PathBuf], volumes: impl FnOnce(&[String]) -> String) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let group = group_name();
    let loops: Vec<Loop> = files.iter().map(|f| Loop::attach(f)).collect();
    let devices: Vec<&str> = loops.iter().map(|l| l.0.as_str()).collect();
    lvm("pvcreate", &[&["-q"][..], &devices].concat());
    lvm(
        "vgcreate",
        &[&["-q", "-s", "1m", &group][..], &devices].concat(),
    );
    let backup = tmp.path().join("vg.txt");
    let backup = backup.to_str().unwrap();
    lvm("vgcfgbackup", &["-q", "-f", backup, &group]);
    let text = std::fs::read_to_string(backup).unwrap();
    let keys: Vec<String> = devices
        .iter()
        .map(|dev| {
            // The section the device's line is in: `pvN {`.
            let at = text.find(&format!("device = \"{dev}\"")).unwrap();
            let line = text[..at]
                .lines()
                .rev()
                .find(|l| l.trim_end().ends_with('{'))
                .unwrap();
            line.split_whitespace().next().unwrap().to_owned()
        })
        .collect();
    let lvs = format!("logical_volumes {{\n{}}}\n", volumes(&keys));
    let end = text.rfind("\n}").unwrap();
    std::fs::write(backup, format!("{}\n{lvs}{}", &text[..end], &text[end..])).unwrap();
    // Restoring thin volumes needs `--force`: the tool cannot check the pool's own
    // metadata against them.
    let force = if lvs.contains("type = \"thin\"") {
        "--force"
    } else {
        "-q"
    };
    lvm("vgcfgrestore", &["-q", force, "-f", backup, &group]);
    let fields = "lv_name,segtype,stripes,lv_size,seg_pe_ranges";
    let listed = lvm(
        "lvs",
        &["-a", "--noheadings", "--units", "m", "-o", fields, &group],
    );
    lvm("vgchange", &["-q", "--activate", "n", &group]);
    listed
        .lines()
        .map(|l| {
            let mut line = l.split_whitespace().collect::<Vec<_>>().join(" ");
            // Longest names first: `/dev/loop1` is in `/dev/loop10`.
            let mut order: Vec<usize> = (0..devices.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(devices[i].len()));
            for i in order {
                line = line.replace(devices[i], &format!("#{i}"));
            }
            line
        })
        .collect()
}

/// The metadata of a logical volume `name` of `segments` (each the body of a segment
/// section, its start and count first), hidden unless `visible`.
fn lv_text(name: &str, id: usize, visible: bool, segments: &[String]) -> String {
    let status = if visible {
        r#"["READ", "WRITE", "VISIBLE"]"#
    } else {
        r#"["READ", "WRITE"]"#
    };
    let mut text = format!(
        "{name} {{\nid = \"LvId{id:02}-abcd-efgh-ijkl-mnop-qrst-uvwx{id:02}\"\nstatus = \
         {status}\nflags = []\ncreation_time = 1700000000\ncreation_host = \"h\"\n\
         segment_count = {}\n",
        segments.len()
    );
    for (n, body) in segments.iter().enumerate() {
        text += &format!("segment{} {{\n{body}}}\n", n + 1);
    }
    text + "}\n"
}

/// A linear segment from logical extent `start` of `count` extents at extent `first`
/// of physical volume `pv`.
fn linear(start: u64, count: u64, pv: &str, first: u64) -> String {
    format!(
        "start_extent = {start}\nextent_count = {count}\ntype = \"striped\"\n\
         stripe_count = 1\nstripes = [\"{pv}\", {first}]\n"
    )
}

/// Mirrored logical volumes, which LVM2 makes only through device-mapper, described in
/// metadata that `vgcfgrestore` checks and writes: `r1` (raid1, 8 MiB; its first image
/// in two runs on `pv0`, its second on `pv1`) and `old` (mirror, 4 MiB, one image on
/// each). Each image holds a file system; the volume reads through its first image, or
/// through the other when the first's physical volume is not among the disks.
#[test]
fn mirrored_logical_volumes_read_through_any_image() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: making LVM physical volumes needs loop devices (root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    small_tree(&src);
    let (pv, other) = (tmp.path().join("pv.img"), tmp.path().join("other.img"));
    for file in [&pv, &other] {
        std::fs::File::create(file)
            .unwrap()
            .set_len(40 * MIB)
            .unwrap();
    }
    let listed = restore_volumes(&[pv.clone(), other.clone()], |keys| {
        let (pv0, pv1) = (keys[0].as_str(), keys[1].as_str());
        let mut lvs = lv_text("r1_rmeta_0", 1, false, &[linear(0, 1, pv0, 0)]);
        lvs += &lv_text(
            "r1_rimage_0",
            2,
            false,
            &[linear(0, 4, pv0, 1), linear(4, 4, pv0, 20)],
        );
        lvs += &lv_text("r1_rmeta_1", 3, false, &[linear(0, 1, pv1, 0)]);
        lvs += &lv_text("r1_rimage_1", 4, false, &[linear(0, 8, pv1, 1)]);
        lvs += &lv_text(
            "r1",
            5,
            true,
            &[
                "start_extent = 0\nextent_count = 8\ntype = \"raid1\"\ndevice_count = 2\n\
               region_size = 1024\nraids = [\"r1_rmeta_0\", \"r1_rimage_0\", \"r1_rmeta_1\", \
               \"r1_rimage_1\"]\n"
                    .to_owned(),
            ],
        );
        lvs += &lv_text("old_mimage_0", 6, false, &[linear(0, 4, pv0, 10)]);
        lvs += &lv_text("old_mimage_1", 7, false, &[linear(0, 4, pv1, 10)]);
        lvs + &lv_text(
            "old",
            8,
            true,
            &[
                "start_extent = 0\nextent_count = 4\ntype = \"mirror\"\nmirror_count = 2\n\
               region_size = 1024\nmirrors = [\"old_mimage_0\", 0, \"old_mimage_1\", 0]\n"
                    .to_owned(),
            ],
        )
    });
    // LVM itself places the images where the metadata says.
    for expect in [
        "r1 raid1 2 8.00m r1_rimage_0:0-7 r1_rimage_1:0-7",
        "[r1_rimage_0] linear 1 8.00m #0:1-4",
        "[r1_rimage_0] linear 1 8.00m #0:20-23",
        "[r1_rimage_1] linear 1 8.00m #1:1-8",
        "old mirror 2 4.00m old_mimage_0:0-3 old_mimage_1:0-3",
    ] {
        assert!(listed.iter().any(|l| l == expect), "{expect}: {listed:?}");
    }
    // The file systems, written where the images' extents lie (after the first MiB).
    let r1 = tmp.path().join("r1.img");
    mkfs_ext("ext4", &src, &r1, 8, &[]);
    let old_tree = tmp.path().join("old");
    std::fs::create_dir_all(old_tree.join("etc")).unwrap();
    std::fs::write(old_tree.join("etc/hostname"), b"mirror\n").unwrap();
    let old = tmp.path().join("old.img");
    mkfs_ext("ext2", &old_tree, &old, 4, &[]);
    let (r1, old) = (read_bytes(&r1), read_bytes(&old));
    let place = |file: &Path, at_mib: u64, bytes: &[u8]| write_at(file, (1 + at_mib) * MIB, bytes);
    let half = 4 * MIB as usize;
    place(&pv, 1, &r1[..half]);
    place(&pv, 20, &r1[half..]);
    place(&other, 1, &r1);
    place(&pv, 10, &old);
    place(&other, 10, &old);

    let found = read_physical_volume(&mut open_disk(&pv), "disk0")
        .unwrap()
        .unwrap();
    let second = read_physical_volume(&mut open_disk(&other), "disk1")
        .unwrap()
        .unwrap();
    let names: Vec<(&str, u64)> = found
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.size))
        .collect();
    assert_eq!(names, [("r1", 8 * MIB), ("old", 4 * MIB)]);
    let both = |uuid: &str| -> Option<Box<dyn ReadAt>> {
        if uuid == found.uuid {
            Some(Box::new(open_disk(&pv)))
        } else if uuid == second.uuid {
            Some(Box::new(open_disk(&other)))
        } else {
            None
        }
    };
    let only = |keep: &str| {
        let keep = keep.to_owned();
        let (pv, other, first) = (pv.clone(), other.clone(), found.uuid.clone());
        move |uuid: &str| -> Option<Box<dyn ReadAt>> {
            (uuid == keep).then(|| {
                let file = if uuid == first { &pv } else { &other };
                Box::new(open_disk(file)) as Box<dyn ReadAt>
            })
        }
    };
    let expect = Expect { unix: true };
    for open in [
        Box::new(both) as Box<dyn Fn(&str) -> Option<Box<dyn ReadAt>>>,
        Box::new(only(&found.uuid)),
        Box::new(only(&second.uuid)),
    ] {
        let lv = &found.volumes[0];
        assert_eq!(lv.unsupported(), None);
        let mut reader = LogicalVolumeReader::new(lv, &open, "disk0/r1").unwrap();
        // Read through the second image only when the first's volume is missing.
        let second_only = open(&found.uuid).is_none();
        assert_eq!(reader.degraded().is_some(), second_only);
        let mut all = vec![0u8; r1.len()];
        reader.read_exact_at(0, &mut all).unwrap();
        assert!(all == r1, "r1 reads as its file system");
        let mut vol = open_volume(Box::new(reader), "disk0/r1").unwrap();
        assert_same_tree(&mut vol, "", &src, expect);
        let reader = LogicalVolumeReader::new(&found.volumes[1], &open, "disk0/old").unwrap();
        let mut vol = open_volume(Box::new(reader), "disk0/old").unwrap();
        let mut buf = [0u8; 16];
        let n = vol.read_file("etc/hostname", 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"mirror\n");
    }
    // With neither physical volume, the error names the first image's.
    let none = |_: &str| -> Option<Box<dyn ReadAt>> { None };
    match LogicalVolumeReader::new(&found.volumes[0], none, "disk0/r1") {
        Err(FsError::Unsupported { detail, .. }) => {
            assert!(
                detail.contains(&found.uuid) && detail.contains("other mirror images"),
                "{detail}"
            );
        }
        other => panic!("{:?}", other.err()),
    }
}

/// The share of `role` of an MD array of `level` (`layout`, `disks` members, 64 KiB
/// chunks) holding `data`, as `tests/scripts/md-member.py` lays it out: the bytes an LVM2
/// RAID image holds.
fn image_share(
    dir: &Path,
    data: &Path,
    level: &str,
    layout: &str,
    disks: usize,
    role: usize,
) -> Vec<u8> {
    let (disks, role) = (disks.to_string(), role.to_string());
    let args = [
        "--metadata",
        "1.0",
        "--chunk",
        "128",
        "--level",
        level,
        "--layout",
        layout,
        "--disks",
        &disks,
        "--role",
        &role,
    ];
    let name = format!("share-{level}-{role}");
    let mut bytes = md_member(dir, data, &name, &args);
    bytes.truncate(4 * MIB as usize);
    bytes
}

/// RAID logical volumes, written into metadata that `vgcfgrestore` checks: `r5`
/// (raid5_ls over three images), `r6` (raid6_zr, LVM2's default RAID6, over five), `r10`
/// (raid10, two near copies over four) and `r0` (raid0 over two, without metadata
/// volumes), each image on a physical volume of its own and holding its share of one
/// file system as MD lays it out. Each reads as the file system with every physical
/// volume there, and with as many missing as its parity or copies make up for.
#[test]
fn raid_logical_volumes_read_as_md_reads_them() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: making LVM physical volumes needs loop devices (root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    small_tree(&src);
    let files: Vec<_> = (0..5)
        .map(|i| tmp.path().join(format!("pv{i}.img")))
        .collect();
    for file in &files {
        std::fs::File::create(file)
            .unwrap()
            .set_len(48 * MIB)
            .unwrap();
    }
    // (volume, segment type, MD level, MD layout, images, first extent of each image,
    // MiB): each image 4 MiB.
    let volumes = [
        ("r5", "raid5_ls", "5", "2", 3, 1, 8),
        ("r6", "raid6_zr", "6", "8", 5, 10, 12),
        ("r10", "raid10", "10", "0x102", 4, 20, 8),
        ("r0", "raid0", "0", "0", 2, 30, 8),
    ];
    let listed = restore_volumes(&files, |keys| {
        let mut lvs = String::new();
        let mut id = 10;
        for (name, kind, _, _, images, first, mib) in volumes {
            let mut raids = Vec::new();
            let with_meta = kind != "raid0";
            for (i, key) in keys.iter().enumerate().take(images) {
                if with_meta {
                    let meta = format!("{name}_rmeta_{i}");
                    lvs += &lv_text(&meta, id, false, &[linear(0, 1, key, first - 1)]);
                    raids.push(format!("\"{meta}\""));
                    id += 1;
                }
                let image = format!("{name}_rimage_{i}");
                lvs += &lv_text(&image, id, false, &[linear(0, 4, key, first)]);
                raids.push(format!("\"{image}\""));
                id += 1;
            }
            // RAID0 has no regions and lists its images as `raid0_lvs`.
            let (regions, list) = if with_meta {
                ("region_size = 1024\n", "raids")
            } else {
                ("", "raid0_lvs")
            };
            lvs += &lv_text(
                name,
                id,
                true,
                &[format!(
                    "start_extent = 0\nextent_count = {mib}\ntype = \"{kind}\"\n\
                     device_count = {images}\nstripe_size = 128\n{regions}{list} = [{}]\n",
                    raids.join(", ")
                )],
            );
            id += 1;
        }
        lvs
    });
    for expect in [
        "r5 raid5_ls 3 8.00m",
        "r6 raid6_zr 5 12.00m",
        "r10 raid10 4 8.00m",
        "r0 raid0 2 8.00m",
    ] {
        assert!(
            listed.iter().any(|l| l.starts_with(expect)),
            "{expect}: {listed:?}"
        );
    }
    // A file system of each size.
    let fs_of = |mib: u64| {
        let image = tmp.path().join(format!("fs{mib}.img"));
        if !image.exists() {
            mkfs_ext("ext4", &src, &image, mib, &[]);
        }
        image
    };
    for (_, _, level, layout, images, first, mib) in volumes {
        let fs_image = fs_of(mib);
        for (role, file) in files.iter().enumerate().take(images) {
            use std::os::unix::fs::FileExt;
            let share = image_share(tmp.path(), &fs_image, level, layout, images, role);
            let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
            f.write_all_at(&share, (1 + first) * MIB).unwrap();
        }
    }

    let found: Vec<_> = files
        .iter()
        .map(|f| {
            read_physical_volume(&mut open_disk(f), "disk")
                .unwrap()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names(&found[0]),
        [
            ("r5", 8 * MIB),
            ("r6", 12 * MIB),
            ("r10", 8 * MIB),
            ("r0", 8 * MIB)
        ]
    );
    let opener = |missing: Vec<usize>| {
        let uuids: Vec<String> = found.iter().map(|f| f.uuid.clone()).collect();
        let files = files.clone();
        move |uuid: &str| -> Option<Box<dyn ReadAt>> {
            let i = uuids.iter().position(|u| u == uuid)?;
            (!missing.contains(&i)).then(|| Box::new(open_disk(&files[i])) as Box<dyn ReadAt>)
        }
    };
    let expect = Expect { unix: true };
    for (i, &(name, .., mib)) in volumes.iter().enumerate() {
        let fs = read_bytes(&fs_of(mib));
        let lv = &found[0].volumes[i];
        assert_eq!(lv.unsupported(), None, "{name}");
        // Whole, then without each physical volume, and (RAID6) each pair.
        let mut cases: Vec<Vec<usize>> = vec![vec![]];
        cases.extend((0..5).map(|a| vec![a]));
        cases.extend((0..5).flat_map(|a| (a + 1..5).map(move |b| vec![a, b])));
        for missing in cases {
            let readable = match name {
                "r5" => missing.iter().filter(|&&m| m < 3).count() <= 1,
                "r6" => true,
                // Two near copies: images 0 and 1 hold one, 2 and 3 the other.
                "r10" => {
                    let both = |a, b| missing.contains(&a) && missing.contains(&b);
                    !(both(0, 1) || both(2, 3))
                }
                _ => missing.iter().all(|&m| m >= 2),
            };
            let what = format!("disk/{name}");
            match LogicalVolumeReader::new(lv, opener(missing.clone()), &what) {
                Ok(mut reader) => {
                    assert!(readable, "{name} without {missing:?} should not read");
                    // Degraded when an image in use is missing.
                    let used = match name {
                        "r5" => 3,
                        "r6" => 5,
                        "r10" => 4,
                        _ => 2,
                    };
                    let lost = missing.iter().any(|&m| m < used);
                    assert_eq!(reader.degraded().is_some(), lost, "{name} {missing:?}");
                    let mut all = vec![0u8; fs.len()];
                    reader.read_exact_at(0, &mut all).unwrap();
                    assert!(all == fs, "{name} without {missing:?}: the data differs");
                    if missing.is_empty() {
                        let mut vol = open_volume(Box::new(reader), &what).unwrap();
                        assert_same_tree(&mut vol, "", &src, expect);
                    }
                }
                Err(err) => {
                    assert!(!readable, "{name} without {missing:?}: {err}");
                    assert!(matches!(err, FsError::Unsupported { .. }), "{err}");
                }
            }
        }
    }
}

/// The bytes `tool` (`thin_restore`, `cache_restore`) writes into a blank `len`-byte
/// file from `xml` (with `args` besides), which `check` (`thin_check`, `cache_check`)
/// must pass.
fn restored_metadata(
    dir: &Path,
    (tool, check): (&str, &str),
    xml: &str,
    len: u64,
    args: &[&str],
) -> Vec<u8> {
    let (xml_path, meta) = (
        dir.join(format!("{tool}.xml")),
        dir.join(format!("{tool}.bin")),
    );
    std::fs::write(&xml_path, xml).unwrap();
    blank(&meta, len);
    let (xml_path, meta_path) = (xml_path.to_str().unwrap(), meta.to_str().unwrap());
    run(
        tool,
        &[&["-i", xml_path, "-o", meta_path], args].concat(),
        &[],
    );
    run(check, &[meta_path], &[]);
    read_bytes(&meta)
}

/// Writes `bytes` into `file` at byte `at`.
fn write_at(file: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// `image` with the one run of `from` (a file's contents) changed to `to`, as the file
/// changed in place would leave it.
fn changed(image: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = image.to_vec();
    let at = out
        .windows(from.len())
        .position(|w| w == from)
        .expect("the file's bytes in the image");
    out[at..at + to.len()].copy_from_slice(to);
    out
}

/// What gives the physical volumes `files` (UUID, file) by UUID.
fn opener(files: Vec<(String, PathBuf)>) -> impl Fn(&str) -> Option<Box<dyn ReadAt>> {
    move |uuid: &str| {
        let (_, file) = files.iter().find(|(u, _)| u == uuid)?;
        Some(Box::new(open_disk(file)) as Box<dyn ReadAt>)
    }
}

/// Reads `lv` through `open` whole, asserting it equals `expect` and its file `motd`
/// holds `motd` 1200 times; returns its file system.
fn assert_reads(
    lv: &tessera_disk_fs::LogicalVolume,
    open: impl Fn(&str) -> Option<Box<dyn ReadAt>>,
    expect: &[u8],
    motd: &str,
) -> tessera_disk_fs::Volume {
    assert_eq!(lv.unsupported(), None);
    let mut reader = LogicalVolumeReader::new(lv, open, &lv.name).unwrap();
    assert_eq!(reader.len(), expect.len() as u64);
    let mut all = vec![0u8; expect.len()];
    reader.read_exact_at(0, &mut all).unwrap();
    assert!(all == expect, "{} reads as its file system", lv.name);
    let mut vol = open_volume(Box::new(reader), &lv.name).unwrap();
    assert_eq!(read_all(&mut vol, "motd"), motd.repeat(1200).as_bytes());
    vol
}

/// The pool's data block in these tests (`chunk_size = 128` sectors).
const THIN_BLOCK: usize = 64 << 10;

/// Thin pool metadata written by `thin_restore` (and passed by `thin_check`) for a pool of
/// `data_blocks` 64 KiB blocks holding `devices`: each a thin device id and its
/// `(block, data block)` mappings. 4 MiB, the size of the metadata volume.
fn thin_metadata(dir: &Path, data_blocks: usize, devices: &[(u64, &[(usize, usize)])]) -> Vec<u8> {
    let mut xml = format!(
        "<superblock uuid=\"\" time=\"1\" transaction=\"2\" data_block_size=\"128\" \
         nr_data_blocks=\"{data_blocks}\">\n"
    );
    for &(id, map) in devices {
        xml += &format!(
            "<device dev_id=\"{id}\" mapped_blocks=\"{}\" transaction=\"{}\" \
             creation_time=\"{}\" snap_time=\"1\">\n",
            map.len(),
            id - 1,
            id - 1
        );
        for (block, data) in map {
            xml += &format!(
                "<single_mapping origin_block=\"{block}\" data_block=\"{data}\" time=\"0\"/>\n"
            );
        }
        xml += "</device>\n";
    }
    xml += "</superblock>\n";
    restored_metadata(dir, ("thin_restore", "thin_check"), &xml, 4 * MIB, &[])
}

/// A thin pool, written into metadata that `vgcfgrestore` checks: its data volume
/// (32 MiB in two runs on `pv0`) and metadata volume (on `pv1`), and two thin volumes of
/// 32 MiB: `thin1` and its snapshot `snap`, which shares every block with it but the one
/// where a file was changed. Their blocks are mapped onto the pool's in a scrambled order
/// by metadata that `thin_restore` writes, enough of them for the trees to need more than
/// one leaf. Each reads as its file system; the pool is not listed; without either
/// physical volume, or with the pool's metadata damaged, reading fails with the reason.
#[test]
fn thin_volumes_read_through_their_pool() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: making LVM physical volumes needs loop devices (root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    small_tree(&src);
    std::fs::write(src.join("data.bin"), pattern(14 * MIB as usize, 9)).unwrap();
    std::fs::write(src.join("motd"), b"origin ".repeat(1200)).unwrap();
    let (pv, other) = (tmp.path().join("pv.img"), tmp.path().join("other.img"));
    blank(&pv, 64 * MIB);
    blank(&other, 16 * MIB);
    let listed = restore_volumes(&[pv.clone(), other.clone()], |keys| {
        let (pv0, pv1) = (keys[0].as_str(), keys[1].as_str());
        let mut lvs = lv_text("pool_tmeta", 1, false, &[linear(0, 4, pv1, 1)]);
        lvs += &lv_text(
            "pool_tdata",
            2,
            false,
            &[linear(0, 8, pv0, 2), linear(8, 24, pv0, 20)],
        );
        lvs += &lv_text("lvol0_pmspare", 3, false, &[linear(0, 4, pv1, 6)]);
        lvs += &lv_text(
            "pool",
            4,
            true,
            &[
                "start_extent = 0\nextent_count = 32\ntype = \"thin-pool\"\n\
               metadata = \"pool_tmeta\"\npool = \"pool_tdata\"\ntransaction_id = 2\n\
               chunk_size = 128\ndiscards = \"passdown\"\nzero_new_blocks = 1\n"
                    .to_owned(),
            ],
        );
        lvs += &lv_text(
            "thin1",
            5,
            true,
            &[
                "start_extent = 0\nextent_count = 32\ntype = \"thin\"\nthin_pool = \"pool\"\n\
               transaction_id = 0\ndevice_id = 1\n"
                    .to_owned(),
            ],
        );
        lvs + &lv_text(
            "snap",
            6,
            true,
            &[
                "start_extent = 0\nextent_count = 32\ntype = \"thin\"\nthin_pool = \"pool\"\n\
               transaction_id = 1\ndevice_id = 2\norigin = \"thin1\"\n"
                    .to_owned(),
            ],
        )
    });
    for expect in [
        "pool thin-pool 1 32.00m pool_tdata:0-31",
        "thin1 thin 0 32.00m",
        "snap thin 0 32.00m",
        "[pool_tdata] linear 1 32.00m #0:2-9",
        "[pool_tdata] linear 1 32.00m #0:20-43",
        "[pool_tmeta] linear 1 4.00m #1:1-4",
    ] {
        assert!(listed.iter().any(|l| l == expect), "{expect}: {listed:?}");
    }

    // The file systems: `snap` is `thin1` with `motd` changed in place.
    let image = tmp.path().join("thin1.img");
    mkfs_ext("ext4", &src, &image, 32, &[]);
    let thin1 = read_bytes(&image);
    let snap = changed(&thin1, &b"origin ".repeat(1200), &b"snapsh ".repeat(1200));

    // Their non-zero blocks, mapped onto the pool's 512 in a scrambled order.
    let data_blocks = 512;
    let mut pool = vec![0u8; data_blocks * THIN_BLOCK];
    let mut used = 0;
    let mut place = |bytes: &[u8]| {
        let data = used * 167 % data_blocks;
        used += 1;
        pool[data * THIN_BLOCK..][..THIN_BLOCK].copy_from_slice(bytes);
        data
    };
    let blocks = |image: &[u8]| -> Vec<(usize, Vec<u8>)> {
        image
            .chunks(THIN_BLOCK)
            .enumerate()
            .filter(|(_, b)| b.iter().any(|&x| x != 0))
            .map(|(n, b)| (n, b.to_vec()))
            .collect()
    };
    let map1: Vec<(usize, usize)> = blocks(&thin1)
        .into_iter()
        .map(|(n, b)| (n, place(&b)))
        .collect();
    let map2: Vec<(usize, usize)> = blocks(&snap)
        .into_iter()
        .map(|(n, b)| {
            let shared = map1.iter().find(|(m, _)| *m == n);
            match shared {
                Some(&(_, data)) if thin1[n * THIN_BLOCK..][..THIN_BLOCK] == b[..] => (n, data),
                _ => (n, place(&b)),
            }
        })
        .collect();
    assert!(
        map1.len() > 254,
        "more than a leaf's mappings: {}",
        map1.len()
    );
    assert_eq!(
        used,
        map1.len() + 1,
        "the snapshot has one block of its own"
    );
    let meta = thin_metadata(tmp.path(), data_blocks, &[(1, &map1), (2, &map2)]);
    // Physical extent N starts at MiB 1 + N.
    write_at(&pv, 3 * MIB, &pool[..8 * MIB as usize]);
    write_at(&pv, 21 * MIB, &pool[8 * MIB as usize..]);
    write_at(&other, 2 * MIB, &meta);

    let found = read_physical_volume(&mut open_disk(&pv), "disk0")
        .unwrap()
        .unwrap();
    let second = read_physical_volume(&mut open_disk(&other), "disk1")
        .unwrap()
        .unwrap();
    assert_eq!(names(&found), [("thin1", 32 * MIB), ("snap", 32 * MIB)]);
    let open = opener(vec![
        (found.uuid.clone(), pv.clone()),
        (second.uuid.clone(), other.clone()),
    ]);
    for (lv, expect, motd) in [(0, &thin1, "origin "), (1, &snap, "snapsh ")] {
        let lv = &found.volumes[lv];
        let mut pvs: Vec<&str> = lv.physical_volumes().collect();
        pvs.sort();
        let mut both = vec![found.uuid.as_str(), second.uuid.as_str()];
        both.sort();
        assert_eq!(pvs, both);
        let mut vol = assert_reads(lv, &open, expect, motd);
        assert_eq!(
            read_all(&mut vol, "data.bin"),
            pattern(14 * MIB as usize, 9)
        );
        if lv.name == "thin1" {
            assert_same_tree(&mut vol, "", &src, Expect { unix: true });
        }
    }

    // Without either physical volume: the error names the missing one.
    for (missing, name) in [(&found.uuid, "pool_tdata"), (&second.uuid, "pool_tmeta")] {
        let without = |uuid: &str| if uuid == missing { None } else { open(uuid) };
        match LogicalVolumeReader::new(&found.volumes[0], without, "disk0/thin1") {
            Err(FsError::Unsupported { what, detail }) => {
                assert!(detail.contains(missing.as_str()), "{detail}");
                assert!(what.contains(name), "{what}");
            }
            other => panic!("{:?}", other.err()),
        }
    }

    // Damaged metadata: a changed byte in any block the pool uses is found by its
    // checksum, when the superblock is opened or a read goes through the block.
    let used_blocks: Vec<usize> = (0..meta.len() / 4096)
        .filter(|&b| meta[b * 4096..][..4096].iter().any(|&x| x != 0))
        .collect();
    let mut caught = 0;
    for &block in &used_blocks {
        let mut bad = meta.clone();
        bad[block * 4096 + 100] ^= 0x40;
        let copy = tmp.path().join("other-bad.img");
        std::fs::copy(&other, &copy).unwrap();
        write_at(&copy, 2 * MIB, &bad);
        let damaged = |uuid: &str| -> Option<Box<dyn ReadAt>> {
            if uuid == second.uuid {
                Some(Box::new(open_disk(&copy)))
            } else {
                open(uuid)
            }
        };
        let result = LogicalVolumeReader::new(&found.volumes[0], damaged, "disk0/thin1")
            .map_err(|err| err.to_string())
            .and_then(|mut reader| {
                let mut all = vec![0u8; thin1.len()];
                reader
                    .read_exact_at(0, &mut all)
                    .map_err(|err| err.to_string())
                    .map(|()| all)
            });
        match result {
            Ok(all) => assert!(all == thin1, "block {block}: read wrong without an error"),
            Err(err) => {
                assert!(err.contains("thin pool metadata"), "{err}");
                caught += 1;
            }
        }
    }
    // The superblock, the device tree's and thin1's mapping tree's nodes at least.
    assert!(caught >= 4, "{caught} of {} blocks", used_blocks.len());
}

/// Cache metadata written by `cache_restore` (of `version`, and passed by `cache_check`)
/// for a cache of `blocks` 64 KiB blocks mapping `(cache block, origin block, dirty)`.
/// 2 MiB, the size of the metadata volume.
fn cache_metadata(
    dir: &Path,
    version: u32,
    blocks: usize,
    map: &[(usize, usize, bool)],
) -> Vec<u8> {
    let mut xml = format!(
        "<superblock uuid=\"\" block_size=\"128\" nr_cache_blocks=\"{blocks}\" policy=\"smq\" \
         hint_width=\"4\">\n<mappings>\n"
    );
    for (cache, origin, dirty) in map {
        xml += &format!(
            "<mapping cache_block=\"{cache}\" origin_block=\"{origin}\" dirty=\"{dirty}\"/>\n"
        );
    }
    xml += "</mappings>\n</superblock>\n";
    let version = version.to_string();
    let tools = ("cache_restore", "cache_check");
    restored_metadata(dir, tools, &xml, 2 * MIB, &["--metadata-version", &version])
}

/// Cached volumes, written into metadata that `vgcfgrestore` checks, each over an origin
/// holding a stale copy of a file system whose fresh blocks are in the cache: `a` with a
/// cache pool (its own metadata and data volumes, writeback, metadata version 1), `b` with
/// a cache volume (`--cachevol`: both in one volume, writethrough, version 2) and `c`,
/// in passthrough mode, where the cache is not used. The caches also map clean blocks, in
/// a scrambled order. `a` and `b` read as the fresh file system, `c` as the stale one.
#[test]
fn cached_volumes_read_their_cache_over_their_origin() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: making LVM physical volumes needs loop devices (root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    small_tree(&src);
    std::fs::write(src.join("motd"), b"fresh ".repeat(1200)).unwrap();
    let (pv, fast) = (tmp.path().join("slow.img"), tmp.path().join("fast.img"));
    blank(&pv, 48 * MIB);
    blank(&fast, 32 * MIB);
    let listed = restore_volumes(&[pv.clone(), fast.clone()], |keys| {
        let (slow, fast) = (keys[0].as_str(), keys[1].as_str());
        let cache = |pool: &str, origin: &str, extra: &str| {
            format!(
                "start_extent = 0\nextent_count = 8\ntype = \"cache\"\ncache_pool = \"{pool}\"\n\
                 origin = \"{origin}\"\n{extra}"
            )
        };
        let pool = |data: &str, meta: &str, mode: &str, format: u32| {
            format!(
                "start_extent = 0\nextent_count = 2\ntype = \"cache-pool\"\ndata = \"{data}\"\n\
                 metadata = \"{meta}\"\nmetadata_format = {format}\nchunk_size = 128\n\
                 cache_mode = \"{mode}\"\npolicy = \"smq\"\n"
            )
        };
        let mut lvs = String::new();
        for (n, name, first) in [(1, "a_corig", 1), (2, "b_corig", 10), (3, "c_corig", 20)] {
            lvs += &lv_text(name, n, false, &[linear(0, 8, slow, first)]);
        }
        lvs += &lv_text("apool_cdata", 4, false, &[linear(0, 2, fast, 1)]);
        lvs += &lv_text("apool_cmeta", 5, false, &[linear(0, 2, fast, 3)]);
        lvs += &lv_text(
            "apool",
            6,
            false,
            &[pool("apool_cdata", "apool_cmeta", "writeback", 1)],
        );
        lvs += &lv_text("bfast_cvol", 7, false, &[linear(0, 4, fast, 6)]);
        lvs += &lv_text("cpool_cdata", 8, false, &[linear(0, 2, fast, 11)]);
        lvs += &lv_text("cpool_cmeta", 9, false, &[linear(0, 2, fast, 13)]);
        lvs += &lv_text(
            "cpool",
            10,
            false,
            &[pool("cpool_cdata", "cpool_cmeta", "passthrough", 2)],
        );
        lvs += &lv_text("a", 11, true, &[cache("apool", "a_corig", "")]);
        lvs += &lv_text(
            "b",
            12,
            true,
            &[cache(
                "bfast_cvol",
                "b_corig",
                "metadata_format = 2\nchunk_size = 128\ncache_mode = \"writethrough\"\n\
                 policy = \"smq\"\nmetadata_start = 0\nmetadata_len = 4096\n\
                 data_start = 4096\ndata_len = 4096\n",
            )],
        );
        lvs + &lv_text("c", 13, true, &[cache("cpool", "c_corig", "")])
    });
    for expect in [
        "a cache 1 8.00m a_corig:0-7",
        "[apool] cache-pool 1 2.00m apool_cdata:0-1",
        "b cache 1 8.00m b_corig:0-7",
        "[bfast_cvol] linear 1 4.00m #1:6-9",
        "c cache 1 8.00m c_corig:0-7",
    ] {
        assert!(listed.iter().any(|l| l == expect), "{expect}: {listed:?}");
    }

    // The fresh file system, and the origin's stale copy of it: `motd` changed.
    let image = tmp.path().join("fresh.img");
    mkfs_ext("ext4", &src, &image, 8, &[]);
    let fresh = read_bytes(&image);
    let stale = changed(&fresh, &b"fresh ".repeat(1200), &b"stale ".repeat(1200));
    // The cache: every block that differs (dirty), and the first twenty non-zero ones
    // (clean), in cache blocks 7, 14, 21… of 32.
    const BLOCK: usize = 64 << 10;
    let mut picked: Vec<(usize, bool)> = Vec::new();
    for (n, (f, s)) in fresh.chunks(BLOCK).zip(stale.chunks(BLOCK)).enumerate() {
        if f != s {
            picked.push((n, true));
        } else if picked.len() < 20 && f.iter().any(|&b| b != 0) {
            picked.push((n, false));
        }
    }
    assert!(picked.iter().any(|&(_, dirty)| dirty));
    let mut data = vec![0u8; 32 * BLOCK];
    let map: Vec<(usize, usize, bool)> = picked
        .iter()
        .enumerate()
        .map(|(k, &(origin, dirty))| {
            let cache = (k + 1) * 7 % 32;
            data[cache * BLOCK..][..BLOCK].copy_from_slice(&fresh[origin * BLOCK..][..BLOCK]);
            (cache, origin, dirty)
        })
        .collect();
    let v2 = cache_metadata(tmp.path(), 2, 32, &map);
    let v1 = cache_metadata(tmp.path(), 1, 32, &map);
    // Physical extent N starts at MiB 1 + N.
    for first in [1, 10, 20] {
        write_at(&pv, (1 + first) * MIB, &stale);
    }
    write_at(&fast, 2 * MIB, &data);
    write_at(&fast, 4 * MIB, &v1);
    write_at(&fast, 7 * MIB, &v2);
    write_at(&fast, 9 * MIB, &data);
    write_at(&fast, 12 * MIB, &data);
    write_at(&fast, 14 * MIB, &v2);

    let found = read_physical_volume(&mut open_disk(&pv), "disk0")
        .unwrap()
        .unwrap();
    let second = read_physical_volume(&mut open_disk(&fast), "disk1")
        .unwrap()
        .unwrap();
    assert_eq!(
        names(&found),
        [("a", 8 * MIB), ("b", 8 * MIB), ("c", 8 * MIB)]
    );
    let open = opener(vec![
        (found.uuid.clone(), pv.clone()),
        (second.uuid.clone(), fast.clone()),
    ]);
    for (lv, expect, motd) in [
        (0, &fresh, "fresh "),
        (1, &fresh, "fresh "),
        (2, &stale, "stale "),
    ] {
        let lv = &found.volumes[lv];
        let mut vol = assert_reads(lv, &open, expect, motd);
        if lv.name == "a" {
            assert_same_tree(&mut vol, "", &src, Expect { unix: true });
        }
    }
    // Without the cache's physical volume, a cached volume is refused, naming it.
    let slow_only = |uuid: &str| {
        if uuid == second.uuid {
            None
        } else {
            open(uuid)
        }
    };
    match LogicalVolumeReader::new(&found.volumes[0], slow_only, "disk0/a") {
        Err(FsError::Unsupported { detail, .. }) => {
            assert!(detail.contains(&second.uuid), "{detail}");
        }
        other => panic!("{:?}", other.err()),
    }
}

/// An old-style snapshot, written into metadata that `vgcfgrestore` checks: `data` (the
/// origin, holding a file system since changed) and `snap`, its snapshot, whose exception
/// store (4 KiB chunks, in `dm-snapshot`'s persistent layout) holds the old copies of the
/// chunks changed since and of others, in two areas and a scrambled order. `data` reads
/// as the changed file system, `snap` as the one the snapshot was taken of; an invalid
/// snapshot (one that overflowed) is refused.
#[test]
fn snapshots_read_their_exception_store_over_their_origin() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: making LVM physical volumes needs loop devices (root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    small_tree(&src);
    std::fs::write(src.join("motd"), b"before ".repeat(1200)).unwrap();
    let pv = tmp.path().join("pv.img");
    blank(&pv, 32 * MIB);
    let listed = restore_volumes(std::slice::from_ref(&pv), |keys| {
        let pv = keys[0].as_str();
        let mut lvs = lv_text("data", 1, true, &[linear(0, 8, pv, 1)]);
        lvs += &lv_text("snap", 2, false, &[linear(0, 4, pv, 10)]);
        let status = r#"["READ"]"#;
        lvs + &format!(
            "snapshot0 {{\nid = \"LvId03-abcd-efgh-ijkl-mnop-qrst-uvwx03\"\nstatus = {status}\n\
             flags = []\ncreation_time = 1700000000\ncreation_host = \"h\"\nsegment_count = 1\n\
             segment1 {{\nstart_extent = 0\nextent_count = 8\ntype = \"snapshot\"\n\
             chunk_size = 8\norigin = \"data\"\ncow_store = \"snap\"\n}}\n}}\n"
        )
    });
    // LVM takes `snap` for the snapshot (and shows it, hidden as its store's volume is).
    for expect in ["data linear 1 8.00m #0:1-8", "snap linear 1 4.00m #0:10-13"] {
        assert!(listed.iter().any(|l| l == expect), "{expect}: {listed:?}");
    }

    // The file system the snapshot was taken of, and the origin since: `motd` changed.
    let image = tmp.path().join("before.img");
    mkfs_ext("ext4", &src, &image, 8, &[]);
    let before = read_bytes(&image);
    let after = changed(&before, &b"before ".repeat(1200), &b"after! ".repeat(1200));
    const CHUNK: usize = 4096;
    let mut copied: Vec<usize> = (0..300).map(|k| k * 7 % 2048).collect();
    for (n, (b, a)) in before.chunks(CHUNK).zip(after.chunks(CHUNK)).enumerate() {
        if b != a && !copied.contains(&n) {
            copied.push(n);
        }
    }
    copied.sort_by_key(|&n| (n * 13) % 2048);
    // Areas of 256 exceptions, each followed by the chunks they copy to.
    let mut store = vec![0u8; 4 * MIB as usize];
    store[..16].copy_from_slice(&[0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0]);
    for (k, &old) in copied.iter().enumerate() {
        let (area, slot) = (k / 256, k % 256);
        let location = 1 + area * 257;
        let new = location + 1 + slot;
        let entry = location * CHUNK + 16 * slot;
        store[entry..entry + 8].copy_from_slice(&(old as u64).to_le_bytes());
        store[entry + 8..entry + 16].copy_from_slice(&(new as u64).to_le_bytes());
        store[new * CHUNK..][..CHUNK].copy_from_slice(&before[old * CHUNK..][..CHUNK]);
    }
    assert!(copied.len() > 256, "two areas: {}", copied.len());
    // Physical extent N starts at MiB 1 + N.
    write_at(&pv, 2 * MIB, &after);
    write_at(&pv, 11 * MIB, &store);

    let found = read_physical_volume(&mut open_disk(&pv), "disk0")
        .unwrap()
        .unwrap();
    assert_eq!(names(&found), [("data", 8 * MIB), ("snap", 8 * MIB)]);
    let open = opener(vec![(found.uuid.clone(), pv.clone())]);
    for (lv, expect, motd) in [(0, &after, "after! "), (1, &before, "before ")] {
        let lv = &found.volumes[lv];
        let mut vol = assert_reads(lv, &open, expect, motd);
        if lv.name == "snap" {
            assert_same_tree(&mut vol, "", &src, Expect { unix: true });
        }
    }
    // An invalid snapshot (VALID = 0) is refused, saying why.
    write_at(&pv, 11 * MIB + 4, &[0]);
    match LogicalVolumeReader::new(&found.volumes[1], &open, "disk0/snap") {
        Err(FsError::Unsupported { detail, .. }) => {
            assert!(detail.contains("overflowed"), "{detail}");
        }
        other => panic!("{:?}", other.err()),
    }
}
