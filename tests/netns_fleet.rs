//! The fleet across real network namespaces: a controller namespace; per site a relay namespace
//! behind a WAN veth shaped by `tc` (tbf), and a LAN bridge in the relay's namespace with agent
//! namespaces on it, which find their relay by a real UDP broadcast. WAN bytes are read from the
//! controller side's `tc -s` counters as well as from the relays. Needs root (CI runs as root);
//! elsewhere it says it is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet;
mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleet::at;
use image_tools::clock::Clock;
use serde_json::Value;
use util::workspace_bin;

const SITES: usize = 2;
const AGENTS: usize = 2;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces and processes of one test, removed when dropped.
struct Net {
    prefix: String,
    namespaces: Vec<String>,
    procs: Vec<Child>,
}

impl Net {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn add_ns(&mut self, name: &str) -> String {
        let ns = self.ns(name);
        must(&["ip", "netns", "add", &ns]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.namespaces.push(ns.clone());
        ns
    }

    /// Runs `program args` in namespace `ns` in the background, stderr to `log`.
    fn spawn(
        &mut self,
        ns: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.procs.push(child);
        self.procs.len() - 1
    }

    fn first_lines(&mut self, i: usize, n: usize) -> Vec<String> {
        use std::io::{BufRead, BufReader};
        let mut r = BufReader::new(self.procs[i].stdout.take().unwrap());
        let mut out = Vec::new();
        for _ in 0..n {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            out.push(l.trim().to_owned());
        }
        std::thread::spawn(move || {
            let mut s = String::new();
            while r.read_line(&mut s).is_ok_and(|n| n > 0) {
                s.clear();
            }
        });
        out
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        // `ip netns exec` children may outlive their parent: kill what runs in our namespaces.
        for ns in &self.namespaces {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn tc_sent_bytes(ns: &str, dev: &str) -> u64 {
    let out = Command::new("tc")
        .args(["-n", ns, "-s", "qdisc", "show", "dev", dev])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "Sent")
        .nth(1)
        .and_then(|b| b.parse().ok())
        .unwrap_or(0)
}

fn status(data: &Path) -> Value {
    fleet::read_status(data).unwrap_or(Value::Null)
}

fn wait(what: &str, secs: u64, cond: impl Fn() -> bool, logs: &Path) {
    for _ in 0..secs * 10 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut all = String::new();
    for e in std::fs::read_dir(logs).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            all.push_str(&format!(
                "== {}\n{}\n",
                e.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    panic!("timed out waiting for {what}\n{all}");
}

#[test]
fn two_sites_in_namespaces_fetch_once_per_site_only_in_the_window_and_every_nuc_is_ready() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root.unwrap_or(false) || !sh(&["ip", "netns", "list"]) || !sh(&["qemu-img", "--version"]) {
        eprintln!("skipped: needs root, `ip netns` and qemu-img (CI runs it as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut net = Net {
        prefix: format!("nct{}-", std::process::id() % 100_000),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };
    // 60x; the window opens fifteen minutes (real seconds) after the start, the setup's time.
    let clock = Clock::parse_now("start=2030-01-07T21:45:00Z speed=60").unwrap();
    let spec = clock.spec();
    let env = [("NIGHTCAST_CLOCK", spec.as_str()), ("RUST_LOG", "info")];

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
        // The WAN: 20 Mbit/s each way.
        for (ns, dev) in [(&ctl, &a), (&rns, &b)] {
            must(&[
                "tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", "20mbit",
                "burst", "32kbit", "latency", "400ms",
            ]);
        }
        // The LAN: a bridge in the relay's namespace, one namespace per NUC.
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
        for n in 1..=AGENTS {
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

    // The controller, a master, a session tomorrow morning at both sites.
    let c = d.join("controller");
    let cs = c.to_str().unwrap();
    must(&[
        workspace_bin("nightcast-controller").to_str().unwrap(),
        "init",
        "--data",
        cs,
    ]);
    let image = image_tools::testimage::image_bytes(24 << 20, 5);
    let img = d.join("m1.img");
    image_tools::testimage::write_sparse(&img, &image).unwrap();
    util::build_master(&c, &img, "demo", "1", &d.join("m1.manifest"));
    must(&[
        workspace_bin("nightcast-controller").to_str().unwrap(),
        "master-add",
        "--data",
        cs,
        d.join("m1.manifest").to_str().unwrap(),
    ]);
    let m1 =
        image_tools::Manifest::decode_unverified(&std::fs::read(d.join("m1.manifest")).unwrap())
            .unwrap()
            .manifest;
    let i = net.spawn(
        &ctl,
        &workspace_bin("nightcast-controller"),
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
    let mut calendar = String::from("site,room,master,version,start,end\n");
    for s in 1..=SITES {
        let site = format!("site{s}");
        admin(&[
            "site",
            "add",
            &site,
            "--tz",
            "UTC",
            "--windows",
            "22:00-06:00",
            "--cap-mbit",
            "18",
        ]);
        admin(&["room", "add", &site, "salle-1"]);
        for n in 1..=AGENTS {
            admin(&["seat", "add", &site, "salle-1", &format!("pc-{n}")]);
        }
        calendar.push_str(&format!(
            "{site},salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n"
        ));
    }
    std::fs::write(d.join("term.csv"), calendar).unwrap();
    admin(&["calendar", "import", d.join("term.csv").to_str().unwrap()]);

    // Relays, each in its site namespace, reaching the controller over its WAN veth.
    let mut relays = Vec::new();
    for s in 1..=SITES {
        let rns = &site_ns[s - 1];
        let data = d.join(format!("relay{s}"));
        let token = admin(&["enroll", "--role", "relay", "--site", &format!("site{s}")]);
        must(&[
            "ip",
            "netns",
            "exec",
            rns,
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
        let cfg = d.join(format!("relay{s}.toml"));
        std::fs::write(&cfg, format!("controller = \"10.90.{s}.1:4433\"\ndata = \"{}\"\nlisten = \"0.0.0.0:4434\"\ndiscovery = \"0.0.0.0:4435\"\npoll_secs = 1\n[wake_on_lan]\ntarget = \"10.91.{s}.255:9\"\n", data.display())).unwrap();
        let i = net.spawn(
            rns,
            &workspace_bin("nightcast-relay"),
            &["run", "--config", cfg.to_str().unwrap()],
            &env,
            &d.join(format!("relay{s}.log")),
        );
        net.first_lines(i, 2);
        relays.push(data);
    }
    // NUCs: nothing configured but their data directory and the LAN's broadcast address.
    let mut agents: Vec<(usize, String, PathBuf)> = Vec::new();
    for s in 1..=SITES {
        for n in 1..=AGENTS {
            let node = format!("s{s}-nuc{n}");
            let data = d.join(&node);
            let cfg = d.join(format!("{node}.toml"));
            std::fs::write(&cfg, format!("data = \"{}\"\ndiscovery = \"10.91.{s}.255:4435\"\nnode_id = \"{node}\"\nhypervisor = \"fake\"\npoll_secs = 1\nend_of_day = \"23:59\"\n", data.display())).unwrap();
            net.spawn(
                &net.ns(&format!("s{s}n{n}")),
                &workspace_bin("nightcast-agent"),
                &["run", "--config", cfg.to_str().unwrap()],
                &env,
                &d.join(format!("{node}.log")),
            );
            agents.push((s, node, data));
        }
    }
    for (s, node, data) in &agents {
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

    // Before the window: only control messages on the WAN.
    let wan = |s: usize| tc_sent_bytes(&ctl, &format!("wan{s}c"));
    assert!(
        clock.now() < at("2030-01-07T21:59:00Z"),
        "the setup took longer than the time before the window"
    );
    std::thread::sleep(clock.real_until(at("2030-01-07T21:59:45Z")));
    for s in 1..=SITES {
        let st = status(&relays[s - 1]);
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

    // The night: every NUC is ready before 08:00.
    for (_, node, data) in &agents {
        wait(
            &format!("{node} to hold demo 1"),
            120,
            || status(data)["current"] == "demo 1",
            d,
        );
    }
    assert!(clock.now() < at("2030-01-08T08:00:00Z"));
    // Each chunk crossed each site's WAN once: the controller side sent about the unique bytes.
    let unique = m1.summary().unique_stored_bytes;
    for s in 1..=SITES {
        let (sent, fetched) = (
            wan(s),
            status(&relays[s - 1])["fetched_bytes"].as_u64().unwrap(),
        );
        assert!(
            fetched >= unique && fetched < unique + unique / 50,
            "site{s} fetched {fetched} for {unique}"
        );
        assert!(
            sent >= unique && sent < unique + unique / 10,
            "site{s}: the WAN carried {sent} B for {unique} B of chunks"
        );
    }
}
