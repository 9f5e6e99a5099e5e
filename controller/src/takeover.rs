//! Spare takeover, pure: which spare NUC takes which silent seat, or why it waits for the DSI.
//!
//! A *seat* is *silent* when its bound node has not been heard from for longer than `silent_after`
//! seconds, or when it has no node. A *spare* is an agent of the site bound to no seat; it counts
//! only if it was heard from within `silent_after` (a spare on a shelf, or a dead NUC unbound by a
//! takeover, is not a candidate). Per site:
//! - policy `auto`, exactly one silent seat, at least one spare: the spare heard from most recently
//!   (ties by node id) is bound to that seat; the seat's old node is unbound (a spare if it ever
//!   comes back);
//! - policy `auto`, several silent seats: nothing is bound (which NUC went where is the DSI's to
//!   say); each spare waits, with the command that binds it;
//! - policy `confirm`: nothing is bound; each spare waits with the seats it could take.
//!
//! No clock, no database: `db::Db::take_over` gathers the inputs and applies the binds in one
//! transaction; the fleet view shows the waits.

use std::fmt;
use std::str::FromStr;

/// A site's takeover policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// A spare takes over the one silent seat by itself.
    #[default]
    Auto,
    /// The DSI confirms every takeover (`nightcast seat replace`).
    Confirm,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Auto => "auto",
            Policy::Confirm => "confirm",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("takeover policy {0:?} is neither `auto` nor `confirm`")]
pub struct BadPolicy(pub String);

impl FromStr for Policy {
    type Err = BadPolicy;
    fn from_str(s: &str) -> Result<Policy, BadPolicy> {
        match s {
            "auto" => Ok(Policy::Auto),
            "confirm" => Ok(Policy::Confirm),
            other => Err(BadPolicy(other.to_owned())),
        }
    }
}

/// A seat and the node bound to it, with when that node was last heard from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub room: String,
    pub seat: String,
    pub node: Option<String>,
    /// Unix seconds; `None`: never heard from.
    pub last_seen: Option<i64>,
}

impl Seat {
    pub fn is_silent(&self, now: i64, silent_after: i64) -> bool {
        self.node.is_none() || !recent(self.last_seen, now, silent_after)
    }

    fn label(&self) -> String {
        format!("{}/{}", self.room, self.seat)
    }
}

/// An agent of the site bound to no seat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spare {
    pub node: String,
    pub last_seen: Option<i64>,
}

/// One site's seats and spares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    pub policy: Policy,
    pub seats: Vec<Seat>,
    pub spares: Vec<Spare>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bind `spare` to the seat, unbinding `replaced`.
    Bind {
        spare: String,
        room: String,
        seat: String,
        replaced: Option<String>,
    },
    /// `spare` stays a spare; `reason` is what the DSI reads in `nightcast fleet`.
    Wait { spare: String, reason: String },
}

fn recent(last_seen: Option<i64>, now: i64, silent_after: i64) -> bool {
    last_seen.is_some_and(|t| now.saturating_sub(t) <= silent_after)
}

/// What to do at `site` at `now`: binds first (at most one), then waits, spares in order of
/// preference (most recently heard from first, ties by node id).
pub fn decide(site: &Site, now: i64, silent_after: i64) -> Vec<Decision> {
    let mut spares: Vec<&Spare> = site
        .spares
        .iter()
        .filter(|s| recent(s.last_seen, now, silent_after))
        .collect();
    spares.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.node.cmp(&b.node)));
    let mut silent: Vec<&Seat> = site
        .seats
        .iter()
        .filter(|s| s.is_silent(now, silent_after))
        .collect();
    silent.sort_by(|a, b| (&a.room, &a.seat).cmp(&(&b.room, &b.seat)));
    let (Some(first), Some(seat)) = (spares.first(), silent.first()) else {
        return Vec::new();
    };
    let command = |spare: &str| {
        format!(
            "`nightcast seat replace {} {} {} --with {spare}`",
            site.name, seat.room, seat.seat
        )
    };
    let labels = silent
        .iter()
        .map(|s| s.label())
        .collect::<Vec<_>>()
        .join(", ");
    match (site.policy, silent.len()) {
        (Policy::Auto, 1) => vec![Decision::Bind {
            spare: first.node.clone(),
            room: seat.room.clone(),
            seat: seat.seat.clone(),
            replaced: seat.node.clone(),
        }],
        (Policy::Auto, n) => spares
            .iter()
            .map(|s| Decision::Wait {
                spare: s.node.clone(),
                reason: format!(
                    "{n} seats are silent ({labels}): bind with {}",
                    command(&s.node)
                ),
            })
            .collect(),
        (Policy::Confirm, _) => spares
            .iter()
            .map(|s| Decision::Wait {
                spare: s.node.clone(),
                reason: format!("policy confirm: can replace {labels}: {}", command(&s.node)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;
    const AFTER: i64 = 30 * 60;

    fn seat(name: &str, node: Option<(&str, i64)>) -> Seat {
        Seat {
            room: "salle-1".into(),
            seat: name.into(),
            node: node.map(|(n, _)| n.to_owned()),
            last_seen: node.map(|(_, ago)| NOW - ago),
        }
    }

    fn spare(node: &str, ago: i64) -> Spare {
        Spare {
            node: node.into(),
            last_seen: Some(NOW - ago),
        }
    }

    fn site(policy: Policy, seats: Vec<Seat>, spares: Vec<Spare>) -> Site {
        Site {
            name: "lyon".into(),
            policy,
            seats,
            spares,
        }
    }

    #[test]
    fn one_silent_seat_and_one_spare_binds_the_spare_in_place_of_the_silent_node() {
        let s = site(
            Policy::Auto,
            vec![
                seat("pc-1", Some(("nuc-a", 60))),
                seat("pc-2", Some(("nuc-b", AFTER + 1))),
            ],
            vec![spare("nuc-s", 10)],
        );
        assert_eq!(
            decide(&s, NOW, AFTER),
            vec![Decision::Bind {
                spare: "nuc-s".into(),
                room: "salle-1".into(),
                seat: "pc-2".into(),
                replaced: Some("nuc-b".into()),
            }]
        );
    }

    #[test]
    fn seen_exactly_silent_after_ago_is_not_yet_silent() {
        let s = site(
            Policy::Auto,
            vec![seat("pc-1", Some(("nuc-a", AFTER)))],
            vec![spare("nuc-s", 0)],
        );
        assert!(decide(&s, NOW, AFTER).is_empty());
    }

    #[test]
    fn two_silent_seats_make_the_spare_wait_naming_both() {
        let s = site(
            Policy::Auto,
            vec![
                seat("pc-1", Some(("nuc-a", 60))),
                seat("pc-3", Some(("nuc-c", AFTER * 3))),
                seat("pc-2", Some(("nuc-b", AFTER * 2))),
            ],
            vec![spare("nuc-s", 10)],
        );
        let d = decide(&s, NOW, AFTER);
        let [Decision::Wait { spare, reason }] = &d[..] else {
            panic!("{d:?}")
        };
        assert_eq!(spare, "nuc-s");
        assert_eq!(
            reason,
            "2 seats are silent (salle-1/pc-2, salle-1/pc-3): bind with \
             `nightcast seat replace lyon salle-1 pc-2 --with nuc-s`"
        );
    }

    #[test]
    fn policy_confirm_proposes_and_binds_nothing() {
        let s = site(
            Policy::Confirm,
            vec![seat("pc-2", Some(("nuc-b", AFTER * 2)))],
            vec![spare("nuc-s", 10)],
        );
        assert_eq!(
            decide(&s, NOW, AFTER),
            vec![Decision::Wait {
                spare: "nuc-s".into(),
                reason: "policy confirm: can replace salle-1/pc-2: \
                         `nightcast seat replace lyon salle-1 pc-2 --with nuc-s`"
                    .into(),
            }]
        );
    }

    #[test]
    fn a_spare_not_seen_recently_does_not_count() {
        let s = site(
            Policy::Auto,
            vec![seat("pc-2", Some(("nuc-b", AFTER * 2)))],
            vec![
                spare("nuc-old", AFTER + 1),
                Spare {
                    node: "nuc-never".into(),
                    last_seen: None,
                },
            ],
        );
        assert!(decide(&s, NOW, AFTER).is_empty());
    }

    #[test]
    fn the_spare_seen_most_recently_wins_then_the_lowest_id() {
        let seats = vec![seat("pc-2", Some(("nuc-b", AFTER * 2)))];
        let s = site(
            Policy::Auto,
            seats.clone(),
            vec![spare("nuc-x", 300), spare("nuc-y", 5), spare("nuc-z", 60)],
        );
        assert!(matches!(
            &decide(&s, NOW, AFTER)[..],
            [Decision::Bind { spare, .. }] if spare == "nuc-y"
        ));
        let s = site(
            Policy::Auto,
            seats,
            vec![spare("nuc-q", 5), spare("nuc-p", 5), spare("nuc-r", 5)],
        );
        assert!(matches!(
            &decide(&s, NOW, AFTER)[..],
            [Decision::Bind { spare, .. }] if spare == "nuc-p"
        ));
    }

    #[test]
    fn a_seat_with_no_node_counts_as_silent() {
        let empty = seat("pc-9", None);
        assert!(empty.is_silent(NOW, AFTER));
        // Bound but never heard from: silent too.
        let never = Seat {
            last_seen: None,
            ..seat("pc-8", Some(("nuc-n", 0)))
        };
        assert!(never.is_silent(NOW, AFTER));
        let s = site(
            Policy::Auto,
            vec![seat("pc-1", Some(("nuc-a", 60))), empty],
            vec![spare("nuc-s", 10)],
        );
        assert_eq!(
            decide(&s, NOW, AFTER),
            vec![Decision::Bind {
                spare: "nuc-s".into(),
                room: "salle-1".into(),
                seat: "pc-9".into(),
                replaced: None,
            }]
        );
    }

    #[test]
    fn no_silent_seat_or_no_spare_decides_nothing() {
        let s = site(
            Policy::Auto,
            vec![seat("pc-1", Some(("nuc-a", 60)))],
            vec![spare("nuc-s", 10)],
        );
        assert!(decide(&s, NOW, AFTER).is_empty());
        let s = site(Policy::Auto, vec![seat("pc-1", None)], vec![]);
        assert!(decide(&s, NOW, AFTER).is_empty());
    }

    #[test]
    fn policies_parse_and_print() {
        assert_eq!("auto".parse::<Policy>(), Ok(Policy::Auto));
        assert_eq!("confirm".parse::<Policy>(), Ok(Policy::Confirm));
        assert!("manual".parse::<Policy>().is_err());
        assert_eq!(Policy::Confirm.to_string(), "confirm");
    }
}
