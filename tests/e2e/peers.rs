//! Peer sharing inside a site, with real agents on loopback: a room fills itself from about one
//! copy of the relay's, a peer that serves altered chunks is dropped and named, an agent of another
//! site is refused at the handshake, a NUC in a session serves nothing, and a room whose relay is
//! killed mid-fill finishes from its peers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use image_tools::exchange::{self, Connection, ExchangeError, FetchOptions};
use image_tools::trust::{Admit, Expect};
use image_tools::wire::{ErrorCode, Hello, Role, Status};
use image_tools::{ChunkStore, LocalStore, NodeId, SiteId};

use crate::fleet::*;

fn lyon() -> SiteId {
    SiteId::new("lyon").unwrap()
}

/// `start`..`end` of a session `minutes` from the fleet's now, in the calendar's words (UTC,
/// whole minutes).
pub(crate) fn session_from_now(f: &Fleet, minutes: i64, length: i64) -> String {
    let start = (f.clock.now() / 60 + 1 + minutes) * 60;
    let fmt = |t: i64| {
        jiff::Timestamp::from_second(t)
            .unwrap()
            .strftime("%Y-%m-%d %H:%M")
            .to_string()
    };
    format!(
        "lyon,salle-1,demo,1,{},{}\n",
        fmt(start),
        fmt(start + length * 60)
    )
}

pub(crate) fn ready(a: &AgentProc) -> bool {
    a.s("current") == "demo 1" || (a.s("next") == "demo 1" && a.s("next_state") == "ready")
}

/// `n` agents seated in salle-1 (configuration lines `extra`), each serving its peers.
fn seat_room(f: &Fleet, relay: &Relay, n: usize, extra: &str) -> Vec<AgentProc> {
    let agents: Vec<AgentProc> = (1..=n)
        .map(|i| {
            f.nightcast(&["seat", "add", "lyon", "salle-1", &format!("pc-{i}")]);
            f.seated_agent(&format!("nuc-{i}"), &format!("pc-{i}"), relay, extra)
        })
        .collect();
    for a in &agents {
        a.wait("the agent to serve its peers", 20, |a| {
            !a.s("peer_listen").is_empty()
        });
    }
    agents
}

/// Every agent's `demo 1` image is the master, byte for byte.
fn assert_images(f: &Fleet, agents: &[AgentProc]) {
    for a in agents {
        let s = a.status();
        let version_dir = std::fs::read_dir(a.data.join("slots/v"))
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with("demo@1"))
            .unwrap_or_else(|| panic!("no demo 1 slot: {s}"));
        let image = std::fs::read(version_dir.path().join("master.img")).unwrap();
        assert!(image == f.image, "{} holds another image", a.s("node"));
    }
}

/// A peer that claims to hold everything and serves other bytes: an enrolled agent of the site
/// gone bad (its certificate is genuine).
fn start_rogue(agent: &Agent) -> SocketAddr {
    crate::rogue::start(agent, Role::Agent, Admit::AgentsOf(lyon()))
}

/// Tells the relay, as `agent`, that it serves peers on `port` and holds `demo 1`.
fn announce(agent: &Agent, relay: SocketAddr, port: u16) {
    agent.rt.block_on(async {
        let endpoint = exchange::client_endpoint().unwrap();
        let tls = agent
            .creds
            .client_config(Expect::RelayOf(lyon()), agent.clock)
            .unwrap();
        let conn = Connection::connect(&endpoint, relay, tls).await.unwrap();
        let node = NodeId::new(&agent.node).unwrap();
        conn.hello(Hello::new(Role::Agent, &node).with_peer_port(port))
            .await
            .unwrap();
        conn.report(Status {
            node_id: node,
            software: "test".into(),
            holding: vec![demo()],
            report: image_tools::report::Report::Agent(AgentReport::default()),
        })
        .await
        .unwrap();
        conn.close();
        endpoint.wait_idle().await;
    });
}

/// Connects to the agent serving at `addr`, as `probe`, and runs `then` on the connection.
pub(crate) fn as_peer<T>(
    f: &Fleet,
    probe: &Agent,
    addr: SocketAddr,
    then: impl AsyncFnOnce(&Connection) -> T,
) -> T {
    probe.rt.block_on(async {
        let endpoint = exchange::client_endpoint().unwrap();
        let tls = probe
            .creds
            .client_config(Expect::AgentOf(lyon()), f.clock)
            .unwrap();
        let conn = Connection::connect(&endpoint, addr, tls).await.unwrap();
        assert_eq!(conn.peer(), "agent lyon/nuc-1");
        conn.hello(Hello::new(Role::Agent, &NodeId::new(&probe.node).unwrap()))
            .await
            .unwrap();
        let out = then(&conn).await;
        conn.close();
        out
    })
}

/// Which of `ids` the agent serving at `addr` offers `probe`.
fn offered(f: &Fleet, probe: &Agent, addr: SocketAddr, ids: &[image_tools::ChunkId]) -> Vec<bool> {
    as_peer(f, probe, addr, async |conn| conn.has(ids).await.unwrap())
}

/// `probe` fetches `wants` from the agent serving at `addr` into `store`.
fn fetch_from(
    f: &Fleet,
    probe: &Agent,
    addr: SocketAddr,
    store: &Arc<LocalStore>,
    wants: Vec<(image_tools::ChunkId, u32)>,
) -> Result<exchange::FetchReport, ExchangeError> {
    as_peer(f, probe, addr, async |conn| {
        exchange::fetch_these(
            conn,
            store.clone(),
            wants,
            FetchOptions::default(),
            None,
            &|_| {},
        )
        .await
    })
}

/// A fleet on an accelerated clock (6x) with an 8 MiB `demo 1`, and one NUC, `nuc-1`, seated
/// at salle-1/pc-1 and serving its peers.
fn one_nuc() -> (Fleet, Relay, AgentProc) {
    one_nuc_with(8)
}

/// The same with an `image_mib` MiB `demo 1`.
pub(crate) fn one_nuc_with(image_mib: u64) -> (Fleet, Relay, AgentProc) {
    let f = Fleet::build(
        "00:00-23:59",
        1000,
        image_mib,
        "start=2030-01-08T06:00:00Z speed=6",
        "",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.seated_agent("nuc-1", "pc-1", &relay, "");
    (f, relay, nuc)
}

/// The ids of `demo 1`'s distinct chunks, with their stored lengths.
pub(crate) fn demo_chunks(f: &Fleet) -> Vec<(image_tools::ChunkId, u32)> {
    let chunks = f.manifest.unique_chunks();
    chunks.iter().map(|c| (c.id, c.stored_len)).collect()
}

/// `n` agents of salle-1 fetch `demo 1` at once (and, with `rogue`, a lying peer is listed by the
/// relay as holding it): returns the relay's bytes served over the master's stored size, and the
/// agents.
fn room_fill(n: usize, image_mib: u64, rogue: bool) -> (f64, Fleet, Relay, Vec<AgentProc>) {
    let f = Fleet::build(
        "00:00-23:59",
        1000,
        image_mib,
        "start=2030-01-08T06:00:00Z speed=1",
        "",
        "",
    );
    let relay = f.relay(&DEFAULT_RELAY);
    let agents = seat_room(&f, &relay, n, "peer_patience_secs = 30\n");
    if rogue {
        let bad = f.agent("nuc-rogue");
        let addr = start_rogue(&bad);
        announce(&bad, relay.lan, addr.port());
        // Kept serving for the whole test.
        std::mem::forget(bad);
    }
    // The session is tomorrow: every NUC of the room prepares demo 1 now, at the same time.
    f.calendar("lyon,salle-1,demo,1,2030-01-09 08:00,2030-01-09 17:00\n");
    for a in &agents {
        a.wait("demo 1 to be ready", 120, ready);
    }
    let served = relay.n("served_bytes");
    let ratio = served as f64 / f.stored_bytes() as f64;
    let peer: u64 = agents.iter().map(|a| a.n("peer_bytes")).sum();
    eprintln!(
        "{n} agents, {image_mib} MiB image: the relay served {served} bytes = {ratio:.2} x the \
         master's {} stored bytes; peers gave {peer} bytes",
        f.stored_bytes()
    );
    (ratio, f, relay, agents)
}

#[test]
fn a_room_fills_itself_from_about_one_copy_and_a_lying_peer_is_dropped() {
    let (ratio, f, _relay, agents) = room_fill(4, 24, true);
    // Unicast would be 4 copies; each NUC fetched its quarter from the relay, the rest from peers.
    assert!(ratio < 2.0, "the relay served {ratio:.2} copies for 4 NUCs");
    for a in &agents {
        assert!(
            a.n("peer_chunks") > 0,
            "{} took nothing from its peers: {}",
            a.s("node"),
            a.status()
        );
    }
    // The rogue peer was caught by its chunks' ids, dropped, and named; every master verified.
    let named: Vec<&AgentProc> = agents
        .iter()
        .filter(|a| a.s("bad_peers").contains("nuc-rogue"))
        .collect();
    assert!(
        !named.is_empty(),
        "nobody caught the rogue peer: {}",
        agents
            .iter()
            .flat_map(|a| a
                .log_text()
                .lines()
                .filter(|l| l.contains("peer"))
                .map(str::to_owned)
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for a in &agents {
        assert!(!a.log_text().contains("REFUSED"), "{}", a.log_text());
    }
    wait_for(
        &f,
        "fleet to name the rogue peer",
        30,
        |f| f.nightcast(&["fleet"]).contains("PEER nuc-rogue"),
        |f| serde_json::Value::String(f.nightcast(&["fleet"])),
        |_| String::new(),
    );
    // Every image is the master, byte for byte (assembly verified every chunk as well).
    assert_images(&f, &agents);
}

#[test]
fn an_agent_of_another_site_is_refused_and_a_nuc_in_session_serves_nothing() {
    let (f, _relay, nuc) = one_nuc();
    // A session in a few (accelerated) minutes: demo 1 is prepared before it.
    f.calendar(&session_from_now(&f, 3, 60));
    nuc.wait("demo 1 to be ready", 60, ready);
    assert!(nuc.s("session").is_empty(), "the session started too early");
    let peer_addr: SocketAddr = nuc.s("peer_listen").parse().unwrap();
    let all = demo_chunks(&f);
    let ids: Vec<image_tools::ChunkId> = all.iter().map(|(id, _)| *id).collect();
    let wants = all[..8].to_vec();

    // Another agent of the site is served: the chunks come from nuc-1's slot image (its fetch
    // cache was emptied after assembly), and verify.
    let probe = f.agent("nuc-probe");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
    let has = offered(&f, &probe, peer_addr, &ids);
    assert!(has.iter().all(|&h| h), "nuc-1 does not offer all of demo 1");
    let report = fetch_from(&f, &probe, peer_addr, &store, wants.clone()).unwrap();
    assert_eq!(report.fetched, 8, "{report:?}");
    assert_eq!(report.corrupt_received, 0);
    for (id, _) in &wants {
        store.get(id).unwrap();
    }

    // An agent of another site is refused at the handshake, whatever it expects of the server.
    f.nightcast(&[
        "site",
        "add",
        "paris",
        "--tz",
        "UTC",
        "--windows",
        "00:00-23:59",
        "--cap-mbit",
        "100",
    ]);
    let token = f.nightcast(&["enroll", "--role", "agent", "--site", "paris"]);
    let (paris, _) = probe
        .rt
        .block_on(exchange::enroll(
            f.quic,
            token.trim(),
            Role::Agent,
            "nuc-paris",
            f.clock,
        ))
        .unwrap();
    probe.rt.block_on(async {
        let endpoint = exchange::client_endpoint().unwrap();
        // It pretends to expect a lyon peer, so that only the server's check can stop it.
        let tried = async {
            let tls = paris
                .client_config(Expect::AgentOf(lyon()), f.clock)
                .unwrap();
            let conn = Connection::connect(&endpoint, peer_addr, tls).await?;
            conn.hello(Hello::new(Role::Agent, &NodeId::new("nuc-paris").unwrap()))
                .await?;
            conn.has(&ids[..1]).await
        };
        let err = tokio::time::timeout(Duration::from_secs(10), tried)
            .await
            .expect("the refusal took too long")
            .unwrap_err();
        assert!(matches!(err, ExchangeError::Transport(_)), "{err}");
    });

    // In session: nothing is offered.
    nuc.wait("the session to start", 60, |a| {
        a.s("session").starts_with("demo 1")
    });
    nuc.wait("the peer server to close", 10, |a| {
        a.status()["peer_serving"] == false
    });
    let has = offered(&f, &probe, peer_addr, &ids);
    assert!(has.iter().all(|&h| !h), "a NUC in session offers chunks");
    let err = fetch_from(&f, &probe, peer_addr, &store, vec![(ids[0], 0)]).unwrap_err();
    assert!(
        matches!(
            err,
            ExchangeError::Refused {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_site_lets_its_nucs_serve_during_sessions_and_sets_their_upload_cap() {
    let (f, _relay, nuc) = one_nuc();
    // Until the site sets them: the NUC's own settings (its configuration's defaults).
    nuc.wait("the NUC's own peer settings", 20, |a| {
        a.n("peer_upload_mbit") == 300 && a.status()["peer_share_in_session"] == false
    });
    let sites = f.nightcast(&["site", "list"]);
    assert!(sites.contains("each NUC's own"), "{sites}");

    // The DSI caps every NUC's upload to its peers: the cap reaches the NUC without a restart.
    let said = f.nightcast(&["site", "set", "lyon", "--peer-upload-mbit", "40"]);
    assert!(said.contains("NUC upload to peers: 40 Mbit/s"), "{said}");
    assert!(
        said.contains("serving peers during sessions: each NUC's own"),
        "{said}"
    );
    let sites = f.nightcast(&["site", "list"]);
    assert!(sites.contains("40 Mbit/s"), "{sites}");
    nuc.wait("the site's cap to reach the NUC", 30, |a| {
        a.n("peer_upload_mbit") == 40
    });

    // In session, by default, the NUC serves nothing.
    f.calendar(&session_from_now(&f, 3, 60));
    nuc.wait("demo 1 to be ready", 60, ready);
    let peer_addr: SocketAddr = nuc.s("peer_listen").parse().unwrap();
    let wants = demo_chunks(&f);
    let ids: Vec<image_tools::ChunkId> = wants.iter().map(|(id, _)| *id).collect();
    nuc.wait("the session to start", 60, |a| {
        a.s("session").starts_with("demo 1")
    });
    nuc.wait("the peer server to close", 10, |a| {
        a.status()["peer_serving"] == false
    });
    let probe = f.agent("nuc-probe");
    assert!(offered(&f, &probe, peer_addr, &ids).iter().all(|&h| !h));

    // The site allows sharing during sessions: the NUC in session serves the whole master.
    let said = f.nightcast(&["site", "set", "lyon", "--peer-share-in-session", "yes"]);
    assert!(
        said.contains("serving peers during sessions: yes"),
        "{said}"
    );
    nuc.wait("the NUC in session to serve its peers", 30, |a| {
        a.status()["peer_serving"] == true && a.status()["peer_share_in_session"] == true
    });
    assert!(nuc.s("session").starts_with("demo 1"), "{}", nuc.status());
    assert!(offered(&f, &probe, peer_addr, &ids).iter().all(|&h| h));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
    let report = fetch_from(&f, &probe, peer_addr, &store, wants.clone()).unwrap();
    assert_eq!(report.fetched as usize, wants.len(), "{report:?}");
    assert_eq!(report.corrupt_received, 0);

    // And forbids it again: the NUC stops serving, its session still running; the cap stays.
    f.nightcast(&["site", "set", "lyon", "--peer-share-in-session", "no"]);
    nuc.wait("the NUC in session to stop serving", 30, |a| {
        a.status()["peer_serving"] == false
    });
    assert!(nuc.s("session").starts_with("demo 1"), "{}", nuc.status());
    assert!(offered(&f, &probe, peer_addr, &ids).iter().all(|&h| !h));
    assert_eq!(nuc.n("peer_upload_mbit"), 40);
}

/// `n` patient NUCs (60 s) of salle-1 uploading to each other at `upload_mbit`, a 24 MiB master
/// scheduled for them tomorrow: the room starts filling.
fn patient_room(n: usize, upload_mbit: u64) -> (Fleet, Relay, Vec<AgentProc>) {
    let f = Fleet::build(
        "00:00-23:59",
        1000,
        24,
        "start=2030-01-08T06:00:00Z speed=1",
        "",
        "",
    );
    let relay = f.relay(&DEFAULT_RELAY);
    let extra = format!("peer_patience_secs = 60\npeer_upload_mbit = {upload_mbit}\n");
    let agents = seat_room(&f, &relay, n, &extra);
    f.calendar("lyon,salle-1,demo,1,2030-01-09 08:00,2030-01-09 17:00\n");
    (f, relay, agents)
}

#[test]
fn a_relay_killed_during_a_room_fill_leaves_the_nucs_to_finish_from_each_other() {
    // Slow uploads between the NUCs (4 Mbit/s each): the relay gives each its stripe in a
    // moment, the peers take seconds to pass the rest round.
    let (f, relay, agents) = patient_room(4, 4);
    // The relay served its copy (every stripe), and the NUCs met through its tracker: kill -9.
    relay.wait("the relay to serve one copy", 60, |r| {
        r.n("served_bytes") >= f.stored_bytes()
    });
    std::thread::sleep(Duration::from_secs(3));
    relay.kill9();
    let early: Vec<String> = agents
        .iter()
        .filter(|a| ready(a))
        .map(|a| a.s("node"))
        .collect();
    assert!(
        early.len() < agents.len(),
        "the room filled before the relay was killed: nothing was tested"
    );
    for a in &agents {
        a.wait("demo 1 to be ready without the relay", 120, ready);
    }
    assert_images(&f, &agents);
}

/// A site that caps its NUCs' uploads low (to protect sessions) still fills a room from one copy:
/// a peer serving many requests at its cap is slow, not dead. (Each request once had 15 s to
/// finish whole, and a question about holdings 3 s: at a low cap every peer was dropped as "too
/// slow" and the relay sent every NUC its own copy.)
#[test]
fn a_room_whose_nucs_upload_slowly_still_fills_from_about_one_copy() {
    let (f, relay, agents) = patient_room(6, 2);
    for a in &agents {
        a.wait("demo 1 to be ready", 240, ready);
    }
    let ratio = relay.n("served_bytes") as f64 / f.stored_bytes() as f64;
    let peer: u64 = agents.iter().map(|a| a.n("peer_bytes")).sum();
    eprintln!("6 NUCs at 2 Mbit/s: the relay served {ratio:.2} copies; peers gave {peer} bytes");
    let dropped: Vec<String> = agents
        .iter()
        .flat_map(|a| {
            a.log_text()
                .lines()
                .filter(|l| l.contains("dropped for this version"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        dropped.is_empty(),
        "slow peers were dropped:\n{}",
        dropped.join("\n")
    );
    assert!(
        ratio < 1.5,
        "the relay served {ratio:.2} copies for 6 NUCs whose peers upload at 2 Mbit/s"
    );
    assert_images(&f, &agents);
}
