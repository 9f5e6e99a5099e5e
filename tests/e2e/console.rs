//! The web console in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! against a real controller serving HTTPS with a certificate from its own CA, a running relay,
//! a NUC reporting through it and another waiting for approval. As the DSI would: a wrong
//! password, the board with the late room on top and its reason, that room's NUC (silent), the
//! other room's NUCs and an approval;
//! as a read-only user: no button, and a forged POST refused. Every page is checked for size and
//! for requests outside the controller; screenshots go to `target/console-screenshots/`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use image_tools::report::AgentReport;
use serde_json::Value;

use crate::fleet::*;
use crate::util::workspace_bin;
use crate::webdriver::{free_port, Browser};

/// Where the screenshots go: `target/console-screenshots/`.
fn screenshots() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target
    exe.ancestors().nth(3).unwrap().join("console-screenshots")
}

/// `nightcast-controller user add` with the password on standard input.
fn add_user(f: &Fleet, name: &str, role: &str, password: &str) {
    let mut child = Command::new(workspace_bin("nightcast-controller"))
        .args(["user", "add", "--data"])
        .arg(f.dir.path().join("controller"))
        .args([name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fleet_row(f: &Fleet, node: &str) -> Option<Value> {
    let fleet: Value = serde_json::from_str(&f.nightcast(&["--json", "fleet"])).unwrap();
    fleet
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == node)
        .cloned()
}

/// What every page must be: no request beyond the controller, under 500 KB in all.
fn check_page(b: &Browser, origin: &str, what: &str) {
    let urls = b.requests();
    assert!(
        urls.iter().any(|u| u.starts_with(origin)),
        "{what}: the performance log shows no request at all: {urls:?}"
    );
    for url in urls {
        assert!(
            url.starts_with(origin) || url.starts_with("data:") || url == "about:blank",
            "{what}: the browser asked for {url}, outside the controller {origin}"
        );
    }
    let bytes = b.run(
        "const n = performance.getEntriesByType('navigation')[0];
         const r = performance.getEntriesByType('resource');
         return n.decodedBodySize + r.reduce((s, e) => s + e.decodedBodySize, 0);",
    );
    let bytes = bytes.as_u64().unwrap();
    assert!(bytes > 0 && bytes < 500_000, "{what}: {bytes} bytes");
}

/// What a user could do by hand in their browser: a POST to `action` with their own session's
/// CSRF token (taken from the page), though the page offers no such button.
fn forge_post(b: &Browser, action: &str) {
    let script = format!(
        "const csrf = document.querySelector('input[name=csrf]').value;
         const f = document.createElement('form');
         f.method = 'post'; f.action = '{action}';
         const i = document.createElement('input');
         i.type = 'hidden'; i.name = 'csrf'; i.value = csrf; f.appendChild(i);
         document.body.appendChild(f); f.submit(); return csrf.length;"
    );
    assert_eq!(b.run(&script), 64);
}

/// The bytes to fetch and the whole version's of `site` in a cost cell ("lyon: 1.2 MB to fetch
/// of 3.4 MB, ...").
fn cost_of(cell: &str, site: &str) -> (f64, f64) {
    let line = cell
        .lines()
        .find(|l| l.starts_with(&format!("{site}: ")))
        .unwrap_or_else(|| panic!("no cost for {site}: {cell}"));
    let amount = |s: &str| -> f64 {
        let mut w = s.split_whitespace();
        let n: f64 = w.next().unwrap().parse().unwrap();
        n * match w.next().unwrap() {
            "B" => 1.0,
            "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            u => panic!("unit {u} in {cell}"),
        }
    };
    let rest = &line[site.len() + 2..];
    let (fetch, rest) = rest.split_once(" to fetch of ").unwrap();
    (amount(fetch), amount(rest.split(',').next().unwrap()))
}

fn log_in(b: &Browser, origin: &str, name: &str, password: &str) {
    b.goto(&format!("{origin}/login"));
    b.type_into(&b.find("#name").unwrap(), name);
    b.type_into(&b.find("#password").unwrap(), password);
    b.click(&b.find("button[type=submit]").unwrap());
}

#[test]
fn the_dsi_sees_the_late_room_first_follows_it_and_approves_a_nuc_a_read_only_user_cannot() {
    let port = free_port();
    let origin = format!("https://127.0.0.1:{port}");
    let f = Fleet::build(
        "00:00-23:59",
        100,
        4,
        "start=2030-01-07T12:00:00Z speed=1",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n",
        &format!(
            "[console]\nlisten = \"127.0.0.1:{port}\"\nhosts = [\"127.0.0.1\", \"localhost\"]\n"
        ),
    );
    // A second site, in Paris, with no relay: its session is late, and must come first.
    f.nightcast(&[
        "site",
        "add",
        "grenoble",
        "--tz",
        "Europe/Paris",
        "--windows",
        "22:00-06:00",
        "--cap-mbit",
        "50",
    ]);
    f.nightcast(&["room", "add", "grenoble", "amphi-a"]);
    f.calendar("grenoble,amphi-a,demo,1,2030-01-09 08:00,2030-01-09 12:00\n");
    // A NUC sits in the late room: enrolled with a token, it never reported (no relay there).
    let token = f.nightcast(&["enroll", "--role", "agent", "--site", "grenoble"]);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(image_tools::exchange::enroll(
            f.quic,
            token.trim(),
            image_tools::wire::Role::Agent,
            "nuc-g1",
            f.clock,
        ))
        .unwrap();
    f.nightcast(&["seat", "add", "grenoble", "amphi-a", "pc-1"]);
    f.nightcast(&["seat", "assign", "grenoble", "amphi-a", "pc-1", "nuc-g1"]);
    // Lyon's relay runs and holds the master; a NUC sits at salle-1/pc-1 and reports.
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 60, Relay::complete);
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let nuc = f.agent("nuc-1");
    f.nightcast(&["seat", "assign", "lyon", "salle-1", "pc-1", "nuc-1"]);
    nuc.report(
        relay.lan,
        AgentReport {
            state: "ready".into(),
            seat: "salle-1/pc-1".into(),
            vm: "stopped".into(),
            last_error: Some("disk nearly full <90%>".into()),
            ..AgentReport::default()
        },
    );
    // A stranger's NUC asks to enrol at lyon: it waits for the DSI.
    f.nightcast(&["site", "accept-new", "lyon", "--for", "0"]);
    let key = image_tools::trust::node_key().unwrap();
    let _ = crate::trust::ask_until_answered(&f, &relay, "nuc-new", &key);
    assert_eq!(fleet_row(&f, "nuc-new").unwrap()["state"], "pending");
    for _ in 0..100 {
        if fleet_row(&f, "nuc-1")
            .is_some_and(|r| !r["last_seen"].is_null() && r["state"] == "ready")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    add_user(&f, "dsi", "admin", "correct horse battery");
    add_user(&f, "viewer", "readonly", "a long read-only password");

    let shots = screenshots();
    let b = Browser::start();

    // A wrong password: an error on the login page, and no session.
    log_in(&b, &origin, "dsi", "wrong password!");
    let error = b.text_of(&b.wait_find("#error"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    assert_eq!(error, "Wrong user name or password.");
    b.screenshot(&shots.join("login.png"));
    check_page(&b, &origin, "login page");

    // The read-only user: the board and the room, no approve button, and a forged POST refused.
    log_in(&b, &origin, "viewer", "a long read-only password");
    b.wait_url(&format!("{origin}/"));
    b.goto(&format!("{origin}/rooms/lyon/salle-1"));
    let page = b.text();
    assert!(page.contains("nuc-new"), "{page}");
    assert!(
        b.find("#approve-nuc-new").is_none(),
        "a read-only user sees no button"
    );
    assert!(!b.source().contains("/approve"));
    forge_post(&b, "/nodes/nuc-new/approve");
    let refused = b.text_of(&b.wait_find("main p.err"));
    assert!(
        refused.contains("Your role (readonly) does not let you approve NUCs at lyon."),
        "{refused}"
    );
    assert_eq!(fleet_row(&f, "nuc-new").unwrap()["state"], "pending");
    b.click(&b.find("header form button").unwrap());
    b.wait_url(&format!("{origin}/login"));
    b.clear_cookies();

    // The DSI: the late room first, with its reason, in its site's zone.
    log_in(&b, &origin, "dsi", "correct horse battery");
    b.wait_url(&format!("{origin}/"));
    let rooms = b.find_all("section.room");
    assert_eq!(rooms.len(), 2, "{}", b.text());
    let first = b.text_of(&rooms[0]);
    assert!(first.starts_with("grenoble · amphi-a"), "{first}");
    assert!(first.contains("late"), "{first}");
    assert!(
        first.contains("no relay is enrolled at the site"),
        "the reason: {first}"
    );
    assert!(first.contains("2030-01-09 08:00 Europe/Paris"), "{first}");
    let second = b.text_of(&rooms[1]);
    assert!(second.starts_with("lyon · salle-1"), "{second}");
    b.screenshot(&shots.join("board.png"));
    check_page(&b, &origin, "board");

    // One click down from the late session: its room's NUC, which never reported.
    b.click(&b.find("section.room h2 a").unwrap());
    b.wait_url(&format!("{origin}/rooms/grenoble/amphi-a"));
    let nucs = b.text_of(&b.find("#nucs").unwrap());
    assert!(nucs.contains("amphi-a/pc-1"), "{nucs}");
    assert!(nucs.contains("nuc-g1"), "{nucs}");
    assert!(nucs.contains("never reported"), "{nucs}");
    b.screenshot(&shots.join("late-room.png"));
    check_page(&b, &origin, "late room page");

    // Back to the board and into lyon's room: its NUCs, and the NUC waiting at the site.
    b.click(&b.find("main a[href='/']").unwrap());
    b.wait_url(&format!("{origin}/"));
    b.click(&b.find("a[href='/rooms/lyon/salle-1']").unwrap());
    assert_eq!(b.url(), format!("{origin}/rooms/lyon/salle-1"));
    let nucs = b.text_of(&b.find("#nucs").unwrap());
    assert!(nucs.contains("salle-1/pc-1"), "{nucs}");
    assert!(nucs.contains("nuc-1"), "{nucs}");
    assert!(nucs.contains("disk nearly full <90%>"), "{nucs}");
    b.screenshot(&shots.join("room.png"));
    check_page(&b, &origin, "room page");
    b.click(
        &b.find("#approve-nuc-new")
            .expect("the admin's approve button"),
    );
    let flash = b.text_of(&b.wait_find("#flash"));
    assert!(flash.starts_with("nuc-new approved"), "{flash}");
    assert_eq!(fleet_row(&f, "nuc-new").unwrap()["state"], "approved");
    b.screenshot(&shots.join("room-approved.png"));
}

/// The fleet, calendar and masters pages, as the DSI uses them: a calendar with an error (its
/// line shown, nothing imported), then a good one (its session on the board), an emergency push,
/// a real NUC (agent process, test hypervisor) reset from the fleet page, which it does and says
/// so; then a read-only user, who sees no button and whose forged reset is refused. Screenshots:
/// `target/console-screenshots/{fleet,calendar,calendar-sessions,masters}.png`.
#[test]
fn the_dsi_imports_a_calendar_pushes_a_master_and_resets_a_nuc_a_read_only_user_cannot() {
    let port = free_port();
    let origin = format!("https://127.0.0.1:{port}");
    let f = Fleet::build(
        "00:00-23:59",
        100,
        4,
        "start=2030-01-07T12:00:00Z speed=1",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n",
        &format!("[console]\nlisten = \"127.0.0.1:{port}\"\nhosts = [\"127.0.0.1\"]\n"),
    );
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("the master to complete", 60, Relay::complete);
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let nuc = f.seated_agent("nuc-1", "pc-1", &relay, "");
    // A second version that shares most of its chunks with the first (the masters page).
    let mut v2 = f.image.clone();
    v2[..1 << 20]
        .iter_mut()
        .for_each(|b| *b = b.wrapping_add(1));
    f.add_master("2", &v2);
    nuc.wait("demo 1 on the NUC, at rest", 90, |a| {
        a.s("current") == "demo 1" && a.s("trial").is_empty() && a.s("vm") != "running"
    });
    add_user(&f, "dsi", "admin", "correct horse battery");
    add_user(&f, "viewer", "readonly", "a long read-only password");

    let shots = screenshots();
    let b = Browser::start();
    log_in(&b, &origin, "dsi", "correct horse battery");
    b.wait_url(&format!("{origin}/"));

    // A calendar with an error on its third line: the line named, nothing imported.
    b.click(&b.find("nav a[href='/calendar']").unwrap());
    b.wait_url(&format!("{origin}/calendar"));
    let header = "site,room,master,version,start,end\n";
    let bad = f.dir.path().join("extra.csv");
    std::fs::write(
        &bad,
        format!("{header}lyon,salle-1,demo,1,2030-01-12 08:00,2030-01-12 12:00\nlyon,salle-9,demo,1,2030-01-11 08:00,2030-01-11 12:00\n"),
    )
    .unwrap();
    b.type_into(&b.find("#file").unwrap(), bad.to_str().unwrap());
    b.click(&b.find("#import").unwrap());
    let error = b.text_of(&b.wait_find("#error"));
    assert!(error.starts_with("extra.csv:3:"), "{error}");
    assert!(error.ends_with("Nothing was changed."), "{error}");
    let sessions = f.nightcast(&["session", "list"]);
    assert!(!sessions.contains("2030-01-12"), "{sessions}");
    b.screenshot(&shots.join("calendar-error.png"));
    check_page(&b, &origin, "calendar page with an error");

    // Not a calendar, and a file too large to be one: each refused with a clear message.
    let photo = f.dir.path().join("photo.png");
    std::fs::write(&photo, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").unwrap();
    b.type_into(&b.find("#file").unwrap(), photo.to_str().unwrap());
    b.click(&b.find("#import").unwrap());
    let error = b.text_of(&b.wait_find("#error"));
    assert!(error.starts_with("photo.png is not a calendar"), "{error}");
    let huge = f.dir.path().join("huge.csv");
    std::fs::write(&huge, header.repeat(150_000)).unwrap();
    b.type_into(&b.find("#file").unwrap(), huge.to_str().unwrap());
    b.click(&b.find("#import").unwrap());
    let error = b.text_of(&b.wait_find("main p.err"));
    assert!(error.contains("a calendar file at most 4 MB"), "{error}");
    b.goto(&format!("{origin}/calendar"));

    // The same without the error: imported, and its session on the board.
    let good = f.dir.path().join("extra-fixed.csv");
    std::fs::write(
        &good,
        format!("{header}lyon,salle-1,demo,1,2030-01-10 08:00,2030-01-10 12:00\n"),
    )
    .unwrap();
    b.type_into(&b.find("#file").unwrap(), good.to_str().unwrap());
    b.click(&b.find("#import").unwrap());
    let flash = b.text_of(&b.wait_find("#flash"));
    assert_eq!(flash, "extra-fixed.csv: 1 session imported.");
    b.click(&b.find("nav a[href='/']").unwrap());
    b.wait_url(&format!("{origin}/"));
    let board = b.text();
    assert!(board.contains("2030-01-10 08:00 UTC"), "{board}");

    // A master scheduled for a course by hand: an unknown room refused, then the session added,
    // listed where it came from, and on the board.
    b.goto(&format!("{origin}/calendar"));
    let add = |room: &str| {
        b.type_into(&b.find("#add-room").unwrap(), room);
        b.type_into(&b.find("#add-start").unwrap(), "2030-01-11 08:00");
        b.type_into(&b.find("#add-end").unwrap(), "2030-01-11 12:00");
        b.click(&b.find("#add").unwrap());
    };
    add("salle-9");
    let error = b.text_of(&b.wait_find("#error"));
    assert!(error.contains("unknown room \"salle-9\""), "{error}");
    assert!(error.ends_with("Nothing was changed."), "{error}");
    add("salle-1");
    let flash = b.text_of(&b.wait_find("#flash"));
    assert_eq!(flash, "Session added.");
    let listed = b.text_of(&b.find("#sessions").unwrap());
    assert!(
        listed.contains("2030-01-11 08:00") && listed.contains("added by hand"),
        "{listed}"
    );
    b.run("document.getElementById('sessions').scrollIntoView()");
    b.screenshot(&shots.join("calendar-sessions.png"));
    check_page(&b, &origin, "calendar page with a session added");
    b.click(&b.find("nav a[href='/']").unwrap());
    b.wait_url(&format!("{origin}/"));
    let board = b.text();
    assert!(board.contains("2030-01-11 08:00 UTC"), "{board}");

    // An emergency push, with its reason and deadline, as `nightcast override push`.
    b.goto(&format!("{origin}/calendar"));
    b.type_into(&b.find("#reason").unwrap(), "exam at 14:00 needs it");
    b.type_into(&b.find("#deadline").unwrap(), "2030-01-07 18:00");
    b.click(&b.find("#push").unwrap());
    let flash = b.text_of(&b.wait_find("#flash"));
    assert!(
        flash.starts_with("Push ") && flash.contains("recorded"),
        "{flash}"
    );
    let overrides = b.text_of(&b.find("#overrides").unwrap());
    assert!(overrides.contains("exam at 14:00 needs it"), "{overrides}");
    assert!(overrides.contains("2030-01-07 18:00 UTC"), "{overrides}");
    let listed = f.nightcast(&["--json", "override", "list"]);
    assert!(
        listed.contains("exam at 14:00 needs it") && listed.contains("\"dsi\""),
        "{listed}"
    );
    // The faulty file once more: its error beside the push in force (the page's screenshot).
    b.type_into(&b.find("#file").unwrap(), bad.to_str().unwrap());
    b.click(&b.find("#import").unwrap());
    let error = b.text_of(&b.wait_find("#error"));
    assert!(error.starts_with("extra.csv:3:"), "{error}");
    b.screenshot(&shots.join("calendar.png"));
    check_page(&b, &origin, "calendar page");

    // The fleet: the relay and the NUC; the NUC reset from here, and it does it.
    b.click(&b.find("nav a[href='/fleet']").unwrap());
    b.wait_url(&format!("{origin}/fleet"));
    let fleet = b.text_of(&b.find("#fleet").unwrap());
    assert!(
        fleet.contains("nuc-1") && fleet.contains("relay"),
        "{fleet}"
    );
    let resets = nuc.n("resets");
    b.click(&b.find("#reset-nuc-1").expect("the admin's reset button"));
    let flash = b.text_of(&b.wait_find("#flash"));
    assert!(flash.starts_with("nuc-1: reset asked"), "{flash}");
    nuc.wait("the NUC to carry out the reset", 30, |a| {
        a.n("orders_done") >= 1 && a.n("resets") > resets
    });
    assert!(
        nuc.log_text().contains("the DSI asked for this"),
        "{}",
        nuc.log_text()
    );
    for _ in 0..100 {
        b.goto(&format!("{origin}/fleet"));
        if b.text_of(&b.find("#node-nuc-1").unwrap())
            .contains(": done")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let row = b.text_of(&b.find("#node-nuc-1").unwrap());
    assert!(
        row.contains("reset asked by dsi") && row.contains(": done"),
        "{row}"
    );
    b.screenshot(&shots.join("fleet.png"));
    check_page(&b, &origin, "fleet page");

    b.click(&b.find("nav a[href='/masters']").unwrap());
    b.wait_url(&format!("{origin}/masters"));
    let masters = b.text_of(&b.find("#masters").unwrap());
    assert!(masters.contains("demo 1"), "{masters}");
    assert!(masters.contains("lyon: relay, 1 NUC"), "{masters}");
    assert!(masters.contains("demo 2"), "{masters}");
    assert!(
        masters.contains("% of it"),
        "chunks shared between the versions: {masters}"
    );
    check_page(&b, &origin, "masters page");

    // A new version sent from the browser: first refused as no disk (the test image has no
    // partition table), in words naming the file; then sent again, ticked, and imported.
    let mut v3 = v2.clone();
    v3[2 << 20..(2 << 20) + 4096]
        .iter_mut()
        .for_each(|b| *b = b.wrapping_add(3));
    let img = f.dir.path().join("demo-3.img");
    std::fs::write(&img, &v3).unwrap();
    let send = |force: bool| {
        b.type_into(&b.find("#upload-name").unwrap(), "demo");
        b.type_into(&b.find("#upload-version").unwrap(), "3");
        if force {
            b.click(&b.find("#upload-force").unwrap());
        }
        b.type_into(&b.find("#upload-file").unwrap(), img.to_str().unwrap());
        b.click(&b.find("#send").unwrap());
        b.wait_url(&format!("{origin}/masters"));
    };
    let outcome = || {
        for _ in 0..150 {
            let row = b
                .find("#console-imports tr:nth-child(2)")
                .map(|r| b.text_of(&r))
                .unwrap_or_default();
            if row.contains("done:") || row.contains("failed:") {
                return row;
            }
            // The page reloads itself while the import is under way.
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the import did not end: {}", b.source());
    };
    send(false);
    let failed = outcome();
    assert!(
        failed.contains("failed: demo-3.img is not a disk image"),
        "{failed}"
    );
    send(true);
    let done = outcome();
    assert!(done.contains("done: demo 3, 4 MB disk"), "{done}");
    let listed = f.nightcast(&["master", "list"]);
    assert!(listed.contains('3'), "{listed}");
    // What demo 3 costs lyon, whose relay holds demo 1: the changed chunks, not the whole.
    let row = b.text_of(&b.find("#masters tr:last-child").unwrap());
    assert!(row.starts_with("demo 3"), "{row}");
    let cost = b.text_of(&b.find("#masters tr:last-child td.cost").unwrap());
    let (fetch, whole) = cost_of(&cost, "lyon");
    assert!(fetch > 0.0 && fetch < whole, "{cost}");
    assert!(cost.contains("of window, 1 night"), "{cost}");
    // The same from the command line.
    let cli = f.nightcast(&["master", "cost", "demo", "3"]);
    let lyon = cli
        .lines()
        .find(|l| l.starts_with("lyon"))
        .unwrap_or_else(|| panic!("{cli}"));
    assert!(
        lyon.split_whitespace()
            .nth(1)
            .is_some_and(|h| h.starts_with('1')),
        "the relay holds demo 1: {cli}"
    );
    assert!(lyon.ends_with(" 1"), "one night: {cli}");
    b.screenshot(&shots.join("masters.png"));
    check_page(&b, &origin, "masters page after an import");

    // Read-only: the fleet without a button; a forged reset refused, nothing recorded.
    b.click(&b.find("header form button").unwrap());
    b.wait_url(&format!("{origin}/login"));
    b.clear_cookies();
    log_in(&b, &origin, "viewer", "a long read-only password");
    b.wait_url(&format!("{origin}/"));
    b.goto(&format!("{origin}/fleet"));
    assert!(
        b.find("#reset-nuc-1").is_none(),
        "a read-only user sees no button"
    );
    assert!(b.find("td.actions button").is_none(), "{}", b.source());
    b.goto(&format!("{origin}/calendar"));
    assert!(b.find("#import").is_none() && b.find("#push").is_none() && b.find("#add").is_none());
    assert!(b.find("#sessions button").is_none(), "{}", b.source());
    b.goto(&format!("{origin}/masters"));
    assert!(b.find("#upload").is_none() && b.find("#import-path").is_none());
    forge_post(&b, "/masters/import");
    let refused = b.text_of(&b.wait_find("main p.err"));
    assert!(
        refused.contains("does not let you import masters"),
        "{refused}"
    );
    assert_eq!(f.nightcast(&["master", "list"]), listed);
    b.goto(&format!("{origin}/fleet"));
    forge_post(&b, "/nodes/nuc-1/reset");
    let refused = b.text_of(&b.wait_find("main p.err"));
    assert!(
        refused.contains(
            "Your role (readonly) does not let you reset, roll back or wake NUCs at lyon."
        ),
        "{refused}"
    );
    b.goto(&format!("{origin}/fleet"));
    let row = b.text_of(&b.find("#node-nuc-1").unwrap());
    assert!(
        row.contains("reset asked by dsi"),
        "the last order is still the DSI's: {row}"
    );
}
