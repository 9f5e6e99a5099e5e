//! Daytime overrides, and what each site is told or planned from: its relay's fetch plan, its
//! rooms' sessions and seat bindings (for the relays' plans), and the planner's inputs (`plan`
//! gathers them, `crate::plan::plan_site` decides).

use std::collections::HashMap;

use image_tools::wire::MasterRef;
use rusqlite::params;

use super::{parse_schedule, Db, DbError};

impl Db {
    /// Each site's rooms with their sessions not yet ended at `now`, in start order (what the
    /// agents of each room run, and when).
    pub fn room_plans(
        &self,
        now: i64,
    ) -> Result<HashMap<String, Vec<image_tools::wire::RoomPlan>>, DbError> {
        use image_tools::wire::{RoomPlan, SessionEntry};
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
        self.check_override(site, master, reason)?;
        insert_override(&self.conn, site, master, reason, by, now, until, None)
    }

    /// What every override needs: a reason, its site, its master version.
    pub(super) fn check_override(
        &self,
        site: &str,
        master: (&str, &str),
        reason: &str,
    ) -> Result<(), DbError> {
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
        Ok(())
    }

    /// Overrides still in force at `now`, oldest first.
    pub fn overrides(&self, now: i64) -> Result<Vec<OverrideRow>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, site, master, version, reason, requested_by, created_at, until, deadline
             FROM overrides WHERE until > ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map(params![now], |r| {
            Ok(OverrideRow {
                id: r.get(0)?,
                site: r.get(1)?,
                master: MasterRef {
                    name: r.get(2)?,
                    version: r.get(3)?,
                },
                reason: r.get(4)?,
                by: r.get(5)?,
                created_at: r.get(6)?,
                until: r.get(7)?,
                deadline: r.get(8)?,
            })
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
        use image_tools::wire::PlanEntry;
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
        for o in self.overrides(now)? {
            let (created, until, master) = (o.created_at, o.until, o.master);
            let entries = plans.entry(o.site).or_default();
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
    pub fn holds_by_site(
        &self,
    ) -> Result<HashMap<String, Vec<image_tools::wire::MasterRef>>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT h.site, h.master, h.version FROM holdings h
             JOIN nodes n ON n.site = h.site AND n.node = h.node WHERE n.role = 'relay'",
        )?;
        let mut out: HashMap<String, Vec<image_tools::wire::MasterRef>> = HashMap::new();
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                MasterRef {
                    name: r.get(1)?,
                    version: r.get(2)?,
                },
            ))
        })?;
        for row in rows {
            let (site, master) = row?;
            out.entry(site).or_default().push(master);
        }
        Ok(out)
    }

    /// Each site's relay as the planner sees it: a site with no relay enrolled (or only revoked
    /// ones) is missing; otherwise the last report of its most recently heard relay (`None`:
    /// none ever reported).
    pub fn relays_by_site(&self) -> Result<HashMap<String, Option<i64>>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT site, MAX(last_seen) FROM nodes
             WHERE role = 'relay' AND revoked_at IS NULL GROUP BY site",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The plan for every site from `now` on. `holds` lists, per site, the master versions its relay
    /// reported complete (sites not in it hold nothing); each site's relay is read here
    /// (`relays_by_site`).
    pub fn plan(
        &self,
        now: i64,
        settings: &crate::plan::Settings,
        holds: &std::collections::HashMap<String, Vec<image_tools::wire::MasterRef>>,
    ) -> Result<Vec<(String, Vec<crate::plan::Row>)>, DbError> {
        self.plan_with(now, settings, holds, &self.classes()?)
    }

    /// `plan` with the classes given.
    pub fn plan_with(
        &self,
        now: i64,
        settings: &crate::plan::Settings,
        holds: &std::collections::HashMap<String, Vec<image_tools::wire::MasterRef>>,
        classes: &crate::plan::Classes,
    ) -> Result<Vec<(String, Vec<crate::plan::Row>)>, DbError> {
        use crate::plan::{plan_site, Session};
        let mut by_site: std::collections::HashMap<String, Vec<Session>> = Default::default();
        for s in self.sessions(None)?.into_iter().filter(|s| s.start >= now) {
            by_site.entry(s.site.clone()).or_default().push(Session {
                id: s.id.to_string(),
                room: s.room,
                master: MasterRef {
                    name: s.master,
                    version: s.version,
                },
                start: s.start,
            });
        }
        let mut out = Vec::new();
        for site in self.planner_sites(holds)? {
            let sessions = by_site.remove(&site.name).unwrap_or_default();
            let rows = plan_site(now, &site, &sessions, classes, settings);
            out.push((site.name, rows));
        }
        Ok(out)
    }

    /// Every site as the planner sees it: windows, cap, relay, and what `holds` says it holds.
    pub fn planner_sites(
        &self,
        holds: &std::collections::HashMap<String, Vec<image_tools::wire::MasterRef>>,
    ) -> Result<Vec<crate::plan::Site>, DbError> {
        use crate::plan::{Relay, Site};
        let relays = self.relays_by_site()?;
        self.sites()?
            .into_iter()
            .map(|row| {
                Ok(Site {
                    schedule: parse_schedule(&row.tz, &row.windows)?,
                    cap_bps: row.cap_mbit * 1_000_000,
                    holds: holds.get(&row.name).cloned().unwrap_or_default(),
                    relay: match relays.get(&row.name) {
                        Some(&last_seen) => Relay::Enrolled { last_seen },
                        None => Relay::None,
                    },
                    name: row.name,
                })
            })
            .collect()
    }

    /// What `master` costs each site that runs or holds the master, at `now` (`crate::cost`).
    pub fn version_costs(
        &self,
        now: i64,
        master: &MasterRef,
        classes: &crate::plan::Classes,
    ) -> Result<Vec<crate::cost::SiteCost>, DbError> {
        let sites = self.planner_sites(&self.holds_by_site()?)?;
        let mut uses: std::collections::HashMap<String, Vec<MasterRef>> = Default::default();
        for s in self.sessions(None)?.into_iter().filter(|s| s.start >= now) {
            uses.entry(s.site).or_default().push(MasterRef {
                name: s.master,
                version: s.version,
            });
        }
        Ok(crate::cost::version_costs(
            now, master, classes, &sites, &uses,
        ))
    }
}

/// An override in force: a site's relay may fetch `master` outside its night windows until
/// `until`; with a `deadline`, an emergency push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideRow {
    pub id: i64,
    pub site: String,
    pub master: MasterRef,
    pub reason: String,
    pub by: String,
    pub created_at: i64,
    pub until: i64,
    pub deadline: Option<i64>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn insert_override(
    conn: &rusqlite::Connection,
    site: &str,
    master: (&str, &str),
    reason: &str,
    by: &str,
    now: i64,
    until: i64,
    deadline: Option<i64>,
) -> Result<i64, DbError> {
    conn.execute(
        "INSERT INTO overrides (site, master, version, reason, requested_by, created_at, until,
            deadline)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            site,
            master.0,
            master.1,
            reason.trim(),
            by,
            now,
            until,
            deadline
        ],
    )?;
    Ok(conn.last_insert_rowid())
}
