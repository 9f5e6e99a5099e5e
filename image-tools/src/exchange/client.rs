//! A client's `Connection`: hello, manifest, plan, has, chunks, reports, enrolment requests.

use super::*;

/// A client's connection to a server.
#[derive(Clone, Debug)]
pub struct Connection {
    conn: quinn::Connection,
    peer: String,
}

/// What came back for one requested chunk.
#[derive(Debug)]
pub enum Received {
    Chunk(VerifiedChunk),
    /// The peer does not hold it.
    Lacking(ChunkId),
    /// The peer does not hold it yet, and expects to by this time (Unix seconds).
    NotYet {
        id: ChunkId,
        expected: i64,
    },
    /// The peer sent bytes that are not this chunk.
    Lied {
        id: ChunkId,
        reason: String,
    },
}

/// A manifest as [`Connection::manifest_against`] received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestReply {
    /// The manifest's signed bytes (not verified yet).
    pub bytes: Vec<u8>,
    /// It came as a delta.
    pub delta: bool,
    /// Bytes of its frame's body on the wire: the delta (and its base's hash) or the manifest.
    pub wire_bytes: u64,
}

impl Connection {
    /// Connects to `addr` with `tls` (from `Credentials::client_config` or `enrol_client_config`).
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        tls: rustls::ClientConfig,
    ) -> Result<Connection, ExchangeError> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(transport)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config()));
        let conn = endpoint
            .connect_with(config, addr, SERVER_NAME)
            .map_err(transport)?
            .await
            .map_err(transport)?;
        let peer = conn
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| chain.first().and_then(|c| Identity::from_certificate(c)))
            .map_or_else(|| addr.to_string(), |id| id.to_string());
        Ok(Connection { conn, peer })
    }

    /// The server, as its certificate names it.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn close(&self) {
        self.conn.close(0u32.into(), b"done");
    }

    /// The connection is closed (by either side, or timed out): a new one is needed.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// The connection's current round-trip estimate.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// UDP bytes (sent, received) on this connection so far, every overhead included: what the
    /// link carried.
    pub fn udp_bytes(&self) -> (u64, u64) {
        let s = self.conn.stats();
        (s.udp_tx.bytes, s.udp_rx.bytes)
    }

    /// Waits until the connection is closed (by either side, or by a dead link's idle timeout).
    pub async fn closed(&self) -> String {
        self.conn.closed().await.to_string()
    }

    /// Sends one request and returns the reply stream.
    pub(super) async fn request(
        &self,
        request: Control,
    ) -> Result<(FrameReader, quinn::RecvStream), ExchangeError> {
        let (mut send, recv) = self.conn.open_bi().await.map_err(transport)?;
        send_frame(&mut send, &Frame::Control(request)).await?;
        send.finish().map_err(transport)?;
        Ok((FrameReader::default(), recv))
    }

    /// One request, one reply frame.
    pub(super) async fn call(&self, request: Control) -> Result<Frame, ExchangeError> {
        let (mut reader, mut recv) = self.request(request).await?;
        match reader.next(&mut recv).await? {
            Some(Frame::Control(Control::Error { code, message })) => {
                Err(self.refused(code, message))
            }
            Some(frame) => Ok(frame),
            None => Err(self.violation("no reply")),
        }
    }

    pub(super) fn refused(&self, code: ErrorCode, message: String) -> ExchangeError {
        ExchangeError::Refused {
            peer: self.peer.clone(),
            code,
            message,
        }
    }

    pub(super) fn violation(&self, what: impl Into<String>) -> ExchangeError {
        ExchangeError::Protocol {
            peer: self.peer.clone(),
            what: what.into(),
        }
    }

    pub async fn hello(&self, me: Hello) -> Result<Hello, ExchangeError> {
        match self.call(Control::Hello(me)).await? {
            Frame::Control(Control::HelloAck(h)) => Ok(h),
            _ => Err(self.violation("expected HelloAck")),
        }
    }

    /// A manifest's signed bytes (verify them with `VerifiedManifest::open` before use).
    pub async fn manifest(&self, master: &MasterRef) -> Result<Vec<u8>, ExchangeError> {
        match self.call(Control::GetManifest(master.clone())).await? {
            Frame::Manifest(bytes) => Ok(bytes),
            _ => Err(self.violation("expected a manifest")),
        }
    }

    /// A manifest's signed bytes, asked for as a delta to `base` (the signed bytes of a manifest
    /// of the same master this side holds): the server sends a delta if it holds `base`, the
    /// whole manifest if not; a server that predates deltas refuses the request and it is asked
    /// for whole. Verify the bytes with `VerifiedManifest::open_with` before use, as any
    /// manifest's: a delta against other bytes rebuilds something whose signature fails.
    pub async fn manifest_against(
        &self,
        master: &MasterRef,
        base: &[u8],
    ) -> Result<ManifestReply, ExchangeError> {
        let hash = crate::manifest_delta::base_hash(base);
        let ask = Control::GetManifestAgainst {
            master: master.clone(),
            base: hash,
        };
        match self.call(ask).await {
            Ok(Frame::Manifest(bytes)) => Ok(ManifestReply {
                wire_bytes: bytes.len() as u64,
                delta: false,
                bytes,
            }),
            Ok(Frame::ManifestDelta { base: named, zstd }) if named == hash => {
                let limit = crate::manifest::MAX_MANIFEST_BYTES;
                let bytes = crate::manifest_delta::rebuild(base, &zstd, limit)
                    .map_err(|e| self.violation(format!("manifest delta: {e}")))?;
                Ok(ManifestReply {
                    wire_bytes: zstd.len() as u64 + 32,
                    delta: true,
                    bytes,
                })
            }
            Ok(_) => Err(self.violation("expected a manifest or a delta to the one named")),
            // A server from before deltas cannot read the request.
            Err(ExchangeError::Refused {
                code: ErrorCode::BadRequest,
                message,
                ..
            }) => {
                tracing::debug!(peer = %self.peer, %message, "no manifest deltas here: asking for it whole");
                let bytes = self.manifest(master).await?;
                Ok(ManifestReply {
                    wire_bytes: bytes.len() as u64,
                    delta: false,
                    bytes,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The site's schedule and fetch plan, earliest deadline first.
    pub async fn plan(&self) -> Result<wire::SitePlan, ExchangeError> {
        match self.call(Control::GetPlan).await? {
            Frame::Control(Control::Plan(plan)) => Ok(*plan),
            _ => Err(self.violation("expected Plan")),
        }
    }

    /// The tracker's list of the site's agents holding or fetching `master`, and our stripe.
    pub async fn peers(&self, master: &MasterRef) -> Result<wire::PeerList, ExchangeError> {
        match self.call(Control::GetPeers(master.clone())).await? {
            Frame::Control(Control::Peers(list)) => Ok(list),
            _ => Err(self.violation("expected Peers")),
        }
    }

    pub async fn scheduled(&self) -> Result<Vec<MasterRef>, ExchangeError> {
        match self.call(Control::ListScheduled).await? {
            Frame::Control(Control::Scheduled(list)) => Ok(list),
            _ => Err(self.violation("expected Scheduled")),
        }
    }

    pub async fn has(&self, ids: &[ChunkId]) -> Result<Vec<bool>, ExchangeError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(wire::MAX_IDS) {
            match self.call(Control::Has(batch.to_vec())).await? {
                Frame::Control(Control::HasReply(bits)) => out.extend(
                    wire::unpack_bits(&bits, batch.len())
                        .ok_or_else(|| self.violation("bitmap length"))?,
                ),
                _ => return Err(self.violation("expected HasReply")),
            }
        }
        Ok(out)
    }

    /// What a peer agent took in of `master` since position `since` of its log `epoch`
    /// ([`wire::Holdings`]); refused by a server that keeps no such log (ask [`Self::has`]).
    pub async fn has_since(
        &self,
        master: &MasterRef,
        epoch: u64,
        since: u64,
    ) -> Result<wire::Holdings, ExchangeError> {
        let ask = Control::HasSince {
            master: master.clone(),
            epoch,
            since,
        };
        match self.call(ask).await? {
            Frame::Control(Control::HasNew(h)) => Ok(h),
            _ => Err(self.violation("expected HasNew")),
        }
    }

    pub async fn report(&self, status: Status) -> Result<(), ExchangeError> {
        match self.call(Control::Report(Box::new(status))).await? {
            Frame::Control(Control::Ack) => Ok(()),
            _ => Err(self.violation("expected Ack")),
        }
    }

    /// Asks for `ids` (at most [`wire::MAX_IDS`]) and calls `on` for each as it arrives, verified.
    pub async fn get_chunks(
        &self,
        ids: &[ChunkId],
        mut on: impl FnMut(Received, usize) -> Result<(), ExchangeError>,
    ) -> Result<(), ExchangeError> {
        let (mut reader, mut recv) = self.request(Control::GetChunks(ids.to_vec())).await?;
        let mut pending: HashSet<ChunkId> = ids.iter().copied().collect();
        loop {
            let frame = reader.next(&mut recv).await?;
            match frame {
                Some(Frame::Chunk { id, stored }) => {
                    if !pending.remove(&id) {
                        return Err(self.violation(format!(
                            "sent chunk {} that was not asked for",
                            id.short()
                        )));
                    }
                    let len = stored.len();
                    let received = match VerifiedChunk::from_stored(id, &stored) {
                        Ok(chunk) => Received::Chunk(chunk),
                        Err(reason) => {
                            tracing::warn!(peer = %self.peer, chunk = %id, %reason, "peer sent a corrupt chunk");
                            Received::Lied {
                                id,
                                reason: reason.to_string(),
                            }
                        }
                    };
                    on(received, len)?;
                }
                Some(Frame::Control(Control::Lacking(id))) if pending.remove(&id) => {
                    on(Received::Lacking(id), 0)?
                }
                Some(Frame::Control(Control::NotYet { id, expected })) if pending.remove(&id) => {
                    on(Received::NotYet { id, expected }, 0)?
                }
                Some(Frame::Control(Control::End)) if pending.is_empty() => return Ok(()),
                Some(Frame::Control(Control::Error { code, message })) => {
                    return Err(self.refused(code, message))
                }
                Some(_) => return Err(self.violation("unexpected frame in a chunk reply")),
                None => return Err(ExchangeError::Transport("reply ended early".into())),
            }
        }
    }

    /// Sends an enrolment (or renewal) request: returns the certificate issued, the CA, and the
    /// endorsed manifest-signing key, none of it checked yet ([`trust::accept_enrolment`]).
    pub async fn enroll(&self, request: EnrollRequest) -> Result<EnrolReply, ExchangeError> {
        let request = Control::Enroll {
            token: request.token,
            role: request.role,
            node_id: request.node_id,
            public_key: request.public_key,
            mac: request.mac,
            renewal: request.renewal,
        };
        match self.call(request).await? {
            Frame::Control(Control::Enrolled {
                certificate_der,
                ca_der,
                signing_key,
                bridge,
            }) => {
                let signing = trust::Endorsed::from_wire(&signing_key)
                    .ok_or_else(|| self.violation("signing key is not an Ed25519 public key"))?;
                Ok(EnrolReply {
                    certificate_der,
                    ca_der,
                    signing,
                    bridge,
                })
            }
            _ => Err(self.violation("expected Enrolled")),
        }
    }
}
