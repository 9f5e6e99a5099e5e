//! Alerts: what the DSI must act on (a session late or at risk, a silent relay, a master that
//! failed on a NUC, a NUC's error, a relay's disk near full) sent to a webhook and by e-mail,
//! once per change, with a daily digest of what is open. See docs/ALERTS.md.
//!
//! `decide` (the conditions and the diff, pure), `digest` (when the digest is due, pure),
//! `message` (the webhook's JSON body and the words), `webhook` and `smtp` (the deliveries),
//! `config` (`[alerts]`); [`run`] is the task: every `check_seconds` and after each admin
//! change it reads the plan and the fleet, and tells each channel what changed since what it
//! was last told (kept in SQLite, `db::alerts`: a restart resends nothing). A delivery that fails
//! is logged and tried again at the next check; the task runs on its own blocking thread, beside
//! the planner and the chunk server, and never holds them up.

pub mod config;
pub mod decide;
pub mod digest;
pub mod message;
pub mod smtp;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::db::Db;
use decide::{ChangeKind, Condition, Rules};
use message::Alert;

/// What the sender runs with (from `[alerts]`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub channels: Vec<Channel>,
    pub rules: Rules,
    pub digest_at: jiff::civil::Time,
    /// Of `digest_at` and of the times in the messages.
    pub zone: TimeZone,
    /// Between two checks.
    pub every: Duration,
}

/// Where alerts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    Webhook { url: String, roots: PathBuf },
    Email(smtp::Smtp),
}

impl Channel {
    /// Its name in the sent set and the logs.
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Email(_) => "email",
        }
    }

    fn send(&self, alert: &Alert, now: i64, zone: &TimeZone) -> Result<(), String> {
        match self {
            Channel::Webhook { url, roots } => webhook::post(url, roots, alert),
            Channel::Email(smtp) => {
                let date = jiff::Timestamp::from_second(now)
                    .ok()
                    .and_then(|t| {
                        jiff::fmt::rfc2822::to_string(&t.to_zoned_datetime(zone.clone())).ok()
                    })
                    .unwrap_or_default();
                smtp.send(&alert.subject(), alert.text(), &date)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Checks and sends until `shutdown`: at start, every `settings.every`, and when `wake` is
/// notified (the server does after each admin change).
pub async fn run(
    api: Arc<Api>,
    settings: Settings,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let names: Vec<_> = settings.channels.iter().map(Channel::name).collect();
    tracing::info!(channels = ?names, every_secs = settings.every.as_secs(), "alerts on");
    let settings = Arc::new(settings);
    loop {
        let (a, s) = (api.clone(), settings.clone());
        let now = api.clock.now();
        match tokio::task::spawn_blocking(move || check(&a, &s, now)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot check the alerts; trying again"),
            Err(e) => tracing::error!(error = %e, "the alerts check failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(settings.every) => {}
        }
    }
}

/// One check at `now`: the conditions, then each channel told what changed, and its digest if due.
fn check(api: &Api, s: &Settings, now: i64) -> Result<(), String> {
    let words = |r: crate::api::Reply| r.1["error"].as_str().unwrap_or("").to_owned();
    let plan = crate::api::plan_rows_until(api, now, i64::MAX).map_err(words)?;
    let mut db = Db::open(&api.data.database()).map_err(|e| e.to_string())?;
    let fleet = crate::api::fleet_rows(&db, now, api.silent_after_secs).map_err(words)?;
    let current = decide::conditions(&plan, &fleet, now, &s.rules);
    for channel in &s.channels {
        tell(&mut db, channel, &current, s, now).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Tells `channel` what changed since what it was last told, then its digest if due. A failed
/// delivery is logged and left for the next check.
fn tell(
    db: &mut Db,
    channel: &Channel,
    current: &BTreeMap<String, Condition>,
    s: &Settings,
    now: i64,
) -> Result<(), crate::db::DbError> {
    let name = channel.name();
    let sent: BTreeMap<String, Condition> = db
        .alerts_sent(name)?
        .into_iter()
        .map(|r| (r.key, r.condition))
        .collect();
    let changes = decide::diff(&sent, current);
    if !changes.is_empty() {
        let alert = Alert::changes(now, &changes, &s.zone);
        if let Err(e) = channel.send(&alert, now, &s.zone) {
            tracing::warn!(channel = name, error = %e, changes = changes.len(),
                "cannot deliver the alerts; trying again at the next check");
            return Ok(());
        }
        db.record_alerts_sent(name, &changes, now)?;
        let opened = changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Opened)
            .count();
        tracing::info!(
            channel = name,
            opened,
            resolved = changes.len() - opened,
            "alerts sent"
        );
    }
    match db.last_digest(name)? {
        // The first check counts from now: no digest for the days before alerts were on.
        None => db.record_digest(name, now)?,
        Some(last) if digest::due(last, now, s.digest_at, &s.zone) => {
            let open: Vec<Condition> = current.values().cloned().collect();
            let alert = Alert::digest(now, &open, &s.zone);
            match channel.send(&alert, now, &s.zone) {
                Ok(()) => {
                    db.record_digest(name, now)?;
                    tracing::info!(channel = name, open = open.len(), "daily digest sent");
                }
                Err(e) => tracing::warn!(channel = name, error = %e,
                    "cannot deliver the daily digest; trying again at the next check"),
            }
        }
        Some(_) => {}
    }
    Ok(())
}
