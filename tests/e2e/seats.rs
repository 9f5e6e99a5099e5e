//! Seats and spare takeover against a real controller on an accelerated clock: the DSI lays out a
//! room and binds NUCs with `nightcast seat assign`; agents' reports reach the controller the way a
//! relay forwards them; a NUC goes silent and the site's spare takes its seat by itself (one silent
//! seat) or waits for the DSI's `nightcast seat replace` (two), and the relay's plan follows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::{workspace_bin, Controller};
use image_tools::exchange::{self, Connection};
use image_tools::report::{AgentReport, Report};
use image_tools::wire::{Hello, Role, SitePlan, Status, PROTOCOL_VERSION};
use image_tools::NodeId;

/// 600 s per real second: the default `silent_after_minutes = 30` passes in 3 s.
const SPEED: f64 = 600.0;
/// Real time after which a NUC not heard from is silent, with some room.
const SILENT: Duration = Duration::from_millis(3_600);

struct Site {
    _dir: tempfile::TempDir,
    data: PathBuf,
    controller: Controller,
    clock: image_tools::clock::Clock,
}

impl Site {
    /// A controller on the fast clock, with site lyon (takeover `auto`, the default), room
    /// salle-1 and `seats`.
    fn start(seats: &[&str]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("controller");
        let init = Command::new(workspace_bin("nightcast-controller"))
            .args(["init", "--data", data.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(init.status.success());
        let clock = image_tools::clock::Clock::parse_now(&format!(
            "start=2030-01-07T12:00:00Z speed={SPEED}"
        ))
        .unwrap();
        let controller = Controller::start_with(&data, &[("NIGHTCAST_CLOCK", &clock.spec())]);
        let site = Site {
            _dir: dir,
            data,
            controller,
            clock,
        };
        site.ok(&[
            "site",
            "add",
            "lyon",
            "--tz",
            "Europe/Paris",
            "--cap-mbit",
            "20",
        ]);
        site.ok(&["site", "accept-new", "lyon", "--for", "7d"]);
        site.ok(&["room", "add", "lyon", "salle-1"]);
        for seat in seats {
            site.ok(&["seat", "add", "lyon", "salle-1", seat]);
        }
        site
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
            .args([
                "--api",
                &self.controller.api,
                "--token-file",
                self.data.join("admin.token").to_str().unwrap(),
            ])
            .args(args)
            .env_remove("NIGHTCAST_TOKEN")
            .output()
            .unwrap();
        assert_ne!(
            out.status.code(),
            Some(101),
            "panicked: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(&[&["--json"], args].concat())).unwrap()
    }

    /// `fleet --json`'s row of `node`.
    fn fleet_row(&self, node: &str) -> serde_json::Value {
        let fleet = self.json(&["fleet"]);
        fleet
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == node)
            .unwrap_or_else(|| panic!("{node} not in {fleet:#}"))
            .clone()
    }

    /// `seat list --json`: (seat, node or "", silent) per seat.
    fn seats(&self) -> Vec<(String, String, bool)> {
        self.json(&["seat", "list", "--site", "lyon"])["seats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["seat"].as_str().unwrap().to_owned(),
                    s["node"].as_str().unwrap_or("").to_owned(),
                    s["silent"].as_bool().unwrap(),
                )
            })
            .collect()
    }
}

/// A relay of lyon, enrolled and connected as `relay-1`, forwarding its agents' reports.
struct Relay {
    runtime: tokio::runtime::Runtime,
    conn: Connection,
    _endpoint: quinn::Endpoint,
    enrolled: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Relay {
    fn connect(site: &Site) -> Relay {
        let token = site.ok(&["enroll", "--role", "relay", "--site", "lyon"]);
        let addr: SocketAddr = site.controller.quic.parse().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (conn, endpoint) = runtime.block_on(async {
            let (creds, _key) =
                exchange::enroll(addr, token.trim(), Role::Relay, "relay-1", site.clock)
                    .await
                    .unwrap();
            let endpoint = exchange::client_endpoint().unwrap();
            let tls = creds
                .client_config(image_tools::trust::Expect::Controller, site.clock)
                .unwrap();
            let conn = Connection::connect(&endpoint, addr, tls).await.unwrap();
            conn.hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                software_version: "test".into(),
                role: Role::Relay,
                node_id: "relay-1".into(),
                capabilities: vec![],
            })
            .await
            .unwrap();
            (conn, endpoint)
        });
        Relay {
            runtime,
            conn,
            _endpoint: endpoint,
            enrolled: Default::default(),
        }
    }

    /// Forwards a report of agent `node`, as a relay does; the first time, passes on its
    /// enrolment (the site lets new NUCs in).
    fn report(&self, node: &str) {
        if self.enrolled.lock().unwrap().insert(node.to_owned()) {
            let (_, public) = image_tools::trust::node_key().unwrap();
            let _ = self
                .runtime
                .block_on(self.conn.enroll(exchange::EnrollRequest {
                    token: String::new(),
                    role: Role::Agent,
                    node_id: node.into(),
                    public_key: public,
                    mac: String::new(),
                    renewal: false,
                }));
        }
        self.runtime
            .block_on(self.conn.report(Status {
                node_id: NodeId::new(node).unwrap(),
                software: "test".into(),
                holding: vec![],
                report: Report::Agent(AgentReport::default()),
            }))
            .unwrap();
    }

    fn plan(&self) -> SitePlan {
        self.runtime.block_on(self.conn.plan()).unwrap()
    }

    /// The plan's bindings as (seat, node), once `want` holds (the catalogue reloads in the
    /// background), or a panic after 10 s.
    fn plan_seats_when(&self, want: &[(&str, &str)]) -> Vec<(String, String)> {
        let wanted: Vec<(String, String)> = want
            .iter()
            .map(|(s, n)| (s.to_string(), n.to_string()))
            .collect();
        let mut seats = Vec::new();
        for _ in 0..100 {
            seats = self
                .plan()
                .seats
                .into_iter()
                .map(|b| {
                    assert_eq!(b.room, "salle-1");
                    (b.seat, b.node)
                })
                .collect();
            if seats == wanted {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        seats
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn seat(name: &str, node: &str, silent: bool) -> (String, String, bool) {
    (name.to_owned(), node.to_owned(), silent)
}

/// The DSI binds `nodes` to `seats` in order (they have reported already), then they report again.
fn seat_all(site: &Site, relay: &Relay, binds: &[(&str, &str)]) {
    for (seat, node) in binds {
        let out = site.ok(&["seat", "assign", "lyon", "salle-1", seat, node]);
        assert!(
            out.contains(&format!("{node} now sits at lyon salle-1/{seat}")),
            "{out}"
        );
    }
    for (_, node) in binds {
        relay.report(node);
    }
}

#[test]
fn a_spare_takes_over_the_one_silent_seat_and_the_relay_plan_carries_it() {
    let site = Site::start(&["pc-1", "pc-2"]);
    assert!(site.ok(&["site", "list"]).contains("auto"));
    let relay = Relay::connect(&site);

    // Two NUCs appear through the relay: spares until the DSI seats them.
    relay.report("nuc-a");
    relay.report("nuc-b");
    assert_eq!(site.fleet_row("nuc-a")["seat"], "spare");
    assert_eq!(site.fleet_row("nuc-a")["role"], "agent");
    // (A report naming a node id that is not one does not even decode: `image_tools::report`.)
    // Nothing to bind to a seat that does not exist, nor a node nobody has heard of.
    assert!(site
        .err(&["seat", "assign", "lyon", "salle-1", "pc-9", "nuc-a"])
        .contains("no seat salle-1/pc-9"));
    assert!(site
        .err(&["seat", "assign", "lyon", "salle-1", "pc-1", "nuc-zz"])
        .contains("no agent \"nuc-zz\""));
    seat_all(&site, &relay, &[("pc-1", "nuc-a"), ("pc-2", "nuc-b")]);
    assert_eq!(
        site.seats(),
        vec![seat("pc-1", "nuc-a", false), seat("pc-2", "nuc-b", false)]
    );
    assert_eq!(site.fleet_row("nuc-b")["seat"], "salle-1/pc-2");
    assert_eq!(
        relay.plan_seats_when(&[("pc-1", "nuc-a"), ("pc-2", "nuc-b")]),
        pairs(&[("pc-1", "nuc-a"), ("pc-2", "nuc-b")])
    );

    // nuc-b dies. Over half an hour later only nuc-a still reports; pc-2 is silent.
    std::thread::sleep(SILENT);
    relay.report("nuc-a");
    assert_eq!(
        site.seats(),
        vec![seat("pc-1", "nuc-a", false), seat("pc-2", "nuc-b", true)]
    );
    let list = site.ok(&["seat", "list"]);
    assert!(list.contains("silent"), "{list}");

    // The on-site staff power on the spare: it takes pc-2 by itself.
    relay.report("nuc-s");
    assert_eq!(
        site.seats(),
        vec![seat("pc-1", "nuc-a", false), seat("pc-2", "nuc-s", false)]
    );
    let list = site.ok(&["seat", "list", "--site", "lyon"]);
    assert!(list.contains("nuc-s") && list.contains("nuc-b"), "{list}");
    assert_eq!(site.fleet_row("nuc-s")["seat"], "salle-1/pc-2");
    assert_eq!(site.fleet_row("nuc-b")["seat"], "spare");
    let fleet = site.ok(&["fleet"]);
    assert!(fleet.contains("salle-1/pc-2"), "{fleet}");
    assert_eq!(
        relay.plan_seats_when(&[("pc-1", "nuc-a"), ("pc-2", "nuc-s")]),
        pairs(&[("pc-1", "nuc-a"), ("pc-2", "nuc-s")])
    );

    // If nuc-b comes back it is a spare: nothing moves.
    relay.report("nuc-b");
    assert_eq!(
        site.seats(),
        vec![seat("pc-1", "nuc-a", false), seat("pc-2", "nuc-s", false)]
    );
}

#[test]
fn with_two_silent_seats_the_spare_waits_until_the_dsi_replaces() {
    let site = Site::start(&["pc-1", "pc-2", "pc-3"]);
    let relay = Relay::connect(&site);
    for node in ["nuc-a", "nuc-b", "nuc-c"] {
        relay.report(node);
    }
    seat_all(
        &site,
        &relay,
        &[("pc-1", "nuc-a"), ("pc-2", "nuc-b"), ("pc-3", "nuc-c")],
    );

    // nuc-b and nuc-c go silent; the spare appears.
    std::thread::sleep(SILENT);
    relay.report("nuc-a");
    relay.report("nuc-s");
    assert_eq!(
        site.seats(),
        vec![
            seat("pc-1", "nuc-a", false),
            seat("pc-2", "nuc-b", true),
            seat("pc-3", "nuc-c", true)
        ]
    );
    let row = site.fleet_row("nuc-s");
    assert_eq!(row["seat"], "spare");
    let attention = row["attention"].as_str().unwrap();
    assert!(
        attention.contains("waits for the DSI")
            && attention.contains("2 seats are silent")
            && attention.contains("salle-1/pc-2")
            && attention.contains("salle-1/pc-3")
            && attention.contains("nightcast seat replace lyon salle-1 pc-2 --with nuc-s"),
        "{attention}"
    );
    let fleet = site.ok(&["fleet"]);
    assert!(
        fleet.contains("spare") && fleet.contains("2 seats are silent"),
        "{fleet}"
    );

    // The DSI confirms: nuc-s takes pc-2.
    let out = site.ok(&[
        "seat", "replace", "lyon", "salle-1", "pc-2", "--with", "nuc-s",
    ]);
    assert!(out.contains("replacing nuc-b"), "{out}");
    assert_eq!(
        site.seats(),
        vec![
            seat("pc-1", "nuc-a", false),
            seat("pc-2", "nuc-s", false),
            seat("pc-3", "nuc-c", true)
        ]
    );
    // A seated NUC is no spare to replace with.
    assert!(site
        .err(&["seat", "replace", "lyon", "salle-1", "pc-3", "--with", "nuc-s"])
        .contains("not a spare"));
    assert_eq!(
        relay.plan_seats_when(&[("pc-1", "nuc-a"), ("pc-2", "nuc-s"), ("pc-3", "nuc-c")]),
        pairs(&[("pc-1", "nuc-a"), ("pc-2", "nuc-s"), ("pc-3", "nuc-c")])
    );
}
