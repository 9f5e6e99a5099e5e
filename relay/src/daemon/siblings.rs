//! The shell around `crate::siblings`: asks the VLAN for the site's other relays every
//! `poll_secs` (10 s at most), and keeps a connection to each that answers in
//! `Relay::siblings`, which the fetcher (`fetching`) and the LAN's on-demand reads (`serving`)
//! use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use image_tools::exchange::{self, Connection};
use image_tools::report::BadPeer;
use image_tools::trust::{self, Expect};
use image_tools::wire::MasterRef;
use tokio_util::sync::CancellationToken;

use super::Relay;
use crate::siblings::{self, Sibling};

/// Another relay of the site, connected.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    pub conn: Connection,
}

/// How long discovery answers are awaited.
const ASK_FOR: Duration = Duration::from_millis(700);

pub(super) async fn siblings_task(r: Arc<Relay>, ask: SocketAddr, shutdown: CancellationToken) {
    let every = Duration::from_secs(r.cfg.poll_secs.clamp(1, 10));
    let endpoint = match exchange::client_endpoint() {
        Ok(e) => e,
        Err(e) => {
            r.error(format!("cannot look for the site's other relays: {e}"));
            return;
        }
    };
    let mut first = true;
    loop {
        let found = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = r.connect_siblings(&endpoint, ask) => f,
        };
        let names = |s: &[Upstream]| s.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
        let before = names(&r.siblings.borrow());
        let after = names(&found);
        if before != after || std::mem::take(&mut first) {
            let leader = siblings::leader(r.me.node.as_str(), after.iter().map(String::as_str))
                .map(str::to_owned);
            match &leader {
                Some(l) => {
                    tracing::info!(siblings = ?after, leader = %l, "the site's other relays: {l} crosses the WAN, this relay fetches from them over the LAN")
                }
                None => {
                    tracing::info!(siblings = ?after, "this relay crosses the WAN for its site (and first takes what the site's other relays hold)")
                }
            }
            r.stat(|s| {
                s.siblings = after.clone();
                s.upstream = leader;
            });
            // Also the first time: the fetcher waits for this first answer.
            r.siblings.send_replace(found);
            r.wake.notify_one();
        } else {
            // The same relays, perhaps on new connections: keep them quietly.
            r.siblings.send_if_modified(|s| {
                *s = found;
                false
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

impl Relay {
    /// The site's other relays that answer discovery and accept a connection, by name; open
    /// connections are kept.
    async fn connect_siblings(&self, endpoint: &quinn::Endpoint, ask: SocketAddr) -> Vec<Upstream> {
        let answers = match image_tools::discovery::discover(ask, ASK_FOR).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, %ask, "cannot ask for the site's other relays");
                Vec::new()
            }
        };
        let trusted: Vec<[u8; 16]> = self
            .creds()
            .trusted_cas()
            .into_iter()
            .map(trust::fingerprint)
            .collect();
        let bad = self
            .stats
            .lock()
            .map(|s| s.bad_siblings.clone())
            .unwrap_or_default();
        let now = self.clock.now();
        let found = siblings::siblings(
            self.me.node.as_str(),
            self.me.site.as_str(),
            &trusted,
            &answers,
        )
        .into_iter()
        .filter(|s| !siblings::set_aside(&bad, &s.name, now));
        let current = self.siblings.borrow().clone();
        let mut connected = Vec::new();
        for sibling in found {
            if let Some(u) = current
                .iter()
                .find(|u| u.name == sibling.name && !u.conn.is_closed())
            {
                connected.push(u.clone());
                continue;
            }
            match self.connect_sibling(endpoint, &sibling).await {
                Ok(conn) => connected.push(Upstream {
                    name: sibling.name,
                    conn,
                }),
                Err(e) => {
                    tracing::warn!(sibling = %sibling.name, addr = %sibling.addr, error = %e, "the site's other relay answered discovery but not the connection")
                }
            }
        }
        connected
    }

    async fn connect_sibling(
        &self,
        endpoint: &quinn::Endpoint,
        sibling: &Sibling,
    ) -> Result<Connection, exchange::ExchangeError> {
        // A relay of this site, by its certificate (the discovery answer only said where).
        let tls = self
            .creds()
            .client_config(Expect::RelayOf(self.me.site.clone()), self.clock)?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(endpoint, sibling.addr, tls),
        )
        .await
        .map_err(|_| exchange::ExchangeError::Transport("no answer in 5 s".into()))??;
        conn.hello(self.hello()).await?;
        Ok(conn)
    }

    /// `name` sent chunks of `master` that were not what their ids say (`chunks` of them, each
    /// refused): it is set aside for a night (`siblings::SET_ASIDE_SECS`), neither asked for
    /// chunks nor followed across the WAN, and named in the report to the DSI. Its connection is
    /// dropped quietly: the transfer under way goes on without it.
    pub(super) fn set_aside(&self, name: &str, master: &MasterRef, chunks: usize) {
        tracing::warn!(sibling = %name, %master, chunks, "the site's other relay sent corrupt chunks (refused): set aside for {} h", siblings::SET_ASIDE_SECS / 3600);
        let now = self.clock.now();
        self.siblings.send_if_modified(|s| {
            s.retain(|u| u.name != name);
            false
        });
        let left: Vec<String> = self
            .siblings
            .borrow()
            .iter()
            .map(|u| u.name.clone())
            .collect();
        let leader = siblings::leader(self.me.node.as_str(), left.iter().map(String::as_str))
            .map(str::to_owned);
        self.stat(|s| {
            s.bad_siblings.retain(|b| b.node != name);
            s.bad_siblings.push(BadPeer {
                node: name.to_owned(),
                master: master.clone(),
                at: now,
            });
            s.siblings = left;
            s.upstream = leader;
        });
    }

    /// The connected relay of the site that crosses the WAN for this one; `None`: this one does.
    pub(super) fn leader(&self) -> Option<Upstream> {
        let all = self.siblings.borrow();
        let name = siblings::leader(self.me.node.as_str(), all.iter().map(|u| u.name.as_str()))?;
        all.iter().find(|u| u.name == name).cloned()
    }
}
