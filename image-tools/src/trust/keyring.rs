//! The manifest-signing keys a relay or agent accepts: each endorsed by the CA it pinned, until a
//! time ([`super::Endorsed`]).
//!
//! A node starts with the key it got at enrolment. Every plan lists the keys in force, endorsed
//! afresh by the controller (`signing_keys`): a node adds a key it did not know (that is how a new
//! key reaches it during a rotation, however long it was away, as long as its CA is the same) and
//! extends the time of those it knows; a key whose endorsement is not renewed, because the DSI
//! retired it, stops being accepted when its time runs out. Nothing unendorsed gets in: an
//! endorsement that does not check out against the node's CA is ignored (and logged by the
//! caller), so a relay cannot add a key of its own; it could at most replay an old endorsement,
//! which ends at its time ([`super::ENDORSEMENT_SECS`]).
//!
//! Kept in `DATA/signing-keys.json`, written durably when it changes. Pure apart from `load` and
//! `save`: time is passed in.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Endorsed, TrustError};
use crate::ids::{hex, unhex};
use crate::keys::PublicKey;

const FILE: &str = "signing-keys.json";

/// A node's accepted manifest-signing keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    entries: Vec<Endorsed>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    key: String,
    until: i64,
    endorsement: String,
}

impl KeyRing {
    /// The ring kept in `dir`; a node enrolled before rings existed has only `signing.pub`, which
    /// it keeps accepting until a plan endorses keys.
    pub fn load(dir: &Path) -> Result<KeyRing, TrustError> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: Vec<Stored> =
                    serde_json::from_slice(&bytes).map_err(|e| TrustError::Damaged {
                        path: path.clone(),
                        what: e.to_string(),
                    })?;
                let entries = stored
                    .iter()
                    .map(|s| {
                        let key = unhex::<32>(&s.key).and_then(|k| PublicKey::from_bytes(&k));
                        let signature = crate::ids::unhex_vec(&s.endorsement);
                        match (key, signature) {
                            (Some(key), Some(signature)) => Ok(Endorsed {
                                key,
                                until: s.until,
                                signature,
                            }),
                            _ => Err(TrustError::Damaged {
                                path: path.clone(),
                                what: format!("key {:?} does not parse", s.key),
                            }),
                        }
                    })
                    .collect::<Result<_, _>>()?;
                Ok(KeyRing { entries })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match PublicKey::load(&dir.join("signing.pub")) {
                    Ok(key) => Ok(KeyRing {
                        entries: vec![Endorsed {
                            key,
                            until: i64::MAX,
                            signature: Vec::new(),
                        }],
                    }),
                    Err(_) => Ok(KeyRing::default()),
                }
            }
            Err(source) => Err(TrustError::Read { path, source }),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), TrustError> {
        let stored: Vec<Stored> = self
            .entries
            .iter()
            .map(|e| Stored {
                key: hex(e.key.as_bytes()),
                until: e.until,
                endorsement: hex(&e.signature),
            })
            .collect();
        let path = dir.join(FILE);
        let bytes =
            serde_json::to_vec_pretty(&stored).map_err(|e| TrustError::Cert(e.to_string()))?;
        crate::durable::write_file(&path, &bytes, 0o644)
            .map_err(|source| TrustError::Write { path, source })
    }

    /// Adds `endorsed` (already checked), or extends the time of the key it names.
    pub fn add(&mut self, endorsed: &Endorsed) {
        match self.entries.iter_mut().find(|e| e.key == endorsed.key) {
            Some(e) if e.until >= endorsed.until => {}
            Some(e) => *e = endorsed.clone(),
            None => self.entries.push(endorsed.clone()),
        }
    }

    /// Takes a plan's endorsed keys: those that check out against one of `cas` (the node's CA and,
    /// during a CA rotation, those its bridge reaches) are added or extended;
    /// keys whose time has run out at `now` are dropped. Returns whether the ring changed, and
    /// the keys whose endorsement did not check out (to be logged).
    pub fn learn(
        &mut self,
        plan: &[crate::wire::EndorsedKey],
        cas: &[&[u8]],
        now: i64,
    ) -> (bool, Vec<String>) {
        let before = self.clone();
        let mut refused = Vec::new();
        for w in plan {
            match Endorsed::from_wire(w) {
                Some(e) if cas.iter().any(|ca| e.check(ca).is_ok()) => {
                    // A legacy entry (pinned before rings, no endorsement) gives way to an
                    // endorsed one of the same key.
                    if let Some(old) = self
                        .entries
                        .iter_mut()
                        .find(|o| o.key == e.key && o.signature.is_empty())
                    {
                        *old = e;
                    } else {
                        self.add(&e);
                    }
                }
                _ => refused.push(hex(w.key.get(..8).unwrap_or(&w.key))),
            }
        }
        if !plan.is_empty() {
            // Legacy entries stop counting once the controller endorses keys.
            self.entries.retain(|e| !e.signature.is_empty());
        }
        self.entries.retain(|e| e.until > now);
        (*self != before, refused)
    }

    /// The keys accepted at `now`.
    pub fn accepted(&self, now: i64) -> Vec<PublicKey> {
        self.entries
            .iter()
            .filter(|e| e.until > now)
            .map(|e| e.key)
            .collect()
    }

    pub fn contains(&self, key: &PublicKey, now: i64) -> bool {
        self.accepted(now).contains(key)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::{Ca, Validity};

    const NOW: i64 = 1_796_164_200;

    fn key() -> PublicKey {
        crate::keys::SigningKey::generate().unwrap().public()
    }

    #[test]
    fn a_rotation_reaches_a_node_and_a_retired_key_runs_out() {
        let ca = Ca::generate(Validity::ca(NOW)).unwrap();
        let (k1, k2) = (key(), key());
        let mut ring = KeyRing::default();
        ring.add(&ca.endorse(&k1, NOW + 100).unwrap());
        // Rotation: the plan endorses both; the node learns k2.
        let plan = vec![
            ca.endorse(&k2, NOW + 200).unwrap().to_wire(),
            ca.endorse(&k1, NOW + 200).unwrap().to_wire(),
        ];
        assert!(ring.learn(&plan, &[ca.certificate()], NOW).0);
        assert_eq!(ring.accepted(NOW + 150).len(), 2);
        // Retired: k1 is no longer endorsed; k2's endorsement goes on, k1's runs out.
        let plan = vec![ca.endorse(&k2, NOW + 400).unwrap().to_wire()];
        ring.learn(&plan, &[ca.certificate()], NOW + 150);
        assert_eq!(ring.accepted(NOW + 150), vec![k1, k2]);
        assert_eq!(ring.accepted(NOW + 250), vec![k2]);
        ring.learn(&plan, &[ca.certificate()], NOW + 250);
        assert_eq!(ring.entries.len(), 1);
    }

    #[test]
    fn a_key_another_ca_endorsed_or_that_was_altered_never_gets_in() {
        let ca = Ca::generate(Validity::ca(NOW)).unwrap();
        let evil = Ca::generate(Validity::ca(NOW)).unwrap();
        let mut ring = KeyRing::default();
        ring.add(&ca.endorse(&key(), NOW + 100).unwrap());
        let mut stretched = ca.endorse(&key(), NOW + 100).unwrap().to_wire();
        stretched.until += 1_000_000;
        let plan = vec![
            evil.endorse(&key(), NOW + 100).unwrap().to_wire(),
            stretched,
        ];
        let (changed, refused) = ring.learn(&plan, &[ca.certificate()], NOW);
        assert!(!changed);
        assert_eq!(refused.len(), 2);
        assert_eq!(ring.accepted(NOW).len(), 1);
    }

    #[test]
    fn the_ring_survives_a_restart_and_a_legacy_pin_gives_way() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate(Validity::ca(NOW)).unwrap();
        let k1 = key();
        k1.save(&dir.path().join("signing.pub")).unwrap();
        let mut ring = KeyRing::load(dir.path()).unwrap();
        assert_eq!(ring.accepted(i64::MAX - 1), vec![k1]);
        let plan = vec![ca.endorse(&k1, NOW + 100).unwrap().to_wire()];
        ring.learn(&plan, &[ca.certificate()], NOW);
        ring.save(dir.path()).unwrap();
        let again = KeyRing::load(dir.path()).unwrap();
        assert_eq!(again, ring);
        assert_eq!(again.accepted(NOW + 100), vec![]);
    }
}
