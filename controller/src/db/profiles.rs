//! The machine profile the DSI assigns to each master (schema 16): one per master name, for
//! every version of it. What the site plans carry, signed (`catalog`).

use image_tools::profile::Profile;
use image_tools::MasterName;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{Db, DbError};

/// A master's profile as the catalogue holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRow {
    pub name: MasterName,
    /// `None`: cleared (the NUCs' own profiles apply).
    pub profile: Option<Profile>,
    /// Only grows: an agent keeps the statement of the highest revision it verified.
    pub revision: i64,
    pub set_at: i64,
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<(MasterName, Option<String>, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn parsed(
    (name, profile, revision, set_at): (MasterName, Option<String>, i64, i64),
) -> Result<ProfileRow, DbError> {
    let profile = match profile {
        Some(json) => Some(serde_json::from_str(&json).map_err(|e| {
            DbError::Invalid(format!(
                "the stored profile of master {name} does not read: {e}"
            ))
        })?),
        None => None,
    };
    Ok(ProfileRow {
        name,
        profile,
        revision,
        set_at,
    })
}

impl Db {
    /// Assigns `profile` to every version of master `name` (`None` clears it), at `now`. Refused
    /// for a master the catalogue has no version of. The revision is `now`, or one more than the
    /// last if the clock stepped back.
    pub fn set_profile(
        &mut self,
        name: &MasterName,
        profile: Option<&Profile>,
        now: i64,
    ) -> Result<ProfileRow, DbError> {
        if !self.has_master(name)? {
            return Err(DbError::NoMasterName(name.to_string()));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT revision FROM master_profiles WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        let revision = last.map_or(now, |l| now.max(l.saturating_add(1)));
        let json = match profile {
            Some(p) => Some(serde_json::to_string(p).map_err(|e| DbError::Invalid(e.to_string()))?),
            None => None,
        };
        tx.execute(
            "INSERT INTO master_profiles (name, profile, revision, set_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET profile = ?2, revision = ?3, set_at = ?4",
            params![name, json, revision, now],
        )?;
        tx.commit()?;
        Ok(ProfileRow {
            name: name.clone(),
            profile: profile.cloned(),
            revision,
            set_at: now,
        })
    }

    /// Every master's profile statement (cleared ones too: they must reach the NUCs).
    pub fn profiles(&self) -> Result<Vec<ProfileRow>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, profile, revision, set_at FROM master_profiles ORDER BY name")?;
        let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(parsed).collect()
    }

    /// Master `name`'s profile, if one was ever set.
    pub fn profile(&self, name: &MasterName) -> Result<Option<ProfileRow>, DbError> {
        let found = self
            .conn
            .query_row(
                "SELECT name, profile, revision, set_at FROM master_profiles WHERE name = ?1",
                params![name],
                row,
            )
            .optional()?;
        found.map(parsed).transpose()
    }

    /// Whether the catalogue has a version of master `name`.
    pub fn has_master(&self, name: &MasterName) -> Result<bool, DbError> {
        self.exists(
            "SELECT 1 FROM masters WHERE name = ?1 LIMIT 1",
            params![name],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::profile::{DiskModel, Firmware};

    #[test]
    fn a_profile_is_set_for_a_known_master_and_its_revision_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("catalogue.db")).unwrap();
        let (m, b) = crate::testing::manifest("win7", "1", 1);
        db.add_master(&m, &b, 0).unwrap();
        let win7 = MasterName::new("win7").unwrap();
        let bios = Profile {
            firmware: Firmware::Bios,
            disk: DiskModel::Sata,
            ..Profile::default()
        };
        assert_eq!(db.profile(&win7).unwrap(), None);
        let first = db.set_profile(&win7, Some(&bios), 1000).unwrap();
        assert_eq!(first.revision, 1000);
        assert_eq!(db.profile(&win7).unwrap(), Some(first));
        // The clock stepped back: the revision still grows.
        let cleared = db.set_profile(&win7, None, 900).unwrap();
        assert_eq!(cleared.revision, 1001);
        assert_eq!(db.profiles().unwrap(), vec![cleared]);
        // An unknown master is refused, naming it.
        let e = db
            .set_profile(&MasterName::new("win8").unwrap(), Some(&bios), 1000)
            .unwrap_err();
        assert!(
            matches!(e, DbError::NoMasterName(ref n) if n == "win8"),
            "{e}"
        );
    }
}
