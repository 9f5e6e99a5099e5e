//! The link to the controller: connect (backoff with jitter), take plans, send reports (the
//! relay's and its agents'), count WAN bytes as open or closed time.

use std::sync::Arc;
use std::time::Duration;

use image_tools::exchange::{self, Connection};
use image_tools::trust::Expect;
use image_tools::wire::{SitePlan, Status};
use tokio_util::sync::CancellationToken;

use super::{revoked_serials, Relay};
use crate::cache::Gate;
use crate::route::Route;

impl Relay {
    /// Takes a new plan from the controller: kept on disk, and the fetcher looks at it.
    pub(super) fn take_plan(&self, plan: SitePlan) {
        // The CA bridge and endorsements are renewed in every plan: taken even when nothing
        // else changed.
        self.learn_bridge(&plan);
        self.learn_keys(&plan);
        self.wake_ordered(&plan.orders);
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
            emergency_cap_mbit = plan.emergency_cap_mbit,
            pushes = plan.pushes.len(),
            far_port = ?plan.far_port,
            "new plan"
        );
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
        self.pace(now);
        self.wake.notify_one();
    }

    /// Connects to the controller at `addr`, checking its certificate as at any address.
    pub(super) async fn connect(
        &self,
        endpoint: &quinn::Endpoint,
        addr: std::net::SocketAddr,
    ) -> Result<Connection, exchange::ExchangeError> {
        let tls = self.creds().client_config(Expect::Controller, self.clock)?;
        let conn = Connection::connect(endpoint, addr, tls).await?;
        conn.hello(self.hello()).await?;
        Ok(conn)
    }

    /// Remembers how the far port answered: a failure sends the link to the configured address
    /// for a while (`route::FAR_RETRY_SECS`), a success clears it.
    fn far_answered(&self, route: Route, reached: bool) {
        if !route.is_far() {
            return;
        }
        if let Ok(mut f) = self.far_failed_at.lock() {
            *f = (!reached).then(|| self.clock.now());
        }
        if !reached {
            self.stat(|s| s.far_port_failures += 1);
        }
    }
}

/// A random factor in [0.5, 1.5) for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    0.5 + (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

pub(super) async fn link_task(r: Arc<Relay>, shutdown: CancellationToken) {
    let endpoint = match exchange::client_endpoint() {
        Ok(e) => e,
        Err(e) => return r.error(format!("cannot open a UDP socket: {e}")),
    };
    let mut backoff = 1.0f64;
    let mut failures = 0u32;
    loop {
        let route = r.route(r.clock.now());
        r.stat(|s| {
            s.controller_addr = route.addr().to_string();
            s.far_link = route.is_far();
        });
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = r.connect(&endpoint, route.addr()) => c,
        };
        r.far_answered(route, attempt.is_ok());
        match attempt {
            Ok(conn) => {
                if failures > 0 {
                    tracing::info!(after_failures = failures, controller = %route, "controller reachable again");
                } else {
                    tracing::info!(controller = %route, "connected to the controller");
                }
                backoff = 1.0;
                failures = 0;
                r.link.send_replace(Some(conn.clone()));
                r.wake.notify_one();
                let ended = keep_link(&r, &conn, route, &shutdown).await;
                r.link.send_replace(None);
                if shutdown.is_cancelled() {
                    conn.close();
                    break;
                }
                match ended {
                    LinkEnd::Moved(to) => {
                        // The fetches under way resume on the new connection.
                        tracing::info!(from = %route, %to, "the site's link changed: moving the link to the controller");
                        conn.close();
                        continue;
                    }
                    LinkEnd::Lost(reason) => {
                        tracing::warn!(%reason, "lost the controller; the LAN is still served from the cache")
                    }
                }
            }
            Err(e) if route.is_far() => {
                // Straight to the configured address: the far port is tried again later.
                tracing::warn!(error = %e, far = %route.addr(), configured = %r.cfg.controller, retry_secs = crate::route::FAR_RETRY_SECS, "cannot reach the controller's far port; fetching through the configured address meanwhile");
                continue;
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

/// Why [`keep_link`] returned.
enum LinkEnd {
    /// The connection failed, or shutdown.
    Lost(String),
    /// A plan changed where the link goes (the site's link became far or wired).
    Moved(Route),
}

impl From<String> for LinkEnd {
    fn from(reason: String) -> LinkEnd {
        LinkEnd::Lost(reason)
    }
}

/// Polls, reports and counts bytes on one connection, taken by `route`, until it fails or a plan
/// sends the link elsewhere; returns why.
async fn keep_link(
    r: &Relay,
    conn: &Connection,
    route: Route,
    shutdown: &CancellationToken,
) -> LinkEnd {
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
                Err(e) => return format!("plan: {e}").into(),
            }
            let next = r.route(r.clock.now());
            if next != route {
                return LinkEnd::Moved(next);
            }
            if let Err(e) = r.renew_if_due(conn).await {
                r.error(format!("cannot renew this relay's certificate: {e:#}"));
            }
            if let Err(e) = conn.report(r.status()).await {
                return format!("report: {e}").into();
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return "shutdown".to_owned().into(),
            reason = conn.closed() => return reason.into(),
            _ = tick.tick() => seconds += 1,
            _ = r.report_now.notified() => {
                if let Err(e) = conn.report(r.status()).await {
                    return format!("report: {e}").into();
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
                return format!("report for an agent: {e}").into();
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
