//! When a multi-source fetch makes what it received durable, pure: one store write session for
//! the whole fetch of a version (`peers::writer`), committed when the oldest chunk not yet
//! committed has waited `every`, and at the end. A commit is one group commit (two `syncfs`: the
//! data, then the names), whatever the number of chunks in it: the cost is paid per commit, not per request or per source. A chunk is
//! visible to the peers (and durable) only once committed, so `every` is also how long a chunk
//! waits before the NUC can pass it on. Time is an input (`now`: time since any fixed origin).

use std::time::Duration;

/// How long a received chunk waits at most before it is committed.
pub const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// The commit clock of one write session.
#[derive(Debug, Clone)]
pub struct Commits {
    every: Duration,
    /// Chunks received and not committed yet.
    pending: usize,
    /// When the oldest of them arrived.
    oldest: Option<Duration>,
}

impl Commits {
    pub fn new(every: Duration) -> Commits {
        Commits {
            every,
            pending: 0,
            oldest: None,
        }
    }

    /// A chunk was put at `now`.
    pub fn put(&mut self, now: Duration) {
        self.pending += 1;
        self.oldest.get_or_insert(now);
    }

    /// Whether to commit now.
    pub fn due(&self, now: Duration) -> bool {
        self.oldest
            .is_some_and(|t| now.saturating_sub(t) >= self.every)
    }

    /// How long the writer may wait for the next chunk before a commit is due (none: nothing is
    /// pending, wait as long as it takes).
    pub fn wait(&self, now: Duration) -> Option<Duration> {
        self.oldest.map(|t| (t + self.every).saturating_sub(now))
    }

    /// Everything put so far was handed to a commit at `now`.
    pub fn committed(&mut self) -> usize {
        self.oldest = None;
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_idle_writer_never_commits() {
        let c = Commits::new(1000 * MS);
        assert!(!c.due(Duration::from_secs(3600)));
        assert_eq!(c.wait(Duration::ZERO), None);
    }

    #[test]
    fn a_stream_of_chunks_is_committed_once_per_period_not_once_per_chunk() {
        let mut c = Commits::new(1000 * MS);
        let mut commits = 0;
        let mut chunks = 0;
        // 100 chunks a second for 10 s, as a 20 Mbit/s port brings them.
        for t in (0..10_000).step_by(10) {
            let now = t * MS;
            c.put(now);
            if c.due(now) {
                chunks += c.committed();
                commits += 1;
            }
        }
        assert!((9..=10).contains(&commits), "{commits} commits");
        assert!(chunks >= 900, "{chunks}");
    }

    #[test]
    fn a_chunk_waits_at_most_the_period_whenever_it_came() {
        let mut c = Commits::new(1000 * MS);
        c.put(5000 * MS);
        // The writer is told how long it may sleep: until the chunk's period is over.
        assert_eq!(c.wait(5200 * MS), Some(800 * MS));
        assert!(!c.due(5999 * MS));
        assert!(c.due(6000 * MS));
        assert_eq!(c.wait(6500 * MS), Some(Duration::ZERO));
        // A later chunk does not push the commit back.
        c.put(5900 * MS);
        assert!(c.due(6000 * MS));
        assert_eq!(c.committed(), 2);
        assert!(!c.due(9000 * MS));
    }
}
