//! The admin API: HTTP with JSON bodies, on localhost by default, every request carrying
//! `Authorization: Bearer <token>` (the token is `DATA/admin.token`, mode 0600). The `nightcast` CLI
//! is its client. Bounded: connections are read by tokio tasks with a timeout (an idle client
//! costs no thread), a request with the right token runs on one of `WORKERS` threads (catalogue
//! calls are short SQLite transactions; a master import holds its worker for minutes), and what
//! exceeds `MAX_CONNECTIONS` or `QUEUE` is answered 503 at once. One request per connection.
//!
//! Routes (all under `/v1`): `GET|POST sites`, `POST rooms`, `GET seats[?site=S]`, `POST seats`,
//! `POST seats/assign`, `POST seats/replace`, `GET|POST masters`,
//! `DELETE masters/NAME/VERSION`, `POST calendar`, `GET|POST sessions`, `DELETE sessions/ID`,
//! `GET plan`, `GET fleet`, `GET|POST overrides`, `POST tokens`.
//! Errors are `{"error": "..."}` with 400 (bad input), 401 (token), 404, 408 (too slow), 409
//! (conflict), 411, 413, 431, 500, 503 (busy).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError};
use crate::DataDir;

/// Bodies above this are refused (a term's calendar is far smaller).
pub const MAX_BODY: u64 = 16 << 20;

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

/// Threads that run admin requests (catalogue transactions, imports).
pub const WORKERS: usize = 4;
/// Requests waiting for a worker; one more is answered 503 at once.
pub const QUEUE: usize = 16;
/// Connections open at once (each a task, no thread, while it sends its request); one more is
/// answered 503 at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send its whole request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The request line and headers.
const MAX_HEAD: usize = 16 << 10;

/// A request read in full, its token already checked.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub body: Vec<u8>,
}

/// A request handed to a worker, and where its answer goes.
type Job = (Request, tokio::sync::oneshot::Sender<Reply>);

/// Serves until `shutdown`. Connections are read by tasks (an idle or slow client costs no
/// thread, and has `IO_TIMEOUT` to send its request); a request with the right token goes to a
/// bounded queue of `WORKERS` threads. Over `MAX_CONNECTIONS` or `QUEUE`, the answer is 503.
pub async fn serve(listener: TcpListener, api: Arc<Api>, shutdown: CancellationToken) {
    let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..WORKERS {
        let (api, queue) = (api.clone(), queue.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("admin-api-{i}"))
            .spawn(move || loop {
                let job = match queue.lock() {
                    Ok(q) => q.recv(),
                    Err(_) => return,
                };
                let Ok((request, reply)) = job else { return };
                let _ = reply.send(handle(&api, request));
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start an admin API worker");
        }
    }
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin API accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "admin API: too many connections, answered 503");
            tokio::spawn(async move { answer(&mut stream, busy()).await });
            continue;
        };
        let (api, jobs) = (api.clone(), jobs.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let reply =
                match tokio::time::timeout(IO_TIMEOUT, read_request(&mut stream, &api.token)).await
                {
                    Err(_) => error(408, "the request took too long to arrive"),
                    Ok(Err(reply)) => reply,
                    Ok(Ok(request)) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        match jobs.try_send((request, tx)) {
                            Ok(()) => rx
                                .await
                                .unwrap_or_else(|_| error(500, "the admin API is stopping")),
                            Err(_) => {
                                tracing::warn!(%peer, "admin API: all workers busy, answered 503");
                                busy()
                            }
                        }
                    }
                };
            answer(&mut stream, reply).await;
        });
    }
}

fn busy() -> Reply {
    error(503, "the controller is busy: try again in a moment")
}

/// Reads one request: head (at most `MAX_HEAD`), token, then a body of `Content-Length` bytes
/// (at most `MAX_BODY`). A request without the right token is refused before its body is read.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, token: &str) -> Result<Request, Reply> {
    let mut buf = Vec::with_capacity(4096);
    let head = loop {
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| error(400, format!("cannot read the request: {e}")))?;
        if n == 0 {
            return Err(error(400, "the request ended early"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf, token)? {
            break head;
        }
    };
    let Head {
        len: head_len,
        method,
        url,
        length,
    } = head;
    let mut body = buf.split_off(head_len);
    body.truncate(length as usize);
    // The body grows as its bytes arrive: a Content-Length alone allocates nothing.
    let rest = length - body.len() as u64;
    stream
        .take(rest)
        .read_to_end(&mut body)
        .await
        .map_err(|e| error(400, format!("cannot read the request body: {e}")))?;
    if body.len() as u64 != length {
        return Err(error(400, "the request body ended early"));
    }
    Ok(Request { method, url, body })
}

/// A request's head: its length in bytes, method, URL and the body's `Content-Length`.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub method: String,
    pub url: String,
    /// At most `MAX_BODY`.
    pub length: u64,
}

/// The head at the front of `buf` (the bytes read so far): `Ok(None)` while it is incomplete and
/// under `MAX_HEAD`; an error reply (400, 401, 411, 413, 431) if it is not HTTP, lacks the admin
/// token, or announces a body it will not get. Sans-IO: `read_request` feeds it.
pub fn parse_head(buf: &[u8], token: &str) -> Result<Option<Head>, Reply> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (method, url, length) = head(&parsed, token)?;
            if length > MAX_BODY {
                return Err(error(413, "request body too large"));
            }
            Ok(Some(Head {
                len,
                method,
                url,
                length,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Ok(None),
        Ok(httparse::Status::Partial) => Err(error(431, "request head too large")),
        Err(e) => Err(error(400, format!("not an HTTP request: {e}"))),
    }
}

/// Method, URL and body length of a parsed head, if it carries the admin token.
fn head(parsed: &httparse::Request, token: &str) -> Result<(String, String, u64), Reply> {
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let authorized = header("Authorization")
        .is_some_and(|v| constant_time_eq(v, format!("Bearer {token}").as_bytes()));
    if !authorized {
        return Err(error(
            401,
            "missing or wrong admin token: use the one in the controller's DATA/admin.token",
        ));
    }
    if header("Transfer-Encoding").is_some() {
        return Err(error(411, "send the body with a Content-Length"));
    }
    let length = match header("Content-Length") {
        None => 0,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| error(400, "bad Content-Length"))?,
    };
    let (Some(method), Some(url)) = (parsed.method, parsed.path) else {
        return Err(error(400, "no method or path"));
    };
    Ok((method.to_owned(), url.to_owned(), length))
}

/// Writes the answer (within `IO_TIMEOUT`) and closes the connection.
async fn answer(stream: &mut TcpStream, (status, body): Reply) {
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, write).await;
}

/// An answer: status and JSON body.
pub type Reply = (u16, Value);

fn error(status: u16, message: impl std::fmt::Display) -> Reply {
    (status, json!({ "error": message.to_string() }))
}

/// Runs one request (its token was checked when it was read).
pub fn handle(api: &Api, request: Request) -> Reply {
    let Request { method, url, body } = request;
    let (status, body) = if body.is_empty() {
        route(api, &method, &url, &Value::Null)
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => route(api, &method, &url, &v),
            Err(e) => error(400, format!("the body is not JSON: {e}")),
        }
    };
    tracing::info!(%method, %url, status, "admin request");
    if status == 200 && method != "GET" {
        api.changed.notify_one();
    }
    (status, body)
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
            let masters = db.masters().map_err(db_error)?;
            let masters = masters.into_iter().map(|m| (m.0, m.1)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "t0ken";

    /// An initialised data directory with one site, room and seat, served by an `Api` at a fixed time.
    fn api() -> (tempfile::TempDir, Api) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().to_owned());
        let now = 1_796_164_200;
        crate::init(&data, now).unwrap();
        let db = Db::open(&data.database()).unwrap();
        db.add_site("lyon", "Europe/Paris", "22:00-06:00", 20, None)
            .unwrap();
        db.add_room("lyon", "salle-1").unwrap();
        db.add_seat("lyon", "salle-1", "s1").unwrap();
        let api = Api {
            data,
            token: TOKEN.into(),
            clock: image_tools::clock::Clock::parse_now("start=2026-12-01T22:30:00Z").unwrap(),
            settings: crate::plan::Settings {
                staging_margin_secs: 7200,
                risk_slack_secs: 7200,
            },
            silent_after_secs: 1800,
            changed: Arc::new(tokio::sync::Notify::new()),
            classes: crate::plan::ClassCache::default(),
        };
        (dir, api)
    }

    /// Field names the routes read (`image` left out: a master import reads the file it names).
    const FIELDS: &[&str] = &[
        "name",
        "tz",
        "windows",
        "cap_mbit",
        "takeover",
        "site",
        "room",
        "seat",
        "node",
        "master",
        "version",
        "start",
        "end",
        "file_name",
        "text",
        "hours",
        "reason",
        "by",
        "minutes",
        "role",
        "ttl_hours",
        "format",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            prop::sample::select(vec![
                "lyon",
                "salle-1",
                "s1",
                "win10",
                "1",
                "Europe/Paris",
                "22:00-06:00",
                "relay",
                "agent",
                "auto",
                "confirm",
                "x.ics",
                "x.csv",
                "2026-12-03 08:30",
                "../..",
                "",
            ])
            .prop_map(Value::from),
            "\\PC{0,40}".prop_map(Value::from),
        ]
    }

    fn body() -> impl Strategy<Value = Value> {
        let object = proptest::collection::vec((prop::sample::select(FIELDS), leaf()), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
        prop_oneof![
            3 => object,
            1 => leaf(),
            1 => proptest::collection::vec(leaf(), 0..4).prop_map(Value::from),
        ]
    }

    fn url() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            prop::sample::select(vec![
                "v1",
                "sites",
                "rooms",
                "seats",
                "assign",
                "replace",
                "masters",
                "calendar",
                "sessions",
                "plan",
                "fleet",
                "overrides",
                "tokens",
                "nodes",
                "approve",
                "revoke",
                "accept-new",
                "lyon",
                "win10",
                "1",
                "-1",
                "..",
                "",
            ])
            .prop_map(str::to_owned),
            "[^/?]{0,12}",
        ];
        (
            proptest::collection::vec(segment, 0..5),
            "(\\?[a-z=&]{0,12})?",
        )
            .prop_map(|(segments, query)| format!("/{}{query}", segments.join("/")))
    }

    fn method() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec!["GET", "POST", "DELETE", "PUT"]).prop_map(str::to_owned),
            "[A-Z]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes as a request head: incomplete, an error reply, or a head within the bytes read
        /// whose body is at most `MAX_BODY`; never a panic.
        #[test]
        fn any_head_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            check_head(&bytes)?;
        }

        /// Mutations of a valid request, head and body, through the reader as a connection feeds it.
        #[test]
        fn mutated_requests_are_read_or_refused(
            edits in proptest::collection::vec(any::<(u8, usize, usize)>().prop_map(image_tools::mutation::Edit::from), 1..6),
            length in prop_oneof![Just(None), (0u64..64).prop_map(Some), any::<u64>().prop_map(Some)],
        ) {
            let body = r#"{"site":"lyon","room":"salle-2"}"#;
            let length = length.unwrap_or(body.len() as u64);
            let valid = format!(
                "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n{body}"
            );
            let bytes = image_tools::mutation::mutate(valid.as_bytes(), &edits);
            check_head(&bytes)?;
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            match rt.block_on(read_request(&mut &bytes[..], TOKEN)) {
                Ok(r) => prop_assert!(r.body.len() < bytes.len() && !r.method.is_empty()),
                Err((status, _)) => prop_assert!(matches!(status, 400 | 401 | 411 | 413 | 431), "{status}"),
            }
        }
    }

    /// Runs `check` on 256 cases of `strategy` against one data directory (making one costs a CA
    /// and a few fsyncs: too slow for every case).
    fn against_one_api<S: Strategy>(
        strategy: S,
        check: impl Fn(&Api, S::Value) -> Result<(), TestCaseError>,
    ) {
        let (_dir, api) = api();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
        if let Err(e) = runner.run(&strategy, |v| check(&api, v)) {
            panic!("{e}");
        }
    }

    /// Whatever the method, URL and JSON body, the admin API answers (never panics), and
    /// nonsense is the client's fault (4xx), never the controller's (500).
    #[test]
    fn any_request_gets_an_answer_and_nonsense_a_4xx() {
        against_one_api((method(), url(), body()), |api, (method, url, body)| {
            let (status, answer) = route(api, &method, &url, &body);
            prop_assert!(
                matches!(status, 200 | 400 | 404 | 409),
                "{method} {url} {body}: {status} {answer}"
            );
            Ok(())
        });
    }

    /// Raw request bodies: anything that is not JSON is a 400.
    #[test]
    fn any_body_bytes_get_an_answer() {
        let bytes = proptest::collection::vec(any::<u8>(), 1..200);
        against_one_api((url(), bytes), |api, (url, body)| {
            let (status, _) = handle(
                api,
                Request {
                    method: "POST".into(),
                    url,
                    body,
                },
            );
            prop_assert!(matches!(status, 200 | 400 | 404 | 409), "{status}");
            Ok(())
        });
    }

    fn check_head(bytes: &[u8]) -> Result<(), TestCaseError> {
        match parse_head(bytes, TOKEN) {
            Ok(None) => prop_assert!(bytes.len() < MAX_HEAD),
            Ok(Some(h)) => prop_assert!(h.len <= bytes.len() && h.length <= MAX_BODY),
            Err((status, _)) => prop_assert!(matches!(status, 400 | 401 | 411 | 413 | 431)),
        }
        Ok(())
    }

    #[test]
    fn a_request_is_read_whole_and_a_short_body_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let read = |text: &str| rt.block_on(read_request(&mut text.as_bytes(), TOKEN));
        let r = read(
            "POST /v1/rooms HTTP/1.1\r\nAuthorization: Bearer t0ken\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.url.as_str(), &r.body[..]),
            ("POST", "/v1/rooms", &b"{}"[..])
        );
        let short = read("POST /v1/rooms HTTP/1.1\r\nAuthorization: Bearer t0ken\r\nContent-Length: 99\r\n\r\n{}");
        assert_eq!(short.unwrap_err().0, 400);
        let huge = read(
            "POST / HTTP/1.1\r\nAuthorization: Bearer t0ken\r\nContent-Length: 99999999999\r\n\r\n",
        );
        assert_eq!(huge.unwrap_err().0, 413);
        let stranger =
            read("POST / HTTP/1.1\r\nAuthorization: Bearer nope\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(stranger.unwrap_err().0, 401);
    }

    #[test]
    fn a_token_lives_a_month_at_most() {
        let (_dir, api) = api();
        let ask = |ttl: Value| {
            route(
                &api,
                "POST",
                "/v1/tokens",
                &json!({"role": "agent", "site": "lyon", "ttl_hours": ttl}),
            )
            .0
        };
        assert_eq!(ask(json!(24)), 200);
        assert_eq!(ask(json!(u64::MAX)), 400);
        assert_eq!(ask(json!(0)), 400);
    }

    #[test]
    fn numbers_beyond_the_database_are_refused() {
        let (_dir, api) = api();
        let site = |cap: Value| {
            route(
                &api,
                "POST",
                "/v1/sites",
                &json!({"name": "nice", "tz": "Europe/Paris", "cap_mbit": cap}),
            )
        };
        let (status, answer) = site(json!(u64::MAX));
        assert_eq!(status, 400, "{answer}");
        let (status, answer) = route(
            &api,
            "DELETE",
            "/v1/sessions/99999999999999999999",
            &Value::Null,
        );
        assert_eq!(status, 400, "{answer}");
    }
}
