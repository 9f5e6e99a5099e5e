//! A time zone given by its rules in the file (`VTIMEZONE`, RFC 5545 section 3.6.5), for a
//! `TZID` no name tells: Outlook's display names (`(UTC+01:00) Brussels, Copenhagen, Madrid,
//! Paris`) and other tools' own names.
//!
//! A zone is its observances (`STANDARD`, `DAYLIGHT`): each has `TZOFFSETFROM`, `TZOFFSETTO`
//! and an onset, `DTSTART` on the wall clock before it (`TZOFFSETFROM`), repeated by a yearly
//! `RRULE` (`BYMONTH`, `BYDAY` as `-1SU`, `2SU` or `SU`, `BYMONTHDAY`, `INTERVAL`, `UNTIL`,
//! `COUNT`) and by `RDATE`s. The observance in force is the one whose latest onset is at or
//! before the time asked.
//!
//! A wall-clock time that a change skips (02:30 the night summer time starts) or repeats
//! (02:30 the night it ends) is read as jiff's `compatible` disambiguation reads it: by the
//! offset before the change. Skipped, 02:30 is 03:30 of the new offset; repeated, it is the
//! first 02:30. So a block that states the rules of an IANA zone gives that zone's instants.
//!
//! Pure: no clock, no I/O. A rule part it does not expand (`FREQ=MONTHLY`, `BYSETPOS`, ...)
//! is refused with its line, never guessed.

use jiff::civil::{Date, DateTime, Weekday};

use super::Error;

/// One property of an observance as read: its line, its name (upper case), its value.
pub type Prop = (usize, String, String);

/// A `VTIMEZONE` as read: its line, `TZID`, and each observance's `BEGIN` line and properties.
#[derive(Debug, Clone, Default)]
pub struct Block {
    pub line: usize,
    pub tzid: String,
    pub observances: Vec<(usize, Vec<Prop>)>,
}

/// A zone by its observances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    tzid: String,
    observances: Vec<Observance>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Observance {
    /// Seconds east of UTC before and after an onset.
    from: i32,
    to: i32,
    /// The first onset, on the wall clock before it.
    start: DateTime,
    rule: Option<Yearly>,
    /// More onsets, on the wall clock before them.
    rdates: Vec<DateTime>,
}

/// A `FREQ=YEARLY` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Yearly {
    interval: i16,
    months: Vec<i8>,
    /// `BYDAY`: a weekday, and which of the month (`-1` the last, `2` the second; none: every).
    days: Vec<(Option<i8>, Weekday)>,
    /// `BYMONTHDAY` (negative from the end of the month).
    month_days: Vec<i8>,
    /// No onset after this instant (Unix seconds).
    until: Option<i64>,
    count: Option<usize>,
}

/// A change of offset: its instant, and the offsets before and after it.
#[derive(Debug, Clone, Copy)]
struct Transition {
    at: i64,
    from: i32,
    to: i32,
}

/// The most onsets one rule with a `COUNT` is expanded to.
const MAX_COUNT: usize = 1_000;

impl Rules {
    /// The zone `block` states, or the first line it cannot read.
    pub fn read(block: &Block) -> Result<Rules, Error> {
        if block.observances.is_empty() {
            return Err(Error::new(
                block.line,
                format!(
                    "VTIMEZONE {:?} has no STANDARD nor DAYLIGHT observance",
                    block.tzid
                ),
            ));
        }
        let observances = block
            .observances
            .iter()
            .map(|(line, props)| Observance::read(*line, props))
            .collect::<Result<_, _>>()?;
        Ok(Rules {
            tzid: block.tzid.clone(),
            observances,
        })
    }

    pub fn tzid(&self) -> &str {
        &self.tzid
    }

    /// The instant (Unix seconds) of `dt` on this zone's wall clock; a skipped or repeated
    /// time by the offset before the change (see the module's comment).
    pub fn to_seconds(&self, dt: DateTime) -> Result<i64, String> {
        let local = utc_seconds(dt)?;
        let changes = self.transitions(dt.year())?;
        let mut offset = changes.first().map_or(0, |t| t.from);
        for t in &changes {
            // Until the later of the two wall clocks at the change, the offset before it holds.
            if t.at + i64::from(t.from.max(t.to)) <= local {
                offset = t.to;
            }
        }
        Ok(local - i64::from(offset))
    }

    /// The wall-clock time of instant `t` (Unix seconds) in this zone.
    pub fn to_civil(&self, t: i64) -> Result<DateTime, String> {
        let year = civil_of(t)?.year();
        let changes = self.transitions(year)?;
        let mut offset = changes.first().map_or(0, |c| c.from);
        for c in changes.iter().filter(|c| c.at <= t) {
            offset = c.to;
        }
        civil_of(t + i64::from(offset))
    }

    /// The changes near `year` (from the year before to the year after), and the last ones of
    /// each observance that ended before: enough to know the offset anywhere in `year`.
    fn transitions(&self, year: i16) -> Result<Vec<Transition>, String> {
        let mut out = Vec::new();
        for o in &self.observances {
            for onset in o.onsets(year)? {
                out.push(Transition {
                    at: utc_seconds(onset)? - i64::from(o.from),
                    from: o.from,
                    to: o.to,
                });
            }
        }
        out.sort_by_key(|t| t.at);
        Ok(out)
    }
}

impl std::fmt::Display for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.tzid)
    }
}

impl Observance {
    fn read(begin: usize, props: &[Prop]) -> Result<Observance, Error> {
        let get = |name: &str| {
            props
                .iter()
                .rev()
                .find(|(_, n, _)| n == name)
                .ok_or_else(|| Error::new(begin, format!("the observance has no {name}")))
        };
        let (from_line, _, from) = get("TZOFFSETFROM")?;
        let (to_line, _, to) = get("TZOFFSETTO")?;
        let from = offset(from).map_err(|w| Error::new(*from_line, w))?;
        let to = offset(to).map_err(|w| Error::new(*to_line, w))?;
        let (start_line, _, start) = get("DTSTART")?;
        let start = local("DTSTART", start).map_err(|w| Error::new(*start_line, w))?;
        let mut rule = None;
        let mut rdates = Vec::new();
        for (line, name, value) in props {
            let at = |w: String| Error::new(*line, w);
            match name.as_str() {
                "RRULE" if rule.is_some() => {
                    return Err(at(
                        "a second RRULE in one observance is not supported".into()
                    ))
                }
                "RRULE" => rule = Some(Yearly::read(value, from).map_err(at)?),
                "RDATE" => {
                    for v in value.split(',') {
                        rdates.push(local("RDATE", v).map_err(at)?);
                    }
                }
                _ => {}
            }
        }
        Ok(Observance {
            from,
            to,
            start,
            rule,
            rdates,
        })
    }

    /// Its onsets near `year` (see `Rules::transitions`), on the wall clock before them.
    fn onsets(&self, year: i16) -> Result<Vec<DateTime>, String> {
        let mut out = vec![self.start];
        out.extend(self.rdates.iter().copied());
        let Some(rule) = &self.rule else {
            return Ok(out);
        };
        let first = self.start.year();
        let mut last = year.saturating_add(1);
        if let Some(until) = rule.until {
            last = last.min(civil_of(until)?.year().saturating_add(1));
        }
        let step = rule.interval;
        // With a COUNT every onset from the first counts; otherwise a few years are enough.
        let lo = match rule.count {
            Some(_) => first,
            None => first.max(last.saturating_sub(2 * step + 1)),
        };
        let mut counted = 1; // DTSTART is the first onset.
        let mut y = lo;
        while y <= last {
            if (y - first) % step == 0 {
                for date in rule.dates(y, &self.start)? {
                    let onset = date.to_datetime(self.start.time());
                    if onset <= self.start {
                        continue;
                    }
                    if let Some(until) = rule.until {
                        if utc_seconds(onset)? - i64::from(self.from) > until {
                            return Ok(out);
                        }
                    }
                    if let Some(count) = rule.count {
                        if counted >= count.min(MAX_COUNT) {
                            return Ok(out);
                        }
                        counted += 1;
                    }
                    out.push(onset);
                }
            }
            y += 1;
        }
        Ok(out)
    }
}

impl Yearly {
    /// An observance's `RRULE` (`FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU`); `from` is the offset its
    /// onsets are written in (a local `UNTIL`).
    fn read(value: &str, from: i32) -> Result<Yearly, String> {
        let mut rule = Yearly {
            interval: 1,
            months: Vec::new(),
            days: Vec::new(),
            month_days: Vec::new(),
            until: None,
            count: None,
        };
        let mut yearly = false;
        for part in value.trim().split(';').filter(|p| !p.is_empty()) {
            let (key, v) = part
                .split_once('=')
                .ok_or_else(|| format!("VTIMEZONE RRULE part {part:?} is not KEY=VALUE"))?;
            let (key, v) = (
                key.trim().to_ascii_uppercase(),
                v.trim().to_ascii_uppercase(),
            );
            let bad = || format!("VTIMEZONE RRULE {key}={v} is not understood");
            // Between 1 and `max`, or (`from_end`) between -`max` and -1 too.
            let number = |s: &str, max: i64, from_end: bool| {
                s.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n) || (from_end && (-max..=-1).contains(n)))
                    .ok_or_else(bad)
            };
            match key.as_str() {
                "FREQ" if v == "YEARLY" => yearly = true,
                "FREQ" => {
                    return Err(format!(
                        "VTIMEZONE RRULE FREQ={v} is not supported (YEARLY, as time zones change)"
                    ))
                }
                "INTERVAL" => rule.interval = number(&v, 100, false)? as i16,
                "COUNT" => rule.count = Some(number(&v, MAX_COUNT as i64, false)? as usize),
                "BYMONTH" => {
                    for m in v.split(',') {
                        rule.months.push(number(m, 12, false)? as i8);
                    }
                }
                "BYMONTHDAY" => {
                    for d in v.split(',') {
                        rule.month_days.push(number(d, 31, true)? as i8);
                    }
                }
                "BYDAY" => {
                    for d in v.split(',') {
                        rule.days.push(nth_weekday(d).ok_or_else(bad)?);
                    }
                }
                "UNTIL" => {
                    let (digits, utc) = match v.strip_suffix('Z') {
                        Some(d) => (d, true),
                        None => (v.as_str(), false),
                    };
                    let at = local("UNTIL", digits)
                        .or_else(|_| {
                            Date::strptime("%Y%m%d", digits)
                                .map(|d| d.at(23, 59, 59, 0))
                                .map_err(|_| bad())
                        })
                        .map_err(|_| bad())?;
                    let offset = if utc { 0 } else { i64::from(from) };
                    rule.until = Some(utc_seconds(at)? - offset);
                }
                "WKST" => {}
                _ => {
                    return Err(format!(
                        "VTIMEZONE RRULE {key} is not supported (FREQ=YEARLY, INTERVAL, BYMONTH, \
                         BYDAY, BYMONTHDAY, UNTIL, COUNT)"
                    ))
                }
            }
        }
        if !yearly {
            return Err("VTIMEZONE RRULE has no FREQ=YEARLY".into());
        }
        if rule.count.is_some() && rule.until.is_some() {
            return Err("VTIMEZONE RRULE has both COUNT and UNTIL".into());
        }
        Ok(rule)
    }

    /// The days of `year` the rule names, in order (RFC 5545: `BYMONTH`, else `DTSTART`'s
    /// month; then `BYDAY` and `BYMONTHDAY` both, else `DTSTART`'s day of the month).
    fn dates(&self, year: i16, start: &DateTime) -> Result<Vec<Date>, String> {
        let months = match self.months.is_empty() {
            true => vec![start.month()],
            false => self.months.clone(),
        };
        let month_days = match (self.days.is_empty(), self.month_days.is_empty()) {
            (true, true) => vec![start.day()],
            _ => self.month_days.clone(),
        };
        let mut out = Vec::new();
        for month in months {
            let first = Date::new(year, month, 1).map_err(|e| e.to_string())?;
            let length = first.days_in_month();
            for day in 1..=length {
                let date = Date::new(year, month, day).map_err(|e| e.to_string())?;
                let from_end = day - length - 1;
                if !month_days.is_empty() && !month_days.iter().any(|d| *d == day || *d == from_end)
                {
                    continue;
                }
                let nth = (day - 1) / 7 + 1;
                let nth_from_end = -((length - day) / 7 + 1);
                let named = self.days.is_empty()
                    || self.days.iter().any(|(n, w)| {
                        *w == date.weekday() && n.is_none_or(|n| n == nth || n == nth_from_end)
                    });
                if named {
                    out.push(date);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// `SU`, `-1SU`, `2SU`, `+1SU`.
fn nth_weekday(s: &str) -> Option<(Option<i8>, Weekday)> {
    let s = s.trim();
    if !s.is_ascii() {
        return None;
    }
    let (n, day) = s.split_at(s.len().checked_sub(2)?);
    let weekday = match day {
        "MO" => Weekday::Monday,
        "TU" => Weekday::Tuesday,
        "WE" => Weekday::Wednesday,
        "TH" => Weekday::Thursday,
        "FR" => Weekday::Friday,
        "SA" => Weekday::Saturday,
        "SU" => Weekday::Sunday,
        _ => return None,
    };
    if n.is_empty() {
        return Some((None, weekday));
    }
    let n: i8 = n.strip_prefix('+').unwrap_or(n).parse().ok()?;
    ((1..=5).contains(&n.abs())).then_some((Some(n), weekday))
}

/// `TZOFFSETFROM`/`TZOFFSETTO` (`+0100`, `-0500`, `+053000`) in seconds east of UTC.
fn offset(value: &str) -> Result<i32, String> {
    let v = value.trim();
    let bad = || format!("time zone offset {v:?} is not +HHMM or -HHMM");
    let (sign, digits) = match v.as_bytes().first() {
        Some(b'+') => (1, &v[1..]),
        Some(b'-') => (-1, &v[1..]),
        _ => return Err(bad()),
    };
    if !matches!(digits.len(), 4 | 6) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let part = |i: usize| digits.get(i..i + 2).and_then(|p| p.parse::<i32>().ok());
    let (h, m, s) = (
        part(0).ok_or_else(bad)?,
        part(2).ok_or_else(bad)?,
        part(4).unwrap_or(0),
    );
    if h > 23 || m > 59 || s > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3_600 + m * 60 + s))
}

/// A local date-time (`16011028T030000`).
fn local(name: &str, value: &str) -> Result<DateTime, String> {
    DateTime::strptime("%Y%m%dT%H%M%S", value.trim())
        .map_err(|_| format!("{name} {value:?} is not a local date-time (YYYYMMDDTHHMMSS)"))
}

/// `dt` read as UTC, in Unix seconds.
fn utc_seconds(dt: DateTime) -> Result<i64, String> {
    jiff::tz::TimeZone::UTC
        .to_timestamp(dt)
        .map(|t| t.as_second())
        .map_err(|e| e.to_string())
}

/// The UTC wall clock of Unix seconds `t`.
fn civil_of(t: i64) -> Result<DateTime, String> {
    jiff::Timestamp::from_second(t)
        .map(|t| jiff::tz::TimeZone::UTC.to_datetime(t))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
