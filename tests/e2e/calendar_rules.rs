//! The DSI's complaint: "our training tool exports 'Formation Excel, niveau 2' at 'Mairie de
//! Lyon, salle 2', and nightcast refuses the whole file". The DSI writes mapping rules once
//! (`nightcast calendar map ...`), against a real controller: an export whose titles and
//! locations no rule covers is refused with each such event's line and title, `--partial`
//! imports the rest and still lists them, and a re-import (a sync) never removes the sessions of
//! an event it could not read.

use std::path::Path;
use std::process::Command;

use image_tools::api::{CalendarSynced, MappingRule, SessionInfo};

use crate::util::{nightcast, nightcast_ok, workspace_bin, Controller};

/// An export as a training-management tool writes it: natural titles and locations, one
/// category, CRLF. Lines: the Excel course's `BEGIN:VEVENT` is line 3, the Word course's 13,
/// the meeting's 23.
const EXPORT: &str = "BEGIN:VCALENDAR\r\n\
VERSION:2.0\r\n\
BEGIN:VEVENT\r\n\
UID:excel-2@formations\r\n\
SUMMARY:Formation Excel\\, niveau 2\r\n\
LOCATION:Mairie de Lyon\\, salle 2\r\n\
DTSTART;TZID=Europe/Paris:20300107T083000\r\n\
DTEND;TZID=Europe/Paris:20300107T170000\r\n\
RRULE:FREQ=WEEKLY;COUNT=2\r\n\
DTSTAMP:20291201T100000Z\r\n\
END:VEVENT\r\n\
\r\n\
BEGIN:VEVENT\r\n\
UID:word-1@formations\r\n\
SUMMARY:Word pour débuter\r\n\
CATEGORIES:Bureautique,Débutants\r\n\
LOCATION:Lyon\\, Salle 1 (bâtiment A)\r\n\
DTSTART;TZID=Europe/Paris:20300108T090000\r\n\
DTEND;TZID=Europe/Paris:20300108T120000\r\n\
DTSTAMP:20291201T100000Z\r\n\
END:VEVENT\r\n\
\r\n\
BEGIN:VEVENT\r\n\
UID:meeting@formations\r\n\
SUMMARY:Réunion de service\r\n\
LOCATION:Salle du conseil\r\n\
DTSTART;TZID=Europe/Paris:20300109T090000\r\n\
DTEND;TZID=Europe/Paris:20300109T100000\r\n\
DTSTAMP:20291201T100000Z\r\n\
END:VEVENT\r\n\
END:VCALENDAR\r\n";

fn sessions(c: &Controller, data: &Path) -> Vec<SessionInfo> {
    serde_json::from_str(&nightcast_ok(c, data, &["--json", "session", "list"])).unwrap()
}

/// A controller with site lyon (rooms salle-1, salle-2) and master office 3.
fn controller(dir: &Path) -> (Controller, std::path::PathBuf) {
    let data = dir.join("controller");
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
    let image = dir.join("office.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::disk_bytes(4 << 20, 3))
        .unwrap();
    run(&[
        "master",
        "import",
        image.to_str().unwrap(),
        "--name",
        "office",
        "--version",
        "3",
    ]);
    (c, data)
}

#[test]
fn natural_titles_and_locations_import_through_rules_and_what_no_rule_covers_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (c, data) = controller(dir.path());
    let file = dir.path().join("formations.ics");
    std::fs::write(&file, EXPORT).unwrap();
    let ics = file.to_str().unwrap();

    // No rule yet: refused, every event named with its line and title, nothing imported.
    let out = nightcast(&c, &data, &["calendar", "import", ics]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for expected in [
        "3 events match no mapping rule",
        "line 3: \"Formation Excel, niveau 2\"",
        "line 13: \"Word pour débuter\"",
        "line 23: \"Réunion de service\"",
        "--partial",
        "nightcast calendar map",
    ] {
        assert!(err.contains(expected), "{expected:?} not in: {err}");
    }
    assert!(sessions(&c, &data).is_empty());

    // A rule naming a master or a room the catalogue lacks is refused, naming it.
    let out = nightcast(
        &c,
        &data,
        &[
            "calendar", "map", "title", "Excel*", "--master", "ofice", "3",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no master ofice 3"),
        "{err}"
    );
    let out = nightcast(
        &c,
        &data,
        &[
            "calendar",
            "map",
            "location",
            "Salle du conseil",
            "--site",
            "lyon",
            "--room",
            "conseil",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no room \"conseil\""),
        "{err}"
    );

    // The rules, written once: a glob on the title (any case), a category, two locations.
    let run = |args: &[&str]| nightcast_ok(&c, &data, args);
    run(&[
        "calendar",
        "map",
        "title",
        "formation excel*",
        "--master",
        "office",
        "3",
    ]);
    run(&[
        "calendar",
        "map",
        "category",
        "bureautique",
        "--master",
        "office",
        "3",
    ]);
    run(&[
        "calendar",
        "map",
        "location",
        "Mairie de Lyon, salle 2",
        "--site",
        "lyon",
        "--room",
        "salle-2",
    ]);
    run(&[
        "calendar",
        "map",
        "location",
        "Lyon, Salle 1*",
        "--site",
        "lyon",
        "--room",
        "salle-1",
    ]);
    let listed = run(&["calendar", "map", "list"]);
    for expected in [
        "title \"formation excel*\"",
        "category \"bureautique\"",
        "location \"Mairie de Lyon, salle 2\"",
        "lyon/salle-2",
        "office 3",
    ] {
        assert!(listed.contains(expected), "{expected:?} not in: {listed}");
    }
    let rules: Vec<MappingRule> =
        serde_json::from_str(&run(&["--json", "calendar", "map", "list"])).unwrap();
    assert_eq!(rules.len(), 4);

    // The meeting is still matched by nothing: refused again, and only it is named.
    let out = nightcast(&c, &data, &["calendar", "import", ics]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("1 event matches no mapping rule")
            && err.contains("line 23: \"Réunion de service\" at \"Salle du conseil\"")
            && !err.contains("line 3:"),
        "{err}"
    );
    assert!(sessions(&c, &data).is_empty());

    // A dry run with --partial shows the sessions and the event left out, and changes nothing.
    let out = run(&["calendar", "import", "--partial", "--dry-run", ics]);
    assert!(out.contains("3 added") && out.contains("dry run"), "{out}");
    assert!(
        out.contains("+ lyon/salle-2 office 3  2030-01-07 08:30 to 2030-01-07 17:00 Europe/Paris"),
        "{out}"
    );
    assert!(
        out.contains("not imported, no mapping rule: line 23: \"Réunion de service\""),
        "{out}"
    );
    assert!(sessions(&c, &data).is_empty());

    // For real with --partial: the two courses (three sessions), the meeting still listed.
    let done: CalendarSynced =
        serde_json::from_str(&run(&["--json", "calendar", "import", "--partial", ics])).unwrap();
    assert!(done.applied);
    assert_eq!(done.added.len(), 3);
    assert_eq!(done.unmatched.len(), 1);
    assert_eq!(
        (done.unmatched[0].line, done.unmatched[0].title.as_str()),
        (23, "Réunion de service")
    );
    let mut got: Vec<(String, String)> = sessions(&c, &data)
        .iter()
        .map(|s| (s.room.to_string(), format!("{} {}", s.master, s.version)))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("salle-1".to_string(), "office 3".to_string()),
            ("salle-2".into(), "office 3".into()),
            ("salle-2".into(), "office 3".into()),
        ]
    );

    // The location rule is removed: the next import cannot place the Excel course any more. Its
    // sessions are kept (a sync never removes what it could not read) and it is listed.
    let id = rules
        .iter()
        .find(|r| format!("{:?}", r.rule).contains("Mairie"))
        .unwrap()
        .id;
    run(&["calendar", "map", "rm", &id.to_string()]);
    let out = run(&["calendar", "import", "--partial", ics]);
    assert!(
        out.contains("0 added, 0 moved, 0 removed, 1 unchanged")
            && out.contains("line 3: \"Formation Excel, niveau 2\" at \"Mairie de Lyon, salle 2\""),
        "{out}"
    );
    assert_eq!(sessions(&c, &data).len(), 3);
    let out = nightcast(&c, &data, &["calendar", "map", "rm", &id.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("no mapping rule {id}")),
        "{err}"
    );
}
