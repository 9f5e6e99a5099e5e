//! `nightcast-agent run` as real processes behind a real relay and controller, on loopback, on an
//! accelerated clock, with the test hypervisor (real qcow2 overlays, guest writes with `qemu-io`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet;
mod util;

use std::process::Command;

use fleet::*;

/// Whether `qemu-img` and `qemu-io` are here (CI installs them).
fn qemu_tools() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("qemu-img") && ok("qemu-io") {
        return true;
    }
    eprintln!("skipped: qemu-img / qemu-io are missing (apt-get install qemu-utils); CI has them");
    false
}

fn qemu_io(overlay: &std::path::Path, cmd: &str) -> String {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(overlay)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn qemu_img_info(overlay: &std::path::Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(overlay)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_nuc_gets_its_masters_swaps_only_between_sessions_and_is_reset_after_each() {
    if !qemu_tools() {
        return;
    }
    // 60x: a virtual minute is a real second. Two sessions, the second on version 2.
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T07:35:00Z speed=60",
        "",
        "",
    );
    let v1 = f.manifest.clone();
    let v2_image = image_tools::testimage::evolve(&f.image, 0.05, 7);
    let v2 = f.add_master("2", &v2_image);
    f.calendar(
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 08:20\n\
         lyon,salle-1,demo,2,2030-01-08 08:30,2030-01-08 08:50\n",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.agent_process("nuc-1", &relay);
    // It enrols through the relay by itself; the DSI puts it at its seat.
    nuc.wait("the agent to enrol", 20, |a| a.s("site") == "lyon");
    f.nightcast(&["seat", "assign", "lyon", "salle-1", "pc-1", "nuc-1"]);

    nuc.wait("version 1 to be ready before its session", 60, |a| {
        a.s("current") == "demo 1"
    });
    assert!(
        f.clock.now() < at("2030-01-08T08:00:00Z"),
        "not ready before the session"
    );

    // Session 1 runs version 1; a trainee writes to the disk.
    nuc.wait("session 1 to start", 30, |a| {
        a.s("session").starts_with("demo 1")
    });
    let swaps_before = nuc.n("swaps");
    let overlay = nuc.overlay();
    let info = qemu_img_info(&overlay);
    assert_eq!(info["format"], "qcow2");
    assert!(
        info["backing-filename"]
            .as_str()
            .unwrap()
            .contains("demo@1"),
        "{info}"
    );
    let wrote = qemu_io(&overlay, "write -P 0xab 1048576 65536");
    assert!(wrote.contains("wrote"), "{wrote}");
    assert!(!qemu_io(&overlay, "read -P 0xab 1048576 65536").contains("failed"));

    // Version 2 is prepared during the session, but not swapped in while it runs.
    nuc.wait("version 2 to be ready in `next`", 30, |a| {
        a.s("next") == "demo 2" && a.s("next_state") == "ready"
    });
    let s = nuc.status();
    assert_eq!(s["current"], "demo 1", "{s}");
    assert!(s["session"].as_str().unwrap().starts_with("demo 1"), "{s}");
    assert_eq!(
        s["swaps"].as_u64().unwrap(),
        swaps_before,
        "swapped during a session: {s}"
    );
    // Only version 2's new chunks crossed the LAN: the rest came from the running image.
    let shared = v2
        .unique_chunks()
        .iter()
        .filter(|c| v1.unique_chunks().iter().any(|o| o.id == c.id))
        .count() as u64;
    assert!(shared > 0);
    assert_eq!(s["reused_chunks"].as_u64().unwrap(), shared, "{s}");
    assert_eq!(
        s["fetched_chunks"].as_u64().unwrap(),
        v1.unique_chunks().len() as u64 + v2.unique_chunks().len() as u64 - shared,
        "{s}"
    );

    // The session ends: the workstation is reset and version 2 comes in, between sessions.
    nuc.wait("the swap after session 1", 40, |a| {
        a.s("current") == "demo 2"
    });
    let s = nuc.status();
    assert!(f.clock.now() >= at("2030-01-08T08:20:00Z"));
    assert!(
        f.clock.now() < at("2030-01-08T08:30:00Z"),
        "swapped late: {s}"
    );
    assert_eq!(s["previous"], "demo 1", "{s}");
    assert!(s["resets"].as_u64().unwrap() >= 1, "{s}");
    // The trainee's write is gone: a fresh overlay over the new master, consistent.
    let info = qemu_img_info(&overlay);
    assert!(
        info["backing-filename"]
            .as_str()
            .unwrap()
            .contains("demo@2"),
        "{info}"
    );
    assert!(
        qemu_io(&overlay, "read -P 0xab 1048576 65536").contains("Pattern verification failed"),
        "the previous trainee's data survived the reset"
    );
    let check = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Session 2 runs version 2; the relay learnt what the NUC holds and passed it on.
    nuc.wait("session 2 to start", 30, |a| {
        a.s("session").starts_with("demo 2")
    });
    let fleet = f.nightcast(&["fleet"]);
    assert!(
        fleet.contains("nuc-1") && fleet.contains("demo 2"),
        "{fleet}"
    );
}
