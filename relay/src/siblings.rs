//! Two relays (or more) at one site: which one crosses the WAN, and which fetch from it.
//!
//! A site may run a second relay for failover. Both would fetch every master over the site's thin
//! WAN link, twice the bytes and each at the full cap, so they agree without talking:
//! - each first takes over the LAN whatever the others already hold (a relay that comes back, or
//!   one added later, crosses the WAN for nothing they have);
//! - for the rest, among the relays of the site that answer, the one whose name sorts first
//!   crosses the WAN ([`leader`]); every other one waits for it and fetches from it over the LAN,
//!   and asks it, not the controller, for what its NUCs want on demand. When it stops answering,
//!   the next one takes over the WAN.
//!
//! A sibling is one more relay of the same site with a certificate from a CA this relay trusts;
//! the discovery answer only says where to look, the TLS handshake says who it is
//! (`trust::Admit::SiteOf`, `Expect::RelayOf`).
//!
//! Pure: the answers come in, the choice goes out (`daemon::siblings` asks the VLAN and connects).

use std::net::SocketAddr;

use image_tools::discovery::Answer;
use image_tools::report::BadPeer;

/// Another relay of this site, as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub name: String,
    /// Its chunk-exchange service on the LAN.
    pub addr: SocketAddr,
}

/// The site's other relays that answered, by name, each once. Answers from other sites, from CAs
/// not in `trusted`, and this relay's own are left out.
pub fn siblings(
    me: &str,
    site: &str,
    trusted: &[[u8; 16]],
    answers: &[(SocketAddr, Answer)],
) -> Vec<Sibling> {
    let mut found: Vec<Sibling> = answers
        .iter()
        .filter(|(_, a)| a.site == site && a.relay != me && a.names_any(trusted))
        .map(|(addr, a)| Sibling {
            name: a.relay.clone(),
            addr: *addr,
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
    found.dedup_by(|a, b| a.name == b.name);
    found
}

/// How long a relay of the site that sent a corrupt chunk is set aside: neither asked for chunks
/// nor followed across the WAN. A night: its own scrub (or the DSI) has the time to repair it.
pub const SET_ASIDE_SECS: i64 = 6 * 3600;

/// Whether `name` is set aside at `now`: it sent a corrupt chunk (`bad`: who, when) less than
/// [`SET_ASIDE_SECS`] ago.
pub fn set_aside(bad: &[BadPeer], name: &str, now: i64) -> bool {
    bad.iter()
        .any(|b| b.node == name && now < b.at.saturating_add(SET_ASIDE_SECS))
}

/// Of the site's other relays that can be reached (`reachable`, any order), the one that crosses
/// the WAN for `me`: the first name, if it sorts before `me`. `None`: `me` crosses it.
pub fn leader<'a>(me: &str, reachable: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    reachable.into_iter().filter(|n| *n < me).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: [u8; 16] = [7; 16];

    fn answer(site: &str, relay: &str, ca: [u8; 16], ip: u8) -> (SocketAddr, Answer) {
        (
            SocketAddr::from(([10, 0, 0, ip], 4434)),
            Answer {
                nightcast: 1,
                site: site.into(),
                relay: relay.into(),
                port: 4434,
                ca: image_tools::ids::hex(&ca),
                also: Vec::new(),
            },
        )
    }

    fn names(s: &[Sibling]) -> Vec<&str> {
        s.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn the_relay_whose_name_sorts_first_crosses_the_wan_and_the_others_fetch_from_it() {
        let all = [
            answer("lyon", "relay-c", CA, 3),
            answer("lyon", "relay-a", CA, 1),
            answer("lyon", "relay-b", CA, 2),
        ];
        assert_eq!(
            names(&siblings("relay-b", "lyon", &[CA], &all)),
            ["relay-a", "relay-c"]
        );
        assert_eq!(leader("relay-a", ["relay-c", "relay-b"]), None);
        assert_eq!(leader("relay-b", ["relay-c", "relay-a"]), Some("relay-a"));
        // relay-a does not answer: relay-b crosses the WAN for relay-c too.
        assert_eq!(leader("relay-c", ["relay-b"]), Some("relay-b"));
        assert_eq!(leader("relay-b", []), None);
    }

    #[test]
    fn relays_of_other_sites_and_of_unknown_cas_are_not_siblings() {
        let all = [
            answer("paris", "relay-a", CA, 1),
            answer("lyon", "relay-0", [9; 16], 2),
        ];
        assert!(siblings("relay-b", "lyon", &[CA], &all).is_empty());
    }

    #[test]
    fn a_relay_that_sent_a_corrupt_chunk_is_set_aside_for_a_night_then_trusted_again() {
        let bad = [BadPeer {
            node: "relay-a".into(),
            master: image_tools::wire::MasterRef::new("demo", "1").unwrap(),
            at: 1_000,
        }];
        assert!(set_aside(&bad, "relay-a", 1_000));
        assert!(set_aside(&bad, "relay-a", 1_000 + SET_ASIDE_SECS - 1));
        assert!(!set_aside(&bad, "relay-a", 1_000 + SET_ASIDE_SECS));
        assert!(!set_aside(&bad, "relay-c", 1_000));
        assert!(!set_aside(&[], "relay-a", 1_000));
    }

    #[test]
    fn a_relay_answering_from_two_addresses_is_tried_once() {
        let all = [
            answer("lyon", "relay-a", CA, 5),
            answer("lyon", "relay-a", CA, 1),
        ];
        let got = siblings("relay-b", "lyon", &[CA], &all);
        assert_eq!(names(&got), ["relay-a"]);
        assert_eq!(got[0].addr, SocketAddr::from(([10, 0, 0, 1], 4434)));
    }
}
