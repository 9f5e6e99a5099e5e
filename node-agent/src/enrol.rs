//! Enrolment through the relay: the relay found by discovery (or configured), the CA pinned from
//! the configuration, a token or the discovery answer, the request kept with one key until the DSI
//! lets the NUC in.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use image_tools::clock::Clock;
use image_tools::exchange::{self, Connection};
use image_tools::trust::{self, Credentials, Expect};
use image_tools::wire::{ErrorCode, Role};
use image_tools::NodeId;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::{first_mac, AgentStatus};

/// Enrols through the relay, retrying until it works (a spare may be powered on before its relay,
/// and a new NUC waits for the DSI). `status.json` says what it waits for.
pub(crate) async fn enrol_until_done(
    cfg: &Config,
    node: &NodeId,
    clock: Clock,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Credentials, trust::Endorsed)> {
    let mut wait = Duration::from_secs(1);
    let mac = first_mac(&cfg.identity_root);
    loop {
        let state = match enrol(cfg, node, clock, mac.as_deref()).await {
            Ok(done) => return Ok(done),
            Err(e) => match e.downcast_ref::<exchange::ExchangeError>() {
                Some(exchange::ExchangeError::Refused {
                    code: ErrorCode::Pending,
                    message,
                    ..
                }) => {
                    tracing::info!("waiting for the DSI to let this NUC in: {message}");
                    // Asked again soon: the DSI's approval takes effect at the next request.
                    wait = Duration::from_secs(5);
                    format!("waiting for the DSI to let this NUC in: {message}")
                }
                _ => {
                    tracing::warn!(error = %format!("{e:#}"), "not enrolled yet; trying again");
                    format!("enrolling: {e:#}")
                }
            },
        };
        let status = AgentStatus {
            now: clock.now(),
            node: node.to_string(),
            state,
            ..AgentStatus::default()
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&status) {
            let _ = image_tools::durable::write_file(&cfg.data.join("status.json"), &bytes, 0o644);
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("stopped before enrolment"),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

/// The key this NUC enrols with, made once and kept (0600) until it has its certificate: the DSI
/// approves a request for one key, and a retry must ask for that same key.
fn enrolment_key(cfg: &Config) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let path = cfg.data.join("enrol.key");
    if let Ok(der) = std::fs::read(&path) {
        if let Ok(public) = trust::public_key_of(&der) {
            return Ok((der, public));
        }
        tracing::warn!(path = %path.display(), "the enrolment key is damaged: making a new one");
    }
    let (der, public) = trust::node_key()?;
    image_tools::durable::write_file(&path, &der, 0o600)?;
    Ok((der, public))
}

async fn enrol(
    cfg: &Config,
    node: &NodeId,
    clock: Clock,
    mac: Option<&str>,
) -> anyhow::Result<(Credentials, trust::Endorsed)> {
    let token: Option<trust::Token> = cfg.token.as_deref().map(str::parse).transpose()?;
    let pinned = cfg
        .ca_fingerprint
        .as_deref()
        .and_then(image_tools::ids::unhex::<16>)
        .or(token.as_ref().map(|t| t.ca_fingerprint));
    let (relay, fingerprint) = match (cfg.relay, pinned) {
        (Some(r), Some(fp)) => (r, fp),
        _ => {
            let (addr, answer) = find_relay(cfg, None, None).await?;
            let fp = answer
                .ca_fingerprint()
                .context("the relay's answer has no CA fingerprint")?;
            if let Some(p) = pinned {
                if p != fp {
                    anyhow::bail!(
                        "the relay at {addr} answers for another CA than the one configured"
                    );
                }
            } else {
                tracing::warn!(%addr, site = %answer.site, "trusting the first relay that answered (no ca_fingerprint configured)");
            }
            (cfg.relay.unwrap_or(addr), fp)
        }
    };
    let endpoint = exchange::client_endpoint()?;
    let conn = Connection::connect(
        &endpoint,
        relay,
        trust::pinned_ca_client_config(fingerprint, Expect::AnyRelay, clock)?,
    )
    .await?;
    let (key, public) = enrolment_key(cfg)?;
    let reply = conn
        .enroll(exchange::EnrollRequest {
            token: cfg.token.clone().unwrap_or_default(),
            role: Role::Agent,
            node_id: node.to_string(),
            public_key: public.clone(),
            mac: mac.unwrap_or_default().to_owned(),
            renewal: false,
        })
        .await;
    conn.close();
    let (creds, signing_key) =
        trust::accept_enrolment(fingerprint, Role::Agent, node, key, &public, reply?, clock)?;
    trust::save_enrolment(&cfg.data, &creds, &signing_key)?;
    let _ = std::fs::remove_file(cfg.data.join("enrol.key"));
    tracing::info!(%relay, identity = ?creds.identity().map(|i| i.to_string()), "enrolled through the relay");
    Ok((creds, signing_key))
}

/// Asks the VLAN for a relay; with `site` and `creds`, only one of that site and of a CA these
/// credentials trust will do.
pub(crate) async fn find_relay(
    cfg: &Config,
    site: Option<&str>,
    creds: Option<&Credentials>,
) -> anyhow::Result<(SocketAddr, image_tools::discovery::Answer)> {
    let answers = image_tools::discovery::discover(cfg.discovery, Duration::from_secs(2)).await?;
    let trusted: Option<Vec<[u8; 16]>> = creds.map(|c| {
        c.trusted_cas()
            .into_iter()
            .map(trust::fingerprint)
            .collect()
    });
    answers
        .into_iter()
        .find(|(_, a)| {
            site.is_none_or(|s| a.site == s) && trusted.as_ref().is_none_or(|t| a.names_any(t))
        })
        .ok_or_else(|| anyhow::anyhow!("no relay answered on {}", cfg.discovery))
}
