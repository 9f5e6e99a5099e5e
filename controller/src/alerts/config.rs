//! `[alerts]` of the controller's configuration: parsed, checked (errors name the key), and
//! turned into the sender's `Settings`.

use std::path::PathBuf;
use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Deserialize;

use super::decide::Rules;
use super::smtp::Smtp;
use super::{digest, webhook, Channel, Settings};

/// `[alerts]`: off unless `webhook` or `smtp` is set (see docs/ALERTS.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where each alert is POSTed as JSON: `https://...`, or `http://` to this machine only.
    pub webhook: Option<String>,
    /// The certificate authorities (PEM) the webhook's HTTPS certificate must chain to.
    pub webhook_roots: PathBuf,
    /// The SMTP relay (`host:port`, plain SMTP, no login) e-mails go through.
    pub smtp: Option<String>,
    /// The e-mails' sender, and their recipients.
    pub from: String,
    pub to: Vec<String>,
    /// A relay not heard from for longer is an alert.
    pub relay_silent_hours: u32,
    /// A relay whose cache fills this share of its quota (percent) is an alert.
    pub disk_full_percent: u8,
    /// When the daily digest of every open alert goes out (HH:MM in `time_zone`).
    pub digest_at: String,
    /// The IANA zone of `digest_at` and of the times in the alerts; unset: the controller's.
    pub time_zone: Option<String>,
    /// How often the conditions are checked (and failed deliveries retried), in seconds.
    pub check_seconds: u32,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            webhook: None,
            webhook_roots: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            smtp: None,
            from: "nightcast@localhost".to_owned(),
            to: Vec::new(),
            relay_silent_hours: 24,
            disk_full_percent: 90,
            digest_at: "07:00".to_owned(),
            time_zone: None,
            check_seconds: 60,
        }
    }
}

/// An address we put in `MAIL FROM`/`RCPT TO` and the headers as they are.
fn check_address(key: &str, a: &str) -> anyhow::Result<()> {
    let bad = a.chars().any(|c| c.is_whitespace() || "<>,;\"".contains(c));
    match a.split_once('@') {
        Some((user, domain)) if !bad && !user.is_empty() && !domain.is_empty() => Ok(()),
        _ => anyhow::bail!("`alerts.{key}` {a:?} is not an e-mail address like dsi@example.org"),
    }
}

impl AlertsConfig {
    /// Checks that need several keys at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.webhook {
            webhook::check_url(url).map_err(|e| anyhow::anyhow!("`alerts.webhook` {e}"))?;
        }
        if let Some(smtp) = &self.smtp {
            let port = smtp.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
            if !matches!(port, Some((h, Ok(p))) if !h.is_empty() && p > 0) {
                anyhow::bail!("`alerts.smtp` {smtp:?} is not host:port (e.g. \"localhost:25\")");
            }
            if self.to.is_empty() {
                anyhow::bail!("`alerts.smtp` is set but `alerts.to` is empty: give the recipients, e.g. [\"dsi@example.org\"]");
            }
            check_address("from", &self.from)?;
            for to in &self.to {
                check_address("to", to)?;
            }
        }
        digest::parse_time(&self.digest_at)
            .map_err(|e| anyhow::anyhow!("`alerts.digest_at` {e}"))?;
        if let Some(zone) = &self.time_zone {
            TimeZone::get(zone).map_err(|_| {
                anyhow::anyhow!(
                    "`alerts.time_zone` {zone:?} is not an IANA time zone (e.g. \"Europe/Paris\")"
                )
            })?;
        }
        if self.relay_silent_hours == 0 {
            anyhow::bail!("`alerts.relay_silent_hours` must be above 0");
        }
        if !(1..=100).contains(&self.disk_full_percent) {
            anyhow::bail!("`alerts.disk_full_percent` must be 1 to 100 (a share of the quota)");
        }
        if !(1..=3600).contains(&self.check_seconds) {
            anyhow::bail!("`alerts.check_seconds` must be 1 to 3600");
        }
        Ok(())
    }

    /// What the sender runs with (`None`: no channel, off). Checked by `validate` first (a zone
    /// or a time it refuses cannot reach here).
    pub fn settings(&self) -> Option<Settings> {
        let mut channels = Vec::new();
        if let Some(url) = &self.webhook {
            channels.push(Channel::Webhook {
                url: url.clone(),
                roots: self.webhook_roots.clone(),
            });
        }
        if let Some(server) = &self.smtp {
            channels.push(Channel::Email(Smtp {
                server: server.clone(),
                from: self.from.clone(),
                to: self.to.clone(),
            }));
        }
        if channels.is_empty() {
            return None;
        }
        let zone = match &self.time_zone {
            Some(z) => TimeZone::get(z).unwrap_or(TimeZone::UTC),
            None => TimeZone::system(),
        };
        Some(Settings {
            channels,
            rules: Rules {
                relay_silent_secs: i64::from(self.relay_silent_hours) * 3600,
                disk_full_percent: self.disk_full_percent,
            },
            digest_at: digest::parse_time(&self.digest_at).unwrap_or(jiff::civil::Time::midnight()),
            zone,
            every: Duration::from_secs(u64::from(self.check_seconds)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<AlertsConfig> {
        Ok(crate::config::Config::parse(&format!("[alerts]\n{text}"))?.alerts)
    }

    #[test]
    fn off_by_default_and_each_refusal_names_its_key() {
        assert!(AlertsConfig::default().settings().is_none());
        let on = parse(
            "smtp = \"localhost:25\"\nto = [\"dsi@example.org\"]\ntime_zone = \"Europe/Paris\"",
        )
        .unwrap();
        assert_eq!(on.settings().unwrap().channels.len(), 1);
        for (text, key) in [
            ("webhook = \"http://chat.example.org/x\"", "alerts.webhook"),
            ("smtp = \"localhost\"\nto = [\"a@b\"]", "alerts.smtp"),
            ("smtp = \"localhost:25\"", "alerts.to"),
            ("smtp = \"localhost:25\"\nto = [\"dsi\"]", "alerts.to"),
            (
                "smtp = \"localhost:25\"\nto = [\"a@b\"]\nfrom = \"x <y@z>\"",
                "alerts.from",
            ),
            ("digest_at = \"7h\"", "alerts.digest_at"),
            ("time_zone = \"Paris\"", "alerts.time_zone"),
            ("relay_silent_hours = 0", "alerts.relay_silent_hours"),
            ("disk_full_percent = 0", "alerts.disk_full_percent"),
            ("check_seconds = 0", "alerts.check_seconds"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
