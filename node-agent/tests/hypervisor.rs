//! The session VM over a throw-away overlay: resets wipe what the guest wrote, never touch the
//! master, and cost the same whatever the master's size. Needs `qemu-img` and `qemu-io` (Debian
//! package qemu-utils); the real-VM test also needs `qemu-system-x86_64` (qemu-system-x86) and
//! /dev/kvm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use nightcast_agent::hypervisor::{Fake, Hypervisor, Qemu, QemuConfig, VmStatus};

/// A sparse raw master of `size` bytes with 1 MiB of 0x11 at its start and at its middle.
fn make_master(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("master.img");
    let file = File::create(&path).unwrap();
    file.set_len(size).unwrap();
    file.write_all_at(&vec![0x11; 1 << 20], 0).unwrap();
    file.write_all_at(&vec![0x11; 1 << 20], size / 2).unwrap();
    file.sync_all().unwrap();
    path
}

/// What must never change about a master: its bytes (hashed) and its mtime.
fn fingerprint(master: &Path) -> (blake3::Hash, SystemTime) {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(master).unwrap()).unwrap();
    (
        hasher.finalize(),
        fs::metadata(master).unwrap().modified().unwrap(),
    )
}

fn qemu_img_info(overlay: &Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(overlay)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_clean_overlay_over(overlay: &Path, master: &Path) {
    let info = qemu_img_info(overlay);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(
        info["backing-filename"],
        fs::canonicalize(master).unwrap().to_str().unwrap()
    );
    assert_eq!(info["backing-filename-format"], "raw");
    assert_eq!(
        info["virtual-size"].as_u64(),
        Some(fs::metadata(master).unwrap().len())
    );
    let check = Command::new("qemu-img")
        .args(["check", "-U"])
        .arg(overlay)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn reset_wipes_what_the_guest_wrote_and_never_touches_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let master = make_master(dir.path(), 64 << 20);
    let before = fingerprint(&master);
    let overlay = dir.path().join("seat.qcow2");
    let mut vm = Fake::new("seat1", &overlay);
    assert_eq!(vm.status().unwrap(), VmStatus::NotStarted);
    assert!(matches!(
        vm.reset(),
        Err(nightcast_agent::hypervisor::HypervisorError::NotPrepared { .. })
    ));

    vm.start(&master).unwrap();
    assert_eq!(vm.status().unwrap(), VmStatus::Running);
    assert_clean_overlay_over(&overlay, &master);
    assert!(
        vm.guest_reads(0, 64 << 10, 0x11).unwrap(),
        "master shows through"
    );
    vm.guest_write(0, 64 << 10, 0xab).unwrap();
    vm.guest_write(16 << 20, 1 << 20, 0xcd).unwrap();
    assert!(vm.guest_reads(0, 64 << 10, 0xab).unwrap());

    // The trainee shuts the guest down; started again in the same session, the files are there.
    vm.power_off();
    assert_eq!(vm.status().unwrap(), VmStatus::PoweredOff);
    vm.start(&master).unwrap();
    assert!(vm.guest_reads(0, 64 << 10, 0xab).unwrap());

    // Between sessions: a reset.
    vm.reset().unwrap();
    assert_eq!(vm.status().unwrap(), VmStatus::NotStarted);
    assert!(
        !vm.guest_reads(0, 64 << 10, 0xab).unwrap(),
        "write survived"
    );
    assert!(vm.guest_reads(0, 64 << 10, 0x11).unwrap());
    assert!(vm.guest_reads(16 << 20, 1 << 20, 0).unwrap());
    assert!(vm.guest_reads(32 << 20, 1 << 20, 0x11).unwrap());
    assert_clean_overlay_over(&overlay, &master);
    assert_eq!(fingerprint(&master), before, "the master changed");
    // No temp overlay left beside it.
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_new_master_gets_a_fresh_overlay_and_prepare_waits_for_the_vm_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let old = make_master(dir.path(), 8 << 20);
    let new_dir = dir.path().join("new");
    fs::create_dir(&new_dir).unwrap();
    let new = make_master(&new_dir, 16 << 20);
    let mut vm = Fake::new("seat1", &dir.path().join("seat.qcow2"));
    vm.start(&old).unwrap();
    vm.guest_write(0, 4096, 0xab).unwrap();
    assert!(vm.prepare(&new).is_err(), "prepared under a running VM");
    vm.stop().unwrap();
    assert_eq!(vm.status().unwrap(), VmStatus::Stopped);
    vm.start(&new).unwrap();
    assert_eq!(vm.master(), Some(fs::canonicalize(&new).unwrap().as_path()));
    assert!(vm.guest_reads(0, 4096, 0x11).unwrap());
    assert_clean_overlay_over(vm.overlay(), &new);
    assert_eq!(vm.starts, 2);
    // A missing master is an error that names it.
    vm.stop().unwrap();
    let err = vm.prepare(&dir.path().join("nope.img")).unwrap_err();
    assert!(err.to_string().contains("nope.img"), "{err}");
}

#[test]
#[allow(clippy::disallowed_methods)] // measures the reset, the subject of this test
fn reset_over_a_40_gib_master_is_instant_and_copies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let master = make_master(dir.path(), 40 << 30);
    let before = fingerprint_meta(&master);
    let mut vm = Fake::new("seat1", &dir.path().join("seat.qcow2"));
    vm.start(&master).unwrap();
    vm.guest_write(0, 8 << 20, 0xab).unwrap();
    let t = std::time::Instant::now();
    vm.reset().unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "reset took {took:?}");
    let info = qemu_img_info(vm.overlay());
    assert!(
        info["actual-size"].as_u64().unwrap() < 1 << 20,
        "overlay holds data: {info}"
    );
    assert_eq!(fingerprint_meta(&master), before);
}

/// Size and mtime (hashing 40 GiB would take the test's whole time).
fn fingerprint_meta(master: &Path) -> (u64, SystemTime) {
    let meta = fs::metadata(master).unwrap();
    (meta.len(), meta.modified().unwrap())
}

/// The process handling of `Qemu`, with a stand-in for QEMU (the VM is not the subject here).
fn stand_in(dir: &Path, script: &str) -> Qemu {
    let mut config = QemuConfig::new("seat1", &dir.join("seat.qcow2"));
    config.command = ["sh", "-c", script, "sh", "{overlay}", "{name}"]
        .map(String::from)
        .to_vec();
    config.stop_timeout = Duration::from_millis(500);
    Qemu::new(config).unwrap()
}

fn wait_for(vm: &mut Qemu, want: VmStatus) {
    for _ in 0..250 {
        if vm.status().unwrap() == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("VM never reached {want:?}: {:?}", vm.status());
}

#[test]
fn qemu_process_exit_is_seen_as_power_off_or_failure() {
    let dir = tempfile::tempdir().unwrap();
    let master = make_master(dir.path(), 8 << 20);

    // The overlay is the command's argument, and a guest power-off is a clean exit.
    let mut vm = stand_in(
        dir.path(),
        "test -f \"$1\" && test \"$2\" = seat1 && exit 0; exit 9",
    );
    vm.start(&master).unwrap();
    wait_for(&mut vm, VmStatus::PoweredOff);
    assert_clean_overlay_over(vm.overlay(), &master);

    let mut vm = stand_in(dir.path(), "exit 3");
    vm.start(&master).unwrap();
    wait_for(&mut vm, VmStatus::Failed { code: Some(3) });

    // Stop: SIGTERM first; a process that ignores it is killed after the timeout.
    let mut vm = stand_in(dir.path(), "exec sleep 30");
    vm.start(&master).unwrap();
    assert_eq!(vm.status().unwrap(), VmStatus::Running);
    assert!(vm.start(&master).is_err(), "started twice");
    vm.stop().unwrap();
    assert_eq!(vm.status().unwrap(), VmStatus::Stopped);
    let mut vm = stand_in(dir.path(), "trap '' TERM; sleep 30 & wait; wait");
    vm.start(&master).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    vm.stop().unwrap();
    assert_eq!(vm.status().unwrap(), VmStatus::Stopped);

    // A reset stops the VM and leaves a fresh overlay.
    let mut vm = stand_in(dir.path(), "exec sleep 30");
    vm.start(&master).unwrap();
    vm.reset().unwrap();
    assert_eq!(vm.status().unwrap(), VmStatus::NotStarted);
    assert_clean_overlay_over(vm.overlay(), &master);

    // Templates that cannot work are refused up front.
    let mut config = QemuConfig::new("seat1", &dir.path().join("x.qcow2"));
    config.command = vec!["qemu-system-x86_64".into(), "-m".into(), "64".into()];
    assert!(Qemu::new(config).is_err());
}

/// KVM as a NUC runs it (the default command line). `.ci/run` installs qemu-system-x86; the
/// machines have /dev/kvm.
#[test]
fn a_real_vm_runs_on_the_overlay_and_stops() {
    assert!(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok(),
        "/dev/kvm is missing or not usable"
    );
    let dir = tempfile::tempdir().unwrap();
    let master = make_master(dir.path(), 16 << 20);
    let before = fingerprint(&master);
    let config = |cpu: &str| {
        let mut config = QemuConfig::new("seat1", &dir.path().join("seat.qcow2"));
        // Small enough for a test machine; the rest is the default command line.
        for arg in &mut config.command {
            if arg == "4096" {
                *arg = "256".into();
            }
            if arg == "host" {
                *arg = cpu.into();
            }
        }
        config
    };
    let mut vm = Qemu::new(config("host")).unwrap();
    vm.start(&master).unwrap();
    // No bootable disk: the firmware keeps it running, waiting.
    std::thread::sleep(Duration::from_secs(2));
    if let VmStatus::Failed { code } = vm.status().unwrap() {
        // A nested KVM (a VM running this test) may refuse `-cpu host`; a NUC does not.
        eprintln!(
            "note: QEMU with the default -cpu host failed ({code:?}) on this KVM; \
             retrying with -cpu qemu64"
        );
        vm = Qemu::new(config("qemu64")).unwrap();
        vm.start(&master).unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(vm.status().unwrap(), VmStatus::Running);
    vm.stop().unwrap();
    assert_eq!(vm.status().unwrap(), VmStatus::Stopped);
    vm.reset().unwrap();
    assert_clean_overlay_over(vm.overlay(), &master);
    assert_eq!(fingerprint(&master), before, "the master changed");
}
