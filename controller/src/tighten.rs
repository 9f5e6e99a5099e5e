//! The store's second compression pass ([`image_tools::tighten`]) as the controller's background
//! work: once at start, whenever the catalogue reads a new master version (an import through the
//! admin API, or `nightcast-controller master-add`), and every hour, on threads of its own while
//! relays are served. Chunks done before are skipped, so a pass after an import costs only the
//! import's new chunks. A pass runs at the lowest CPU priority (nice 19, on a thread of its own
//! whose workers inherit it): zstd -19 takes the CPU only when serving, imports and the admin API
//! leave it idle. The chunks of the masters the calendar needs soonest go first
//! ([`soonest_first`]): a big master imported late in the day is the one a night fetches, and
//! a pass on one core may not finish the whole store before it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use image_tools::clock::Clock;
use image_tools::store::DiskStore;
use image_tools::wire::MasterRef;
use image_tools::{ChunkId, Manifest};
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

/// Runs passes over `store` (the catalogue in `data` says which chunks first) until `stop`;
/// `wake` starts one early.
pub async fn run(
    data: crate::DataDir,
    store: Arc<dyn DiskStore>,
    settings: Tighten,
    wake: Arc<Notify>,
    stop: CancellationToken,
    clock: Clock,
) {
    loop {
        let (data, store) = (data.clone(), store.clone());
        let pass = at_lowest_priority(move || {
            let first = needed_soonest(&data, clock.now());
            let report = image_tools::tighten::tighten_first(
                &*store,
                &first,
                settings.level,
                settings.threads,
                &|_, _| {},
            )?;
            match image_tools::tighten::give_space_back(&*store) {
                Ok(0) => {}
                Ok(freed) => tracing::info!(
                    mb = freed / 1_000_000,
                    "gave back the space of the forms compressed again"
                ),
                // A full disk (the live records are copied before the old packs go) or gc:
                // nothing is lost, and the next pass tries again.
                Err(e) => tracing::warn!(
                    error = format!("{:#}", anyhow::Error::new(e)),
                    "cannot give back the space of the forms compressed again now"
                ),
            }
            Ok::<_, image_tools::store::StoreError>(report)
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
                    error = format!("{:#}", anyhow::Error::new(e)),
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

/// The chunks of the master versions that sessions not over yet at `now` need, those needed
/// soonest first (from the catalogue; empty if it cannot be read: the pass then goes in store
/// order).
fn needed_soonest(data: &crate::DataDir, now: i64) -> Vec<ChunkId> {
    let read = || -> Result<Vec<ChunkId>, crate::db::DbError> {
        let db = crate::db::Db::open(&data.database())?;
        let upcoming: Vec<(MasterRef, i64)> = db
            .sessions(None)?
            .into_iter()
            .filter(|s| s.end > now)
            .map(|s| {
                let m = MasterRef {
                    name: s.master,
                    version: s.version,
                };
                (m, s.start)
            })
            .collect();
        Ok(soonest_first(&upcoming, |m| {
            db.manifest(m.name.as_str(), m.version.as_str())
                .ok()
                .flatten()
                .and_then(|(bytes, _)| Manifest::decode_unverified(&bytes).ok())
                .map(|u| u.manifest.unique_chunks().iter().map(|c| c.id).collect())
                .unwrap_or_default()
        }))
    };
    read().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the calendar: compressing in store order");
        Vec::new()
    })
}

/// The chunks of the master versions of `upcoming` sessions (version, start), the version whose
/// first session starts soonest first, each version's chunks as `chunks_of` lists them.
pub fn soonest_first(
    upcoming: &[(MasterRef, i64)],
    chunks_of: impl Fn(&MasterRef) -> Vec<ChunkId>,
) -> Vec<ChunkId> {
    let mut first_start: BTreeMap<&MasterRef, i64> = BTreeMap::new();
    for (m, start) in upcoming {
        let t = first_start.entry(m).or_insert(*start);
        *t = (*t).min(*start);
    }
    let mut order: Vec<(&MasterRef, i64)> = first_start.into_iter().collect();
    order.sort_by_key(|&(m, t)| (t, m.clone()));
    order.into_iter().flat_map(|(m, _)| chunks_of(m)).collect()
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

    #[test]
    fn the_version_whose_first_session_comes_soonest_is_compressed_first() {
        let m = |v: &str| MasterRef::new("demo", v).unwrap();
        let id = |n: u8| ChunkId::of(&[n]);
        let chunks = |r: &MasterRef| match r.version.as_str() {
            "1" => vec![id(1), id(2)],
            "2" => vec![id(3)],
            _ => vec![id(4)],
        };
        // v1's sessions start at 300 and 50, v2's at 100, v3's at 200.
        let upcoming = [(m("1"), 300), (m("2"), 100), (m("3"), 200), (m("1"), 50)];
        assert_eq!(
            soonest_first(&upcoming, chunks),
            vec![id(1), id(2), id(3), id(4)]
        );
        assert!(soonest_first(&[], chunks).is_empty());
    }

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
