//! What an alert says: the webhook's JSON body (typed, `Alert`) and the same in words for the
//! e-mail and for chat webhooks (`text`, the field Mattermost, Slack and Rocket.Chat show).

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::decide::{Change, ChangeKind, Condition};

/// The body of every webhook POST (`Content-Type: application/json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    /// Conditions that opened or cleared since the last message on this channel.
    Changes {
        /// Unix seconds.
        at: i64,
        /// One line per change, for people.
        text: String,
        changes: Vec<Sent>,
    },
    /// The daily digest: every condition open at `at` (none: all is well).
    Digest {
        at: i64,
        text: String,
        open: Vec<Sent>,
    },
}

/// One condition in a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// `opened` or `resolved` in a change; `opened` in a digest.
    pub change: ChangeKind,
    /// Stable while the condition holds: a resolved one has the key of its opening.
    pub key: String,
    /// The condition in words, times in the alerts' time zone.
    pub text: String,
    pub condition: Condition,
}

impl Alert {
    /// The message for `changes` (not empty).
    pub fn changes(at: i64, changes: &[Change], zone: &TimeZone) -> Alert {
        let changes: Vec<Sent> = changes
            .iter()
            .map(|c| Sent {
                change: c.kind,
                key: c.key.clone(),
                text: words(c.kind, &c.condition, zone),
                condition: c.condition.clone(),
            })
            .collect();
        let text = lines(&changes);
        Alert::Changes { at, text, changes }
    }

    /// The digest of the conditions `open`.
    pub fn digest(at: i64, open: &[Condition], zone: &TimeZone) -> Alert {
        let open: Vec<Sent> = open
            .iter()
            .map(|c| Sent {
                change: ChangeKind::Opened,
                key: c.key(),
                text: words(ChangeKind::Opened, c, zone),
                condition: c.clone(),
            })
            .collect();
        let text = match open.len() {
            0 => "nightcast daily digest: nothing open, every session on time".to_owned(),
            n => format!("nightcast daily digest: {n} open\n{}", lines(&open)),
        };
        Alert::Digest { at, text, open }
    }

    /// An e-mail's subject.
    pub fn subject(&self) -> String {
        match self {
            Alert::Changes { changes, .. } => {
                let opened = changes
                    .iter()
                    .filter(|c| c.change == ChangeKind::Opened)
                    .count();
                let resolved = changes.len() - opened;
                match (opened, resolved) {
                    (0, r) => format!("nightcast: {r} resolved"),
                    (o, 0) => format!("nightcast: {o} new alert(s)"),
                    (o, r) => format!("nightcast: {o} new alert(s), {r} resolved"),
                }
            }
            Alert::Digest { open, .. } => format!("nightcast daily digest: {} open", open.len()),
        }
    }

    /// The words of the message.
    pub fn text(&self) -> &str {
        match self {
            Alert::Changes { text, .. } | Alert::Digest { text, .. } => text,
        }
    }
}

fn lines(sent: &[Sent]) -> String {
    sent.iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `2030-01-07 08:30 CET`.
fn time(unix: i64, zone: &TimeZone) -> String {
    Timestamp::from_second(unix).map_or_else(
        |_| format!("@{unix}"),
        |t| {
            t.to_zoned_datetime(zone.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string()
        },
    )
}

/// One condition in words, `RESOLVED: ` before a cleared one.
pub fn words(kind: ChangeKind, c: &Condition, zone: &TimeZone) -> String {
    let what = match c {
        Condition::Session {
            site,
            room,
            master,
            version,
            start,
            verdict,
            reason,
            ..
        } => {
            let verdict = match verdict.as_str() {
                "late" => "LATE",
                "at_risk" => "AT RISK",
                "unknown_master" => "UNKNOWN MASTER",
                other => other,
            };
            let reason = match reason.as_str() {
                "no_relay" => format!(": no relay (enrol one: `nightcast enroll --site {site}`)"),
                "relay_silent" => ": relay silent".to_owned(),
                "transfer" => ": too many bytes for the night windows left".to_owned(),
                _ => String::new(),
            };
            format!(
                "{site} {room}: session of {} with {master} {version} is {verdict}{reason}",
                time(*start, zone)
            )
        }
        Condition::RelaySilent {
            site,
            node,
            last_seen,
            enrolled_at,
        } => match last_seen {
            Some(t) => format!("{site}: relay {node} silent since {}", time(*t, zone)),
            None => format!(
                "{site}: relay {node} never reported since it enrolled on {}",
                time(*enrolled_at, zone)
            ),
        },
        Condition::MasterFailed {
            site,
            room,
            seat,
            node,
            master,
            version,
            why,
        } => format!(
            "{site} {room}/{seat}: {master} {version} FAILED on {node} ({why}); the seat runs the previous version"
        ),
        Condition::NodeError { site, node, error } => {
            format!("{site}: NUC {node} reports an error: {error}")
        }
        Condition::DiskNearFull {
            site,
            node,
            disk_bytes,
            quota_bytes,
            full,
        } => {
            let used = if *quota_bytes > 0 {
                format!(
                    "{} of {} MB",
                    disk_bytes.div_ceil(1_000_000),
                    quota_bytes.div_ceil(1_000_000)
                )
            } else {
                format!("{} MB", disk_bytes.div_ceil(1_000_000))
            };
            if *full {
                format!("{site}: relay {node} DISK FULL ({used}): fetching stopped")
            } else {
                format!("{site}: relay {node} cache near its quota ({used})")
            }
        }
    };
    match kind {
        ChangeKind::Opened => what,
        ChangeKind::Resolved => format!("RESOLVED: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn late() -> Condition {
        Condition::Session {
            site: "lyon".into(),
            room: "salle-1".into(),
            session: "1".into(),
            master: "win10".into(),
            version: "1".into(),
            start: 1_894_001_400, // 2030-01-07 07:30 UTC
            verdict: "late".into(),
            reason: "no_relay".into(),
        }
    }

    #[test]
    fn a_change_reads_as_a_sentence_in_the_zone_and_round_trips_as_json() {
        let zone = TimeZone::get("Europe/Paris").unwrap();
        let changes = [Change {
            kind: ChangeKind::Resolved,
            key: late().key(),
            condition: late(),
        }];
        let alert = Alert::changes(5, &changes, &zone);
        assert_eq!(
            alert.text(),
            "RESOLVED: lyon salle-1: session of 2030-01-07 08:30 CET with win10 1 is LATE: no \
             relay (enrol one: `nightcast enroll --site lyon`)"
        );
        assert_eq!(alert.subject(), "nightcast: 1 resolved");
        let json = serde_json::to_value(&alert).unwrap();
        assert_eq!(json["kind"], "changes");
        assert_eq!(json["changes"][0]["change"], "resolved");
        assert_eq!(json["changes"][0]["condition"]["kind"], "session");
        assert_eq!(
            json["changes"][0]["key"],
            "session/lyon/salle-1/1894001400/late"
        );
        let back: Alert = serde_json::from_value(json).unwrap();
        assert_eq!(back, alert);
    }

    #[test]
    fn an_empty_digest_says_all_is_well() {
        let d = Alert::digest(5, &[], &TimeZone::UTC);
        assert!(d.text().contains("nothing open"), "{}", d.text());
        assert_eq!(d.subject(), "nightcast daily digest: 0 open");
        let d = Alert::digest(5, &[late()], &TimeZone::UTC);
        assert!(d.text().contains("1 open\nlyon salle-1"), "{}", d.text());
    }

    #[test]
    fn the_example_in_the_docs_is_what_the_controller_sends() {
        let doc = include_str!("../../../docs/ALERTS.md");
        let json = doc
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        let example: Alert = serde_json::from_str(json).unwrap();
        let Alert::Changes { at, changes, .. } = &example else {
            panic!("{example:?}");
        };
        let changes: Vec<Change> = changes
            .iter()
            .map(|s| Change {
                kind: {
                    assert_eq!(s.key, s.condition.key());
                    s.change
                },
                key: s.key.clone(),
                condition: s.condition.clone(),
            })
            .collect();
        let zone = TimeZone::get("Europe/Paris").unwrap();
        assert_eq!(Alert::changes(*at, &changes, &zone), example);
    }
}
