//! What the console's tests share: a controller's data directory with sites, NUCs and users, and
//! requests as a browser sends them (the login form's token, then the session's cookie).

use std::sync::Arc;

use image_tools::exchange::{EnrolAsk, Via};
use image_tools::trust::Identity;
use image_tools::wire::Role as NodeRole;

use super::http::{Head, Response};
use super::routes::handle_at;
use super::users::{self, Role};
use super::Console;
use crate::db::Db;
use crate::DataDir;

pub const NOW: i64 = 1_796_164_200;

/// A controller's data directory with site lyon (room salle-1), site paris, a NUC of each
/// waiting for approval, and users `dsi` (admin), `viewer` (readonly) and `paris-op`
/// (operator of paris).
pub fn console() -> (tempfile::TempDir, Console) {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir(dir.path().to_owned());
    crate::init(&data, NOW).unwrap();
    let mut db = Db::open(&data.database()).unwrap();
    for site in ["lyon", "paris"] {
        db.add_site(site, "Europe/Paris", "22:00-06:00", 20, None)
            .unwrap();
        let ask = EnrolAsk {
            token: None,
            role: NodeRole::Agent,
            node: format!("nuc-{site}").parse().unwrap(),
            public_key: vec![4; 65],
            mac: "02:00:00:00:00:01".into(),
            renewal: false,
            via: Via::Relay(Identity {
                role: NodeRole::Relay,
                site: site.parse().unwrap(),
                node: format!("relay-{site}").parse().unwrap(),
            }),
        };
        db.decide_enrolment(&ask, NOW).unwrap();
    }
    db.add_room("lyon", "salle-1").unwrap();
    users::add(&db, "dsi", Role::Admin, &[], "correct horse battery", NOW).unwrap();
    users::add(
        &db,
        "viewer",
        Role::ReadOnly,
        &[],
        "read only password",
        NOW,
    )
    .unwrap();
    let paris = vec!["paris".parse().unwrap()];
    users::add(
        &db,
        "paris-op",
        Role::Operator,
        &paris,
        "operator password",
        NOW,
    )
    .unwrap();
    let api = crate::api::Api {
        data,
        token: "t".into(),
        clock: image_tools::clock::Clock::parse_now("start=2026-12-01T22:30:00Z").unwrap(),
        settings: crate::plan::Settings::default(),
        silent_after_secs: 1800,
        feed_poll_minutes: 15,
        imports: Default::default(),
        changed: Arc::new(tokio::sync::Notify::new()),
        classes: crate::plan::ClassCache::default(),
        metrics: Default::default(),
        store: Arc::new(image_tools::LocalStore::open(&dir.path().join("store")).unwrap()),
        far_port: None,
    };
    (dir, Console::new(Arc::new(api)))
}

pub fn head(method: &str, target: &str, cookie: &str, length: usize) -> Head {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Head {
        len: 0,
        method: method.into(),
        path: path.into(),
        query: query.into(),
        cookie: (!cookie.is_empty()).then(|| cookie.to_owned()),
        content_type: None,
        length,
    }
}

pub fn get(c: &Console, target: &str, cookie: &str, now: i64) -> Response {
    handle_at(c, &head("GET", target, cookie, 0), b"", now)
}

pub fn post(c: &Console, target: &str, cookie: &str, body: &str, now: i64) -> Response {
    handle_at(
        c,
        &head("POST", target, cookie, body.len()),
        body.as_bytes(),
        now,
    )
}

/// The `name=value` of each `Set-Cookie`, joined as a browser sends them back.
pub fn cookies(r: &Response) -> String {
    r.set_cookie
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The hidden `csrf` field of a page.
pub fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    page[at..at + 64].to_owned()
}

/// Logs in as the browser does (the form's token, then the password): the session's cookie
/// and CSRF token.
pub fn log_in(c: &Console, name: &str, password: &str, now: i64) -> (String, String) {
    let form = get(c, "/login", "", now);
    let body = format!(
        "name={name}&password={}&csrf={}",
        password.replace(' ', "+"),
        csrf(&form.body)
    );
    let r = post(c, "/login", &cookies(&form), &body, now);
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r.set_cookie[0].split(';').next().unwrap().to_owned();
    let board = get(c, "/", &cookie, now);
    assert_eq!(board.status, 200, "{}", board.body);
    (cookie, csrf(&board.body))
}
