//! Emergency pushes (`POST /v1/overrides` with a deadline, to one site or to every site running
//! the master; a dry run stores nothing) and their progress (`GET /v1/pushes`): per room running
//! the pushed version, will every NUC run it by the deadline (`crate::push`).

use image_tools::api::{NewOverride, OverrideMade, PushNuc, PushRoom, PushVerdict};
use image_tools::wire::MasterRef;

use super::plan::override_info;
use super::{db_error, error, ok, stored, Answer, Call, Reply};
use crate::db::pushes::NewPush;
use crate::db::{Db, DbError};
use crate::push::{RoomOutcome, Verdict, Why, LAN_MBIT};

/// `POST /v1/overrides` with a deadline, `all_sites` or `dry_run`.
pub(super) fn new_push(call: &Call, o: &NewOverride) -> Answer {
    let now = call.now;
    let Some(deadline) = &o.deadline else {
        return Err(error(
            400,
            "an emergency push to all sites, or a dry run, needs a deadline (`deadline`)",
        ));
    };
    let master = MasterRef {
        name: o.master.clone(),
        version: o.version.clone(),
    };
    let mut db = call.db()?;
    let names =
        match (&o.site, o.all_sites) {
            (Some(_), true) => return Err(error(400, "give a site or all sites, not both")),
            (Some(site), false) => vec![site.to_string()],
            (None, true) => db.sites_running(&master, now).map_err(db_error)?,
            (None, false) => return Err(error(
                400,
                "name the site (`site`), or push to every site running the master (`all_sites`)",
            )),
        };
    if names.is_empty() {
        let known = db
            .masters()
            .map_err(db_error)?
            .iter()
            .any(|m| m.0 == master.name.as_str() && m.1 == master.version.as_str());
        return Err(match known {
            false => db_error(DbError::NoMaster {
                name: master.name.to_string(),
                version: master.version.to_string(),
            }),
            true => error(
                400,
                format!(
                    "no site has a session of {} {} to come: a push reaches the NUCs of the \
                     rooms whose sessions run it (schedule it first)",
                    master.name, master.version
                ),
            ),
        });
    }
    let all = db.sites().map_err(db_error)?;
    let mut sites = Vec::with_capacity(names.len());
    for name in names {
        let Some(row) = all.iter().find(|s| s.name == name) else {
            return Err(db_error(DbError::NoSite(name)));
        };
        let at = crate::deadline::resolve(deadline, &row.tz, now).map_err(|e| error(400, e))?;
        sites.push((name, at));
    }
    db.check_pushes(&sites, &master, &o.reason, now)
        .map_err(db_error)?;
    let until = now + o.hours.clamp(1, 72) as i64 * 3600;
    let mut rooms = Vec::new();
    for (site, at) in &sites {
        rooms.extend(site_rooms(call, &db, site, &master, *at)?);
    }
    let longest = sites.iter().map(|s| s.1).max().unwrap_or(until).max(until);
    if o.dry_run {
        return ok(OverrideMade {
            id: 0,
            until: longest,
            made: Vec::new(),
            rooms,
        });
    }
    let push = NewPush {
        master: &master,
        reason: &o.reason,
        by: &o.by,
        until,
    };
    let ids = db.add_pushes(&sites, &push, now).map_err(db_error)?;
    for ((site, at), id) in sites.iter().zip(&ids) {
        tracing::warn!(id, %site, master = %master.name, version = %master.version, deadline = at, "emergency push recorded");
    }
    call.api.changed.notify_one();
    let made = db
        .overrides(now)
        .map_err(db_error)?
        .iter()
        .filter(|r| ids.contains(&r.id))
        .map(override_info)
        .collect::<Result<Vec<_>, Reply>>()?;
    ok(OverrideMade {
        id: ids.first().copied().unwrap_or(0),
        until: longest,
        made,
        rooms,
    })
}

/// `GET /v1/pushes`: every push in force, room by room.
pub(super) fn pushes(call: &Call) -> Result<Vec<PushRoom>, Reply> {
    let db = call.db()?;
    let mut out = Vec::new();
    for o in db.overrides(call.now).map_err(db_error)? {
        let Some(deadline) = o.deadline else {
            continue;
        };
        out.extend(site_rooms(call, &db, &o.site, &o.master, deadline)?);
    }
    Ok(out)
}

/// The verdict of a push of `master` to `site` due at `deadline`, per room.
fn site_rooms(
    call: &Call,
    db: &Db,
    site: &str,
    master: &MasterRef,
    deadline: i64,
) -> Result<Vec<PushRoom>, Reply> {
    let (_, classes) = super::plan::current(call.api, db, call.now)?;
    let caps: Vec<_> = db.sites().map_err(db_error)?;
    let mut out = Vec::new();
    {
        let cap_mbit = caps
            .iter()
            .find(|s| s.name == site)
            .map(|s| match s.emergency_cap_mbit {
                0 => s.cap_mbit,
                e => e,
            })
            .unwrap_or(0);
        let outcomes = db
            .push_plan(
                call.now,
                site,
                master,
                deadline,
                &classes,
                &call.api.settings,
            )
            .map_err(db_error)?;
        for r in outcomes {
            out.push(push_room(site, master, deadline, cap_mbit, &r)?);
        }
    }
    Ok(out)
}

fn push_room(
    site: &str,
    master: &MasterRef,
    deadline: i64,
    cap_mbit: u64,
    r: &RoomOutcome,
) -> Result<PushRoom, Reply> {
    Ok(PushRoom {
        site: stored(site)?,
        room: stored(&r.room)?,
        master: master.name.clone(),
        version: master.version.clone(),
        deadline,
        relay_missing_bytes: r.relay_missing,
        relay_ready_at: r.relay_ready_at,
        cap_mbit,
        lan_bytes: r.lan_bytes,
        lan_mbit: LAN_MBIT,
        ready_at: r.ready_at,
        nucs: r
            .nucs
            .iter()
            .map(|n| PushNuc {
                seat: n.seat.clone(),
                node: n.node.clone().unwrap_or_default(),
                runs_at: n.runs_at,
                why: match n.why {
                    Why::Holds => "holds",
                    Why::Transfer => "transfer",
                    Why::SessionEnd(_) => "session_end",
                    Why::NoNuc => "no_nuc",
                    Why::NoRelay => "no_relay",
                }
                .to_owned(),
                in_time: n.in_time,
            })
            .collect(),
        verdict: match &r.verdict {
            Verdict::Ready => PushVerdict::Ready {},
            Verdict::AtRisk(why) => PushVerdict::AtRisk { why: why.clone() },
            Verdict::Late => PushVerdict::Late {},
        },
    })
}
