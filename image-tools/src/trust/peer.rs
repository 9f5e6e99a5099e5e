//! Who may be on the other end of a connection, checked during the TLS handshake.
//!
//! A client says which server it expects ([`Expect`]): a relay talks only to the controller; an
//! agent only to a relay of its own site or to the controller, and, to fetch chunks from a peer,
//! only to another agent of its own site ([`Expect::AgentOf`]). A server says whom it admits
//! ([`Admit`]): the controller admits relays and agents; a relay admits the agents and the other
//! relays of its own site; an agent serving its peers admits only agents of its own site. Both wrap rustls-webpki's chain verification and then
//! compare the identity in the certificate (an agent's certificate can serve, but no client that
//! expects a relay or the controller accepts it), and both refuse serials on their [`Revoked`]
//! list, all before the handshake completes. A peer without a certificate is still let in by a server, to enrol and
//! nothing else (`exchange`).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{certinfo, Identity};
use crate::ids::SiteId;
use crate::wire::Role;

/// The server a client is willing to talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Only the controller (a relay; a node enrolling with a token).
    Controller,
    /// A relay of this site, or the controller (an enrolled agent).
    RelayOf(SiteId),
    /// Any relay, or the controller (an agent enrolling through whichever relay answered).
    AnyRelay,
    /// Another agent of this site, and nothing else (an agent fetching chunks from a peer).
    AgentOf(SiteId),
}

impl Expect {
    pub fn admits(&self, server: &Identity) -> bool {
        match (self, server.role) {
            (Expect::AgentOf(site), role) => role == Role::Agent && server.site == *site,
            (_, Role::Controller) => true,
            (Expect::Controller, _) | (_, Role::Agent) => false,
            (Expect::RelayOf(site), Role::Relay) => server.site == *site,
            (Expect::AnyRelay, Role::Relay) => true,
        }
    }
}

/// The clients a server lets in with a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// The controller: relays and agents of any site.
    RelaysAndAgents,
    /// An agent serving its peers: agents of its own site only.
    AgentsOf(SiteId),
    /// A relay: agents and the other relays of its own site (a second relay fetches what the
    /// first already holds over the LAN, `relay::siblings`).
    SiteOf(SiteId),
}

impl Admit {
    pub fn admits(&self, client: &Identity) -> bool {
        match self {
            Admit::RelaysAndAgents => matches!(client.role, Role::Relay | Role::Agent),
            Admit::AgentsOf(site) => client.role == Role::Agent && client.site == *site,
            Admit::SiteOf(site) => {
                matches!(client.role, Role::Relay | Role::Agent) && client.site == *site
            }
        }
    }
}

/// Serial numbers a server refuses at the handshake, replaced as a whole when the controller's
/// list changes (a relay gets its site's with every plan). Shared between the TLS verifier and
/// whoever updates it.
#[derive(Clone, Debug, Default)]
pub struct Revoked(Arc<RwLock<HashSet<Vec<u8>>>>);

impl Revoked {
    pub fn replace(&self, serials: impl IntoIterator<Item = Vec<u8>>) {
        if let Ok(mut set) = self.0.write() {
            *set = serials.into_iter().collect();
        }
    }

    pub fn contains(&self, serial: &[u8]) -> bool {
        self.0.read().map(|s| s.contains(serial)).unwrap_or(true)
    }

    /// Whether the certificate `der` is on the list (an unreadable one counts as revoked).
    pub fn covers(&self, der: &[u8]) -> bool {
        certinfo::serial(der).is_none_or(|s| self.contains(&s))
    }

    pub fn len(&self) -> usize {
        self.0.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refused(what: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        PeerRefused(what),
    ))))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PeerRefused(String);

/// A server verifier that checks the chain with `inner`, then the identity against `expect` and
/// the serial against `revoked`.
#[derive(Debug)]
pub(super) struct ExpectServer {
    pub inner: Arc<dyn ServerCertVerifier>,
    pub expect: Expect,
    pub revoked: Revoked,
}

impl ServerCertVerifier for ExpectServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if self.revoked.covers(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        match certinfo::identity(end_entity) {
            Some(id) if self.expect.admits(&id) => Ok(verified),
            Some(id) => Err(refused(format!(
                "the server is {id}, not what this node talks to ({:?})",
                self.expect
            ))),
            None => Err(refused("the server's certificate names no identity".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client verifier that checks the chain with `inner` (which lets clients without a certificate
/// in), then the identity against `admit` and the serial against `revoked`.
#[derive(Debug)]
pub(super) struct AdmitClient {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub admit: Admit,
    pub revoked: Revoked,
}

impl ClientCertVerifier for AdmitClient {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let Some(id) = certinfo::identity(end_entity) else {
            return Err(refused("the client's certificate names no identity".into()));
        };
        if !self.admit.admits(&id) {
            return Err(refused(format!(
                "{id} may not connect here ({:?})",
                self.admit
            )));
        }
        if self.revoked.covers(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    fn id(role: Role, site: &str) -> Identity {
        Identity {
            role,
            site: SiteId::new(site).unwrap(),
            node: NodeId::new("n").unwrap(),
        }
    }

    #[test]
    fn each_role_talks_only_to_whom_it_should() {
        let lyon = SiteId::new("lyon").unwrap();
        let (ctl, relay, paris_relay, agent) = (
            id(Role::Controller, "central"),
            id(Role::Relay, "lyon"),
            id(Role::Relay, "paris"),
            id(Role::Agent, "lyon"),
        );
        assert!(Expect::Controller.admits(&ctl));
        assert!(!Expect::Controller.admits(&relay));
        assert!(Expect::RelayOf(lyon.clone()).admits(&relay));
        assert!(!Expect::RelayOf(lyon.clone()).admits(&paris_relay));
        assert!(!Expect::RelayOf(lyon.clone()).admits(&agent));
        assert!(!Expect::AnyRelay.admits(&agent));
        assert!(Expect::AnyRelay.admits(&paris_relay));
        // A peer: only another agent of the same site, not even the controller.
        let paris_agent = id(Role::Agent, "paris");
        assert!(Expect::AgentOf(lyon.clone()).admits(&agent));
        assert!(!Expect::AgentOf(lyon.clone()).admits(&paris_agent));
        assert!(!Expect::AgentOf(lyon.clone()).admits(&relay));
        assert!(!Expect::AgentOf(lyon.clone()).admits(&ctl));

        assert!(Admit::RelaysAndAgents.admits(&relay));
        assert!(!Admit::RelaysAndAgents.admits(&ctl));
        assert!(Admit::AgentsOf(lyon.clone()).admits(&agent));
        assert!(!Admit::AgentsOf(lyon.clone()).admits(&relay));
        assert!(!Admit::AgentsOf(SiteId::new("paris").unwrap()).admits(&agent));
        // A relay: its site's agents and relays, no other site's, never the controller.
        assert!(Admit::SiteOf(lyon.clone()).admits(&agent));
        assert!(Admit::SiteOf(lyon.clone()).admits(&relay));
        assert!(!Admit::SiteOf(lyon.clone()).admits(&paris_relay));
        assert!(!Admit::SiteOf(lyon.clone()).admits(&paris_agent));
        assert!(!Admit::SiteOf(lyon.clone()).admits(&ctl));
    }
}
