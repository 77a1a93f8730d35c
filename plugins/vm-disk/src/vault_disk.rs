//! A disk stored in the point being read, as a [`ReadAt`] the partition and file-system
//! readers can open. File systems read their metadata a few kilobytes at a time, scattered
//! over the disk; each such read costs a host call and the decompression of a chunk, so
//! small reads are served from whole aligned blocks kept in a small cache, while large
//! reads (file contents) go straight to the host.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use tessera_disk_image::ReadAt;
use tessera_plugin_sdk::PIECE;
use tessera_plugin_sdk::point::ContentReader;

use crate::error::host_to_io;

/// Bytes fetched for a small read: the default chunk size, so one miss costs one chunk.
const BLOCK: u64 = 64 << 10;
/// Blocks kept, most recently used first: 4 MiB, room for a file system's hot metadata
/// (superblock, group descriptors, inode tables and directories being walked).
const CACHED_BLOCKS: usize = 64;

/// A stored disk's content read at random offsets.
pub(crate) struct VaultDisk {
    /// The disk's name, for messages.
    name: String,
    reader: ContentReader,
    len: u64,
    /// `(block index, bytes)`, most recently used first.
    cache: Vec<(u64, Vec<u8>)>,
}

impl VaultDisk {
    /// Wraps the content of the disk entry `name`.
    pub(crate) fn new(name: &str, reader: ContentReader) -> VaultDisk {
        let len = reader.length();
        VaultDisk {
            name: name.to_owned(),
            reader,
            len,
            cache: Vec::new(),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset` from the host, in pieces.
    fn read_direct(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let total = <[u8]>::len(buf);
        let mut done = 0usize;
        while done < total {
            let want = (total - done).min(PIECE);
            let at = offset + done as u64;
            // `want` is at most PIECE, which fits in u32.
            let data = self
                .reader
                .read_at(at, want as u32)
                .map_err(|err| host_to_io(&format!("{} at byte {at}", self.name), &err))?;
            if data.is_empty() || data.len() > want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: the stored disk returned {} bytes at byte {at} where {want} were \
                         asked for",
                        self.name,
                        data.len()
                    ),
                ));
            }
            buf[done..done + data.len()].copy_from_slice(&data);
            done += data.len();
        }
        Ok(())
    }

    /// The cached block `index`, fetched if needed.
    fn block(&mut self, index: u64) -> io::Result<&[u8]> {
        if let Some(position) = self.cache.iter().position(|(i, _)| *i == index) {
            let hit = self.cache.remove(position);
            self.cache.insert(0, hit);
        } else {
            let start = index * BLOCK;
            // The last block of the disk may be short.
            let length = BLOCK.min(self.len - start) as usize;
            let mut bytes = if self.cache.len() >= CACHED_BLOCKS {
                let (_, mut reused) = self.cache.pop().unwrap_or_default();
                reused.resize(length, 0);
                reused
            } else {
                vec![0; length]
            };
            self.read_direct(start, &mut bytes)?;
            self.cache.insert(0, (index, bytes));
        }
        Ok(self.cache.first().map_or(&[][..], |(_, bytes)| bytes))
    }
}

impl ReadAt for VaultDisk {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let total = <[u8]>::len(buf);
        let end = offset
            .checked_add(total as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: read of {} bytes at byte {offset} passes the end of the disk \
                         ({} bytes)",
                        self.name, total, self.len
                    ),
                )
            })?;
        if total as u64 >= BLOCK {
            return self.read_direct(offset, buf);
        }
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let within = (at - index * BLOCK) as usize;
            let block = self.block(index)?;
            let done = (at - offset) as usize;
            let take = (block.len().saturating_sub(within)).min(total - done);
            if take == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: no stored bytes at byte {at}", self.name),
                ));
            }
            buf[done..done + take].copy_from_slice(&block[within..within + take]);
            at += take as u64;
        }
        Ok(())
    }
}

/// One stored disk read by several readers at once (the partition table, then each
/// volume), sharing its cache.
#[derive(Clone)]
pub(crate) struct SharedDisk(Rc<RefCell<VaultDisk>>);

impl SharedDisk {
    /// Shares `disk`.
    pub(crate) fn new(disk: VaultDisk) -> SharedDisk {
        SharedDisk(Rc::new(RefCell::new(disk)))
    }
}

impl ReadAt for SharedDisk {
    fn len(&self) -> u64 {
        self.0.borrow().len
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.borrow_mut().read_exact_at(offset, buf)
    }
}
