//! Sites (time zone, night windows, WAN cap, takeover policy), their rooms and seats.

use rusqlite::{params, OptionalExtension};

use image_tools::api::Link;
use image_tools::profile::UsbPolicy;
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
    /// The WAN cap of an emergency push in the daytime; 0: the night cap.
    pub emergency_cap_mbit: u64,
    /// Which USB devices plugged into the site's NUCs their guests get.
    pub usb: UsbPolicy,
    /// Each NUC's upload cap to its peers, Mbit/s (0: uncapped); none: each NUC's own.
    pub peer_upload_mbit: Option<u64>,
    /// Whether the NUCs serve their peers during sessions; none: each NUC's own.
    pub peer_share_in_session: Option<bool>,
    /// What its WAN link is like: a far one's relay fetches through `far_listen`.
    pub link: Link,
}

impl Db {
    /// Adds a site (`takeover` is `auto` when not given). An existing site is refused
    /// (`SiteExists`): `set_site` changes one, and only what it is given.
    pub fn add_site(
        &self,
        name: &str,
        tz: &str,
        windows: &str,
        cap_mbit: u64,
        takeover: Option<Policy>,
    ) -> Result<(), DbError> {
        image_tools::SiteId::new(name).map_err(|e| DbError::Invalid(e.to_string()))?;
        check_site(tz, windows, cap_mbit)?;
        if self.exists("SELECT 1 FROM sites WHERE name = ?1", params![name])? {
            return Err(DbError::SiteExists(name.to_owned()));
        }
        self.conn.execute(
            "INSERT INTO sites (name, tz, windows, cap_mbit, takeover)
             VALUES (?1, ?2, ?3, ?4, COALESCE(?5, 'auto'))",
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

    /// Changes what `change` gives of an existing site, keeping the rest; the site as it is now.
    pub fn set_site(&mut self, name: &str, change: &SiteChange) -> Result<SiteRow, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row = tx
            .query_row(
                "SELECT name, tz, windows, cap_mbit, takeover, emergency_cap_mbit, usb,
                    peer_upload_mbit, peer_share_in_session, link FROM sites
                 WHERE name = ?1",
                params![name],
                site_row,
            )
            .optional()?
            .ok_or_else(|| DbError::NoSite(name.to_owned()))?;
        let row = SiteRow {
            tz: change.tz.clone().unwrap_or(row.tz),
            windows: change.windows.clone().unwrap_or(row.windows),
            cap_mbit: change.cap_mbit.unwrap_or(row.cap_mbit),
            takeover: change.takeover.unwrap_or(row.takeover),
            emergency_cap_mbit: change.emergency_cap_mbit.unwrap_or(row.emergency_cap_mbit),
            usb: change.usb.unwrap_or(row.usb),
            peer_upload_mbit: change.peer_upload_mbit.or(row.peer_upload_mbit),
            peer_share_in_session: change.peer_share_in_session.or(row.peer_share_in_session),
            link: change.link.unwrap_or(row.link),
            name: row.name,
        };
        check_site(&row.tz, &row.windows, row.cap_mbit)?;
        if row.emergency_cap_mbit > MAX_CAP_MBIT {
            return Err(DbError::Invalid(format!(
                "the emergency cap must be at most {MAX_CAP_MBIT} Mbit/s (0: the night cap), not {}",
                row.emergency_cap_mbit
            )));
        }
        tx.execute(
            "UPDATE sites SET tz = ?2, windows = ?3, cap_mbit = ?4, takeover = ?5,
                emergency_cap_mbit = ?6, usb = ?7, peer_upload_mbit = ?8,
                peer_share_in_session = ?9, link = ?10 WHERE name = ?1",
            params![
                name,
                row.tz,
                row.windows,
                row.cap_mbit as i64,
                row.takeover.as_str(),
                row.emergency_cap_mbit as i64,
                row.usb.word(),
                row.peer_upload_mbit.map(|m| m as i64),
                row.peer_share_in_session,
                row.link.as_str()
            ],
        )?;
        tx.commit()?;
        Ok(row)
    }

    pub fn sites(&self) -> Result<Vec<SiteRow>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, tz, windows, cap_mbit, takeover, emergency_cap_mbit, usb,
                    peer_upload_mbit, peer_share_in_session, link FROM sites
                 ORDER BY name",
        )?;
        let rows = stmt.query_map([], site_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Each room of every site (or of one), with its seats and its sessions not yet ended at
    /// `now`.
    pub fn rooms(&self, site: Option<&str>, now: i64) -> Result<Vec<RoomRow>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT r.site, r.name,
                (SELECT count(*) FROM seats s WHERE s.site = r.site AND s.room = r.name),
                (SELECT count(*) FROM sessions x
                 WHERE x.site = r.site AND x.room = r.name AND x.end > ?2)
             FROM rooms r WHERE ?1 IS NULL OR r.site = ?1 ORDER BY r.site, r.name",
        )?;
        let rows = stmt.query_map(params![site, now], |r| {
            Ok(RoomRow {
                site: r.get(0)?,
                room: r.get(1)?,
                seats: r.get::<_, i64>(2)? as u64,
                upcoming_sessions: r.get::<_, i64>(3)? as u64,
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

/// What `Db::set_site` changes: only the fields given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteChange {
    pub tz: Option<String>,
    pub windows: Option<String>,
    pub cap_mbit: Option<u64>,
    pub takeover: Option<Policy>,
    pub emergency_cap_mbit: Option<u64>,
    pub usb: Option<UsbPolicy>,
    pub peer_upload_mbit: Option<u64>,
    pub peer_share_in_session: Option<bool>,
    pub link: Option<Link>,
}

/// A room, with how many seats and sessions to come it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    pub site: String,
    pub room: String,
    pub seats: u64,
    pub upcoming_sessions: u64,
}

fn site_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SiteRow> {
    Ok(SiteRow {
        name: r.get(0)?,
        tz: r.get(1)?,
        windows: r.get(2)?,
        cap_mbit: r.get::<_, i64>(3)? as u64,
        takeover: policy(r, 4)?,
        emergency_cap_mbit: r.get::<_, i64>(5)? as u64,
        usb: {
            let word: String = r.get(6)?;
            word.parse().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?
        },
        peer_upload_mbit: r.get::<_, Option<i64>>(7)?.map(|m| m as u64),
        peer_share_in_session: r.get(8)?,
        link: {
            let word: String = r.get(9)?;
            word.parse().map_err(|e: String| {
                rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, e.into())
            })?
        },
    })
}

/// A site's time zone, windows and cap, checked.
fn check_site(tz: &str, windows: &str, cap_mbit: u64) -> Result<(), DbError> {
    parse_schedule(tz, windows)?;
    if cap_mbit == 0 || cap_mbit > MAX_CAP_MBIT {
        return Err(DbError::Invalid(format!(
            "the WAN cap must be between 1 and {MAX_CAP_MBIT} Mbit/s, not {cap_mbit}"
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lyon(dir: &std::path::Path) -> Db {
        let db = Db::open(&dir.join("c.db")).unwrap();
        db.add_site("lyon", "Europe/Paris", "20:00-07:00,12:00-14:00", 20, None)
            .unwrap();
        db
    }

    #[test]
    fn adding_an_existing_site_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = lyon(dir.path());
        let e = db
            .add_site("lyon", "Europe/Paris", "22:00-06:00", 50, None)
            .unwrap_err();
        assert!(matches!(e, DbError::SiteExists(_)), "{e}");
        assert!(e.to_string().contains("nightcast site set lyon"), "{e}");
        let site = &db.sites().unwrap()[0];
        assert_eq!(
            (site.windows.as_str(), site.cap_mbit),
            ("20:00-07:00,12:00-14:00", 20)
        );
    }

    #[test]
    fn setting_a_cap_keeps_the_night_windows_and_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        let change = SiteChange {
            cap_mbit: Some(50),
            ..SiteChange::default()
        };
        let row = db.set_site("lyon", &change).unwrap();
        let expected = SiteRow {
            name: "lyon".into(),
            tz: "Europe/Paris".into(),
            windows: "20:00-07:00,12:00-14:00".into(),
            cap_mbit: 50,
            takeover: Policy::Auto,
            emergency_cap_mbit: 0,
            usb: UsbPolicy::None,
            peer_upload_mbit: None,
            peer_share_in_session: None,
            link: Link::Wired,
        };
        assert_eq!(row, expected);
        assert_eq!(db.sites().unwrap(), vec![expected]);
    }

    #[test]
    fn a_sites_usb_policy_is_none_until_set_and_kept_by_other_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        assert_eq!(db.sites().unwrap()[0].usb, UsbPolicy::None);
        let change = SiteChange {
            usb: Some(UsbPolicy::Storage),
            ..SiteChange::default()
        };
        assert_eq!(
            db.set_site("lyon", &change).unwrap().usb,
            UsbPolicy::Storage
        );
        let change = SiteChange {
            cap_mbit: Some(30),
            ..SiteChange::default()
        };
        db.set_site("lyon", &change).unwrap();
        assert_eq!(db.sites().unwrap()[0].usb, UsbPolicy::Storage);
    }

    #[test]
    fn a_site_is_wired_until_set_far_and_other_changes_keep_its_link() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        assert_eq!(db.sites().unwrap()[0].link, Link::Wired);
        let far = SiteChange {
            link: Some(Link::Far),
            ..SiteChange::default()
        };
        assert_eq!(db.set_site("lyon", &far).unwrap().link, Link::Far);
        let change = SiteChange {
            cap_mbit: Some(10),
            usb: Some(UsbPolicy::All),
            ..SiteChange::default()
        };
        db.set_site("lyon", &change).unwrap();
        assert_eq!(db.sites().unwrap()[0].link, Link::Far);
        let wired = SiteChange {
            link: Some(Link::Wired),
            ..SiteChange::default()
        };
        db.set_site("lyon", &wired).unwrap();
        assert_eq!(db.sites().unwrap()[0].link, Link::Wired);
    }

    #[test]
    fn a_sites_peer_settings_are_the_nucs_own_until_set_and_kept_by_other_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        let row = &db.sites().unwrap()[0];
        assert_eq!(
            (row.peer_upload_mbit, row.peer_share_in_session),
            (None, None)
        );
        let change = SiteChange {
            peer_upload_mbit: Some(40),
            peer_share_in_session: Some(true),
            ..SiteChange::default()
        };
        let row = db.set_site("lyon", &change).unwrap();
        assert_eq!(
            (row.peer_upload_mbit, row.peer_share_in_session),
            (Some(40), Some(true))
        );
        let change = SiteChange {
            usb: Some(UsbPolicy::All),
            peer_share_in_session: Some(false),
            ..SiteChange::default()
        };
        db.set_site("lyon", &change).unwrap();
        let row = &db.sites().unwrap()[0];
        assert_eq!(
            (row.peer_upload_mbit, row.peer_share_in_session),
            (Some(40), Some(false))
        );
        // 0 is a value (uncapped), not "unset".
        let change = SiteChange {
            peer_upload_mbit: Some(0),
            ..SiteChange::default()
        };
        assert_eq!(
            db.set_site("lyon", &change).unwrap().peer_upload_mbit,
            Some(0)
        );
    }

    #[test]
    fn an_emergency_cap_is_kept_apart_from_the_night_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        assert_eq!(db.sites().unwrap()[0].emergency_cap_mbit, 0);
        let change = SiteChange {
            emergency_cap_mbit: Some(8),
            ..SiteChange::default()
        };
        let row = db.set_site("lyon", &change).unwrap();
        assert_eq!((row.cap_mbit, row.emergency_cap_mbit), (20, 8));
        assert_eq!(db.sites().unwrap()[0].emergency_cap_mbit, 8);
        let too_much = SiteChange {
            emergency_cap_mbit: Some(MAX_CAP_MBIT + 1),
            ..SiteChange::default()
        };
        assert!(matches!(
            db.set_site("lyon", &too_much),
            Err(DbError::Invalid(_))
        ));
        assert_eq!(db.sites().unwrap()[0].emergency_cap_mbit, 8);
    }

    #[test]
    fn a_bad_change_or_an_unknown_site_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        let before = db.sites().unwrap();
        for change in [
            SiteChange {
                windows: Some("22h-6h".into()),
                ..SiteChange::default()
            },
            SiteChange {
                tz: Some("Europe/Lyon".into()),
                cap_mbit: Some(30),
                ..SiteChange::default()
            },
            SiteChange {
                cap_mbit: Some(0),
                ..SiteChange::default()
            },
        ] {
            let e = db.set_site("lyon", &change).unwrap_err();
            assert!(matches!(e, DbError::Invalid(_)), "{change:?}: {e}");
        }
        assert_eq!(db.sites().unwrap(), before);
        assert!(matches!(
            db.set_site("lyyon", &SiteChange::default()),
            Err(DbError::NoSite(_))
        ));
    }

    #[test]
    fn rooms_are_listed_with_their_seats_and_sessions_to_come() {
        let dir = tempfile::tempdir().unwrap();
        let db = lyon(dir.path());
        db.add_site("nice", "Europe/Paris", "22:00-06:00", 20, None)
            .unwrap();
        for (site, room) in [("lyon", "salle-2"), ("lyon", "salle-1"), ("nice", "a")] {
            db.add_room(site, room).unwrap();
        }
        db.add_seat("lyon", "salle-1", "pc-1").unwrap();
        db.add_seat("lyon", "salle-1", "pc-2").unwrap();
        let room = |site: &str, room: &str, seats| RoomRow {
            site: site.into(),
            room: room.into(),
            seats,
            upcoming_sessions: 0,
        };
        assert_eq!(
            db.rooms(None, 0).unwrap(),
            vec![
                room("lyon", "salle-1", 2),
                room("lyon", "salle-2", 0),
                room("nice", "a", 0)
            ]
        );
        assert_eq!(
            db.rooms(Some("nice"), 0).unwrap(),
            vec![room("nice", "a", 0)]
        );
    }
}
