//! `nightcast-relay run`: the unattended site cache.
//!
//! Five tasks share one [`Relay`]:
//! - **link**: keeps a connection to the controller (backoff with jitter when it is away), asks for
//!   the site plan and sends a report every `poll_secs`, and counts the WAN bytes, split by whether
//!   the WAN was open (a night window or an override) or closed;
//! - **fetcher**: inside the site's night windows (or under an override, for that master only)
//!   fetches the chunks the cache lacks, earliest deadline first, at the site's WAN cap; a window
//!   that closes stops it after the requests under way; wakes the site's NUCs when a window opens;
//! - **LAN server**: the chunk-exchange protocol for the site's agents, at any hour, from the cache;
//!   a chunk the cache lacks is fetched on demand only while the WAN is open, otherwise the answer
//!   is "not yet, expected at the next window";
//! - **scrub**: re-reads every cached chunk at a bounded rate; a corrupt one is dropped (and so
//!   fetched again); the LAN server drops one the same way the moment it reads it;
//! - **status**: writes `DATA/status.json` four times a second and reports NUCs that were woken and did
//!   not answer;
//! - **scrape** (only with `metrics_addr`): answers Prometheus' `GET /metrics` from the same
//!   counters;
//! - **siblings** (only with `sibling_discovery`): finds the site's other relays and keeps a
//!   connection to each (`crate::siblings`): the fetcher takes what they hold over the LAN first,
//!   and a relay that is not the one crossing the WAN takes the rest from the one that is (as do
//!   its LAN's on-demand reads).
//!
//! Files, one idea each: this one holds [`Relay`] (the shared state), its opening and [`run`];
//! `holdings` what the cache holds (kept manifests, what each master lacks, pins, eviction,
//! corrupt chunks); `link` the connection to the controller (plans, reports, WAN byte counts);
//! `renewal` the relay's credentials (signing keys, LAN TLS, certificate renewal); `fetching` the
//! shell around the pure [`crate::fetcher::Fetcher`]; `serving` the LAN side (the store graph
//! and the catalogue agents read); `status` the agents' reports, Wake-on-LAN and `status.json`;
//! `scrub` the background re-read; `scrape` the metrics listener.
//!
//! Durability: chunks are stored before anything says they are there; a manifest is kept as soon as
//! it is verified (so that a restart resumes and agents can start), and whether a master is complete
//! is always computed from the store, never remembered. The last plan is kept in `DATA/plan.json`,
//! so that a relay restarted while the controller is away still knows its windows and pins.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use image_tools::clock::Clock;
use image_tools::exchange::{self, Connection, RateLimit, Service};
use image_tools::store::{open_disk_store, DiskStore, Format};
use image_tools::trust::keyring::KeyRing;
use image_tools::trust::{Credentials, Identity, Revoked};
use image_tools::wire::{Hello, MasterRef, Role, SitePlan, Status};
use image_tools::{Bandwidth, ChunkId, NodeId};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{self, Gate};
use crate::config::Config;

mod fetching;
mod holdings;
mod link;
mod renewal;
mod scrape;
mod scrub;
mod serving;
mod siblings;
mod status;

use holdings::Known;
pub use status::{Agent, MasterState, Stats};

/// The relay's shared state.
pub struct Relay {
    cfg: Config,
    clock: Clock,
    me: Identity,
    /// Renewed by the link task before they expire.
    creds: RwLock<Credentials>,
    /// The manifest-signing keys accepted (from enrolment, then every plan).
    keys: RwLock<KeyRing>,
    /// The site's agents whose certificates the controller revoked (from the plan).
    revoked: Revoked,
    /// The LAN server's endpoint, whose certificate is swapped in place when renewed.
    lan: std::sync::OnceLock<quinn::Endpoint>,
    quota: u64,
    store: Arc<dyn DiskStore>,
    /// The store's shared lock, for as long as the relay runs: a `nightcast-image gc` would drop
    /// what it fetches, another process opening the store would clean its writes in progress.
    _writing: image_tools::store::StoreLock,
    plan: RwLock<SitePlan>,
    known: RwLock<BTreeMap<MasterRef, Known>>,
    link: watch::Sender<Option<Connection>>,
    /// The site's other relays, connected, by name (`siblings`; empty without
    /// `sibling_discovery`): what they hold is fetched from them over the LAN, and the first one
    /// by name, if before this one, crosses the WAN for both.
    siblings: watch::Sender<Vec<siblings::Upstream>>,
    /// Last use of each chunk by an agent, as a tick; for least-recently-used eviction.
    last_used: Mutex<HashMap<ChunkId, u64>>,
    tick: AtomicU64,
    rate: Arc<RateLimit>,
    /// Something changed that the fetcher should look at (plan, a dropped chunk).
    wake: Notify,
    /// Report to the controller now (a master completed).
    report_now: Notify,
    /// Holdings must be recomputed from the store before they are trusted again.
    dirty: AtomicBool,
    /// A night transfer is under way: agents wait for it rather than fetch the same chunks again.
    transferring: AtomicBool,
    /// `agents` changed since `agents.json` was last written (the status task writes it).
    agents_changed: AtomicBool,
    /// When the far port of the plan last could not be reached (none: since it last worked).
    far_failed_at: Mutex<Option<i64>>,
    /// The last of the DSI's wake orders (`SitePlan::orders`) sent (0: none since the start).
    woken_order: AtomicU64,
    agents: Mutex<BTreeMap<String, Agent>>,
    /// Where the site's agents serve their peers and what they fetch (`GetPeers`).
    tracker: Mutex<crate::tracker::Tracker>,
    /// The last report of each agent, to pass on to the controller (which learns of NUCs only so).
    forward: Mutex<BTreeMap<NodeId, Status>>,
    stats: Mutex<Stats>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Relay({})", self.me)
    }
}

/// Runs the relay until `shutdown`; `listening` is told the LAN, discovery and metrics addresses
/// once they are bound.
pub async fn run(
    cfg: Config,
    clock: Clock,
    shutdown: CancellationToken,
    listening: impl FnOnce(SocketAddr, SocketAddr, Option<SocketAddr>),
) -> anyhow::Result<()> {
    let relay = Relay::open(cfg, clock)?;
    let endpoint = exchange::server_endpoint(relay.cfg.listen, relay.lan_tls()?)
        .with_context(|| format!("cannot listen on {}", relay.cfg.listen))?;
    let _ = relay.lan.set(endpoint.clone());
    let lan = endpoint.local_addr()?;
    let discovery = tokio::net::UdpSocket::bind(relay.cfg.discovery)
        .await
        .with_context(|| format!("cannot answer discovery on {}", relay.cfg.discovery))?;
    let discovery_addr = discovery.local_addr()?;
    let metrics = match relay.cfg.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr} (metrics_addr)"))?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    listening(lan, discovery_addr, metrics_addr);
    tracing::info!(site = %relay.me.site, quota = relay.quota, "relay started");
    {
        let r = relay.clone();
        tokio::task::spawn_blocking(move || r.self_check())
            .await
            .context("start-up check")??;
    }

    let tracker = TaskTracker::new();
    let service = Arc::new(Service {
        hello: relay.hello(),
        store: serving::lan_store(&relay),
        catalog: Arc::new(serving::LanCatalog(relay.clone())),
        enroller: None,
        forward_enroll: Some({
            let r = relay.clone();
            Box::new(move |request| {
                let conn = r.link.borrow().clone();
                Box::pin(async move {
                    let Some(conn) = conn else {
                        return Err((
                            image_tools::wire::ErrorCode::Internal,
                            "the relay cannot reach the controller now: try again later".into(),
                        ));
                    };
                    conn.enroll(request).await.map_err(|e| match e {
                        exchange::ExchangeError::Refused { code, message, .. } => (code, message),
                        other => (image_tools::wire::ErrorCode::Internal, other.to_string()),
                    })
                })
            })
        }),
        on_report: {
            let r = relay.clone();
            Box::new(move |peer, status| r.agent_reported(peer, status))
        },
        revoked: relay.revoked.clone(),
        served: exchange::Served::default(),
    });
    tracker.spawn(exchange::serve(endpoint, service, shutdown.clone()));
    {
        let (shutdown, r) = (shutdown.clone(), relay.clone());
        let port = lan.port();
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = image_tools::discovery::answer_with(discovery, move || r.discovery_answer(port)) => {}
            }
        });
    }
    tracker.spawn(link::link_task(relay.clone(), shutdown.clone()));
    if let Some(ask) = relay.cfg.sibling_discovery {
        tracker.spawn(siblings::siblings_task(
            relay.clone(),
            ask,
            shutdown.clone(),
        ));
    }
    tracker.spawn(fetching::fetch_task(relay.clone(), shutdown.clone()));
    tracker.spawn(scrub::scrub_task(relay.clone(), shutdown.clone()));
    tracker.spawn(status::status_task(relay.clone(), shutdown.clone()));
    if let Some(listener) = metrics {
        tracker.spawn(scrape::scrape_task(
            relay.clone(),
            listener,
            shutdown.clone(),
        ));
    }
    tracker.close();
    shutdown.cancelled().await;
    tracing::info!("stopping");
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop in time");
    }
    relay.write_status();
    relay.write_agents();
    Ok(())
}

impl Relay {
    fn open(cfg: Config, clock: Clock) -> anyhow::Result<Arc<Relay>> {
        let (creds, ring) = image_tools::trust::load_enrolment(&cfg.data).with_context(|| {
            format!(
                "{} is not enrolled: run `nightcast-relay enroll` first",
                cfg.data.display()
            )
        })?;
        let me = creds
            .identity_as(Role::Relay)
            .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.data.display()))?;
        if let Some(site) = &cfg.site {
            if site != me.site.as_str() {
                anyhow::bail!(
                    "site = {site:?} in the config, but this relay is enrolled for {:?}",
                    me.site.as_str()
                );
            }
        }
        let quota = cfg.quota_bytes()?;
        std::fs::create_dir_all(manifests_dir(&cfg.data))?;
        // A new cache is a file store; one converted to packs (`nightcast-image convert`) stays so.
        let store: Arc<dyn DiskStore> =
            Arc::from(open_disk_store(&cfg.data.join("store"), Format::Files)?);
        let writing = store.lock(false)?;
        let plan = load_plan(&cfg.data);
        let rate = Arc::new(RateLimit::new(cap_bits(&plan)));
        let stats = Stats {
            software: env!("CARGO_PKG_VERSION").into(),
            site: me.site.to_string(),
            quota_bytes: quota,
            rate_bits_per_sec: cap_bits(&plan),
            ..Stats::default()
        };
        let agents = std::fs::read(cfg.data.join("agents.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let revoked = Revoked::default();
        revoked.replace(revoked_serials(&plan));
        Ok(Arc::new(Relay {
            clock,
            me,
            creds: RwLock::new(creds),
            keys: RwLock::new(ring),
            revoked,
            lan: std::sync::OnceLock::new(),
            quota,
            store,
            _writing: writing,
            plan: RwLock::new(plan),
            known: RwLock::new(BTreeMap::new()),
            link: watch::Sender::new(None),
            siblings: watch::Sender::new(Vec::new()),
            last_used: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(1),
            rate,
            wake: Notify::new(),
            report_now: Notify::new(),
            dirty: AtomicBool::new(false),
            transferring: AtomicBool::new(false),
            agents_changed: AtomicBool::new(false),
            woken_order: AtomicU64::new(0),
            far_failed_at: Mutex::new(None),
            agents: Mutex::new(agents),
            tracker: Mutex::default(),
            forward: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(stats),
            runtime: tokio::runtime::Handle::current(),
            cfg,
        }))
    }

    fn hello(&self) -> Hello {
        Hello::new(Role::Relay, &self.me.node)
    }

    fn plan(&self) -> SitePlan {
        self.plan.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Where the link to the controller goes at `now` (`crate::route`).
    fn route(&self, now: i64) -> crate::route::Route {
        let failed = self.far_failed_at.lock().ok().and_then(|f| *f);
        let far_port = self.plan.read().ok().and_then(|p| p.far_port);
        crate::route::choose(self.cfg.controller, far_port, failed, now)
    }

    fn gate(&self, now: i64) -> Gate {
        let plan = self.plan();
        cache::gate(cache::schedule(&plan).as_ref(), &plan, now)
    }

    /// Paces the fetcher to the cap in force at `now` (`cache::cap_in_force`: the emergency cap
    /// under an override in the daytime, else the night cap).
    fn pace(&self, now: i64) {
        let plan = self.plan();
        let gate = cache::gate(cache::schedule(&plan).as_ref(), &plan, now);
        let bits = cache::cap_in_force(gate, &plan).usable().bits_per_sec();
        if self.rate.rate() != bits {
            tracing::info!(
                bits_per_sec = bits,
                ?gate,
                "pacing the WAN to the cap in force"
            );
            self.rate.set_rate(bits);
        }
        self.stat(|s| s.rate_bits_per_sec = bits);
    }

    fn stat(&self, f: impl FnOnce(&mut Stats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn error(&self, what: String) {
        tracing::error!("{what}");
        self.stat(|s| s.last_error = Some(what));
    }
}

fn manifests_dir(data: &Path) -> PathBuf {
    data.join("manifests")
}

/// The serials the plan says to refuse.
fn revoked_serials(plan: &SitePlan) -> Vec<Vec<u8>> {
    plan.revoked
        .iter()
        .filter_map(|h| image_tools::ids::unhex_vec(h))
        .collect()
}

fn load_plan(data: &Path) -> SitePlan {
    std::fs::read(data.join("plan.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The rate the fetcher paces to: what the planner counts with ([`Bandwidth::usable`] of the
/// site's cap; no cap given, no pacing: the controller always sends one).
fn cap_bits(plan: &SitePlan) -> u64 {
    Bandwidth::site_cap(plan.cap_mbit).usable().bits_per_sec()
}

/// Replaces a small informative file (status, agents) atomically; not fsynced: losing the last
/// second of it in a power cut costs nothing.
fn write_quick(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
