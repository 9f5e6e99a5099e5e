//! The controller's admin API as types: every request body and every answer of `/v1/...`, shared
//! by the controller (which reads requests and writes answers with them), the `nightcast` CLI (which
//! writes requests and reads answers) and the coming web console. Rename a field here and both
//! sides change together, or fail to compile.
//!
//! Requests refuse unknown fields (`deny_unknown_fields`), and their ids are the validated
//! newtypes of [`crate::ids`], so a bad site id or a misspelt field is a 400 naming it, before any
//! route runs. Answers accept unknown fields, so that an older CLI still reads a newer
//! controller's answers.
//!
//! Deliberately not here: the routes' behaviour, HTTP, and any I/O (see the controller's `api`).
//! The map of routes to types:
//!
//! | route | request | answer |
//! |---|---|---|
//! | `GET sites` | | `Vec<SiteInfo>` |
//! | `POST sites` | [`NewSite`] (refused if it exists) | [`Done`] |
//! | `PATCH sites/SITE` | [`SiteChange`] | [`SiteInfo`] |
//! | `DELETE sites/SITE[?force=true]` | | [`PlaceRemoved`] |
//! | `POST sites/SITE/accept-new` | [`AcceptNew`] | [`AcceptingNew`] |
//! | `GET rooms[?site=S]` | | `Vec<RoomInfo>` |
//! | `POST rooms` | [`NewRoom`] | [`Done`] |
//! | `DELETE rooms/SITE/ROOM[?force=true]` | | [`PlaceRemoved`] |
//! | `GET seats[?site=S]` | | [`Seats`] |
//! | `POST seats` | [`NewSeat`] | [`Done`] |
//! | `DELETE seats/SITE/ROOM/SEAT[?force=true]` | | [`PlaceRemoved`] |
//! | `POST seats/assign`, `seats/replace` | [`SeatBind`] | [`SeatBound`] |
//! | `GET masters` | | `Vec<MasterInfo>` |
//! | `POST masters` | [`ImportMaster`] | [`Imported`] |
//! | `GET masters/imports` | | `Vec<ImportProgress>` |
//! | `GET masters/NAME/VERSION/cost` | | `Vec<SiteCost>` |
//! | `GET masters/profiles` | | `Vec<MasterProfile>` |
//! | `GET masters/NAME/profile` | | [`MasterProfile`] |
//! | `PUT masters/NAME/profile` | [`SetProfile`] | [`MasterProfile`] |
//! | `DELETE masters/NAME/VERSION` | | [`Done`] |
//! | `POST calendar` | [`CalendarFile`] | [`CalendarImported`] |
//! | `POST calendar/sync` | [`CalendarSync`] | [`CalendarSynced`] |
//! | `GET calendar/rules` | | `Vec<MappingRule>` |
//! | `POST calendar/rules` | [`NewMappingRule`] | [`MappingRule`] |
//! | `DELETE calendar/rules/ID` | | [`Done`] |
//! | `GET calendar/feeds` | | `Vec<FeedInfo>` |
//! | `POST calendar/feeds` | [`NewFeed`] | [`FeedInfo`] |
//! | `DELETE calendar/feeds/SOURCE` | | [`Done`] |
//! | `GET sessions` | | `Vec<SessionInfo>` |
//! | `POST sessions` | [`NewSession`] | [`Done`] |
//! | `POST sessions/ID/move` | [`MoveSession`] | [`Done`] |
//! | `DELETE sessions/ID` | | [`Done`] |
//! | `GET plan` | | `Vec<PlanRow>` |
//! | `GET overrides` | | `Vec<OverrideInfo>` |
//! | `POST overrides` | [`NewOverride`] | [`OverrideMade`] |
//! | `GET pushes` | | `Vec<PushRoom>` |
//! | `GET fleet` | | `Vec<FleetRow>` |
//! | `POST nodes/NODE/approve` | | [`Approved`] |
//! | `POST nodes/NODE/revoke` | | [`Revoked`] |
//! | `POST nodes/NODE/reset`, `rollback`, `wake` | | [`Ordered`] |
//! | `DELETE nodes/NODE` | | [`Removed`] |
//! | `POST tokens` | [`NewToken`] | [`Token`] |
//!
//! Any other status than 200 answers an [`ApiError`].

mod calendar;
mod catalogue;
mod errors;
mod failed;
mod feeds;
mod fleet;
mod mapping;
mod places;
mod plan;

pub use calendar::{
    CalendarNote, CalendarSync, CalendarSynced, MovedSession, SyncedSession, DEFAULT_HORIZON_DAYS,
};
pub use catalogue::{
    CalendarFile, CalendarImported, ImportMaster, ImportProgress, Imported, MasterInfo,
    MasterProfile, MoveSession, NewSession, SessionInfo, SessionOrigin, SetProfile, SiteCost,
};
pub use errors::{ApiError, Done};
pub use failed::FailedOn;
pub use feeds::{FeedInfo, NewFeed};
pub use fleet::{Approved, FleetRow, NewToken, NodeRole, Ordered, Removed, Revoked, Token};
pub use mapping::{MappingRule, NewMappingRule, UnmatchedEvent};
pub use places::{
    AcceptNew, AcceptingNew, Link, NewRoom, NewSeat, NewSite, PlaceRemoved, RoomInfo, SeatBind,
    SeatBound, SeatState, Seats, SiteChange, SiteInfo, SpareState, Takeover, DEFAULT_WINDOWS,
};
pub use plan::{
    NewOverride, OverrideInfo, OverrideMade, PlanRow, PushNuc, PushRoom, PushVerdict, Reason,
    Verdict,
};

#[cfg(test)]
mod tests;
