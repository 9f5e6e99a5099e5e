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
//! memory; `has`, `ids` and `size` answer from what the handle knows); the in-memory index costs
//! about 80 bytes per chunk (80 MiB for a million).
//!
//! Here: the handle, its index and its own appender. `load`: reading packs at open and on a
//! miss; `writer`: the group commit; `reclaim`: the space of dead records given back;
//! [`record`]: the bytes on disk.

mod load;
mod reclaim;
pub mod record;
mod writer;

#[cfg(test)]
use load::LiveIndex;
pub use reclaim::{plan_reclaim, PackUsage};
pub use writer::PackWriter;

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
        let mut slot = lock(&self.appender)?;
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

    /// Bytes of pack files (records), live or not.
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.read_state()?.packs.values().map(|p| p.len).sum())
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
        let _m = lock(&self.maintenance)?;
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

#[cfg(test)]
mod tests;
