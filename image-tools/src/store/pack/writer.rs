//! The group commit of a pack store: a writer fills a pack of its own.

use super::*;

impl PackStore {
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
}

/// A group commit into a pack of its own: `put` appends (buffered), `flush` and `commit` write
/// and `fdatasync` the pack and publish its new chunks; `commit` also seals the pack. A pack that
/// reaches [`PACK_LIMIT`] is sealed and a new one begun. Dropping the writer commits what it can.
#[derive(Debug)]
pub struct PackWriter<'a> {
    store: &'a PackStore,
    pub(super) active: Option<Active>,
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
