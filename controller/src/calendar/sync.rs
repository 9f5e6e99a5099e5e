//! What a new export of a calendar changes: pure, sessions in (those of the catalogue from that
//! calendar, and those of the file, times resolved), [`Changes`] out.
//!
//! A session is known by its [`Key`]: the event's `UID` and, for an occurrence of a recurring
//! event, the start its rule gave it (which a moved occurrence keeps). So the same export again
//! changes nothing, an occurrence moved in the calendar application is *moved* (its session id
//! kept), a new event is *added*, and an event or occurrence gone from the file is *removed*.
//!
//! The past is history: a session of the file that is over at `now` is skipped (counted), and a
//! session of the catalogue that is over is never removed.

use std::collections::HashMap;

use super::Error;

/// Which session of its calendar a session is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub uid: String,
    /// Unix seconds of the occurrence's start as its rule gave it; `None` for a single event.
    pub instance: Option<i64>,
}

/// What a session is, once its times are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub site: String,
    pub room: String,
    pub master: String,
    pub version: String,
    /// Unix seconds.
    pub start: i64,
    pub end: i64,
}

/// A session the catalogue holds from this calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: i64,
    pub key: Key,
    pub session: Session,
}

/// A session of the new file, with the line of its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub line: usize,
    pub key: Key,
    pub session: Session,
}

/// Each list in order of start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub added: Vec<Incoming>,
    /// The session as stored, and what it becomes (another time, room or master).
    pub moved: Vec<(Stored, Incoming)>,
    pub removed: Vec<Stored>,
    pub unchanged: usize,
    /// Sessions of the file already over at `now`: not imported.
    pub past: usize,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.moved.is_empty() && self.removed.is_empty()
    }
}

/// What turns `stored` into `incoming` at `now`; an error if the file holds one session twice.
pub fn diff(stored: Vec<Stored>, incoming: Vec<Incoming>, now: i64) -> Result<Changes, Error> {
    let mut changes = Changes::default();
    let mut seen: HashMap<Key, usize> = HashMap::new();
    let mut stored: HashMap<Key, Stored> = stored.into_iter().map(|s| (s.key.clone(), s)).collect();
    for new in incoming {
        if let Some(first) = seen.insert(new.key.clone(), new.line) {
            return Err(Error::new(
                new.line,
                format!(
                    "the event {:?} gives the same session twice (see line {first})",
                    new.key.uid
                ),
            ));
        }
        let old = stored.remove(&new.key);
        if new.session.end <= now {
            changes.past += 1;
            continue;
        }
        match old {
            None => changes.added.push(new),
            Some(old) if old.session == new.session => changes.unchanged += 1,
            Some(old) => changes.moved.push((old, new)),
        }
    }
    let mut gone: Vec<Stored> = stored
        .into_values()
        .filter(|s| s.session.end > now)
        .collect();
    gone.sort_by_key(|s| (s.session.start, s.id));
    changes.removed = gone;
    changes.added.sort_by_key(|n| (n.session.start, n.line));
    changes
        .moved
        .sort_by_key(|(_, n)| (n.session.start, n.line));
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(room: &str, start: i64) -> Session {
        Session {
            site: "lyon".into(),
            room: room.into(),
            master: "win10".into(),
            version: "1".into(),
            start,
            end: start + 100,
        }
    }

    fn key(uid: &str, instance: Option<i64>) -> Key {
        Key {
            uid: uid.into(),
            instance,
        }
    }

    fn stored(id: i64, k: Key, s: Session) -> Stored {
        Stored {
            id,
            key: k,
            session: s,
        }
    }

    fn new(k: Key, s: Session) -> Incoming {
        Incoming {
            line: 1,
            key: k,
            session: s,
        }
    }

    #[test]
    fn the_same_export_again_changes_nothing() {
        let a = (key("a", Some(1_000)), session("s1", 1_000));
        let b = (key("b", None), session("s2", 2_000));
        let c = diff(
            vec![
                stored(1, a.0.clone(), a.1.clone()),
                stored(2, b.0.clone(), b.1.clone()),
            ],
            vec![new(a.0, a.1), new(b.0, b.1)],
            0,
        )
        .unwrap();
        assert!(c.is_empty());
        assert_eq!(c.unchanged, 2);
    }

    #[test]
    fn an_occurrence_moved_keeps_its_key_and_is_a_move() {
        let k = key("a", Some(1_000));
        let c = diff(
            vec![
                stored(1, k.clone(), session("s1", 1_000)),
                stored(2, key("gone", None), session("s1", 5_000)),
            ],
            vec![
                new(k.clone(), session("s1", 1_500)),
                new(key("fresh", None), session("s2", 3_000)),
            ],
            0,
        )
        .unwrap();
        assert_eq!(c.moved.len(), 1);
        assert_eq!((c.moved[0].0.id, c.moved[0].1.session.start), (1, 1_500));
        assert_eq!(c.added[0].key.uid, "fresh");
        assert_eq!(c.removed[0].id, 2);
        assert_eq!(c.unchanged, 0);
    }

    #[test]
    fn the_past_is_skipped_and_never_removed() {
        let c = diff(
            vec![stored(1, key("old", None), session("s1", 100))],
            vec![
                new(key("also-old", None), session("s1", 300)),
                new(key("soon", None), session("s1", 1_000)),
            ],
            500,
        )
        .unwrap();
        assert_eq!(c.past, 1);
        assert!(c.removed.is_empty());
        assert_eq!(c.added.len(), 1);
    }

    #[test]
    fn one_session_twice_in_a_file_is_refused() {
        let k = key("a", Some(1));
        let mut second = new(k.clone(), session("s1", 1));
        second.line = 9;
        let e = diff(vec![], vec![new(k, session("s1", 1)), second], 0).unwrap_err();
        assert!(e.line == 9 && e.what.contains("twice"), "{e}");
    }
}
