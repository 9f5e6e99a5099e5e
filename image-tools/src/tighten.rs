//! The second compression pass: every chunk of a store compressed again at a high zstd level
//! (19 by default), replacing the fast first-pass form written at import, so that the WAN carries
//! fewer bytes. The controller has idle cores all day and the sites' links are thin; a chunk is
//! compressed once here and sent to every site. The level is [`crate::chunk::TIGHT_LEVEL`] unless
//! the caller says otherwise.
//!
//! A chunk keeps its id (the hash of its raw bytes): only its stored form changes (in a file store
//! by an atomic rename; in a pack store by appending the new record, then a tombstone for the old
//! one, whose space [`give_space_back`] frees after a pass), so a reader sees the old form or the new one, both verified. Which chunks are done needs
//! no record: a tightened payload says so itself ([`crate::chunk::is_tight`]), so a pass that was
//! interrupted, or that runs again after an import, only works on what is new.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::chunk::{is_tight, TIGHT_PROBE_LEN};
use crate::ids::ChunkId;
use crate::store::{ChunkWriter, DiskStore, StoreError};

/// What a pass did. Byte counts are payloads of the chunks it replaced, before and after.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TightenReport {
    /// Chunks in the store.
    pub chunks: u64,
    /// Chunks found final already (tightened before, or kept raw).
    pub already: u64,
    /// Chunks recompressed and replaced.
    pub tightened: u64,
    /// Chunks recompressed that did not get smaller: replaced when at most 1 % larger (so that
    /// they count as done), else kept as they were and tried again by the next pass.
    pub unchanged: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Chunks that did not verify: left for `scrub` (not counted above).
    pub corrupt: Vec<(ChunkId, String)>,
}

impl TightenReport {
    /// Chunks looked at so far.
    pub fn done(&self) -> u64 {
        self.already + self.tightened + self.unchanged + self.corrupt.len() as u64
    }
}

/// Frees the space of the forms a pass replaced; returns the bytes freed. A file store did as it
/// went (each tight form renamed over the old one); a pack store keeps them as dead records until
/// the packs they leave mostly dead are rewritten, which is done here, beside readers (they go
/// on reading the old files) and imports (under the same shared lock as theirs).
pub fn give_space_back(store: &dyn DiskStore) -> Result<u64, StoreError> {
    if store.format() != crate::store::Format::Packs {
        return Ok(0);
    }
    let _writing = store.lock(false)?;
    store.reclaim()
}

/// Recompresses every first-pass chunk of `store` at zstd `level` on `threads` threads, calling
/// `progress` (chunks done, chunks in all) now and then. Holds the store's shared lock, as an import
/// does: garbage collection waits, imports and readers go on.
pub fn tighten(
    store: &dyn DiskStore,
    level: i32,
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<TightenReport, StoreError> {
    tighten_first(store, &[], level, threads, progress)
}

/// The same, the chunks of `first` before the others (the controller lists the chunks of the
/// masters needed soonest: a pass that cannot finish before a night has done those).
pub fn tighten_first(
    store: &dyn DiskStore,
    first: &[ChunkId],
    level: i32,
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<TightenReport, StoreError> {
    let _lock = store.lock(false)?;
    // Chunks other processes imported since the handle opened (`nightcast-image build`).
    store.refresh()?;
    let ids = work_order(first, store.ids()?);
    let total = ids.len() as u64;
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let report = Mutex::new(TightenReport {
        chunks: total,
        ..TightenReport::default()
    });
    let worker = || -> Result<(), StoreError> {
        let mut batch = store.replacer();
        let mut mine = TightenReport::default();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(id) = ids.get(i as usize) else { break };
            one(store, &mut *batch, id, level, &mut mine)?;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 1024 == 0 || n == total {
                progress(n, total);
            }
        }
        batch.commit()?;
        let mut all = report.lock().map_err(|_| poisoned())?;
        all.already += mine.already;
        all.tightened += mine.tightened;
        all.unchanged += mine.unchanged;
        all.bytes_before += mine.bytes_before;
        all.bytes_after += mine.bytes_after;
        all.corrupt.append(&mut mine.corrupt);
        Ok(())
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(poisoned())))
            .collect::<Result<Vec<()>, StoreError>>()
    })?;
    report.into_inner().map_err(|_| poisoned())
}

/// The store's chunks `all`, those of `first` first (in that order, each once, only those the
/// store has), then the rest as they came.
fn work_order(first: &[ChunkId], all: Vec<ChunkId>) -> Vec<ChunkId> {
    if first.is_empty() {
        return all;
    }
    let mut left: std::collections::HashSet<ChunkId> = all.iter().copied().collect();
    let mut order: Vec<ChunkId> = first.iter().filter(|id| left.remove(id)).copied().collect();
    order.extend(all.into_iter().filter(|id| left.contains(id)));
    order
}

fn poisoned() -> StoreError {
    StoreError::Layout("a tighten thread panicked".into())
}

/// One chunk: skipped if final, else recompressed and replaced when that saves bytes.
fn one(
    store: &dyn DiskStore,
    batch: &mut dyn ChunkWriter,
    id: &ChunkId,
    level: i32,
    report: &mut TightenReport,
) -> Result<(), StoreError> {
    let mut head = [0u8; TIGHT_PROBE_LEN];
    // Removed meanwhile (a repair): nothing to do.
    let Some(read) = store.stored_prefix(id, &mut head)? else {
        return Ok(());
    };
    if is_tight(&head[..read]) {
        report.already += 1;
        return Ok(());
    }
    let chunk = match store.get(id) {
        Ok(c) => c,
        Err(StoreError::Missing(_)) => return Ok(()),
        Err(StoreError::Invalid { reason, .. }) => {
            report.corrupt.push((*id, reason.to_string()));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let before = u64::from(chunk.stored_len());
    match chunk.tightened(level) {
        Some(tight) if tight.stored_len() < chunk.stored_len() => {
            report.tightened += 1;
            report.bytes_before += before;
            report.bytes_after += u64::from(tight.stored_len());
            batch.put(&tight)
        }
        // Not smaller (zstd's high levels lose a few bytes on some data): the tight form, when it
        // costs at most 1 % more, marks the chunk done so that no later pass tries again.
        Some(tight) if tight.stored_len() <= chunk.stored_len() + chunk.stored_len() / 100 => {
            report.unchanged += 1;
            report.bytes_before += before;
            report.bytes_after += u64::from(tight.stored_len());
            batch.put(&tight)
        }
        _ => {
            report.unchanged += 1;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{VerifiedChunk, TIGHT_LEVEL};
    use crate::store::conformance::in_each_format;
    use crate::store::ChunkStore;

    #[test]
    fn the_chunks_asked_first_come_first_each_once_and_only_if_the_store_has_them() {
        let id = |n: u8| ChunkId::of(&[n]);
        let all = vec![id(1), id(2), id(3), id(4)];
        assert_eq!(work_order(&[], all.clone()), all);
        assert_eq!(
            work_order(&[id(3), id(9), id(3), id(1)], all),
            vec![id(3), id(1), id(2), id(4)],
            "9 is not in the store, 3 is listed twice"
        );
    }

    fn text(seed: u32) -> Vec<u8> {
        (0..6_000u32)
            .flat_map(|i| format!("seat-{} room-{} {seed} ", i % 89, (i * 7) % 11).into_bytes())
            .collect()
    }

    fn stored_bytes(store: &dyn DiskStore) -> u64 {
        store.size().unwrap().bytes
    }

    #[test]
    fn a_pass_shrinks_the_store_keeps_every_chunk_and_a_second_pass_has_nothing_to_do() {
        in_each_format(|store, _| {
            let chunks: Vec<VerifiedChunk> =
                (0..8).map(|s| VerifiedChunk::from_raw(text(s))).collect();
            let noise: Vec<u8> = (0..4000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            let raw = VerifiedChunk::from_raw(noise);
            for c in chunks.iter().chain([&raw]) {
                store.put(c).unwrap();
            }
            let before = stored_bytes(store);

            let calls = AtomicU64::new(0);
            let report = tighten(store, TIGHT_LEVEL, 2, &|done, total| {
                assert!(done <= total);
                calls.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
            assert_eq!(report.chunks, 9);
            assert_eq!(report.done(), 9);
            assert!(report.tightened >= 1, "{report:?}");
            assert!(report.bytes_after < report.bytes_before, "{report:?}");
            assert_eq!(
                stored_bytes(store),
                before - (report.bytes_before - report.bytes_after)
            );
            assert!(calls.load(Ordering::Relaxed) >= 1);
            // Every chunk reads back whole and verified, under its old id.
            for c in chunks.iter().chain([&raw]) {
                assert_eq!(store.get(c.id()).unwrap().raw(), c.raw());
            }

            // Nothing left to do: every chunk says it is final.
            let again = tighten(store, TIGHT_LEVEL, 1, &|_, _| {}).unwrap();
            assert_eq!(again.already, 9, "{again:?}");
            assert_eq!(again.tightened, 0);

            // A chunk imported later is the only one the next pass works on.
            let late = VerifiedChunk::from_raw(text(99));
            store.put(&late).unwrap();
            let third = tighten(store, TIGHT_LEVEL, 1, &|_, _| {}).unwrap();
            assert_eq!((third.already, third.tightened + third.unchanged), (9, 1));
        });
    }

    #[test]
    fn a_pack_store_reopened_after_a_pass_serves_the_tight_forms_and_gives_the_old_ones_space_back()
    {
        use crate::store::pack::PackStore;
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<VerifiedChunk> = (0..8).map(|s| VerifiedChunk::from_raw(text(s))).collect();
        let (before, after) = {
            let store = PackStore::open(dir.path()).unwrap();
            for c in &chunks {
                store.put(c).unwrap();
            }
            let before = store.disk_bytes().unwrap();
            let r = tighten(&store, TIGHT_LEVEL, 2, &|_, _| {}).unwrap();
            assert_eq!(r.tightened, 8, "{r:?}");
            (before, store.size().unwrap().bytes)
        };
        // Another process (or the next start) sees the new forms, not the old ones.
        let store = PackStore::open(dir.path()).unwrap();
        assert_eq!(store.size().unwrap().bytes, after);
        let again = tighten(&store, TIGHT_LEVEL, 1, &|_, _| {}).unwrap();
        assert_eq!(again.already, 8, "{again:?}");
        for c in &chunks {
            assert_eq!(store.get(c.id()).unwrap().raw(), c.raw());
        }
        // The old forms take space until it is given back (the controller and the CLI do after
        // each pass), beside an import holding the store.
        assert!(store.disk_bytes().unwrap() > before);
        let _import = store.lock(false).unwrap();
        assert!(give_space_back(&store).unwrap() >= before - after);
        assert!(
            store.disk_bytes().unwrap() < before,
            "old forms still on disk"
        );
        drop(store);
        let store = PackStore::open(dir.path()).unwrap();
        for c in &chunks {
            assert_eq!(store.get(c.id()).unwrap().raw(), c.raw());
        }
    }

    #[test]
    fn a_corrupt_chunk_is_reported_and_left_for_scrub() {
        in_each_format(|store, corrupt| {
            let good = VerifiedChunk::from_raw(text(1));
            let bad = VerifiedChunk::from_raw(text(2));
            store.put(&good).unwrap();
            store.put(&bad).unwrap();
            corrupt(bad.id());
            let size = store.size().unwrap();

            let report = tighten(store, TIGHT_LEVEL, 1, &|_, _| {}).unwrap();
            assert_eq!(report.corrupt.len(), 1, "{report:?}");
            assert_eq!(report.corrupt[0].0, *bad.id());
            assert!(
                matches!(store.get(bad.id()), Err(StoreError::Invalid { .. })),
                "a corrupt chunk was rewritten"
            );
            assert!(
                store.size().unwrap().bytes < size.bytes,
                "good was tightened"
            );
            assert_eq!(store.get(good.id()).unwrap().raw(), good.raw());
        });
    }

    #[test]
    fn it_waits_for_no_one_but_garbage_collection() {
        in_each_format(|store, _| {
            store.put(&VerifiedChunk::from_raw(text(3))).unwrap();
            let gc = store.lock(true).unwrap();
            assert!(tighten(store, TIGHT_LEVEL, 1, &|_, _| {}).is_err());
            drop(gc);
            let _import = store.lock(false).unwrap();
            assert_eq!(
                tighten(store, TIGHT_LEVEL, 1, &|_, _| {})
                    .unwrap()
                    .tightened,
                1
            );
        });
    }
}
