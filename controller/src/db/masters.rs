//! Master versions: their signed manifests (verified by the caller before they are recorded),
//! and removal, refused while an upcoming session needs the version.

use image_tools::wire::MasterRef;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{Db, DbError};

impl Db {
    /// Records a master version from its signed manifest bytes (verified by the caller).
    pub fn add_master(
        &self,
        manifest: &image_tools::Manifest,
        bytes: &[u8],
        now: i64,
    ) -> Result<(), DbError> {
        let s = manifest.summary();
        self.conn.execute(
            "INSERT INTO masters (name, version, size, stored_bytes, manifest, imported_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                manifest.name.as_str(),
                manifest.version.as_str(),
                manifest.size as i64,
                s.unique_stored_bytes as i64,
                bytes,
                now
            ],
        )?;
        Ok(())
    }

    /// Removes a master version, refused while a session from `now` on needs it.
    pub fn remove_master(&mut self, name: &str, version: &str, now: i64) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (count, first): (u64, Option<String>) = tx.query_row(
            "SELECT COUNT(*), MIN(site || '/' || room || ' at ' || start) FROM sessions
             WHERE master = ?1 AND version = ?2 AND end > ?3",
            params![name, version, now],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )?;
        if count > 0 {
            return Err(DbError::MasterInUse {
                name: name.to_owned(),
                version: version.to_owned(),
                sessions: count,
                first: first.unwrap_or_default(),
            });
        }
        // Past sessions go with it; the foreign key keeps any other reference from dangling.
        tx.execute(
            "DELETE FROM sessions WHERE master = ?1 AND version = ?2",
            params![name, version],
        )?;
        let n = tx.execute(
            "DELETE FROM masters WHERE name = ?1 AND version = ?2",
            params![name, version],
        )?;
        if n == 0 {
            return Err(DbError::NoMaster {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        tx.commit()?;
        Ok(())
    }

    /// Every master version: name, version, image size, stored bytes of its distinct chunks.
    pub fn masters(&self) -> Result<Vec<(String, String, u64, u64)>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, version, size, stored_bytes FROM masters ORDER BY name, version",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces a master's signed manifest by the same one signed with another key (a key
    /// rotation).
    pub fn replace_manifest(
        &mut self,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<(), DbError> {
        let changed = self.conn.execute(
            "UPDATE masters SET manifest = ?3, revision = revision + 1
             WHERE name = ?1 AND version = ?2",
            params![name, version, bytes],
        )?;
        if changed == 0 {
            return Err(DbError::NoMaster {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        Ok(())
    }

    /// Every master version with its signed manifest bytes.
    pub fn manifests(&self) -> Result<Vec<(MasterRef, Vec<u8>)>, DbError> {
        self.per_version("manifest")
    }

    /// Every master version with the revision of its manifest (raised each time the manifest is
    /// signed again): what a reader that keeps manifests in memory compares to know what to read.
    pub fn manifest_revisions(&self) -> Result<Vec<(MasterRef, i64)>, DbError> {
        self.per_version("revision")
    }

    /// Every master version with one column of its row (`column` is one of ours, never input).
    fn per_version<T: rusqlite::types::FromSql>(
        &self,
        column: &'static str,
    ) -> Result<Vec<(MasterRef, T)>, DbError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT name, version, {column} FROM masters ORDER BY name, version"
        ))?;
        let rows = stmt.query_map([], |r| {
            let master = MasterRef {
                name: r.get(0)?,
                version: r.get(1)?,
            };
            Ok((master, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A master version's signed manifest and its revision, if the version exists.
    pub fn manifest(&self, name: &str, version: &str) -> Result<Option<(Vec<u8>, i64)>, DbError> {
        Ok(self
            .conn
            .query_row(
                "SELECT manifest, revision FROM masters WHERE name = ?1 AND version = ?2",
                params![name, version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The chunk classes of every master version (see `plan::Classes`). Costs a pass over every
    /// manifest: the controller keeps the result until the set of masters changes (`ClassCache`).
    pub fn classes(&self) -> Result<crate::plan::Classes, DbError> {
        // Manifests were verified when imported; here they only give chunk lists and sizes.
        let mut stmt = self
            .conn
            .prepare("SELECT name, version, manifest FROM masters")?;
        let manifests = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|(name, version, bytes)| {
                image_tools::Manifest::decode_unverified(&bytes)
                    .map(|u| u.manifest)
                    .map_err(|e| {
                        DbError::Invalid(format!(
                            "stored manifest of {name} {version} is damaged: {e}"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::plan::Classes::from_manifests(
            &manifests.iter().collect::<Vec<_>>(),
        ))
    }
}
