//! Reading packs into a handle's index: at open, every pack (a pack without index, a crash's,
//! scanned record by record and cut after its last whole record); on a miss, [`PackStore::refresh`]
//! takes in what other processes sealed since.

use super::*;

/// How old the packs directory's modification time must be before a listing is taken to have
/// seen every change that shares it (file systems keep it in ticks of a few milliseconds).
const SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`PackStore::load`] did.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// Packs read.
    read: usize,
    /// Packs of other writers left for their commit.
    waiting: usize,
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
pub(super) struct LiveIndex {
    index: HashMap<ChunkId, Loc>,
    dead: HashSet<Place>,
    /// Other records of a chunk already indexed (a rewrite interrupted by a crash, or a chunk
    /// put again after its removal): one of them stands in if the indexed one is dead.
    spare: Vec<(ChunkId, Loc)>,
}

impl LiveIndex {
    pub(super) fn add_pack(&mut self, pack: u64, entries: &[Entry]) {
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

    pub(super) fn finish(mut self) -> HashMap<ChunkId, Loc> {
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

impl PackStore {
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
    pub(super) fn load(&self, refresh: bool) -> Result<Loaded, StoreError> {
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
                    if orphan && scan.valid_len < file_len {
                        tracing::warn!(pack = %path.display(), kept = scan.valid_len, cut = file_len - scan.valid_len,
                            "cutting the torn tail of a pack an interrupted write left");
                        file.set_len(scan.valid_len)
                            .map_err(StoreError::io(&path))?;
                        file.sync_all().map_err(StoreError::io(&path))?;
                    }
                    // Sealed once its index is written; on a full disk it is read as it is, and
                    // indexed at a later open.
                    let sealed = orphan
                        && match durable::write_file(
                            &idx,
                            &record::encode_index(scan.valid_len, &scan.entries),
                            0o644,
                        ) {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(index = %idx.display(), error = %e,
                                    "cannot write the index of a pack an interrupted write left: its records are read as they are");
                                false
                            }
                        };
                    if orphan {
                        let _ = rustix::fs::flock(&file, FlockOperation::Unlock);
                    }
                    (scan.entries, scan.valid_len, sealed)
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
}
