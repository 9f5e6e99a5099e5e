//! Times as the site's DSI reads them on the relay's console: in the site's zone (the plan's
//! `tz`), named: `2030-01-07 06:30 Europe/Paris`. A zone this machine does not know gives UTC,
//! labelled `UTC`, never an unlabelled time.

/// Unix seconds as `YYYY-MM-DD HH:MM ZONE` in the IANA zone `tz`.
pub fn local(secs: i64, tz: &str) -> String {
    let (zone, name) = match jiff::tz::TimeZone::get(tz) {
        Ok(zone) if !tz.is_empty() => (zone, tz),
        _ => (jiff::tz::TimeZone::UTC, "UTC"),
    };
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => format!("{} {name}", zone.to_datetime(t).strftime("%Y-%m-%d %H:%M")),
        Err(_) => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_in_the_sites_zone_named_and_utc_when_the_zone_is_unknown() {
        // 2030-01-07 05:30 UTC: winter in Paris (+1), and a summer date (+2).
        assert_eq!(
            local(1_893_994_200, "Europe/Paris"),
            "2030-01-07 06:30 Europe/Paris"
        );
        assert_eq!(
            local(1_909_725_000, "Europe/Paris"),
            "2030-07-08 09:10 Europe/Paris"
        );
        assert_eq!(local(1_893_994_200, "Europe/Lyon"), "2030-01-07 05:30 UTC");
        assert_eq!(local(1_893_994_200, ""), "2030-01-07 05:30 UTC");
    }
}
