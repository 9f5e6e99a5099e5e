//! The controller's catalogue in SQLite: sites, rooms, masters and the training calendar.
//!
//! One file, WAL mode, foreign keys on, versioned migrations (`PRAGMA user_version`), and every change
//! that touches several rows inside one transaction: an import either lands whole or not at all.
//! Times are Unix seconds; a site's windows are stored as text (`22:00-06:00,12:00-14:00`) and
//! checked when written.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use image_tools::windows::{Schedule, Window};

use crate::takeover::{self, Decision, Policy};

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
    #[error("no room {room:?} at site {site:?}: add it first with `nightcast room add`")]
    NoRoom { site: String, room: String },
    #[error("no master {name} {version}: import it first with `nightcast master import`")]
    NoMaster { name: String, version: String },
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
}

/// Each entry moves the schema from version i to i+1.
const MIGRATIONS: &[&str] = &[
    // 1: the catalogue and the calendar.
    "CREATE TABLE sites (
        name TEXT PRIMARY KEY,
        tz TEXT NOT NULL,
        windows TEXT NOT NULL,
        cap_mbit INTEGER NOT NULL CHECK (cap_mbit > 0)
     );
     CREATE TABLE rooms (
        site TEXT NOT NULL REFERENCES sites(name) ON DELETE RESTRICT,
        name TEXT NOT NULL,
        PRIMARY KEY (site, name)
     );
     CREATE TABLE seats (
        site TEXT NOT NULL,
        room TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (site, room, name),
        FOREIGN KEY (site, room) REFERENCES rooms(site, name) ON DELETE RESTRICT
     );
     CREATE TABLE masters (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        size INTEGER NOT NULL,
        stored_bytes INTEGER NOT NULL,
        manifest BLOB NOT NULL,
        imported_at INTEGER NOT NULL,
        PRIMARY KEY (name, version)
     );
     CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL,
        room TEXT NOT NULL,
        master TEXT NOT NULL,
        version TEXT NOT NULL,
        start INTEGER NOT NULL,
        end INTEGER NOT NULL CHECK (end > start),
        FOREIGN KEY (site, room) REFERENCES rooms(site, name) ON DELETE RESTRICT,
        FOREIGN KEY (master, version) REFERENCES masters(name, version) ON DELETE RESTRICT
     );
     CREATE INDEX sessions_by_site ON sessions(site, start);",
    // 2: enrolled nodes, their last report, and what each relay holds.
    "CREATE TABLE nodes (
        site TEXT NOT NULL,
        node TEXT NOT NULL,
        role TEXT NOT NULL,
        enrolled_at INTEGER NOT NULL,
        last_seen INTEGER,
        PRIMARY KEY (site, node)
     );
     CREATE TABLE holdings (
        site TEXT NOT NULL,
        node TEXT NOT NULL,
        master TEXT NOT NULL,
        version TEXT NOT NULL,
        PRIMARY KEY (site, node, master, version),
        FOREIGN KEY (site, node) REFERENCES nodes(site, node) ON DELETE CASCADE
     );",
    // 3: daytime pushes, with who asked and why.
    "CREATE TABLE overrides (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL REFERENCES sites(name) ON DELETE CASCADE,
        master TEXT NOT NULL,
        version TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (length(reason) > 0),
        requested_by TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        until INTEGER NOT NULL,
        FOREIGN KEY (master, version) REFERENCES masters(name, version) ON DELETE CASCADE
     );",
    // 4: the fields of each node's last report (state, disk, errors...), as a JSON object.
    "ALTER TABLE nodes ADD COLUMN status TEXT NOT NULL DEFAULT '{}';",
    // 5: which agent sits at which seat (NULL: a spare; a seat holds at most one node and must
    // exist), and each site's takeover policy.
    "ALTER TABLE nodes ADD COLUMN room TEXT;
     ALTER TABLE nodes ADD COLUMN seat TEXT CHECK ((seat IS NULL) = (room IS NULL));
     CREATE UNIQUE INDEX nodes_one_per_seat ON nodes(site, room, seat) WHERE seat IS NOT NULL;
     CREATE TRIGGER nodes_seat_exists_on_insert BEFORE INSERT ON nodes
        WHEN NEW.seat IS NOT NULL AND NOT EXISTS
            (SELECT 1 FROM seats WHERE site = NEW.site AND room = NEW.room AND name = NEW.seat)
        BEGIN SELECT RAISE(ABORT, 'no such seat'); END;
     CREATE TRIGGER nodes_seat_exists_on_update BEFORE UPDATE OF room, seat ON nodes
        WHEN NEW.seat IS NOT NULL AND NOT EXISTS
            (SELECT 1 FROM seats WHERE site = NEW.site AND room = NEW.room AND name = NEW.seat)
        BEGIN SELECT RAISE(ABORT, 'no such seat'); END;
     ALTER TABLE sites ADD COLUMN takeover TEXT NOT NULL DEFAULT 'auto'
        CHECK (takeover IN ('auto', 'confirm'));",
    // 6: trust: enrolment tokens (hashes only), NUCs waiting for the DSI, every certificate
    // issued (for revocation), sites opened for new NUCs, revoked nodes. See `db::trust`.
    "CREATE TABLE tokens (
        secret_hash TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        site TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
     );
     CREATE TABLE enrolment_requests (
        node TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        role TEXT NOT NULL,
        public_key BLOB NOT NULL,
        mac TEXT NOT NULL,
        via TEXT NOT NULL,
        requested_at INTEGER NOT NULL,
        approved_at INTEGER
     );
     CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        node TEXT NOT NULL,
        role TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        issued_at INTEGER NOT NULL,
        revoked_at INTEGER
     );
     CREATE INDEX certificates_by_node ON certificates(node);
     ALTER TABLE sites ADD COLUMN accept_new_until INTEGER;
     ALTER TABLE nodes ADD COLUMN revoked_at INTEGER;",
];

mod trust;
pub use trust::PendingRow;

/// The catalogue database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRow {
    pub name: String,
    pub tz: String,
    pub windows: String,
    pub cap_mbit: u64,
    pub takeover: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRow {
    pub site: String,
    pub node: String,
    pub role: String,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    /// "master version, ..." of what it reported holding.
    pub holding: String,
    /// The fields of its last report.
    pub status: std::collections::BTreeMap<String, String>,
    /// An agent's seat as `room/seat`; `None` for a spare (and a relay).
    pub seat: Option<String>,
    /// Why a spare is not taking over a silent seat by itself (see `takeover`).
    pub waiting: Option<String>,
}

impl FleetRow {
    /// What the DSI should look at, from the last report; empty when all is well.
    pub fn attention(&self) -> String {
        let f = |k: &str| self.status.get(k).map(String::as_str).unwrap_or("");
        let n = |k: &str| f(k).parse::<u64>().unwrap_or(0);
        let mut out = Vec::new();
        if let Some(why) = &self.waiting {
            out.push(format!("waits for the DSI: {why}"));
        }
        if f("disk_full") == "true" {
            out.push("DISK FULL: fetching stopped".to_owned());
        }
        if n("pinned_over_quota") > 0 {
            out.push(format!(
                "QUOTA TOO SMALL by {} MB for the scheduled masters",
                n("pinned_over_quota").div_ceil(1_000_000)
            ));
        }
        if !f("agents_not_answering").is_empty() {
            out.push(format!(
                "woken, not answering: {}",
                f("agents_not_answering")
            ));
        }
        let missing: Vec<String> = self
            .status
            .iter()
            .filter_map(|(k, v)| {
                let m = k.strip_prefix("missing ")?;
                let bytes = v.parse::<u64>().ok().filter(|&b| b > 0)?;
                Some(format!("{m}: {} MB to fetch", bytes.div_ceil(1_000_000)))
            })
            .collect();
        out.extend(missing);
        if !f("last_error").is_empty() {
            out.push(format!("last error: {}", f("last_error")));
        }
        out.join("; ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: i64,
    pub site: String,
    pub room: String,
    pub master: String,
    pub version: String,
    pub start: i64,
    pub end: i64,
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(DbError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(Db { conn })
    }

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

    /// Records a master version from its signed manifest bytes (verified by the caller).
    pub fn add_master(
        &self,
        manifest: &image_tools::Manifest,
        bytes: &[u8],
        now: i64,
    ) -> Result<(), DbError> {
        let s = manifest.summary();
        self.conn.execute(
            "INSERT INTO masters (name, version, size, stored_bytes, manifest, imported_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                manifest.name.as_str(),
                manifest.version.as_str(),
                manifest.size as i64,
                s.unique_stored_bytes as i64,
                bytes,
                now
            ],
        )?;
        Ok(())
    }

    /// Removes a master version, refused while a session from `now` on needs it.
    pub fn remove_master(&mut self, name: &str, version: &str, now: i64) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (count, first): (u64, Option<String>) = tx.query_row(
            "SELECT COUNT(*), MIN(site || '/' || room || ' at ' || start) FROM sessions
             WHERE master = ?1 AND version = ?2 AND end > ?3",
            params![name, version, now],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )?;
        if count > 0 {
            return Err(DbError::MasterInUse {
                name: name.to_owned(),
                version: version.to_owned(),
                sessions: count,
                first: first.unwrap_or_default(),
            });
        }
        // Past sessions go with it; the foreign key keeps any other reference from dangling.
        tx.execute(
            "DELETE FROM sessions WHERE master = ?1 AND version = ?2",
            params![name, version],
        )?;
        let n = tx.execute(
            "DELETE FROM masters WHERE name = ?1 AND version = ?2",
            params![name, version],
        )?;
        if n == 0 {
            return Err(DbError::NoMaster {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        tx.commit()?;
        Ok(())
    }

    pub fn sessions(&self, site: Option<&str>) -> Result<Vec<SessionRow>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, site, room, master, version, start, end FROM sessions
             WHERE ?1 IS NULL OR site = ?1 ORDER BY site, start, room",
        )?;
        let rows = stmt.query_map(params![site], |r| {
            Ok(SessionRow {
                id: r.get(0)?,
                site: r.get(1)?,
                room: r.get(2)?,
                master: r.get(3)?,
                version: r.get(4)?,
                start: r.get(5)?,
                end: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Each site's rooms with their sessions not yet ended at `now`, in start order (what the
    /// agents of each room run, and when).
    pub fn room_plans(
        &self,
        now: i64,
    ) -> Result<HashMap<String, Vec<image_tools::wire::RoomPlan>>, DbError> {
        use image_tools::wire::{MasterRef, RoomPlan, SessionEntry};
        let mut out: HashMap<String, Vec<RoomPlan>> = HashMap::new();
        for s in self.sessions(None)?.into_iter().filter(|s| s.end > now) {
            let rooms = out.entry(s.site).or_default();
            let i = match rooms.iter().position(|r| r.room == s.room) {
                Some(i) => i,
                None => {
                    rooms.push(RoomPlan {
                        room: s.room.clone(),
                        sessions: Vec::new(),
                    });
                    rooms.len() - 1
                }
            };
            rooms[i].sessions.push(SessionEntry {
                master: MasterRef {
                    name: s.master,
                    version: s.version,
                },
                start: s.start,
                end: s.end,
            });
        }
        for rooms in out.values_mut() {
            rooms.sort_by(|a, b| a.room.cmp(&b.room));
            for r in rooms.iter_mut() {
                r.sessions.sort_by_key(|s| (s.start, s.end));
            }
        }
        Ok(out)
    }

    /// Imports a calendar in CSV. Every row is checked first; one bad row imports nothing and the
    /// error names its line. Header (in this order):
    /// `site,room,master,version,start,end`, with `start` and `end` as `YYYY-MM-DD HH:MM` in the
    /// site's own time zone.
    pub fn import_csv(&mut self, file_name: &str, text: &str) -> Result<usize, DbError> {
        let rows = crate::calendar::csv::parse(text).map_err(|e| calendar_error(file_name, e))?;
        self.insert_sessions(file_name, rows)
    }

    /// Imports a calendar in iCalendar (`.ics`, see `calendar::ics`: recurrences expanded), all
    /// or nothing. Errors name the line.
    pub fn import_ics(&mut self, file_name: &str, text: &str) -> Result<usize, DbError> {
        let rows = crate::calendar::ics::parse(text).map_err(|e| calendar_error(file_name, e))?;
        self.insert_sessions(file_name, rows)
    }

    /// Adds one session; `start` and `end` are `YYYY-MM-DD HH:MM` in the site's time zone. Checked
    /// as a calendar row is.
    pub fn add_session(
        &mut self,
        site: &str,
        room: &str,
        master: (&str, &str),
        start: &str,
        end: &str,
    ) -> Result<(), DbError> {
        let csv = format!(
            "site,room,master,version,start,end\n{site},{room},{},{},{start},{end}\n",
            master.0, master.1
        );
        if [site, room, master.0, master.1, start, end]
            .iter()
            .any(|f| f.contains(',') || f.contains('\n'))
        {
            return Err(DbError::Invalid(
                "fields may not contain commas or line breaks".into(),
            ));
        }
        self.import_csv("session", &csv).map(|_| ())
    }

    pub fn remove_session(&self, id: i64) -> Result<(), DbError> {
        match self
            .conn
            .execute("DELETE FROM sessions WHERE id = ?1", params![id])?
        {
            0 => Err(DbError::Invalid(format!(
                "no session {id}: see `nightcast session list`"
            ))),
            _ => Ok(()),
        }
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

    /// Lets `site`'s relay fetch `master` outside its night windows until `until`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_override(
        &self,
        site: &str,
        master: (&str, &str),
        reason: &str,
        by: &str,
        now: i64,
        until: i64,
    ) -> Result<i64, DbError> {
        if reason.trim().is_empty() {
            return Err(DbError::Invalid(
                "say why: an override needs a reason".into(),
            ));
        }
        if !self.exists("SELECT 1 FROM sites WHERE name = ?1", params![site])? {
            return Err(DbError::NoSite(site.to_owned()));
        }
        if !self.exists(
            "SELECT 1 FROM masters WHERE name = ?1 AND version = ?2",
            params![master.0, master.1],
        )? {
            return Err(DbError::NoMaster {
                name: master.0.to_owned(),
                version: master.1.to_owned(),
            });
        }
        self.conn.execute(
            "INSERT INTO overrides (site, master, version, reason, requested_by, created_at, until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![site, master.0, master.1, reason.trim(), by, now, until],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Overrides still in force at `now`: (id, site, master, version, reason, by, created, until).
    #[allow(clippy::type_complexity)]
    pub fn overrides(
        &self,
        now: i64,
    ) -> Result<Vec<(i64, String, String, String, String, String, i64, i64)>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, site, master, version, reason, requested_by, created_at, until FROM overrides
             WHERE until > ?1 ORDER BY created_at",
        )?;
        let rows = stmt.query_map(params![now], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Each site's fetch plan from `now`: the master versions its upcoming sessions need, earliest
    /// deadline (first start minus `margin`) first, pinned until their last session ends, plus
    /// active overrides (due now).
    pub fn relay_plans(
        &self,
        now: i64,
        margin: i64,
    ) -> Result<HashMap<String, Vec<image_tools::wire::PlanEntry>>, DbError> {
        use image_tools::wire::{MasterRef, PlanEntry};
        let mut plans: HashMap<String, Vec<PlanEntry>> = HashMap::new();
        for s in self.sessions(None)?.into_iter().filter(|s| s.end > now) {
            let entries = plans.entry(s.site).or_default();
            let master = MasterRef {
                name: s.master,
                version: s.version,
            };
            match entries.iter_mut().find(|e| e.master == master) {
                Some(e) => {
                    e.deadline = e.deadline.min(s.start - margin);
                    e.pin_until = e.pin_until.max(s.end);
                }
                None => entries.push(PlanEntry {
                    master,
                    deadline: s.start - margin,
                    pin_until: s.end,
                    override_until: None,
                }),
            }
        }
        for (_, site, master, version, _, _, created, until) in self.overrides(now)? {
            let entries = plans.entry(site).or_default();
            let master = MasterRef {
                name: master,
                version,
            };
            match entries.iter_mut().find(|e| e.master == master) {
                Some(e) => {
                    e.override_until = Some(e.override_until.unwrap_or(until).max(until));
                    e.deadline = e.deadline.min(created);
                }
                None => entries.push(PlanEntry {
                    master,
                    deadline: created,
                    pin_until: until,
                    override_until: Some(until),
                }),
            }
        }
        for entries in plans.values_mut() {
            entries.sort_by(|a, b| {
                (a.deadline, &a.master.name, &a.master.version).cmp(&(
                    b.deadline,
                    &b.master.name,
                    &b.master.version,
                ))
            });
        }
        Ok(plans)
    }

    /// Records a node's report: it was seen now and holds exactly `holding` (complete versions).
    pub fn record_report(
        &mut self,
        site: &str,
        node: &str,
        role: &str,
        holding: &[(String, String)],
        fields: &[(String, String)],
        now: i64,
    ) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        write_report(&tx, site, node, role, holding, fields, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Records the report of an agent of `site` that its relay forwarded. Ignored (`false`) when
    /// `node` is not an agent enrolled at the site: a relay cannot make NUCs up, nor speak as
    /// another relay.
    pub fn record_agent_report(
        &mut self,
        site: &str,
        node: &str,
        holding: &[(String, String)],
        fields: &[(String, String)],
        now: i64,
    ) -> Result<bool, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let role: Option<String> = tx
            .query_row(
                "SELECT role FROM nodes WHERE site = ?1 AND node = ?2",
                params![site, node],
                |r| r.get(0),
            )
            .optional()?;
        // Only an agent enrolled at this site: a relay cannot make up NUCs, nor speak for a relay.
        if role.is_none_or(|r| r != "agent") {
            return Ok(false);
        }
        write_report(&tx, site, node, "agent", holding, fields, now)?;
        tx.commit()?;
        Ok(true)
    }

    /// Binds agent `node` of `site` to a seat, unbinding the seat's previous node and the node's
    /// previous seat, in one transaction. With `only_spare`, `node` must be bound to no seat (the
    /// DSI confirming a takeover).
    pub fn bind_seat(
        &mut self,
        site: &str,
        room: &str,
        seat: &str,
        node: &str,
        only_spare: bool,
    ) -> Result<Bound, DbError> {
        check_room_seat(room, Some(seat))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let agent: Option<(Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT room, seat FROM nodes WHERE site = ?1 AND node = ?2 AND role = 'agent'",
                params![site, node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((old_room, old_seat)) = agent else {
            return Err(DbError::NoAgent {
                site: site.to_owned(),
                node: node.to_owned(),
            });
        };
        let moved_from = old_room.zip(old_seat);
        if let (true, Some((room, seat))) = (only_spare, &moved_from) {
            return Err(DbError::NotSpare {
                node: node.to_owned(),
                room: room.clone(),
                seat: seat.clone(),
            });
        }
        let replaced = bind(&tx, site, room, seat, node)?;
        tx.commit()?;
        Ok(Bound {
            replaced,
            moved_from: moved_from.filter(|(r, s)| (r.as_str(), s.as_str()) != (room, seat)),
        })
    }

    /// Every site's (or one site's) seats with their nodes, and its spares, as the takeover rules
    /// see them. A node was last heard from at its last report, or else at its enrolment.
    pub fn seat_states(&self, site: Option<&str>) -> Result<Vec<takeover::Site>, DbError> {
        seat_states(&self.conn, site)
    }

    /// Decides takeovers (`takeover::decide`) at every site (or one) and applies the binds, all in
    /// one transaction. Returns every decision, binds and waits, with its site.
    pub fn take_over(
        &mut self,
        now: i64,
        silent_after: i64,
        site: Option<&str>,
    ) -> Result<Vec<(String, Decision)>, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::new();
        for state in seat_states(&tx, site)? {
            for decision in takeover::decide(&state, now, silent_after) {
                if let Decision::Bind {
                    spare, room, seat, ..
                } = &decision
                {
                    bind(&tx, &state.name, room, seat, spare)?;
                }
                out.push((state.name.clone(), decision));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Each site's seat bindings, by room and seat (for the relays' plans).
    pub fn seat_bindings(
        &self,
    ) -> Result<HashMap<String, Vec<image_tools::wire::SeatBinding>>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT site, room, seat, node FROM nodes WHERE seat IS NOT NULL
             ORDER BY site, room, seat",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                image_tools::wire::SeatBinding {
                    room: r.get(1)?,
                    seat: r.get(2)?,
                    node: r.get(3)?,
                },
            ))
        })?;
        let mut out: HashMap<String, Vec<_>> = HashMap::new();
        for row in rows {
            let (site, binding) = row?;
            out.entry(site).or_default().push(binding);
        }
        Ok(out)
    }

    /// What the relays of each site reported holding, for the planner.
    pub fn holds_by_site(&self) -> Result<HashMap<String, Vec<crate::plan::MasterKey>>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT h.site, h.master, h.version FROM holdings h
             JOIN nodes n ON n.site = h.site AND n.node = h.node WHERE n.role = 'relay'",
        )?;
        let mut out: HashMap<String, Vec<crate::plan::MasterKey>> = HashMap::new();
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
        for row in rows {
            let (site, master, version) = row?;
            out.entry(site).or_default().push((master, version));
        }
        Ok(out)
    }

    /// Every known node: site, node, role, enrolled at, last seen, what it holds, its seat; and
    /// for a spare that would take over a silent seat but may not, why (at `now`).
    pub fn fleet(&self, now: i64, silent_after: i64) -> Result<Vec<FleetRow>, DbError> {
        let mut waiting: HashMap<(String, String), String> = HashMap::new();
        for state in self.seat_states(None)? {
            for d in takeover::decide(&state, now, silent_after) {
                if let Decision::Wait { spare, reason } = d {
                    waiting.insert((state.name.clone(), spare), reason);
                }
            }
        }
        let mut stmt = self.conn.prepare(
            "SELECT n.site, n.node, n.role, n.enrolled_at, n.last_seen,
                    COALESCE(GROUP_CONCAT(h.master || ' ' || h.version, ', '), ''), n.status,
                    n.room || '/' || n.seat
             FROM nodes n LEFT JOIN holdings h ON h.site = n.site AND h.node = n.node
             GROUP BY n.site, n.node ORDER BY n.site, n.role DESC, n.node",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(FleetRow {
                site: r.get(0)?,
                node: r.get(1)?,
                role: r.get(2)?,
                enrolled_at: r.get(3)?,
                last_seen: r.get(4)?,
                holding: r.get(5)?,
                status: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                seat: r.get(7)?,
                waiting: None,
            })
        })?;
        let mut rows: Vec<FleetRow> = rows.collect::<Result<_, _>>()?;
        for row in &mut rows {
            row.waiting = waiting.remove(&(row.site.clone(), row.node.clone()));
        }
        Ok(rows)
    }

    /// Checks every row against the catalogue and inserts them in one transaction.
    fn insert_sessions(
        &mut self,
        file_name: &str,
        rows: Vec<crate::calendar::Row>,
    ) -> Result<usize, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = rows.len();
        for r in rows {
            let err = |what: String| DbError::Calendar {
                file: file_name.to_owned(),
                line: r.line,
                what,
            };
            image_tools::RoomName::new(&r.room).map_err(|e| err(e.to_string()))?;
            let tz: Option<String> = tx
                .query_row(
                    "SELECT tz FROM sites WHERE name = ?1",
                    params![r.site],
                    |x| x.get(0),
                )
                .optional()?;
            let tz = tz.ok_or_else(|| err(format!("unknown site {:?}", r.site)))?;
            let exists = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<bool, DbError> {
                Ok(tx.query_row(sql, p, |_| Ok(())).optional()?.is_some())
            };
            if !exists(
                "SELECT 1 FROM rooms WHERE site = ?1 AND name = ?2",
                &[&r.site, &r.room],
            )? {
                return Err(err(format!(
                    "unknown room {:?} at site {:?}",
                    r.room, r.site
                )));
            }
            if !exists(
                "SELECT 1 FROM masters WHERE name = ?1 AND version = ?2",
                &[&r.master, &r.version],
            )? {
                return Err(err(format!("unknown master {} {}", r.master, r.version)));
            }
            let start = r.start.resolve(&tz).map_err(&err)?;
            let end = r.end.resolve(&tz).map_err(&err)?;
            if end <= start {
                return Err(err("the session ends before it starts".into()));
            }
            let clash: Option<i64> = tx
                .query_row(
                    "SELECT id FROM sessions WHERE site = ?1 AND room = ?2 AND start < ?4 AND end > ?3",
                    params![r.site, r.room, start, end],
                    |x| x.get(0),
                )
                .optional()?;
            if clash.is_some() {
                return Err(err(format!(
                    "room {:?} already has a session at that time",
                    r.room
                )));
            }
            tx.execute(
                "INSERT INTO sessions (site, room, master, version, start, end) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.site, r.room, r.master, r.version, start, end],
            )?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Every master version: name, version, image size, stored bytes of its distinct chunks.
    pub fn masters(&self) -> Result<Vec<(String, String, u64, u64)>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, version, size, stored_bytes FROM masters ORDER BY name, version",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every master version with its signed manifest bytes.
    /// Replaces a master's signed manifest by the same one signed with another key (a key
    /// rotation).
    pub fn replace_manifest(
        &mut self,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<(), DbError> {
        let changed = self.conn.execute(
            "UPDATE masters SET manifest = ?3 WHERE name = ?1 AND version = ?2",
            params![name, version, bytes],
        )?;
        if changed == 0 {
            return Err(DbError::NoMaster {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        Ok(())
    }

    pub fn manifests(&self) -> Result<Vec<(image_tools::wire::MasterRef, Vec<u8>)>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, version, manifest FROM masters ORDER BY name, version")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                image_tools::wire::MasterRef {
                    name: r.get(0)?,
                    version: r.get(1)?,
                },
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The plan for every site from `now` on. `holds` lists, per site, the master versions its relay
    /// reported complete (sites not in it hold nothing).
    pub fn plan(
        &self,
        now: i64,
        settings: &crate::plan::Settings,
        holds: &std::collections::HashMap<String, Vec<crate::plan::MasterKey>>,
    ) -> Result<Vec<(String, Vec<crate::plan::Row>)>, DbError> {
        self.plan_with(now, settings, holds, &self.classes()?)
    }

    /// The chunk classes of every master version (see `plan::Classes`). Costs a pass over every
    /// manifest: the controller keeps the result until the set of masters changes (`ClassCache`).
    pub fn classes(&self) -> Result<crate::plan::Classes, DbError> {
        // Manifests were verified when imported; here they only give chunk lists and sizes.
        let mut stmt = self
            .conn
            .prepare("SELECT name, version, manifest FROM masters")?;
        let manifests = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|(name, version, bytes)| {
                image_tools::Manifest::decode_unverified(&bytes)
                    .map(|u| u.manifest)
                    .map_err(|e| {
                        DbError::Invalid(format!(
                            "stored manifest of {name} {version} is damaged: {e}"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::plan::Classes::from_manifests(
            &manifests.iter().collect::<Vec<_>>(),
        ))
    }

    /// `plan` with the classes given.
    pub fn plan_with(
        &self,
        now: i64,
        settings: &crate::plan::Settings,
        holds: &std::collections::HashMap<String, Vec<crate::plan::MasterKey>>,
        classes: &crate::plan::Classes,
    ) -> Result<Vec<(String, Vec<crate::plan::Row>)>, DbError> {
        use crate::plan::{plan_site, Session, Site};
        let mut by_site: std::collections::HashMap<String, Vec<Session>> = Default::default();
        for s in self.sessions(None)?.into_iter().filter(|s| s.start >= now) {
            by_site.entry(s.site.clone()).or_default().push(Session {
                id: s.id.to_string(),
                room: s.room,
                master: (s.master, s.version),
                start: s.start,
            });
        }
        let mut out = Vec::new();
        for row in self.sites()? {
            let site = Site {
                schedule: parse_schedule(&row.tz, &row.windows)?,
                cap_bps: row.cap_mbit * 1_000_000,
                holds: holds.get(&row.name).cloned().unwrap_or_default(),
                name: row.name,
            };
            let sessions = by_site.remove(&site.name).unwrap_or_default();
            let rows = plan_site(now, &site, &sessions, classes, settings);
            out.push((site.name, rows));
        }
        Ok(out)
    }

    fn exists(&self, sql: &str, p: impl rusqlite::Params) -> Result<bool, DbError> {
        Ok(self
            .conn
            .query_row(sql, p, |_| Ok(()))
            .optional()?
            .is_some())
    }
}

/// What a bind changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bound {
    /// The node that held the seat before, now a spare.
    pub replaced: Option<String>,
    /// The seat (room, seat) the node held before, now empty.
    pub moved_from: Option<(String, String)>,
}

fn policy(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Policy> {
    r.get::<_, String>(i)?.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn write_report(
    tx: &rusqlite::Transaction<'_>,
    site: &str,
    node: &str,
    role: &str,
    holding: &[(String, String)],
    fields: &[(String, String)],
    now: i64,
) -> Result<(), DbError> {
    let status = serde_json::Value::Object(
        fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
    .to_string();
    tx.execute(
        "INSERT INTO nodes (site, node, role, enrolled_at, last_seen, status)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)
         ON CONFLICT(site, node) DO UPDATE SET last_seen = ?4, status = ?5",
        params![site, node, role, now, status],
    )?;
    tx.execute(
        "DELETE FROM holdings WHERE site = ?1 AND node = ?2",
        params![site, node],
    )?;
    for (master, version) in holding {
        tx.execute(
            "INSERT OR IGNORE INTO holdings (site, node, master, version) VALUES (?1, ?2, ?3, ?4)",
            params![site, node, master, version],
        )?;
    }
    Ok(())
}

/// Binds `node` to the seat inside the caller's transaction: whoever held the seat, and whatever
/// seat `node` held, are unbound first. Returns the node it replaced.
fn bind(
    conn: &Connection,
    site: &str,
    room: &str,
    seat: &str,
    node: &str,
) -> Result<Option<String>, DbError> {
    let exists = conn
        .query_row(
            "SELECT 1 FROM seats WHERE site = ?1 AND room = ?2 AND name = ?3",
            params![site, room, seat],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Err(DbError::NoSeat {
            site: site.to_owned(),
            room: room.to_owned(),
            seat: seat.to_owned(),
        });
    }
    let replaced: Option<String> = conn
        .query_row(
            "SELECT node FROM nodes WHERE site = ?1 AND room = ?2 AND seat = ?3 AND node != ?4",
            params![site, room, seat, node],
            |r| r.get(0),
        )
        .optional()?;
    conn.execute(
        "UPDATE nodes SET room = NULL, seat = NULL
         WHERE site = ?1 AND ((room = ?2 AND seat = ?3) OR node = ?4)",
        params![site, room, seat, node],
    )?;
    conn.execute(
        "UPDATE nodes SET room = ?2, seat = ?3 WHERE site = ?1 AND node = ?4",
        params![site, room, seat, node],
    )?;
    Ok(replaced)
}

fn seat_states(conn: &Connection, only: Option<&str>) -> Result<Vec<takeover::Site>, DbError> {
    let mut sites: Vec<takeover::Site> = Vec::new();
    let mut stmt = conn
        .prepare("SELECT name, takeover FROM sites WHERE ?1 IS NULL OR name = ?1 ORDER BY name")?;
    for row in stmt.query_map(params![only], |r| Ok((r.get(0)?, policy(r, 1)?)))? {
        let (name, policy) = row?;
        sites.push(takeover::Site {
            name,
            policy,
            seats: Vec::new(),
            spares: Vec::new(),
        });
    }
    let index = |sites: &[takeover::Site], name: &str| sites.iter().position(|s| s.name == name);
    let mut stmt = conn.prepare(
        "SELECT s.site, s.room, s.name, n.node, COALESCE(n.last_seen, n.enrolled_at)
         FROM seats s LEFT JOIN nodes n ON n.site = s.site AND n.room = s.room AND n.seat = s.name
         WHERE ?1 IS NULL OR s.site = ?1 ORDER BY s.site, s.room, s.name",
    )?;
    let rows = stmt.query_map(params![only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            takeover::Seat {
                room: r.get(1)?,
                seat: r.get(2)?,
                node: r.get(3)?,
                last_seen: r.get(4)?,
            },
        ))
    })?;
    for row in rows {
        let (site, seat) = row?;
        if let Some(i) = index(&sites, &site) {
            sites[i].seats.push(seat);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT site, node, COALESCE(last_seen, enrolled_at) FROM nodes
         WHERE role = 'agent' AND seat IS NULL AND (?1 IS NULL OR site = ?1) ORDER BY site, node",
    )?;
    let rows = stmt.query_map(params![only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            takeover::Spare {
                node: r.get(1)?,
                last_seen: r.get(2)?,
            },
        ))
    })?;
    for row in rows {
        let (site, spare) = row?;
        if let Some(i) = index(&sites, &site) {
            sites[i].spares.push(spare);
        }
    }
    Ok(sites)
}

/// A site's WAN cap is at most this (1 Tbit/s): a larger number is a typing error, and would not
/// fit the database's integer.
pub const MAX_CAP_MBIT: u64 = 1_000_000;

fn calendar_error(file_name: &str, e: crate::calendar::Error) -> DbError {
    DbError::Calendar {
        file: file_name.to_owned(),
        line: e.line,
        what: e.what,
    }
}

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
fn check_room_seat(room: &str, seat: Option<&str>) -> Result<(), DbError> {
    image_tools::RoomName::new(room).map_err(|e| DbError::Invalid(e.to_string()))?;
    if let Some(seat) = seat {
        image_tools::SeatName::new(seat).map_err(|e| DbError::Invalid(e.to_string()))?;
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM` in time zone `tz`, as Unix seconds.
#[cfg(test)]
fn local_time(tz: &str, text: &str) -> Result<i64, String> {
    let dt: jiff::civil::DateTime = text
        .replace(' ', "T")
        .parse()
        .map_err(|_| format!("{text:?} is not a date and time (YYYY-MM-DD HH:MM)"))?;
    let zone = jiff::tz::TimeZone::get(tz).map_err(|_| format!("unknown time zone {tz:?}"))?;
    zone.to_timestamp(dt)
        .map(|t| t.as_second())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, version: &str) -> (image_tools::Manifest, Vec<u8>) {
        use image_tools::manifest::{ChunkRef, Entry};
        let m = image_tools::Manifest {
            name: name.parse().unwrap(),
            version: version.parse().unwrap(),
            size: 100,
            params: image_tools::ChunkParams::DEFAULT,
            entries: vec![Entry::Chunk(ChunkRef {
                id: image_tools::ChunkId::of(name.as_bytes()),
                len: 100,
                stored_len: 50,
            })],
        };
        let signed = m.clone().sign(&image_tools::SigningKey::from_seed([1; 32]));
        (m, signed.bytes().to_vec())
    }

    fn sample(dir: &Path) -> Db {
        let db = Db::open(&dir.join("catalogue.db")).unwrap();
        db.add_site("lyon", "Europe/Paris", "22:00-06:00", 20, None)
            .unwrap();
        db.add_room("lyon", "salle-1").unwrap();
        let (m, b) = manifest("win10", "1");
        db.add_master(&m, &b, 0).unwrap();
        db
    }

    const GOOD: &str = "site,room,master,version,start,end
lyon,salle-1,win10,1,2026-12-01 08:30,2026-12-01 17:00
# a comment
lyon,salle-1,win10,1,2026-12-02 08:30,2026-12-02 17:00
";

    #[test]
    fn imports_and_schedules_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sample(dir.path());
        assert_eq!(db.import_csv("term.csv", GOOD).unwrap(), 2);
        drop(db);
        let db = Db::open(&dir.path().join("catalogue.db")).unwrap();
        let sessions = db.sessions(Some("lyon")).unwrap();
        assert_eq!(sessions.len(), 2);
        // 08:30 in Paris in December is 07:30 UTC.
        let expect = jiff::Timestamp::from_second(sessions[0].start)
            .unwrap()
            .to_string();
        assert_eq!(expect, "2026-12-01T07:30:00Z");
        assert_eq!(db.sites().unwrap()[0].windows, "22:00-06:00");
    }

    #[test]
    fn a_bad_row_imports_nothing_and_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sample(dir.path());
        for (bad, line, what) in [
            (
                "lyon,salle-1,win10,1,2026-12-03 08:30,2026-12-03 07:00",
                5,
                "ends before",
            ),
            (
                "lyon,salle-9,win10,1,2026-12-03 08:30,2026-12-03 17:00",
                5,
                "unknown room",
            ),
            (
                "lyon,salle-1,win11,1,2026-12-03 08:30,2026-12-03 17:00",
                5,
                "unknown master",
            ),
            (
                "paris,salle-1,win10,1,2026-12-03 08:30,2026-12-03 17:00",
                5,
                "unknown site",
            ),
            (
                "lyon,salle-1,win10,1,3 dec 8h30,2026-12-03 17:00",
                5,
                "not a date",
            ),
            ("lyon,salle-1,win10", 5, "expected 6 fields"),
            (
                "lyon,salle-1,win10,1,2026-12-01 09:00,2026-12-01 10:00",
                5,
                "already has a session",
            ),
        ] {
            let text = format!("{GOOD}{bad}\n");
            let e = db.import_csv("term.csv", &text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("term.csv:{line}:")) && e.contains(what),
                "{bad}: {e}"
            );
            assert_eq!(
                db.sessions(None).unwrap().len(),
                0,
                "half-imported after {bad}"
            );
        }
        let e = db
            .import_csv("x.csv", "room,master\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.csv:1: the header must be"), "{e}");
    }

    const ICS: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
BEGIN:VEVENT\r
SUMMARY:Comptabilit\u{e9} niveau 1\r
X-NIGHTCAST-MASTER:win10 1\r
LOCATION:lyon/salle-1\r
DTSTART;TZID=Europe/Paris:20261201T083000\r
DTEND;TZID=Europe/Paris:20261201T170000\r
END:VEVENT\r
BEGIN:VEVENT\r
SUMMARY:win10 1\r
LOCATION:lyon/sa\r
 lle-1\r
DTSTART:20261202T073000Z\r
DTEND:20261202T160000Z\r
END:VEVENT\r
BEGIN:VEVENT\r
SUMMARY:win10 1\r
LOCATION:lyon/salle-1\r
DTSTART:20261203T083000\r
DTEND:20261203T170000\r
END:VEVENT\r
END:VCALENDAR\r
";

    #[test]
    fn an_ics_calendar_imports_with_zones_utc_floating_times_and_folded_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sample(dir.path());
        assert_eq!(db.import_ics("term.ics", ICS).unwrap(), 3);
        let s = db.sessions(None).unwrap();
        let utc = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
        // All three start at 08:30 in Paris (07:30 UTC in December).
        assert_eq!(utc(s[0].start), "2026-12-01T07:30:00Z");
        assert_eq!(utc(s[1].start), "2026-12-02T07:30:00Z");
        assert_eq!(utc(s[2].start), "2026-12-03T07:30:00Z");
        assert!(s.iter().all(|x| x.room == "salle-1" && x.master == "win10"));
    }

    /// Regression: a weekly course used to import as its first session only (the RRULE was
    /// ignored without a word).
    #[test]
    fn a_weekly_ics_course_imports_every_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sample(dir.path());
        let ics = "BEGIN:VCALENDAR\r
BEGIN:VEVENT\r
SUMMARY:win10 1\r
LOCATION:lyon/salle-1\r
DTSTART;TZID=Europe/Paris:20261019T083000\r
DTEND;TZID=Europe/Paris:20261019T170000\r
RRULE:FREQ=WEEKLY;COUNT=4\r
END:VEVENT\r
END:VCALENDAR\r
";
        assert_eq!(db.import_ics("term.ics", ics).unwrap(), 4);
        let utc: Vec<String> = db
            .sessions(None)
            .unwrap()
            .iter()
            .map(|s| jiff::Timestamp::from_second(s.start).unwrap().to_string())
            .collect();
        // 08:30 in Paris every Monday, across the end of summer time (25 October 2026).
        assert_eq!(
            utc,
            [
                "2026-10-19T06:30:00Z",
                "2026-10-26T07:30:00Z",
                "2026-11-02T07:30:00Z",
                "2026-11-09T07:30:00Z"
            ]
        );
    }

    #[test]
    fn a_bad_ics_event_imports_nothing_and_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sample(dir.path());
        for (from, to, line, what) in [
            (
                "LOCATION:lyon/salle-1\r\nDTSTART:20261203",
                "LOCATION:salle-1\r\nDTSTART:20261203",
                19,
                "SITE/ROOM",
            ),
            (
                "DTSTART:20261203T083000",
                "DTSTART:3 dec",
                20,
                "not a date-time",
            ),
            (
                "SUMMARY:win10 1\r\nLOCATION:lyon/salle-1\r\nDTSTART:20261203",
                "SUMMARY:Excel niveau 2\r\nLOCATION:lyon/salle-1\r\nDTSTART:20261203",
                18,
                "NAME VERSION",
            ),
            (
                "DTSTART:20261203T083000\r\nDTEND:20261203T170000",
                "DTSTART:20261203T083000",
                17,
                "no DTEND",
            ),
            (
                "TZID=Europe/Paris:20261201T083000",
                "TZID=Europe/Lyon:20261201T083000",
                3,
                "unknown time zone",
            ),
        ] {
            assert!(ICS.contains(from), "{from}");
            let text = ICS.replacen(from, to, 1);
            let e = db.import_ics("term.ics", &text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("term.ics:{line}:")) && e.contains(what),
                "{to}: {e}"
            );
            assert!(db.sessions(None).unwrap().is_empty());
        }
    }

    #[test]
    fn a_master_in_use_cannot_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sample(dir.path());
        db.import_csv("term.csv", GOOD).unwrap();
        let now = local_time("Europe/Paris", "2026-11-23 12:00").unwrap();
        let e = db.remove_master("win10", "1", now).unwrap_err().to_string();
        assert!(
            e.contains("needed by 2 upcoming session(s)") && e.contains("lyon/salle-1"),
            "{e}"
        );
        // Once the term is over it can go, with its past sessions.
        let later = local_time("Europe/Paris", "2027-01-01 00:00").unwrap();
        db.remove_master("win10", "1", later).unwrap();
        assert!(db.sessions(None).unwrap().is_empty());
        assert!(matches!(
            db.remove_master("win10", "1", later),
            Err(DbError::NoMaster { .. })
        ));
    }

    /// A manifest of `n` chunks of 256 KiB (stored as is), the first `shared` of them common to
    /// every master made with the same `shared`.
    fn big_manifest(name: &str, n: u32, shared: u32) -> (image_tools::Manifest, Vec<u8>) {
        use image_tools::manifest::{ChunkRef, Entry};
        let entries: Vec<Entry> = (0..n)
            .map(|i| {
                let seed = if i < shared {
                    format!("common-{i}")
                } else {
                    format!("{name}-{i}")
                };
                Entry::Chunk(ChunkRef {
                    id: image_tools::ChunkId::of(seed.as_bytes()),
                    len: 256 << 10,
                    stored_len: 256 << 10,
                })
            })
            .collect();
        let m = image_tools::Manifest {
            name: name.parse().unwrap(),
            version: "1".parse().unwrap(),
            size: u64::from(n) * (256 << 10),
            params: image_tools::ChunkParams::DEFAULT,
            entries,
        };
        let signed = m.clone().sign(&image_tools::SigningKey::from_seed([1; 32]));
        (m, signed.bytes().to_vec())
    }

    #[test]
    fn the_plan_from_the_database_counts_shared_chunks_once_and_finds_the_late_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("catalogue.db")).unwrap();
        // 1 Mbit/s: an 8-hour night moves 3.6 GB.
        db.add_site("lyon", "Europe/Paris", "22:00-06:00", 1, None)
            .unwrap();
        db.add_room("lyon", "salle-1").unwrap();
        // a and b: 10,000 chunks each, 8,000 shared (80 %).
        for name in ["a", "b"] {
            let (m, bytes) = big_manifest(name, 10_000, 8_000);
            db.add_master(&m, &bytes, 0).unwrap();
        }
        db.import_csv(
            "t.csv",
            "site,room,master,version,start,end
lyon,salle-1,a,1,2026-12-01 08:30,2026-12-01 17:00
lyon,salle-1,b,1,2026-12-02 08:30,2026-12-02 17:00
lyon,salle-1,a,1,2026-11-24 08:30,2026-11-24 17:00
",
        )
        .unwrap();
        let now = local_time("Europe/Paris", "2026-11-23 12:00").unwrap();
        let plan = db
            .plan(now, &crate::plan::Settings::default(), &Default::default())
            .unwrap();
        let rows = &plan[0].1;
        let chunk = 256u64 << 10;
        // Tomorrow's session needs all of a (2.62 GB): one night (3.6 GB) is enough.
        assert_eq!(rows[0].new_bytes, 10_000 * chunk);
        assert!(
            matches!(rows[0].verdict, crate::plan::Verdict::OnTime { .. }),
            "{:?}",
            rows[0].verdict
        );
        // a again: nothing new. b: only its own 20 %.
        assert_eq!(rows[1].new_bytes, 0);
        assert_eq!(rows[2].new_bytes, 2_000 * chunk);

        // With a site that already holds nothing and a master larger than the one night left:
        let (m, bytes) = big_manifest("big", 20_000, 0); // 5.24 GB
        db.add_master(&m, &bytes, 0).unwrap();
        db.import_csv("u.csv", "site,room,master,version,start,end\nlyon,salle-1,big,1,2026-11-24 18:00,2026-11-24 19:00\n")
            .unwrap();
        let plan = db
            .plan(now, &crate::plan::Settings::default(), &Default::default())
            .unwrap();
        let big = plan[0]
            .1
            .iter()
            .find(|r| r.session.master.0 == "big")
            .unwrap();
        // Deadline 16:00 on the 24th: one night, 22:00-06:00 = 8 h x 125,000 B/s = 3.6 GB, already
        // shared with a (needed first, 2.62 GB).
        let capacity = 8 * 3600 * 125_000u64;
        assert_eq!(big.cumulative, 10_000 * chunk + 20_000 * chunk);
        assert_eq!(
            big.verdict,
            crate::plan::Verdict::Late {
                shortfall: big.cumulative - capacity,
                override_secs: (big.cumulative - capacity).div_ceil(125_000) as i64,
            }
        );
    }

    /// lyon with salle-1 (pc-1, pc-2) and agents nuc-a, nuc-b, nuc-s reported at `now`.
    fn seated(dir: &Path, now: i64) -> Db {
        let mut db = sample(dir);
        for seat in ["pc-1", "pc-2"] {
            db.add_seat("lyon", "salle-1", seat).unwrap();
        }
        for node in ["nuc-a", "nuc-b", "nuc-s"] {
            enrol_agent(&db, node, now);
            assert!(db.record_agent_report("lyon", node, &[], &[], now).unwrap());
        }
        db
    }

    /// `node` enrolled as an agent of lyon (what the enrolment rules would have recorded).
    fn enrol_agent(db: &Db, node: &str, now: i64) {
        db.conn
            .execute(
                "INSERT INTO nodes (site, node, role, enrolled_at) VALUES ('lyon', ?1, 'agent', ?2)",
                params![node, now],
            )
            .unwrap();
    }

    #[test]
    fn a_relay_cannot_make_up_nucs_that_never_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sample(dir.path());
        assert!(!db
            .record_agent_report("lyon", "nuc-ghost", &[], &[], 100)
            .unwrap());
        assert!(db.fleet(100, 1800).unwrap().is_empty());
    }

    fn bindings(db: &Db) -> Vec<(String, String, String)> {
        db.seat_bindings()
            .unwrap()
            .remove("lyon")
            .unwrap_or_default()
            .into_iter()
            .map(|b| (b.room, b.seat, b.node))
            .collect()
    }

    fn b(room: &str, seat: &str, node: &str) -> (String, String, String) {
        (room.into(), seat.into(), node.into())
    }

    #[test]
    fn a_node_binds_only_to_an_existing_seat_and_only_if_it_is_a_known_agent() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = seated(dir.path(), 100);
        assert!(matches!(
            db.bind_seat("lyon", "salle-1", "pc-9", "nuc-a", false),
            Err(DbError::NoSeat { .. })
        ));
        assert!(matches!(
            db.bind_seat("lyon", "salle-1", "pc-1", "nuc-unknown", false),
            Err(DbError::NoAgent { .. })
        ));
        db.record_report("lyon", "relay-1", "relay", &[], &[], 100)
            .unwrap();
        assert!(matches!(
            db.bind_seat("lyon", "salle-1", "pc-1", "relay-1", false),
            Err(DbError::NoAgent { .. })
        ));
        // The schema refuses it too, whoever writes.
        let e = db
            .conn
            .execute(
                "UPDATE nodes SET room = 'salle-1', seat = 'pc-9' WHERE node = 'nuc-a'",
                [],
            )
            .unwrap_err();
        assert!(e.to_string().contains("no such seat"), "{e}");
        assert!(bindings(&db).is_empty());
    }

    #[test]
    fn a_seat_holds_one_node_and_rebinding_moves_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = seated(dir.path(), 100);
        let bound = db
            .bind_seat("lyon", "salle-1", "pc-1", "nuc-a", false)
            .unwrap();
        assert_eq!(bound, Bound::default());
        // Again: nothing changes.
        db.bind_seat("lyon", "salle-1", "pc-1", "nuc-a", false)
            .unwrap();
        // Another node on the same seat replaces it.
        let bound = db
            .bind_seat("lyon", "salle-1", "pc-1", "nuc-b", false)
            .unwrap();
        assert_eq!(bound.replaced.as_deref(), Some("nuc-a"));
        assert_eq!(bindings(&db), vec![b("salle-1", "pc-1", "nuc-b")]);
        // A bound node bound elsewhere moves: its old seat is empty.
        let bound = db
            .bind_seat("lyon", "salle-1", "pc-2", "nuc-b", false)
            .unwrap();
        assert_eq!(
            bound.moved_from,
            Some(("salle-1".to_owned(), "pc-1".to_owned()))
        );
        assert_eq!(bindings(&db), vec![b("salle-1", "pc-2", "nuc-b")]);
        // The schema keeps one node per seat whoever writes.
        let e = db
            .conn
            .execute(
                "UPDATE nodes SET room = 'salle-1', seat = 'pc-2' WHERE node = 'nuc-a'",
                [],
            )
            .unwrap_err();
        assert!(e.to_string().contains("UNIQUE"), "{e}");
        // Only a spare may replace a seat's node.
        assert!(matches!(
            db.bind_seat("lyon", "salle-1", "pc-1", "nuc-b", true),
            Err(DbError::NotSpare { .. })
        ));
        let bound = db
            .bind_seat("lyon", "salle-1", "pc-2", "nuc-s", true)
            .unwrap();
        assert_eq!(bound.replaced.as_deref(), Some("nuc-b"));
        let fleet = db.fleet(100, 1800).unwrap();
        let seat = |n: &str| fleet.iter().find(|r| r.node == n).unwrap().seat.clone();
        assert_eq!(seat("nuc-s").as_deref(), Some("salle-1/pc-2"));
        assert_eq!(seat("nuc-b"), None);
    }

    #[test]
    fn take_over_binds_the_spare_to_the_one_silent_seat_in_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = seated(dir.path(), 100);
        db.bind_seat("lyon", "salle-1", "pc-1", "nuc-a", false)
            .unwrap();
        db.bind_seat("lyon", "salle-1", "pc-2", "nuc-b", false)
            .unwrap();
        assert!(db.take_over(200, 1800, None).unwrap().is_empty());
        // An hour later only nuc-a and the spare have reported.
        let later = 100 + 3600;
        db.record_agent_report("lyon", "nuc-a", &[], &[], later)
            .unwrap();
        db.record_agent_report("lyon", "nuc-s", &[], &[], later)
            .unwrap();
        let decisions = db.take_over(later, 1800, Some("lyon")).unwrap();
        assert_eq!(
            decisions,
            vec![(
                "lyon".to_owned(),
                Decision::Bind {
                    spare: "nuc-s".into(),
                    room: "salle-1".into(),
                    seat: "pc-2".into(),
                    replaced: Some("nuc-b".into()),
                }
            )]
        );
        assert_eq!(
            bindings(&db),
            vec![b("salle-1", "pc-1", "nuc-a"), b("salle-1", "pc-2", "nuc-s")]
        );
        // Done: nothing more to decide.
        assert!(db.take_over(later, 1800, None).unwrap().is_empty());
    }

    #[test]
    fn a_confirm_site_keeps_its_policy_and_fleet_shows_why_the_spare_waits() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = seated(dir.path(), 100);
        db.add_site(
            "lyon",
            "Europe/Paris",
            "22:00-06:00",
            20,
            Some(Policy::Confirm),
        )
        .unwrap();
        // Changing the site without a policy keeps it.
        db.add_site("lyon", "Europe/Paris", "21:00-06:00", 20, None)
            .unwrap();
        assert_eq!(db.sites().unwrap()[0].takeover, Policy::Confirm);
        db.bind_seat("lyon", "salle-1", "pc-1", "nuc-a", false)
            .unwrap();
        db.bind_seat("lyon", "salle-1", "pc-2", "nuc-b", false)
            .unwrap();
        let later = 100 + 3600;
        for node in ["nuc-a", "nuc-s"] {
            db.record_agent_report("lyon", node, &[], &[], later)
                .unwrap();
        }
        let decisions = db.take_over(later, 1800, None).unwrap();
        assert!(matches!(&decisions[..], [(_, Decision::Wait { .. })]));
        assert_eq!(bindings(&db).len(), 2, "a confirm site binds nothing");
        let fleet = db.fleet(later, 1800).unwrap();
        let s = fleet.iter().find(|r| r.node == "nuc-s").unwrap();
        assert!(
            s.attention()
                .contains("policy confirm: can replace salle-1/pc-2"),
            "{}",
            s.attention()
        );
    }

    #[test]
    fn a_relay_cannot_report_as_another_relay_of_its_site() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sample(dir.path());
        db.record_report("lyon", "relay-2", "relay", &[], &[], 100)
            .unwrap();
        assert!(!db
            .record_agent_report("lyon", "relay-2", &[], &[], 200)
            .unwrap());
        let fleet = db.fleet(200, 1800).unwrap();
        assert_eq!(fleet[0].last_seen, Some(100));
        assert_eq!(fleet[0].role, "relay");
    }

    #[test]
    fn bad_sites_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db")).unwrap();
        assert!(db
            .add_site("lyon", "Europe/Lyon", "22:00-06:00", 20, None)
            .unwrap_err()
            .to_string()
            .contains("time zone"));
        assert!(db
            .add_site("lyon", "Europe/Paris", "22h-6h", 20, None)
            .unwrap_err()
            .to_string()
            .contains("HH:MM"));
        assert!(db
            .add_site("../x", "Europe/Paris", "22:00-06:00", 20, None)
            .is_err());
        assert!(matches!(
            db.add_room("nowhere", "r"),
            Err(DbError::NoSite(_))
        ));
    }

    mod calendar_input {
        use super::*;
        use image_tools::mutation::{mutate_text, Edit};
        use proptest::prelude::*;

        /// Feeds 256 calendars to one catalogue: each either imports (and the sessions grow by
        /// what it says) or is refused with an error naming a line of the file, and then nothing
        /// was written. Never a panic.
        fn imports_or_names_a_line(
            text: impl Strategy<Value = String>,
            import: fn(&mut Db, &str, &str) -> Result<usize, DbError>,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let db = std::cell::RefCell::new(sample(dir.path()));
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
            let outcome = runner.run(&text, |text| {
                let mut db = db.borrow_mut();
                let before = db.sessions(None).unwrap().len();
                match import(&mut db, "cal", &text) {
                    Ok(n) => prop_assert_eq!(db.sessions(None).unwrap().len(), before + n),
                    Err(DbError::Calendar { file, line, .. }) => {
                        prop_assert_eq!(file, "cal");
                        prop_assert!(
                            line >= 1 && line <= text.lines().count().max(1),
                            "line {line}"
                        );
                        prop_assert_eq!(db.sessions(None).unwrap().len(), before);
                    }
                    Err(e) => prop_assert!(false, "not a calendar error: {e}"),
                }
                Ok(())
            });
            if let Err(e) = outcome {
                panic!("{e}");
            }
        }

        fn edits() -> impl Strategy<Value = Vec<Edit>> {
            proptest::collection::vec(any::<(u8, usize, usize)>().prop_map(Into::into), 1..6)
        }

        fn random() -> impl Strategy<Value = String> {
            prop_oneof![
                "\\PC{0,300}",
                proptest::collection::vec(any::<u8>(), 0..300)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ]
        }

        #[test]
        fn random_csv_imports_or_names_a_line() {
            imports_or_names_a_line(random(), Db::import_csv);
        }

        #[test]
        fn mutated_csv_imports_or_names_a_line() {
            imports_or_names_a_line(edits().prop_map(|e| mutate_text(GOOD, &e)), Db::import_csv);
        }

        #[test]
        fn random_ics_imports_or_names_a_line() {
            let with_event = random().prop_map(|t| format!("BEGIN:VEVENT\r\n{t}"));
            imports_or_names_a_line(prop_oneof![random(), with_event], Db::import_ics);
        }

        #[test]
        fn mutated_ics_imports_or_names_a_line() {
            imports_or_names_a_line(edits().prop_map(|e| mutate_text(ICS, &e)), Db::import_ics);
        }
    }
}
