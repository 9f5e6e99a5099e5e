//! `POST calendar/sync`: an iCalendar export made the sessions of its calendar (`db::Db::sync_ics`),
//! or, for a dry run, the difference shown and nothing changed.

use image_tools::api::{
    CalendarNote, CalendarSync, CalendarSynced, MovedSession, SyncedSession, DEFAULT_HORIZON_DAYS,
};

use super::{db_error, ok, routed, stored, Answer, Call, Reply, NO_ROUTE};
use crate::calendar::sync::{Incoming, Stored};
use crate::db::Synced;

/// The answer to `call` if it is this module's route.
pub(super) fn route(call: &Call) -> Option<Answer> {
    routed((|| match (call.method, call.path) {
        ("POST", ["v1", "calendar", "sync"]) => {
            let request: CalendarSync = call.body()?;
            let synced = call
                .db()?
                .sync_ics(
                    &request.source,
                    &request.file_name,
                    &request.bytes,
                    call.now,
                    Some(request.horizon_days.unwrap_or(DEFAULT_HORIZON_DAYS)),
                    !request.dry_run,
                )
                .map_err(db_error)?;
            let c = &synced.changes;
            tracing::info!(
                source = %request.source,
                applied = synced.applied,
                added = c.added.len(),
                moved = c.moved.len(),
                removed = c.removed.len(),
                unchanged = c.unchanged,
                past = c.past,
                cancelled = synced.cancelled,
                "calendar synced"
            );
            ok(answer(request.source, synced)?)
        }
        _ => Err(NO_ROUTE),
    })())
}

/// The typed answer of a sync.
pub(super) fn answer(source: String, s: Synced) -> Result<CalendarSynced, Reply> {
    let c = &s.changes;
    let new = |id: Option<i64>, n: &Incoming| -> Result<SyncedSession, Reply> {
        Ok(SyncedSession {
            id,
            uid: n.key.uid.clone(),
            line: Some(n.line as u64),
            site: stored(&n.session.site)?,
            room: stored(&n.session.room)?,
            master: stored(&n.session.master)?,
            version: stored(&n.session.version)?,
            start: n.session.start,
            end: n.session.end,
        })
    };
    let old = |o: &Stored| -> Result<SyncedSession, Reply> {
        Ok(SyncedSession {
            id: Some(o.id),
            uid: o.key.uid.clone(),
            line: None,
            site: stored(&o.session.site)?,
            room: stored(&o.session.room)?,
            master: stored(&o.session.master)?,
            version: stored(&o.session.version)?,
            start: o.session.start,
            end: o.session.end,
        })
    };
    Ok(CalendarSynced {
        source,
        applied: s.applied,
        added: c
            .added
            .iter()
            .enumerate()
            .map(|(i, n)| new(s.added_ids.get(i).copied(), n))
            .collect::<Result<_, _>>()?,
        moved: c
            .moved
            .iter()
            .map(|(o, n)| {
                Ok(MovedSession {
                    before: old(o)?,
                    after: new(Some(o.id), n)?,
                })
            })
            .collect::<Result<_, Reply>>()?,
        removed: c.removed.iter().map(old).collect::<Result<_, _>>()?,
        unchanged: c.unchanged as u64,
        past_skipped: c.past as u64,
        cancelled: s.cancelled as u64,
        notes: s
            .notes
            .iter()
            .map(|n| CalendarNote {
                line: n.line as u64,
                note: n.what.clone(),
            })
            .collect(),
    })
}
