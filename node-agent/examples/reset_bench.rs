//! Reset and swap times against the master's size: a sparse raw master of 4 GiB and of 40 GiB
//! (64 MiB of data each, the rest holes), five runs each, medians printed as a table.
//!
//! reset = stop the (fake) VM + make a fresh qcow2 overlay over the master (after the guest wrote
//! 8 MiB); swap = `Slots::swap` with a ready `next`, including the removal of the old `previous`.
//! Needs `qemu-img` and `qemu-io`. Run: `cargo run -p nightcast-agent --example reset_bench`.
//!
//! Measured on the 2-core dev VM (ext4, debug build, qemu-img 10.0.2), another build running:
//! | master (sparse raw) | data | reset: stop + fresh overlay | swap (incl. removing old previous) |
//! |---|---|---|---|
//! | 4 GiB | 64 MiB | 11.5 ms | 16.7 ms |
//! | 40 GiB | 64 MiB | 11.5 ms | 17.0 ms |

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use image_tools::manifest::{ChunkRef, Entry};
use image_tools::testimage::Rng;
use image_tools::{ChunkId, ChunkParams, Manifest, MasterName, MasterVersion, SigningKey};
use nightcast_agent::hypervisor::{Fake, Hypervisor};
use nightcast_agent::slots::{SlotName, Slots};

const RUNS: usize = 5;
const GIB: u64 = 1 << 30;
const REGIONS: u64 = 16;
const REGION: u64 = 4 << 20;
const CHUNK: u64 = 64 << 10;

/// The one function that reads the clock.
#[allow(clippy::disallowed_methods)]
fn timed(f: impl FnOnce()) -> Duration {
    let start = std::time::Instant::now();
    f();
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The image's data regions (offset, bytes): 16 of 4 MiB spread over `size`.
fn regions(size: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = Rng::new(size);
    (0..REGIONS)
        .map(|i| {
            let mut bytes = vec![0u8; REGION as usize];
            rng.fill(&mut bytes);
            ((size / REGIONS * i) & !4095, bytes)
        })
        .collect()
}

/// A signed manifest describing `regions` in an image of `size` bytes, holes elsewhere.
fn manifest(
    size: u64,
    regions: &[(u64, Vec<u8>)],
    key: &SigningKey,
) -> image_tools::VerifiedManifest {
    let mut entries = Vec::new();
    let mut at = 0u64;
    for (offset, bytes) in regions {
        if *offset > at {
            entries.push(Entry::Hole { len: offset - at });
        }
        for chunk in bytes.chunks(CHUNK as usize) {
            entries.push(Entry::Chunk(ChunkRef {
                id: ChunkId::of(chunk),
                len: chunk.len() as u32,
                stored_len: chunk.len() as u32,
            }));
        }
        at = offset + bytes.len() as u64;
    }
    if size > at {
        entries.push(Entry::Hole { len: size - at });
    }
    Manifest {
        name: MasterName::new("bench").unwrap(),
        version: MasterVersion::new(&format!("{}g", size / GIB)).unwrap(),
        size,
        params: ChunkParams::DEFAULT,
        entries,
    }
    .sign(key)
}

/// begin_next, write the image (sparse), verify, mark ready.
fn fetch(slots: &mut Slots, m: &image_tools::VerifiedManifest, regions: &[(u64, Vec<u8>)]) {
    let path = slots.begin_next(m, 0).unwrap();
    let file = File::create(&path).unwrap();
    file.set_len(m.size).unwrap();
    for (offset, bytes) in regions {
        file.write_all_at(bytes, *offset).unwrap();
    }
    file.sync_all().unwrap();
    let proof = slots.verify_next(m).unwrap();
    slots.mark_ready(proof, 0).unwrap();
}

fn main() {
    let key = SigningKey::from_seed([1; 32]);
    println!("| master (sparse raw) | data | reset: stop + fresh overlay | swap (incl. removing old previous) |");
    println!("|---|---|---|---|");
    for size in [4 * GIB, 40 * GIB] {
        let data = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let regions = regions(size);
        let m = manifest(size, &regions, &key);
        let (mut slots, _) = Slots::open(data.path(), 0).unwrap();
        // current and previous hold the master, so every swap also drops an old previous.
        for _ in 0..2 {
            fetch(&mut slots, &m, &regions);
            slots.swap(0).unwrap();
        }

        let master = slots.image_path(SlotName::Current).unwrap();
        let mut vm = Fake::new("bench", &data.path().join("seat.qcow2"));
        let mut resets = Vec::new();
        for _ in 0..RUNS {
            vm.start(&master).unwrap();
            vm.guest_write(0, 8 << 20, 0xab).unwrap();
            resets.push(timed(|| vm.reset().unwrap()));
        }

        let mut swaps = Vec::new();
        for _ in 0..RUNS {
            fetch(&mut slots, &m, &regions);
            swaps.push(timed(|| slots.swap(0).unwrap()));
        }
        println!(
            "| {} GiB | {} MiB | {:.1} ms | {:.1} ms |",
            size / GIB,
            (REGIONS * REGION) >> 20,
            median(resets).as_secs_f64() * 1e3,
            median(swaps).as_secs_f64() * 1e3,
        );
    }
    println!("(median of {RUNS} runs each)");
}
