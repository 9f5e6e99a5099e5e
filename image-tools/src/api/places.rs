//! Sites (windows, WAN cap, takeover policy, opening for new NUCs), rooms and seats.

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, RoomName, SeatName, SiteId};

/// The night windows of a site added without any.
pub const DEFAULT_WINDOWS: &str = "22:00-06:00";

/// What happens when a seat's NUC goes silent: `auto`, a spare of the site takes the seat by
/// itself (if only one seat is silent); `confirm`, the DSI confirms with `seat replace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Takeover {
    Auto,
    Confirm,
}

impl Takeover {
    pub fn as_str(self) -> &'static str {
        match self {
            Takeover::Auto => "auto",
            Takeover::Confirm => "confirm",
        }
    }
}

impl std::str::FromStr for Takeover {
    type Err = String;
    fn from_str(s: &str) -> Result<Takeover, String> {
        match s {
            "auto" => Ok(Takeover::Auto),
            "confirm" => Ok(Takeover::Confirm),
            other => Err(format!("takeover {other:?} is neither auto nor confirm")),
        }
    }
}

/// What a site's WAN link is like (`nightcast site set --link`): `wired` (fibre, DSL, cable:
/// the default) or `far` (satellite or 4G: long round trips and random loss), whose relay
/// fetches through the controller's `far_listen` port, where the controller sends with BBR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    #[default]
    Wired,
    Far,
}

impl Link {
    /// The port a site with this link is sent to fetch through, given the controller's
    /// `far_listen` port: that port for a far site, none (the relay's configured address) for a
    /// wired one, or while the controller has no `far_listen`.
    pub fn far_port(self, far_listen: Option<u16>) -> Option<u16> {
        match self {
            Link::Far => far_listen,
            Link::Wired => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Link::Wired => "wired",
            Link::Far => "far",
        }
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Link {
    type Err = String;
    fn from_str(s: &str) -> Result<Link, String> {
        match s {
            "wired" => Ok(Link::Wired),
            "far" => Ok(Link::Far),
            other => Err(format!("link {other:?} is neither wired nor far")),
        }
    }
}

/// A row of `GET /v1/sites`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteInfo {
    pub name: SiteId,
    /// IANA time zone, e.g. `Europe/Paris`.
    pub tz: String,
    /// Night windows in local time, e.g. `22:00-06:00,12:00-14:00`.
    pub windows: String,
    pub cap_mbit: u64,
    pub takeover: Takeover,
    /// The WAN cap of an emergency push in the daytime, in Mbit/s; 0: the night cap.
    #[serde(default)]
    pub emergency_cap_mbit: u64,
    /// Which USB devices plugged into the site's NUCs their guests get.
    #[serde(default)]
    pub usb: crate::profile::UsbPolicy,
    /// Each NUC's upload cap to its peers, in Mbit/s (0: uncapped); none: each NUC's own
    /// `peer_upload_mbit`.
    #[serde(default)]
    pub peer_upload_mbit: Option<u64>,
    /// Whether the site's NUCs serve their peers while a session runs on them; none: each
    /// NUC's own `peer_share_in_session`.
    #[serde(default)]
    pub peer_share_in_session: Option<bool>,
    /// What the site's WAN link is like.
    #[serde(default)]
    pub link: Link,
    /// The controller's port its relay fetches through (`far_listen`), when the link is far;
    /// none for a wired site, or for a far one while the controller has no `far_listen`.
    #[serde(default)]
    pub far_port: Option<u16>,
}

/// `POST /v1/sites`: adds a site; an existing one is refused (409: change it with
/// [`SiteChange`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    pub name: SiteId,
    pub tz: String,
    #[serde(default = "default_windows")]
    pub windows: String,
    pub cap_mbit: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover: Option<Takeover>,
    /// Wired unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Link>,
}

fn default_windows() -> String {
    DEFAULT_WINDOWS.to_owned()
}

/// `PATCH /v1/sites/SITE`: changes only the fields given, and answers the site as it now is
/// ([`SiteInfo`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_mbit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover: Option<Takeover>,
    /// The WAN cap of an emergency push in the daytime, in Mbit/s; 0: the night cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_cap_mbit: Option<u64>,
    /// Which USB devices plugged into the site's NUCs their guests get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb: Option<crate::profile::UsbPolicy>,
    /// Each NUC's upload cap to its peers, in Mbit/s (0: uncapped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_upload_mbit: Option<u64>,
    /// Whether the site's NUCs serve their peers while a session runs on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_share_in_session: Option<bool>,
    /// What the site's WAN link is like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Link>,
}

/// A row of `GET /v1/rooms[?site=S]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub site: SiteId,
    pub room: RoomName,
    pub seats: u64,
    /// Its sessions not yet ended.
    pub upcoming_sessions: u64,
}

/// The answer to `DELETE /v1/sites/SITE`, `DELETE /v1/rooms/SITE/ROOM` and
/// `DELETE /v1/seats/SITE/ROOM/SEAT`. Without `?force=true`, a place still in use (rooms, seats,
/// sessions, nodes) is refused with a 409 naming what uses it; with it, these go too, and this
/// says what went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceRemoved {
    pub site: SiteId,
    pub room: Option<RoomName>,
    pub seat: Option<SeatName>,
    /// Rooms, seats and sessions (past ones too) removed with it.
    pub rooms: u64,
    pub seats: u64,
    pub sessions: u64,
    /// NUCs that sat at a removed seat: spares now.
    pub unseated: Vec<NodeId>,
    /// A site's relays and NUCs, revoked and forgotten (as `DELETE /v1/nodes/NODE`).
    pub nodes_removed: Vec<NodeId>,
}

/// `POST /v1/sites/SITE/accept-new`: lets the site's new NUCs in by themselves for `minutes`
/// (at most a week; 0 closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptNew {
    pub minutes: u64,
}

/// The answer to [`AcceptNew`]: until when (Unix seconds) the site is open, `None` if closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptingNew {
    pub site: SiteId,
    pub until: Option<i64>,
}

/// `POST /v1/rooms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    pub site: SiteId,
    pub room: RoomName,
}

/// `POST /v1/seats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSeat {
    pub site: SiteId,
    pub room: RoomName,
    pub seat: SeatName,
}

/// `POST /v1/seats/assign` (any agent of the site) and `POST /v1/seats/replace` (a spare only:
/// the DSI confirming a takeover).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatBind {
    pub site: SiteId,
    pub room: RoomName,
    pub seat: SeatName,
    pub node: NodeId,
}

/// The answer to [`SeatBind`]: what changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatBound {
    pub site: SiteId,
    pub room: RoomName,
    pub seat: SeatName,
    pub node: NodeId,
    /// The node that held the seat before, now a spare.
    pub replaced: Option<NodeId>,
    /// The seat (`room/seat`) the node held before, now empty.
    pub moved_from: Option<String>,
}

/// The answer to `GET /v1/seats`: every seat with its NUC, then the spares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seats {
    pub seats: Vec<SeatState>,
    pub spares: Vec<SpareState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatState {
    pub site: SiteId,
    pub room: RoomName,
    pub seat: SeatName,
    pub node: Option<NodeId>,
    /// Unix seconds; `None`: never heard from.
    pub last_seen: Option<i64>,
    /// No NUC, or not heard from for too long.
    pub silent: bool,
}

/// An agent of the site bound to no seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpareState {
    pub site: SiteId,
    pub node: NodeId,
    pub last_seen: Option<i64>,
    /// Heard from lately enough to take a seat over.
    pub recent: bool,
    /// Why it is not taking a silent seat over by itself, or which one it takes next.
    pub waiting: Option<String>,
}
