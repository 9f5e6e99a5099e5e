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
    fn accept(pinned: [u8; 16], reply: EnrolReply) -> Result<(Credentials, Endorsed), TrustError> {
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
