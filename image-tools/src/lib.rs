//! image-tools: the master format and everything that reads or writes it. Every other nightcast crate
//! depends on this one, and on nothing else of ours.
//!
//! Module map, in the order data flows through an import and back out on a NUC:
//! - [`ids`]: validated identifiers ([`ChunkId`], [`MasterName`], [`MasterVersion`]).
//! - [`chunker`]: splits an image into holes (aligned zero runs) and FastCDC chunks.
//! - [`chunk`]: the stored form of a chunk and [`VerifiedChunk`], the only way to hold its bytes.
//! - [`store`]: the [`ChunkStore`] trait, [`LocalStore`] (chunks in a directory, a file each),
//!   `store::pack::PackStore` (chunks appended to pack files), the wrappers that compose stores
//!   (`store::layers`: caching, single-flight, counted) and the conformance suite every store
//!   passes (feature `conformance`).
//! - [`manifest`]: the canonical, signed list of a master version's chunks and holes.
//! - [`manifest_delta`]: a manifest as a zstd delta to another the receiver holds, and rebuilt.
//! - [`keys`]: Ed25519 signing keys and their files.
//! - [`profile`]: machine profiles (what a master needs from its VM) and their signed statement.
//! - [`local_time`]: Unix seconds worded in a site's time zone, the zone named (CLI and console).
//! - [`probe`]: disk-image formats, and the files an image refers to besides itself (its headers).
//! - [`import`]: image -> chunks in a store + signed manifest, on all cores; reads only that image.
//! - [`assemble`]: manifest + store (+ seed image) -> image, sparse, verified, atomic; and `verify`.
//! - [`gc`]: garbage collection by reachability and the scrub.
//! - [`durable`]: the one durable-write helper (temp, fsync, rename, fsync dir).
//! - [`wire`]: the chunk-exchange protocol's frames, a sans-IO codec.
//! - [`exchange`]: the protocol over QUIC: server, client, `fetch_missing`, the remote store.
//! - [`discovery`]: how an agent with nothing configured finds its site's relay (UDP broadcast).
//! - [`trust`]: the controller's CA, node certificates and identities, enrolment tokens.
//! - [`bandwidth`]: [`Bandwidth`], link rates, and what a relay really moves under a site's cap.
//! - [`windows`]: night windows in a site's time zone (jiff), as absolute openings.
//! - [`clock`]: the one reading of the wall clock, and the `NIGHTCAST_CLOCK` test clock.
//! - [`config`]: the daemons' TOML configuration files, loaded and checked one way.
//! - [`testdisk`]: a small tmpfs for tests of a full disk.
//! - [`testimage`]: deterministic VM-like images for tests and the demo.
//! - [`mutation`]: byte-level edits of valid inputs, for the parsers' property tests.
//! - [`metrics`]: the Prometheus text format of the daemons' `/metrics` (pure).
//! - [`api`]: the controller's admin API as request and answer types (no I/O, no behaviour).
//! - [`cli`]: the `nightcast-image` command line (the binary is a thin wrapper around it).
//!
//! Architecture invariants: this crate knows nothing of calendars or sessions (beyond the shapes
//! of the admin API's answers) and computes no plan (it carries plans on the wire, and reads a
//! site's night windows, which relays obey); no chunk leaves a store unverified; nothing here reads the wall clock except [`clock`], which only
//! binaries call (libraries take `now` or a `Clock` as an argument).

pub mod api;
pub mod assemble;
pub mod bandwidth;
pub mod chunk;
pub mod chunker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod durable;
pub mod exchange;
pub mod gc;
pub mod ids;
pub mod import;
pub mod keys;
pub mod local_time;
pub mod manifest;
pub mod manifest_delta;
pub mod metrics;
pub mod mutation;
pub mod probe;
pub mod profile;
pub mod report;
pub mod signals;
pub mod store;
pub mod testdisk;
pub mod testimage;
pub mod tighten;
pub mod trust;
pub mod windows;
pub mod wire;

pub use bandwidth::Bandwidth;
pub use chunk::VerifiedChunk;
pub use chunker::ChunkParams;
pub use ids::{ChunkId, MasterName, MasterVersion, NodeId, SiteId};
pub use ids::{RoomName, SeatName};
pub use keys::{PublicKey, SigningKey};
pub use manifest::{Manifest, VerifiedManifest};
pub use store::{ChunkStore, LocalStore, StoreError};
