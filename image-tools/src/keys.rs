//! Manifest-signing keys (Ed25519) and their files.
//!
//! A key file is one line of text: `nightcast-signing-key-v1 <64 hex digits>` (the secret seed, mode
//! 0600) or `nightcast-public-key-v1 <64 hex digits>`. Text so that a DSI can paste a public key into a
//! relay's or agent's configuration.

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer;

use crate::durable;
use crate::ids::{hex, unhex};

const SECRET_TAG: &str = "nightcast-signing-key-v1";
const PUBLIC_TAG: &str = "nightcast-public-key-v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a nightcast {what} (expected one line `{tag} <64 hex digits>`)")]
    Malformed {
        path: PathBuf,
        what: &'static str,
        tag: &'static str,
    },
    #[error("cannot write key file {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists: refusing to overwrite a signing key (remove it first if you mean it)")]
    Exists { path: PathBuf },
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

/// The controller's manifest-signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", self.public())
    }
}

/// The public half, pinned by relays and agents.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(self.0.as_bytes()))
    }
}

impl SigningKey {
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SigningKey::from_seed(seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let seed = read_tagged(path, SECRET_TAG, "signing key")?;
        Ok(SigningKey::from_seed(seed))
    }

    /// Writes `path` (mode 0600) and `path.pub`, durably. Refuses to replace an existing key.
    pub fn save(&self, path: &Path) -> Result<PathBuf, KeyError> {
        if path.exists() {
            return Err(KeyError::Exists {
                path: path.to_owned(),
            });
        }
        let secret = format!("{SECRET_TAG} {}\n", hex(self.0.as_bytes()));
        durable::write_file(path, secret.as_bytes(), 0o600).map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })?;
        let pub_path = public_path(path);
        self.public().save(&pub_path)?;
        Ok(pub_path)
    }
}

/// `KEY` -> `KEY.pub`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .ok()
            .map(PublicKey)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// 16 hex digits, enough to tell keys apart in a log.
    pub fn short(&self) -> String {
        hex(&self.0.as_bytes()[..8])
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        // Strict: also refuses weak keys and non-canonical signatures (it implies `verify`).
        self.0.verify_strict(message, &signature).is_ok()
    }

    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let malformed = || KeyError::Malformed {
            path: path.to_owned(),
            what: "public key",
            tag: PUBLIC_TAG,
        };
        let bytes = read_tagged(path, PUBLIC_TAG, "public key")?;
        PublicKey::from_bytes(&bytes).ok_or_else(malformed)
    }

    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let line = format!("{PUBLIC_TAG} {self}\n");
        durable::write_file(path, line.as_bytes(), 0o644).map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

fn read_tagged(path: &Path, tag: &'static str, what: &'static str) -> Result<[u8; 32], KeyError> {
    let text = fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let malformed = || KeyError::Malformed {
        path: path.to_owned(),
        what,
        tag,
    };
    let text = std::str::from_utf8(&text).map_err(|_| malformed())?;
    let (found_tag, value) = text.trim().split_once(' ').ok_or_else(malformed)?;
    if found_tag != tag {
        return Err(malformed());
    }
    unhex::<32>(value.trim()).ok_or_else(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_round_trip_and_the_secret_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let key = SigningKey::generate().unwrap();
        let pub_path = key.save(&path).unwrap();
        assert_eq!(pub_path, dir.path().join("signing.key.pub"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SigningKey::load(&path).unwrap().public(), key.public());
        assert_eq!(PublicKey::load(&pub_path).unwrap(), key.public());
        assert!(matches!(key.save(&path), Err(KeyError::Exists { .. })));
        // A secret key is not a public key, and the error says which file and form.
        let err = PublicKey::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("signing.key") && err.contains(PUBLIC_TAG),
            "{err}"
        );
    }

    #[test]
    fn signatures_bind_message_and_key() {
        let a = SigningKey::from_seed([1; 32]);
        let b = SigningKey::from_seed([2; 32]);
        let sig = a.sign(b"msg");
        assert!(a.public().verify(b"msg", &sig));
        assert!(!a.public().verify(b"msh", &sig));
        assert!(!b.public().verify(b"msg", &sig));
    }
}
