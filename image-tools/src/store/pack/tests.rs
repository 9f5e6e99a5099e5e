use super::*;
use crate::store::conformance;
use crate::store::LocalStore;

fn chunk(text: &str, times: usize) -> VerifiedChunk {
    VerifiedChunk::from_raw(text.repeat(times).into_bytes())
}

/// Incompressible bytes, the same for the same seed.
fn noise(seed: u32, len: usize) -> VerifiedChunk {
    let mut raw = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut raw);
    VerifiedChunk::from_raw(raw)
}

fn flip_byte_at(path: &Path, offset: u64) {
    let file = File::options().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    file.write_all_at(&b, offset).unwrap();
}

/// Sets the packs directory's time to one long past (always the same), as if nothing had
/// changed there for a while.
fn settle(store: &Path) {
    let dir = File::open(store.join("packs")).unwrap();
    let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_750_000_000);
    dir.set_modified(then).unwrap();
}

fn packs_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    out.sort();
    out
}

#[test]
fn pack_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(&dir.path().join("store")).unwrap();
    conformance::run(&store, &|id| {
        let (path, body, len) = store.location(id).unwrap().unwrap();
        flip_byte_at(&path, body + u64::from(len) - 1);
    });
}

#[test]
fn a_reopened_store_has_what_was_committed_and_not_what_was_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (chunk("a", 3000), chunk("b", 5000), chunk("c", 70));
    {
        let store = PackStore::open(dir.path()).unwrap();
        let mut w = store.writer();
        w.put(&a).unwrap();
        w.put(&b).unwrap();
        w.put(&a).unwrap(); // written once
        assert!(!store.has(a.id()).unwrap(), "published before commit");
        w.commit().unwrap();
        drop(w);
        store.put(&c).unwrap();
        store.remove(b.id()).unwrap();
    }
    let store = PackStore::open(dir.path()).unwrap();
    assert_eq!(store.get(a.id()).unwrap(), a);
    assert_eq!(store.get(c.id()).unwrap(), c);
    assert!(matches!(store.get(b.id()), Err(StoreError::Missing(_))));
    assert_eq!(store.size().unwrap().chunks, 2);
    // Every pack was sealed: an index beside each.
    for pack in packs_in(dir.path()) {
        assert!(pack.with_extension("idx").exists(), "{}", pack.display());
    }
}

/// A crash in the middle of an append leaves the last record cut anywhere: the store opens with
/// every earlier chunk and without that one, the file cut back, and takes new chunks after it.
#[test]
fn a_torn_last_record_is_cut_off_at_open_whatever_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (first, last) = (chunk("first chunk ", 400), chunk("the last one", 20));
    {
        let store = PackStore::open(dir.path()).unwrap();
        let mut w = store.writer();
        w.put(&first).unwrap();
        w.put(&last).unwrap();
        w.commit().unwrap();
    }
    let pack = packs_in(dir.path()).remove(0);
    let whole = fs::read(&pack).unwrap();
    let last_start = RECORD_HEADER as u64 + u64::from(first.stored_len()) + HEADER_LEN as u64;
    assert!(last_start < whole.len() as u64);
    // Every cut inside the last record, and garbage after it (a file extended before its data was
    // written: zeros, or another record's leftovers).
    let mut tails: Vec<Vec<u8>> = (last_start..whole.len() as u64)
        .map(|cut| whole[..cut as usize].to_vec())
        .collect();
    let mut zeros = whole[..last_start as usize].to_vec();
    zeros.extend_from_slice(&[0u8; 4096]);
    tails.push(zeros);
    let mut flipped = whole.clone();
    let end = flipped.len() - 1;
    flipped[end] ^= 1;
    tails.push(flipped);
    for tail in tails {
        fs::write(&pack, &tail).unwrap();
        fs::remove_file(pack.with_extension("idx")).unwrap();
        let store = PackStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get(first.id()).unwrap(),
            first,
            "cut at {}",
            tail.len()
        );
        assert!(!store.has(last.id()).unwrap(), "cut at {}", tail.len());
        assert_eq!(fs::metadata(&pack).unwrap().len(), last_start);
        assert!(pack.with_extension("idx").exists());
    }
    // And the store goes on: the lost chunk put again lands in a new pack.
    let store = PackStore::open(dir.path()).unwrap();
    store.put(&last).unwrap();
    assert_eq!(store.get(last.id()).unwrap(), last);
    // A damaged index is not trusted: the pack is read again.
    drop(store);
    fs::write(pack.with_extension("idx"), b"nightcast-pidx1\nrubbish").unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    assert_eq!(store.get(first.id()).unwrap(), first);
    assert_eq!(store.get(last.id()).unwrap(), last);
}

#[test]
fn an_opener_leaves_a_running_writers_pack_alone() {
    let dir = tempfile::tempdir().unwrap();
    let writer_handle = PackStore::open(dir.path()).unwrap();
    let (a, b) = (chunk("flushed", 900), chunk("later", 900));
    let mut w = writer_handle.writer();
    w.put(&a).unwrap();
    w.flush().unwrap();
    // Another process opens the store meanwhile: it sees the flushed chunk, seals nothing.
    let other = PackStore::open(dir.path()).unwrap();
    assert_eq!(other.get(a.id()).unwrap(), a);
    let pack = packs_in(dir.path()).remove(0);
    assert!(!pack.with_extension("idx").exists());
    w.put(&b).unwrap();
    w.commit().unwrap();
    drop(w);
    let third = PackStore::open(dir.path()).unwrap();
    assert_eq!(third.get(b.id()).unwrap(), b);
    assert!(pack.with_extension("idx").exists());
}

#[test]
fn reclaim_frees_dead_packs_keeps_the_live_chunks_and_never_brings_removed_ones_back() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<VerifiedChunk> = (0..20).map(|i| noise(i, 20_000)).collect();
    let store = PackStore::open(dir.path()).unwrap();
    let mut w = store.writer();
    for c in &chunks {
        w.put(c).unwrap();
    }
    w.commit().unwrap();
    drop(w);
    // A second pack, mostly live: its removed chunk's tombstone must outlive the first's rewrite.
    let mut w = store.writer();
    let keepers: Vec<VerifiedChunk> = (0..4).map(|i| noise(100 + i, 30_000)).collect();
    for c in &keepers {
        w.put(c).unwrap();
    }
    w.commit().unwrap();
    drop(w);
    let before = store.disk_bytes().unwrap();
    for c in &chunks[..15] {
        store.remove(c.id()).unwrap();
    }
    store.remove(keepers[0].id()).unwrap();
    // A reader holding on across the reclaim keeps reading.
    let reader_sees = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            (0..200)
                .map(|i| {
                    store
                        .get(chunks[15 + i % 5].id())
                        .map(|c| c == chunks[15 + i % 5])
                })
                .all(|r| matches!(r, Ok(true)))
        });
        store.reclaim().unwrap();
        reader.join().unwrap()
    });
    assert!(reader_sees);
    let after = store.disk_bytes().unwrap();
    assert!(after < before / 2, "{before} -> {after}");
    for c in chunks[15..].iter().chain(&keepers[1..]) {
        assert_eq!(store.get(c.id()).unwrap(), *c);
    }
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert_eq!(store.size().unwrap().chunks, 5 + 3);
    for c in chunks[..15].iter().chain(&keepers[..1]) {
        assert!(!store.has(c.id()).unwrap(), "removed chunk came back");
    }
    for c in chunks[15..].iter().chain(&keepers[1..]) {
        assert_eq!(store.get(c.id()).unwrap(), *c);
    }
}

#[test]
fn only_packs_at_most_half_live_are_rewritten() {
    let p = |pack, len, live| PackUsage { pack, len, live };
    assert_eq!(
        plan_reclaim(&[p(3, 100, 51), p(1, 100, 50), p(2, 100, 0), p(4, 0, 0)]),
        vec![1, 2]
    );
}

#[test]
fn scrub_finds_a_rotten_chunk_and_repair_reclaims_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let (good, bad) = (chunk("good", 2000), chunk("rotten", 2000));
    store.put(&good).unwrap();
    store.put(&bad).unwrap();
    let (path, body, len) = store.location(bad.id()).unwrap().unwrap();
    flip_byte_at(&path, body + u64::from(len) / 2);
    let report = crate::gc::scrub(&store, false).unwrap();
    assert_eq!(report.corrupt.len(), 1);
    let report = crate::gc::scrub(&store, true).unwrap();
    assert_eq!(report.corrupt[0].0, *bad.id());
    assert!(!store.has(bad.id()).unwrap());
    // Put back whole (as a refetch would), and still so after reopening.
    store.put(&bad).unwrap();
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert_eq!(store.get(bad.id()).unwrap(), bad);
    assert_eq!(crate::gc::scrub(&store, false).unwrap().corrupt.len(), 0);
}

#[test]
fn each_format_refuses_a_store_of_the_other_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs-store");
    drop(PackStore::open(&packs).unwrap());
    let err = LocalStore::open(&packs).unwrap_err().to_string();
    assert!(
        err.contains("\"packs\" format") && err.contains("\"files\""),
        "{err}"
    );
    let files = dir.path().join("files-store");
    drop(LocalStore::open(&files).unwrap());
    let err = PackStore::open(&files).unwrap_err().to_string();
    assert!(err.contains("\"files\" format"), "{err}");
    // The opener by directory takes either.
    assert_eq!(
        crate::store::open_disk_store(&packs, Format::Files)
            .unwrap()
            .format(),
        Format::Packs
    );
}

#[test]
fn a_tombstone_outlives_the_rewrite_of_the_pack_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    // Pack A, all live but one chunk: never rewritten.
    let kept: Vec<VerifiedChunk> = (0..4).map(|i| noise(i, 30_000)).collect();
    let mut w = store.writer();
    for c in &kept {
        w.put(c).unwrap();
    }
    w.commit().unwrap();
    drop(w);
    // Pack S (this handle's own): chunks that die, and the tombstone of A's removed chunk.
    let doomed: Vec<VerifiedChunk> = (10..20).map(|i| noise(i, 20_000)).collect();
    for c in &doomed {
        store.put(c).unwrap();
    }
    store.remove(kept[0].id()).unwrap();
    for c in &doomed {
        store.remove(c.id()).unwrap();
    }
    store.reclaim().unwrap();
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert!(!store.has(kept[0].id()).unwrap(), "removed chunk came back");
    assert_eq!(store.size().unwrap().chunks, 3);
    // S is gone: only A and the rewrite are left.
    assert_eq!(packs_in(dir.path()).len(), 2);
}

#[test]
fn a_chunk_is_live_unless_a_tombstone_names_its_very_record() {
    let id = ChunkId::of(b"twice");
    let chunk_at = |offset| Entry {
        kind: Kind::Chunk,
        id,
        offset,
        body_len: 9,
        target: None,
    };
    let tomb = |pack, offset| Entry {
        kind: Kind::Tombstone,
        id,
        offset: 500,
        body_len: record::TOMBSTONE_LEN,
        target: Some(Place { pack, offset }),
    };
    // Put, removed, put again: the second record lives whatever order the packs are read in.
    for order in [[1u64, 2, 3], [3, 2, 1], [2, 3, 1]] {
        let mut live = LiveIndex::default();
        for pack in order {
            match pack {
                1 => live.add_pack(1, &[chunk_at(0)]),
                2 => live.add_pack(2, &[tomb(1, 0)]),
                _ => live.add_pack(3, &[chunk_at(45)]),
            }
        }
        let index = live.finish();
        assert_eq!(
            index.get(&id).map(|l| l.place),
            Some(Place {
                pack: 3,
                offset: 45
            })
        );
    }
    // Removed and never put again: gone.
    let mut live = LiveIndex::default();
    live.add_pack(2, &[tomb(1, 0)]);
    live.add_pack(1, &[chunk_at(0)]);
    assert!(live.finish().is_empty());
}

#[test]
fn a_handle_serves_what_another_process_sealed_since_it_opened() {
    // The controller's store is open while `nightcast-image build` imports into it and a tighten
    // pass (another handle) replaces a chunk with its tighter form.
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (chunk("old", 4000), chunk("new", 5000));
    let server = PackStore::open(dir.path()).unwrap();
    server.put(&old).unwrap();
    {
        let build = PackStore::open(dir.path()).unwrap();
        let mut w = build.writer();
        w.put(&new).unwrap();
        w.commit().unwrap();
        drop(w);
        let mut r = build.pack_replacer();
        r.put(&old.tightened(19).unwrap()).unwrap();
        r.commit().unwrap();
    }
    assert!(!server.has(new.id()).unwrap(), "has() reads no disk");
    assert_eq!(server.get(new.id()).unwrap().raw(), new.raw());
    // The refresh also took in the tombstone of the old form: the tight one is served.
    let tight = old.tightened(19).unwrap().stored_len();
    assert_eq!(server.stored_len(old.id()).unwrap(), Some(tight));
    assert_eq!(server.get(old.id()).unwrap().raw(), old.raw());
    assert_eq!(server.size().unwrap().chunks, 2);
    // A miss with nothing new on disk stays a miss.
    let absent = chunk("absent", 10);
    assert!(matches!(
        server.get(absent.id()),
        Err(StoreError::Missing(_))
    ));
    assert_eq!(server.refresh().unwrap(), 0);
}

#[test]
fn an_import_missing_chunk_after_chunk_never_reads_its_own_growing_pack() {
    // Every new chunk of an import is first looked up (`get`, a miss): a miss must not read the
    // pack this handle's writer is appending to (it did, whole, for every chunk: an import of a
    // 3 GiB image took minutes instead of seconds).
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let mut w = store.writer();
    for n in 0..50 {
        let c = noise(n, 3000);
        assert!(matches!(store.get(c.id()), Err(StoreError::Missing(_))));
        // Not flushed: an import commits in groups, and its pack is not published until then.
        w.put(&c).unwrap();
    }
    assert_eq!(store.scanned.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Nor list the directory for every chunk once its time is settled.
    settle(dir.path());
    let listed = store.listings.load(std::sync::atomic::Ordering::Relaxed);
    for n in 50..100 {
        assert!(store.get(noise(n, 3000).id()).is_err());
    }
    assert!(store.listings.load(std::sync::atomic::Ordering::Relaxed) <= listed + 1);
    w.commit().unwrap();
    drop(w);
    assert_eq!(store.size().unwrap().chunks, 50);
    // Another handle opened meanwhile reads the unsealed pack once, at open, as it must.
    let other = PackStore::open(dir.path()).unwrap();
    assert!(other.scanned.load(std::sync::atomic::Ordering::Relaxed) <= 1);
}

#[test]
fn readers_missing_at_once_all_find_what_another_process_sealed() {
    // A relay asks the controller for a new master's chunks on several streams at once: every
    // reader misses, one of them takes the new pack in, and the others (whose own refresh then
    // finds nothing new) must still find their chunk. They were answered "lacking" (e2e
    // relay_daemon::the_store_tools_keep_off_the_store_of_a_running_relay on a pack store, in CI).
    for round in 0..5u32 {
        let dir = tempfile::tempdir().unwrap();
        let server = PackStore::open(dir.path()).unwrap();
        let chunks: Vec<VerifiedChunk> = (0..3000).map(|n| noise(round * 10_000 + n, 64)).collect();
        {
            let build = PackStore::open(dir.path()).unwrap();
            let mut w = build.writer();
            for c in &chunks {
                w.put(c).unwrap();
            }
            w.commit().unwrap();
        }
        let readers = 8;
        let start = std::sync::Barrier::new(readers);
        let missed: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..readers)
                .map(|r| {
                    let (server, start, chunks) = (&server, &start, &chunks);
                    s.spawn(move || {
                        start.wait();
                        chunks
                            .iter()
                            .skip(r)
                            .step_by(readers)
                            .take(4)
                            .filter(|c| server.get(c.id()).is_err())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(missed, 0, "round {round}: chunks answered missing");
    }
}

#[test]
fn a_handle_serves_what_a_killed_writer_left_unsealed() {
    // `nightcast-image build` killed mid-import: its pack stays without index, and nothing in
    // the packs directory changes when it dies. A controller that missed while it ran must take
    // in the chunks it made durable.
    let dir = tempfile::tempdir().unwrap();
    let server = PackStore::open(dir.path()).unwrap();
    let c = noise(1, 5000);
    let build = PackStore::open(dir.path()).unwrap();
    let mut w = build.pack_writer();
    w.put(&c).unwrap();
    w.flush().unwrap();
    settle(dir.path());
    assert!(matches!(server.get(c.id()), Err(StoreError::Missing(_))));
    // The kill: the process's files closed (the pack's lock released) without a seal or a commit.
    let active = w.active.take().unwrap();
    drop(w);
    drop(active);
    drop(build);
    settle(dir.path());
    assert_eq!(server.get(c.id()).unwrap().raw(), c.raw());
}

#[test]
fn a_reclaim_on_a_full_disk_fails_clearly_and_loses_no_live_chunk() {
    // The controller gives back space after each compression pass: on a full disk the copy of
    // the live records fails, and every chunk that was live still is, now and after a restart.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _mounted = crate::testdisk::SmallDisk::mount(&disk, "4m");
    let root = disk.join("store");
    let chunks: Vec<VerifiedChunk> = (0..24).map(|n| noise(n, 60_000)).collect();
    let store = PackStore::open(&root).unwrap();
    let mut w = store.writer();
    for c in &chunks {
        w.put(c).unwrap();
    }
    w.commit().unwrap();
    drop(w);
    for c in &chunks[..14] {
        store.remove(c.id()).unwrap();
    }
    let filler = disk.join("filler");
    {
        let mut f = File::create(&filler).unwrap();
        let block = vec![7u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        // Room for the removals' index, not for the copy of the live chunks (600 KB).
        let full = f.metadata().unwrap().len();
        f.set_len(full - (128 << 10)).unwrap();
    }
    let pack_bytes = || -> u64 {
        packs_in(&root)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    };
    let before = pack_bytes();
    let err = format!("{:#}", anyhow::Error::new(store.reclaim().unwrap_err()));
    assert!(err.contains("No space left"), "a full disk said: {err}");
    // The unfinished copy is gone, not left to take what little room there is.
    assert!(pack_bytes() <= before, "{before} -> {}", pack_bytes());
    for c in &chunks[14..] {
        assert_eq!(store.get(c.id()).unwrap().raw(), c.raw());
    }
    drop(store);
    let store = PackStore::open(&root).unwrap();
    for c in &chunks[14..] {
        assert_eq!(store.get(c.id()).unwrap().raw(), c.raw());
    }
    // Room again: the space comes back, and still nothing live is lost.
    fs::remove_file(&filler).unwrap();
    for c in &chunks[..14] {
        let _ = store.remove(c.id());
    }
    assert!(store.reclaim().unwrap() > 0);
    drop(store);
    let store = PackStore::open(&root).unwrap();
    for c in &chunks[14..] {
        assert_eq!(store.get(c.id()).unwrap().raw(), c.raw());
    }
    for c in &chunks[..14] {
        assert!(matches!(store.get(c.id()), Err(StoreError::Missing(_))));
    }
}
