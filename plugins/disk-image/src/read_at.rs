//! Random-access reads, the one thing every reader in this crate and in `tessera-disk-fs`
//! needs from what lies beneath it (a file in the sandbox, an NBD export, a recovery
//! point's content read back from the vault).

use std::io;

/// A source of bytes read at arbitrary offsets.
pub trait ReadAt {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Whether the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset`. Reading past the end is an
    /// [`io::ErrorKind::UnexpectedEof`] error: callers check lengths first.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl<T: ReadAt + ?Sized> ReadAt for &mut T {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

/// An in-memory source (tests, small documents).
impl ReadAt for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&s| s <= <[u8]>::len(self));
        match start.and_then(|s| self.get(s..s.checked_add(<[u8]>::len(buf))?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at offset {offset} passes the end ({} bytes)",
                    <[u8]>::len(buf),
                    <[u8]>::len(self)
                ),
            )),
        }
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_mut_slice().read_exact_at(offset, buf)
    }
}

/// A file read with positioned reads where the platform has them, else seek + read.
#[derive(Debug)]
pub struct FileReader {
    file: std::fs::File,
    len: u64,
}

impl FileReader {
    /// Wraps an open file, taking its length now.
    pub fn new(file: std::fs::File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(FileReader { file, len })
    }
}

impl ReadAt for FileReader {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_read_exactly_or_fail_at_the_end() {
        let mut data = vec![1u8, 2, 3, 4];
        let mut buf = [0u8; 2];
        data.read_exact_at(1, &mut buf).unwrap();
        assert_eq!(buf, [2, 3]);
        assert!(data.read_exact_at(3, &mut buf).is_err());
        assert!(data.read_exact_at(u64::MAX, &mut buf).is_err());
    }
}
