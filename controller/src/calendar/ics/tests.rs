//! The parser on events written by hand, one case each (the exports of real applications are
//! in `controller/tests/calendar_fixtures.rs`).

use super::*;

fn rows(text: &str) -> Vec<Row> {
    parse(text.as_bytes()).unwrap().rows
}

fn event(lines: &[&str]) -> String {
    let mut s = String::from(
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:win10 1\r\nLOCATION:lyon/salle-1\r\n",
    );
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    s
}

const PARIS: [&str; 2] = [
    "DTSTART;TZID=Europe/Paris:20261019T083000",
    "DTEND;TZID=Europe/Paris:20261019T170000",
];

/// Each session's start, as `YYYY-MM-DD HH:MM` on its own wall clock.
fn starts(text: &str) -> Vec<String> {
    rows(text)
        .iter()
        .map(|r| {
            r.start
                .civil()
                .unwrap()
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .collect()
}

#[test]
fn a_weekly_course_with_until_and_exdates_keeps_its_wall_clock() {
    let text = event(&[
        PARIS[0],
        PARIS[1],
        // Until the Monday 16 November (in UTC, as the RFC wants with a TZID), holidays out.
        "RRULE:FREQ=WEEKLY;BYDAY=MO,TH;UNTIL=20261116T073000Z",
        "EXDATE;TZID=Europe/Paris:20261029T083000,20261102T083000",
        "EXDATE;VALUE=DATE:20261105",
    ]);
    assert_eq!(
        starts(&text),
        [
            "2026-10-19 08:30",
            "2026-10-22 08:30",
            "2026-10-26 08:30",
            "2026-11-09 08:30",
            "2026-11-12 08:30",
            "2026-11-16 08:30",
        ]
    );
    let rows = rows(&text);
    assert!(rows
        .iter()
        .all(|r| r.line == 2 && r.end.civil().unwrap().time() == jiff::civil::time(17, 0, 0, 0)));
}

#[test]
fn utc_and_floating_courses_repeat_too() {
    let utc = event(&[
        "DTSTART:20261201T073000Z",
        "DTEND:20261201T160000Z",
        "RRULE:FREQ=DAILY;COUNT=2",
    ]);
    let rows = rows(&utc);
    assert_eq!(
        rows[1].start.resolve("Europe/Paris").unwrap()
            - rows[0].start.resolve("Europe/Paris").unwrap(),
        86_400
    );
    let floating = event(&[
        "DTSTART:20261201T083000",
        "DTEND:20261201T170000",
        "RRULE:FREQ=DAILY;UNTIL=20261203",
    ]);
    assert_eq!(
        starts(&floating),
        ["2026-12-01 08:30", "2026-12-02 08:30", "2026-12-03 08:30"]
    );
}

#[test]
fn a_moved_occurrence_replaces_its_original() {
    let mut text = event(&[
        PARIS[0],
        PARIS[1],
        "UID:compta-1",
        "RRULE:FREQ=WEEKLY;COUNT=3",
    ]);
    text = text.replace(
        "END:VCALENDAR",
        "BEGIN:VEVENT\r\nUID:compta-1\r\nRECURRENCE-ID;TZID=Europe/Paris:20261026T083000\r\n\
         SUMMARY:win10 1\r\nLOCATION:lyon/salle-1\r\n\
         DTSTART;TZID=Europe/Paris:20261027T133000\r\nDTEND;TZID=Europe/Paris:20261027T170000\r\n\
         END:VEVENT\r\nEND:VCALENDAR",
    );
    assert_eq!(
        starts(&text),
        ["2026-10-19 08:30", "2026-11-02 08:30", "2026-10-27 13:30"]
    );
    let e = parse(
        text.replace("20261026T083000", "20261025T083000")
            .as_bytes(),
    )
    .unwrap_err();
    assert!(
        e.line == 12 && e.what.contains("names no occurrence"),
        "{e}"
    );
}

#[test]
fn what_is_not_expanded_is_refused_with_its_line() {
    for (extra, line, what) in [
        (
            "RRULE:FREQ=MONTHLY;COUNT=3",
            7,
            "FREQ=MONTHLY is not supported",
        ),
        ("RRULE:FREQ=WEEKLY", 7, "repeat forever"),
        ("RDATE:20261201T083000", 7, "floating"),
        (
            "RDATE;VALUE=PERIOD:20261201T083000Z/PT1H",
            7,
            "period is not supported",
        ),
        ("DURATION:PT1H", 7, "both DTEND and DURATION"),
        (
            "DTSTART;TZID=Romance Time:20261019T083000",
            7,
            "unknown time zone",
        ),
        ("EXRULE:FREQ=WEEKLY;COUNT=2", 7, "EXRULE is not supported"),
        ("EXDATE:3 dec", 7, "not a date-time"),
        (
            "RRULE:FREQ=WEEKLY;COUNT=2\r\nRRULE:FREQ=DAILY;COUNT=2",
            8,
            "second RRULE",
        ),
        (
            "RRULE:FREQ=WEEKLY;COUNT=2\r\nEXDATE:20261026T083000",
            8,
            "floating time",
        ),
        ("RECURRENCE-ID:20261026T083000", 7, "without a UID"),
    ] {
        let e = parse(event(&[PARIS[0], PARIS[1], extra]).as_bytes()).unwrap_err();
        assert!(e.line == line && e.what.contains(what), "{extra}: {e}");
    }
    let floating = event(&[
        "DTSTART:20261201T083000",
        "DTEND:20261201T170000",
        "RRULE:FREQ=DAILY;UNTIL=20261203T000000Z",
    ]);
    let e = parse(floating.as_bytes()).unwrap_err();
    assert!(e.line == 7 && e.what.contains("floating"), "{e}");
}

#[test]
fn words_are_kept_unescaped_for_the_rules_and_errors_quote_them_so() {
    let text = event(&[PARIS[0], PARIS[1]]).replace(
        "LOCATION:lyon/salle-1",
        "LOCATION:Lyon\\, Salle 1 (bâtiment A)",
    );
    // A location in words is for the mapping rules: kept as the DSI wrote it, unescaped.
    let r = &rows(&text)[0];
    let texts = r.texts.as_ref().unwrap();
    assert_eq!(
        texts.location.as_deref(),
        Some("Lyon, Salle 1 (bâtiment A)")
    );
    assert_eq!((r.site.as_str(), r.room.as_str()), ("", ""));
    let given = event(&[PARIS[0], PARIS[1], "X-NIGHTCAST-MASTER:Excel\\, niveau 2"]);
    let e = parse(given.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 7: \"Excel, niveau 2\" does not name a master as NAME VERSION"
    );
}

#[test]
fn components_must_nest_and_close_and_a_uid_names_one_event() {
    for (text, line, what) in [
        (
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nEND:VCALENDAR\r\n",
            3,
            "closes BEGIN:VEVENT of line 2",
        ),
        ("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n", 2, "never closed"),
        ("END:VEVENT\r\n", 1, "without BEGIN"),
        ("BEGIN:VEVENT\r\nBEGIN:VEVENT\r\n", 2, "inside a VEVENT"),
    ] {
        let e = parse(text.as_bytes()).unwrap_err();
        assert!(e.line == line && e.what.contains(what), "{text:?}: {e}");
    }
    let twice = event(&[PARIS[0], PARIS[1], "UID:a"]).replace(
        "END:VCALENDAR",
        "BEGIN:VEVENT\r\nUID:a\r\nSUMMARY:win10 1\r\nLOCATION:lyon/salle-1\r\n\
         DTSTART:20261201T083000\r\nDTEND:20261201T170000\r\nEND:VEVENT\r\nEND:VCALENDAR",
    );
    let e = parse(twice.as_bytes()).unwrap_err();
    assert!(
        e.line == 9 && e.what.contains("already the event at line 2"),
        "{e}"
    );
}

#[test]
fn an_alarm_inside_an_event_does_not_lend_it_its_properties() {
    // The VALARM's SUMMARY names no master: it must not be taken for the event's.
    let text = event(&[
        PARIS[0],
        PARIS[1],
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        "SUMMARY:Rappel de la formation",
        "TRIGGER:-PT15M",
        "END:VALARM",
    ]);
    assert_eq!(rows(&text)[0].master, "win10");
}

#[test]
fn an_event_without_uid_is_known_by_its_start_and_place() {
    let id = rows(&event(&[PARIS[0], PARIS[1]]))[0]
        .event
        .clone()
        .unwrap();
    assert_eq!(id.uid, "no-uid:20261019T083000:lyon/salle-1:win10 1");
    assert_eq!(id.instance, None);
}

/// The parser on random bytes and on the Google, Outlook and Thunderbird exports changed a
/// little (`image_tools::mutation`): each either reads or names a line of the file; never a panic.
mod property {
    use image_tools::mutation::{mutate, Edit};
    use proptest::prelude::*;

    use super::super::{parse, parse_until};

    fn exports() -> impl Strategy<Value = Vec<u8>> {
        let fixtures: Vec<&'static [u8]> = vec![
            include_bytes!("../../../tests/fixtures/google.ics"),
            include_bytes!("../../../tests/fixtures/outlook.ics"),
            include_bytes!("../../../tests/fixtures/thunderbird.ics"),
        ];
        let edits =
            proptest::collection::vec(any::<(u8, usize, usize)>().prop_map(Edit::from), 1..6);
        (proptest::sample::select(fixtures), edits).prop_map(|(f, e)| mutate(f, &e))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn random_and_mutated_exports_read_or_name_a_line(
            bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..400), exports()],
        ) {
            let lines = bytes.split(|b| *b == b'\n').count();
            for outcome in [parse(&bytes), parse_until(&bytes, jiff::civil::date(2031, 1, 1))] {
                if let Err(e) = outcome {
                    prop_assert!(e.line >= 1 && e.line <= lines, "{e} ({lines} lines)");
                }
            }
        }
    }
}
