//! Two relays at one site (issue 16): they cross the WAN once between them, and when one dies
//! (kill -9) the NUCs go on with the other, which takes over the WAN.
//!
//! In network namespaces on one bridge: the controller (its port is the WAN: it talks to relays
//! only, so what its port sends, read from `tc -s`, is what crossed the WAN), relay-a, relay-b and
//! three NUCs that find a relay by broadcast. Both relays are told the VLAN's broadcast address
//! (`sibling_discovery`). Needs root (CI runs as root).

use std::path::{Path, PathBuf};

use crate::netns::*;
use crate::util::workspace_bin;

const SPEC: &str = "start=2030-01-07T12:00:00Z speed=1";

/// The stored bytes of the chunks of `manifest` that `before` (a manifest) does not have.
fn new_stored_bytes(manifest: &Path, before: Option<&Path>) -> u64 {
    let read = |p: &Path| {
        image_tools::Manifest::decode_unverified(&std::fs::read(p).unwrap())
            .unwrap()
            .manifest
    };
    let m = read(manifest);
    let old: std::collections::HashSet<_> = before
        .map(|b| read(b).unique_chunks().iter().map(|c| c.id).collect())
        .unwrap_or_default();
    m.unique_chunks()
        .iter()
        .filter(|c| !old.contains(&c.id))
        .map(|c| u64::from(c.stored_len))
        .sum()
}

fn holds(relay: &Path, version: &str) -> bool {
    status(relay)["masters"].as_array().is_some_and(|m| {
        m.iter()
            .any(|m| m["complete"] == true && m["version"] == version)
    })
}

#[test]
fn two_relays_at_a_site_cross_the_wan_once_and_the_nucs_go_on_when_one_dies() {
    require_root_and(&[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut net = Net {
        prefix: format!("nc2r{}-", std::process::id() % 100_000),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };
    let sw = Switch::new(&mut net);
    let plug = |ns: &str, port: usize, ip: &str| sw.plug(ns, port, ip, "eth0");
    let ctl = net.add_ns("ctl");
    plug(&ctl, 0, "10.93.0.1");
    // A qdisc that only counts: what the controller's port sends is the WAN's traffic.
    must(&[
        "tc", "-n", &ctl, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1gbit", "burst",
        "1250kb", "latency", "50ms",
    ]);
    let relay_ns: Vec<String> = ["ra", "rb"]
        .iter()
        .enumerate()
        .map(|(k, n)| {
            let ns = net.add_ns(n);
            plug(&ns, k + 1, &format!("10.93.0.{}", k + 2));
            ns
        })
        .collect();
    let nuc_ns: Vec<String> = (1..=3)
        .map(|k| {
            let ns = net.add_ns(&format!("n{k}"));
            plug(&ns, 10 + k, &format!("10.93.0.{}", 10 + k));
            ns
        })
        .collect();

    // The controller with version 1 of the master, scheduled for tomorrow in salle-1; the
    // night window is open all day.
    let c = d.join("controller");
    let cs = c.to_str().unwrap();
    let controller_bin = workspace_bin("nightcast-controller");
    must(&[controller_bin.to_str().unwrap(), "init", "--data", cs]);
    let v1 = image_tools::testimage::image_bytes(24 << 20, 31);
    let v2 = image_tools::testimage::evolve(&v1, 0.2, 32);
    let mut manifests = Vec::new();
    for (version, image) in [("1", &v1), ("2", &v2)] {
        let img = d.join(format!("demo{version}.img"));
        image_tools::testimage::write_sparse(&img, image).unwrap();
        let m = d.join(format!("demo{version}.manifest"));
        crate::util::build_master(&c, &img, "demo", version, &m);
        must(&[
            controller_bin.to_str().unwrap(),
            "master-add",
            "--data",
            cs,
            m.to_str().unwrap(),
        ]);
        manifests.push(m);
    }
    let env = [("NIGHTCAST_CLOCK", SPEC), ("RUST_LOG", "info")];
    serve_controller(&mut net, &ctl, &c, "0.0.0.0:4433", &env);
    let admin = |args: &[&str]| admin_in(&ctl, &c, args);
    admin(&[
        "site",
        "add",
        "site1",
        "--tz",
        "UTC",
        "--windows",
        "00:00-23:59",
        "--cap-mbit",
        "400",
    ]);
    admin(&["room", "add", "site1", "salle-1"]);
    admin(&["site", "accept-new", "site1", "--for", "1d"]);
    for k in 1..=3 {
        admin(&["seat", "add", "site1", "salle-1", &format!("pc-{k}")]);
    }
    let calendar = |name: &str, version: &str, day: &str| {
        let path = d.join(name);
        std::fs::write(
            &path,
            format!("site,room,master,version,start,end\nsite1,salle-1,demo,{version},{day} 08:00,{day} 11:00\n"),
        )
        .unwrap();
        admin(&["calendar", "import", path.to_str().unwrap()]);
    };
    calendar("v1.csv", "1", "2030-01-08");

    // Two relays; relay-b starts first, so that it would fetch everything itself if it did not
    // find relay-a.
    let sent_before = tc_sent_bytes(&ctl, "eth0");
    let mut relays: Vec<(PathBuf, usize)> = Vec::new();
    for (ns, name) in [(&relay_ns[1], "relay-b"), (&relay_ns[0], "relay-a")] {
        let data = d.join(name);
        let token = admin(&["enroll", "--role", "relay", "--site", "site1"]);
        must(&[
            "ip",
            "netns",
            "exec",
            ns,
            "env",
            &format!("NIGHTCAST_CLOCK={SPEC}"),
            workspace_bin("nightcast-relay").to_str().unwrap(),
            "enroll",
            "--controller",
            "10.93.0.1:4433",
            "--token",
            token.trim(),
            "--node-id",
            name,
            "--data",
            data.to_str().unwrap(),
        ]);
        let cfg = d.join(format!("{name}.toml"));
        std::fs::write(&cfg, format!("controller = \"10.93.0.1:4433\"\ndata = \"{}\"\nlisten = \"0.0.0.0:4434\"\ndiscovery = \"0.0.0.0:4435\"\nsibling_discovery = \"10.93.0.255:4435\"\npoll_secs = 1\n", data.display())).unwrap();
        let p = net.spawn(
            ns,
            &workspace_bin("nightcast-relay"),
            &["run", "--config", cfg.to_str().unwrap()],
            &env,
            &d.join(format!("{name}.log")),
        );
        net.first_lines(p, 2);
        relays.push((data, p));
    }
    let (rb, ra) = (relays[0].0.clone(), relays[1].0.clone());
    wait(
        "both relays to hold version 1",
        120,
        || holds(&ra, "1") && holds(&rb, "1"),
        d,
    );

    // The WAN carried one copy, not two: relay-b, alone at first, fetched it over the WAN, and
    // relay-a, which came later, took it from relay-b over the LAN.
    let stored_v1 = new_stored_bytes(&manifests[0], None);
    let wan_v1 = tc_sent_bytes(&ctl, "eth0") - sent_before;
    let copies = wan_v1 as f64 / stored_v1 as f64;
    assert!(
        (0.95..1.5).contains(&copies),
        "the WAN carried {copies:.2} copies of version 1 ({wan_v1} B for {stored_v1} B stored)"
    );
    let a = status(&ra);
    assert!(
        a["sibling_bytes"].as_u64().unwrap_or(0) as f64 > 0.9 * stored_v1 as f64,
        "relay-a took version 1 from relay-b: {a}"
    );
    // From now on relay-a, first by name, crosses the WAN for both.
    wait(
        "relay-b to see relay-a cross the WAN for it",
        30,
        || status(&rb)["upstream"] == "relay-a" && status(&ra)["siblings"][0] == "relay-b",
        d,
    );
    assert_eq!(status(&ra)["upstream"], serde_json::Value::Null);

    // Three NUCs find a relay by broadcast and get version 1. relay-b is paused meanwhile (as if
    // busy), so that they all pick relay-a: the one that dies below.
    let rb_pid = net.procs[relays[0].1].id().to_string();
    must(&["kill", "-STOP", &rb_pid]);
    let mut nucs = Vec::new();
    for (k, ns) in nuc_ns.iter().enumerate() {
        let node = format!("nuc{}", k + 1);
        let data = d.join(&node);
        let cfg = d.join(format!("{node}.toml"));
        std::fs::write(&cfg, format!("data = \"{}\"\ndiscovery = \"10.93.0.255:4435\"\nnode_id = \"{node}\"\nhypervisor = \"fake\"\npoll_secs = 1\nend_of_day = \"23:59\"\n", data.display())).unwrap();
        net.spawn(
            ns,
            &workspace_bin("nightcast-agent"),
            &["run", "--config", cfg.to_str().unwrap()],
            &env,
            &d.join(format!("{node}.log")),
        );
        wait(
            &format!("{node} to enrol by broadcast"),
            60,
            || status(&data)["site"] == "site1",
            d,
        );
        admin(&[
            "seat",
            "assign",
            "site1",
            "salle-1",
            &format!("pc-{}", k + 1),
            &node,
        ]);
        nucs.push((node, data));
    }
    let ready = |data: &Path, v: &str| {
        let st = status(data);
        let want = format!("demo {v}");
        st["current"] == want.as_str()
            || (st["next"] == want.as_str() && st["next_state"] == "ready")
    };
    must(&["kill", "-CONT", &rb_pid]);
    for (node, data) in &nucs {
        wait(
            &format!("{node} to be ready with version 1"),
            120,
            || ready(data, "1"),
            d,
        );
        assert_eq!(
            status(data)["relay"],
            "10.93.0.2:4434",
            "{node} is not on relay-a"
        );
    }
    wait(
        "relay-b to be back beside relay-a",
        30,
        || status(&rb)["upstream"] == "relay-a",
        d,
    );

    // relay-a dies (kill -9: a power cut) and the DSI schedules version 2. relay-b crosses the
    // WAN itself now, every NUC goes on with it, and gets version 2.
    net.kill(relays[1].1);
    let sent_before = tc_sent_bytes(&ctl, "eth0");
    calendar("v2.csv", "2", "2030-01-09");
    wait(
        "relay-b to fetch version 2 itself",
        120,
        || holds(&rb, "2"),
        d,
    );
    for (node, data) in &nucs {
        wait(
            &format!("{node} to be ready with version 2 through relay-b"),
            180,
            || ready(data, "2") && status(data)["relay"] == "10.93.0.3:4434",
            d,
        );
    }
    let b = status(&rb);
    assert_eq!(b["upstream"], serde_json::Value::Null, "{b}");
    let stored_v2 = new_stored_bytes(&manifests[1], Some(&manifests[0]));
    let wan_v2 = tc_sent_bytes(&ctl, "eth0") - sent_before;
    assert!(
        (wan_v2 as f64) < 1.5 * stored_v2 as f64 + 2e6,
        "version 2's new chunks are {stored_v2} B stored, the WAN carried {wan_v2} B"
    );

    // The DSI sees every NUC holding version 2: their reports came through the relay that is
    // left (the clock runs at real speed from 2030-01-07 12:00, so "now" is the controller's).
    let killed_at = status(&rb)["now"].as_i64().unwrap_or(0) - 1;
    let fleet = || -> serde_json::Value {
        serde_json::from_str(&admin(&["--json", "fleet"])).unwrap_or_default()
    };
    let seen_with_v2 = |rows: &serde_json::Value, node: &str| {
        rows.as_array()
            .and_then(|r| r.iter().find(|r| r["node"] == node))
            .is_some_and(|row| {
                row["holding"].as_str().unwrap_or("").contains("demo 2")
                    && row["last_seen"].as_i64().unwrap_or(0) >= killed_at
            })
    };
    wait(
        "the fleet to show every NUC with version 2",
        30,
        || {
            let rows = fleet();
            nucs.iter().all(|(node, _)| seen_with_v2(&rows, node))
        },
        d,
    );
}
