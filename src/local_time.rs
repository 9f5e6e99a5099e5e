//! Times as a DSI reads them: in the site's own time zone, with the zone named
//! (`2030-01-08 08:00 Europe/Paris`). `--json` keeps Unix seconds; only the words change.

use std::collections::HashMap;

use image_tools::api::SiteInfo;
pub use image_tools::local_time::{local, span};
use image_tools::SiteId;

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
