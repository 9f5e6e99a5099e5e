//! The relay's `/metrics` (Prometheus text format, written by `image_tools::metrics`), pure: the
//! relay's own counters and gauges in, the text out. Every number is one the relay already keeps
//! for `status.json` and its reports (`daemon::Stats`, counted where bytes move: the link counts
//! WAN bytes, the fetcher what it stores, the store graph what the LAN reads, the scrub what it
//! checks) or the agents' last reports; nothing here reads the store or the clock.

use image_tools::metrics::{Exposition, Kind, Sample};

use crate::daemon::Stats;

/// What a scrape reads besides [`Stats`].
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// The site's WAN cap from the plan, in bits per second (0: none given).
    pub cap_bits_per_sec: u64,
    /// Each agent that reported: node id, and its last report (unix seconds, the relay's clock).
    pub agents: Vec<(String, i64)>,
}

/// The exposition of `s` and `extra`.
pub fn render(s: &Stats, extra: &Extra) -> String {
    let mut m = Exposition::new();
    m.family(
        "nightcast_relay_info",
        Kind::Gauge,
        "Always 1; the labels say which site this relay serves and its software version.",
        vec![(
            vec![("site", s.site.as_str()), ("version", &s.software)],
            1u64.into(),
        )],
    );
    m.single(
        "nightcast_relay_connected",
        Kind::Gauge,
        "1 while the relay holds a connection to the controller.",
        s.connected,
    );
    m.family(
        "nightcast_relay_wan_bytes_total",
        Kind::Counter,
        "Bytes that crossed the WAN to and from the controller (UDP, both directions, every overhead), by whether the WAN was open (a night window or an override) or closed.",
        vec![
            (vec![("wan", "open")], s.wan_bytes_open.into()),
            (vec![("wan", "closed")], s.wan_bytes_closed.into()),
        ],
    );
    m.single(
        "nightcast_relay_wan_window_bytes",
        Kind::Gauge,
        "WAN bytes of the night window open now, or of the last one.",
        s.wan_bytes_this_window,
    );
    m.single(
        "nightcast_relay_wan_rate_bits_per_second",
        Kind::Gauge,
        "The WAN's rate over the last seconds (smoothed), in bits per second.",
        s.wan_bits_per_sec,
    );
    m.single(
        "nightcast_relay_wan_cap_bits_per_second",
        Kind::Gauge,
        "The site's WAN cap in force, set on the controller, in bits per second: the emergency cap while an override fetches outside the night windows, else the night cap.",
        extra.cap_bits_per_sec,
    );
    m.single(
        "nightcast_relay_wan_pace_bits_per_second",
        Kind::Gauge,
        "The rate the fetcher paces itself to under the cap (a share of it), in bits per second.",
        s.rate_bits_per_sec,
    );
    m.single(
        "nightcast_relay_fetched_bytes_total",
        Kind::Counter,
        "Chunk bytes (stored form) fetched from the controller and stored in the cache, at night and on demand.",
        s.fetched_bytes,
    );
    m.family(
        "nightcast_relay_manifest_bytes_total",
        Kind::Counter,
        "Manifest bytes received from the controller or the site's other relays, by whether a manifest came whole or as a delta to a version of its master the relay held.",
        vec![
            (vec![("as", "full")], s.manifest_bytes_full.into()),
            (vec![("as", "delta")], s.manifest_bytes_delta.into()),
        ],
    );
    m.single(
        "nightcast_relay_fetched_chunks_total",
        Kind::Counter,
        "Chunks fetched from the controller and stored in the cache.",
        s.fetched_chunks,
    );
    m.single(
        "nightcast_relay_on_demand_chunks_total",
        Kind::Counter,
        "Chunks a NUC asked for that the cache lacked, fetched at once while the WAN was open.",
        s.on_demand_chunks,
    );
    m.single(
        "nightcast_relay_served_bytes_total",
        Kind::Counter,
        "Chunk bytes (stored form) served to the site's NUCs over the LAN.",
        s.served_bytes,
    );
    m.single(
        "nightcast_relay_served_chunks_total",
        Kind::Counter,
        "Chunks served to the site's NUCs over the LAN.",
        s.served_chunks,
    );
    m.single(
        "nightcast_relay_cache_bytes",
        Kind::Gauge,
        "Bytes the chunk cache uses on disk.",
        s.disk_bytes,
    );
    m.single(
        "nightcast_relay_cache_quota_bytes",
        Kind::Gauge,
        "The cache's quota (`quota` in the relay's configuration).",
        s.quota_bytes,
    );
    m.single(
        "nightcast_relay_cache_pinned_bytes",
        Kind::Gauge,
        "Bytes of the chunks that must be kept (masters the plan schedules).",
        s.pinned_bytes,
    );
    m.single(
        "nightcast_relay_cache_pinned_over_quota_bytes",
        Kind::Gauge,
        "How far the chunks that must be kept exceed the quota (0: they fit).",
        s.pinned_over_quota,
    );
    m.single(
        "nightcast_relay_disk_full",
        Kind::Gauge,
        "1 when the last write to the cache failed for lack of space.",
        s.disk_full,
    );
    m.single(
        "nightcast_relay_evicted_chunks_total",
        Kind::Counter,
        "Chunks evicted from the cache (least recently used, unpinned) to stay under the quota.",
        s.evicted_chunks,
    );
    m.single(
        "nightcast_relay_corrupt_dropped_total",
        Kind::Counter,
        "Corrupt chunks found in the cache (by the scrub or when serving) and dropped, to be fetched again.",
        s.corrupt_dropped,
    );
    m.single(
        "nightcast_relay_scrub_checked_chunks_total",
        Kind::Counter,
        "Chunks the background scrub re-read and checked.",
        s.scrub_checked_chunks,
    );
    m.single(
        "nightcast_relay_scrub_corrupt_chunks_total",
        Kind::Counter,
        "Chunks the scrub found corrupt (dropped, fetched again).",
        s.scrub_corrupt_chunks,
    );
    m.single(
        "nightcast_relay_scrub_passes_total",
        Kind::Counter,
        "Full scrub passes over the cache finished.",
        s.scrub_passes,
    );
    let complete = s.masters.iter().filter(|m| m.complete).count();
    m.family(
        "nightcast_relay_masters",
        Kind::Gauge,
        "Master versions the plan schedules for the site, by whether the cache holds them complete.",
        vec![
            (vec![("state", "complete")], complete.into()),
            (
                vec![("state", "incomplete")],
                (s.masters.len() - complete).into(),
            ),
        ],
    );
    let names: Vec<(String, String)> = s
        .masters
        .iter()
        .map(|m| (m.master.name.to_string(), m.master.version.to_string()))
        .collect();
    m.family(
        "nightcast_relay_missing_bytes",
        Kind::Gauge,
        "Bytes (stored form) the cache still lacks of each scheduled master version.",
        s.masters
            .iter()
            .zip(&names)
            .map(|(ms, (name, version))| {
                (
                    vec![("master", name.as_str()), ("version", version.as_str())],
                    ms.missing_bytes.into(),
                )
            })
            .collect(),
    );
    m.single(
        "nightcast_relay_agents",
        Kind::Gauge,
        "NUCs of the site that have reported to this relay.",
        extra.agents.len(),
    );
    m.family(
        "nightcast_relay_agent_last_seen_timestamp_seconds",
        Kind::Gauge,
        "When each NUC last reported to this relay (unix time, on the relay's clock).",
        extra
            .agents
            .iter()
            .map(|(node, t)| -> Sample { (vec![("node", node.as_str())], (*t).into()) })
            .collect(),
    );
    m.single(
        "nightcast_relay_agents_not_answering",
        Kind::Gauge,
        "NUCs woken by Wake-on-LAN that did not report within the grace time.",
        s.agents_not_answering.len(),
    );
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::MasterState;
    use image_tools::wire::MasterRef;

    #[test]
    fn every_family_comes_from_the_relays_counters() {
        let mut s = Stats {
            site: "lyon".into(),
            software: "0.1.0".into(),
            connected: true,
            wan_bytes_open: 5_000_000,
            wan_bytes_closed: 12_000,
            fetched_bytes: 4_800_000,
            manifest_bytes_full: 740_000,
            manifest_bytes_delta: 19_000,
            served_bytes: 9_600_000,
            disk_bytes: 4_800_000,
            quota_bytes: 10 << 30,
            scrub_checked_chunks: 64,
            scrub_corrupt_chunks: 1,
            ..Stats::default()
        };
        s.masters = vec![MasterState {
            master: MasterRef::new("demo", "1").unwrap(),
            complete: false,
            missing_bytes: 1234,
        }];
        let extra = Extra {
            cap_bits_per_sec: 20_000_000,
            agents: vec![("nuc-1".into(), 1_900_000_000)],
        };
        let text = render(&s, &extra);
        for line in [
            "nightcast_relay_info{site=\"lyon\",version=\"0.1.0\"} 1",
            "nightcast_relay_wan_bytes_total{wan=\"open\"} 5000000",
            "nightcast_relay_wan_bytes_total{wan=\"closed\"} 12000",
            "nightcast_relay_wan_cap_bits_per_second 20000000",
            "nightcast_relay_fetched_bytes_total 4800000",
            "nightcast_relay_manifest_bytes_total{as=\"full\"} 740000",
            "nightcast_relay_manifest_bytes_total{as=\"delta\"} 19000",
            "nightcast_relay_served_bytes_total 9600000",
            "nightcast_relay_cache_bytes 4800000",
            "nightcast_relay_cache_quota_bytes 10737418240",
            "nightcast_relay_scrub_checked_chunks_total 64",
            "nightcast_relay_scrub_corrupt_chunks_total 1",
            "nightcast_relay_masters{state=\"incomplete\"} 1",
            "nightcast_relay_missing_bytes{master=\"demo\",version=\"1\"} 1234",
            "nightcast_relay_agents 1",
            "nightcast_relay_agent_last_seen_timestamp_seconds{node=\"nuc-1\"} 1900000000",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line} not in:\n{text}"
            );
        }
    }
}
