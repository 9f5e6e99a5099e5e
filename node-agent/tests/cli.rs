//! The binary explains itself and, until it is built, says so instead of pretending to run.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn help_and_honest_exit() {
    let bin = env!("CARGO_BIN_EXE_nightcast-agent");
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nightcast"));
    let out = Command::new(bin).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not built yet"));
}
