//! How many chunk requests a paced fetch keeps outstanding, and how large they are. Under a rate
//! limit a request asks for 25 ms of the rate on a LAN, a city or a 4G link, up to 100 ms on a
//! satellite's round trip (far more one-chunk requests carried less: 0.82 of a 600 ms link's cap
//! with 30 or 60 of them outstanding, 0.91 with 15 of four chunks, `bench/far-links.sh`), and
//! about [`ROUND_TRIPS`] round trips' worth of requests is outstanding: with one, a satellite link
//! carried 0.83 of its cap, with two 0.91 (the sender's congestion controller keeps below the link
//! when it has no backlog to probe with). More are paid for but not yet received, which is what
//! arrives in one lump after a stall and so bounds how far any second of the link can exceed the
//! rate (see `rate::in_flight_room`).

use std::time::Duration;

/// The most requests outstanding on one connection: below the streams a server grants an enrolled
/// peer (64).
pub const MAX_PACED_IN_FLIGHT: usize = 48;

/// Round trips of requests a paced fetch keeps outstanding.
pub const ROUND_TRIPS: u32 = 2;

/// The share of the rate a request asks for: a sixth of the round trip, within these bounds.
const REQUEST_SHORTEST: Duration = Duration::from_millis(25);
const REQUEST_LONGEST: Duration = Duration::from_millis(100);

/// (chunks per request, requests outstanding) for a fetch paced at `rate_bps` of chunks averaging
/// `avg_bytes` over a connection whose round trip is `rtt`; at most `max_batch` chunks a request.
pub fn paced(rate_bps: u64, avg_bytes: u64, rtt: Duration, max_batch: usize) -> (usize, usize) {
    let avg = avg_bytes.max(1);
    let request = (rtt / 6).clamp(REQUEST_SHORTEST, REQUEST_LONGEST);
    let request_bytes = (rate_bps as f64 / 8.0 * request.as_secs_f64()) as u64;
    let batch = (request_bytes / avg).clamp(1, max_batch.max(1) as u64);
    let request_secs = (batch * avg * 8) as f64 / rate_bps.max(1) as f64;
    let round_trips = f64::from(ROUND_TRIPS) * rtt.as_secs_f64() / request_secs.max(1e-3);
    // Plus a little slack for the client's own pauses.
    let in_flight = (round_trips.ceil() as usize + 3).clamp(2, MAX_PACED_IN_FLIGHT);
    (batch as usize, in_flight)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data outstanding, in seconds of the rate.
    fn outstanding_secs(rate: u64, avg: u64, rtt_ms: u64) -> f64 {
        let (batch, in_flight) = paced(rate, avg, Duration::from_millis(rtt_ms), 64);
        (batch as u64 * avg * in_flight as u64 * 8) as f64 / rate as f64
    }

    #[test]
    fn two_round_trips_of_data_are_asked_for_on_a_satellite_as_on_a_city_link() {
        // 10 Mbit/s, 35 kB chunks: a satellite's 600 ms, a 4G link's 80 ms, a city's 40 ms.
        for rtt in [600, 80, 40] {
            let want = f64::from(ROUND_TRIPS) * rtt as f64 / 1000.0;
            let secs = outstanding_secs(10_000_000, 35_000, rtt);
            assert!(secs >= want, "{rtt} ms: only {secs:.3} s outstanding");
            // Not much more than that and the slack: the overshoot after a stall.
            assert!(secs <= want + 0.35, "{rtt} ms: {secs:.3} s");
        }
    }

    #[test]
    fn a_satellites_requests_carry_several_chunks_a_4g_links_one() {
        // 10 Mbit/s, 35 kB chunks: 100 ms of the rate is three chunks, 25 ms less than one.
        let (sat, _) = paced(10_000_000, 35_000, Duration::from_millis(600), 64);
        assert_eq!(sat, 3);
        let (four_g, _) = paced(10_000_000, 35_000, Duration::from_millis(80), 64);
        assert_eq!(four_g, 1);
        // A LAN at 1 Gbit/s: 25 ms of the rate would be 89 chunks; at most 64.
        let (lan, _) = paced(1_000_000_000, 35_000, Duration::from_millis(1), 64);
        assert_eq!(lan, 64);
    }

    #[test]
    fn bounded_by_the_streams_a_server_grants() {
        let (_, in_flight) = paced(100_000_000, 35_000, Duration::from_secs(5), 64);
        assert_eq!(in_flight, MAX_PACED_IN_FLIGHT);
        let (batch, in_flight) = paced(1_000, 35_000, Duration::from_millis(1), 64);
        assert_eq!((batch, in_flight), (1, 4));
    }
}
