//! The LAN side: the store graph agents read through, and the catalogue of what they may read.
//!
//! The relay's store graph, built in [`graph`] and nowhere else:
//!
//! ```text
//! Counted                          each chunk served: statistics, least-recently-used marks
//! └─ Caching, single-flight        a corrupt copy dropped (never served); a miss fetched once
//!    │                             for all the NUCs asking at that moment, and kept
//!    ├─ local: DiskStore           the site's cache (DATA/store, files or packs)
//!    └─ upstream: OnDemand         the controller, only while the WAN is open and no night
//!                                  transfer runs (else Missing: the agent is told "not yet")
//! ```
//!
//! This is the serving path of every chunk the site's NUCs read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use image_tools::exchange::{self, Catalog};
use image_tools::store::layers::{Caching, Counted, StoreEvents};
use image_tools::store::DiskStore;
use image_tools::store::StoreSize;
use image_tools::trust::Identity;
use image_tools::wire::{Hello, MasterRef, PeerList, Role, SitePlan};
use image_tools::{ChunkId, ChunkStore, MasterName, StoreError, VerifiedChunk};

use super::fetching::is_disk_full;
use super::Relay;
use crate::cache::Gate;
use crate::tracker::Reported;

/// The store the LAN server reads.
pub(super) fn lan_store(relay: &Arc<Relay>) -> Arc<dyn ChunkStore> {
    Arc::new(graph(
        relay.store.clone(),
        OnDemand(relay.clone()),
        relay.clone(),
    ))
}

/// The relay's store graph over `local` and `upstream`, telling `events` what it serves, drops
/// and fills (the relay's statistics; tests pass their own parts).
pub(super) fn graph<U: ChunkStore>(
    local: Arc<dyn DiskStore>,
    upstream: U,
    events: Arc<dyn StoreEvents>,
) -> Counted<Caching<Arc<dyn DiskStore>, U>> {
    Counted::new(
        Caching::new(local, upstream)
            .single_flight()
            .with_events(events.clone()),
    )
    .with_events(events)
}

/// What the store graph tells the relay.
impl StoreEvents for Relay {
    fn served(&self, chunk: &VerifiedChunk) {
        self.touch(chunk.id());
        self.stat(|s| {
            s.served_chunks += 1;
            s.served_bytes += chunk.stored_len() as u64;
        });
    }

    fn dropped_corrupt(&self, id: &ChunkId, reason: &str) {
        Relay::dropped_corrupt(self, id, reason);
    }

    fn filled(&self, chunk: &VerifiedChunk) {
        self.stat(|s| {
            s.on_demand_chunks += 1;
            s.fetched_chunks += 1;
            s.fetched_bytes += chunk.stored_len() as u64;
        });
        self.dirty.store(true, Ordering::SeqCst);
    }

    fn not_kept(&self, _id: &ChunkId, error: &StoreError) {
        if is_disk_full(error) {
            self.stat(|s| s.disk_full = true);
        }
    }
}

/// The controller as the LAN's upstream: a chunk fetched at once, through the WAN's rate limit,
/// only while the WAN is open, the controller connected, and no night transfer under way (that
/// transfer brings the chunk: fetching it here too would cross the WAN twice). Otherwise
/// `Missing`. When the site's other relay crosses the WAN for it (`siblings`), that relay instead,
/// at any hour. It claims to have nothing (`has` must not cost the WAN) and is read-only.
struct OnDemand(Arc<Relay>);

fn read_only() -> StoreError {
    StoreError::Layout("the controller, seen from the LAN, is read-only".into())
}

impl ChunkStore for OnDemand {
    fn has(&self, _id: &ChunkId) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let r = &self.0;
        // The site's other relay crosses the WAN for the site: ask it, over the LAN, at any hour
        // (it answers "not yet" itself when it lacks the chunk).
        if let Some(leader) = r.leader() {
            return fetch_one_chunk(r, &leader.conn, id, false);
        }
        let now = r.clock.now();
        let open = !matches!(r.gate(now), Gate::Closed { .. });
        let busy = r.transferring.load(Ordering::SeqCst);
        let conn = r.link.borrow().clone();
        let (true, false, Some(conn)) = (open, busy, conn) else {
            return Err(StoreError::Missing(*id));
        };
        fetch_one_chunk(r, &conn, id, true)
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

/// Chunk `id` from `conn`, through the WAN's rate limit when `wan`; `Missing` when it did not come.
fn fetch_one_chunk(
    r: &Relay,
    conn: &exchange::Connection,
    id: &ChunkId,
    wan: bool,
) -> Result<VerifiedChunk, StoreError> {
    let mut got: Option<VerifiedChunk> = None;
    let fetched = r.runtime.block_on(async {
        let mut ticket = match wan {
            true => Some(r.rate.acquire(64 << 10).await),
            false => None,
        };
        conn.get_chunks(&[*id], |received, len| {
            if let Some(t) = ticket.as_mut() {
                t.arrived(len as u64);
            }
            if let exchange::Received::Chunk(c) = received {
                got = Some(c);
            }
            Ok(())
        })
        .await
    });
    match (fetched, got) {
        (Ok(()), Some(chunk)) => Ok(chunk),
        _ => Err(StoreError::Missing(*id)),
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
            .get(master)
            .map(|k| k.manifest.bytes().to_vec())
    }

    fn manifest_with_hash(&self, name: &MasterName, hash: &[u8; 32]) -> Option<Vec<u8>> {
        let known = self.0.known.read().ok()?;
        known
            .values()
            .filter(|k| k.manifest.name == *name)
            .map(|k| k.manifest.bytes())
            .find(|b| image_tools::manifest_delta::base_hash(b) == *hash)
            .map(<[u8]>::to_vec)
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

    fn hello(&self, peer: &Identity, remote: SocketAddr, hello: &Hello) {
        if peer.site != self.0.me.site || peer.role != Role::Agent {
            return;
        }
        let addr = hello
            .peer_port()
            .map(|port| SocketAddr::new(remote.ip(), port));
        if let Ok(mut t) = self.0.tracker.lock() {
            t.hello(peer.node.as_str(), addr);
        }
    }

    fn peers(&self, peer: &Identity, master: &MasterRef) -> Option<PeerList> {
        if peer.site != self.0.me.site || peer.role != Role::Agent {
            return None;
        }
        let name = master.to_string();
        let mut reported: BTreeMap<String, Reported> = self
            .0
            .agents
            .lock()
            .ok()?
            .iter()
            .map(|(node, a)| {
                let r = Reported {
                    holds: a.holding.contains(&name),
                    needs: a.needs.contains(&name),
                };
                (node.clone(), r)
            })
            .collect();
        // The plan says which seats need it before their NUCs report it: every NUC of the room
        // gets the same split from the first question on.
        for node in needing(&self.0.plan(), master) {
            reported.entry(node).or_default().needs = true;
        }
        let now = self.0.clock.now();
        let list = self
            .0
            .tracker
            .lock()
            .ok()?
            .ask(peer.node.as_str(), master, now, &reported);
        tracing::debug!(asker = %peer.node, %master, peers = list.peers.len(), stripe = list.stripe, stripes = list.stripes, "peers");
        Some(list)
    }

    fn expected(&self, _id: &ChunkId) -> Option<i64> {
        let now = self.0.clock.now();
        crate::cache::expected(self.0.gate(now), &self.0.plan(), now)
    }
}

/// The agents whose seat's room has an upcoming session of `master`, by the plan.
fn needing(plan: &SitePlan, master: &MasterRef) -> Vec<String> {
    let rooms: Vec<&str> = plan
        .rooms
        .iter()
        .filter(|r| r.sessions.iter().any(|s| s.master == *master))
        .map(|r| r.room.as_str())
        .collect();
    plan.seats
        .iter()
        .filter(|b| rooms.contains(&b.room.as_str()))
        .map(|b| b.node.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::store::conformance;
    use image_tools::store::conformance::flip_last_byte;
    use image_tools::LocalStore;

    #[test]
    fn the_seats_of_rooms_with_a_session_of_a_version_need_it() {
        use image_tools::wire::{RoomPlan, SeatBinding, SessionEntry};
        let (v1, v2) = (
            MasterRef::new("demo", "1").unwrap(),
            MasterRef::new("demo", "2").unwrap(),
        );
        let session = |master: &MasterRef| SessionEntry {
            master: master.clone(),
            start: 0,
            end: 1,
        };
        let seat = |room: &str, node: &str| SeatBinding {
            room: room.into(),
            seat: node.into(),
            node: node.into(),
        };
        let plan = SitePlan {
            rooms: vec![
                RoomPlan {
                    room: "salle-1".into(),
                    sessions: vec![session(&v1)],
                },
                RoomPlan {
                    room: "salle-2".into(),
                    sessions: vec![session(&v2)],
                },
            ],
            seats: vec![
                seat("salle-1", "nuc-1"),
                seat("salle-1", "nuc-2"),
                seat("salle-2", "nuc-3"),
            ],
            ..SitePlan::default()
        };
        assert_eq!(needing(&plan, &v1), vec!["nuc-1", "nuc-2"]);
        assert_eq!(needing(&plan, &v2), vec!["nuc-3"]);
    }

    #[test]
    fn the_relays_store_graph_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalStore::open(&dir.path().join("cache")).unwrap());
        let controller = LocalStore::open(&dir.path().join("controller")).unwrap();
        let lan = graph(local.clone(), controller, Arc::new(()));
        conformance::run(&lan, &|id| flip_last_byte(&local.path_of(id)));
    }

    #[test]
    fn the_relays_store_graph_fills_repairs_and_counts_what_it_serves() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalStore::open(&dir.path().join("cache")).unwrap());
        let controller = LocalStore::open(&dir.path().join("controller")).unwrap();
        let c = VerifiedChunk::from_raw(b"a master's chunk".repeat(300));
        controller.put(&c).unwrap();
        let lan = graph(local.clone(), &controller, Arc::new(()));
        assert_eq!(lan.get(c.id()).unwrap(), c);
        assert!(
            local.has(c.id()).unwrap(),
            "a chunk fetched on demand was not kept"
        );
        flip_last_byte(&local.path_of(c.id()));
        assert_eq!(lan.get(c.id()).unwrap(), c);
        assert_eq!(
            local.get(c.id()).unwrap(),
            c,
            "the corrupt copy was not replaced"
        );
        assert_eq!(lan.served().chunks, 2);
    }
}
