//! The machine's stable hardware id, and the MAC addresses of its interfaces.
//!
//! The id names the NUC for ever (enrolment, reports), so it must survive a reinstall of the agent
//! and never come from something that changes on its own. Sources, first usable one wins:
//! 1. the DMI product UUID (`/sys/class/dmi/id/product_uuid`, set by the manufacturer);
//! 2. `/etc/machine-id` (set at OS install);
//! 3. the MAC address of the first physical network interface, by name (then of any interface
//!    other than loopback, when none is physical).
//!
//! Firmware often carries placeholders instead of a UUID ("Not Settable", all zeros, all `f`s,
//! "To Be Filled By O.E.M."); those are refused, as is anything that is not a UUID, so two NUCs
//! never share an id by accident. Every function takes the file-system root as a parameter (`/` in
//! production) so tests run against a temp dir of fake files. Guaranteed: the same files give the
//! same id. Not guaranteed: uniqueness when a manufacturer burned the same "UUID" into every board
//! (nothing on the machine can tell).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use image_tools::NodeId;

/// Where the id came from; reported with it so the DSI can tell a weak id (a MAC) from a strong one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdSource {
    DmiProductUuid,
    MachineId,
    Mac { interface: String },
}

impl fmt::Display for IdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSource::DmiProductUuid => f.write_str("dmi-product-uuid"),
            IdSource::MachineId => f.write_str("machine-id"),
            IdSource::Mac { interface } => write!(f, "mac of {interface}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardwareId {
    pub id: NodeId,
    pub source: IdSource,
}

/// A 48-bit MAC address. `Display` is `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `aa:bb:cc:dd:ee:ff` (either case, surrounding whitespace allowed).
    pub fn parse(s: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut parts = s.trim().split(':');
        for byte in &mut out {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(out))
    }

    /// Not usable as an identity: all zeros (loopback, some virtual devices) or broadcast.
    pub fn is_placeholder(&self) -> bool {
        self.0 == [0; 6] || self.0 == [0xff; 6]
    }

    /// Lower-case hex without separators, e.g. `aabbccddeeff`.
    pub fn hex(&self) -> String {
        image_tools::ids::hex(&self.0)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One network interface and its MAC, as listed for Wake-on-LAN reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceMac {
    pub interface: String,
    pub mac: Mac,
    /// Backed by a device (has `device` in sysfs), as opposed to a bridge, tap or veth.
    pub physical: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no usable hardware id under {root}: {}", tried.join("; "))]
    NotFound { root: PathBuf, tried: Vec<String> },
    #[error("cannot list network interfaces in {path}")]
    Interfaces { path: PathBuf, source: io::Error },
}

const DMI_UUID: &str = "sys/class/dmi/id/product_uuid";
const MACHINE_ID: &str = "etc/machine-id";
const NET: &str = "sys/class/net";

/// The machine's hardware id, read under `root` (`/` in production).
pub fn hardware_id(root: &Path) -> Result<HardwareId, IdentityError> {
    let mut tried = Vec::new();
    let uuid_path = root.join(DMI_UUID);
    match read_small(&uuid_path) {
        Ok(text) => match dmi_uuid(&text) {
            Some(id) => {
                return Ok(HardwareId {
                    id,
                    source: IdSource::DmiProductUuid,
                })
            }
            None => tried.push(format!(
                "{}: placeholder {:?}",
                uuid_path.display(),
                excerpt(&text)
            )),
        },
        Err(e) => tried.push(format!("{}: {e}", uuid_path.display())),
    }
    let machine_id_path = root.join(MACHINE_ID);
    match read_small(&machine_id_path) {
        Ok(text) => match machine_id(&text) {
            Some(id) => {
                return Ok(HardwareId {
                    id,
                    source: IdSource::MachineId,
                })
            }
            None => tried.push(format!(
                "{}: not a machine id {:?}",
                machine_id_path.display(),
                excerpt(&text)
            )),
        },
        Err(e) => tried.push(format!("{}: {e}", machine_id_path.display())),
    }
    match interface_macs(root) {
        Ok(macs) => {
            // Physical interfaces first: a bridge or tap appears and vanishes with its software.
            let pick = macs.iter().find(|m| m.physical).or_else(|| macs.first());
            if let Some(m) = pick {
                if let Ok(id) = NodeId::new(&format!("mac-{}", m.mac.hex())) {
                    return Ok(HardwareId {
                        id,
                        source: IdSource::Mac {
                            interface: m.interface.clone(),
                        },
                    });
                }
            }
            tried.push(format!(
                "{}: no interface with a usable MAC",
                root.join(NET).display()
            ));
        }
        Err(e) => tried.push(e.to_string()),
    }
    Err(IdentityError::NotFound {
        root: root.to_owned(),
        tried,
    })
}

/// The interfaces under `root/sys/class/net` with a usable MAC (not loopback, not all zeros nor
/// broadcast), sorted by name.
pub fn interface_macs(root: &Path) -> Result<Vec<InterfaceMac>, IdentityError> {
    let dir = root.join(NET);
    let entries = fs::read_dir(&dir).map_err(|source| IdentityError::Interfaces {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| IdentityError::Interfaces {
            path: dir.clone(),
            source,
        })?;
        let interface = entry.file_name().to_string_lossy().into_owned();
        if interface == "lo" {
            continue;
        }
        let path = entry.path();
        let Some(mac) = read_small(&path.join("address"))
            .ok()
            .and_then(|text| Mac::parse(&text))
        else {
            continue;
        };
        if mac.is_placeholder() {
            continue;
        }
        let physical = path.join("device").exists();
        out.push(InterfaceMac {
            interface,
            mac,
            physical,
        });
    }
    out.sort_by(|a, b| a.interface.cmp(&b.interface));
    Ok(out)
}

/// Reads a sysfs-sized file (at most 4 KiB are looked at).
fn read_small(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    fs::File::open(path)?.take(4096).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn excerpt(text: &str) -> String {
    text.trim().chars().take(40).collect()
}

/// A DMI UUID in canonical 8-4-4-4-12 form that is not a known placeholder, lower-cased.
fn dmi_uuid(text: &str) -> Option<NodeId> {
    let uuid = text.trim().to_ascii_lowercase();
    let groups: Vec<&str> = uuid.split('-').collect();
    let shape_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !shape_ok || repeated_digit(&uuid.replace('-', "")) {
        return None;
    }
    // A placeholder that American Megatrends firmware ships on many boards.
    if uuid == "03000200-0400-0500-0006-000700080009" {
        return None;
    }
    NodeId::new(&uuid).ok()
}

/// 32 hex digits (systemd's format), not all one digit, lower-cased.
fn machine_id(text: &str) -> Option<NodeId> {
    let id = text.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || repeated_digit(&id) {
        return None;
    }
    NodeId::new(&id).ok()
}

/// All the same character, such as all zeros or all `f`s.
fn repeated_digit(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(first) => bytes.all(|b| b == first),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "4c4c4544-0042-3510-8052-b4c04f4e3732";
    const MACHINE: &str = "0123456789abcdef0123456789abcdef";

    struct FakeRoot(tempfile::TempDir);

    impl FakeRoot {
        fn new() -> FakeRoot {
            FakeRoot(tempfile::tempdir().unwrap())
        }
        fn path(&self) -> &Path {
            self.0.path()
        }
        fn file(&self, rel: &str, text: &str) -> &Self {
            let path = self.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
            self
        }
        fn interface(&self, name: &str, mac: &str, physical: bool) -> &Self {
            self.file(&format!("{NET}/{name}/address"), &format!("{mac}\n"));
            if physical {
                fs::create_dir_all(self.path().join(NET).join(name).join("device")).unwrap();
            }
            self
        }
    }

    #[test]
    fn dmi_uuid_wins_and_is_lower_cased() {
        let root = FakeRoot::new();
        root.file(DMI_UUID, &format!("{}\n", UUID.to_uppercase()))
            .file(MACHINE_ID, MACHINE)
            .interface("eno1", "aa:bb:cc:dd:ee:01", true);
        let id = hardware_id(root.path()).unwrap();
        assert_eq!(id.id.as_str(), UUID);
        assert_eq!(id.source, IdSource::DmiProductUuid);
    }

    #[test]
    fn placeholder_uuids_fall_back_to_machine_id() {
        for junk in [
            "00000000-0000-0000-0000-000000000000\n",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "Not Settable\n",
            "Not Present",
            "To Be Filled By O.E.M.",
            "03000200-0400-0500-0006-000700080009",
            "",
            "\n",
            "4c4c4544-0042-3510-8052", // truncated
            "4c4c4544-0042-3510-8052-b4c04f4e373g",
        ] {
            let root = FakeRoot::new();
            root.file(DMI_UUID, junk)
                .file(MACHINE_ID, &format!("{MACHINE}\n"));
            let id = hardware_id(root.path()).unwrap();
            assert_eq!(id.source, IdSource::MachineId, "{junk:?} accepted");
            assert_eq!(id.id.as_str(), MACHINE);
        }
    }

    #[test]
    fn missing_uuid_falls_back_to_machine_id() {
        let root = FakeRoot::new();
        root.file(MACHINE_ID, &MACHINE.to_uppercase());
        let id = hardware_id(root.path()).unwrap();
        assert_eq!(id.source, IdSource::MachineId);
        assert_eq!(id.id.as_str(), MACHINE);
    }

    #[test]
    fn junk_machine_ids_fall_back_to_the_first_physical_mac() {
        for junk in [
            "",
            "uninitialized\n",
            "00000000000000000000000000000000",
            "0123",
        ] {
            let root = FakeRoot::new();
            root.file(DMI_UUID, "Not Settable")
                .file(MACHINE_ID, junk)
                .interface("lo", "00:00:00:00:00:00", false)
                .interface("br0", "02:42:ac:11:00:02", false)
                .interface("enp2s0", "AA:BB:CC:DD:EE:02", true)
                .interface("eno1", "aa:bb:cc:dd:ee:01", true);
            let id = hardware_id(root.path()).unwrap();
            assert_eq!(id.id.as_str(), "mac-aabbccddee01", "{junk:?}");
            assert_eq!(
                id.source,
                IdSource::Mac {
                    interface: "eno1".into()
                }
            );
        }
    }

    #[test]
    fn without_physical_interfaces_any_real_mac_will_do() {
        let root = FakeRoot::new();
        root.interface("lo", "00:00:00:00:00:00", false)
            .interface("dummy0", "00:00:00:00:00:00", false)
            .interface("wlan0", "not a mac", false)
            .interface("virbr0", "52:54:00:12:34:56", false);
        let id = hardware_id(root.path()).unwrap();
        assert_eq!(id.id.as_str(), "mac-525400123456");
    }

    #[test]
    fn nothing_usable_is_an_error_that_says_what_was_tried() {
        let root = FakeRoot::new();
        root.file(DMI_UUID, "Not Settable")
            .file(MACHINE_ID, "")
            .interface("lo", "00:00:00:00:00:00", false);
        let err = hardware_id(root.path()).unwrap_err().to_string();
        assert!(err.contains("product_uuid"), "{err}");
        assert!(err.contains("machine-id"), "{err}");
        assert!(err.contains("no interface"), "{err}");
        // Not even a sysfs:
        let empty = FakeRoot::new();
        assert!(matches!(
            hardware_id(empty.path()),
            Err(IdentityError::NotFound { .. })
        ));
    }

    #[test]
    fn interface_macs_lists_usable_ones_sorted() {
        let root = FakeRoot::new();
        root.interface("lo", "00:00:00:00:00:00", false)
            .interface("eno1", "aa:bb:cc:dd:ee:01", true)
            .interface("bond0", "ff:ff:ff:ff:ff:ff", false)
            .interface("tap0", "fe:54:00:00:00:01", false);
        let macs = interface_macs(root.path()).unwrap();
        let listed: Vec<(String, String, bool)> = macs
            .iter()
            .map(|m| (m.interface.clone(), m.mac.to_string(), m.physical))
            .collect();
        assert_eq!(
            listed,
            [
                ("eno1".into(), "aa:bb:cc:dd:ee:01".into(), true),
                ("tap0".into(), "fe:54:00:00:00:01".into(), false),
            ]
        );
        assert!(interface_macs(&root.path().join("nowhere")).is_err());
    }

    #[test]
    fn mac_parsing_is_strict() {
        assert_eq!(
            Mac::parse("aa:bb:cc:dd:ee:ff\n"),
            Some(Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]))
        );
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "a:bb:cc:dd:ee:ff",
            "zz:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad:?}");
        }
    }
}
