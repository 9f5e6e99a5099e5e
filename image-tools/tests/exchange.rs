//! The chunk-exchange protocol over real QUIC on loopback: a controller-like server, relay- and
//! agent-like clients, certificates from a real CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use image_tools::assemble::assemble;
use image_tools::clock::Clock;
use image_tools::exchange::{
    self, fetch_missing, Connection, ExchangeError, FetchOptions, FrameReader, MemoryCatalog,
    RemoteStore, Service,
};
use image_tools::exchange::{EnrolAsk, EnrolDecision, EnrolPolicy, EnrollRequest, Issued, Via};
use image_tools::import::{import_reader, ImportOptions};
use image_tools::store::layers::Caching;
use image_tools::trust::{
    accept_enrolment, enrol_client_config, node_key, Admit, Ca, Credentials, Expect, Identity,
    Revoked, Token, Validity, DEFAULT_LIFETIME_SECS,
};
use image_tools::wire::{
    self, Control, ErrorCode, Frame, Hello, MasterRef, Role, PROTOCOL_VERSION,
};
use image_tools::{
    manifest_delta, testimage, ChunkParams, ChunkStore, LocalStore, NodeId, SigningKey, SiteId,
    VerifiedManifest,
};
use tokio_util::sync::CancellationToken;

fn now() -> i64 {
    Clock::system().now()
}

fn valid() -> Validity {
    Validity::starting(now(), DEFAULT_LIFETIME_SECS)
}

/// Tokens as the controller keeps them (role, site, expiry by secret hash); a relay vouches for
/// an agent of its own site by itself here (the controller's real rules are its own tests').
#[derive(Default)]
struct TestPolicy {
    tokens: std::sync::Mutex<std::collections::HashMap<String, (Role, String, i64)>>,
}

impl TestPolicy {
    fn token(&self, ca: &Ca, role: Role, site: &str, expires: i64) -> Token {
        let t = Token::generate(ca.fingerprint()).unwrap();
        self.tokens
            .lock()
            .unwrap()
            .insert(t.secret_hash(), (role, site.to_owned(), expires));
        t
    }
}

impl EnrolPolicy for TestPolicy {
    fn decide(&self, ask: &EnrolAsk, now: i64) -> EnrolDecision {
        let grant = ask
            .token
            .map(|t| self.tokens.lock().unwrap().remove(&t.secret_hash()));
        let refuse = |why: &str| EnrolDecision::Refuse(why.to_owned());
        match (&ask.via, grant) {
            (_, Some(None)) => refuse("unknown or already used"),
            (_, Some(Some((_, _, expires)))) if expires <= now => refuse("expired"),
            (_, Some(Some((role, _, _)))) if role != ask.role => refuse("another role"),
            (Via::Relay(r), Some(Some((_, site, _)))) if site != r.site.as_str() => {
                refuse("another site")
            }
            (_, Some(Some((_, site, _)))) => EnrolDecision::Issue {
                site: SiteId::new(&site).unwrap(),
            },
            (Via::Relay(r), None) => EnrolDecision::Issue {
                site: r.site.clone(),
            },
            (Via::Itself(me), None) => EnrolDecision::Issue {
                site: me.site.clone(),
            },
            (Via::Direct, None) => refuse("a token is needed"),
        }
    }

    fn issued(&self, _: &Issued<'_>) -> Result<(), String> {
        Ok(())
    }
}

fn request(token: &str, role: Role, node: &str, public_key: &[u8]) -> EnrollRequest {
    EnrollRequest {
        token: token.to_owned(),
        role,
        node_id: node.to_owned(),
        public_key: public_key.to_vec(),
        mac: String::new(),
        renewal: false,
    }
}

fn identity(role: Role, site: &str, node: &str) -> Identity {
    Identity {
        role,
        site: SiteId::new(site).unwrap(),
        node: NodeId::new(node).unwrap(),
    }
}

fn hello_for(id: &Identity) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        software_version: "test".into(),
        role: id.role,
        node_id: id.node.to_string(),
        capabilities: vec![],
    }
}

fn v(version: &str) -> MasterRef {
    MasterRef::new("demo", version).unwrap()
}

struct SharedPolicy(Arc<TestPolicy>);

impl EnrolPolicy for SharedPolicy {
    fn decide(&self, ask: &EnrolAsk, now: i64) -> EnrolDecision {
        self.0.decide(ask, now)
    }
    fn issued(&self, certificate: &Issued<'_>) -> Result<(), String> {
        self.0.issued(certificate)
    }
}

/// A controller: store with two versions of a master, a catalog scheduling v1 at site "lyon".
struct Controller {
    dir: tempfile::TempDir,
    ca: Ca,
    key: SigningKey,
    store: Arc<LocalStore>,
    catalog: Arc<MemoryCatalog>,
    v1: Vec<u8>,
    policy: Arc<TestPolicy>,
}

impl Controller {
    fn new(size: u64) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
        let key = SigningKey::from_seed([9; 32]);
        let v1 = testimage::image_bytes(size, 11);
        let v2 = testimage::evolve(&v1, 0.1, 11);
        let catalog = Arc::new(MemoryCatalog::default());
        for (img, version) in [(&v1, "1"), (&v2, "2")] {
            let opts = ImportOptions {
                name: "demo".parse().unwrap(),
                version: version.parse().unwrap(),
                params: ChunkParams::DEFAULT,
                threads: 2,
            };
            let m = import_reader(&img[..], 0, &store, &key, &opts, &|_, _| {})
                .unwrap()
                .manifest;
            catalog.add_manifest(v(version), m.bytes().to_vec());
        }
        catalog.schedule("lyon", vec![v("1")]);
        Controller {
            dir,
            ca: Ca::generate(Validity::ca(now())).unwrap(),
            key,
            store,
            catalog,
            v1,
            policy: Arc::default(),
        }
    }

    /// Starts serving on a fresh loopback port; returns the address and the shutdown token.
    fn serve(&self, with_enroller: bool) -> (SocketAddr, CancellationToken) {
        self.serve_within(with_enroller, exchange::Limits::default())
    }

    /// [`Controller::serve`] within `limits`.
    fn serve_within(
        &self,
        with_enroller: bool,
        limits: exchange::Limits,
    ) -> (SocketAddr, CancellationToken) {
        let me = identity(Role::Controller, "central", "controller");
        let creds = self.ca.issue(&me, valid()).unwrap();
        let endpoint = exchange::server_endpoint(
            "127.0.0.1:0".parse().unwrap(),
            creds
                .server_config(Admit::RelaysAndAgents, Revoked::default(), Clock::system())
                .unwrap(),
        )
        .unwrap();
        let addr = endpoint.local_addr().unwrap();
        let enroller = with_enroller.then(|| {
            let ca = image_tools::trust::Ca::load(&self.ca_dir()).unwrap();
            exchange::Enroller {
                ca,
                signing_key: self.key.public(),
                bridge: Vec::new(),
                lifetime_secs: DEFAULT_LIFETIME_SECS,
                clock: Clock::system(),
                policy: Box::new(SharedPolicy(self.policy.clone())),
            }
        });
        let service = Arc::new(Service {
            hello: hello_for(&me),
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            enroller,
            forward_enroll: None,
            on_report: Box::new(|_, _| {}),
            revoked: Revoked::default(),
            served: Default::default(),
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(exchange::serve_with(
            endpoint,
            service,
            limits,
            shutdown.clone(),
        ));
        (addr, shutdown)
    }

    fn ca_dir(&self) -> std::path::PathBuf {
        let dir = self.dir.path().join("ca");
        if !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            self.ca.save(&dir).unwrap();
        }
        dir
    }

    async fn client(&self, addr: SocketAddr, creds: &Credentials) -> Connection {
        let endpoint = exchange::client_endpoint().unwrap();
        let conn = Connection::connect(
            &endpoint,
            addr,
            creds
                .client_config(Expect::Controller, Clock::system())
                .unwrap(),
        )
        .await
        .unwrap();
        conn.hello(hello_for(&creds.identity().unwrap()))
            .await
            .unwrap();
        conn
    }
}

fn relay_store() -> (tempfile::TempDir, Arc<LocalStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
    (dir, store)
}

fn refused(e: ExchangeError) -> ErrorCode {
    match e {
        ExchangeError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_crosses_loopback_and_assembles_identical() {
    let c = Controller::new(256 << 20);
    let (addr, _stop) = c.serve(false);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    assert_eq!(conn.scheduled().await.unwrap(), vec![v("1")]);
    let bytes = conn.manifest(&v("1")).await.unwrap();
    let manifest = VerifiedManifest::open(bytes, &c.key.public()).unwrap();
    let (dir, store) = relay_store();
    let report = fetch_missing(
        &conn,
        store.clone(),
        &manifest,
        FetchOptions::default(),
        None,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.fetched, report.needed);
    assert_eq!(report.already_had, 0);
    assert_eq!(
        report.fetched_bytes,
        manifest.summary().unique_stored_bytes + 5 * report.fetched
    );
    let out = dir.path().join("out.img");
    let m = manifest.clone();
    let s = store.clone();
    let o = out.clone();
    tokio::task::spawn_blocking(move || assemble(&m, &*s, &o, &[], 2, &|_, _| {}).unwrap())
        .await
        .unwrap();
    assert!(
        std::fs::read(&out).unwrap() == c.v1,
        "assembled image differs"
    );
    // Everything is there now: a second pass moves nothing.
    let again = fetch_missing(
        &conn,
        store,
        &manifest,
        FetchOptions::default(),
        None,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!((again.fetched, again.already_had), (0, again.needed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_resumes_and_fetches_only_what_was_missing() {
    let c = Controller::new(32 << 20);
    let (addr, stop) = c.serve(false);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    let manifest =
        VerifiedManifest::open(conn.manifest(&v("1")).await.unwrap(), &c.key.public()).unwrap();
    let (_dir, store) = relay_store();
    // Slow enough to be cut in the middle; the server goes away a third of the way through.
    let rate = Arc::new(exchange::RateLimit::new(40_000_000));
    let needed = manifest.unique_chunks().len() as u64;
    let opts = FetchOptions {
        batch: 8,
        in_flight: 2,
        ..FetchOptions::default()
    };
    let cut = AtomicBool::new(false);
    let first = fetch_missing(
        &conn,
        store.clone(),
        &manifest,
        opts.clone(),
        Some(rate),
        &|p| {
            if p.chunks >= needed / 3 && !cut.swap(true, Ordering::SeqCst) {
                stop.cancel();
            }
        },
    )
    .await;
    assert!(
        matches!(first, Err(ExchangeError::Transport(_))),
        "{first:?}"
    );
    let kept = store.ids().unwrap().len() as u64;
    assert!(
        kept >= needed / 3 && kept < needed,
        "kept {kept} of {needed}"
    );

    let (addr, _stop) = c.serve(false);
    let conn = c.client(addr, &relay).await;
    let second = fetch_missing(&conn, store.clone(), &manifest, opts, None, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        second.already_had, kept,
        "chunks received before the cut were fetched again"
    );
    assert_eq!(second.fetched, needed - kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_transfer_keeps_what_it_received_and_asks_for_nothing_more() {
    // A relay's night window closes in the middle of a transfer.
    let c = Controller::new(32 << 20);
    let (addr, _stop) = c.serve(false);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    let manifest =
        VerifiedManifest::open(conn.manifest(&v("1")).await.unwrap(), &c.key.public()).unwrap();
    let (_dir, store) = relay_store();
    let rate = Arc::new(exchange::RateLimit::new(40_000_000));
    let needed = manifest.unique_chunks().len() as u64;
    let opts = FetchOptions {
        batch: 8,
        in_flight: 2,
        ..FetchOptions::default()
    };
    let stop = opts.stop.clone();
    let first = fetch_missing(&conn, store.clone(), &manifest, opts, Some(rate), &|p| {
        if p.chunks >= needed / 3 {
            stop.cancel();
        }
    })
    .await
    .unwrap();
    assert!(first.stopped);
    assert!(
        first.fetched >= needed / 3 && first.fetched < needed,
        "{first:?}"
    );
    // Every chunk received is stored, and nothing was asked for after the stop beyond the
    // requests already under way (2 in flight of 8 chunks).
    assert_eq!(store.ids().unwrap().len() as u64, first.fetched);
    assert!(first.fetched <= needed / 3 + 16, "{first:?}");
    let second = fetch_missing(
        &conn,
        store,
        &manifest,
        FetchOptions::default(),
        None,
        &|_| {},
    )
    .await
    .unwrap();
    assert!(!second.stopped);
    assert_eq!(second.fetched, needed - first.fetched);
}

/// A compromised server that flips a byte in the first chunk it sends (or in every one). Asked
/// for a manifest delta, it answers one made against other bytes than the base named (or, `old`,
/// it cannot read the request, as a server from before deltas).
async fn lying_server(c: &Controller, always: bool, old: bool) -> SocketAddr {
    let me = identity(Role::Controller, "central", "liar");
    let creds = c.ca.issue(&me, valid()).unwrap();
    let endpoint = exchange::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        creds
            .server_config(Admit::RelaysAndAgents, Revoked::default(), Clock::system())
            .unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let store = c.store.clone();
    let catalog = c.catalog.clone();
    tokio::spawn(async move {
        let lied = Arc::new(AtomicBool::new(false));
        while let Some(incoming) = endpoint.accept().await {
            let conn = incoming.await.unwrap();
            let (store, catalog, me, lied) =
                (store.clone(), catalog.clone(), me.clone(), lied.clone());
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let Some(Frame::Control(request)) =
                        FrameReader::default().next(&mut recv).await.unwrap()
                    else {
                        continue;
                    };
                    let mut out = Vec::new();
                    match request {
                        Control::Hello(_) => wire::encode(
                            &Frame::Control(Control::HelloAck(hello_for(&me))),
                            &mut out,
                        )
                        .unwrap(),
                        Control::GetManifest(m) => {
                            use image_tools::exchange::Catalog;
                            wire::encode(&Frame::Manifest(catalog.manifest(&m).unwrap()), &mut out)
                                .unwrap()
                        }
                        Control::GetManifestAgainst { master, base } => {
                            use image_tools::exchange::Catalog;
                            let frame = if old {
                                Frame::Control(Control::Error {
                                    code: ErrorCode::BadRequest,
                                    message: "control frame does not parse".into(),
                                })
                            } else {
                                // Made against the manifest itself, a byte changed: rebuilt
                                // against the asker's base, it is mostly that base.
                                let target = catalog.manifest(&master).unwrap();
                                let mut other = target.clone();
                                other[100] ^= 0x5a;
                                let zstd = manifest_delta::encode(&other, &target).unwrap();
                                Frame::ManifestDelta { base, zstd }
                            };
                            wire::encode(&frame, &mut out).unwrap()
                        }
                        Control::GetChunks(ids) => {
                            for id in ids {
                                let chunk = store.get(&id).unwrap();
                                let mut stored =
                                    [chunk.header().as_slice(), chunk.payload()].concat();
                                if always || !lied.swap(true, Ordering::SeqCst) {
                                    let last = stored.len() - 1;
                                    stored[last] ^= 0x5a;
                                }
                                wire::encode(&Frame::Chunk { id, stored }, &mut out).unwrap();
                            }
                            wire::encode(&Frame::Control(Control::End), &mut out).unwrap();
                        }
                        _ => {}
                    }
                    let _ = send.write_all(&out).await;
                    let _ = send.finish();
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_asked_against_one_the_relay_holds_comes_as_a_delta() {
    let c = Controller::new(16 << 20);
    c.catalog.schedule("lyon", vec![v("1"), v("2")]);
    let (addr, _stop) = c.serve(false);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    let v1 = conn.manifest(&v("1")).await.unwrap();
    let full = conn.manifest(&v("2")).await.unwrap();
    let got = conn.manifest_against(&v("2"), &v1).await.unwrap();
    assert!(got.delta);
    assert!(
        got.wire_bytes * 2 < full.len() as u64,
        "{} of {}",
        got.wire_bytes,
        full.len()
    );
    assert_eq!(got.bytes, full);
    let m = VerifiedManifest::open(got.bytes, &c.key.public()).unwrap();
    assert_eq!(m.master(), v("2"));
    // Bytes the server does not hold as a manifest of this master: the whole manifest.
    let got = conn
        .manifest_against(&v("2"), b"NCMF: not one of its manifests")
        .await
        .unwrap();
    assert_eq!((got.delta, got.wire_bytes), (false, full.len() as u64));
    assert_eq!(got.bytes, full);
    // A delta is a manifest like another: only for what the site may read.
    c.catalog.schedule("lyon", vec![v("1")]);
    let e = conn.manifest_against(&v("2"), &v1).await.unwrap_err();
    assert_eq!(refused(e), ErrorCode::Forbidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_from_a_lying_server_fails_the_signature_and_an_old_server_sends_it_whole() {
    let c = Controller::new(8 << 20);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(lying_server(&c, false, false).await, &relay).await;
    let v1 = conn.manifest(&v("1")).await.unwrap();
    // Rebuilt against our v1, a delta made against other bytes is not the signed v2.
    match conn.manifest_against(&v("2"), &v1).await {
        Ok(reply) => {
            assert!(reply.delta);
            let opened = VerifiedManifest::open(reply.bytes, &c.key.public());
            assert!(opened.is_err(), "a wrong delta verified");
        }
        Err(e) => assert!(matches!(e, ExchangeError::Protocol { .. }), "{e}"),
    }
    // A server that cannot read the request: asked again whole, on the same connection.
    let conn = c.client(lying_server(&c, false, true).await, &relay).await;
    let got = conn.manifest_against(&v("2"), &v1).await.unwrap();
    assert!(!got.delta);
    let m = VerifiedManifest::open(got.bytes, &c.key.public()).unwrap();
    assert_eq!(m.master(), v("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_from_a_peer_is_caught_and_fetched_again() {
    let c = Controller::new(8 << 20);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let addr = lying_server(&c, false, false).await;
    let conn = c.client(addr, &relay).await;
    let manifest =
        VerifiedManifest::open(conn.manifest(&v("1")).await.unwrap(), &c.key.public()).unwrap();
    let (dir, store) = relay_store();
    let report = fetch_missing(
        &conn,
        store.clone(),
        &manifest,
        FetchOptions::default(),
        None,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.corrupt_received, 1);
    assert_eq!(report.fetched, report.needed);
    let out = dir.path().join("out.img");
    let s = store.clone();
    let o = out.clone();
    tokio::task::spawn_blocking(move || assemble(&manifest, &*s, &o, &[], 2, &|_, _| {}).unwrap())
        .await
        .unwrap();
    assert!(std::fs::read(&out).unwrap() == c.v1);

    // A peer that keeps lying is named, and nothing it sent was stored.
    let addr = lying_server(&c, true, false).await;
    let conn = c.client(addr, &relay).await;
    let manifest =
        VerifiedManifest::open(conn.manifest(&v("1")).await.unwrap(), &c.key.public()).unwrap();
    let (_dir, store) = relay_store();
    let err = fetch_missing(
        &conn,
        store.clone(),
        &manifest,
        FetchOptions::default(),
        None,
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ExchangeError::PeerLied { peer, .. } if peer.contains("liar")),
        "{err}"
    );
    assert_eq!(store.ids().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_signed_by_another_key_is_refused() {
    let c = Controller::new(4 << 20);
    let forger = SigningKey::from_seed([66; 32]);
    let real = VerifiedManifest::open(c.catalog_manifest("1"), &c.key.public()).unwrap();
    let forged = real.manifest().clone().sign(&forger);
    c.catalog.add_manifest(v("1"), forged.bytes().to_vec());
    let (addr, _stop) = c.serve(false);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    let bytes = conn.manifest(&v("1")).await.unwrap();
    let err = VerifiedManifest::open(bytes, &c.key.public()).unwrap_err();
    assert!(err.to_string().contains("not by the pinned key"), "{err}");
}

impl Controller {
    fn catalog_manifest(&self, version: &str) -> Vec<u8> {
        use image_tools::exchange::Catalog;
        self.catalog.manifest(&v(version)).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_vouches_for_agents_of_its_own_site_only() {
    let c = Controller::new(4 << 20);
    let (addr, _stop) = c.serve(true);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    let (key, public) = node_key().unwrap();

    // No token: the policy decides for the relay's own site; the reply checks out against the CA.
    let reply = conn
        .enroll(request("", Role::Agent, "nuc-9", &public))
        .await
        .unwrap();
    let node = NodeId::new("nuc-9").unwrap();
    let (creds, signing) = accept_enrolment(
        c.ca.fingerprint(),
        Role::Agent,
        &node,
        key,
        &public,
        reply,
        Clock::system(),
    )
    .unwrap();
    assert_eq!(signing.key, c.key.public());
    assert_eq!(
        creds.identity(),
        Some(identity(Role::Agent, "lyon", "nuc-9"))
    );

    // Never another relay, and never with a token of another site.
    let err = conn
        .enroll(request("", Role::Relay, "relay-2", &public))
        .await
        .unwrap_err();
    assert_eq!(refused(err), ErrorCode::BadRequest);
    let paris = c.policy.token(&c.ca, Role::Agent, "paris", now() + 3600);
    let err = conn
        .enroll(request(&paris.to_string(), Role::Agent, "nuc-10", &public))
        .await
        .unwrap_err();
    assert_eq!(refused(err), ErrorCode::Unauthorized);

    // An agent cannot vouch for anybody (nor renew anybody but itself).
    let agent = c.client(addr, &creds).await;
    let err = agent
        .enroll(request("", Role::Agent, "nuc-11", &public))
        .await
        .unwrap_err();
    assert_eq!(refused(err), ErrorCode::BadRequest);
    let mut renewal = request("", Role::Agent, "nuc-11", &public);
    renewal.renewal = true;
    assert_eq!(
        refused(agent.enroll(renewal).await.unwrap_err()),
        ErrorCode::BadRequest
    );
    // Its own renewal is passed to the policy.
    let (_, fresh) = node_key().unwrap();
    let mut renewal = request("", Role::Agent, "nuc-9", &fresh);
    renewal.renewal = true;
    agent.enroll(renewal).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_serves_only_its_sites_agents_and_clients_check_whom_they_reach() {
    let c = Controller::new(4 << 20);
    let (addr, _stop) = c.serve(false);
    // An agent's certificate serves its site's other agents (peer sharing), and nobody else takes
    // it for a server: an agent that expects a relay refuses it.
    let lyon = SiteId::new("lyon").unwrap();
    let agent =
        c.ca.issue(&identity(Role::Agent, "lyon", "nuc-1"), valid())
            .unwrap();
    let posing = exchange::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        agent
            .server_config(
                Admit::AgentsOf(lyon.clone()),
                Revoked::default(),
                Clock::system(),
            )
            .unwrap(),
    )
    .unwrap();
    let posing_addr = posing.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = posing.accept().await {
            if let Ok(conn) = incoming.await {
                // Keep the connection until the client goes.
                tokio::spawn(async move { conn.closed().await });
            }
        }
    });
    let victim =
        c.ca.issue(&identity(Role::Agent, "lyon", "nuc-2"), valid())
            .unwrap();
    let endpoint = exchange::client_endpoint().unwrap();
    for expect in [Expect::RelayOf(lyon.clone()), Expect::AnyRelay] {
        let tls = victim
            .client_config(expect.clone(), Clock::system())
            .unwrap();
        let err = Connection::connect(&endpoint, posing_addr, tls)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{expect:?}: {err}");
    }
    // A peer of the same site reaches it; one that expects a peer of another site does not.
    let tls = victim
        .client_config(Expect::AgentOf(lyon.clone()), Clock::system())
        .unwrap();
    Connection::connect(&endpoint, posing_addr, tls)
        .await
        .unwrap();
    let tls = victim
        .client_config(
            Expect::AgentOf(SiteId::new("paris").unwrap()),
            Clock::system(),
        )
        .unwrap();
    assert!(Connection::connect(&endpoint, posing_addr, tls)
        .await
        .is_err());
    // A revoked peer is refused by the client too.
    let revoked = Revoked::default();
    revoked.replace([agent.serial().unwrap()]);
    let tls = victim
        .client_config_refusing(Expect::AgentOf(lyon.clone()), revoked, Clock::system())
        .unwrap();
    let err = Connection::connect(&endpoint, posing_addr, tls)
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("revoked"), "{err}");
    // A relay of another site is refused by an agent; a relay will not talk to another relay.
    let paris_relay =
        c.ca.issue(&identity(Role::Relay, "paris", "relay-p"), valid())
            .unwrap();
    let relay_server = exchange::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        paris_relay
            .server_config(
                Admit::AgentsOf(SiteId::new("paris").unwrap()),
                Revoked::default(),
                Clock::system(),
            )
            .unwrap(),
    )
    .unwrap();
    let relay_addr = relay_server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = relay_server.accept().await {
            let _ = incoming.await;
        }
    });
    let tls = victim
        .client_config(
            Expect::RelayOf(SiteId::new("lyon").unwrap()),
            Clock::system(),
        )
        .unwrap();
    assert!(Connection::connect(&endpoint, relay_addr, tls)
        .await
        .is_err());
    let lyon_relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let tls = lyon_relay
        .client_config(Expect::Controller, Clock::system())
        .unwrap();
    assert!(Connection::connect(&endpoint, relay_addr, tls)
        .await
        .is_err());
    // The controller itself is reached.
    c.client(addr, &victim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_at_the_handshake_and_cut_off_when_connected() {
    let c = Controller::new(4 << 20);
    let me = identity(Role::Controller, "central", "controller");
    let creds = c.ca.issue(&me, valid()).unwrap();
    let revoked = Revoked::default();
    let endpoint = exchange::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        creds
            .server_config(Admit::RelaysAndAgents, revoked.clone(), Clock::system())
            .unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let service = Arc::new(Service {
        hello: hello_for(&me),
        store: c.store.clone(),
        catalog: c.catalog.clone(),
        enroller: None,
        forward_enroll: None,
        on_report: Box::new(|_, _| {}),
        revoked: revoked.clone(),
        served: Default::default(),
    });
    tokio::spawn(exchange::serve(endpoint, service, CancellationToken::new()));
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    assert_eq!(conn.scheduled().await.unwrap(), vec![v("1")]);
    revoked.replace([relay.serial().unwrap()]);
    // Connected: the next request closes the connection.
    assert!(conn.scheduled().await.is_err());
    // A new connection does not get through the handshake.
    let client = exchange::client_endpoint().unwrap();
    let attempt = async {
        let tls = relay.client_config(Expect::Controller, Clock::system())?;
        let conn = Connection::connect(&client, addr, tls).await?;
        conn.scheduled().await
    };
    assert!(attempt.await.is_err());
    // Another relay is not affected.
    let other =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-2"), valid())
            .unwrap();
    c.client(addr, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_enrolled_nodes_of_our_ca_get_in() {
    let c = Controller::new(4 << 20);
    let (addr, _stop) = c.serve(true);
    let endpoint = exchange::client_endpoint().unwrap();

    // No certificate: only enrolment is open.
    let token = c.policy.token(&c.ca, Role::Relay, "lyon", now() + 3600);
    let anon = Connection::connect(
        &endpoint,
        addr,
        enrol_client_config(&token, Clock::system()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        refused(anon.manifest(&v("1")).await.unwrap_err()),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        refused(
            anon.hello(hello_for(&identity(Role::Relay, "lyon", "x")))
                .await
                .unwrap_err()
        ),
        ErrorCode::Unauthorized
    );

    // Enrolment with the token gives a certificate that works; the token is then used up.
    let (creds, signing) = exchange::enroll(
        addr,
        &token.to_string(),
        Role::Relay,
        "relay-9",
        Clock::system(),
    )
    .await
    .unwrap();
    assert_eq!(signing.key, c.key.public(), "the signing key to pin");
    assert_eq!(
        creds.identity(),
        Some(identity(Role::Relay, "lyon", "relay-9"))
    );
    let conn = c.client(addr, &creds).await;
    assert_eq!(conn.scheduled().await.unwrap(), vec![v("1")]);
    let (_, public) = node_key().unwrap();
    let again = anon
        .enroll(request(
            &token.to_string(),
            Role::Relay,
            "relay-10",
            &public,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused(again), ErrorCode::Unauthorized);

    // An expired token.
    let old = c.policy.token(&c.ca, Role::Relay, "lyon", now() - 10);
    let err = anon
        .enroll(request(&old.to_string(), Role::Relay, "relay-11", &public))
        .await
        .unwrap_err();
    assert_eq!(refused(err), ErrorCode::Unauthorized);

    // A renewal from a peer without a certificate is not one.
    let mut renewal = request("", Role::Relay, "relay-9", &public);
    renewal.renewal = true;
    assert_eq!(
        refused(anon.enroll(renewal).await.unwrap_err()),
        ErrorCode::BadRequest
    );

    // A token that names another CA: the client refuses the server during the handshake.
    let other_ca = Ca::generate(Validity::ca(now())).unwrap();
    let mut foreign_token = token;
    foreign_token.ca_fingerprint = other_ca.fingerprint();
    assert!(Connection::connect(
        &endpoint,
        addr,
        enrol_client_config(&foreign_token, Clock::system()).unwrap()
    )
    .await
    .is_err());

    // A certificate from another CA: the server refuses the handshake.
    let stranger = other_ca
        .issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
        .unwrap();
    let attempt = async {
        let conn = Connection::connect(
            &endpoint,
            addr,
            stranger
                .client_config(Expect::Controller, Clock::system())
                .unwrap(),
        )
        .await?;
        conn.scheduled().await
    };
    assert!(attempt.await.is_err());

    // An expired certificate of our CA: refused too.
    let expired =
        c.ca.issue(
            &identity(Role::Relay, "lyon", "relay-old"),
            Validity {
                not_before: now() - 7200,
                not_after: now() - 60,
            },
        )
        .unwrap();
    let attempt = async {
        let tls = expired.client_config(Expect::Controller, Clock::system())?;
        let conn = Connection::connect(&endpoint, addr, tls).await?;
        conn.scheduled().await
    };
    assert!(attempt.await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_read_only_what_is_scheduled_for_their_site() {
    let c = Controller::new(4 << 20);
    let (addr, _stop) = c.serve(false);
    let v1 = VerifiedManifest::open(c.catalog_manifest("1"), &c.key.public()).unwrap();
    let v2 = VerifiedManifest::open(c.catalog_manifest("2"), &c.key.public()).unwrap();
    let v1_ids: Vec<_> = v1.unique_chunks().iter().map(|c| c.id).collect();
    let have: std::collections::HashSet<_> = v1_ids.iter().copied().collect();
    let v2_only: Vec<_> = v2
        .unique_chunks()
        .iter()
        .map(|c| c.id)
        .filter(|id| !have.contains(id))
        .collect();
    assert!(!v2_only.is_empty());

    let paris =
        c.ca.issue(&identity(Role::Agent, "paris", "nuc-1"), valid())
            .unwrap();
    let conn = c.client(addr, &paris).await;
    assert!(conn.scheduled().await.unwrap().is_empty());
    assert_eq!(
        refused(conn.manifest(&v("1")).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    let err = conn
        .get_chunks(&v1_ids[..3], |_, _| Ok(()))
        .await
        .unwrap_err();
    assert_eq!(refused(err), ErrorCode::Forbidden);
    assert_eq!(conn.has(&v1_ids[..3]).await.unwrap(), vec![false; 3]);

    let lyon =
        c.ca.issue(&identity(Role::Agent, "lyon", "nuc-1"), valid())
            .unwrap();
    let conn = c.client(addr, &lyon).await;
    assert_eq!(
        refused(conn.manifest(&v("2")).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    let err = conn
        .get_chunks(&v2_only[..1], |_, _| Ok(()))
        .await
        .unwrap_err();
    assert_eq!(refused(err), ErrorCode::Forbidden);
    assert_eq!(conn.has(&v1_ids[..3]).await.unwrap(), vec![true; 3]);

    // Scheduling v2 for lyon opens it, on the same connection.
    c.catalog.schedule("lyon", vec![v("1"), v("2")]);
    conn.manifest(&v("2")).await.unwrap();
    conn.get_chunks(&v2_only[..1], |_, _| Ok(())).await.unwrap();

    // A hello that does not match the certificate is refused.
    let err = conn
        .hello(hello_for(&identity(Role::Agent, "lyon", "someone-else")))
        .await
        .unwrap_err();
    assert_eq!(refused(err), ErrorCode::BadRequest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_stream_gets_an_error_and_the_server_lives_on() {
    let c = Controller::new(4 << 20);
    let (addr, _stop) = c.serve(false);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let endpoint = exchange::client_endpoint().unwrap();
    let raw = quinn_connect(&endpoint, addr, &relay).await;
    for garbage in [
        vec![0xff, 0xff, 0xff, 0x7f, 1],       // a 2 GiB control frame
        vec![5, 0, 0, 0, 99, 1, 2, 3, 4],      // unknown kind
        vec![4, 0, 0, 0, 1, 0xde, 0xad, 0xbe], // a control body that does not parse
    ] {
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        send.write_all(&garbage).await.unwrap();
        send.finish().unwrap();
        let reply = FrameReader::default().next(&mut recv).await.unwrap();
        assert!(
            matches!(
                reply,
                Some(Frame::Control(Control::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }))
            ),
            "{reply:?}"
        );
    }
    // The server still serves.
    let conn = c.client(addr, &relay).await;
    assert_eq!(conn.scheduled().await.unwrap(), vec![v("1")]);
}

async fn quinn_connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    creds: &Credentials,
) -> quinn::Connection {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(
        creds
            .client_config(Expect::Controller, Clock::system())
            .unwrap(),
    )
    .unwrap();
    endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            addr,
            "nightcast",
        )
        .unwrap()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caching_store_fills_from_upstream_and_repairs_corrupt_copies() {
    let c = Controller::new(4 << 20);
    let (addr, _stop) = c.serve(false);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    let v1 = VerifiedManifest::open(c.catalog_manifest("1"), &c.key.public()).unwrap();
    let id = v1.unique_chunks()[0].id;
    let (_dir, local) = relay_store();
    let runtime = tokio::runtime::Handle::current();
    let local2 = local.clone();
    tokio::task::spawn_blocking(move || {
        let caching = Caching::new(&*local2, RemoteStore::new(conn, runtime));
        let chunk = caching.get(&id).unwrap();
        assert!(local2.has(&id).unwrap(), "miss was not kept");
        // Rot the local copy: the next read replaces it from upstream.
        let path = local2.path_of(&id);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(caching.get(&id).unwrap(), chunk);
        assert_eq!(local2.get(&id).unwrap(), chunk);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_under_way_at_shutdown_completes() {
    let c = Controller::new(96 << 20);
    let (addr, stop) = c.serve(false);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    let v1 = VerifiedManifest::open(c.catalog_manifest("1"), &c.key.public()).unwrap();
    let ids: Vec<_> = v1.unique_chunks().iter().map(|c| c.id).collect();
    let stored: u64 = v1
        .unique_chunks()
        .iter()
        .map(|c| u64::from(c.stored_len))
        .sum();
    // More than the 16 MiB stream window: the server is still sending when it is stopped.
    assert!(
        stored > 20 << 20,
        "too small to be in flight when stopped: {stored}"
    );
    let mut got = 0;
    conn.get_chunks(&ids, |r, _| {
        assert!(matches!(r, exchange::Received::Chunk(_)));
        got += 1;
        stop.cancel(); // shutdown begins while the reply is being sent
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(got, ids.len());
    // New requests are no longer served.
    assert!(conn.scheduled().await.is_err());
}

/// Counts the manifests a server reads from its catalogue.
struct CountingCatalog {
    inner: Arc<MemoryCatalog>,
    reads: std::sync::atomic::AtomicU64,
}

impl exchange::Catalog for CountingCatalog {
    fn manifest(&self, master: &MasterRef) -> Option<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.manifest(master)
    }
    fn allowed(&self, peer: &Identity) -> Vec<MasterRef> {
        self.inner.allowed(peer)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_again_for_forbidden_chunks_costs_the_server_nothing_more() {
    let c = Controller::new(4 << 20);
    let counting = Arc::new(CountingCatalog {
        inner: c.catalog.clone(),
        reads: Default::default(),
    });
    let me = identity(Role::Controller, "central", "controller");
    let creds = c.ca.issue(&me, valid()).unwrap();
    let endpoint = exchange::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        creds
            .server_config(Admit::RelaysAndAgents, Revoked::default(), Clock::system())
            .unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let service = Arc::new(Service {
        hello: hello_for(&me),
        store: c.store.clone(),
        catalog: counting.clone(),
        enroller: None,
        forward_enroll: None,
        on_report: Box::new(|_, _| {}),
        revoked: Revoked::default(),
        served: Default::default(),
    });
    tokio::spawn(exchange::serve(endpoint, service, CancellationToken::new()));
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    let v2 = VerifiedManifest::open(c.catalog_manifest("2"), &c.key.public()).unwrap();
    let forbidden = [v2.unique_chunks().last().unwrap().id];
    for _ in 0..20 {
        assert!(conn.get_chunks(&forbidden, |_, _| Ok(())).await.is_err());
    }
    // One rebuild of the peer's allowed chunks (one manifest: lyon may read v1), not twenty.
    assert_eq!(counting.reads.load(Ordering::SeqCst), 1);
    // A schedule change is still seen on the same connection.
    c.catalog.schedule("lyon", vec![v("1"), v("2")]);
    conn.get_chunks(&forbidden, |_, _| Ok(())).await.unwrap();
}

async fn raw_connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    tls: rustls::ClientConfig,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            addr,
            "nightcast",
        )
        .unwrap()
        .await
}

/// Sends one request on a new stream of `conn` and finishes the stream's send side.
async fn raw_request(
    conn: &quinn::Connection,
    request: Control,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let bytes = wire::encode_to_vec(&Frame::Control(request)).unwrap();
    send.write_all(&bytes).await.unwrap();
    send.finish().unwrap();
    (send, recv)
}

/// Regression (security finding 4): a request stream took any frame kind up to its limit, so a
/// header announcing a 512 MiB manifest frame made the server buffer whatever followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_header_of_another_kind_or_size_is_refused_before_its_body_is_read() {
    let c = Controller::new(4 << 20);
    let (addr, _stop) = c.serve(true);
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let endpoint = exchange::client_endpoint().unwrap();
    let enrolled = quinn_connect(&endpoint, addr, &relay).await;
    let token = c.policy.token(&c.ca, Role::Relay, "lyon", now() + 3600);
    let anonymous = raw_connect(
        &endpoint,
        addr,
        enrol_client_config(&token, Clock::system()).unwrap(),
    )
    .await
    .unwrap();
    let header = |len: u32, kind: u8| {
        let mut h = len.to_le_bytes().to_vec();
        h.push(kind);
        h
    };
    for (conn, header) in [
        (&enrolled, header(wire::MAX_MANIFEST_FRAME, 3)), // a 512 MiB manifest frame
        (&enrolled, header(wire::MAX_CHUNK_FRAME, 2)),    // a 16 MiB chunk frame
        (&anonymous, header(wire::MAX_MANIFEST_FRAME, 3)),
        // Without a certificate only an enrolment fits: a 1 MiB control frame is too large.
        (&anonymous, header(wire::MAX_CONTROL, 1)),
    ] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&header).await.unwrap();
        // Then the body, 8 MiB of it: the server must stop the stream instead of taking it in.
        let writer = tokio::spawn(async move {
            let block = vec![0u8; 64 << 10];
            for _ in 0..128 {
                send.write_all(&block).await?;
            }
            send.finish().unwrap();
            Ok::<_, quinn::WriteError>(())
        });
        let reply = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            FrameReader::default().next(&mut recv),
        )
        .await
        .expect("no answer: the server is reading the body");
        assert!(
            matches!(
                reply,
                Ok(Some(Frame::Control(Control::Error {
                    code: ErrorCode::BadRequest,
                    ..
                })))
            ),
            "{reply:?}"
        );
        let written = writer.await.unwrap();
        assert!(
            matches!(written, Err(quinn::WriteError::Stopped(_))),
            "the server took the whole body: {written:?}"
        );
    }
    // Both connections are still served.
    let conn = c.client(addr, &relay).await;
    assert_eq!(conn.scheduled().await.unwrap(), vec![v("1")]);
    let anon = Connection::connect(
        &endpoint,
        addr,
        enrol_client_config(&token, Clock::system()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        refused(anon.scheduled().await.unwrap_err()),
        ErrorCode::Unauthorized
    );
}

/// Regression (security finding 4): a peer without a certificate had 64 streams per connection
/// and any number of connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_certificate_gets_few_streams_and_few_connections() {
    let c = Controller::new(8 << 20);
    let (addr, _stop) = c.serve(true);
    let token = c.policy.token(&c.ca, Role::Relay, "lyon", now() + 3600);
    let endpoint = exchange::client_endpoint().unwrap();
    let tls = enrol_client_config(&token, Clock::system()).unwrap();

    // Streams: the ones allowed are open (and kept open); one more is never granted.
    let anonymous = raw_connect(&endpoint, addr, tls.clone()).await.unwrap();
    let mut open = Vec::new();
    for _ in 0..exchange::UNENROLLED_STREAMS {
        let (mut send, recv) = anonymous.open_bi().await.unwrap();
        send.write_all(&[1]).await.unwrap(); // a stream exists for the server once it carries data
        open.push((send, recv));
    }
    let more = tokio::time::timeout(std::time::Duration::from_secs(3), anonymous.open_bi()).await;
    assert!(more.is_err(), "a stream beyond the limit was granted");

    // Connections: beyond the cap they are refused or closed at once, whatever they ask.
    let cap = exchange::Limits::default().unenrolled;
    let mut kept = vec![anonymous];
    let (mut served, mut turned_away) = (0, 0);
    for _ in 0..cap + 8 {
        let Ok(conn) = raw_connect(&endpoint, addr, tls.clone()).await else {
            turned_away += 1;
            continue;
        };
        // Ask for something: an accepted connection gets an answer (Unauthorized); one closed by
        // the server fails at any step.
        let request = wire::encode_to_vec(&Frame::Control(Control::ListScheduled)).unwrap();
        let Ok((mut send, mut recv)) = conn.open_bi().await else {
            turned_away += 1;
            continue;
        };
        if send.write_all(&request).await.is_err() || send.finish().is_err() {
            turned_away += 1;
            continue;
        }
        match FrameReader::default().next(&mut recv).await {
            Ok(Some(Frame::Control(Control::Error {
                code: ErrorCode::Unauthorized,
                ..
            }))) => served += 1,
            Err(ExchangeError::Transport(_)) => turned_away += 1,
            other => panic!("{other:?}"),
        }
        kept.push(conn);
    }
    assert!(
        served < cap,
        "{served} connections without a certificate served at once"
    );
    assert!(turned_away >= 8, "only {turned_away} turned away");

    // Meanwhile an enrolled peer connects and fetches a whole master.
    let relay =
        c.ca.issue(&identity(Role::Relay, "lyon", "relay-1"), valid())
            .unwrap();
    let conn = c.client(addr, &relay).await;
    let manifest =
        VerifiedManifest::open(conn.manifest(&v("1")).await.unwrap(), &c.key.public()).unwrap();
    let (_dir, store) = relay_store();
    let report = fetch_missing(
        &conn,
        store,
        &manifest,
        FetchOptions::default(),
        None,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.fetched, report.needed);
    drop((open, kept));
}

/// Regression (security finding 7): 16 chunk readers per server, each held for a whole request
/// while waiting on the network, so one peer reading slowly on 16 streams stopped every NUC.
/// A raw QUIC connection of agent `node` of lyon to `addr`, its hello answered.
async fn raw_agent(
    c: &Controller,
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    node: &str,
) -> quinn::Connection {
    let id = identity(Role::Agent, "lyon", node);
    let creds = c.ca.issue(&id, valid()).unwrap();
    let conn = quinn_connect(endpoint, addr, &creds).await;
    let (_send, mut recv) = raw_request(&conn, Control::Hello(hello_for(&id))).await;
    assert!(matches!(
        FrameReader::default().next(&mut recv).await.unwrap(),
        Some(Frame::Control(Control::HelloAck(_)))
    ));
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_on_many_streams_does_not_hold_up_another_peer() {
    let c = Controller::new(48 << 20);
    let (addr, _stop) = c.serve(false);
    let v1 = VerifiedManifest::open(c.catalog_manifest("1"), &c.key.public()).unwrap();
    let ids: Vec<_> = v1.unique_chunks().iter().map(|c| c.id).collect();

    // The slow peer asks for the whole master on 24 streams and reads 4 KiB from each of them
    // every 50 ms (about 2 MB/s in all, so each reply takes minutes), each stream on its own.
    let endpoint = exchange::client_endpoint().unwrap();
    let slow = raw_agent(&c, &endpoint, addr, "nuc-slow").await;
    let still_reading = Arc::new(AtomicBool::new(true));
    let mut readers = Vec::new();
    for _ in 0..24 {
        let (send, mut recv) = raw_request(&slow, Control::GetChunks(ids.clone())).await;
        let still_reading = still_reading.clone();
        readers.push(tokio::spawn(async move {
            let _send = send;
            let mut buf = vec![0u8; 4096];
            loop {
                match recv.read(&mut buf).await {
                    Ok(Some(_)) => {}
                    // A reply finished, or the server ended it: no longer slow reading.
                    _ => return still_reading.store(false, Ordering::SeqCst),
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }));
    }
    // Let the slow peer's requests take what they can.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    let nuc =
        c.ca.issue(&identity(Role::Agent, "lyon", "nuc-2"), valid())
            .unwrap();
    let conn = c.client(addr, &nuc).await;
    let (_dir, store) = relay_store();
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        fetch_missing(&conn, store, &v1, FetchOptions::default(), None, &|_| {}),
    )
    .await
    .expect("the second peer's fetch is held up by the slow one")
    .unwrap();
    assert_eq!(report.fetched, report.needed);
    assert!(
        still_reading.load(Ordering::SeqCst),
        "the slow peer stopped reading first"
    );
    for r in readers {
        r.abort();
    }
}

/// A server that answers few chunk requests at once (a NUC serving its room) turns the next away
/// at once with `Busy`, and answers again once one has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_busy_with_its_most_requests_turns_the_next_away_at_once() {
    let c = Controller::new(16 << 20);
    let limits = exchange::Limits {
        chunk_requests: 1,
        ..exchange::Limits::default()
    };
    let (addr, _stop) = c.serve_within(false, limits);
    let v1 = VerifiedManifest::open(c.catalog_manifest("1"), &c.key.public()).unwrap();
    let ids: Vec<_> = v1.unique_chunks().iter().map(|c| c.id).collect();

    // One peer asks for the whole master and does not read: its request holds the one place.
    let endpoint = exchange::client_endpoint().unwrap();
    let slow = raw_agent(&c, &endpoint, addr, "nuc-slow").await;
    let (held_send, held_recv) = raw_request(&slow, Control::GetChunks(ids.clone())).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let nuc =
        c.ca.issue(&identity(Role::Agent, "lyon", "nuc-2"), valid())
            .unwrap();
    let conn = c.client(addr, &nuc).await;
    let busy = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.get_chunks(&ids[..1], |_, _| Ok(())),
    )
    .await
    .expect("a busy server answers at once");
    assert_eq!(refused(busy.unwrap_err()), ErrorCode::Busy);

    // The held request ends: the next one is answered.
    drop((held_send, held_recv));
    slow.close(0u32.into(), b"done");
    let mut got = 0;
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match conn
                .get_chunks(&ids[..4], |_, _| {
                    got += 1;
                    Ok(())
                })
                .await
            {
                Err(e)
                    if matches!(
                        &e,
                        ExchangeError::Refused {
                            code: ErrorCode::Busy,
                            ..
                        }
                    ) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    })
    .await
    .expect("the place was never given back");
    answered.unwrap();
    assert_eq!(got, 4);
}
