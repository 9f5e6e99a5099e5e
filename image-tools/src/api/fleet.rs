//! The fleet (relays and NUCs, pending enrolments included), node approval, revocation and
//! removal, and enrolment tokens.

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, SiteId};
use crate::report::Report;

/// What an enrolled node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Relay,
    Agent,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Relay => "relay",
            NodeRole::Agent => "agent",
        }
    }
}

impl std::str::FromStr for NodeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<NodeRole, String> {
        match s {
            "relay" => Ok(NodeRole::Relay),
            "agent" => Ok(NodeRole::Agent),
            other => Err(format!("role {other:?} is neither relay nor agent")),
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row of `GET /v1/fleet`: an enrolled node, or one that asked to enrol (then `state` is
/// `pending` or `approved`, and `mac`, `via` and `key` say which machine it is).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRow {
    pub site: SiteId,
    pub node: NodeId,
    pub role: NodeRole,
    /// Unix seconds; `None` while it has only asked.
    pub enrolled_at: Option<i64>,
    /// Its last report (or its request); `None`: never heard from.
    pub last_seen: Option<i64>,
    /// `master version, ...` of what it reported holding.
    pub holding: String,
    /// An agent's `room/seat`, `spare`; empty for a relay or a request.
    pub seat: String,
    /// Why a spare is not taking over a silent seat by itself.
    pub waiting: Option<String>,
    /// The `state` of its last report, or `pending` / `approved` for a request.
    pub state: String,
    /// Its software version, from its last report (empty for a request).
    #[serde(default)]
    pub software: String,
    /// What the DSI should look at, in words; empty when all is well.
    pub attention: String,
    /// Its last report, as it sent it (`bare` before its first, and for a request).
    pub status: Report,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Which relay passed the request on (or `direct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The first 16 hex digits of BLAKE3 of the key the approval is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The answer to `POST /v1/nodes/NODE/approve`: the request let in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approved {
    pub node: NodeId,
    pub site: SiteId,
    pub role: NodeRole,
    pub mac: String,
    pub key: String,
}

/// The answer to `POST /v1/nodes/NODE/revoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub node: NodeId,
    pub certificates_revoked: u64,
}

/// The answer to `POST /v1/nodes/NODE/reset|rollback|wake`: the order recorded; the site's relay
/// and the NUC take it with their next plan (the NUC reports its id once carried out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ordered {
    pub node: NodeId,
    pub site: SiteId,
    pub order: u64,
    pub kind: crate::wire::OrderKind,
}

/// The answer to `DELETE /v1/nodes/NODE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub node: NodeId,
    pub removed: bool,
}

/// `POST /v1/tokens`: a one-time token that enrols one relay or agent of `site`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub role: NodeRole,
    pub site: SiteId,
    /// How long the token is valid (1 hour to the controller's maximum).
    #[serde(default = "a_day")]
    pub ttl_hours: u64,
}

fn a_day() -> u64 {
    24
}

/// The answer to [`NewToken`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub token: String,
}
