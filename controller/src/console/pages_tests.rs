//! The fleet, calendar and masters pages through `routes::handle_at`, as a browser uses them:
//! who sees which button, what a forged POST changes (nothing), and the same answers as the CLI.

use image_tools::report::{AgentReport, Report};
use image_tools::wire::OrderKind;

use super::testing::*;
use crate::db::Db;

/// NUCs `nuc-l1` at lyon and `nuc-p1` at paris, enrolled and reporting.
fn with_nucs(c: &super::Console) {
    let mut db = Db::open(&c.api.data.database()).unwrap();
    for (site, node) in [("lyon", "nuc-l1"), ("paris", "nuc-p1")] {
        let reported = crate::db::Reported {
            software: "0.1".into(),
            report: Report::Agent(AgentReport {
                state: "ready".into(),
                free_disk_bytes: 80_000_000_000,
                ..AgentReport::default()
            }),
        };
        db.record_report(site, node, "agent", &[], &reported, NOW)
            .unwrap();
    }
}

fn orders(c: &super::Console) -> Vec<(String, OrderKind, String)> {
    let db = Db::open(&c.api.data.database()).unwrap();
    db.orders_since(0)
        .unwrap()
        .into_iter()
        .map(|o| (o.node, o.kind, o.asked_by))
        .collect()
}

#[test]
fn the_fleet_page_shows_buttons_only_where_the_user_acts_and_an_order_is_recorded() {
    let (_d, c) = console();
    with_nucs(&c);
    let (admin, token) = log_in(&c, "dsi", "correct horse battery", NOW);
    let page = get(&c, "/fleet", &admin, NOW).body;
    for id in [
        "reset-nuc-l1",
        "rollback-nuc-l1",
        "wake-nuc-l1",
        "revoke-nuc-p1",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}: {page}");
    }
    let r = post(
        &c,
        "/nodes/nuc-l1/reset",
        &admin,
        &format!("csrf={token}"),
        NOW,
    );
    assert_eq!(r.location.as_deref(), Some("/fleet?did=reset&node=nuc-l1"));
    assert_eq!(
        orders(&c),
        vec![("nuc-l1".into(), OrderKind::Reset, "dsi".into())]
    );
    let page = get(&c, "/fleet?did=reset&node=nuc-l1", &admin, NOW).body;
    assert!(page.contains("nuc-l1: reset asked"), "{page}");
    assert!(page.contains("reset asked by dsi"), "{page}");
    assert!(page.contains("waiting for the NUC"), "{page}");

    // The operator of paris: paris's NUC only, lyon's neither shown nor reachable.
    let (op, otoken) = log_in(&c, "paris-op", "operator password", NOW);
    let page = get(&c, "/fleet", &op, NOW).body;
    assert!(
        page.contains("id=\"rollback-nuc-p1\"") && !page.contains("nuc-l1"),
        "{page}"
    );
    let r = post(
        &c,
        "/nodes/nuc-l1/rollback",
        &op,
        &format!("csrf={otoken}"),
        NOW,
    );
    assert_eq!(r.status, 404);
    let r = post(
        &c,
        "/nodes/nuc-p1/rollback",
        &op,
        &format!("csrf={otoken}"),
        NOW,
    );
    assert_eq!(r.status, 303);

    // Read-only: no button, and a forged POST with its own token refused, nothing recorded.
    let (viewer, vtoken) = log_in(&c, "viewer", "read only password", NOW);
    let page = get(&c, "/fleet", &viewer, NOW).body;
    assert!(
        page.contains("nuc-l1") && !page.contains("<button id="),
        "{page}"
    );
    for action in ["reset", "rollback", "wake", "revoke"] {
        let r = post(
            &c,
            &format!("/nodes/nuc-l1/{action}"),
            &viewer,
            &format!("csrf={vtoken}"),
            NOW,
        );
        assert_eq!(r.status, 403, "{action}");
        assert!(r.body.contains("Your role (readonly)"), "{}", r.body);
    }
    assert_eq!(get(&c, "/nodes/nuc-l1/revoke", &viewer, NOW).status, 403);
    assert_eq!(orders(&c).len(), 2);
    let db = Db::open(&c.api.data.database()).unwrap();
    assert!(db.revoked_serials(Some("lyon"), NOW).unwrap().is_empty());
    // Without the token: refused too.
    assert_eq!(post(&c, "/nodes/nuc-l1/wake", &admin, "", NOW).status, 403);
    assert_eq!(orders(&c).len(), 2);
}

#[test]
fn revoking_asks_first_then_revokes() {
    let (_d, c) = console();
    with_nucs(&c);
    let (admin, token) = log_in(&c, "dsi", "correct horse battery", NOW);
    let ask = get(&c, "/nodes/nuc-l1/revoke", &admin, NOW);
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("id=\"confirm-revoke\""), "{}", ask.body);
    let r = post(
        &c,
        "/nodes/nuc-l1/revoke",
        &admin,
        &format!("csrf={token}"),
        NOW,
    );
    assert_eq!(r.location.as_deref(), Some("/fleet?did=revoke&node=nuc-l1"));
    let db = Db::open(&c.api.data.database()).unwrap();
    assert!(db
        .fleet(NOW, 1800)
        .unwrap()
        .iter()
        .any(|n| n.node == "nuc-l1"));
}

/// A multipart body as Chromium sends it, with the session's token and one file.
fn upload(
    c: &super::Console,
    cookie: &str,
    token: &str,
    name: &str,
    file: &[u8],
) -> super::http::Response {
    let b = "----WebKitFormBoundaryT3st";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    let mut h = head("POST", "/calendar", cookie, body.len());
    h.content_type = Some(format!("multipart/form-data; boundary={b}"));
    super::routes::handle_at(c, &h, &body, NOW)
}

fn sessions(c: &super::Console) -> usize {
    Db::open(&c.api.data.database())
        .unwrap()
        .sessions(None)
        .unwrap()
        .len()
}

#[test]
fn a_calendar_upload_says_the_line_of_its_error_and_changes_nothing() {
    let (_d, c) = console();
    let db = Db::open(&c.api.data.database()).unwrap();
    let (m, bytes) = crate::testing::manifest("demo", "1", 1);
    db.add_master(&m, &bytes, 0).unwrap();
    let (admin, token) = log_in(&c, "dsi", "correct horse battery", NOW);
    let bad = b"site,room,master,version,start,end\nlyon,salle-1,demo,1,2026-12-10 08:00,2026-12-10 12:00\nlyon,salle-1,demo,1,2026-12-11 25:00,2026-12-11 12:00\n";
    let r = upload(&c, &admin, &token, "term.csv", bad);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("term.csv:3:"), "{}", r.body);
    assert!(r.body.contains("Nothing was changed."), "{}", r.body);
    assert_eq!(sessions(&c), 0);
    let r = upload(
        &c,
        &admin,
        &token,
        "photo.png",
        b"\x89PNG\r\n\x1a\n\x00\x00",
    );
    assert!(r.body.contains("photo.png is not a calendar"), "{}", r.body);
    let good = b"site,room,master,version,start,end\nlyon,salle-1,demo,1,2026-12-10 08:00,2026-12-10 12:00\n";
    let r = upload(&c, &admin, &token, "term.csv", good);
    assert_eq!(
        r.location.as_deref(),
        Some("/calendar?imported=1&file=term.csv")
    );
    assert_eq!(sessions(&c), 1);
    // Not an admin: refused, nothing imported; a forged token: refused.
    let (op, otoken) = log_in(&c, "paris-op", "operator password", NOW);
    assert_eq!(upload(&c, &op, &otoken, "term.csv", good).status, 403);
    assert_eq!(
        upload(&c, &admin, &"0".repeat(64), "term.csv", good).status,
        403
    );
    assert_eq!(sessions(&c), 1);
    assert!(!get(&c, "/calendar", &op, NOW)
        .body
        .contains("action=\"/calendar\""));
}

/// Master demo 1 in the catalogue, room salle-p at paris; the sessions' (id, site, start).
fn with_master(c: &super::Console) {
    let db = Db::open(&c.api.data.database()).unwrap();
    let (m, bytes) = crate::testing::manifest("demo", "1", 1);
    db.add_master(&m, &bytes, 0).unwrap();
    db.add_room("paris", "salle-p").unwrap();
}

fn session_rows(c: &super::Console) -> Vec<(i64, String, i64)> {
    Db::open(&c.api.data.database())
        .unwrap()
        .sessions(None)
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.site, s.start))
        .collect()
}

/// The Add form's fields as a browser sends them.
fn add_form(token: &str, site: &str, room: &str, version: &str, start: &str, end: &str) -> String {
    format!(
        "csrf={token}&site={site}&room={room}&master=demo+{version}&start={}&end={}",
        start.replace(' ', "+"),
        end.replace(' ', "+")
    )
}

#[test]
fn a_dsi_adds_moves_and_removes_a_session_from_the_calendar_page() {
    let (_d, c) = console();
    with_master(&c);
    let (admin, token) = log_in(&c, "dsi", "correct horse battery", NOW);
    let page = get(&c, "/calendar", &admin, NOW).body;
    assert!(page.contains("action=\"/sessions\""), "{page}");
    let r = post(
        &c,
        "/sessions",
        &admin,
        &add_form(
            &token,
            "lyon",
            "salle-1",
            "1",
            "2026-12-10 08:00",
            "2026-12-10 12:00",
        ),
        NOW,
    );
    assert_eq!(
        r.location.as_deref(),
        Some("/calendar?added=1"),
        "{}",
        r.body
    );
    let rows = session_rows(&c);
    assert_eq!(rows.len(), 1);
    let id = rows[0].0;
    // 08:00 in Paris is 07:00 UTC in December.
    assert_eq!(rows[0].2, 1_796_886_000);
    let page = get(&c, "/calendar?added=1", &admin, NOW).body;
    assert!(page.contains("Session added."), "{page}");
    assert!(page.contains(&format!("id=\"session-{id}\"")), "{page}");
    assert!(page.contains("value=\"2026-12-10 08:00\""), "{page}");
    assert!(page.contains("added by hand"), "{page}");
    assert!(page.contains(&format!("id=\"remove-{id}\"")), "{page}");

    let r = post(
        &c,
        &format!("/sessions/{id}/move"),
        &admin,
        &format!("csrf={token}&start=2026-12-11+13:30&end=2026-12-11+17:00"),
        NOW,
    );
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/calendar?moved={id}").as_str()),
        "{}",
        r.body
    );
    assert_eq!(
        session_rows(&c)[0].2,
        1_796_886_000 + 86_400 + 5 * 3600 + 1800
    );
    let page = get(&c, &format!("/calendar?moved={id}"), &admin, NOW).body;
    assert!(page.contains(&format!("Session {id} moved.")), "{page}");
    assert!(page.contains("value=\"2026-12-11 13:30\""), "{page}");

    let r = post(
        &c,
        &format!("/sessions/{id}/remove"),
        &admin,
        &format!("csrf={token}"),
        NOW,
    );
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/calendar?removed={id}").as_str())
    );
    assert!(session_rows(&c).is_empty());
    let page = get(&c, &format!("/calendar?removed={id}"), &admin, NOW).body;
    assert!(page.contains(&format!("Session {id} removed.")), "{page}");
}

#[test]
fn a_refused_session_says_why_in_the_clis_words_and_changes_nothing() {
    let (_d, c) = console();
    with_master(&c);
    let (admin, token) = log_in(&c, "dsi", "correct horse battery", NOW);
    let add = |room: &str, version: &str, start: &str, end: &str| {
        post(
            &c,
            "/sessions",
            &admin,
            &add_form(&token, "lyon", room, version, start, end),
            NOW,
        )
    };
    assert_eq!(
        add("salle-1", "1", "2026-12-10 08:00", "2026-12-10 12:00").status,
        303
    );
    let before = session_rows(&c);
    for (r, words) in [
        (
            add("salle-9", "1", "2026-12-10 14:00", "2026-12-10 17:00"),
            "unknown room &quot;salle-9&quot; at site &quot;lyon&quot;",
        ),
        (
            add("salle-1", "9", "2026-12-10 14:00", "2026-12-10 17:00"),
            "unknown master demo 9",
        ),
        (
            add("salle-1", "1", "2026-12-10 11:00", "2026-12-10 17:00"),
            "room &quot;salle-1&quot; already has a session at that time",
        ),
        (
            add("salle-1", "1", "2026-12-10 25:00", "2026-12-10 17:00"),
            "session:2:",
        ),
        (
            add("salle-1", "1", "2020-01-06 08:00", "2020-01-06 12:00"),
            "that time is in the past",
        ),
    ] {
        assert_eq!(r.status, 400, "{words}: {}", r.body);
        assert!(r.body.contains(words), "{words}: {}", r.body);
        assert!(r.body.contains("Nothing was changed."), "{}", r.body);
    }
    let id = before[0].0;
    let moved = |start: &str, end: &str| {
        post(
            &c,
            &format!("/sessions/{id}/move"),
            &admin,
            &format!(
                "csrf={token}&start={}&end={}",
                start.replace(' ', "+"),
                end.replace(' ', "+")
            ),
            NOW,
        )
    };
    let r = moved("2020-01-06 08:00", "2020-01-06 12:00");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("that time is in the past"), "{}", r.body);
    let r = moved("2026-12-10 12:00", "2026-12-10 08:00");
    assert!(
        r.body.contains("the session ends before it starts"),
        "{}",
        r.body
    );
    assert_eq!(session_rows(&c), before);
    // An id that is no session: the console's "not found", nothing removed.
    let r = post(
        &c,
        "/sessions/999/remove",
        &admin,
        &format!("csrf={token}"),
        NOW,
    );
    assert_eq!(r.status, 404);
    assert_eq!(session_rows(&c), before);
}

#[test]
fn only_an_admin_or_the_sites_operator_changes_sessions_and_a_forged_post_changes_nothing() {
    let (_d, c) = console();
    with_master(&c);
    let mut db = Db::open(&c.api.data.database()).unwrap();
    for (site, room) in [("lyon", "salle-1"), ("paris", "salle-p")] {
        db.add_session(
            site,
            room,
            ("demo", "1"),
            "2026-12-10 08:00",
            "2026-12-10 12:00",
            NOW,
        )
        .unwrap();
    }
    let before = session_rows(&c);
    let (lyon, paris) = (before[0].0, before[1].0);
    let tries = |cookie: &str, token: &str| {
        [
            (
                "/sessions".to_owned(),
                add_form(
                    token,
                    "lyon",
                    "salle-1",
                    "1",
                    "2026-12-12 08:00",
                    "2026-12-12 12:00",
                ),
            ),
            (
                format!("/sessions/{lyon}/move"),
                format!("csrf={token}&start=2026-12-12+08:00&end=2026-12-12+12:00"),
            ),
            (format!("/sessions/{lyon}/remove"), format!("csrf={token}")),
        ]
        .map(|(url, body)| post(&c, &url, cookie, &body, NOW).status)
    };

    // Read-only: the sessions, no form; each POST refused with its own token.
    let (viewer, vtoken) = log_in(&c, "viewer", "read only password", NOW);
    let page = get(&c, "/calendar", &viewer, NOW).body;
    assert!(page.contains(&format!("id=\"session-{lyon}\"")), "{page}");
    assert!(!page.contains("action=\"/sessions"), "{page}");
    assert!(!page.contains("<button id="), "{page}");
    assert_eq!(tries(&viewer, &vtoken), [403, 403, 403]);

    // The operator of paris: paris's session with its buttons, lyon's not even shown.
    let (op, otoken) = log_in(&c, "paris-op", "operator password", NOW);
    let page = get(&c, "/calendar", &op, NOW).body;
    assert!(page.contains(&format!("id=\"move-{paris}\"")), "{page}");
    assert!(!page.contains(&format!("session-{lyon}")), "{page}");
    assert_eq!(tries(&op, &otoken), [403, 404, 404]);

    // An admin's POST without the session's token.
    let (admin, _) = log_in(&c, "dsi", "correct horse battery", NOW);
    assert_eq!(tries(&admin, &"0".repeat(64)), [403, 403, 403]);
    assert_eq!(session_rows(&c), before);

    let r = post(
        &c,
        &format!("/sessions/{paris}/remove"),
        &op,
        &format!("csrf={otoken}"),
        NOW,
    );
    assert_eq!(r.status, 303);
    assert_eq!(session_rows(&c), before[..1]);
}

#[test]
fn a_too_large_upload_is_refused_before_it_is_read() {
    let head = format!(
        "POST /calendar HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        super::http::MAX_UPLOAD + 1
    );
    assert_eq!(super::http::parse(head.as_bytes()), Err(413));
    let head = format!(
        "POST /calendar HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    assert!(super::http::parse(head.as_bytes()).unwrap().is_some());
    assert!(super::routes::status(413).body.contains("4 MB"));
}

#[test]
fn the_masters_page_lists_each_version() {
    let (_d, c) = console();
    let mut db = Db::open(&c.api.data.database()).unwrap();
    let (m, bytes) = crate::testing::manifest("demo", "1", 1);
    db.add_master(&m, &bytes, 0).unwrap();
    let (admin, _) = log_in(&c, "dsi", "correct horse battery", NOW);
    let page = get(&c, "/masters", &admin, NOW).body;
    assert!(page.contains("<b>demo</b> 1"), "{page}");
    assert!(page.contains("each NUC's own"), "{page}");
    // The catalogue's machine profile, in the words of `nightcast master profile show`.
    let win7 = image_tools::profile::Profile {
        firmware: image_tools::profile::Firmware::Bios,
        ..image_tools::profile::Profile::default()
    };
    db.set_profile(&"demo".parse().unwrap(), Some(&win7), NOW)
        .unwrap();
    let page = get(&c, "/masters", &admin, NOW).body;
    assert!(page.contains(&win7.to_string()), "{page}");
    assert!(!page.contains("each NUC's own"), "{page}");
}

/// The outcome of the console's import of `name` `version`, once it ended (within 20 s).
fn import_outcome(c: &super::Console, version: &str) -> Result<image_tools::api::Imported, String> {
    for _ in 0..400 {
        let ended = c
            .api
            .imports
            .from_console()
            .into_iter()
            .find(|i| i.version.as_str() == version)
            .and_then(|i| i.outcome);
        if let Some(outcome) = ended {
            return outcome;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the import of {version} did not end");
}

#[test]
fn a_dsi_imports_a_version_by_its_path_and_sees_how_it_ended_and_its_cost_a_viewer_cannot() {
    let (d, c) = console();
    let disk = image_tools::testimage::disk_bytes(4 << 20, 7);
    let image = d.path().join("demo-1.img");
    std::fs::write(&image, &disk).unwrap();
    let not_a_disk = d.path().join("notes.bin");
    std::fs::write(&not_a_disk, vec![0u8; 2 << 20]).unwrap();
    let form = |token: &str, version: &str, path: &std::path::Path| {
        format!(
            "csrf={token}&name=demo&version={version}&path={}",
            path.display()
        )
    };

    // Read-only: no form, and a POST with its own token refused, nothing started.
    let (viewer, vtoken) = log_in(&c, "viewer", "read only password", NOW);
    let page = get(&c, "/masters", &viewer, NOW).body;
    assert!(
        !page.contains("id=\"upload\"") && !page.contains("id=\"import-path\""),
        "{page}"
    );
    let r = post(
        &c,
        "/masters/import",
        &viewer,
        &form(&vtoken, "1", &image),
        NOW,
    );
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("does not let you import masters"),
        "{}",
        r.body
    );
    // An admin's POST without the session's token.
    let (admin, token) = log_in(&c, "dsi", "correct horse battery", NOW);
    let r = post(
        &c,
        "/masters/import",
        &admin,
        &form(&"0".repeat(64), "1", &image),
        NOW,
    );
    assert_eq!(r.status, 403);
    assert!(c.api.imports.from_console().is_empty());

    // A file that is no disk: the import's own words, the page no longer reloading.
    let page = get(&c, "/masters", &admin, NOW).body;
    assert!(
        page.contains("id=\"upload\"") && page.contains("id=\"import-path\""),
        "{page}"
    );
    let r = post(
        &c,
        "/masters/import",
        &admin,
        &form(&token, "0", &not_a_disk),
        NOW,
    );
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/masters")));
    let e = import_outcome(&c, "0").unwrap_err();
    assert!(e.contains("not a disk image"), "{e}");
    let page = get(&c, "/masters", &admin, NOW).body;
    assert!(
        page.contains("failed: ") && page.contains("not a disk image"),
        "{page}"
    );
    assert!(!page.contains("http-equiv=\"refresh\""), "{page}");

    // A disk image: done, listed with its size; a site with a session for it fetches it whole.
    let mut db = Db::open(&c.api.data.database()).unwrap();
    let r = post(
        &c,
        "/masters/import",
        &admin,
        &form(&token, "1", &image),
        NOW,
    );
    assert_eq!(r.status, 303);
    let done = import_outcome(&c, "1").unwrap();
    assert_eq!(done.size, 4 << 20);
    db.add_session(
        "lyon",
        "salle-1",
        ("demo", "1"),
        "2026-12-10 08:00",
        "2026-12-10 12:00",
        NOW,
    )
    .unwrap();
    let page = get(&c, "/masters", &admin, NOW).body;
    let done_line = format!("done: demo 1, {} disk", super::board::bytes(4 << 20));
    assert!(page.contains(&done_line), "{page}");
    assert!(page.contains("<b>demo</b> 1"), "{page}");
    let costs: Vec<image_tools::api::SiteCost> = super::calendar::answer(crate::api::call(
        &c.api,
        "GET",
        "/v1/masters/demo/1/cost",
        &(),
    ))
    .unwrap();
    assert_eq!(costs.len(), 1, "{costs:?}");
    assert_eq!(costs[0].missing_bytes, costs[0].stored_bytes);
    assert!(
        page.contains(&format!(
            "lyon: {} to fetch of",
            super::board::bytes(costs[0].missing_bytes)
        )),
        "{page}"
    );
    // The same version again: refused by the import, in its words.
    post(
        &c,
        "/masters/import",
        &admin,
        &form(&token, "1", &image),
        NOW,
    );
    for _ in 0..400 {
        if c.api.imports.from_console()[0].outcome.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let again = c.api.imports.from_console()[0].outcome.clone().unwrap();
    assert!(again.unwrap_err().contains("already exists"));
}

/// Whatever a node, a user, a master or an override says, it reaches the new pages escaped.
#[test]
fn no_outside_string_reaches_the_fleet_calendar_or_masters_page_unescaped() {
    use std::collections::{BTreeMap, HashMap};

    use image_tools::api::{
        FleetRow, ImportProgress, MasterInfo, NodeRole, OverrideInfo, SessionInfo, SessionOrigin,
    };

    use super::calendar_page::{self, CalendarPage, Outcome};
    use super::fleet_page::{self, FleetPage};
    use super::masters_page::{self, Held, MasterLine};
    use super::session::Session;
    use super::users::{Role, User};
    use crate::db::OrderRow;

    const EVIL: &str = "<script>alert(1)</script>";
    let session = Session {
        user: User {
            name: format!("eve{EVIL}"),
            role: Role::Admin,
            sites: Vec::new(),
        },
        stamp: String::new(),
        csrf: "c".repeat(64),
        created: 0,
        last_used: 0,
    };
    let node = FleetRow {
        site: "lyon".parse().unwrap(),
        node: "nuc-1".parse().unwrap(),
        role: NodeRole::Agent,
        enrolled_at: Some(0),
        last_seen: Some(0),
        holding: EVIL.into(),
        seat: EVIL.into(),
        waiting: None,
        state: EVIL.into(),
        software: String::new(),
        attention: EVIL.into(),
        status: Report::Agent(AgentReport {
            next: Some(image_tools::wire::MasterRef::new("demo", "2").unwrap()),
            next_state: EVIL.into(),
            last_error: Some(EVIL.into()),
            ..AgentReport::default()
        }),
        mac: None,
        via: None,
        key: None,
    };
    let orders = HashMap::from([(
        "nuc-1".to_owned(),
        OrderRow {
            id: 1,
            site: "lyon".into(),
            node: "nuc-1".into(),
            kind: OrderKind::Reset,
            asked_by: EVIL.into(),
            asked_at: 0,
        },
    )]);
    let zones = HashMap::from([("lyon".to_owned(), EVIL.to_owned())]);
    let master = MasterInfo {
        name: "demo".parse().unwrap(),
        version: "1".parse().unwrap(),
        size: 1,
        stored_bytes: 1,
        profile: None,
    };
    let o = OverrideInfo {
        id: 1,
        site: "lyon".parse().unwrap(),
        master: "demo".parse().unwrap(),
        version: "1".parse().unwrap(),
        reason: EVIL.into(),
        by: EVIL.into(),
        created_at: 0,
        until: 0,
        deadline: Some(0),
    };
    let evil_session = SessionInfo {
        id: 7,
        site: "lyon".parse().unwrap(),
        room: "salle-1".parse().unwrap(),
        master: "demo".parse().unwrap(),
        version: "1".parse().unwrap(),
        start: 200,
        end: 300,
        origin: SessionOrigin::Calendar {
            source: EVIL.into(),
            feed: false,
        },
    };
    let import = ImportProgress {
        name: "demo".parse().unwrap(),
        version: "2".parse().unwrap(),
        image: EVIL.into(),
        size: 10_000_000,
        read: 5_000_000,
        elapsed_secs: 3.0,
    };
    let held = BTreeMap::from([(
        EVIL.to_owned(),
        Held {
            relay: true,
            nucs: 2,
        },
    )]);
    let pages = [
        fleet_page::fleet(
            &session,
            &FleetPage {
                nodes: vec![&node],
                zones: &zones,
                orders: &orders,
                user: &session.user,
                flash: Some(EVIL),
                now: 100,
            },
        ),
        fleet_page::confirm_revoke(&session, &node),
        calendar_page::calendar(
            &session,
            &CalendarPage {
                may_import: true,
                push_sites: vec![EVIL],
                masters: std::slice::from_ref(&master),
                overrides: vec![&o],
                sessions: vec![&evil_session],
                rooms: vec![EVIL],
                zones: &zones,
                outcome: Outcome::Refused(EVIL.into()),
            },
        ),
        masters_page::masters(
            &session,
            &[MasterLine {
                info: &master,
                shared: 1,
                held,
                costs: vec![image_tools::api::SiteCost {
                    site: "lyon".parse().unwrap(),
                    holds: vec![],
                    missing_bytes: 1,
                    stored_bytes: 2,
                    rate_bytes_per_sec: 1,
                    window_secs: None,
                    nights: None,
                    ready_at: None,
                    relay: true,
                }],
            }],
            &[import],
            &[crate::imports::FromConsole {
                name: master.name.clone(),
                version: master.version.clone(),
                by: EVIL.into(),
                started: 0,
                outcome: Some(Err(EVIL.into())),
            }],
        ),
    ];
    for p in &pages {
        assert!(!p.contains("<script"), "{p}");
        assert!(p.contains("&lt;script&gt;"), "{p}");
    }
    assert!(
        pages[3].contains("5 MB of 10 MB (50%)"),
        "the import's progress: {}",
        pages[3]
    );
}
