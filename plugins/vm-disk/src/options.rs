//! Reading a job's settings into [`CaptureOptions`] and [`RestoreOptions`]. The host checks
//! setting names and kinds; values are still checked here, and every bad value is an
//! `invalid-settings` error naming the setting, the value and what is accepted.

use tessera_disk_image::Format;
use tessera_plugin_sdk::prelude::*;
use tessera_plugin_sdk::settings::Settings;

use crate::layout;
use crate::{BITMAP, CHUNK_SIZE, CONFIG, DISK, EXCLUDE_DISK, FORMAT, IMAGE_FORMAT};

/// Default fixed chunk size of a disk's stream: 64 KiB, qcow2's default cluster size, so
/// a guest write dirties as few chunks as it dirties clusters.
pub(crate) const DEFAULT_CHUNK_SIZE: u32 = 64 << 10;
/// Smallest chunk size accepted: a page, the unit guests write in.
const MIN_CHUNK_SIZE: i64 = 4 << 10;
/// Largest chunk size accepted: beyond it, one changed byte costs too much to store again.
const MAX_CHUNK_SIZE: i64 = 4 << 20;

/// What a capture job was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CaptureOptions {
    /// The format of file sources; `None` probes each file.
    pub(crate) image_format: Option<Format>,
    /// The name of the dirty bitmap to read: a qcow2 image's persistent bitmap, or the one
    /// an NBD server exports.
    pub(crate) bitmap: Option<String>,
    /// The fixed chunk size, a power of two.
    pub(crate) chunk_size: u32,
    /// The sandbox path of the configuration document to store.
    pub(crate) config: Option<String>,
    /// The positions in the request's sources of the disks to capture, in order.
    pub(crate) disks: Vec<usize>,
}

impl CaptureOptions {
    /// The NBD metadata context of the dirty bitmap to read (`qemu:dirty-bitmap:NAME`).
    pub(crate) fn bitmap_context(&self) -> Option<String> {
        let name = self.bitmap.as_ref()?;
        Some(format!("{}{name}", tessera_nbd::QEMU_DIRTY_BITMAP_PREFIX))
    }

    /// Reads the settings of a capture of `source_count` sources.
    pub(crate) fn parse(
        settings: &Settings<'_>,
        source_count: usize,
    ) -> Result<CaptureOptions, PluginError> {
        let image_format = match settings.get(IMAGE_FORMAT)?.map(str::trim) {
            None | Some("auto") => None,
            Some("raw") => Some(Format::Raw),
            Some("qcow2") => Some(Format::Qcow2),
            Some("vhd" | "vpc") => Some(Format::Vhd),
            Some("vhdx") => Some(Format::Vhdx),
            Some("vmdk") => Some(Format::Vmdk),
            Some("vdi") => Some(Format::Vdi),
            Some(other) => {
                return Err(invalid(format!(
                    "setting `{IMAGE_FORMAT}` must be auto, raw, qcow2, vhd, vhdx, vmdk or vdi, \
                     not {other:?}"
                )));
            }
        };
        let bitmap = match settings.get(BITMAP)? {
            None => None,
            Some(name) if name.trim().is_empty() || name.contains('\0') => {
                return Err(invalid(format!(
                    "setting `{BITMAP}` must name a dirty bitmap, not {name:?}"
                )));
            }
            Some(name) => Some(name.trim().to_owned()),
        };
        let chunk_size = parse_chunk_size(settings.int(CHUNK_SIZE, DEFAULT_CHUNK_SIZE.into())?)?;
        let config = settings.get(CONFIG)?.map(str::to_owned);
        let disks = select_disks(
            &settings.all(DISK),
            &settings.all(EXCLUDE_DISK),
            source_count,
        )?;
        Ok(CaptureOptions {
            image_format,
            bitmap,
            chunk_size,
            config,
            disks,
        })
    }
}

/// Checks a chunk size: a power of two from 4 KiB to 4 MiB.
fn parse_chunk_size(value: i64) -> Result<u32, PluginError> {
    let fits = (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&value)
        && u64::try_from(value).is_ok_and(u64::is_power_of_two);
    match u32::try_from(value) {
        Ok(size) if fits => Ok(size),
        _ => Err(invalid(format!(
            "setting `{CHUNK_SIZE}` must be a power of two from {MIN_CHUNK_SIZE} to \
             {MAX_CHUNK_SIZE} bytes, not {value}"
        ))),
    }
}

/// The positions of the disks to capture: those named by `disk` (all when none is), less
/// those named by `exclude-disk`.
fn select_disks(
    include: &[&str],
    exclude: &[&str],
    source_count: usize,
) -> Result<Vec<usize>, PluginError> {
    if source_count == 0 {
        return Err(PluginError::SourceUnavailable(
            "the request names no source: give one image file or nbd:// URL per disk".to_owned(),
        ));
    }
    let known = || {
        (0..source_count)
            .map(layout::disk_name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let index = |setting: &str, name: &str| -> Result<usize, PluginError> {
        match layout::disk_index(name.trim()) {
            Some(index) if index < source_count => Ok(index),
            _ => Err(invalid(format!(
                "setting `{setting}` names {name:?}, but the disks are {} (one per source, \
                 in the order given)",
                known()
            ))),
        }
    };
    let mut selected = vec![include.is_empty(); source_count];
    for name in include {
        let i = index(DISK, name)?;
        if let Some(slot) = selected.get_mut(i) {
            *slot = true;
        }
    }
    for name in exclude {
        let i = index(EXCLUDE_DISK, name)?;
        if let Some(slot) = selected.get_mut(i) {
            *slot = false;
        }
    }
    let disks: Vec<usize> = (0..source_count).filter(|&i| selected[i]).collect();
    if disks.is_empty() {
        return Err(invalid(format!(
            "settings `{DISK}` and `{EXCLUDE_DISK}` leave no disk to back up (the disks are {})",
            known()
        )));
    }
    Ok(disks)
}

/// The format a disk is restored in, into a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiskFormat {
    /// A sparse raw file, `diskN.raw`.
    Raw,
    /// A qcow2 image, `diskN.qcow2`.
    Qcow2,
    /// A fixed VHD, `diskN.vhd`: the sparse raw disk and a footer, as Azure takes disks.
    Vhd,
    /// A dynamic VHDX, `diskN.vhdx`, as Hyper-V's generation 2 machines need.
    Vhdx,
    /// A VMware disk, `diskN.vmdk`: a `monolithicFlat` descriptor naming the sparse raw
    /// disk beside it, `diskN-flat.vmdk`, as VMware Workstation opens and ESXi imports.
    Vmdk,
}

impl DiskFormat {
    /// The file name extension of a disk restored in this format.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vmdk => "vmdk",
        }
    }
}

/// What a restore job was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestoreOptions {
    /// The format of disks restored into a directory.
    pub(crate) format: DiskFormat,
}

impl RestoreOptions {
    /// Reads the settings of a restore.
    pub(crate) fn parse(settings: &Settings<'_>) -> Result<RestoreOptions, PluginError> {
        let format = match settings.get(FORMAT)?.map(str::trim) {
            None | Some("raw") => DiskFormat::Raw,
            Some("qcow2") => DiskFormat::Qcow2,
            Some("vhd") => DiskFormat::Vhd,
            Some("vhdx") => DiskFormat::Vhdx,
            Some("vmdk") => DiskFormat::Vmdk,
            Some(other) => {
                return Err(invalid(format!(
                    "setting `{FORMAT}` must be raw, qcow2, vhd, vhdx or vmdk, not {other:?}"
                )));
            }
        };
        Ok(RestoreOptions { format })
    }
}

fn invalid(message: String) -> PluginError {
    PluginError::InvalidSettings(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<Setting> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn capture(list: &[(&str, &str)], sources: usize) -> Result<CaptureOptions, PluginError> {
        let pairs = pairs(list);
        CaptureOptions::parse(&Settings::new(&pairs), sources)
    }

    #[test]
    fn defaults() {
        let options = capture(&[], 2).unwrap();
        assert_eq!(options.image_format, None);
        assert_eq!(options.bitmap, None);
        assert_eq!(options.bitmap_context(), None);
        assert_eq!(options.chunk_size, 65536);
        assert_eq!(options.config, None);
        assert_eq!(options.disks, [0, 1]);
    }

    #[test]
    fn reads_every_setting() {
        let options = capture(
            &[
                ("image-format", "qcow2"),
                ("bitmap", "b0"),
                ("chunk-size", "1048576"),
                ("config", "source/vm.xml"),
            ],
            1,
        )
        .unwrap();
        assert_eq!(options.image_format, Some(Format::Qcow2));
        assert_eq!(
            options.bitmap_context().as_deref(),
            Some("qemu:dirty-bitmap:b0")
        );
        assert_eq!(options.chunk_size, 1 << 20);
        assert_eq!(options.config.as_deref(), Some("source/vm.xml"));
    }

    #[test]
    fn chunk_sizes_are_powers_of_two_in_range() {
        for good in ["4096", "65536", "4194304"] {
            assert!(capture(&[("chunk-size", good)], 1).is_ok(), "{good}");
        }
        for bad in ["0", "2048", "65535", "8388608", "-4096", "x"] {
            assert!(
                matches!(
                    capture(&[("chunk-size", bad)], 1),
                    Err(PluginError::InvalidSettings(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn selects_disks_by_name() {
        let options = capture(&[("disk", "disk2"), ("disk", "disk0")], 3).unwrap();
        assert_eq!(options.disks, [0, 2]);
        let options = capture(&[("exclude-disk", "disk1")], 3).unwrap();
        assert_eq!(options.disks, [0, 2]);
        let err = capture(&[("disk", "disk3")], 3).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidSettings(m) if m.contains("disk0, disk1, disk2")),
            "{err:?}"
        );
        assert!(capture(&[("exclude-disk", "disk0")], 1).is_err());
        assert!(capture(&[], 0).is_err());
    }

    #[test]
    fn refuses_unknown_formats() {
        assert!(capture(&[("image-format", "qed")], 1).is_err());
        let options = capture(&[("image-format", "vdi")], 1).unwrap();
        assert_eq!(options.image_format, Some(Format::Vdi));
        let options = capture(&[("image-format", "vmdk")], 1).unwrap();
        assert_eq!(options.image_format, Some(Format::Vmdk));
        for vhd in ["vhd", "vpc"] {
            let options = capture(&[("image-format", vhd)], 1).unwrap();
            assert_eq!(options.image_format, Some(Format::Vhd));
        }
        let vhd = pairs(&[("format", "vhd")]);
        assert_eq!(
            RestoreOptions::parse(&Settings::new(&vhd)).unwrap().format,
            DiskFormat::Vhd
        );
        let options = capture(&[("image-format", "vhdx")], 1).unwrap();
        assert_eq!(options.image_format, Some(Format::Vhdx));
        let pairs = pairs(&[("format", "qcow2")]);
        assert_eq!(
            RestoreOptions::parse(&Settings::new(&pairs))
                .unwrap()
                .format,
            DiskFormat::Qcow2
        );
        let pairs = self::pairs(&[("format", "vhdx")]);
        assert_eq!(
            RestoreOptions::parse(&Settings::new(&pairs))
                .unwrap()
                .format,
            DiskFormat::Vhdx
        );
        let pairs = self::pairs(&[("format", "vmdk")]);
        assert_eq!(
            RestoreOptions::parse(&Settings::new(&pairs))
                .unwrap()
                .format,
            DiskFormat::Vmdk
        );
        let pairs = self::pairs(&[("format", "vdi")]);
        let err = RestoreOptions::parse(&Settings::new(&pairs)).unwrap_err();
        assert!(format!("{err:?}").contains("vmdk"), "{err:?}");
    }
}
