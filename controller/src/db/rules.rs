//! The calendar's mapping rules (`calendar::mapping`), as the DSI writes them: added (one per
//! kind and pattern: the same again replaces it), listed in the order they are tried, removed.
//! A rule's master or room must exist when it is written.

use rusqlite::{params, OptionalExtension};

use super::{Db, DbError};
use crate::calendar::mapping::{normalize, Known, Matcher, Pattern, Rule, Rules, Target};

/// A rule as written: what it matches (kind and text) and what it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    pub id: i64,
    /// `title`, `category` or `location`.
    pub kind: String,
    /// As the DSI wrote it.
    pub pattern: String,
    pub target: Target,
}

impl Db {
    /// Adds a rule, or replaces the one of the same kind and pattern: the rule, and the one
    /// replaced. A title or category rule must give a master version of the catalogue, a
    /// location rule one of its rooms.
    pub fn add_rule(
        &mut self,
        kind: &str,
        pattern: &str,
        target: &Target,
    ) -> Result<(RuleRow, Option<RuleRow>), DbError> {
        let key = match kind {
            "title" | "location" => Pattern::new(pattern)
                .map_err(|e| DbError::Invalid(format!("{kind} rule: {e}")))?
                .as_str()
                .to_owned(),
            "category" => normalize(pattern),
            _ => return Err(DbError::Invalid(format!("no rule kind {kind:?}"))),
        };
        if key.is_empty() || pattern.len() > 500 || pattern.chars().any(char::is_control) {
            return Err(DbError::Invalid(format!(
                "{kind} rule {pattern:?}: give 1 to 500 characters, on one line"
            )));
        }
        let tx = self.conn.transaction()?;
        let (master, version, site, room) = match (kind, target) {
            ("location", Target::Place { site, room }) => {
                let known: Option<()> = tx
                    .query_row(
                        "SELECT 1 FROM rooms WHERE site = ?1 AND name = ?2",
                        params![site, room],
                        |_| Ok(()),
                    )
                    .optional()?;
                if known.is_none() {
                    return Err(DbError::NoRoom {
                        site: site.clone(),
                        room: room.clone(),
                    });
                }
                (None, None, Some(site), Some(room))
            }
            ("title" | "category", Target::Master { name, version }) => {
                let known: Option<()> = tx
                    .query_row(
                        "SELECT 1 FROM masters WHERE name = ?1 AND version = ?2",
                        params![name, version],
                        |_| Ok(()),
                    )
                    .optional()?;
                if known.is_none() {
                    return Err(DbError::NoMaster {
                        name: name.clone(),
                        version: version.clone(),
                    });
                }
                (Some(name), Some(version), None, None)
            }
            _ => {
                return Err(DbError::Invalid(format!(
                    "a {kind} rule gives {}",
                    match kind {
                        "location" => "a site and room",
                        _ => "a master and version",
                    }
                )))
            }
        };
        let replaced = rows(&tx, Some((kind, &key)))?.into_iter().next();
        tx.execute(
            "INSERT INTO calendar_rules (kind, pattern, key, master, version, site, room)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (kind, key) DO UPDATE SET pattern = ?2, master = ?4, version = ?5,
                site = ?6, room = ?7",
            params![kind, pattern.trim(), key, master, version, site, room],
        )?;
        let rule = rows(&tx, Some((kind, &key)))?
            .into_iter()
            .next()
            .ok_or_else(|| DbError::Invalid(format!("the {kind} rule {pattern:?} was not kept")))?;
        tx.commit()?;
        Ok((rule, replaced))
    }

    /// Every rule, in the order they are tried.
    pub fn rules(&self) -> Result<Vec<RuleRow>, DbError> {
        rows(&self.conn, None)
    }

    pub fn remove_rule(&self, id: i64) -> Result<(), DbError> {
        match self
            .conn
            .execute("DELETE FROM calendar_rules WHERE id = ?1", params![id])?
        {
            0 => Err(DbError::NoRule(id)),
            _ => Ok(()),
        }
    }
}

/// The rules as `calendar::mapping` tries them.
pub(super) fn mapping_rules(conn: &rusqlite::Connection) -> Result<Rules, DbError> {
    let mut out = Vec::new();
    for r in rows(conn, None)? {
        let matcher = match r.kind.as_str() {
            "category" => Matcher::Category(normalize(&r.pattern)),
            kind => {
                let p = Pattern::new(&r.pattern)
                    .map_err(|e| DbError::Invalid(format!("rule {}: {e}", r.id)))?;
                match kind {
                    "title" => Matcher::Title(p),
                    _ => Matcher::Location(p),
                }
            }
        };
        out.push(Rule {
            id: r.id,
            matcher,
            target: r.target,
        });
    }
    Ok(Rules(out))
}

/// The master versions and rooms of the catalogue.
pub(super) fn known(conn: &rusqlite::Connection) -> Result<Known, DbError> {
    let pairs = |sql: &str| -> Result<std::collections::HashSet<(String, String)>, DbError> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    Ok(Known {
        masters: pairs("SELECT name, version FROM masters")?,
        rooms: pairs("SELECT site, name FROM rooms")?,
    })
}

fn rows(conn: &rusqlite::Connection, only: Option<(&str, &str)>) -> Result<Vec<RuleRow>, DbError> {
    let (kind, key) = only.unzip();
    let mut stmt = conn.prepare(
        "SELECT id, kind, pattern, master, version, site, room FROM calendar_rules
         WHERE ?1 IS NULL OR (kind = ?1 AND key = ?2) ORDER BY id",
    )?;
    let rows = stmt.query_map(params![kind, key], |r| {
        let kind: String = r.get(1)?;
        let target = match kind.as_str() {
            "location" => Target::Place {
                site: r.get(5)?,
                room: r.get(6)?,
            },
            _ => Target::Master {
                name: r.get(3)?,
                version: r.get(4)?,
            },
        };
        Ok(RuleRow {
            id: r.get(0)?,
            kind,
            pattern: r.get(2)?,
            target,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
