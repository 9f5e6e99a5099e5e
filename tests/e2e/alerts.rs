//! Alerts reach the DSI once per change: a late session (a site with no relay) is sent once to a
//! webhook and once by e-mail, not again at the next checks nor after a restart, a webhook that
//! refused is tried again, and the session removed is sent once as resolved. A real controller
//! on loopback with a test webhook receiver and an SMTP sink, each a `TcpListener` thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fleet::ok;
use crate::util::{nightcast_ok, Controller};

/// What a sink received, in order.
type Received = Arc<Mutex<Vec<String>>>;

/// An HTTP server answering every POST 200 (after `refuse` answers 503), recording each body
/// it answered 200 to, and counting the refused ones.
fn webhook_receiver(refuse: usize) -> (String, Received, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (bodies, refused) = (Received::default(), Arc::new(AtomicUsize::new(0)));
    let (b, r) = (bodies.clone(), refused.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let body = read_http_body(&mut stream);
            if r.load(Ordering::SeqCst) < refuse {
                r.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            b.lock().unwrap().push(body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, bodies, refused)
}

fn read_http_body(stream: &mut TcpStream) -> String {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

/// The server side of SMTP: 220, 250 to EHLO/HELO/MAIL/RCPT, 354 to DATA, the message recorded
/// up to the line ".", 250, and 221 to QUIT.
fn smtp_sink() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mails = Received::default();
    let m = mails.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut out = stream.unwrap();
            let mut reader = BufReader::new(out.try_clone().unwrap());
            out.write_all(b"220 sink ESMTP\r\n").unwrap();
            let mut envelope = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" | "HELO" => out.write_all(b"250-sink\r\n250 8BITMIME\r\n").unwrap(),
                    "MAIL" | "RCPT" => {
                        envelope.push_str(&line);
                        out.write_all(b"250 OK\r\n").unwrap();
                    }
                    "DATA" => {
                        out.write_all(b"354 go on\r\n").unwrap();
                        let mut data = envelope.clone();
                        loop {
                            let mut l = String::new();
                            reader.read_line(&mut l).unwrap();
                            if l == ".\r\n" {
                                break;
                            }
                            data.push_str(&l);
                        }
                        m.lock().unwrap().push(data);
                        out.write_all(b"250 queued\r\n").unwrap();
                    }
                    "QUIT" => {
                        out.write_all(b"221 bye\r\n").unwrap();
                        break;
                    }
                    _ => out.write_all(b"500 what?\r\n").unwrap(),
                }
            }
        }
    });
    (addr, mails)
}

/// The webhook bodies that are changes (not a daily digest), parsed.
fn changes(bodies: &Received) -> Vec<serde_json::Value> {
    bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap())
        .filter(|v| v["kind"] == "changes")
        .collect()
}

/// The e-mails that are not a daily digest.
fn mails(received: &Received) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|m| !m.contains("Subject: nightcast daily digest"))
        .cloned()
        .collect()
}

/// Waits up to 30 s (polled every 100 ms) for `done`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("never: {what}");
}

#[test]
fn a_late_session_is_sent_once_to_the_webhook_and_by_mail_and_once_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    ok(
        "nightcast-controller",
        &["init", "--data", data.to_str().unwrap()],
    );
    // The webhook refuses the first POST: it must come again at the next check.
    let (url, bodies, refused) = webhook_receiver(1);
    let (smtp, received) = smtp_sink();
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\nwebhook = \"{url}\"\nsmtp = \"{smtp}\"\nfrom = \"nightcast@example.org\"\n\
             to = [\"dsi@example.org\", \"ops@example.org\"]\ncheck_seconds = 1\n\
             time_zone = \"Europe/Paris\"\n"
        ),
    )
    .unwrap();
    let c = Controller::start_full(&data, &[], Some(&config));
    let run = |c: &Controller, args: &[&str]| nightcast_ok(c, &data, args);

    run(
        &c,
        &[
            "site",
            "add",
            "lyon",
            "--tz",
            "Europe/Paris",
            "--cap-mbit",
            "20",
        ],
    );
    run(&c, &["room", "add", "lyon", "salle-1"]);
    let image = dir.path().join("win10.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::disk_bytes(8 << 20, 2))
        .unwrap();
    run(
        &c,
        &[
            "master",
            "import",
            image.to_str().unwrap(),
            "--name",
            "win10",
            "--version",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        changes(&bodies).is_empty() && mails(&received).is_empty(),
        "nothing is wrong yet"
    );
    run(
        &c,
        &[
            "session",
            "add",
            "--site",
            "lyon",
            "--room",
            "salle-1",
            "--master",
            "win10",
            "--version",
            "1",
            "--start",
            "2030-01-07 08:30",
            "--end",
            "2030-01-07 17:00",
        ],
    );

    // The late session arrives at both, the webhook's after its refusal.
    wait_for("the late session at the webhook", || {
        changes(&bodies).len() == 1
    });
    wait_for("the late session by mail", || mails(&received).len() == 1);
    assert_eq!(refused.load(Ordering::SeqCst), 1);
    let sent = &changes(&bodies)[0];
    let change = &sent["changes"][0];
    assert_eq!(sent["changes"].as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(change["change"], "opened", "{sent}");
    assert_eq!(change["condition"]["kind"], "session", "{sent}");
    assert_eq!(change["condition"]["verdict"], "late", "{sent}");
    assert_eq!(change["condition"]["reason"], "no_relay", "{sent}");
    assert_eq!(change["condition"]["site"], "lyon", "{sent}");
    let key = change["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("session/lyon/salle-1/"), "{key}");
    let text = change["text"].as_str().unwrap();
    assert!(
        text.contains("2030-01-07 08:30 CET") && text.contains("LATE: no relay"),
        "{text}"
    );
    let mail = &mails(&received)[0];
    for needle in [
        "MAIL FROM:<nightcast@example.org>",
        "RCPT TO:<dsi@example.org>",
        "RCPT TO:<ops@example.org>",
        "Subject: nightcast: 1 new alert(s)",
        "LATE: no relay",
    ] {
        assert!(mail.contains(needle), "{needle}: {mail}");
    }

    // Unchanged: not sent again at the next checks, nor by a restarted controller.
    std::thread::sleep(Duration::from_secs(3));
    drop(c);
    let c = Controller::start_full(&data, &[], Some(&config));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(changes(&bodies).len(), 1, "{:?}", bodies.lock().unwrap());
    assert_eq!(mails(&received).len(), 1, "{:?}", received.lock().unwrap());

    // The DSI removes the session: resolved, once at each.
    run(&c, &["session", "rm", "1"]);
    wait_for("the resolution at the webhook", || {
        changes(&bodies).len() == 2
    });
    wait_for("the resolution by mail", || mails(&received).len() == 2);
    let resolved = &changes(&bodies)[1]["changes"][0];
    assert_eq!(resolved["change"], "resolved", "{resolved}");
    assert_eq!(resolved["key"], key.as_str(), "{resolved}");
    let mail = &mails(&received)[1];
    assert!(
        mail.contains("Subject: nightcast: 1 resolved") && mail.contains("RESOLVED: lyon salle-1"),
        "{mail}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(changes(&bodies).len(), 2);
    assert_eq!(mails(&received).len(), 2);
}

/// The webhook bodies that are daily digests, parsed.
/// Stops the controller as systemd does (SIGTERM): the check under way records what it sent
/// before the controller exits. (A kill -9 between a delivery and its record sends it again once
/// after a restart: alerts are delivered at least once.)
fn stop(mut c: Controller) {
    let pid = c.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = c.child.wait().unwrap();
    assert!(status.success(), "controller exited with {status}");
}

fn digests(bodies: &Received) -> Vec<serde_json::Value> {
    bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap())
        .filter(|v| v["kind"] == "digest")
        .collect()
}

#[test]
fn the_daily_digest_lists_what_is_open_once_at_its_hour() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    ok(
        "nightcast-controller",
        &["init", "--data", data.to_str().unwrap()],
    );
    let (url, bodies, _) = webhook_receiver(0);
    let (smtp, received) = smtp_sink();
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\nwebhook = \"{url}\"\nsmtp = \"{smtp}\"\nto = [\"dsi@example.org\"]\n\
             check_seconds = 1\ndigest_at = \"07:00\"\ntime_zone = \"UTC\"\n"
        ),
    )
    .unwrap();
    // An hour before the digest: the late session is sent as a change, no digest yet.
    let c = Controller::start_full(
        &data,
        &[("NIGHTCAST_CLOCK", "start=2030-01-06T06:00:00Z")],
        Some(&config),
    );
    let run = |c: &Controller, args: &[&str]| nightcast_ok(c, &data, args);
    run(
        &c,
        &[
            "site",
            "add",
            "lyon",
            "--tz",
            "Europe/Paris",
            "--cap-mbit",
            "20",
        ],
    );
    run(&c, &["room", "add", "lyon", "salle-1"]);
    let image = dir.path().join("win10.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::disk_bytes(8 << 20, 2))
        .unwrap();
    run(
        &c,
        &[
            "master",
            "import",
            image.to_str().unwrap(),
            "--name",
            "win10",
            "--version",
            "1",
        ],
    );
    run(
        &c,
        &[
            "session",
            "add",
            "--site",
            "lyon",
            "--room",
            "salle-1",
            "--master",
            "win10",
            "--version",
            "1",
            "--start",
            "2030-01-07 08:30",
            "--end",
            "2030-01-07 17:00",
        ],
    );
    wait_for("the late session at the webhook", || {
        changes(&bodies).len() == 1
    });
    assert!(digests(&bodies).is_empty());
    stop(c);

    // Two seconds before 07:00 UTC: the digest comes once, listing the late session.
    let _c = Controller::start_full(
        &data,
        &[("NIGHTCAST_CLOCK", "start=2030-01-06T06:59:58Z")],
        Some(&config),
    );
    wait_for("the digest at the webhook", || digests(&bodies).len() == 1);
    wait_for("the digest by mail", || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("Subject: nightcast daily digest: 1 open"))
    });
    let digest = &digests(&bodies)[0];
    assert_eq!(digest["open"].as_array().unwrap().len(), 1, "{digest}");
    assert_eq!(
        digest["open"][0]["condition"]["verdict"], "late",
        "{digest}"
    );
    let at = digest["at"].as_i64().unwrap();
    assert!(at >= 1_893_913_200, "sent at {at}, before 07:00 UTC");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(digests(&bodies).len(), 1);
    assert_eq!(
        changes(&bodies).len(),
        1,
        "the late session is not sent again"
    );
    let mails = received.lock().unwrap().len();
    assert_eq!(mails, 2, "one change, one digest");
}

#[test]
fn a_relay_enrolled_turns_late_into_at_risk_and_a_silent_relay_is_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    let relay = dir.path().join("relay");
    ok(
        "nightcast-controller",
        &["init", "--data", data.to_str().unwrap()],
    );
    let (url, bodies, _) = webhook_receiver(0);
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!("[alerts]\nwebhook = \"{url}\"\ncheck_seconds = 1\nrelay_silent_hours = 1\n"),
    )
    .unwrap();
    let c = Controller::start_full(&data, &[], Some(&config));
    let run = |c: &Controller, args: &[&str]| nightcast_ok(c, &data, args);
    run(
        &c,
        &[
            "site",
            "add",
            "lyon",
            "--tz",
            "Europe/Paris",
            "--cap-mbit",
            "20",
        ],
    );
    run(&c, &["room", "add", "lyon", "salle-1"]);
    let image = dir.path().join("win10.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::disk_bytes(8 << 20, 2))
        .unwrap();
    run(
        &c,
        &[
            "master",
            "import",
            image.to_str().unwrap(),
            "--name",
            "win10",
            "--version",
            "1",
        ],
    );
    run(
        &c,
        &[
            "session",
            "add",
            "--site",
            "lyon",
            "--room",
            "salle-1",
            "--master",
            "win10",
            "--version",
            "1",
            "--start",
            "2030-01-07 08:30",
            "--end",
            "2030-01-07 17:00",
        ],
    );
    wait_for("the late session", || changes(&bodies).len() == 1);

    // The DSI enrols a relay: no longer late, but at risk until it reports: one message.
    let token = run(&c, &["enroll", "--site", "lyon"]);
    ok(
        "nightcast-relay",
        &[
            "enroll",
            "--controller",
            &c.quic,
            "--token",
            token.trim(),
            "--node-id",
            "relay-1",
            "--data",
            relay.to_str().unwrap(),
        ],
    );
    wait_for("late resolved, at risk opened", || {
        changes(&bodies).len() == 2
    });
    let kinds: Vec<(String, String)> = changes(&bodies)[1]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_owned(),
                c["condition"]["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("resolved".to_owned(), "late".to_owned()),
            ("opened".to_owned(), "at_risk".to_owned())
        ]
    );
    stop(c);

    // Two hours later (a test clock) the relay has still not reported: silent, sent once.
    let _c = Controller::start_full(&data, &[("NIGHTCAST_CLOCK", "offset=7200")], Some(&config));
    wait_for("the silent relay", || changes(&bodies).len() == 3);
    let silent = &changes(&bodies)[2]["changes"];
    assert_eq!(silent.as_array().unwrap().len(), 1, "{silent}");
    assert_eq!(silent[0]["key"], "relay_silent/lyon/relay-1", "{silent}");
    assert_eq!(silent[0]["condition"]["last_seen"], serde_json::Value::Null);
    assert!(
        silent[0]["text"]
            .as_str()
            .unwrap()
            .contains("relay relay-1 never reported since it enrolled"),
        "{silent}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(changes(&bodies).len(), 3);
}
