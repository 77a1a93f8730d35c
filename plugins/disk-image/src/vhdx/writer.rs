//! Writing dynamic VHDX images, Hyper-V's format, from guest blocks given in increasing
//! order, as a restore streams them: each payload block is appended as it comes, and the
//! metadata is written at [`VhdxWriter::finish`], the file type identifier last, so a
//! write that fails leaves a file no reader takes for a VHDX.
//!
//! ```text
//! 0        file type identifier ("vhdxfile", the creator)     written last
//! 64 KiB   header 1, 128 KiB header 2 (CRC-32C, no log to replay)
//! 192 KiB  region table 1, 256 KiB region table 2: the BAT and the metadata region
//! 1 MiB    the log (1 MiB, empty)
//! 2 MiB    the metadata region: file parameters (1 MiB blocks), virtual disk size, disk
//!          id, 512-byte logical and 4 KiB physical sectors
//! 3 MiB    the block allocation table, a sector bitmap entry after every 4,096 payload
//!          entries (never present: the disk has no parent)
//! then     the payload blocks written, each 1 MiB at a 1 MiB boundary
//! ```
//!
//! Blocks never written are `PAYLOAD_BLOCK_NOT_PRESENT`, which a disk without a parent
//! reads as zeros. Only the block table (8 bytes per MiB of guest disk) is held in
//! memory.

use std::io::{Seek, SeekFrom, Write};

use super::{
    BAT_REGION, CRC32C, FILE_PARAMETERS, HEADER_LEN, HEADERS, LOGICAL_SECTOR_SIZE, METADATA_REGION,
    METADATA_TABLE_LEN, MIB, PAGE_83_DATA, PHYSICAL_SECTOR_SIZE, REGION_TABLE_LEN, REGION_TABLES,
    SIGNATURE, VIRTUAL_DISK_SIZE,
};
use crate::qcow2::writer::WriteError;

/// The payload block size: 1 MiB, what Hyper-V recommends for Linux guests, so that little
/// data costs little file.
const BLOCK: u64 = MIB;
const LOGICAL_SECTOR: u64 = 512;
const PHYSICAL_SECTOR: u32 = 4096;
/// Payload blocks per sector bitmap block: 2^23 sectors over the block size.
const CHUNK_RATIO: u64 = (1 << 23) * LOGICAL_SECTOR / BLOCK;
/// The format's largest disk, 64 TiB.
const MAX_SIZE: u64 = 64 << 40;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u32 = MIB as u32;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u32 = MIB as u32;
const BAT_OFFSET: u64 = 3 * MIB;
/// A block entry's state: present in full.
const FULLY_PRESENT: u64 = 6;

/// Writes a dynamic VHDX image (1 MiB blocks, no parent) block by block in increasing
/// guest order. Ranges never written read as zeros.
#[derive(Debug)]
pub struct VhdxWriter<W> {
    out: W,
    virtual_size: u64,
    /// Each payload block's file offset, 0 for a block never written.
    blocks: Vec<u64>,
    /// Where the next block goes.
    next_file: u64,
    /// The lowest guest offset still accepted.
    next_guest: u64,
    /// The disk's id and the headers' write GUIDs.
    ids: [[u8; 16]; 3],
}

impl<W: Write + Seek> VhdxWriter<W> {
    /// Starts an image of `virtual_size` bytes (whole 512-byte sectors, at most 64 TiB)
    /// written to `out`; `ids` are the disk's id and the file's and data's write GUIDs,
    /// which should be random.
    pub fn create(out: W, virtual_size: u64, ids: [[u8; 16]; 3]) -> Result<Self, WriteError> {
        if virtual_size == 0
            || !virtual_size.is_multiple_of(LOGICAL_SECTOR)
            || virtual_size > MAX_SIZE
        {
            return Err(WriteError::TooLarge {
                size: virtual_size,
                cluster_size: BLOCK,
            });
        }
        let blocks = virtual_size.div_ceil(BLOCK);
        Ok(VhdxWriter {
            out,
            virtual_size,
            blocks: vec![0; blocks as usize],
            next_file: BAT_OFFSET + bat_region_length(blocks),
            next_guest: 0,
            ids,
        })
    }

    /// The block size: writes start on its multiples.
    pub fn block_size(&self) -> u64 {
        BLOCK
    }

    /// Writes whole blocks from guest offset `offset` on (the last block of the disk may
    /// be short): `data` is a whole number of blocks, or reaches the end of the disk.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), WriteError> {
        if !offset.is_multiple_of(BLOCK) {
            return Err(WriteError::Misaligned {
                offset,
                cluster_size: BLOCK,
            });
        }
        if offset < self.next_guest {
            return Err(WriteError::OutOfOrder {
                offset,
                next: self.next_guest,
            });
        }
        let end = offset + data.len() as u64;
        if end > self.virtual_size {
            return Err(WriteError::BeyondEnd {
                offset: end,
                size: self.virtual_size,
            });
        }
        if !(data.len() as u64).is_multiple_of(BLOCK) && end != self.virtual_size {
            return Err(WriteError::Length {
                offset,
                length: data.len(),
                expected: BLOCK,
            });
        }
        for (i, block) in data.chunks(BLOCK as usize).enumerate() {
            let index = (offset / BLOCK) as usize + i;
            self.out.seek(SeekFrom::Start(self.next_file))?;
            self.out.write_all(block)?;
            // The last block fills its whole place in the file.
            if (block.len() as u64) < BLOCK {
                self.out
                    .write_all(&vec![0u8; (BLOCK - block.len() as u64) as usize])?;
            }
            self.blocks[index] = self.next_file;
            self.next_file += BLOCK;
        }
        self.next_guest = end;
        Ok(())
    }

    /// Writes the block table, the metadata, the region tables, the headers and, last, the
    /// file type identifier; returns the output.
    pub fn finish(mut self) -> Result<W, WriteError> {
        // The file ends with the last block's place, or, without any, with the block
        // table's region.
        if self.blocks.iter().all(|&at| at == 0) {
            self.write_at(self.next_file - 1, &[0])?;
        }

        let count = self.blocks.len() as u64;
        let entries = count + (count - 1) / CHUNK_RATIO;
        let mut bat = vec![0u8; (entries * 8) as usize];
        for (i, &at) in self.blocks.iter().enumerate() {
            if at != 0 {
                let i = i as u64;
                let slot = (i + i / CHUNK_RATIO) as usize * 8;
                bat[slot..slot + 8]
                    .copy_from_slice(&((at / MIB) << 20 | FULLY_PRESENT).to_le_bytes());
            }
        }
        self.write_at(BAT_OFFSET, &bat)?;
        self.write_at(METADATA_OFFSET, &self.metadata())?;
        let regions = region_table(bat_region_length(count));
        for at in REGION_TABLES {
            self.write_at(at, &regions)?;
        }
        for (sequence, at) in HEADERS.into_iter().enumerate() {
            let header = self.header(sequence as u64 + 1);
            self.write_at(at, &header)?;
        }
        let mut identifier = SIGNATURE.to_vec();
        identifier.extend("tessera".encode_utf16().flat_map(u16::to_le_bytes));
        self.write_at(0, &identifier)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn write_at(&mut self, at: u64, bytes: &[u8]) -> Result<(), WriteError> {
        self.out.seek(SeekFrom::Start(at))?;
        self.out.write_all(bytes)?;
        Ok(())
    }

    /// A header with sequence number `sequence`: no log to replay.
    fn header(&self, sequence: u64) -> Vec<u8> {
        let mut header = vec![0u8; HEADER_LEN];
        header[..4].copy_from_slice(b"head");
        header[8..16].copy_from_slice(&sequence.to_le_bytes());
        header[16..32].copy_from_slice(&self.ids[1]);
        header[32..48].copy_from_slice(&self.ids[2]);
        // Log GUID zero: nothing to replay. Log version 0, version 1.
        header[66..68].copy_from_slice(&1u16.to_le_bytes());
        header[68..72].copy_from_slice(&LOG_LENGTH.to_le_bytes());
        header[72..80].copy_from_slice(&LOG_OFFSET.to_le_bytes());
        let crc = CRC32C.checksum(&header);
        header[4..8].copy_from_slice(&crc.to_le_bytes());
        header
    }

    /// The metadata region: its table and the five items every VHDX has.
    fn metadata(&self) -> Vec<u8> {
        const REQUIRED: u32 = 1 << 2;
        const VIRTUAL_DISK: u32 = 1 << 1;
        let mut region = vec![0u8; METADATA_TABLE_LEN + 4096];
        let items: [([u8; 16], Vec<u8>, u32); 5] = [
            (
                FILE_PARAMETERS,
                [(BLOCK as u32).to_le_bytes(), [0; 4]].concat(),
                REQUIRED,
            ),
            (
                VIRTUAL_DISK_SIZE,
                self.virtual_size.to_le_bytes().to_vec(),
                REQUIRED | VIRTUAL_DISK,
            ),
            (PAGE_83_DATA, self.ids[0].to_vec(), REQUIRED | VIRTUAL_DISK),
            (
                LOGICAL_SECTOR_SIZE,
                (LOGICAL_SECTOR as u32).to_le_bytes().to_vec(),
                REQUIRED | VIRTUAL_DISK,
            ),
            (
                PHYSICAL_SECTOR_SIZE,
                PHYSICAL_SECTOR.to_le_bytes().to_vec(),
                REQUIRED | VIRTUAL_DISK,
            ),
        ];
        region[..8].copy_from_slice(b"metadata");
        region[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut at = METADATA_TABLE_LEN;
        for (i, (id, value, flags)) in items.iter().enumerate() {
            let entry = 32 + i * 32;
            region[entry..entry + 16].copy_from_slice(id);
            region[entry + 16..entry + 20].copy_from_slice(&(at as u32).to_le_bytes());
            region[entry + 20..entry + 24].copy_from_slice(&(value.len() as u32).to_le_bytes());
            region[entry + 24..entry + 28].copy_from_slice(&flags.to_le_bytes());
            region[at..at + value.len()].copy_from_slice(value);
            at += value.len().next_multiple_of(8);
        }
        region
    }
}

/// The bytes the block table's region takes for `blocks` payload blocks: its entries and
/// the sector bitmap entries between them, rounded up to whole MiB.
fn bat_region_length(blocks: u64) -> u64 {
    let entries = blocks + blocks.saturating_sub(1) / CHUNK_RATIO;
    (entries * 8).next_multiple_of(MIB)
}

/// A region table naming the block table (`bat_length` bytes) and the metadata region.
fn region_table(bat_length: u64) -> Vec<u8> {
    let mut table = vec![0u8; REGION_TABLE_LEN];
    table[..4].copy_from_slice(b"regi");
    table[8..12].copy_from_slice(&2u32.to_le_bytes());
    let regions = [
        (BAT_REGION, BAT_OFFSET, bat_length as u32),
        (METADATA_REGION, METADATA_OFFSET, METADATA_LENGTH),
    ];
    for (i, (id, offset, length)) in regions.into_iter().enumerate() {
        let entry = 16 + i * 32;
        table[entry..entry + 16].copy_from_slice(&id);
        table[entry + 16..entry + 24].copy_from_slice(&offset.to_le_bytes());
        table[entry + 24..entry + 28].copy_from_slice(&length.to_le_bytes());
        // Required.
        table[entry + 28..entry + 32].copy_from_slice(&1u32.to_le_bytes());
    }
    let crc = CRC32C.checksum(&table);
    table[4..8].copy_from_slice(&crc.to_le_bytes());
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DiskImage, Vhdx};

    #[test]
    fn an_image_reads_back_as_written() {
        let size = 5 * MIB + 4096;
        let mut writer = VhdxWriter::create(
            std::io::Cursor::new(Vec::new()),
            size,
            [[1; 16], [2; 16], [3; 16]],
        )
        .unwrap();
        let block = vec![0x5a; BLOCK as usize];
        writer.write(MIB, &block).unwrap();
        writer
            .write(3 * MIB, &[block.clone(), block.clone()].concat())
            .unwrap();
        let mut tail = vec![0xa5; 4096];
        tail[4095] = 0x77;
        writer.write(5 * MIB, &tail).unwrap();
        assert!(matches!(
            writer.write(2 * MIB, &block),
            Err(WriteError::OutOfOrder { .. })
        ));
        let bytes = writer.finish().unwrap().into_inner();
        let mut image = Vhdx::open(Box::new(bytes), "w").unwrap();
        assert_eq!(image.virtual_size(), size);
        let mut all = vec![0u8; size as usize];
        image.read_at(0, &mut all).unwrap();
        let mut expected = vec![0u8; size as usize];
        expected[MIB as usize..2 * MIB as usize].fill(0x5a);
        expected[3 * MIB as usize..5 * MIB as usize].fill(0x5a);
        expected[5 * MIB as usize..].fill(0xa5);
        expected[size as usize - 1] = 0x77;
        assert!(all == expected);

        // With no block written, the image reads as zeros.
        let writer = VhdxWriter::create(
            std::io::Cursor::new(Vec::new()),
            size,
            [[1; 16], [2; 16], [3; 16]],
        )
        .unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        let mut image = Vhdx::open(Box::new(bytes), "empty").unwrap();
        image.read_at(0, &mut all).unwrap();
        assert!(all.iter().all(|&b| b == 0));
    }
}
