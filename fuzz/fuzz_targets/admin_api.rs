//! One admin request with the right token, against an initialised data directory: the input is
//! `METHOD\nURL\nBODY`. Answers are 200 or 4xx, never a panic nor a 500. A body's `image` field is
//! dropped: a master import reads the file it names (the DSI's own disk), which is not the parser
//! under test.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use nightcast_controller::api::{handle, Api, Request};
use nightcast_controller::DataDir;

fn api() -> &'static Api {
    static API: OnceLock<(tempfile::TempDir, Api)> = OnceLock::new();
    &API.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let data = DataDir(dir.path().to_owned());
        nightcast_controller::init(&data, 1_796_164_200).expect("init");
        let api = Api {
            data,
            token: "t0ken".into(),
            clock: image_tools::clock::Clock::parse_now("start=2026-12-01T22:30:00Z")
                .expect("a clock"),
            settings: nightcast_controller::plan::Settings {
                staging_margin_secs: 7200,
                risk_share_percent: 80,
                relay_silent_after_secs: 86_400,
            },
            silent_after_secs: 1800,
            changed: Arc::new(tokio::sync::Notify::new()),
            classes: nightcast_controller::plan::ClassCache::default(),
        };
        (dir, api)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let mut body = parts.next().unwrap_or_default().to_vec();
    if let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(&body) {
        if fields.remove("image").is_some() {
            body = serde_json::to_vec(&fields).unwrap_or_default();
        }
    }
    let (status, answer) = handle(api(), Request { method, url, body });
    assert!(matches!(status, 200 | 400 | 404 | 409), "{status} {answer}");
});
