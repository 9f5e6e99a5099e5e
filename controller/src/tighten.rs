//! The store's second compression pass ([`image_tools::tighten`]) as the controller's background
//! work: once at start, whenever the catalogue reads a new master version (an import through the
//! admin API, or `nightcast-controller master-add`), and every hour, on threads of its own while
//! relays are served. Chunks done before are skipped, so a pass after an import costs only the
//! import's new chunks. A pass runs at the lowest CPU priority (nice 19, on a thread of its own
//! whose workers inherit it): zstd -19 takes the CPU only when serving, imports and the admin API
//! leave it idle.

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
        let pass = at_lowest_priority(move || {
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

/// The lowest CPU priority a process may take without privileges.
const LOWEST: i32 = 19;

/// Runs `work` on a thread of its own at nice 19 (Linux keeps a nice value per thread and the
/// threads it starts inherit it) and hands back its result. Not tokio's blocking pool: a pool
/// thread keeps its priority for the next task, and the runtime's shutdown would wait for a pass.
fn at_lowest_priority<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("tighten".into())
        .spawn(move || {
            if let Err(e) =
                rustix::process::setpriority_process(Some(rustix::thread::gettid()), LOWEST)
            {
                tracing::warn!(error = %e, "the compression pass runs at normal priority");
            }
            let _ = tx.send(work());
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the compression pass");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pass_and_the_workers_it_starts_run_at_nice_19_and_the_caller_keeps_its_own() {
        let mine = rustix::process::getpriority_process(None).unwrap();
        let seen = at_lowest_priority(|| {
            let here = rustix::process::getpriority_process(None).unwrap();
            let worker = std::thread::spawn(|| rustix::process::getpriority_process(None).unwrap())
                .join()
                .unwrap();
            (here, worker)
        })
        .await
        .unwrap();
        assert_eq!(seen, (LOWEST, LOWEST));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), mine);
    }
}
