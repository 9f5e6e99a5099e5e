//! When the daily digest is due: pure, `now` passed in. The digest goes out at the first check
//! at or after `[alerts] digest_at` in the alerts' time zone, once a day; a controller that was
//! down at that time sends it when it is back.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// `HH:MM`, as `[alerts] digest_at` gives it.
pub fn parse_time(text: &str) -> Result<Time, String> {
    let bad = || format!("{text:?} is not a time of day HH:MM (e.g. \"07:00\")");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// The last instant at or before `now` (Unix seconds) at which the clocks of `zone` showed `at`
/// (on a day it did not exist, skipped by a DST change, the instant it would have been, later).
pub fn last_occurrence(now: i64, at: Time, zone: &TimeZone) -> i64 {
    let Ok(now_ts) = Timestamp::from_second(now) else {
        return now;
    };
    let today = zone.to_datetime(now_ts).date();
    let on = |date: jiff::civil::Date| {
        zone.to_timestamp(date.to_datetime(at))
            .map_or(now, |t| t.as_second())
    };
    let t = on(today);
    if t <= now {
        return t;
    }
    today.checked_sub(1.day()).map_or(now, on)
}

/// Whether a digest is due at `now`, the last one having gone out at `last_sent`.
pub fn due(last_sent: i64, now: i64, at: Time, zone: &TimeZone) -> bool {
    last_occurrence(now, at, zone) > last_sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_second()
    }

    fn paris() -> TimeZone {
        TimeZone::get("Europe/Paris").unwrap()
    }

    #[test]
    fn the_digest_is_due_once_a_day_at_the_local_time() {
        let at = parse_time("07:00").unwrap();
        let z = paris();
        // 07:00 in Paris in winter is 06:00 UTC.
        let seven = unix("2026-12-02T06:00:00Z");
        assert_eq!(last_occurrence(seven, at, &z), seven);
        assert_eq!(last_occurrence(seven - 1, at, &z), seven - 86_400);
        // Sent yesterday: due at 07:00 and after, not before; sent today: not again.
        let yesterday = seven - 86_400;
        assert!(!due(yesterday, seven - 60, at, &z));
        assert!(due(yesterday, seven, at, &z));
        assert!(due(yesterday, seven + 3 * 3600, at, &z), "down at 07:00");
        assert!(!due(seven + 30, seven + 3600, at, &z));
        assert!(!due(seven + 30, seven + 86_399, at, &z));
        assert!(due(seven + 30, seven + 86_400, at, &z));
    }

    #[test]
    fn the_digest_follows_the_zone_across_daylight_saving_time() {
        let at = parse_time("07:00").unwrap();
        // Summer: 07:00 in Paris is 05:00 UTC.
        let summer = unix("2026-07-01T05:00:00Z");
        assert_eq!(last_occurrence(summer + 10, at, &paris()), summer);
        // A time skipped on the night of the change (02:30 on 2026-03-29) is taken an hour later.
        let skipped = parse_time("02:30").unwrap();
        let after = unix("2026-03-29T01:30:00Z"); // 03:30 CEST
        assert_eq!(last_occurrence(after, skipped, &paris()), after);
        assert_eq!(
            last_occurrence(after, at, &TimeZone::UTC),
            unix("2026-03-28T07:00:00Z")
        );
    }

    #[test]
    fn a_bad_time_is_refused_with_an_example() {
        for bad in ["7:00", "07:60", "24:00", "0700", "07:0a", ""] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("HH:MM") && e.contains(bad), "{e}");
        }
        assert_eq!(
            parse_time("23:59").unwrap(),
            Time::new(23, 59, 0, 0).unwrap()
        );
    }
}
