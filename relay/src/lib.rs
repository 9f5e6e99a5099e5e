//! nightcast-relay: the unattended site cache. It fetches the chunks its site lacks from the
//! controller during the site's night windows, and serves them to the site's NUCs all day.
//!
//! Module map:
//! - [`daemon`]: `nightcast-relay run`, its tasks (link, fetcher, LAN server, scrub, status).
//! - [`fetcher`]: the night fetcher's decisions, sans-IO: what to fetch, until when, when to
//!   look again (window, priority, stop at the window's end, retry, override).
//! - [`cache`]: the pure decisions: is the WAN open now, what is pinned, what to evict.
//! - [`config`]: the TOML configuration (`relay/relay.example.toml`).
//! - [`route`]: where the link to the controller goes: the configured address, or its host at
//!   the far port a far site's plan names (pure).
//! - [`manifest_base`]: which kept manifest a new version's manifest is asked against (pure).
//! - [`siblings`]: two relays at one site: which one crosses the WAN, which fetch from it (pure).
//! - [`tracker`]: which of the site's agents a NUC may fetch a master from, and its stripe
//!   (peer sharing), pure.
//! - [`metrics`]: what `GET /metrics` answers (Prometheus text), from the relay's own counters.
//! - [`wol`]: Wake-on-LAN magic packets.
//! - this file: the one-shot commands (`enroll`, `plan`, `fetch`).
//!
//! Data directory layout:
//! ```text
//! DATA/tls/node.key, node.crt, ca.crt   identity from enrolment (node.key mode 0600)
//! DATA/signing.pub                      the manifest-signing key pinned at enrolment
//! DATA/signing-keys.json                the signing keys accepted, endorsed by the CA (plans renew them)
//! DATA/store/                           the site's chunk cache
//! DATA/manifests/NAME-VERSION.manifest  verified manifests of the versions being fetched or held;
//!                                       a version is held when the store has all its chunks
//! DATA/plan.json                        the last plan from the controller (windows, cap, pins)
//! DATA/agents.json                      the site's NUCs as they last reported (MAC, needs)
//! DATA/status.json                      what the relay is doing, rewritten every second
//! ```
//!
//! Architecture invariants: the relay sends nothing on the WAN outside its site's windows but
//! plan requests and reports (an override opens it for one master version); a chunk is served only
//! after it was read back and verified; a pinned chunk is never evicted; the relay never accepts a
//! connection from the WAN side (it dials the controller).

pub mod cache;
pub mod config;
pub mod daemon;
pub mod fetcher;
pub mod local_time;
pub mod manifest_base;
pub mod metrics;
pub mod route;
pub mod siblings;
pub mod tracker;
pub mod wol;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use image_tools::clock::Clock;
use image_tools::exchange::{self, Connection, FetchOptions, FetchReport, RateLimit};
use image_tools::store::{open_disk_store, DiskStore, Format};
use image_tools::trust;
use image_tools::wire::{Hello, MasterRef, Role};
use image_tools::{Bandwidth, NodeId, VerifiedManifest};

/// Enrols this relay with a token from `nightcast-controller token`, and saves its identity.
pub async fn enroll(
    controller: SocketAddr,
    token: &str,
    node_id: &NodeId,
    data: &Path,
    clock: Clock,
) -> Result<trust::Identity> {
    let (creds, signing_key) =
        exchange::enroll(controller, token, Role::Relay, node_id.as_str(), clock)
            .await
            .context("enrolment failed")?;
    trust::save_enrolment(data, &creds, &signing_key)?;
    creds
        .identity()
        .context("the certificate names no identity")
}

/// An authenticated connection to the controller, hello done.
struct Session {
    endpoint: quinn::Endpoint,
    conn: Connection,
    /// The manifest-signing keys accepted now.
    keys: Vec<image_tools::PublicKey>,
    me: trust::Identity,
}

impl Session {
    async fn open(controller: SocketAddr, data: &Path, clock: Clock) -> Result<Session> {
        let (creds, ring) = trust::load_enrolment(data)
            .context("not enrolled: run `nightcast-relay enroll` first")?;
        let me = creds
            .identity()
            .context("the certificate names no identity")?;
        let endpoint = exchange::client_endpoint()?;
        let tls = creds.client_config(trust::Expect::Controller, clock)?;
        let conn = Connection::connect(&endpoint, controller, tls).await?;
        conn.hello(Hello::new(me.role, &me.node)).await?;
        Ok(Session {
            endpoint,
            conn,
            keys: ring.accepted(clock.now()),
            me,
        })
    }
}

/// Asks the controller for this site's fetch plan (earliest deadline first).
pub async fn plan(
    controller: SocketAddr,
    data: &Path,
    clock: Clock,
) -> Result<image_tools::wire::SitePlan> {
    let Session { endpoint, conn, .. } = Session::open(controller, data, clock).await?;
    let plan = conn.plan().await?;
    conn.close();
    endpoint.wait_idle().await;
    Ok(plan)
}

/// The verified manifests in `dir`.
fn kept_manifests(dir: &Path, keys: &[image_tools::PublicKey]) -> Vec<VerifiedManifest> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| VerifiedManifest::open_with(b, keys).ok())
        .collect()
}

/// The master versions whose manifests are in `dir` and whose chunks are all in `store`.
fn held_masters(
    dir: &Path,
    keys: &[image_tools::PublicKey],
    store: &dyn DiskStore,
) -> Vec<MasterRef> {
    let mut out: Vec<MasterRef> = kept_manifests(dir, keys)
        .into_iter()
        .filter(|m| {
            m.unique_chunks()
                .iter()
                .all(|c| store.has(&c.id).unwrap_or(false))
        })
        .map(|m| m.master())
        .collect();
    out.sort();
    out
}

/// Fetches every chunk of `master` the cache lacks, then records its manifest.
pub async fn fetch(
    controller: SocketAddr,
    data: &Path,
    master: &MasterRef,
    rate_mbit: Option<u64>,
    progress: exchange::FetchProgress<'_>,
    clock: Clock,
) -> Result<FetchReport> {
    let Session {
        endpoint,
        conn,
        keys,
        me,
    } = Session::open(controller, data, clock).await?;
    // As a delta to the newest other version kept, if any.
    let kept = kept_manifests(&data.join("manifests"), &keys);
    let refs: Vec<MasterRef> = kept.iter().map(|m| m.master()).collect();
    let base = manifest_base::choose(&refs.iter().collect::<Vec<_>>(), master)
        .and_then(|b| kept.iter().find(|m| m.master() == *b));
    let bytes = match base {
        Some(b) => conn.manifest_against(master, b.bytes()).await?.bytes,
        None => conn.manifest(master).await?,
    };
    let manifest = VerifiedManifest::open_with(bytes, &keys)
        .context("the controller sent a manifest that does not verify")?;
    let store: Arc<dyn DiskStore> = Arc::from(open_disk_store(&data.join("store"), Format::Files)?);
    let _writing = store.lock(false)?;
    let rate = rate_mbit.map(|m| Arc::new(RateLimit::new(Bandwidth::from_mbit(m).bits_per_sec())));
    let report = exchange::fetch_missing(
        &conn,
        store.clone(),
        &manifest,
        FetchOptions::default(),
        rate,
        progress,
    )
    .await?;
    if let Some(first) = report.lacking.first() {
        // What was received is kept; the master is not recorded as held until every chunk is.
        conn.close();
        anyhow::bail!(
            "the controller lacks {} chunk(s) of {} {} (first: {}): nothing is recorded as held; \
             check the controller's store (`nightcast-image scrub`), then fetch again",
            report.lacking.len(),
            master.name,
            master.version,
            first
        );
    }
    // Chunks are durable; only now does the manifest say the master is here.
    let dir = data.join("manifests");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}-{}.manifest", manifest.name, manifest.version));
    image_tools::durable::write_file(&path, manifest.bytes(), 0o644)?;
    // Tell the controller what this site now holds (its planner counts on it).
    let status = image_tools::wire::Status {
        node_id: me.node.clone(),
        software: env!("CARGO_PKG_VERSION").into(),
        holding: held_masters(&dir, &keys, &store),
        report: image_tools::report::Report::Bare,
    };
    if let Err(e) = conn.report(status).await {
        tracing::warn!(error = %e, "could not report to the controller");
    }
    conn.close();
    endpoint.wait_idle().await;
    Ok(report)
}
