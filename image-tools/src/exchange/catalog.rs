//! What a server may hand out, and to whom: the `Catalog` trait and `MemoryCatalog`.

use super::*;

/// What a server may hand out, and to whom.
pub trait Catalog: Send + Sync {
    /// The signed bytes of a manifest, if known.
    fn manifest(&self, master: &MasterRef) -> Option<Vec<u8>>;
    /// The signed bytes of a manifest of master `name` (any version) whose bytes have the BLAKE3
    /// hash `hash` (`manifest_delta::base_hash`): the base of a delta a peer asks for. None by
    /// default (the peer then gets the whole manifest).
    fn manifest_with_hash(&self, _name: &MasterName, _hash: &[u8; 32]) -> Option<Vec<u8>> {
        None
    }
    /// When a chunk the store lacks is expected (Unix seconds), if the server knows: a relay
    /// answers "not yet" instead of "lacking" for chunks it will fetch in its next window.
    fn expected(&self, _id: &ChunkId) -> Option<i64> {
        None
    }
    /// The master versions `peer` may read: for a relay or agent, those scheduled for its site.
    fn allowed(&self, peer: &Identity) -> Vec<MasterRef>;
    /// `peer` said hello from `remote`: a relay notes where an agent serves its peers
    /// ([`Hello::peer_port`]). By default nothing.
    fn hello(&self, _peer: &Identity, _remote: SocketAddr, _hello: &Hello) {}
    /// The tracker's answer to `peer` asking who holds or fetches `master` (one it may read);
    /// `None`: this server is no tracker (the default).
    fn peers(&self, _peer: &Identity, _master: &MasterRef) -> Option<wire::PeerList> {
        None
    }
    /// What this server took in of `master` since position `since` of its log `epoch`
    /// (`HasSince`, a peer agent's question); `None`: it keeps no such log (the default: ask
    /// `Has`).
    fn holdings_since(
        &self,
        _master: &MasterRef,
        _epoch: u64,
        _since: u64,
    ) -> Option<wire::Holdings> {
        None
    }
    /// The fetch plan of `peer`'s site; by default every allowed version, no deadline, no schedule.
    fn plan(&self, peer: &Identity) -> wire::SitePlan {
        wire::SitePlan {
            entries: unplanned(self.allowed(peer)),
            ..wire::SitePlan::default()
        }
    }
}

/// A plan with no deadlines: every master version, fetch whenever allowed, never evict.
pub(super) fn unplanned(masters: Vec<MasterRef>) -> Vec<wire::PlanEntry> {
    masters
        .into_iter()
        .map(|master| wire::PlanEntry {
            master,
            deadline: i64::MAX,
            pin_until: i64::MAX,
            override_until: None,
        })
        .collect()
}

/// A catalog held in memory and changed while serving (the controller feeds it from its calendar).
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    inner: RwLock<CatalogInner>,
}

#[derive(Debug, Default)]
pub(super) struct CatalogInner {
    pub(super) manifests: HashMap<MasterRef, Vec<u8>>,
    /// Each manifest's `manifest_delta::base_hash`.
    pub(super) hashes: HashMap<MasterRef, [u8; 32]>,
    pub(super) by_site: HashMap<String, Vec<MasterRef>>,
    pub(super) plans: HashMap<String, wire::SitePlan>,
}

impl MemoryCatalog {
    pub fn add_manifest(&self, master: MasterRef, bytes: Vec<u8>) {
        if let Ok(mut c) = self.inner.write() {
            c.hashes
                .insert(master.clone(), crate::manifest_delta::base_hash(&bytes));
            c.manifests.insert(master, bytes);
        }
    }

    /// Replaces the whole catalogue at once (a reload).
    pub fn replace_with(&self, fresh: MemoryCatalog) {
        if let (Ok(mut c), Ok(f)) = (self.inner.write(), fresh.inner.into_inner()) {
            *c = f;
        }
    }

    /// Sets `site`'s fetch plan; what it may read becomes the plan's master versions.
    pub fn set_plan(&self, site: &str, plan: wire::SitePlan) {
        if let Ok(mut c) = self.inner.write() {
            c.by_site.insert(
                site.to_owned(),
                plan.entries.iter().map(|e| e.master.clone()).collect(),
            );
            c.plans.insert(site.to_owned(), plan);
        }
    }

    /// Replaces what `site` may read.
    pub fn schedule(&self, site: &str, masters: Vec<MasterRef>) {
        if let Ok(mut c) = self.inner.write() {
            c.by_site.insert(site.to_owned(), masters);
        }
    }
}

impl Catalog for MemoryCatalog {
    fn manifest(&self, m: &MasterRef) -> Option<Vec<u8>> {
        let c = self.inner.read().ok()?;
        c.manifests.get(m).cloned()
    }

    fn manifest_with_hash(&self, name: &MasterName, hash: &[u8; 32]) -> Option<Vec<u8>> {
        let c = self.inner.read().ok()?;
        let (m, _) = c
            .hashes
            .iter()
            .find(|(m, h)| m.name == *name && *h == hash)?;
        c.manifests.get(m).cloned()
    }

    fn allowed(&self, peer: &Identity) -> Vec<MasterRef> {
        let Ok(c) = self.inner.read() else {
            return Vec::new();
        };
        match peer.role {
            Role::Controller => c.manifests.keys().cloned().collect(),
            Role::Relay | Role::Agent => c
                .by_site
                .get(peer.site.as_str())
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn plan(&self, peer: &Identity) -> wire::SitePlan {
        let planned = self
            .inner
            .read()
            .ok()
            .and_then(|c| c.plans.get(peer.site.as_str()).cloned());
        planned.unwrap_or_else(|| wire::SitePlan {
            entries: unplanned(self.allowed(peer)),
            ..wire::SitePlan::default()
        })
    }
}
