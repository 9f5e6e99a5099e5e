//! Preparing the next master in the background: the manifest verified with the accepted keys,
//! only the chunks the NUC's own images lack fetched (from the relay, or with peer sharing from
//! the site's other NUCs too, `peers::fetch`), `next` assembled seeded from them (every chunk
//! hashed) and marked ready. The daemon's loop reads what it did from
//! [`JobNews`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image_tools::exchange::{self, Connection, FetchOptions};
use image_tools::store::DiskStore;
use image_tools::wire::{ErrorCode, MasterRef};
use image_tools::{ChunkStore, PublicKey, VerifiedManifest};

use crate::daemon::label;
use crate::peers::fetch::PeerFetch;
use crate::peers::SharedOffer;
use crate::slots::{SlotName, Slots};

/// What the background preparation tells the loop.
#[derive(Debug, Default)]
pub(crate) struct JobNews {
    pub(crate) fetched_chunks: u64,
    pub(crate) fetched_bytes: u64,
    pub(crate) reused_chunks: u64,
    pub(crate) refused: u64,
    /// Of the chunks fetched, those from peers, and their stored bytes.
    pub(crate) peer_chunks: u64,
    pub(crate) peer_bytes: u64,
    /// Peers dropped for sending corrupt chunks, and of which version (taken by the loop).
    pub(crate) liars: Vec<(String, MasterRef)>,
    pub(crate) error: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) done: bool,
    /// The job got its master ready: an error it reported earlier is over.
    pub(crate) succeeded: bool,
}

/// The relay does not hold the master yet (its night window has not come, or its transfer is
/// under way): the NUC waits, which is no error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotOnRelayYet(String);

/// Getting one master version into `next`.
pub(crate) struct Job {
    pub(crate) target: MasterRef,
    pub(crate) conn: Connection,
    /// The manifest-signing keys accepted when the job started.
    pub(crate) keys: Vec<PublicKey>,
    pub(crate) slots: Arc<Mutex<Slots>>,
    pub(crate) store: Arc<dyn DiskStore>,
    pub(crate) news: Arc<Mutex<JobNews>>,
    pub(crate) threads: usize,
    pub(crate) now: u64,
    /// Peer sharing: how to reach the site's other agents (none: the relay only).
    pub(crate) peers: Option<PeerFetch>,
    /// What this NUC offers its peers: the version fetched is added once its manifest verified.
    pub(crate) offer: SharedOffer,
    /// When the relay expects to hold the target, from the plan (`crate::expect`).
    pub(crate) expected: Option<i64>,
}

impl Job {
    fn say(&self, f: impl FnOnce(&mut JobNews)) {
        if let Ok(mut n) = self.news.lock() {
            f(&mut n);
        }
    }

    pub(crate) async fn run(self) {
        let what = label(&self.target);
        self.say(|n| n.state = Some(format!("fetching {what}")));
        match self.prepare().await {
            Ok(()) => self.say(|n| n.succeeded = true),
            Err(e) => {
                match e.downcast_ref::<NotOnRelayYet>() {
                    Some(wait) => {
                        tracing::info!("{wait}: waiting");
                        let state = format!("waiting for the relay: {wait}");
                        self.say(|n| n.state = Some(state));
                    }
                    None => {
                        let msg = format!("preparing {what}: {e:#}");
                        tracing::error!("{msg}");
                        self.say(|n| n.error = Some(msg));
                    }
                }
                // Try again later, not in a tight loop.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
        self.say(|n| n.done = true);
    }

    async fn prepare(&self) -> anyhow::Result<()> {
        let bytes = match self.conn.manifest(&self.target).await {
            Err(exchange::ExchangeError::Refused {
                code: ErrorCode::NotFound,
                ..
            }) => {
                let what = label(&self.target);
                let when = self
                    .expected
                    .and_then(|t| jiff::Timestamp::from_second(t).ok())
                    .map(|t| format!(", expected at {}", t.strftime("%Y-%m-%d %H:%M UTC")))
                    .unwrap_or_default();
                return Err(NotOnRelayYet(format!("it does not have {what} yet{when}")).into());
            }
            got => got?,
        };
        let manifest = match VerifiedManifest::open_with(bytes, &self.keys) {
            Ok(m) if m.master() == self.target => m,
            Ok(m) => {
                self.say(|n| n.refused += 1);
                anyhow::bail!(
                    "REFUSED: the relay sent the manifest of {} {} for {}: the current master keeps running",
                    m.name,
                    m.version,
                    label(&self.target)
                );
            }
            Err(e) => {
                self.say(|n| n.refused += 1);
                anyhow::bail!(
                    "REFUSED a manifest that does not verify with the controller's key ({e}): the current master keeps running"
                );
            }
        };
        let manifest = Arc::new(manifest);
        // Peers may read this version's chunks from our cache while we fetch it.
        if let Ok(mut o) = self.offer.write() {
            o.fetching
                .insert(manifest.master(), Arc::new(manifest.bytes().to_vec()));
        }
        // `next` holds another version (the plan changed): drop it. The chunks of the images the
        // NUC holds (the running one, the one kept for rollback) are not fetched: assembly takes
        // them from there. Should one of those images turn out damaged, a second pass fetches
        // what it could not give.
        let held: HashSet<image_tools::ChunkId> = {
            let slots = self.slots.clone();
            let m = manifest.clone();
            let (now, keys) = (self.now, self.keys.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<HashSet<image_tools::ChunkId>> {
                let mut slots = slots
                    .lock()
                    .map_err(|_| anyhow::anyhow!("slots lock poisoned"))?;
                let next = slots.table().get(SlotName::Next).cloned();
                if next.is_some_and(|h| h.name != m.name || h.version != m.version) {
                    slots.abandon_next(now)?;
                }
                slots.begin_next(&m, now)?;
                let mut held = HashSet::new();
                for slot in [SlotName::Current, SlotName::Previous] {
                    if let Ok(m) = slots.load_manifest(slot, &keys) {
                        held.extend(m.chunks().map(|c| c.id));
                    }
                }
                Ok(held)
            })
            .await??
        };
        let reused = manifest
            .unique_chunks()
            .iter()
            .filter(|c| held.contains(&c.id))
            .count() as u64;
        self.say(|n| n.reused_chunks = reused);
        let mut have = Arc::new(held);
        loop {
            self.fetch(&manifest, have.clone()).await?;
            let what = label(&self.target);
            self.say(|n| n.state = Some(format!("assembling {what}")));
            let (slots, store, m, threads, now, offer) = (
                self.slots.clone(),
                self.store.clone(),
                manifest.clone(),
                self.threads,
                self.now,
                self.offer.clone(),
            );
            let assembled = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let mut slots = slots
                    .lock()
                    .map_err(|_| anyhow::anyhow!("slots lock poisoned"))?;
                let (proof, report) = slots.assemble_next(&m, &*store, threads, &|_, _| {})?;
                slots.mark_ready(proof, now)?;
                tracing::info!(master = %m.name, version = %m.version, from_seed = report.from_seed, from_store = report.from_store, seed_mismatches = report.seed_mismatches, "next master verified and ready");
                // Every chunk is in the image now: the cache is emptied.
                // Peers are told first (a peer asking in between finds it lacking).
                let ids = store.ids()?;
                if let Ok(mut o) = offer.write() {
                    o.evicted(&ids);
                }
                for id in ids {
                    let _ = store.remove(&id);
                }
                // A pack store's removals are tombstones: this frees their space.
                if let Err(e) = store.reclaim() {
                    tracing::warn!(error = %e, "cannot free the emptied cache's space");
                }
                Ok(())
            })
            .await?;
            let damaged_seed = assembled.as_ref().err().and_then(|e| match e
                .downcast_ref::<crate::slots::SlotError>()
            {
                Some(crate::slots::SlotError::Assemble {
                    source: image_tools::assemble::AssembleError::Chunk { id, .. },
                    ..
                }) => Some(*id),
                _ => None,
            });
            match damaged_seed {
                Some(id) if !have.is_empty() => {
                    tracing::warn!(chunk = %id.short(), "a chunk the NUC's own images should hold is damaged there: fetching everything assembly lacks");
                    have = Arc::default();
                }
                _ => break assembled?,
            }
        }
        let what = label(&self.target);
        self.say(|n| n.state = Some(format!("{what} ready")));
        Ok(())
    }

    /// Fetches the chunks of `manifest` that neither the store nor `have` holds.
    async fn fetch(
        &self,
        manifest: &Arc<VerifiedManifest>,
        have: Arc<HashSet<image_tools::ChunkId>>,
    ) -> anyhow::Result<()> {
        let news = self.news.clone();
        let before = std::sync::atomic::AtomicU64::new(0);
        let progress = move |p: exchange::Progress| {
            let delta = p.bytes - before.swap(p.bytes, std::sync::atomic::Ordering::Relaxed);
            if let Ok(mut n) = news.lock() {
                n.fetched_bytes += delta;
            }
        };
        let report = match &self.peers {
            Some(peers) => {
                let progress = |bytes: u64| {
                    if let Ok(mut n) = self.news.lock() {
                        n.fetched_bytes += bytes;
                    }
                };
                let swarm = crate::peers::fetch::fetch(
                    &self.conn,
                    peers,
                    self.store.clone(),
                    manifest,
                    have,
                    &progress,
                )
                .await?;
                let master = manifest.master();
                self.say(|n| {
                    n.fetched_chunks += swarm.peer_chunks;
                    n.peer_chunks += swarm.peer_chunks;
                    n.peer_bytes += swarm.peer_bytes;
                    n.liars.extend(
                        swarm
                            .liars
                            .iter()
                            .map(|node| (node.clone(), master.clone())),
                    );
                });
                swarm.relay
            }
            None => {
                let opts = FetchOptions {
                    have,
                    ..FetchOptions::default()
                };
                exchange::fetch_missing(
                    &self.conn,
                    self.store.clone(),
                    manifest,
                    opts,
                    None,
                    &progress,
                )
                .await?
            }
        };
        self.say(|n| n.fetched_chunks += report.fetched);
        if !report.lacking.is_empty() {
            let (n, what) = (report.lacking.len(), label(&self.target));
            // A relay that says when it will have them is on its way: a wait. One that does not
            // know is a problem for the DSI to see.
            return match report
                .expected
                .and_then(|t| jiff::Timestamp::from_second(t).ok())
            {
                Some(t) => {
                    let when = t.strftime("%Y-%m-%d %H:%M UTC");
                    Err(NotOnRelayYet(format!("{n} chunk(s) of {what} not there yet, expected at {when}")).into())
                }
                None => Err(anyhow::anyhow!(
                    "the relay lacks {n} chunk(s) of {what} and does not know when it will have them"
                )),
            };
        }
        Ok(())
    }
}
