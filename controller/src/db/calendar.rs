//! Sessions: the calendar files of `crate::calendar` checked against the catalogue (site, room,
//! master, times in the site's time zone, no clash in a room) and inserted all or nothing.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{Db, DbError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: i64,
    pub site: String,
    pub room: String,
    pub master: image_tools::MasterName,
    pub version: image_tools::MasterVersion,
    pub start: i64,
    pub end: i64,
}

impl Db {
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

    /// Imports a calendar in CSV (see `calendar::csv`). Every row is checked first; one bad row
    /// imports nothing and the error names its line.
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
}

fn calendar_error(file_name: &str, e: crate::calendar::Error) -> DbError {
    DbError::Calendar {
        file: file_name.to_owned(),
        line: e.line,
        what: e.what,
    }
}
