//! The controller's catalogue in SQLite: sites, rooms, masters and the training calendar.
//!
//! One file, WAL mode, foreign keys on, versioned migrations (`PRAGMA user_version`), and every change
//! that touches several rows inside one transaction: an import either lands whole or not at all.
//! Times are Unix seconds; a site's windows are stored as text (`22:00-06:00,12:00-14:00`) and
//! checked when written.
//!
//! By table group: `schema` (the migrations), `sites` (sites, rooms, seats), `removal` (sites,
//! rooms and seats removed, refused while in use unless forced), `masters` (the
//! catalogue of master versions and their manifests), `calendar` (sessions, and the calendar
//! files of `crate::calendar` checked and inserted), `plans` (overrides, and what each site is
//! told or planned from), `nodes` (reports, seat bindings, takeovers, the fleet), `trust`
//! (tokens, enrolments, certificates), `users` (the web console's users), `alerts` (what each
//! alert channel was told).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::takeover::Policy;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database is schema version {found}, newer than this controller ({known}): upgrade nightcast")]
    TooNew { found: i64, known: i64 },
    #[error("{0}")]
    Invalid(String),
    #[error("no site {0:?}: add it first with `nightcast site add`")]
    NoSite(String),
    #[error("site {0:?} already exists: change it with `nightcast site set {0}` (only what you give changes)")]
    SiteExists(String),
    #[error("{place} is still used by {blockers}: remove them first, or pass --force to remove them with it")]
    PlaceInUse { place: String, blockers: String },
    #[error("no room {room:?} at site {site:?}: add it first with `nightcast room add`")]
    NoRoom { site: String, room: String },
    #[error("no master {name} {version}: import it first with `nightcast master import`")]
    NoMaster { name: String, version: String },
    #[error("no master {0:?}: import a version of it first with `nightcast master import`")]
    NoMasterName(String),
    #[error("master {name} {version} is needed by {sessions} upcoming session(s) (first: {first}); remove or move them first")]
    MasterInUse {
        name: String,
        version: String,
        sessions: u64,
        first: String,
    },
    #[error("no seat {room}/{seat} at site {site:?}: add it first with `nightcast seat add`")]
    NoSeat {
        site: String,
        room: String,
        seat: String,
    },
    #[error("no agent {node:?} at site {site:?}: it must have enrolled or reported (see `nightcast fleet`)")]
    NoAgent { site: String, node: String },
    #[error(
        "{node} is not a spare: it sits at {room}/{seat} (use `nightcast seat assign` to move it)"
    )]
    NotSpare {
        node: String,
        room: String,
        seat: String,
    },
    #[error("{file}:{line}: {what}")]
    Calendar {
        file: String,
        line: usize,
        what: String,
    },
    #[error("{file}: {}, nothing imported (add rules with `nightcast calendar map`, or import the rest with --partial):{}",
        match events.len() { 1 => "1 event matches no mapping rule".to_owned(), n => format!("{n} events match no mapping rule") },
        events.iter().map(|e| format!("\n  {e}")).collect::<String>())]
    Unmatched {
        file: String,
        events: Vec<crate::calendar::mapping::Unmatched>,
    },
    #[error("no mapping rule {0}: see `nightcast calendar map list`")]
    NoRule(i64),
    #[error("no calendar subscription {0:?}: see `nightcast calendar subscriptions`")]
    NoFeed(String),
}

mod alerts;
mod calendar;
mod failures;
mod feeds;
mod masters;
mod nodes;
mod orders;
mod plans;
mod profiles;
pub mod pushes;
mod removal;
mod rules;
mod schema;
mod sites;
mod trust;
mod users;

pub use calendar::{Apply, SessionRow, Synced};
pub use feeds::FeedRow;
pub use nodes::{Bound, FleetRow, Reported};
pub use orders::{OrderRow, ORDER_KEPT_SECS};
pub use plans::OverrideRow;
pub use profiles::ProfileRow;
pub use removal::Removal;
pub use rules::RuleRow;
pub use sites::{parse_schedule, RoomRow, SiteChange, SiteRow, MAX_CAP_MBIT};
pub use trust::PendingRow;
pub use users::UserRow;

/// The catalogue database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        Ok(Db { conn })
    }

    fn exists(&self, sql: &str, p: impl rusqlite::Params) -> Result<bool, DbError> {
        Ok(self
            .conn
            .query_row(sql, p, |_| Ok(()))
            .optional()?
            .is_some())
    }
}

/// A site's takeover policy from column `i`.
fn policy(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Policy> {
    r.get::<_, String>(i)?.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

#[cfg(test)]
mod tests;
