//! The catalogue's part of trust: enrolment tokens (hashes only, redeemed inside the transaction
//! that decides), NUCs waiting for the DSI, the certificates issued and which are revoked, and
//! the sites opened for new NUCs. The rules themselves are `crate::enrolment`, which reads no
//! database: [`Db::decide_enrolment`] gathers its facts, asks it, and records the outcome in one
//! immediate transaction, so two requests with one token cannot both win.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use image_tools::exchange::{EnrolAsk, Via};
use image_tools::ids::hex;
use image_tools::trust::{Identity, Token, Validity};
use image_tools::wire::Role;

use super::{Db, DbError};
use crate::enrolment::{self, Facts, Known, Outcome, TokenCheck};

fn role_of(text: &str) -> Option<Role> {
    match text {
        "relay" => Some(Role::Relay),
        "agent" => Some(Role::Agent),
        "controller" => Some(Role::Controller),
        _ => None,
    }
}

/// A NUC (or relay) that asked to enrol and waits for the DSI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub site: String,
    pub node: String,
    pub role: String,
    pub mac: String,
    /// Which relay passed the request on (or `direct`).
    pub via: String,
    pub requested_at: i64,
    pub approved_at: Option<i64>,
    /// The first 16 hex digits of BLAKE3 of the key the approval is for.
    pub key: String,
}

/// Revokes `node`'s certificates and marks it revoked, inside `tx`.
pub(super) fn revoke_in(
    tx: &rusqlite::Transaction<'_>,
    node: &str,
    now: i64,
) -> Result<usize, DbError> {
    let known: i64 = tx.query_row(
        "SELECT (SELECT count(*) FROM nodes WHERE node = ?1)
              + (SELECT count(*) FROM certificates WHERE node = ?1)",
        params![node],
        |r| r.get(0),
    )?;
    if known == 0 {
        return Err(DbError::Invalid(format!(
            "no node {node:?} (see `nightcast fleet`)"
        )));
    }
    let revoked = tx.execute(
        "UPDATE certificates SET revoked_at = ?2 WHERE node = ?1 AND revoked_at IS NULL",
        params![node, now],
    )?;
    tx.execute(
        "UPDATE nodes SET revoked_at = ?2 WHERE node = ?1 AND revoked_at IS NULL",
        params![node, now],
    )?;
    Ok(revoked)
}

impl Db {
    /// Keeps a new token's hash: a node of `role` at `site` may enrol with it until `expires_at`.
    pub fn add_token(
        &self,
        token: &Token,
        role: Role,
        site: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), DbError> {
        self.site_row_exists(site)?;
        self.conn
            .execute("DELETE FROM tokens WHERE expires_at <= ?1", params![now])?;
        self.conn.execute(
            "INSERT INTO tokens (secret_hash, role, site, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token.secret_hash(), role.to_string(), site, now, expires_at],
        )?;
        Ok(())
    }

    fn site_row_exists(&self, site: &str) -> Result<(), DbError> {
        let found: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM sites WHERE name = ?1", params![site], |r| {
                r.get(0)
            })
            .optional()?;
        found
            .map(|_| ())
            .ok_or_else(|| DbError::NoSite(site.to_owned()))
    }

    /// Decides on an enrolment request and records the outcome, in one immediate transaction:
    /// the token (if any) is used up, a pending request is kept (its approval reset if the key
    /// changed), an issued one clears it and adds the node.
    pub fn decide_enrolment(&mut self, ask: &EnrolAsk, now: i64) -> Result<Outcome, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let token = match &ask.token {
            None => None,
            Some(t) => {
                let grant: Option<(String, String, i64)> = tx
                    .query_row(
                        "SELECT role, site, expires_at FROM tokens WHERE secret_hash = ?1",
                        params![t.secret_hash()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                // Used up whatever the outcome: guessing roles or sites gives nothing.
                tx.execute(
                    "DELETE FROM tokens WHERE secret_hash = ?1",
                    params![t.secret_hash()],
                )?;
                Some(match grant {
                    None => TokenCheck::Refused("unknown or already used"),
                    Some((_, _, expires)) if expires <= now => TokenCheck::Refused("expired"),
                    Some((role, site, _)) => match role_of(&role) {
                        Some(role) => TokenCheck::Valid { role, site },
                        None => TokenCheck::Refused("damaged"),
                    },
                })
            }
        };
        let site = match enrolment::site_of(ask, token.as_ref()) {
            Ok(site) => site,
            Err(why) => {
                tx.commit()?;
                return Ok(Outcome::Refuse(why));
            }
        };
        let node: Option<Known> = tx
            .query_row(
                "SELECT site, role, revoked_at IS NOT NULL FROM nodes WHERE node = ?1
                 ORDER BY enrolled_at LIMIT 1",
                params![ask.node.as_str()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)),
            )
            .optional()?
            .map(|(site, role, revoked)| Known {
                site,
                role: role_of(&role).unwrap_or(Role::Controller),
                revoked,
            });
        let approved: Option<Option<i64>> = tx
            .query_row(
                "SELECT approved_at FROM enrolment_requests
                 WHERE node = ?1 AND site = ?2 AND role = ?3 AND public_key = ?4",
                params![
                    ask.node.as_str(),
                    site.as_str(),
                    ask.role.to_string(),
                    ask.public_key
                ],
                |r| r.get(0),
            )
            .optional()?;
        let site_open_until: Option<i64> = tx
            .query_row(
                "SELECT accept_new_until FROM sites WHERE name = ?1",
                params![site.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let facts = Facts {
            node,
            token,
            approved: approved.flatten().is_some(),
            site_open_until,
        };
        let outcome = enrolment::decide(ask, &site, &facts, now);
        match &outcome {
            Outcome::Issue { site } => {
                tx.execute(
                    "DELETE FROM enrolment_requests WHERE node = ?1",
                    params![ask.node.as_str()],
                )?;
                tx.execute(
                    "INSERT INTO nodes (site, node, role, enrolled_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(site, node) DO UPDATE SET enrolled_at = ?4",
                    params![site.as_str(), ask.node.as_str(), ask.role.to_string(), now],
                )?;
            }
            Outcome::Pending { site, .. } => {
                let via = match &ask.via {
                    Via::Relay(relay) => relay.node.to_string(),
                    Via::Direct | Via::Itself(_) => "direct".to_owned(),
                };
                tx.execute(
                    "INSERT INTO enrolment_requests
                        (node, site, role, public_key, mac, via, requested_at, approved_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)
                     ON CONFLICT(node) DO UPDATE SET site = ?2, role = ?3, mac = ?5, via = ?6,
                        requested_at = ?7,
                        approved_at = CASE WHEN public_key = ?4 AND site = ?2 AND role = ?3
                                           THEN approved_at END,
                        public_key = ?4",
                    params![
                        ask.node.as_str(),
                        site.as_str(),
                        ask.role.to_string(),
                        ask.public_key,
                        ask.mac,
                        via,
                        now
                    ],
                )?;
            }
            Outcome::Refuse(_) => {}
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// Records a certificate issued to `identity`.
    pub fn record_certificate(
        &self,
        identity: &Identity,
        serial: &[u8],
        validity: Validity,
        now: i64,
    ) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT INTO certificates (serial, site, node, role, not_before, not_after, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                hex(serial),
                identity.site.as_str(),
                identity.node.as_str(),
                identity.role.to_string(),
                validity.not_before,
                validity.not_after,
                now
            ],
        )?;
        Ok(())
    }

    /// The DSI lets a pending node in: its next request with the same key gets a certificate.
    pub fn approve_node(&self, node: &str, now: i64) -> Result<PendingRow, DbError> {
        let changed = self.conn.execute(
            "UPDATE enrolment_requests SET approved_at = ?2 WHERE node = ?1",
            params![node, now],
        )?;
        if changed == 0 {
            return Err(DbError::Invalid(format!(
                "no enrolment request from {node:?}: it shows up in `nightcast fleet` as pending once it has asked"
            )));
        }
        self.pending()?
            .into_iter()
            .find(|p| p.node == node)
            .ok_or_else(|| DbError::Invalid(format!("{node} vanished")))
    }

    /// Revokes every certificate of `node` and marks it revoked: relays and the controller refuse
    /// it from their next list refresh; it cannot enrol again until it is removed. Returns how
    /// many certificates were revoked.
    pub fn revoke_node(&mut self, node: &str, now: i64) -> Result<usize, DbError> {
        // Immediate: a deferred transaction that reads, then writes, fails at once ("database is
        // locked") when another connection wrote meanwhile, instead of waiting its turn.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let revoked = revoke_in(&tx, node, now)?;
        tx.commit()?;
        Ok(revoked)
    }

    /// Revokes `node` and forgets it (its seat, holdings and any pending request): it may then
    /// enrol again as a new NUC, by the DSI's rules.
    pub fn remove_node(&mut self, node: &str, now: i64) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending = tx.execute(
            "DELETE FROM enrolment_requests WHERE node = ?1",
            params![node],
        )?;
        match revoke_in(&tx, node, now) {
            Ok(_) => {}
            Err(DbError::Invalid(_)) if pending > 0 => {}
            Err(e) => return Err(e),
        }
        tx.execute("DELETE FROM nodes WHERE node = ?1", params![node])?;
        tx.commit()?;
        Ok(())
    }

    /// Opens `site` for new NUCs until `until` (a past time closes it).
    pub fn accept_new(&self, site: &str, until: i64) -> Result<(), DbError> {
        let changed = self.conn.execute(
            "UPDATE sites SET accept_new_until = ?2 WHERE name = ?1",
            params![site, until],
        )?;
        if changed == 0 {
            return Err(DbError::NoSite(site.to_owned()));
        }
        Ok(())
    }

    /// Until when each site is open for new NUCs, if it is at `now`.
    pub fn open_sites(&self, now: i64) -> Result<Vec<(String, i64)>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, accept_new_until FROM sites WHERE accept_new_until > ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The serials (hex) of revoked certificates that have not expired at `now`: of the agents
    /// of `site` (what its relay refuses), or of every node (what the controller refuses).
    pub fn revoked_serials(&self, site: Option<&str>, now: i64) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT serial FROM certificates
             WHERE revoked_at IS NOT NULL AND not_after > ?1
               AND (?2 IS NULL OR (site = ?2 AND role = 'agent'))
             ORDER BY serial",
        )?;
        let rows = stmt.query_map(params![now, site], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The nodes ("role site/node") whose newest certificate, neither revoked nor expired at
    /// `now`, was issued before `since`: those still certified by the CA a rotation at `since`
    /// replaced.
    pub fn certified_before(&self, since: i64, now: i64) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT role, site, node FROM certificates
             WHERE revoked_at IS NULL AND not_after > ?2
             GROUP BY site, node
             HAVING max(issued_at) < ?1
             ORDER BY site, node",
        )?;
        let rows = stmt.query_map(params![since, now], |r| {
            Ok(format!(
                "{} {}/{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Nodes waiting for the DSI.
    pub fn pending(&self) -> Result<Vec<PendingRow>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT site, node, role, mac, via, requested_at, approved_at, public_key
             FROM enrolment_requests ORDER BY site, requested_at",
        )?;
        let rows = stmt.query_map([], |r| {
            let key: Vec<u8> = r.get(7)?;
            Ok(PendingRow {
                site: r.get(0)?,
                node: r.get(1)?,
                role: r.get(2)?,
                mac: r.get(3)?,
                via: r.get(4)?,
                requested_at: r.get(5)?,
                approved_at: r.get(6)?,
                key: hex(&blake3::hash(&key).as_bytes()[..8]),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::ids::{NodeId, SiteId};

    const NOW: i64 = 1_796_164_200;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db")).unwrap();
        db.add_site("lyon", "Europe/Paris", "22:00-06:00", 20, None)
            .unwrap();
        (dir, db)
    }

    fn relay() -> Identity {
        Identity {
            role: Role::Relay,
            site: SiteId::new("lyon").unwrap(),
            node: NodeId::new("relay-1").unwrap(),
        }
    }

    fn ask(node: &str, key: u8, token: Option<Token>) -> EnrolAsk {
        EnrolAsk {
            token,
            role: Role::Agent,
            node: NodeId::new(node).unwrap(),
            public_key: vec![key; 65],
            mac: "02:00:00:00:00:01".into(),
            renewal: false,
            via: Via::Relay(relay()),
        }
    }

    #[test]
    fn a_pending_nuc_is_let_in_by_approval_of_its_own_key_only() {
        let (_dir, mut db) = db();
        assert!(matches!(
            db.decide_enrolment(&ask("nuc-1", 4, None), NOW).unwrap(),
            Outcome::Pending { .. }
        ));
        let pending = db.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].mac, "02:00:00:00:00:01");
        assert_eq!(pending[0].via, "relay-1");
        db.approve_node("nuc-1", NOW + 1).unwrap();
        // Someone else asking as nuc-1 with another key does not get the approval...
        assert!(matches!(
            db.decide_enrolment(&ask("nuc-1", 5, None), NOW + 2)
                .unwrap(),
            Outcome::Pending { .. }
        ));
        // ...and resets it: the DSI approves the key it sees.
        assert!(matches!(
            db.decide_enrolment(&ask("nuc-1", 4, None), NOW + 3)
                .unwrap(),
            Outcome::Pending { .. }
        ));
        db.approve_node("nuc-1", NOW + 4).unwrap();
        assert!(matches!(
            db.decide_enrolment(&ask("nuc-1", 4, None), NOW + 5)
                .unwrap(),
            Outcome::Issue { .. }
        ));
        assert!(db.pending().unwrap().is_empty());
    }

    #[test]
    fn a_token_is_redeemed_once_even_by_concurrent_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let db = Db::open(&path).unwrap();
        db.add_site("lyon", "Europe/Paris", "22:00-06:00", 20, None)
            .unwrap();
        let token = Token::generate([1; 16]).unwrap();
        db.add_token(&token, Role::Agent, "lyon", NOW, NOW + 3600)
            .unwrap();
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let path = path.clone();
                    s.spawn(move || {
                        let mut db = Db::open(&path).unwrap();
                        let a = ask(&format!("nuc-{i}"), 4, Some(token));
                        matches!(db.decide_enrolment(&a, NOW).unwrap(), Outcome::Issue { .. })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap() as usize)
                .sum()
        });
        assert_eq!(wins, 1);
    }

    #[test]
    fn revoked_serials_are_listed_per_site_until_they_expire() {
        let (_dir, mut db) = db();
        let id = Identity {
            role: Role::Agent,
            site: SiteId::new("lyon").unwrap(),
            node: NodeId::new("nuc-1").unwrap(),
        };
        assert!(matches!(
            db.decide_enrolment(&ask("nuc-1", 4, None), NOW).unwrap(),
            Outcome::Pending { .. }
        ));
        db.accept_new("lyon", NOW + 60).unwrap();
        assert!(matches!(
            db.decide_enrolment(&ask("nuc-1", 4, None), NOW).unwrap(),
            Outcome::Issue { .. }
        ));
        let validity = Validity::starting(NOW, 1000);
        db.record_certificate(&id, &[1, 2], validity, NOW).unwrap();
        db.record_certificate(&relay(), &[3, 4], validity, NOW)
            .unwrap();
        assert!(db.revoked_serials(Some("lyon"), NOW).unwrap().is_empty());
        assert_eq!(db.revoke_node("nuc-1", NOW).unwrap(), 1);
        db.revoke_node("relay-1", NOW).unwrap();
        assert_eq!(db.revoked_serials(Some("lyon"), NOW).unwrap(), ["0102"]);
        assert_eq!(db.revoked_serials(None, NOW).unwrap().len(), 2);
        assert!(db.revoked_serials(None, NOW + 1000).unwrap().is_empty());
        // Revoked: refused even with the site open; removed: a new NUC again.
        assert!(matches!(
            db.decide_enrolment(&ask("nuc-1", 4, None), NOW).unwrap(),
            Outcome::Refuse(_)
        ));
        db.remove_node("nuc-1", NOW).unwrap();
        assert!(matches!(
            db.decide_enrolment(&ask("nuc-1", 4, None), NOW).unwrap(),
            Outcome::Issue { .. }
        ));
    }
}
