//! The calendar page's session actions: `POST /sessions` (schedule a master for a course: one
//! session), `POST /sessions/ID/move` (new start and end) and `POST /sessions/ID/remove`, by an
//! admin or an operator of the session's site, as `nightcast session add|move|rm` do: each goes
//! through the admin API's route (`api::call`), so its refusals read the same and change nothing.

use image_tools::api::{Done, MoveSession, NewSession, SessionInfo};

use super::calendar::{answer, render};
use super::calendar_page::Outcome;
use super::http::{field, Response};
use super::routes::{failed, not_found, refused};
use super::session::Session;
use super::Console;

/// The session `id` as the API lists it, if the user sees its site.
fn seen(console: &Console, session: &Session, id: &str) -> Result<SessionInfo, Response> {
    let sessions: Vec<SessionInfo> =
        answer(crate::api::call(&console.api, "GET", "/v1/sessions", &()))
            .map_err(|e| failed(session, "read the sessions", e))?;
    sessions
        .into_iter()
        .find(|s| s.id.to_string() == id && session.user.sees(s.site.as_str()))
        .ok_or_else(|| not_found(session))
}

/// The page again with the API's refusal, or the page that says what was done.
fn done(
    console: &Console,
    session: &Session,
    reply: crate::api::Reply,
    to: &str,
    what: &str,
    now: i64,
) -> Response {
    match answer::<Done>(reply) {
        Ok(_) => {
            console.plan_changed();
            tracing::info!(user = %session.user.name, what, "session changed from the console");
            Response::see_other(to)
        }
        Err(e) => render(
            console,
            session,
            400,
            Outcome::Refused(format!("{e}. Nothing was changed.")),
            now,
        ),
    }
}

/// `POST /sessions`: one session added.
pub fn add(
    console: &Console,
    session: &Session,
    fields: &[(String, String)],
    now: i64,
) -> Response {
    let get = |k| field(fields, k).unwrap_or("").trim();
    let site = get("site");
    if !session.user.acts_at(site) {
        return refused(session, "schedule sessions", site);
    }
    let refuse = |why: String| render(console, session, 400, Outcome::Refused(why), now);
    let Some((master, version)) = get("master").split_once(' ') else {
        return refuse("Choose a master version.".into());
    };
    let request = serde_json::json!({
        "site": site, "room": get("room"), "master": master, "version": version,
        "start": get("start"), "end": get("end"),
    });
    // Read as the typed request first: a bad name is refused with its words, as from the CLI.
    let request: NewSession = match serde_json::from_value(request) {
        Ok(r) => r,
        Err(e) => return refuse(format!("{e}. Nothing was changed.")),
    };
    let reply = crate::api::call(&console.api, "POST", "/v1/sessions", &request);
    let what = format!("added at {site}/{} from {}", request.room, request.start);
    done(console, session, reply, "/calendar?added=1", &what, now)
}

/// `POST /sessions/ID/move` and `POST /sessions/ID/remove`.
pub fn act(
    console: &Console,
    session: &Session,
    id: &str,
    action: &str,
    fields: &[(String, String)],
    now: i64,
) -> Response {
    let s = match seen(console, session, id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !session.user.acts_at(s.site.as_str()) {
        return refused(session, &format!("{action} sessions"), s.site.as_str());
    }
    let get = |k| field(fields, k).unwrap_or("").trim().to_owned();
    let url = format!("/v1/sessions/{}", s.id);
    let reply = match action {
        "move" => crate::api::call(
            &console.api,
            "POST",
            &format!("{url}/move"),
            &MoveSession {
                start: get("start"),
                end: get("end"),
            },
        ),
        _ => crate::api::call(&console.api, "DELETE", &url, &()),
    };
    let what = format!("{action} session {} at {}", s.id, s.site);
    done(
        console,
        session,
        reply,
        &format!("/calendar?{action}d={}", s.id),
        &what,
        now,
    )
}
