//! The masters page as HTML, pure: the import forms (not for read-only users), the imports under
//! way with their progress and the console's last ones as they ended (the page reloads itself
//! every `REFRESH_SECS` while one is under way, no script), and each version with what it costs
//! each site (`crate::cost`).

use std::collections::BTreeMap;
use std::fmt::Write;

use image_tools::api::{ImportProgress, MasterInfo, SiteCost};

use super::board::{bytes, duration};
use super::html::{esc, page};
use super::session::Session;
use super::users::Role;
use crate::imports::FromConsole;

/// How often the page reloads itself while an import is under way.
pub const REFRESH_SECS: u32 = 2;

/// Where a master version is held at one site.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    pub relay: bool,
    pub nucs: usize,
}

/// One master version's line.
#[derive(Debug)]
pub struct MasterLine<'a> {
    pub info: &'a MasterInfo,
    /// Stored bytes it shares with other master versions.
    pub shared: u64,
    /// By site (those the user sees).
    pub held: BTreeMap<String, Held>,
    /// What it costs each site that runs or holds the master (those the user sees).
    pub costs: Vec<SiteCost>,
}

/// One site's cost of a version, in words: "lyon: 1.2 GB to fetch of 9.8 GB, 2 h 10 min of
/// window, 1 night".
pub fn cost_line(c: &SiteCost) -> String {
    let site = c.site.as_str();
    if c.missing_bytes == 0 {
        return format!("{site}: held");
    }
    let what = format!(
        "{site}: {} to fetch of {}",
        bytes(c.missing_bytes),
        bytes(c.stored_bytes)
    );
    if !c.relay {
        return format!("{what}, no relay at the site");
    }
    match (c.window_secs, c.nights) {
        (Some(w), Some(n)) => format!(
            "{what}, {} of window, {n} night{}",
            duration(w.max(60)),
            if n == 1 { "" } else { "s" }
        ),
        _ => format!("{what}, more than 60 days of windows at its cap"),
    }
}

/// The import forms, for admins and operators.
fn forms(session: &Session) -> String {
    if session.user.role == Role::ReadOnly {
        return String::new();
    }
    let csrf = esc(&session.csrf);
    let fields = "<label for=\"NAME-name\">Master</label><input id=\"NAME-name\" name=\"name\" required placeholder=\"win11-exam\">\
                  <label for=\"NAME-version\">Version</label><input id=\"NAME-version\" name=\"version\" required placeholder=\"2\">";
    format!(
        "<section class=\"card\"><h2>Import a new version</h2>\
         <p class=\"muted\">A disk image (raw, qcow2, VMDK, VHDX, VHD or VDI), the same as \
         <code>nightcast master import</code>. Sent from this browser, it is written to the \
         controller's disk as it arrives, then imported; a large image is better copied to the \
         controller and named by its path.</p>\
         <h3>Send an image from this browser</h3>\
         <form id=\"upload\" method=\"post\" action=\"/masters/upload\" enctype=\"multipart/form-data\" class=\"grid wide\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{}\
         <label for=\"upload-force\">Even if it does not look like a disk</label><span><input type=\"checkbox\" id=\"upload-force\" name=\"force\"></span>\
         <label for=\"upload-file\">Image</label><input type=\"file\" id=\"upload-file\" name=\"image\" required>\
         <span></span><button id=\"send\">Send and import</button></form>\
         <h3>Import a file on the controller</h3>\
         <form id=\"import-path\" method=\"post\" action=\"/masters/import\" class=\"grid wide\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{}\
         <label for=\"path-force\">Even if it does not look like a disk</label><span><input type=\"checkbox\" id=\"path-force\" name=\"force\"></span>\
         <label for=\"path-path\">Path on the controller</label><input id=\"path-path\" name=\"path\" required placeholder=\"/srv/images/win11-exam.qcow2\">\
         <span></span><button id=\"import\">Import</button></form></section>",
        fields.replace("NAME", "upload"),
        fields.replace("NAME", "path"),
    )
}

/// The console's last imports, as they ended or under way.
fn from_console(imports: &[FromConsole]) -> String {
    if imports.is_empty() {
        return String::new();
    }
    let mut body = String::from(
        "<h2>Imports from the console</h2><table id=\"console-imports\"><tr><th>Master</th><th>By</th><th>Result</th></tr>",
    );
    for i in imports {
        let result = match &i.outcome {
            None => "<span class=\"muted\">under way</span>".to_owned(),
            Some(Ok(done)) => format!(
                "done: {} {}, {} disk, {} new in the store",
                esc(done.name.as_str()),
                esc(done.version.as_str()),
                bytes(done.size),
                bytes(done.new_stored_bytes)
            ),
            Some(Err(e)) => format!("<span class=\"err\">failed: {}</span>", esc(e)),
        };
        let _ = write!(
            body,
            "<tr><td>{} {}</td><td>{}</td><td>{result}</td></tr>",
            esc(i.name.as_str()),
            esc(i.version.as_str()),
            esc(&i.by)
        );
    }
    body.push_str("</table>");
    body
}

/// The masters page.
pub fn masters(
    session: &Session,
    lines: &[MasterLine],
    imports: &[ImportProgress],
    console_imports: &[FromConsole],
) -> String {
    let mut body = String::from("<h1>Masters</h1>");
    if !imports.is_empty() {
        body.push_str("<h2>Imports under way</h2><table id=\"imports\"><tr><th>Master</th><th>From</th><th>Progress</th><th>Time</th></tr>");
        for i in imports {
            let pct = (i.read.saturating_mul(100))
                .checked_div(i.size)
                .unwrap_or(0);
            let _ = write!(
                body,
                "<tr><td>{} {}</td><td>{}</td><td><progress max=\"100\" value=\"{pct}\"></progress> {} of {} ({pct}%)</td><td>{}</td></tr>",
                esc(i.name.as_str()),
                esc(i.version.as_str()),
                esc(&i.image.display().to_string()),
                bytes(i.read),
                if i.size == 0 { "?".into() } else { bytes(i.size) },
                duration(i.elapsed_secs as i64),
            );
        }
        body.push_str("</table>");
    }
    body.push_str(&from_console(console_imports));
    body.push_str(
        "<p class=\"muted\">Each version is stored once, cut into chunks; the chunks it shares with \
         other versions cost nothing again, at the controller, at a relay or on a NUC that holds them.</p>\
         <table id=\"masters\"><tr><th>Master</th><th>Disk size</th><th>Stored</th><th>Shared with other masters</th><th>Held at</th><th>What it costs each site</th><th>Machine profile</th></tr>",
    );
    if lines.is_empty() {
        body.push_str("<tr><td colspan=\"7\" class=\"muted\">No master yet: import one above, or <code>nightcast master import</code>.</td></tr>");
    }
    for l in lines {
        let held = l
            .held
            .iter()
            .map(|(site, h)| {
                let mut parts = Vec::new();
                if h.relay {
                    parts.push("relay".to_owned());
                }
                if h.nucs > 0 {
                    parts.push(format!(
                        "{} NUC{}",
                        h.nucs,
                        if h.nucs == 1 { "" } else { "s" }
                    ));
                }
                format!("{site}: {}", parts.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let stored = l.info.stored_bytes.max(1);
        let _ = write!(
            body,
            "<tr><td><b>{}</b> {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"cost\">{}</td><td>{}</td></tr>",
            esc(l.info.name.as_str()),
            esc(l.info.version.as_str()),
            bytes(l.info.size),
            bytes(l.info.stored_bytes),
            match l.shared {
                0 => "none".to_owned(),
                s => format!("{} ({}% of it)", bytes(s), s.min(stored) * 100 / stored),
            },
            if held.is_empty() {
                "<span class=\"muted\">nowhere yet</span>".to_owned()
            } else {
                esc(&held)
            },
            if l.costs.is_empty() {
                "<span class=\"muted\">no site runs it</span>".to_owned()
            } else {
                l.costs
                    .iter()
                    .map(|c| esc(&cost_line(c)))
                    .collect::<Vec<_>>()
                    .join("<br>")
            },
            match &l.info.profile {
                Some(p) => esc(&p.to_string()),
                None => "<span class=\"muted\">each NUC's own</span>".to_owned(),
            },
        );
    }
    body.push_str("</table>");
    body.push_str(&forms(session));
    let html = page("Masters", super::pages::who(session), &body);
    let under_way = !imports.is_empty() || console_imports.iter().any(|i| i.outcome.is_none());
    if under_way {
        super::html::refreshing(&html, REFRESH_SECS)
    } else {
        html
    }
}
