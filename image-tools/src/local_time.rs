//! Times as a DSI reads them: in a site's own time zone, with the zone named
//! (`2030-01-08 08:00 Europe/Paris`). Pure; shared by the `nightcast` CLI and the controller's
//! web console, which both word times for the DSI.

use jiff::tz::TimeZone;

/// Unix seconds as `YYYY-MM-DD HH:MM ZONE` in the IANA zone `tz`; a zone this machine does not
/// know (or an empty one) gives the time in UTC, labelled `UTC`.
pub fn local(secs: i64, tz: &str) -> String {
    let (time, zone) = parts(secs, tz);
    format!("{time} {zone}")
}

/// `START to END ZONE`, both in the zone `tz` (as [`local`]), the zone named once.
pub fn span(start: i64, end: i64, tz: &str) -> String {
    let (start, zone) = parts(start, tz);
    let (end, _) = parts(end, tz);
    format!("{start} to {end} {zone}")
}

/// The time in the zone, and the zone's name (`UTC` when the zone is unknown).
pub fn parts(secs: i64, tz: &str) -> (String, &str) {
    let (zone, name) = match TimeZone::get(tz) {
        Ok(zone) if !tz.is_empty() => (zone, tz),
        _ => (TimeZone::UTC, "UTC"),
    };
    let time = match jiff::Timestamp::from_second(secs) {
        Ok(t) => zone.to_datetime(t).strftime("%Y-%m-%d %H:%M").to_string(),
        Err(_) => format!("{secs} (not a time)"),
    };
    (time, name)
}

/// The local date (`YYYY-MM-DD`) of `secs` in the zone `tz` (UTC when unknown).
pub fn date(secs: i64, tz: &str) -> String {
    let zone = match TimeZone::get(tz) {
        Ok(zone) if !tz.is_empty() => zone,
        _ => TimeZone::UTC,
    };
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => zone.to_datetime(t).date().to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winter_in_paris_is_utc_plus_one() {
        // 2030-01-08 07:00 UTC.
        assert_eq!(
            local(1_894_086_000, "Europe/Paris"),
            "2030-01-08 08:00 Europe/Paris"
        );
    }

    #[test]
    fn summer_in_paris_is_utc_plus_two() {
        // 2030-07-08 06:00 UTC.
        assert_eq!(
            local(1_909_720_800, "Europe/Paris"),
            "2030-07-08 08:00 Europe/Paris"
        );
    }

    #[test]
    fn the_night_the_clocks_go_forward_and_back() {
        // 2030-03-31 00:59 UTC is 01:59 CET; a minute later it is 03:00 CEST.
        assert_eq!(
            local(1_901_149_140, "Europe/Paris"),
            "2030-03-31 01:59 Europe/Paris"
        );
        assert_eq!(
            local(1_901_149_200, "Europe/Paris"),
            "2030-03-31 03:00 Europe/Paris"
        );
        // 2030-10-27 00:30 and 01:30 UTC are both 02:30 in Paris (CEST, then CET).
        assert_eq!(
            local(1_919_291_400, "Europe/Paris"),
            "2030-10-27 02:30 Europe/Paris"
        );
        assert_eq!(
            local(1_919_295_000, "Europe/Paris"),
            "2030-10-27 02:30 Europe/Paris"
        );
    }

    #[test]
    fn an_unknown_zone_falls_back_to_utc_and_says_so() {
        assert_eq!(local(1_894_086_000, "Europe/Lyyon"), "2030-01-08 07:00 UTC");
        assert_eq!(local(1_894_086_000, ""), "2030-01-08 07:00 UTC");
    }

    #[test]
    fn a_span_names_its_zone_once() {
        // 2030-01-08 07:00 to 15:30 UTC.
        assert_eq!(
            span(1_894_086_000, 1_894_116_600, "Europe/Paris"),
            "2030-01-08 08:00 to 2030-01-08 16:30 Europe/Paris"
        );
    }

    #[test]
    fn the_local_date_changes_at_local_midnight() {
        // 2030-01-07 23:30 UTC is already the 8th in Paris.
        assert_eq!(date(1_894_059_000, "Europe/Paris"), "2030-01-08");
        assert_eq!(date(1_894_059_000, "UTC"), "2030-01-07");
    }
}
