//! Re-importing an iCalendar export: the sessions of one calendar made what the new file says.

use serde::{Deserialize, Serialize};

use super::UnmatchedEvent;
use crate::ids::{MasterName, MasterVersion, RoomName, SiteId};

/// `POST /v1/calendar/sync`: an iCalendar file (`.ics`) as the calendar `source` now is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSync {
    /// Which calendar this is: the sessions imported before under this name are compared with
    /// the file's, and only they are moved or removed (the CLI gives the file's name).
    pub source: String,
    /// Named in errors (`term.ics:12: ...`).
    pub file_name: String,
    /// The file's bytes as they are (a fold may split a UTF-8 character, so an iCalendar file
    /// is not always text until it is unfolded).
    pub bytes: Vec<u8>,
    /// Show what would change and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// How many days ahead an event that repeats for ever (no end in its rule) gives sessions;
    /// [`DEFAULT_HORIZON_DAYS`] if `None`.
    #[serde(default)]
    pub horizon_days: Option<u32>,
    /// Import what the rules can read even if some events match none (they are still listed
    /// in [`CalendarSynced::unmatched`]). Without it, one such event and nothing is imported.
    #[serde(default)]
    pub partial: bool,
}

/// How far ahead a calendar's never-ending events are imported unless the DSI says otherwise:
/// about six months (a term and the next); importing a newer export moves it on.
pub const DEFAULT_HORIZON_DAYS: u32 = 183;

/// The answer to [`CalendarSync`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarSynced {
    pub source: String,
    /// False for a dry run: nothing was changed.
    pub applied: bool,
    pub added: Vec<SyncedSession>,
    pub moved: Vec<MovedSession>,
    pub removed: Vec<SyncedSession>,
    /// Sessions of the file the catalogue already held as they are.
    pub unchanged: u64,
    /// Sessions of the file already over: not imported (and past sessions are never removed).
    pub past_skipped: u64,
    /// Cancelled events and occurrences of the file, skipped.
    pub cancelled: u64,
    /// What the file holds and was not imported, with its line (an all-day event...).
    pub notes: Vec<CalendarNote>,
    /// Events that no mapping rule (and no name of nightcast's own) could read: not imported,
    /// their sessions already in the catalogue left as they were. Only with `partial` or a dry
    /// run: otherwise such events refuse the import.
    #[serde(default)]
    pub unmatched: Vec<UnmatchedEvent>,
}

/// A session of a calendar sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedSession {
    /// The session's id in the catalogue (`None` for one a dry run would add).
    pub id: Option<i64>,
    /// The event's `UID` in the calendar.
    pub uid: String,
    /// The line of its event in the file (`None` for a removed session).
    pub line: Option<u64>,
    pub site: SiteId,
    pub room: RoomName,
    pub master: MasterName,
    pub version: MasterVersion,
    /// Unix seconds.
    pub start: i64,
    pub end: i64,
}

/// A session the new file moves (another time, room or master): as it was, as it becomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedSession {
    pub before: SyncedSession,
    pub after: SyncedSession,
}

/// Something of the file read and not imported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarNote {
    pub line: u64,
    pub note: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_sync_request_carries_bytes_that_are_not_utf8_and_defaults_to_applying() {
        // "S\xc3" then a fold then "\xa9ance": not UTF-8 until unfolded.
        let bytes = b"SUMMARY:S\xc3\r\n \xa9ance\r\n".to_vec();
        let v = json!({"source": "lyon", "file_name": "g.ics", "bytes": bytes});
        let r: CalendarSync = serde_json::from_value(v).unwrap();
        assert_eq!(
            (r.bytes, r.dry_run, r.horizon_days, r.partial),
            (bytes, false, None, false)
        );
        let e = serde_json::from_value::<CalendarSync>(
            json!({"source": "lyon", "file_name": "g.ics", "bytes": [], "dryrun": true}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `dryrun`"), "{e}");
    }
}
