//! How long a pack store takes to open, and what its in-memory index costs, for a store holding as
//! many chunks as a 60 GB master (about a million at the 64 KiB average); and how long the scan of
//! a crash's unsealed 256 MiB pack takes. Prints a markdown table (docs/BENCHMARKS.md, issue 18).
//!
//! ```sh
//! cargo run --release -p image-tools --example pack_open -- /var/tmp/pack-open 1000000
//! ```
//! The directory is created and must not exist; it is removed at the end.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image_tools::chunk::VerifiedChunk;
use image_tools::store::pack::{PackStore, PACK_LIMIT};
use image_tools::store::ChunkStore;

/// The process's resident set now and at its peak, in MiB (from /proc/self/status).
fn rss_mib() -> (f64, f64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[allow(clippy::disallowed_methods)] // a benchmark: it reads the clock
fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let first = args.next().context("usage: pack_open DIR [CHUNKS]")?;
    if first == "--open-only" {
        return open_only(&PathBuf::from(args.next().context("--open-only DIR")?));
    }
    let dir = PathBuf::from(first);
    let n: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    if dir.exists() {
        bail!("{} exists: give a new directory", dir.display());
    }
    let small = dir.join("small");
    let t = Instant::now();
    {
        let store = PackStore::open(&small)?;
        let mut w = store.writer();
        for i in 0..n {
            // Distinct small chunks: what is measured is the index, not the bytes.
            let mut raw = i.to_le_bytes().to_vec();
            raw.extend_from_slice(&[0x5a; 24]);
            w.put(&VerifiedChunk::from_raw(raw))?;
            // As many chunks per pack as a 256 MiB pack of 64 KiB chunks at about 40 % holds.
            if i % 7_500 == 7_499 {
                w.commit()?;
            }
        }
        w.commit()?;
    }
    let fill = t.elapsed().as_secs_f64();
    // Opened in a fresh process, so that its memory is the index's alone.
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--open-only")
        .arg(&small)
        .output()?;
    if !out.status.success() {
        bail!(
            "open-only run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let open_rows = String::from_utf8(out.stdout)?;

    // One unsealed pack of real-sized (64 KiB, incompressible) chunks, as a crash leaves it.
    let big = dir.join("big");
    {
        let store = PackStore::open(&big)?;
        let mut w = store.writer();
        let mut seed = [0u8; 32];
        let mut written = 0u64;
        let mut i = 0u64;
        while written < PACK_LIMIT - (1 << 20) {
            seed[..8].copy_from_slice(&i.to_le_bytes());
            let mut raw = vec![0u8; 64 << 10];
            blake3::Hasher::new()
                .update(&seed)
                .finalize_xof()
                .fill(&mut raw);
            let c = VerifiedChunk::from_raw(raw);
            written += u64::from(c.stored_len()) + 50;
            w.put(&c)?;
            i += 1;
        }
        w.commit()?;
    }
    let mut removed = 0;
    for e in fs::read_dir(big.join("packs"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "idx") {
            fs::remove_file(p)?;
            removed += 1;
        }
    }
    let t = Instant::now();
    let store = PackStore::open(&big)?;
    let scan = t.elapsed().as_secs_f64();
    let big_chunks = store.size()?.chunks;
    drop(store);
    let idx_bytes: u64 = fs::read_dir(small.join("packs"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "idx"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    fs::remove_dir_all(&dir)?;

    println!("| measure | value |\n|---|---|");
    println!("| writing {n} chunks (1 writer, tiny chunks) | {fill:.2} s |");
    println!(
        "| index files on disk | {:.1} MiB ({:.0} B per chunk) |",
        idx_bytes as f64 / (1 << 20) as f64,
        idx_bytes as f64 / n as f64
    );
    print!("{open_rows}");
    println!(
        "| open after a crash: scan of {removed} unsealed pack(s), {big_chunks} chunks of 64 KiB | {scan:.2} s |"
    );
    Ok(())
}

/// Opens the store at `dir` and prints the open time, the memory it took and a lookup time.
#[allow(clippy::disallowed_methods)] // a benchmark: it reads the clock
fn open_only(dir: &std::path::Path) -> Result<()> {
    let (rss0, _) = rss_mib();
    let t = Instant::now();
    let store = PackStore::open(dir)?;
    let open = t.elapsed().as_secs_f64();
    let (rss1, peak) = rss_mib();
    let count = store.size()?.chunks;
    let t = Instant::now();
    let ids = store.ids()?;
    let mut present = 0;
    for id in ids.iter().step_by(97) {
        present += usize::from(store.has(id)?);
    }
    let lookups = t.elapsed().as_secs_f64();
    println!("| chunks in the store | {count} |");
    println!("| open (read every index, build the in-memory index), fresh process | {open:.2} s |");
    println!(
        "| resident memory before / after open (peak) | {rss0:.0} / {rss1:.0} ({peak:.0}) MiB: {:.0} B per chunk |",
        (rss1 - rss0) * (1 << 20) as f64 / count as f64
    );
    println!(
        "| {present} lookups (`has`), every 97th id | {:.1} ms |",
        lookups * 1e3
    );
    Ok(())
}
