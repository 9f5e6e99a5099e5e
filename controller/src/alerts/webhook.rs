//! The webhook: a JSON POST of an `Alert`, over HTTPS with the roots of `[alerts] webhook_roots`,
//! or plain HTTP to a loopback address only (a receiver on this machine: nothing crosses the
//! network in clear, where the alerts' site and node names could be read or forged).

use std::sync::Arc;
use std::time::Duration;

use super::message::Alert;

/// Time for the whole request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `url` may carry alerts: `https://...`, or `http://` to `localhost` or a loopback
/// address. The refusal says why.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = uri.host().unwrap_or("");
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(format!(
            "{url:?}: plain http is allowed only to this machine (localhost, 127.0.0.1, [::1]); \
             use https:// for {host:?}"
        )),
        _ => Err(format!("{url:?}: give an https:// URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// POSTs `alert` to `url`; any answer but 2xx is a failure.
pub fn post(url: &str, roots: &std::path::Path, alert: &Alert) -> Result<(), String> {
    let body = serde_json::to_vec(alert).map_err(|e| format!("cannot encode the alert: {e}"))?;
    let mut tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
    if url.starts_with("https://") {
        let pem = std::fs::read(roots)
            .map_err(|e| format!("cannot read the webhook roots {}: {e}", roots.display()))?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!(
                "no certificate in the webhook roots {}",
                roots.display()
            ));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(&body[..])
        .map_err(|e| format!("webhook {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("webhook {url} answered HTTP {status}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in [
            "https://chat.example.org/hooks/abc",
            "http://127.0.0.1:9000/alerts",
            "http://localhost/x",
            "http://[::1]:80/",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        let e = check_url("http://chat.example.org/hooks").unwrap_err();
        assert!(
            e.contains("only to this machine") && e.contains("https://"),
            "{e}"
        );
        assert!(check_url("ftp://x/").is_err());
        assert!(check_url("chat.example.org").is_err());
    }
}
