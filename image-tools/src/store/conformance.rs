//! One suite for every [`ChunkStore`], with chunk sizes at the boundaries (1, min-1, min, avg,
//! max, max+1, an all-zero chunk). Public behind the `conformance` feature so that a crate with
//! its own store, or its own composition of stores, runs it too (as a dev-dependency feature).
//! It panics on the first failure: call it from a test.
//!
//! What it requires: an empty store to start with; `put` idempotent; `get` returns the chunk put
//! or `Missing` naming it; `ids` and `size` list exactly what was put (size in stored form, header
//! included); a copy damaged on disk is never returned: the store says `Invalid` naming it, or
//! drops it (then `Missing`), or repairs it from elsewhere (then the very chunk); `remove` removes
//! and says `Missing` the second time.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::{ChunkStore, StoreError, StoreSize};
use crate::chunk::{VerifiedChunk, HEADER_LEN};
use crate::chunker::ChunkParams;
use crate::ids::ChunkId;

fn sizes() -> Vec<usize> {
    let p = ChunkParams::DEFAULT;
    let (min, avg, max) = (p.min as usize, p.avg as usize, p.max as usize);
    vec![1, min - 1, min, avg, max, max + 1]
}

fn chunk(len: usize, seed: u8) -> VerifiedChunk {
    let raw: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect();
    VerifiedChunk::from_raw(raw)
}

/// Runs the suite on `store`; `corrupt(id)` damages the stored copy of `id` the way a failing
/// disk would.
pub fn run(store: &dyn ChunkStore, corrupt: &dyn Fn(&ChunkId)) {
    assert_eq!(store.size().unwrap(), StoreSize::default());
    let mut chunks: Vec<_> = sizes().into_iter().map(|n| chunk(n, 1)).collect();
    chunks.push(VerifiedChunk::from_raw(vec![0; 65536])); // an all-zero chunk
    for c in &chunks {
        assert!(!store.has(c.id()).unwrap());
        assert!(matches!(store.get(c.id()), Err(StoreError::Missing(id)) if id == *c.id()));
        store.put(c).unwrap();
        store.put(c).unwrap(); // idempotent
        assert!(store.has(c.id()).unwrap());
        assert_eq!(store.get(c.id()).unwrap(), *c);
    }
    let mut ids = store.ids().unwrap();
    ids.sort();
    let mut want: Vec<_> = chunks.iter().map(|c| *c.id()).collect();
    want.sort();
    assert_eq!(ids, want);
    let size = store.size().unwrap();
    assert_eq!(size.chunks, chunks.len() as u64);
    let stored: u64 = chunks
        .iter()
        .map(|c| (HEADER_LEN as u64) + u64::from(c.stored_len()))
        .sum();
    assert_eq!(size.bytes, stored);

    // A corrupt copy is an error naming the chunk, or dropped, or repaired: never other data.
    let victim = chunks[3].clone();
    corrupt(victim.id());
    let still_there = match store.get(victim.id()) {
        Err(StoreError::Invalid { id, .. }) => {
            assert_eq!(id, *victim.id());
            true
        }
        Err(StoreError::Missing(id)) => {
            assert_eq!(id, *victim.id());
            assert!(!store.has(&id).unwrap(), "Missing, but still there");
            false
        }
        Ok(c) => {
            assert_eq!(c, victim, "a repaired chunk is not the chunk");
            true
        }
        Err(other) => panic!("corrupt chunk returned {other:?}"),
    };
    assert_eq!(
        store.ids().unwrap().len(),
        chunks.len() - usize::from(!still_there)
    );
    if still_there {
        store.remove(victim.id()).unwrap();
    }
    assert!(matches!(
        store.remove(victim.id()),
        Err(StoreError::Missing(_))
    ));
    assert!(!store.has(victim.id()).unwrap());
    assert_eq!(store.ids().unwrap().len(), chunks.len() - 1);
}

/// Damages a stored chunk file in place (its last byte flipped): the `corrupt` argument of [`run`]
/// for stores that keep chunks as files.
#[allow(clippy::unwrap_used)]
pub fn flip_last_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// Runs `test` on a new, empty store of each [`super::Format`], with a function that damages a
/// chunk's stored copy the way a failing disk would: for tests of what works on any store.
#[cfg(test)]
pub fn in_each_format(test: impl Fn(&dyn super::DiskStore, &dyn Fn(&ChunkId))) {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let files = super::LocalStore::open(&dir.path().join("files")).unwrap();
    test(&files, &|id| flip_last_byte(&files.path_of(id)));
    let packs = super::pack::PackStore::open(&dir.path().join("packs")).unwrap();
    test(&packs, &|id| {
        let (path, body, len) = packs.location(id).unwrap().unwrap();
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let at = body + u64::from(len) - 1;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, at).unwrap();
        file.write_all_at(&[b[0] ^ 0xff], at).unwrap();
    });
}
