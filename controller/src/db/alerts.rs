//! What each alert channel was last told (`crate::alerts`): the conditions sent as open, with
//! when, and the last daily digest, so that a restart resends nothing.

use rusqlite::OptionalExtension;

use super::{Db, DbError};
use crate::alerts::decide::{Change, ChangeKind, Condition};

/// A condition a channel was told about, and when it was first sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentRow {
    pub key: String,
    pub condition: Condition,
    pub since: i64,
}

impl Db {
    /// The conditions `channel` was last told are open, in key order. A row this controller
    /// cannot read (written by a newer one) counts as not sent: it is sent again, never lost.
    pub fn alerts_sent(&self, channel: &str) -> Result<Vec<SentRow>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT key, condition, since FROM alerts_sent WHERE channel = ?1 ORDER BY key",
        )?;
        let rows = stmt.query_map([channel], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, json, since) = row?;
            match serde_json::from_str(&json) {
                Ok(condition) => out.push(SentRow {
                    key,
                    condition,
                    since,
                }),
                Err(e) => tracing::warn!(%channel, %key, error = %e, "unreadable sent alert"),
            }
        }
        Ok(out)
    }

    /// Records that `channel` was told `changes` at `now`, in one transaction.
    pub fn record_alerts_sent(
        &mut self,
        channel: &str,
        changes: &[Change],
        now: i64,
    ) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        for c in changes {
            match c.kind {
                ChangeKind::Opened => {
                    let json = serde_json::to_string(&c.condition)
                        .map_err(|e| DbError::Invalid(format!("alert {}: {e}", c.key)))?;
                    tx.execute(
                        "INSERT OR REPLACE INTO alerts_sent (channel, key, condition, since)
                         VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![channel, c.key, json, now],
                    )?;
                }
                ChangeKind::Resolved => {
                    tx.execute(
                        "DELETE FROM alerts_sent WHERE channel = ?1 AND key = ?2",
                        rusqlite::params![channel, c.key],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// When `channel` last sent its daily digest (or started counting: see `record_digest`).
    pub fn last_digest(&self, channel: &str) -> Result<Option<i64>, DbError> {
        Ok(self
            .conn
            .query_row(
                "SELECT last_at FROM alert_digests WHERE channel = ?1",
                [channel],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn record_digest(&self, channel: &str, at: i64) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT INTO alert_digests (channel, last_at) VALUES (?1, ?2)
             ON CONFLICT (channel) DO UPDATE SET last_at = excluded.last_at",
            rusqlite::params![channel, at],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silent(node: &str) -> Condition {
        Condition::RelaySilent {
            site: "lyon".into(),
            node: node.into(),
            last_seen: None,
            enrolled_at: 0,
        }
    }

    fn change(kind: ChangeKind, c: Condition) -> Change {
        Change {
            kind,
            key: c.key(),
            condition: c,
        }
    }

    #[test]
    fn the_sent_set_survives_a_reopening_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut db = Db::open(&path).unwrap();
        db.record_alerts_sent(
            "webhook",
            &[
                change(ChangeKind::Opened, silent("relay-1")),
                change(ChangeKind::Opened, silent("relay-2")),
            ],
            10,
        )
        .unwrap();
        db.record_alerts_sent(
            "webhook",
            &[change(ChangeKind::Resolved, silent("relay-1"))],
            20,
        )
        .unwrap();
        assert_eq!(db.last_digest("email").unwrap(), None);
        db.record_digest("email", 5).unwrap();
        db.record_digest("email", 7).unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(
            db.alerts_sent("webhook").unwrap(),
            [SentRow {
                key: "relay_silent/lyon/relay-2".into(),
                condition: silent("relay-2"),
                since: 10
            }]
        );
        assert!(db.alerts_sent("email").unwrap().is_empty());
        assert_eq!(db.last_digest("email").unwrap(), Some(7));
        assert_eq!(db.last_digest("webhook").unwrap(), None);
    }
}
