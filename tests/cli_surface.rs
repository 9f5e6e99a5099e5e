//! Every binary of the workspace starts and explains itself, and the demo runs end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::process::Command;

#[test]
fn every_binary_prints_its_purpose() {
    let bins = [
        ("nightcast", "training-room masters"),
        ("nightcast-image", "signed manifest"),
        ("nightcast-controller", "training calendar"),
        ("nightcast-relay", "night window"),
        ("nightcast-agent", "between sessions"),
    ];
    for (name, purpose) in bins {
        let path = if name == "nightcast" {
            env!("CARGO_BIN_EXE_nightcast").into()
        } else {
            util::workspace_bin(name)
        };
        let out = Command::new(&path).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} --help failed");
        assert!(
            text.contains(purpose),
            "{name} --help does not say {purpose:?}:\n{text}"
        );
    }
}

#[test]
fn the_demo_runs_a_fleet_through_a_night_and_cleans_up() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["demo", "--size-mib", "16"])
        .env("TMPDIR", work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for claim in [
        "every NUC verified version 1 and is ready, before the 08:00 session",
        "the trainee's data is gone",
        "only what changed moved",
        "demo complete",
    ] {
        assert!(stdout.contains(claim), "missing {claim:?} in:\n{stdout}");
    }
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "demo left files behind"
    );
}

#[test]
fn ctrl_c_stops_the_demo_and_everything_it_started() {
    use std::io::{BufRead, BufReader};
    let work = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["demo", "--size-mib", "8"])
        .env("TMPDIR", work.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("[4/7]") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the demo ended early"
        );
    }
    let _ = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status();
    let status = demo.wait().unwrap();
    assert!(!status.success());
    // Nothing it started is left running, and its files are gone.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let dir = work.path().to_string_lossy().to_string();
    assert!(
        !ps.lines().any(|l| l.contains(&dir)),
        "processes left: {ps}"
    );
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}
