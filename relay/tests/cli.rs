//! The binary explains itself, and refuses to run without a command.

#![allow(clippy::unwrap_used)]

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
