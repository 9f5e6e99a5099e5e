//! The delivery plan, and daytime overrides.

use serde_json::{json, Value};

use super::{db_error, routed, str_field, Answer, Call, NO_ROUTE};

/// The answer to `call` if it is one of this module's routes.
pub(super) fn route(call: &Call) -> Option<Answer> {
    let (api, body, now) = (call.api, call.body, call.now);
    let db = || call.db();
    routed((|| match (call.method, call.path) {
        ("GET", ["v1", "plan"]) => {
            let db = db()?;
            let masters = db.manifest_revisions().map_err(db_error)?;
            let masters = masters.into_iter().map(|(m, _)| m).collect();
            let classes = api
                .classes
                .get(masters, || db.classes())
                .map_err(db_error)?;
            let holds = db.holds_by_site().map_err(db_error)?;
            let plan = db
                .plan_with(now, &api.settings, &holds, &classes)
                .map_err(db_error)?;
            Ok(crate::plan_json(&plan))
        }
        ("POST", ["v1", "overrides"]) => {
            let hours = body
                .get("hours")
                .and_then(Value::as_u64)
                .unwrap_or(4)
                .clamp(1, 72);
            let id = db()?
                .add_override(
                    str_field(body, "site")?,
                    (str_field(body, "master")?, str_field(body, "version")?),
                    str_field(body, "reason")?,
                    body.get("by").and_then(Value::as_str).unwrap_or("unknown"),
                    now,
                    now + hours as i64 * 3600,
                )
                .map_err(db_error)?;
            tracing::warn!(id, "daytime override recorded");
            Ok(json!({"id": id, "until": now + hours as i64 * 3600}))
        }
        ("GET", ["v1", "overrides"]) => Ok(json!(db()?
            .overrides(now)
            .map_err(db_error)?
            .iter()
            .map(
                |o| json!({"id": o.0, "site": o.1, "master": o.2, "version": o.3, "reason": o.4,
                            "by": o.5, "created_at": o.6, "until": o.7})
            )
            .collect::<Vec<_>>())),
        _ => Err(NO_ROUTE),
    })())
}
