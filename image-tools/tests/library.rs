//! The library API as the agent and relay will use it: counted store reads, concurrent writers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use image_tools::assemble::{assemble, verify, Seed};
use image_tools::chunk::VerifiedChunk;
use image_tools::import::{import_reader, ImportOptions};
use image_tools::store::StoreSize;
use image_tools::{
    testimage, ChunkId, ChunkParams, ChunkStore, LocalStore, SigningKey, StoreError,
};

/// Counts the chunks read through it.
struct Counting<'a> {
    inner: &'a LocalStore,
    gets: AtomicU64,
}

impl ChunkStore for Counting<'_> {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.inner.has(id)
    }
    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(id)
    }
    fn put(&self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        self.inner.put(chunk)
    }
    fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.inner.remove(id)
    }
    fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        self.inner.ids()
    }
    fn size(&self) -> Result<StoreSize, StoreError> {
        self.inner.size()
    }
}

fn opts(version: &str) -> ImportOptions {
    ImportOptions {
        name: "lib".parse().unwrap(),
        version: version.parse().unwrap(),
        params: ChunkParams::DEFAULT,
        threads: 2,
    }
}

fn none(_: u64, _: u64) {}

#[test]
fn seeded_assembly_reads_from_the_store_exactly_the_missing_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("store")).unwrap();
    let key = SigningKey::from_seed([3; 32]);
    let v1 = testimage::image_bytes(12 << 20, 5);
    let v2 = testimage::evolve(&v1, 0.05, 5);
    let m1 = import_reader(&v1[..], 0, &store, &key, &opts("1"), &none)
        .unwrap()
        .manifest;
    let m2 = import_reader(&v2[..], 0, &store, &key, &opts("2"), &none)
        .unwrap()
        .manifest;
    let cur = dir.path().join("cur.img");
    testimage::write_sparse(&cur, &v1).unwrap();

    let have: std::collections::HashSet<_> = m1.chunks().map(|c| c.id).collect();
    let lacking = m2
        .unique_chunks()
        .iter()
        .filter(|c| !have.contains(&c.id))
        .count() as u64;
    let counting = Counting {
        inner: &store,
        gets: AtomicU64::new(0),
    };
    let out = dir.path().join("next.img");
    let seed = Seed {
        image: &cur,
        manifest: &m1,
    };
    let report = assemble(&m2, &counting, &out, &[seed], 2, &none).unwrap();
    assert_eq!(counting.gets.load(Ordering::Relaxed), lacking);
    assert_eq!(report.from_store, lacking);
    assert!(std::fs::read(&out).unwrap() == v2);

    // A seed image that was altered on disk is caught chunk by chunk and the store fills in.
    let mut damaged = v1.clone();
    for b in damaged.iter_mut().step_by(1 << 20) {
        *b ^= 0x55;
    }
    testimage::write_sparse(&cur, &damaged).unwrap();
    let seed = Seed {
        image: &cur,
        manifest: &m1,
    };
    let report = assemble(&m2, &store, &out, &[seed], 2, &none).unwrap();
    assert!(report.seed_mismatches > 0);
    assert!(std::fs::read(&out).unwrap() == v2);
}

#[test]
fn two_seeds_give_every_chunk_either_holds_and_the_store_only_the_rest() {
    // A NUC runs course B, keeps course A for rollback, and gets A's version 2.
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("store")).unwrap();
    let key = SigningKey::from_seed([5; 32]);
    let a1 = testimage::image_bytes(8 << 20, 11);
    let b1 = testimage::image_bytes(8 << 20, 12);
    let a2 = testimage::evolve(&a1, 0.05, 13);
    let ma1 = import_reader(&a1[..], 0, &store, &key, &opts("1"), &none)
        .unwrap()
        .manifest;
    let mb1 = import_reader(&b1[..], 0, &store, &key, &opts("b"), &none)
        .unwrap()
        .manifest;
    let ma2 = import_reader(&a2[..], 0, &store, &key, &opts("2"), &none)
        .unwrap()
        .manifest;
    let (cur, prev) = (dir.path().join("b1.img"), dir.path().join("a1.img"));
    testimage::write_sparse(&cur, &b1).unwrap();
    testimage::write_sparse(&prev, &a1).unwrap();
    let held: std::collections::HashSet<_> =
        ma1.chunks().chain(mb1.chunks()).map(|c| c.id).collect();
    let lacking = ma2
        .unique_chunks()
        .iter()
        .filter(|c| !held.contains(&c.id))
        .count() as u64;
    let from_a1 = ma2
        .unique_chunks()
        .iter()
        .filter(|c| ma1.chunks().any(|o| o.id == c.id))
        .count() as u64;
    assert!(lacking > 0 && from_a1 > lacking);
    let counting = Counting {
        inner: &store,
        gets: AtomicU64::new(0),
    };
    let out = dir.path().join("next.img");
    let seeds = [
        Seed {
            image: &cur,
            manifest: &mb1,
        },
        Seed {
            image: &prev,
            manifest: &ma1,
        },
    ];
    let report = assemble(&ma2, &counting, &out, &seeds, 2, &none).unwrap();
    assert_eq!(counting.gets.load(Ordering::Relaxed), lacking);
    assert_eq!(report.from_store, lacking);
    assert!(report.from_seed >= from_a1, "{report:?}");
    assert_eq!(report.seed_mismatches, 0);
    assert!(std::fs::read(&out).unwrap() == a2);
}

#[test]
fn concurrent_imports_into_one_store_both_verify() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let key = SigningKey::from_seed([4; 32]);
    let v1 = testimage::image_bytes(10 << 20, 8);
    let v2 = testimage::evolve(&v1, 0.3, 8);
    let (m1, m2) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let store = LocalStore::open(&root).unwrap();
            import_reader(&v1[..], 0, &store, &key, &opts("a"), &none)
                .unwrap()
                .manifest
        });
        let b = s.spawn(|| {
            let store = LocalStore::open(&root).unwrap();
            import_reader(&v2[..], 0, &store, &key, &opts("b"), &none)
                .unwrap()
                .manifest
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let store = LocalStore::open(&root).unwrap();
    for m in [&m1, &m2] {
        let report = verify(m, &store, 2, &none);
        assert!(report.faults.is_empty(), "{:?}", report.faults);
    }
}
