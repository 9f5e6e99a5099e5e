//! The readiness board, pure: the plan's rows of the coming week, grouped by site and room, each
//! session with its verdict in words, worst rooms first. Times are in each site's zone.

use std::collections::BTreeMap;

use image_tools::api::{PlanRow, Reason, Verdict};
use image_tools::local_time::Zone;

use super::users::User;

/// How far ahead the board looks.
pub const HORIZON_SECS: i64 = 7 * 86_400;

/// A verdict's kind, worst first (the order of the board).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Late,
    Unknown,
    AtRisk,
    OnTime,
    Ready,
}

impl Kind {
    /// The CSS class and the word shown.
    pub fn class(self) -> &'static str {
        match self {
            Kind::Late => "late",
            Kind::Unknown => "unknown",
            Kind::AtRisk => "at_risk",
            Kind::OnTime => "on_time",
            Kind::Ready => "ready",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Kind::Late => "late",
            Kind::Unknown => "unknown master",
            Kind::AtRisk => "at risk",
            Kind::OnTime => "on time",
            Kind::Ready => "ready",
        }
    }
}

/// One session on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub start: i64,
    /// `YYYY-MM-DD HH:MM ZONE`.
    pub when: String,
    /// Starts on the site's today.
    pub today: bool,
    pub master: String,
    pub version: String,
    pub kind: Kind,
    /// Why, in words (and when the bytes arrive).
    pub reason: String,
}

/// A room and its coming sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub site: String,
    pub room: String,
    pub tz: String,
    /// Its worst session's kind.
    pub worst: Kind,
    pub lines: Vec<Line>,
}

/// The board for `user` at `now`: the rooms of the sites they see with a session starting within
/// `HORIZON_SECS`, the worst first (late, unknown, at risk, on time, ready), then by their first
/// session, then by name. `zone` gives a site's IANA zone.
pub fn board(rows: &[PlanRow], zone: &dyn Fn(&str) -> String, user: &User, now: i64) -> Vec<Room> {
    let mut rooms: BTreeMap<(String, String), Room> = BTreeMap::new();
    // Each site's zone, looked up once, and its today.
    let mut zones: std::collections::HashMap<&str, (Zone, String)> = Default::default();
    for r in rows {
        let site = r.site.as_str();
        if !user.sees(site) || r.start >= now + HORIZON_SECS || r.start < now - 86_400 {
            continue;
        }
        let (z, today) = zones.entry(site).or_insert_with(|| {
            let z = Zone::named(&zone(site));
            let today = z.date(now);
            (z, today)
        });
        let tz = z.name().to_owned();
        let (kind, reason) = words_in(r, z, now);
        let room = rooms
            .entry((site.to_owned(), r.room.as_str().to_owned()))
            .or_insert_with(|| Room {
                site: site.to_owned(),
                room: r.room.as_str().to_owned(),
                tz: tz.clone(),
                worst: kind,
                lines: Vec::new(),
            });
        room.worst = room.worst.min(kind);
        room.lines.push(Line {
            start: r.start,
            when: z.local(r.start),
            today: z.date(r.start) == *today,
            master: r.master.as_str().to_owned(),
            version: r.version.as_str().to_owned(),
            kind,
            reason,
        });
    }
    let mut out: Vec<Room> = rooms.into_values().collect();
    for room in &mut out {
        room.lines.sort_by_key(|l| l.start);
    }
    out.sort_by(|a, b| {
        (a.worst, a.lines.first().map(|l| l.start), &a.site, &a.room).cmp(&(
            b.worst,
            b.lines.first().map(|l| l.start),
            &b.site,
            &b.room,
        ))
    });
    out
}

/// Sessions on the board beyond which rooms with nothing to worry about (every session on time
/// or ready) are folded into one line per site, so that a region of a thousand sites still fits a
/// page: what needs the DSI stays in full.
pub const MAX_FULL_LINES: usize = 300;

/// A site's rooms with nothing to worry about, folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub site: String,
    pub rooms: Vec<String>,
    pub sessions: usize,
}

/// The board as shown: rooms in full (all of them while the board has at most `max_lines`
/// sessions; beyond, only those with a session late, at risk or of an unknown master), and the
/// other rooms folded by site, by site name.
pub fn fold(rooms: Vec<Room>, max_lines: usize) -> (Vec<Room>, Vec<Folded>) {
    let lines: usize = rooms.iter().map(|r| r.lines.len()).sum();
    if lines <= max_lines {
        return (rooms, Vec::new());
    }
    let (full, good): (Vec<Room>, Vec<Room>) =
        rooms.into_iter().partition(|r| r.worst < Kind::OnTime);
    let mut folded: BTreeMap<String, Folded> = BTreeMap::new();
    for r in good {
        let f = folded.entry(r.site.clone()).or_insert_with(|| Folded {
            site: r.site.clone(),
            rooms: Vec::new(),
            sessions: 0,
        });
        f.rooms.push(r.room);
        f.sessions += r.lines.len();
    }
    let mut folded: Vec<Folded> = folded.into_values().collect();
    for f in &mut folded {
        f.rooms.sort();
    }
    (full, folded)
}

/// A row's verdict as a kind and a sentence, times in the IANA zone `tz`.
pub fn words(r: &PlanRow, tz: &str, now: i64) -> (Kind, String) {
    words_in(r, &Zone::named(tz), now)
}

fn words_in(r: &PlanRow, zone: &Zone, now: i64) -> (Kind, String) {
    let at = |t: i64| zone.local(t);
    let mut failed = String::new();
    if !r.failed.is_empty() {
        let seats: Vec<String> = r.failed.iter().map(|f| f.seat.clone()).collect();
        failed = format!(
            "; did not come up on {} (they run the previous version)",
            seats.join(", ")
        );
    }
    let (kind, text) = match &r.verdict {
        Verdict::OnTime {
            night: None,
            ready_at,
        } if *ready_at <= now => (Kind::Ready, "the site's relay holds it".to_owned()),
        Verdict::OnTime { ready_at, night } => (
            Kind::OnTime,
            match night {
                Some(n) => format!("arrives in the night of {n}, ready at {}", at(*ready_at)),
                None => format!("ready at {}", at(*ready_at)),
            },
        ),
        Verdict::AtRisk {
            ready_at,
            slack_secs,
            needed_secs,
            reason,
        } => (
            Kind::AtRisk,
            match reason {
                Reason::Transfer => format!(
                    "ready at {} by the numbers, but the transfer needs {} of the night-window time left ({} to spare)",
                    at(*ready_at),
                    duration(*needed_secs),
                    duration(*slack_secs)
                ),
                other => format!("ready at {} if {}", at(*ready_at), relay_words(other, zone)),
            },
        ),
        Verdict::Late {
            shortfall_bytes,
            override_secs,
            reason,
        } => (
            Kind::Late,
            match reason {
                Reason::Transfer => format!(
                    "{} still missing at the deadline ({}): a daytime override of {} fixes it",
                    bytes(*shortfall_bytes),
                    at(r.deadline),
                    duration(*override_secs)
                ),
                other => format!(
                    "{}: {} missing at the deadline ({})",
                    relay_words(other, zone),
                    bytes(*shortfall_bytes),
                    at(r.deadline)
                ),
            },
        ),
        Verdict::UnknownMaster {} => (
            Kind::Unknown,
            "this master version is not in the catalogue: import it or change the session".to_owned(),
        ),
    };
    (kind, format!("{text}{failed}"))
}

fn relay_words(reason: &Reason, zone: &Zone) -> String {
    match reason {
        Reason::Transfer => "the bytes arrive".to_owned(),
        Reason::NoRelay => "no relay is enrolled at the site".to_owned(),
        Reason::RelaySilent { since: Some(t) } => {
            format!("the site's relay answers (silent since {})", zone.local(*t))
        }
        Reason::RelaySilent { since: None } => "the site's relay reports (it never has)".to_owned(),
    }
}

/// `3 h 20 min`, `45 min`, `2 d 4 h`.
pub fn duration(secs: i64) -> String {
    let m = secs.max(0) / 60;
    match (m / 1440, (m % 1440) / 60, m % 60) {
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// `1.2 GB`, `340 MB`, `12 kB` (decimal, as disks are sold).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0} MB", n / 1e6)
    } else {
        format!("{:.0} kB", (n / 1e3).ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::users::Role;

    const NOW: i64 = 1_894_017_600; // 2030-01-07 12:00 UTC, a Monday

    fn row(site: &str, room: &str, start: i64, verdict: Verdict) -> PlanRow {
        PlanRow {
            site: site.parse().unwrap(),
            session: "1".into(),
            room: room.parse().unwrap(),
            master: "win11".parse().unwrap(),
            version: "3".parse().unwrap(),
            start,
            deadline: start - 7200,
            new_bytes: 0,
            cumulative_bytes: 0,
            failed: Vec::new(),
            verdict,
        }
    }

    fn on_time(ready_at: i64) -> Verdict {
        Verdict::OnTime {
            ready_at,
            night: Some("2030-01-07".into()),
        }
    }

    fn late(reason: Reason) -> Verdict {
        Verdict::Late {
            shortfall_bytes: 3_400_000_000,
            override_secs: 4 * 3600,
            reason,
        }
    }

    fn admin() -> User {
        User {
            name: "a".into(),
            role: Role::Admin,
            sites: Vec::new(),
        }
    }

    fn paris(_: &str) -> String {
        "Europe/Paris".into()
    }

    #[test]
    fn red_rooms_come_first_then_the_earliest() {
        let rows = vec![
            row("lyon", "salle-1", NOW + 3600, on_time(NOW)),
            row("lyon", "salle-2", NOW + 5 * 86_400, late(Reason::Transfer)),
            row("paris", "b12", NOW + 2 * 86_400, on_time(NOW)),
            row(
                "paris",
                "b12",
                NOW + 3 * 86_400,
                Verdict::AtRisk {
                    ready_at: NOW,
                    slack_secs: 600,
                    needed_secs: 7200,
                    reason: Reason::Transfer,
                },
            ),
            row("nantes", "a", NOW + 4 * 86_400, late(Reason::NoRelay)),
        ];
        let b = board(&rows, &paris, &admin(), NOW);
        let order: Vec<(&str, &str, Kind)> = b
            .iter()
            .map(|r| (r.site.as_str(), r.room.as_str(), r.worst))
            .collect();
        assert_eq!(
            order,
            [
                ("nantes", "a", Kind::Late),
                ("lyon", "salle-2", Kind::Late),
                ("paris", "b12", Kind::AtRisk),
                ("lyon", "salle-1", Kind::OnTime),
            ]
        );
        // Within a room, by start.
        assert_eq!(b[2].lines[0].kind, Kind::OnTime);
        assert_eq!(b[2].lines[1].kind, Kind::AtRisk);
    }

    #[test]
    fn only_the_coming_week_of_the_sites_the_user_sees() {
        let rows = vec![
            row("lyon", "salle-1", NOW + 8 * 86_400, late(Reason::Transfer)),
            row("paris", "b12", NOW + 3600, late(Reason::Transfer)),
            row("lyon", "salle-1", NOW + 3600, on_time(NOW)),
        ];
        let lyon_only = User {
            name: "o".into(),
            role: Role::Operator,
            sites: vec!["lyon".parse().unwrap()],
        };
        let b = board(&rows, &paris, &lyon_only, NOW);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].site, "lyon");
        assert_eq!(b[0].lines.len(), 1);
        assert_eq!(b[0].worst, Kind::OnTime);
    }

    #[test]
    fn times_are_in_the_sites_zone_and_today_is_the_sites_today() {
        let rows = vec![
            // 2030-01-07 22:30 UTC: the 7th in London, the 7th 23:30 in Paris.
            row("lyon", "salle-1", NOW + 10 * 3600 + 1800, on_time(NOW)),
            // 2030-01-07 23:30 UTC: already the 8th in Paris.
            row("lyon", "salle-1", NOW + 11 * 3600 + 1800, on_time(NOW)),
        ];
        let b = board(&rows, &paris, &admin(), NOW);
        assert_eq!(b[0].lines[0].when, "2030-01-07 23:30 Europe/Paris");
        assert!(b[0].lines[0].today);
        assert_eq!(b[0].lines[1].when, "2030-01-08 00:30 Europe/Paris");
        assert!(!b[0].lines[1].today);
    }

    #[test]
    fn each_verdict_says_why() {
        let r = row("lyon", "salle-1", NOW + 86_400, late(Reason::NoRelay));
        let (k, w) = words(&r, "UTC", NOW);
        assert_eq!(k, Kind::Late);
        assert_eq!(
            w,
            "no relay is enrolled at the site: 3.4 GB missing at the deadline (2030-01-08 10:00 UTC)"
        );
        let r = row("lyon", "salle-1", NOW + 86_400, late(Reason::Transfer));
        assert!(words(&r, "UTC", NOW)
            .1
            .contains("a daytime override of 4 h fixes it"));
        let r = row(
            "lyon",
            "salle-1",
            NOW + 86_400,
            late(Reason::RelaySilent {
                since: Some(NOW - 86_400),
            }),
        );
        assert!(words(&r, "UTC", NOW)
            .1
            .starts_with("the site's relay answers (silent since 2030-01-06 12:00 UTC)"));
        let held = Verdict::OnTime {
            ready_at: NOW - 10,
            night: None,
        };
        assert_eq!(
            words(&row("lyon", "s", NOW + 60, held), "UTC", NOW).0,
            Kind::Ready
        );
        assert_eq!(
            words(&row("lyon", "s", NOW + 60, on_time(NOW + 30)), "UTC", NOW).1,
            "arrives in the night of 2030-01-07, ready at 2030-01-07 12:00 UTC"
        );
        let mut r = row("lyon", "s", NOW + 60, on_time(NOW));
        r.failed = vec![image_tools::api::FailedOn {
            seat: "salle-1/pc-3".into(),
            node: "nuc-3".into(),
            why: "kernel panic".into(),
            at: NOW,
        }];
        assert!(words(&r, "UTC", NOW)
            .1
            .contains("did not come up on salle-1/pc-3"));
    }

    #[test]
    fn a_large_board_folds_the_rooms_that_are_fine_and_keeps_the_others_in_full() {
        let mut rows = Vec::new();
        for site in ["lyon", "paris"] {
            for room in ["a", "b"] {
                rows.push(row(site, room, NOW + 3600, on_time(NOW)));
                rows.push(row(site, room, NOW + 7200, on_time(NOW)));
            }
        }
        rows.push(row("paris", "c", NOW + 3600, late(Reason::Transfer)));
        let b = board(&rows, &paris, &admin(), NOW);
        // Small: everything in full.
        let (full, folded) = fold(b.clone(), 9);
        assert_eq!((full.len(), folded.len()), (5, 0));
        // Beyond the limit: the late room in full, the others one line per site.
        let (full, folded) = fold(b, 8);
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].room, "c");
        assert_eq!(
            folded,
            [
                Folded {
                    site: "lyon".into(),
                    rooms: vec!["a".into(), "b".into()],
                    sessions: 4
                },
                Folded {
                    site: "paris".into(),
                    rooms: vec!["a".into(), "b".into()],
                    sessions: 4
                },
            ]
        );
    }

    #[test]
    fn durations_and_sizes_read_as_words() {
        assert_eq!(duration(45 * 60), "45 min");
        assert_eq!(duration(3 * 3600), "3 h");
        assert_eq!(duration(3 * 3600 + 1200), "3 h 20 min");
        assert_eq!(duration(2 * 86_400 + 4 * 3600), "2 d 4 h");
        assert_eq!(bytes(1_234_000_000), "1.2 GB");
        assert_eq!(bytes(340_000_000), "340 MB");
        assert_eq!(bytes(1), "1 kB");
    }
}
