//! Times as a DSI reads them: in a site's own time zone, with the zone named
//! (`2030-01-08 08:00 Europe/Paris`). Pure; shared by the `nightcast` CLI and the controller's
//! web console, which both word times for the DSI.

use jiff::tz::TimeZone;

/// A site's zone, looked up once (the console words thousands of times per page).
#[derive(Debug, Clone)]
pub struct Zone {
    zone: TimeZone,
    name: String,
}

impl Zone {
    /// The IANA zone `tz`; a zone this machine does not know (or an empty one) is UTC, named
    /// `UTC`.
    pub fn named(tz: &str) -> Zone {
        match TimeZone::get(tz) {
            Ok(zone) if !tz.is_empty() => Zone {
                zone,
                name: tz.to_owned(),
            },
            _ => Zone {
                zone: TimeZone::UTC,
                name: "UTC".to_owned(),
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `YYYY-MM-DD HH:MM ZONE`.
    pub fn local(&self, secs: i64) -> String {
        format!("{} {}", self.time(secs), self.name)
    }

    /// `YYYY-MM-DD HH:MM`, the zone unnamed.
    pub fn time(&self, secs: i64) -> String {
        match jiff::Timestamp::from_second(secs) {
            Ok(t) => {
                // By hand: strftime's parsing of its pattern costs more than the rest.
                let d = self.zone.to_datetime(t);
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}",
                    d.year(),
                    d.month(),
                    d.day(),
                    d.hour(),
                    d.minute()
                )
            }
            Err(_) => format!("{secs} (not a time)"),
        }
    }

    /// The local date, `YYYY-MM-DD` (empty for a time out of range).
    pub fn date(&self, secs: i64) -> String {
        match jiff::Timestamp::from_second(secs) {
            Ok(t) => self.zone.to_datetime(t).date().to_string(),
            Err(_) => String::new(),
        }
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM ZONE` in the IANA zone `tz`; a zone this machine does not
/// know (or an empty one) gives the time in UTC, labelled `UTC`.
pub fn local(secs: i64, tz: &str) -> String {
    Zone::named(tz).local(secs)
}

/// `START to END ZONE`, both in the zone `tz` (as [`local`]), the zone named once.
pub fn span(start: i64, end: i64, tz: &str) -> String {
    let zone = Zone::named(tz);
    format!("{} to {} {}", zone.time(start), zone.time(end), zone.name())
}

/// The local date (`YYYY-MM-DD`) of `secs` in the zone `tz` (UTC when unknown).
pub fn date(secs: i64, tz: &str) -> String {
    Zone::named(tz).date(secs)
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
