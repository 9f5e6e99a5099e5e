//! A minimal HTTP/1.1 client for the controller's admin API: one request per connection
//! (`Connection: close`), JSON in and out, the admin token as a bearer token.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(Debug)]
pub struct Client {
    /// `host:port`
    pub addr: String,
    pub token: String,
}

impl Client {
    /// `url` is `http://host:port` (the controller's `--api`).
    pub fn new(url: &str, token: String) -> Result<Client> {
        let addr = url
            .strip_prefix("http://")
            .with_context(|| format!("--api {url:?} must start with http://"))?
            .trim_end_matches('/')
            .to_owned();
        Ok(Client { addr, token })
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut stream = TcpStream::connect(&self.addr).with_context(|| {
            format!(
                "cannot reach the controller's admin API at {}: is `nightcast-controller serve` running there?",
                self.addr
            )
        })?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.take(64 << 20).read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, payload) = text
            .split_once("\r\n\r\n")
            .context("the admin API sent no HTTP response")?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("the admin API sent no HTTP status")?;
        let value: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        if status != 200 {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no details");
            bail!("{message} (HTTP {status})");
        }
        Ok(value)
    }
}
