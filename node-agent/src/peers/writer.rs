//! One write session for a whole multi-source fetch: every verified chunk, from the relay or a
//! peer, goes through one `ChunkWriter` of the store (a file store's group commit, or a pack
//! store's writer) on one thread, committed as [`Commits`] says (at most [`COMMIT_EVERY`] after a
//! chunk came) and at the end. Before, each request of a few chunks had its own writer thread and
//! commit: two `syncfs` per request. A crash loses at most what was not committed yet (temp files, never a chunk under its
//! name that is not whole and verified); those chunks are fetched again.
//!
//! Each commit waits until the chunks are durable under their names, then announces them
//! (`announce`: the peer server's in-memory offer), so a peer is never told of a chunk that is
//! not whole on disk. The fetch's requests go on meanwhile (up to [`QUEUE`] chunks wait).

use std::sync::Arc;

use image_tools::{ChunkId, ChunkStore, StoreError, VerifiedChunk};
use tokio::sync::mpsc;

use super::commits::{Commits, COMMIT_EVERY};

/// Chunks waiting for the writer at most (each at most a chunk's size).
const QUEUE: usize = 256;

/// The writer thread of one fetch.
pub(crate) struct Writer {
    tx: mpsc::Sender<VerifiedChunk>,
    thread: tokio::task::JoinHandle<Result<u64, StoreError>>,
}

impl Writer {
    /// Starts the session on a blocking thread of the current runtime; `announce` is told the
    /// chunks of each commit once they are durable.
    pub(crate) fn start<S: ChunkStore + ?Sized + 'static>(
        store: Arc<S>,
        announce: impl Fn(Vec<ChunkId>) + Send + 'static,
    ) -> Writer {
        let (tx, mut rx) = mpsc::channel::<VerifiedChunk>(QUEUE);
        let rt = tokio::runtime::Handle::current();
        let thread = tokio::task::spawn_blocking(move || {
            let origin = tokio::time::Instant::now();
            let mut batch = store.writer();
            let mut commits = Commits::new(COMMIT_EVERY);
            let mut written = 0;
            let mut uncommitted = Vec::new();
            loop {
                let now = origin.elapsed();
                let next = match commits.wait(now) {
                    None => rt.block_on(rx.recv()).map(Some),
                    Some(wait) => match rt.block_on(tokio::time::timeout(wait, rx.recv())) {
                        Ok(got) => got.map(Some),
                        Err(_) => Some(None),
                    },
                };
                match next {
                    // Every sender is gone: the fetch is over.
                    None => break,
                    Some(Some(chunk)) => {
                        batch.put(&chunk)?;
                        uncommitted.push(*chunk.id());
                        written += 1;
                        commits.put(origin.elapsed());
                    }
                    Some(None) => {}
                }
                if commits.due(origin.elapsed()) {
                    // The store's group commit: one `syncfs`, the names, one `syncfs` for them.
                    batch.commit()?;
                    commits.committed();
                    announce(std::mem::take(&mut uncommitted));
                }
            }
            batch.commit()?;
            announce(uncommitted);
            Ok(written)
        });
        Writer { tx, thread }
    }

    /// Where the fetch's requests send what they received, verified.
    pub(crate) fn sender(&self) -> mpsc::Sender<VerifiedChunk> {
        self.tx.clone()
    }

    /// Commits what is left and waits for it: every chunk sent is then in the store under its
    /// name, durable. Every sender must be dropped first (the writer waits for them).
    pub(crate) async fn finish(self) -> anyhow::Result<u64> {
        drop(self.tx);
        Ok(self.thread.await??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::LocalStore;
    use std::sync::Mutex;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chunk_is_announced_only_once_it_is_in_the_store_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(dir.path()).unwrap());
        let announced: Arc<Mutex<Vec<ChunkId>>> = Arc::default();
        let (seen, check) = (announced.clone(), store.clone());
        let writer = Writer::start(store.clone(), move |ids| {
            for id in &ids {
                assert!(check.has(id).unwrap(), "announced before it was committed");
            }
            seen.lock().unwrap().extend(ids);
        });
        let tx = writer.sender();
        let chunks: Vec<_> = (0..20u8)
            .map(|i| VerifiedChunk::from_raw(vec![i; 4096]))
            .collect();
        for c in &chunks[..10] {
            tx.send(c.clone()).await.unwrap();
        }
        // The first commit comes within the period, before the fetch ends.
        tokio::time::sleep(COMMIT_EVERY * 2).await;
        assert_eq!(announced.lock().unwrap().len(), 10);
        for c in &chunks[10..] {
            tx.send(c.clone()).await.unwrap();
        }
        drop(tx);
        assert_eq!(writer.finish().await.unwrap(), 20);
        let mut got = announced.lock().unwrap().clone();
        got.sort();
        let mut want: Vec<_> = chunks.iter().map(|c| *c.id()).collect();
        want.sort();
        assert_eq!(got, want);
    }
}
