//! Resets that restore a saved pristine state instead of booting (`QemuConfig::resume`), with
//! the Debian test master under the UEFI profile (TCG: see `workstation.rs`).
//!
//! Session 1 boots from cold and the state is saved once the guest is healthy; a trainee's file
//! is written. The reset restores the saved state: healthy again, the file gone, the seat's
//! hostname, the guest's clock set to the host's. Then the saved state is damaged (as a full
//! disk or a QEMU upgrade could leave it): the next start falls back to a cold boot, says so,
//! and saves a new state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod guest;

use std::fs;
use std::time::Duration;

use nightcast_agent::health::Health;
use nightcast_agent::hypervisor::{host_facts, Hypervisor, Machine, Qemu, QemuConfig};
use nightcast_agent::profile::{
    Accel, Amount, DiskModel, Firmware, HealthCheck, Network, NicModel, Profile, Seat,
};
use nightcast_agent::qmp::GuestAgent;

fn run_in_guest(qga: &mut GuestAgent, path: &str, args: &[&str]) -> (Option<i64>, String) {
    let out = qga
        .exec(path, args, Duration::from_millis(200), 300)
        .unwrap();
    (out.code, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[allow(clippy::disallowed_methods)] // the test compares the guest's clock with the host's
fn host_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_reset_restores_the_saved_pristine_guest_and_falls_back_to_a_cold_boot() {
    let master = guest::debian();
    let dir = tempfile::tempdir().unwrap();
    let seat = Seat::derive("lyon", "salle-1", "poste-05").unwrap();
    let profile = Profile {
        firmware: Firmware::Uefi,
        accel: Accel::Tcg,
        disk: DiskModel::Virtio,
        nic: Some(NicModel::Virtio),
        memory: Amount::Fixed(1024),
        vcpus: Amount::Fixed(1),
        health: HealthCheck {
            serial_marker: true,
            guest_agent: true,
            within_secs: 600,
        },
        ..Profile::default()
    };
    let machine = Machine {
        profile,
        seat: seat.clone(),
        host: host_facts(Network::Nat),
    };
    let overlay = dir.path().join("overlay.qcow2");
    let mut config = QemuConfig::with_machine("poste-05", &overlay, machine);
    config.powerdown_grace = Duration::from_secs(120);
    config.resume = true;
    let mut vm = Qemu::new(config).unwrap();
    let state = dir.path().join("pristine.state");

    // Session 1: a cold boot, saved once healthy.
    vm.prepare(&master).unwrap();
    vm.start(&master).unwrap();
    assert_eq!(vm.wait_healthy().unwrap(), Health::Healthy);
    assert!(!vm.restored());
    let accel = vm.accel_text().unwrap();
    assert!(accel.contains("state saved"), "{accel}");
    assert!(state.is_file(), "no saved state");
    let mut qga = vm.guest_agent(Duration::from_secs(10)).unwrap();
    qga.write_file("/root/trainee.txt", b"session 1 was here\n")
        .unwrap();
    drop(qga);

    // The session ends; the next one restores the saved guest.
    vm.reset().unwrap();
    vm.start(&master).unwrap();
    assert_eq!(vm.wait_healthy().unwrap(), Health::Healthy);
    assert!(vm.restored(), "{:?}", vm.accel_text());
    assert!(vm
        .accel_text()
        .unwrap()
        .contains("restored the saved pristine state"));
    let mut qga = vm.guest_agent(Duration::from_secs(10)).unwrap();
    let (code, _) = run_in_guest(&mut qga, "/usr/bin/test", &["-e", "/root/trainee.txt"]);
    assert_eq!(code, Some(1), "session 1's file survived the reset");
    assert_eq!(qga.hostname().unwrap(), seat.hostname.as_str());
    let (_, guest_now) = run_in_guest(&mut qga, "/bin/date", &["+%s"]);
    let skew = guest_now.trim().parse::<i64>().unwrap() - host_secs();
    assert!(
        skew.abs() < 60,
        "the restored guest's clock is {skew} s off"
    );
    drop(qga);

    // A damaged saved state: the restore fails, a cold boot follows, and saves anew.
    vm.reset().unwrap();
    let f = fs::OpenOptions::new().write(true).open(&state).unwrap();
    f.set_len(4096).unwrap();
    drop(f);
    vm.start(&master).unwrap();
    assert_eq!(vm.wait_healthy().unwrap(), Health::Healthy);
    assert!(!vm.restored());
    let accel = vm.accel_text().unwrap();
    assert!(
        accel.contains("restoring the saved state failed"),
        "the failed restore is not reported: {accel}"
    );
    assert!(fs::metadata(&state).unwrap().len() > 4096, "no new state");
    vm.stop_now().unwrap();
}
