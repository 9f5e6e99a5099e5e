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
//!   not answer.
//!
//! Durability: chunks are stored before anything says they are there; a manifest is kept as soon as
//! it is verified (so that a restart resumes and agents can start), and whether a master is complete
//! is always computed from the store, never remembered. The last plan is kept in `DATA/plan.json`,
//! so that a relay restarted while the controller is away still knows its windows and pins.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use image_tools::clock::Clock;
use image_tools::exchange::{self, Catalog, Connection, FetchOptions, RateLimit, Service};
use image_tools::store::StoreSize;
use image_tools::trust::keyring::KeyRing;
use image_tools::trust::{Admit, Credentials, Expect, Identity, Revoked};
use image_tools::wire::{Hello, MasterRef, Role, SitePlan, Status, PROTOCOL_VERSION};
use image_tools::{
    Bandwidth, ChunkId, ChunkStore, LocalStore, PublicKey, StoreError, VerifiedChunk,
    VerifiedManifest,
};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{self, Gate};
use crate::config::Config;
use crate::wol::{self, Mac};

type Key = (String, String);

fn key(m: &MasterRef) -> Key {
    (m.name.clone(), m.version.clone())
}

/// A master version whose verified manifest the relay keeps.
#[derive(Debug)]
struct Known {
    manifest: Arc<VerifiedManifest>,
    missing_chunks: u64,
    missing_bytes: u64,
}

/// One NUC of the site, as its last report said.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Agent {
    pub mac: Option<String>,
    /// Master versions its seat needs ("name version").
    pub needs: Vec<String>,
    pub holding: Vec<String>,
    pub last_seen: i64,
    /// When the relay last woke it.
    pub woken_at: Option<i64>,
}

impl Agent {
    fn lacks_something(&self) -> bool {
        self.needs.iter().any(|n| !self.holding.contains(n))
    }
}

/// What `DATA/status.json` says, and what the reports to the controller carry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub now: i64,
    pub software: String,
    pub site: String,
    pub connected: bool,
    /// "fetching NAME VERSION", "idle", "waiting for the window at ...".
    pub state: String,
    /// WAN bytes (UDP, both directions, every overhead) while the WAN was open / closed.
    pub wan_bytes_open: u64,
    pub wan_bytes_closed: u64,
    /// WAN bytes of the window now open, or of the last one.
    pub wan_bytes_this_window: u64,
    /// The WAN's rate over the last seconds (bits per second, smoothed).
    pub wan_bits_per_sec: u64,
    pub fetched_chunks: u64,
    pub fetched_bytes: u64,
    /// Chunks asked for by agents and fetched at once (WAN open).
    pub on_demand_chunks: u64,
    pub served_chunks: u64,
    pub served_bytes: u64,
    pub corrupt_dropped: u64,
    pub evicted_chunks: u64,
    pub disk_bytes: u64,
    pub quota_bytes: u64,
    pub pinned_bytes: u64,
    /// How far the chunks that must be kept exceed the quota (0: they fit).
    pub pinned_over_quota: u64,
    pub disk_full: bool,
    pub rate_bits_per_sec: u64,
    pub masters: Vec<MasterState>,
    pub agents_not_answering: Vec<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MasterState {
    pub name: String,
    pub version: String,
    pub complete: bool,
    pub missing_bytes: u64,
}

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
    store: Arc<LocalStore>,
    plan: RwLock<SitePlan>,
    known: RwLock<BTreeMap<Key, Known>>,
    link: watch::Sender<Option<Connection>>,
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
    agents: Mutex<BTreeMap<String, Agent>>,
    /// The last report of each agent, to pass on to the controller (which learns of NUCs only so).
    forward: Mutex<BTreeMap<String, Status>>,
    stats: Mutex<Stats>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Relay({})", self.me)
    }
}

/// Runs the relay until `shutdown`; `listening` is told the LAN address once it is bound.
pub async fn run(
    cfg: Config,
    clock: Clock,
    shutdown: CancellationToken,
    listening: impl FnOnce(SocketAddr, SocketAddr),
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
    listening(lan, discovery_addr);
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
        store: Arc::new(LanStore {
            relay: relay.clone(),
            fetching: Mutex::default(),
        }),
        catalog: Arc::new(LanCatalog(relay.clone())),
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
    });
    tracker.spawn(exchange::serve(endpoint, service, shutdown.clone()));
    {
        let answer = image_tools::discovery::Answer {
            nightcast: 1,
            site: relay.me.site.to_string(),
            relay: relay.me.node.to_string(),
            port: lan.port(),
            ca: image_tools::ids::hex(&image_tools::trust::fingerprint(&relay.creds().ca)),
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = image_tools::discovery::answer(discovery, answer) => {}
            }
        });
    }
    tracker.spawn(link_task(relay.clone(), shutdown.clone()));
    tracker.spawn(fetch_task(relay.clone(), shutdown.clone()));
    tracker.spawn(scrub_task(relay.clone(), shutdown.clone()));
    tracker.spawn(status_task(relay.clone(), shutdown.clone()));
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
            .identity()
            .context("the certificate names no identity")?;
        if me.role != Role::Relay {
            anyhow::bail!(
                "the certificate in {} is a {}'s, not a relay's",
                cfg.data.display(),
                me.role
            );
        }
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
        let store = Arc::new(LocalStore::open(&cfg.data.join("store"))?);
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
            plan: RwLock::new(plan),
            known: RwLock::new(BTreeMap::new()),
            link: watch::Sender::new(None),
            last_used: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(1),
            rate,
            wake: Notify::new(),
            report_now: Notify::new(),
            dirty: AtomicBool::new(false),
            transferring: AtomicBool::new(false),
            agents_changed: AtomicBool::new(false),
            agents: Mutex::new(agents),
            forward: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(stats),
            runtime: tokio::runtime::Handle::current(),
            cfg,
        }))
    }

    fn hello(&self) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            role: Role::Relay,
            node_id: self.me.node.to_string(),
            capabilities: vec![],
        }
    }

    fn plan(&self) -> SitePlan {
        self.plan.read().map(|p| p.clone()).unwrap_or_default()
    }

    fn gate(&self, now: i64) -> Gate {
        let plan = self.plan();
        cache::gate(cache::schedule(&plan).as_ref(), &plan, now)
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

    /// Start-up self-care: the manifests kept are verified again, and what each master lacks is
    /// computed from the store itself (the store's temp files were removed when it opened).
    fn self_check(&self) -> anyhow::Result<()> {
        let dir = manifests_dir(&self.cfg.data);
        let removed = image_tools::durable::clean_temp_files(&dir)?;
        let mut known = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)?.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "manifest") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    VerifiedManifest::open_with(b, &self.accepted_keys()).map_err(|e| e.to_string())
                }) {
                Ok(m) => {
                    let k = (m.name.to_string(), m.version.to_string());
                    known.insert(k, self.known_from(Arc::new(m))?);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dropping a manifest that does not verify");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        for ((name, version), k) in &known {
            tracing::info!(
                master = %name,
                %version,
                missing_chunks = k.missing_chunks,
                missing_bytes = k.missing_bytes,
                "cache check"
            );
        }
        if let Ok(mut slot) = self.known.write() {
            *slot = known;
        }
        if removed > 0 {
            tracing::info!(removed, "removed temp files left by an interrupted run");
        }
        self.evict(0);
        Ok(())
    }

    fn known_from(&self, manifest: Arc<VerifiedManifest>) -> Result<Known, StoreError> {
        let mut known = Known {
            manifest,
            missing_chunks: 0,
            missing_bytes: 0,
        };
        for c in known.manifest.unique_chunks() {
            if !self.store.has(&c.id)? {
                known.missing_chunks += 1;
                known.missing_bytes += u64::from(c.stored_len) + 5;
            }
        }
        Ok(known)
    }

    /// Recomputes what every kept master lacks (after a fetch, a dropped chunk, an eviction).
    fn recheck(&self) {
        self.dirty.store(false, Ordering::SeqCst);
        let manifests: Vec<Arc<VerifiedManifest>> = self
            .known
            .read()
            .map(|k| k.values().map(|k| k.manifest.clone()).collect())
            .unwrap_or_default();
        let mut fresh = BTreeMap::new();
        for m in manifests {
            match self.known_from(m.clone()) {
                Ok(k) => {
                    fresh.insert((m.name.to_string(), m.version.to_string()), k);
                }
                Err(e) => self.error(format!("cannot read the cache: {e}")),
            }
        }
        if let Ok(mut slot) = self.known.write() {
            for (k, v) in fresh {
                slot.insert(k, v);
            }
        }
    }

    fn complete(&self, m: &MasterRef) -> bool {
        self.known
            .read()
            .map(|k| k.get(&key(m)).is_some_and(|k| k.missing_chunks == 0))
            .unwrap_or(false)
    }

    /// The master versions held in full.
    fn holding(&self) -> Vec<MasterRef> {
        self.known
            .read()
            .map(|k| {
                k.iter()
                    .filter(|(_, v)| v.missing_chunks == 0)
                    .map(|((name, version), _)| MasterRef {
                        name: name.clone(),
                        version: version.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keeps a verified manifest (durably) and starts counting what it lacks.
    fn keep_manifest(&self, m: VerifiedManifest) -> anyhow::Result<Arc<VerifiedManifest>> {
        let path = manifests_dir(&self.cfg.data).join(format!("{}-{}.manifest", m.name, m.version));
        image_tools::durable::write_file(&path, m.bytes(), 0o644)?;
        let m = Arc::new(m);
        let known = self.known_from(m.clone())?;
        if let Ok(mut k) = self.known.write() {
            k.insert((m.name.to_string(), m.version.to_string()), known);
        }
        Ok(m)
    }

    /// Chunks that must never be evicted: those of every master version the plan pins now.
    fn pinned(&self, now: i64) -> HashSet<ChunkId> {
        let plan = self.plan();
        let known = match self.known.read() {
            Ok(k) => k,
            Err(_) => return HashSet::new(),
        };
        let mut out = HashSet::new();
        for e in plan.entries.iter().filter(|e| e.pin_until > now) {
            if let Some(k) = known.get(&key(&e.master)) {
                out.extend(k.manifest.chunks().map(|c| c.id));
            }
        }
        out
    }

    /// Evicts unpinned chunks, least recently used first, until the cache fits its quota with
    /// `room` bytes to spare. Says loudly when the pinned chunks alone do not fit.
    fn evict(&self, room: u64) {
        let now = self.clock.now();
        let entries = match self.store.entries() {
            Ok(e) => e,
            Err(e) => return self.error(format!("cannot list the cache: {e}")),
        };
        let pinned = self.pinned(now);
        let plan = {
            let used = self.last_used.lock().map(|u| u.clone()).unwrap_or_default();
            cache::plan_eviction(&entries, &pinned, &used, self.quota, room)
        };
        let mut removed = 0u64;
        for id in &plan.remove {
            match self.store.remove(id) {
                Ok(()) | Err(StoreError::Missing(_)) => removed += 1,
                Err(e) => {
                    self.error(format!("cannot evict {}: {e}", id.short()));
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                chunks = removed,
                bytes = plan.freed,
                "evicted least recently used chunks"
            );
            if let Ok(mut used) = self.last_used.lock() {
                for id in &plan.remove {
                    used.remove(id);
                }
            }
            self.forget_unplanned();
            self.recheck();
        }
        let previous = self.stats.lock().map(|s| s.pinned_over_quota).unwrap_or(0);
        if plan.pinned_over_quota > 0 && plan.pinned_over_quota != previous {
            tracing::error!(
                pinned = plan.pinned_bytes,
                quota = self.quota,
                over = plan.pinned_over_quota,
                "QUOTA TOO SMALL: the masters scheduled for this site need more than the cache quota; \
                 keeping all of them (nothing scheduled is evicted) and serving on; raise `quota`"
            );
        }
        self.stat(|s| {
            s.evicted_chunks += removed;
            s.disk_bytes = plan.after;
            s.pinned_bytes = plan.pinned_bytes;
            s.pinned_over_quota = plan.pinned_over_quota;
        });
    }

    /// Manifests of versions no longer in the plan, once their chunks start to go, are dropped.
    fn forget_unplanned(&self) {
        let planned: HashSet<Key> = self.plan().entries.iter().map(|e| key(&e.master)).collect();
        let Ok(mut known) = self.known.write() else {
            return;
        };
        let gone: Vec<Key> = known
            .keys()
            .filter(|k| !planned.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            let path = manifests_dir(&self.cfg.data).join(format!("{}-{}.manifest", k.0, k.1));
            let _ = std::fs::remove_file(path);
            known.remove(&k);
            tracing::info!(master = %k.0, version = %k.1, "no longer scheduled: forgotten");
        }
    }

    /// A chunk on our disk failed its hash: drop it, so that it is fetched again and never served.
    fn drop_corrupt(&self, id: &ChunkId, reason: &str) {
        tracing::warn!(chunk = %id, %reason, "corrupt chunk in the cache: dropped, will be fetched again");
        let _ = self.store.remove(id);
        self.stat(|s| s.corrupt_dropped += 1);
        self.dirty.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn touch(&self, id: &ChunkId) {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut used) = self.last_used.lock() {
            used.insert(*id, t);
        }
    }

    fn agent_reported(&self, peer: &Identity, status: Status) {
        if peer.site != self.me.site {
            return;
        }
        let field = |k: &str| {
            status
                .fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.clone())
        };
        let list = |v: Option<String>| -> Vec<String> {
            v.map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
        };
        let now = self.clock.now();
        if let Ok(mut agents) = self.agents.lock() {
            let a = agents.entry(peer.node.to_string()).or_default();
            a.mac = field("mac").or(a.mac.take());
            a.needs = list(field("needs"));
            a.holding = status
                .holding
                .iter()
                .map(|m| format!("{} {}", m.name, m.version))
                .collect();
            a.last_seen = now;
        }
        self.agents_changed.store(true, Ordering::SeqCst);
        // The certificate says who it is, whatever the report claims.
        let mut status = status;
        status.node_id = peer.node.to_string();
        if let Ok(mut f) = self.forward.lock() {
            f.insert(status.node_id.clone(), status);
        }
        self.report_now.notify_one();
    }

    /// Wakes the NUCs that lack a master they need (the window just opened).
    fn wake_agents(&self) {
        if !self.cfg.wake_on_lan.enabled {
            return;
        }
        let now = self.clock.now();
        let Ok(mut agents) = self.agents.lock() else {
            return;
        };
        for (node, a) in agents.iter_mut().filter(|(_, a)| a.lacks_something()) {
            let Some(mac) = a.mac.as_deref().and_then(|m| m.parse::<Mac>().ok()) else {
                tracing::warn!(%node, "lacks a master but never reported a MAC address: cannot wake it");
                continue;
            };
            match wol::wake(mac, self.cfg.wake_on_lan.target) {
                Ok(()) => {
                    tracing::info!(%node, %mac, "woken (Wake-on-LAN): it lacks a master it needs");
                    a.woken_at = Some(now);
                }
                Err(e) => tracing::warn!(%node, %mac, error = %e, "Wake-on-LAN failed"),
            }
        }
        drop(agents);
        self.agents_changed.store(true, Ordering::SeqCst);
    }

    fn status(&self) -> Status {
        let now = self.clock.now();
        let s = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        let mut fields: Vec<(String, String)> = vec![
            ("software".into(), s.software.clone()),
            ("state".into(), s.state.clone()),
            ("disk_bytes".into(), s.disk_bytes.to_string()),
            ("quota_bytes".into(), s.quota_bytes.to_string()),
            ("pinned_bytes".into(), s.pinned_bytes.to_string()),
            ("pinned_over_quota".into(), s.pinned_over_quota.to_string()),
            ("disk_full".into(), s.disk_full.to_string()),
            ("wan_bytes_open".into(), s.wan_bytes_open.to_string()),
            ("wan_bytes_closed".into(), s.wan_bytes_closed.to_string()),
            (
                "wan_bytes_this_window".into(),
                s.wan_bytes_this_window.to_string(),
            ),
            ("wan_bits_per_sec".into(), s.wan_bits_per_sec.to_string()),
            ("fetched_bytes".into(), s.fetched_bytes.to_string()),
            ("served_bytes".into(), s.served_bytes.to_string()),
            ("corrupt_dropped".into(), s.corrupt_dropped.to_string()),
            (
                "agents_not_answering".into(),
                s.agents_not_answering.join(","),
            ),
        ];
        for m in self.master_states() {
            fields.push((
                format!("missing {} {}", m.name, m.version),
                m.missing_bytes.to_string(),
            ));
        }
        if let Some(e) = s.last_error {
            fields.push(("last_error".into(), e));
        }
        fields.push(("time".into(), now.to_string()));
        Status {
            node_id: self.me.node.to_string(),
            holding: self.holding(),
            fields,
        }
    }

    fn master_states(&self) -> Vec<MasterState> {
        let plan = self.plan();
        let known = match self.known.read() {
            Ok(k) => k,
            Err(_) => return Vec::new(),
        };
        plan.entries
            .iter()
            .map(|e| {
                let k = known.get(&key(&e.master));
                MasterState {
                    name: e.master.name.clone(),
                    version: e.master.version.clone(),
                    complete: k.is_some_and(|k| k.missing_chunks == 0),
                    missing_bytes: k.map_or(0, |k| k.missing_bytes),
                }
            })
            .collect()
    }

    /// Keeps what the agents last reported (MACs for Wake-on-LAN) across restarts.
    fn write_agents(&self) {
        if !self.agents_changed.swap(false, Ordering::SeqCst) {
            return;
        }
        let bytes = self
            .agents
            .lock()
            .ok()
            .and_then(|a| serde_json::to_vec_pretty(&*a).ok());
        if let Some(bytes) = bytes {
            let _ = write_quick(&self.cfg.data.join("agents.json"), &bytes);
        }
    }

    fn write_status(&self) {
        let masters = self.master_states();
        let now = self.clock.now();
        let snapshot = match self.stats.lock() {
            Ok(mut s) => {
                s.now = now;
                s.masters = masters;
                s.connected = self.link.borrow().is_some();
                s.clone()
            }
            Err(_) => return,
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&snapshot) {
            let _ = write_quick(&self.cfg.data.join("status.json"), &bytes);
        }
    }

    /// Takes a new plan from the controller: kept on disk, and the fetcher looks at it.
    fn take_plan(&self, plan: SitePlan) {
        // Endorsements are renewed in every plan: taken even when nothing else changed.
        self.learn_keys(&plan);
        if self.plan.read().map(|p| *p == plan).unwrap_or(false) {
            return;
        }
        let now = self.clock.now();
        for e in &plan.entries {
            if let Some(until) = e.override_until.filter(|&u| u > now) {
                let was = self
                    .plan()
                    .entries
                    .iter()
                    .any(|o| o.master == e.master && o.override_until == e.override_until);
                if !was {
                    tracing::warn!(master = %e.master.name, version = %e.master.version, until, "OVERRIDE from the controller: fetching this master now, outside the night window");
                }
            }
        }
        tracing::info!(
            entries = plan.entries.len(),
            windows = %plan.windows.join(","),
            tz = %plan.tz,
            cap_mbit = plan.cap_mbit,
            "new plan"
        );
        self.rate.set_rate(cap_bits(&plan));
        self.stat(|s| s.rate_bits_per_sec = cap_bits(&plan));
        let revoked = revoked_serials(&plan);
        if revoked.len() != self.revoked.len() {
            tracing::info!(revoked = revoked.len(), "revoked NUC certificates");
        }
        self.revoked.replace(revoked);
        if let Ok(bytes) = serde_json::to_vec_pretty(&plan) {
            if let Err(e) =
                image_tools::durable::write_file(&self.cfg.data.join("plan.json"), &bytes, 0o644)
            {
                self.error(format!("cannot keep the plan on disk: {e}"));
            }
        }
        if let Ok(mut p) = self.plan.write() {
            *p = plan;
        }
        self.wake.notify_one();
    }

    async fn connect(
        &self,
        endpoint: &quinn::Endpoint,
    ) -> Result<Connection, exchange::ExchangeError> {
        let tls = self.creds().client_config(Expect::Controller, self.clock)?;
        let conn = Connection::connect(endpoint, self.cfg.controller, tls).await?;
        conn.hello(self.hello()).await?;
        Ok(conn)
    }

    /// The manifest-signing keys accepted now.
    fn accepted_keys(&self) -> Vec<PublicKey> {
        self.keys
            .read()
            .map(|k| k.accepted(self.clock.now()))
            .unwrap_or_default()
    }

    /// Takes the plan's endorsed signing keys (checked against our CA), kept on disk.
    fn learn_keys(&self, plan: &SitePlan) {
        let ca = self.creds().ca;
        let Ok(mut ring) = self.keys.write() else {
            return;
        };
        let (changed, refused) = ring.learn(&plan.signing_keys, &ca, self.clock.now());
        for key in refused {
            tracing::error!(%key, "the plan names a signing key our CA did not endorse: ignored");
        }
        if changed {
            tracing::info!(
                keys = ring.accepted(self.clock.now()).len(),
                "manifest-signing keys updated"
            );
            if let Err(e) = ring.save(&self.cfg.data) {
                drop(ring);
                self.error(format!("cannot keep the signing keys on disk: {e}"));
            }
        }
    }

    fn creds(&self) -> Credentials {
        match self.creds.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// TLS for the LAN server: the site's agents only, revoked ones refused.
    fn lan_tls(&self) -> anyhow::Result<rustls::ServerConfig> {
        Ok(self.creds().server_config(
            Admit::AgentsOf(self.me.site.clone()),
            self.revoked.clone(),
            self.clock,
        )?)
    }

    /// Renews the relay's certificate over `conn` when a third of its life is left: a new key, the
    /// certificate checked against the CA it has, saved, and served to the LAN from now on.
    async fn renew_if_due(&self, conn: &Connection) -> anyhow::Result<()> {
        let current = self.creds();
        if !current.renewal_due(self.clock.now()) {
            return Ok(());
        }
        let ring = self.keys.read().map(|k| k.clone()).unwrap_or_default();
        let (creds, signing) = exchange::renew(conn, &current, &ring, "", self.clock).await?;
        image_tools::trust::save_enrolment(&self.cfg.data, &creds, &signing)?;
        tracing::info!(
            not_after = creds.not_after(),
            "renewed this relay's certificate"
        );
        if let Ok(mut c) = self.creds.write() {
            *c = creds;
        }
        if let Some(endpoint) = self.lan.get() {
            exchange::set_server_tls(endpoint, self.lan_tls()?)?;
        }
        Ok(())
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

/// A random factor in [0.5, 1.5) for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    0.5 + (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

async fn link_task(r: Arc<Relay>, shutdown: CancellationToken) {
    let endpoint = match exchange::client_endpoint() {
        Ok(e) => e,
        Err(e) => return r.error(format!("cannot open a UDP socket: {e}")),
    };
    let mut backoff = 1.0f64;
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = r.connect(&endpoint) => c,
        };
        match attempt {
            Ok(conn) => {
                if failures > 0 {
                    tracing::info!(after_failures = failures, "controller reachable again");
                } else {
                    tracing::info!(controller = %r.cfg.controller, "connected to the controller");
                }
                backoff = 1.0;
                failures = 0;
                r.link.send_replace(Some(conn.clone()));
                r.wake.notify_one();
                let reason = keep_link(&r, &conn, &shutdown).await;
                r.link.send_replace(None);
                if shutdown.is_cancelled() {
                    conn.close();
                    break;
                }
                tracing::warn!(%reason, "lost the controller; the LAN is still served from the cache");
            }
            Err(e) => {
                failures += 1;
                // Loud the first time, then once an hour's worth of attempts.
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(error = %e, attempts = failures, "cannot reach the controller; the LAN is still served from the cache");
                }
            }
        }
        let wait = Duration::from_secs_f64(backoff * jitter());
        backoff = (backoff * 2.0).min(r.cfg.reconnect_max_secs as f64);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    endpoint.close(0u32.into(), b"bye");
}

/// Polls, reports and counts bytes on one connection until it fails; returns why.
async fn keep_link(r: &Relay, conn: &Connection, shutdown: &CancellationToken) -> String {
    let mut counted = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let poll_every = r.cfg.poll_secs;
    let mut seconds = 0u64;
    let mut window_seen: Option<i64> = None;
    let mut was_open = false;
    loop {
        if seconds % poll_every == 0 {
            match conn.plan().await {
                Ok(plan) => r.take_plan(plan),
                Err(e) => return format!("plan: {e}"),
            }
            if let Err(e) = r.renew_if_due(conn).await {
                r.error(format!("cannot renew this relay's certificate: {e:#}"));
            }
            if let Err(e) = conn.report(r.status()).await {
                return format!("report: {e}");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return "shutdown".into(),
            reason = conn.closed() => return reason,
            _ = tick.tick() => seconds += 1,
            _ = r.report_now.notified() => {
                if let Err(e) = conn.report(r.status()).await {
                    return format!("report: {e}");
                }
            }
        }
        // Pass on what the site's agents reported since.
        let pending: Vec<Status> = r
            .forward
            .lock()
            .map(|mut f| std::mem::take(&mut *f).into_values().collect())
            .unwrap_or_default();
        for status in pending {
            if let Err(e) = conn.report(status).await {
                return format!("report for an agent: {e}");
            }
        }
        // Count what crossed the WAN since the last tick, as open or closed time.
        let (tx, rx) = conn.udp_bytes();
        let delta = (tx + rx).saturating_sub(counted);
        counted = tx + rx;
        let gate = r.gate(r.clock.now());
        let window = match gate {
            Gate::Window { until } => Some(until),
            _ => None,
        };
        // An interval during which the WAN was open at either end counts as open time: the last
        // replies of a window arrive just after it closed.
        let open = !matches!(gate, Gate::Closed { .. });
        let counted_open = open || was_open;
        was_open = open;
        r.stat(|s| {
            if window.is_some() && window != window_seen {
                s.wan_bytes_this_window = 0;
            }
            if counted_open {
                s.wan_bytes_open += delta;
            } else {
                s.wan_bytes_closed += delta;
            }
            if window.is_some() {
                s.wan_bytes_this_window += delta;
            }
            s.wan_bits_per_sec =
                (s.wan_bits_per_sec as f64 * 0.7 + (delta * 8) as f64 * 0.3) as u64;
        });
        if window.is_some() {
            window_seen = window;
        }
    }
}

async fn fetch_task(r: Arc<Relay>, shutdown: CancellationToken) {
    let mut window_seen: Option<i64> = None;
    // Versions that failed (the controller lacks chunks, a full disk), and when to try again.
    let mut retry_at: HashMap<Key, i64> = HashMap::new();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if r.dirty.load(Ordering::SeqCst) {
            let rr = r.clone();
            let _ = tokio::task::spawn_blocking(move || rr.recheck()).await;
        }
        let now = r.clock.now();
        let plan = r.plan();
        let gate = cache::gate(cache::schedule(&plan).as_ref(), &plan, now);
        match gate {
            Gate::Window { until } if window_seen != Some(until) => {
                tracing::info!(until, "night window open");
                window_seen = Some(until);
                let rr = r.clone();
                let _ = tokio::task::spawn_blocking(move || rr.wake_agents()).await;
            }
            Gate::Window { .. } => {}
            _ => {
                if window_seen.take().is_some() {
                    tracing::info!("night window closed");
                }
            }
        }
        let job = plan.entries.iter().find_map(|e| {
            if r.complete(&e.master) || retry_at.get(&key(&e.master)).is_some_and(|&t| now < t) {
                return None;
            }
            cache::may_fetch_until(gate, e, now).map(|until| (e.clone(), until))
        });
        let connected = r.link.borrow().clone();
        match (job, connected) {
            (Some((entry, until)), Some(conn)) => {
                let k = key(&entry.master);
                match fetch_one(&r, &conn, &entry.master, until, &shutdown).await {
                    Ok(()) => {
                        retry_at.remove(&k);
                    }
                    Err(Retry::Transport(e)) => {
                        tracing::warn!(error = %e, "transfer interrupted; resuming when the controller answers");
                        let mut link = r.link.subscribe();
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = link.changed() => {}
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                    }
                    Err(Retry::Later(e)) => {
                        r.error(e);
                        retry_at.insert(k, r.clock.now() + 600);
                    }
                }
            }
            (job, _) => {
                let state = match (&job, gate) {
                    (Some(_), _) => "waiting for the controller".to_owned(),
                    (None, Gate::Closed { next: Some(t) }) => {
                        format!("waiting for the window at {}", fmt_time(t))
                    }
                    (None, Gate::Closed { next: None }) => "no night window in the plan".to_owned(),
                    (None, _) => match retry_at.values().copied().filter(|&t| t > now).min() {
                        // Something failed (a full disk, the controller lacking chunks): say so.
                        Some(t) => format!(
                            "retrying at {} after an error (see last_error)",
                            fmt_time(t)
                        ),
                        None => "idle: the cache holds everything planned".to_owned(),
                    },
                };
                r.stat(|s| s.state = state);
                let next_event = match gate {
                    Gate::Closed { next: Some(t) } => Some(t),
                    Gate::Window { until } => Some(until),
                    _ => None,
                };
                let next_override_end = plan
                    .entries
                    .iter()
                    .filter_map(|e| e.override_until.filter(|&u| u > now))
                    .min();
                let next_retry = retry_at.values().copied().filter(|&t| t > now).min();
                let wait = [next_event, next_override_end, next_retry]
                    .into_iter()
                    .flatten()
                    .map(|t| r.clock.real_until(t))
                    .min()
                    .unwrap_or(Duration::from_secs(30))
                    .clamp(Duration::from_millis(20), Duration::from_secs(30));
                let mut link = r.link.subscribe();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = r.wake.notified() => {}
                    _ = link.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

enum Retry {
    /// The link failed: wait for it to come back, then resume.
    Transport(String),
    /// Something only time or a human fixes: try again later, and say so.
    Later(String),
}

fn fmt_time(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// Fetches what `master` lacks, until `until` (the window's or the override's end).
async fn fetch_one(
    r: &Arc<Relay>,
    conn: &Connection,
    master: &MasterRef,
    until: i64,
    shutdown: &CancellationToken,
) -> Result<(), Retry> {
    let known = r
        .known
        .read()
        .ok()
        .and_then(|k| k.get(&key(master)).map(|k| k.manifest.clone()));
    let manifest = match known {
        Some(m) => m,
        None => {
            let bytes = conn
                .manifest(master)
                .await
                .map_err(|e| Retry::Transport(e.to_string()))?;
            let m = VerifiedManifest::open_with(bytes, &r.accepted_keys()).map_err(|e| {
                Retry::Later(format!(
                    "the controller sent a manifest for {} {} that does not verify: {e}",
                    master.name, master.version
                ))
            })?;
            let rr = r.clone();
            tokio::task::spawn_blocking(move || rr.keep_manifest(m))
                .await
                .map_err(|e| Retry::Later(e.to_string()))?
                .map_err(|e| Retry::Later(format!("cannot keep the manifest: {e}")))?
        }
    };
    let missing = r
        .known
        .read()
        .ok()
        .and_then(|k| k.get(&key(master)).map(|k| k.missing_bytes))
        .unwrap_or(0);
    {
        let rr = r.clone();
        let _ = tokio::task::spawn_blocking(move || rr.evict(missing)).await;
    }
    let stop = shutdown.child_token();
    let timer = {
        let (stop, wait) = (stop.clone(), r.clock.real_until(until));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            stop.cancel();
        })
    };
    tracing::info!(master = %master.name, version = %master.version, missing_bytes = missing, until = %fmt_time(until), "fetching");
    r.stat(|s| s.state = format!("fetching {} {}", master.name, master.version));
    let before = std::sync::atomic::AtomicU64::new(0);
    let progress = |p: exchange::Progress| {
        let delta = p.bytes - before.swap(p.bytes, Ordering::Relaxed);
        r.stat(|s| {
            s.fetched_bytes += delta;
            s.disk_bytes += delta;
        });
    };
    let opts = FetchOptions {
        stop,
        ..FetchOptions::default()
    };
    r.transferring.store(true, Ordering::SeqCst);
    let result = exchange::fetch_missing(
        conn,
        r.store.clone(),
        &manifest,
        opts,
        Some(r.rate.clone()),
        &progress,
    )
    .await;
    r.transferring.store(false, Ordering::SeqCst);
    timer.abort();
    {
        let rr = r.clone();
        let _ = tokio::task::spawn_blocking(move || rr.recheck()).await;
    }
    match result {
        Ok(report) => {
            r.stat(|s| {
                s.fetched_chunks += report.fetched;
                s.disk_full = false;
            });
            if !report.lacking.is_empty() {
                return Err(Retry::Later(format!(
                    "the controller lacks {} chunk(s) of {} {}: check its store (`nightcast-image scrub`)",
                    report.lacking.len(),
                    master.name,
                    master.version
                )));
            }
            if report.stopped {
                tracing::info!(master = %master.name, version = %master.version, fetched = report.fetched, "paused: the window closed (or stopping); resuming at the next one");
            } else {
                tracing::info!(master = %master.name, version = %master.version, fetched = report.fetched, bytes = report.fetched_bytes, already_had = report.already_had, "complete");
                let rr = r.clone();
                let _ = tokio::task::spawn_blocking(move || rr.evict(0)).await;
                r.report_now.notify_one();
            }
            Ok(())
        }
        Err(exchange::ExchangeError::Store(e)) if is_disk_full(&e) => {
            r.stat(|s| s.disk_full = true);
            Err(Retry::Later(format!(
                "DISK FULL while fetching {} {}: fetching stopped, serving goes on: {e}",
                master.name, master.version
            )))
        }
        Err(exchange::ExchangeError::Transport(e)) => Err(Retry::Transport(e)),
        Err(e) => Err(Retry::Later(format!(
            "fetching {} {} failed: {e}",
            master.name, master.version
        ))),
    }
}

fn is_disk_full(e: &StoreError) -> bool {
    match e {
        StoreError::Io { source, .. } => source.raw_os_error() == Some(28),
        _ => false,
    }
}

async fn scrub_task(r: Arc<Relay>, shutdown: CancellationToken) {
    let rate = r.cfg.scrub.mib_per_sec as f64 * (1 << 20) as f64;
    if rate <= 0.0 {
        return;
    }
    loop {
        let ids = {
            let rr = r.clone();
            match tokio::task::spawn_blocking(move || rr.store.ids()).await {
                Ok(Ok(ids)) => ids,
                _ => Vec::new(),
            }
        };
        let (mut checked, mut bad) = (0u64, 0u64);
        for batch in ids.chunks(32) {
            let rr = r.clone();
            let batch = batch.to_vec();
            let read = tokio::task::spawn_blocking(move || {
                let (mut bytes, mut bad) = (0u64, 0u64);
                for id in batch {
                    match rr.store.get(&id) {
                        Ok(c) => bytes += c.stored_len() as u64,
                        Err(StoreError::Invalid { reason, .. }) => {
                            rr.drop_corrupt(&id, &reason.to_string());
                            bad += 1;
                        }
                        Err(_) => {}
                    }
                }
                (bytes, bad)
            })
            .await
            .unwrap_or((0, 0));
            checked += 32;
            bad += read.1;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs_f64(read.0 as f64 / rate)) => {}
            }
        }
        tracing::info!(
            checked = checked.min(ids.len() as u64),
            corrupt = bad,
            "scrub pass done"
        );
        let pause = Duration::from_secs_f64(r.cfg.scrub.every_hours * 3600.0)
            .max(Duration::from_millis(100));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn status_task(r: Arc<Relay>, shutdown: CancellationToken) {
    let grace = r.cfg.wake_on_lan.grace_minutes as i64 * 60;
    loop {
        let now = r.clock.now();
        let silent: Vec<String> = r
            .agents
            .lock()
            .map(|agents| {
                agents
                    .iter()
                    .filter(|(_, a)| {
                        a.woken_at
                            .is_some_and(|w| now >= w + grace && a.last_seen < w)
                    })
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        let before = r
            .stats
            .lock()
            .map(|s| s.agents_not_answering.clone())
            .unwrap_or_default();
        if silent != before {
            if !silent.is_empty() {
                tracing::warn!(nodes = %silent.join(","), "woken NUCs did not answer");
            }
            r.stat(|s| s.agents_not_answering = silent);
        }
        r.write_status();
        r.write_agents();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The cache as the LAN sees it: reading a chunk marks it used; a corrupt one is dropped (never
/// served); a missing one is fetched from the controller at once if the WAN is open, once
/// however many NUCs ask for it at the same time.
struct LanStore {
    relay: Arc<Relay>,
    /// The on-demand fetches under way: who asks for one of these waits for its result.
    fetching: Mutex<HashMap<ChunkId, Arc<Flight>>>,
}

/// One on-demand fetch and its result (`Some(None)`: it failed).
#[derive(Default)]
struct Flight {
    result: Mutex<Option<Option<VerifiedChunk>>>,
    done: std::sync::Condvar,
}

impl LanStore {
    fn on_demand(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let (flight, leader) = {
            let mut fetching = self.fetching.lock().map_err(|_| StoreError::Missing(*id))?;
            match fetching.get(id) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight::default());
                    fetching.insert(*id, f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            let mut result = flight.result.lock().map_err(|_| StoreError::Missing(*id))?;
            while result.is_none() {
                result = flight
                    .done
                    .wait(result)
                    .map_err(|_| StoreError::Missing(*id))?;
            }
            return result.clone().flatten().ok_or(StoreError::Missing(*id));
        }
        let got = self.fetch_once(id);
        if let Ok(mut result) = flight.result.lock() {
            *result = Some(got.as_ref().ok().cloned());
        }
        flight.done.notify_all();
        if let Ok(mut fetching) = self.fetching.lock() {
            fetching.remove(id);
        }
        got
    }

    fn fetch_once(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let r = &self.relay;
        let now = r.clock.now();
        let open = !matches!(r.gate(now), Gate::Closed { .. });
        // During a transfer the chunk is on its way already: fetching it here too would cross the
        // WAN twice. The agent is told "not yet" and asks again.
        let busy = r.transferring.load(Ordering::SeqCst);
        let conn = r.link.borrow().clone();
        let (true, false, Some(conn)) = (open, busy, conn) else {
            return Err(StoreError::Missing(*id));
        };
        let mut got: Option<VerifiedChunk> = None;
        let fetched = r.runtime.block_on(async {
            let mut ticket = r.rate.acquire(64 << 10).await;
            conn.get_chunks(&[*id], |received, len| {
                ticket.arrived(len as u64);
                if let exchange::Received::Chunk(c) = received {
                    got = Some(c);
                }
                Ok(())
            })
            .await
        });
        match (fetched, got) {
            (Ok(()), Some(chunk)) => {
                // Serving does not depend on caching: a full disk still passes the chunk on.
                if let Err(e) = r.store.put(&chunk) {
                    tracing::warn!(chunk = %id.short(), error = %e, "cannot cache a chunk fetched on demand");
                    if is_disk_full(&e) {
                        r.stat(|s| s.disk_full = true);
                    }
                }
                r.stat(|s| {
                    s.on_demand_chunks += 1;
                    s.fetched_chunks += 1;
                    s.fetched_bytes += chunk.stored_len() as u64;
                });
                r.dirty.store(true, Ordering::SeqCst);
                Ok(chunk)
            }
            _ => Err(StoreError::Missing(*id)),
        }
    }
}

impl ChunkStore for LanStore {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.relay.store.has(id)
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let r = &self.relay;
        let chunk = match r.store.get(id) {
            Ok(c) => Ok(c),
            Err(StoreError::Invalid { reason, .. }) => {
                r.drop_corrupt(id, &reason.to_string());
                self.on_demand(id)
            }
            Err(StoreError::Missing(_)) => self.on_demand(id),
            Err(e) => Err(e),
        }?;
        r.touch(id);
        r.stat(|s| {
            s.served_chunks += 1;
            s.served_bytes += chunk.stored_len() as u64;
        });
        Ok(chunk)
    }

    fn put(&self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        self.relay.store.put(chunk)
    }

    fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.relay.store.remove(id)
    }

    fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        self.relay.store.ids()
    }

    fn size(&self) -> Result<StoreSize, StoreError> {
        self.relay.store.size()
    }
}

/// What the LAN may read: the master versions in the site's plan, to the site's own nodes.
struct LanCatalog(Arc<Relay>);

impl Catalog for LanCatalog {
    fn manifest(&self, master: &MasterRef) -> Option<Vec<u8>> {
        self.0
            .known
            .read()
            .ok()?
            .get(&key(master))
            .map(|k| k.manifest.bytes().to_vec())
    }

    fn allowed(&self, peer: &Identity) -> Vec<MasterRef> {
        if peer.site != self.0.me.site {
            return Vec::new();
        }
        self.0
            .plan()
            .entries
            .into_iter()
            .map(|e| e.master)
            .collect()
    }

    fn plan(&self, peer: &Identity) -> SitePlan {
        if peer.site != self.0.me.site {
            return SitePlan::default();
        }
        self.0.plan()
    }

    fn expected(&self, _id: &ChunkId) -> Option<i64> {
        let now = self.0.clock.now();
        match self.0.gate(now) {
            Gate::Closed { next } => next,
            _ => Some(now),
        }
    }
}
