//! Who may talk to whom: the controller's certificate authority, the certificates it issues, and the
//! one-time tokens that let a new relay or agent enrol (see `docs/PROTOCOL.md`, "Trust").
//!
//! Every certificate carries its holder's [`Identity`] as a URI subject-alternative name,
//! `nightcast://<role>/<site>/<node>`, and the DNS name [`SERVER_NAME`]; a server learns a peer's
//! role, site and id from the certificate it presented, never from what the peer says. Private keys
//! are made where they are used: an enrolling node sends only its public key.
//!
//! Certificates say what they are for: an agent's is for client authentication only (it can never
//! serve), a relay's and the controller's for both; every one expires ([`Validity`], one year by
//! default) and has a random serial that the controller can revoke. Whom each side accepts on the
//! other end is in [`peer`].
//!
//! A token is `nc1-<secret>-<CA fingerprint>`: a node that has nothing else learns from the token
//! which CA to trust, so its first connection is already authenticated (the server's chain must
//! contain a CA with that fingerprint). Tokens are single use and expire; the controller keeps
//! them (hashes only) in its catalogue.
//!
//! The manifest-signing key reaches a node bound to the CA: the CA signs it ([`Ca::endorse`]), and
//! a node checks that signature against the CA it pinned before it pins the key
//! ([`accept_enrolment`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::durable;
use crate::ids::{hex, unhex, NodeId, SiteId};
use crate::keys::PublicKey;
use crate::wire::{Role, ALPN};

pub mod bridge;
pub mod certinfo;
pub mod keyring;
pub mod peer;

pub use peer::{Admit, Expect, Revoked};

/// The TLS server name every nightcast server certificate holds; clients connect to it.
pub const SERVER_NAME: &str = "nightcast";
pub(crate) const URI_PREFIX: &str = "nightcast://";
const BRIDGE_FILE: &str = "bridge.json";
/// The largest certificate read back from a file (ours are under a kilobyte).
const MAX_CERT: usize = 16 * 1024;

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
    /// What an enrolment reply held does not check out against the pinned CA.
    #[error("the enrolment reply is not to be trusted: {0}")]
    BadEnrolment(String),
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

    pub(crate) fn parse_uri(uri: &str) -> Option<Identity> {
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

    /// The identity a certificate names (see [`certinfo::identity`]). Only trust it for a
    /// certificate whose chain has been verified.
    pub fn from_certificate(der: &[u8]) -> Option<Identity> {
        certinfo::identity(der)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.role, self.site, self.node)
    }
}

/// How long a node's certificate is valid by default: a year, renewed before it ends.
pub const DEFAULT_LIFETIME_SECS: u64 = 365 * 86_400;
/// How far back a certificate's validity starts, for clocks that are a little behind.
const CLOCK_SKEW_SECS: i64 = 3600;

/// From when to when a certificate is valid, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// A node's certificate issued at `now`: valid from an hour before (clock skew) for
    /// `lifetime_secs`.
    pub fn starting(now: i64, lifetime_secs: u64) -> Validity {
        Validity {
            not_before: now.saturating_sub(CLOCK_SKEW_SECS),
            not_after: now.saturating_add(i64::try_from(lifetime_secs).unwrap_or(i64::MAX)),
        }
    }

    /// A CA made at `now`: valid for 20 years (its nodes' certificates are renewed under it; a
    /// new CA is rolled in long before).
    pub fn ca(now: i64) -> Validity {
        Validity::starting(now, 20 * 365 * 86_400)
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), TrustError> {
        let at = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .map_err(|e| TrustError::Cert(format!("validity {t}: {e}")))
        };
        if self.not_after <= self.not_before {
            return Err(TrustError::Cert(
                "a certificate must end after it starts".into(),
            ));
        }
        params.not_before = at(self.not_before)?;
        params.not_after = at(self.not_after)?;
        Ok(())
    }
}

/// A certificate and its private key (PKCS#8), both DER.
#[derive(Clone)]
pub struct Credentials {
    pub certificate: Vec<u8>,
    pub key: Vec<u8>,
    /// The CA that signed `certificate`, which is also the one this holder trusts.
    pub ca: Vec<u8>,
    /// During a CA rotation, the other CA's certificate and the cross-certificates that bind it to
    /// `ca`, as [`bridge::bridge`] kept them: presented after `certificate`, and trusted besides
    /// `ca`. Empty otherwise.
    pub bridge: Vec<Vec<u8>>,
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
    /// Writes `node.crt`, `node.key` (mode 0600), `ca.crt` and `bridge.json` (the bridge's
    /// certificates in hex; absent when there is none) into `dir`.
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
        let path = dir.join(BRIDGE_FILE);
        if self.bridge.is_empty() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(TrustError::Write { path, source: e })
                }
                _ => return Ok(()),
            }
        }
        let text: Vec<String> = self.bridge.iter().map(|c| hex(c)).collect();
        let bytes =
            serde_json::to_vec_pretty(&text).map_err(|e| TrustError::Cert(e.to_string()))?;
        durable::write_file(&path, &bytes, 0o644)
            .map_err(|source| TrustError::Write { path, source })
    }

    pub fn load(dir: &Path) -> Result<Credentials, TrustError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| TrustError::Read { path, source })
        };
        let path = dir.join(BRIDGE_FILE);
        let bridge = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Vec<String>>(&bytes)
                .ok()
                .and_then(|t| {
                    t.iter()
                        .map(|c| crate::ids::unhex_upto(c, MAX_CERT))
                        .collect()
                })
                .ok_or_else(|| TrustError::Damaged {
                    path: path.clone(),
                    what: "not a list of certificates in hex".into(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(TrustError::Read { path, source }),
        };
        Ok(Credentials {
            certificate: read("node.crt")?,
            key: read("node.key")?,
            ca: read("ca.crt")?,
            bridge,
        })
    }

    /// The CAs this holder trusts: its own, then those its bridge reaches. Also what endorsements
    /// of manifest-signing keys are checked against.
    pub fn trusted_cas(&self) -> Vec<&[u8]> {
        std::iter::once(self.ca.as_slice())
            .chain(self.bridge.iter().map(Vec::as_slice))
            .collect()
    }

    pub fn identity(&self) -> Option<Identity> {
        Identity::from_certificate(&self.certificate)
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        [&self.certificate, &self.ca]
            .into_iter()
            .chain(&self.bridge)
            .map(|c| CertificateDer::from(c.clone()))
            .collect()
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }

    /// The certificate's serial number.
    pub fn serial(&self) -> Option<Vec<u8>> {
        certinfo::serial(&self.certificate)
    }

    /// When the certificate expires (Unix seconds).
    pub fn not_after(&self) -> Option<i64> {
        certinfo::not_after(&self.certificate)
    }

    /// Whether the certificate should be renewed at `now`: a third of its life or less is left
    /// (or it cannot be read).
    pub fn renewal_due(&self, now: i64) -> bool {
        match certinfo::validity(&self.certificate) {
            Some(v) => v.not_after - now <= (v.not_after - v.not_before) / 3,
            None => true,
        }
    }

    /// TLS for a server: presents this certificate, lets in clients with a certificate from the
    /// same CA whom `admit` names and whose serial is not `revoked`, and also clients without a
    /// certificate (who may then only enrol). Certificates are checked against `clock`'s time.
    pub fn server_config(
        &self,
        admit: Admit,
        revoked: Revoked,
        clock: Clock,
    ) -> Result<rustls::ServerConfig, TrustError> {
        let tls = |e: rustls::Error| TrustError::Tls(e.to_string());
        let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
        let verifier = peer::AdmitClient {
            inner,
            admit,
            revoked,
        };
        let mut config = rustls::ServerConfig::builder_with_details(provider(), Arc::new(clock))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(self.chain(), self.private_key())
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// TLS for a client: trusts only this CA, only a server that `expect` names, and presents this
    /// certificate.
    pub fn client_config(
        &self,
        expect: Expect,
        clock: Clock,
    ) -> Result<rustls::ClientConfig, TrustError> {
        let tls = |e: rustls::Error| TrustError::Tls(e.to_string());
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider(),
        )
        .build()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
        let verifier = peer::ExpectServer { inner, expect };
        let mut config = rustls::ClientConfig::builder_with_details(provider(), Arc::new(clock))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain(), self.private_key())
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    fn roots(&self) -> Result<RootCertStore, TrustError> {
        let mut roots = RootCertStore::empty();
        for ca in self.trusted_cas() {
            roots
                .add(CertificateDer::from(ca.to_vec()))
                .map_err(|e| TrustError::Tls(e.to_string()))?;
        }
        Ok(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Saves what enrolment gave a node: its credentials in `dir/tls/`, the signing key to pin in
/// `dir/signing.pub`, and that key with its endorsement in the node's key ring
/// (`dir/signing-keys.json`, see [`keyring`]).
pub fn save_enrolment(
    dir: &Path,
    creds: &Credentials,
    signing: &Endorsed,
) -> Result<(), TrustError> {
    creds.save(&dir.join("tls"))?;
    signing
        .key
        .save(&dir.join("signing.pub"))
        .map_err(|e| TrustError::Write {
            path: dir.join("signing.pub"),
            source: std::io::Error::other(e.to_string()),
        })?;
    let mut ring = keyring::KeyRing::load(dir)?;
    ring.add(signing);
    ring.save(dir)
}

/// Loads what [`save_enrolment`] wrote: the credentials and the node's key ring.
pub fn load_enrolment(dir: &Path) -> Result<(Credentials, keyring::KeyRing), TrustError> {
    let creds = Credentials::load(&dir.join("tls"))?;
    let ring = keyring::KeyRing::load(dir)?;
    if ring.is_empty() {
        return Err(TrustError::Damaged {
            path: dir.join("signing.pub"),
            what: "no manifest-signing key pinned".into(),
        });
    }
    Ok((creds, ring))
}

/// TLS for a node that has only a token: no client certificate, the server's chain must hold the
/// CA whose fingerprint the token names, and the server must be the controller.
pub fn enrol_client_config(
    token: &Token,
    clock: Clock,
) -> Result<rustls::ClientConfig, TrustError> {
    pinned_ca_client_config(token.ca_fingerprint, Expect::Controller, clock)
}

/// TLS for a node without a certificate that knows the CA only by its fingerprint (from a token, a
/// relay's discovery answer, or its configuration), to a server that `expect` names.
pub fn pinned_ca_client_config(
    fingerprint: [u8; 16],
    expect: Expect,
    clock: Clock,
) -> Result<rustls::ClientConfig, TrustError> {
    let verifier = peer::ExpectServer {
        inner: Arc::new(PinnedCa { fingerprint }),
        expect,
    };
    let mut config = rustls::ClientConfig::builder_with_details(provider(), Arc::new(clock))
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

/// What a node checks before it keeps anything an enrolment reply (from a relay it does not know
/// yet) gave it: the CA is the one it pinned, the certificate is that CA's, for the role and node
/// id it asked for and for its own public key, and the manifest-signing key is endorsed by that
/// CA. Returns the credentials (with `key`, the node's private key) and the key to pin.
#[allow(clippy::too_many_arguments)]
pub fn accept_enrolment(
    pinned: [u8; 16],
    role: Role,
    node: &NodeId,
    key: Vec<u8>,
    public_key: &[u8],
    reply: EnrolReply,
    clock: Clock,
) -> Result<(Credentials, Endorsed), TrustError> {
    let bad = |what: String| TrustError::BadEnrolment(what);
    let now_secs = clock.now();
    if fingerprint(&reply.ca_der) != pinned {
        // During a CA rotation, a node pinned to the other CA takes the current one if the reply
        // bridges them: the pinned CA's own certificate and a cross-certificate it signed.
        let bridged = reply
            .bridge
            .iter()
            .find(|c| fingerprint(c) == pinned)
            .is_some_and(|p| {
                bridge::reaches(&bridge::bridge(p, &reply.bridge, now_secs), &reply.ca_der)
            });
        if !bridged {
            return Err(bad(format!(
                "its CA has fingerprint {}, not the pinned {}, and nothing the pinned CA signed \
                 vouches for it",
                hex(&fingerprint(&reply.ca_der)),
                hex(&pinned)
            )));
        }
    }
    reply.signing.check(&reply.ca_der)?;
    if reply.signing.until <= clock.now() {
        return Err(bad(format!(
            "the manifest-signing key {}'s endorsement has expired",
            reply.signing.key.short()
        )));
    }
    let ca = CertificateDer::from(reply.ca_der.clone());
    let anchor = webpki::anchor_from_trusted_cert(&ca)
        .map_err(|e| bad(format!("the CA certificate does not parse: {e}")))?;
    let cert_der = CertificateDer::from(reply.certificate_der.clone());
    let cert = webpki::EndEntityCert::try_from(&cert_der)
        .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(clock.now().max(0) as u64));
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| bad(format!("the certificate is not the pinned CA's: {e}")))?;
    let identity = certinfo::identity(&reply.certificate_der)
        .ok_or_else(|| bad("the certificate names no identity".into()))?;
    if identity.role != role || identity.node != *node {
        return Err(bad(format!(
            "the certificate is for {identity}, not {role} {node}"
        )));
    }
    let spki = cert.subject_public_key_info();
    if !spki.as_ref().ends_with(public_key) {
        return Err(bad("the certificate is for another key than ours".into()));
    }
    let bridge = bridge::bridge(&reply.ca_der, &reply.bridge, now_secs);
    Ok((
        Credentials {
            certificate: reply.certificate_der,
            key,
            ca: reply.ca_der,
            bridge,
        },
        reply.signing,
    ))
}

/// What an enrolment (or a renewal) gives a node.
#[derive(Clone, Debug)]
pub struct EnrolReply {
    pub certificate_der: Vec<u8>,
    pub ca_der: Vec<u8>,
    /// The manifest-signing key in force, endorsed by the CA ([`Ca::endorse`]).
    pub signing: Endorsed,
    /// During a CA rotation, the other CA and the cross-certificates ([`bridge`]).
    pub bridge: Vec<Vec<u8>>,
}

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

fn endorsement_message(key: &PublicKey, until: i64) -> Vec<u8> {
    [ENDORSEMENT_CONTEXT, key.as_bytes(), &until.to_le_bytes()].concat()
}

const ENDORSEMENT_CONTEXT: &[u8] = b"nightcast manifest-signing key v2\0";

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
        // The rest of the chain may hold a CA rotation's cross-certificate from the pinned CA
        // to the one that issued the server's certificate.
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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

    /// A leaf's parameters: what it is for follows from its role. An agent's certificate is for
    /// client authentication only and names no server; a relay's and the controller's serve too.
    fn leaf_params(
        identity: &Identity,
        validity: Validity,
    ) -> Result<CertificateParams, TrustError> {
        let serves = identity.role != Role::Agent;
        let dns = if serves {
            vec![SERVER_NAME.to_owned()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(dns).map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_string());
        params
            .subject_alt_names
            .push(SanType::URI(identity.uri().try_into().map_err(cert_err)?));
        params.extended_key_usages = if serves {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
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

    const NOW: i64 = 1_796_164_200;

    fn year() -> Validity {
        Validity::starting(NOW, DEFAULT_LIFETIME_SECS)
    }

    #[test]
    fn identities_survive_the_certificate() {
        let ca = Ca::generate(Validity::ca(NOW)).unwrap();
        for who in [id(Role::Relay, "relay-1"), id(Role::Agent, &"n".repeat(64))] {
            let creds = ca.issue(&who, year()).unwrap();
            assert_eq!(creds.identity(), Some(who));
            assert_eq!(creds.not_after(), Some(NOW + DEFAULT_LIFETIME_SECS as i64));
            assert_eq!(creds.serial().map(|s| s.len()), Some(16));
        }
        assert_eq!(Identity::from_certificate(ca.certificate()), None);
        assert_eq!(
            certinfo::not_after(ca.certificate()),
            Some(Validity::ca(NOW).not_after)
        );
        assert_eq!(Identity::parse_uri("nightcast://relay/lyon/../x"), None);
        assert_eq!(Identity::parse_uri("nightcast://root/lyon/x"), None);
    }

    #[test]
    fn every_certificate_has_its_own_serial() {
        let ca = Ca::generate(Validity::ca(NOW)).unwrap();
        let a = ca.issue(&id(Role::Agent, "a"), year()).unwrap();
        let b = ca.issue(&id(Role::Agent, "a"), year()).unwrap();
        assert_ne!(a.serial(), b.serial());
    }

    #[test]
    fn a_saved_ca_signs_for_the_same_chain() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate(Validity::ca(NOW)).unwrap();
        ca.save(dir.path()).unwrap();
        let again = Ca::load(dir.path()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        let creds = again.issue(&id(Role::Relay, "r"), year()).unwrap();
        let clock = Clock::system();
        creds
            .server_config(
                Admit::AgentsOf(SiteId::new("lyon").unwrap()),
                Revoked::default(),
                clock,
            )
            .unwrap();
        creds.client_config(Expect::Controller, clock).unwrap();
    }

    #[test]
    fn the_signing_key_is_bound_to_the_ca() {
        let ca = Ca::generate(Validity::ca(NOW)).unwrap();
        let key = crate::keys::SigningKey::generate().unwrap().public();
        let other = crate::keys::SigningKey::generate().unwrap().public();
        let endorsed = ca.endorse(&key, NOW + 60).unwrap();
        endorsed.check(ca.certificate()).unwrap();
        let mut other_key = endorsed.clone();
        other_key.key = other;
        assert!(other_key.check(ca.certificate()).is_err());
        let mut longer = endorsed.clone();
        longer.until += 1;
        assert!(
            longer.check(ca.certificate()).is_err(),
            "the time is signed too"
        );
        let foreign = Ca::generate(Validity::ca(NOW)).unwrap();
        assert!(endorsed.check(foreign.certificate()).is_err());
    }

    #[test]
    fn an_enrolment_reply_must_match_the_pinned_ca_the_request_and_the_key() {
        let ca = Ca::generate(Validity::ca(NOW)).unwrap();
        let clock = Clock::parse_now("start=2026-12-01T22:30:00Z").unwrap();
        let signing = crate::keys::SigningKey::generate().unwrap().public();
        let node = NodeId::new("nuc-1").unwrap();
        let (key, public) = node_key().unwrap();
        let reply = |ca: &Ca, who: &Identity, public: &[u8]| EnrolReply {
            certificate_der: ca.sign_public_key(who, public, year()).unwrap(),
            ca_der: ca.certificate().to_vec(),
            signing: ca.endorse(&signing, NOW + ENDORSEMENT_SECS).unwrap(),
            bridge: Vec::new(),
        };
        let me = id(Role::Agent, "nuc-1");
        let accept = |r: EnrolReply| {
            accept_enrolment(
                ca.fingerprint(),
                Role::Agent,
                &node,
                key.clone(),
                &public,
                r,
                clock,
            )
        };
        let (creds, pinned) = accept(reply(&ca, &me, &public)).unwrap();
        assert_eq!(creds.identity(), Some(me.clone()));
        assert_eq!(pinned.key, signing);
        // Another CA (a relay that made its own), another node, another key, an unendorsed key.
        let evil = Ca::generate(Validity::ca(NOW)).unwrap();
        assert!(accept(reply(&evil, &me, &public)).is_err());
        assert!(accept(reply(&ca, &id(Role::Agent, "nuc-2"), &public)).is_err());
        assert!(accept(reply(&ca, &id(Role::Relay, "nuc-1"), &public)).is_err());
        let (_, other_public) = node_key().unwrap();
        assert!(accept(reply(&ca, &me, &other_public)).is_err());
        let mut forged = reply(&ca, &me, &public);
        forged.signing.key = crate::keys::SigningKey::generate().unwrap().public();
        assert!(accept(forged).is_err());
    }

    #[test]
    fn a_node_pinned_to_the_previous_ca_takes_a_reply_that_the_rotation_bridges() {
        let (old, new, evil) = (
            Ca::generate(Validity::ca(NOW - 86_400)).unwrap(),
            Ca::generate(Validity::ca(NOW - 86_400)).unwrap(),
            Ca::generate(Validity::ca(NOW - 86_400)).unwrap(),
        );
        let clock = Clock::parse_now("start=2026-12-01T22:30:00Z").unwrap();
        let overlap = Validity::starting(NOW - 60, 30 * 86_400);
        let forward = old.cross_sign(&new, overlap).unwrap();
        let back = new.cross_sign(&old, overlap).unwrap();
        let signing = crate::keys::SigningKey::generate().unwrap().public();
        let node = NodeId::new("nuc-1").unwrap();
        let (key, public) = node_key().unwrap();
        let reply = |bridge: Vec<Vec<u8>>| EnrolReply {
            certificate_der: new
                .sign_public_key(&id(Role::Agent, "nuc-1"), &public, year())
                .unwrap(),
            ca_der: new.certificate().to_vec(),
            signing: new.endorse(&signing, NOW + ENDORSEMENT_SECS).unwrap(),
            bridge,
        };
        let accept = |r: EnrolReply| {
            accept_enrolment(
                old.fingerprint(),
                Role::Agent,
                &node,
                key.clone(),
                &public,
                r,
                clock,
            )
        };
        let full = vec![old.certificate().to_vec(), forward.clone(), back.clone()];
        let (creds, _) = accept(reply(full)).unwrap();
        assert_eq!(creds.ca, new.certificate());
        assert_eq!(
            creds.bridge,
            vec![old.certificate().to_vec(), forward.clone(), back.clone()]
        );
        // Nothing bridges, or a CA the pinned one never signed for.
        assert!(accept(reply(Vec::new())).is_err());
        assert!(accept(reply(vec![old.certificate().to_vec(), back])).is_err());
        let foreign = evil.cross_sign(&new, overlap).unwrap();
        assert!(accept(reply(vec![old.certificate().to_vec(), foreign])).is_err());
    }

    #[test]
    fn tokens_round_trip_and_keep_only_a_hash() {
        let t = Token::generate([7; 16]).unwrap();
        let parsed: Token = t.to_string().parse().unwrap();
        assert_eq!(parsed, t);
        assert_eq!(t.secret_hash().len(), 64);
        assert!(!t.secret_hash().contains(&hex(&t.secret)));
        assert!("nc1-zz-00".parse::<Token>().is_err());
    }

    mod outside_input {
        use super::*;
        use crate::mutation::{mutate, mutate_text, Edit};
        use proptest::prelude::*;

        fn edits() -> impl Strategy<Value = Vec<Edit>> {
            proptest::collection::vec(any::<(u8, usize, usize)>().prop_map(Into::into), 1..6)
        }

        /// A token typed by the DSI (or found in a config file): parsed, or refused with an error
        /// that quotes at most 80 characters of it; whatever parses prints back to itself.
        fn check_token(text: &str) -> Result<(), TestCaseError> {
            match text.parse::<Token>() {
                Ok(t) => prop_assert_eq!(t.to_string().parse::<Token>().unwrap(), t),
                Err(TrustError::BadToken(quoted)) => prop_assert!(quoted.chars().count() <= 80),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            Ok(())
        }

        /// A valid enrolment reply for `nuc-1`, and what the node knows when it checks it.
        struct Valid {
            ca: [u8; 16],
            key: Vec<u8>,
            public: Vec<u8>,
            reply: EnrolReply,
        }

        fn valid() -> &'static Valid {
            static VALID: std::sync::OnceLock<Valid> = std::sync::OnceLock::new();
            VALID.get_or_init(|| {
                let ca = Ca::generate(Validity::ca(NOW)).unwrap();
                let signing = crate::keys::SigningKey::from_seed([3; 32]).public();
                let (key, public) = node_key().unwrap();
                let reply = EnrolReply {
                    certificate_der: ca
                        .sign_public_key(&id(Role::Agent, "nuc-1"), &public, year())
                        .unwrap(),
                    ca_der: ca.certificate().to_vec(),
                    signing: ca.endorse(&signing, NOW + ENDORSEMENT_SECS).unwrap(),
                    bridge: Vec::new(),
                };
                Valid {
                    ca: ca.fingerprint(),
                    key,
                    public,
                    reply,
                }
            })
        }

        /// `accept_enrolment` as an agent `nuc-1` pinning `pinned` calls it.
        fn accept(
            pinned: [u8; 16],
            reply: EnrolReply,
        ) -> Result<(Credentials, Endorsed), TrustError> {
            let v = valid();
            let clock = Clock::parse_now("start=2026-12-01T22:30:00Z").unwrap();
            let node = NodeId::new("nuc-1").unwrap();
            accept_enrolment(
                pinned,
                Role::Agent,
                &node,
                v.key.clone(),
                &v.public,
                reply,
                clock,
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_text_parses_as_a_token_or_is_refused(text in "\\PC{0,120}", prefixed in "nc1-[0-9a-fA-F-]{0,70}") {
                check_token(&text)?;
                check_token(&prefixed)?;
            }

            #[test]
            fn mutated_tokens_parse_or_are_refused(secret in any::<[u8; 16]>(), ca in any::<[u8; 16]>(), edits in edits()) {
                let token = Token { secret, ca_fingerprint: ca }.to_string();
                check_token(&mutate_text(&token, &edits))?;
            }

            /// Random certificate, CA and endorsement bytes: refused, never a panic, even when
            /// the node pinned that very (random) CA so that every check runs.
            #[test]
            fn random_enrolment_replies_are_refused(
                cert in proptest::collection::vec(any::<u8>(), 0..800),
                ca in proptest::collection::vec(any::<u8>(), 0..600),
                endorsement in proptest::collection::vec(any::<u8>(), 0..80),
            ) {
                let v = valid();
                let mut signing = v.reply.signing.clone();
                signing.signature = endorsement;
                let reply = EnrolReply {
                    certificate_der: cert,
                    ca_der: ca.clone(),
                    signing,
                    bridge: Vec::new(),
                };
                prop_assert!(accept(v.ca, reply.clone()).is_err());
                prop_assert!(accept(fingerprint(&ca), reply).is_err());
            }

            /// A valid reply with its certificate or its endorsement mutated is refused; with its
            /// CA mutated (and pinned as mutated, so the check goes past the fingerprint) it never
            /// panics. Parts of a CA certificate that a trust anchor does not use (its own
            /// signature, its validity) may change without consequence: the node pinned those
            /// exact bytes.
            #[test]
            fn mutated_enrolment_replies_are_refused(part in 0..3u8, edits in edits()) {
                let v = valid();
                let mut reply = v.reply.clone();
                match part {
                    0 => reply.certificate_der = mutate(&reply.certificate_der, &edits),
                    1 => reply.signing.signature = mutate(&reply.signing.signature, &edits),
                    _ => reply.ca_der = mutate(&reply.ca_der, &edits),
                }
                let changed = reply.certificate_der != v.reply.certificate_der
                    || reply.signing.signature != v.reply.signing.signature
                    || reply.ca_der != v.reply.ca_der;
                let pinned = fingerprint(&reply.ca_der);
                let outcome = accept(pinned, reply);
                if part < 2 && changed {
                    prop_assert!(outcome.is_err());
                }
                if !changed {
                    prop_assert!(outcome.is_ok());
                }
            }
        }
    }
}
