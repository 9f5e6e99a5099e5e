//! Calendar feeds: the subscriptions the controller polls (`crate::feeds`), and how each poll
//! went. A feed's sessions are those of calendar `source`, synced as an import is
//! (`Db::sync_ics`).

use rusqlite::{params, OptionalExtension};

use super::calendar::MAX_HORIZON_DAYS;
use super::{Db, DbError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    pub source: String,
    pub url: String,
    pub partial: bool,
    pub horizon_days: u32,
    pub last_poll: Option<i64>,
    pub last_ok: Option<i64>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
}

impl Db {
    /// Subscribes calendar `source` to `url` (an `https://` URL), replacing its feed if it had
    /// one (then it is polled again at once).
    pub fn add_feed(
        &self,
        source: &str,
        url: &str,
        partial: bool,
        horizon_days: u32,
        now: i64,
    ) -> Result<FeedRow, DbError> {
        let simple = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if source.is_empty() || source.len() > 64 || !source.chars().all(simple) {
            return Err(DbError::Invalid(format!(
                "calendar source {source:?}: give 1 to 64 letters, digits, '.', '_' or '-'"
            )));
        }
        let rest = url
            .get(..8)
            .filter(|s| s.eq_ignore_ascii_case("https://"))
            .map(|_| &url[8..]);
        match rest {
            Some(r)
                if !r.is_empty()
                    && url.len() <= 2000
                    && !url.chars().any(|c| c.is_whitespace() || c.is_control()) => {}
            _ => {
                return Err(DbError::Invalid(format!(
                    "feed URL {url:?}: give an https:// URL (plain HTTP is refused: the calendar \
                     would travel unauthenticated)"
                )))
            }
        }
        if !(1..=MAX_HORIZON_DAYS).contains(&horizon_days) {
            return Err(DbError::Invalid(format!(
                "a horizon of {horizon_days} days: give 1 to {MAX_HORIZON_DAYS}"
            )));
        }
        self.conn.execute(
            "INSERT INTO calendar_feeds (source, url, partial, horizon_days, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (source) DO UPDATE SET url = ?2, partial = ?3, horizon_days = ?4,
                added_at = ?5, last_poll = NULL, last_error = NULL",
            params![source, url, partial, horizon_days, now],
        )?;
        self.feed(source)?
            .ok_or_else(|| DbError::NoFeed(source.to_owned()))
    }

    /// Every feed, by source.
    pub fn feeds(&self) -> Result<Vec<FeedRow>, DbError> {
        let mut stmt = self.conn.prepare(&format!("{SELECT} ORDER BY source"))?;
        let rows = stmt.query_map([], feed_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn feed(&self, source: &str) -> Result<Option<FeedRow>, DbError> {
        Ok(self
            .conn
            .query_row(
                &format!("{SELECT} WHERE source = ?1"),
                params![source],
                feed_row,
            )
            .optional()?)
    }

    /// Unsubscribes: the feed is no longer polled; its sessions stay (remove them by hand, or
    /// import an empty export of the calendar).
    pub fn remove_feed(&self, source: &str) -> Result<(), DbError> {
        match self.conn.execute(
            "DELETE FROM calendar_feeds WHERE source = ?1",
            params![source],
        )? {
            0 => Err(DbError::NoFeed(source.to_owned())),
            _ => Ok(()),
        }
    }

    /// Records a poll of `source` at `now`: what it changed, or why it changed nothing.
    pub fn feed_polled(
        &self,
        source: &str,
        now: i64,
        outcome: Result<&str, &str>,
    ) -> Result<(), DbError> {
        match outcome {
            Ok(result) => self.conn.execute(
                "UPDATE calendar_feeds SET last_poll = ?2, last_ok = ?2, last_result = ?3,
                 last_error = NULL WHERE source = ?1",
                params![source, now, result],
            )?,
            Err(error) => self.conn.execute(
                "UPDATE calendar_feeds SET last_poll = ?2, last_error = ?3 WHERE source = ?1",
                params![source, now, error],
            )?,
        };
        Ok(())
    }
}

const SELECT: &str = "SELECT source, url, partial, horizon_days, last_poll, last_ok, last_result,
    last_error FROM calendar_feeds";

fn feed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FeedRow> {
    Ok(FeedRow {
        source: r.get(0)?,
        url: r.get(1)?,
        partial: r.get(2)?,
        horizon_days: r.get(3)?,
        last_poll: r.get(4)?,
        last_ok: r.get(5)?,
        last_result: r.get(6)?,
        last_error: r.get(7)?,
    })
}
