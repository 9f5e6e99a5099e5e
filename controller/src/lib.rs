//! nightcast-controller: the trust anchor (CA, manifest-signing key, enrolment tokens), the
//! catalogue and training calendar (SQLite), the planner, and the chunk-exchange server relays fetch
//! from. What each site may read is what its upcoming sessions need.
//!
//! Data directory layout:
//! ```text
//! DATA/ca/ca.key, ca.crt         the certificate authority (ca.key mode 0600)
//! DATA/signing.key, .pub         the manifest-signing key (Ed25519)
//! DATA/tls/                      the controller's own certificate and key
//! DATA/store/                    the chunk store
//! DATA/catalogue.db             sites, rooms, masters (with their manifests), sessions (SQLite)
//! DATA/tokens.json               outstanding enrolment tokens (hashes only)
//! ```

pub mod alerts;
pub mod api;
pub mod authority;
pub mod calendar;
pub mod catalog;
pub mod config;
pub mod console;
pub mod cost;
pub mod db;
pub mod deadline;
pub mod enrolment;
pub mod failures;
pub mod feeds;
pub mod fleet;
pub mod imports;
pub mod metrics;
pub mod plan;
pub mod push;
pub mod signing;
pub mod takeover;
#[cfg(test)]
mod testing;
pub mod tighten;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use image_tools::clock::Clock;
use image_tools::exchange::{self, Enroller, MemoryCatalog, Service};
use image_tools::store::{open_disk_store, DiskStore, Format};
use image_tools::trust::{
    Admit, Ca, Credentials, Identity, Revoked, Token, Validity, DEFAULT_LIFETIME_SECS,
};
use image_tools::wire::{Hello, MasterRef, Role};
use image_tools::{Manifest, NodeId, PublicKey, SigningKey, SiteId, VerifiedManifest};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The controller's data directory.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    fn ca(&self) -> PathBuf {
        self.0.join("ca")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.0.join("signing.key")
    }
    fn tls(&self) -> PathBuf {
        self.0.join("tls")
    }
    pub fn store(&self) -> PathBuf {
        self.0.join("store")
    }
    pub fn database(&self) -> PathBuf {
        self.0.join("catalogue.db")
    }
}

fn controller_identity() -> Result<Identity> {
    Ok(Identity {
        role: Role::Controller,
        site: SiteId::new("central")?,
        node: NodeId::new("controller")?,
    })
}

/// Creates the data directory: CA, signing key, the controller's certificate (the store is made
/// by the first `serve`, in the format its configuration says, or by the first import).
/// Refuses to touch a directory that already has a CA.
pub fn init(data: &DataDir, now_unix: i64) -> Result<[u8; 16]> {
    if data.ca().join("ca.key").exists() {
        bail!(
            "{} already holds a controller (ca/ca.key exists): refusing to replace its keys",
            data.0.display()
        );
    }
    for dir in [data.ca(), data.tls()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let ca = Ca::generate(Validity::ca(now_unix))?;
    ca.save(&data.ca())?;
    SigningKey::generate()?.save(&data.signing_key())?;
    ca.issue(
        &controller_identity()?,
        Validity::starting(now_unix, DEFAULT_LIFETIME_SECS),
    )?
    .save(&data.tls())?;
    db::Db::open(&data.database())?;
    api::admin_token(data)?;
    Ok(ca.fingerprint())
}

/// The longest an enrolment token lives: a month (a token is for a NUC or relay about to be set up).
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

/// A one-time enrolment token for a node of `role` at `site`, valid for `ttl_secs` (at most
/// `MAX_TOKEN_TTL_SECS`).
pub fn issue_token(
    data: &DataDir,
    role: Role,
    site: SiteId,
    now_unix: u64,
    ttl_secs: u64,
) -> Result<Token> {
    if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS {
        anyhow::bail!(
            "a token lives between 1 second and {} hours, not {ttl_secs} seconds",
            MAX_TOKEN_TTL_SECS / 3600
        );
    }
    let ca = authority::load(data)?.current;
    let token = Token::generate(ca.fingerprint())?;
    let now = now_unix as i64;
    db::Db::open(&data.database())?.add_token(
        &token,
        role,
        site.as_str(),
        now,
        now.saturating_add(ttl_secs as i64),
    )?;
    Ok(token)
}

/// The controller's own certificate, renewed first when less than a third of its life is left or
/// when another CA than the current one issued it (after a CA rotation: the controller holds the
/// CA, nothing to ask anyone), with the rotation's bridge.
fn own_credentials(
    data: &DataDir,
    cas: &authority::Authorities,
    now: i64,
    lifetime_secs: u64,
) -> Result<Credentials> {
    let mut creds =
        Credentials::load(&data.tls()).context("no controller certificate: run init first")?;
    let left = creds.not_after().unwrap_or(0) - now;
    let renew = left <= (lifetime_secs / 3) as i64 || creds.ca != cas.current.certificate();
    if renew {
        creds = cas.current.issue(
            &controller_identity()?,
            Validity::starting(now, lifetime_secs),
        )?;
        tracing::info!(
            not_after = creds.not_after(),
            ca = %image_tools::ids::hex(&cas.current.fingerprint()),
            "renewed the controller's certificate"
        );
    }
    if renew || creds.bridge != cas.bridge {
        creds.bridge = cas.bridge.clone();
        creds.save(&data.tls())?;
    }
    Ok(creds)
}

/// The controller's enrolment rules over its catalogue (see `enrolment` and `db::trust`).
struct Policy {
    data: DataDir,
}

impl image_tools::exchange::EnrolPolicy for Policy {
    fn decide(
        &self,
        ask: &image_tools::exchange::EnrolAsk,
        now: i64,
    ) -> image_tools::exchange::EnrolDecision {
        use image_tools::exchange::EnrolDecision;
        match db::Db::open(&self.data.database()).and_then(|mut db| db.decide_enrolment(ask, now)) {
            Ok(enrolment::Outcome::Issue { site }) => EnrolDecision::Issue { site },
            Ok(enrolment::Outcome::Pending { why, .. }) => EnrolDecision::Pending(why),
            Ok(enrolment::Outcome::Refuse(why)) => EnrolDecision::Refuse(why),
            Err(e) => {
                tracing::error!(node = %ask.node, error = %e, "cannot decide on an enrolment");
                EnrolDecision::Refuse(format!("the controller cannot decide now: {e}"))
            }
        }
    }

    fn issued(&self, c: &image_tools::exchange::Issued<'_>) -> std::result::Result<(), String> {
        db::Db::open(&self.data.database())
            .and_then(|db| db.record_certificate(c.identity, c.serial, c.validity, c.now))
            .map_err(|e| e.to_string())
    }
}

/// The serials every server of ours refuses, as bytes.
fn revoked_bytes(hex_serials: &[String]) -> Vec<Vec<u8>> {
    hex_serials
        .iter()
        .filter_map(|h| image_tools::ids::unhex_vec(h))
        .collect()
}

/// Registers a master version built into `DATA/store` (`nightcast-image build --store DATA/store
/// --key DATA/signing.key ...`): its manifest must verify against our key and every chunk must be
/// in the store.
pub fn add_master(data: &DataDir, manifest_path: &Path, now_unix: i64) -> Result<MasterRef> {
    let bytes = std::fs::read(manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let store = open_disk_store(&data.store(), NEW_STORE_FORMAT)?;
    let m = check_master(data, &*store, bytes)
        .with_context(|| format!("refusing {}", manifest_path.display()))?;
    db::Db::open(&data.database())?.add_master(&m, m.bytes(), now_unix)?;
    Ok(Manifest::master(&m))
}

/// What must hold before the catalogue names a master (for `add_master` and the admin API's
/// import): the manifest verifies against our signing key, and every chunk it lists is in
/// `store` (`DATA/store`) and verifies (read, decompressed, hashed).
pub fn check_master(
    data: &DataDir,
    store: &dyn DiskStore,
    manifest: Vec<u8>,
) -> Result<VerifiedManifest> {
    let key = PublicKey::load(&image_tools::keys::public_path(&data.signing_key()))?;
    let m = VerifiedManifest::open(manifest, &key)
        .context("the manifest is not signed by this controller's key")?;
    let report = image_tools::assemble::verify(&m, store, 0, &|_, _| {});
    if let Some(f) = report.faults.first() {
        bail!(
            "{} {}: {} chunks missing or corrupt in {} (first: {} at offset {}: {}); not recorded: \
             `nightcast-image scrub --store {} --repair` drops corrupt chunks, then build or import it \
             into this store again",
            m.name,
            m.version,
            report.faults.len(),
            data.store().display(),
            f.id,
            f.offset,
            f.error,
            data.store().display(),
        );
    }
    Ok(m)
}

/// Lets spares take over silent seats (see `takeover`) at every site, or at `site` only, and logs
/// each bind. Returns how many seats changed hands: the catalogue must then be reloaded, so that
/// the relay's plan carries the new binding.
pub fn take_over(
    data: &DataDir,
    now_unix: i64,
    silent_after_secs: i64,
    site: Option<&str>,
) -> Result<usize> {
    let decisions = db::Db::open(&data.database())?.take_over(now_unix, silent_after_secs, site)?;
    let mut binds = 0;
    for (site, decision) in decisions {
        match decision {
            takeover::Decision::Bind {
                spare,
                room,
                seat,
                replaced,
            } => {
                binds += 1;
                tracing::warn!(
                    %site, %room, %seat, %spare,
                    replaced = replaced.as_deref().unwrap_or("nobody"),
                    "seat taken over by spare"
                );
            }
            takeover::Decision::Wait { spare, reason } => {
                tracing::debug!(%site, %spare, %reason, "spare waits for the DSI");
            }
        }
    }
    Ok(binds)
}

/// What `serve` runs with, from the configuration.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub planner: plan::Settings,
    /// How long the certificates issued are valid.
    pub certificate_lifetime_secs: u64,
    /// A seat whose NUC has not been heard from for longer is silent; a spare heard from within it
    /// may take it over.
    pub silent_after_secs: i64,
    /// The second compression pass over the store (`None`: off).
    pub tighten: Option<tighten::Tighten>,
    /// The format of the store `serve` creates if `DATA/store` has none yet.
    pub store_format: Option<image_tools::store::Format>,
    /// The subscribed calendar feeds' polls.
    pub feeds: feeds::Settings,
    /// The web console (`None`: off).
    pub console: Option<console::Settings>,
    /// Alerts by webhook and e-mail (`None`: off).
    pub alerts: Option<alerts::Settings>,
    /// A second address for the relays of far sites (satellite, 4G), sending with BBR (`None`:
    /// off).
    pub far_listen: Option<SocketAddr>,
    /// The port far relays reach `far_listen` at (a NAT's public port); its bound port if none.
    pub far_public_port: Option<u16>,
}

/// The format of a store the controller makes when its configuration names none: packs, whose
/// imports are the faster (docs/BENCHMARKS.md: 1.7x a file store's on a real Debian image).
pub const NEW_STORE_FORMAT: Format = Format::Packs;

/// `DATA/store`, in the format it has, or created in `format` ([`NEW_STORE_FORMAT`] if none): one
/// handle for the whole daemon (serving, imports through the admin API, the compression pass), so
/// that what one writes the others see at once.
fn open_store(data: &DataDir, format: Option<Format>) -> Result<Arc<dyn DiskStore>> {
    let store: Arc<dyn DiskStore> = Arc::from(open_disk_store(
        &data.store(),
        format.unwrap_or(NEW_STORE_FORMAT),
    )?);
    if let Some(configured) = format.filter(|&f| f != store.format()) {
        tracing::warn!(
            store = %data.store().display(),
            found = store.format().name(),
            configured = configured.name(),
            "the store keeps its format: `[store] format` is for a new one (stop the controller \
             and run `nightcast-image convert` to change it)"
        );
    }
    tracing::info!(store = %data.store().display(), format = store.format().name(), "chunk store");
    Ok(store)
}

/// Serves relays (and enrolments) on `listen` until `shutdown`. `on_listening` gets the bound address.
pub async fn serve(
    data: &DataDir,
    listen: SocketAddr,
    api: Option<SocketAddr>,
    settings: ServeSettings,
    clock: Clock,
    on_listening: impl FnOnce(SocketAddr, Option<SocketAddr>),
    shutdown: CancellationToken,
) -> Result<()> {
    let now_unix = move || clock.now().max(0) as u64;
    let key = PublicKey::load(&image_tools::keys::public_path(&data.signing_key()))?;
    let lifetime = settings.certificate_lifetime_secs;
    let cas = authority::load(data)?;
    let creds = own_credentials(data, &cas, clock.now(), lifetime)?;
    let store = open_store(data, settings.store_format)?;
    let margin = settings.planner.staging_margin_secs;
    let silent_after = settings.silent_after_secs;
    let catalog = Arc::new(MemoryCatalog::default());
    // Revoked relays and agents are refused at the handshake; the list is read again with the
    // catalogue.
    let revoked = Revoked::default();
    // Bound first: the far sites' plans name its port (a relay told its site is far fetches
    // from the host it knows the controller by, at this port).
    let far_endpoint = match settings.far_listen {
        Some(addr) => {
            let far = exchange::server_endpoint_with(
                addr,
                creds.server_config(Admit::RelaysAndAgents, revoked.clone(), clock)?,
                exchange::Congestion::Bbr,
            )
            .with_context(|| format!("cannot listen on far_listen {addr}"))?;
            tracing::info!(addr = %far.local_addr()?, "far links (satellite, 4G): relays that connect here are sent to with BBR");
            Some(far)
        }
        None => None,
    };
    // What far sites' plans name: the public port where a NAT maps one to far_listen.
    let far_port = match &far_endpoint {
        Some(e) => Some(settings.far_public_port.unwrap_or(e.local_addr()?.port())),
        None => None,
    };
    let mut reloader = catalog::Reloader::new(data.clone(), margin).with_far_port(far_port);
    reloader.reload(&catalog, now_unix() as i64)?;
    let reload_revoked = {
        let (data, revoked) = (data.clone(), revoked.clone());
        move |now: i64| match db::Db::open(&data.database())
            .and_then(|db| db.revoked_serials(None, now))
        {
            Ok(list) => revoked.replace(revoked_bytes(&list)),
            Err(e) => tracing::warn!(error = %e, "cannot read the revoked certificates"),
        }
    };
    reload_revoked(now_unix() as i64);
    // The calendar changes while we serve: reload it after each admin change, after a spare took
    // over a seat, and every minute (sessions pass, overrides expire, NUCs go silent). Takeovers
    // are decided first, so that the plans carry them.
    let changed = Arc::new(tokio::sync::Notify::new());
    // A new master version read into the catalogue wakes the compression pass.
    let tighten_wake = Arc::new(tokio::sync::Notify::new());
    // The alerts are checked again after each reload (an admin change, or the minute).
    let alerts_wake = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(feeds::run(
        data.clone(),
        settings.feeds.clone(),
        clock,
        changed.clone(),
        shutdown.clone(),
    ));
    if let Some(t) = settings.tighten {
        tokio::spawn(tighten::run(
            data.clone(),
            store.clone(),
            t,
            tighten_wake.clone(),
            shutdown.clone(),
            clock,
        ));
    }
    {
        let (catalog, data, stop, changed, reload_revoked, tighten_wake, alerts_wake) = (
            catalog.clone(),
            data.clone(),
            shutdown.clone(),
            changed.clone(),
            reload_revoked.clone(),
            tighten_wake.clone(),
            alerts_wake.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                }
                if let Err(e) = take_over(&data, now_unix() as i64, silent_after, None) {
                    tracing::warn!(error = %e, "cannot decide seat takeovers");
                }
                reload_revoked(now_unix() as i64);
                match reloader.reload(&catalog, now_unix() as i64) {
                    Ok(r) => {
                        tracing::debug!(
                            manifests_read = r.read,
                            dropped = r.dropped,
                            sites = r.sites,
                            "catalogue reloaded"
                        );
                        if r.read > 0 {
                            tighten_wake.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reload the calendar; serving the previous one")
                    }
                }
                alerts_wake.notify_one();
            }
        });
    }
    // The console's certificate, issued by the CA in force if it is to be issued.
    let console_tls = match &settings.console {
        Some(c) => Some(console::tls::server_config(
            &c.certificate,
            &cas.current,
            clock.now(),
        )?),
        None => None,
    };
    let me = controller_identity()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let service = Arc::new(Service {
        hello: Hello::new(me.role, &me.node),
        store: store.clone(),
        catalog,
        enroller: Some({
            Enroller {
                ca: cas.current,
                bridge: cas.bridge.clone(),
                signing_key: key,
                lifetime_secs: lifetime,
                clock,
                policy: Box::new(Policy { data: data.clone() }),
            }
        }),
        revoked: revoked.clone(),
        served: metrics.served.clone(),
        forward_enroll: None,
        on_report: {
            let (data, changed) = (data.clone(), changed.clone());
            Box::new(move |peer, status| {
                let now = now_unix() as i64;
                if peer.role == Role::Relay && status.node_id != peer.node {
                    // A report the relay forwards for one of its site's agents.
                    if record_agent_report(&data, peer, &status, now) {
                        match take_over(&data, now, silent_after, Some(peer.site.as_str())) {
                            Ok(0) => {}
                            Ok(_) => changed.notify_one(),
                            Err(e) => {
                                tracing::warn!(%peer, error = %e, "cannot decide seat takeovers")
                            }
                        }
                    }
                    return;
                }
                tracing::info!(%peer, holding = status.holding.len(), "report");
                let recorded = db::Db::open(&data.database()).and_then(|mut db| {
                    db.record_report(
                        peer.site.as_str(),
                        peer.node.as_str(),
                        &peer.role.to_string(),
                        &status.holding,
                        &reported(&status),
                        now,
                    )
                });
                if let Err(e) = recorded {
                    tracing::error!(%peer, error = %e, "cannot record the report");
                }
            })
        },
    });
    let endpoint = exchange::server_endpoint(
        listen,
        creds.server_config(Admit::RelaysAndAgents, revoked.clone(), clock)?,
    )?;
    // Relays of far sites connect here: the same service, but the chunks go out under BBR, which
    // a satellite's or a 4G link's random loss does not slow down as it does Cubic
    // (docs/BENCHMARKS.md, "Far links").
    let far = far_endpoint.map(|far| {
        tokio::spawn(
            exchange::serve_with(
                far,
                service.clone(),
                exchange::Limits::CONTROLLER,
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("far_link", sent_with = "BBR")),
        )
    });
    let stop_api = CancellationToken::new();
    let state = Arc::new(api::Api {
        data: data.clone(),
        token: api::admin_token(data)?,
        clock,
        settings: settings.planner,
        silent_after_secs: silent_after,
        feed_poll_minutes: settings.feeds.poll_minutes,
        imports: imports::Running::default(),
        changed: changed.clone(),
        classes: plan::ClassCache::default(),
        metrics,
        store,
        far_port,
    });
    if let Some(a) = settings.alerts {
        tokio::spawn(alerts::run(state.clone(), a, alerts_wake, shutdown.clone()));
    }
    let console_task = match (&settings.console, console_tls) {
        (Some(c), Some(tls)) => {
            let listener = tokio::net::TcpListener::bind(c.listen)
                .await
                .with_context(|| format!("web console on {}", c.listen))?;
            let bound = listener.local_addr().context("web console address")?;
            tracing::info!("web console on https://{bound}");
            console::upload::clear_leftovers(&state.data);
            let console = Arc::new(console::Console {
                max_upload: c.max_upload_bytes,
                ..console::Console::new(state.clone())
            });
            Some(tokio::spawn(console::serve(
                listener,
                tls,
                console,
                stop_api.clone(),
            )))
        }
        _ => None,
    };
    let api_task = match api {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin API on {addr}"))?;
            let bound = listener.local_addr().context("admin API address")?;
            on_listening(endpoint.local_addr()?, Some(bound));
            Some(tokio::spawn(api::serve(listener, state, stop_api.clone())))
        }
        None => {
            on_listening(endpoint.local_addr()?, None);
            None
        }
    };
    exchange::serve_with(endpoint, service, exchange::Limits::CONTROLLER, shutdown).await;
    if let Some(far) = far {
        let _ = far.await;
    }
    stop_api.cancel();
    for t in [api_task, console_task].into_iter().flatten() {
        let _ = t.await;
    }
    Ok(())
}

fn reported(status: &image_tools::wire::Status) -> db::Reported {
    db::Reported {
        software: status.software.clone(),
        report: status.report.clone(),
    }
}

/// Records an agent's report forwarded by relay `peer`, as a node of the relay's own site (a relay
/// speaks only for its site). Returns whether it was recorded.
fn record_agent_report(
    data: &DataDir,
    peer: &Identity,
    status: &image_tools::wire::Status,
    now: i64,
) -> bool {
    let node = &status.node_id;
    tracing::debug!(%peer, %node, "agent report");
    let recorded = db::Db::open(&data.database()).and_then(|mut db| {
        db.record_agent_report(
            peer.site.as_str(),
            node.as_str(),
            &status.holding,
            &reported(status),
            now,
        )
    });
    match recorded {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!(%peer, %node, "forwarded report names a node of another role: ignored");
            false
        }
        Err(e) => {
            tracing::error!(%peer, %node, error = %e, "cannot record the agent's report");
            false
        }
    }
}
