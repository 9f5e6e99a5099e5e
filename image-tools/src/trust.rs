//! Who may talk to whom: the controller's certificate authority, the certificates it issues, and the
//! one-time tokens that let a new relay or agent enrol (see `docs/PROTOCOL.md`, "Trust").
//!
//! Every certificate carries its holder's [`Identity`] as a URI subject-alternative name,
//! `nightcast://<role>/<site>/<node>`, and the DNS name [`SERVER_NAME`]; a server learns a peer's
//! role, site and id from the certificate it presented, never from what the peer says. Private keys
//! are made where they are used: an enrolling node sends only its public key.
//!
//! Certificates are for client and server authentication (an agent serves its site's other agents
//! chunks: peer sharing; what a client accepts as server is decided by the role and site in the
//! certificate, [`peer::Expect`], so an agent never passes for a relay); every one expires ([`Validity`], one year by
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

use rcgen::CertificateParams;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::durable;
use crate::ids::{hex, NodeId, SiteId};
use crate::wire::{Role, ALPN};

pub mod bridge;
mod ca;
pub mod certinfo;
mod endorse;
pub mod keyring;
pub mod peer;
mod pinned;
#[cfg(test)]
mod tests;
mod token;

pub use ca::{node_key, public_key_of, Ca};
pub use endorse::{Endorsed, ENDORSEMENT_SECS};
pub use peer::{Admit, Expect, Revoked};
pub use token::Token;

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

    /// Its identity, which must be a `role`'s: a relay started on a NUC's data directory (or the
    /// other way round) stops here with a sentence that says so.
    pub fn identity_as(&self, role: Role) -> Result<Identity, String> {
        let me = self
            .identity()
            .ok_or_else(|| "the certificate names no identity".to_owned())?;
        if me.role != role {
            let a = |r: Role| if r == Role::Agent { "an" } else { "a" };
            return Err(format!(
                "the certificate is {} {}'s, not {} {role}'s",
                a(me.role),
                me.role,
                a(role)
            ));
        }
        Ok(me)
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
        self.client_config_refusing(expect, Revoked::default(), clock)
    }

    /// [`Credentials::client_config`] that also refuses servers whose serial is `revoked` (an
    /// agent fetching from its peers, with its site's list from the plan).
    pub fn client_config_refusing(
        &self,
        expect: Expect,
        revoked: Revoked,
        clock: Clock,
    ) -> Result<rustls::ClientConfig, TrustError> {
        let tls = |e: rustls::Error| TrustError::Tls(e.to_string());
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider(),
        )
        .build()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
        let verifier = peer::ExpectServer {
            inner,
            expect,
            revoked,
        };
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
        inner: Arc::new(pinned::PinnedCa { fingerprint }),
        expect,
        revoked: Revoked::default(),
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
