//! The metrics listener (`metrics_addr`, off unless set): plain HTTP, `GET /metrics` and nothing
//! else, answered with `crate::metrics::render` of the relay's counters, then the connection is
//! closed. Bounded: a few connections at once (more are closed at once), each with a few seconds
//! and a few KiB to send its request head; no request body is read.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Relay;
use crate::metrics::{render, Extra};

/// Connections served at once.
const CONNECTIONS: usize = 4;
/// Time a client has to send its request head and take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head.
const MAX_HEAD: usize = 8 << 10;

pub(super) async fn scrape_task(r: Arc<Relay>, listener: TcpListener, shutdown: CancellationToken) {
    let open = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections, closed");
            continue;
        };
        let r = r.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(IO_TIMEOUT, answer(&r, stream)).await;
        });
    }
}

/// Reads one request head and answers it.
async fn answer(r: &Relay, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let (status, body) = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match route(&buf) {
            Some(Route::Metrics) => break ("200 OK", r.metrics_text()),
            Some(Route::Other(status, why)) => break (status, format!("{why}\n")),
            None if buf.len() >= MAX_HEAD => {
                break (
                    "431 Request Header Fields Too Large",
                    "head too large\n".into(),
                )
            }
            None => {}
        }
    };
    let content_type = match status {
        "200 OK" => image_tools::metrics::CONTENT_TYPE,
        _ => "text/plain; charset=utf-8",
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Other(&'static str, &'static str),
}

/// What the head at the front of `buf` asks for; `None` while it is incomplete.
fn route(buf: &[u8]) -> Option<Route> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Route::Other("400 Bad Request", "not an HTTP request")),
        Ok(httparse::Status::Complete(_)) => Some(match (req.method, req.path) {
            (Some("GET"), Some("/metrics")) => Route::Metrics,
            (Some("GET"), _) => Route::Other("404 Not Found", "only /metrics here"),
            _ => Route::Other("405 Method Not Allowed", "only GET /metrics here"),
        }),
    }
}

impl Relay {
    /// The exposition of the relay's counters now.
    pub(super) fn metrics_text(&self) -> String {
        let masters = self.master_states();
        let connected = self.link.borrow().is_some();
        let mut stats = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        stats.masters = masters;
        stats.connected = connected;
        let agents = self
            .agents
            .lock()
            .map(|a| a.iter().map(|(n, a)| (n.clone(), a.last_seen)).collect())
            .unwrap_or_default();
        let extra = Extra {
            cap_bits_per_sec: {
                let plan = self.plan();
                let gate = self.gate(self.clock.now());
                crate::cache::cap_in_force(gate, &plan).bits_per_sec()
            },
            agents,
        };
        render(&stats, &extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_answered() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Route::Metrics)
        );
        assert!(matches!(
            route(b"GET /status.json HTTP/1.1\r\n\r\n"),
            Some(Route::Other("404 Not Found", _))
        ));
        assert!(matches!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Route::Other("405 Method Not Allowed", _))
        ));
        assert!(matches!(
            route(b"\x16\x03\x01 not http\r\n\r\n"),
            Some(Route::Other("400 Bad Request", _))
        ));
    }
}
