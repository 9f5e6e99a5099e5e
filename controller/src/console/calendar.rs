//! The calendar page's URLs: `GET /calendar`; `POST /calendar` (a CSV or iCalendar file,
//! multipart, admins only: a file may name any site) imported as `nightcast calendar import` does,
//! with the same line-numbered errors and nothing changed on error; `POST /overrides` (an
//! emergency push with its reason and deadline, by an admin or an operator of the site) as
//! `nightcast override push` does. Both go through the admin API's routes (`api::call`).

use image_tools::api::{
    CalendarFile, CalendarImported, MasterInfo, NewOverride, OverrideInfo, OverrideMade,
    SessionInfo,
};
use serde::de::DeserializeOwned;

use super::calendar_page::{self, CalendarPage, Outcome};
use super::http::{field, form, Head, Response};
use super::multipart;
use super::routes::{failed, zones};
use super::session::Session;
use super::users::Role;
use super::Console;
use crate::db::Db;

/// An admin API answer as its type, or its error's words.
pub(super) fn answer<T: DeserializeOwned>((status, body): crate::api::Reply) -> Result<T, String> {
    if status == 200 {
        return serde_json::from_value(body).map_err(|e| format!("unreadable answer: {e}"));
    }
    Err(body["error"]
        .as_str()
        .map_or_else(|| format!("error {status}"), str::to_owned))
}

/// Whether `text` is a calendar of either kind, and which (`.ics`: iCalendar), by its name first,
/// then by its first line.
fn kind(file_name: &str, text: &str) -> Option<&'static str> {
    let lower = file_name.to_ascii_lowercase();
    let first = text.trim_start_matches('\u{feff}').trim_start();
    if lower.ends_with(".ics") || first.starts_with("BEGIN:VCALENDAR") {
        Some(".ics")
    } else if lower.ends_with(".csv") || lower.ends_with(".txt") {
        Some(".csv")
    } else {
        None
    }
}

/// The file's name as the API takes it (`.ics` decides iCalendar there): its last path segment,
/// given the ending of its kind.
fn api_name(file_name: &str, ending: &str) -> String {
    let base = file_name
        .rsplit(['/', '\\'])
        .next()
        .filter(|b| !b.is_empty())
        .unwrap_or("upload");
    if base.to_ascii_lowercase().ends_with(ending) {
        base.to_owned()
    } else {
        format!("{base}{ending}")
    }
}

/// `POST /calendar`: the uploaded file imported, or why not (nothing changed).
pub fn upload(
    console: &Console,
    session: &Session,
    head: &Head,
    body: &[u8],
    now: i64,
) -> Response {
    if session.user.role != Role::Admin {
        return super::routes::refused(
            session,
            "import calendars (a file may name any site)",
            "any site",
        );
    }
    let parts = head
        .content_type
        .as_deref()
        .and_then(|t| multipart::parts(t, body))
        .unwrap_or_default();
    let file = parts
        .iter()
        .find(|p| p.name == "file" && p.filename.as_deref().is_some_and(|f| !f.is_empty()));
    let outcome = match file {
        None => Outcome::Refused("Choose a calendar file (.csv or .ics) first.".into()),
        Some(f) => {
            let name = f.filename.clone().unwrap_or_default();
            match std::str::from_utf8(&f.data).ok().map(|t| (t, kind(&name, t))) {
                None => Outcome::Refused(format!(
                    "{name} is not a calendar: it is not text (a .csv or .ics file, in UTF-8). Nothing was changed."
                )),
                Some((_, None)) => Outcome::Refused(format!(
                    "{name} is not a calendar: a .csv file (site,room,master,version,start,end) or an .ics export. Nothing was changed."
                )),
                Some((text, Some(ending))) => {
                    let request = CalendarFile {
                        file_name: api_name(&name, ending),
                        text: text.to_owned(),
                    };
                    let reply = crate::api::call(&console.api, "POST", "/v1/calendar", &request);
                    match answer::<CalendarImported>(reply) {
                        Ok(done) => {
                            console.plan_changed();
                            tracing::info!(user = %session.user.name, file = %request.file_name, sessions = done.imported, "calendar imported from the console");
                            return Response::see_other(&format!(
                                "/calendar?imported={}&file={}",
                                done.imported,
                                super::html::seg(&request.file_name)
                            ));
                        }
                        Err(e) => Outcome::Refused(format!("{e}. Nothing was changed.")),
                    }
                }
            }
        }
    };
    render(console, session, 400, outcome, now)
}

/// `POST /overrides`: an emergency push to one site, with its reason and deadline.
pub fn push(
    console: &Console,
    session: &Session,
    fields: &[(String, String)],
    now: i64,
) -> Response {
    let get = |k| field(fields, k).unwrap_or("").trim();
    let site = get("site");
    if !session.user.acts_at(site) {
        return super::routes::refused(session, "push masters", site);
    }
    let Some((master, version)) = get("master").split_once(' ') else {
        return render(
            console,
            session,
            400,
            Outcome::Refused("Choose a master version.".into()),
            now,
        );
    };
    let request = serde_json::json!({
        "site": site,
        "master": master,
        "version": version,
        "reason": get("reason"),
        "by": session.user.name,
        "deadline": Some(get("deadline")).filter(|d| !d.is_empty()),
    });
    // Read as the typed request first: a bad field is refused with its name, as from the CLI.
    let request: NewOverride = match serde_json::from_value(request) {
        Ok(r) => r,
        Err(e) => return render(console, session, 400, Outcome::Refused(format!("{e}")), now),
    };
    match answer::<OverrideMade>(crate::api::call(
        &console.api,
        "POST",
        "/v1/overrides",
        &request,
    )) {
        Ok(made) => {
            console.plan_changed();
            tracing::warn!(user = %session.user.name, %site, master, version, "emergency push from the console");
            Response::see_other(&format!("/calendar?pushed={}", made.id))
        }
        Err(e) => render(
            console,
            session,
            400,
            Outcome::Refused(format!("{e}. Nothing was pushed.")),
            now,
        ),
    }
}

/// `GET /calendar[?imported=N&file=F|?pushed=ID|?added=1|?moved=ID|?removed=ID]`.
pub fn page(console: &Console, session: &Session, query: &str, now: i64) -> Response {
    let q = form(query.as_bytes());
    let outcome = match (
        field(&q, "imported"),
        field(&q, "file"),
        field(&q, "pushed"),
    ) {
        (Some(n), Some(f), _) if n.parse::<u64>().is_ok() => Outcome::Done(format!(
            "{f}: {n} session{} imported.",
            if n == "1" { "" } else { "s" }
        )),
        (_, _, Some(id)) if id.parse::<u64>().is_ok() => Outcome::Done(format!(
            "Push {id} recorded: the site's relay fetches it now, in the daytime."
        )),
        _ => match (
            field(&q, "added"),
            field(&q, "moved").or(field(&q, "removed")),
        ) {
            (Some(_), _) => Outcome::Done("Session added.".into()),
            (_, Some(id)) if id.parse::<u64>().is_ok() => Outcome::Done(format!(
                "Session {id} {}.",
                if field(&q, "moved").is_some() {
                    "moved"
                } else {
                    "removed"
                }
            )),
            _ => Outcome::None,
        },
    };
    render(console, session, 200, outcome, now)
}

pub(super) fn render(
    console: &Console,
    session: &Session,
    status: u16,
    outcome: Outcome,
    now: i64,
) -> Response {
    let db = match Db::open(&console.api.data.database()) {
        Ok(db) => db,
        Err(e) => return failed(session, "open the catalogue", e),
    };
    let zones = match zones(&db) {
        Ok(z) => z,
        Err(e) => return failed(session, "read the sites", e),
    };
    let masters: Vec<MasterInfo> =
        match answer(crate::api::call(&console.api, "GET", "/v1/masters", &())) {
            Ok(m) => m,
            Err(e) => return failed(session, "read the masters", e),
        };
    let overrides: Vec<OverrideInfo> =
        match answer(crate::api::call(&console.api, "GET", "/v1/overrides", &())) {
            Ok(o) => o,
            Err(e) => return failed(session, "read the overrides", e),
        };
    let sessions: Vec<SessionInfo> =
        match answer(crate::api::call(&console.api, "GET", "/v1/sessions", &())) {
            Ok(s) => s,
            Err(e) => return failed(session, "read the sessions", e),
        };
    let rooms = match db.rooms(None, now) {
        Ok(r) => r,
        Err(e) => return failed(session, "read the rooms", e),
    };
    let mut sites: Vec<&str> = zones
        .keys()
        .map(String::as_str)
        .filter(|s| session.user.sees(s))
        .collect();
    sites.sort_unstable();
    let acts: Vec<&str> = sites
        .iter()
        .copied()
        .filter(|s| session.user.acts_at(s))
        .collect();
    let p = CalendarPage {
        may_import: session.user.role == Role::Admin,
        push_sites: acts,
        masters: &masters,
        overrides: overrides
            .iter()
            .filter(|o| session.user.sees(o.site.as_str()))
            .collect(),
        sessions: sessions
            .iter()
            .filter(|s| s.end > now && session.user.sees(s.site.as_str()))
            .collect(),
        rooms: rooms
            .iter()
            .filter(|r| session.user.acts_at(&r.site))
            .map(|r| r.room.as_str())
            .collect(),
        zones: &zones,
        outcome,
    };
    Response::html(status, calendar_page::calendar(session, &p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calendar_is_known_by_its_name_or_its_first_line() {
        assert_eq!(kind("term.CSV", "site,room"), Some(".csv"));
        assert_eq!(kind("export", "\u{feff}BEGIN:VCALENDAR\r\n"), Some(".ics"));
        assert_eq!(kind("photo.png", "\u{89}PNG"), None);
        assert_eq!(api_name("C:\\Users\\dsi\\term.csv", ".csv"), "term.csv");
        assert_eq!(api_name("export", ".ics"), "export.ics");
    }
}
