//! A DSI undoing what they typed, with the `nightcast` command against a real controller: a site
//! added twice keeps its windows, `site set` changes only what it is given, tokens only for sites
//! that exist, rooms listed and removed, seats removed, and a site removed: refused while in use
//! with what uses it named, then with `--force`, its relay revoked and shut out.

use std::process::Command;

use crate::util::{nightcast, workspace_bin, Controller};

#[test]
fn a_dsi_changes_lists_and_removes_sites_rooms_and_seats() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    let relay = dir.path().join("relay");
    let init = Command::new(workspace_bin("nightcast-controller"))
        .args(["init", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success());
    let c = Controller::start(&data);
    let ok = |args: &[&str]| {
        let out = nightcast(&c, &data, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let err = |args: &[&str]| {
        let out = nightcast(&c, &data, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    };
    let site = |name: &str| -> serde_json::Value {
        let sites: serde_json::Value =
            serde_json::from_str(&ok(&["--json", "site", "list"])).unwrap();
        sites
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_default()
    };

    // Added with its own windows; added again to change the cap: refused, windows kept.
    let add = |cap: &str| -> Vec<String> {
        [
            "site",
            "add",
            "lyon",
            "--tz",
            "Europe/Paris",
            "--cap-mbit",
            cap,
        ]
        .map(String::from)
        .to_vec()
    };
    let mut first = add("20");
    first.extend(["--windows".into(), "20:00-07:00".into()]);
    ok(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let e = err(&add("50").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("already exists") && e.contains("nightcast site set lyon"),
        "{e}"
    );
    assert_eq!(
        (
            site("lyon")["windows"].as_str(),
            site("lyon")["cap_mbit"].as_u64()
        ),
        (Some("20:00-07:00"), Some(20))
    );

    // `site set` changes the cap and nothing else.
    let out = ok(&["site", "set", "lyon", "--cap-mbit", "50"]);
    assert!(
        out.contains("WAN cap 50 Mbit/s") && out.contains("windows 20:00-07:00"),
        "{out}"
    );
    let lyon = site("lyon");
    assert_eq!(
        (
            lyon["windows"].as_str(),
            lyon["cap_mbit"].as_u64(),
            lyon["tz"].as_str()
        ),
        (Some("20:00-07:00"), Some(50), Some("Europe/Paris"))
    );
    ok(&["site", "set", "lyon", "--takeover", "confirm"]);
    assert_eq!(site("lyon")["takeover"], "confirm");
    assert!(err(&["site", "set", "lyon"]).contains("nothing to change"));
    assert!(err(&["site", "set", "lyon", "--windows", "22h-6h"]).contains("HH:MM"));
    assert!(err(&["site", "set", "lyyon", "--cap-mbit", "5"]).contains("no site \"lyyon\""));
    assert_eq!(site("lyon")["cap_mbit"].as_u64(), Some(50));

    // A token for a site that does not exist: refused, with the sites there are.
    let e = err(&["enroll", "--site", "lyyon"]);
    assert!(
        e.contains("no site \"lyyon\"") && e.contains("the sites are: lyon"),
        "{e}"
    );

    // Rooms: listed with their seats; an empty one goes; one with a seat is refused until the
    // seat is gone.
    ok(&["room", "add", "lyon", "salle-1"]);
    ok(&["room", "add", "lyon", "salle-2"]);
    ok(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let rooms = ok(&["room", "list"]);
    assert!(
        rooms
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["lyon", "salle-1", "1", "0"]),
        "{rooms}"
    );
    assert!(rooms.contains("salle-2"), "{rooms}");
    assert!(err(&["room", "list", "--site", "lyyon"]).contains("no site"));
    let out = ok(&["room", "rm", "lyon", "salle-2"]);
    assert!(out.contains("room lyon/salle-2 removed"), "{out}");
    assert!(!ok(&["room", "list", "--site", "lyon"]).contains("salle-2"));
    let e = err(&["room", "rm", "lyon", "salle-1"]);
    assert!(
        e.contains("room lyon/salle-1 is still used by 1 seat(s)") && e.contains("--force"),
        "{e}"
    );
    assert!(
        ok(&["seat", "rm", "lyon", "salle-1", "pc-1"]).contains("seat lyon/salle-1/pc-1 removed")
    );
    assert!(err(&["seat", "rm", "lyon", "salle-1", "pc-1"]).contains("no seat"));
    ok(&["room", "rm", "lyon", "salle-1"]);

    // A site with a room and an enrolled relay: refused, naming both; with --force, gone, and its
    // relay is shut out.
    ok(&["room", "add", "lyon", "salle-3"]);
    let token = ok(&["enroll", "--site", "lyon"]);
    let enrolled = Command::new(workspace_bin("nightcast-relay"))
        .args(["enroll", "--controller", &c.quic, "--token", token.trim()])
        .args(["--node-id", "relay-1", "--data", relay.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(enrolled.status.success(), "{enrolled:?}");
    let e = err(&["site", "rm", "lyon"]);
    assert!(
        e.contains("site lyon is still used by")
            && e.contains("1 room(s) (salle-3")
            && e.contains("1 enrolled node(s) (relay-1"),
        "{e}"
    );
    assert!(ok(&["fleet"]).contains("relay-1"));
    let out = ok(&["site", "rm", "lyon", "--force"]);
    assert!(
        out.contains("site lyon removed with 1 room(s)")
            && out.contains("revoked and forgotten: relay-1"),
        "{out}"
    );
    assert!(site("lyon").is_null());
    assert!(!ok(&["fleet"]).contains("relay-1"));
    // The controller reloads its revocations after each change: within seconds, the relay's
    // certificate is refused.
    let refused = (0..50).any(|_| {
        let plan = Command::new(workspace_bin("nightcast-relay"))
            .args([
                "plan",
                "--controller",
                &c.quic,
                "--data",
                relay.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        if plan.status.success() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        !plan.status.success()
    });
    assert!(refused, "a removed site's relay still gets its plan");
    assert!(err(&["site", "rm", "lyon"]).contains("no site"));
}
