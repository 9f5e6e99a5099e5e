//! What a relay or a NUC tells upstream about itself: one typed report per role, sent in
//! `Control::Report` and kept by the controller for the fleet view.
//!
//! The relay forwards its agents' reports as they are; the controller records the relay's own and
//! the forwarded ones and words what deserves a look (`controller::fleet`). Both ends use these
//! types, so a renamed field is a compile error, not a fleet view that quietly says nothing.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::profile::{Profile, Source};
use crate::wire::MasterRef;

/// A node's report: who it says it is (the receiver trusts its certificate instead when they
/// differ, except for a relay forwarding its agents), what it holds complete, and its role's
/// details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: NodeId,
    /// Its software version (`CARGO_PKG_VERSION`).
    pub software: String,
    /// The master versions it holds complete and verified.
    pub holding: Vec<MasterRef>,
    pub report: Report,
}

/// The role-specific part of a report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// Only what it holds (a one-shot `fetch`, or a row recorded before reports were typed).
    #[default]
    Bare,
    Relay(RelayReport),
    Agent(AgentReport),
}

impl Report {
    /// What it is doing, in words ("idle", "fetching win10 2", "running win10 2 ...").
    pub fn state(&self) -> &str {
        match self {
            Report::Bare => "",
            Report::Relay(r) => &r.state,
            Report::Agent(a) => &a.state,
        }
    }

    pub fn last_error(&self) -> Option<&str> {
        match self {
            Report::Bare => None,
            Report::Relay(r) => r.last_error.as_deref(),
            Report::Agent(a) => a.last_error.as_deref(),
        }
    }
}

/// A relay's disk, WAN and progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayReport {
    /// "idle", "fetching NAME VERSION", "waiting for the window at ...".
    pub state: String,
    /// Unix time at the relay when it wrote the report.
    pub time: i64,
    pub disk_bytes: u64,
    pub quota_bytes: u64,
    /// Bytes of the chunks the plan needs kept.
    pub pinned_bytes: u64,
    /// How far those exceed the quota (0: they fit).
    pub pinned_over_quota: u64,
    pub disk_full: bool,
    /// WAN bytes (UDP, both ways, every overhead) while its window was open / closed.
    pub wan_bytes_open: u64,
    pub wan_bytes_closed: u64,
    pub wan_bytes_this_window: u64,
    pub wan_bits_per_sec: u64,
    pub fetched_bytes: u64,
    pub served_bytes: u64,
    /// Chunks it found corrupt on its disk and dropped.
    pub corrupt_dropped: u64,
    /// NUCs it woke that did not report since.
    pub agents_not_answering: Vec<String>,
    /// What each planned master version still lacks.
    pub missing: Vec<Missing>,
    pub last_error: Option<String>,
    /// The site's other relays it set aside for sending chunks that are not what their ids say
    /// (each refused before use). New in this version: kept last, defaulted when absent.
    #[serde(default)]
    pub bad_siblings: Vec<BadPeer>,
}

/// A planned master version and the bytes the relay still has to fetch for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    pub master: MasterRef,
    pub bytes: u64,
}

/// A NUC's seat, session and workstation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    /// "ready", "running win10 2", "spare", "waiting for the relay"...
    pub state: String,
    /// "room/seat", or empty for a spare.
    pub seat: String,
    /// The master versions its seat's sessions need.
    pub needs: Vec<MasterRef>,
    /// The VM's state ("running", "stopped"...).
    pub vm: String,
    /// The version being prepared next, if any, and how far it is.
    pub next: Option<MasterRef>,
    pub next_state: String,
    /// Workstation resets since the agent started, and the last one (unix time).
    pub resets: u64,
    pub last_reset: Option<i64>,
    pub free_disk_bytes: u64,
    /// Its MAC address, for the relay's Wake-on-LAN.
    pub mac: Option<String>,
    /// Versions that failed to come up on this NUC and are not retried there.
    pub failed: Vec<Failed>,
    pub last_error: Option<String>,
    /// Peers of its site it dropped for sending chunks that are not what their ids say (each
    /// refused before use). New in this version: kept last, defaulted when absent (stored JSON).
    #[serde(default)]
    pub bad_peers: Vec<BadPeer>,
    /// The last of the DSI's orders (`wire::Order::id`) it carried out; 0: none.
    #[serde(default)]
    pub orders_done: u64,
    /// The machine profile of its last VM start, and where it came from. New in this version:
    /// kept last, defaulted when absent.
    /// Boxed: the largest part of a report, which most readers skip.
    #[serde(default)]
    pub profile: Option<Box<VmProfile>>,
}

/// The machine profile a NUC's last VM start used: for which master version, from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmProfile {
    pub master: MasterRef,
    pub from: Source,
    pub profile: Profile,
}

/// A peer that sent a corrupt chunk of a master version, and when (unix time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadPeer {
    pub node: String,
    pub master: MasterRef,
    pub at: i64,
}

/// A master version that did not come up on a NUC, why, and when (unix time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub master: MasterRef,
    pub why: String,
    pub at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode_to_vec, Control, Frame};

    fn m(name: &str, version: &str) -> MasterRef {
        MasterRef::new(name, version).unwrap()
    }

    #[test]
    fn reports_cross_the_wire_unchanged() {
        for report in [
            Report::Bare,
            Report::Relay(RelayReport {
                state: "fetching win10 2".into(),
                missing: vec![Missing {
                    master: m("win10", "2"),
                    bytes: 7,
                }],
                agents_not_answering: vec!["nuc-3".into()],
                last_error: Some("controller unreachable".into()),
                ..RelayReport::default()
            }),
            Report::Agent(AgentReport {
                needs: vec![m("win10", "2")],
                next: Some(m("win10", "3")),
                mac: Some("52:54:00:12:34:56".into()),
                failed: vec![Failed {
                    master: m("win10", "3"),
                    why: "no health signal within 120 s".into(),
                    at: 1,
                }],
                bad_peers: vec![BadPeer {
                    node: "nuc-7".into(),
                    master: m("win10", "3"),
                    at: 2,
                }],
                profile: Some(Box::new(VmProfile {
                    master: m("win10", "2"),
                    from: Source::Catalogue,
                    profile: Profile {
                        nic: None,
                        memory: crate::profile::Amount::Percent(60),
                        ..Profile::default()
                    },
                })),
                ..AgentReport::default()
            }),
        ] {
            let status = Status {
                node_id: NodeId::new("nuc-1").unwrap(),
                software: "0.1.0".into(),
                holding: vec![m("win10", "1")],
                report,
            };
            let bytes =
                encode_to_vec(&Frame::Control(Control::Report(Box::new(status.clone())))).unwrap();
            let (frame, used) = decode(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(frame, Frame::Control(Control::Report(Box::new(status))));
        }
    }

    #[test]
    fn a_report_naming_an_unsafe_node_or_master_is_refused_whole() {
        // The same report with a node id or a version that would escape a directory: postcard
        // carries the string, the newtype refuses it when the frame is read.
        for (node, version) in [("nuc-zz", "1"), ("nuc-1", "zz")] {
            let good = Status {
                node_id: NodeId::new(node).unwrap(),
                software: String::new(),
                holding: vec![m("win10", version)],
                report: Report::Bare,
            };
            let mut bytes =
                encode_to_vec(&Frame::Control(Control::Report(Box::new(good)))).unwrap();
            assert!(decode(&bytes).is_ok());
            let at = bytes.windows(2).position(|w| w == b"zz").unwrap();
            bytes[at..at + 2].copy_from_slice(b"/z");
            assert!(decode(&bytes).is_err());
        }
    }
}
