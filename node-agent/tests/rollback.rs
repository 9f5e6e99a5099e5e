//! A new master that does not come up, with a real guest: the Debian test master (`guest/`) as
//! version 1, and a version 2 made from it whose kernel panics at boot (`init=/bin/false` on its
//! kernel command line, patched into a copy of the image). The seat's station (`station`, what
//! the daemon runs at every tick) with real slots, a real verdicts file and QEMU under TCG:
//!
//! 1. version 2 is swapped in between sessions and booted once to check it; the NUC loses power
//!    during that first boot (the station dropped without a word, QEMU killed);
//! 2. the agent comes back: the trial goes on, version 2's kernel panics, version 2 is marked bad
//!    on disk and rolled back before the session, automatically;
//! 3. the session (which asks for version 2) runs version 1: its guest comes up with the seat's
//!    hostname; the session's end presses the power button without holding the loop;
//! 4. `nightcast-agent rollback` by hand, the agent stopped: the slots go back and the version
//!    left is marked bad.
//!
//! Timings go to stderr (docs/BENCHMARKS.md, "Workstation boot").

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod guest;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image_tools::import::{import_file, ImportOptions};
use image_tools::wire::{MasterRef, SessionEntry};
use image_tools::{
    ChunkParams, LocalStore, MasterName, MasterVersion, SigningKey, VerifiedManifest,
};
use nightcast_agent::hypervisor::{host_facts, Qemu, QemuConfig};
use nightcast_agent::profile::{Accel, Amount, Firmware, HealthCheck, Network, Profile, Seat};
use nightcast_agent::profile_source::Choices;
use nightcast_agent::slots::{SlotName, Slots};
use nightcast_agent::station::{Machines, Station, Tick};
use nightcast_agent::verdicts::Verdicts;

#[allow(clippy::disallowed_methods)] // a test measures wall time
fn instant() -> Instant {
    Instant::now()
}

#[allow(clippy::disallowed_methods)] // the station takes the time as input: real time here
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn m(v: &str) -> MasterRef {
    MasterRef::new("debian", v).unwrap()
}

fn import(store: &LocalStore, key: &SigningKey, image: &Path, v: &str) -> VerifiedManifest {
    let opts = ImportOptions {
        name: MasterName::new("debian").unwrap(),
        version: MasterVersion::new(v).unwrap(),
        params: ChunkParams::DEFAULT,
        threads: 2,
    };
    import_file(image, None, store, key, &opts, &|_, _| {})
        .unwrap()
        .manifest
}

/// `next` := `image` (copied in, checked against `manifest`), ready.
fn put_next(slots: &mut Slots, manifest: &VerifiedManifest, image: &Path, now: u64) {
    let path = slots.begin_next(manifest, now).unwrap();
    let ok = Command::new("cp")
        .args(["--sparse=always"])
        .arg(image)
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success());
    let proof = slots.verify_next(manifest).unwrap();
    slots.mark_ready(proof, now).unwrap();
}

fn station(data: &Path) -> Station {
    let (slots, _) = Slots::open(data, unix_now() as u64).unwrap();
    fs::create_dir_all(data.join("vm")).unwrap();
    let overlay = data.join("vm").join("overlay.qcow2");
    let mut config = QemuConfig::new("nuc-1", &overlay);
    config.powerdown_grace = Duration::from_secs(120);
    let profile = Profile {
        firmware: Firmware::Bios,
        accel: Accel::Tcg,
        memory: Amount::Fixed(1024),
        health: HealthCheck {
            serial_marker: true,
            guest_agent: true,
            within_secs: 400,
        },
        ..Profile::default()
    };
    let machines = Machines {
        site: "lyon".into(),
        node: "nuc-1".into(),
        host: host_facts(Network::Nat),
        profiles: Choices {
            default: profile,
            ..Choices::default()
        },
    };
    Station::new(
        data.to_owned(),
        Box::new(Qemu::new(config).unwrap()),
        Arc::new(Mutex::new(slots)),
        23 * 60 + 59,
        Some(machines),
    )
}

/// Ticks `st` twice a second until `done` or `limit`; panics with the serial log then.
fn tick_until(
    st: &mut Station,
    data: &Path,
    sessions: &[SessionEntry],
    what: &str,
    limit: Duration,
    done: impl Fn(&Station) -> bool,
) -> Duration {
    let seat = ("salle-1".to_owned(), "poste-05".to_owned());
    let t0 = instant();
    while !done(st) {
        let now = unix_now();
        let tick = instant();
        st.tick(&Tick {
            now,
            local: None,
            sessions,
            seat: Some(&seat),
        });
        assert!(
            tick.elapsed() < Duration::from_secs(5),
            "a tick took {:?}: the loop is held",
            tick.elapsed()
        );
        if t0.elapsed() > limit {
            panic!(
                "{what}: not within {limit:?}; boot {:?}, errors {:?}; serial log:\n{}",
                st.news.boot,
                st.news.errors,
                serial(data)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    t0.elapsed()
}

fn serial(data: &Path) -> String {
    String::from_utf8_lossy(&fs::read(data.join("vm").join("serial.log")).unwrap_or_default())
        .into_owned()
}

/// The versions in `current` and `previous`, read from the slots (the agent stopped).
fn current(data: &Path) -> (Option<String>, Option<String>) {
    let (slots, _) = Slots::open(data, unix_now() as u64).unwrap();
    let v = |s| slots.table().get(s).map(|h| h.version.to_string());
    (v(SlotName::Current), v(SlotName::Previous))
}

/// The same, as the running station holds them.
fn held(st: &mut Station) -> (Option<String>, Option<String>) {
    st.refresh_slots();
    let v = |m: &Option<MasterRef>| m.as_ref().map(|m| m.version.to_string());
    (v(&st.held().current), v(&st.held().previous))
}

/// The agent's memory use now (VmRSS of this process: the station, the test harness, and what
/// the imports left in the allocator), in MiB.
fn rss_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[test]
fn a_version_2_that_panics_is_rolled_back_before_the_session_also_after_a_power_cut() {
    let v1_image = guest::debian();
    let dir = tempfile::tempdir().unwrap();
    let v2_image: PathBuf = dir.path().join("v2.raw");
    guest::panicking_copy(&v1_image, &v2_image);
    let store = LocalStore::open(&dir.path().join("store")).unwrap();
    let key = SigningKey::from_seed([9; 32]);
    let t_import = instant();
    let v1 = import(&store, &key, &v1_image, "1");
    let v2 = import(&store, &key, &v2_image, "2");
    eprintln!(
        "imported both versions in {:.1} s",
        t_import.elapsed().as_secs_f64()
    );
    let data = dir.path().join("agent");
    fs::create_dir_all(&data).unwrap();
    {
        let now = unix_now() as u64;
        let (mut slots, _) = Slots::open(&data, now).unwrap();
        put_next(&mut slots, &v1, &v1_image, now);
        slots.swap(now).unwrap();
        put_next(&mut slots, &v2, &v2_image, now);
    }
    fs::remove_file(&v2_image).unwrap();

    // 1. Version 2 comes in between sessions (its session is in an hour) and is booted once.
    let later = {
        let now = unix_now();
        vec![SessionEntry {
            master: m("2"),
            start: now + 3600,
            end: now + 7200,
        }]
    };
    let mut st = station(&data);
    tick_until(
        &mut st,
        &data,
        &later,
        "the trial boot of version 2",
        Duration::from_secs(60),
        |st| st.busy().is_some(),
    );
    assert_eq!(held(&mut st), (Some("2".into()), Some("1".into())));
    let on_disk = Verdicts::load(&data).unwrap();
    assert_eq!(
        on_disk.trial.as_ref().map(|t| (&t.master, t.boots)),
        Some((&m("2"), 1))
    );
    // Power cut: the agent's memory is gone, QEMU is killed.
    std::thread::sleep(Duration::from_secs(2));
    drop(st);

    // 2. The agent comes back: the trial goes on, and version 2 fails it.
    let mut st = station(&data);
    let judged = tick_until(
        &mut st,
        &data,
        &later,
        "version 2 marked bad and rolled back",
        Duration::from_secs(400),
        |st| st.verdicts().bad(&m("2")).is_some() && st.busy().is_none(),
    );
    let bad = Verdicts::load(&data).unwrap();
    let why = &bad.bad(&m("2")).unwrap().why;
    assert!(why.contains("panicked"), "{why}");
    assert!(!bad.bad(&m("2")).unwrap().manifest.is_empty());
    assert_eq!(bad.trial, None);
    assert_eq!(held(&mut st), (Some("1".into()), Some("2".into())));
    assert!(serial(&data).contains("Kernel panic"), "{}", serial(&data));
    eprintln!(
        "version 2: resumed trial boot to kernel panic, rollback and reset {:.1} s",
        judged.as_secs_f64()
    );

    // 3. The session asks for version 2 and runs version 1.
    let now = unix_now();
    let session = vec![SessionEntry {
        master: m("2"),
        start: now,
        end: now + 3600,
    }];
    let booted = tick_until(
        &mut st,
        &data,
        &session,
        "the session's guest to come up",
        Duration::from_secs(420),
        |st| st.news.boot_secs.is_some(),
    );
    assert!(st.session().is_some());
    let hostname = Seat::derive("lyon", "salle-1", "poste-05")
        .unwrap()
        .hostname;
    assert!(
        serial(&data).contains(&format!("NIGHTCAST-READY {hostname}")),
        "{}",
        serial(&data)
    );
    let overlay_info = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(data.join("vm").join("overlay.qcow2"))
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&overlay_info.stdout);
    assert!(info.contains("debian@1"), "the session runs on: {info}");
    eprintln!(
        "version 1: session start to the guest's health signal {:.1} s (station: {:.1} s); \
         this process's RSS with the guest running {:.1} MiB",
        booted.as_secs_f64(),
        st.news.boot_secs.unwrap(),
        rss_mib()
    );

    // The session ends: the power button, and the loop goes on while the guest powers off.
    let resets = st.news.resets;
    let ended = tick_until(
        &mut st,
        &data,
        &[],
        "the reset after the session",
        Duration::from_secs(150),
        |st| st.news.resets > resets,
    );
    assert!(
        serial(&data).contains(&format!("NIGHTCAST-SHUTDOWN {hostname}")),
        "no ACPI power-off: {}",
        serial(&data)
    );
    eprintln!(
        "session end to a fresh overlay (ACPI power-off) {:.1} s",
        ended.as_secs_f64()
    );
    st.shut_down("the test is over");
    drop(st);

    // 4. By hand, the agent stopped: back to version 2, and version 1 is marked bad.
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast-agent"))
        .args(["rollback", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("current is now debian 2"), "{text}");
    assert_eq!(current(&data), (Some("2".into()), Some("1".into())));
    let by_hand = Verdicts::load(&data).unwrap();
    assert!(by_hand.bad(&m("1")).unwrap().why.contains("by hand"));
}
