//! How many chunk requests a paced fetch keeps outstanding. Under a rate limit a request asks for
//! about 25 ms of the rate, and about a round trip's worth of requests is outstanding: fewer leave
//! the link idle for part of every round trip (a satellite's 600 ms), more are paid for but not yet
//! received, which is what arrives in one lump after a stall and so bounds how far any second of
//! the link can exceed the rate.

use std::time::Duration;

/// The most requests outstanding on one connection: below the streams a server grants an enrolled
/// peer (64), and a round trip of 1.2 s at 25 ms a request.
pub const MAX_PACED_IN_FLIGHT: usize = 48;

/// (chunks per request, requests outstanding) for a fetch paced at `rate_bps` of chunks averaging
/// `avg_bytes` over a connection whose round trip is `rtt`; at most `max_batch` chunks a request.
pub fn paced(rate_bps: u64, avg_bytes: u64, rtt: Duration, max_batch: usize) -> (usize, usize) {
    let avg = avg_bytes.max(1);
    let batch = ((rate_bps / 8 / 40) / avg).clamp(1, max_batch.max(1) as u64);
    let request_secs = (batch * avg * 8) as f64 / rate_bps.max(1) as f64;
    let round_trips = rtt.as_secs_f64() / request_secs.max(1e-3);
    // A round trip's worth plus a little slack for the client's own pauses.
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
    fn a_round_trip_of_data_is_asked_for_on_a_satellite_as_on_a_city_link() {
        // 10 Mbit/s, 35 kB chunks: a satellite's 600 ms, a 4G link's 80 ms, a city's 40 ms.
        for rtt in [600, 80, 40] {
            let secs = outstanding_secs(10_000_000, 35_000, rtt);
            assert!(
                secs >= rtt as f64 / 1000.0,
                "{rtt} ms: only {secs:.3} s outstanding"
            );
            // Not much more than the round trip and the slack: the overshoot after a stall.
            assert!(secs <= rtt as f64 / 1000.0 + 0.2, "{rtt} ms: {secs:.3} s");
        }
    }

    #[test]
    fn bounded_by_the_streams_a_server_grants() {
        let (_, in_flight) = paced(100_000_000, 35_000, Duration::from_secs(5), 64);
        assert_eq!(in_flight, MAX_PACED_IN_FLIGHT);
        let (batch, in_flight) = paced(1_000, 35_000, Duration::from_millis(1), 64);
        assert_eq!((batch, in_flight), (1, 4));
    }
}
