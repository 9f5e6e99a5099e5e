//! USB devices plugged into the NUC, passed to the guest by the site's policy ([`UsbPolicy`]:
//! none, storage, all).
//!
//! Pure decisions over what sysfs says: [`read_devices`] reads `/sys/bus/usb/devices` (or a test's
//! copy of it) into [`UsbDevice`]s, [`passes`] says whether the policy gives one to the guest,
//! [`reconcile`] turns what is plugged and what the guest has into QMP commands ([`Action`]:
//! `device_add usb-host` / `device_del`). QEMU is given the device by bus, port, vendor and
//! product (not by its address, which QEMU refuses for a device it cannot open at once, and
//! which changes at every plug): QEMU attaches what matches on that port, nothing else. The hypervisor runs them while the VM
//! runs, at every tick (`Qemu::sync_usb`): a device plugged in during a session reaches the guest
//! within a tick, one pulled out leaves it.
//!
//! Never passed, whatever the policy: hubs (their devices are passed one by one) and keyboards and
//! mice (HID: the kiosk's display already gives them to the guest, and passing them would take
//! the NUC's own keyboard away from it). `storage` passes a device only when every interface of it
//! is mass storage (class 08): a USB stick or a card reader, not a phone or a printer that also
//! shows a storage interface.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

pub use image_tools::profile::UsbPolicy;
use serde_json::{json, Value};

/// USB class codes (usb.org): mass storage, HID, hub.
const CLASS_STORAGE: u8 = 0x08;
const CLASS_HID: u8 = 0x03;
const CLASS_HUB: u8 = 0x09;

/// One device plugged into the NUC, as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbDevice {
    /// sysfs's name for its port, e.g. `1-2.3`.
    pub port: String,
    pub bus: u16,
    pub addr: u16,
    pub vendor: u16,
    pub product: u16,
    /// `bDeviceClass` (0: per interface).
    pub class: u8,
    /// `bInterfaceClass` of each interface of its active configuration.
    pub interfaces: Vec<u8>,
}

impl UsbDevice {
    /// The QMP id of the guest's copy: the port and what is plugged into it.
    pub fn qmp_id(&self) -> String {
        format!("usb-{}-{:04x}-{:04x}", self.port, self.vendor, self.product)
    }

    /// The port on its bus as QEMU names it: `2.3` for sysfs's `1-2.3`.
    pub fn host_port(&self) -> &str {
        self.port
            .split_once('-')
            .map_or(self.port.as_str(), |(_, p)| p)
    }
}

/// Whether `policy` gives `device` to the guest.
pub fn passes(policy: UsbPolicy, device: &UsbDevice) -> bool {
    let classes = || std::iter::once(device.class).chain(device.interfaces.iter().copied());
    if classes().any(|c| c == CLASS_HUB || c == CLASS_HID) {
        return false;
    }
    match policy {
        UsbPolicy::None => false,
        UsbPolicy::All => true,
        UsbPolicy::Storage => {
            !device.interfaces.is_empty()
                && device.interfaces.iter().all(|&c| c == CLASS_STORAGE)
                && (device.class == 0 || device.class == CLASS_STORAGE)
        }
    }
}

/// A QMP command for the running VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Give the guest this device.
    Add(UsbDevice),
    /// Take this device (its QMP id) from the guest: it was pulled out, or the policy changed.
    Remove(String),
}

impl Action {
    /// The QMP command and its arguments; devices go on the controller `bus` (`usbpass.0`).
    pub fn qmp(&self, bus: &str) -> (&'static str, Value) {
        match self {
            Action::Add(d) => (
                "device_add",
                json!({
                    "driver": "usb-host",
                    "id": d.qmp_id(),
                    "bus": bus,
                    "hostbus": d.bus,
                    "hostport": d.host_port(),
                    "vendorid": d.vendor,
                    "productid": d.product,
                }),
            ),
            Action::Remove(id) => ("device_del", json!({ "id": id })),
        }
    }
}

/// What to do so that the guest has exactly the plugged devices `policy` passes: `attached` are
/// the QMP ids the guest has now. Removals first, then additions in port order.
pub fn reconcile(
    policy: UsbPolicy,
    plugged: &[UsbDevice],
    attached: &BTreeMap<String, UsbDevice>,
) -> Vec<Action> {
    let wanted: BTreeMap<String, &UsbDevice> = plugged
        .iter()
        .filter(|d| passes(policy, d))
        .map(|d| (d.qmp_id(), d))
        .collect();
    let mut actions: Vec<Action> = attached
        .keys()
        .filter(|id| !wanted.contains_key(*id))
        .map(|id| Action::Remove(id.clone()))
        .collect();
    let mut adds: Vec<&UsbDevice> = wanted
        .iter()
        .filter(|(id, _)| !attached.contains_key(*id))
        .map(|(_, d)| *d)
        .collect();
    adds.sort_by(|a, b| a.port.cmp(&b.port));
    actions.extend(adds.into_iter().map(|d| Action::Add(d.clone())));
    actions
}

fn read_attr(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn hex<T: TryFrom<u32>>(dir: &Path, name: &str) -> Option<T> {
    let v = u32::from_str_radix(&read_attr(dir, name)?, 16).ok()?;
    T::try_from(v).ok()
}

fn decimal(dir: &Path, name: &str) -> Option<u16> {
    read_attr(dir, name)?.parse().ok()
}

/// The devices under `root` (`/sys/bus/usb/devices`): the entries named by port (`1-2`,
/// `3-1.4`), not the root hubs (`usb1`) nor the interfaces (`1-2:1.0`), which are read as their
/// device's. An entry that cannot be read (pulled out while reading) is left out.
pub fn read_devices(root: &Path) -> Vec<UsbDevice> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut devices = Vec::new();
    for port in names
        .iter()
        .filter(|n| !n.starts_with("usb") && !n.contains(':'))
    {
        let dir = root.join(port);
        let device = (|| {
            Some(UsbDevice {
                port: port.clone(),
                bus: decimal(&dir, "busnum")?,
                addr: decimal(&dir, "devnum")?,
                vendor: hex(&dir, "idVendor")?,
                product: hex(&dir, "idProduct")?,
                class: hex(&dir, "bDeviceClass")?,
                interfaces: names
                    .iter()
                    .filter(|n| {
                        n.split_once(':')
                            .is_some_and(|(device, _)| device == port.as_str())
                    })
                    .filter_map(|n| hex(&root.join(n), "bInterfaceClass"))
                    .collect(),
            })
        })();
        devices.extend(device);
    }
    devices
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A device directory as sysfs has it, with one interface per class.
    fn plug(root: &Path, port: &str, bus: u16, addr: u16, class: u8, interfaces: &[u8]) {
        let dir = root.join(port);
        fs::create_dir_all(&dir).unwrap();
        for (name, value) in [
            ("busnum", bus.to_string()),
            ("devnum", addr.to_string()),
            ("idVendor", "0781".to_owned()),
            ("idProduct", "5581".to_owned()),
            ("bDeviceClass", format!("{class:02x}")),
        ] {
            fs::write(dir.join(name), format!("{value}\n")).unwrap();
        }
        for (i, c) in interfaces.iter().enumerate() {
            let intf = root.join(format!("{port}:1.{i}"));
            fs::create_dir_all(&intf).unwrap();
            fs::write(intf.join("bInterfaceClass"), format!("{c:02x}\n")).unwrap();
        }
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // The root hub and a hub on port 1-1.
        plug(root, "usb1", 1, 1, 0x09, &[0x09]);
        plug(root, "1-1", 1, 2, 0x09, &[0x09]);
        // The NUC's keyboard, behind the hub.
        plug(root, "1-1.1", 1, 3, 0x00, &[0x03, 0x03]);
        // A USB stick.
        plug(root, "1-1.2", 1, 4, 0x00, &[0x08]);
        // A phone: storage and something else (MTP).
        plug(root, "1-2", 1, 5, 0x00, &[0x08, 0xff]);
        // A printer.
        plug(root, "2-1", 2, 2, 0x00, &[0x07]);
        dir
    }

    #[test]
    fn sysfs_reads_into_devices_with_their_interfaces() {
        let dir = fixture();
        let devices = read_devices(dir.path());
        let ports: Vec<&str> = devices.iter().map(|d| d.port.as_str()).collect();
        assert_eq!(ports, ["1-1", "1-1.1", "1-1.2", "1-2", "2-1"]);
        let stick = &devices[2];
        assert_eq!((stick.bus, stick.addr), (1, 4));
        assert_eq!((stick.vendor, stick.product), (0x0781, 0x5581));
        assert_eq!(stick.interfaces, [0x08]);
        assert_eq!(devices[3].interfaces, [0x08, 0xff]);
        // A device pulled out half-way through is left out; no sysfs at all: nothing.
        fs::remove_file(dir.path().join("2-1/devnum")).unwrap();
        assert_eq!(read_devices(dir.path()).len(), 4);
        assert!(read_devices(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn each_policy_passes_what_it_says_and_never_hubs_or_the_keyboard() {
        let dir = fixture();
        let devices = read_devices(dir.path());
        let passed = |policy| -> Vec<String> {
            devices
                .iter()
                .filter(|d| passes(policy, d))
                .map(|d| d.port.clone())
                .collect()
        };
        assert!(passed(UsbPolicy::None).is_empty());
        assert_eq!(passed(UsbPolicy::Storage), ["1-1.2"]);
        assert_eq!(passed(UsbPolicy::All), ["1-1.2", "1-2", "2-1"]);
    }

    #[test]
    fn plugging_and_pulling_out_become_device_add_and_device_del() {
        let dir = fixture();
        let root = dir.path();
        let mut attached = BTreeMap::new();
        let actions = reconcile(UsbPolicy::Storage, &read_devices(root), &attached);
        assert_eq!(actions.len(), 1);
        let Action::Add(stick) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            actions[0].qmp("usbpass.0"),
            (
                "device_add",
                json!({"driver": "usb-host", "id": "usb-1-1.2-0781-5581", "bus": "usbpass.0",
                       "hostbus": 1, "hostport": "1.2", "vendorid": 0x0781, "productid": 0x5581})
            )
        );
        attached.insert(stick.qmp_id(), stick.clone());
        // Nothing changed: nothing to do.
        assert!(reconcile(UsbPolicy::Storage, &read_devices(root), &attached).is_empty());
        // A second stick plugged in, the first pulled out.
        plug(root, "2-2", 2, 7, 0x08, &[0x08]);
        fs::remove_dir_all(root.join("1-1.2")).unwrap();
        fs::remove_dir_all(root.join("1-1.2:1.0")).unwrap();
        let actions = reconcile(UsbPolicy::Storage, &read_devices(root), &attached);
        assert_eq!(actions[0], Action::Remove("usb-1-1.2-0781-5581".into()));
        assert_eq!(
            actions[0].qmp("usbpass.0"),
            ("device_del", json!({"id": "usb-1-1.2-0781-5581"}))
        );
        assert!(matches!(&actions[1], Action::Add(d) if d.port == "2-2"));
        assert_eq!(actions.len(), 2);
        // The site's policy turned to none: everything the guest has goes.
        let actions = reconcile(UsbPolicy::None, &read_devices(root), &attached);
        assert_eq!(actions, [Action::Remove("usb-1-1.2-0781-5581".into())]);
    }
}
