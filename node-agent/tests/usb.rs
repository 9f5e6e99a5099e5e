//! USB passthrough by the site's policy, against a real QEMU: the NUC's devices come from a test
//! copy of sysfs (there is no USB device on the machines these tests run on), and what the agent
//! sends QEMU over QMP (`device_add usb-host,hostbus=,hostport=,vendorid=,productid=` /
//! `device_del`) is checked in
//! QEMU's own device tree. No guest is needed: the VM sits in its firmware with a blank disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use nightcast_agent::hypervisor::{host_facts, Hypervisor, Machine, Qemu, QemuConfig, VmStatus};
use nightcast_agent::profile::{
    Accel, Amount, Firmware, HealthCheck, Network, Profile, Seat, UsbPolicy,
};

/// A device directory as sysfs has it, with one interface per class.
fn plug(root: &Path, port: &str, bus: u16, addr: u16, interfaces: &[u8]) {
    let dir = root.join(port);
    fs::create_dir_all(&dir).unwrap();
    for (name, value) in [
        ("busnum", bus.to_string()),
        ("devnum", addr.to_string()),
        ("idVendor", "0781".to_owned()),
        ("idProduct", "5581".to_owned()),
        ("bDeviceClass", "00".to_owned()),
    ] {
        fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
    for (i, c) in interfaces.iter().enumerate() {
        let intf = root.join(format!("{port}:1.{i}"));
        fs::create_dir_all(&intf).unwrap();
        fs::write(intf.join("bInterfaceClass"), format!("{c:02x}\n")).unwrap();
    }
}

fn unplug(root: &Path, port: &str) {
    for entry in fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == port || name.starts_with(&format!("{port}:")) {
            fs::remove_dir_all(root.join(name)).unwrap();
        }
    }
}

/// The ids of the devices given on QEMU's command line or by `device_add`.
fn peripherals(vm: &Qemu) -> Vec<String> {
    let mut qmp = vm.qmp(Duration::from_secs(5)).unwrap();
    let list = qmp
        .execute(
            "qom-list",
            serde_json::json!({ "path": "/machine/peripheral" }),
        )
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_usb_stick_plugged_in_reaches_the_guest_and_leaves_it_when_pulled_out_the_keyboard_never() {
    let dir = tempfile::tempdir().unwrap();
    let sysfs = dir.path().join("sys-bus-usb-devices");
    plug(&sysfs, "1-1", 1, 3, &[0x03, 0x03]); // the NUC's keyboard
    let master = dir.path().join("blank.img");
    fs::File::create(&master)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let machine = Machine {
        profile: Profile {
            firmware: Firmware::Bios,
            accel: Accel::Tcg,
            nic: None,
            memory: Amount::Fixed(128),
            vcpus: Amount::Fixed(1),
            audio: false,
            health: HealthCheck {
                serial_marker: true,
                guest_agent: false,
                within_secs: 600,
            },
            ..Profile::default()
        },
        seat: Seat::derive("lyon", "salle-1", "pc-1").unwrap(),
        host: nightcast_agent::profile::Host {
            usb: UsbPolicy::Storage,
            ..host_facts(Network::Nat)
        },
    };
    let mut config = QemuConfig::with_machine(
        "pc-1",
        &dir.path().join("vm").join("overlay.qcow2"),
        machine,
    );
    fs::create_dir_all(dir.path().join("vm")).unwrap();
    config.usb_devices = sysfs.clone();
    config.powerdown_grace = Duration::ZERO;
    let mut vm = Qemu::new(config).unwrap();
    vm.start(&master).unwrap();
    assert!(
        vm.command_line()
            .iter()
            .any(|a| a == "qemu-xhci,id=usbpass"),
        "no USB controller for the passed devices"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(vm.status().unwrap(), VmStatus::Running);

    // The keyboard stays the NUC's.
    vm.sync_usb();
    assert!(vm.usb_attached().is_empty());
    assert!(!peripherals(&vm).iter().any(|p| p.starts_with("usb-1")));

    // A USB stick plugged in: QEMU gets it.
    plug(&sysfs, "1-2", 1, 4, &[0x08]);
    vm.sync_usb();
    assert_eq!(vm.usb_attached(), ["usb-1-2-0781-5581"]);
    assert!(
        peripherals(&vm).contains(&"usb-1-2-0781-5581".to_owned()),
        "{:?}",
        peripherals(&vm)
    );
    // A phone (storage and MTP) is not passed by `storage`.
    plug(&sysfs, "1-3", 1, 5, &[0x08, 0xff]);
    vm.sync_usb();
    assert_eq!(vm.usb_attached(), ["usb-1-2-0781-5581"]);

    // Pulled out: gone from the guest.
    unplug(&sysfs, "1-2");
    vm.sync_usb();
    assert!(vm.usb_attached().is_empty());
    assert!(
        !peripherals(&vm).contains(&"usb-1-2-0781-5581".to_owned()),
        "{:?}",
        peripherals(&vm)
    );
    vm.stop().unwrap();
}
