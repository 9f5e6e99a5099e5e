//! Which congestion controller a sender runs. Loss-based controllers (Cubic, quinn's default, and
//! NewReno) read every lost packet as congestion, which a satellite or 4G link's random loss is
//! not; BBR paces to the bottleneck rate it measures. Chosen per endpoint: the side that sends the
//! chunks (the controller to relays, a relay to its NUCs) is the one whose choice counts.

use std::sync::Arc;

/// A sender's congestion controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Congestion {
    /// quinn's default.
    #[default]
    Cubic,
    NewReno,
    /// Model-based (bottleneck rate and round trip): steady under random loss. Experimental in
    /// quinn 0.11.
    Bbr,
}

impl Congestion {
    /// `cubic`, `newreno` or `bbr`.
    pub fn parse(name: &str) -> Option<Congestion> {
        match name {
            "cubic" => Some(Congestion::Cubic),
            "newreno" => Some(Congestion::NewReno),
            "bbr" => Some(Congestion::Bbr),
            _ => None,
        }
    }

    /// Sets this controller on `t`.
    pub fn apply(self, t: &mut quinn::TransportConfig) {
        use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
        match self {
            Congestion::Cubic => t.congestion_controller_factory(Arc::new(CubicConfig::default())),
            Congestion::NewReno => {
                t.congestion_controller_factory(Arc::new(NewRenoConfig::default()))
            }
            Congestion::Bbr => t.congestion_controller_factory(Arc::new(BbrConfig::default())),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (name, c) in [
            ("cubic", Congestion::Cubic),
            ("newreno", Congestion::NewReno),
            ("bbr", Congestion::Bbr),
        ] {
            assert_eq!(Congestion::parse(name), Some(c));
        }
        assert_eq!(Congestion::parse("reno"), None);
    }
}
