//! Calendar subscriptions: an iCalendar feed (an HTTPS URL, as training-management tools
//! publish them) that the controller polls and applies as a sync of calendar `source`, exactly
//! as if its file had been imported.

use serde::{Deserialize, Serialize};

/// `POST /v1/calendar/feeds`: subscribe calendar `source` to `url` (a feed of that source
/// already there is replaced).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFeed {
    /// The calendar's name: its sessions are those the feed gives (letters, digits, `.`, `_`,
    /// `-`; up to 64).
    pub source: String,
    /// `https://...`; plain HTTP is refused.
    pub url: String,
    /// Apply what the mapping rules read even if some events match none (see
    /// `CalendarSync::partial`).
    #[serde(default)]
    pub partial: bool,
    /// See `CalendarSync::horizon_days`.
    #[serde(default)]
    pub horizon_days: Option<u32>,
}

/// A subscription and how its polls went (`GET /v1/calendar/feeds`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedInfo {
    pub source: String,
    pub url: String,
    pub partial: bool,
    pub horizon_days: u32,
    /// How often the controller polls its feeds (`[calendar] feed_poll_minutes`).
    pub poll_minutes: u32,
    /// Unix seconds of the last poll, whatever its outcome (`None`: not polled yet).
    pub last_poll: Option<i64>,
    /// Unix seconds of the last poll that was applied.
    pub last_ok: Option<i64>,
    /// What the last applied poll changed ("2 added, 1 moved, 0 removed, 14 unchanged").
    pub last_result: Option<String>,
    /// Why the last poll changed nothing, if it failed (`None` when it worked).
    pub last_error: Option<String>,
}
