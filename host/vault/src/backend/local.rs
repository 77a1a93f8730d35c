//! A vault on a local (or mounted) file system.
//!
//! Objects are written to a temporary name in their final directory, flushed with `fsync`,
//! renamed into place and the directory is synced, so a crash leaves either the whole object
//! or a temporary file that listing ignores. Packs are spread over 256 subdirectories by the
//! first two hex digits of their name so no directory grows too large.

use std::fs::{self, File};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::spool_file::{SpoolFile, StagePool};
use super::{Backend, BackendError, FileKind, ObjectInfo, Spool};

/// Suffix of files being written; listing skips them and prune may delete stale ones.
const TEMP_SUFFIX: &str = ".tmp";

/// A backend storing objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    /// Buffers of finished spools, kept for the next ones.
    stages: Arc<StagePool>,
    /// Packs read lately, kept open: a restore reads many small blobs from each pack.
    open_packs: Arc<OpenPacks>,
}

/// Packs kept open for ranged reads with their sizes, most recently used first. A pack
/// never changes once written (its name is the hash of its header), so both stay good; a
/// pack cut short behind the vault's back shows as a short read.
#[derive(Debug, Default)]
struct OpenPacks(Mutex<Vec<(String, Arc<File>, u64)>>);

impl OpenPacks {
    /// Open packs kept at most.
    const KEPT: usize = 32;

    /// The open pack `name` and its size when opened.
    fn get(&self, name: &str) -> Option<(Arc<File>, u64)> {
        let mut packs = self.0.lock().ok()?;
        let at = packs.iter().position(|(n, ..)| n == name)?;
        let entry = packs.remove(at);
        let open = (Arc::clone(&entry.1), entry.2);
        packs.insert(0, entry);
        Some(open)
    }

    fn put(&self, name: &str, file: Arc<File>, size: u64) {
        if let Ok(mut packs) = self.0.lock() {
            packs.retain(|(n, ..)| n != name);
            packs.insert(0, (name.to_string(), file, size));
            packs.truncate(Self::KEPT);
        }
    }

    fn forget(&self, name: &str) {
        if let Ok(mut packs) = self.0.lock() {
            packs.retain(|(n, ..)| n != name);
        }
    }
}

impl LocalBackend {
    /// A backend rooted at `root`. Nothing is touched until [`Backend::create`] or a read.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            stages: Arc::default(),
            open_packs: Arc::default(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            FileKind::Config => self.root.clone(),
            FileKind::Pack => self
                .root
                .join(kind.prefix())
                .join(name.get(..2).unwrap_or("__")),
            _ => self.root.join(kind.prefix()),
        }
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        self.dir(kind, name).join(name)
    }

    fn io(op: &'static str, path: &Path, source: io::Error) -> BackendError {
        BackendError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    fn not_found(&self, kind: FileKind, name: &str) -> BackendError {
        BackendError::NotFound {
            kind,
            name: name.to_string(),
            location: self.location(),
        }
    }

    fn open(&self, kind: FileKind, name: &str) -> Result<File, BackendError> {
        let path = self.path(kind, name);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => self.not_found(kind, name),
            _ => Self::io("open", &path, e),
        })
    }

    /// Writes an object under a temporary name and renames it into place; `durable`
    /// flushes the file and then its directory to the disk.
    fn write_file(
        &self,
        kind: FileKind,
        name: &str,
        parts: &[&[u8]],
        durable: bool,
    ) -> Result<(), BackendError> {
        let dir = self.dir(kind, name);
        let path = dir.join(name);
        let suffix = hex::encode(crate::id::random_bytes::<6>());
        let temp = dir.join(format!(".{name}.{suffix}{TEMP_SUFFIX}"));
        let result = (|| {
            let mut file = match File::create(&temp) {
                // A vault made before this kind of object existed lacks its directory.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(&dir)?;
                    File::create(&temp)?
                }
                other => other?,
            };
            write_all_vectored(&mut file, parts)?;
            if durable {
                file.sync_all()?;
            }
            drop(file);
            fs::rename(&temp, &path)?;
            if durable {
                sync_dir(&dir)?;
            }
            Ok(())
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&temp);
            Self::io("write", &path, e)
        })
    }
}

fn write_all_vectored(file: &mut File, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn list_dir(dir: &Path, out: &mut Vec<ObjectInfo>) -> Result<(), BackendError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LocalBackend::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| LocalBackend::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMP_SUFFIX) || name.starts_with('.') {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| LocalBackend::io("list", &entry.path(), e))?;
        if meta.is_file() {
            out.push(ObjectInfo {
                name: name.to_string(),
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// A spool file under the kind's directory, renamed into place when committed: the
/// object's bytes are written once and never held in memory.
#[derive(Debug)]
struct FileSpool {
    root: LocalBackend,
    kind: FileKind,
    /// `None` once committed.
    file: Option<SpoolFile>,
    path: PathBuf,
    len: u64,
}

impl Spool for FileSpool {
    fn append(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let file = self.file.as_mut().expect("appends only before the commit");
        file.append(data)
            .map_err(|e| LocalBackend::io("write", &self.path, e))?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn append_in_place(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<Option<usize>, BackendError> {
        let file = self.file.as_mut().expect("appends only before the commit");
        let kept = file
            .append_in_place(len, fill)
            .map_err(|e| LocalBackend::io("write", &self.path, e))?;
        self.len += kept.unwrap_or(0) as u64;
        Ok(kept)
    }

    fn commit(mut self: Box<Self>, _: &dyn Backend, name: &str) -> Result<(), BackendError> {
        let file = self.file.take().expect("committed once");
        let dir = self.root.dir(self.kind, name);
        let target = dir.join(name);
        let result = (|| {
            let file = file.finish()?;
            file.sync_all()?;
            drop(file);
            fs::rename(&self.path, &target)?;
            sync_dir(&dir)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&self.path);
            LocalBackend::io("write", &target, e)
        })
    }
}

impl Drop for FileSpool {
    fn drop(&mut self) {
        // Abandoned: its bytes are no object.
        if let Some(file) = self.file.take() {
            drop(file);
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<(), BackendError> {
        for kind in FileKind::ALL {
            let dir = self.root.join(kind.prefix());
            fs::create_dir_all(&dir).map_err(|e| Self::io("create", &dir, e))?;
        }
        for byte in 0..=255u8 {
            let dir = self
                .root
                .join(FileKind::Pack.prefix())
                .join(format!("{byte:02x}"));
            fs::create_dir_all(&dir).map_err(|e| Self::io("create", &dir, e))?;
        }
        Ok(())
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.write_parts(kind, name, &[data])
    }

    fn write_relaxed(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.write_file(kind, name, &[data], false)
    }

    fn write_parts(&self, kind: FileKind, name: &str, parts: &[&[u8]]) -> Result<(), BackendError> {
        self.write_file(kind, name, parts, true)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, BackendError> {
        let path = self.path(kind, name);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => self.not_found(kind, name),
            _ => Self::io("read", &path, e),
        })
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let path = || self.path(kind, name);
        let size_of = |file: &File| {
            file.metadata()
                .map(|meta| meta.len())
                .map_err(|e| Self::io("read", &path(), e))
        };
        let (file, size) = match kind {
            FileKind::Pack => match self.open_packs.get(name) {
                Some(open) => open,
                None => {
                    let file = Arc::new(self.open(kind, name)?);
                    let size = size_of(&file)?;
                    self.open_packs.put(name, Arc::clone(&file), size);
                    (file, size)
                }
            },
            _ => {
                let file = Arc::new(self.open(kind, name)?);
                let size = size_of(&file)?;
                (file, size)
            }
        };
        let end = offset.saturating_add(len);
        let truncated = |size| BackendError::Truncated {
            kind,
            name: name.to_string(),
            offset,
            end,
            size,
        };
        if end > size {
            return Err(truncated(size));
        }
        let mut buf = vec![0u8; len as usize];
        match file.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            // Cut short since it was opened: said as if it had been short from the start.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.open_packs.forget(name);
                Err(truncated(size_of(&file)?))
            }
            Err(e) => Err(Self::io("read", &path(), e)),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>, BackendError> {
        let mut out = Vec::new();
        match kind {
            FileKind::Config => {
                let path = self.path(kind, "config");
                if let Ok(meta) = fs::metadata(&path) {
                    out.push(ObjectInfo {
                        name: "config".into(),
                        size: meta.len(),
                    });
                }
            }
            FileKind::Pack => {
                let root = self.root.join(kind.prefix());
                for byte in 0..=255u8 {
                    list_dir(&root.join(format!("{byte:02x}")), &mut out)?;
                }
            }
            _ => list_dir(&self.root.join(kind.prefix()), &mut out)?,
        }
        Ok(out)
    }

    fn spool(&self, kind: FileKind) -> Result<Box<dyn Spool>, BackendError> {
        let dir = self.root.join(kind.prefix());
        let suffix = hex::encode(crate::id::random_bytes::<8>());
        let path = dir.join(format!(".spool-{suffix}{TEMP_SUFFIX}"));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Self::io("create", &path, e))?;
        let file = SpoolFile::start(file, &path, Arc::clone(&self.stages)).map_err(|e| {
            let _ = fs::remove_file(&path);
            Self::io("start writing", &path, e)
        })?;
        Ok(Box::new(FileSpool {
            root: self.clone(),
            kind,
            file: Some(file),
            path,
            len: 0,
        }))
    }

    fn remove_stale_spools(
        &self,
        kind: FileKind,
        idle_for: std::time::Duration,
    ) -> Result<u64, BackendError> {
        let dir = self.root.join(kind.prefix());
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Self::io("list", &dir, e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with(".spool-") && name.ends_with(TEMP_SUFFIX)) {
                continue;
            }
            let idle = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= idle_for);
            if idle && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), BackendError> {
        if kind == FileKind::Pack {
            self.open_packs.forget(name);
        }
        let path = self.path(kind, name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io("delete", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spools_become_objects_or_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        let name = "ab".repeat(32);
        let mut spool = backend.spool(FileKind::Pack).unwrap();
        spool.append(b"hello ").unwrap();
        spool.append(b"pack").unwrap();
        assert_eq!(spool.len(), 10);
        // Nothing is listed until the commit.
        assert!(backend.list(FileKind::Pack).unwrap().is_empty());
        spool.commit(&backend, &name).unwrap();
        assert_eq!(backend.read(FileKind::Pack, &name).unwrap(), b"hello pack");

        let mut abandoned = backend.spool(FileKind::Pack).unwrap();
        abandoned.append(b"never committed").unwrap();
        drop(abandoned);
        let leftovers = fs::read_dir(dir.path().join("data"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".spool")
            })
            .count();
        assert_eq!(leftovers, 0);

        // A spool a killed writer left behind goes once it has been idle long enough.
        let killed = backend.spool(FileKind::Pack).unwrap();
        std::mem::forget(killed);
        let idle = std::time::Duration::from_secs(3600);
        assert_eq!(
            backend.remove_stale_spools(FileKind::Pack, idle).unwrap(),
            0
        );
        let zero = std::time::Duration::ZERO;
        assert_eq!(
            backend.remove_stale_spools(FileKind::Pack, zero).unwrap(),
            1
        );
    }

    #[test]
    fn packs_kept_open_still_report_truncation_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        let names: Vec<String> = (0..OpenPacks::KEPT + 3)
            .map(|i| format!("{i:02x}").repeat(32))
            .collect();
        for name in &names {
            backend
                .write(FileKind::Pack, name, name.as_bytes())
                .unwrap();
        }
        // More packs than are kept open, each read twice: every read sees its own bytes.
        for _ in 0..2 {
            for name in &names {
                let bytes = backend.read_range(FileKind::Pack, name, 2, 6).unwrap();
                assert_eq!(bytes, name.as_bytes()[2..8]);
            }
        }
        let kept = backend.open_packs.0.lock().unwrap().len();
        assert_eq!(kept, OpenPacks::KEPT);

        // Cut short behind the open file's back: the read says so.
        let last = names.last().unwrap();
        let path = backend.path(FileKind::Pack, last);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4)
            .unwrap();
        let err = backend.read_range(FileKind::Pack, last, 2, 6).unwrap_err();
        assert!(matches!(err, BackendError::Truncated { .. }), "{err}");

        // Removed: no longer readable, though it was open.
        backend.remove(FileKind::Pack, last).unwrap();
        let err = backend.read_range(FileKind::Pack, last, 0, 2).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn relaxed_writes_replace_objects_whole_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        let name = "cd".repeat(32);
        backend
            .write_relaxed(FileKind::Session, &name, b"first record")
            .unwrap();
        assert_eq!(
            backend.read(FileKind::Session, &name).unwrap(),
            b"first record"
        );
        backend
            .write_relaxed(FileKind::Session, &name, b"second")
            .unwrap();
        assert_eq!(backend.read(FileKind::Session, &name).unwrap(), b"second");
        let listed = backend.list(FileKind::Session).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sessions"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(TEMP_SUFFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        let name = "ab".repeat(32);
        backend
            .write(FileKind::Pack, &name, b"hello world")
            .unwrap();
        assert_eq!(backend.read(FileKind::Pack, &name).unwrap(), b"hello world");
        assert_eq!(
            backend.read_range(FileKind::Pack, &name, 6, 5).unwrap(),
            b"world"
        );
        assert!(matches!(
            backend.read_range(FileKind::Pack, &name, 6, 50),
            Err(BackendError::Truncated { size: 11, .. })
        ));
        let listed = backend.list(FileKind::Pack).unwrap();
        assert_eq!(
            listed,
            vec![ObjectInfo {
                name: name.clone(),
                size: 11
            }]
        );
        backend.remove(FileKind::Pack, &name).unwrap();
        backend.remove(FileKind::Pack, &name).unwrap();
        assert!(
            backend
                .read(FileKind::Pack, &name)
                .unwrap_err()
                .is_not_found()
        );
    }
}
