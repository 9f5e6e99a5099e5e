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
//!
//! Here: errors, transport settings and endpoints. One file per idea beside it: `server`
//! (`Service`, `serve`), `admission` (`Limits` and what a server's connections share), `chunks`
//! (sending chunks at the peer's pace), `enrol` (`Enroller`, answering `Enroll`, `enroll`,
//! `renew`), `catalog`, `client` (`Connection`), `rate` (`TokenBucket`, `RateLimit`), `fetch`
//! (`fetch_missing`), `remote` (`RemoteStore`), `served` (`Served`: what went to
//! each site).

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
use crate::ids::{ChunkId, MasterName, NodeId, SiteId};
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

/// The same, sending with congestion controller `congestion` (the controller's `far_listen`, the
/// benchmarks). A certificate renewed with [`set_server_tls`] goes back to the default controller:
/// not for an endpoint whose certificate is renewed while it runs (relays, agents).
pub fn server_endpoint_with(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    congestion: Congestion,
) -> Result<quinn::Endpoint, ExchangeError> {
    let mut config = quic_server_config(tls)?;
    let mut t = server_transport_config();
    congestion.apply(&mut t);
    config.transport_config(Arc::new(t));
    quinn::Endpoint::server(config, addr).map_err(transport)
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

mod admission;
mod catalog;
mod chunks;
mod client;
mod congestion;
mod enrol;
mod fetch;
mod pipeline;
mod rate;
mod remote;
mod served;
mod server;
#[cfg(test)]
mod tests;

pub use self::admission::*;
pub use self::catalog::*;
use self::chunks::*;
pub use self::client::*;
pub use self::congestion::Congestion;
pub use self::enrol::*;
pub use self::fetch::*;
pub use self::pipeline::{paced, MAX_PACED_IN_FLIGHT};
pub use self::rate::*;
pub use self::remote::*;
pub use self::served::*;
pub use self::server::*;
