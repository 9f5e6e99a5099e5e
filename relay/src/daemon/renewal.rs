//! The relay's credentials: the manifest-signing keys it accepts, the CA bridge of a rotation,
//! the LAN server's TLS and discovery answer, and the renewal of its certificate before it
//! expires (or to move to a new CA).

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

    /// Takes what the plan says of a CA rotation: the bridge to the other CA, as far as our CA
    /// vouches for it (`trust::bridge`), kept on disk and served to the LAN from now on.
    pub(super) fn learn_bridge(&self, plan: &SitePlan) {
        let mut creds = self.creds();
        let bridge = image_tools::trust::bridge::bridge(
            &creds.ca,
            &image_tools::trust::bridge::offered_by(plan),
            self.clock.now(),
        );
        if bridge == creds.bridge {
            return;
        }
        tracing::info!(
            certificates = bridge.len(),
            "the CA bridge changed (a CA rotation)"
        );
        creds.bridge = bridge;
        if let Err(e) = creds.save(&self.cfg.data.join("tls")) {
            self.error(format!("cannot keep the CA bridge on disk: {e}"));
        }
        if let Ok(mut c) = self.creds.write() {
            *c = creds;
        }
        if let Some(endpoint) = self.lan.get() {
            let served = self
                .lan_tls()
                .and_then(|tls| Ok(exchange::set_server_tls(endpoint, tls)?));
            if let Err(e) = served {
                self.error(format!("cannot serve the LAN with the new CA bridge: {e}"));
            }
        }
    }

    /// Takes the plan's endorsed signing keys (checked against the CAs we trust), kept on disk.
    pub(super) fn learn_keys(&self, plan: &SitePlan) {
        let creds = self.creds();
        let Ok(mut ring) = self.keys.write() else {
            return;
        };
        let (changed, refused) =
            ring.learn(&plan.signing_keys, &creds.trusted_cas(), self.clock.now());
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

    /// What the relay answers a NUC that asks the VLAN for its relay: its CA and, during a CA
    /// rotation, the other CAs its bridge holds.
    pub(super) fn discovery_answer(&self, port: u16) -> image_tools::discovery::Answer {
        let creds = self.creds();
        let fingerprint = |der: &[u8]| image_tools::ids::hex(&image_tools::trust::fingerprint(der));
        image_tools::discovery::Answer {
            nightcast: 1,
            site: self.me.site.to_string(),
            relay: self.me.node.to_string(),
            port,
            ca: fingerprint(&creds.ca),
            also: creds
                .bridge
                .iter()
                .filter(|c| image_tools::trust::bridge::self_signed(c))
                .map(|c| fingerprint(c))
                .collect(),
        }
    }

    pub(super) fn creds(&self) -> Credentials {
        match self.creds.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// TLS for the LAN server: the site's agents and its other relays only, revoked ones refused.
    pub(super) fn lan_tls(&self) -> anyhow::Result<rustls::ServerConfig> {
        Ok(self.creds().server_config(
            Admit::SiteOf(self.me.site.clone()),
            self.revoked.clone(),
            self.clock,
        )?)
    }

    /// Renews the relay's certificate over `conn` when a third of its life is left, or to move to
    /// the controller's new CA after a rotation: a new key, the certificate checked against the
    /// CA it has, saved, and served to the LAN from now on.
    pub(super) async fn renew_if_due(&self, conn: &Connection) -> anyhow::Result<()> {
        let current = self.creds();
        let moving = image_tools::trust::bridge::moved_on(
            &current.ca,
            &current.bridge,
            &self.plan().current_ca,
        );
        if !current.renewal_due(self.clock.now()) && !moving {
            return Ok(());
        }
        let ring = self.keys.read().map(|k| k.clone()).unwrap_or_default();
        let (creds, signing) = exchange::renew(conn, &current, &ring, "", self.clock).await?;
        image_tools::trust::save_enrolment(&self.cfg.data, &creds, &signing)?;
        tracing::info!(
            not_after = creds.not_after(),
            new_ca = moving,
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
