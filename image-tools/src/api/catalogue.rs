//! Masters (list, import, removal), calendars and sessions.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ids::{MasterName, MasterVersion, RoomName, SiteId};
use crate::probe::ImageFormat;
use crate::profile::Profile;

/// A row of `GET /v1/masters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInfo {
    pub name: MasterName,
    pub version: MasterVersion,
    /// The image's size in bytes.
    pub size: u64,
    /// What its chunks take in the store (compressed).
    pub stored_bytes: u64,
    /// The machine profile the catalogue assigns to the master (every version); `None`: each
    /// NUC's own.
    #[serde(default)]
    pub profile: Option<Profile>,
}

/// `PUT /v1/masters/NAME/profile`: the machine profile of every version of master NAME, from its
/// next VM start on every NUC (a running session keeps the one it started with); `None` clears
/// it (each NUC's own then). Refused (404) for a master with no version in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetProfile {
    pub profile: Option<Profile>,
}

/// A master's profile in the catalogue: the answer to [`SetProfile`], `GET
/// /v1/masters/NAME/profile` and the rows of `GET /v1/masters/profiles`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterProfile {
    pub name: MasterName,
    /// `None`: none assigned (each NUC's own).
    pub profile: Option<Profile>,
    /// Raised at each change (0: never set); what the NUCs compare.
    pub revision: i64,
    /// When it was last set (Unix seconds; 0: never).
    pub set_at: i64,
}

/// `POST /v1/masters`: imports an image that is on the controller's disk. Refused before any
/// work when the name and version exist already (409), or when a raw file is no disk (400).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportMaster {
    /// A path on the controller's disk; only that file is read.
    pub image: PathBuf,
    pub name: MasterName,
    pub version: MasterVersion,
    /// Pins the image's format; detected from its first bytes when `None`.
    #[serde(default, with = "format_name")]
    pub format: Option<ImageFormat>,
    /// Import a raw file even if it looks like no disk: smaller than 1 MiB, or with no partition
    /// table or file system recognised (`probe::layout_of`). Without it, such a file is refused
    /// before any work.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// The answer to [`ImportMaster`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    pub name: MasterName,
    pub version: MasterVersion,
    /// Bytes of the image.
    pub size: u64,
    pub new_chunks: u64,
    pub new_stored_bytes: u64,
    /// Chunks that were in the store but damaged, written again.
    pub replaced_chunks: u64,
    pub chunks: u64,
    pub hole_bytes: u64,
}

/// An import under way (`GET /v1/masters/imports`), for a progress line: how far the
/// controller has read the image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportProgress {
    pub name: MasterName,
    pub version: MasterVersion,
    pub image: PathBuf,
    /// Bytes of the image (0 until the import knows it).
    pub size: u64,
    /// Bytes read and chunked so far.
    pub read: u64,
    /// Seconds since the import started, on the controller's clock.
    pub elapsed_secs: f64,
}

/// A row of `GET /v1/masters/NAME/VERSION/cost`: what fetching that version costs a site that
/// runs the master (sessions from now on) or whose relay holds a version of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteCost {
    pub site: SiteId,
    /// Versions of this master the site's relay reported complete.
    pub holds: Vec<MasterVersion>,
    /// Stored (compressed) bytes of the version the relay lacks: what crosses the site's WAN.
    pub missing_bytes: u64,
    /// Stored bytes of the whole version (what a relay with nothing would fetch).
    pub stored_bytes: u64,
    /// What the relay moves per second under the site's cap.
    pub rate_bytes_per_sec: u64,
    /// Seconds of night window the fetch takes, the night windows it needs and when it ends,
    /// starting now; `None` if it does not end within 60 days of windows.
    pub window_secs: Option<i64>,
    pub nights: Option<u32>,
    pub ready_at: Option<i64>,
    /// False when no relay is enrolled at the site: nothing reaches it.
    pub relay: bool,
}

/// `POST /v1/calendar`: a calendar file, CSV or iCalendar (by its name's `.ics` ending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarFile {
    /// Named in errors (`term.csv:12: ...`).
    pub file_name: String,
    pub text: String,
}

/// The answer to [`CalendarFile`]: how many sessions it added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarImported {
    pub imported: u64,
}

/// A row of `GET /v1/sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: i64,
    pub site: SiteId,
    pub room: RoomName,
    pub master: MasterName,
    pub version: MasterVersion,
    /// Unix seconds.
    pub start: i64,
    pub end: i64,
    /// Where the session came from.
    #[serde(default)]
    pub origin: SessionOrigin,
}

/// Where a session came from: whether a calendar will move it again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionOrigin {
    /// An iCalendar calendar (`calendar import`, or a feed when `feed`): its next export or poll
    /// may move or remove the session.
    Calendar { source: String, feed: bool },
    /// A CSV file: only added, never synced.
    Csv { file: String },
    /// `session add`.
    Hand,
    /// Added before nightcast recorded where sessions come from.
    #[default]
    Unknown,
}

/// `POST /v1/sessions`: one session; `start` and `end` are `YYYY-MM-DD HH:MM` in the site's
/// time zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    pub site: SiteId,
    pub room: RoomName,
    pub master: MasterName,
    pub version: MasterVersion,
    pub start: String,
    pub end: String,
}

/// `POST /v1/sessions/ID/move`: the session's new times, `YYYY-MM-DD HH:MM` in its site's time
/// zone (its site, room and master stay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveSession {
    pub start: String,
    pub end: String,
}

/// An image format by its name (`qcow2`), `null` for none.
mod format_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::probe::ImageFormat;

    pub fn serialize<S: Serializer>(f: &Option<ImageFormat>, s: S) -> Result<S::Ok, S::Error> {
        match f {
            Some(f) => s.serialize_str(f.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ImageFormat>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}
