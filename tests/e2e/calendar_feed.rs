//! The DSI's complaint: "our training-management tool publishes the calendar as an HTTPS link;
//! exporting and importing it by hand every morning is what we want to stop doing". The DSI
//! subscribes the real controller to a feed served over HTTPS by this test (its own CA, given
//! to the controller as the roots it trusts); the controller polls it on its own and the
//! sessions follow the feed as they follow an import; a feed that fails or serves garbage is a
//! recorded error and changes nothing; unsubscribing stops the polls and keeps the sessions.
//!
//! HTTPS, not HTTP: the controller refuses `http://` feeds, so the test serves TLS (rustls and
//! rcgen, which the workspace already builds) rather than testing a path the product refuses.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image_tools::api::{FeedInfo, SessionInfo, SessionOrigin};

use crate::util::{nightcast, nightcast_ok, workspace_bin, Controller};

/// What the feed answers: a status and a body.
type Answer = Arc<Mutex<(u16, Vec<u8>)>>;

/// An HTTPS server on loopback answering every request with `answer`; counts the requests.
/// Returns its port and the CA certificate (PEM) to trust.
fn https_feed(answer: Answer, hits: Arc<AtomicUsize>) -> (u16, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = pem(ck.cert.der());
    let chain = vec![ck.cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { continue };
            let (config, answer, hits) = (config.clone(), answer.clone(), hits.clone());
            std::thread::spawn(move || {
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answer.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/calendar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes());
                let _ = tls.write_all(&body);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, pem)
}

/// A certificate in PEM (rcgen's own PEM writer is a feature the workspace does not build).
fn pem(der: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            b64.push(match i <= chunk.len() {
                true => ABC[(n >> (18 - 6 * i) & 63) as usize] as char,
                false => '=',
            });
        }
    }
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

fn sessions(c: &Controller, data: &Path) -> Vec<SessionInfo> {
    serde_json::from_str(&nightcast_ok(c, data, &["--json", "session", "list"])).unwrap()
}

fn feeds(c: &Controller, data: &Path) -> Vec<FeedInfo> {
    serde_json::from_str(&nightcast_ok(
        c,
        data,
        &["--json", "calendar", "subscriptions"],
    ))
    .unwrap()
}

/// Waits (300 tries, 0.2 s apart: a minute and more) until `done` holds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out: {what}");
}

#[test]
fn a_subscribed_https_feed_is_polled_and_synced_and_a_bad_feed_changes_nothing() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("controller/tests/fixtures");
    let fixture = |name: &str| std::fs::read(fixtures.join(name)).unwrap();
    let answer: Answer = Arc::new(Mutex::new((200, fixture("thunderbird.ics"))));
    let hits = Arc::new(AtomicUsize::new(0));
    let (port, ca_pem) = https_feed(answer.clone(), hits.clone());

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    assert!(
        std::process::Command::new(workspace_bin("nightcast-controller"))
            .args(["init", "--data", data.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    let roots = dir.path().join("feed-roots.pem");
    std::fs::write(&roots, &ca_pem).unwrap();
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[calendar]\nfeed_poll_minutes = 2\nfeed_roots = {:?}\n[store]\ntighten_level = 0\n",
            roots.to_str().unwrap()
        ),
    )
    .unwrap();
    // 60 clock seconds per real second: a poll every two minutes is one every two seconds.
    let c = Controller::start_full(
        &data,
        &[("NIGHTCAST_CLOCK", "offset=0 speed=60")],
        Some(&config),
    );
    let run = |args: &[&str]| nightcast_ok(&c, &data, args);
    run(&[
        "site",
        "add",
        "lyon",
        "--tz",
        "Europe/Paris",
        "--cap-mbit",
        "20",
    ]);
    run(&["room", "add", "lyon", "salle-1"]);
    run(&["room", "add", "lyon", "salle-2"]);
    let image = dir.path().join("win10.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::disk_bytes(4 << 20, 2))
        .unwrap();
    run(&[
        "master",
        "import",
        image.to_str().unwrap(),
        "--name",
        "win10",
        "--version",
        "1",
    ]);

    // A plain-HTTP feed is refused: the calendar would travel unauthenticated.
    let out = nightcast(
        &c,
        &data,
        &[
            "calendar",
            "subscribe",
            "http://localhost/x.ics",
            "--source",
            "x",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("https://"), "{err}");

    let url = format!("https://localhost:{port}/formations.ics");
    let out = run(&["calendar", "subscribe", &url, "--source", "formations"]);
    assert!(
        out.contains("formations") && out.contains("every 2 min"),
        "{out}"
    );
    wait_for("the first poll", || sessions(&c, &data).len() == 16);
    let f = &feeds(&c, &data)[0];
    assert_eq!(
        (f.source.as_str(), f.url.as_str()),
        ("formations", url.as_str())
    );
    assert!(f.last_ok.is_some() && f.last_error.is_none(), "{f:?}");
    assert!(
        f.last_result.as_deref().unwrap().contains("16 added"),
        "{f:?}"
    );
    let listed = run(&["calendar", "subscriptions"]);
    assert!(
        listed.contains("formations") && listed.contains(&url) && listed.contains("16 added"),
        "{listed}"
    );
    // `session list` says the feed keeps these sessions.
    let listed = run(&["session", "list"]);
    assert!(listed.contains("feed formations"), "{listed}");

    // The tool publishes a changed calendar: the sessions follow, exactly as for an import.
    let before = sessions(&c, &data);
    *answer.lock().unwrap() = (200, fixture("thunderbird-changed.ics"));
    let moved_to = |s: &[SessionInfo]| {
        s.iter().any(|s| {
            s.room.as_str() == "salle-2" && {
                let t = jiff::Timestamp::from_second(s.start)
                    .unwrap()
                    .in_tz("Europe/Paris")
                    .unwrap();
                t.strftime("%Y-%m-%d %H:%M").to_string() == "2030-02-20 14:00"
            }
        })
    };
    wait_for("the changed feed", || moved_to(&sessions(&c, &data)));
    let after = sessions(&c, &data);
    assert_eq!(after.len(), 16);
    let kept = before.iter().filter(|b| after.contains(b)).count();
    assert_eq!(kept, 14, "one moved, one removed, the rest untouched");
    wait_for("the result recorded", || {
        feeds(&c, &data)[0]
            .last_result
            .as_deref()
            .is_some_and(|r| r.contains("1 added, 1 moved, 1 removed"))
    });

    // The tool is down for maintenance (503), then serves an HTML page: each is a recorded
    // error naming what went wrong, and the sessions stay as they are.
    *answer.lock().unwrap() = (503, b"busy".to_vec());
    wait_for("the 503 recorded", || {
        feeds(&c, &data)[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503"))
    });
    assert_eq!(sessions(&c, &data), after);
    *answer.lock().unwrap() = (200, b"<html><body>Maintenance</body></html>".to_vec());
    wait_for("the garbage recorded", || {
        feeds(&c, &data)[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not an iCalendar"))
    });
    assert_eq!(sessions(&c, &data), after);
    let listed = run(&["calendar", "subscriptions"]);
    assert!(listed.contains("not an iCalendar"), "{listed}");
    // The last good poll is still known.
    assert!(feeds(&c, &data)[0].last_ok.is_some());

    // Unsubscribed: no more polls, the sessions kept.
    run(&["calendar", "unsubscribe", "formations"]);
    assert!(feeds(&c, &data).is_empty());
    let seen = hits.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(5));
    assert!(hits.load(Ordering::SeqCst) <= seen + 1, "still polled");
    // The sessions stay, now a calendar no feed keeps in step.
    let kept = sessions(&c, &data);
    let when = |s: &[SessionInfo]| -> Vec<(i64, String, i64, i64)> {
        s.iter()
            .map(|s| (s.id, s.room.to_string(), s.start, s.end))
            .collect()
    };
    assert_eq!(when(&kept), when(&after));
    assert!(kept.iter().all(|s| s.origin
        == SessionOrigin::Calendar {
            source: "formations".into(),
            feed: false
        }));
    let out = nightcast(&c, &data, &["calendar", "unsubscribe", "formations"]);
    assert!(!out.status.success());
}
