//! Errors of opening and reading disk images. Every error names the disk it concerns, as the
//! caller named it, and the byte offset in the image file when one applies, so that a failed
//! job says which file is damaged and where.

use std::fmt;
use std::io;

/// A failure to open or read a disk image: the disk's name and what went wrong.
///
/// Displays as `NAME: WHAT`, for example
/// `disk0 (vm.qcow2): L2 table at offset 0x30000 (65536 bytes) extends past the end of the file (196608 bytes); the image is truncated or corrupt`.
#[derive(Debug)]
pub struct ImageError {
    disk: String,
    kind: ImageErrorKind,
}

impl ImageError {
    /// An error about the disk named `disk`.
    pub fn new(disk: impl Into<String>, kind: ImageErrorKind) -> Self {
        ImageError {
            disk: disk.into(),
            kind,
        }
    }

    /// The name of the disk the error concerns: the top image's name, or a backing file's
    /// resolved name when the fault lies in the backing file.
    pub fn disk(&self) -> &str {
        &self.disk
    }

    /// What went wrong.
    pub fn kind(&self) -> &ImageErrorKind {
        &self.kind
    }

    /// Consumes the error, returning what went wrong.
    pub fn into_kind(self) -> ImageErrorKind {
        self.kind
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.disk, self.kind)
    }
}

impl std::error::Error for ImageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// What went wrong with a disk image. Offsets are byte offsets in the image file unless the
/// field says `guest`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageErrorKind {
    /// The underlying source failed to deliver bytes it claims to hold.
    #[error("reading {length} bytes at offset {offset:#x} failed: {cause}")]
    Io {
        /// Where the read started.
        offset: u64,
        /// How many bytes were asked for.
        length: u64,
        /// The source's error.
        cause: io::Error,
    },

    /// A structure the image refers to lies partly or wholly past the end of the file.
    #[error(
        "{what} at offset {offset:#x} ({length} bytes) extends past the end of the file \
         ({file_size} bytes); the image is truncated or corrupt"
    )]
    BeyondEnd {
        /// The structure: "qcow2 header", "L2 table", "data cluster", ...
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// How long it is.
        length: u64,
        /// The file's length.
        file_size: u64,
    },

    /// A structure that must start on a boundary does not.
    #[error(
        "{what} at offset {offset:#x} is not aligned to {alignment} bytes; the image is corrupt"
    )]
    Misaligned {
        /// The structure.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// The boundary it must start on.
        alignment: u64,
    },

    /// A field holds a value the format forbids or this reader refuses as absurd (limits guard
    /// against images crafted to exhaust memory).
    #[error("{reason}{}", at(*.offset))]
    Corrupt {
        /// Where the field lies, when known.
        offset: Option<u64>,
        /// What is wrong with it.
        reason: String,
    },

    /// A compressed cluster does not decompress to a full cluster.
    #[error(
        "compressed cluster at offset {offset:#x} ({length} bytes) does not decompress: {reason}"
    )]
    Decompress {
        /// Where the compressed bytes start.
        offset: u64,
        /// How many compressed bytes were read.
        length: u64,
        /// The decoder's complaint.
        reason: String,
    },

    /// The image uses a feature this reader does not implement.
    #[error("{what}")]
    Unsupported {
        /// A sentence naming the feature and, where there is one, what the user can do
        /// instead.
        what: String,
    },

    /// The qcow2 dirty bit is set: the image is open in a running VM, or was not closed cleanly.
    #[error(
        "the image is marked dirty: it is in use by a running VM or was not closed cleanly; \
         shut the VM down (or snapshot it and back up the snapshot), or repair it with \
         `qemu-img check -r all`"
    )]
    InUse,

    /// A persistent dirty bitmap cannot tell what changed: the image has none of that
    /// name, or it may miss writes (in use, disabled, invalidated).
    #[error("dirty bitmap {bitmap:?}: {reason}")]
    Bitmap {
        /// The bitmap's name as asked for.
        bitmap: String,
        /// Why it cannot be used, and what to do instead.
        reason: String,
    },

    /// The qcow2 corrupt bit is set: QEMU found its metadata inconsistent.
    #[error("the image is marked corrupt by QEMU; repair it with `qemu-img check -r all` first")]
    MarkedCorrupt,

    /// A read asked for guest bytes past the end of the virtual disk.
    #[error(
        "read of {length} bytes at guest offset {offset:#x} passes the end of the disk ({size} bytes)"
    )]
    OutOfRange {
        /// Where the read started on the guest disk.
        offset: u64,
        /// How many bytes were asked for.
        length: u64,
        /// The virtual disk's size.
        size: u64,
    },

    /// The backing chain refers back to an image already in it.
    #[error("backing chain loops: {}", .chain.join(" -> "))]
    BackingLoop {
        /// The resolved names from the top image to the repeated one.
        chain: Vec<String>,
    },

    /// The backing chain is longer than the reader allows.
    #[error("backing chain is deeper than {max} images: {}", .chain.join(" -> "))]
    BackingTooDeep {
        /// The limit.
        max: usize,
        /// The resolved names from the top image on.
        chain: Vec<String>,
    },

    /// A backing file the image needs could not be opened (reported by the opener).
    #[error("backing file {backing:?} cannot be opened: {reason}")]
    BackingUnavailable {
        /// The backing file's name as the image records it.
        backing: String,
        /// Why it cannot be opened.
        reason: String,
    },

    /// An extent file of a VMDK disk could not be opened (reported by the opener).
    #[error("extent file {extent:?} cannot be opened: {reason}")]
    ExtentUnavailable {
        /// The extent file's name as the descriptor records it.
        extent: String,
        /// Why it cannot be opened.
        reason: String,
    },
}

/// " at offset 0x..." for messages about a field whose place may be unknown.
fn at(offset: Option<u64>) -> String {
    offset.map_or_else(String::new, |o| format!(" (at offset {o:#x})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_disk_and_the_offset() {
        let e = ImageError::new(
            "disk0 (vm.qcow2)",
            ImageErrorKind::BeyondEnd {
                what: "L2 table",
                offset: 0x30000,
                length: 65536,
                file_size: 196608,
            },
        );
        assert_eq!(
            e.to_string(),
            "disk0 (vm.qcow2): L2 table at offset 0x30000 (65536 bytes) extends past the end \
             of the file (196608 bytes); the image is truncated or corrupt"
        );
        let e = ImageError::new(
            "d",
            ImageErrorKind::Corrupt {
                offset: Some(20),
                reason: "cluster_bits is 40".into(),
            },
        );
        assert_eq!(e.to_string(), "d: cluster_bits is 40 (at offset 0x14)");
    }
}
