//! The store's second compression pass ([`image_tools::tighten`]) as the controller's background
//! work: once at start, whenever the catalogue reads a new master version (an import through the
//! admin API, or `nightcast-controller master-add`), and every hour, on threads of its own while
//! relays are served. Chunks done before are skipped, so a pass after an import costs only the
//! import's new chunks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use image_tools::LocalStore;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a pass runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tighten {
    pub level: i32,
    pub threads: usize,
}

/// How long the task sleeps when nothing wakes it.
const EVERY: Duration = Duration::from_secs(3600);

/// Runs passes over the store at `store` until `stop`; `wake` starts one early.
pub async fn run(store: PathBuf, settings: Tighten, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let dir = store.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let store = LocalStore::open(&dir)?;
            image_tools::tighten::tighten(&store, settings.level, settings.threads, &|_, _| {})
        });
        tokio::select! {
            _ = stop.cancelled() => break,
            done = pass => match done {
                Ok(Ok(r)) if r.tightened + r.unchanged > 0 || !r.corrupt.is_empty() => tracing::info!(
                    level = settings.level,
                    chunks = r.tightened,
                    mb_before = r.bytes_before / 1_000_000,
                    mb_after = r.bytes_after / 1_000_000,
                    corrupt = r.corrupt.len(),
                    "chunks compressed again: sites will download less"
                ),
                Ok(Ok(_)) => {}
                // gc holds the store: the next wake tries again.
                Ok(Err(e)) => tracing::warn!(
                    error = %anyhow::Error::new(e),
                    "cannot compress the store's chunks again now"
                ),
                Err(e) => tracing::error!(error = %e, "the compression pass stopped"),
            },
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
