use super::*;

/// A `VTIMEZONE` from its text (one property a line, no folding: `ics` unfolds), `TZID`
/// first; each line's number is its place in `text`, from 1.
fn block(text: &str) -> Block {
    let mut b = Block::default();
    for (i, l) in text.lines().map(str::trim).enumerate() {
        let line = i + 1;
        let (name, value) = l.split_once(':').unwrap();
        match name {
            "TZID" => (b.line, b.tzid) = (line, value.into()),
            "BEGIN" => b.observances.push((line, vec![])),
            "END" => {}
            _ => b
                .observances
                .last_mut()
                .unwrap()
                .1
                .push((line, name.into(), value.into())),
        }
    }
    b
}

/// As Outlook writes Paris: its display name, onsets in 1601, `INTERVAL=1`.
const OUTLOOK_PARIS: &str = "TZID:(UTC+01:00) Brussels, Copenhagen, Madrid, Paris
    BEGIN:STANDARD
    DTSTART:16010101T030000
    TZOFFSETFROM:+0200
    TZOFFSETTO:+0100
    RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10
    END:STANDARD
    BEGIN:DAYLIGHT
    DTSTART:16010101T020000
    TZOFFSETFROM:+0100
    TZOFFSETTO:+0200
    RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3
    END:DAYLIGHT";

fn rules(text: &str) -> Rules {
    Rules::read(&block(text)).unwrap()
}

fn dt(s: &str) -> DateTime {
    s.parse().unwrap()
}

fn utc(s: &str) -> i64 {
    utc_seconds(dt(s)).unwrap()
}

/// The instant jiff gives `dt` in IANA zone `tz` (compatible disambiguation).
fn iana(tz: &str, dt: DateTime) -> i64 {
    jiff::tz::TimeZone::get(tz)
        .unwrap()
        .to_timestamp(dt)
        .unwrap()
        .as_second()
}

/// Every hour (and half hour) of `year` on the wall clock, and every hour of it in UTC, read
/// by `rules` as IANA zone `tz` reads it.
fn same_as(rules: &Rules, tz: &str, year: i16) {
    let zone = jiff::tz::TimeZone::get(tz).unwrap();
    let mut t = date(year, 1, 1).at(0, 0, 0, 0);
    while t.year() == year {
        assert_eq!(rules.to_seconds(t), Ok(iana(tz, t)), "{tz} wall clock {t}");
        let instant = utc_seconds(t).unwrap();
        let want = zone.to_datetime(jiff::Timestamp::from_second(instant).unwrap());
        assert_eq!(rules.to_civil(instant), Ok(want), "{tz} at {t} UTC");
        t = t.checked_add(jiff::Span::new().minutes(30)).unwrap();
    }
}

fn date(y: i16, m: i8, d: i8) -> Date {
    Date::new(y, m, d).unwrap()
}

#[test]
fn a_winter_and_a_summer_course_in_outlooks_paris() {
    let paris = rules(OUTLOOK_PARIS);
    assert_eq!(
        paris.tzid(),
        "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris"
    );
    assert_eq!(
        paris.to_seconds(dt("2030-01-14T08:30")),
        Ok(utc("2030-01-14T07:30"))
    );
    assert_eq!(
        paris.to_seconds(dt("2030-06-17T09:00")),
        Ok(utc("2030-06-17T07:00"))
    );
}

#[test]
fn the_night_summer_time_starts_a_skipped_time_is_read_by_the_offset_before() {
    let paris = rules(OUTLOOK_PARIS);
    // Sunday 31 March 2030: 02:00 CET is 03:00 CEST.
    for (local, instant) in [
        ("2030-03-31T01:59:59", "2030-03-31T00:59:59"),
        ("2030-03-31T02:00", "2030-03-31T01:00"),
        ("2030-03-31T02:30", "2030-03-31T01:30"),
        ("2030-03-31T03:00", "2030-03-31T01:00"),
        ("2030-03-31T03:30", "2030-03-31T01:30"),
    ] {
        assert_eq!(paris.to_seconds(dt(local)), Ok(utc(instant)), "{local}");
        assert_eq!(utc(instant), iana("Europe/Paris", dt(local)), "{local}");
    }
    assert_eq!(
        paris.to_civil(utc("2030-03-31T01:00")),
        Ok(dt("2030-03-31T03:00"))
    );
}

#[test]
fn the_night_summer_time_ends_a_repeated_time_is_the_first() {
    let paris = rules(OUTLOOK_PARIS);
    // Sunday 27 October 2030: 03:00 CEST is 02:00 CET, 02:00 to 03:00 happens twice.
    for (local, instant) in [
        ("2030-10-27T01:59", "2030-10-26T23:59"),
        ("2030-10-27T02:00", "2030-10-27T00:00"),
        ("2030-10-27T02:30", "2030-10-27T00:30"),
        ("2030-10-27T03:00", "2030-10-27T02:00"),
    ] {
        assert_eq!(paris.to_seconds(dt(local)), Ok(utc(instant)), "{local}");
        assert_eq!(utc(instant), iana("Europe/Paris", dt(local)), "{local}");
    }
    // Both 02:30s, read back.
    assert_eq!(
        paris.to_civil(utc("2030-10-27T00:30")),
        Ok(dt("2030-10-27T02:30"))
    );
    assert_eq!(
        paris.to_civil(utc("2030-10-27T01:30")),
        Ok(dt("2030-10-27T02:30"))
    );
}

#[test]
fn outlooks_paris_is_europe_paris_every_half_hour_of_a_year_either_way() {
    let paris = rules(OUTLOOK_PARIS);
    for year in [2027, 2030] {
        same_as(&paris, "Europe/Paris", year);
    }
}

#[test]
fn the_southern_hemisphere_summer_spans_the_new_year() {
    let sydney = rules(
        "TZID:(UTC+10:00) Canberra, Melbourne, Sydney
        BEGIN:STANDARD
        DTSTART:16010101T030000
        TZOFFSETFROM:+1100
        TZOFFSETTO:+1000
        RRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=4
        END:STANDARD
        BEGIN:DAYLIGHT
        DTSTART:16010101T020000
        TZOFFSETFROM:+1000
        TZOFFSETTO:+1100
        RRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=10
        END:DAYLIGHT",
    );
    same_as(&sydney, "Australia/Sydney", 2030);
}

#[test]
fn the_latest_onset_wins_across_observances_that_end_with_until() {
    // New York before and after the rules changed in 2007, as Thunderbird writes a history.
    let new_york = rules(
        "TZID:Eastern (history)
        BEGIN:DAYLIGHT
        DTSTART:19870405T020000
        TZOFFSETFROM:-0500
        TZOFFSETTO:-0400
        RRULE:FREQ=YEARLY;BYMONTH=4;BYDAY=1SU;UNTIL=20060402T070000Z
        END:DAYLIGHT
        BEGIN:STANDARD
        DTSTART:19671029T020000
        TZOFFSETFROM:-0400
        TZOFFSETTO:-0500
        RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU;UNTIL=20061029T060000Z
        END:STANDARD
        BEGIN:DAYLIGHT
        DTSTART:20070311T020000
        TZOFFSETFROM:-0500
        TZOFFSETTO:-0400
        RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
        END:DAYLIGHT
        BEGIN:STANDARD
        DTSTART:20071104T020000
        TZOFFSETFROM:-0400
        TZOFFSETTO:-0500
        RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
        END:STANDARD",
    );
    for year in [2005, 2006, 2007, 2030] {
        same_as(&new_york, "America/New_York", year);
    }
}

#[test]
fn rdates_are_onsets_and_a_zone_without_rules_keeps_its_offset() {
    let once = rules(
        "TZID:Paris 2030 by dates
        BEGIN:STANDARD
        DTSTART:20291027T030000
        TZOFFSETFROM:+0200
        TZOFFSETTO:+0100
        RDATE:20301027T030000
        END:STANDARD
        BEGIN:DAYLIGHT
        DTSTART:20300331T020000
        TZOFFSETFROM:+0100
        TZOFFSETTO:+0200
        END:DAYLIGHT",
    );
    same_as(&once, "Europe/Paris", 2030);
    let fixed = rules(
        "TZID:(UTC+04:00) Abu Dhabi, Muscat
        BEGIN:STANDARD
        DTSTART:16010101T000000
        TZOFFSETFROM:+0400
        TZOFFSETTO:+0400
        END:STANDARD",
    );
    assert_eq!(
        fixed.to_seconds(dt("2030-07-01T12:00")),
        Ok(utc("2030-07-01T08:00"))
    );
}

#[test]
fn rule_days_as_zones_write_them() {
    let start = dt("1601-01-01T02:00");
    let days = |rule: &str, year| {
        Yearly::read(rule, 3_600)
            .unwrap()
            .dates(year, &start)
            .unwrap()
    };
    assert_eq!(
        days("FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU", 2030),
        [date(2030, 3, 31)]
    );
    assert_eq!(
        days("FREQ=YEARLY;BYMONTH=3;BYDAY=2SU", 2030),
        [date(2030, 3, 10)]
    );
    assert_eq!(
        days("FREQ=YEARLY;BYMONTH=11;BYDAY=+1SU", 2030),
        [date(2030, 11, 3)]
    );
    // The Sunday on or after the 8th (older US rules as some tools write them).
    assert_eq!(
        days(
            "FREQ=YEARLY;BYMONTH=3;BYDAY=SU;BYMONTHDAY=8,9,10,11,12,13,14",
            2030
        ),
        [date(2030, 3, 10)]
    );
    assert_eq!(
        days("FREQ=YEARLY;BYMONTH=9;BYMONTHDAY=22", 2030),
        [date(2030, 9, 22)]
    );
    assert_eq!(
        days("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=-1", 2032),
        [date(2032, 2, 29)]
    );
    // Neither BYDAY nor BYMONTHDAY: the day of DTSTART.
    assert_eq!(days("FREQ=YEARLY;BYMONTH=4", 2030), [date(2030, 4, 1)]);
}

#[test]
fn what_is_not_understood_is_refused_with_its_line() {
    for (from, to, line, what) in [
        (
            "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10",
            "RRULE:FREQ=MONTHLY;BYDAY=-1SU",
            6,
            "FREQ=MONTHLY is not supported",
        ),
        (
            "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10",
            "RRULE:FREQ=YEARLY;BYDAY=SU;BYMONTH=10;BYSETPOS=-1",
            6,
            "BYSETPOS is not supported",
        ),
        (
            "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10",
            "RRULE:FREQ=YEARLY;BYDAY=-6SU;BYMONTH=10",
            6,
            "BYDAY=-6SU is not understood",
        ),
        (
            "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10",
            "RRULE:FREQ=YEARLY;INTERVAL=-1;BYDAY=-1SU;BYMONTH=10",
            6,
            "INTERVAL=-1 is not understood",
        ),
        (
            "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10",
            "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=13",
            6,
            "BYMONTH=13 is not understood",
        ),
        (
            "TZOFFSETTO:+0100",
            "TZOFFSETTO:1 hour",
            5,
            "offset \"1 hour\"",
        ),
        ("TZOFFSETTO:+0100", "X-TZOFFSETTO:+0100", 2, "no TZOFFSETTO"),
        (
            "DTSTART:16010101T030000",
            "DTSTART:16010101",
            3,
            "DTSTART \"16010101\" is not a local date-time",
        ),
    ] {
        let text = OUTLOOK_PARIS.replacen(from, to, 1);
        let e = Rules::read(&block(&text)).unwrap_err();
        assert!(e.line == line && e.what.contains(what), "{to}: {e}");
    }
    let e = Rules::read(&block("TZID:Empty")).unwrap_err();
    assert!(
        e.line == 1 && e.what.contains("no STANDARD nor DAYLIGHT"),
        "{e}"
    );
}
