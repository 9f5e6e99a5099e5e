//! The chunk-exchange protocol over QUIC: a server, a client, and the stores built on them
//! (see `docs/PROTOCOL.md`).
//!
//! One request per bidirectional stream: the client writes one control frame and finishes its
//! side; the server answers with one or more frames and finishes. Many streams run at once on one
//! connection, which is how a transfer keeps several requests in flight.
//!
//! The server knows a peer only by its certificate ([`Identity`]); a peer without one may only enrol.
//! It serves manifests and chunks of the masters its [`Catalog`] allows that peer, reads every chunk
//! through [`ChunkStore::get`] (so a rotten disk answers "lacking", it does not spread), and sends
//! chunks in their stored form. The client checks every chunk against its id before it is used or
//! stored: a peer that sends wrong bytes is logged by identity and the chunk is asked for again.
//!
//! A server's memory is bounded whoever connects, before authentication and after: it admits
//! handshakes and connections within its [`Limits`], grants a connection without a certificate two
//! streams and small windows, checks a request's kind and size from its 5-byte header before
//! making room for it ([`wire::peek_request`]), holds chunk frames in memory only from the store
//! read until QUIC takes them (a few per connection, a few more per server), and resets a reply
//! whose peer reads too slowly. Not guaranteed: that an enrolled peer cannot slow others down
//! within its own share (its few chunk readers, its largest request, its connections).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::chunk::VerifiedChunk;
use crate::clock::Clock;
use crate::ids::{ChunkId, NodeId, SiteId};
use crate::keys::PublicKey;
use crate::manifest::Manifest;
use crate::store::{ChunkStore, StoreError, StoreSize};
use crate::trust::{
    self, Ca, Credentials, EnrolReply, Identity, Revoked, Token, TrustError, Validity, SERVER_NAME,
};
use crate::wire::{
    self, Control, ErrorCode, Frame, Hello, MasterRef, Role, Status, WireError, PROTOCOL_VERSION,
};

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection or a stream failed: reconnect and resume.
    #[error("transport: {0}")]
    Transport(String),
    /// The peer answered with an error.
    #[error("{peer} refused: {code:?}: {message}")]
    Refused {
        peer: String,
        code: ErrorCode,
        message: String,
    },
    /// The peer sent something the protocol does not allow.
    #[error("protocol violation by {peer}: {what}")]
    Protocol { peer: String, what: String },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The peer kept sending wrong bytes for these chunks.
    #[error("{peer} sent corrupt data for {} chunks, even when asked again", .chunks.len())]
    PeerLied { peer: String, chunks: Vec<ChunkId> },
}

fn transport(e: impl std::fmt::Display) -> ExchangeError {
    ExchangeError::Transport(e.to_string())
}

/// Transport settings shared by both ends: windows large enough for a 1 Gbit/s LAN or a long WAN,
/// small enough that a server's memory stays bounded with many peers.
fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // The send window bounds what a server holds per peer; a server shrinks it as peers join
    // (`SendShares`), so that 20 NUCs fetching at once do not cost the relay 20 large buffers.
    t.stream_receive_window(quinn::VarInt::from_u32(2 << 20));
    t.receive_window(quinn::VarInt::from_u32(8 << 20));
    t.send_window(SHARE_MAX);
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(quinn::VarInt::from_u32(30_000).into()));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(64));
    t
}

/// Streams a connection without a certificate may have open at once: it may only enrol. An
/// enrolled peer's connection is raised to [`PEER_STREAMS`] once its certificate is seen (QUIC
/// lets a limit be raised, never lowered, so every connection starts with this one).
pub const UNENROLLED_STREAMS: u32 = 2;
/// Streams an enrolled peer may have open at once.
const PEER_STREAMS: u32 = 64;
/// The largest request of a peer without a certificate: an `Enroll` (a token, a node id, a public
/// key) is well under 1 KiB.
pub const MAX_ENROL_REQUEST: u32 = 16 << 10;
/// What a connection without a certificate may have sent and the server not yet read, all its
/// streams together.
const UNENROLLED_RECEIVE_WINDOW: u32 = 32 << 10;
/// The same for an enrolled peer: requests are small (64 ids are 2 KiB); the rare large one (up to
/// [`wire::MAX_CONTROL`]) takes a few round trips more.
const PEER_RECEIVE_WINDOW: u32 = 64 << 10;
/// A connection without a certificate gets one reply per request, `Enrolled` being the largest (a
/// few KiB).
const UNENROLLED_SEND_WINDOW: u64 = 64 << 10;
/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection without a certificate is closed after this long, whatever it does: enrolment is
/// one request (passed upstream by a relay).
const UNENROLLED_LIFETIME: Duration = Duration::from_secs(60);
/// A request (one control frame) must have arrived whole by then.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's transport: small windows and two streams until the peer's certificate is seen (see
/// [`serve_connection`]); no unidirectional streams and no datagrams, which the protocol does not
/// use and which quinn would otherwise buffer for the peer.
fn server_transport_config() -> quinn::TransportConfig {
    let mut t = transport_config();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(UNENROLLED_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.datagram_receive_buffer_size(None);
    t.stream_receive_window(quinn::VarInt::from_u32(PEER_RECEIVE_WINDOW));
    t.receive_window(quinn::VarInt::from_u32(UNENROLLED_RECEIVE_WINDOW));
    t
}

/// A QUIC endpoint that serves with `tls` (from [`crate::trust::Credentials::server_config`]).
pub fn server_endpoint(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
) -> Result<quinn::Endpoint, ExchangeError> {
    quinn::Endpoint::server(quic_server_config(tls)?, addr).map_err(transport)
}

/// Serves new connections of `endpoint` with `tls` from now on (a renewed certificate); the
/// connections already open keep theirs.
pub fn set_server_tls(
    endpoint: &quinn::Endpoint,
    tls: rustls::ServerConfig,
) -> Result<(), ExchangeError> {
    endpoint.set_server_config(Some(quic_server_config(tls)?));
    Ok(())
}

fn quic_server_config(tls: rustls::ServerConfig) -> Result<quinn::ServerConfig, ExchangeError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(transport)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(server_transport_config()));
    // Connection attempts `serve` has not taken yet, and what quinn keeps of them meanwhile
    // (`serve` takes each at once and refuses it beyond [`Limits::handshakes`]).
    config.max_incoming(1024);
    config.incoming_buffer_size(64 << 10);
    config.incoming_buffer_size_total(2 << 20);
    Ok(config)
}

/// A QUIC endpoint for outgoing connections only.
pub fn client_endpoint() -> Result<quinn::Endpoint, ExchangeError> {
    let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
    quinn::Endpoint::client(bind).map_err(transport)
}

/// What a server may hand out, and to whom.
pub trait Catalog: Send + Sync {
    /// The signed bytes of a manifest, if known.
    fn manifest(&self, master: &MasterRef) -> Option<Vec<u8>>;
    /// When a chunk the store lacks is expected (Unix seconds), if the server knows: a relay
    /// answers "not yet" instead of "lacking" for chunks it will fetch in its next window.
    fn expected(&self, _id: &ChunkId) -> Option<i64> {
        None
    }
    /// The master versions `peer` may read: for a relay or agent, those scheduled for its site.
    fn allowed(&self, peer: &Identity) -> Vec<MasterRef>;
    /// The fetch plan of `peer`'s site; by default every allowed version, no deadline, no schedule.
    fn plan(&self, peer: &Identity) -> wire::SitePlan {
        wire::SitePlan {
            entries: unplanned(self.allowed(peer)),
            ..wire::SitePlan::default()
        }
    }
}

/// A plan with no deadlines: every master version, fetch whenever allowed, never evict.
fn unplanned(masters: Vec<MasterRef>) -> Vec<wire::PlanEntry> {
    masters
        .into_iter()
        .map(|master| wire::PlanEntry {
            master,
            deadline: i64::MAX,
            pin_until: i64::MAX,
            override_until: None,
        })
        .collect()
}

/// A catalog held in memory and changed while serving (the controller feeds it from its calendar).
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    inner: RwLock<CatalogInner>,
}

#[derive(Debug, Default)]
struct CatalogInner {
    manifests: HashMap<(String, String), Vec<u8>>,
    by_site: HashMap<String, Vec<MasterRef>>,
    plans: HashMap<String, wire::SitePlan>,
}

impl MemoryCatalog {
    pub fn add_manifest(&self, master: MasterRef, bytes: Vec<u8>) {
        if let Ok(mut c) = self.inner.write() {
            c.manifests.insert((master.name, master.version), bytes);
        }
    }

    /// Replaces the whole catalogue at once (a reload).
    pub fn replace_with(&self, fresh: MemoryCatalog) {
        if let (Ok(mut c), Ok(f)) = (self.inner.write(), fresh.inner.into_inner()) {
            *c = f;
        }
    }

    /// Sets `site`'s fetch plan; what it may read becomes the plan's master versions.
    pub fn set_plan(&self, site: &str, plan: wire::SitePlan) {
        if let Ok(mut c) = self.inner.write() {
            c.by_site.insert(
                site.to_owned(),
                plan.entries.iter().map(|e| e.master.clone()).collect(),
            );
            c.plans.insert(site.to_owned(), plan);
        }
    }

    /// Replaces what `site` may read.
    pub fn schedule(&self, site: &str, masters: Vec<MasterRef>) {
        if let Ok(mut c) = self.inner.write() {
            c.by_site.insert(site.to_owned(), masters);
        }
    }
}

impl Catalog for MemoryCatalog {
    fn manifest(&self, m: &MasterRef) -> Option<Vec<u8>> {
        let c = self.inner.read().ok()?;
        c.manifests
            .get(&(m.name.clone(), m.version.clone()))
            .cloned()
    }

    fn allowed(&self, peer: &Identity) -> Vec<MasterRef> {
        let Ok(c) = self.inner.read() else {
            return Vec::new();
        };
        match peer.role {
            Role::Controller => c
                .manifests
                .keys()
                .map(|(name, version)| MasterRef {
                    name: name.clone(),
                    version: version.clone(),
                })
                .collect(),
            Role::Relay | Role::Agent => c
                .by_site
                .get(peer.site.as_str())
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn plan(&self, peer: &Identity) -> wire::SitePlan {
        let planned = self
            .inner
            .read()
            .ok()
            .and_then(|c| c.plans.get(peer.site.as_str()).cloned());
        planned.unwrap_or_else(|| wire::SitePlan {
            entries: unplanned(self.allowed(peer)),
            ..wire::SitePlan::default()
        })
    }
}

/// Issues certificates (the controller only). Whether a request gets one is the controller's
/// [`EnrolPolicy`]: a token, the DSI's approval, or a site opened for new NUCs; this type only
/// checks the request's form and signs what the policy allows.
pub struct Enroller {
    pub ca: Ca,
    /// The manifest-signing key nodes pin at enrolment (endorsed by `ca` for each reply).
    pub signing_key: PublicKey,
    /// During a CA rotation, the previous CA's certificate and the cross-certificates between it
    /// and `ca` (`trust::bridge`), sent with every certificate issued. Empty otherwise.
    pub bridge: Vec<Vec<u8>>,
    /// How long an issued certificate is valid.
    pub lifetime_secs: u64,
    /// The time certificates are dated from.
    pub clock: Clock,
    pub policy: Box<dyn EnrolPolicy>,
}

/// How an enrolment request reached the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// From the node itself, with no certificate (it must bring a token).
    Direct,
    /// Passed on by an enrolled relay, for an agent of the relay's site.
    Relay(Identity),
    /// From the node itself over its authenticated connection (a renewal).
    Itself(Identity),
}

/// One enrolment request, checked for form, as the policy sees it.
#[derive(Clone, Debug)]
pub struct EnrolAsk {
    pub token: Option<Token>,
    pub role: Role,
    pub node: NodeId,
    /// The raw P-256 point the certificate will bind.
    pub public_key: Vec<u8>,
    /// The node's MAC as it says (shown to the DSI, never trusted).
    pub mac: String,
    /// A renewal of an enrolled node's certificate.
    pub renewal: bool,
    pub via: Via,
}

/// What the policy decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrolDecision {
    /// Sign a certificate for the node at this site.
    Issue {
        site: SiteId,
    },
    /// Not yet: the DSI has to let it in (the message says how).
    Pending(String),
    Refuse(String),
}

/// The controller's rules for who gets a certificate.
pub trait EnrolPolicy: Send + Sync {
    /// Decides on `ask` at `now` (Unix seconds), and records what it must (a pending request, a
    /// used token).
    fn decide(&self, ask: &EnrolAsk, now: i64) -> EnrolDecision;
    /// Records a certificate issued on `decide`'s word; an error withholds it from the node.
    fn issued(
        &self,
        identity: &Identity,
        serial: &[u8],
        validity: Validity,
        now: i64,
    ) -> Result<(), String>;
}

/// An enrolment request a server passes on (a relay, to the controller, for an agent of its site).
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub token: String,
    pub role: Role,
    pub node_id: String,
    pub public_key: Vec<u8>,
    pub mac: String,
    pub renewal: bool,
}

/// What the upstream answered: the certificate, the CA and the endorsed signing key; or why not.
pub type EnrollOutcome = Result<EnrolReply, (ErrorCode, String)>;

/// Passes enrolment requests upstream (a relay's link to the controller).
pub type EnrollForwarder = Box<
    dyn Fn(
            EnrollRequest,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = EnrollOutcome> + Send>>
        + Send
        + Sync,
>;

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Enroller({:?})", self.ca)
    }
}

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
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Service({} {})", self.hello.role, self.hello.node_id)
    }
}

/// What a server admits at once, so that its memory stays bounded whoever connects, before and
/// after authentication (see "Limits" in `docs/PROTOCOL.md` for what each costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections with a certificate.
    pub peers: usize,
    /// Connections with the same certificate identity.
    pub per_node: usize,
    /// Connections without a certificate (they may only enrol).
    pub unenrolled: usize,
    /// Handshakes under way; connection attempts beyond are refused.
    pub handshakes: usize,
    /// Chunk frames read from the store and not yet handed to QUIC, whole server.
    pub readers: usize,
    /// The same, per connection: a peer that reads slowly holds at most these.
    pub readers_per_peer: usize,
    /// Manifest replies being sent at once (each is a copy of the manifest), whole server.
    pub manifests: usize,
    /// Bytes of requests received and being answered, whole server (a connection holds at most
    /// one largest request's worth).
    pub request_bytes: usize,
    /// What all connections may have queued or unacknowledged: each one's QUIC send window is an
    /// equal share, within [`SHARE_MIN`] and [`SHARE_MAX`].
    pub send_budget: u64,
}

impl Limits {
    /// A relay: a site's NUCs on its LAN, within 64 MiB.
    pub const RELAY: Limits = Limits {
        peers: 256,
        per_node: 4,
        unenrolled: 32,
        handshakes: 64,
        readers: 16,
        readers_per_peer: 4,
        manifests: 2,
        // Twice what one identity can hold (`per_node` connections of one largest request): a
        // single enrolled peer cannot keep the others' requests waiting.
        request_bytes: 8 << 20,
        send_budget: 8 << 20,
    };
    /// The controller: every site's relay, within 256 MiB.
    pub const CONTROLLER: Limits = Limits {
        peers: 1024,
        per_node: 8,
        unenrolled: 64,
        handshakes: 128,
        readers: 32,
        readers_per_peer: 4,
        manifests: 4,
        request_bytes: 16 << 20,
        send_budget: 64 << 20,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::RELAY
    }
}

/// Serves `endpoint` within [`Limits::default`] (a relay's) until `shutdown`; see [`serve_with`].
pub async fn serve(endpoint: quinn::Endpoint, service: Arc<Service>, shutdown: CancellationToken) {
    serve_with(endpoint, service, Limits::default(), shutdown).await
}

/// Serves `endpoint` within `limits` until `shutdown`; then stops accepting connections and
/// requests, lets the requests under way finish for up to 5 seconds, and closes the endpoint.
pub async fn serve_with(
    endpoint: quinn::Endpoint,
    service: Arc<Service>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let shared = Arc::new(Shared::new(limits));
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
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
        tracker.spawn(async move {
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
        });
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

/// What the connections of one server share.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    lists: ChunkLists,
    sends: SendShares,
    admitted: Mutex<Admissions>,
    /// Chunk frames in memory, whole server ([`Limits::readers`]).
    readers: Arc<Semaphore>,
    manifests: Arc<Semaphore>,
    request_bytes: Arc<Semaphore>,
}

impl Shared {
    fn new(limits: Limits) -> Shared {
        Shared {
            limits,
            lists: ChunkLists::default(),
            sends: SendShares::default(),
            admitted: Mutex::default(),
            readers: Arc::new(Semaphore::new(limits.readers)),
            manifests: Arc::new(Semaphore::new(limits.manifests)),
            request_bytes: Arc::new(Semaphore::new(limits.request_bytes)),
        }
    }
}

/// How many connections of each kind a server holds.
#[derive(Debug, Default)]
struct Admissions {
    handshakes: usize,
    unenrolled: usize,
    peers: usize,
    per_node: HashMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Handshake,
    Unenrolled,
    /// An enrolled peer, by its certificate identity.
    Peer(String),
}

/// A place taken within [`Limits`]; given back when dropped.
#[derive(Debug)]
struct Admitted {
    shared: Arc<Shared>,
    slot: Slot,
}

impl Admitted {
    /// A place of this kind, if there is one left.
    fn take(shared: &Arc<Shared>, slot: Slot) -> Option<Admitted> {
        let limits = &shared.limits;
        let mut a = shared.admitted.lock().ok()?;
        match &slot {
            Slot::Handshake if a.handshakes < limits.handshakes => a.handshakes += 1,
            Slot::Unenrolled if a.unenrolled < limits.unenrolled => a.unenrolled += 1,
            Slot::Peer(node) if a.peers < limits.peers => {
                let n = a.per_node.entry(node.clone()).or_default();
                if *n >= limits.per_node {
                    return None;
                }
                *n += 1;
                a.peers += 1;
            }
            _ => return None,
        }
        Some(Admitted {
            shared: shared.clone(),
            slot,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Ok(mut a) = self.shared.admitted.lock() else {
            return;
        };
        match &self.slot {
            Slot::Handshake => a.handshakes -= 1,
            Slot::Unenrolled => a.unenrolled -= 1,
            Slot::Peer(node) => {
                a.peers -= 1;
                if let Some(n) = a.per_node.get_mut(node) {
                    *n -= 1;
                    if *n == 0 {
                        a.per_node.remove(node);
                    }
                }
            }
        }
    }
}

/// A lone peer's send window: fills 400 Mbit/s at 40 ms round trip.
const SHARE_MAX: u64 = 2 << 20;
/// The least share, whatever the number of peers: 64 KiB fills a 1 Gbit/s LAN (a round trip well
/// under a millisecond). (256 peers of a relay at this share are 16 MiB, twice its budget: the
/// share does not go lower, so that every peer can still be served.)
const SHARE_MIN: u64 = 64 << 10;

/// The live connections of enrolled peers of a server, whose send windows share
/// [`Limits::send_budget`]. 20 NUCs fetching from a relay over a LAN that is the bottleneck fill
/// their windows; this keeps the relay's memory bounded, and a share of 400 KiB (a relay's 8 MiB
/// for 20 NUCs) still fills a 1 Gbit/s LAN.
#[derive(Debug, Default)]
struct SendShares(Mutex<Vec<quinn::Connection>>);

impl SendShares {
    fn join(shared: &Arc<Shared>, conn: &quinn::Connection) -> SendShare {
        if let Ok(mut conns) = shared.sends.0.lock() {
            conns.push(conn.clone());
            Self::rebalance(shared.limits.send_budget, &conns);
        }
        SendShare {
            shared: shared.clone(),
            id: conn.stable_id(),
        }
    }

    fn rebalance(budget: u64, conns: &[quinn::Connection]) {
        let share = (budget / conns.len().max(1) as u64).clamp(SHARE_MIN, SHARE_MAX);
        for c in conns {
            c.set_send_window(share);
        }
    }
}

/// A connection's place in [`SendShares`]; leaving gives its share back to the others.
struct SendShare {
    shared: Arc<Shared>,
    id: usize,
}

impl Drop for SendShare {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.shared.sends.0.lock() {
            conns.retain(|c| c.stable_id() != self.id);
            SendShares::rebalance(self.shared.limits.send_budget, &conns);
        }
    }
}

/// The sorted chunk ids of each master version some connection of a server is allowed to read,
/// built once and shared: a 60 GB master has about a million chunks (32 MB of ids), and a room of
/// 20 NUCs must not cost the relay 20 copies. A list lives as long as a connection holds it.
#[derive(Debug, Default)]
struct ChunkLists(Mutex<HashMap<MasterRef, Weak<Vec<ChunkId>>>>);

/// The sorted, distinct chunk ids of one master version. (A `Vec` inside the `Arc`: a `Weak` to an
/// `Arc<[T]>` would keep the ids' memory allocated after the last connection let go.)
type ChunkList = Arc<Vec<ChunkId>>;

impl ChunkLists {
    /// The chunk ids of `master`, sorted; `None` if the catalog has no readable manifest for it.
    fn get(&self, catalog: &dyn Catalog, master: &MasterRef) -> Option<ChunkList> {
        let mut lists = self.0.lock().ok()?;
        if let Some(list) = lists.get(master).and_then(Weak::upgrade) {
            return Some(list);
        }
        let bytes = catalog.manifest(master)?;
        let unverified = Manifest::decode_unverified(&bytes).ok()?;
        let mut ids: Vec<ChunkId> = unverified.manifest.chunks().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let list: ChunkList = Arc::new(ids);
        lists.retain(|_, weak| weak.strong_count() > 0);
        lists.insert(master.clone(), Arc::downgrade(&list));
        Some(list)
    }
}

struct ConnState {
    peer: Option<Identity>,
    hello: Mutex<Option<Hello>>,
    /// The chunk lists of the masters this peer may read, and the master list they were taken for;
    /// taken again only when that list changes.
    allowed_chunks: Mutex<(Vec<MasterRef>, Vec<ChunkList>)>,
    shared: Arc<Shared>,
    /// This connection's chunk frames in memory ([`Limits::readers_per_peer`]).
    readers: Arc<Semaphore>,
    /// One manifest reply at a time per connection.
    manifests: Arc<Semaphore>,
    /// Bytes of this connection's requests being answered: one largest request.
    request_bytes: Arc<Semaphore>,
}

/// Serves one connection. Before anything else it takes its place within the server's [`Limits`]
/// (closed at once if there is none); a peer with a certificate then gets [`PEER_STREAMS`] and a
/// larger receive window, one without keeps [`UNENROLLED_STREAMS`] and is closed after
/// [`UNENROLLED_LIFETIME`].
async fn serve_connection(
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
const MAX_REQUEST_FRAME: usize = 4 + wire::MAX_CONTROL as usize;

/// Reads one request: the 5-byte header first, checked with [`wire::peek_request`] against
/// `limit`, then room for the body taken from the connection's and the server's request budgets
/// (held until the request is answered), and only then the body. `None` at a clean end of stream.
async fn read_request(
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
struct RequestBudget {
    _connection: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
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

async fn send_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), ExchangeError> {
    let bytes = wire::encode_to_vec(frame)?;
    send.write_all(&bytes).await.map_err(transport)
}

async fn send_error(
    send: &mut quinn::SendStream,
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<(), ExchangeError> {
    let message = message.into();
    tracing::info!(?code, %message, "refused");
    send_frame(send, &Frame::Control(Control::Error { code, message })).await
}

async fn serve_stream(
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

async fn answer(
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
            match service.catalog.manifest(&m) {
                Some(bytes) => {
                    let frame = wire::encode_to_vec(&Frame::Manifest(bytes))?;
                    write_paced(send, &frame, &mut Pace::default()).await
                }
                None => {
                    send_error(
                        send,
                        ErrorCode::NotFound,
                        format!("no manifest {} {}", m.name, m.version),
                    )
                    .await
                }
            }
        }
        Control::ListScheduled => {
            send_frame(send, &Frame::Control(Control::Scheduled(allowed))).await
        }
        Control::GetPlan => {
            let plan = service.catalog.plan(peer);
            send_frame(send, &Frame::Control(Control::Plan(plan))).await
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
        Control::GetChunks(ids) => {
            if permitted(service, state, peer, &ids).iter().any(|ok| !ok) {
                return send_error(
                    send,
                    ErrorCode::Forbidden,
                    "chunks of masters not scheduled for your site",
                )
                .await;
            }
            send_chunks(ids, send, service, state).await
        }
        Control::Report(status) => {
            (service.on_report)(peer, status);
            send_frame(send, &Frame::Control(Control::Ack)).await
        }
        other => {
            let msg = format!("{:?} is not a request", std::mem::discriminant(&other));
            send_error(send, ErrorCode::BadRequest, msg).await
        }
    }
}

/// Sends `ids` in order: per id a chunk frame, `Lacking` or `NotYet`; then `End`.
///
/// A task reads (and verifies) the chunks from the store, one blocking read each, a frame or two
/// ahead of the writer. Every frame read holds a reader of its connection and one of the server
/// ([`Limits::readers_per_peer`], [`Limits::readers`]) until QUIC has taken it: memory does not
/// grow with the number of peers or requests, and a peer that reads slowly holds at most its own
/// few readers, however many streams it opens. A peer that reads too slowly over the request is
/// dropped ([`Pace`]).
async fn send_chunks(
    ids: Vec<ChunkId>,
    send: &mut quinn::SendStream,
    service: &Service,
    state: &ConnState,
) -> Result<(), ExchangeError> {
    type Read = (Result<Vec<u8>, ()>, Option<ReaderPermit>);
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
            Ok(bytes) => write_paced(send, &bytes, &mut pace).await?,
            Err(()) => {
                return send_error(send, ErrorCode::Internal, "the server's store failed").await
            }
        }
    }
    send_frame(send, &Frame::Control(Control::End)).await
}

/// One chunk's frame, verified by the store's `get`; a missing or corrupt one is `Lacking` (or
/// `NotYet`); `Err` if the store failed.
fn read_chunk(store: &dyn ChunkStore, catalog: &dyn Catalog, id: ChunkId) -> Result<Vec<u8>, ()> {
    let lacking = |id: ChunkId| {
        let control = match catalog.expected(&id) {
            Some(expected) => Control::NotYet { id, expected },
            None => Control::Lacking(id),
        };
        wire::encode_to_vec(&Frame::Control(control)).map_err(|_| ())
    };
    match store.get(&id) {
        Ok(chunk) if *chunk.id() == id => {
            Ok(wire::encode_chunk(&id, &chunk.header(), chunk.payload()))
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
struct ReaderPermit {
    _peer: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

/// Chunks read in one trip to the blocking pool at most.
const READ_BATCH: usize = 4;

impl ReaderPermit {
    /// Both permits if both are free now.
    fn try_acquire(peer: &Arc<Semaphore>, server: &Arc<Semaphore>) -> Option<ReaderPermit> {
        let peer = peer.clone().try_acquire_owned().ok()?;
        let server = server.clone().try_acquire_owned().ok()?;
        Some(ReaderPermit {
            _peer: peer,
            _server: server,
        })
    }

    async fn acquire(peer: &Arc<Semaphore>, server: &Arc<Semaphore>) -> Option<ReaderPermit> {
        let peer = peer.clone().acquire_owned().await.ok()?;
        let server = server.clone().acquire_owned().await.ok()?;
        Some(ReaderPermit {
            _peer: peer,
            _server: server,
        })
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The longest a server waits for a peer to take one frame.
const STALLED_PEER: Duration = Duration::from_secs(30);
/// Over a whole reply a peer may keep the server waiting [`PACE_GRACE`] plus the time its bytes
/// take at this rate: 16 KiB/s per request (128 kbit/s; a relay on a 2 Mbit/s WAN with 8 requests
/// in flight reads twice that).
const MIN_PEER_RATE: u64 = 16 << 10;
const PACE_GRACE: Duration = Duration::from_secs(30);

/// How long a reply's peer has kept the server waiting, against what it has been sent. Pure: the
/// caller measures the waits (on tokio's clock).
#[derive(Debug, Default, Clone, Copy)]
struct Pace {
    waited: Duration,
    sent: u64,
}

impl Pace {
    /// How long the peer may take to accept the next `len` bytes; `None` if it is already too slow.
    fn allowance(&self, len: u64) -> Option<Duration> {
        let earned =
            PACE_GRACE + Duration::from_secs_f64((self.sent + len) as f64 / MIN_PEER_RATE as f64);
        let left = earned.checked_sub(self.waited)?;
        (!left.is_zero()).then(|| left.min(STALLED_PEER))
    }

    fn wrote(&mut self, len: u64, took: Duration) {
        self.sent += len;
        self.waited += took;
    }
}

/// Writes `bytes` within what `pace` allows the peer; an error if it takes longer.
async fn write_paced(
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

/// Which of `ids` belong to masters `peer` may read.
fn permitted(service: &Service, state: &ConnState, peer: &Identity, ids: &[ChunkId]) -> Vec<bool> {
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

fn enrolled_frame(reply: EnrolReply) -> Frame {
    Frame::Control(Control::Enrolled {
        certificate_der: reply.certificate_der,
        ca_der: reply.ca_der,
        signing_key: reply.signing.to_wire(),
        bridge: reply.bridge,
    })
}

async fn answer_enroll(
    send: &mut quinn::SendStream,
    service: &Service,
    state: &ConnState,
    request: EnrollRequest,
) -> Result<(), ExchangeError> {
    // An enrolled peer asking for itself may only renew its own certificate.
    let itself = state.peer.as_ref().filter(|p| {
        request.renewal && p.role == request.role && p.node.as_str() == request.node_id
    });
    let Some(enroller) = &service.enroller else {
        // A relay passes on the first contact of a node without a certificate, and the renewal
        // of one of its agents (the only peers it admits).
        let may_forward = match (&state.peer, itself) {
            (None, _) => !request.renewal,
            (Some(_), Some(_)) => true,
            (Some(_), None) => false,
        };
        if let (Some(forward), true) = (&service.forward_enroll, may_forward) {
            tracing::info!(node = %request.node_id.escape_debug(), renewal = request.renewal, "enrolment passed upstream");
            return match forward(request).await {
                Ok(reply) => send_frame(send, &enrolled_frame(reply)).await,
                Err((code, message)) => send_error(send, code, message).await,
            };
        }
        let why = if service.forward_enroll.is_some() {
            "enrolled nodes may only renew their own certificate"
        } else {
            "this server does not enrol nodes"
        };
        return send_error(send, ErrorCode::BadRequest, why).await;
    };
    let via = match (&state.peer, itself) {
        (None, _) if !request.renewal => Via::Direct,
        (Some(_), Some(me)) => Via::Itself(me.clone()),
        (Some(p), None) if p.role == Role::Relay && request.role == Role::Agent => {
            Via::Relay(p.clone())
        }
        _ => {
            return send_error(
                send,
                ErrorCode::BadRequest,
                "already enrolled: only a renewal of your own certificate, or a relay's request for an agent of its site",
            )
            .await
        }
    };
    let ask = match check_ask(&request, via) {
        Ok(ask) => ask,
        Err(message) => return send_error(send, ErrorCode::BadRequest, message).await,
    };
    let now = enroller.clock.now();
    let site = match enroller.policy.decide(&ask, now) {
        EnrolDecision::Issue { site } => site,
        EnrolDecision::Pending(message) => {
            tracing::info!(node = %ask.node, via = ?ask.via, "enrolment pending: {message}");
            return send_error(send, ErrorCode::Pending, message).await;
        }
        EnrolDecision::Refuse(message) => {
            tracing::warn!(node = %ask.node, via = ?ask.via, "enrolment refused: {message}");
            return send_error(send, ErrorCode::Unauthorized, message).await;
        }
    };
    let identity = Identity {
        role: ask.role,
        site,
        node: ask.node.clone(),
    };
    let validity = Validity::starting(now, enroller.lifetime_secs);
    let issued = enroller
        .ca
        .sign_public_key(&identity, &ask.public_key, validity)
        .map_err(|e| e.to_string())
        .and_then(|cert| {
            let serial = crate::trust::certinfo::serial(&cert)
                .ok_or_else(|| "the new certificate has no serial".to_owned())?;
            enroller
                .policy
                .issued(&identity, &serial, validity, now)
                .map(|()| cert)
        });
    match issued {
        Ok(certificate_der) => {
            tracing::info!(%identity, via = ?ask.via, renewal = ask.renewal, "certificate issued");
            let until = now.saturating_add(trust::ENDORSEMENT_SECS);
            match enroller.ca.endorse(&enroller.signing_key, until) {
                Ok(signing) => {
                    let reply = EnrolReply {
                        certificate_der,
                        ca_der: enroller.ca.certificate().to_vec(),
                        signing,
                        bridge: enroller.bridge.clone(),
                    };
                    send_frame(send, &enrolled_frame(reply)).await
                }
                Err(e) => {
                    send_error(send, ErrorCode::Internal, format!("cannot endorse: {e}")).await
                }
            }
        }
        Err(e) => {
            tracing::error!(%identity, error = %e, "cannot issue a certificate");
            send_error(
                send,
                ErrorCode::Internal,
                format!("cannot issue the certificate: {e}"),
            )
            .await
        }
    }
}

/// An enrolment request's form: a valid node id, an uncompressed P-256 point, a token that parses
/// (or none), a MAC of sane length.
fn check_ask(request: &EnrollRequest, via: Via) -> Result<EnrolAsk, String> {
    let node = NodeId::new(&request.node_id).map_err(|e| e.to_string())?;
    if request.public_key.len() != 65 || request.public_key[0] != 4 {
        return Err("the public key is not an uncompressed P-256 point".into());
    }
    let token = match request.token.as_str() {
        "" => None,
        t => Some(t.parse::<Token>().map_err(|e| e.to_string())?),
    };
    if request.mac.len() > 64 || request.mac.chars().any(|c| c.is_control()) {
        return Err("the MAC is not a MAC address".into());
    }
    Ok(EnrolAsk {
        token,
        role: request.role,
        node,
        public_key: request.public_key.clone(),
        mac: request.mac.clone(),
        renewal: request.renewal,
        via,
    })
}

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
    async fn request(
        &self,
        request: Control,
    ) -> Result<(FrameReader, quinn::RecvStream), ExchangeError> {
        let (mut send, recv) = self.conn.open_bi().await.map_err(transport)?;
        send_frame(&mut send, &Frame::Control(request)).await?;
        send.finish().map_err(transport)?;
        Ok((FrameReader::default(), recv))
    }

    /// One request, one reply frame.
    async fn call(&self, request: Control) -> Result<Frame, ExchangeError> {
        let (mut reader, mut recv) = self.request(request).await?;
        match reader.next(&mut recv).await? {
            Some(Frame::Control(Control::Error { code, message })) => {
                Err(self.refused(code, message))
            }
            Some(frame) => Ok(frame),
            None => Err(self.violation("no reply")),
        }
    }

    fn refused(&self, code: ErrorCode, message: String) -> ExchangeError {
        ExchangeError::Refused {
            peer: self.peer.clone(),
            code,
            message,
        }
    }

    fn violation(&self, what: impl Into<String>) -> ExchangeError {
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

    /// The site's schedule and fetch plan, earliest deadline first.
    pub async fn plan(&self) -> Result<wire::SitePlan, ExchangeError> {
        match self.call(Control::GetPlan).await? {
            Frame::Control(Control::Plan(plan)) => Ok(plan),
            _ => Err(self.violation("expected Plan")),
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

    pub async fn report(&self, status: Status) -> Result<(), ExchangeError> {
        match self.call(Control::Report(status)).await? {
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

/// A new node's whole enrolment with a token, straight to the controller: makes its key,
/// connects pinning the token's CA, enrols, checks the reply against that CA
/// ([`trust::accept_enrolment`]) and returns its credentials and the signing key to pin. The
/// caller saves them.
pub async fn enroll(
    addr: SocketAddr,
    token: &str,
    role: Role,
    node_id: &str,
    clock: Clock,
) -> Result<(Credentials, trust::Endorsed), ExchangeError> {
    let parsed: Token = token.parse()?;
    let node = NodeId::new(node_id).map_err(|e| TrustError::Cert(e.to_string()))?;
    let endpoint = client_endpoint()?;
    let conn =
        Connection::connect(&endpoint, addr, trust::enrol_client_config(&parsed, clock)?).await?;
    let (key, public) = trust::node_key()?;
    let reply = conn
        .enroll(EnrollRequest {
            token: token.to_owned(),
            role,
            node_id: node_id.to_owned(),
            public_key: public.clone(),
            mac: String::new(),
            renewal: false,
        })
        .await;
    conn.close();
    endpoint.wait_idle().await;
    Ok(trust::accept_enrolment(
        parsed.ca_fingerprint,
        role,
        &node,
        key,
        &public,
        reply?,
        clock,
    )?)
}

/// Renews `creds` over `conn` (a relay's connection to the controller, an agent's to its relay):
/// a fresh key, the same identity, the reply checked against the CA `creds` already has. A reply
/// naming a manifest-signing key the node's `ring` does not accept at `clock`'s now is refused
/// (keys change by rotation, through the plan). Returns the new credentials and the endorsed key
/// (to add to the ring); the caller saves them.
pub async fn renew(
    conn: &Connection,
    creds: &Credentials,
    ring: &trust::keyring::KeyRing,
    mac: &str,
    clock: Clock,
) -> Result<(Credentials, trust::Endorsed), ExchangeError> {
    let me = creds
        .identity()
        .ok_or_else(|| TrustError::BadEnrolment("our certificate names no identity".into()))?;
    let (key, public) = trust::node_key()?;
    let reply = conn
        .enroll(EnrollRequest {
            token: String::new(),
            role: me.role,
            node_id: me.node.to_string(),
            public_key: public.clone(),
            mac: mac.to_owned(),
            renewal: true,
        })
        .await?;
    let (fresh, signing) = trust::accept_enrolment(
        trust::fingerprint(&creds.ca),
        me.role,
        &me.node,
        key,
        &public,
        reply,
        clock,
    )?;
    if !ring.contains(&signing.key, clock.now()) {
        return Err(TrustError::BadEnrolment(format!(
            "the renewal names the signing key {}, which this node does not accept",
            signing.key.short()
        ))
        .into());
    }
    Ok((fresh, signing))
}

/// A token bucket in bits per second, changeable while running. Pure: time is passed in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    bits_per_sec: u64,
    burst_bits: u64,
    tokens: f64,
    last: Option<std::time::Duration>,
}

impl TokenBucket {
    /// `burst_bits` is how far ahead of the rate a sender may get.
    pub fn new(bits_per_sec: u64, burst_bits: u64) -> TokenBucket {
        TokenBucket {
            bits_per_sec: bits_per_sec.max(1),
            burst_bits: burst_bits.max(1),
            tokens: burst_bits as f64,
            last: None,
        }
    }

    /// Changes the rate and the burst; credit saved up under the old rate is cut to the new burst
    /// (a relay that started unpaced must not go on at full speed on its savings).
    pub fn set_rate(&mut self, bits_per_sec: u64, burst_bits: u64) {
        self.bits_per_sec = bits_per_sec.max(1);
        self.burst_bits = burst_bits.max(1);
        self.tokens = self.tokens.min(self.burst_bits as f64);
    }

    pub fn rate(&self) -> u64 {
        self.bits_per_sec
    }

    /// Takes `bytes` at time `now` (time since any fixed origin); returns how long to wait before
    /// going on (zero if within budget). Debt is allowed, so large items pass at the right rate.
    pub fn take(&mut self, now: std::time::Duration, bytes: u64) -> std::time::Duration {
        if let Some(last) = self.last {
            let elapsed = now.saturating_sub(last).as_secs_f64();
            self.tokens =
                (self.tokens + elapsed * self.bits_per_sec as f64).min(self.burst_bits as f64);
        }
        self.last = Some(now);
        self.tokens -= (bytes * 8) as f64;
        if self.tokens >= 0.0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs_f64(-self.tokens / self.bits_per_sec as f64)
        }
    }
}

/// A shared, async [`TokenBucket`] on tokio's clock (so tests can pause and advance time), with a
/// ceiling over any second: what arrived in the last second, plus what was asked for and has not
/// arrived yet, stays under [`RateLimit::CEILING`] times the rate. The bucket keeps the average;
/// the ceiling keeps the peaks, whatever pauses the sender or the peer take (a peer that stalls
/// and then sends everything asked for at once cannot exceed it, as it was never asked for more).
#[derive(Debug)]
pub struct RateLimit {
    bucket: Mutex<TokenBucket>,
    window: Mutex<Window>,
    origin: tokio::time::Instant,
}

/// Bytes received during the last second, and bytes asked for but not yet received. Pure: times
/// are durations since any fixed origin.
#[derive(Debug, Default)]
struct Window {
    arrived: std::collections::VecDeque<(Duration, u64)>,
    in_window: u64,
    outstanding: u64,
}

impl Window {
    /// Records `bytes` arriving at `now` for a request with `remaining` bytes outstanding;
    /// returns how many of those are settled.
    fn arrived(&mut self, now: Duration, bytes: u64, remaining: u64) -> u64 {
        let settled = bytes.min(remaining);
        self.outstanding -= settled;
        self.arrived.push_back((now, bytes));
        self.in_window += bytes;
        settled
    }

    /// How long until `bytes` more fit under `ceiling` (zero: now); drops what left the window.
    fn wait_for(&mut self, now: Duration, bytes: u64, ceiling: u64) -> Duration {
        while let Some(&(at, n)) = self.arrived.front() {
            if now.saturating_sub(at) < Duration::from_secs(1) {
                break;
            }
            self.arrived.pop_front();
            self.in_window -= n;
        }
        let used = self.in_window + self.outstanding + bytes;
        if used <= ceiling || (self.in_window == 0 && self.outstanding == 0) {
            return Duration::ZERO;
        }
        // The moment enough of the window's arrivals have left it; if what is outstanding is
        // too much alone, after some of it arrived.
        let mut freed = 0;
        for &(at, n) in &self.arrived {
            freed += n;
            if used - freed <= ceiling {
                return (at + Duration::from_secs(1)).saturating_sub(now);
            }
        }
        Duration::from_millis(5)
    }
}

/// Bytes paid for by [`RateLimit::acquire`] and not yet received; what never arrives is given
/// back when it is dropped.
#[derive(Debug)]
pub struct Ticket<'a> {
    limit: &'a RateLimit,
    remaining: u64,
}

impl Ticket<'_> {
    /// `bytes` of this request arrived now.
    pub fn arrived(&mut self, bytes: u64) {
        let now = self.limit.now();
        if let Ok(mut w) = self.limit.window.lock() {
            self.remaining -= w.arrived(now, bytes, self.remaining);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.limit.window.lock() {
            w.outstanding -= self.remaining;
        }
    }
}

impl RateLimit {
    /// Any second may carry at most this many seconds of the rate.
    pub const CEILING: f64 = 1.05;

    pub fn new(bits_per_sec: u64) -> RateLimit {
        RateLimit {
            bucket: Mutex::new(TokenBucket::new(bits_per_sec, Self::burst(bits_per_sec))),
            window: Mutex::default(),
            origin: tokio::time::Instant::now(),
        }
    }

    /// 25 ms of the rate may go ahead of it (at least 64 KiB).
    fn burst(bits_per_sec: u64) -> u64 {
        (bits_per_sec / 40).max(8 * (64 << 10))
    }

    pub fn set_rate(&self, bits_per_sec: u64) {
        if let Ok(mut b) = self.bucket.lock() {
            b.set_rate(bits_per_sec, Self::burst(bits_per_sec));
        }
    }

    pub fn rate(&self) -> u64 {
        self.bucket.lock().map(|b| b.rate()).unwrap_or(1)
    }

    fn now(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.origin)
    }

    /// Waits until `bytes` may be asked for: the bucket's pace, then the ceiling over a second.
    pub async fn acquire(&self, bytes: u64) -> Ticket<'_> {
        let now = self.now();
        let wait = self
            .bucket
            .lock()
            .map(|mut b| b.take(now, bytes))
            .unwrap_or_default();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let ceiling = (self.rate() as f64 / 8.0 * Self::CEILING) as u64;
        loop {
            let wait = match self.window.lock() {
                Ok(mut w) => {
                    let wait = w.wait_for(self.now(), bytes, ceiling);
                    if wait.is_zero() {
                        w.outstanding += bytes;
                    }
                    wait
                }
                Err(_) => Duration::ZERO,
            };
            if wait.is_zero() {
                return Ticket {
                    limit: self,
                    remaining: bytes,
                };
            }
            tokio::time::sleep(wait).await;
        }
    }
}

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
const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Bytes a chunk costs on the wire beyond its payload: header, chunk id and frame header.
const FRAMING: u64 = (crate::chunk::HEADER_LEN + 32 + 5) as u64;

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
    let mut report = FetchReport {
        needed: unique.len() as u64,
        ..FetchReport::default()
    };
    let (want, bytes_total): (Vec<(ChunkId, u64)>, u64) = {
        let (store, have) = (store.clone(), opts.have.clone());
        tokio::task::spawn_blocking(move || {
            let missing: Vec<_> = unique
                .iter()
                .filter(|c| !have.contains(&c.id) && !store.has(&c.id).unwrap_or(false))
                .collect();
            let bytes = missing
                .iter()
                .map(|c| u64::from(c.stored_len) + crate::chunk::HEADER_LEN as u64)
                .sum();
            let want = missing
                .iter()
                .map(|c| (c.id, u64::from(c.stored_len) + FRAMING))
                .collect();
            (want, bytes)
        })
        .await
        .map_err(transport)?
    };
    report.already_had = report.needed - want.len() as u64;
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
    // Under a rate limit a request asks for about 25 ms of the rate, and only about a round trip's
    // worth of requests is outstanding: what was paid for but not yet received is what arrives in
    // one lump after a stall, so it bounds how far any second of the link can exceed the rate.
    let (batch, in_flight) = match &rate {
        Some(rate) if !want.is_empty() => {
            let avg = (bytes_total / want.len() as u64).max(1);
            let batch = ((rate.rate() / 8 / 40) / avg).clamp(1, opts.batch.max(1) as u64);
            let request_secs = (batch * avg * 8) as f64 / rate.rate().max(1) as f64;
            let round_trips = conn.rtt().as_secs_f64() / request_secs.max(1e-3);
            // A round trip's worth plus a little slack for the client's own pauses.
            let in_flight = (round_trips.ceil() as usize + 3).clamp(2, opts.in_flight.max(2));
            (batch as usize, in_flight)
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
                            t = rate.acquire(cost) => ticket = Some(t),
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
mod futures_lite_join {
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

/// A read-only [`ChunkStore`] over a connection. Its methods block: call them from blocking
/// threads (`spawn_blocking`), never from inside the async runtime.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    conn: Connection,
    runtime: tokio::runtime::Handle,
}

impl RemoteStore {
    pub fn new(conn: Connection, runtime: tokio::runtime::Handle) -> RemoteStore {
        RemoteStore { conn, runtime }
    }
}

fn remote_io(e: ExchangeError) -> StoreError {
    StoreError::Io {
        path: "remote".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl ChunkStore for RemoteStore {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let bits = self
            .runtime
            .block_on(self.conn.has(&[*id]))
            .map_err(remote_io)?;
        Ok(bits.first().copied().unwrap_or(false))
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let mut out: Option<Result<VerifiedChunk, StoreError>> = None;
        self.runtime
            .block_on(self.conn.get_chunks(&[*id], |r, _| {
                out = Some(match r {
                    Received::Chunk(c) => Ok(c),
                    Received::Lacking(id) | Received::NotYet { id, .. } => {
                        Err(StoreError::Missing(id))
                    }
                    Received::Lied { id, reason } => Err(StoreError::Invalid {
                        id,
                        path: None,
                        reason: crate::chunk::ChunkError::Decompress {
                            declared: 0,
                            detail: format!("sent by {}: {reason}", self.conn.peer()),
                        },
                    }),
                });
                Ok(())
            }))
            .map_err(remote_io)?;
        out.unwrap_or(Err(StoreError::Missing(*id)))
    }

    fn put(&self, _chunk: &VerifiedChunk) -> Result<(), StoreError> {
        Err(StoreError::Layout("a remote store is read-only".into()))
    }

    fn remove(&self, _id: &ChunkId) -> Result<(), StoreError> {
        Err(StoreError::Layout("a remote store is read-only".into()))
    }

    fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        Err(StoreError::Layout(
            "a remote store cannot list its chunks".into(),
        ))
    }

    fn size(&self) -> Result<StoreSize, StoreError> {
        Err(StoreError::Layout(
            "a remote store cannot report its size".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One simulated transfer at 1 MB/s for 10 s, 1 ms steps: ten 25 KB requests outstanding,
    /// each answered 20 ms after it was made, but the peer stalls from 2.0 s to 2.4 s and then
    /// sends all it owes at once. Returns the most bytes that arrived in any second, and in all.
    fn stalled_peer(ceiling: Option<u64>) -> (u64, u64) {
        const REQ: u64 = 25_000;
        let mut bucket = TokenBucket::new(8_000_000, 8_000_000 / 40);
        let mut window = Window::default();
        let mut owed: Vec<Duration> = Vec::new();
        let mut ready_at: Option<Duration> = None;
        let mut arrivals: Vec<(Duration, u64)> = Vec::new();
        for ms in 0..10_000u64 {
            let now = Duration::from_millis(ms);
            if !(2_000..2_400).contains(&ms) {
                owed.retain(|&due| {
                    if due > now {
                        return true;
                    }
                    window.arrived(now, REQ, REQ);
                    arrivals.push((now, REQ));
                    false
                });
            }
            while owed.len() < 10 {
                let at = *ready_at.get_or_insert_with(|| now + bucket.take(now, REQ));
                let fits = ceiling.is_none_or(|c| window.wait_for(now, REQ, c).is_zero());
                if now < at || !fits {
                    break;
                }
                window.outstanding += REQ;
                owed.push(now + Duration::from_millis(20));
                ready_at = None;
            }
        }
        let busiest = arrivals
            .iter()
            .map(|&(start, _)| {
                arrivals
                    .iter()
                    .filter(|&&(t, _)| t >= start && t < start + Duration::from_secs(1))
                    .map(|&(_, n)| n)
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        (busiest, arrivals.iter().map(|&(_, n)| n).sum())
    }

    /// Writes 64 KiB frames to a peer that takes `per_frame` for each; the frames sent before the
    /// pace ends the reply, or `None` if `frames` all went through.
    fn paced(per_frame: Duration, frames: u64) -> Option<u64> {
        let mut pace = Pace::default();
        for n in 0..frames {
            let allowance = pace.allowance(64 << 10)?;
            if per_frame > allowance {
                return Some(n);
            }
            pace.wrote(64 << 10, per_frame);
        }
        None
    }

    #[test]
    fn a_reply_ends_when_its_peer_reads_too_slowly_over_it_not_per_write() {
        // 64 KiB/s (a slow WAN shared by requests) is served to the end, however long.
        assert_eq!(paced(Duration::from_secs(1), 100_000), None);
        // So is a peer that keeps the server waiting less than a frame takes at the least rate.
        assert_eq!(paced(Duration::from_millis(3_900), 100_000), None);
        // 8 KiB/s: every write is far under the 30 s a single frame may take, but the reply ends
        // once the peer is the grace (30 s) behind 16 KiB/s: after 7 frames it has kept the server
        // waiting 56 s and earned 62 s, so the 8th may take 6 s, not 8.
        assert_eq!(paced(Duration::from_secs(8), 100_000), Some(7));
        // A peer that takes longer than 30 s for one frame is dropped at once.
        assert_eq!(paced(Duration::from_secs(31), 10), Some(0));
    }

    #[test]
    fn a_server_admits_within_its_limits_and_gives_places_back() {
        let limits = Limits {
            peers: 3,
            per_node: 2,
            unenrolled: 1,
            handshakes: 1,
            ..Limits::RELAY
        };
        let shared = Arc::new(Shared::new(limits));
        let peer = |n: &str| Slot::Peer(n.to_owned());
        let h = Admitted::take(&shared, Slot::Handshake).expect("first handshake");
        assert!(Admitted::take(&shared, Slot::Handshake).is_none());
        drop(h);
        assert!(Admitted::take(&shared, Slot::Handshake).is_some());
        let u = Admitted::take(&shared, Slot::Unenrolled).expect("one unenrolled");
        assert!(Admitted::take(&shared, Slot::Unenrolled).is_none());
        // Connections without a certificate take nothing from enrolled peers.
        let a1 = Admitted::take(&shared, peer("a")).expect("a");
        let a2 = Admitted::take(&shared, peer("a")).expect("a again");
        assert!(Admitted::take(&shared, peer("a")).is_none(), "per node");
        let b = Admitted::take(&shared, peer("b")).expect("b");
        assert!(Admitted::take(&shared, peer("c")).is_none(), "peers");
        drop((a1, u));
        assert!(Admitted::take(&shared, peer("c")).is_some());
        assert!(Admitted::take(&shared, Slot::Unenrolled).is_some());
        drop((a2, b));
        let a = shared.admitted.lock().expect("lock");
        assert_eq!((a.peers, a.unenrolled, a.handshakes), (0, 0, 0));
        assert!(a.per_node.is_empty());
    }

    #[test]
    fn connections_share_one_chunk_list_per_master_while_any_holds_it() {
        let manifest = crate::manifest::tests::sample();
        let master = MasterRef {
            name: manifest.name.to_string(),
            version: manifest.version.to_string(),
        };
        let catalog = MemoryCatalog::default();
        let key = crate::keys::SigningKey::generate().expect("key");
        catalog.add_manifest(master.clone(), manifest.clone().sign(&key).bytes().to_vec());
        let lists = ChunkLists::default();
        let first = lists.get(&catalog, &master).expect("list");
        // Sorted and without the repeated chunk, so that a lookup is a binary search.
        let mut ids: Vec<ChunkId> = manifest.chunks().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(&first[..], &ids[..]);
        let second = lists.get(&catalog, &master).expect("list");
        assert!(Arc::ptr_eq(&first, &second), "a second copy was built");
        // Once no connection holds it, it is freed and built again when asked for.
        drop((first, second));
        assert!(lists.0.lock().expect("lock")[&master].upgrade().is_none());
        assert_eq!(lists.get(&catalog, &master).expect("list").len(), 3);
        let unknown = MasterRef {
            name: "other".into(),
            version: "1".into(),
        };
        assert!(lists.get(&catalog, &unknown).is_none());
    }

    #[test]
    fn a_stalled_peer_cannot_push_any_second_over_the_ceiling() {
        // Without the ceiling, what was owed lands on top of a full second.
        let (busiest, _) = stalled_peer(None);
        assert!(busiest > 1_150_000, "{busiest}");
        let ceiling = (1_000_000.0 * RateLimit::CEILING) as u64;
        let (busiest, total) = stalled_peer(Some(ceiling));
        assert!(busiest <= ceiling, "{busiest} B in one second");
        // And the link is still used: the stall costs its 0.4 s, little more.
        assert!(total >= 9_000_000, "{total} B in 10 s");
    }

    #[test]
    fn the_bucket_paces_to_its_rate_in_simulated_time() {
        // 8 Mbit/s = 1 MB/s, burst 1 Mbit.
        let mut b = TokenBucket::new(8_000_000, 1_000_000);
        let mut now = Duration::ZERO;
        let mut sent = 0u64;
        // Send 64 KiB items for 10 simulated seconds, waiting as told.
        while now < Duration::from_secs(10) {
            let wait = b.take(now, 65536);
            now += wait;
            sent += 65536;
        }
        let rate = sent as f64 / now.as_secs_f64();
        assert!(
            (rate - 1_000_000.0).abs() / 1_000_000.0 < 0.03,
            "rate {rate}"
        );
        // Halving the rate halves the pace from then on.
        b.set_rate(4_000_000, 500_000);
        let start = now;
        let mut sent = 0u64;
        while now < start + Duration::from_secs(10) {
            now += b.take(now, 65536);
            sent += 65536;
        }
        let rate = sent as f64 / (now - start).as_secs_f64();
        assert!((rate - 500_000.0).abs() / 500_000.0 < 0.03, "rate {rate}");
    }

    #[test]
    fn lowering_the_rate_cuts_the_credit_saved_under_the_old_one() {
        // Regression: a relay starts unpaced (no plan yet) with a huge burst; its first plan sets
        // the site's cap, and the savings of the unpaced start must not carry over.
        let mut b = TokenBucket::new(100_000_000_000, 10_000_000_000);
        b.take(Duration::ZERO, 0);
        b.set_rate(4_000_000, 400_000);
        // 5 MB at 4 Mbit/s is 10 s, less the 50 KB burst.
        let wait = b.take(Duration::from_millis(1), 5_000_000);
        assert!((wait.as_secs_f64() - 9.9).abs() < 0.05, "{wait:?}");
    }

    #[test]
    fn idle_time_buys_at_most_the_burst() {
        let mut b = TokenBucket::new(8_000, 8_000); // 1 KB/s, 1 KB burst
        assert_eq!(b.take(Duration::ZERO, 1000), Duration::ZERO);
        // An hour idle, then 10 KB: only 1 KB was saved up.
        let wait = b.take(Duration::from_secs(3600), 10_000);
        assert!((wait.as_secs_f64() - 9.0).abs() < 0.01, "{wait:?}");
    }
}
