//! A site for end-to-end tests: a controller, its WAN (a counting UDP forwarder), a relay and test
//! agents, as real processes on loopback on a shared accelerated clock (`NIGHTCAST_CLOCK`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use image_tools::clock::Clock;
use image_tools::exchange::{self, Connection, FetchOptions, FetchReport};
pub use image_tools::report::AgentReport;
use image_tools::report::Report;
use image_tools::trust::Credentials;
use image_tools::wire::{Hello, MasterRef, Role, Status, PROTOCOL_VERSION};
use image_tools::NodeId;
use image_tools::{ChunkStore, LocalStore, Manifest, PublicKey, VerifiedManifest};
use serde_json::Value;

use crate::util::{self, workspace_bin, Controller, UdpCounter};

/// Relay settings a test changes.
pub struct RelayOpts {
    pub quota: &'static str,
    pub scrub_mib: u64,
    /// More top-level lines of `relay.toml`.
    pub extra: String,
}

pub const DEFAULT_RELAY: RelayOpts = RelayOpts {
    quota: "10 GiB",
    scrub_mib: 0,
    extra: String::new(),
};

/// A controller with site `lyon` (UTC), one master `demo 1` scheduled there for 2030-01-08 08:00,
/// an enrolled relay (not started), and the WAN forwarder in front of the controller.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub controller: Option<Controller>,
    pub quic: SocketAddr,
    pub api: String,
    pub wan: UdpCounter,
    pub clock: Clock,
    pub clock_spec: String,
    pub image: Vec<u8>,
    pub manifest: Manifest,
    pub key: PublicKey,
    pub wol: UdpSocket,
}

pub struct Relay {
    pub child: Child,
    pub lan: SocketAddr,
    pub discovery: SocketAddr,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `DATA/status.json` of a relay or agent, retried for a second (it is replaced by rename);
/// `None` if it never appears.
pub fn read_status(data: &Path) -> Option<Value> {
    for _ in 0..50 {
        if let Ok(bytes) = std::fs::read(data.join("status.json")) {
            if let Ok(v) = serde_json::from_slice(&bytes) {
                return Some(v);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Polls `cond` every 50 ms for up to `secs` seconds; on timeout fails with `what`, the status and
/// the log.
pub fn wait_for<T>(
    who: &T,
    what: &str,
    secs: u64,
    cond: impl Fn(&T) -> bool,
    status: impl Fn(&T) -> Value,
    log: impl Fn(&T) -> String,
) {
    for _ in 0..secs * 20 {
        if cond(who) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "timed out waiting for {what}; status: {}\nlog:\n{}",
        status(who),
        log(who)
    );
}

impl Relay {
    pub fn status(&self) -> Value {
        read_status(&self.data)
            .unwrap_or_else(|| panic!("no status.json; log:\n{}", self.log_text()))
    }

    pub fn n(&self, field: &str) -> u64 {
        self.status()[field].as_u64().unwrap_or(0)
    }

    pub fn complete(&self) -> bool {
        self.status()["masters"]
            .as_array()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|m| m["complete"] == true))
    }

    /// It holds version `version` of the master whole.
    pub fn holds(&self, version: &str) -> bool {
        self.status()["masters"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["version"] == version && m["complete"] == true)
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (in real time) until `cond`, or fails with the status and the log.
    pub fn wait(&self, what: &str, secs: u64, cond: impl Fn(&Relay) -> bool) {
        wait_for(self, what, secs, cond, Relay::status, Relay::log_text);
    }

    pub fn kill9(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.clone()
    }

    /// Every chunk in the relay's store (only while it is stopped, or racing its writes).
    pub fn chunks(&self) -> Vec<image_tools::ChunkId> {
        LocalStore::open(&self.data.join("store"))
            .unwrap()
            .ids()
            .unwrap()
    }
}

pub fn ok(bin: &str, args: &[&str]) -> String {
    ok_on(bin, "", args)
}

/// `ok` on the clock `clock_spec` (`NIGHTCAST_CLOCK`; empty: the real one).
pub fn ok_on(bin: &str, clock_spec: &str, args: &[&str]) -> String {
    let out = Command::new(workspace_bin(bin))
        .args(args)
        .env("NIGHTCAST_CLOCK", clock_spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `bin args` on the clock `clock_spec` must fail: returns what it printed on stderr.
pub fn fails_on(bin: &str, clock_spec: &str, args: &[&str]) -> String {
    let out = Command::new(workspace_bin(bin))
        .args(args)
        .env("NIGHTCAST_CLOCK", clock_spec)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{bin} {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

impl Fleet {
    pub fn new(windows: &str, cap_mbit: u64, image_mib: u64, clock: &str) -> Fleet {
        Fleet::build(
            windows,
            cap_mbit,
            image_mib,
            clock,
            "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n",
            "",
        )
    }

    /// A fleet with `calendar` (CSV rows without the header, may be empty) and extra controller
    /// configuration (TOML).
    pub fn build(
        windows: &str,
        cap_mbit: u64,
        image_mib: u64,
        clock: &str,
        calendar: &str,
        controller_toml: &str,
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("controller");
        let cs = c.to_str().unwrap().to_owned();
        ok("nightcast-controller", &["init", "--data", &cs]);
        let clock = Clock::parse_now(clock).unwrap();
        let clock_spec = clock.spec();
        let config = dir.path().join("controller.toml");
        // The second compression pass (on by default) costs seconds of CPU per controller: off
        // unless the test is about it (`[store]` given), so that some fifty tests running side by
        // side on two cores keep their timings (tighten.rs and the netns fleet run it).
        let controller_toml = if controller_toml.contains("[store]") {
            controller_toml.to_owned()
        } else {
            format!("{controller_toml}\n[store]\ntighten_level = 0\n")
        };
        std::fs::write(&config, controller_toml).unwrap();
        let controller =
            Controller::start_full(&c, &[("NIGHTCAST_CLOCK", &clock_spec)], Some(&config));
        let quic: SocketAddr = controller.quic.parse().unwrap();
        let api = controller.api.clone();
        let wan = UdpCounter::start(quic);
        let image = image_tools::testimage::image_bytes(image_mib << 20, 11);
        let img = dir.path().join("master.img");
        image_tools::testimage::write_sparse(&img, &image).unwrap();
        let mpath = dir.path().join("demo-1.manifest");
        util::build_master(&c, &img, "demo", "1", &mpath);
        ok(
            "nightcast-controller",
            &["master-add", "--data", &cs, mpath.to_str().unwrap()],
        );
        let key = PublicKey::load(&c.join("signing.key.pub")).unwrap();
        let manifest = VerifiedManifest::open(std::fs::read(&mpath).unwrap(), &key)
            .unwrap()
            .manifest()
            .clone();
        let wol = UdpSocket::bind("127.0.0.1:0").unwrap();
        wol.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let fleet = Fleet {
            dir,
            controller: Some(controller),
            quic,
            api,
            wan,
            clock,
            clock_spec,
            image,
            manifest,
            key,
            wol,
        };
        fleet.nightcast(&[
            "site",
            "add",
            "lyon",
            "--tz",
            "UTC",
            "--windows",
            windows,
            "--cap-mbit",
            &cap_mbit.to_string(),
        ]);
        fleet.nightcast(&["room", "add", "lyon", "salle-1"]);
        // The DSI lets the site's new NUCs in by themselves (they enrol through the relay).
        fleet.nightcast(&["site", "accept-new", "lyon", "--for", "7d"]);
        if !calendar.is_empty() {
            fleet.calendar(calendar);
        }
        let token = fleet.nightcast(&["enroll", "--role", "relay", "--site", "lyon"]);
        ok_on(
            "nightcast-relay",
            &fleet.clock_spec,
            &[
                "enroll",
                "--controller",
                &fleet.quic.to_string(),
                "--token",
                token.trim(),
                "--node-id",
                "relay-1",
                "--data",
                fleet.relay_data().to_str().unwrap(),
            ],
        );
        fleet
    }

    /// Imports calendar rows (`site,room,master,version,start,end`, without the header).
    pub fn calendar(&self, rows: &str) {
        let calendar = self.dir.path().join("term.csv");
        std::fs::write(
            &calendar,
            format!("site,room,master,version,start,end\n{rows}"),
        )
        .unwrap();
        self.nightcast(&["calendar", "import", calendar.to_str().unwrap()]);
    }

    /// Builds `image` as `demo VERSION` into the controller and registers it.
    pub fn add_master(&self, version: &str, image: &[u8]) -> Manifest {
        let c = self.dir.path().join("controller");
        let img = self.dir.path().join(format!("master-{version}.img"));
        image_tools::testimage::write_sparse(&img, image).unwrap();
        let mpath = self.dir.path().join(format!("demo-{version}.manifest"));
        util::build_master(&c, &img, "demo", version, &mpath);
        ok(
            "nightcast-controller",
            &[
                "master-add",
                "--data",
                c.to_str().unwrap(),
                mpath.to_str().unwrap(),
            ],
        );
        // Signed by the controller's key of the moment (a test may have rotated it).
        let key = PublicKey::load(&c.join("signing.key.pub")).unwrap();
        VerifiedManifest::open(std::fs::read(&mpath).unwrap(), &key)
            .unwrap()
            .manifest()
            .clone()
    }

    /// Starts `nightcast-agent run` for NUC `node`, with nothing but a data directory and where
    /// to ask for its relay (it enrols through the relay, which vouches for it).
    pub fn agent_process(&self, node: &str, relay: &Relay) -> AgentProc {
        self.agent_process_with(node, relay, "")
    }

    /// The same with extra configuration lines (TOML).
    pub fn agent_process_with(&self, node: &str, relay: &Relay, extra: &str) -> AgentProc {
        self.agent_process_on(node, relay, "fake", extra)
    }

    /// The same with the hypervisor `hypervisor` (`fake` or `qemu`).
    pub fn agent_process_on(
        &self,
        node: &str,
        relay: &Relay,
        hypervisor: &str,
        extra: &str,
    ) -> AgentProc {
        let data = self.dir.path().join(format!("agent-{node}"));
        std::fs::create_dir_all(&data).unwrap();
        let config = data.with_extension("toml");
        // Several agents on one host: each serves its peers on a port of its own.
        let extra = if extra.contains("peer_listen") {
            extra.to_owned()
        } else {
            format!("peer_listen = \"127.0.0.1:0\"\n{extra}")
        };
        std::fs::write(
            &config,
            format!(
                "data = \"{}\"\ndiscovery = \"{}\"\nnode_id = \"{node}\"\nhypervisor = \"{hypervisor}\"\n\
                 poll_secs = 1\nend_of_day = \"23:59\"\n{extra}",
                data.display(),
                relay.discovery
            ),
        )
        .unwrap();
        AgentProc::start(&config, &data, &self.clock_spec)
    }

    /// An agent process for `node`, enrolled through `relay` and put at seat `seat` of salle-1 by
    /// the DSI (the seat must exist).
    pub fn seated_agent(&self, node: &str, seat: &str, relay: &Relay, extra: &str) -> AgentProc {
        self.seated_agent_on(node, seat, relay, "fake", extra)
    }

    /// The same with the hypervisor `hypervisor` (`fake` or `qemu`).
    pub fn seated_agent_on(
        &self,
        node: &str,
        seat: &str,
        relay: &Relay,
        hypervisor: &str,
        extra: &str,
    ) -> AgentProc {
        let agent = self.agent_process_on(node, relay, hypervisor, extra);
        agent.wait(&format!("{node} to enrol"), 20, |a| a.s("site") == "lyon");
        self.nightcast(&["seat", "assign", "lyon", "salle-1", seat, node]);
        agent
    }

    pub fn relay_data(&self) -> PathBuf {
        self.dir.path().join("relay")
    }

    pub fn nightcast(&self, args: &[&str]) -> String {
        let token = self.dir.path().join("controller/admin.token");
        let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
            .args(["--api", &self.api, "--token-file", token.to_str().unwrap()])
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

    /// `nightcast fleet` once it shows `needle` (asked every 200 ms, in real time, for up to
    /// `secs`), else its last answer.
    pub fn fleet_showing(&self, needle: &str, secs: u64) -> String {
        let mut fleet = String::new();
        for _ in 0..secs * 5 {
            fleet = self.nightcast(&["fleet"]);
            if fleet.contains(needle) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        fleet
    }

    /// Starts `nightcast-relay run` with a config file, on the fleet's clock.
    pub fn relay(&self, opts: &RelayOpts) -> Relay {
        let data = self.relay_data();
        let config = self.dir.path().join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "controller = \"{}\"\ndata = \"{}\"\nlisten = \"127.0.0.1:0\"\ndiscovery = \"127.0.0.1:0\"\nquota = \"{}\"\n\
                 poll_secs = 1\nreconnect_max_secs = 1\n{}\n\
                 [scrub]\nmib_per_sec = {}\nevery_hours = 0.0003\n\
                 [wake_on_lan]\ntarget = \"{}\"\ngrace_minutes = 1\n",
                self.wan.addr,
                data.display(),
                opts.quota,
                opts.extra,
                opts.scrub_mib,
                self.wol.local_addr().unwrap()
            ),
        )
        .unwrap();
        let log = self.dir.path().join(format!(
            "relay-{}.log",
            std::fs::read_dir(self.dir.path()).unwrap().count()
        ));
        let mut child = Command::new(workspace_bin("nightcast-relay"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("NIGHTCAST_CLOCK", &self.clock_spec)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let mut second = String::new();
        out.read_line(&mut second).unwrap();
        let discovery: SocketAddr = second
            .trim()
            .strip_prefix("answering discovery on ")
            .unwrap_or_else(|| panic!("{second:?}"))
            .parse()
            .unwrap();
        let lan = line
            .trim()
            .strip_prefix("serving the LAN on ")
            .unwrap_or_else(|| {
                panic!(
                    "{line:?}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .parse()
            .unwrap();
        Relay {
            child,
            lan,
            discovery,
            data,
            log,
        }
    }

    pub fn stored_bytes(&self) -> u64 {
        self.manifest.summary().unique_stored_bytes
    }

    pub fn stop_controller(&mut self) {
        self.controller = None;
    }

    pub fn start_controller(&mut self) {
        let c = Controller::start_with(
            &self.dir.path().join("controller"),
            &[("NIGHTCAST_CLOCK", &self.clock_spec)],
        );
        self.quic = c.quic.parse().unwrap();
        self.api = c.api.clone();
        self.wan.set_upstream(self.quic);
        self.controller = Some(c);
    }

    /// A NUC's agent of site lyon, enrolled directly with the controller (the agent issue adds
    /// enrolment through the relay).
    pub fn agent(&self, node: &str) -> Agent {
        self.enrolled(Role::Agent, node)
    }

    /// A node of site lyon in `role`, enrolled directly with the controller, run in the test.
    pub fn enrolled(&self, role: Role, node: &str) -> Agent {
        let word = match role {
            Role::Relay => "relay",
            _ => "agent",
        };
        let token = self.nightcast(&["enroll", "--role", word, "--site", "lyon"]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (creds, key) = rt
            .block_on(exchange::enroll(
                self.quic,
                token.trim(),
                role,
                node,
                self.clock,
            ))
            .unwrap();
        assert_eq!(key.key, self.key);
        Agent {
            node: node.to_owned(),
            creds,
            rt,
            clock: self.clock,
        }
    }
}

pub struct Agent {
    pub node: String,
    pub creds: Credentials,
    pub rt: tokio::runtime::Runtime,
    pub clock: Clock,
}

impl Agent {
    pub async fn connect(&self, relay: SocketAddr) -> (quinn::Endpoint, Connection) {
        let endpoint = exchange::client_endpoint().unwrap();
        let tls = self
            .creds
            .client_config(
                image_tools::trust::Expect::RelayOf(image_tools::SiteId::new("lyon").unwrap()),
                self.clock,
            )
            .unwrap();
        let conn = Connection::connect(&endpoint, relay, tls).await.unwrap();
        conn.hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: "test".into(),
            role: Role::Agent,
            node_id: self.node.clone(),
            capabilities: vec![],
        })
        .await
        .unwrap();
        (endpoint, conn)
    }

    /// Fetches `demo 1` from the relay into a fresh store: the manifest (verified with the key the
    /// agent pinned) and every chunk.
    pub fn fetch(&self, relay: SocketAddr, key: &PublicKey) -> (FetchReport, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
        let report = self.rt.block_on(async {
            let (endpoint, conn) = self.connect(relay).await;
            let bytes = conn.manifest(&demo()).await.unwrap();
            let manifest = VerifiedManifest::open(bytes, key).unwrap();
            let report = exchange::fetch_missing(
                &conn,
                store,
                &manifest,
                FetchOptions::default(),
                None,
                &|_| {},
            )
            .await
            .unwrap();
            conn.close();
            endpoint.wait_idle().await;
            report
        });
        (report, dir)
    }

    pub fn report(&self, relay: SocketAddr, report: AgentReport) {
        self.rt.block_on(async {
            let (endpoint, conn) = self.connect(relay).await;
            conn.report(Status {
                node_id: NodeId::new(&self.node).unwrap(),
                software: "test".into(),
                holding: vec![],
                report: Report::Agent(report),
            })
            .await
            .unwrap();
            conn.close();
            endpoint.wait_idle().await;
        });
    }
}

pub fn demo() -> MasterRef {
    MasterRef::new("demo", "1").unwrap()
}

pub fn at(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// Sleeps (real time) until the fleet's clock shows `t`.
pub fn until(f: &Fleet, t: &str) {
    std::thread::sleep(f.clock.real_until(at(t)));
}

/// Stored bytes of the chunks of `new` that `old` lacks: what a site holding `old` downloads.
pub fn new_chunk_bytes(old: &Manifest, new: &Manifest) -> u64 {
    let had: std::collections::HashSet<_> = old.unique_chunks().iter().map(|c| c.id).collect();
    new.unique_chunks()
        .iter()
        .filter(|c| !had.contains(&c.id))
        .map(|c| u64::from(c.stored_len))
        .sum()
}

pub fn assemble_matches(f: &Fleet, store_dir: &Path) {
    assemble_version_matches(f, store_dir, "1", &f.image);
}

/// Assembles version `version` of master demo (its manifest as `add_master` or `build` wrote it)
/// from the store at `store_dir` and checks it is `image`, bit for bit.
pub fn assemble_version_matches(f: &Fleet, store_dir: &Path, version: &str, image: &[u8]) {
    let m = f.dir.path().join("check.manifest");
    let out = f.dir.path().join("check.img");
    let _ = std::fs::remove_file(&out);
    std::fs::copy(f.dir.path().join(format!("demo-{version}.manifest")), &m).unwrap();
    ok(
        "nightcast-image",
        &[
            "assemble",
            "--store",
            store_dir.to_str().unwrap(),
            "--pubkey",
            f.dir
                .path()
                .join("controller/signing.key.pub")
                .to_str()
                .unwrap(),
            m.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert!(
        std::fs::read(&out).unwrap() == image,
        "assembled version {version} differs"
    );
}

/// Flips one byte in the middle of a chunk file, as a failing disk would.
pub fn corrupt(store: &Path, id: &image_tools::ChunkId) {
    let hex = id.to_string();
    let path = store.join("chunks").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
}

pub use image_tools::testdisk::SmallDisk;

/// A `nightcast-agent run` process, killed when dropped.
pub struct AgentProc {
    pub child: Child,
    pub config: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    pub clock_spec: String,
}

impl AgentProc {
    pub fn start(config: &Path, data: &Path, clock_spec: &str) -> AgentProc {
        let log = data.with_extension("log");
        let child = Command::new(workspace_bin("nightcast-agent"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("NIGHTCAST_CLOCK", clock_spec)
            .env("RUST_LOG", "info")
            // Its own process group, killed whole (`kill_all`) as systemd kills the unit's
            // control group: a VM it started does not outlive it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        AgentProc {
            child,
            config: config.to_owned(),
            data: data.to_owned(),
            log,
            clock_spec: clock_spec.to_owned(),
        }
    }

    /// kill -9, then the same agent started again.
    pub fn restart_after_kill9(mut self) -> AgentProc {
        self.kill9();
        AgentProc::start(&self.config, &self.data, &self.clock_spec)
    }

    /// kill -9 of the agent and of what it started (its VM): a power cut.
    pub fn kill9(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn status(&self) -> Value {
        read_status(&self.data).unwrap_or(Value::Null)
    }

    pub fn s(&self, field: &str) -> String {
        match &self.status()[field] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    pub fn n(&self, field: &str) -> u64 {
        self.status()[field].as_u64().unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (in real time) until `cond`, or fails with the status and the log.
    pub fn wait(&self, what: &str, secs: u64, cond: impl Fn(&AgentProc) -> bool) {
        wait_for(
            self,
            what,
            secs,
            cond,
            AgentProc::status,
            AgentProc::log_text,
        );
    }

    pub fn overlay(&self) -> PathBuf {
        self.data.join("vm/overlay.qcow2")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
