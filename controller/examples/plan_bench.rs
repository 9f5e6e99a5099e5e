//! Planner scale bench: a synthetic region of 1,000 sites (5 rooms each, 50 sessions per room over a
//! 16-week term) and 200 masters that share chunks through common base and application layers.
//! Prints a markdown table: what was planned, how long the whole plan took, the verdicts, peak RSS;
//! then, from the same plan, the `/metrics` rendering, and the web console's readiness board
//! against the plan's JSON as `GET /v1/plan` (what `nightcast plan` reads) writes it.
//!
//!     cargo run --release -p nightcast-controller --example plan_bench [SITES]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::Instant;

use image_tools::testimage::Rng;
use image_tools::windows::Schedule;
use image_tools::wire::MasterRef;
use nightcast_controller::metrics::{render, Facts, Metrics, NodeSeen, Verdicts};
use nightcast_controller::plan::{plan_site, Classes, Relay, Session, Settings, Site, Verdict};

const GB: u64 = 1_000_000_000;

fn main() {
    let sites_n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut rng = Rng::new(2026);

    // Classes: 20 OS bases (12-20 GB each, 8 classes apiece), 400 application layers (0.5-4 GB),
    // and one class of its own per master (0.2-1 GB).
    let mut classes = Classes::default();
    let add = |bytes: u64, classes: &mut Classes| {
        classes.bytes.push(bytes);
        classes.bytes.len() as u32 - 1
    };
    let bases: Vec<Vec<u32>> = (0..20)
        .map(|_| {
            (0..8)
                .map(|_| add(rng.range(12, 20) * GB / 8, &mut classes))
                .collect()
        })
        .collect();
    let apps: Vec<u32> = (0..400)
        .map(|_| add(rng.range(5, 40) * GB / 10, &mut classes))
        .collect();
    let mut masters = Vec::new();
    for m in 0..200 {
        let mut list = bases[rng.range(0, 20) as usize].clone();
        for _ in 0..rng.range(3, 7) {
            list.push(apps[rng.range(0, 400) as usize]);
        }
        list.sort_unstable();
        list.dedup();
        list.push(add(rng.range(2, 10) * GB / 10, &mut classes));
        let key = MasterRef::new(&format!("master-{m:03}"), "1").expect("a valid name");
        classes.masters.insert(key.clone(), list);
        masters.push(key);
    }

    let zones = [
        "Europe/Paris",
        "Europe/London",
        "America/New_York",
        "America/Los_Angeles",
        "Asia/Tokyo",
        "Australia/Sydney",
        "America/Sao_Paulo",
        "Africa/Nairobi",
    ];
    let now = 1_795_000_000; // a Monday in November 2026
    let term = 16 * 7 * 86_400;
    let mut sites = Vec::new();
    let mut sessions_by_site = Vec::new();
    let mut sessions_total = 0;
    for s in 0..sites_n {
        let windows = if s % 3 == 0 {
            vec![
                "20:00-07:00".parse().unwrap(),
                "12:00-14:00".parse().unwrap(),
            ]
        } else {
            vec!["22:00-06:00".parse().unwrap()]
        };
        let schedule = Schedule::new(zones[s % zones.len()], windows).unwrap();
        let used: Vec<_> = (0..15)
            .map(|_| masters[rng.range(0, 200) as usize].clone())
            .collect();
        let holds = used[..3].to_vec();
        let mut sessions = Vec::new();
        for room in 0..5 {
            for k in 0..50 {
                let start = now + 86_400 + (term / 50) * k + rng.range(0, 86_400) as i64;
                sessions.push(Session {
                    id: format!("s{s}-{room}-{k}"),
                    room: format!("room-{room}"),
                    master: used[rng.range(0, 15) as usize].clone(),
                    start,
                });
            }
        }
        sessions_total += sessions.len();
        sites.push(Site {
            name: format!("site-{s:04}"),
            schedule,
            cap_bps: rng.range(10, 100) * 1_000_000,
            holds,
            relay: Relay::Enrolled {
                last_seen: Some(now),
            },
        });
        sessions_by_site.push(sessions);
    }

    let settings = Settings::default();
    let started = Instant::now();
    let mut counts = [0usize; 4];
    let mut rows_total = 0;
    let mut verdicts = Vec::new();
    let mut plan = Vec::new();
    for (site, sessions) in sites.iter().zip(&sessions_by_site) {
        let mut v = Verdicts {
            site: site.name.clone(),
            ..Verdicts::default()
        };
        let rows = plan_site(now, site, sessions, &classes, &settings);
        for row in &rows {
            rows_total += 1;
            let (i, n) = match &row.verdict {
                Verdict::OnTime { .. } => (0, &mut v.on_time),
                Verdict::AtRisk { .. } => (1, &mut v.at_risk),
                Verdict::Late { .. } => (2, &mut v.late),
                Verdict::Unknown => (3, &mut v.unknown_master),
            };
            counts[i] += 1;
            *n += 1;
        }
        verdicts.push(v);
        plan.push((site.name.clone(), rows));
    }
    let elapsed = started.elapsed();
    // The controller's /metrics for this region: the verdicts above, a relay and 25 NUCs a site.
    let nodes = sites
        .iter()
        .flat_map(|site| {
            (0..26).map(move |i| NodeSeen {
                site: site.name.clone(),
                node: if i == 0 {
                    "relay".into()
                } else {
                    format!("nuc-{i:02}")
                },
                role: if i == 0 { "relay" } else { "agent" }.into(),
                last_seen: Some(now - i),
            })
        })
        .collect();
    let facts = Facts {
        verdicts,
        nodes,
        ..Facts::default()
    };
    let rendering = Instant::now();
    let text = render(&Metrics::default(), &facts);
    let render_time = rendering.elapsed();
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l[6..].trim().to_owned())
        })
        .unwrap_or_default();

    println!("| sites | rooms | sessions | masters | chunk classes | plan time | per site | on time | at risk | late | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {:.0} ms | {:.1} us | {} | {} | {} | {} |",
        sites.len(),
        sites.len() * 5,
        sessions_total,
        masters.len(),
        classes.bytes.len(),
        elapsed.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() * 1e6 / sites.len() as f64,
        counts[0],
        counts[1],
        counts[2],
        rss
    );
    assert_eq!(rows_total, sessions_total);
    println!(
        "\n/metrics of this region ({} nodes): {} KiB rendered in {:.1} ms (after the plan above)",
        facts.nodes.len(),
        text.len() >> 10,
        render_time.as_secs_f64() * 1000.0
    );
    board_vs_json(&plan, &zones, now);
    alerts_of(&plan, now);
}

/// The board and the plan's JSON from the same plan, each timed from the planner's rows: the
/// board (the coming week's rows as the API types, its rooms worst first, folded, as HTML)
/// against `GET /v1/plan`'s answer (every row as the API types, then JSON as the admin API
/// writes it).
fn board_vs_json(
    plan: &[(String, Vec<nightcast_controller::plan::Row>)],
    zones: &[&str],
    now: i64,
) {
    use nightcast_controller::console::{
        routes,
        session::Session,
        users::{Role, User},
    };
    // The fastest of 3 (JSON) and of 5 (board): the machine is shared.
    let (mut json_time, mut json, mut all) = (std::time::Duration::MAX, String::new(), 0);
    for _ in 0..3 {
        let started = Instant::now();
        let rows = nightcast_controller::api::plan_rows(plan, &[], i64::MAX).unwrap();
        all = rows.len();
        json = serde_json::to_value(&rows).unwrap().to_string();
        json_time = json_time.min(started.elapsed());
    }

    let user = User {
        name: "dsi".into(),
        role: Role::Admin,
        sites: Vec::new(),
    };
    let session = Session {
        user: user.clone(),
        stamp: String::new(),
        csrf: "0".repeat(64),
        created: now,
        last_used: now,
    };
    let site_zones: std::collections::HashMap<String, String> = plan
        .iter()
        .enumerate()
        .map(|(i, (site, _))| (site.clone(), zones[i % zones.len()].to_owned()))
        .collect();
    let horizon = now + nightcast_controller::console::board::HORIZON_SECS;
    let (mut board_time, mut html, mut rows) =
        (std::time::Duration::MAX, String::new(), Vec::new());
    for _ in 0..5 {
        let started = Instant::now();
        rows = nightcast_controller::api::plan_rows(plan, &[], horizon).unwrap();
        html = routes::render_board(&rows, &site_zones, &user, &session, now);
        board_time = board_time.min(started.elapsed());
    }
    println!("\n| from the same plan | rows | time (fastest of 3 / 5) | bytes |");
    println!("|---|---|---|---|");
    println!(
        "| `GET /v1/plan` JSON (`nightcast plan`) | {all} | {:.1} ms | {} |",
        json_time.as_secs_f64() * 1000.0,
        json.len()
    );
    println!(
        "| console board, the coming 7 days (HTML) | {} | {:.1} ms | {} |",
        rows.len(),
        board_time.as_secs_f64() * 1000.0,
        html.len()
    );
}

/// The alerts' check from the same plan (the planner's time above comes first): the conditions
/// of every row, the diff against what a channel was told, and the message in words. A first
/// check (nothing told yet: every condition opened, the largest message) and a steady one (all
/// told already: nothing to send, the every-minute case).
fn alerts_of(plan: &[(String, Vec<nightcast_controller::plan::Row>)], now: i64) {
    use nightcast_controller::alerts::{decide, message::Alert};
    let rules = decide::Rules {
        relay_silent_secs: 24 * 3600,
        disk_full_percent: 90,
    };
    let zone = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let rows = nightcast_controller::api::plan_rows(plan, &[], i64::MAX).unwrap();
    let told = std::collections::BTreeMap::new();
    let (mut first, mut steady) = (std::time::Duration::MAX, std::time::Duration::MAX);
    let (mut open, mut body) = (0, 0);
    for _ in 0..3 {
        let started = Instant::now();
        let now_open = decide::conditions(&rows, &[], now, &rules);
        let changes = decide::diff(&told, &now_open);
        body = serde_json::to_vec(&Alert::changes(now, &changes, &zone))
            .unwrap()
            .len();
        first = first.min(started.elapsed());
        open = now_open.len();
        let started = Instant::now();
        let again = decide::conditions(&rows, &[], now, &rules);
        assert!(decide::diff(&now_open, &again).is_empty());
        steady = steady.min(started.elapsed());
    }
    println!(
        "\nalerts from this plan ({} rows, {open} conditions open): first check {:.1} ms (a \
         {} KiB webhook body), a check with nothing new {:.1} ms (fastest of 3)",
        rows.len(),
        first.as_secs_f64() * 1000.0,
        body >> 10,
        steady.as_secs_f64() * 1000.0
    );
}
