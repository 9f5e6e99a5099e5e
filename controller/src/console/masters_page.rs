//! The masters page as HTML, pure.

use std::collections::BTreeMap;
use std::fmt::Write;

use image_tools::api::{ImportProgress, MasterInfo};

use super::board::{bytes, duration};
use super::html::{esc, page};
use super::session::Session;

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
}

/// The masters page.
pub fn masters(session: &Session, lines: &[MasterLine], imports: &[ImportProgress]) -> String {
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
    body.push_str(
        "<p class=\"muted\">Each version is stored once, cut into chunks; the chunks it shares with \
         other versions cost nothing again, at the controller, at a relay or on a NUC that holds them.</p>\
         <table id=\"masters\"><tr><th>Master</th><th>Disk size</th><th>Stored</th><th>Shared with other masters</th><th>Held at</th><th>Machine profile</th></tr>",
    );
    if lines.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">No master yet: <code>nightcast master import</code>.</td></tr>");
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
            "<tr><td><b>{}</b> {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
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
            match &l.info.profile {
                Some(p) => esc(&p.to_string()),
                None => "<span class=\"muted\">each NUC's own</span>".to_owned(),
            },
        );
    }
    body.push_str("</table>");
    page("Masters", super::pages::who(session), &body)
}
