//! Sessions: the calendar files of `crate::calendar` checked against the catalogue (site, room,
//! master, times in the site's time zone, no clash in a room) and inserted all or nothing; an
//! iCalendar file synchronised with what the catalogue holds from it (`sync_ics`).

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::{Db, DbError};
use crate::calendar::mapping::{self, Unmatched};
use crate::calendar::sync::{self, Changes, Incoming, Key, Session, Stored};
use crate::calendar::{Note, Row};

/// The furthest a rule that repeats for ever is expanded (two years: a daily rule stays under
/// `recur::MAX_OCCURRENCES`).
pub const MAX_HORIZON_DAYS: u32 = 731;

/// What [`Db::sync_ics`] does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Change nothing: show what would change, and the events no rule reads.
    DryRun,
    /// Apply, or change nothing if an event is read by no rule (`DbError::Unmatched`).
    Whole,
    /// Apply what is read, and list the events no rule reads.
    Partial,
}

/// What [`Db::sync_ics`] found, and did unless it was a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub changes: Changes,
    /// The ids the added sessions got, in the order of `changes.added` (none on a dry run).
    pub added_ids: Vec<i64>,
    /// What the file holds and was not imported (all-day events...), with its line.
    pub notes: Vec<Note>,
    /// Cancelled events and occurrences, skipped.
    pub cancelled: usize,
    /// Whether the changes were written (false: a dry run).
    pub applied: bool,
    /// Events that nightcast's own forms and the mapping rules could not read, by line: not
    /// imported, their sessions in the catalogue left as they were.
    pub unmatched: Vec<Unmatched>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: i64,
    pub site: String,
    pub room: String,
    pub master: image_tools::MasterName,
    pub version: image_tools::MasterVersion,
    pub start: i64,
    pub end: i64,
    /// The iCalendar calendar it came from, and whether a feed keeps that calendar.
    pub source: Option<(String, bool)>,
    /// Else: `hand`, or `csv:FILE` (`None`: added before nightcast recorded it).
    pub origin: Option<String>,
}

impl Db {
    pub fn sessions(&self, site: Option<&str>) -> Result<Vec<SessionRow>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, site, room, master, version, start, end, source,
                EXISTS (SELECT 1 FROM calendar_feeds f WHERE f.source = sessions.source), origin
             FROM sessions
             WHERE ?1 IS NULL OR site = ?1 ORDER BY site, start, room",
        )?;
        let rows = stmt.query_map(params![site], |r| {
            let source: Option<String> = r.get(7)?;
            let feed: bool = r.get(8)?;
            Ok(SessionRow {
                id: r.get(0)?,
                site: r.get(1)?,
                room: r.get(2)?,
                master: r.get(3)?,
                version: r.get(4)?,
                start: r.get(5)?,
                end: r.get(6)?,
                source: source.map(|s| (s, feed)),
                origin: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Imports a calendar in CSV (see `calendar::csv`). Every row is checked first; one bad row
    /// imports nothing and the error names its line.
    pub fn import_csv(&mut self, file_name: &str, text: &str) -> Result<usize, DbError> {
        let rows = crate::calendar::csv::parse(text).map_err(|e| calendar_error(file_name, e))?;
        self.insert_sessions(file_name, rows, &format!("csv:{file_name}"), i64::MIN)
    }

    /// Imports a calendar in iCalendar as the calendar `file_name`, nothing skipped as past (see
    /// [`Db::sync_ics`]): the number of sessions added or moved.
    pub fn import_ics(&mut self, file_name: &str, text: &str) -> Result<usize, DbError> {
        let s = self.sync_ics(
            file_name,
            file_name,
            text.as_bytes(),
            i64::MIN,
            None,
            Apply::Whole,
        )?;
        Ok(s.changes.added.len() + s.changes.moved.len())
    }

    /// Makes the sessions of calendar `source` what the iCalendar file `bytes` says (see
    /// `calendar::ics` and `calendar::sync`): sessions added, moved and removed in one
    /// transaction, committed unless a dry run (`Apply`: the same checks, nothing written).
    /// Each event is read through the mapping rules (`calendar::mapping`); one that no rule
    /// reads refuses the import ([`DbError::Unmatched`], every such event listed), unless
    /// `Apply::Partial` or a dry run: then it is listed, and its sessions already in the
    /// catalogue are neither moved nor removed. Sessions over at `now` are skipped, and the past is never removed. A rule that
    /// repeats for ever gives its sessions up to `horizon_days` after `now` (at most
    /// [`MAX_HORIZON_DAYS`]), and is refused without a horizon. Every
    /// session is checked as a calendar row is (site, room, master, times, no clash in a room);
    /// one bad session changes nothing and the error names its line in `file_name`.
    pub fn sync_ics(
        &mut self,
        source: &str,
        file_name: &str,
        bytes: &[u8],
        now: i64,
        horizon_days: Option<u32>,
        how: Apply,
    ) -> Result<Synced, DbError> {
        if source.trim().is_empty() || source.len() > 200 || source.chars().any(char::is_control) {
            return Err(DbError::Invalid(format!(
                "calendar source {source:?}: give a name of 1 to 200 characters, on one line"
            )));
        }
        let calendar = match horizon_days {
            None => crate::calendar::ics::parse(bytes),
            Some(days) => {
                if !(1..=MAX_HORIZON_DAYS).contains(&days) {
                    return Err(DbError::Invalid(format!(
                        "a horizon of {days} days: give 1 to {MAX_HORIZON_DAYS}"
                    )));
                }
                let horizon = jiff::Timestamp::from_second(now)
                    .and_then(|t| {
                        t.checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days)))
                    })
                    .map(|t| jiff::tz::TimeZone::UTC.to_datetime(t).date())
                    .map_err(|e| DbError::Invalid(format!("no horizon from {now}: {e}")))?;
                crate::calendar::ics::parse_until(bytes, horizon)
            }
        }
        .map_err(|e| calendar_error(file_name, e))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rules = super::rules::mapping_rules(&tx)?;
        let known = super::rules::known(&tx)?;
        let mut incoming = Vec::with_capacity(calendar.rows.len());
        let mut unmatched: Vec<Unmatched> = Vec::new();
        let mut past = 0;
        for mut row in calendar.rows {
            if let Err(why) = mapping::resolve(&mut row, &rules, &known) {
                if !unmatched.iter().any(|u| u.line == row.line) {
                    let texts = row.texts.clone().unwrap_or_default();
                    unmatched.push(Unmatched {
                        line: row.line,
                        uid: row
                            .event
                            .as_ref()
                            .map(|e| e.uid.clone())
                            .unwrap_or_default(),
                        title: texts.title,
                        location: texts.location.unwrap_or_default(),
                        why,
                    });
                }
                continue;
            }
            let r = &row;
            let err = |what: String| row_error(file_name, r, what);
            let tz = site_zone(&tx, file_name, r)?;
            let (start, end) = times(file_name, r, &tz)?;
            if end <= now {
                past += 1;
                continue;
            }
            check_row(&tx, file_name, r)?;
            let id = r
                .event
                .as_ref()
                .ok_or_else(|| err("an event without a UID".into()))?;
            let instance = id
                .instance
                .as_ref()
                .map(|i| i.resolve(&tz))
                .transpose()
                .map_err(&err)?;
            incoming.push(Incoming {
                line: r.line,
                key: Key {
                    uid: id.uid.clone(),
                    instance,
                },
                session: Session {
                    site: r.site.clone(),
                    room: r.room.clone(),
                    master: r.master.clone(),
                    version: r.version.clone(),
                    start,
                    end,
                },
            });
        }
        if how == Apply::Whole && !unmatched.is_empty() {
            return Err(DbError::Unmatched {
                file: file_name.to_owned(),
                events: unmatched,
            });
        }
        // The sessions of an event that could not be read stay as they are: out of the
        // comparison, unless the file gives them again through another of its events.
        let unread: HashSet<&str> = unmatched.iter().map(|u| u.uid.as_str()).collect();
        let given: HashSet<&Key> = incoming.iter().map(|n| &n.key).collect();
        let mut before = stored(&tx, source)?;
        before.retain(|s| !unread.contains(s.key.uid.as_str()) || given.contains(&s.key));
        let mut changes =
            sync::diff(before, incoming, now).map_err(|e| calendar_error(file_name, e))?;
        changes.past += past;
        let added_ids = write(&tx, file_name, source, &changes)?;
        let apply = how != Apply::DryRun;
        if apply {
            tx.commit()?;
        }
        Ok(Synced {
            changes,
            added_ids: if apply { added_ids } else { Vec::new() },
            notes: calendar.notes,
            cancelled: calendar.cancelled,
            applied: apply,
            unmatched,
        })
    }

    /// Adds one session; `start` and `end` are `YYYY-MM-DD HH:MM` in the site's time zone. Checked
    /// as a calendar row is, and refused if it is over at `now`.
    pub fn add_session(
        &mut self,
        site: &str,
        room: &str,
        master: (&str, &str),
        start: &str,
        end: &str,
        now: i64,
    ) -> Result<(), DbError> {
        let csv = format!(
            "{}\n{site},{room},{},{},{start},{end}\n",
            crate::calendar::csv::HEADER,
            master.0,
            master.1
        );
        if [site, room, master.0, master.1, start, end]
            .iter()
            .any(|f| f.contains(',') || f.contains('\n'))
        {
            return Err(DbError::Invalid(
                "fields may not contain commas or line breaks".into(),
            ));
        }
        let rows = crate::calendar::csv::parse(&csv).map_err(|e| calendar_error("session", e))?;
        self.insert_sessions("session", rows, "hand", now)
            .map(|_| ())
    }

    /// Moves session `id` to `start`..`end` (`YYYY-MM-DD HH:MM` in its site's time zone), checked
    /// as a calendar row is (times, no clash in its room), and refused if the new times are over
    /// at `now`. Nothing is changed on error.
    pub fn move_session(
        &mut self,
        id: i64,
        start: &str,
        end: &str,
        now: i64,
    ) -> Result<(), DbError> {
        if [start, end]
            .iter()
            .any(|f| f.contains(',') || f.contains('\n'))
        {
            return Err(DbError::Invalid(
                "times may not contain commas or line breaks".into(),
            ));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<(String, String, String, String)> = tx
            .query_row(
                "SELECT site, room, master, version FROM sessions WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((site, room, master, version)) = old else {
            return Err(no_session(id));
        };
        let csv = format!(
            "{}\n{site},{room},{master},{version},{start},{end}\n",
            crate::calendar::csv::HEADER
        );
        let file_name = format!("session {id}");
        let rows = crate::calendar::csv::parse(&csv).map_err(|e| calendar_error(&file_name, e))?;
        for r in &rows {
            let tz = site_zone(&tx, &file_name, r)?;
            let (start, end) = times(&file_name, r, &tz)?;
            not_over(&file_name, r, end, now)?;
            tx.execute(
                "UPDATE sessions SET start = ?2, end = ?3 WHERE id = ?1",
                params![id, start, end],
            )?;
            no_clash(&tx, &file_name, r.line, &r.room, id)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn remove_session(&self, id: i64) -> Result<(), DbError> {
        match self
            .conn
            .execute("DELETE FROM sessions WHERE id = ?1", params![id])?
        {
            0 => Err(no_session(id)),
            _ => Ok(()),
        }
    }

    /// Checks every row against the catalogue and inserts them in one transaction.
    /// `origin`: see [`SessionRow::origin`]; a session over at `now` is refused.
    fn insert_sessions(
        &mut self,
        file_name: &str,
        rows: Vec<Row>,
        origin: &str,
        now: i64,
    ) -> Result<usize, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = rows.len();
        for r in rows {
            check_row(&tx, file_name, &r)?;
            let tz = site_zone(&tx, file_name, &r)?;
            let (start, end) = times(file_name, &r, &tz)?;
            not_over(file_name, &r, end, now)?;
            tx.execute(
                "INSERT INTO sessions (site, room, master, version, start, end, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![r.site, r.room, r.master, r.version, start, end, origin],
            )?;
            no_clash(&tx, file_name, r.line, &r.room, tx.last_insert_rowid())?;
        }
        tx.commit()?;
        Ok(n)
    }
}

fn no_session(id: i64) -> DbError {
    DbError::Invalid(format!("no session {id}: see `nightcast session list`"))
}

/// A session ending at `end` is not over at `now`.
fn not_over(file_name: &str, r: &Row, end: i64, now: i64) -> Result<(), DbError> {
    match end <= now {
        true => Err(row_error(
            file_name,
            r,
            "that time is in the past: give a time to come".into(),
        )),
        false => Ok(()),
    }
}

fn row_error(file_name: &str, r: &Row, what: String) -> DbError {
    DbError::Calendar {
        file: file_name.to_owned(),
        line: r.line,
        what,
    }
}

/// The time zone of the row's site, or an error if there is no such site.
fn site_zone(tx: &Transaction<'_>, file_name: &str, r: &Row) -> Result<String, DbError> {
    let tz: Option<String> = tx
        .query_row(
            "SELECT tz FROM sites WHERE name = ?1",
            params![r.site],
            |x| x.get(0),
        )
        .optional()?;
    tz.ok_or_else(|| row_error(file_name, r, format!("unknown site {:?}", r.site)))
}

/// The row's start and end in Unix seconds, the end after the start.
fn times(file_name: &str, r: &Row, tz: &str) -> Result<(i64, i64), DbError> {
    let err = |what: String| row_error(file_name, r, what);
    let start = r.start.resolve(tz).map_err(err)?;
    let end = r.end.resolve(tz).map_err(err)?;
    if end <= start {
        return Err(err("the session ends before it starts".into()));
    }
    Ok((start, end))
}

/// The row's room and master exist.
fn check_row(tx: &Transaction<'_>, file_name: &str, r: &Row) -> Result<(), DbError> {
    let err = |what: String| row_error(file_name, r, what);
    image_tools::RoomName::new(&r.room).map_err(|e| err(e.to_string()))?;
    site_zone(tx, file_name, r)?;
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
    Ok(())
}

/// Session `id` (at `line` of the file) overlaps no other session of its room.
fn no_clash(
    tx: &Transaction<'_>,
    file_name: &str,
    line: usize,
    room: &str,
    id: i64,
) -> Result<(), DbError> {
    let clash: Option<(i64, i64)> = tx
        .query_row(
            "SELECT o.id, o.start FROM sessions s JOIN sessions o
               ON o.site = s.site AND o.room = s.room AND o.id != s.id
              AND o.start < s.end AND o.end > s.start
             WHERE s.id = ?1 ORDER BY o.start LIMIT 1",
            params![id],
            |x| Ok((x.get(0)?, x.get(1)?)),
        )
        .optional()?;
    match clash {
        None => Ok(()),
        Some((other, start)) => Err(DbError::Calendar {
            file: file_name.to_owned(),
            line,
            what: format!(
                "room {room:?} already has a session at that time (session {other}, from {} UTC)",
                jiff::Timestamp::from_second(start)
                    .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default()
            ),
        }),
    }
}

/// The sessions of calendar `source`.
fn stored(tx: &Transaction<'_>, source: &str) -> Result<Vec<Stored>, DbError> {
    let mut stmt = tx.prepare(
        "SELECT id, uid, instance, site, room, master, version, start, end FROM sessions
         WHERE source = ?1",
    )?;
    let rows = stmt.query_map(params![source], |r| {
        Ok(Stored {
            id: r.get(0)?,
            key: Key {
                uid: r.get(1)?,
                instance: r.get(2)?,
            },
            session: Session {
                site: r.get(3)?,
                room: r.get(4)?,
                master: r.get(5)?,
                version: r.get(6)?,
                start: r.get(7)?,
                end: r.get(8)?,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Writes `changes` (removals first, so a session may take the time another left), then checks
/// that no session written clashes with another in its room. The ids of the added sessions.
fn write(
    tx: &Transaction<'_>,
    file_name: &str,
    source: &str,
    changes: &Changes,
) -> Result<Vec<i64>, DbError> {
    for s in &changes.removed {
        tx.execute("DELETE FROM sessions WHERE id = ?1", params![s.id])?;
    }
    let mut written = Vec::new();
    for (old, new) in &changes.moved {
        let s = &new.session;
        tx.execute(
            "UPDATE sessions SET site = ?2, room = ?3, master = ?4, version = ?5, start = ?6,
             end = ?7 WHERE id = ?1",
            params![old.id, s.site, s.room, s.master, s.version, s.start, s.end],
        )?;
        written.push((old.id, new));
    }
    let mut added = Vec::with_capacity(changes.added.len());
    for new in &changes.added {
        let s = &new.session;
        tx.execute(
            "INSERT INTO sessions (site, room, master, version, start, end, source, uid, instance)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                s.site,
                s.room,
                s.master,
                s.version,
                s.start,
                s.end,
                source,
                new.key.uid,
                new.key.instance
            ],
        )?;
        added.push(tx.last_insert_rowid());
        written.push((tx.last_insert_rowid(), new));
    }
    written.sort_by_key(|(_, new)| new.line);
    for (id, new) in written {
        no_clash(tx, file_name, new.line, &new.session.room, id)?;
    }
    Ok(added)
}

fn calendar_error(file_name: &str, e: crate::calendar::Error) -> DbError {
    DbError::Calendar {
        file: file_name.to_owned(),
        line: e.line,
        what: e.what,
    }
}
