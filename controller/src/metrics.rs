//! The controller's `/metrics` (Prometheus text format, written by `image_tools::metrics`).
//!
//! Counters are the controller's own, counted where things happen: chunks and bytes sent to each
//! site's relays by the chunk server (`exchange::Served`), imports through the admin API
//! ([`ImportStarted`], [`Import::read`], [`Import::ended`], which log and count). Gauges are read
//! at each scrape from what the controller already keeps: the plan's verdicts (the planner, as
//! `GET /v1/plan` computes it), the nodes' last reports (the catalogue) and the distinct chunks
//! of the catalogue's masters (the planner's cached chunk classes). Nothing walks the store.
//!
//! [`render`] is pure (the facts in, the text out); the admin API gathers the facts.

use std::sync::atomic::{AtomicU64, Ordering};

use image_tools::exchange::Served;
use image_tools::metrics::{Exposition, Kind, Sample};

/// The controller's counters, shared by the chunk server and the admin API.
#[derive(Debug, Default)]
pub struct Metrics {
    /// What the chunk server sent, by site and role.
    pub served: Served,
    imports_running: AtomicU64,
    import_read_bytes: AtomicU64,
    imports_ok: AtomicU64,
    imports_failed: AtomicU64,
    import_new_stored_bytes: AtomicU64,
}

/// The named event: an import through the admin API started. `emit` logs it, counts it as
/// running and returns the [`Import`] that counts its progress and its end.
#[derive(Debug)]
pub struct ImportStarted<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub image: &'a std::path::Path,
}

impl ImportStarted<'_> {
    pub fn emit(self, metrics: &Metrics) -> Import<'_> {
        tracing::info!(name = self.name, version = self.version, image = %self.image.display(), "import started");
        metrics.imports_running.fetch_add(1, Ordering::Relaxed);
        Import {
            metrics,
            read: AtomicU64::new(0),
            ended: false,
        }
    }
}

/// An import under way. Dropped without [`Import::ended`], it counts as failed.
#[derive(Debug)]
pub struct Import<'a> {
    metrics: &'a Metrics,
    read: AtomicU64,
    ended: bool,
}

impl Import<'_> {
    /// The import has read `total` bytes of its image so far (the importer's progress callback).
    pub fn read(&self, total: u64) {
        let before = self.read.fetch_max(total, Ordering::Relaxed);
        if total > before {
            self.metrics
                .import_read_bytes
                .fetch_add(total - before, Ordering::Relaxed);
        }
    }

    /// The import ended well, adding `new_stored_bytes` to the store.
    pub fn ended(mut self, new_stored_bytes: u64) {
        self.ended = true;
        tracing::info!(
            read = self.read.load(Ordering::Relaxed),
            new_stored_bytes,
            "import done"
        );
        self.metrics.imports_ok.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .import_new_stored_bytes
            .fetch_add(new_stored_bytes, Ordering::Relaxed);
    }
}

impl Drop for Import<'_> {
    fn drop(&mut self) {
        self.metrics.imports_running.fetch_sub(1, Ordering::Relaxed);
        if !self.ended {
            tracing::warn!(read = self.read.load(Ordering::Relaxed), "import failed");
            self.metrics.imports_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The verdicts of one site's upcoming sessions, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub site: String,
    pub on_time: u64,
    pub at_risk: u64,
    pub late: u64,
    pub unknown_master: u64,
}

/// A node as the catalogue knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    pub site: String,
    pub node: String,
    pub role: String,
    /// Its last report (unix seconds), if any.
    pub last_seen: Option<i64>,
}

/// What a scrape reads besides the counters.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub verdicts: Vec<Verdicts>,
    pub nodes: Vec<NodeSeen>,
    pub masters: u64,
    /// Distinct chunks of the catalogue's master versions, and their stored bytes.
    pub chunks: u64,
    pub stored_bytes: u64,
}

/// The exposition: `metrics`' counters and the `facts` of the moment.
pub fn render(metrics: &Metrics, facts: &Facts) -> String {
    let mut m = Exposition::new();
    let mut verdicts: Vec<Sample> = Vec::new();
    for v in &facts.verdicts {
        for (verdict, n) in [
            ("on_time", v.on_time),
            ("at_risk", v.at_risk),
            ("late", v.late),
            ("unknown_master", v.unknown_master),
        ] {
            verdicts.push((vec![("site", &v.site), ("verdict", verdict)], n.into()));
        }
    }
    m.family(
        "nightcast_plan_sessions",
        Kind::Gauge,
        "Upcoming sessions by site and by the planner's verdict (on_time, at_risk, late, unknown_master), as `nightcast plan` shows them.",
        verdicts,
    );
    let mut roles: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for n in &facts.nodes {
        *roles.entry(&n.role).or_default() += 1;
    }
    m.family(
        "nightcast_nodes",
        Kind::Gauge,
        "Enrolled nodes known to the catalogue, by role (relay, agent).",
        roles
            .iter()
            .map(|(role, n)| (vec![("role", *role)], (*n).into()))
            .collect(),
    );
    m.family(
        "nightcast_node_last_seen_timestamp_seconds",
        Kind::Gauge,
        "When each node last reported (unix time, on the controller's clock); absent for a node never heard from.",
        facts
            .nodes
            .iter()
            .filter_map(|n| {
                n.last_seen.map(|t| {
                    (
                        vec![("site", n.site.as_str()), ("node", &n.node), ("role", &n.role)],
                        t.into(),
                    )
                })
            })
            .collect(),
    );
    let served = metrics.served.snapshot();
    let roles: Vec<String> = served.iter().map(|(r, _, _)| r.to_string()).collect();
    let by_site = |f: fn(&image_tools::exchange::Sent) -> u64| -> Vec<Sample> {
        served
            .iter()
            .zip(&roles)
            .map(|((_, site, sent), role)| {
                (
                    vec![("site", site.as_str()), ("role", role)],
                    f(sent).into(),
                )
            })
            .collect()
    };
    m.family(
        "nightcast_served_bytes_total",
        Kind::Counter,
        "Chunk bytes (stored form) the chunk server sent over QUIC, by site and peer role, since the controller started.",
        by_site(|s| s.bytes),
    );
    m.family(
        "nightcast_served_chunks_total",
        Kind::Counter,
        "Chunks the chunk server sent over QUIC, by site and peer role, since the controller started.",
        by_site(|s| s.chunks),
    );
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    m.single(
        "nightcast_imports_running",
        Kind::Gauge,
        "Master imports under way through the admin API.",
        load(&metrics.imports_running),
    );
    m.single(
        "nightcast_import_read_bytes_total",
        Kind::Counter,
        "Image bytes read by imports through the admin API (their progress), since the controller started.",
        load(&metrics.import_read_bytes),
    );
    m.family(
        "nightcast_imports_total",
        Kind::Counter,
        "Imports through the admin API that ended, by outcome (ok, failed), since the controller started.",
        vec![
            (vec![("outcome", "ok")], load(&metrics.imports_ok).into()),
            (
                vec![("outcome", "failed")],
                load(&metrics.imports_failed).into(),
            ),
        ],
    );
    m.single(
        "nightcast_import_new_stored_bytes_total",
        Kind::Counter,
        "Bytes (stored form) of the new chunks that imports through the admin API added to the store.",
        load(&metrics.import_new_stored_bytes),
    );
    m.single(
        "nightcast_masters",
        Kind::Gauge,
        "Master versions in the catalogue.",
        facts.masters,
    );
    m.single(
        "nightcast_catalogue_chunks",
        Kind::Gauge,
        "Distinct chunks of the catalogue's master versions (each held once in the store).",
        facts.chunks,
    );
    m.single(
        "nightcast_catalogue_stored_bytes",
        Kind::Gauge,
        "Stored (compressed) bytes of those chunks as the manifests list them at import (the store may hold less once they are compressed again).",
        facts.stored_bytes,
    );
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::trust::Identity;
    use image_tools::wire::Role;

    fn identity(site: &str) -> Identity {
        Identity {
            role: Role::Relay,
            site: site.parse().unwrap(),
            node: "relay-1".parse().unwrap(),
        }
    }

    #[test]
    fn counters_move_with_what_is_served_and_imported() {
        let metrics = Metrics::default();
        let facts = Facts {
            verdicts: vec![Verdicts {
                site: "lyon".into(),
                on_time: 2,
                late: 1,
                ..Verdicts::default()
            }],
            nodes: vec![
                NodeSeen {
                    site: "lyon".into(),
                    node: "relay-1".into(),
                    role: "relay".into(),
                    last_seen: Some(1_900_000_000),
                },
                NodeSeen {
                    site: "lyon".into(),
                    node: "nuc-1".into(),
                    role: "agent".into(),
                    last_seen: None,
                },
            ],
            masters: 1,
            chunks: 10,
            stored_bytes: 4096,
        };
        let before = render(&metrics, &facts);
        assert!(before.contains("nightcast_plan_sessions{site=\"lyon\",verdict=\"late\"} 1\n"));
        assert!(before.contains("nightcast_plan_sessions{site=\"lyon\",verdict=\"at_risk\"} 0\n"));
        assert!(before.contains("nightcast_nodes{role=\"agent\"} 1\n"));
        assert!(before.contains(
            "nightcast_node_last_seen_timestamp_seconds{site=\"lyon\",node=\"relay-1\",role=\"relay\"} 1900000000\n"
        ));
        assert!(
            !before.contains("node=\"nuc-1\""),
            "a node never seen has no last-seen time"
        );
        assert!(!before.contains("nightcast_served_bytes_total{"));

        metrics.served.chunk(&identity("lyon"), 1000);
        metrics.served.chunk(&identity("lyon"), 24);
        metrics.served.chunk(&identity("paris"), 7);
        let import = ImportStarted {
            name: "demo",
            version: "1",
            image: std::path::Path::new("/srv/demo.img"),
        }
        .emit(&metrics);
        import.read(100);
        import.read(300);
        let during = render(&metrics, &facts);
        assert!(during.contains("nightcast_imports_running 1\n"));
        assert!(during.contains("nightcast_import_read_bytes_total 300\n"));
        import.ended(250);
        drop(
            ImportStarted {
                name: "demo",
                version: "2",
                image: std::path::Path::new("/srv/missing.img"),
            }
            .emit(&metrics),
        );
        let after = render(&metrics, &facts);
        assert!(after.contains("nightcast_served_bytes_total{site=\"lyon\",role=\"relay\"} 1024\n"));
        assert!(after.contains("nightcast_served_chunks_total{site=\"lyon\",role=\"relay\"} 2\n"));
        assert!(after.contains("nightcast_served_bytes_total{site=\"paris\",role=\"relay\"} 7\n"));
        assert!(after.contains("nightcast_imports_running 0\n"));
        assert!(after.contains("nightcast_imports_total{outcome=\"ok\"} 1\n"));
        assert!(after.contains("nightcast_imports_total{outcome=\"failed\"} 1\n"));
        assert!(after.contains("nightcast_import_new_stored_bytes_total 250\n"));
        assert!(after.contains("nightcast_catalogue_stored_bytes 4096\n"));
    }
}
