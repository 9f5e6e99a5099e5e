//! The console's certificate: the DSI's own (PEM files: a chain and its key), or one the
//! controller's CA issues at each start for the configured host names. rustls with ring, TLS 1.2
//! and 1.3, no client certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use image_tools::trust::{Ca, Validity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long a certificate the CA issues for the console lasts; a new one is issued at each start
/// (browsers accept a private CA's certificates beyond the public 398-day limit, but restarts are
/// more frequent than that anyway).
pub const ISSUED_LIFETIME_SECS: u64 = 397 * 86_400;

/// Where the console's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certificate {
    /// The DSI's: PEM chain (leaf first) and PEM private key.
    Files { cert: PathBuf, key: PathBuf },
    /// Issued by the controller's CA for these names (DNS names or IP addresses).
    Issued { names: Vec<String> },
}

/// The server configuration for `certificate`: the CA is only used to issue one.
pub fn server_config(certificate: &Certificate, ca: &Ca, now: i64) -> Result<rustls::ServerConfig> {
    let (chain, key) = match certificate {
        Certificate::Files { cert, key } => read_pem(cert, key)?,
        Certificate::Issued { names } => {
            let creds = ca
                .issue_web(names, Validity::starting(now, ISSUED_LIFETIME_SECS))
                .context("cannot issue the console's certificate")?;
            (
                vec![
                    CertificateDer::from(creds.certificate),
                    CertificateDer::from(creds.ca),
                ],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(creds.key)),
            )
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the console's certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the console certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "{} holds no certificate (PEM, `-----BEGIN CERTIFICATE-----`)",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_serves_and_is_no_nightcast_identity() {
        let ca = Ca::generate(Validity::ca(1_900_000_000)).unwrap();
        let names = vec!["console.example".to_owned(), "127.0.0.1".to_owned()];
        server_config(
            &Certificate::Issued {
                names: names.clone(),
            },
            &ca,
            1_900_000_000,
        )
        .unwrap();
        let creds = ca
            .issue_web(&names, Validity::starting(1_900_000_000, 3600))
            .unwrap();
        assert!(image_tools::trust::Identity::from_certificate(&creds.certificate).is_none());
    }

    #[test]
    fn the_dsis_pem_files_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate(Validity::ca(1_900_000_000)).unwrap();
        let creds = ca
            .issue_web(
                &["intranet.example".to_owned()],
                Validity::starting(1_900_000_000, 3600),
            )
            .unwrap();
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64_lines(der);
            format!("-----BEGIN {label}-----\n{b64}-----END {label}-----\n")
        };
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, pem("CERTIFICATE", &creds.certificate)).unwrap();
        std::fs::write(&key, pem("PRIVATE KEY", &creds.key)).unwrap();
        let files = Certificate::Files {
            cert: cert.clone(),
            key: key.clone(),
        };
        server_config(&files, &ca, 0).unwrap();
        std::fs::write(&cert, "not pem").unwrap();
        let e = format!("{:#}", server_config(&files, &ca, 0).unwrap_err());
        assert!(e.contains("c.pem"), "{e}");
    }

    /// Base64 in 64-column lines (the test's own encoder: no crate for it).
    fn base64_lines(der: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in der.chunks(3) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s.as_bytes()
            .chunks(64)
            .map(|l| format!("{}\n", String::from_utf8_lossy(l)))
            .collect()
    }
}
