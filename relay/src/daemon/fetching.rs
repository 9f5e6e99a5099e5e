//! The fetcher's shell: it asks [`Fetcher`] what to do, does it (transfers, waking NUCs, waiting),
//! and tells it how each transfer ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use image_tools::exchange::{self, Connection, FetchOptions};
use image_tools::wire::MasterRef;
use image_tools::{StoreError, VerifiedManifest};
use tokio_util::sync::CancellationToken;

use super::Relay;
use crate::cache;
use crate::fetcher::{fmt_time, Action, Event, Fetcher, View};

pub(super) async fn fetch_task(r: Arc<Relay>, shutdown: CancellationToken) {
    let mut fetcher = Fetcher::new();
    let mut link = r.link.subscribe();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if r.dirty.load(Ordering::SeqCst) {
            let rr = r.clone();
            let _ = tokio::task::spawn_blocking(move || rr.recheck()).await;
        }
        let now = r.clock.now();
        if link.has_changed().unwrap_or(false) {
            link.borrow_and_update();
            fetcher.handle(Event::LinkChanged, now);
        }
        let actions = {
            let plan = r.plan();
            let schedule = cache::schedule(&plan);
            let complete = |m: &MasterRef| r.complete(m);
            let view = View {
                plan: &plan,
                schedule: schedule.as_ref(),
                complete: &complete,
                connected: r.link.borrow().is_some(),
            };
            fetcher.poll(now, &view)
        };
        let mut wait = None;
        for action in actions {
            match action {
                Action::WindowOpened { until } => {
                    tracing::info!(until, "night window open");
                    let rr = r.clone();
                    let _ = tokio::task::spawn_blocking(move || rr.wake_agents()).await;
                }
                Action::WindowClosed => tracing::info!("night window closed"),
                Action::Fetch { master, until } => {
                    r.pace(r.clock.now());
                    let conn = r.link.borrow().clone();
                    let outcome = match conn {
                        Some(conn) => fetch_one(&r, &conn, &master, until, &shutdown).await,
                        None => Err(Retry::Transport("the controller went away".into())),
                    };
                    let event = match outcome {
                        Ok(()) => Event::Done(master),
                        Err(Retry::Transport(e)) => {
                            tracing::warn!(error = %e, "transfer interrupted; resuming when the controller answers");
                            Event::LinkFailed(master)
                        }
                        Err(Retry::Later(e)) => {
                            r.error(e);
                            Event::Failed(master)
                        }
                    };
                    fetcher.handle(event, r.clock.now());
                }
                Action::Wait { state, until } => {
                    r.stat(|s| s.state = state.to_string());
                    wait = Some(until);
                }
            }
        }
        let Some(until) = wait else {
            continue;
        };
        let wait = until
            .map(|t| r.clock.real_until(t))
            .unwrap_or(Duration::from_secs(30))
            .clamp(Duration::from_millis(20), Duration::from_secs(30));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = r.wake.notified() => {}
            _ = link.changed() => fetcher.handle(Event::LinkChanged, r.clock.now()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

enum Retry {
    /// The link failed: wait for it to come back, then resume.
    Transport(String),
    /// Something only time or a human fixes: try again later, and say so.
    Later(String),
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
        .and_then(|k| k.get(master).map(|k| k.manifest.clone()));
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
        .and_then(|k| k.get(master).map(|k| k.missing_bytes))
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
    // The cap in force follows the gate during the transfer too (a night window opening under a
    // daytime push: the night cap; closing under an override: the emergency cap).
    let pacer = {
        let r = r.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                r.pace(r.clock.now());
            }
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
    pacer.abort();
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

pub(super) fn is_disk_full(e: &StoreError) -> bool {
    match e {
        StoreError::Io { source, .. } => source.raw_os_error() == Some(28),
        _ => false,
    }
}
