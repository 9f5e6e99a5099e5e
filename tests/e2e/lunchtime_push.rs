//! The lunchtime emergency push as a DSI runs it: a master fixed in the morning, on every NUC of
//! the room by the afternoon session. The verdict before the push (dry run) and while it runs
//! (`plan`), the relay fetching in the daytime at the site's emergency cap (its WAN measured),
//! the NUC swapping at the end of the morning session and never during it, ready before the
//! deadline; and the DSI's mistakes refused with nothing stored.
//!
//! Short real times on the fleet's accelerated clock (60x: a virtual minute is a real second).

use std::process::Command;
use std::time::Instant;

use crate::fleet::{new_chunk_bytes, Fleet, DEFAULT_RELAY};

fn at(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// `nightcast args` must fail: what it said on stderr.
fn refused(f: &Fleet, args: &[&str]) -> String {
    let token = f.dir.path().join("controller/admin.token");
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args(["--api", &f.api, "--token-file", token.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn push<'a>(version: &'a str, site: &'a str, deadline: &'a str) -> Vec<&'a str> {
    vec![
        "override",
        "push",
        "--site",
        site,
        "--master",
        "demo",
        "--version",
        version,
        "--deadline",
        deadline,
        "--reason",
        "fix at noon",
    ]
}

#[test]
#[allow(clippy::disallowed_methods)] // the WAN's rate is measured in real time
fn a_master_fixed_in_the_morning_is_on_the_nucs_after_the_morning_session_before_the_deadline() {
    // Night window 04:00-11:00 UTC at 100 Mbit/s; the morning session on version 1 runs from
    // 10:58 to 11:40, the afternoon one on the fixed version 2 starts at 12:10.
    let f = Fleet::build(
        "04:00-11:00",
        100,
        16,
        "start=2030-01-08T10:40:00Z speed=60",
        "lyon,salle-1,demo,1,2030-01-08 10:58,2030-01-08 11:40\n",
        "",
    );
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    f.nightcast(&["site", "add", "nice", "--tz", "UTC", "--cap-mbit", "20"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.seated_agent("nuc-1", "pc-1", &relay, "");
    nuc.wait("version 1 before the morning session", 40, |a| {
        a.s("current") == "demo 1"
    });
    assert!(f.clock.now() < at("2030-01-08T10:58:00Z"));

    // 11:00: the window is closed. Version 2 fixes a bug; the afternoon session needs it.
    while f.clock.now() < at("2030-01-08T11:00:00Z") {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let v1 = f.manifest.clone();
    let v2 = f.add_master("2", &image_tools::testimage::evolve(&f.image, 0.8, 5));
    f.calendar("lyon,salle-1,demo,2,2030-01-08 12:10,2030-01-08 12:40\n");
    let new_bytes = new_chunk_bytes(&v1, &v2);
    assert!(
        new_bytes > 2_000_000,
        "too little to measure a rate: {new_bytes}"
    );

    // No silent wait: the NUC asks for version 2 and says when its relay expects it (the next
    // window, tomorrow 04:00), and `fleet` says so too.
    nuc.wait("the NUC to say when version 2 is expected", 30, |a| {
        a.s("state").contains("expected at 2030-01-09 04:00 UTC")
    });
    // The report reaches the controller through the relay within a few seconds.
    let mut fleet = String::new();
    for _ in 0..100 {
        fleet = f.nightcast(&["fleet"]);
        if fleet.contains("expected at 2030-01-09 04:00 UTC") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        fleet.contains("expected at 2030-01-09 04:00 UTC"),
        "{fleet}\n{}",
        nuc.status()
    );

    // The DSI's mistakes: nothing stored.
    let e = refused(&f, &push("2", "lyon", "10:00"));
    assert!(e.contains("past"), "{e}");
    let e = refused(&f, &push("9", "lyon", "12:10"));
    assert!(e.contains("no master demo 9"), "{e}");
    let e = refused(&f, &push("2", "nice", "12:10"));
    assert!(e.contains("no session of demo 2"), "{e}");
    let e = refused(&f, &push("2", "lyon", "14h"));
    assert!(e.contains("HH:MM"), "{e}");
    assert!(
        !f.nightcast(&["override", "list"]).contains("fix at noon"),
        "a refused push was stored"
    );

    // A daytime cap for emergencies: 4 Mbit/s (the night cap is 100).
    let set = f.nightcast(&["site", "set", "lyon", "--emergency-cap-mbit", "4"]);
    assert!(
        set.contains("emergency pushes in the daytime at 4 Mbit/s"),
        "{set}"
    );

    // Before pressing the button: the verdict per room, nothing pushed.
    let mut args = push("2", "lyon", "12:10");
    args.push("--dry-run");
    let dry = f.nightcast(&args);
    assert!(dry.contains("dry run: nothing pushed"), "{dry}");
    assert!(
        dry.contains("lyon salle-1  demo 2  READY by 2030-01-08 12:10 UTC"),
        "{dry}"
    );
    assert!(
        dry.contains("at 4 Mbit/s") && dry.contains("pc-1 nuc-1"),
        "{dry}"
    );
    // It has it during the morning session: it swaps at its end.
    assert!(
        dry.contains("swaps at its end, 2030-01-08 11:40 UTC"),
        "{dry}"
    );
    assert!(!f.nightcast(&["override", "list"]).contains("fix at noon"));
    // Every site whose calendar runs it: lyon only (nice has no session of it).
    let all = f.nightcast(&[
        "override",
        "push",
        "--all-sites",
        "--master",
        "demo",
        "--version",
        "2",
        "--deadline",
        "12:10",
        "--reason",
        "fix at noon",
        "--dry-run",
    ]);
    assert!(
        all.contains("lyon salle-1  demo 2") && !all.contains("nice"),
        "{all}"
    );
    assert!(!f.nightcast(&["override", "list"]).contains("fix at noon"));

    // The push.
    let wan_before = f.wan.bytes();
    let relay_wan = |r: &crate::fleet::Relay| r.n("wan_bytes_open") + r.n("wan_bytes_closed");
    let relay_before = relay_wan(&relay);
    let started = Instant::now();
    let pushed = f.nightcast(&push("2", "lyon", "12:10"));
    assert!(
        pushed.contains("override") && pushed.contains("recorded"),
        "{pushed}"
    );
    assert!(pushed.contains("READY by"), "{pushed}");
    let list = f.nightcast(&["override", "list"]);
    assert!(
        list.contains("fix at noon") && list.contains("2030-01-08 12:10 UTC"),
        "{list}"
    );
    // While it runs, `plan` shows it.
    let plan = f.nightcast(&["plan"]);
    assert!(
        plan.contains("Emergency pushes:") && plan.contains("lyon salle-1  demo 2"),
        "{plan}"
    );

    // The relay fetches in the daytime, paced to the emergency cap, not the night cap.
    relay.wait("the relay to hold version 2", 90, |r| {
        r.status()["masters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["version"] == "2" && m["complete"] == true)
    });
    let secs = started.elapsed().as_secs_f64();
    let wan = f.wan.bytes() - wan_before;
    let rate = wan as f64 * 8.0 / secs;
    eprintln!(
        "lunchtime push: {new_bytes} new stored bytes, {wan} WAN bytes in {secs:.1} s: {:.2} Mbit/s under a 4 Mbit/s cap",
        rate / 1e6
    );
    assert!(wan >= new_bytes, "{wan} < {new_bytes}");
    assert!(
        rate <= 4.0e6 * 1.05,
        "{rate} bit/s over the 4 Mbit/s emergency cap"
    );
    assert!(
        secs >= new_bytes as f64 * 8.0 / 4.0e6 * 0.9,
        "{secs} s: faster than the emergency cap allows"
    );
    assert_eq!(
        relay.n("rate_bits_per_sec"),
        3_680_000,
        "paced to 92 % of 4 Mbit/s"
    );
    // The relay's own counters say the same (UDP both ways, every overhead), once its status file
    // caught up with the transfer's last bytes.
    relay.wait("the relay's WAN counters to count the transfer", 10, |r| {
        relay_wan(r) - relay_before >= new_bytes
    });
    let counted = relay_wan(&relay) - relay_before;
    assert!(counted >= new_bytes, "{counted} < {new_bytes}");
    assert!(
        counted as f64 * 8.0 / secs <= 4.0e6 * 1.05,
        "the relay counted {counted} bytes in {secs:.1} s"
    );

    // `plan` follows it: once the relay reported holding it, nothing is left to fetch.
    let mut plan = String::new();
    for _ in 0..100 {
        plan = f.nightcast(&["plan"]);
        if plan.contains("relay: 0 B to fetch") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(plan.contains("relay: 0 B to fetch"), "{plan}");

    // The NUC gets it during the morning session and never swaps during it.
    let swaps = nuc.n("swaps");
    nuc.wait(
        "version 2 ready in `next` during the morning session",
        60,
        |a| a.s("next") == "demo 2" && a.s("next_state") == "ready",
    );
    let s = nuc.status();
    assert!(f.clock.now() < at("2030-01-08T11:40:00Z"), "{s}");
    assert_eq!(s["current"], "demo 1", "{s}");
    assert_eq!(
        s["swaps"].as_u64().unwrap(),
        swaps,
        "swapped during the session: {s}"
    );
    while f.clock.now() < at("2030-01-08T11:39:30Z") {
        let s = nuc.status();
        assert_eq!(
            s["current"], "demo 1",
            "swapped during the morning session: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // At the end of the morning session it swaps, before the deadline.
    nuc.wait("the swap after the morning session", 40, |a| {
        a.s("current") == "demo 2"
    });
    let now = f.clock.now();
    assert!(now >= at("2030-01-08T11:40:00Z"), "swapped at {now}");
    assert!(
        now < at("2030-01-08T12:10:00Z"),
        "not ready by the deadline: {now}"
    );
    nuc.wait("the afternoon session on version 2", 60, |a| {
        a.s("session").starts_with("demo 2")
    });
}
