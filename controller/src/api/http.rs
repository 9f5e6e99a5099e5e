//! The admin API's HTTP, by hand and bounded: one request per connection, its head read and
//! checked (token first, before any body byte) by the sans-IO `parse_head`, then a body of
//! `Content-Length` bytes; the answer written with `Connection: close`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{error, Reply, Request, Response, IO_TIMEOUT, MAX_BODY, MAX_HEAD};

/// Reads one request: head (at most `MAX_HEAD`), token, then a body of `Content-Length` bytes
/// (at most `MAX_BODY`). A request without the right token is refused before its body is read.
pub(super) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    token: &str,
) -> Result<Request, Reply> {
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

/// Method, URL and body length of a parsed head, if it carries the admin token or is the scrape
/// (`GET /metrics` without a body).
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
    let scrape = parsed.method == Some("GET")
        && parsed.path == Some(super::metrics::PATH)
        && header("Content-Length").is_none()
        && header("Transfer-Encoding").is_none();
    if !(authorized || scrape) {
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
pub(super) async fn answer(stream: &mut TcpStream, response: Response) {
    let (status, content_type, body) = match response {
        Response::Json((status, body)) => (status, "application/json", body.to_string()),
        Response::Metrics(text) => (200, image_tools::metrics::CONTENT_TYPE, text),
    };
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
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, write).await;
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
