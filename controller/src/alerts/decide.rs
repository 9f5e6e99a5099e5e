//! What deserves an alert now, and what changed since the last message: pure, `now` passed in.
//!
//! A [`Condition`] is something the DSI should act on, read from the plan's rows and the fleet's;
//! its [`Condition::key`] is stable while the condition holds (a session's key carries its
//! verdict, so "at risk" turning "late" is one condition cleared and another opened). A condition
//! whose details move (a relay's disk from 91 % to 93 %) keeps its key and is not sent again.

use std::collections::BTreeMap;

use image_tools::api::{FleetRow, NodeRole, PlanRow, Reason, Verdict};
use image_tools::report::Report;
use serde::{Deserialize, Serialize};

/// The thresholds of `[alerts]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// A relay not heard from for longer is silent.
    pub relay_silent_secs: i64,
    /// A relay whose cache fills this share of its quota (percent), or that says its disk is full.
    pub disk_full_percent: u8,
}

/// Something the DSI should act on. On the wire as `{"kind": "session", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// A session whose master will not (`late`), may not (`at_risk`) or cannot (`unknown_master`)
    /// be at its site in time; `reason`: `transfer`, `no_relay`, `relay_silent` (empty for an
    /// unknown master).
    Session {
        site: String,
        room: String,
        session: String,
        master: String,
        version: String,
        /// Unix seconds.
        start: i64,
        verdict: String,
        reason: String,
    },
    /// An enrolled relay not heard from for longer than `[alerts] relay_silent_hours`, since
    /// `last_seen` (`None`: it never reported since it enrolled at `enrolled_at`).
    RelaySilent {
        site: String,
        node: String,
        last_seen: Option<i64>,
        enrolled_at: i64,
    },
    /// A NUC on which a session's master version did not come up (its seat runs the previous one).
    MasterFailed {
        site: String,
        room: String,
        seat: String,
        node: String,
        master: String,
        version: String,
        why: String,
    },
    /// A NUC whose last report carries an error.
    NodeError {
        site: String,
        node: String,
        error: String,
    },
    /// A relay whose cache is near its quota, or whose disk is full (`full`: fetching stopped).
    DiskNearFull {
        site: String,
        node: String,
        disk_bytes: u64,
        quota_bytes: u64,
        full: bool,
    },
}

impl Condition {
    /// Stable while the condition holds: what the sent set is keyed by.
    pub fn key(&self) -> String {
        match self {
            Condition::Session {
                site,
                room,
                start,
                verdict,
                ..
            } => format!("session/{site}/{room}/{start}/{verdict}"),
            Condition::RelaySilent { site, node, .. } => format!("relay_silent/{site}/{node}"),
            Condition::MasterFailed {
                site,
                node,
                master,
                version,
                ..
            } => format!("master_failed/{site}/{node}/{master}/{version}"),
            Condition::NodeError { site, node, .. } => format!("node_error/{site}/{node}"),
            Condition::DiskNearFull { site, node, .. } => format!("disk_near_full/{site}/{node}"),
        }
    }
}

/// The conditions open at `now`, by key.
pub fn conditions(
    plan: &[PlanRow],
    fleet: &[FleetRow],
    now: i64,
    rules: &Rules,
) -> BTreeMap<String, Condition> {
    let mut out = Vec::new();
    for row in plan {
        out.extend(session(row));
        out.extend(row.failed.iter().map(|f| Condition::MasterFailed {
            site: row.site.to_string(),
            room: row.room.to_string(),
            seat: f.seat.clone(),
            node: f.node.clone(),
            master: row.master.to_string(),
            version: row.version.to_string(),
            why: f.why.clone(),
        }));
    }
    for node in fleet {
        // A node that only asked to enrol is the console's business, not an alert.
        let Some(enrolled_at) = node.enrolled_at else {
            continue;
        };
        let (site, name) = (node.site.to_string(), node.node.to_string());
        match node.role {
            NodeRole::Relay => {
                let heard = node.last_seen.unwrap_or(enrolled_at);
                if now - heard > rules.relay_silent_secs {
                    out.push(Condition::RelaySilent {
                        site: site.clone(),
                        node: name.clone(),
                        last_seen: node.last_seen,
                        enrolled_at,
                    });
                }
                if let Report::Relay(r) = &node.status {
                    let near = r.quota_bytes > 0
                        && u128::from(r.disk_bytes) * 100
                            >= u128::from(r.quota_bytes) * u128::from(rules.disk_full_percent);
                    if r.disk_full || near {
                        out.push(Condition::DiskNearFull {
                            site,
                            node: name,
                            disk_bytes: r.disk_bytes,
                            quota_bytes: r.quota_bytes,
                            full: r.disk_full,
                        });
                    }
                }
            }
            NodeRole::Agent => {
                if let Some(error) = node.status.last_error().filter(|e| !e.is_empty()) {
                    out.push(Condition::NodeError {
                        site,
                        node: name,
                        error: error.to_owned(),
                    });
                }
            }
        }
    }
    out.into_iter().map(|c| (c.key(), c)).collect()
}

/// A plan row's condition, if its session is not on time.
fn session(row: &PlanRow) -> Option<Condition> {
    let (verdict, reason) = match &row.verdict {
        Verdict::OnTime { .. } => return None,
        Verdict::AtRisk { reason, .. } => ("at_risk", reason_word(reason)),
        Verdict::Late { reason, .. } => ("late", reason_word(reason)),
        Verdict::UnknownMaster {} => ("unknown_master", ""),
    };
    Some(Condition::Session {
        site: row.site.to_string(),
        room: row.room.to_string(),
        session: row.session.clone(),
        master: row.master.to_string(),
        version: row.version.to_string(),
        start: row.start,
        verdict: verdict.to_owned(),
        reason: reason.to_owned(),
    })
}

fn reason_word(reason: &Reason) -> &'static str {
    match reason {
        Reason::Transfer => "transfer",
        Reason::NoRelay => "no_relay",
        Reason::RelaySilent { .. } => "relay_silent",
    }
}

/// Whether a condition opened or cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Opened,
    Resolved,
}

/// One difference between what was last sent on a channel and what holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub key: String,
    /// For a resolved one: the condition as it was sent.
    pub condition: Condition,
}

/// What to send: the conditions open now that were not sent (opened), and those sent that no
/// longer hold (resolved), resolved first, each in key order. Empty: nothing to send.
pub fn diff(sent: &BTreeMap<String, Condition>, now: &BTreeMap<String, Condition>) -> Vec<Change> {
    let resolved = sent
        .iter()
        .filter(|(k, _)| !now.contains_key(*k))
        .map(|(k, c)| (ChangeKind::Resolved, k, c));
    let opened = now
        .iter()
        .filter(|(k, _)| !sent.contains_key(*k))
        .map(|(k, c)| (ChangeKind::Opened, k, c));
    resolved
        .chain(opened)
        .map(|(kind, key, condition)| Change {
            kind,
            key: key.clone(),
            condition: condition.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::api::FailedOn;
    use image_tools::report::{AgentReport, RelayReport};

    const HOUR: i64 = 3600;
    const RULES: Rules = Rules {
        relay_silent_secs: 24 * HOUR,
        disk_full_percent: 90,
    };

    fn plan(start: i64, verdict: Verdict) -> PlanRow {
        PlanRow {
            site: "lyon".parse().unwrap(),
            session: "1".into(),
            room: "salle-1".parse().unwrap(),
            master: "win10".parse().unwrap(),
            version: "1".parse().unwrap(),
            start,
            deadline: start - 2 * HOUR,
            new_bytes: 8 << 20,
            cumulative_bytes: 8 << 20,
            failed: Vec::new(),
            verdict,
        }
    }

    fn late(reason: Reason) -> Verdict {
        Verdict::Late {
            shortfall_bytes: 8 << 20,
            override_secs: 10,
            reason,
        }
    }

    fn node(role: NodeRole, last_seen: Option<i64>, status: Report) -> FleetRow {
        FleetRow {
            site: "lyon".parse().unwrap(),
            node: match role {
                NodeRole::Relay => "relay-1",
                NodeRole::Agent => "nuc-1",
            }
            .parse()
            .unwrap(),
            role,
            enrolled_at: Some(0),
            last_seen,
            holding: String::new(),
            seat: String::new(),
            waiting: None,
            state: String::new(),
            software: String::new(),
            attention: String::new(),
            status,
            mac: None,
            via: None,
            key: None,
        }
    }

    fn keys(c: &BTreeMap<String, Condition>) -> Vec<&str> {
        c.keys().map(String::as_str).collect()
    }

    #[test]
    fn a_late_or_at_risk_session_is_a_condition_and_an_on_time_one_is_not() {
        let rows = [
            plan(1000, late(Reason::NoRelay)),
            plan(
                2000,
                Verdict::AtRisk {
                    ready_at: 0,
                    slack_secs: 0,
                    needed_secs: 0,
                    reason: Reason::RelaySilent { since: None },
                },
            ),
            plan(
                3000,
                Verdict::OnTime {
                    ready_at: 0,
                    night: None,
                },
            ),
        ];
        let c = conditions(&rows, &[], 0, &RULES);
        assert_eq!(
            keys(&c),
            [
                "session/lyon/salle-1/1000/late",
                "session/lyon/salle-1/2000/at_risk"
            ]
        );
        let Condition::Session { reason, .. } = &c["session/lyon/salle-1/1000/late"] else {
            panic!("{c:?}");
        };
        assert_eq!(reason, "no_relay");
    }

    #[test]
    fn a_relay_is_silent_only_after_the_threshold_counting_from_enrolment_if_it_never_reported() {
        let heard = node(NodeRole::Relay, Some(10), Report::Bare);
        let never = FleetRow {
            node: "relay-2".parse().unwrap(),
            ..node(NodeRole::Relay, None, Report::Bare)
        };
        let at = |now| {
            keys(&conditions(
                &[],
                &[heard.clone(), never.clone()],
                now,
                &RULES,
            ))
            .len()
        };
        assert_eq!(at(24 * HOUR), 0);
        assert_eq!(
            at(24 * HOUR + 1),
            1,
            "relay-2 enrolled at 0 and never reported"
        );
        assert_eq!(at(24 * HOUR + 11), 2);
        let c = conditions(&[], &[never], 24 * HOUR + 1, &RULES);
        assert_eq!(keys(&c), ["relay_silent/lyon/relay-2"]);
    }

    #[test]
    fn a_failed_master_a_nuc_error_and_a_full_disk_are_conditions() {
        let mut row = plan(
            1000,
            Verdict::OnTime {
                ready_at: 0,
                night: None,
            },
        );
        row.failed = vec![FailedOn {
            node: "nuc-3".into(),
            seat: "pc-3".into(),
            why: "no health signal within 120 s".into(),
            at: 5,
        }];
        let nuc = node(
            NodeRole::Agent,
            Some(0),
            Report::Agent(AgentReport {
                last_error: Some("relay unreachable".into()),
                ..AgentReport::default()
            }),
        );
        let relay = |disk_bytes, disk_full| {
            node(
                NodeRole::Relay,
                Some(0),
                Report::Relay(RelayReport {
                    disk_bytes,
                    quota_bytes: 100,
                    disk_full,
                    ..RelayReport::default()
                }),
            )
        };
        let c = conditions(&[row], &[nuc, relay(90, false)], 0, &RULES);
        assert_eq!(
            keys(&c),
            [
                "disk_near_full/lyon/relay-1",
                "master_failed/lyon/nuc-3/win10/1",
                "node_error/lyon/nuc-1"
            ]
        );
        assert!(conditions(&[], &[relay(89, false)], 0, &RULES).is_empty());
        assert_eq!(
            keys(&conditions(&[], &[relay(0, true)], 0, &RULES)),
            ["disk_near_full/lyon/relay-1"]
        );
    }

    #[test]
    fn a_pending_node_is_no_condition() {
        let mut asking = node(NodeRole::Relay, None, Report::Bare);
        asking.enrolled_at = None;
        assert!(conditions(&[], &[asking], 100 * HOUR, &RULES).is_empty());
    }

    #[test]
    fn each_change_is_sent_once_and_an_unchanged_condition_never() {
        let now = conditions(&[plan(1000, late(Reason::NoRelay))], &[], 0, &RULES);
        let first = diff(&BTreeMap::new(), &now);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].kind, ChangeKind::Opened);
        assert_eq!(first[0].key, "session/lyon/salle-1/1000/late");
        // Sent: the same conditions again are nothing to send, even with other details.
        assert!(diff(&now, &now).is_empty());
        let moved = conditions(
            &[plan(1000, late(Reason::RelaySilent { since: Some(5) }))],
            &[],
            0,
            &RULES,
        );
        assert!(diff(&now, &moved).is_empty(), "same session, same verdict");
        // Cleared: resolved once, with the condition as it was sent.
        let gone = diff(&now, &BTreeMap::new());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].kind, ChangeKind::Resolved);
        assert_eq!(gone[0].condition, now["session/lyon/salle-1/1000/late"]);
        assert!(diff(&BTreeMap::new(), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_verdict_that_changes_resolves_the_old_condition_and_opens_the_new_one() {
        let was = conditions(&[plan(1000, late(Reason::NoRelay))], &[], 0, &RULES);
        let risk = Verdict::AtRisk {
            ready_at: 0,
            slack_secs: 0,
            needed_secs: 0,
            reason: Reason::RelaySilent { since: None },
        };
        let is = conditions(&[plan(1000, risk)], &[], 0, &RULES);
        let d = diff(&was, &is);
        let kinds: Vec<_> = d.iter().map(|c| (c.kind, c.key.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (ChangeKind::Resolved, "session/lyon/salle-1/1000/late"),
                (ChangeKind::Opened, "session/lyon/salle-1/1000/at_risk"),
            ]
        );
    }
}
