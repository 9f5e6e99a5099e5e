//! The fleet as the DSI reads it: what deserves a look in a node's last report, in words.
//! The rows come from `db::Db::fleet`; the wording lives here, apart from the queries.

use image_tools::report::{AgentReport, RelayReport, Report};

use crate::db::FleetRow;

/// What the DSI should look at, from the last report; empty when all is well.
pub fn attention(row: &FleetRow) -> String {
    let mut out = Vec::new();
    if let Some(why) = &row.waiting {
        out.push(format!("waits for the DSI: {why}"));
    }
    match &row.status {
        Report::Relay(r) => out.extend(relay(r)),
        Report::Agent(a) => out.extend(agent(a)),
        Report::Bare => {}
    }
    if let Some(e) = row.status.last_error().filter(|e| !e.is_empty()) {
        out.push(format!("last error: {e}"));
    }
    out.join("; ")
}

fn relay(r: &RelayReport) -> Vec<String> {
    let mut out = Vec::new();
    if r.disk_full {
        out.push("DISK FULL: fetching stopped".to_owned());
    }
    if r.pinned_over_quota > 0 {
        out.push(format!(
            "QUOTA TOO SMALL by {} MB for the scheduled masters",
            r.pinned_over_quota.div_ceil(1_000_000)
        ));
    }
    if !r.agents_not_answering.is_empty() {
        out.push(format!(
            "woken, not answering: {}",
            r.agents_not_answering.join(",")
        ));
    }
    out.extend(
        r.missing
            .iter()
            .filter(|m| m.bytes > 0)
            .map(|m| format!("{}: {} MB to fetch", m.master, m.bytes.div_ceil(1_000_000))),
    );
    out.extend(r.bad_siblings.iter().map(|b| {
        format!(
            "RELAY {} sent corrupt chunks of {} (refused; set aside for a night): check that relay's disk",
            b.node, b.master
        )
    }));
    out
}

fn agent(a: &AgentReport) -> Vec<String> {
    let failed = a.failed.iter().map(|f| {
        format!(
            "FAILED here: {} ({}), not retried until it is published again",
            f.master, f.why
        )
    });
    let liars = a.bad_peers.iter().map(|b| {
        format!(
            "PEER {} sent corrupt chunks of {} (refused; it is not asked again for it): check that NUC's disk",
            b.node, b.master
        )
    });
    failed.chain(liars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::report::{Failed, Missing};

    fn row(status: Report, waiting: Option<&str>) -> FleetRow {
        FleetRow {
            site: "lyon".into(),
            node: "relay-1".into(),
            role: "relay".into(),
            enrolled_at: 0,
            last_seen: Some(0),
            holding: String::new(),
            software: String::new(),
            status,
            seat: None,
            waiting: waiting.map(str::to_owned),
        }
    }

    fn m(version: &str) -> image_tools::wire::MasterRef {
        image_tools::wire::MasterRef::new("win10", version).unwrap()
    }

    #[test]
    fn all_well_says_nothing() {
        let relay = RelayReport {
            missing: vec![Missing {
                master: m("1"),
                bytes: 0,
            }],
            ..RelayReport::default()
        };
        assert_eq!(attention(&row(Report::Relay(relay), None)), "");
        assert_eq!(
            attention(&row(Report::Agent(AgentReport::default()), None)),
            ""
        );
        assert_eq!(attention(&row(Report::Bare, None)), "");
    }

    #[test]
    fn each_problem_is_said_in_order() {
        let relay = RelayReport {
            disk_full: true,
            pinned_over_quota: 1_500_001,
            agents_not_answering: vec!["nuc-3".into()],
            missing: vec![Missing {
                master: m("2"),
                bytes: 2_000_000,
            }],
            last_error: Some("controller unreachable".into()),
            bad_siblings: vec![image_tools::report::BadPeer {
                node: "relay-0".into(),
                master: m("2"),
                at: 0,
            }],
            ..RelayReport::default()
        };
        let said = attention(&row(Report::Relay(relay), Some("2 seats are silent")));
        assert_eq!(
            said,
            "waits for the DSI: 2 seats are silent; DISK FULL: fetching stopped; \
             QUOTA TOO SMALL by 2 MB for the scheduled masters; woken, not answering: nuc-3; \
             win10 2: 2 MB to fetch; RELAY relay-0 sent corrupt chunks of win10 2 (refused; \
             set aside for a night): check that relay's disk; last error: controller unreachable"
        );
    }

    #[test]
    fn a_version_that_failed_on_a_nuc_and_a_peer_that_lied_are_named() {
        let nuc = AgentReport {
            failed: vec![Failed {
                master: m("3"),
                why: "no health signal within 120 s".into(),
                at: 0,
            }],
            bad_peers: vec![image_tools::report::BadPeer {
                node: "nuc-7".into(),
                master: m("3"),
                at: 2,
            }],
            ..AgentReport::default()
        };
        assert_eq!(
            attention(&row(Report::Agent(nuc), None)),
            "FAILED here: win10 3 (no health signal within 120 s), not retried until it is \
             published again; PEER nuc-7 sent corrupt chunks of win10 3 (refused; it is not asked \
             again for it): check that NUC's disk"
        );
    }
}
