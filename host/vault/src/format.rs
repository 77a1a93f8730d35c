//! Magic numbers, versions and size limits of everything the vault stores.
//!
//! Every constant here is part of the on-disk format. Changing one makes existing vaults
//! unreadable: add a new version instead and keep reading the old one.

/// First bytes of every pack file: `b"TSPK"`, "tessera pack".
pub const PACK_MAGIC: [u8; 4] = *b"TSPK";
/// Version of the pack layout described in [`crate::pack`].
pub const PACK_VERSION: u8 = 1;

/// First bytes of an index file: `b"TSIX"`, "tessera index".
pub const INDEX_MAGIC: [u8; 4] = *b"TSIX";
/// First bytes of a recovery point file: `b"TSPT"`, "tessera point".
pub const POINT_MAGIC: [u8; 4] = *b"TSPT";
/// First bytes of a pack header (inside the pack trailer): `b"TSPH"`.
pub const PACK_HEADER_MAGIC: [u8; 4] = *b"TSPH";
/// First bytes of a writer-session file: `b"TSWS"`, "tessera writer session".
pub const SESSION_MAGIC: [u8; 4] = *b"TSWS";
/// First bytes of a deletion-mark file: `b"TSDM"`, "tessera deletion mark".
pub const MARK_MAGIC: [u8; 4] = *b"TSDM";
/// First bytes of a damage record: `b"TSDR"`, "tessera damage record".
pub const DAMAGE_MAGIC: [u8; 4] = *b"TSDR";
/// Version of the sealed-object frame described in [`crate::codec::seal_object`].
pub const SEALED_VERSION: u8 = 1;

/// Value of `format` in the vault's `config` file.
pub const CONFIG_FORMAT: &str = "tessera-vault";
/// Version of the vault layout as a whole (config, key slots, directories).
pub const VAULT_VERSION: u32 = 1;
/// Version of the JSON documents stored in trees and points.
pub const TREE_VERSION: u32 = 1;

/// Length of a chunk, pack, point or index id: a SHA-256 or HMAC-SHA-256 output.
pub const ID_LEN: usize = 32;
/// AES-256-GCM nonce length. Nonces are random: with 96 bits, one data key stays far from
/// the 2^32-message collision bound as long as the vault holds fewer than ~4 billion chunks.
pub const NONCE_LEN: usize = 12;
/// AES-256-GCM authentication tag length.
pub const TAG_LEN: usize = 16;

/// Pack size at which a writer closes the pack and uploads it. Large enough that a
/// terabyte needs tens of thousands of objects, not millions; small enough that a writer's
/// memory stays bounded and a repack rewrites little.
pub const PACK_TARGET_SIZE: usize = 16 << 20;

/// Extents stored inline in a tree entry before the list moves into separate list blobs.
pub const INLINE_EXTENTS: usize = 256;
/// Opening of a list blob in the binary form (list version 3). A run of chunks of one
/// length, which is what a disk's fixed-size chunks make, costs 32 bytes per chunk: the
/// ids alone, which no compressor shrinks, so such lists are stored raw.
///
/// ```text
/// LIST   = MAGIC("TXL3") || COUNT(u32 LE) || RECORD*
/// RECORD = 0 || LEN(u64 LE)                                      a hole
///        | 1 || LEN(u64 LE) || CHUNK_ID(32)                      a chunk
///        | 2 || N(u32 LE, 2 or more) || LEN(u64 LE) || CHUNK_ID(32) * N
///                                                                N chunks of LEN bytes
/// ```
///
/// COUNT is the number of extents. Earlier versions wrote [`LIST_MAGIC_V2`] lists and,
/// before them, JSON documents opening with `{`; both still read.
pub const LIST_MAGIC: [u8; 4] = *b"TXL3";
/// Opening of a list blob of version 2:
///
/// ```text
/// LIST   = MAGIC("TXL2") || COUNT(u32 LE) || EXTENT*
/// EXTENT = LEN(u64 LE) || KIND(1: 0 hole, 1 chunk) || CHUNK_ID(32, chunks only)
/// ```
pub const LIST_MAGIC_V2: [u8; 4] = *b"TXL2";
/// Extents per list blob. With 64 KiB fixed chunks one list covers 512 MiB of a disk, so an
/// unchanged half-gigabyte region of an image deduplicates to the same list blob.
pub const LIST_EXTENTS: usize = 8192;

/// Largest chunk the vault accepts when decoding. A hostile or corrupt pack header that
/// claims more is refused before any allocation.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Largest metadata object (index, point, pack header) read into memory.
pub const MAX_OBJECT_SIZE: u64 = 1 << 30;

/// Compression level used when the caller does not choose one.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;
