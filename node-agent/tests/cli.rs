//! The binary explains itself, and refuses bad input with a clear message.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn help_and_usage() {
    let bin = env!("CARGO_BIN_EXE_nightcast-agent");
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nightcast"));
    let out = Command::new(bin).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a command"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "hypervisor = \"vbox\"\n").unwrap();
    let out = Command::new(bin)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("agent.toml") && err.contains("hypervisor"),
        "{err}"
    );
}

#[test]
fn identity_prints_the_id_and_its_source() {
    let bin = env!("CARGO_BIN_EXE_nightcast-agent");
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .arg("identity")
        .arg("--root")
        .arg(root.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("id: 0123456789abcdef0123456789abcdef"),
        "{stdout}"
    );
    assert!(stdout.contains("source: machine-id"), "{stdout}");

    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args(["identity", "--root"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no usable hardware id"));
}

#[test]
fn the_systemd_unit_restarts_forever_and_needs_no_configuration() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/nightcast-agent.service"
    ))
    .unwrap();
    for line in [
        "Restart=always",
        "StartLimitIntervalSec=0",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
    assert!(unit.contains("/usr/local/bin/nightcast-agent run"));
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze is missing: apt-get install systemd (.ci/run does)");
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("nightcast-agent.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/nightcast-agent",
            env!("CARGO_BIN_EXE_nightcast-agent"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", copy.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Unknown key")
            && !err.contains("Unknown section")
            && !err.contains("Invalid"),
        "{err}"
    );
}
