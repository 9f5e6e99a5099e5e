//! The multi-source fetch, the thin I/O shell around [`Swarm`]: the tracker asked for peers and
//! the NUC's stripe every few seconds, each peer connected (mutual TLS, an agent of our site only)
//! and asked what it holds every second, the swarm's requests run at once, each through
//! `exchange::fetch_these` (which verifies every chunk, whoever sent it, and stores it), and what
//! came back told to the swarm. A peer that sent a corrupt chunk, or failed, is dropped for this
//! version.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use image_tools::exchange::{self, Connection, ExchangeError, FetchOptions, FetchReport};
use image_tools::wire::{Hello, PeerList, Role};
use image_tools::{ChunkId, ChunkStore, LocalStore, NodeId, VerifiedManifest};
use tokio::task::JoinSet;

use super::plan::{Request, Source, Swarm};

/// How often the tracker is asked again (new peers, a new stripe).
const TRACKER_EVERY: Duration = Duration::from_secs(2);
/// How often the peers are asked what they hold.
const HAS_EVERY: Duration = Duration::from_secs(1);
/// A peer that does not answer a request within this is dropped.
const PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// Connecting to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the fetch needs to reach the peers.
pub(crate) struct PeerFetch {
    pub(crate) me: NodeId,
    pub(crate) endpoint: quinn::Endpoint,
    /// Client TLS that accepts only agents of our site (`Expect::AgentOf`), revoked ones refused.
    pub(crate) tls: rustls::ClientConfig,
    /// How long to wait for peers to bring parts outside our stripe before asking the relay.
    pub(crate) patience: Duration,
}

/// What a multi-source fetch did.
#[derive(Debug, Default)]
pub(crate) struct SwarmReport {
    /// What came from the relay (with its `lacking` and `expected`, as `fetch_missing` says).
    pub(crate) relay: FetchReport,
    pub(crate) peer_chunks: u64,
    pub(crate) peer_bytes: u64,
    /// Peers dropped for sending corrupt chunks, by node id.
    pub(crate) liars: Vec<String>,
}

type Outcome = (Request, Result<FetchReport, ExchangeError>);

/// Fetches what `manifest` needs that `store` and `have` lack: the NUC's stripe from the relay,
/// the rest from its peers, from the relay what no peer gives in time. Stops early (returning
/// what the relay lacks) if the relay lacks a chunk it was asked for.
pub(crate) async fn fetch(
    relay: &Connection,
    peers: &PeerFetch,
    store: Arc<LocalStore>,
    manifest: &Arc<VerifiedManifest>,
    have: Arc<HashSet<ChunkId>>,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<SwarmReport> {
    let master = manifest.master();
    let unique = manifest.unique_chunks();
    let total = unique.len();
    let (wanted, sizes) = {
        let (store, unique) = (store.clone(), unique.clone());
        tokio::task::spawn_blocking(move || {
            let mut wanted = Vec::new();
            let mut sizes = HashMap::new();
            for (pos, c) in unique.iter().enumerate() {
                if !have.contains(&c.id) && !store.has(&c.id).unwrap_or(false) {
                    wanted.push((c.id, pos));
                    sizes.insert(c.id, c.stored_len);
                }
            }
            (wanted, sizes)
        })
        .await?
    };
    let origin = tokio::time::Instant::now();
    let now = || origin.elapsed();
    let mut swarm = Swarm::new(wanted, total, now(), peers.patience);
    let mut report = SwarmReport::default();
    let mut conns: HashMap<usize, Connection> = HashMap::new();
    let mut running: JoinSet<Outcome> = JoinSet::new();
    let mut last_tracker: Option<Duration> = None;
    let mut last_has: Option<Duration> = None;
    while !swarm.is_done() {
        if last_tracker.is_none_or(|t| now() - t >= TRACKER_EVERY) {
            last_tracker = Some(now());
            match relay.peers(&master).await {
                Ok(list) => meet(&mut swarm, &mut conns, peers, list).await,
                // An older relay, or none: everything from the relay.
                Err(e) => {
                    tracing::debug!(error = %e, "no peers from the relay");
                    swarm.set_stripe(0, 1);
                }
            }
        }
        if last_has.is_none_or(|t| now() - t >= HAS_EVERY) {
            last_has = Some(now());
            ask_holdings(&mut swarm, &mut conns, now()).await;
        }
        for request in swarm.next(now()) {
            let conn = match request.source {
                Source::Relay => relay.clone(),
                Source::Peer(p) => match conns.get(&p) {
                    Some(c) => c.clone(),
                    None => {
                        swarm.done(&request, &[], now());
                        continue;
                    }
                },
            };
            let want: Vec<(ChunkId, u32)> = request
                .chunks
                .iter()
                .map(|&i| {
                    let id = swarm.id(i);
                    (id, sizes.get(&id).copied().unwrap_or(0))
                })
                .collect();
            let store = store.clone();
            running.spawn(async move {
                let opts = FetchOptions {
                    batch: want.len().max(1),
                    in_flight: 1,
                    ..FetchOptions::default()
                };
                let fetched = exchange::fetch_these(&conn, store, want, opts, None, &|_| {});
                let result = match request.source {
                    Source::Relay => fetched.await,
                    Source::Peer(_) => match tokio::time::timeout(PEER_TIMEOUT, fetched).await {
                        Ok(r) => r,
                        Err(_) => Err(ExchangeError::Transport("the peer was too slow".into())),
                    },
                };
                (request, result)
            });
        }
        // Wait for a request to end, or for the next look at the tracker and the peers.
        let outcome = tokio::select! {
            Some(joined) = running.join_next() => Some(joined?),
            _ = tokio::time::sleep(Duration::from_millis(200)) => None,
        };
        let Some((request, result)) = outcome else {
            continue;
        };
        let got = arrived(&swarm, &request, &store).await?;
        let bytes: u64 = got
            .iter()
            .map(|&i| u64::from(sizes.get(&swarm.id(i)).copied().unwrap_or(0)))
            .sum();
        progress(bytes);
        match (request.source, result) {
            (Source::Relay, Ok(r)) => {
                report.relay.fetched += r.fetched;
                report.relay.fetched_bytes += r.fetched_bytes;
                if !r.lacking.is_empty() {
                    report.relay.lacking.extend(r.lacking);
                    report.relay.expected = match (report.relay.expected, r.expected) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    running.abort_all();
                    return Ok(report);
                }
                swarm.done(&request, &got, now());
            }
            (Source::Relay, Err(e)) => {
                running.abort_all();
                return Err(e.into());
            }
            (Source::Peer(p), result) => {
                report.peer_chunks += got.len() as u64;
                report.peer_bytes += bytes;
                swarm.done(&request, &got, now());
                let node = swarm.node(p).to_owned();
                match result {
                    Ok(r) if r.corrupt_received == 0 => {}
                    Ok(_) | Err(ExchangeError::PeerLied { .. }) => {
                        tracing::error!(peer = %node, master = %master, "a peer sent a corrupt chunk: dropped for this version");
                        swarm.drop_peer(p, true);
                        if let Some(c) = conns.remove(&p) {
                            c.close();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(peer = %node, error = %e, "a peer failed: dropped for this version");
                        swarm.drop_peer(p, false);
                        if let Some(c) = conns.remove(&p) {
                            c.close();
                        }
                    }
                }
            }
        }
    }
    running.abort_all();
    for c in conns.values() {
        c.close();
    }
    report.liars = swarm.liars();
    Ok(report)
}

/// Which chunks of `request` are in the store now (what arrived, whatever the request's end).
async fn arrived(
    swarm: &Swarm,
    request: &Request,
    store: &Arc<LocalStore>,
) -> anyhow::Result<Vec<usize>> {
    let ids: Vec<(usize, ChunkId)> = request.chunks.iter().map(|&i| (i, swarm.id(i))).collect();
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .filter(|(_, id)| store.has(id).unwrap_or(false))
            .map(|(i, _)| i)
            .collect()
    })
    .await?)
}

/// Takes the tracker's answer: our stripe, and a connection to each new peer.
async fn meet(
    swarm: &mut Swarm,
    conns: &mut HashMap<usize, Connection>,
    peers: &PeerFetch,
    list: PeerList,
) {
    swarm.set_stripe(list.stripe as usize, list.stripes as usize);
    for entry in list.peers {
        if entry.node == peers.me.as_str() {
            continue;
        }
        let p = swarm.peer(&entry.node);
        if !swarm.is_live(p) || conns.contains_key(&p) {
            continue;
        }
        let connect = async {
            let conn = Connection::connect(&peers.endpoint, entry.addr, peers.tls.clone()).await?;
            conn.hello(Hello::new(Role::Agent, &peers.me)).await?;
            anyhow::Ok(conn)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(conn)) if conn.peer().ends_with(&format!("/{}", entry.node)) => {
                tracing::info!(peer = %entry.node, addr = %entry.addr, "connected to a peer");
                conns.insert(p, conn);
            }
            Ok(Ok(conn)) => {
                tracing::warn!(peer = %entry.node, addr = %entry.addr, is = conn.peer(), "the peer at that address is another agent: dropped");
                conn.close();
                swarm.drop_peer(p, false);
            }
            Ok(Err(e)) => {
                tracing::warn!(peer = %entry.node, addr = %entry.addr, error = %e, "cannot reach a peer");
                swarm.drop_peer(p, false);
            }
            Err(_) => {
                tracing::warn!(peer = %entry.node, addr = %entry.addr, "a peer did not answer");
                swarm.drop_peer(p, false);
            }
        }
    }
}

/// Asks every connected peer which of the chunks still wanted it holds.
async fn ask_holdings(swarm: &mut Swarm, conns: &mut HashMap<usize, Connection>, now: Duration) {
    let remaining = swarm.remaining();
    if remaining.is_empty() {
        return;
    }
    let ids: Vec<ChunkId> = remaining.iter().map(|&i| swarm.id(i)).collect();
    let mut asks = JoinSet::new();
    for (&p, conn) in conns.iter() {
        let (conn, ids) = (conn.clone(), ids.clone());
        asks.spawn(async move {
            let r = tokio::time::timeout(CONNECT_TIMEOUT, conn.has(&ids)).await;
            (p, r)
        });
    }
    while let Some(Ok((p, r))) = asks.join_next().await {
        match r {
            Ok(Ok(bits)) => swarm.has(p, &remaining, &bits, now),
            Ok(Err(e)) => {
                tracing::warn!(peer = %swarm.node(p), error = %e, "a peer failed: dropped for this version");
                swarm.drop_peer(p, false);
                conns.remove(&p);
            }
            Err(_) => {
                tracing::warn!(peer = %swarm.node(p), "a peer did not answer: dropped for this version");
                swarm.drop_peer(p, false);
                conns.remove(&p);
            }
        }
    }
}
