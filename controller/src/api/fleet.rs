//! The fleet (nodes, pending requests included), node approval, revocation and removal, and
//! enrolment tokens.

use serde_json::{json, Value};

use super::{db_error, error, routed, str_field, Answer, Call, NO_ROUTE};

/// The answer to `call` if it is one of this module's routes.
pub(super) fn route(call: &Call) -> Option<Answer> {
    let (api, body, now) = (call.api, call.body, call.now);
    let db = || call.db();
    routed((|| {
        match (call.method, call.path) {
        ("GET", ["v1", "fleet"]) => Ok(json!(db()?
            .fleet(now, api.silent_after_secs)
            .map_err(db_error)?
            .iter()
            .map(|n| json!({"site": n.site, "node": n.node, "role": n.role, "enrolled_at": n.enrolled_at,
                            "last_seen": n.last_seen, "holding": n.holding,
                            "seat": match (n.role.as_str(), &n.seat) {
                                (_, Some(seat)) => seat.as_str(),
                                ("agent", None) => "spare",
                                _ => "",
                            },
                            "waiting": n.waiting,
                            "state": n.status.state(), "software": n.software,
                            "attention": crate::fleet::attention(n), "status": n.status}))
            .chain(db()?.pending().map_err(db_error)?.iter().map(|p| json!({
                "site": p.site, "node": p.node, "role": p.role, "enrolled_at": null,
                "last_seen": p.requested_at, "holding": "", "seat": "", "waiting": null,
                "state": if p.approved_at.is_some() { "approved" } else { "pending" },
                "mac": p.mac, "via": p.via, "key": p.key,
                "attention": match p.approved_at {
                    Some(_) => format!("approved: gets its certificate at its next request (MAC {}, key {})", p.mac, p.key),
                    None => format!("PENDING: asked to enrol via {} (MAC {}, key {}): `nightcast node approve {}`", p.via, p.mac, p.key, p.node),
                },
                "status": {}})))
            .collect::<Vec<_>>())),
        ("POST", ["v1", "nodes", node, "approve"]) => {
            let p = db()?.approve_node(node, now).map_err(db_error)?;
            Ok(json!({"node": p.node, "site": p.site, "role": p.role, "mac": p.mac, "key": p.key}))
        }
        ("POST", ["v1", "nodes", node, "revoke"]) => {
            let n = db()?.revoke_node(node, now).map_err(db_error)?;
            Ok(json!({"node": node, "certificates_revoked": n}))
        }
        ("DELETE", ["v1", "nodes", node]) => {
            db()?.remove_node(node, now).map_err(db_error)?;
            Ok(json!({"node": node, "removed": true}))
        }
        ("POST", ["v1", "tokens"]) => {
            let role = match str_field(body, "role")? {
                "relay" => image_tools::wire::Role::Relay,
                "agent" => image_tools::wire::Role::Agent,
                other => {
                    return Err(error(
                        400,
                        format!("role {other:?} is neither relay nor agent"),
                    ))
                }
            };
            let site =
                image_tools::SiteId::new(str_field(body, "site")?).map_err(|e| error(400, e))?;
            let hours = body.get("ttl_hours").and_then(Value::as_u64).unwrap_or(24);
            if hours == 0 || hours > crate::MAX_TOKEN_TTL_SECS / 3600 {
                return Err(error(
                    400,
                    format!(
                        "ttl_hours must be between 1 and {}",
                        crate::MAX_TOKEN_TTL_SECS / 3600
                    ),
                ));
            }
            let token = crate::issue_token(&api.data, role, site, now as u64, hours * 3600)
                .map_err(|e| error(500, e))?;
            Ok(json!({"token": token.to_string()}))
        }
        _ => Err(NO_ROUTE),
    }
    })())
}
