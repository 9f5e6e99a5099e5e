//! `nightcast-agent run [--config FILE]`: TOML, every key optional, defaults documented in
//! `node-agent/agent.example.toml`. With no file at all the agent finds its relay by discovery and
//! enrols through it: a spare NUC needs nothing typed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::profile::{Network, Profile};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The agent's data directory: identity, slots, chunk cache, status.
    pub data: PathBuf,
    /// The relay's address; unset: ask the VLAN (`discovery`).
    pub relay: Option<SocketAddr>,
    /// Where discovery questions go: the VLAN's broadcast address.
    pub discovery: SocketAddr,
    /// Hex fingerprint of the controller's CA; set it to refuse discovery answers from any other.
    pub ca_fingerprint: Option<String>,
    /// A one-time enrolment token (`nightcast enroll --role agent --site S`); unset: the relay
    /// vouches for the agent (the site's policy).
    pub token: Option<String>,
    /// This NUC's id; unset: its hardware id (DMI product UUID, machine-id, or MAC).
    pub node_id: Option<String>,
    /// Where to read the hardware id from (`/` on a NUC; a fake root in tests).
    pub identity_root: PathBuf,
    /// How often to ask the relay for the plan and report, in seconds.
    pub poll_secs: u64,
    /// The VM: `qemu`, or `fake` (no VM; the overlay is real; tests and dry runs).
    pub hypervisor: String,
    /// The expert override: QEMU's raw command line (`{overlay}`, `{master}`, `{name}` are
    /// replaced). Empty: the command line is built from the machine profile (`profile`).
    pub qemu_command: Vec<String>,
    /// How the guest's NIC reaches a network: `nat` (QEMU's own NAT and DHCP server) or
    /// `bridge:NAME` (a bridge on the site LAN, whose DHCP server then serves the guest).
    pub network: String,
    /// The machine profile of every master the catalogue gives none (`profile::Profile`).
    pub profile: Profile,
    /// Profiles by master name: on this NUC, they override the catalogue's.
    pub profiles: BTreeMap<String, Profile>,
    /// Local time at which a VM still running is stopped and reset every day, e.g. "20:00".
    pub end_of_day: String,
    /// Threads for assembling a new master.
    pub threads: usize,
    /// Powered on in the night window (woken by the relay) and done preparing, with no session
    /// within the hour: power the NUC off again.
    pub power_off_after_night_work: bool,
    /// How to power off.
    pub power_off_command: Vec<String>,
    /// The X display of the NUC's own screen, e.g. ":0" (the X server `nightcast-kiosk-x.service`
    /// starts): the session's VM is shown full screen on it as a kiosk, and a status page between
    /// sessions. Unset: the NUC has no screen to manage (the VM is shown nowhere).
    pub screen: Option<String>,
    /// Resets restore the guest as it was right after its first healthy boot on this NUC (its
    /// memory saved to a file beside the overlay, about the guest's memory in size) instead of
    /// booting it: about a second instead of a boot. The saved state is made again when the
    /// master, its profile, the seat or QEMU changes; a failed restore boots from cold
    /// (reported). Off by default; leave it off for profiles with a persistent disk, a TPM or
    /// USB devices of the NUC (state outside the guest's memory and overlay).
    pub resume_saved_state: bool,
    /// Peer sharing: serve verified chunks to the site's other NUCs, and fetch from them.
    pub peer_sharing: bool,
    /// Where this NUC serves its peers (QUIC over UDP).
    pub peer_listen: SocketAddr,
    /// The upload to peers at most, in Mbit/s; 0: no cap. The site's setting (in its plan) wins.
    pub peer_upload_mbit: u64,
    /// Serve peers while a session runs here too. The site's setting (in its plan) wins.
    pub peer_share_in_session: bool,
    /// Seconds to wait for peers to bring what this NUC does not fetch from the relay itself.
    pub peer_patience_secs: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data: PathBuf::from("/var/lib/nightcast/agent"),
            relay: None,
            discovery: SocketAddr::from(([255, 255, 255, 255], image_tools::discovery::PORT)),
            ca_fingerprint: None,
            token: None,
            node_id: None,
            identity_root: PathBuf::from("/"),
            poll_secs: 30,
            hypervisor: "qemu".into(),
            qemu_command: Vec::new(),
            network: "nat".into(),
            profile: Profile::default(),
            profiles: BTreeMap::new(),
            end_of_day: "20:00".into(),
            threads: 2,
            power_off_after_night_work: false,
            power_off_command: vec!["systemctl".into(), "poweroff".into()],
            screen: None,
            resume_saved_state: false,
            peer_sharing: true,
            peer_listen: SocketAddr::from(([0, 0, 0, 0], PEER_PORT)),
            peer_upload_mbit: 300,
            peer_share_in_session: false,
            peer_patience_secs: 10,
        }
    }
}

/// The UDP port a NUC serves its peers on by default (the relay's LAN port is 4434, discovery
/// 4435).
pub const PEER_PORT: u16 = 4436;

impl image_tools::config::Checked for Config {
    fn validate(&self) -> anyhow::Result<()> {
        Config::validate(self)
    }
}

impl Config {
    /// Reads and checks the file at `path` (see `image_tools::config`).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        image_tools::config::load(path)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        image_tools::config::parse(text)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.poll_secs == 0 {
            anyhow::bail!("poll_secs must be at least 1");
        }
        if !matches!(self.hypervisor.as_str(), "qemu" | "fake") {
            anyhow::bail!(
                "hypervisor = {:?}: use \"qemu\" or \"fake\"",
                self.hypervisor
            );
        }
        if !self.qemu_command.is_empty()
            && !self.qemu_command.iter().any(|a| a.contains("{overlay}"))
        {
            anyhow::bail!("qemu_command must use {{overlay}} (the session disk)");
        }
        self.end_of_day_minutes()?;
        self.network()?;
        if let Some(fp) = &self.ca_fingerprint {
            if image_tools::ids::unhex::<16>(fp).is_none() {
                anyhow::bail!("ca_fingerprint = {fp:?}: 32 hex digits expected");
            }
        }
        if let Some(id) = &self.node_id {
            image_tools::NodeId::new(id).map_err(|e| anyhow::anyhow!("node_id: {e}"))?;
        }
        if self.power_off_after_night_work && self.power_off_command.is_empty() {
            anyhow::bail!("power_off_command is empty but power_off_after_night_work is on");
        }
        if self.threads == 0 {
            anyhow::bail!("threads must be at least 1");
        }
        if self.peer_patience_secs == 0 || self.peer_patience_secs > 3600 {
            anyhow::bail!("peer_patience_secs must be between 1 and 3600");
        }
        Ok(())
    }

    /// `network`, read.
    pub fn network(&self) -> anyhow::Result<Network> {
        match self.network.split_once(':') {
            None if self.network == "nat" => Ok(Network::Nat),
            Some(("bridge", br))
                if !br.is_empty()
                    && br.len() < 16
                    && br
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
            {
                Ok(Network::Bridge(br.to_owned()))
            }
            _ => anyhow::bail!(
                "network = {:?}: use \"nat\" or \"bridge:NAME\" (an interface name)",
                self.network
            ),
        }
    }

    /// `end_of_day` as minutes after midnight.
    pub fn end_of_day_minutes(&self) -> anyhow::Result<u32> {
        let bad = || anyhow::anyhow!("end_of_day = {:?}: expected HH:MM", self.end_of_day);
        let (h, m) = self.end_of_day.split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(h * 60 + m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_defaults() {
        let parsed = Config::parse(include_str!("../agent.example.toml")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn errors_name_the_key() {
        for (text, says) in [
            ("hypervisor = \"vbox\"", "hypervisor"),
            ("end_of_day = \"25:00\"", "end_of_day"),
            ("ca_fingerprint = \"abc\"", "ca_fingerprint"),
            ("node_id = \"../x\"", "node_id"),
            ("qemu_command = [\"qemu-system-x86_64\"]", "{overlay}"),
            ("network = \"bridge:\"", "network"),
            ("[profile]\nfirmware = \"efi\"", "firmware"),
            ("relay = \"nowhere\"", "relay"),
            ("peer_listen = \"4436\"", "peer_listen"),
            ("peer_patience_secs = 0", "peer_patience_secs"),
            ("colour = 3", "unknown field `colour`"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    /// Every key of the file: a refusal names one of them, or the line where TOML broke.
    const KEYS: &[&str] = &[
        "data",
        "relay",
        "discovery",
        "ca_fingerprint",
        "token",
        "node_id",
        "identity_root",
        "poll_secs",
        "hypervisor",
        "qemu_command",
        "end_of_day",
        "threads",
        "power_off_after_night_work",
        "power_off_command",
        "network",
        "resume_saved_state",
        "peer_sharing",
        "peer_listen",
        "peer_upload_mbit",
        "peer_share_in_session",
        "peer_patience_secs",
        "profile",
        "profiles",
        "firmware",
        "accel",
        "disk",
        "nic",
        "memory",
        "vcpus",
        "display",
        "health",
        "serial_marker",
        "guest_agent",
        "within_secs",
    ];

    image_tools::config_property_tests!(
        |text: &str| Config::parse(text),
        include_str!("../agent.example.toml"),
        KEYS
    );
}
