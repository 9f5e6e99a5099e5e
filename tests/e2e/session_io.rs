//! A session's disk I/O while its NUC serves its peers (issue 16: "a NUC in a session does not
//! serve and its session's disk I/O is not starved"): one NUC in a session, its site letting it
//! serve during sessions at the site's upload cap, several peers pulling the master from it over
//! and over, and a reader standing for the guest, `dd iflag=direct` of the NUC's slot image (the
//! master the guest runs on), the page cache dropped before each pass so that the peer server's
//! reads of that image reach the disk too. Phases without and with the peers pulling alternate
//! (`SESSION_IO_ROUNDS` times each, 2) and the reader's MB/s of each kind are averaged.
//!
//! On loopback, not in namespaces: the cap is the agent's own pacing, not a link's, and the disk
//! is what is measured. The peers keep what they receive in `/dev/shm`, so that their writes do
//! not land on the disk measured (on site they are other machines). Prints one `SESSION-IO` line;
//! `bench/session-io.sh` runs it for several caps and prints the table of docs/BENCHMARKS.md.
//! `SESSION_IO_CAP` (20, Mbit/s), `SESSION_IO_PEERS` (3), `SESSION_IO_MIB` (32, the master) and
//! `SESSION_IO_SECS` (3, each phase) change it. No timing is asserted: the test checks that the
//! NUC served in session at the site's cap and that the reader read. Needs root (to drop the page
//! cache; CI runs as root).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_tools::exchange::{self, FetchOptions};
use image_tools::LocalStore;

use crate::netns::{must, require_root_and};
use crate::peers::{as_peer, demo_chunks, one_nuc_with, ready, session_from_now};
use crate::room_fill::setting;

fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("cannot drop the page cache (root?)");
}

/// Reads `image` with `dd iflag=direct` (64 KiB blocks) for `secs`, in whole passes, the page
/// cache dropped at most once a second (before a pass): MB/s.
#[allow(clippy::disallowed_methods)] // the reader's rate is measured in real time
fn read_rate(image: &std::path::Path, secs: u64) -> f64 {
    let started = Instant::now();
    let mut dropped: Option<Instant> = None;
    let mut bytes = 0u64;
    let size = std::fs::metadata(image).unwrap().len();
    while started.elapsed() < Duration::from_secs(secs) {
        if dropped.is_none_or(|d| d.elapsed() >= Duration::from_secs(1)) {
            drop_caches();
            dropped = Some(Instant::now());
        }
        let input = format!("if={}", image.display());
        must(&["dd", &input, "of=/dev/null", "bs=64k", "iflag=direct"]);
        bytes += size;
    }
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}

#[test]
#[ignore = "a benchmark's driver (a minute): bench/session-io.sh runs it"]
#[allow(clippy::disallowed_methods)] // what the peers received is measured in real time
fn a_sessions_disk_reads_while_its_nuc_serves_its_peers_at_the_sites_cap() {
    require_root_and(&["dd"]);
    let cap = setting("SESSION_IO_CAP", 20);
    let n_peers = setting("SESSION_IO_PEERS", 3);
    let mib = setting("SESSION_IO_MIB", 32);
    let secs = setting("SESSION_IO_SECS", 3);
    let rounds = setting("SESSION_IO_ROUNDS", 2).max(1);
    let (f, _relay, nuc) = one_nuc_with(mib);
    f.nightcast(&[
        "site",
        "set",
        "lyon",
        "--peer-upload-mbit",
        &cap.to_string(),
        "--peer-share-in-session",
        "yes",
    ]);
    f.calendar(&session_from_now(&f, 3, 60));
    nuc.wait("demo 1 to be ready", 120, ready);
    nuc.wait("the session to start", 60, |a| {
        a.s("session").starts_with("demo 1")
    });
    nuc.wait("the NUC to serve in session at the site's cap", 30, |a| {
        a.status()["peer_serving"] == true && a.n("peer_upload_mbit") == cap
    });
    let peer_addr: std::net::SocketAddr = nuc.s("peer_listen").parse().unwrap();
    let image = std::fs::read_dir(nuc.data.join("slots/v"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("master.img"))
        .find(|p| p.to_string_lossy().contains("demo@1") && p.exists())
        .expect("no demo 1 slot image");

    // The peers, each pulling the whole master again and again (64 chunks a request) while
    // `pulling` is set, into a store in memory emptied at each round.
    let wants = demo_chunks(&f);
    let probes: Vec<_> = (1..=n_peers)
        .map(|k| f.agent(&format!("nuc-p{k}")))
        .collect();
    let pulling = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let pull = |probe| {
        as_peer(&f, probe, peer_addr, async |conn| {
            while !stop.load(Ordering::Relaxed) {
                if !pulling.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let dir = tempfile::tempdir_in("/dev/shm").unwrap();
                let store = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
                for batch in wants.chunks(64) {
                    if !pulling.load(Ordering::Relaxed) {
                        break;
                    }
                    let report = exchange::fetch_these(
                        conn,
                        store.clone(),
                        batch.to_vec(),
                        FetchOptions::default(),
                        None,
                        &|_| {},
                    )
                    .await
                    .unwrap();
                    assert_eq!(report.corrupt_received, 0);
                    received.fetch_add(report.fetched_bytes, Ordering::Relaxed);
                }
            }
        })
    };
    // `rounds` times: the reader alone, then with the peers pulling (after a second to get going).
    let rows = std::thread::scope(|s| {
        for probe in &probes {
            s.spawn(|| pull(probe));
        }
        let rows: Vec<(f64, f64, f64)> = (0..rounds)
            .map(|_| {
                pulling.store(false, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
                let alone = read_rate(&image, secs);
                let (started, before) = (Instant::now(), received.load(Ordering::Relaxed));
                pulling.store(true, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
                let serving = read_rate(&image, secs);
                let bits = (received.load(Ordering::Relaxed) - before) * 8;
                let served = bits as f64 / started.elapsed().as_secs_f64() / 1e6;
                println!(
                    "SESSION-IO-ROUND cap_mbit={cap} alone_mb_s={alone:.1} serving_mb_s={serving:.1} \
                     served_mbit_s={served:.1}"
                );
                (alone, serving, served)
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        rows
    });
    let mean =
        |pick: fn(&(f64, f64, f64)) -> f64| rows.iter().map(pick).sum::<f64>() / rows.len() as f64;
    let (alone, loaded, served) = (mean(|r| r.0), mean(|r| r.1), mean(|r| r.2));
    println!(
        "SESSION-IO cap_mbit={cap} peers={n_peers} mib={mib} secs={secs} rounds={rounds} \
         alone_mb_s={alone:.1} serving_mb_s={loaded:.1} served_mbit_s={served:.1}"
    );
    // The NUC served its peers during the session, and the session went on.
    assert!(served > 0.0, "the peers received nothing: {rows:?}");
    assert!(nuc.s("session").starts_with("demo 1"), "{}", nuc.status());
}
