//! The agent's peer server: the chunk-exchange protocol (`exchange::serve_with`) for the other
//! agents of its site, from what it holds, within an upload cap.
//!
//! What it offers ([`Offer`], kept up to date by the daemon): the master versions it holds in its
//! slots and the one it is fetching, each with its signed manifest (which is what the exchange
//! server's rights are computed from: a peer may read only chunks of those versions), and where
//! each chunk is. A chunk is read from the fetch cache (its stored form, checked by the store) or
//! from a slot image at the chunk's offset in the manifest, hashed, and compressed before it is
//! sent ([`PeerStore::get`]): no byte leaves unverified. A `Has` is answered from memory
//! ([`Offer::has`]): the slot places and the chunks committed in the fetch cache ([`Offer::cached`],
//! filled at start from the store, by the swarm fetch's writer once a chunk is committed, and
//! emptied when the cache is). Every NUC asks its peers every second what they took in since it
//! last asked (`HasSince`, answered from the offer's log, [`Offer::holdings`]): only new chunk ids
//! travel. (Asking `Has` about every chunk still wanted, every second, of 19 peers sent about 1,500
//! ids to each: a file lookup per chunk per question was the largest cost of a room fill, then the
//! ids themselves.) `Has` is still answered, for agents that do not ask `HasSince`. A chunk said
//! to be held and then missing on disk is answered as lacking on `GetChunks`. While a session runs on the NUC it offers
//! nothing, unless the configuration allows it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use image_tools::chunk::MAX_CHUNK_LEN;
use image_tools::exchange::Catalog;
use image_tools::store::DiskStore;
use image_tools::store::StoreSize;
use image_tools::trust::Identity;
use image_tools::wire::{self, Holdings, MasterRef, Role};
use image_tools::{ChunkId, ChunkStore, SiteId, StoreError, VerifiedChunk};

/// Where a chunk of a slot image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub image: Arc<PathBuf>,
    pub offset: u64,
    pub len: u32,
}

/// What the agent offers its peers now.
#[derive(Debug, Default)]
pub struct Offer {
    /// Off while a session runs (unless allowed) or when the NUC does not share.
    pub open: bool,
    /// The versions in its slots (complete, verified images), with their signed manifests.
    pub held: BTreeMap<MasterRef, Arc<Vec<u8>>>,
    /// The version being fetched (its chunks are in the fetch cache), with its manifest.
    pub fetching: BTreeMap<MasterRef, Arc<Vec<u8>>>,
    /// Where each chunk of the slot images is.
    pub places: HashMap<ChunkId, Place>,
    /// The chunks committed (whole, verified, durable) in the fetch cache.
    pub cached: HashSet<ChunkId>,
    /// `cached` in the order the chunks came: what `HasSince` reads from a position on.
    log: Vec<ChunkId>,
    /// Bumped when chunks leave the cache (positions in `log` change).
    epoch: u64,
}

impl Offer {
    /// Whether the NUC holds the chunk, as its peers are told (`Has`): from memory only. The chunk
    /// is still read and checked from disk before it is sent.
    pub fn has(&self, id: &ChunkId) -> bool {
        self.places.contains_key(id) || self.cached.contains(id)
    }

    /// The writer committed these chunks to the fetch cache.
    pub fn committed(&mut self, ids: impl IntoIterator<Item = ChunkId>) {
        for id in ids {
            if self.cached.insert(id) {
                self.log.push(id);
            }
        }
    }

    /// These chunks leave the fetch cache (said before they are removed from disk).
    pub fn evicted<'a>(&mut self, ids: impl IntoIterator<Item = &'a ChunkId>) {
        let mut gone = false;
        for id in ids {
            gone |= self.cached.remove(id);
        }
        if gone {
            let cached = &self.cached;
            self.log.retain(|id| cached.contains(id));
            self.epoch += 1;
        }
    }

    /// The answer to a peer's `HasSince` for `master`: every chunk when a slot holds the version,
    /// else the chunks committed to the cache since position `since` of the log `epoch` (from the
    /// start if the log changed since), at most [`wire::MAX_IDS`]. Chunks of other versions in
    /// the cache are left out by the exchange server (a peer learns only ids it may read).
    pub fn holdings(&self, master: &MasterRef, epoch: u64, since: u64) -> Holdings {
        if self.held.contains_key(master) {
            return Holdings {
                complete: true,
                epoch: self.epoch,
                ids: Vec::new(),
                next: 0,
            };
        }
        if !self.fetching.contains_key(master) {
            return Holdings {
                epoch: wire::NOT_OFFERED_EPOCH,
                ..Holdings::default()
            };
        }
        let from = if epoch == self.epoch {
            (since as usize).min(self.log.len())
        } else {
            0
        };
        let to = (from + wire::MAX_IDS).min(self.log.len());
        Holdings {
            complete: false,
            epoch: self.epoch,
            ids: self.log[from..to].to_vec(),
            next: to as u64,
        }
    }

    fn manifest(&self, master: &MasterRef) -> Option<&Arc<Vec<u8>>> {
        self.held.get(master).or_else(|| self.fetching.get(master))
    }
}

/// The offer, shared between the daemon (which changes it) and the server (which reads it).
pub type SharedOffer = Arc<RwLock<Offer>>;

/// What a peer may read: the offered versions, to agents of our site, while the offer is open.
#[derive(Debug)]
pub struct PeerCatalog {
    pub site: SiteId,
    pub offer: SharedOffer,
}

impl Catalog for PeerCatalog {
    fn manifest(&self, master: &MasterRef) -> Option<Vec<u8>> {
        let offer = self.offer.read().ok()?;
        offer.manifest(master).map(|b| b.as_ref().clone())
    }

    fn allowed(&self, peer: &Identity) -> Vec<MasterRef> {
        if peer.role != Role::Agent || peer.site != self.site {
            return Vec::new();
        }
        match self.offer.read() {
            Ok(o) if o.open => o.held.keys().chain(o.fetching.keys()).cloned().collect(),
            _ => Vec::new(),
        }
    }

    fn holdings_since(&self, master: &MasterRef, epoch: u64, since: u64) -> Option<Holdings> {
        let offer = self.offer.read().ok()?;
        Some(offer.holdings(master, epoch, since))
    }

    /// A NUC has no plan to give: its site's plan comes from the relay.
    fn plan(&self, _peer: &Identity) -> image_tools::wire::SitePlan {
        image_tools::wire::SitePlan::default()
    }
}

/// The chunks a peer reads: the fetch cache, then the slot images; read-only. Every chunk sent
/// is paid for in the upload cap first.
#[derive(Debug)]
pub struct PeerStore {
    pub cache: Arc<dyn DiskStore>,
    pub offer: SharedOffer,
    /// The upload cap in force (changed by the site's plan while serving).
    pub cap: Arc<super::settings::UploadCap>,
    pub runtime: tokio::runtime::Handle,
}

fn read_only() -> StoreError {
    StoreError::Layout("a NUC's peer server is read-only".into())
}

impl PeerStore {
    fn place(&self, id: &ChunkId) -> Option<Place> {
        let offer = self.offer.read().ok()?;
        offer.places.get(id).cloned()
    }

    /// The chunk read from its place in a slot image, hashed (and compressed) here.
    fn read_image(&self, id: &ChunkId, place: &Place) -> Result<VerifiedChunk, StoreError> {
        let io = |source| StoreError::Io {
            path: place.image.as_ref().clone(),
            source,
        };
        if place.len > MAX_CHUNK_LEN {
            return Err(StoreError::Missing(*id));
        }
        let file = File::open(place.image.as_ref()).map_err(io)?;
        let mut raw = vec![0u8; place.len as usize];
        file.read_exact_at(&mut raw, place.offset).map_err(io)?;
        let chunk = VerifiedChunk::from_raw(raw);
        if chunk.id() != id {
            tracing::warn!(chunk = %id.short(), image = %place.image.display(), offset = place.offset, "a slot image does not hold the chunk its manifest says: not sent");
            return Err(StoreError::Missing(*id));
        }
        Ok(chunk)
    }

    fn pay(&self, chunk: &VerifiedChunk) {
        if let Some(rate) = self.cap.limit() {
            let bytes = u64::from(chunk.stored_len()) + 64;
            self.runtime.block_on(async {
                let mut ticket = rate.acquire(bytes).await;
                ticket.arrived(bytes);
            });
        }
    }
}

impl ChunkStore for PeerStore {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.offer.read().is_ok_and(|o| o.has(id)))
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let chunk = match self.cache.get(id) {
            Ok(c) => c,
            Err(StoreError::Missing(_)) | Err(StoreError::Invalid { .. }) => match self.place(id) {
                Some(place) => self.read_image(id, &place)?,
                None => return Err(StoreError::Missing(*id)),
            },
            Err(e) => return Err(e),
        };
        self.pay(&chunk);
        Ok(chunk)
    }

    fn put(&self, _chunk: &VerifiedChunk) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn remove(&self, _id: &ChunkId) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        Err(read_only())
    }

    fn size(&self) -> Result<StoreSize, StoreError> {
        Err(read_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::LocalStore;

    #[test]
    fn a_chunk_is_read_from_its_place_in_an_image_and_checked_before_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
        let image = dir.path().join("master.img");
        let (a, b) = (b"first chunk ".repeat(100), b"second chunk".repeat(100));
        std::fs::write(&image, [a.clone(), b.clone()].concat()).unwrap();
        let (ca, cb) = (VerifiedChunk::from_raw(a), VerifiedChunk::from_raw(b));
        let image = Arc::new(image);
        let offer: SharedOffer = Arc::default();
        {
            let mut o = offer.write().unwrap();
            o.places.insert(
                *ca.id(),
                Place {
                    image: image.clone(),
                    offset: 0,
                    len: ca.len(),
                },
            );
            o.places.insert(
                *cb.id(),
                Place {
                    image: image.clone(),
                    offset: u64::from(ca.len()),
                    len: cb.len(),
                },
            );
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = PeerStore {
            cache,
            offer,
            cap: Arc::new(crate::peers::settings::UploadCap::new(0)),
            runtime: rt.handle().clone(),
        };
        assert_eq!(store.get(ca.id()).unwrap(), ca);
        assert!(store.has(cb.id()).unwrap());
        // The image changed under it (a disk going bad): the chunk is not sent.
        let mut bytes = std::fs::read(image.as_ref()).unwrap();
        bytes[1300] ^= 1;
        std::fs::write(image.as_ref(), bytes).unwrap();
        assert!(matches!(store.get(cb.id()), Err(StoreError::Missing(_))));
        let unknown = ChunkId::of(b"nothing");
        assert!(!store.has(&unknown).unwrap());
    }

    fn cache_store(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> PeerStore {
        PeerStore {
            cache: Arc::new(LocalStore::open(&dir.join("store")).unwrap()),
            offer: Arc::default(),
            cap: Arc::new(crate::peers::settings::UploadCap::new(0)),
            runtime: rt.handle().clone(),
        }
    }

    #[test]
    fn has_is_answered_from_what_the_writer_announced_not_from_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = cache_store(dir.path(), &rt);
        let chunk = VerifiedChunk::from_raw(b"a cached chunk".repeat(50));
        // On disk, not announced yet (the writer has not committed it): not offered.
        store.cache.put(&chunk).unwrap();
        assert!(!store.has(chunk.id()).unwrap());
        store.offer.write().unwrap().committed([*chunk.id()]);
        assert!(store.has(chunk.id()).unwrap());
        assert_eq!(store.get(chunk.id()).unwrap(), chunk);
        // Evicted: no longer offered.
        store.offer.write().unwrap().evicted([chunk.id()]);
        assert!(!store.has(chunk.id()).unwrap());
    }

    #[test]
    fn a_chunk_said_held_but_gone_from_disk_is_lacking_when_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = cache_store(dir.path(), &rt);
        let chunk = VerifiedChunk::from_raw(b"soon gone".repeat(50));
        store.cache.put(&chunk).unwrap();
        store.offer.write().unwrap().committed([*chunk.id()]);
        store.cache.remove(chunk.id()).unwrap();
        assert!(store.has(chunk.id()).unwrap());
        assert!(matches!(store.get(chunk.id()), Err(StoreError::Missing(_))));
    }

    #[test]
    fn a_peer_learns_only_what_came_since_it_last_asked_and_starts_again_after_an_eviction() {
        let mut offer = Offer::default();
        let m = MasterRef::new("demo", "1").unwrap();
        let (a, b, c) = (ChunkId::of(b"a"), ChunkId::of(b"b"), ChunkId::of(b"c"));
        // Not offered: nothing, under the epoch that says so.
        let h = offer.holdings(&m, 0, 0);
        assert_eq!((h.epoch, h.ids.len()), (wire::NOT_OFFERED_EPOCH, 0));
        offer.fetching.insert(m.clone(), Arc::default());
        offer.committed([a, b]);
        let first = offer.holdings(&m, 0, 0);
        assert_eq!((first.ids.clone(), first.next), (vec![a, b], 2));
        // Committed again (a restart's listing): not news.
        offer.committed([b, c]);
        let second = offer.holdings(&m, first.epoch, first.next);
        assert_eq!((second.ids, second.next), (vec![c], 3));
        assert!(offer.holdings(&m, first.epoch, 3).ids.is_empty());
        // Chunks left the cache: the log starts again under a new epoch, from its start.
        offer.evicted([&a]);
        let after = offer.holdings(&m, first.epoch, 3);
        assert_ne!(after.epoch, first.epoch);
        assert_eq!(after.ids, vec![b, c]);
        // In a slot: the whole version.
        offer.held.insert(m.clone(), Arc::default());
        assert!(offer.holdings(&m, after.epoch, after.next).complete);
    }

    #[test]
    fn an_offer_holds_a_chunk_from_a_slot_place_or_the_cache() {
        let mut offer = Offer::default();
        let (a, b, c) = (ChunkId::of(b"a"), ChunkId::of(b"b"), ChunkId::of(b"c"));
        offer.places.insert(
            a,
            Place {
                image: Arc::new(PathBuf::from("/slot")),
                offset: 0,
                len: 1,
            },
        );
        offer.committed([b]);
        assert!(offer.has(&a) && offer.has(&b) && !offer.has(&c));
        offer.evicted([&a, &b]);
        // A slot place is not the cache's: eviction does not take it away.
        assert!(offer.has(&a) && !offer.has(&b));
    }
}
