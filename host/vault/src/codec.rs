//! How chunks and metadata documents are turned into stored bytes and back.
//!
//! A chunk stored in a pack (a *blob*):
//!
//! ```text
//! encrypted:   NONCE(12) || AES-256-GCM(aad = CHUNK_ID, MODE(1) || PAYLOAD) || TAG(16)
//! unencrypted: MODE(1) || PAYLOAD
//! MODE: 0 = PAYLOAD is the chunk as is, 1 = PAYLOAD is a zstd frame of the chunk
//! ```
//!
//! Binding the chunk id as associated data means a blob moved to another chunk's place
//! fails authentication instead of restoring wrong bytes. In an unencrypted vault readers
//! re-hash the chunk instead.
//!
//! A metadata object (index, point, pack header, session, mark) is *sealed*:
//!
//! ```text
//! MAGIC(4) || VERSION(1) || FLAGS(1) || BODY
//! FLAGS: bit 0 = BODY is NONCE || AES-256-GCM(aad = MAGIC || VERSION || FLAGS, DOC) || TAG,
//!        else BODY is DOC; bit 1 = DOC is a zstd frame of the document
//! ```

use std::cell::RefCell;

use bytes::Bytes;

use crate::crypto::Crypto;
use crate::format::{MAX_CHUNK_SIZE, MAX_OBJECT_SIZE, NONCE_LEN, SEALED_VERSION, TAG_LEN};
use crate::id::ChunkId;

const MODE_RAW: u8 = 0;
const MODE_ZSTD: u8 = 1;
const FLAG_ENCRYPTED: u8 = 1;
const FLAG_ZSTD: u8 = 2;
const SEALED_HEADER_LEN: usize = 6;

/// Chunks smaller than this are compressed without first probing a sample.
const PROBE_THRESHOLD: usize = 64 << 10;
/// Largest sample compressed to decide whether a chunk is worth compressing.
const PROBE_LEN: usize = 16 << 10;
/// A chunk's sample is at most this fraction of it: a fixed-size disk chunk of 64 KiB
/// would otherwise spend a quarter of a full compression on the probe alone.
const PROBE_SHARE: usize = 16;

/// Why a stored blob or object could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Authentication failed.
    #[error("authentication failed: the bytes were damaged or tampered with")]
    Auth,
    /// The bytes are too short or have an unknown mode, magic or version.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Decompression failed or produced the wrong length.
    #[error("cannot decompress: {0}")]
    Decompress(String),
    /// The plaintext does not hash to the id it is stored under.
    #[error("content does not match its id")]
    IdMismatch,
}

thread_local! {
    /// Compression contexts per thread, by level: the probe's and the vault's. Creating
    /// one allocates and clears its tables, which costs more than compressing a small
    /// chunk.
    static COMPRESSORS: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(Vec::new()) };
}

/// Compression contexts a thread keeps: the probe's level and one other.
const KEPT_COMPRESSORS: usize = 2;

thread_local! {
    /// A decompression context per thread: creating one per chunk costs more than
    /// decompressing a small file.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        f(slot.as_mut().expect("just set"))
    })
}

fn with_compressor<T>(level: i32, f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> T) -> T {
    COMPRESSORS.with(|cell| {
        let mut kept = cell.borrow_mut();
        let at = match kept.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                let compressor = zstd::bulk::Compressor::new(level)
                    .expect("zstd accepts every level the vault passes");
                if kept.len() == KEPT_COMPRESSORS {
                    kept.remove(0);
                }
                kept.push((level, compressor));
                kept.len() - 1
            }
        };
        f(&mut kept[at].1)
    })
}

/// Compresses `data` if that shrinks it; `None` means "store raw".
///
/// Large chunks are probed first: a sample from the middle (16 KiB, or a sixteenth of a
/// smaller chunk) is compressed at the fastest level, and if that does not save 3 % the
/// whole chunk is stored raw. Media, archives, encrypted files and the used blocks of
/// disks are common in backups, and compressing them in full would cost more CPU than
/// hashing does.
pub fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if level == 0 || data.len() < 64 {
        return None;
    }
    if data.len() >= PROBE_THRESHOLD {
        let len = PROBE_LEN.min(data.len() / PROBE_SHARE);
        let mid = data.len() / 2 - len / 2;
        let sample = &data[mid..mid + len];
        let probed = with_compressor(1, |c| c.compress(sample)).ok()?;
        if probed.len() * 32 > sample.len() * 31 {
            return None;
        }
    }
    let out = with_compressor(level, |c| c.compress(data)).ok()?;
    (out.len() < data.len()).then_some(out)
}

/// Free bytes a chunk buffer keeps in front of the chunk for [`encode_chunk`]: the nonce
/// and the mode byte.
pub const CHUNK_HEADROOM: usize = NONCE_LEN + 1;
/// Free bytes a chunk buffer keeps after the chunk for [`encode_chunk`]: the tag.
pub const CHUNK_TAILROOM: usize = TAG_LEN;

/// Encodes the chunk of `len` bytes held in `buf[CHUNK_HEADROOM..]` as a blob and
/// returns it; `buf` holds at least [`CHUNK_TAILROOM`] bytes after the chunk. A chunk
/// stored raw, the common case for data that does not compress, is sealed where it lies
/// in `buf`, which destroys it but saves a copy of every byte; a compressed one is sealed
/// into `scratch`.
pub fn encode_chunk<'a>(
    crypto: &Crypto,
    id: &ChunkId,
    buf: &'a mut [u8],
    len: usize,
    level: i32,
    scratch: &'a mut Vec<u8>,
) -> &'a [u8] {
    match seal_chunk(crypto, id, buf, len, level, scratch) {
        Sealed::InBuf(range) => &buf[range],
        Sealed::InScratch => scratch,
    }
}

/// [`encode_chunk`], leaving the blob at the start of `buf`: for a chunk read straight
/// into the storage its blob goes to. Returns the blob's length, which is at most the
/// chunk's with its head- and tailroom.
pub fn encode_chunk_in_place(
    crypto: &Crypto,
    id: &ChunkId,
    buf: &mut [u8],
    len: usize,
    level: i32,
    scratch: &mut Vec<u8>,
) -> usize {
    match seal_chunk(crypto, id, buf, len, level, scratch) {
        Sealed::InBuf(range) => {
            let blob_len = range.len();
            // Only an unencrypted vault's blob starts after the nonce's room.
            if range.start > 0 {
                buf.copy_within(range, 0);
            }
            blob_len
        }
        Sealed::InScratch => {
            // Compressed, so shorter than the chunk.
            buf[..scratch.len()].copy_from_slice(scratch);
            scratch.len()
        }
    }
}

/// Where [`seal_chunk`] left a blob.
enum Sealed {
    InBuf(std::ops::Range<usize>),
    InScratch,
}

fn seal_chunk(
    crypto: &Crypto,
    id: &ChunkId,
    buf: &mut [u8],
    len: usize,
    level: i32,
    scratch: &mut Vec<u8>,
) -> Sealed {
    let end = CHUNK_HEADROOM + len;
    match compress(&buf[CHUNK_HEADROOM..end], level) {
        Some(compressed) => {
            scratch.clear();
            crypto.seal_into(&id.0, &[&[MODE_ZSTD], &compressed], scratch);
            Sealed::InScratch
        }
        None => {
            buf[CHUNK_HEADROOM - 1] = MODE_RAW;
            Sealed::InBuf(crypto.seal_in_place(&id.0, buf, 0, end))
        }
    }
}

/// Encodes a chunk as a blob, appending to `out`; returns whether it was compressed.
pub fn encode_blob(
    crypto: &Crypto,
    id: &ChunkId,
    data: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) -> bool {
    match compress(data, level) {
        Some(compressed) => {
            crypto.seal_into(&id.0, &[&[MODE_ZSTD], &compressed], out);
            true
        }
        None => {
            crypto.seal_into(&id.0, &[&[MODE_RAW], data], out);
            false
        }
    }
}

/// Decodes a blob into the chunk's plaintext of `raw_len` bytes, verifying it. The blob
/// is decrypted in place and a raw chunk is returned without copying.
pub fn decode_blob(
    crypto: &Crypto,
    id: &ChunkId,
    mut blob: Vec<u8>,
    raw_len: u32,
) -> Result<Bytes, DecodeError> {
    if raw_len > MAX_CHUNK_SIZE {
        return Err(DecodeError::Malformed(format!(
            "chunk length {raw_len} exceeds the limit"
        )));
    }
    let range = crypto
        .open_in_place(&id.0, &mut blob)
        .map_err(|_| DecodeError::Auth)?;
    if range.is_empty() {
        return Err(DecodeError::Malformed("empty blob".into()));
    }
    let mode = blob[range.start];
    let data = match mode {
        MODE_RAW => Bytes::from(blob).slice(range.start + 1..range.end),
        MODE_ZSTD => {
            with_decompressor(|d| d.decompress(&blob[range.start + 1..range.end], raw_len as usize))
                .map(Bytes::from)
                .map_err(|e| DecodeError::Decompress(e.to_string()))?
        }
        other => return Err(DecodeError::Malformed(format!("unknown blob mode {other}"))),
    };
    if data.len() != raw_len as usize {
        return Err(DecodeError::Decompress(format!(
            "expected {raw_len} bytes, got {}",
            data.len()
        )));
    }
    // AES-GCM with the id as associated data already proves the plaintext is the one stored
    // under this id; without encryption only re-hashing does.
    if !crypto.is_encrypted() && crypto.chunk_id(&data) != *id {
        return Err(DecodeError::IdMismatch);
    }
    Ok(data)
}

/// Seals a metadata document under `magic`.
pub fn seal_object(crypto: &Crypto, magic: [u8; 4], doc: &[u8], compress_doc: bool) -> Vec<u8> {
    let compressed = if compress_doc { compress(doc, 3) } else { None };
    let mut flags = 0;
    if crypto.is_encrypted() {
        flags |= FLAG_ENCRYPTED;
    }
    if compressed.is_some() {
        flags |= FLAG_ZSTD;
    }
    let header = [
        magic[0],
        magic[1],
        magic[2],
        magic[3],
        SEALED_VERSION,
        flags,
    ];
    let body = compressed.as_deref().unwrap_or(doc);
    let mut out = Vec::with_capacity(header.len() + body.len() + crypto.overhead());
    out.extend_from_slice(&header);
    crypto.seal_into(&header, &[body], &mut out);
    out
}

/// Opens a sealed object, checking its magic.
pub fn open_object(crypto: &Crypto, magic: [u8; 4], sealed: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if sealed.len() < SEALED_HEADER_LEN {
        return Err(DecodeError::Malformed(format!(
            "only {} bytes",
            sealed.len()
        )));
    }
    let (header, body) = sealed.split_at(SEALED_HEADER_LEN);
    if header[..4] != magic {
        return Err(DecodeError::Malformed(format!(
            "wrong magic {:?}, expected {:?}",
            String::from_utf8_lossy(&header[..4]),
            String::from_utf8_lossy(&magic)
        )));
    }
    if header[4] != SEALED_VERSION {
        return Err(DecodeError::Malformed(format!(
            "unsupported version {}",
            header[4]
        )));
    }
    let flags = header[5];
    if (flags & FLAG_ENCRYPTED != 0) != crypto.is_encrypted() {
        return Err(DecodeError::Malformed(
            "encryption flag does not match the vault".into(),
        ));
    }
    let doc = crypto.open(header, body).map_err(|_| DecodeError::Auth)?;
    if flags & FLAG_ZSTD != 0 {
        decompress_bounded(&doc)
    } else {
        Ok(doc)
    }
}

/// Largest declared size of a document decompressed in one call.
const ONE_SHOT_LIMIT: u64 = 256 << 20;

/// Decompresses a zstd frame of a metadata document, refusing to expand past
/// [`MAX_OBJECT_SIZE`] so a hostile frame cannot exhaust memory.
///
/// The vault's own frames declare their size, so they are decompressed in one call into a
/// buffer of that size; a frame without one, or declaring more than [`ONE_SHOT_LIMIT`]
/// (memory a forged header could claim without sending the bytes), is streamed.
fn decompress_bounded(frame: &[u8]) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let too_large = || DecodeError::Decompress("document larger than the limit".into());
    let declared = zstd::zstd_safe::get_frame_content_size(frame)
        .map_err(|_| DecodeError::Decompress("not a zstd frame".into()))?;
    if declared.is_some_and(|size| size > MAX_OBJECT_SIZE) {
        return Err(too_large());
    }
    if let Some(size) = declared.filter(|&size| size <= ONE_SHOT_LIMIT) {
        return with_decompressor(|d| d.decompress(frame, size as usize))
            .map_err(|e| DecodeError::Decompress(e.to_string()));
    }
    let decoder = zstd::stream::read::Decoder::new(frame)
        .map_err(|e| DecodeError::Decompress(e.to_string()))?;
    let mut out = Vec::new();
    decoder
        .take(MAX_OBJECT_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Decompress(e.to_string()))?;
    if out.len() as u64 > MAX_OBJECT_SIZE {
        return Err(too_large());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn crypto_pair() -> [Crypto; 2] {
        [
            Crypto::encrypted(&MasterKey::generate()),
            Crypto::plain([7; 32]),
        ]
    }

    #[test]
    fn blob_round_trip() {
        for crypto in crypto_pair() {
            for data in [
                vec![0u8; 0],
                b"short".to_vec(),
                vec![b'a'; 200_000],
                random(300_000),
            ] {
                let id = crypto.chunk_id(&data);
                let mut blob = Vec::new();
                let compressed = encode_blob(&crypto, &id, &data, 3, &mut blob);
                assert_eq!(compressed, data.len() == 200_000);
                assert_eq!(
                    decode_blob(&crypto, &id, blob.clone(), data.len() as u32).unwrap(),
                    data
                );
                let other = crypto.chunk_id(b"other");
                assert!(decode_blob(&crypto, &other, blob.clone(), data.len() as u32).is_err());
                if !blob.is_empty() {
                    let mut bad = blob.clone();
                    let last = bad.len() - 1;
                    bad[last] ^= 0x55;
                    assert!(decode_blob(&crypto, &id, bad, data.len() as u32).is_err());
                }
            }
        }
    }

    #[test]
    fn chunks_encoded_in_place_decode_like_blobs() {
        for crypto in crypto_pair() {
            for data in [
                b"short".to_vec(),
                vec![b'a'; 200_000],
                random(64 << 10),
                random(300_000),
            ] {
                let id = crypto.chunk_id(&data);
                let mut buf = vec![0xEE; CHUNK_HEADROOM];
                buf.extend_from_slice(&data);
                // Bytes past the tail room must be left alone.
                buf.extend_from_slice(&[0xEE; CHUNK_TAILROOM + 7]);
                let mut scratch = Vec::new();
                let blob =
                    encode_chunk(&crypto, &id, &mut buf, data.len(), 3, &mut scratch).to_vec();
                assert_eq!(buf[buf.len() - 7..], [0xEE; 7]);
                assert_eq!(blob.len() < data.len(), data.len() == 200_000);
                assert!(blob.len() <= data.len() + crypto.overhead() + 1);
                assert_eq!(
                    decode_blob(&crypto, &id, blob.clone(), data.len() as u32).unwrap(),
                    data
                );
                let other = crypto.chunk_id(b"other");
                assert!(decode_blob(&crypto, &other, blob, data.len() as u32).is_err());
            }
        }
    }

    #[test]
    fn object_round_trip() {
        for crypto in crypto_pair() {
            let doc = b"{\"hello\":\"world\"}".repeat(100);
            let sealed = seal_object(&crypto, *b"TEST", &doc, true);
            assert_eq!(open_object(&crypto, *b"TEST", &sealed).unwrap(), doc);
            assert!(open_object(&crypto, *b"XXXX", &sealed).is_err());
            assert!(open_object(&crypto, *b"TEST", &sealed[..3]).is_err());
        }
    }

    #[test]
    fn documents_decompress_with_and_without_a_declared_size() {
        let doc = b"{\"entries\":[1,2,3]}".repeat(5000);
        let declared = zstd::bulk::compress(&doc, 3).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&declared).unwrap(),
            Some(doc.len() as u64)
        );
        assert_eq!(decompress_bounded(&declared).unwrap(), doc);

        let mut streamed = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut streamed, 3).unwrap();
        encoder.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut encoder, &doc).unwrap();
        encoder.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&streamed).unwrap(),
            None
        );
        assert_eq!(decompress_bounded(&streamed).unwrap(), doc);

        // Cut frames, and headers declaring sizes their bytes do not fill or past the
        // limit, are errors, not panics.
        assert!(decompress_bounded(&declared[..declared.len() / 2]).is_err());
        for size in [200u64 << 20, MAX_OBJECT_SIZE + 1] {
            // Magic, a descriptor for an 8-byte content size, a window size, the size.
            let mut header = vec![0x28, 0xb5, 0x2f, 0xfd, 0xc0, 0x58];
            header.extend_from_slice(&size.to_le_bytes());
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(&header).unwrap(),
                Some(size)
            );
            assert!(decompress_bounded(&header).is_err());
        }
        assert!(decompress_bounded(b"not zstd").is_err());
    }

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        getrandom::fill(&mut v).unwrap();
        v
    }
}
