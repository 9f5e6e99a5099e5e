//! The calendar page as HTML, pure: the upload form (admins), the emergency push form and the
//! form that adds a session (admins and operators, for their sites), the sessions to come (with
//! Move and Remove where the user acts), the overrides in force, and what the last action did.

use std::collections::HashMap;
use std::fmt::Write;

use image_tools::api::{MasterInfo, OverrideInfo, SessionInfo, SessionOrigin};
use image_tools::local_time;

use super::html::{esc, page};
use super::session::Session;

/// What the last action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    None,
    Done(String),
    /// Refused, and why (a calendar's error names its file and line).
    Refused(String),
}

/// What the calendar page shows.
#[derive(Debug)]
pub struct CalendarPage<'a> {
    pub may_import: bool,
    /// The sites where the user may push.
    pub push_sites: Vec<&'a str>,
    pub masters: &'a [MasterInfo],
    pub overrides: Vec<&'a OverrideInfo>,
    /// The sessions not over yet at the sites the user sees, in the API's order.
    pub sessions: Vec<&'a SessionInfo>,
    /// The rooms of the sites where the user acts (suggested in the Add form).
    pub rooms: Vec<&'a str>,
    pub zones: &'a HashMap<String, String>,
    pub outcome: Outcome,
}

/// The calendar page.
pub fn calendar(session: &Session, p: &CalendarPage) -> String {
    let mut body = String::from("<h1>Calendar</h1>");
    match &p.outcome {
        Outcome::None => {}
        Outcome::Done(t) => {
            let _ = write!(body, "<p class=\"flash\" id=\"flash\">{}</p>", esc(t));
        }
        Outcome::Refused(t) => {
            let _ = write!(body, "<p class=\"problem\" id=\"error\">{}</p>", esc(t));
        }
    }
    body.push_str("<div class=\"cards\">");
    if p.may_import {
        let _ = write!(
            body,
            "<section class=\"card\"><h2>Import a calendar</h2>\
             <p class=\"muted\">A CSV file, one session a line: <code>site,room,master,version,start,end</code> \
             (times <code>YYYY-MM-DD HH:MM</code> in the site's zone), or an iCalendar (.ics) export. \
             The same as <code>nightcast calendar import</code>: a file with an error changes nothing, \
             and the error names its line.</p>\
             <form method=\"post\" action=\"/calendar\" enctype=\"multipart/form-data\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"file\" id=\"file\" name=\"file\" accept=\".csv,.ics,.txt,text/csv,text/calendar\" required> \
             <button id=\"import\">Import</button></form></section>",
            esc(&session.csrf)
        );
    }
    if !p.push_sites.is_empty() {
        let _ = write!(
            body,
            "<section class=\"card\"><h2>Push a master now</h2>\
             <p class=\"muted\">An emergency: the site's relay fetches it in the daytime, and its NUCs swap it in \
             between sessions, by the deadline (<code>HH:MM</code> today or <code>YYYY-MM-DD HH:MM</code>, \
             in the site's zone). The same as <code>nightcast override push</code>.</p>\
             <form method=\"post\" action=\"/overrides\" class=\"grid\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label for=\"site\">Site</label><select id=\"site\" name=\"site\">",
            esc(&session.csrf)
        );
        for s in &p.push_sites {
            let _ = write!(body, "<option>{}</option>", esc(s));
        }
        body.push_str(
            "</select><label for=\"master\">Master</label><select id=\"master\" name=\"master\">",
        );
        master_options(&mut body, p.masters);
        body.push_str(
            "</select><label for=\"reason\">Reason</label>\
             <input id=\"reason\" name=\"reason\" required placeholder=\"exam at 14:00 needs the fixed image\">\
             <label for=\"deadline\">Deadline</label><input id=\"deadline\" name=\"deadline\" placeholder=\"13:30\">\
             <span></span><button id=\"push\">Push</button></form></section>",
        );
    }
    if !p.push_sites.is_empty() {
        add_form(&mut body, session, p);
    }
    body.push_str("</div>");
    sessions(&mut body, session, p);
    body.push_str(
        "<h2>Overrides in force</h2><table id=\"overrides\"><tr><th>Site</th><th>Master</th>\
                   <th>Reason</th><th>By</th><th>Deadline</th><th>Until</th></tr>",
    );
    if p.overrides.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">None.</td></tr>");
    }
    for o in &p.overrides {
        let tz = p
            .zones
            .get(o.site.as_str())
            .map(String::as_str)
            .unwrap_or("UTC");
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(o.site.as_str()),
            esc(o.master.as_str()),
            esc(o.version.as_str()),
            esc(&o.reason),
            esc(&o.by),
            esc(&o
                .deadline
                .map(|d| local_time::local(d, tz))
                .unwrap_or_default()),
            esc(&local_time::local(o.until, tz)),
        );
    }
    body.push_str("</table>");
    page("Calendar", super::pages::who(session), &body)
}

/// The catalogue's masters as `<option>`s, `NAME VERSION` each.
fn master_options(body: &mut String, masters: &[MasterInfo]) {
    for m in masters {
        let (name, version) = (esc(m.name.as_str()), esc(m.version.as_str()));
        let _ = write!(
            body,
            "<option value=\"{name} {version}\">{name} {version}</option>"
        );
    }
}

/// The form that schedules a master for a course: one session.
fn add_form(body: &mut String, session: &Session, p: &CalendarPage) {
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Add a session</h2>\
         <p class=\"muted\">Schedules a master for a course: the room's NUCs run it from the start \
         (times <code>YYYY-MM-DD HH:MM</code> in the site's zone). The same as \
         <code>nightcast session add</code>.</p>\
         <form method=\"post\" action=\"/sessions\" class=\"grid\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"add-site\">Site</label><select id=\"add-site\" name=\"site\">",
        esc(&session.csrf)
    );
    for s in &p.push_sites {
        let _ = write!(body, "<option>{}</option>", esc(s));
    }
    body.push_str(
        "</select><label for=\"add-room\">Room</label>\
         <input id=\"add-room\" name=\"room\" list=\"rooms\" required><datalist id=\"rooms\">",
    );
    let mut rooms = p.rooms.clone();
    rooms.sort_unstable();
    rooms.dedup();
    for r in rooms {
        let _ = write!(body, "<option value=\"{}\">", esc(r));
    }
    body.push_str(
        "</datalist><label for=\"add-master\">Master</label><select id=\"add-master\" name=\"master\">",
    );
    master_options(body, p.masters);
    body.push_str(
        "</select><label for=\"add-start\">Start</label>\
         <input id=\"add-start\" name=\"start\" required placeholder=\"2030-01-08 08:30\">\
         <label for=\"add-end\">End</label>\
         <input id=\"add-end\" name=\"end\" required placeholder=\"2030-01-08 12:00\">\
         <span></span><button id=\"add\">Add</button></form></section>",
    );
}

/// Where a session came from, in words.
fn origin(o: &SessionOrigin) -> String {
    match o {
        SessionOrigin::Calendar { source, feed: true } => format!("feed {source}"),
        SessionOrigin::Calendar { source, .. } => format!("calendar {source}"),
        // By its name, not its path on the DSI's machine (as `nightcast session list`).
        SessionOrigin::Csv { file } => {
            format!("file {}", file.rsplit(['/', '\\']).next().unwrap_or(file))
        }
        SessionOrigin::Hand => "added by hand".into(),
        SessionOrigin::Unknown => String::new(),
    }
}

/// The sessions to come, each with Move and Remove where the user acts at its site.
fn sessions(body: &mut String, session: &Session, p: &CalendarPage) {
    body.push_str(
        "<h2>Sessions to come</h2><table id=\"sessions\"><tr><th>Site</th><th>Room</th>\
         <th>Master</th><th>From</th><th>To</th><th>Source</th><th></th></tr>",
    );
    if p.sessions.is_empty() {
        body.push_str("<tr><td colspan=\"7\" class=\"muted\">None.</td></tr>");
    }
    let csrf = esc(&session.csrf);
    for s in &p.sessions {
        let tz = p
            .zones
            .get(s.site.as_str())
            .map(String::as_str)
            .unwrap_or("UTC");
        let zone = local_time::Zone::named(tz);
        let (start, end) = (esc(&zone.time(s.start)), esc(&zone.time(s.end)));
        let id = s.id;
        let _ = write!(
            body,
            "<tr id=\"session-{id}\"><td>{}</td><td>{}</td><td>{} {}</td><td>{start}</td><td>{}</td><td>{}</td><td>",
            esc(s.site.as_str()),
            esc(s.room.as_str()),
            esc(s.master.as_str()),
            esc(s.version.as_str()),
            esc(&local_time::local(s.end, tz)),
            esc(&origin(&s.origin)),
        );
        if session.user.acts_at(s.site.as_str()) {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/sessions/{id}/move\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input name=\"start\" value=\"{start}\" size=\"16\" aria-label=\"new start\" id=\"start-{id}\">\
                 <input name=\"end\" value=\"{end}\" size=\"16\" aria-label=\"new end\" id=\"end-{id}\">\
                 <button id=\"move-{id}\">Move</button></form> \
                 <form method=\"post\" action=\"/sessions/{id}/remove\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button id=\"remove-{id}\">Remove</button></form>"
            );
        }
        body.push_str("</td></tr>");
    }
    body.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sessions_source_is_named_in_words_a_file_without_its_path() {
        let csv = |file: &str| SessionOrigin::Csv { file: file.into() };
        assert_eq!(origin(&csv("/tmp/x/term.csv")), "file term.csv");
        assert_eq!(origin(&csv("C:\\dsi\\term.csv")), "file term.csv");
        let feed = SessionOrigin::Calendar {
            source: "iut".into(),
            feed: true,
        };
        assert_eq!(origin(&feed), "feed iut");
        assert_eq!(origin(&SessionOrigin::Hand), "added by hand");
    }
}
