//! The fleet page as HTML, pure: every relay and NUC of the sites the user sees, with what it
//! does now and the DSI's buttons (wake, reset, roll back, revoke) where the user may act.

use std::collections::HashMap;
use std::fmt::Write;

use image_tools::api::{FleetRow, NodeRole};
use image_tools::local_time;
use image_tools::report::Report;

use super::board::{bytes, duration};
use super::html::{esc, page, seg};
use super::session::Session;
use super::users::User;
use crate::db::OrderRow;

/// What the fleet page shows.
#[derive(Debug)]
pub struct FleetPage<'a> {
    /// The nodes the user sees, relays first within each site.
    pub nodes: Vec<&'a FleetRow>,
    /// Each site's IANA zone.
    pub zones: &'a HashMap<String, String>,
    /// The last order of each node (the last day's).
    pub orders: &'a HashMap<String, OrderRow>,
    /// Who looks (where they may act).
    pub user: &'a User,
    /// A line on what was just done.
    pub flash: Option<&'a str>,
    pub now: i64,
}

/// "1 relay", "3 NUCs".
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// "3 min ago", "never".
fn ago(t: Option<i64>, now: i64) -> String {
    match t {
        None => "never".into(),
        Some(t) if t >= now - 59 => "just now".into(),
        Some(t) => format!("{} ago", duration(now - t)),
    }
}

/// Disk: a relay's cache against its quota, a NUC's free space.
fn disk(n: &FleetRow) -> String {
    match &n.status {
        Report::Relay(r) if r.quota_bytes > 0 => format!(
            "{} of {} ({}%){}",
            bytes(r.disk_bytes),
            bytes(r.quota_bytes),
            r.disk_bytes.saturating_mul(100) / r.quota_bytes,
            if r.disk_full { ", FULL" } else { "" }
        ),
        Report::Relay(r) => bytes(r.disk_bytes),
        Report::Agent(a) if a.free_disk_bytes > 0 => format!("{} free", bytes(a.free_disk_bytes)),
        _ => String::new(),
    }
}

/// What it fetches now and how fast: a relay's missing bytes and WAN rate, a NUC's next master.
fn fetching(n: &FleetRow) -> String {
    match &n.status {
        Report::Relay(r) => {
            let missing: u64 = r.missing.iter().map(|m| m.bytes).sum();
            let what = r
                .missing
                .iter()
                .filter(|m| m.bytes > 0)
                .map(|m| format!("{} {}", m.master.name, m.master.version))
                .collect::<Vec<_>>()
                .join(", ");
            match (missing, r.wan_bits_per_sec) {
                (0, _) => "nothing missing".into(),
                (m, 0) => format!("{what}: {} to go, not moving", bytes(m)),
                (m, bps) => format!(
                    "{what}: {} to go at {:.1} Mbit/s",
                    bytes(m),
                    bps as f64 / 1e6
                ),
            }
        }
        Report::Agent(a) => match &a.next {
            Some(m) => format!("{} {}: {}", m.name, m.version, a.next_state),
            None => "nothing".into(),
        },
        Report::Bare => String::new(),
    }
}

fn button(csrf: &str, node: &str, action: &str, label: &str, method: &str) -> String {
    if method == "get" {
        return format!(
            "<a class=\"button\" id=\"{action}-{}\" href=\"/nodes/{}/{action}\">{label}</a>",
            esc(node),
            seg(node)
        );
    }
    format!(
        "<form method=\"post\" action=\"/nodes/{}/{action}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button id=\"{action}-{}\">{label}</button></form>",
        seg(node),
        esc(csrf),
        esc(node)
    )
}

/// The last order of a node, in words: what, who, when, and whether the NUC did it.
fn order_words(o: &OrderRow, n: &FleetRow, tz: &str) -> String {
    let done = matches!(&n.status, Report::Agent(a) if a.orders_done >= o.id);
    let what = match o.kind {
        image_tools::wire::OrderKind::Reset => "reset",
        image_tools::wire::OrderKind::Rollback => "roll back",
        image_tools::wire::OrderKind::Wake => "wake",
    };
    let state = match (done, o.kind) {
        (true, _) => "done",
        (false, image_tools::wire::OrderKind::Wake) => "sent to the relay",
        (false, _) => "waiting for the NUC",
    };
    format!(
        "{what} asked by {} at {}: {state}",
        o.asked_by,
        local_time::local(o.asked_at, tz)
    )
}

/// The fleet page.
pub fn fleet(session: &Session, p: &FleetPage) -> String {
    let mut body = String::new();
    let relays = p.nodes.iter().filter(|n| n.role == NodeRole::Relay).count();
    let _ = write!(
        body,
        "<h1>Fleet</h1><p class=\"muted\">{} and {} at the sites you see. \
         Reset, roll back and wake reach a NUC with its next plan (within a minute); a NUC reports \
         back when it did it.</p>",
        count(relays, "relay"),
        count(p.nodes.len() - relays, "NUC"),
    );
    if let Some(f) = p.flash {
        let _ = write!(body, "<p class=\"flash\" id=\"flash\">{}</p>", esc(f));
    }
    body.push_str(
        "<table id=\"fleet\" class=\"fleet\"><tr><th>Node</th><th>Seat</th><th>State</th><th>Last seen</th>\
         <th>Disk</th><th>Fetching now</th><th>Last error</th><th>Actions</th></tr>",
    );
    if p.nodes.is_empty() {
        body.push_str("<tr><td colspan=\"8\" class=\"muted\">No relay or NUC yet.</td></tr>");
    }
    let mut site = "";
    for n in &p.nodes {
        if n.site.as_str() != site {
            site = n.site.as_str();
            let _ = write!(
                body,
                "<tr class=\"site\"><th colspan=\"8\">{}</th></tr>",
                esc(site)
            );
        }
        let tz = p.zones.get(site).map(String::as_str).unwrap_or("UTC");
        let node = n.node.as_str();
        let error = n
            .status
            .last_error()
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| n.attention.clone());
        let mut actions = String::new();
        if n.enrolled_at.is_some() && p.user.acts_at(site) {
            if n.role == NodeRole::Agent {
                for (action, label) in [
                    ("wake", "Wake"),
                    ("reset", "Reset now"),
                    ("rollback", "Roll back"),
                ] {
                    actions.push_str(&button(&session.csrf, node, action, label, "post"));
                }
            }
            actions.push_str(&button(&session.csrf, node, "revoke", "Revoke…", "get"));
        }
        if let Some(o) = p.orders.get(node) {
            let _ = write!(
                actions,
                "<div class=\"muted order\">{}</div>",
                esc(&order_words(o, n, tz))
            );
        }
        let role = match n.role {
            NodeRole::Relay => "relay",
            NodeRole::Agent => "NUC",
        };
        let state = if n.state.is_empty() && n.last_seen.is_none() {
            "never reported"
        } else {
            &n.state
        };
        let _ = write!(
            body,
            "<tr id=\"node-{}\"><td><b>{}</b> <span class=\"muted\">{role}</span></td><td>{}</td><td>{}</td>\
             <td title=\"{}\">{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td><td class=\"actions\">{actions}</td></tr>",
            esc(node),
            esc(node),
            esc(&n.seat),
            esc(state),
            esc(&n.last_seen.map(|t| local_time::local(t, tz)).unwrap_or_default()),
            esc(&ago(n.last_seen, p.now)),
            esc(&disk(n)),
            esc(&fetching(n)),
            esc(&error),
        );
    }
    body.push_str("</table>");
    page("Fleet", super::pages::who(session), &body)
}

/// The question before a revocation (no script: a page of its own).
pub fn confirm_revoke(session: &Session, node: &FleetRow) -> String {
    let body = format!(
        "<p><a href=\"/fleet\">← fleet</a></p><h1>Revoke {}?</h1>\
         <p>Every certificate of {} ({} at {}) is revoked: the controller refuses it at once and its \
         relay within a minute, also if the controller is unreachable afterwards. It cannot enrol \
         again until it is removed (<code>nightcast node rm</code>).</p>\
         <form method=\"post\" action=\"/nodes/{}/revoke\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button id=\"confirm-revoke\" class=\"danger\">Revoke {}</button></form>",
        esc(node.node.as_str()),
        esc(node.node.as_str()),
        esc(&node.seat),
        esc(node.site.as_str()),
        seg(node.node.as_str()),
        esc(&session.csrf),
        esc(node.node.as_str()),
    );
    page("Revoke", super::pages::who(session), &body)
}
