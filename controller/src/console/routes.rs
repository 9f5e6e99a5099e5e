//! What each of the console's URLs does, on a blocking thread: the session checked first (every
//! page but the login and the style sheet needs one), the CSRF token of every POST, the role for
//! an action; then the database and the planner through the admin API's functions, and a page.

use std::collections::HashMap;

use image_tools::{NodeId, RoomName, SiteId};

use super::http::{field, form, Head, Response};
use super::session::{self, NoSession, Session};
use super::users::{self, User};
use super::{board, html, pages, Console};
use crate::db::Db;

/// A bare answer for a status (a request we could not read, a timeout).
pub fn status(code: u16) -> Response {
    let text = match code {
        408 => "The request took too long to arrive.",
        413 => "The request is too large.",
        431 => "The request's headers are too large.",
        500 => "The console failed: see the controller's log.",
        _ => "The request could not be read.",
    };
    Response::html(code, pages::problem(None, "Error", text))
}

/// Answers one request.
pub fn handle(console: &Console, head: &Head, body: &[u8]) -> Response {
    let now = console.api.clock.now();
    let cookie = head.cookie.as_deref();
    let response = match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/console.css") => Response {
            content_type: "text/css; charset=utf-8",
            cacheable: true,
            ..Response::html(200, html::CSS.to_owned())
        },
        ("GET", "/login") => {
            let expired = form(head.query.as_bytes())
                .iter()
                .any(|(k, _)| k == "expired");
            login_form(
                200,
                expired.then_some("Your session ended: log in again."),
                "",
            )
        }
        ("POST", "/login") => login(console, cookie, body, now),
        (method, path) => match console
            .sessions
            .lock()
            .map_err(|_| NoSession::Unknown)
            .and_then(|mut s| s.check(cookie, now))
        {
            Err(NoSession::Expired) => Response::see_other("/login?expired=1"),
            Err(NoSession::Unknown) => Response::see_other("/login"),
            Ok(session) => logged_in(console, &session, method, path, head, body, now),
        },
    };
    tracing::debug!(method = %head.method, path = %head.path, status = response.status, "console request");
    response
}

fn random_hex() -> Option<([u8; 32], String)> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some((b, image_tools::ids::hex(&b)))
}

/// The login page with a fresh form token (and its cookie).
fn login_form(code: u16, error: Option<&str>, name: &str) -> Response {
    let Some((_, token)) = random_hex() else {
        return status(500);
    };
    Response::html(code, pages::login(error, name, &token))
        .with_cookie(session::login_cookie(&token))
}

fn login(console: &Console, cookie: Option<&str>, body: &[u8], now: i64) -> Response {
    let fields = form(body);
    let name = field(&fields, "name").unwrap_or("").trim();
    let password = field(&fields, "password").unwrap_or("");
    if !session::login_token_ok(cookie, field(&fields, "csrf")) {
        return login_form(
            403,
            Some("This login form has expired: log in again."),
            name,
        );
    }
    let blocked = console
        .throttle
        .lock()
        .ok()
        .and_then(|mut t| t.blocked_until(name, now));
    if let Some(until) = blocked {
        tracing::warn!(user = %name, "console login refused: too many wrong passwords");
        let wait = board::duration(until - now + 59);
        return login_form(
            429,
            Some(&format!(
                "Too many wrong passwords for this user: try again in {wait}."
            )),
            name,
        );
    }
    let row = Db::open(&console.api.data.database()).and_then(|db| db.user(name));
    let row = match row {
        Ok(row) => row,
        Err(e) => {
            tracing::error!(error = %e, "console login: cannot read the users");
            return status(500);
        }
    };
    // An unknown name costs the same hash as a known one.
    let hash = row
        .as_ref()
        .map_or(users::DECOY, |r| r.password_hash.as_str());
    let right = users::verify(password, hash);
    let user = row.as_ref().filter(|_| right).map(User::from_row);
    match user {
        Some(Ok(user)) => {
            if let Ok(mut t) = console.throttle.lock() {
                t.succeeded(name);
            }
            let (Some((id, _)), Some((csrf, _))) = (random_hex(), random_hex()) else {
                return status(500);
            };
            tracing::info!(user = %user.name, role = user.role.as_str(), "console login");
            let Ok(mut sessions) = console.sessions.lock() else {
                return status(500);
            };
            let cookie = sessions.open(user, id, csrf, now);
            Response::see_other("/")
                .with_cookie(cookie)
                .with_cookie(session::login_cookie_removed())
        }
        Some(Err(e)) => {
            tracing::error!(user = %name, error = %e, "console login: the stored user is not valid");
            status(500)
        }
        None => {
            if let Ok(mut t) = console.throttle.lock() {
                t.failed(name, now);
            }
            tracing::warn!(user = %name, "console login: wrong user name or password");
            login_form(401, Some("Wrong user name or password."), name)
        }
    }
}

fn logged_in(
    console: &Console,
    session: &Session,
    method: &str,
    path: &str,
    head: &Head,
    body: &[u8],
    now: i64,
) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method == "POST" {
        let fields = form(body);
        if !session::csrf_ok(session, field(&fields, "csrf")) {
            tracing::warn!(user = %session.user.name, %path, "console: POST without this session's CSRF token");
            return Response::html(
                403,
                pages::problem(
                    Some(session),
                    "Refused",
                    "This form was not this session's (CSRF token): reload the page and try again.",
                ),
            );
        }
        return match segments.as_slice() {
            ["logout"] => {
                let cookie = console
                    .sessions
                    .lock()
                    .map(|mut s| s.close(head.cookie.as_deref()))
                    .unwrap_or_default();
                Response::see_other("/login").with_cookie(cookie)
            }
            ["nodes", node, "approve"] => approve(console, session, node, &fields, now),
            _ => not_found(session),
        };
    }
    if method != "GET" {
        return not_found(session);
    }
    match segments.as_slice() {
        [""] => board_page(console, session, now),
        ["rooms", site, room] => room_page(console, session, site, room, &head.query, now),
        _ => not_found(session),
    }
}

fn not_found(session: &Session) -> Response {
    Response::html(
        404,
        pages::problem(Some(session), "Not found", "There is no such page."),
    )
}

fn failed(session: &Session, what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console: {what}");
    Response::html(
        500,
        pages::problem(Some(session), "Error", &format!("Cannot {what}: {e}")),
    )
}

/// Each site's IANA zone.
fn zones(db: &Db) -> Result<HashMap<String, String>, crate::db::DbError> {
    Ok(db.sites()?.into_iter().map(|s| (s.name, s.tz)).collect())
}

fn board_page(console: &Console, session: &Session, now: i64) -> Response {
    let zones = match Db::open(&console.api.data.database()).and_then(|db| zones(&db)) {
        Ok(z) => z,
        Err(e) => return failed(session, "read the sites", e),
    };
    let rows = match crate::api::plan_rows_now(&console.api, now) {
        Ok(r) => r,
        Err((_, e)) => return failed(session, "compute the plan", e),
    };
    let html = render_board(&rows, &zones, &session.user, session, now);
    Response::html(200, html)
}

/// The board's page for `rows` (the planner bench times this against the plan's JSON).
pub fn render_board(
    rows: &[image_tools::api::PlanRow],
    zones: &HashMap<String, String>,
    user: &User,
    session: &Session,
    now: i64,
) -> String {
    let zone = |site: &str| zones.get(site).cloned().unwrap_or_default();
    let rooms = board::board(rows, &zone, user, now);
    let (rooms, folded) = board::fold(rooms, board::MAX_FULL_LINES);
    pages::board(session, &rooms, &folded, now)
}

fn room_page(
    console: &Console,
    session: &Session,
    site: &str,
    room: &str,
    query: &str,
    now: i64,
) -> Response {
    let (Ok(site), Ok(room)) = (site.parse::<SiteId>(), room.parse::<RoomName>()) else {
        return not_found(session);
    };
    if !session.user.sees(site.as_str()) {
        return not_found(session);
    }
    let db = match Db::open(&console.api.data.database()) {
        Ok(db) => db,
        Err(e) => return failed(session, "open the catalogue", e),
    };
    let known = db.rooms(Some(site.as_str()), now).map(|rooms| {
        rooms
            .iter()
            .any(|r| r.site == site.as_str() && r.room == room.as_str())
    });
    match known {
        Ok(true) => {}
        Ok(false) => return not_found(session),
        Err(e) => return failed(session, "read the rooms", e),
    }
    let tz = match zones(&db) {
        Ok(z) => z.get(site.as_str()).cloned().unwrap_or_default(),
        Err(e) => return failed(session, "read the sites", e),
    };
    let fleet = match crate::api::fleet_rows(&db, now, console.api.silent_after_secs) {
        Ok(f) => f,
        Err((_, e)) => return failed(session, "read the fleet", e),
    };
    let rows = match crate::api::plan_rows_now(&console.api, now) {
        Ok(r) => r,
        Err((_, e)) => return failed(session, "compute the plan", e),
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| r.site == site && r.room == room)
        .collect();
    let zone = |_: &str| tz.clone();
    let rooms = board::board(&rows, &zone, &session.user, now);
    let prefix = format!("{}/", room.as_str());
    let nucs = fleet
        .iter()
        .filter(|n| n.site == site && n.seat.starts_with(&prefix))
        .collect();
    let pending = fleet
        .iter()
        .filter(|n| n.site == site && n.enrolled_at.is_none())
        .collect();
    let approved = form(query.as_bytes())
        .into_iter()
        .find(|(k, _)| k == "approved")
        .map(|(_, node)| format!("{node} approved: it gets its certificate at its next request."));
    let page = pages::RoomPage {
        site: site.as_str(),
        room: room.as_str(),
        tz: &tz,
        board: rooms.first(),
        nucs,
        pending,
        may_act: session.user.acts_at(site.as_str()),
        flash: approved.as_deref(),
    };
    Response::html(200, pages::room(session, &page))
}

fn approve(
    console: &Console,
    session: &Session,
    node: &str,
    fields: &[(String, String)],
    now: i64,
) -> Response {
    let Ok(node) = node.parse::<NodeId>() else {
        return not_found(session);
    };
    let db = match Db::open(&console.api.data.database()) {
        Ok(db) => db,
        Err(e) => return failed(session, "open the catalogue", e),
    };
    let site = match db.pending() {
        Ok(p) => p
            .into_iter()
            .find(|p| p.node == node.as_str())
            .map(|p| p.site),
        Err(e) => return failed(session, "read the enrolment requests", e),
    };
    let Some(site) = site.filter(|s| session.user.sees(s)) else {
        return not_found(session);
    };
    if !session.user.acts_at(&site) {
        tracing::warn!(user = %session.user.name, %node, %site, "console: approval refused to a {} user", session.user.role.as_str());
        return Response::html(
            403,
            pages::problem(
                Some(session),
                "Refused",
                &format!(
                    "Your role ({}) does not let you approve NUCs at {site}.",
                    session.user.role.as_str()
                ),
            ),
        );
    }
    if let Err(e) = db.approve_node(node.as_str(), now) {
        return failed(session, "approve the NUC", e);
    }
    console.api.changed.notify_one();
    tracing::info!(user = %session.user.name, %node, %site, "NUC approved from the console");
    let back = field(fields, "back")
        .filter(|b| {
            b.starts_with("/rooms/")
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"/-._".contains(&c))
        })
        .unwrap_or("/");
    Response::see_other(&format!("{back}?approved={}", html::seg(node.as_str())))
}
