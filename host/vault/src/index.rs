//! The chunk index: which pack holds each chunk, and where.
//!
//! On disk, an index file is a sealed object (magic `TSIX`) whose document is
//!
//! ```text
//! DOC   = PACK_COUNT(u32 LE) || PACK*
//! PACK  = PACK_ID(32) || ENTRY_COUNT(u32 LE) || ENTRY*
//! ENTRY = CHUNK_ID(32) || KIND(1) || OFFSET(u32 LE) || LEN(u32 LE) || RAW_LEN(u32 LE)
//! ```
//!
//! In memory, the index is one sorted array of 48-byte records plus a table of pack ids,
//! so a vault of a million chunks costs about 48 MB and opens with one sort, no per-chunk
//! allocation. A table of where each run of ids sharing their top bits starts (about four
//! records per run, under a byte per record) takes a lookup straight to the few records it
//! must search: ids are uniformly distributed, being SHA-256 or HMAC outputs.
//!
//! The same chunk may be listed in several packs (two writers raced, or a repack copied
//! it); lookups prefer a pack that is not marked for deletion.

use std::collections::HashMap;

use crate::codec::{self, DecodeError};
use crate::crypto::Crypto;
use crate::format::INDEX_MAGIC;
use crate::id::{ChunkId, IndexId, PackId};
use crate::pack::{BlobKind, PackEntry};

const ENTRY_LEN: usize = 32 + 1 + 4 + 4 + 4;
const KIND_TREE_BIT: u32 = 1 << 31;

/// One chunk's location, 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    id: ChunkId,
    pack: u32,
    offset: u32,
    len: u32,
    /// Plaintext length, with [`KIND_TREE_BIT`] set for tree blobs.
    raw_len_kind: u32,
}

/// Where a chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The pack.
    pub pack: PackId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Offset of the blob in the pack.
    pub offset: u32,
    /// Stored length.
    pub len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// The in-memory chunk index.
#[derive(Debug, Default, Clone)]
pub struct Index {
    records: Vec<Record>,
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    /// Packs marked for deletion: still readable, never used to deduplicate.
    excluded: Vec<bool>,
    sorted: bool,
    /// `buckets[b]..buckets[b + 1]` are the records whose id's top [`Index::bucket_bits`]
    /// bits are `b`; empty when the index is too small to need it (or unsorted).
    buckets: Vec<u32>,
    bucket_bits: u32,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Index {
            sorted: true,
            ..Default::default()
        }
    }

    fn pack_number(&mut self, pack: PackId) -> u32 {
        *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            self.excluded.push(false);
            (self.packs.len() - 1) as u32
        })
    }

    /// Makes room for `records` more records, so that adding many packs at once grows
    /// the index once rather than doubling it pack by pack.
    pub fn reserve(&mut self, records: usize) {
        self.records.reserve(records);
    }

    /// Adds the blobs of one pack. Call [`Index::finish`] before lookups.
    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) {
        self.buckets.clear();
        let number = self.pack_number(pack);
        self.records.reserve(entries.len());
        for e in entries {
            let kind_bit = if e.kind == BlobKind::Tree {
                KIND_TREE_BIT
            } else {
                0
            };
            self.records.push(Record {
                id: e.id,
                pack: number,
                offset: e.offset,
                len: e.len,
                raw_len_kind: e.raw_len | kind_bit,
            });
        }
        self.sorted = false;
    }

    /// Sorts the records and drops exact duplicates. A table that grew (by doubling, as
    /// records were added) to more than an eighth past what its records need is copied
    /// into one of their size, so the index keeps its bound of memory per chunk however
    /// many chunks there are.
    pub fn finish(&mut self) {
        if !self.sorted {
            self.records
                .sort_unstable_by(|a, b| id_cmp(&a.id, &b.id).then(a.pack.cmp(&b.pack)));
            self.records.dedup();
            if self.records.capacity() > self.records.len() + self.records.len() / 8 {
                self.records = self.records.to_vec();
            }
            self.sorted = true;
            self.build_buckets();
        }
    }

    /// Fills [`Index::buckets`] from the sorted records, with about four records a bucket.
    fn build_buckets(&mut self) {
        self.buckets = Vec::new();
        let n = self.records.len();
        // Bucket numbers and bounds are u32: an index too large for them just searches.
        if n < MIN_BUCKETED || u32::try_from(n).is_err() {
            return;
        }
        let bits = (n / 4).ilog2().min(MAX_BUCKET_BITS);
        self.bucket_bits = bits;
        self.buckets.reserve_exact((1 << bits) + 1);
        let mut at = 0;
        for bucket in 0..1usize << bits {
            while at < n && bucket_of(&self.records[at].id, bits) < bucket {
                at += 1;
            }
            self.buckets.push(at as u32);
        }
        self.buckets.push(n as u32);
    }

    /// Excludes exactly `packs` from deduplication (they are marked for deletion).
    pub fn set_excluded(&mut self, packs: &std::collections::HashSet<PackId>) {
        for (flag, pack) in self.excluded.iter_mut().zip(&self.packs) {
            *flag = packs.contains(pack);
        }
    }

    /// Whether exactly `packs` are excluded from deduplication.
    pub fn excludes_exactly(&self, packs: &std::collections::HashSet<PackId>) -> bool {
        self.excluded
            .iter()
            .zip(&self.packs)
            .all(|(&flag, pack)| flag == packs.contains(pack))
    }

    /// Marks a pack as excluded from deduplication (it is marked for deletion).
    pub fn exclude_pack(&mut self, pack: &PackId) {
        if let Some(&n) = self.pack_numbers.get(pack) {
            self.excluded[n as usize] = true;
        }
    }

    /// Whether the pack is excluded from deduplication.
    pub fn is_excluded(&self, pack: &PackId) -> bool {
        self.pack_numbers
            .get(pack)
            .is_some_and(|&n| self.excluded[n as usize])
    }

    /// The records that may hold `id`: its bucket's, or all of them.
    fn bounds(&self, id: &ChunkId) -> (usize, usize) {
        match self.buckets.as_slice() {
            [] => (0, self.records.len()),
            buckets => {
                let bucket = bucket_of(id, self.bucket_bits);
                (buckets[bucket] as usize, buckets[bucket + 1] as usize)
            }
        }
    }

    fn range(&self, id: &ChunkId) -> &[Record] {
        debug_assert!(self.sorted, "Index::finish must run before lookups");
        let (low, high) = self.bounds(id);
        self.range_in(id, low, high)
    }

    /// The records of `id` among `records[low..high]`, which hold every one there is.
    fn range_in(&self, id: &ChunkId, low: usize, high: usize) -> &[Record] {
        let start = low + self.records[low..high].partition_point(|r| id_less(&r.id, id));
        let len = self.records[start..]
            .iter()
            .take_while(|r| r.id == *id)
            .count();
        &self.records[start..start + len]
    }

    fn location(&self, r: &Record) -> Location {
        Location {
            pack: self.packs[r.pack as usize],
            kind: if r.raw_len_kind & KIND_TREE_BIT != 0 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            offset: r.offset,
            len: r.len,
            raw_len: r.raw_len_kind & !KIND_TREE_BIT,
        }
    }

    /// Where to read a chunk, preferring packs not marked for deletion.
    pub fn lookup(&self, id: &ChunkId) -> Option<Location> {
        let range = self.range(id);
        let best = range
            .iter()
            .find(|r| !self.excluded[r.pack as usize])
            .or(range.first())?;
        Some(self.location(best))
    }

    /// Every location of a chunk.
    pub fn locations(&self, id: &ChunkId) -> Vec<Location> {
        self.range(id).iter().map(|r| self.location(r)).collect()
    }

    /// Whether a chunk is stored in a pack that a new backup may rely on.
    pub fn has_usable(&self, id: &ChunkId) -> bool {
        self.range(id)
            .iter()
            .any(|r| !self.excluded[r.pack as usize])
    }

    /// The position of the first of `ids` not [usable](Index::has_usable), if any.
    ///
    /// The same answer as asking for each in turn, faster for many ids (the chunks of a
    /// disk carried forward): they are looked up [`LOOKAHEAD`] at a time, the first and
    /// last record each may be among read for all of them before any is searched, so
    /// that the memory reads of a group overlap instead of waiting for one another.
    pub fn first_unusable<'a>(&self, ids: impl IntoIterator<Item = &'a ChunkId>) -> Option<usize> {
        let mut ids = ids.into_iter().enumerate().peekable();
        let mut group: Vec<(usize, &ChunkId, usize, usize, u64, u64)> =
            Vec::with_capacity(LOOKAHEAD);
        while ids.peek().is_some() {
            group.clear();
            for (at, id) in ids.by_ref().take(LOOKAHEAD) {
                let (low, high) = self.bounds(id);
                group.push((at, id, low, high, 0, 0));
            }
            // The first and last record of each bucket: independent reads.
            for (_, _, low, high, first, last) in group.iter_mut() {
                if *low < *high {
                    *first = head(&self.records[*low].id);
                    *last = head(&self.records[*high - 1].id);
                }
            }
            for &(at, id, low, high, first, last) in &group {
                // An id outside its bucket's first and last record is not in the index.
                let usable = low < high
                    && (first..=last).contains(&head(id))
                    && self
                        .range_in(id, low, high)
                        .iter()
                        .any(|r| !self.excluded[r.pack as usize]);
                if !usable {
                    return Some(at);
                }
            }
        }
        None
    }

    /// Number of chunk records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether the pack appears in the index.
    pub fn has_pack(&self, pack: &PackId) -> bool {
        self.pack_numbers.contains_key(pack)
    }

    /// Every pack in the index.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Bytes of memory the index holds per chunk record, for the benchmark's report.
    pub fn bytes_per_chunk(&self) -> f64 {
        if self.records.is_empty() {
            return 0.0;
        }
        let records = self.records.capacity() * std::mem::size_of::<Record>()
            + self.buckets.capacity() * std::mem::size_of::<u32>();
        let packs = self.packs.capacity() * (32 + 1)
            + self.pack_numbers.capacity() * (std::mem::size_of::<PackId>() + 4 + 1);
        (records + packs) as f64 / self.records.len() as f64
    }

    /// Groups the records by pack: every pack with its blobs.
    pub fn by_pack(&self) -> HashMap<PackId, Vec<PackEntry>> {
        let mut out: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
        for r in &self.records {
            let loc = self.location(r);
            out.entry(loc.pack).or_default().push(PackEntry {
                id: r.id,
                kind: loc.kind,
                offset: loc.offset,
                len: loc.len,
                raw_len: loc.raw_len,
            });
        }
        out
    }
}

/// The contents of one index file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// Packs and their blobs.
    pub packs: Vec<(PackId, Vec<PackEntry>)>,
}

impl IndexFile {
    /// Number of blobs listed.
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|(_, e)| e.len()).sum()
    }

    /// Encodes and seals the file; returns its name and bytes.
    pub fn seal(&self, crypto: &Crypto) -> (IndexId, Vec<u8>) {
        let mut doc = Vec::with_capacity(4 + self.packs.len() * 36 + self.blob_count() * ENTRY_LEN);
        doc.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for (pack, entries) in &self.packs {
            doc.extend_from_slice(&pack.0);
            doc.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for e in entries {
                doc.extend_from_slice(&e.id.0);
                doc.push(match e.kind {
                    BlobKind::Data => 0,
                    BlobKind::Tree => 1,
                });
                doc.extend_from_slice(&e.offset.to_le_bytes());
                doc.extend_from_slice(&e.len.to_le_bytes());
                doc.extend_from_slice(&e.raw_len.to_le_bytes());
            }
        }
        let sealed = codec::seal_object(crypto, INDEX_MAGIC, &doc, true);
        (IndexId::hash_of(&sealed), sealed)
    }

    /// Opens and parses a sealed index file.
    pub fn open(crypto: &Crypto, sealed: &[u8]) -> Result<Self, DecodeError> {
        let doc = codec::open_object(crypto, INDEX_MAGIC, sealed)?;
        let mut reader = Cursor { doc: &doc, pos: 0 };
        let pack_count = reader.u32()?;
        let mut packs = Vec::new();
        for _ in 0..pack_count {
            let pack = PackId(reader.id()?);
            let count = reader.u32()? as usize;
            if count > doc.len() / ENTRY_LEN {
                return Err(DecodeError::Malformed(format!(
                    "pack claims {count} entries"
                )));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let id = ChunkId(reader.id()?);
                let kind = match reader.u8()? {
                    0 => BlobKind::Data,
                    1 => BlobKind::Tree,
                    k => return Err(DecodeError::Malformed(format!("unknown blob kind {k}"))),
                };
                let offset = reader.u32()?;
                let len = reader.u32()?;
                let raw_len = reader.u32()?;
                entries.push(PackEntry {
                    id,
                    kind,
                    offset,
                    len,
                    raw_len,
                });
            }
            packs.push((pack, entries));
        }
        if reader.pos != doc.len() {
            return Err(DecodeError::Malformed("trailing bytes".into()));
        }
        Ok(IndexFile { packs })
    }
}

struct Cursor<'a> {
    doc: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.doc.len())
            .ok_or_else(|| {
                DecodeError::Malformed(format!(
                    "truncated at byte {} of {}",
                    self.pos,
                    self.doc.len()
                ))
            })?;
        let out = &self.doc[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn id(&mut self) -> Result<[u8; 32], DecodeError> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
}

/// Smallest index given a bucket table: below it a search is a few steps anyway.
const MIN_BUCKETED: usize = 64;
/// Most bits a bucket number takes (a table of 64 MiB, for 64 million records and more).
const MAX_BUCKET_BITS: u32 = 24;

/// Ids looked up together by [`Index::first_unusable`].
const LOOKAHEAD: usize = 16;

/// The first eight bytes of an id as a number, in the order of the id's bytes.
fn head(id: &ChunkId) -> u64 {
    let b = &id.0;
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The bucket of `id`: its top `bits` bits (1 to [`MAX_BUCKET_BITS`]).
fn bucket_of(id: &ChunkId, bits: u32) -> usize {
    (head(id) >> (64 - bits)) as usize
}

/// [`ChunkId`]'s `Ord`, decided by the first eight bytes read as a number whenever they
/// differ: ids are uniformly distributed, so that is nearly always, and sorting or searching
/// a million records then compares integers instead of calling `memcmp`.
fn id_cmp(a: &ChunkId, b: &ChunkId) -> std::cmp::Ordering {
    head(a).cmp(&head(b)).then_with(|| a.cmp(b))
}

/// `a < b` in the order of [`ChunkId`]'s `Ord`; see [`id_cmp`].
fn id_less(a: &ChunkId, b: &ChunkId) -> bool {
    id_cmp(a, b).is_lt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    fn entry(n: u32) -> PackEntry {
        PackEntry {
            id: ChunkId::hash_of(&n.to_le_bytes()),
            kind: if n.is_multiple_of(3) {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            offset: 5 + n,
            len: n + 1,
            raw_len: n * 2,
        }
    }

    #[test]
    fn record_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 48);
    }

    #[test]
    fn memory_per_chunk_stays_bounded_whatever_the_count() {
        // Counts just past a doubling of the table, as a vault's index is read a batch of
        // files at a time.
        for count in [1_000u32, 45_000, 85_000] {
            let mut index = Index::new();
            let mut n = 0;
            while n < count {
                let end = (n + 5_000).min(count);
                let entries: Vec<PackEntry> = (n..end).map(entry).collect();
                index.reserve(entries.len());
                index.add_pack(PackId::hash_of(&n.to_le_bytes()), &entries);
                n = end;
            }
            index.finish();
            let per_chunk = index.bytes_per_chunk();
            assert!(
                per_chunk <= 64.0,
                "{per_chunk} bytes a chunk for {count} chunks"
            );
        }
    }

    #[test]
    fn file_round_trip_and_truncation() {
        let crypto = Crypto::encrypted(&MasterKey::generate());
        let file = IndexFile {
            packs: vec![
                (PackId::hash_of(b"a"), (0..10).map(entry).collect()),
                (PackId::hash_of(b"b"), (10..12).map(entry).collect()),
            ],
        };
        let (id, sealed) = file.seal(&crypto);
        assert_eq!(id, IndexId::hash_of(&sealed));
        assert_eq!(IndexFile::open(&crypto, &sealed).unwrap(), file);
        for cut in 0..sealed.len() {
            assert!(IndexFile::open(&crypto, &sealed[..cut]).is_err());
        }
    }

    #[test]
    fn bucketed_lookups_agree_with_a_linear_search() {
        let pack = PackId::hash_of(b"p");
        let mut entries: Vec<PackEntry> = (0..20_000).map(entry).collect();
        // Ids at the ends of the id space and ids sharing their top bytes land in the
        // first, the last and one crowded bucket.
        for (n, bytes) in [(0u32, [0u8; 32]), (1, [0xff; 32]), (2, [0x80; 32])] {
            for k in 0..5u8 {
                let mut id = bytes;
                id[31] = id[31].wrapping_add(k);
                entries.push(PackEntry {
                    id: ChunkId(id),
                    ..entry(100_000 + u32::from(k) + 10 * n)
                });
            }
        }
        let mut index = Index::new();
        index.add_pack(pack, &entries);
        index.finish();
        assert!(
            index.buckets.len() > 1000,
            "{} buckets",
            index.buckets.len()
        );
        for e in &entries {
            assert_eq!(index.lookup(&e.id).map(|l| l.offset), Some(e.offset));
        }
        for n in 30_000..31_000u32 {
            assert!(index.lookup(&ChunkId::hash_of(&n.to_le_bytes())).is_none());
        }
        // A pack added later is found once the index is finished again.
        index.add_pack(PackId::hash_of(b"q"), &[entry(50_000)]);
        index.finish();
        assert!(index.lookup(&entry(50_000).id).is_some());
    }

    proptest! {
        /// Ids that share their first bytes too, where the integer test must defer.
        #[test]
        fn id_order_matches_the_byte_order(
            a in any::<[u8; 32]>(),
            b in any::<[u8; 32]>(),
            shared in 0usize..=32,
        ) {
            let a = ChunkId(a);
            let mut b = ChunkId(b);
            b.0[..shared].copy_from_slice(&a.0[..shared]);
            prop_assert_eq!(id_less(&a, &b), a < b);
            prop_assert_eq!(id_less(&b, &a), b < a);
        }

        #[test]
        fn lookups_find_every_added_chunk(ns in proptest::collection::vec(0u32..10_000, 1..300)) {
            let mut index = Index::new();
            let pack_a = PackId::hash_of(b"a");
            let pack_b = PackId::hash_of(b"b");
            let (first, second) = ns.split_at(ns.len() / 2);
            index.add_pack(pack_a, &first.iter().map(|&n| entry(n)).collect::<Vec<_>>());
            index.add_pack(pack_b, &second.iter().map(|&n| entry(n)).collect::<Vec<_>>());
            index.finish();
            for &n in &ns {
                let e = entry(n);
                let loc = index.lookup(&e.id).unwrap();
                prop_assert_eq!(loc.offset, e.offset);
                prop_assert_eq!(loc.raw_len, e.raw_len);
                prop_assert_eq!(loc.kind, e.kind);
            }
            prop_assert!(index.lookup(&ChunkId::hash_of(b"missing")).is_none());
            index.exclude_pack(&pack_a);
            for &n in first {
                let usable = second.contains(&n);
                prop_assert_eq!(index.has_usable(&entry(n).id), usable);
            }
        }

        /// Looked up in groups, ids give the answer of looking each up in turn: the
        /// position of the first missing or excluded one.
        #[test]
        fn the_first_unusable_id_is_found_in_groups_as_one_by_one(
            stored in proptest::collection::vec(0u32..5_000, 0..3_000),
            excluded in proptest::collection::vec(0u32..5_000, 0..50),
            asked in proptest::collection::vec(0u32..6_000, 0..200),
            edge in 0usize..4,
        ) {
            let mut index = Index::new();
            let good = PackId::hash_of(b"good");
            let marked = PackId::hash_of(b"marked");
            index.add_pack(good, &stored.iter().map(|&n| entry(n)).collect::<Vec<_>>());
            index.add_pack(marked, &excluded.iter().map(|&n| entry(n)).collect::<Vec<_>>());
            index.finish();
            index.exclude_pack(&marked);
            let mut ids: Vec<ChunkId> = asked.iter().map(|&n| entry(n).id).collect();
            // Ids below and above every stored one, in the first and last buckets.
            match edge {
                1 => ids.push(ChunkId([0; 32])),
                2 => ids.push(ChunkId([0xff; 32])),
                3 => ids.insert(0, ChunkId([0; 32])),
                _ => {}
            }
            let expected = ids.iter().position(|id| !index.has_usable(id));
            prop_assert_eq!(index.first_unusable(&ids), expected);
            // Only stored ids: none is unusable unless excluded alone.
            let present: Vec<ChunkId> = stored.iter().map(|&n| entry(n).id).collect();
            prop_assert_eq!(
                index.first_unusable(&present),
                present.iter().position(|id| !index.has_usable(id))
            );
        }
    }

    /// `cargo test --release -p tessera-vault lookups_in_groups_are_faster -- --ignored
    /// --nocapture` prints the time of both ways on a million chunks.
    #[test]
    #[ignore = "a timing, not a check"]
    fn lookups_in_groups_are_faster() {
        let mut index = Index::new();
        let entries: Vec<PackEntry> = (0..1_000_000).map(entry).collect();
        index.add_pack(PackId::hash_of(b"p"), &entries);
        index.finish();
        let ids: Vec<ChunkId> = (0..1_000_000u32)
            .step_by(7)
            .map(|n| entry(n.wrapping_mul(2_654_435_761) % 1_000_000).id)
            .collect();
        for _ in 0..3 {
            let start = std::time::Instant::now();
            let one = ids.iter().position(|id| !index.has_usable(id));
            let one_by_one = start.elapsed();
            let start = std::time::Instant::now();
            let grouped = index.first_unusable(&ids);
            let in_groups = start.elapsed();
            assert_eq!(one, grouped);
            println!(
                "{} lookups: one by one {one_by_one:?}, in groups {in_groups:?}",
                ids.len()
            );
        }
    }
}
