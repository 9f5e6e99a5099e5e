//! Enrolment tokens: `nc1-<secret>-<CA fingerprint>`, single use; the controller keeps only a
//! hash of the secret.

use super::TrustError;
use crate::ids::{hex, unhex};

/// An enrolment token as printed for the DSI.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub secret: [u8; 16],
    pub ca_fingerprint: [u8; 16],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(ca {})", hex(&self.ca_fingerprint))
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nc1-{}-{}", hex(&self.secret), hex(&self.ca_fingerprint))
    }
}

impl std::str::FromStr for Token {
    type Err = TrustError;
    fn from_str(s: &str) -> Result<Token, TrustError> {
        let bad = || TrustError::BadToken(s.chars().take(80).collect());
        let mut parts = s.trim().split('-');
        if parts.next() != Some("nc1") {
            return Err(bad());
        }
        let secret = parts.next().and_then(unhex::<16>).ok_or_else(bad)?;
        let ca_fingerprint = parts.next().and_then(unhex::<16>).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Token {
            secret,
            ca_fingerprint,
        })
    }
}

impl Token {
    /// A new token naming the CA `ca_fingerprint`, with a fresh random secret.
    pub fn generate(ca_fingerprint: [u8; 16]) -> Result<Token, TrustError> {
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret).map_err(|e| TrustError::Cert(e.to_string()))?;
        Ok(Token {
            secret,
            ca_fingerprint,
        })
    }

    /// What the controller keeps of a token: BLAKE3 of the secret, in hex (never the secret).
    pub fn secret_hash(&self) -> String {
        hex(blake3::hash(&self.secret).as_bytes())
    }
}
