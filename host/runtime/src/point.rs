//! Reading a recovery point on the plugin's behalf, during restore and browse.

use std::io::Read;

use wasmtime::component::Resource;

use crate::bindings::point::{self, ByteRange, EntryInfo, HostError};
use crate::writes::WritePool;

use crate::convert::{entry_to_wit, grant_error, vault_error};
use crate::limits::{MAX_IO_CALL, MAX_LIST_ENTRIES, MAX_OPEN_HANDLES, check_path};
use crate::state::{JobState, Phase, ReadState};

/// An entry's content a plugin is reading.
pub struct ContentReader {
    reader: tessera_vault::ContentReader,
    /// What it reads, for a second reader on a writer thread.
    content: tessera_vault::Content,
}

impl JobState {
    fn read_state(&self) -> Result<&ReadState, HostError> {
        match &self.phase {
            Phase::Read(state) => Ok(state),
            _ => Err(HostError::WrongPhase(
                "this call is only available while reading a point".into(),
            )),
        }
    }

    fn reader(&mut self, this: &Resource<ContentReader>) -> Result<&mut ContentReader, HostError> {
        self.table
            .get_mut(this)
            .map_err(|e| HostError::Invalid(format!("bad content-reader handle: {e}")))
    }

    fn lookup(&self, path: &str) -> Result<tessera_vault::Entry, HostError> {
        check_path(path)?;
        let state = self.read_state()?;
        state
            .vault
            .find_entry(&state.point, path)
            .map_err(vault_error)
    }
}

fn capped(max: u32) -> usize {
    (max as usize).min(MAX_IO_CALL)
}

impl point::HostContentReader for JobState {
    fn length(&mut self, this: Resource<ContentReader>) -> u64 {
        self.touch();
        self.reader(&this).map(|r| r.reader.len()).unwrap_or(0)
    }

    fn read(&mut self, this: Resource<ContentReader>, max: u32) -> Result<Vec<u8>, HostError> {
        self.touch();
        let reader = &mut self.reader(&this)?.reader;
        let mut buf = vec![0u8; capped(max)];
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => return Err(HostError::Vault(e.to_string())),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    fn read_at(
        &mut self,
        this: Resource<ContentReader>,
        offset: u64,
        max: u32,
    ) -> Result<Vec<u8>, HostError> {
        self.touch();
        let reader = &mut self.reader(&this)?.reader;
        let len = reader.len();
        let want = capped(max).min(len.saturating_sub(offset) as usize);
        let mut buf = vec![0u8; want];
        let n = reader.read_at(offset, &mut buf).map_err(vault_error)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn holes(
        &mut self,
        this: Resource<ContentReader>,
        offset: u64,
        length: u64,
    ) -> Result<Vec<ByteRange>, HostError> {
        self.touch();
        let reader = &mut self.reader(&this)?.reader;
        let holes = reader.holes(offset, length).map_err(vault_error)?;
        Ok(holes
            .into_iter()
            .map(|(offset, length)| ByteRange { offset, length })
            .collect())
    }

    fn write_to(&mut self, this: Resource<ContentReader>, path: String) -> Result<u64, HostError> {
        self.touch();
        check_path(&path)?;
        let grant = self
            .grant
            .clone()
            .ok_or_else(|| HostError::Denied("this job grants no target directory".into()))?;
        let (dir, name) = grant.resolve_for_write(&path).map_err(grant_error)?;
        let vault = self.read_state()?.vault.clone();
        let stored = self
            .table
            .get_mut(&this)
            .map_err(|e| HostError::Invalid(format!("bad content-reader handle: {e}")))?;
        let length = stored.reader.len();
        let holes: u64 = stored
            .reader
            .holes(0, length)
            .map_err(vault_error)?
            .iter()
            .map(|(_, len)| len)
            .sum();
        let content = vault.content_reader(&stored.content);
        let pool = self
            .writes
            .get_or_insert_with(|| WritePool::new(crate::limits::WRITE_THREADS));
        pool.submit(
            path.trim_matches('/').to_string(),
            dir,
            name,
            content,
            grant,
        )
        .map_err(HostError::Io)?;
        Ok(length - holes.min(length))
    }

    fn drop(&mut self, rep: Resource<ContentReader>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        self.open_handles = self.open_handles.saturating_sub(1);
        Ok(())
    }
}

impl point::Host for JobState {
    fn children(&mut self, path: String) -> Result<Vec<EntryInfo>, HostError> {
        self.touch();
        let entry = self.lookup(&path)?;
        let Some(subtree) = entry.subtree else {
            return Err(HostError::Invalid(format!("'{path}' is not a directory")));
        };
        let state = self.read_state()?;
        let tree = state.vault.cached_tree(&subtree).map_err(vault_error)?;
        let prefix = path.trim_matches('/');
        Ok(tree
            .entries
            .iter()
            .take(MAX_LIST_ENTRIES)
            .map(|e| {
                let full = if prefix.is_empty() {
                    e.name.clone()
                } else {
                    format!("{prefix}/{}", e.name)
                };
                entry_to_wit(&full, e)
            })
            .collect())
    }

    fn entry(&mut self, path: String) -> Result<EntryInfo, HostError> {
        self.touch();
        let entry = self.lookup(&path)?;
        Ok(entry_to_wit(path.trim_matches('/'), &entry))
    }

    fn open(&mut self, path: String) -> Result<Resource<ContentReader>, HostError> {
        self.touch();
        if self.open_handles >= MAX_OPEN_HANDLES {
            return Err(HostError::Limit(format!(
                "more than {MAX_OPEN_HANDLES} open content readers"
            )));
        }
        let entry = self.lookup(&path)?;
        let reader = self.read_state()?.vault.content_reader(&entry.content);
        let handle = self
            .table
            .push(ContentReader {
                reader,
                content: entry.content,
            })
            .map_err(|e| HostError::Limit(e.to_string()))?;
        self.open_handles += 1;
        Ok(handle)
    }
}
