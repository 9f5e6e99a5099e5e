//! Property values: date-times (UTC, in a `TZID`, floating), dates, durations, `UNTIL`.

use super::super::{Error, When};
use super::lines::Line;
use super::zones::Zones;

/// Whether a date-time property holds a date alone (`VALUE=DATE`, or eight digits): an all-day
/// event.
pub(super) fn is_date(p: &Line) -> bool {
    p.param("VALUE")
        .is_some_and(|v| v.eq_ignore_ascii_case("DATE"))
        || (p.value.trim().len() == 8 && p.value.trim().bytes().all(|b| b.is_ascii_digit()))
}

/// One date-time value of `p` (a list is split by the caller): UTC with `Z`, in its `TZID`, or
/// floating.
pub(super) fn when(name: &str, p: &Line, value: &str, zones: &Zones) -> Result<When, Error> {
    let bad = || {
        Error::new(
            p.line,
            format!("{name} {value:?} is not a date-time (YYYYMMDDTHHMMSS[Z])"),
        )
    };
    let value = value.trim();
    let (digits, utc) = match value.strip_suffix(['Z', 'z']) {
        Some(v) => (v, true),
        None => (value, false),
    };
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", digits).map_err(|_| bad())?;
    match (utc, p.param("TZID")) {
        (true, _) => When::Unix(0).with_civil(dt).map_err(|_| bad()),
        (false, Some(tzid)) => Ok(When::Zoned(dt, zones.zone(name, tzid, p.line)?)),
        (false, None) => Ok(When::Local(dt)),
    }
}

/// One date value (`YYYYMMDD`).
pub(super) fn date(name: &str, p: &Line, value: &str) -> Result<jiff::civil::Date, Error> {
    jiff::civil::Date::strptime("%Y%m%d", value.trim())
        .map_err(|_| Error::new(p.line, format!("{name} {value:?} is not a date (YYYYMMDD)")))
}

/// A `DURATION` (`PT3H30M`, `P1D`, `P1W`): a length on the wall clock, more than zero.
pub(super) fn duration(p: &Line) -> Result<jiff::Span, Error> {
    let value = p.value.trim();
    let bad = |why: &str| {
        Error::new(
            p.line,
            format!("DURATION {value:?} {why} (as PT3H30M, P1D or P1W)"),
        )
    };
    let rest = value.strip_prefix('+').unwrap_or(value);
    if rest.starts_with('-') {
        return Err(bad("is negative"));
    }
    let rest = rest
        .strip_prefix(['P', 'p'])
        .ok_or_else(|| bad("is not a duration"))?;
    let (mut days, mut seconds, mut time, mut number) = (0i64, 0i64, false, None::<i64>);
    for c in rest.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = number.unwrap_or(0) * 10 + i64::from(d);
            if n > 100_000_000 {
                return Err(bad("is too long"));
            }
            number = Some(n);
            continue;
        }
        let c = c.to_ascii_uppercase();
        if c == 'T' && !time && number.is_none() {
            time = true;
            continue;
        }
        let n = number.take().ok_or_else(|| bad("is not a duration"))?;
        match (c, time) {
            ('W', false) => days += 7 * n,
            ('D', false) => days += n,
            ('H', true) => seconds += 3_600 * n,
            ('M', true) => seconds += 60 * n,
            ('S', true) => seconds += n,
            _ => return Err(bad("is not a duration")),
        }
    }
    if number.is_some() {
        return Err(bad("is not a duration"));
    }
    if days == 0 && seconds == 0 {
        return Err(bad("is zero"));
    }
    jiff::Span::new()
        .try_days(days)
        .and_then(|s| s.try_seconds(seconds))
        .map_err(|_| bad("is too long"))
}

/// An `UNTIL` value, in the form of `DTSTART` unless it says UTC; a date alone is the end of
/// that day.
pub(super) fn until(value: &str, start: &When) -> Result<When, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(value: &str) -> Line {
        Line {
            line: 7,
            name: "DURATION".into(),
            params: vec![],
            value: value.into(),
        }
    }

    #[test]
    fn durations_as_calendars_write_them() {
        let secs = |v: &str| {
            duration(&line(v))
                .unwrap()
                .total((jiff::Unit::Second, jiff::civil::date(2030, 1, 1)))
                .unwrap() as i64
        };
        assert_eq!(secs("PT3H30M"), 12_600);
        assert_eq!(secs("PT8H"), 28_800);
        assert_eq!(secs("P1D"), 86_400);
        assert_eq!(secs("P1W"), 604_800);
        assert_eq!(secs("P1DT2H"), 93_600);
        assert_eq!(secs("+PT90M"), 5_400);
        for bad in [
            "-PT1H", "PT0S", "P", "PT", "1H", "PT1D", "P1H", "PT1H30", "P1WX",
        ] {
            let e = duration(&line(bad)).unwrap_err();
            assert!(e.line == 7 && e.what.starts_with("DURATION"), "{bad}: {e}");
        }
    }
}
