//! Training calendars as the DSI writes them: CSV (`csv`) and iCalendar (`ics`, with the
//! recurrence rules of `recur` and the zones a file states by their rules, `vtimezone`); what an event's words mean (`mapping`: the DSI's rules); and
//! what a new export of a calendar changes (`sync`).
//!
//! Pure: text in, [`Row`]s out, or an [`Error`] naming the line. Nothing here knows the
//! catalogue: whether a row's site, room and master exist, and what its times are in the site's
//! time zone, is checked where the rows are inserted (`db::calendar`), all or nothing.
//!
//! What is not understood is refused with its line, never ignored: a calendar that imports is a
//! calendar that was read whole.

pub mod csv;
pub mod ics;
pub mod mapping;
mod recur;
pub mod sync;
pub mod vtimezone;

use std::cmp::Ordering;

/// A session as read from a calendar file, before it is checked against the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The line the session comes from (for an `.ics` file, its `BEGIN:VEVENT`).
    pub line: usize,
    pub site: String,
    pub room: String,
    pub master: String,
    pub version: String,
    pub start: When,
    pub end: When,
    /// Which event of its calendar the session is (iCalendar only: CSV rows have none), so that
    /// the next export of the same calendar is compared with it rather than added to it.
    pub event: Option<EventId>,
    /// What the event says in words (iCalendar only), for `mapping::resolve`: until then the
    /// site, room and master are what nightcast's own forms in the file name, or empty.
    pub texts: Option<mapping::Texts>,
}

/// An event of an iCalendar file: its `UID`, and for an occurrence of a recurring event, the
/// start the rule gave it (what a `RECURRENCE-ID` names; it stays when the occurrence moves).
#[derive(Debug, Clone, PartialEq)]
pub struct EventId {
    pub uid: String,
    pub instance: Option<When>,
}

/// Something of a calendar that was read and deliberately not imported (an all-day event...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub line: usize,
    pub what: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

/// A calendar time: on the site's wall clock, in a named zone, or absolute.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// Floating: in the site's time zone, known only once the site is.
    Local(jiff::civil::DateTime),
    /// In a named time zone.
    Zoned(jiff::civil::DateTime, Zone),
    /// Unix seconds (UTC in the file).
    Unix(i64),
}

/// A time zone a calendar names: an IANA zone, or the rules a `VTIMEZONE` of the file states
/// for a `TZID` no name tells (`vtimezone`).
#[derive(Debug, Clone, PartialEq)]
pub enum Zone {
    Iana(String),
    Rules(std::sync::Arc<vtimezone::Rules>),
}

impl From<&str> for Zone {
    fn from(name: &str) -> Zone {
        Zone::Iana(name.to_owned())
    }
}

impl std::fmt::Display for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Zone::Iana(name) => f.write_str(name),
            Zone::Rules(rules) => rules.fmt(f),
        }
    }
}

impl Zone {
    /// Unix seconds of `dt` on this zone's wall clock (a skipped or repeated time as jiff's
    /// `compatible` reads it).
    fn to_seconds(&self, dt: jiff::civil::DateTime) -> Result<i64, String> {
        match self {
            Zone::Iana(name) => zoned_seconds(dt, name),
            Zone::Rules(rules) => rules.to_seconds(dt),
        }
    }

    /// The wall clock of Unix seconds `t` in this zone.
    fn to_civil(&self, t: i64) -> Result<jiff::civil::DateTime, String> {
        match self {
            Zone::Iana(name) => {
                let zone = jiff::tz::TimeZone::get(name)
                    .map_err(|_| format!("unknown time zone {name:?}"))?;
                let t = jiff::Timestamp::from_second(t).map_err(|e| e.to_string())?;
                Ok(zone.to_datetime(t))
            }
            Zone::Rules(rules) => rules.to_civil(t),
        }
    }
}

/// Why a calendar was refused: the line, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct Error {
    pub line: usize,
    pub what: String,
}

impl Error {
    pub fn new(line: usize, what: impl Into<String>) -> Error {
        Error {
            line,
            what: what.into(),
        }
    }
}

impl When {
    /// Unix seconds, with `site_tz` for a floating time.
    pub fn resolve(&self, site_tz: &str) -> Result<i64, String> {
        match self {
            When::Unix(t) => Ok(*t),
            When::Local(dt) => zoned_seconds(*dt, site_tz),
            When::Zoned(dt, zone) => zone.to_seconds(*dt),
        }
    }

    /// The wall-clock time this is read as (UTC for an absolute time).
    fn civil(&self) -> Result<jiff::civil::DateTime, String> {
        match self {
            When::Local(dt) | When::Zoned(dt, _) => Ok(*dt),
            When::Unix(t) => jiff::Timestamp::from_second(*t)
                .map(|t| jiff::tz::TimeZone::UTC.to_datetime(t))
                .map_err(|e| e.to_string()),
        }
    }

    /// The same time `days` days later on the same wall clock (what a daily or weekly
    /// recurrence means: 08:30 stays 08:30 across a change of summer time).
    fn shift_days(&self, days: i64) -> Result<When, String> {
        let later = |dt: &jiff::civil::DateTime| {
            dt.checked_add(
                jiff::Span::new()
                    .try_days(days)
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())
        };
        Ok(match self {
            When::Local(dt) => When::Local(later(dt)?),
            When::Zoned(dt, tz) => When::Zoned(later(dt)?, tz.clone()),
            When::Unix(t) => When::Unix(
                days.checked_mul(86_400)
                    .and_then(|d| t.checked_add(d))
                    .ok_or("a time beyond the calendar")?,
            ),
        })
    }

    /// `self` moved on its wall clock as far as `to` is from `from` (an occurrence's end from
    /// its start: the same length on the wall clock).
    fn moved_like(&self, from: &When, to: &When) -> Result<When, String> {
        let by = to.civil()?.duration_since(from.civil()?);
        let dt = self.civil()?.checked_add(by).map_err(|e| e.to_string())?;
        self.with_civil(dt)
    }

    /// `self` plus a length on its wall clock (`DURATION`).
    fn plus(&self, by: jiff::Span) -> Result<When, String> {
        let dt = self.civil()?.checked_add(by).map_err(|e| e.to_string())?;
        self.with_civil(dt)
    }

    /// The same time written in the form of `like` (its zone, UTC or floating), to be listed
    /// with `like`'s occurrences (an `RDATE` in UTC beside a `DTSTART` in Paris).
    fn in_form_of(&self, like: &When) -> Result<When, String> {
        Ok(match (self, like) {
            (When::Local(_), When::Local(_)) => self.clone(),
            (When::Local(_), _) | (_, When::Local(_)) => {
                return Err(
                    "a floating time (no TZID, no Z) cannot be listed with times in a time zone: \
                 give both the same form"
                        .into(),
                )
            }
            (_, When::Unix(_)) => When::Unix(self.resolve("UTC")?),
            (_, When::Zoned(_, zone)) => {
                When::Zoned(zone.to_civil(self.resolve("UTC")?)?, zone.clone())
            }
        })
    }

    /// The same form (floating, zone or UTC) as `self`, at `dt` on its wall clock.
    fn with_civil(&self, dt: jiff::civil::DateTime) -> Result<When, String> {
        Ok(match self {
            When::Local(_) => When::Local(dt),
            When::Zoned(_, tz) => When::Zoned(dt, tz.clone()),
            When::Unix(_) => When::Unix(zoned_seconds(dt, "UTC")?),
        })
    }

    /// Orders two times when the file alone says how: by wall clock in the same zone (or both
    /// floating), else as instants. A floating time and one in a zone cannot be ordered before
    /// the site is known: an error.
    fn compare(&self, other: &When) -> Result<Ordering, String> {
        match (self, other) {
            (When::Local(a), When::Local(b)) => Ok(a.cmp(b)),
            (When::Zoned(a, x), When::Zoned(b, y)) if x == y => Ok(a.cmp(b)),
            (When::Local(_), _) | (_, When::Local(_)) => Err(
                "a floating time (no TZID, no Z) cannot be compared with one in a time zone: \
                 give both the same form"
                    .into(),
            ),
            _ => Ok(self.resolve("UTC")?.cmp(&other.resolve("UTC")?)),
        }
    }
}

fn zoned_seconds(dt: jiff::civil::DateTime, tz: &str) -> Result<i64, String> {
    let zone = jiff::tz::TimeZone::get(tz).map_err(|_| format!("unknown time zone {tz:?}"))?;
    zone.to_timestamp(dt)
        .map(|t| t.as_second())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> jiff::civil::DateTime {
        s.parse().unwrap()
    }

    #[test]
    fn a_shift_keeps_the_wall_clock_and_utc_keeps_the_instant() {
        let paris = When::Zoned(dt("2026-10-19T08:30"), "Europe/Paris".into());
        let later = paris.shift_days(7).unwrap();
        assert_eq!(
            later,
            When::Zoned(dt("2026-10-26T08:30"), "Europe/Paris".into())
        );
        // One hour more between the two: summer time ended in between.
        assert_eq!(
            later.resolve("UTC").unwrap() - paris.resolve("UTC").unwrap(),
            7 * 86_400 + 3_600
        );
        assert_eq!(When::Unix(0).shift_days(2).unwrap(), When::Unix(172_800));
    }

    #[test]
    fn times_compare_by_wall_clock_in_one_zone_by_instant_across_zones_and_never_floating_with_zoned(
    ) {
        let paris = When::Zoned(dt("2026-12-01T08:30"), "Europe/Paris".into());
        let utc = When::Unix(zoned_seconds(dt("2026-12-01T07:30"), "UTC").unwrap());
        assert_eq!(paris.compare(&utc), Ok(Ordering::Equal));
        let london = When::Zoned(dt("2026-12-01T07:31"), "Europe/London".into());
        assert_eq!(paris.compare(&london), Ok(Ordering::Less));
        let floating = When::Local(dt("2026-12-01T08:30"));
        assert_eq!(
            floating.compare(&When::Local(dt("2026-12-01T08:00"))),
            Ok(Ordering::Greater)
        );
        assert!(floating.compare(&utc).is_err());
        assert!(When::Zoned(dt("2026-12-01T08:30"), "Europe/Lyon".into())
            .compare(&utc)
            .unwrap_err()
            .contains("unknown time zone"));
    }
}
