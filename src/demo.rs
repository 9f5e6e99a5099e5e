//! `nightcast demo`: the master format end to end on one machine, with the real library and files.
//! Until the controller, relays and agents exist, it plays the controller (import, sign) and a NUC
//! (verify, assemble, update from its current master), and says so.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image_tools::assemble::{assemble, verify, Seed};
use image_tools::cli::{diff_manifests, human};
use image_tools::import::{import_file, ImportOptions};
use image_tools::{durable, testimage, ChunkParams, ChunkStore, LocalStore, SigningKey};

pub fn run(dir: Option<PathBuf>, size_mib: u64) -> Result<()> {
    if !(8..=16384).contains(&size_mib) {
        bail!("--size-mib must be between 8 and 16384");
    }
    let temp;
    let dir = match dir {
        Some(d) => {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            d
        }
        None => {
            temp = tempdir()?;
            temp.0.clone()
        }
    };
    println!("nightcast demo in {}", dir.display());

    step(
        "1/5",
        "generating a VM-like master and its next version (holes, text, data)",
    );
    let size = size_mib << 20;
    let v1 = testimage::image_bytes(size, 1);
    let v2 = testimage::evolve(&v1, 0.02, 1);
    let (v1_img, v2_img) = (dir.join("master-v1.img"), dir.join("master-v2.img"));
    testimage::write_sparse(&v1_img, &v1)?;
    testimage::write_sparse(&v2_img, &v2)?;
    drop((v1, v2));

    step(
        "2/5",
        "controller: signing key, then import of both versions into its chunk store",
    );
    let key_path = dir.join("controller.key");
    let key = if key_path.exists() {
        SigningKey::load(&key_path)?
    } else {
        let key = SigningKey::generate()?;
        key.save(&key_path)?;
        key
    };
    let store = LocalStore::open(&dir.join("controller-store"))?;
    let mut manifests = Vec::new();
    for (img, version) in [(&v1_img, "1"), (&v2_img, "2")] {
        let opts = ImportOptions {
            name: "demo-win10".parse()?,
            version: version.parse()?,
            params: ChunkParams::DEFAULT,
            threads: 0,
        };
        let report = import_file(img, &store, &key, &opts, &|_, _| {})?;
        let m_path = dir.join(format!("master-v{version}.manifest"));
        durable::write_file(&m_path, report.manifest.bytes(), 0o644)?;
        let s = report.manifest.summary();
        println!(
            "   version {version}: {} image -> {} chunks, {} of holes (free), {} new in the store ({} compressed)",
            human(report.bytes_read),
            s.chunks,
            human(s.hole_bytes),
            report.new_chunks,
            human(report.new_stored_bytes)
        );
        manifests.push(report.manifest);
    }
    let total = store.size()?;
    println!(
        "   store: {} chunks, {} on disk for {} of images",
        total.chunks,
        human(total.bytes),
        human(2 * size)
    );

    step(
        "3/5",
        "what a site holding version 1 downloads for version 2",
    );
    let d = diff_manifests(&manifests[0], &manifests[1]);
    println!(
        "   {} chunks, {} compressed ({:.2}% of the image); {} chunks already there",
        d.new_chunks,
        human(d.new_stored_bytes),
        100.0 * d.new_stored_bytes as f64 / size as f64,
        d.shared_chunks
    );

    step(
        "4/5",
        "NUC: verify signature and every chunk, assemble version 1 (sparse, atomic)",
    );
    let v1_report = verify(&manifests[0], &store, 0, &|_, _| {});
    if !v1_report.faults.is_empty() {
        bail!("verify found {} bad chunks", v1_report.faults.len());
    }
    let current = dir.join("nuc-current.img");
    assemble(&manifests[0], &store, &current, None, 0, &|_, _| {})?;
    same_bytes(&v1_img, &current)?;
    println!(
        "   {} chunks verified; {} identical to the original",
        v1_report.chunks_checked,
        current.display()
    );

    step(
        "5/5",
        "NUC: update to version 2 reusing the chunks of the running master",
    );
    let next = dir.join("nuc-next.img");
    let seed = Seed {
        image: &current,
        manifest: &manifests[0],
    };
    let r = assemble(&manifests[1], &store, &next, Some(seed), 0, &|_, _| {})?;
    same_bytes(&v2_img, &next)?;
    println!(
        "   {} chunks from the current master, {} fetched; {} identical to version 2",
        r.from_seed,
        r.from_store,
        next.display()
    );
    println!("demo complete: every check passed");
    Ok(())
}

fn step(n: &str, what: &str) {
    println!("[{n}] {what}");
}

fn same_bytes(a: &Path, b: &Path) -> Result<()> {
    if fs::read(a)? != fs::read(b)? {
        bail!("{} and {} differ", a.display(), b.display());
    }
    Ok(())
}

/// A directory removed on drop (and on Ctrl-C only by the OS's temp cleanup).
struct TempDir(PathBuf);

fn tempdir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let path = base.join(format!("nightcast-demo-{}-{i}", std::process::id()));
        if fs::create_dir(&path).is_ok() {
            return Ok(TempDir(path));
        }
    }
    bail!("cannot create a temp directory in {}", base.display())
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
