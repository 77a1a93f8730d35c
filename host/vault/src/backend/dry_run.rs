//! A store that reads from another and writes nowhere: what a dry run of a backup works
//! on. Everything the vault reads (its config, keys, index, points) comes from the real
//! store, and everything a backup would write (packs, index files, its session, the
//! point) is dropped, so the run computes exactly what the backup would store and leaves
//! the store as it was.

use std::fmt;
use std::sync::Arc;

use super::{Backend, BackendError, FileKind, ObjectInfo, Spool};

/// Reads through to `inner`, drops every write and deletion.
pub struct DryRunBackend {
    inner: Arc<dyn Backend>,
}

impl DryRunBackend {
    /// A dry run over `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        DryRunBackend { inner }
    }
}

impl fmt::Debug for DryRunBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DryRunBackend")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Backend for DryRunBackend {
    fn location(&self) -> String {
        format!("{} (dry run)", self.inner.location())
    }

    fn create(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn write(&self, _: FileKind, _: &str, _: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }

    fn write_parts(&self, _: FileKind, _: &str, _: &[&[u8]]) -> Result<(), BackendError> {
        Ok(())
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, BackendError> {
        self.inner.read(kind, name)
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        self.inner.read_range(kind, name, offset, len)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(kind)
    }

    fn remove(&self, _: FileKind, _: &str) -> Result<(), BackendError> {
        Ok(())
    }

    fn spool(&self, _: FileKind) -> Result<Box<dyn Spool>, BackendError> {
        Ok(Box::new(CountingSpool { len: 0 }))
    }
}

/// A spool that only counts what it is given.
#[derive(Debug)]
struct CountingSpool {
    len: u64,
}

impl Spool for CountingSpool {
    fn append(&mut self, data: &[u8]) -> Result<(), BackendError> {
        self.len += data.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn commit(self: Box<Self>, _: &dyn Backend, _: &str) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalBackend;

    #[test]
    fn reads_pass_through_and_writes_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let real: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        real.create().unwrap();
        real.write(FileKind::Point, "aa", b"kept").unwrap();
        let dry = DryRunBackend::new(real.clone());
        assert_eq!(dry.read(FileKind::Point, "aa").unwrap(), b"kept");
        dry.write(FileKind::Point, "bb", b"dropped").unwrap();
        dry.remove(FileKind::Point, "aa").unwrap();
        let mut spool = dry.spool(FileKind::Pack).unwrap();
        spool.append(b"pack bytes").unwrap();
        assert_eq!(spool.len(), 10);
        spool.commit(&dry, "cc").unwrap();
        let names: Vec<_> = real
            .list(FileKind::Point)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["aa"]);
        assert!(real.list(FileKind::Pack).unwrap().is_empty());
        assert!(dry.location().ends_with("(dry run)"));
    }
}
