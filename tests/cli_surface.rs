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
fn the_demo_runs_end_to_end_and_cleans_up() {
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
    assert!(
        stdout.contains("demo complete: every check passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("chunks from the current master"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "demo left files behind"
    );

    // With --dir the files stay, and a second run reuses the key and the store.
    let dir = work.path().join("kept");
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
            .args(["demo", "--size-mib", "8", "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.join("master-v2.manifest").exists());
}
