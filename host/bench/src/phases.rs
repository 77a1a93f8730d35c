//! The timed measurements: the SHA-256 yardstick and each vault operation.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tessera_vault::format;
use tessera_vault::index::IndexFile;
use tessera_vault::pack::{BlobKind, PackEntry};
use tessera_vault::{
    Backend, Backup, BackupOptions, BackupStats, ChunkId, Chunking, CommitOptions, Credential,
    Encryption, Entry, EntryKind, FileKind, InitOptions, KdfParams, LocalBackend, OpenOptions,
    PackId, PluginRef, Point, SystemClock, Vault,
};

use crate::data::SplitMix64;
use crate::{Context, Failure, Result};

/// Bytes per `stream.write` call and per SHA-256 digest: the size a file reader hands
/// the engine in practice.
pub const PIECE: usize = 1 << 20;

/// Bytes hashed by the SHA-256 yardstick, whatever `--size-mib` says, so the yardstick is
/// equally steady for every run size.
const SHA256_TOTAL: usize = 1 << 30;

/// Password of the throwaway vaults.
const PASSWORD: &str = "tessera-bench";

/// Argon2id cost of the throwaway vaults: cheap, so key derivation (a quarter second at
/// the defaults) does not count against opening the vault.
const CHEAP_KDF: KdfParams = KdfParams {
    memory_kib: 8192,
    iterations: 1,
    parallelism: 1,
};

/// Index files written for the open benchmark.
const INDEX_FILES: usize = 100;
/// Packs listed per index file.
const PACKS_PER_INDEX_FILE: usize = 625;
/// Chunks per pack: a 16 MiB pack of the default ~1 MiB content-defined chunks holds
/// about this many, so the pack table weighs on the per-chunk memory as it would in a
/// real vault.
const CHUNKS_PER_PACK: usize = 16;
/// Chunks in the synthetic index.
pub const INDEX_CHUNKS: usize = INDEX_FILES * PACKS_PER_INDEX_FILE * CHUNKS_PER_PACK;

/// An amount of data processed in a measured time.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Bytes processed.
    pub bytes: u64,
    /// Wall-clock time taken.
    pub elapsed: Duration,
    /// CPU time the whole process used meanwhile, all threads, where the system tells.
    pub cpu: Option<Duration>,
}

impl Rate {
    /// Measures `work`, which returns the bytes it processed.
    fn measure<T>(work: impl FnOnce() -> Result<(u64, T)>) -> Result<(Rate, T)> {
        let cpu_before = process_cpu_time();
        let start = Instant::now();
        let (bytes, value) = work()?;
        let elapsed = start.elapsed();
        let cpu = process_cpu_time()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        Ok((
            Rate {
                bytes,
                elapsed,
                cpu,
            },
            value,
        ))
    }

    /// Average number of cores kept busy: near the CPU count when the work is bound by
    /// computation, well below it when it waits on storage or on a serial step.
    pub fn cores_busy(&self) -> Option<f64> {
        self.cpu
            .map(|cpu| cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9))
    }

    /// Throughput in MB/s (10^6 bytes per second).
    pub fn mb_per_s(&self) -> f64 {
        // A floor on the time keeps a degenerate, instant run from dividing by zero.
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The outcome of one backup of one stream.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Throughput from `Backup::start` to `commit` inclusive.
    pub rate: Rate,
    /// The stream's own figures.
    pub stats: BackupStats,
    /// The committed point.
    pub point: Point,
}

/// The outcome of loading a large index.
#[derive(Debug, Clone, Copy)]
pub struct IndexOpen {
    /// Chunk records loaded.
    pub chunks: usize,
    /// Time of `Vault::open`, which reads and sorts every index file.
    pub elapsed: Duration,
    /// Memory the loaded index holds per chunk.
    pub bytes_per_chunk: f64,
}

/// Single-core SHA-256 over 1 MiB pieces of `data`, cycling through it until
/// [`SHA256_TOTAL`] bytes are hashed. Hashing the benchmark's own data rather than one
/// buffer over and over keeps the figure honest about memory bandwidth.
pub fn sha256(data: &[u8]) -> Result<Rate> {
    if data.is_empty() {
        return Err(Failure::new("the SHA-256 yardstick needs data to hash"));
    }
    let (rate, ()) = Rate::measure(|| {
        let mut hashed = 0;
        for piece in data.chunks(PIECE).cycle() {
            if hashed >= SHA256_TOTAL {
                break;
            }
            // black_box keeps the optimiser from discarding digests nobody reads.
            std::hint::black_box(Sha256::digest(std::hint::black_box(piece)));
            hashed += piece.len();
        }
        Ok((hashed as u64, ()))
    })?;
    Ok(rate)
}

/// Single-core SHA-256 as the vault hashes chunk ids: [`sha256`]'s pieces two at a time,
/// side by side ([`tessera_sha256::Prefix::digest_pair`]). Shown beside the yardstick,
/// which stays the one-message rate every target is measured against.
pub fn sha256_pairs(data: &[u8]) -> Result<Rate> {
    let piece = PIECE.min(data.len() / 2);
    if piece == 0 {
        return Err(Failure::new("hashing in pairs needs data to hash"));
    }
    let (rate, ()) = Rate::measure(|| {
        let mut hashed = 0;
        let pieces = data.chunks_exact(piece).collect::<Vec<_>>();
        for pair in pieces.chunks_exact(2).cycle() {
            if hashed >= SHA256_TOTAL {
                break;
            }
            let digests = tessera_sha256::Prefix::EMPTY
                .digest_pair(std::hint::black_box(pair[0]), std::hint::black_box(pair[1]));
            std::hint::black_box(digests);
            hashed += 2 * piece;
        }
        Ok((hashed as u64, ()))
    })?;
    Ok(rate)
}

/// Writes `data` through the local backend as a backup writes packs, into a new backend
/// at `root`, then removes them: objects of [`format::PACK_TARGET_SIZE`] bytes, each
/// spooled, flushed and renamed into place, by `writers` threads at once (a backup has a
/// pack open per worker thread). This is the storage's speed for new data, which ingest
/// of incompressible data needs on top of its CPU work.
pub fn storage_write(root: &Path, data: &[u8], writers: usize) -> Result<Rate> {
    let backend = LocalBackend::new(root);
    backend
        .create()
        .context(format!("cannot create a backend in {}", root.display()))?;
    let packs: Vec<(String, &[u8])> = data
        .chunks(format::PACK_TARGET_SIZE)
        .enumerate()
        .map(|(i, pack)| (format!("{i:064x}"), pack))
        .collect();
    let writers = writers.max(1);
    let write = |share: usize| -> Result<()> {
        for (name, pack) in packs.iter().skip(share).step_by(writers) {
            let mut spool = backend
                .spool(FileKind::Pack)
                .context("cannot start a pack file")?;
            for piece in pack.chunks(PIECE) {
                spool.append(piece).context("cannot write a pack file")?;
            }
            spool
                .commit(&backend, name)
                .context("cannot store a pack file")?;
        }
        Ok(())
    };
    let (rate, ()) = Rate::measure(|| {
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..writers)
                .map(|share| scope.spawn(move || write(share)))
                .collect();
            for thread in threads {
                thread
                    .join()
                    .map_err(|_| Failure::new("a pack-writing thread panicked"))??;
            }
            Ok::<_, Failure>(())
        })?;
        Ok((data.len() as u64, ()))
    })?;
    for (name, _) in &packs {
        backend
            .remove(FileKind::Pack, name)
            .context("cannot remove a pack file")?;
    }
    Ok(rate)
}

/// Linux reports process times in units of `USER_HZ`, which is 100 on every
/// architecture the kernel supports today.
const USER_HZ: u64 = 100;

/// User plus system CPU time of the whole process, threads that already ended included,
/// from `/proc/self/stat`; `None` where that file does not exist or does not parse.
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after its
    // closing parenthesis start at field 3, so utime and stime (14 and 15) are the 12th
    // and 13th of them.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = user + system;
    Some(
        Duration::from_secs(ticks / USER_HZ)
            + Duration::from_nanos((ticks % USER_HZ) * (1_000_000_000 / USER_HZ)),
    )
}

fn credential() -> Credential {
    Credential::password(PASSWORD)
}

fn backend(root: &Path) -> Arc<dyn Backend> {
    Arc::new(LocalBackend::new(root))
}

/// Creates an encrypted vault at `root` with the default chunking and compression.
pub fn create_vault(root: &Path) -> Result<Vault> {
    let mut options = InitOptions::new(Encryption::Credential(credential()));
    options.kdf = CHEAP_KDF;
    Vault::init(backend(root), options, Arc::new(SystemClock))
        .context(format!("cannot create a vault in {}", root.display()))
}

/// Backs `data` up as the single entry `data`, written in 1 MiB pieces, timing the whole
/// writer session from start to commit.
pub fn ingest(vault: &Vault, data: &[u8], chunking: Chunking) -> Result<Ingest> {
    let plugin = PluginRef {
        name: "tessera-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let (rate, (stats, point)) = Rate::measure(|| {
        let mut backup = Backup::start(vault, BackupOptions::new("bench", plugin))
            .context("cannot start the backup")?;
        let mut stream = backup
            .stream(chunking)
            .context("cannot open a content stream")?;
        for piece in data.chunks(PIECE) {
            stream
                .write(piece)
                .context("cannot write to the content stream")?;
        }
        let result = stream
            .finish()
            .context("cannot finish the content stream")?;
        let mut entry = Entry::new("data", EntryKind::File);
        entry.meta.size = data.len() as u64;
        entry.content = result.content;
        backup
            .add_entry("data", entry)
            .context("cannot add the entry")?;
        let (_, point) = backup
            .commit(CommitOptions::default())
            .context("cannot commit the backup")?;
        // The point's figures count every chunk stored, the stream's only those stored
        // before it ended.
        Ok((data.len() as u64, (point.stats, point)))
    })?;
    Ok(Ingest { rate, stats, point })
}

/// An output that checks every byte written against the original, so the timed restore
/// itself is verified. A byte comparison is far cheaper than hashing the output, which
/// would cap the restore at the very SHA-256 speed it is compared with.
struct VerifyingSink<'a> {
    expected: &'a [u8],
    pos: usize,
}

impl io::Write for VerifyingSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.pos + buf.len();
        let Some(expected) = self.expected.get(self.pos..end) else {
            return Err(io::Error::other(format!(
                "restored content is longer than the original ({} bytes)",
                self.expected.len()
            )));
        };
        if expected != buf {
            let at = self.pos + expected.iter().zip(buf).take_while(|(a, b)| a == b).count();
            return Err(io::Error::other(format!(
                "restored content differs from the original at byte {at}"
            )));
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads the entry `data` of `point` back in full and checks it equals `original`.
pub fn restore(vault: &Vault, point: &Point, original: &[u8]) -> Result<Rate> {
    let entry = vault
        .find_entry(point, "data")
        .context("cannot find the backed-up entry")?;
    let mut sink = VerifyingSink {
        expected: original,
        pos: 0,
    };
    let (rate, ()) = Rate::measure(|| {
        let copied = vault
            .content_reader(&entry.content)
            .copy_to(&mut sink)
            .context("restore failed")?;
        Ok((copied, ()))
    })?;
    if rate.bytes != original.len() as u64 || sink.pos != original.len() {
        return Err(Failure::new(format!(
            "restore returned {} bytes, the original has {}",
            rate.bytes,
            original.len()
        )));
    }
    Ok(rate)
}

/// Asks the kernel to drop the cached pages of every file below `dir`, so the next reads
/// come from storage. A no-op on file systems that live in memory (tmpfs).
pub fn drop_from_page_cache(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).context(format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.context(format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .context(format!("cannot stat {}", path.display()))?;
        if kind.is_dir() {
            drop_from_page_cache(&path)?;
        } else if kind.is_file() {
            let file =
                std::fs::File::open(&path).context(format!("cannot open {}", path.display()))?;
            nix::fcntl::posix_fadvise(
                &file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )
            .map_err(|e| {
                Failure::new(format!(
                    "cannot drop {} from the page cache: {e}",
                    path.display()
                ))
            })?;
        }
    }
    Ok(())
}

/// Writes index files listing [`INDEX_CHUNKS`] synthetic chunks into a fresh vault at
/// `root`, then times opening it. The packs do not exist: opening reads only the index.
pub fn index_open(root: &Path, seed: u64) -> Result<IndexOpen> {
    let vault = create_vault(root)?;
    let mut rng = SplitMix64::new(seed);
    for _ in 0..INDEX_FILES {
        let packs = (0..PACKS_PER_INDEX_FILE)
            .map(|_| {
                // Blobs follow the 5-byte pack preamble back to back, with lengths around
                // the default 1 MiB chunk plus the 29 bytes of nonce, mode and tag.
                let mut offset = 5u32;
                let entries = (0..CHUNKS_PER_PACK)
                    .map(|_| {
                        let raw_len = (768 << 10) + rng.below(512 << 10) as u32;
                        let len = raw_len + 29;
                        let entry = PackEntry {
                            id: ChunkId(rng.id()),
                            kind: BlobKind::Data,
                            offset,
                            len,
                            raw_len,
                        };
                        offset += len;
                        entry
                    })
                    .collect();
                (PackId(rng.id()), entries)
            })
            .collect();
        let (id, bytes) = IndexFile { packs }.seal(vault.crypto());
        vault
            .backend()
            .write(FileKind::Index, &id.to_hex(), &bytes)
            .context("cannot write an index file")?;
    }
    drop(vault);

    let start = Instant::now();
    let vault = Vault::open(backend(root), OpenOptions::new(Some(credential())))
        .context("cannot open the vault with the large index")?;
    let elapsed = start.elapsed();
    let index = vault.index();
    if index.len() != INDEX_CHUNKS {
        return Err(Failure::new(format!(
            "the opened index holds {} chunks, {INDEX_CHUNKS} were written",
            index.len()
        )));
    }
    Ok(IndexOpen {
        chunks: index.len(),
        elapsed,
        bytes_per_chunk: index.bytes_per_chunk(),
    })
}
