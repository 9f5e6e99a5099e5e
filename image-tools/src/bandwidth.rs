//! [`Bandwidth`]: a link rate, and the one statement of what a relay really moves over a site's
//! WAN cap. The controller's planner counts with it and the relay's pacer paces to it, so that a
//! plan promises what the relay delivers.
//!
//! Rates are decimal bits per second (a site's cap is given in Mbit/s, 1 Mbit = 10^6 bits), as
//! link rates are everywhere. Not here: parsing rates from text (no config spells one today: the
//! cap is a whole number of Mbit/s on the wire, in the database and in the admin API).

use std::fmt;

/// The share of a site's WAN cap the relay paces its chunk requests to: the pacing counts chunk
/// bytes, while the link also carries QUIC and IP headers and acknowledgements (about 6 %
/// measured), and what is outstanding after a stall arrives at once (`docs/BENCHMARKS.md`, "relay
/// WAN pacing": 0.91-0.92 of the cap in chunk bytes, 0.94-0.96 on the wire).
pub const PACING_SHARE: f64 = 0.92;

/// A link rate in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bandwidth {
    bits_per_sec: u64,
}

impl Bandwidth {
    /// No cap at all (the relay then does not pace): 100 Gbit/s, beyond any link it runs on.
    pub const UNLIMITED: Bandwidth = Bandwidth::from_bits_per_sec(100_000_000_000);

    pub const fn from_bits_per_sec(bits_per_sec: u64) -> Bandwidth {
        Bandwidth { bits_per_sec }
    }

    /// `mbit` Mbit/s (10^6 bits per second), saturating.
    pub const fn from_mbit(mbit: u64) -> Bandwidth {
        Bandwidth::from_bits_per_sec(mbit.saturating_mul(1_000_000))
    }

    /// A site's cap as the plan carries it: whole Mbit/s, 0 meaning none given.
    pub const fn site_cap(cap_mbit: u64) -> Bandwidth {
        if cap_mbit == 0 {
            Bandwidth::UNLIMITED
        } else {
            Bandwidth::from_mbit(cap_mbit)
        }
    }

    pub const fn bits_per_sec(self) -> u64 {
        self.bits_per_sec
    }

    pub const fn bytes_per_sec(self) -> u64 {
        self.bits_per_sec / 8
    }

    /// What the relay's pacer achieves in chunk bytes under this cap: [`PACING_SHARE`] of it.
    /// Plans count with this, never with the cap itself.
    pub fn usable(self) -> Bandwidth {
        if self == Bandwidth::UNLIMITED {
            return self;
        }
        Bandwidth::from_bits_per_sec((self.bits_per_sec as f64 * PACING_SHARE) as u64)
    }

    /// Whole seconds (rounded up) that `bytes` take at this rate; `None` at a rate of 0.
    pub fn secs_for(self, bytes: u64) -> Option<u64> {
        let rate = self.bytes_per_sec();
        (rate > 0).then(|| bytes.div_ceil(rate))
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bits_per_sec;
        if b >= 1_000_000 && b % 1_000_000 == 0 {
            write!(f, "{} Mbit/s", b / 1_000_000)
        } else if b >= 1_000_000 {
            write!(f, "{:.2} Mbit/s", b as f64 / 1e6)
        } else {
            write!(f, "{b} bit/s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usable_rate_is_what_the_relay_paces_to() {
        let cap = Bandwidth::from_mbit(10);
        assert_eq!(cap.bits_per_sec(), 10_000_000);
        assert_eq!(cap.bytes_per_sec(), 1_250_000);
        assert_eq!(cap.usable().bits_per_sec(), 9_200_000);
        assert_eq!(cap.usable().bytes_per_sec(), 1_150_000);
        assert_eq!(Bandwidth::from_mbit(20).usable().bits_per_sec(), 18_400_000);
    }

    #[test]
    fn no_cap_means_no_pacing() {
        assert_eq!(Bandwidth::site_cap(0), Bandwidth::UNLIMITED);
        assert_eq!(Bandwidth::UNLIMITED.usable(), Bandwidth::UNLIMITED);
        assert_eq!(Bandwidth::site_cap(100), Bandwidth::from_mbit(100));
        assert_eq!(Bandwidth::from_mbit(u64::MAX).bits_per_sec(), u64::MAX);
    }

    #[test]
    fn seconds_round_up_and_a_zero_rate_has_none() {
        let r = Bandwidth::from_bits_per_sec(8_000);
        assert_eq!(r.secs_for(1_000), Some(1));
        assert_eq!(r.secs_for(1_001), Some(2));
        assert_eq!(r.secs_for(0), Some(0));
        assert_eq!(Bandwidth::from_bits_per_sec(7).secs_for(1), None);
    }

    #[test]
    fn display_names_the_unit() {
        assert_eq!(Bandwidth::from_mbit(20).to_string(), "20 Mbit/s");
        assert_eq!(
            Bandwidth::from_mbit(20).usable().to_string(),
            "18.40 Mbit/s"
        );
        assert_eq!(Bandwidth::from_bits_per_sec(512).to_string(), "512 bit/s");
    }
}
