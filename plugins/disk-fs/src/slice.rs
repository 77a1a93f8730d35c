//! A byte range of a reader seen as a reader of its own: a partition of a disk, handed to
//! [`open_volume`](crate::open_volume) so a file system reads from its own offset 0.

use std::io;

use tessera_disk_image::ReadAt;

use crate::FsError;
use crate::partition::Partition;

/// The bytes `start..start + len` of `inner`, read at offsets relative to `start`.
/// Reads never leave the range, whatever offset a file system asks for.
#[derive(Debug)]
pub struct Slice<R: ReadAt> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> Slice<R> {
    /// Views `len` bytes of `inner` from `start`; fails if the range passes the end of `inner`.
    pub fn new(inner: R, start: u64, len: u64) -> Result<Self, FsError> {
        let end = start.checked_add(len);
        match end {
            Some(end) if end <= inner.len() => Ok(Slice { inner, start, len }),
            _ => Err(FsError::PastEnd {
                what: "slice".to_owned(),
                start,
                end: end.unwrap_or(u64::MAX),
                disk_len: inner.len(),
            }),
        }
    }

    /// Views the bytes of `partition` on the disk `inner`.
    pub fn partition(inner: R, partition: &Partition) -> Result<Self, FsError> {
        Slice::new(inner, partition.start, partition.length).map_err(|e| match e {
            FsError::PastEnd {
                start,
                end,
                disk_len,
                ..
            } => FsError::PastEnd {
                what: format!("partition {}", partition.number),
                start,
                end,
                disk_len,
            },
            other => other,
        })
    }

    /// Offset of the range in the reader beneath.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Gives back the reader beneath.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: ReadAt> ReadAt for Slice<R> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let within = offset
            .checked_add(<[u8]>::len(buf) as u64)
            .filter(|&end| end <= self.len)
            .and_then(|_| self.start.checked_add(offset));
        match within {
            Some(at) => self.inner.read_exact_at(at, buf),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at offset {offset} passes the end of a {}-byte slice",
                    <[u8]>::len(buf),
                    self.len
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stay_inside_the_range() {
        let disk: Vec<u8> = (0..=255).collect();
        let mut slice = Slice::new(disk, 16, 32).unwrap();
        assert_eq!(slice.len(), 32);
        let mut buf = [0u8; 4];
        slice.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(buf, [16, 17, 18, 19]);
        slice.read_exact_at(28, &mut buf).unwrap();
        assert_eq!(buf, [44, 45, 46, 47]);
        assert!(slice.read_exact_at(29, &mut buf).is_err());
        assert!(slice.read_exact_at(u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn a_range_past_the_end_is_refused() {
        let disk = vec![0u8; 100];
        let err = Slice::new(disk.clone(), 90, 20).unwrap_err();
        assert!(err.to_string().contains("90..110"), "{err}");
        assert!(Slice::new(disk, u64::MAX, 2).is_err());
    }
}
