//! Pack files: immutable containers of blobs, self-describing through an encrypted trailer.
//!
//! ```text
//! PACK   = PACK_MAGIC(4) || PACK_VERSION(1) || BLOB* || HEADER || HEADER_LEN(u32 LE)
//! HEADER = sealed object (magic TSPH) of ENTRY*
//! ENTRY  = CHUNK_ID(32) || KIND(1) || OFFSET(u32 LE) || LEN(u32 LE) || RAW_LEN(u32 LE)
//! ```
//!
//! A pack is named by the SHA-256 of its trailer (`HEADER || HEADER_LEN`): the header
//! commits to every blob's id and place, and every blob is authenticated against its id. The header lets an index be rebuilt from the packs, which is
//! how a backup killed before writing its index still has its uploaded data reused.

use crate::backend::{Backend, BackendError, FileKind, Spool};
use crate::codec::{self, DecodeError};
use crate::crypto::Crypto;
use crate::format::{MAX_CHUNK_SIZE, MAX_OBJECT_SIZE, PACK_HEADER_MAGIC, PACK_MAGIC, PACK_VERSION};
use crate::id::{ChunkId, PackId};

const PREAMBLE_LEN: usize = 5;
const ENTRY_LEN: usize = 32 + 1 + 4 + 4 + 4;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// A chunk of content.
    Data,
    /// A tree or extent list (a JSON document).
    Tree,
}

impl BlobKind {
    fn to_byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// Where a blob sits inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// The chunk.
    pub id: ChunkId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Offset of the blob in the pack.
    pub offset: u32,
    /// Stored (encoded) length.
    pub len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// Why a pack could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The pack's trailer or header is malformed.
    #[error("pack {pack} is damaged: {detail}")]
    Damaged {
        /// The pack.
        pack: String,
        /// What is wrong.
        detail: String,
    },
}

/// Accumulates blobs into one pack. Blobs are kept as they were encoded and written out
/// with vectored I/O, so a chunk's bytes are not copied again to assemble the pack.
///
/// With a [`Spool`] (see [`PackWriter::spooled`]) each blob goes to the backend's spool as
/// it is added, so a pack being filled costs no memory beyond its entry list.
#[derive(Debug)]
pub struct PackWriter {
    parts: Vec<Vec<u8>>,
    spool: Option<Box<dyn Spool>>,
    size: usize,
    entries: Vec<PackEntry>,
}

/// A blob [`PackWriter::add_in_place`] had encoded in place.
#[derive(Debug, Clone, Copy)]
pub struct BlobMade {
    /// The chunk's id.
    pub id: ChunkId,
    /// What it holds.
    pub kind: BlobKind,
    /// The chunk's length before encoding.
    pub raw_len: u32,
    /// The blob's length.
    pub len: usize,
}

/// A finished pack ready to upload.
#[derive(Debug)]
pub struct FinishedPack {
    /// Its name.
    pub id: PackId,
    /// Its bytes, in pieces to be written one after another (empty when spooled).
    pub parts: Vec<Vec<u8>>,
    /// Its bytes, already with the backend, when it was spooled.
    pub spool: Option<Box<dyn Spool>>,
    /// Its blobs.
    pub entries: Vec<PackEntry>,
}

impl FinishedPack {
    /// The pieces as slices, for [`crate::backend::Backend::write_parts`].
    pub fn slices(&self) -> Vec<&[u8]> {
        self.parts.iter().map(Vec::as_slice).collect()
    }

    /// The whole pack in one buffer (of an unspooled pack).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts.concat()
    }

    /// Stores the pack in the backend under its name.
    pub fn upload(self, backend: &dyn Backend) -> Result<(), BackendError> {
        let name = self.id.to_hex();
        match self.spool {
            Some(spool) => spool.commit(backend, &name),
            None => backend.write_parts(FileKind::Pack, &name, &self.slices()),
        }
    }
}

impl Default for PackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> Self {
        let mut preamble = PACK_MAGIC.to_vec();
        preamble.push(PACK_VERSION);
        PackWriter {
            size: preamble.len(),
            parts: vec![preamble],
            spool: None,
            entries: Vec::new(),
        }
    }

    /// An empty pack written into `spool` as blobs are added.
    pub fn spooled(mut spool: Box<dyn Spool>) -> Result<Self, BackendError> {
        let mut writer = Self::new();
        for part in writer.parts.drain(..) {
            spool.append(&part)?;
        }
        writer.spool = Some(spool);
        Ok(writer)
    }

    /// Appends an encoded blob.
    pub fn add(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        raw_len: u32,
        blob: &[u8],
    ) -> Result<(), BackendError> {
        let offset = self.size as u32;
        let len = blob.len() as u32;
        match &mut self.spool {
            Some(spool) => spool.append(blob)?,
            None => self.parts.push(blob.to_vec()),
        }
        self.size += len as usize;
        self.entries.push(PackEntry {
            id,
            kind,
            offset,
            len,
            raw_len,
        });
        Ok(())
    }

    /// Appends a blob encoded where the pack's spool stores it: `encode` gets room for a
    /// blob of up to `len` bytes and describes the blob it wrote at the room's start, or
    /// returns `None` to add nothing. Returns whether
    /// `encode` was called: not when the pack has no spool or its spool no such room at
    /// the moment, and the caller then encodes the blob elsewhere and
    /// [`PackWriter::add`]s it.
    pub fn add_in_place(
        &mut self,
        len: usize,
        encode: impl FnOnce(&mut [u8]) -> Option<BlobMade>,
    ) -> Result<bool, BackendError> {
        let Some(spool) = &mut self.spool else {
            return Ok(false);
        };
        let mut encode = Some(encode);
        let mut blob = None;
        let kept = spool.append_in_place(len, &mut |room| {
            blob = encode.take().and_then(|encode| encode(room));
            blob.map_or(0, |made: BlobMade| made.len)
        })?;
        if kept.is_none() {
            return Ok(false);
        }
        if let Some(made) = blob {
            debug_assert!(made.len <= len, "a blob larger than its room");
            let blob_len = made.len.min(len);
            let offset = self.size as u32;
            self.size += blob_len;
            self.entries.push(PackEntry {
                id: made.id,
                kind: made.kind,
                offset,
                len: blob_len as u32,
                raw_len: made.raw_len,
            });
        }
        Ok(true)
    }

    /// Bytes so far.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the header and names the pack by the SHA-256 of its trailer.
    pub fn finish(mut self, crypto: &Crypto) -> Result<FinishedPack, BackendError> {
        let mut doc = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            doc.extend_from_slice(&e.id.0);
            doc.push(e.kind.to_byte());
            doc.extend_from_slice(&e.offset.to_le_bytes());
            doc.extend_from_slice(&e.len.to_le_bytes());
            doc.extend_from_slice(&e.raw_len.to_le_bytes());
        }
        let mut trailer = codec::seal_object(crypto, PACK_HEADER_MAGIC, &doc, true);
        let header_len = trailer.len() as u32;
        trailer.extend_from_slice(&header_len.to_le_bytes());
        let id = PackId::hash_of(&trailer);
        match &mut self.spool {
            Some(spool) => spool.append(&trailer)?,
            None => self.parts.push(trailer),
        }
        Ok(FinishedPack {
            id,
            parts: self.parts,
            spool: self.spool,
            entries: self.entries,
        })
    }
}

/// Reads and validates a pack's header, given the pack's size.
pub fn read_header(
    backend: &dyn Backend,
    crypto: &Crypto,
    pack: &PackId,
    size: u64,
) -> Result<Vec<PackEntry>, PackError> {
    let name = pack.to_hex();
    let damaged = |detail: String| PackError::Damaged {
        pack: pack.short(),
        detail,
    };
    if size < (PREAMBLE_LEN + 4) as u64 {
        return Err(damaged(format!("only {size} bytes long")));
    }
    let tail = backend.read_range(FileKind::Pack, &name, size - 4, 4)?;
    let header_len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    let blobs_end = size - 4;
    if header_len > blobs_end - PREAMBLE_LEN as u64 || header_len > MAX_OBJECT_SIZE {
        return Err(damaged(format!(
            "header length {header_len} does not fit a {size}-byte pack"
        )));
    }
    let header_start = blobs_end - header_len;
    let trailer = backend.read_range(FileKind::Pack, &name, header_start, header_len + 4)?;
    verify_name(pack, &trailer)?;
    parse_header(crypto, pack, &trailer[..header_len as usize], header_start)
}

/// A pack is named by the SHA-256 of its trailer (header and header length). The header
/// lists every blob's id, offset and length, and each blob is authenticated (or, without
/// encryption, re-hashed) against its id, so the name commits to the whole pack without
/// hashing every byte a second time.
fn verify_name(pack: &PackId, trailer: &[u8]) -> Result<(), PackError> {
    if PackId::hash_of(trailer) != *pack {
        return Err(PackError::Damaged {
            pack: pack.short(),
            detail: "its header does not match its name".into(),
        });
    }
    Ok(())
}

/// Parses a whole pack held in memory, checking its preamble and header.
pub fn parse_pack(
    crypto: &Crypto,
    pack: &PackId,
    bytes: &[u8],
) -> Result<Vec<PackEntry>, PackError> {
    let damaged = |detail: String| PackError::Damaged {
        pack: pack.short(),
        detail,
    };
    if bytes.len() < PREAMBLE_LEN + 4 {
        return Err(damaged(format!("only {} bytes long", bytes.len())));
    }
    if bytes[..4] != PACK_MAGIC || bytes[4] != PACK_VERSION {
        return Err(damaged("bad magic or version at offset 0".into()));
    }
    let blobs_end = bytes.len() - 4;
    let header_len = u32::from_le_bytes(bytes[blobs_end..].try_into().expect("4 bytes")) as usize;
    if header_len > blobs_end - PREAMBLE_LEN {
        return Err(damaged(format!("header length {header_len} does not fit")));
    }
    let header_start = blobs_end - header_len;
    parse_header(
        crypto,
        pack,
        &bytes[header_start..blobs_end],
        header_start as u64,
    )
}

fn parse_header(
    crypto: &Crypto,
    pack: &PackId,
    header: &[u8],
    header_start: u64,
) -> Result<Vec<PackEntry>, PackError> {
    let damaged = |detail: String| PackError::Damaged {
        pack: pack.short(),
        detail,
    };
    let doc = codec::open_object(crypto, PACK_HEADER_MAGIC, header)
        .map_err(|e: DecodeError| damaged(format!("header at offset {header_start}: {e}")))?;
    if doc.len() % ENTRY_LEN != 0 {
        return Err(damaged(format!(
            "header holds {} bytes, not whole entries",
            doc.len()
        )));
    }
    let mut entries = Vec::with_capacity(doc.len() / ENTRY_LEN);
    for raw in doc.chunks_exact(ENTRY_LEN) {
        let u32_at = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        let id = ChunkId(raw[..32].try_into().expect("32 bytes"));
        let kind = BlobKind::from_byte(raw[32])
            .ok_or_else(|| damaged(format!("unknown blob kind {}", raw[32])))?;
        let entry = PackEntry {
            id,
            kind,
            offset: u32_at(33),
            len: u32_at(37),
            raw_len: u32_at(41),
        };
        let end = entry.offset as u64 + entry.len as u64;
        if (entry.offset as usize) < PREAMBLE_LEN || end > header_start {
            return Err(damaged(format!(
                "blob {} claims bytes {}..{end}, outside the blob area",
                id.short(),
                entry.offset
            )));
        }
        if entry.raw_len > MAX_CHUNK_SIZE {
            return Err(damaged(format!(
                "blob {} claims {} bytes",
                id.short(),
                entry.raw_len
            )));
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::crypto::MasterKey;

    #[test]
    fn write_and_read_header() {
        let crypto = Crypto::encrypted(&MasterKey::generate());
        let mut writer = PackWriter::new();
        for i in 0..10u8 {
            let data = vec![i; 1000 + i as usize];
            let id = crypto.chunk_id(&data);
            let mut blob = Vec::new();
            codec::encode_blob(&crypto, &id, &data, 3, &mut blob);
            writer
                .add(id, BlobKind::Data, data.len() as u32, &blob)
                .unwrap();
        }
        let pack = writer.finish(&crypto).unwrap();
        let bytes = pack.to_bytes();
        assert_eq!(parse_pack(&crypto, &pack.id, &bytes).unwrap(), pack.entries);

        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        backend
            .write_parts(FileKind::Pack, &pack.id.to_hex(), &pack.slices())
            .unwrap();
        let read = read_header(&backend, &crypto, &pack.id, bytes.len() as u64).unwrap();
        assert_eq!(read, pack.entries);

        // Every truncation is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(parse_pack(&crypto, &pack.id, &bytes[..cut]).is_err());
        }
    }
}
