//! `nightcast-relay run` as a real process between a real controller and test agents, on loopback,
//! with both on an accelerated clock (`NIGHTCAST_CLOCK`). The WAN is a counting UDP forwarder, so
//! every byte is counted at both ends: by the relay's own counters and by the forwarder.

use std::time::Duration;

use crate::fleet::*;
use image_tools::exchange::{self, Connection};
use image_tools::trust::Credentials;
use image_tools::wire::Role;
use image_tools::{ChunkStore, LocalStore};

#[test]
fn the_wan_carries_only_control_traffic_outside_the_night_windows() {
    // 60x: a virtual minute is a real second. Two windows with a gap between them, a master that
    // cannot cross in the first one at the cap.
    let f = Fleet::new(
        "22:00-22:06,22:12-23:59",
        4,
        24,
        "start=2030-01-07T21:50:00Z speed=60",
    );
    let total = f.stored_bytes();
    assert!(
        total as f64 > 4e6 / 8.0 * 6.0 * 1.2,
        "the test master ({total} B) is small enough to cross in one 6-second window"
    );
    let relay = f.relay(&DEFAULT_RELAY);
    // A NUC that lacks the master says so (and gives its MAC), then is powered off.
    let nuc = f.agent("nuc-1");
    nuc.report(
        relay.lan,
        AgentReport {
            mac: Some("52:54:00:12:34:56".into()),
            needs: vec![demo()],
            ..AgentReport::default()
        },
    );

    assert!(
        f.clock.now() < at("2030-01-07T21:59:00Z"),
        "the setup took longer than the time before the window (a very loaded machine?)"
    );
    until(&f, "2030-01-07T21:59:40Z");
    let s = relay.status();
    assert_eq!(s["fetched_bytes"], 0, "{s}");
    assert_eq!(s["wan_bytes_open"], 0, "{s}");
    let closed_before = relay.n("wan_bytes_closed");
    let wan_before = f.wan.bytes();
    assert!(
        closed_before > 0 && wan_before < 100_000,
        "before the window: relay counted {closed_before} B, the WAN forwarder {wan_before} B"
    );
    assert!(s["state"]
        .as_str()
        .unwrap()
        .contains("waiting for the window at 2030-01-07 22:00:00"));

    // The window opens: the NUC is woken, and the transfer starts.
    let mut packet = [0u8; 200];
    let n = f.wol.recv(&mut packet).expect("no Wake-on-LAN packet");
    assert_eq!(n, 102);
    assert_eq!(&packet[6..12], &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    assert!(f.clock.now() >= at("2030-01-07T22:00:00Z"));
    relay.wait("the transfer to start", 10, |r| r.n("fetched_bytes") > 0);

    // The window closes before the master is complete: the WAN goes quiet until the next one.
    until(&f, "2030-01-07T22:06:30Z");
    let (fetched_a, wan_a, closed_a) = (
        relay.n("fetched_bytes"),
        f.wan.bytes(),
        relay.n("wan_bytes_closed"),
    );
    assert!(
        fetched_a > 0 && fetched_a < total,
        "fetched {fetched_a} of {total} in the first window"
    );
    until(&f, "2030-01-07T22:11:45Z");
    let (fetched_b, wan_b, closed_b) = (
        relay.n("fetched_bytes"),
        f.wan.bytes(),
        relay.n("wan_bytes_closed"),
    );
    assert_eq!(fetched_a, fetched_b, "chunks were fetched between windows");
    assert!(
        wan_b - wan_a < 50_000,
        "{} B crossed the WAN between the windows (control only expected)",
        wan_b - wan_a
    );
    assert!(
        closed_b - closed_a < 50_000,
        "the relay counted {} B between the windows",
        closed_b - closed_a
    );
    assert!(relay.status()["state"]
        .as_str()
        .unwrap()
        .contains("22:12:00"));

    // The second window finishes the job, each chunk crossing once.
    relay.wait("the master to complete", 60, Relay::complete);
    let fetched = relay.n("fetched_bytes");
    let chunks = f.manifest.unique_chunks().len() as u64;
    // What crossed is what the relay keeps: the forms the controller holds now (compressed again
    // after the import, so at most the manifest's sizes).
    let kept: u64 = LocalStore::open(&relay.data.join("store"))
        .unwrap()
        .entries()
        .unwrap()
        .iter()
        .map(|(_, len)| len - image_tools::chunk::HEADER_LEN as u64)
        .sum();
    assert!(
        kept <= total && fetched >= kept && fetched <= kept + 5 * chunks,
        "fetched {fetched} B for a master of {kept} B (listed {total} B)"
    );
    // Both ends agree on what crossed the WAN (the relay counts once a second: its count of the
    // last second may come after the master is complete).
    let wan = |r: &Relay| r.n("wan_bytes_open") + r.n("wan_bytes_closed");
    let forwarder = f.wan.bytes();
    let what =
        format!("the relay's count of WAN bytes to reach 90 % of the forwarder's {forwarder}");
    relay.wait(&what, 10, |r| wan(r) as f64 >= forwarder as f64 * 0.9);
    let (relay_wan, forwarder) = (wan(&relay), f.wan.bytes());
    assert!(
        relay_wan <= forwarder + 10_000,
        "relay counted {relay_wan} B, the forwarder {forwarder} B"
    );
    // The woken NUC never answered: the relay says so.
    relay.wait("the silent NUC to be reported", 10, |r| {
        r.status()["agents_not_answering"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == "nuc-1"))
    });
    assemble_matches(&f, &relay.data.join("store"));
}

#[test]
fn a_relay_killed_mid_transfer_resumes_without_fetching_anything_twice() {
    let f = Fleet::new("00:00-23:59", 4, 24, "start=2030-01-07T12:00:00Z speed=1");
    let total = f.stored_bytes();
    let needed = f.manifest.unique_chunks().len() as u64;
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("a third of the transfer", 30, |r| {
        r.n("fetched_bytes") > total / 3
    });
    let data = relay.kill9();
    let present = LocalStore::open(&data.join("store"))
        .unwrap()
        .ids()
        .unwrap()
        .len() as u64;
    assert!(present > 0 && present < needed, "{present} of {needed}");

    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 60, Relay::complete);
    assert_eq!(
        relay.n("fetched_chunks"),
        needed - present,
        "chunks stored before the kill were fetched again"
    );
    assert!(relay.log_text().contains("cache check"));
    assemble_matches(&f, &relay.data.join("store"));
    assert_eq!(relay.chunks().len() as u64, needed);
}

/// A DSI running the store tools on the relay's box while it works: garbage collection is refused
/// (it would drop what the relay is fetching), and opening the store elsewhere leaves the relay's
/// writes in progress alone. Once the relay is gone, an interrupted write's leftovers are cleaned.
#[test]
fn the_store_tools_keep_off_the_store_of_a_running_relay() {
    let f = Fleet::new("00:00-23:59", 4, 24, "start=2030-01-07T12:00:00Z speed=1");
    let total = f.stored_bytes();
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("a third of the transfer", 30, |r| {
        r.n("fetched_bytes") > total / 3
    });
    let store = relay.data.join("store");
    // A write in progress, as the relay's writer leaves one between its write and its rename.
    let in_flight = store.join(format!(
        "tmp/{}in-flight",
        image_tools::durable::TEMP_PREFIX
    ));
    std::fs::write(&in_flight, b"half a chunk").unwrap();
    let keep = f.dir.path().join("demo-1.manifest");
    let gc = std::process::Command::new(crate::util::workspace_bin("nightcast-image"))
        .arg("gc")
        .arg("--store")
        .arg(&store)
        .arg("--keep")
        .arg(&keep)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&gc.stderr);
    assert_eq!(gc.status.code(), Some(1), "{said}");
    assert!(said.contains("busy"), "{said}");
    LocalStore::open(&store).unwrap();
    assert!(
        in_flight.exists(),
        "opening the store removed the relay's write in progress"
    );

    relay.wait("the master to complete", 60, Relay::complete);
    assemble_matches(&f, &store);
    let data = relay.kill9();
    LocalStore::open(&data.join("store")).unwrap();
    assert!(
        !in_flight.exists(),
        "an interrupted write's leftover stayed"
    );
}

#[test]
fn a_chunk_rotten_on_the_relays_disk_is_never_served_and_is_fetched_again() {
    let f = Fleet::new("00:00-23:59", 100, 8, "start=2030-01-07T12:00:00Z speed=1");
    let relay = f.relay(&RelayOpts {
        quota: "10 GiB",
        scrub_mib: 64,
        extra: String::new(),
    });
    relay.wait("the master to complete", 30, Relay::complete);
    let ids: Vec<_> = f.manifest.unique_chunks().iter().map(|c| c.id).collect();
    let store = relay.data.join("store");

    // An agent asks for a chunk whose copy went bad: the relay drops it, gets it again from the
    // controller (the window is open) and serves the good copy.
    corrupt(&store, &ids[3]);
    let nuc = f.agent("nuc-1");
    let (mut report, mut agent_store) = nuc.fetch(relay.lan, &f.key);
    assert_eq!(
        report.corrupt_received, 0,
        "the relay served a corrupt chunk"
    );
    if report.fetched < ids.len() as u64 {
        // The relay's night fetcher took the dropped chunk over before the on-demand fetch could
        // (a loaded machine): the NUC was told when to expect it and asks again, as agents do.
        assert!(report.expected.is_some(), "{report:?}");
        relay.wait("the chunk to be fetched again", 30, Relay::complete);
        (report, agent_store) = nuc.fetch(relay.lan, &f.key);
        assert_eq!(report.corrupt_received, 0);
    }
    assert_eq!(report.fetched, ids.len() as u64, "{report:?}");
    assemble_matches(&f, &agent_store.path().join("store"));
    relay.wait("the rotten chunk to be counted", 5, |r| {
        r.n("corrupt_dropped") >= 1
    });

    // The scrub finds the next one by itself, and the fetcher replaces it.
    let dropped = relay.n("corrupt_dropped");
    corrupt(&store, &ids[7]);
    relay.wait("the scrub to drop the rotten chunk", 30, |r| {
        r.n("corrupt_dropped") > dropped
    });
    relay.wait("the chunk to be fetched again", 30, Relay::complete);
    assemble_matches(&f, &store);
}

#[test]
fn nucs_asking_at_once_for_a_chunk_the_relay_lacks_cost_the_wan_one_fetch() {
    let f = Fleet::new("00:00-23:59", 100, 8, "start=2030-01-07T12:00:00Z speed=1");
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 30, Relay::complete);
    let ids: Vec<_> = f.manifest.unique_chunks().iter().map(|c| c.id).collect();
    let nucs: Vec<_> = (1..=6).map(|i| f.agent(&format!("nuc-{i}"))).collect();
    // The relay's copy of the first chunk went bad; the WAN is slow to answer just then, so that
    // all six NUCs ask for it while the relay is fetching it again.
    corrupt(&relay.data.join("store"), &ids[0]);
    f.wan.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    let (lan, key) = (relay.lan, f.key);
    let fetches: Vec<_> = nucs
        .into_iter()
        .map(|nuc| std::thread::spawn(move || nuc.fetch(lan, &key).0))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    f.wan.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    for fetch in fetches {
        let report = fetch.join().unwrap();
        assert_eq!(report.fetched, ids.len() as u64, "{report:?}");
        assert_eq!(report.corrupt_received, 0);
    }
    assert_eq!(relay.n("on_demand_chunks"), 1, "{}", relay.status());
}

#[test]
fn a_quota_below_the_scheduled_masters_keeps_them_all_and_says_so() {
    let f = Fleet::new("00:00-23:59", 100, 8, "start=2030-01-07T12:00:00Z speed=1");
    let relay = f.relay(&RelayOpts {
        quota: "500 KB",
        scrub_mib: 0,
        extra: String::new(),
    });
    relay.wait("the master to complete", 30, Relay::complete);
    relay.wait("the quota to be reported", 10, |r| {
        r.n("pinned_over_quota") > 0
    });
    let s = relay.status();
    assert!(s["pinned_bytes"].as_u64().unwrap() > 500_000, "{s}");
    assert_eq!(s["evicted_chunks"], 0, "{s}");
    assert!(relay.log_text().contains("QUOTA TOO SMALL"));
    // The DSI sees it too, in the fleet table (the relay reports every second here).
    std::thread::sleep(Duration::from_millis(1500));
    let fleet = f.nightcast(&["fleet"]);
    assert!(
        fleet.contains("relay-1") && fleet.contains("QUOTA TOO SMALL"),
        "{fleet}"
    );
    assert_eq!(
        relay.chunks().len(),
        f.manifest.unique_chunks().len(),
        "a pinned chunk was evicted"
    );
}

#[test]
fn agents_are_served_all_day_from_the_cache_while_the_controller_is_down() {
    // 600x: the hour-long window lasts 6 real seconds (3 were too few on a loaded machine).
    let mut f = Fleet::new(
        "22:00-23:00",
        100,
        8,
        "start=2030-01-07T21:59:59Z speed=600",
    );
    let nuc = f.agent("nuc-1");
    let relay = f.relay(&DEFAULT_RELAY);

    // A spare with nothing configured finds the relay and enrols through it, no token typed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let found = rt
        .block_on(image_tools::discovery::discover(
            relay.discovery,
            Duration::from_secs(2),
        ))
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let (service, answer) = &found[0];
    assert_eq!((*service, answer.site.as_str()), (relay.lan, "lyon"));
    let fingerprint = answer.ca_fingerprint().unwrap();
    let ca = Credentials::load(&relay.data.join("tls")).unwrap().ca;
    assert_eq!(image_tools::trust::fingerprint(&ca), fingerprint);
    let spare = rt.block_on(async {
        let endpoint = exchange::client_endpoint().unwrap();
        let tls = image_tools::trust::pinned_ca_client_config(
            fingerprint,
            image_tools::trust::Expect::AnyRelay,
            f.clock,
        )
        .unwrap();
        let conn = Connection::connect(&endpoint, *service, tls).await.unwrap();
        let (key, public) = image_tools::trust::node_key().unwrap();
        let request = exchange::EnrollRequest {
            token: String::new(),
            role: Role::Agent,
            node_id: "spare-1".into(),
            public_key: public.clone(),
            mac: "02:00:00:00:00:99".into(),
            renewal: false,
        };
        let reply = conn.enroll(request).await.unwrap();
        let (creds, signing) = image_tools::trust::accept_enrolment(
            fingerprint,
            Role::Agent,
            &image_tools::NodeId::new("spare-1").unwrap(),
            key,
            &public,
            reply,
            f.clock,
        )
        .unwrap();
        assert_eq!(
            signing.key, f.key,
            "the relay passed on another signing key"
        );
        creds
    });
    assert_eq!(
        spare.identity().map(|i| i.to_string()),
        Some("agent lyon/spare-1".to_owned())
    );

    relay.wait("the master to complete", 20, Relay::complete);
    until(&f, "2030-01-07T23:01:00Z");
    f.stop_controller();

    let (report, agent_store) = nuc.fetch(relay.lan, &f.key);
    assert_eq!(report.fetched, f.manifest.unique_chunks().len() as u64);
    assert!(report.lacking.is_empty());
    assemble_matches(&f, &agent_store.path().join("store"));

    // A chunk the relay lost: outside the window it answers "not yet", with the next window.
    let id = f.manifest.unique_chunks()[2].id;
    LocalStore::open(&relay.data.join("store"))
        .unwrap()
        .remove(&id)
        .unwrap();
    let (report, _) = nuc.fetch(relay.lan, &f.key);
    assert_eq!(report.lacking, vec![id]);
    assert_eq!(report.expected, Some(at("2030-01-08T22:00:00Z")));

    // The controller comes back (on another port): the relay finds it again by itself.
    f.start_controller();
    relay.wait("the relay to notice the old link is dead", 60, |r| {
        r.log_text().contains("lost the controller")
    });
    relay.wait("the relay to reconnect", 30, |r| {
        r.status()["connected"] == true
    });
}

#[test]
fn a_full_disk_stops_fetching_says_so_and_the_lan_is_still_served() {
    let f = Fleet::new("00:00-23:59", 100, 24, "start=2030-01-07T12:00:00Z speed=1");
    // The cache on its own small partition, smaller than the master.
    let _disk = SmallDisk::mount(&f.relay_data().join("store"), "2m");
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the full disk to be reported", 30, |r| {
        r.status()["disk_full"] == true
    });
    let s = relay.status();
    assert!(
        s["last_error"].as_str().unwrap_or("").contains("DISK FULL"),
        "{s}"
    );
    assert!(!relay.complete());
    relay.wait("the state to say it will retry", 5, |r| {
        r.status()["state"]
            .as_str()
            .is_some_and(|s| s.contains("retrying"))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let fleet = f.nightcast(&["fleet"]);
    assert!(fleet.contains("DISK FULL"), "{fleet}");
    // The fetcher stopped: nothing more is fetched while the disk is full.
    let fetched = relay.n("fetched_bytes");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(relay.n("fetched_bytes"), fetched);

    // A NUC is still served: what the cache holds, and the rest passed through (the WAN is open).
    let nuc = f.agent("nuc-1");
    let (report, agent_store) = nuc.fetch(relay.lan, &f.key);
    assert!(report.lacking.is_empty(), "{report:?}");
    assemble_matches(&f, &agent_store.path().join("store"));
}

/// A fleet whose controller also serves far links (satellite, 4G) with BBR on `far_listen`; its
/// WAN forwarder still leads to `listen`, and its master takes some 8 seconds at the cap.
fn far_fleet(far_listen: std::net::SocketAddr) -> Fleet {
    Fleet::build(
        "00:00-23:59",
        8,
        8,
        "start=2030-01-07T12:00:00Z speed=1",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n",
        &format!("far_listen = \"{far_listen}\"\n"),
    )
}

/// A [`far_fleet`] whose far port has a counting forwarder of its own, returned first: on the
/// host the relay knows the controller by (127.0.0.1), at the port the controller's far_listen
/// has on 127.0.0.2.
fn far_port_counted() -> (crate::util::UdpCounter, Fleet) {
    let far_wan = crate::util::UdpCounter::start("127.0.0.2:9".parse().unwrap());
    let far_listen: std::net::SocketAddr = format!("127.0.0.2:{}", far_wan.addr.port())
        .parse()
        .unwrap();
    let f = far_fleet(far_listen);
    far_wan.set_upstream(far_listen);
    (far_wan, f)
}

fn controller_log(f: &Fleet) -> String {
    std::fs::read_to_string(f.dir.path().join("controller.log")).unwrap()
}

/// A far site (satellite, 4G): the DSI points its relay at the controller's `far_listen` port,
/// where the controller sends with BBR, and the relay fetches its master there as on `listen`.
#[test]
fn a_far_sites_relay_fetches_through_the_controllers_bbr_port() {
    let far = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap();
    let f = far_fleet(far);
    // The WAN now leads to the far port only.
    f.wan.set_upstream(far);
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 60, Relay::complete);
    assemble_matches(&f, &relay.data.join("store"));
    let log = controller_log(&f);
    assert!(
        log.contains("far links (satellite, 4G): relays that connect here are sent to with BBR")
            && log.contains(&far.port().to_string()),
        "{log}"
    );
}

/// The DSI says from the controller that a site is far (`nightcast site set lyon --link far`):
/// its relay, configured with the controller's usual address, fetches through the far port by
/// itself, and goes back to the usual address when the site is wired again.
#[test]
fn the_dsi_sets_a_site_far_and_its_relay_moves_to_the_far_port_and_back() {
    let (far_wan, f) = far_port_counted();
    let port = far_wan.addr.port();
    let said = f.nightcast(&["site", "set", "lyon", "--link", "far"]);
    assert!(said.contains(&format!("link: far (port {port})")), "{said}");
    assert!(f.nightcast(&["site", "list"]).contains("far (port"));

    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 90, Relay::complete);
    assemble_matches(&f, &relay.data.join("store"));
    let total = f.stored_bytes();
    let (far_bytes, wan_bytes) = (far_wan.bytes(), f.wan.bytes());
    assert!(
        far_bytes > total && wan_bytes < total / 10,
        "far port {far_bytes} B, usual port {wan_bytes} B, for a master of {total} B"
    );
    let s = relay.status();
    assert_eq!(s["far_link"], true, "{s}");
    assert_eq!(s["controller_addr"], format!("127.0.0.1:{port}"), "{s}");
    assert_eq!(s["far_port_failures"], 0, "{s}");
    let log = controller_log(&f);
    assert!(
        log.lines().any(|l| l.contains("far_link")
            && l.contains("BBR")
            && l.contains("relay-1")
            && l.contains("connected")),
        "{log}"
    );

    // Wired again: the next master comes through the usual port.
    f.nightcast(&["site", "set", "lyon", "--link", "wired"]);
    relay.wait("the link back on the usual port", 30, |r| {
        let s = r.status();
        s["far_link"] == false && s["connected"] == true
    });
    let (far_before, wan_before) = (far_wan.bytes(), f.wan.bytes());
    let v2 = f.add_master("2", &image_tools::testimage::evolve(&f.image, 0.5, 3));
    f.calendar("lyon,salle-1,demo,2,2030-01-09 08:00,2030-01-09 17:00\n");
    relay.wait("version 2 to complete", 90, |r| {
        let s = r.status();
        s["masters"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["version"] == "2" && m["complete"] == true)
        })
    });
    let new_bytes = v2.summary().unique_stored_bytes / 4;
    let (far_after, wan_after) = (far_wan.bytes(), f.wan.bytes());
    assert!(
        wan_after - wan_before > new_bytes && far_after - far_before < 10_000,
        "usual port {} B, far port {} B after the site was wired again",
        wan_after - wan_before,
        far_after - far_before
    );
    assert_eq!(relay.status()["controller_addr"], f.wan.addr.to_string());
}

/// The controller behind a NAT that maps another public port to `far_listen` (`far_public_port`):
/// a far site's plan names the public port, and its relay fetches through it.
#[test]
fn a_far_sites_relay_is_sent_to_the_public_port_a_nat_maps_to_far_listen() {
    let far_listen = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap();
    // The NAT: another port on the host the relay knows the controller by, forwarding there.
    let nat = crate::util::UdpCounter::start(far_listen);
    let public = nat.addr.port();
    assert_ne!(public, far_listen.port());
    let f = Fleet::build(
        "00:00-23:59",
        8,
        8,
        "start=2030-01-07T12:00:00Z speed=1",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n",
        &format!("far_listen = \"{far_listen}\"\nfar_public_port = {public}\n"),
    );
    let said = f.nightcast(&["site", "set", "lyon", "--link", "far"]);
    assert!(
        said.contains(&format!("link: far (port {public})")),
        "{said}"
    );
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 90, Relay::complete);
    assemble_matches(&f, &relay.data.join("store"));
    let total = f.stored_bytes();
    assert!(
        nat.bytes() > total && f.wan.bytes() < total / 10,
        "public far port {} B, usual port {} B, for a master of {total} B",
        nat.bytes(),
        f.wan.bytes()
    );
    assert_eq!(
        relay.status()["controller_addr"],
        format!("127.0.0.1:{public}")
    );
}

/// `nightcast node wake`: the site's relay sends the magic packet to the MAC the NUC reported,
/// at once (not at the next window), and only for a NUC: a relay cannot be reset or woken.
#[test]
fn the_dsi_wakes_a_nuc_through_its_relay() {
    let f = Fleet::new("22:00-06:00", 100, 4, "start=2030-01-07T12:00:00Z speed=1");
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.agent("nuc-1");
    nuc.report(
        relay.lan,
        AgentReport {
            mac: Some("52:54:00:ab:cd:ef".into()),
            ..AgentReport::default()
        },
    );
    let said = f.nightcast(&["node", "wake", "nuc-1"]);
    assert!(
        said.starts_with("wake of nuc-1 at lyon asked (order 1)"),
        "{said}"
    );
    let mut packet = [0u8; 200];
    let n = f.wol.recv(&mut packet).expect("no Wake-on-LAN packet");
    assert_eq!(n, 102);
    assert_eq!(&packet[6..12], &[0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

    let token = f.dir.path().join("controller/admin.token");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["--api", &f.api, "--token-file", token.to_str().unwrap()])
        .args(["node", "reset", "relay-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("relay-1 is not an enrolled NUC"), "{err}");
}

/// A second relay of the site gone bad (its certificate is genuine, relay-0 sorts first, so it
/// would cross the WAN for both) says it holds every chunk and sends other bytes: the relay
/// refuses every one, sets it aside, crosses the WAN itself, completes the master and names it
/// to the DSI.
#[test]
fn a_sibling_relay_that_sends_corrupt_chunks_is_set_aside_and_the_wan_brings_the_master() {
    let f = Fleet::new("00:00-23:59", 100, 8, "start=2030-01-07T12:00:00Z speed=1");
    let rogue = f.enrolled(Role::Relay, "relay-0");
    let port = crate::rogue::start(
        &rogue,
        Role::Relay,
        image_tools::trust::Admit::SiteOf(image_tools::SiteId::new("lyon").unwrap()),
    )
    .port();
    let ca = rogue.creds.trusted_cas().into_iter().next().unwrap();
    let answer = image_tools::discovery::Answer {
        nightcast: 1,
        site: "lyon".into(),
        relay: "relay-0".into(),
        port,
        ca: image_tools::ids::hex(&image_tools::trust::fingerprint(ca)),
        also: Vec::new(),
    };
    let ask = rogue.rt.block_on(async {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(image_tools::discovery::answer(socket, answer));
        addr
    });

    let relay = f.relay(&RelayOpts {
        extra: format!("sibling_discovery = \"{ask}\""),
        ..DEFAULT_RELAY
    });
    relay.wait("the master to complete over the WAN", 60, Relay::complete);
    let s = relay.status();
    let bad = s["bad_siblings"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{s}");
    assert_eq!(bad[0]["node"], "relay-0");
    assert!(s["siblings"].as_array().unwrap().is_empty(), "{s}");
    assert!(s["upstream"].is_null(), "{s}");
    assert_eq!(s["sibling_bytes"], 0, "nothing it sent was kept: {s}");
    // Every chunk in the relay's store is the master's, whole.
    let store = LocalStore::open(&relay.data.join("store")).unwrap();
    for c in f.manifest.unique_chunks() {
        store.get(&c.id).unwrap();
    }
    // The DSI reads it in the fleet.
    f.fleet_showing("RELAY relay-0 sent corrupt chunks of demo 1", 30);
    // Discovery still finds it, but it is not taken back for the night.
    std::thread::sleep(Duration::from_secs(3));
    assert!(relay.status()["siblings"].as_array().unwrap().is_empty());
}

/// A far site whose far port does not answer (a firewall left closed on the way): the relay says
/// so, counts it, and fetches through its configured address meanwhile.
#[test]
fn a_far_port_that_does_not_answer_leaves_the_relay_on_its_configured_address() {
    let (far_wan, f) = far_port_counted();
    far_wan
        .cut
        .store(true, std::sync::atomic::Ordering::Relaxed);
    f.nightcast(&["site", "set", "lyon", "--link", "far"]);
    let relay = f.relay(&DEFAULT_RELAY);
    // The far port is given up after QUIC's 30-second handshake timeout.
    relay.wait("the master to complete", 120, Relay::complete);
    assemble_matches(&f, &relay.data.join("store"));
    let s = relay.status();
    assert!(s["far_port_failures"].as_u64() >= Some(1), "{s}");
    assert_eq!(s["far_link"], false, "{s}");
    assert_eq!(s["controller_addr"], f.wan.addr.to_string(), "{s}");
    assert!(f.wan.bytes() > f.stored_bytes(), "{}", f.wan.bytes());
    assert!(
        relay
            .log_text()
            .contains("cannot reach the controller's far port; fetching through the configured address meanwhile"),
        "{}",
        relay.log_text()
    );
}
