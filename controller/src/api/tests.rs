use super::*;
use proptest::prelude::*;
use serde_json::json;

const TOKEN: &str = "t0ken";

/// An initialised data directory with one site, room and seat, served by an `Api` at a fixed time.
fn api() -> (tempfile::TempDir, Api) {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir(dir.path().to_owned());
    let now = 1_796_164_200;
    crate::init(&data, now).unwrap();
    let db = Db::open(&data.database()).unwrap();
    db.add_site("lyon", "Europe/Paris", "22:00-06:00", 20, None)
        .unwrap();
    db.add_room("lyon", "salle-1").unwrap();
    db.add_seat("lyon", "salle-1", "s1").unwrap();
    let api = Api {
        feed_poll_minutes: 15,
        imports: Default::default(),
        data,
        token: TOKEN.into(),
        clock: image_tools::clock::Clock::parse_now("start=2026-12-01T22:30:00Z").unwrap(),
        settings: crate::plan::Settings {
            staging_margin_secs: 7200,
            risk_share_percent: 80,
            relay_silent_after_secs: 86_400,
        },
        silent_after_secs: 1800,
        changed: Arc::new(tokio::sync::Notify::new()),
        classes: crate::plan::ClassCache::default(),
        metrics: Default::default(),
        store: Arc::new(image_tools::LocalStore::open(&dir.path().join("store")).unwrap()),
        far_port: None,
    };
    (dir, api)
}

/// Field names the routes read (`image` left out: a master import reads the file it names).
const FIELDS: &[&str] = &[
    "name",
    "tz",
    "windows",
    "cap_mbit",
    "takeover",
    "site",
    "room",
    "seat",
    "node",
    "master",
    "version",
    "start",
    "end",
    "file_name",
    "text",
    "hours",
    "reason",
    "by",
    "minutes",
    "role",
    "ttl_hours",
    "format",
    "deadline",
    "all_sites",
    "dry_run",
    "emergency_cap_mbit",
    "profile",
    "link",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "lyon",
            "salle-1",
            "s1",
            "win10",
            "1",
            "Europe/Paris",
            "22:00-06:00",
            "relay",
            "agent",
            "auto",
            "confirm",
            "far",
            "x.ics",
            "x.csv",
            "2026-12-03 08:30",
            "../..",
            "",
        ])
        .prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
    ]
}

fn body() -> impl Strategy<Value = Value> {
    let object = proptest::collection::vec((prop::sample::select(FIELDS), leaf()), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    prop_oneof![
        3 => object,
        1 => leaf(),
        1 => proptest::collection::vec(leaf(), 0..4).prop_map(Value::from),
    ]
}

fn url() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        prop::sample::select(vec![
            "v1",
            "sites",
            "rooms",
            "seats",
            "assign",
            "replace",
            "masters",
            "calendar",
            "sessions",
            "move",
            "plan",
            "fleet",
            "overrides",
            "pushes",
            "tokens",
            "nodes",
            "approve",
            "revoke",
            "accept-new",
            "profile",
            "profiles",
            "lyon",
            "win10",
            "1",
            "-1",
            "..",
            "",
        ])
        .prop_map(str::to_owned),
        "[^/?]{0,12}",
    ];
    (
        proptest::collection::vec(segment, 0..5),
        "(\\?[a-z=&]{0,12})?",
    )
        .prop_map(|(segments, query)| format!("/{}{query}", segments.join("/")))
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["GET", "POST", "DELETE", "PUT", "PATCH"]).prop_map(str::to_owned),
        "[A-Z]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes as a request head: incomplete, an error reply, or a head within the bytes read
    /// whose body is at most `MAX_BODY`; never a panic.
    #[test]
    fn any_head_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_head(&bytes)?;
    }

    /// Mutations of a valid request, head and body, through the reader as a connection feeds it.
    #[test]
    fn mutated_requests_are_read_or_refused(
        edits in proptest::collection::vec(any::<(u8, usize, usize)>().prop_map(image_tools::mutation::Edit::from), 1..6),
        length in prop_oneof![Just(None), (0u64..64).prop_map(Some), any::<u64>().prop_map(Some)],
    ) {
        let body = r#"{"site":"lyon","room":"salle-2"}"#;
        let length = length.unwrap_or(body.len() as u64);
        let valid = format!(
            "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n{body}"
        );
        let bytes = image_tools::mutation::mutate(valid.as_bytes(), &edits);
        check_head(&bytes)?;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        match rt.block_on(read_request(&mut &bytes[..], TOKEN)) {
            Ok(r) => prop_assert!(r.body.len() < bytes.len() && !r.method.is_empty()),
            Err((status, _)) => prop_assert!(matches!(status, 400 | 401 | 411 | 413 | 431), "{status}"),
        }
    }
}

/// Runs `check` on 256 cases of `strategy` against one data directory (making one costs a CA
/// and a few fsyncs: too slow for every case).
fn against_one_api<S: Strategy>(
    strategy: S,
    check: impl Fn(&Api, S::Value) -> Result<(), TestCaseError>,
) {
    let (_dir, api) = api();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    if let Err(e) = runner.run(&strategy, |v| check(&api, v)) {
        panic!("{e}");
    }
}

/// Whatever the method, URL and JSON body, the admin API answers (never panics), and
/// nonsense is the client's fault (4xx), never the controller's (500).
#[test]
fn any_request_gets_an_answer_and_nonsense_a_4xx() {
    against_one_api((method(), url(), body()), |api, (method, url, body)| {
        let (status, answer) = route(api, &method, &url, &body);
        prop_assert!(
            matches!(status, 200 | 400 | 404 | 409),
            "{method} {url} {body}: {status} {answer}"
        );
        Ok(())
    });
}

/// Raw request bodies: anything that is not JSON is a 400.
#[test]
fn any_body_bytes_get_an_answer() {
    let bytes = proptest::collection::vec(any::<u8>(), 1..200);
    against_one_api((url(), bytes), |api, (url, body)| {
        let (status, _) = handle(
            api,
            Request {
                method: "POST".into(),
                url,
                body,
            },
        );
        prop_assert!(matches!(status, 200 | 400 | 404 | 409), "{status}");
        Ok(())
    });
}

fn check_head(bytes: &[u8]) -> Result<(), TestCaseError> {
    match parse_head(bytes, TOKEN) {
        Ok(None) => prop_assert!(bytes.len() < MAX_HEAD),
        Ok(Some(h)) => prop_assert!(h.len <= bytes.len() && h.length <= MAX_BODY),
        Err((status, _)) => prop_assert!(matches!(status, 400 | 401 | 411 | 413 | 431)),
    }
    Ok(())
}

#[test]
fn a_request_is_read_whole_and_a_short_body_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let read = |text: &str| rt.block_on(read_request(&mut text.as_bytes(), TOKEN));
    let r = read(
        "POST /v1/rooms HTTP/1.1\r\nAuthorization: Bearer t0ken\r\nContent-Length: 2\r\n\r\n{}",
    )
    .unwrap();
    assert_eq!(
        (r.method.as_str(), r.url.as_str(), &r.body[..]),
        ("POST", "/v1/rooms", &b"{}"[..])
    );
    let short = read(
        "POST /v1/rooms HTTP/1.1\r\nAuthorization: Bearer t0ken\r\nContent-Length: 99\r\n\r\n{}",
    );
    assert_eq!(short.unwrap_err().0, 400);
    let huge = read(
        "POST / HTTP/1.1\r\nAuthorization: Bearer t0ken\r\nContent-Length: 99999999999\r\n\r\n",
    );
    assert_eq!(huge.unwrap_err().0, 413);
    let stranger =
        read("POST / HTTP/1.1\r\nAuthorization: Bearer nope\r\nContent-Length: 9\r\n\r\n");
    assert_eq!(stranger.unwrap_err().0, 401);
}

#[test]
fn a_token_lives_a_month_at_most() {
    let (_dir, api) = api();
    let ask = |ttl: Value| {
        route(
            &api,
            "POST",
            "/v1/tokens",
            &json!({"role": "agent", "site": "lyon", "ttl_hours": ttl}),
        )
        .0
    };
    assert_eq!(ask(json!(24)), 200);
    assert_eq!(ask(json!(u64::MAX)), 400);
    assert_eq!(ask(json!(0)), 400);
}

#[test]
fn numbers_beyond_the_database_are_refused() {
    let (_dir, api) = api();
    let site = |cap: Value| {
        route(
            &api,
            "POST",
            "/v1/sites",
            &json!({"name": "nice", "tz": "Europe/Paris", "cap_mbit": cap}),
        )
    };
    let (status, answer) = site(json!(u64::MAX));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = route(
        &api,
        "DELETE",
        "/v1/sessions/99999999999999999999",
        &Value::Null,
    );
    assert_eq!(status, 400, "{answer}");
}

#[test]
fn a_session_moved_keeps_its_id_and_a_clash_or_the_past_changes_nothing() {
    let (_dir, api) = api();
    let mut db = Db::open(&api.data.database()).unwrap();
    let (m, bytes) = crate::testing::manifest("win10", "1", 1);
    db.add_master(&m, &bytes, 0).unwrap();
    for day in ["08", "09"] {
        db.add_session(
            "lyon",
            "salle-1",
            ("win10", "1"),
            &format!("2030-01-{day} 08:30"),
            &format!("2030-01-{day} 12:00"),
            0,
        )
        .unwrap();
    }
    let starts = || -> Vec<(i64, i64)> {
        db.sessions(None)
            .unwrap()
            .iter()
            .map(|s| (s.id, s.start))
            .collect()
    };
    let before = starts();
    let moved = |id: i64, start: &str, end: &str| {
        route(
            &api,
            "POST",
            &format!("/v1/sessions/{id}/move"),
            &json!({"start": start, "end": end}),
        )
    };
    let (status, answer) = moved(before[0].0, "2030-01-09 11:00", "2030-01-09 13:00");
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("already has a session"),
        "{answer}"
    );
    let (status, answer) = moved(before[0].0, "2026-11-30 08:30", "2026-11-30 12:00");
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("in the past"),
        "{answer}"
    );
    let (status, answer) = moved(99, "2030-01-10 08:30", "2030-01-10 12:00");
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("no session 99"),
        "{answer}"
    );
    assert_eq!(starts(), before);
    let (status, answer) = moved(before[0].0, "2030-01-10 08:30", "2030-01-10 12:00");
    assert_eq!(status, 200, "{answer}");
    let after = starts();
    assert_eq!(
        after[1].0, before[0].0,
        "the same id, now the later session"
    );
    assert_eq!(after[1].1, before[0].1 + 2 * 86_400);
}

#[test]
fn a_masters_profile_is_set_shown_and_refused_for_an_unknown_master_or_field() {
    let (_dir, api) = api();
    let (m, b) = crate::testing::manifest("win7", "1", 1);
    Db::open(&api.data.database())
        .unwrap()
        .add_master(&m, &b, 0)
        .unwrap();
    let (status, answer) = route(&api, "GET", "/v1/masters/win7/profile", &Value::Null);
    assert_eq!(
        (status, &answer["profile"]),
        (200, &Value::Null),
        "{answer}"
    );
    let bios = json!({"profile": {"firmware": "bios", "disk": "sata", "memory": {"percent": 60}}});
    let (status, answer) = route(&api, "PUT", "/v1/masters/win7/profile", &bios);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["profile"]["firmware"], "bios", "{answer}");
    assert_eq!(
        answer["profile"]["nic"], "virtio",
        "defaults fill the rest: {answer}"
    );
    assert!(answer["revision"].as_i64().unwrap() > 0, "{answer}");
    let (_, listed) = route(&api, "GET", "/v1/masters", &Value::Null);
    assert_eq!(listed[0]["profile"]["disk"], "sata", "{listed}");
    let (status, answer) = route(&api, "PUT", "/v1/masters/win8/profile", &bios);
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("win8"),
        "{answer}"
    );
    let (status, answer) = route(&api, "GET", "/v1/masters/win8/profile", &Value::Null);
    assert_eq!(status, 404, "{answer}");
    let floppy = json!({"profile": {"floppy": true}});
    let (status, answer) = route(&api, "PUT", "/v1/masters/win7/profile", &floppy);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("floppy"),
        "{answer}"
    );
    // Cleared: a statement without a profile, still in the list (the NUCs must hear of it).
    let (status, _) = route(
        &api,
        "PUT",
        "/v1/masters/win7/profile",
        &json!({"profile": null}),
    );
    assert_eq!(status, 200);
    let (_, all) = route(&api, "GET", "/v1/masters/profiles", &Value::Null);
    assert_eq!(all[0]["profile"], Value::Null, "{all}");
    assert_eq!(all[0]["name"], "win7", "{all}");
}

#[test]
fn a_body_with_a_bad_id_or_an_unknown_field_is_refused_naming_it() {
    let (_dir, api) = api();
    let post = |url: &str, body: Value| route(&api, "POST", url, &body);
    let (status, answer) = post("/v1/rooms", json!({"site": "../etc", "room": "salle-2"}));
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("site id \"../etc\" is not allowed"),
        "{message}"
    );
    let (status, answer) = post(
        "/v1/rooms",
        json!({"site": "lyon", "room": "salle-2", "rooom": "x"}),
    );
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(message.contains("unknown field `rooom`"), "{message}");
    let (status, answer) = post("/v1/seats", json!({"site": "lyon", "room": "salle-1"}));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("missing field `seat`"));
    let (status, answer) = post("/v1/tokens", json!({"role": "controller", "site": "lyon"}));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = route(&api, "POST", "/v1/rooms", &Value::Null);
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("needs a JSON body"));
    // Nothing was written by any of them.
    let rooms = Db::open(&api.data.database())
        .unwrap()
        .seat_states(None)
        .unwrap();
    assert!(rooms
        .iter()
        .all(|s| s.seats.iter().all(|s| s.room == "salle-1")));
}

#[test]
fn an_id_in_the_path_or_the_query_is_checked_as_its_type() {
    let (_dir, api) = api();
    for (method, url) in [
        ("POST", "/v1/nodes/..%2f/approve"),
        ("DELETE", "/v1/nodes/-rf"),
        ("DELETE", "/v1/masters/.hidden/1"),
        ("GET", "/v1/seats?site=a%20b"),
    ] {
        let (status, answer) = route(&api, method, url, &Value::Null);
        assert_eq!(status, 400, "{method} {url}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("is not allowed"),
            "{answer}"
        );
    }
    let (status, answer) = route(
        &api,
        "POST",
        "/v1/sites/..%2f/accept-new",
        &json!({"minutes": 5}),
    );
    assert_eq!(status, 400, "{answer}");
}

#[test]
fn answers_read_back_as_the_shared_types() {
    let (_dir, api) = api();
    let get = |url: &str| {
        let (status, answer) = route(&api, "GET", url, &Value::Null);
        assert_eq!(status, 200, "{url}: {answer}");
        answer
    };
    let sites: Vec<image_tools::api::SiteInfo> = serde_json::from_value(get("/v1/sites")).unwrap();
    assert_eq!(sites[0].name.as_str(), "lyon");
    assert_eq!(sites[0].takeover, image_tools::api::Takeover::Auto);
    let seats: image_tools::api::Seats =
        serde_json::from_value(get("/v1/seats?site=lyon")).unwrap();
    assert_eq!((seats.seats.len(), seats.seats[0].node.as_ref()), (1, None));
    let (status, answer) = route(
        &api,
        "POST",
        "/v1/sites/lyon/accept-new",
        &json!({"minutes": 30}),
    );
    assert_eq!(status, 200, "{answer}");
    let open: image_tools::api::AcceptingNew = serde_json::from_value(answer).unwrap();
    assert_eq!(open.site.as_str(), "lyon");
    assert!(open.until.is_some_and(|t| t >= 1_796_164_200 + 1800));
}

#[test]
fn places_are_changed_listed_and_removed_with_the_shared_types() {
    let (_dir, api) = api();
    let call = |method: &str, url: &str, body: Value| route(&api, method, url, &body);
    let (status, answer) = call("PATCH", "/v1/sites/lyon", json!({"cap_mbit": 50}));
    assert_eq!(status, 200, "{answer}");
    let site: image_tools::api::SiteInfo = serde_json::from_value(answer).unwrap();
    assert_eq!((site.cap_mbit, site.windows.as_str()), (50, "22:00-06:00"));
    let (status, answer) = call("PATCH", "/v1/sites/lyon", json!({"cap": 50}));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = call(
        "POST",
        "/v1/sites",
        json!({"name": "lyon", "tz": "Europe/Paris", "cap_mbit": 5}),
    );
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = call("GET", "/v1/rooms?site=lyon", Value::Null);
    assert_eq!(status, 200, "{answer}");
    let rooms: Vec<image_tools::api::RoomInfo> = serde_json::from_value(answer).unwrap();
    assert_eq!((rooms.len(), rooms[0].seats), (1, 1));
    let (status, answer) = call("DELETE", "/v1/rooms/lyon/salle-1", Value::Null);
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = call("DELETE", "/v1/rooms/lyon/salle-1?force=yes", Value::Null);
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = call("DELETE", "/v1/seats/lyon/salle-1/s1", Value::Null);
    assert_eq!(status, 200, "{answer}");
    let removed: image_tools::api::PlaceRemoved = serde_json::from_value(answer).unwrap();
    assert_eq!(removed.seat.map(|s| s.to_string()), Some("s1".into()));
    let (status, answer) = call("DELETE", "/v1/sites/lyon?force=true", Value::Null);
    assert_eq!(status, 200, "{answer}");
    let removed: image_tools::api::PlaceRemoved = serde_json::from_value(answer).unwrap();
    assert_eq!(removed.rooms, 1);
    // A token for a site that is no more: a 404 that says there is none.
    let (status, answer) = call(
        "POST",
        "/v1/tokens",
        json!({"role": "relay", "site": "lyon"}),
    );
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("there is no site yet"),
        "{answer}"
    );
}

#[test]
fn the_plan_names_the_seats_where_the_sessions_version_failed() {
    use image_tools::report::{AgentReport, Failed, Report};
    let (_dir, api) = api();
    let mut db = Db::open(&api.data.database()).unwrap();
    db.add_seat("lyon", "salle-1", "pc-3").unwrap();
    for node in ["nuc-1", "nuc-3"] {
        // What the enrolment rules would have recorded.
        rusqlite::Connection::open(api.data.database())
            .unwrap()
            .execute(
                "INSERT INTO nodes (site, node, role, enrolled_at) VALUES ('lyon', ?1, 'agent', 0)",
                [node],
            )
            .unwrap();
    }
    db.bind_seat("lyon", "salle-1", "s1", "nuc-1", false)
        .unwrap();
    db.bind_seat("lyon", "salle-1", "pc-3", "nuc-3", false)
        .unwrap();
    let failed = |version: &str| Failed {
        master: image_tools::wire::MasterRef::new("win10", version).unwrap(),
        why: "the guest's kernel panicked (serial: Kernel panic - not syncing)".into(),
        at: 1_796_160_000,
    };
    let report = |failed: Vec<Failed>| crate::db::Reported {
        software: "0.1.0".into(),
        report: Report::Agent(AgentReport {
            failed,
            ..AgentReport::default()
        }),
    };
    assert!(db
        .record_agent_report("lyon", "nuc-3", &[], &report(vec![failed("2")]), 100)
        .unwrap());
    assert!(db
        .record_agent_report("lyon", "nuc-1", &[], &report(vec![failed("9")]), 100)
        .unwrap());
    for (version, start) in [("2", "2026-12-03 08:30"), ("1", "2026-12-04 08:30")] {
        let (m, bytes) = crate::testing::manifest("win10", version, 1);
        db.add_master(&m, &bytes, 0).unwrap();
        db.add_session(
            "lyon",
            "salle-1",
            ("win10", version),
            start,
            &start.replace("08:30", "12:00"),
            0,
        )
        .unwrap();
    }
    let (status, answer) = route(&api, "GET", "/v1/plan", &Value::Null);
    assert_eq!(status, 200, "{answer}");
    let plan: Vec<image_tools::api::PlanRow> = serde_json::from_value(answer).unwrap();
    let said: Vec<(String, Vec<String>)> = plan
        .iter()
        .map(|r| {
            (
                r.version.to_string(),
                r.failed.iter().map(|f| f.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            (
                "2".to_owned(),
                vec![
                    "FAILED on nuc-3 (pc-3): the guest's kernel panicked (serial: Kernel panic - \
                     not syncing): this seat runs the previous version (see `nightcast fleet`; \
                     republish the master to retry it)"
                        .to_owned()
                ]
            ),
            ("1".to_owned(), vec![]),
        ]
    );
    assert_eq!(plan[0].failed[0].at, 1_796_160_000);
}

#[test]
fn a_dry_run_push_answers_the_verdict_per_room_and_stores_nothing() {
    use image_tools::api::{OverrideInfo, OverrideMade, PushRoom, PushVerdict};
    let (_dir, api) = api();
    let mut db = Db::open(&api.data.database()).unwrap();
    let (m, bytes) = crate::testing::manifest("win10", "2", 1);
    db.add_master(&m, &bytes, 0).unwrap();
    // The clock says 2026-12-01 23:30 in Paris; the session is tomorrow morning.
    db.add_session(
        "lyon",
        "salle-1",
        ("win10", "2"),
        "2026-12-02 08:30",
        "2026-12-02 12:00",
        0,
    )
    .unwrap();
    let body = |extra: Value| {
        let mut b = json!({"site": "lyon", "master": "win10", "version": "2",
            "reason": "fix", "deadline": "2026-12-02 08:30"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let (status, answer) = route(
        &api,
        "POST",
        "/v1/overrides",
        &body(json!({"dry_run": true})),
    );
    assert_eq!(status, 200, "{answer}");
    let made: OverrideMade = serde_json::from_value(answer).unwrap();
    assert_eq!((made.id, made.made.len(), made.rooms.len()), (0, 0, 1));
    let room: &PushRoom = &made.rooms[0];
    // Its seat has no NUC: at risk, never ready; 08:30 Paris is 07:30 UTC.
    assert!(
        matches!(room.verdict, PushVerdict::AtRisk { .. }),
        "{room:?}"
    );
    assert_eq!(room.deadline, 1_796_196_600);
    let (_, listed) = route(&api, "GET", "/v1/overrides", &Value::Null);
    assert_eq!(listed, json!([]));
    // Bad input: a past deadline, a version not there, a deadline that is no time; none stored.
    for (extra, status, says) in [
        (json!({"deadline": "2026-12-01 08:30"}), 400, "past"),
        (json!({"version": "9"}), 404, "no master win10 9"),
        (json!({"deadline": "tomorrow"}), 400, "HH:MM"),
        (json!({"all_sites": true}), 400, "not both"),
    ] {
        let (got, answer) = route(&api, "POST", "/v1/overrides", &body(extra.clone()));
        assert_eq!(got, status, "{extra}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
    }
    let (_, listed) = route(&api, "GET", "/v1/overrides", &Value::Null);
    assert_eq!(listed, json!([]));
    // The push: listed with its deadline, and its progress under `pushes`.
    let (status, answer) = route(&api, "POST", "/v1/overrides", &body(json!({})));
    assert_eq!(status, 200, "{answer}");
    let (_, listed) = route(&api, "GET", "/v1/overrides", &Value::Null);
    let listed: Vec<OverrideInfo> = serde_json::from_value(listed).unwrap();
    assert_eq!(listed[0].deadline, Some(1_796_196_600));
    let (status, answer) = route(&api, "GET", "/v1/pushes", &Value::Null);
    assert_eq!(status, 200, "{answer}");
    let pushes: Vec<PushRoom> = serde_json::from_value(answer).unwrap();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].room.as_str(), "salle-1");
}
