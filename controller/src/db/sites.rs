//! Sites (time zone, night windows, WAN cap, takeover policy), their rooms and seats.

use rusqlite::params;

use image_tools::windows::{Schedule, Window};

use super::{policy, Db, DbError};
use crate::takeover::Policy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRow {
    pub name: String,
    pub tz: String,
    pub windows: String,
    pub cap_mbit: u64,
    pub takeover: Policy,
}

impl Db {
    /// Adds a site or changes it; `takeover` is `auto` for a new site when not given, and kept as
    /// it was for an existing one.
    pub fn add_site(
        &self,
        name: &str,
        tz: &str,
        windows: &str,
        cap_mbit: u64,
        takeover: Option<Policy>,
    ) -> Result<(), DbError> {
        image_tools::SiteId::new(name).map_err(|e| DbError::Invalid(e.to_string()))?;
        parse_schedule(tz, windows)?;
        if cap_mbit == 0 || cap_mbit > MAX_CAP_MBIT {
            return Err(DbError::Invalid(format!(
                "the WAN cap must be between 1 and {MAX_CAP_MBIT} Mbit/s, not {cap_mbit}"
            )));
        }
        self.conn.execute(
            "INSERT INTO sites (name, tz, windows, cap_mbit, takeover)
             VALUES (?1, ?2, ?3, ?4, COALESCE(?5, 'auto'))
             ON CONFLICT(name) DO UPDATE
             SET tz = ?2, windows = ?3, cap_mbit = ?4, takeover = COALESCE(?5, takeover)",
            params![
                name,
                tz,
                windows,
                cap_mbit as i64,
                takeover.map(Policy::as_str)
            ],
        )?;
        Ok(())
    }

    pub fn sites(&self) -> Result<Vec<SiteRow>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, tz, windows, cap_mbit, takeover FROM sites ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(SiteRow {
                name: r.get(0)?,
                tz: r.get(1)?,
                windows: r.get(2)?,
                cap_mbit: r.get::<_, i64>(3)? as u64,
                takeover: policy(r, 4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn add_room(&self, site: &str, room: &str) -> Result<(), DbError> {
        check_room_seat(room, None)?;
        if !self.exists("SELECT 1 FROM sites WHERE name = ?1", params![site])? {
            return Err(DbError::NoSite(site.to_owned()));
        }
        self.conn.execute(
            "INSERT OR IGNORE INTO rooms (site, name) VALUES (?1, ?2)",
            params![site, room],
        )?;
        Ok(())
    }

    pub fn add_seat(&self, site: &str, room: &str, seat: &str) -> Result<(), DbError> {
        check_room_seat(room, Some(seat))?;
        if !self.exists(
            "SELECT 1 FROM rooms WHERE site = ?1 AND name = ?2",
            params![site, room],
        )? {
            return Err(DbError::NoRoom {
                site: site.to_owned(),
                room: room.to_owned(),
            });
        }
        self.conn.execute(
            "INSERT OR IGNORE INTO seats (site, room, name) VALUES (?1, ?2, ?3)",
            params![site, room, seat],
        )?;
        Ok(())
    }
}

/// A site's WAN cap is at most this (1 Tbit/s): a larger number is a typing error, and would not
/// fit the database's integer.
pub const MAX_CAP_MBIT: u64 = 1_000_000;

/// A site's schedule from its stored columns.
pub fn parse_schedule(tz: &str, windows: &str) -> Result<Schedule, DbError> {
    let windows = windows
        .split(',')
        .map(|w| w.parse::<Window>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DbError::Invalid(e.to_string()))?;
    if windows.is_empty() {
        return Err(DbError::Invalid(
            "a site needs at least one night window".into(),
        ));
    }
    Schedule::new(tz, windows).map_err(|e| DbError::Invalid(e.to_string()))
}

/// Room and seat names enter here (admin API, seat bindings): they are named in URLs, calendars
/// and logs, so they follow the same rules as master names (`image_tools::ids`).
pub(super) fn check_room_seat(room: &str, seat: Option<&str>) -> Result<(), DbError> {
    image_tools::RoomName::new(room).map_err(|e| DbError::Invalid(e.to_string()))?;
    if let Some(seat) = seat {
        image_tools::SeatName::new(seat).map_err(|e| DbError::Invalid(e.to_string()))?;
    }
    Ok(())
}
