//! The admin API: HTTP with JSON bodies, on localhost by default, every request carrying
//! `Authorization: Bearer <token>` (the token is `DATA/admin.token`, mode 0600). The `nightcast` CLI
//! is its client. Synchronous on purpose: catalogue calls are short SQLite transactions, master
//! imports run for minutes on their own thread.
//!
//! Routes (all under `/v1`): `GET|POST sites`, `POST rooms`, `GET seats[?site=S]`, `POST seats`,
//! `POST seats/assign`, `POST seats/replace`, `GET|POST masters`,
//! `DELETE masters/NAME/VERSION`, `POST calendar`, `GET|POST sessions`, `DELETE sessions/ID`,
//! `GET plan`, `GET fleet`, `GET|POST overrides`, `POST tokens`.
//! Errors are `{"error": "..."}` with 400 (bad input), 401 (token), 404, 409 (conflict), 413, 500.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::db::{Db, DbError};
use crate::DataDir;

/// Bodies above this are refused (a term's calendar is far smaller).
const MAX_BODY: u64 = 16 << 20;

/// The admin API's state.
#[derive(Debug)]
pub struct Api {
    pub data: DataDir,
    pub token: String,
    pub clock: image_tools::clock::Clock,
    pub settings: crate::plan::Settings,
    /// See `takeover`: a seat not heard from for longer is silent.
    pub silent_after_secs: i64,
    /// Woken after every change, so that relays see it at once (the server reloads its catalogue).
    pub changed: Arc<tokio::sync::Notify>,
    /// Chunk classes, rebuilt only when the set of masters changes.
    pub classes: crate::plan::ClassCache,
}

/// The admin token of a data directory, created (32 random bytes, hex, mode 0600) if missing.
pub fn admin_token(data: &DataDir) -> anyhow::Result<String> {
    let path = data.0.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_owned());
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = image_tools::ids::hex(&secret);
    image_tools::durable::write_file(&path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

/// Serves until `stop` is set (checked every 200 ms); one thread per request.
pub fn serve(server: tiny_http::Server, api: Arc<Api>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => {
                let api = api.clone();
                std::thread::spawn(move || handle(&api, request));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "admin API stopped");
                break;
            }
        }
    }
}

/// An answer: status and JSON body.
type Reply = (u16, Value);

fn error(status: u16, message: impl std::fmt::Display) -> Reply {
    (status, json!({ "error": message.to_string() }))
}

fn handle(api: &Api, mut request: tiny_http::Request) {
    let method = request.method().as_str().to_owned();
    let url = request.url().to_owned();
    let authorized = request.headers().iter().any(|h| {
        h.field.equiv("Authorization")
            && constant_time_eq(
                h.value.as_str().as_bytes(),
                format!("Bearer {}", api.token).as_bytes(),
            )
    });
    let (status, body) = if !authorized {
        error(
            401,
            "missing or wrong admin token: use the one in the controller's DATA/admin.token",
        )
    } else {
        let mut raw = Vec::new();
        let read = request.as_reader().take(MAX_BODY + 1).read_to_end(&mut raw);
        match read {
            Err(e) => error(400, format!("cannot read the request: {e}")),
            Ok(_) if raw.len() as u64 > MAX_BODY => error(413, "request body too large"),
            Ok(_) => {
                let body: Value = if raw.is_empty() {
                    Value::Null
                } else {
                    match serde_json::from_slice(&raw) {
                        Ok(v) => v,
                        Err(e) => {
                            respond(request, error(400, format!("the body is not JSON: {e}")));
                            return;
                        }
                    }
                };
                route(api, &method, &url, &body)
            }
        }
    };
    tracing::info!(%method, %url, status, "admin request");
    if status == 200 && method != "GET" {
        api.changed.notify_one();
    }
    respond(request, (status, body));
}

fn respond(request: tiny_http::Request, (status, body): Reply) {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]);
    let mut response = tiny_http::Response::from_string(body.to_string()).with_status_code(status);
    if let Ok(h) = header {
        response.add_header(h);
    }
    let _ = request.respond(response);
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn str_field<'a>(body: &'a Value, key: &str) -> Result<&'a str, Reply> {
    body.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| error(400, format!("missing string field {key:?}")))
}

fn db_error(e: DbError) -> Reply {
    let status = match &e {
        DbError::NoSite(_)
        | DbError::NoRoom { .. }
        | DbError::NoMaster { .. }
        | DbError::NoSeat { .. }
        | DbError::NoAgent { .. } => 404,
        DbError::MasterInUse { .. } | DbError::NotSpare { .. } => 409,
        DbError::Invalid(_) | DbError::Calendar { .. } => 400,
        DbError::Sql(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            409
        }
        _ => 500,
    };
    error(status, e)
}

fn route(api: &Api, method: &str, url: &str, body: &Value) -> Reply {
    let path: Vec<&str> = url
        .split('?')
        .next()
        .unwrap_or("")
        .trim_matches('/')
        .split('/')
        .collect();
    let now = api.clock.now();
    let db = || Db::open(&api.data.database()).map_err(db_error);
    let result: Result<Value, Reply> = (|| {
        match (method, path.as_slice()) {
        ("GET", ["v1", "sites"]) => {
            let sites = db()?.sites().map_err(db_error)?;
            Ok(json!(sites
                .iter()
                .map(|s| json!({"name": s.name, "tz": s.tz, "windows": s.windows, "cap_mbit": s.cap_mbit,
                                "takeover": s.takeover.as_str()}))
                .collect::<Vec<_>>()))
        }
        ("POST", ["v1", "sites"]) => {
            let cap = body
                .get("cap_mbit")
                .and_then(Value::as_u64)
                .ok_or_else(|| error(400, "missing number field \"cap_mbit\""))?;
            let windows = body
                .get("windows")
                .and_then(Value::as_str)
                .unwrap_or("22:00-06:00");
            let takeover = match body.get("takeover").and_then(Value::as_str) {
                Some(t) => Some(t.parse().map_err(|e| error(400, e))?),
                None => None,
            };
            db()?
                .add_site(
                    str_field(body, "name")?,
                    str_field(body, "tz")?,
                    windows,
                    cap,
                    takeover,
                )
                .map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("POST", ["v1", "rooms"]) => {
            db()?
                .add_room(str_field(body, "site")?, str_field(body, "room")?)
                .map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("GET", ["v1", "masters"]) => Ok(json!(db()?
            .masters()
            .map_err(db_error)?
            .iter()
            .map(|m| json!({"name": m.0, "version": m.1, "size": m.2, "stored_bytes": m.3}))
            .collect::<Vec<_>>())),
        ("POST", ["v1", "masters"]) => import_master(api, body, now),
        ("DELETE", ["v1", "masters", name, version]) => {
            db()?.remove_master(name, version, now).map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("POST", ["v1", "calendar"]) => {
            let name = str_field(body, "file_name")?;
            let text = str_field(body, "text")?;
            let mut db = db()?;
            let n = if name.to_ascii_lowercase().ends_with(".ics") {
                db.import_ics(name, text)
            } else {
                db.import_csv(name, text)
            }
            .map_err(db_error)?;
            Ok(json!({"imported": n}))
        }
        ("GET", ["v1", "sessions"]) => Ok(json!(db()?
            .sessions(None)
            .map_err(db_error)?
            .iter()
            .map(
                |s| json!({"id": s.id, "site": s.site, "room": s.room, "master": s.master,
                            "version": s.version, "start": s.start, "end": s.end})
            )
            .collect::<Vec<_>>())),
        ("POST", ["v1", "sessions"]) => {
            db()?
                .add_session(
                    str_field(body, "site")?,
                    str_field(body, "room")?,
                    (str_field(body, "master")?, str_field(body, "version")?),
                    str_field(body, "start")?,
                    str_field(body, "end")?,
                )
                .map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("DELETE", ["v1", "sessions", id]) => {
            let id: i64 = id
                .parse()
                .map_err(|_| error(400, format!("{id:?} is not a session id")))?;
            db()?.remove_session(id).map_err(|e| error(404, e))?;
            Ok(json!({"ok": true}))
        }
        ("POST", ["v1", "seats"]) => {
            db()?
                .add_seat(
                    str_field(body, "site")?,
                    str_field(body, "room")?,
                    str_field(body, "seat")?,
                )
                .map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("POST", ["v1", "seats", how @ ("assign" | "replace")]) => {
            let (site, room, seat, node) = (
                str_field(body, "site")?,
                str_field(body, "room")?,
                str_field(body, "seat")?,
                str_field(body, "node")?,
            );
            let bound = db()?
                .bind_seat(site, room, seat, node, *how == "replace")
                .map_err(db_error)?;
            tracing::info!(%site, %room, %seat, %node, replaced = ?bound.replaced, "seat bound by the DSI");
            Ok(json!({"site": site, "room": room, "seat": seat, "node": node,
                      "replaced": bound.replaced,
                      "moved_from": bound.moved_from.map(|(r, s)| format!("{r}/{s}"))}))
        }
        ("GET", ["v1", "seats"]) => {
            let site = query_param(url, "site");
            let states = db()?.seat_states(site.as_deref()).map_err(db_error)?;
            if let (Some(site), true) = (&site, states.is_empty()) {
                return Err(db_error(DbError::NoSite(site.clone())));
            }
            Ok(seats_json(&states, now, api.silent_after_secs))
        }
        ("GET", ["v1", "plan"]) => {
            let db = db()?;
            let classes = api.classes.get(&db).map_err(db_error)?;
            let holds = db.holds_by_site().map_err(db_error)?;
            let plan = db
                .plan_with(now, &api.settings, &holds, &classes)
                .map_err(db_error)?;
            Ok(crate::plan_json(&plan))
        }
        ("POST", ["v1", "overrides"]) => {
            let hours = body.get("hours").and_then(Value::as_u64).unwrap_or(4).clamp(1, 72);
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
            .map(|o| json!({"id": o.0, "site": o.1, "master": o.2, "version": o.3, "reason": o.4,
                            "by": o.5, "created_at": o.6, "until": o.7}))
            .collect::<Vec<_>>())),
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
                            "state": n.status.get("state").cloned().unwrap_or_default(),
                            "attention": n.attention(), "status": n.status}))
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
        ("POST", ["v1", "sites", site, "accept-new"]) => {
            let minutes = body
                .get("minutes")
                .and_then(Value::as_u64)
                .ok_or_else(|| error(400, "missing number field \"minutes\" (0 closes)"))?;
            if minutes > 7 * 24 * 60 {
                return Err(error(400, "a site is opened for new NUCs for a week at most"));
            }
            let until = now.saturating_add(minutes as i64 * 60);
            db()?.accept_new(site, until).map_err(db_error)?;
            Ok(json!({"site": site, "until": (minutes > 0).then_some(until)}))
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
            let token = crate::issue_token(&api.data, role, site, now as u64, hours * 3600)
                .map_err(|e| error(500, e))?;
            Ok(json!({"token": token.to_string()}))
        }
        _ => Err(error(404, format!("no route {method} {url}"))),
    }
    })();
    match result {
        Ok(v) => (200, v),
        Err(reply) => reply,
    }
}

/// `key`'s value in the query string of `url`, if any (values are ids: no percent-decoding).
fn query_param(url: &str, key: &str) -> Option<String> {
    url.split_once('?')?
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, v)| *k == key && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// Seats with their nodes (silent or not) and spares (whether they count, and why they wait).
fn seats_json(states: &[crate::takeover::Site], now: i64, silent_after: i64) -> Value {
    use crate::takeover::{decide, Decision};
    let mut seats = Vec::new();
    let mut spares = Vec::new();
    for site in states {
        let decisions = decide(site, now, silent_after);
        for s in &site.seats {
            seats.push(
                json!({"site": site.name, "room": s.room, "seat": s.seat, "node": s.node,
                              "last_seen": s.last_seen, "silent": s.is_silent(now, silent_after)}),
            );
        }
        for s in &site.spares {
            let decision = decisions.iter().find_map(|d| match d {
                Decision::Wait { spare, reason } if *spare == s.node => Some(reason.clone()),
                Decision::Bind {
                    spare, room, seat, ..
                } if *spare == s.node => {
                    Some(format!("takes over {room}/{seat} at the next check"))
                }
                _ => None,
            });
            let recent = s
                .last_seen
                .is_some_and(|t| now.saturating_sub(t) <= silent_after);
            spares.push(
                json!({"site": site.name, "node": s.node, "last_seen": s.last_seen,
                               "recent": recent, "waiting": decision}),
            );
        }
    }
    json!({"seats": seats, "spares": spares})
}

/// Imports an image on the controller's disk into the store and registers it: chunks are durable
/// before the catalogue names the master, so a crash at any point leaves a consistent catalogue.
/// Only that file is read (`format`, if given, pins its format; see `image_tools::import`), and the
/// signed manifest and every chunk are checked again (`crate::check_master`) before the row is written.
fn import_master(api: &Api, body: &Value, now: i64) -> Result<Value, Reply> {
    let image = PathBuf::from(str_field(body, "image")?);
    let name = str_field(body, "name")?
        .parse()
        .map_err(|e| error(400, e))?;
    let version = str_field(body, "version")?
        .parse()
        .map_err(|e| error(400, e))?;
    let format = match body.get("format") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| error(400, "field \"format\" must be a string"))?
                .parse::<image_tools::import::ImageFormat>()
                .map_err(|e| error(400, e))?,
        ),
    };
    let key = image_tools::SigningKey::load(&api.data.signing_key()).map_err(|e| error(500, e))?;
    let store = image_tools::LocalStore::open(&api.data.store()).map_err(|e| error(500, e))?;
    let opts = image_tools::import::ImportOptions {
        name,
        version,
        params: image_tools::ChunkParams::DEFAULT,
        threads: 0,
    };
    let report = image_tools::import::import_file(&image, format, &store, &key, &opts, &|_, _| {})
        .map_err(|e| error(400, format!("{e:#}")))?;
    drop(store);
    let manifest = crate::check_master(&api.data, report.manifest.bytes().to_vec())
        .map_err(|e| error(500, format!("{e:#}")))?;
    Db::open(&api.data.database())
        .and_then(|db| db.add_master(&manifest, manifest.bytes(), now))
        .map_err(db_error)?;
    let s = manifest.summary();
    Ok(json!({
        "name": opts.name.as_str(), "version": opts.version.as_str(), "size": report.bytes_read,
        "new_chunks": report.new_chunks, "new_stored_bytes": report.new_stored_bytes,
        "replaced_chunks": report.replaced_chunks, "chunks": s.chunks, "hole_bytes": s.hole_bytes,
    }))
}
