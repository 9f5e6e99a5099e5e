use std::path::Path;

use rusqlite::params;

use super::*;
use crate::takeover::Decision;

/// `YYYY-MM-DD HH:MM` in time zone `tz`, as Unix seconds.
fn local_time(tz: &str, text: &str) -> Result<i64, String> {
    let dt: jiff::civil::DateTime = text
        .replace(' ', "T")
        .parse()
        .map_err(|_| format!("{text:?} is not a date and time (YYYY-MM-DD HH:MM)"))?;
    let zone = jiff::tz::TimeZone::get(tz).map_err(|_| format!("unknown time zone {tz:?}"))?;
    zone.to_timestamp(dt)
        .map(|t| t.as_second())
        .map_err(|e| e.to_string())
}

fn manifest(name: &str, version: &str) -> (image_tools::Manifest, Vec<u8>) {
    crate::testing::manifest(name, version, 1)
}

fn sample(dir: &Path) -> Db {
    let db = Db::open(&dir.join("catalogue.db")).unwrap();
    db.add_site("lyon", "Europe/Paris", "22:00-06:00", 20, None)
        .unwrap();
    db.add_room("lyon", "salle-1").unwrap();
    let (m, b) = manifest("win10", "1");
    db.add_master(&m, &b, 0).unwrap();
    db
}

const GOOD: &str = "site,room,master,version,start,end
lyon,salle-1,win10,1,2026-12-01 08:30,2026-12-01 17:00
# a comment
lyon,salle-1,win10,1,2026-12-02 08:30,2026-12-02 17:00
";

#[test]
fn imports_and_schedules_round_trip_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    assert_eq!(db.import_csv("term.csv", GOOD).unwrap(), 2);
    drop(db);
    let db = Db::open(&dir.path().join("catalogue.db")).unwrap();
    let sessions = db.sessions(Some("lyon")).unwrap();
    assert_eq!(sessions.len(), 2);
    // 08:30 in Paris in December is 07:30 UTC.
    let expect = jiff::Timestamp::from_second(sessions[0].start)
        .unwrap()
        .to_string();
    assert_eq!(expect, "2026-12-01T07:30:00Z");
    assert_eq!(db.sites().unwrap()[0].windows, "22:00-06:00");
}

#[test]
fn a_bad_row_imports_nothing_and_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    for (bad, line, what) in [
        (
            "lyon,salle-1,win10,1,2026-12-03 08:30,2026-12-03 07:00",
            5,
            "ends before",
        ),
        (
            "lyon,salle-9,win10,1,2026-12-03 08:30,2026-12-03 17:00",
            5,
            "unknown room",
        ),
        (
            "lyon,salle-1,win11,1,2026-12-03 08:30,2026-12-03 17:00",
            5,
            "unknown master",
        ),
        (
            "paris,salle-1,win10,1,2026-12-03 08:30,2026-12-03 17:00",
            5,
            "unknown site",
        ),
        (
            "lyon,salle-1,win10,1,3 dec 8h30,2026-12-03 17:00",
            5,
            "not a date",
        ),
        ("lyon,salle-1,win10", 5, "expected 6 fields"),
        (
            "lyon,salle-1,win10,1,2026-12-01 09:00,2026-12-01 10:00",
            5,
            "already has a session",
        ),
    ] {
        let text = format!("{GOOD}{bad}\n");
        let e = db.import_csv("term.csv", &text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("term.csv:{line}:")) && e.contains(what),
            "{bad}: {e}"
        );
        assert_eq!(
            db.sessions(None).unwrap().len(),
            0,
            "half-imported after {bad}"
        );
    }
    let e = db
        .import_csv("x.csv", "room,master\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.csv:1: the header must be"), "{e}");
}

const ICS: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
BEGIN:VEVENT\r
SUMMARY:Comptabilit\u{e9} niveau 1\r
X-NIGHTCAST-MASTER:win10 1\r
LOCATION:lyon/salle-1\r
DTSTART;TZID=Europe/Paris:20261201T083000\r
DTEND;TZID=Europe/Paris:20261201T170000\r
END:VEVENT\r
BEGIN:VEVENT\r
SUMMARY:win10 1\r
LOCATION:lyon/sa\r
 lle-1\r
DTSTART:20261202T073000Z\r
DTEND:20261202T160000Z\r
END:VEVENT\r
BEGIN:VEVENT\r
SUMMARY:win10 1\r
LOCATION:lyon/salle-1\r
DTSTART:20261203T083000\r
DTEND:20261203T170000\r
END:VEVENT\r
END:VCALENDAR\r
";

#[test]
fn an_ics_calendar_imports_with_zones_utc_floating_times_and_folded_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    assert_eq!(db.import_ics("term.ics", ICS).unwrap(), 3);
    let s = db.sessions(None).unwrap();
    let utc = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    // All three start at 08:30 in Paris (07:30 UTC in December).
    assert_eq!(utc(s[0].start), "2026-12-01T07:30:00Z");
    assert_eq!(utc(s[1].start), "2026-12-02T07:30:00Z");
    assert_eq!(utc(s[2].start), "2026-12-03T07:30:00Z");
    assert!(s
        .iter()
        .all(|x| x.room == "salle-1" && x.master.as_str() == "win10"));
}

/// Regression: a weekly course used to import as its first session only (the RRULE was
/// ignored without a word).
#[test]
fn a_weekly_ics_course_imports_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    let ics = "BEGIN:VCALENDAR\r
BEGIN:VEVENT\r
SUMMARY:win10 1\r
LOCATION:lyon/salle-1\r
DTSTART;TZID=Europe/Paris:20261019T083000\r
DTEND;TZID=Europe/Paris:20261019T170000\r
RRULE:FREQ=WEEKLY;COUNT=4\r
END:VEVENT\r
END:VCALENDAR\r
";
    assert_eq!(db.import_ics("term.ics", ics).unwrap(), 4);
    let utc: Vec<String> = db
        .sessions(None)
        .unwrap()
        .iter()
        .map(|s| jiff::Timestamp::from_second(s.start).unwrap().to_string())
        .collect();
    // 08:30 in Paris every Monday, across the end of summer time (25 October 2026).
    assert_eq!(
        utc,
        [
            "2026-10-19T06:30:00Z",
            "2026-10-26T07:30:00Z",
            "2026-11-02T07:30:00Z",
            "2026-11-09T07:30:00Z"
        ]
    );
}

#[test]
fn a_bad_ics_event_imports_nothing_and_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    for (from, to, line, what) in [
        (
            "DTSTART:20261203T083000",
            "DTSTART:3 dec",
            20,
            "not a date-time",
        ),
        (
            "SUMMARY:win10 1\r\nLOCATION:lyon/salle-1\r\nDTSTART:20261203",
            "X-NIGHTCAST-MASTER:Excel niveau 2\r\nLOCATION:lyon/salle-1\r\nDTSTART:20261203",
            18,
            "NAME VERSION",
        ),
        (
            "DTSTART:20261203T083000\r\nDTEND:20261203T170000",
            "DTSTART:20261203T083000",
            17,
            "no DTEND",
        ),
        (
            "TZID=Europe/Paris:20261201T083000",
            "TZID=Europe/Lyon:20261201T083000",
            7,
            "unknown time zone",
        ),
    ] {
        assert!(ICS.contains(from), "{from}");
        let text = ICS.replacen(from, to, 1);
        let e = db.import_ics("term.ics", &text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("term.ics:{line}:")) && e.contains(what),
            "{to}: {e}"
        );
        assert!(db.sessions(None).unwrap().is_empty());
    }
    // A location nightcast cannot read, and no rule for it: the event is named, nothing
    // imported.
    let text = ICS.replacen(
        "LOCATION:lyon/salle-1\r\nDTSTART:20261203",
        "LOCATION:salle-1\r\nDTSTART:20261203",
        1,
    );
    let e = db.import_ics("term.ics", &text).unwrap_err().to_string();
    assert!(
        e.starts_with("term.ics: 1 event matches no mapping rule, nothing imported")
            && e.contains("\n  line 17: \"win10 1\" at \"salle-1\": no rule for its location"),
        "{e}"
    );
    assert!(db.sessions(None).unwrap().is_empty());
}

#[test]
fn a_master_in_use_cannot_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    db.import_csv("term.csv", GOOD).unwrap();
    let now = local_time("Europe/Paris", "2026-11-23 12:00").unwrap();
    let e = db.remove_master("win10", "1", now).unwrap_err().to_string();
    assert!(
        e.contains("needed by 2 upcoming session(s)") && e.contains("lyon/salle-1"),
        "{e}"
    );
    // Once the term is over it can go, with its past sessions.
    let later = local_time("Europe/Paris", "2027-01-01 00:00").unwrap();
    db.remove_master("win10", "1", later).unwrap();
    assert!(db.sessions(None).unwrap().is_empty());
    assert!(matches!(
        db.remove_master("win10", "1", later),
        Err(DbError::NoMaster { .. })
    ));
}

/// A manifest of `n` chunks of 256 KiB (stored as is), the first `shared` of them common to
/// every master made with the same `shared`.
fn big_manifest(name: &str, n: u32, shared: u32) -> (image_tools::Manifest, Vec<u8>) {
    use image_tools::manifest::{ChunkRef, Entry};
    let entries: Vec<Entry> = (0..n)
        .map(|i| {
            let seed = if i < shared {
                format!("common-{i}")
            } else {
                format!("{name}-{i}")
            };
            Entry::Chunk(ChunkRef {
                id: image_tools::ChunkId::of(seed.as_bytes()),
                len: 256 << 10,
                stored_len: 256 << 10,
            })
        })
        .collect();
    let m = image_tools::Manifest {
        name: name.parse().unwrap(),
        version: "1".parse().unwrap(),
        size: u64::from(n) * (256 << 10),
        params: image_tools::ChunkParams::DEFAULT,
        entries,
    };
    let signed = m.clone().sign(&image_tools::SigningKey::from_seed([1; 32]));
    (m, signed.bytes().to_vec())
}

#[test]
fn the_plan_from_the_database_counts_shared_chunks_once_and_finds_the_late_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("catalogue.db")).unwrap();
    // 1 Mbit/s: an 8-hour night moves 3.6 GB.
    db.add_site("lyon", "Europe/Paris", "22:00-06:00", 1, None)
        .unwrap();
    db.add_room("lyon", "salle-1").unwrap();
    // a and b: 10,000 chunks each, 8,000 shared (80 %).
    for name in ["a", "b"] {
        let (m, bytes) = big_manifest(name, 10_000, 8_000);
        db.add_master(&m, &bytes, 0).unwrap();
    }
    db.import_csv(
        "t.csv",
        "site,room,master,version,start,end
lyon,salle-1,a,1,2026-12-01 08:30,2026-12-01 17:00
lyon,salle-1,b,1,2026-12-02 08:30,2026-12-02 17:00
lyon,salle-1,a,1,2026-11-24 08:30,2026-11-24 17:00
",
    )
    .unwrap();
    let now = local_time("Europe/Paris", "2026-11-23 12:00").unwrap();
    // lyon's relay reported an hour ago, holding nothing.
    db.record_report(
        "lyon",
        "relay-1",
        "relay",
        &[],
        &Reported::default(),
        now - 3600,
    )
    .unwrap();
    let plan = db
        .plan(now, &crate::plan::Settings::default(), &Default::default())
        .unwrap();
    let rows = &plan[0].1;
    let chunk = 256u64 << 10;
    // Tomorrow's session needs all of a (2.62 GB): one night (3.31 GB at the 0.92 Mbit/s the
    // relay moves under the cap) is enough, in 79 % of it: on time (at risk beyond 80 %).
    assert_eq!(rows[0].new_bytes, 10_000 * chunk);
    assert!(
        matches!(
            rows[0].verdict,
            crate::plan::Verdict::OnTime { night: Some(_), .. }
        ),
        "{:?}",
        rows[0].verdict
    );
    // a again: nothing new. b: only its own 20 %.
    assert_eq!(rows[1].new_bytes, 0);
    assert_eq!(rows[2].new_bytes, 2_000 * chunk);

    // With a site that already holds nothing and a master larger than the one night left:
    let (m, bytes) = big_manifest("big", 20_000, 0); // 5.24 GB
    db.add_master(&m, &bytes, 0).unwrap();
    db.import_csv("u.csv", "site,room,master,version,start,end\nlyon,salle-1,big,1,2026-11-24 18:00,2026-11-24 19:00\n")
        .unwrap();
    let plan = db
        .plan(now, &crate::plan::Settings::default(), &Default::default())
        .unwrap();
    let big = plan[0]
        .1
        .iter()
        .find(|r| r.session.master.name.as_str() == "big")
        .unwrap();
    // Deadline 16:00 on the 24th: one night, 22:00-06:00 = 8 h x 115,000 B/s (what the relay
    // moves under 1 Mbit/s) = 3.31 GB, already shared with a (needed first, 2.62 GB).
    let capacity = 8 * 3600 * 115_000u64;
    assert_eq!(big.cumulative, 10_000 * chunk + 20_000 * chunk);
    assert_eq!(
        big.verdict,
        crate::plan::Verdict::Late {
            shortfall: big.cumulative - capacity,
            override_secs: (big.cumulative - capacity).div_ceil(115_000) as i64,
            reason: crate::plan::Reason::Transfer,
        }
    );
}

#[test]
fn the_plan_reads_each_sites_relay_from_the_nodes_it_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    let now = 1_800_000_000;
    // No relay: missing. An agent does not count as one.
    enrol_agent(&db, "nuc-a", now);
    assert_eq!(db.relays_by_site().unwrap().get("lyon"), None);
    // Enrolled, never reported: known, never heard from.
    db.conn
        .execute(
            "INSERT INTO nodes (site, node, role, enrolled_at) VALUES ('lyon', 'relay-1', 'relay', ?1)",
            params![now],
        )
        .unwrap();
    assert_eq!(db.relays_by_site().unwrap().get("lyon"), Some(&None));
    // Two relays: the one heard from last.
    db.record_report(
        "lyon",
        "relay-2",
        "relay",
        &[],
        &Reported::default(),
        now - 60,
    )
    .unwrap();
    db.record_report(
        "lyon",
        "relay-1",
        "relay",
        &[],
        &Reported::default(),
        now - 600,
    )
    .unwrap();
    assert_eq!(
        db.relays_by_site().unwrap().get("lyon"),
        Some(&Some(now - 60))
    );
    // Revoked relays do not count.
    for relay in ["relay-1", "relay-2"] {
        db.conn
            .execute(
                "UPDATE nodes SET revoked_at = ?2 WHERE node = ?1",
                params![relay, now],
            )
            .unwrap();
    }
    assert_eq!(db.relays_by_site().unwrap().get("lyon"), None);
}

/// lyon with salle-1 (pc-1, pc-2) and agents nuc-a, nuc-b, nuc-s reported at `now`.
fn seated(dir: &Path, now: i64) -> Db {
    let mut db = sample(dir);
    for seat in ["pc-1", "pc-2"] {
        db.add_seat("lyon", "salle-1", seat).unwrap();
    }
    for node in ["nuc-a", "nuc-b", "nuc-s"] {
        enrol_agent(&db, node, now);
        assert!(db
            .record_agent_report("lyon", node, &[], &Reported::default(), now)
            .unwrap());
    }
    db
}

/// `node` enrolled as an agent of lyon (what the enrolment rules would have recorded).
fn enrol_agent(db: &Db, node: &str, now: i64) {
    db.conn
        .execute(
            "INSERT INTO nodes (site, node, role, enrolled_at) VALUES ('lyon', ?1, 'agent', ?2)",
            params![node, now],
        )
        .unwrap();
}

#[test]
fn a_relay_cannot_make_up_nucs_that_never_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    assert!(!db
        .record_agent_report("lyon", "nuc-ghost", &[], &Reported::default(), 100)
        .unwrap());
    assert!(db.fleet(100, 1800).unwrap().is_empty());
}

fn bindings(db: &Db) -> Vec<(String, String, String)> {
    db.seat_bindings()
        .unwrap()
        .remove("lyon")
        .unwrap_or_default()
        .into_iter()
        .map(|b| (b.room, b.seat, b.node))
        .collect()
}

fn b(room: &str, seat: &str, node: &str) -> (String, String, String) {
    (room.into(), seat.into(), node.into())
}

#[test]
fn a_node_binds_only_to_an_existing_seat_and_only_if_it_is_a_known_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = seated(dir.path(), 100);
    assert!(matches!(
        db.bind_seat("lyon", "salle-1", "pc-9", "nuc-a", false),
        Err(DbError::NoSeat { .. })
    ));
    assert!(matches!(
        db.bind_seat("lyon", "salle-1", "pc-1", "nuc-unknown", false),
        Err(DbError::NoAgent { .. })
    ));
    db.record_report("lyon", "relay-1", "relay", &[], &Reported::default(), 100)
        .unwrap();
    assert!(matches!(
        db.bind_seat("lyon", "salle-1", "pc-1", "relay-1", false),
        Err(DbError::NoAgent { .. })
    ));
    // The schema refuses it too, whoever writes.
    let e = db
        .conn
        .execute(
            "UPDATE nodes SET room = 'salle-1', seat = 'pc-9' WHERE node = 'nuc-a'",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("no such seat"), "{e}");
    assert!(bindings(&db).is_empty());
}

#[test]
fn a_seat_holds_one_node_and_rebinding_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = seated(dir.path(), 100);
    let bound = db
        .bind_seat("lyon", "salle-1", "pc-1", "nuc-a", false)
        .unwrap();
    assert_eq!(bound, Bound::default());
    // Again: nothing changes.
    db.bind_seat("lyon", "salle-1", "pc-1", "nuc-a", false)
        .unwrap();
    // Another node on the same seat replaces it.
    let bound = db
        .bind_seat("lyon", "salle-1", "pc-1", "nuc-b", false)
        .unwrap();
    assert_eq!(bound.replaced.as_deref(), Some("nuc-a"));
    assert_eq!(bindings(&db), vec![b("salle-1", "pc-1", "nuc-b")]);
    // A bound node bound elsewhere moves: its old seat is empty.
    let bound = db
        .bind_seat("lyon", "salle-1", "pc-2", "nuc-b", false)
        .unwrap();
    assert_eq!(
        bound.moved_from,
        Some(("salle-1".to_owned(), "pc-1".to_owned()))
    );
    assert_eq!(bindings(&db), vec![b("salle-1", "pc-2", "nuc-b")]);
    // The schema keeps one node per seat whoever writes.
    let e = db
        .conn
        .execute(
            "UPDATE nodes SET room = 'salle-1', seat = 'pc-2' WHERE node = 'nuc-a'",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("UNIQUE"), "{e}");
    // Only a spare may replace a seat's node.
    assert!(matches!(
        db.bind_seat("lyon", "salle-1", "pc-1", "nuc-b", true),
        Err(DbError::NotSpare { .. })
    ));
    let bound = db
        .bind_seat("lyon", "salle-1", "pc-2", "nuc-s", true)
        .unwrap();
    assert_eq!(bound.replaced.as_deref(), Some("nuc-b"));
    let fleet = db.fleet(100, 1800).unwrap();
    let seat = |n: &str| fleet.iter().find(|r| r.node == n).unwrap().seat.clone();
    assert_eq!(seat("nuc-s").as_deref(), Some("salle-1/pc-2"));
    assert_eq!(seat("nuc-b"), None);
}

#[test]
fn take_over_binds_the_spare_to_the_one_silent_seat_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = seated(dir.path(), 100);
    db.bind_seat("lyon", "salle-1", "pc-1", "nuc-a", false)
        .unwrap();
    db.bind_seat("lyon", "salle-1", "pc-2", "nuc-b", false)
        .unwrap();
    assert!(db.take_over(200, 1800, None).unwrap().is_empty());
    // An hour later only nuc-a and the spare have reported.
    let later = 100 + 3600;
    db.record_agent_report("lyon", "nuc-a", &[], &Reported::default(), later)
        .unwrap();
    db.record_agent_report("lyon", "nuc-s", &[], &Reported::default(), later)
        .unwrap();
    let decisions = db.take_over(later, 1800, Some("lyon")).unwrap();
    assert_eq!(
        decisions,
        vec![(
            "lyon".to_owned(),
            Decision::Bind {
                spare: "nuc-s".into(),
                room: "salle-1".into(),
                seat: "pc-2".into(),
                replaced: Some("nuc-b".into()),
            }
        )]
    );
    assert_eq!(
        bindings(&db),
        vec![b("salle-1", "pc-1", "nuc-a"), b("salle-1", "pc-2", "nuc-s")]
    );
    // Done: nothing more to decide.
    assert!(db.take_over(later, 1800, None).unwrap().is_empty());
}

#[test]
fn a_confirm_site_keeps_its_policy_and_fleet_shows_why_the_spare_waits() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = seated(dir.path(), 100);
    db.set_site(
        "lyon",
        &SiteChange {
            takeover: Some(Policy::Confirm),
            ..SiteChange::default()
        },
    )
    .unwrap();
    // Changing the site without a policy keeps it.
    db.set_site(
        "lyon",
        &SiteChange {
            windows: Some("21:00-06:00".into()),
            ..SiteChange::default()
        },
    )
    .unwrap();
    assert_eq!(db.sites().unwrap()[0].takeover, Policy::Confirm);
    db.bind_seat("lyon", "salle-1", "pc-1", "nuc-a", false)
        .unwrap();
    db.bind_seat("lyon", "salle-1", "pc-2", "nuc-b", false)
        .unwrap();
    let later = 100 + 3600;
    for node in ["nuc-a", "nuc-s"] {
        db.record_agent_report("lyon", node, &[], &Reported::default(), later)
            .unwrap();
    }
    let decisions = db.take_over(later, 1800, None).unwrap();
    assert!(matches!(&decisions[..], [(_, Decision::Wait { .. })]));
    assert_eq!(bindings(&db).len(), 2, "a confirm site binds nothing");
    let fleet = db.fleet(later, 1800).unwrap();
    let s = fleet.iter().find(|r| r.node == "nuc-s").unwrap();
    assert!(
        crate::fleet::attention(s).contains("policy confirm: can replace salle-1/pc-2"),
        "{}",
        crate::fleet::attention(s)
    );
}

#[test]
fn a_relay_cannot_report_as_another_relay_of_its_site() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    db.record_report("lyon", "relay-2", "relay", &[], &Reported::default(), 100)
        .unwrap();
    assert!(!db
        .record_agent_report("lyon", "relay-2", &[], &Reported::default(), 200)
        .unwrap());
    let fleet = db.fleet(200, 1800).unwrap();
    assert_eq!(fleet[0].last_seen, Some(100));
    assert_eq!(fleet[0].role, "relay");
}

#[test]
fn bad_sites_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("c.db")).unwrap();
    assert!(db
        .add_site("lyon", "Europe/Lyon", "22:00-06:00", 20, None)
        .unwrap_err()
        .to_string()
        .contains("time zone"));
    assert!(db
        .add_site("lyon", "Europe/Paris", "22h-6h", 20, None)
        .unwrap_err()
        .to_string()
        .contains("HH:MM"));
    assert!(db
        .add_site("../x", "Europe/Paris", "22:00-06:00", 20, None)
        .is_err());
    assert!(matches!(
        db.add_room("nowhere", "r"),
        Err(DbError::NoSite(_))
    ));
}

mod calendar_input {
    use super::*;
    use image_tools::mutation::{mutate_text, Edit};
    use proptest::prelude::*;

    /// Feeds 256 calendars to one catalogue: each either imports (and the sessions grow by
    /// what it says) or is refused with an error naming a line of the file, and then nothing
    /// was written. Never a panic.
    fn imports_or_names_a_line(
        text: impl Strategy<Value = String>,
        import: fn(&mut Db, &str, &str) -> Result<usize, DbError>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = std::cell::RefCell::new(sample(dir.path()));
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
        let outcome = runner.run(&text, |text| {
            let mut db = db.borrow_mut();
            let before = db.sessions(None).unwrap().len();
            match import(&mut db, "cal", &text) {
                Ok(n) => prop_assert_eq!(db.sessions(None).unwrap().len(), before + n),
                Err(DbError::Calendar { file, line, .. }) => {
                    prop_assert_eq!(file, "cal");
                    prop_assert!(
                        line >= 1 && line <= text.lines().count().max(1),
                        "line {line}"
                    );
                    prop_assert_eq!(db.sessions(None).unwrap().len(), before);
                }
                Err(DbError::Unmatched { file, events }) => {
                    prop_assert_eq!(file, "cal");
                    for e in events {
                        prop_assert!(
                            e.line >= 1 && e.line <= text.lines().count().max(1),
                            "line {}",
                            e.line
                        );
                    }
                    prop_assert_eq!(db.sessions(None).unwrap().len(), before);
                }
                Err(e) => prop_assert!(false, "not a calendar error: {e}"),
            }
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }

    /// Each file as a calendar of its own (a sync of the same calendar would replace the last
    /// one's sessions): the sessions it added.
    fn import_ics(db: &mut Db, name: &str, text: &str) -> Result<usize, DbError> {
        static CALENDARS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALENDARS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = db.sync_ics(
            &format!("calendar {n}"),
            name,
            text.as_bytes(),
            i64::MIN,
            None,
            Apply::Whole,
        )?;
        Ok(s.changes.added.len())
    }

    fn edits() -> impl Strategy<Value = Vec<Edit>> {
        proptest::collection::vec(any::<(u8, usize, usize)>().prop_map(Into::into), 1..6)
    }

    fn random() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,300}",
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    }

    #[test]
    fn random_csv_imports_or_names_a_line() {
        imports_or_names_a_line(random(), Db::import_csv);
    }

    #[test]
    fn mutated_csv_imports_or_names_a_line() {
        imports_or_names_a_line(edits().prop_map(|e| mutate_text(GOOD, &e)), Db::import_csv);
    }

    #[test]
    fn random_ics_imports_or_names_a_line() {
        let with_event = random().prop_map(|t| format!("BEGIN:VEVENT\r\n{t}"));
        imports_or_names_a_line(prop_oneof![random(), with_event], import_ics);
    }

    #[test]
    fn mutated_ics_imports_or_names_a_line() {
        imports_or_names_a_line(edits().prop_map(|e| mutate_text(ICS, &e)), import_ics);
    }
}

mod calendar_sync;
mod rules;
