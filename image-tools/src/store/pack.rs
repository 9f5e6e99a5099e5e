//! The pack store: chunks appended to a few large files instead of one file each, so that an
//! import creates one inode per 256 MiB of chunks, not one per 64 KiB, and makes them durable with
//! one `fdatasync` per pack per commit.
//!
//! Layout (see `docs/FORMAT.md`): `DIR/nightcast-store` says `nightcast chunk store v2`;
//! `DIR/packs/<16 hex digits>.pack` holds records ([`record`]: a chunk's stored form, or a
//! tombstone naming the chunk record a `remove` dropped); `DIR/packs/<same>.idx` is a sealed
//! pack's index (written once the pack is full or its writer is done; never appended to again);
//! `DIR/tmp/` and `DIR/lock` as in the file store. Pack names are random, never reused, so a
//! tombstone names exactly one record forever.
//!
//! What it guarantees, as the file store does: after a crash at any point a chunk is whole and
//! verified or absent (a pack without index is scanned at open, record by record, each checked
//! against its header's hash, and cut after the last whole record); every read checks the chunk
//! against its id; `remove` is a tombstone and [`PackStore::reclaim`] rewrites the live records of
//! mostly-dead packs into a new pack before deleting them, while readers go on reading the old
//! file (an open file outlives its name). What it does not: a handle does not see chunks other
//! processes write after it opened until `get` misses one ([`PackStore::refresh`]: then it takes
//! in the packs sealed since; each writer appends to a pack of its own, and the index lives in
//! memory; `has`, `ids` and `size` answer from what the handle knows); the in-memory index costs about 80 bytes per chunk (80 MiB for a million).

pub mod record;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustix::fs::FlockOperation;

use super::{
    claim_dir, lock_dir, ChunkStore, ChunkWriter, Format, StoreError, StoreLock, StoreSize,
};
use crate::chunk::{VerifiedChunk, HEADER_LEN};
use crate::durable::{self, TempFile};
use crate::ids::ChunkId;
use record::{Entry, Kind, Place, RECORD_HEADER};

/// How old the packs directory's modification time must be before a listing is taken to have
/// seen every change that shares it (file systems keep it in ticks of a few milliseconds).
const SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`PackStore::load`] did.
#[derive(Debug, Default)]
struct Loaded {
    /// Packs read.
    read: usize,
    /// Packs of other writers left for their commit.
    waiting: usize,
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, StoreError> {
    m.lock()
        .map_err(|_| StoreError::Layout("a pack store lock is poisoned".into()))
}

/// A pack is sealed once it holds this many bytes.
pub const PACK_LIMIT: u64 = 256 << 20;
/// Records are written to the pack file in slices of this size.
const WRITE_BUFFER: usize = 1 << 20;

/// Where a live chunk is.
#[derive(Clone, Copy, Debug)]
struct Loc {
    place: Place,
    body_len: u32,
}

#[derive(Debug)]
struct Pack {
    file: Arc<File>,
    /// Bytes of records (the file's valid length when it was last looked at).
    len: u64,
    /// Whole and indexed: never appended to again, and a candidate for [`PackStore::reclaim`].
    sealed: bool,
    /// Tombstones in this pack, by the record they remove.
    tombstones: Vec<(ChunkId, Place)>,
}

#[derive(Debug, Default)]
struct State {
    index: HashMap<ChunkId, Loc>,
    packs: HashMap<u64, Pack>,
}

/// Chunks appended to pack files. See the module documentation.
#[derive(Debug)]
pub struct PackStore {
    root: PathBuf,
    packs_dir: PathBuf,
    tmp: PathBuf,
    state: RwLock<State>,
    /// The pack `put` and `remove` append to on this handle.
    appender: Mutex<Option<Active>>,
    /// Held by `remove` and `reclaim`: a chunk is not removed while its pack is being rewritten.
    maintenance: Mutex<()>,
    /// Packs this handle's writers are filling: its refresh neither reads nor waits for them.
    filling: Mutex<HashSet<u64>>,
    /// The packs directory's modification time at the last listing, if that time was settled and
    /// the listing left no pack of another writer behind (see [`PackStore::refresh`]).
    listed: Mutex<Option<std::time::SystemTime>>,
    /// Packs read record by record (no index) since this handle opened.
    scanned: std::sync::atomic::AtomicU64,
    /// Listings of the packs directory by [`PackStore::refresh`] since this handle opened.
    listings: std::sync::atomic::AtomicU64,
}

fn pack_path(dir: &Path, pack: u64) -> PathBuf {
    dir.join(format!("{pack:016x}.pack"))
}

fn index_path(dir: &Path, pack: u64) -> PathBuf {
    dir.join(format!("{pack:016x}.idx"))
}

fn parse_pack_name(name: &str) -> Option<(u64, bool)> {
    let (stem, is_pack) = match name.strip_suffix(".pack") {
        Some(stem) => (stem, true),
        None => (name.strip_suffix(".idx")?, false),
    };
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok().map(|n| (n, is_pack))
}

/// What reading a pack without a (valid) index found: its records up to the last whole one.
#[derive(Debug)]
struct Scan {
    entries: Vec<Entry>,
    /// Where the last whole record ends; anything after it is a torn tail.
    valid_len: u64,
}

/// Reads records from the start of `file` until the end or the first one that is not whole.
fn scan(file: &File, file_len: u64) -> io::Result<Scan> {
    let mut reader = BufReader::with_capacity(WRITE_BUFFER, file);
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let mut body = Vec::new();
    loop {
        if file_len - offset < RECORD_HEADER as u64 {
            break;
        }
        let mut header = [0u8; RECORD_HEADER];
        reader.read_exact(&mut header)?;
        let Ok(h) = record::parse_header(&header) else {
            break;
        };
        if file_len - offset - (RECORD_HEADER as u64) < u64::from(h.body_len) {
            break;
        }
        body.resize(h.body_len as usize, 0);
        reader.read_exact(&mut body)?;
        if h.checks(&body).is_err() {
            break;
        }
        let target = match h.kind {
            Kind::Chunk => None,
            Kind::Tombstone => Some(record::parse_tombstone(
                body.as_slice().try_into().map_err(io::Error::other)?,
            )),
        };
        entries.push(Entry {
            kind: h.kind,
            id: h.id,
            offset,
            body_len: h.body_len,
            target,
        });
        offset += RECORD_HEADER as u64 + u64::from(h.body_len);
    }
    Ok(Scan {
        entries,
        valid_len: offset,
    })
}

/// The live chunks, built pack by pack as `open` reads them (so that no pack's records outlive
/// its turn): a chunk record is live unless a tombstone, in any pack, names its place. Pure.
#[derive(Debug, Default)]
struct LiveIndex {
    index: HashMap<ChunkId, Loc>,
    dead: HashSet<Place>,
    /// Other records of a chunk already indexed (a rewrite interrupted by a crash, or a chunk
    /// put again after its removal): one of them stands in if the indexed one is dead.
    spare: Vec<(ChunkId, Loc)>,
}

impl LiveIndex {
    fn add_pack(&mut self, pack: u64, entries: &[Entry]) {
        for e in entries {
            match (e.kind, e.target) {
                (Kind::Tombstone, Some(target)) => {
                    self.dead.insert(target);
                }
                (Kind::Tombstone, None) => {}
                (Kind::Chunk, _) => {
                    let loc = Loc {
                        place: Place {
                            pack,
                            offset: e.offset,
                        },
                        body_len: e.body_len,
                    };
                    if let Some(before) = self.index.insert(e.id, loc) {
                        self.spare.push((e.id, before));
                    }
                }
            }
        }
    }

    fn finish(mut self) -> HashMap<ChunkId, Loc> {
        let dead = self.dead;
        self.index.retain(|_, l| !dead.contains(&l.place));
        for (id, loc) in self.spare {
            if !dead.contains(&loc.place) {
                self.index.entry(id).or_insert(loc);
            }
        }
        self.index
    }
}

/// How much of a sealed pack still serves: for [`plan_reclaim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackUsage {
    pub pack: u64,
    pub len: u64,
    /// Bytes of its records that must survive a rewrite (live chunks, needed tombstones).
    pub live: u64,
}

/// Which sealed packs to rewrite: those at most half live (a pack with nothing live is simply
/// deleted). Pure. Rewriting a pack costs its live bytes once; a pack more than half live is left
/// until more of it is dead, so reclaiming never copies more than it frees.
pub fn plan_reclaim(packs: &[PackUsage]) -> Vec<u64> {
    let mut out: Vec<u64> = packs
        .iter()
        .filter(|p| p.len > 0 && p.live * 2 <= p.len)
        .map(|p| p.pack)
        .collect();
    out.sort_unstable();
    out
}

/// A pack being written: the file (locked exclusively, so that an opener leaves it alone),
/// buffered records and the entries for its index.
#[derive(Debug)]
struct Active {
    pack: u64,
    file: Arc<File>,
    buf: Vec<u8>,
    /// Bytes written to the file so far, buffered ones included.
    len: u64,
    /// How much of the file has been fdatasync'd.
    synced: u64,
    entries: Vec<Entry>,
}

impl Active {
    /// A new, empty pack: created in `tmp`, locked, then renamed into `packs` (so no opener ever
    /// sees it unlocked), and the rename made durable.
    fn create(packs_dir: &Path, tmp: &Path) -> Result<Active, StoreError> {
        let temp = TempFile::new_in(tmp, 0o644).map_err(StoreError::io(tmp))?;
        rustix::fs::flock(temp.file(), FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| StoreError::io(temp.path())(e.into()))?;
        let file = temp
            .file()
            .try_clone()
            .map_err(StoreError::io(temp.path()))?;
        let mut n = [0u8; 8];
        getrandom::fill(&mut n)
            .map_err(|e| StoreError::io(packs_dir)(io::Error::other(e.to_string())))?;
        let pack = u64::from_le_bytes(n);
        let path = pack_path(packs_dir, pack);
        temp.persist_unsynced(&path)
            .map_err(StoreError::io(&path))?;
        durable::sync_dir(packs_dir).map_err(StoreError::io(packs_dir))?;
        Ok(Active {
            pack,
            file: Arc::new(file),
            buf: Vec::with_capacity(WRITE_BUFFER),
            len: 0,
            synced: 0,
            entries: Vec::new(),
        })
    }

    /// Appends a record; returns its place.
    fn append(
        &mut self,
        kind: Kind,
        id: &ChunkId,
        parts: &[&[u8]],
        dir: &Path,
    ) -> Result<Place, StoreError> {
        let body_len: usize = parts.iter().map(|p| p.len()).sum();
        let offset = self.len;
        self.buf
            .extend_from_slice(&record::encode_header(kind, id, parts));
        let body_start = self.buf.len();
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        let target = (kind == Kind::Tombstone).then(|| {
            record::parse_tombstone(self.buf[body_start..].try_into().unwrap_or(&[0; 16]))
        });
        self.len += (RECORD_HEADER + body_len) as u64;
        self.entries.push(Entry {
            kind,
            id: *id,
            offset,
            body_len: body_len as u32,
            target,
        });
        if self.buf.len() >= WRITE_BUFFER {
            self.write_out(dir)?;
        }
        Ok(Place {
            pack: self.pack,
            offset,
        })
    }

    fn write_out(&mut self, dir: &Path) -> Result<(), StoreError> {
        if !self.buf.is_empty() {
            (&*self.file)
                .write_all(&self.buf)
                .map_err(StoreError::io(&pack_path(dir, self.pack)))?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Everything appended so far is durable once this returns.
    fn sync(&mut self, dir: &Path) -> Result<(), StoreError> {
        self.write_out(dir)?;
        if self.synced < self.len {
            self.file
                .sync_data()
                .map_err(StoreError::io(&pack_path(dir, self.pack)))?;
            self.synced = self.len;
        }
        Ok(())
    }

    /// Syncs and writes the index: the pack is never appended to again.
    fn seal(mut self, dir: &Path) -> Result<(), StoreError> {
        self.sync(dir)?;
        let idx = index_path(dir, self.pack);
        durable::write_file(&idx, &record::encode_index(self.len, &self.entries), 0o644)
            .map_err(StoreError::io(&idx))
    }
}

impl PackStore {
    /// Opens the pack store at `root`, creating it if the directory is missing or empty. Packs
    /// without an index that no writer holds (a crash's) are scanned, cut after their last whole
    /// record, and sealed.
    pub fn open(root: &Path) -> Result<PackStore, StoreError> {
        claim_dir(root, Format::Packs, &["packs", "tmp", "lock"])?;
        let store = PackStore {
            root: root.to_owned(),
            packs_dir: root.join("packs"),
            tmp: root.join("tmp"),
            state: RwLock::new(State::default()),
            appender: Mutex::new(None),
            maintenance: Mutex::new(()),
            filling: Mutex::default(),
            listed: Mutex::new(None),
            scanned: Default::default(),
            listings: Default::default(),
        };
        for dir in [&store.packs_dir, &store.tmp] {
            fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        }
        super::clean_temps(root, &store.tmp)?;
        store.load(false)?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes in the packs other processes sealed since this handle opened (an import by
    /// `nightcast-image build`, another handle's tighten pass or removals), so that it serves their
    /// chunks; packs a writer still holds wait for their commit. Returns how many it took in.
    /// `get` calls it when it misses, so that it costs one `stat` when nothing changed (an
    /// import misses once per new chunk): a pack is created and sealed by renames into the packs
    /// directory, which change its modification time, and the listing is skipped while that time
    /// is the one last listed. Not while a pack of another writer is being filled: that writer
    /// may end without sealing (killed), which changes nothing in the directory. The packs this
    /// handle's own writers fill are never read.
    pub fn refresh(&self) -> Result<usize, StoreError> {
        let dir = &self.packs_dir;
        let changed = fs::metadata(dir)
            .and_then(|m| m.modified())
            .map_err(StoreError::io(dir))?;
        if *lock(&self.listed)? == Some(changed) {
            return Ok(0);
        }
        // A change made in the same tick as the one listed would share its time: the time is
        // trusted only if it was old enough before the listing began that the listing came after
        // every change sharing it. (The wall clock, not the daemon's clock: it is compared with
        // what the kernel stamped.)
        #[allow(clippy::disallowed_methods)]
        let settled = std::time::SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age >= SETTLED);
        let _m = lock(&self.maintenance)?;
        self.listings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let loaded = self.load(true)?;
        *lock(&self.listed)? = (settled && loaded.waiting == 0).then_some(changed);
        Ok(loaded.read)
    }

    /// Reads every pack's index (or scans the pack) and builds the in-memory index; with
    /// `refresh`, only the packs this handle does not know yet and no writer holds, merged into
    /// what it has.
    fn load(&self, refresh: bool) -> Result<Loaded, StoreError> {
        let dir = &self.packs_dir;
        let mut names: Vec<(u64, bool)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
            let entry = entry.map_err(StoreError::io(dir))?;
            if let Some(n) = entry.file_name().to_str().and_then(parse_pack_name) {
                names.push(n);
            }
        }
        let mut packs: HashSet<u64> = names.iter().filter(|n| n.1).map(|n| n.0).collect();
        if refresh {
            let state = self.read_state()?;
            let filling = lock(&self.filling)?;
            packs.retain(|p| !state.packs.contains_key(p) && !filling.contains(p));
            if packs.is_empty() {
                return Ok(Loaded::default());
            }
        }
        let mut waiting = 0;
        // Sized once from the index files (61 bytes a record), not grown a million times.
        let expected: u64 = packs
            .iter()
            .filter_map(|&p| fs::metadata(index_path(dir, p)).ok())
            .map(|m| m.len() / 61)
            .sum();
        let mut live = LiveIndex::default();
        live.index
            .reserve(usize::try_from(expected).unwrap_or(0).min(1 << 28));
        let mut loaded: HashMap<u64, Pack> = HashMap::new();
        for &pack in &packs {
            let path = pack_path(dir, pack);
            let file = match File::options().read(true).write(true).open(&path) {
                Ok(f) => f,
                // Deleted by a reclaim since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&path)(e)),
            };
            let file_len = file.metadata().map_err(StoreError::io(&path))?.len();
            let idx = index_path(dir, pack);
            let indexed = match fs::read(&idx) {
                Ok(bytes) => record::parse_index(&bytes).filter(|(len, _)| *len == file_len),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(StoreError::io(&idx)(e)),
            };
            let (entries, len, sealed) = match indexed {
                Some((len, entries)) => (entries, len, true),
                None => {
                    // A writer still holds it: take its whole records, touch nothing; a refresh
                    // leaves it for the writer's commit (without reading it: this handle's own
                    // writer may be appending to it, chunk after chunk).
                    let orphan =
                        rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok();
                    if !orphan && refresh {
                        waiting += 1;
                        continue;
                    }
                    let scan = scan(&file, file_len).map_err(StoreError::io(&path))?;
                    self.scanned
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if orphan {
                        if scan.valid_len < file_len {
                            tracing::warn!(pack = %path.display(), kept = scan.valid_len, cut = file_len - scan.valid_len,
                                "cutting the torn tail of a pack an interrupted write left");
                            file.set_len(scan.valid_len)
                                .map_err(StoreError::io(&path))?;
                            file.sync_all().map_err(StoreError::io(&path))?;
                        }
                        durable::write_file(
                            &idx,
                            &record::encode_index(scan.valid_len, &scan.entries),
                            0o644,
                        )
                        .map_err(StoreError::io(&idx))?;
                        let _ = rustix::fs::flock(&file, FlockOperation::Unlock);
                    }
                    (scan.entries, scan.valid_len, orphan)
                }
            };
            let tombstones = entries
                .iter()
                .filter_map(|e| e.target.map(|t| (e.id, t)))
                .collect();
            live.add_pack(pack, &entries);
            loaded.insert(
                pack,
                Pack {
                    file: Arc::new(file),
                    len,
                    sealed,
                    tombstones,
                },
            );
        }
        let read = loaded.len();
        let mut state = self.write_state()?;
        if refresh {
            // The new packs' tombstones may name records of packs known already.
            let dead = std::mem::take(&mut live.dead);
            state.index.retain(|_, l| !dead.contains(&l.place));
            live.dead = dead;
            for (id, loc) in live.finish() {
                state.index.entry(id).or_insert(loc);
            }
            state.packs.extend(loaded);
        } else {
            state.index = live.finish();
            state.packs = loaded;
        }
        Ok(Loaded { read, waiting })
    }

    /// A new pack for one of this handle's writers.
    fn begin_pack(&self) -> Result<Active, StoreError> {
        let active = Active::create(&self.packs_dir, &self.tmp)?;
        lock(&self.filling)?.insert(active.pack);
        Ok(active)
    }

    /// Seals a pack of this handle's writers: published, and never appended to again.
    fn seal_pack(&self, active: Active) -> Result<(), StoreError> {
        let pack = active.pack;
        let sealed = active.seal(&self.packs_dir);
        lock(&self.filling)?.remove(&pack);
        sealed?;
        self.mark_sealed(pack)
    }

    fn read_state(&self) -> Result<std::sync::RwLockReadGuard<'_, State>, StoreError> {
        self.state
            .read()
            .map_err(|_| StoreError::Layout("the pack index lock is poisoned".into()))
    }

    fn write_state(&self) -> Result<std::sync::RwLockWriteGuard<'_, State>, StoreError> {
        self.state
            .write()
            .map_err(|_| StoreError::Layout("the pack index lock is poisoned".into()))
    }

    /// The store lock, as [`super::LocalStore::lock`].
    pub fn lock(&self, exclusive: bool) -> Result<StoreLock, StoreError> {
        lock_dir(&self.root, exclusive)
    }

    /// The stored payload length of `id` without reading it, if present.
    pub fn stored_len(&self, id: &ChunkId) -> Result<Option<u32>, StoreError> {
        Ok(self
            .read_state()?
            .index
            .get(id)
            .map(|l| l.body_len.saturating_sub(HEADER_LEN as u32)))
    }

    /// The pack file holding `id` and where its stored form starts in it (for tests that damage
    /// it, and for messages).
    pub fn location(&self, id: &ChunkId) -> Result<Option<(PathBuf, u64, u32)>, StoreError> {
        Ok(self.read_state()?.index.get(id).map(|l| {
            (
                pack_path(&self.packs_dir, l.place.pack),
                l.place.offset + RECORD_HEADER as u64,
                l.body_len,
            )
        }))
    }

    /// Publishes chunks made durable by a writer.
    fn publish(&self, pack: &Active, from: usize) -> Result<(), StoreError> {
        let mut state = self.write_state()?;
        let entry = state.packs.entry(pack.pack).or_insert_with(|| Pack {
            file: pack.file.clone(),
            len: 0,
            sealed: false,
            tombstones: Vec::new(),
        });
        entry.len = pack.len;
        for e in &pack.entries[from..] {
            let place = Place {
                pack: pack.pack,
                offset: e.offset,
            };
            match e.kind {
                Kind::Chunk => {
                    state.index.insert(
                        e.id,
                        Loc {
                            place,
                            body_len: e.body_len,
                        },
                    );
                }
                Kind::Tombstone => {
                    if let (Some(t), Some(p)) = (e.target, state.packs.get_mut(&pack.pack)) {
                        p.tombstones.push((e.id, t));
                    }
                }
            }
        }
        Ok(())
    }

    fn mark_sealed(&self, pack: u64) -> Result<(), StoreError> {
        if let Some(p) = self.write_state()?.packs.get_mut(&pack) {
            p.sealed = true;
        }
        Ok(())
    }

    /// Appends with this handle's own pack, creating it if needed; `sync` waits for durability.
    fn with_appender<T>(
        &self,
        f: impl FnOnce(&mut Active) -> Result<T, StoreError>,
        sync: bool,
    ) -> Result<T, StoreError> {
        let mut slot = self
            .appender
            .lock()
            .map_err(|_| StoreError::Layout("the pack appender lock is poisoned".into()))?;
        if slot.is_none() {
            *slot = Some(self.begin_pack()?);
        }
        let Some(active) = slot.as_mut() else {
            return Err(StoreError::Layout("no pack to append to".into()));
        };
        let from = active.entries.len();
        let out = f(active)?;
        if sync {
            active.sync(&self.packs_dir)?;
        } else {
            active.write_out(&self.packs_dir)?;
        }
        self.publish(active, from)?;
        if active.len >= PACK_LIMIT {
            if let Some(full) = slot.take() {
                self.seal_pack(full)?;
            }
        }
        Ok(out)
    }

    /// Makes removals durable and frees the space of mostly-dead packs: each one's live records
    /// are copied into a new pack, which is made durable, then the old one is deleted. Readers are
    /// not blocked: one that looked a chunk up in an old pack reads it from the old file, still open.
    /// Returns the bytes freed on disk. Run it under the store lock: exclusive, or shared where
    /// the other writers only import (a daemon's own handle, `nightcast-image build`): another
    /// process's tombstone naming a record while it is moved would leave the moved copy live (a
    /// removal undone, or a replaced form kept beside the new one).
    pub fn reclaim(&self) -> Result<u64, StoreError> {
        let _m = self
            .maintenance
            .lock()
            .map_err(|_| StoreError::Layout("the pack maintenance lock is poisoned".into()))?;
        // Seal this handle's own pack, so that it too can be rewritten.
        if let Some(active) = self
            .appender
            .lock()
            .map_err(|_| StoreError::Layout("the pack appender lock is poisoned".into()))?
            .take()
        {
            self.seal_pack(active)?;
        }
        let (usage, plan) = {
            let state = self.read_state()?;
            let usage = usage_of(&state);
            (usage.clone(), plan_reclaim(&usage))
        };
        if plan.is_empty() {
            return Ok(0);
        }
        let doomed: HashSet<u64> = plan.iter().copied().collect();
        let mut out: Option<Active> = None;
        let mut moves: Vec<(ChunkId, Place, Loc)> = Vec::new();
        let mut freed = 0u64;
        for &pack in &plan {
            let (file, chunks, tombstones) = {
                let state = self.read_state()?;
                let Some(p) = state.packs.get(&pack) else {
                    continue;
                };
                let chunks: Vec<(ChunkId, Loc)> = state
                    .index
                    .iter()
                    .filter(|(_, l)| l.place.pack == pack)
                    .map(|(id, l)| (*id, *l))
                    .collect();
                let tombstones: Vec<(ChunkId, Place)> = p
                    .tombstones
                    .iter()
                    .filter(|(_, t)| state.packs.contains_key(&t.pack) && !doomed.contains(&t.pack))
                    .copied()
                    .collect();
                (p.file.clone(), chunks, tombstones)
            };
            let path = pack_path(&self.packs_dir, pack);
            for (id, loc) in chunks {
                let mut body = vec![0u8; loc.body_len as usize];
                file.read_exact_at(&mut body, loc.place.offset + RECORD_HEADER as u64)
                    .map_err(StoreError::io(&path))?;
                let target = out_pack(&mut out, &self.packs_dir, &self.tmp)?;
                let place = target.append(Kind::Chunk, &id, &[&body], &self.packs_dir)?;
                moves.push((
                    id,
                    loc.place,
                    Loc {
                        place,
                        body_len: loc.body_len,
                    },
                ));
            }
            for (id, t) in tombstones {
                let target = out_pack(&mut out, &self.packs_dir, &self.tmp)?;
                target.append(
                    Kind::Tombstone,
                    &id,
                    &[&record::tombstone_body(t)],
                    &self.packs_dir,
                )?;
            }
        }
        let mut new_pack = None;
        if let Some(active) = out {
            let (pack, file, len) = (active.pack, active.file.clone(), active.len);
            let tombstones = active
                .entries
                .iter()
                .filter_map(|e| e.target.map(|t| (e.id, t)))
                .collect();
            active.seal(&self.packs_dir)?;
            new_pack = Some((pack, file, len, tombstones));
        }
        {
            let mut state = self.write_state()?;
            if let Some((pack, file, len, tombstones)) = new_pack {
                state.packs.insert(
                    pack,
                    Pack {
                        file,
                        len,
                        sealed: true,
                        tombstones,
                    },
                );
            }
            for (id, old, new) in moves {
                if let Some(l) = state.index.get_mut(&id) {
                    if l.place == old {
                        *l = new;
                    }
                }
            }
            for pack in &plan {
                if let Some(p) = state.packs.remove(pack) {
                    freed += p.len;
                }
            }
        }
        for &pack in &plan {
            for path in [
                pack_path(&self.packs_dir, pack),
                index_path(&self.packs_dir, pack),
            ] {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(&path)(e)),
                }
            }
        }
        durable::sync_dir(&self.packs_dir).map_err(StoreError::io(&self.packs_dir))?;
        let kept: u64 = usage
            .iter()
            .filter(|u| doomed.contains(&u.pack))
            .map(|u| u.live)
            .sum();
        tracing::info!(
            packs = plan.len(),
            freed = freed.saturating_sub(kept),
            "rewrote mostly-dead packs"
        );
        Ok(freed.saturating_sub(kept))
    }

    /// Bytes of pack files (records), live or not.
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.read_state()?.packs.values().map(|p| p.len).sum())
    }

    /// A group commit: chunks appended to a pack of the writer's own, one `fdatasync` per commit.
    pub fn pack_writer(&self) -> PackWriter<'_> {
        PackWriter {
            store: self,
            active: None,
            published: 0,
            pending: HashSet::new(),
            flusher: None,
            kicked_at: 0,
            replace: false,
        }
    }

    /// A [`PackWriter`] whose `put` replaces a chunk already present: it appends the new record,
    /// then a tombstone for the old one (in that order, so that after a crash the old form is
    /// dead only if the new one is whole). The old record's space is freed by [`reclaim`].
    ///
    /// [`reclaim`]: PackStore::reclaim
    pub fn pack_replacer(&self) -> PackWriter<'_> {
        let mut w = self.pack_writer();
        w.replace = true;
        w
    }

    /// Every live chunk with the length of its stored form (header included), in no order.
    pub fn entries(&self) -> Result<Vec<(ChunkId, u64)>, StoreError> {
        Ok(self
            .read_state()?
            .index
            .iter()
            .map(|(id, l)| (*id, u64::from(l.body_len)))
            .collect())
    }

    /// See [`super::DiskStore::stored_prefix`].
    pub fn stored_prefix(&self, id: &ChunkId, buf: &mut [u8]) -> Result<Option<usize>, StoreError> {
        let (loc, file) = {
            let state = self.read_state()?;
            let Some(loc) = state.index.get(id).copied() else {
                return Ok(None);
            };
            let Some(pack) = state.packs.get(&loc.place.pack) else {
                return Ok(None);
            };
            (loc, pack.file.clone())
        };
        let n = buf.len().min(loc.body_len as usize);
        file.read_exact_at(&mut buf[..n], loc.place.offset + RECORD_HEADER as u64)
            .map_err(StoreError::io(&pack_path(&self.packs_dir, loc.place.pack)))?;
        Ok(Some(n))
    }
}

fn out_pack<'a>(
    out: &'a mut Option<Active>,
    dir: &Path,
    tmp: &Path,
) -> Result<&'a mut Active, StoreError> {
    if out.is_none() {
        *out = Some(Active::create(dir, tmp)?);
    }
    out.as_mut()
        .ok_or_else(|| StoreError::Layout("no pack to append to".into()))
}

/// Each sealed pack's usage: live chunk bytes, and tombstones still needed (their target pack
/// exists).
fn usage_of(state: &State) -> Vec<PackUsage> {
    let mut live: HashMap<u64, u64> = HashMap::new();
    for loc in state.index.values() {
        *live.entry(loc.place.pack).or_default() += RECORD_HEADER as u64 + u64::from(loc.body_len);
    }
    state
        .packs
        .iter()
        .filter(|(_, p)| p.sealed)
        .map(|(&pack, p)| {
            let needed = p
                .tombstones
                .iter()
                .filter(|(_, t)| state.packs.contains_key(&t.pack))
                .count() as u64;
            PackUsage {
                pack,
                len: p.len,
                live: live.get(&pack).copied().unwrap_or(0)
                    + needed * (RECORD_HEADER as u64 + u64::from(record::TOMBSTONE_LEN)),
            }
        })
        .collect()
}

impl Drop for PackStore {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.appender.lock() {
            if let Some(active) = slot.take() {
                let _ = active.seal(&self.packs_dir);
            }
        }
    }
}

impl PackStore {
    /// `get` from what this handle knows.
    fn get_known(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let (loc, file) = {
            let state = self.read_state()?;
            let Some(loc) = state.index.get(id).copied() else {
                return Err(StoreError::Missing(*id));
            };
            let Some(pack) = state.packs.get(&loc.place.pack) else {
                return Err(StoreError::Missing(*id));
            };
            (loc, pack.file.clone())
        };
        let path = pack_path(&self.packs_dir, loc.place.pack);
        let mut stored = vec![0u8; loc.body_len as usize];
        file.read_exact_at(&mut stored, loc.place.offset + RECORD_HEADER as u64)
            .map_err(StoreError::io(&path))?;
        VerifiedChunk::from_stored(*id, &stored).map_err(|reason| StoreError::Invalid {
            id: *id,
            path: Some(path),
            reason,
        })
    }
}

impl ChunkStore for PackStore {
    /// On a miss, takes in the packs other processes sealed since (see [`PackStore::refresh`])
    /// and looks again, whatever the refresh read: a reader missing at the same time as another
    /// waits for that one's refresh, and its own then finds nothing new to read.
    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        match self.get_known(id) {
            Err(StoreError::Missing(_)) => {
                self.refresh()?;
                self.get_known(id)
            }
            other => other,
        }
    }

    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.read_state()?.index.contains_key(id))
    }

    fn put(&self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        if self.has(chunk.id())? {
            return Ok(());
        }
        self.with_appender(
            |a| {
                a.append(
                    Kind::Chunk,
                    chunk.id(),
                    &[&chunk.header(), chunk.payload()],
                    &self.packs_dir,
                )
                .map(|_| ())
            },
            true,
        )
    }

    /// Appends a tombstone (made durable by the next `put`, commit or [`PackStore::reclaim`]);
    /// the chunk is gone from this handle at once.
    fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
        let _m = self
            .maintenance
            .lock()
            .map_err(|_| StoreError::Layout("the pack maintenance lock is poisoned".into()))?;
        let Some(loc) = self.write_state()?.index.remove(id) else {
            return Err(StoreError::Missing(*id));
        };
        self.with_appender(
            |a| {
                a.append(
                    Kind::Tombstone,
                    id,
                    &[&record::tombstone_body(loc.place)],
                    &self.packs_dir,
                )
                .map(|_| ())
            },
            false,
        )
    }

    fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        Ok(self.read_state()?.index.keys().copied().collect())
    }

    fn size(&self) -> Result<StoreSize, StoreError> {
        let state = self.read_state()?;
        Ok(StoreSize {
            chunks: state.index.len() as u64,
            bytes: state.index.values().map(|l| u64::from(l.body_len)).sum(),
        })
    }

    fn writer(&self) -> Box<dyn ChunkWriter + '_> {
        Box::new(self.pack_writer())
    }
}

/// A group commit into a pack of its own: `put` appends (buffered), `flush` and `commit` write
/// and `fdatasync` the pack and publish its new chunks; `commit` also seals the pack. A pack that
/// reaches [`PACK_LIMIT`] is sealed and a new one begun. Dropping the writer commits what it can.
#[derive(Debug)]
pub struct PackWriter<'a> {
    store: &'a PackStore,
    active: Option<Active>,
    /// Entries of `active` already published.
    published: usize,
    /// Ids put into `active` and not yet published (a chunk put twice is written once).
    pending: HashSet<ChunkId>,
    flusher: Option<Flusher>,
    /// How much of `active` had been written when the flusher was last asked to sync it.
    kicked_at: u64,
    /// `put` replaces a chunk present ([`PackStore::pack_replacer`]).
    replace: bool,
}

/// Starts writing a pack's data to disk every [`FLUSH_AHEAD`] bytes, on a thread of its own, so
/// that the `fdatasync` of a commit or a seal finds little left to write instead of stalling the
/// import for a whole pack. An error it meets is kept for the writer to report: the kernel
/// reports a write-back error to one `fdatasync` only.
#[derive(Debug)]
struct Flusher {
    tx: std::sync::mpsc::SyncSender<Arc<File>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Arc<Mutex<Option<io::Error>>>,
}

/// See [`Flusher`].
const FLUSH_AHEAD: u64 = 32 << 20;

impl Flusher {
    fn start() -> Flusher {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<File>>(1);
        let failed = Arc::new(Mutex::new(None));
        let failed_in = failed.clone();
        let thread = std::thread::spawn(move || {
            for file in rx {
                if let Err(e) = file.sync_data() {
                    if let Ok(mut f) = failed_in.lock() {
                        f.get_or_insert(e);
                    }
                }
            }
        });
        Flusher {
            tx,
            thread: Some(thread),
            failed,
        }
    }

    /// Asks for a sync unless one is already under way (then the next commit does it).
    fn kick(&self, file: &Arc<File>) {
        let _ = self.tx.try_send(file.clone());
    }

    fn error(&self) -> Option<io::Error> {
        self.failed.lock().ok().and_then(|mut f| f.take())
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current sync.
        let (tx, _) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PackWriter<'_> {
    fn durable(&mut self, seal: bool) -> Result<(), StoreError> {
        let dir = &self.store.packs_dir;
        if let Some(e) = self.flusher.as_ref().and_then(Flusher::error) {
            let pack = self.active.as_ref().map_or(0, |a| a.pack);
            return Err(StoreError::io(&pack_path(dir, pack))(e));
        }
        if let Some(active) = self.active.as_mut() {
            active.sync(dir)?;
            self.store.publish(active, self.published)?;
            self.published = active.entries.len();
            self.pending.clear();
        }
        if seal {
            if let Some(active) = self.active.take() {
                self.store.seal_pack(active)?;
                self.published = 0;
            }
        }
        Ok(())
    }
}

impl ChunkWriter for PackWriter<'_> {
    fn put(&mut self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        if self.pending.contains(chunk.id()) {
            return Ok(());
        }
        let old = self
            .store
            .read_state()?
            .index
            .get(chunk.id())
            .map(|l| l.place);
        if old.is_some() && !self.replace {
            return Ok(());
        }
        let dir = &self.store.packs_dir;
        if self.active.is_none() {
            self.active = Some(self.store.begin_pack()?);
            self.kicked_at = 0;
        }
        let Some(active) = self.active.as_mut() else {
            return Err(StoreError::Layout("no pack to append to".into()));
        };
        active.append(
            Kind::Chunk,
            chunk.id(),
            &[&chunk.header(), chunk.payload()],
            dir,
        )?;
        if let Some(old) = old {
            active.append(
                Kind::Tombstone,
                chunk.id(),
                &[&record::tombstone_body(old)],
                dir,
            )?;
        }
        self.pending.insert(*chunk.id());
        if active.len >= PACK_LIMIT {
            return self.durable(true);
        }
        if active.len >= self.kicked_at + FLUSH_AHEAD {
            active.write_out(dir)?;
            self.kicked_at = active.len;
            self.flusher
                .get_or_insert_with(Flusher::start)
                .kick(&active.file);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.durable(false)
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.durable(true)
    }
}

impl Drop for PackWriter<'_> {
    fn drop(&mut self) {
        let _ = self.durable(true);
    }
}

#[cfg(test)]
mod tests;
