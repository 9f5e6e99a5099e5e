//! The chunk-exchange protocol's frames: a sans-IO codec (see `docs/PROTOCOL.md`).
//!
//! A frame is `length: u32 LE | kind: u8 | body`, where `length` counts the kind byte and the body.
//! [`decode`] reads the length and kind first and refuses a frame above its kind's limit before
//! waiting for, or allocating, its body; it returns `Ok(None)` while a frame is incomplete. Control
//! bodies are postcard-encoded serde structs (the only serde on the wire, all in this module); chunk
//! bodies are binary (the id, then the stored form exactly as stores keep it), so a chunk is never
//! re-encoded between disk and network.
//!
//! Guarantees: no input makes the decoder panic or allocate more than its kind's limit; an unknown
//! kind or a body that does not parse is a typed error. Not guaranteed here: that a chunk's bytes
//! match its id (that is checked where the chunk is used: `VerifiedChunk::from_stored`).

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkId, IdError, MasterName, MasterVersion};

/// Bumped on any incompatible change; both sides send theirs in `Hello`.
pub const PROTOCOL_VERSION: u16 = 4;
/// The TLS ALPN of this protocol version.
pub const ALPN: &[u8] = b"nightcast/4";
/// Control frames (requests, replies, reports) are at most this long.
pub const MAX_CONTROL: u32 = 1 << 20;
/// A chunk frame: id, stored-form header and a payload of at most the largest chunk.
pub const MAX_CHUNK_FRAME: u32 =
    1 + 32 + crate::chunk::HEADER_LEN as u32 + crate::chunk::MAX_CHUNK_LEN;
/// A manifest frame: the manifest's own limit.
pub const MAX_MANIFEST_FRAME: u32 = 1 + crate::manifest::MAX_MANIFEST_BYTES as u32;
/// A manifest delta frame: the base's hash and at most a manifest's size of zstd.
pub const MAX_MANIFEST_DELTA_FRAME: u32 = MAX_MANIFEST_FRAME + 32;
/// Ids in one `Has` or `GetChunks` request.
pub const MAX_IDS: usize = 16_384;

/// Who a peer is. Carried in its certificate; `Hello` must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Controller,
    Relay,
    Agent,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Controller => "controller",
            Role::Relay => "relay",
            Role::Agent => "agent",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub software_version: String,
    pub role: Role,
    pub node_id: String,
    /// Optional features the sender understands, by name; unknown ones are ignored.
    pub capabilities: Vec<String>,
}

impl Hello {
    /// This program's `Hello` as `role` `node`: this protocol version, this software version, no
    /// optional features.
    pub fn new(role: Role, node: &crate::ids::NodeId) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            role,
            node_id: node.to_string(),
            capabilities: Vec::new(),
        }
    }
}

/// A master version, as named on the wire, in plans and in reports. Both parts are checked
/// names (safe in file names), so a frame naming `..` is refused when it is read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MasterRef {
    pub name: MasterName,
    pub version: MasterVersion,
}

impl MasterRef {
    pub fn new(name: &str, version: &str) -> Result<Self, IdError> {
        Ok(MasterRef {
            name: MasterName::new(name)?,
            version: MasterVersion::new(version)?,
        })
    }
}

/// "name version", as the DSI reads it in logs and status pages.
impl std::fmt::Display for MasterRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

pub use crate::report::Status;

/// Why a request was not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame or request made no sense; the connection is closed after this.
    BadRequest,
    /// The peer's role or site may not have this.
    Forbidden,
    /// Unknown master or version.
    NotFound,
    /// The server's store failed.
    Internal,
    /// Protocol version or capability mismatch.
    Unsupported,
    /// Enrolment refused (unknown, used or expired token; a node id that exists elsewhere; a
    /// revoked node).
    Unauthorized,
    /// Enrolment waits for the DSI: the node is pending until it is approved, its site is opened
    /// for new NUCs, or it comes with a token. Ask again later.
    Pending,
    /// The server is answering as many chunk requests as it takes at once (a NUC serving its
    /// room): ask another holder, or this one again in a moment. Nothing is wrong with either.
    Busy,
}

/// Every control message. Variants may be added at the end only (postcard tags by index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    Hello(Hello),
    HelloAck(Hello),
    /// Ask for one manifest.
    GetManifest(MasterRef),
    /// Ask for the manifests this peer is scheduled to need (its rights).
    ListScheduled,
    Scheduled(Vec<MasterRef>),
    /// Which of these chunks do you hold?
    Has(Vec<ChunkId>),
    /// One bit per asked id, in order (bit i of byte i/8, least significant first).
    HasReply(Vec<u8>),
    /// Send these chunks; the reply is a stream of `Chunk` / `Lacking` frames, then `End`.
    GetChunks(Vec<ChunkId>),
    /// The server does not hold this chunk (ask elsewhere).
    Lacking(ChunkId),
    End,
    Report(Box<Status>),
    Ack,
    /// First contact of a node with no certificate: a one-time token (or empty), its public key
    /// (the raw P-256 point; the node keeps the private key) and its MAC (shown to the DSI while
    /// it is pending). With `renewal`, an enrolled node asks, over its authenticated connection,
    /// for a new certificate for the same identity before its own expires.
    Enroll {
        token: String,
        role: Role,
        node_id: String,
        public_key: Vec<u8>,
        mac: String,
        renewal: bool,
    },
    /// The certificate issued at enrolment, the CA that signed it (both DER), and the
    /// manifest-signing public key the node pins from now on, endorsed by the CA (checked against
    /// the CA the node pinned).
    Enrolled {
        certificate_der: Vec<u8>,
        ca_der: Vec<u8>,
        signing_key: EndorsedKey,
        /// During a CA rotation, the previous CA's certificate and the cross-certificates
        /// between the two (`trust::bridge`); empty otherwise.
        bridge: Vec<Vec<u8>>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Ask for this site's fetch plan.
    GetPlan,
    /// The site's schedule and its master versions in fetch order (earliest deadline first).
    /// Boxed: a plan is far larger than any other control (postcard encodes it the same).
    Plan(Box<SitePlan>),
    /// The server does not hold this chunk yet and expects to by `expected` (Unix seconds): a
    /// relay outside its night window, asked for a chunk it has not fetched.
    NotYet {
        id: ChunkId,
        expected: i64,
    },
    /// An agent asks its relay (the tracker) which agents of the site hold or are fetching this
    /// master version, and which part it should fetch from the relay itself.
    GetPeers(MasterRef),
    Peers(PeerList),
    /// Which chunks of `master` did you take in since position `since` of your log `epoch` (0 and
    /// 0 at first)? What a peer agent asks another instead of `Has` about every chunk it still
    /// wants: only what is new travels. A server that keeps no such log refuses it.
    HasSince {
        master: MasterRef,
        epoch: u64,
        since: u64,
    },
    /// The answer to `HasSince`.
    HasNew(Holdings),
    /// Ask for one manifest, as a delta to the manifest whose bytes (signature included) have
    /// this BLAKE3 hash (`manifest_delta::base_hash`), one the asker holds of the same master. The
    /// answer is a `ManifestDelta` frame if the server holds that base, else a `Manifest` frame.
    /// A server that predates it answers `Error(BadRequest)`: ask with `GetManifest`.
    GetManifestAgainst {
        master: MasterRef,
        base: [u8; 32],
    },
}

/// The epoch of a `HasNew` from a server that does not offer the version (to this asker, or at
/// all now): it holds nothing to give.
pub const NOT_OFFERED_EPOCH: u64 = u64::MAX;

/// What a peer agent took in of a master version, since a position of its log (`HasSince`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    /// It holds every chunk of the version (a complete image): `ids` is then empty.
    pub complete: bool,
    /// Its log's epoch: when it is not the one asked about, the log started again (the server
    /// emptied its cache, or stopped offering the version): forget what it said before and read
    /// `ids` as its whole holding from position 0.
    pub epoch: u64,
    /// The chunks it took in since, in the order it took them (at most [`MAX_IDS`]).
    pub ids: Vec<ChunkId>,
    /// Where to ask from next time.
    pub next: u64,
}

/// The capability by which an agent tells its relay, in `Hello`, the UDP port it serves its peers
/// on: `peer-port=7105`. A relay that does not know it ignores it; the address a peer is given is
/// the connection's remote IP with this port.
pub const PEER_PORT_CAPABILITY: &str = "peer-port=";

impl Hello {
    /// This hello advertising a peer port ([`PEER_PORT_CAPABILITY`]).
    pub fn with_peer_port(mut self, port: u16) -> Hello {
        self.capabilities
            .push(format!("{PEER_PORT_CAPABILITY}{port}"));
        self
    }

    /// The peer port it advertises, if any (the first well-formed one, not 0).
    pub fn peer_port(&self) -> Option<u16> {
        self.capabilities
            .iter()
            .filter_map(|c| c.strip_prefix(PEER_PORT_CAPABILITY)?.parse().ok())
            .find(|&p| p != 0)
    }
}

/// The tracker's answer to `GetPeers`: the site's agents that hold or are fetching a master
/// version (never the asker), and the asker's stripe: of the master's distinct chunks, in manifest
/// order, cut into `stripes` equal runs, the asker fetches run `stripe` from the relay first and
/// the rest from its peers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    pub peers: Vec<PeerEntry>,
    pub stripe: u32,
    pub stripes: u32,
}

/// One agent of the site, where it serves its peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub node: String,
    pub addr: std::net::SocketAddr,
    /// It holds the whole master (else it is fetching it).
    pub complete: bool,
}

/// What a relay needs to run its site unattended, kept by the relay for when the controller is away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePlan {
    /// IANA time zone of the site.
    pub tz: String,
    /// Night windows in local time, e.g. `22:00-06:00`.
    pub windows: Vec<String>,
    /// WAN cap in Mbit/s.
    pub cap_mbit: u64,
    pub entries: Vec<PlanEntry>,
    /// Each room's upcoming sessions, in start order: what the agents run, and when.
    #[serde(default)]
    pub rooms: Vec<RoomPlan>,
    /// Which agent sits at which seat; an agent of the site that is in no binding is a spare.
    #[serde(default)]
    pub seats: Vec<SeatBinding>,
    /// Serial numbers (hex) of the revoked, unexpired certificates of the site's agents: the
    /// relay refuses them at the handshake, also while the controller is away.
    #[serde(default)]
    pub revoked: Vec<String>,
    /// The manifest-signing keys in force, each endorsed by the CA until a time: the current one
    /// and, during a rotation, the previous ones. Relays and agents check each endorsement against
    /// the CA they pinned before they accept manifests signed by the key.
    #[serde(default)]
    pub signing_keys: Vec<EndorsedKey>,
    /// The CA the controller issues certificates with now (DER): a node certified by another CA
    /// that its bridge reaches renews its certificate (`trust::bridge::moved_on`).
    #[serde(default)]
    pub current_ca: Vec<u8>,
    /// During a CA rotation, the previous CA's certificate and the cross-certificates between
    /// it and the current one (`trust::bridge`); empty otherwise. A node keeps what it can check
    /// of it and drops what a plan no longer carries.
    #[serde(default)]
    pub bridge: Vec<Vec<u8>>,
    /// The WAN cap in Mbit/s the relay paces to while an override lets it fetch outside its night
    /// windows (an emergency in the daytime); 0: the night cap (`cap_mbit`). New fields go at the
    /// end of this struct only: a `Plan` is the last thing in its frame, so an older relay reads
    /// a newer plan and ignores them (postcard reads a struct's fields in order and ignores the
    /// bytes after the last one it knows).
    #[serde(default)]
    pub emergency_cap_mbit: u64,
    /// The emergency pushes in force at the site (overrides with a deadline): the master version,
    /// the deadline the DSI gave and when the controller expects the relay to hold it. The relay
    /// tells its NUCs this when they ask for what it has not fetched yet.
    #[serde(default)]
    pub pushes: Vec<Push>,
    /// What the DSI asked of the site's NUCs (reset, roll back, wake), the last day's: the relay
    /// wakes, each agent carries out its own once (ids only grow; it reports the last it did).
    #[serde(default)]
    pub orders: Vec<Order>,
    /// The machine profiles the catalogue assigns to masters, each signed by the controller's
    /// manifest-signing key (`profile::signed`): the agent checks each before it reads it, so a
    /// relay passes them on but cannot change them.
    #[serde(default)]
    pub profiles: Vec<SignedProfile>,
    /// Which USB devices plugged into the site's NUCs their guests get (`nightcast site set
    /// --usb`).
    #[serde(default)]
    pub usb: crate::profile::UsbPolicy,
    /// The upload cap of each NUC of the site to its peers, in Mbit/s (`nightcast site set
    /// --peer-upload-mbit`; 0: uncapped); none: each NUC's own `peer_upload_mbit`.
    #[serde(default)]
    pub peer_upload_mbit: Option<u64>,
    /// Whether the site's NUCs serve their peers while a session runs on them (`nightcast site
    /// set --peer-share-in-session`); none: each NUC's own `peer_share_in_session`.
    #[serde(default)]
    pub peer_share_in_session: Option<bool>,
    /// The site's link is far (satellite, 4G: `nightcast site set --link far`) and the
    /// controller serves far links with BBR on this UDP port (its `far_listen`): the relay
    /// fetches from the host of its configured `controller` address at this port. None: the
    /// configured address. Only ever taken from the controller's authenticated connection.
    #[serde(default)]
    pub far_port: Option<u16>,
}

/// Something the DSI asked of one NUC, from the console or `nightcast node reset|rollback|wake`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Grows with each order, across the controller: an agent carries out those above the last
    /// it did.
    pub id: u64,
    pub node: String,
    pub kind: OrderKind,
}

/// What an [`Order`] asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// Stop the VM now and throw its writes away (a session that runs starts again, pristine).
    Reset,
    /// Back to the previous master, then reset.
    Rollback,
    /// Wake-on-LAN from the site's relay.
    Wake,
}

impl OrderKind {
    pub const ALL: [OrderKind; 3] = [OrderKind::Wake, OrderKind::Reset, OrderKind::Rollback];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::Reset => "reset",
            OrderKind::Rollback => "rollback",
            OrderKind::Wake => "wake",
        }
    }
}

impl std::str::FromStr for OrderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<OrderKind, String> {
        OrderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("no such order {s:?}: reset, rollback or wake"))
    }
}

/// A master's machine profile as the controller signed it: the statement's bytes (JSON, see
/// `profile::signed::Statement`), the signing key's public half (32 bytes) and the Ed25519
/// signature (64 bytes). Opened only by `profile::signed::open`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProfile {
    pub statement: Vec<u8>,
    pub signer: Vec<u8>,
    pub signature: Vec<u8>,
}

/// An emergency push: `master` must be on every NUC of the rooms that run it by `deadline` (Unix
/// seconds); the controller expects the relay to hold it at `expected`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub master: MasterRef,
    pub deadline: i64,
    pub expected: i64,
}

/// A manifest-signing public key (32 bytes) and the CA's signature over it and `until` (Unix
/// seconds): `trust::Ca::endorse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndorsedKey {
    pub key: Vec<u8>,
    pub until: i64,
    pub endorsement: Vec<u8>,
}

/// A room's upcoming sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomPlan {
    pub room: String,
    pub sessions: Vec<SessionEntry>,
}

/// One session: the master version its NUCs run, from `start` to `end` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    pub master: MasterRef,
    pub start: i64,
    pub end: i64,
}

/// An agent (by node id, its hardware id) bound to a seat of a room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatBinding {
    pub room: String,
    pub seat: String,
    pub node: String,
}

/// One master version a relay must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub master: MasterRef,
    /// Unix seconds by which the relay must hold it (first session start minus the staging margin).
    pub deadline: i64,
    /// Keep its chunks pinned (never evicted) until then: the end of its last scheduled session.
    pub pin_until: i64,
    /// An override lets the relay fetch it outside its night windows until then.
    pub override_until: Option<i64>,
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Control(Control),
    /// A chunk in stored form; the receiver checks it against `id` before use.
    Chunk {
        id: ChunkId,
        stored: Vec<u8>,
    },
    /// A manifest's signed bytes; the receiver verifies them against its pinned key.
    Manifest(Vec<u8>),
    /// A manifest as a zstd delta to the manifest named `base` (the answer to
    /// `GetManifestAgainst`): `manifest_delta::rebuild` gives its signed bytes, which the receiver
    /// verifies like any manifest's.
    ManifestDelta {
        base: [u8; 32],
        zstd: Vec<u8>,
    },
}

const KIND_CONTROL: u8 = 1;
const KIND_CHUNK: u8 = 2;
const KIND_MANIFEST: u8 = 3;
const KIND_MANIFEST_DELTA: u8 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of kind {kind} is {len} bytes, above its {limit}-byte limit")]
    TooLarge { kind: u8, len: u32, limit: u32 },
    #[error("empty frame")]
    Empty,
    #[error("control frame does not parse: {0}")]
    Body(String),
    #[error("chunk frame is shorter than a chunk id")]
    ShortChunk,
    #[error("manifest delta frame is shorter than its base's hash")]
    ShortManifestDelta,
    #[error("request lists {0} ids, above the {MAX_IDS} limit")]
    TooManyIds(usize),
    #[error("a request is a control frame, not a frame of kind {0}")]
    NotARequest(u8),
}

fn limit(kind: u8) -> Result<u32, WireError> {
    match kind {
        KIND_CONTROL => Ok(MAX_CONTROL),
        KIND_CHUNK => Ok(MAX_CHUNK_FRAME),
        KIND_MANIFEST => Ok(MAX_MANIFEST_FRAME),
        KIND_MANIFEST_DELTA => Ok(MAX_MANIFEST_DELTA_FRAME),
        other => Err(WireError::UnknownKind(other)),
    }
}

/// Appends the encoding of `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend([0u8; 4]);
    match frame {
        Frame::Control(c) => {
            out.push(KIND_CONTROL);
            let body = postcard::to_allocvec(c).map_err(|e| WireError::Body(e.to_string()))?;
            out.extend(body);
        }
        Frame::Chunk { id, stored } => {
            out.push(KIND_CHUNK);
            out.extend(id.as_bytes());
            out.extend(stored);
        }
        Frame::Manifest(bytes) => {
            out.push(KIND_MANIFEST);
            out.extend(bytes);
        }
        Frame::ManifestDelta { base, zstd } => {
            out.push(KIND_MANIFEST_DELTA);
            out.extend(base);
            out.extend(zstd);
        }
    }
    let len = out.len() - start - 4;
    let kind = out[start + 4];
    let max = limit(kind)?;
    if len as u64 > u64::from(max) {
        out.truncate(start);
        return Err(WireError::TooLarge {
            kind,
            len: len.min(u32::MAX as usize) as u32,
            limit: max,
        });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// A chunk frame in one allocation, from a chunk's stored header and payload (the sender's hot path).
pub fn encode_chunk(id: &ChunkId, header: &[u8], payload: &[u8]) -> Vec<u8> {
    let len = 1 + 32 + header.len() + payload.len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend((len as u32).to_le_bytes());
    out.push(KIND_CHUNK);
    out.extend(id.as_bytes());
    out.extend(header);
    out.extend(payload);
    out
}

/// Convenience: one frame as a new buffer.
pub fn encode_to_vec(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    encode(frame, &mut out)?;
    Ok(out)
}

/// What the next frame in `buf` will be, once its first 5 bytes are there: its kind and total size
/// (header included), checked against the kind's limit. Lets a reader refuse before buffering.
pub fn peek(buf: &[u8]) -> Result<Option<(u8, usize)>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let kind = buf[4];
    if len == 0 {
        return Err(WireError::Empty);
    }
    let max = limit(kind)?;
    if len > max {
        return Err(WireError::TooLarge {
            kind,
            len,
            limit: max,
        });
    }
    Ok(Some((kind, 4 + len as usize)))
}

/// Like [`peek`], for a request: only a control frame of at most `max` bytes (kind and body, so at
/// most [`MAX_CONTROL`]) passes. A server reads the 5-byte header, checks it with this, and only
/// then makes room for the body (a peer without a certificate gets a smaller `max`).
pub fn peek_request(buf: &[u8], max: u32) -> Result<Option<usize>, WireError> {
    let Some((kind, total)) = peek(buf)? else {
        return Ok(None);
    };
    if kind != KIND_CONTROL {
        return Err(WireError::NotARequest(kind));
    }
    let len = (total - 4) as u32;
    let limit = max.min(MAX_CONTROL);
    if len > limit {
        return Err(WireError::TooLarge { kind, len, limit });
    }
    Ok(Some(total))
}

/// Decodes one frame from the front of `buf`: `Ok(None)` if incomplete, else the frame and the
/// number of bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some((kind, total)) = peek(buf)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[5..total];
    let frame = match kind {
        KIND_CONTROL => {
            let c = decode_control(body).map_err(|e| WireError::Body(e.to_string()))?;
            check_control(&c)?;
            Frame::Control(c)
        }
        KIND_CHUNK => {
            if body.len() < 32 {
                return Err(WireError::ShortChunk);
            }
            let (id, stored) = body.split_at(32);
            let mut bytes = [0u8; 32];
            bytes.copy_from_slice(id);
            Frame::Chunk {
                id: ChunkId::from_bytes(bytes),
                stored: stored.to_vec(),
            }
        }
        KIND_MANIFEST_DELTA => {
            let Some((base, zstd)) = body.split_first_chunk::<32>() else {
                return Err(WireError::ShortManifestDelta);
            };
            Frame::ManifestDelta {
                base: *base,
                zstd: zstd.to_vec(),
            }
        }
        _ => Frame::Manifest(body.to_vec()),
    };
    Ok(Some((frame, total)))
}

/// The postcard tag of [`Control::Plan`] (its index among the variants).
const PLAN_TAG: u8 = 16;

/// Zero bytes appended to a plan from an older sender that ends before the fields it did not know.
const PLAN_TAIL: [u8; 32] = [0; 32];

/// A control body. A plan from an older relay or controller ends before the fields added to
/// [`SitePlan`] since, and postcard, unlike self-describing formats, does not fill in serde
/// defaults: such a plan is read again with zero bytes after it, which postcard reads as `None`,
/// `0`, `false`, empty lists and strings and the first variant of an enum (every field added at
/// the end of `SitePlan` has a default read from zero bytes, up to 32 of them).
fn decode_control(body: &[u8]) -> Result<Control, postcard::Error> {
    match postcard::from_bytes(body) {
        Err(postcard::Error::DeserializeUnexpectedEnd) if body.first() == Some(&PLAN_TAG) => {
            postcard::from_bytes(&[body, &PLAN_TAIL[..]].concat())
        }
        other => other,
    }
}

fn check_control(c: &Control) -> Result<(), WireError> {
    match c {
        Control::Has(ids) | Control::GetChunks(ids) if ids.len() > MAX_IDS => {
            Err(WireError::TooManyIds(ids.len()))
        }
        Control::HasNew(h) if h.ids.len() > MAX_IDS => Err(WireError::TooManyIds(h.ids.len())),
        _ => Ok(()),
    }
}

/// Packs `Has` answers into the reply's bitmap.
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, &b) in bits.iter().enumerate() {
        if b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// Unpacks `n` answers; `None` if the bitmap has the wrong length.
pub fn unpack_bits(bytes: &[u8], n: usize) -> Option<Vec<bool>> {
    (bytes.len() == n.div_ceil(8))
        .then(|| (0..n).map(|i| bytes[i / 8] & (1 << (i % 8)) != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `SitePlan` as relays before emergency pushes knew it.
    #[derive(Debug, Deserialize)]
    struct SitePlanBeforePushes {
        tz: String,
        windows: Vec<String>,
        cap_mbit: u64,
        entries: Vec<PlanEntry>,
        rooms: Vec<RoomPlan>,
        seats: Vec<SeatBinding>,
        revoked: Vec<String>,
        signing_keys: Vec<EndorsedKey>,
        current_ca: Vec<u8>,
        bridge: Vec<Vec<u8>>,
    }

    #[test]
    fn an_older_relay_reads_a_plan_with_an_emergency_cap_and_pushes() {
        let master = MasterRef::new("win10", "2").unwrap();
        let plan = SitePlan {
            tz: "Europe/Paris".into(),
            windows: vec!["22:00-06:00".into()],
            cap_mbit: 20,
            entries: vec![PlanEntry {
                master: master.clone(),
                deadline: 100,
                pin_until: 200,
                override_until: Some(300),
            }],
            rooms: vec![RoomPlan {
                room: "salle-1".into(),
                sessions: vec![],
            }],
            revoked: vec!["0a".into()],
            bridge: vec![vec![7]],
            emergency_cap_mbit: 8,
            pushes: vec![Push {
                master,
                deadline: 400,
                expected: 350,
            }],
            orders: vec![Order {
                id: 7,
                node: "nuc-1".into(),
                kind: OrderKind::Rollback,
            }],
            ..SitePlan::default()
        };
        let frame = encode_to_vec(&Frame::Control(Control::Plan(Box::new(plan.clone())))).unwrap();
        // The frame's body: the control's variant tag (one byte), then the plan.
        let body = &frame[5..];
        assert_eq!(usize::from(body[0]), 16, "Plan is the 17th control");
        let old: SitePlanBeforePushes = postcard::from_bytes(&body[1..]).unwrap();
        assert_eq!(
            (
                old.tz.as_str(),
                old.cap_mbit,
                &old.entries,
                &old.revoked,
                &old.bridge
            ),
            (
                plan.tz.as_str(),
                20,
                &plan.entries,
                &plan.revoked,
                &plan.bridge
            )
        );
        assert_eq!(
            (old.windows.len(), old.rooms.len(), old.seats.len()),
            (1, 1, 0)
        );
        assert!(old.signing_keys.is_empty() && old.current_ca.is_empty());
        // And the new relay reads it whole.
        let (back, _) = decode(&frame).unwrap().unwrap();
        assert_eq!(back, Frame::Control(Control::Plan(Box::new(plan))));
    }

    #[test]
    fn a_plan_with_the_sites_peer_settings_reaches_older_and_newer_readers() {
        let plan = SitePlan {
            tz: "UTC".into(),
            cap_mbit: 20,
            usb: crate::profile::UsbPolicy::Storage,
            ..SitePlan::default()
        };
        // An older relay's plan ends before the peer settings and the far port (three `None`s,
        // one byte each): a newer agent reads it, without them (its own configuration applies).
        let frame = encode_to_vec(&Frame::Control(Control::Plan(Box::new(plan.clone())))).unwrap();
        let body = &frame[5..];
        let framed = |body: &[u8]| {
            let len = (body.len() as u32 + 1).to_le_bytes();
            [&len[..], &[KIND_CONTROL], body].concat()
        };
        let older = framed(&body[..body.len() - 3]);
        let (read, used) = decode(&older).unwrap().unwrap();
        assert_eq!(used, older.len());
        assert_eq!(read, Frame::Control(Control::Plan(Box::new(plan.clone()))));
        // One from before the machine profiles and the USB policy too (two bytes less).
        let oldest = framed(&body[..body.len() - 5]);
        let before = SitePlan {
            usb: crate::profile::UsbPolicy::None,
            ..plan.clone()
        };
        let (read, _) = decode(&oldest).unwrap().unwrap();
        assert_eq!(read, Frame::Control(Control::Plan(Box::new(before))));
        // A truncated control of another kind is still refused.
        let hello = encode_to_vec(&Frame::Control(Control::Hello(Hello::new(
            Role::Agent,
            &crate::NodeId::new("nuc-1").unwrap(),
        ))))
        .unwrap();
        assert!(decode(&framed(&hello[5..hello.len() - 3])).is_err());
        // A newer controller's plan with them: an older relay ignores them (see above), a newer
        // one reads them.
        let plan = SitePlan {
            peer_upload_mbit: Some(40),
            peer_share_in_session: Some(true),
            ..plan
        };
        let frame = encode_to_vec(&Frame::Control(Control::Plan(Box::new(plan.clone())))).unwrap();
        let (back, _) = decode(&frame).unwrap().unwrap();
        assert_eq!(back, Frame::Control(Control::Plan(Box::new(plan))));
    }

    #[test]
    fn a_far_port_reaches_a_newer_relay_and_an_older_one_reads_the_plan_without_it() {
        let wired = SitePlan {
            tz: "UTC".into(),
            cap_mbit: 10,
            peer_upload_mbit: Some(40),
            ..SitePlan::default()
        };
        let far = SitePlan {
            far_port: Some(4437),
            ..wired.clone()
        };
        let frame = encode_to_vec(&Frame::Control(Control::Plan(Box::new(far.clone())))).unwrap();
        let (back, _) = decode(&frame).unwrap().unwrap();
        assert_eq!(back, Frame::Control(Control::Plan(Box::new(far.clone()))));
        // An older relay knows the plan up to the peer settings: it reads the same plan as for
        // a wired site (postcard leaves the bytes after the last field it knows).
        let wired_frame =
            encode_to_vec(&Frame::Control(Control::Plan(Box::new(wired.clone())))).unwrap();
        let known = wired_frame.len() - 5 - 1;
        let body = &frame[5..];
        assert_eq!(&body[..known], &wired_frame[5..5 + known]);
        // A newer relay reads an older controller's plan (no far port): the configured address.
        let len = (known as u32 + 1).to_le_bytes();
        let older = [&len[..], &[KIND_CONTROL], &body[..known]].concat();
        let (read, _) = decode(&older).unwrap().unwrap();
        assert_eq!(read, Frame::Control(Control::Plan(Box::new(wired))));
        // The relay keeps its plan as JSON: one kept by an older relay has no far port.
        let json = serde_json::to_value(&far).unwrap();
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("far_port");
        let kept: SitePlan = serde_json::from_value(old).unwrap();
        assert_eq!(kept.far_port, None);
        assert_eq!(serde_json::from_value::<SitePlan>(json).unwrap(), far);
    }

    fn samples() -> Vec<Frame> {
        let id = ChunkId::of(b"x");
        vec![
            Frame::Control(Control::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                software_version: "0.1.0".into(),
                role: Role::Relay,
                node_id: "relay-lyon".into(),
                capabilities: vec!["zstd".into()],
            })),
            Frame::Control(Control::GetChunks(vec![id; 3])),
            Frame::Control(Control::Peers(PeerList {
                peers: vec![PeerEntry {
                    node: "nuc-2".into(),
                    addr: "192.0.2.7:7105".parse().unwrap(),
                    complete: false,
                }],
                stripe: 1,
                stripes: 4,
            })),
            Frame::Control(Control::HasReply(pack_bits(&[true, false, true]))),
            Frame::Control(Control::Error {
                code: ErrorCode::Forbidden,
                message: "not scheduled for site lyon".into(),
            }),
            Frame::Chunk {
                id,
                stored: vec![1, 2, 3],
            },
            Frame::Manifest(vec![9; 100]),
            Frame::Control(Control::GetManifestAgainst {
                master: MasterRef::new("win10", "2").unwrap(),
                base: [7; 32],
            }),
            Frame::ManifestDelta {
                base: [7; 32],
                zstd: vec![1, 2, 3],
            },
        ]
    }

    #[test]
    fn a_hello_carries_its_peer_port_as_a_capability() {
        let node = crate::ids::NodeId::new("nuc-1").unwrap();
        let plain = Hello::new(Role::Agent, &node);
        assert_eq!(plain.peer_port(), None);
        let h = Hello {
            capabilities: vec!["zstd".into(), "peer-port=x".into(), "peer-port=0".into()],
            ..plain.clone()
        };
        assert_eq!(h.peer_port(), None);
        assert_eq!(h.with_peer_port(7105).peer_port(), Some(7105));
    }

    #[test]
    fn frames_round_trip_even_when_split() {
        let mut stream = Vec::new();
        for f in samples() {
            encode(&f, &mut stream).unwrap();
        }
        // Feed the stream a byte at a time: every prefix is "incomplete", never an error.
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for &b in &stream {
            buf.push(b);
            if let Some((frame, used)) = decode(&buf).unwrap() {
                got.push(frame);
                buf.drain(..used);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, samples());
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused_before_their_body_arrives() {
        // Only the 5-byte header: a 4 GiB control frame is refused at once.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.push(KIND_CONTROL);
        assert!(matches!(decode(&huge), Err(WireError::TooLarge { .. })));
        let mut big_chunk = (MAX_CHUNK_FRAME + 1).to_le_bytes().to_vec();
        big_chunk.push(KIND_CHUNK);
        assert!(matches!(
            decode(&big_chunk),
            Err(WireError::TooLarge { .. })
        ));
        let unknown = [5, 0, 0, 0, 77];
        assert_eq!(decode(&unknown), Err(WireError::UnknownKind(77)));
        assert_eq!(decode(&[0, 0, 0, 0, 1]), Err(WireError::Empty));
        let short_chunk = [4, 0, 0, 0, KIND_CHUNK, 1, 2, 3];
        assert_eq!(decode(&short_chunk), Err(WireError::ShortChunk));
        let short_delta = [4, 0, 0, 0, KIND_MANIFEST_DELTA, 1, 2, 3];
        assert_eq!(decode(&short_delta), Err(WireError::ShortManifestDelta));
        // Too many ids in one request.
        let many = Frame::Control(Control::Has(vec![ChunkId::of(b""); MAX_IDS + 1]));
        let bytes = encode_to_vec(&many).unwrap();
        assert_eq!(decode(&bytes), Err(WireError::TooManyIds(MAX_IDS + 1)));
    }

    #[test]
    fn a_request_is_a_control_frame_within_the_callers_limit_seen_from_its_header() {
        let header = |len: u32, kind: u8| {
            let mut h = len.to_le_bytes().to_vec();
            h.push(kind);
            h
        };
        assert_eq!(
            peek_request(&header(100, KIND_CONTROL)[..4], 1000),
            Ok(None)
        );
        assert_eq!(
            peek_request(&header(100, KIND_CONTROL), 1000),
            Ok(Some(104))
        );
        assert_eq!(
            peek_request(&header(1000, KIND_CONTROL), 1000),
            Ok(Some(1004))
        );
        assert!(matches!(
            peek_request(&header(1001, KIND_CONTROL), 1000),
            Err(WireError::TooLarge { limit: 1000, .. })
        ));
        // Never above MAX_CONTROL, whatever the caller allows.
        assert!(matches!(
            peek_request(&header(MAX_CONTROL + 1, KIND_CONTROL), u32::MAX),
            Err(WireError::TooLarge { .. })
        ));
        // Frames of the other kinds are valid frames, but never requests.
        assert_eq!(
            peek_request(&header(MAX_MANIFEST_FRAME, KIND_MANIFEST), MAX_CONTROL),
            Err(WireError::NotARequest(KIND_MANIFEST))
        );
        assert_eq!(
            peek_request(&header(40, KIND_CHUNK), MAX_CONTROL),
            Err(WireError::NotARequest(KIND_CHUNK))
        );
        assert_eq!(
            peek_request(&header(5, 77), MAX_CONTROL),
            Err(WireError::UnknownKind(77))
        );
    }

    #[test]
    fn the_fast_chunk_encoding_is_the_generic_one() {
        let id = ChunkId::of(b"z");
        let generic = encode_to_vec(&Frame::Chunk {
            id,
            stored: vec![1, 4, 0, 0, 0, 9, 9, 9, 9],
        })
        .unwrap();
        assert_eq!(encode_chunk(&id, &[1, 4, 0, 0, 0], &[9, 9, 9, 9]), generic);
    }

    #[test]
    fn a_server_that_predates_a_request_cannot_read_it() {
        let ask = Frame::Control(Control::GetManifestAgainst {
            master: MasterRef::new("win10", "2").unwrap(),
            base: [7; 32],
        });
        let mut bytes = encode_to_vec(&ask).unwrap();
        // Its tag is one past `HasNew`, the last control before it: a server that predates it
        // reads it as this build reads the next tag, an error its server answers with
        // `BadRequest` (`exchange::server::serve_stream`), and the client asks again the old way.
        assert_eq!(bytes[5], 22);
        bytes[5] = 23;
        assert!(matches!(decode(&bytes), Err(WireError::Body(_))));
    }

    #[test]
    fn bits_pack_and_unpack() {
        let bits = [true, false, false, true, true, false, true, false, true];
        assert_eq!(unpack_bits(&pack_bits(&bits), bits.len()).unwrap(), bits);
        assert!(unpack_bits(&[0], 9).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes: an error, "incomplete", or a frame no longer than the input; never a panic.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(Some((_, used))) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        /// Valid control frames with a corrupted body never panic the decoder.
        #[test]
        fn corrupted_control_bodies_are_errors(i in 0usize..6, at in any::<prop::sample::Index>(), x in 1u8..) {
            let mut bytes = encode_to_vec(&samples()[i]).unwrap();
            let at = 5 + at.index(bytes.len() - 5);
            bytes[at] ^= x;
            let _ = decode(&bytes);
        }
    }

    /// The enrolment messages a node without a certificate sends (`Enroll`) and receives
    /// (`Enrolled`): the first bytes a relay or the controller reads from a stranger.
    fn enrolment() -> impl Strategy<Value = Control> {
        let bytes = |n| proptest::collection::vec(any::<u8>(), 0..n);
        let role = prop_oneof![Just(Role::Controller), Just(Role::Relay), Just(Role::Agent)];
        prop_oneof![
            (
                ".{0,60}",
                role,
                ".{0,70}",
                bytes(80),
                ".{0,20}",
                any::<bool>()
            )
                .prop_map(|(token, role, node_id, public_key, mac, renewal)| {
                    Control::Enroll {
                        token,
                        role,
                        node_id,
                        public_key,
                        mac,
                        renewal,
                    }
                }),
            (
                bytes(700),
                bytes(500),
                bytes(40),
                any::<i64>(),
                bytes(80),
                proptest::collection::vec(bytes(300), 0..3)
            )
                .prop_map(
                    |(certificate_der, ca_der, key, until, endorsement, bridge)| {
                        Control::Enrolled {
                            certificate_der,
                            ca_der,
                            signing_key: EndorsedKey {
                                key,
                                until,
                                endorsement,
                            },
                            bridge,
                        }
                    }
                ),
        ]
    }

    fn edits() -> impl Strategy<Value = Vec<crate::mutation::Edit>> {
        proptest::collection::vec(any::<(u8, usize, usize)>().prop_map(Into::into), 1..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// An enrolment message round-trips; mutated (bytes flipped, inserted, removed, copied,
        /// cut, in the header or the body), it decodes to an error, "incomplete" or some frame no
        /// longer than the input, and never panics.
        #[test]
        fn mutated_enrolment_frames_never_panic(c in enrolment(), edits in edits()) {
            let frame = Frame::Control(c);
            let bytes = encode_to_vec(&frame).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), Some((frame, bytes.len())));
            let mutated = crate::mutation::mutate(&bytes, &edits);
            if let Ok(Some((_, used))) = decode(&mutated) {
                prop_assert!(used <= mutated.len());
            }
        }
    }
}
