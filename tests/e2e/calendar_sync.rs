//! A calendar kept in step with its exports: the DSI imports a Thunderbird export with the
//! `nightcast` CLI against a real controller, then a newer export of the same calendar (one
//! occurrence moved, one event removed, one added), first with `--dry-run`, then for real; the
//! sessions change by exactly that difference, and the same export again changes nothing.

use std::path::Path;
use std::process::Command;

use image_tools::api::{CalendarSynced, SessionInfo};

use crate::util::{nightcast_ok, workspace_bin, Controller};

fn sessions(c: &Controller, data: &Path) -> Vec<SessionInfo> {
    serde_json::from_str(&nightcast_ok(c, data, &["--json", "session", "list"])).unwrap()
}

/// `YYYY-MM-DD HH:MM` in Paris, as Unix seconds.
fn paris(at: &str) -> i64 {
    let dt: jiff::civil::DateTime = at.replace(' ', "T").parse().unwrap();
    dt.in_tz("Europe/Paris").unwrap().timestamp().as_second()
}

#[test]
fn a_changed_thunderbird_export_moves_adds_and_removes_exactly_what_changed() {
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

    // Both exports are saved as thunderbird.ics, as the DSI saves each new one: the file's name
    // is the calendar's.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("controller/tests/fixtures");
    let first = dir.path().join("monday/thunderbird.ics");
    let second = dir.path().join("friday/thunderbird.ics");
    for (from, to) in [
        ("thunderbird.ics", &first),
        ("thunderbird-changed.ics", &second),
    ] {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixtures.join(from), to).unwrap();
    }
    let out = run(&["calendar", "import", first.to_str().unwrap()]);
    assert!(
        out.contains("calendar thunderbird.ics: 16 added, 0 moved, 0 removed, 0 unchanged"),
        "{out}"
    );
    let before = sessions(&c, &data);
    assert_eq!(before.len(), 16);

    // The dry run shows the difference and changes nothing; its times are the calendar's own,
    // in the site's zone.
    let out = run(&["calendar", "import", "--dry-run", second.to_str().unwrap()]);
    assert!(
        out.contains("1 added, 1 moved, 1 removed, 14 unchanged") && out.contains("dry run"),
        "{out}"
    );
    assert!(
        out.contains("+ lyon/salle-2 win10 1  2030-02-20 14:00 to 2030-02-20 17:30 Europe/Paris"),
        "{out}"
    );
    assert!(
        out.contains("- lyon/salle-2 win10 1  2030-01-28 08:30 to 2030-01-28 17:00 Europe/Paris"),
        "{out}"
    );
    assert!(
        out.contains("~ lyon/salle-1 win10 1  2030-01-16 09:00 to 2030-01-16 12:00 Europe/Paris\n    -> lyon/salle-1 win10 1  2030-01-17 09:00"),
        "{out}"
    );
    assert_eq!(
        sessions(&c, &data),
        before,
        "the dry run changed the sessions"
    );
    let dry: CalendarSynced = serde_json::from_str(&run(&[
        "--json",
        "calendar",
        "import",
        "--dry-run",
        second.to_str().unwrap(),
    ]))
    .unwrap();
    assert!(!dry.applied);

    // For real: exactly that difference.
    let done: CalendarSynced = serde_json::from_str(&run(&[
        "--json",
        "calendar",
        "import",
        second.to_str().unwrap(),
    ]))
    .unwrap();
    assert!(done.applied);
    assert_eq!(
        (
            done.added.len(),
            done.moved.len(),
            done.removed.len(),
            done.unchanged
        ),
        (1, 1, 1, 14)
    );
    let moved_id = done.moved[0].before.id.unwrap();
    let removed_id = done.removed[0].id.unwrap();
    let added_id = done.added[0].id.unwrap();
    let mut expected: Vec<(i64, String, i64, i64)> = before
        .iter()
        .filter(|s| s.id != removed_id)
        .map(|s| match s.id == moved_id {
            true => (
                s.id,
                s.room.to_string(),
                paris("2030-01-17 09:00"),
                paris("2030-01-17 12:00"),
            ),
            false => (s.id, s.room.to_string(), s.start, s.end),
        })
        .collect();
    expected.push((
        added_id,
        "salle-2".into(),
        paris("2030-02-20 14:00"),
        paris("2030-02-20 17:30"),
    ));
    expected.sort();
    let mut after: Vec<(i64, String, i64, i64)> = sessions(&c, &data)
        .into_iter()
        .map(|s| (s.id, s.room.to_string(), s.start, s.end))
        .collect();
    after.sort();
    assert_eq!(after, expected);
    let removed = before.iter().find(|s| s.id == removed_id).unwrap();
    assert_eq!(
        (removed.room.as_str(), removed.start),
        ("salle-2", paris("2030-01-28 08:30"))
    );

    // The same export again: nothing to change.
    let out = run(&["calendar", "import", second.to_str().unwrap()]);
    assert!(
        out.contains("0 added, 0 moved, 0 removed, 16 unchanged")
            && out.contains("nothing to change"),
        "{out}"
    );
}
