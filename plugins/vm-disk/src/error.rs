//! Turning the failures of the image, NBD and file-system readers into the contract's
//! `plugin-error`, sorted by what the operator can do about them: bad data in an image is
//! `corrupt-source`, a feature this plugin lacks is `unsupported`, a file or server that
//! cannot be reached is `source-unavailable`, and a failed read or write is `io`. Every
//! message starts with the disk (or volume) it concerns; the readers' own messages add
//! the offset.

use tessera_disk_fs::FsError;
use tessera_disk_image::{ImageError, ImageErrorKind, WriteError};
use tessera_nbd::{NbdError, NbdErrorKind};
use tessera_plugin_sdk::error::host_error_text;
use tessera_plugin_sdk::prelude::*;

/// The plugin error for an image that failed to open or read, on the disk `disk`.
pub(crate) fn from_image(disk: &str, err: &ImageError) -> PluginError {
    let message = format!("{disk}: {err}");
    match err.kind() {
        ImageErrorKind::Io { .. } => PluginError::Io(message),
        ImageErrorKind::Unsupported { .. } => PluginError::Unsupported(message),
        ImageErrorKind::InUse
        | ImageErrorKind::Bitmap { .. }
        | ImageErrorKind::BackingUnavailable { .. }
        | ImageErrorKind::ExtentUnavailable { .. } => PluginError::SourceUnavailable(message),
        // A read past the end of a disk is a request this plugin should never make.
        ImageErrorKind::OutOfRange { .. } => PluginError::Internal(message),
        _ => PluginError::CorruptSource(message),
    }
}

/// Where in a session an NBD error happened: connecting, or moving data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NbdPhase {
    /// Connecting and negotiating.
    Connect,
    /// Reading, writing or asking for block status.
    Transfer,
}

/// The plugin error for a failed NBD call on the disk `disk`.
pub(crate) fn from_nbd(disk: &str, phase: NbdPhase, err: &NbdError) -> PluginError {
    let message = format!("{disk}: {err}");
    match err.kind() {
        NbdErrorKind::Unsupported { .. } => PluginError::Unsupported(message),
        NbdErrorKind::OutOfRange { .. }
        | NbdErrorKind::ContextNotNegotiated { .. }
        | NbdErrorKind::InvalidArgument { .. } => PluginError::Internal(message),
        NbdErrorKind::Refused { .. }
        | NbdErrorKind::UnknownExport { .. }
        | NbdErrorKind::ContextNotGranted { .. } => PluginError::SourceUnavailable(message),
        _ if phase == NbdPhase::Connect => PluginError::SourceUnavailable(message),
        _ => PluginError::Io(message),
    }
}

/// The plugin error for a partition table or file system that could not be read.
pub(crate) fn from_fs(err: &FsError) -> PluginError {
    match err {
        FsError::NotFound { what, path } => {
            PluginError::InvalidSettings(format!("{what}: no such file or directory: {path}"))
        }
        FsError::NotADirectory { what, path } => {
            PluginError::InvalidSettings(format!("{what}: not a directory: {path}"))
        }
        FsError::NotAFile { what, path } => {
            PluginError::InvalidSettings(format!("{what}: not a regular file: {path}"))
        }
        FsError::InvalidPath { .. } => PluginError::InvalidSettings(err.to_string()),
        FsError::Unsupported { .. } | FsError::UnknownFilesystem { .. } => {
            PluginError::Unsupported(err.to_string())
        }
        FsError::Io { .. } => PluginError::Io(err.to_string()),
        _ => PluginError::CorruptSource(err.to_string()),
    }
}

/// The plugin error for a disk image (qcow2, VHDX) that could not be written at `path`.
pub(crate) fn from_image_write(path: &str, err: &WriteError) -> PluginError {
    match err {
        WriteError::Io(io) => PluginError::Io(format!("writing {path}: {io}")),
        other => PluginError::Internal(format!("writing {path}: {other}")),
    }
}

/// A host error as an I/O error, for readers that speak `std::io`.
pub(crate) fn host_to_io(context: &str, err: &HostError) -> std::io::Error {
    std::io::Error::other(format!("{context}: {}", host_error_text(err)))
}
