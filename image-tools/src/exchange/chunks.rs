//! Sending chunks: read in small batches on the blocking pool within the reader permits, written
//! at the pace the peer takes them.

use super::*;

/// Sends `ids` in order: per id a chunk frame, `Lacking` or `NotYet`; then `End`.
///
/// A task reads (and verifies) the chunks from the store, one blocking read each, a frame or two
/// ahead of the writer. Every frame read holds a reader of its connection and one of the server
/// ([`Limits::readers_per_peer`], [`Limits::readers`]) until QUIC has taken it: memory does not
/// grow with the number of peers or requests, and a peer that reads slowly holds at most its own
/// few readers, however many streams it opens. A peer that reads too slowly over the request is
/// dropped ([`Pace`]).
pub(super) async fn send_chunks(
    ids: Vec<ChunkId>,
    send: &mut quinn::SendStream,
    service: &Service,
    state: &ConnState,
) -> Result<(), ExchangeError> {
    type Read = (Result<Encoded, ()>, Option<ReaderPermit>);
    let (tx, mut rx) = mpsc::channel::<Read>(1);
    let (store, catalog) = (service.store.clone(), service.catalog.clone());
    let (peer_readers, server_readers) = (state.readers.clone(), state.shared.readers.clone());
    let reader = tokio::spawn(async move {
        let mut ids = ids.into_iter();
        loop {
            // Wait for one reader; take more only if they are free now, so that a batch never
            // holds back another peer's share. One trip to the blocking pool per batch.
            let permit = tokio::select! {
                p = ReaderPermit::acquire(&peer_readers, &server_readers) => p,
                _ = tx.closed() => return,
            };
            let Some(permit) = permit else { return };
            let Some(id) = ids.next() else { return };
            let mut batch = vec![(id, permit)];
            while batch.len() < READ_BATCH {
                let Some(permit) = ReaderPermit::try_acquire(&peer_readers, &server_readers) else {
                    break;
                };
                let Some(id) = ids.next() else { break };
                batch.push((id, permit));
            }
            let (store, catalog) = (store.clone(), catalog.clone());
            let read: Vec<Read> = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|(id, permit)| (read_chunk(&*store, &*catalog, id), Some(permit)))
                    .collect()
            })
            .await
            .unwrap_or_else(|_| vec![(Err(()), None)]);
            for item in read {
                if tx.send(item).await.is_err() {
                    return; // the request ended
                }
            }
        }
    });
    let _stop_reading = AbortOnDrop(reader.abort_handle());
    let mut pace = Pace::default();
    while let Some((encoded, _permit)) = rx.recv().await {
        match encoded {
            Ok((bytes, chunk)) => {
                write_paced(send, &bytes, &mut pace).await?;
                if let (Some(stored), Some(peer)) = (chunk, &state.peer) {
                    service.served.chunk(peer, stored);
                }
            }
            Err(()) => {
                return send_error(send, ErrorCode::Internal, "the server's store failed").await
            }
        }
    }
    send_frame(send, &Frame::Control(Control::End)).await
}

/// An encoded frame to send, and the stored size of the chunk it carries (none for `Lacking` or
/// `NotYet`).
pub(super) type Encoded = (Vec<u8>, Option<u64>);

/// One chunk's frame, verified by the store's `get`; a missing or corrupt one is `Lacking` (or
/// `NotYet`); `Err` if the store failed.
pub(super) fn read_chunk(
    store: &dyn ChunkStore,
    catalog: &dyn Catalog,
    id: ChunkId,
) -> Result<Encoded, ()> {
    let lacking = |id: ChunkId| {
        let control = match catalog.expected(&id) {
            Some(expected) => Control::NotYet { id, expected },
            None => Control::Lacking(id),
        };
        wire::encode_to_vec(&Frame::Control(control))
            .map(|frame| (frame, None))
            .map_err(|_| ())
    };
    match store.get(&id) {
        Ok(chunk) if *chunk.id() == id => {
            let stored = crate::chunk::HEADER_LEN as u64 + u64::from(chunk.stored_len());
            Ok((
                wire::encode_chunk(&id, &chunk.header(), chunk.payload()),
                Some(stored),
            ))
        }
        Ok(_) | Err(StoreError::Missing(_)) => lacking(id),
        Err(StoreError::Invalid { reason, .. }) => {
            tracing::warn!(chunk = %id.short(), %reason, "corrupt chunk in our store: not sent");
            lacking(id)
        }
        Err(e) => {
            tracing::error!(chunk = %id.short(), error = %e, "store failed");
            Err(())
        }
    }
}

/// A chunk frame's place in memory: a reader of its connection, then one of the server.
#[derive(Debug)]
pub(super) struct ReaderPermit {
    pub(super) _peer: OwnedSemaphorePermit,
    pub(super) _server: OwnedSemaphorePermit,
}

/// Chunks read in one trip to the blocking pool at most.
pub(super) const READ_BATCH: usize = 4;

impl ReaderPermit {
    /// Both permits if both are free now.
    pub(super) fn try_acquire(
        peer: &Arc<Semaphore>,
        server: &Arc<Semaphore>,
    ) -> Option<ReaderPermit> {
        let peer = peer.clone().try_acquire_owned().ok()?;
        let server = server.clone().try_acquire_owned().ok()?;
        Some(ReaderPermit {
            _peer: peer,
            _server: server,
        })
    }

    pub(super) async fn acquire(
        peer: &Arc<Semaphore>,
        server: &Arc<Semaphore>,
    ) -> Option<ReaderPermit> {
        let peer = peer.clone().acquire_owned().await.ok()?;
        let server = server.clone().acquire_owned().await.ok()?;
        Some(ReaderPermit {
            _peer: peer,
            _server: server,
        })
    }
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The longest a server waits for a peer to take one frame.
pub(super) const STALLED_PEER: Duration = Duration::from_secs(30);
/// Over a whole reply a peer may keep the server waiting [`PACE_GRACE`] plus the time its bytes
/// take at this rate: 16 KiB/s per request (128 kbit/s; a relay on a 2 Mbit/s WAN with 8 requests
/// in flight reads twice that).
pub(super) const MIN_PEER_RATE: u64 = 16 << 10;
pub(super) const PACE_GRACE: Duration = Duration::from_secs(30);

/// How long a reply's peer has kept the server waiting, against what it has been sent. Pure: the
/// caller measures the waits (on tokio's clock).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Pace {
    pub(super) waited: Duration,
    pub(super) sent: u64,
}

impl Pace {
    /// How long the peer may take to accept the next `len` bytes; `None` if it is already too slow.
    pub(super) fn allowance(&self, len: u64) -> Option<Duration> {
        let earned =
            PACE_GRACE + Duration::from_secs_f64((self.sent + len) as f64 / MIN_PEER_RATE as f64);
        let left = earned.checked_sub(self.waited)?;
        (!left.is_zero()).then(|| left.min(STALLED_PEER))
    }

    pub(super) fn wrote(&mut self, len: u64, took: Duration) {
        self.sent += len;
        self.waited += took;
    }
}

/// Writes `bytes` within what `pace` allows the peer; an error if it takes longer.
pub(super) async fn write_paced(
    send: &mut quinn::SendStream,
    bytes: &[u8],
    pace: &mut Pace,
) -> Result<(), ExchangeError> {
    let len = bytes.len() as u64;
    let allowance = pace
        .allowance(len)
        .ok_or_else(|| transport("the peer reads too slowly"))?;
    let started = tokio::time::Instant::now();
    tokio::time::timeout(allowance, send.write_all(bytes))
        .await
        .map_err(|_| transport("the peer reads too slowly"))?
        .map_err(transport)?;
    pace.wrote(len, started.elapsed());
    Ok(())
}
