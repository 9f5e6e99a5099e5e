//! The relay's credentials: the manifest-signing keys it accepts, the LAN server's TLS, and the
//! renewal of its certificate before it expires.

use image_tools::exchange::{self, Connection};
use image_tools::trust::{Admit, Credentials};
use image_tools::wire::SitePlan;
use image_tools::PublicKey;

use super::Relay;

impl Relay {
    /// The manifest-signing keys accepted now.
    pub(super) fn accepted_keys(&self) -> Vec<PublicKey> {
        self.keys
            .read()
            .map(|k| k.accepted(self.clock.now()))
            .unwrap_or_default()
    }

    /// Takes the plan's endorsed signing keys (checked against our CA), kept on disk.
    pub(super) fn learn_keys(&self, plan: &SitePlan) {
        let ca = self.creds().ca;
        let Ok(mut ring) = self.keys.write() else {
            return;
        };
        let (changed, refused) = ring.learn(&plan.signing_keys, &ca, self.clock.now());
        for key in refused {
            tracing::error!(%key, "the plan names a signing key our CA did not endorse: ignored");
        }
        if changed {
            tracing::info!(
                keys = ring.accepted(self.clock.now()).len(),
                "manifest-signing keys updated"
            );
            if let Err(e) = ring.save(&self.cfg.data) {
                drop(ring);
                self.error(format!("cannot keep the signing keys on disk: {e}"));
            }
        }
    }

    pub(super) fn creds(&self) -> Credentials {
        match self.creds.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// TLS for the LAN server: the site's agents only, revoked ones refused.
    pub(super) fn lan_tls(&self) -> anyhow::Result<rustls::ServerConfig> {
        Ok(self.creds().server_config(
            Admit::AgentsOf(self.me.site.clone()),
            self.revoked.clone(),
            self.clock,
        )?)
    }

    /// Renews the relay's certificate over `conn` when a third of its life is left: a new key, the
    /// certificate checked against the CA it has, saved, and served to the LAN from now on.
    pub(super) async fn renew_if_due(&self, conn: &Connection) -> anyhow::Result<()> {
        let current = self.creds();
        if !current.renewal_due(self.clock.now()) {
            return Ok(());
        }
        let ring = self.keys.read().map(|k| k.clone()).unwrap_or_default();
        let (creds, signing) = exchange::renew(conn, &current, &ring, "", self.clock).await?;
        image_tools::trust::save_enrolment(&self.cfg.data, &creds, &signing)?;
        tracing::info!(
            not_after = creds.not_after(),
            "renewed this relay's certificate"
        );
        if let Ok(mut c) = self.creds.write() {
            *c = creds;
        }
        if let Some(endpoint) = self.lan.get() {
            exchange::set_server_tls(endpoint, self.lan_tls()?)?;
        }
        Ok(())
    }
}
