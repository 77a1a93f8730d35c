//! File-level restore: a file or a directory tree read out of a file system inside a
//! stored disk (`disk0/part1/etc/hostname`) and written at the same path below the target
//! (`target/disk0/part1/etc/hostname`), with its ownership, mode and times.
//!
//! Names come from the disk image, which may have been damaged or crafted by whoever
//! controlled the virtual machine, so each name is checked before it becomes part of a
//! path in the target. A file the file system cannot deliver costs a warning, not the
//! restore; a failure to write the target stops it. A directory's metadata is applied
//! once its children are written, so its times and a read-only mode do not get in the way.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};

use tessera_disk_fs::{Extras, FsEntry, FsError, FsKind, Volume};
use tessera_plugin_sdk::error::{from_io, host_error_text};
use tessera_plugin_sdk::meta::{FileType, PERMISSION_BITS};
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::target;
use tessera_plugin_sdk::{PIECE, debug, path};

use crate::error::from_fs;
use crate::guest_fs::{Reached, StoredDisk};
use crate::layout::VolumeRef;
use crate::restore_disks::Job;

/// Blocks of this size (aligned in the file) that hold only zeros are skipped, leaving
/// holes: the file system's own holes read as zeros, and come back as holes, as with
/// `cp --sparse=always` (zeros the guest wrote become holes too).
const SPARSE_BLOCK: usize = 4096;

/// Mode of a file restored from a file system that keeps none (FAT).
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of a directory restored from a file system that keeps none (FAT).
const DEFAULT_DIR_MODE: u32 = 0o755;

/// A directory being restored.
struct Dir {
    /// Its path in the point, which is also its path below the target.
    path: String,
    /// Its path inside the volume.
    inside: String,
    /// Its own entry, whose metadata is applied when its children are done.
    entry: FsEntry,
    children: std::vec::IntoIter<FsEntry>,
}

/// Restores `selected` (`disk/volume/rest`) and everything below it.
pub(crate) fn restore(
    job: &mut Job,
    selected: &str,
    disk: &str,
    volume: VolumeRef,
    rest: &str,
) -> Result<(), PluginError> {
    let stored = StoredDisk::open(disk)?;
    for warning in stored.warnings() {
        job.tally.warn(format!("{disk}: {warning}"));
    }
    restore_in(job, &stored, selected, volume, rest)
}

/// Restores `selected`, which is `rest` below `volume` of the disk `stored`.
fn restore_in(
    job: &mut Job,
    stored: &StoredDisk,
    selected: &str,
    volume: VolumeRef,
    rest: &str,
) -> Result<(), PluginError> {
    let (mut volume, rest) = match stored.reach(volume, rest)? {
        Reached::Fs { volume, rest } => (*volume, rest),
        // A whole LVM2 physical volume: each of its logical volumes, below its name.
        Reached::Lvm(volumes) => {
            for lv in volumes {
                let below = path::join(selected, &lv.name).map_err(|err| {
                    PluginError::CorruptSource(format!("{selected}: logical volume: {err}"))
                })?;
                match restore_in(job, stored, &below, volume, &lv.name) {
                    // A kind of volume not read here, or one on a disk not in the point.
                    Err(PluginError::Unsupported(why)) => {
                        job.tally.warn(format!("{below}: not restored: {why}"));
                    }
                    other => other?,
                }
            }
            return Ok(());
        }
    };
    for warning in volume.warnings().to_vec() {
        job.tally.warn(warning);
    }
    let top = volume.stat(rest).map_err(|err| from_fs(&err))?;
    // Like `restic restore --include a/b`: the selection keeps its place in the tree,
    // inside parents created plainly.
    let parent = job.target.sandbox(path::parent(selected));
    std::fs::create_dir_all(&parent)
        .map_err(|err| from_io(format_args!("creating {}", parent.display()), &err))?;

    let mut walk = Walk {
        job,
        volume,
        extras_refused: false,
    };
    let Some(dir) = walk.restore_entry(selected.to_owned(), rest.to_owned(), top)? else {
        return Ok(());
    };
    let mut stack = vec![dir];
    while let Some(dir) = stack.last_mut() {
        let Some(child) = dir.children.next() else {
            if let Some(done) = stack.pop() {
                let extras = walk.extras(&done.path, &done.inside);
                walk.apply_metadata(&done.path, &done.entry, extras);
            }
            continue;
        };
        let names = path::join(&dir.path, &child.name).map(|point_path| {
            let inside = if dir.inside.is_empty() {
                child.name.clone()
            } else {
                format!("{}/{}", dir.inside, child.name)
            };
            (point_path, inside)
        });
        let (point_path, inside) = match names {
            Ok(names) => names,
            Err(err) => {
                let message = format!("{}: entry not restored: {err}", dir.path);
                walk.job.tally.warn(message);
                continue;
            }
        };
        if host::cancelled() {
            return Err(PluginError::Cancelled);
        }
        if let Some(dir) = walk.restore_entry(point_path, inside, child)? {
            stack.push(dir);
        }
        host::progress(walk.job.tally.bytes_written, 0, walk.job.tally.entries, 0);
    }
    Ok(())
}

/// A walk through one volume.
struct Walk<'j> {
    job: &'j mut Job,
    volume: Volume,
    /// Set once the volume refused to give extended attributes and device numbers (a
    /// layout they cannot be read from): the reason was told once, and they are not asked
    /// again.
    extras_refused: bool,
}

impl Walk<'_> {
    /// Restores one entry; a directory is returned to have its children restored.
    fn restore_entry(
        &mut self,
        point_path: String,
        inside: String,
        entry: FsEntry,
    ) -> Result<Option<Dir>, PluginError> {
        let dest = self.job.target.sandbox(&point_path);
        // What was read of the inode already, where the entry needed it to be created.
        let mut extras = None;
        match &entry.kind {
            FsKind::Directory => {
                target::make_dir(&point_path, &dest)?;
                self.job.tally.entries += 1;
                let children = match self.volume.list(&inside) {
                    Ok(children) => children,
                    Err(err) => {
                        self.job
                            .tally
                            .warn(format!("{point_path}: contents not restored: {err}"));
                        Vec::new()
                    }
                };
                return Ok(Some(Dir {
                    path: point_path,
                    inside,
                    entry,
                    children: children.into_iter(),
                }));
            }
            FsKind::File => {
                if !self.write_file(&point_path, &inside, &dest)? {
                    return Ok(None);
                }
            }
            FsKind::Symlink(target) => {
                target::clear(&point_path, &dest)?;
                if let Err(err) = host::make_symlink(&self.job.target.host(&point_path), target) {
                    self.job.tally.warn(format!(
                        "{point_path}: symlink to {target:?} not created: {}",
                        host_error_text(&err)
                    ));
                    return Ok(None);
                }
            }
            FsKind::Other => match entry.mode.map(FileType::from_mode) {
                Some(FileType::Fifo) => {
                    target::clear(&point_path, &dest)?;
                    let mode = entry.mode.unwrap_or(DEFAULT_FILE_MODE) & PERMISSION_BITS;
                    if let Err(err) = host::make_fifo(&self.job.target.host(&point_path), mode) {
                        self.job.tally.warn(format!(
                            "{point_path}: fifo not created: {}",
                            host_error_text(&err)
                        ));
                        return Ok(None);
                    }
                }
                Some(FileType::Socket) => {
                    // A socket belongs to the program listening on it, which creates it anew.
                    debug!("{point_path}: socket not restored");
                    return Ok(None);
                }
                Some(kind @ (FileType::CharDevice | FileType::BlockDevice)) => {
                    let read = self.extras(&point_path, &inside);
                    if !self.make_device(&point_path, &dest, &entry, kind, read.device)? {
                        return Ok(None);
                    }
                    extras = Some(read);
                }
                _ => {
                    self.job.tally.warn(format!(
                        "{point_path}: not restored: a special file of unknown type"
                    ));
                    return Ok(None);
                }
            },
        }
        self.job.tally.entries += 1;
        let extras = extras.unwrap_or_else(|| self.extras(&point_path, &inside));
        self.apply_metadata(&point_path, &entry, extras);
        Ok(None)
    }

    /// Creates the device node `entry` at `dest`; returns whether it was created. Creating
    /// one needs privilege the host may not have, which costs a warning, not the restore.
    fn make_device(
        &mut self,
        point_path: &str,
        dest: &std::path::Path,
        entry: &FsEntry,
        kind: FileType,
        device: Option<(u32, u32)>,
    ) -> Result<bool, PluginError> {
        let Some((major, minor)) = device else {
            self.job.tally.warn(format!(
                "{point_path}: device node not created: its device number could not be read"
            ));
            return Ok(false);
        };
        target::clear(point_path, dest)?;
        let mode = entry.mode.unwrap_or(DEFAULT_FILE_MODE) & PERMISSION_BITS;
        let host_path = self.job.target.host(point_path);
        let block = kind == FileType::BlockDevice;
        match host::make_device(&host_path, mode, makedev(major, minor), block) {
            Ok(()) => Ok(true),
            Err(err) => {
                self.job.tally.warn(format!(
                    "{point_path}: device node not created: {}",
                    host_error_text(&err)
                ));
                Ok(false)
            }
        }
    }

    /// The extended attributes and device number of the entry at `inside`, with what
    /// could not be read told as warnings. An empty answer where the volume gives none.
    fn extras(&mut self, point_path: &str, inside: &str) -> Extras {
        if self.extras_refused {
            return Extras::default();
        }
        match self.volume.extras(inside) {
            Ok(mut extras) => {
                for warning in std::mem::take(&mut extras.warnings) {
                    self.job.tally.warn(format!("{point_path}: {warning}"));
                }
                extras
            }
            Err(err @ FsError::Unsupported { .. }) => {
                self.extras_refused = true;
                self.job.tally.warn(err.to_string());
                Extras::default()
            }
            Err(err) => {
                self.job.tally.warn(format!(
                    "{point_path}: extended attributes not restored: {err}"
                ));
                Extras::default()
            }
        }
    }

    /// Copies a regular file out of the volume; returns whether it was written whole.
    fn write_file(
        &mut self,
        point_path: &str,
        inside: &str,
        dest: &std::path::Path,
    ) -> Result<bool, PluginError> {
        target::clear(point_path, dest)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|err| from_io(format_args!("creating {point_path:?}"), &err))?;
        let mut file = match self.volume.open_file(inside) {
            Ok(file) => file,
            Err(err) => {
                self.job
                    .tally
                    .warn(format!("{point_path}: not restored: {err}"));
                return Ok(false);
            }
        };
        let mut buffer = vec![
            0u8;
            PIECE
                .min(usize::try_from(file.size()).unwrap_or(PIECE))
                .max(1)
        ];
        let mut written = 0u64;
        loop {
            let read = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) => {
                    self.job.tally.bytes_written += written;
                    self.job.tally.warn(format!(
                        "{point_path}: restored only its first {written} bytes: {err}"
                    ));
                    return Ok(false);
                }
            };
            write_sparse(&mut out, &buffer[..read], written)
                .map_err(|err| from_io(format_args!("writing {point_path:?}"), &err))?;
            written += read as u64;
        }
        // A file ending in zeros ends in a hole: the skipped tail still counts.
        out.set_len(written)
            .map_err(|err| from_io(format_args!("writing {point_path:?}"), &err))?;
        self.job.tally.bytes_written += written;
        Ok(true)
    }

    /// Applies an entry's metadata, with its extended attributes, to its restored path.
    fn apply_metadata(&mut self, point_path: &str, entry: &FsEntry, extras: Extras) {
        let mode = match &entry.kind {
            // Linux cannot change a symlink's mode.
            FsKind::Symlink(_) => None,
            FsKind::Directory => Some(entry.mode.unwrap_or(DEFAULT_DIR_MODE) & PERMISSION_BITS),
            _ => Some(entry.mode.unwrap_or(DEFAULT_FILE_MODE) & PERMISSION_BITS),
        };
        let wanted = host::RestoreMetadata {
            mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime_ns: entry.mtime_ns,
            atime_ns: entry.atime_ns,
            xattrs: extras
                .xattrs
                .into_iter()
                .map(|(name, value)| Xattr { name, value })
                .collect(),
        };
        self.job.apply_metadata(point_path, &wanted);
    }
}

/// Linux's `dev_t` of device `major:minor`, as the host's `mknod` takes it.
fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// Writes `data`, which belongs at `offset` in `out` (where `out` stands), skipping the
/// [`SPARSE_BLOCK`]s that hold only zeros.
fn write_sparse(out: &mut std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut at = 0;
    while at < data.len() {
        let first = block_at(data, offset, at);
        let zero = is_zero(first);
        let mut end = at + first.len();
        while end < data.len() {
            let next = block_at(data, offset, end);
            if is_zero(next) != zero {
                break;
            }
            end += next.len();
        }
        if zero {
            out.seek(SeekFrom::Current((end - at) as i64))?;
        } else {
            out.write_all(&data[at..end])?;
        }
        at = end;
    }
    Ok(())
}

/// The part of `data` from `at` to the next [`SPARSE_BLOCK`] boundary of the file.
fn block_at(data: &[u8], offset: u64, at: usize) -> &[u8] {
    let into = ((offset + at as u64) % SPARSE_BLOCK as u64) as usize;
    let end = (at + SPARSE_BLOCK - into).min(data.len());
    &data[at..end]
}

fn is_zero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |acc, &b| acc | b) == 0
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Writes `data` in pieces of `piece` bytes and returns the file's bytes and the
    /// bytes it occupies on disk.
    fn written(data: &[u8], piece: usize) -> (Vec<u8>, u64) {
        let path = std::env::temp_dir().join(format!(
            "tessera-sparse-test-{}-{piece}-{}",
            std::process::id(),
            data.len()
        ));
        let mut out = std::fs::File::create(&path).unwrap();
        let mut offset = 0u64;
        for part in data.chunks(piece) {
            write_sparse(&mut out, part, offset).unwrap();
            offset += part.len() as u64;
        }
        out.set_len(offset).unwrap();
        drop(out);
        let mut back = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        (back, blocks * 512)
    }

    #[test]
    fn device_numbers_encode_as_linux_does() {
        assert_eq!(makedev(8, 1), 0x801);
        assert_eq!(makedev(259, 300), 0x0011_032c);
    }

    #[test]
    fn zero_blocks_become_holes_and_the_bytes_stay_the_same() {
        let mut data = vec![0u8; 1 << 20];
        data[5000..5100].fill(7);
        data[600_000] = 1;
        for piece in [1 << 20, 65536, 4096, 1000, 333] {
            let (back, on_disk) = written(&data, piece);
            assert_eq!(back, data, "pieces of {piece}");
            // Two 4 KiB blocks hold data (5000..5100 lies in one); the rest are holes.
            assert!(
                on_disk <= 4 * 4096,
                "pieces of {piece}: {on_disk} bytes on disk"
            );
        }
        let dense: Vec<u8> = (0..100_000u32).map(|i| (i % 251 + 1) as u8).collect();
        assert_eq!(written(&dense, 4096).0, dense);
        let (back, _) = written(&[0u8; 10], 3);
        assert_eq!(back, [0u8; 10]);
    }
}
