//! The fleet page's URLs: `GET /fleet`, and the DSI's actions on a node, each through the same
//! controller code as the admin API (`POST /nodes/NODE/reset|rollback|wake|revoke`; `GET
//! /nodes/NODE/revoke` asks first). An operator acts at their sites only, a read-only user
//! nowhere (403, nothing changed).

use std::collections::HashMap;

use image_tools::api::FleetRow;
use image_tools::wire::OrderKind;
use image_tools::NodeId;

use super::fleet_page::{self, FleetPage};
use super::http::{field, form, Response};
use super::routes::{failed, not_found, refused, zones};
use super::session::Session;
use super::Console;
use crate::db::{Db, ORDER_KEPT_SECS};

/// The fleet the user sees, and the catalogue it was read from.
fn visible(
    console: &Console,
    session: &Session,
    now: i64,
) -> Result<(Db, Vec<FleetRow>), Response> {
    let db = Db::open(&console.api.data.database())
        .map_err(|e| failed(session, "open the catalogue", e))?;
    let rows = crate::api::fleet_rows(&db, now, console.api.silent_after_secs)
        .map_err(|(_, e)| failed(session, "read the fleet", e))?;
    let rows = rows
        .into_iter()
        .filter(|n| session.user.sees(n.site.as_str()))
        .collect();
    Ok((db, rows))
}

/// `GET /fleet[?did=ACTION&node=NODE]`.
pub fn page(console: &Console, session: &Session, query: &str, now: i64) -> Response {
    let (db, rows) = match visible(console, session, now) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let zones = match zones(&db) {
        Ok(z) => z,
        Err(e) => return failed(session, "read the sites", e),
    };
    let orders: HashMap<String, _> = match db.orders_since(now - ORDER_KEPT_SECS) {
        Ok(o) => o.into_iter().map(|o| (o.node.clone(), o)).collect(),
        Err(e) => return failed(session, "read the orders", e),
    };
    let q = form(query.as_bytes());
    let node = field(&q, "node").and_then(|n| n.parse::<NodeId>().ok());
    let flash = match (field(&q, "did"), node) {
        (Some("reset"), Some(n)) => Some(format!("{n}: reset asked; it resets within a minute.")),
        (Some("rollback"), Some(n)) => Some(format!(
            "{n}: roll back asked; it goes back to its previous master within a minute."
        )),
        (Some("wake"), Some(n)) => Some(format!(
            "{n}: wake asked; its relay sends the Wake-on-LAN packet within a minute."
        )),
        (Some("revoke"), Some(n)) => Some(format!("{n} revoked: refused from now on.")),
        _ => None,
    };
    let p = FleetPage {
        nodes: rows.iter().collect(),
        zones: &zones,
        orders: &orders,
        user: &session.user,
        flash: flash.as_deref(),
        now,
    };
    Response::html(200, fleet_page::fleet(session, &p))
}

/// `GET /nodes/NODE/revoke`: the question first.
pub fn confirm_revoke(console: &Console, session: &Session, node: &str, now: i64) -> Response {
    let (_, rows) = match visible(console, session, now) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match rows
        .iter()
        .find(|n| n.node.as_str() == node && n.enrolled_at.is_some())
    {
        Some(n) if session.user.acts_at(n.site.as_str()) => {
            Response::html(200, fleet_page::confirm_revoke(session, n))
        }
        Some(n) => refused(session, "revoke nodes", n.site.as_str()),
        None => not_found(session),
    }
}

/// `POST /nodes/NODE/ACTION` (reset, rollback, wake, revoke): the node must be one the user
/// sees, at a site where they act.
pub fn act(console: &Console, session: &Session, node: &str, action: &str, now: i64) -> Response {
    let (mut db, rows) = match visible(console, session, now) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(row) = rows
        .iter()
        .find(|n| n.node.as_str() == node && n.enrolled_at.is_some())
    else {
        return not_found(session);
    };
    let site = row.site.as_str();
    let what = if action == "revoke" {
        "revoke nodes"
    } else {
        "reset, roll back or wake NUCs"
    };
    if !session.user.acts_at(site) {
        tracing::warn!(user = %session.user.name, %node, %site, action, "console: refused to a {} user", session.user.role.as_str());
        return refused(session, what, site);
    }
    let node = row.node.clone();
    if action == "revoke" {
        if let Err(e) = db.revoke_node(node.as_str(), now) {
            return failed(session, "revoke the node", e);
        }
        tracing::info!(user = %session.user.name, %node, %site, "node revoked from the console");
    } else {
        let Ok(kind) = action.parse::<OrderKind>() else {
            return not_found(session);
        };
        if let Err((_, e)) = crate::api::order_node(&mut db, &node, kind, &session.user.name, now) {
            return failed(session, "record the order", e);
        }
    }
    console.api.changed.notify_one();
    console.plan_changed();
    Response::see_other(&format!(
        "/fleet?did={action}&node={}",
        super::html::seg(node.as_str())
    ))
}
