//! Splitting byte streams into chunks for deduplication.
//!
//! Files are cut at content-defined boundaries found with a gear rolling hash
//! and normalized chunking, so an insertion only disturbs the chunks around it;
//! the gear table is derived from a per-vault secret so that boundaries cannot
//! be predicted, and thus reveal little about content, without that secret.
//! Block devices use fixed-size chunks aligned to the stream offset instead.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Smallest permitted minimum size of a content-defined chunk, in bytes.
pub const MIN_CDC_CHUNK_SIZE: u32 = 64;

/// Largest permitted chunk size, for both chunking modes, in bytes (64 MiB).
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;

/// Smallest permitted fixed chunk size, in bytes (4 KiB).
pub const MIN_FIXED_CHUNK_SIZE: u32 = 4 * 1024;

/// Default size of fixed chunks, in bytes (64 KiB).
///
/// This matches the granularity QEMU gives dirty bitmaps by default (the
/// image's cluster size, 64 KiB for qcow2 unless configured otherwise), so
/// that during an incremental backup of a virtual disk each dirty bit covers
/// exactly one chunk: no clean data is re-read just to complete a chunk, and
/// no dirty bit spans several chunks.
pub const DEFAULT_FIXED_CHUNK_SIZE: u32 = 64 * 1024;

/// Domain separation tag for deriving the gear table from the vault secret,
/// so that the same secret used elsewhere yields unrelated values here.
const GEAR_DOMAIN_TAG: &[u8] = b"tessera gear v1";

/// How far normalized chunking moves the mask widths away from log2(average):
/// level 2 as in FastCDC, which concentrates chunk sizes around the average.
const NORMALIZATION_LEVEL: u32 = 2;

/// Highest bit position a boundary mask may use. Bit 63 stays clear so that
/// the two-bytes-per-step scan can test a copy of each mask shifted left by one.
const MASK_TOP_BIT: u32 = 62;

/// Number of bit positions (ending at [`MASK_TOP_BIT`]) over which mask bits
/// are spread. Bit `k` of a gear hash depends on the last `k + 1` bytes only,
/// so keeping every mask bit at position 15 or above ensures each bit tested
/// reflects a window of at least 16 bytes.
const MASK_SPAN: u32 = 48;

/// Errors from validating chunking parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkerError {
    /// The minimum chunk size is below [`MIN_CDC_CHUNK_SIZE`].
    #[error(
        "minimum chunk size {min_size} is too small: it must be at least {MIN_CDC_CHUNK_SIZE} bytes"
    )]
    MinSizeTooSmall {
        /// The rejected minimum size.
        min_size: u32,
    },
    /// The average chunk size is not a power of two.
    #[error(
        "average chunk size {avg_size} is not a power of two: it must be a power of two \
         greater than the minimum size and less than the maximum size"
    )]
    AvgSizeNotPowerOfTwo {
        /// The rejected average size.
        avg_size: u32,
    },
    /// The minimum chunk size is not below the average size.
    #[error(
        "minimum chunk size {min_size} is too large: it must be less than the average size {avg_size}"
    )]
    MinSizeNotBelowAvg {
        /// The rejected minimum size.
        min_size: u32,
        /// The average size it must stay below.
        avg_size: u32,
    },
    /// The maximum chunk size is not above the average size.
    #[error(
        "maximum chunk size {max_size} is too small: it must be greater than the average size {avg_size}"
    )]
    MaxSizeNotAboveAvg {
        /// The rejected maximum size.
        max_size: u32,
        /// The average size it must exceed.
        avg_size: u32,
    },
    /// The maximum chunk size exceeds [`MAX_CHUNK_SIZE`].
    #[error(
        "maximum chunk size {max_size} is too large: it must be at most {MAX_CHUNK_SIZE} bytes"
    )]
    MaxSizeTooLarge {
        /// The rejected maximum size.
        max_size: u32,
    },
    /// The fixed chunk size is not a power of two within the allowed range.
    #[error(
        "fixed chunk size {size} is invalid: it must be a power of two from \
         {MIN_FIXED_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes"
    )]
    InvalidFixedSize {
        /// The rejected size.
        size: u32,
    },
}

/// Parameters of content-defined chunking.
///
/// All sizes are in bytes. A chunk is never shorter than `min_size` (except
/// the last chunk of a stream) nor longer than `max_size`; `avg_size` is the
/// size around which normalized chunking concentrates chunk lengths, and the
/// actual mean on random data comes out somewhat above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CdcParams {
    /// Smallest chunk length, except for the last chunk of a stream.
    pub min_size: u32,
    /// Target chunk length; must be a power of two.
    pub avg_size: u32,
    /// Largest chunk length; a chunk is cut here if no boundary came first.
    pub max_size: u32,
}

impl Default for CdcParams {
    /// 512 KiB minimum, 1 MiB average, 4 MiB maximum: large enough to keep the
    /// index and per-chunk overhead small, small enough for good deduplication. The
    /// minimum at half the average leaves the rolling hash about half of every chunk
    /// to scan; with normalized chunking few chunks would end below it anyway.
    fn default() -> Self {
        Self {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

impl CdcParams {
    /// Checks that `avg_size` is a power of two and that
    /// `64 <= min_size < avg_size < max_size <= 64 MiB`.
    pub fn validate(&self) -> Result<(), ChunkerError> {
        let Self {
            min_size,
            avg_size,
            max_size,
        } = *self;
        if min_size < MIN_CDC_CHUNK_SIZE {
            return Err(ChunkerError::MinSizeTooSmall { min_size });
        }
        if !avg_size.is_power_of_two() {
            return Err(ChunkerError::AvgSizeNotPowerOfTwo { avg_size });
        }
        if min_size >= avg_size {
            return Err(ChunkerError::MinSizeNotBelowAvg { min_size, avg_size });
        }
        if max_size <= avg_size {
            return Err(ChunkerError::MaxSizeNotAboveAvg { max_size, avg_size });
        }
        if max_size > MAX_CHUNK_SIZE {
            return Err(ChunkerError::MaxSizeTooLarge { max_size });
        }
        Ok(())
    }
}

/// How a stream is cut into chunks, chosen by the caller per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chunking {
    /// Content-defined boundaries (files, database dumps).
    ContentDefined(CdcParams),
    /// Fixed-size chunks aligned to the stream offset (block devices).
    Fixed {
        /// Length of every chunk but possibly the last; a power of two from
        /// 4 KiB to 64 MiB.
        size: u32,
    },
}

impl Chunking {
    /// Checks the parameters of this chunking mode; see
    /// [`CdcParams::validate`] for content-defined chunking. A fixed size must
    /// be a power of two from 4 KiB to 64 MiB.
    pub fn validate(&self) -> Result<(), ChunkerError> {
        match *self {
            Self::ContentDefined(params) => params.validate(),
            Self::Fixed { size } => {
                if size.is_power_of_two() && (MIN_FIXED_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size)
                {
                    Ok(())
                } else {
                    Err(ChunkerError::InvalidFixedSize { size })
                }
            }
        }
    }

    /// The largest chunk this mode can produce, in bytes; useful for sizing
    /// read buffers.
    pub fn max_chunk_size(&self) -> usize {
        let max = match *self {
            Self::ContentDefined(params) => params.max_size,
            Self::Fixed { size } => size,
        };
        // Lossless on every platform with at least 32-bit pointers; saturate
        // rather than panic on anything smaller.
        usize::try_from(max).unwrap_or(usize::MAX)
    }
}

/// How far [`CdcChunker::feed`] got in the chunk being cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CdcScan {
    /// Bytes of the chunk seen so far.
    len: usize,
    /// The gear hash over the chunk's bytes from `min_size` on.
    fp: u64,
}

impl CdcScan {
    /// Bytes of the chunk seen so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk has no bytes yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A content-defined chunker keyed by the vault's chunker secret.
///
/// Boundaries follow FastCDC (2020): a gear hash is rolled over the chunk from
/// `min_size` on, and a boundary is declared where the hash has zeros at every
/// bit of a mask. The mask has more bits before `avg_size` and fewer after,
/// which pulls chunk lengths towards the average.
///
/// Because every gear value is derived from the secret, boundary positions are
/// not a public function of the content: whoever sees chunk lengths cannot
/// test them against guessed content without the secret. The lengths remain
/// visible to the storage, and a keyed gear hash is a mitigation rather than a
/// cryptographic guarantee, so the secret should be treated like a key.
#[derive(Clone)]
pub struct CdcChunker {
    params: CdcParams,
    gear: [u64; 256],
    /// Each gear value shifted left by one, for the first byte of a pair in
    /// the two-bytes-per-step scan.
    gear_shifted: [u64; 256],
    /// Mask tested before `avg_size`: log2(avg) + 2 bits, so cuts are rare.
    mask_small: u64,
    /// Mask tested from `avg_size` on: log2(avg) - 2 bits, so cuts come soon.
    mask_large: u64,
    min_size: usize,
    avg_size: usize,
    max_size: usize,
}

impl std::fmt::Debug for CdcChunker {
    /// Shows only the parameters: the gear table is derived from the vault
    /// secret and must not end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdcChunker")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl CdcChunker {
    /// Creates a chunker whose boundaries are keyed by `secret`.
    ///
    /// Fails if `params` does not pass [`CdcParams::validate`].
    pub fn new(secret: &[u8; 32], params: CdcParams) -> Result<Self, ChunkerError> {
        params.validate()?;
        let gear = derive_gear(secret);
        let gear_shifted = gear.map(|g| g << 1);
        // Validation bounds avg_size to [128, 32 MiB], so log2 lies in 7..=25
        // and both widths stay within 5..=27, inside MASK_SPAN.
        let avg_bits = params.avg_size.trailing_zeros();
        Ok(Self {
            params,
            gear,
            gear_shifted,
            mask_small: spread_mask(avg_bits + NORMALIZATION_LEVEL),
            mask_large: spread_mask(avg_bits.saturating_sub(NORMALIZATION_LEVEL)),
            min_size: to_usize(params.min_size),
            avg_size: to_usize(params.avg_size),
            max_size: to_usize(params.max_size),
        })
    }

    /// The parameters this chunker was created with.
    pub fn params(&self) -> CdcParams {
        self.params
    }

    /// Given `data` starting at the beginning of a chunk, returns the length of that chunk if
    /// its end is decided within `data`: a cut point, or `max_size` when `data.len() >= max_size`.
    /// Returns None when no cut point lies in `data` and `data.len() < max_size`: the caller
    /// must supply more data, or, at the end of the stream, take all of `data` as the last chunk.
    ///
    /// A returned length is always greater than `min_size` and at most
    /// `max_size`. The result depends only on `data` (and the key and
    /// parameters), never on earlier calls, so any buffering of a stream
    /// yields the same chunks. A call that returns None has scanned all of
    /// `data` for nothing, so callers should pass at least `max_size` bytes
    /// whenever the stream still has that much.
    pub fn find_boundary(&self, data: &[u8]) -> Option<usize> {
        let end = data.len().min(self.max_size);
        // Skipping the hash over the first min_size bytes is the main speed-up
        // of FastCDC and costs nothing in stability: no cut may fall there, and
        // the gear hash forgets a byte 64 steps after seeing it, so where
        // hashing starts only matters for the first 64 positions scanned.
        if end <= self.min_size {
            return None;
        }
        let normal = self.avg_size.min(end);
        let fp = match self.scan(data.get(self.min_size..normal)?, self.mask_small, 0) {
            ControlFlow::Break(len) => return Some(self.min_size + len),
            ControlFlow::Continue(fp) => fp,
        };
        if let ControlFlow::Break(len) = self.scan(data.get(normal..end)?, self.mask_large, fp) {
            return Some(normal + len);
        }
        (data.len() >= self.max_size).then_some(self.max_size)
    }

    /// Feeds the next bytes of a stream: `scan` holds where the chunk being cut stands
    /// (start a stream and every chunk with [`CdcScan::default`]). Returns how many bytes
    /// of `data` complete the chunk when its end lies in `data`, and starts the next chunk
    /// in `scan`; `None` means all of `data` belongs to the chunk, which goes on.
    ///
    /// Cutting a stream this way, in pieces of any sizes, gives the same chunks as
    /// [`CdcChunker::find_boundary`] given the whole stream, and scans each byte once,
    /// so a caller can copy each piece straight into the chunk it belongs to.
    pub fn feed(&self, scan: &mut CdcScan, data: &[u8]) -> Option<usize> {
        let mut pos = 0;
        if scan.len < self.min_size {
            let skipped = (self.min_size - scan.len).min(data.len());
            scan.len += skipped;
            pos = skipped;
        }
        for (limit, mask) in [
            (self.avg_size, self.mask_small),
            (self.max_size, self.mask_large),
        ] {
            if pos == data.len() {
                return None;
            }
            if scan.len >= limit {
                continue;
            }
            let take = (limit - scan.len).min(data.len() - pos);
            match self.scan(&data[pos..pos + take], mask, scan.fp) {
                ControlFlow::Break(len) => {
                    *scan = CdcScan::default();
                    return Some(pos + len);
                }
                ControlFlow::Continue(fp) => {
                    scan.fp = fp;
                    scan.len += take;
                    pos += take;
                }
            }
        }
        if scan.len == self.max_size {
            *scan = CdcScan::default();
            return Some(pos);
        }
        None
    }

    /// Rolls the gear hash, starting from state `fp`, over `window`. Breaks
    /// with the number of bytes up to and including the first byte after which
    /// `fp & mask == 0`, or continues with the final state if there is none.
    ///
    /// Long windows go through [`CdcChunker::scan_lanes`] a block at a time; the
    /// rest, and the tail, through [`CdcChunker::scan_pairs`].
    #[inline(always)]
    fn scan(&self, window: &[u8], mask: u64, fp: u64) -> ControlFlow<usize, u64> {
        let mut h = fp;
        let (blocks, tail) = window.as_chunks::<SCAN_BLOCK>();
        for (i, block) in blocks.iter().enumerate() {
            match self.scan_lanes(block, mask, h) {
                ControlFlow::Break(len) => return ControlFlow::Break(i * SCAN_BLOCK + len),
                ControlFlow::Continue(next) => h = next,
            }
        }
        match self.scan_pairs(tail, mask, h) {
            ControlFlow::Break(len) => ControlFlow::Break(blocks.len() * SCAN_BLOCK + len),
            continued => continued,
        }
    }

    /// [`CdcChunker::scan`] over one block, cut into [`SCAN_LANES`] runs that are
    /// hashed side by side.
    ///
    /// One gear hash is a chain of dependent shift-and-adds, which leaves most of a
    /// core's execution units idle; independent chains keep them busy. Each run after
    /// the first starts from nothing [`GEAR_MEMORY`] bytes before its start: a byte's
    /// gear value is shifted out of the 64-bit hash 64 steps after it entered, so from
    /// the run's first byte on its lane holds exactly the hash a single pass would.
    /// The lanes stop at the first cut in any of them; the runs before it are then
    /// finished one at a time, since a cut there comes first in the stream.
    #[inline(always)]
    fn scan_lanes(&self, block: &[u8; SCAN_BLOCK], mask: u64, fp: u64) -> ControlFlow<usize, u64> {
        let gear = &self.gear;
        let roll = |h: u64, b: &u8| (h << 1).wrapping_add(gear[usize::from(*b)]);
        let warm = |start: usize| block[start - GEAR_MEMORY..start].iter().fold(0, roll);
        let mut h = [fp, warm(SCAN_RUN), warm(2 * SCAN_RUN), warm(3 * SCAN_RUN)];
        let (runs, _) = block.as_chunks::<SCAN_RUN>();
        let [r0, r1, r2, r3] = runs else {
            unreachable!("a scan block holds exactly SCAN_LANES runs")
        };
        let mut stopped = None;
        for (i, (((b0, b1), b2), b3)) in r0.iter().zip(r1).zip(r2).zip(r3).enumerate() {
            h = [
                roll(h[0], b0),
                roll(h[1], b1),
                roll(h[2], b2),
                roll(h[3], b3),
            ];
            // One rarely taken branch for the four tests.
            if (h[0] & mask == 0) | (h[1] & mask == 0) | (h[2] & mask == 0) | (h[3] & mask == 0) {
                stopped = Some(i);
                break;
            }
        }
        let Some(i) = stopped else {
            return ControlFlow::Continue(h[SCAN_LANES - 1]);
        };
        for (lane, (run, h)) in runs.iter().zip(h).enumerate() {
            let before = lane * SCAN_RUN + i + 1;
            if h & mask == 0 {
                return ControlFlow::Break(before);
            }
            if let ControlFlow::Break(len) = self.scan_pairs(&run[i + 1..], mask, h) {
                return ControlFlow::Break(before + len);
            }
        }
        unreachable!("a lane stopped at a cut")
    }

    /// [`CdcChunker::scan`] one hash chain at a time.
    ///
    /// Bytes are consumed in pairs because the hash's dependency chain then
    /// costs one shift and one add per two bytes instead of per byte: the
    /// first byte's gear value enters pre-shifted, so the running value is the
    /// true hash shifted left by one until the second byte is added, and the
    /// first byte's test uses the mask shifted to match. That is exact because
    /// masks leave bit 63 clear.
    #[inline(always)]
    fn scan_pairs(&self, window: &[u8], mask: u64, fp: u64) -> ControlFlow<usize, u64> {
        let mask_shifted = mask << 1;
        let mut h = fp;
        let (pairs, rest) = window.as_chunks::<2>();
        for (i, &[a, b]) in pairs.iter().enumerate() {
            h = (h << 2).wrapping_add(self.gear_shifted[usize::from(a)]);
            if h & mask_shifted == 0 {
                return ControlFlow::Break(2 * i + 1);
            }
            h = h.wrapping_add(self.gear[usize::from(b)]);
            if h & mask == 0 {
                return ControlFlow::Break(2 * i + 2);
            }
        }
        if let [last] = *rest {
            h = (h << 1).wrapping_add(self.gear[usize::from(last)]);
            if h & mask == 0 {
                return ControlFlow::Break(window.len());
            }
        }
        ControlFlow::Continue(h)
    }
}

/// Bytes after which the gear hash no longer depends on a byte: each step shifts the
/// 64-bit hash left by one.
const GEAR_MEMORY: usize = 64;
/// Independent hash chains [`CdcChunker::scan_lanes`] runs side by side.
const SCAN_LANES: usize = 4;
/// Bytes each lane scans per block: long enough that starting a lane
/// ([`GEAR_MEMORY`] bytes) costs little, short enough that scanning on past a cut to
/// the end of the block costs little either.
const SCAN_RUN: usize = 16 * 1024;
/// Bytes scanned per block of lanes.
const SCAN_BLOCK: usize = SCAN_LANES * SCAN_RUN;

/// Derives the 256 gear values from the vault's chunker secret.
fn derive_gear(secret: &[u8; 32]) -> [u64; 256] {
    let mut gear = [0u64; 256];
    for (index, slot) in (0u32..).zip(gear.iter_mut()) {
        let digest = Sha256::new()
            .chain_update(GEAR_DOMAIN_TAG)
            .chain_update(secret)
            .chain_update(index.to_le_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        *slot = u64::from_le_bytes(first);
    }
    gear
}

/// Builds a mask with `bits` one-bits spread evenly over the [`MASK_SPAN`]
/// positions ending at [`MASK_TOP_BIT`].
///
/// Spreading, as FastCDC's padded masks do, lets the tested bits draw on hash
/// windows of many different lengths rather than only the longest ones. With
/// `bits <= MASK_SPAN` consecutive positions differ by at least one, so the
/// mask has exactly `bits` ones.
fn spread_mask(bits: u32) -> u64 {
    let bits = bits.min(MASK_SPAN);
    (0..bits).fold(0u64, |mask, k| {
        mask | (1u64 << (MASK_TOP_BIT - k * MASK_SPAN / bits))
    })
}

/// Converts a validated size to `usize`.
fn to_usize(size: u32) -> usize {
    // Sizes are validated to be at most 64 MiB, which fits any usize of 32
    // bits or more; saturating keeps this total on smaller targets too.
    usize::try_from(size).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    /// Deterministic pseudo-random bytes (splitmix64), so tests need no extra
    /// dependency and failures reproduce exactly.
    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Chunk lengths of `data` when the caller holds all of it at once.
    fn chunk_one_shot(chunker: &CdcChunker, data: &[u8]) -> Vec<usize> {
        let mut lens = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let len = chunker
                .find_boundary(&data[start..])
                .unwrap_or(data.len() - start);
            lens.push(len);
            start += len;
        }
        lens
    }

    /// Chunk lengths of `data` when it arrives in pieces of the given sizes
    /// (cycled), the way a reader filling a buffer would see it.
    fn chunk_streaming(chunker: &CdcChunker, data: &[u8], pieces: &[usize]) -> Vec<usize> {
        let mut lens = Vec::new();
        let mut scan = CdcScan::default();
        let mut current = 0;
        let mut pos = 0;
        for &piece in pieces.iter().cycle() {
            if pos == data.len() {
                break;
            }
            let take = piece.max(1).min(data.len() - pos);
            let mut piece = &data[pos..pos + take];
            pos += take;
            while let Some(len) = chunker.feed(&mut scan, piece) {
                lens.push(current + len);
                current = 0;
                piece = &piece[len..];
            }
            current += piece.len();
            assert_eq!(scan.len(), current);
        }
        if current > 0 {
            lens.push(current);
        }
        lens
    }

    /// The same boundary rule as `find_boundary`, one byte at a time, to check
    /// the two-bytes-per-step scan against.
    fn reference_boundary(chunker: &CdcChunker, data: &[u8]) -> Option<usize> {
        let (min, avg, max) = (chunker.min_size, chunker.avg_size, chunker.max_size);
        let mut fp = 0u64;
        for (i, &byte) in data.iter().enumerate().take(max).skip(min) {
            fp = (fp << 1).wrapping_add(chunker.gear[usize::from(byte)]);
            let mask = if i < avg {
                chunker.mask_small
            } else {
                chunker.mask_large
            };
            if fp & mask == 0 {
                return Some(i + 1);
            }
        }
        (data.len() >= max).then_some(max)
    }

    /// `CdcChunker::scan`'s rule one byte at a time, to check the lanes and pairs
    /// against.
    fn reference_scan(
        chunker: &CdcChunker,
        window: &[u8],
        mask: u64,
        fp: u64,
    ) -> ControlFlow<usize, u64> {
        let mut h = fp;
        for (i, &byte) in window.iter().enumerate() {
            h = (h << 1).wrapping_add(chunker.gear[usize::from(byte)]);
            if h & mask == 0 {
                return ControlFlow::Break(i + 1);
            }
        }
        ControlFlow::Continue(h)
    }

    fn digests(data: &[u8], lens: &[usize]) -> Vec<[u8; 32]> {
        let mut start = 0;
        lens.iter()
            .map(|&len| {
                let digest = Sha256::digest(&data[start..start + len]).into();
                start += len;
                digest
            })
            .collect()
    }

    fn small_params() -> impl Strategy<Value = CdcParams> {
        (7u32..13, 64u32..4096, 1u32..8192).prop_map(|(avg_bits, min, extra)| {
            let avg_size = 1 << avg_bits;
            CdcParams {
                min_size: min.min(avg_size - 1).max(MIN_CDC_CHUNK_SIZE),
                avg_size,
                max_size: avg_size + extra,
            }
        })
    }

    #[test]
    fn default_params_are_valid() {
        let params = CdcParams::default();
        assert_eq!(params.validate(), Ok(()));
        assert_eq!(
            (params.min_size, params.avg_size, params.max_size),
            (512 << 10, 1 << 20, 4 << 20)
        );
        assert_eq!(
            Chunking::Fixed {
                size: DEFAULT_FIXED_CHUNK_SIZE
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn invalid_cdc_params_are_rejected_with_the_bad_bound() {
        let p = |min_size, avg_size, max_size| CdcParams {
            min_size,
            avg_size,
            max_size,
        };
        assert_eq!(
            p(63, 1024, 4096).validate(),
            Err(ChunkerError::MinSizeTooSmall { min_size: 63 })
        );
        assert_eq!(
            p(256, 1000, 4096).validate(),
            Err(ChunkerError::AvgSizeNotPowerOfTwo { avg_size: 1000 })
        );
        assert_eq!(
            p(256, 0, 4096).validate(),
            Err(ChunkerError::AvgSizeNotPowerOfTwo { avg_size: 0 })
        );
        assert_eq!(
            p(1024, 1024, 4096).validate(),
            Err(ChunkerError::MinSizeNotBelowAvg {
                min_size: 1024,
                avg_size: 1024
            })
        );
        assert_eq!(
            p(256, 1024, 1024).validate(),
            Err(ChunkerError::MaxSizeNotAboveAvg {
                max_size: 1024,
                avg_size: 1024
            })
        );
        assert_eq!(
            p(256, 1024, MAX_CHUNK_SIZE + 1).validate(),
            Err(ChunkerError::MaxSizeTooLarge {
                max_size: MAX_CHUNK_SIZE + 1
            })
        );
        assert!(CdcChunker::new(&SECRET, p(0, 0, 0)).is_err());
        // Extremes of the allowed range.
        assert_eq!(p(64, 128, 129).validate(), Ok(()));
        assert_eq!(p(64, 32 << 20, MAX_CHUNK_SIZE).validate(), Ok(()));
        let message = p(256, 1024, MAX_CHUNK_SIZE + 1)
            .validate()
            .map_err(|e| e.to_string());
        assert_eq!(
            message,
            Err(
                "maximum chunk size 67108865 is too large: it must be at most 67108864 bytes"
                    .into()
            )
        );
    }

    #[test]
    fn fixed_size_validation() {
        for size in [4096, 65536, MAX_CHUNK_SIZE] {
            assert_eq!(Chunking::Fixed { size }.validate(), Ok(()));
        }
        for size in [0, 2048, 4095, 65535, 2 * MAX_CHUNK_SIZE, u32::MAX] {
            assert_eq!(
                Chunking::Fixed { size }.validate(),
                Err(ChunkerError::InvalidFixedSize { size })
            );
        }
        let message = Chunking::Fixed { size: 5000 }
            .validate()
            .map_err(|e| e.to_string());
        assert_eq!(
            message,
            Err("fixed chunk size 5000 is invalid: it must be a power of two from 4096 to 67108864 bytes".into())
        );
    }

    #[test]
    fn max_chunk_size_per_mode() {
        assert_eq!(
            Chunking::ContentDefined(CdcParams::default()).max_chunk_size(),
            4 << 20
        );
        assert_eq!(Chunking::Fixed { size: 65536 }.max_chunk_size(), 65536);
    }

    #[test]
    fn masks_have_normalized_widths_and_leave_top_bit_clear() {
        for avg_bits in 7..=25u32 {
            let params = CdcParams {
                min_size: 64,
                avg_size: 1 << avg_bits,
                max_size: MAX_CHUNK_SIZE,
            };
            let chunker = CdcChunker::new(&SECRET, params).expect("valid params");
            assert_eq!(chunker.mask_small.count_ones(), avg_bits + 2);
            assert_eq!(chunker.mask_large.count_ones(), avg_bits - 2);
            for mask in [chunker.mask_small, chunker.mask_large] {
                assert_eq!(mask >> 63, 0);
                assert!(mask.trailing_zeros() >= 64 - MASK_SPAN - 1);
            }
        }
    }

    #[test]
    fn gear_table_depends_on_secret_only() {
        let a = derive_gear(&SECRET);
        assert_eq!(a, derive_gear(&SECRET));
        assert_ne!(a, derive_gear(&[8; 32]));
        // All entries distinct: a collision would make two byte values
        // indistinguishable to the hash.
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 256);
    }

    #[test]
    fn debug_output_hides_key_material() {
        let chunker = CdcChunker::new(&SECRET, CdcParams::default()).expect("valid params");
        let shown = format!("{chunker:?}");
        assert!(shown.contains("min_size"));
        assert!(!shown.contains("gear"));
    }

    #[test]
    fn short_input_needs_more_data() {
        let chunker = CdcChunker::new(&SECRET, CdcParams::default()).expect("valid params");
        let data = random_bytes(1, 256 << 10);
        assert_eq!(chunker.find_boundary(&[]), None);
        assert_eq!(chunker.find_boundary(&data), None);
        assert_eq!(chunker.find_boundary(&data[..100]), None);
    }

    #[test]
    fn uniform_input_is_cut_at_max_size() {
        // Constant data gives a constant hash once the window is full, which
        // for this key never matches a mask, so every chunk hits the limit.
        let chunker = CdcChunker::new(&SECRET, CdcParams::default()).expect("valid params");
        let data = vec![0u8; 10 << 20];
        let lens = chunk_one_shot(&chunker, &data);
        assert_eq!(lens, [4 << 20, 4 << 20, 2 << 20]);
    }

    #[test]
    fn default_params_bounds_and_average_on_64_mib() {
        let params = CdcParams::default();
        let chunker = CdcChunker::new(&SECRET, params).expect("valid params");
        let data = random_bytes(2, 64 << 20);
        let lens = chunk_one_shot(&chunker, &data);
        let (last, rest) = lens.split_last().expect("at least one chunk");
        assert!(*last <= 4 << 20);
        for &len in rest {
            assert!(len > 512 << 10 && len <= 4 << 20, "chunk length {len}");
        }
        let mean = data.len() as f64 / lens.len() as f64;
        let avg = f64::from(params.avg_size);
        assert!(
            (0.65 * avg..=1.35 * avg).contains(&mean),
            "mean chunk size {mean} with {} chunks",
            lens.len()
        );
    }

    #[test]
    fn default_params_streaming_matches_one_shot() {
        let chunker = CdcChunker::new(&SECRET, CdcParams::default()).expect("valid params");
        let data = random_bytes(3, 24 << 20);
        let expected = chunk_one_shot(&chunker, &data);
        for pieces in [
            &[1 << 20][..],
            &[4 << 20],
            &[123_457, 3 << 20, 777, 2_000_003],
            &[64 << 20],
        ] {
            assert_eq!(chunk_streaming(&chunker, &data, pieces), expected);
        }
    }

    #[test]
    fn boundaries_survive_insertions_and_deletions() {
        let chunker = CdcChunker::new(&SECRET, CdcParams::default()).expect("valid params");
        let data = random_bytes(4, 32 << 20);
        let original = digests(&data, &chunk_one_shot(&chunker, &data));
        let original_set: HashSet<_> = original.iter().collect();

        let middle = 16 << 20;
        let mut inserted = data[..middle].to_vec();
        inserted.extend_from_slice(&random_bytes(5, 7));
        inserted.extend_from_slice(&data[middle..]);
        let mut deleted = data[..middle].to_vec();
        deleted.extend_from_slice(&data[middle + 1000..]);

        for edited in [inserted, deleted] {
            let chunks = digests(&edited, &chunk_one_shot(&chunker, &edited));
            let new = chunks.iter().filter(|d| !original_set.contains(d)).count();
            let shared = chunks.len() - new;
            assert!(new <= 2, "{new} new chunks of {}", chunks.len());
            assert!(
                shared * 10 >= original.len() * 9,
                "only {shared} of {} chunks shared",
                original.len()
            );
        }
    }

    #[test]
    fn different_secrets_give_different_boundaries() {
        let params = CdcParams::default();
        let data = random_bytes(6, 16 << 20);
        let cuts = |secret: &[u8; 32]| -> HashSet<usize> {
            let chunker = CdcChunker::new(secret, params).expect("valid params");
            chunk_one_shot(&chunker, &data)
                .iter()
                .scan(0, |end, len| {
                    *end += len;
                    Some(*end)
                })
                .filter(|&end| end < data.len())
                .collect()
        };
        let a = cuts(&[1; 32]);
        let b = cuts(&[2; 32]);
        assert!(!a.is_empty() && !b.is_empty());
        let common = a.intersection(&b).count();
        assert!(
            common * 4 < a.len(),
            "{common} of {} cut points shared",
            a.len()
        );
    }

    proptest! {
        #[test]
        fn pairwise_scan_matches_bytewise_reference(
            params in small_params(),
            seed in any::<u64>(),
            len in 0usize..20_000,
        ) {
            let chunker = CdcChunker::new(&SECRET, params).expect("valid params");
            let data = random_bytes(seed, len);
            let mut start = 0;
            while start < data.len() {
                let got = chunker.find_boundary(&data[start..]);
                prop_assert_eq!(got, reference_boundary(&chunker, &data[start..]));
                start += got.unwrap_or(data.len());
            }
        }

        /// Windows of several blocks with masks narrow enough that cuts fall in any
        /// lane, near run edges and in the tail, from any starting state.
        #[test]
        fn lane_scan_matches_bytewise_reference(
            seed in any::<u64>(),
            len in 0usize..3 * SCAN_BLOCK,
            bits in 10u32..22,
            fp in any::<u64>(),
        ) {
            let chunker = CdcChunker::new(&SECRET, CdcParams::default()).expect("valid params");
            let data = random_bytes(seed, len);
            let mask = spread_mask(bits);
            let mut start = 0;
            let mut h = fp;
            loop {
                let window = &data[start..];
                let expected = reference_scan(&chunker, window, mask, h);
                prop_assert_eq!(chunker.scan(window, mask, h), expected);
                match expected {
                    ControlFlow::Break(len) => {
                        start += len;
                        h = 0;
                    }
                    ControlFlow::Continue(_) => break,
                }
            }
        }

        /// Cuts in the first bytes of a lane, where the lane's state comes only from its
        /// warm-up: the runs before it repeat one byte whose hash never cuts.
        #[test]
        fn cut_at_the_start_of_a_lane_matches_bytewise_reference(
            seed in any::<u64>(),
            quiet_runs in 1usize..SCAN_LANES,
            bits in 2u32..8,
        ) {
            let chunker = CdcChunker::new(&SECRET, CdcParams::default()).expect("valid params");
            let mask = spread_mask(bits);
            let quiet = quiet_runs * SCAN_RUN;
            let filler = (0..=u8::MAX).find(|&b| {
                let run = vec![b; quiet];
                reference_scan(&chunker, &run, mask, 0).is_continue()
            });
            let Some(filler) = filler else {
                return Ok(());
            };
            let mut data = vec![filler; quiet];
            data.extend(random_bytes(seed, SCAN_BLOCK - quiet));
            let expected = reference_scan(&chunker, &data, mask, 0);
            prop_assert!(expected.is_break());
            prop_assert_eq!(chunker.scan(&data, mask, 0), expected);
        }

        #[test]
        fn streaming_in_random_pieces_matches_one_shot(
            params in small_params(),
            seed in any::<u64>(),
            len in 0usize..50_000,
            pieces in proptest::collection::vec(1usize..10_000, 1..8),
        ) {
            let chunker = CdcChunker::new(&SECRET, params).expect("valid params");
            let data = random_bytes(seed, len);
            let expected = chunk_one_shot(&chunker, &data);
            prop_assert_eq!(chunk_streaming(&chunker, &data, &pieces), expected);
        }

        #[test]
        fn chunks_stay_within_bounds(
            params in small_params(),
            seed in any::<u64>(),
            len in 0usize..50_000,
        ) {
            let chunker = CdcChunker::new(&SECRET, params).expect("valid params");
            let data = random_bytes(seed, len);
            let lens = chunk_one_shot(&chunker, &data);
            prop_assert_eq!(lens.iter().sum::<usize>(), data.len());
            let max = params.max_size as usize;
            let min = params.min_size as usize;
            if let Some((last, rest)) = lens.split_last() {
                prop_assert!(*last >= 1 && *last <= max);
                for &len in rest {
                    prop_assert!(len > min && len <= max, "chunk length {}", len);
                }
            }
        }

        #[test]
        fn any_params_validate_or_fail_without_panicking(
            min_size in any::<u32>(),
            avg_size in any::<u32>(),
            max_size in any::<u32>(),
            data in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let params = CdcParams { min_size, avg_size, max_size };
            match CdcChunker::new(&SECRET, params) {
                Ok(chunker) => {
                    prop_assert!(params.validate().is_ok());
                    if let Some(len) = chunker.find_boundary(&data) {
                        prop_assert!(len > min_size as usize && len <= data.len());
                    }
                }
                Err(err) => prop_assert_eq!(params.validate(), Err(err)),
            }
        }
    }

    /// Throughput of boundary finding; run with
    /// `cargo test --release -- --ignored --nocapture chunker_throughput`.
    #[test]
    #[ignore = "benchmark; meaningful only in a release build"]
    fn chunker_throughput() {
        let chunker = CdcChunker::new(&SECRET, CdcParams::default()).expect("valid params");
        let data = random_bytes(9, 256 << 20);
        let mut best = f64::INFINITY;
        let mut chunks = 0;
        for _ in 0..3 {
            let started = std::time::Instant::now();
            chunks =
                std::hint::black_box(chunk_one_shot(&chunker, std::hint::black_box(&data))).len();
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "chunked {} MiB into {chunks} chunks at {:.2} GB/s",
            data.len() >> 20,
            data.len() as f64 / best / 1e9
        );
    }
}
