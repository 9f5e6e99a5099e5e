//! Every binary of the workspace starts and explains itself, and the demo runs end to end.

use crate::util;

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

/// The README's first command on a fresh machine: `cargo run --release -- demo` has built only
/// `nightcast`; the demo has cargo build the other programs, which relinks `nightcast` itself
/// (the workspace's features differ), so the running demo's own file is replaced under it.
#[test]
fn the_demo_runs_a_fleet_through_a_night_and_cleans_up() {
    let work = tempfile::tempdir().unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let built = util::workspace_bin("nightcast-image");
    let built = built.parent().unwrap();
    let demo = fresh.path().join("nightcast");
    std::fs::copy(env!("CARGO_BIN_EXE_nightcast"), &demo).unwrap();
    // What `cargo build --workspace --bins` does there: the other programs appear, and this one
    // is written anew (unlinked and created, as a linker does).
    let cargo = fresh.path().join("cargo");
    let mut script = format!("#!/bin/sh\nset -e\ncd {}\n", fresh.path().display());
    for bin in [
        "nightcast-controller",
        "nightcast-relay",
        "nightcast-agent",
        "nightcast-image",
    ] {
        script += &format!("cp {}/{bin} .\n", built.display());
    }
    script += &format!(
        "rm nightcast\ncp {} nightcast\n",
        env!("CARGO_BIN_EXE_nightcast")
    );
    std::fs::write(&cargo, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = Command::new(&demo)
        .args(["demo", "--size-mib", "16"])
        .env("TMPDIR", work.path())
        .env("CARGO", &cargo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for claim in [
        "building the other nightcast programs",
        "every NUC verified version 1 and is ready, before the 08:00 session",
        "the trainee's data is gone",
        "only what changed moved",
        "demo complete",
    ] {
        assert!(stdout.contains(claim), "missing {claim:?} in:\n{stdout}");
    }
    // Every NUC is ready: the fleet table has nothing for the DSI to look at (a NUC that asked
    // its relay for chunks before the relay had fetched them waited; that is not an error).
    assert!(
        !stdout.contains("last error"),
        "the fleet table raises an alarm:\n{stdout}"
    );
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
        // The test's programs are built already: no build under `cargo test`.
        .env_remove("CARGO")
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
