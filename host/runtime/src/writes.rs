//! Restored files written by host threads: `content-reader.write-to` hands a file to this
//! pool and returns, so creating files (costly on some file systems) and decoding and
//! writing their content proceed on every core while the plugin walks on.
//!
//! Ordering rules: metadata set on a file being written is applied by its writer thread
//! once the content is in; metadata set on a directory with files still being written
//! below it is kept until they are done (so its times and mode come after its files), in
//! the order given; any other host call naming a path waits until every write at that
//! path or below it is done and the directory metadata kept there is applied, and a
//! failed write is reported by the next such call; the job itself waits for all writes,
//! applies what metadata is left, and fails if any write failed.
//!
//! Files go from the plugin's thread to the creating thread and on to the writers in
//! batches of [`BATCH`], so a thread wakes once per batch rather than per file; a call that
//! must wait for a file still in the batch being gathered hands that batch over first.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use cap_std::fs::Dir;
use crossbeam_channel::Sender;
use rustix::fs::{Mode, OFlags};
use tessera_vault::{ContentReader, Piece};

use crate::bindings::host::RestoreMetadata;
use crate::grant::Grant;

/// Files handed from one thread to the next at a time: a hand-over wakes a thread, which
/// costs more than creating a small file.
const BATCH: usize = 8;
/// Batches queued ahead of each stage: enough to keep the threads busy, few enough to
/// bound the memory of decoded content.
const QUEUE: usize = 8;

/// A file to write.
struct WriteJob {
    /// The plugin's path, for waiting and messages.
    path: String,
    /// Its directory, opened beneath the grant.
    dir: Arc<Dir>,
    /// Its name there.
    name: String,
    content: ContentReader,
    /// The grant, to apply metadata that arrives while the file is being written.
    grant: Arc<Grant>,
}

#[derive(Default)]
struct Pending {
    /// Paths being written, with metadata to apply once they are.
    paths: HashMap<String, Option<RestoreMetadata>>,
    /// Failed writes: path and reason.
    failed: Vec<(String, String)>,
    /// Metadata that could not be applied (ownership without privilege, ...).
    warnings: Vec<String>,
}

/// The writer threads of one restore job.
pub struct WritePool {
    jobs: Option<Sender<Vec<WriteJob>>>,
    /// Files submitted and not yet handed to the creating thread.
    batch: Mutex<Vec<WriteJob>>,
    /// Metadata of directories set while files below them were still being written, in
    /// the order set (children before their parents), applied once those files are done:
    /// waiting for them would drain the threads at the end of every directory.
    dirs: Mutex<VecDeque<DeferredDir>>,
    pending: Arc<(Mutex<Pending>, Condvar)>,
    threads: Vec<JoinHandle<()>>,
}

impl WritePool {
    /// Starts a thread creating files and `workers` threads writing them.
    ///
    /// Files are created by one thread, in the order they come: creating files in one
    /// directory from two threads at once makes them contend for the directory's lock,
    /// which costs more than it gains. Their content is decoded and written, and their
    /// metadata applied, by the writer threads.
    pub fn new(workers: usize) -> WritePool {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<WriteJob>>(QUEUE);
        let (created_tx, created_rx) = crossbeam_channel::bounded::<Vec<Created>>(QUEUE);
        let pending: Arc<(Mutex<Pending>, Condvar)> = Arc::default();
        let creator = std::thread::Builder::new()
            .name("tessera-create".into())
            .spawn(move || {
                for batch in rx {
                    let created = batch
                        .into_iter()
                        .map(|job| {
                            let file = create(&job.dir, &job.name);
                            (job, file)
                        })
                        .collect();
                    if created_tx.send(created).is_err() {
                        break;
                    }
                }
            })
            .ok();
        let threads = (0..workers.max(1))
            .filter_map(|i| {
                let rx = created_rx.clone();
                let pending = pending.clone();
                std::thread::Builder::new()
                    .name(format!("tessera-write-{i}"))
                    .spawn(move || {
                        for batch in rx {
                            write_batch(batch, &pending);
                        }
                    })
                    .ok()
            })
            .chain(creator)
            .collect();
        WritePool {
            jobs: Some(tx),
            batch: Mutex::new(Vec::with_capacity(BATCH)),
            dirs: Mutex::new(VecDeque::new()),
            pending,
            threads,
        }
    }

    /// Queues the content's write into `name` of `dir` (created if missing).
    pub fn submit(
        &self,
        path: String,
        dir: Arc<Dir>,
        name: String,
        content: ContentReader,
        grant: Arc<Grant>,
    ) -> Result<(), String> {
        self.wait_for(&path)?;
        self.apply_finished_dirs();
        let Some(jobs) = &self.jobs else {
            return Err("the restore is over".into());
        };
        self.pending
            .0
            .lock()
            .expect("lock")
            .paths
            .insert(path.clone(), None);
        let job = WriteJob {
            path,
            dir,
            name,
            content,
            grant,
        };
        let full = {
            let mut batch = self.batch.lock().expect("lock");
            batch.push(job);
            (batch.len() >= BATCH)
                .then(|| std::mem::replace(&mut *batch, Vec::with_capacity(BATCH)))
        };
        match full {
            Some(batch) => jobs
                .send(batch)
                .map_err(|_| "the writer threads have stopped".to_string()),
            None => Ok(()),
        }
    }

    /// Hands the files submitted so far to the threads.
    fn flush(&self) {
        let batch = std::mem::take(&mut *self.batch.lock().expect("lock"));
        if let Some(jobs) = &self.jobs
            && !batch.is_empty()
        {
            // Sends fail only once the threads stopped, which the pending writes show.
            let _ = jobs.send(batch);
        }
    }

    /// Waits until nothing is being written at `path` or below it and applies the
    /// directory metadata deferred there; reports a failed write there.
    pub fn settle(&self, path: &str) -> Result<(), String> {
        let waited = self.wait_for(path);
        let path = path.trim_matches('/');
        let deferred: VecDeque<DeferredDir> = {
            let mut dirs = self.dirs.lock().expect("lock");
            if dirs.iter().any(|dir| is_at_or_below(&dir.path, path)) {
                let (at, rest) = std::mem::take(&mut *dirs)
                    .into_iter()
                    .partition(|dir| is_at_or_below(&dir.path, path));
                *dirs = rest;
                at
            } else {
                VecDeque::new()
            }
        };
        for dir in deferred {
            self.apply_dir(dir);
        }
        waited
    }

    /// Waits until nothing is being written at `path` or below it; reports a failed write
    /// there.
    fn wait_for(&self, path: &str) -> Result<(), String> {
        let path = path.trim_matches('/');
        let below = |p: &String| is_at_or_below(p, path);
        let (lock, done) = &*self.pending;
        let mut state = lock.lock().expect("lock");
        if state.paths.keys().any(below) {
            // What is waited for may still be in the batch being gathered.
            drop(state);
            self.flush();
            state = lock.lock().expect("lock");
            while state.paths.keys().any(below) {
                state = done.wait(state).expect("lock");
            }
        }
        match state.failed.iter().position(|(p, _)| below(p)) {
            Some(i) => {
                let (p, reason) = state.failed.remove(i);
                Err(format!("writing '{p}' failed: {reason}"))
            }
            None => Ok(()),
        }
    }

    /// Hands `meta` to the writer of `path` if it is being written; false if it is not
    /// (the caller applies it).
    pub fn defer_metadata(&self, path: &str, meta: &RestoreMetadata) -> bool {
        let mut state = self.pending.0.lock().expect("lock");
        match state.paths.get_mut(path.trim_matches('/')) {
            Some(slot) => {
                *slot = Some(meta.clone());
                true
            }
            None => false,
        }
    }

    /// Keeps the metadata of directory `path` until nothing is being written below it, if
    /// something is; false if nothing is (the caller applies it).
    pub fn defer_dir_metadata(
        &self,
        path: &str,
        meta: &RestoreMetadata,
        grant: &Arc<Grant>,
    ) -> bool {
        let path = path.trim_matches('/');
        let mut dirs = self.dirs.lock().expect("lock");
        let busy = dirs.iter().any(|dir| is_at_or_below(&dir.path, path))
            || self
                .pending
                .0
                .lock()
                .expect("lock")
                .paths
                .keys()
                .any(|p| is_at_or_below(p, path));
        if busy {
            dirs.push_back(DeferredDir {
                path: path.to_string(),
                meta: meta.clone(),
                grant: Arc::clone(grant),
            });
        }
        busy
    }

    /// Applies deferred directory metadata, oldest first, as long as nothing is being
    /// written below the oldest.
    fn apply_finished_dirs(&self) {
        loop {
            let next = {
                let mut dirs = self.dirs.lock().expect("lock");
                let Some(first) = dirs.front() else {
                    return;
                };
                let state = self.pending.0.lock().expect("lock");
                if state.paths.keys().any(|p| is_at_or_below(p, &first.path)) {
                    return;
                }
                drop(state);
                dirs.pop_front().expect("just looked")
            };
            self.apply_dir(next);
        }
    }

    /// Applies a directory's deferred metadata; what cannot be applied is a warning, as
    /// it would have been for the plugin.
    fn apply_dir(&self, dir: DeferredDir) {
        let outcome = dir.grant.set_metadata(&dir.path, &dir.meta);
        let mut state = self.pending.0.lock().expect("lock");
        match outcome {
            Ok(warnings) => state.warnings.extend(warnings),
            Err(e) => state
                .warnings
                .push(format!("'{}': cannot set metadata: {e}", dir.path)),
        }
    }

    /// Waits for every write and applies the deferred directory metadata; returns the
    /// failures and the metadata warnings.
    pub fn finish(mut self) -> (Vec<String>, Vec<String>) {
        self.flush();
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let deferred = std::mem::take(&mut *self.dirs.lock().expect("lock"));
        for dir in deferred {
            self.apply_dir(dir);
        }
        let mut state = self.pending.0.lock().expect("lock");
        let failures = state
            .failed
            .drain(..)
            .map(|(p, reason)| format!("writing '{p}' failed: {reason}"))
            .collect();
        (failures, std::mem::take(&mut state.warnings))
    }
}

impl Drop for WritePool {
    fn drop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Whether plugin path `p` is `path` or lies below it (everything lies below `""`).
fn is_at_or_below(p: &str, path: &str) -> bool {
    path.is_empty()
        || p == path
        || (p.starts_with(path) && p.as_bytes().get(path.len()) == Some(&b'/'))
}

/// Metadata of a directory waiting for the files below it.
struct DeferredDir {
    path: String,
    meta: RestoreMetadata,
    grant: Arc<Grant>,
}

/// A file created for writing, or why it could not be.
type Created = (WriteJob, Result<OwnedFd, String>);

/// Writes a batch of created files and applies the metadata set on them meanwhile.
fn write_batch(batch: Vec<Created>, pending: &(Mutex<Pending>, Condvar)) {
    let (lock, done) = pending;
    for (job, file) in batch {
        let path = job.path.clone();
        let grant = job.grant.clone();
        // The file stays open until its metadata is applied through it.
        let (file, result) = match file {
            Ok(file) => {
                let filled = fill(&file, job.content);
                (Some(file), filled)
            }
            Err(reason) => (None, Err(reason)),
        };
        let mut state = lock.lock().expect("lock");
        if let Err(reason) = result {
            state.failed.push((path.clone(), reason));
        }
        // Metadata set meanwhile is applied now; more may arrive while it is, so the
        // path is released only when none is waiting.
        while let Some(meta) = state.paths.get_mut(&path).and_then(Option::take) {
            drop(state);
            let outcome = match &file {
                Some(file) => grant.set_file_metadata(&path, file, &meta),
                None => grant.set_metadata(&path, &meta),
            };
            state = lock.lock().expect("lock");
            match outcome {
                Ok(warnings) => state.warnings.extend(warnings),
                Err(e) => state.failed.push((path.clone(), e.to_string())),
            }
        }
        state.paths.remove(&path);
    }
    done.notify_all();
}

/// Creates (or truncates) the file `name` of `dir`.
fn create(dir: &Dir, name: &str) -> Result<OwnedFd, String> {
    let flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir.as_fd(), name, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| std::io::Error::from(e).to_string())
}

/// Writes the content into the new file, seeking over holes.
fn fill(file: &OwnedFd, mut content: ContentReader) -> Result<(), String> {
    let mut at = 0u64;
    let mut trailing_hole = false;
    while let Some(piece) = content.next_piece().map_err(|e| e.to_string())? {
        match piece {
            Piece::Hole(n) => {
                at += n;
                trailing_hole = n > 0;
            }
            Piece::Data(data) => {
                trailing_hole = false;
                let mut rest: &[u8] = &data;
                while !rest.is_empty() {
                    match rustix::io::pwrite(file, rest, at) {
                        Ok(n) => {
                            rest = &rest[n..];
                            at += n as u64;
                        }
                        Err(rustix::io::Errno::INTR) => {}
                        Err(e) => {
                            return Err(format!("at byte {at}: {}", std::io::Error::from(e)));
                        }
                    }
                }
            }
        }
    }
    // A trailing hole is the file's length, not written bytes.
    if trailing_hole {
        rustix::fs::ftruncate(file, at).map_err(|e| std::io::Error::from(e).to_string())?;
    }
    Ok(())
}
