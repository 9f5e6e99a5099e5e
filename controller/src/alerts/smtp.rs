//! Plain SMTP to a relay the DSI runs (Postfix, Exim, the site's smarthost): the few lines of the
//! dialogue over a `TcpStream` with timeouts (RFC 5321: EHLO, MAIL, RCPT, DATA, QUIT), no
//! authentication, no TLS. Enough for a local relay, which then carries the mail on; a crate for
//! this (lettre) would bring a dozen more for what is twenty lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Time to connect, and for each reply.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where and to whom the e-mails go (`[alerts] smtp`, `from`, `to`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Smtp {
    /// `host:port`.
    pub server: String,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("SMTP server {server}: {source}")]
    Io {
        server: String,
        source: std::io::Error,
    },
    #[error("SMTP server {server} refused {step}: {reply}")]
    Refused {
        server: String,
        step: String,
        reply: String,
    },
}

impl Smtp {
    /// Sends one e-mail; `date` is its `Date:` header (RFC 2822).
    pub fn send(&self, subject: &str, body: &str, date: &str) -> Result<(), SmtpError> {
        let io = |source| SmtpError::Io {
            server: self.server.clone(),
            source,
        };
        let stream = connect(&self.server).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
        let mut writer = stream;
        let mut step = |command: Option<&str>, expect: u16| -> Result<(), SmtpError> {
            if let Some(c) = command {
                writer
                    .write_all(format!("{c}\r\n").as_bytes())
                    .map_err(io)?;
            }
            let (code, reply) = read_reply(&mut reader).map_err(io)?;
            if code != expect {
                return Err(SmtpError::Refused {
                    server: self.server.clone(),
                    step: command.map_or("the connection".to_owned(), |c| {
                        c.split(':').next().unwrap_or(c).to_owned()
                    }),
                    reply,
                });
            }
            Ok(())
        };
        let domain = self.from.rsplit('@').next().unwrap_or("localhost");
        step(None, 220)?;
        step(Some(&format!("EHLO {domain}")), 250)?;
        step(Some(&format!("MAIL FROM:<{}>", self.from)), 250)?;
        for to in &self.to {
            step(Some(&format!("RCPT TO:<{to}>")), 250)?;
        }
        step(Some("DATA"), 354)?;
        let message = message(&self.from, &self.to, subject, body, date);
        step(Some(&format!("{message}\r\n.")), 250)?;
        // The mail is accepted; a server that closes without its 221 loses nothing.
        let _ = step(Some("QUIT"), 221);
        Ok(())
    }
}

fn connect(server: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in server.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the name has no address")))
}

/// A reply's code and its text, over all its lines (`250-...` continues, `250 ...` ends).
fn read_reply(reader: &mut impl BufRead) -> std::io::Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        // Bounded: a reply line longer than this is not a server we talk to.
        if reader.by_ref().take(4096).read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        let line = line.trim_end();
        text.push_str(line);
        let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
        let Some(code) = code else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an SMTP reply: {line:?}"),
            ));
        };
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
        text.push(' ');
    }
}

/// The message as DATA sends it: headers, a blank line, the body with CRLF line ends and every
/// line starting with a dot doubled (RFC 5321 4.5.2), without the final dot.
fn message(from: &str, to: &[String], subject: &str, body: &str, date: &str) -> String {
    let mut out = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        to.join(", "),
        subject.replace(['\r', '\n'], " ")
    );
    for line in body.lines() {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.truncate(out.len() - 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_starting_with_a_dot_is_doubled_and_lines_end_in_crlf() {
        let m = message(
            "nc@example.org",
            &["a@example.org".into(), "b@example.org".into()],
            "s\r\nBcc: x",
            "one\n.two\nthree",
            "Wed, 2 Dec 2026 07:00:00 +0100",
        );
        assert!(m.starts_with("From: nc@example.org\r\nTo: a@example.org, b@example.org\r\n"));
        assert!(m.contains("Subject: s  Bcc: x\r\n"), "{m}");
        assert!(m.ends_with("\r\n\r\none\r\n..two\r\nthree"), "{m:?}");
    }

    #[test]
    fn a_multiline_reply_is_read_whole_and_garbage_is_refused() {
        let mut r =
            std::io::Cursor::new(b"250-smtp.example\r\n250-8BITMIME\r\n250 OK\r\n".to_vec());
        assert_eq!(
            read_reply(&mut r).unwrap(),
            (250, "250-smtp.example 250-8BITMIME 250 OK".to_owned())
        );
        let mut r = std::io::Cursor::new(b"HTTP/1.1 400\r\n".to_vec());
        assert!(read_reply(&mut r).is_err());
        let mut r = std::io::Cursor::new(Vec::new());
        assert!(read_reply(&mut r).is_err());
    }

    /// A server that answers `replies` in turn, one per line it reads (the greeting first), and
    /// hands back what it read.
    fn server(replies: &'static [&'static str]) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut out, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(out.try_clone().unwrap());
            let mut read = String::new();
            for (i, reply) in replies.iter().enumerate() {
                if i > 0 {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        break;
                    }
                    read.push_str(&line);
                }
                out.write_all(reply.as_bytes()).unwrap();
            }
            read
        });
        (addr, t)
    }

    #[test]
    fn a_refused_recipient_fails_the_mail_and_names_the_step_and_the_reply() {
        let (addr, t) = server(&[
            "220 hi\r\n",
            "250 hello\r\n",
            "250 ok\r\n",
            "550 5.1.1 no such user\r\n",
        ]);
        let smtp = Smtp {
            server: addr.clone(),
            from: "nc@example.org".into(),
            to: vec!["nobody@example.org".into()],
        };
        let e = smtp.send("s", "b", "d").unwrap_err().to_string();
        assert!(
            e.contains(&addr) && e.contains("RCPT TO") && e.contains("550 5.1.1 no such user"),
            "{e}"
        );
        let read = t.join().unwrap();
        assert!(
            read.starts_with("EHLO example.org\r\nMAIL FROM:<nc@example.org>\r\n"),
            "{read}"
        );
    }

    #[test]
    fn no_server_is_an_error_naming_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let smtp = Smtp {
            server: addr.clone(),
            from: "nc@example.org".into(),
            to: vec!["dsi@example.org".into()],
        };
        let e = smtp.send("s", "b", "d").unwrap_err().to_string();
        assert!(e.contains(&addr), "{e}");
    }
}
