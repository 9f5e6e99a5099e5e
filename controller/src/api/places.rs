//! Sites (their windows, cap, takeover policy, opening for new NUCs), rooms and seats (with
//! their nodes, the spares, and the DSI's binds).

use serde_json::{json, Value};

use super::{db_error, error, query_param, routed, str_field, Answer, Call, NO_ROUTE};
use crate::db::DbError;

/// The answer to `call` if it is one of this module's routes.
pub(super) fn route(call: &Call) -> Option<Answer> {
    let (api, body, now, url) = (call.api, call.body, call.now, call.url);
    let db = || call.db();
    routed((|| match (call.method, call.path) {
        ("GET", ["v1", "sites"]) => {
            let sites = db()?.sites().map_err(db_error)?;
            Ok(json!(sites
                .iter()
                .map(|s| json!({"name": s.name, "tz": s.tz, "windows": s.windows, "cap_mbit": s.cap_mbit,
                                "takeover": s.takeover.as_str()}))
                .collect::<Vec<_>>()))
        }
        ("POST", ["v1", "sites"]) => {
            let cap = body
                .get("cap_mbit")
                .and_then(Value::as_u64)
                .ok_or_else(|| error(400, "missing number field \"cap_mbit\""))?;
            let windows = body
                .get("windows")
                .and_then(Value::as_str)
                .unwrap_or("22:00-06:00");
            let takeover = match body.get("takeover").and_then(Value::as_str) {
                Some(t) => Some(t.parse().map_err(|e| error(400, e))?),
                None => None,
            };
            db()?
                .add_site(
                    str_field(body, "name")?,
                    str_field(body, "tz")?,
                    windows,
                    cap,
                    takeover,
                )
                .map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("POST", ["v1", "rooms"]) => {
            db()?
                .add_room(str_field(body, "site")?, str_field(body, "room")?)
                .map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("POST", ["v1", "seats"]) => {
            db()?
                .add_seat(
                    str_field(body, "site")?,
                    str_field(body, "room")?,
                    str_field(body, "seat")?,
                )
                .map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("POST", ["v1", "seats", how @ ("assign" | "replace")]) => {
            let (site, room, seat, node) = (
                str_field(body, "site")?,
                str_field(body, "room")?,
                str_field(body, "seat")?,
                str_field(body, "node")?,
            );
            let bound = db()?
                .bind_seat(site, room, seat, node, *how == "replace")
                .map_err(db_error)?;
            tracing::info!(%site, %room, %seat, %node, replaced = ?bound.replaced, "seat bound by the DSI");
            Ok(
                json!({"site": site, "room": room, "seat": seat, "node": node,
                      "replaced": bound.replaced,
                      "moved_from": bound.moved_from.map(|(r, s)| format!("{r}/{s}"))}),
            )
        }
        ("GET", ["v1", "seats"]) => {
            let site = query_param(url, "site");
            let states = db()?.seat_states(site.as_deref()).map_err(db_error)?;
            if let (Some(site), true) = (&site, states.is_empty()) {
                return Err(db_error(DbError::NoSite(site.clone())));
            }
            Ok(seats_json(&states, now, api.silent_after_secs))
        }
        ("POST", ["v1", "sites", site, "accept-new"]) => {
            let minutes = body
                .get("minutes")
                .and_then(Value::as_u64)
                .ok_or_else(|| error(400, "missing number field \"minutes\" (0 closes)"))?;
            if minutes > 7 * 24 * 60 {
                return Err(error(
                    400,
                    "a site is opened for new NUCs for a week at most",
                ));
            }
            let until = now.saturating_add(minutes as i64 * 60);
            db()?.accept_new(site, until).map_err(db_error)?;
            Ok(json!({"site": site, "until": (minutes > 0).then_some(until)}))
        }
        _ => Err(NO_ROUTE),
    })())
}

/// Seats with their nodes (silent or not) and spares (whether they count, and why they wait).
fn seats_json(states: &[crate::takeover::Site], now: i64, silent_after: i64) -> Value {
    use crate::takeover::{decide, Decision};
    let mut seats = Vec::new();
    let mut spares = Vec::new();
    for site in states {
        let decisions = decide(site, now, silent_after);
        for s in &site.seats {
            seats.push(
                json!({"site": site.name, "room": s.room, "seat": s.seat, "node": s.node,
                              "last_seen": s.last_seen, "silent": s.is_silent(now, silent_after)}),
            );
        }
        for s in &site.spares {
            let decision = decisions.iter().find_map(|d| match d {
                Decision::Wait { spare, reason } if *spare == s.node => Some(reason.clone()),
                Decision::Bind {
                    spare, room, seat, ..
                } if *spare == s.node => {
                    Some(format!("takes over {room}/{seat} at the next check"))
                }
                _ => None,
            });
            let recent = s
                .last_seen
                .is_some_and(|t| now.saturating_sub(t) <= silent_after);
            spares.push(
                json!({"site": site.name, "node": s.node, "last_seen": s.last_seen,
                               "recent": recent, "waiting": decision}),
            );
        }
    }
    json!({"seats": seats, "spares": spares})
}
