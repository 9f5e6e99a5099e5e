//! Removing sites, rooms and seats: refused while anything still uses the place (rooms, seats,
//! sessions, nodes), with each of them named, or with `force`, everything under it removed in the
//! same transaction: sessions deleted, NUCs sitting at its seats made spares, and for a site its
//! nodes revoked (as `nightcast node rm` does) and forgotten, its unused tokens and waiting
//! enrolment requests dropped, its overrides gone with it.

use rusqlite::{params, Transaction, TransactionBehavior};

use super::trust::revoke_in;
use super::{Db, DbError};

/// What a removal took with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    pub rooms: u64,
    pub seats: u64,
    /// Sessions deleted, past ones included.
    pub sessions: u64,
    /// Agents that sat at a removed seat: spares now.
    pub unseated: Vec<String>,
    /// Relays and NUCs revoked and forgotten (a site's).
    pub nodes: Vec<String>,
}

/// Which part of a site is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place<'a> {
    Site(&'a str),
    Room(&'a str, &'a str),
    Seat(&'a str, &'a str, &'a str),
}

impl Place<'_> {
    /// The `WHERE` of rows under the place, in tables with `site`, `room` and seat columns,
    /// with ?1 site, ?2 room, ?3 seat (NULL matches all).
    fn parts(&self) -> (&str, Option<&str>, Option<&str>) {
        match *self {
            Place::Site(s) => (s, None, None),
            Place::Room(s, r) => (s, Some(r), None),
            Place::Seat(s, r, t) => (s, Some(r), Some(t)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Place::Site(s) => format!("site {s}"),
            Place::Room(s, r) => format!("room {s}/{r}"),
            Place::Seat(s, r, t) => format!("seat {s}/{r}/{t}"),
        }
    }
}

impl Db {
    /// Removes `site`: refused while it has rooms, seats, sessions or nodes, unless `force`
    /// (then they go with it, its nodes revoked at `now`).
    pub fn remove_site(&mut self, site: &str, force: bool, now: i64) -> Result<Removal, DbError> {
        self.remove(Place::Site(site), force, now)
    }

    /// Removes a room: refused while it has seats or sessions, unless `force`.
    pub fn remove_room(&mut self, site: &str, room: &str, force: bool) -> Result<Removal, DbError> {
        self.remove(Place::Room(site, room), force, 0)
    }

    /// Removes a seat: refused while a NUC sits at it, unless `force` (it becomes a spare).
    pub fn remove_seat(
        &mut self,
        site: &str,
        room: &str,
        seat: &str,
        force: bool,
    ) -> Result<Removal, DbError> {
        self.remove(Place::Seat(site, room, seat), force, 0)
    }

    fn remove(&mut self, place: Place, force: bool, now: i64) -> Result<Removal, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        exists(&tx, place)?;
        let found = inventory(&tx, place)?;
        let blockers = found.blockers(place);
        if !force && !blockers.is_empty() {
            return Err(DbError::PlaceInUse {
                place: place.describe(),
                blockers: blockers.join(", "),
            });
        }
        let (site, room, seat) = place.parts();
        let removal = Removal {
            rooms: found.rooms.len() as u64,
            seats: found.seats,
            sessions: found.sessions,
            unseated: match place {
                Place::Site(_) => Vec::new(),
                _ => found.seated.clone(),
            },
            nodes: match place {
                Place::Site(_) => found.nodes.clone(),
                _ => Vec::new(),
            },
        };
        // Sessions, then who sits where, then seats, rooms and the site.
        if seat.is_none() {
            tx.execute(
                "DELETE FROM sessions WHERE site = ?1 AND (?2 IS NULL OR room = ?2)",
                params![site, room],
            )?;
        }
        tx.execute(
            "UPDATE nodes SET room = NULL, seat = NULL WHERE site = ?1 AND seat IS NOT NULL
             AND (?2 IS NULL OR room = ?2) AND (?3 IS NULL OR seat = ?3)",
            params![site, room, seat],
        )?;
        tx.execute(
            "DELETE FROM seats WHERE site = ?1 AND (?2 IS NULL OR room = ?2)
             AND (?3 IS NULL OR name = ?3)",
            params![site, room, seat],
        )?;
        match place {
            Place::Seat(..) => {}
            Place::Room(..) => {
                tx.execute(
                    "DELETE FROM rooms WHERE site = ?1 AND name = ?2",
                    params![site, room],
                )?;
            }
            Place::Site(_) => {
                for node in &found.nodes {
                    revoke_in(&tx, node, now)?;
                    tx.execute(
                        "DELETE FROM nodes WHERE site = ?1 AND node = ?2",
                        params![site, node],
                    )?;
                }
                tx.execute("DELETE FROM rooms WHERE site = ?1", params![site])?;
                tx.execute("DELETE FROM tokens WHERE site = ?1", params![site])?;
                tx.execute(
                    "DELETE FROM enrolment_requests WHERE site = ?1",
                    params![site],
                )?;
                tx.execute("DELETE FROM sites WHERE name = ?1", params![site])?;
            }
        }
        tx.commit()?;
        Ok(removal)
    }
}

/// What is under a place.
#[derive(Debug, Default)]
struct Found {
    rooms: Vec<String>,
    seats: u64,
    sessions: u64,
    /// Agents sitting at its seats.
    seated: Vec<String>,
    /// Nodes enrolled at the site (a site only).
    nodes: Vec<String>,
}

impl Found {
    /// What keeps `place` from being removed without force, in words.
    fn blockers(&self, place: Place) -> Vec<String> {
        let mut out = Vec::new();
        if let Place::Site(_) = place {
            if !self.rooms.is_empty() {
                out.push(format!(
                    "{} room(s) ({}; `nightcast room list`)",
                    self.rooms.len(),
                    self.rooms.join(", ")
                ));
            }
        }
        if self.seats > 0 && !matches!(place, Place::Seat(..)) {
            out.push(format!("{} seat(s)", self.seats));
        }
        if self.sessions > 0 {
            out.push(format!(
                "{} session(s) (`nightcast session list`)",
                self.sessions
            ));
        }
        match place {
            Place::Site(_) if !self.nodes.is_empty() => out.push(format!(
                "{} enrolled node(s) ({}; `nightcast fleet`)",
                self.nodes.len(),
                self.nodes.join(", ")
            )),
            Place::Room(..) | Place::Seat(..) if !self.seated.is_empty() => {
                out.push(format!("NUC(s) sitting there ({})", self.seated.join(", ")))
            }
            _ => {}
        }
        out
    }
}

/// `NoSite`, `NoRoom` or `NoSeat` when the place does not exist.
fn exists(tx: &Transaction<'_>, place: Place) -> Result<(), DbError> {
    let (site, room, seat) = place.parts();
    let (sql, err) = match place {
        Place::Site(_) => (
            "SELECT count(*) FROM sites WHERE name = ?1 AND ?2 IS NULL AND ?3 IS NULL",
            DbError::NoSite(site.to_owned()),
        ),
        Place::Room(..) => (
            "SELECT count(*) FROM rooms WHERE site = ?1 AND name = ?2 AND ?3 IS NULL",
            DbError::NoRoom {
                site: site.to_owned(),
                room: room.unwrap_or_default().to_owned(),
            },
        ),
        Place::Seat(..) => (
            "SELECT count(*) FROM seats WHERE site = ?1 AND room = ?2 AND name = ?3",
            DbError::NoSeat {
                site: site.to_owned(),
                room: room.unwrap_or_default().to_owned(),
                seat: seat.unwrap_or_default().to_owned(),
            },
        ),
    };
    let n: i64 = tx.query_row(sql, params![site, room, seat], |r| r.get(0))?;
    if n == 0 {
        return Err(err);
    }
    Ok(())
}

fn inventory(tx: &Transaction<'_>, place: Place) -> Result<Found, DbError> {
    let (site, room, seat) = place.parts();
    let strings = |sql: &str| -> Result<Vec<String>, DbError> {
        let mut stmt = tx.prepare(sql)?;
        let rows = stmt.query_map(params![site, room, seat], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let count = |sql: &str| -> Result<u64, DbError> {
        Ok(tx.query_row(sql, params![site, room, seat], |r| r.get::<_, i64>(0))? as u64)
    };
    Ok(Found {
        rooms: strings(
            "SELECT name FROM rooms WHERE site = ?1 AND (?2 IS NULL OR name = ?2)
             AND ?3 IS NULL ORDER BY name",
        )?,
        seats: count(
            "SELECT count(*) FROM seats WHERE site = ?1 AND (?2 IS NULL OR room = ?2)
             AND (?3 IS NULL OR name = ?3)",
        )?,
        sessions: count(
            "SELECT count(*) FROM sessions WHERE site = ?1 AND (?2 IS NULL OR room = ?2)
             AND ?3 IS NULL",
        )?,
        seated: strings(
            "SELECT node FROM nodes WHERE site = ?1 AND seat IS NOT NULL
             AND (?2 IS NULL OR room = ?2) AND (?3 IS NULL OR seat = ?3) ORDER BY node",
        )?,
        nodes: strings(
            "SELECT node FROM nodes WHERE site = ?1 AND ?2 IS NULL AND ?3 IS NULL ORDER BY node",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lyon: salle-1 (pc-1 with nuc-a, pc-2), salle-2 (empty); a session in salle-1; a relay
    /// and nuc-a enrolled with a certificate each; a token and an override. nice: empty.
    fn lyon(dir: &std::path::Path) -> Db {
        let db = Db::open(&dir.join("c.db")).unwrap();
        for site in ["lyon", "nice"] {
            db.add_site(site, "Europe/Paris", "22:00-06:00", 20, None)
                .unwrap();
        }
        db.add_room("lyon", "salle-1").unwrap();
        db.add_room("lyon", "salle-2").unwrap();
        db.add_seat("lyon", "salle-1", "pc-1").unwrap();
        db.add_seat("lyon", "salle-1", "pc-2").unwrap();
        db.conn
            .execute_batch(
                "INSERT INTO masters (name, version, size, stored_bytes, manifest, imported_at)
                 VALUES ('win10', '1', 1, 1, x'00', 0);
                 INSERT INTO sessions (site, room, master, version, start, end)
                 VALUES ('lyon', 'salle-1', 'win10', '1', 1000, 2000);
                 INSERT INTO nodes (site, node, role, enrolled_at, room, seat)
                 VALUES ('lyon', 'nuc-a', 'agent', 0, 'salle-1', 'pc-1');
                 INSERT INTO nodes (site, node, role, enrolled_at) VALUES ('lyon', 'relay-1', 'relay', 0);
                 INSERT INTO certificates (serial, site, node, role, not_before, not_after, issued_at)
                 VALUES ('01', 'lyon', 'nuc-a', 'agent', 0, 99999, 0),
                        ('02', 'lyon', 'relay-1', 'relay', 0, 99999, 0);
                 INSERT INTO tokens (secret_hash, role, site, created_at, expires_at)
                 VALUES ('h', 'relay', 'lyon', 0, 99999);
                 INSERT INTO overrides (site, master, version, reason, requested_by, created_at, until)
                 VALUES ('lyon', 'win10', '1', 'why', 'dsi', 0, 99999);",
            )
            .unwrap();
        db
    }

    fn count(db: &Db, sql: &str) -> i64 {
        db.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_site_in_use_is_refused_naming_what_uses_it_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        let e = db.remove_site("lyon", false, 50).unwrap_err().to_string();
        for part in [
            "site lyon is still used by",
            "2 room(s) (salle-1, salle-2",
            "2 seat(s)",
            "1 session(s)",
            "2 enrolled node(s) (nuc-a, relay-1",
            "--force",
        ] {
            assert!(e.contains(part), "{part:?} missing: {e}");
        }
        assert_eq!(count(&db, "SELECT count(*) FROM sites"), 2);
        assert_eq!(count(&db, "SELECT count(*) FROM nodes"), 2);
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM certificates WHERE revoked_at IS NULL"
            ),
            2
        );
    }

    #[test]
    fn a_site_removed_with_force_takes_everything_under_it_and_revokes_its_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        let r = db.remove_site("lyon", true, 50).unwrap();
        assert_eq!(
            r,
            Removal {
                rooms: 2,
                seats: 2,
                sessions: 1,
                unseated: vec![],
                nodes: vec!["nuc-a".into(), "relay-1".into()],
            }
        );
        for (table, left) in [
            ("sites", 1),
            ("rooms", 0),
            ("seats", 0),
            ("sessions", 0),
            ("nodes", 0),
            ("tokens", 0),
            ("overrides", 0),
        ] {
            let n = count(&db, &format!("SELECT count(*) FROM {table}"));
            assert_eq!(n, left, "{table}");
        }
        // Its certificates are kept, revoked: they are refused at the handshake.
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM certificates WHERE revoked_at = 50"
            ),
            2
        );
        // An empty site goes without force; an unknown one is named.
        assert_eq!(
            db.remove_site("nice", false, 50).unwrap(),
            Removal::default()
        );
        assert!(matches!(
            db.remove_site("nice", false, 50),
            Err(DbError::NoSite(_))
        ));
    }

    #[test]
    fn a_room_goes_when_empty_or_with_force_and_its_nucs_become_spares() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        assert_eq!(
            db.remove_room("lyon", "salle-2", false).unwrap(),
            Removal {
                rooms: 1,
                ..Removal::default()
            }
        );
        let e = db
            .remove_room("lyon", "salle-1", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("room lyon/salle-1 is still used by 2 seat(s), 1 session(s)")
                && e.contains("NUC(s) sitting there (nuc-a)"),
            "{e}"
        );
        let r = db.remove_room("lyon", "salle-1", true).unwrap();
        assert_eq!(
            (r.seats, r.sessions, r.unseated),
            (2, 1, vec!["nuc-a".into()])
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM nodes WHERE node = 'nuc-a' AND seat IS NULL"
            ),
            1
        );
        assert_eq!(count(&db, "SELECT count(*) FROM rooms"), 0);
        assert!(matches!(
            db.remove_room("lyon", "salle-1", true),
            Err(DbError::NoRoom { .. })
        ));
    }

    #[test]
    fn a_seat_with_a_nuc_needs_force_and_an_empty_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = lyon(dir.path());
        let r = db.remove_seat("lyon", "salle-1", "pc-2", false).unwrap();
        assert_eq!((r.seats, r.unseated.len()), (1, 0));
        let e = db
            .remove_seat("lyon", "salle-1", "pc-1", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("seat lyon/salle-1/pc-1 is still used by NUC(s) sitting there (nuc-a)"),
            "{e}"
        );
        let r = db.remove_seat("lyon", "salle-1", "pc-1", true).unwrap();
        assert_eq!(r.unseated, vec!["nuc-a".to_owned()]);
        // The room and its session stay.
        assert_eq!(count(&db, "SELECT count(*) FROM sessions"), 1);
        assert!(matches!(
            db.remove_seat("lyon", "salle-1", "pc-1", false),
            Err(DbError::NoSeat { .. })
        ));
    }
}
