//! What a server sent, by whom it went to: the chunks (and their bytes, in stored form, header
//! included, as `store::layers::Counted` counts them) each site's peers of each role took. The
//! controller's `/metrics` reads it (bytes served over QUIC to each site's relay).
//!
//! A chunk counts once QUIC has taken its frame (its stream may still fail later: the count is of
//! what was sent, not of what arrived). Counts start at zero when the server starts.

use super::*;

/// A server's sent-chunk counts, shared by its connections; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Served(Arc<Mutex<HashMap<(Role, SiteId), Sent>>>);

/// Chunks and their stored bytes sent to one role at one site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub chunks: u64,
    pub bytes: u64,
}

impl Served {
    /// `bytes` of one chunk went to `peer`.
    pub fn chunk(&self, peer: &Identity, bytes: u64) {
        if let Ok(mut m) = self.0.lock() {
            let s = m.entry((peer.role, peer.site.clone())).or_default();
            s.chunks += 1;
            s.bytes += bytes;
        }
    }

    /// Every (role, site) served so far, in a stable order.
    pub fn snapshot(&self) -> Vec<(Role, SiteId, Sent)> {
        let mut out: Vec<_> = self
            .0
            .lock()
            .map(|m| m.iter().map(|((r, s), n)| (*r, s.clone(), *n)).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| (a.1.as_str(), a.0.to_string()).cmp(&(b.1.as_str(), b.0.to_string())));
        out
    }
}
