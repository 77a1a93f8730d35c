//! Helpers: running QEMU's tools, making test content, opening image files with a backing
//! opener that resolves names like QEMU does, and comparing our view with QEMU's.

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_disk_image::{
    BackingRef, BackingRole, DiskImage, ExtentKind, FileReader, Format, ImageError, ImageFile,
    Stored, open,
};

/// Runs a QEMU tool and returns its standard output; fails the test if the tool is missing
/// or fails.
pub fn qemu(tool: &str, args: &[&str]) -> String {
    let out = run(tool, args);
    assert!(
        out.status.success(),
        "{tool} {} failed: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a QEMU tool, returning its output whatever its exit status.
pub fn run(tool: &str, args: &[&str]) -> std::process::Output {
    match Command::new(tool).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{tool} is not installed: these tests check the readers and the writer against \
             QEMU's own tools; install qemu-utils (Debian: apt-get install qemu-utils)"
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

/// `qemu-img` with arguments.
pub fn qemu_img(args: &[&str]) -> String {
    qemu("qemu-img", args)
}

/// `qemu-io` running each command on `image` (opened as `format`).
pub fn qemu_io(image: &Path, format: &str, commands: &[&str]) {
    let mut args = vec!["-f", format];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    let path = image.to_str().unwrap();
    args.push(path);
    let out = qemu("qemu-io", &args);
    assert!(
        !out.contains("error") && !out.contains("failed"),
        "qemu-io: {out}"
    );
}

/// A small deterministic generator (SplitMix64), so failures reproduce.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Disk content of `size` bytes in segments of random, compressible and zero bytes, with
/// segment boundaries that fall anywhere (not only on cluster boundaries).
pub fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix::new(seed);
    let mut data = vec![0u8; size];
    let mut pos = 0;
    while pos < size {
        let len = (1 + rng.below(300_000) as usize).min(size - pos);
        let segment = &mut data[pos..pos + len];
        match rng.below(4) {
            0 => rng.fill(segment),
            1 => {
                let line = format!("tessera block {pos} of a test disk\n");
                for (i, b) in segment.iter_mut().enumerate() {
                    *b = line.as_bytes()[i % line.len()];
                }
            }
            _ => {}
        }
        pos += len;
    }
    data
}

/// Opens an image file, resolving backing names relative to the directory of the image that
/// refers to them (as QEMU does), under canonical paths as unique names. Raw backing files
/// get their data ranges from `qemu-img map`, as the host would from `SEEK_DATA`.
pub fn open_file(path: &Path, format: Option<Format>) -> Result<Box<dyn DiskImage>, ImageError> {
    let file = image_file(&path.canonicalize().unwrap(), format);
    open(file, format, &mut opener)
}

/// The opener used by [`open_file`]. A parent known only by identity is looked for as
/// the host does: among the files with its extension beside the image and in the
/// directory above, in name order.
pub fn opener(backing: &BackingRef) -> Result<ImageFile, ImageError> {
    let referrer = Path::new(&backing.referenced_by);
    if let BackingRole::Search(identity) = backing.role {
        let here = referrer.parent().unwrap();
        for dir in [here, here.parent().unwrap()] {
            let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == identity.extension()))
                .filter(|p| p != referrer)
                .collect();
            names.sort();
            for path in names {
                let mut file = image_file(&path, backing.format);
                if identity.matches(&mut *file.reader) {
                    return Ok(file);
                }
            }
        }
        return Err(backing.unavailable("no file beside it or above it is it"));
    }
    let path = referrer.parent().unwrap().join(&backing.name);
    let path = path
        .canonicalize()
        .map_err(|e| backing.unavailable(e.to_string()))?;
    Ok(image_file(&path, backing.format))
}

fn image_file(path: &Path, format: Option<Format>) -> ImageFile {
    let reader = FileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let file = ImageFile::new(path.to_str().unwrap(), Box::new(reader));
    let is_raw = format == Some(Format::Raw)
        || (format.is_none() && std::fs::read(path).unwrap().get(..4) != Some(b"QFI\xfb"));
    if is_raw {
        file.with_data_ranges(raw_data_ranges(path))
    } else {
        file
    }
}

/// The data ranges of a raw file as QEMU sees them.
pub fn raw_data_ranges(path: &Path) -> Vec<(u64, u64)> {
    qemu_map(path, "raw")
        .into_iter()
        .filter(|&(_, _, data)| data)
        .map(|(start, end, _)| (start, end - start))
        .collect()
}

/// `qemu-img map` of an image: merged `(start, end, data)` ranges.
pub fn qemu_map(path: &Path, format: &str) -> Vec<(u64, u64, bool)> {
    qemu_map_as(path, format, MapView::Data)
}

/// Which ranges of `qemu-img map` count as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapView {
    /// Those QEMU says are data.
    Data,
    /// Those QEMU says are data and not known zeros: the holes of a flat VMDK extent are
    /// data to QEMU, and zeros to a reader told the file's holes.
    NonZeroData,
}

/// `qemu-img map` of an image: merged `(start, end, data)` ranges, data as `view` says.
pub fn qemu_map_as(path: &Path, format: &str, view: MapView) -> Vec<(u64, u64, bool)> {
    let json = qemu_img(&["map", "--output=json", "-f", format, path.to_str().unwrap()]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    merge(entries.iter().map(|e| {
        let start = e["start"].as_u64().unwrap();
        let length = e["length"].as_u64().unwrap();
        let data = e["data"].as_bool().unwrap();
        let zero = e["zero"].as_bool().unwrap();
        let data = match view {
            MapView::Data => data,
            MapView::NonZeroData => data && !zero,
        };
        (start, start + length, data)
    }))
}

/// Our map of the whole disk as merged `(start, end, data)` ranges.
pub fn our_map(image: &mut dyn DiskImage) -> Vec<(u64, u64, bool)> {
    let size = image.virtual_size();
    let extents = image.map(0, size).unwrap();
    let mut pos = 0;
    for e in &extents {
        assert_eq!(e.offset, pos, "extents must be contiguous: {extents:?}");
        assert!(e.length > 0);
        pos = e.end();
    }
    assert_eq!(pos, size, "extents must cover the disk");
    for pair in extents.windows(2) {
        assert_ne!(
            pair[0].kind, pair[1].kind,
            "neighbours must be merged: {pair:?}"
        );
    }
    merge(
        extents
            .iter()
            .map(|e| (e.offset, e.end(), e.kind == ExtentKind::Data)),
    )
}

fn merge(ranges: impl Iterator<Item = (u64, u64, bool)>) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for (start, end, data) in ranges {
        match out.last_mut() {
            Some(last) if last.1 == start && last.2 == data => last.1 = end,
            _ => out.push((start, end, data)),
        }
    }
    out
}

/// A new, empty disk `dir/name` in `format` with `options` of `size` (as `qemu-img` takes
/// it), written with the `qemu-io` commands `io`: a snapshot's writes, before a fixture
/// script makes them a differencing disk.
pub fn written_disk(
    dir: &Path,
    name: &str,
    format: &str,
    options: &str,
    size: &str,
    io: &[&str],
) -> PathBuf {
    let disk = path(dir, name);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        format,
        "-o",
        options,
        disk.to_str().unwrap(),
        size,
    ]);
    qemu_io(&disk, format, io);
    disk
}

/// Runs `tests/scripts/NAME` with `args` (the scripts that make the images QEMU cannot
/// write: differencing VHD and VHDX disks) and returns the bytes of the image it wrote to
/// `out`.
pub fn fixture_script(name: &str, args: &[&str], out: &Path) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/scripts")
        .join(name);
    let mut all = vec![script.to_str().unwrap()];
    all.extend_from_slice(args);
    all.push(out.to_str().unwrap());
    let output = run("python3", &all);
    assert!(
        output.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out).unwrap()
}

/// Opens the differencing disk at `image` over its parent, the file `parent` beside it,
/// and checks that it reads as `expected`: whole, through its runs, and across each of
/// `own`, guest offsets whose bytes lie in its own file, where the sector before (at each
/// of `parents`) lies in the parent's; and that it maps no hole where `expected` holds
/// data.
pub fn assert_reads_over_parent(
    image: &Path,
    format: Format,
    expected: &[u8],
    own: &[u64],
    parents: &[u64],
    parent: &str,
) {
    let name = image.file_name().unwrap().to_str().unwrap();
    let mut disk = open_file(image, None).unwrap();
    assert_eq!(disk.format(), format);
    assert!(
        disk.describe().starts_with("differencing"),
        "{}",
        disk.describe()
    );
    let size = expected.len() as u64;
    let mut ours = vec![0u8; expected.len()];
    disk.read_at(0, &mut ours).unwrap();
    assert_same_bytes(&ours, expected, image);
    let file = std::fs::File::open(image).unwrap();
    assert_same_bytes(&read_by_runs(&mut *disk, &file, 0, size), expected, image);
    for &at in own {
        assert_eq!(stored_in(&mut *disk, at), name, "at {at}");
    }
    for &at in parents {
        assert_eq!(stored_in(&mut *disk, at), parent, "at {at}");
        // A read across the end of the parent's sector.
        let mut piece = vec![0u8; 3000];
        let start = (at + 512).saturating_sub(1000).min(size - 3000);
        disk.read_at(start, &mut piece).unwrap();
        assert_eq!(piece, expected[start as usize..start as usize + 3000]);
    }
    for extent in disk.map(0, size).unwrap() {
        if extent.kind == ExtentKind::Zero {
            let (from, to) = (extent.offset as usize, extent.end() as usize);
            assert!(expected[from..to].iter().all(|&b| b == 0), "{extent:?}");
        }
    }
}

/// The guest disk as QEMU reads it.
pub fn qemu_raw(path: &Path, format: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join("qemu-view.raw");
    qemu_img(&[
        "convert",
        "-f",
        format,
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// Checks that our reader sees exactly what QEMU sees in the image at `path`: the same
/// bytes, read in pieces that cross cluster boundaries anywhere, and the same map.
pub fn assert_same_as_qemu(path: &Path, format: &str) {
    assert_same_as_qemu_with(path, format, MapView::Data);
}

/// [`assert_same_as_qemu`], QEMU's map taken as `view` says.
pub fn assert_same_as_qemu_with(path: &Path, format: &str, view: MapView) {
    let dir = path.parent().unwrap();
    let expected = qemu_raw(path, format, dir);
    let mut image = open_file(path, Format::from_name(format)).unwrap();
    assert_eq!(
        image.virtual_size(),
        expected.len() as u64,
        "{}",
        image.describe()
    );

    let mut ours = vec![0xa5u8; expected.len()];
    for chunk_start in (0..ours.len()).step_by(1_000_003) {
        let end = (chunk_start + 1_000_003).min(ours.len());
        image
            .read_at(chunk_start as u64, &mut ours[chunk_start..end])
            .unwrap();
    }
    assert_same_bytes(&ours, &expected, path);

    let mut rng = SplitMix::new(expected.len() as u64);
    for _ in 0..200 {
        let len = rng.below(200_000).min(expected.len() as u64) as usize;
        let at = rng.below(expected.len() as u64 - len as u64 + 1) as usize;
        let mut buf = vec![0x5au8; len];
        image.read_at(at as u64, &mut buf).unwrap();
        assert!(
            buf == expected[at..at + len],
            "{}: read of {len} at {at}",
            path.display()
        );
    }

    assert_eq!(
        our_map(&mut *image),
        qemu_map_as(path, format, view),
        "map of {}",
        image.describe()
    );

    // The same bytes again, the runs stored in the file read from it straight.
    let file = std::fs::File::open(path).unwrap();
    let mut through_runs = Vec::with_capacity(expected.len());
    for start in (0..expected.len() as u64).step_by(1_000_003) {
        let length = (expected.len() as u64 - start).min(1_000_003);
        through_runs.extend(read_by_runs(&mut *image, &file, start, length));
    }
    assert_same_bytes(&through_runs, &expected, path);
    for _ in 0..50 {
        let len = rng.below(300_000).min(expected.len() as u64);
        let at = rng.below(expected.len() as u64 - len + 1);
        let bytes = read_by_runs(&mut *image, &file, at, len);
        assert!(
            bytes == expected[at as usize..(at + len) as usize],
            "{}: runs of {len} at {at}",
            path.display()
        );
    }
}

/// Guest bytes `offset..offset + length`, read from `file` where [`DiskImage::runs`] says
/// they lie in it, and through the image elsewhere; checks that the runs cover the range.
pub fn read_by_runs(
    image: &mut dyn DiskImage,
    file: &std::fs::File,
    offset: u64,
    length: u64,
) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let runs = image.runs(offset, length).unwrap();
    let mut out = Vec::with_capacity(length as usize);
    let mut pos = offset;
    for run in runs {
        assert_eq!(run.offset, pos, "runs of {offset}+{length}");
        assert!(run.length > 0);
        let mut buf = vec![0u8; run.length as usize];
        match run.stored {
            Stored::InFile(at) => file.read_exact_at(&mut buf, at).unwrap(),
            Stored::InNamedFile(named, at) => {
                let name = image
                    .file_name(named)
                    .expect("a run names a file the image names");
                std::fs::File::open(name)
                    .unwrap()
                    .read_exact_at(&mut buf, at)
                    .unwrap()
            }
            Stored::Elsewhere => image.read_at(run.offset, &mut buf).unwrap(),
        }
        out.extend_from_slice(&buf);
        pos += run.length;
    }
    assert_eq!(pos, offset + length, "runs end where the range does");
    out
}

/// The file name of where the guest byte at `at` is stored, as its run says: the image's
/// own file's name when in it, `elsewhere` when read through the image.
pub fn stored_in(image: &mut dyn DiskImage, at: u64) -> String {
    let base_name = |name: &str| name.rsplit('/').next().unwrap().to_owned();
    match image.runs(at, 1).unwrap()[0].stored {
        Stored::InFile(_) => base_name(image.name()),
        Stored::InNamedFile(file, _) => base_name(image.file_name(file).unwrap()),
        Stored::Elsewhere => "elsewhere".into(),
    }
}

/// The names of the files that hold the image's data, as its runs say; fails if any
/// data is read through the image instead of from a file.
pub fn files_holding_data(image: &mut dyn DiskImage) -> Vec<String> {
    let mut named = std::collections::BTreeSet::new();
    for extent in image.map(0, image.virtual_size()).unwrap() {
        if extent.kind != ExtentKind::Data {
            continue;
        }
        for run in image.runs(extent.offset, extent.length).unwrap() {
            assert!(
                run.stored != Stored::Elsewhere,
                "{}: data at {}+{} read through the image",
                image.name(),
                run.offset,
                run.length
            );
            named.insert(stored_in(image, run.offset));
        }
    }
    named.into_iter().collect()
}

pub fn assert_same_bytes(ours: &[u8], expected: &[u8], path: &Path) {
    if ours != expected {
        let first = ours.iter().zip(expected).position(|(a, b)| a != b).unwrap();
        panic!(
            "{}: guest bytes differ from QEMU's, first at offset {first:#x}",
            path.display()
        );
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `dir/name` as a string.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Writes `content` as a raw file.
pub fn write_raw(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    // Write only non-zero 4 KiB blocks so the file is sparse, like a real disk image.
    let file = std::fs::File::create(&p).unwrap();
    file.set_len(content.len() as u64).unwrap();
    use std::os::unix::fs::FileExt;
    for (i, block) in content.chunks(4096).enumerate() {
        if block.iter().any(|&b| b != 0) {
            file.write_all_at(block, i as u64 * 4096).unwrap();
        }
    }
    p
}

/// Converts the raw file `src` into `out` in `format` (QEMU's name) with `options` (`-o`).
pub fn convert_raw(src: &Path, out: &Path, format: &str, options: &str) {
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        format,
        "-o",
        options,
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
}

/// An image `dir/name` in `format` with `options`, holding [`content`] of `size` bytes.
pub fn image_of_content(
    dir: &Path,
    name: &str,
    size: usize,
    format: &str,
    options: &str,
) -> PathBuf {
    let raw = write_raw(
        dir,
        &format!("{name}.src"),
        &content(size, size as u64 ^ name.len() as u64),
    );
    let out = path(dir, name);
    convert_raw(&raw, &out, format, options);
    out
}

/// The `(offset, length)` of every extent of the whole disk that holds data.
pub fn data_extents(image: &mut dyn DiskImage) -> Vec<(u64, u64)> {
    image
        .map(0, image.virtual_size())
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| (e.offset, e.length))
        .collect()
}

/// The expected error kind, with the message checked to name the disk.
pub fn expect_error<T>(result: Result<T, ImageError>, disk: &str) -> ImageError {
    let err = match result {
        Ok(_) => panic!("expected an error about {disk}"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert!(
        message.starts_with(disk),
        "message should start with the disk name {disk}: {message}"
    );
    err
}
