//! `nightcast plan` never promises what cannot happen: a site with no relay is late and says so,
//! a relay that enrolled but never reported leaves its site at risk, and a relay that reports puts
//! it back on time. A real controller and a real relay on loopback, driven by the DSI's commands.

use crate::fleet::ok;
use crate::util::{nightcast_ok, Controller};

#[test]
fn a_site_without_a_relay_is_late_and_a_relay_that_never_reported_is_at_risk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    let relay = dir.path().join("relay");
    ok(
        "nightcast-controller",
        &["init", "--data", data.to_str().unwrap()],
    );
    let c = Controller::start(&data);
    let run = |args: &[&str]| nightcast_ok(&c, &data, args);

    // A small master, a session years ahead: by the numbers, nothing could be easier.
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
    let image = dir.path().join("win10.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::disk_bytes(8 << 20, 2))
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
    run(&[
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
    ]);

    // No relay at lyon: nothing can reach its rooms, and the plan says so with what to do.
    let plan = run(&["plan"]);
    assert!(
        plan.contains("win10 1") && plan.contains("LATE: no relay") && !plan.contains("on time"),
        "{plan}"
    );
    assert!(plan.contains("nightcast enroll --site lyon"), "{plan}");
    let rows: serde_json::Value = serde_json::from_str(&run(&["--json", "plan"])).unwrap();
    assert_eq!(rows[0]["verdict"], "late", "{rows}");
    assert_eq!(rows[0]["detail"]["reason"]["kind"], "no_relay", "{rows}");

    // A relay enrols but has not reported yet: at risk, never on time.
    let token = run(&["enroll", "--site", "lyon"]);
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
    let plan = run(&["plan"]);
    assert!(
        plan.contains("AT RISK: relay silent since it enrolled (it never reported)"),
        "{plan}"
    );
    let rows: serde_json::Value = serde_json::from_str(&run(&["--json", "plan"])).unwrap();
    assert_eq!(
        rows[0]["detail"]["reason"],
        serde_json::json!({"kind": "relay_silent", "since": null}),
        "{rows}"
    );

    // The relay fetches the master and reports it: on time, and already there.
    ok(
        "nightcast-relay",
        &[
            "fetch",
            "--controller",
            &c.quic,
            "--data",
            relay.to_str().unwrap(),
            "--master",
            "win10",
            "--version",
            "1",
        ],
    );
    let plan = run(&["plan"]);
    assert!(plan.contains("on time (already there)"), "{plan}");
}
