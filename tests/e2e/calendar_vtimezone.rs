//! An Outlook export whose time zone is a display name (`TZID:(UTC+01:00) Brussels,
//! Copenhagen, Madrid, Paris`) given only by its `VTIMEZONE`'s rules, imported with the
//! `nightcast` CLI against a real controller: the sessions are those of the same calendar
//! written with `TZID=Europe/Paris`, across both nights summer time changes.

use std::path::Path;
use std::process::Command;

use image_tools::api::SessionInfo;

use crate::util::{nightcast_ok, workspace_bin, Controller};

const DISPLAY_NAME: &str = "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris";

fn sessions(c: &Controller, data: &Path) -> Vec<(String, i64, i64)> {
    let list: Vec<SessionInfo> =
        serde_json::from_str(&nightcast_ok(c, data, &["--json", "session", "list"])).unwrap();
    let mut out: Vec<_> = list
        .into_iter()
        .map(|s| (s.room.to_string(), s.start, s.end))
        .collect();
    out.sort();
    out
}

/// `YYYY-MM-DD HH:MM` in Paris, as Unix seconds.
fn paris(at: &str) -> i64 {
    let dt: jiff::civil::DateTime = at.replace(' ', "T").parse().unwrap();
    dt.in_tz("Europe/Paris").unwrap().timestamp().as_second()
}

#[test]
fn an_outlook_display_name_zone_imports_the_sessions_of_europe_paris() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    assert!(Command::new(workspace_bin("nightcast-controller"))
        .args(["init", "--data", data.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let c = Controller::start(&data);
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
    let img = image.to_str().unwrap();
    run(&["master", "import", img, "--name", "win10", "--version", "1"]);

    // The export as Outlook wrote it, then the same calendar with its zone named Europe/Paris
    // (unfolded, the display name replaced), saved under the same name: the same calendar.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("controller/tests/fixtures");
    let outlook = std::fs::read_to_string(fixtures.join("outlook-display-name.ics")).unwrap();
    assert!(outlook.contains(&format!("TZID:{DISPLAY_NAME}\r\n")));
    let iana = outlook
        .replace("\r\n ", "")
        .replace(&format!("\"{DISPLAY_NAME}\""), "Europe/Paris");
    let first = dir.path().join("monday/outlook.ics");
    let second = dir.path().join("friday/outlook.ics");
    for (text, to) in [(&outlook, &first), (&iana, &second)] {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, text).unwrap();
    }

    let out = run(&["calendar", "import", first.to_str().unwrap()]);
    assert!(
        out.contains("calendar outlook.ics: 8 added, 0 moved, 0 removed, 0 unchanged"),
        "{out}"
    );
    let mut want = vec![
        ("salle-1", "2030-01-14 08:30", "2030-01-14 17:00"),
        // Mondays across 31 March, when summer time starts; the second moved.
        ("salle-1", "2030-03-25 08:30", "2030-03-25 17:00"),
        ("salle-1", "2030-04-01 13:30", "2030-04-01 17:00"),
        ("salle-1", "2030-04-08 08:30", "2030-04-08 17:00"),
        ("salle-2", "2030-06-17 09:00", "2030-06-17 12:30"),
        // Mondays across 27 October, when it ends; one left out.
        ("salle-2", "2030-10-21 08:30", "2030-10-21 17:00"),
        ("salle-2", "2030-10-28 08:30", "2030-10-28 17:00"),
        ("salle-2", "2030-11-11 08:30", "2030-11-11 17:00"),
    ]
    .into_iter()
    .map(|(room, start, end)| (room.to_string(), paris(start), paris(end)))
    .collect::<Vec<_>>();
    want.sort();
    assert_eq!(sessions(&c, &data), want);

    // The same calendar in Europe/Paris: nothing to change, session by session.
    let out = run(&["calendar", "import", second.to_str().unwrap()]);
    assert!(
        out.contains("0 added, 0 moved, 0 removed, 8 unchanged")
            && out.contains("nothing to change"),
        "{out}"
    );
    assert_eq!(sessions(&c, &data), want);
}
