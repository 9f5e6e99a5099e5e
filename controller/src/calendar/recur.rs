//! Recurrence rules (RFC 5545 `RRULE`), the part a training calendar uses: `FREQ=DAILY` or
//! `WEEKLY`, `INTERVAL`, `COUNT` or `UNTIL`, `BYDAY` (plain days, no `1MO`), `WKST`.
//!
//! Anything else (`MONTHLY`, `BYMONTH`, `BYSETPOS`...) is refused with the part named, never
//! ignored: a rule half understood would import a calendar other than the DSI's. A rule ends
//! (`COUNT` or `UNTIL`) or is open ([`End::Open`]: the caller stops it at a horizon), and yields
//! at most [`MAX_OCCURRENCES`] sessions within [`HORIZON_DAYS`].
//!
//! Occurrences are whole days after `DTSTART` on its own wall clock: the caller shifts `DTSTART`
//! and `DTEND` by them (`When::shift_days`), so a course at 08:30 stays at 08:30 across a change
//! of summer time. `DTSTART` is always the first occurrence and counts in `COUNT`.

use jiff::civil::{Date, Weekday};

/// Occurrences of one rule, at most.
pub const MAX_OCCURRENCES: usize = 1_000;
/// How far after `DTSTART` a rule may still yield an occurrence (about ten years).
pub const HORIZON_DAYS: i64 = 3_660;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freq {
    Daily,
    Weekly,
}

/// How a rule ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// This many occurrences, `DTSTART` included.
    Count(usize),
    /// No occurrence after this `UNTIL` value (compared by the caller, who knows the zones).
    Until(String),
    /// Neither: it repeats for ever, and the caller says where to stop.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub freq: Freq,
    pub interval: i64,
    pub end: End,
    /// Days of the week (empty: the day of `DTSTART` for a weekly rule, every day for a daily one).
    pub by_day: Vec<Weekday>,
    pub week_start: Weekday,
}

impl std::str::FromStr for Rule {
    type Err = String;

    /// Parses an `RRULE` value (`FREQ=WEEKLY;COUNT=10;BYDAY=MO,WE`).
    fn from_str(value: &str) -> Result<Rule, String> {
        let (mut freq, mut interval, mut end) = (None, None, None);
        let (mut by_day, mut week_start) = (None, None);
        for part in value.trim().split(';').filter(|p| !p.is_empty()) {
            let (key, v) = part
                .split_once('=')
                .ok_or_else(|| format!("RRULE part {part:?} is not KEY=VALUE"))?;
            let key = key.to_ascii_uppercase();
            let v = v.to_ascii_uppercase();
            let already = match key.as_str() {
                "FREQ" => freq
                    .replace(match v.as_str() {
                        "DAILY" => Freq::Daily,
                        "WEEKLY" => Freq::Weekly,
                        _ => {
                            return Err(format!(
                                "RRULE FREQ={v} is not supported (DAILY or WEEKLY): \
                             list these sessions one by one"
                            ))
                        }
                    })
                    .is_some(),
                "INTERVAL" => interval
                    .replace(count(&key, &v, HORIZON_DAYS as usize)? as i64)
                    .is_some(),
                "COUNT" => end
                    .replace(End::Count(count(&key, &v, MAX_OCCURRENCES)?))
                    .is_some(),
                "UNTIL" => end.replace(End::Until(v.clone())).is_some(),
                "BYDAY" => by_day
                    .replace(v.split(',').map(weekday).collect::<Result<Vec<_>, _>>()?)
                    .is_some(),
                "WKST" => week_start.replace(weekday(&v)?).is_some(),
                _ => {
                    return Err(format!(
                        "RRULE {key} is not supported (FREQ, INTERVAL, COUNT, UNTIL, BYDAY, WKST): \
                         list these sessions one by one"
                    ))
                }
            };
            if already {
                let what = if matches!(key.as_str(), "COUNT" | "UNTIL") {
                    "COUNT or UNTIL"
                } else {
                    key.as_str()
                };
                return Err(format!("RRULE has {what} twice"));
            }
        }
        Ok(Rule {
            freq: freq.ok_or("RRULE has no FREQ")?,
            interval: interval.unwrap_or(1),
            end: end.unwrap_or(End::Open),
            by_day: by_day.unwrap_or_default(),
            week_start: week_start.unwrap_or(Weekday::Monday),
        })
    }
}

/// A rule part's number, between 1 and `max`.
fn count(key: &str, v: &str, max: usize) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("RRULE {key}={v} is not between 1 and {max}"))
}

fn weekday(day: &str) -> Result<Weekday, String> {
    Ok(match day.trim() {
        "MO" => Weekday::Monday,
        "TU" => Weekday::Tuesday,
        "WE" => Weekday::Wednesday,
        "TH" => Weekday::Thursday,
        "FR" => Weekday::Friday,
        "SA" => Weekday::Saturday,
        "SU" => Weekday::Sunday,
        _ => {
            return Err(format!(
                "RRULE day {day:?} is not supported (MO, TU, WE, TH, FR, SA or SU)"
            ))
        }
    })
}

/// Days since `b` to reach `a`, in 0..7.
fn days_after(a: Weekday, b: Weekday) -> i64 {
    i64::from(a.to_monday_zero_offset() - b.to_monday_zero_offset()).rem_euclid(7)
}

impl Rule {
    /// The occurrences of a rule whose `DTSTART` falls on `start`, as days after it, in order;
    /// `0` (`DTSTART` itself) first. `after_until(days)` says whether an occurrence that many
    /// days after `DTSTART` is past `UNTIL`, or for an open rule past the caller's horizon (not
    /// asked for a `COUNT` rule).
    pub fn days(
        &self,
        start: Date,
        mut after_until: impl FnMut(i64) -> Result<bool, String>,
    ) -> Result<Vec<i64>, String> {
        let first = start.weekday();
        let mut days = match self.freq {
            Freq::Weekly if self.by_day.is_empty() => vec![first],
            _ => self.by_day.clone(),
        };
        // The days of one period, as offsets from the period's first day.
        let (period, mut offsets): (i64, Vec<i64>) = match self.freq {
            Freq::Daily => (self.interval, vec![0]),
            Freq::Weekly => {
                days.sort_by_key(|d| days_after(*d, self.week_start));
                days.dedup();
                (
                    7 * self.interval,
                    days.iter()
                        .map(|d| days_after(*d, self.week_start))
                        .collect(),
                )
            }
        };
        offsets.dedup();
        // The first period starts on DTSTART (daily) or on the week start before it (weekly).
        let origin = match self.freq {
            Freq::Daily => 0,
            Freq::Weekly => -days_after(first, self.week_start),
        };
        let wanted = |day: i64| {
            self.freq == Freq::Weekly
                || self.by_day.is_empty()
                || self.by_day.contains(&first.wrapping_add(day))
        };
        let mut out = vec![0];
        if self.end == End::Count(1) {
            return Ok(out);
        }
        let mut base = origin;
        loop {
            for day in offsets.iter().map(|o| base + o).filter(|&d| d > 0) {
                if !wanted(day) {
                    continue;
                }
                if matches!(self.end, End::Until(_) | End::Open) && after_until(day)? {
                    return Ok(out);
                }
                if day > HORIZON_DAYS || out.len() >= MAX_OCCURRENCES {
                    return Err(format!(
                        "the RRULE goes on beyond {MAX_OCCURRENCES} sessions or {} years: \
                         split it",
                        HORIZON_DAYS / 366
                    ));
                }
                out.push(day);
                if self.end == End::Count(out.len()) {
                    return Ok(out);
                }
            }
            if base > HORIZON_DAYS {
                return Err(format!(
                    "the RRULE yields no session within {} years of DTSTART",
                    HORIZON_DAYS / 366
                ));
            }
            base += period;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap()
    }

    /// 2026-10-19 is a Monday.
    fn monday() -> Date {
        jiff::civil::date(2026, 10, 19)
    }

    fn days(r: &str, until: Option<i64>) -> Vec<i64> {
        rule(r)
            .days(monday(), |d| Ok(until.is_some_and(|u| d > u)))
            .unwrap()
    }

    #[test]
    fn weekly_with_count_repeats_on_the_day_of_dtstart() {
        assert_eq!(days("FREQ=WEEKLY;COUNT=4", None), [0, 7, 14, 21]);
        assert_eq!(days("FREQ=WEEKLY;INTERVAL=2;COUNT=3", None), [0, 14, 28]);
        assert_eq!(days("freq=weekly;count=1", None), [0]);
    }

    #[test]
    fn weekly_by_day_fills_each_week_in_order() {
        assert_eq!(
            days("FREQ=WEEKLY;BYDAY=WE,MO;COUNT=5", None),
            [0, 2, 7, 9, 14]
        );
        // Every other week; the week of DTSTART is the first.
        assert_eq!(
            days("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR;COUNT=4", None),
            [0, 4, 14, 18]
        );
    }

    #[test]
    fn the_week_start_decides_which_weeks_every_other_week_means() {
        // DTSTART on a Tuesday, sessions on Tuesdays and Sundays every other week (the RFC's own
        // example): with weeks from Monday the Sunday belongs to the week of DTSTART, with weeks
        // from Sunday it opens the next one, which is skipped.
        let tuesday = jiff::civil::date(2026, 10, 20);
        let run = |r: &str| rule(r).days(tuesday, |_| Ok(false)).unwrap();
        assert_eq!(
            run("FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO"),
            [0, 5, 14, 19]
        );
        assert_eq!(
            run("FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU"),
            [0, 12, 14, 26]
        );
    }

    #[test]
    fn daily_steps_by_the_interval_and_keeps_only_the_days_named() {
        assert_eq!(days("FREQ=DAILY;COUNT=3", None), [0, 1, 2]);
        assert_eq!(days("FREQ=DAILY;INTERVAL=3;COUNT=3", None), [0, 3, 6]);
        // Weekdays only: Monday to Friday, then the next Monday.
        assert_eq!(
            days("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;COUNT=6", None),
            [0, 1, 2, 3, 4, 7]
        );
    }

    #[test]
    fn until_is_inclusive_and_dtstart_always_counts() {
        assert_eq!(days("FREQ=WEEKLY;UNTIL=X", Some(14)), [0, 7, 14]);
        assert_eq!(days("FREQ=WEEKLY;UNTIL=X", Some(13)), [0, 7]);
        assert_eq!(days("FREQ=WEEKLY;UNTIL=X", Some(-5)), [0]);
        // DTSTART on a Monday, rule on Wednesdays: the Monday is still the first session.
        assert_eq!(days("FREQ=WEEKLY;BYDAY=WE;COUNT=3", None), [0, 2, 9]);
    }

    #[test]
    fn what_is_not_expanded_is_refused_with_the_reason() {
        for (bad, what) in [
            ("FREQ=MONTHLY;COUNT=3", "FREQ=MONTHLY is not supported"),
            ("FREQ=WEEKLY;BYMONTH=1;COUNT=3", "BYMONTH is not supported"),
            ("FREQ=WEEKLY;BYDAY=1MO;COUNT=3", "day \"1MO\""),
            ("COUNT=3", "no FREQ"),
            ("FREQ=WEEKLY;COUNT=3;UNTIL=20270101", "COUNT or UNTIL twice"),
            ("FREQ=WEEKLY;COUNT=0", "COUNT=0"),
            ("FREQ=WEEKLY;COUNT=3;INTERVAL=-1", "INTERVAL=-1"),
            ("FREQ=WEEKLY;COUNT", "not KEY=VALUE"),
        ] {
            let e = bad.parse::<Rule>().unwrap_err();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn an_open_rule_stops_where_the_caller_says() {
        let r = rule("FREQ=WEEKLY;BYDAY=MO,WE");
        assert_eq!(r.end, End::Open);
        assert_eq!(r.days(monday(), |d| Ok(d > 10)).unwrap(), [0, 2, 7, 9]);
    }

    #[test]
    fn a_rule_that_goes_on_too_long_is_refused() {
        let e = rule("FREQ=DAILY;UNTIL=X")
            .days(monday(), |_| Ok(false))
            .unwrap_err();
        assert!(e.contains("beyond 1000 sessions"), "{e}");
        // Weekly, every 530 weeks: the second session would be ten years on.
        let e = rule("FREQ=WEEKLY;INTERVAL=530;COUNT=2")
            .days(monday(), |_| Ok(false))
            .unwrap_err();
        assert!(e.contains("beyond"), "{e}");
        // Daily on Tuesdays, every 7 days from a Monday: never.
        let e = rule("FREQ=DAILY;INTERVAL=7;BYDAY=TU;COUNT=2")
            .days(monday(), |_| Ok(false))
            .unwrap_err();
        assert!(e.contains("no session within"), "{e}");
    }
}
