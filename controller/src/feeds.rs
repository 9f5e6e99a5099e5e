//! Subscribed calendar feeds: the controller polls each `https://` feed every
//! `feed_poll_minutes` and applies what it serves as a sync of its calendar, through the same
//! `db::Db::sync_ics` as `nightcast calendar import` (rules, `--partial`, past sessions left
//! alone, all or nothing). A poll that fails (the feed down, an HTTP error, a body that is not
//! iCalendar, an event no rule reads) changes nothing and is recorded with its reason, as a
//! poll that works is with what it changed.
//!
//! Pure: [`due`] (which feeds to poll at `now`), [`check_body`] and [`summary`]. The shell:
//! [`run`], one task, polls one feed at a time on a blocking thread (`fetch`: ureq over rustls,
//! roots from `[calendar] feed_roots`, 30 s timeout, 16 MiB at most, no redirect to plain
//! HTTP).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use image_tools::clock::Clock;
use tokio_util::sync::CancellationToken;

use crate::db::{Apply, Db, FeedRow, Synced};
use crate::DataDir;

/// The most a feed may serve.
pub const MAX_FEED_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How often each feed is polled.
    pub poll_minutes: u32,
    /// The CAs (PEM) a feed's certificate must chain to.
    pub roots: PathBuf,
}

/// The feeds to poll at `now`: never polled, polled `every_secs` ago or more, or polled "in the
/// future" (the clock was set back).
pub fn due(feeds: &[FeedRow], now: i64, every_secs: i64) -> Vec<&FeedRow> {
    feeds
        .iter()
        .filter(|f| match f.last_poll {
            None => true,
            Some(t) => now >= t.saturating_add(every_secs) || now < t,
        })
        .collect()
}

/// Whether a feed's body is an iCalendar file at all: a maintenance page served with status 200
/// must not be read as an empty calendar (which would remove every session).
pub fn check_body(bytes: &[u8]) -> Result<(), String> {
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let head = &text[start..text.len().min(start + 15)];
    match head.eq_ignore_ascii_case(b"BEGIN:VCALENDAR") {
        true => Ok(()),
        false => Err(format!(
            "the feed is not an iCalendar file (it begins with {:?}): check its URL",
            String::from_utf8_lossy(&text[start..text.len().min(start + 40)])
        )),
    }
}

/// What a poll changed, in words.
pub fn summary(s: &Synced) -> String {
    let c = &s.changes;
    let mut out = format!(
        "{} added, {} moved, {} removed, {} unchanged",
        c.added.len(),
        c.moved.len(),
        c.removed.len(),
        c.unchanged
    );
    if !s.unmatched.is_empty() {
        out += &format!("; {} event(s) match no mapping rule:", s.unmatched.len());
        for u in &s.unmatched {
            out += &format!(" {u};");
        }
    }
    out
}

/// Polls the feeds that are due, every second, until `shutdown`; wakes `changed` after a poll
/// that changed sessions.
pub async fn run(
    data: DataDir,
    settings: Settings,
    clock: Clock,
    changed: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let every = i64::from(settings.poll_minutes) * 60;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = clock.now();
        let feeds = match Db::open(&data.database()).and_then(|db| db.feeds()) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the calendar feeds");
                continue;
            }
        };
        for feed in due(&feeds, now, every) {
            let (data, feed, roots) = (data.clone(), feed.clone(), settings.roots.clone());
            let polled = tokio::task::spawn_blocking(move || poll(&data, &feed, &roots, now)).await;
            match polled {
                Ok(true) => changed.notify_one(),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "a calendar feed poll failed"),
            }
        }
    }
}

/// One poll of `feed`, recorded; whether it changed sessions.
fn poll(data: &DataDir, feed: &FeedRow, roots: &std::path::Path, now: i64) -> bool {
    let outcome = fetch(&feed.url, roots).and_then(|bytes| {
        check_body(&bytes)?;
        let mut db = Db::open(&data.database()).map_err(|e| e.to_string())?;
        let how = match feed.partial {
            true => Apply::Partial,
            false => Apply::Whole,
        };
        db.sync_ics(
            &feed.source,
            &feed.url,
            &bytes,
            now,
            Some(feed.horizon_days),
            how,
        )
        .map_err(|e| e.to_string())
    });
    let (result, changed) = match &outcome {
        Ok(s) => {
            tracing::info!(source = %feed.source, result = %summary(s), "calendar feed polled");
            (Ok(summary(s)), !s.changes.is_empty())
        }
        Err(e) => {
            tracing::warn!(source = %feed.source, url = %feed.url, error = %e, "calendar feed poll failed: nothing changed");
            (Err(e.clone()), false)
        }
    };
    let recorded = Db::open(&data.database()).and_then(|db| {
        db.feed_polled(&feed.source, now, result.as_deref().map_err(String::as_str))
    });
    if let Err(e) = recorded {
        tracing::error!(source = %feed.source, error = %e, "cannot record a calendar feed poll");
    }
    changed
}

/// The body `url` serves, over HTTPS with `roots`.
fn fetch(url: &str, roots: &std::path::Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(roots)
        .map_err(|e| format!("cannot read the feed roots {}: {e}", roots.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "no certificate in the feed roots {}",
            roots.display()
        ));
    }
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .https_only(true)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| format!("cannot fetch the feed: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the feed answered HTTP {status}"));
    }
    response
        .body_mut()
        .with_config()
        .limit(MAX_FEED_BYTES)
        .read_to_vec()
        .map_err(|e| format!("cannot read the feed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(last_poll: Option<i64>) -> FeedRow {
        FeedRow {
            source: "f".into(),
            url: "https://x/".into(),
            partial: false,
            horizon_days: 183,
            last_poll,
            last_ok: None,
            last_result: None,
            last_error: None,
        }
    }

    #[test]
    fn a_feed_is_due_first_then_every_interval_and_after_the_clock_went_back() {
        let feeds = [feed(None), feed(Some(1_000)), feed(Some(5_000))];
        let due_at = |now| due(&feeds, now, 900).len();
        assert_eq!(due_at(1_899), 2, "never polled, and polled in the future");
        assert_eq!(due_at(1_900), 3);
        assert_eq!(due_at(5_899), 2, "the one polled at 5000 not again yet");
        assert_eq!(due_at(5_900), 3);
    }

    #[test]
    fn only_an_icalendar_body_is_read() {
        assert!(check_body(b"\xef\xbb\xbf\r\nbegin:vcalendar\r\n").is_ok());
        let e = check_body(b"<html><body>Maintenance</body></html>").unwrap_err();
        assert!(
            e.contains("not an iCalendar") && e.contains("<html>"),
            "{e}"
        );
        assert!(check_body(b"").is_err());
    }
}
