//! `POST calendar/sync`: an iCalendar export made the sessions of its calendar (`db::Db::sync_ics`),
//! or, for a dry run, the difference shown and nothing changed. `calendar/rules`: the mapping
//! rules it reads events through (`db::Db::add_rule`, `rules`, `remove_rule`).
//! `calendar/feeds`: the subscribed feeds `crate::feeds` polls, and how their last poll went.

use image_tools::api::{
    CalendarNote, CalendarSync, CalendarSynced, Done, FeedInfo, MappingRule, MovedSession, NewFeed,
    NewMappingRule, SyncedSession, UnmatchedEvent, DEFAULT_HORIZON_DAYS,
};

use super::{db_error, error, ok, routed, stored, Answer, Call, Reply, NO_ROUTE};
use crate::calendar::mapping::Target;
use crate::calendar::sync::{Incoming, Stored};
use crate::db::{Apply, FeedRow, RuleRow, Synced};

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
                    match (request.dry_run, request.partial) {
                        (true, _) => Apply::DryRun,
                        (false, false) => Apply::Whole,
                        (false, true) => Apply::Partial,
                    },
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
                unmatched = synced.unmatched.len(),
                "calendar synced"
            );
            ok(answer(request.source, synced)?)
        }
        ("GET", ["v1", "calendar", "rules"]) => {
            let rules = call.db()?.rules().map_err(db_error)?;
            ok(rules
                .iter()
                .map(|r| rule(r, None))
                .collect::<Result<Vec<_>, _>>()?)
        }
        ("POST", ["v1", "calendar", "rules"]) => {
            let request: NewMappingRule = call.body()?;
            let (kind, pattern, target) = match &request {
                NewMappingRule::Title {
                    pattern,
                    master,
                    version,
                }
                | NewMappingRule::Category {
                    name: pattern,
                    master,
                    version,
                } => (
                    match request {
                        NewMappingRule::Title { .. } => "title",
                        _ => "category",
                    },
                    pattern,
                    Target::Master {
                        name: master.to_string(),
                        version: version.to_string(),
                    },
                ),
                NewMappingRule::Location {
                    pattern,
                    site,
                    room,
                } => (
                    "location",
                    pattern,
                    Target::Place {
                        site: site.to_string(),
                        room: room.to_string(),
                    },
                ),
            };
            let (added, replaced) = call
                .db()?
                .add_rule(kind, pattern, &target)
                .map_err(db_error)?;
            tracing::info!(id = added.id, kind, pattern = %added.pattern, "calendar rule written");
            ok(rule(&added, replaced.as_ref())?)
        }
        ("GET", ["v1", "calendar", "feeds"]) => {
            let feeds = call.db()?.feeds().map_err(db_error)?;
            let poll = call.api.feed_poll_minutes;
            ok(feeds.iter().map(|f| feed(f, poll)).collect::<Vec<_>>())
        }
        ("POST", ["v1", "calendar", "feeds"]) => {
            let request: NewFeed = call.body()?;
            let made = call
                .db()?
                .add_feed(
                    &request.source,
                    &request.url,
                    request.partial,
                    request.horizon_days.unwrap_or(DEFAULT_HORIZON_DAYS),
                    call.now,
                )
                .map_err(db_error)?;
            tracing::info!(source = %made.source, url = %made.url, "calendar feed subscribed");
            ok(feed(&made, call.api.feed_poll_minutes))
        }
        ("DELETE", ["v1", "calendar", "feeds", source]) => {
            call.db()?.remove_feed(source).map_err(db_error)?;
            tracing::info!(source, "calendar feed unsubscribed");
            ok(Done::YES)
        }
        ("DELETE", ["v1", "calendar", "rules", id]) => {
            let id: i64 = id
                .parse()
                .map_err(|_| error(400, format!("rule id {id:?}: give a number")))?;
            call.db()?.remove_rule(id).map_err(db_error)?;
            tracing::info!(id, "calendar rule removed");
            ok(Done::YES)
        }
        _ => Err(NO_ROUTE),
    })())
}

/// A feed as the API gives it.
fn feed(f: &FeedRow, poll_minutes: u32) -> FeedInfo {
    FeedInfo {
        source: f.source.clone(),
        url: f.url.clone(),
        partial: f.partial,
        horizon_days: f.horizon_days,
        poll_minutes,
        last_poll: f.last_poll,
        last_ok: f.last_ok,
        last_result: f.last_result.clone(),
        last_error: f.last_error.clone(),
    }
}

/// A rule as the API gives it.
fn rule(r: &RuleRow, replaced: Option<&RuleRow>) -> Result<MappingRule, Reply> {
    let typed = |r: &RuleRow| -> Result<NewMappingRule, Reply> {
        Ok(match (&r.target, r.kind.as_str()) {
            (Target::Place { site, room }, _) => NewMappingRule::Location {
                pattern: r.pattern.clone(),
                site: stored(site)?,
                room: stored(room)?,
            },
            (Target::Master { name, version }, "category") => NewMappingRule::Category {
                name: r.pattern.clone(),
                master: stored(name)?,
                version: stored(version)?,
            },
            (Target::Master { name, version }, _) => NewMappingRule::Title {
                pattern: r.pattern.clone(),
                master: stored(name)?,
                version: stored(version)?,
            },
        })
    };
    Ok(MappingRule {
        id: r.id,
        rule: typed(r)?,
        replaced: replaced.map(typed).transpose()?,
    })
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
        unmatched: s
            .unmatched
            .iter()
            .map(|u| UnmatchedEvent {
                line: u.line as u64,
                uid: u.uid.clone(),
                title: u.title.clone(),
                location: u.location.clone(),
                why: u.why.clone(),
            })
            .collect(),
    })
}
