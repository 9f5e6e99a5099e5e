//! The DSI's `nightcast` command against a real controller's admin API: token, sites, masters,
//! calendar, plan, refusals; and a controller killed with -9 in the middle of an import.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{nightcast, nightcast_ok, workspace_bin, Controller};

fn err(c: &Controller, data: &Path, args: &[&str]) -> String {
    let out = nightcast(c, data, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_dsi_runs_the_catalogue_and_calendar_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    let init = Command::new(workspace_bin("nightcast-controller"))
        .args(["init", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success());
    let c = Controller::start(&data);

    // Without the right token, nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["--api", &c.api, "site", "list"])
        .env("NIGHTCAST_TOKEN", "guess")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong admin token"),
        "{out:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["--api", &c.api, "site", "list"])
        .env_remove("NIGHTCAST_TOKEN")
        .env_remove("NIGHTCAST_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no admin token"),
        "{out:?}"
    );

    nightcast_ok(
        &c,
        &data,
        &[
            "site",
            "add",
            "lyon",
            "--tz",
            "Europe/Paris",
            "--cap-mbit",
            "20",
        ],
    );
    assert!(err(
        &c,
        &data,
        &[
            "site",
            "add",
            "x",
            "--tz",
            "Europe/Lyon",
            "--cap-mbit",
            "20"
        ]
    )
    .contains("time zone"));
    assert!(nightcast_ok(&c, &data, &["site", "list"]).contains("Europe/Paris"));
    nightcast_ok(&c, &data, &["room", "add", "lyon", "salle-1"]);

    let image = dir.path().join("win10.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::disk_bytes(8 << 20, 2))
        .unwrap();
    let out = nightcast_ok(
        &c,
        &data,
        &[
            "master",
            "import",
            image.to_str().unwrap(),
            "--name",
            "win10",
            "--version",
            "1",
        ],
    );
    assert!(out.contains("win10 1 imported"), "{out}");
    assert!(nightcast_ok(&c, &data, &["master", "list"]).contains("win10"));

    // A calendar with a bad row imports nothing and names the line.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "site,room,master,version,start,end\nlyon,salle-1,win10,1,2030-01-07 08:30,2030-01-07 17:00\nlyon,salle-2,win10,1,2030-01-08 08:30,2030-01-08 17:00\n",
    )
    .unwrap();
    let e = err(&c, &data, &["calendar", "import", bad.to_str().unwrap()]);
    assert!(e.contains("bad.csv:3") && e.contains("unknown room"), "{e}");
    assert_eq!(
        nightcast_ok(&c, &data, &["--json", "session", "list"]).trim(),
        "[]"
    );
    let good = dir.path().join("term.csv");
    std::fs::write(&good, "site,room,master,version,start,end\nlyon,salle-1,win10,1,2030-01-07 08:30,2030-01-07 17:00\n").unwrap();
    assert!(
        nightcast_ok(&c, &data, &["calendar", "import", good.to_str().unwrap()])
            .contains("1 sessions imported")
    );

    // One more session by hand; a clash is refused; then it is removed again.
    let add = [
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
    ];
    nightcast_ok(
        &c,
        &data,
        &[
            &add[..],
            &["--start", "2030-01-08 08:30", "--end", "2030-01-08 17:00"],
        ]
        .concat(),
    );
    let e = err(
        &c,
        &data,
        &[
            &add[..],
            &["--start", "2030-01-08 12:00", "--end", "2030-01-08 13:00"],
        ]
        .concat(),
    );
    assert!(e.contains("already has a session"), "{e}");
    let sessions: serde_json::Value =
        serde_json::from_str(&nightcast_ok(&c, &data, &["--json", "session", "list"])).unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 2);
    let id = sessions[1]["id"].to_string();
    // Moved onto the imported session: refused; to the next day: moved.
    let e = err(
        &c,
        &data,
        &[
            "session",
            "move",
            &id,
            "--start",
            "2030-01-07 12:00",
            "--end",
            "2030-01-07 13:00",
        ],
    );
    assert!(e.contains("already has a session"), "{e}");
    assert!(nightcast_ok(
        &c,
        &data,
        &[
            "session",
            "move",
            &id,
            "--start",
            "2030-01-09 08:30",
            "--end",
            "2030-01-09 17:00"
        ]
    )
    .contains("moved"));
    assert!(nightcast_ok(&c, &data, &["session", "list"]).contains("2030-01-09 08:30"));
    nightcast_ok(&c, &data, &["session", "rm", &id]);
    assert!(err(&c, &data, &["session", "rm", &id]).contains("no session"));
    nightcast_ok(&c, &data, &["seat", "add", "lyon", "salle-1", "poste-01"]);
    assert!(err(&c, &data, &["seat", "add", "lyon", "salle-9", "poste-01"]).contains("no room"));

    // No relay is enrolled at lyon yet: nothing reaches it (see `verdicts`).
    let plan = nightcast_ok(&c, &data, &["plan"]);
    assert!(
        plan.contains("lyon") && plan.contains("win10 1") && plan.contains("LATE: no relay"),
        "{plan}"
    );
    let e = err(&c, &data, &["master", "rm", "win10", "1"]);
    assert!(e.contains("needed by 1 upcoming session"), "{e}");
    let token = nightcast_ok(&c, &data, &["enroll", "--site", "lyon"]);
    assert!(token.trim().starts_with("nc1-"), "{token}");
    // A weekly course in iCalendar imports every session; a rule that is not expanded is refused
    // with its line, and nothing of that file is imported.
    let course = |rule: &str| {
        format!(
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:win10 1\r\nLOCATION:lyon/salle-1\r\n\
             DTSTART;TZID=Europe/Paris:20300114T083000\r\nDTEND;TZID=Europe/Paris:20300114T170000\r\n\
             {rule}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    };
    let monthly = dir.path().join("monthly.ics");
    std::fs::write(&monthly, course("RRULE:FREQ=MONTHLY;COUNT=3")).unwrap();
    let e = err(
        &c,
        &data,
        &["calendar", "import", monthly.to_str().unwrap()],
    );
    assert!(
        e.contains("monthly.ics:7") && e.contains("FREQ=MONTHLY is not supported"),
        "{e}"
    );
    let weekly = dir.path().join("weekly.ics");
    std::fs::write(&weekly, course("RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=3")).unwrap();
    assert!(
        nightcast_ok(&c, &data, &["calendar", "import", weekly.to_str().unwrap()])
            .contains("3 added")
    );
    let sessions: serde_json::Value =
        serde_json::from_str(&nightcast_ok(&c, &data, &["--json", "session", "list"])).unwrap();
    let starts: Vec<i64> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start"].as_i64().unwrap())
        .collect();
    // 08:30 in Paris (07:30 UTC in January) on Monday 14, Wednesday 16 and Monday 21.
    let monday = 1_894_606_200;
    assert_eq!(
        starts[1..],
        [monday, monday + 2 * 86_400, monday + 7 * 86_400],
        "{sessions}"
    );

    // Spreadsheet exports as they are. French Excel (semicolons, French column names, quotes,
    // DD/MM/YYYY and 8:30, CRLF) imports; Excel's "CSV UTF-8" (BOM, CRLF, a quoted room holding a
    // comma) is read past its header, and its first row refused for that room's name, with its line.
    nightcast_ok(&c, &data, &["room", "add", "lyon", "salle-2"]);
    let fixture = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("controller/tests/fixtures")
            .join(name)
    };
    let fr = fixture("excel-fr.csv");
    let out = nightcast_ok(&c, &data, &["calendar", "import", fr.to_str().unwrap()]);
    assert!(out.contains("2 sessions imported"), "{out}");
    let sessions: serde_json::Value =
        serde_json::from_str(&nightcast_ok(&c, &data, &["--json", "session", "list"])).unwrap();
    let rows: Vec<_> = sessions.as_array().unwrap()[4..]
        .iter()
        .map(|s| {
            (
                s["site"].as_str().unwrap(),
                s["room"].as_str().unwrap(),
                s["master"].as_str().unwrap(),
                s["version"].as_str().unwrap(),
                s["start"].as_i64().unwrap(),
                s["end"].as_i64().unwrap(),
            )
        })
        .collect();
    // Paris is UTC+1 in February: 08:30 there on Monday 4 is 07:30 UTC.
    let feb4 = 1_896_420_600;
    assert_eq!(
        rows,
        [
            (
                "lyon",
                "salle-1",
                "win10",
                "1",
                feb4,
                feb4 + 8 * 3_600 + 1_800
            ),
            (
                "lyon",
                "salle-2",
                "win10",
                "1",
                feb4 + 86_400 + 2_700,
                feb4 + 86_400 + 3 * 3_600 + 1_800
            ),
        ],
        "{sessions}"
    );
    let utf8 = fixture("excel-utf8.csv");
    let e = err(&c, &data, &["calendar", "import", utf8.to_str().unwrap()]);
    assert!(
        e.contains("excel-utf8.csv:2") && e.contains("room name"),
        "{e}"
    );
}

#[test]
fn a_controller_killed_mid_import_restarts_consistent() {
    killed_mid_import_restarts_consistent(image_tools::store::Format::Packs);
}

#[test]
fn a_controller_on_a_file_store_killed_mid_import_restarts_consistent() {
    killed_mid_import_restarts_consistent(image_tools::store::Format::Files);
}

fn killed_mid_import_restarts_consistent(format: image_tools::store::Format) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    assert!(Command::new(workspace_bin("nightcast-controller"))
        .args(["init", "--data", data.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!("[store]\nformat = \"{}\"\n", format.name()),
    )
    .unwrap();
    let mut c = Controller::start_full(&data, &[], Some(&config));
    // Incompressible, so the import is slow enough to be interrupted.
    let image = dir.path().join("big.img");
    let mut bytes = vec![0u8; 160 << 20];
    image_tools::testimage::Rng::new(5).fill(&mut bytes);
    bytes[510..512].copy_from_slice(&[0x55, 0xaa]); // a boot sector's signature: a disk
    std::fs::write(&image, &bytes).unwrap();
    let mut import = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args([
            "--api",
            &c.api,
            "--token-file",
            data.join("admin.token").to_str().unwrap(),
        ])
        .args([
            "master",
            "import",
            image.to_str().unwrap(),
            "--name",
            "big",
            "--version",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut killed_mid_way = false;
    for _ in 0..4000 {
        if import_under_way(&data.join("store")) {
            c.child.kill().unwrap(); // SIGKILL
            c.child.wait().unwrap();
            killed_mid_way = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        killed_mid_way,
        "the import finished before it could be killed"
    );
    let _ = import.wait();

    // Restarted: the catalogue does not know the half-imported master, the store has no bad chunk,
    // and the import can simply be run again.
    let c = Controller::start_full(&data, &[], Some(&config));
    assert!(!nightcast_ok(&c, &data, &["master", "list"]).contains("big"));
    let scrub = Command::new(workspace_bin("nightcast-image"))
        .args(["scrub", "--store", data.join("store").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        scrub.status.success(),
        "{}",
        String::from_utf8_lossy(&scrub.stderr)
    );
    let out = nightcast_ok(
        &c,
        &data,
        &[
            "master",
            "import",
            image.to_str().unwrap(),
            "--name",
            "big",
            "--version",
            "1",
        ],
    );
    assert!(out.contains("big 1 imported"), "{out}");
    assert!(nightcast_ok(&c, &data, &["master", "list"]).contains("big"));
}

fn init_controller(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("controller");
    assert!(Command::new(workspace_bin("nightcast-controller"))
        .args(["init", "--data", data.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    data
}

#[test]
fn a_master_import_of_a_qcow2_backed_by_the_signing_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = init_controller(dir.path());
    let c = Controller::start(&data);
    let key = data.join("signing.key");
    let image = dir.path().join("evil.qcow2");
    let made = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            key.to_str().unwrap(),
            "-F",
            "raw",
        ])
        .arg(&image)
        .output()
        .expect("qemu-img must be installed to run this test (Debian package qemu-utils)");
    assert!(made.status.success(), "{made:?}");
    for extra in [&[][..], &["--format", "qcow2"][..]] {
        let e = err(
            &c,
            &data,
            &[
                &[
                    "master",
                    "import",
                    image.to_str().unwrap(),
                    "--name",
                    "evil",
                    "--version",
                    "1",
                ][..],
                extra,
            ]
            .concat(),
        );
        assert!(
            e.contains("signing.key") && e.contains("evil.qcow2"),
            "{extra:?}: {e}"
        );
    }
    assert!(!nightcast_ok(&c, &data, &["master", "list"]).contains("evil"));
    let store = data.join("store");
    let stored = image_tools::store::open_disk_store(&store, image_tools::store::Format::Files)
        .unwrap()
        .size()
        .unwrap()
        .chunks;
    assert_eq!(stored, 0, "the refused import left chunks in the store");
}

#[test]
fn a_corrupt_chunk_in_the_controller_store_never_ends_up_in_a_recorded_master() {
    let dir = tempfile::tempdir().unwrap();
    let data = init_controller(dir.path());
    let c = Controller::start(&data);
    let image = dir.path().join("win10.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::disk_bytes(8 << 20, 3))
        .unwrap();
    let import = |version: &str| {
        nightcast(
            &c,
            &data,
            &[
                "master",
                "import",
                image.to_str().unwrap(),
                "--name",
                "win10",
                "--version",
                version,
            ],
        )
    };
    assert!(import("1").status.success());
    // The disk rots a chunk of the store (same size, one byte changed), then version 2 reuses it.
    rot_a_chunk(&data.join("store"));
    let out = import("2");
    let masters = nightcast_ok(&c, &data, &["--json", "master", "list"]);
    let recorded = masters.contains("\"2\"");
    assert!(
        out.status.success() == recorded,
        "the import said {:?} but version 2 is {}recorded",
        out.status,
        if recorded { "" } else { "not " }
    );
    if recorded {
        // Recorded: then every chunk in the store is sound (the import replaced the rotten one).
        let scrub = Command::new(workspace_bin("nightcast-image"))
            .args(["scrub", "--store", data.join("store").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            scrub.status.success(),
            "version 2 was recorded over a corrupt chunk: {}",
            String::from_utf8_lossy(&scrub.stderr)
        );
    }
}

/// An initialised controller's data directory in `dir`, served.
fn started(dir: &Path) -> (std::path::PathBuf, Controller) {
    let data = init_controller(dir);
    let c = Controller::start(&data);
    (data, c)
}

#[test]
fn a_long_session_list_prints_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let (data, c) = started(dir.path());
    nightcast_ok(
        &c,
        &data,
        &[
            "site",
            "add",
            "lyon",
            "--tz",
            "Europe/Paris",
            "--cap-mbit",
            "20",
        ],
    );
    nightcast_ok(&c, &data, &["room", "add", "lyon", "salle-1"]);
    let image = dir.path().join("win10.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::disk_bytes(4 << 20, 2))
        .unwrap();
    let import = [
        "master",
        "import",
        image.to_str().unwrap(),
        "--name",
        "win10",
        "--version",
        "1",
    ];
    nightcast_ok(&c, &data, &import);
    // Hundreds of rows: every one printed (the old client printed only the header of an answer
    // sent chunked, as tiny_http did above 32 KiB; see the next test for a chunked answer).
    let sessions = 600;
    let mut csv = String::from("site,room,master,version,start,end\n");
    let first = jiff::civil::date(2030, 1, 1);
    for i in 0..sessions {
        let day = first.checked_add(jiff::Span::new().days(i)).unwrap();
        csv.push_str(&format!("lyon,salle-1,win10,1,{day} 08:30,{day} 17:00\n"));
    }
    let term = dir.path().join("term.csv");
    std::fs::write(&term, csv).unwrap();
    nightcast_ok(&c, &data, &["calendar", "import", term.to_str().unwrap()]);

    let list = nightcast_ok(&c, &data, &["session", "list"]);
    let rows = list.lines().filter(|l| l.contains("win10")).count();
    assert_eq!(rows, sessions as usize, "{list}");
    assert!(list.contains("2031-08-"), "the last sessions are missing");
    // In the site's time, named: the CSV's 08:30 in Paris.
    assert!(list.contains(" 08:30 Europe/Paris"), "{list}");
}

#[test]
fn an_answer_sent_chunked_is_printed_in_full() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let rows = 600;
    // The sessions, chunked; the sites (asked for their time zones) are none: times in UTC.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut out = stream;
            loop {
                let mut request = String::new();
                if reader.read_line(&mut request).unwrap_or(0) == 0 {
                    break;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                if request.starts_with("GET /v1/sites ") {
                    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]")
                        .unwrap();
                } else {
                    sessions_chunked(&mut out, rows);
                }
            }
        }
    });
    fn sessions_chunked(out: &mut std::net::TcpStream, rows: usize) {
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let mut chunk = |s: &str| write!(out, "{:x}\r\n{s}\r\n", s.len()).unwrap();
        chunk("[");
        for i in 0..rows {
            let sep = if i + 1 < rows { "," } else { "" };
            chunk(&format!(
                r#"{{"id":{i},"site":"lyon","room":"row-{i}","master":"win10","version":"1","start":{i},"end":{i}}}{sep}"#
            ));
        }
        chunk("]");
        out.write_all(b"0\r\n\r\n").unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["--api", &api, "session", "list"])
        .env("NIGHTCAST_TOKEN", "t")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout.lines().filter(|l| l.contains("win10")).count(), rows);
    assert!(stdout.contains(&format!("row-{}", rows - 1)), "{stdout}");
    assert!(stdout.contains("1970-01-01 00:00 UTC"), "{stdout}");
}

#[test]
fn a_controller_that_never_answers_makes_the_command_time_out() {
    // Accepts connections and holds them, never answering.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["--api", &api, "--timeout", "1", "site", "list"])
        .env("NIGHTCAST_TOKEN", "t")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("timed out") && stderr.contains(&api),
        "{stderr}"
    );
}

#[test]
fn room_and_seat_names_that_are_paths_empty_or_control_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (data, c) = started(dir.path());
    nightcast_ok(
        &c,
        &data,
        &[
            "site",
            "add",
            "lyon",
            "--tz",
            "Europe/Paris",
            "--cap-mbit",
            "20",
        ],
    );
    for bad in ["../x", "", "salle\u{1b}[2J", &"s".repeat(65)] {
        let e = err(&c, &data, &["room", "add", "lyon", bad]);
        assert!(
            e.contains("room name") && e.contains("not allowed"),
            "{bad:?}: {e}"
        );
    }
    nightcast_ok(&c, &data, &["room", "add", "lyon", "salle-1"]);
    for bad in ["", "../../etc", "poste\n01"] {
        let e = err(&c, &data, &["seat", "add", "lyon", "salle-1", bad]);
        assert!(
            e.contains("seat name") && e.contains("not allowed"),
            "{bad:?}: {e}"
        );
        let e = err(
            &c,
            &data,
            &["seat", "assign", "lyon", "salle-1", bad, "nuc-1"],
        );
        assert!(e.contains("seat name"), "{bad:?}: {e}");
    }
    // A calendar naming such a room is refused with its line.
    let csv = dir.path().join("term.csv");
    std::fs::write(
        &csv,
        "site,room,master,version,start,end\nlyon,../x,win10,1,2030-01-07 08:30,2030-01-07 17:00\n",
    )
    .unwrap();
    let e = err(&c, &data, &["calendar", "import", csv.to_str().unwrap()]);
    assert!(e.contains("term.csv:2") && e.contains("room name"), "{e}");
    let out = nightcast_ok(&c, &data, &["--json", "seat", "list"]);
    assert!(!out.contains(".."), "{out}");
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn a_flood_of_connections_leaves_the_threads_bounded_and_the_dsi_answered() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (data, c) = started(dir.path());
    nightcast_ok(&c, &data, &["site", "list"]);
    let pid = c.child.id();
    let before = threads(pid);
    let addr = c.api.strip_prefix("http://").unwrap().to_owned();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();

    // 150 connections that say nothing, 50 with a wrong token that never send their body, 50
    // with the right token and a body that never comes: all held open.
    let mut held = Vec::new();
    for i in 0..250 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let bearer = if i < 200 { "guess" } else { token.trim() };
        if i >= 150 {
            write!(
                s,
                "POST /v1/sites HTTP/1.1\r\nAuthorization: Bearer {bearer}\r\nContent-Length: 100\r\n\r\n"
            )
            .unwrap();
        }
        held.push(s);
    }
    // And 40 right requests at once.
    let asks: Vec<_> = (0..40)
        .map(|_| {
            let (addr, token) = (addr.clone(), token.trim().to_owned());
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                write!(
                    s,
                    "GET /v1/plan HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"
                )
                .unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                answer
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let during = threads(pid);
    // The DSI is still answered while all of that is open.
    let out = nightcast(&c, &data, &["--json", "site", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for a in asks {
        let answer = a.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 503"),
            "{answer}"
        );
    }
    // The wrong token is refused as soon as its head arrived, before any body.
    let mut answer = String::new();
    held[160].read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        during <= before + 4,
        "{before} threads before, {during} with 290 connections open"
    );
    drop(held);
}

/// Flips one byte in the middle of a chunk's stored form in the store at `dir`, in place, as a
/// failing disk would: in a file store, the middle of its first chunk file; in a pack store, the
/// middle of its largest pack (inside some chunk's payload: record headers are a few dozen bytes).
fn rot_a_chunk(dir: &Path) {
    use image_tools::store::Format;
    let path = match Format::of(dir).unwrap() {
        Some(Format::Files) => {
            let store = image_tools::LocalStore::open(dir).unwrap();
            store.path_of(&image_tools::ChunkStore::ids(&store).unwrap()[0])
        }
        Some(Format::Packs) => std::fs::read_dir(dir.join("packs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .max_by_key(|p| p.metadata().unwrap().len())
            .unwrap(),
        None => panic!("{} is not a store", dir.display()),
    };
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
}

/// Some of an import is on disk and not yet committed: in a file store, more than 20 chunk files
/// waiting in `tmp`; in a pack store, more than 8 MiB in its packs.
fn import_under_way(store: &Path) -> bool {
    let in_dir = |dir: &str| -> Vec<std::fs::Metadata> {
        std::fs::read_dir(store.join(dir))
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).collect())
            .unwrap_or_default()
    };
    in_dir("tmp").len() > 20 || in_dir("packs").iter().map(|m| m.len()).sum::<u64>() > 8 << 20
}

/// `nightcast site add|set --link far` on a controller without `far_listen`: the setting is kept
/// and shown, the DSI is told plainly that nothing changes for the relay until far_listen is
/// configured, and the controller logs it.
#[test]
fn a_far_site_on_a_controller_without_far_listen_is_kept_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let (data, c) = started(dir.path());
    let add = [
        "site",
        "add",
        "lyon",
        "--tz",
        "UTC",
        "--cap-mbit",
        "10",
        "--link",
        "far",
    ];
    let said = nightcast_ok(&c, &data, &add);
    assert!(
        said.contains("site lyon saved") && said.contains("no far_listen"),
        "{said}"
    );
    let list = nightcast_ok(&c, &data, &["site", "list"]);
    assert!(
        list.contains("LINK") && list.contains("far (no far_listen)"),
        "{list}"
    );
    let said = nightcast_ok(&c, &data, &["site", "set", "lyon", "--link", "wired"]);
    assert!(
        said.contains("link: wired") && !said.contains("note:"),
        "{said}"
    );
    let said = nightcast_ok(&c, &data, &["site", "set", "lyon", "--link", "far"]);
    assert!(
        said.contains("link: far (no far_listen)")
            && said.contains("nothing changes for lyon's relay yet"),
        "{said}"
    );
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(
        log.contains("this controller has no `far_listen`") && log.contains("lyon"),
        "{log}"
    );
    // Anything else but wired or far is refused by the command.
    let refused = err(&c, &data, &["site", "set", "lyon", "--link", "satellite"]);
    assert!(
        refused.contains("wired") && refused.contains("far"),
        "{refused}"
    );
}
