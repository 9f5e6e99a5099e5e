//! The multi-source fetch, the thin I/O shell around [`Swarm`]: the tracker asked for peers and
//! the NUC's stripe every few seconds, each peer connected (mutual TLS, an agent of our site only)
//! and asked every second what it took in since (`HasSince`: only new ids travel; an older agent
//! about the chunks it is not known to hold yet), the swarm's requests run
//! at once (`Connection::get_chunks`, which verifies every chunk, whoever sent it), what arrived
//! handed to one write session for the whole fetch ([`Writer`]), and told to the swarm. A peer
//! that sent a corrupt chunk, or failed, is dropped for this version.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use image_tools::exchange::{Connection, ExchangeError, FetchReport, Received};
use image_tools::store::DiskStore;
use image_tools::wire::{self, ErrorCode, Hello, MasterRef, PeerList, Role};
use image_tools::{ChunkId, ChunkStore, NodeId, VerifiedChunk, VerifiedManifest};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::plan::{Request, Source, Swarm};
use super::writer::Writer;

/// How often the tracker is asked again (new peers, a new stripe).
const TRACKER_EVERY: Duration = Duration::from_secs(2);
/// How often the peers are asked what they hold (each at most once at a time).
const HAS_EVERY: Duration = Duration::from_secs(1);
/// A peer request that brought no chunk for this long is given up and the peer dropped. Not a
/// limit on the whole request: a peer serving a room at a low upload cap takes long over each
/// request, and is slow, not dead.
const PEER_STALL: Duration = Duration::from_secs(30);
/// A question about holdings not answered within this is asked again later (the peer is kept:
/// its port may be full of chunks for others); one whose connection fails drops the peer.
const HOLDINGS_TIMEOUT: Duration = Duration::from_secs(20);
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
    /// The peer server's offer: each chunk committed is announced there (`Offer::committed`).
    pub(crate) offer: super::SharedOffer,
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

/// What one request brought back.
#[derive(Debug, Default)]
struct Answer {
    /// The chunks received, verified and handed to the writer (indices into the swarm).
    got: Vec<usize>,
    /// Their stored bytes as received.
    received_bytes: u64,
    /// The chunks the source does not hold, and when it expects them (the relay only).
    lacking: Vec<ChunkId>,
    expected: Option<i64>,
    /// Chunks that were not what their id says.
    corrupt: Vec<ChunkId>,
}

type Outcome = (Request, Answer, Result<(), ExchangeError>);

/// Fetches what `manifest` needs that `store` and `have` lack: the NUC's stripe from the relay,
/// the rest from its peers, from the relay what no peer gives in time. Stops early (returning
/// what the relay lacks) if the relay lacks a chunk it was asked for. Every chunk goes through
/// one write session ([`Writer`]), committed about every second and at the end, whatever the
/// number of requests and sources.
pub(crate) async fn fetch(
    relay: &Connection,
    peers: &PeerFetch,
    store: Arc<dyn DiskStore>,
    manifest: &Arc<VerifiedManifest>,
    have: Arc<HashSet<ChunkId>>,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<SwarmReport> {
    let offer = peers.offer.clone();
    let writer = Writer::start(store.clone(), move |ids| {
        if let Ok(mut o) = offer.write() {
            o.committed(ids);
        }
    });
    let result = swarm_fetch(relay, peers, &store, manifest, have, &writer, progress).await;
    // What arrived is kept (committed) whatever the end.
    let written = writer.finish().await;
    let report = result?;
    tracing::debug!(written = written?, "chunks written");
    Ok(report)
}

async fn swarm_fetch(
    relay: &Connection,
    peers: &PeerFetch,
    store: &Arc<dyn DiskStore>,
    manifest: &Arc<VerifiedManifest>,
    have: Arc<HashSet<ChunkId>>,
    writer: &Writer,
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
    let mut known = Holdings {
        master: master.clone(),
        cursors: HashMap::new(),
        asked: HashSet::new(),
        index: wanted
            .iter()
            .enumerate()
            .map(|(i, &(id, _))| (id, i))
            .collect(),
    };
    let mut swarm = Swarm::new(wanted, total, now(), peers.patience);
    let mut report = SwarmReport::default();
    let mut conns: HashMap<usize, Connection> = HashMap::new();
    let mut running: JoinSet<Outcome> = JoinSet::new();
    // Questions about holdings under way, one per peer at most.
    let mut asking: JoinSet<(usize, Asked)> = JoinSet::new();
    let mut last_tracker: Option<Duration> = None;
    let mut last_has: Option<Duration> = None;
    // Chunks the relay sent corrupt once (asked again once, as `exchange::fetch_these` does).
    let mut relay_corrupt: HashSet<ChunkId> = HashSet::new();
    // Why the relay was lost, if it was.
    let mut relay_error: Option<anyhow::Error> = None;
    while !swarm.is_done() {
        if swarm.stuck(now()) {
            running.abort_all();
            asking.abort_all();
            return Err(relay_error
                .unwrap_or_else(|| anyhow::anyhow!("the relay is gone"))
                .context("the relay is gone and the peers cannot give the rest"));
        }
        if !swarm.relay_lost() && last_tracker.is_none_or(|t| now() - t >= TRACKER_EVERY) {
            last_tracker = Some(now());
            match relay.peers(&master).await {
                Ok(list) => meet(&mut swarm, &mut conns, peers, list).await,
                // An older relay, without a tracker: everything from the relay.
                Err(e @ ExchangeError::Refused { .. }) => {
                    tracing::debug!(error = %e, "no peers from the relay");
                    swarm.set_stripe(0, 1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the relay is gone: going on with the peers");
                    swarm.lose_relay();
                    relay_error = Some(e.into());
                }
            }
        }
        if last_has.is_none_or(|t| now() - t >= HAS_EVERY) {
            last_has = Some(now());
            ask_holdings(&swarm, &conns, &mut known, &mut asking);
        }
        let beyond_before = swarm.beyond_stripe;
        let requests = swarm.next(now());
        if swarm.beyond_stripe > beyond_before {
            tracing::info!(
                at_secs = now().as_secs(),
                chunks = swarm.beyond_stripe - beyond_before,
                "the relay is asked for parts outside this NUC's stripe (the NUC fetching them is gone, or the peers brought nothing for a while)"
            );
        }
        for request in requests {
            let (conn, limit) = match request.source {
                Source::Relay => (relay.clone(), None),
                Source::Peer(p) => match conns.get(&p) {
                    Some(c) => (c.clone(), Some(PEER_STALL)),
                    None => {
                        swarm.done(&request, &[], now());
                        continue;
                    }
                },
            };
            let chunks: Vec<(usize, ChunkId)> =
                request.chunks.iter().map(|&i| (i, swarm.id(i))).collect();
            let tx = writer.sender();
            running.spawn(async move {
                let (answer, result) = ask(&conn, chunks, limit, tx).await;
                (request, answer, result)
            });
        }
        // Wait for a request to end, a peer to say what it holds, or the next look at the
        // tracker and the peers.
        let outcome = tokio::select! {
            Some(joined) = running.join_next() => Some(joined?),
            Some(joined) = asking.join_next() => {
                let (p, answer) = joined?;
                took_holdings(&mut swarm, &mut conns, &mut known, p, answer, now());
                None
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => None,
        };
        let Some((request, answer, result)) = outcome else {
            continue;
        };
        // A peer busy serving others: its chunks come from another holder, or from it later.
        if let (
            Source::Peer(_),
            Err(ExchangeError::Refused {
                code: ErrorCode::Busy,
                ..
            }),
        ) = (request.source, &result)
        {
            swarm.turned_away(&request, now());
            continue;
        }
        let bytes: u64 = answer
            .got
            .iter()
            .map(|&i| u64::from(sizes.get(&swarm.id(i)).copied().unwrap_or(0)))
            .sum();
        progress(bytes);
        swarm.done(&request, &answer.got, now());
        match request.source {
            Source::Relay => {
                report.relay.fetched += answer.got.len() as u64;
                report.relay.fetched_bytes += answer.received_bytes;
                if let Err(e) = result {
                    // What the peers hold still comes; `stuck` says when they cannot finish.
                    if !swarm.relay_lost() {
                        tracing::warn!(error = %e, "the relay failed: going on with the peers");
                    }
                    swarm.lose_relay();
                    relay_error = Some(e.into());
                    continue;
                }
                for id in answer.corrupt {
                    tracing::warn!(chunk = %id.short(), "the relay sent a corrupt chunk: asked again");
                    if !relay_corrupt.insert(id) {
                        running.abort_all();
                        return Err(ExchangeError::PeerLied {
                            peer: relay.peer().to_owned(),
                            chunks: vec![id],
                        }
                        .into());
                    }
                }
                if !answer.lacking.is_empty() {
                    report.relay.lacking.extend(answer.lacking);
                    report.relay.expected = match (report.relay.expected, answer.expected) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    running.abort_all();
                    return Ok(report);
                }
            }
            Source::Peer(p) => {
                report.peer_chunks += answer.got.len() as u64;
                report.peer_bytes += bytes;
                let node = swarm.node(p).to_owned();
                if !answer.corrupt.is_empty() {
                    tracing::error!(peer = %node, master = %master, "a peer sent a corrupt chunk: dropped for this version");
                    swarm.drop_peer(p, true);
                    if let Some(c) = conns.remove(&p) {
                        c.close();
                    }
                } else if let Err(e) = result {
                    tracing::warn!(peer = %node, error = %e, "a peer failed: dropped for this version");
                    swarm.drop_peer(p, false);
                    if let Some(c) = conns.remove(&p) {
                        c.close();
                    }
                }
            }
        }
    }
    running.abort_all();
    asking.abort_all();
    tracing::info!(
        master = %master,
        from_relay = report.relay.fetched,
        beyond_stripe = swarm.beyond_stripe,
        from_peers = report.peer_chunks,
        "fetched from the relay and the peers"
    );
    for c in conns.values() {
        c.close();
    }
    report.liars = swarm.liars();
    Ok(report)
}

/// Asks `conn` for `chunks` (index in the swarm, id) and hands what arrives, verified, to the
/// writer; with `stall`, gives up when no chunk came for that long. What arrived before a failure
/// or the stall counts.
async fn ask(
    conn: &Connection,
    chunks: Vec<(usize, ChunkId)>,
    stall: Option<Duration>,
    writer: mpsc::Sender<VerifiedChunk>,
) -> (Answer, Result<(), ExchangeError>) {
    let index: HashMap<ChunkId, usize> = chunks.iter().map(|&(i, id)| (id, i)).collect();
    let ids: Vec<ChunkId> = chunks.into_iter().map(|(_, id)| id).collect();
    let mut answer = Answer::default();
    // Chunks go to the writer as they arrive (committed and offered to the room within a second,
    // not when the whole request ends); those the writer's queue has no room for wait here.
    let mut handed: Vec<usize> = Vec::new();
    let mut received: Vec<VerifiedChunk> = Vec::new();
    let started = tokio::time::Instant::now();
    // Milliseconds from `started` to the last chunk (or answer) that arrived.
    let last = AtomicU64::new(0);
    let request = conn.get_chunks(&ids, |r, len| {
        last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match r {
            Received::Chunk(c) => {
                answer.received_bytes += len as u64;
                let i = index.get(c.id()).copied();
                match writer.try_send(c) {
                    Ok(()) => handed.extend(i),
                    Err(mpsc::error::TrySendError::Full(c)) => received.push(c),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return Err(ExchangeError::Transport("the chunk writer stopped".into()));
                    }
                }
            }
            Received::Lacking(id) => answer.lacking.push(id),
            Received::NotYet { id, expected } => {
                answer.lacking.push(id);
                answer.expected = Some(answer.expected.map_or(expected, |e| e.min(expected)));
            }
            Received::Lied { id, .. } => answer.corrupt.push(id),
        }
        Ok(())
    });
    let mut result = match stall {
        None => request.await,
        Some(stall) => {
            tokio::pin!(request);
            loop {
                tokio::select! {
                    r = &mut request => break r,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        let since = Duration::from_millis(last.load(Ordering::Relaxed));
                        if started.elapsed().saturating_sub(since) >= stall {
                            break Err(ExchangeError::Transport(format!(
                                "the peer sent nothing for {} s",
                                stall.as_secs()
                            )));
                        }
                    }
                }
            }
        }
    };
    answer.got = handed;
    for chunk in received {
        let i = index.get(chunk.id()).copied();
        if writer.send(chunk).await.is_err() {
            result = Err(ExchangeError::Transport("the chunk writer stopped".into()));
            break;
        }
        answer.got.extend(i);
    }
    (answer, result)
}

/// Takes the tracker's answer: our stripe, and a connection to each new peer.
async fn meet(
    swarm: &mut Swarm,
    conns: &mut HashMap<usize, Connection>,
    peers: &PeerFetch,
    list: PeerList,
) {
    swarm.set_stripe(list.stripe as usize, list.stripes as usize);
    // The tracker cuts stripes by node id among the fetching agents that share: those it lists
    // as not complete, and this one. When that matches its count, each stripe's owner is known.
    let mut fetching: Vec<&str> = list
        .peers
        .iter()
        .filter(|e| !e.complete)
        .map(|e| e.node.as_str())
        .chain([peers.me.as_str()])
        .collect();
    fetching.sort_unstable();
    fetching.dedup();
    if fetching.len() == list.stripes as usize
        && fetching.get(list.stripe as usize) == Some(&peers.me.as_str())
    {
        let owners = fetching
            .iter()
            .map(|&n| (n != peers.me.as_str()).then(|| swarm.peer(n)))
            .collect();
        swarm.set_owners(owners);
    } else {
        swarm.set_owners(Vec::new());
    }
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

/// Where this NUC is in a peer's log (`HasSince`); `None`: the peer does not keep one (an older
/// agent), so it is asked `Has` about every chunk it is not known to hold.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    epoch: u64,
    next: u64,
}

/// What the fetch knows of its peers' answers: each peer's cursor, the peers being asked now, and
/// each wanted chunk's index.
struct Holdings {
    master: MasterRef,
    cursors: HashMap<usize, Option<Cursor>>,
    asked: HashSet<usize>,
    index: HashMap<ChunkId, usize>,
}

/// A peer's answer about its holdings.
enum Asked {
    Since(Result<wire::Holdings, ExchangeError>),
    Has(Vec<usize>, Result<Vec<bool>, ExchangeError>),
    /// It did not answer within [`HOLDINGS_TIMEOUT`].
    Late,
}

/// Asks every connected peer not already being asked what it took in since last asked
/// (`HasSince`; an older peer: which of the chunks still wanted it holds, of those it is not
/// known to hold already). The answers come back through `asking`, to [`took_holdings`].
fn ask_holdings(
    swarm: &Swarm,
    conns: &HashMap<usize, Connection>,
    known: &mut Holdings,
    asking: &mut JoinSet<(usize, Asked)>,
) {
    for (&p, conn) in conns.iter() {
        if !known.asked.insert(p) {
            continue;
        }
        let conn = conn.clone();
        match *known.cursors.entry(p).or_insert(Some(Cursor::default())) {
            Some(at) => {
                let master = known.master.clone();
                asking.spawn(async move {
                    let r = tokio::time::timeout(
                        HOLDINGS_TIMEOUT,
                        conn.has_since(&master, at.epoch, at.next),
                    )
                    .await;
                    (p, r.map_or(Asked::Late, Asked::Since))
                });
            }
            None => {
                let asked = swarm.unknown_to(p);
                if asked.is_empty() {
                    known.asked.remove(&p);
                    continue;
                }
                let ids: Vec<ChunkId> = asked.iter().map(|&i| swarm.id(i)).collect();
                asking.spawn(async move {
                    let r = tokio::time::timeout(HOLDINGS_TIMEOUT, conn.has(&ids)).await;
                    (p, r.map_or(Asked::Late, |r| Asked::Has(asked, r)))
                });
            }
        }
    }
}

/// Takes peer `p`'s answer about its holdings. A peer that failed is dropped; a late one is
/// asked again at the next round.
fn took_holdings(
    swarm: &mut Swarm,
    conns: &mut HashMap<usize, Connection>,
    known: &mut Holdings,
    p: usize,
    answer: Asked,
    now: Duration,
) {
    known.asked.remove(&p);
    if !conns.contains_key(&p) {
        return;
    }
    let failed = match answer {
        Asked::Since(Ok(h)) => {
            let at = known.cursors.get(&p).copied().flatten().unwrap_or_default();
            if h.epoch != at.epoch {
                swarm.forget(p);
            }
            if h.complete {
                swarm.holds_all(p, now);
            } else {
                let held: Vec<usize> = h
                    .ids
                    .iter()
                    .filter_map(|id| known.index.get(id).copied())
                    .collect();
                swarm.holds(p, &held, now);
            }
            known.cursors.insert(
                p,
                Some(Cursor {
                    epoch: h.epoch,
                    next: h.next,
                }),
            );
            None
        }
        // An older agent: asked `Has` from now on.
        Asked::Since(Err(ExchangeError::Refused { .. })) => {
            known.cursors.insert(p, None);
            None
        }
        Asked::Has(asked, Ok(bits)) => {
            swarm.has(p, &asked, &bits, now);
            None
        }
        Asked::Since(Err(e)) | Asked::Has(_, Err(e)) => Some(e.to_string()),
        Asked::Late => {
            tracing::debug!(peer = %swarm.node(p), "a peer was slow to say what it holds: asked again later");
            None
        }
    };
    if let Some(error) = failed {
        tracing::warn!(peer = %swarm.node(p), %error, "a peer failed: dropped for this version");
        swarm.drop_peer(p, false);
        conns.remove(&p);
    }
}
