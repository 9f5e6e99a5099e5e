//! Chunk stores: one small trait, [`ChunkStore`], and the local-directory store every tier keeps;
//! [`layers`] composes stores (caching and repair, single-flight, counting), and the
//! `conformance` suite (feature `conformance`) is what every store must pass.
//!
//! Errors keep three outcomes apart because composition branches on them: [`StoreError::Missing`]
//! (ask elsewhere), [`StoreError::Invalid`] (the bytes are there but are not the chunk: drop them,
//! fetch again) and [`StoreError::Io`] (the disk failed). A store never returns a chunk it has not
//! just checked against its id.
//!
//! The local layout (see `docs/FORMAT.md`): `DIR/nightcast-store` marks the directory and says its
//! [`Format`]: in a file store ([`LocalStore`]) `DIR/chunks/ab/<64 hex digits>` holds one chunk in
//! its stored form; in a pack store ([`pack::PackStore`]) `DIR/packs/` holds pack files and their
//! indexes. In both, `DIR/tmp/` holds temp files (removed when the store is opened) and `DIR/lock`
//! is the lock that keeps `gc` away from imports. [`DiskStore`] is what commands that take a store
//! directory need of either, [`open_disk_store`] opens either, and [`convert`] turns one into the
//! other in place.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::chunk::{ChunkError, VerifiedChunk, HEADER_LEN, MAX_CHUNK_LEN};
use crate::durable::{self, TempFile};
use crate::ids::ChunkId;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod convert;
pub mod layers;
pub mod pack;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} is not in the store")]
    Missing(ChunkId),
    #[error("chunk {id} is corrupt{}: {reason}", location(.path))]
    Invalid {
        id: ChunkId,
        path: Option<PathBuf>,
        reason: ChunkError,
    },
    #[error("I/O error on {}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Layout(String),
}

fn location(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" ({})", p.display()))
        .unwrap_or_default()
}

impl StoreError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Count and bytes (stored form, with headers) of a store's chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreSize {
    pub chunks: u64,
    pub bytes: u64,
}

/// Where chunks live. Implementations: [`LocalStore`], `exchange::RemoteStore`, and the wrappers
/// in [`layers`] ([`layers::Caching`], [`layers::SingleFlight`], [`layers::Counted`]), which
/// compose any of them. The `conformance` suite (feature `conformance`) runs against each.
pub trait ChunkStore: Send + Sync {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError>;
    /// The chunk, checked against `id`; `Invalid` if the stored bytes are not that chunk.
    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError>;
    /// Stores the chunk durably; storing a chunk already present is not an error.
    fn put(&self, chunk: &VerifiedChunk) -> Result<(), StoreError>;
    /// Removes the chunk; `Missing` if it was not there.
    fn remove(&self, id: &ChunkId) -> Result<(), StoreError>;
    /// Every chunk id present (unverified: use `get` to check one).
    fn ids(&self) -> Result<Vec<ChunkId>, StoreError>;
    fn size(&self) -> Result<StoreSize, StoreError>;
    /// A writer for many chunks at once (a transfer): by default each is `put` on its own;
    /// [`LocalStore`] makes group commits ([`Batch`]).
    fn writer(&self) -> Box<dyn ChunkWriter + '_> {
        Box::new(EachPut(self))
    }
}

/// Chunks written as a group: each is durable under its name once [`ChunkWriter::commit`]
/// returns (a crash before that loses some of them, never half of one). Dropping a writer
/// without committing may lose what was put since the last `flush`.
pub trait ChunkWriter {
    fn put(&mut self, chunk: &VerifiedChunk) -> Result<(), StoreError>;
    /// Starts making what was put so far durable, without waiting for it.
    fn flush(&mut self) -> Result<(), StoreError>;
    /// Makes everything put durable under its name, and waits for it.
    fn commit(&mut self) -> Result<(), StoreError>;
}

/// The default writer: `put` one by one (each already durable).
struct EachPut<'a, S: ?Sized>(&'a S);

impl<S: ChunkStore + ?Sized> ChunkWriter for EachPut<'_, S> {
    fn put(&mut self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        self.0.put(chunk)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        impl<T: ChunkStore + ?Sized> ChunkStore for $ty {
            fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
                (**self).has(id)
            }
            fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
                (**self).get(id)
            }
            fn put(&self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
                (**self).put(chunk)
            }
            fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
                (**self).remove(id)
            }
            fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
                (**self).ids()
            }
            fn size(&self) -> Result<StoreSize, StoreError> {
                (**self).size()
            }
            fn writer(&self) -> Box<dyn ChunkWriter + '_> {
                (**self).writer()
            }
        }
    )*};
}

// Stores compose by reference and by `Arc` as well as by value.
forward_store!(&T, std::sync::Arc<T>, Box<T>);

const MARKER: &str = "nightcast-store";

/// How a local store keeps its chunks; its marker file says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One file per chunk ([`LocalStore`]): `nightcast chunk store v1`.
    #[default]
    Files,
    /// Chunks appended to pack files ([`pack::PackStore`]): `nightcast chunk store v2`.
    Packs,
}

impl Format {
    fn marker_text(self) -> &'static [u8] {
        match self {
            Format::Files => b"nightcast chunk store v1\n",
            Format::Packs => b"nightcast chunk store v2\n",
        }
    }

    /// What a user calls it (the `--store-format` value).
    pub fn name(self) -> &'static str {
        match self {
            Format::Files => "files",
            Format::Packs => "packs",
        }
    }

    /// The format of the store at `root`, or `None` if there is none yet (no marker).
    pub fn of(root: &Path) -> Result<Option<Format>, StoreError> {
        let marker = root.join(MARKER);
        let text = match fs::read(&marker) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&marker)(e)),
        };
        [Format::Files, Format::Packs]
            .into_iter()
            .find(|f| f.marker_text() == text)
            .map(Some)
            .ok_or_else(|| {
                StoreError::Layout(format!(
                    "{} is a store of another format version: upgrade nightcast",
                    root.display()
                ))
            })
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "files" => Ok(Format::Files),
            "packs" => Ok(Format::Packs),
            other => Err(format!(
                "unknown store format {other:?}: say \"files\" (one file per chunk) or \"packs\" (pack files)"
            )),
        }
    }
}

/// Makes `root` a store of `format` if it is missing or empty (or holds only `ours`, what another
/// process creating it makes), and checks that an existing one is of that format.
fn claim_dir(root: &Path, format: Format, ours: &[&str]) -> Result<(), StoreError> {
    match Format::of(root)? {
        Some(found) if found == format => return Ok(()),
        Some(found) => {
            return Err(StoreError::Layout(format!(
                "{} is a store in the \"{}\" format, and this needs one in the \"{}\" format \
                 (convert it with `nightcast-image convert --store {} --to {}`)",
                root.display(),
                found.name(),
                format.name(),
                root.display(),
                format.name(),
            )))
        }
        None => {}
    }
    // Empty, or holding only what another process creating this store makes.
    // (Another process may even have finished: its marker appears after our check.)
    let is_ours = |name: &str| {
        ours.contains(&name) || name == MARKER || name.starts_with(durable::TEMP_PREFIX)
    };
    let fresh = match fs::read_dir(root) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .all(|e| is_ours(&e.file_name().to_string_lossy())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(StoreError::io(root)(e)),
    };
    if !fresh {
        return Err(StoreError::Layout(format!(
            "{} is not empty and is not a nightcast store (no {MARKER} file): refusing to use it",
            root.display()
        )));
    }
    fs::create_dir_all(root).map_err(StoreError::io(root))?;
    let marker = root.join(MARKER);
    durable::write_file(&marker, format.marker_text(), 0o644).map_err(StoreError::io(&marker))?;
    // A racing creator of the other format loses here.
    match Format::of(root)? {
        Some(found) if found == format => Ok(()),
        _ => Err(StoreError::Layout(format!(
            "{} was just created as a store of another format",
            root.display()
        ))),
    }
}

/// A store in a directory of this machine, in either [`Format`]: what the commands that take a
/// `--store DIR` work on (import, verify, assemble, gc, scrub).
pub trait DiskStore: ChunkStore + std::fmt::Debug {
    fn root(&self) -> &Path;
    /// The store lock (see [`LocalStore::lock`]).
    fn lock(&self, exclusive: bool) -> Result<StoreLock, StoreError>;
    /// The stored payload length of `id` without reading it, if present.
    fn stored_len(&self, id: &ChunkId) -> Result<Option<u32>, StoreError>;
    /// Makes removals durable and frees their space; returns the bytes it freed beyond what
    /// the removals themselves did (a pack store rewrites mostly-dead packs).
    fn reclaim(&self) -> Result<u64, StoreError>;
    fn format(&self) -> Format;
    /// Reads the first bytes of `id`'s stored form (header, then payload) into `buf`, without
    /// checking them; how many it read, `None` if the chunk is absent. For a look at how a chunk
    /// is stored (is it compressed for good?) that costs no decompression.
    fn stored_prefix(&self, id: &ChunkId, buf: &mut [u8]) -> Result<Option<usize>, StoreError>;
    /// A writer whose `put` replaces a chunk already present with the form it is given (same id,
    /// another encoding): readers see the old form or the new one, both whole. Durable on
    /// `commit`; a pack store frees the old form's space on a later [`DiskStore::reclaim`].
    fn replacer(&self) -> Box<dyn ChunkWriter + '_>;
    /// Every chunk with the length of its stored form (header included), in no order: what a
    /// cache's eviction weighs.
    fn entries(&self) -> Result<Vec<(ChunkId, u64)>, StoreError>;
    /// Takes in what other processes wrote since this handle opened; how many packs it read. A
    /// file store always sees the disk: nothing to do.
    fn refresh(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

impl DiskStore for LocalStore {
    fn root(&self) -> &Path {
        LocalStore::root(self)
    }
    fn lock(&self, exclusive: bool) -> Result<StoreLock, StoreError> {
        LocalStore::lock(self, exclusive)
    }
    fn stored_len(&self, id: &ChunkId) -> Result<Option<u32>, StoreError> {
        LocalStore::stored_len(self, id)
    }
    fn reclaim(&self) -> Result<u64, StoreError> {
        self.sync().map(|()| 0)
    }
    fn format(&self) -> Format {
        Format::Files
    }
    fn stored_prefix(&self, id: &ChunkId, buf: &mut [u8]) -> Result<Option<usize>, StoreError> {
        let path = self.path_of(id);
        match File::open(&path).and_then(|mut f| read_up_to(&mut f, buf)) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path)(e)),
        }
    }
    fn replacer(&self) -> Box<dyn ChunkWriter + '_> {
        Box::new(Replacing(self.batch()))
    }
    fn entries(&self) -> Result<Vec<(ChunkId, u64)>, StoreError> {
        LocalStore::entries(self)
    }
}

/// Reads into `buf` until it is full or the end of `f`; how many bytes it read.
fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The file store's [`DiskStore::replacer`]: a [`Batch`] whose `put` is [`Batch::replace`].
struct Replacing<'a>(Batch<'a>);

impl ChunkWriter for Replacing<'_> {
    fn put(&mut self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        self.0.replace(chunk)
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        self.0.flush()
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        ChunkWriter::commit(&mut self.0)
    }
}

impl DiskStore for pack::PackStore {
    fn root(&self) -> &Path {
        pack::PackStore::root(self)
    }
    fn lock(&self, exclusive: bool) -> Result<StoreLock, StoreError> {
        pack::PackStore::lock(self, exclusive)
    }
    fn stored_len(&self, id: &ChunkId) -> Result<Option<u32>, StoreError> {
        pack::PackStore::stored_len(self, id)
    }
    fn reclaim(&self) -> Result<u64, StoreError> {
        pack::PackStore::reclaim(self)
    }
    fn format(&self) -> Format {
        Format::Packs
    }
    fn stored_prefix(&self, id: &ChunkId, buf: &mut [u8]) -> Result<Option<usize>, StoreError> {
        pack::PackStore::stored_prefix(self, id, buf)
    }
    fn replacer(&self) -> Box<dyn ChunkWriter + '_> {
        Box::new(self.pack_replacer())
    }
    fn refresh(&self) -> Result<usize, StoreError> {
        pack::PackStore::refresh(self)
    }
    fn entries(&self) -> Result<Vec<(ChunkId, u64)>, StoreError> {
        pack::PackStore::entries(self)
    }
}

macro_rules! forward_disk_store {
    ($($ty:ty),*) => {$(
        impl<T: DiskStore + ?Sized> DiskStore for $ty {
            fn root(&self) -> &Path {
                (**self).root()
            }
            fn lock(&self, exclusive: bool) -> Result<StoreLock, StoreError> {
                (**self).lock(exclusive)
            }
            fn stored_len(&self, id: &ChunkId) -> Result<Option<u32>, StoreError> {
                (**self).stored_len(id)
            }
            fn reclaim(&self) -> Result<u64, StoreError> {
                (**self).reclaim()
            }
            fn format(&self) -> Format {
                (**self).format()
            }
            fn stored_prefix(&self, id: &ChunkId, buf: &mut [u8]) -> Result<Option<usize>, StoreError> {
                (**self).stored_prefix(id, buf)
            }
            fn replacer(&self) -> Box<dyn ChunkWriter + '_> {
                (**self).replacer()
            }
            fn refresh(&self) -> Result<usize, StoreError> {
                (**self).refresh()
            }
            fn entries(&self) -> Result<Vec<(ChunkId, u64)>, StoreError> {
                (**self).entries()
            }
        }
    )*};
}

forward_disk_store!(&T, std::sync::Arc<T>, Box<T>);

/// Opens the store at `root` in whatever format it is, or creates one in `new` if there is none.
pub fn open_disk_store(root: &Path, new: Format) -> Result<Box<dyn DiskStore>, StoreError> {
    Ok(match Format::of(root)?.unwrap_or(new) {
        Format::Files => Box::new(LocalStore::open(root)?),
        Format::Packs => Box::new(pack::PackStore::open(root)?),
    })
}

/// Chunks in a local directory, one file each.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    chunks: PathBuf,
    tmp: PathBuf,
}

/// Held while writing (shared: an import, a tighten pass, a relay or agent for as long as it runs)
/// or collecting garbage (exclusive); released on drop.
#[derive(Debug)]
pub struct StoreLock(#[allow(dead_code)] File);

impl LocalStore {
    /// Opens the store at `root`, creating it if the directory is missing or empty, and removes
    /// temp files a crash left behind.
    pub fn open(root: &Path) -> Result<LocalStore, StoreError> {
        claim_dir(root, Format::Files, &["chunks", "tmp", "lock"])?;
        let store = LocalStore {
            root: root.to_owned(),
            chunks: root.join("chunks"),
            tmp: root.join("tmp"),
        };
        for dir in [&store.chunks, &store.tmp] {
            fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        }
        // All 256 fan-out directories up front: writing a chunk never has to make one.
        if !store.chunks.join("ff").exists() {
            for i in 0..=255u8 {
                let dir = store.chunks.join(crate::ids::hex(&[i]));
                fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
            }
        }
        clean_temps(root, &store.tmp)?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds chunk `id`.
    pub fn path_of(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_string();
        self.chunks.join(&hex[..2]).join(hex)
    }

    /// The stored payload length of `id` without reading it, if present.
    pub fn stored_len(&self, id: &ChunkId) -> Result<Option<u32>, StoreError> {
        let path = self.path_of(id);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len().saturating_sub(HEADER_LEN as u64) as u32)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path)(e)),
        }
    }

    /// Writes the chunk to a temp file without fsync; [`Batch::commit`] makes it durable and
    /// gives it its real name.
    fn write_temp(&self, chunk: &VerifiedChunk) -> Result<TempFile, StoreError> {
        let tmp = TempFile::new_in(&self.tmp, 0o644).map_err(StoreError::io(&self.tmp))?;
        let mut file = tmp.file();
        file.write_all(&chunk.header())
            .and_then(|()| file.write_all(chunk.payload()))
            .map_err(StoreError::io(tmp.path()))?;
        Ok(tmp)
    }

    /// A group commit: many chunks made durable by one `syncfs` instead of one fsync each.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            pending: Vec::new(),
            pending_bytes: 0,
            committer: None,
        }
    }

    /// Takes the lock shared (imports) or exclusive (gc). Exclusive never blocks; shared waits at
    /// most [`SHARED_LOCK_PATIENCE`], the time another opener takes it exclusive to clean its
    /// temp files ([`LocalStore::open`]). `Layout` error if still taken then.
    pub fn lock(&self, exclusive: bool) -> Result<StoreLock, StoreError> {
        lock_dir(&self.root, exclusive)
    }

    /// Makes every rename so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        durable::sync_filesystem(&self.chunks).map_err(StoreError::io(&self.chunks))
    }
}

/// The store lock of the store at `root` (see [`LocalStore::lock`]).
pub(crate) fn lock_dir(root: &Path, exclusive: bool) -> Result<StoreLock, StoreError> {
    let path = root.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    let step = std::time::Duration::from_millis(10);
    let mut tries = if exclusive {
        0
    } else {
        SHARED_LOCK_PATIENCE.as_millis() / step.as_millis()
    };
    let mut taken = rustix::fs::flock(&file, op);
    while taken.is_err() && tries > 0 {
        std::thread::sleep(step);
        tries -= 1;
        taken = rustix::fs::flock(&file, op);
    }
    taken.map_err(|_| {
        StoreError::Layout(format!(
            "store {} is busy ({}): try again when it has finished",
            root.display(),
            if exclusive {
                "something writes to it: an import, a compression pass, a running relay or agent"
            } else {
                "garbage collection is running"
            }
        ))
    })?;
    Ok(StoreLock(file))
}

/// Removes the temp files in `tmp` of the store at `root`, if nobody writes. Temp files are an
/// interrupted write's leftovers only while nobody writes: an import or a tighten pass (another
/// process, or this one through another handle) holds the shared lock and has its own there,
/// about to be renamed into place.
pub(crate) fn clean_temps(root: &Path, tmp: &Path) -> Result<(), StoreError> {
    if let Ok(_quiet) = lock_dir(root, true) {
        let cleaned = durable::clean_temp_files(tmp).map_err(StoreError::io(tmp))?;
        if cleaned > 0 {
            tracing::info!(store = %root.display(), cleaned, "removed temp files left by an interrupted write");
        }
    }
    Ok(())
}

/// How long a shared lock waits for an exclusive holder: longer than another opener's clean-up of
/// its temp files, far shorter than a garbage collection.
pub const SHARED_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Creates the fan-out directory a chunk file goes into, if needed.
fn make_fanout_dir(target: &Path) -> Result<(), StoreError> {
    match target.parent() {
        Some(dir) if !dir.exists() => fs::create_dir_all(dir).map_err(StoreError::io(dir)),
        _ => Ok(()),
    }
}

/// Chunks written but not yet durable: a group commit. Temp files are written on the caller's
/// thread; every 64 MiB the pending set goes to a committer thread that flushes the file system once
/// and then gives the chunks their real names, while the caller goes on writing the next set. A
/// crash at any point leaves whole chunks or temp files, never a half chunk under a real name.
/// Dropping a batch removes the chunks not yet handed over.
#[derive(Debug)]
pub struct Batch<'a> {
    store: &'a LocalStore,
    pending: Vec<(TempFile, PathBuf)>,
    pending_bytes: u64,
    committer: Option<Committer>,
}

type Pending = Vec<(TempFile, PathBuf)>;

#[derive(Debug)]
struct Committer {
    tx: std::sync::mpsc::SyncSender<Pending>,
    thread: std::thread::JoinHandle<Result<(), StoreError>>,
}

impl Committer {
    fn start(chunks_dir: PathBuf) -> Committer {
        // One set committing, one waiting: the writer is at most two sets ahead of the disk.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(1);
        let thread = std::thread::spawn(move || {
            for set in rx {
                durable::sync_filesystem(&chunks_dir).map_err(StoreError::io(&chunks_dir))?;
                for (tmp, target) in set {
                    make_fanout_dir(&target)?;
                    tmp.persist_unsynced(&target)
                        .map_err(StoreError::io(&target))?;
                }
            }
            Ok(())
        });
        Committer { tx, thread }
    }

    /// Waits for every set handed over; the first error, if any.
    fn finish(self) -> Result<(), StoreError> {
        drop(self.tx);
        self.thread.join().unwrap_or_else(|_| {
            Err(StoreError::Layout(
                "the chunk committer thread panicked".into(),
            ))
        })
    }
}

impl Batch<'_> {
    /// Hand the pending set over past this many bytes...
    const LIMIT: u64 = 64 << 20;
    /// ... or past this many chunks.
    const MAX_FILES: usize = 8192;

    pub fn put(&mut self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        if self.store.path_of(chunk.id()).exists() {
            return Ok(());
        }
        self.replace(chunk)
    }

    /// `put`, over whatever file holds the chunk's name now (one that did not verify): the rename
    /// at commit replaces it whole.
    pub fn replace(&mut self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        let target = self.store.path_of(chunk.id());
        let mut tmp = self.store.write_temp(chunk)?;
        tmp.close();
        self.pending.push((tmp, target));
        self.pending_bytes += u64::from(chunk.stored_len());
        if self.pending_bytes >= Self::LIMIT || self.pending.len() >= Self::MAX_FILES {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands the chunks put so far to the committer without waiting for them: a slow transfer
    /// calls this every few seconds, so that a crash loses only the last few seconds of it.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.hand_over()
    }

    fn hand_over(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let set = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let committer = self
            .committer
            .get_or_insert_with(|| Committer::start(self.store.chunks.clone()));
        if committer.tx.send(set).is_err() {
            // The committer stopped on an error: report it.
            if let Some(c) = self.committer.take() {
                c.finish()?;
            }
            return Err(StoreError::Layout("the chunk committer stopped".into()));
        }
        Ok(())
    }

    /// Makes every chunk put so far durable under its real name, and waits for it.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.hand_over()?;
        match self.committer.take() {
            Some(c) => c.finish(),
            None => Ok(()),
        }
    }
}

impl ChunkWriter for Batch<'_> {
    fn put(&mut self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        Batch::put(self, chunk)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Batch::flush(self)
    }

    /// [`Batch::commit`], then the names made durable too.
    fn commit(&mut self) -> Result<(), StoreError> {
        Batch::commit(self)?;
        self.store.sync()
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.pending.clear(); // removes their temp files
        if let Some(c) = self.committer.take() {
            let _ = c.finish();
        }
    }
}

impl ChunkStore for LocalStore {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.stored_len(id)?.is_some())
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let path = self.path_of(id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Missing(*id)),
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        // Read at most one byte past the largest possible stored form.
        let limit = (HEADER_LEN + MAX_CHUNK_LEN as usize + 1) as u64;
        let mut stored = Vec::new();
        file.take(limit)
            .read_to_end(&mut stored)
            .map_err(StoreError::io(&path))?;
        VerifiedChunk::from_stored(*id, &stored).map_err(|reason| StoreError::Invalid {
            id: *id,
            path: Some(path),
            reason,
        })
    }

    fn put(&self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        let target = self.path_of(chunk.id());
        if target.exists() {
            return Ok(());
        }
        let tmp = self.write_temp(chunk)?;
        make_fanout_dir(&target)?;
        tmp.persist(&target).map_err(StoreError::io(&target))
    }

    fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::Missing(*id)),
            Err(e) => Err(StoreError::io(&path)(e)),
        }
    }

    fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut ids = Vec::new();
        self.walk(|id, _| ids.push(id))?;
        Ok(ids)
    }

    fn size(&self) -> Result<StoreSize, StoreError> {
        let mut size = StoreSize::default();
        self.walk(|_, len| {
            size.chunks += 1;
            size.bytes += len;
        })?;
        Ok(size)
    }

    fn writer(&self) -> Box<dyn ChunkWriter + '_> {
        Box::new(self.batch())
    }
}

impl LocalStore {
    /// Every chunk with the length of its file (stored form, header included), in no order.
    pub fn entries(&self) -> Result<Vec<(ChunkId, u64)>, StoreError> {
        let mut out = Vec::new();
        self.walk(|id, len| out.push((id, len)))?;
        Ok(out)
    }

    /// Calls `f(id, file length)` for every chunk file; ignores anything that is not one.
    fn walk(&self, mut f: impl FnMut(ChunkId, u64)) -> Result<(), StoreError> {
        let fanouts = fs::read_dir(&self.chunks).map_err(StoreError::io(&self.chunks))?;
        for fanout in fanouts {
            let fanout = fanout.map_err(StoreError::io(&self.chunks))?.path();
            if !fanout.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&fanout).map_err(StoreError::io(&fanout))? {
                let entry = entry.map_err(StoreError::io(&fanout))?;
                let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                let len = entry
                    .metadata()
                    .map_err(StoreError::io(&entry.path()))?
                    .len();
                f(id, len);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conformance::flip_last_byte;

    #[test]
    fn local_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("store")).unwrap();
        conformance::run(&store, &|id| flip_last_byte(&store.path_of(id)));
    }

    #[test]
    fn every_format_lists_its_chunks_with_their_stored_lengths_as_its_size_counts_them() {
        conformance::in_each_format(|store, _| {
            let a = VerifiedChunk::from_raw(b"entries".repeat(300));
            let b = VerifiedChunk::from_raw(vec![7; 10]);
            let gone = VerifiedChunk::from_raw(b"evicted".repeat(40));
            for c in [&a, &b, &gone] {
                store.put(c).unwrap();
            }
            store.remove(gone.id()).unwrap();
            let mut listed = store.entries().unwrap();
            listed.sort();
            let mut expected: Vec<(ChunkId, u64)> = [&a, &b]
                .iter()
                .map(|c| (*c.id(), u64::from(c.stored_len()) + HEADER_LEN as u64))
                .collect();
            expected.sort();
            assert_eq!(listed, expected, "{:?}", store.format());
            let size = store.size().unwrap();
            assert_eq!(size.bytes, expected.iter().map(|e| e.1).sum::<u64>());
        });
    }

    #[test]
    fn batches_publish_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let c = VerifiedChunk::from_raw(b"batch".repeat(50));
        let mut batch = store.batch();
        batch.put(&c).unwrap();
        assert!(!store.has(c.id()).unwrap());
        batch.commit().unwrap();
        assert_eq!(store.get(c.id()).unwrap(), c);
        // A dropped batch leaves no temp file behind.
        let d = VerifiedChunk::from_raw(b"dropped".repeat(50));
        let mut batch = store.batch();
        batch.put(&d).unwrap();
        drop(batch);
        assert!(!store.has(d.id()).unwrap());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn opening_cleans_temp_files_and_refuses_foreign_directories() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let stale = dir
            .path()
            .join("tmp")
            .join(format!("{}x", durable::TEMP_PREFIX));
        fs::write(&stale, b"half a chunk").unwrap();
        drop(store);
        LocalStore::open(dir.path()).unwrap();
        assert!(!stale.exists());

        let foreign = tempfile::tempdir().unwrap();
        fs::write(foreign.path().join("thesis.odt"), b"x").unwrap();
        let err = LocalStore::open(foreign.path()).unwrap_err().to_string();
        assert!(err.contains("not a nightcast store"), "{err}");
    }

    #[test]
    fn opening_leaves_the_temp_files_of_a_running_writer_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let chunk = VerifiedChunk::from_raw(b"a chunk on its way".repeat(50));
        // An import (or a tighten pass) holds the shared lock, its chunk written to a temp file.
        let import = store.lock(false).unwrap();
        let mut batch = store.batch();
        batch.put(&chunk).unwrap();
        // Meanwhile another handle opens the store: the import's temp file is not a leftover.
        let _other = LocalStore::open(dir.path()).unwrap();
        batch.commit().unwrap();
        drop(import);
        assert_eq!(store.get(chunk.id()).unwrap().raw(), chunk.raw());
    }

    #[test]
    fn many_openers_of_a_new_store_all_succeed() {
        for _ in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("store");
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| LocalStore::open(&root).unwrap());
                }
            });
        }
    }

    #[test]
    fn an_import_waits_out_another_openers_clean_up_of_its_temp_files() {
        // Regression: two imports into one store; the second one's `open` held the lock
        // exclusive for its clean-up just when the first asked for it shared, which failed with
        // "garbage collection is running".
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (taken, release) = (
            std::sync::Barrier::new(2),
            std::time::Duration::from_millis(150),
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                let _cleaning = store.lock(true).unwrap();
                taken.wait();
                std::thread::sleep(release);
            });
            taken.wait();
            assert!(store.lock(false).is_ok());
        });
    }

    #[test]
    fn gc_lock_excludes_imports() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let import = store.lock(false).unwrap();
        let _second_import = store.lock(false).unwrap();
        assert!(store.lock(true).is_err());
        drop(import);
        drop(_second_import);
        let _gc = store.lock(true).unwrap();
        assert!(store.lock(false).is_err());
    }
}
