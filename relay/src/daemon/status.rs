//! The site's agents as they report, Wake-on-LAN, the relay's own report to the controller, and
//! `DATA/status.json`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use image_tools::report::{BadPeer, Missing, RelayReport, Report};
use image_tools::trust::Identity;
use image_tools::wire::{MasterRef, Order, OrderKind, Role, Status};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{write_quick, Relay};
use crate::wol::{self, Mac};

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
    pub(super) fn lacks_something(&self) -> bool {
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
    /// Where the link to the controller goes, or goes next: the configured address, or its host
    /// at the controller's far port (the site's link is far).
    pub controller_addr: String,
    /// That is the far port (`nightcast site set --link far`; the controller sends with BBR).
    pub far_link: bool,
    /// Attempts at the far port that failed; after each, the relay fetches through its
    /// configured address for a while (`relay::route::FAR_RETRY_SECS`).
    pub far_port_failures: u64,
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
    /// The site's other relays found on the LAN (`sibling_discovery`).
    pub siblings: Vec<String>,
    /// Of those, the one that crosses the WAN for this relay; none: this relay crosses it.
    pub upstream: Option<String>,
    /// Of `fetched_bytes`, what came from the site's other relays over the LAN.
    pub sibling_bytes: u64,
    /// Manifest bytes received (frame bodies), by whether a manifest came whole or as a delta to
    /// another version of its master the relay held (`GetManifestAgainst`).
    pub manifest_bytes_full: u64,
    pub manifest_bytes_delta: u64,
    /// The site's other relays set aside for sending corrupt chunks, of which version, when
    /// (`crate::siblings::set_aside`).
    pub bad_siblings: Vec<BadPeer>,
    /// Chunks asked for by agents and fetched at once (WAN open).
    pub on_demand_chunks: u64,
    pub served_chunks: u64,
    pub served_bytes: u64,
    pub corrupt_dropped: u64,
    /// Chunks the scrub re-read and checked, and those it found corrupt (and dropped).
    pub scrub_checked_chunks: u64,
    pub scrub_corrupt_chunks: u64,
    /// Full scrub passes finished.
    pub scrub_passes: u64,
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
    #[serde(flatten)]
    pub master: MasterRef,
    pub complete: bool,
    pub missing_bytes: u64,
}

impl Relay {
    pub(super) fn agent_reported(&self, peer: &Identity, status: Status) {
        // A sibling relay has no report to give here: only the site's agents count.
        if peer.site != self.me.site || peer.role != Role::Agent {
            return;
        }
        let report = match &status.report {
            Report::Agent(a) => Some(a),
            _ => None,
        };
        let now = self.clock.now();
        if let Ok(mut agents) = self.agents.lock() {
            let a = agents.entry(peer.node.to_string()).or_default();
            if let Some(mac) = report.and_then(|r| r.mac.clone()) {
                a.mac = Some(mac);
            }
            a.needs = report
                .map(|r| r.needs.iter().map(MasterRef::to_string).collect())
                .unwrap_or_default();
            a.holding = status.holding.iter().map(MasterRef::to_string).collect();
            a.last_seen = now;
        }
        self.agents_changed.store(true, Ordering::SeqCst);
        // The certificate says who it is, whatever the report claims.
        let mut status = status;
        status.node_id = peer.node.clone();
        if let Ok(mut f) = self.forward.lock() {
            f.insert(status.node_id.clone(), status);
        }
        self.report_now.notify_one();
    }

    /// Wakes the NUCs that lack a master they need (the window just opened).
    pub(super) fn wake_agents(&self) {
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

    /// Sends Wake-on-LAN for the DSI's wake orders not sent yet, to the MAC each NUC last
    /// reported (also when automatic waking is off: the DSI asked for this one).
    pub(super) fn wake_ordered(&self, orders: &[Order]) {
        let last = self.woken_order.load(Ordering::SeqCst);
        let new: Vec<&Order> = orders
            .iter()
            .filter(|o| o.id > last && o.kind == OrderKind::Wake)
            .collect();
        let Some(top) = new.iter().map(|o| o.id).max() else {
            return;
        };
        self.woken_order.store(top, Ordering::SeqCst);
        let Ok(agents) = self.agents.lock() else {
            return;
        };
        for o in new {
            let mac = agents.get(&o.node).and_then(|a| a.mac.as_deref());
            let Some(mac) = mac.and_then(|m| m.parse::<Mac>().ok()) else {
                tracing::warn!(node = %o.node, "the DSI asked to wake it, but it never reported a MAC address here");
                continue;
            };
            match wol::wake(mac, self.cfg.wake_on_lan.target) {
                Ok(()) => {
                    tracing::info!(node = %o.node, %mac, order = o.id, "woken (Wake-on-LAN): the DSI asked")
                }
                Err(e) => {
                    tracing::warn!(node = %o.node, %mac, error = %e, "Wake-on-LAN failed")
                }
            }
        }
    }

    pub(super) fn status(&self) -> Status {
        let now = self.clock.now();
        let s = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        let missing = self
            .master_states()
            .into_iter()
            .map(|m| Missing {
                master: m.master,
                bytes: m.missing_bytes,
            })
            .collect();
        Status {
            node_id: self.me.node.clone(),
            software: s.software,
            holding: self.holding(),
            report: Report::Relay(RelayReport {
                state: s.state,
                time: now,
                disk_bytes: s.disk_bytes,
                quota_bytes: s.quota_bytes,
                pinned_bytes: s.pinned_bytes,
                pinned_over_quota: s.pinned_over_quota,
                disk_full: s.disk_full,
                wan_bytes_open: s.wan_bytes_open,
                wan_bytes_closed: s.wan_bytes_closed,
                wan_bytes_this_window: s.wan_bytes_this_window,
                wan_bits_per_sec: s.wan_bits_per_sec,
                fetched_bytes: s.fetched_bytes,
                served_bytes: s.served_bytes,
                corrupt_dropped: s.corrupt_dropped,
                agents_not_answering: s.agents_not_answering,
                missing,
                last_error: s.last_error,
                bad_siblings: s.bad_siblings,
            }),
        }
    }

    pub(super) fn master_states(&self) -> Vec<MasterState> {
        let plan = self.plan();
        let known = match self.known.read() {
            Ok(k) => k,
            Err(_) => return Vec::new(),
        };
        plan.entries
            .iter()
            .map(|e| {
                let k = known.get(&e.master);
                MasterState {
                    master: e.master.clone(),
                    complete: k.is_some_and(|k| k.missing_chunks == 0),
                    missing_bytes: k.map_or(0, |k| k.missing_bytes),
                }
            })
            .collect()
    }

    /// Keeps what the agents last reported (MACs for Wake-on-LAN) across restarts.
    pub(super) fn write_agents(&self) {
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

    pub(super) fn write_status(&self) {
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
}

pub(super) async fn status_task(r: Arc<Relay>, shutdown: CancellationToken) {
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
