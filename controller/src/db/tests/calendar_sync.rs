//! Re-importing an iCalendar export (`Db::sync_ics`) with the fixtures of
//! `controller/tests/fixtures/`, and the migration that gave sessions their `UID`.

use std::path::Path;

use super::*;
use crate::db::schema;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// The sample catalogue with the second room the fixtures use.
fn catalogue(dir: &Path) -> Db {
    let db = sample(dir);
    db.add_room("lyon", "salle-2").unwrap();
    db
}

/// 1 December 2026, 12:00 UTC: the fixtures' 2030 sessions are ahead, 2025 is past.
const NOW: i64 = 1_796_126_400;

/// Each session as `ROOM START` in UTC, in order.
fn listed(db: &Db) -> Vec<String> {
    db.sessions(None)
        .unwrap()
        .iter()
        .map(|s| {
            let t = jiff::Timestamp::from_second(s.start).unwrap();
            format!("{} {}", s.room, t.strftime("%Y-%m-%d %H:%M"))
        })
        .collect()
}

#[test]
fn a_google_export_imports_every_occurrence_skips_the_past_and_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = catalogue(dir.path());
    let s = db
        .sync_ics(
            "google",
            "google.ics",
            &fixture("google.ics"),
            NOW,
            None,
            Apply::Whole,
        )
        .unwrap();
    // 5 weekly (one moved), 3 daily; the 2025 session skipped, the cancelled one and the
    // all-day one left out.
    assert_eq!(s.changes.added.len(), 8);
    assert_eq!((s.changes.past, s.cancelled, s.notes.len()), (1, 1, 1));
    assert_eq!(s.added_ids.len(), 8);
    assert_eq!(listed(&db).len(), 8);
    assert!(listed(&db).contains(&"salle-1 2030-02-04 12:30".to_owned()));
    let again = db
        .sync_ics(
            "google",
            "google.ics",
            &fixture("google.ics"),
            NOW,
            None,
            Apply::Whole,
        )
        .unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.changes.unchanged, 8);
    assert_eq!(listed(&db).len(), 8);
}

#[test]
fn a_changed_export_adds_moves_and_removes_exactly_the_difference_and_a_dry_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = catalogue(dir.path());
    let first = db
        .sync_ics(
            "tb",
            "thunderbird.ics",
            &fixture("thunderbird.ics"),
            NOW,
            None,
            Apply::Whole,
        )
        .unwrap();
    assert_eq!(first.changes.added.len(), 16);
    let before = db.sessions(None).unwrap();
    let changed = fixture("thunderbird-changed.ics");
    let dry = db
        .sync_ics(
            "tb",
            "thunderbird-changed.ics",
            &changed,
            NOW,
            None,
            Apply::DryRun,
        )
        .unwrap();
    assert!(!dry.applied && dry.added_ids.is_empty());
    assert_eq!(
        db.sessions(None).unwrap(),
        before,
        "a dry run changed the catalogue"
    );
    let real = db
        .sync_ics(
            "tb",
            "thunderbird-changed.ics",
            &changed,
            NOW,
            None,
            Apply::Whole,
        )
        .unwrap();
    assert_eq!(real.changes, dry.changes);
    let c = &real.changes;
    assert_eq!(
        (c.added.len(), c.moved.len(), c.removed.len(), c.unchanged),
        (1, 1, 1, 14)
    );
    // The Wednesday 16 January moved to the Thursday: the same session, another time.
    let (old, new) = &c.moved[0];
    assert_eq!(
        (old.session.start, new.session.start),
        (
            local_time("Europe/Paris", "2030-01-16 09:00").unwrap(),
            local_time("Europe/Paris", "2030-01-17 09:00").unwrap()
        )
    );
    let after = db.sessions(None).unwrap();
    assert!(after
        .iter()
        .any(|s| s.id == old.id && s.start == new.session.start));
    assert!(!after.iter().any(|s| s.id == c.removed[0].id));
    assert_eq!(after.len(), before.len());
    // And the new export once more: nothing.
    let again = db
        .sync_ics(
            "tb",
            "thunderbird-changed.ics",
            &changed,
            NOW,
            None,
            Apply::Whole,
        )
        .unwrap();
    assert!(again.changes.is_empty());
}

#[test]
fn another_calendar_or_a_csv_is_never_touched_and_a_clash_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = catalogue(dir.path());
    db.import_csv("term.csv", "site,room,master,version,start,end\nlyon,salle-2,win10,1,2030-03-20 08:00,2030-03-20 10:00\n")
        .unwrap();
    db.sync_ics(
        "outlook",
        "outlook.ics",
        &fixture("outlook.ics"),
        NOW,
        None,
        Apply::Whole,
    )
    .unwrap();
    db.sync_ics(
        "tb",
        "thunderbird.ics",
        &fixture("thunderbird.ics"),
        NOW,
        None,
        Apply::Whole,
    )
    .unwrap();
    assert_eq!(listed(&db).len(), 1 + 3 + 16);
    // An empty export of the Thunderbird calendar removes its sessions, and only them.
    let empty = b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n";
    let s = db
        .sync_ics("tb", "empty.ics", empty, NOW, None, Apply::Whole)
        .unwrap();
    assert_eq!(s.changes.removed.len(), 16);
    assert_eq!(listed(&db).len(), 4);
    // A session on top of the CSV one: refused with its line, nothing written.
    let text = String::from_utf8(fixture("outlook.ics"))
        .unwrap()
        .replace("20300318T090000", "20300320T090000")
        .replace("20300318T120000", "20300320T120000");
    let e = db
        .sync_ics(
            "outlook",
            "outlook.ics",
            text.as_bytes(),
            NOW,
            None,
            Apply::Whole,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("outlook.ics:") && e.contains("already has a session at that time"),
        "{e}"
    );
    assert_eq!(listed(&db).len(), 4);
}

/// A catalogue written by the controller before sessions had a UID (schema 7) opens, keeps its
/// sessions, and takes calendar syncs.
#[test]
fn a_database_of_schema_7_opens_with_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalogue.db");
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        schema::migrate_to(&mut conn, 7).unwrap();
        conn.execute_batch(
            "INSERT INTO sites (name, tz, windows, cap_mbit) VALUES ('lyon', 'Europe/Paris', '22:00-06:00', 20);
             INSERT INTO rooms (site, name) VALUES ('lyon', 'salle-1'), ('lyon', 'salle-2');
             INSERT INTO masters (name, version, size, stored_bytes, manifest, imported_at)
                VALUES ('win10', '1', 1, 1, x'00', 0);
             INSERT INTO sessions (site, room, master, version, start, end)
                VALUES ('lyon', 'salle-1', 'win10', '1', 1900000000, 1900003600);",
        )
        .unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 7);
    }
    let mut db = Db::open(&path).unwrap();
    let s = db.sessions(None).unwrap();
    assert_eq!((s.len(), s[0].start), (1, 1_900_000_000));
    db.sync_ics(
        "tb",
        "thunderbird.ics",
        &fixture("thunderbird.ics"),
        NOW,
        None,
        Apply::Whole,
    )
    .unwrap();
    assert_eq!(db.sessions(None).unwrap().len(), 17);
}

/// Google writes a course "every Tuesday" with no end: its sessions up to the horizon, noted;
/// a later import with the horizon further on adds the next ones and removes none.
#[test]
fn a_course_that_repeats_for_ever_is_imported_up_to_the_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = catalogue(dir.path());
    let ics = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:tuesdays@google.com\r\n\
               DTSTART;TZID=Europe/Paris:20261208T090000\r\nDTEND;TZID=Europe/Paris:20261208T120000\r\n\
               RRULE:FREQ=WEEKLY;BYDAY=TU\r\nSUMMARY:win10 1\r\nLOCATION:lyon/salle-1\r\n\
               END:VEVENT\r\nEND:VCALENDAR\r\n";
    let e = db
        .sync_ics("g", "g.ics", ics.as_bytes(), NOW, None, Apply::Whole)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("g.ics:6:") && e.contains("repeat forever"),
        "{e}"
    );
    // 1 December 2026 + 28 days: Tuesdays 8, 15, 22 and 29 December.
    let s = db
        .sync_ics("g", "g.ics", ics.as_bytes(), NOW, Some(28), Apply::Whole)
        .unwrap();
    assert_eq!(s.changes.added.len(), 4);
    assert!(
        s.notes[0]
            .what
            .contains("repeats for ever: its sessions until 2026-12-29"),
        "{:?}",
        s.notes
    );
    let later = db
        .sync_ics("g", "g.ics", ics.as_bytes(), NOW, Some(42), Apply::Whole)
        .unwrap();
    assert_eq!(
        (
            later.changes.added.len(),
            later.changes.removed.len(),
            later.changes.unchanged
        ),
        (2, 0, 4)
    );
    let e = db
        .sync_ics("g", "g.ics", ics.as_bytes(), NOW, Some(5_000), Apply::Whole)
        .unwrap_err();
    assert!(e.to_string().contains("give 1 to 731"), "{e}");
}

/// An event cancelled in the calendar application (kept in the export with STATUS:CANCELLED)
/// is removed from the catalogue at the next import, and counted as cancelled.
#[test]
fn an_event_cancelled_in_a_new_export_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = catalogue(dir.path());
    let text = String::from_utf8(fixture("thunderbird.ics")).unwrap();
    db.sync_ics("tb", "tb.ics", text.as_bytes(), NOW, None, Apply::Whole)
        .unwrap();
    let confirmed =
        "UID:e8f7a6b5-c4d3-4e2f-a1b0-9c8d7e6f5a4b\r\nSUMMARY:win10 1\r\nSTATUS:CONFIRMED";
    assert!(text.contains(confirmed));
    let cancelled = text.replace(confirmed, &confirmed.replace("CONFIRMED", "CANCELLED"));
    let s = db
        .sync_ics(
            "tb",
            "tb.ics",
            cancelled.as_bytes(),
            NOW,
            None,
            Apply::Whole,
        )
        .unwrap();
    assert_eq!(
        (s.changes.removed.len(), s.cancelled, s.changes.unchanged),
        (1, 1, 15)
    );
    assert_eq!(
        s.changes.removed[0].session.start,
        local_time("Europe/Paris", "2030-01-28 08:30").unwrap()
    );
}
