//! The calendar page as HTML, pure: the upload form (admins), the emergency push form (admins and
//! operators, for their sites), the overrides in force, and what the last action did.

use std::collections::HashMap;
use std::fmt::Write;

use image_tools::api::{MasterInfo, OverrideInfo};
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
        for m in p.masters {
            let _ = write!(
                body,
                "<option value=\"{} {}\">{} {}</option>",
                esc(m.name.as_str()),
                esc(m.version.as_str()),
                esc(m.name.as_str()),
                esc(m.version.as_str())
            );
        }
        body.push_str(
            "</select><label for=\"reason\">Reason</label>\
             <input id=\"reason\" name=\"reason\" required placeholder=\"exam at 14:00 needs the fixed image\">\
             <label for=\"deadline\">Deadline</label><input id=\"deadline\" name=\"deadline\" placeholder=\"13:30\">\
             <span></span><button id=\"push\">Push</button></form></section>",
        );
    }
    body.push_str(
        "</div><h2>Overrides in force</h2><table id=\"overrides\"><tr><th>Site</th><th>Master</th>\
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
