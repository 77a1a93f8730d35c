//! VMDK images made by `qemu-img` read exactly as QEMU reads them: in one sparse file,
//! described by a descriptor file over flat, sparse and zero extents, and delta disks
//! over their parents, ESXi's vmfsSparse and seSparse snapshots among them. What this reader does not read or finds damaged (a missing or
//! short extent, a parent changed after the snapshot, an unknown extent type, a loop) is
//! refused with the reason.

use std::path::{Path, PathBuf};

use tessera_disk_image::{
    BackingRef, BackingRole, DiskImage, ExtentKind, Format, ImageError, ImageErrorKind, ImageFile,
    Stored, no_backing, open,
};

use crate::support::*;

const MIB: usize = 1 << 20;

/// Converts raw content of `size` bytes to a VMDK with `options`.
fn make(dir: &Path, name: &str, size: usize, options: &str) -> PathBuf {
    image_of_content(dir, name, size, "vmdk", options)
}

fn open_bytes(name: &str, bytes: Vec<u8>) -> Result<Box<dyn DiskImage>, ImageError> {
    open(ImageFile::new(name, Box::new(bytes)), None, &mut no_backing)
}

/// `bytes` with the first `from` replaced by `to`, which is as long.
fn replaced(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(from)));
    bytes[at..at + to.len()].copy_from_slice(to);
    bytes
}

#[test]
fn sparse_and_stream_optimized_disks_read_as_qemu_reads_them() {
    let dir = tempdir();
    for (name, options, changes) in [
        ("sparse.vmdk", "subformat=monolithicSparse", true),
        ("zeroed.vmdk", "zeroed_grain=on", true),
        ("version6.vmdk", "compat6=on", true),
        // QEMU writes a stream-optimized disk only front to back, while converting.
        ("stream.vmdk", "subformat=streamOptimized", false),
    ] {
        let image = make(dir.path(), name, 9 * MIB + 4096, options);
        if changes {
            qemu_io(
                &image,
                "vmdk",
                &[
                    "write -P 0x5a 12345 70000",
                    "write -z 3000000 200000",
                    "write -P 0xc3 8000000 512",
                ],
            );
        }
        assert_same_as_qemu(&image, "vmdk");
        let disk = open_file(&image, None).unwrap();
        assert_eq!(disk.format(), Format::Vmdk, "{}", disk.describe());
    }

    // Grains never written are holes; zero writes are zeroed grains.
    let sparse = path(dir.path(), "holes.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "zeroed_grain=on",
        sparse.to_str().unwrap(),
        "64M",
    ]);
    qemu_io(
        &sparse,
        "vmdk",
        &["write -z 0 1M", "write -P 1 40000000 70000"],
    );
    assert_same_as_qemu(&sparse, "vmdk");
    let mut disk = open_file(&sparse, None).unwrap();
    let data = data_extents(&mut *disk);
    // The two 64 KiB grains the write touches.
    assert_eq!(data, [(39_976_960, 131_072)]);
}

#[test]
fn a_directory_found_through_the_footer_reads_the_same() {
    let dir = tempdir();
    let image = make(
        dir.path(),
        "footer.vmdk",
        5 * MIB,
        "subformat=streamOptimized",
    );
    let expected = qemu_raw(&image, "vmdk", dir.path());
    let mut bytes = std::fs::read(&image).unwrap();
    // As VMware's stream writers leave it: the header says "at the end", and the footer
    // (a footer marker, the header with the directory's place, an end-of-stream marker)
    // says where.
    let header = bytes[..512].to_vec();
    bytes[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut marker = vec![0u8; 512];
    marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&marker);
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&[0u8; 512]);
    let mut disk = open_bytes("footer", bytes.clone()).unwrap();
    let mut ours = vec![0u8; expected.len()];
    disk.read_at(0, &mut ours).unwrap();
    assert_same_bytes(&ours, &expected, &image);

    // Without the footer: refused, naming the place.
    bytes.truncate(bytes.len() - 1536);
    let err = expect_error(open_bytes("nofooter", bytes), "nofooter");
    assert!(err.to_string().contains("footer"), "{err}");
}

#[test]
fn damaged_disks_and_lone_extents_are_refused_with_the_reason() {
    let dir = tempdir();
    let image = make(
        dir.path(),
        "refused.vmdk",
        3 * MIB,
        "subformat=monolithicSparse",
    );
    let good = std::fs::read(&image).unwrap();

    // Another kind of disk, a delta disk (a snapshot) and a lone extent.
    let other = replaced(good.clone(), b"monolithicSparse", b"twoGbMaxExtentSp");
    let err = expect_error(open_bytes("split", other), "split");
    assert!(
        matches!(err.kind(), ImageErrorKind::Unsupported { .. })
            && err.to_string().contains("twoGbMaxExtentSp"),
        "{err}"
    );
    let delta = replaced(good.clone(), b"parentCID=ffffffff", b"parentCID=1234abcd");
    let err = expect_error(open_bytes("delta", delta), "delta");
    assert!(
        err.to_string().contains("delta disk") && err.to_string().contains("parentFileNameHint"),
        "{err}"
    );
    let mut extent = good.clone();
    extent[28..36].fill(0);
    let err = expect_error(open_bytes("extent", extent), "extent");
    assert!(err.to_string().contains("one extent"), "{err}");

    // A grain size that is no power of two.
    let mut bytes = good.clone();
    bytes[20..28].copy_from_slice(&100u64.to_le_bytes());
    let err = expect_error(open_bytes("grain", bytes), "grain");
    assert!(
        matches!(
            err.kind(),
            ImageErrorKind::Corrupt {
                offset: Some(20),
                ..
            }
        ),
        "{err}"
    );

    // A grain past the end of the file: the error names its table entry.
    let gd = u64::from_le_bytes(good[56..64].try_into().unwrap()) as usize * 512;
    let gt = u32::from_le_bytes(good[gd..gd + 4].try_into().unwrap()) as usize * 512;
    let mut bytes = good.clone();
    bytes[gt + 4..gt + 8].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let err = expect_error(open_bytes("beyond", bytes), "beyond");
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == gt as u64 + 4),
        "{err}"
    );

    // A compressed grain whose bytes were damaged: refused when read, with its place.
    let stream = make(
        dir.path(),
        "damaged.vmdk",
        3 * MIB,
        "subformat=streamOptimized",
    );
    let mut bytes = std::fs::read(&stream).unwrap();
    let gd = u64::from_le_bytes(bytes[56..64].try_into().unwrap()) as usize * 512;
    let gt = u32::from_le_bytes(bytes[gd..gd + 4].try_into().unwrap()) as usize * 512;
    // The first grain stored.
    let (index, grain) = (0..512)
        .map(|i| {
            let at = gt + i * 4;
            (
                i,
                u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize * 512,
            )
        })
        .find(|&(_, grain)| grain != 0)
        .unwrap();
    for b in &mut bytes[grain + 14..grain + 40] {
        *b ^= 0x5a;
    }
    let mut disk = open_bytes("inflate", bytes).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = disk.read_at(index as u64 * 65536, &mut buf).unwrap_err();
    assert!(
        matches!(err.kind(), ImageErrorKind::Decompress { offset, .. } if *offset == grain as u64 + 12),
        "{err}"
    );
}

/// The descriptor file of a disk, as text.
fn descriptor(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Rewrites the descriptor file at `path` with `from` replaced by `to`.
fn edit_descriptor(path: &Path, from: &str, to: &str) {
    let text = descriptor(path);
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The value of `key=` in a descriptor.
fn descriptor_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .trim_matches('"')
        .to_owned()
}

/// Checks that a disk described by a descriptor file reads as QEMU reads it, that the
/// host is never told to read its bytes from the descriptor file, and that the bytes the
/// runs place in flat extent files are the disk's.
fn assert_described_disk_reads_as_qemu(path: &Path) {
    assert_same_as_qemu_with(path, "vmdk", MapView::NonZeroData);
    let mut disk = open_file(path, None).unwrap();
    assert_eq!(disk.format(), Format::Vmdk);
    let size = disk.virtual_size();
    let runs = disk.runs(0, size).unwrap();
    assert!(
        !runs.iter().any(|r| matches!(r.stored, Stored::InFile(_))),
        "{}: {runs:?}",
        disk.describe()
    );
    let descriptor = std::fs::File::open(path).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    assert!(
        read_by_runs(&mut *disk, &descriptor, 0, size) == qemu_raw(path, "vmdk", scratch.path()),
        "{}",
        disk.describe()
    );
}

#[test]
fn flat_and_split_disks_read_as_qemu_reads_them() {
    let dir = tempdir();
    for subformat in [
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    ] {
        let name = format!("{subformat}.vmdk");
        let image = make(
            dir.path(),
            &name,
            9 * MIB + 4096,
            &format!("subformat={subformat}"),
        );
        assert!(descriptor(&image).starts_with("# Disk DescriptorFile"));
        qemu_io(
            &image,
            "vmdk",
            &[
                "write -P 0x5a 12345 70000",
                "write -z 3000000 200000",
                "write -P 0xc3 8000000 512",
            ],
        );
        assert_described_disk_reads_as_qemu(&image);
        let mut disk = open_file(&image, None).unwrap();
        assert!(disk.describe().contains(subformat), "{}", disk.describe());
        if subformat.ends_with("Flat") {
            // The host may read all of a flat disk straight from its extent files.
            let size = disk.virtual_size();
            let runs = disk.runs(0, size).unwrap();
            assert!(
                runs.iter()
                    .all(|r| matches!(r.stored, Stored::InNamedFile(..))),
                "{runs:?}"
            );
            let Stored::InNamedFile(first, 0) = runs[0].stored else {
                panic!("{runs:?}");
            };
            assert!(
                disk.file_name(first).unwrap().ends_with("-f001.vmdk")
                    || disk.file_name(first).unwrap().ends_with("-flat.vmdk"),
                "{:?}",
                disk.file_name(first)
            );
        }
    }
}

#[test]
fn a_disk_split_over_several_extents_reads_across_their_bounds() {
    let dir = tempdir();
    let d = dir.path();
    // QEMU splits at 2 GiB: three extents, the last one short. Only what is written takes
    // room; the disk is compared where it was written and in its map, not byte for byte.
    for (name, subformat) in [
        ("sparse.vmdk", "twoGbMaxExtentSparse"),
        ("flat.vmdk", "twoGbMaxExtentFlat"),
    ] {
        let image = path(d, name);
        let options = format!("subformat={subformat}");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            &options,
            image.to_str().unwrap(),
            "4100M",
        ]);
        let two_gib: u64 = 2 << 30;
        let writes = [
            (0x11u8, two_gib - 70_000, 140_000u64),
            (0x22, 2 * two_gib - 512, 1024),
            (0x33, 4100 * MIB as u64 - 8192, 4096),
        ];
        let commands: Vec<String> = writes
            .iter()
            .map(|(p, at, len)| format!("write -P {p:#x} {at} {len}"))
            .collect();
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        qemu_io(&image, "vmdk", &commands);
        let text = descriptor(&image);
        assert_eq!(text.lines().filter(|l| l.starts_with("RW ")).count(), 3);

        let mut disk = open_file(&image, None).unwrap();
        assert_eq!(disk.virtual_size(), 4100 * MIB as u64);
        for (pattern, at, len) in writes {
            // With a margin of zeros around each write, where the grain or file holds them.
            let mut buf = vec![0xa5u8; len as usize + 1024];
            disk.read_at(at - 512, &mut buf).unwrap();
            assert!(buf[..512].iter().all(|&b| b == 0), "{name} before {at}");
            assert!(
                buf[512..512 + len as usize].iter().all(|&b| b == pattern),
                "{name} at {at}"
            );
            assert!(
                buf[512 + len as usize..].iter().all(|&b| b == 0),
                "{name} after {at}"
            );
        }
        assert_eq!(
            our_map(&mut *disk),
            qemu_map_as(&image, "vmdk", MapView::NonZeroData),
            "map of {}",
            disk.describe()
        );

        // A descriptor without its middle extent line no longer matches its geometry.
        let second = text
            .lines()
            .filter(|l| l.starts_with("RW "))
            .nth(1)
            .unwrap()
            .to_owned();
        edit_descriptor(&image, &format!("{second}\n"), "");
        let err = expect_error(open_file(&image, None), d.to_str().unwrap());
        assert!(
            err.to_string().contains("an extent line is missing"),
            "{err}"
        );
    }
}

#[test]
fn vmfs_and_zero_extents_read_as_described() {
    let dir = tempdir();
    let d = dir.path();
    let image = make(d, "esx.vmdk", 3 * MIB, "subformat=monolithicFlat");
    let expected = qemu_raw(&image, "vmdk", d);
    // As ESXi writes it: a `vmfs` disk whose extent gives no offset. QEMU reads it too.
    let text = descriptor(&image);
    let line = text.lines().find(|l| l.starts_with("RW ")).unwrap();
    let vmfs = line.replace(" FLAT ", " VMFS ").replace("\" 0", "\"");
    edit_descriptor(&image, line, &vmfs);
    edit_descriptor(&image, "monolithicFlat", "vmfs");
    assert_described_disk_reads_as_qemu(&image);

    // A ZERO extent (which QEMU does not read) after it: a MiB of known zeros.
    edit_descriptor(&image, &vmfs, &format!("{vmfs}\nRW 2048 ZERO"));
    let mut disk = open_file(&image, None).unwrap();
    assert_eq!(disk.virtual_size(), 4 * MIB as u64);
    let mut ours = vec![0xa5u8; 4 * MIB];
    disk.read_at(0, &mut ours).unwrap();
    assert_same_bytes(&ours[..3 * MIB], &expected, &image);
    assert!(ours[3 * MIB..].iter().all(|&b| b == 0));
    let map = disk.map(3 * MIB as u64 - 512, MIB as u64 + 512).unwrap();
    let last = map.last().unwrap();
    assert!(
        last.kind == ExtentKind::Zero && last.offset <= 3 * MIB as u64,
        "{map:?}"
    );
}

/// `qemu-img create` of a VMDK delta disk `name` over `parent`, of `subformat`.
fn create_delta(dir: &Path, name: &str, parent: &str, subformat: &str) -> PathBuf {
    let image = path(dir, name);
    let options = format!("subformat={subformat}");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        &options,
        "-b",
        parent,
        "-F",
        "vmdk",
        image.to_str().unwrap(),
    ]);
    image
}

#[test]
fn delta_chains_of_two_and_three_read_as_qemu_reads_them() {
    let dir = tempdir();
    let d = dir.path();
    make(d, "base.vmdk", 6 * MIB, "subformat=monolithicSparse");
    let mid = create_delta(d, "mid.vmdk", "base.vmdk", "monolithicSparse");
    qemu_io(
        &mid,
        "vmdk",
        &[
            "write -P 0x21 100000 50000",
            "write -z 1048576 65536",
            "write -P 0x22 4000000 8192",
        ],
    );
    assert_same_as_qemu_with(&mid, "vmdk", MapView::NonZeroData);
    let top = create_delta(d, "top.vmdk", "mid.vmdk", "twoGbMaxExtentSparse");
    qemu_io(
        &top,
        "vmdk",
        &[
            "write -P 0x31 120000 7000",
            "write -z 2097152 131072",
            "write -P 0x32 5000000 100",
        ],
    );
    assert_described_disk_reads_as_qemu(&top);
    let mut disk = open_file(&top, None).unwrap();
    let description = disk.describe();
    assert!(
        description.contains("mid.vmdk") && description.contains("base.vmdk"),
        "{description}"
    );
    // The top delta's grains lie in its extent file, the rest in the parents' files: the
    // host reads all of it itself.
    assert_eq!(stored_in(&mut *disk, 120_000), "top-s001.vmdk");
    assert_eq!(stored_in(&mut *disk, 140_000), "mid.vmdk");
    assert_eq!(
        files_holding_data(&mut *disk),
        ["base.vmdk", "mid.vmdk", "top-s001.vmdk"]
    );

    // The middle delta's own grains are read by the host from its file, the parent's
    // through the reader.
    let mut mid_disk = open_file(&mid, None).unwrap();
    let runs = mid_disk.runs(0, 6 * MIB as u64).unwrap();
    let in_file: Vec<(u64, u64)> = runs
        .iter()
        .filter(|r| matches!(r.stored, Stored::InFile(_)))
        .map(|r| (r.offset, r.length))
        .collect();
    assert_eq!(
        in_file,
        [(65536, 131072), (1048576, 65536), (3997696, 65536)]
    );

    // A delta over a flat disk.
    make(d, "flatbase.vmdk", 2 * MIB, "subformat=monolithicFlat");
    let over_flat = create_delta(d, "overflat.vmdk", "flatbase.vmdk", "monolithicSparse");
    qemu_io(&over_flat, "vmdk", &["write -P 0x44 1000 3000"]);
    assert_same_as_qemu_with(&over_flat, "vmdk", MapView::NonZeroData);
}

/// Makes an ESXi snapshot `out` of `format` over `parent`, its grains' bytes from `raw`,
/// with `tests/scripts/esx-snapshot.py` and `extra` arguments.
fn esx_snapshot(format: &str, parent: &Path, raw: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![format, parent.to_str().unwrap(), raw.to_str().unwrap()];
    args.extend_from_slice(extra);
    fixture_script("esx-snapshot.py", &args, out);
}

#[test]
fn esxi_snapshots_read_as_qemu_reads_them() {
    let dir = tempdir();
    let d = dir.path();
    let size = 16 * MIB;
    let base = make(d, "base.vmdk", size, "subformat=monolithicFlat");
    let raw = write_raw(d, "new.raw", &content(size, 77));
    let written = "0+4096,1000000+70000,16773120+4096";
    // A vmfsSparse snapshot (a COWD file, grains of a sector) and a seSparse one (grains
    // of 4 KiB, some zero and some unmapped) over the flat base.
    let cowd = path(d, "web-000001.vmdk");
    esx_snapshot("vmfsSparse", &base, &raw, &cowd, &["--written", written]);
    let se = path(d, "web-000002.vmdk");
    let zeros = ["--zero", "8388608+8192", "--unmapped", "12582912+4096"];
    esx_snapshot(
        "seSparse",
        &base,
        &raw,
        &se,
        &[&["--written", written][..], &zeros].concat(),
    );
    for (snapshot, file) in [
        (&cowd, "web-000001-delta.vmdk"),
        (&se, "web-000002-sesparse.vmdk"),
    ] {
        assert_described_disk_reads_as_qemu(snapshot);
        let mut disk = open_file(snapshot, None).unwrap();
        assert_eq!(stored_in(&mut *disk, 1_000_100), file);
        assert_eq!(stored_in(&mut *disk, 5 * MIB as u64), "base-flat.vmdk");
        assert!(disk.describe().contains("ESXi"), "{}", disk.describe());
    }

    // A seSparse snapshot of the vmfsSparse one, as ESXi 6.5 stacks them after an
    // upgrade: each grain from the newest file holding it.
    let raw2 = write_raw(d, "newer.raw", &content(size, 78));
    let top = path(d, "web-000003.vmdk");
    esx_snapshot(
        "seSparse",
        &cowd,
        &raw2,
        &top,
        &["--written", "996000+8192,9000000+4096"],
    );
    assert_described_disk_reads_as_qemu(&top);
    let mut disk = open_file(&top, None).unwrap();
    assert_eq!(stored_in(&mut *disk, 1_000_000), "web-000003-sesparse.vmdk");
    assert_eq!(stored_in(&mut *disk, 1_010_000), "web-000001-delta.vmdk");
    assert_eq!(stored_in(&mut *disk, 2_000_000), "base-flat.vmdk");
}

#[test]
fn damaged_esxi_snapshots_are_refused_with_the_reason() {
    let dir = tempdir();
    let d = dir.path();
    let size = 4 * MIB;
    let base = make(d, "base.vmdk", size, "subformat=monolithicFlat");
    let raw = write_raw(d, "new.raw", &content(size, 79));
    let se = path(d, "se.vmdk");
    esx_snapshot("seSparse", &base, &raw, &se, &["--written", "0+65536"]);
    let extent = path(d, "se-sesparse.vmdk");
    let good = std::fs::read(&extent).unwrap();
    let refused = |bytes: &[u8]| {
        std::fs::write(&extent, bytes).unwrap();
        let err = open_file(&se, None)
            .and_then(|mut disk| {
                let mut buf = vec![0u8; size];
                disk.read_at(0, &mut buf).map(|()| disk)
            })
            .err()
            .expect("refused");
        err.to_string()
    };
    // A journal to replay, another version, a table entry of no known kind, a grain
    // past the end of the file.
    let mut bytes = good.clone();
    bytes[512 + 24] = 1;
    assert!(refused(&bytes).contains("replayed"));
    let mut bytes = good.clone();
    bytes[8] = 2;
    assert!(refused(&bytes).contains("version"));
    let tables = u64::from_le_bytes(good[18 * 8..19 * 8].try_into().unwrap()) as usize * 512;
    let mut bytes = good.clone();
    bytes[tables + 7] = 0x40;
    let message = refused(&bytes);
    assert!(
        message.contains("of no known kind") && message.contains(&format!("{tables:#x}")),
        "{message}"
    );
    let message = refused(&good[..good.len() - 4096]);
    assert!(message.contains("past the end"), "{message}");

    // A snapshot over a parent that changed since (another CID) is refused, as for any
    // delta; a COWD file opened without its descriptor says to open the descriptor.
    std::fs::write(&extent, &good).unwrap();
    let stale = path(d, "stale.vmdk");
    esx_snapshot(
        "vmfsSparse",
        &base,
        &raw,
        &stale,
        &["--written", "0+512", "--parent-cid", "12345678"],
    );
    let err = open_file(&stale, None)
        .err()
        .expect("a changed parent is refused");
    assert!(err.to_string().contains("parent changed"), "{err}");
    let err = open_file(&path(d, "stale-delta.vmdk"), None)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("descriptor"), "{err}");
}

#[test]
fn a_parent_written_after_the_snapshot_is_refused() {
    let dir = tempdir();
    let d = dir.path();
    let base = make(d, "base.vmdk", 2 * MIB, "subformat=twoGbMaxExtentSparse");
    let delta = create_delta(d, "delta.vmdk", "base.vmdk", "monolithicSparse");
    qemu_io(&delta, "vmdk", &["write -P 1 0 4096"]);
    assert!(open_file(&delta, None).is_ok());
    // Writing to the parent gives it a new CID: the delta's grains no longer apply.
    let cid = |text: &str| {
        let value = descriptor_value(text, "CID");
        format!("{:08x}", u32::from_str_radix(&value, 16).unwrap())
    };
    let before = cid(&descriptor(&base));
    qemu_io(&base, "vmdk", &["write -P 2 65536 4096"]);
    let after = cid(&descriptor(&base));
    assert_ne!(before, after);
    let delta = delta.canonicalize().unwrap();
    let err = expect_error(open_file(&delta, None), delta.to_str().unwrap());
    let message = err.to_string();
    assert!(
        message.contains("parent changed after the snapshot")
            && message.contains(&before)
            && message.contains(&after),
        "{message}"
    );
    // The error points at the delta's parentCID line, in its embedded descriptor.
    let bytes = std::fs::read(&delta).unwrap();
    let line = bytes.windows(10).position(|w| w == b"parentCID=").unwrap() as u64;
    assert!(
        matches!(err.kind(), ImageErrorKind::Corrupt { offset: Some(o), .. } if *o == line),
        "{err}"
    );
}

#[test]
fn missing_short_and_unknown_extents_are_refused_naming_the_line() {
    let dir = tempdir();
    let d = dir.path();
    let name = |p: &Path| p.canonicalize().unwrap().to_str().unwrap().to_owned();

    // A missing extent file.
    let split = make(d, "split.vmdk", MIB, "subformat=twoGbMaxExtentSparse");
    let extent = path(d, "split-s001.vmdk");
    std::fs::rename(&extent, path(d, "moved.vmdk")).unwrap();
    let err = expect_error(open_file(&split, None), &name(&split));
    assert!(
        matches!(err.kind(), ImageErrorKind::ExtentUnavailable { extent, .. } if extent == "split-s001.vmdk"),
        "{err}"
    );
    assert!(err.to_string().contains("extent file"), "{err}");
    // Opened without any other file, the same.
    let bytes = std::fs::read(&split).unwrap();
    let err = expect_error(open_bytes("alone", bytes), "alone");
    assert!(
        matches!(err.kind(), ImageErrorKind::ExtentUnavailable { .. }),
        "{err}"
    );
    std::fs::rename(path(d, "moved.vmdk"), &extent).unwrap();
    // A sparse extent holding other than the sectors its line gives.
    edit_descriptor(&split, "RW 2048 SPARSE", "RW 2056 SPARSE");
    let err = expect_error(open_file(&split, None), &name(&split));
    assert!(
        err.to_string().contains("descriptor line 8") && err.to_string().contains("holds 2048"),
        "{err}"
    );

    // A flat extent past the end of its file, and at an offset past it.
    let flat = make(d, "flat.vmdk", MIB, "subformat=monolithicFlat");
    let data = path(d, "flat-flat.vmdk");
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    file.set_len(MIB as u64 - 512).unwrap();
    let err = expect_error(open_file(&flat, None), &name(&flat));
    assert!(
        err.to_string().contains("descriptor line 8") && err.to_string().contains("pass the end"),
        "{err}"
    );
    file.set_len(MIB as u64).unwrap();
    assert!(open_file(&flat, None).is_ok());
    edit_descriptor(&flat, "\" 0", "\" 1");
    let err = expect_error(open_file(&flat, None), &name(&flat));
    assert!(err.to_string().contains("pass the end"), "{err}");
    edit_descriptor(&flat, "\" 1", "\" 0");

    // An ESXi snapshot extent that is not one.
    for (kind, expect) in [("VMFSSPARSE", "`COWD`"), ("SESPARSE", "0xcafebabe")] {
        edit_descriptor(
            &flat,
            " FLAT \"flat-flat.vmdk\" 0",
            &format!(" {kind} \"flat-flat.vmdk\""),
        );
        let err = expect_error(open_file(&flat, None), &name(&data));
        assert!(err.to_string().contains(expect), "{kind}: {err}");
        edit_descriptor(
            &flat,
            &format!(" {kind} \"flat-flat.vmdk\""),
            " FLAT \"flat-flat.vmdk\" 0",
        );
    }

    // Extent types that are not read, and nonsense.
    for (kind, expect) in [
        ("VMFSRDM", "raw device"),
        ("VMFSRAW", "raw device"),
        ("WHATEVER", "\"WHATEVER\""),
    ] {
        edit_descriptor(&flat, " FLAT ", &format!(" {kind} "));
        let err = expect_error(open_file(&flat, None), &name(&flat));
        assert!(
            matches!(err.kind(), ImageErrorKind::Unsupported { .. })
                && err.to_string().contains("descriptor line 8")
                && err.to_string().contains(expect),
            "{kind}: {err}"
        );
        edit_descriptor(&flat, &format!(" {kind} "), " FLAT ");
    }
    assert!(open_file(&flat, None).is_ok());
}

#[test]
fn a_loop_of_descriptors_is_refused() {
    let dir = tempdir();
    let d = dir.path();
    let b = path(d, "b.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        b.to_str().unwrap(),
        "1M",
    ]);
    let a = create_delta(d, "a.vmdk", "b.vmdk", "twoGbMaxExtentSparse");
    // The parent made a delta of its own child.
    let a_cid = descriptor_value(&descriptor(&a), "CID");
    edit_descriptor(
        &b,
        "parentCID=ffffffff",
        &format!("parentCID={a_cid}\nparentFileNameHint=\"a.vmdk\""),
    );
    let a_name = a.canonicalize().unwrap().to_str().unwrap().to_owned();
    let b_name = b.canonicalize().unwrap().to_str().unwrap().to_owned();
    let err = expect_error(open_file(&a, None), &b_name);
    match err.kind() {
        ImageErrorKind::BackingLoop { chain } => {
            assert_eq!(chain, &[a_name.clone(), b_name.clone(), a_name])
        }
        other => panic!("expected a loop, got {other}"),
    }

    // A delta disk that is its own parent.
    let b_cid = descriptor_value(&descriptor(&b), "CID");
    edit_descriptor(
        &b,
        &format!("parentCID={a_cid}\nparentFileNameHint=\"a.vmdk\""),
        &format!("parentCID={b_cid}\nparentFileNameHint=\"b.vmdk\""),
    );
    let err = expect_error(open_file(&b, None), &b_name);
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingLoop { .. }),
        "{err}"
    );
}

#[test]
fn extent_files_and_parents_go_through_the_opener() {
    let dir = tempdir();
    let d = dir.path();
    make(d, "base.vmdk", MIB, "subformat=twoGbMaxExtentFlat");
    let top = create_delta(d, "top.vmdk", "base.vmdk", "twoGbMaxExtentSparse");
    let mut seen = Vec::new();
    let mut record = |b: &BackingRef| {
        seen.push((b.name.clone(), b.role, b.format));
        opener(b)
    };
    let top = top.canonicalize().unwrap();
    let file = ImageFile::new(
        top.to_str().unwrap(),
        Box::new(std::fs::read(&top).unwrap()),
    );
    let disk = open(file, None, &mut record).unwrap();
    assert_eq!(disk.virtual_size(), MIB as u64);
    assert_eq!(
        seen,
        [
            (
                "top-s001.vmdk".to_owned(),
                BackingRole::Extent,
                Some(Format::Vmdk)
            ),
            (
                "base.vmdk".to_owned(),
                BackingRole::Backing,
                Some(Format::Vmdk)
            ),
            (
                "base-f001.vmdk".to_owned(),
                BackingRole::Extent,
                Some(Format::Raw)
            ),
        ]
    );
}
