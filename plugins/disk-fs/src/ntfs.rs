//! NTFS volumes (Windows), read through the `keramics-formats` crate: the master file
//! table, directory indexes, resident and non-resident data, sparse and compressed
//! streams, symbolic links and junctions.
//!
//! What the listing shows: the files and directories a user sees, without the metafiles
//! of the MFT's first sixteen records (`$MFT`, `$LogFile`, `$Bitmap`, ...). Windows
//! permissions are ACLs, not modes: entries carry none (as on FAT), and restored files
//! get the default modes. Times are the `$STANDARD_INFORMATION` ones: modified,
//! accessed, created, and the MFT record's change as the change time. Only the unnamed
//! data stream of a file is read; alternate data streams are not.

use std::marker::PhantomData;
use std::rc::Rc;

use keramics_core::ErrorTrace;
use keramics_datetime::DateTime;
use keramics_formats::Path;
use keramics_formats::ntfs::{NtfsFileEntry, NtfsFileSystem};
use keramics_types::Ucs2String;
use tessera_disk_image::ReadAt;

use crate::keramics_io::{self, StreamFile, last_message};
use crate::path::{self, MAX_DEPTH};
use crate::{FsEntry, FsError, FsKind};

/// MFT records below this number are the file system's own metafiles.
const FIRST_USER_RECORD: u64 = 16;
/// Most entries returned by one listing.
const MAX_DIR_ENTRIES: usize = 1 << 20;
/// The file attribute of a compressed file.
const FILE_ATTRIBUTE_COMPRESSED: u32 = 0x800;
/// Reads of a compressed file stay inside aligned pieces of this size (see
/// [`StreamFile::in_pieces`]).
const COMPRESSED_PIECE: u64 = 4096;
/// Seconds from 1601-01-01 (FILETIME's epoch) to 1970-01-01.
const FILETIME_TO_UNIX: i64 = 11_644_473_600;

/// An open NTFS volume.
pub(crate) struct NtfsVolume {
    fs: NtfsFileSystem,
    what: String,
    /// Keeps the volume on the thread that holds its reader.
    _here: PhantomData<Rc<()>>,
}

impl NtfsVolume {
    pub(crate) fn open(reader: Box<dyn ReadAt>, what: &str) -> Result<Self, FsError> {
        let stream = keramics_io::stream(reader);
        let mut fs = NtfsFileSystem::new();
        fs.read_data_stream(&stream)
            .map_err(|e| FsError::corrupt(what, None, format!("NTFS: {}", last_message(&e))))?;
        Ok(NtfsVolume {
            fs,
            what: what.to_owned(),
            _here: PhantomData,
        })
    }

    pub(crate) fn kind(&self) -> &'static str {
        "ntfs"
    }

    pub(crate) fn label(&self) -> Option<String> {
        let label = text(self.fs.get_volume_label()?);
        (!label.is_empty()).then_some(label)
    }

    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// The entry at `path` (a link itself, never followed).
    fn lookup(&self, path: &str) -> Result<NtfsFileEntry, FsError> {
        let parts = path::components(&self.what, path)?;
        if parts.len() > MAX_DEPTH {
            return Err(FsError::limit(
                &self.what,
                format!("path {path:?} is deeper than {MAX_DEPTH} components"),
            ));
        }
        let absolute = format!("/{}", parts.join("/"));
        let entry = self
            .fs
            .get_file_entry_by_path(&Path::from(absolute.as_str()))
            .map_err(|e| self.corrupt(path, &e))?;
        match entry {
            // A metafile is not shown, so it cannot be reached by name either.
            Some(entry) if !parts.is_empty() && is_metafile(&entry) => Err(self.not_found(path)),
            Some(entry) => Ok(entry),
            None => Err(self.not_found(path)),
        }
    }

    pub(crate) fn stat(&mut self, path: &str) -> Result<FsEntry, FsError> {
        let entry = self.lookup(path)?;
        let name = path
            .rsplit('/')
            .find(|p| !p.is_empty() && *p != ".")
            .unwrap_or("");
        Ok(fs_entry(name.to_owned(), &entry))
    }

    pub(crate) fn list(&mut self, path: &str) -> Result<Vec<FsEntry>, FsError> {
        let mut dir = self.lookup(path)?;
        if !dir.is_directory() || dir.is_symbolic_link() || dir.is_junction() {
            return Err(FsError::NotADirectory {
                what: self.what.clone(),
                path: path.to_owned(),
            });
        }
        let count = dir
            .get_number_of_sub_file_entries()
            .map_err(|e| self.corrupt(path, &e))?;
        if count > MAX_DIR_ENTRIES {
            return Err(FsError::limit(
                &self.what,
                format!("directory {path:?} has more than {MAX_DIR_ENTRIES} entries"),
            ));
        }
        let mut entries = Vec::with_capacity(count);
        for index in 0..count {
            let child = dir
                .get_sub_file_entry_by_index(index)
                .map_err(|e| self.corrupt(path, &e))?;
            if is_metafile(&child) {
                continue;
            }
            let Some(name) = child.get_name().map(text) else {
                continue;
            };
            // Names the paths of this crate cannot carry are left out rather than
            // passed on.
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                continue;
            }
            entries.push(fs_entry(name, &child));
        }
        Ok(entries)
    }

    pub(crate) fn open_file(&mut self, path: &str) -> Result<StreamFile, FsError> {
        let entry = self.lookup(path)?;
        if entry.is_directory() || entry.is_symbolic_link() || entry.is_junction() {
            return Err(FsError::NotAFile {
                what: self.what.clone(),
                path: path.to_owned(),
            });
        }
        let stream = entry
            .get_data_stream()
            .map_err(|e| self.corrupt(path, &e))?;
        let file = StreamFile::new(stream, &self.what, path, entry.get_size());
        Ok(
            if entry.get_file_attribute_flags() & FILE_ATTRIBUTE_COMPRESSED != 0 {
                file.in_pieces(COMPRESSED_PIECE)
            } else {
                file
            },
        )
    }

    fn not_found(&self, path: &str) -> FsError {
        FsError::NotFound {
            what: self.what.clone(),
            path: path.to_owned(),
        }
    }

    fn corrupt(&self, path: &str, e: &ErrorTrace) -> FsError {
        FsError::corrupt(
            &self.what,
            None,
            format!("NTFS: {path:?}: {}", last_message(e)),
        )
    }
}

/// Whether `entry` is one of the file system's own metafiles.
fn is_metafile(entry: &NtfsFileEntry) -> bool {
    entry.get_file_reference() & 0xffff_ffff_ffff < FIRST_USER_RECORD
}

/// The listing entry for `entry` under `name`.
fn fs_entry(name: String, entry: &NtfsFileEntry) -> FsEntry {
    let kind = if entry.is_symbolic_link() || entry.is_junction() {
        let target = entry
            .get_symbolic_link_target()
            .map(text)
            .unwrap_or_default();
        // A relative target is restored as a Linux path; an absolute one (a drive letter,
        // `\??\` or a share) means nothing outside Windows and is kept as stored.
        let relative = !target.starts_with('\\') && !target.contains(':');
        FsKind::Symlink(if relative {
            target.replace('\\', "/")
        } else {
            target
        })
    } else if entry.is_directory() {
        FsKind::Directory
    } else {
        FsKind::File
    };
    let size = if matches!(kind, FsKind::File) {
        entry.get_size()
    } else {
        0
    };
    FsEntry {
        name,
        kind,
        size,
        mode: None,
        uid: None,
        gid: None,
        mtime_ns: entry.get_modification_time().and_then(nanos),
        atime_ns: entry.get_access_time().and_then(nanos),
        ctime_ns: entry.get_entry_modification_time().and_then(nanos),
        btime_ns: entry.get_creation_time().and_then(nanos),
    }
}

/// Nanoseconds since the Unix epoch of an NTFS time (100 ns since 1601).
fn nanos(time: &DateTime) -> Option<i64> {
    match time {
        DateTime::Filetime(filetime) => {
            let ticks = i64::try_from(filetime.timestamp).ok()?;
            let seconds = ticks / 10_000_000 - FILETIME_TO_UNIX;
            seconds
                .checked_mul(1_000_000_000)?
                .checked_add(ticks % 10_000_000 * 100)
        }
        _ => None,
    }
}

/// A UTF-16 name as text; unpaired surrogates become U+FFFD.
fn text(name: &Ucs2String) -> String {
    let units: Vec<u16> = name.decode().into_iter().map(|unit| unit as u16).collect();
    String::from_utf16_lossy(&units)
}
