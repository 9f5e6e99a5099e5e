//! Calendars in iCalendar (`.ics`, RFC 5545) as Google Calendar, Thunderbird and Outlook export
//! them: folded lines (a fold may split a UTF-8 character, see `lines`), quoted parameters,
//! escaped text, `VTIMEZONE`s and Windows zone names (`zones`), UTC, `TZID` and floating times.
//!
//! Each `VEVENT` is one session, or one per occurrence: `DTSTART`, the `RRULE`'s (see `recur`)
//! and the `RDATE`s, less the `EXDATE`s; an event with the same `UID` and a `RECURRENCE-ID`
//! moves the occurrence it names (or cancels it, with `STATUS:CANCELLED`). The end is `DTEND`,
//! or `DTSTART` plus `DURATION` on the wall clock. Every session carries its `UID` and, for an
//! occurrence, the start the rule gave it ([`EventId`]), so a new export of the same calendar is
//! compared session by session (`super::sync`).
//!
//! Each row carries the event's words (`SUMMARY`, `LOCATION`, `CATEGORIES`: `super::mapping`'s
//! `Texts`) and, where the file uses nightcast's own forms, the site, room and master they name:
//! `LOCATION` `SITE/ROOM`, the `X-NIGHTCAST-MASTER` property (`NAME VERSION`, required in that
//! form), else a `SUMMARY` of two words. Which of these the catalogue holds, and what the DSI's
//! rules make of the rest, is decided by `super::mapping::resolve`, not here.
//!
//! Read and deliberately left out, counted or noted in [`Calendar`]: cancelled events
//! (`STATUS:CANCELLED`), all-day events (a date without a time: a holiday is not a session),
//! `VTODO`s and `VJOURNAL`s. Refused with their line: `EXRULE`, `RDATE` periods, a
//! `RECURRENCE-ID` with `RANGE=THISANDFUTURE` or naming no occurrence, two events with one `UID`,
//! and every rule `recur` does not expand. Whether a session is past is decided where the site's
//! time zone is known (`db::calendar`).

mod lines;
mod values;
mod zones;

use std::cmp::Ordering;
use std::collections::HashMap;

use super::mapping::Texts;
use super::recur::{End, Rule};
use super::vtimezone::Block;
use super::{Error, EventId, Note, Row, When};
use lines::Line;
use zones::Zones;

/// What an iCalendar file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    /// The sessions, every occurrence expanded.
    pub rows: Vec<Row>,
    /// What was read and not imported, with its line (all-day events...).
    pub notes: Vec<Note>,
    /// Events and occurrences left out because they are cancelled.
    pub cancelled: usize,
}

/// Every session of `bytes`, or the first bad line. A rule that repeats for ever (no `COUNT`,
/// no `UNTIL`) is refused: see [`parse_until`].
pub fn parse(bytes: &[u8]) -> Result<Calendar, Error> {
    read(bytes, None)
}

/// [`parse`], with the occurrences of rules that repeat for ever up to `horizon` (the day
/// included, on the event's wall clock), and a note for each such event.
pub fn parse_until(bytes: &[u8], horizon: jiff::civil::Date) -> Result<Calendar, Error> {
    read(bytes, Some(horizon))
}

fn read(bytes: &[u8], horizon: Option<jiff::civil::Date>) -> Result<Calendar, Error> {
    let mut calendar = Calendar {
        rows: Vec::new(),
        notes: Vec::new(),
        cancelled: 0,
    };
    let (zones, vevents) = components(lines::content_lines(bytes)?, &mut calendar.notes)?;
    let mut series: Vec<Event> = Vec::new();
    let mut moves: Vec<Event> = Vec::new();
    // UIDs of events left out whole (cancelled, all day): their moved occurrences go too.
    let mut left_out: HashMap<String, usize> = HashMap::new();
    for (begin, props) in vevents {
        match Event::read(begin, &props, &zones, horizon)? {
            Read::Event(e) if e.moves.is_some() => moves.push(*e),
            Read::Event(e) => {
                if let (true, Some(h)) = (e.open, horizon) {
                    calendar.notes.push(Note {
                        line: begin,
                        what: format!(
                            "event {:?} repeats for ever: its sessions until {h} imported",
                            e.uid
                        ),
                    });
                }
                if let Some(other) = series.iter().find(|s| s.uid == e.uid) {
                    return Err(Error::new(
                        begin,
                        format!(
                            "UID {:?} is already the event at line {}: one event per UID \
                             (its moved occurrences have a RECURRENCE-ID)",
                            e.uid, other.line
                        ),
                    ));
                }
                series.push(*e);
            }
            Read::AllDay(uid, summary) => {
                calendar.notes.push(Note {
                    line: begin,
                    what: format!(
                        "all-day event {summary:?} ignored: a session needs a start and an end time"
                    ),
                });
                left_out.insert(uid, begin);
            }
            Read::Cancelled(uid) => {
                calendar.cancelled += 1;
                left_out.insert(uid, begin);
            }
        }
    }
    let mut moved_rows = Vec::new();
    for moved in moves {
        let Some((line, original)) = moved.moves.clone() else {
            continue;
        };
        let Some(s) = series.iter_mut().find(|s| s.uid == moved.uid) else {
            if left_out.contains_key(&moved.uid) {
                calendar.cancelled += usize::from(moved.cancelled);
                continue;
            }
            // An occurrence whose series is not in the file (an invitation to one occurrence).
            match moved.cancelled {
                true => calendar.cancelled += 1,
                false => moved_rows.extend(moved.rows_with(Some(original))),
            }
            continue;
        };
        let mut at = None;
        for (i, o) in s.occurrences.iter().enumerate() {
            if o.start
                .compare(&original)
                .map_err(|w| Error::new(line, w))?
                == Ordering::Equal
            {
                at = Some(i);
                break;
            }
        }
        let Some(i) = at else {
            return Err(Error::new(
                line,
                format!(
                    "RECURRENCE-ID names no occurrence of event {:?} (line {}), or one already \
                     moved",
                    s.uid, s.line
                ),
            ));
        };
        let replaced = s.occurrences.remove(i);
        match moved.cancelled {
            true => calendar.cancelled += 1,
            false => moved_rows.extend(moved.rows_with(replaced.instance)),
        }
    }
    for s in &series {
        calendar.rows.extend(s.rows_with_own());
    }
    calendar.rows.extend(moved_rows);
    Ok(calendar)
}

/// A `VEVENT`'s properties by name, every occurrence in file order.
type Props = HashMap<String, Vec<Line>>;

/// The zones the file defines, and its `VEVENT`s (the line of each `BEGIN:VEVENT`, and its
/// own properties: not those of a `VALARM` inside it). Components must nest and close.
fn components(
    lines: Vec<Line>,
    notes: &mut Vec<Note>,
) -> Result<(Zones, Vec<(usize, Props)>), Error> {
    let mut zones = Zones::default();
    let mut events = Vec::new();
    let mut open: Vec<(usize, String)> = Vec::new();
    let mut event: Option<(usize, Props)> = None;
    let mut zone = ZoneRead::default();
    for l in lines {
        let value = l.value.trim().to_ascii_uppercase();
        match l.name.as_str() {
            "BEGIN" => {
                match value.as_str() {
                    "VEVENT" if open.iter().any(|(_, c)| c == "VEVENT") => {
                        return Err(Error::new(l.line, "BEGIN:VEVENT inside a VEVENT"))
                    }
                    "VEVENT" => event = Some((l.line, HashMap::new())),
                    "VTIMEZONE" => {
                        zone = ZoneRead {
                            block: Block {
                                line: l.line,
                                ..Block::default()
                            },
                            location: None,
                        }
                    }
                    "STANDARD" | "DAYLIGHT"
                        if open.last().is_some_and(|(_, c)| c == "VTIMEZONE") =>
                    {
                        zone.block.observances.push((l.line, Vec::new()))
                    }
                    "VTODO" | "VJOURNAL" => notes.push(Note {
                        line: l.line,
                        what: format!("a {value} is not a session: ignored"),
                    }),
                    _ => {}
                }
                open.push((l.line, value));
            }
            "END" => {
                match open.pop() {
                    Some((_, c)) if c == value => {}
                    Some((begin, c)) => {
                        return Err(Error::new(
                            l.line,
                            format!("END:{value} closes BEGIN:{c} of line {begin}"),
                        ))
                    }
                    None => {
                        return Err(Error::new(
                            l.line,
                            format!("END:{value} without BEGIN:{value}"),
                        ))
                    }
                }
                match value.as_str() {
                    "VEVENT" => events.extend(event.take()),
                    "VTIMEZONE" => {
                        let read = std::mem::take(&mut zone);
                        zones.define(read.block, read.location);
                    }
                    _ => {}
                }
            }
            _ => match open.last().map(|(_, c)| c.as_str()) {
                Some("VEVENT") => {
                    if let Some((_, props)) = event.as_mut() {
                        props.entry(l.name.clone()).or_default().push(l);
                    }
                }
                Some("VTIMEZONE") if l.name == "TZID" => {
                    zone.block.tzid = l.value.trim().to_owned()
                }
                Some("VTIMEZONE") if l.name == "X-LIC-LOCATION" => {
                    zone.location = Some(l.value.trim().to_owned())
                }
                Some("STANDARD" | "DAYLIGHT")
                    if open.len() >= 2 && open[open.len() - 2].1 == "VTIMEZONE" =>
                {
                    if let Some((_, props)) = zone.block.observances.last_mut() {
                        props.push((l.line, l.name, l.value));
                    }
                }
                _ => {}
            },
        }
    }
    if let Some((begin, c)) = open.pop() {
        return Err(Error::new(begin, format!("BEGIN:{c} is never closed")));
    }
    Ok((zones, events))
}

/// A `VTIMEZONE` being read: its rules, and the IANA name its `X-LIC-LOCATION` gives.
#[derive(Default)]
struct ZoneRead {
    block: Block,
    location: Option<String>,
}

/// What a `VEVENT` is.
enum Read {
    Event(Box<Event>),
    /// A date without a time: its `UID` and `SUMMARY`.
    AllDay(String, String),
    /// `STATUS:CANCELLED` (and no `RECURRENCE-ID`): its `UID`.
    Cancelled(String),
}

/// Where and what: the parts of a row that are not times.
#[derive(Debug, Clone, Default)]
struct Target {
    site: String,
    room: String,
    master: String,
    version: String,
    texts: Texts,
}

/// One occurrence: its start and end, and for a recurring event the start the rule gave it.
#[derive(Debug, Clone)]
struct Occurrence {
    instance: Option<When>,
    start: When,
    end: When,
}

/// One `VEVENT`, expanded.
struct Event {
    line: usize,
    uid: String,
    /// For an event that moves one occurrence of a series: its `RECURRENCE-ID` line and value.
    moves: Option<(usize, When)>,
    cancelled: bool,
    /// `None` for a cancelled occurrence (not read: it is only taken out).
    target: Option<Target>,
    occurrences: Vec<Occurrence>,
    /// Its rule repeats for ever: cut at the horizon.
    open: bool,
}

impl Event {
    fn read(
        begin: usize,
        props: &Props,
        zones: &Zones,
        horizon: Option<jiff::civil::Date>,
    ) -> Result<Read, Error> {
        let last = |name: &str| props.get(name).and_then(|p| p.last());
        let get = |name: &str| {
            last(name).ok_or_else(|| Error::new(begin, format!("the event has no {name}")))
        };
        let summary = last("SUMMARY").map(Line::text).unwrap_or_default();
        let start_line = get("DTSTART")?;
        let uid = match last("UID") {
            Some(p) => p.text().trim().to_owned(),
            // RFC 5545 requires one; without it the event is known by its start and place.
            None => format!(
                "no-uid:{}:{}:{summary}",
                start_line.value.trim(),
                last("LOCATION").map(Line::text).unwrap_or_default()
            ),
        };
        let cancelled =
            last("STATUS").is_some_and(|s| s.value.trim().eq_ignore_ascii_case("CANCELLED"));
        let moves = match last("RECURRENCE-ID") {
            None => None,
            Some(p) if last("UID").is_none() => {
                return Err(Error::new(
                    p.line,
                    "RECURRENCE-ID in an event without a UID",
                ))
            }
            Some(p) => {
                if p.param("RANGE")
                    .is_some_and(|r| r.eq_ignore_ascii_case("THISANDFUTURE"))
                {
                    return Err(Error::new(
                        p.line,
                        "RECURRENCE-ID with RANGE=THISANDFUTURE is not supported: export the \
                         calendar again with the series split",
                    ));
                }
                if values::is_date(p) {
                    let d = values::date("RECURRENCE-ID", p, &p.value)?;
                    return match values::is_date(start_line) {
                        true => Ok(Read::AllDay(format!("{uid}:{d}"), summary)),
                        false => Err(Error::new(
                            p.line,
                            "RECURRENCE-ID is a date but the event has a time",
                        )),
                    };
                }
                Some((p.line, values::when("RECURRENCE-ID", p, &p.value, zones)?))
            }
        };
        if values::is_date(start_line) && moves.is_none() {
            return Ok(Read::AllDay(uid, summary));
        }
        if cancelled && moves.is_none() {
            return Ok(Read::Cancelled(uid));
        }
        if let Some(p) = props.get("EXRULE").and_then(|p| p.first()) {
            return Err(Error::new(
                p.line,
                "EXRULE is not supported: use EXDATE for the sessions left out",
            ));
        }
        let mut event = Event {
            line: begin,
            uid,
            moves,
            cancelled,
            target: None,
            occurrences: Vec::new(),
            open: false,
        };
        if cancelled {
            return Ok(Read::Event(Box::new(event)));
        }
        event.target = Some(target(props)?);
        let start = values::when("DTSTART", start_line, &start_line.value, zones)?;
        let end = match (last("DTEND"), last("DURATION")) {
            (Some(e), None) => values::when("DTEND", e, &e.value, zones)?,
            (None, Some(d)) => start
                .plus(values::duration(d)?)
                .map_err(|w| Error::new(d.line, w))?,
            (Some(_), Some(d)) => {
                return Err(Error::new(
                    d.line,
                    "the event has both DTEND and DURATION: keep one",
                ))
            }
            (None, None) => return Err(Error::new(begin, "the event has no DTEND (nor DURATION)")),
        };
        let rule = match props.get("RRULE").map(Vec::as_slice) {
            None | Some([]) => None,
            Some([rule]) => Some(rule),
            Some([_, second, ..]) => {
                return Err(Error::new(second.line, "a second RRULE is not supported"))
            }
        };
        let rdates = props.get("RDATE").map(Vec::as_slice).unwrap_or_default();
        if event.moves.is_some() {
            if let Some(p) = rule.or(rdates.first()) {
                return Err(Error::new(
                    p.line,
                    format!(
                        "{} in an event that moves one occurrence (RECURRENCE-ID)",
                        p.name
                    ),
                ));
            }
            event.occurrences.push(Occurrence {
                instance: None,
                start,
                end,
            });
            return Ok(Read::Event(Box::new(event)));
        }
        let recurring = rule.is_some() || !rdates.is_empty();
        let mut starts = match rule {
            None => vec![start.clone()],
            Some(rule) => occurrences(rule, &start, horizon, &mut event.open)?
                .into_iter()
                .map(|day| start.shift_days(day))
                .collect::<Result<_, _>>()
                .map_err(|w| Error::new(rule.line, w))?,
        };
        for p in rdates {
            if p.param("VALUE")
                .is_some_and(|v| !v.eq_ignore_ascii_case("DATE-TIME"))
            {
                return Err(Error::new(
                    p.line,
                    "RDATE as a date or a period is not supported: give date-times",
                ));
            }
            for value in p.value.split(',') {
                let at = values::when("RDATE", p, value, zones)?;
                starts.push(at.in_form_of(&start).map_err(|w| Error::new(p.line, w))?);
            }
        }
        let starts = except(starts, props.get("EXDATE").map(Vec::as_slice), zones)?;
        for s in starts {
            let e = end
                .moved_like(&start, &s)
                .map_err(|w| Error::new(begin, w))?;
            event.occurrences.push(Occurrence {
                instance: recurring.then(|| s.clone()),
                start: s,
                end: e,
            });
        }
        let mut sorted = Vec::with_capacity(event.occurrences.len());
        for o in std::mem::take(&mut event.occurrences) {
            let mut place = sorted.len();
            for (i, other) in sorted.iter().enumerate() {
                let other: &Occurrence = other;
                match o
                    .start
                    .compare(&other.start)
                    .map_err(|w| Error::new(begin, w))?
                {
                    Ordering::Less => {
                        place = i;
                        break;
                    }
                    Ordering::Equal => {
                        place = usize::MAX;
                        break;
                    }
                    Ordering::Greater => {}
                }
            }
            if place != usize::MAX {
                sorted.insert(place, o);
            }
        }
        event.occurrences = sorted;
        Ok(Read::Event(Box::new(event)))
    }

    /// The rows of a series, each occurrence keyed by its own start.
    fn rows_with_own(&self) -> Vec<Row> {
        self.occurrences
            .iter()
            .map(|o| self.row(o, o.instance.clone()))
            .collect()
    }

    /// The row of a moved occurrence, keyed by the occurrence it replaces.
    fn rows_with(&self, instance: Option<When>) -> Vec<Row> {
        self.occurrences
            .iter()
            .map(|o| self.row(o, instance.clone()))
            .collect()
    }

    fn row(&self, o: &Occurrence, instance: Option<When>) -> Row {
        let t = self.target.clone().unwrap_or_default();
        Row {
            line: self.line,
            site: t.site,
            room: t.room,
            master: t.master,
            version: t.version,
            start: o.start.clone(),
            end: o.end.clone(),
            event: Some(EventId {
                uid: self.uid.clone(),
                instance,
            }),
            texts: Some(t.texts),
        }
    }
}

/// The event's words, and the site, room and master it names in nightcast's own forms (empty
/// where it does not); an `X-NIGHTCAST-MASTER` not in its form is refused.
fn target(props: &Props) -> Result<Target, Error> {
    let last = |name: &str| props.get(name).and_then(|p| p.last());
    let location = last("LOCATION").map(Line::text);
    let (site, room) = location
        .as_deref()
        .and_then(|l| l.split_once('/'))
        .map(|(s, r)| (s.trim().to_owned(), r.trim().to_owned()))
        .unwrap_or_default();
    let title = last("SUMMARY").map(Line::text).unwrap_or_default();
    let two_words = |text: &str| match text.split_whitespace().collect::<Vec<_>>()[..] {
        [name, version] => Some((name.to_owned(), version.to_owned())),
        _ => None,
    };
    let given = last("X-NIGHTCAST-MASTER");
    let (master, version) = match given {
        Some(m) => two_words(&m.text()).ok_or_else(|| {
            Error::new(
                m.line,
                format!("{:?} does not name a master as NAME VERSION", m.text()),
            )
        })?,
        None => two_words(&title).unwrap_or_default(),
    };
    let categories = props
        .get("CATEGORIES")
        .into_iter()
        .flatten()
        .flat_map(|l| lines::split_text_list(&l.value))
        .filter(|c| !c.trim().is_empty())
        .collect();
    Ok(Target {
        site,
        room,
        master,
        version,
        texts: Texts {
            title,
            location,
            categories,
            master_given: given.is_some(),
        },
    })
}

/// The occurrences of `rule` from `start`, as days after it; a rule that repeats for ever up
/// to `horizon` (`open` set), refused without one.
fn occurrences(
    rule: &Line,
    start: &When,
    horizon: Option<jiff::civil::Date>,
    open: &mut bool,
) -> Result<Vec<i64>, Error> {
    let at = |w: String| Error::new(rule.line, w);
    let parsed: Rule = rule.value.parse().map_err(at)?;
    let until = match &parsed.end {
        End::Until(v) => Some(values::until(v, start).map_err(at)?),
        End::Count(_) => None,
        End::Open if horizon.is_none() => {
            return Err(at(
                "RRULE has neither COUNT nor UNTIL: it would repeat forever".into(),
            ))
        }
        End::Open => {
            *open = true;
            None
        }
    };
    let first = start.civil().map_err(at)?.date();
    parsed
        .days(first, |day| match (&until, horizon) {
            (Some(u), _) => Ok(start.shift_days(day)?.compare(u)? == Ordering::Greater),
            (None, Some(h)) => Ok(start.shift_days(day)?.civil()?.date() > h),
            (None, None) => Ok(false),
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

/// `starts` less those the `EXDATE`s take out.
fn except(starts: Vec<When>, exdates: Option<&[Line]>, zones: &Zones) -> Result<Vec<When>, Error> {
    let mut excluded = Vec::new();
    for ex in exdates.unwrap_or_default() {
        let date_only = ex
            .param("VALUE")
            .is_some_and(|v| v.eq_ignore_ascii_case("DATE"));
        for value in ex.value.split(',') {
            excluded.push((
                ex.line,
                match date_only {
                    true => Excluded::Day(values::date("EXDATE", ex, value)?),
                    false => Excluded::At(values::when("EXDATE", ex, value, zones)?),
                },
            ));
        }
    }
    let mut kept = Vec::with_capacity(starts.len());
    'start: for s in starts {
        for (line, ex) in &excluded {
            if ex.takes(&s).map_err(|w| Error::new(*line, w))? {
                continue 'start;
            }
        }
        kept.push(s);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests;
