use std::process::Command;

use super::*;
use crate::profile::{Firmware, HealthCheck, Network};

/// A profile with `accel = "auto"` on a NUC whose KVM opens, and a health check of one second
/// on the serial marker only.
fn machine() -> Machine {
    Machine {
        profile: Profile {
            firmware: Firmware::Bios,
            accel: Accel::Auto,
            health: HealthCheck {
                serial_marker: true,
                guest_agent: false,
                within_secs: 1,
            },
            ..Profile::default()
        },
        seat: Seat::derive("lyon", "salle-1", "pc-1").unwrap(),
        host: Host {
            kvm: true,
            cpus: 2,
            memory_mib: 1024,
            ..crate::hypervisor::host_facts(Network::Nat)
        },
    }
}

fn accel_arg(vm: &Qemu) -> String {
    let argv = vm.command_line();
    let at = argv.iter().position(|a| a == "-accel").unwrap();
    argv[at + 1].clone()
}

#[test]
fn a_kvm_fall_back_survives_a_restart_of_the_agent_until_qemu_changes() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("blank.img");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&master)
        .arg("1M")
        .status()
        .unwrap();
    assert!(made.success());
    let overlay = dir.path().join("vm").join("overlay.qcow2");
    fs::create_dir_all(overlay.parent().unwrap()).unwrap();
    let config = || {
        let mut c = QemuConfig::with_machine("pc-1", &overlay, machine());
        c.stop_timeout = Duration::from_secs(2);
        c
    };

    // A first agent run: nothing remembered, so KVM; the blank disk never says it is ready, so the
    // guest "did not come up under KVM", which the agent writes down.
    let mut vm = Qemu::new(config()).unwrap();
    assert_eq!(accel_arg(&vm), "kvm");
    vm.start(&master).unwrap();
    assert_eq!(vm.accel(), Some(Chosen::Kvm));
    let verdict = vm.wait_healthy().unwrap();
    assert!(
        matches!(&verdict, Health::Failed(f) if f.retry()),
        "{verdict:?}"
    );
    Hypervisor::stop_now(&mut vm).unwrap();
    drop(vm);
    let path = overlay.parent().unwrap().join(kvm_memory::FILE);
    let stored = kvm_memory::load(&path).unwrap();
    assert_eq!(
        stored.versions,
        kvm_memory::current(Path::new("qemu-system-x86_64"))
    );

    // The agent restarts: the same data directory starts under TCG, and says why.
    let vm = Qemu::new(config()).unwrap();
    assert_eq!(accel_arg(&vm), "tcg");
    // Also when the machine is set after the start (the daemon sets it per master).
    let mut later = Qemu::new(QemuConfig::new("pc-1", &overlay)).unwrap();
    later.set_machine(machine()).unwrap();
    assert_eq!(accel_arg(&later), "tcg");

    // A QEMU upgrade (the record names another version): KVM is tried again.
    let upgraded = kvm_memory::Record {
        versions: kvm_memory::Versions {
            qemu: "QEMU emulator version 7.2.0".into(),
            ..stored.versions.clone()
        },
        ..stored
    };
    kvm_memory::save(&path, &upgraded).unwrap();
    assert_eq!(accel_arg(&Qemu::new(config()).unwrap()), "kvm");
}
