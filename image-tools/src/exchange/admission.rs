//! What a server admits at once (`Limits`) and what its connections share: admissions, send
//! windows split among peers, the chunk lists of the masters they may read.

use super::*;

/// What a server admits at once, so that its memory stays bounded whoever connects, before and
/// after authentication (see "Limits" in `docs/PROTOCOL.md` for what each costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections with a certificate.
    pub peers: usize,
    /// Connections with the same certificate identity.
    pub per_node: usize,
    /// Connections without a certificate (they may only enrol).
    pub unenrolled: usize,
    /// Handshakes under way; connection attempts beyond are refused.
    pub handshakes: usize,
    /// Chunk frames read from the store and not yet handed to QUIC, whole server.
    pub readers: usize,
    /// The same, per connection: a peer that reads slowly holds at most these.
    pub readers_per_peer: usize,
    /// Manifest replies being sent at once (each is a copy of the manifest), whole server.
    pub manifests: usize,
    /// Bytes of requests received and being answered, whole server (a connection holds at most
    /// one largest request's worth).
    pub request_bytes: usize,
    /// What all connections may have queued or unacknowledged: each one's QUIC send window is an
    /// equal share, within [`SHARE_MIN`] and [`SHARE_MAX`].
    pub send_budget: u64,
}

impl Limits {
    /// A relay: a site's NUCs on its LAN, within 64 MiB.
    pub const RELAY: Limits = Limits {
        peers: 256,
        per_node: 4,
        unenrolled: 32,
        handshakes: 64,
        readers: 16,
        readers_per_peer: 4,
        manifests: 2,
        // Twice what one identity can hold (`per_node` connections of one largest request): a
        // single enrolled peer cannot keep the others' requests waiting.
        request_bytes: 8 << 20,
        send_budget: 8 << 20,
    };
    /// The controller: every site's relay, within 256 MiB.
    pub const CONTROLLER: Limits = Limits {
        peers: 1024,
        per_node: 8,
        unenrolled: 64,
        handshakes: 128,
        readers: 32,
        readers_per_peer: 4,
        manifests: 4,
        request_bytes: 16 << 20,
        send_budget: 64 << 20,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::RELAY
    }
}

/// What the connections of one server share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) limits: Limits,
    pub(super) lists: ChunkLists,
    pub(super) sends: SendShares,
    pub(super) admitted: Mutex<Admissions>,
    /// Chunk frames in memory, whole server ([`Limits::readers`]).
    pub(super) readers: Arc<Semaphore>,
    pub(super) manifests: Arc<Semaphore>,
    pub(super) request_bytes: Arc<Semaphore>,
}

impl Shared {
    pub(super) fn new(limits: Limits) -> Shared {
        Shared {
            limits,
            lists: ChunkLists::default(),
            sends: SendShares::default(),
            admitted: Mutex::default(),
            readers: Arc::new(Semaphore::new(limits.readers)),
            manifests: Arc::new(Semaphore::new(limits.manifests)),
            request_bytes: Arc::new(Semaphore::new(limits.request_bytes)),
        }
    }
}

/// How many connections of each kind a server holds.
#[derive(Debug, Default)]
pub(super) struct Admissions {
    pub(super) handshakes: usize,
    pub(super) unenrolled: usize,
    pub(super) peers: usize,
    pub(super) per_node: HashMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Slot {
    Handshake,
    Unenrolled,
    /// An enrolled peer, by its certificate identity.
    Peer(String),
}

/// A place taken within [`Limits`]; given back when dropped.
#[derive(Debug)]
pub(super) struct Admitted {
    pub(super) shared: Arc<Shared>,
    pub(super) slot: Slot,
}

impl Admitted {
    /// A place of this kind, if there is one left.
    pub(super) fn take(shared: &Arc<Shared>, slot: Slot) -> Option<Admitted> {
        let limits = &shared.limits;
        let mut a = shared.admitted.lock().ok()?;
        match &slot {
            Slot::Handshake if a.handshakes < limits.handshakes => a.handshakes += 1,
            Slot::Unenrolled if a.unenrolled < limits.unenrolled => a.unenrolled += 1,
            Slot::Peer(node) if a.peers < limits.peers => {
                let n = a.per_node.entry(node.clone()).or_default();
                if *n >= limits.per_node {
                    return None;
                }
                *n += 1;
                a.peers += 1;
            }
            _ => return None,
        }
        Some(Admitted {
            shared: shared.clone(),
            slot,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Ok(mut a) = self.shared.admitted.lock() else {
            return;
        };
        match &self.slot {
            Slot::Handshake => a.handshakes -= 1,
            Slot::Unenrolled => a.unenrolled -= 1,
            Slot::Peer(node) => {
                a.peers -= 1;
                if let Some(n) = a.per_node.get_mut(node) {
                    *n -= 1;
                    if *n == 0 {
                        a.per_node.remove(node);
                    }
                }
            }
        }
    }
}

/// A lone peer's send window: fills 400 Mbit/s at 40 ms round trip.
pub(super) const SHARE_MAX: u64 = 2 << 20;
/// The least share, whatever the number of peers: 64 KiB fills a 1 Gbit/s LAN (a round trip well
/// under a millisecond). (256 peers of a relay at this share are 16 MiB, twice its budget: the
/// share does not go lower, so that every peer can still be served.)
pub(super) const SHARE_MIN: u64 = 64 << 10;

/// The live connections of enrolled peers of a server, whose send windows share
/// [`Limits::send_budget`]. 20 NUCs fetching from a relay over a LAN that is the bottleneck fill
/// their windows; this keeps the relay's memory bounded, and a share of 400 KiB (a relay's 8 MiB
/// for 20 NUCs) still fills a 1 Gbit/s LAN.
#[derive(Debug, Default)]
pub(super) struct SendShares(Mutex<Vec<quinn::Connection>>);

impl SendShares {
    pub(super) fn join(shared: &Arc<Shared>, conn: &quinn::Connection) -> SendShare {
        if let Ok(mut conns) = shared.sends.0.lock() {
            conns.push(conn.clone());
            Self::rebalance(shared.limits.send_budget, &conns);
        }
        SendShare {
            shared: shared.clone(),
            id: conn.stable_id(),
        }
    }

    pub(super) fn rebalance(budget: u64, conns: &[quinn::Connection]) {
        let share = (budget / conns.len().max(1) as u64).clamp(SHARE_MIN, SHARE_MAX);
        for c in conns {
            c.set_send_window(share);
        }
    }
}

/// A connection's place in [`SendShares`]; leaving gives its share back to the others.
pub(super) struct SendShare {
    pub(super) shared: Arc<Shared>,
    pub(super) id: usize,
}

impl Drop for SendShare {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.shared.sends.0.lock() {
            conns.retain(|c| c.stable_id() != self.id);
            SendShares::rebalance(self.shared.limits.send_budget, &conns);
        }
    }
}

/// The sorted chunk ids of each master version some connection of a server is allowed to read,
/// built once and shared: a 60 GB master has about a million chunks (32 MB of ids), and a room of
/// 20 NUCs must not cost the relay 20 copies. A list lives as long as a connection holds it.
#[derive(Debug, Default)]
pub(super) struct ChunkLists(pub(super) Mutex<HashMap<MasterRef, Weak<Vec<ChunkId>>>>);

/// The sorted, distinct chunk ids of one master version. (A `Vec` inside the `Arc`: a `Weak` to an
/// `Arc<[T]>` would keep the ids' memory allocated after the last connection let go.)
pub(super) type ChunkList = Arc<Vec<ChunkId>>;

impl ChunkLists {
    /// The chunk ids of `master`, sorted; `None` if the catalog has no readable manifest for it.
    pub(super) fn get(&self, catalog: &dyn Catalog, master: &MasterRef) -> Option<ChunkList> {
        let mut lists = self.0.lock().ok()?;
        if let Some(list) = lists.get(master).and_then(Weak::upgrade) {
            return Some(list);
        }
        let bytes = catalog.manifest(master)?;
        let unverified = Manifest::decode_unverified(&bytes).ok()?;
        let mut ids: Vec<ChunkId> = unverified.manifest.chunks().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let list: ChunkList = Arc::new(ids);
        lists.retain(|_, weak| weak.strong_count() > 0);
        lists.insert(master.clone(), Arc::downgrade(&list));
        Some(list)
    }
}
