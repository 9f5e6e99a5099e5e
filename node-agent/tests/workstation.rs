//! The trainee's workstation with a real guest: the Debian test master (`guest/build-debian.sh`,
//! built once per run and cached) boots under a machine profile, BIOS and UEFI, under TCG (a Linux
//! kernel hangs under the nested KVM of the machines these tests run on; a NUC runs KVM).
//!
//! One test per firmware, each two sessions on one VM, as a seat lives them:
//! session 1 boots and is healthy (serial marker and guest-ping), the guest has the seat's
//! hostname and an address from DHCP, a trainee's file is written inside it through the guest
//! agent; the session end powers the guest off by ACPI (its serial log shows the shutdown) and
//! resets the overlay; session 2 boots healthy again and the file is gone.
//!
//! A third test gives the seat what a profile may add (a persistent second disk, a virtual TPM, a
//! sound card): what the trainee wrote on the second disk is still there in session 2 while the
//! master's disk forgot its file, and the guest sees its TPM and its sound card.
//!
//! The BIOS test runs the profile for old Windows images (SATA disk, e1000 NIC), the UEFI test the
//! virtio one, so both device model sets boot. Timings go to stderr (docs/BENCHMARKS.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod guest;

use std::fs;
use std::time::{Duration, Instant};

use nightcast_agent::health::Health;
use nightcast_agent::hypervisor::{host_facts, Hypervisor, Machine, Qemu, QemuConfig, Stopped};
use nightcast_agent::profile::{
    Accel, Amount, DiskModel, Firmware, HealthCheck, Network, NicModel, Profile, Seat,
};
use nightcast_agent::qmp::GuestAgent;

#[allow(clippy::disallowed_methods)] // a test measures wall time
fn now() -> Instant {
    Instant::now()
}

fn profile(firmware: Firmware) -> Profile {
    let (disk, nic) = match firmware {
        Firmware::Bios => (DiskModel::Sata, NicModel::E1000),
        Firmware::Uefi => (DiskModel::Virtio, NicModel::Virtio),
    };
    Profile {
        firmware,
        accel: Accel::Tcg,
        disk,
        nic: Some(nic),
        memory: Amount::Fixed(1024),
        vcpus: Amount::Fixed(2),
        health: HealthCheck {
            serial_marker: true,
            guest_agent: true,
            // Under TCG on a busy 2-core machine a boot has taken 100 s.
            within_secs: 400,
        },
        ..Profile::default()
    }
}

fn run_in_guest(qga: &mut GuestAgent, path: &str, args: &[&str]) -> (Option<i64>, String) {
    let out = qga
        .exec(path, args, Duration::from_millis(200), 150)
        .unwrap();
    (out.code, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn two_sessions(firmware: Firmware, seat_name: &str) {
    let master = guest::debian();
    let master_before = fs::metadata(&master).unwrap().modified().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seat = Seat::derive("lyon", "salle-1", seat_name).unwrap();
    let machine = Machine {
        profile: profile(firmware),
        seat: seat.clone(),
        host: host_facts(Network::Nat),
    };
    let mut config =
        QemuConfig::with_machine(seat_name, &dir.path().join("overlay.qcow2"), machine);
    config.powerdown_grace = Duration::from_secs(120);
    let mut vm = Qemu::new(config).unwrap();

    // Session 1.
    let t0 = now();
    vm.start(&master).unwrap();
    let health = vm.wait_healthy().unwrap();
    let boot = t0.elapsed();
    assert_eq!(
        health,
        Health::Healthy,
        "serial log:\n{}",
        String::from_utf8_lossy(&vm.serial_log().unwrap())
    );
    let mut qga = vm.guest_agent(Duration::from_secs(10)).unwrap();
    assert_eq!(qga.hostname().unwrap(), seat.hostname.as_str());
    // The marker comes once networkd runs; the lease may take a little longer.
    let mut addresses = Vec::new();
    for _ in 0..120 {
        addresses = qga.ipv4_addresses().unwrap();
        if addresses.iter().any(|(_, ip)| ip.starts_with("10.0.2.")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        addresses.iter().any(|(_, ip)| ip.starts_with("10.0.2.")),
        "no DHCP address from QEMU's NAT: {addresses:?}"
    );
    let (_, macs) = run_in_guest(
        &mut qga,
        "/bin/sh",
        &["-c", "cat /sys/class/net/e*/address"],
    );
    assert!(macs.contains(&seat.mac.to_string()), "guest MACs: {macs}");
    qga.write_file("/root/trainee.txt", b"session 1 was here\n")
        .unwrap();
    let (code, text) = run_in_guest(&mut qga, "/bin/sh", &["-c", "sync; cat /root/trainee.txt"]);
    assert_eq!((code, text.as_str()), (Some(0), "session 1 was here\n"));

    drop(qga); // QEMU serves one guest agent client at a time

    // The session ends: ACPI power-off, fresh overlay.
    let t1 = now();
    vm.reset().unwrap();
    let reset = t1.elapsed();
    assert_eq!(vm.stopped(), Some(Stopped::Acpi));
    let serial = String::from_utf8_lossy(&vm.serial_log().unwrap()).into_owned();
    assert!(
        serial.contains(&format!("NIGHTCAST-SHUTDOWN {}", seat.hostname)),
        "the guest's serial log shows no shutdown:\n{serial}"
    );

    // Session 2, on the same master.
    let t2 = now();
    vm.start(&master).unwrap();
    assert_eq!(vm.wait_healthy().unwrap(), Health::Healthy);
    let second_boot = t2.elapsed();
    let mut qga = vm.guest_agent(Duration::from_secs(10)).unwrap();
    let (code, _) = run_in_guest(&mut qga, "/usr/bin/test", &["-e", "/root/trainee.txt"]);
    assert_eq!(code, Some(1), "session 1's file survived the reset");
    let (_, hostname) = run_in_guest(&mut qga, "/bin/cat", &["/etc/hostname"]);
    assert_eq!(hostname.trim(), seat.hostname.as_str());
    drop(qga);
    vm.stop().unwrap();

    assert_eq!(
        fs::metadata(&master).unwrap().modified().unwrap(),
        master_before,
        "the master changed"
    );
    eprintln!(
        "workstation {firmware:?}: start to healthy {:.1} s; session end (ACPI power-off + fresh \
         overlay) {:.1} s; reset + boot to healthy {:.1} s",
        boot.as_secs_f64(),
        reset.as_secs_f64(),
        (reset + second_boot).as_secs_f64()
    );
}

#[test]
fn bios_sata_e1000_guest_boots_has_the_seat_identity_and_forgets_the_session() {
    two_sessions(Firmware::Bios, "poste-03");
}

#[test]
fn uefi_virtio_guest_boots_has_the_seat_identity_and_forgets_the_session() {
    two_sessions(Firmware::Uefi, "poste-04");
}

#[test]
fn a_seats_persistent_disk_survives_the_reset_and_the_guest_has_a_tpm_and_a_sound_card() {
    let master = guest::debian();
    let dir = tempfile::tempdir().unwrap();
    let seat = Seat::derive("lyon", "salle-1", "poste-05").unwrap();
    let machine = Machine {
        profile: Profile {
            persistent_disk: Some("64M".parse().unwrap()),
            tpm: true,
            audio: true,
            ..profile(Firmware::Uefi)
        },
        seat: seat.clone(),
        host: host_facts(Network::Nat),
    };
    let mut config =
        QemuConfig::with_machine("poste-05", &dir.path().join("overlay.qcow2"), machine);
    config.powerdown_grace = Duration::from_secs(120);
    let mut vm = Qemu::new(config).unwrap();
    let disk = vm.paths().unwrap().persistent_disk(&seat);

    // Session 1: the trainee writes on both disks.
    vm.start(&master).unwrap();
    let swtpm = vm.tpm_pid().expect("no swtpm for a profile with a TPM");
    assert!(disk.is_file(), "the agent made no persistent disk");
    assert_eq!(
        vm.wait_healthy().unwrap(),
        Health::Healthy,
        "serial log:\n{}",
        String::from_utf8_lossy(&vm.serial_log().unwrap())
    );
    let mut qga = vm.guest_agent(Duration::from_secs(10)).unwrap();
    let data = "/dev/disk/by-id/virtio-nightcast-data";
    let (code, _) = run_in_guest(
        &mut qga,
        "/bin/sh",
        &[
            "-c",
            &format!("printf 'course material of week 3' | dd of={data} conv=fsync status=none"),
        ],
    );
    assert_eq!(code, Some(0), "cannot write the persistent disk {data}");
    qga.write_file("/root/trainee.txt", b"session 1 was here\n")
        .unwrap();
    // The TPM (CRB under UEFI) and the sound card (PCI class 0403: HD Audio).
    let (code, tpm) = run_in_guest(
        &mut qga,
        "/bin/sh",
        &[
            "-c",
            "ls /dev/tpm0 && cat /sys/class/tpm/tpm0/tpm_version_major",
        ],
    );
    assert_eq!((code, tpm.as_str()), (Some(0), "/dev/tpm0\n2\n"));
    let (_, classes) = run_in_guest(
        &mut qga,
        "/bin/sh",
        &["-c", "cat /sys/bus/pci/devices/*/class"],
    );
    assert!(
        classes.contains("0x040300"),
        "no HD Audio card in the guest: {classes}"
    );
    drop(qga);

    // The session ends: the master's disk is reset, the TPM's process goes with the VM.
    vm.reset().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{swtpm}")).exists(),
        "swtpm {swtpm} outlived its VM"
    );

    // Session 2.
    vm.start(&master).unwrap();
    assert_eq!(vm.wait_healthy().unwrap(), Health::Healthy);
    let mut qga = vm.guest_agent(Duration::from_secs(10)).unwrap();
    let (code, _) = run_in_guest(&mut qga, "/usr/bin/test", &["-e", "/root/trainee.txt"]);
    assert_eq!(
        code,
        Some(1),
        "session 1's file on the master's disk survived the reset"
    );
    let (code, kept) = run_in_guest(&mut qga, "/bin/sh", &["-c", &format!("head -c 25 {data}")]);
    assert_eq!(
        (code, kept.as_str()),
        (Some(0), "course material of week 3"),
        "the persistent disk lost what session 1 wrote"
    );
    drop(qga);
    vm.stop().unwrap();
    assert_eq!(vm.tpm_pid(), None);
}
