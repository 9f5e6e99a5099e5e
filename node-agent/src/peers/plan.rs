//! Which chunk from whom, pure: [`Swarm`] decides, for the chunks a NUC still wants of one master
//! version, which to ask the relay for and which each peer, from what the peers said they hold
//! and the NUC's stripe; the shell (`peers::fetch`) asks, and tells it what came back. Time is an
//! input (`now`: time since any fixed origin).
//!
//! The rules, in order, for each wanted chunk not already asked for:
//! 1. a live peer that said it holds it, and has room for a request, gets it (the least busy
//!    first);
//! 2. otherwise, unless the relay is lost, the relay gets it if it is in the NUC's stripe, if no
//!    live peer is left, or if the NUC fetching that part from the relay (its stripe's owner,
//!    [`Swarm::set_owners`]) is gone; with a live owner, only once the peers have brought
//!    nothing new for [`LONG_STALL`] times `patience` (on a full LAN, news can take seconds: asking
//!    the relay for another NUC's part then only sends the relay's port a second copy). Without
//!    owners known, once the peers have brought nothing new for `patience`;
//! 3. otherwise it waits for a peer to have it.
//!
//! Ties between equally busy holders are broken differently on each NUC (by its stripe), so that
//! a room does not converge on one peer. A peer answers only a few requests at once
//! ([`PEER_ANSWERS`]) and turns the rest away: a turned-away request is wanted again, the peer
//! is still taken to hold its chunks but is left alone for [`BUSY_BACKOFF`], so the chunks come
//! from whoever else got them meanwhile (the room passes a chunk on like a tree, instead of
//! twenty NUCs queueing at the one that got it first).
//!
//! A peer that sent a chunk that is not what its id says is dropped for this version (and named
//! in [`Swarm::liars`]); one whose connection failed is dropped without blame. What a dropped
//! peer was asked for is wanted again.
//!
//! When the relay is lost (it failed a request or the tracker's question), nothing more is asked
//! of it: the NUC goes on with its live peers, and [`Swarm::stuck`] says when to give up (no peer
//! left, or none brought anything for `patience`).

use std::time::Duration;

use image_tools::ChunkId;

/// Chunks in one request.
pub const BATCH: usize = 32;
/// Requests under way to one peer at once.
pub const PEER_REQUESTS: usize = 2;
/// Requests under way to the relay at once.
pub const RELAY_REQUESTS: usize = 4;
/// Chunk requests a NUC's peer server answers at once (`Limits::chunk_requests`); the next is
/// turned away ("busy") and the asker tries another holder.
pub const PEER_ANSWERS: usize = 4;
/// How long a peer that turned a request away is left alone.
pub const BUSY_BACKOFF: Duration = Duration::from_secs(1);
/// With its owner alive, another NUC's part is asked of the relay only after the peers brought
/// nothing for this many times `patience`.
pub const LONG_STALL: u32 = 6;

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Relay,
    /// A peer, by its index in the swarm.
    Peer(usize),
}

/// Ask `source` for these chunks (indices into the swarm's list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub source: Source,
    pub chunks: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Wanted,
    Asked,
    Done,
}

#[derive(Debug)]
struct Peer {
    node: String,
    /// What it said it holds, per chunk.
    has: Vec<bool>,
    dropped: bool,
    lied: bool,
    requests: usize,
    /// Turned a request away: not asked before then.
    busy_until: Duration,
}

/// The chunks one NUC still wants of one version, and who may give them.
#[derive(Debug)]
pub struct Swarm {
    chunks: Vec<ChunkId>,
    /// Each chunk's position among the version's distinct chunks (what stripes cut).
    positions: Vec<usize>,
    /// The version's distinct chunks.
    total: usize,
    state: Vec<State>,
    left: usize,
    stripe: (usize, usize),
    /// Each stripe's owner (the NUC fetching it from the relay): a peer, or `None` for this NUC;
    /// empty when not known.
    owners: Vec<Option<usize>>,
    peers: Vec<Peer>,
    relay_requests: usize,
    /// The relay failed: nothing more is asked of it.
    relay_lost: bool,
    patience: Duration,
    /// The last time a peer brought something (a chunk, or news that it holds more).
    progress: Duration,
    /// Chunks asked of the relay outside the NUC's stripe (no peer left, or none brought
    /// anything for `patience`): what the relay's port carries beyond one copy.
    pub beyond_stripe: usize,
}

impl Swarm {
    /// `wanted`: each chunk with its position among the version's `total` distinct chunks.
    pub fn new(
        wanted: Vec<(ChunkId, usize)>,
        total: usize,
        now: Duration,
        patience: Duration,
    ) -> Swarm {
        let (chunks, positions): (Vec<_>, Vec<_>) = wanted.into_iter().unzip();
        let n = chunks.len();
        Swarm {
            chunks,
            positions,
            total: total.max(1),
            state: vec![State::Wanted; n],
            left: n,
            stripe: (0, 1),
            owners: Vec::new(),
            peers: Vec::new(),
            relay_requests: 0,
            relay_lost: false,
            patience,
            progress: now,
            beyond_stripe: 0,
        }
    }

    pub fn id(&self, chunk: usize) -> ChunkId {
        self.chunks[chunk]
    }

    pub fn is_done(&self) -> bool {
        self.left == 0
    }

    /// The chunks not received yet that `peer` has not said it holds: what to ask it about (what
    /// it holds stays held until a request says otherwise).
    pub fn unknown_to(&self, peer: usize) -> Vec<usize> {
        let p = &self.peers[peer];
        (0..self.chunks.len())
            .filter(|&i| self.state[i] != State::Done && !p.has[i])
            .collect()
    }

    /// The NUC's stripe, from the tracker (`stripes` 0 counts as 1).
    pub fn set_stripe(&mut self, stripe: usize, stripes: usize) {
        let stripes = stripes.max(1);
        self.stripe = (stripe.min(stripes - 1), stripes);
    }

    /// Each stripe's owner, in stripe order (`None`: this NUC), from the tracker's list; empty
    /// when the list does not tell (then the short patience rules, as before owners were known).
    pub fn set_owners(&mut self, owners: Vec<Option<usize>>) {
        self.owners = if owners.len() == self.stripe.1 {
            owners
        } else {
            Vec::new()
        };
    }

    fn stripe_of(&self, chunk: usize) -> usize {
        self.positions[chunk] * self.stripe.1 / self.total
    }

    fn mine(&self, chunk: usize) -> bool {
        self.stripe_of(chunk) == self.stripe.0
    }

    /// Whether the relay is asked for `chunk`, which no live peer holds.
    fn ask_relay(&self, chunk: usize, live: bool, now: Duration) -> bool {
        let quiet = now.saturating_sub(self.progress);
        if self.mine(chunk) || !live {
            return true;
        }
        match self.owners.get(self.stripe_of(chunk)) {
            Some(Some(p)) => self.peers[*p].dropped || quiet >= self.patience * LONG_STALL,
            Some(None) => true,
            None => quiet >= self.patience,
        }
    }

    /// The peer `node`'s index, added if new (a dropped one stays dropped).
    pub fn peer(&mut self, node: &str) -> usize {
        if let Some(i) = self.peers.iter().position(|p| p.node == node) {
            return i;
        }
        self.peers.push(Peer {
            node: node.to_owned(),
            has: vec![false; self.chunks.len()],
            dropped: false,
            lied: false,
            requests: 0,
            busy_until: Duration::ZERO,
        });
        self.peers.len() - 1
    }

    pub fn node(&self, peer: usize) -> &str {
        &self.peers[peer].node
    }

    pub fn is_live(&self, peer: usize) -> bool {
        !self.peers[peer].dropped
    }

    /// `peer` answered `Has` for `asked` with `holds`.
    pub fn has(&mut self, peer: usize, asked: &[usize], holds: &[bool], now: Duration) {
        let p = &mut self.peers[peer];
        let mut news = false;
        for (&i, &h) in asked.iter().zip(holds) {
            news |= h && !p.has[i] && self.state[i] != State::Done;
            p.has[i] = h;
        }
        if news && !p.dropped {
            self.progress = now;
        }
    }

    /// `peer` said it took these chunks in (`HasSince`): held from now on, until a request says
    /// otherwise.
    pub fn holds(&mut self, peer: usize, chunks: &[usize], now: Duration) {
        let p = &mut self.peers[peer];
        let mut news = false;
        for &i in chunks {
            news |= !p.has[i] && self.state[i] != State::Done;
            p.has[i] = true;
        }
        if news && !p.dropped {
            self.progress = now;
        }
    }

    /// `peer` holds the whole version (a complete image).
    pub fn holds_all(&mut self, peer: usize, now: Duration) {
        let all: Vec<usize> = (0..self.chunks.len()).collect();
        self.holds(peer, &all, now);
    }

    /// What `peer` said it holds is void (its log started again): it holds nothing until it says.
    pub fn forget(&mut self, peer: usize) {
        self.peers[peer].has.fill(false);
    }

    /// The relay failed: the rest must come from the peers.
    pub fn lose_relay(&mut self) {
        self.relay_lost = true;
    }

    pub fn relay_lost(&self) -> bool {
        self.relay_lost
    }

    /// Without the relay, the peers cannot finish: none is left, or none brought anything for
    /// `patience` while nothing is under way.
    pub fn stuck(&self, now: Duration) -> bool {
        let busy = self.peers.iter().any(|p| !p.dropped && p.requests > 0);
        let live = self.peers.iter().any(|p| !p.dropped);
        self.relay_lost
            && !self.is_done()
            && (!live || (!busy && now.saturating_sub(self.progress) >= self.patience))
    }

    /// What to ask for now.
    pub fn next(&mut self, now: Duration) -> Vec<Request> {
        let live = self.peers.iter().any(|p| !p.dropped);
        let mut to_peer: Vec<Vec<Vec<usize>>> = vec![Vec::new(); self.peers.len()];
        let mut to_relay: Vec<Vec<usize>> = Vec::new();
        let (rotation, count) = (self.stripe.0, self.peers.len().max(1));
        for i in 0..self.chunks.len() {
            if self.state[i] != State::Wanted {
                continue;
            }
            // The least busy live peer holding it with room for one more chunk.
            let best = (0..self.peers.len())
                .filter(|&p| {
                    let peer = &self.peers[p];
                    !peer.dropped && peer.has[i] && peer.busy_until <= now && {
                        let open = &to_peer[p];
                        let full = open.last().is_none_or(|b| b.len() >= BATCH);
                        !(full && peer.requests + open.len() >= PEER_REQUESTS)
                    }
                })
                .min_by_key(|&p| {
                    let load = self.peers[p].requests * BATCH
                        + to_peer[p].iter().map(Vec::len).sum::<usize>();
                    (load, (p + rotation) % count)
                });
            if let Some(p) = best {
                let open = &mut to_peer[p];
                match open.last_mut() {
                    Some(b) if b.len() < BATCH => b.push(i),
                    _ => open.push(vec![i]),
                }
                self.state[i] = State::Asked;
                continue;
            }
            let holder = self.peers.iter().any(|p| !p.dropped && p.has[i]);
            if holder || self.relay_lost || !self.ask_relay(i, live, now) {
                continue;
            }
            let open = to_relay.last().is_some_and(|b| b.len() < BATCH);
            if open {
                if let Some(b) = to_relay.last_mut() {
                    b.push(i);
                }
            } else if self.relay_requests + to_relay.len() < RELAY_REQUESTS {
                to_relay.push(vec![i]);
            } else {
                continue;
            }
            self.state[i] = State::Asked;
            if !self.mine(i) {
                self.beyond_stripe += 1;
            }
        }
        let mut out = Vec::new();
        for (p, batches) in to_peer.into_iter().enumerate() {
            self.peers[p].requests += batches.len();
            out.extend(batches.into_iter().map(|chunks| Request {
                source: Source::Peer(p),
                chunks,
            }));
        }
        self.relay_requests += to_relay.len();
        out.extend(to_relay.into_iter().map(|chunks| Request {
            source: Source::Relay,
            chunks,
        }));
        out
    }

    /// `request` ended: `got` arrived (verified and stored); the rest is wanted again, and a peer
    /// that did not give them is taken not to hold them.
    pub fn done(&mut self, request: &Request, got: &[usize], now: Duration) {
        self.end(request.source);
        for &i in got {
            if self.state[i] != State::Done {
                self.state[i] = State::Done;
                self.left -= 1;
            }
        }
        for &i in &request.chunks {
            if self.state[i] == State::Asked {
                self.state[i] = State::Wanted;
                if let Source::Peer(p) = request.source {
                    self.peers[p].has[i] = false;
                }
            }
        }
        if matches!(request.source, Source::Peer(_)) && !got.is_empty() {
            self.progress = now;
        }
    }

    /// `request` was turned away by its peer (busy): its chunks are wanted again, still taken to
    /// be held there, and the peer is left alone for [`BUSY_BACKOFF`].
    pub fn turned_away(&mut self, request: &Request, now: Duration) {
        self.end(request.source);
        for &i in &request.chunks {
            if self.state[i] == State::Asked {
                self.state[i] = State::Wanted;
            }
        }
        if let Source::Peer(p) = request.source {
            self.peers[p].busy_until = now + BUSY_BACKOFF;
        }
    }

    /// `peer` failed (its connection broke, it was too slow, or, with `lied`, it sent a chunk
    /// that is not what its id says): dropped for this version.
    pub fn drop_peer(&mut self, peer: usize, lied: bool) {
        let p = &mut self.peers[peer];
        p.dropped = true;
        p.lied |= lied;
    }

    fn end(&mut self, source: Source) {
        match source {
            Source::Relay => self.relay_requests = self.relay_requests.saturating_sub(1),
            Source::Peer(p) => {
                let peer = &mut self.peers[p];
                peer.requests = peer.requests.saturating_sub(1);
            }
        }
    }

    /// The peers dropped for sending corrupt chunks.
    pub fn liars(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|p| p.lied)
            .map(|p| p.node.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn swarm(n: usize) -> Swarm {
        let wanted = (0..n).map(|i| (ChunkId::of(&i.to_le_bytes()), i)).collect();
        Swarm::new(wanted, n, Duration::ZERO, 10 * S)
    }

    fn sources(reqs: &[Request]) -> Vec<(Source, usize)> {
        reqs.iter().map(|r| (r.source, r.chunks.len())).collect()
    }

    /// Runs requests to completion: every chunk asked for arrives.
    fn complete(s: &mut Swarm, reqs: &[Request], now: Duration) {
        for r in reqs {
            s.done(r, &r.chunks, now);
        }
    }

    #[test]
    fn alone_a_nuc_fetches_everything_from_the_relay_a_few_requests_at_a_time() {
        let mut s = swarm(BATCH * 10);
        let reqs = s.next(Duration::ZERO);
        assert_eq!(reqs.len(), RELAY_REQUESTS);
        assert!(reqs
            .iter()
            .all(|r| r.source == Source::Relay && r.chunks.len() == BATCH));
        // Nothing more until one comes back.
        assert!(s.next(Duration::ZERO).is_empty());
        let mut now = Duration::ZERO;
        let mut pending = reqs;
        while !s.is_done() {
            now += S / 10;
            complete(&mut s, &pending, now);
            pending = s.next(now);
        }
        assert!(s.next(now).is_empty());
    }

    #[test]
    fn with_peers_a_nuc_takes_its_stripe_from_the_relay_and_waits_for_the_rest() {
        let mut s = swarm(400);
        s.set_stripe(1, 4);
        let a = s.peer("nuc-1");
        let reqs = s.next(Duration::ZERO);
        // Only chunks 100..200 go to the relay; nobody holds the rest yet.
        let asked: Vec<usize> = reqs.iter().flat_map(|r| r.chunks.clone()).collect();
        assert!(asked.iter().all(|&i| (100..200).contains(&i)), "{asked:?}");
        assert!(reqs.iter().all(|r| r.source == Source::Relay));
        // The peer says it holds 0..100: they go to it, at most two requests at once.
        s.has(a, &(0..100).collect::<Vec<_>>(), &[true; 100], S);
        let reqs = s.next(S);
        assert_eq!(
            sources(&reqs),
            vec![(Source::Peer(a), BATCH), (Source::Peer(a), BATCH)]
        );
        // A chunk of another stripe that no peer holds is not asked of the relay before patience.
        assert!(s.next(5 * S).is_empty());
    }

    #[test]
    fn what_no_peer_brings_in_time_comes_from_the_relay() {
        let mut s = swarm(200);
        s.set_stripe(0, 2);
        s.peer("nuc-2");
        let first = s.next(Duration::ZERO);
        complete(&mut s, &first, S);
        let mut now = S;
        let mut from_relay: Vec<usize> = first.iter().flat_map(|r| r.chunks.clone()).collect();
        while !s.is_done() {
            now += S;
            let reqs = s.next(now);
            assert!(reqs.iter().all(|r| r.source == Source::Relay));
            from_relay.extend(reqs.iter().flat_map(|r| r.chunks.clone()));
            complete(&mut s, &reqs, now);
            assert!(now < 60 * S, "never finished");
        }
        from_relay.sort_unstable();
        from_relay.dedup();
        assert_eq!(from_relay.len(), 200);
        // The other stripe waited for the peer for `patience`.
        assert!(now >= 10 * S, "{now:?}");
    }

    #[test]
    fn a_peer_that_lies_is_dropped_and_what_it_had_comes_from_elsewhere() {
        let mut s = swarm(64);
        s.set_stripe(0, 2);
        let liar = s.peer("nuc-bad");
        let honest = s.peer("nuc-good");
        let all: Vec<usize> = (0..64).collect();
        s.has(liar, &all, &[true; 64], S);
        let reqs = s.next(S);
        assert!(
            reqs.iter().all(|r| r.source == Source::Peer(liar)),
            "{reqs:?}"
        );
        // It sent garbage: nothing arrived, it is dropped, and its chunks are wanted again.
        for r in &reqs {
            s.done(r, &[], S);
        }
        s.drop_peer(liar, true);
        assert_eq!(s.liars(), vec!["nuc-bad".to_owned()]);
        s.has(honest, &all[32..], &[true; 32], 2 * S);
        let reqs = s.next(2 * S);
        for r in &reqs {
            assert_ne!(r.source, Source::Peer(liar));
            match r.source {
                Source::Relay => assert!(r.chunks.iter().all(|&i| i < 32)),
                Source::Peer(p) => assert!(p == honest && r.chunks.iter().all(|&i| i >= 32)),
            }
        }
        complete(&mut s, &reqs, 2 * S);
        assert!(s.is_done());
    }

    #[test]
    fn a_peer_that_lacks_what_it_was_asked_is_not_asked_again_for_it() {
        let mut s = swarm(10);
        s.set_stripe(1, 2);
        let p = s.peer("nuc-1");
        let all: Vec<usize> = (0..10).collect();
        s.has(p, &all, &[true; 10], S);
        let reqs = s.next(S);
        assert_eq!(sources(&reqs), vec![(Source::Peer(p), 10)]);
        // It gave only half (a session started there): the rest is not asked of it again.
        s.done(&reqs[0], &all[..5], S);
        let reqs = s.next(S);
        // Chunks 5..10 are in our stripe (positions 5..10 of 10, stripe 1 of 2): the relay.
        assert_eq!(sources(&reqs), vec![(Source::Relay, 5)]);
    }

    #[test]
    fn what_a_peer_says_it_took_in_is_asked_of_it_until_its_log_starts_again() {
        let ms = Duration::from_millis;
        let to = |reqs: &[Request], src: Source| -> Vec<usize> {
            reqs.iter()
                .filter(|r| r.source == src)
                .flat_map(|r| r.chunks.clone())
                .collect()
        };
        let mut s = swarm(4);
        // Only chunk 3 is this NUC's to take from the relay.
        s.set_stripe(3, 4);
        let (p, q) = (s.peer("nuc2"), s.peer("nuc3"));
        s.holds(p, &[0, 1], ms(10));
        let reqs = s.next(ms(10));
        assert_eq!(to(&reqs, Source::Peer(p)), vec![0, 1]);
        assert_eq!(to(&reqs, Source::Relay), vec![3]);
        complete(&mut s, &reqs, ms(20));
        // Its log started again: what it said is void, chunk 2 waits.
        s.holds(q, &[2], ms(20));
        s.forget(q);
        assert!(s.next(ms(30)).is_empty());
        // A complete image: what is left comes from it.
        s.holds_all(q, ms(40));
        assert_eq!(to(&s.next(ms(40)), Source::Peer(q)), vec![2]);
        assert!(!s.is_done());
    }

    #[test]
    fn a_peer_is_asked_only_about_what_it_is_not_known_to_hold() {
        let mut s = swarm(10);
        let p = s.peer("nuc-1");
        assert_eq!(s.unknown_to(p), (0..10).collect::<Vec<_>>());
        s.has(p, &[0, 1, 2, 3], &[true, true, false, false], S);
        // 0 and 1 are known held; 2 and 3 may have come since.
        assert_eq!(s.unknown_to(p), (2..10).collect::<Vec<_>>());
        // Received chunks are asked about no more; one it failed to give is asked about again.
        let reqs = s.next(S);
        let to_peer: Vec<&Request> = reqs
            .iter()
            .filter(|r| r.source == Source::Peer(p))
            .collect();
        assert_eq!(to_peer[0].chunks, vec![0, 1]);
        s.done(to_peer[0], &[0], S);
        assert_eq!(s.unknown_to(p)[..2], [1, 2]);
    }

    #[test]
    fn without_the_relay_the_peers_finish_what_they_hold_and_a_gap_is_given_up_on() {
        let mut s = swarm(64);
        s.set_stripe(0, 2);
        let p = s.peer("nuc-2");
        let first = s.next(Duration::ZERO);
        assert!(first.iter().all(|r| r.source == Source::Relay));
        // The relay dies under the first requests: nothing arrived.
        for r in &first {
            s.done(r, &[], S);
        }
        s.lose_relay();
        assert!(s.next(S).is_empty(), "nothing goes to a lost relay");
        assert!(!s.stuck(S));
        // The peer holds everything but chunk 63: all of it comes from the peer.
        let all: Vec<usize> = (0..64).collect();
        let mut holds = vec![true; 64];
        holds[63] = false;
        s.has(p, &all, &holds, 2 * S);
        let mut now = 2 * S;
        loop {
            let reqs = s.next(now);
            if reqs.is_empty() {
                break;
            }
            assert!(reqs.iter().all(|r| r.source == Source::Peer(p)));
            complete(&mut s, &reqs, now);
            now += S;
        }
        assert_eq!(s.unknown_to(p), vec![63]);
        // Chunk 63 never comes: given up on after patience, not waited for forever.
        assert!(!s.stuck(now));
        assert!(s.stuck(now + 10 * S));
        // With no peer left, at once.
        s.drop_peer(p, false);
        assert!(s.stuck(now));
    }

    #[test]
    fn when_every_peer_is_gone_the_relay_gives_everything_at_once() {
        let mut s = swarm(100);
        s.set_stripe(0, 4);
        let p = s.peer("nuc-1");
        s.drop_peer(p, false);
        let asked: usize = s.next(Duration::ZERO).iter().map(|r| r.chunks.len()).sum();
        assert_eq!(asked, 100.min(RELAY_REQUESTS * BATCH));
        assert!(s.liars().is_empty());
    }

    #[test]
    fn a_busy_peer_is_left_alone_a_moment_and_its_chunks_come_from_another_holder() {
        let mut s = swarm(64);
        s.set_stripe(0, 1);
        let (a, b) = (s.peer("nuc-1"), s.peer("nuc-2"));
        let all: Vec<usize> = (0..64).collect();
        s.holds(a, &all, Duration::ZERO);
        let reqs = s.next(Duration::ZERO);
        assert_eq!(
            sources(&reqs),
            [(Source::Peer(a), BATCH), (Source::Peer(a), BATCH)]
        );
        // `a` turns both away: nothing is asked of it for a moment, nor of the relay (a peer
        // still holds them), and the chunks are still wanted.
        for r in &reqs {
            s.turned_away(r, S);
        }
        assert!(s.next(S).is_empty());
        // `b` got them meanwhile: they go to `b`.
        s.holds(b, &all, S);
        let reqs = s.next(S);
        assert_eq!(
            sources(&reqs),
            [(Source::Peer(b), BATCH), (Source::Peer(b), BATCH)]
        );
        // After the back-off `a` is asked again (it still holds them): what is left would go to
        // it; here nothing is left, so `b`'s answer finishes the version.
        complete(&mut s, &reqs, S + BUSY_BACKOFF);
        assert!(s.is_done());
    }

    #[test]
    fn equally_busy_holders_are_chosen_differently_by_each_nuc() {
        // Two NUCs with different stripes, the same two holders of everything: each starts
        // with a different one, so that the room does not queue at the first peer listed.
        let first = |stripe: usize| {
            let mut s = swarm(8);
            s.set_stripe(stripe, 2);
            let (a, b) = (s.peer("nuc-1"), s.peer("nuc-2"));
            let all: Vec<usize> = (0..8).collect();
            s.holds(a, &all, Duration::ZERO);
            s.holds(b, &all, Duration::ZERO);
            let reqs = s.next(Duration::ZERO);
            let to = |i: usize| {
                reqs.iter()
                    .find(|r| r.chunks.contains(&i))
                    .map(|r| r.source)
            };
            (to(0), to(1))
        };
        let (one, two) = (first(0), first(1));
        assert_ne!(
            one.0, two.0,
            "both NUCs ask the same peer for the first chunk"
        );
        // Each spreads its own requests over both.
        assert_ne!(one.0, one.1);
    }

    #[test]
    fn another_nucs_part_waits_for_it_while_it_lives_and_comes_from_the_relay_once_it_is_gone() {
        // Two NUCs: this one owns stripe 0 (chunks 0..4), `a` stripe 1 (chunks 4..8).
        let mut s = swarm(8);
        s.set_stripe(0, 2);
        let a = s.peer("nuc-a");
        s.set_owners(vec![None, Some(a)]);
        let asked = |reqs: &[Request]| -> Vec<usize> {
            reqs.iter().flat_map(|r| r.chunks.clone()).collect()
        };
        // Only its own part goes to the relay, even long after the patience (10 s).
        assert_eq!(asked(&s.next(Duration::ZERO)), [0, 1, 2, 3]);
        assert!(
            s.next(30 * S).is_empty(),
            "another NUC's live part asked of the relay"
        );
        // Nothing new for six times the patience: the relay is asked after all.
        assert_eq!(asked(&s.next(60 * S)), [4, 5, 6, 7]);

        // The same, but `a` is gone: its part comes from the relay at once.
        let mut s = swarm(8);
        s.set_stripe(0, 2);
        let a = s.peer("nuc-a");
        let b = s.peer("nuc-b");
        s.set_owners(vec![None, Some(a)]);
        s.next(Duration::ZERO);
        s.drop_peer(a, false);
        assert!(s.is_live(b));
        assert_eq!(asked(&s.next(S)), [4, 5, 6, 7]);
    }

    #[test]
    fn owners_that_do_not_match_the_stripes_are_ignored() {
        let mut s = swarm(8);
        s.set_stripe(0, 2);
        let a = s.peer("nuc-a");
        s.set_owners(vec![None, Some(a), Some(a)]);
        s.next(Duration::ZERO);
        // As before owners were known: the patience (10 s) alone decides.
        let reqs = s.next(10 * S);
        assert_eq!(reqs.iter().map(|r| r.chunks.len()).sum::<usize>(), 4);
    }
}
