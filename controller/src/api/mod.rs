//! The admin API: HTTP with JSON bodies, on localhost by default, every request carrying
//! `Authorization: Bearer <token>` (the token is `DATA/admin.token`, mode 0600). The `nightcast` CLI
//! is its client. Bounded: connections are read by tokio tasks with a timeout (an idle client
//! costs no thread), a request with the right token runs on one of `WORKERS` threads (catalogue
//! calls are short SQLite transactions; a master import holds its worker for minutes), and what
//! exceeds `MAX_CONNECTIONS` or `QUEUE` is answered 503 at once. One request per connection.
//!
//! Routes (all under `/v1`): `GET|POST sites`, `PATCH|DELETE sites/SITE`,
//! `POST sites/SITE/accept-new`, `GET rooms[?site=S]`, `POST rooms`, `DELETE rooms/SITE/ROOM`,
//! `GET seats[?site=S]`, `POST seats`, `DELETE seats/SITE/ROOM/SEAT`, `POST seats/assign`,
//! `POST seats/replace`,
//! `GET|POST masters`, `DELETE masters/NAME/VERSION`, `POST calendar`, `GET|POST sessions`,
//! `POST sessions/ID/move`, `DELETE sessions/ID`, `GET plan`, `GET fleet`, `POST nodes/NODE/approve|revoke|reset|rollback|wake`,
//! `DELETE nodes/NODE`, `GET|POST overrides`, `GET pushes`, `POST tokens`; and `GET /metrics` (Prometheus text
//! format, the one route open without the token: see `metrics`). Their bodies and answers are the
//! types of `image_tools::api`, which the CLI uses too: a body is read into its request type
//! (unknown fields and bad ids refused with a 400 naming them) before the route runs, and ids in
//! the path are checked the same way. Errors are `image_tools::api::ApiError`,
//! `{"error": "..."}`, with 400 (bad input), 401 (token), 404, 408 (too slow), 409 (conflict),
//! 411, 413, 431, 500, 503 (busy).
//!
//! Modules: `http` (reading requests, writing answers), and the routes by resource: `places`
//! (sites, rooms, seats), `catalogue` (masters, calendar, sessions), `calendar` (an iCalendar
//! export synchronised), `plan` (plan, overrides), `push` (emergency pushes: checked, recorded, their verdict
//! per room), `fleet` (fleet, nodes, tokens); `metrics` (the
//! scrape).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError};
use crate::DataDir;

mod calendar;
mod catalogue;
mod fleet;
mod http;
mod metrics;
mod places;
mod plan;
mod push;

pub(crate) use fleet::{order as order_node, rows as fleet_rows};
use http::{answer, read_request};
pub use http::{parse_head, Head};
pub use plan::plan_rows;
pub(crate) use plan::rows_until as plan_rows_until;

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
    /// How often calendar feeds are polled (`[calendar] feed_poll_minutes`), for their listing.
    pub feed_poll_minutes: u32,
    /// The master imports under way (`GET masters/imports`).
    pub imports: crate::imports::Running,
    /// Woken after every change, so that relays see it at once (the server reloads its catalogue).
    pub changed: Arc<tokio::sync::Notify>,
    /// Chunk classes, rebuilt only when the set of masters changes.
    pub classes: crate::plan::ClassCache,
    /// The controller's counters (`/metrics`), shared with the chunk server.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `DATA/store`, the handle the chunk server reads (a pack store's handle sees at once what
    /// an import through it writes).
    pub store: Arc<dyn image_tools::store::DiskStore>,
    /// The port of `far_listen`, as bound (none: not configured): what a far site's relay is
    /// told to fetch through.
    pub far_port: Option<u16>,
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
type Job = (Request, tokio::sync::oneshot::Sender<Response>);

/// What goes back to the client: JSON (every route), or the metrics' text.
#[derive(Debug)]
pub enum Response {
    Json(Reply),
    Metrics(String),
}

impl From<Reply> for Response {
    fn from(reply: Reply) -> Response {
        Response::Json(reply)
    }
}

/// Runs one request (its token was checked when it was read, unless it is the scrape).
pub fn respond(api: &Api, request: Request) -> Response {
    if request.method == "GET" && request.url == metrics::PATH {
        return match metrics::scrape(api, api.clock.now()) {
            Ok(text) => Response::Metrics(text),
            Err(reply) => {
                tracing::warn!(status = reply.0, error = %reply.1, "metrics scrape failed");
                Response::Json(reply)
            }
        };
    }
    Response::Json(handle(api, request))
}

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
                let _ = reply.send(respond(&api, request));
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
            tokio::spawn(async move { answer(&mut stream, busy().into()).await });
            continue;
        };
        let (api, jobs) = (api.clone(), jobs.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let reply =
                match tokio::time::timeout(IO_TIMEOUT, read_request(&mut stream, &api.token)).await
                {
                    Err(_) => error(408, "the request took too long to arrive").into(),
                    Ok(Err(reply)) => reply.into(),
                    Ok(Ok(request)) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        match jobs.try_send((request, tx)) {
                            Ok(()) => rx
                                .await
                                .unwrap_or_else(|_| error(500, "the admin API is stopping").into()),
                            Err(_) => {
                                tracing::warn!(%peer, "admin API: all workers busy, answered 503");
                                busy().into()
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

/// An answer: status and JSON body.
pub type Reply = (u16, Value);

fn error(status: u16, message: impl std::fmt::Display) -> Reply {
    let body = image_tools::api::ApiError {
        error: message.to_string(),
    };
    (status, serde_json::to_value(body).unwrap_or(Value::Null))
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

/// A request from inside the controller (the web console) with a typed body: the same routes and
/// checks as when the CLI sends it, and the catalogue woken after a change.
pub fn call(api: &Api, method: &str, url: &str, body: &impl Serialize) -> Reply {
    let value = serde_json::to_value(body).unwrap_or(Value::Null);
    let (status, body) = route(api, method, url, &value);
    tracing::info!(%method, %url, status, "admin request from the web console");
    if status == 200 && method != "GET" {
        api.changed.notify_one();
    }
    (status, body)
}

/// A route's answer: `value` as JSON.
fn ok(value: impl Serialize) -> Answer {
    serde_json::to_value(value).map_err(|e| error(500, format!("cannot write the answer: {e}")))
}

/// An id named in the URL (`/v1/sites/SITE/...`), checked as its type: a 400 if it is not one.
fn path_id<T: std::str::FromStr>(segment: &str) -> Result<T, Reply>
where
    T::Err: std::fmt::Display,
{
    segment.parse().map_err(|e| error(400, e))
}

/// An id read back from the database, as its type. The catalogue only holds checked ids, so one
/// that is not is the controller's fault (500), named.
fn stored<T: std::str::FromStr>(value: &str) -> Result<T, Reply>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| error(500, format!("the catalogue holds a bad id: {e}")))
}

fn db_error(e: DbError) -> Reply {
    let status = match &e {
        DbError::NoSite(_)
        | DbError::NoRoom { .. }
        | DbError::NoMaster { .. }
        | DbError::NoMasterName(_)
        | DbError::NoSeat { .. }
        | DbError::NoAgent { .. }
        | DbError::NoRule(_)
        | DbError::NoFeed(_) => 404,
        DbError::MasterInUse { .. }
        | DbError::NotSpare { .. }
        | DbError::SiteExists(_)
        | DbError::PlaceInUse { .. } => 409,
        DbError::Invalid(_) | DbError::Calendar { .. } | DbError::Unmatched { .. } => 400,
        DbError::Sql(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            409
        }
        _ => 500,
    };
    error(status, e)
}

/// One request on its way through the routes.
struct Call<'a> {
    api: &'a Api,
    method: &'a str,
    url: &'a str,
    /// The URL's path, split at `/`.
    path: &'a [&'a str],
    body: &'a Value,
    now: i64,
}

impl Call<'_> {
    fn db(&self) -> Result<Db, Reply> {
        Db::open(&self.api.data.database()).map_err(db_error)
    }

    /// The body as the route's request type (see `image_tools::api`): a 400 that names the
    /// field when it is missing, unknown, of the wrong type or not a valid id.
    fn body<T: DeserializeOwned>(&self) -> Result<T, Reply> {
        if self.body.is_null() {
            return Err(error(
                400,
                format!("{} {} needs a JSON body", self.method, self.url),
            ));
        }
        T::deserialize(self.body).map_err(|e| error(400, format!("bad request body: {e}")))
    }
}

/// What a route answers: a JSON value (200), or an error reply.
type Answer = Result<Value, Reply>;

/// What a resource's `route` answers for a request that is not one of its routes (never sent).
const NO_ROUTE: Reply = (0, Value::Null);

/// A resource's answer, or `None` when it was `NO_ROUTE` (the request is another resource's).
fn routed(answer: Answer) -> Option<Answer> {
    match answer {
        Err((0, _)) => None,
        other => Some(other),
    }
}

fn route(api: &Api, method: &str, url: &str, body: &Value) -> Reply {
    let path: Vec<&str> = url
        .split('?')
        .next()
        .unwrap_or("")
        .trim_matches('/')
        .split('/')
        .collect();
    let call = Call {
        api,
        method,
        url,
        path: &path,
        body,
        now: api.clock.now(),
    };
    let answer = places::route(&call)
        .or_else(|| catalogue::route(&call))
        .or_else(|| calendar::route(&call))
        .or_else(|| plan::route(&call))
        .or_else(|| fleet::route(&call))
        .unwrap_or_else(|| Err(error(404, format!("no route {method} {url}"))));
    match answer {
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

#[cfg(test)]
mod tests;
