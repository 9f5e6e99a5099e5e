//! The HTTP client of the controller's admin API (ureq, plain HTTP: the API listens on loopback):
//! the request and answer types of `image_tools::api` as JSON, the admin token as a bearer token,
//! and timeouts, so a controller that accepts the connection but never answers makes the command
//! fail instead of hang.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use image_tools::api::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Waiting for an import's answer: the controller answers when every chunk is stored, which for a
/// 60 GB image takes minutes, not hours.
pub const IMPORT_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// The largest answer read (a calendar of years is a few MiB).
const MAX_ANSWER: u64 = 64 << 20;

#[derive(Debug)]
pub struct Client {
    /// `http://host:port`, without a trailing slash.
    pub url: String,
    pub token: String,
    /// How long the controller may stay silent while answering (each read).
    pub timeout: Duration,
}

impl Client {
    /// `url` is `http://host:port` (the controller's `--api`).
    pub fn new(url: &str, token: String, timeout: Duration) -> Result<Client> {
        if !url.starts_with("http://") {
            bail!("--api {url:?} must start with http://");
        }
        Ok(Client {
            url: url.trim_end_matches('/').to_owned(),
            token,
            timeout,
        })
    }

    /// A request without a body (`GET`, `DELETE`, an approval), answered within the timeout.
    pub fn ask<A: DeserializeOwned>(&self, method: &str, path: &str) -> Result<A> {
        self.exchange(method, path, String::new(), self.timeout)
    }

    /// A request with `body`, answered within the client's timeout.
    pub fn send<B: Serialize, A: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<A> {
        self.send_waiting(method, path, body, self.timeout)
    }

    /// A request with `body` whose answer may take up to `wait` (an import).
    pub fn send_waiting<B: Serialize, A: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
        wait: Duration,
    ) -> Result<A> {
        let body = serde_json::to_string(body)
            .with_context(|| format!("cannot write the body of {method} {path}"))?;
        self.exchange(method, path, body, wait)
    }

    /// One request; its answer read as an `A` (a 200) or an `ApiError` (any other status).
    fn exchange<A: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: String,
        wait: Duration,
    ) -> Result<A> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(wait))
            .timeout_per_write(Some(self.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .body(body)
            .with_context(|| format!("bad request {method} {path}"))?;
        let mut response = agent.run(request).map_err(|e| self.explain(e, wait))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| self.explain(e, wait))?;
        if status != 200 {
            let message = serde_json::from_str::<ApiError>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| "no details".to_owned());
            bail!("{message} (HTTP {status})");
        }
        serde_json::from_str(&text).with_context(|| {
            format!(
                "the admin API at {} sent an answer to {method} {path} that this nightcast does not understand",
                self.url
            )
        })
    }

    fn explain(&self, e: ureq::Error, wait: Duration) -> anyhow::Error {
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect) => anyhow::anyhow!(
                "timed out connecting to the controller's admin API at {} (after {}s)",
                self.url,
                CONNECT_TIMEOUT.as_secs()
            ),
            ureq::Error::Timeout(_) => anyhow::anyhow!(
                "timed out: the controller's admin API at {} did not answer within {}s (--timeout)",
                self.url,
                wait.as_secs()
            ),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                anyhow::anyhow!(
                    "cannot reach the controller's admin API at {}: is `nightcast-controller serve` running there? ({io})",
                    self.url
                )
            }
            other => anyhow::Error::new(other).context(format!(
                "talking to the controller's admin API at {}",
                self.url
            )),
        }
    }
}
