//! The controller compresses a new master's chunks again after the import (`[store]
//! tighten_level`), and the site's relay downloads the smaller forms: fewer WAN bytes than the
//! import's own compression, every chunk still verified and the master assembled bit for bit;
//! then a NUC gets it ready through the relay; with the controller's store and the relay's cache
//! in either format.

use std::path::Path;

use image_tools::chunk::{is_tight, TIGHT_PROBE_LEN};
use image_tools::store::{open_disk_store, Format};

use crate::fleet::*;

/// Chunks of the store at `dir` whose stored form is final (tightened or raw), and all of them.
fn tight_share(dir: &Path) -> (usize, usize) {
    let store = open_disk_store(dir, Format::Files).unwrap();
    let ids = store.ids().unwrap();
    let tight = ids
        .iter()
        .filter(|id| {
            let mut head = [0u8; TIGHT_PROBE_LEN];
            let n = store.stored_prefix(id, &mut head).unwrap().unwrap();
            is_tight(&head[..n])
        })
        .count();
    (tight, ids.len())
}

#[test]
fn the_controller_compresses_a_new_master_again_and_the_relay_downloads_less() {
    compresses_again_and_the_relay_downloads_less(Format::Files);
}

#[test]
fn on_pack_stores_the_controller_imports_compresses_again_and_the_relay_serves_a_nuc() {
    compresses_again_and_the_relay_downloads_less(Format::Packs);
}

/// The controller's store is made by its first start in `format`; `nightcast-image build` (another
/// process) imports into it while it runs, `master-add` registers the master. The relay's cache
/// and the NUC's fetch cache are in `format` too.
fn compresses_again_and_the_relay_downloads_less(format: Format) {
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-07T12:00:00Z speed=1",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n",
        &format!(
            "[store]\ntighten_level = 19\nformat = \"{}\"\n",
            format.name()
        ),
    );
    let controller_store = f.dir.path().join("controller/store");
    assert_eq!(Format::of(&controller_store).unwrap(), Some(format));
    let mut share = (0, 1);
    for _ in 0..600 {
        share = tight_share(&controller_store);
        if share.0 == share.1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(share.0, share.1, "chunks left as imported: {share:?}");
    // The forms the pass replaced give their space back by themselves (a pack store keeps them
    // as dead records until its packs are rewritten): the controller's disk holds the tight
    // store, not the import's forms beside it.
    let (mut disk, mut live) = (u64::MAX, 0);
    for _ in 0..150 {
        live = open_disk_store(&controller_store, format)
            .unwrap()
            .size()
            .unwrap()
            .bytes;
        disk = disk_bytes(&controller_store);
        if disk < live + live / 10 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        disk < live + live / 10,
        "the controller's store takes {disk} B on disk for {live} B of chunks"
    );

    // The relay's cache in the same format: a pack store stays one (the relay makes a file
    // store only when it finds none).
    drop(open_disk_store(&f.relay_data().join("store"), format).unwrap());
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 60, Relay::complete);
    let imported = f.stored_bytes();
    let fetched = relay.n("fetched_bytes");
    assert!(
        fetched < imported,
        "the relay fetched {fetched} B, the import's forms are {imported} B"
    );
    assert!(
        f.wan.bytes() < imported + imported / 10,
        "the WAN carried {} B",
        f.wan.bytes()
    );
    eprintln!(
        "imported (zstd -1): {imported} B, fetched after tightening: {fetched} B ({:.1} %)",
        100.0 * fetched as f64 / imported as f64
    );
    // The relay keeps the forms it received, and they verify.
    assert_eq!(Format::of(&relay.data.join("store")).unwrap(), Some(format));
    let (tight, all) = tight_share(&relay.data.join("store"));
    assert_eq!(tight, all);
    assemble_matches(&f, &relay.data.join("store"));

    // And on to a NUC: it enrols through the relay and gets the master ready for its session.
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let nuc_store = f.dir.path().join("agent-nuc-1/store");
    drop(open_disk_store(&nuc_store, format).unwrap());
    let nuc = f.agent_process("nuc-1", &relay);
    nuc.wait("the agent to enrol", 20, |a| a.s("site") == "lyon");
    f.nightcast(&["seat", "assign", "lyon", "salle-1", "pc-1", "nuc-1"]);
    nuc.wait("the master to be ready on the NUC", 60, |a| {
        a.s("current") == "demo 1"
    });
    // Its fetch cache, emptied once the master is in its image, gives its disk space back.
    assert_eq!(Format::of(&nuc_store).unwrap(), Some(format));
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = disk_bytes(&nuc_store);
        if left < f.stored_bytes() / 10 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        left < f.stored_bytes() / 10,
        "the NUC's emptied cache still takes {left} B"
    );
}

/// Bytes of the files under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| match e.file_type().unwrap().is_dir() {
            true => disk_bytes(&e.path()),
            false => e.metadata().unwrap().len(),
        })
        .sum()
}
