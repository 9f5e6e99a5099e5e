//! Assemble an image from a verified manifest, and verify a store against one.
//!
//! Assembly writes into a temp file beside the target, sized to the image up front so that holes and
//! all-zero blocks stay sparse (they are never written), checks every chunk against its id, fsyncs,
//! and only then renames the file into place: an interrupted or failed assembly leaves no file under
//! the target's name. A *seed* (an older image with its manifest, such as the master a NUC runs now)
//! supplies every chunk it holds; the seed's manifest need not be trusted, because each chunk read
//! from the seed image is hashed and falls back to the store when it does not match.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::chunk::VerifiedChunk;
use crate::chunker::BLOCK;
use crate::durable::TempFile;
use crate::ids::ChunkId;
use crate::manifest::{ChunkRef, Manifest, VerifiedManifest};
use crate::store::{ChunkStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("chunk {id} at offset {offset} of the image")]
    Chunk {
        id: ChunkId,
        offset: u64,
        source: Box<StoreError>,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read seed image {path}")]
    Seed {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An older image and its manifest, to take chunks from before asking the store.
#[derive(Debug)]
pub struct Seed<'a> {
    pub image: &'a Path,
    pub manifest: &'a Manifest,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AssembleReport {
    pub bytes: u64,
    /// Distinct chunks taken from the seed images.
    pub from_seed: u64,
    /// Distinct chunks read from the store.
    pub from_store: u64,
    /// Seed chunks whose bytes did not match their id or could not be read (read from the store
    /// instead).
    pub seed_mismatches: u64,
    pub holes: u64,
}

/// One problem `verify` found.
#[derive(Debug)]
pub struct Fault {
    pub id: ChunkId,
    /// Offset of the chunk's first use in the image.
    pub offset: u64,
    pub error: StoreError,
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub faults: Vec<Fault>,
}

/// Distinct chunks in first-use order, each with every offset it appears at.
fn unique_with_offsets(manifest: &Manifest) -> Vec<(ChunkRef, Vec<u64>)> {
    let mut index: HashMap<ChunkId, usize> = HashMap::new();
    let mut out: Vec<(ChunkRef, Vec<u64>)> = Vec::new();
    for (offset, c) in manifest.chunk_offsets() {
        match index.get(&c.id) {
            Some(&i) => out[i].1.push(offset),
            None => {
                index.insert(c.id, out.len());
                out.push((*c, vec![offset]));
            }
        }
    }
    out
}

fn threads(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

/// Runs `f` on every distinct chunk on `threads` threads; stops early once `f` returns `false`.
fn par_each(
    items: &[(ChunkRef, Vec<u64>)],
    threads: usize,
    f: &(dyn Fn(&ChunkRef, &[u64]) -> bool + Sync),
) {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(items.len()).max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some((chunk, offsets)) = items.get(next.fetch_add(1, Ordering::Relaxed))
                    else {
                        break;
                    };
                    if !f(chunk, offsets) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
}

/// Writes `out` from `manifest`, chunks from the `seeds` first (the first seed holding a chunk
/// gives it) and `store` for the rest.
pub fn assemble(
    manifest: &VerifiedManifest,
    store: &dyn ChunkStore,
    out: &Path,
    seeds: &[Seed<'_>],
    threads_wanted: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<AssembleReport, AssembleError> {
    let write_err = |source| AssembleError::Write {
        path: out.to_owned(),
        source,
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = TempFile::new_in(dir, 0o644).map_err(write_err)?;
    tmp.file().set_len(manifest.size).map_err(write_err)?;

    // Chunk -> (seed, offset); seeds listed first win.
    let mut seed_index: HashMap<ChunkId, (usize, u64)> = HashMap::new();
    for (i, s) in seeds.iter().enumerate() {
        for (offset, c) in s.manifest.chunk_offsets() {
            seed_index.entry(c.id).or_insert((i, offset));
        }
    }
    let seed_files = seeds
        .iter()
        .map(|s| {
            File::open(s.image).map_err(|source| AssembleError::Seed {
                path: s.image.to_owned(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let items = unique_with_offsets(manifest);
    let report = Mutex::new(AssembleReport {
        bytes: manifest.size,
        holes: manifest.summary().holes,
        ..AssembleReport::default()
    });
    let first_error: Mutex<Option<AssembleError>> = Mutex::new(None);
    let done = AtomicU64::new(0);
    let total = manifest.summary().data_bytes;

    par_each(&items, threads(threads_wanted), &|chunk, offsets| {
        let from_seed = seed_index.get(&chunk.id).map(|&(i, at)| {
            let mut raw = vec![0u8; chunk.len as usize];
            seed_files[i]
                .read_exact_at(&mut raw, at)
                .ok()
                .filter(|_| ChunkId::of(&raw) == chunk.id)
                .map(|_| raw)
        });
        let raw = match from_seed {
            Some(Some(raw)) => {
                count(&report, |r| r.from_seed += 1);
                Ok(raw)
            }
            tried => {
                if tried.is_some() {
                    count(&report, |r| r.seed_mismatches += 1);
                    tracing::warn!(chunk = %chunk.id.short(), "seed image holds other bytes than its manifest says; using the store");
                }
                count(&report, |r| r.from_store += 1);
                store
                    .get(&chunk.id)
                    .map(VerifiedChunk::into_raw)
                    .map_err(|source| AssembleError::Chunk {
                        id: chunk.id,
                        offset: offsets[0],
                        source: Box::new(source),
                    })
            }
        };
        let written = raw.and_then(|raw| {
            for &offset in offsets {
                write_sparse(tmp.file(), offset, &raw).map_err(write_err)?;
            }
            Ok(())
        });
        match written {
            Ok(()) => {
                let n = done.fetch_add(
                    u64::from(chunk.len) * offsets.len() as u64,
                    Ordering::Relaxed,
                );
                progress(n, total);
                true
            }
            Err(e) => {
                if let Ok(mut slot) = first_error.lock() {
                    slot.get_or_insert(e);
                }
                false
            }
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    tmp.persist(out).map_err(write_err)?;
    progress(total, total);
    Ok(report.into_inner().unwrap_or_default())
}

fn count(report: &Mutex<AssembleReport>, f: impl FnOnce(&mut AssembleReport)) {
    if let Ok(mut r) = report.lock() {
        f(&mut r);
    }
}

/// Writes `data` at `offset`, skipping every all-zero piece between block boundaries of the file:
/// the file was created sparse, so those bytes already read as zero and stay unallocated.
fn write_sparse(file: &File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let block = BLOCK as u64;
    let mut at = 0usize;
    let mut run_start: Option<usize> = None;
    while at < data.len() {
        let pos = offset + at as u64;
        let end = (((pos / block) + 1) * block - offset).min(data.len() as u64) as usize;
        let zero = crate::chunker::is_zero(&data[at..end]);
        match (zero, run_start) {
            (false, None) => run_start = Some(at),
            (true, Some(start)) => {
                file.write_all_at(&data[start..at], offset + start as u64)?;
                run_start = None;
            }
            _ => {}
        }
        at = end;
    }
    if let Some(start) = run_start {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

/// Reads and checks every chunk `manifest` needs from `store`; collects every fault.
pub fn verify(
    manifest: &VerifiedManifest,
    store: &dyn ChunkStore,
    threads_wanted: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> VerifyReport {
    let items = unique_with_offsets(manifest);
    let total: u64 = items.iter().map(|(c, _)| u64::from(c.len)).sum();
    let report = Mutex::new(VerifyReport::default());
    let done = AtomicU64::new(0);
    par_each(&items, threads(threads_wanted), &|chunk, offsets| {
        let result = store.get(&chunk.id);
        if let Ok(mut r) = report.lock() {
            r.chunks_checked += 1;
            r.bytes_checked += u64::from(chunk.len);
            if let Err(error) = result {
                r.faults.push(Fault {
                    id: chunk.id,
                    offset: offsets[0],
                    error,
                });
            }
        }
        progress(
            done.fetch_add(u64::from(chunk.len), Ordering::Relaxed),
            total,
        );
        true
    });
    let mut report = report.into_inner().unwrap_or_default();
    report.faults.sort_by_key(|f| f.offset);
    report
}
