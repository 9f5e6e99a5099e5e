//! A master's profile as the catalogue states it, signed by the controller, so that the relay it
//! crosses cannot change it.
//!
//! A [`Statement`] says "master NAME runs with this profile (or with none: the NUC's own), as of
//! revision R". The controller encodes it as JSON, signs `"nightcast profile v1\n" || bytes`
//! with its manifest-signing key (the same key and the same pinned, CA-endorsed key ring as
//! manifests: nothing new to distribute), and sends bytes, signer and signature in the site plan
//! ([`crate::wire::SignedProfile`]). The agent checks the signature against the keys it accepts
//! *before* it parses the bytes ([`open`]); only then does a [`VerifiedProfile`] exist.
//!
//! Guarantees: a relay (or anyone between the controller and the agent) that changes one byte of
//! a statement, or signs one of its own, is refused; a manifest's signature cannot pass for a
//! statement's (another context string). Not guaranteed here: freshness. A relay can withhold a
//! statement or replay an older one; the agent keeps the highest revision it has verified per
//! master (`nightcast_agent::profile_source`), so a replay only works on a NUC that never saw the
//! newer one (see `docs/PROTOCOL.md`).

use serde::{Deserialize, Serialize};

use super::Profile;
use crate::ids::MasterName;
use crate::keys::{PublicKey, SigningKey};
use crate::wire::SignedProfile;

const SIGNING_CONTEXT: &[u8] = b"nightcast profile v1\n";

/// A statement's bytes at most (a profile is a few hundred bytes).
pub const MAX_STATEMENT_BYTES: usize = 4096;

/// What the catalogue says of one master's profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub master: MasterName,
    /// Raised at each change (the controller's time of the change, in Unix seconds): of two
    /// statements for a master, the higher revision is the newer.
    pub revision: i64,
    /// `None`: the catalogue assigns none (the DSI cleared it): the NUC's own default applies.
    pub profile: Option<Profile>,
}

/// A statement whose signature matched one of the accepted keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProfile {
    statement: Statement,
    signer: PublicKey,
}

impl VerifiedProfile {
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    pub fn signer(&self) -> &PublicKey {
        &self.signer
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("profile statement of {0} bytes (at most {MAX_STATEMENT_BYTES})")]
    TooLarge(usize),
    #[error(
        "profile statement{claims} is signed by key {signer}, which this node does not accept"
    )]
    UnknownSigner { claims: String, signer: String },
    #[error("profile statement{claims}: the signature does not verify: it was altered on the way or forged")]
    BadSignature { claims: String },
    #[error("profile statement signed by the controller does not parse: {0}")]
    Malformed(String),
}

fn message(bytes: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, bytes].concat()
}

/// Signs `statement` with the controller's key.
pub fn sign(statement: &Statement, key: &SigningKey) -> SignedProfile {
    // Serialising a struct of plain fields cannot fail.
    let bytes = serde_json::to_vec(statement).unwrap_or_default();
    let signature = key.sign(&message(&bytes));
    SignedProfile {
        statement: bytes,
        signer: key.public().as_bytes().to_vec(),
        signature: signature.to_vec(),
    }
}

/// What an unverified statement claims to be about, for an error message only.
fn claims(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Claim {
        master: String,
    }
    match serde_json::from_slice::<Claim>(bytes) {
        Ok(c) => format!(
            " (claiming master {:?})",
            c.master.chars().take(64).collect::<String>()
        ),
        Err(_) => String::new(),
    }
}

/// Checks `signed` against `keys` (a node's accepted keys), then parses it.
pub fn open(signed: &SignedProfile, keys: &[PublicKey]) -> Result<VerifiedProfile, Refused> {
    let bytes = &signed.statement;
    if bytes.len() > MAX_STATEMENT_BYTES {
        return Err(Refused::TooLarge(bytes.len()));
    }
    let key = keys
        .iter()
        .find(|k| k.as_bytes().as_slice() == signed.signer.as_slice())
        .ok_or_else(|| Refused::UnknownSigner {
            claims: claims(bytes),
            signer: crate::ids::hex(signed.signer.get(..8).unwrap_or(&signed.signer)),
        })?;
    let signature: [u8; 64] =
        signed
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Refused::BadSignature {
                claims: claims(bytes),
            })?;
    if !key.verify(&message(bytes), &signature) {
        return Err(Refused::BadSignature {
            claims: claims(bytes),
        });
    }
    let statement: Statement =
        serde_json::from_slice(bytes).map_err(|e| Refused::Malformed(e.to_string()))?;
    Ok(VerifiedProfile {
        statement,
        signer: *key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{DiskModel, Firmware};

    fn statement() -> Statement {
        Statement {
            master: MasterName::new("win7").unwrap(),
            revision: 1_796_000_000,
            profile: Some(Profile {
                firmware: Firmware::Bios,
                disk: DiskModel::Sata,
                ..Profile::default()
            }),
        }
    }

    #[test]
    fn a_signed_statement_opens_with_the_controllers_key() {
        let key = SigningKey::from_seed([7; 32]);
        let signed = sign(&statement(), &key);
        let v = open(&signed, &[key.public()]).unwrap();
        assert_eq!(v.statement(), &statement());
        assert_eq!(v.signer(), &key.public());
        // Also during a key rotation, among several accepted keys.
        let other = SigningKey::from_seed([8; 32]).public();
        assert!(open(&signed, &[other, key.public()]).is_ok());
        // A cleared profile is a statement too.
        let cleared = Statement {
            profile: None,
            ..statement()
        };
        let v = open(&sign(&cleared, &key), &[key.public()]).unwrap();
        assert_eq!(v.statement().profile, None);
    }

    #[test]
    fn a_statement_altered_on_the_way_or_signed_by_another_key_is_refused() {
        let key = SigningKey::from_seed([7; 32]);
        let signed = sign(&statement(), &key);
        // The relay turns SATA into virtio: one word of the bytes.
        let text = String::from_utf8(signed.statement.clone()).unwrap();
        let altered = SignedProfile {
            statement: text.replace("sata", "virtio").into_bytes(),
            ..signed.clone()
        };
        let e = open(&altered, &[key.public()]).unwrap_err();
        assert!(matches!(e, Refused::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("win7"), "{e}");
        // Every single byte flipped is refused.
        for i in 0..signed.statement.len() {
            let mut bytes = signed.statement.clone();
            bytes[i] ^= 0x20;
            let flipped = SignedProfile {
                statement: bytes,
                ..signed.clone()
            };
            assert!(open(&flipped, &[key.public()]).is_err(), "byte {i}");
        }
        // The relay's own key, or its own signature with ours named: refused.
        let evil = SigningKey::from_seed([9; 32]);
        let forged = sign(&statement(), &evil);
        assert!(matches!(
            open(&forged, &[key.public()]),
            Err(Refused::UnknownSigner { .. })
        ));
        let disguised = SignedProfile {
            signer: key.public().as_bytes().to_vec(),
            ..forged
        };
        assert!(matches!(
            open(&disguised, &[key.public()]),
            Err(Refused::BadSignature { .. })
        ));
        let truncated = SignedProfile {
            signature: signed.signature[..10].to_vec(),
            ..signed.clone()
        };
        assert!(open(&truncated, &[key.public()]).is_err());
        assert!(open(&signed, &[]).is_err());
        let big = SignedProfile {
            statement: vec![b' '; MAX_STATEMENT_BYTES + 1],
            ..signed
        };
        assert_eq!(
            open(&big, &[key.public()]),
            Err(Refused::TooLarge(MAX_STATEMENT_BYTES + 1))
        );
    }

    #[test]
    fn a_manifest_signature_never_passes_for_a_statement() {
        // The contexts differ: bytes signed as something else do not verify as a statement.
        let key = SigningKey::from_seed([7; 32]);
        let bytes = serde_json::to_vec(&statement()).unwrap();
        let sig = key.sign(&[b"nightcast manifest v1\n".as_slice(), &bytes].concat());
        let signed = SignedProfile {
            statement: bytes,
            signer: key.public().as_bytes().to_vec(),
            signature: sig.to_vec(),
        };
        assert!(open(&signed, &[key.public()]).is_err());
    }
}
