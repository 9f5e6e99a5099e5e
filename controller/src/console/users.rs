//! Console users: roles and what each may see and do (pure), passwords hashed with argon2id
//! (`hash`, `verify`), and `add`, what `nightcast-controller user add` runs.
//!
//! Roles: `admin` (the DSI: every site, every action), `operator` (the sites given, or every
//! site: sees them and acts on them), `readonly` (the sites given, or every site: sees, never
//! acts).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use image_tools::SiteId;

use crate::db::{Db, UserRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Operator,
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::ReadOnly => "readonly",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "readonly" | "read-only" => Ok(Role::ReadOnly),
            other => Err(format!(
                "role {other:?} is none of admin, operator, readonly"
            )),
        }
    }
}

/// A logged-in user: who, their role, and the sites they see (empty: every site).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub sites: Vec<SiteId>,
}

impl User {
    /// Whether the user sees `site`.
    pub fn sees(&self, site: &str) -> bool {
        self.role == Role::Admin
            || self.sites.is_empty()
            || self.sites.iter().any(|s| s.as_str() == site)
    }

    /// Whether the user may act at `site` (approve a NUC...).
    pub fn acts_at(&self, site: &str) -> bool {
        self.role != Role::ReadOnly && self.sees(site)
    }

    /// The user a stored row describes.
    pub fn from_row(row: &UserRow) -> Result<User, String> {
        let sites = row
            .sites
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<SiteId>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(User {
            name: row.name.clone(),
            role: row.role.parse()?,
            sites,
        })
    }
}

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

/// The argon2id hash of `password` (PHC string: algorithm, parameters, salt and hash), with
/// the crate's default parameters (19 MiB, 2 passes: OWASP's recommendation) and a random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the stored `phc` hash (a malformed one matches nothing).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches, verified against when a name is unknown, so that a wrong name
/// takes as long to refuse as a wrong password.
pub const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$bmlnaHRjYXN0ZGVjb3k$Jt7Zb8ZbY4d5t8Cq8QfJm0k1m8m3o7yq2mQ9nq8k1vI";

/// What `user add` checks and stores. Returns whether the user existed (then their role, sites and
/// password were replaced).
pub fn add(
    db: &Db,
    name: &str,
    role: Role,
    sites: &[SiteId],
    password: &str,
    now: i64,
) -> anyhow::Result<bool> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@".contains(c))
    {
        anyhow::bail!(
            "user name {name:?}: 1 to 64 letters, digits, `.`, `_`, `-` or `@` (it is typed at the login)"
        );
    }
    if password.chars().count() < MIN_PASSWORD {
        anyhow::bail!("the password of {name} is too short: {MIN_PASSWORD} characters at least");
    }
    if role == Role::Admin && !sites.is_empty() {
        anyhow::bail!("an admin sees every site: give --sites to an operator or a readonly user");
    }
    let known: Vec<String> = db.sites()?.into_iter().map(|s| s.name).collect();
    if let Some(s) = sites
        .iter()
        .find(|s| !known.iter().any(|k| k == s.as_str()))
    {
        anyhow::bail!(
            "no site {:?}: add it first with `nightcast site add`",
            s.as_str()
        );
    }
    let row = UserRow {
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        sites: sites
            .iter()
            .map(SiteId::as_str)
            .collect::<Vec<_>>()
            .join(","),
        password_hash: hash(password).map_err(anyhow::Error::msg)?,
        created_at: now,
    };
    Ok(db.put_user(&row)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, sites: &[&str]) -> User {
        User {
            name: "u".into(),
            role,
            sites: sites.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn roles_decide_what_is_seen_and_what_may_be_done() {
        let admin = user(Role::Admin, &[]);
        let op = user(Role::Operator, &["lyon"]);
        let ro = user(Role::ReadOnly, &["lyon"]);
        let ro_all = user(Role::ReadOnly, &[]);
        assert!(admin.sees("paris") && admin.acts_at("paris"));
        assert!(op.sees("lyon") && op.acts_at("lyon"));
        assert!(!op.sees("paris") && !op.acts_at("paris"));
        assert!(ro.sees("lyon") && !ro.acts_at("lyon"));
        assert!(!ro.sees("paris"));
        assert!(ro_all.sees("paris") && !ro_all.acts_at("paris"));
    }

    #[test]
    fn a_password_verifies_against_its_hash_only() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterz", &h));
        assert!(!verify("correct horse battery", "not a hash"));
        assert!(!verify("anything", DECOY));
        // Salted: the same password hashes differently.
        assert_ne!(h, hash("correct horse battery").unwrap());
    }

    #[test]
    fn add_refuses_short_passwords_bad_names_and_unknown_sites() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db")).unwrap();
        let lyon: SiteId = "lyon".parse().unwrap();
        assert!(add(&db, "alice", Role::Admin, &[], "short", 0)
            .unwrap_err()
            .to_string()
            .contains("too short"));
        assert!(add(&db, "a b", Role::Admin, &[], "long enough pw", 0).is_err());
        let e = add(
            &db,
            "bob",
            Role::Operator,
            std::slice::from_ref(&lyon),
            "long enough pw",
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no site \"lyon\""), "{e}");
        assert!(!add(&db, "alice", Role::Admin, &[], "long enough pw", 0).unwrap());
        let row = db.user("alice").unwrap().unwrap();
        assert!(verify("long enough pw", &row.password_hash));
        assert_eq!(User::from_row(&row).unwrap().role, Role::Admin);
    }
}
