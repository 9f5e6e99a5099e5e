//! The emergency push's verdict, pure: will every NUC of each room running a pushed master version
//! run it by the push's deadline, and if not, which ones, and by when? Everything is passed in,
//! times are Unix seconds; `db::Db::push_facts` gathers the facts, the admin API words the answer.
//!
//! The model, in order, and each step counted conservatively:
//! 1. **WAN.** The bytes the site's relay still lacks, from `now`, at what its pacer moves under
//!    the site's emergency cap (its night cap when none is set): [`Bandwidth::usable`], as the
//!    planner counts (`plan`).
//! 2. **LAN.** Then the bytes every NUC of the affected rooms still lacks (from their reports of
//!    what they hold complete: a NUC keeps the chunks of its current and previous versions), all
//!    through the relay's one LAN port at [`LAN_MBIT`], after the relay holds the version (the
//!    relay serves what it holds as it arrives, so this is later than the truth).
//! 3. **Session boundaries.** A NUC swaps only between sessions: ready during a session, it runs
//!    the version when that session ends. Ready at or after the deadline, it is late: the session
//!    of the deadline has begun (its NUCs swap at its end, which is when this says they will).
//!
//! A room is *ready* when every NUC runs it by the deadline and the transfers need at most
//! `Settings::risk_share_percent` of the time left; *at risk* when they need more, when the relay
//! or a NUC is silent or never reported; *late* when a NUC will not make it (each NUC says when
//! it will, or that it never will as things stand: no relay at the site).

use image_tools::Bandwidth;

use crate::plan::{Relay, Settings};

/// What a site's relay serves its LAN at, for the verdict: half of a 1 Gbit/s port. A relay
/// serves a room by unicast (`docs/BENCHMARKS.md`: 20 NUCs take 20 times one NUC's time on a
/// 1 Gbit/s LAN), and its port is shared by every room of the site and by QUIC's overhead; half is
/// what the verdict counts on, not what the port can do.
pub const LAN_MBIT: u64 = 500;

/// The site, as the push needs it.
#[derive(Debug, Clone)]
pub struct Site {
    /// The cap the relay paces to for the push, in Mbit/s (the emergency cap, else the night cap).
    pub cap_mbit: u64,
    /// Bytes of the version the relay still lacks.
    pub relay_missing: u64,
    pub relay: Relay,
    /// The LAN rate counted on ([`LAN_MBIT`] unless a test says otherwise).
    pub lan: Bandwidth,
    /// The version's bytes (what a NUC that never reported lacks).
    pub master_bytes: u64,
}

/// A room running the pushed version.
#[derive(Debug, Clone)]
pub struct Room {
    pub name: String,
    /// The room's sessions not yet ended: start, end, and whether it runs the pushed version.
    pub sessions: Vec<(i64, i64, bool)>,
    pub nucs: Vec<Nuc>,
}

/// A seat of the room and its NUC.
#[derive(Debug, Clone)]
pub struct Nuc {
    pub seat: String,
    /// `None`: no NUC at the seat.
    pub node: Option<String>,
    /// Bytes of the version it lacks; `None`: it never reported what it holds.
    pub missing: Option<u64>,
    /// Its last report.
    pub last_seen: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// Why it is uncertain, in words.
    AtRisk(String),
    Late,
}

/// Why a NUC runs the version when it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It holds the version already, and no session keeps it from running it.
    Holds,
    /// The transfers end then (WAN, then LAN) in a gap between sessions.
    Transfer,
    /// It has the version during a session and swaps when the session ends then.
    SessionEnd(i64),
    /// No NUC at the seat.
    NoNuc,
    /// No relay at the site: nothing reaches it.
    NoRelay,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NucOutcome {
    pub seat: String,
    pub node: Option<String>,
    /// When it runs the version (`None`: never, as things stand).
    pub runs_at: Option<i64>,
    pub why: Why,
    pub in_time: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomOutcome {
    pub room: String,
    /// Bytes the relay lacks, and when it should hold them.
    pub relay_missing: u64,
    pub relay_ready_at: i64,
    /// Bytes the room's NUCs lack together.
    pub lan_bytes: u64,
    /// When the last NUC of the room runs the version (`None`: some never will).
    pub ready_at: Option<i64>,
    pub nucs: Vec<NucOutcome>,
    pub verdict: Verdict,
}

/// The verdict per room of a push due at `deadline`, from `now`.
pub fn plan_push(
    now: i64,
    deadline: i64,
    site: &Site,
    rooms: &[Room],
    settings: &Settings,
) -> Vec<RoomOutcome> {
    let wan = Bandwidth::site_cap(site.cap_mbit).usable();
    let secs = |rate: Bandwidth, bytes: u64| rate.secs_for(bytes).unwrap_or(u64::MAX) as i64;
    let relay_ready_at = now.saturating_add(secs(wan, site.relay_missing));
    let lacks = |n: &Nuc| n.missing.unwrap_or(site.master_bytes);
    let site_lan: u64 = rooms
        .iter()
        .flat_map(|r| &r.nucs)
        .filter(|n| n.node.is_some())
        .map(lacks)
        .sum();
    let lan_done = relay_ready_at.saturating_add(secs(site.lan, site_lan));
    let relay_doubt = match site.relay {
        Relay::None => None,
        Relay::Enrolled { last_seen: None } => Some("the relay never reported".to_owned()),
        Relay::Enrolled { last_seen: Some(t) }
            if now.saturating_sub(t) > settings.relay_silent_after_secs =>
        {
            Some("the relay is silent".to_owned())
        }
        Relay::Enrolled { .. } => None,
    };
    let risky = {
        let needed = i128::from(lan_done.saturating_sub(now));
        let left = i128::from(deadline.saturating_sub(now));
        site_lan + site.relay_missing > 0
            && needed * 100 > left * i128::from(settings.risk_share_percent)
    };
    rooms
        .iter()
        .map(|room| {
            let nucs: Vec<NucOutcome> = room
                .nucs
                .iter()
                .map(|n| nuc(n, room, site, deadline, now, lan_done))
                .collect();
            let lan_bytes = room
                .nucs
                .iter()
                .filter(|n| n.node.is_some())
                .map(lacks)
                .sum();
            let ready_at = nucs
                .iter()
                .filter(|n| n.why != Why::NoNuc)
                .map(|n| n.runs_at)
                .try_fold(now, |acc, t| t.map(|t| acc.max(t)));
            let silent: Vec<&str> = room
                .nucs
                .iter()
                .filter(|n| {
                    n.node.is_some()
                        && (n.missing.is_none()
                            || n.last_seen.is_none_or(|t| {
                                now.saturating_sub(t) > settings.relay_silent_after_secs
                            }))
                })
                .map(|n| n.seat.as_str())
                .collect();
            let verdict = if nucs.iter().any(|n| !n.in_time && n.why != Why::NoNuc) {
                Verdict::Late
            } else if nucs.iter().all(|n| n.why == Why::NoNuc) {
                Verdict::AtRisk("no NUC sits at any seat of the room".to_owned())
            } else if let Some(why) = &relay_doubt {
                Verdict::AtRisk(why.clone())
            } else if !silent.is_empty() {
                Verdict::AtRisk(format!(
                    "never reported or silent, counted as lacking it all: {}",
                    silent.join(", ")
                ))
            } else if risky {
                Verdict::AtRisk(format!(
                    "the transfers need more than {} % of the time left",
                    settings.risk_share_percent
                ))
            } else {
                Verdict::Ready
            };
            RoomOutcome {
                room: room.name.clone(),
                relay_missing: site.relay_missing,
                relay_ready_at,
                lan_bytes,
                ready_at,
                nucs,
                verdict,
            }
        })
        .collect()
}

/// When one NUC runs the version, and why then.
fn nuc(n: &Nuc, room: &Room, site: &Site, deadline: i64, now: i64, lan_done: i64) -> NucOutcome {
    let out = |runs_at: Option<i64>, why| NucOutcome {
        seat: n.seat.clone(),
        node: n.node.clone(),
        runs_at,
        in_time: runs_at.is_some_and(|t| t <= deadline),
        why,
    };
    if n.node.is_none() {
        return out(None, Why::NoNuc);
    }
    let holds = n.missing == Some(0);
    if site.relay == Relay::None && !holds {
        return out(None, Why::NoRelay);
    }
    let has_it_at = if holds { now } else { lan_done };
    // A session running at that moment keeps it from swapping until it ends, unless that session
    // runs the version itself (then the NUC holds it and runs it already).
    match room
        .sessions
        .iter()
        .find(|&&(start, end, _)| start <= has_it_at && has_it_at < end)
    {
        Some(&(_, _, true)) if holds => out(Some(now), Why::Holds),
        Some(&(_, end, _)) => out(Some(end), Why::SessionEnd(end)),
        None if holds => out(Some(now), Why::Holds),
        None => out(Some(has_it_at), Why::Transfer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const M: i64 = 60;
    /// Midnight of the day, in Unix seconds (UTC: time zones are the caller's business here).
    const DAY: i64 = 1_893_974_400; // 2030-01-08T00:00:00Z

    fn at(h: i64, m: i64) -> i64 {
        DAY + h * H + m * M
    }

    /// A room with the 12:00-14:00 gap: the morning session on the old version until 12:00, the
    /// afternoon one on the pushed version from 14:00.
    fn gap_room(name: &str, nucs: Vec<Nuc>) -> Room {
        Room {
            name: name.into(),
            sessions: vec![(at(8, 0), at(12, 0), false), (at(14, 0), at(17, 0), true)],
            nucs,
        }
    }

    fn nuc(seat: &str, missing: u64) -> Nuc {
        Nuc {
            seat: seat.into(),
            node: Some(format!("nuc-{seat}")),
            missing: Some(missing),
            last_seen: Some(at(11, 0)),
        }
    }

    fn site(cap_mbit: u64, relay_missing: u64) -> Site {
        Site {
            cap_mbit,
            relay_missing,
            relay: Relay::Enrolled {
                last_seen: Some(at(11, 0)),
            },
            lan: Bandwidth::from_mbit(LAN_MBIT),
            master_bytes: 10_000_000_000,
        }
    }

    #[test]
    fn a_fix_at_noon_is_on_every_nuc_at_the_end_of_the_morning_session() {
        // 11:30: 2 GB the relay lacks at a 20 Mbit/s emergency cap (18.4 Mbit/s paced: 2.3 MB/s,
        // 870 s), then three NUCs lacking 2 GB each over the LAN at 500 Mbit/s (62.5 MB/s, 96 s):
        // in hand at 11:46:06, during the morning session: every NUC swaps at 12:00.
        let room = gap_room(
            "salle-1",
            vec![
                nuc("pc-1", 2_000_000_000),
                nuc("pc-2", 2_000_000_000),
                nuc("pc-3", 2_000_000_000),
            ],
        );
        let out = plan_push(
            at(11, 30),
            at(14, 0),
            &site(20, 2_000_000_000),
            &[room],
            &Settings::default(),
        );
        let r = &out[0];
        assert_eq!(r.relay_ready_at, at(11, 30) + 870);
        assert_eq!(r.lan_bytes, 6_000_000_000);
        assert_eq!(r.verdict, Verdict::Ready);
        assert_eq!(r.ready_at, Some(at(12, 0)));
        for n in &r.nucs {
            assert_eq!(
                (n.runs_at, &n.why, n.in_time),
                (Some(at(12, 0)), &Why::SessionEnd(at(12, 0)), true)
            );
        }
    }

    #[test]
    fn pushed_at_noon_into_the_gap_the_nucs_swap_when_the_transfer_ends() {
        // 12:05, in the gap: the same bytes, in hand at 12:21:06, swapped at once.
        let room = gap_room("salle-1", vec![nuc("pc-1", 2_000_000_000)]);
        let out = plan_push(
            at(12, 5),
            at(14, 0),
            &site(20, 2_000_000_000),
            &[room],
            &Settings::default(),
        );
        let done = at(12, 5) + 870 + 32;
        assert_eq!(out[0].nucs[0].runs_at, Some(done));
        assert_eq!(out[0].nucs[0].why, Why::Transfer);
        assert_eq!(out[0].verdict, Verdict::Ready);
    }

    #[test]
    fn too_much_for_the_gap_is_late_and_names_the_nucs_and_when_they_will_run_it() {
        // 20 GB at 18.4 Mbit/s: 8,696 s, past 14:00: the afternoon session has begun, the NUCs
        // lacking it swap at its end (17:00); the one that holds it already runs it at 12:00.
        let room = gap_room("salle-1", vec![nuc("pc-1", 20_000_000_000), nuc("pc-2", 0)]);
        let out = plan_push(
            at(12, 0),
            at(14, 0),
            &site(20, 20_000_000_000),
            &[room],
            &Settings::default(),
        );
        let r = &out[0];
        assert_eq!(r.verdict, Verdict::Late);
        assert_eq!(r.ready_at, Some(at(17, 0)));
        assert_eq!(
            (r.nucs[0].runs_at, r.nucs[0].in_time, &r.nucs[0].why),
            (Some(at(17, 0)), false, &Why::SessionEnd(at(17, 0)))
        );
        assert_eq!(
            (r.nucs[1].runs_at, r.nucs[1].in_time, &r.nucs[1].why),
            (Some(at(12, 0)), true, &Why::Holds)
        );
        // A larger emergency cap fixes it: 200 Mbit/s (23 MB/s) takes 870 s.
        let out = plan_push(
            at(12, 0),
            at(14, 0),
            &site(200, 20_000_000_000),
            &[gap_room("salle-1", vec![nuc("pc-1", 20_000_000_000)])],
            &Settings::default(),
        );
        assert_eq!(out[0].verdict, Verdict::Ready);
    }

    #[test]
    fn a_transfer_that_needs_most_of_the_gap_is_at_risk() {
        // 12:00: 15 GB at 18.4 Mbit/s (6,522 s) + 15 GB of LAN (240 s): in hand at 13:52:42,
        // 94 % of the two hours, more than the 80 % a verdict of ready allows.
        let room = gap_room("salle-1", vec![nuc("pc-1", 15_000_000_000)]);
        let out = plan_push(
            at(12, 0),
            at(14, 0),
            &site(20, 15_000_000_000),
            &[room],
            &Settings::default(),
        );
        assert!(
            matches!(&out[0].verdict, Verdict::AtRisk(why) if why.contains("80 %")),
            "{:?}",
            out[0].verdict
        );
        assert!(out[0].nucs[0].in_time);
    }

    #[test]
    fn the_lan_is_shared_by_every_room_of_the_site() {
        // Nothing on the WAN; two rooms of ten NUCs lacking 5 GB each: 100 GB at 62.5 MB/s is
        // 1,600 s for both rooms, not 800 s each.
        let ten = |room: &str| {
            gap_room(
                room,
                (0..10)
                    .map(|i| nuc(&format!("{room}-{i}"), 5_000_000_000))
                    .collect(),
            )
        };
        let out = plan_push(
            at(12, 0),
            at(14, 0),
            &site(20, 0),
            &[ten("a"), ten("b")],
            &Settings::default(),
        );
        for r in &out {
            assert_eq!(r.ready_at, Some(at(12, 0) + 1_600), "{r:?}");
            assert_eq!(r.lan_bytes, 50_000_000_000);
        }
    }

    #[test]
    fn no_relay_silent_nucs_and_empty_seats() {
        let mut never = nuc("pc-2", 0);
        never.missing = None;
        let empty = Nuc {
            seat: "pc-3".into(),
            node: None,
            missing: None,
            last_seen: None,
        };
        let room = gap_room("salle-1", vec![nuc("pc-1", 0), never, empty]);
        // A NUC that never reported counts as lacking the whole version: at risk, not ready.
        let out = plan_push(
            at(12, 5),
            at(14, 0),
            &site(20, 0),
            std::slice::from_ref(&room),
            &Settings::default(),
        );
        assert!(
            matches!(&out[0].verdict, Verdict::AtRisk(why) if why.contains("pc-2")),
            "{:?}",
            out[0].verdict
        );
        assert_eq!(out[0].nucs[2].why, Why::NoNuc);
        // No relay: what the NUCs hold runs, nothing else ever reaches them.
        let none = Site {
            relay: Relay::None,
            ..site(20, 1_000)
        };
        let out = plan_push(at(12, 5), at(14, 0), &none, &[room], &Settings::default());
        assert_eq!(out[0].verdict, Verdict::Late);
        assert_eq!(out[0].nucs[0].why, Why::Holds);
        assert_eq!(
            (out[0].nucs[1].runs_at, &out[0].nucs[1].why),
            (None, &Why::NoRelay)
        );
        assert_eq!(out[0].ready_at, None);
    }
}
