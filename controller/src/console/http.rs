//! The console's HTTP, by hand and bounded, sans-IO: `parse` reads a request's head (httparse) and
//! says how many body bytes follow (a form: at most `MAX_FORM`), `form` decodes an
//! `application/x-www-form-urlencoded` body, `Response::bytes` writes an answer with the headers
//! every page carries (no caching, no framing, no script, no referrer).

use std::fmt::Write;

/// The request line and headers.
pub const MAX_HEAD: usize = 16 << 10;
/// A form's body (a login, a CSRF token and an id or two).
pub const MAX_FORM: usize = 16 << 10;
/// A calendar file uploaded (`POST /calendar`, multipart): a year of sessions for a large region.
pub const MAX_UPLOAD: usize = 4 << 20;
/// Where a body may be as large as `MAX_UPLOAD`.
pub const UPLOAD_PATH: &str = "/calendar";
/// Where a body is a master image, streamed to disk (`console::upload`), bounded by the config.
pub const IMAGE_UPLOAD_PATH: &str = "/masters/upload";

/// A request's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head in the buffer.
    pub len: usize,
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: String,
    pub cookie: Option<String>,
    /// `Content-Type` (a form, or `multipart/form-data; boundary=...` for an upload).
    pub content_type: Option<String>,
    /// The body's length (at most `MAX_FORM`, `MAX_UPLOAD` for an upload).
    pub length: usize,
}

/// The head at the front of `buf`: `Ok(None)` while incomplete, else the status to refuse it with
/// (400, 411, 413, 431).
pub fn parse(buf: &[u8]) -> Result<Option<Head>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(431),
        Err(_) => return Err(400),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    if header("Transfer-Encoding").is_some() {
        return Err(411);
    }
    let length = match header("Content-Length") {
        None => 0,
        Some(v) => v.trim().parse::<usize>().map_err(|_| 400u16)?,
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(400);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let max = if method == "POST" && path == UPLOAD_PATH {
        MAX_UPLOAD
    } else if method == "POST" && path == IMAGE_UPLOAD_PATH {
        // Streamed to disk as it arrives; the console's `max_upload_gb` bounds it.
        usize::MAX
    } else {
        MAX_FORM
    };
    if length > max {
        return Err(413);
    }
    Ok(Some(Head {
        len,
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        cookie: header("Cookie").map(str::to_owned),
        content_type: header("Content-Type").map(str::to_owned),
        length,
    }))
}

/// The fields of a form body or a query string, decoded (`+` and `%XX`); a field without `=` is
/// skipped, bytes that are not UTF-8 become U+FFFD.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter_map(|kv| {
            let i = kv.iter().position(|b| *b == b'=')?;
            Some((decode(&kv[..i]), decode(&kv[i + 1..])))
        })
        .collect()
}

/// Field `name` of decoded form `fields`.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub set_cookie: Vec<String>,
    /// For a redirect (303).
    pub location: Option<String>,
    /// May the browser keep it (the style sheet)?
    pub cacheable: bool,
}

impl Response {
    pub fn html(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            body,
            set_cookie: Vec::new(),
            location: None,
            cacheable: false,
        }
    }

    /// 303 to `to` (a path of ours).
    pub fn see_other(to: &str) -> Response {
        Response {
            location: Some(to.to_owned()),
            ..Response::html(303, String::new())
        }
    }

    pub fn with_cookie(mut self, cookie: String) -> Response {
        self.set_cookie.push(cookie);
        self
    }

    /// The bytes on the wire, `Connection: close`.
    pub fn bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            303 => "See Other",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            408 => "Request Timeout",
            411 => "Length Required",
            413 => "Payload Too Large",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Content-Security-Policy: default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'\r\n\
             X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
             Strict-Transport-Security: max-age=31536000\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        head.push_str(if self.cacheable {
            "Cache-Control: max-age=3600\r\n"
        } else {
            "Cache-Control: no-store\r\n"
        });
        if let Some(l) = &self.location {
            let _ = write!(head, "Location: {l}\r\n");
        }
        for c in &self.set_cookie {
            let _ = write!(head, "Set-Cookie: {c}\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, Strategy};

    #[test]
    fn a_head_is_read_with_its_cookie_query_and_length() {
        let req =
            b"POST /login?x=1 HTTP/1.1\r\nHost: a\r\nCookie: k=v\r\nContent-Length: 5\r\n\r\nab";
        let h = parse(req).unwrap().unwrap();
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/login");
        assert_eq!(h.query, "x=1");
        assert_eq!(h.cookie.as_deref(), Some("k=v"));
        assert_eq!(h.length, 5);
        assert_eq!(&req[h.len..], b"ab");
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost"), Ok(None));
    }

    #[test]
    fn oversized_chunked_and_broken_requests_are_refused() {
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n"),
            Err(413)
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(411)
        );
        assert_eq!(parse(b"\x00\x01 nonsense\r\n\r\n"), Err(400));
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes()), Err(431));
    }

    #[test]
    fn a_form_is_decoded() {
        let f = form(b"name=al+ice&password=p%C3%A9%26%3D&csrf=&broken&bad=%zz%4");
        assert_eq!(field(&f, "name"), Some("al ice"));
        assert_eq!(field(&f, "password"), Some("pé&="));
        assert_eq!(field(&f, "csrf"), Some(""));
        assert_eq!(field(&f, "broken"), None);
        assert_eq!(field(&f, "bad"), Some("%zz%4"));
    }

    /// What `parse` may answer for `bytes`: incomplete, a refusal with a known status, or a head
    /// within the bytes whose body is at most `MAX_FORM`.
    fn check(bytes: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        match parse(bytes) {
            Ok(None) => prop_assert!(bytes.len() < MAX_HEAD),
            Ok(Some(h)) => {
                prop_assert!(h.len <= bytes.len());
                prop_assert!(h.length <= MAX_UPLOAD || h.path == IMAGE_UPLOAD_PATH);
                prop_assert!(h.path.starts_with('/') || !h.method.is_empty());
            }
            Err(status) => prop_assert!(matches!(status, 400 | 411 | 413 | 431), "{status}"),
        }
        let _ = form(bytes);
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any bytes as a request or a form: an answer, never a panic.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            check(&bytes)?;
        }

        /// Mutations of a login as a browser posts it.
        #[test]
        fn mutated_logins_parse_or_are_refused(
            edits in proptest::collection::vec(proptest::prelude::any::<(u8, usize, usize)>().prop_map(image_tools::mutation::Edit::from), 1..6),
        ) {
            let body = "name=alice&password=p%C3%A9+x&csrf=00ff";
            let valid = format!(
                "POST /login HTTP/1.1\r\nHost: x\r\nCookie: __Host-nightcast-login=00ff\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            check(&image_tools::mutation::mutate(valid.as_bytes(), &edits))?;
            let fields = form(&image_tools::mutation::mutate(body.as_bytes(), &edits));
            prop_assert!(fields.len() <= body.len());
        }
    }

    #[test]
    fn every_answer_forbids_scripts_framing_and_caching() {
        let r = Response::see_other("/").with_cookie("a=b".into());
        let text = String::from_utf8(r.bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 303 See Other\r\n"));
        for h in [
            "Location: /\r\n",
            "Set-Cookie: a=b\r\n",
            "Cache-Control: no-store\r\n",
            "default-src 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(text.contains(h), "{h} in {text}");
        }
    }
}
