//! The DSI's orders carried out by the seat's station (`Station::obey`), with real slots and the
//! test hypervisor (real qcow2 overlays through `qemu-img`): a roll back puts the previous master
//! back and resets, a reset makes the overlay again, each order is done once, also after a
//! restart, and only this NUC's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use image_tools::import::{import_file, ImportOptions};
use image_tools::wire::{MasterRef, Order, OrderKind};
use image_tools::{ChunkParams, LocalStore, MasterName, MasterVersion, SigningKey};
use nightcast_agent::hypervisor::Fake;
use nightcast_agent::slots::Slots;
use nightcast_agent::station::Station;

const NOW: u64 = 1_900_000_000;

/// `demo VERSION` put in `next`, ready, then swapped in.
fn swap_in(slots: &mut Slots, store: &LocalStore, key: &SigningKey, dir: &Path, v: &str) {
    let image = dir.join(format!("demo-{v}.img"));
    let bytes = image_tools::testimage::image_bytes(2 << 20, v.parse().unwrap());
    image_tools::testimage::write_sparse(&image, &bytes).unwrap();
    let opts = ImportOptions {
        name: MasterName::new("demo").unwrap(),
        version: MasterVersion::new(v).unwrap(),
        params: ChunkParams::DEFAULT,
        threads: 1,
    };
    let manifest = import_file(&image, None, store, key, &opts, &|_, _| {})
        .unwrap()
        .manifest;
    let path = slots.begin_next(&manifest, NOW).unwrap();
    std::fs::copy(&image, &path).unwrap();
    let proof = slots.verify_next(&manifest).unwrap();
    slots.mark_ready(proof, NOW).unwrap();
    slots.swap(NOW).unwrap();
}

fn station(data: &Path) -> Station {
    let (slots, _) = Slots::open(data, NOW).unwrap();
    std::fs::create_dir_all(data.join("vm")).unwrap();
    let hv = Fake::new("nuc-1", &data.join("vm/overlay.qcow2"));
    Station::new(
        data.to_owned(),
        Box::new(hv),
        Arc::new(Mutex::new(slots)),
        23 * 60 + 59,
        None,
    )
}

fn order(id: u64, node: &str, kind: OrderKind) -> Order {
    Order {
        id,
        node: node.into(),
        kind,
    }
}

#[test]
fn a_roll_back_and_a_reset_are_done_once_each_and_only_this_nucs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    std::fs::create_dir_all(&data).unwrap();
    let store = LocalStore::open(&dir.path().join("store")).unwrap();
    let key = SigningKey::generate().unwrap();
    {
        let (mut slots, _) = Slots::open(&data, NOW).unwrap();
        swap_in(&mut slots, &store, &key, dir.path(), "1");
        swap_in(&mut slots, &store, &key, dir.path(), "2");
    }
    let mut st = station(&data);
    let demo = |v| MasterRef::new("demo", v).unwrap();
    assert_eq!(st.held().current, Some(demo("2")));
    assert_eq!(st.held().previous, Some(demo("1")));

    // Another NUC's order: nothing; this NUC's roll back: version 1 back, reset onto it.
    let orders = vec![
        order(1, "nuc-2", OrderKind::Reset),
        order(2, "nuc-1", OrderKind::Rollback),
    ];
    st.obey(NOW as i64, &orders, "nuc-1");
    assert_eq!(st.held().current, Some(demo("1")));
    assert_eq!((st.news.rollbacks, st.news.resets), (1, 1));
    assert_eq!(st.news.orders_done, 2);

    // A reset now, with the roll back still in the plan: only the reset is done.
    let orders = vec![
        order(2, "nuc-1", OrderKind::Rollback),
        order(3, "nuc-1", OrderKind::Reset),
    ];
    st.obey(NOW as i64 + 60, &orders, "nuc-1");
    assert_eq!((st.news.rollbacks, st.news.resets), (1, 2));
    assert_eq!(st.news.orders_done, 3);

    // The agent restarts: the same plan does nothing again.
    drop(st);
    let mut st = station(&data);
    assert_eq!(st.news.orders_done, 3);
    st.obey(NOW as i64 + 120, &orders, "nuc-1");
    assert_eq!((st.news.rollbacks, st.news.resets), (0, 0));
    assert_eq!(st.held().current, Some(demo("1")));
}
