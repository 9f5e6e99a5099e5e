//! A controller and a relay as real processes on loopback: init, token, enrolment, a master fetched
//! into the site cache and assembled bit for bit, rights enforced, clean shutdown.

use crate::util;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::util::workspace_bin;

fn run(bin: &str, args: &[&str]) -> Output {
    let out = Command::new(workspace_bin(bin))
        .args(args)
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(101),
        "{bin} panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(bin: &str, args: &[&str]) -> String {
    let out = run(bin, args);
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_relay_enrols_and_fetches_a_scheduled_master() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("controller");
    let r = dir.path().join("relay");
    let (cs, rs) = (c.to_str().unwrap(), r.to_str().unwrap());
    ok("nightcast-controller", &["init", "--data", cs]);
    let again = run("nightcast-controller", &["init", "--data", cs]);
    assert!(!again.status.success(), "init replaced an existing CA");

    // A file store: further down, a chunk file is taken from under the running controller (a
    // pack store's running handle would go on serving it from the pack it still has open).
    let config = dir.path().join("controller.toml");
    std::fs::write(&config, "[store]\nformat = \"files\"\n").unwrap();
    let mut server = util::Controller::start_full(&c, &[], Some(&config));
    let (addr, api) = (server.quic.clone(), server.api.clone());
    let nightcast = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
            .args([
                "--api",
                &api,
                "--token-file",
                c.join("admin.token").to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    // The DSI describes the site, builds a master into the controller's store, registers it, and
    // schedules it for lyon.
    nightcast(&[
        "site",
        "add",
        "lyon",
        "--tz",
        "Europe/Paris",
        "--cap-mbit",
        "20",
    ]);
    nightcast(&["room", "add", "lyon", "salle-1"]);
    let image = dir.path().join("master.img");
    image_tools::testimage::write_sparse(&image, &image_tools::testimage::image_bytes(12 << 20, 4))
        .unwrap();
    let manifest = dir.path().join("demo-1.manifest");
    util::build_master(&c, &image, "demo", "1", &manifest);
    ok(
        "nightcast-controller",
        &["master-add", "--data", cs, manifest.to_str().unwrap()],
    );
    let calendar = dir.path().join("term.csv");
    std::fs::write(
        &calendar,
        "site,room,master,version,start,end\nlyon,salle-1,demo,1,2030-01-07 08:30,2030-01-07 17:00\n",
    )
    .unwrap();
    assert!(
        nightcast(&["calendar", "import", calendar.to_str().unwrap()])
            .contains("1 sessions imported")
    );
    // Before its relay enrols, nothing reaches lyon.
    let plan = nightcast(&["plan"]);
    assert!(
        plan.contains("lyon") && plan.contains("demo 1") && plan.contains("LATE: no relay"),
        "{plan}"
    );

    let token = nightcast(&["enroll", "--role", "relay", "--site", "lyon"]);
    let token = token.trim();
    assert!(token.starts_with("nc1-"), "{token}");
    // The controller's own command gives tokens too (on the controller host, without the API).
    let local = ok(
        "nightcast-controller",
        &["token", "--data", cs, "--role", "relay", "--site", "lyon"],
    );
    assert!(local.trim().starts_with("nc1-"));

    let out = ok(
        "nightcast-relay",
        &[
            "enroll",
            "--controller",
            &addr,
            "--token",
            token,
            "--node-id",
            "relay-1",
            "--data",
            rs,
        ],
    );
    assert!(out.contains("relay lyon/relay-1"), "{out}");
    let mode = std::fs::metadata(r.join("tls/node.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let reuse = run(
        "nightcast-relay",
        &[
            "enroll",
            "--controller",
            &addr,
            "--token",
            token,
            "--node-id",
            "relay-2",
            "--data",
            rs,
        ],
    );
    assert!(!reuse.status.success());
    assert!(
        String::from_utf8_lossy(&reuse.stderr).contains("unknown or already used"),
        "{}",
        String::from_utf8_lossy(&reuse.stderr)
    );

    let out = ok(
        "nightcast-relay",
        &[
            "fetch",
            "--controller",
            &addr,
            "--data",
            rs,
            "--master",
            "demo",
            "--version",
            "1",
        ],
    );
    assert!(out.contains("already cached"), "{out}");
    // The site cache now verifies with the pinned key and assembles the very image.
    let cached = r.join("manifests/demo-1.manifest");
    ok(
        "nightcast-image",
        &[
            "verify",
            "--store",
            &format!("{rs}/store"),
            "--pubkey",
            &format!("{rs}/signing.pub"),
            cached.to_str().unwrap(),
        ],
    );
    let out_img = dir.path().join("out.img");
    ok(
        "nightcast-image",
        &[
            "assemble",
            "--store",
            &format!("{rs}/store"),
            "--pubkey",
            &format!("{rs}/signing.pub"),
            cached.to_str().unwrap(),
            out_img.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&image).unwrap() == std::fs::read(&out_img).unwrap());
    // The relay reported what it holds: the DSI sees it, and the plan counts on it.
    let fleet = nightcast(&["fleet"]);
    assert!(
        fleet.contains("relay-1") && fleet.contains("demo 1") && !fleet.contains("never"),
        "{fleet}"
    );
    // Times in words are the site's local time, its zone named (the session is 08:30 in Paris).
    assert!(fleet.contains(" Europe/Paris"), "{fleet}");
    let plan = nightcast(&["plan"]);
    assert!(plan.contains("already there"), "{plan}");
    assert!(plan.contains("2030-01-07 08:30 Europe/Paris"), "{plan}");

    // The relay's fetch plan: what, by when (08:30 in Paris, minus 2 h of staging), pinned until
    // the session ends, in the site's zone, named. An emergency override shows up at once.
    let relay_plan = ok(
        "nightcast-relay",
        &["plan", "--controller", &addr, "--data", rs],
    );
    assert!(
        relay_plan.contains(
            "demo 1  by 2030-01-07 06:30 Europe/Paris  pinned until 2030-01-07 17:00 Europe/Paris"
        ),
        "{relay_plan}"
    );
    assert!(!relay_plan.contains("OVERRIDE"));
    assert!(
        relay_plan.contains("windows 22:00-06:00 (Europe/Paris), WAN cap 20 Mbit/s"),
        "{relay_plan}"
    );
    let out = nightcast(&[
        "override",
        "push",
        "--site",
        "lyon",
        "--master",
        "demo",
        "--version",
        "1",
        "--reason",
        "fix at noon",
        "--by",
        "dsi",
    ]);
    assert!(out.contains("may fetch demo 1 now"), "{out}");
    assert!(out.trim_end().ends_with(" Europe/Paris"), "{out}");
    let overrides = nightcast(&["override", "list"]);
    assert!(
        overrides.contains("fix at noon") && overrides.contains(" Europe/Paris"),
        "{overrides}"
    );
    let relay_plan = ok(
        "nightcast-relay",
        &["plan", "--controller", &addr, "--data", rs],
    );
    assert!(
        relay_plan.contains("OVERRIDE: may fetch now"),
        "{relay_plan}"
    );
    let no_reason = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args([
            "--api",
            &api,
            "--token-file",
            c.join("admin.token").to_str().unwrap(),
        ])
        .args([
            "override",
            "push",
            "--site",
            "lyon",
            "--master",
            "demo",
            "--version",
            "1",
            "--reason",
            " ",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&no_reason.stderr).contains("needs a reason"));
    // A second fetch moves nothing.
    let out = ok(
        "nightcast-relay",
        &[
            "fetch",
            "--controller",
            &addr,
            "--data",
            rs,
            "--master",
            "demo",
            "--version",
            "1",
        ],
    );
    assert!(out.contains(": 0 chunks fetched"), "{out}");

    // A master not scheduled for lyon is refused, naming the reason.
    let out = run(
        "nightcast-relay",
        &[
            "fetch",
            "--controller",
            &addr,
            "--data",
            rs,
            "--master",
            "demo",
            "--version",
            "2",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not scheduled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A master whose chunks the controller itself lacks is not recorded as held by the relay.
    let v2 = dir.path().join("v2.img");
    image_tools::testimage::write_sparse(&v2, &image_tools::testimage::disk_bytes(4 << 20, 99))
        .unwrap();
    nightcast(&[
        "master",
        "import",
        v2.to_str().unwrap(),
        "--name",
        "demo",
        "--version",
        "2",
    ]);
    let v2_calendar = dir.path().join("v2.csv");
    std::fs::write(
        &v2_calendar,
        "site,room,master,version,start,end\nlyon,salle-1,demo,2,2030-02-04 08:30,2030-02-04 17:00\n",
    )
    .unwrap();
    nightcast(&["calendar", "import", v2_calendar.to_str().unwrap()]);
    let held: std::collections::HashSet<_> = std::fs::read_dir(r.join("store/chunks"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().file_name())
        .collect();
    let lost = std::fs::read_dir(c.join("store/chunks"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find(|p| !held.contains(p.file_name().unwrap()))
        .expect("a chunk only version 2 has");
    std::fs::remove_file(&lost).unwrap();
    let out = run(
        "nightcast-relay",
        &[
            "fetch",
            "--controller",
            &addr,
            "--data",
            rs,
            "--master",
            "demo",
            "--version",
            "2",
        ],
    );
    assert!(
        !out.status.success(),
        "a fetch with missing chunks succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lacks 1 chunk"), "{err}");
    assert!(
        !r.join("manifests/demo-2.manifest").exists(),
        "an incomplete master was recorded as held"
    );
    assert!(!nightcast(&["fleet"]).contains("demo 2"));

    // SIGTERM stops the controller cleanly.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "controller exited with {status}");
}
