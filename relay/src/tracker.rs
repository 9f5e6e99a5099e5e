//! The tracker, pure: which of the site's agents a NUC may fetch a master version from, and which
//! part of it the NUC fetches from the relay itself (its stripe).
//!
//! The relay learns where each agent serves its peers from its `Hello` (the connection's remote
//! IP and the advertised port, [`Hello::peer_port`](image_tools::wire::Hello::peer_port)), what it
//! holds and needs from its reports, and that it is fetching a version from its `GetPeers`. A
//! NUC's stripe is its index among the agents fetching the version (sorted by node id, so every
//! asker gets the same split), so that different NUCs fetch different parts from the relay first
//! and the relay's port carries about one copy. Not guaranteed: that a listed peer is up, or holds
//! what it says (the asker checks every chunk and drops a peer that lies).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use image_tools::wire::{MasterRef, PeerEntry, PeerList};

/// An agent that asked for a version's peers counts as fetching it for this long (seconds) after
/// its last question (it asks again every few seconds while it fetches).
pub const FETCHING_FOR_SECS: i64 = 120;
/// Peers listed in one answer at most (those holding the whole version first).
pub const MAX_PEERS: usize = 32;

/// What the relay knows of one agent, for the tracker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Where it serves its peers (none: it does not share).
    pub addr: Option<SocketAddr>,
    /// The versions it asked peers for, and when it last asked (Unix seconds).
    pub asked: BTreeMap<MasterRef, i64>,
}

/// What an agent's last report says of one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    pub holds: bool,
    pub needs: bool,
}

/// The site's agents as the tracker sees them.
#[derive(Debug, Default)]
pub struct Tracker {
    agents: BTreeMap<String, Seen>,
}

impl Tracker {
    /// `node` said hello, serving its peers at `addr` (or not at all).
    pub fn hello(&mut self, node: &str, addr: Option<SocketAddr>) {
        self.agents.entry(node.to_owned()).or_default().addr = addr;
    }

    /// `asker` asks at `now` who holds or fetches `master`; `reported` says, for each agent that
    /// reported, whether it holds and needs it. The asker counts as fetching from now on.
    pub fn ask(
        &mut self,
        asker: &str,
        master: &MasterRef,
        now: i64,
        reported: &BTreeMap<String, Reported>,
    ) -> PeerList {
        let me = self.agents.entry(asker.to_owned()).or_default();
        me.asked.insert(master.clone(), now);
        let asker_shares = me.addr.is_some();
        for seen in self.agents.values_mut() {
            seen.asked.retain(|_, at| now - *at <= FETCHING_FOR_SECS);
        }
        let report = |node: &str| reported.get(node).copied().unwrap_or_default();
        let mut holders = Vec::new();
        let mut fetchers: Vec<&str> = Vec::new();
        for (node, seen) in &self.agents {
            let r = report(node);
            let fetching = !r.holds && (r.needs || seen.asked.contains_key(master));
            // A stripe is only given to agents that serve it on to the others.
            if fetching && (seen.addr.is_some() || node == asker) {
                fetchers.push(node);
            }
            let (true, Some(addr)) = (node != asker, seen.addr) else {
                continue;
            };
            if r.holds {
                holders.push(entry(node, addr, true));
            } else if fetching {
                holders.push(entry(node, addr, false));
            }
        }
        // Those holding it all first, then the fetchers.
        holders.sort_by_key(|p| !p.complete);
        holders.truncate(MAX_PEERS);
        let (stripe, stripes) = match fetchers.iter().position(|n| *n == asker) {
            Some(i) if asker_shares => (i as u32, fetchers.len() as u32),
            _ => (0, 1),
        };
        PeerList {
            peers: holders,
            stripe,
            stripes,
        }
    }
}

fn entry(node: &str, addr: SocketAddr, complete: bool) -> PeerEntry {
    PeerEntry {
        node: node.to_owned(),
        addr,
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> MasterRef {
        MasterRef::new("demo", "1").unwrap()
    }

    fn addr(i: u8) -> Option<SocketAddr> {
        Some(SocketAddr::from(([192, 0, 2, i], 7105)))
    }

    fn needing(nodes: &[&str]) -> BTreeMap<String, Reported> {
        nodes
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Reported {
                        holds: false,
                        needs: true,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn every_nuc_needing_a_version_gets_its_own_stripe_whoever_asks_first() {
        let mut t = Tracker::default();
        for (i, n) in ["nuc-3", "nuc-1", "nuc-2", "nuc-4"].iter().enumerate() {
            t.hello(n, addr(i as u8 + 1));
        }
        let reported = needing(&["nuc-1", "nuc-2", "nuc-3", "nuc-4"]);
        // Asked in any order, the split is the same: by node id.
        for (asker, want) in [("nuc-4", 3), ("nuc-1", 0), ("nuc-3", 2), ("nuc-2", 1)] {
            let list = t.ask(asker, &demo(), 100, &reported);
            assert_eq!((list.stripe, list.stripes), (want, 4), "{asker}");
            assert_eq!(list.peers.len(), 3, "{asker}: {list:?}");
            assert!(list.peers.iter().all(|p| p.node != asker && !p.complete));
        }
    }

    #[test]
    fn holders_come_first_and_agents_that_do_not_share_get_no_stripe() {
        let mut t = Tracker::default();
        t.hello("nuc-1", addr(1));
        t.hello("nuc-2", addr(2));
        t.hello("nuc-3", None); // sharing off: fetches, never serves
        t.hello("nuc-9", addr(9));
        let mut reported = needing(&["nuc-1", "nuc-2", "nuc-3"]);
        reported.insert(
            "nuc-9".into(),
            Reported {
                holds: true,
                needs: true,
            },
        );
        let list = t.ask("nuc-2", &demo(), 100, &reported);
        assert_eq!(list.peers[0].node, "nuc-9");
        assert!(list.peers[0].complete);
        assert_eq!(list.peers.len(), 2, "{list:?}");
        assert_eq!((list.stripe, list.stripes), (1, 2));
        // The one that does not share fetches from its peers, and the rest from the relay.
        let list = t.ask("nuc-3", &demo(), 100, &reported);
        assert_eq!((list.stripe, list.stripes), (0, 1));
        assert_eq!(list.peers.len(), 3);
    }

    #[test]
    fn an_agent_that_asked_counts_as_fetching_until_it_stops_asking() {
        let mut t = Tracker::default();
        t.hello("nuc-1", addr(1));
        t.hello("nuc-2", addr(2));
        // No reports yet (a version pushed by hand): asking is what counts.
        let none = BTreeMap::new();
        assert_eq!(t.ask("nuc-1", &demo(), 100, &none).stripes, 1);
        let list = t.ask("nuc-2", &demo(), 101, &none);
        assert_eq!((list.stripe, list.stripes), (1, 2));
        assert_eq!(list.peers.len(), 1);
        // nuc-1 went quiet: after a while it is no fetcher any more.
        let list = t.ask("nuc-2", &demo(), 101 + FETCHING_FOR_SECS + 1, &none);
        assert_eq!((list.stripe, list.stripes), (0, 1));
        assert!(list.peers.is_empty());
    }
}
