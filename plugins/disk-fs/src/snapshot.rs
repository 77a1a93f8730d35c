//! Old-style (copy-on-write) snapshots (`dm-snapshot`, which LVM2 snapshots of ordinary
//! volumes are): before a chunk of the origin is first written, its old contents are
//! copied to the snapshot's exception store, so the snapshot reads the store's copy of a
//! chunk that has one and the origin's own chunk otherwise. Read here from the layout the
//! kernel documents in its sources (`drivers/md/dm-snap-persistent.c`).
//!
//! The exception store (little-endian, in chunks of the snapshot's chunk size):
//!
//! ```text
//! chunk 0, the header: MAGIC(u32 = 0x70416e53, "SnAp") | VALID(u32, 0 once the snapshot
//!   overflowed or was dropped) | VERSION(u32 = 1) | CHUNK_SIZE(u32, sectors)
//! then areas, each a chunk of exceptions {OLD_CHUNK(u64) NEW_CHUNK(u64)} (a chunk holds
//!   chunk/16 of them) followed by the chunks they copy to; area N's exceptions are at
//!   chunk 1 + N x (chunk/16 + 1). The first exception whose NEW_CHUNK is 0 ends them.
//! ```

use tessera_disk_image::ReadAt;

use crate::cache::Overlay;
use crate::lvm::u32_le;
use crate::lvm::u64_le;
use crate::{FsError, read_exact};

const MAGIC: u32 = 0x7041_6e53;

/// Reads the snapshot of `origin` whose exception store is `store`: the origin, with the
/// chunks the store holds copies of read from there. `chunk` is the snapshot's chunk size
/// as the volume group's metadata gives it, in bytes, which the store's header must agree
/// with. `what` names the snapshot in errors.
pub(crate) fn open(
    origin: Box<dyn ReadAt>,
    mut store: Box<dyn ReadAt>,
    chunk: u64,
    what: &str,
) -> Result<Overlay, FsError> {
    let corrupt = |offset, detail: String| {
        FsError::corrupt(what, offset, format!("snapshot exception store: {detail}"))
    };
    let mut header = [0u8; 16];
    read_exact(&mut *store, what, 0, &mut header)?;
    if u32_le(&header, 0) != MAGIC {
        return Err(corrupt(Some(0), "no header (magic missing)".to_owned()));
    }
    if u32_le(&header, 4) == 0 {
        return Err(FsError::unsupported(
            what,
            "the snapshot is invalid: it overflowed its exception store, or was dropped",
        ));
    }
    let version = u32_le(&header, 8);
    if version != 1 {
        return Err(FsError::unsupported(
            what,
            format!("snapshot exception store of version {version}; version 1 is read"),
        ));
    }
    let size = u64::from(u32_le(&header, 12)) * 512;
    if size != chunk || !chunk.is_power_of_two() || chunk < 4096 {
        return Err(corrupt(
            Some(12),
            format!("chunks of {size} bytes, where the volume group's metadata gives {chunk}"),
        ));
    }
    let per_area = chunk / 16;
    let chunks = store.len() / chunk;
    let origin_chunks = origin.len().div_ceil(chunk);
    let mut map = Vec::new();
    let mut area = vec![0u8; chunk as usize];
    let mut location = 1u64;
    'areas: while location < chunks {
        read_exact(&mut *store, what, location * chunk, &mut area)?;
        for n in 0..per_area as usize {
            let (old, new) = (u64_le(&area, 16 * n), u64_le(&area, 16 * n + 8));
            if new == 0 {
                break 'areas;
            }
            // A store chunk is one of this area's, after its exceptions.
            if new <= location || new > location + per_area || new >= chunks {
                return Err(corrupt(
                    Some(location * chunk + 16 * n as u64 + 8),
                    format!("an exception copies to chunk {new}, outside its area"),
                ));
            }
            if old >= origin_chunks {
                return Err(corrupt(
                    Some(location * chunk + 16 * n as u64),
                    format!("an exception for chunk {old}, past the origin's end"),
                ));
            }
            map.push((old, new));
        }
        location += per_area + 1;
    }
    // A chunk copied twice (which the kernel never does) reads as its later copy.
    map.reverse();
    map.sort_by_key(|&(old, _)| old);
    map.dedup_by_key(|&mut (old, _)| old);
    Ok(Overlay::new((origin, store), chunk, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 4096;

    /// An exception store of 12 chunks holding `exceptions` in its first area, each
    /// copied chunk filled with 0xe0 and its store chunk's number.
    fn store(exceptions: &[(u64, u64)]) -> Vec<u8> {
        let mut s = vec![0u8; 12 * CHUNK];
        s[..16].copy_from_slice(&[0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0]);
        for (i, &(old, new)) in exceptions.iter().enumerate() {
            let at = CHUNK + 16 * i;
            s[at..at + 8].copy_from_slice(&old.to_le_bytes());
            s[at + 8..at + 16].copy_from_slice(&new.to_le_bytes());
            if let Some(chunk) = s.get_mut(new as usize * CHUNK..(new as usize + 1) * CHUNK) {
                chunk.fill(0xe0 | new as u8);
            }
        }
        s
    }

    /// Opens a snapshot of an origin of eight chunks filled with their numbers.
    fn open(store: Vec<u8>) -> Result<Overlay, FsError> {
        let origin: Vec<u8> = (0..8u8).flat_map(|n| vec![n; CHUNK]).collect();
        super::open(Box::new(origin), Box::new(store), CHUNK as u64, "s")
    }

    #[test]
    fn copied_chunks_read_from_the_store() {
        // Chunk 5 copied to store chunk 2, chunk 1 to 3, then chunk 5 again to 4.
        let mut snap = open(store(&[(5, 2), (1, 3), (5, 4)])).unwrap();
        let mut all = vec![0u8; 8 * CHUNK];
        snap.read_exact_at(0, &mut all).unwrap();
        let fills: Vec<u8> = all.chunks(CHUNK).map(|c| c[0]).collect();
        assert_eq!(fills, [0, 0xe3, 2, 3, 4, 0xe4, 6, 7]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(500))]
        /// Random exceptions never panic, and what opens reads.
        #[test]
        fn random_exceptions_never_panic(
            exceptions in proptest::collection::vec((0u64..12, 0u64..14), 0..10),
            header in proptest::collection::vec((0usize..16, proptest::prelude::any::<u8>()), 0..2),
        ) {
            let mut s = store(&exceptions);
            for (at, byte) in header {
                s[at] = byte;
            }
            if let Ok(mut snap) = open(s) {
                for at in [0, 3 * CHUNK as u64 - 1, 7 * CHUNK as u64] {
                    let _ = snap.read_exact_at(at, &mut [0u8; 4096]);
                }
            }
        }
    }

    #[test]
    fn hostile_stores_are_errors() {
        let fails = |s: Vec<u8>| open(s).err().unwrap().to_string();
        let outside = fails(store(&[(1, 1)]));
        assert!(outside.contains("outside its area"), "{outside}");
        let beyond = fails(store(&[(1, 40)]));
        assert!(beyond.contains("outside its area"), "{beyond}");
        let past = fails(store(&[(8, 2)]));
        assert!(past.contains("past the origin's end"), "{past}");
        let mut other = store(&[]);
        other[12] = 16;
        assert!(fails(other).contains("chunks of 8192 bytes"));
        let mut version = store(&[]);
        version[8] = 2;
        assert!(fails(version).contains("version 2"));
        let mut magic = store(&[]);
        magic[0] = 0;
        assert!(fails(magic).contains("no header"));
    }
}
