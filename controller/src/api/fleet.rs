//! The fleet (nodes, pending requests included), node approval, revocation and removal, and
//! enrolment tokens.

use image_tools::api::{Approved, FleetRow, NewToken, NodeRole, Ordered, Removed, Revoked, Token};
use image_tools::report::Report;
use image_tools::wire::OrderKind;
use image_tools::NodeId;

use super::{db_error, error, ok, path_id, routed, stored, Answer, Call, Reply, NO_ROUTE};
use crate::db::PendingRow;

/// The answer to `call` if it is one of this module's routes.
pub(super) fn route(call: &Call) -> Option<Answer> {
    let (api, now) = (call.api, call.now);
    let db = || call.db();
    routed((|| match (call.method, call.path) {
        ("GET", ["v1", "fleet"]) => ok(rows(&db()?, now, api.silent_after_secs)?),
        ("POST", ["v1", "nodes", node, "approve"]) => {
            let node: NodeId = path_id(node)?;
            let p = db()?.approve_node(node.as_str(), now).map_err(db_error)?;
            ok(Approved {
                node,
                site: stored(&p.site)?,
                role: stored(&p.role)?,
                mac: p.mac,
                key: p.key,
            })
        }
        ("POST", ["v1", "nodes", node, "revoke"]) => {
            let node: NodeId = path_id(node)?;
            let n = db()?.revoke_node(node.as_str(), now).map_err(db_error)?;
            ok(Revoked {
                node,
                certificates_revoked: n as u64,
            })
        }
        ("POST", ["v1", "nodes", node, kind @ ("reset" | "rollback" | "wake")]) => {
            let node: NodeId = path_id(node)?;
            ok(order(&mut db()?, &node, path_id(kind)?, "admin", now)?)
        }
        ("DELETE", ["v1", "nodes", node]) => {
            let node: NodeId = path_id(node)?;
            db()?.remove_node(node.as_str(), now).map_err(db_error)?;
            ok(Removed {
                node,
                removed: true,
            })
        }
        ("POST", ["v1", "tokens"]) => {
            let NewToken {
                role,
                site,
                ttl_hours,
            } = call.body()?;
            super::places::known_site(&db()?, &site)?;
            let role = match role {
                NodeRole::Relay => image_tools::wire::Role::Relay,
                NodeRole::Agent => image_tools::wire::Role::Agent,
            };
            if ttl_hours == 0 || ttl_hours > crate::MAX_TOKEN_TTL_SECS / 3600 {
                return Err(error(
                    400,
                    format!(
                        "ttl_hours must be between 1 and {}",
                        crate::MAX_TOKEN_TTL_SECS / 3600
                    ),
                ));
            }
            let token = crate::issue_token(&api.data, role, site, now as u64, ttl_hours * 3600)
                .map_err(|e| error(500, e))?;
            ok(Token {
                token: token.to_string(),
            })
        }
        _ => Err(NO_ROUTE),
    })())
}

/// Records an order for NUC `node`, asked by `by` (`admin` for the API's token, else the
/// console's user): what `POST /v1/nodes/NODE/reset|rollback|wake` and the console's fleet page
/// both do. The caller wakes the catalogue (`Api::changed`) so that the relay hears of it at once.
pub(crate) fn order(
    db: &mut crate::db::Db,
    node: &NodeId,
    kind: OrderKind,
    by: &str,
    now: i64,
) -> Result<Ordered, Reply> {
    let o = db
        .order_node(node.as_str(), kind, by, now)
        .map_err(db_error)?;
    tracing::info!(%node, kind = kind.as_str(), %by, id = o.id, "order recorded for a NUC");
    Ok(Ordered {
        node: node.clone(),
        site: stored(&o.site)?,
        order: o.id,
        kind,
    })
}

/// The fleet at `now`, as `GET /v1/fleet` answers it (the console's room pages read it too).
pub(crate) fn rows(
    db: &crate::db::Db,
    now: i64,
    silent_after_secs: i64,
) -> Result<Vec<FleetRow>, Reply> {
    let nodes = db.fleet(now, silent_after_secs).map_err(db_error)?;
    let pending = db.pending().map_err(db_error)?;
    let mut rows = nodes.iter().map(enrolled).collect::<Result<Vec<_>, _>>()?;
    rows.extend(pending.iter().map(asking).collect::<Result<Vec<_>, _>>()?);
    Ok(rows)
}

/// An enrolled node as the fleet shows it.
fn enrolled(n: &crate::db::FleetRow) -> Result<FleetRow, Reply> {
    let role: NodeRole = stored(&n.role)?;
    let seat = match (role, &n.seat) {
        (_, Some(seat)) => seat.clone(),
        (NodeRole::Agent, None) => "spare".to_owned(),
        (NodeRole::Relay, None) => String::new(),
    };
    Ok(FleetRow {
        site: stored(&n.site)?,
        node: stored(&n.node)?,
        role,
        enrolled_at: Some(n.enrolled_at),
        last_seen: n.last_seen,
        holding: n.holding.clone(),
        seat,
        waiting: n.waiting.clone(),
        state: n.status.state().to_owned(),
        software: n.software.clone(),
        attention: crate::fleet::attention(n),
        status: n.status.clone(),
        mac: None,
        via: None,
        key: None,
    })
}

/// A node that asked to enrol, as the fleet shows it: pending, or approved and not back yet.
fn asking(p: &PendingRow) -> Result<FleetRow, Reply> {
    let (state, attention) = match p.approved_at {
        Some(_) => (
            "approved",
            format!(
                "approved: gets its certificate at its next request (MAC {}, key {})",
                p.mac, p.key
            ),
        ),
        None => (
            "pending",
            format!(
                "PENDING: asked to enrol via {} (MAC {}, key {}): `nightcast node approve {}`",
                p.via, p.mac, p.key, p.node
            ),
        ),
    };
    Ok(FleetRow {
        site: stored(&p.site)?,
        node: stored(&p.node)?,
        role: stored(&p.role)?,
        enrolled_at: None,
        last_seen: Some(p.requested_at),
        holding: String::new(),
        seat: String::new(),
        waiting: None,
        state: state.to_owned(),
        software: String::new(),
        attention,
        status: Report::Bare,
        mac: Some(p.mac.clone()),
        via: Some(p.via.clone()),
        key: Some(p.key.clone()),
    })
}
