//! Images made by QEMU's tools read exactly as QEMU reads them: every version, cluster size,
//! kind of cluster and compression type.

use crate::support::*;

const MIB: usize = 1 << 20;

/// Converts raw content to qcow2 with `options`, then changes it with `qemu-io` commands.
fn make(
    dir: &std::path::Path,
    name: &str,
    size: usize,
    options: &str,
    compress: bool,
    io: &[&str],
) -> std::path::PathBuf {
    let raw = write_raw(
        dir,
        &format!("{name}.src"),
        &content(size, size as u64 ^ name.len() as u64),
    );
    let out = path(dir, name);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-o", options];
    if compress {
        args.push("-c");
    }
    args.push(raw.to_str().unwrap());
    args.push(out.to_str().unwrap());
    qemu_img(&args);
    if !io.is_empty() {
        qemu_io(&out, "qcow2", io);
    }
    out
}

/// Partial writes, zero writes and discards at places that do not line up with clusters.
const CHANGES: &[&str] = &[
    "write -P 0x5a 12345 70000",
    "write -z 1048576 1048576",
    "write -z 3000000 5000",
    "discard 2097152 1048576",
    "write -P 0xc3 4194304 512",
];

#[test]
fn version_2_and_3_at_several_cluster_sizes() {
    let dir = tempdir();
    for compat in ["0.10", "1.1"] {
        for cluster in ["4k", "64k", "2M"] {
            let name = format!("v{compat}-{cluster}.qcow2");
            let options = format!("compat={compat},cluster_size={cluster}");
            let image = make(dir.path(), &name, 9 * MIB + 512, &options, false, CHANGES);
            assert_same_as_qemu(&image, "qcow2");
        }
    }
}

#[test]
fn zlib_compressed_clusters() {
    let dir = tempdir();
    for (compat, cluster) in [
        ("0.10", "64k"),
        ("1.1", "4k"),
        ("1.1", "64k"),
        ("1.1", "2M"),
    ] {
        let name = format!("zlib-{compat}-{cluster}.qcow2");
        let options = format!("compat={compat},cluster_size={cluster}");
        let image = make(dir.path(), &name, 8 * MIB, &options, true, &[]);
        assert_same_as_qemu(&image, "qcow2");
        // Rewriting part of a compressed cluster turns it into a standard one.
        qemu_io(
            &image,
            "qcow2",
            &["write -P 0x77 100000 3000", "write -z 5000000 70000"],
        );
        assert_same_as_qemu(&image, "qcow2");
    }
}

#[test]
fn zstd_compressed_clusters() {
    let dir = tempdir();
    for cluster in ["4k", "64k", "2M"] {
        let name = format!("zstd-{cluster}.qcow2");
        let options = format!("compression_type=zstd,cluster_size={cluster}");
        let image = make(dir.path(), &name, 8 * MIB, &options, true, &[]);
        let info = qemu_img(&["info", image.to_str().unwrap()]);
        assert!(info.contains("compression type: zstd"), "{info}");
        assert_same_as_qemu(&image, "qcow2");
    }
}

#[test]
fn zero_clusters_and_unallocated_ranges() {
    let dir = tempdir();
    let image = path(dir.path(), "sparse.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        image.to_str().unwrap(),
        "100M",
    ]);
    qemu_io(
        &image,
        "qcow2",
        &[
            "write -P 0x11 0 65536",
            "write -z 65536 131072",
            "write -P 0x22 50000000 4096",
            "write -z 50003968 300000",
            "write -P 0x33 104853504 4096",
        ],
    );
    assert_same_as_qemu(&image, "qcow2");

    // An image nothing was written to is all zeros, and maps as one zero extent.
    let empty = path(dir.path(), "empty.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", empty.to_str().unwrap(), "1G"]);
    let mut disk = open_file(&empty, None).unwrap();
    assert_eq!(our_map(&mut *disk), vec![(0, 1 << 30, false)]);
    assert_eq!(qemu_map(&empty, "qcow2"), vec![(0, 1 << 30, false)]);
    let mut window = vec![1u8; 3 << 20];
    disk.read_at((1 << 30) - (3 << 20), &mut window).unwrap();
    assert!(window.iter().all(|&b| b == 0));
}

#[test]
fn extended_l2_entries_with_subclusters() {
    let dir = tempdir();
    for cluster in ["64k", "2M"] {
        let name = format!("extl2-{cluster}.qcow2");
        let options = format!("extended_l2=on,cluster_size={cluster}");
        let image = make(dir.path(), &name, 9 * MIB, &options, false, CHANGES);
        // Subcluster-sized writes and zeroes into a fresh area.
        qemu_io(
            &image,
            "qcow2",
            &[
                "discard 6291456 2097152",
                "write -P 0x99 6293504 2048",
                "write -z 6297600 4096",
            ],
        );
        assert_same_as_qemu(&image, "qcow2");
    }
    let compressed = make(
        dir.path(),
        "extl2-c.qcow2",
        4 * MIB,
        "extended_l2=on",
        true,
        &[],
    );
    assert_same_as_qemu(&compressed, "qcow2");
}

#[test]
fn raw_images_with_holes() {
    let dir = tempdir();
    let raw = write_raw(dir.path(), "disk.raw", &content(5 * MIB, 7));
    assert_same_as_qemu(&raw, "raw");
}
