//! `nightcast-controller serve --config FILE`: TOML, every key optional with the default documented
//! in `controller/controller.example.toml`. Parsed first, then checked as a whole; an error names
//! the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::plan::Settings;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The data directory made by `nightcast-controller init`.
    pub data: PathBuf,
    /// Where relays connect (UDP, QUIC).
    pub listen: SocketAddr,
    /// Where the relays of far sites (satellite, 4G: long round trips, random loss) connect
    /// instead, to be sent to with BBR; off unless set.
    pub far_listen: Option<SocketAddr>,
    /// The port far relays reach `far_listen` at, where a NAT or firewall maps another public
    /// port to it; `far_listen`'s own port when not given.
    pub far_public_port: Option<u16>,
    /// The admin API (HTTP); keep it on localhost.
    pub api: SocketAddr,
    pub planner: Planner,
    pub fleet: Fleet,
    pub trust: TrustSettings,
    pub store: StoreSettings,
    pub calendar: CalendarSettings,
    pub console: ConsoleSettings,
    pub alerts: crate::alerts::config::AlertsConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarSettings {
    /// How often each subscribed calendar feed (`nightcast calendar subscribe`) is polled.
    pub feed_poll_minutes: u32,
    /// The certificate authorities (PEM) a feed's HTTPS certificate must chain to: the system's
    /// bundle by default (Debian's path), or the file of an internal CA.
    pub feed_roots: PathBuf,
}

impl Default for CalendarSettings {
    fn default() -> CalendarSettings {
        CalendarSettings {
            feed_poll_minutes: 15,
            feed_roots: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        }
    }
}

/// `[console]`: the web console, off unless `listen` is set (see docs/CONSOLE.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Where the console answers (HTTPS); unset: no console.
    pub listen: Option<SocketAddr>,
    /// The DSI's certificate chain (PEM, the server's certificate first) and its key (PEM).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Without `cert` and `key`: the names the browsers use to reach the console (DNS names or
    /// IP addresses); the controller's CA issues a certificate for them at each start.
    pub hosts: Vec<String>,
    /// The largest master image the masters page takes as an upload, in GB (10^9 bytes); it is
    /// written under the data directory (`uploads/`) while it arrives, so keep that much free.
    pub max_upload_gb: u64,
}

impl Default for ConsoleSettings {
    fn default() -> ConsoleSettings {
        ConsoleSettings {
            listen: None,
            cert: None,
            key: None,
            hosts: Vec::new(),
            max_upload_gb: 64,
        }
    }
}

impl ConsoleSettings {
    /// What `serve` runs with (`None`: off). Checked by `Config::validate` first.
    pub fn settings(&self) -> Option<crate::console::Settings> {
        let listen = self.listen?;
        let certificate = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => crate::console::tls::Certificate::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => crate::console::tls::Certificate::Issued {
                names: self.hosts.clone(),
            },
        };
        Some(crate::console::Settings {
            listen,
            certificate,
            max_upload_bytes: self.max_upload_gb.saturating_mul(1_000_000_000),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// The zstd level chunks are compressed again at after each import (fewer WAN bytes for
    /// every site, paid once here in CPU time); 0 leaves them as imported (level 1,
    /// `chunk::ZSTD_LEVEL`: about 3 % more bytes than level 3 on the benchmark image).
    pub tighten_level: i32,
    /// Threads for that pass: it runs beside serving and imports.
    pub tighten_threads: usize,
    /// How a new store keeps its chunks: `packs` (pack files: faster imports; when not given) or
    /// `files` (one file each). An existing store keeps its format (`nightcast-image
    /// convert` changes it); the log says so if it differs from the one given here.
    pub format: Option<image_tools::store::Format>,
}

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings {
            tighten_level: image_tools::chunk::TIGHT_LEVEL,
            tighten_threads: 1,
            format: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSettings {
    /// How long the certificates issued to relays and NUCs are valid; they renew themselves
    /// when a third of it is left.
    pub certificate_lifetime_days: u32,
}

impl Default for TrustSettings {
    fn default() -> TrustSettings {
        TrustSettings {
            certificate_lifetime_days: 365,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Planner {
    /// How long before a session its site's relay must hold the master (LAN staging).
    pub staging_margin_minutes: u32,
    /// A session whose bytes still to move need more than this share (percent) of the night
    /// window time left before its deadline is "at risk".
    pub risk_share_percent: u8,
    /// A site whose relay has not been heard from for longer is never "on time".
    pub relay_silent_after_hours: u32,
    /// The at-risk rule before `risk_share_percent`: still read, so that an older config file
    /// starts, and ignored with a warning.
    pub risk_slack_minutes: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// A seat whose NUC has not been heard from for longer is silent: a spare heard from within
    /// this time may take it over.
    pub silent_after_minutes: u32,
}

impl Default for Fleet {
    fn default() -> Fleet {
        Fleet {
            silent_after_minutes: 30,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data: PathBuf::from("/var/lib/nightcast/controller"),
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            far_listen: None,
            far_public_port: None,
            api: SocketAddr::from(([127, 0, 0, 1], 8644)),
            planner: Planner::default(),
            fleet: Fleet::default(),
            trust: TrustSettings::default(),
            store: StoreSettings::default(),
            calendar: CalendarSettings::default(),
            console: ConsoleSettings::default(),
            alerts: Default::default(),
        }
    }
}

impl Default for Planner {
    fn default() -> Planner {
        Planner {
            staging_margin_minutes: 120,
            risk_share_percent: 80,
            relay_silent_after_hours: 24,
            risk_slack_minutes: None,
        }
    }
}

impl Planner {
    pub fn settings(&self) -> Settings {
        Settings {
            staging_margin_secs: i64::from(self.staging_margin_minutes) * 60,
            risk_share_percent: self.risk_share_percent,
            relay_silent_after_secs: i64::from(self.relay_silent_after_hours) * 3600,
        }
    }
}

impl image_tools::config::Checked for Config {
    fn validate(&self) -> anyhow::Result<()> {
        Config::validate(self)
    }
}

impl Config {
    /// What `serve` runs with.
    pub fn settings(&self) -> crate::ServeSettings {
        crate::ServeSettings {
            planner: self.planner.settings(),
            silent_after_secs: i64::from(self.fleet.silent_after_minutes) * 60,
            certificate_lifetime_secs: u64::from(self.trust.certificate_lifetime_days) * 86_400,
            tighten: (self.store.tighten_level > 0).then_some(crate::tighten::Tighten {
                level: self.store.tighten_level,
                threads: self.store.tighten_threads,
            }),
            store_format: self.store.format,
            feeds: crate::feeds::Settings {
                poll_minutes: self.calendar.feed_poll_minutes,
                roots: self.calendar.feed_roots.clone(),
            },
            console: self.console.settings(),
            alerts: self.alerts.settings(),
            far_listen: self.far_listen,
            far_public_port: self.far_public_port,
        }
    }

    /// Reads and checks the file at `path` (see `image_tools::config`).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        image_tools::config::load(path)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        image_tools::config::parse(text)
    }

    /// Checks that need several keys at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=1440).contains(&self.calendar.feed_poll_minutes) {
            anyhow::bail!(
                "`calendar.feed_poll_minutes` is {}: give 1 to 1440 (a day)",
                self.calendar.feed_poll_minutes
            );
        }
        if self.listen.port() != 0
            && self.listen.port() == self.api.port()
            && self.listen.ip() == self.api.ip()
        {
            anyhow::bail!(
                "`listen` and `api` are the same address {}: give them different ports",
                self.api
            );
        }
        if !self.api.ip().is_loopback() {
            tracing::warn!(api = %self.api, "the admin API listens beyond localhost: protect its token");
        }
        if self.planner.staging_margin_minutes > 7 * 24 * 60 {
            anyhow::bail!("`planner.staging_margin_minutes` is over a week: is it in minutes?");
        }
        if self.planner.risk_share_percent == 0 || self.planner.risk_share_percent > 100 {
            anyhow::bail!(
                "`planner.risk_share_percent` must be between 1 and 100 (a share of the window time left)"
            );
        }
        if self.planner.relay_silent_after_hours == 0 {
            anyhow::bail!(
                "`planner.relay_silent_after_hours` must be above 0: every relay would always be silent"
            );
        }
        if self.trust.certificate_lifetime_days == 0 || self.trust.certificate_lifetime_days > 3650
        {
            anyhow::bail!(
                "`trust.certificate_lifetime_days` must be between 1 and 3650 (ten years)"
            );
        }
        if self.planner.risk_slack_minutes.is_some() {
            tracing::warn!(
                "`planner.risk_slack_minutes` is no longer used: a session is at risk when its bytes \
                 need more than `planner.risk_share_percent` (default 80) of the window time left; \
                 remove the key"
            );
        }
        if !(0..=22).contains(&self.store.tighten_level) || self.store.tighten_threads == 0 {
            anyhow::bail!(
                "`store.tighten_level` must be 0 (off) to 22 and `store.tighten_threads` above 0"
            );
        }
        match (self.far_public_port, self.far_listen) {
            (Some(0), _) => anyhow::bail!("`far_public_port` must be a port number (1-65535)"),
            (Some(_), None) => anyhow::bail!(
                "`far_public_port` is set but `far_listen` is not: give the address far relays' \
                 traffic arrives at as `far_listen`"
            ),
            _ => {}
        }
        if let Some(far) = self.far_listen {
            if far.port() != 0 && (far == self.listen || far == self.api) {
                anyhow::bail!(
                    "`far_listen` {far} is already the address of `listen` or `api`: give it its own port"
                );
            }
        }
        if let Some(listen) = self.console.listen {
            if listen.port() != 0
                && (listen == self.api
                    || listen.port() == self.listen.port() && listen.ip() == self.listen.ip())
            {
                anyhow::bail!("`console.listen` {listen} is already the address of `api` or `listen`: give it its own port");
            }
            match (&self.console.cert, &self.console.key) {
                (Some(_), Some(_)) => {}
                (None, None) if !self.console.hosts.is_empty() => {}
                (None, None) => anyhow::bail!(
                    "`console.listen` is set but the console has no certificate: give `console.cert` and `console.key` (PEM files), or `console.hosts` (the names browsers use, e.g. [\"nightcast.example.org\"]) for one from the controller's CA"
                ),
                _ => anyhow::bail!("`console.cert` and `console.key` go together: give both, or neither"),
            }
        }
        self.alerts.validate()?;
        if self.fleet.silent_after_minutes == 0 {
            anyhow::bail!(
                "`fleet.silent_after_minutes` must be above 0: every seat would always be silent"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_defaults_and_parses() {
        let example = include_str!("../controller.example.toml");
        let parsed = Config::parse(example).unwrap();
        let defaults = Config::default();
        assert_eq!(parsed.listen, defaults.listen);
        assert_eq!(parsed.api, defaults.api);
        assert_eq!(parsed.planner, defaults.planner);
        assert_eq!(parsed.fleet, defaults.fleet);
        assert_eq!(parsed, defaults);
        assert_eq!(Config::parse("").unwrap(), defaults);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("listen = \"0.0.0.0\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        // The key of the older at-risk rule still starts the controller (with a warning).
        let old = Config::parse("[planner]\nrisk_slack_minutes = 120").unwrap();
        assert_eq!(old.planner.risk_slack_minutes, Some(120));
        assert_eq!(old.planner.risk_share_percent, 80);
        let e = Config::parse("[planner]\nrisk_slack = 5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("risk_slack"), "{e}");
        let e = Config::parse("listen = \"127.0.0.1:9000\"\napi = \"127.0.0.1:9000\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("different ports"), "{e}");
        // A NAT's public port for far relays: only with far_listen, and a real port.
        let nat = Config::parse("far_listen = \"0.0.0.0:4437\"\nfar_public_port = 443").unwrap();
        assert_eq!(nat.settings().far_public_port, Some(443));
        let e = Config::parse("far_public_port = 443")
            .unwrap_err()
            .to_string();
        assert!(e.contains("far_listen"), "{e}");
        let e = Config::parse("far_listen = \"0.0.0.0:4437\"\nfar_public_port = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("far_public_port"), "{e}");
        let e = Config::parse("[planner]\nrisk_share_percent = 150")
            .unwrap_err()
            .to_string();
        assert!(e.contains("planner.risk_share_percent"), "{e}");
        let e = Config::parse("[planner]\nrelay_silent_after_hours = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("planner.relay_silent_after_hours"), "{e}");
        let e = Config::parse("[console]\nlisten = \"0.0.0.0:8443\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("console.hosts"), "{e}");
        let e = Config::parse("[console]\nlisten = \"0.0.0.0:8443\"\ncert = \"/etc/c.pem\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("console.key"), "{e}");
        let ok = Config::parse("[console]\nlisten = \"0.0.0.0:8443\"\nhosts = [\"nc.example\"]")
            .unwrap();
        assert!(ok.settings().console.is_some());
        assert!(Config::default().settings().console.is_none());
        let e = Config::parse("[fleet]\nsilent_after_minutes = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fleet.silent_after_minutes"), "{e}");
    }

    /// Every key of the file: a refusal names one of them, or the line where TOML broke.
    const KEYS: &[&str] = &[
        "data",
        "listen",
        "far_listen",
        "far_public_port",
        "api",
        "planner",
        "staging_margin_minutes",
        "risk_share_percent",
        "relay_silent_after_hours",
        "fleet",
        "silent_after_minutes",
        "trust",
        "certificate_lifetime_days",
        "store",
        "tighten_level",
        "tighten_threads",
        "format",
        "console",
        "listen",
        "hosts",
        "alerts",
        "webhook",
        "webhook_roots",
        "smtp",
        "from",
        "to",
        "relay_silent_hours",
        "disk_full_percent",
        "digest_at",
        "time_zone",
        "check_seconds",
    ];

    image_tools::config_property_tests!(
        |text: &str| Config::parse(text),
        include_str!("../controller.example.toml"),
        KEYS
    );
}
