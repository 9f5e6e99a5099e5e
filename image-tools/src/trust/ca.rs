//! The controller's certificate authority: its key and certificate, the certificates it issues,
//! and the node keys they bind.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::endorse::endorsement_message;
use super::{
    cert_err, fingerprint, Credentials, Endorsed, Identity, TrustError, Validity, SERVER_NAME,
};
use crate::durable;
use crate::ids::hex;
use crate::keys::PublicKey;

/// The controller's certificate authority.
pub struct Ca {
    pub(super) key: KeyPair,
    pub(super) params: CertificateParams,
    der: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({})", hex(&self.fingerprint()))
    }
}

impl Ca {
    /// A new CA with a fresh key, whose certificate is valid for `validity` (see
    /// [`Validity::ca`]).
    pub fn generate(validity: Validity) -> Result<Ca, TrustError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let params = Ca::params_for(&key)?;
        let mut dated = params.clone();
        validity.apply(&mut dated)?;
        let der = dated.self_signed(&key).map_err(cert_err)?.der().to_vec();
        Ok(Ca { key, params, der })
    }

    /// The CA's signature over the manifest-signing public key and `until`: what binds that key
    /// to the CA a node pinned, until then ([`Endorsed::check`]).
    pub fn endorse(&self, key: &PublicKey, until: i64) -> Result<Endorsed, TrustError> {
        use rcgen::SigningKey as _;
        let signature = self
            .key
            .sign(&endorsement_message(key, until))
            .map_err(cert_err)?;
        Ok(Endorsed {
            key: *key,
            until,
            signature,
        })
    }

    /// The CA's parameters are derived from its key, so that a saved key is all it takes to sign.
    pub(super) fn params_for(key: &KeyPair) -> Result<CertificateParams, TrustError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        let id = hex(&blake3::hash(key.public_key_raw()).as_bytes()[..8]);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("nightcast CA {id}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(params)
    }

    /// Writes `ca.key` (0600) and `ca.crt` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TrustError> {
        for (name, bytes, mode) in [
            ("ca.key", self.key.serialize_der(), 0o600),
            ("ca.crt", self.der.clone(), 0o644),
        ] {
            let path = dir.join(name);
            durable::write_file(&path, &bytes, mode)
                .map_err(|source| TrustError::Write { path, source })?;
        }
        Ok(())
    }

    pub fn load(dir: &Path) -> Result<Ca, TrustError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| TrustError::Read { path, source })
        };
        let key_path = dir.join("ca.key");
        let key = KeyPair::try_from(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read(
            "ca.key",
        )?)))
        .map_err(|e| TrustError::Damaged {
            path: key_path,
            what: e.to_string(),
        })?;
        let params = Ca::params_for(&key)?;
        Ok(Ca {
            key,
            params,
            der: read("ca.crt")?,
        })
    }

    pub fn certificate(&self) -> &[u8] {
        &self.der
    }

    pub fn fingerprint(&self) -> [u8; 16] {
        fingerprint(&self.der)
    }

    /// A leaf's parameters: every certificate is for client and server authentication. An
    /// agent's serves only its site's other agents (peer sharing): whom a client accepts as server
    /// is decided by the identity in the certificate (`peer::Expect`), and nothing that expects a
    /// relay or the controller accepts an agent.
    fn leaf_params(
        identity: &Identity,
        validity: Validity,
    ) -> Result<CertificateParams, TrustError> {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_string());
        params
            .subject_alt_names
            .push(SanType::URI(identity.uri().try_into().map_err(cert_err)?));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(cert_err)?;
        serial[0] &= 0x7f; // a positive INTEGER
        serial[0] |= 0x01; // and never a leading zero byte (DER would drop it)
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        validity.apply(&mut params)?;
        Ok(params)
    }

    /// A certificate for `identity` binding `public_key`, the raw P-256 point (65 bytes) of the key
    /// the node made for itself, valid for `validity`.
    pub fn sign_public_key(
        &self,
        identity: &Identity,
        public_key: &[u8],
        validity: Validity,
    ) -> Result<Vec<u8>, TrustError> {
        if public_key.len() != 65 || public_key[0] != 4 {
            return Err(TrustError::Cert(
                "the public key is not an uncompressed P-256 point".into(),
            ));
        }
        let spki = RawP256(public_key);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = Ca::leaf_params(identity, validity)?
            .signed_by(&spki, &issuer)
            .map_err(cert_err)?;
        Ok(cert.der().to_vec())
    }

    /// A key and certificate for a web server answering to `names` (DNS names, or IP addresses
    /// written as such): the controller's console. Server authentication only, and no nightcast
    /// identity in it, so it can never pass for a relay or the controller on the QUIC side.
    pub fn issue_web(
        &self,
        names: &[String],
        validity: Validity,
    ) -> Result<Credentials, TrustError> {
        if names.is_empty() {
            return Err(TrustError::Cert(
                "a web certificate needs a host name".into(),
            ));
        }
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(cert_err)?;
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        validity.apply(&mut params)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
        Ok(Credentials {
            certificate: cert.der().to_vec(),
            key: key.serialize_der(),
            ca: self.der.clone(),
            bridge: Vec::new(),
        })
    }

    /// A key and certificate for `identity`, made here (for the controller itself, and for tests).
    pub fn issue(
        &self,
        identity: &Identity,
        validity: Validity,
    ) -> Result<Credentials, TrustError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let certificate = self.sign_public_key(identity, key.public_key_raw(), validity)?;
        Ok(Credentials {
            certificate,
            key: key.serialize_der(),
            ca: self.der.clone(),
            bridge: Vec::new(),
        })
    }
}

/// A fresh P-256 key pair for a node about to enrol: (PKCS#8 private key, raw public point).
pub fn node_key() -> Result<(Vec<u8>, Vec<u8>), TrustError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    Ok((key.serialize_der(), key.public_key_raw().to_vec()))
}

/// The raw public point of a PKCS#8 P-256 private key (one made by [`node_key`]).
pub fn public_key_of(pkcs8: &[u8]) -> Result<Vec<u8>, TrustError> {
    let key = KeyPair::try_from(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pkcs8.to_vec(),
    )))
    .map_err(cert_err)?;
    Ok(key.public_key_raw().to_vec())
}

/// A node's public key as sent at enrolment (the node keeps the private half).
struct RawP256<'a>(&'a [u8]);

impl PublicKeyData for RawP256<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}
