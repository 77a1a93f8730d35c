//! NTFS volumes (Windows), read through the `keramics-formats` crate: the master file
//! table, directory indexes, resident and non-resident data, sparse and compressed
//! streams, symbolic links and junctions.
//!
//! That crate reads from a `DataStream`, which must be `Send + Sync`. The readers here
//! are not (a disk read back from the vault is shared through `Rc`), so the stream given
//! to the crate holds only a slot number in a table of readers kept per thread; a
//! [`NtfsVolume`], like every [`Volume`](crate::Volume), stays on the thread that opened it.
//!
//! What the listing shows: the files and directories a user sees, without the metafiles
//! of the MFT's first sixteen records (`$MFT`, `$LogFile`, `$Bitmap`, ...). Windows
//! permissions are ACLs, not modes: entries carry none (as on FAT), and restored files
//! get the default modes. Times are the `$STANDARD_INFORMATION` ones: modified,
//! accessed, created, and the MFT record's change as the change time. Only the unnamed
//! data stream of a file is read; alternate data streams are not.

use std::cell::RefCell;
use std::io::SeekFrom;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::{Arc, RwLock};

use keramics_core::{DataStream, DataStreamReference, ErrorTrace};
use keramics_datetime::DateTime;
use keramics_formats::Path;
use keramics_formats::ntfs::{NtfsFileEntry, NtfsFileSystem};
use keramics_types::Ucs2String;
use tessera_disk_image::ReadAt;

use crate::path::{self, MAX_DEPTH};
use crate::{FsEntry, FsError, FsKind};

/// MFT records below this number are the file system's own metafiles.
const FIRST_USER_RECORD: u64 = 16;
/// Most entries returned by one listing.
const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Seconds from 1601-01-01 (FILETIME's epoch) to 1970-01-01.
const FILETIME_TO_UNIX: i64 = 11_644_473_600;

thread_local! {
    /// The readers behind the streams given to `keramics-formats`, by slot.
    static READERS: RefCell<Vec<Option<Box<dyn ReadAt>>>> = const { RefCell::new(Vec::new()) };
}

/// A reader put in [`READERS`] for as long as the stream that names its slot lives.
struct SlotStream {
    slot: usize,
    len: u64,
    offset: u64,
}

impl SlotStream {
    fn new(reader: Box<dyn ReadAt>) -> SlotStream {
        let len = reader.len();
        let slot = READERS.with(|readers| {
            let mut readers = readers.borrow_mut();
            match readers.iter().position(Option::is_none) {
                Some(free) => {
                    readers[free] = Some(reader);
                    free
                }
                None => {
                    readers.push(Some(reader));
                    readers.len() - 1
                }
            }
        });
        SlotStream {
            slot,
            len,
            offset: 0,
        }
    }
}

impl Drop for SlotStream {
    fn drop(&mut self) {
        // Nothing to free when the thread is already gone.
        let _ = READERS.try_with(|readers| readers.borrow_mut()[self.slot] = None);
    }
}

impl DataStream for SlotStream {
    fn get_offset(&mut self) -> Result<u64, ErrorTrace> {
        Ok(self.offset)
    }

    fn get_size(&mut self) -> Result<u64, ErrorTrace> {
        Ok(self.len)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorTrace> {
        let n = (<[u8]>::len(buf) as u64).min(self.len.saturating_sub(self.offset)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let offset = self.offset;
        READERS
            .with(|readers| match readers.borrow_mut().get_mut(self.slot) {
                Some(Some(reader)) => reader
                    .read_exact_at(offset, &mut buf[..n])
                    .map_err(|e| format!("read of {n} bytes at byte {offset} failed: {e}")),
                _ => Err("the volume's reader belongs to another thread".to_owned()),
            })
            .map_err(ErrorTrace::new)?;
        self.offset += n as u64;
        Ok(n)
    }

    fn seek(&mut self, pos: SeekFrom) -> Result<u64, ErrorTrace> {
        let to = match pos {
            SeekFrom::Start(to) => Some(to),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.offset.checked_add_signed(delta),
        };
        self.offset = to.ok_or_else(|| ErrorTrace::new(format!("seek to {pos:?} out of range")))?;
        Ok(self.offset)
    }
}

/// An open NTFS volume.
pub(crate) struct NtfsVolume {
    fs: NtfsFileSystem,
    what: String,
    /// Keeps the volume on the thread that holds its reader.
    _here: PhantomData<Rc<()>>,
}

impl NtfsVolume {
    pub(crate) fn open(reader: Box<dyn ReadAt>, what: &str) -> Result<Self, FsError> {
        let stream: DataStreamReference = Arc::new(RwLock::new(SlotStream::new(reader)));
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

    pub(crate) fn open_file(&mut self, path: &str) -> Result<NtfsFile, FsError> {
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
        Ok(NtfsFile {
            stream,
            what: self.what.clone(),
            path: path.to_owned(),
            size: entry.get_size(),
            pos: 0,
        })
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

/// A file's unnamed data stream.
pub(crate) struct NtfsFile {
    stream: Option<DataStreamReference>,
    what: String,
    path: String,
    size: u64,
    pos: u64,
}

impl NtfsFile {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, FsError> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let Some(stream) = &self.stream else {
            return Ok(0);
        };
        let want = (<[u8]>::len(buf) as u64).min(self.size - self.pos) as usize;
        let mut stream = stream.write().map_err(|_| {
            FsError::corrupt(
                &self.what,
                None,
                format!("{:?}: an earlier read failed", self.path),
            )
        })?;
        // The stream reads at most to the end of a run of clusters: read on to fill `buf`.
        let mut done = 0;
        while done < want {
            let n = stream
                .read_at_position(&mut buf[done..want], SeekFrom::Start(self.pos))
                .map_err(|e| {
                    FsError::corrupt(
                        &self.what,
                        None,
                        format!(
                            "NTFS: {:?} at byte {}: {}",
                            self.path,
                            self.pos,
                            last_message(&e)
                        ),
                    )
                })?;
            if n == 0 {
                break;
            }
            self.pos += n as u64;
            done += n;
        }
        Ok(done)
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

/// The innermost message of an error trace: what went wrong, without the frames above.
fn last_message(e: &ErrorTrace) -> String {
    let text = e.to_string();
    text.lines()
        .next()
        .map(|first| {
            first
                .trim_start_matches(|c: char| c == '#' || c.is_ascii_digit())
                .trim()
        })
        .unwrap_or("unreadable")
        .to_owned()
}
