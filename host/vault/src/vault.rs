//! Opening, creating and reading a vault.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::chunker::{CdcChunker, CdcParams};
use crate::codec::{self, DecodeError};
use crate::crypto::{Crypto, MasterKey};
use crate::error::{Error, Result};
use crate::format::{
    CONFIG_FORMAT, DEFAULT_COMPRESSION_LEVEL, POINT_MAGIC, TREE_VERSION, VAULT_VERSION,
};
use crate::id::{ChunkId, IndexId, PackId, PointId, SlotId, random_bytes};
use crate::index::{Index, IndexFile, Location};
use crate::key::{Credential, KdfParams, KeyError, KeySlot, SlotKind};
use crate::pack::BlobKind;
use crate::point::Point;
use crate::session::{self, Mark};
use crate::tree::{Entry, ExtentList, Tree};

/// Index files [`Vault::reload_index`] reads and decodes side by side before adding them.
const INDEX_READ_BATCH: usize = 16;

/// Threads to use for parallel work: `requested`, or one per CPU when 0.
pub(crate) fn worker_threads(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    // Asked once: the answer costs several system calls (cgroup files, affinity) and
    // readers are made per file.
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    })
}

/// A source of the current time, so time-based rules can be tested without sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> jiff::Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// The vault's `config` document: public parameters, never secrets (except the chunker
/// seed of an unencrypted vault, which has nothing to protect).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Always `tessera-vault`.
    pub format: String,
    /// Layout version.
    pub version: u32,
    /// Random vault id.
    pub id: String,
    /// `aes-256-gcm` or `none`.
    pub encryption: String,
    /// When the vault was created.
    pub created: jiff::Timestamp,
    /// Default zstd level for new chunks.
    pub compression_level: i32,
    /// Default content-defined chunking parameters.
    pub chunker: CdcParams,
    /// Chunker seed of an unencrypted vault (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunker_seed: Option<String>,
}

/// How to protect a new vault.
#[derive(Debug, Clone)]
pub enum Encryption {
    /// Encrypt, with a first key slot opened by this credential.
    Credential(Credential),
    /// No encryption; only when the operator asks for it explicitly.
    None,
}

/// Options of [`Vault::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Encryption and first key slot.
    pub encryption: Encryption,
    /// Argon2id cost for password slots.
    pub kdf: KdfParams,
    /// Default zstd level (0 disables compression).
    pub compression_level: i32,
    /// Default content-defined chunking parameters.
    pub chunker: CdcParams,
}

impl InitOptions {
    /// Defaults with the given encryption.
    pub fn new(encryption: Encryption) -> Self {
        InitOptions {
            encryption,
            kdf: KdfParams::default(),
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            chunker: CdcParams::default(),
        }
    }
}

/// Options of [`Vault::open`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The credential; ignored for unencrypted vaults.
    pub credential: Option<Credential>,
    /// The clock used for sessions, marks and grace periods.
    pub clock: Arc<dyn Clock>,
}

impl OpenOptions {
    /// Open with a credential and the system clock.
    pub fn new(credential: Option<Credential>) -> Self {
        OpenOptions {
            credential,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Recovery points that could not be loaded: file name and reason.
pub type DamagedPoints = Vec<(String, Error)>;

/// A key slot as listed to the operator.
#[derive(Debug, Clone, Serialize)]
pub struct SlotInfo {
    /// The slot's id.
    pub id: SlotId,
    /// What opens it.
    pub kind: SlotKind,
    /// Its label.
    pub label: String,
    /// When it was added.
    pub created: jiff::Timestamp,
    /// Whether it is the slot this handle was opened with.
    pub current: bool,
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: Config,
    pub(crate) crypto: Crypto,
    pub(crate) master: Option<MasterKey>,
    pub(crate) opened_slot: Option<SlotId>,
    pub(crate) index: RwLock<IndexState>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) kdf: KdfParams,
    /// Recently read trees: restoring or browsing looks paths up one by one, and each
    /// lookup walks from the root.
    pub(crate) trees: Mutex<TreeCache>,
}

/// Entries of cached trees held at most; past it the cache starts over.
const TREE_CACHE_ENTRIES: usize = 20_000;

/// Decoded trees by id, bounded by their total number of entries.
#[derive(Default)]
pub(crate) struct TreeCache {
    trees: HashMap<ChunkId, Arc<Tree>>,
    entries: usize,
}

/// The loaded index and the files it was loaded from.
#[derive(Default)]
pub(crate) struct IndexState {
    index: Arc<Index>,
    /// Index files read (including damaged ones, which are not retried).
    files: BTreeSet<String>,
    /// Index files that could not be read, with the reason.
    damaged: Vec<(String, String)>,
    /// Index files this handle wrote, in `files` already but added to `index` only when
    /// it is next asked for: a backup that ends the process never pays for re-sorting
    /// the whole index.
    pending: Vec<IndexFile>,
}

impl IndexState {
    /// Adds the pending index files to the index.
    fn apply_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut index = (*self.index).clone();
        for file in self.pending.drain(..) {
            for (pack, entries) in &file.packs {
                index.add_pack(*pack, entries);
            }
        }
        index.finish();
        self.index = Arc::new(index);
    }
}

/// An open vault. Cheap to clone; all clones share the loaded index.
#[derive(Clone)]
pub struct Vault {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("location", &self.inner.backend.location())
            .finish()
    }
}

fn read_config(backend: &dyn Backend) -> Result<Config> {
    let not_a_vault = |detail: String| Error::NotAVault {
        location: backend.location(),
        detail,
    };
    let bytes = backend.read(FileKind::Config, "config").map_err(|e| {
        if e.is_not_found() {
            not_a_vault("there is no config file".into())
        } else {
            e.into()
        }
    })?;
    let config: Config = serde_json::from_slice(&bytes)
        .map_err(|e| not_a_vault(format!("config does not parse: {e}")))?;
    if config.format != CONFIG_FORMAT {
        return Err(not_a_vault(format!("config format is '{}'", config.format)));
    }
    if config.version != VAULT_VERSION {
        return Err(not_a_vault(format!(
            "vault version {} is not supported (this build reads version {VAULT_VERSION})",
            config.version
        )));
    }
    Ok(config)
}

impl Vault {
    /// Creates a vault in an empty location and opens it.
    pub fn init(
        backend: Arc<dyn Backend>,
        options: InitOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Vault> {
        if backend.read(FileKind::Config, "config").is_ok() {
            return Err(Error::AlreadyExists(backend.location()));
        }
        options.chunker.validate()?;
        if !(0..=22).contains(&options.compression_level) {
            return Err(Error::Invalid(format!(
                "compression level {} is outside 0..=22",
                options.compression_level
            )));
        }
        backend.create()?;
        let master = MasterKey::generate();
        let vault_id = hex::encode(random_bytes::<16>());
        let (encryption, chunker_seed) = match &options.encryption {
            Encryption::Credential(_) => ("aes-256-gcm", None),
            Encryption::None => ("none", Some(hex::encode(master.chunker))),
        };
        let config = Config {
            format: CONFIG_FORMAT.into(),
            version: VAULT_VERSION,
            id: vault_id.clone(),
            encryption: encryption.into(),
            created: clock.now(),
            compression_level: options.compression_level,
            chunker: options.chunker,
            chunker_seed,
        };
        let mut opened_slot = None;
        if let Encryption::Credential(cred) = &options.encryption {
            let slot_id = SlotId::random();
            let slot = KeySlot::new(&vault_id, &slot_id, &master, cred, options.kdf, "initial")?;
            backend.write(FileKind::Key, &slot_id.to_hex(), &slot.to_json())?;
            opened_slot = Some(slot_id);
        }
        // The config is written last: a vault whose init was interrupted has no config and
        // can simply be initialised again.
        let doc = serde_json::to_vec_pretty(&config).expect("config always serializes");
        backend.write(FileKind::Config, "config", &doc)?;
        let (crypto, master) = match options.encryption {
            Encryption::Credential(_) => (Crypto::encrypted(&master), Some(master)),
            Encryption::None => (Crypto::plain(master.chunker), None),
        };
        Ok(Vault {
            inner: Arc::new(Inner {
                backend,
                config,
                crypto,
                master,
                opened_slot,
                index: RwLock::new(IndexState::default()),
                clock,
                kdf: options.kdf,
                trees: Mutex::new(TreeCache::default()),
            }),
        })
    }

    /// Opens a vault and loads its index.
    pub fn open(backend: Arc<dyn Backend>, options: OpenOptions) -> Result<Vault> {
        let config = read_config(backend.as_ref())?;
        let (crypto, master, opened_slot) = match config.encryption.as_str() {
            "none" => {
                let seed = config.chunker_seed.as_deref().unwrap_or("");
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(seed, &mut bytes).map_err(|_| Error::NotAVault {
                    location: backend.location(),
                    detail: "config has no valid chunker seed".into(),
                })?;
                (Crypto::plain(bytes), None, None)
            }
            "aes-256-gcm" => {
                let cred = options.credential.as_ref().ok_or_else(|| {
                    Error::Invalid(
                        "the vault is encrypted: a password or key file is needed".into(),
                    )
                })?;
                let (slot, master) = unlock(backend.as_ref(), &config, cred)?;
                (Crypto::encrypted(&master), Some(master), Some(slot))
            }
            other => {
                return Err(Error::NotAVault {
                    location: backend.location(),
                    detail: format!("unknown encryption '{other}'"),
                });
            }
        };
        let vault = Vault {
            inner: Arc::new(Inner {
                backend,
                config,
                crypto,
                master,
                opened_slot,
                index: RwLock::new(IndexState::default()),
                clock: options.clock,
                kdf: KdfParams::default(),
                trees: Mutex::new(TreeCache::default()),
            }),
        };
        vault.reload_index()?;
        Ok(vault)
    }

    /// Brings the in-memory index up to date with the index files and deletion marks in
    /// the vault. Only index files not seen before are read, unless some were removed
    /// (by prune), in which case the index is rebuilt. When the files are those read
    /// already, the index is kept as it is, the marks aside: every backup reloads it as it
    /// starts, and copying a large vault's index would cost it tens of milliseconds.
    pub fn reload_index(&self) -> Result<()> {
        let backend = &self.inner.backend;
        let names: BTreeSet<String> = backend
            .list(FileKind::Index)?
            .into_iter()
            .map(|i| i.name)
            .collect();
        let (mut index, mut loaded, mut damaged) = {
            let mut state = self.inner.index.write().expect("index lock");
            state.apply_pending();
            if state.files == names && !names.is_empty() {
                drop(state);
                let marked = self.marked_packs()?;
                let mut state = self.inner.index.write().expect("index lock");
                // Another thread may have reloaded meanwhile; then it set the marks too.
                if !state.index.excludes_exactly(&marked) {
                    Arc::make_mut(&mut state.index).set_excluded(&marked);
                }
                return Ok(());
            }
            if state.files.is_subset(&names) {
                (
                    (*state.index).clone(),
                    state.files.clone(),
                    state.damaged.clone(),
                )
            } else {
                (Index::new(), BTreeSet::new(), Vec::new())
            }
        };
        let new: Vec<String> = names.difference(&loaded).cloned().collect();
        // A batch at a time, so that only a few decoded files wait to be added.
        for batch in new.chunks(INDEX_READ_BATCH) {
            let files = self.read_index_files(batch);
            index.reserve(
                files
                    .iter()
                    .flatten()
                    .flat_map(|file| &file.packs)
                    .map(|(_, entries)| entries.len())
                    .sum(),
            );
            for (name, file) in batch.iter().zip(files) {
                match file {
                    Ok(file) => {
                        for (pack, entries) in &file.packs {
                            index.add_pack(*pack, entries);
                        }
                        loaded.insert(name.clone());
                    }
                    Err(Error::Backend(ref b)) if b.is_not_found() => {}
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "skipping damaged index file");
                        damaged.push((name.clone(), e.to_string()));
                        loaded.insert(name.clone());
                    }
                }
            }
        }
        damaged.retain(|(name, _)| names.contains(name));
        loaded.retain(|name| names.contains(name));
        index.finish();
        let marked = self.marked_packs()?;
        index.set_excluded(&marked);
        *self.inner.index.write().expect("index lock") = IndexState {
            index: Arc::new(index),
            files: loaded,
            damaged,
            pending: Vec::new(),
        };
        Ok(())
    }

    /// Reads, verifies and decodes the index files `names`, on as many threads as there
    /// are CPUs when there are several: each file is hashed, decrypted and decompressed,
    /// which for a large vault is most of the time it takes to open. The results are in
    /// the order of `names`, so packs are numbered the same way however the work was split.
    fn read_index_files(&self, names: &[String]) -> Vec<Result<IndexFile>> {
        let read = |name: &String| {
            let bytes = self.inner.backend.read(FileKind::Index, name)?;
            self.check_name(FileKind::Index, name, &bytes)?;
            IndexFile::open(&self.inner.crypto, &bytes).map_err(|source| Error::Corrupt {
                kind: FileKind::Index,
                name: name.clone(),
                source,
            })
        };
        let workers = worker_threads(0).min(names.len());
        if workers < 2 {
            return names.iter().map(read).collect();
        }
        let next = AtomicUsize::new(0);
        let mut files: Vec<(usize, Result<IndexFile>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let at = next.fetch_add(1, Ordering::Relaxed);
                            let Some(name) = names.get(at) else {
                                return done;
                            };
                            done.push((at, read(name)));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        files.sort_unstable_by_key(|&(at, _)| at);
        files.into_iter().map(|(_, file)| file).collect()
    }

    /// Verifies that a content-addressed object's bytes hash to its name.
    pub(crate) fn check_name(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        if IndexId::hash_of(bytes).to_hex() != name {
            return Err(Error::Corrupt {
                kind,
                name: name.get(..8).unwrap_or(name).to_string(),
                source: DecodeError::Malformed("contents do not match the file name".into()),
            });
        }
        Ok(())
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The vault's config.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The vault's crypto.
    pub fn crypto(&self) -> &Crypto {
        &self.inner.crypto
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// A snapshot of the index.
    pub fn index(&self) -> Arc<Index> {
        {
            let state = self.inner.index.read().expect("index lock");
            if state.pending.is_empty() {
                return state.index.clone();
            }
        }
        let mut state = self.inner.index.write().expect("index lock");
        state.apply_pending();
        state.index.clone()
    }

    /// Adds index files this handle wrote itself, when the index is next asked for.
    pub(crate) fn merge_into_index(&self, files: Vec<(String, IndexFile)>) {
        let mut state = self.inner.index.write().expect("index lock");
        for (name, file) in files {
            state.files.insert(name);
            state.pending.push(file);
        }
    }

    /// Index files that could not be read when the index was loaded.
    pub fn damaged_index_files(&self) -> Vec<(String, String)> {
        self.inner.index.read().expect("index lock").damaged.clone()
    }

    /// A content-defined chunker keyed for this vault.
    pub fn cdc_chunker(&self, params: CdcParams) -> Result<CdcChunker> {
        Ok(CdcChunker::new(self.inner.crypto.chunker_seed(), params)?)
    }

    /// Reads and decodes a chunk.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<bytes::Bytes> {
        self.read_chunk_from(&self.index(), id)
    }

    /// Reads and decodes a chunk found in `index`. A chunk stored more than once (stored
    /// again after `check` found a copy damaged) is read from the first copy that
    /// decodes.
    pub fn read_chunk_from(&self, index: &Index, id: &ChunkId) -> Result<bytes::Bytes> {
        let best = index
            .lookup(id)
            .ok_or_else(|| Error::MissingChunk(id.short()))?;
        let first = match self.read_chunk_at(id, &best) {
            Ok(data) => return Ok(data),
            Err(e) => e,
        };
        for loc in index.locations(id) {
            if loc.pack == best.pack && loc.offset == best.offset {
                continue;
            }
            if let Ok(data) = self.read_chunk_at(id, &loc) {
                return Ok(data);
            }
        }
        Err(first)
    }

    /// Reads and decodes a chunk at a known location.
    pub fn read_chunk_at(&self, id: &ChunkId, loc: &Location) -> Result<bytes::Bytes> {
        let blob = self.inner.backend.read_range(
            FileKind::Pack,
            &loc.pack.to_hex(),
            loc.offset as u64,
            loc.len as u64,
        )?;
        codec::decode_blob(&self.inner.crypto, id, blob, loc.raw_len).map_err(|source| {
            Error::BadChunk {
                id: id.short(),
                pack: loc.pack.short(),
                source,
            }
        })
    }

    /// Reads a tree.
    pub fn read_tree(&self, id: &ChunkId) -> Result<Tree> {
        let bytes = self.read_chunk(id)?;
        let tree: Tree = serde_json::from_slice(&bytes).map_err(|e| Error::BadTree {
            id: id.short(),
            detail: e.to_string(),
        })?;
        if tree.version != TREE_VERSION {
            return Err(Error::BadTree {
                id: id.short(),
                detail: format!("version {}", tree.version),
            });
        }
        Ok(tree)
    }

    /// Reads a tree through the vault's cache of recently read trees.
    pub fn cached_tree(&self, id: &ChunkId) -> Result<Arc<Tree>> {
        if let Some(tree) = self
            .inner
            .trees
            .lock()
            .expect("tree cache lock")
            .trees
            .get(id)
        {
            return Ok(tree.clone());
        }
        let tree = Arc::new(self.read_tree(id)?);
        let mut cache = self.inner.trees.lock().expect("tree cache lock");
        if cache.entries + tree.entries.len() > TREE_CACHE_ENTRIES {
            *cache = TreeCache::default();
        }
        cache.entries += tree.entries.len();
        cache.trees.insert(*id, tree.clone());
        Ok(tree)
    }

    /// Reads an extent list blob.
    pub fn read_extent_list(&self, id: &ChunkId) -> Result<ExtentList> {
        let bytes = self.read_chunk(id)?;
        ExtentList::decode(&bytes).map_err(|detail| Error::BadTree {
            id: id.short(),
            detail,
        })
    }

    /// Loads one recovery point.
    pub fn load_point(&self, id: &PointId) -> Result<Point> {
        let name = id.to_hex();
        let bytes = self.inner.backend.read(FileKind::Point, &name)?;
        self.check_name(FileKind::Point, &name, &bytes)?;
        let corrupt = |source| Error::Corrupt {
            kind: FileKind::Point,
            name: id.short(),
            source,
        };
        let doc = codec::open_object(&self.inner.crypto, POINT_MAGIC, &bytes).map_err(corrupt)?;
        serde_json::from_slice(&doc).map_err(|e| corrupt(DecodeError::Malformed(e.to_string())))
    }

    /// Loads a recovery point the caller named: one that is not there is
    /// [`Error::PointNotFound`] rather than the store's not-found error.
    pub fn load_named_point(&self, id: &PointId) -> Result<Point> {
        self.load_point(id).map_err(|e| match e {
            Error::Backend(e) if e.is_not_found() => Error::PointNotFound(id.to_hex()),
            e => e,
        })
    }

    /// Every recovery point that loads, oldest first, and the ones that do not with the
    /// reason.
    pub fn points_with_errors(&self) -> Result<(Vec<(PointId, Point)>, DamagedPoints)> {
        let mut points = Vec::new();
        let mut errors = Vec::new();
        for info in self.inner.backend.list(FileKind::Point)? {
            let Ok(id) = info.name.parse::<PointId>() else {
                continue;
            };
            match self.load_point(&id) {
                Ok(point) => points.push((id, point)),
                Err(Error::Backend(e)) if e.is_not_found() => {}
                Err(e) => errors.push((info.name, e)),
            }
        }
        // A rewritten point keeps its original's time and comes after it.
        points.sort_by(|a, b| {
            let rewritten = |p: &Point| p.original.is_some();
            a.1.end
                .cmp(&b.1.end)
                .then(rewritten(&a.1).cmp(&rewritten(&b.1)))
                .then(a.0.cmp(&b.0))
        });
        Ok((points, errors))
    }

    /// Every recovery point, oldest first; damaged points are skipped with a warning.
    pub fn points(&self) -> Result<Vec<(PointId, Point)>> {
        let (points, errors) = self.points_with_errors()?;
        for (name, e) in errors {
            tracing::warn!(point = %name, error = %e, "skipping damaged recovery point");
        }
        Ok(points)
    }

    /// Finds a point by full id or unique prefix.
    pub fn find_point(&self, prefix: &str) -> Result<PointId> {
        if let Ok(id) = prefix.parse::<PointId>() {
            return Ok(id);
        }
        let prefix = prefix.to_ascii_lowercase();
        let matches: Vec<String> = self
            .inner
            .backend
            .list(FileKind::Point)?
            .into_iter()
            .map(|i| i.name)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        match matches.as_slice() {
            [one] => one.parse().map_err(|_| Error::PointNotFound(prefix)),
            [] => Err(Error::PointNotFound(prefix)),
            _ => Err(Error::AmbiguousPoint(prefix)),
        }
    }

    /// The latest point of an item (all items if `None`).
    pub fn latest_point(&self, item: Option<&str>) -> Result<Option<(PointId, Point)>> {
        Ok(self
            .points()?
            .into_iter()
            .rev()
            .find(|(_, p)| item.is_none_or(|i| p.item == i)))
    }

    /// The entry at `path` in a point (`""` is the root directory).
    pub fn find_entry(&self, point: &Point, path: &str) -> Result<Entry> {
        let mut entry = Entry::new("", crate::tree::EntryKind::Directory);
        entry.subtree = Some(point.root);
        let trimmed = path.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(entry);
        }
        for part in trimmed.split('/') {
            let not_found = || Error::PathNotFound {
                point: format!("of '{}' taken {}", point.item, point.end),
                path: path.to_string(),
            };
            let subtree = entry.subtree.ok_or_else(not_found)?;
            entry = self
                .cached_tree(&subtree)?
                .get(part)
                .cloned()
                .ok_or_else(not_found)?;
        }
        Ok(entry)
    }

    /// Lists the key slots.
    pub fn key_slots(&self) -> Result<Vec<SlotInfo>> {
        let mut out = Vec::new();
        for info in self.inner.backend.list(FileKind::Key)? {
            let Ok(id) = info.name.parse::<SlotId>() else {
                continue;
            };
            let slot =
                KeySlot::from_json(&id, &self.inner.backend.read(FileKind::Key, &info.name)?)?;
            out.push(SlotInfo {
                id,
                kind: slot.kind,
                label: slot.label,
                created: slot.created,
                current: self.inner.opened_slot == Some(id),
            });
        }
        out.sort_by_key(|s| s.created);
        Ok(out)
    }

    fn master(&self) -> Result<&MasterKey> {
        self.inner
            .master
            .as_ref()
            .ok_or_else(|| Error::Invalid("the vault is not encrypted: it has no key slots".into()))
    }

    /// Adds a key slot for `cred`; returns its id.
    pub fn add_key_slot(&self, cred: &Credential, label: &str) -> Result<SlotId> {
        self.add_key_slot_with(cred, label, self.inner.kdf)
    }

    /// Adds a key slot with explicit Argon2id cost.
    pub fn add_key_slot_with(
        &self,
        cred: &Credential,
        label: &str,
        kdf: KdfParams,
    ) -> Result<SlotId> {
        let master = self.master()?;
        let id = SlotId::random();
        let slot = KeySlot::new(&self.inner.config.id, &id, master, cred, kdf, label)?;
        self.inner
            .backend
            .write(FileKind::Key, &id.to_hex(), &slot.to_json())?;
        Ok(id)
    }

    /// Removes a key slot; the last slot cannot be removed.
    pub fn remove_key_slot(&self, slot: &SlotId) -> Result<()> {
        let slots = self.key_slots()?;
        if !slots.iter().any(|s| s.id == *slot) {
            return Err(Error::Invalid(format!("no key slot {}", slot.short())));
        }
        if slots.len() == 1 {
            return Err(Error::Invalid(
                "refusing to remove the last key slot: the vault would be unreadable forever"
                    .into(),
            ));
        }
        self.inner.backend.remove(FileKind::Key, &slot.to_hex())?;
        Ok(())
    }

    /// Replaces the slot this handle was opened with by one for `new`. The new slot is
    /// written before the old one is removed, so an interruption leaves both working.
    pub fn change_password(&self, new: &Credential) -> Result<SlotId> {
        let old = self.inner.opened_slot.ok_or_else(|| {
            Error::Invalid("the vault is not encrypted: it has no password".into())
        })?;
        let label = self
            .key_slots()?
            .into_iter()
            .find(|s| s.id == old)
            .map(|s| s.label)
            .unwrap_or_default();
        let id = self.add_key_slot(new, &label)?;
        self.inner.backend.remove(FileKind::Key, &old.to_hex())?;
        Ok(id)
    }

    /// Writes a blob-less object: used for sealed metadata.
    pub(crate) fn write_sealed(
        &self,
        kind: FileKind,
        magic: [u8; 4],
        doc: &[u8],
    ) -> Result<String> {
        let sealed = codec::seal_object(&self.inner.crypto, magic, doc, true);
        let name = IndexId::hash_of(&sealed).to_hex();
        self.inner.backend.write(kind, &name, &sealed)?;
        Ok(name)
    }

    /// Reads a sealed object, verifying its name.
    pub(crate) fn read_sealed(
        &self,
        kind: FileKind,
        magic: [u8; 4],
        name: &str,
    ) -> Result<Vec<u8>> {
        let bytes = self.inner.backend.read(kind, name)?;
        self.check_name(kind, name, &bytes)?;
        codec::open_object(&self.inner.crypto, magic, &bytes).map_err(|source| Error::Corrupt {
            kind,
            name: name.get(..8).unwrap_or(name).to_string(),
            source,
        })
    }

    /// The kind of a chunk per the index.
    pub fn chunk_kind(&self, id: &ChunkId) -> Option<BlobKind> {
        self.index().lookup(id).map(|l| l.kind)
    }

    /// Current deletion marks.
    pub fn marks(&self) -> Result<Vec<(String, Mark)>> {
        session::load_marks(self)
    }

    /// Every pack some deletion mark lists.
    pub fn marked_packs(&self) -> Result<HashSet<PackId>> {
        Ok(self
            .marks()?
            .into_iter()
            .flat_map(|(_, m)| m.packs)
            .collect())
    }

    /// Every pack in the backend, with its size.
    pub fn pack_sizes(&self) -> Result<HashMap<PackId, u64>> {
        Ok(self
            .inner
            .backend
            .list(FileKind::Pack)?
            .into_iter()
            .filter_map(|i| i.name.parse().ok().map(|id| (id, i.size)))
            .collect())
    }
}

fn unlock(
    backend: &dyn Backend,
    config: &Config,
    cred: &Credential,
) -> Result<(SlotId, MasterKey)> {
    let mut tried = 0;
    let kind = match cred {
        Credential::Password(_) => SlotKind::Password,
        Credential::KeyFile(_) => SlotKind::KeyFile,
    };
    for info in backend.list(FileKind::Key)? {
        let Ok(id) = info.name.parse::<SlotId>() else {
            continue;
        };
        let slot = match backend
            .read(FileKind::Key, &info.name)
            .map_err(Error::from)
            .and_then(|b| KeySlot::from_json(&id, &b).map_err(Error::from))
        {
            Ok(slot) => slot,
            Err(e) => {
                tracing::warn!(slot = %id.short(), error = %e, "skipping unreadable key slot");
                continue;
            }
        };
        if slot.kind != kind {
            continue;
        }
        tried += 1;
        if let Some(master) = slot.open(&config.id, &id, cred)? {
            return Ok((id, master));
        }
    }
    Err(match (tried, kind) {
        (0, kind) => KeyError::NoSlotOfKind(kind),
        (_, SlotKind::Password) => KeyError::WrongPassword,
        (_, SlotKind::KeyFile) => KeyError::WrongKeyFile,
    }
    .into())
}
