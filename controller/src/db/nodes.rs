//! Nodes: their reports (what they hold, their typed report), their seats (one node per seat,
//! only an existing seat, enforced by the schema), takeovers decided by `crate::takeover` and
//! applied in one transaction, and the fleet as the DSI sees it.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use image_tools::report::Report;
use image_tools::wire::MasterRef;
use serde::{Deserialize, Serialize};

use super::sites::check_room_seat;
use super::{policy, Db, DbError};
use crate::takeover::{self, Decision};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRow {
    pub site: String,
    pub node: String,
    pub role: String,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    /// "master version, ..." of what it reported holding.
    pub holding: String,
    /// Its software version, from its last report.
    pub software: String,
    /// Its last report (`Report::Bare` before its first).
    pub status: Report,
    /// An agent's seat as `room/seat`; `None` for a spare (and a relay).
    pub seat: Option<String>,
    /// Why a spare is not taking over a silent seat by itself (see `takeover`).
    pub waiting: Option<String>,
}

/// What is kept of a node's last report (as JSON in `nodes.status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reported {
    pub software: String,
    pub report: Report,
}

impl Db {
    /// Records a node's report: it was seen now and holds exactly `holding` (complete versions).
    pub fn record_report(
        &mut self,
        site: &str,
        node: &str,
        role: &str,
        holding: &[MasterRef],
        reported: &Reported,
        now: i64,
    ) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        write_report(&tx, site, node, role, holding, reported, now)?;
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
        holding: &[MasterRef],
        reported: &Reported,
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
        write_report(&tx, site, node, "agent", holding, reported, now)?;
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

    /// Every enrolled node with its role and its last report, if any (for `/metrics`).
    pub fn nodes_seen(&self) -> Result<Vec<crate::metrics::NodeSeen>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT site, node, role, last_seen FROM nodes ORDER BY site, node")?;
        let rows = stmt.query_map([], |r| {
            Ok(crate::metrics::NodeSeen {
                site: r.get(0)?,
                node: r.get(1)?,
                role: r.get(2)?,
                last_seen: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
            // A row from before typed reports reads as none: the next report replaces it.
            let stored: Reported =
                serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default();
            Ok(FleetRow {
                site: r.get(0)?,
                node: r.get(1)?,
                role: r.get(2)?,
                enrolled_at: r.get(3)?,
                last_seen: r.get(4)?,
                holding: r.get(5)?,
                software: stored.software,
                status: stored.report,
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
}

/// What a bind changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bound {
    /// The node that held the seat before, now a spare.
    pub replaced: Option<String>,
    /// The seat (room, seat) the node held before, now empty.
    pub moved_from: Option<(String, String)>,
}

fn write_report(
    tx: &rusqlite::Transaction<'_>,
    site: &str,
    node: &str,
    role: &str,
    holding: &[MasterRef],
    reported: &Reported,
    now: i64,
) -> Result<(), DbError> {
    let status = serde_json::to_string(reported)
        .map_err(|e| DbError::Invalid(format!("cannot store the report: {e}")))?;
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
    for MasterRef { name, version } in holding {
        tx.execute(
            "INSERT OR IGNORE INTO holdings (site, node, master, version) VALUES (?1, ?2, ?3, ?4)",
            params![site, node, name, version],
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
