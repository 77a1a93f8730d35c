//! The disks a capture reads, opened from what the request names: an image file inside a
//! granted directory (raw, qcow2 with its backing chain, VHD, VHDX, VMDK with its extent
//! files and parents, or VDI), a host block device granted on its own (a raw disk the host
//! reads), or an export of an NBD server (`nbd://HOST:PORT/EXPORT`). Either way a [`Source`] tells the disk's size, which of its
//! ranges may hold data, which changed since the last backup when a dirty bitmap says so,
//! and reads its bytes.

use std::collections::VecDeque;
use std::fs::File;

use tessera_disk_image::{
    BackingRef, BackingRole, DiskImage, ExtentKind, FileReader, Format, ImageError, ImageFile,
    ParentIdentity, Run, Stored,
};
use tessera_nbd::{BASE_ALLOCATION, Client, NbdErrorKind, NbdUrl};
use tessera_plugin_sdk::error::host_error_text;
use tessera_plugin_sdk::host::PosixStat;
use tessera_plugin_sdk::meta::FileType;
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::{debug, info, warn};

use crate::backing::{self, GrantedDir};
use crate::error::{NbdPhase, from_image, from_nbd};
use crate::host_net::{HostBuf, HostStream, NbdClient};

/// The sandbox directory every granted source directory is mounted below.
const SOURCE_ROOT: &str = "source";

/// A disk being captured.
pub(crate) enum Source {
    /// An image file.
    File(FileSource),
    /// A host block device.
    Device(DeviceSource),
    /// An NBD export.
    Nbd(NbdSource),
}

/// A host block device, granted alone: the plugin sees no file of it, only its host-call
/// path, so the host reads all of its bytes (`write-file`) and nothing is probed. It is a
/// raw disk of the size the host's `stat` tells; no holes are known, and its node's times
/// say nothing of its content, so it is read whole on every backup.
pub(crate) struct DeviceSource {
    /// Its sandbox path.
    sandbox: String,
    /// Its path for host calls.
    host_path: String,
    /// Its size in bytes.
    size: u64,
}

/// An image file and the chain of backing files below it.
pub(crate) struct FileSource {
    /// The top image's canonical sandbox path.
    pub(crate) sandbox: String,
    /// The top image's path for host calls (relative to the grant).
    pub(crate) host_path: String,
    /// The top image file's metadata.
    pub(crate) stat: PosixStat,
    /// Whether the image refers to other files (a backing file, a VMDK descriptor's extents
    /// or parent), whose changes its own metadata does not show.
    pub(crate) backed: bool,
    /// The image's persistent dirty bitmap that tells what changed since the parent point.
    bitmap: Option<String>,
    image: Box<dyn DiskImage>,
    /// Reads queued with [`Source::queue_read`], already read.
    ready: VecDeque<Result<ReadBytes, PluginError>>,
}

/// The bytes of a read queued with [`Source::queue_read`]: in the plugin's memory when
/// it read them from an image file, in a host buffer when an NBD server sent them.
pub(crate) enum ReadBytes {
    /// Read by the plugin.
    Plugin(Vec<u8>),
    /// Received by the host.
    Host(HostBuf),
}

impl Default for ReadBytes {
    fn default() -> Self {
        ReadBytes::Plugin(Vec::new())
    }
}

impl ReadBytes {
    /// Appends `length` bytes from `at` on to `writer`. The caller keeps both inside the
    /// read, whose ranges it planned.
    pub(crate) fn write_to(
        &self,
        writer: &mut tessera_plugin_sdk::content::Writer,
        at: usize,
        length: usize,
    ) -> Result<(), HostError> {
        match self {
            ReadBytes::Plugin(bytes) => writer.write_bytes(&bytes[at..at + length]),
            ReadBytes::Host(buf) => buf.write_to(writer, at, length),
        }
    }
}

/// A connected NBD export.
pub(crate) struct NbdSource {
    client: NbdClient,
    /// Whether the server answers `base:allocation`, so zero ranges need not be read.
    allocation: bool,
    /// The dirty bitmap's metadata context, when it was negotiated.
    bitmap: Option<String>,
    /// Reads queued with [`Source::queue_read`] that were taken from the server early, so
    /// that another request could go out.
    ready: VecDeque<Result<ReadBytes, PluginError>>,
}

impl NbdSource {
    /// The client, with every read still queued at the server taken into `ready`, so that
    /// another request may go out.
    fn settled(&mut self, disk: &str) -> &mut NbdClient {
        while self.client.queued_reads() > 0 {
            let read = self.client.take_read().map(ReadBytes::Host);
            let broken = matches!(&read, Err(err) if err.is_fatal());
            self.ready
                .push_back(read.map_err(|err| from_nbd(disk, NbdPhase::Transfer, &err)));
            if broken {
                // Every later take fails the same way; the caller hears it from this one.
                break;
            }
        }
        &mut self.client
    }
}

/// Whether a source names an NBD export rather than a file.
pub(crate) fn is_url(source: &str) -> bool {
    source.contains("://")
}

impl Source {
    /// Size of the disk in bytes.
    pub(crate) fn virtual_size(&self) -> u64 {
        match self {
            Source::File(file) => file.image.virtual_size(),
            Source::Device(device) => device.size,
            Source::Nbd(nbd) => nbd.client.size(),
        }
    }

    /// The format recorded for the disk: `raw`, `qcow2`, `vhd`, `vhdx`, `vmdk`, `vdi` or
    /// `nbd`.
    pub(crate) fn format_name(&self) -> &'static str {
        match self {
            Source::File(file) => match file.image.format() {
                Format::Vhd => "vhd",
                other => other.name(),
            },
            Source::Device(_) => Format::Raw.name(),
            Source::Nbd(_) => "nbd",
        }
    }

    /// For an image file or a device, its path for host calls: the host reads the disk's
    /// bytes stored verbatim in it (see [`Source::runs`]) into the stream itself.
    pub(crate) fn host_path(&self) -> Option<&str> {
        match self {
            Source::File(file) => Some(&file.host_path),
            Source::Device(device) => Some(&device.host_path),
            Source::Nbd(_) => None,
        }
    }

    /// For a run stored in another file of an image ([`Stored::InNamedFile`]: a VMDK's flat
    /// extent file), that file's path for host calls, when it lies in the grant.
    pub(crate) fn named_host_path(&self, file: u32) -> Option<String> {
        match self {
            Source::File(source) => {
                sandbox_paths(source.image.file_name(file)?).map(|(_, host)| host)
            }
            Source::Device(_) | Source::Nbd(_) => None,
        }
    }

    /// Where the disk's bytes `offset..offset + length` are stored: for an image file,
    /// the runs that lie verbatim in it (all of a raw file, a qcow2 image's uncompressed
    /// data clusters) and the rest; for a device, all of it at the same offsets; for an
    /// NBD export, nowhere the host can read.
    pub(crate) fn runs(
        &mut self,
        disk: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Run>, PluginError> {
        match self {
            Source::File(file) => file
                .image
                .runs(offset, length)
                .map_err(|err| from_image(disk, &err)),
            Source::Device(_) => Ok(vec![Run {
                offset,
                length,
                stored: Stored::InFile(offset),
            }]),
            Source::Nbd(_) => Ok(vec![Run {
                offset,
                length,
                stored: Stored::Elsewhere,
            }]),
        }
    }

    /// Whether a dirty bitmap tells what changed since the parent point.
    pub(crate) fn has_bitmap(&self) -> bool {
        match self {
            Source::File(file) => file.bitmap.is_some(),
            Source::Nbd(nbd) => nbd.bitmap.is_some(),
            Source::Device(_) => false,
        }
    }

    /// Has the image file's persistent dirty bitmap `bitmap` tell what changed since the
    /// parent point, once it is found usable: present, enabled, not in use. A block device
    /// has none, and is read whole.
    pub(crate) fn use_file_bitmap(&mut self, disk: &str, bitmap: &str) -> Result<(), PluginError> {
        let Source::File(file) = self else {
            info!("{disk}: a block device keeps no dirty bitmap; it is read whole");
            return Ok(());
        };
        file.image
            .dirty_ranges(bitmap, 0, 0)
            .map_err(|err| from_image(disk, &err))?;
        file.bitmap = Some(bitmap.to_owned());
        Ok(())
    }

    /// The `(offset, length)` ranges of `offset..offset + length` that may hold data; the
    /// rest reads as zeros.
    pub(crate) fn data_ranges(
        &mut self,
        disk: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<(u64, u64)>, PluginError> {
        match self {
            Source::File(file) => Ok(file
                .image
                .map(offset, length)
                .map_err(|err| from_image(disk, &err))?
                .into_iter()
                .filter(|extent| extent.kind == ExtentKind::Data)
                .map(|extent| (extent.offset, extent.length))
                .collect()),
            // No allocation map: all-zero chunks still become holes in the vault.
            Source::Device(_) => Ok(vec![(offset, length)]),
            Source::Nbd(nbd) if nbd.allocation => Ok(nbd
                .settled(disk)
                .allocation(offset, length)
                .map_err(|err| from_nbd(disk, NbdPhase::Transfer, &err))?
                .into_iter()
                .filter(|extent| extent.data)
                .map(|extent| (extent.offset, extent.length))
                .collect()),
            Source::Nbd(_) => Ok(vec![(offset, length)]),
        }
    }

    /// The `(offset, length)` ranges of `offset..offset + length` the dirty bitmap marks,
    /// or `None` without a bitmap.
    pub(crate) fn dirty_ranges(
        &mut self,
        disk: &str,
        offset: u64,
        length: u64,
    ) -> Result<Option<Vec<(u64, u64)>>, PluginError> {
        match self {
            Source::Nbd(nbd) => match nbd.bitmap.clone() {
                Some(context) => nbd
                    .settled(disk)
                    .dirty(&context, offset, length)
                    .map(Some)
                    .map_err(|err| from_nbd(disk, NbdPhase::Transfer, &err)),
                None => Ok(None),
            },
            Source::File(file) => match file.bitmap.clone() {
                Some(bitmap) => file
                    .image
                    .dirty_ranges(&bitmap, offset, length)
                    .map(Some)
                    .map_err(|err| from_image(disk, &err)),
                None => Ok(None),
            },
            Source::Device(_) => Ok(None),
        }
    }

    /// Fills `buf` with the disk's bytes at `offset`.
    pub(crate) fn read(
        &mut self,
        disk: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), PluginError> {
        match self {
            Source::File(file) => file
                .image
                .read_at(offset, buf)
                .map_err(|err| from_image(disk, &err)),
            Source::Device(device) => Err(device.not_readable(disk)),
            Source::Nbd(nbd) => nbd
                .settled(disk)
                .read(offset, buf)
                .map_err(|err| from_nbd(disk, NbdPhase::Transfer, &err)),
        }
    }

    /// Queues a read of the disk's bytes at `ranges`, one after the other, into `buf`
    /// (resized to fit); [`Source::take_read`] returns them, reads in the order they were
    /// queued. An NBD server gets a read's requests all at once and works on them while the
    /// plugin stores the bytes of earlier reads; a file is read at once.
    pub(crate) fn queue_read(
        &mut self,
        disk: &str,
        ranges: &[(u64, u64)],
        buf: ReadBytes,
    ) -> Result<(), PluginError> {
        match self {
            Source::Nbd(nbd) => {
                let buf = match buf {
                    ReadBytes::Host(buf) => buf,
                    ReadBytes::Plugin(_) => HostBuf::default(),
                };
                nbd.client
                    .queue_read(ranges, buf)
                    .map_err(|err| from_nbd(disk, NbdPhase::Transfer, &err))
            }
            Source::File(file) => {
                let mut buf = match buf {
                    ReadBytes::Plugin(buf) => buf,
                    ReadBytes::Host(_) => Vec::new(),
                };
                let total: u64 = ranges.iter().map(|&(_, length)| length).sum();
                buf.resize(total as usize, 0);
                let mut at = 0usize;
                let mut read = Ok(());
                for &(offset, length) in ranges {
                    let end = at + length as usize;
                    read = file
                        .image
                        .read_at(offset, &mut buf[at..end])
                        .map_err(|err| from_image(disk, &err));
                    if read.is_err() {
                        break;
                    }
                    at = end;
                }
                file.ready.push_back(read.map(|()| ReadBytes::Plugin(buf)));
                Ok(())
            }
            Source::Device(device) => Err(device.not_readable(disk)),
        }
    }

    /// The bytes of the oldest read queued with [`Source::queue_read`].
    pub(crate) fn take_read(&mut self, disk: &str) -> Result<ReadBytes, PluginError> {
        let ready = match self {
            Source::Nbd(nbd) => &mut nbd.ready,
            Source::File(file) => &mut file.ready,
            Source::Device(device) => return Err(device.not_readable(disk)),
        };
        if let Some(read) = ready.pop_front() {
            return read;
        }
        match self {
            Source::Nbd(nbd) => nbd
                .client
                .take_read()
                .map(ReadBytes::Host)
                .map_err(|err| from_nbd(disk, NbdPhase::Transfer, &err)),
            Source::File(_) | Source::Device(_) => Err(PluginError::Internal(format!(
                "{disk}: no read is queued to take"
            ))),
        }
    }

    /// Ends the source: an NBD session is closed politely.
    pub(crate) fn close(self, disk: &str) {
        if let Source::Nbd(mut nbd) = self {
            // Reads still queued would make the server's answers mix with the disconnect.
            nbd.settled(disk);
            if let Err(err) = nbd.client.disconnect() {
                debug!("{disk}: closing the NBD session: {err}");
            }
        }
    }

    /// One line about the source, for the log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Source::File(file) => file.image.describe(),
            Source::Device(device) => format!(
                "block device {}: {} bytes, raw, read whole by the host",
                device.sandbox, device.size
            ),
            Source::Nbd(nbd) => format!(
                "NBD export {:?}: {} bytes{}{}",
                nbd.client.export(),
                nbd.client.size(),
                if nbd.allocation {
                    ", allocation map"
                } else {
                    ""
                },
                nbd.bitmap
                    .as_deref()
                    .map(|b| format!(", dirty bitmap {b}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// The canonical sandbox path of a source given as a path (`source/vm.qcow2`,
/// `/source/1/b.raw`), and its path for host calls (`vm.qcow2`, `1/b.raw`).
pub(crate) fn sandbox_paths(given: &str) -> Option<(String, String)> {
    let canonical = backing::normalize(given)?;
    let host = canonical.strip_prefix(SOURCE_ROOT)?.strip_prefix('/')?;
    if host.is_empty() {
        return None;
    }
    let host = host.to_owned();
    Some((canonical, host))
}

impl DeviceSource {
    /// The error for a read through the plugin, which cannot reach the device.
    fn not_readable(&self, disk: &str) -> PluginError {
        PluginError::Internal(format!(
            "{disk}: the block device {} is read by the host only",
            self.sandbox
        ))
    }
}

/// Opens the source named by the path `given` as the disk `disk`: an image file, or a
/// block device granted alone.
pub(crate) fn open_path(
    disk: &str,
    given: &str,
    format: Option<Format>,
    mounts: &[GrantedDir],
) -> Result<Source, PluginError> {
    let Some((sandbox, host_path)) = sandbox_paths(given) else {
        if backing::normalize(given).is_some_and(|path| path.starts_with(SOURCE_ROOT)) {
            return Err(PluginError::Unsupported(format!(
                "{disk}: source {given:?} is a granted directory; give the disk image files \
                 themselves (or nbd:// URLs), one per disk"
            )));
        }
        return Err(PluginError::SourceUnavailable(format!(
            "{disk}: source {given:?} is neither a file inside a granted directory \
             ({SOURCE_ROOT}/...) nor an nbd://HOST:PORT/EXPORT URL"
        )));
    };
    let stat = host::stat(&host_path).map_err(|err| {
        PluginError::SourceUnavailable(format!(
            "{disk}: cannot stat {sandbox}: {}",
            host_error_text(&err)
        ))
    })?;
    match FileType::from_mode(stat.mode) {
        FileType::Regular => {}
        FileType::BlockDevice => return open_device(disk, sandbox, host_path, format, &stat),
        _ => {
            return Err(PluginError::Unsupported(format!(
                "{disk}: {sandbox} is neither a regular file nor a block device (mode {:#o}); \
                 give a disk image file, a block device or an nbd:// URL",
                stat.mode
            )));
        }
    }
    let top = image_file(&sandbox, &host_path, stat.size).map_err(|err| {
        PluginError::SourceUnavailable(format!("{disk}: cannot open {sandbox}: {err}"))
    })?;
    let mut backed = false;
    let mut opener = |backing: &BackingRef| -> Result<ImageFile, ImageError> {
        backed = true;
        open_backing(backing, mounts)
    };
    let image =
        tessera_disk_image::open(top, format, &mut opener).map_err(|err| from_image(disk, &err))?;
    Ok(Source::File(FileSource {
        sandbox,
        host_path,
        stat,
        backed,
        bitmap: None,
        image,
        ready: VecDeque::new(),
    }))
}

/// Opens the block device at `sandbox` as the disk `disk`: a raw disk of the size its
/// host `stat` tells. The plugin cannot read the device to probe its format, so only raw
/// is accepted.
fn open_device(
    disk: &str,
    sandbox: String,
    host_path: String,
    format: Option<Format>,
    stat: &PosixStat,
) -> Result<Source, PluginError> {
    if let Some(format) = format.filter(|&f| f != Format::Raw) {
        return Err(PluginError::Unsupported(format!(
            "{disk}: {sandbox} is a block device, read as a raw disk; `image-format={}` \
             cannot apply to it (an image inside a device is not read)",
            format.name()
        )));
    }
    Ok(Source::Device(DeviceSource {
        sandbox,
        host_path,
        size: stat.size,
    }))
}

/// Opens a file of an image chain, with the ranges that hold data if the host knows them.
fn image_file(sandbox: &str, host_path: &str, size: u64) -> std::io::Result<ImageFile> {
    let reader = FileReader::new(File::open(sandbox)?)?;
    let file = ImageFile::new(sandbox, Box::new(reader));
    Ok(match host::holes(host_path) {
        Ok(holes) => file.with_data_ranges(data_ranges(size, &holes)),
        Err(err) => {
            debug!(
                "{sandbox}: holes unknown ({}); reading it all",
                host_error_text(&err)
            );
            file
        }
    })
}

/// The complement of `holes` in `0..size`, as `(offset, length)`.
fn data_ranges(size: u64, holes: &[ByteRange]) -> Vec<(u64, u64)> {
    tessera_plugin_sdk::content::segments(size, holes)
        .into_iter()
        .filter(|segment| !segment.hole)
        .map(|segment| (segment.offset, segment.length))
        .collect()
}

/// Resolves and opens a backing file or, for a VMDK descriptor, an extent file: both are
/// names relative to the image that refers to them.
fn open_backing(backing: &BackingRef, mounts: &[GrantedDir]) -> Result<ImageFile, ImageError> {
    if let BackingRole::Search(identity) = backing.role {
        return search_parent(backing, identity, mounts);
    }
    let unavailable = |reason: String| backing.unavailable(reason);
    let sandbox = backing::resolve(&backing.name, &backing.referenced_by, mounts)
        .map_err(|err| unavailable(err.to_string()))?;
    let Some((sandbox, host_path)) = sandbox_paths(&sandbox) else {
        return Err(unavailable(format!(
            "it resolves to {sandbox}, which is not inside a granted directory"
        )));
    };
    let stat = host::stat(&host_path)
        .map_err(|err| unavailable(format!("{sandbox}: {}", host_error_text(&err))))?;
    let role = match backing.role {
        BackingRole::Backing => "backing file",
        BackingRole::Extent => "extent file",
        BackingRole::Search(_) => unreachable!("looked for above"),
    };
    debug!(
        "{}: {role} {} is {sandbox}",
        backing.referenced_by, backing.name
    );
    image_file(&sandbox, &host_path, stat.size)
        .map_err(|err| unavailable(format!("{sandbox}: {err}")))
}

/// Opens the parent `backing` knows only by `identity` (a VDI snapshot's): the first
/// file, in name order, with the identity's extension beside the image that names it or
/// in the directory above, that carries it.
fn search_parent(
    backing: &BackingRef,
    identity: ParentIdentity,
    mounts: &[GrantedDir],
) -> Result<ImageFile, ImageError> {
    let suffix = format!(".{}", identity.extension());
    let mut searched = Vec::new();
    for dir in [".", ".."] {
        // A directory outside the grants is not searched.
        let Ok(dir) = backing::resolve(dir, &backing.referenced_by, mounts) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.to_ascii_lowercase().ends_with(&suffix))
            .collect();
        names.sort();
        for name in names {
            let sandbox = format!("{dir}/{name}");
            if sandbox == backing.referenced_by {
                continue;
            }
            // Only the file found is opened as an image (its holes asked for).
            let carries = File::open(&sandbox)
                .and_then(FileReader::new)
                .is_ok_and(|mut reader| identity.matches(&mut reader));
            if !carries {
                continue;
            }
            let Some((sandbox, host_path)) = sandbox_paths(&sandbox) else {
                continue;
            };
            debug!("{}: {} is {sandbox}", backing.referenced_by, backing.name);
            let unavailable = |reason: String| backing.unavailable(reason);
            let stat = host::stat(&host_path)
                .map_err(|err| unavailable(format!("{sandbox}: {}", host_error_text(&err))))?;
            return image_file(&sandbox, &host_path, stat.size)
                .map_err(|err| unavailable(format!("{sandbox}: {err}")));
        }
        searched.push(dir);
    }
    Err(backing.unavailable(if searched.is_empty() {
        "neither the directory of the image nor the one above it is granted".to_owned()
    } else {
        format!(
            "no {suffix} file in {} carries that UUID; grant the directory that holds it \
             (in VirtualBox's layout, the machine's directory, above `Snapshots`)",
            searched.join(" or ")
        )
    }))
}

/// Connects to the NBD export at `url` as the disk `disk`, asking for the allocation map
/// and, when given, the dirty bitmap context `bitmap`.
pub(crate) fn open_nbd(
    disk: &str,
    url: &str,
    bitmap: Option<&str>,
) -> Result<NbdSource, PluginError> {
    let parsed = NbdUrl::parse(url)
        .map_err(|err| PluginError::SourceUnavailable(format!("{disk}: {err}")))?;
    let mut contexts = vec![BASE_ALLOCATION];
    contexts.extend(bitmap);
    match connect(disk, &parsed, &contexts) {
        Ok(client) => Ok(NbdSource {
            client,
            allocation: true,
            bitmap: bitmap.map(str::to_owned),
            ready: VecDeque::new(),
        }),
        Err(err) if matches!(err.kind(), NbdErrorKind::ContextNotGranted { context } if context == BASE_ALLOCATION) =>
        {
            warn!(
                "{disk}: the NBD server does not report allocation ({err}); every byte \
                 of the disk is read"
            );
            let contexts: Vec<&str> = bitmap.into_iter().collect();
            let client = connect(disk, &parsed, &contexts)
                .map_err(|err| from_nbd(disk, NbdPhase::Connect, &err))?;
            Ok(NbdSource {
                client,
                allocation: false,
                bitmap: bitmap.map(str::to_owned),
                ready: VecDeque::new(),
            })
        }
        Err(err) => Err(from_nbd(disk, NbdPhase::Connect, &err)),
    }
}

/// Opens a TCP connection to an NBD server and negotiates the export.
pub(crate) fn connect(
    disk: &str,
    url: &NbdUrl,
    contexts: &[&str],
) -> Result<NbdClient, tessera_nbd::NbdError> {
    let (host, port) = url.address();
    let stream = HostStream::connect(host, port).map_err(|err| {
        tessera_nbd::NbdError::new(
            &url.export,
            NbdErrorKind::Io {
                during: format!(
                    "connecting to {host}:{port} for {disk} (check that the NBD server is \
                     running there and that the job allows connecting to it)"
                ),
                source: err,
            },
        )
    })?;
    Client::connect(stream, &url.export, contexts)?.with_buffers()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths_drop_the_source_root_for_host_calls() {
        assert_eq!(
            sandbox_paths("source/vm.qcow2"),
            Some(("source/vm.qcow2".into(), "vm.qcow2".into()))
        );
        assert_eq!(
            sandbox_paths("/source/1/b.raw"),
            Some(("source/1/b.raw".into(), "1/b.raw".into()))
        );
        assert_eq!(
            sandbox_paths("source//sub/./x.raw"),
            Some(("source/sub/x.raw".into(), "sub/x.raw".into()))
        );
        for bad in [
            "source",
            "/source/",
            "target/x",
            "sources/x",
            "source/../x",
            "vm.raw",
        ] {
            assert_eq!(sandbox_paths(bad), None, "{bad}");
        }
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("nbd://127.0.0.1:10809/vda"));
        assert!(!is_url("source/vm.qcow2"));
    }

    #[test]
    fn data_ranges_complement_holes() {
        let holes = [ByteRange {
            offset: 10,
            length: 20,
        }];
        assert_eq!(data_ranges(100, &holes), [(0, 10), (30, 70)]);
        assert_eq!(data_ranges(100, &[]), [(0, 100)]);
    }
}
