//! An emergency push's deadline as the DSI gives it, read in the site's time zone (pure, `now`
//! passed in): `HH:MM` is today's (the site's today), `YYYY-MM-DD HH:MM` a date's; Unix seconds
//! are taken as they are.

/// Unix seconds of `text` at a site in zone `tz` whose today is the day of `now`.
pub fn resolve(text: &str, tz: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    let bad =
        || format!("deadline {text:?}: give HH:MM (today, the site's time) or YYYY-MM-DD HH:MM");
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    let zone = jiff::tz::TimeZone::get(tz).map_err(|_| format!("unknown time zone {tz:?}"))?;
    let civil = match text.len() {
        4 | 5 => {
            let time: jiff::civil::Time = format!("{text:0>5}").parse().map_err(|_| bad())?;
            let today = zone
                .to_datetime(jiff::Timestamp::from_second(now).map_err(|e| e.to_string())?)
                .date();
            today.to_datetime(time)
        }
        _ => text
            .replacen(' ', "T", 1)
            .parse::<jiff::civil::DateTime>()
            .map_err(|_| bad())?,
    };
    zone.to_timestamp(civil)
        .map(|t| t.as_second())
        .map_err(|e| format!("deadline {text:?} in {tz}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn a_time_is_todays_in_the_sites_zone_and_a_date_time_is_that_day() {
        // 11:30 in Paris (UTC+1 in winter).
        let now = at("2030-01-08T10:30:00Z");
        assert_eq!(
            resolve("14:00", "Europe/Paris", now),
            Ok(at("2030-01-08T13:00:00Z"))
        );
        assert_eq!(
            resolve("9:05", "Europe/Paris", now),
            Ok(at("2030-01-08T08:05:00Z"))
        );
        // 00:30 in Paris is still the 7th in UTC: today is the site's.
        let night = at("2030-01-07T23:30:00Z");
        assert_eq!(
            resolve("14:00", "Europe/Paris", night),
            Ok(at("2030-01-08T13:00:00Z"))
        );
        assert_eq!(
            resolve("2030-01-09 14:00", "Europe/Paris", now),
            Ok(at("2030-01-09T13:00:00Z"))
        );
        assert_eq!(resolve("1894111200", "UTC", now), Ok(1_894_111_200));
        for bad in ["2pm", "14h", "25:00", "2030-13-01 14:00", ""] {
            let e = resolve(bad, "Europe/Paris", now).unwrap_err();
            assert!(e.contains("HH:MM"), "{bad}: {e}");
        }
    }
}
