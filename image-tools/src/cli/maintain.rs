//! The store's upkeep commands: `gc`, `scrub`, `tighten` and `convert`.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{human, integrity, open_unverified, print_json, Failure};
use crate::manifest::Manifest;
use crate::store::{open_disk_store, Format};
use crate::tighten::TightenReport;
use crate::{gc as collect, tighten as tight};

pub(super) fn gc(
    store_dir: &Path,
    keep: &[PathBuf],
    dry_run: bool,
    json: bool,
) -> Result<(), Failure> {
    let manifests = keep
        .iter()
        .map(|p| open_unverified(p).map(|u| u.manifest))
        .collect::<Result<Vec<_>, _>>()?;
    let store = open_disk_store(store_dir, Format::Files)?;
    let refs: Vec<&Manifest> = manifests.iter().collect();
    let r = collect::gc(&*store, &refs, dry_run)?;
    if json {
        return print_json(&r);
    }
    println!(
        "{} {} chunks ({}), kept {}{}",
        if dry_run { "would remove" } else { "removed" },
        r.removed,
        human(r.removed_bytes),
        r.kept,
        if r.missing > 0 {
            format!(
                "; WARNING: {} chunks the kept manifests need are missing",
                r.missing
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

pub(super) fn scrub(store_dir: &Path, repair: bool, json: bool) -> Result<(), Failure> {
    let store = open_disk_store(store_dir, Format::Files)?;
    let r = collect::scrub(&*store, repair)?;
    if json {
        #[derive(Serialize)]
        struct Out {
            checked: u64,
            corrupt: Vec<String>,
            repaired: bool,
        }
        print_json(&Out {
            checked: r.checked,
            corrupt: r.corrupt.iter().map(|(id, _)| id.to_string()).collect(),
            repaired: repair,
        })?;
    } else {
        for (id, why) in &r.corrupt {
            eprintln!(
                "corrupt chunk {id}: {why}{}",
                if repair { " (removed)" } else { "" }
            );
        }
        println!("{} chunks checked, {} corrupt", r.checked, r.corrupt.len());
    }
    let size = store.size()?;
    tracing::debug!(chunks = size.chunks, bytes = size.bytes, "store size");
    if r.corrupt.is_empty() || repair {
        Ok(())
    } else {
        Err(integrity(anyhow!(
            "{} corrupt chunks in {} (run with --repair to remove them)",
            r.corrupt.len(),
            store_dir.display()
        )))
    }
}

pub(super) fn tighten(
    store_dir: &Path,
    level: i32,
    threads: usize,
    json: bool,
) -> Result<(), Failure> {
    let store = open_disk_store(store_dir, Format::Files)?;
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("tighten    [{bar:40}] {pos}/{len} chunks eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let r = tight::tighten(&*store, level, threads, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if json {
        print_json(&r)?;
    } else {
        println!("{}", words(&r, level));
    }
    let freed = tight::give_space_back(&*store)?;
    if freed > 0 && !json {
        println!(
            "the replaced forms' space given back: {:.1} MB",
            freed as f64 / 1e6
        );
    }
    for (id, why) in &r.corrupt {
        eprintln!("corrupt chunk {id}: {why} (left as it is: run scrub --repair)");
    }
    if r.corrupt.is_empty() {
        Ok(())
    } else {
        Err(integrity(anyhow!(
            "{} corrupt chunks in {} (run `nightcast-image scrub --repair`)",
            r.corrupt.len(),
            store_dir.display()
        )))
    }
}

/// The report for a person.
fn words(r: &TightenReport, level: i32) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let saved = r.bytes_before.saturating_sub(r.bytes_after);
    let share = if r.bytes_before > 0 {
        100.0 * saved as f64 / r.bytes_before as f64
    } else {
        0.0
    };
    format!(
        "{} chunks: {} recompressed at level {level} ({:.1} MB -> {:.1} MB, {share:.1} % smaller), \
         {} final already, {} did not get smaller",
        r.chunks,
        r.tightened,
        mb(r.bytes_before),
        mb(r.bytes_after),
        r.already,
        r.unchanged
    )
}

pub(super) fn convert(store_dir: &Path, to: Format, json: bool) -> Result<(), Failure> {
    let r = crate::store::convert::convert(store_dir, to)?;
    if json {
        #[derive(Serialize)]
        struct Out {
            from: &'static str,
            to: &'static str,
            chunks: u64,
            bytes: u64,
            corrupt: Vec<String>,
        }
        print_json(&Out {
            from: r.from,
            to: r.to,
            chunks: r.chunks,
            bytes: r.bytes,
            corrupt: r.corrupt.iter().map(|(id, _)| id.to_string()).collect(),
        })?;
    } else {
        for (id, why) in &r.corrupt {
            eprintln!("corrupt chunk {id}: {why} (not carried over)");
        }
        if r.from == r.to {
            println!("{} is already a \"{}\" store", store_dir.display(), r.to);
        } else {
            println!(
                "{}: converted from \"{}\" to \"{}\", {} chunks ({}), {} corrupt left behind",
                store_dir.display(),
                r.from,
                r.to,
                r.chunks,
                human(r.bytes),
                r.corrupt.len()
            );
        }
    }
    Ok(())
}
