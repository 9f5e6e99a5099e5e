//! The machine profile a DSI assigns to a master in the catalogue reaches the NUCs through the
//! relay, signed by the controller: the agent (the test hypervisor, which reports the profile it
//! would build the VM from) uses it from its next VM start, over its own default, and refuses a
//! profile the relay altered.

use serde_json::Value;

use crate::fleet::*;

/// The NUC's own default, which the catalogue's profile must win over.
const OWN_DEFAULT: &str = "[profile]\nfirmware = \"bios\"\nmemory = { fixed = 512 }\n";

/// `status.json`'s `profile`: the last start's profile, where it came from.
fn profile(a: &AgentProc) -> String {
    a.s("profile")
}

fn set_win7_like(f: &Fleet) -> String {
    f.nightcast(&[
        "master",
        "profile",
        "set",
        "demo",
        "--firmware",
        "uefi",
        "--disk",
        "sata",
        "--nic",
        "e1000",
        "--memory",
        "60%",
        "--vcpus",
        "2",
        "--health",
        "serial,agent",
        "--within",
        "180",
    ])
}

#[test]
fn the_catalogues_profile_reaches_the_nuc_and_a_change_waits_for_the_next_start() {
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T07:55:00Z speed=30",
        // Sessions long enough (80 s real) for the change below to land in the first one even on
        // a loaded CI machine.
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 08:40\n\
         lyon,salle-1,demo,1,2030-01-08 08:45,2030-01-08 09:15\n",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let said = set_win7_like(&f);
    assert!(said.contains("demo: uefi"), "{said}");
    assert!(said.contains("disk sata, nic e1000, memory 60%"), "{said}");
    let shown = f.nightcast(&["master", "profile", "show", "demo"]);
    assert!(
        shown.contains("disk sata, nic e1000, memory 60%, vcpus 2"),
        "{shown}"
    );
    assert!(
        shown.contains("health serial,agent within 180 s"),
        "{shown}"
    );
    let list = f.nightcast(&["master", "list"]);
    let row = list.lines().find(|l| l.starts_with("demo")).unwrap();
    assert!(row.contains("disk sata"), "{list}");

    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.seated_agent("nuc-1", "pc-1", &relay, OWN_DEFAULT);
    // The session's VM, not the trial boot of the new master before it.
    nuc.wait(
        "the session's VM to start with the catalogue's profile",
        60,
        |a| {
            a.s("vm") == "Running"
                && !a.status()["session"].is_null()
                && profile(a).contains("the catalogue")
        },
    );
    let p = profile(&nuc);
    assert!(p.starts_with("demo 1: the catalogue: uefi"), "{p}");
    assert!(
        p.contains("disk sata, nic e1000, memory 60%, vcpus 2"),
        "{p}"
    );
    assert!(
        nuc.log_text().contains("the VM's machine profile"),
        "{}",
        nuc.log_text()
    );
    // The DSI sees it in the fleet: the agent reports it through the relay.
    let fleet = f.fleet_showing("catalogue: uefi sata e1000", 10);
    let row = fleet.lines().find(|l| l.contains("nuc-1")).unwrap();
    assert!(row.contains("catalogue: uefi sata e1000"), "{fleet}");

    // The DSI changes it during the session: the NUC verifies it at once, the running VM keeps
    // the one it started with.
    let said = f.nightcast(&[
        "master",
        "profile",
        "set",
        "demo",
        "--firmware",
        "bios",
        "--disk",
        "virtio",
        "--memory",
        "1024",
        "--persistent-disk",
        "2G",
        "--tpm",
    ]);
    assert!(said.contains("demo: bios"), "{said}");
    assert!(said.contains("persistent disk 2G, tpm"), "{said}");
    nuc.wait("the new profile to be verified", 20, |a| {
        a.log_text()
            .matches("the catalogue's machine profile, verified")
            .count()
            >= 2
    });
    assert!(
        f.clock.now() < at("2030-01-08T08:40:00Z"),
        "the test was too slow to see the session run on"
    );
    let s = nuc.status();
    assert_eq!(s["vm"], "Running", "{s}");
    assert!(profile(&nuc).contains("disk sata"), "{s}");

    // The next session's start uses the new one.
    nuc.wait("the next session's VM to use the new profile", 180, |a| {
        profile(a).contains("bios")
    });
    assert!(
        f.clock.now() >= at("2030-01-08T08:45:00Z"),
        "the profile changed before the next session"
    );
    let p = profile(&nuc);
    assert!(p.starts_with("demo 1: the catalogue: bios"), "{p}");
    assert!(
        p.contains("disk virtio, nic virtio, memory 1024 MiB"),
        "{p}"
    );
    assert!(p.ends_with("persistent disk 2G, tpm"), "{p}");

    // The site's USB policy reaches the NUC in its plan.
    let said = f.nightcast(&["site", "set", "lyon", "--usb", "storage"]);
    assert!(said.contains("USB devices passed: storage"), "{said}");
    let sites = f.nightcast(&["site", "list"]);
    assert!(sites.contains("storage"), "{sites}");
    nuc.wait("the site's USB policy to reach the NUC", 60, |a| {
        a.log_text().contains("the site's USB policy")
    });
    let log = nuc.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("the site's USB policy"))
        .unwrap_or_default();
    assert!(line.contains("storage"), "{line}");

    // Cleared: the NUC's own default again, from the next start.
    let said = f.nightcast(&["master", "profile", "clear", "demo"]);
    assert!(said.contains("each NUC uses its own"), "{said}");
    assert_eq!(nuc.n("refused_profiles"), 0);
}

#[test]
fn a_profile_altered_by_the_relay_is_refused_and_the_verified_one_stays() {
    let mut f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T07:58:00Z speed=30",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    set_win7_like(&f);
    let relay = f.relay(&DEFAULT_RELAY);
    let mut nuc = f.seated_agent("nuc-1", "pc-1", &relay, OWN_DEFAULT);
    nuc.wait("the VM to run with the catalogue's profile", 60, |a| {
        a.s("vm") == "Running" && profile(a).contains("disk sata")
    });
    nuc.kill9();

    // The relay, cut from the controller, turns SATA into virtio in the plan it serves.
    f.stop_controller();
    let data = relay.kill9();
    let path = data.join("plan.json");
    let mut plan: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let statement = &mut plan["profiles"][0]["statement"];
    let bytes: Vec<u8> = serde_json::from_value(statement.clone()).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("\"sata\""), "{text}");
    *statement = serde_json::to_value(text.replace("\"sata\"", "\"virtio\"").into_bytes()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&plan).unwrap()).unwrap();
    let relay = f.relay(&DEFAULT_RELAY);

    // The NUC comes back and talks to it (the relay moved to another port).
    let config = std::fs::read_to_string(&nuc.config).unwrap();
    let config = format!("relay = \"{}\"\n{config}", relay.lan);
    std::fs::write(&nuc.config, config).unwrap();
    let nuc = AgentProc::start(&nuc.config.clone(), &nuc.data.clone(), &f.clock_spec);
    nuc.wait("the altered profile to be refused", 30, |a| {
        a.n("refused_profiles") >= 1
    });
    let s = nuc.status();
    let error = s["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("REFUSED"), "{s}");
    assert!(error.contains("altered"), "{s}");
    // The VM of the session under way runs with the profile verified before.
    nuc.wait("the VM to run again", 30, |a| a.s("vm") == "Running");
    let p = profile(&nuc);
    assert!(
        p.contains("the catalogue") && p.contains("disk sata"),
        "{p}"
    );
    assert!(nuc.log_text().contains("REFUSED"), "{}", nuc.log_text());
}
