//! The vm-disk plugin end to end through the `tessera` command, on real images made with
//! QEMU's and the file-system tools during the run: raw and qcow2 disks of one VM with its
//! configuration, qcow2 variants and backing chains, VMDK disks split over extent files
//! and snapshot chains, file-level restore from GPT/ext4, MBR/FAT, LVM, XFS, btrfs, NTFS
//! and exFAT disks, a live disk over NBD with a dirty bitmap, a host block device (a loop
//! device), pre/post hooks, restore onto an NBD export, broken images, and an image that
//! shrinks while it is read.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_tests::{random_bytes, run_ok, tessera};

/// Runs a tool, failing the test with its output if it fails; returns stdout.
fn tool(name: &str, args: &[&str]) -> String {
    let output = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}); install qemu-utils, e2fsprogs, dosfstools, mtools, fdisk, gdisk, lvm2, thin-provisioning-tools, ntfs-3g, xfsprogs, btrfs-progs, exfatprogs, exfat-fuse and makefs")
    });
    assert!(
        output.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    vault: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let vault = root.join("vault");
    run_ok(tessera(&vault).args(["vault", "init"]));
    Env {
        _dir: dir,
        root,
        vault,
    }
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `tessera backup --plugin vm-disk ARGS --json`, parsed.
    fn backup(&self, args: &[&str]) -> Value {
        let out = run_ok(
            tessera(&self.vault)
                .args(["backup", "--plugin", "vm-disk", "--json"])
                .args(args),
        );
        serde_json::from_str(&out).unwrap()
    }

    /// `tessera backup` that must fail; returns its error output.
    fn backup_fails(&self, args: &[&str]) -> String {
        let output = tessera(&self.vault)
            .args(["backup", "--plugin", "vm-disk"])
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "the backup succeeded: {args:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn restore(&self, point: &str, args: &[&str]) {
        run_ok(tessera(&self.vault).args(["restore", point]).args(args));
    }

    fn points(&self) -> Vec<Value> {
        let out = run_ok(tessera(&self.vault).args(["points", "--json"]));
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `tessera ls` that must fail; returns its error output.
    fn ls_fails(&self, point: &str, path: &str) -> String {
        let output = tessera(&self.vault)
            .args(["ls", point, path])
            .output()
            .unwrap();
        assert!(!output.status.success(), "ls {path} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn ls(&self, point: &str, path: &str) -> Vec<String> {
        let out = run_ok(tessera(&self.vault).args(["ls", point, path, "--json"]));
        let entries: Value = serde_json::from_str(&out).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    }
}

fn point_of(summary: &Value) -> String {
    summary["point"].as_str().unwrap().to_string()
}

/// `qemu-img compare` of two images, each with its format.
fn assert_same_disk(a: &Path, a_format: &str, b: &Path, b_format: &str) {
    tool(
        "qemu-img",
        &["compare", "-U", "-f", a_format, "-F", b_format, p(a), p(b)],
    );
}

/// Adds an empty, enabled, persistent dirty bitmap `b0` of `granularity` to a qcow2 image:
/// it records what changes after the first backup.
fn add_bitmap(image: &Path, granularity: &str) {
    tool(
        "qemu-img",
        &[
            "bitmap",
            "--add",
            "--enable",
            "-g",
            granularity,
            p(image),
            "b0",
        ],
    );
}

/// Copies an image's current content to the raw file `snapshot`.
fn snapshot_raw(image: &Path, snapshot: &Path) {
    tool(
        "qemu-img",
        &["convert", "-U", "-O", "raw", p(image), p(snapshot)],
    );
}

/// Restores each point (a backup's summary) and compares its disk with the raw snapshot
/// taken when it was backed up.
fn assert_points_restore(env: &Env, points: &[(&Value, &Path)]) {
    for &(summary, snapshot) in points {
        let target = env.path(&format!("restore-{}", point_of(summary)));
        env.restore(&point_of(summary), &["--target", p(&target)]);
        assert_same_disk(snapshot, "raw", &target.join("disk0.raw"), "raw");
    }
}

/// Writes `data` at `offset` of a qcow2 or raw image through qemu-io.
fn qemu_write(image: &Path, format: &str, pattern: u8, offset: u64, len: u64) {
    tool(
        "qemu-io",
        &[
            "-f",
            format,
            "-c",
            &format!("write -P {pattern} {offset} {len}"),
            p(image),
        ],
    );
}

/// A sparse raw disk of `size` bytes with random data at a few places.
fn raw_disk(path: &Path, size: u64, seed: u64) {
    let file = fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    for (i, at) in [0, size / 3, size / 2 + 4096, size - 8192]
        .into_iter()
        .enumerate()
    {
        file.write_all_at(&random_bytes(seed + i as u64, 8192), at)
            .unwrap();
    }
}

/// Creates an empty qcow2 image of `size`, `extra` arguments (`-o ...`) before its path.
fn create_qcow2(path: &Path, size: &str, extra: &[&str]) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(extra);
    args.extend([p(path), size]);
    tool("qemu-img", &args);
}

/// A qcow2 disk with data, a zero cluster and unallocated space.
fn qcow2_disk(path: &Path, size: &str, options: &str) {
    create_qcow2(path, size, &["-o", options]);
    qemu_write(path, "qcow2", 0x11, 0, 1 << 20);
    qemu_write(path, "qcow2", 0x22, 5 << 20, 64 << 10);
    tool(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -z 512k 128k", p(path)],
    );
}

#[test]
fn raw_and_qcow2_disks_of_one_vm_round_trip_with_their_configuration() {
    let env = env();
    let raw = env.path("system.raw");
    raw_disk(&raw, 32 << 20, 1);
    let qcow2 = env.path("data.qcow2");
    qcow2_disk(&qcow2, "24M", "compat=1.1");
    let config = env.path("vm.json");
    fs::write(&config, br#"{"name": "web", "memory": 2048}"#).unwrap();

    let summary = env.backup(&[p(&raw), p(&qcow2), "--item", "web", "--config", p(&config)]);
    let point = point_of(&summary);
    // Holes cost nothing: far less is read than the 56 MiB of the two disks.
    assert!(
        summary["bytes_read"].as_u64().unwrap() < 4 << 20,
        "{summary}"
    );
    assert_eq!(env.ls(&point, ""), ["disk0", "disk1", "vm.json"]);

    let target = env.path("restored");
    env.restore(&point, &["--target", p(&target)]);
    assert_same_disk(&raw, "raw", &target.join("disk0.raw"), "raw");
    assert_same_disk(&qcow2, "qcow2", &target.join("disk1.raw"), "raw");
    assert_eq!(
        fs::read(target.join("vm.json")).unwrap(),
        fs::read(&config).unwrap()
    );
    // The restored raw disk is sparse: its holes were not written.
    let restored = fs::metadata(target.join("disk0.raw")).unwrap();
    assert_eq!(restored.len(), 32 << 20);
    assert!(
        restored.blocks() * 512 < 4 << 20,
        "{} blocks",
        restored.blocks()
    );

    let as_qcow2 = env.path("as-qcow2");
    env.restore(
        &point,
        &[
            "--target",
            p(&as_qcow2),
            "--format",
            "qcow2",
            "--path",
            "disk1",
        ],
    );
    let image = as_qcow2.join("disk1.qcow2");
    tool("qemu-img", &["check", p(&image)]);
    assert_same_disk(&qcow2, "qcow2", &image, "qcow2");
    assert!(!as_qcow2.join("disk0.qcow2").exists());

    // `dump` writes a disk's bytes, holes as zeros, and the configuration, to stdout.
    let dumped = env.path("dumped.raw");
    let status = tessera(&env.vault)
        .args(["dump", &point, "disk1"])
        .stdout(fs::File::create(&dumped).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::metadata(&dumped).unwrap().len(), 24 << 20);
    assert_same_disk(&qcow2, "qcow2", &dumped, "raw");
    let out = tessera(&env.vault)
        .args(["dump", &point, "vm.json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(&config).unwrap());
}

#[test]
fn a_vms_disks_read_from_a_mount_as_raw_images() {
    let env = env();
    let raw = env.path("system.raw");
    raw_disk(&raw, 32 << 20, 3);
    let qcow2 = env.path("data.qcow2");
    qcow2_disk(&qcow2, "24M", "compat=1.1");
    let config = env.path("vm.json");
    fs::write(&config, br#"{"name": "db"}"#).unwrap();
    let point =
        point_of(&env.backup(&[p(&raw), p(&qcow2), "--item", "db", "--config", p(&config)]));

    let mounted = tessera_tests::Mounted::new(&env.vault, &env.path("mnt"));
    let vm = mounted.path.join("items/db/latest");
    assert_eq!(
        fs::canonicalize(&vm).unwrap(),
        fs::canonicalize(mounted.path.join("ids").join(&point[..8])).unwrap()
    );
    assert_eq!(fs::metadata(vm.join("disk1")).unwrap().len(), 24 << 20);
    assert_same_disk(&vm.join("disk0"), "raw", &raw, "raw");
    assert_same_disk(&vm.join("disk1"), "raw", &qcow2, "qcow2");
    assert_eq!(
        fs::read(vm.join("vm.json")).unwrap(),
        fs::read(&config).unwrap()
    );
    assert!(mounted.unmount().success());
}

/// Attributes the point recorded for its disks, as `tessera points --json` shows them.
fn point_attributes(env: &Env, point: &str) -> Value {
    let out = run_ok(tessera(&env.vault).args(["points", "--json"]));
    let points: Value = serde_json::from_str(&out).unwrap();
    points
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"].as_str().is_some_and(|id| id.starts_with(point)))
        .unwrap_or_else(|| panic!("no point {point} in {points}"))["attributes"]
        .clone()
}

#[test]
fn a_hyper_v_snapshot_backs_up_over_its_parent_vhd() {
    snapshot_backs_up_over_its_parent(Snapshot {
        format: "vpc",
        options: "subformat=dynamic,force_size=on",
        script: "vhd-differencing.py",
        base: "base.vhd",
        snapshot: "web_3F2A.avhd",
        locators: &[
            "--name",
            r"C:\ProgramData\Hyper-V\web\base.vhd",
            "--locator",
            r"W2ru:.\base.vhd",
            "--locator",
            r"W2ku:C:\ProgramData\Hyper-V\web\base.vhd",
        ],
        stored_as: "vhd",
    });
}

#[test]
fn a_hyper_v_checkpoint_backs_up_over_its_parent_vhdx() {
    snapshot_backs_up_over_its_parent(Snapshot {
        format: "vhdx",
        options: "subformat=dynamic,block_size=1M",
        script: "vhdx-differencing.py",
        base: "base.vhdx",
        snapshot: "web_3F2A.avhdx",
        locators: &[
            "--locator",
            r"relative_path=.\base.vhdx",
            "--locator",
            r"absolute_win32_path=\\?\C:\ProgramData\Hyper-V\web\base.vhdx",
        ],
        stored_as: "vhdx",
    });
}

/// A Hyper-V snapshot or checkpoint to make and back up.
struct Snapshot {
    /// QEMU's name of the format, and the options of the parent and of the disk of writes.
    format: &'static str,
    options: &'static str,
    /// The script in `tests/scripts` that makes the differencing disk.
    script: &'static str,
    base: &'static str,
    snapshot: &'static str,
    /// The script's arguments naming the parent.
    locators: &'static [&'static str],
    /// The format the point records.
    stored_as: &'static str,
}

/// The point of a snapshot's backup, `summary`, records its disk as `format`, restores
/// to `expected` (the parent with the snapshot's sectors over it), and lists and
/// extracts the first partition's `etc/hostname`, which holds `hostname`.
fn assert_snapshot_point(
    env: &Env,
    summary: &Value,
    format: &str,
    expected: &[u8],
    hostname: &[u8],
) {
    let point = point_of(summary);
    let attributes = point_attributes(env, &point);
    assert_eq!(attributes["disk0.format"], format, "{attributes}");
    let target = env.path("restored");
    env.restore(&point, &["--target", p(&target)]);
    assert!(
        fs::read(target.join("disk0.raw")).unwrap() == expected,
        "the restored disk is not the parent with the snapshot's sectors over it"
    );
    // The files of the disk as the snapshot shows it.
    assert_eq!(
        env.ls(&point, "disk0/part1/etc"),
        ["disk0/part1/etc/hostname"]
    );
    let files = env.path("files");
    env.restore(
        &point,
        &["--path", "disk0/part1/etc/hostname", "--target", p(&files)],
    );
    assert_eq!(
        fs::read(files.join("disk0/part1/etc/hostname")).unwrap(),
        hostname
    );
}

/// A differencing disk over a dynamic parent holding an ext4 partition backs up through
/// its parent locators, restores equal to the parent with the snapshot's sectors over it,
/// shows the partition's files, and is refused once its parent was replaced.
fn snapshot_backs_up_over_its_parent(case: Snapshot) {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"hyperv-vm\n").unwrap();
    let raw = gpt_disk(&env, &tree);
    let size = fs::metadata(&raw).unwrap().len();
    let base = env.path(case.base);
    let convert = |out: &Path| {
        tool(
            "qemu-img",
            &[
                "convert",
                "-O",
                case.format,
                "-o",
                case.options,
                p(&raw),
                p(out),
            ],
        );
    };
    convert(&base);
    // The snapshot's writes: 256 KiB in the unused space between the partition table and
    // the first partition, of which the differencing disk keeps the first half as its own
    // (sectors 1024 to 1279); QEMU cannot write a differencing disk, so a script makes one
    // of a dynamic disk holding the writes.
    let writes = env.path(&format!("writes.{}", case.format));
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            case.format,
            "-o",
            case.options,
            p(&writes),
            &size.to_string(),
        ],
    );
    tool(
        "qemu-io",
        &[
            "-f",
            case.format,
            "-c",
            "write -P 0x77 512k 256k",
            p(&writes),
        ],
    );
    let snapshot = env.path(case.snapshot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(case.script);
    let mut args = vec![p(&script), p(&writes), p(&base), p(&snapshot)];
    args.extend_from_slice(case.locators);
    args.extend_from_slice(&["--present", "1024-1279"]);
    tool("python3", &args);
    let mut expected = fs::read(&raw).unwrap();
    expected[512 << 10..640 << 10].fill(0x77);

    let summary = env.backup(&[p(&snapshot), "--item", "web"]);
    assert_snapshot_point(&env, &summary, case.stored_as, &expected, b"hyperv-vm\n");

    // A parent replaced since the snapshot is refused, naming the snapshot, and nothing
    // is committed.
    let other = env.path(&format!("other.{}", case.format));
    convert(&other);
    fs::rename(&other, &base).unwrap();
    let err = env.backup_fails(&[p(&snapshot), "--item", "web"]);
    assert!(
        err.contains(case.snapshot) && err.contains("replaced"),
        "{err}"
    );
}

/// ESXi snapshots (a vmfsSparse delta and a seSparse one, made by
/// `tests/scripts/esx-snapshot.py` as QEMU cannot write them) back up through their
/// descriptors over the flat base disk, restore equal to the base with the snapshot's
/// grains over it, and show the partition's files.
#[test]
fn esxi_snapshots_back_up_over_their_base_vmdk() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"esxi-vm\n").unwrap();
    let raw = gpt_disk(&env, &tree);
    let base = env.path("web.vmdk");
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            p(&raw),
            p(&base),
        ],
    );
    // The snapshot's writes: 256 KiB between the partition table and the partition.
    let mut expected = fs::read(&raw).unwrap();
    expected[512 << 10..768 << 10].fill(0x77);
    let written = env.path("written.raw");
    fs::write(&written, &expected).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/esx-snapshot.py");
    for (format, snapshot, stored) in [
        ("vmfsSparse", "web-000001.vmdk", "web-000001-delta.vmdk"),
        ("seSparse", "web-000002.vmdk", "web-000002-sesparse.vmdk"),
    ] {
        let snapshot = env.path(snapshot);
        tool(
            "python3",
            &[
                p(&script),
                format,
                p(&base),
                p(&written),
                p(&snapshot),
                "--written",
                "524288+262144",
            ],
        );
        assert!(env.path(stored).exists());
        let item = format!("web-{format}");
        let summary = env.backup(&[p(&snapshot), "--item", &item]);
        assert_snapshot_point(&env, &summary, "vmdk", &expected, b"esxi-vm\n");
        fs::remove_dir_all(env.path("restored")).unwrap();
        fs::remove_dir_all(env.path("files")).unwrap();
    }
}

/// A VirtualBox snapshot (`Snapshots/{UUID}.vdi`, a differencing VDI naming its parent
/// only by UUID) backs up over the base disk found by that UUID in the machine's directory,
/// once that directory is granted; it restores equal to the base with the snapshot's block
/// over it, shows the partition's files, and is refused once the base was written to.
#[test]
fn a_virtualbox_snapshot_backs_up_over_its_parent_vdi() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"vbox-vm\n").unwrap();
    let raw = gpt_disk(&env, &tree);
    let size = fs::metadata(&raw).unwrap().len();
    let vm = env.path("VirtualBox VMs/web");
    let snapshots = vm.join("Snapshots");
    fs::create_dir_all(&snapshots).unwrap();
    let base = vm.join("web.vdi");
    tool("qemu-img", &["convert", "-O", "vdi", p(&raw), p(&base)]);
    // Another machine's disk beside it, which the search passes over.
    tool(
        "qemu-img",
        &["convert", "-O", "vdi", p(&raw), p(&vm.join("other.vdi"))],
    );

    // VirtualBox copies a block into the snapshot whole on its first write: the first
    // block, with 256 KiB between the partition table and the partition written. QEMU
    // cannot write a differencing VDI, so a script makes one of a dynamic VDI holding it.
    let mut expected = fs::read(&raw).unwrap();
    expected[512 << 10..768 << 10].fill(0x77);
    let block = env.path("block0");
    fs::write(&block, &expected[..1 << 20]).unwrap();
    let writes = env.path("writes.vdi");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "vdi", p(&writes), &size.to_string()],
    );
    tool(
        "qemu-io",
        &[
            "-f",
            "vdi",
            "-c",
            &format!("write -s {} 0 1M", p(&block)),
            p(&writes),
        ],
    );
    let snapshot = snapshots.join("{6f1c2a9e-51d3-4c77-9a0b-2d4e8f3b7c15}.vdi");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vdi-differencing.py");
    tool("python3", &[p(&script), p(&writes), p(&base), p(&snapshot)]);

    // The base lies above the snapshot's directory: without that directory granted it is
    // not found, and the error says what to grant.
    let err = env.backup_fails(&[p(&snapshot), "--item", "web"]);
    assert!(err.contains("disk0") && err.contains("grant"), "{err}");

    let summary = env.backup(&[p(&snapshot), "--grant", p(&vm), "--item", "web"]);
    assert_snapshot_point(&env, &summary, "vdi", &expected, b"vbox-vm\n");

    // A base written to since the snapshot (its modification UUID changed) is refused,
    // naming the snapshot, and nothing is committed.
    let mut header = fs::read(&base).unwrap();
    header[408..424].fill(0x5a);
    fs::write(&base, &header).unwrap();
    let err = env.backup_fails(&[p(&snapshot), "--grant", p(&vm), "--item", "web"]);
    assert!(
        err.contains("6f1c2a9e") && err.contains("written to after"),
        "{err}"
    );
    let out = run_ok(tessera(&env.vault).args(["points", "--json"]));
    let points: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(points.as_array().unwrap().len(), 1, "{points}");
}

#[test]
fn hyper_v_azure_vmware_and_virtualbox_disks_back_up_and_restore_with_their_files() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"azure-vm\n").unwrap();
    let blob = random_bytes(51, 5 << 20);
    fs::write(tree.join("etc/blob.bin"), &blob).unwrap();
    let raw = gpt_disk(&env, &tree);

    // `raw` converted by `qemu-img` into `name`, in `format` with `options`.
    let convert = |name: &str, format: &str, options: &str| {
        let out = env.path(name);
        tool(
            "qemu-img",
            &["convert", "-O", format, "-o", options, p(&raw), p(&out)],
        );
        out
    };
    // A dynamic VHD, as Hyper-V makes them, and a fixed one of an exact size, as Azure
    // keeps its disks (QEMU's `force_size`); both found by their footers, no format given.
    let dynamic = convert("hyperv.vhd", "vpc", "subformat=dynamic");
    let fixed = convert("azure.vhd", "vpc", "subformat=fixed,force_size=on");
    assert_eq!(
        fs::metadata(&fixed).unwrap().len(),
        fs::metadata(&raw).unwrap().len() + 512,
        "a fixed VHD is the disk and a footer"
    );
    // And Hyper-V's own format since 2012, VHDX.
    let vhdx = convert("hyperv2.vhdx", "vhdx", "block_size=1M");
    // VMware's: a growable sparse VMDK and the compressed one of an OVF/OVA export.
    let sparse = convert("vmware.vmdk", "vmdk", "subformat=monolithicSparse");
    let stream = convert("export.vmdk", "vmdk", "subformat=streamOptimized");
    // VirtualBox's VDI.
    let vdi = convert("vbox.vdi", "vdi", "static=off");

    let summary = env.backup(&[
        p(&dynamic),
        p(&fixed),
        p(&vhdx),
        p(&sparse),
        p(&stream),
        p(&vdi),
        "--item",
        "vm",
    ]);
    let point = point_of(&summary);
    // Only the data is read: the blocks a dynamic disk never wrote and the holes of the
    // fixed one's sparse file are skipped.
    assert!(
        summary["bytes_read"].as_u64().unwrap() < 6 * (24 << 20),
        "{summary}"
    );
    let attributes = point_attributes(&env, &point);
    assert_eq!(attributes["disk0.format"], "vhd", "{attributes}");
    assert_eq!(attributes["disk1.format"], "vhd", "{attributes}");
    assert_eq!(attributes["disk2.format"], "vhdx", "{attributes}");
    assert_eq!(attributes["disk3.format"], "vmdk", "{attributes}");
    assert_eq!(attributes["disk4.format"], "vmdk", "{attributes}");
    assert_eq!(attributes["disk5.format"], "vdi", "{attributes}");

    let target = env.path("restored");
    env.restore(&point, &["--target", p(&target)]);
    assert_same_disk(&dynamic, "vpc", &target.join("disk0.raw"), "raw");
    assert_same_disk(&fixed, "vpc", &target.join("disk1.raw"), "raw");
    assert_same_disk(&vhdx, "vhdx", &target.join("disk2.raw"), "raw");
    assert_same_disk(&sparse, "vmdk", &target.join("disk3.raw"), "raw");
    assert_same_disk(&stream, "vmdk", &target.join("disk4.raw"), "raw");
    assert_same_disk(&vdi, "vdi", &target.join("disk5.raw"), "raw");
    // The fixed disk comes back without its footer: the guest's disk, byte for byte.
    assert_eq!(
        fs::read(target.join("disk1.raw")).unwrap(),
        fs::read(&raw).unwrap()
    );

    // Back to a fixed VHD, as Azure takes disks: the raw disk and a footer, still sparse.
    let as_vhd = env.path("as-vhd");
    env.restore(&point, &["--target", p(&as_vhd), "--format", "vhd"]);
    for (disk, source, format) in [
        ("disk0", &dynamic, "vpc"),
        ("disk1", &fixed, "vpc"),
        ("disk2", &vhdx, "vhdx"),
        ("disk3", &sparse, "vmdk"),
        ("disk4", &stream, "vmdk"),
        ("disk5", &vdi, "vdi"),
    ] {
        let restored = as_vhd.join(format!("{disk}.vhd"));
        assert_same_disk(source, format, &restored, "vpc");
        let meta = fs::metadata(&restored).unwrap();
        let disk_size = fs::metadata(target.join(format!("{disk}.raw")))
            .unwrap()
            .len();
        assert_eq!(meta.len(), disk_size + 512);
        assert!(meta.blocks() * 512 < 40 << 20, "{} blocks", meta.blocks());
    }
    // And tessera takes it back as a VHD.
    let again = env.backup(&[p(&as_vhd.join("disk1.vhd")), "--item", "again"]);
    let attributes = point_attributes(&env, &point_of(&again));
    assert_eq!(attributes["disk0.format"], "vhd", "{attributes}");

    // To dynamic VHDX disks, as Hyper-V's generation 2 machines need, which QEMU and
    // tessera read as the disk.
    let as_vhdx = env.path("as-vhdx");
    env.restore(&point, &["--target", p(&as_vhdx), "--format", "vhdx"]);
    for (disk, source, format) in [("disk2", &vhdx, "vhdx"), ("disk3", &sparse, "vmdk")] {
        let restored = as_vhdx.join(format!("{disk}.vhdx"));
        assert_same_disk(source, format, &restored, "vhdx");
        tool("qemu-img", &["check", "-f", "vhdx", p(&restored)]);
        let meta = fs::metadata(&restored).unwrap();
        assert!(meta.blocks() * 512 < 48 << 20, "{} blocks", meta.blocks());
    }
    let again = env.backup(&[p(&as_vhdx.join("disk2.vhdx")), "--item", "again-vhdx"]);
    let attributes = point_attributes(&env, &point_of(&again));
    assert_eq!(attributes["disk0.format"], "vhdx", "{attributes}");

    // To VMware disks: a descriptor and its flat extent, sparse, which QEMU and tessera
    // read as the disk.
    let as_vmdk = env.path("as-vmdk");
    env.restore(&point, &["--target", p(&as_vmdk), "--format", "vmdk"]);
    for (disk, source, format) in [("disk0", &dynamic, "vpc"), ("disk5", &vdi, "vdi")] {
        let restored = as_vmdk.join(format!("{disk}.vmdk"));
        assert_same_disk(source, format, &restored, "vmdk");
        let flat = fs::metadata(as_vmdk.join(format!("{disk}-flat.vmdk"))).unwrap();
        assert!(flat.blocks() * 512 < 40 << 20, "{} blocks", flat.blocks());
    }
    let again = env.backup(&[p(&as_vmdk.join("disk0.vmdk")), "--item", "again-vmdk"]);
    let attributes = point_attributes(&env, &point_of(&again));
    assert_eq!(attributes["disk0.format"], "vmdk", "{attributes}");
    let restored = env.path("again-vmdk");
    env.restore(&point_of(&again), &["--target", p(&restored)]);
    assert_same_disk(&dynamic, "vpc", &restored.join("disk0.raw"), "raw");

    for disk in ["disk0", "disk1", "disk2", "disk3", "disk4", "disk5"] {
        assert_eq!(
            env.ls(&point, &format!("{disk}/part1/etc")),
            [
                format!("{disk}/part1/etc/blob.bin"),
                format!("{disk}/part1/etc/hostname")
            ]
        );
        let files = env.path(&format!("files-{disk}"));
        env.restore(
            &point,
            &[
                "--path",
                &format!("{disk}/part1/etc"),
                "--target",
                p(&files),
            ],
        );
        assert_eq!(
            fs::read(files.join(format!("{disk}/part1/etc/blob.bin"))).unwrap(),
            blob
        );
        assert_eq!(
            fs::read(files.join(format!("{disk}/part1/etc/hostname"))).unwrap(),
            b"azure-vm\n"
        );
    }
}

/// `qemu-img create` of a VMDK delta disk `path` over `parent` (a name relative to it), of
/// `subformat`.
fn vmdk_delta(path: &Path, parent: &str, subformat: &str) {
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={subformat}"),
            "-b",
            parent,
            "-F",
            "vmdk",
            p(path),
        ],
    );
}

#[test]
fn split_flat_and_snapshot_vmdk_disks_back_up_through_their_descriptors() {
    let env = env();
    let raw = env.path("disk.raw");
    raw_disk(&raw, 24 << 20, 61);
    let convert = |name: &str, subformat: &str| {
        let out = env.path(name);
        tool(
            "qemu-img",
            &[
                "convert",
                "-O",
                "vmdk",
                "-o",
                &format!("subformat={subformat}"),
                p(&raw),
                p(&out),
            ],
        );
        out
    };
    // Disks described by a descriptor file, named on the command line: split into
    // sparse extents, and flat (the data a raw file beside it).
    let split = convert("split.vmdk", "twoGbMaxExtentSparse");
    let flat = convert("flat.vmdk", "monolithicFlat");
    assert!(env.path("split-s001.vmdk").exists() && env.path("flat-flat.vmdk").exists());
    // A VMware snapshot chain: a base disk, a delta over it and a split delta over that,
    // each written after it was taken.
    convert("base.vmdk", "monolithicSparse");
    let middle = env.path("middle.vmdk");
    vmdk_delta(&middle, "base.vmdk", "monolithicSparse");
    qemu_write(&middle, "vmdk", 0x55, 1 << 20, 70_000);
    let top = env.path("top.vmdk");
    vmdk_delta(&top, "middle.vmdk", "twoGbMaxExtentSparse");
    qemu_write(&top, "vmdk", 0x66, 8 << 20, 4096);
    qemu_write(&top, "vmdk", 0x67, (1 << 20) + 65_536, 512);

    let summary = env.backup(&[p(&split), p(&flat), p(&top), "--item", "vmware"]);
    let point = point_of(&summary);
    let attributes = point_attributes(&env, &point);
    for disk in ["disk0", "disk1", "disk2"] {
        assert_eq!(attributes[format!("{disk}.format")], "vmdk", "{attributes}");
    }
    let target = env.path("restored");
    env.restore(&point, &["--target", p(&target)]);
    assert_same_disk(&split, "vmdk", &target.join("disk0.raw"), "raw");
    assert_same_disk(&flat, "vmdk", &target.join("disk1.raw"), "raw");
    assert_same_disk(&top, "vmdk", &target.join("disk2.raw"), "raw");

    // The flat extent changes behind its descriptor, whose own times stay: the next backup
    // still reads the disk, and restores the change.
    let descriptor_time = fs::metadata(&flat).unwrap().modified().unwrap();
    qemu_write(&env.path("flat-flat.vmdk"), "raw", 0x77, 3 << 20, 8192);
    assert_eq!(
        fs::metadata(&flat).unwrap().modified().unwrap(),
        descriptor_time
    );
    let second = point_of(&env.backup(&[p(&split), p(&flat), p(&top), "--item", "vmware"]));
    let again = env.path("restored-again");
    env.restore(&second, &["--target", p(&again)]);
    assert_same_disk(&flat, "vmdk", &again.join("disk1.raw"), "raw");
    let restored = fs::read(again.join("disk1.raw")).unwrap();
    assert!(
        restored[3 << 20..(3 << 20) + 8192]
            .iter()
            .all(|&b| b == 0x77)
    );

    // A base written to after the snapshot no longer matches it: refused, with the reason.
    qemu_write(&env.path("base.vmdk"), "vmdk", 0x88, 0, 4096);
    let err = env.backup_fails(&[p(&top)]);
    assert!(
        err.contains("disk0") && err.contains("parent changed after the snapshot"),
        "{err}"
    );
}

#[test]
fn qcow2_versions_compression_cluster_sizes_and_backing_chains() {
    let env = env();
    let mut cases: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for (name, options) in [
        ("v2.qcow2", "compat=0.10"),
        ("small-clusters.qcow2", "cluster_size=4096"),
        ("big-clusters.qcow2", "cluster_size=2097152"),
    ] {
        let image = env.path(name);
        qcow2_disk(&image, "16M", options);
        cases.push((image, vec![]));
    }
    // Compressed clusters, zlib and zstd.
    for (name, kind) in [("zlib.qcow2", "zlib"), ("zstd.qcow2", "zstd")] {
        let plain = env.path(&format!("plain-{name}"));
        qcow2_disk(&plain, "16M", "compat=1.1");
        let image = env.path(name);
        tool(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("compression_type={kind}"),
                p(&plain),
                p(&image),
            ],
        );
        cases.push((image, vec![]));
    }
    // A chain of three, the base in a directory of its own (outside the top's) that must
    // be granted.
    let elsewhere = tempfile::tempdir().unwrap();
    let base_dir = elsewhere.path().join("base");
    fs::create_dir(&base_dir).unwrap();
    let base = base_dir.join("base.qcow2");
    qcow2_disk(&base, "16M", "compat=1.1");
    let middle = env.path("middle.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            p(&base),
            "-F",
            "qcow2",
            p(&middle),
        ],
    );
    qemu_write(&middle, "qcow2", 0x33, 2 << 20, 1 << 20);
    let top = env.path("top.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "middle.qcow2",
            "-F",
            "qcow2",
            p(&top),
        ],
    );
    qemu_write(&top, "qcow2", 0x44, 0, 4096);
    cases.push((top.clone(), vec!["--grant".into(), p(&base_dir).into()]));

    for (image, extra) in &cases {
        let mut args = vec![p(image).to_string()];
        args.extend(extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let point = point_of(&env.backup(&args));
        let target = env.path(&format!(
            "restored-{}",
            image.file_name().unwrap().to_str().unwrap()
        ));
        env.restore(&point, &["--target", p(&target)]);
        assert_same_disk(image, "qcow2", &target.join("disk0.raw"), "raw");
    }

    // Without the grant the backing file is out of reach, and the error says so.
    let err = env.backup_fails(&[p(&top)]);
    assert!(err.contains("disk0") && err.contains("--grant"), "{err}");
}

/// The value of extended attribute `name` of `path`.
fn xattr(path: &Path, name: &str) -> Vec<u8> {
    let mut value = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(path, name, &mut value)
        .unwrap_or_else(|e| panic!("{name} of {}: {e}", path.display()));
    value.truncate(n);
    value
}

/// Writes each file-system image into `disk` at its byte offset, holes left as holes.
fn write_partitions(disk: &Path, images: &[(&PathBuf, u64)]) {
    for (image, at) in images {
        tool(
            "dd",
            &[
                &format!("if={}", p(image)),
                &format!("of={}", p(disk)),
                "bs=512",
                &format!("seek={}", at / 512),
                "conv=notrunc,sparse",
                "status=none",
            ],
        );
    }
}

/// A 64 MiB GPT disk: partition 1 ext4 made from `tree`, partition 2 FAT16 with one file.
fn gpt_disk(env: &Env, tree: &Path) -> PathBuf {
    let disk = env.path("gpt.raw");
    fs::File::create(&disk).unwrap().set_len(64 << 20).unwrap();
    tool(
        "sgdisk",
        &[
            "-n",
            "1:2048:+36M",
            "-t",
            "1:8300",
            "-n",
            "2:0:0",
            "-t",
            "2:0700",
            p(&disk),
        ],
    );
    let ext4 = env.path("part1.ext4");
    fs::File::create(&ext4).unwrap().set_len(36 << 20).unwrap();
    // Group descriptors spread over the volume (`meta_bg`, as after a large resize) and
    // attribute values too large for an attribute block kept in inodes of their own.
    let features = "meta_bg,^resize_inode,ea_inode";
    tool(
        "mkfs.ext4",
        &["-q", "-F", "-O", features, "-d", p(tree), p(&ext4)],
    );
    let fat = env.path("part2.fat");
    let fat_size = (64 << 20) - (2048 * 512) - (36 << 20) - (34 * 512);
    fs::File::create(&fat)
        .unwrap()
        .set_len(fat_size as u64 / 512 * 512)
        .unwrap();
    tool("mkfs.fat", &["-F", "16", p(&fat)]);
    fs::write(env.path("notes.txt"), b"on the FAT partition\n").unwrap();
    tool(
        "mcopy",
        &["-i", p(&fat), p(&env.path("notes.txt")), "::/NOTES.TXT"],
    );
    let start2 = 2048 * 512 + (36 << 20);
    write_partitions(&disk, &[(&ext4, 2048 * 512), (&fat, start2)]);
    disk
}

/// The files of Linux software RAID arrays (laid out by `tests/scripts/md-member.py` as
/// mdadm lays them out) list and restore: a RAID1 member's (MD metadata 1.2 in a
/// partition, 1.1 on a whole disk) from the array's data on it, a RAID0 array's from its
/// two members, two disks of the point, a RAID5 array's from two of its three members
/// (a partition and a whole disk), with a warning naming the one rebuilt from parity,
/// and a RAID6 array's from two of its four (metadata 0.90); a member of a RAID6 array
/// of a layout the kernel does not have, and a RAID0 member whose partner is not in the
/// point, are refused with the reason.
#[test]
fn files_restore_from_software_raid_members() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"md-vm\n").unwrap();
    let ext4 = ext4_of(&env, "array.ext4", &tree, 16);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/md-member.py");
    let member = |name: &str, extra: &[&str]| {
        let out = env.path(name);
        let mut args = vec![p(&script), p(&ext4), p(&out)];
        args.extend_from_slice(extra);
        tool("python3", &args);
        out
    };
    // disk0: a GPT partition holding a member; disk1: a whole disk that is one; disk2: a
    // partition holding a member of a RAID5 array, disk5 another (the third is not in the
    // point); disk6: a member of a RAID6 array of a layout the kernel does not have.
    let partitioned = |name: &str, member: &Path| {
        let disk = env.path(name);
        fs::File::create(&disk).unwrap().set_len(24 << 20).unwrap();
        tool("sgdisk", &["-n", "1:2048:0", "-t", "1:fd00", p(&disk)]);
        write_partitions(&disk, &[(&member.to_path_buf(), 2048 * 512)]);
        disk
    };
    let disk0 = partitioned("disk0.raw", &member("m0", &[]));
    let disk1 = member("disk1.raw", &["--metadata", "1.1", "--role", "1"]);
    let raid5 = ["--level", "5", "--disks", "3", "--uuid", &"55".repeat(16)];
    let disk2 = partitioned("disk2.raw", &member("m2", &raid5));
    let disk5 = member("disk5.raw", &[&raid5[..], &["--role", "2"]].concat());
    let unknown = ["--level", "6", "--disks", "4", "--layout", "11"];
    let disk6 = member("disk6.raw", &unknown);
    // disk7 and disk8: roles 1 and 2 of a RAID6 array of four.
    let raid6 = |name: &str, role: &str| {
        let args = [
            "--level",
            "6",
            "--disks",
            "4",
            "--metadata",
            "0.90",
            "--role",
            role,
        ];
        member(name, &[&args[..], &["--uuid", &"66".repeat(16)]].concat())
    };
    let (disk7, disk8) = (raid6("disk7.raw", "1"), raid6("disk8.raw", "2"));
    // disk3 and disk4: the two members of a RAID0 array.
    let raid0 = |name: &str, role: &str| {
        let uuid = "00112233445566778899aabbccddeeff";
        member(name, &["--level", "0", "--uuid", uuid, "--role", role])
    };
    let (disk3, disk4) = (raid0("disk3.raw", "0"), raid0("disk4.raw", "1"));

    let disks = [
        &disk0, &disk1, &disk2, &disk3, &disk4, &disk5, &disk6, &disk7, &disk8,
    ]
    .map(|d| p(d));
    let summary = env.backup(&[&disks[..], &["--item", "md"]].concat());
    let point = point_of(&summary);
    for (dir, file) in [
        ("disk0/part1/etc", "disk0/part1/etc/hostname"),
        ("disk1/fs/etc", "disk1/fs/etc/hostname"),
        ("disk3/fs/etc", "disk3/fs/etc/hostname"),
        ("disk4/fs/etc", "disk4/fs/etc/hostname"),
        ("disk2/part1/etc", "disk2/part1/etc/hostname"),
        ("disk5/fs/etc", "disk5/fs/etc/hostname"),
        ("disk8/fs/etc", "disk8/fs/etc/hostname"),
    ] {
        assert_eq!(env.ls(&point, dir), [file]);
        let target = env.path(&format!("files-{}", &file[..5]));
        env.restore(&point, &["--path", file, "--target", p(&target)]);
        assert_eq!(fs::read(target.join(file)).unwrap(), b"md-vm\n");
    }
    // The RAID5 array's missing member is named.
    let output = tessera(&env.vault)
        .args(["ls", &point, "disk5/fs/etc"])
        .output()
        .unwrap();
    let warned = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{warned}");
    assert!(
        warned.contains("without its member of role 1") && warned.contains("55555555:"),
        "{warned}"
    );
    let err = env.ls_fails(&point, "disk6/fs");
    assert!(
        err.contains("layout 11") && err.contains("host:md0"),
        "{err}"
    );
    // A RAID0 member without its partner.
    let alone = env.backup(&[p(&disk3), "--item", "half"]);
    let err = env.ls_fails(&point_of(&alone), "disk0/fs");
    assert!(err.contains("role 1 is not among the disks"), "{err}");
}

#[test]
fn files_restore_from_inside_a_disk_without_restoring_the_disk() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc/ssh")).unwrap();
    fs::write(tree.join("etc/hostname"), b"web-01\n").unwrap();
    fs::set_permissions(tree.join("etc/hostname"), fs::Permissions::from_mode(0o640)).unwrap();
    let big = random_bytes(9, 3 << 20);
    fs::write(tree.join("etc/ssh/blob.bin"), &big).unwrap();
    std::os::unix::fs::symlink("hostname", tree.join("etc/name-link")).unwrap();
    // 8 MiB with 1 KiB of data in the middle: it comes back with its holes.
    let mut sparse = vec![0u8; 8 << 20];
    sparse[(3 << 20) + 100..(3 << 20) + 1124].fill(0xa5);
    fs::write(tree.join("etc/ssh/sparse.img"), &sparse).unwrap();
    // Extended attributes (one in the inode, one too large for it) and a device node
    // come back from the inodes, which the ext reader itself does not show.
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::setxattr(tree.join("etc/hostname"), "user.role", b"web", flags).unwrap();
    let label = random_bytes(10, 700);
    rustix::fs::setxattr(tree.join("etc/ssh/blob.bin"), "user.label", &label, flags).unwrap();
    let manifest = random_bytes(11, 3000);
    rustix::fs::setxattr(
        tree.join("etc/ssh/blob.bin"),
        "user.manifest",
        &manifest,
        flags,
    )
    .unwrap();
    let root = rustix::process::geteuid().is_root();
    if root {
        use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
        let mode = Mode::from_raw_mode(0o620);
        let dev = makedev(4, 7);
        mknodat(
            CWD,
            tree.join("etc/ssh/tty7"),
            FileType::CharacterDevice,
            mode,
            dev,
        )
        .unwrap();
    }
    let raw = gpt_disk(&env, &tree);
    let disk = env.path("gpt.qcow2");
    tool("qemu-img", &["convert", "-O", "qcow2", p(&raw), p(&disk)]);

    let point = point_of(&env.backup(&[p(&disk)]));
    assert_eq!(env.ls(&point, "disk0"), ["disk0/part1", "disk0/part2"]);
    // Recursively, each directory is followed by what it holds.
    let out = run_ok(tessera(&env.vault).args(["ls", "-r", &point, "disk0/part1/etc", "--json"]));
    let listed: Vec<String> = serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    let ssh = listed
        .iter()
        .position(|p| p == "disk0/part1/etc/ssh")
        .unwrap();
    assert_eq!(
        listed[ssh + 1],
        "disk0/part1/etc/ssh/blob.bin",
        "{listed:?}"
    );
    assert!(
        listed.contains(&"disk0/part1/etc/ssh/sparse.img".to_string()),
        "{listed:?}"
    );
    assert!(
        listed.contains(&"disk0/part1/etc/hostname".to_string()),
        "{listed:?}"
    );
    let etc = env.ls(&point, "disk0/part1/etc");
    for name in ["hostname", "name-link", "ssh"] {
        assert!(etc.contains(&format!("disk0/part1/etc/{name}")), "{etc:?}");
    }

    let target = env.path("files");
    env.restore(
        &point,
        &["--path", "disk0/part1/etc/hostname", "--target", p(&target)],
    );
    let restored = target.join("disk0/part1/etc/hostname");
    assert_eq!(fs::read(&restored).unwrap(), b"web-01\n");
    assert_eq!(xattr(&restored, "user.role"), b"web");
    assert_eq!(fs::metadata(&restored).unwrap().mode() & 0o7777, 0o640);
    assert!(!target.join("disk0.raw").exists());

    // A directory comes with everything below it; FAT files too.
    env.restore(
        &point,
        &[
            "--path",
            "disk0/part1/etc/ssh",
            "--path",
            "disk0/part2/NOTES.TXT",
            "--target",
            p(&target),
        ],
    );
    assert_eq!(
        fs::read(target.join("disk0/part1/etc/ssh/blob.bin")).unwrap(),
        big
    );
    assert_eq!(
        xattr(&target.join("disk0/part1/etc/ssh/blob.bin"), "user.label"),
        label
    );
    assert_eq!(
        xattr(
            &target.join("disk0/part1/etc/ssh/blob.bin"),
            "user.manifest"
        ),
        manifest
    );
    if root {
        let tty = fs::symlink_metadata(target.join("disk0/part1/etc/ssh/tty7")).unwrap();
        assert!(tty.file_type().is_char_device());
        assert_eq!(tty.rdev(), rustix::fs::makedev(4, 7));
        let source = fs::symlink_metadata(tree.join("etc/ssh/tty7")).unwrap();
        assert_eq!(tty.mode(), source.mode());
    }
    let restored_sparse = target.join("disk0/part1/etc/ssh/sparse.img");
    assert_eq!(fs::read(&restored_sparse).unwrap(), sparse);
    let allocated = fs::metadata(&restored_sparse).unwrap().blocks() * 512;
    assert!(allocated <= 64 << 10, "sparse.img takes {allocated} bytes");
    assert_eq!(
        fs::read(target.join("disk0/part2/NOTES.TXT")).unwrap(),
        b"on the FAT partition\n"
    );

    // An MBR disk with the file system in its second partition.
    let mbr = env.path("mbr.raw");
    fs::File::create(&mbr).unwrap().set_len(48 << 20).unwrap();
    // Too large for the next file system's attribute blocks, which lacks `ea_inode`.
    rustix::fs::removexattr(tree.join("etc/ssh/blob.bin"), "user.manifest").unwrap();
    let table = "label: dos\nstart=2048, size=8192, type=83\nstart=10240, type=83\n";
    let mut sfdisk = Command::new("sfdisk")
        .arg(p(&mbr))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sfdisk runs");
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let ext = env.path("mbr-part2.ext4");
    fs::File::create(&ext)
        .unwrap()
        .set_len((48 << 20) - 10240 * 512)
        .unwrap();
    tool("mkfs.ext4", &["-q", "-F", "-d", p(&tree), p(&ext)]);
    write_partitions(&mbr, &[(&ext, 10240 * 512)]);
    let point = point_of(&env.backup(&[p(&mbr)]));
    let target = env.path("mbr-files");
    env.restore(
        &point,
        &["--path", "disk0/part2/etc/hostname", "--target", p(&target)],
    );
    assert_eq!(
        fs::read(target.join("disk0/part2/etc/hostname")).unwrap(),
        b"web-01\n"
    );
}

/// An NBD server; killed on drop.
struct NbdServer {
    child: Child,
    port: u16,
}

impl NbdServer {
    /// `qemu-nbd` serving a qcow2 image as `disk`, exporting `bitmap` if given.
    fn start(image: &Path, bitmap: Option<&str>, writable: bool) -> NbdServer {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new("qemu-nbd");
        command
            .args([
                "-f",
                "qcow2",
                "--persistent",
                "--shared=4",
                "--bind",
                "127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .args(["-x", "disk"]);
        if let Some(bitmap) = bitmap {
            command.args(["-B", bitmap]);
        }
        if !writable {
            command.arg("-r");
        }
        let child = command
            .arg(image)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-nbd runs (install qemu-utils)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "qemu-nbd did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NbdServer { child, port }
    }

    fn url(&self) -> String {
        format!("nbd://127.0.0.1:{}/disk", self.port)
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 64 MiB qcow2 disk with 2 MiB of data at four places and an empty dirty bitmap `b0`.
fn bitmapped_disk(image: &Path) {
    create_qcow2(image, "64M", &[]);
    for (i, at) in [0u64, 8, 20, 40].into_iter().enumerate() {
        qemu_write(image, "qcow2", 0x50 + i as u8, at << 20, 2 << 20);
    }
    add_bitmap(image, "64k");
}

#[test]
fn a_live_disk_over_nbd_backs_up_only_changed_blocks_through_a_dirty_bitmap() {
    let env = env();
    let image = env.path("live.qcow2");
    bitmapped_disk(&image);

    let full_snapshot = env.path("full.raw");
    let first = {
        let server = NbdServer::start(&image, Some("b0"), false);
        let summary = env.backup(&[&server.url(), "--bitmap", "b0", "--item", "live"]);
        snapshot_raw(&image, &full_snapshot);
        summary
    };
    // Holes were skipped: only the 8 MiB written were read.
    assert!(first["bytes_read"].as_u64().unwrap() <= 9 << 20, "{first}");

    // Change 640 KiB: 1 % of the disk, in two places.
    qemu_write(&image, "qcow2", 0x77, 10 << 20, 512 << 10);
    qemu_write(&image, "qcow2", 0x78, 50 << 20, 128 << 10);
    let changed_snapshot = env.path("changed.raw");
    snapshot_raw(&image, &changed_snapshot);
    let second = {
        let server = NbdServer::start(&image, Some("b0"), false);
        env.backup(&[&server.url(), "--bitmap", "b0", "--item", "live"])
    };
    let read = second["bytes_read"].as_u64().unwrap();
    assert!(
        ((640 << 10)..=(1 << 20)).contains(&read),
        "read {read} bytes: {second}"
    );
    assert!(second["bytes_carried"].as_u64().unwrap() > 0, "{second}");
    assert_points_restore(
        &env,
        &[(&first, &full_snapshot), (&second, &changed_snapshot)],
    );

    // A bitmap the server does not export is a clear error, and nothing is committed.
    let before = env.points().len();
    let server = NbdServer::start(&image, Some("b0"), false);
    let err = env.backup_fails(&[&server.url(), "--bitmap", "nope", "--item", "live"]);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(env.points().len(), before);
}

#[test]
fn a_stopped_vms_qcow2_image_backs_up_only_what_its_persistent_bitmap_marks() {
    let env = env();
    let image = env.path("stopped.qcow2");
    bitmapped_disk(&image);
    let first = env.backup(&[p(&image), "--bitmap", "b0", "--item", "stopped"]);
    let full_snapshot = env.path("full.raw");
    snapshot_raw(&image, &full_snapshot);
    assert!(first["bytes_read"].as_u64().unwrap() <= 9 << 20, "{first}");

    // The VM ran and wrote 640 KiB; its image's bitmap recorded where.
    qemu_write(&image, "qcow2", 0x77, 10 << 20, 512 << 10);
    qemu_write(&image, "qcow2", 0x78, 50 << 20, 128 << 10);
    let changed_snapshot = env.path("changed.raw");
    snapshot_raw(&image, &changed_snapshot);
    let second = env.backup(&[p(&image), "--bitmap", "b0", "--item", "stopped"]);
    assert_eq!(
        second["bytes_read"].as_u64().unwrap(),
        640 << 10,
        "{second}"
    );
    assert!(
        second["bytes_carried"].as_u64().unwrap() >= 7 << 20,
        "{second}"
    );
    assert_points_restore(
        &env,
        &[(&first, &full_snapshot), (&second, &changed_snapshot)],
    );

    // The image open in a running QEMU (its bitmap marked in use): refused, nothing
    // committed, and the message says what to do.
    let server = NbdServer::start(&image, None, true);
    let before = env.points().len();
    let err = env.backup_fails(&[p(&image), "--bitmap", "b0", "--item", "stopped"]);
    drop(server);
    assert!(
        err.contains("disk0") && err.contains("in use") && err.contains("NBD"),
        "{err}"
    );
    // A bitmap the image does not have names the ones it has.
    let err = env.backup_fails(&[p(&image), "--bitmap", "nope", "--item", "stopped"]);
    assert!(err.contains("\"nope\"") && err.contains("\"b0\""), "{err}");
    assert_eq!(env.points().len(), before);
}

#[test]
fn a_live_disk_spanning_many_planning_windows_backs_up_and_restores_exactly() {
    // 4 KiB chunks plan the disk 256 MiB at a time: this 1.25 GiB disk takes five
    // windows, and the reads of each window go out before the previous window's bytes are
    // stored. Data straddles window boundaries and fills more than one batch of reads.
    let env = env();
    let image = env.path("wide.qcow2");
    create_qcow2(&image, "1280M", &["-o", "cluster_size=4k"]);
    let window = 256u64 << 20;
    for (i, at) in [
        0,
        window - (1 << 20),
        2 * window + (3 << 20),
        5 * window - (5 << 20),
    ]
    .into_iter()
    .enumerate()
    {
        qemu_write(&image, "qcow2", 0x30 + i as u8, at, 5 << 20);
    }
    add_bitmap(&image, "4k");
    let backup = |url: &str| {
        env.backup(&[
            url,
            "--bitmap",
            "b0",
            "--item",
            "wide",
            "--setting",
            "chunk-size=4096",
        ])
    };

    let full_snapshot = env.path("wide-full.raw");
    let first = {
        let server = NbdServer::start(&image, Some("b0"), false);
        backup(&server.url())
    };
    snapshot_raw(&image, &full_snapshot);
    assert_eq!(first["bytes_read"].as_u64().unwrap(), 20 << 20, "{first}");

    // Blocks changed in every window, one across a boundary, one in a hole (which
    // allocates only what it writes: the image's clusters are as small as the chunks).
    let changes = [
        (1u64 << 20, 64u64 << 10),
        (window - (32 << 10), 64 << 10),
        (2 * window + (4 << 20), 4 << 10),
        (3 * window + (7 << 20), 12 << 10),
        (5 * window - (1 << 20), 8 << 10),
    ];
    for (i, &(at, len)) in changes.iter().enumerate() {
        qemu_write(&image, "qcow2", 0x90 + i as u8, at, len);
    }
    let changed_snapshot = env.path("wide-changed.raw");
    snapshot_raw(&image, &changed_snapshot);
    let second = {
        let server = NbdServer::start(&image, Some("b0"), false);
        backup(&server.url())
    };
    let changed: u64 = changes.iter().map(|&(_, len)| len).sum();
    assert_eq!(second["bytes_read"].as_u64().unwrap(), changed, "{second}");
    assert_points_restore(
        &env,
        &[(&first, &full_snapshot), (&second, &changed_snapshot)],
    );
}

#[test]
fn a_disk_restores_onto_an_nbd_export() {
    let env = env();
    let source = env.path("source.qcow2");
    qcow2_disk(&source, "16M", "compat=1.1");
    let point = point_of(&env.backup(&[p(&source)]));

    let blank = env.path("blank.qcow2");
    create_qcow2(&blank, "16M", &[]);
    qemu_write(&blank, "qcow2", 0x99, 6 << 20, 1 << 20);
    {
        let server = NbdServer::start(&blank, None, true);
        env.restore(&point, &["--path", "disk0", "--target", &server.url()]);
    }
    assert_same_disk(&source, "qcow2", &blank, "qcow2");

    // An export smaller than the disk is refused.
    let small = env.path("small.qcow2");
    create_qcow2(&small, "8M", &[]);
    let server = NbdServer::start(&small, None, true);
    let output = tessera(&env.vault)
        .args([
            "restore",
            &point,
            "--path",
            "disk0",
            "--target",
            &server.url(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("disk0"), "{err}");
}

#[test]
fn hooks_decide_the_consistency_and_post_always_runs() {
    let env = env();
    let disk = env.path("disk.raw");
    raw_disk(&disk, 4 << 20, 5);
    let post_mark = env.path("post-ran");
    let post = format!("echo $TESSERA_HOOK > {}", p(&post_mark));

    let ok = env.backup(&[p(&disk), "--pre-hook", "true", "--post-hook", &post]);
    let failed = env.backup(&[
        p(&disk),
        "--pre-hook",
        "echo not frozen >&2; exit 4",
        "--post-hook",
        &post,
    ]);
    assert_eq!(fs::read_to_string(&post_mark).unwrap(), "post\n");
    fs::remove_file(&post_mark).unwrap();
    let started = Instant::now();
    let hung = env.backup(&[
        p(&disk),
        "--pre-hook",
        "sleep 60",
        "--hook-timeout",
        "1",
        "--post-hook",
        &post,
    ]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        post_mark.exists(),
        "the post command did not run after a hanging pre"
    );

    let points = env.points();
    let consistency = |summary: &Value| {
        let id = point_of(summary);
        points
            .iter()
            .find(|p| p["id"].as_str() == Some(id.as_str()))
            .map(|p| p["consistency"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(consistency(&ok), "application");
    assert_eq!(consistency(&failed), "crash");
    assert_eq!(consistency(&hung), "crash");
    let reasons = format!("{failed} {hung}");
    assert!(
        reasons.contains("not frozen") && reasons.contains("killed"),
        "{reasons}"
    );
}

#[test]
fn broken_images_fail_clearly_and_commit_nothing() {
    let env = env();
    let good = env.path("good.qcow2");
    qcow2_disk(&good, "16M", "compat=1.1");
    let size = fs::metadata(&good).unwrap().len();

    // Cut short: the data clusters at the end are gone.
    let truncated = env.path("truncated.qcow2");
    fs::copy(&good, &truncated).unwrap();
    fs::File::options()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    let err = env.backup_fails(&[p(&truncated)]);
    assert!(err.contains("disk0") && err.contains("0x"), "{err}");

    // A backing chain that loops.
    let a = env.path("a.qcow2");
    let b = env.path("b.qcow2");
    create_qcow2(&a, "16M", &[]);
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            p(&b),
        ],
    );
    tool(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            p(&a),
        ],
    );
    let err = env.backup_fails(&[p(&b)]);
    assert!(err.contains("loop"), "{err}");

    // Encrypted images are refused.
    let encrypted = env.path("encrypted.qcow2");
    create_qcow2(
        &encrypted,
        "16M",
        &[
            "--object",
            "secret,id=s0,data=pw",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s0",
        ],
    );
    let err = env.backup_fails(&[p(&encrypted)]);
    assert!(err.contains("encrypt"), "{err}");

    // A partition table pointing past the disk is a clear error when browsing.
    let disk = env.path("bad-table.raw");
    fs::File::create(&disk).unwrap().set_len(8 << 20).unwrap();
    let mut mbr = vec![0u8; 512];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&(1u32 << 20).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    use std::os::unix::fs::FileExt;
    fs::File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all_at(&mbr, 0)
        .unwrap();
    let point = point_of(&env.backup(&[p(&disk)]));
    let output = tessera(&env.vault)
        .args(["ls", &point, "disk0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("partition 1"), "{err}");

    assert_eq!(
        env.points().len(),
        1,
        "only the good disk's point was committed"
    );
    run_ok(tessera(&env.vault).arg("check"));
}

/// The largest pack file of a vault.
fn largest_pack(vault: &Path) -> PathBuf {
    let mut packs = Vec::new();
    for dir in fs::read_dir(vault.join("data")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for file in fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                packs.push((fs::metadata(&file).unwrap().len(), file));
            }
        }
    }
    packs.into_iter().max().expect("the vault has packs").1
}

#[test]
fn a_point_check_finds_damaged_is_not_trusted_as_a_parent() {
    let env = env();
    let disk = env.path("disk.raw");
    raw_disk(&disk, 8 << 20, 7);
    let first = env.backup(&[p(&disk), "--item", "vm"]);
    // Unchanged, the image is carried forward whole without being read.
    let unchanged = env.backup(&[p(&disk), "--item", "vm"]);
    assert_eq!(unchanged["bytes_read"].as_u64(), Some(0), "{unchanged}");

    // Bit rot in the data the points share.
    let pack = largest_pack(&env.vault);
    let mut bytes = fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    let output = tessera(&env.vault)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "check must find the damage");

    // The next backup does not build on the damaged point: it reads the disk again and
    // says why, and its point restores to the disk.
    let again = env.backup(&[p(&disk), "--item", "vm"]);
    assert!(again["bytes_read"].as_u64().unwrap() >= 4 * 8192, "{again}");
    assert!(again["parent"].is_null(), "{again}");
    assert!(again["warnings"].to_string().contains("damaged"), "{again}");
    let target = env.path("restored");
    env.restore(&point_of(&again), &["--target", p(&target)]);
    assert_same_disk(&disk, "raw", &target.join("disk0.raw"), "raw");
    let _ = first;
}

/// A loop device over an image file, attached with `losetup`; detached on drop, whatever
/// the test's outcome.
struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    /// Attaches `image` read-write; the reason when this machine cannot (not root, no
    /// `losetup`, no free loop device), for the test to say it was skipped.
    fn attach(image: &Path) -> Result<LoopDevice, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".into());
        }
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok(LoopDevice { path: path.into() })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// Runs an LVM tool without device-mapper: volumes are created but never activated.
fn lvm(command: &str, args: &[&str]) -> String {
    let output = Command::new(command)
        .args(["--driverloaded", "n"])
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command} ({e}); install lvm2"));
    assert!(
        output.status.success(),
        "{command} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The disks of a Linux VM on LVM, as an installer lays them out and an operator later
/// grows them: disk 0 a 64 MiB GPT disk, partition 1 an ext4 `/boot` and partition 2 an
/// LVM2 physical volume; disk 1 a 24 MiB disk given whole to the same volume group. The
/// group `group` holds `root` (ext4 of `root_tree`, in two runs of extents: it was grown
/// after `home` was made), `home` (XFS holding `alice/notes.txt` of `home_tree`, owned by
/// uid 1000) and `srv` (ext4 of `root_tree`,
/// filling what disk 0 has left and going on on disk 1). The file systems are written
/// where `lvs` reports each volume's extents to lie. Returns both disks' paths.
fn lvm_disks(
    env: &Env,
    group: &str,
    root_tree: &Path,
    home_tree: &Path,
) -> Result<(PathBuf, PathBuf), String> {
    let (pv, disk1) = (env.path("pv.img"), env.path("disk1.raw"));
    let pv_size: u64 = 52 << 20;
    fs::File::create(&pv).unwrap().set_len(pv_size).unwrap();
    fs::File::create(&disk1).unwrap().set_len(24 << 20).unwrap();
    let (loop_a, loop_b) = (LoopDevice::attach(&pv)?, LoopDevice::attach(&disk1)?);
    let (a, b) = (p(&loop_a.path), p(&loop_b.path));
    lvm("pvcreate", &["-q", a, b]);
    lvm("vgcreate", &["-q", "-s", "1m", group, a, b]);
    let create = |args: &[&str]| {
        let options = ["-q", "--activate", "n", "--zero", "n"];
        lvm("lvcreate", &[&options[..], args].concat());
    };
    create(&["-L", "12m", "-n", "root", group, a]);
    create(&["-L", "16m", "-n", "home", group, a]);
    lvm(
        "lvextend",
        &["-q", "-L", "+8m", &format!("{group}/root"), a],
    );
    create(&["-L", "30m", "-n", "srv", group, a, b]);
    let mut args = vec![
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lvm-place.py").to_owned(),
        group.to_owned(),
        format!("{a}={}", p(&pv)),
        format!("{b}={}", p(&disk1)),
        "--".to_owned(),
    ];
    for (name, tree, mib) in [("root", root_tree, 20), ("srv", root_tree, 30)] {
        let image = env.path(&format!("{name}.ext4"));
        fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        tool("mkfs.ext4", &["-q", "-F", "-d", p(tree), p(&image)]);
        args.push(format!("{name}={}", p(&image)));
    }
    let home = env.path("home.xfs");
    let notes = home_tree.join("alice/notes.txt");
    mkfs_xfs(
        &home,
        16,
        &["-b", "size=1024"],
        &format!(
            "/dev/null\n0 0\nd--755 0 0\n alice d--700 1000 1000\n  notes.txt ---644 1000 1000 {}\n $\n$\n",
            p(&notes)
        ),
    );
    args.push(format!("home={}", p(&home)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let placed = tool("python3", &args);
    // `root 0 12 /dev/loop3`: root's extents from 0, 12 of them, on the first device.
    let mut runs: Vec<String> = placed
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            format!(
                "{} {}",
                fields[0],
                if fields[3] == b { "disk1" } else { "disk0" }
            )
        })
        .collect();
    runs.sort();
    assert_eq!(
        runs,
        [
            "home disk0",
            "root disk0",
            "root disk0",
            "srv disk0",
            "srv disk1"
        ],
        "{placed}"
    );
    drop((loop_a, loop_b));

    let disk0 = env.path("lvm.raw");
    fs::File::create(&disk0).unwrap().set_len(64 << 20).unwrap();
    tool(
        "sgdisk",
        &[
            "-n",
            "1:2048:+8M",
            "-t",
            "1:8300",
            "-n",
            "2:0:0",
            "-t",
            "2:8e00",
            p(&disk0),
        ],
    );
    let boot = env.path("boot.ext4");
    fs::File::create(&boot).unwrap().set_len(8 << 20).unwrap();
    tool("mkfs.ext4", &["-q", "-F", p(&boot)]);
    let start2 = 2048 * 512 + (8 << 20);
    assert!(start2 + pv_size <= (64 << 20) - 34 * 512);
    write_partitions(&disk0, &[(&boot, 2048 * 512), (&pv, start2)]);
    Ok((disk0, disk1))
}

#[test]
fn files_restore_from_logical_volumes_of_an_lvm_disk() {
    let env = env();
    let (root_tree, home_tree) = (env.path("root-tree"), env.path("home-tree"));
    fs::create_dir_all(root_tree.join("etc")).unwrap();
    fs::write(root_tree.join("etc/hostname"), b"app-07\n").unwrap();
    let blob = random_bytes(31, 3 << 20);
    fs::write(root_tree.join("etc/blob.bin"), &blob).unwrap();
    fs::create_dir_all(home_tree.join("alice")).unwrap();
    fs::write(home_tree.join("alice/notes.txt"), b"on the home volume\n").unwrap();
    let group = format!("tessera{}vg", std::process::id());
    let (raw, disk1) = match lvm_disks(&env, &group, &root_tree, &home_tree) {
        Ok(disks) => disks,
        Err(reason) => {
            eprintln!("skipped: making LVM disks needs loop devices ({reason})");
            return;
        }
    };
    let disk0 = env.path("lvm.qcow2");
    tool("qemu-img", &["convert", "-O", "qcow2", p(&raw), p(&disk0)]);

    let point = point_of(&env.backup(&[p(&disk0), p(&disk1)]));
    assert_eq!(env.ls(&point, "disk0"), ["disk0/part1", "disk0/part2"]);
    assert_eq!(env.ls(&point, "disk1"), ["disk1/fs"]);
    let volumes = ["root", "home", "srv"];
    for pv in ["disk0/part2", "disk1/fs"] {
        let expect: Vec<String> = volumes.iter().map(|lv| format!("{pv}/{lv}")).collect();
        assert_eq!(env.ls(&point, pv), expect);
    }
    let etc = env.ls(&point, "disk0/part2/root/etc");
    assert!(
        etc.contains(&"disk0/part2/root/etc/hostname".to_owned()),
        "{etc:?}"
    );

    // A file of a volume in two runs of extents, and one of a volume spanning both disks.
    let one = env.path("one");
    for lv in ["root", "srv"] {
        let path = format!("disk0/part2/{lv}/etc/blob.bin");
        env.restore(&point, &["--path", &path, "--target", p(&one)]);
        assert_eq!(fs::read(one.join(&path)).unwrap(), blob, "{lv}");
    }

    // The whole physical volume: every logical volume below its name.
    let all = env.path("all");
    env.restore(&point, &["--path", "disk0/part2", "--target", p(&all)]);
    assert_eq!(
        fs::read(all.join("disk0/part2/root/etc/hostname")).unwrap(),
        b"app-07\n"
    );
    assert_eq!(
        fs::read(all.join("disk0/part2/home/alice/notes.txt")).unwrap(),
        b"on the home volume\n"
    );
    assert_eq!(
        fs::read(all.join("disk0/part2/srv/etc/blob.bin")).unwrap(),
        blob
    );

    let err = env.ls_fails(&point, "disk0/part2/swap");
    assert!(
        err.contains("no logical volume \"swap\"") && err.contains("root, home, srv"),
        "{err}"
    );

    // A point of disk 0 alone: the volume reaching into disk 1 cannot be read, the others can.
    let alone = point_of(&env.backup(&[p(&disk0), "--item", "disk0-only"]));
    let err = env.ls_fails(&alone, "disk0/part2/srv");
    assert!(err.contains("not among the disks"), "{err}");
    let part = env.path("part");
    env.restore(&alone, &["--path", "disk0/part2", "--target", p(&part)]);
    assert!(part.join("disk0/part2/home/alice/notes.txt").exists());
    assert!(!part.join("disk0/part2/srv").exists());
}

/// An ext4 image of `mib` MiB named `name` in the test's directory, holding `tree`.
fn ext4_of(env: &Env, name: &str, tree: &Path, mib: u64) -> PathBuf {
    let image = env.path(name);
    fs::File::create(&image)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    tool("mkfs.ext4", &["-q", "-F", "-d", p(tree), p(&image)]);
    image
}

/// Makes the files `disks` the physical volumes of volume group `group` (1 MiB extents,
/// through loop devices) and restores into its metadata, with `vgcfgrestore`, which checks
/// them, the logical volumes whose sections `volumes` writes given the metadata's names of
/// the disks' physical volumes, in order. For volumes LVM makes only through
/// device-mapper, which this leaves alone. `Err` when loop devices cannot be had.
fn restore_logical_volumes(
    env: &Env,
    disks: &[PathBuf],
    group: &str,
    volumes: impl FnOnce(&[String]) -> String,
) -> Result<(), String> {
    let loops = disks
        .iter()
        .map(|disk| LoopDevice::attach(disk))
        .collect::<Result<Vec<_>, _>>()?;
    let devices: Vec<&str> = loops.iter().map(|l| p(&l.path)).collect();
    lvm("pvcreate", &[&["-q"][..], &devices].concat());
    lvm(
        "vgcreate",
        &[&["-q", "-s", "1m", group][..], &devices].concat(),
    );
    let backup = env.path("vg.txt");
    lvm("vgcfgbackup", &["-q", "-f", p(&backup), group]);
    let text = fs::read_to_string(&backup).unwrap();
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
    let lvs = volumes(&keys);
    // Restoring thin volumes needs `--force`: the tool cannot check the pool's own
    // metadata against them.
    let force = if lvs.contains("type = \"thin\"") {
        "--force"
    } else {
        "-q"
    };
    let end = text.rfind("\n}").unwrap();
    fs::write(
        &backup,
        format!(
            "{}\nlogical_volumes {{\n{lvs}}}\n{}",
            &text[..end],
            &text[end..]
        ),
    )
    .unwrap();
    lvm("vgcfgrestore", &["-q", force, "-f", p(&backup), group]);
    lvm("vgchange", &["-q", "--activate", "n", group]);
    Ok(())
}

/// The metadata section of logical volume `name` (`n` numbering its id) of one segment,
/// from extent 0, whose other lines are `body`; hidden unless `visible`.
fn lv_section(name: &str, n: usize, visible: bool, body: &str) -> String {
    let status = if visible { ", \"VISIBLE\"" } else { "" };
    format!(
        "{name} {{\nid = \"LvId{n:02}-abcd-efgh-ijkl-mnop-qrst-uvwx{n:02}\"\n\
         status = [\"READ\", \"WRITE\"{status}]\nflags = []\nsegment_count = 1\n\
         segment1 {{\nstart_extent = 0\n{body}}}\n}}\n"
    )
}

/// A linear segment's lines: `count` extents from extent `first` of physical volume `pv`.
fn linear(count: u64, pv: &str, first: u64) -> String {
    format!(
        "extent_count = {count}\ntype = \"striped\"\nstripe_count = 1\n\
         stripes = [\"{pv}\", {first}]\n"
    )
}

/// A VM whose two disks are the physical volumes of one group holding `data`, an LVM2
/// raid1 volume with an image on each (written into metadata that `vgcfgrestore` checks,
/// as LVM makes raid1 volumes only through device-mapper): its files restore from a
/// point of both disks, and from a point of the second alone, read through its image
/// there, with a warning that says so.
#[test]
fn files_restore_from_an_lvm_mirror_with_one_of_its_disks() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"mirrored\n").unwrap();
    let disks = [env.path("disk0.raw"), env.path("disk1.raw")];
    for disk in &disks {
        fs::File::create(disk).unwrap().set_len(24 << 20).unwrap();
    }
    let group = format!("tessera{}mirror", std::process::id());
    let restored = restore_logical_volumes(&env, &disks, &group, |pvs| {
        let mut lvs = String::new();
        for (i, pv) in pvs.iter().enumerate() {
            lvs += &lv_section(&format!("data_rmeta_{i}"), 2 * i, false, &linear(1, pv, 0));
            lvs += &lv_section(
                &format!("data_rimage_{i}"),
                2 * i + 1,
                false,
                &linear(16, pv, 1),
            );
        }
        lvs + &lv_section(
            "data",
            9,
            true,
            "extent_count = 16\ntype = \"raid1\"\ndevice_count = 2\nregion_size = 1024\n\
             raids = [\"data_rmeta_0\", \"data_rimage_0\", \"data_rmeta_1\", \"data_rimage_1\"]\n",
        )
    });
    if let Err(reason) = restored {
        eprintln!("skipped: making LVM disks needs loop devices ({reason})");
        return;
    }
    // Each image, 1 MiB of extents into its disk (after the label and metadata's MiB).
    let ext4 = ext4_of(&env, "data.ext4", &tree, 16);
    for disk in &disks {
        write_partitions(disk, &[(&ext4, 2 << 20)]);
    }

    let point = point_of(&env.backup(&[p(&disks[0]), p(&disks[1])]));
    assert_eq!(env.ls(&point, "disk0/fs"), ["disk0/fs/data"]);
    let both = env.path("both");
    let file = "disk1/fs/data/etc/hostname";
    env.restore(&point, &["--path", file, "--target", p(&both)]);
    assert_eq!(fs::read(both.join(file)).unwrap(), b"mirrored\n");

    // The second disk alone: read through its image, with a warning.
    let alone = point_of(&env.backup(&[p(&disks[1]), "--item", "half"]));
    let file = "disk0/fs/data/etc/hostname";
    let target = env.path("alone");
    let output = tessera(&env.vault)
        .args(["restore", &alone, "--path", file, "--target", p(&target)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("mirror image 1"), "{stderr}");
    assert_eq!(fs::read(target.join(file)).unwrap(), b"mirrored\n");
}

/// A disk laid out as a Proxmox VE host's data disk: a physical volume holding the thin
/// pool `data` and the thin volume `vm-100-disk-0` in it (written into metadata that
/// `vgcfgrestore` checks, the pool's own metadata by `thin_restore`, as LVM makes thin
/// volumes only through device-mapper), its blocks mapped onto the pool's in reverse
/// order. The thin volume lists and its files restore; the pool is not listed.
#[test]
fn files_restore_from_an_lvm_thin_volume() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"thin\n").unwrap();
    let blob = random_bytes(41, 3 << 20);
    fs::write(tree.join("blob.bin"), &blob).unwrap();
    let disk = env.path("disk0.raw");
    fs::File::create(&disk).unwrap().set_len(48 << 20).unwrap();
    let group = format!("tessera{}thin", std::process::id());
    let restored = restore_logical_volumes(&env, std::slice::from_ref(&disk), &group, |pvs| {
        let pv = &pvs[0];
        let mut lvs = lv_section("data_tmeta", 1, false, &linear(4, pv, 1));
        lvs += &lv_section("data_tdata", 2, false, &linear(24, pv, 6));
        lvs += &lv_section(
            "data",
            3,
            true,
            "extent_count = 24\ntype = \"thin-pool\"\nmetadata = \"data_tmeta\"\n\
             pool = \"data_tdata\"\ntransaction_id = 1\nchunk_size = 128\n\
             discards = \"passdown\"\nzero_new_blocks = 1\n",
        );
        lvs + &lv_section(
            "vm-100-disk-0",
            4,
            true,
            "extent_count = 32\ntype = \"thin\"\nthin_pool = \"data\"\n\
             transaction_id = 0\ndevice_id = 1\n",
        )
    });
    if let Err(reason) = restored {
        eprintln!("skipped: making LVM disks needs loop devices ({reason})");
        return;
    }
    let ext4 = ext4_of(&env, "thin.ext4", &tree, 32);
    // The file system's non-zero 64 KiB blocks, the first last in the pool.
    let image = fs::read(&ext4).unwrap();
    let used: Vec<(usize, &[u8])> = image
        .chunks(64 << 10)
        .enumerate()
        .filter(|(_, block)| block.iter().any(|&b| b != 0))
        .collect();
    assert!(used.len() <= 384, "{} blocks", used.len());
    let mut pool = vec![0u8; 24 << 20];
    let mut xml = format!(
        "<superblock uuid=\"\" time=\"0\" transaction=\"1\" data_block_size=\"128\" \
         nr_data_blocks=\"384\">\n<device dev_id=\"1\" mapped_blocks=\"{}\" \
         transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n",
        used.len()
    );
    for (k, (block, bytes)) in used.iter().enumerate() {
        let data = used.len() - 1 - k;
        pool[data << 16..][..1 << 16].copy_from_slice(bytes);
        xml += &format!(
            "<single_mapping origin_block=\"{block}\" data_block=\"{data}\" time=\"0\"/>\n"
        );
    }
    xml += "</device>\n</superblock>\n";
    let (xml_path, meta) = (env.path("thin.xml"), env.path("tmeta.bin"));
    fs::write(&xml_path, xml).unwrap();
    fs::File::create(&meta).unwrap().set_len(4 << 20).unwrap();
    tool("thin_restore", &["-i", p(&xml_path), "-o", p(&meta)]);
    let pool_path = env.path("tdata.bin");
    fs::write(&pool_path, &pool).unwrap();
    // Physical extent N starts at MiB 1 + N.
    write_partitions(&disk, &[(&meta, 2 << 20), (&pool_path, 7 << 20)]);

    let point = point_of(&env.backup(&[p(&disk)]));
    assert_eq!(env.ls(&point, "disk0/fs"), ["disk0/fs/vm-100-disk-0"]);
    let target = env.path("restored");
    let dir = "disk0/fs/vm-100-disk-0";
    env.restore(&point, &["--path", dir, "--target", p(&target)]);
    assert_eq!(
        fs::read(target.join(dir).join("etc/hostname")).unwrap(),
        b"thin\n"
    );
    assert!(fs::read(target.join(dir).join("blob.bin")).unwrap() == blob);
}

/// A disk whose logical volume `data` has an old-style snapshot `snap` (`lvcreate -s`,
/// as a backup script takes one; written into metadata that `vgcfgrestore` checks, as
/// LVM makes snapshots only through device-mapper), a file changed in `data` since: both
/// list, and the file restores from each as it is there, from the snapshot as it was.
#[test]
fn files_restore_from_an_lvm_snapshot_as_they_were() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/motd"), b"before ".repeat(1200)).unwrap();
    let disk = env.path("disk0.raw");
    fs::File::create(&disk).unwrap().set_len(40 << 20).unwrap();
    let group = format!("tessera{}snap", std::process::id());
    let restored = restore_logical_volumes(&env, std::slice::from_ref(&disk), &group, |pvs| {
        let pv = &pvs[0];
        let mut lvs = lv_section("data", 1, true, &linear(16, pv, 1));
        lvs += &lv_section("snap", 2, false, &linear(4, pv, 20));
        lvs + &lv_section(
            "snapshot0",
            3,
            false,
            "extent_count = 16\ntype = \"snapshot\"\nchunk_size = 8\norigin = \"data\"\n\
             cow_store = \"snap\"\n",
        )
    });
    if let Err(reason) = restored {
        eprintln!("skipped: making LVM disks needs loop devices ({reason})");
        return;
    }
    let ext4 = ext4_of(&env, "data.ext4", &tree, 16);
    // The origin since: `motd` changed in place. The snapshot's exception store (4 KiB
    // chunks) holds the old copy of each chunk that changed, in its first area.
    let before = fs::read(&ext4).unwrap();
    let from = b"before ".repeat(1200);
    let at = before.windows(from.len()).position(|w| w == from).unwrap();
    let mut after = before.clone();
    after[at..at + from.len()].copy_from_slice(&b"after! ".repeat(1200));
    let mut store = vec![0u8; 4 << 20];
    store[..16].copy_from_slice(&[0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0]);
    let changed = (0..before.len() / 4096)
        .filter(|&c| before[c * 4096..][..4096] != after[c * 4096..][..4096]);
    for (slot, chunk) in changed.enumerate() {
        let new = 2 + slot;
        let entry = 4096 + 16 * slot;
        store[entry..entry + 8].copy_from_slice(&(chunk as u64).to_le_bytes());
        store[entry + 8..entry + 16].copy_from_slice(&(new as u64).to_le_bytes());
        store[new * 4096..][..4096].copy_from_slice(&before[chunk * 4096..][..4096]);
    }
    let (origin, cow) = (env.path("after.ext4"), env.path("cow.bin"));
    fs::write(&origin, &after).unwrap();
    fs::write(&cow, &store).unwrap();
    // Physical extent N starts at MiB 1 + N.
    write_partitions(&disk, &[(&origin, 2 << 20), (&cow, 21 << 20)]);

    let point = point_of(&env.backup(&[p(&disk)]));
    assert_eq!(
        env.ls(&point, "disk0/fs"),
        ["disk0/fs/data", "disk0/fs/snap"]
    );
    let target = env.path("restored");
    for (volume, motd) in [("data", "after! "), ("snap", "before ")] {
        let file = format!("disk0/fs/{volume}/etc/motd");
        env.restore(&point, &["--path", &file, "--target", p(&target)]);
        assert_eq!(
            fs::read(target.join(&file)).unwrap(),
            motd.repeat(1200).as_bytes()
        );
    }
}

/// A UFS2 image of `mib` MiB named `name` in the test's directory, holding `tree`
/// (`makefs`, FreeBSD's image builder).
fn ufs2_of(env: &Env, name: &str, tree: &Path, mib: u64) -> PathBuf {
    let image = env.path(name);
    let size = format!("{mib}m");
    let args = [
        "-t",
        "ffs",
        "-o",
        "version=2",
        "-s",
        &size,
        p(&image),
        p(tree),
    ];
    tool("makefs", &args);
    image
}

/// A FreeBSD VM's disk (a firewall appliance's, say): GPT with a `freebsd-boot` partition
/// and a `freebsd-ufs` one holding a UFS2 file system (made by `makefs`). Its files list
/// and restore with their contents and modes.
#[test]
fn files_restore_from_a_freebsd_disk() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::create_dir_all(tree.join("usr/local/etc")).unwrap();
    fs::write(
        tree.join("etc/rc.conf"),
        b"hostname=\"fw01\"\nsshd_enable=\"YES\"\n",
    )
    .unwrap();
    fs::set_permissions(tree.join("etc/rc.conf"), fs::Permissions::from_mode(0o640)).unwrap();
    let blob = random_bytes(43, (2 << 20) + 5);
    fs::write(tree.join("usr/local/etc/blob.bin"), &blob).unwrap();
    let ufs = ufs2_of(&env, "root.ufs", &tree, 32);
    let disk = env.path("freebsd.raw");
    fs::File::create(&disk).unwrap().set_len(40 << 20).unwrap();
    tool(
        "sgdisk",
        &[
            "-n",
            "1:2048:+512K",
            "-t",
            "1:a501",
            "-n",
            "2:4096:0",
            "-t",
            "2:a503",
            p(&disk),
        ],
    );
    write_partitions(&disk, &[(&ufs, 2 << 20)]);

    let point = point_of(&env.backup(&[p(&disk)]));
    assert_eq!(
        env.ls(&point, "disk0/part2/etc"),
        ["disk0/part2/etc/rc.conf"]
    );
    let target = env.path("restored");
    env.restore(&point, &["--path", "disk0/part2", "--target", p(&target)]);
    let rc = target.join("disk0/part2/etc/rc.conf");
    assert_eq!(
        fs::read(&rc).unwrap(),
        b"hostname=\"fw01\"\nsshd_enable=\"YES\"\n"
    );
    assert_eq!(
        fs::metadata(&rc).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert!(fs::read(target.join("disk0/part2/usr/local/etc/blob.bin")).unwrap() == blob);
}

/// A FreeBSD install on an MBR disk: a FreeBSD slice (type 0xA5) whose BSD disklabel,
/// written by util-linux's `fdisk`, holds `a` (UFS2, made by `makefs` and written past the
/// label) and `b` (swap). `a` is `part5`, as Linux numbers it; its files restore.
#[test]
fn files_restore_from_a_freebsd_slice_of_an_mbr_disk() {
    use std::io::Write;
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/rc.conf"), b"hostname=\"old-fw\"\n").unwrap();
    let ufs = ufs2_of(&env, "a.ufs", &tree, 24);
    let disk = env.path("freebsd-mbr.raw");
    fs::File::create(&disk).unwrap().set_len(40 << 20).unwrap();
    for script in [
        "o\nn\np\n1\n2048\n\nt\na5\nw\n",
        "b\ny\nn\na\n2048\n+24M\nt\na\n7\nn\nb\n53248\n\nt\nb\n1\nw\nq\n",
    ] {
        let mut fdisk = Command::new("fdisk")
            .arg(&disk)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("fdisk (util-linux)");
        fdisk
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(fdisk.wait().unwrap().success());
    }
    // The UFS2 volume's first 8 KiB are boot blocks, where the label lies.
    let image = fs::read(&ufs).unwrap();
    let rest = env.path("a-past-label.ufs");
    fs::write(&rest, &image[8192..]).unwrap();
    write_partitions(&disk, &[(&rest, (2048 << 9) + 8192)]);

    let point = point_of(&env.backup(&[p(&disk)]));
    assert_eq!(
        env.ls(&point, "disk0/part5/etc"),
        ["disk0/part5/etc/rc.conf"]
    );
    let target = env.path("restored");
    let file = "disk0/part5/etc/rc.conf";
    env.restore(&point, &["--path", file, "--target", p(&target)]);
    assert_eq!(
        fs::read(target.join(file)).unwrap(),
        b"hostname=\"old-fw\"\n"
    );
}

/// An XFS image of `mib` MiB at `image` (`mkfs.xfs` with its defaults, version 5, and
/// `extra` options), filled from `proto`, a `mkfs.xfs` prototype (no mount, so no root
/// needed).
fn mkfs_xfs(image: &Path, mib: u64, extra: &[&str], proto: &str) {
    fs::File::create(image).unwrap().set_len(mib << 20).unwrap();
    let proto_path = image.with_extension("proto");
    fs::write(&proto_path, proto).unwrap();
    // These let mkfs.xfs make volumes below its 300 MiB minimum, as for its own tests.
    let out = Command::new("mkfs.xfs")
        .args(["-q", "-f", "-p", p(&proto_path)])
        .args(extra)
        .arg(image)
        .envs([("TEST_DIR", "1"), ("TEST_DEV", "1"), ("QA_CHECK_FS", "1")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run mkfs.xfs ({e}); install xfsprogs"));
    assert!(
        out.status.success(),
        "mkfs.xfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 64 MiB GPT disk as RHEL lays one out, without LVM: partition 1 an XFS `/boot`,
/// partition 2 an XFS root with `/etc/hostname`, `/etc/blob.bin` (from `blob`) and
/// `/var/log/messages`, owned by uid 1000 where the prototype says so.
fn rhel_disk(env: &Env, blob: &Path) -> PathBuf {
    let disk = env.path("rhel.raw");
    fs::File::create(&disk).unwrap().set_len(64 << 20).unwrap();
    tool(
        "sgdisk",
        &[
            "-n",
            "1:2048:+16M",
            "-t",
            "1:8300",
            "-n",
            "2:0:0",
            "-t",
            "2:8300",
            p(&disk),
        ],
    );
    fs::write(env.path("vmlinuz"), b"not really a kernel\n").unwrap();
    fs::write(env.path("hostname"), b"rhel-09\n").unwrap();
    fs::write(
        env.path("messages"),
        b"Dec  6 10:00:00 rhel-09 systemd[1]: Started.\n",
    )
    .unwrap();
    let boot = env.path("boot.xfs");
    mkfs_xfs(
        &boot,
        16,
        &[],
        &format!(
            "/dev/null\n0 0\nd--555 0 0\n vmlinuz ---644 0 0 {}\n$\n",
            p(&env.path("vmlinuz"))
        ),
    );
    let root = env.path("root.xfs");
    let root_size: u64 = (64 << 20) - 2048 * 512 - (16 << 20) - 34 * 512;
    let proto = format!(
        "/dev/null\n0 0\nd--555 0 0\n\
         etc d--755 0 0\n  hostname ---644 0 0 {}\n  blob.bin ---600 1000 1000 {}\n  \
         localtime l--777 0 0 ../usr/share/zoneinfo/UTC\n $\n\
         var d--755 0 0\n  log d--755 0 0\n   messages ---600 0 0 {}\n  $\n $\n$\n",
        p(&env.path("hostname")),
        p(blob),
        p(&env.path("messages")),
    );
    mkfs_xfs(&root, root_size >> 20, &[], &proto);
    let start2 = 2048 * 512 + (16 << 20);
    write_partitions(&disk, &[(&boot, 2048 * 512), (&root, start2)]);
    disk
}

/// Restores `disk0/part2/etc` and `other` of `point` into a new directory, and checks
/// what a Linux root's `etc` holds here: `hostname`, `blob.bin` and the `localtime` link.
/// Returns the directory.
fn restore_etc(env: &Env, point: &str, other: &str, hostname: &[u8], blob: &[u8]) -> PathBuf {
    let target = env.path("files");
    env.restore(
        point,
        &[
            "--path",
            "disk0/part2/etc",
            "--path",
            other,
            "--target",
            p(&target),
        ],
    );
    let etc = target.join("disk0/part2/etc");
    assert_eq!(fs::read(etc.join("hostname")).unwrap(), hostname);
    assert!(
        fs::read(etc.join("blob.bin")).unwrap() == blob,
        "blob.bin differs"
    );
    assert_eq!(
        fs::read_link(etc.join("localtime")).unwrap(),
        Path::new("../usr/share/zoneinfo/UTC")
    );
    target
}

#[test]
fn files_restore_from_the_xfs_partitions_of_a_rhel_disk() {
    let env = env();
    let blob = env.path("blob.bin");
    let data = random_bytes(51, 3 << 20);
    fs::write(&blob, &data).unwrap();
    let raw = rhel_disk(&env, &blob);
    let disk = env.path("rhel.qcow2");
    tool("qemu-img", &["convert", "-O", "qcow2", p(&raw), p(&disk)]);

    let point = point_of(&env.backup(&[p(&disk)]));
    assert_eq!(env.ls(&point, "disk0"), ["disk0/part1", "disk0/part2"]);
    assert_eq!(env.ls(&point, "disk0/part1"), ["disk0/part1/vmlinuz"]);
    assert_eq!(
        env.ls(&point, "disk0/part2/etc"),
        [
            "disk0/part2/etc/hostname",
            "disk0/part2/etc/blob.bin",
            "disk0/part2/etc/localtime"
        ]
    );
    let target = restore_etc(
        &env,
        &point,
        "disk0/part2/var/log/messages",
        b"rhel-09\n",
        &data,
    );
    let meta = fs::metadata(target.join("disk0/part2/etc/blob.bin")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    if rustix::process::geteuid().is_root() {
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    }
    assert_eq!(
        fs::read(target.join("disk0/part2/var/log/messages")).unwrap(),
        b"Dec  6 10:00:00 rhel-09 systemd[1]: Started.\n"
    );
}

/// A 160 MiB GPT disk as Fedora lays one out: partition 1 an EFI system partition (FAT32),
/// partition 2 btrfs made by `mkfs.btrfs --rootdir` from `tree` (no root needed).
fn fedora_disk(env: &Env, tree: &Path) -> PathBuf {
    let disk = env.path("fedora.raw");
    fs::File::create(&disk).unwrap().set_len(160 << 20).unwrap();
    tool(
        "sgdisk",
        &[
            "-n",
            "1:2048:+16M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:0",
            "-t",
            "2:8300",
            p(&disk),
        ],
    );
    let (esp, btrfs) = (env.path("esp.fat"), env.path("root.btrfs"));
    fs::File::create(&esp).unwrap().set_len(16 << 20).unwrap();
    tool("mkfs.fat", &["-F", "32", p(&esp)]);
    let size: u64 = (160 << 20) - 2048 * 512 - (16 << 20) - 34 * 512;
    fs::File::create(&btrfs)
        .unwrap()
        .set_len(size / 4096 * 4096)
        .unwrap();
    tool(
        "mkfs.btrfs",
        &["-q", "-f", "-L", "fedora", "--rootdir", p(tree), p(&btrfs)],
    );
    let start2 = 2048 * 512 + (16 << 20);
    write_partitions(&disk, &[(&esp, 2048 * 512), (&btrfs, start2)]);
    disk
}

#[test]
fn files_restore_from_the_btrfs_partition_of_a_fedora_disk() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"fedora-41\n").unwrap();
    let blob = random_bytes(61, 3 << 20);
    fs::write(tree.join("etc/blob.bin"), &blob).unwrap();
    std::os::unix::fs::symlink("../usr/share/zoneinfo/UTC", tree.join("etc/localtime")).unwrap();
    fs::create_dir_all(tree.join("home/alice")).unwrap();
    fs::write(tree.join("home/alice/notes.txt"), b"on btrfs\n").unwrap();
    let raw = fedora_disk(&env, &tree);
    let disk = env.path("fedora.qcow2");
    tool("qemu-img", &["convert", "-O", "qcow2", p(&raw), p(&disk)]);

    let point = point_of(&env.backup(&[p(&disk)]));
    assert_eq!(env.ls(&point, "disk0"), ["disk0/part1", "disk0/part2"]);
    let mut top = env.ls(&point, "disk0/part2");
    top.sort();
    assert_eq!(top, ["disk0/part2/etc", "disk0/part2/home"]);
    let target = restore_etc(
        &env,
        &point,
        "disk0/part2/home/alice/notes.txt",
        b"fedora-41\n",
        &blob,
    );
    assert_eq!(
        fs::read(target.join("disk0/part2/home/alice/notes.txt")).unwrap(),
        b"on btrfs\n"
    );
}

/// A VM's three disks, each a device of one btrfs volume with RAID5 data and metadata
/// (made by `mkfs.btrfs` and filled through a mount of the kernel's btrfs): a file
/// restores from a point of the three, read across all of them, and from a point of two,
/// its stripes on the third rebuilt from parity.
#[test]
fn files_restore_from_btrfs_raid5_over_three_disks() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"raid5\n").unwrap();
    let blob = random_bytes(41, 3 << 20);
    fs::write(tree.join("etc/blob.bin"), &blob).unwrap();
    let disks: Vec<PathBuf> = (0..3).map(|i| env.path(&format!("disk{i}.raw"))).collect();
    for disk in &disks {
        fs::File::create(disk).unwrap().set_len(160 << 20).unwrap();
    }
    {
        let mut loops = Vec::new();
        for disk in &disks {
            match LoopDevice::attach(disk) {
                Ok(dev) => loops.push(dev),
                Err(reason) => {
                    eprintln!("skipped: a btrfs over three disks needs loop devices ({reason})");
                    return;
                }
            }
        }
        let devices: Vec<&str> = loops.iter().map(|l| p(&l.path)).collect();
        tool(
            "mkfs.btrfs",
            &[&["-q", "-f", "-d", "raid5", "-m", "raid5"][..], &devices].concat(),
        );
        let mnt = env.path("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "btrfs", devices[0], p(&mnt)])
            .status();
        if !mounted.is_ok_and(|s| s.success()) {
            eprintln!("skipped: this kernel does not mount btrfs");
            return;
        }
        let copied = Command::new("cp")
            .arg("-a")
            .arg(tree.join("etc"))
            .arg(&mnt)
            .status();
        let unmounted = Command::new("umount").arg(&mnt).status();
        assert!(copied.is_ok_and(|s| s.success()), "cp into btrfs failed");
        assert!(unmounted.is_ok_and(|s| s.success()), "umount failed");
    }
    let all: Vec<&str> = disks.iter().map(|d| p(d)).collect();
    let point = point_of(&env.backup(&all));
    for disk in ["disk0", "disk1", "disk2"] {
        assert_eq!(env.ls(&point, disk), [format!("{disk}/fs")]);
        assert_eq!(
            env.ls(&point, &format!("{disk}/fs")),
            [format!("{disk}/fs/etc")]
        );
    }
    let file = "disk1/fs/etc/blob.bin";
    let target = env.path("all");
    env.restore(&point, &["--path", file, "--target", p(&target)]);
    assert!(fs::read(target.join(file)).unwrap() == blob);

    // Without the third disk: its stripes are rebuilt from the others and the parity.
    let two = point_of(&env.backup(&[all[0], all[1], "--item", "two"]));
    assert_eq!(env.ls(&two, "disk1"), ["disk1/fs"]);
    let target = env.path("two");
    env.restore(&two, &["--path", "disk0/fs/etc", "--target", p(&target)]);
    assert!(fs::read(target.join("disk0/fs/etc/blob.bin")).unwrap() == blob);
    assert_eq!(
        fs::read(target.join("disk0/fs/etc/hostname")).unwrap(),
        b"raid5\n"
    );
}

/// A 48 MiB GPT disk as Windows lays one out: partition 1 an EFI system partition
/// (FAT32 made by `mkfs.fat`), partition 2 NTFS (`mkntfs`) holding `tree`, copied in
/// through an `ntfs-3g` mount. The reason when this machine cannot mount it.
fn windows_disk(env: &Env, tree: &Path) -> Result<PathBuf, String> {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        return Err("ntfs-3g needs root and /dev/fuse".into());
    }
    let disk = env.path("windows.raw");
    fs::File::create(&disk).unwrap().set_len(48 << 20).unwrap();
    tool(
        "sgdisk",
        &[
            "-n",
            "1:2048:+8M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:0",
            "-t",
            "2:0700",
            p(&disk),
        ],
    );
    let (esp, ntfs) = (env.path("esp.fat"), env.path("c.ntfs"));
    fs::File::create(&esp).unwrap().set_len(8 << 20).unwrap();
    tool("mkfs.fat", &["-F", "32", p(&esp)]);
    let ntfs_size: u64 = (48 << 20) - 2048 * 512 - (8 << 20) - 34 * 512;
    fs::File::create(&ntfs)
        .unwrap()
        .set_len(ntfs_size / 512 * 512)
        .unwrap();
    tool("mkntfs", &["-q", "-F", "-f", "-L", "Windows", p(&ntfs)]);
    let mnt = env.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    tool("ntfs-3g", &[p(&ntfs), p(&mnt)]);
    let copied = Command::new("cp")
        .args(["-r", "--preserve=timestamps"])
        .arg(tree.join("."))
        .arg(&mnt)
        .status();
    let unmounted = Command::new("umount").arg(&mnt).status();
    assert!(
        copied.is_ok_and(|s| s.success()),
        "cp into the NTFS mount failed"
    );
    assert!(
        unmounted.is_ok_and(|s| s.success()),
        "umount {} failed",
        p(&mnt)
    );
    let start2 = 2048 * 512 + (8 << 20);
    write_partitions(&disk, &[(&esp, 2048 * 512), (&ntfs, start2)]);
    Ok(disk)
}

#[test]
fn files_restore_from_the_ntfs_partition_of_a_windows_disk() {
    let env = env();
    let tree = env.path("tree");
    let config = tree.join("Windows/System32/drivers/etc");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join("hosts"), b"127.0.0.1 localhost\r\n").unwrap();
    let report = random_bytes(41, 3 << 20);
    fs::create_dir_all(tree.join("Users/alice/Documents")).unwrap();
    fs::write(tree.join("Users/alice/Documents/report.docx"), &report).unwrap();
    let raw = match windows_disk(&env, &tree) {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let disk = env.path("windows.qcow2");
    tool("qemu-img", &["convert", "-O", "qcow2", p(&raw), p(&disk)]);

    let point = point_of(&env.backup(&[p(&disk)]));
    assert_eq!(env.ls(&point, "disk0"), ["disk0/part1", "disk0/part2"]);
    // The NTFS metafiles ($MFT, ...) are not shown.
    assert_eq!(
        env.ls(&point, "disk0/part2"),
        ["disk0/part2/Users", "disk0/part2/Windows"]
    );
    let target = env.path("files");
    env.restore(
        &point,
        &[
            "--path",
            "disk0/part2/Users/alice",
            "--path",
            "disk0/part2/Windows/System32/drivers/etc/hosts",
            "--target",
            p(&target),
        ],
    );
    assert_eq!(
        fs::read(target.join("disk0/part2/Users/alice/Documents/report.docx")).unwrap(),
        report
    );
    assert_eq!(
        fs::read(target.join("disk0/part2/Windows/System32/drivers/etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\r\n"
    );
}

/// A 40 MiB MBR data disk with one exFAT partition (type 7, as Windows and cameras make
/// them) holding `tree`, copied in through a `mount.exfat-fuse` mount of a loop device.
/// The reason when this machine cannot mount it.
fn exfat_disk(env: &Env, tree: &Path) -> Result<PathBuf, String> {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        return Err("mount.exfat-fuse needs root and /dev/fuse".into());
    }
    let disk = env.path("data.raw");
    fs::File::create(&disk).unwrap().set_len(40 << 20).unwrap();
    let table = "label: dos\nstart=2048, type=7\n";
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", p(&disk)])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");
    let part = env.path("part1.exfat");
    fs::File::create(&part)
        .unwrap()
        .set_len((40 << 20) - 2048 * 512)
        .unwrap();
    tool("mkfs.exfat", &["-L", "DATA", p(&part)]);
    let device = tool("losetup", &["--find", "--show", p(&part)]);
    let device = device.trim();
    let mnt = env.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount.exfat-fuse")
        .arg(device)
        .arg(&mnt)
        .status();
    let copied = mounted.as_ref().is_ok_and(|s| s.success())
        && Command::new("cp")
            .args(["-r", "--preserve=timestamps"])
            .arg(tree.join("."))
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
    let unmounted = Command::new("umount").arg(&mnt).status();
    let _ = Command::new("losetup").args(["-d", device]).status();
    assert!(copied, "copying into the exFAT mount failed");
    assert!(
        unmounted.is_ok_and(|s| s.success()),
        "umount {} failed",
        p(&mnt)
    );
    write_partitions(&disk, &[(&part, 2048 * 512)]);
    Ok(disk)
}

#[test]
fn files_restore_from_the_exfat_partition_of_a_data_disk() {
    let env = env();
    let tree = env.path("tree");
    let footage = random_bytes(43, (5 << 20) + 77);
    fs::create_dir_all(tree.join("DCIM/100CAMERA")).unwrap();
    fs::write(tree.join("DCIM/100CAMERA/Clip 0001 (final).mp4"), &footage).unwrap();
    let clip = fs::File::options()
        .write(true)
        .open(tree.join("DCIM/100CAMERA/Clip 0001 (final).mp4"))
        .unwrap();
    // An even number of seconds: exFAT keeps times in 2-second steps.
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    clip.set_modified(mtime).unwrap();
    drop(clip);
    fs::write(tree.join("notes.txt"), b"on exFAT\n").unwrap();
    let raw = match exfat_disk(&env, &tree) {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };

    let point = point_of(&env.backup(&[p(&raw)]));
    assert_eq!(env.ls(&point, "disk0"), ["disk0/part1"]);
    // In directory order, which is the order `cp` wrote them in.
    let mut listed = env.ls(&point, "disk0/part1");
    listed.sort();
    assert_eq!(listed, ["disk0/part1/DCIM", "disk0/part1/notes.txt"]);
    let target = env.path("files");
    env.restore(
        &point,
        &[
            "--path",
            "disk0/part1/DCIM",
            "--path",
            "disk0/part1/notes.txt",
            "--target",
            p(&target),
        ],
    );
    let restored = target.join("disk0/part1/DCIM/100CAMERA/Clip 0001 (final).mp4");
    assert!(fs::read(&restored).unwrap() == footage);
    assert_eq!(fs::metadata(&restored).unwrap().modified().unwrap(), mtime);
    assert_eq!(
        fs::read(target.join("disk0/part1/notes.txt")).unwrap(),
        b"on exFAT\n"
    );
}

#[test]
fn a_host_block_device_is_read_whole_on_every_backup_and_restores() {
    let env = env();
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"db-01\n").unwrap();
    fs::write(tree.join("etc/blob.bin"), random_bytes(21, 1 << 20)).unwrap();
    let image = gpt_disk(&env, &tree);
    let device = match LoopDevice::attach(&image) {
        Ok(device) => device,
        Err(reason) => {
            eprintln!("skipped: a loop device is needed ({reason})");
            return;
        }
    };
    let size: u64 = 64 << 20;
    // An operator's stable link to the device, as /dev/disk/by-id or /dev/vg0/lv0 are.
    let link = env.path("by-id-disk");
    std::os::unix::fs::symlink(&device.path, &link).unwrap();

    let direct = env.backup(&[p(&device.path), "--item", "direct"]);
    assert_eq!(direct["bytes_read"].as_u64(), Some(size), "{direct}");
    let first = env.backup(&[p(&link)]);
    assert_eq!(first["item"].as_str(), Some(p(&link)), "named by the link");
    assert_eq!(first["bytes_read"].as_u64(), Some(size), "{first}");
    let first_point = point_of(&first);
    let before = fs::read(&device.path).unwrap();
    for point in [point_of(&direct), first_point.clone()] {
        let target = env.path(&format!("restored-{point}"));
        env.restore(&point, &["--target", p(&target)]);
        assert!(fs::read(target.join("disk0.raw")).unwrap() == before);
    }

    // Files come out of the device's partitions like out of an image's.
    assert_eq!(
        env.ls(&first_point, "disk0"),
        ["disk0/part1", "disk0/part2"]
    );
    let files = env.path("files");
    env.restore(
        &first_point,
        &["--path", "disk0/part1/etc/hostname", "--target", p(&files)],
    );
    assert_eq!(
        fs::read(files.join("disk0/part1/etc/hostname")).unwrap(),
        b"db-01\n"
    );

    // New data (outside the partitions' file systems) written into the image behind the
    // device, as a guest writes its disk, and the device's cache dropped: the device's
    // content changes while its node's size and times stay as they were.
    let node_before = fs::metadata(&device.path).unwrap();
    let written = random_bytes(22, 256 << 10);
    {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(&image).unwrap();
        file.write_all_at(&written[..64 << 10], 512 << 10).unwrap();
        file.write_all_at(&written[64 << 10..], size - (1 << 20))
            .unwrap();
        file.sync_all().unwrap();
    }
    tool("blockdev", &["--flushbufs", p(&device.path)]);
    let after = fs::read(&device.path).unwrap();
    assert!(after != before, "the device did not change");
    assert!(after == fs::read(&image).unwrap());
    let node_after = fs::metadata(&device.path).unwrap();
    let node = |m: &fs::Metadata| {
        (
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
        )
    };
    assert_eq!(
        node(&node_before),
        node(&node_after),
        "the device node changed"
    );

    let second = env.backup(&[p(&link)]);
    assert_eq!(second["parent"].as_str(), Some(first_point.as_str()));
    // Read whole, not carried forward; only the changed chunks are new.
    assert_eq!(second["bytes_read"].as_u64(), Some(size), "{second}");
    assert_eq!(second["bytes_carried"].as_u64(), Some(0), "{second}");
    let new = second["bytes_new"].as_u64().unwrap();
    assert!(new > 0 && new <= 512 << 10, "{second}");
    let target = env.path("restored-second");
    env.restore(&point_of(&second), &["--target", p(&target)]);
    assert!(fs::read(target.join("disk0.raw")).unwrap() == after);

    // What cannot be a disk, or cannot be read, fails clearly and commits nothing.
    let points = env.points().len();
    let err = env.backup_fails(&[p(&link), "--setting", "image-format=qcow2"]);
    assert!(
        err.contains("disk0") && err.contains("block device") && err.contains("image-format"),
        "{err}"
    );
    for char_device in ["/dev/null", "/dev/zero"] {
        let err = env.backup_fails(&[char_device]);
        assert!(
            err.contains(char_device) && err.contains("character device"),
            "{err}"
        );
    }
    assert_eq!(env.points().len(), points);
    unreadable_device_is_refused(&device.path);
}

/// A user who may not read `device` (nobody) gets an error naming it, before anything is
/// stored.
fn unreadable_device_is_refused(device: &Path) {
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped the unreadable-device case: setpriv is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(tessera_tests::tessera_binary())
            .arg("--vault")
            .arg(dir.path().join("vault"))
            .args(args)
            .env("TESSERA_PASSWORD", "nobody's password")
            .env("HOME", dir.path())
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .env_remove("TESSERA_VAULT");
        command.output().unwrap()
    };
    let init = as_nobody(&["vault", "init", "--unencrypted"]);
    assert!(init.status.success(), "{init:?}");
    let output = as_nobody(&["backup", "--plugin", "vm-disk", p(device)]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "nobody read {}", device.display());
    assert!(
        err.contains(p(device)) && err.contains("Permission denied"),
        "{err}"
    );
    let listed = as_nobody(&["points", "--json"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
}

/// A raw image behind `tests/scripts/shrinking-image.py`: a FUSE file with the bytes of
/// a source image whose reads end at a given byte, as if another program truncated the
/// image there while it was backed up. Unmounted when dropped.
struct ShrinkingImage {
    mountpoint: PathBuf,
    server: Child,
}

impl ShrinkingImage {
    /// Mounts `source` on `mountpoint`, ending at `shrink_at`; the reason when this
    /// machine cannot (not root, no FUSE), for the test to say it was skipped.
    fn mount(source: &Path, mountpoint: &Path, shrink_at: u64) -> Result<ShrinkingImage, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".into());
        }
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/shrinking-image.py");
        let mut server = Command::new("python3")
            .arg(&script)
            .arg(mountpoint)
            .arg(source)
            .arg(shrink_at.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let mut line = String::new();
        let stdout = server.stdout.take().expect("stdout is piped");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .map_err(|e| format!("cannot read from {}: {e}", script.display()))?;
        if line.trim() != "ready" {
            let output = server.wait_with_output().map_err(|e| e.to_string())?;
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(ShrinkingImage {
            mountpoint: mountpoint.to_path_buf(),
            server,
        })
    }

    fn image(&self) -> PathBuf {
        self.mountpoint.join("disk.raw")
    }
}

impl Drop for ShrinkingImage {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mountpoint)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            let _ = self.server.kill();
        }
        let _ = self.server.wait();
    }
}

#[test]
fn an_image_that_shrinks_during_the_backup_fails_clearly_and_commits_nothing() {
    let env = env();
    let source = env.path("source.raw");
    fs::write(&source, random_bytes(41, 64 << 20)).unwrap();
    let mountpoint = env.path("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let shrink_at: u64 = 40 << 20;
    let shrinking = match ShrinkingImage::mount(&source, &mountpoint, shrink_at) {
        Ok(image) => image,
        Err(reason) => {
            eprintln!("skipped: a FUSE mount is needed ({reason})");
            return;
        }
    };
    let image = shrinking.image();
    assert_eq!(fs::metadata(&image).unwrap().len(), 64 << 20);

    let err = env.backup_fails(&[p(&image), "--item", "vm"]);
    assert!(
        err.contains("disk0")
            && err.contains(&format!("disk.raw ended at byte {shrink_at}"))
            && err.contains("shrank during the backup"),
        "{err}"
    );
    assert!(env.points().is_empty(), "a point was committed");
    run_ok(tessera(&env.vault).arg("check"));

    // Whole again, the image backs up and restores: the failed backup left nothing in
    // the way.
    drop(shrinking);
    let point = point_of(&env.backup(&[p(&source), "--item", "vm"]));
    let target = env.path("restored");
    env.restore(&point, &["--target", p(&target)]);
    assert_same_disk(&source, "raw", &target.join("disk0.raw"), "raw");
}

#[test]
fn a_vault_that_cannot_take_data_fails_the_backup_once_and_clearly() {
    let env = env();
    // 64 MiB of 64 KiB chunks: both workers have many in flight when the first pack
    // cannot be written.
    let image = env.path("busy.raw");
    std::fs::write(&image, random_bytes(7, 64 << 20)).unwrap();
    // The pack directories are gone (a vault copied without its empty directories, or
    // a volume mounted wrong): no pack can be written.
    for entry in std::fs::read_dir(env.vault.join("data")).unwrap() {
        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let stderr = env.backup_fails(&[p(&image)]);
    assert!(
        stderr.contains("cannot write") && stderr.contains("No such file or directory"),
        "{stderr}"
    );
    // One report of the cause, not one more per chunk that was in flight, and the
    // cause is what the failure names.
    assert_eq!(stderr.matches("backup aborted").count(), 1, "{stderr}");
    assert!(
        !stderr.contains("backup aborted: backup aborted"),
        "{stderr}"
    );
    assert!(stderr.lines().count() <= 3, "{stderr}");
    assert!(env.points().is_empty());
}

/// ext4 with `inline_data`: small files, a long symlink and small directories kept in
/// their inodes, beside a file too big for one, restore from a partition of the disk.
#[test]
fn files_restore_from_an_ext4_partition_with_inline_data() {
    let env = env();
    let tree = env.path("tree");
    let conf = tree.join("etc/conf.d");
    fs::create_dir_all(&conf).unwrap();
    fs::write(tree.join("etc/hostname"), b"db-02\n").unwrap();
    fs::set_permissions(tree.join("etc/hostname"), fs::Permissions::from_mode(0o640)).unwrap();
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_650_000_000);
    fs::File::options()
        .write(true)
        .open(tree.join("etc/hostname"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::setxattr(tree.join("etc/hostname"), "user.role", b"db", flags).unwrap();
    // Past the inode's block field, so continued in its `system.data` attribute.
    let motd = random_bytes(50, 100);
    fs::write(conf.join("motd"), &motd).unwrap();
    let big = random_bytes(51, 300_000);
    fs::write(conf.join("big.bin"), &big).unwrap();
    // A target longer than the block field: kept inline too.
    let target_text = format!("{}motd", "./".repeat(30));
    std::os::unix::fs::symlink(&target_text, conf.join("current")).unwrap();

    let disk = env.path("inline.raw");
    fs::File::create(&disk).unwrap().set_len(40 << 20).unwrap();
    tool("sgdisk", &["-n", "1:2048:0", "-t", "1:8300", p(&disk)]);
    let ext4 = env.path("inline.ext4");
    fs::File::create(&ext4).unwrap().set_len(32 << 20).unwrap();
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-I",
            "256",
            "-O",
            "inline_data",
            "-d",
            p(&tree),
            p(&ext4),
        ],
    );
    for (path, inline) in [
        ("/etc/hostname", true),
        ("/etc/conf.d", true),
        ("/etc/conf.d/motd", true),
        ("/etc/conf.d/current", true),
        ("/etc/conf.d/big.bin", false),
    ] {
        let stat = tool("debugfs", &["-R", &format!("stat {path}"), p(&ext4)]);
        let flags = stat
            .split("Flags: 0x")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("no flags in: {stat}"));
        assert_eq!(flags & 0x1000_0000 != 0, inline, "{path}: {stat}");
    }
    write_partitions(&disk, &[(&ext4, 2048 * 512)]);

    let point = point_of(&env.backup(&[p(&disk)]));
    let mut listed = env.ls(&point, "disk0/part1/etc/conf.d");
    listed.sort();
    assert_eq!(
        listed,
        ["big.bin", "current", "motd"].map(|name| format!("disk0/part1/etc/conf.d/{name}"))
    );

    let target = env.path("files");
    env.restore(
        &point,
        &[
            "--path",
            "disk0/part1/etc/hostname",
            "--path",
            "disk0/part1/etc/conf.d",
            "--target",
            p(&target),
        ],
    );
    let hostname = target.join("disk0/part1/etc/hostname");
    assert_eq!(fs::read(&hostname).unwrap(), b"db-02\n");
    assert_eq!(xattr(&hostname, "user.role"), b"db");
    let meta = fs::metadata(&hostname).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.modified().unwrap(), mtime);
    let restored = target.join("disk0/part1/etc/conf.d");
    assert_eq!(fs::read(restored.join("motd")).unwrap(), motd);
    assert!(fs::read(restored.join("big.bin")).unwrap() == big);
    assert_eq!(
        fs::read_link(restored.join("current")).unwrap(),
        Path::new(&target_text)
    );
    assert_eq!(fs::read(restored.join("current")).unwrap(), motd);
}
