//! The fetcher's shell: it asks [`Fetcher`] what to do, does it (transfers, waking NUCs, waiting),
//! and tells it how each transfer ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use image_tools::exchange::{self, FetchOptions};
use image_tools::wire::MasterRef;
use image_tools::{ChunkId, ChunkStore, StoreError, VerifiedManifest};
use tokio_util::sync::CancellationToken;

use super::siblings::Upstream;
use super::Relay;
use crate::cache;
use crate::fetcher::{fmt_time, Action, Event, Fetcher, View};

pub(super) async fn fetch_task(r: Arc<Relay>, shutdown: CancellationToken) {
    let mut fetcher = Fetcher::new();
    let mut link = r.link.subscribe();
    let mut siblings = r.siblings.subscribe();
    if r.cfg.sibling_discovery.is_some() {
        // Not a byte over the WAN before the site's other relays had a chance to answer: the one
        // that crosses it may be another.
        let first = tokio::time::timeout(Duration::from_secs(10), siblings.changed());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = first => {}
        }
    }
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if r.dirty.load(Ordering::SeqCst) {
            let rr = r.clone();
            let _ = tokio::task::spawn_blocking(move || rr.recheck()).await;
        }
        let now = r.clock.now();
        if link.has_changed().unwrap_or(false) || siblings.has_changed().unwrap_or(false) {
            link.borrow_and_update();
            siblings.borrow_and_update();
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
                connected: r.link.borrow().is_some() || !r.siblings.borrow().is_empty(),
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
                    let outcome = fetch_one(&r, &master, until, &shutdown).await;
                    let event = match outcome {
                        Ok(()) => Event::Done(master),
                        Err(Retry::Behind(sibling)) => {
                            tracing::info!(%sibling, master = %master.name, version = %master.version, "the site's other relay does not hold it all yet: asking again soon");
                            Event::Behind(master)
                        }
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
            _ = siblings.changed() => fetcher.handle(Event::LinkChanged, r.clock.now()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

enum Retry {
    /// The link failed: wait for it to come back, then resume.
    Transport(String),
    /// The site's other relay (named) lacks some of it yet: ask it again soon.
    Behind(String),
    /// Something only time or a human fixes: try again later, and say so.
    Later(String),
}

/// Fetches what `master` lacks, until `until` (the window's or the override's end).
async fn fetch_one(
    r: &Arc<Relay>,
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
            let (from, bytes) = manifest_from(r, master).await?;
            let m = VerifiedManifest::open_with(bytes, &r.accepted_keys()).map_err(|e| {
                Retry::Later(format!(
                    "{from} sent a manifest for {} {} that does not verify: {e}",
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
    // A relay of the site coming or going ends this transfer: the fetcher starts the next one
    // from the right sources.
    let turned = {
        let (stop, mut siblings) = (stop.clone(), r.siblings.subscribe());
        tokio::spawn(async move {
            if siblings.changed().await.is_ok() {
                stop.cancel();
            }
        })
    };
    tracing::info!(master = %master.name, version = %master.version, missing_bytes = missing, until = %fmt_time(until), "fetching");
    r.stat(|s| s.state = format!("fetching {} {}", master.name, master.version));
    // Each transfer reports its own running total: counted into the statistics as it grows.
    let progress = |lan: bool| {
        let before = std::sync::atomic::AtomicU64::new(0);
        let r = r.clone();
        move |p: exchange::Progress| {
            let delta = p.bytes - before.swap(p.bytes, Ordering::Relaxed);
            r.stat(|s| {
                s.fetched_bytes += delta;
                s.disk_bytes += delta;
                if lan {
                    s.sibling_bytes += delta;
                }
            });
        }
    };
    r.transferring.store(true, Ordering::SeqCst);
    let result = async {
        // What the site's other relays hold, over the LAN first, unpaced.
        let siblings = r.siblings.borrow().clone();
        let mut from_siblings = exchange::FetchReport::default();
        let mut wanted = match siblings.is_empty() {
            true => Vec::new(),
            false => missing_chunks(r, &manifest).await,
        };
        for s in &siblings {
            let got = from_sibling(r, s, &mut wanted, &stop, &progress(true)).await;
            match got {
                Ok(report) => {
                    from_siblings.fetched += report.fetched;
                    from_siblings.fetched_bytes += report.fetched_bytes;
                }
                // That relay is going away: the others, or the WAN, bring the rest.
                Err(exchange::ExchangeError::Transport(e)) => {
                    tracing::info!(sibling = %s.name, error = %e, "the site's other relay stopped answering")
                }
                // Nothing it sent was kept; the others, or the WAN, bring the rest.
                Err(exchange::ExchangeError::PeerLied { chunks, .. }) => {
                    r.set_aside(&s.name, master, chunks.len())
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(leader) = r.leader() {
            // The rest comes over the WAN through the relay that crosses it, not this one.
            return Ok((from_siblings, Some((leader.name, wanted.len()))));
        }
        let Some(conn) = r.link.borrow().clone() else {
            return Err(exchange::ExchangeError::Transport(
                "the controller went away".into(),
            ));
        };
        let opts = FetchOptions {
            stop: stop.clone(),
            ..FetchOptions::default()
        };
        let mut report = exchange::fetch_missing(
            &conn,
            r.store.clone(),
            &manifest,
            opts,
            Some(r.rate.clone()),
            &progress(false),
        )
        .await?;
        report.fetched += from_siblings.fetched;
        report.fetched_bytes += from_siblings.fetched_bytes;
        Ok((report, None))
    }
    .await;
    r.transferring.store(false, Ordering::SeqCst);
    timer.abort();
    pacer.abort();
    turned.abort();
    {
        let rr = r.clone();
        let _ = tokio::task::spawn_blocking(move || rr.recheck()).await;
    }
    match result {
        Ok((report, behind)) => {
            r.stat(|s| {
                s.fetched_chunks += report.fetched;
                s.disk_full = false;
            });
            if let Some((leader, lacking)) = behind.filter(|(_, l)| *l > 0) {
                tracing::info!(master = %master.name, version = %master.version, fetched = report.fetched, lacking, "waiting for {leader}, which crosses the WAN for this site");
                return Err(Retry::Behind(leader));
            }
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

/// Where the manifest of `master` comes from: the controller, or else the site's other relays.
/// Asked as a delta to the newest other version of the master the relay keeps, if any.
async fn manifest_from(r: &Arc<Relay>, master: &MasterRef) -> Result<(String, Vec<u8>), Retry> {
    let base = r.known.read().ok().and_then(|known| {
        let kept: Vec<&MasterRef> = known.keys().collect();
        crate::manifest_base::choose(&kept, master).map(|m| known[m].manifest.clone())
    });
    let controller = r.link.borrow().clone();
    let mut error = None;
    let ask = |conn: exchange::Connection| {
        let base = base.clone();
        async move {
            match &base {
                Some(b) => conn.manifest_against(master, b.bytes()).await,
                None => conn
                    .manifest(master)
                    .await
                    .map(|bytes| exchange::ManifestReply {
                        wire_bytes: bytes.len() as u64,
                        delta: false,
                        bytes,
                    }),
            }
        }
    };
    let count = |reply: &exchange::ManifestReply| {
        r.stat(|s| match reply.delta {
            true => s.manifest_bytes_delta += reply.wire_bytes,
            false => s.manifest_bytes_full += reply.wire_bytes,
        });
        if let (true, Some(b)) = (reply.delta, &base) {
            tracing::info!(%master, base = %b.master(), delta_bytes = reply.wire_bytes, manifest_bytes = reply.bytes.len(), "manifest came as a delta");
        }
    };
    if let Some(conn) = controller {
        match ask(conn).await {
            Ok(reply) => {
                count(&reply);
                return Ok(("the controller".into(), reply.bytes));
            }
            Err(e) => error = Some(e.to_string()),
        }
    }
    let siblings = r.siblings.borrow().clone();
    for s in siblings {
        match ask(s.conn.clone()).await {
            Ok(reply) => {
                count(&reply);
                return Ok((format!("the site's other relay {}", s.name), reply.bytes));
            }
            Err(e) => error = Some(e.to_string()),
        }
    }
    Err(Retry::Transport(
        error.unwrap_or_else(|| "the controller went away".into()),
    ))
}

/// The chunks of `manifest` the relay's store lacks, with their stored lengths.
async fn missing_chunks(r: &Arc<Relay>, manifest: &VerifiedManifest) -> Vec<(ChunkId, u32)> {
    let (store, unique) = (r.store.clone(), manifest.unique_chunks());
    tokio::task::spawn_blocking(move || {
        unique
            .iter()
            .filter(|c| !store.has(&c.id).unwrap_or(false))
            .map(|c| (c.id, c.stored_len))
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// What `sibling` holds of `wanted`, fetched and verified like any chunk; what came is taken off
/// `wanted`.
async fn from_sibling(
    r: &Arc<Relay>,
    sibling: &Upstream,
    wanted: &mut Vec<(ChunkId, u32)>,
    stop: &CancellationToken,
    progress: exchange::FetchProgress<'_>,
) -> Result<exchange::FetchReport, exchange::ExchangeError> {
    let mut held = Vec::new();
    for batch in wanted.chunks(image_tools::wire::MAX_IDS) {
        let ids: Vec<ChunkId> = batch.iter().map(|(id, _)| *id).collect();
        let bits = sibling.conn.has(&ids).await?;
        held.extend(
            batch
                .iter()
                .zip(bits)
                .filter(|(_, has)| *has)
                .map(|(c, _)| *c),
        );
    }
    if held.is_empty() {
        return Ok(exchange::FetchReport::default());
    }
    tracing::info!(sibling = %sibling.name, chunks = held.len(), "fetching what the site's other relay holds, over the LAN");
    let opts = FetchOptions {
        stop: stop.clone(),
        ..FetchOptions::default()
    };
    let asked: std::collections::HashSet<ChunkId> = held.iter().map(|(id, _)| *id).collect();
    let report =
        exchange::fetch_these(&sibling.conn, r.store.clone(), held, opts, None, progress).await?;
    // Asked and not lacking: it came. A stopped transfer did not ask for everything: keep all
    // (the next try walks the store again).
    if !report.stopped {
        let lacking: std::collections::HashSet<ChunkId> = report.lacking.iter().copied().collect();
        wanted.retain(|(id, _)| !asked.contains(id) || lacking.contains(id));
    }
    Ok(report)
}

pub(super) fn is_disk_full(e: &StoreError) -> bool {
    match e {
        StoreError::Io { source, .. } => source.raw_os_error() == Some(28),
        _ => false,
    }
}
