//! `/metrics` on a real controller and a real relay, read with the Prometheus project's own
//! text-format parser (Debian's `python3-prometheus-client`): the counters move as bytes move.
//! What crossed is measured by the test on its side (the relay's and the agent's stores), not
//! taken from the counters.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use crate::fleet::*;
use crate::util::workspace_bin;
use image_tools::{ChunkStore, LocalStore};

/// One scrape: each sample's name and labels, and its value.
#[derive(Debug)]
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    /// The value of the sample `name` whose labels include `labels`; 0 when there is none (a
    /// counter nobody has touched yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map_or(0.0, |s| s.2)
    }

    fn u(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.get(name, labels) as u64
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }
}

/// `GET /metrics` at `addr`: the answer must be a 200 in the Prometheus text format, and the
/// reference parser must read every line of it.
fn scrape(addr: &str) -> Scrape {
    let addr = addr.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    Scrape(parse_with_prometheus_client(body))
}

/// Each sample as `prometheus_client.parser` reads `text`; every family must be a counter or a
/// gauge (a sample outside its family's lines would be read as an untyped family of its own).
fn parse_with_prometheus_client(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let script = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.append([f.type, s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 is needed (apt-get install python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference parser refused the exposition (or is missing: apt-get install \
         python3-prometheus-client): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    type Row = (String, String, BTreeMap<String, String>, f64);
    let rows: Vec<Row> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|(kind, name, labels, value)| {
            assert!(
                kind == "counter" || kind == "gauge",
                "{name}: {kind}\n{text}"
            );
            (name, labels, value)
        })
        .collect()
}

/// `nightcast-relay run` as `Fleet::relay` starts it, with `metrics_addr` on loopback: the relay
/// and the address it serves metrics on.
fn relay_with_metrics(f: &Fleet) -> (Relay, String) {
    let data = f.relay_data();
    let config = f.dir.path().join("relay-metrics.toml");
    std::fs::write(
        &config,
        format!(
            "controller = \"{}\"\ndata = \"{}\"\nlisten = \"127.0.0.1:0\"\ndiscovery = \"127.0.0.1:0\"\n\
             quota = \"10 GiB\"\npoll_secs = 1\nreconnect_max_secs = 1\nmetrics_addr = \"127.0.0.1:0\"\n\
             [scrub]\nmib_per_sec = 64\nevery_hours = 0.0003\n[wake_on_lan]\ntarget = \"{}\"\n",
            f.wan.addr,
            data.display(),
            f.wol.local_addr().unwrap()
        ),
    )
    .unwrap();
    let log = f.dir.path().join("relay-metrics.log");
    let mut child = Command::new(workspace_bin("nightcast-relay"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("NIGHTCAST_CLOCK", &f.clock_spec)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = |prefix: &str| -> String {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l.trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| {
                panic!(
                    "{l:?}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned()
    };
    let lan: SocketAddr = line("serving the LAN on ").parse().unwrap();
    let discovery: SocketAddr = line("answering discovery on ").parse().unwrap();
    let metrics = line("serving metrics on ");
    let metrics = metrics
        .strip_suffix("/metrics")
        .unwrap_or_else(|| panic!("{metrics:?}"))
        .to_owned();
    let relay = Relay {
        child,
        lan,
        discovery,
        data,
        log,
    };
    (relay, metrics)
}

#[test]
fn metrics_move_as_bytes_move_at_the_controller_and_the_relay() {
    // 60x: a virtual minute is a real second; the window opens 20 real seconds after the start.
    let f = Fleet::new("22:00-23:59", 100, 6, "start=2030-01-07T21:40:00Z speed=60");
    let (relay, relay_metrics) = relay_with_metrics(&f);
    let controller = f.api.clone();
    let stored = f.stored_bytes();
    relay.wait("the relay to reach the controller", 20, |r| {
        r.status()["connected"] == true
    });

    // Before the window: nothing fetched, nothing served.
    let c0 = scrape(&controller);
    let r0 = scrape(&relay_metrics);
    assert!(
        f.clock.now() < at("2030-01-07T21:59:00Z"),
        "the setup took longer than the time before the window (a very loaded machine?)"
    );
    let served = |s: &Scrape| {
        s.u(
            "nightcast_served_bytes_total",
            &[("site", "lyon"), ("role", "relay")],
        )
    };
    assert_eq!(served(&c0), 0);
    assert_eq!(r0.u("nightcast_relay_fetched_bytes_total", &[]), 0);
    assert_eq!(
        r0.u("nightcast_relay_wan_bytes_total", &[("wan", "open")]),
        0
    );
    assert_eq!(r0.u("nightcast_relay_connected", &[]), 1);
    assert_eq!(r0.u("nightcast_relay_cache_quota_bytes", &[]), 10 << 30);
    assert_eq!(
        r0.u("nightcast_relay_wan_cap_bits_per_second", &[]),
        100_000_000
    );
    assert_eq!(c0.u("nightcast_masters", &[]), 1);
    assert_eq!(
        c0.u("nightcast_catalogue_stored_bytes", &[]),
        stored,
        "the catalogue's stored bytes are the master's"
    );
    assert_eq!(
        c0.u("nightcast_catalogue_chunks", &[]),
        f.manifest.unique_chunks().len() as u64
    );
    // demo 1 scheduled at lyon, the relay holding nothing yet: one session, on time.
    let sessions = |s: &Scrape, verdict: &str| {
        s.u(
            "nightcast_plan_sessions",
            &[("site", "lyon"), ("verdict", verdict)],
        )
    };
    assert_eq!(
        sessions(&c0, "on_time") + sessions(&c0, "at_risk"),
        1,
        "{c0:?}"
    );
    assert_eq!(sessions(&c0, "late"), 0);

    // An import through the admin API: its progress and its new bytes are counted.
    let image = image_tools::testimage::disk_bytes(4 << 20, 12);
    let path = f.dir.path().join("demo-2.img");
    image_tools::testimage::write_sparse(&path, &image).unwrap();
    let imported: serde_json::Value = serde_json::from_str(&f.nightcast(&[
        "--json",
        "master",
        "import",
        path.to_str().unwrap(),
        "--name",
        "demo",
        "--version",
        "2",
    ]))
    .unwrap();
    let c1 = scrape(&controller);
    assert_eq!(c1.u("nightcast_imports_running", &[]), 0);
    assert_eq!(c1.u("nightcast_imports_total", &[("outcome", "ok")]), 1);
    assert_eq!(c1.u("nightcast_import_read_bytes_total", &[]), 4 << 20);
    let new_bytes = imported["new_stored_bytes"].as_u64().unwrap();
    assert!(new_bytes > 0, "{imported}");
    assert_eq!(
        c1.u("nightcast_import_new_stored_bytes_total", &[]),
        new_bytes
    );
    assert_eq!(c1.u("nightcast_masters", &[]), 2);
    assert_eq!(
        c1.u("nightcast_catalogue_stored_bytes", &[]),
        stored + new_bytes,
        "the catalogue grew by what the import added to the store"
    );

    // The window opens: the relay fetches demo 1 through the WAN.
    relay.wait("the master to complete", 60, Relay::complete);
    let cache = LocalStore::open(&relay.data.join("store"))
        .unwrap()
        .size()
        .unwrap();
    // The relay's cache is the measure of what crossed (the controller's background pass may have
    // compressed the chunks again since the manifest listed their sizes).
    assert_eq!(
        cache.chunks,
        f.manifest.unique_chunks().len() as u64,
        "{cache:?}"
    );
    // The relay counts its WAN bytes once a second: wait for its count to take in the transfer.
    let mut r1 = scrape(&relay_metrics);
    for _ in 0..100 {
        if r1.u("nightcast_relay_wan_bytes_total", &[("wan", "open")]) >= cache.bytes {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        r1 = scrape(&relay_metrics);
    }
    let c2 = scrape(&controller);
    // The chunk server counted exactly what the relay stored: every chunk once, in stored form.
    assert_eq!(served(&c2), cache.bytes, "{c2:?}");
    assert_eq!(
        c2.u(
            "nightcast_served_chunks_total",
            &[("site", "lyon"), ("role", "relay")]
        ),
        cache.chunks
    );
    assert_eq!(
        r1.u("nightcast_relay_fetched_chunks_total", &[]),
        cache.chunks
    );
    let fetched = r1.u("nightcast_relay_fetched_bytes_total", &[]);
    assert_eq!(fetched, cache.bytes, "the relay's count of bytes fetched");
    let wan = r1.u("nightcast_relay_wan_bytes_total", &[("wan", "open")]);
    assert!(
        wan >= cache.bytes && (wan as f64) < cache.bytes as f64 * 1.15 + 200_000.0,
        "{wan} B crossed the open WAN for {} B of chunks",
        cache.bytes
    );
    let forwarder = f.wan.bytes();
    let relay_wan = wan + r1.u("nightcast_relay_wan_bytes_total", &[("wan", "closed")]);
    assert!(
        relay_wan <= forwarder + 10_000,
        "the relay counted {relay_wan} B on the WAN, the forwarder {forwarder} B"
    );
    eprintln!(
        "master {stored} B; relay cache {cache:?}; served {} B; fetched {fetched} B; WAN open {wan} B; forwarder {forwarder} B",
        served(&c2)
    );
    assert_eq!(r1.u("nightcast_relay_masters", &[("state", "complete")]), 1);
    assert_eq!(
        r1.u(
            "nightcast_relay_missing_bytes",
            &[("master", "demo"), ("version", "1")]
        ),
        0
    );
    let cache_gauge = r1.u("nightcast_relay_cache_bytes", &[]);
    assert!(
        cache_gauge >= cache.bytes - 5 * cache.chunks && cache_gauge <= cache.bytes,
        "the relay says its cache holds {cache_gauge} B, it holds {cache:?}"
    );
    // The controller has heard from the relay.
    assert_eq!(c2.u("nightcast_nodes", &[("role", "relay")]), 1);
    let seen = c2.get(
        "nightcast_node_last_seen_timestamp_seconds",
        &[("site", "lyon"), ("node", "relay-1"), ("role", "relay")],
    );
    assert!(
        seen as i64 >= at("2030-01-07T21:40:00Z") && seen as i64 <= f.clock.now(),
        "{seen}"
    );

    // A NUC reads the master from the relay over the LAN, and reports.
    let nuc = f.agent("nuc-1");
    let (report, dir) = nuc.fetch(relay.lan, &f.key);
    let got = LocalStore::open(&dir.path().join("store"))
        .unwrap()
        .size()
        .unwrap();
    assert_eq!(report.fetched, got.chunks);
    nuc.report(relay.lan, AgentReport::default());
    let r2 = scrape(&relay_metrics);
    let lan = r2.u("nightcast_relay_served_bytes_total", &[])
        - r1.u("nightcast_relay_served_bytes_total", &[]);
    let lan_chunks = r2.u("nightcast_relay_served_chunks_total", &[])
        - r1.u("nightcast_relay_served_chunks_total", &[]);
    assert_eq!(lan_chunks, got.chunks);
    // Counted as the chunks' payloads; the NUC's store adds a 5-byte header to each.
    assert!(
        lan <= got.bytes && lan + 5 * got.chunks >= got.bytes,
        "the relay counted {lan} B served on the LAN; the NUC stored {got:?}"
    );
    assert_eq!(r2.u("nightcast_relay_agents", &[]), 1);
    assert!(r2.has("nightcast_relay_agent_last_seen_timestamp_seconds"));
    assert!(
        r2.get(
            "nightcast_relay_agent_last_seen_timestamp_seconds",
            &[("node", "nuc-1")]
        ) > 0.0
    );
    // The WAN did not carry the NUC's bytes.
    assert_eq!(
        r2.u("nightcast_relay_fetched_bytes_total", &[]),
        fetched,
        "the NUC's read crossed the WAN"
    );

    // The scrub keeps re-reading the cache; a chunk that rots on the relay's disk is found,
    // counted and dropped (then fetched again: the window is still open).
    // (Its first pass may not have run yet on a loaded machine: wait for it.)
    let mut scrubbed = r2.u("nightcast_relay_scrub_checked_chunks_total", &[]);
    for _ in 0..600 {
        if scrubbed > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        scrubbed = scrape(&relay_metrics).u("nightcast_relay_scrub_checked_chunks_total", &[]);
    }
    assert!(scrubbed > 0, "the scrub never checked a chunk");
    assert_eq!(r2.u("nightcast_relay_scrub_corrupt_chunks_total", &[]), 0);
    let victim = relay.chunks()[0];
    corrupt(&relay.data.join("store"), &victim);
    let mut r3 = scrape(&relay_metrics);
    for _ in 0..200 {
        if r3.u("nightcast_relay_scrub_corrupt_chunks_total", &[]) > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        r3 = scrape(&relay_metrics);
    }
    assert_eq!(
        r3.u("nightcast_relay_scrub_corrupt_chunks_total", &[]),
        1,
        "the scrub did not count the rotten chunk: {r3:?}"
    );
    assert!(r3.u("nightcast_relay_corrupt_dropped_total", &[]) >= 1);
    assert!(
        r3.u("nightcast_relay_scrub_passes_total", &[]) >= 1,
        "{r3:?}"
    );
}

#[test]
fn the_scrape_needs_no_token_and_opens_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("controller");
    crate::fleet::ok(
        "nightcast-controller",
        &["init", "--data", c.to_str().unwrap()],
    );
    let controller = crate::util::Controller::start(&c);
    let s = scrape(&controller.api);
    assert_eq!(s.u("nightcast_masters", &[]), 0);
    assert_eq!(s.u("nightcast_imports_running", &[]), 0);
    // Every other route still wants the token, and a body or another method is not the scrape.
    let ask = |request: &str| {
        let mut t = TcpStream::connect(controller.api.trim_start_matches("http://")).unwrap();
        t.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        t.read_to_string(&mut answer).unwrap();
        answer
    };
    for request in [
        "GET /v1/fleet HTTP/1.1\r\n\r\n",
        "GET /metrics/../v1/fleet HTTP/1.1\r\n\r\n",
        "GET /metrics?x=1 HTTP/1.1\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    ] {
        let answer = ask(request);
        assert!(answer.starts_with("HTTP/1.1 401 "), "{request:?}: {answer}");
    }
}
