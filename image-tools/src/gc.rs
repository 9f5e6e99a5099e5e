//! Store maintenance: garbage collection by reachability, and the scrub that finds rotten chunks.

use std::collections::HashSet;

use crate::ids::ChunkId;
use crate::manifest::Manifest;
use crate::store::{DiskStore, StoreError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Chunks reachable from the kept manifests and present.
    pub kept: u64,
    pub removed: u64,
    /// Bytes on disk freed (stored form).
    pub removed_bytes: u64,
    /// Chunks the kept manifests need that the store lacks (a store that needs repair).
    pub missing: u64,
}

/// Removes every chunk no manifest in `keep` refers to. Holds the store's exclusive lock, so it
/// refuses to run while an import is writing chunks that no manifest names yet.
pub fn gc(
    store: &dyn DiskStore,
    keep: &[&Manifest],
    dry_run: bool,
) -> Result<GcReport, StoreError> {
    let _lock = store.lock(true)?;
    let reachable: HashSet<ChunkId> = keep.iter().flat_map(|m| m.chunks().map(|c| c.id)).collect();
    let mut report = GcReport::default();
    let mut present = HashSet::new();
    for id in store.ids()? {
        present.insert(id);
        if reachable.contains(&id) {
            report.kept += 1;
            continue;
        }
        let len = store
            .stored_len(&id)?
            .map_or(0, |n| u64::from(n) + crate::chunk::HEADER_LEN as u64);
        if !dry_run {
            match store.remove(&id) {
                Ok(()) | Err(StoreError::Missing(_)) => {}
                Err(e) => return Err(e),
            }
        }
        report.removed += 1;
        report.removed_bytes += len;
    }
    report.missing = reachable.difference(&present).count() as u64;
    if !dry_run {
        // Durable removals; a pack store also rewrites the packs that removals, or the old forms
        // a tighten pass replaced, left mostly dead.
        store.reclaim()?;
    }
    Ok(report)
}

#[derive(Debug, Default)]
pub struct ScrubReport {
    pub checked: u64,
    /// Corrupt chunks found (and removed, when asked to repair).
    pub corrupt: Vec<(ChunkId, String)>,
}

/// Reads and checks every chunk in the store; with `repair`, removes the corrupt ones so that they
/// count as missing and are fetched or imported again.
pub fn scrub(store: &dyn DiskStore, repair: bool) -> Result<ScrubReport, StoreError> {
    let mut report = ScrubReport::default();
    for id in store.ids()? {
        report.checked += 1;
        match store.get(&id) {
            Ok(_) | Err(StoreError::Missing(_)) => {}
            Err(StoreError::Invalid { reason, .. }) => {
                tracing::warn!(chunk = %id, %reason, "corrupt chunk");
                if repair {
                    store.remove(&id)?;
                }
                report.corrupt.push((id, reason.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    if repair && !report.corrupt.is_empty() {
        store.reclaim()?;
    }
    Ok(report)
}
