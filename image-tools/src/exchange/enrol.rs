//! Enrolment: the controller's `Enroller` and its policy, answering `Enroll` (issue, pass on, or
//! refuse), and a node's side (`enroll` with a token, `renew`).

use super::*;

/// Issues certificates (the controller only). Whether a request gets one is the controller's
/// [`EnrolPolicy`]: a token, the DSI's approval, or a site opened for new NUCs; this type only
/// checks the request's form and signs what the policy allows.
pub struct Enroller {
    pub ca: Ca,
    /// The manifest-signing key nodes pin at enrolment (endorsed by `ca` for each reply).
    pub signing_key: PublicKey,
    /// During a CA rotation, the previous CA's certificate and the cross-certificates between it
    /// and `ca` (`trust::bridge`), sent with every certificate issued. Empty otherwise.
    pub bridge: Vec<Vec<u8>>,
    /// How long an issued certificate is valid.
    pub lifetime_secs: u64,
    /// The time certificates are dated from.
    pub clock: Clock,
    pub policy: Box<dyn EnrolPolicy>,
}

/// How an enrolment request reached the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// From the node itself, with no certificate (it must bring a token).
    Direct,
    /// Passed on by an enrolled relay, for an agent of the relay's site.
    Relay(Identity),
    /// From the node itself over its authenticated connection (a renewal).
    Itself(Identity),
}

/// One enrolment request, checked for form, as the policy sees it.
#[derive(Clone, Debug)]
pub struct EnrolAsk {
    pub token: Option<Token>,
    pub role: Role,
    pub node: NodeId,
    /// The raw P-256 point the certificate will bind.
    pub public_key: Vec<u8>,
    /// The node's MAC as it says (shown to the DSI, never trusted).
    pub mac: String,
    /// A renewal of an enrolled node's certificate.
    pub renewal: bool,
    pub via: Via,
}

/// What the policy decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrolDecision {
    /// Sign a certificate for the node at this site.
    Issue {
        site: SiteId,
    },
    /// Not yet: the DSI has to let it in (the message says how).
    Pending(String),
    Refuse(String),
}

/// The controller's rules for who gets a certificate.
pub trait EnrolPolicy: Send + Sync {
    /// Decides on `ask` at `now` (Unix seconds), and records what it must (a pending request, a
    /// used token).
    fn decide(&self, ask: &EnrolAsk, now: i64) -> EnrolDecision;
    /// Records a certificate issued on `decide`'s word; an error withholds it from the node.
    fn issued(&self, certificate: &Issued<'_>) -> Result<(), String>;
}

/// A certificate just signed for a node, before it is handed over.
#[derive(Debug, Clone, Copy)]
pub struct Issued<'a> {
    pub identity: &'a Identity,
    pub serial: &'a [u8],
    pub validity: Validity,
    /// When (Unix seconds).
    pub now: i64,
}

/// An enrolment request a server passes on (a relay, to the controller, for an agent of its site).
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub token: String,
    pub role: Role,
    pub node_id: String,
    pub public_key: Vec<u8>,
    pub mac: String,
    pub renewal: bool,
}

/// What the upstream answered: the certificate, the CA and the endorsed signing key; or why not.
pub type EnrollOutcome = Result<EnrolReply, (ErrorCode, String)>;

/// Passes enrolment requests upstream (a relay's link to the controller).
pub type EnrollForwarder = Box<
    dyn Fn(
            EnrollRequest,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = EnrollOutcome> + Send>>
        + Send
        + Sync,
>;

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Enroller({:?})", self.ca)
    }
}

pub(super) fn enrolled_frame(reply: EnrolReply) -> Frame {
    Frame::Control(Control::Enrolled {
        certificate_der: reply.certificate_der,
        ca_der: reply.ca_der,
        signing_key: reply.signing.to_wire(),
        bridge: reply.bridge,
    })
}

pub(super) async fn answer_enroll(
    send: &mut quinn::SendStream,
    service: &Service,
    state: &ConnState,
    request: EnrollRequest,
) -> Result<(), ExchangeError> {
    // An enrolled peer asking for itself may only renew its own certificate.
    let itself = state.peer.as_ref().filter(|p| {
        request.renewal && p.role == request.role && p.node.as_str() == request.node_id
    });
    let Some(enroller) = &service.enroller else {
        // A relay passes on the first contact of a node without a certificate, and the renewal
        // of one of its agents (the only peers it admits).
        let may_forward = match (&state.peer, itself) {
            (None, _) => !request.renewal,
            (Some(_), Some(_)) => true,
            (Some(_), None) => false,
        };
        if let (Some(forward), true) = (&service.forward_enroll, may_forward) {
            tracing::info!(node = %request.node_id.escape_debug(), renewal = request.renewal, "enrolment passed upstream");
            return match forward(request).await {
                Ok(reply) => send_frame(send, &enrolled_frame(reply)).await,
                Err((code, message)) => send_error(send, code, message).await,
            };
        }
        let why = if service.forward_enroll.is_some() {
            "enrolled nodes may only renew their own certificate"
        } else {
            "this server does not enrol nodes"
        };
        return send_error(send, ErrorCode::BadRequest, why).await;
    };
    let via = match (&state.peer, itself) {
        (None, _) if !request.renewal => Via::Direct,
        (Some(_), Some(me)) => Via::Itself(me.clone()),
        (Some(p), None) if p.role == Role::Relay && request.role == Role::Agent => {
            Via::Relay(p.clone())
        }
        _ => {
            return send_error(
                send,
                ErrorCode::BadRequest,
                "already enrolled: only a renewal of your own certificate, or a relay's request for an agent of its site",
            )
            .await
        }
    };
    let ask = match check_ask(&request, via) {
        Ok(ask) => ask,
        Err(message) => return send_error(send, ErrorCode::BadRequest, message).await,
    };
    let now = enroller.clock.now();
    let site = match enroller.policy.decide(&ask, now) {
        EnrolDecision::Issue { site } => site,
        EnrolDecision::Pending(message) => {
            tracing::info!(node = %ask.node, via = ?ask.via, "enrolment pending: {message}");
            return send_error(send, ErrorCode::Pending, message).await;
        }
        EnrolDecision::Refuse(message) => {
            tracing::warn!(node = %ask.node, via = ?ask.via, "enrolment refused: {message}");
            return send_error(send, ErrorCode::Unauthorized, message).await;
        }
    };
    let identity = Identity {
        role: ask.role,
        site,
        node: ask.node.clone(),
    };
    let validity = Validity::starting(now, enroller.lifetime_secs);
    let issued = enroller
        .ca
        .sign_public_key(&identity, &ask.public_key, validity)
        .map_err(|e| e.to_string())
        .and_then(|cert| {
            let serial = crate::trust::certinfo::serial(&cert)
                .ok_or_else(|| "the new certificate has no serial".to_owned())?;
            enroller
                .policy
                .issued(&Issued {
                    identity: &identity,
                    serial: &serial,
                    validity,
                    now,
                })
                .map(|()| cert)
        });
    match issued {
        Ok(certificate_der) => {
            tracing::info!(%identity, via = ?ask.via, renewal = ask.renewal, "certificate issued");
            let until = now.saturating_add(trust::ENDORSEMENT_SECS);
            match enroller.ca.endorse(&enroller.signing_key, until) {
                Ok(signing) => {
                    let reply = EnrolReply {
                        certificate_der,
                        ca_der: enroller.ca.certificate().to_vec(),
                        signing,
                        bridge: enroller.bridge.clone(),
                    };
                    send_frame(send, &enrolled_frame(reply)).await
                }
                Err(e) => {
                    send_error(send, ErrorCode::Internal, format!("cannot endorse: {e}")).await
                }
            }
        }
        Err(e) => {
            tracing::error!(%identity, error = %e, "cannot issue a certificate");
            send_error(
                send,
                ErrorCode::Internal,
                format!("cannot issue the certificate: {e}"),
            )
            .await
        }
    }
}

/// An enrolment request's form: a valid node id, an uncompressed P-256 point, a token that parses
/// (or none), a MAC of sane length.
pub(super) fn check_ask(request: &EnrollRequest, via: Via) -> Result<EnrolAsk, String> {
    let node = NodeId::new(&request.node_id).map_err(|e| e.to_string())?;
    if request.public_key.len() != 65 || request.public_key[0] != 4 {
        return Err("the public key is not an uncompressed P-256 point".into());
    }
    let token = match request.token.as_str() {
        "" => None,
        t => Some(t.parse::<Token>().map_err(|e| e.to_string())?),
    };
    if request.mac.len() > 64 || request.mac.chars().any(|c| c.is_control()) {
        return Err("the MAC is not a MAC address".into());
    }
    Ok(EnrolAsk {
        token,
        role: request.role,
        node,
        public_key: request.public_key.clone(),
        mac: request.mac.clone(),
        renewal: request.renewal,
        via,
    })
}

/// A new node's whole enrolment with a token, straight to the controller: makes its key,
/// connects pinning the token's CA, enrols, checks the reply against that CA
/// ([`trust::accept_enrolment`]) and returns its credentials and the signing key to pin. The
/// caller saves them.
pub async fn enroll(
    addr: SocketAddr,
    token: &str,
    role: Role,
    node_id: &str,
    clock: Clock,
) -> Result<(Credentials, trust::Endorsed), ExchangeError> {
    let parsed: Token = token.parse()?;
    let node = NodeId::new(node_id).map_err(|e| TrustError::Cert(e.to_string()))?;
    let endpoint = client_endpoint()?;
    let conn =
        Connection::connect(&endpoint, addr, trust::enrol_client_config(&parsed, clock)?).await?;
    let (key, public) = trust::node_key()?;
    let reply = conn
        .enroll(EnrollRequest {
            token: token.to_owned(),
            role,
            node_id: node_id.to_owned(),
            public_key: public.clone(),
            mac: String::new(),
            renewal: false,
        })
        .await;
    conn.close();
    endpoint.wait_idle().await;
    Ok(trust::accept_enrolment(
        parsed.ca_fingerprint,
        role,
        &node,
        key,
        &public,
        reply?,
        clock,
    )?)
}

/// Renews `creds` over `conn` (a relay's connection to the controller, an agent's to its relay):
/// a fresh key, the same identity, the reply checked against the CA `creds` already has. A reply
/// naming a manifest-signing key the node's `ring` does not accept at `clock`'s now is refused
/// (keys change by rotation, through the plan). Returns the new credentials and the endorsed key
/// (to add to the ring); the caller saves them.
pub async fn renew(
    conn: &Connection,
    creds: &Credentials,
    ring: &trust::keyring::KeyRing,
    mac: &str,
    clock: Clock,
) -> Result<(Credentials, trust::Endorsed), ExchangeError> {
    let me = creds
        .identity()
        .ok_or_else(|| TrustError::BadEnrolment("our certificate names no identity".into()))?;
    let (key, public) = trust::node_key()?;
    let reply = conn
        .enroll(EnrollRequest {
            token: String::new(),
            role: me.role,
            node_id: me.node.to_string(),
            public_key: public.clone(),
            mac: mac.to_owned(),
            renewal: true,
        })
        .await?;
    let (fresh, signing) = trust::accept_enrolment(
        trust::fingerprint(&creds.ca),
        me.role,
        &me.node,
        key,
        &public,
        reply,
        clock,
    )?;
    if !ring.contains(&signing.key, clock.now()) {
        return Err(TrustError::BadEnrolment(format!(
            "the renewal names the signing key {}, which this node does not accept",
            signing.key.short()
        ))
        .into());
    }
    Ok((fresh, signing))
}
