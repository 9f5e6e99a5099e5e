//! Calendars as spreadsheets and calendar applications export them (the files under
//! `tests/fixtures/`) parse to exactly the sessions they hold (`excel-fr.csv` is imported end to
//! end too: tests/e2e/admin_api.rs; the Thunderbird exports in tests/e2e/calendar_sync.rs).

#![allow(clippy::unwrap_used)]

use nightcast_controller::calendar::{csv, ics, Row, When, Zone};

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

const OUTLOOK_PARIS: &str = "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris";

/// Each session as `UID START END (of INSTANCE)` in Unix seconds, sorted: what the catalogue
/// stores of it.
fn instants(cal: &ics::Calendar) -> Vec<(String, i64, i64, Option<i64>)> {
    let mut out: Vec<_> = cal
        .rows
        .iter()
        .map(|r| {
            let id = r.event.as_ref().unwrap();
            (
                id.uid.clone(),
                r.start.resolve("UTC").unwrap(),
                r.end.resolve("UTC").unwrap(),
                id.instance.as_ref().map(|i| i.resolve("UTC").unwrap()),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn outlook_display_name_zone_is_read_by_its_vtimezone_as_europe_paris() {
    let raw = bytes("outlook-display-name.ics");
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(
        text.contains(&format!("TZID:{OUTLOOK_PARIS}\r\n"))
            && text.contains(&format!(
                "DTSTART;TZID=\"{OUTLOOK_PARIS}\":20300114T083\r\n 000"
            )),
        "the fixture lost its display name, its CRLF or its folding"
    );
    let cal = ics::parse(&raw).unwrap();
    let p = OUTLOOK_PARIS;
    assert_eq!(
        sessions(&cal),
        [
            format!("2030-01-14 08:30 {p} 0400 lyon/salle-1 win10 1-17:00"),
            // Mondays across the night summer time starts; the second moved to the afternoon.
            format!(
                "2030-03-25 08:30 {p} 0400 lyon/salle-1 win10 1-17:00 (of 2030-03-25 08:30 {p})"
            ),
            format!(
                "2030-04-01 13:30 {p} 0400 lyon/salle-1 win10 1-17:00 (of 2030-04-01 08:30 {p})"
            ),
            format!(
                "2030-04-08 08:30 {p} 0400 lyon/salle-1 win10 1-17:00 (of 2030-04-08 08:30 {p})"
            ),
            format!("2030-06-17 09:00 {p} 0400 lyon/salle-2 win10 1-12:30"),
            // Mondays across the night summer time ends, less the EXDATE of 4 November.
            format!(
                "2030-10-21 08:30 {p} 0400 lyon/salle-2 win10 1-17:00 (of 2030-10-21 08:30 {p})"
            ),
            format!(
                "2030-10-28 08:30 {p} 0400 lyon/salle-2 win10 1-17:00 (of 2030-10-28 08:30 {p})"
            ),
            format!(
                "2030-11-11 08:30 {p} 0400 lyon/salle-2 win10 1-17:00 (of 2030-11-11 08:30 {p})"
            ),
        ]
    );
    // The same calendar with TZID Europe/Paris: the same instants, session by session.
    let unfolded = text.replace("\r\n ", "");
    let paris = unfolded.replace(&format!("\"{OUTLOOK_PARIS}\""), "Europe/Paris");
    assert!(!paris.contains(&format!("TZID=\"{OUTLOOK_PARIS}")));
    let paris = ics::parse(paris.as_bytes()).unwrap();
    assert_eq!(instants(&cal), instants(&paris));
    let utc = |s: &str| {
        jiff::tz::TimeZone::UTC
            .to_timestamp(s.parse().unwrap())
            .unwrap()
            .as_second()
    };
    let starts: Vec<i64> = instants(&cal).iter().map(|s| s.1).collect();
    for (winter_or_summer, at) in [
        ("CET", "2030-03-25T07:30"),
        ("CEST", "2030-04-01T11:30"),
        ("CEST", "2030-10-21T06:30"),
        ("CET", "2030-10-28T07:30"),
    ] {
        assert!(
            starts.contains(&utc(at)),
            "{winter_or_summer} {at}: {starts:?}"
        );
    }
    // And the zone itself, every hour of 2030 on the wall clock.
    let When::Zoned(_, Zone::Rules(rules)) = &cal.rows[0].start else {
        panic!("not read by its VTIMEZONE: {:?}", cal.rows[0].start)
    };
    let europe_paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let mut t: jiff::civil::DateTime = "2030-01-01T00:00".parse().unwrap();
    while t.year() == 2030 {
        let want = europe_paris.to_timestamp(t).unwrap().as_second();
        assert_eq!(rules.to_seconds(t), Ok(want), "{t}");
        t = t.checked_add(jiff::Span::new().hours(1)).unwrap();
    }
}

#[test]
fn a_zone_name_no_one_knows_without_its_vtimezone_is_refused_with_its_line() {
    let text = fixture("outlook-display-name.ics");
    let begin = text.find("BEGIN:VTIMEZONE").unwrap();
    let end = text.find("END:VTIMEZONE\r\n").unwrap() + "END:VTIMEZONE\r\n".len();
    let without = format!("{}{}", &text[..begin], &text[end..]);
    let line = 1 + without[..without.find("DTSTART;TZID=").unwrap()]
        .matches('\n')
        .count();
    let e = ics::parse(without.as_bytes()).unwrap_err();
    assert!(
        e.line == line
            && e.what
                .contains("DTSTART: unknown time zone \"(UTC+01:00) Brussels"),
        "{e}"
    );
    // A VTIMEZONE whose rules are not understood: refused at its own line.
    let monthly = text.replacen("FREQ=YEARLY;INTERVAL=1", "FREQ=MONTHLY;INTERVAL=1", 1);
    let line = 1 + monthly[..monthly.find("FREQ=MONTHLY").unwrap()]
        .matches('\n')
        .count();
    let e = ics::parse(monthly.as_bytes()).unwrap_err();
    assert!(
        e.line == line && e.what.contains("FREQ=MONTHLY is not supported"),
        "{e}"
    );
}
