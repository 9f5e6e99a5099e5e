//! Helpers shared by the controller's unit tests.

use image_tools::manifest::{ChunkRef, Entry};
use image_tools::Manifest;

/// A one-chunk manifest for `name` `version` (100 bytes, 50 stored), and its bytes signed with
/// the key of `seed`.
pub fn manifest(name: &str, version: &str, seed: u8) -> (Manifest, Vec<u8>) {
    let m = Manifest {
        name: name.parse().unwrap(),
        version: version.parse().unwrap(),
        size: 100,
        params: image_tools::ChunkParams::DEFAULT,
        entries: vec![Entry::Chunk(ChunkRef {
            id: image_tools::ChunkId::of(name.as_bytes()),
            len: 100,
            stored_len: 50,
        })],
    };
    let signed = m
        .clone()
        .sign(&image_tools::SigningKey::from_seed([seed; 32]));
    (m, signed.bytes().to_vec())
}
