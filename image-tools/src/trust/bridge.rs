//! A CA rotation's bridge: how nodes certified by the old CA and nodes certified by the new one
//! keep trusting each other while they move over, one at a time, with nobody on site.
//!
//! When the DSI rotates the CA, the controller signs each CA's name and key with the other
//! ([`Ca::cross_sign`]): two *cross-certificates*, valid for the overlap the DSI chose. Every
//! plan and every enrolment reply carries them with the previous CA's own certificate. A node
//! keeps those it can check ([`bridge`]): a cross-certificate signed by its own CA (or by one it
//! reached that way), that is a CA certificate and valid now; and the other CA's self-signed
//! certificate when a kept cross-certificate names its key. It then
//!
//! - presents them after its own certificate, so that a peer that knows only the other CA builds a
//!   path to it through the cross-certificate (a NUC that was off while its relay moved over still
//!   accepts the relay, and the relay it), and a NUC pinned to the other CA's fingerprint finds it;
//! - trusts them as roots besides its own CA, so that a peer still on the other CA is accepted
//!   before that peer has learnt anything.
//!
//! A node moves over by renewing its certificate ([`moved_on`]) over the authenticated channel. The
//! bridge ends when the DSI retires the old CA (plans stop carrying it, and nodes drop what a plan
//! no longer carries) or when the cross-certificates expire, whichever is first: a node that was
//! away for the whole overlap must be enrolled again. Pure but for the signature checks.

use rcgen::Issuer;
use rustls::pki_types::CertificateDer;

use super::{cert_err, certinfo, Ca, TrustError, Validity};

impl Ca {
    /// A certificate for `other`'s name and key, signed by this CA and valid for `validity`: a node
    /// that trusts this CA trusts `other` through it.
    pub fn cross_sign(&self, other: &Ca, validity: Validity) -> Result<Vec<u8>, TrustError> {
        let mut params = Ca::params_for(&other.key)?;
        validity.apply(&mut params)?;
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(cert_err)?;
        serial[0] = (serial[0] & 0x7f) | 0x01;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&other.key, &issuer).map_err(cert_err)?;
        Ok(cert.der().to_vec())
    }
}

/// The subject public key info of `der`, if it parses.
fn spki(der: &[u8]) -> Option<Vec<u8>> {
    let owned = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&owned).ok()?;
    Some(cert.subject_public_key_info().as_ref().to_vec())
}

/// Whether the key of the certificate `issuer` signed `cert`.
fn signed_by(cert: &[u8], issuer: &[u8]) -> bool {
    let Some((tbs, signature)) = certinfo::signed_parts(cert) else {
        return false;
    };
    let owned = CertificateDer::from(issuer);
    let Ok(issuer) = webpki::EndEntityCert::try_from(&owned) else {
        return false;
    };
    issuer
        .verify_signature(webpki::ring::ECDSA_P256_SHA256, tbs, signature)
        .is_ok()
}

/// Whether `der` is a self-signed certificate (a CA's own, not a cross-certificate).
pub fn self_signed(der: &[u8]) -> bool {
    signed_by(der, der)
}

fn valid_at(der: &[u8], now: i64) -> bool {
    certinfo::validity(der).is_some_and(|v| v.not_before <= now && now <= v.not_after)
}

/// What a node whose CA is `own_ca` keeps of `offered` at `now`: the CA certificates that chain to
/// `own_ca` through signatures (cross-certificates), and the self-signed certificates of the CAs
/// they name, in the order offered, without `own_ca` itself.
pub fn bridge(own_ca: &[u8], offered: &[Vec<u8>], now: i64) -> Vec<Vec<u8>> {
    let Some(own_key) = spki(own_ca) else {
        return Vec::new();
    };
    let candidates: Vec<&Vec<u8>> = offered
        .iter()
        .filter(|c| c.as_slice() != own_ca && certinfo::is_ca(c) && valid_at(c, now))
        .collect();
    // Cross-certificates, as far as signatures reach from our own CA.
    let mut anchors: Vec<&[u8]> = vec![own_ca];
    let mut kept = vec![false; candidates.len()];
    loop {
        let before = anchors.len();
        for (i, cert) in candidates.iter().enumerate() {
            if !kept[i] && !signed_by(cert, cert) && anchors.iter().any(|a| signed_by(cert, a)) {
                kept[i] = true;
                anchors.push(cert);
            }
        }
        if anchors.len() == before {
            break;
        }
    }
    // The self-signed certificates of the CAs reached.
    let reached: Vec<Vec<u8>> = anchors.iter().filter_map(|a| spki(a)).collect();
    for (i, cert) in candidates.iter().enumerate() {
        if !kept[i] && signed_by(cert, cert) {
            kept[i] = spki(cert).is_some_and(|k| k != own_key && reached.contains(&k));
        }
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for (i, cert) in candidates.into_iter().enumerate() {
        if kept[i] && !out.contains(cert) {
            out.push(cert.clone());
        }
    }
    out
}

/// Whether `bridge` (what a node kept, see [`bridge`]) reaches the CA whose certificate is `ca`:
/// the same key, through a cross-certificate or as the other CA's own certificate.
pub fn reaches(bridge: &[Vec<u8>], ca: &[u8]) -> bool {
    spki(ca).is_some_and(|key| bridge.iter().any(|c| spki(c).as_ref() == Some(&key)))
}

/// Whether a node certified by `own_ca` should renew its certificate to move to `current`, the CA
/// the controller issues with now: `current` is another CA, and one the node's bridge reaches (a
/// renewal from a CA it cannot check would be refused anyway).
pub fn moved_on(own_ca: &[u8], bridge: &[Vec<u8>], current: &[u8]) -> bool {
    !current.is_empty() && current != own_ca && reaches(bridge, current)
}

/// What a plan offers a node to bridge a CA rotation: the bridge and the current CA's own
/// certificate ([`bridge`] keeps what the node's CA vouches for).
pub fn offered_by(plan: &crate::wire::SitePlan) -> Vec<Vec<u8>> {
    let mut offered = plan.bridge.clone();
    if !plan.current_ca.is_empty() {
        offered.push(plan.current_ca.clone());
    }
    offered
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn ca() -> Ca {
        Ca::generate(Validity::ca(NOW - DAY)).unwrap()
    }

    fn overlap() -> Validity {
        Validity::starting(NOW - 60, 30 * DAY as u64)
    }

    #[test]
    fn each_side_keeps_the_cross_certificate_its_ca_signed_and_the_other_ca() {
        let (old, new) = (ca(), ca());
        let forward = old.cross_sign(&new, overlap()).unwrap(); // new, by old
        let back = new.cross_sign(&old, overlap()).unwrap(); // old, by new
        let offered = vec![
            new.certificate().to_vec(),
            old.certificate().to_vec(),
            forward.clone(),
            back.clone(),
        ];
        // Each side keeps all but its own CA: the other CA, the cross-certificate its own CA
        // signed, and the one back (signed by a key it now reaches).
        assert_eq!(
            bridge(old.certificate(), &offered, NOW),
            vec![new.certificate().to_vec(), forward.clone(), back.clone()]
        );
        assert_eq!(
            bridge(new.certificate(), &offered, NOW),
            vec![old.certificate().to_vec(), forward.clone(), back.clone()]
        );
        // Without the cross-certificate its CA signed, a side keeps nothing.
        assert!(bridge(
            old.certificate(),
            &[back.clone(), new.certificate().to_vec()],
            NOW
        )
        .is_empty());
        let kept = bridge(old.certificate(), &offered, NOW);
        assert!(moved_on(old.certificate(), &kept, new.certificate()));
        assert!(!moved_on(old.certificate(), &kept, old.certificate()));
        assert!(!moved_on(new.certificate(), &[], old.certificate()));
    }

    #[test]
    fn nothing_unsigned_expired_or_not_a_ca_is_kept() {
        let (old, new, stranger) = (ca(), ca(), ca());
        // A CA the node's CA never signed, and its own self-signed certificate.
        let foreign = stranger.cross_sign(&new, overlap()).unwrap();
        let offered = vec![foreign, new.certificate().to_vec()];
        assert!(bridge(old.certificate(), &offered, NOW).is_empty());
        // An expired cross-certificate.
        let forward = old.cross_sign(&new, overlap()).unwrap();
        assert!(bridge(
            old.certificate(),
            std::slice::from_ref(&forward),
            NOW + 31 * DAY
        )
        .is_empty());
        assert!(bridge(old.certificate(), &[forward], NOW - 7200).is_empty()); // an hour's skew allowed
                                                                               // A leaf the CA signed is no CA: it must never become a root.
        let leaf = old
            .issue(
                &super::super::Identity {
                    role: crate::wire::Role::Relay,
                    site: "lyon".parse().unwrap(),
                    node: "relay-lyon".parse().unwrap(),
                },
                Validity::starting(NOW - 60, DAY as u64),
            )
            .unwrap();
        assert!(!certinfo::is_ca(&leaf.certificate));
        assert!(certinfo::is_ca(old.certificate()));
        assert!(bridge(old.certificate(), &[leaf.certificate], NOW).is_empty());
        // Garbage.
        assert!(bridge(old.certificate(), &[vec![0x30, 0x03, 1, 2, 3]], NOW).is_empty());
        assert!(bridge(&[1, 2, 3], &[old.certificate().to_vec()], NOW).is_empty());
    }

    mod outside_input {
        use super::*;
        use proptest::prelude::*;

        fn cas() -> &'static (Ca, Vec<u8>) {
            static CAS: std::sync::OnceLock<(Ca, Vec<u8>)> = std::sync::OnceLock::new();
            CAS.get_or_init(|| {
                let (old, new) = (ca(), ca());
                let forward = old.cross_sign(&new, overlap()).unwrap();
                (old, forward)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// A plan's bridge comes through a relay: random bytes, or a genuine cross-certificate
            /// with bytes changed, never make a node panic or keep what its CA did not sign.
            #[test]
            fn mangled_bridges_are_ignored(
                noise in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..4),
                at in any::<usize>(),
                x in 1..=255u8,
            ) {
                let (old, forward) = cas();
                prop_assert!(bridge(old.certificate(), &noise, NOW).is_empty());
                let mut mangled = forward.clone();
                let i = at % mangled.len();
                mangled[i] ^= x;
                let kept = bridge(old.certificate(), std::slice::from_ref(&mangled), NOW);
                // A flip in the tags or lengths may still parse as the same certificate (DER
                // leaves nothing to spare there, but be exact): kept only if still signed.
                prop_assert!(kept.is_empty() || signed_by(&mangled, old.certificate()));
            }
        }
    }

    #[test]
    fn a_chain_of_rotations_is_followed() {
        let (a, b, c) = (ca(), ca(), ca());
        let ab = a.cross_sign(&b, overlap()).unwrap();
        let bc = b.cross_sign(&c, overlap()).unwrap();
        // Offered out of order: the walk goes on until nothing more is reached.
        let kept = bridge(a.certificate(), &[bc.clone(), ab.clone()], NOW);
        assert_eq!(kept, vec![bc, ab]);
        assert!(reaches(&kept, c.certificate()));
    }
}
