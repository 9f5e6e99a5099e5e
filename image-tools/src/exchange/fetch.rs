//! `fetch_missing`: every chunk a manifest needs that a store lacks, fetched in batches,
//! verified, written through the store's writer in group commits.

use super::*;

/// How a transfer runs.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Chunk ids per request.
    pub batch: usize,
    /// Requests in flight at once on the connection.
    pub in_flight: usize,
    /// When cancelled, no new request is made; the ones under way finish and are stored, and the
    /// transfer returns with [`FetchReport::stopped`] set (a night window closing).
    pub stop: CancellationToken,
    /// Chunks the caller already has elsewhere (a NUC's running image, its seed): not fetched, and
    /// counted as already had.
    pub have: Arc<HashSet<ChunkId>>,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions {
            batch: 64,
            in_flight: 8,
            stop: CancellationToken::new(),
            have: Arc::default(),
        }
    }
}

/// What a transfer did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FetchReport {
    /// Distinct chunks the manifest needs.
    pub needed: u64,
    /// Of those, already in the local store before this transfer.
    pub already_had: u64,
    pub fetched: u64,
    /// Stored bytes received (what crossed the network, without framing).
    pub fetched_bytes: u64,
    /// Chunks the peer sent corrupt (each asked again).
    pub corrupt_received: u64,
    /// Chunks the peer does not have.
    pub lacking: Vec<ChunkId>,
    /// The earliest time the peer said it expects chunks it does not have yet.
    pub expected: Option<i64>,
    /// The transfer was stopped (see [`FetchOptions::stop`]) before it had asked for everything.
    pub stopped: bool,
}

/// How often a transfer makes what it received durable, at the least.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Bytes a chunk costs on the wire beyond its payload: header, chunk id and frame header.
pub(super) const FRAMING: u64 = (crate::chunk::HEADER_LEN + 32 + 5) as u64;

/// Where a transfer stands, for bars and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub chunks: u64,
    pub chunks_total: u64,
    /// Stored bytes received (with the 5-byte chunk headers).
    pub bytes: u64,
    pub bytes_total: u64,
}

/// Progress callback, called after each chunk.
pub type FetchProgress<'a> = &'a (dyn Fn(Progress) + Sync);

/// Fetches every chunk `manifest` needs that `store` lacks, verifying each and writing them
/// through the store's [`ChunkWriter`](crate::store::ChunkWriter) (group commits in a local
/// store). After a failure (a cut link), what was received is kept, and calling again fetches
/// only the rest.
pub async fn fetch_missing<S: ChunkStore + ?Sized + 'static>(
    conn: &Connection,
    store: Arc<S>,
    manifest: &Manifest,
    opts: FetchOptions,
    rate: Option<Arc<RateLimit>>,
    progress: FetchProgress<'_>,
) -> Result<FetchReport, ExchangeError> {
    let unique = manifest.unique_chunks();
    let needed = unique.len() as u64;
    let want: Vec<(ChunkId, u32)> = {
        let (store, have) = (store.clone(), opts.have.clone());
        tokio::task::spawn_blocking(move || {
            unique
                .iter()
                .filter(|c| !have.contains(&c.id) && !store.has(&c.id).unwrap_or(false))
                .map(|c| (c.id, c.stored_len))
                .collect()
        })
        .await
        .map_err(transport)?
    };
    let already_had = needed - want.len() as u64;
    let mut report = fetch_these(conn, store, want, opts, rate, progress).await?;
    report.needed = needed;
    report.already_had = already_had;
    Ok(report)
}

/// Fetches the chunks `want` (id and stored length, from a verified manifest) from `conn`,
/// verifying each and writing them through the store's writer, as [`fetch_missing`] does (which
/// calls it); `FetchOptions::have` is not consulted. The building block of a fetch from several
/// sources (a NUC's peers and its relay): every chunk from any source is checked here.
pub async fn fetch_these<S: ChunkStore + ?Sized + 'static>(
    conn: &Connection,
    store: Arc<S>,
    want: Vec<(ChunkId, u32)>,
    opts: FetchOptions,
    rate: Option<Arc<RateLimit>>,
    progress: FetchProgress<'_>,
) -> Result<FetchReport, ExchangeError> {
    let mut report = FetchReport {
        needed: want.len() as u64,
        ..FetchReport::default()
    };
    let bytes_total: u64 = want
        .iter()
        .map(|&(_, len)| u64::from(len) + crate::chunk::HEADER_LEN as u64)
        .sum();
    let want: Vec<(ChunkId, u64)> = want
        .into_iter()
        .map(|(id, len)| (id, u64::from(len) + FRAMING))
        .collect();
    let total = want.len() as u64;

    // One writer thread owns the group commit; chunks reach it through a bounded channel.
    let (tx, mut rx) = mpsc::channel::<VerifiedChunk>(256);
    let writer_store = store.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
        let mut batch = writer_store.writer();
        let mut n = 0;
        let mut flushed = tokio::time::Instant::now();
        while let Some(chunk) = rx.blocking_recv() {
            batch.put(&chunk)?;
            n += 1;
            // A slow link fills a group commit slowly: make what arrived durable every few
            // seconds anyway, so that a crash or kill costs only those seconds.
            if flushed.elapsed() >= FLUSH_EVERY {
                batch.flush()?;
                flushed = tokio::time::Instant::now();
            }
        }
        batch.commit()?;
        Ok(n)
    });

    let size_of: HashMap<ChunkId, u64> = want.iter().copied().collect();
    let (batch, in_flight) = match &rate {
        Some(rate) if !want.is_empty() => {
            let avg = (bytes_total / want.len() as u64).max(1);
            super::pipeline::paced(rate.rate(), avg, conn.rtt(), opts.batch)
        }
        _ => (opts.batch.max(1), opts.in_flight.max(1)),
    };
    let mut queue: Vec<ChunkId> = want.into_iter().map(|(id, _)| id).collect();
    let mut retried: HashSet<ChunkId> = HashSet::new();
    let mut liars: Vec<ChunkId> = Vec::new();
    let mut stopped = false;
    let outcome: Result<(), ExchangeError> = async {
        while !queue.is_empty() {
            let batches: Vec<Vec<ChunkId>> = queue.chunks(batch).map(<[ChunkId]>::to_vec).collect();
            queue.clear();
            let mut again: Vec<ChunkId> = Vec::new();
            let shared = Mutex::new((&mut report, &mut again));
            let run = |ids: Vec<ChunkId>| {
                let (tx, rate, shared, size_of, stop) =
                    (tx.clone(), rate.clone(), &shared, &size_of, &opts.stop);
                async move {
                    // Pay for the request before making it: the bytes then flow at most one
                    // burst ahead of the rate, and under its ceiling over any second.
                    let mut ticket = None;
                    if let Some(rate) = &rate {
                        let cost = ids
                            .iter()
                            .map(|id| size_of.get(id).copied().unwrap_or(0))
                            .sum();
                        tokio::select! {
                            t = rate.acquire_over(cost, conn.rtt()) => ticket = Some(t),
                            _ = stop.cancelled() => return Ok(Some(ids)),
                        }
                    }
                    if stop.is_cancelled() {
                        return Ok(Some(ids));
                    }
                    let mut got: Vec<VerifiedChunk> = Vec::new();
                    let result = conn
                        .get_chunks(&ids, |received, len| {
                            let Ok(mut s) = shared.lock() else {
                                return Ok(());
                            };
                            let (report, again) = &mut *s;
                            if let Some(t) = ticket.as_mut().filter(|_| len > 0) {
                                t.arrived(len as u64 + FRAMING);
                            }
                            match received {
                                Received::Chunk(c) => {
                                    report.fetched += 1;
                                    report.fetched_bytes += len as u64;
                                    got.push(c);
                                }
                                Received::Lacking(id) => report.lacking.push(id),
                                Received::NotYet { id, expected } => {
                                    report.lacking.push(id);
                                    report.expected =
                                        Some(report.expected.map_or(expected, |e| e.min(expected)));
                                }
                                Received::Lied { id, .. } => {
                                    report.corrupt_received += 1;
                                    again.push(id);
                                }
                            }
                            progress(Progress {
                                chunks: report.fetched,
                                chunks_total: total,
                                bytes: report.fetched_bytes,
                                bytes_total,
                            });
                            Ok(())
                        })
                        .await;
                    for chunk in got {
                        if tx.send(chunk).await.is_err() {
                            return Err(ExchangeError::Transport("chunk writer stopped".into()));
                        }
                    }
                    result.map(|()| None)
                }
            };
            let mut first_error = None;
            let mut batches = batches.into_iter();
            // Keep `in_flight` requests going; a failed request stops new ones.
            let mut set = futures_lite_join::JoinAll::new();
            for ids in batches.by_ref().take(in_flight) {
                set.push(Box::pin(run(ids)));
            }
            while let Some(result) = set.next().await {
                match result {
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                    Ok(Some(_not_asked)) => {
                        stopped = true;
                        continue;
                    }
                    Ok(None) => {}
                }
                if first_error.is_none() && !opts.stop.is_cancelled() {
                    if let Some(ids) = batches.next() {
                        set.push(Box::pin(run(ids)));
                    }
                }
            }
            drop(set);
            if let Some(e) = first_error {
                return Err(e);
            }
            if stopped || opts.stop.is_cancelled() {
                stopped = true;
                break;
            }
            for id in again {
                if retried.insert(id) {
                    queue.push(id);
                } else {
                    liars.push(id);
                }
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer.await.map_err(transport)??;
    tracing::debug!(written, "chunks written");
    outcome?;
    report.stopped = stopped;
    if !liars.is_empty() {
        return Err(ExchangeError::PeerLied {
            peer: conn.peer().to_owned(),
            chunks: liars,
        });
    }
    Ok(report)
}

/// Polls a set of futures and yields their results as they complete (a tiny `FuturesUnordered`
/// over boxed futures, to keep the dependency list short).
pub(super) mod futures_lite_join {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

    pub struct JoinAll<'a, T> {
        futures: Vec<Boxed<'a, T>>,
    }

    impl<'a, T> JoinAll<'a, T> {
        pub fn new() -> Self {
            JoinAll {
                futures: Vec::new(),
            }
        }

        pub fn push(&mut self, f: Boxed<'a, T>) {
            self.futures.push(f);
        }

        /// The next completed result, `None` when empty.
        pub async fn next(&mut self) -> Option<T> {
            if self.futures.is_empty() {
                return None;
            }
            std::future::poll_fn(|cx: &mut Context<'_>| {
                for i in 0..self.futures.len() {
                    if let Poll::Ready(out) = self.futures[i].as_mut().poll(cx) {
                        drop(self.futures.swap_remove(i));
                        return Poll::Ready(Some(out));
                    }
                }
                Poll::Pending
            })
            .await
        }
    }
}
