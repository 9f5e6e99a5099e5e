//! The console's pages as HTML, pure: data in, a string out. Every string that is not this file's
//! own goes through `html::esc` (names, reasons, reports, errors) or `html::seg` (in a URL).

use std::fmt::Write;

use image_tools::api::FleetRow;
use image_tools::local_time;
use image_tools::report::Report;

use super::board::{Folded, Kind, Room};
use super::html::{esc, page, seg};
use super::session::Session;

/// The login form, with an error (wrong password, too many tries, session expired) if any.
pub fn login(error: Option<&str>, name: &str, token: &str) -> String {
    let mut body = String::new();
    body.push_str("<form class=\"login\" method=\"post\" action=\"/login\"><h1>Log in</h1>");
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"err\" id=\"error\">{}</p>", esc(e));
    }
    let _ = write!(
        body,
        "<label for=\"name\">User</label><input id=\"name\" name=\"name\" autocomplete=\"username\" \
         value=\"{}\" required autofocus>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" \
         type=\"password\" autocomplete=\"current-password\" required>\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\">Log in</button></form>",
        esc(name),
        esc(token)
    );
    page("Log in", None, &body)
}

pub(super) fn who(session: &Session) -> Option<(&str, &str, &str)> {
    Some((
        session.user.name.as_str(),
        session.user.role.as_str(),
        session.csrf.as_str(),
    ))
}

fn verdict(kind: Kind) -> String {
    format!("<span class=\"v {}\">{}</span>", kind.class(), kind.word())
}

/// The readiness board: the rooms, worst first, each with its coming sessions; then the rooms
/// with nothing to worry about, folded by site (see `board::fold`).
pub fn board(session: &Session, rooms: &[Room], folded: &[Folded], now: i64) -> String {
    let mut body = String::new();
    let count = |k: Kind| rooms.iter().filter(|r| r.worst == k).count();
    let _ = write!(
        body,
        "<h1>Is every room ready?</h1><p class=\"muted\">Sessions of the coming 7 days, as of {}. \
         Rooms: {} late, {} at risk, {} on time or ready.</p>",
        esc(&local_time::local(now, "UTC")),
        count(Kind::Late) + count(Kind::Unknown),
        count(Kind::AtRisk),
        count(Kind::OnTime)
            + count(Kind::Ready)
            + folded.iter().map(|f| f.rooms.len()).sum::<usize>(),
    );
    if rooms.is_empty() && folded.is_empty() {
        body.push_str(
            "<p class=\"note\">No session in the coming 7 days at the sites you see.</p>",
        );
    }
    for room in rooms {
        let _ = write!(
            body,
            "<section class=\"room {}\"><h2><a href=\"/rooms/{}/{}\">{} · {}</a></h2>\
             <table class=\"sessions\"><tr><th>Starts</th><th>Master</th><th>Verdict</th><th>Why</th></tr>",
            room.worst.class(),
            seg(&room.site),
            seg(&room.room),
            esc(&room.site),
            esc(&room.room),
        );
        for l in &room.lines {
            let _ = write!(
                body,
                "<tr><td{}>{}{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
                if l.today { " class=\"today\"" } else { "" },
                if l.today { "today " } else { "" },
                esc(&l.when),
                esc(&l.master),
                esc(&l.version),
                verdict(l.kind),
                esc(&l.reason),
            );
        }
        body.push_str("</table></section>");
    }
    if !folded.is_empty() {
        body.push_str("<h2>On time or ready</h2><ul class=\"folded\">");
        for f in folded {
            let _ = write!(
                body,
                "<li><b>{}</b> ({} sessions):",
                esc(&f.site),
                f.sessions
            );
            for r in &f.rooms {
                let _ = write!(
                    body,
                    " <a href=\"/rooms/{}/{}\">{}</a>",
                    seg(&f.site),
                    seg(r),
                    esc(r)
                );
            }
            body.push_str("</li>");
        }
        body.push_str("</ul>");
    }
    page("Readiness", who(session), &body)
}

/// What the room page shows.
#[derive(Debug)]
pub struct RoomPage<'a> {
    pub site: &'a str,
    pub room: &'a str,
    pub tz: &'a str,
    /// The room on the board (none if it has no session this week).
    pub board: Option<&'a Room>,
    /// The room's NUCs (seat `ROOM/...`).
    pub nucs: Vec<&'a FleetRow>,
    /// The site's NUCs that asked to enrol, waiting for the DSI (or approved, not back yet).
    pub pending: Vec<&'a FleetRow>,
    /// Whether the user may act at this site (approve).
    pub may_act: bool,
    /// A line on what was just done.
    pub flash: Option<&'a str>,
}

/// One room: its coming sessions, its NUCs, and the site's NUCs waiting for approval.
pub fn room(session: &Session, p: &RoomPage) -> String {
    let at = |t: Option<i64>| t.map_or_else(|| "never".to_owned(), |t| local_time::local(t, p.tz));
    let mut body = String::new();
    let _ = write!(
        body,
        "<p><a href=\"/\">← board</a></p><h1>{} · {}</h1>",
        esc(p.site),
        esc(p.room)
    );
    if let Some(f) = p.flash {
        let _ = write!(body, "<p class=\"flash\" id=\"flash\">{}</p>", esc(f));
    }
    if let Some(b) = p.board {
        body.push_str(
            "<h2>Coming sessions</h2><table class=\"sessions\"><tr><th>Starts</th><th>Master</th><th>Verdict</th><th>Why</th></tr>",
        );
        for l in &b.lines {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
                esc(&l.when),
                esc(&l.master),
                esc(&l.version),
                verdict(l.kind),
                esc(&l.reason)
            );
        }
        body.push_str("</table>");
    }
    let _ = write!(
        body,
        "<h2>NUCs in {}</h2><table id=\"nucs\"><tr><th>Seat</th><th>NUC</th><th>State</th>\
         <th>Holds</th><th>Runs</th><th>Last report</th><th>Last error</th></tr>",
        esc(p.room)
    );
    if p.nucs.is_empty() {
        body.push_str(
            "<tr><td colspan=\"7\" class=\"muted\">No NUC sits in this room yet.</td></tr>",
        );
    }
    for n in &p.nucs {
        let runs = match &n.status {
            Report::Agent(a) if !a.vm.is_empty() => a.vm.clone(),
            _ => String::new(),
        };
        let error = n
            .status
            .last_error()
            .map(str::to_owned)
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| n.attention.clone());
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            esc(&n.seat),
            esc(n.node.as_str()),
            esc(if n.state.is_empty() && n.last_seen.is_none() {
                "never reported"
            } else {
                &n.state
            }),
            esc(if n.holding.is_empty() { "nothing yet" } else { &n.holding }),
            esc(&runs),
            esc(&at(n.last_seen)),
            esc(&error),
        );
    }
    body.push_str("</table>");
    if !p.pending.is_empty() {
        let _ = write!(
            body,
            "<h2>Waiting to enrol at {}</h2><p class=\"muted\">Check the MAC address against the \
             machine before you approve it.</p><table id=\"pending\"><tr><th>NUC</th><th>MAC</th>\
             <th>Via</th><th>Key</th><th>Asked</th><th></th></tr>",
            esc(p.site)
        );
        for n in &p.pending {
            let action = if n.state != "pending" {
                "approved: enrols at its next request".to_owned()
            } else if p.may_act {
                format!(
                    "<form method=\"post\" action=\"/nodes/{}/approve\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                     <input type=\"hidden\" name=\"back\" value=\"/rooms/{}/{}\"><button id=\"approve-{}\">Approve</button></form>",
                    seg(n.node.as_str()),
                    esc(&session.csrf),
                    seg(p.site),
                    seg(p.room),
                    esc(n.node.as_str()),
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(n.node.as_str()),
                esc(n.mac.as_deref().unwrap_or("")),
                esc(n.via.as_deref().unwrap_or("")),
                esc(n.key.as_deref().unwrap_or("")),
                esc(&at(n.last_seen)),
                action,
            );
        }
        body.push_str("</table>");
    }
    page(&format!("{} {}", p.site, p.room), who(session), &body)
}

/// A page for a refusal or an error (403, 404...).
pub fn problem(session: Option<&Session>, title: &str, text: &str) -> String {
    page(
        title,
        session.and_then(who),
        &format!(
            "<h1>{}</h1><p class=\"err\">{}</p><p><a href=\"/\">← board</a></p>",
            esc(title),
            esc(text)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::board::Line;
    use crate::console::users::{Role, User};
    use image_tools::report::AgentReport;

    const EVIL: &str = "<script>alert(1)</script>";

    fn session(role: Role) -> Session {
        Session {
            user: User {
                name: format!("eve{EVIL}"),
                role,
                sites: Vec::new(),
            },
            stamp: String::new(),
            csrf: "c".repeat(64),
            created: 0,
            last_used: 0,
        }
    }

    fn nuc(state: &str, seat: &str) -> FleetRow {
        FleetRow {
            site: "lyon".parse().unwrap(),
            node: "nuc-1".parse().unwrap(),
            role: image_tools::api::NodeRole::Agent,
            enrolled_at: None,
            last_seen: Some(0),
            holding: format!("demo 1 {EVIL}"),
            seat: seat.into(),
            waiting: None,
            state: state.into(),
            software: String::new(),
            attention: format!("look {EVIL}"),
            status: Report::Agent(AgentReport {
                vm: format!("running {EVIL}"),
                last_error: Some(format!("disk {EVIL}")),
                ..AgentReport::default()
            }),
            mac: Some(format!("02:00 {EVIL}")),
            via: Some(format!("relay {EVIL}")),
            key: Some(format!("k {EVIL}")),
        }
    }

    fn room_board() -> Room {
        Room {
            site: "lyon".into(),
            room: "salle-1".into(),
            tz: "UTC".into(),
            worst: Kind::Late,
            lines: vec![Line {
                start: 0,
                when: format!("w {EVIL}"),
                today: true,
                master: "win11".into(),
                version: "3".into(),
                kind: Kind::Late,
                reason: format!("because {EVIL}"),
            }],
        }
    }

    #[test]
    fn no_user_provided_string_reaches_a_page_unescaped() {
        let s = session(Role::Admin);
        let b = room_board();
        let (seated, pending) = (nuc("ready", "salle-1/pc-1"), nuc("pending", ""));
        let pages = [
            login(Some(EVIL), EVIL, EVIL),
            board(
                &s,
                std::slice::from_ref(&b),
                &[Folded {
                    site: EVIL.into(),
                    rooms: vec![EVIL.into()],
                    sessions: 1,
                }],
                0,
            ),
            room(
                &s,
                &RoomPage {
                    site: "lyon",
                    room: "salle-1",
                    tz: "UTC",
                    board: Some(&b),
                    nucs: vec![&seated],
                    pending: vec![&pending],
                    may_act: true,
                    flash: Some(EVIL),
                },
            ),
            problem(Some(&s), EVIL, EVIL),
        ];
        for p in &pages {
            assert!(!p.contains("<script"), "{p}");
            assert!(p.contains("&lt;script&gt;"), "{p}");
        }
    }

    #[test]
    fn a_read_only_user_gets_no_approve_button() {
        let b = room_board();
        let pending = nuc("pending", "");
        let page = |role, may_act| {
            room(
                &session(role),
                &RoomPage {
                    site: "lyon",
                    room: "salle-1",
                    tz: "UTC",
                    board: Some(&b),
                    nucs: Vec::new(),
                    pending: vec![&pending],
                    may_act,
                    flash: None,
                },
            )
        };
        let admin = page(Role::Admin, true);
        assert!(admin.contains("action=\"/nodes/nuc-1/approve\""), "{admin}");
        assert!(admin.contains(&format!("value=\"{}\"", "c".repeat(64))));
        let ro = page(Role::ReadOnly, false);
        assert!(!ro.contains("/approve"), "{ro}");
        assert!(!ro.contains("Approve<"), "{ro}");
    }
}
