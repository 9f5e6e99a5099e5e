//! The CA's endorsement of the manifest-signing key: what binds that key to the CA a node
//! pinned, until a time.

use rustls::pki_types::CertificateDer;

use super::TrustError;
use crate::keys::PublicKey;

/// How long the controller endorses a manifest-signing key at a time: endorsements are renewed
/// with every plan, so a key the DSI retired drops out of every node within this time, whatever
/// a relay replays; and a site whose controller is away for less than this keeps verifying.
pub const ENDORSEMENT_SECS: i64 = 90 * 86_400;

/// A manifest-signing key endorsed by the CA until a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endorsed {
    pub key: PublicKey,
    pub until: i64,
    pub signature: Vec<u8>,
}

impl Endorsed {
    /// Checks that the CA in `ca_der` made this endorsement.
    pub fn check(&self, ca_der: &[u8]) -> Result<(), TrustError> {
        let ca = CertificateDer::from(ca_der);
        let cert = webpki::EndEntityCert::try_from(&ca).map_err(|e| {
            TrustError::BadEnrolment(format!("the CA certificate does not parse: {e}"))
        })?;
        cert.verify_signature(
            webpki::ring::ECDSA_P256_SHA256,
            &endorsement_message(&self.key, self.until),
            &self.signature,
        )
        .map_err(|_| {
            TrustError::BadEnrolment(format!(
                "the manifest-signing key {} is not endorsed by the pinned CA",
                self.key.short()
            ))
        })
    }

    pub fn to_wire(&self) -> crate::wire::EndorsedKey {
        crate::wire::EndorsedKey {
            key: self.key.as_bytes().to_vec(),
            until: self.until,
            endorsement: self.signature.clone(),
        }
    }

    /// The wire form, if its key is an Ed25519 public key (the endorsement is not checked here).
    pub fn from_wire(w: &crate::wire::EndorsedKey) -> Option<Endorsed> {
        let key = <[u8; 32]>::try_from(w.key.as_slice())
            .ok()
            .and_then(|k| PublicKey::from_bytes(&k))?;
        Some(Endorsed {
            key,
            until: w.until,
            signature: w.endorsement.clone(),
        })
    }
}

pub(super) fn endorsement_message(key: &PublicKey, until: i64) -> Vec<u8> {
    [ENDORSEMENT_CONTEXT, key.as_bytes(), &until.to_le_bytes()].concat()
}

const ENDORSEMENT_CONTEXT: &[u8] = b"nightcast manifest-signing key v2\0";
