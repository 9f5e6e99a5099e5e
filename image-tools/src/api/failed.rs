//! A plan row's NUCs on which the session's master version failed to come up, in words.

use serde::{Deserialize, Serialize};

/// A seat of the session's room whose NUC reported the session's master version as failed (it
/// did not come up there, so that seat runs the previous version until the DSI publishes it again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedOn {
    /// The NUC (node id).
    pub node: String,
    /// The seat it is bound to, in the session's room.
    pub seat: String,
    /// Why it failed, as the NUC said.
    pub why: String,
    /// When it failed (Unix seconds, the NUC's clock).
    pub at: i64,
}

impl std::fmt::Display for FailedOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FAILED on {} ({}): {}: this seat runs the previous version \
             (see `nightcast fleet`; republish the master to retry it)",
            self.node, self.seat, self.why
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_nuc_its_seat_and_why() {
        let f = FailedOn {
            node: "nuc-3".into(),
            seat: "pc-3".into(),
            why: "the guest's kernel panicked".into(),
            at: 5,
        };
        assert_eq!(
            f.to_string(),
            "FAILED on nuc-3 (pc-3): the guest's kernel panicked: this seat runs the previous \
             version (see `nightcast fleet`; republish the master to retry it)"
        );
    }
}
