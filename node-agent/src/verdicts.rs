//! What this NUC learnt about its masters' guests, kept on disk so that a restart or a power cut
//! forgets none of it: the master on trial (swapped in, its guest not yet seen to boot; see
//! `workstation`) and the versions whose guest did not come up here (bad), each with the manifest
//! it was judged on, why and when.
//!
//! A bad version is not prepared or swapped in again on this NUC until the DSI republishes it: a
//! new version, or a new manifest (new contents or a new signature) for the same name and version,
//! which [`Verdicts::republished`] tells apart by the manifest's BLAKE3 hash.
//!
//! The file is `DATA/verdicts.json`, replaced as a whole by `image_tools::durable::write_file`
//! (temp file, fsync, rename), so a power cut leaves the old verdicts or the new ones.

use std::io;
use std::path::{Path, PathBuf};

use image_tools::wire::MasterRef;
use serde::{Deserialize, Serialize};

use crate::workstation::Trial;

pub const FILE: &str = "verdicts.json";

/// A master version whose guest did not come up on this NUC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadMaster {
    pub master: MasterRef,
    /// BLAKE3 (hex) of the signed manifest the version was judged on (see [`manifest_hash`]);
    /// empty if it could not be read.
    pub manifest: String,
    pub why: String,
    /// Unix seconds.
    pub when: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    pub trial: Option<Trial>,
    pub bad: Vec<BadMaster>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerdictsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is damaged ({reason}): the NUC forgets which masters failed here")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The hash a manifest is known by here: BLAKE3 of its signed bytes, hex.
pub fn manifest_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

impl Verdicts {
    /// The verdicts kept in `data`; none if there is no file yet.
    pub fn load(data: &Path) -> Result<Verdicts, VerdictsError> {
        let path = data.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| VerdictsError::Damaged {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Verdicts::default()),
            Err(source) => Err(VerdictsError::Read { path, source }),
        }
    }

    /// Writes them to `data`, durably.
    pub fn save(&self, data: &Path) -> Result<(), VerdictsError> {
        let path = data.join(FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| VerdictsError::Write {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        image_tools::durable::write_file(&path, &bytes, 0o644)
            .map_err(|source| VerdictsError::Write { path, source })
    }

    /// Records `b`, replacing what was known of the same version.
    pub fn mark_bad(&mut self, b: BadMaster) {
        self.bad.retain(|o| o.master != b.master);
        self.bad.push(b);
    }

    /// What is known against `m`, if it is bad here.
    pub fn bad(&self, m: &MasterRef) -> Option<&BadMaster> {
        self.bad.iter().find(|b| &b.master == m)
    }

    /// The versions not to prepare or swap in.
    pub fn bad_masters(&self) -> Vec<MasterRef> {
        self.bad.iter().map(|b| b.master.clone()).collect()
    }

    /// `m` is published now with the manifest hashed `hash`: if it was bad with another manifest,
    /// the DSI republished it and it may be tried again (the record is dropped; true).
    pub fn republished(&mut self, m: &MasterRef, hash: &str) -> bool {
        let before = self.bad.len();
        self.bad.retain(|b| &b.master != m || b.manifest == hash);
        self.bad.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: &str) -> MasterRef {
        MasterRef::new("demo", v).unwrap()
    }

    fn bad(v: &str, manifest: &[u8]) -> BadMaster {
        BadMaster {
            master: m(v),
            manifest: manifest_hash(manifest),
            why: "the guest's kernel panicked".into(),
            when: 1_900_000_000,
        }
    }

    #[test]
    fn a_bad_version_stays_bad_until_its_manifest_changes_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Verdicts::load(dir.path()).unwrap(), Verdicts::default());
        let mut v = Verdicts {
            trial: Some(Trial {
                master: m("3"),
                boots: 1,
            }),
            ..Verdicts::default()
        };
        v.mark_bad(bad("2", b"manifest of 2"));
        v.mark_bad(bad("2", b"manifest of 2"));
        assert_eq!(v.bad.len(), 1);
        v.save(dir.path()).unwrap();
        let mut back = Verdicts::load(dir.path()).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.bad_masters(), vec![m("2")]);
        // The same manifest again: still bad. Another one: republished.
        assert!(!back.republished(&m("2"), &manifest_hash(b"manifest of 2")));
        assert!(back.bad(&m("2")).is_some());
        assert!(!back.republished(&m("4"), &manifest_hash(b"x")));
        assert!(back.republished(&m("2"), &manifest_hash(b"signed again")));
        assert!(back.bad(&m("2")).is_none());
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_record() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{\"bad\": [").unwrap();
        let e = Verdicts::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
    }
}
