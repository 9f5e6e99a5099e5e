//! Pacing a transfer: `TokenBucket` (pure) and `RateLimit` (its average and a one-second ceiling
//! on tokio's clock), with `Ticket`s for what was asked and not yet received.

use super::*;

/// A token bucket in bits per second, changeable while running. Pure: time is passed in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    bits_per_sec: u64,
    burst_bits: u64,
    tokens: f64,
    last: Option<std::time::Duration>,
}

impl TokenBucket {
    /// `burst_bits` is how far ahead of the rate a sender may get.
    pub fn new(bits_per_sec: u64, burst_bits: u64) -> TokenBucket {
        TokenBucket {
            bits_per_sec: bits_per_sec.max(1),
            burst_bits: burst_bits.max(1),
            tokens: burst_bits as f64,
            last: None,
        }
    }

    /// Changes the rate and the burst; credit saved up under the old rate is cut to the new burst
    /// (a relay that started unpaced must not go on at full speed on its savings).
    pub fn set_rate(&mut self, bits_per_sec: u64, burst_bits: u64) {
        self.bits_per_sec = bits_per_sec.max(1);
        self.burst_bits = burst_bits.max(1);
        self.tokens = self.tokens.min(self.burst_bits as f64);
    }

    pub fn rate(&self) -> u64 {
        self.bits_per_sec
    }

    /// Takes `bytes` at time `now` (time since any fixed origin); returns how long to wait before
    /// going on (zero if within budget). Debt is allowed, so large items pass at the right rate.
    pub fn take(&mut self, now: std::time::Duration, bytes: u64) -> std::time::Duration {
        if let Some(last) = self.last {
            let elapsed = now.saturating_sub(last).as_secs_f64();
            self.tokens =
                (self.tokens + elapsed * self.bits_per_sec as f64).min(self.burst_bits as f64);
        }
        self.last = Some(now);
        self.tokens -= (bytes * 8) as f64;
        if self.tokens >= 0.0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs_f64(-self.tokens / self.bits_per_sec as f64)
        }
    }
}

/// A shared, async [`TokenBucket`] on tokio's clock (so tests can pause and advance time), with a
/// ceiling over any second: what arrived in the last second, plus what was asked for and has not
/// arrived yet, stays under [`RateLimit::CEILING`] times the rate. The bucket keeps the average;
/// the ceiling keeps the peaks, whatever pauses the sender or the peer take (a peer that stalls
/// and then sends everything asked for at once cannot exceed it, as it was never asked for more).
#[derive(Debug)]
pub struct RateLimit {
    bucket: Mutex<TokenBucket>,
    window: Mutex<Window>,
    origin: tokio::time::Instant,
}

/// Bytes received during the last second, and bytes asked for but not yet received. Pure: times
/// are durations since any fixed origin.
#[derive(Debug, Default)]
pub(super) struct Window {
    pub(super) arrived: std::collections::VecDeque<(Duration, u64)>,
    pub(super) in_window: u64,
    pub(super) outstanding: u64,
}

impl Window {
    /// Records `bytes` arriving at `now` for a request with `remaining` bytes outstanding;
    /// returns how many of those are settled.
    pub(super) fn arrived(&mut self, now: Duration, bytes: u64, remaining: u64) -> u64 {
        let settled = bytes.min(remaining);
        self.outstanding -= settled;
        self.arrived.push_back((now, bytes));
        self.in_window += bytes;
        settled
    }

    /// How long until `bytes` more fit under `ceiling` (zero: now); drops what left the window.
    pub(super) fn wait_for(&mut self, now: Duration, bytes: u64, ceiling: u64) -> Duration {
        while let Some(&(at, n)) = self.arrived.front() {
            if now.saturating_sub(at) < Duration::from_secs(1) {
                break;
            }
            self.arrived.pop_front();
            self.in_window -= n;
        }
        let used = self.in_window + self.outstanding + bytes;
        if used <= ceiling || (self.in_window == 0 && self.outstanding == 0) {
            return Duration::ZERO;
        }
        // The moment enough of the window's arrivals have left it; if what is outstanding is
        // too much alone, after some of it arrived.
        let mut freed = 0;
        for &(at, n) in &self.arrived {
            freed += n;
            if used - freed <= ceiling {
                return (at + Duration::from_secs(1)).saturating_sub(now);
            }
        }
        Duration::from_millis(5)
    }
}

/// Bytes of the rate `bits_per_sec` that a paced fetch over a link with round trip `rtt` keeps
/// asked for and not yet received ([`super::pipeline::ROUND_TRIPS`] round trips of it) beyond what
/// the ceiling's 5 % already allows (the first 50 ms), counted up to a round trip of 1 s. What a
/// stalled peer can then dump into one second is 1.05 s of the rate plus this: the ceiling holds
/// as it did for round trips up to 25 ms (a LAN); a city's 40 ms adds 3 %, 4G's 80 ms 11 %, a
/// satellite's 600 ms 115 % (after a stall only: the bucket keeps the average at the rate, and a
/// link that is itself the cap cannot carry more).
pub(super) fn in_flight_room(bits_per_sec: u64, rtt: Duration) -> u64 {
    let secs = (rtt.min(Duration::from_secs(1)) * super::pipeline::ROUND_TRIPS)
        .saturating_sub(Duration::from_millis(50))
        .as_secs_f64();
    (bits_per_sec as f64 / 8.0 * secs) as u64
}

/// Bytes paid for by [`RateLimit::acquire`] and not yet received; what never arrives is given
/// back when it is dropped.
#[derive(Debug)]
pub struct Ticket<'a> {
    limit: &'a RateLimit,
    remaining: u64,
}

impl Ticket<'_> {
    /// `bytes` of this request arrived now.
    pub fn arrived(&mut self, bytes: u64) {
        let now = self.limit.now();
        if let Ok(mut w) = self.limit.window.lock() {
            self.remaining -= w.arrived(now, bytes, self.remaining);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.limit.window.lock() {
            w.outstanding -= self.remaining;
        }
    }
}

impl RateLimit {
    /// Any second may carry at most this many seconds of the rate.
    pub const CEILING: f64 = 1.05;

    pub fn new(bits_per_sec: u64) -> RateLimit {
        RateLimit {
            bucket: Mutex::new(TokenBucket::new(bits_per_sec, Self::burst(bits_per_sec))),
            window: Mutex::default(),
            origin: tokio::time::Instant::now(),
        }
    }

    /// 25 ms of the rate may go ahead of it (at least 64 KiB).
    pub(super) fn burst(bits_per_sec: u64) -> u64 {
        (bits_per_sec / 40).max(8 * (64 << 10))
    }

    pub fn set_rate(&self, bits_per_sec: u64) {
        if let Ok(mut b) = self.bucket.lock() {
            b.set_rate(bits_per_sec, Self::burst(bits_per_sec));
        }
    }

    pub fn rate(&self) -> u64 {
        self.bucket.lock().map(|b| b.rate()).unwrap_or(1)
    }

    pub(super) fn now(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.origin)
    }

    /// Waits until `bytes` may be asked for: the bucket's pace, then the ceiling over a second.
    pub async fn acquire(&self, bytes: u64) -> Ticket<'_> {
        self.acquire_over(bytes, Duration::ZERO).await
    }

    /// The same for a request over a connection whose round trip is `rtt`: the ceiling leaves
    /// room for what a paced fetch keeps asked for ([`in_flight_room`]). Without it, a 600 ms
    /// satellite link could never be kept full: what arrived in the last second plus the 0.6 s
    /// asked for and still on its way is 1.6 s of the rate, over the 1.05 allowed.
    pub async fn acquire_over(&self, bytes: u64, rtt: Duration) -> Ticket<'_> {
        let now = self.now();
        let wait = self
            .bucket
            .lock()
            .map(|mut b| b.take(now, bytes))
            .unwrap_or_default();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let rate = self.rate();
        let ceiling = (rate as f64 / 8.0 * Self::CEILING) as u64 + in_flight_room(rate, rtt);
        loop {
            let wait = match self.window.lock() {
                Ok(mut w) => {
                    let wait = w.wait_for(self.now(), bytes, ceiling);
                    if wait.is_zero() {
                        w.outstanding += bytes;
                    }
                    wait
                }
                Err(_) => Duration::ZERO,
            };
            if wait.is_zero() {
                return Ticket {
                    limit: self,
                    remaining: bytes,
                };
            }
            tokio::time::sleep(wait).await;
        }
    }
}
