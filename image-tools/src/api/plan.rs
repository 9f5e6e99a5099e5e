//! The delivery plan, and daytime overrides.

use serde::{Deserialize, Serialize};

use crate::ids::{MasterName, MasterVersion, RoomName, SiteId};

/// A row of `GET /v1/plan`: one upcoming session of a site, what it adds to fetch, and whether
/// its master will be there in time. Rows come per site, earliest deadline first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRow {
    pub site: SiteId,
    /// The session's id (as `GET /v1/sessions` numbers it), as a string.
    pub session: String,
    pub room: RoomName,
    pub master: MasterName,
    pub version: MasterVersion,
    /// Unix seconds.
    pub start: i64,
    /// When the master must be at the site.
    pub deadline: i64,
    /// Bytes this session adds to what the site must fetch (shared bytes counted once).
    pub new_bytes: u64,
    /// Bytes the site must fetch for this and every earlier-deadline session.
    pub cumulative_bytes: u64,
    /// The seats of the session's room whose NUC could not bring this master version up (they
    /// run the previous one); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<super::FailedOn>,
    /// On the wire as `"verdict": "on_time", "detail": {...}`.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Whether a session's master will be at its site in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    /// Ready at `ready_at`, in the night that started on `night` (local `YYYY-MM-DD`; `None` if
    /// the site already holds it).
    OnTime {
        ready_at: i64,
        night: Option<String>,
    },
    /// Ready in time by the numbers (at `ready_at`, the transfer taking `needed_secs` of window
    /// time with `slack_secs` to spare), but uncertain for `reason`: the transfer needs too large
    /// a share of the window time left (`transfer`), or the site's relay is silent.
    AtRisk {
        ready_at: i64,
        slack_secs: i64,
        #[serde(default)]
        needed_secs: i64,
        #[serde(default)]
        reason: Reason,
    },
    /// `shortfall_bytes` will still be missing at the deadline; a daytime override of
    /// `override_secs` at the site's cap fixes it, once the site has a relay that answers
    /// (`reason`: `no_relay`, every byte is missing; `relay_silent`; `transfer`, the bytes alone).
    Late {
        shortfall_bytes: u64,
        override_secs: i64,
        #[serde(default)]
        reason: Reason,
    },
    /// The master version is not in the catalogue.
    UnknownMaster {},
}

/// Why a session is at risk or late. On the wire as `{"kind": "relay_silent", "since": ...}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The bytes to move against the night-window time left at the site's rate.
    #[default]
    Transfer,
    /// No relay is enrolled at the site: nothing reaches its rooms.
    NoRelay,
    /// The site's relay has not been heard from since `since` (Unix seconds; `None`: it never
    /// reported).
    RelaySilent { since: Option<i64> },
}

/// `POST /v1/overrides`: lets a site's relay fetch a master outside its night windows for
/// `hours` (1 to 72, default 4). With a `deadline`, an emergency push: the relay paces to the
/// site's emergency cap in the daytime, and the answer says, per room running the master, whether
/// every NUC will have it by then. `all_sites` (instead of `site`): every site whose calendar runs
/// the master from now on. `dry_run`: the same answer, nothing stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_sites: bool,
    pub master: MasterName,
    pub version: MasterVersion,
    /// Why: kept with the override, shown in `override list`.
    pub reason: String,
    /// Who asks.
    #[serde(default = "unknown")]
    pub by: String,
    #[serde(default = "four")]
    pub hours: u64,
    /// When every NUC of the rooms running the master must run it, in each site's time zone:
    /// `HH:MM` (today, the site's today) or `YYYY-MM-DD HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

fn unknown() -> String {
    "unknown".to_owned()
}

fn four() -> u64 {
    4
}

/// The answer to [`NewOverride`]: the first override recorded (`id` 0 for a dry run), every one
/// recorded (one per site), and with a deadline, the verdict per room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideMade {
    pub id: i64,
    /// Unix seconds.
    pub until: i64,
    #[serde(default)]
    pub made: Vec<OverrideInfo>,
    #[serde(default)]
    pub rooms: Vec<PushRoom>,
}

/// A row of `GET /v1/overrides`: an override in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideInfo {
    pub id: i64,
    pub site: SiteId,
    pub master: MasterName,
    pub version: MasterVersion,
    pub reason: String,
    pub by: String,
    pub created_at: i64,
    pub until: i64,
    /// An emergency push's deadline (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
}

/// A row of `GET /v1/pushes` (and of [`OverrideMade::rooms`]): will every NUC of a room running
/// a pushed master version have it in use by the push's deadline?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRoom {
    pub site: SiteId,
    pub room: RoomName,
    pub master: MasterName,
    pub version: MasterVersion,
    /// Unix seconds.
    pub deadline: i64,
    /// Bytes the site's relay still lacks, and when it should hold them at the rate it paces to
    /// (`cap_mbit`: the site's emergency cap, else its night cap).
    pub relay_missing_bytes: u64,
    pub relay_ready_at: i64,
    pub cap_mbit: u64,
    /// Bytes the room's NUCs still lack, together (they cross the site's LAN after the relay
    /// holds them, at `lan_mbit`).
    pub lan_bytes: u64,
    pub lan_mbit: u64,
    /// When the last NUC of the room runs it (a NUC swaps only between sessions); `None`: some
    /// NUC never will as things stand (no relay at the site).
    pub ready_at: Option<i64>,
    /// The NUCs of the room, each with when it will run the version and why then.
    pub nucs: Vec<PushNuc>,
    #[serde(flatten)]
    pub verdict: PushVerdict,
}

/// One NUC of a [`PushRoom`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushNuc {
    pub seat: String,
    /// Empty: no NUC at the seat.
    pub node: String,
    /// When it will run the version (Unix seconds); `None`: never, as things stand.
    pub runs_at: Option<i64>,
    /// Why then: `holds` (it holds the version already), `transfer` (the transfers end then,
    /// between sessions), `session_end` (it has it during a session and swaps at its end),
    /// `no_nuc` (an empty seat), `no_relay` (nothing reaches the site).
    pub why: String,
    pub in_time: bool,
}

/// On the wire as `"verdict": "ready", "detail": {...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum PushVerdict {
    /// Every NUC runs it by the deadline with room to spare.
    Ready {},
    /// Every NUC by the deadline, but the transfer needs more than the risk share of the time
    /// left, or the relay is silent (`why`).
    AtRisk { why: String },
    /// Some NUCs will not: `nucs` says which, and when they will.
    Late {},
}
