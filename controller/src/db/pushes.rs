//! Emergency pushes: overrides with a deadline, checked and recorded together, and the facts
//! `crate::push::plan_push` decides from (the site's caps and relay, the rooms running the
//! version, their sessions, seats, NUCs and what each NUC holds).

use std::collections::HashMap;

use image_tools::wire::MasterRef;
use image_tools::Bandwidth;
use rusqlite::params;

use super::plans::insert_override;
use super::{Db, DbError, Reported};
use crate::plan::{Classes, Relay, Settings};
use crate::push::{self, plan_push, RoomOutcome};

/// A push asked for, before it is recorded.
#[derive(Debug, Clone)]
pub struct NewPush<'a> {
    pub master: &'a MasterRef,
    pub reason: &'a str,
    pub by: &'a str,
    /// How long the override lasts at least (each lasts until its deadline at least).
    pub until: i64,
}

impl Db {
    /// The sites whose calendar runs `master` in a session not yet ended at `now`.
    pub fn sites_running(&self, master: &MasterRef, now: i64) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT site FROM sessions
             WHERE master = ?1 AND version = ?2 AND end > ?3 ORDER BY site",
        )?;
        let rows = stmt.query_map(
            params![master.name.as_str(), master.version.as_str(), now],
            |r| r.get(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Checks a push to each of `sites` with its deadline (a reason, the site, the master
    /// version, a session of it to come at the site, a deadline ahead), then records one override
    /// per site in one transaction: all or nothing. The ids, in the order of `sites`.
    pub fn add_pushes(
        &mut self,
        sites: &[(String, i64)],
        push: &NewPush<'_>,
        now: i64,
    ) -> Result<Vec<i64>, DbError> {
        let master = (push.master.name.as_str(), push.master.version.as_str());
        self.check_pushes(sites, push.master, push.reason, now)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(sites.len());
        for (site, deadline) in sites {
            ids.push(insert_override(
                &tx,
                site,
                master,
                push.reason,
                push.by,
                now,
                push.until.max(*deadline),
                Some(*deadline),
            )?);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// What [`Db::add_pushes`] checks, for a dry run too.
    pub fn check_pushes(
        &self,
        sites: &[(String, i64)],
        master: &MasterRef,
        reason: &str,
        now: i64,
    ) -> Result<(), DbError> {
        let running = self.sites_running(master, now)?;
        for (site, deadline) in sites {
            if *deadline <= now {
                return Err(DbError::Invalid(format!(
                    "the deadline at {site} is past ({} min ago): give a time still to come \
                     today (HH:MM, the site's time), or a date (YYYY-MM-DD HH:MM)",
                    (now - deadline) / 60
                )));
            }
            self.check_override(
                site,
                (master.name.as_str(), master.version.as_str()),
                reason,
            )?;
            if !running.contains(site) {
                return Err(DbError::Invalid(format!(
                    "site {site:?} has no session of {} {} to come: a push reaches the NUCs of \
                     the rooms whose sessions run it (schedule it first: `nightcast session add`, \
                     or `nightcast calendar import`)",
                    master.name, master.version
                )));
            }
        }
        Ok(())
    }

    /// Each room of `site` running `master` from `now` on, with the verdict of a push due at
    /// `deadline` (see `crate::push`; the LAN counted at `push::LAN_MBIT`).
    pub fn push_plan(
        &self,
        now: i64,
        site: &str,
        master: &MasterRef,
        deadline: i64,
        classes: &Classes,
        settings: &Settings,
    ) -> Result<Vec<RoomOutcome>, DbError> {
        let lan = Bandwidth::from_mbit(push::LAN_MBIT);
        let (facts, rooms) = self.push_facts(now, site, master, classes, lan)?;
        Ok(plan_push(now, deadline, &facts, &rooms, settings))
    }

    /// The facts of a push of `master` to `site`.
    fn push_facts(
        &self,
        now: i64,
        site: &str,
        master: &MasterRef,
        classes: &Classes,
        lan: Bandwidth,
    ) -> Result<(push::Site, Vec<push::Room>), DbError> {
        let row = self
            .sites()?
            .into_iter()
            .find(|s| s.name == site)
            .ok_or_else(|| DbError::NoSite(site.to_owned()))?;
        let master_bytes = classes.master_bytes(master).unwrap_or(0);
        let relay = match self.relays_by_site()?.get(site) {
            Some(&last_seen) => Relay::Enrolled { last_seen },
            None => Relay::None,
        };
        let relay_holds = self.holds_by_site()?.remove(site).unwrap_or_default();
        // What the relay said it lacks while fetching; before it has the manifest it says 0 (it
        // does not know the chunks yet): then what none of the versions it holds shares.
        let relay_missing = if relay_holds.contains(master) {
            0
        } else {
            match self.relay_missing(site, master)? {
                Some(bytes) if bytes > 0 => bytes,
                _ => classes
                    .missing_bytes(master, &relay_holds)
                    .unwrap_or(master_bytes),
            }
        };
        let facts = push::Site {
            cap_mbit: match row.emergency_cap_mbit {
                0 => row.cap_mbit,
                e => e,
            },
            relay_missing,
            relay,
            lan,
            master_bytes,
        };
        let mut rooms: Vec<push::Room> = Vec::new();
        let sessions: Vec<_> = self
            .sessions(Some(site))?
            .into_iter()
            .filter(|s| s.end > now)
            .collect();
        let runs = |s: &super::SessionRow| s.master == master.name && s.version == master.version;
        let mut names: Vec<&String> = sessions
            .iter()
            .filter(|s| runs(s))
            .map(|s| &s.room)
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let nucs = self
                .room_nucs(site, name)?
                .into_iter()
                .map(|(seat, node, last_seen, held)| push::Nuc {
                    missing: last_seen
                        .and(classes.missing_bytes(master, &held))
                        .filter(|_| node.is_some()),
                    seat,
                    node,
                    last_seen,
                })
                .collect();
            rooms.push(push::Room {
                name: name.clone(),
                sessions: sessions
                    .iter()
                    .filter(|s| &s.room == name)
                    .map(|s| (s.start, s.end, runs(s)))
                    .collect(),
                nucs,
            });
        }
        Ok((facts, rooms))
    }

    /// What the site's relay last reported it still lacks of `master`, if it said.
    fn relay_missing(&self, site: &str, master: &MasterRef) -> Result<Option<u64>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT status FROM nodes WHERE site = ?1 AND role = 'relay' AND revoked_at IS NULL
             ORDER BY last_seen DESC LIMIT 1",
        )?;
        let mut rows = stmt.query_map(params![site], |r| r.get::<_, String>(0))?;
        let Some(status) = rows.next().transpose()? else {
            return Ok(None);
        };
        let stored: Reported = serde_json::from_str(&status).unwrap_or_default();
        Ok(match stored.report {
            image_tools::report::Report::Relay(r) => r
                .missing
                .iter()
                .find(|m| &m.master == master)
                .map(|m| m.bytes),
            _ => None,
        })
    }

    /// Each seat of a room: its NUC (if any), its last report, and the versions it holds.
    #[allow(clippy::type_complexity)]
    fn room_nucs(
        &self,
        site: &str,
        room: &str,
    ) -> Result<Vec<(String, Option<String>, Option<i64>, Vec<MasterRef>)>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT s.name, n.node, n.last_seen, h.master, h.version FROM seats s
             LEFT JOIN nodes n ON n.site = s.site AND n.room = s.room AND n.seat = s.name
                AND n.revoked_at IS NULL
             LEFT JOIN holdings h ON h.site = n.site AND h.node = n.node
             WHERE s.site = ?1 AND s.room = ?2 ORDER BY s.name",
        )?;
        let rows = stmt.query_map(params![site, room], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<image_tools::MasterName>>(3)?,
                r.get::<_, Option<image_tools::MasterVersion>>(4)?,
            ))
        })?;
        let mut out: Vec<(String, Option<String>, Option<i64>, Vec<MasterRef>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for row in rows {
            let (seat, node, last_seen, name, version) = row?;
            let i = *index.entry(seat.clone()).or_insert_with(|| {
                out.push((seat, node, last_seen, Vec::new()));
                out.len() - 1
            });
            if let (Some(name), Some(version)) = (name, version) {
                out[i].3.push(MasterRef { name, version });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_893_974_400 + 11 * 3600; // 2030-01-08 11:00 UTC

    /// lyon runs win10 1 this afternoon in salle-1 (pc-1, pc-2); nice runs nothing.
    fn db(dir: &std::path::Path) -> Db {
        let mut db = Db::open(&dir.join("c.db")).unwrap();
        for site in ["lyon", "nice"] {
            db.add_site(site, "UTC", "22:00-06:00", 20, None).unwrap();
        }
        db.add_room("lyon", "salle-1").unwrap();
        db.add_seat("lyon", "salle-1", "pc-1").unwrap();
        db.add_seat("lyon", "salle-1", "pc-2").unwrap();
        let (m, bytes) = crate::testing::manifest("win10", "1", 1);
        db.add_master(&m, &bytes, 0).unwrap();
        db.add_session(
            "lyon",
            "salle-1",
            ("win10", "1"),
            "2030-01-08 14:00",
            "2030-01-08 17:00",
            0,
        )
        .unwrap();
        db
    }

    fn win10() -> MasterRef {
        MasterRef::new("win10", "1").unwrap()
    }

    fn push(master: &MasterRef) -> NewPush<'_> {
        NewPush {
            master,
            reason: "fix at noon",
            by: "dsi",
            until: NOW + 3600,
        }
    }

    #[test]
    fn a_push_to_several_sites_is_stored_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = db(dir.path());
        let m = win10();
        assert_eq!(db.sites_running(&m, NOW).unwrap(), vec!["lyon".to_owned()]);
        // nice has no session of it: refused, and lyon's push with it.
        let both = [
            ("lyon".to_owned(), NOW + 3 * 3600),
            ("nice".to_owned(), NOW + 3 * 3600),
        ];
        let e = db.add_pushes(&both, &push(&m), NOW).unwrap_err();
        assert!(
            e.to_string().contains("\"nice\" has no session of win10 1"),
            "{e}"
        );
        assert!(db.overrides(NOW).unwrap().is_empty());
        // A deadline gone by: refused.
        let past = [("lyon".to_owned(), NOW - 60)];
        let e = db.add_pushes(&past, &push(&m), NOW).unwrap_err();
        assert!(e.to_string().contains("past"), "{e}");
        // A version that does not exist: refused, naming it.
        let v9 = MasterRef::new("win10", "9").unwrap();
        let lyon = [("lyon".to_owned(), NOW + 3 * 3600)];
        let e = db.add_pushes(&lyon, &push(&v9), NOW).unwrap_err();
        assert!(matches!(e, DbError::NoMaster { .. }), "{e}");
        assert!(db.overrides(NOW).unwrap().is_empty());
        // The good one: kept with its deadline, and lasting until it at least.
        let ids = db.add_pushes(&lyon, &push(&m), NOW).unwrap();
        let o = &db.overrides(NOW).unwrap()[0];
        assert_eq!((o.id, o.deadline), (ids[0], Some(NOW + 3 * 3600)));
        assert_eq!(o.until, NOW + 3 * 3600);
    }

    #[test]
    fn the_facts_of_a_push_are_the_rooms_running_it_and_their_seats() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let classes = db.classes().unwrap();
        let rooms = db
            .push_plan(
                NOW,
                "lyon",
                &win10(),
                NOW + 3 * 3600,
                &classes,
                &Settings::default(),
            )
            .unwrap();
        assert_eq!(rooms.len(), 1);
        let r = &rooms[0];
        assert_eq!(r.room, "salle-1");
        // No NUC at any seat yet: nobody to run it, which is no verdict of ready.
        assert_eq!(
            r.verdict,
            push::Verdict::AtRisk("no NUC sits at any seat of the room".into())
        );
        let seats: Vec<_> = r.nucs.iter().map(|n| (n.seat.as_str(), &n.why)).collect();
        assert_eq!(
            seats,
            vec![("pc-1", &push::Why::NoNuc), ("pc-2", &push::Why::NoNuc)]
        );
        assert_eq!(r.relay_missing, classes.master_bytes(&win10()).unwrap());
        // nice runs nothing of it: no room.
        assert!(db
            .push_plan(
                NOW,
                "nice",
                &win10(),
                NOW + 3600,
                &classes,
                &Settings::default()
            )
            .unwrap()
            .is_empty());
    }
}
