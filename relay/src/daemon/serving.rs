//! The LAN side: the store agents read through, and the catalogue of what they may read.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use image_tools::exchange::{self, Catalog};
use image_tools::store::StoreSize;
use image_tools::trust::Identity;
use image_tools::wire::{MasterRef, SitePlan};
use image_tools::{ChunkId, ChunkStore, StoreError, VerifiedChunk};

use super::fetching::is_disk_full;
use super::{key, Relay};
use crate::cache::Gate;

/// The store the LAN server reads.
pub(super) fn lan_store(relay: &Arc<Relay>) -> Arc<dyn ChunkStore> {
    Arc::new(LanStore {
        relay: relay.clone(),
        fetching: Mutex::default(),
    })
}

/// The cache as the LAN sees it: reading a chunk marks it used; a corrupt one is dropped (never
/// served); a missing one is fetched from the controller at once if the WAN is open, once
/// however many NUCs ask for it at the same time.
struct LanStore {
    relay: Arc<Relay>,
    /// The on-demand fetches under way: who asks for one of these waits for its result.
    fetching: Mutex<HashMap<ChunkId, Arc<Flight>>>,
}

/// One on-demand fetch and its result (`Some(None)`: it failed).
#[derive(Default)]
struct Flight {
    result: Mutex<Option<Option<VerifiedChunk>>>,
    done: std::sync::Condvar,
}

impl LanStore {
    fn on_demand(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let (flight, leader) = {
            let mut fetching = self.fetching.lock().map_err(|_| StoreError::Missing(*id))?;
            match fetching.get(id) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight::default());
                    fetching.insert(*id, f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            let mut result = flight.result.lock().map_err(|_| StoreError::Missing(*id))?;
            while result.is_none() {
                result = flight
                    .done
                    .wait(result)
                    .map_err(|_| StoreError::Missing(*id))?;
            }
            return result.clone().flatten().ok_or(StoreError::Missing(*id));
        }
        let got = self.fetch_once(id);
        if let Ok(mut result) = flight.result.lock() {
            *result = Some(got.as_ref().ok().cloned());
        }
        flight.done.notify_all();
        if let Ok(mut fetching) = self.fetching.lock() {
            fetching.remove(id);
        }
        got
    }

    fn fetch_once(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let r = &self.relay;
        let now = r.clock.now();
        let open = !matches!(r.gate(now), Gate::Closed { .. });
        // During a transfer the chunk is on its way already: fetching it here too would cross the
        // WAN twice. The agent is told "not yet" and asks again.
        let busy = r.transferring.load(Ordering::SeqCst);
        let conn = r.link.borrow().clone();
        let (true, false, Some(conn)) = (open, busy, conn) else {
            return Err(StoreError::Missing(*id));
        };
        let mut got: Option<VerifiedChunk> = None;
        let fetched = r.runtime.block_on(async {
            let mut ticket = r.rate.acquire(64 << 10).await;
            conn.get_chunks(&[*id], |received, len| {
                ticket.arrived(len as u64);
                if let exchange::Received::Chunk(c) = received {
                    got = Some(c);
                }
                Ok(())
            })
            .await
        });
        match (fetched, got) {
            (Ok(()), Some(chunk)) => {
                // Serving does not depend on caching: a full disk still passes the chunk on.
                if let Err(e) = r.store.put(&chunk) {
                    tracing::warn!(chunk = %id.short(), error = %e, "cannot cache a chunk fetched on demand");
                    if is_disk_full(&e) {
                        r.stat(|s| s.disk_full = true);
                    }
                }
                r.stat(|s| {
                    s.on_demand_chunks += 1;
                    s.fetched_chunks += 1;
                    s.fetched_bytes += chunk.stored_len() as u64;
                });
                r.dirty.store(true, Ordering::SeqCst);
                Ok(chunk)
            }
            _ => Err(StoreError::Missing(*id)),
        }
    }
}

impl ChunkStore for LanStore {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.relay.store.has(id)
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let r = &self.relay;
        let chunk = match r.store.get(id) {
            Ok(c) => Ok(c),
            Err(StoreError::Invalid { reason, .. }) => {
                r.drop_corrupt(id, &reason.to_string());
                self.on_demand(id)
            }
            Err(StoreError::Missing(_)) => self.on_demand(id),
            Err(e) => Err(e),
        }?;
        r.touch(id);
        r.stat(|s| {
            s.served_chunks += 1;
            s.served_bytes += chunk.stored_len() as u64;
        });
        Ok(chunk)
    }

    fn put(&self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        self.relay.store.put(chunk)
    }

    fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.relay.store.remove(id)
    }

    fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        self.relay.store.ids()
    }

    fn size(&self) -> Result<StoreSize, StoreError> {
        self.relay.store.size()
    }
}

/// What the LAN may read: the master versions in the site's plan, to the site's own nodes.
pub(super) struct LanCatalog(pub(super) Arc<Relay>);

impl Catalog for LanCatalog {
    fn manifest(&self, master: &MasterRef) -> Option<Vec<u8>> {
        self.0
            .known
            .read()
            .ok()?
            .get(&key(master))
            .map(|k| k.manifest.bytes().to_vec())
    }

    fn allowed(&self, peer: &Identity) -> Vec<MasterRef> {
        if peer.site != self.0.me.site {
            return Vec::new();
        }
        self.0
            .plan()
            .entries
            .into_iter()
            .map(|e| e.master)
            .collect()
    }

    fn plan(&self, peer: &Identity) -> SitePlan {
        if peer.site != self.0.me.site {
            return SitePlan::default();
        }
        self.0.plan()
    }

    fn expected(&self, _id: &ChunkId) -> Option<i64> {
        let now = self.0.clock.now();
        match self.0.gate(now) {
            Gate::Closed { next } => next,
            _ => Some(now),
        }
    }
}
