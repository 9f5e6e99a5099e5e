//! The delivery plan, and daytime overrides.

use image_tools::api::{NewOverride, OverrideInfo, OverrideMade, PlanRow, Reason, Verdict};

use std::sync::Arc;

use super::{db_error, ok, routed, stored, Answer, Api, Call, Reply, NO_ROUTE};
use crate::db::Db;
use crate::failures::{failed_on, SeatFailure};
use crate::plan::{self, Classes};

/// The answer to `call` if it is one of this module's routes.
pub(super) fn route(call: &Call) -> Option<Answer> {
    let (api, now) = (call.api, call.now);
    let db = || call.db();
    routed((|| match (call.method, call.path) {
        ("GET", ["v1", "plan"]) => ok(rows(api, now)?),
        ("POST", ["v1", "overrides"]) => {
            let o: NewOverride = call.body()?;
            if o.deadline.is_some() || o.all_sites || o.dry_run {
                return super::push::new_push(call, &o);
            }
            let Some(site) = &o.site else {
                return Err(super::error(
                    400,
                    "name the site (`site`), or push to every site running the master (`all_sites`)",
                ));
            };
            let until = now + o.hours.clamp(1, 72) as i64 * 3600;
            let id = db()?
                .add_override(
                    site.as_str(),
                    (o.master.as_str(), o.version.as_str()),
                    &o.reason,
                    &o.by,
                    now,
                    until,
                )
                .map_err(db_error)?;
            tracing::warn!(id, "daytime override recorded");
            let made = db()?
                .overrides(now)
                .map_err(db_error)?
                .iter()
                .filter(|r| r.id == id)
                .map(override_info)
                .collect::<Result<Vec<_>, Reply>>()?;
            ok(OverrideMade {
                id,
                until,
                made,
                rooms: Vec::new(),
            })
        }
        ("GET", ["v1", "overrides"]) => {
            let overrides = db()?.overrides(now).map_err(db_error)?;
            let overrides = overrides
                .iter()
                .map(override_info)
                .collect::<Result<Vec<_>, Reply>>()?;
            ok(overrides)
        }
        ("GET", ["v1", "pushes"]) => ok(super::push::pushes(call)?),
        _ => Err(NO_ROUTE),
    })())
}

/// An override as the API answers it.
pub(super) fn override_info(o: &crate::db::OverrideRow) -> Result<OverrideInfo, Reply> {
    Ok(OverrideInfo {
        id: o.id,
        site: stored(&o.site)?,
        master: o.master.name.clone(),
        version: o.master.version.clone(),
        reason: o.reason.clone(),
        by: o.by.clone(),
        created_at: o.created_at,
        until: o.until,
        deadline: o.deadline,
    })
}

/// The plan's rows at `now`, as `GET /v1/plan` answers them.
fn rows(api: &Api, now: i64) -> Result<Vec<PlanRow>, Reply> {
    rows_until(api, now, i64::MAX)
}

/// The same, of the sessions starting before `until` only (the console's board: its week).
pub(crate) fn rows_until(api: &Api, now: i64, until: i64) -> Result<Vec<PlanRow>, Reply> {
    let db = Db::open(&api.data.database()).map_err(db_error)?;
    let (plan, _) = current(api, &db, now)?;
    let failures = db.seat_failures().map_err(db_error)?;
    plan_rows(&plan, &failures, until)
}

/// Every site's plan at `now`, and the chunk classes it was computed with (kept while the set of
/// masters does not change).
pub(super) fn current(api: &Api, db: &Db, now: i64) -> Result<(SitePlans, Arc<Classes>), Reply> {
    let masters = db.manifest_revisions().map_err(db_error)?;
    let masters = masters.into_iter().map(|(m, _)| m).collect();
    let classes = api
        .classes
        .get(masters, || db.classes())
        .map_err(db_error)?;
    let holds = db.holds_by_site().map_err(db_error)?;
    let plan = db
        .plan_with(now, &api.settings, &holds, &classes)
        .map_err(db_error)?;
    Ok((plan, classes))
}

/// Each site's rows.
pub(super) type SitePlans = Vec<(String, Vec<plan::Row>)>;

/// The plan's rows of the sessions starting before `until`, site after site, as the API answers
/// them, each with the seats of its room where its master version failed.
pub fn plan_rows(
    plan: &[(String, Vec<plan::Row>)],
    failures: &[SeatFailure],
    until: i64,
) -> Result<Vec<PlanRow>, Reply> {
    let mut out = Vec::new();
    for (site, rows) in plan {
        for r in rows.iter().filter(|r| r.session.start < until) {
            let verdict = match &r.verdict {
                plan::Verdict::OnTime { ready_at, night } => Verdict::OnTime {
                    ready_at: *ready_at,
                    night: night.map(|d| d.to_string()),
                },
                plan::Verdict::AtRisk {
                    ready_at,
                    slack_secs,
                    needed_secs,
                    reason,
                } => Verdict::AtRisk {
                    ready_at: *ready_at,
                    slack_secs: *slack_secs,
                    needed_secs: *needed_secs,
                    reason: wire_reason(*reason),
                },
                plan::Verdict::Late {
                    shortfall,
                    override_secs,
                    reason,
                } => Verdict::Late {
                    shortfall_bytes: *shortfall,
                    override_secs: *override_secs,
                    reason: wire_reason(*reason),
                },
                plan::Verdict::Unknown => Verdict::UnknownMaster {},
            };
            out.push(PlanRow {
                site: stored(site)?,
                session: r.session.id.clone(),
                room: stored(&r.session.room)?,
                master: r.session.master.name.clone(),
                version: r.session.master.version.clone(),
                start: r.session.start,
                deadline: r.deadline,
                new_bytes: r.new_bytes,
                cumulative_bytes: r.cumulative,
                failed: failed_on(site, &r.session.room, &r.session.master, failures),
                verdict,
            });
        }
    }
    Ok(out)
}

fn wire_reason(reason: plan::Reason) -> Reason {
    match reason {
        plan::Reason::Transfer => Reason::Transfer,
        plan::Reason::NoRelay => Reason::NoRelay,
        plan::Reason::RelaySilent { since } => Reason::RelaySilent { since },
    }
}
