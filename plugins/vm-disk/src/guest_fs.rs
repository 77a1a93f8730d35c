//! The file systems inside a disk stored in the point: the disk's partition table, each
//! partition's volume (`diskN/partK`), or the volume filling a disk that has no table
//! (`diskN/fs`), the logical volumes of such a volume when it is an LVM2 physical volume
//! (`diskN/partK/LV`), and the contract's view of their entries. A volume that is a member
//! of an MD array is read as the array's data (on it for RAID1, on all the members for
//! RAID0 and linear arrays): the file system or physical volume of the array, at the
//! member's paths. Browse and file-level restore both start here.

use tessera_disk_fs::{
    FsEntry, FsError, FsKind, LogicalVolume, LogicalVolumeReader, MdArray, PartitionTable, Scheme,
    Slice, Volume, btrfs_identity, open_volume, open_volume_with, read_md_member, read_partitions,
    read_physical_volume,
};
use tessera_disk_image::ReadAt;
use tessera_plugin_sdk::error::from_host;
use tessera_plugin_sdk::meta::{self, FileType};
use tessera_plugin_sdk::prelude::*;

use crate::error::from_fs;
use crate::layout::{self, VolumeRef, volume_label};
use crate::vault_disk::{SharedDisk, VaultDisk};

/// What a path below a volume of a disk reaches.
pub(crate) enum Reached<'p> {
    /// A file system, and the path inside it.
    Fs { volume: Box<Volume>, rest: &'p str },
    /// An LVM2 physical volume, when the path stops at it: the logical volumes of its group.
    Lvm(Vec<LogicalVolume>),
}

/// A stored disk opened for looking inside, with its partition table read.
pub(crate) struct StoredDisk {
    name: String,
    disk: SharedDisk,
    table: PartitionTable,
}

impl StoredDisk {
    /// Opens the disk entry `name` of the point and reads its partition table.
    pub(crate) fn open(name: &str) -> Result<StoredDisk, PluginError> {
        let entry = point::entry(name).map_err(|err| match err {
            HostError::NotFound(_) => {
                PluginError::InvalidSettings(format!("{name:?} is not in the point"))
            }
            err => from_host(format_args!("looking up {name:?}"), &err),
        })?;
        if entry.kind != EntryKind::BlockDevice {
            return Err(PluginError::InvalidSettings(format!(
                "{name:?} is not a disk, so there are no files inside it"
            )));
        }
        let reader = point::open(name)
            .map_err(|err| from_host(format_args!("opening the content of {name}"), &err))?;
        let disk = SharedDisk::new(VaultDisk::new(name, reader));
        let table = read_partitions(&mut disk.clone()).map_err(|err| in_disk(name, &err))?;
        Ok(StoredDisk {
            name: name.to_owned(),
            disk,
            table,
        })
    }

    /// Damage the partition table reader worked around.
    pub(crate) fn warnings(&self) -> &[String] {
        &self.table.warnings
    }

    /// The volumes of the disk with their sizes: one per partition, or the file system
    /// filling a disk without a partition table (none if there is no file system this
    /// plugin reads).
    pub(crate) fn volumes(&self) -> Result<Vec<(VolumeRef, u64)>, PluginError> {
        if self.table.scheme != Scheme::None {
            return Ok(self
                .table
                .partitions
                .iter()
                .map(|p| (VolumeRef::Partition(p.number), p.length))
                .collect());
        }
        let label = volume_label(&self.name, VolumeRef::WholeDisk);
        let size = ReadAt::len(&self.disk);
        let mut whole = self.array_data(Box::new(self.disk.clone()), &label)?;
        // A disk given whole to LVM2 (`pvcreate /dev/sdb`) holds its logical volumes.
        if read_physical_volume(&mut whole, &label)
            .map_err(|err| from_fs(&err))?
            .is_some()
        {
            return Ok(vec![(VolumeRef::WholeDisk, size)]);
        }
        match self.open_fs(whole, &label) {
            Ok(_) => Ok(vec![(VolumeRef::WholeDisk, size)]),
            Err(FsError::UnknownFilesystem { other, .. }) => {
                tessera_plugin_sdk::debug!(
                    "{}: no partition table and no file system{}",
                    self.name,
                    other
                        .map(|o| format!(" this plugin reads ({o})"))
                        .unwrap_or_default()
                );
                Ok(Vec::new())
            }
            Err(err) => Err(from_fs(&err)),
        }
    }

    /// The data of a volume of the disk (its MD array's, when it is a member of one; see
    /// [`StoredDisk::array_data`]), with the volume's label.
    fn volume_data(&self, volume: VolumeRef) -> Result<(Box<dyn ReadAt>, String), PluginError> {
        let label = volume_label(&self.name, volume);
        let data = self.array_data(self.reader(volume)?, &label)?;
        Ok((data, label))
    }

    /// The bytes of a volume of the disk: a partition, or the whole disk without a table.
    fn reader(&self, volume: VolumeRef) -> Result<Box<dyn ReadAt>, PluginError> {
        match volume {
            VolumeRef::Partition(number) => {
                let Some(partition) = self.table.partitions.iter().find(|p| p.number == number)
                else {
                    return Err(PluginError::InvalidSettings(format!(
                        "{}: partition {number} does not exist ({})",
                        self.name,
                        self.partition_list()
                    )));
                };
                let slice = Slice::partition(self.disk.clone(), partition)
                    .map_err(|err| in_disk(&self.name, &err))?;
                Ok(Box::new(slice))
            }
            VolumeRef::WholeDisk => {
                if self.table.scheme != Scheme::None {
                    return Err(PluginError::InvalidSettings(format!(
                        "{}: the disk has a partition table ({}), so its file systems are \
                         in its partitions",
                        self.name,
                        self.partition_list()
                    )));
                }
                Ok(Box::new(self.disk.clone()))
            }
        }
    }

    /// What `rest` (a path below `volume`) reaches: the file system of the volume, or of
    /// one of its logical volumes if the volume is an LVM2 physical volume (`rest` then
    /// starts with the logical volume's name), or the list of those logical volumes when
    /// `rest` stops at the physical volume.
    pub(crate) fn reach<'p>(
        &self,
        volume: VolumeRef,
        rest: &'p str,
    ) -> Result<Reached<'p>, PluginError> {
        let (mut reader, label) = self.volume_data(volume)?;
        let Some(pv) = read_physical_volume(&mut reader, &label).map_err(|err| from_fs(&err))?
        else {
            let volume = self.open_fs(reader, &label).map_err(|err| from_fs(&err))?;
            return Ok(Reached::Fs {
                volume: Box::new(volume),
                rest,
            });
        };
        let (name, inside) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return Ok(Reached::Lvm(pv.volumes));
        }
        let Some(lv) = pv.volumes.iter().find(|lv| lv.name == name) else {
            let names: Vec<&str> = pv.volumes.iter().map(|lv| lv.name.as_str()).collect();
            return Err(PluginError::InvalidSettings(format!(
                "{label}: the LVM2 volume group {:?} has no logical volume {name:?} (it has: {})",
                pv.group,
                names.join(", ")
            )));
        };
        let label = format!("{label}/{name}");
        // This physical volume's reader serves the first request for it; a thin volume's
        // pool asks again (for its metadata, then its data), and is given it anew.
        let mut own = Some(reader);
        let open = |uuid: &str| {
            let own = if uuid == pv.uuid { own.take() } else { None };
            own.or_else(|| self.find_physical_volume(uuid))
        };
        let reader = LogicalVolumeReader::new(lv, open, &label).map_err(|err| from_fs(&err))?;
        if let Some(note) = reader.degraded() {
            tessera_plugin_sdk::warn!("{label}: LVM2 logical volume {}: {note}", lv.name);
        }
        let volume = open_volume(Box::new(reader), &label).map_err(|err| from_fs(&err))?;
        Ok(Reached::Fs {
            volume: Box::new(volume),
            rest: inside,
        })
    }

    /// The file system of `reader`, the volume `label`: for a btrfs volume over several
    /// devices, with its other devices, found among the point's disks (partitions, disks
    /// without a table, MD arrays) by the volume's UUID.
    fn open_fs(&self, mut reader: Box<dyn ReadAt>, label: &str) -> Result<Volume, FsError> {
        let mut others = Vec::new();
        if let Some((fsid, devid, devices)) = btrfs_identity(&mut *reader)
            && devices > 1
        {
            self.visit_volumes(|disk, volume| {
                let (mut other, _) = disk.volume_data(volume).ok()?;
                if let Some((other_fsid, other_devid, _)) = btrfs_identity(&mut *other)
                    && other_fsid == fsid
                    && other_devid != devid
                {
                    others.push(other);
                }
                None::<()>
            });
            if (others.len() as u64) < devices - 1 {
                tessera_plugin_sdk::debug!(
                    "{label}: btrfs volume of {devices} devices, {} of them among the disks",
                    others.len() + 1
                );
            }
        }
        open_volume_with(reader, label, others)
    }

    /// The LVM2 physical volume with label UUID `uuid` among the point's disks (a volume
    /// group can span the disks of a VM): a partition of one, or a disk without a table,
    /// or an MD array of them.
    fn find_physical_volume(&self, uuid: &str) -> Option<Box<dyn ReadAt>> {
        self.visit_volumes(|disk, volume| {
            let (mut reader, label) = disk.volume_data(volume).ok()?;
            match read_physical_volume(&mut reader, &label) {
                Ok(Some(pv)) if pv.uuid == uuid => Some(reader),
                _ => None,
            }
        })
    }

    /// Calls `visit` on each volume of each disk of the point (a partition, or a disk
    /// without a table), this disk's among them, until it returns something.
    fn visit_volumes<T>(
        &self,
        mut visit: impl FnMut(&StoredDisk, VolumeRef) -> Option<T>,
    ) -> Option<T> {
        let disks = point::children("").ok()?;
        for entry in disks {
            if entry.kind != EntryKind::BlockDevice || layout::disk_index(&entry.path).is_none() {
                continue;
            }
            let other;
            let disk = if entry.path == self.name {
                self
            } else {
                match StoredDisk::open(&entry.path) {
                    Ok(disk) => {
                        other = disk;
                        &other
                    }
                    Err(err) => {
                        tessera_plugin_sdk::debug!("looking through {}: {err}", entry.path);
                        continue;
                    }
                }
            };
            let volumes: Vec<VolumeRef> = match disk.table.scheme {
                Scheme::None => vec![VolumeRef::WholeDisk],
                _ => disk
                    .table
                    .partitions
                    .iter()
                    .map(|p| VolumeRef::Partition(p.number))
                    .collect(),
            };
            for volume in volumes {
                if let Some(found) = visit(disk, volume) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The bytes of the volume `label` that `reader` reads, or, when it is a member of an
    /// MD array, the array's data: on this member for RAID1 (metadata 1.1 or 1.2, which
    /// keeps the data past its superblock), or on all the members, found among the
    /// point's disks, for RAID0, linear, RAID4, 5, 6 and 10 arrays. An array missing
    /// members its parity or copies stand in for is read with a warning; one of another
    /// level, or missing more, is refused with the reason.
    fn array_data(
        &self,
        mut reader: Box<dyn ReadAt>,
        label: &str,
    ) -> Result<Box<dyn ReadAt>, PluginError> {
        let Some(member) = read_md_member(&mut reader, label).map_err(|err| from_fs(&err))? else {
            return Ok(reader);
        };
        tessera_plugin_sdk::debug!(
            "{label}: a member of MD array {} ({}, metadata {}): its data from byte {}",
            member.name,
            member.uuid,
            member.version,
            member.data_offset
        );
        if !member.needs_all() {
            let data = Slice::new(reader, member.data_offset, member.data_length)
                .map_err(|err| from_fs(&err))?;
            return Ok(Box::new(data));
        }
        let mut members = Vec::new();
        self.visit_volumes(|disk, volume| {
            let label = volume_label(&disk.name, volume);
            let mut reader = disk.reader(volume).ok()?;
            if let Ok(Some(other)) = read_md_member(&mut reader, &label)
                && other.uuid == member.uuid
            {
                members.push((other, reader));
            }
            None::<()>
        });
        let array = MdArray::assemble(members, label).map_err(|err| from_fs(&err))?;
        let missing = array.missing();
        if !missing.is_empty() {
            let roles: Vec<String> = missing.iter().map(u32::to_string).collect();
            tessera_plugin_sdk::warn!(
                "{label}: MD array {} is read without its member of role {}, not among the \
                 disks: its data is rebuilt from the others",
                array.name(),
                roles.join(", ")
            );
        }
        Ok(Box::new(array))
    }

    /// What the table holds, for messages: `the table has 2: part1, part2`.
    fn partition_list(&self) -> String {
        let names: Vec<String> = self
            .table
            .partitions
            .iter()
            .map(|p| VolumeRef::Partition(p.number).to_string())
            .collect();
        match self.table.scheme {
            Scheme::None => "the disk has no partition table".to_owned(),
            _ if names.is_empty() => "the partition table is empty".to_owned(),
            _ => format!("the table has {}: {}", names.len(), names.join(", ")),
        }
    }
}

/// A partition-table error, prefixed with the disk's name.
fn in_disk(disk: &str, err: &FsError) -> PluginError {
    match from_fs(err) {
        PluginError::InvalidSettings(m) => PluginError::InvalidSettings(format!("{disk}: {m}")),
        PluginError::Unsupported(m) => PluginError::Unsupported(format!("{disk}: {m}")),
        PluginError::CorruptSource(m) => PluginError::CorruptSource(format!("{disk}: {m}")),
        PluginError::Io(m) => PluginError::Io(format!("{disk}: {m}")),
        other => other,
    }
}

/// The contract's kind of a file-system entry.
pub(crate) fn entry_kind(entry: &FsEntry) -> EntryKind {
    match &entry.kind {
        FsKind::Directory => EntryKind::Directory,
        FsKind::File => EntryKind::File,
        FsKind::Symlink(target) => EntryKind::Symlink(target.clone()),
        FsKind::Other => match entry.mode.map(FileType::from_mode) {
            Some(FileType::Fifo) => EntryKind::Fifo,
            Some(FileType::CharDevice) => EntryKind::CharDevice,
            Some(FileType::BlockDevice) => EntryKind::BlockDeviceNode,
            Some(FileType::Socket) => EntryKind::Socket,
            // Nothing else is known of it: an opaque object.
            _ => EntryKind::Blob,
        },
    }
}

/// The contract's metadata of a file-system entry.
pub(crate) fn metadata(entry: &FsEntry) -> Metadata {
    Metadata {
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        mtime_ns: entry.mtime_ns,
        atime_ns: entry.atime_ns,
        ctime_ns: entry.ctime_ns,
        ..meta::bare(entry.size)
    }
}
