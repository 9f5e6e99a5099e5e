//! `nightcast-agent run` as real processes behind a real relay and controller, on loopback, on an
//! accelerated clock, with the test hypervisor (real qcow2 overlays, guest writes with `qemu-io`).

use crate::util;

use std::process::Command;

use crate::fleet::*;

/// `qemu-img` and `qemu-io` must be here (`.ci/run` installs them): a test without them fails
/// and says what to install, it never passes unseen.
fn qemu_tools() {
    for tool in ["qemu-img", "qemu-io"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{tool} is missing: apt-get install qemu-utils (.ci/run does)"
        );
    }
}

fn qemu_io(overlay: &std::path::Path, cmd: &str) -> String {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(overlay)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn qemu_img_info(overlay: &std::path::Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(overlay)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The image file of the version `name@version` the agent keeps under `data`.
fn slot_image(data: &std::path::Path, version: &str) -> std::path::PathBuf {
    std::fs::read_dir(data.join("slots/v"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(version))
        .unwrap()
        .path()
        .join("master.img")
}

#[test]
fn a_nuc_gets_its_masters_swaps_only_between_sessions_and_is_reset_after_each() {
    qemu_tools();
    // 60x: a virtual minute is a real second. Two sessions, the second on version 2.
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T07:35:00Z speed=60",
        "",
        "",
    );
    let v1 = f.manifest.clone();
    let v2_image = image_tools::testimage::evolve(&f.image, 0.05, 7);
    let v2 = f.add_master("2", &v2_image);
    f.calendar(
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 08:20\n\
         lyon,salle-1,demo,2,2030-01-08 08:30,2030-01-08 08:50\n\
         lyon,salle-1,demo,1,2030-01-08 09:00,2030-01-08 09:20\n",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.agent_process("nuc-1", &relay);
    // It enrols through the relay by itself; the DSI puts it at its seat.
    nuc.wait("the agent to enrol", 20, |a| a.s("site") == "lyon");
    f.nightcast(&["seat", "assign", "lyon", "salle-1", "pc-1", "nuc-1"]);

    nuc.wait("version 1 to be ready before its session", 60, |a| {
        a.s("current") == "demo 1"
    });
    assert!(
        f.clock.now() < at("2030-01-08T08:00:00Z"),
        "not ready before the session"
    );

    // Session 1 runs version 1; a trainee writes to the disk.
    nuc.wait("session 1 to start", 30, |a| {
        a.s("session").starts_with("demo 1")
    });
    let swaps_before = nuc.n("swaps");
    let overlay = nuc.overlay();
    let info = qemu_img_info(&overlay);
    assert_eq!(info["format"], "qcow2");
    assert!(
        info["backing-filename"]
            .as_str()
            .unwrap()
            .contains("demo@1"),
        "{info}"
    );
    let wrote = qemu_io(&overlay, "write -P 0xab 1048576 65536");
    assert!(wrote.contains("wrote"), "{wrote}");
    assert!(!qemu_io(&overlay, "read -P 0xab 1048576 65536").contains("failed"));

    // Version 2 is prepared during the session, but not swapped in while it runs.
    nuc.wait("version 2 to be ready in `next`", 30, |a| {
        a.s("next") == "demo 2" && a.s("next_state") == "ready"
    });
    let s = nuc.status();
    assert_eq!(s["current"], "demo 1", "{s}");
    assert!(s["session"].as_str().unwrap().starts_with("demo 1"), "{s}");
    assert_eq!(
        s["swaps"].as_u64().unwrap(),
        swaps_before,
        "swapped during a session: {s}"
    );
    // Only version 2's new chunks crossed the LAN: the rest came from the running image.
    let shared = v2
        .unique_chunks()
        .iter()
        .filter(|c| v1.unique_chunks().iter().any(|o| o.id == c.id))
        .count() as u64;
    assert!(shared > 0);
    assert_eq!(s["reused_chunks"].as_u64().unwrap(), shared, "{s}");
    assert_eq!(
        s["fetched_chunks"].as_u64().unwrap(),
        v1.unique_chunks().len() as u64 + v2.unique_chunks().len() as u64 - shared,
        "{s}"
    );

    // The session ends: the workstation is reset and version 2 comes in, between sessions.
    nuc.wait("the swap after session 1", 40, |a| {
        a.s("current") == "demo 2"
    });
    let s = nuc.status();
    assert!(f.clock.now() >= at("2030-01-08T08:20:00Z"));
    assert!(
        f.clock.now() < at("2030-01-08T08:30:00Z"),
        "swapped late: {s}"
    );
    assert_eq!(s["previous"], "demo 1", "{s}");
    assert!(s["resets"].as_u64().unwrap() >= 1, "{s}");
    // The trainee's write is gone: a fresh overlay over the new master, consistent.
    let info = qemu_img_info(&overlay);
    assert!(
        info["backing-filename"]
            .as_str()
            .unwrap()
            .contains("demo@2"),
        "{info}"
    );
    assert!(
        qemu_io(&overlay, "read -P 0xab 1048576 65536").contains("Pattern verification failed"),
        "the previous trainee's data survived the reset"
    );
    let check = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Session 2 runs version 2; the relay learnt what the NUC holds and passed it on.
    nuc.wait("session 2 to start", 30, |a| {
        a.s("session").starts_with("demo 2")
    });
    let fleet = f.nightcast(&["fleet"]);
    assert!(
        fleet.contains("nuc-1") && fleet.contains("demo 2"),
        "{fleet}"
    );

    // Version 1 comes back for session 3: the NUC still holds it for rollback, nothing crosses.
    let fetched = nuc.n("fetched_chunks");
    nuc.wait("version 1 to be ready again", 40, |a| {
        a.s("next") == "demo 1" && a.s("next_state") == "ready"
    });
    let s = nuc.status();
    assert_eq!(s["fetched_chunks"].as_u64().unwrap(), fetched, "{s}");
    assert_eq!(
        s["reused_chunks"].as_u64().unwrap(),
        v1.unique_chunks().len() as u64,
        "{s}"
    );
    nuc.wait("session 3 on version 1", 40, |a| {
        a.s("session").starts_with("demo 1") && a.s("current") == "demo 1"
    });
}

#[test]
fn a_damaged_running_image_is_not_trusted_as_a_source_of_chunks() {
    qemu_tools();
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T07:35:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 08:20\n",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.seated_agent("nuc-1", "pc-1", &relay, "");
    nuc.wait("version 1 to be ready", 60, |a| a.s("current") == "demo 1");
    // Bit rot in the running master, where version 2 has the same bytes.
    let current = slot_image(&nuc.data, "demo@1");
    let mut bytes = std::fs::read(&current).unwrap();
    for b in bytes.iter_mut().skip(4096).step_by(1 << 20) {
        *b ^= 0x55;
    }
    std::fs::write(&current, &bytes).unwrap();

    let v2_image = image_tools::testimage::evolve(&f.image, 0.05, 7);
    f.add_master("2", &v2_image);
    f.calendar("lyon,salle-1,demo,2,2030-01-08 08:30,2030-01-08 08:50\n");
    nuc.wait("version 2 to be ready in spite of the damage", 60, |a| {
        a.s("next") == "demo 2" && a.s("next_state") == "ready"
    });
    assert!(nuc.log_text().contains("damaged"), "{}", nuc.log_text());
    let next = slot_image(&nuc.data, "demo@2");
    assert!(
        std::fs::read(next).unwrap() == v2_image,
        "version 2 differs"
    );
}

/// A relay of the site's own CA that lies: it serves `demo 2` signed by another key, and a plan
/// that asks nuc-1 to run it. Returns its address; it serves until the runtime is dropped.
fn compromised_relay(f: &Fleet, rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    use image_tools::exchange::{self, MemoryCatalog, Service};
    use image_tools::wire::{
        Hello, MasterRef, Role, RoomPlan, SeatBinding, SessionEntry, SitePlan, PROTOCOL_VERSION,
    };
    use std::sync::Arc;
    // The attacker has a relay's certificate (a stolen relay) and its own signing key.
    let token = f.nightcast(&["enroll", "--role", "relay", "--site", "lyon"]);
    let (creds, _) = rt
        .block_on(exchange::enroll(
            f.quic,
            token.trim(),
            Role::Relay,
            "evil",
            f.clock,
        ))
        .unwrap();
    let dir = f.dir.path().join("evil");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("evil.key");
    let out = Command::new(util::workspace_bin("nightcast-image"))
        .args(["keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let img = dir.join("evil.img");
    image_tools::testimage::write_sparse(&img, &image_tools::testimage::image_bytes(4 << 20, 99))
        .unwrap();
    let manifest = dir.join("evil.manifest");
    let out = Command::new(util::workspace_bin("nightcast-image"))
        .args(["build", "--store", dir.join("store").to_str().unwrap()])
        .args([
            "--key",
            key.to_str().unwrap(),
            "--name",
            "demo",
            "--version",
            "2",
        ])
        .arg(&img)
        .arg("-o")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let catalog = Arc::new(MemoryCatalog::default());
    let demo2 = MasterRef::new("demo", "2").unwrap();
    catalog.add_manifest(demo2.clone(), std::fs::read(&manifest).unwrap());
    let now = f.clock.now();
    catalog.set_plan(
        "lyon",
        SitePlan {
            tz: "UTC".into(),
            windows: vec!["00:00-23:59".into()],
            cap_mbit: 100,
            entries: vec![image_tools::wire::PlanEntry {
                master: demo2.clone(),
                deadline: now,
                pin_until: now + 86_400,
                override_until: None,
            }],
            rooms: vec![RoomPlan {
                room: "salle-1".into(),
                sessions: vec![SessionEntry {
                    master: demo2,
                    start: now + 3600,
                    end: now + 7200,
                }],
            }],
            seats: vec![SeatBinding {
                room: "salle-1".into(),
                seat: "pc-1".into(),
                node: "nuc-1".into(),
            }],
            revoked: vec![],
            // The attacker's key, "endorsed" by a CA of its own: no NUC takes it.
            signing_keys: vec![{
                let evil_ca =
                    image_tools::trust::Ca::generate(image_tools::trust::Validity::ca(now))
                        .unwrap();
                let evil_key =
                    image_tools::PublicKey::load(&image_tools::keys::public_path(&key)).unwrap();
                evil_ca.endorse(&evil_key, now + 86_400).unwrap().to_wire()
            }],
            current_ca: vec![],
            bridge: vec![],
            ..SitePlan::default()
        },
    );
    let store = Arc::new(image_tools::LocalStore::open(&dir.join("store")).unwrap());
    let _guard = rt.enter();
    let endpoint = exchange::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        creds
            .server_config(
                image_tools::trust::Admit::AgentsOf(image_tools::SiteId::new("lyon").unwrap()),
                image_tools::trust::Revoked::default(),
                f.clock,
            )
            .unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let service = Arc::new(Service {
        hello: Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: "evil".into(),
            role: Role::Relay,
            node_id: "evil".into(),
            capabilities: vec![],
        },
        store,
        catalog,
        enroller: None,
        forward_enroll: None,
        on_report: Box::new(|_, _| {}),
        revoked: Default::default(),
        served: Default::default(),
    });
    rt.spawn(exchange::serve(
        endpoint,
        service,
        tokio_util::sync::CancellationToken::new(),
    ));
    addr
}

#[test]
fn a_forged_master_from_a_compromised_relay_is_refused_and_the_current_one_keeps_running() {
    qemu_tools();
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T07:00:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 09:00,2030-01-08 10:00\n",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let mut nuc = f.seated_agent("nuc-1", "pc-1", &relay, "");
    nuc.wait("version 1 to be ready", 60, |a| a.s("current") == "demo 1");
    nuc.kill9();

    // The same NUC, now talking to a compromised relay.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let evil = compromised_relay(&f, &rt);
    let config = nuc.config.clone();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("relay = \"{evil}\"\n"));
    std::fs::write(&config, text).unwrap();
    let nuc = AgentProc::start(&config, &nuc.data.clone(), &f.clock_spec);
    nuc.wait("the forged manifest to be refused", 30, |a| {
        a.n("refused_manifests") >= 1
    });
    let s = nuc.status();
    assert!(s["last_error"].as_str().unwrap().contains("REFUSED"), "{s}");
    assert_eq!(s["current"], "demo 1", "{s}");
    assert_ne!(s["next_state"], "ready", "{s}");
    // The master on disk is still exactly version 1.
    let current = slot_image(&nuc.data, "demo@1");
    assert!(
        std::fs::read(current).unwrap() == f.image,
        "current was altered"
    );
}

#[test]
fn kill_9_at_any_stage_leaves_a_nuc_that_recovers_and_finishes() {
    qemu_tools();
    let f = Fleet::build(
        "00:00-23:59",
        40,
        48,
        "start=2030-01-08T06:00:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 09:00,2030-01-08 10:00\n",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the relay's cache to fill", 60, Relay::complete);
    let mut nuc = f.seated_agent("nuc-1", "pc-1", &relay, "");
    // Killed again and again while it fetches, assembles and marks ready.
    let mut seen = std::collections::BTreeSet::new();
    for ms in [300u64, 600, 250, 900, 400, 1200, 700] {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let s = nuc.status();
        seen.insert(s["next_state"].as_str().unwrap_or("").to_owned());
        // Never a half master in `current`.
        assert!(s["current"].is_null() || s["current"] == "demo 1", "{s}");
        nuc = nuc.restart_after_kill9();
    }
    nuc.wait("version 1 to be ready after all", 60, |a| {
        a.s("current") == "demo 1"
    });
    let current = slot_image(&nuc.data, "demo@1");
    assert!(
        std::fs::read(current).unwrap() == f.image,
        "current differs from the master"
    );
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = walk(&nuc.data.join("slots"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".nc-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!("stages seen at the kills: {seen:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_spare_takes_over_the_dead_nucs_seat_from_the_relays_cache_with_nothing_typed() {
    qemu_tools();
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T08:15:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 09:00,2030-01-08 10:00\n",
        "[fleet]\nsilent_after_minutes = 3\n",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let mut nuc = f.seated_agent("nuc-1", "pc-1", &relay, "");
    nuc.wait("version 1 to be ready", 60, |a| a.s("current") == "demo 1");
    relay.wait("the relay's cache to be complete", 30, Relay::complete);
    // The NUC dies. Staff plug in the spare; nobody types anything.
    nuc.kill9();
    let (wan, fetched) = (f.wan.bytes(), relay.n("fetched_bytes"));
    let spare = f.agent_process("spare-1", &relay);
    spare.wait("the spare to take the seat and be ready", 60, |a| {
        a.s("seat") == "salle-1/pc-1" && a.s("current") == "demo 1"
    });
    // All from the relay's cache: the WAN carried nothing for it but control messages.
    assert_eq!(relay.n("fetched_bytes"), fetched);
    assert!(
        f.wan.bytes() - wan < 200_000,
        "{} B crossed the WAN",
        f.wan.bytes() - wan
    );
    let fleet = f.nightcast(&["fleet"]);
    assert!(fleet.contains("spare-1"), "{fleet}");
    spare.wait("the session to run on the spare", 60, |a| {
        a.s("session").starts_with("demo 1")
    });
}

#[test]
fn with_two_dead_nucs_the_spare_waits_for_the_dsi() {
    qemu_tools();
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T07:00:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 09:00,2030-01-08 10:00\n",
        "[fleet]\nsilent_after_minutes = 3\n",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-2"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let mut a = f.agent_process("nuc-1", &relay);
    let mut b = f.agent_process("nuc-2", &relay);
    a.wait("nuc-1 to enrol", 20, |a| a.s("site") == "lyon");
    b.wait("nuc-2 to enrol", 20, |a| a.s("site") == "lyon");
    f.nightcast(&["seat", "assign", "lyon", "salle-1", "pc-1", "nuc-1"]);
    f.nightcast(&["seat", "assign", "lyon", "salle-1", "pc-2", "nuc-2"]);
    a.wait("nuc-1 ready", 60, |a| a.s("current") == "demo 1");
    a.kill9();
    b.kill9();
    let spare = f.agent_process("spare-1", &relay);
    spare.wait("the spare to enrol", 20, |a| a.s("site") == "lyon");
    // Long past the silence limit, it is still a spare, and the DSI is told why.
    std::thread::sleep(std::time::Duration::from_secs(8));
    assert_eq!(spare.s("seat"), "", "{}", spare.status());
    assert!(spare.s("state").contains("spare"));
    let fleet = f.nightcast(&["fleet"]);
    assert!(
        fleet.contains("pc-1") && fleet.contains("pc-2") && fleet.contains("waits for the DSI"),
        "{fleet}"
    );
    // The DSI decides; the spare follows.
    f.nightcast(&[
        "seat", "replace", "lyon", "salle-1", "pc-2", "--with", "spare-1",
    ]);
    spare.wait("the spare at pc-2, ready", 60, |a| {
        a.s("seat") == "salle-1/pc-2" && a.s("current") == "demo 1"
    });
}

#[test]
fn with_the_relay_down_sessions_and_resets_go_on() {
    qemu_tools();
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T07:40:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 08:10\n\
         lyon,salle-1,demo,1,2030-01-08 08:15,2030-01-08 08:25\n",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.seated_agent("nuc-1", "pc-1", &relay, "");
    nuc.wait("version 1 to be ready", 60, |a| a.s("current") == "demo 1");
    // The relay dies (power cut on its shelf) before the day starts.
    drop(relay);
    nuc.wait("the agent to notice", 20, |a| a.s("connected") == "false");
    let resets = nuc.n("resets");
    nuc.wait("session 1 to start without the relay", 40, |a| {
        a.s("session").starts_with("demo 1")
    });
    nuc.wait("the reset after session 1", 30, |a| a.n("resets") > resets);
    nuc.wait("session 2 to start", 30, |a| {
        a.s("session").starts_with("demo 1") && a.n("resets") > resets
    });
    assert_eq!(nuc.s("current"), "demo 1");
}

#[test]
fn a_nuc_woken_for_the_nights_work_powers_itself_off_when_done() {
    qemu_tools();
    let f = Fleet::build(
        "22:00-06:00",
        100,
        8,
        "start=2030-01-07T23:00:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let flag = f.dir.path().join("powered-off");
    let nuc = f.agent_process_with(
        "nuc-1",
        &relay,
        &format!(
            "power_off_after_night_work = true\npower_off_command = [\"touch\", \"{}\"]\n",
            flag.display()
        ),
    );
    nuc.wait("the agent to enrol", 20, |a| a.s("site") == "lyon");
    assert!(
        !flag.exists(),
        "powered off before having a seat and a master"
    );
    f.nightcast(&["seat", "assign", "lyon", "salle-1", "pc-1", "nuc-1"]);
    nuc.wait("the NUC to power itself off once ready", 60, |_| {
        flag.exists()
    });
    assert_eq!(nuc.s("current"), "demo 1");
    assert!(nuc.log_text().contains("powering off"));
}

/// A NUC switched on before its relay's night window asks for a master the relay has not fetched
/// yet: it says it is waiting for the relay, raises no alarm, and once ready shows nothing stale.
#[test]
fn a_nuc_that_asks_before_the_relay_has_the_master_waits_without_an_alarm() {
    qemu_tools();
    let f = Fleet::build(
        "22:00-06:00",
        100,
        8,
        "start=2030-01-07T21:30:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 09:00\n",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.seated_agent("nuc-1", "pc-1", &relay, "");
    nuc.wait("the NUC to wait for its relay", 30, |a| {
        a.s("state").starts_with("waiting for the relay")
    });
    let s = nuc.status();
    assert!(f.clock.now() < at("2030-01-07T22:00:00Z"), "{s}");
    // Before its window the relay has not even the manifest.
    assert!(
        s["state"]
            .as_str()
            .unwrap()
            .contains("does not have demo 1 yet"),
        "{s}"
    );
    assert!(s["last_error"].is_null(), "{s}");
    nuc.wait("version 1 to be ready once the relay has it", 60, |a| {
        a.s("current") == "demo 1"
    });
    let s = nuc.status();
    assert!(s["last_error"].is_null(), "{s}");
    let fleet = f.nightcast(&["fleet"]);
    assert!(!fleet.contains("last error"), "{fleet}");
}
