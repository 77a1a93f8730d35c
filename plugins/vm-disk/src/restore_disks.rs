//! Restore: whole disks into the target directory (`diskN.raw`, sparse, or `diskN.qcow2`)
//! or onto an NBD export, the configuration document beside them, and, for paths below a
//! disk, single files and directory trees read out of the disk's file systems (see
//! [`crate::files`]). Metadata the host cannot apply becomes a warning in the summary
//! rather than a failure.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tessera_disk_image::{MAX_VHD_SIZE, Qcow2Writer, VhdxWriter, WriteError, vhd_fixed_footer};
use tessera_nbd::NbdUrl;
use tessera_plugin_sdk::content::{self, ReadError};
use tessera_plugin_sdk::error::{from_host, from_io};
use tessera_plugin_sdk::meta;
use tessera_plugin_sdk::path::{self, Mount};
use tessera_plugin_sdk::point::ContentReader;
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::settings::Settings;
use tessera_plugin_sdk::target::{self, Tally};
use tessera_plugin_sdk::{PIECE, debug, info};

use crate::browse::no_volume;
use crate::error::{NbdPhase, from_image_write, from_nbd};
use crate::files;
use crate::layout::PointPath;
use crate::options::{DiskFormat, RestoreOptions};
use crate::source;

/// Runs a restore job.
pub(crate) fn run(request: &RestoreRequest) -> Result<RestoreSummary, PluginError> {
    let options = RestoreOptions::parse(&Settings::new(&request.settings))?;
    let selection = path::restore_selection(&request.paths)
        .map_err(|err| PluginError::InvalidSettings(format!("cannot restore: {err}")))?;
    let selection = path::minimal_cover(selection);

    if source::is_url(&request.target) {
        return restore_onto_export(&request.target, &selection);
    }

    let mut job = Job {
        target: target::locate(&request.target)?,
        format: options.format,
        tally: Tally::default(),
    };
    for selected in &selection {
        match PointPath::parse(selected) {
            PointPath::Root => {
                let entries =
                    point::children("").map_err(|err| from_host("listing the point", &err))?;
                for entry in entries {
                    job.restore_top(&entry)?;
                }
            }
            PointPath::Top(name) => {
                let entry = target::selected_entry(name)?;
                job.restore_top(&entry)?;
            }
            PointPath::BadVolume { top, name } => return Err(no_volume(top, name)),
            PointPath::Inside { disk, volume, rest } => {
                files::restore(&mut job, selected, disk, volume, rest)?;
            }
        }
    }
    Ok(job.tally.summary())
}

/// The state of a restore into a directory; [`crate::files`] adds to it.
pub(crate) struct Job {
    /// The target directory.
    pub(crate) target: Mount,
    format: DiskFormat,
    /// Entries, bytes and warnings so far.
    pub(crate) tally: Tally,
}

impl Job {
    /// Restores a top-level entry of the point: a disk or a document.
    fn restore_top(&mut self, entry: &EntryInfo) -> Result<(), PluginError> {
        // The host confines every call to the grant, but a plugin must never even try
        // to write outside it.
        path::validate_name(&entry.path)
            .map_err(|err| PluginError::CorruptSource(format!("refusing an entry: {err}")))?;
        if host::cancelled() {
            return Err(PluginError::Cancelled);
        }
        match &entry.kind {
            EntryKind::BlockDevice => self.restore_disk(entry),
            EntryKind::Blob | EntryKind::File => self.restore_document(entry),
            other => {
                self.tally.warn(format!(
                    "{}: not restored: a {other:?} entry is not something this plugin stores",
                    entry.path
                ));
                Ok(())
            }
        }
    }

    /// Writes a disk into `diskN.raw`, `diskN.qcow2`, `diskN.vhd`, `diskN.vhdx`, or
    /// `diskN.vmdk` and `diskN-flat.vmdk`.
    fn restore_disk(&mut self, entry: &EntryInfo) -> Result<(), PluginError> {
        let name = entry.path.as_str();
        let file_name = format!("{name}.{}", self.format.extension());
        // A VMware disk's bytes go to its flat extent; the descriptor is written last.
        let data_name = match self.format {
            DiskFormat::Vmdk => format!("{name}-flat.vmdk"),
            _ => file_name.clone(),
        };
        let reader = match point::open(name) {
            Ok(reader) => Some(reader),
            // An empty disk may be stored without any content at all.
            Err(HostError::NotFound(_)) if entry.meta.size == 0 => None,
            Err(err) => {
                return Err(from_host(
                    format_args!("opening the content of {name}"),
                    &err,
                ));
            }
        };
        let size = reader.as_ref().map_or(0, ContentReader::length);
        // A disk a format cannot hold fails before anything is written.
        let trailer = match self.format {
            DiskFormat::Vhd => Some(vhd_footer(name, size)?.to_vec()),
            DiskFormat::Vmdk => Some(vmdk_descriptor(name, &data_name, size)?.into_bytes()),
            DiskFormat::Vhdx => {
                check_vhdx_size(name, size)?;
                None
            }
            DiskFormat::Raw | DiskFormat::Qcow2 => None,
        };
        if self.format == DiskFormat::Vmdk {
            let dest = self.target.sandbox(&file_name);
            target::clear(&file_name, &dest)?;
        }
        let dest = self.target.sandbox(&data_name);
        target::clear(&data_name, &dest)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(|err| from_io(format_args!("creating {data_name}"), &err))?;
        let written = match self.format {
            DiskFormat::Qcow2 => write_qcow2(name, &file_name, reader.as_ref(), file)?,
            DiskFormat::Vhdx => write_vhdx(name, &file_name, reader.as_ref(), file)?,
            // A fixed VHD is the raw disk and a footer; a flat VMware disk the raw disk
            // and a descriptor naming it.
            DiskFormat::Raw | DiskFormat::Vhd | DiskFormat::Vmdk => {
                let host_path = self.target.host(&data_name);
                let written = match reader {
                    Some(reader) => {
                        drop(file);
                        content::restore_file(&reader, &host_path)
                            .map_err(|err| read_error(name, &data_name, err))?
                    }
                    None => 0,
                };
                match (self.format, trailer) {
                    (DiskFormat::Vhd, Some(footer)) => {
                        append_footer(&file_name, &host_path, &dest, size, &footer)?;
                    }
                    (DiskFormat::Vmdk, Some(descriptor)) => {
                        // Once the host has written the extent (see `append_footer`).
                        host::stat(&host_path)
                            .map_err(|err| from_host(format_args!("writing {data_name}"), &err))?;
                        std::fs::write(self.target.sandbox(&file_name), descriptor)
                            .map_err(|err| from_io(format_args!("writing {file_name}"), &err))?;
                    }
                    _ => {}
                }
                written
            }
        };
        info!("{name}: restored into {file_name}, {written} bytes of data");
        self.tally.bytes_written += written;
        self.tally.entries += 1;
        host::progress(self.tally.bytes_written, 0, self.tally.entries, 0);
        Ok(())
    }

    /// Writes the configuration document (or another stored file) under its name.
    fn restore_document(&mut self, entry: &EntryInfo) -> Result<(), PluginError> {
        let name = entry.path.as_str();
        let dest = self.target.sandbox(name);
        target::clear(name, &dest)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(|err| from_io(format_args!("creating {name}"), &err))?;
        match point::open(name) {
            Ok(reader) => {
                let written = content::restore_file(&reader, &self.target.host(name))
                    .map_err(|err| read_error(name, name, err))?;
                self.tally.bytes_written += written;
            }
            Err(HostError::NotFound(_)) if entry.meta.size == 0 => {}
            Err(err) => {
                return Err(from_host(
                    format_args!("opening the content of {name}"),
                    &err,
                ));
            }
        }
        self.tally.entries += 1;
        let wanted = meta::restore_metadata(&entry.kind, &entry.meta);
        self.apply_metadata(name, &wanted);
        Ok(())
    }

    /// Applies metadata to a restored path; what the host cannot apply is a warning.
    pub(crate) fn apply_metadata(&mut self, path: &str, wanted: &host::RestoreMetadata) {
        let host_path = self.target.host(path);
        self.tally.apply_metadata(path, &host_path, wanted);
    }
}

/// Writes `footer` at byte `size` of the restored disk `file_name` (at `dest` in the
/// sandbox, `host_path` for host calls).
fn append_footer(
    file_name: &str,
    host_path: &str,
    dest: &std::path::Path,
    size: u64,
    footer: &[u8],
) -> Result<(), PluginError> {
    // The host writes the disk on threads of its own; a host call naming the file returns
    // once that is done (and reports a failed write), so the footer is never overwritten
    // nor cut off by the disk's final length.
    host::stat(host_path).map_err(|err| from_host(format_args!("writing {file_name}"), &err))?;
    let mut file = OpenOptions::new()
        .write(true)
        .open(dest)
        .map_err(|err| from_io(format_args!("opening {file_name}"), &err))?;
    file.seek(SeekFrom::Start(size))
        .and_then(|_| file.write_all(footer))
        .map_err(|err| from_io(format_args!("writing the footer of {file_name}"), &err))
}

/// The descriptor that makes the restored raw disk `name` of `size` bytes, in the file
/// `extent` beside it, a `monolithicFlat` VMware disk. The geometry is the one VMware
/// gives an SCSI disk (255 heads, 63 sectors a track), as QEMU writes it.
fn vmdk_descriptor(name: &str, extent: &str, size: u64) -> Result<String, PluginError> {
    if size == 0 || !size.is_multiple_of(512) {
        return Err(PluginError::Unsupported(format!(
            "{name}: a disk of {size} bytes cannot be a VMDK, which holds whole 512-byte \
             sectors; restore it as raw or qcow2"
        )));
    }
    let sectors = size / 512;
    let cylinders = (sectors / (255 * 63)).min(65535);
    // Random: VMware tells the disks of a chain apart by it.
    let cid = RandomState::new().hash_one((name, size)) as u32;
    Ok(format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\
         \n\
         # Extent description\n\
         RW {sectors} FLAT \"{extent}\" 0\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"lsilogic\"\n"
    ))
}

/// The footer that makes the restored raw disk `name` of `size` bytes a fixed VHD.
fn vhd_footer(name: &str, size: u64) -> Result<[u8; 512], PluginError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Random: each restored disk is a disk of its own to Hyper-V and Azure.
    let random = || RandomState::new().hash_one((name, size, now));
    let mut unique_id = [0u8; 16];
    unique_id[..8].copy_from_slice(&random().to_le_bytes());
    unique_id[8..].copy_from_slice(&random().to_le_bytes());
    vhd_fixed_footer(size, now, unique_id).ok_or_else(|| {
        PluginError::Unsupported(format!(
            "{name}: a disk of {size} bytes cannot be a VHD, which holds whole 512-byte \
             sectors up to {} GiB; restore it as raw or qcow2",
            MAX_VHD_SIZE >> 30
        ))
    })
}

/// The plugin error for stored content that could not be written into `file_name`.
fn read_error(name: &str, file_name: &str, err: ReadError) -> PluginError {
    match err {
        ReadError::Host(err) => from_host(format_args!("writing {name} into {file_name}"), &err),
        ReadError::Write(err) => from_io(format_args!("writing {file_name}"), &err),
        short @ ReadError::Short { .. } => PluginError::CorruptSource(format!("{name}: {short}")),
    }
}

/// Reads `want` bytes of stored content at `offset`, all of them.
fn read_stored(
    name: &str,
    reader: &ContentReader,
    offset: u64,
    want: usize,
) -> Result<Vec<u8>, PluginError> {
    // `want` is at most PIECE, which fits in u32.
    let data = reader
        .read_at(offset, want as u32)
        .map_err(|err| from_host(format_args!("reading {name} at byte {offset}"), &err))?;
    if data.len() != want {
        return Err(PluginError::CorruptSource(format!(
            "{name}: the stored disk returned {} bytes at byte {offset} where {want} were \
             asked for",
            data.len()
        )));
    }
    Ok(data)
}

/// The data (non-hole) ranges of a stored disk, as `(start, end)`.
fn stored_data(name: &str, reader: &ContentReader) -> Result<Vec<(u64, u64)>, PluginError> {
    let length = reader.length();
    let holes = if length > 0 {
        reader
            .holes(0, length)
            .map_err(|err| from_host(format_args!("reading the holes of {name}"), &err))?
    } else {
        Vec::new()
    };
    Ok(content::segments(length, &holes)
        .into_iter()
        .filter(|segment| !segment.hole)
        .map(|segment| (segment.offset, segment.offset + segment.length))
        .collect())
}

/// Writes a stored disk into `file` as a qcow2 image; returns the bytes of data written.
fn write_qcow2(
    name: &str,
    file_name: &str,
    reader: Option<&ContentReader>,
    file: File,
) -> Result<u64, PluginError> {
    let length = reader.map_or(0, ContentReader::length);
    let out = BufWriter::with_capacity(PIECE, file);
    let image =
        Qcow2Writer::create(out, length).map_err(|err| from_image_write(file_name, &err))?;
    write_image(name, file_name, reader, image)
}

/// Refuses a disk of `size` bytes a VHDX cannot hold, before anything is written.
fn check_vhdx_size(name: &str, size: u64) -> Result<(), PluginError> {
    if size == 0 || !size.is_multiple_of(512) || size > 64 << 40 {
        return Err(PluginError::Unsupported(format!(
            "{name}: a disk of {size} bytes cannot be a VHDX, which holds whole 512-byte \
             sectors up to 64 TiB; restore it as raw or qcow2"
        )));
    }
    Ok(())
}

/// Writes the disk `name` read by `reader` into `file` as a dynamic VHDX; returns the
/// bytes of data written.
fn write_vhdx(
    name: &str,
    file_name: &str,
    reader: Option<&ContentReader>,
    file: File,
) -> Result<u64, PluginError> {
    let length = reader.map_or(0, ContentReader::length);
    // Random: each restored disk is a disk of its own to Hyper-V.
    let random = |n: u8| {
        let state = RandomState::new();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&state.hash_one((name, n)).to_le_bytes());
        id[8..].copy_from_slice(&state.hash_one((n, name)).to_le_bytes());
        id
    };
    let out = BufWriter::with_capacity(PIECE, file);
    let image = VhdxWriter::create(out, length, [random(0), random(1), random(2)])
        .map_err(|err| from_image_write(file_name, &err))?;
    write_image(name, file_name, reader, image)
}

/// An image writer that takes a disk's data in increasing order, in whole units.
trait OrderedImage {
    /// The unit writes start on the multiples of: a cluster, a block.
    fn unit(&self) -> u64;
    /// Writes `data` from guest offset `at` on.
    fn put(&mut self, at: u64, data: &[u8]) -> Result<(), WriteError>;
    /// Writes the image's metadata and gives the output back.
    fn done(self) -> Result<BufWriter<File>, WriteError>;
}

impl OrderedImage for Qcow2Writer<BufWriter<File>> {
    fn unit(&self) -> u64 {
        self.cluster_size()
    }

    fn put(&mut self, at: u64, data: &[u8]) -> Result<(), WriteError> {
        self.write(at, data)
    }

    fn done(self) -> Result<BufWriter<File>, WriteError> {
        self.finish()
    }
}

impl OrderedImage for VhdxWriter<BufWriter<File>> {
    fn unit(&self) -> u64 {
        self.block_size()
    }

    fn put(&mut self, at: u64, data: &[u8]) -> Result<(), WriteError> {
        self.write(at, data)
    }

    fn done(self) -> Result<BufWriter<File>, WriteError> {
        self.finish()
    }
}

/// Writes the stored data of the disk `name` into `image`, the file `file_name`, and
/// finishes it; returns the bytes of data written.
fn write_image(
    name: &str,
    file_name: &str,
    reader: Option<&ContentReader>,
    mut image: impl OrderedImage,
) -> Result<u64, PluginError> {
    let unit = image.unit();
    let written = write_in_order(name, reader, unit, |at, data| {
        image
            .put(at, data)
            .map_err(|err| from_image_write(file_name, &err))
    })?;
    let out = image
        .done()
        .map_err(|err| from_image_write(file_name, &err))?;
    out.into_inner()
        .map_err(|err| from_io(format_args!("writing {file_name}"), err.error()))?;
    Ok(written)
}

/// Hands the stored data of the disk `name` to `put` in increasing order, widened to whole
/// `unit`s (the image's clusters or blocks; the disk's last may be short) and in pieces of
/// at most [`PIECE`] bytes, a unit shared by two data ranges with the first; returns the
/// bytes handed over.
fn write_in_order(
    name: &str,
    reader: Option<&ContentReader>,
    unit: u64,
    mut put: impl FnMut(u64, &[u8]) -> Result<(), PluginError>,
) -> Result<u64, PluginError> {
    let Some(reader) = reader else {
        return Ok(0);
    };
    let length = reader.length();
    let mut written = 0u64;
    let mut next = 0u64;
    for (start, end) in stored_data(name, reader)? {
        let from = (start - start % unit).max(next);
        let to = end.div_ceil(unit).saturating_mul(unit).min(length);
        let mut at = from;
        while at < to {
            if host::cancelled() {
                return Err(PluginError::Cancelled);
            }
            // PIECE is a multiple of every unit the writers use.
            let want = (to - at).min(PIECE as u64) as usize;
            let data = read_stored(name, reader, at, want)?;
            put(at, &data)?;
            at += want as u64;
            written += want as u64;
        }
        next = next.max(to);
    }
    Ok(written)
}

/// Restores one disk onto the NBD export at `url`.
fn restore_onto_export(url: &str, selection: &[String]) -> Result<RestoreSummary, PluginError> {
    let name = match selection {
        [only] => match PointPath::parse(only) {
            PointPath::Root => only_disk()?,
            PointPath::Top(name) => name.to_owned(),
            _ => {
                return Err(PluginError::InvalidSettings(format!(
                    "{only}: files inside a disk are restored into a directory, not onto an \
                     NBD export"
                )));
            }
        },
        many => {
            return Err(PluginError::InvalidSettings(format!(
                "an NBD export takes exactly one disk, but {} paths are selected ({}); \
                 restore them one at a time",
                many.len(),
                many.join(", ")
            )));
        }
    };
    let entry = target::selected_entry(&name)?;
    if entry.kind != EntryKind::BlockDevice {
        return Err(PluginError::InvalidSettings(format!(
            "{name} is not a disk; only a disk can be restored onto an NBD export"
        )));
    }
    let parsed = NbdUrl::parse(url)
        .map_err(|err| PluginError::InvalidSettings(format!("restore target: {err}")))?;
    let mut client = source::connect(&name, &parsed, &[])
        .map_err(|err| from_nbd(&name, NbdPhase::Connect, &err))?;
    if client.read_only() {
        return Err(PluginError::InvalidSettings(format!(
            "{name}: the NBD export {url} is read-only; serve it writable (qemu-nbd without \
             --read-only) to restore onto it"
        )));
    }
    let reader = point::open(&name)
        .map_err(|err| from_host(format_args!("opening the content of {name}"), &err))?;
    let length = reader.length();
    let export_size = client.size();
    if export_size < length {
        return Err(PluginError::InvalidSettings(format!(
            "{name} is {length} bytes, but the NBD export {url} holds only {}; make the \
             export at least as large (qemu-img resize IMAGE {length})",
            client.size()
        )));
    }
    let failed = |err: tessera_nbd::NbdError| from_nbd(&name, NbdPhase::Transfer, &err);
    let mut written = 0u64;
    let mut position = 0u64;
    for (start, end) in stored_data(&name, &reader)? {
        if start > position {
            client
                .write_zeroes(position, start - position)
                .map_err(failed)?;
        }
        let mut at = start;
        while at < end {
            if host::cancelled() {
                return Err(PluginError::Cancelled);
            }
            let want = (end - at).min(PIECE as u64) as usize;
            let data = read_stored(&name, &reader, at, want)?;
            client.write(at, &data).map_err(failed)?;
            at += want as u64;
            written += want as u64;
            host::progress(at, length, 0, 1);
        }
        position = end;
    }
    if length > position {
        client
            .write_zeroes(position, length - position)
            .map_err(failed)?;
    }
    client.flush().map_err(failed)?;
    if let Err(err) = client.disconnect() {
        debug!("{name}: closing the NBD session: {err}");
    }
    let mut warnings = Vec::new();
    if export_size > length {
        warnings.push(format!(
            "{name}: the NBD export is {export_size} bytes, larger than the disk ({length}); \
             its bytes from {length} on were left as they were"
        ));
    }
    info!("{name}: restored onto {url}, {written} bytes of data");
    Ok(RestoreSummary {
        entries: 1,
        bytes_written: written,
        warnings,
    })
}

/// The only disk of the point, for a restore onto an export that selects nothing.
fn only_disk() -> Result<String, PluginError> {
    let disks: Vec<String> = point::children("")
        .map_err(|err| from_host("listing the point", &err))?
        .into_iter()
        .filter(|entry| entry.kind == EntryKind::BlockDevice)
        .map(|entry| entry.path)
        .collect();
    match disks.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(PluginError::InvalidSettings(
            "the point holds no disk to restore".to_owned(),
        )),
        many => Err(PluginError::InvalidSettings(format!(
            "an NBD export takes exactly one disk, and the point holds {} ({}); select one \
             of them",
            many.len(),
            many.join(", ")
        ))),
    }
}
