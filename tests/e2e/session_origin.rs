//! The DSI's complaint: "`session list` shows sessions, but not where each one came from: I
//! cannot tell the ones the training calendar will move again from the ones I added by hand".
//! Each session is listed with its source: by hand, the CSV file, the calendar (and whether a
//! feed keeps it in step; see `calendar_feed` for a feed's sessions).

use std::process::Command;

use image_tools::api::{SessionInfo, SessionOrigin};

use crate::util::{nightcast_ok, workspace_bin, Controller};

const ICS: &str = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a@x\r\nSUMMARY:win10 1\r\n\
LOCATION:lyon/salle-2\r\nDTSTART;TZID=Europe/Paris:20300109T090000\r\n\
DTEND;TZID=Europe/Paris:20300109T120000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[test]
fn session_list_names_where_each_session_came_from() {
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
    let csv = dir.path().join("term.csv");
    std::fs::write(
        &csv,
        "site,room,master,version,start,end\nlyon,salle-1,win10,1,2030-01-08 08:30,2030-01-08 17:00\n",
    )
    .unwrap();
    run(&["calendar", "import", csv.to_str().unwrap()]);
    let ics = dir.path().join("formations.ics");
    std::fs::write(&ics, ICS).unwrap();
    run(&["calendar", "import", ics.to_str().unwrap()]);

    let listed: Vec<SessionInfo> =
        serde_json::from_str(&run(&["--json", "session", "list"])).unwrap();
    let mut origins: Vec<SessionOrigin> = listed.into_iter().map(|s| s.origin).collect();
    origins.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        origins,
        [
            SessionOrigin::Calendar {
                source: "formations.ics".into(),
                feed: false
            },
            SessionOrigin::Csv {
                file: csv.to_str().unwrap().into()
            },
            SessionOrigin::Hand,
        ]
    );
    let text = run(&["session", "list"]);
    assert!(text.contains("SOURCE"), "{text}");
    for expected in ["by hand", "CSV term.csv", "calendar formations.ics"] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }

    // Removing a calendar's session by hand: the DSI is told it comes back with the calendar.
    let listed: Vec<SessionInfo> =
        serde_json::from_str(&run(&["--json", "session", "list"])).unwrap();
    let id = |o: &SessionOrigin| {
        listed
            .iter()
            .find(|s| s.origin == *o)
            .unwrap()
            .id
            .to_string()
    };
    let out = run(&[
        "session",
        "rm",
        &id(&SessionOrigin::Calendar {
            source: "formations.ics".into(),
            feed: false,
        }),
    ]);
    assert!(
        out.contains("came from calendar formations.ics: its next import adds it again"),
        "{out}"
    );
    let out = run(&["session", "rm", &id(&SessionOrigin::Hand)]);
    assert!(!out.contains("note:"), "{out}");
}
