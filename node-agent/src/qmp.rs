//! Talking to a running VM: QMP (QEMU's control socket) and the QEMU guest agent (a daemon inside
//! the guest, reached through a virtio-serial channel that QEMU exposes as a Unix socket).
//!
//! Both speak JSON, one object per line. Blocking, with a read timeout on every call: the
//! hypervisor calls them from the agent's blocking session code. A guest agent that is not running
//! (the guest is still booting) never answers, so every call may time out; a fresh connection
//! starts with `guest-sync` so that an answer left over from an earlier, abandoned call is never
//! taken for the answer to the next one. QEMU serves one client per socket at a time: a second
//! connection waits (and times out) until the first is dropped.
//!
//! Not covered: QMP events (skipped while waiting for a reply), asynchronous jobs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {command} failed: {class}: {desc}")]
    Command {
        path: PathBuf,
        command: String,
        class: String,
        desc: String,
    },
    #[error("{path}: unexpected reply to {command}: {reply}")]
    Protocol {
        path: PathBuf,
        command: String,
        reply: String,
    },
}

impl QmpError {
    /// The peer did not answer in time (or is not there).
    pub fn is_timeout(&self) -> bool {
        matches!(self, QmpError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// One JSON-lines connection.
#[derive(Debug)]
struct Line {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// The longest line accepted (a `guest-exec-status` with captured output is the largest).
const MAX_LINE: usize = 16 << 20;

impl Line {
    fn connect(path: &Path, timeout: Duration) -> Result<Line, QmpError> {
        let io = |source| QmpError::Io {
            path: path.to_owned(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Line {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn io(&self, source: io::Error) -> QmpError {
        QmpError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn send(&mut self, value: &Value) -> Result<(), QmpError> {
        let mut text = value.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| self.io(e))
    }

    fn receive(&mut self) -> Result<Value, QmpError> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = Read::take(&mut self.reader, MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
                .map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(io::ErrorKind::UnexpectedEof.into()));
            }
            // The guest agent may send a 0xff sentinel before a reply; skip bytes that are not JSON.
            let start = buf.iter().position(|&b| b == b'{').unwrap_or(buf.len());
            let text = &buf[start..];
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(text).map_err(|e| QmpError::Protocol {
                path: self.path.clone(),
                command: "(reading)".into(),
                reply: format!("{e}: {}", String::from_utf8_lossy(text)),
            });
        }
    }

    /// Sends a command and returns its `return` value; events are skipped.
    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if !arguments.is_null() {
            request["arguments"] = arguments;
        }
        self.send(&request)?;
        loop {
            let reply = self.receive()?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(v) = reply.get("return") {
                return Ok(v.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(QmpError::Command {
                    path: self.path.clone(),
                    command: command.to_owned(),
                    class: e["class"].as_str().unwrap_or("?").to_owned(),
                    desc: e["desc"].as_str().unwrap_or("?").to_owned(),
                });
            }
            return Err(QmpError::Protocol {
                path: self.path.clone(),
                command: command.to_owned(),
                reply: reply.to_string(),
            });
        }
    }
}

/// A QMP connection, capabilities negotiated.
#[derive(Debug)]
pub struct Qmp {
    line: Line,
}

impl Qmp {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let mut line = Line::connect(path, timeout)?;
        let greeting = line.receive()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                path: path.to_owned(),
                command: "(greeting)".into(),
                reply: greeting.to_string(),
            });
        }
        line.execute("qmp_capabilities", Value::Null)?;
        Ok(Qmp { line })
    }

    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.line.execute(command, arguments)
    }

    /// Presses the ACPI power button: the guest shuts down (if it listens) and QEMU exits.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", Value::Null).map(|_| ())
    }

    /// QEMU exits at once (the guest is not asked).
    pub fn quit(&mut self) -> Result<(), QmpError> {
        self.execute("quit", Value::Null).map(|_| ())
    }

    /// `running`, `paused`, `shutdown`, ...
    pub fn status(&mut self) -> Result<String, QmpError> {
        let v = self.execute("query-status", Value::Null)?;
        Ok(v["status"].as_str().unwrap_or("?").to_owned())
    }

    /// Saves the guest's screen as a PPM file (written by QEMU).
    pub fn screendump(&mut self, file: &Path) -> Result<(), QmpError> {
        self.execute("screendump", json!({ "filename": file.to_string_lossy() }))
            .map(|_| ())
    }
}

/// What a command run in the guest left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A connection to the QEMU guest agent, synchronised.
#[derive(Debug)]
pub struct GuestAgent {
    line: Line,
}

static SYNC: AtomicU64 = AtomicU64::new(1);

impl GuestAgent {
    /// Connects and synchronises; times out (`is_timeout`) while the agent is not running.
    pub fn connect(path: &Path, timeout: Duration) -> Result<GuestAgent, QmpError> {
        let mut line = Line::connect(path, timeout)?;
        let id = (u64::from(std::process::id()) << 32) | SYNC.fetch_add(1, Ordering::Relaxed);
        line.send(&json!({ "execute": "guest-sync", "arguments": { "id": id } }))?;
        loop {
            // Replies to commands of an abandoned connection come first; ours ends the loop.
            let reply = line.receive()?;
            if reply.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(GuestAgent { line });
            }
        }
    }

    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.line.execute(command, arguments)
    }

    pub fn ping(&mut self) -> Result<(), QmpError> {
        self.execute("guest-ping", Value::Null).map(|_| ())
    }

    pub fn hostname(&mut self) -> Result<String, QmpError> {
        let v = self.execute("guest-get-host-name", Value::Null)?;
        self.string(&v["host-name"], "guest-get-host-name")
    }

    /// The guest's IPv4 addresses, by interface, loopback left out.
    pub fn ipv4_addresses(&mut self) -> Result<Vec<(String, String)>, QmpError> {
        let v = self.execute("guest-network-get-interfaces", Value::Null)?;
        let mut out = Vec::new();
        for iface in v.as_array().into_iter().flatten() {
            let name = iface["name"].as_str().unwrap_or("?");
            if name == "lo" {
                continue;
            }
            for addr in iface["ip-addresses"].as_array().into_iter().flatten() {
                if addr["ip-address-type"] == "ipv4" {
                    if let Some(ip) = addr["ip-address"].as_str() {
                        out.push((name.to_owned(), ip.to_owned()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes `bytes` to `path` in the guest (created or truncated).
    pub fn write_file(&mut self, path: &str, bytes: &[u8]) -> Result<(), QmpError> {
        let handle = self.execute("guest-file-open", json!({ "path": path, "mode": "w" }))?;
        let written = self.execute(
            "guest-file-write",
            json!({ "handle": handle, "buf-b64": base64::encode(bytes) }),
        );
        let closed = self.execute("guest-file-close", json!({ "handle": handle }));
        written?;
        closed.map(|_| ())
    }

    /// Runs `path args...` in the guest and waits for it, polling every `poll` at most `polls`
    /// times (then the last status is a timeout error).
    pub fn exec(
        &mut self,
        path: &str,
        args: &[&str],
        poll: Duration,
        polls: u32,
    ) -> Result<Exec, QmpError> {
        let started = self.execute(
            "guest-exec",
            json!({ "path": path, "arg": args, "capture-output": true }),
        )?;
        let pid = started["pid"].clone();
        for _ in 0..polls {
            let s = self.execute("guest-exec-status", json!({ "pid": pid }))?;
            if s["exited"].as_bool() == Some(true) {
                let data = |key: &str| -> Result<Vec<u8>, QmpError> {
                    match s[key].as_str() {
                        None => Ok(Vec::new()),
                        Some(b64) => base64::decode(b64).ok_or_else(|| QmpError::Protocol {
                            path: self.line.path.clone(),
                            command: "guest-exec-status".into(),
                            reply: format!("{key} is not base64"),
                        }),
                    }
                };
                return Ok(Exec {
                    code: s["exitcode"].as_i64(),
                    stdout: data("out-data")?,
                    stderr: data("err-data")?,
                });
            }
            std::thread::sleep(poll);
        }
        Err(self.line.io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{path} still runs in the guest"),
        )))
    }

    fn string(&self, v: &Value, command: &str) -> Result<String, QmpError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| QmpError::Protocol {
                path: self.line.path.clone(),
                command: command.to_owned(),
                reply: v.to_string(),
            })
    }
}

/// Standard base64 (RFC 4648, with padding): what the guest agent uses for file and output data.
mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// `None` for anything that is not canonical padded base64.
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let t = text.as_bytes();
        if t.len() % 4 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(t.len() / 4 * 3);
        for (q, quad) in t.chunks(4).enumerate() {
            let last = q == t.len() / 4 - 1;
            let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && !last) {
                return None;
            }
            let mut n = 0u32;
            for &c in &quad[..4 - pad] {
                let v = ALPHABET.iter().position(|&a| a == c)? as u32;
                n = (n << 6) | v;
            }
            n <<= 6 * pad as u32;
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc_4648_vectors_round_trip() {
            for (plain, coded) in [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
                ("fooba", "Zm9vYmE="),
                ("foobar", "Zm9vYmFy"),
            ] {
                assert_eq!(encode(plain.as_bytes()), coded);
                assert_eq!(decode(coded).unwrap(), plain.as_bytes());
            }
            let all: Vec<u8> = (0..=255).collect();
            assert_eq!(decode(&encode(&all)).unwrap(), all);
            for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "===="] {
                assert_eq!(decode(bad), None, "{bad}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU on a socket: answers each request line with the next scripted line.
    fn serve(
        dir: &Path,
        lines: Vec<&'static str>,
    ) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut got = Vec::new();
            let mut lines = lines.into_iter();
            if let Some(greeting) = lines.next() {
                if !greeting.is_empty() {
                    writeln!(writer, "{greeting}").unwrap();
                }
            }
            for reply in lines {
                let mut req = String::new();
                if reader.read_line(&mut req).unwrap() == 0 {
                    break;
                }
                got.push(req.trim().to_owned());
                writeln!(writer, "{reply}").unwrap();
            }
            got
        });
        (path, handle)
    }

    #[test]
    fn qmp_negotiates_skips_events_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (path, server) = serve(
            dir.path(),
            vec![
                r#"{"QMP": {"version": {}, "capabilities": []}}"#,
                r#"{"return": {}}"#,
                "{\"event\": \"POWERDOWN\"}\n{\"return\": {}}",
                r#"{"error": {"class": "GenericError", "desc": "nope"}}"#,
            ],
        );
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        qmp.system_powerdown().unwrap();
        let e = qmp.quit().unwrap_err();
        assert!(
            e.to_string().contains("quit failed: GenericError: nope"),
            "{e}"
        );
        let got = server.join().unwrap();
        assert_eq!(
            got,
            [
                r#"{"execute":"qmp_capabilities"}"#,
                r#"{"execute":"system_powerdown"}"#,
                r#"{"execute":"quit"}"#,
            ]
        );
    }

    #[test]
    fn the_guest_agent_skips_stale_replies_until_its_sync() {
        let dir = tempfile::tempdir().unwrap();
        // The sync id is not known in advance: the fake answers with a stale reply and then
        // echoes whatever id was asked.
        let path = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut req = String::new();
            reader.read_line(&mut req).unwrap();
            let v: Value = serde_json::from_str(&req).unwrap();
            let id = v["arguments"]["id"].as_u64().unwrap();
            writeln!(writer, "{{\"return\": {{\"pid\": 7}}}}").unwrap();
            writer.write_all(b"\xff").unwrap();
            writeln!(writer, "{{\"return\": {id}}}").unwrap();
            req.clear();
            reader.read_line(&mut req).unwrap();
            writeln!(writer, "{{\"return\": {{\"host-name\": \"poste-3\"}}}}").unwrap();
        });
        let mut qga = GuestAgent::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(qga.hostname().unwrap(), "poste-3");
        server.join().unwrap();
    }

    #[test]
    fn a_silent_guest_agent_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(600));
            drop(stream);
        });
        let e = GuestAgent::connect(&path, Duration::from_millis(200)).unwrap_err();
        assert!(e.is_timeout(), "{e}");
        server.join().unwrap();
    }
}
