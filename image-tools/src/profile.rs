//! Machine profiles: what a master needs from its VM (firmware, acceleration, disk and NIC models,
//! memory and vCPUs, display, how the guest proves it booted), as the DSI assigns them in the
//! controller's catalogue, a NUC's config states them, and the agent builds QEMU's command from
//! them (`nightcast_agent::profile::argv`).
//!
//! Here because three programs share the type: the controller stores and signs it, the `nightcast`
//! CLI writes it, the agent reads it. [`signed`] is how a profile crosses the relay: a statement
//! signed with the controller's manifest-signing key, which the agent verifies before it reads it.
//!
//! Deliberately not here: the NUC's facts, the seat's identity and the command line itself (the
//! agent's `profile` module), and which profile wins on a NUC (the agent's `profile_source`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod signed;

/// BIOS (SeaBIOS; Windows 7) or UEFI (OVMF; Windows 10/11, Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

/// How the guest's CPU runs: KVM (a NUC), TCG (emulation: slow, works anywhere), or KVM with a
/// reported fall back to TCG when KVM is missing or could not run the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
    Auto,
}

/// The disk controller the guest sees: virtio, or SATA (AHCI) for images without virtio drivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskModel {
    Virtio,
    Sata,
}

/// The network card the guest sees: virtio, or an Intel e1000 that every Windows has a driver for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    Virtio,
    E1000,
}

/// Where the guest's screen goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Display {
    /// No window (tests, headless NUCs); the screen is still there for QMP `screendump`.
    None,
    /// A GTK window, full screen, without menu bar and without a close button. Not a kiosk: GTK's
    /// hotkeys (Ctrl+Alt+M shows the menu, with Quit) cannot be turned off.
    GtkFullScreen,
    /// The NUC's screen as a kiosk: QEMU's SDL window, full screen, no close button, its hotkeys
    /// moved to Left Shift+Ctrl+Alt, a USB tablet so the pointer is the guest's at once (no grab).
    /// The agent lays the window out over the whole X screen and keeps it there (`kiosk`); QEMU
    /// finds the X server in `DISPLAY` (`QemuConfig::x_display`).
    Kiosk,
}

/// Which USB devices plugged into a site's NUCs the guest gets (a site setting, `nightcast site
/// set --usb`): none, mass storage only (USB sticks, card readers), or all (but hubs, and the
/// keyboards and mice the kiosk already gives the guest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsbPolicy {
    #[default]
    None,
    Storage,
    All,
}

/// An amount of the NUC's memory (MiB) or CPUs: fixed, or a percentage of what the NUC has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Amount {
    Fixed(u32),
    Percent(u8),
}

impl Amount {
    /// The amount for a NUC that has `total`, at least `min` and at most `total` (when that is
    /// at least `min`).
    pub fn of(self, total: u64, min: u64) -> u64 {
        let want = match self {
            Amount::Fixed(n) => u64::from(n),
            Amount::Percent(p) => total.saturating_mul(u64::from(p.min(100))) / 100,
        };
        want.min(total).max(min)
    }
}

/// How the guest proves it booted: which signals are required, and how long it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// The line `NIGHTCAST-READY <hostname>` on the first serial port.
    pub serial_marker: bool,
    /// The QEMU guest agent answers `guest-ping`.
    pub guest_agent: bool,
    /// From QEMU's start; past it without every required signal, the boot failed.
    pub within_secs: u64,
}

impl Default for HealthCheck {
    fn default() -> HealthCheck {
        HealthCheck {
            serial_marker: true,
            guest_agent: true,
            within_secs: 180,
        }
    }
}

impl HealthCheck {
    pub fn within(&self) -> Duration {
        Duration::from_secs(self.within_secs)
    }
}

/// What a master needs from its VM. Every field has a default (UEFI, automatic acceleration,
/// virtio, 50 % of memory, 2 vCPUs, no display, both health signals within 180 s, no persistent
/// disk, no TPM, a sound card); unknown fields
/// are refused (a profile a newer controller wrote with a field this agent does not know is
/// refused whole, never half read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    pub firmware: Firmware,
    pub accel: Accel,
    pub disk: DiskModel,
    /// `None`: no NIC at all.
    pub nic: Option<NicModel>,
    /// MiB of the NUC's memory.
    pub memory: Amount,
    pub vcpus: Amount,
    pub display: Display,
    pub health: HealthCheck,
    /// A second disk of this size that the seat keeps across sessions (course material a trainer
    /// leaves for the week); `None`: no second disk. Created empty by the agent on the NUC,
    /// local to that NUC (a spare that takes the seat starts with an empty one).
    pub persistent_disk: Option<DiskSize>,
    /// A virtual TPM 2.0 (swtpm), fresh at every session like the master's disk.
    pub tpm: bool,
    /// A sound card in the guest, played on the NUC's own sound output.
    pub audio: bool,
}

/// The size of a persistent disk, in MiB: typed `512M` or `2G` (MiB and GiB), from 16 MiB to
/// 1 TiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiskSize(std::num::NonZeroU32);

impl DiskSize {
    pub const MIN_MIB: u64 = 16;
    pub const MAX_MIB: u64 = 1 << 20;

    pub fn from_mib(mib: u64) -> Result<DiskSize, ParseError> {
        match u32::try_from(mib).ok().and_then(std::num::NonZeroU32::new) {
            Some(n) if (DiskSize::MIN_MIB..=DiskSize::MAX_MIB).contains(&mib) => Ok(DiskSize(n)),
            _ => Err(parse_err(&format!("{mib}M"), DiskSize::EXPECTED)),
        }
    }

    pub fn mib(self) -> u64 {
        u64::from(self.0.get())
    }

    pub fn bytes(self) -> u64 {
        self.mib() << 20
    }

    const EXPECTED: &'static str = "a size from 16M to 1024G, such as 512M or 2G";
}

impl fmt::Display for DiskSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = self.mib();
        if mib % 1024 == 0 {
            write!(f, "{}G", mib / 1024)
        } else {
            write!(f, "{mib}M")
        }
    }
}

impl FromStr for DiskSize {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<DiskSize, ParseError> {
        let upper = s.trim().to_ascii_uppercase();
        let t = upper
            .strip_suffix("IB")
            .or_else(|| upper.strip_suffix('B'))
            .unwrap_or(&upper);
        let (number, unit) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
            _ => return Err(parse_err(s, DiskSize::EXPECTED)),
        };
        let n: u64 = number
            .trim()
            .parse()
            .map_err(|_| parse_err(s, DiskSize::EXPECTED))?;
        let mib = match unit {
            'M' => n,
            'G' => n.saturating_mul(1024),
            'T' => n.saturating_mul(1 << 20),
            _ => return Err(parse_err(s, DiskSize::EXPECTED)),
        };
        DiskSize::from_mib(mib).map_err(|_| parse_err(s, DiskSize::EXPECTED))
    }
}

impl Serialize for DiskSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DiskSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DiskSize, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for Profile {
    fn default() -> Profile {
        Profile {
            firmware: Firmware::Uefi,
            accel: Accel::Auto,
            disk: DiskModel::Virtio,
            nic: Some(NicModel::Virtio),
            memory: Amount::Percent(50),
            vcpus: Amount::Fixed(2),
            display: Display::None,
            health: HealthCheck::default(),
            persistent_disk: None,
            tpm: false,
            audio: true,
        }
    }
}

/// Where the profile of a NUC's VM start came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The NUC's own `[profiles.NAME]` (the expert override).
    Own,
    /// The controller's catalogue (signed, verified by the NUC).
    Catalogue,
    /// The NUC's own `[profile]`: the catalogue has none for the master.
    Default,
}

impl Source {
    /// One word, for a table: `catalogue`, `own`, `default`.
    pub fn word(self) -> &'static str {
        match self {
            Source::Own => "own",
            Source::Catalogue => "catalogue",
            Source::Default => "default",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Own => "this NUC's own [profiles] entry (overrides the catalogue)",
            Source::Catalogue => "the catalogue",
            Source::Default => "this NUC's default [profile] (the catalogue has none)",
        })
    }
}

/// A value a DSI typed that is not one of the choices; names the value and the choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: expected {expected}")]
pub struct ParseError {
    pub value: String,
    pub expected: &'static str,
}

fn parse_err(value: &str, expected: &'static str) -> ParseError {
    ParseError {
        value: value.chars().take(40).collect(),
        expected,
    }
}

/// The words of each choice: the same as in TOML and JSON.
macro_rules! words {
    ($ty:ident, $expected:literal, $($variant:ident => $word:literal),+) => {
        impl $ty {
            pub fn word(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }

        impl FromStr for $ty {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, ParseError> {
                $(if s.eq_ignore_ascii_case($word) {
                    return Ok($ty::$variant);
                })+
                Err(parse_err(s, $expected))
            }
        }
    };
}

words!(UsbPolicy, "none, storage or all", None => "none", Storage => "storage", All => "all");
words!(Firmware, "bios or uefi", Bios => "bios", Uefi => "uefi");
words!(Accel, "kvm, tcg or auto", Kvm => "kvm", Tcg => "tcg", Auto => "auto");
words!(DiskModel, "virtio or sata", Virtio => "virtio", Sata => "sata");
words!(NicModel, "virtio or e1000", Virtio => "virtio", E1000 => "e1000");
words!(
    Display,
    "none, kiosk or gtk-full-screen",
    None => "none",
    Kiosk => "kiosk",
    GtkFullScreen => "gtk-full-screen"
);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Fixed(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for Amount {
    type Err = ParseError;

    /// `60%` (of the NUC's) or `4096` (MiB of memory, or vCPUs).
    fn from_str(s: &str) -> Result<Amount, ParseError> {
        let expected = "a number, or a percentage of the NUC's such as 60%";
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Amount::Percent(p)),
                _ => Err(parse_err(s, "a percentage from 1% to 100%")),
            },
            None => match s.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Amount::Fixed(n)),
                _ => Err(parse_err(s, expected)),
            },
        }
    }
}

/// The health signals a DSI types: `serial`, `agent`, `serial,agent`.
pub fn parse_health_signals(s: &str) -> Result<(bool, bool), ParseError> {
    let expected = "serial, agent or serial,agent";
    let (mut serial, mut agent) = (false, false);
    for word in s.split(',').map(str::trim) {
        match word {
            "serial" => serial = true,
            "agent" => agent = true,
            _ => return Err(parse_err(s, expected)),
        }
    }
    Ok((serial, agent))
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signals = match (self.serial_marker, self.guest_agent) {
            (true, true) => "serial,agent",
            (true, false) => "serial",
            (false, true) => "agent",
            (false, false) => "nothing",
        };
        write!(f, "health {signals} within {} s", self.within_secs)
    }
}

impl fmt::Display for Profile {
    /// One line: `uefi, accel auto, disk sata, nic e1000, memory 60%, vcpus 2, display none,
    /// health serial,agent within 180 s`, then what is not at its default: `persistent disk 2G`,
    /// `tpm`, `no audio`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nic = self.nic.map_or("none", NicModel::word);
        let memory = match self.memory {
            Amount::Fixed(n) => format!("{n} MiB"),
            p => p.to_string(),
        };
        write!(
            f,
            "{}, accel {}, disk {}, nic {nic}, memory {memory}, vcpus {}, display {}, {}",
            self.firmware, self.accel, self.disk, self.vcpus, self.display, self.health
        )?;
        if let Some(size) = self.persistent_disk {
            write!(f, ", persistent disk {size}")?;
        }
        if self.tpm {
            f.write_str(", tpm")?;
        }
        if !self.audio {
            f.write_str(", no audio")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_with_defaults_and_refuse_unknown_keys() {
        let p: Profile =
            toml::from_str("firmware = \"bios\"\ndisk = \"sata\"\nnic = \"e1000\"\nmemory = { fixed = 4096 }\n[health]\nwithin_secs = 90\n")
                .unwrap();
        assert_eq!(p.firmware, Firmware::Bios);
        assert_eq!(p.disk, DiskModel::Sata);
        assert_eq!(p.nic, Some(NicModel::E1000));
        assert_eq!(p.memory, Amount::Fixed(4096));
        assert_eq!(p.accel, Accel::Auto);
        assert_eq!(p.health.within_secs, 90);
        assert!(p.health.serial_marker && p.health.guest_agent);
        assert!(toml::from_str::<Profile>("floppy = true").is_err());
        assert!(serde_json::from_str::<Profile>("{\"floppy\": true}").is_err());
        assert_eq!(p.persistent_disk, None);
        assert!(!p.tpm && p.audio);
    }

    #[test]
    fn a_profile_survives_json_and_reads_in_one_line() {
        let p = Profile {
            firmware: Firmware::Bios,
            disk: DiskModel::Sata,
            nic: None,
            memory: Amount::Percent(60),
            vcpus: Amount::Fixed(2),
            health: HealthCheck {
                serial_marker: false,
                guest_agent: true,
                within_secs: 300,
            },
            ..Profile::default()
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Profile>(&json).unwrap(), p);
        assert_eq!(
            p.to_string(),
            "bios, accel auto, disk sata, nic none, memory 60%, vcpus 2, display none, health agent within 300 s"
        );
        assert!(Profile::default()
            .to_string()
            .contains("memory 50%, vcpus 2"));
    }

    #[test]
    fn what_a_dsi_types_reads_or_is_refused_with_the_choices() {
        assert_eq!("60%".parse(), Ok(Amount::Percent(60)));
        assert_eq!("4096".parse(), Ok(Amount::Fixed(4096)));
        for bad in ["0", "0%", "101%", "-1", "lots", "", "60 %%"] {
            assert!(bad.parse::<Amount>().is_err(), "{bad}");
        }
        assert_eq!("UEFI".parse(), Ok(Firmware::Uefi));
        assert_eq!("e1000".parse(), Ok(NicModel::E1000));
        let e = "efi".parse::<Firmware>().unwrap_err().to_string();
        assert!(e.contains("efi") && e.contains("bios or uefi"), "{e}");
        assert_eq!(parse_health_signals("serial,agent"), Ok((true, true)));
        assert_eq!(parse_health_signals("agent"), Ok((false, true)));
        assert!(parse_health_signals("serial,ping").is_err());
        for d in [Display::None, Display::Kiosk, Display::GtkFullScreen] {
            assert_eq!(d.word().parse(), Ok(d));
        }
    }

    #[test]
    fn devices_read_from_toml_json_and_postcard() {
        let p: Profile =
            toml::from_str("persistent_disk = \"2G\"\ntpm = true\naudio = false\n").unwrap();
        assert_eq!(p.persistent_disk, DiskSize::from_mib(2048).ok());
        assert!(p.tpm && !p.audio);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"persistent_disk\":\"2G\""), "{json}");
        assert_eq!(serde_json::from_str::<Profile>(&json).unwrap(), p);
        assert!(p.to_string().ends_with("persistent disk 2G, tpm, no audio"));
        // Also in the binary wire format (postcard) the NUCs report profiles in.
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<Profile>(&bytes).unwrap(), p);
        assert!(toml::from_str::<Profile>("persistent_disk = \"2 bananas\"").is_err());
    }

    #[test]
    fn disk_sizes_read_as_a_dsi_types_them() {
        assert_eq!("512M".parse(), DiskSize::from_mib(512));
        assert_eq!("2G".parse(), DiskSize::from_mib(2048));
        assert_eq!("2GiB".parse(), DiskSize::from_mib(2048));
        assert_eq!("3 gb".parse(), DiskSize::from_mib(3072));
        assert_eq!(DiskSize::from_mib(512).unwrap().to_string(), "512M");
        assert_eq!(DiskSize::from_mib(2048).unwrap().to_string(), "2G");
        assert_eq!(DiskSize::from_mib(2048).unwrap().bytes(), 2 << 30);
        for bad in ["", "2", "G", "0G", "8M", "2X", "-1G", "2000T", "1.5G"] {
            let e = bad.parse::<DiskSize>().unwrap_err().to_string();
            assert!(e.contains("such as 512M or 2G"), "{bad}: {e}");
        }
    }

    #[test]
    fn amounts_are_bounded_by_the_nuc() {
        assert_eq!(Amount::Percent(50).of(16384, 256), 8192);
        assert_eq!(Amount::Percent(200).of(16384, 256), 16384);
        assert_eq!(Amount::Fixed(64).of(4, 1), 4);
        assert_eq!(Amount::Percent(10).of(1, 1), 1);
        assert_eq!(Amount::Fixed(0).of(16384, 256), 256);
    }
}
