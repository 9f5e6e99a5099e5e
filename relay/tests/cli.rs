//! The binary explains itself, and refuses to run without a command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn help_and_usage() {
    let bin = env!("CARGO_BIN_EXE_nightcast-relay");
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("nightcast") && help.contains("enrol"),
        "{help}"
    );
    let out = Command::new(bin).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_refuses_a_bad_config_and_an_unenrolled_data_directory_with_a_clear_error() {
    let bin = env!("CARGO_BIN_EXE_nightcast-relay");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, "controller = \"192.0.2.1:4433\"\nquota = \"lots\"\n").unwrap();
    let out = Command::new(bin)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("relay.toml") && err.contains("quota"), "{err}");

    std::fs::write(
        &cfg,
        format!(
            "controller = \"192.0.2.1:4433\"\ndata = \"{}\"\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not enrolled"), "{err}");
}

#[test]
fn the_systemd_unit_is_valid_and_restarts_forever() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/nightcast-relay.service"
    ))
    .unwrap();
    for line in [
        "Restart=always",
        "StartLimitIntervalSec=0",
        "ExecStart=/usr/local/bin/nightcast-relay run --config /etc/nightcast/relay.toml",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/nightcast/relay",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
    // systemd's own check (with the binary path made real); .ci/run installs systemd.
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze is missing: apt-get install systemd (.ci/run does)");
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("nightcast-relay.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/nightcast-relay",
            env!("CARGO_BIN_EXE_nightcast-relay"),
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
