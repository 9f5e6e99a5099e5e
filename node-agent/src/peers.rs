//! Peer sharing inside a site: the NUCs of a room fill each other.
//!
//! - `serve`: the agent's peer server (`exchange::serve_with` over a [`serve::PeerStore`]: the
//!   fetch cache and the slot images, every chunk hashed before it goes, within an upload cap),
//!   open only to agents of its own site, for the versions it holds or fetches, and closed while
//!   a session runs unless the site (or else the NUC's configuration) allows it.
//! - `settings`: which upload cap and in-session sharing are in force (the site's, else the
//!   NUC's own; pure) and the [`settings::UploadCap`] the server pays into, changed in place.
//! - `plan`: which chunk from whom ([`plan::Swarm`]), pure.
//! - `fetch`: the multi-source fetch, the thin shell around the swarm; `writer`: its one store
//!   write session, committed as `commits` (pure) says.
//!
//! The relay is the tracker (`GetPeers`): it knows where each agent serves (the `peer-port`
//! capability of its `Hello`) and gives each NUC a stripe of the version to fetch from it first.
//! Peers never talk to the controller, and every chunk from a peer is verified as one from the
//! relay is (`exchange::Connection::get_chunks`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use image_tools::clock::Clock;
use image_tools::exchange::{self, Limits, Service};
use image_tools::store::DiskStore;
use image_tools::trust::{Admit, Credentials, Identity, Revoked};
use image_tools::wire::{Hello, MasterRef, Role};
use image_tools::PublicKey;
use tokio_util::sync::CancellationToken;

use crate::slots::{SlotState, Slots};

pub mod commits;
pub(crate) mod fetch;
pub mod plan;
pub mod serve;
pub mod settings;
mod writer;

pub use serve::{Offer, Place, SharedOffer};

/// What a NUC's peer server may hold at once: a room of peers, a few chunk frames each, within
/// about 24 MiB.
pub const LIMITS: Limits = Limits {
    peers: 64,
    per_node: 2,
    unenrolled: 4,
    handshakes: 16,
    readers: 8,
    readers_per_peer: 2,
    manifests: 1,
    request_bytes: 4 << 20,
    send_budget: 8 << 20,
    chunk_requests: plan::PEER_ANSWERS,
};

/// Starts serving the site's agents on `listen`: returns the address bound.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_server(
    listen: SocketAddr,
    creds: &Credentials,
    me: &Identity,
    revoked: Revoked,
    cache: Arc<dyn DiskStore>,
    offer: SharedOffer,
    cap: Arc<settings::UploadCap>,
    clock: Clock,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, quinn::Endpoint)> {
    let tls = creds.server_config(Admit::AgentsOf(me.site.clone()), revoked.clone(), clock)?;
    let endpoint = exchange::server_endpoint(listen, tls)?;
    let bound = endpoint.local_addr()?;
    let service = Arc::new(Service {
        hello: Hello::new(Role::Agent, &me.node),
        store: Arc::new(serve::PeerStore {
            cache,
            offer: offer.clone(),
            cap,
            runtime: tokio::runtime::Handle::current(),
        }),
        catalog: Arc::new(serve::PeerCatalog {
            site: me.site.clone(),
            offer,
        }),
        enroller: None,
        forward_enroll: None,
        on_report: Box::new(|_, _| {}),
        revoked,
        served: exchange::Served::default(),
    });
    tokio::spawn(exchange::serve_with(
        endpoint.clone(),
        service,
        LIMITS,
        shutdown,
    ));
    Ok((bound, endpoint))
}

/// Versions with their signed manifests.
pub type Manifests = BTreeMap<MasterRef, Arc<Vec<u8>>>;

/// The versions held in complete slot images, with their manifests and where each chunk is.
pub(crate) fn index_slots(
    slots: &Slots,
    keys: &[PublicKey],
) -> (Manifests, HashMap<image_tools::ChunkId, Place>) {
    let mut held = BTreeMap::new();
    let mut places = HashMap::new();
    for info in slots.state() {
        if !matches!(info.state, SlotState::Active | SlotState::Ready) {
            continue;
        }
        let (Ok(manifest), Some(image)) = (
            slots.load_manifest(info.slot, keys),
            slots.image_path(info.slot),
        ) else {
            continue;
        };
        let image: Arc<PathBuf> = Arc::new(image);
        for (offset, c) in manifest.chunk_offsets() {
            places.entry(c.id).or_insert_with(|| Place {
                image: image.clone(),
                offset,
                len: c.len,
            });
        }
        held.insert(manifest.master(), Arc::new(manifest.bytes().to_vec()));
    }
    (held, places)
}
