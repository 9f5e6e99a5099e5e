//! A term at two sites, across real network namespaces: a controller namespace; per site a relay
//! namespace behind a WAN veth shaped by `tc` (tbf, 20 Mbit/s) with 40 ms of round trip added by
//! a forwarder (the kernel here has no netem), and a LAN bridge in the relay's namespace with
//! agent namespaces on it, which find their relay by a real UDP broadcast. WAN bytes are read
//! from the controller side's `tc -s` counters as well as from the relays. On a 600x clock:
//! two courses sharing chunks on day 1, version 2 of one on day 2; a relay killed mid-night, a
//! WAN cut for a while, a dead NUC replaced by a spare, and a relay taken over by an attacker.
//! Needs root (CI runs as root); elsewhere it fails and says so.

use crate::fleet;
use crate::netns::*;
use crate::util;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fleet::at;
use crate::util::{workspace_bin, UdpCounter};
use image_tools::clock::Clock;
use image_tools::exchange::{self, FrameReader};
use image_tools::wire::{
    self, Control, Frame, Hello, MasterRef, Role, RoomPlan, SeatBinding, SessionEntry, SitePlan,
    PROTOCOL_VERSION,
};
use image_tools::{ChunkId, ChunkStore, LocalStore, VerifiedChunk};

const SITES: usize = 2;
/// NUCs per site (each site has one more namespace, for a spare).
const AGENTS: usize = 2;
/// Virtual seconds per real second.
const SPEED: i64 = 600;

/// A master built into the controller's store, as the test knows it.
struct Built {
    manifest: image_tools::Manifest,
    path: PathBuf,
}

impl Built {
    fn ids(&self) -> HashSet<ChunkId> {
        self.manifest.chunks().map(|c| c.id).collect()
    }

    /// Stored bytes (as the manifest lists them) and count of this master's distinct chunks that
    /// none of `held` has.
    fn new_against(&self, held: &[&Built]) -> (u64, u64) {
        self.new_sized(held, &HashMap::new())
    }

    /// The same, each chunk counted at its size in `sizes` where it is there (the form a store
    /// holds: the controller compresses chunks again after import, so a relay receives forms up to
    /// the manifest's sizes).
    fn new_sized(&self, held: &[&Built], sizes: &HashMap<ChunkId, u64>) -> (u64, u64) {
        let old: HashSet<ChunkId> = held.iter().flat_map(|b| b.ids()).collect();
        self.manifest
            .unique_chunks()
            .iter()
            .filter(|c| !old.contains(&c.id))
            .fold((0, 0), |(b, n), c| {
                let len = sizes.get(&c.id).copied().unwrap_or(u64::from(c.stored_len));
                (b + len, n + 1)
            })
    }
}

/// Payload bytes of every chunk file of the store at `dir`, read from the directory itself (not
/// by opening the store, which a running relay is writing to).
fn payload_sizes(dir: &Path) -> HashMap<ChunkId, u64> {
    let mut out = HashMap::new();
    for fanout in std::fs::read_dir(dir.join("chunks")).unwrap().flatten() {
        for entry in std::fs::read_dir(fanout.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Ok(m) = entry.metadata() {
                out.insert(id, m.len() - image_tools::chunk::HEADER_LEN as u64);
            }
        }
    }
    out
}

/// What the test saw of one NUC at one moment (for "never swapped during a session").
#[derive(Debug, Clone)]
struct Sample {
    at: i64,
    current: String,
    session: String,
}

/// Reads every NUC's status every 200 ms until stopped.
fn sampler(
    clock: Clock,
    nucs: Arc<Mutex<Vec<(String, PathBuf)>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<HashMap<String, Vec<Sample>>> {
    std::thread::spawn(move || {
        let mut seen: HashMap<String, Vec<Sample>> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            let list = nucs.lock().unwrap().clone();
            for (node, data) in list {
                let at = clock.now();
                if let Some(st) = fleet::read_status(&data) {
                    let text = |f: &str| st[f].as_str().unwrap_or("").to_owned();
                    seen.entry(node).or_default().push(Sample {
                        at,
                        current: text("current"),
                        session: text("session"),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        seen
    })
}

/// A relay of site 2 taken over by an attacker: it has the relay's certificate and key (the box
/// is theirs) and answers on the relay's own ports, with a plan that asks the room to run
/// `demo 3`. While `junk` is false it serves a `demo 3` manifest the attacker signed; once true,
/// the genuine `demo 3` manifest with altered bytes for every chunk. Runs in namespace `ns` until
/// `stop`.
struct Evil {
    junk: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Evil {
    fn start(
        ns: &str,
        relay_data: &Path,
        plan: SitePlan,
        forged: Vec<u8>,
        genuine: Vec<u8>,
        clock: Clock,
    ) -> Evil {
        let (junk, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (j, st) = (junk.clone(), stop.clone());
        let (creds, _) = image_tools::trust::load_enrolment(relay_data).unwrap();
        let ns = ns.to_owned();
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            util::enter_netns(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let endpoint = exchange::server_endpoint(
                    "0.0.0.0:4434".parse().unwrap(),
                    creds
                        .server_config(
                            image_tools::trust::Admit::AgentsOf(
                                creds.identity().unwrap().site,
                            ),
                            image_tools::trust::Revoked::default(),
                            clock,
                        )
                        .unwrap(),
                )
                .unwrap();
                let discovery = tokio::net::UdpSocket::bind("0.0.0.0:4435").await.unwrap();
                let me = creds.identity().unwrap();
                tokio::spawn(image_tools::discovery::answer(
                    discovery,
                    image_tools::discovery::Answer {
                        nightcast: 1,
                        site: me.site.to_string(),
                        relay: me.node.to_string(),
                        port: 4434,
                        ca: image_tools::ids::hex(&image_tools::trust::fingerprint(&creds.ca)),
                        also: Vec::new(),
                    },
                ));
                ready.send(()).unwrap();
                let hello = Hello {
                    protocol_version: PROTOCOL_VERSION,
                    software_version: "evil".into(),
                    role: Role::Relay,
                    node_id: me.node.to_string(),
                    capabilities: vec![],
                };
                let serve = async {
                    while let Some(incoming) = endpoint.accept().await {
                        let Ok(conn) = incoming.await else { continue };
                        let (hello, plan, forged, genuine, junk) = (
                            hello.clone(),
                            plan.clone(),
                            forged.clone(),
                            genuine.clone(),
                            j.clone(),
                        );
                        tokio::spawn(async move {
                            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                                let Ok(Some(Frame::Control(request))) =
                                    FrameReader::default().next(&mut recv).await
                                else {
                                    continue;
                                };
                                let lie = junk.load(Ordering::Relaxed);
                                let mut out = Vec::new();
                                let mut put = |f: Frame| wire::encode(&f, &mut out).unwrap();
                                match request {
                                    Control::Hello(_) => put(Frame::Control(Control::HelloAck(hello.clone()))),
                                    Control::GetPlan => put(Frame::Control(Control::Plan(Box::new(plan.clone())))),
                                    Control::Report(_) => put(Frame::Control(Control::Ack)),
                                    Control::GetManifest(_) => put(Frame::Manifest(
                                        if lie { genuine.clone() } else { forged.clone() },
                                    )),
                                    Control::Has(ids) => put(Frame::Control(Control::HasReply(
                                        wire::pack_bits(&vec![true; ids.len()]),
                                    ))),
                                    Control::GetChunks(ids) => {
                                        for (i, id) in ids.into_iter().enumerate() {
                                            // Well-formed, compressed, and not that chunk.
                                            let fake = VerifiedChunk::from_raw(vec![i as u8; 4096]);
                                            let stored = [fake.header().as_slice(), fake.payload()].concat();
                                            put(Frame::Chunk { id, stored });
                                        }
                                        put(Frame::Control(Control::End));
                                    }
                                    _ => put(Frame::Control(Control::Error {
                                        code: image_tools::wire::ErrorCode::Forbidden,
                                        message: "no".into(),
                                    })),
                                }
                                let _ = send.write_all(&out).await;
                                let _ = send.finish();
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = async { while !st.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(100)).await } } => {}
                }
            });
        });
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        Evil { junk, stop }
    }
}

impl Drop for Evil {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A site's relay process: its namespace, data, config, and the index of its process in `Net`.
struct SiteRelay {
    ns: String,
    data: PathBuf,
    config: PathBuf,
}

#[test]
fn a_term_at_two_sites_behind_slow_wans_in_namespaces() {
    require_root_and(&["qemu-img"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut net = Net {
        prefix: format!("nct{}-", std::process::id() % 100_000),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };

    // Topology.
    let ctl = net.add_ns("ctl");
    let mut site_ns = Vec::new();
    for s in 1..=SITES {
        let rns = net.add_ns(&format!("s{s}"));
        let (a, b) = (format!("wan{s}c"), format!("wan{s}r"));
        must(&[
            "ip", "-n", &ctl, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &rns,
        ]);
        must(&[
            "ip",
            "-n",
            &ctl,
            "addr",
            "add",
            &format!("10.90.{s}.1/24"),
            "dev",
            &a,
        ]);
        must(&[
            "ip",
            "-n",
            &rns,
            "addr",
            "add",
            &format!("10.90.{s}.2/24"),
            "dev",
            &b,
        ]);
        must(&["ip", "-n", &ctl, "link", "set", &a, "up"]);
        must(&["ip", "-n", &rns, "link", "set", &b, "up"]);
        // The WAN: 20 Mbit/s each way (its 40 ms of round trip: the forwarder below).
        for (ns, dev) in [(&ctl, &a), (&rns, &b)] {
            must(&[
                "tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", "20mbit",
                "burst", "32kbit", "latency", "400ms",
            ]);
        }
        // The LAN: a bridge in the relay's namespace, one namespace per NUC (and a spare's).
        must(&["ip", "-n", &rns, "link", "add", "br0", "type", "bridge"]);
        must(&[
            "ip",
            "-n",
            &rns,
            "addr",
            "add",
            &format!("10.91.{s}.1/24"),
            "dev",
            "br0",
        ]);
        must(&["ip", "-n", &rns, "link", "set", "br0", "up"]);
        for n in 1..=AGENTS + 1 {
            let ans = net.add_ns(&format!("s{s}n{n}"));
            let (x, y) = (format!("lan{n}"), format!("eth{n}"));
            must(&[
                "ip", "-n", &rns, "link", "add", &x, "type", "veth", "peer", "name", &y, "netns",
                &ans,
            ]);
            must(&["ip", "-n", &rns, "link", "set", &x, "master", "br0"]);
            must(&["ip", "-n", &rns, "link", "set", &x, "up"]);
            must(&[
                "ip",
                "-n",
                &ans,
                "addr",
                "add",
                &format!("10.91.{s}.{}/24", 10 + n),
                "dev",
                &y,
            ]);
            must(&["ip", "-n", &ans, "link", "set", &y, "up"]);
        }
        site_ns.push(rns);
    }

    // The DSI's masters: two courses sharing chunks, a version 2 of the first (published during
    // the term), and a `demo 3` that is registered but never scheduled.
    let c = d.join("controller");
    let cs = c.to_str().unwrap();
    let controller_bin = workspace_bin("nightcast-controller");
    must(&[controller_bin.to_str().unwrap(), "init", "--data", cs]);
    let demo1_image = image_tools::testimage::image_bytes(16 << 20, 5);
    let build = |label: &'static str, image: &[u8]| -> Built {
        let (name, version) = label.split_once(' ').unwrap();
        let img = d.join(format!("{name}{version}.img"));
        image_tools::testimage::write_sparse(&img, image).unwrap();
        let path = d.join(format!("{name}{version}.manifest"));
        util::build_master(&c, &img, name, version, &path);
        let manifest = image_tools::Manifest::decode_unverified(&std::fs::read(&path).unwrap())
            .unwrap()
            .manifest;
        Built { manifest, path }
    };
    let demo1 = build("demo 1", &demo1_image);
    let bureau1 = build(
        "bureau 1",
        &image_tools::testimage::evolve(&demo1_image, 0.5, 21),
    );
    let demo2 = build(
        "demo 2",
        &image_tools::testimage::evolve(&demo1_image, 0.05, 7),
    );
    let demo3 = build(
        "demo 3",
        &image_tools::testimage::evolve(&demo1_image, 0.3, 9),
    );
    let add = |b: &Built| {
        must(&[
            controller_bin.to_str().unwrap(),
            "master-add",
            "--data",
            cs,
            b.path.to_str().unwrap(),
        ]);
    };
    for b in [&demo1, &bureau1, &demo3] {
        add(b);
    }
    // The attacker's `demo 3`: built and signed with a key of their own.
    let evil_dir = d.join("evil");
    std::fs::create_dir_all(&evil_dir).unwrap();
    must(&[
        workspace_bin("nightcast-image").to_str().unwrap(),
        "keygen",
        "--out",
        evil_dir.join("signing.key").to_str().unwrap(),
    ]);
    let forged_img = d.join("forged.img");
    image_tools::testimage::write_sparse(
        &forged_img,
        &image_tools::testimage::image_bytes(4 << 20, 99),
    )
    .unwrap();
    util::build_master(
        &evil_dir,
        &forged_img,
        "demo",
        "3",
        &evil_dir.join("demo3.manifest"),
    );

    // The clock starts now: 600x (a real second is ten minutes), at 17:00 on the day before the
    // term; the sites' night window is 20:00-06:00 UTC.
    let clock = Clock::parse_now(&format!("start=2030-01-07T17:00:00Z speed={SPEED}")).unwrap();
    let spec = clock.spec();
    let env = [("NIGHTCAST_CLOCK", spec.as_str()), ("RUST_LOG", "info")];
    let i = net.spawn(
        &ctl,
        &controller_bin,
        &[
            "serve",
            "--data",
            cs,
            "--listen",
            "0.0.0.0:4433",
            "--api",
            "127.0.0.1:8644",
        ],
        &env,
        &d.join("controller.log"),
    );
    net.first_lines(i, 2);
    let admin = |args: &[&str]| -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &ctl])
            .arg(env!("CARGO_BIN_EXE_nightcast"))
            .args([
                "--api",
                "http://127.0.0.1:8644",
                "--token-file",
                c.join("admin.token").to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let calendar = |name: &str, rows: &[(&str, &str, &str)]| {
        let mut text = String::from("site,room,master,version,start,end\n");
        for s in 1..=SITES {
            for (label, start, end) in rows {
                let (m, v) = label.split_once(' ').unwrap();
                text.push_str(&format!("site{s},salle-1,{m},{v},{start},{end}\n"));
            }
        }
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        admin(&["calendar", "import", path.to_str().unwrap()]);
    };
    for s in 1..=SITES {
        let site = format!("site{s}");
        admin(&[
            "site",
            "add",
            &site,
            "--tz",
            "UTC",
            "--windows",
            "20:00-06:00",
            "--cap-mbit",
            "18",
        ]);
        admin(&["room", "add", &site, "salle-1"]);
        // The DSI lets each site's new NUCs in by themselves for the term.
        admin(&["site", "accept-new", &site, "--for", "7d"]);
        for n in 1..=AGENTS {
            admin(&["seat", "add", &site, "salle-1", &format!("pc-{n}")]);
        }
    }
    // Day 1: course "demo" in the morning, course "bureau" in the afternoon.
    let sessions = [
        ("demo 1", "2030-01-08 08:00", "2030-01-08 11:00"),
        ("bureau 1", "2030-01-08 13:00", "2030-01-08 16:00"),
        ("demo 2", "2030-01-09 08:00", "2030-01-09 11:00"),
    ];
    calendar("term.csv", &sessions[..2]);

    // Relays, each in its site namespace, reaching the controller over the shaped WAN veth
    // through a forwarder that adds 20 ms each way.
    let mut relays = Vec::new();
    let mut relay_procs = Vec::new();
    let mut delays = Vec::new();
    for s in 1..=SITES {
        let rns = site_ns[s - 1].clone();
        let data = d.join(format!("relay{s}"));
        let token = admin(&["enroll", "--role", "relay", "--site", &format!("site{s}")]);
        must(&[
            "ip",
            "netns",
            "exec",
            &rns,
            "env",
            &format!("NIGHTCAST_CLOCK={spec}"),
            workspace_bin("nightcast-relay").to_str().unwrap(),
            "enroll",
            "--controller",
            &format!("10.90.{s}.1:4433"),
            "--token",
            token.trim(),
            "--node-id",
            &format!("relay{s}"),
            "--data",
            data.to_str().unwrap(),
        ]);
        let delay = UdpCounter::start_with(
            Some(&rns),
            "127.0.0.1:0",
            format!("10.90.{s}.1:4433").parse().unwrap(),
            Duration::from_millis(20),
        );
        let config = d.join(format!("relay{s}.toml"));
        std::fs::write(&config, format!("controller = \"{}\"\ndata = \"{}\"\nlisten = \"0.0.0.0:4434\"\ndiscovery = \"0.0.0.0:4435\"\npoll_secs = 1\n[wake_on_lan]\ntarget = \"10.91.{s}.255:9\"\n", delay.addr, data.display())).unwrap();
        let proc = net.spawn(
            &rns,
            &workspace_bin("nightcast-relay"),
            &["run", "--config", config.to_str().unwrap()],
            &env,
            &d.join(format!("relay{s}.log")),
        );
        net.first_lines(proc, 2);
        delays.push(delay);
        relays.push(SiteRelay {
            ns: rns,
            data,
            config,
        });
        relay_procs.push(proc);
    }
    let start_relay = |net: &mut Net, r: &SiteRelay, log: &str| -> usize {
        let proc = net.spawn(
            &r.ns,
            &workspace_bin("nightcast-relay"),
            &["run", "--config", r.config.to_str().unwrap()],
            &env,
            &d.join(log),
        );
        net.first_lines(proc, 2);
        proc
    };
    // NUCs: nothing configured but their data directory and the LAN's broadcast address.
    let start_agent = |net: &mut Net, s: usize, n: usize, node: &str| -> (usize, PathBuf) {
        let data = d.join(node);
        let cfg = d.join(format!("{node}.toml"));
        std::fs::write(&cfg, format!("data = \"{}\"\ndiscovery = \"10.91.{s}.255:4435\"\nnode_id = \"{node}\"\nhypervisor = \"fake\"\npoll_secs = 1\nend_of_day = \"23:59\"\n", data.display())).unwrap();
        let proc = net.spawn(
            &net.ns(&format!("s{s}n{n}")),
            &workspace_bin("nightcast-agent"),
            &["run", "--config", cfg.to_str().unwrap()],
            &env,
            &d.join(format!("{node}.log")),
        );
        (proc, data)
    };
    let nucs: Arc<Mutex<Vec<(String, PathBuf)>>> = Arc::default();
    let mut agent_procs = HashMap::new();
    for s in 1..=SITES {
        for n in 1..=AGENTS {
            let node = format!("s{s}-nuc{n}");
            let (proc, data) = start_agent(&mut net, s, n, &node);
            agent_procs.insert(node.clone(), proc);
            nucs.lock().unwrap().push((node, data));
        }
    }
    let agents = nucs.lock().unwrap().clone();
    let site_of = |node: &str| node[1..2].parse::<usize>().unwrap();
    for (node, data) in &agents {
        let s = site_of(node);
        wait(
            &format!("{node} to enrol by broadcast"),
            30,
            || status(data)["site"] == format!("site{s}"),
            d,
        );
        let n = node.rsplit("nuc").next().unwrap();
        admin(&[
            "seat",
            "assign",
            &format!("site{s}"),
            "salle-1",
            &format!("pc-{n}"),
            node,
        ]);
    }
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let samples = sampler(clock, nucs.clone(), stop_sampling.clone());
    let wan = |s: usize| tc_sent_bytes(&ctl, &format!("wan{s}c"));
    let relay_n = |s: usize, field: &str| status(&relays[s - 1].data)[field].as_u64().unwrap_or(0);
    let complete = |s: usize| {
        status(&relays[s - 1].data)["masters"]
            .as_array()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|m| m["complete"] == true))
    };
    let sleep_until = |t: &str| std::thread::sleep(clock.real_until(at(t)));

    // Before the window: only control messages on the WAN.
    assert!(
        clock.now() < at("2030-01-07T19:50:00Z"),
        "the setup took longer than the time before the window"
    );
    sleep_until("2030-01-07T19:55:00Z");
    for s in 1..=SITES {
        let st = status(&relays[s - 1].data);
        assert_eq!(
            st["fetched_bytes"], 0,
            "site{s} fetched before its window: {st}"
        );
        assert!(
            wan(s) < 200_000,
            "site{s}: {} B sent on the WAN before the window",
            wan(s)
        );
    }

    // Night 1. Site 1's relay is killed mid-transfer and restarted; site 2's WAN goes down a while.
    let (night1_bytes, night1_chunks) = {
        let (b, n) = demo1.new_against(&[]);
        let (b2, n2) = bureau1.new_against(&[&demo1]);
        (b + b2, n + n2)
    };
    let wan_before_night = [wan(1), wan(2)];
    wait(
        "site 1 to be a fifth through the night's transfer",
        60,
        || relay_n(1, "fetched_bytes") > night1_bytes / 5,
        d,
    );
    let killed_after = relay_n(1, "fetched_bytes");
    net.kill(relay_procs[0]);
    let held_at_kill = LocalStore::open(&relays[0].data.join("store"))
        .unwrap()
        .ids()
        .unwrap();
    relay_procs[0] = start_relay(&mut net, &relays[0], "relay1-restarted.log");
    wait(
        "site 2 to be a fifth through",
        60,
        || relay_n(2, "fetched_bytes") > night1_bytes / 5,
        d,
    );
    assert!(!complete(2), "site 2 finished before its WAN could be cut");
    must(&["ip", "-n", &site_ns[1], "link", "set", "wan2r", "down"]);
    let cut_at = relay_n(2, "fetched_bytes");
    std::thread::sleep(Duration::from_secs(4));
    let during_cut = relay_n(2, "fetched_bytes");
    must(&["ip", "-n", &site_ns[1], "link", "set", "wan2r", "up"]);
    assert!(
        during_cut - cut_at < night1_bytes / 10,
        "site 2 fetched {} B with its WAN down",
        during_cut - cut_at
    );
    for s in 1..=SITES {
        wait(
            &format!("site {s}'s relay to hold the term's masters"),
            120,
            || complete(s),
            d,
        );
    }
    // Site 1 fetched after its restart exactly what it did not hold yet; each chunk crossed each
    // WAN once (the controller's side of the link, every overhead included, counted by tc).
    // (What it had received but not yet made durable when killed came again.)
    assert_eq!(
        relay_n(1, "fetched_chunks"),
        night1_chunks - held_at_kill.len() as u64,
        "site 1 fetched again what it held"
    );
    let stored_len: HashMap<ChunkId, u64> = demo1
        .manifest
        .chunks()
        .chain(bureau1.manifest.chunks())
        .map(|c| (c.id, u64::from(c.stored_len)))
        .collect();
    let held_bytes: u64 = held_at_kill.iter().map(|id| stored_len[id]).sum();
    // On the wire: the chunks plus about 6 % of IP, UDP and QUIC overheads; at site 1 also
    // what was lost with the killed process: received but not yet durable, or still queued in
    // the WAN (at most 400 ms of tbf queue at 20 Mbit/s, 1 MB).
    let lost_at_kill = [killed_after.saturating_sub(held_bytes) + 1_000_000, 0];
    for s in 1..=SITES {
        // What crossed is what the relay keeps.
        let sizes = payload_sizes(&d.join(format!("relay{s}/store")));
        let kept = demo1.new_sized(&[], &sizes).0 + bureau1.new_sized(&[&demo1], &sizes).0;
        assert!(
            kept <= night1_bytes,
            "site{s} keeps {kept} B, more than listed"
        );
        let sent = wan(s) - wan_before_night[s - 1];
        let most = (kept + lost_at_kill[s - 1]) * 11 / 10;
        eprintln!("night 1, site{s}: WAN {sent} B (tc) for {kept} B of chunks ({night1_bytes} B listed); at most {most} B expected");
        assert!(
            sent >= kept && sent < most,
            "site{s}: the WAN carried {sent} B for {kept} B of chunks"
        );
    }
    for (node, data) in &agents {
        wait(
            &format!("{node} to hold demo 1"),
            120,
            || status(data)["current"] == "demo 1",
            d,
        );
    }
    assert!(
        clock.now() < at("2030-01-08T08:00:00Z"),
        "not ready before the first session"
    );

    // Day 1. During the morning session the DSI publishes demo 2 for tomorrow: nothing moves on
    // the WAN until the window, and the sessions go on.
    sleep_until("2030-01-08T08:30:00Z");
    add(&demo2);
    calendar("tomorrow.csv", &sessions[2..]);
    let day = [
        (wan(1), relay_n(1, "fetched_bytes")),
        (wan(2), relay_n(2, "fetched_bytes")),
    ];
    let closed = [
        relay_n(1, "wan_bytes_closed"),
        relay_n(2, "wan_bytes_closed"),
    ];
    sleep_until("2030-01-08T19:50:00Z");
    for s in 1..=SITES {
        eprintln!(
            "day 1, site{s}: {} B on the WAN (tc), the relay counted {} B while closed",
            wan(s) - day[s - 1].0,
            relay_n(s, "wan_bytes_closed") - closed[s - 1]
        );
        assert_eq!(
            relay_n(s, "fetched_bytes"),
            day[s - 1].1,
            "site{s} fetched in the daytime"
        );
        // The relay counts the same bytes (both ways, at its end) as control only.
        let counted = relay_n(s, "wan_bytes_closed") - closed[s - 1];
        assert!(
            counted > 0 && counted < 500_000,
            "site{s}: the relay counted {counted} B on its closed WAN in the daytime"
        );
        assert!(
            wan(s) - day[s - 1].0 < 500_000,
            "site{s}: {} B on the WAN in the daytime",
            wan(s) - day[s - 1].0
        );
    }
    let dusk = [wan(1), wan(2)];
    let agents_fetched: HashMap<String, u64> = agents
        .iter()
        .map(|(node, data)| {
            (
                node.clone(),
                status(data)["fetched_chunks"].as_u64().unwrap(),
            )
        })
        .collect();
    for (node, data) in &agents {
        let st = status(data);
        assert_eq!(st["current"], "bureau 1", "{node}: {st}");
        assert_ne!(
            (st["next"].as_str(), st["next_state"].as_str()),
            (Some("demo 2"), Some("ready")),
            "{node} got demo 2 before the relay did: {st}"
        );
    }

    // Night 2: only demo 2's new chunks cross, on the WAN and on the LAN.
    let (new_bytes, new_chunks) = demo2.new_against(&[&demo1, &bureau1]);
    assert!(new_chunks > 0 && new_bytes < night1_bytes / 4);
    for s in 1..=SITES {
        wait(
            &format!("site {s} to fetch demo 2"),
            120,
            || complete(s) && relay_n(s, "fetched_bytes") > day[s - 1].1,
            d,
        );
        let (sent, fetched) = (
            wan(s) - dusk[s - 1],
            relay_n(s, "fetched_bytes") - day[s - 1].1,
        );
        let sizes = payload_sizes(&d.join(format!("relay{s}/store")));
        let (new_bytes, _) = demo2.new_sized(&[&demo1, &bureau1], &sizes);
        eprintln!("night 2, site{s}: WAN {sent} B (tc, from 19:50), fetched {fetched} B for {new_bytes} B of new chunks");
        assert!(
            fetched >= new_bytes && fetched < new_bytes + new_bytes / 20,
            "site{s} fetched {fetched} B for {new_bytes} B of new chunks"
        );
        assert!(
            sent >= new_bytes && sent < new_bytes + new_bytes / 4 + 150_000,
            "site{s}: the WAN carried {sent} B for {new_bytes} B of new chunks"
        );
    }
    for (node, data) in &agents {
        wait(
            &format!("{node} to hold demo 2"),
            60,
            || {
                let st = status(data);
                st["current"] == "demo 2" || (st["next"] == "demo 2" && st["next_state"] == "ready")
            },
            d,
        );
        let got = status(data)["fetched_chunks"].as_u64().unwrap() - agents_fetched[node];
        assert_eq!(
            got, new_chunks,
            "{node} fetched {got} chunks from its relay for {new_chunks} new ones"
        );
    }

    // A NUC of site 1 dies in the night; the spare staff plug in finds the relay, takes the seat
    // and gets demo 2 from the relay's cache: the WAN carries nothing for it.
    net.kill(agent_procs["s1-nuc2"]);
    let (wan1, fetched1) = (wan(1), relay_n(1, "fetched_bytes"));
    let (_, spare) = start_agent(&mut net, 1, AGENTS + 1, "s1-spare");
    nucs.lock().unwrap().retain(|(n, _)| n != "s1-nuc2");
    nucs.lock()
        .unwrap()
        .push(("s1-spare".into(), spare.clone()));
    wait(
        "the spare to take pc-2 and hold demo 2",
        90,
        || {
            let st = status(&spare);
            st["seat"] == "salle-1/pc-2"
                && (st["current"] == "demo 2"
                    || (st["next"] == "demo 2" && st["next_state"] == "ready"))
        },
        d,
    );
    assert_eq!(
        relay_n(1, "fetched_bytes"),
        fetched1,
        "the relay fetched for the spare"
    );
    assert!(
        wan(1) - wan1 < 500_000,
        "{} B crossed site 1's WAN while the spare came up",
        wan(1) - wan1
    );

    // Day 2: every seat runs demo 2.
    sleep_until("2030-01-09T08:20:00Z");
    let seated: Vec<(String, PathBuf)> = nucs.lock().unwrap().clone();
    for (node, data) in &seated {
        let st = status(data);
        assert_eq!(st["current"], "demo 2", "{node}: {st}");
        assert!(
            st["session"].as_str().unwrap_or("").starts_with("demo 2"),
            "{node}: {st}"
        );
    }

    // Site 2's relay is taken over. Its plan asks the room for demo 3 after this session: first
    // with a manifest the attacker signed, then with the genuine manifest and altered chunks.
    net.kill(relay_procs[1]);
    let now = clock.now();
    let plan = SitePlan {
        tz: "UTC".into(),
        windows: vec!["00:00-23:59".into()],
        cap_mbit: 100,
        entries: vec![],
        rooms: vec![RoomPlan {
            room: "salle-1".into(),
            sessions: vec![
                SessionEntry {
                    master: mref("demo 2"),
                    start: at("2030-01-09T08:00:00Z"),
                    end: at("2030-01-09T11:00:00Z"),
                },
                SessionEntry {
                    master: mref("demo 3"),
                    start: now + 3 * 3600,
                    end: now + 4 * 3600,
                },
            ],
        }],
        seats: (1..=AGENTS)
            .map(|n| SeatBinding {
                room: "salle-1".into(),
                seat: format!("pc-{n}"),
                node: format!("s2-nuc{n}"),
            })
            .collect(),
        revoked: vec![],
        signing_keys: vec![],
        current_ca: vec![],
        bridge: vec![],
        ..SitePlan::default()
    };
    let evil = Evil::start(
        &site_ns[1],
        &relays[1].data,
        plan,
        std::fs::read(evil_dir.join("demo3.manifest")).unwrap(),
        std::fs::read(&demo3.path).unwrap(),
        clock,
    );
    let site2: Vec<_> = seated
        .iter()
        .filter(|(n, _)| n.starts_with("s2-"))
        .cloned()
        .collect();
    let swaps: Vec<u64> = site2
        .iter()
        .map(|(_, data)| status(data)["swaps"].as_u64().unwrap())
        .collect();
    for (node, data) in &site2 {
        wait(
            &format!("{node} to refuse the forged manifest"),
            60,
            || status(data)["refused_manifests"].as_u64().unwrap_or(0) >= 1,
            d,
        );
    }
    evil.junk.store(true, Ordering::Relaxed);
    for (node, data) in &site2 {
        wait(
            &format!("{node} to reject the altered chunks"),
            60,
            || {
                status(data)["last_error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("corrupt data")
            },
            d,
        );
    }
    for ((node, data), swaps) in site2.iter().zip(swaps) {
        let st = status(data);
        assert_eq!(st["current"], "demo 2", "{node}: {st}");
        assert!(
            st["session"].as_str().unwrap_or("").starts_with("demo 2"),
            "{node}: {st}"
        );
        assert_eq!(st["swaps"].as_u64().unwrap(), swaps, "{node}: {st}");
        assert_ne!(st["next_state"], "ready", "{node}: {st}");
        assert_eq!(st["vm"], "Running", "{node}: {st}");
    }
    drop(evil);

    // No NUC changed masters while a session ran, and each ran the session's master.
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = samples.join().unwrap();
    let sessions: Vec<(&str, i64, i64)> = sessions
        .iter()
        .map(|(l, s, e)| {
            (
                *l,
                at(&format!("{}:00Z", s.replace(' ', "T"))),
                at(&format!("{}:00Z", e.replace(' ', "T"))),
            )
        })
        .collect();
    for (node, seen) in &samples {
        for pair in seen.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.current != b.current {
                assert!(
                    !sessions
                        .iter()
                        .any(|(_, start, end)| a.at >= *start && b.at < *end),
                    "{node} swapped {} -> {} during a session (seen between {} and {})",
                    a.current,
                    b.current,
                    a.at,
                    b.at
                );
            }
        }
        for x in seen {
            if let Some((label, ..)) = sessions
                .iter()
                .find(|(_, start, end)| x.at >= start + 600 && x.at < *end)
            {
                assert_eq!(x.current, *label, "{node} at {}: {x:?}", x.at);
                assert!(x.session.starts_with(label), "{node} at {}: {x:?}", x.at);
            }
        }
    }
}

fn mref(label: &str) -> MasterRef {
    let (name, version) = label.split_once(' ').unwrap();
    MasterRef::new(name, version).unwrap()
}
