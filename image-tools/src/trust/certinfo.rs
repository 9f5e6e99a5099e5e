//! What nightcast reads out of a certificate: the holder's [`Identity`] (the one
//! `nightcast://<role>/<site>/<node>` URI among its subject-alternative names), its serial number
//! and the end of its validity.
//!
//! The names and the serial come from rustls-webpki's parser; the validity from a small DER walk
//! over the `TBSCertificate` (webpki checks validity but does not expose it). Neither trusts the
//! certificate: call them on a certificate whose chain was verified, or to show what a file holds.
//! Every read is bounded by the input (no allocation beyond the names found).

use rustls::pki_types::CertificateDer;

use super::{Identity, Validity, URI_PREFIX};

/// The identity named in `der`: exactly one `nightcast://` URI that parses, else `None`.
pub fn identity(der: &[u8]) -> Option<Identity> {
    let owned = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&owned).ok()?;
    let mut found = cert
        .valid_uri_names()
        .filter(|uri| uri.starts_with(URI_PREFIX));
    let uri = found.next()?;
    if found.next().is_some() {
        return None;
    }
    Identity::parse_uri(uri)
}

/// The serial number of `der`, as its big-endian bytes.
pub fn serial(der: &[u8]) -> Option<Vec<u8>> {
    let owned = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&owned).ok()?;
    Some(cert.serial().to_vec())
}

/// `notAfter` of `der`, in Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    validity(der).map(|v| v.not_after)
}

/// The validity of `der`, in Unix seconds.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    // [0] version (optional), serial, signature algorithm, issuer, then validity.
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
        let (_, _, rest) = tlv(tbs)?; // serial
        tbs = rest;
    } else {
        tbs = rest; // that was the serial
    }
    for _ in 0..2 {
        let (_, _, rest) = tlv(tbs)?; // signature algorithm, issuer
        tbs = rest;
    }
    let (tag, validity, _) = tlv(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, not_before, rest) = tlv(validity)?;
    let not_before = time_value(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    Some(Validity {
        not_before,
        not_after: time_value(tag, not_after)?,
    })
}

/// The signed part of `der` (the whole `TBSCertificate`, header included) and its signature (the
/// BIT STRING's bytes): what a signature check over a certificate takes.
pub fn signed_parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _, rest) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let tbs = &cert[..cert.len() - rest.len()];
    let (_, _, rest) = tlv(rest)?; // signature algorithm
    let (tag, bits, _) = tlv(rest)?;
    match bits.split_first() {
        Some((0, signature)) if tag == BIT_STRING => Some((tbs, signature)),
        _ => None,
    }
}

/// Whether `der` is a CA certificate: its basic constraints say `cA: TRUE`.
pub fn is_ca(der: &[u8]) -> bool {
    let Some(Some(value)) = extension(der, BASIC_CONSTRAINTS) else {
        return false;
    };
    tlv(value)
        .and_then(|(_, constraints, _)| tlv(constraints))
        .is_some_and(|first| matches!(first, (BOOLEAN, [0xff], _)))
}

/// Whether `der` may serve TLS: its extended key usage names server authentication, or it has no
/// such extension (any use). An agent enrolled before peer sharing holds one for clients only.
pub fn serves(der: &[u8]) -> bool {
    match extension(der, EXTENDED_KEY_USAGE) {
        Some(Some(value)) => {
            let Some((SEQUENCE, mut list, _)) = tlv(value) else {
                return false;
            };
            while let Some((tag, oid, rest)) = tlv(list) {
                if tag == OID && oid == SERVER_AUTH {
                    return true;
                }
                list = rest;
            }
            false
        }
        Some(None) => true,
        None => false,
    }
}

/// The value (the OCTET STRING's content) of the extension `oid` of `der`: `Some(None)` when the
/// certificate has no such extension, `None` when it does not parse.
fn extension<'a>(der: &'a [u8], oid: &[u8]) -> Option<Option<&'a [u8]>> {
    let (_, cert, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(cert)?;
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest; // the serial follows the version
    }
    // serial (or what followed the version), signature algorithm, issuer, validity, subject, key.
    for _ in 0..6 {
        let (_, _, rest) = tlv(tbs)?;
        tbs = rest;
    }
    while !tbs.is_empty() {
        let (tag, value, rest) = tlv(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue; // issuer and subject unique ids
        }
        let (_, mut list, _) = tlv(value)?;
        while !list.is_empty() {
            let (_, mut ext, rest) = tlv(list)?;
            list = rest;
            let (_, found, rest) = tlv(ext)?;
            ext = rest;
            if found != oid {
                continue;
            }
            let (mut tag, mut value, rest) = tlv(ext)?;
            if tag == BOOLEAN {
                (tag, value, _) = tlv(rest)?; // `critical`, then the value
            }
            return (tag == OCTET_STRING).then_some(Some(value));
        }
    }
    Some(None)
}

const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
/// 2.5.29.37
const EXTENDED_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// 1.3.6.1.5.5.7.3.1
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const EXTENSIONS: u8 = 0xa3;
/// 2.5.29.19
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER tag-length-value at the front of `input`: (tag, value, the rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..count] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) in Unix seconds.
fn time_value(tag: u8, value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = num(&digits[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return None,
    };
    let (month, day) = (num(&rest[0..2])?, num(&rest[2..4])?);
    let (h, m, s) = (num(&rest[4..6])?, num(&rest[6..8])?, num(&rest[8..10])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dates_convert_like_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(time_value(UTC_TIME, b"261201223000Z"), Some(1_796_164_200));
        assert_eq!(
            time_value(GENERALIZED_TIME, b"20261201223000Z"),
            Some(1_796_164_200)
        );
        assert_eq!(time_value(UTC_TIME, b"261301223000Z"), None);
        assert_eq!(time_value(UTC_TIME, b"2612012230Z"), None);
    }

    proptest! {
        #[test]
        fn no_input_makes_the_readers_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = identity(&bytes);
            let _ = serial(&bytes);
            let _ = not_after(&bytes);
            let _ = signed_parts(&bytes);
            let _ = is_ca(&bytes);
            let _ = serves(&bytes);
        }
    }

    #[test]
    fn a_certificate_for_clients_only_does_not_serve() {
        use crate::trust::Validity;
        let now = 1_796_164_200;
        let ca = crate::trust::Ca::generate(Validity::ca(now)).unwrap();
        let agent = crate::trust::Identity {
            role: crate::wire::Role::Agent,
            site: crate::ids::SiteId::new("lyon").unwrap(),
            node: crate::ids::NodeId::new("nuc-1").unwrap(),
        };
        let issued = ca.issue(&agent, Validity::starting(now, 86_400)).unwrap();
        assert!(serves(&issued.certificate));
        // As agents' certificates were issued before peer sharing.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let old = params.self_signed(&key).unwrap();
        assert!(!serves(old.der()));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = Vec::new();
        let any = params.self_signed(&key).unwrap();
        assert!(serves(any.der()));
        assert!(!serves(b"not a certificate"));
    }
}
