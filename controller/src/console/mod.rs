//! The web console: HTTPS on `[console] listen` (off unless set), pages rendered here from the
//! admin API's types, a small embedded style sheet, no script and no asset from elsewhere. Users
//! log in with a password (`users`: roles admin, operator, readonly); a session is a random id in
//! a `Secure`, `HttpOnly`, `SameSite=Strict` cookie, and every form carries the session's CSRF
//! token. How to turn it on: `docs/CONSOLE.md`.
//!
//! Modules: `session` (sessions, CSRF and the brake on wrong passwords, pure), `users` (roles,
//! argon2id hashes, `user add`), `board` (the readiness board, pure), `pages` and `html` (HTML,
//! pure, everything escaped), `http` (requests and answers, sans-IO), `routes` (what each URL
//! does), `tls` (the certificate); this file is the I/O shell: connections, TLS handshakes and
//! time limits.
//!
//! Pages: `GET /` the board; `GET /rooms/SITE/ROOM` a room's sessions, NUCs and the site's NUCs
//! waiting to enrol; `POST /nodes/NODE/approve`; `GET /fleet` (`fleet`, `fleet_page`) and
//! `POST /nodes/NODE/reset|rollback|wake|revoke` (`GET .../revoke` asks first); `GET|POST
//! /calendar` (an upload, `multipart`) and `POST /overrides` (`calendar`, `calendar_page`);
//! `GET /masters` (`masters`, `masters_page`), with the cost of each version at each site
//! (`crate::cost`), `POST /masters/import` (a path on the controller) and `POST /masters/upload`
//! (an image streamed to disk as it arrives, `upload`), both run by `masters_import`;
//! `GET|POST /login`, `POST /logout`;
//! `GET /console.css`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub mod board;
pub mod calendar;
pub mod calendar_page;
pub mod fleet;
pub mod fleet_page;
pub mod html;
pub mod http;
pub mod masters;
pub mod masters_import;
pub mod masters_page;
pub mod multipart;
pub mod pages;
#[cfg(test)]
mod pages_tests;
pub mod routes;
pub mod session;
pub mod sessions;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod upload;
pub mod users;

/// Connections open at once; one more waits for a place (the listener is not read meanwhile).
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has for its TLS handshake and its request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `[console]` as `serve` runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub certificate: tls::Certificate,
    /// The largest master image taken as an upload (`upload`).
    pub max_upload_bytes: u64,
}

/// The console's state: the admin API's (database, clock, planner settings and cached chunk
/// classes, the reload signal), the open sessions, the wrong-password counts, and the last plan.
#[derive(Debug)]
pub struct Console {
    pub api: Arc<crate::api::Api>,
    pub sessions: Mutex<session::Sessions>,
    pub throttle: Mutex<session::Throttle>,
    /// The week's plan rows and when they were computed (see `PLAN_FRESH_SECS`).
    pub plan: Mutex<Option<(i64, Arc<Vec<image_tools::api::PlanRow>>)>>,
    /// The largest master image taken as an upload.
    pub max_upload: u64,
}

/// How long the board shows a plan before computing it again: a region of a thousand sites takes
/// a few hundred milliseconds to plan, and pages follow each other faster than the plan changes.
pub const PLAN_FRESH_SECS: i64 = 30;

/// Whether a plan computed at `computed` may still be shown at `now`.
pub fn plan_fresh(computed: i64, now: i64) -> bool {
    computed <= now && now < computed + PLAN_FRESH_SECS
}

impl Console {
    pub fn new(api: Arc<crate::api::Api>) -> Console {
        Console {
            api,
            sessions: Mutex::default(),
            throttle: Mutex::default(),
            plan: Mutex::default(),
            max_upload: 64_000_000_000,
        }
    }

    /// The plan rows of the sessions starting within `board::HORIZON_SECS` of `now` (past the
    /// horizon's first `PLAN_FRESH_SECS` too): the last ones if still fresh, else computed now.
    pub fn week_plan(
        &self,
        now: i64,
    ) -> Result<Arc<Vec<image_tools::api::PlanRow>>, crate::api::Reply> {
        if let Ok(cached) = self.plan.lock() {
            if let Some((at, rows)) = cached.as_ref() {
                if plan_fresh(*at, now) {
                    return Ok(rows.clone());
                }
            }
        }
        let until = now + board::HORIZON_SECS + PLAN_FRESH_SECS;
        let rows = Arc::new(crate::api::plan_rows_until(&self.api, now, until)?);
        if let Ok(mut cached) = self.plan.lock() {
            *cached = Some((now, rows.clone()));
        }
        Ok(rows)
    }

    /// Forgets the last plan (after an action that changes it).
    pub fn plan_changed(&self) {
        if let Ok(mut cached) = self.plan.lock() {
            *cached = None;
        }
    }
}

/// Serves HTTPS on `listener` until `shutdown`: a task per connection (handshake and request
/// within `IO_TIMEOUT`), the page made on a blocking thread (SQLite, the planner, argon2).
pub async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    console: Arc<Console>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "console accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, console) = (acceptor.clone(), console.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(mut tls)) = tokio::time::timeout(IO_TIMEOUT, acceptor.accept(stream)).await
            else {
                tracing::debug!(%peer, "console: no TLS handshake");
                return;
            };
            let response = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut tls)).await {
                Err(_) => routes::status(408),
                Ok(Err(status)) => routes::status(status),
                Ok(Ok((head, prefix))) if upload::is_upload(&head) => {
                    upload::receive(console.clone(), head, prefix, &mut tls).await
                }
                Ok(Ok((head, prefix))) => {
                    match tokio::time::timeout(IO_TIMEOUT, read_body(&mut tls, &head, prefix)).await
                    {
                        Err(_) => routes::status(408),
                        Ok(Err(status)) => routes::status(status),
                        Ok(Ok(body)) => {
                            let console = console.clone();
                            tokio::task::spawn_blocking(move || {
                                routes::handle(&console, &head, &body)
                            })
                            .await
                            .unwrap_or_else(|_| routes::status(500))
                        }
                    }
                }
            };
            let write = async {
                tls.write_all(&response.bytes()).await?;
                tls.shutdown().await
            };
            let _ = tokio::time::timeout(IO_TIMEOUT, write).await;
        });
    }
}

/// Reads a request's head, and the body bytes that came with it.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(http::Head, Vec<u8>), u16> {
    let mut buf = Vec::with_capacity(4096);
    let head = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
        match http::parse(&buf) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(413) => {
                drain(stream).await;
                return Err(413);
            }
            Err(status) => return Err(status),
        }
    };
    let body = buf.split_off(head.len);
    Ok((head, body))
}

/// The rest of a body of `Content-Length` bytes (a form), after `body`, the bytes read with the head.
async fn read_body<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    head: &http::Head,
    mut body: Vec<u8>,
) -> Result<Vec<u8>, u16> {
    body.truncate(head.length);
    let rest = (head.length - body.len()) as u64;
    stream
        .take(rest)
        .read_to_end(&mut body)
        .await
        .map_err(|_| 400u16)?;
    if body.len() != head.length {
        return Err(400);
    }
    Ok(body)
}

/// A body too large to take, read and thrown away (up to `MAX_DRAIN`, while it keeps coming)
/// so that the browser, still sending it, reads our answer instead of a broken connection.
pub(crate) async fn drain<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
    let mut chunk = vec![0u8; 64 << 10];
    let mut total = 0;
    while total < MAX_DRAIN {
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => return,
        }
    }
}

/// The most of a refused body read before answering.
const MAX_DRAIN: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_shown_for_thirty_seconds_and_never_from_the_future() {
        assert!(plan_fresh(100, 100));
        assert!(plan_fresh(100, 100 + PLAN_FRESH_SECS - 1));
        assert!(!plan_fresh(100, 100 + PLAN_FRESH_SECS));
        // A clock that went back: computed "later" than now is not trusted.
        assert!(!plan_fresh(100, 99));
    }
}
