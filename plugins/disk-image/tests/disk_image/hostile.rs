//! Hostile input: random bytes and valid images with bytes flipped in the header and the
//! tables are opened, mapped and read. Errors are expected; panics, hangs and huge
//! allocations are not (every buffer the reader sizes from the image is bounded).

use std::io::Cursor;
use std::sync::OnceLock;

use proptest::prelude::*;
use tessera_disk_image::{
    BackingRef, DiskImage, Format, ImageError, ImageFile, Qcow2Writer, Qcow2WriterOptions, open,
};

use crate::support::*;

/// Opens `bytes` as an image (probed, and forced to each format but raw) and maps and
/// reads it. Backing files resolve to a small raw disk.
fn exercise(bytes: &[u8], seed: u64) {
    for format in [
        None,
        Some(Format::Qcow2),
        Some(Format::Vhd),
        Some(Format::Vhdx),
        Some(Format::Vmdk),
        Some(Format::Vdi),
    ] {
        let file = ImageFile::new("hostile", Box::new(bytes.to_vec()));
        let mut opener = |b: &BackingRef| -> Result<ImageFile, ImageError> {
            let name = format!("{}/backing", b.referenced_by);
            Ok(ImageFile::new(name, Box::new(vec![0x11u8; 70_000])))
        };
        if let Ok(mut image) = open(file, format, &mut opener) {
            use_image(&mut *image, seed);
        }
    }
}

fn use_image(image: &mut dyn DiskImage, seed: u64) {
    let size = image.virtual_size();
    let _ = image.describe();
    let _ = image.map(0, size);
    let _ = image.runs(0, size);
    let mut rng = SplitMix::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    // The whole of a small disk; windows of a large one.
    if size <= 16 << 20 {
        let mut pos = 0;
        while pos < size {
            let n = (size - pos).min(buf.len() as u64);
            if image.read_at(pos, &mut buf[..n as usize]).is_err() {
                break;
            }
            pos += n;
        }
    } else {
        for _ in 0..8 {
            let n = rng.below(buf.len() as u64);
            let at = rng.below(size - n);
            let _ = image.read_at(at, &mut buf[..n as usize]);
            let _ = image.map(at, n.max(1 << 30).min(size - at));
            let _ = image.runs(at, n.max(1 << 30).min(size - at));
        }
    }
    let _ = image.read_at(size, &mut buf[..1]);
    let _ = image.map(size.saturating_sub(1), 2);
    let _ = image.runs(size.saturating_sub(1), 2);
    for (at, n) in [(0, size), (size / 3, size / 3 + 1), (size, 0)] {
        let _ = image.dirty_ranges("b0", at, n.min(size - at));
    }
}

/// A small image with data in several L2 tables, written by our writer (4 KiB clusters).
fn writer_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let options = Qcow2WriterOptions { cluster_bits: 12 };
        let mut w = Qcow2Writer::create_with(Cursor::new(Vec::new()), 4 << 20, options).unwrap();
        let mut rng = SplitMix::new(5);
        for i in (0..1024u64).step_by(37) {
            let mut data = vec![0u8; 4096];
            rng.fill(&mut data);
            w.write_cluster(i * 4096, &data).unwrap();
        }
        w.finish().unwrap().into_inner()
    })
}

/// Flips bytes: `header` of them among the first 512, `anywhere` across the file.
fn mutate(image: &[u8], rng: &mut SplitMix, header: usize, anywhere: usize) -> Vec<u8> {
    let mut bytes = image.to_vec();
    for _ in 0..header {
        let at = rng.below(512.min(bytes.len() as u64)) as usize;
        bytes[at] = rng.next_u64() as u8;
    }
    for _ in 0..anywhere {
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] ^= 1 << rng.below(8);
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        mut bytes in prop::collection::vec(any::<u8>(), 0..8192),
        version in 2u32..=3,
        cluster_bits in 9u32..=21,
        qcow2_magic in any::<bool>(),
    ) {
        if qcow2_magic && bytes.len() >= 24 {
            bytes[0..4].copy_from_slice(b"QFI\xfb");
            bytes[4..8].copy_from_slice(&version.to_be_bytes());
            bytes[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        }
        exercise(&bytes, bytes.len() as u64);
    }

    #[test]
    fn mutated_written_images_never_panic(seed in any::<u64>(), header in 0usize..6, anywhere in 0usize..24) {
        let mut rng = SplitMix::new(seed);
        let bytes = mutate(writer_image(), &mut rng, header, anywhere);
        exercise(&bytes, seed);
    }
}

/// Images made by QEMU with each kind of cluster, mutated many times over.
#[test]
fn mutated_qemu_images_never_panic() {
    let dir = tempdir();
    let d = dir.path();
    let src = write_raw(d, "src.raw", &content(2 << 20, 9));
    let mut images = Vec::new();
    for (name, options, compress) in [
        ("v2.qcow2", "compat=0.10,cluster_size=4k", false),
        ("zlib.qcow2", "cluster_size=4k", true),
        ("zstd.qcow2", "compression_type=zstd,cluster_size=4k", true),
        ("extl2.qcow2", "extended_l2=on,cluster_size=16k", false),
        ("big.qcow2", "cluster_size=2M", true),
    ] {
        let out = path(d, name);
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2", "-o", options];
        if compress {
            args.push("-c");
        }
        args.extend([src.to_str().unwrap(), out.to_str().unwrap()]);
        qemu_img(&args);
        qemu_io(
            &out,
            "qcow2",
            &["write -z 100000 300000", "write -P 7 1000000 5000"],
        );
        images.push(std::fs::read(&out).unwrap());
    }
    // With a backing file name and format in the header.
    let backed = path(d, "backed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "v2.qcow2",
        "-F",
        "qcow2",
        "-o",
        "cluster_size=4k",
        backed.to_str().unwrap(),
    ]);
    qemu_io(&backed, "qcow2", &["write -P 9 0 70000"]);
    images.push(std::fs::read(&backed).unwrap());
    // With persistent dirty bitmaps, one of them written to.
    let bitmapped = path(d, "bitmapped.qcow2");
    convert_raw(&src, &bitmapped, "qcow2", "cluster_size=4k");
    for (granularity, bitmap) in [("4096", "b0"), ("65536", "b1")] {
        let image = bitmapped.to_str().unwrap();
        qemu_img(&["bitmap", "--add", "-g", granularity, image, bitmap]);
    }
    qemu_io(&bitmapped, "qcow2", &["write -P 5 300000 9000"]);
    images.push(std::fs::read(&bitmapped).unwrap());

    let mut rng = SplitMix::new(1);
    for image in &images {
        for round in 0..150 {
            let header = rng.below(4) as usize;
            let anywhere = rng.below(16) as usize;
            let bytes = mutate(image, &mut rng, header, anywhere);
            exercise(&bytes, round);
        }
        // Cut short anywhere.
        for _ in 0..20 {
            let cut = rng.below(image.len() as u64) as usize;
            exercise(&image[..cut], 0);
        }
    }
}

/// Makes the checksums of a VHD's footers and dynamic disk header right again, wherever
/// they still carry their cookies, so that mutations reach the fields behind them.
fn fix_vhd_checksums(bytes: &mut [u8]) {
    let fix = |bytes: &mut [u8], at: usize, len: usize, field: usize| {
        if at + len > bytes.len() {
            return;
        }
        bytes[at + field..at + field + 4].fill(0);
        let sum = bytes[at..at + len]
            .iter()
            .fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
        bytes[at + field..at + field + 4].copy_from_slice(&(!sum).to_be_bytes());
    };
    let len = bytes.len();
    for at in [0, len.saturating_sub(512)] {
        if bytes.get(at..at + 8) == Some(b"conectix") {
            fix(bytes, at, 512, 64);
        }
    }
    if let Some(header) = bytes.get(16..24) {
        let header = u64::from_be_bytes(header.try_into().unwrap());
        if let Ok(header) = usize::try_from(header)
            && bytes.get(header..header.saturating_add(8)) == Some(b"cxsparse")
        {
            fix(bytes, header, 1024, 36);
        }
    }
}

/// `src` converted by QEMU into `format` with each of `variants` (`-o` options).
fn converted(src: &std::path::Path, format: &str, variants: &[&str]) -> Vec<Vec<u8>> {
    variants
        .iter()
        .enumerate()
        .map(|(i, options)| {
            let out = src.with_extension(format!("{i}.{format}"));
            convert_raw(src, &out, format, options);
            std::fs::read(&out).unwrap()
        })
        .collect()
}

/// Exercises each of `images` after `mutate` changed it, 200 times, as it is and with
/// `fix` making its checksums right again (a format without checksums fixes nothing);
/// then cut short anywhere.
fn fuzz_with_checksums(
    images: &[Vec<u8>],
    seed: u64,
    mut mutate: impl FnMut(&[u8], &mut SplitMix) -> Vec<u8>,
    fix: fn(&mut [u8]),
) {
    let mut rng = SplitMix::new(seed);
    for image in images {
        for round in 0..200 {
            let mut bytes = mutate(image, &mut rng);
            exercise(&bytes, round);
            fix(&mut bytes);
            exercise(&bytes, round);
        }
        for _ in 0..20 {
            let cut = rng.below(image.len() as u64) as usize;
            exercise(&image[..cut], 0);
        }
    }
}

/// VHD images made by QEMU, fixed and dynamic, mutated many times over: as they are, and
/// with their checksums made right again.
#[test]
fn mutated_vhd_images_never_panic() {
    let dir = tempdir();
    let src = write_raw(dir.path(), "src.raw", &content(5 << 20, 11));
    let images = converted(&src, "vpc", &["subformat=dynamic", "subformat=fixed"]);
    let mutate = |image: &[u8], rng: &mut SplitMix| {
        let header = rng.below(4) as usize;
        let anywhere = rng.below(16) as usize;
        let mut bytes = mutate(image, rng, header, anywhere);
        // Also in the dynamic header and the block table that follow the first sector.
        for _ in 0..rng.below(6) {
            let at = 512 + rng.below(2048.min(bytes.len() as u64 - 512)) as usize;
            bytes[at] = rng.next_u64() as u8;
        }
        bytes
    };
    fuzz_with_checksums(&images, 2, mutate, fix_vhd_checksums);
}

/// Makes the CRC-32C checksums of a VHDX's headers and region tables right again.
fn fix_vhdx_checksums(bytes: &mut [u8]) {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    for (at, len) in [
        (64 << 10, 4096),
        (128 << 10, 4096),
        (192 << 10, 64 << 10),
        (256 << 10, 64 << 10),
    ] {
        if at + len <= bytes.len() {
            bytes[at + 4..at + 8].fill(0);
            let sum = crc.checksum(&bytes[at..at + len]);
            bytes[at + 4..at + 8].copy_from_slice(&sum.to_le_bytes());
        }
    }
}

/// VHDX images made by QEMU, fixed and dynamic, mutated in their headers, region tables,
/// metadata and block table many times over: as they are, and with their checksums made
/// right again.
#[test]
fn mutated_vhdx_images_never_panic() {
    let dir = tempdir();
    let src = write_raw(dir.path(), "src.raw", &content(5 << 20, 12));
    let variants = [
        "subformat=dynamic,block_size=1M",
        "subformat=fixed,block_size=1M",
    ];
    let images = converted(&src, "vhdx", &variants);
    // The structures: both headers, both region tables, and the first MiB after them,
    // where QEMU puts the log, the metadata region and the block table.
    let windows = [
        (64 << 10, 4096),
        (128 << 10, 4096),
        (192 << 10, 1024),
        (256 << 10, 1024),
        (1 << 20, 3 << 20),
    ];
    let mutate = |image: &[u8], rng: &mut SplitMix| {
        let mut bytes = image.to_vec();
        for _ in 0..1 + rng.below(6) {
            let (start, len) = windows[rng.below(windows.len() as u64) as usize];
            let at = start + rng.below(len) as usize;
            if at < bytes.len() {
                bytes[at] = rng.next_u64() as u8;
            }
        }
        bytes
    };
    fuzz_with_checksums(&images, 3, mutate, fix_vhdx_checksums);
}

/// VMDK images made by QEMU, sparse (with zeroed grains) and stream-optimized, and VDI
/// images, dynamic and fixed, mutated in their headers, descriptor, grain directory,
/// tables and block map, and anywhere, many times over.
#[test]
fn mutated_vmdk_and_vdi_images_never_panic() {
    let dir = tempdir();
    let src = write_raw(dir.path(), "src.raw", &content(5 << 20, 13));
    let variants = ["zeroed_grain=on", "subformat=streamOptimized"];
    let mut images = converted(&src, "vmdk", &variants);
    // And VDI, whose header and block map are as unguarded.
    images.extend(converted(&src, "vdi", &["static=off", "static=on"]));
    let mutate = |image: &[u8], rng: &mut SplitMix| {
        let header = rng.below(4) as usize;
        let anywhere = rng.below(16) as usize;
        let mut bytes = mutate(image, rng, header, anywhere);
        // The descriptor, the grain directory and the first grain tables follow the
        // header in QEMU's layout.
        for _ in 0..rng.below(8) {
            let at = 512 + rng.below((64 << 10).min(bytes.len() as u64 - 512)) as usize;
            bytes[at] = rng.next_u64() as u8;
        }
        bytes
    };
    fuzz_with_checksums(&images, 4, mutate, |_| {});
}

#[test]
fn shared_l2_tables_are_refused() {
    // Two L1 entries pointing at one L2 table would let a small file map to a huge list.
    let mut bytes = writer_image().to_vec();
    let l1 = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let first: [u8; 8] = bytes[l1..l1 + 8].try_into().unwrap();
    bytes[l1 + 8..l1 + 16].copy_from_slice(&first);
    let file = ImageFile::new("shared", Box::new(bytes));
    let err = expect_error(
        open(file, None, &mut tessera_disk_image::no_backing),
        "shared",
    );
    assert!(
        err.to_string().contains("both point to the L2 table"),
        "{err}"
    );
}

/// A VMDK delta disk described by a descriptor file, split into a sparse extent, over a
/// flat parent described by its own: each file mutated in turn (the descriptors with
/// bytes that matter to them), opened through an opener that serves the files by name.
#[test]
fn mutated_vmdk_descriptors_and_extents_never_panic() {
    let dir = tempdir();
    let d = dir.path();
    let src = write_raw(d, "src.raw", &content(3 << 20, 14));
    convert_raw(
        &src,
        &path(d, "base.vmdk"),
        "vmdk",
        "subformat=monolithicFlat",
    );
    let top = path(d, "top.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        top.to_str().unwrap(),
    ]);
    qemu_io(
        &top,
        "vmdk",
        &["write -P 3 100000 200000", "write -P 4 2000000 4096"],
    );
    fuzz_vmdk_files(
        d,
        &["top.vmdk", "top-s001.vmdk", "base.vmdk", "base-flat.vmdk"],
        6,
        400,
    );
}

/// Mutates the files `names` in `dir` (a VMDK disk, its descriptors and extents, the
/// first named the disk opened) `rounds` times, one file a round: a descriptor with bytes
/// descriptors are made of, an extent in the 64 KiB holding its headers and tables; now
/// and then a file is cut. Each round opens the disk with the files served by name and
/// uses it.
fn fuzz_vmdk_files(dir: &std::path::Path, names: &[&str], seed: u64, rounds: u64) {
    let originals: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(path(dir, n)).unwrap())
        .collect();
    // What a descriptor is made of, so that mutations make lines that almost parse.
    const TEXT: &[u8] = b"0123456789abcdef \"\n=#RWFLATSPARSEZEROVMFS\0";
    let mut rng = SplitMix::new(seed);
    for round in 0..rounds {
        let mut files = originals.clone();
        let target = rng.below(files.len() as u64) as usize;
        let bytes = &mut files[target];
        let descriptor = !names[target].contains('-');
        if rng.below(8) == 0 {
            let cut = rng.below(bytes.len() as u64) as usize;
            bytes.truncate(cut);
        } else if descriptor {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = TEXT[rng.below(TEXT.len() as u64) as usize];
            }
        } else {
            // The extent's header, directory and tables lie in its first 64 KiB.
            let window = (64 << 10).min(bytes.len() as u64);
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(window) as usize;
                bytes[at] = rng.next_u64() as u8;
            }
        }
        let mut opener = |b: &BackingRef| -> Result<ImageFile, ImageError> {
            let i = names
                .iter()
                .position(|n| *n == b.name)
                .ok_or_else(|| b.unavailable("no such file"))?;
            Ok(ImageFile::new(names[i], Box::new(files[i].clone())))
        };
        let file = ImageFile::new(names[0], Box::new(files[0].clone()));
        if let Ok(mut image) = open(file, None, &mut opener) {
            use_image(&mut *image, round);
        }
    }
}

/// An ESXi chain, a seSparse snapshot over a vmfsSparse one over a flat disk (made by
/// `tests/scripts/esx-snapshot.py`), mutated in its descriptors, headers, directories and
/// tables.
#[test]
fn mutated_esxi_snapshots_never_panic() {
    let dir = tempdir();
    let d = dir.path();
    let src = write_raw(d, "src.raw", &content(3 << 20, 15));
    convert_raw(
        &src,
        &path(d, "base.vmdk"),
        "vmdk",
        "subformat=monolithicFlat",
    );
    let raw = write_raw(d, "new.raw", &content(3 << 20, 16));
    let snapshot = |format: &str, parent: &str, out: &str, written: &str| {
        let parent = path(d, parent);
        let args = [
            format,
            parent.to_str().unwrap(),
            raw.to_str().unwrap(),
            "--written",
            written,
            "--zero",
            "1048576+8192",
        ];
        fixture_script("esx-snapshot.py", &args, &path(d, out));
    };
    snapshot("vmfsSparse", "base.vmdk", "mid.vmdk", "100000+200000");
    snapshot("seSparse", "mid.vmdk", "top.vmdk", "2000000+40960,0+4096");
    // Unmutated, the chain opens, so the mutations reach past the open.
    assert!(open_file(&path(d, "top.vmdk"), None).is_ok());
    fuzz_vmdk_files(
        d,
        &[
            "top.vmdk",
            "top-sesparse.vmdk",
            "mid.vmdk",
            "mid-delta.vmdk",
            "base.vmdk",
            "base-flat.vmdk",
        ],
        7,
        600,
    );
}

/// Differencing VHD, VHDX and VDI disks over a real parent (made by the fixture scripts),
/// mutated in their headers, parent locators, block tables and sector bitmaps many times
/// over, as they are and with their checksums made right again, opened over their parent.
#[test]
fn mutated_differencing_disks_never_panic() {
    let dir = tempdir();
    let made = |format: &str, options: &str, script: &str, args: &[&str]| {
        let parent = image_of_content(
            dir.path(),
            &format!("parent.{format}"),
            4 << 20,
            format,
            options,
        );
        let writes = written_disk(
            dir.path(),
            &format!("writes.{format}"),
            format,
            options,
            "4M",
            &["write -P 0x5a 12345 70000", "write -P 0xc3 3M 100000"],
        );
        let mut all = vec![writes.to_str().unwrap(), parent.to_str().unwrap()];
        all.extend_from_slice(args);
        let child = fixture_script(script, &all, &path(dir.path(), &format!("child.{format}")));
        (child, std::fs::read(&parent).unwrap())
    };
    let vhd = made(
        "vpc",
        "subformat=dynamic,force_size=on",
        "vhd-differencing.py",
        &[
            "--name",
            "parent.vpc",
            "--locator",
            r"W2ru:.\parent.vpc",
            "--present",
            "0-99,6144-6200",
        ],
    );
    let vhdx = made(
        "vhdx",
        "subformat=dynamic,block_size=1M",
        "vhdx-differencing.py",
        &[
            "--locator",
            r"relative_path=.\parent.vhdx",
            "--present",
            "0-99,6144-6200",
        ],
    );
    let vdi = made("vdi", "static=off", "vdi-differencing.py", &["--zero", "2"]);
    for (seed, ((child, parent), fix)) in [
        (vhd, fix_vhd_checksums as fn(&mut [u8])),
        (vhdx, fix_vhdx_checksums),
        // VDI has no checksums.
        (vdi, |_: &mut [u8]| {}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = SplitMix::new(40 + seed as u64);
        let exercise_over_parent = |bytes: &[u8], round: u64| {
            let file = ImageFile::new("hostile", Box::new(bytes.to_vec()));
            let mut opener = |b: &BackingRef| -> Result<ImageFile, ImageError> {
                Ok(ImageFile::new(
                    format!("{}/parent", b.referenced_by),
                    Box::new(parent.clone()),
                ))
            };
            if let Ok(mut image) = open(file, None, &mut opener) {
                use_image(&mut *image, round);
            }
        };
        // The unmutated disk opens over its parent, so the mutations reach past the open.
        let file = ImageFile::new("child", Box::new(child.clone()));
        let mut opener = |_: &BackingRef| Ok(ImageFile::new("parent", Box::new(parent.clone())));
        assert!(open(file, None, &mut opener).is_ok());
        for round in 0..200 {
            let mut bytes = child.clone();
            for _ in 0..1 + rng.below(6) {
                // The first 1.5 MiB (headers, metadata, tables, the first blocks'
                // bitmaps), or the last MiB (a VHDX's sector bitmaps, a VHD's locators).
                let at = if rng.below(2) == 0 {
                    rng.below((3 << 19).min(bytes.len() as u64)) as usize
                } else {
                    bytes.len() - 1 - rng.below((1 << 20).min(bytes.len() as u64)) as usize
                };
                bytes[at] = rng.next_u64() as u8;
            }
            exercise_over_parent(&bytes, round);
            fix(&mut bytes);
            exercise_over_parent(&bytes, round);
        }
    }
}
