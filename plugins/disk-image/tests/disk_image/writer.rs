//! Images written by `Qcow2Writer` pass `qemu-img check` (no errors, no leaks), hold the
//! same guest bytes as the raw disk they were made from, and read back through our reader.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use tessera_disk_image::{Format, Qcow2Writer, Qcow2WriterOptions};

use crate::support::*;

/// Writes a qcow2 image and a raw file of the same random sparse disk: clusters of random
/// data, of text, of zeros given to the writer, and never given at all.
fn write_both(
    dir: &Path,
    name: &str,
    size: u64,
    cluster_bits: u32,
    seed: u64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut rng = SplitMix::new(seed);
    let cluster = 1u64 << cluster_bits;
    let qcow_path = dir.join(format!("{name}.qcow2"));
    let raw_path = dir.join(format!("{name}.raw"));
    let raw = File::create(&raw_path).unwrap();
    raw.set_len(size).unwrap();
    let out = BufWriter::new(File::create(&qcow_path).unwrap());
    let options = Qcow2WriterOptions { cluster_bits };
    let mut writer = Qcow2Writer::create_with(out, size, options).unwrap();

    let mut offset = 0;
    let mut buf = vec![0u8; cluster as usize];
    while offset < size {
        let len = cluster.min(size - offset) as usize;
        let data = &mut buf[..len];
        match rng.below(10) {
            0..=2 => rng.fill(data),
            3 => data.fill(0),
            4 => {
                data.fill(0);
                data[rng.below(len as u64) as usize] = 1;
            }
            5 => data
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = (i % 7) as u8 + b'a'),
            _ => {
                // A run of clusters never given.
                offset += cluster * (1 + rng.below(40));
                continue;
            }
        }
        writer.write_cluster(offset, data).unwrap();
        use std::os::unix::fs::FileExt;
        raw.write_all_at(data, offset).unwrap();
        offset += cluster;
    }
    let out = writer.finish().unwrap();
    out.into_inner().unwrap().sync_all().unwrap();
    (qcow_path, raw_path)
}

fn check_with_qemu(qcow: &Path, raw: &Path) {
    let qcow_s = qcow.to_str().unwrap();
    let check = run("qemu-img", &["check", "--output=json", qcow_s]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "qemu-img check {qcow_s}: {report} {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(json["check-errors"], 0, "{report}");
    assert!(
        json.get("corruptions").is_none() && json.get("leaks").is_none(),
        "{report}"
    );
    let compare = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        raw.to_str().unwrap(),
        qcow_s,
    ]);
    assert!(compare.contains("Images are identical"), "{compare}");
}

#[test]
fn written_images_pass_qemu_img_check_and_compare() {
    let dir = tempdir();
    for (i, (size, cluster_bits)) in [
        (10 << 20, 16),        // the default
        ((3 << 20) + 512, 12), // a short last cluster
        (2 << 20, 9),          // 512-byte clusters: several L2 tables and refcount blocks
        (40 << 20, 21),        // 2 MiB clusters
    ]
    .into_iter()
    .enumerate()
    {
        let (qcow, raw) = write_both(dir.path(), &format!("w{i}"), size, cluster_bits, i as u64);
        check_with_qemu(&qcow, &raw);
        // Our reader sees what QEMU sees, including the map.
        assert_same_as_qemu(&qcow, "qcow2");
        let mut ours = open_file(&qcow, Some(Format::Qcow2)).unwrap();
        let mut bytes = vec![0u8; size as usize];
        ours.read_at(0, &mut bytes).unwrap();
        assert_same_bytes(&bytes, &std::fs::read(&raw).unwrap(), &qcow);
    }
}

#[test]
fn a_large_sparse_disk_keeps_small_metadata() {
    let dir = tempdir();
    let size = 64u64 << 30;
    let qcow = dir.path().join("big.qcow2");
    let mut writer =
        Qcow2Writer::create(BufWriter::new(File::create(&qcow).unwrap()), size).unwrap();
    let cluster = vec![0x5au8; 65536];
    for gib in (0..64).step_by(7) {
        writer.write_cluster(gib << 30, &cluster).unwrap();
    }
    writer.write_cluster(size - 65536, &cluster).unwrap();
    writer
        .finish()
        .unwrap()
        .into_inner()
        .unwrap()
        .sync_all()
        .unwrap();
    let raw = write_raw(dir.path(), "big.raw", &[]);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.set_len(size).unwrap();
        for gib in (0..64).step_by(7) {
            f.write_all_at(&cluster, gib << 30).unwrap();
        }
        f.write_all_at(&cluster, size - 65536).unwrap();
    }
    check_with_qemu(&qcow, &raw);
    // Header, L1, eleven data clusters with an L2 table each (an L2 table maps 512 MiB),
    // refcount table and block.
    assert_eq!(
        std::fs::metadata(&qcow).unwrap().len(),
        (2 + 2 * 11 + 2) * 65536
    );
    let mut disk = open_file(&qcow, None).unwrap();
    assert_eq!(our_map(&mut *disk), qemu_map(&qcow, "qcow2"));
}

/// Images written by `VhdxWriter` pass `qemu-img check`, compare equal to the raw disk
/// they were made from, and read back through our reader as QEMU reads them: blocks of
/// data, blocks never given, a short last block, and a disk past 4 GiB, whose block table
/// holds a sector bitmap entry.
#[test]
fn written_vhdx_images_pass_qemu_img_check_and_compare() {
    let dir = tempdir();
    for (i, size) in [(9u64 << 20) + 4096, (4u64 << 30) + (3 << 20)]
        .into_iter()
        .enumerate()
    {
        let vhdx = dir.path().join(format!("v{i}.vhdx"));
        let raw_path = dir.path().join(format!("v{i}.raw"));
        let raw = File::create(&raw_path).unwrap();
        raw.set_len(size).unwrap();
        let ids = [[i as u8 + 1; 16], [7; 16], [9; 16]];
        let out = BufWriter::new(File::create(&vhdx).unwrap());
        let mut writer = tessera_disk_image::VhdxWriter::create(out, size, ids).unwrap();
        let block = writer.block_size();
        let mut rng = SplitMix::new(i as u64);
        let mut at = 0;
        while at < size {
            let len = block.min(size - at) as usize;
            // Every other block now and then, and always the last and the one past 4 GiB.
            if rng.below(3) == 0 || at + block >= size || at == 4 << 30 {
                let mut data = vec![0u8; len];
                rng.fill(&mut data);
                writer.write(at, &data).unwrap();
                use std::os::unix::fs::FileExt;
                raw.write_all_at(&data, at).unwrap();
            }
            at += block;
            // Skip most of the big disk.
            if size > 1 << 30 && at == 64 << 20 {
                at = 4 << 30;
            }
        }
        writer
            .finish()
            .unwrap()
            .into_inner()
            .unwrap()
            .sync_all()
            .unwrap();
        let check = run("qemu-img", &["check", "-f", "vhdx", vhdx.to_str().unwrap()]);
        assert!(
            check.status.success(),
            "qemu-img check: {} {}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        // Our reader reads what was written; QEMU's VHDX driver maps every block as data,
        // so maps are not compared.
        let mut ours = open_file(&vhdx, None).unwrap();
        assert_eq!(ours.format(), Format::Vhdx);
        for at in [0, 3 << 20, size - (1 << 20)] {
            let mut got = vec![0u8; 1 << 20];
            ours.read_at(at, &mut got).unwrap();
            let mut want = vec![0u8; 1 << 20];
            use std::os::unix::fs::FileExt;
            File::open(&raw_path)
                .unwrap()
                .read_exact_at(&mut want, at)
                .unwrap();
            assert!(got == want, "at {at}");
        }
        let compare = qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "vhdx",
            raw_path.to_str().unwrap(),
            vhdx.to_str().unwrap(),
        ]);
        assert!(compare.contains("Images are identical"), "{compare}");
    }
}
