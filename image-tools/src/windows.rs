//! Night windows: the hours, in a site's own time zone, when its relay may use the WAN.
//!
//! A window is two wall-clock times, such as 22:00-06:00; when the end is not after the start it runs
//! into the next day. Each opening is turned into an absolute interval through the site's time zone
//! (jiff and the system's tz database, never by hand), so a night that crosses a daylight-saving
//! change is an hour shorter or longer, as the wall clock says; a window edge that falls in the
//! spring-forward gap moves forward by the gap's length, 02:30 becoming 03:30 (jiff's "compatible"
//! rule, the one iCalendar uses).
//! Pure: times are Unix seconds passed in.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("{0:?} is not a window: write it as HH:MM-HH:MM, e.g. 22:00-06:00")]
    Syntax(String),
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Paris)")]
    TimeZone(String),
    #[error("window {0:?} is empty (start and end are equal)")]
    Empty(String),
}

/// A daily window in local wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: Time,
    pub end: Time,
}

impl std::str::FromStr for Window {
    type Err = WindowError;
    fn from_str(s: &str) -> Result<Window, WindowError> {
        let bad = || WindowError::Syntax(s.to_owned());
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let parse = |t: &str| -> Result<Time, WindowError> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            Time::new(h, m, 0, 0).map_err(|_| bad())
        };
        let w = Window {
            start: parse(a)?,
            end: parse(b)?,
        };
        if w.start == w.end {
            return Err(WindowError::Empty(s.to_owned()));
        }
        Ok(w)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start.hour(),
            self.start.minute(),
            self.end.hour(),
            self.end.minute()
        )
    }
}

/// A site's windows in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub tz: TimeZone,
    pub windows: Vec<Window>,
}

impl Schedule {
    pub fn new(tz_name: &str, windows: Vec<Window>) -> Result<Schedule, WindowError> {
        let tz = TimeZone::get(tz_name).map_err(|_| WindowError::TimeZone(tz_name.to_owned()))?;
        Ok(Schedule { tz, windows })
    }

    /// The local date of a Unix time, for reporting "the night of ...".
    pub fn local_date(&self, unix: i64) -> Option<Date> {
        Timestamp::from_second(unix)
            .ok()
            .map(|t| self.tz.to_datetime(t).date())
    }

    /// Every opening overlapping `[from, until)`, clipped to it, in order, merged where they touch.
    pub fn openings(&self, from: i64, until: i64) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = Vec::new();
        let (Some(first), Some(last)) = (self.local_date(from), self.local_date(until)) else {
            return out;
        };
        // Start a day early: a window that opened yesterday evening may still be open at `from`.
        let mut day = first.yesterday().unwrap_or(first);
        while day <= last {
            for w in &self.windows {
                let Some((s, e)) = self.occurrence(day, w) else {
                    continue;
                };
                let (s, e) = (s.max(from), e.min(until));
                if s < e {
                    out.push((s, e));
                }
            }
            match day.tomorrow() {
                Ok(next) => day = next,
                Err(_) => break,
            }
        }
        out.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(out.len());
        for (s, e) in out {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    /// The window `w` that opens on local date `day`, as Unix seconds.
    fn occurrence(&self, day: Date, w: &Window) -> Option<(i64, i64)> {
        let start = self
            .tz
            .to_timestamp(day.to_datetime(w.start))
            .ok()?
            .as_second();
        let end_day = if w.end > w.start {
            day
        } else {
            day.tomorrow().ok()?
        };
        let end = self
            .tz
            .to_timestamp(end_day.to_datetime(w.end))
            .ok()?
            .as_second();
        (end > start).then_some((start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn paris(windows: &str) -> Schedule {
        let w = windows.split(',').map(|w| w.parse().unwrap()).collect();
        Schedule::new("Europe/Paris", w).unwrap()
    }

    fn unix(s: &Schedule, d: Date, h: i8, m: i8) -> i64 {
        s.tz.to_timestamp(d.at(h, m, 0, 0)).unwrap().as_second()
    }

    #[test]
    fn a_window_across_midnight_is_one_opening_per_night() {
        let s = paris("22:00-06:00");
        let from = unix(&s, date(2026, 11, 23), 12, 0);
        let until = unix(&s, date(2026, 11, 25), 12, 0);
        let o = s.openings(from, until);
        assert_eq!(o.len(), 2);
        assert_eq!(
            o[0],
            (
                unix(&s, date(2026, 11, 23), 22, 0),
                unix(&s, date(2026, 11, 24), 6, 0)
            )
        );
        assert_eq!(o[0].1 - o[0].0, 8 * 3600);
        // Asked in the middle of a night, the rest of that night counts.
        let o = s.openings(unix(&s, date(2026, 11, 24), 2, 0), until);
        assert_eq!(
            o[0],
            (
                unix(&s, date(2026, 11, 24), 2, 0),
                unix(&s, date(2026, 11, 24), 6, 0)
            )
        );
    }

    #[test]
    fn nights_across_both_dst_changes_in_paris_have_their_real_length() {
        let s = paris("22:00-06:00");
        // Spring forward: night of Sat 28 to Sun 29 March 2026 loses an hour (02:00 -> 03:00).
        let from = unix(&s, date(2026, 3, 28), 12, 0);
        let o = s.openings(from, from + 86_400);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].1 - o[0].0, 7 * 3600);
        // Fall back: night of Sat 24 to Sun 25 October 2026 gains one (03:00 -> 02:00).
        let from = unix(&s, date(2026, 10, 24), 12, 0);
        let o = s.openings(from, from + 86_400);
        assert_eq!(o[0].1 - o[0].0, 9 * 3600);
        // A window that starts inside the gap (02:30 does not exist that day) opens at 03:30.
        let s = paris("02:30-05:00");
        let from = unix(&s, date(2026, 3, 29), 0, 0);
        let o = s.openings(from, from + 86_400);
        assert_eq!(o[0].0, unix(&s, date(2026, 3, 29), 3, 30));
        assert_eq!(o[0].1 - o[0].0, 3600 + 1800);
    }

    #[test]
    fn several_windows_merge_and_bad_input_is_refused() {
        let s = paris("12:00-14:00,22:00-06:00,05:00-07:00");
        let from = unix(&s, date(2026, 11, 23), 0, 0);
        let o = s.openings(from, from + 86_400);
        // 00:00-07:00 (yesterday's night merged with 05-07), 12-14, 22-24 (clipped).
        let hours: Vec<i64> = o.iter().map(|(a, b)| (b - a) / 3600).collect();
        assert_eq!(hours, vec![7, 2, 2]);
        assert!("22h-6h".parse::<Window>().is_err());
        assert!("25:00-06:00".parse::<Window>().is_err());
        assert!("06:00-06:00".parse::<Window>().is_err());
        assert!(Schedule::new("Mars/Olympus", vec![]).is_err());
        assert_eq!(
            "22:00-06:00".parse::<Window>().unwrap().to_string(),
            "22:00-06:00"
        );
    }
}
