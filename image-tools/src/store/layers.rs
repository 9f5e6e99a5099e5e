//! Behaviour as wrappers around any [`ChunkStore`], so that a tier builds its store graph from
//! small parts, each tested alone and against the conformance suite:
//! - [`Caching`]: a local store in front of an upstream one: a miss is fetched, verified, kept
//!   and returned; a local copy that does not verify is dropped and replaced (repair); with
//!   [`Caching::single_flight`], one fetch per missing chunk however many callers ask at once;
//! - [`SingleFlight`]: one `get` of a chunk under way at a time, however many callers ask for it
//!   (a room of NUCs asking for the same missing chunk costs the upstream one fetch);
//! - [`Counted`]: counts what it serves.
//!
//! What a wrapper notices (a chunk served, a corrupt copy dropped, a chunk filled from upstream,
//! one that could not be kept) goes to its [`StoreEvents`], which the owner implements to log and
//! count. Every method blocks: wrappers over a network store run on blocking threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{ChunkStore, ChunkWriter, StoreError, StoreSize};
use crate::chunk::{VerifiedChunk, HEADER_LEN};
use crate::ids::ChunkId;

/// The `ChunkStore` methods a layer passes straight to its `$store` field: writes, removals,
/// listing, size and the writer.
macro_rules! pass_through {
    ($store:ident) => {
        fn put(&self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
            self.$store.put(chunk)
        }

        fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
            self.$store.remove(id)
        }

        fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
            self.$store.ids()
        }

        fn size(&self) -> Result<StoreSize, StoreError> {
            self.$store.size()
        }

        fn writer(&self) -> Box<dyn ChunkWriter + '_> {
            self.$store.writer()
        }
    };
}

/// What the wrappers tell their owner. Every method does nothing by default.
pub trait StoreEvents: Send + Sync {
    /// [`Counted::get`] returned this chunk.
    fn served(&self, _chunk: &VerifiedChunk) {}
    /// [`Caching`] found a local copy that does not verify, and removed it.
    fn dropped_corrupt(&self, _id: &ChunkId, _reason: &str) {}
    /// [`Caching`] got this chunk from upstream.
    fn filled(&self, _chunk: &VerifiedChunk) {}
    /// [`Caching`] could not keep a chunk it got from upstream (it returned it all the same).
    fn not_kept(&self, _id: &ChunkId, _error: &StoreError) {}
}

/// Tells nothing.
impl StoreEvents for () {}

/// A local store in front of an upstream one. Hits are local; a miss, or a local copy that does
/// not verify (removed first), is fetched from upstream and kept locally. A chunk that cannot be
/// kept (a full disk) is still returned: serving does not depend on caching. Writes, removals and
/// listings are the local store's; `has` asks upstream only on a local miss.
#[derive(Debug)]
pub struct Caching<L, U> {
    pub local: L,
    pub upstream: U,
    events: Arc<dyn StoreEvents>,
    /// Misses under way, when single-flight.
    flights: Option<Flights>,
}

impl std::fmt::Debug for dyn StoreEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreEvents")
    }
}

impl<L: ChunkStore, U: ChunkStore> Caching<L, U> {
    pub fn new(local: L, upstream: U) -> Caching<L, U> {
        Caching {
            local,
            upstream,
            events: Arc::new(()),
            flights: None,
        }
    }

    /// One upstream fetch per missing chunk at a time: who misses a chunk already being fetched
    /// (and kept) waits for that fetch. Hits never wait.
    pub fn single_flight(mut self) -> Caching<L, U> {
        self.flights = Some(Flights::default());
        self
    }

    /// A miss: from upstream, kept locally.
    fn fill(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let chunk = self.upstream.get(id)?;
        self.events.filled(&chunk);
        if let Err(e) = self.local.put(&chunk) {
            tracing::warn!(chunk = %id.short(), error = %e, "cannot keep a chunk fetched from upstream");
            self.events.not_kept(id, &e);
        }
        Ok(chunk)
    }

    pub fn with_events(mut self, events: Arc<dyn StoreEvents>) -> Caching<L, U> {
        self.events = events;
        self
    }
}

impl<L: ChunkStore, U: ChunkStore> ChunkStore for Caching<L, U> {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.local.has(id)? || self.upstream.has(id)?)
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        match self.local.get(id) {
            Ok(c) => return Ok(c),
            Err(StoreError::Missing(_)) => {}
            Err(StoreError::Invalid { reason, .. }) => {
                let reason = reason.to_string();
                tracing::warn!(chunk = %id.short(), %reason, "corrupt local copy dropped: fetched again, never served");
                match self.local.remove(id) {
                    Ok(()) | Err(StoreError::Missing(_)) => {}
                    Err(e) => return Err(e),
                }
                self.events.dropped_corrupt(id, &reason);
            }
            Err(e) => return Err(e),
        }
        match &self.flights {
            None => self.fill(id),
            // A flight that ended just now has kept its chunk: look again before fetching.
            Some(flights) => flights.run(id, || match self.local.get(id) {
                Ok(c) => Ok(c),
                Err(_) => self.fill(id),
            }),
        }
    }

    pass_through!(local);
}

/// One `get` under way per chunk: who asks for a chunk already being got waits for that result.
/// A waiter whose leader failed gets `Missing` (the leader's caller sees the real error). Only
/// `get` is shared; the other methods go straight through.
#[derive(Debug)]
pub struct SingleFlight<S> {
    inner: S,
    flights: Flights,
}

impl<S: ChunkStore> SingleFlight<S> {
    pub fn new(inner: S) -> SingleFlight<S> {
        SingleFlight {
            inner,
            flights: Flights::default(),
        }
    }
}

impl<S: ChunkStore> ChunkStore for SingleFlight<S> {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.inner.has(id)
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        self.flights.run(id, || self.inner.get(id))
    }

    pass_through!(inner);
}

/// The gets under way, by chunk.
#[derive(Debug, Default)]
struct Flights(Mutex<HashMap<ChunkId, Arc<Flight>>>);

/// One `get` and its result (`Some(None)`: it failed).
#[derive(Debug, Default)]
struct Flight {
    result: Mutex<Option<Option<VerifiedChunk>>>,
    done: Condvar,
}

impl Flights {
    /// `get()` for `id`, or the result of the one already under way.
    fn run(
        &self,
        id: &ChunkId,
        get: impl FnOnce() -> Result<VerifiedChunk, StoreError>,
    ) -> Result<VerifiedChunk, StoreError> {
        let (flight, leader) = {
            let mut flights = self.0.lock().map_err(|_| StoreError::Missing(*id))?;
            match flights.get(id) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight::default());
                    flights.insert(*id, f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            let mut result = flight.result.lock().map_err(|_| StoreError::Missing(*id))?;
            while result.is_none() {
                result = flight
                    .done
                    .wait(result)
                    .map_err(|_| StoreError::Missing(*id))?;
            }
            return result.clone().flatten().ok_or(StoreError::Missing(*id));
        }
        let got = get();
        if let Ok(mut result) = flight.result.lock() {
            *result = Some(got.as_ref().ok().cloned());
        }
        flight.done.notify_all();
        if let Ok(mut flights) = self.0.lock() {
            flights.remove(id);
        }
        got
    }
}

/// Counts the chunks and bytes (stored form, header included) its `get` returns, and tells its
/// events of each.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    events: Arc<dyn StoreEvents>,
    chunks: AtomicU64,
    bytes: AtomicU64,
}

impl<S: ChunkStore> Counted<S> {
    pub fn new(inner: S) -> Counted<S> {
        Counted {
            inner,
            events: Arc::new(()),
            chunks: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    pub fn with_events(mut self, events: Arc<dyn StoreEvents>) -> Counted<S> {
        self.events = events;
        self
    }

    /// Chunks and bytes served so far.
    pub fn served(&self) -> StoreSize {
        StoreSize {
            chunks: self.chunks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl<S: ChunkStore> ChunkStore for Counted<S> {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.inner.has(id)
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let chunk = self.inner.get(id)?;
        let len = HEADER_LEN as u64 + u64::from(chunk.stored_len());
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.events.served(&chunk);
        Ok(chunk)
    }

    pass_through!(inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use crate::store::conformance::flip_last_byte;
    use crate::LocalStore;
    use std::path::Path;

    /// Counts calls to `get` of the store it wraps, and can be made slow.
    struct Upstream {
        store: LocalStore,
        gets: AtomicU64,
        delay: std::time::Duration,
    }

    impl ChunkStore for Upstream {
        fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
            self.store.has(id)
        }
        fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            self.store.get(id)
        }
        fn put(&self, c: &VerifiedChunk) -> Result<(), StoreError> {
            self.store.put(c)
        }
        fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
            self.store.remove(id)
        }
        fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
            self.store.ids()
        }
        fn size(&self) -> Result<StoreSize, StoreError> {
            self.store.size()
        }
    }

    fn upstream(dir: &Path, delay_ms: u64) -> Upstream {
        Upstream {
            store: LocalStore::open(&dir.join("upstream")).unwrap(),
            gets: AtomicU64::new(0),
            delay: std::time::Duration::from_millis(delay_ms),
        }
    }

    #[test]
    fn every_wrapper_and_their_composition_conform() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(&dir.path().join("a")).unwrap();
        let caching = Caching::new(&local, upstream(dir.path(), 0));
        conformance::run(&caching, &|id| flip_last_byte(&local.path_of(id)));

        let local = LocalStore::open(&dir.path().join("b")).unwrap();
        conformance::run(&SingleFlight::new(&local), &|id| {
            flip_last_byte(&local.path_of(id))
        });

        let local = LocalStore::open(&dir.path().join("c")).unwrap();
        conformance::run(&Counted::new(&local), &|id| {
            flip_last_byte(&local.path_of(id))
        });

        let local = LocalStore::open(&dir.path().join("d")).unwrap();
        let up = LocalStore::open(&dir.path().join("d-up")).unwrap();
        let graph = Counted::new(Caching::new(&local, SingleFlight::new(&up)).single_flight());
        conformance::run(&graph, &|id| flip_last_byte(&local.path_of(id)));
    }

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl StoreEvents for Seen {
        fn served(&self, c: &VerifiedChunk) {
            self.0
                .lock()
                .unwrap()
                .push(format!("served {}", c.id().short()));
        }
        fn dropped_corrupt(&self, id: &ChunkId, _reason: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("dropped {}", id.short()));
        }
        fn filled(&self, c: &VerifiedChunk) {
            self.0
                .lock()
                .unwrap()
                .push(format!("filled {}", c.id().short()));
        }
        fn not_kept(&self, id: &ChunkId, _e: &StoreError) {
            self.0
                .lock()
                .unwrap()
                .push(format!("not kept {}", id.short()));
        }
    }

    #[test]
    fn caching_fills_misses_repairs_corrupt_copies_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(&dir.path().join("local")).unwrap();
        let up = upstream(dir.path(), 0);
        let c = VerifiedChunk::from_raw(b"a chunk of a master".repeat(100));
        up.store.put(&c).unwrap();
        let seen = Arc::new(Seen::default());
        let caching = Caching::new(&local, &up).with_events(seen.clone());
        assert!(caching.has(c.id()).unwrap(), "upstream's chunk not seen");
        assert_eq!(caching.get(c.id()).unwrap(), c);
        assert!(local.has(c.id()).unwrap(), "a miss was not kept");
        assert_eq!(caching.get(c.id()).unwrap(), c);
        assert_eq!(up.gets.load(Ordering::SeqCst), 1, "a hit went upstream");
        flip_last_byte(&local.path_of(c.id()));
        assert_eq!(caching.get(c.id()).unwrap(), c);
        assert_eq!(local.get(c.id()).unwrap(), c, "not repaired");
        let short = c.id().short();
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![
                format!("filled {short}"),
                format!("dropped {short}"),
                format!("filled {short}")
            ]
        );
        // Upstream lacks it too: Missing, the corrupt copy gone all the same.
        let d = VerifiedChunk::from_raw(b"only here".repeat(100));
        local.put(&d).unwrap();
        flip_last_byte(&local.path_of(d.id()));
        assert!(matches!(caching.get(d.id()), Err(StoreError::Missing(id)) if id == *d.id()));
        assert!(!local.has(d.id()).unwrap());
    }

    #[test]
    fn a_chunk_that_cannot_be_kept_is_served_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(dir.path(), 0);
        let c = VerifiedChunk::from_raw(b"lunchtime".repeat(100));
        up.store.put(&c).unwrap();
        let seen = Arc::new(Seen::default());
        // A local store that refuses every write, as a full disk does.
        struct Full(LocalStore);
        impl ChunkStore for Full {
            fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
                self.0.has(id)
            }
            fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
                self.0.get(id)
            }
            fn put(&self, _c: &VerifiedChunk) -> Result<(), StoreError> {
                Err(StoreError::Io {
                    path: "full".into(),
                    source: std::io::Error::from_raw_os_error(28),
                })
            }
            fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
                self.0.remove(id)
            }
            fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
                self.0.ids()
            }
            fn size(&self) -> Result<StoreSize, StoreError> {
                self.0.size()
            }
        }
        let local = Full(LocalStore::open(&dir.path().join("local")).unwrap());
        let caching = Caching::new(local, &up).with_events(seen.clone());
        assert_eq!(caching.get(c.id()).unwrap(), c);
        assert_eq!(
            seen.0.lock().unwrap().last().unwrap(),
            &format!("not kept {}", c.id().short())
        );
    }

    #[test]
    fn many_callers_of_a_missing_chunk_cost_the_upstream_one_get() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(&dir.path().join("local")).unwrap();
        let up = upstream(dir.path(), 200);
        let c = VerifiedChunk::from_raw(b"everyone wants this".repeat(100));
        up.store.put(&c).unwrap();
        let graph = Counted::new(Caching::new(&local, &up).single_flight());
        std::thread::scope(|s| {
            for _ in 0..20 {
                s.spawn(|| assert_eq!(graph.get(c.id()).unwrap(), c));
            }
        });
        assert_eq!(up.gets.load(Ordering::SeqCst), 1);
        let served = graph.served();
        assert_eq!(served.chunks, 20);
        assert_eq!(
            served.bytes,
            20 * (HEADER_LEN as u64 + u64::from(c.stored_len()))
        );
        // A failed get is not remembered: the next caller asks again.
        let missing = ChunkId::of(b"nowhere");
        assert!(graph.get(&missing).is_err());
        assert!(graph.get(&missing).is_err());
        assert_eq!(up.gets.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_single_flight_store_shares_one_get_among_its_callers() {
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(dir.path(), 200);
        let c = VerifiedChunk::from_raw(b"shared".repeat(100));
        up.store.put(&c).unwrap();
        let one = SingleFlight::new(&up);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| assert_eq!(one.get(c.id()).unwrap(), c));
            }
        });
        assert_eq!(up.gets.load(Ordering::SeqCst), 1);
    }
}
