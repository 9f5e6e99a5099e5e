//! `nightcast-agent run`: the NUC's service.
//!
//! One loop, ticking at least once a second (and at every session boundary), gathers what the
//! workstation's decisions need and carries them out; one background job at a time prepares the
//! next master:
//! - **enrolment** (once, `enrol`): the relay from the config or from discovery, the CA pinned from
//!   the config, the token or the discovery answer; a token, or else the relay vouches.
//! - **plan** (every `poll_secs`): from the relay; kept in `DATA/plan.json` so a relay that is down
//!   changes nothing: sessions and resets go on with `current`. With it, the CA bridge and the
//!   manifest-signing keys; the certificate is renewed when due.
//! - **sessions** (`workstation`, pure): the VM runs only inside a session of this NUC's room, on a
//!   fresh overlay over `current`; session end, guest power-off, VM failure and the end of the day
//!   reset it; a new master comes in only between sessions; a failure right after a swap rolls it
//!   back.
//! - **preparation** (`prepare`): the first upcoming master that is not `current` gets into `next`:
//!   the manifest verified with the accepted keys (a forged one is refused and reported), only the
//!   chunks the NUC's images lack fetched into `DATA/store`, `next` assembled seeded from them
//!   (every chunk hashed) and marked ready.
//! - **reports** (every `poll_secs`): to the relay, which passes them on to the controller.
//! - **peers** (`peers`): the other agents of the site are served the chunks this NUC holds
//!   within an upload cap (not during a session unless allowed: the site's settings from its plan,
//!   else the NUC's own, applied at every plan), and a preparation fetches from them what they
//!   hold, its own stripe from the relay.
//!
//! Everything it learns or does is in `DATA/status.json`, rewritten when it changes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use image_tools::clock::Clock;
use image_tools::exchange::{self, Connection};
use image_tools::store::{open_disk_store, DiskStore, Format};
use image_tools::trust::keyring::KeyRing;
use image_tools::trust::{self, Credentials, Expect, Identity, Revoked};
use image_tools::wire::{Hello, MasterRef, Role, SessionEntry, SitePlan, Status};
use image_tools::NodeId;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::enrol::{enrol_until_done, find_relay};
use image_tools::report::{AgentReport, BadPeer, Failed, Report};

use crate::hypervisor::{host_facts, Fake, Hypervisor, Qemu, QemuConfig};
use crate::kiosk::{self, x11::Kiosk};
use crate::peers::settings::{Settings as PeerSettings, UploadCap};
use crate::peers::{self, SharedOffer};
use crate::prepare::{Job, JobNews};
use crate::profile_source::Catalogued;
use crate::profile_source::Choices;
use crate::slots::Slots;
use crate::station::{Machines, News, Station, Tick};
use crate::verdicts::manifest_hash;
use crate::workstation;

/// What `DATA/status.json` says.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentStatus {
    pub now: i64,
    pub node: String,
    pub site: String,
    /// "room/seat", or "" for a spare.
    pub seat: String,
    pub state: String,
    pub relay: Option<String>,
    pub connected: bool,
    pub vm: String,
    /// The session the VM runs for: "master version start-end".
    pub session: Option<String>,
    /// What the station did and saw: slots, resets, swaps, rollbacks, the boot's health.
    #[serde(flatten)]
    pub station: News,
    /// The master on trial (swapped in, its guest not yet seen to boot).
    pub trial: Option<String>,
    /// Versions that did not come up on this NUC: "name version: why (Unix time)".
    pub failed: Vec<String>,
    pub fetched_chunks: u64,
    pub fetched_bytes: u64,
    /// Chunks taken from the running image instead of the LAN, in the last preparation.
    pub reused_chunks: u64,
    pub refused_manifests: u64,
    /// Machine profiles from the relay whose signature did not verify (altered or forged).
    pub refused_profiles: u64,
    /// Of `fetched_chunks` and `fetched_bytes`, what came from peers (the rest from the relay).
    pub peer_chunks: u64,
    pub peer_bytes: u64,
    /// Where this NUC serves its peers; none: it does not.
    pub peer_listen: Option<String>,
    /// Whether it serves them now (not during a session, unless allowed).
    pub peer_serving: bool,
    /// The upload cap to peers in force, Mbit/s (0: uncapped): the site's, else the NUC's own.
    pub peer_upload_mbit: u64,
    /// Whether it serves them while a session runs (the site's setting, else the NUC's own).
    pub peer_share_in_session: bool,
    /// Peers dropped for sending corrupt chunks: "node (master version)".
    pub bad_peers: Vec<String>,
    pub last_error: Option<String>,
    pub free_disk_bytes: u64,
}

/// Peers dropped for lying that a report and `status.json` name at most (the latest).
const MAX_BAD_PEERS: usize = 16;

/// The longest a plan request and report may take before the relay counts as away.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer settings of the NUC's own configuration.
fn own_peer_settings(cfg: &Config) -> PeerSettings {
    PeerSettings {
        upload_mbit: cfg.peer_upload_mbit,
        share_in_session: cfg.peer_share_in_session,
    }
}

pub(crate) fn label(m: &MasterRef) -> String {
    format!("{} {}", m.name, m.version)
}

/// Runs the agent until `shutdown`.
pub async fn run(cfg: Config, clock: Clock, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data)
        .with_context(|| format!("cannot create {}", cfg.data.display()))?;
    let node = match &cfg.node_id {
        Some(id) => NodeId::new(id)?,
        None => crate::identity::hardware_id(&cfg.identity_root)?.id,
    };
    let (creds, keys) = match trust::load_enrolment(&cfg.data) {
        Ok(e) => e,
        Err(_) => {
            enrol_until_done(&cfg, &node, clock, &shutdown).await?;
            trust::load_enrolment(&cfg.data)?
        }
    };
    let me = creds
        .identity_as(Role::Agent)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.data.display()))?;
    tracing::info!(identity = %me, "agent started");
    let (slots, recovery) = Slots::open(&cfg.data, clock.now().max(0) as u64)?;
    if !recovery.damaged.is_empty() {
        tracing::error!(damaged = ?recovery.damaged, "slot files are damaged");
    }
    // A new fetch cache is a file store; one converted to packs (`nightcast-image convert`) stays so.
    let store: Arc<dyn DiskStore> =
        Arc::from(open_disk_store(&cfg.data.join("store"), Format::Files)?);
    let plan: SitePlan = std::fs::read(cfg.data.join("plan.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let revoked = Revoked::default();
    revoked.replace(revoked_serials(&plan));
    let offer = SharedOffer::default();
    // The chunks already in the fetch cache (an interrupted fetch's): offered from memory.
    match image_tools::ChunkStore::ids(store.as_ref()) {
        Ok(ids) => {
            if let Ok(mut o) = offer.write() {
                o.committed(ids);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the fetch cache: its chunks are not offered to peers")
        }
    }
    let peer_settings = PeerSettings::in_force(&plan, own_peer_settings(&cfg));
    let upload_cap = Arc::new(UploadCap::new(peer_settings.upload_mbit));
    let mut peer_error = None;
    let peer_server = match cfg.peer_sharing {
        false => None,
        true => match peers::start_server(
            cfg.peer_listen,
            &creds,
            &me,
            revoked.clone(),
            store.clone(),
            offer.clone(),
            upload_cap.clone(),
            clock,
            shutdown.child_token(),
        ) {
            Ok((addr, endpoint)) => {
                tracing::info!(%addr, "serving the site's agents (peer sharing)");
                Some((addr, endpoint))
            }
            Err(e) => {
                let msg = format!(
                    "cannot serve peers on {} (peer_listen): {e:#}; this NUC fetches from them but serves none",
                    cfg.peer_listen
                );
                tracing::error!("{msg}");
                peer_error = Some(msg);
                None
            }
        },
    };
    // Held while the agent runs: the store tools keep off what it writes.
    let _writing = store.lock(false)?;
    let overlay = cfg.data.join("vm").join("overlay.qcow2");
    std::fs::create_dir_all(cfg.data.join("vm"))?;
    // The VM is built from machine profiles (also the test hypervisor's, which runs none but
    // reports the profile it would use), unless the config gives a raw command line.
    let (catalogued, damaged) = Catalogued::load(&cfg.data, &keys.accepted(clock.now()));
    for e in damaged {
        tracing::error!("{e}");
    }
    let machines = match cfg.hypervisor.as_str() == "fake" || cfg.qemu_command.is_empty() {
        true => {
            let host = host_facts(cfg.network()?);
            tracing::info!(
                kvm = host.kvm,
                cpus = host.cpus,
                memory_mib = host.memory_mib,
                "the VM is built from machine profiles"
            );
            Some(Machines {
                site: me.site.to_string(),
                node: me.node.to_string(),
                host,
                profiles: Choices {
                    default: cfg.profile.clone(),
                    own: cfg.profiles.clone(),
                    catalogue: catalogued.profiles(),
                    // A NUC with a screen shows every master's VM on it, as a kiosk.
                    on_screen: cfg.screen.is_some(),
                },
            })
        }
        false => None,
    };
    let hv: Box<dyn Hypervisor + Send> = match cfg.hypervisor.as_str() {
        "fake" => Box::new(Fake::new(me.node.as_str(), &overlay)),
        _ => {
            let mut q = QemuConfig::new(me.node.as_str(), &overlay);
            q.x_display = cfg.screen.clone();
            q.resume = cfg.resume_saved_state;
            if machines.is_none() {
                tracing::info!("the VM runs the raw qemu_command (no health check)");
                q.command = cfg.qemu_command.clone();
            }
            Box::new(Qemu::new(q)?)
        }
    };
    let end_of_day = cfg.end_of_day_minutes()?;
    let slots = Arc::new(Mutex::new(slots));
    let station = Station::new(cfg.data.clone(), hv, slots.clone(), end_of_day, machines);
    let mut agent = Agent {
        status: AgentStatus {
            node: me.node.to_string(),
            site: me.site.to_string(),
            peer_listen: peer_server.as_ref().map(|(a, _)| a.to_string()),
            last_error: peer_error,
            peer_upload_mbit: peer_settings.upload_mbit,
            peer_share_in_session: peer_settings.share_in_session,
            ..AgentStatus::default()
        },
        peer_server,
        peer_settings,
        upload_cap,
        revoked,
        offer,
        indexed: None,
        bad_peers: Vec::new(),
        job_error: false,
        waiting: None,
        mac: first_mac(&cfg.identity_root),
        cfg,
        clock,
        me,
        creds,
        keys,
        slots,
        store,
        station,
        plan,
        conn: None,
        relay: None,
        job: None,
        shared: Arc::new(Mutex::new(JobNews::default())),
        last_poll: None,
        started_at: clock.now(),
        powered_off: false,
        written_status: Vec::new(),
        kiosk: None,
        kiosk_said: None,
        catalogued,
    };
    // The plan kept on disk may hold profiles newer than `profiles.json` (a crash between the
    // two writes).
    let kept = agent.plan.profiles.clone();
    agent.learn_profiles(&kept);
    agent.station.set_usb_policy(agent.plan.usb);
    agent.refresh_slots();
    agent.main_loop(&shutdown).await;
    tokio::task::block_in_place(|| agent.station.shut_down("the agent is stopping"));
    agent.write_status();
    Ok(())
}

struct Agent {
    cfg: Config,
    clock: Clock,
    me: Identity,
    creds: Credentials,
    /// The manifest-signing keys accepted (from enrolment, then every plan).
    keys: KeyRing,
    slots: Arc<Mutex<Slots>>,
    store: Arc<dyn DiskStore>,
    /// The seat's VM, its sessions, resets, swaps, trials and rollbacks.
    station: Station,
    plan: SitePlan,
    conn: Option<(quinn::Endpoint, Connection)>,
    relay: Option<SocketAddr>,
    /// The preparation under way: which version, and its task.
    job: Option<(MasterRef, tokio::task::JoinHandle<()>)>,
    shared: Arc<Mutex<JobNews>>,
    last_poll: Option<tokio::time::Instant>,
    mac: Option<String>,
    status: AgentStatus,
    /// `status.last_error` came from preparing a master (cleared once one is ready).
    job_error: bool,
    /// The last preparation waited for the relay: for which version, and what it said (when
    /// the relay expects it). Shown after the state until that version is ready or no longer
    /// needed, so that a wait between two tries is never silent.
    waiting: Option<(MasterRef, String)>,
    /// When the agent started (the NUC was powered on, or woken).
    started_at: i64,
    powered_off: bool,
    /// What `status.json` last got, without its time.
    written_status: Vec<u8>,
    /// The NUC's screen (`screen` in the config), once its X server answered.
    kiosk: Option<Kiosk>,
    /// The last error about the screen (said once, not at every tick).
    kiosk_said: Option<String>,
    /// Where this NUC serves its peers, and the endpoint (its certificate swapped when renewed).
    peer_server: Option<(SocketAddr, quinn::Endpoint)>,
    /// The peer settings in force (the site's, else the NUC's own).
    peer_settings: PeerSettings,
    /// The upload cap the peer server pays into, changed with `peer_settings`.
    upload_cap: Arc<UploadCap>,
    /// The site's revoked agent certificates (from the plan): refused as peers, both ways.
    revoked: Revoked,
    /// What the peer server offers.
    offer: SharedOffer,
    /// The slot table the offer's images were indexed for.
    indexed: Option<crate::slots::Table>,
    /// Peers dropped for sending corrupt chunks, reported.
    bad_peers: Vec<BadPeer>,
    /// The catalogue's machine profiles this NUC verified.
    catalogued: Catalogued,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Agent({})", self.me)
    }
}

pub(crate) fn first_mac(root: &Path) -> Option<String> {
    let macs = crate::identity::interface_macs(root).ok()?;
    macs.iter()
        .find(|m| m.physical)
        .or_else(|| macs.first())
        .map(|m| m.mac.to_string())
}

impl Agent {
    async fn main_loop(&mut self, shutdown: &CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let poll_due = self
                .last_poll
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(self.cfg.poll_secs));
            if poll_due {
                self.last_poll = Some(tokio::time::Instant::now());
                self.poll().await;
            }
            self.take_job_news();
            tokio::task::block_in_place(|| self.manage_sessions());
            self.prepare_next();
            self.maybe_power_off();
            self.write_status();
            let wait = self.next_boundary_wait();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// At most a second, less if a session starts or ends sooner, and a tenth of one while the
    /// station watches a guest boot or power off ([`Station::watching`]).
    fn next_boundary_wait(&self) -> Duration {
        let longest = if self.station.watching() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        let now = self.clock.now();
        let next = self
            .my_sessions()
            .iter()
            .flat_map(|s| [s.start, s.end])
            .filter(|&t| t > now)
            .min();
        next.map(|t| self.clock.real_until(t))
            .unwrap_or(longest)
            .clamp(Duration::from_millis(10), longest)
    }

    fn error(&mut self, what: String) {
        tracing::error!("{what}");
        self.status.last_error = Some(what);
        self.job_error = false;
    }

    /// This NUC's seat, from the plan's bindings.
    fn seat(&self) -> Option<(String, String)> {
        self.plan
            .seats
            .iter()
            .find(|b| b.node == self.me.node.as_str())
            .map(|b| (b.room.clone(), b.seat.clone()))
    }

    /// The sessions of this NUC's room not yet ended, in start order.
    fn my_sessions(&self) -> Vec<SessionEntry> {
        let Some((room, _)) = self.seat() else {
            return Vec::new();
        };
        let now = self.clock.now();
        self.plan
            .rooms
            .iter()
            .find(|r| r.room == room)
            .map(|r| r.sessions.iter().filter(|s| s.end > now).cloned().collect())
            .unwrap_or_default()
    }

    async fn connect(&mut self) -> anyhow::Result<Connection> {
        if let Some((_, c)) = &self.conn {
            return Ok(c.clone());
        }
        let relay = match self.cfg.relay.or(self.relay) {
            Some(r) => r,
            None => {
                let (addr, _) =
                    find_relay(&self.cfg, Some(self.me.site.as_str()), Some(&self.creds)).await?;
                addr
            }
        };
        let endpoint = exchange::client_endpoint()?;
        let tls = self
            .creds
            .client_config(Expect::RelayOf(self.me.site.clone()), self.clock)?;
        let conn = Connection::connect(&endpoint, relay, tls).await?;
        let mut hello = Hello::new(Role::Agent, &self.me.node);
        if let Some((addr, _)) = &self.peer_server {
            hello = hello.with_peer_port(addr.port());
        }
        conn.hello(hello).await?;
        tracing::info!(%relay, peer = conn.peer(), "connected to the relay");
        self.relay = Some(relay);
        self.status.relay = Some(relay.to_string());
        self.conn = Some((endpoint, conn.clone()));
        Ok(conn)
    }

    /// Plan from the relay, report to it. A relay that is away changes nothing but the report.
    async fn poll(&mut self) {
        let result = async {
            let conn = self.connect().await?;
            let plan = conn.plan().await?;
            self.learn_bridge(&plan);
            self.learn_keys(&plan);
            self.learn_profiles(&plan.profiles);
            self.station.set_usb_policy(plan.usb);
            self.apply_peer_settings(&plan);
            self.revoked.replace(revoked_serials(&plan));
            if plan != self.plan {
                if let Ok(bytes) = serde_json::to_vec_pretty(&plan) {
                    image_tools::durable::write_file(
                        &self.cfg.data.join("plan.json"),
                        &bytes,
                        0o644,
                    )?;
                }
                self.plan = plan;
            }
            let me = self.me.node.to_string();
            tokio::task::block_in_place(|| {
                self.station.obey(self.clock.now(), &self.plan.orders, &me)
            });
            conn.report(self.report()).await?;
            self.check_republished(&conn).await;
            anyhow::Ok(conn)
        };
        // A dead relay must not hold the loop (sessions, resets) until QUIC gives up on it.
        let result = match tokio::time::timeout(POLL_TIMEOUT, result).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "the relay did not answer within {POLL_TIMEOUT:?}"
            )),
        };
        self.status.connected = result.is_ok();
        match result {
            Ok(conn) => {
                let moving = trust::bridge::moved_on(
                    &self.creds.ca,
                    &self.creds.bridge,
                    &self.plan.current_ca,
                );
                // A certificate issued before peer sharing is for clients only: a new one serves.
                let serves =
                    self.peer_server.is_none() || trust::certinfo::serves(&self.creds.certificate);
                if !serves {
                    tracing::warn!("this NUC's certificate cannot serve its peers (issued before peer sharing): renewing it");
                }
                if self.creds.renewal_due(self.clock.now()) || moving || !serves {
                    let renewed = tokio::time::timeout(POLL_TIMEOUT, self.renew(&conn)).await;
                    match renewed {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            self.error(format!("cannot renew this NUC's certificate: {e:#}"))
                        }
                        Err(_) => self.error(
                            "cannot renew this NUC's certificate: the relay did not answer".into(),
                        ),
                    }
                }
            }
            Err(e) => {
                if self.conn.take().is_some() || self.status.relay.is_none() {
                    tracing::warn!(error = %e, "relay unreachable: sessions and resets go on with the current master");
                }
                if self.cfg.relay.is_none() {
                    self.relay = None; // ask the VLAN again
                }
            }
        }
    }

    /// Takes what the plan says of a CA rotation: the bridge to the other CA, as far as our CA
    /// vouches for it (a relay cannot add a CA), kept on disk; the next connection uses it.
    fn learn_bridge(&mut self, plan: &SitePlan) {
        let bridge = trust::bridge::bridge(
            &self.creds.ca,
            &trust::bridge::offered_by(plan),
            self.clock.now(),
        );
        if bridge == self.creds.bridge {
            return;
        }
        tracing::info!(
            certificates = bridge.len(),
            "the CA bridge changed (a CA rotation)"
        );
        self.creds.bridge = bridge;
        if let Err(e) = self.creds.save(&self.cfg.data.join("tls")) {
            self.error(format!("cannot keep the CA bridge on disk: {e}"));
        }
    }

    /// Takes the plan's endorsed signing keys: only those a CA we trust endorsed (a relay cannot
    /// add one), kept on disk.
    fn learn_keys(&mut self, plan: &SitePlan) {
        let (changed, refused) = self.keys.learn(
            &plan.signing_keys,
            &self.creds.trusted_cas(),
            self.clock.now(),
        );
        for key in refused {
            tracing::error!(%key, "the plan names a signing key our CA did not endorse: ignored");
        }
        if changed {
            tracing::info!(
                keys = self.keys.accepted(self.clock.now()).len(),
                "manifest-signing keys updated"
            );
            if let Err(e) = self.keys.save(&self.cfg.data) {
                self.error(format!("cannot keep the signing keys on disk: {e}"));
            }
        }
    }

    /// Takes the plan's machine profiles: only those the controller signed (a relay cannot
    /// change one), only newer than those kept; kept on disk; used from the next VM start.
    fn learn_profiles(&mut self, offered: &[image_tools::wire::SignedProfile]) {
        let learnt = self
            .catalogued
            .learn(offered, &self.keys.accepted(self.clock.now()));
        for refused in learnt.refused {
            self.error(refused);
        }
        self.status.refused_profiles = self.catalogued.refused;
        if learnt.changed.is_empty() {
            return;
        }
        for (master, revision, profile) in &learnt.changed {
            match profile {
                Some(p) => {
                    tracing::info!(%master, revision, profile = %p, "the catalogue's machine profile, verified: used from the next VM start")
                }
                None => {
                    tracing::info!(%master, revision, "the catalogue no longer gives a machine profile: this NUC's own from the next VM start")
                }
            }
        }
        self.station
            .set_catalogue_profiles(self.catalogued.profiles());
        if let Err(e) = self.catalogued.save(&self.cfg.data) {
            self.error(format!("cannot keep the machine profiles on disk: {e}"));
        }
    }

    /// Renews this NUC's certificate through its relay (a third of its life is left): a new key,
    /// the reply checked against the CA it has, saved; the next connection uses it.
    async fn renew(&mut self, conn: &Connection) -> anyhow::Result<()> {
        let mac = self.mac.clone().unwrap_or_default();
        let (creds, signing) =
            exchange::renew(conn, &self.creds, &self.keys, &mac, self.clock).await?;
        trust::save_enrolment(&self.cfg.data, &creds, &signing)?;
        self.keys.add(&signing);
        tracing::info!(
            not_after = creds.not_after(),
            ca = %image_tools::ids::hex(&trust::fingerprint(&creds.ca)),
            "renewed this NUC's certificate"
        );
        self.creds = creds;
        if let Some((_, endpoint)) = &self.peer_server {
            let tls = self.creds.server_config(
                trust::Admit::AgentsOf(self.me.site.clone()),
                self.revoked.clone(),
                self.clock,
            )?;
            exchange::set_server_tls(endpoint, tls)?;
        }
        Ok(())
    }

    fn report(&self) -> Status {
        let mut needs: Vec<MasterRef> = self.my_sessions().into_iter().map(|s| s.master).collect();
        needs.sort();
        needs.dedup();
        let s = &self.status;
        Status {
            node_id: self.me.node.clone(),
            software: env!("CARGO_PKG_VERSION").into(),
            holding: self.station.held().complete(),
            report: Report::Agent(AgentReport {
                state: s.state.clone(),
                seat: s.seat.clone(),
                needs,
                vm: s.vm.clone(),
                next: self.station.held().next.clone(),
                next_state: s.station.next_state.clone(),
                resets: s.station.resets,
                last_reset: s.station.last_reset,
                free_disk_bytes: s.free_disk_bytes,
                mac: self.mac.clone(),
                failed: self
                    .station
                    .verdicts()
                    .bad
                    .iter()
                    .map(|b| Failed {
                        master: b.master.clone(),
                        why: b.why.clone(),
                        at: b.when,
                    })
                    .collect(),
                last_error: s.last_error.clone(),
                bad_peers: self.bad_peers.clone(),
                orders_done: self.station.news.orders_done,
                profile: self.station.news.vm_profile.clone().map(Box::new),
            }),
        }
    }

    /// Copies the slot table into the status, when the preparation is not holding the slots.
    fn refresh_slots(&mut self) {
        self.station.refresh_slots();
        self.copy_station_news();
    }

    /// What the station did and saw, into the status.
    fn copy_station_news(&mut self) {
        for e in std::mem::take(&mut self.station.news.errors) {
            self.error(e);
        }
        let s = &mut self.status;
        s.station = self.station.news.clone();
        let v = self.station.verdicts();
        s.trial = v.trial.as_ref().map(|t| label(&t.master));
        s.failed = v
            .bad
            .iter()
            .map(|b| format!("{}: {} ({})", label(&b.master), b.why, b.when))
            .collect();
    }

    /// Asks the relay for the manifest of each bad version the sessions still need: one the DSI
    /// republished (another manifest) may be tried again.
    async fn check_republished(&mut self, conn: &Connection) {
        let bad = self.station.verdicts().bad_masters();
        let needed: Vec<MasterRef> = self
            .my_sessions()
            .into_iter()
            .map(|s| s.master)
            .filter(|m| bad.contains(m))
            .collect();
        for m in needed {
            if let Ok(bytes) = conn.manifest(&m).await {
                self.station.republished(&m, &manifest_hash(&bytes));
            }
        }
    }

    fn take_job_news(&mut self) {
        let finished = self.job.as_ref().is_some_and(|(_, h)| h.is_finished());
        if let Ok(mut n) = self.shared.lock() {
            self.status.fetched_chunks = n.fetched_chunks;
            self.status.fetched_bytes = n.fetched_bytes;
            self.status.reused_chunks = n.reused_chunks;
            self.status.refused_manifests = n.refused;
            self.status.peer_chunks = n.peer_chunks;
            self.status.peer_bytes = n.peer_bytes;
            for (node, master) in std::mem::take(&mut n.liars) {
                self.status
                    .bad_peers
                    .push(format!("{node} ({})", label(&master)));
                self.bad_peers.push(BadPeer {
                    node,
                    master,
                    at: self.clock.now(),
                });
            }
            // The latest few: a report stays small whatever a rogue peer keeps doing.
            let excess = self.bad_peers.len().saturating_sub(MAX_BAD_PEERS);
            self.bad_peers.drain(..excess);
            let excess = self.status.bad_peers.len().saturating_sub(MAX_BAD_PEERS);
            self.status.bad_peers.drain(..excess);
            if let Some(e) = n.error.take() {
                self.status.last_error = Some(e);
                self.job_error = true;
            }
            let succeeded = std::mem::take(&mut n.succeeded);
            if succeeded {
                self.waiting = None;
            }
            if succeeded && self.job_error {
                // The master is ready now: what went wrong getting it is over.
                self.status.last_error = None;
                self.job_error = false;
            }
            if let Some(state) = &n.state {
                if self.station.session().is_none() {
                    self.status.state = state.clone();
                }
                if let Some((target, _)) = &self.job {
                    self.waiting = state
                        .starts_with("waiting for the relay")
                        .then(|| (target.clone(), state.clone()));
                }
            }
            if finished {
                n.done = false;
                n.state = None;
            }
        }
        if finished {
            self.job = None;
            if let Ok(mut o) = self.offer.write() {
                o.fetching.clear();
            }
        }
        self.refresh_slots();
        self.refresh_offer();
        self.status.free_disk_bytes = free_disk(&self.cfg.data);
    }

    fn manage_sessions(&mut self) {
        let now = self.clock.now();
        let seat = self.seat();
        self.status.seat = seat
            .as_ref()
            .map(|(r, s)| format!("{r}/{s}"))
            .unwrap_or_default();
        let vm = self.station.hypervisor().status();
        self.status.vm = match vm {
            Ok(vm) => format!("{vm:?}"),
            Err(e) => format!("unknown: {e}"),
        };
        let sessions = self.my_sessions();
        self.station.tick(&Tick {
            now,
            local: self.local_minutes(now),
            sessions: &sessions,
            seat: seat.as_ref(),
        });
        self.copy_station_news();
        self.status.session = self
            .station
            .session()
            .map(|s| format!("{} {}-{}", label(&s.master), s.start, s.end));
        let held = self.station.held();
        let bad = |m: &MasterRef| self.station.verdicts().bad(m).is_some();
        self.status.state = match (&seat, self.station.session(), self.station.busy()) {
            (None, _, _) => "spare: waiting to be given a seat".into(),
            (_, Some(s), _) if held.current.as_ref() != Some(&s.master) && bad(&s.master) => {
                format!(
                    "in session ({}: {} did not come up on this NUC)",
                    self.status.station.current.clone().unwrap_or_default(),
                    label(&s.master)
                )
            }
            (_, Some(s), _) => format!("in session ({})", label(&s.master)),
            (_, None, Some(busy)) => busy.into(),
            (_, None, None) if self.job.is_some() => self.status.state.clone(),
            (_, None, None) => match sessions.first() {
                Some(s) if held.current.as_ref() == Some(&s.master) => {
                    format!("ready for the next session ({})", label(&s.master))
                }
                Some(s) if bad(&s.master) => format!(
                    "ready for the next session ({}: {} did not come up on this NUC)",
                    self.status.station.current.clone().unwrap_or_default(),
                    label(&s.master)
                ),
                Some(s) => format!("waiting for {}", label(&s.master)),
                None => "idle: no session planned".into(),
            },
        };
        // What the next version waits for, after the state (`nightcast fleet` shows it).
        if self
            .waiting
            .as_ref()
            .is_some_and(|(m, _)| !sessions.iter().any(|s| &s.master == m))
        {
            self.waiting = None;
        }
        if let Some((_, note)) = &self.waiting {
            if !self.status.state.starts_with("waiting for the relay") {
                self.status.state = format!("{}; next: {note}", self.status.state);
            }
        }
        self.update_screen(now, &sessions, seat);
    }

    /// The NUC's screen, if it has one: the guest during its session, else the status page. An X
    /// server that is not there yet (or went away) is tried again at the next tick.
    fn update_screen(
        &mut self,
        now: i64,
        sessions: &[SessionEntry],
        seat: Option<(String, String)>,
    ) {
        let Some(display) = self.cfg.screen.clone() else {
            return;
        };
        if let Some(why) = self.kiosk.as_ref().and_then(Kiosk::failed) {
            self.error(format!("lost the screen {display}: {why}"));
            self.kiosk = None;
        }
        if self.kiosk.is_none() {
            match Kiosk::start(&display) {
                Ok(k) => {
                    self.kiosk = Some(k);
                    self.kiosk_said = None;
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.kiosk_said.as_ref() != Some(&e) {
                        self.error(e.clone());
                        self.kiosk_said = Some(e);
                    }
                    return;
                }
            }
        }
        let tz = jiff::tz::TimeZone::get(&self.plan.tz).unwrap_or(jiff::tz::TimeZone::UTC);
        let local = |t: i64| {
            jiff::Timestamp::from_second(t)
                .map(|ts| tz.to_datetime(ts))
                .unwrap_or_default()
        };
        let in_session = self.station.session().is_some();
        let guest_running = in_session && self.status.vm == "Running";
        let ready = self.status.state.starts_with("ready")
            || workstation::night_work_done(sessions, self.station.held());
        let waiting_for =
            kiosk::waiting_for(in_session, self.station.busy(), ready, &self.status.state);
        let facts = kiosk::Facts {
            seat,
            node: self.me.node.to_string(),
            now: local(now),
            guest_running,
            next: sessions
                .iter()
                .find(|s| s.start > now)
                .map(|s| (local(s.start), label(&s.master))),
            waiting_for,
        };
        if let Some(k) = &mut self.kiosk {
            k.show(kiosk::screen(&facts));
        }
    }

    fn local_minutes(&self, now: i64) -> Option<(jiff::civil::Date, u32)> {
        let tz = jiff::tz::TimeZone::get(&self.plan.tz).ok()?;
        let dt = tz.to_datetime(jiff::Timestamp::from_second(now).ok()?);
        Some((dt.date(), dt.hour() as u32 * 60 + dt.minute() as u32))
    }

    /// Puts the site's peer settings from `plan` (else the NUC's own) in force: the upload cap
    /// at once, in-session sharing at the next offer refresh (within a tick).
    fn apply_peer_settings(&mut self, plan: &SitePlan) {
        let now = PeerSettings::in_force(plan, own_peer_settings(&self.cfg));
        if now == self.peer_settings {
            return;
        }
        self.upload_cap.set(now.upload_mbit);
        tracing::info!(
            upload_mbit = now.upload_mbit,
            share_in_session = now.share_in_session,
            from_site = plan.peer_upload_mbit.is_some() || plan.peer_share_in_session.is_some(),
            "peer settings changed"
        );
        self.peer_settings = now;
        self.status.peer_upload_mbit = now.upload_mbit;
        self.status.peer_share_in_session = now.share_in_session;
    }

    /// What the peer server offers: the versions of the complete slot images (indexed again when
    /// the slot table changed), and nothing while a session runs unless the site allows it.
    fn refresh_offer(&mut self) {
        if self.peer_server.is_none() {
            return;
        }
        let open = self.peer_settings.serving(self.station.session().is_some());
        self.status.peer_serving = open;
        let keys = self.keys.accepted(self.clock.now());
        let indexed = tokio::task::block_in_place(|| {
            let slots = self.slots.try_lock().ok()?;
            let table = slots.table().clone();
            if self.indexed.as_ref() == Some(&table) {
                return None;
            }
            let (held, places) = peers::index_slots(&slots, &keys);
            Some((table, held, places))
        });
        if let Ok(mut o) = self.offer.write() {
            o.open = open;
            if let Some((table, held, places)) = indexed {
                tracing::info!(
                    versions = held.len(),
                    chunks = places.len(),
                    "offered to peers"
                );
                o.held = held;
                o.places = places;
                self.indexed = Some(table);
            }
        }
    }

    /// Starts preparing the first upcoming master that is not `current`, if nothing is under way.
    fn prepare_next(&mut self) {
        if self.job.is_some() {
            return;
        }
        let bad = self.station.verdicts().bad_masters();
        let Some(target) = workstation::to_prepare(&self.my_sessions(), self.station.held(), &bad)
        else {
            return;
        };
        let Some((endpoint, conn)) = self.conn.clone() else {
            return;
        };
        let peer_fetch = match self.cfg.peer_sharing {
            false => None,
            true => match self.creds.client_config_refusing(
                Expect::AgentOf(self.me.site.clone()),
                self.revoked.clone(),
                self.clock,
            ) {
                Ok(tls) => Some(peers::fetch::PeerFetch {
                    me: self.me.node.clone(),
                    endpoint,
                    tls,
                    patience: Duration::from_secs(self.cfg.peer_patience_secs),
                    offer: self.offer.clone(),
                }),
                Err(e) => {
                    tracing::error!(error = %e, "no TLS for peers: fetching from the relay only");
                    None
                }
            },
        };
        let job = Job {
            peers: peer_fetch,
            offer: self.offer.clone(),
            target: target.clone(),
            conn,
            keys: self.keys.accepted(self.clock.now()),
            slots: self.slots.clone(),
            store: self.store.clone(),
            news: self.shared.clone(),
            threads: self.cfg.threads,
            now: self.clock.now().max(0) as u64,
            expected: crate::expect::expected(&self.plan, &target, self.clock.now()),
        };
        let handle = tokio::spawn(job.run());
        self.job = Some((target, handle));
    }

    /// Started in the night window (woken for the night's work), done, no session within the
    /// hour, and the site's choice says so: power off.
    fn maybe_power_off(&mut self) {
        if !self.cfg.power_off_after_night_work || self.powered_off || self.job.is_some() {
            return;
        }
        let now = self.clock.now();
        let windows: Vec<image_tools::windows::Window> = self
            .plan
            .windows
            .iter()
            .filter_map(|w| w.parse().ok())
            .collect();
        let Ok(schedule) = image_tools::windows::Schedule::new(&self.plan.tz, windows) else {
            return;
        };
        let in_window = |t: i64| {
            schedule
                .openings(t - 86_400, t + 86_400)
                .iter()
                .any(|&(a, b)| a <= t && t < b)
        };
        let sessions = self.my_sessions();
        let soon = sessions.iter().any(|s| s.start <= now + 3600);
        let done = workstation::night_work_done(&sessions, self.station.held());
        if !(in_window(self.started_at)
            && in_window(now)
            && done
            && !soon
            && self.station.session().is_none()
            && self.station.busy().is_none())
        {
            return;
        }
        self.powered_off = true;
        tracing::warn!(
            "night work done and no session within the hour: powering off (woken for it)"
        );
        self.status.state = "powering off: night work done".into();
        self.write_status();
        let cmd = &self.cfg.power_off_command;
        if let Err(e) = std::process::Command::new(&cmd[0]).args(&cmd[1..]).status() {
            self.error(format!("cannot power off with {cmd:?}: {e}"));
        }
    }

    /// Writes `DATA/status.json` (durably, through a temp file) when something in it changed
    /// apart from the time: not one fsync a second on a NUC's disk for nothing.
    fn write_status(&mut self) {
        self.status.now = 0;
        let Ok(unstamped) = serde_json::to_vec(&self.status) else {
            return;
        };
        self.status.now = self.clock.now();
        if unstamped == self.written_status {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec_pretty(&self.status) {
            let path = self.cfg.data.join("status.json");
            match image_tools::durable::write_file(&path, &bytes, 0o644) {
                Ok(()) => self.written_status = unstamped,
                Err(e) => tracing::warn!(error = %e, "cannot write {}", path.display()),
            }
        }
    }
}

/// The plan's revoked serials (hex), as bytes.
fn revoked_serials(plan: &SitePlan) -> Vec<Vec<u8>> {
    plan.revoked
        .iter()
        .filter_map(|h| image_tools::ids::unhex_vec(h))
        .collect()
}

fn free_disk(path: &Path) -> u64 {
    rustix::fs::statvfs(path)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(0)
}
