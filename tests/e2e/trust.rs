//! Trust at the edge, as an attacker with a laptop on a site's VLAN and as the DSI see it: real
//! controller, relay and agent processes on loopback. A stranger gets no certificate and no chunk
//! until the DSI lets it in; a known node id keeps its role and site; a revoked NUC is refused by
//! its relay also while the controller is away; a token is redeemed once; certificates renew
//! themselves before they expire.

use std::net::SocketAddr;
use std::time::Duration;

use crate::fleet::*;
use image_tools::exchange::{self, Connection, EnrollRequest, ExchangeError};
use image_tools::trust::{self, Credentials, Expect};
use image_tools::wire::{ErrorCode, Hello, Role, PROTOCOL_VERSION};
use image_tools::NodeId;
use serde_json::Value;

/// A host on the LAN with no token and no certificate asks the relay to enrol `node` with `key`
/// (PKCS#8, public point); the CA is pinned from the relay's own files (as `ca_fingerprint` in
/// a NUC's configuration would).
fn ask(
    f: &Fleet,
    relay: &Relay,
    node: &str,
    key: &(Vec<u8>, Vec<u8>),
) -> Result<Credentials, ExchangeError> {
    let ca = Credentials::load(&relay.data.join("tls")).unwrap().ca;
    let pinned = trust::fingerprint(&ca);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let endpoint = exchange::client_endpoint()?;
        let tls = trust::pinned_ca_client_config(pinned, Expect::AnyRelay, f.clock)?;
        let conn = Connection::connect(&endpoint, relay.lan, tls).await?;
        let reply = conn
            .enroll(EnrollRequest {
                token: String::new(),
                role: Role::Agent,
                node_id: node.into(),
                public_key: key.1.clone(),
                mac: "02:00:de:ad:be:ef".into(),
                renewal: false,
            })
            .await?;
        let (creds, _) = trust::accept_enrolment(
            pinned,
            Role::Agent,
            &NodeId::new(node).unwrap(),
            key.0.clone(),
            &key.1,
            reply,
            f.clock,
        )?;
        Ok(creds)
    })
}

/// `ask`, again while the relay cannot reach the controller yet; the first real answer.
pub(crate) fn ask_until_answered(
    f: &Fleet,
    relay: &Relay,
    node: &str,
    key: &(Vec<u8>, Vec<u8>),
) -> Result<Credentials, ExchangeError> {
    for _ in 0..100 {
        match ask(f, relay, node, key) {
            Err(ExchangeError::Refused {
                code: ErrorCode::Internal,
                ..
            }) => std::thread::sleep(Duration::from_millis(200)),
            other => return other,
        }
    }
    panic!("the relay never passed the request on");
}

fn code(r: Result<Credentials, ExchangeError>) -> ErrorCode {
    match r {
        Err(ExchangeError::Refused { code, .. }) => code,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(c) => panic!(
            "expected a refusal, got a certificate for {:?}",
            c.identity()
        ),
    }
}

fn fleet_row(f: &Fleet, node: &str) -> Option<Value> {
    let fleet: Value = serde_json::from_str(&f.nightcast(&["--json", "fleet"])).unwrap();
    fleet
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == node)
        .cloned()
}

/// Chunks and plans for whoever asks without a certificate.
fn anonymous_reads(f: &Fleet, relay: SocketAddr) -> (ErrorCode, ErrorCode) {
    let ca = Credentials::load(&f.relay_data().join("tls")).unwrap().ca;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let endpoint = exchange::client_endpoint().unwrap();
        let tls =
            trust::pinned_ca_client_config(trust::fingerprint(&ca), Expect::AnyRelay, f.clock)
                .unwrap();
        let conn = Connection::connect(&endpoint, relay, tls).await.unwrap();
        let ids: Vec<_> = f.manifest.chunks().map(|c| c.id).take(4).collect();
        let chunks = match conn.get_chunks(&ids, |_, _| Ok(())).await {
            Err(ExchangeError::Refused { code, .. }) => code,
            other => panic!("chunks without a certificate: {other:?}"),
        };
        let plan = match conn.plan().await {
            Err(ExchangeError::Refused { code, .. }) => code,
            other => panic!("a plan without a certificate: {other:?}"),
        };
        (chunks, plan)
    })
}

#[test]
fn a_stranger_on_the_lan_gets_no_certificate_and_no_chunk_until_the_dsi_approves_its_key() {
    let f = Fleet::new("00:00-23:59", 100, 4, "start=2030-01-07T12:00:00Z speed=1");
    f.nightcast(&["site", "accept-new", "lyon", "--for", "0"]);
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 30, Relay::complete);

    let nuc = trust::node_key().unwrap();
    assert_eq!(
        code(ask_until_answered(&f, &relay, "intruder-1", &nuc)),
        ErrorCode::Pending
    );
    assert_eq!(
        anonymous_reads(&f, relay.lan),
        (ErrorCode::Unauthorized, ErrorCode::Unauthorized)
    );
    // The DSI sees it waiting, with its MAC, and nothing was enrolled.
    let row = fleet_row(&f, "intruder-1").expect("the pending NUC is in the fleet");
    assert_eq!(row["state"], "pending", "{row}");
    assert_eq!(row["mac"], "02:00:de:ad:be:ef");
    assert!(
        row["attention"]
            .as_str()
            .unwrap()
            .contains("nightcast node approve intruder-1"),
        "{row}"
    );
    let human = f.nightcast(&["fleet"]);
    assert!(human.contains("PENDING"), "{human}");

    // Approved for the key the DSI saw: another key asking under that id gets nothing...
    let key_shown = row["key"].as_str().unwrap().to_owned();
    let out = f.nightcast(&["node", "approve", "intruder-1"]);
    assert!(out.contains(&key_shown), "{out}");
    let other = trust::node_key().unwrap();
    assert_eq!(
        code(ask(&f, &relay, "intruder-1", &other)),
        ErrorCode::Pending
    );
    // ...and resets the approval (the DSI approves the key it sees, never one it did not).
    assert_eq!(
        code(ask(&f, &relay, "intruder-1", &nuc)),
        ErrorCode::Pending
    );
    f.nightcast(&["node", "approve", "intruder-1"]);
    let creds = ask(&f, &relay, "intruder-1", &nuc).unwrap();
    assert_eq!(
        creds.identity().unwrap().to_string(),
        "agent lyon/intruder-1"
    );
    let row = fleet_row(&f, "intruder-1").unwrap();
    assert_eq!(row["role"], "agent", "{row}");
    assert_ne!(row["state"], "pending", "{row}");
}

#[test]
fn a_spare_waits_for_the_dsi_and_enrols_by_itself_once_the_site_is_opened() {
    let f = Fleet::new("00:00-23:59", 100, 4, "start=2030-01-07T12:00:00Z speed=1");
    f.nightcast(&["site", "accept-new", "lyon", "--for", "0"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let spare = f.agent_process("spare-1", &relay);
    spare.wait("the spare to wait for the DSI", 30, |a| {
        a.s("state").contains("waiting for the DSI")
    });
    assert_eq!(spare.s("site"), "", "not enrolled while the site is closed");
    assert!(!spare.data.join("tls/node.crt").exists());
    // The DSI opens the site from the office; nobody touches the spare.
    let out = f.nightcast(&["site", "accept-new", "lyon", "--for", "2h"]);
    assert!(
        out.contains("lets new NUCs in by themselves until"),
        "{out}"
    );
    spare.wait("the spare to enrol", 30, |a| a.s("site") == "lyon");
    assert!(spare.data.join("tls/node.crt").exists());
    assert!(
        !spare.data.join("enrol.key").exists(),
        "the enrolment key is not left behind"
    );
}

#[test]
fn a_known_node_id_is_never_re_enrolled_into_another_role_or_by_a_stranger() {
    let f = Fleet::new("00:00-23:59", 100, 4, "start=2030-01-07T12:00:00Z speed=1");
    let relay = f.relay(&DEFAULT_RELAY);
    // The site is open for new NUCs (the fixture's default), yet the relay's own id is refused...
    let stranger = trust::node_key().unwrap();
    assert_eq!(
        code(ask_until_answered(&f, &relay, "relay-1", &stranger)),
        ErrorCode::Unauthorized
    );
    let row = fleet_row(&f, "relay-1").unwrap();
    assert_eq!(row["role"], "relay", "the relay's row is untouched: {row}");
    // ...and an enrolled NUC's id asked again with another key waits for the DSI.
    let nuc = trust::node_key().unwrap();
    ask(&f, &relay, "nuc-1", &nuc).unwrap();
    assert_eq!(
        code(ask(&f, &relay, "nuc-1", &stranger)),
        ErrorCode::Pending
    );
    // The relay keeps serving its site: it still completes the master.
    relay.wait("the master to complete", 30, Relay::complete);
}

#[test]
fn a_revoked_nuc_is_refused_by_its_relay_also_while_the_controller_is_down() {
    let mut f = Fleet::new("00:00-23:59", 100, 4, "start=2030-01-07T12:00:00Z speed=1");
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 30, Relay::complete);
    let nuc = f.agent_process("nuc-1", &relay);
    nuc.wait("nuc-1 to enrol and connect", 30, |a| {
        a.s("site") == "lyon" && a.status()["connected"] == true
    });
    let creds = Credentials::load(&nuc.data.join("tls")).unwrap();
    let clock = f.clock;
    let connects = |relay: &Relay| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let endpoint = exchange::client_endpoint().unwrap();
            let site = image_tools::SiteId::new("lyon").unwrap();
            let tls = creds.client_config(Expect::RelayOf(site), clock).unwrap();
            let conn = Connection::connect(&endpoint, relay.lan, tls).await?;
            conn.hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                software_version: "test".into(),
                role: Role::Agent,
                node_id: "nuc-1".into(),
                capabilities: vec![],
            })
            .await?;
            conn.plan().await
        })
        .is_ok()
    };
    assert!(connects(&relay));

    let out = f.nightcast(&["node", "revoke", "nuc-1"]);
    assert!(out.contains("revoked"), "{out}");
    let plan = relay.data.join("plan.json");
    wait_for(
        &relay,
        "the relay to learn of the revocation",
        30,
        |_| {
            std::fs::read_to_string(&plan)
                .is_ok_and(|p| !p.contains("\"revoked\": []") && p.contains("\"revoked\""))
        },
        Relay::status,
        Relay::log_text,
    );
    f.stop_controller();
    assert!(
        !connects(&relay),
        "a revoked certificate got through the handshake"
    );
    nuc.wait("the agent to be cut off", 30, |a| {
        a.status()["connected"] == false
    });
    // A relay restarted while the controller is away still refuses it (the plan on disk).
    drop(relay);
    let relay = f.relay(&DEFAULT_RELAY);
    assert!(!connects(&relay));
    // Removed and re-imaged, it may come back only by the DSI's rules.
    f.start_controller();
    f.nightcast(&["node", "rm", "nuc-1"]);
    assert!(fleet_row(&f, "nuc-1").is_none_or(|r| r["state"] == "pending"));
}

#[test]
fn one_token_enrols_one_node_however_many_ask_at_once() {
    let f = Fleet::new("00:00-23:59", 100, 4, "start=2030-01-07T12:00:00Z speed=1");
    let token = f.nightcast(&["enroll", "--role", "agent", "--site", "lyon"]);
    let token = token.trim().to_owned();
    let wins = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (token, quic, clock) = (token.clone(), f.quic, f.clock);
                s.spawn(move || {
                    let rt = tokio::runtime::Runtime::new().unwrap();
                    rt.block_on(exchange::enroll(
                        quic,
                        &token,
                        Role::Agent,
                        &format!("nuc-{i}"),
                        clock,
                    ))
                    .is_ok()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|won| *won)
            .count()
    });
    assert_eq!(wins, 1);
}

#[test]
fn certificates_renew_themselves_before_they_expire() {
    // A one-day lifetime on a clock running 3600x: a certificate lives 24 real seconds and is
    // renewed once 8 hours (8 s) of it are left.
    let f = Fleet::build(
        "00:00-23:59",
        100,
        4,
        "start=2030-01-07T12:00:00Z speed=3600",
        "lyon,salle-1,demo,1,2030-01-09 08:00,2030-01-09 17:00\n",
        "[trust]\ncertificate_lifetime_days = 1\n",
    );
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.agent_process("nuc-1", &relay);
    nuc.wait("nuc-1 to enrol", 30, |a| a.s("site") == "lyon");
    let first = |dir: &std::path::Path| Credentials::load(&dir.join("tls")).unwrap();
    let (relay_cert, nuc_cert) = (first(&relay.data), first(&nuc.data));
    let expiry = relay_cert
        .not_after()
        .unwrap()
        .max(nuc_cert.not_after().unwrap());
    // Past both first certificates' end, both still talk.
    std::thread::sleep(f.clock.real_until(expiry + 3600));
    let (relay_now, nuc_now) = (first(&relay.data), first(&nuc.data));
    assert_ne!(relay_now.serial(), relay_cert.serial(), "the relay renewed");
    assert_ne!(nuc_now.serial(), nuc_cert.serial(), "the NUC renewed");
    assert!(relay_now.not_after().unwrap() > f.clock.now());
    assert!(nuc_now.not_after().unwrap() > f.clock.now());
    nuc.wait("the NUC to still reach its relay", 10, |a| {
        a.status()["connected"] == true
    });
    relay.wait("the relay to still reach the controller", 10, |r| {
        r.status()["connected"] == true
    });
}

/// A site with its relay and two seated NUCs (nuc-a, nuc-b) running version 1 of demo, on a 60x
/// clock (a virtual minute is a real second); with the controller's data directory.
fn two_nucs_on_version_1() -> (Fleet, String, Relay, AgentProc, AgentProc) {
    // 60x: a virtual minute is a real second.
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T06:00:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 08:20\n",
        "",
    );
    let data = f.dir.path().join("controller");
    let data = data.to_str().unwrap().to_owned();
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-2"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let a = f.seated_agent("nuc-a", "pc-1", &relay, "");
    let b = f.seated_agent("nuc-b", "pc-2", &relay, "");
    for nuc in [&a, &b] {
        nuc.wait("version 1 to be ready", 60, |n| n.s("current") == "demo 1");
    }
    (f, data, relay, a, b)
}

#[test]
fn the_signing_key_rotates_with_a_relay_cut_off_and_a_nuc_off_during_parts_of_it() {
    let (mut f, data, relay, a, b) = two_nucs_on_version_1();
    let keys = || ok("nightcast-controller", &["signing-keys", "--data", &data]);
    let old = keys().split_whitespace().next().unwrap().to_owned();
    // nuc-b is off for the whole rotation; the relay is cut off from the controller while the
    // DSI rotates (the controller is stopped).
    let mut b = b;
    b.kill9();
    f.stop_controller();
    let out = ok(
        "nightcast-controller",
        &["rotate-signing-key", "--data", &data],
    );
    assert!(out.contains("new manifest-signing key"), "{out}");
    let listed = keys();
    let new = listed.split_whitespace().next().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(
        listed.contains(&old),
        "the old key stays accepted: {listed}"
    );
    f.start_controller();

    // Version 2, signed by the new key, for the next session: the relay and nuc-a learn the new
    // key from their plans and take it.
    let v2 = image_tools::testimage::evolve(&f.image, 0.05, 7);
    f.add_master("2", &v2);
    f.calendar("lyon,salle-1,demo,2,2030-01-08 09:00,2030-01-08 09:20\n");
    a.wait("version 2 (new key) to be prepared on nuc-a", 90, |n| {
        n.s("next") == "demo 2" && n.s("next_state") == "ready"
    });
    let ring = |dir: &std::path::Path| -> Vec<Value> {
        serde_json::from_slice(&std::fs::read(dir.join("signing-keys.json")).unwrap()).unwrap()
    };
    assert_eq!(ring(&relay.data).len(), 2, "the relay accepts both keys");
    assert_eq!(ring(&a.data).len(), 2, "nuc-a accepts both keys");
    assert_eq!(a.n("refused_manifests"), 0);

    // The DSI retires the old key; the plans stop endorsing it.
    f.stop_controller();
    let out = ok(
        "nightcast-controller",
        &["retire-signing-key", "--data", &data, &old],
    );
    assert!(out.contains("retired"), "{out}");
    assert_eq!(keys().lines().count(), 1);
    f.start_controller();
    // (The relay notices the stopped controller's link is dead within QUIC's 30 s idle timeout.)
    relay.wait("the relay's plan to endorse only the new key", 90, |r| {
        std::fs::read_to_string(r.data.join("plan.json"))
            .ok()
            .and_then(|p| serde_json::from_str::<Value>(&p).ok())
            .is_some_and(|p| p["signing_keys"].as_array().is_some_and(|k| k.len() == 1))
    });

    // nuc-b, off during the whole rotation, comes back: it learns the new key from its first
    // plan and prepares version 2 like the others.
    let b = b.restart_after_kill9();
    b.wait("version 2 (new key) to be prepared on nuc-b", 90, |n| {
        n.s("next") == "demo 2" && n.s("next_state") == "ready"
    });
    assert_eq!(b.n("refused_manifests"), 0);
}

#[test]
fn the_ca_rotates_with_a_nuc_off_while_its_relay_moves_over() {
    let (mut f, data, relay, a, mut b) = two_nucs_on_version_1();
    let ca_of = |dir: &std::path::Path| {
        trust::fingerprint(&Credentials::load(&dir.join("tls")).unwrap().ca)
    };
    let old = ca_of(std::path::Path::new(&data));
    assert_eq!(ca_of(&relay.data), old);
    // nuc-b is off while its relay and nuc-a move to the new CA; a copy of its credentials as
    // they were, to try once the old CA is retired.
    b.kill9();
    let stale = Credentials::load(&b.data.join("tls")).unwrap();
    f.stop_controller();
    let out = ok_on(
        "nightcast-controller",
        &f.clock_spec,
        &["rotate-ca", "--data", &data, "--overlap-days", "30"],
    );
    assert!(out.contains("new CA"), "{out}");
    let err = fails_on(
        "nightcast-controller",
        &f.clock_spec,
        &["rotate-ca", "--data", &data],
    );
    assert!(err.contains("retire it first"), "{err}");
    assert_eq!(
        ca_of(std::path::Path::new(&data)),
        old,
        "the controller's own certificate moves only when it starts"
    );
    f.start_controller();
    assert_ne!(
        ca_of(std::path::Path::new(&data)),
        old,
        "the controller moved"
    );

    // The relay and nuc-a move over at their next plan, with nobody on site.
    relay.wait("the relay to move to the new CA", 90, |r| {
        ca_of(&r.data) != old
    });
    a.wait("nuc-a to move to the new CA", 90, |n| ca_of(&n.data) != old);
    let new = ca_of(&relay.data);
    assert_eq!(ca_of(std::path::Path::new(&data)), new);

    // Retiring the old CA now would strand nuc-b: refused, and nuc-b is named.
    f.stop_controller();
    let err = fails_on(
        "nightcast-controller",
        &f.clock_spec,
        &["retire-ca", "--data", &data],
    );
    assert!(err.contains("nuc-b"), "{err}");
    f.start_controller();

    // nuc-b comes back with its old certificate: it accepts its relay through the bridge (the
    // relay's certificate is the new CA's), moves over, and version 2 reaches both NUCs.
    let b = b.restart_after_kill9();
    b.wait("nuc-b to move to the new CA", 90, |n| ca_of(&n.data) == new);
    let v2 = image_tools::testimage::evolve(&f.image, 0.05, 7);
    f.add_master("2", &v2);
    f.calendar("lyon,salle-1,demo,2,2030-01-08 09:00,2030-01-08 09:20\n");
    for nuc in [&a, &b] {
        nuc.wait("version 2 to be prepared", 90, |n| {
            n.s("next") == "demo 2" && n.s("next_state") == "ready"
        });
        assert_eq!(nuc.n("refused_manifests"), 0);
    }

    // Every node has moved: the DSI retires the old CA; the bridge goes with the next plans.
    f.stop_controller();
    let out = ok_on(
        "nightcast-controller",
        &f.clock_spec,
        &["retire-ca", "--data", &data],
    );
    assert!(out.contains("retired"), "{out}");
    f.start_controller();
    relay.wait("the relay to drop the bridge", 90, |r| {
        Credentials::load(&r.data.join("tls"))
            .unwrap()
            .bridge
            .is_empty()
    });
    b.wait("nuc-b to drop the bridge", 90, |n| {
        Credentials::load(&n.data.join("tls"))
            .unwrap()
            .bridge
            .is_empty()
    });
    for nuc in [&a, &b] {
        nuc.wait("the NUC to still reach its relay", 30, |n| {
            n.status()["connected"] == true
        });
    }
    // A certificate of the retired CA gets nowhere.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt.block_on(async {
        let endpoint = exchange::client_endpoint()?;
        let tls = stale.client_config(
            Expect::RelayOf(image_tools::ids::SiteId::new("lyon").unwrap()),
            f.clock,
        )?;
        let conn = Connection::connect(&endpoint, relay.lan, tls).await?;
        conn.hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: "test".into(),
            role: Role::Agent,
            node_id: "nuc-b".into(),
            capabilities: vec![],
        })
        .await?;
        conn.plan().await
    });
    assert!(refused.is_err(), "the retired CA's certificate was served");
}
