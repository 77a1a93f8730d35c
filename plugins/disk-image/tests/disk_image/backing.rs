//! Backing chains: reads fall through unallocated clusters to the images below, zero
//! clusters hide them, and loops, depth and missing files fail the open with clear errors.

use std::path::Path;

use tessera_disk_image::{
    BackingRef, Format, ImageError, ImageErrorKind, ImageFile, MAX_BACKING_DEPTH, Qcow2, no_backing,
};

use crate::support::*;

fn create_on(dir: &Path, name: &str, backing: &str, backing_format: &str, extra: &[&str]) {
    let image = path(dir, name);
    let mut args = vec![
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        backing,
        "-F",
        backing_format,
    ];
    args.extend_from_slice(extra);
    args.push(image.to_str().unwrap());
    qemu_img(&args);
}

#[test]
fn a_chain_of_three_qcow2_images() {
    let dir = tempdir();
    let d = dir.path();
    let base = write_raw(d, "base.src", &content(6 << 20, 1));
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=64k",
        base.to_str().unwrap(),
        path(d, "base.qcow2").to_str().unwrap(),
    ]);
    // Different cluster sizes at each level, and a top larger than what it is based on.
    create_on(
        d,
        "mid.qcow2",
        "base.qcow2",
        "qcow2",
        &["-o", "cluster_size=4k"],
    );
    qemu_io(
        &path(d, "mid.qcow2"),
        "qcow2",
        &[
            "write -P 0x21 100000 50000",
            "write -z 1048576 65536",
            "write -P 0x22 4000000 8192",
        ],
    );
    create_on(
        d,
        "top.qcow2",
        "mid.qcow2",
        "qcow2",
        &["-o", "cluster_size=32k,compat=0.10"],
    );
    qemu_img(&[
        "resize",
        "-q",
        path(d, "top.qcow2").to_str().unwrap(),
        "10M",
    ]);
    qemu_io(
        &path(d, "top.qcow2"),
        "qcow2",
        &[
            "write -P 0x31 120000 7000",
            "write -z 2097152 131072",
            "write -P 0x32 9000000 100",
        ],
    );
    assert_same_as_qemu(&path(d, "top.qcow2"), "qcow2");

    let mut top = open_file(&path(d, "top.qcow2"), None).unwrap();
    let description = top.describe();
    assert!(
        description.contains("mid.qcow2") && description.contains("base.qcow2"),
        "{description}"
    );

    // Every byte of data lies verbatim in one file of the chain, which the runs name: the
    // host can read all of it itself. Past the base's end, zeros.
    for (at, expected) in [
        (140_000, "mid.qcow2"),
        (120_000, "top.qcow2"),
        (4_000_000, "mid.qcow2"),
        (9_000_000, "top.qcow2"),
        (8_000_000, "elsewhere"),
    ] {
        assert_eq!(stored_in(&mut *top, at), expected, "byte {at}");
    }
    assert_eq!(
        files_holding_data(&mut *top),
        ["base.qcow2", "mid.qcow2", "top.qcow2"]
    );
}

#[test]
fn a_chain_over_a_raw_base() {
    let dir = tempdir();
    let d = dir.path();
    write_raw(d, "base.raw", &content(5 << 20, 2));
    create_on(d, "mid.qcow2", "base.raw", "raw", &[]);
    qemu_io(
        &path(d, "mid.qcow2"),
        "qcow2",
        &["write -P 0x41 0 100000", "write -z 3145728 65536"],
    );
    create_on(
        d,
        "top.qcow2",
        "mid.qcow2",
        "qcow2",
        &["-o", "extended_l2=on"],
    );
    qemu_io(
        &path(d, "top.qcow2"),
        "qcow2",
        &["write -P 0x42 70000 3000", "write -z 1000000 4096"],
    );
    assert_same_as_qemu(&path(d, "top.qcow2"), "qcow2");
}

#[test]
fn a_backing_file_of_unrecorded_format_is_probed() {
    let dir = tempdir();
    let d = dir.path();
    write_raw(d, "base.raw", &content(1 << 20, 3));
    create_on(d, "top.qcow2", "base.raw", "raw", &[]);
    // QEMU no longer writes images without a backing format: turn the extension into an
    // unknown one, which readers skip.
    let mut bytes = std::fs::read(path(d, "top.qcow2")).unwrap();
    let at = bytes[..65536]
        .windows(4)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .unwrap();
    bytes[at..at + 4].copy_from_slice(&[0x7e, 0x57, 0x00, 0x01]);
    std::fs::write(path(d, "top.qcow2"), &bytes).unwrap();
    let mut seen = Vec::new();
    let mut record = |b: &BackingRef| {
        seen.push(b.clone());
        opener(b)
    };
    let top = tessera_disk_image::open(
        ImageFile::new(
            path(d, "top.qcow2")
                .canonicalize()
                .unwrap()
                .to_str()
                .unwrap(),
            Box::new(
                tessera_disk_image::FileReader::new(
                    std::fs::File::open(path(d, "top.qcow2")).unwrap(),
                )
                .unwrap(),
            ),
        ),
        None,
        &mut record,
    )
    .unwrap();
    assert_eq!(top.virtual_size(), 1 << 20);
    assert_eq!(top.format(), Format::Qcow2);
    let mut top = top;
    let mut guest = vec![0u8; 1 << 20];
    top.read_at(0, &mut guest).unwrap();
    assert!(guest == content(1 << 20, 3));
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].name, "base.raw");
    assert_eq!(seen[0].format, None);
    assert!(seen[0].referenced_by.ends_with("top.qcow2"));
}

#[test]
fn a_backing_loop_is_refused() {
    let dir = tempdir();
    let d = dir.path();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        path(d, "b.qcow2").to_str().unwrap(),
        "1M",
    ]);
    create_on(d, "a.qcow2", "b.qcow2", "qcow2", &[]);
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        path(d, "b.qcow2").to_str().unwrap(),
    ]);

    let a = path(d, "a.qcow2").canonicalize().unwrap();
    let a_name = a.to_str().unwrap();
    let err = expect_error(
        open_file(&a, None),
        &path(d, "b.qcow2").canonicalize().unwrap().to_string_lossy(),
    );
    match err.kind() {
        ImageErrorKind::BackingLoop { chain } => {
            assert_eq!(chain.len(), 3, "{chain:?}");
            assert_eq!(chain[0], a_name);
            assert_eq!(chain[2], a_name);
        }
        other => panic!("expected a loop, got {other}"),
    }
    assert!(err.to_string().contains("backing chain loops"), "{err}");

    // An image backed by itself.
    qemu_img(&["rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", a_name]);
    let err = expect_error(open_file(&a, None), a_name);
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingLoop { .. }),
        "{err}"
    );
}

#[test]
fn a_chain_deeper_than_the_limit_is_refused() {
    let dir = tempdir();
    let d = dir.path();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        path(d, "0.qcow2").to_str().unwrap(),
        "1M",
    ]);
    for i in 1..=MAX_BACKING_DEPTH + 1 {
        let below = format!("{}.qcow2", i - 1);
        create_on(d, &format!("{i}.qcow2"), &below, "qcow2", &[]);
    }
    // The limit itself is fine...
    let at_limit = path(d, &format!("{MAX_BACKING_DEPTH}.qcow2"));
    assert!(open_file(&at_limit, None).is_ok());
    // ...one more is not.
    let deeper = path(d, &format!("{}.qcow2", MAX_BACKING_DEPTH + 1));
    let err = expect_error(open_file(&deeper, None), "/");
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingTooDeep { .. }),
        "{err}"
    );
}

#[test]
fn a_missing_backing_file_fails_the_open() {
    let dir = tempdir();
    let d = dir.path();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        path(d, "base.qcow2").to_str().unwrap(),
        "1M",
    ]);
    create_on(d, "top.qcow2", "base.qcow2", "qcow2", &[]);
    std::fs::remove_file(path(d, "base.qcow2")).unwrap();
    let top = path(d, "top.qcow2").canonicalize().unwrap();
    let err = expect_error(open_file(&top, None), top.to_str().unwrap());
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("base.qcow2"), "{err}");

    // Opening with no_backing says the same without touching the file system.
    let file = ImageFile::new("top", Box::new(std::fs::read(&top).unwrap()));
    let err = expect_error(Qcow2::open(file, &mut no_backing), "top");
    assert!(
        matches!(err.kind(), ImageErrorKind::BackingUnavailable { .. }),
        "{err}"
    );
}

#[test]
fn a_backing_file_in_an_unsupported_format_is_refused() {
    let dir = tempdir();
    let d = dir.path();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qed",
        path(d, "base.qed").to_str().unwrap(),
        "1M",
    ]);
    create_on(d, "top.qcow2", "base.qed", "qed", &[]);
    let top = path(d, "top.qcow2");
    let err = expect_error(open_file(&top, None), "/");
    assert!(
        matches!(err.kind(), ImageErrorKind::Unsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("qed"), "{err}");

    // Probed, the QED image is recognised rather than read as a raw disk.
    let mut probe_only = |b: &BackingRef| -> Result<ImageFile, ImageError> {
        let mut file = opener(b)?;
        file.data_ranges = None;
        Ok(file)
    };
    let file = ImageFile::new("qed", Box::new(std::fs::read(path(d, "base.qed")).unwrap()));
    let err = expect_error(tessera_disk_image::open(file, None, &mut probe_only), "qed");
    assert!(err.to_string().contains("QED"), "{err}");
    assert_eq!(Format::from_name("qed"), None);
}

#[test]
fn a_qcow2_overlay_reads_through_to_a_vmdk_base() {
    let dir = tempdir();
    let d = dir.path();
    let base = image_of_content(
        d,
        "base.vmdk",
        3 << 20,
        "vmdk",
        "subformat=monolithicSparse",
    );
    create_on(d, "top.qcow2", "base.vmdk", "vmdk", &[]);
    let top = path(d, "top.qcow2");
    qemu_io(&top, "qcow2", &["write -P 0x77 100000 5000"]);
    assert!(base.exists());
    assert_same_as_qemu(&top, "qcow2");
}
