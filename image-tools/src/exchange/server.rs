//! The server: `Service`, `serve` / `serve_with`, one task per connection and per stream, the
//! requests answered within the connection's rights.

use super::*;

/// Receives each status report a peer sends.
pub type ReportSink = Box<dyn Fn(&Identity, Status) + Send + Sync>;

/// Everything a server needs.
pub struct Service {
    pub hello: Hello,
    pub store: Arc<dyn ChunkStore>,
    pub catalog: Arc<dyn Catalog>,
    pub enroller: Option<Enroller>,
    /// Without an enroller: where enrolment requests of peers without a certificate are passed on.
    pub forward_enroll: Option<EnrollForwarder>,
    /// Called with each status report a peer sends.
    pub on_report: ReportSink,
    /// The serials refused: the same list the TLS configuration checks at the handshake, checked
    /// again at every request so that a peer revoked while connected is cut off.
    pub revoked: Revoked,
    /// What was sent to each site's peers (chunks and their stored bytes), for the owner's
    /// metrics; `Served::default()` when nobody reads it.
    pub served: Served,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Service({} {})", self.hello.role, self.hello.node_id)
    }
}

/// Serves `endpoint` within [`Limits::default`] (a relay's) until `shutdown`; see [`serve_with`].
pub async fn serve(endpoint: quinn::Endpoint, service: Arc<Service>, shutdown: CancellationToken) {
    serve_with(endpoint, service, Limits::default(), shutdown).await
}

/// Serves `endpoint` within `limits` until `shutdown` (its connections log within the caller's
/// span); then stops accepting connections and
/// requests, lets the requests under way finish for up to 5 seconds, and closes the endpoint.
pub async fn serve_with(
    endpoint: quinn::Endpoint,
    service: Arc<Service>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let shared = Arc::new(Shared::new(limits));
    let mut rebalance = tokio::time::interval(admission::REBALANCE_EVERY);
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = rebalance.tick() => {
                SendShares::refresh(&shared);
                continue;
            }
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let Some(handshake) = Admitted::take(&shared, Slot::Handshake) else {
            tracing::debug!(from = %incoming.remote_address(), "too many handshakes at once: refused");
            incoming.refuse();
            continue;
        };
        let (service, shutdown, streams, shared) = (
            service.clone(),
            shutdown.child_token(),
            tracker.clone(),
            shared.clone(),
        );
        tracker.spawn(
            async move {
                let connecting = match incoming.accept() {
                    Ok(connecting) => connecting,
                    Err(e) => return tracing::debug!(error = %e, "handshake failed"),
                };
                // Dropping a handshake that takes too long closes it.
                let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return tracing::debug!(error = %e, "handshake failed"),
                    Err(_) => return tracing::debug!("handshake too slow: dropped"),
                };
                drop(handshake);
                serve_connection(conn, service, shared, shutdown, streams).await
            }
            // The caller's span (e.g. the controller's far port) names each connection's lines too.
            .instrument(tracing::Span::current()),
        );
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still running at shutdown were aborted");
    }
    endpoint.close(0u32.into(), b"shutting down");
}

/// The QUIC send priority of chunk replies: below every other reply (0).
const CHUNK_PRIORITY: i32 = -1;

pub(super) struct ConnState {
    pub(super) peer: Option<Identity>,
    /// Where the connection comes from (a tracker gives a peer's address from it).
    pub(super) remote: SocketAddr,
    pub(super) hello: Mutex<Option<Hello>>,
    /// The chunk lists of the masters this peer may read, and the master list they were taken for;
    /// taken again only when that list changes.
    pub(super) allowed_chunks: Mutex<(Vec<MasterRef>, Vec<ChunkList>)>,
    pub(super) shared: Arc<Shared>,
    /// This connection's chunk frames in memory ([`Limits::readers_per_peer`]).
    pub(super) readers: Arc<Semaphore>,
    /// One manifest reply at a time per connection.
    pub(super) manifests: Arc<Semaphore>,
    /// Bytes of this connection's requests being answered: one largest request.
    pub(super) request_bytes: Arc<Semaphore>,
}

/// Serves one connection. Before anything else it takes its place within the server's [`Limits`]
/// (closed at once if there is none); a peer with a certificate then gets [`PEER_STREAMS`] and a
/// larger receive window, one without keeps [`UNENROLLED_STREAMS`] and is closed after
/// [`UNENROLLED_LIFETIME`].
pub(super) async fn serve_connection(
    conn: quinn::Connection,
    service: Arc<Service>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    // Requests run on the server's tracker, so that shutdown waits for them.
    streams: TaskTracker,
) {
    let certificate = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().map(|c| c.to_vec()));
    let peer = certificate.as_deref().and_then(Identity::from_certificate);
    let serial = certificate.as_deref().and_then(trust::certinfo::serial);
    let peer_label = match &peer {
        Some(id) => id.to_string(),
        None => format!("unenrolled {}", conn.remote_address()),
    };
    let span = tracing::info_span!("conn", peer = %peer_label);
    let slot = match &peer {
        Some(id) => Slot::Peer(id.to_string()),
        None => Slot::Unenrolled,
    };
    let Some(_admitted) = Admitted::take(&shared, slot) else {
        span.in_scope(|| tracing::info!("too many connections: closed"));
        conn.close(quinn::VarInt::from_u32(2), b"too many connections");
        return;
    };
    let _share = match &peer {
        Some(_) => {
            conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(PEER_STREAMS));
            conn.set_receive_window(quinn::VarInt::from_u32(PEER_RECEIVE_WINDOW));
            Some(SendShares::join(&shared, &conn))
        }
        None => {
            conn.set_send_window(UNENROLLED_SEND_WINDOW);
            None
        }
    };
    let lifetime = match &peer {
        Some(_) => None,
        None => Some(UNENROLLED_LIFETIME),
    };
    let state = Arc::new(ConnState {
        peer,
        remote: conn.remote_address(),
        hello: Mutex::new(None),
        allowed_chunks: Mutex::new((Vec::new(), Vec::new())),
        readers: Arc::new(Semaphore::new(shared.limits.readers_per_peer)),
        manifests: Arc::new(Semaphore::new(1)),
        request_bytes: Arc::new(Semaphore::new(MAX_REQUEST_FRAME)),
        shared,
    });
    async move {
        tracing::info!("connected");
        let expired = async {
            match lifetime {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut expired => {
                    tracing::info!("no certificate: closed after its time");
                    conn.close(quinn::VarInt::from_u32(3), b"enrolment takes one request");
                    break;
                }
                s = conn.accept_bi() => s,
            };
            let (send, recv) = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(reason = %e, "disconnected");
                    break;
                }
            };
            if serial
                .as_deref()
                .is_some_and(|s| service.revoked.contains(s))
            {
                tracing::warn!("certificate revoked while connected: closing");
                conn.close(1u32.into(), b"certificate revoked");
                break;
            }
            let (service, state) = (service.clone(), state.clone());
            streams.spawn(
                async move {
                    if let Err(e) = serve_stream(send, recv, &service, &state).await {
                        tracing::debug!(error = %e, "request ended with an error");
                    }
                }
                .in_current_span(),
            );
        }
    }
    .instrument(span)
    .await
}

/// The largest request frame, header included.
pub(super) const MAX_REQUEST_FRAME: usize = 4 + wire::MAX_CONTROL as usize;

/// Reads one request: the 5-byte header first, checked with [`wire::peek_request`] against
/// `limit`, then room for the body taken from the connection's and the server's request budgets
/// (held until the request is answered), and only then the body. `None` at a clean end of stream.
pub(super) async fn read_request(
    recv: &mut quinn::RecvStream,
    state: &ConnState,
    limit: u32,
) -> Result<Option<(Control, RequestBudget)>, ExchangeError> {
    let mut header = [0u8; 5];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(transport(e)),
    }
    let Some(total) = wire::peek_request(&header, limit)? else {
        return Err(ExchangeError::Transport("short frame header".into()));
    };
    let n = total as u32; // at most MAX_REQUEST_FRAME
    let budget = RequestBudget {
        _connection: state
            .request_bytes
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(transport)?,
        _server: state
            .shared
            .request_bytes
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(transport)?,
    };
    let mut frame = vec![0u8; total];
    frame[..5].copy_from_slice(&header);
    recv.read_exact(&mut frame[5..]).await.map_err(transport)?;
    match wire::decode(&frame)? {
        Some((Frame::Control(c), _)) => Ok(Some((c, budget))),
        _ => Err(ExchangeError::Transport(
            "request frame did not decode".into(),
        )),
    }
}

/// A request's room in its connection's and its server's request budgets.
#[derive(Debug)]
pub(super) struct RequestBudget {
    pub(super) _connection: OwnedSemaphorePermit,
    pub(super) _server: OwnedSemaphorePermit,
}

/// Reads frames from a stream, buffering only up to each frame's limit.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next frame, `None` at a clean end of stream.
    pub async fn next(
        &mut self,
        recv: &mut quinn::RecvStream,
    ) -> Result<Option<Frame>, ExchangeError> {
        loop {
            if let Some((frame, used)) = wire::decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            match recv.read_chunk(1 << 20, true).await.map_err(transport)? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(ExchangeError::Transport(
                        "stream ended inside a frame".into(),
                    ))
                }
            }
        }
    }
}

pub(super) async fn send_frame(
    send: &mut quinn::SendStream,
    frame: &Frame,
) -> Result<(), ExchangeError> {
    let bytes = wire::encode_to_vec(frame)?;
    send.write_all(&bytes).await.map_err(transport)
}

pub(super) async fn send_error(
    send: &mut quinn::SendStream,
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<(), ExchangeError> {
    let message = message.into();
    tracing::info!(?code, %message, "refused");
    send_frame(send, &Frame::Control(Control::Error { code, message })).await
}

pub(super) async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: &Service,
    state: &ConnState,
) -> Result<(), ExchangeError> {
    let limit = match state.peer {
        Some(_) => wire::MAX_CONTROL,
        None => MAX_ENROL_REQUEST,
    };
    let read = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut recv, state, limit)).await;
    let (request, _budget) = match read {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(ExchangeError::Wire(e))) => {
            // Refused from its header or body: the peer may send no more on this stream.
            let _ = recv.stop(quinn::VarInt::from_u32(1));
            let sent = send_error(&mut send, ErrorCode::BadRequest, e.to_string()).await;
            let _ = send.finish();
            return sent;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let _ = recv.stop(quinn::VarInt::from_u32(1));
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return Err(ExchangeError::Transport(
                "the request did not arrive in time".into(),
            ));
        }
    };
    let result = answer(request, &mut send, service, state).await;
    if result.is_err() {
        // The peer is gone or too slow: drop what is queued for it.
        let _ = send.reset(quinn::VarInt::from_u32(1));
        return result;
    }
    let _ = send.finish();
    // `write_all` only queued the reply: stay (and keep shutdown waiting) until the peer has it,
    // but not for a peer that stopped reading.
    if tokio::time::timeout(STALLED_PEER, send.stopped())
        .await
        .is_err()
    {
        let _ = send.reset(quinn::VarInt::from_u32(1));
    }
    result
}

pub(super) async fn answer(
    request: Control,
    send: &mut quinn::SendStream,
    service: &Service,
    state: &ConnState,
) -> Result<(), ExchangeError> {
    // Enrolment is the only request open to a peer without a certificate.
    if let Control::Enroll {
        token,
        role,
        node_id,
        public_key,
        mac,
        renewal,
    } = request
    {
        let request = EnrollRequest {
            token,
            role,
            node_id,
            public_key,
            mac,
            renewal,
        };
        return answer_enroll(send, service, state, request).await;
    }
    let Some(peer) = &state.peer else {
        return send_error(
            send,
            ErrorCode::Unauthorized,
            "enrol first: this connection has no certificate",
        )
        .await;
    };
    if let Control::Hello(h) = &request {
        if h.protocol_version != PROTOCOL_VERSION {
            let msg = format!(
                "protocol version {} is not {PROTOCOL_VERSION}: upgrade",
                h.protocol_version
            );
            return send_error(send, ErrorCode::Unsupported, msg).await;
        }
        if h.role != peer.role || h.node_id != peer.node.as_str() {
            return send_error(
                send,
                ErrorCode::BadRequest,
                "hello does not match your certificate",
            )
            .await;
        }
        tracing::info!(software = %h.software_version, "hello");
        service.catalog.hello(peer, state.remote, h);
        if let Ok(mut slot) = state.hello.lock() {
            *slot = Some(h.clone());
        }
        return send_frame(
            send,
            &Frame::Control(Control::HelloAck(service.hello.clone())),
        )
        .await;
    }
    if state.hello.lock().map(|h| h.is_none()).unwrap_or(true) {
        return send_error(send, ErrorCode::BadRequest, "send Hello first").await;
    }
    let allowed = service.catalog.allowed(peer);
    match request {
        Control::GetManifest(m) => {
            answer_manifest(send, service, state, peer, &allowed, m, None).await
        }
        Control::GetManifestAgainst { master, base } => {
            answer_manifest(send, service, state, peer, &allowed, master, Some(base)).await
        }
        Control::GetPeers(m) => {
            if !allowed.contains(&m) {
                let msg = format!(
                    "{} {} is not scheduled for {}",
                    m.name, m.version, peer.site
                );
                return send_error(send, ErrorCode::Forbidden, msg).await;
            }
            match service.catalog.peers(peer, &m) {
                Some(list) => send_frame(send, &Frame::Control(Control::Peers(list))).await,
                None => {
                    send_error(send, ErrorCode::Unsupported, "this server tracks no peers").await
                }
            }
        }
        Control::ListScheduled => {
            send_frame(send, &Frame::Control(Control::Scheduled(allowed))).await
        }
        Control::GetPlan => {
            let plan = service.catalog.plan(peer);
            send_frame(send, &Frame::Control(Control::Plan(Box::new(plan)))).await
        }
        Control::Has(ids) => {
            let store = service.store.clone();
            let permitted = permitted(service, state, peer, &ids);
            let bits = tokio::task::spawn_blocking(move || {
                ids.iter()
                    .zip(permitted)
                    .map(|(id, ok)| ok && store.has(id).unwrap_or(false))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(transport)?;
            send_frame(
                send,
                &Frame::Control(Control::HasReply(wire::pack_bits(&bits))),
            )
            .await
        }
        Control::HasSince {
            master,
            epoch,
            since,
        } => {
            let holdings = if allowed.contains(&master) {
                service.catalog.holdings_since(&master, epoch, since)
            } else {
                // Not offered to this peer (any more): nothing, and forget what was said.
                Some(wire::Holdings {
                    epoch: wire::NOT_OFFERED_EPOCH,
                    ..wire::Holdings::default()
                })
            };
            let Some(mut holdings) = holdings else {
                return send_error(send, ErrorCode::Unsupported, "this server answers Has only")
                    .await;
            };
            let ok = permitted(service, state, peer, &holdings.ids);
            let mut ok = ok.into_iter();
            holdings.ids.retain(|_| ok.next().unwrap_or(false));
            send_frame(send, &Frame::Control(Control::HasNew(holdings))).await
        }
        Control::GetChunks(ids) => {
            if permitted(service, state, peer, &ids).iter().any(|ok| !ok) {
                return send_error(
                    send,
                    ErrorCode::Forbidden,
                    "chunks of masters not scheduled for your site",
                )
                .await;
            }
            // Within the server's chunk requests, or refused at once: the asker goes elsewhere.
            let _answering = match &state.shared.chunk_requests {
                Some(places) => match places.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        return send_error(
                            send,
                            ErrorCode::Busy,
                            "busy serving other peers: ask another holder or again soon",
                        )
                        .await;
                    }
                },
                None => None,
            };
            // Chunks go after any other reply on the connection (a plan, a report's ack, what
            // a peer holds): on a full link those small answers jump the queue of chunk bytes
            // instead of waiting seconds behind them.
            let _ = send.set_priority(CHUNK_PRIORITY);
            send_chunks(ids, send, service, state).await
        }
        Control::Report(status) => {
            (service.on_report)(peer, *status);
            send_frame(send, &Frame::Control(Control::Ack)).await
        }
        other => {
            let msg = format!("{:?} is not a request", std::mem::discriminant(&other));
            send_error(send, ErrorCode::BadRequest, msg).await
        }
    }
}

/// A manifest `peer` may read: in full, or as a delta to `base` when the catalogue holds a
/// manifest of the same master with that hash.
async fn answer_manifest(
    send: &mut quinn::SendStream,
    service: &Service,
    state: &ConnState,
    peer: &Identity,
    allowed: &[MasterRef],
    m: MasterRef,
    base: Option<[u8; 32]>,
) -> Result<(), ExchangeError> {
    if !allowed.contains(&m) {
        let msg = format!(
            "{} {} is not scheduled for {}",
            m.name, m.version, peer.site
        );
        return send_error(send, ErrorCode::Forbidden, msg).await;
    }
    // Each reply is a copy of the manifest (up to tens of MiB): few at once.
    let _permits = (
        state.manifests.clone().acquire_owned().await,
        state.shared.manifests.clone().acquire_owned().await,
    );
    let Some(bytes) = service.catalog.manifest(&m) else {
        let msg = format!("no manifest {} {}", m.name, m.version);
        return send_error(send, ErrorCode::NotFound, msg).await;
    };
    let base_bytes = base.and_then(|h| service.catalog.manifest_with_hash(&m.name, &h));
    let reply = match (base, base_bytes) {
        (Some(base), Some(from)) => {
            let delta = tokio::task::spawn_blocking(move || {
                crate::manifest_delta::encode(&from, &bytes).map_err(|e| (e, bytes))
            })
            .await
            .map_err(transport)?;
            match delta {
                Ok(zstd) => Frame::ManifestDelta { base, zstd },
                Err((e, bytes)) => {
                    tracing::warn!(error = %e, master = %m, "cannot make a manifest delta: sending it whole");
                    Frame::Manifest(bytes)
                }
            }
        }
        _ => Frame::Manifest(bytes),
    };
    let frame = wire::encode_to_vec(&reply)?;
    write_paced(send, &frame, &mut Pace::default()).await
}

/// Which of `ids` belong to masters `peer` may read.
pub(super) fn permitted(
    service: &Service,
    state: &ConnState,
    peer: &Identity,
    ids: &[ChunkId],
) -> Vec<bool> {
    let Ok(mut guard) = state.allowed_chunks.lock() else {
        return vec![false; ids.len()];
    };
    let (taken_for, lists) = &mut *guard;
    let allowed = service.catalog.allowed(peer);
    if allowed != *taken_for {
        // The schedule changed since: take the lists of the masters now allowed (again next
        // time if a manifest is not there yet).
        *lists = allowed
            .iter()
            .filter_map(|m| state.shared.lists.get(service.catalog.as_ref(), m))
            .collect();
        *taken_for = if lists.len() == allowed.len() {
            allowed
        } else {
            Vec::new()
        };
    }
    ids.iter()
        .map(|id| lists.iter().any(|l| l.binary_search(id).is_ok()))
        .collect()
}
