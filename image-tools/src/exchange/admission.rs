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
    /// Chunk requests answered at once, whole server; one beyond is refused at once with
    /// `ErrorCode::Busy` (0: no limit, every request is answered, sharing the upload). A NUC
    /// serving its room at a low upload cap answers a few requests at a good pace rather than
    /// twenty at a crawl, so that the others fetch from those who just got the chunks.
    pub chunk_requests: usize,
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
        chunk_requests: 0,
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
        chunk_requests: 0,
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
    /// Chunk requests being answered ([`Limits::chunk_requests`]; none: no limit).
    pub(super) chunk_requests: Option<Arc<Semaphore>>,
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
            chunk_requests: (limits.chunk_requests > 0)
                .then(|| Arc::new(Semaphore::new(limits.chunk_requests))),
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
/// [`Limits::send_budget`] in proportion to their round trips ([`shares`]). 20 NUCs fetching from
/// a relay over a LAN that is the bottleneck fill their windows; this keeps the relay's memory
/// bounded, and a share of 400 KiB (a relay's 8 MiB for 20 NUCs) still fills a 1 Gbit/s LAN. At
/// the controller, a satellite site's relay (600 ms) gets the window its link needs, not the same
/// as a wired site's (30 ms).
#[derive(Debug, Default)]
pub(super) struct SendShares(Mutex<Vec<quinn::Connection>>);

/// How often the shares follow the connections' round trips (they are also set again whenever a
/// connection comes or goes).
pub(super) const REBALANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

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
        let rtts: Vec<std::time::Duration> = conns.iter().map(quinn::Connection::rtt).collect();
        for (c, share) in conns.iter().zip(shares(budget, &rtts)) {
            c.set_send_window(share);
        }
    }

    /// Sets the shares again from the round trips measured now.
    pub(super) fn refresh(shared: &Shared) {
        if let Ok(conns) = shared.sends.0.lock() {
            Self::rebalance(shared.limits.send_budget, &conns);
        }
    }
}

/// Each connection's send window, in the order of `rtts`: `budget` split in proportion to the
/// round trips (what a link needs in flight grows with its round trip), each within
/// [`SHARE_MIN`] and [`SHARE_MAX`]; what a connection cannot use above [`SHARE_MAX`] goes to the
/// others. Round trips under a millisecond count as one. The shares add up to at most `budget`,
/// unless the floors alone exceed it (more connections than `budget / SHARE_MIN`).
pub(super) fn shares(budget: u64, rtts: &[std::time::Duration]) -> Vec<u64> {
    let weight: Vec<u128> = rtts.iter().map(|r| r.as_micros().max(1_000)).collect();
    let mut share = vec![0u64; rtts.len()];
    let mut open: Vec<usize> = (0..rtts.len()).collect();
    let mut left = u128::from(budget);
    // Water-filling: those whose proportional share is above the ceiling get the ceiling, and
    // the rest is split again among the others, until nobody is above it.
    loop {
        let total: u128 = open.iter().map(|&i| weight[i]).sum::<u128>().max(1);
        let (capped, rest): (Vec<usize>, Vec<usize>) = open
            .iter()
            .partition(|&&i| left * weight[i] / total >= u128::from(SHARE_MAX));
        if capped.is_empty() {
            for &i in &rest {
                let s = u64::try_from(left * weight[i] / total).unwrap_or(SHARE_MAX);
                share[i] = s.clamp(SHARE_MIN, SHARE_MAX);
            }
            return share;
        }
        for &i in &capped {
            share[i] = SHARE_MAX;
            left = left.saturating_sub(u128::from(SHARE_MAX));
        }
        open = rest;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn a_far_link_gets_the_window_its_round_trip_needs_where_an_equal_share_would_starve_it() {
        // The controller with 200 relays fetching: 190 wired sites (30 ms), 10 satellite ones
        // (600 ms). An equal share (335 KiB) would let a satellite relay move 4.5 Mbit/s at most.
        let budget = Limits::CONTROLLER.send_budget;
        let mut rtts = vec![ms(30); 190];
        rtts.extend(vec![ms(600); 10]);
        let s = shares(budget, &rtts);
        let satellite_mbit = s[199] as f64 * 8.0 / 0.6 / 1e6;
        assert!(satellite_mbit >= 20.0, "{satellite_mbit} Mbit/s");
        // A wired site still fills 20 Mbit/s at its round trip.
        let wired_mbit = s[0] as f64 * 8.0 / 0.03 / 1e6;
        assert!(wired_mbit >= 20.0, "{wired_mbit} Mbit/s");
        assert!(s.iter().sum::<u64>() <= budget);
    }

    #[test]
    fn equal_round_trips_share_equally_within_the_floor_and_the_ceiling() {
        let s = shares(8 << 20, &[ms(1); 20]);
        assert!(s.iter().all(|&x| x == s[0]));
        assert_eq!(s[0], (8 << 20) / 20);
        // A lone peer gets the ceiling, a crowd the floor.
        assert_eq!(shares(64 << 20, &[ms(5)]), vec![SHARE_MAX]);
        assert!(shares(8 << 20, &[ms(1); 256])
            .iter()
            .all(|&x| x == SHARE_MIN));
        assert!(shares(8 << 20, &[]).is_empty());
    }

    #[test]
    fn what_a_capped_connection_cannot_use_goes_to_the_others() {
        // One connection at 2 s round trip would take almost all by proportion: it is capped, and
        // the four at 10 ms share the rest equally (not the few KiB their proportion gave).
        let s = shares(4 << 20, &[ms(2000), ms(10), ms(10), ms(10), ms(10)]);
        assert_eq!(s[0], SHARE_MAX);
        assert_eq!(s[1], ((4 << 20) - SHARE_MAX) / 4);
        assert!(s.iter().sum::<u64>() <= 4 << 20);
        // Sub-millisecond round trips count as one millisecond.
        assert_eq!(
            shares(1 << 20, &[Duration::from_micros(10), ms(1)]),
            vec![512 << 10, 512 << 10]
        );
    }
}
