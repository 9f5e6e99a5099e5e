//! A NUC with a real guest behind a real relay and controller: `nightcast-agent run` with the QEMU
//! hypervisor (TCG: see docs/WORKSTATION.md on KVM here) and the Debian test master
//! (`node-agent/tests/guest`), on the real clock, booted under UEFI: the profile the DSI gives the
//! master in the catalogue, over the NUC's own BIOS default.
//!
//! The DSI's story: version 1 of a master is on the NUC and boots; the DSI publishes version 2,
//! which does not come up (its kernel panics), and schedules it. The NUC fetches it, swaps it in
//! between sessions, boots it once to check it, sees it fail, rolls back to version 1 by itself and
//! tells the controller, so that `nightcast fleet` names version 2 as failed on that NUC and why.

use crate::fleet::*;
use crate::util;

#[path = "../../node-agent/tests/guest/mod.rs"]
pub(crate) mod guest;

/// The NUC's own default profile: SeaBIOS, TCG, a small guest, a generous boot limit. The
/// catalogue's profile for the master (UEFI) must win over it.
const QEMU_AGENT: &str = "[profile]\nfirmware = \"bios\"\naccel = \"tcg\"\nmemory = { fixed = 512 }\nvcpus = { fixed = 1 }\n\
    [profile.health]\nwithin_secs = 600\n";

#[test]
fn a_version_that_does_not_boot_is_rolled_back_and_the_fleet_names_it() {
    let image = guest::debian();
    let f = Fleet::build(
        "00:00-23:59",
        1000,
        1,
        "start=2030-01-08T07:00:00Z speed=1",
        "",
        // No second compression pass: its minutes of CPU would only slow the guest's boot here.
        "[store]\ntighten_level = 0\n",
    );
    let c = f.dir.path().join("controller");
    let add = |version: &str, image: &std::path::Path| {
        let manifest = f.dir.path().join(format!("debian-{version}.manifest"));
        util::build_master(&c, image, "debian", version, &manifest);
        ok(
            "nightcast-controller",
            &[
                "master-add",
                "--data",
                c.to_str().unwrap(),
                manifest.to_str().unwrap(),
            ],
        );
    };
    add("1", &image);
    let broken = f.dir.path().join("debian-2.raw");
    guest::panicking_copy(&image, &broken);
    add("2", &broken);
    // The DSI gives the master its machine in the catalogue: UEFI, TCG (see docs/WORKSTATION.md
    // on KVM here), a small guest, the same generous boot limit (two cores shared with the rest of
    // the test suite).
    f.nightcast(&[
        "master",
        "profile",
        "set",
        "debian",
        "--firmware",
        "uefi",
        "--accel",
        "tcg",
        "--memory",
        "512",
        "--vcpus",
        "1",
        "--within",
        "600",
    ]);

    // Version 1 is scheduled for this afternoon: the NUC fetches it and boots it once.
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    f.nightcast(&[
        "session",
        "add",
        "--site",
        "lyon",
        "--room",
        "salle-1",
        "--master",
        "debian",
        "--version",
        "1",
        "--start",
        "2030-01-08 14:00",
        "--end",
        "2030-01-08 17:00",
    ]);
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.seated_agent_on("nuc-1", "pc-1", &relay, "qemu", QEMU_AGENT);
    nuc.wait("version 1 to boot and prove itself", 900, |a| {
        a.s("current") == "debian 1"
            && a.status()["trial"].is_null()
            && a.status()["boot_secs"].is_number()
    });
    assert!(
        nuc.log_text().contains("came up on this NUC"),
        "{}",
        nuc.log_text()
    );
    // It booted with the catalogue's profile, not the NUC's own BIOS default.
    let profile = nuc.s("profile");
    assert!(
        profile.starts_with("debian 1: the catalogue: uefi, accel tcg"),
        "{profile}"
    );
    assert!(nuc.s("accel").starts_with("tcg"), "{}", nuc.status());

    // The DSI moves the session to version 2, which panics at boot.
    let sessions = f.nightcast(&["session", "list"]);
    let id = sessions
        .lines()
        .find(|l| l.contains("debian"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no session listed: {sessions}"))
        .to_owned();
    f.nightcast(&["session", "rm", &id]);
    f.nightcast(&[
        "session",
        "add",
        "--site",
        "lyon",
        "--room",
        "salle-1",
        "--master",
        "debian",
        "--version",
        "2",
        "--start",
        "2030-01-08 14:00",
        "--end",
        "2030-01-08 17:00",
    ]);

    // The NUC swaps it in, boots it once, sees the panic and rolls back by itself.
    nuc.wait("version 2 to fail its trial and be rolled back", 900, |a| {
        a.n("rollbacks") == 1 && a.s("current") == "debian 1"
    });
    let s = nuc.status();
    assert!(s["failed"].to_string().contains("debian 2"), "{s}");

    // The controller hears it: the fleet names version 2 as failed on nuc-1, and why.
    let fleet = f.fleet_showing("FAILED here: debian 2", 60);
    let row = fleet
        .lines()
        .find(|l| l.contains("nuc-1"))
        .unwrap_or_else(|| panic!("nuc-1 is not in the fleet: {fleet}"));
    assert!(row.contains("FAILED here: debian 2"), "{fleet}");
    assert!(row.contains("panic"), "the reason is not given: {fleet}");
    // So does the plan, under the session: which NUC and seat, why, and that it runs version 1.
    let plan = f.nightcast(&["plan"]);
    let failed = plan
        .lines()
        .find(|l| l.contains("FAILED on nuc-1 (pc-1)"))
        .unwrap_or_else(|| panic!("the plan does not name nuc-1: {plan}"));
    assert!(failed.contains("panic"), "the reason is not given: {plan}");
    assert!(failed.contains("previous version"), "{plan}");
    // And it stays on version 1: version 2 is not tried again on this NUC.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let s = nuc.status();
    assert_eq!(s["current"], "debian 1", "{s}");
}
