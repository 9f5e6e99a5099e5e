//! Typed identifiers. Each one validates on construction, so a value of the type is always usable as
//! is: a [`ChunkId`] is 32 bytes, a [`MasterName`] can be a file name and never a path.

use std::fmt;
use std::str::FromStr;

/// The BLAKE3 hash of a chunk's uncompressed bytes. `Display` prints all 64 hex digits;
/// [`ChunkId::short`] prints 12 for logs.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    /// Hashes `data` (uncompressed chunk bytes).
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> ChunkId {
        ChunkId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex(&self.0[..6])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.short())
    }
}

impl FromStr for ChunkId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = unhex::<32>(s).ok_or_else(|| IdError::ChunkId(s.chars().take(80).collect()))?;
        Ok(ChunkId(bytes))
    }
}

/// An identifier was not of its type's form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{0:?} is not a chunk id (64 hex digits)")]
    ChunkId(String),
    #[error("{what} {value:?} is not allowed: use 1 to 64 characters among a-z A-Z 0-9 . _ - , starting with a letter or digit")]
    Name { what: &'static str, value: String },
}

/// Checks a name that ends up in file names and URLs: 1..=64 of `[A-Za-z0-9._-]`, starting with an
/// alphanumeric (so neither `..`, `.hidden` nor `-flag`), never containing `/`.
fn check_name(what: &'static str, value: &str) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdError::Name {
            what,
            value: value.chars().take(80).collect(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                $name::new(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl $name {
            pub fn new(value: &str) -> Result<Self, IdError> {
                check_name($what, value)?;
                Ok($name(value.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        /// Stored as its text; a stored value that is not a valid name is a conversion error.
        #[cfg(feature = "sql")]
        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        #[cfg(feature = "sql")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                $name::new(value.as_str()?)
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

name_type!(
    /// A master's name, such as `win10-bureautique`. Safe as a file name.
    MasterName,
    "master name"
);
name_type!(
    /// A master's version label, such as `2026-11` or `v3`. Safe as a file name.
    MasterVersion,
    "master version"
);

name_type!(
    /// A site (a building with its own VLAN and relay), such as `lyon-mairie`.
    SiteId,
    "site id"
);
name_type!(
    /// A relay's or NUC's id, such as a hardware UUID. Safe as a file name.
    NodeId,
    "node id"
);

name_type!(
    /// A training room of a site, such as `salle-1`. Named in URLs, calendars and logs.
    RoomName,
    "room name"
);
name_type!(
    /// A seat (one NUC's place) in a room, such as `poste-01`.
    SeatName,
    "seat name"
);

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Parses exactly `N` bytes of hex (either case); `None` on any other input.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The bytes of a hex string of any even length (at most 512 digits: serials, signatures),
/// `None` if it is not one.
pub fn unhex_vec(s: &str) -> Option<Vec<u8>> {
    unhex_upto(s, 256)
}

/// Bytes from hex of at most `max` bytes (a certificate: a few kilobytes).
pub fn unhex_upto(s: &str, max: usize) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 2 != 0 || s.len() > max.saturating_mul(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_round_trips_through_hex() {
        let id = ChunkId::of(b"hello");
        let parsed: ChunkId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(id.short().len(), 12);
        assert!("zz".parse::<ChunkId>().is_err());
        assert!(id.to_string()[..63].parse::<ChunkId>().is_err());
    }

    #[test]
    fn names_cannot_escape_a_directory() {
        for bad in [
            "", "..", "../etc", "a/b", ".hidden", "-rf", "a b", "é", "x\0",
        ] {
            assert!(MasterName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(MasterName::new(&"a".repeat(65)).is_err());
        for bad in ["../x", "", "a\u{7}b", "salle\n1", &"s".repeat(65)] {
            let e = RoomName::new(bad).unwrap_err().to_string();
            assert!(e.starts_with("room name"), "{e}");
            let e = SeatName::new(bad).unwrap_err().to_string();
            assert!(e.starts_with("seat name"), "{e}");
        }
        for good in ["win10", "Win10-bureautique_v2.1", "7", &"a".repeat(64)] {
            assert!(MasterName::new(good).is_ok(), "{good:?} refused");
        }
    }
}
