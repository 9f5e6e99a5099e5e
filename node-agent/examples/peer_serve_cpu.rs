//! CPU a NUC spends per GB it serves its peers from a slot image: every chunk read at its offset,
//! hashed (BLAKE3) and compressed (zstd 1, `chunk::ZSTD_LEVEL`) as `peers::serve::PeerStore::get`
//! does, and, for comparison, hashed only (what sending the raw encoding would cost).
//!
//! `cargo run --release -p nightcast-agent --example peer_serve_cpu -- [MiB]` (default 512): a
//! test image (`image_tools::testimage`, mixed compressible and random regions) in a temp dir.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, RwLock};

use image_tools::chunker::{Chunker, Piece};
use image_tools::{ChunkId, ChunkParams, ChunkStore, LocalStore};
use nightcast_agent::peers::serve::PeerStore;
use nightcast_agent::peers::{Offer, Place};

/// User + system CPU seconds of this process, from `/proc/self/stat`.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("master.img");
    std::fs::write(&image, image_tools::testimage::image_bytes(mib << 20, 7)).unwrap();
    let mut places = std::collections::HashMap::new();
    let mut data_bytes = 0u64;
    for piece in Chunker::new(File::open(&image).unwrap(), ChunkParams::DEFAULT) {
        if let Piece::Data { offset, bytes } = piece.unwrap() {
            data_bytes += bytes.len() as u64;
            places.insert(
                ChunkId::of(&bytes),
                Place {
                    image: Arc::new(image.clone()),
                    offset,
                    len: bytes.len() as u32,
                },
            );
        }
    }
    let ids: Vec<ChunkId> = places.keys().copied().collect();
    let mut offer = Offer::default();
    offer.open = true;
    offer.places = places.clone();
    let offer = Arc::new(RwLock::new(offer));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = PeerStore {
        cache: Arc::new(LocalStore::open(&dir.path().join("store")).unwrap()),
        offer,
        cap: Arc::new(nightcast_agent::peers::settings::UploadCap::new(0)),
        runtime: rt.handle().clone(),
    };
    let gb = data_bytes as f64 / 1e9;
    // Warm the page cache: what is measured is the CPU, not the disk.
    let _ = std::fs::read(&image).unwrap();

    let before = cpu_secs();
    let mut stored = 0u64;
    for id in &ids {
        stored += u64::from(store.get(id).unwrap().stored_len());
    }
    let compressed = cpu_secs() - before;

    let before = cpu_secs();
    let file = File::open(&image).unwrap();
    for id in &ids {
        let p = &places[id];
        let mut raw = vec![0u8; p.len as usize];
        file.read_exact_at(&mut raw, p.offset).unwrap();
        assert_eq!(ChunkId::of(&raw), *id);
    }
    let raw = cpu_secs() - before;
    println!(
        "{} chunks, {:.3} GB of data ({:.3} GB stored, {:.0}% of it)",
        ids.len(),
        gb,
        stored as f64 / 1e9,
        100.0 * stored as f64 / data_bytes as f64
    );
    println!(
        "read + BLAKE3 + zstd 1 (what is sent): {:.2} CPU s per GB served ({:.0} MB/s on one core)",
        compressed / gb,
        gb * 1000.0 / compressed
    );
    println!(
        "read + BLAKE3 only (raw encoding):     {:.2} CPU s per GB served ({:.0} MB/s on one core)",
        raw / gb,
        gb * 1000.0 / raw
    );
}
