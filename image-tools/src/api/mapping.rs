//! The mapping rules of the calendar: what a course title, a category or a location, as a
//! training tool writes them, means in nightcast (a master version, a site and room). Written
//! once by the DSI; an event already in nightcast's own forms (`SUMMARY` `NAME VERSION`,
//! `LOCATION` `SITE/ROOM`) needs none.

use serde::{Deserialize, Serialize};

use crate::ids::{MasterName, MasterVersion, RoomName, SiteId};

/// `POST /v1/calendar/rules`: a rule; one with the same kind and pattern (in any case) is
/// replaced. Patterns match the whole text, case and runs of spaces ignored; `*` stands for any
/// run of characters (`Excel*` matches "Excel, niveau 2").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum NewMappingRule {
    /// An event whose `SUMMARY` matches `pattern` runs this master version.
    Title {
        pattern: String,
        master: MasterName,
        version: MasterVersion,
    },
    /// An event with this `CATEGORIES` value (whole, any case) runs this master version.
    Category {
        name: String,
        master: MasterName,
        version: MasterVersion,
    },
    /// An event whose `LOCATION` matches `pattern` takes place in this room.
    Location {
        pattern: String,
        site: SiteId,
        room: RoomName,
    },
}

/// A rule as the catalogue holds it (`GET /v1/calendar/rules`, in the order they are tried:
/// for a title, the first title or category rule that matches wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRule {
    /// What `DELETE /v1/calendar/rules/ID` takes.
    pub id: i64,
    pub rule: NewMappingRule,
    /// The rule it replaced (same kind and pattern), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<NewMappingRule>,
}

/// An event of a calendar file that no rule (and no name of nightcast's own) places or gives a
/// master: not imported, and its sessions already in the catalogue are left as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmatchedEvent {
    /// The line of its `BEGIN:VEVENT`.
    pub line: u64,
    pub uid: String,
    /// Its `SUMMARY` ("" if none).
    pub title: String,
    /// Its `LOCATION` ("" if none).
    pub location: String,
    /// What could not be read: the title, the location, or both.
    pub why: String,
}

impl std::fmt::Display for UnmatchedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: {:?} at {:?}: {}",
            self.line, self.title, self.location, self.why
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_rule_is_one_kind_with_its_own_target() {
        let r: NewMappingRule = serde_json::from_value(
            json!({"title": {"pattern": "Excel*", "master": "office", "version": "3"}}),
        )
        .unwrap();
        assert!(matches!(r, NewMappingRule::Title { .. }));
        let e = serde_json::from_value::<NewMappingRule>(
            json!({"location": {"pattern": "x", "master": "office", "version": "3"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `master`"), "{e}");
    }
}
