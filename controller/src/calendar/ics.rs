//! Calendars in iCalendar (`.ics`, RFC 5545): line folding, parameters, UTC, `TZID` and floating
//! times, and recurrences.
//!
//! Each `VEVENT` is one session, or one per occurrence of its `RRULE` (see `recur`) less its
//! `EXDATE`s and the occurrences another `VEVENT` of the same `UID` moves (`RECURRENCE-ID`).
//! `LOCATION` is `SITE/ROOM`; the master is the `X-NIGHTCAST-MASTER` property (`NAME VERSION`),
//! or else the `SUMMARY` when it is exactly `NAME VERSION`; `DTSTART`/`DTEND` with a `TZID`, in
//! UTC (`...Z`), or floating (then in the site's time zone). `RDATE` and `EXRULE` are refused
//! with their line, as is every rule `recur` does not expand.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::recur::{End, Rule};
use super::{Error, Row, When};

/// One property as written: its line, its parameters (`TZID=...;VALUE=...`), its value.
#[derive(Debug)]
struct Prop {
    line: usize,
    params: String,
    value: String,
}

/// An event's properties by name, every occurrence in file order.
type Props = HashMap<String, Vec<Prop>>;

/// Every session of `text`, or the first bad line.
pub fn parse(text: &str) -> Result<Vec<Row>, Error> {
    let mut events = Vec::new();
    for (begin, props) in events_of(text)? {
        events.push(Event::read(begin, &props)?);
    }
    // A moved occurrence replaces its original: drop the original from its series.
    for moved in events
        .iter()
        .filter_map(|e| e.moved.clone())
        .collect::<Vec<_>>()
    {
        let (line, uid, at) = moved;
        let mut found = false;
        for series in events
            .iter_mut()
            .filter(|e| e.uid.as_ref() == Some(&uid) && e.moved.is_none())
        {
            for (i, row) in series.rows.iter().enumerate() {
                if row.start.compare(&at).map_err(|w| Error::new(line, w))? == Ordering::Equal {
                    series.rows.remove(i);
                    found = true;
                    break;
                }
            }
        }
        if !found {
            return Err(Error::new(
                line,
                format!("RECURRENCE-ID names no occurrence of event {uid:?} in this file"),
            ));
        }
    }
    Ok(events.into_iter().flat_map(|e| e.rows).collect())
}

/// The `VEVENT`s of `text`, unfolded (a line starting with a space or a tab continues the
/// previous one): the line of each `BEGIN:VEVENT`, and its properties.
fn events_of(text: &str) -> Result<Vec<(usize, Props)>, Error> {
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        match (raw.strip_prefix([' ', '\t']), lines.last_mut()) {
            (Some(rest), Some(last)) => last.1.push_str(rest),
            _ => lines.push((i + 1, raw.to_owned())),
        }
    }
    let mut events = Vec::new();
    let mut event: Option<(usize, Props)> = None;
    for (line, content) in lines {
        let Some((head, value)) = content.split_once(':') else {
            if content.trim().is_empty() {
                continue;
            }
            return Err(Error::new(
                line,
                format!("{content:?} is not a NAME:VALUE line"),
            ));
        };
        let (name, params) = head.split_once(';').unwrap_or((head, ""));
        let name = name.to_ascii_uppercase();
        match (name.as_str(), value.trim()) {
            ("BEGIN", "VEVENT") => event = Some((line, HashMap::new())),
            ("END", "VEVENT") => match event.take() {
                Some(e) => events.push(e),
                None => return Err(Error::new(line, "END:VEVENT without BEGIN:VEVENT")),
            },
            _ => {
                if let Some((_, props)) = event.as_mut() {
                    props.entry(name).or_default().push(Prop {
                        line,
                        params: params.to_owned(),
                        value: value.to_owned(),
                    });
                }
            }
        }
    }
    if let Some((begin, _)) = event {
        return Err(Error::new(begin, "BEGIN:VEVENT is never closed"));
    }
    Ok(events)
}

/// One `VEVENT`, expanded.
struct Event {
    uid: Option<String>,
    /// For an event that moves one occurrence of a series: its line, the series' `UID`, and the
    /// occurrence's original start.
    moved: Option<(usize, String, When)>,
    rows: Vec<Row>,
}

impl Event {
    fn read(begin: usize, props: &Props) -> Result<Event, Error> {
        let last = |name: &str| props.get(name).and_then(|p| p.last());
        let get = |name: &str| {
            last(name).ok_or_else(|| Error::new(begin, format!("the event has no {name}")))
        };
        for refused in ["RDATE", "EXRULE"] {
            if let Some(p) = props.get(refused).and_then(|p| p.first()) {
                return Err(Error::new(
                    p.line,
                    format!(
                        "{refused} is not supported: list these sessions as events of their own"
                    ),
                ));
            }
        }
        let loc = get("LOCATION")?;
        let (site, room) = loc
            .value
            .split_once('/')
            .map(|(s, r)| (s.trim().to_owned(), r.trim().to_owned()))
            .ok_or_else(|| {
                Error::new(
                    loc.line,
                    format!("LOCATION {:?} must be SITE/ROOM", loc.value),
                )
            })?;
        let m = last("X-NIGHTCAST-MASTER")
            .or_else(|| last("SUMMARY"))
            .ok_or_else(|| Error::new(begin, "the event has no X-NIGHTCAST-MASTER nor SUMMARY"))?;
        let words: Vec<&str> = m.value.split_whitespace().collect();
        let [name, version] = words[..] else {
            return Err(Error::new(
                m.line,
                format!("{:?} does not name a master as NAME VERSION", m.value),
            ));
        };
        let start = when("DTSTART", get("DTSTART")?)?;
        let end = when("DTEND", get("DTEND")?)?;
        let uid = last("UID").map(|p| p.value.trim().to_owned());
        let moved = match last("RECURRENCE-ID") {
            None => None,
            Some(p) => {
                let uid = uid
                    .clone()
                    .ok_or_else(|| Error::new(p.line, "RECURRENCE-ID in an event without a UID"))?;
                Some((p.line, uid, when("RECURRENCE-ID", p)?))
            }
        };
        let days = match props.get("RRULE").map(Vec::as_slice) {
            None | Some([]) => vec![0],
            Some([rule]) => occurrences(rule, &start)?,
            Some([_, second, ..]) => {
                return Err(Error::new(second.line, "a second RRULE is not supported"))
            }
        };
        let row = |day: i64| -> Result<Row, String> {
            Ok(Row {
                line: begin,
                site: site.clone(),
                room: room.clone(),
                master: name.to_owned(),
                version: version.to_owned(),
                start: start.shift_days(day)?,
                end: end.shift_days(day)?,
            })
        };
        let rows = except(days, &start, props.get("EXDATE").map(Vec::as_slice))?
            .into_iter()
            .map(row)
            .collect::<Result<_, _>>()
            .map_err(|w| Error::new(begin, w))?;
        Ok(Event { uid, moved, rows })
    }
}

/// The occurrences of `rule` from `start`, as days after it.
fn occurrences(rule: &Prop, start: &When) -> Result<Vec<i64>, Error> {
    let at = |w: String| Error::new(rule.line, w);
    let parsed: Rule = rule.value.parse().map_err(at)?;
    let until = match &parsed.end {
        End::Until(v) => Some(until(v, start).map_err(at)?),
        End::Count(_) => None,
    };
    let first = start.civil().map_err(at)?.date();
    parsed
        .days(first, |day| match &until {
            Some(u) => Ok(start.shift_days(day)?.compare(u)? == Ordering::Greater),
            None => Ok(false),
        })
        .map_err(at)
}

/// What an `EXDATE` value takes out: every occurrence on a day, or the one at a time.
enum Excluded {
    Day(jiff::civil::Date),
    At(When),
}

impl Excluded {
    fn takes(&self, occurrence: &When) -> Result<bool, String> {
        match self {
            Excluded::Day(d) => Ok(occurrence.civil()?.date() == *d),
            Excluded::At(t) => Ok(occurrence.compare(t)? == Ordering::Equal),
        }
    }
}

/// `days` (after `start`) less those the `EXDATE`s take out.
fn except(days: Vec<i64>, start: &When, exdates: Option<&[Prop]>) -> Result<Vec<i64>, Error> {
    let mut excluded = Vec::new();
    for ex in exdates.unwrap_or_default() {
        let date_only = ex.params.to_ascii_uppercase().contains("VALUE=DATE")
            && !ex.params.to_ascii_uppercase().contains("VALUE=DATE-TIME");
        for value in ex.value.split(',') {
            let one = Prop {
                line: ex.line,
                params: ex.params.clone(),
                value: value.to_owned(),
            };
            excluded.push((
                ex.line,
                match date_only {
                    true => Excluded::Day(date("EXDATE", &one)?),
                    false => Excluded::At(when("EXDATE", &one)?),
                },
            ));
        }
    }
    let mut kept = Vec::with_capacity(days.len());
    'day: for day in days {
        for (line, ex) in &excluded {
            let at = |w: String| Error::new(*line, w);
            if ex.takes(&start.shift_days(day).map_err(at)?).map_err(at)? {
                continue 'day;
            }
        }
        kept.push(day);
    }
    Ok(kept)
}

/// An `UNTIL` value, in the form of `DTSTART` unless it says UTC; a date alone is the end of
/// that day.
fn until(value: &str, start: &When) -> Result<When, String> {
    if let Some(utc) = value.strip_suffix('Z') {
        let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", utc)
            .map_err(|_| format!("RRULE UNTIL={value} is not a date-time"))?;
        return When::Unix(0).with_civil(dt);
    }
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", value)
        .or_else(|_| jiff::civil::Date::strptime("%Y%m%d", value).map(|d| d.at(23, 59, 59, 0)))
        .map_err(|_| format!("RRULE UNTIL={value} is not a date nor a date-time"))?;
    start.with_civil(dt)
}

/// A date-time property: UTC with `Z`, in its `TZID`, or floating.
fn when(name: &str, p: &Prop) -> Result<When, Error> {
    let bad = || {
        Error::new(
            p.line,
            format!(
                "{name} {:?} is not a date-time (YYYYMMDDTHHMMSS[Z])",
                p.value
            ),
        )
    };
    let value = p.value.trim();
    let (digits, utc) = match value.strip_suffix('Z') {
        Some(v) => (v, true),
        None => (value, false),
    };
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", digits).map_err(|_| bad())?;
    let tzid = p
        .params
        .split(';')
        .find_map(|p| p.strip_prefix("TZID="))
        .map(|t| t.trim_matches('"').to_owned());
    match (utc, tzid) {
        (true, _) => When::Unix(0).with_civil(dt).map_err(|_| bad()),
        (false, Some(tz)) => Ok(When::Zoned(dt, tz)),
        (false, None) => Ok(When::Local(dt)),
    }
}

/// A date property (`VALUE=DATE`: `YYYYMMDD`).
fn date(name: &str, p: &Prop) -> Result<jiff::civil::Date, Error> {
    jiff::civil::Date::strptime("%Y%m%d", p.value.trim()).map_err(|_| {
        Error::new(
            p.line,
            format!("{name} {:?} is not a date (YYYYMMDD)", p.value),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        parse(text)
            .unwrap()
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
        let rows = parse(&text).unwrap();
        assert!(rows.iter().all(
            |r| r.line == 2 && r.end.civil().unwrap().time() == jiff::civil::time(17, 0, 0, 0)
        ));
    }

    #[test]
    fn utc_and_floating_courses_repeat_too() {
        let utc = event(&[
            "DTSTART:20261201T073000Z",
            "DTEND:20261201T160000Z",
            "RRULE:FREQ=DAILY;COUNT=2",
        ]);
        let rows = parse(&utc).unwrap();
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
        let e = parse(&text.replace("20261026T083000", "20261025T083000")).unwrap_err();
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
            ("RDATE:20261201T083000", 7, "RDATE is not supported"),
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
            let e = parse(&event(&[PARIS[0], PARIS[1], extra])).unwrap_err();
            assert!(e.line == line && e.what.contains(what), "{extra}: {e}");
        }
        let floating = event(&[
            "DTSTART:20261201T083000",
            "DTEND:20261201T170000",
            "RRULE:FREQ=DAILY;UNTIL=20261203T000000Z",
        ]);
        let e = parse(&floating).unwrap_err();
        assert!(e.line == 7 && e.what.contains("floating"), "{e}");
    }
}
