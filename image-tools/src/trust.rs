//! Who may talk to whom: the controller's certificate authority, the certificates it issues, and the
//! one-time tokens that let a new relay or agent enrol (see `docs/PROTOCOL.md`, "Trust").
//!
//! Every certificate carries its holder's [`Identity`] as a URI subject-alternative name,
//! `nightcast://<role>/<site>/<node>`, and the DNS name [`SERVER_NAME`]; a server learns a peer's
//! role, site and id from the certificate it presented, never from what the peer says. Private keys
//! are made where they are used: an enrolling node sends only its public key.
//!
//! A token is `nc1-<secret>-<CA fingerprint>`: a node that has nothing else learns from the token
//! which CA to trust, so its first connection is already authenticated (the server's chain must
//! contain a CA with that fingerprint). Tokens are single use and expire.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::durable;
use crate::ids::{hex, unhex, NodeId, SiteId};
use crate::wire::{Role, ALPN};

/// The TLS server name every nightcast server certificate holds; clients connect to it.
pub const SERVER_NAME: &str = "nightcast";
const URI_PREFIX: &str = "nightcast://";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("certificate generation failed: {0}")]
    Cert(String),
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a valid enrolment token (expected nc1-<32 hex>-<32 hex>)")]
    BadToken(String),
    #[error("{path} is damaged: {what}")]
    Damaged { path: PathBuf, what: String },
    #[error("enrolment token refused: {0}")]
    TokenRefused(&'static str),
}

fn cert_err(e: impl std::fmt::Display) -> TrustError {
    TrustError::Cert(e.to_string())
}

/// A node's identity, as its certificate states it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub role: Role,
    pub site: SiteId,
    pub node: NodeId,
}

impl Identity {
    fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}/{}", self.role, self.site, self.node)
    }

    fn parse_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let mut parts = rest.split('/');
        let role = match parts.next()? {
            "controller" => Role::Controller,
            "relay" => Role::Relay,
            "agent" => Role::Agent,
            _ => return None,
        };
        let site = SiteId::new(parts.next()?).ok()?;
        let node = NodeId::new(parts.next()?).ok()?;
        parts
            .next()
            .is_none()
            .then_some(Identity { role, site, node })
    }

    /// The identity in a certificate this CA issued. Only call on a certificate whose chain has
    /// been verified: it looks for the identity URI in the DER without parsing the rest.
    pub fn from_certificate(der: &[u8]) -> Option<Identity> {
        let prefix = URI_PREFIX.as_bytes();
        let at = der.windows(prefix.len()).position(|w| w == prefix)?;
        // A GeneralName URI is [0x86, length, bytes]; our URIs are under 128 bytes, else 0x81 len.
        let (len, tag_at) = match (at.checked_sub(2), at.checked_sub(3)) {
            (Some(i), _) if der[i] == 0x86 && der[i + 1] < 0x80 => (usize::from(der[i + 1]), i),
            (_, Some(i)) if der[i] == 0x86 && der[i + 1] == 0x81 => (usize::from(der[i + 2]), i),
            _ => return None,
        };
        let _ = tag_at;
        let uri = std::str::from_utf8(der.get(at..at + len)?).ok()?;
        Identity::parse_uri(uri)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.role, self.site, self.node)
    }
}

/// A certificate and its private key (PKCS#8), both DER.
#[derive(Clone)]
pub struct Credentials {
    pub certificate: Vec<u8>,
    pub key: Vec<u8>,
    /// The CA that signed `certificate`, which is also the one this holder trusts.
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({:?})",
            Identity::from_certificate(&self.certificate)
        )
    }
}

impl Credentials {
    /// Writes `node.crt`, `node.key` (mode 0600) and `ca.crt` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TrustError> {
        std::fs::create_dir_all(dir).map_err(|source| TrustError::Write {
            path: dir.to_owned(),
            source,
        })?;
        for (name, bytes, mode) in [
            ("node.crt", &self.certificate, 0o644),
            ("node.key", &self.key, 0o600),
            ("ca.crt", &self.ca, 0o644),
        ] {
            let path = dir.join(name);
            durable::write_file(&path, bytes, mode)
                .map_err(|source| TrustError::Write { path, source })?;
        }
        Ok(())
    }

    pub fn load(dir: &Path) -> Result<Credentials, TrustError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| TrustError::Read { path, source })
        };
        Ok(Credentials {
            certificate: read("node.crt")?,
            key: read("node.key")?,
            ca: read("ca.crt")?,
        })
    }

    pub fn identity(&self) -> Option<Identity> {
        Identity::from_certificate(&self.certificate)
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![
            CertificateDer::from(self.certificate.clone()),
            CertificateDer::from(self.ca.clone()),
        ]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }

    /// TLS for a server: presents this certificate, asks clients for one signed by the same CA, and
    /// also accepts clients without a certificate (who may then only enrol).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TrustError> {
        let tls = |e: rustls::Error| TrustError::Tls(e.to_string());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain(), self.private_key())
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// TLS for a client: trusts only this CA, and presents this certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TrustError> {
        let tls = |e: rustls::Error| TrustError::Tls(e.to_string());
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain(), self.private_key())
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    fn roots(&self) -> Result<RootCertStore, TrustError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.clone()))
            .map_err(|e| TrustError::Tls(e.to_string()))?;
        Ok(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Saves what enrolment gave a node: its credentials in `dir/tls/` and the signing key to pin in
/// `dir/signing.pub`.
pub fn save_enrolment(
    dir: &Path,
    creds: &Credentials,
    signing_key: &crate::keys::PublicKey,
) -> Result<(), TrustError> {
    creds.save(&dir.join("tls"))?;
    signing_key
        .save(&dir.join("signing.pub"))
        .map_err(|e| TrustError::Write {
            path: dir.join("signing.pub"),
            source: std::io::Error::other(e.to_string()),
        })
}

/// Loads what [`save_enrolment`] wrote.
pub fn load_enrolment(dir: &Path) -> Result<(Credentials, crate::keys::PublicKey), TrustError> {
    let creds = Credentials::load(&dir.join("tls"))?;
    let path = dir.join("signing.pub");
    let key = crate::keys::PublicKey::load(&path).map_err(|e| TrustError::Damaged {
        path,
        what: e.to_string(),
    })?;
    Ok((creds, key))
}

/// TLS for a node that has only a token: no client certificate, and the server's chain must hold
/// the CA whose fingerprint the token names.
pub fn enrol_client_config(token: &Token) -> Result<rustls::ClientConfig, TrustError> {
    pinned_ca_client_config(token.ca_fingerprint)
}

/// TLS for a node without a certificate that knows the CA only by its fingerprint (from a token, a
/// relay's discovery answer, or its configuration).
pub fn pinned_ca_client_config(fingerprint: [u8; 16]) -> Result<rustls::ClientConfig, TrustError> {
    let verifier = PinnedCa { fingerprint };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TrustError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// BLAKE3 of a CA certificate's DER, first 16 bytes.
pub fn fingerprint(ca_der: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&blake3::hash(ca_der).as_bytes()[..16]);
    out
}

#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 16],
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The controller's certificate authority.
pub struct Ca {
    key: KeyPair,
    params: CertificateParams,
    der: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({})", hex(&self.fingerprint()))
    }
}

impl Ca {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Ca, TrustError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let params = Ca::params_for(&key)?;
        let der = params.self_signed(&key).map_err(cert_err)?.der().to_vec();
        Ok(Ca { key, params, der })
    }

    /// The CA's parameters are derived from its key, so that a saved key is all it takes to sign.
    fn params_for(key: &KeyPair) -> Result<CertificateParams, TrustError> {
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

    fn leaf_params(identity: &Identity) -> Result<CertificateParams, TrustError> {
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
        Ok(params)
    }

    /// A certificate for `identity` binding `public_key`, the raw P-256 point (65 bytes) of the key
    /// the node made for itself.
    pub fn sign_public_key(
        &self,
        identity: &Identity,
        public_key: &[u8],
    ) -> Result<Vec<u8>, TrustError> {
        if public_key.len() != 65 || public_key[0] != 4 {
            return Err(TrustError::Cert(
                "the public key is not an uncompressed P-256 point".into(),
            ));
        }
        let spki = RawP256(public_key);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = Ca::leaf_params(identity)?
            .signed_by(&spki, &issuer)
            .map_err(cert_err)?;
        Ok(cert.der().to_vec())
    }

    /// A key and certificate for `identity`, made here (for the controller itself, and for tests).
    pub fn issue(&self, identity: &Identity) -> Result<Credentials, TrustError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let certificate = self.sign_public_key(identity, key.public_key_raw())?;
        Ok(Credentials {
            certificate,
            key: key.serialize_der(),
            ca: self.der.clone(),
        })
    }
}

/// A fresh P-256 key pair for a node about to enrol: (PKCS#8 private key, raw public point).
pub fn node_key() -> Result<(Vec<u8>, Vec<u8>), TrustError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    Ok((key.serialize_der(), key.public_key_raw().to_vec()))
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

/// What a token allows, kept by the controller until the token is used or expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrant {
    /// BLAKE3 of the secret (the secret itself is never stored).
    pub secret_hash: String,
    pub role: Role,
    pub site: SiteId,
    /// Seconds since the Unix epoch after which the token is refused.
    pub expires_unix: u64,
}

/// The controller's outstanding tokens, in one JSON file written durably.
#[derive(Debug)]
pub struct TokenBook {
    path: PathBuf,
}

impl TokenBook {
    pub fn new(path: PathBuf) -> TokenBook {
        TokenBook { path }
    }

    fn read(&self) -> Result<Vec<TokenGrant>, TrustError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TrustError::Damaged {
                path: self.path.clone(),
                what: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(TrustError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn write(&self, grants: &[TokenGrant]) -> Result<(), TrustError> {
        let bytes =
            serde_json::to_vec_pretty(grants).map_err(|e| TrustError::Cert(e.to_string()))?;
        durable::write_file(&self.path, &bytes, 0o600).map_err(|source| TrustError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// A new single-use token for a node of `role` at `site`, valid `ttl_secs` from `now_unix`.
    pub fn issue(
        &self,
        ca: &Ca,
        role: Role,
        site: SiteId,
        now_unix: u64,
        ttl_secs: u64,
    ) -> Result<Token, TrustError> {
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret).map_err(|e| TrustError::Cert(e.to_string()))?;
        let mut grants: Vec<_> = self
            .read()?
            .into_iter()
            .filter(|g| g.expires_unix > now_unix)
            .collect();
        grants.push(TokenGrant {
            secret_hash: hex(blake3::hash(&secret).as_bytes()),
            role,
            site,
            expires_unix: now_unix.saturating_add(ttl_secs),
        });
        self.write(&grants)?;
        Ok(Token {
            secret,
            ca_fingerprint: ca.fingerprint(),
        })
    }

    /// Uses up the token: returns its grant if it exists, has not expired and is for `role`.
    pub fn redeem(
        &self,
        secret: &[u8; 16],
        role: Role,
        now_unix: u64,
    ) -> Result<TokenGrant, TrustError> {
        let hash = hex(blake3::hash(secret).as_bytes());
        let mut grants = self.read()?;
        let Some(i) = grants.iter().position(|g| g.secret_hash == hash) else {
            return Err(TrustError::TokenRefused("unknown or already used"));
        };
        let grant = grants.remove(i);
        self.write(&grants)?;
        if grant.expires_unix <= now_unix {
            return Err(TrustError::TokenRefused("expired"));
        }
        if grant.role != role {
            return Err(TrustError::TokenRefused("issued for another role"));
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(role: Role, node: &str) -> Identity {
        Identity {
            role,
            site: SiteId::new("lyon").unwrap(),
            node: NodeId::new(node).unwrap(),
        }
    }

    #[test]
    fn identities_survive_the_certificate() {
        let ca = Ca::generate().unwrap();
        for who in [id(Role::Relay, "relay-1"), id(Role::Agent, &"n".repeat(64))] {
            let creds = ca.issue(&who).unwrap();
            assert_eq!(creds.identity(), Some(who));
        }
        assert_eq!(Identity::from_certificate(ca.certificate()), None);
        assert_eq!(Identity::parse_uri("nightcast://relay/lyon/../x"), None);
        assert_eq!(Identity::parse_uri("nightcast://root/lyon/x"), None);
    }

    #[test]
    fn a_saved_ca_signs_for_the_same_chain() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate().unwrap();
        ca.save(dir.path()).unwrap();
        let again = Ca::load(dir.path()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        // Both configurations build (the chain is consistent enough for rustls to accept the key).
        let creds = again.issue(&id(Role::Relay, "r")).unwrap();
        creds.server_config().unwrap();
        creds.client_config().unwrap();
    }

    #[test]
    fn tokens_are_single_use_expiring_and_role_bound() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate().unwrap();
        let book = TokenBook::new(dir.path().join("tokens.json"));
        let site = SiteId::new("lyon").unwrap();
        let t = book
            .issue(&ca, Role::Relay, site.clone(), 1000, 60)
            .unwrap();
        let parsed: Token = t.to_string().parse().unwrap();
        assert_eq!(parsed, t);
        assert!(matches!(
            book.redeem(&t.secret, Role::Agent, 1001),
            Err(TrustError::TokenRefused(_))
        ));
        // A refused attempt still used the token up: guessing roles gives nothing.
        assert!(book.redeem(&t.secret, Role::Relay, 1001).is_err());
        let t = book
            .issue(&ca, Role::Relay, site.clone(), 1000, 60)
            .unwrap();
        assert_eq!(
            book.redeem(&t.secret, Role::Relay, 1001).unwrap().site,
            site
        );
        assert!(book.redeem(&t.secret, Role::Relay, 1002).is_err(), "reused");
        let t = book.issue(&ca, Role::Relay, site, 1000, 60).unwrap();
        assert!(matches!(
            book.redeem(&t.secret, Role::Relay, 1060),
            Err(TrustError::TokenRefused("expired"))
        ));
        assert!("nc1-zz-00".parse::<Token>().is_err());
    }
}
