//! `nightcast demo --real-vm IMAGE`: a DSI trying the real workstation on one machine sees the
//! NUC's guest come up. The Debian test master (built once per run and cached, as for
//! `workstation`) is the image; TCG (a Linux kernel hangs under the nested KVM of the machines
//! these tests run on: docs/WORKSTATION.md). One boot: the NUC's check of the new master.

use std::process::Command;

use crate::workstation::guest;

#[test]
fn the_real_vm_demo_boots_the_master_and_says_the_guest_is_up() {
    let image = guest::debian();
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["demo", "--real-vm"])
        .arg(&image)
        .args(["--accel", "tcg"])
        .env("TMPDIR", work.path())
        // The other programs are next to this one (built before the tests): no cargo build.
        .env_remove("CARGO")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let up = stdout
        .lines()
        .find(|l| l.contains("the guest is up: healthy"))
        .unwrap_or_else(|| panic!("the demo does not say the guest is up:\n{stdout}"));
    assert!(up.contains("accelerator tcg"), "{up}");
    let rss = stdout
        .lines()
        .find_map(|l| l.split("the agent uses ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|mib| mib.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no memory figure for the agent:\n{stdout}"));
    assert!(rss > 1.0, "{stdout}");
    assert!(stdout.contains("demo complete"), "{stdout}");
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "demo left files behind"
    );
}

/// Without an image and without root or mmdebstrap, the demo says what is missing.
#[test]
fn the_real_vm_demo_without_an_image_says_what_it_needs() {
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["demo", "--real-vm", "/nonexistent/debian.raw"])
        .env_remove("CARGO")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/debian.raw: no such disk image"),
        "{stderr}"
    );
}
