//! Network namespaces for the multi-host tests: namespaces and the processes run in them, removed
//! and killed when dropped; `tc` byte counters; waiting with the logs shown on a timeout.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::fleet;

/// Fails with what to install unless the test runs as root with `ip netns` (CI does; .ci/run
/// installs iproute2) and every tool in `more` answers `--version`.
pub fn require_root_and(more: &[&str]) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let tools = more.iter().all(|t| sh(&[t, "--version"]));
    assert!(
        root.unwrap_or(false) && sh(&["ip", "netns", "list"]) && tools,
        "this test needs root, `ip netns` (iproute2) and {more:?}: CI runs it as root and .ci/run \
         installs them"
    );
}

pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn must(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces and processes of one test, removed when dropped.
pub struct Net {
    pub prefix: String,
    pub namespaces: Vec<String>,
    pub procs: Vec<Child>,
}

impl Net {
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn add_ns(&mut self, name: &str) -> String {
        let ns = self.ns(name);
        must(&["ip", "netns", "add", &ns]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.namespaces.push(ns.clone());
        ns
    }

    /// Runs `program args` in namespace `ns` in the background, stderr to `log`.
    pub fn spawn(
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

    /// kill -9 of process `i` (`ip netns exec` runs the program in its own process).
    pub fn kill(&mut self, i: usize) {
        let _ = self.procs[i].kill();
        let _ = self.procs[i].wait();
    }

    pub fn first_lines(&mut self, i: usize, n: usize) -> Vec<String> {
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

pub fn tc_sent_bytes(ns: &str, dev: &str) -> u64 {
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

pub fn status(data: &Path) -> Value {
    fleet::read_status(data).unwrap_or(Value::Null)
}

pub fn wait(what: &str, secs: u64, cond: impl Fn() -> bool, logs: &Path) {
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

/// A switch: a bridge `br0` in a namespace of its own, whose ports are veth pairs.
pub struct Switch {
    pub ns: String,
}

impl Switch {
    pub fn new(net: &mut Net) -> Switch {
        let ns = net.add_ns("sw");
        must(&["ip", "-n", &ns, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &ns, "link", "set", "br0", "up"]);
        Switch { ns }
    }

    /// Plugs namespace `ns` into port `port` (`p<port>` on the switch's side) as device `dev`
    /// with address `ip` (/24).
    pub fn plug(&self, ns: &str, port: usize, ip: &str, dev: &str) {
        let (sw, p) = (&self.ns, format!("p{port}"));
        must(&[
            "ip", "-n", sw, "link", "add", &p, "type", "veth", "peer", "name", dev, "netns", ns,
        ]);
        must(&["ip", "-n", sw, "link", "set", &p, "master", "br0"]);
        must(&["ip", "-n", sw, "link", "set", &p, "up"]);
        must(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            dev,
        ]);
        must(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
}

/// The `nightcast` admin CLI run in namespace `ns` against the controller whose data directory
/// is `controller` and whose admin API is on that namespace's 127.0.0.1:8644; its output.
pub fn admin_in(ns: &str, controller: &Path, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(env!("CARGO_BIN_EXE_nightcast"))
        .args(["--api", "http://127.0.0.1:8644", "--token-file"])
        .arg(controller.join("admin.token"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `nightcast-controller serve` on data directory `c` in namespace `ns`, QUIC on `listen`, the admin
/// API on the namespace's 127.0.0.1:8644 (`admin_in`), without the second compression pass
/// (tests count the bytes of the import's chunks); its log in `c`'s parent. Returns once it
/// listens.
pub fn serve_controller(net: &mut Net, ns: &str, c: &Path, listen: &str, env: &[(&str, &str)]) {
    let dir = c.parent().unwrap_or(c);
    let config = dir.join("controller.toml");
    std::fs::write(&config, "[store]\ntighten_level = 0\n").unwrap();
    let i = net.spawn(
        ns,
        &crate::util::workspace_bin("nightcast-controller"),
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data",
            c.to_str().unwrap(),
            "--listen",
            listen,
            "--api",
            "127.0.0.1:8644",
        ],
        env,
        &dir.join("controller.log"),
    );
    net.first_lines(i, 2);
}
