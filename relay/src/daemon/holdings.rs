//! What the cache holds: the verified manifests kept, what each master lacks (always computed
//! from the store), pins, eviction, and corrupt chunks dropped.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use image_tools::wire::MasterRef;
use image_tools::{ChunkId, ChunkStore, StoreError, VerifiedManifest};

use super::{manifests_dir, Relay};
use crate::cache;

/// A master version whose verified manifest the relay keeps.
#[derive(Debug)]
pub(super) struct Known {
    pub(super) manifest: Arc<VerifiedManifest>,
    pub(super) missing_chunks: u64,
    pub(super) missing_bytes: u64,
}

impl Relay {
    /// Start-up self-care: the manifests kept are verified again, and what each master lacks is
    /// computed from the store itself (the store's temp files were removed when it opened).
    pub(super) fn self_check(&self) -> anyhow::Result<()> {
        let dir = manifests_dir(&self.cfg.data);
        let removed = image_tools::durable::clean_temp_files(&dir)?;
        let mut known = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)?.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "manifest") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    VerifiedManifest::open_with(b, &self.accepted_keys()).map_err(|e| e.to_string())
                }) {
                Ok(m) => {
                    known.insert(m.master(), self.known_from(Arc::new(m))?);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dropping a manifest that does not verify");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        for (master, k) in &known {
            tracing::info!(
                %master,
                missing_chunks = k.missing_chunks,
                missing_bytes = k.missing_bytes,
                "cache check"
            );
        }
        if let Ok(mut slot) = self.known.write() {
            *slot = known;
        }
        if removed > 0 && self.store.format() == image_tools::store::Format::Packs {
            // Removals in a pack store are tombstones: the space comes back when the packs they
            // left mostly dead are rewritten. (A file store frees it as it removes.)
            if let Err(e) = self.store.reclaim() {
                self.error(format!("cannot reclaim the evicted chunks' space: {e}"));
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed temp files left by an interrupted run");
        }
        self.evict(0);
        Ok(())
    }

    pub(super) fn known_from(&self, manifest: Arc<VerifiedManifest>) -> Result<Known, StoreError> {
        let mut known = Known {
            manifest,
            missing_chunks: 0,
            missing_bytes: 0,
        };
        for c in known.manifest.unique_chunks() {
            if !self.store.has(&c.id)? {
                known.missing_chunks += 1;
                known.missing_bytes += u64::from(c.stored_len) + 5;
            }
        }
        Ok(known)
    }

    /// Recomputes what every kept master lacks (after a fetch, a dropped chunk, an eviction).
    pub(super) fn recheck(&self) {
        self.dirty.store(false, Ordering::SeqCst);
        let manifests: Vec<Arc<VerifiedManifest>> = self
            .known
            .read()
            .map(|k| k.values().map(|k| k.manifest.clone()).collect())
            .unwrap_or_default();
        let mut fresh = BTreeMap::new();
        for m in manifests {
            match self.known_from(m.clone()) {
                Ok(k) => {
                    fresh.insert(m.master(), k);
                }
                Err(e) => self.error(format!("cannot read the cache: {e}")),
            }
        }
        if let Ok(mut slot) = self.known.write() {
            for (k, v) in fresh {
                slot.insert(k, v);
            }
        }
    }

    pub(super) fn complete(&self, m: &MasterRef) -> bool {
        self.known
            .read()
            .map(|k| k.get(m).is_some_and(|k| k.missing_chunks == 0))
            .unwrap_or(false)
    }

    /// The master versions held in full.
    pub(super) fn holding(&self) -> Vec<MasterRef> {
        self.known
            .read()
            .map(|k| {
                k.iter()
                    .filter(|(_, v)| v.missing_chunks == 0)
                    .map(|(m, _)| m.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keeps a verified manifest (durably) and starts counting what it lacks.
    pub(super) fn keep_manifest(
        &self,
        m: VerifiedManifest,
    ) -> anyhow::Result<Arc<VerifiedManifest>> {
        let path = manifests_dir(&self.cfg.data).join(format!("{}-{}.manifest", m.name, m.version));
        image_tools::durable::write_file(&path, m.bytes(), 0o644)?;
        let m = Arc::new(m);
        let known = self.known_from(m.clone())?;
        if let Ok(mut k) = self.known.write() {
            k.insert(m.master(), known);
        }
        Ok(m)
    }

    /// Chunks that must never be evicted: those of every master version the plan pins now.
    pub(super) fn pinned(&self, now: i64) -> HashSet<ChunkId> {
        let plan = self.plan();
        let known = match self.known.read() {
            Ok(k) => k,
            Err(_) => return HashSet::new(),
        };
        let mut out = HashSet::new();
        for e in plan.entries.iter().filter(|e| e.pin_until > now) {
            if let Some(k) = known.get(&e.master) {
                out.extend(k.manifest.chunks().map(|c| c.id));
            }
        }
        out
    }

    /// Evicts unpinned chunks, least recently used first, until the cache fits its quota with
    /// `room` bytes to spare. Says loudly when the pinned chunks alone do not fit.
    pub(super) fn evict(&self, room: u64) {
        let now = self.clock.now();
        let entries = match self.store.entries() {
            Ok(e) => e,
            Err(e) => return self.error(format!("cannot list the cache: {e}")),
        };
        let pinned = self.pinned(now);
        let plan = {
            let used = self.last_used.lock().map(|u| u.clone()).unwrap_or_default();
            cache::plan_eviction(&entries, &pinned, &used, self.quota, room)
        };
        let mut removed = 0u64;
        for id in &plan.remove {
            match self.store.remove(id) {
                Ok(()) | Err(StoreError::Missing(_)) => removed += 1,
                Err(e) => {
                    self.error(format!("cannot evict {}: {e}", id.short()));
                    break;
                }
            }
        }
        if removed > 0 && self.store.format() == image_tools::store::Format::Packs {
            // Removals in a pack store are tombstones: the space comes back when the packs they
            // left mostly dead are rewritten. (A file store frees it as it removes.)
            if let Err(e) = self.store.reclaim() {
                self.error(format!("cannot reclaim the evicted chunks' space: {e}"));
            }
        }
        if removed > 0 {
            tracing::info!(
                chunks = removed,
                bytes = plan.freed,
                "evicted least recently used chunks"
            );
            if let Ok(mut used) = self.last_used.lock() {
                for id in &plan.remove {
                    used.remove(id);
                }
            }
            self.forget_unplanned();
            self.recheck();
        }
        let previous = self.stats.lock().map(|s| s.pinned_over_quota).unwrap_or(0);
        if plan.pinned_over_quota > 0 && plan.pinned_over_quota != previous {
            tracing::error!(
                pinned = plan.pinned_bytes,
                quota = self.quota,
                over = plan.pinned_over_quota,
                "QUOTA TOO SMALL: the masters scheduled for this site need more than the cache quota; \
                 keeping all of them (nothing scheduled is evicted) and serving on; raise `quota`"
            );
        }
        self.stat(|s| {
            s.evicted_chunks += removed;
            s.disk_bytes = plan.after;
            s.pinned_bytes = plan.pinned_bytes;
            s.pinned_over_quota = plan.pinned_over_quota;
        });
    }

    /// Manifests of versions no longer in the plan, once their chunks start to go, are dropped.
    pub(super) fn forget_unplanned(&self) {
        let planned: HashSet<MasterRef> = self
            .plan()
            .entries
            .iter()
            .map(|e| e.master.clone())
            .collect();
        let Ok(mut known) = self.known.write() else {
            return;
        };
        let gone: Vec<MasterRef> = known
            .keys()
            .filter(|k| !planned.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            let path =
                manifests_dir(&self.cfg.data).join(format!("{}-{}.manifest", k.name, k.version));
            let _ = std::fs::remove_file(path);
            known.remove(&k);
            tracing::info!(master = %k, "no longer scheduled: forgotten");
        }
    }

    /// A chunk on our disk failed its hash: drop it, so that it is fetched again and never served.
    pub(super) fn drop_corrupt(&self, id: &ChunkId, reason: &str) {
        let _ = self.store.remove(id);
        self.dropped_corrupt(id, reason);
    }

    /// A corrupt chunk was removed (here or by the LAN's store graph): counted, and the fetcher
    /// looks again at what the masters lack.
    pub(super) fn dropped_corrupt(&self, id: &ChunkId, reason: &str) {
        tracing::warn!(chunk = %id, %reason, "corrupt chunk in the cache: dropped, will be fetched again");
        self.stat(|s| s.corrupt_dropped += 1);
        self.dirty.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub(super) fn touch(&self, id: &ChunkId) {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut used) = self.last_used.lock() {
            used.insert(*id, t);
        }
    }
}
