//! Deterministic VM-like disk images for tests and the demo: long zero runs (free space, written as
//! sparse holes), text (logs, configs), structured records, and incompressible data (media). The
//! same arguments always give the same bytes. Benchmarks use `shared/bench/gen-vm-image.py`, which
//! also mixes in real machine code; this one exists so tests and the demo need nothing outside.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// A small, fast, deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6e69_6768_7463_6173)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "formation",
    "session",
    "stagiaire",
    "salle",
    "poste",
    "master",
    "relais",
    "nuit",
    "windows",
    "update",
    "driver",
    "registry",
    "office",
    "profile",
    "cache",
    "error",
    "warning",
    "info",
    "user",
    "admin",
    "network",
    "vlan",
    "switch",
    "proxy",
];

fn region(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    match rng.range(0, 100) {
        0..=34 => {} // free space
        35..=59 => {
            let mut at = 0;
            while at < len {
                let line = format!(
                    "{:05} {} {}\n",
                    rng.range(0, 99_999),
                    WORDS[rng.range(0, WORDS.len() as u64) as usize],
                    WORDS[rng.range(0, WORDS.len() as u64) as usize]
                );
                let n = line.len().min(len - at);
                out[at..at + n].copy_from_slice(&line.as_bytes()[..n]);
                at += n;
            }
        }
        60..=74 => {
            for (i, rec) in out.chunks_mut(64).enumerate() {
                let v = (i as u64).wrapping_mul(rng.range(1, 4)).to_le_bytes();
                let n = v.len().min(rec.len());
                rec[..n].copy_from_slice(&v[..n]);
            }
        }
        _ => rng.fill(&mut out),
    }
    out
}

/// The bytes of image `seed` of `size` bytes (a multiple of 4 KiB is typical, not required).
pub fn image_bytes(size: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let len = rng.range(MIB / 4, 4 * MIB).min(size - out.len() as u64) as usize;
        out.extend(region(&mut rng, len));
    }
    out
}

/// [`image_bytes`] with an MBR partition table in its first sector (one Linux partition from
/// sector 2048 to the end, and the boot signature), as a disk image the controller's
/// `master import` takes without `--force` (`probe::layout_of`).
pub fn disk_bytes(size: u64, seed: u64) -> Vec<u8> {
    let mut out = image_bytes(size, seed);
    if out.len() >= 512 {
        let sectors = u32::try_from(size / 512).unwrap_or(u32::MAX);
        let mut entry = [0u8; 16];
        entry[4] = 0x83;
        entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
        entry[12..16].copy_from_slice(&sectors.saturating_sub(2048).to_le_bytes());
        out[446..462].copy_from_slice(&entry);
        out[462..510].fill(0);
        out[510..512].copy_from_slice(&[0x55, 0xaa]);
    }
    out
}

/// Version 2 of `image`: about `fraction` of it rewritten in scattered 64 KiB-1 MiB regions, and
/// a few short insertions that shift everything after them, as a software update would.
pub fn evolve(image: &[u8], fraction: f64, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed.wrapping_add(1));
    let mut out = image.to_vec();
    let target = (image.len() as f64 * fraction) as u64;
    let mut changed = 0u64;
    while changed < target && !out.is_empty() {
        let len = rng.range(64 << 10, MIB).min(out.len() as u64) as usize;
        let at = rng.range(0, (out.len() - len + 1) as u64) as usize;
        let fresh = region(&mut rng, len);
        out[at..at + len].copy_from_slice(&fresh);
        changed += len as u64;
    }
    for _ in 0..3 {
        let at = rng.range(0, out.len().max(1) as u64) as usize;
        let mut insert = vec![0u8; rng.range(1, 4096) as usize];
        rng.fill(&mut insert);
        out.splice(at..at, insert);
    }
    out
}

/// Writes `bytes` to `path` as a sparse file: all-zero 4 KiB blocks are left as holes.
pub fn write_sparse(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file = File::create(path)?;
    file.set_len(bytes.len() as u64)?;
    for (i, block) in bytes.chunks(4096).enumerate() {
        if !crate::chunker::is_zero(block) {
            file.write_all_at(block, i as u64 * 4096)?;
        }
    }
    file.sync_all()
}
