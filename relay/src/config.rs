//! `nightcast-relay run --config FILE`: TOML, every key but `controller` optional, with the defaults
//! documented in `relay/relay.example.toml`. Parsed first, then checked as a whole; an error names
//! the key.
//!
//! The controller's CA and the manifest-signing key are not in the file: they were pinned at
//! enrolment (`DATA/tls/ca.crt`, `DATA/signing.pub`), and the relay's site is the one its
//! certificate names. `site`, when given, must match it (a copied config is caught at start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The controller's address (UDP, QUIC).
    pub controller: SocketAddr,
    /// The data directory given to `nightcast-relay enroll`.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// Checked against the site in the relay's certificate.
    #[serde(default)]
    pub site: Option<String>,
    /// Where the site's NUCs connect (UDP, QUIC).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where NUCs with nothing configured ask for their relay (UDP broadcast).
    #[serde(default = "default_discovery")]
    pub discovery: SocketAddr,
    /// Where to ask for the site's other relays (the VLAN's broadcast address and their discovery
    /// port, e.g. "10.0.0.255:4435"); unset (the default): this is the site's only relay. Relays
    /// that find each other fetch over the WAN once: the one whose name sorts first fetches from
    /// the controller, the others from it over the LAN (`relay::siblings`).
    #[serde(default)]
    pub sibling_discovery: Option<SocketAddr>,
    /// Disk space the chunk cache may use, e.g. "400 GiB". Chunks of scheduled masters are kept even
    /// beyond it (and that is reported); the rest is evicted least recently used first.
    #[serde(default = "default_quota")]
    pub quota: String,
    /// How often to ask the controller for the plan and send a report, in seconds.
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
    /// The longest wait between two attempts to reach the controller, in seconds (with jitter).
    #[serde(default = "default_backoff")]
    pub reconnect_max_secs: u64,
    /// Where Prometheus scrapes `GET /metrics` (TCP, plain HTTP, no authentication); none (the
    /// default): no metrics listener at all.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    #[serde(default)]
    pub scrub: Scrub,
    #[serde(default)]
    pub wake_on_lan: WakeOnLan,
}

/// The background re-reading of every cached chunk.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scrub {
    /// Disk read rate of the scrub in MiB/s; 0 turns it off.
    pub mib_per_sec: u64,
    /// Pause between two full passes, in hours.
    pub every_hours: f64,
}

/// Waking the site's NUCs when the night window opens and some of them still lack a master.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WakeOnLan {
    pub enabled: bool,
    /// Where magic packets go: the site VLAN's broadcast address, port 9.
    pub target: SocketAddr,
    /// A NUC that has not reported this long after being woken is reported as not answering.
    pub grace_minutes: u64,
}

fn default_data() -> PathBuf {
    PathBuf::from("/var/lib/nightcast/relay")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4434))
}
fn default_discovery() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], image_tools::discovery::PORT))
}
fn default_quota() -> String {
    "200 GiB".into()
}
fn default_poll() -> u64 {
    60
}
fn default_backoff() -> u64 {
    300
}

impl Default for Scrub {
    fn default() -> Scrub {
        Scrub {
            mib_per_sec: 16,
            every_hours: 24.0,
        }
    }
}

impl Default for WakeOnLan {
    fn default() -> WakeOnLan {
        WakeOnLan {
            enabled: true,
            target: SocketAddr::from(([255, 255, 255, 255], 9)),
            grace_minutes: 10,
        }
    }
}

impl image_tools::config::Checked for Config {
    fn validate(&self) -> anyhow::Result<()> {
        Config::validate(self)
    }
}

impl Config {
    /// A configuration with every default: what `run --controller ADDR --data DIR` uses.
    pub fn new(controller: SocketAddr, data: PathBuf) -> Config {
        Config {
            controller,
            data,
            site: None,
            listen: default_listen(),
            discovery: default_discovery(),
            sibling_discovery: None,
            quota: default_quota(),
            poll_secs: default_poll(),
            reconnect_max_secs: default_backoff(),
            metrics_addr: None,
            scrub: Scrub::default(),
            wake_on_lan: WakeOnLan::default(),
        }
    }

    /// Reads and checks the file at `path` (see `image_tools::config`).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        image_tools::config::load(path)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        image_tools::config::parse(text)
    }

    /// Checks that need more than one key, or more than the type says.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.quota_bytes()?;
        if self.poll_secs == 0 {
            anyhow::bail!("poll_secs must be at least 1");
        }
        if self.reconnect_max_secs == 0 {
            anyhow::bail!("reconnect_max_secs must be at least 1");
        }
        if !(self.scrub.every_hours.is_finite() && self.scrub.every_hours >= 0.0) {
            anyhow::bail!("scrub.every_hours must be a number of hours, 0 or more");
        }
        if self.listen.port() != 0 && self.listen == self.controller {
            anyhow::bail!("listen and controller are the same address");
        }
        if self.discovery.port() != 0 && self.discovery == self.listen {
            anyhow::bail!("discovery and listen are the same address");
        }
        Ok(())
    }

    /// `quota` in bytes.
    pub fn quota_bytes(&self) -> anyhow::Result<u64> {
        parse_size(&self.quota).map_err(|why| anyhow::anyhow!("quota = {:?}: {why}", self.quota))
    }
}

/// "400 GiB", "1.5TB", "250M", "4096" (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| "expected a size such as \"400 GiB\"".to_owned())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, MB, MiB, GB, GiB, TB, TiB)"
            ))
        }
    };
    let bytes = number * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err("out of range".into());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_defaults() {
        let example = include_str!("../relay.example.toml");
        let parsed = Config::parse(example).unwrap();
        let mut defaults = Config::new(parsed.controller, default_data());
        defaults.site = parsed.site.clone();
        assert_eq!(parsed, defaults);
    }

    #[test]
    fn errors_name_the_key() {
        let base = "controller = \"192.0.2.10:4433\"\n";
        for (extra, says) in [
            ("quota = \"lots\"", "quota"),
            ("quota = \"5 parsecs\"", "unknown unit"),
            ("poll_secs = 0", "poll_secs"),
            ("bandwidth = 3", "unknown field `bandwidth`"),
            ("[scrub]\nmib_per_sec = -1", "mib_per_sec"),
        ] {
            let e = Config::parse(&format!("{base}{extra}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{extra}: {e}");
        }
        let e = Config::parse("quota = \"1 GiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("controller"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("400 GiB").unwrap(), 400 << 30);
        assert_eq!(parse_size("1.5TB").unwrap(), 1_500_000_000_000);
        assert_eq!(parse_size("250M").unwrap(), 250_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("0").is_err());
        assert!(parse_size("-3 GB").is_err());
    }

    /// Every key of the file: a refusal names one of them, or the line where TOML broke.
    const KEYS: &[&str] = &[
        "controller",
        "data",
        "site",
        "listen",
        "discovery",
        "sibling_discovery",
        "quota",
        "poll_secs",
        "reconnect_max_secs",
        "scrub",
        "mib_per_sec",
        "every_hours",
        "wake_on_lan",
        "enabled",
        "target",
        "grace_minutes",
    ];

    image_tools::config_property_tests!(
        |text: &str| Config::parse(text),
        include_str!("../relay.example.toml"),
        KEYS
    );
}
