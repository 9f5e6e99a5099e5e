//! `nightcast calendar subscribe | unsubscribe | subscriptions`: calendar feeds (an HTTPS link
//! a training-management tool publishes) that the controller polls and applies as imports.

use anyhow::Result;
use image_tools::api::{self, FeedInfo, NewFeed};

use super::{printed, table, Printed};
use crate::client::Client;

pub(super) fn subscribe(
    client: &Client,
    url: String,
    source: String,
    partial: bool,
    horizon_days: u32,
) -> Result<Printed> {
    let body = NewFeed {
        source,
        url,
        partial,
        horizon_days: Some(horizon_days),
    };
    let f: FeedInfo = client.send("POST", "/v1/calendar/feeds", &body)?;
    let text = format!(
        "calendar {} subscribed to {}: polled within a minute, then every {} min; see \
         `nightcast calendar subscriptions` for how each poll went",
        f.source, f.url, f.poll_minutes
    );
    printed(&f, text)
}

pub(super) fn unsubscribe(client: &Client, source: &str) -> Result<Printed> {
    let done: api::Done = client.ask("DELETE", &format!("/v1/calendar/feeds/{source}"))?;
    printed(
        &done,
        format!("calendar {source} unsubscribed: no longer polled; its sessions stay"),
    )
}

pub(super) fn list(client: &Client) -> Result<Printed> {
    let feeds: Vec<FeedInfo> = client.ask("GET", "/v1/calendar/feeds")?;
    if feeds.is_empty() {
        return printed(
            &feeds,
            "no calendar subscriptions: add one with `nightcast calendar subscribe URL --source NAME`"
                .to_owned(),
        );
    }
    let at = |t: Option<i64>| match t.and_then(|t| jiff::Timestamp::from_second(t).ok()) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        None => "never".to_owned(),
    };
    let rows = feeds.iter().map(|f| {
        let last = match (&f.last_error, f.last_poll) {
            (_, None) => "not polled yet".to_owned(),
            (Some(e), _) => format!("FAILED, nothing changed: {e}"),
            (None, _) => format!("ok: {}", f.last_result.as_deref().unwrap_or("")),
        };
        vec![
            f.source.clone(),
            f.url.clone(),
            format!("every {} min", f.poll_minutes),
            at(f.last_poll),
            at(f.last_ok),
            last,
        ]
    });
    let text = table(
        &[
            "SOURCE",
            "URL",
            "POLLED",
            "LAST POLL",
            "LAST OK",
            "LAST RESULT",
        ],
        rows,
    );
    printed(&feeds, text)
}
