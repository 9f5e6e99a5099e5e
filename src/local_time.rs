//! Times as a DSI reads them: in the site's own time zone, with the zone named
//! (`2030-01-08 08:00 Europe/Paris`). `--json` keeps Unix seconds; only the words change.

use std::collections::HashMap;

use image_tools::api::SiteInfo;
use image_tools::SiteId;
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
fn parts(secs: i64, tz: &str) -> (String, &str) {
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

/// Each site's time zone, fetched once per command (`GET /v1/sites`).
#[derive(Debug, Default)]
pub struct Zones(HashMap<SiteId, String>);

impl Zones {
    pub fn new(sites: &[SiteInfo]) -> Zones {
        Zones(
            sites
                .iter()
                .map(|s| (s.name.clone(), s.tz.clone()))
                .collect(),
        )
    }

    /// `secs` in `site`'s zone, named; in UTC for a site it does not know.
    pub fn time(&self, site: &SiteId, secs: i64) -> String {
        local(secs, self.zone(site))
    }

    /// `START to END ZONE` in `site`'s zone.
    pub fn span(&self, site: &SiteId, start: i64, end: i64) -> String {
        span(start, end, self.zone(site))
    }

    /// When a relay or NUC was last heard from, in `site`'s zone, or `never`.
    pub fn last_seen(&self, site: &SiteId, secs: Option<i64>) -> String {
        secs.map_or_else(|| "never".to_owned(), |t| self.time(site, t))
    }

    fn zone(&self, site: &SiteId) -> &str {
        self.0.get(site).map_or("UTC", String::as_str)
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
    fn a_site_takes_its_zone_and_an_unknown_site_gets_utc() {
        let zones = Zones(HashMap::from([(
            "lyon".parse::<SiteId>().expect("site id"),
            "Europe/Paris".to_owned(),
        )]));
        let lyon = "lyon".parse().expect("site id");
        let other = "nantes".parse().expect("site id");
        assert_eq!(
            zones.time(&lyon, 1_894_086_000),
            "2030-01-08 08:00 Europe/Paris"
        );
        assert_eq!(zones.time(&other, 1_894_086_000), "2030-01-08 07:00 UTC");
    }
}
