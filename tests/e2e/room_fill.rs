//! A room fills itself (issue 16): one relay and a room of NUCs on one switch, in network
//! namespaces, the NUCs sharing what they hold with each other (peer sharing). Every port is shaped by `tbf` to the same rate in both directions (the relay's and
//! each NUC's veth, as the ports of one switch), so the links and not the two shared cores set the
//! pace. The relay holds the master before the room starts (its WAN is not what is measured here);
//! then the DSI schedules the master for the room and every NUC fetches, verifies and assembles it.
//!
//! What the relay's port sent is read from `tc -s` on the relay's side of its veth (IP, UDP, QUIC
//! headers and retransmissions included), the NUCs' CPU from `/proc`. `ROOM_FILL_NUCS` (20),
//! `ROOM_FILL_MBIT` (100) and `ROOM_FILL_MIB` (48) change the room; `bench/room.sh` runs it for 1,
//! 5, 10 and 20 NUCs and prints the table of docs/BENCHMARKS.md (`ROOM_FILL_PEERS=0`: the same
//! room with peer sharing off, every NUC served by the relay alone, for the comparison). Needs
//! root (CI runs as root).

use std::path::{Path, PathBuf};
use std::time::Duration;

use image_tools::clock::Clock;

use crate::netns::*;
use crate::util::workspace_bin;

/// The number in environment variable `name`, else `default`.
pub(crate) fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One NUC of the room.
struct Nuc {
    node: String,
    data: PathBuf,
    proc: usize,
}

/// What a fill measured.
#[derive(Debug)]
struct Filled {
    nucs: usize,
    mbit: u64,
    /// The master's distinct chunks as stored (what one copy costs on the wire, payload only).
    stored: u64,
    /// Bytes the relay's port sent from the calendar import until the last NUC was ready.
    relay_sent: u64,
    /// Seconds from the calendar import until each NUC was ready, in NUC order.
    ready_secs: Vec<f64>,
    /// CPU seconds all NUCs' agents used meanwhile.
    agents_cpu: f64,
}

/// CPU seconds (user + system) process `pid` used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    (ticks(14).unwrap_or(0.0) + ticks(15).unwrap_or(0.0)) / 100.0
}

/// The image a NUC assembled for `demo 1`, if it has one.
fn assembled(data: &Path) -> Option<PathBuf> {
    std::fs::read_dir(data.join("slots/v"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("master.img"))
        .find(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n.to_string_lossy().ends_with("-demo@1"))
                && p.exists()
        })
}

/// Sets up the room, fills it and checks that every NUC holds the master, byte for byte.
fn fill(nucs: usize, mbit: u64, mib: u64, peers: bool) -> Filled {
    require_root_and(&[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `ROOM_FILL_KEEP=1`: the logs and data stay for a look afterwards.
    if setting("ROOM_FILL_KEEP", 0) == 1 {
        eprintln!("keeping {}", d.display());
    }
    let mut net = Net {
        prefix: format!("ncf{}-", std::process::id() % 100_000),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };
    let rate = format!("{mbit}mbit");
    // tbf needs a bucket of at least one timer tick's worth of bytes at its rate.
    let burst = format!("{}kb", (mbit * 1_000_000 / 8 / 100 / 1000).max(32));
    let shape = |ns: &str, dev: &str| {
        must(&[
            "tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst",
            &burst, "latency", "50ms",
        ]);
    };

    // The switch: port 0 is the relay's, port k NUC k's.
    let sw = Switch::new(&mut net);
    let rly = net.add_ns("rly");
    let plug = |ns: &str, port: usize, ip: &str, dev: &str| {
        sw.plug(ns, port, ip, dev);
        // Into the device and out of it, at the port's rate.
        shape(&sw.ns, &format!("p{port}"));
        shape(ns, dev);
    };
    plug(&rly, 0, "10.92.0.1", "lan0");
    let nuc_ns: Vec<String> = (1..=nucs)
        .map(|k| {
            let ns = net.add_ns(&format!("n{k}"));
            plug(&ns, k, &format!("10.92.0.{}", 10 + k), "eth0");
            ns
        })
        .collect();

    // The controller beside the relay (the WAN is not measured), on a clock at noon the day
    // before the course, the night window open all day.
    let c = d.join("controller");
    let cs = c.to_str().unwrap();
    let controller_bin = workspace_bin("nightcast-controller");
    must(&[controller_bin.to_str().unwrap(), "init", "--data", cs]);
    let image = image_tools::testimage::image_bytes(mib << 20, 21);
    let img = d.join("demo1.img");
    image_tools::testimage::write_sparse(&img, &image).unwrap();
    let mpath = d.join("demo1.manifest");
    crate::util::build_master(&c, &img, "demo", "1", &mpath);
    let manifest = image_tools::Manifest::decode_unverified(&std::fs::read(&mpath).unwrap())
        .unwrap()
        .manifest;
    let stored: u64 = manifest
        .unique_chunks()
        .iter()
        .map(|c| u64::from(c.stored_len))
        .sum();
    must(&[
        controller_bin.to_str().unwrap(),
        "master-add",
        "--data",
        cs,
        mpath.to_str().unwrap(),
    ]);
    let spec = "start=2030-01-07T12:00:00Z speed=1";
    let env = [("NIGHTCAST_CLOCK", spec), ("RUST_LOG", "info")];
    serve_controller(&mut net, &rly, &c, "127.0.0.1:4433", &env);
    let admin = |args: &[&str]| admin_in(&rly, &c, args);
    admin(&[
        "site",
        "add",
        "site1",
        "--tz",
        "UTC",
        "--windows",
        "00:00-23:59",
        "--cap-mbit",
        "1000",
    ]);
    // The course runs in another room first, so the relay fetches the master before the room
    // that is measured needs it.
    admin(&["room", "add", "site1", "salle-0"]);
    admin(&["room", "add", "site1", "salle-1"]);
    admin(&["site", "accept-new", "site1", "--for", "1d"]);
    for k in 1..=nucs {
        admin(&["seat", "add", "site1", "salle-1", &format!("pc-{k}")]);
    }

    let calendar = |name: &str, room: &str| {
        let path = d.join(name);
        std::fs::write(
            &path,
            format!("site,room,master,version,start,end\nsite1,{room},demo,1,2030-01-08 08:00,2030-01-08 11:00\n"),
        )
        .unwrap();
        admin(&["calendar", "import", path.to_str().unwrap()]);
    };
    calendar("first.csv", "salle-0");

    // The relay, filled before the room starts.
    let relay = d.join("relay");
    let token = admin(&["enroll", "--role", "relay", "--site", "site1"]);
    must(&[
        "ip",
        "netns",
        "exec",
        &rly,
        "env",
        &format!("NIGHTCAST_CLOCK={spec}"),
        workspace_bin("nightcast-relay").to_str().unwrap(),
        "enroll",
        "--controller",
        "127.0.0.1:4433",
        "--token",
        token.trim(),
        "--node-id",
        "relay1",
        "--data",
        relay.to_str().unwrap(),
    ]);
    let relay_cfg = d.join("relay.toml");
    std::fs::write(
        &relay_cfg,
        format!(
            "controller = \"127.0.0.1:4433\"\ndata = \"{}\"\nlisten = \"0.0.0.0:4434\"\ndiscovery = \"0.0.0.0:4435\"\npoll_secs = 1\n",
            relay.display()
        ),
    )
    .unwrap();
    let r = net.spawn(
        &rly,
        &workspace_bin("nightcast-relay"),
        &["run", "--config", relay_cfg.to_str().unwrap()],
        &env,
        &d.join("relay.log"),
    );
    net.first_lines(r, 2);
    wait(
        "the relay to hold the master",
        120,
        || {
            status(&relay)["masters"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["complete"] == true))
        },
        d,
    );

    // The NUCs: found by broadcast, enrolled by themselves, seated by the DSI.
    let mut room = Vec::new();
    for (k, ns) in nuc_ns.iter().enumerate() {
        let node = format!("nuc{}", k + 1);
        let data = d.join(&node);
        let cfg = d.join(format!("{node}.toml"));
        std::fs::write(&cfg, format!("data = \"{}\"\ndiscovery = \"10.92.0.255:4435\"\nnode_id = \"{node}\"\nhypervisor = \"fake\"\npoll_secs = 1\nend_of_day = \"23:59\"\npeer_sharing = {peers}\n", data.display())).unwrap();
        let proc = net.spawn(
            ns,
            &workspace_bin("nightcast-agent"),
            &["run", "--config", cfg.to_str().unwrap()],
            &env,
            &d.join(format!("{node}.log")),
        );
        room.push(Nuc { node, data, proc });
    }
    for (k, nuc) in room.iter().enumerate() {
        wait(
            &format!("{} to enrol by broadcast", nuc.node),
            60,
            || status(&nuc.data)["site"] == "site1",
            d,
        );
        admin(&[
            "seat",
            "assign",
            "site1",
            "salle-1",
            &format!("pc-{}", k + 1),
            &nuc.node,
        ]);
    }

    // The DSI schedules the course: the room fills.
    let pids: Vec<u32> = room.iter().map(|n| net.procs[n.proc].id()).collect();
    let cpu_before: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let sent_before = tc_sent_bytes(&rly, "lan0");
    calendar("course.csv", "salle-1");
    let clock = Clock::system();
    let start = clock.now_f64();
    let elapsed = || clock.now_f64() - start;
    let mut ready_secs = vec![None; nucs];
    // A NUC with nothing before swaps the master in at once; otherwise it waits, ready, in `next`.
    let ready = |data: &Path| {
        let st = status(data);
        st["current"] == "demo 1" || (st["next"] == "demo 1" && st["next_state"] == "ready")
    };
    while ready_secs.iter().any(Option::is_none) {
        assert!(
            elapsed() < 600.0,
            "the room did not fill in 10 minutes: {:?}",
            room.iter()
                .map(|n| (n.node.clone(), status(&n.data)["next_state"].clone()))
                .collect::<Vec<_>>()
        );
        for (k, nuc) in room.iter().enumerate() {
            if ready_secs[k].is_none() && ready(&nuc.data) {
                ready_secs[k] = Some(elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let relay_sent = tc_sent_bytes(&rly, "lan0") - sent_before;
    let agents_cpu = pids.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu_before;
    // Where each NUC's chunks came from, for a look at how the room shared them.
    for (k, nuc) in room.iter().enumerate() {
        let st = status(&nuc.data);
        eprintln!(
            "{}: ready at {:.1} s, from the relay {} B, from peers {} B",
            nuc.node,
            ready_secs[k].unwrap_or_default(),
            st["fetched_bytes"],
            st["peer_bytes"]
        );
    }

    // Every NUC holds the master byte for byte (assembly verified every chunk on the way).
    let want = blake3::hash(&image);
    for nuc in &room {
        let path = assembled(&nuc.data).unwrap_or_else(|| panic!("{}: no image", nuc.node));
        let got = blake3::hash(&std::fs::read(&path).unwrap());
        assert_eq!(got, want, "{}: the assembled image differs", nuc.node);
    }
    if setting("ROOM_FILL_KEEP", 0) == 1 {
        let _ = dir.keep();
    }
    Filled {
        nucs,
        mbit,
        stored,
        relay_sent,
        ready_secs: ready_secs
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect(),
        agents_cpu,
    }
}

#[test]
fn a_room_of_nucs_on_shaped_switch_ports_fills_with_the_master_verified_on_every_nuc() {
    let peers = setting("ROOM_FILL_PEERS", 1) == 1;
    let f = fill(
        setting("ROOM_FILL_NUCS", 20) as usize,
        setting("ROOM_FILL_MBIT", 100),
        setting("ROOM_FILL_MIB", 48),
        peers,
    );
    let last = f.ready_secs.iter().cloned().fold(0.0, f64::max);
    let copies = f.relay_sent as f64 / f.stored as f64;
    let received = f.stored as f64 * f.nucs as f64;
    // One line for bench/room.sh (and the log of a CI run).
    println!(
        "ROOM-FILL peers={peers} nucs={} mbit={} stored={} last_ready_s={last:.2} relay_sent={} copies={copies:.3} agents_cpu_s={:.2} cpu_s_per_gb={:.2}",
        f.nucs,
        f.mbit,
        f.stored,
        f.relay_sent,
        f.agents_cpu,
        f.agents_cpu / (received / 1e9),
    );
    // The relay's port carried about one copy, not one per NUC: the NUCs shared the rest among
    // themselves (every NUC's copy was checked above). At least one: nothing came from elsewhere.
    let most = if peers { 1.5 } else { f.nucs as f64 * 1.2 };
    assert!((0.95..=most).contains(&copies), "{f:?}");
}
