//! Calendars as spreadsheets and calendar applications export them (the files under
//! `tests/fixtures/`) parse to exactly the sessions they hold (`excel-fr.csv` is imported end to
//! end too: tests/e2e/admin_api.rs; the Thunderbird exports in tests/e2e/calendar_sync.rs).

#![allow(clippy::unwrap_used)]

use nightcast_controller::calendar::{csv, ics, Row, When};

fn bytes(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(path).unwrap()
}

fn fixture(name: &str) -> String {
    String::from_utf8(bytes(name)).unwrap()
}

fn row(line: usize, f: [&str; 4], start: &str, end: &str) -> Row {
    Row {
        line,
        site: f[0].into(),
        room: f[1].into(),
        master: f[2].into(),
        version: f[3].into(),
        start: When::Local(start.parse().unwrap()),
        end: When::Local(end.parse().unwrap()),
        event: None,
        texts: None,
    }
}

#[test]
fn excel_csv_utf8_with_its_bom_commas_quotes_and_crlf() {
    let text = fixture("excel-utf8.csv");
    assert!(
        text.starts_with('\u{feff}') && text.contains("\r\n"),
        "the fixture lost its BOM or CRLF"
    );
    assert_eq!(
        csv::parse(&text).unwrap(),
        [
            row(
                2,
                ["lyon", "Lyon, bâtiment A", "win10", "1"],
                "2030-01-07T08:30",
                "2030-01-07T17:00"
            ),
            row(
                3,
                ["lyon", "salle-1", "win \"pro\"", "2"],
                "2030-01-08T09:00",
                "2030-01-08T12:30"
            ),
        ]
    );
}

#[test]
fn french_excel_with_semicolons_french_headers_and_dates() {
    let text = fixture("excel-fr.csv");
    assert!(text.contains("\r\n"), "the fixture lost its CRLF");
    assert_eq!(
        csv::parse(&text).unwrap(),
        [
            row(
                2,
                ["lyon", "salle-1", "win10", "1"],
                "2030-02-04T08:30",
                "2030-02-04T17:00"
            ),
            row(
                3,
                ["lyon", "salle-2", "win10", "1"],
                "2030-02-05T09:15",
                "2030-02-05T12:00"
            ),
        ]
    );
}

/// An iCalendar export's sessions as `UID-suffix ROOM START-END` on their own wall clock and
/// zone, and for an occurrence the start its rule gave it; sorted.
fn sessions(cal: &ics::Calendar) -> Vec<String> {
    let civil = |w: &When| match w {
        When::Zoned(dt, tz) => format!("{} {tz}", dt.strftime("%Y-%m-%d %H:%M")),
        When::Local(dt) => format!("{} floating", dt.strftime("%Y-%m-%d %H:%M")),
        When::Unix(t) => format!("{t} UTC"),
    };
    let mut out: Vec<String> = cal
        .rows
        .iter()
        .map(|r| {
            let id = r.event.as_ref().unwrap();
            let uid: String = id.uid.chars().take(4).collect();
            let end = civil(&r.end);
            let end_time = end.split(' ').nth(1).unwrap();
            let instance = match &id.instance {
                Some(i) => format!(" (of {})", civil(i)),
                None => String::new(),
            };
            format!(
                "{} {uid} {}/{} {} {}-{end_time}{instance}",
                civil(&r.start),
                r.site,
                r.room,
                r.master,
                r.version
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn google_calendar_weekly_with_exdate_and_a_moved_occurrence_daily_all_day_cancelled_and_past() {
    let raw = bytes("google.ics");
    assert!(
        raw.windows(2).any(|w| w == b"\r\n") && std::str::from_utf8(&raw).is_err(),
        "the fixture lost its CRLF, or its fold inside a UTF-8 character"
    );
    let cal = ics::parse(&raw).unwrap();
    let p = "Europe/Paris";
    assert_eq!(
        sessions(&cal),
        [
            // Weekly, COUNT=6, less the EXDATE of 21 January: 5, the one of 4 February moved to
            // the afternoon by its RECURRENCE-ID (moved, not added).
            format!("2025-10-06 08:30 {p} 1a2s lyon/salle-1 win10 1-17:00"),
            format!(
                "2030-01-07 08:30 {p} 5u3k lyon/salle-1 win10 1-17:00 (of 2030-01-07 08:30 {p})"
            ),
            format!(
                "2030-01-14 08:30 {p} 5u3k lyon/salle-1 win10 1-17:00 (of 2030-01-14 08:30 {p})"
            ),
            format!(
                "2030-01-28 08:30 {p} 5u3k lyon/salle-1 win10 1-17:00 (of 2030-01-28 08:30 {p})"
            ),
            format!(
                "2030-02-04 13:30 {p} 5u3k lyon/salle-1 win10 1-17:00 (of 2030-02-04 08:30 {p})"
            ),
            format!(
                "2030-02-11 08:30 {p} 5u3k lyon/salle-1 win10 1-17:00 (of 2030-02-11 08:30 {p})"
            ),
            // Daily, COUNT=3.
            format!(
                "2030-03-11 09:00 {p} 0c7f lyon/salle-2 win10 1-12:30 (of 2030-03-11 09:00 {p})"
            ),
            format!(
                "2030-03-12 09:00 {p} 0c7f lyon/salle-2 win10 1-12:30 (of 2030-03-12 09:00 {p})"
            ),
            format!(
                "2030-03-13 09:00 {p} 0c7f lyon/salle-2 win10 1-12:30 (of 2030-03-13 09:00 {p})"
            ),
        ]
    );
    // The cancelled event is counted, the all-day one noted with its line; the past one is
    // here, and skipped where the site's zone is known (db::calendar).
    assert_eq!(cal.cancelled, 1);
    assert_eq!(cal.notes.len(), 1);
    assert!(
        cal.notes[0]
            .what
            .contains("all-day event \"Lundi de Pâques (fermé)\" ignored"),
        "{}",
        cal.notes[0]
    );
    let text = String::from_utf8_lossy(&raw);
    let line = 1 + text[..text.find("DTSTART;VALUE=DATE").unwrap()]
        .matches('\n')
        .count()
        - 1;
    assert_eq!(cal.notes[0].line, line);
}

#[test]
fn outlook_with_windows_zone_names_and_a_cancelled_occurrence() {
    let raw = bytes("outlook.ics");
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(text.contains("TZID=\"Romance Standard Time\"") && text.contains("\r\n "));
    let cal = ics::parse(&raw).unwrap();
    let (p, b) = ("Europe/Paris", "Europe/Berlin");
    assert_eq!(
        sessions(&cal),
        [
            // Daily, COUNT=3, the second cancelled by an exception of its own.
            format!(
                "2030-03-04 08:30 {p} 0400 lyon/salle-1 win10 1-17:00 (of 2030-03-04 08:30 {p})"
            ),
            format!(
                "2030-03-06 08:30 {p} 0400 lyon/salle-1 win10 1-17:00 (of 2030-03-06 08:30 {p})"
            ),
            format!("2030-03-18 09:00 {b} 0400 lyon/salle-2 win10 1-12:00"),
        ]
    );
    assert_eq!(cal.cancelled, 1);
    assert!(cal.notes.is_empty());
}

#[test]
fn thunderbird_until_byday_interval_rdate_and_duration() {
    let cal = ics::parse(&bytes("thunderbird.ics")).unwrap();
    let p = "Europe/Paris";
    let mut want = Vec::new();
    // Mondays and Wednesdays UNTIL 13 February 08:00 UTC (09:00 in Paris: the last one, UNTIL
    // is inclusive), and one RDATE, a Friday.
    for d in [
        "01-14", "01-16", "01-21", "01-23", "01-28", "01-30", "02-04", "02-06", "02-11", "02-13",
        "02-15",
    ] {
        want.push(format!(
            "2030-{d} 09:00 {p} c2b1 lyon/salle-1 win10 1-12:00 (of 2030-{d} 09:00 {p})"
        ));
    }
    // Every other Thursday, COUNT=4, DURATION PT3H30M.
    for d in ["01-10", "01-24", "02-07", "02-21"] {
        want.push(format!(
            "2030-{d} 13:30 {p} 0f1e lyon/salle-2 win10 1-17:00 (of 2030-{d} 13:30 {p})"
        ));
    }
    want.push(format!(
        "2030-01-28 08:30 {p} e8f7 lyon/salle-2 win10 1-17:00"
    ));
    want.sort();
    assert_eq!(sessions(&cal), want);
    assert_eq!((cal.cancelled, cal.notes.len()), (0, 0));
}

#[test]
fn an_error_in_an_export_names_its_line() {
    let text = fixture("thunderbird.ics");
    for (from, to, what) in [
        ("BYDAY=MO,WE", "BYDAY=MO,1WE", "RRULE day \"1WE\""),
        ("DURATION:PT3H30M", "DURATION:3h30", "DURATION \"3h30\""),
        (
            "DTSTART;TZID=Europe/Paris:20300110T133000",
            "DTSTART;TZID=Paris:20300110T133000",
            "unknown time zone \"Paris\"",
        ),
    ] {
        let changed = text.replacen(from, to, 1);
        let line = 1 + changed[..changed.find(to).unwrap()].matches('\n').count();
        let e = ics::parse(changed.as_bytes()).unwrap_err();
        assert!(e.line == line && e.what.contains(what), "{to}: {e}");
    }
}
