//! The web console's users (`console_users`): name, role, the sites they see, and the hash of
//! their password (`console::password`), never the password itself.

use rusqlite::{params, OptionalExtension};

use super::{Db, DbError};

/// A console user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    /// `admin`, `operator` or `readonly`.
    pub role: String,
    /// The sites an operator or a read-only user sees, comma-separated; empty: every site.
    pub sites: String,
    /// argon2id, PHC string form.
    pub password_hash: String,
    pub created_at: i64,
}

impl Db {
    /// Adds a user, or replaces the role, sites and password of an existing one (`user add` is
    /// also how a forgotten password is reset). Returns whether the user existed.
    pub fn put_user(&self, user: &UserRow) -> Result<bool, DbError> {
        let existed = self.user(&user.name)?.is_some();
        self.conn.execute(
            "INSERT INTO console_users (name, role, sites, password_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET role = ?2, sites = ?3, password_hash = ?4",
            params![
                user.name,
                user.role,
                user.sites,
                user.password_hash,
                user.created_at
            ],
        )?;
        Ok(existed)
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRow>, DbError> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, role, sites, password_hash, created_at FROM console_users
                 WHERE name = ?1",
                [name],
                |r| {
                    Ok(UserRow {
                        name: r.get(0)?,
                        role: r.get(1)?,
                        sites: r.get(2)?,
                        password_hash: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Removes a user; returns whether there was one.
    pub fn remove_user(&self, name: &str) -> Result<bool, DbError> {
        Ok(self
            .conn
            .execute("DELETE FROM console_users WHERE name = ?1", [name])?
            > 0)
    }

    /// Every user's name and role, by name.
    pub fn users(&self) -> Result<Vec<(String, String, String)>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role, sites FROM console_users ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, role: &str) -> UserRow {
        UserRow {
            name: name.into(),
            role: role.into(),
            sites: String::new(),
            password_hash: "$argon2id$x".into(),
            created_at: 1,
        }
    }

    #[test]
    fn a_user_is_added_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db")).unwrap();
        assert!(!db.put_user(&row("alice", "admin")).unwrap());
        assert!(db.put_user(&row("alice", "readonly")).unwrap());
        assert_eq!(db.user("alice").unwrap().unwrap().role, "readonly");
        assert_eq!(db.users().unwrap().len(), 1);
        assert!(db.remove_user("alice").unwrap());
        assert!(db.user("alice").unwrap().is_none());
    }

    #[test]
    fn the_schema_refuses_an_unknown_role() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db")).unwrap();
        assert!(db.put_user(&row("bob", "root")).is_err());
    }
}
