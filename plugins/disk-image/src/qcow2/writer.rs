//! Writing qcow2 version 3 images from guest clusters given in increasing order, as a
//! restore streams them. Nothing is rewritten and no data is buffered: each data cluster is
//! appended as it comes, each L2 table once the guest moves past its range, and the
//! refcounts, L1 table and header at [`Qcow2Writer::finish`].
//!
//! ```text
//! cluster 0            header (written last: until then the file is not a qcow2 image)
//! clusters 1..=L       L1 table (written at finish)
//! then, in order       data clusters, each L2 table after the data it maps
//! then                 refcount table, refcount blocks (written at finish)
//! ```
//!
//! Every cluster of the file is used exactly once, so every refcount is 1 and the refcount
//! blocks need no bookkeeping: only the L1 table (8 bytes per 512 MiB of guest disk with
//! 64 KiB clusters) and the current L2 table are held in memory. A write that fails leaves
//! the file without a header; start over.

use std::io::{self, Seek, SeekFrom, Write};

use super::header::{MAGIC, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};
use super::{COPIED, MAX_L1_BYTES};

/// Header length written: the version 3 fields, the compression type byte and padding.
const HEADER_LENGTH: u32 = 112;
/// 16-bit refcounts, QEMU's default.
const REFCOUNT_ORDER: u32 = 4;
/// Bytes per refcount entry.
const REFCOUNT_BYTES: u64 = 1 << REFCOUNT_ORDER >> 3;
/// The default cluster size, 64 KiB.
pub const DEFAULT_CLUSTER_BITS: u32 = 16;

/// A failure to write a qcow2 image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The output failed.
    #[error("writing the image failed: {0}")]
    Io(#[from] io::Error),
    /// The cluster size is outside 512 bytes to 2 MiB.
    #[error("cluster_bits {0} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}")]
    ClusterBits(u32),
    /// The virtual size needs an L1 table larger than readers accept.
    #[error("a virtual size of {size} bytes is too large for {cluster_size}-byte clusters")]
    TooLarge {
        /// The requested virtual size.
        size: u64,
        /// The cluster size.
        cluster_size: u64,
    },
    /// A cluster was given at an offset that is not a multiple of the cluster size.
    #[error("guest offset {offset:#x} is not aligned to the cluster size ({cluster_size})")]
    Misaligned {
        /// The offset given.
        offset: u64,
        /// The cluster size.
        cluster_size: u64,
    },
    /// A cluster was given at or before one already written.
    #[error("guest offset {offset:#x} comes after {next:#x} was expected at the lowest")]
    OutOfOrder {
        /// The offset given.
        offset: u64,
        /// The lowest offset still accepted.
        next: u64,
    },
    /// A cluster was given past the end of the disk.
    #[error("guest offset {offset:#x} is past the end of the disk ({size} bytes)")]
    BeyondEnd {
        /// The offset given.
        offset: u64,
        /// The virtual size.
        size: u64,
    },
    /// A cluster of the wrong length was given.
    #[error("{length} bytes given at guest offset {offset:#x}, expected {expected}")]
    Length {
        /// The offset given.
        offset: u64,
        /// The length given.
        length: usize,
        /// A full cluster, or the rest of the disk for its last cluster.
        expected: u64,
    },
}

/// Options for [`Qcow2Writer::create_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qcow2WriterOptions {
    /// Cluster size as a power of two, 9 (512 bytes) to 21 (2 MiB).
    pub cluster_bits: u32,
}

impl Default for Qcow2WriterOptions {
    fn default() -> Self {
        Qcow2WriterOptions {
            cluster_bits: DEFAULT_CLUSTER_BITS,
        }
    }
}

/// Writes a qcow2 v3 image (16-bit refcounts, no compression, no backing file) cluster by
/// cluster in increasing guest order. Ranges never written read as zeros.
#[derive(Debug)]
pub struct Qcow2Writer<W> {
    out: W,
    cluster_bits: u32,
    virtual_size: u64,
    l1_offset: u64,
    /// Entries are host offsets of L2 tables, 0 for none.
    l1: Vec<u64>,
    /// The L2 table being filled: its L1 index and entries.
    l2: Option<(usize, Vec<u64>)>,
    /// Where the next cluster goes: the end of the file so far.
    next_host: u64,
    /// The lowest guest offset still accepted.
    next_guest: u64,
}

impl<W: Write + Seek> Qcow2Writer<W> {
    /// Starts an image of `virtual_size` bytes with 64 KiB clusters, written to `out` from
    /// its start.
    pub fn create(out: W, virtual_size: u64) -> Result<Self, WriteError> {
        Self::create_with(out, virtual_size, Qcow2WriterOptions::default())
    }

    /// Starts an image of `virtual_size` bytes with the given options.
    pub fn create_with(
        mut out: W,
        virtual_size: u64,
        options: Qcow2WriterOptions,
    ) -> Result<Self, WriteError> {
        let cluster_bits = options.cluster_bits;
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(WriteError::ClusterBits(cluster_bits));
        }
        let cluster_size = 1u64 << cluster_bits;
        let l2_bits = cluster_bits - 3;
        let l1_size = virtual_size.div_ceil(1 << (cluster_bits + l2_bits));
        if l1_size > MAX_L1_BYTES / 8 {
            return Err(WriteError::TooLarge {
                size: virtual_size,
                cluster_size,
            });
        }
        // At least one cluster, so the L1 offset always points at a cluster of the file.
        let l1_clusters = (l1_size * 8).div_ceil(cluster_size).max(1);
        let l1_offset = cluster_size;
        let next_host = l1_offset + l1_clusters * cluster_size;
        out.seek(SeekFrom::Start(next_host))?;
        Ok(Qcow2Writer {
            out,
            cluster_bits,
            virtual_size,
            l1_offset,
            l1: vec![0; l1_size as usize],
            l2: None,
            next_host,
            next_guest: 0,
        })
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Stores the guest cluster at `guest_offset` (a multiple of the cluster size, greater
    /// than any given before). `data` is a full cluster, or for a last cluster cut short by
    /// the virtual size, either its length or a full one. A cluster of zeros is not stored:
    /// unwritten clusters read as zeros.
    pub fn write_cluster(&mut self, guest_offset: u64, data: &[u8]) -> Result<(), WriteError> {
        let cluster_size = self.cluster_size();
        if guest_offset & (cluster_size - 1) != 0 {
            return Err(WriteError::Misaligned {
                offset: guest_offset,
                cluster_size,
            });
        }
        if guest_offset >= self.virtual_size {
            return Err(WriteError::BeyondEnd {
                offset: guest_offset,
                size: self.virtual_size,
            });
        }
        if guest_offset < self.next_guest {
            return Err(WriteError::OutOfOrder {
                offset: guest_offset,
                next: self.next_guest,
            });
        }
        let expected = cluster_size.min(self.virtual_size - guest_offset);
        let length = data.len() as u64;
        if length != expected && length != cluster_size {
            return Err(WriteError::Length {
                offset: guest_offset,
                length: data.len(),
                expected,
            });
        }
        self.next_guest = guest_offset + cluster_size;
        if data.iter().all(|&b| b == 0) {
            return Ok(());
        }

        let cluster = guest_offset >> self.cluster_bits;
        let l2_bits = self.cluster_bits - 3;
        // Below l1.len(), which fits in usize.
        let l1_index = (cluster >> l2_bits) as usize;
        let l2_index = (cluster & ((1 << l2_bits) - 1)) as usize;
        if self.l2.as_ref().is_none_or(|(i, _)| *i != l1_index) {
            self.flush_l2()?;
            self.l2 = Some((l1_index, vec![0; 1 << l2_bits]));
        }

        let host = self.append(data)?;
        if let Some((_, entries)) = &mut self.l2
            && let Some(entry) = entries.get_mut(l2_index)
        {
            *entry = host | COPIED;
        }
        Ok(())
    }

    /// Stores `data` at `guest_offset` cluster by cluster: `guest_offset` is cluster aligned
    /// and `data` whole clusters, but for the disk's last one.
    pub fn write(&mut self, guest_offset: u64, data: &[u8]) -> Result<(), WriteError> {
        let mut offset = guest_offset;
        for chunk in data.chunks(self.cluster_size() as usize) {
            self.write_cluster(offset, chunk)?;
            offset = offset.saturating_add(chunk.len() as u64);
        }
        Ok(())
    }

    /// Appends one cluster (padding `data` with zeros), returning its offset in the file.
    fn append(&mut self, data: &[u8]) -> Result<u64, WriteError> {
        let host = self.next_host;
        self.out.write_all(data)?;
        let pad = self.cluster_size() - data.len() as u64;
        if pad > 0 {
            self.out.write_all(&vec![0; pad as usize])?;
        }
        self.next_host += self.cluster_size();
        Ok(host)
    }

    /// Appends the L2 table being filled and points the L1 table at it.
    fn flush_l2(&mut self) -> Result<(), WriteError> {
        if let Some((l1_index, entries)) = self.l2.take() {
            let host = self.append(&be_bytes(&entries))?;
            if let Some(entry) = self.l1.get_mut(l1_index) {
                *entry = host | COPIED;
            }
        }
        Ok(())
    }

    /// Writes the remaining metadata and the header, and returns the output.
    pub fn finish(mut self) -> Result<W, WriteError> {
        self.flush_l2()?;
        let cluster_size = self.cluster_size();
        let used = self.next_host >> self.cluster_bits;

        // The refcount structures count themselves: find the smallest that cover everything.
        let per_block = cluster_size / REFCOUNT_BYTES;
        let (mut blocks, mut table_clusters) = (0u64, 0u64);
        loop {
            let total = used + blocks + table_clusters;
            let need_blocks = total.div_ceil(per_block);
            let need_table = (need_blocks * 8).div_ceil(cluster_size);
            if (need_blocks, need_table) == (blocks, table_clusters) {
                break;
            }
            (blocks, table_clusters) = (need_blocks, need_table);
        }
        let total = used + blocks + table_clusters;
        let table_offset = self.next_host;
        let first_block = table_offset + table_clusters * cluster_size;

        let table: Vec<u64> = (0..blocks)
            .map(|i| first_block + i * cluster_size)
            .collect();
        let mut table_bytes = be_bytes(&table);
        table_bytes.resize((table_clusters * cluster_size) as usize, 0);
        self.out.write_all(&table_bytes)?;

        let one = 1u16.to_be_bytes();
        let full: Vec<u8> = one.repeat(per_block as usize);
        for block in 0..blocks {
            let counted = total.saturating_sub(block * per_block).min(per_block) as usize;
            if counted == per_block as usize {
                self.out.write_all(&full)?;
            } else {
                let mut bytes = one.repeat(counted);
                bytes.resize(cluster_size as usize, 0);
                self.out.write_all(&bytes)?;
            }
        }

        self.out.seek(SeekFrom::Start(self.l1_offset))?;
        self.out.write_all(&be_bytes(&self.l1))?;

        let header = self.header(table_offset, table_clusters);
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&header)?;
        self.out.seek(SeekFrom::Start(total * cluster_size))?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// The first cluster: header, an empty extension list, zeros.
    fn header(&self, refcount_table_offset: u64, refcount_table_clusters: u64) -> Vec<u8> {
        let mut h = Vec::with_capacity(self.cluster_size() as usize);
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&3u32.to_be_bytes()); // version
        h.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset
        h.extend_from_slice(&0u32.to_be_bytes()); // backing_file_size
        h.extend_from_slice(&self.cluster_bits.to_be_bytes());
        h.extend_from_slice(&self.virtual_size.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
        h.extend_from_slice(&(self.l1.len() as u32).to_be_bytes());
        h.extend_from_slice(&self.l1_offset.to_be_bytes());
        h.extend_from_slice(&refcount_table_offset.to_be_bytes());
        h.extend_from_slice(&(refcount_table_clusters as u32).to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // nb_snapshots
        h.extend_from_slice(&0u64.to_be_bytes()); // snapshots_offset
        h.extend_from_slice(&0u64.to_be_bytes()); // incompatible_features
        h.extend_from_slice(&0u64.to_be_bytes()); // compatible_features
        h.extend_from_slice(&0u64.to_be_bytes()); // autoclear_features
        h.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes());
        h.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        // compression_type 0 (zlib), padding to HEADER_LENGTH, then the end-of-extensions
        // marker: all zeros, like the rest of the cluster.
        h.resize(self.cluster_size() as usize, 0);
        h
    }
}

/// `values` as big-endian bytes.
fn be_bytes(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::chain::{ImageFile, no_backing};
    use crate::qcow2::Qcow2;
    use crate::{DiskImage, ExtentKind};

    fn write(size: u64, cluster_bits: u32, clusters: &[(u64, u8)]) -> Vec<u8> {
        let options = Qcow2WriterOptions { cluster_bits };
        let mut w = Qcow2Writer::create_with(Cursor::new(Vec::new()), size, options).unwrap();
        let cs = w.cluster_size();
        for &(index, byte) in clusters {
            let len = cs.min(size - index * cs) as usize;
            w.write_cluster(index * cs, &vec![byte; len]).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn written_images_read_back() {
        let size = 3 * 512 * 64 + 100; // four L2 ranges with 512-byte clusters, a short last cluster
        let bytes = write(size, 9, &[(0, 1), (3, 0), (64, 2), (65, 3), (192, 4)]);
        let file = ImageFile::new("w", Box::new(bytes));
        let mut q = Qcow2::open(file, &mut no_backing).unwrap();
        assert_eq!(q.virtual_size(), size);
        let mut all = vec![0xeeu8; size as usize];
        q.read_at(0, &mut all).unwrap();
        let mut expected = vec![0u8; size as usize];
        expected[..512].fill(1);
        expected[64 * 512..65 * 512].fill(2);
        expected[65 * 512..66 * 512].fill(3);
        expected[192 * 512..].fill(4);
        assert!(all == expected);
        let map = q.map(0, size).unwrap();
        let data: Vec<(u64, u64)> = map
            .iter()
            .filter(|e| e.kind == ExtentKind::Data)
            .map(|e| (e.offset, e.length))
            .collect();
        assert_eq!(data, vec![(0, 512), (64 * 512, 1024), (192 * 512, 100)]);
    }

    #[test]
    fn misuse_is_refused() {
        let mut w = Qcow2Writer::create(Cursor::new(Vec::new()), 1 << 20).unwrap();
        let cluster = vec![1u8; 65536];
        assert!(matches!(
            w.write_cluster(100, &cluster),
            Err(WriteError::Misaligned { .. })
        ));
        w.write_cluster(65536, &cluster).unwrap();
        assert!(matches!(
            w.write_cluster(0, &cluster),
            Err(WriteError::OutOfOrder { .. })
        ));
        assert!(matches!(
            w.write_cluster(1 << 20, &cluster),
            Err(WriteError::BeyondEnd { .. })
        ));
        assert!(matches!(
            w.write_cluster(1 << 17, &cluster[..10]),
            Err(WriteError::Length { .. })
        ));
        let too_big = Qcow2Writer::create_with(
            Cursor::new(Vec::new()),
            u64::MAX,
            Qcow2WriterOptions { cluster_bits: 9 },
        );
        assert!(matches!(too_big, Err(WriteError::TooLarge { .. })));
    }

    #[test]
    fn an_empty_disk_is_a_valid_image() {
        let bytes = write(0, 16, &[]);
        let mut q = Qcow2::open(ImageFile::new("e", Box::new(bytes)), &mut no_backing).unwrap();
        assert_eq!(q.virtual_size(), 0);
        assert_eq!(q.map(0, 0).unwrap(), vec![]);
    }
}
