//! Sites (their windows, cap, takeover policy, opening for new NUCs), rooms and seats (with
//! their nodes, the spares, and the DSI's binds); added, changed (a site, only what is given),
//! listed and removed (refused while in use unless forced: `db::removal`).

use image_tools::api::{
    AcceptNew, AcceptingNew, Done, Link, NewRoom, NewSeat, NewSite, PlaceRemoved, RoomInfo,
    SeatBind, SeatBound, SeatState, Seats, SiteChange, SiteInfo, SpareState, Takeover,
};
use image_tools::{RoomName, SeatName, SiteId};

use super::{
    db_error, error, ok, path_id, query_param, routed, stored, Answer, Call, Reply, NO_ROUTE,
};
use crate::db::DbError;
use crate::takeover::Policy;

/// The answer to `call` if it is one of this module's routes.
pub(super) fn route(call: &Call) -> Option<Answer> {
    let (api, now, url) = (call.api, call.now, call.url);
    let db = || call.db();
    routed((|| match (call.method, call.path) {
        ("GET", ["v1", "sites"]) => {
            let sites = db()?.sites().map_err(db_error)?;
            let sites = sites
                .iter()
                .map(|s| site_info(s, api.far_port))
                .collect::<Result<Vec<_>, Reply>>()?;
            ok(sites)
        }
        ("POST", ["v1", "sites"]) => {
            let site: NewSite = call.body()?;
            let policy = site.takeover.map(policy);
            let mut db = db()?;
            db.add_site(
                site.name.as_str(),
                &site.tz,
                &site.windows,
                site.cap_mbit,
                policy,
            )
            .map_err(db_error)?;
            if let Some(link) = site.link {
                let change = crate::db::SiteChange {
                    link: Some(link),
                    ..Default::default()
                };
                let row = db.set_site(site.name.as_str(), &change).map_err(db_error)?;
                far_without_port(&row, api.far_port);
            }
            ok(Done::YES)
        }
        ("PATCH", ["v1", "sites", site]) => {
            let site: SiteId = path_id(site)?;
            let change: SiteChange = call.body()?;
            let change = crate::db::SiteChange {
                tz: change.tz,
                windows: change.windows,
                cap_mbit: change.cap_mbit,
                takeover: change.takeover.map(policy),
                emergency_cap_mbit: change.emergency_cap_mbit,
                usb: change.usb,
                peer_upload_mbit: change.peer_upload_mbit,
                peer_share_in_session: change.peer_share_in_session,
                link: change.link,
            };
            let row = db()?.set_site(site.as_str(), &change).map_err(db_error)?;
            tracing::info!(%site, tz = %row.tz, windows = %row.windows, cap_mbit = row.cap_mbit, link = %row.link, "site changed");
            far_without_port(&row, api.far_port);
            ok(site_info(&row, api.far_port)?)
        }
        ("DELETE", ["v1", "sites", site]) => {
            let site: SiteId = path_id(site)?;
            let removal = db()?
                .remove_site(site.as_str(), force(url)?, now)
                .map_err(db_error)?;
            tracing::warn!(%site, ?removal, "site removed");
            ok(removed(site, None, None, &removal)?)
        }
        ("GET", ["v1", "rooms"]) => {
            let site = query_param(url, "site")
                .map(|s| path_id::<SiteId>(&s))
                .transpose()?;
            let db = db()?;
            if let Some(site) = &site {
                known_site(&db, site)?;
            }
            let rooms = db
                .rooms(site.as_ref().map(SiteId::as_str), now)
                .map_err(db_error)?;
            let rooms = rooms
                .iter()
                .map(|r| {
                    Ok(RoomInfo {
                        site: stored(&r.site)?,
                        room: stored(&r.room)?,
                        seats: r.seats,
                        upcoming_sessions: r.upcoming_sessions,
                    })
                })
                .collect::<Result<Vec<_>, Reply>>()?;
            ok(rooms)
        }
        ("DELETE", ["v1", "rooms", site, room]) => {
            let (site, room): (SiteId, RoomName) = (path_id(site)?, path_id(room)?);
            let removal = db()?
                .remove_room(site.as_str(), room.as_str(), force(url)?)
                .map_err(db_error)?;
            tracing::warn!(%site, %room, ?removal, "room removed");
            ok(removed(site, Some(room), None, &removal)?)
        }
        ("DELETE", ["v1", "seats", site, room, seat]) => {
            let (site, room, seat): (SiteId, RoomName, SeatName) =
                (path_id(site)?, path_id(room)?, path_id(seat)?);
            let removal = db()?
                .remove_seat(site.as_str(), room.as_str(), seat.as_str(), force(url)?)
                .map_err(db_error)?;
            tracing::warn!(%site, %room, %seat, ?removal, "seat removed");
            ok(removed(site, Some(room), Some(seat), &removal)?)
        }
        ("POST", ["v1", "rooms"]) => {
            let room: NewRoom = call.body()?;
            db()?
                .add_room(room.site.as_str(), room.room.as_str())
                .map_err(db_error)?;
            ok(Done::YES)
        }
        ("POST", ["v1", "seats"]) => {
            let seat: NewSeat = call.body()?;
            db()?
                .add_seat(seat.site.as_str(), seat.room.as_str(), seat.seat.as_str())
                .map_err(db_error)?;
            ok(Done::YES)
        }
        ("POST", ["v1", "seats", how @ ("assign" | "replace")]) => {
            let SeatBind {
                site,
                room,
                seat,
                node,
            } = call.body()?;
            let bound = db()?
                .bind_seat(
                    site.as_str(),
                    room.as_str(),
                    seat.as_str(),
                    node.as_str(),
                    *how == "replace",
                )
                .map_err(db_error)?;
            tracing::info!(%site, %room, %seat, %node, replaced = ?bound.replaced, "seat bound by the DSI");
            ok(SeatBound {
                replaced: bound.replaced.as_deref().map(stored).transpose()?,
                moved_from: bound.moved_from.map(|(r, s)| format!("{r}/{s}")),
                site,
                room,
                seat,
                node,
            })
        }
        ("GET", ["v1", "seats"]) => {
            let site = query_param(url, "site")
                .map(|s| path_id::<SiteId>(&s))
                .transpose()?;
            let site = site.as_ref().map(SiteId::as_str);
            let states = db()?.seat_states(site).map_err(db_error)?;
            if let (Some(site), true) = (site, states.is_empty()) {
                return Err(db_error(DbError::NoSite(site.to_owned())));
            }
            ok(seats(&states, now, api.silent_after_secs)?)
        }
        ("POST", ["v1", "sites", site, "accept-new"]) => {
            let site: SiteId = path_id(site)?;
            let AcceptNew { minutes } = call.body()?;
            if minutes > 7 * 24 * 60 {
                return Err(error(
                    400,
                    "a site is opened for new NUCs for a week at most",
                ));
            }
            let until = now.saturating_add(minutes as i64 * 60);
            db()?.accept_new(site.as_str(), until).map_err(db_error)?;
            ok(AcceptingNew {
                site,
                until: (minutes > 0).then_some(until),
            })
        }
        _ => Err(NO_ROUTE),
    })())
}

fn policy(t: Takeover) -> Policy {
    match t {
        Takeover::Auto => Policy::Auto,
        Takeover::Confirm => Policy::Confirm,
    }
}

/// Logs a far site that the controller cannot serve as such (no `far_listen`).
fn far_without_port(s: &crate::db::SiteRow, far_port: Option<u16>) {
    if s.link == Link::Far && far_port.is_none() {
        tracing::warn!(site = %s.name, "the site's link is far, but this controller has no `far_listen`: its relay keeps fetching through `listen` until far_listen is configured");
    }
}

/// The site as the API shows it; `far_port`: the controller's `far_listen` port, if any.
fn site_info(s: &crate::db::SiteRow, far_port: Option<u16>) -> Result<SiteInfo, Reply> {
    Ok(SiteInfo {
        name: stored(&s.name)?,
        tz: s.tz.clone(),
        windows: s.windows.clone(),
        cap_mbit: s.cap_mbit,
        takeover: match s.takeover {
            Policy::Auto => Takeover::Auto,
            Policy::Confirm => Takeover::Confirm,
        },
        emergency_cap_mbit: s.emergency_cap_mbit,
        usb: s.usb,
        peer_upload_mbit: s.peer_upload_mbit,
        peer_share_in_session: s.peer_share_in_session,
        link: s.link,
        far_port: s.link.far_port(far_port),
    })
}

/// `?force=true` (or `false`, the default) of a removal.
fn force(url: &str) -> Result<bool, Reply> {
    match query_param(url, "force").as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(error(400, format!("force={other}: expected true or false"))),
    }
}

fn removed(
    site: SiteId,
    room: Option<RoomName>,
    seat: Option<SeatName>,
    r: &crate::db::Removal,
) -> Result<PlaceRemoved, Reply> {
    let nodes = |v: &[String]| v.iter().map(|n| stored(n)).collect::<Result<Vec<_>, _>>();
    Ok(PlaceRemoved {
        site,
        room,
        seat,
        rooms: r.rooms,
        seats: r.seats,
        sessions: r.sessions,
        unseated: nodes(&r.unseated)?,
        nodes_removed: nodes(&r.nodes)?,
    })
}

/// `Ok` if `site` is in the catalogue; else a 404 that lists the sites there are.
pub(super) fn known_site(db: &crate::db::Db, site: &SiteId) -> Result<(), Reply> {
    let sites = db.sites().map_err(db_error)?;
    if sites.iter().any(|s| s.name == site.as_str()) {
        return Ok(());
    }
    let known = if sites.is_empty() {
        "there is no site yet: add one with `nightcast site add`".to_owned()
    } else {
        let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
        format!(
            "the sites are: {} (`nightcast site list`)",
            names.join(", ")
        )
    };
    Err(error(404, format!("no site {:?}: {known}", site.as_str())))
}

/// Seats with their nodes (silent or not) and spares (whether they count, and why they wait).
fn seats(states: &[crate::takeover::Site], now: i64, silent_after: i64) -> Result<Seats, Reply> {
    use crate::takeover::{decide, Decision};
    let mut out = Seats {
        seats: Vec::new(),
        spares: Vec::new(),
    };
    for site in states {
        let decisions = decide(site, now, silent_after);
        for s in &site.seats {
            out.seats.push(SeatState {
                site: stored(&site.name)?,
                room: stored(&s.room)?,
                seat: stored(&s.seat)?,
                node: s.node.as_deref().map(stored).transpose()?,
                last_seen: s.last_seen,
                silent: s.is_silent(now, silent_after),
            });
        }
        for s in &site.spares {
            let waiting = decisions.iter().find_map(|d| match d {
                Decision::Wait { spare, reason } if *spare == s.node => Some(reason.clone()),
                Decision::Bind {
                    spare, room, seat, ..
                } if *spare == s.node => {
                    Some(format!("takes over {room}/{seat} at the next check"))
                }
                _ => None,
            });
            out.spares.push(SpareState {
                site: stored(&site.name)?,
                node: stored(&s.node)?,
                last_seen: s.last_seen,
                recent: s
                    .last_seen
                    .is_some_and(|t| now.saturating_sub(t) <= silent_after),
                waiting,
            });
        }
    }
    Ok(out)
}
