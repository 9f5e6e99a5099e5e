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
        413 => "The request is too large: a form is at most 16 kB, a calendar file at most 4 MB, a master image at most the console's `max_upload_gb`.",
        431 => "The request's headers are too large.",
        500 => "The console failed: see the controller's log.",
        _ => "The request could not be read.",
    };
    Response::html(code, pages::problem(None, "Error", text))
}

/// Answers one request, now.
pub fn handle(console: &Console, head: &Head, body: &[u8]) -> Response {
    handle_at(console, head, body, console.api.clock.now())
}

/// Answers one request at `now` (tests move time).
pub fn handle_at(console: &Console, head: &Head, body: &[u8], now: i64) -> Response {
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
        (method, path) => match session_of(console, cookie, now) {
            Ok(session) => logged_in(console, &session, method, path, head, body, now),
            Err(response) => response,
        },
    };
    tracing::debug!(method = %head.method, path = %head.path, status = response.status, "console request");
    response
}

/// The session of the request's `cookie`, its user still as they logged in; else where to go
/// (the login page).
pub(super) fn session_of(
    console: &Console,
    cookie: Option<&str>,
    now: i64,
) -> Result<Session, Response> {
    match console
        .sessions
        .lock()
        .map_err(|_| NoSession::Unknown)
        .and_then(|mut s| s.check(cookie, now))
    {
        Err(NoSession::Expired) => Err(Response::see_other("/login?expired=1")),
        Err(NoSession::Unknown) => Err(Response::see_other("/login")),
        Ok(session) if still_valid(console, &session) => Ok(session),
        Ok(session) => {
            tracing::info!(user = %session.user.name, "console session ended: the user was changed or removed");
            if let Ok(mut s) = console.sessions.lock() {
                s.close_user(&session.user.name);
            }
            Err(Response::see_other("/login?expired=1"))
        }
    }
}

/// Whether the session's user is still as they logged in: same role, sites and password (read
/// again at every request, so that `user add` or `user remove` on a running controller acts).
fn still_valid(console: &Console, session: &Session) -> bool {
    match Db::open(&console.api.data.database()).and_then(|db| db.user(&session.user.name)) {
        Ok(Some(row)) => {
            row.password_hash == session.stamp
                && User::from_row(&row).is_ok_and(|u| u == session.user)
        }
        Ok(None) => false,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot read the users");
            false
        }
    }
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
            let stamp = hash.to_owned();
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
            let cookie = sessions.open(user, stamp, id, csrf, now);
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
        let multipart = head
            .content_type
            .as_deref()
            .and_then(|t| super::multipart::parts(t, body));
        let fields = match &multipart {
            Some(parts) => super::multipart::fields(parts),
            None => form(body),
        };
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
            ["nodes", node, action @ ("reset" | "rollback" | "wake" | "revoke")] => {
                super::fleet::act(console, session, node, action, now)
            }
            ["calendar"] => super::calendar::upload(console, session, head, body, now),
            ["masters", "import"] => {
                super::masters_import::from_path(console, session, &fields, now)
            }
            ["overrides"] => super::calendar::push(console, session, &fields, now),
            ["sessions"] => super::sessions::add(console, session, &fields, now),
            ["sessions", id, action @ ("move" | "remove")] => {
                super::sessions::act(console, session, id, action, &fields, now)
            }
            _ => not_found(session),
        };
    }
    if method != "GET" {
        return not_found(session);
    }
    match segments.as_slice() {
        [""] => board_page(console, session, now),
        ["rooms", site, room] => room_page(console, session, site, room, &head.query, now),
        ["fleet"] => super::fleet::page(console, session, &head.query, now),
        ["nodes", node, "revoke"] => super::fleet::confirm_revoke(console, session, node, now),
        ["calendar"] => super::calendar::page(console, session, &head.query, now),
        ["masters"] => super::masters::page(console, session, now),
        _ => not_found(session),
    }
}

/// 403: the user's role does not let them `what` (e.g. "approve NUCs") at `site`.
pub(super) fn refused(session: &Session, what: &str, site: &str) -> Response {
    Response::html(
        403,
        pages::problem(
            Some(session),
            "Refused",
            &format!(
                "Your role ({}) does not let you {what} at {site}.",
                session.user.role.as_str()
            ),
        ),
    )
}

pub(super) fn not_found(session: &Session) -> Response {
    Response::html(
        404,
        pages::problem(Some(session), "Not found", "There is no such page."),
    )
}

pub(super) fn failed(session: &Session, what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console: {what}");
    Response::html(
        500,
        pages::problem(Some(session), "Error", &format!("Cannot {what}: {e}")),
    )
}

/// Each site's IANA zone.
pub(super) fn zones(db: &Db) -> Result<HashMap<String, String>, crate::db::DbError> {
    Ok(db.sites()?.into_iter().map(|s| (s.name, s.tz)).collect())
}

fn board_page(console: &Console, session: &Session, now: i64) -> Response {
    let zones = match Db::open(&console.api.data.database()).and_then(|db| zones(&db)) {
        Ok(z) => z,
        Err(e) => return failed(session, "read the sites", e),
    };
    let rows = match console.week_plan(now) {
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
    let rows = match console.week_plan(now) {
        Ok(r) => r,
        Err((_, e)) => return failed(session, "compute the plan", e),
    };
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| r.site == site && r.room == room)
        .cloned()
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
        return refused(session, "approve NUCs", &site);
    }
    if let Err(e) = db.approve_node(node.as_str(), now) {
        return failed(session, "approve the NUC", e);
    }
    console.api.changed.notify_one();
    console.plan_changed();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::testing::*;
    use crate::console::users::Role;

    fn pending(c: &Console, node: &str) -> bool {
        let db = Db::open(&c.api.data.database()).unwrap();
        db.pending()
            .unwrap()
            .iter()
            .any(|p| p.node == node && p.approved_at.is_none())
    }

    #[test]
    fn pages_need_a_session_and_an_expired_one_says_so() {
        let (_d, c) = console();
        let r = get(&c, "/", "", NOW);
        assert_eq!((r.status, r.location.as_deref()), (303, Some("/login")));
        let (cookie, _) = log_in(&c, "dsi", "correct horse battery", NOW);
        assert_eq!(
            get(&c, "/rooms/lyon/salle-1", &cookie, NOW + 60).status,
            200
        );
        let r = get(&c, "/", &cookie, NOW + 60 + session::IDLE_SECS);
        assert_eq!(r.location.as_deref(), Some("/login?expired=1"));
        assert!(get(&c, "/login?expired=1", "", NOW)
            .body
            .contains("Your session ended"));
    }

    #[test]
    fn a_login_without_its_forms_token_is_refused() {
        let (_d, c) = console();
        let r = post(
            &c,
            "/login",
            "",
            "name=dsi&password=correct+horse+battery",
            NOW,
        );
        assert_eq!(r.status, 403);
        assert!(r
            .set_cookie
            .iter()
            .all(|k| !k.starts_with(&format!("{}=", session::COOKIE))));
    }

    #[test]
    fn wrong_passwords_are_braked_and_then_even_the_right_one_waits() {
        let (_d, c) = console();
        for _ in 0..session::MAX_FAILURES {
            let form = get(&c, "/login", "", NOW);
            let body = format!("name=dsi&password=nope&csrf={}", csrf(&form.body));
            let r = post(&c, "/login", &cookies(&form), &body, NOW);
            assert_eq!(r.status, 401);
            assert!(r.body.contains("Wrong user name or password."));
        }
        let form = get(&c, "/login", "", NOW);
        let body = format!(
            "name=dsi&password=correct+horse+battery&csrf={}",
            csrf(&form.body)
        );
        let r = post(&c, "/login", &cookies(&form), &body, NOW + 60);
        assert_eq!(r.status, 429);
        assert!(r.body.contains("Too many wrong passwords"), "{}", r.body);
        // After the window, the right password works.
        log_in(
            &c,
            "dsi",
            "correct horse battery",
            NOW + session::FAILURE_WINDOW_SECS + 1,
        );
    }

    #[test]
    fn an_approval_needs_the_csrf_token_and_a_role_that_acts_at_the_site() {
        let (_d, c) = console();
        let (admin, token) = log_in(&c, "dsi", "correct horse battery", NOW);
        // No token, or another's: refused, nothing changed.
        let r = post(
            &c,
            "/nodes/nuc-lyon/approve",
            &admin,
            "back=/rooms/lyon/salle-1",
            NOW,
        );
        assert_eq!(r.status, 403);
        let other = "0".repeat(64);
        let r = post(
            &c,
            "/nodes/nuc-lyon/approve",
            &admin,
            &format!("csrf={other}"),
            NOW,
        );
        assert_eq!(r.status, 403);
        assert!(pending(&c, "nuc-lyon"));

        // Read-only, with its own valid token: refused.
        let (viewer, vtoken) = log_in(&c, "viewer", "read only password", NOW);
        let r = post(
            &c,
            "/nodes/nuc-lyon/approve",
            &viewer,
            &format!("csrf={vtoken}"),
            NOW,
        );
        assert_eq!(r.status, 403);
        assert!(r.body.contains("Your role (readonly)"), "{}", r.body);
        assert!(pending(&c, "nuc-lyon"));
        // An operator of paris: lyon's NUC is not theirs (not even shown), paris's is.
        let (op, otoken) = log_in(&c, "paris-op", "operator password", NOW);
        let r = post(
            &c,
            "/nodes/nuc-lyon/approve",
            &op,
            &format!("csrf={otoken}"),
            NOW,
        );
        assert_eq!(r.status, 404);
        assert!(pending(&c, "nuc-lyon"));
        let r = post(
            &c,
            "/nodes/nuc-paris/approve",
            &op,
            &format!("csrf={otoken}"),
            NOW,
        );
        assert_eq!(r.status, 303);
        assert!(!pending(&c, "nuc-paris"));

        // The admin, with the token: approved, back to the room, which says so.
        let body = format!("csrf={token}&back=%2Frooms%2Flyon%2Fsalle-1");
        let r = post(&c, "/nodes/nuc-lyon/approve", &admin, &body, NOW);
        assert_eq!(
            r.location.as_deref(),
            Some("/rooms/lyon/salle-1?approved=nuc-lyon")
        );
        assert!(!pending(&c, "nuc-lyon"));
        let page = get(&c, "/rooms/lyon/salle-1?approved=nuc-lyon", &admin, NOW).body;
        assert!(page.contains("nuc-lyon approved"), "{page}");
        // Never back to somewhere else.
        let body = format!("csrf={token}&back=https%3A%2F%2Fevil.example%2F");
        let r = post(&c, "/nodes/nuc-paris/approve", &admin, &body, NOW);
        assert_eq!(r.location.as_deref(), Some("/?approved=nuc-paris"));
    }

    #[test]
    fn logout_ends_the_session() {
        let (_d, c) = console();
        let (cookie, token) = log_in(&c, "dsi", "correct horse battery", NOW);
        let r = post(&c, "/logout", &cookie, &format!("csrf={token}"), NOW);
        assert_eq!(r.location.as_deref(), Some("/login"));
        assert_eq!(
            get(&c, "/", &cookie, NOW).location.as_deref(),
            Some("/login")
        );
    }

    #[test]
    fn a_user_changed_or_removed_on_a_running_controller_is_logged_out() {
        let (_d, c) = console();
        let (cookie, _) = log_in(&c, "viewer", "read only password", NOW);
        let db = Db::open(&c.api.data.database()).unwrap();
        users::add(&db, "viewer", Role::ReadOnly, &[], "a new password!", NOW).unwrap();
        let r = get(&c, "/", &cookie, NOW + 1);
        assert_eq!(r.location.as_deref(), Some("/login?expired=1"));
        let (cookie, _) = log_in(&c, "dsi", "correct horse battery", NOW);
        db.remove_user("dsi").unwrap();
        assert_eq!(get(&c, "/", &cookie, NOW + 1).status, 303);
    }

    /// Whatever the method, path, query and form body, logged in or not, as admin or read-only:
    /// an answer, never a panic, and nonsense is never the controller's fault (500).
    #[test]
    fn any_request_gets_an_answer_and_never_a_500() {
        use proptest::prelude::*;
        let (_d, c) = console();
        let (admin, token) = log_in(&c, "dsi", "correct horse battery", NOW);
        let (viewer, _) = log_in(&c, "viewer", "read only password", NOW);
        let segment = prop_oneof![
            prop::sample::select(vec![
                "",
                "rooms",
                "lyon",
                "paris",
                "salle-1",
                "nodes",
                "nuc-lyon",
                "approve",
                "login",
                "logout",
                "console.css",
                "fleet",
                "calendar",
                "masters",
                "overrides",
                "sessions",
                "move",
                "remove",
                "1",
                "reset",
                "rollback",
                "wake",
                "revoke",
                "..",
                "%2F",
            ])
            .prop_map(str::to_owned),
            "[a-z0-9%./-]{0,10}",
        ];
        let path =
            proptest::collection::vec(segment, 0..4).prop_map(|s| format!("/{}", s.join("/")));
        let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", ""]);
        let body = prop_oneof![
            Just(format!("csrf={token}&back=/rooms/lyon/salle-1")),
            "[a-z=&%0-9/+]{0,40}",
        ];
        let who = prop::sample::select(vec![0usize, 1, 2]);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
        let result = runner.run(
            &(method, path, "(\\?[a-z=&]{0,12})?", body, who),
            |(method, path, query, body, who)| {
                let cookie = ["", admin.as_str(), viewer.as_str()][who];
                let target = format!("{path}{query}");
                let h = head(method, &target, cookie, body.len());
                let r = handle_at(&c, &h, body.as_bytes(), NOW + 1);
                // 400: a form refused with its reason (a calendar without its file...).
                prop_assert!(
                    matches!(r.status, 200 | 303 | 400 | 401 | 403 | 404 | 429),
                    "{method} {target} {body:?} as {who}: {} {}",
                    r.status,
                    r.body
                );
                Ok(())
            },
        );
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    #[test]
    fn a_user_sees_only_their_sites_rooms() {
        let (_d, c) = console();
        let (op, _) = log_in(&c, "paris-op", "operator password", NOW);
        assert_eq!(get(&c, "/rooms/lyon/salle-1", &op, NOW).status, 404);
        assert_eq!(get(&c, "/rooms/lyon/nowhere", &op, NOW).status, 404);
    }
}
