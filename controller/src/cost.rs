//! What a master version costs each site: the stored bytes of its chunks the site's relay does not
//! hold yet (counted with the planner's chunk classes, `Classes::missing_bytes`, so chunks shared
//! with a version the relay holds cost nothing), and how long the relay takes to fetch them in
//! its night windows at its rate under the cap (`plan::fetch_time`). Pure: the sites, their
//! upcoming sessions and the time are passed in.

use std::collections::HashMap;

use crate::plan::{fetch_time, Classes, Fetch, MasterRef, Relay, Site};

/// Night windows looked at for a fetch's end.
pub const HORIZON_SECS: i64 = 60 * 24 * 3600;

/// One site's cost of a master version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCost {
    pub site: String,
    /// Versions of the master the site's relay holds.
    pub holds: Vec<MasterRef>,
    /// Stored bytes the relay lacks.
    pub missing: u64,
    /// Stored bytes of the whole version.
    pub whole: u64,
    /// What the relay moves per second.
    pub rate: u64,
    /// The fetch from now; `None` beyond `HORIZON_SECS`.
    pub fetch: Option<Fetch>,
    pub relay: bool,
}

/// The cost of `master` at each site that runs the master (`uses`: per site, the master versions
/// of its sessions from now on) or whose relay holds a version of it, by site name; empty for a
/// version the classes do not know.
pub fn version_costs(
    now: i64,
    master: &MasterRef,
    classes: &Classes,
    sites: &[Site],
    uses: &HashMap<String, Vec<MasterRef>>,
) -> Vec<SiteCost> {
    let Some(whole) = classes.master_bytes(master) else {
        return Vec::new();
    };
    let mut out: Vec<SiteCost> = sites
        .iter()
        .filter(|s| {
            let same = |m: &MasterRef| m.name == master.name;
            s.holds.iter().any(same) || uses.get(&s.name).is_some_and(|u| u.iter().any(same))
        })
        .map(|s| {
            let missing = classes.missing_bytes(master, &s.holds).unwrap_or(whole);
            SiteCost {
                site: s.name.clone(),
                holds: s
                    .holds
                    .iter()
                    .filter(|m| m.name == master.name)
                    .cloned()
                    .collect(),
                missing,
                whole,
                rate: s.rate().bytes_per_sec(),
                fetch: fetch_time(now, s, missing, HORIZON_SECS),
                relay: s.relay != Relay::None,
            }
        })
        .collect();
    out.sort_by(|a, b| a.site.cmp(&b.site));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::windows::Schedule;

    fn v(version: &str) -> MasterRef {
        MasterRef::new("win11", version).unwrap()
    }

    fn site(name: &str, cap_mbit: u64, holds: Vec<MasterRef>) -> Site {
        Site {
            name: name.into(),
            // 22:00-06:00 UTC: eight hours a night.
            schedule: Schedule::new("UTC", vec!["22:00-06:00".parse().unwrap()]).unwrap(),
            cap_bps: cap_mbit * 1_000_000,
            holds,
            relay: Relay::Enrolled { last_seen: Some(0) },
        }
    }

    /// win11 1 = classes 0 (shared, 9 GB) + 1 (1 GB); win11 2 = class 0 + class 2 (2 GB).
    fn classes() -> Classes {
        Classes {
            bytes: vec![9_000_000_000, 1_000_000_000, 2_000_000_000],
            chunks: 3,
            masters: HashMap::from([(v("1"), vec![0, 1]), (v("2"), vec![0, 2])]),
        }
    }

    /// 2030-01-07 12:00 UTC, a Monday noon: the next window opens at 22:00.
    const NOON: i64 = 1_894_017_600;

    #[test]
    fn a_site_holding_the_previous_version_fetches_only_what_is_new() {
        let sites = [site("lyon", 100, vec![v("1")])];
        let costs = version_costs(NOON, &v("2"), &classes(), &sites, &HashMap::new());
        assert_eq!(costs.len(), 1);
        let c = &costs[0];
        assert_eq!((c.missing, c.whole), (2_000_000_000, 11_000_000_000));
        assert_eq!(c.holds, vec![v("1")]);
        // 2 GB at what the relay moves under 100 Mbit/s: under an hour, in tonight's window.
        let f = c.fetch.unwrap();
        assert_eq!(f.nights, 1);
        assert_eq!(f.window_secs, 2_000_000_000u64.div_ceil(c.rate) as i64);
        assert_eq!(f.ready_at, NOON + 10 * 3600 + f.window_secs);
        // The version it holds costs nothing.
        let held = version_costs(NOON, &v("1"), &classes(), &sites, &HashMap::new());
        assert_eq!(held[0].missing, 0);
        assert_eq!(held[0].fetch.unwrap().nights, 0);
    }

    #[test]
    fn a_new_site_fetches_the_whole_version_over_several_nights() {
        // 11 GB at 2 Mbit/s: about 12 hours of window, two nights of eight hours.
        let sites = [site("nice", 2, vec![])];
        let uses = HashMap::from([("nice".to_owned(), vec![v("2")])]);
        let c = &version_costs(NOON, &v("2"), &classes(), &sites, &uses)[0];
        assert_eq!(c.missing, c.whole);
        let f = c.fetch.unwrap();
        assert_eq!(f.window_secs, 11_000_000_000u64.div_ceil(c.rate) as i64);
        assert_eq!(f.nights, (f.window_secs as u64).div_ceil(8 * 3600) as u32);
        assert!(f.nights >= 2, "{f:?}");
    }

    #[test]
    fn only_sites_that_run_or_hold_the_master_are_counted() {
        let other = MasterRef::new("ubuntu", "1").unwrap();
        let sites = [
            site("paris", 100, vec![]),
            site("lyon", 100, vec![v("1")]),
            site("brest", 100, vec![other.clone()]),
            site("nice", 100, vec![]),
        ];
        let uses = HashMap::from([
            ("paris".to_owned(), vec![v("1")]),
            ("nice".to_owned(), vec![other]),
        ]);
        let costs = version_costs(NOON, &v("2"), &classes(), &sites, &uses);
        let names: Vec<&str> = costs.iter().map(|c| c.site.as_str()).collect();
        assert_eq!(names, ["lyon", "paris"]);
        assert!(version_costs(NOON, &v("9"), &classes(), &sites, &uses).is_empty());
    }

    #[test]
    fn a_fetch_beyond_the_horizon_has_no_end_and_a_site_without_relay_says_so() {
        // 11 GB at 1 kbit/s: years.
        let mut slow = site("tiny", 0, vec![]);
        slow.cap_bps = 1_000;
        slow.relay = Relay::None;
        let uses = HashMap::from([("tiny".to_owned(), vec![v("2")])]);
        let c = &version_costs(NOON, &v("2"), &classes(), &[slow], &uses)[0];
        assert_eq!(c.fetch, None);
        assert!(!c.relay);
    }
}
