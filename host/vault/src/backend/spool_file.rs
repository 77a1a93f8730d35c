//! The file behind a local spool: written by a thread of its own, with direct I/O where
//! the file system allows it.
//!
//! Packs are written once and read again only by a later restore, check or prune, so the
//! page cache does nothing for them while they are written: going through it costs a copy
//! into freshly cleared pages, then writeback, and the final `fsync` waits for all of it.
//! On a virtual disk that path is several times slower than the device. With `O_DIRECT`
//! the stage buffers go to the device as they are.
//!
//! Direct I/O wants buffer addresses, lengths and file offsets aligned to the device's
//! block size, so appended bytes are gathered in page-aligned stages of [`STAGE`] bytes.
//! Every stage but the last is full, so every write but the last starts and ends on an
//! alignment boundary; direct I/O is turned off for the last, partial one. A file system
//! that refuses `O_DIRECT` (tmpfs) or a direct write gets ordinary writes from then on.
//!
//! The writer thread takes the system calls off the appending thread, which for a pack is
//! a backup worker holding the pack's lock: the other workers keep hashing, compressing
//! and encrypting while a stage goes to the disk. A few stages circulate between the two
//! threads; the backend keeps returned ones for the next spool.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};
use rustix::fs::OFlags;

/// Alignment of direct I/O buffers, lengths and offsets: a page, which every block size
/// in use divides.
const ALIGN: usize = 4096;
/// Bytes handed to the writer thread at a time.
pub(super) const STAGE: usize = 1 << 20;
/// Stages one spool uses at most: one being filled, one being written, and the rest
/// queued, so that a write the device is slow to complete (a virtual disk stalls for
/// milliseconds now and then) does not stop the workers appending to the pack. They are
/// allocated only when the writer falls behind.
const STAGES_PER_SPOOL: usize = 6;
/// Stages the backend keeps for later spools.
const POOLED_STAGES: usize = 2 * STAGES_PER_SPOOL;

/// One aligned block of a stage.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct Block([u8; ALIGN]);

/// A page-aligned buffer of [`STAGE`] bytes and how many of them are filled.
struct Stage {
    blocks: Box<[Block]>,
    len: usize,
}

impl Stage {
    fn new() -> Stage {
        Stage {
            blocks: vec![Block([0; ALIGN]); STAGE / ALIGN].into_boxed_slice(),
            len: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.blocks)[..self.len]
    }

    /// Copies as much of `data` as fits; returns how much that was.
    fn fill(&mut self, data: &[u8]) -> usize {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.blocks);
        let taken = data.len().min(STAGE - self.len);
        bytes[self.len..self.len + taken].copy_from_slice(&data[..taken]);
        self.len += taken;
        taken
    }

    fn is_full(&self) -> bool {
        self.len == STAGE
    }

    /// The next `len` bytes after the filled ones, if the stage has that many left.
    fn room(&mut self, len: usize) -> Option<&mut [u8]> {
        let start = self.len;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.blocks);
        bytes.get_mut(start..start.checked_add(len)?)
    }
}

/// Stages returned by finished spools, shared by the clones of a backend.
#[derive(Default)]
pub(super) struct StagePool(Mutex<Vec<Stage>>);

impl std::fmt::Debug for StagePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.lock().map(|stages| stages.len()).unwrap_or(0);
        f.debug_struct("StagePool").field("kept", &kept).finish()
    }
}

impl StagePool {
    fn take(&self) -> Stage {
        let kept = self.0.lock().ok().and_then(|mut stages| stages.pop());
        kept.unwrap_or_else(Stage::new)
    }

    fn give(&self, mut stage: Stage) {
        stage.len = 0;
        if let Ok(mut stages) = self.0.lock()
            && stages.len() < POOLED_STAGES
        {
            stages.push(stage);
        }
    }
}

/// A file being written through a writer thread.
pub(super) struct SpoolFile {
    /// The stage being filled; `None` only while a replacement is fetched.
    stage: Option<Stage>,
    /// Full stages to the writer; `None` once the writer was told to finish.
    full: Option<Sender<Stage>>,
    /// Written stages back from the writer.
    free: Receiver<Stage>,
    /// Stages this spool has taken so far.
    stages: usize,
    writer: Option<JoinHandle<io::Result<File>>>,
    pool: Arc<StagePool>,
}

impl std::fmt::Debug for SpoolFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolFile")
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl SpoolFile {
    /// Starts writing `file` (new and empty), which lies at `path`.
    pub(super) fn start(file: File, path: &Path, pool: Arc<StagePool>) -> io::Result<SpoolFile> {
        let direct = set_direct(&file, true).is_ok();
        tracing::trace!(path = %path.display(), direct, "spooling");
        let (full_tx, full_rx) = bounded(STAGES_PER_SPOOL);
        let (free_tx, free_rx) = bounded(STAGES_PER_SPOOL);
        let writer = std::thread::Builder::new()
            .name("tessera-spool".into())
            .spawn(move || write_stages(file, direct, &full_rx, &free_tx))?;
        Ok(SpoolFile {
            stage: Some(pool.take()),
            full: Some(full_tx),
            free: free_rx,
            stages: 1,
            writer: Some(writer),
            pool,
        })
    }

    /// Appends `data`.
    pub(super) fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // No stage: an earlier append failed.
            let stage = self.stage.as_mut().ok_or_else(writer_gone)?;
            data = &data[stage.fill(data)..];
            if stage.is_full() {
                let full = self.stage.take().expect("just filled");
                self.send(full)?;
                self.stage = Some(self.next_stage()?);
            }
        }
        Ok(())
    }

    /// Has `fill` write up to `len` bytes straight into the stage being filled, when it
    /// has that much room left, and appends as many as `fill` returns; `None` without
    /// calling `fill` when it has not.
    pub(super) fn append_in_place(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> io::Result<Option<usize>> {
        let stage = self.stage.as_mut().ok_or_else(writer_gone)?;
        let Some(room) = stage.room(len) else {
            return Ok(None);
        };
        let kept = fill(room).min(len);
        stage.len += kept;
        if stage.is_full() {
            let full = self.stage.take().expect("just filled");
            self.send(full)?;
            self.stage = Some(self.next_stage()?);
        }
        Ok(Some(kept))
    }

    /// Writes what is left and returns the file, every byte handed to the kernel (not
    /// yet synced).
    pub(super) fn finish(mut self) -> io::Result<File> {
        if let Some(stage) = self.stage.take()
            && stage.len > 0
        {
            self.send(stage)?;
        }
        self.full = None;
        self.join()
    }

    fn send(&mut self, stage: Stage) -> io::Result<()> {
        let sent = self.full.as_ref().map(|full| full.send(stage));
        match sent {
            Some(Ok(())) => Ok(()),
            // The writer stopped: its error says why.
            _ => Err(self.join().err().unwrap_or_else(writer_gone)),
        }
    }

    fn next_stage(&mut self) -> io::Result<Stage> {
        match self.free.try_recv() {
            Ok(stage) => return Ok(stage),
            Err(TryRecvError::Empty) if self.stages < STAGES_PER_SPOOL => {
                self.stages += 1;
                return Ok(self.pool.take());
            }
            Err(_) => {}
        }
        match self.free.recv() {
            Ok(stage) => Ok(stage),
            Err(_) => Err(self.join().err().unwrap_or_else(writer_gone)),
        }
    }

    /// Waits for the writer; returns the file or the first error it met.
    fn join(&mut self) -> io::Result<File> {
        self.full = None;
        let Some(writer) = self.writer.take() else {
            return Err(writer_gone());
        };
        let result = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the spool's writer thread panicked")));
        for stage in self.free.try_iter() {
            self.pool.give(stage);
        }
        result
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Some(stage) = self.stage.take() {
            self.pool.give(stage);
        }
        if self.writer.is_some() {
            // Abandoned: the file is removed by its owner once closed.
            let _ = self.join();
        }
    }
}

fn writer_gone() -> io::Error {
    io::Error::other("the spool's writer thread has stopped")
}

/// The writer thread: writes stages in order, handing each back once written.
fn write_stages(
    mut file: File,
    mut direct: bool,
    full: &Receiver<Stage>,
    free: &Sender<Stage>,
) -> io::Result<File> {
    for mut stage in full {
        write_all(&mut file, &mut direct, stage.filled())?;
        stage.len = 0;
        // The spool may have finished already; the stage is then simply dropped.
        let _ = free.send(stage);
    }
    Ok(file)
}

/// Writes `buf` at the file's position, falling back to ordinary writes when `buf` does
/// not end on an alignment boundary or a direct write is refused.
fn write_all(file: &mut File, direct: &mut bool, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        if *direct && !buf.len().is_multiple_of(ALIGN) {
            set_direct(file, false)?;
            *direct = false;
        }
        match file.write(buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
            Ok(written) => buf = &buf[written..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if *direct && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
            {
                set_direct(file, false)?;
                *direct = false;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Turns direct I/O on or off for `file`.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(file, flags)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn spool_bytes(dir: &Path, pieces: &[Vec<u8>], pool: &Arc<StagePool>) -> Vec<u8> {
        let path = dir.join("spool");
        let file = File::create_new(&path).unwrap();
        let mut spool = SpoolFile::start(file, &path, Arc::clone(pool)).unwrap();
        for piece in pieces {
            spool.append(piece).unwrap();
        }
        drop(spool.finish().unwrap());
        let mut out = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut out).unwrap();
        std::fs::remove_file(&path).unwrap();
        out
    }

    #[test]
    fn bytes_arrive_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(StagePool::default());
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![],
            vec![pattern(1, 1)],
            vec![pattern(STAGE, 2)],
            vec![pattern(STAGE - 1, 3), pattern(2, 4)],
            vec![pattern(5 * STAGE + 4097, 5)],
            (0..40)
                .map(|i| pattern(100_003 * (i % 7 + 1), i as u8))
                .collect(),
        ];
        for pieces in cases {
            let expected = pieces.concat();
            assert_eq!(spool_bytes(dir.path(), &pieces, &pool), expected);
        }
        assert!(pool.0.lock().unwrap().len() <= POOLED_STAGES);
    }

    #[test]
    fn bytes_made_in_place_arrive_among_the_appended_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let file = File::create_new(&path).unwrap();
        let mut spool = SpoolFile::start(file, &path, Arc::default()).unwrap();
        let mut expected = Vec::new();
        let mut offered = 0;
        for i in 0..100usize {
            let piece = pattern(70_001 + i * 13, i as u8);
            // Keep all, part or none of what is made in place; append when there is no
            // room for the whole piece.
            let keep = [piece.len(), piece.len() / 2, 0][i % 3];
            let kept = spool
                .append_in_place(piece.len(), &mut |room| {
                    assert_eq!(room.len(), piece.len());
                    room.copy_from_slice(&piece);
                    keep
                })
                .unwrap();
            match kept {
                Some(kept) => {
                    assert_eq!(kept, keep);
                    expected.extend_from_slice(&piece[..keep]);
                    offered += 1;
                }
                None => {
                    spool.append(&piece).unwrap();
                    expected.extend_from_slice(&piece);
                }
            }
        }
        // Most pieces fit in the stage being filled; those that would cross into the next
        // one do not.
        assert!(
            (80..100).contains(&offered),
            "{offered} pieces made in place"
        );
        drop(spool.finish().unwrap());
        let mut out = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut out).unwrap();
        assert!(out == expected, "the spooled bytes differ");
    }

    #[test]
    fn a_write_error_reaches_the_appender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::write(&path, b"").unwrap();
        // A file opened read-only refuses every write.
        let file = File::open(&path).unwrap();
        let mut spool = SpoolFile::start(file, &path, Arc::default()).unwrap();
        let data = pattern(8 * STAGE, 9);
        let appended = spool.append(&data);
        let finished = spool.finish();
        assert!(appended.is_err() || finished.is_err());
    }
}
