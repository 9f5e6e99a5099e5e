//! One write session for a whole multi-source fetch: every verified chunk, from the relay or a
//! peer, goes through one `ChunkWriter` of the store (`LocalStore`'s group commit) on one thread,
//! committed as [`Commits`] says (at most [`COMMIT_EVERY`] after a chunk came) and at the end.
//! Before, each request of a few chunks had its own writer thread and commit: two `syncfs` per
//! request. A crash loses at most what was not committed yet (temp files, never a chunk under its
//! name that is not whole and verified); those chunks are fetched again.

use std::sync::Arc;

use image_tools::{ChunkStore, StoreError, VerifiedChunk};
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
    /// Starts the session on a blocking thread of the current runtime.
    pub(crate) fn start<S: ChunkStore + ?Sized + 'static>(store: Arc<S>) -> Writer {
        let (tx, mut rx) = mpsc::channel::<VerifiedChunk>(QUEUE);
        let rt = tokio::runtime::Handle::current();
        let thread = tokio::task::spawn_blocking(move || {
            let origin = tokio::time::Instant::now();
            let mut batch = store.writer();
            let mut commits = Commits::new(COMMIT_EVERY);
            let mut written = 0;
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
                        written += 1;
                        commits.put(origin.elapsed());
                    }
                    Some(None) => {}
                }
                if commits.due(origin.elapsed()) {
                    // Handed to the store's committer thread: one `syncfs`, then the names.
                    batch.flush()?;
                    commits.committed();
                }
            }
            batch.commit()?;
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
