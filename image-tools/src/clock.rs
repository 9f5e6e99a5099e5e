//! The one place nightcast reads the wall clock, and the test clock every binary accepts.
//!
//! A [`Clock`] maps real time to the time the programs act on. Normally the two are the same. With
//! `NIGHTCAST_CLOCK` set, every program (controller, relay, agent, demo) runs on a shifted and
//! possibly accelerated clock, so a test or the demo can live through a night in seconds:
//!
//! ```text
//! NIGHTCAST_CLOCK="start=2026-11-23T21:59:00Z speed=60 since=1763934000"
//! ```
//!
//! - `start`: the time the clock shows at the real instant `since` (RFC 3339), or `offset=SECONDS`
//!   to shift the real clock instead;
//! - `speed`: how many seconds pass per real second (default 1);
//! - `since`: real Unix seconds (with decimals) at which the clock shows `start`; by default the
//!   moment the program parsed it. Give it explicitly when several processes must agree.
//!
//! Only timers are scaled: bandwidth, timeouts and rates stay in real time. Library code never asks
//! this module for the time: binaries make a `Clock` and pass it (or `now` values) in.

use std::time::Duration;

/// The environment variable that sets a test clock.
pub const ENV: &str = "NIGHTCAST_CLOCK";

#[derive(Debug, thiserror::Error)]
#[error("{ENV}={spec:?}: {why} (expected e.g. \"start=2026-11-23T21:59:00Z speed=60\")")]
pub struct ClockError {
    spec: String,
    why: String,
}

/// Real time, or a shifted and scaled copy of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clock {
    /// Real Unix seconds at which the clock showed `base`.
    since: f64,
    /// Unix seconds shown at `since`.
    base: f64,
    speed: f64,
}

/// Real Unix seconds, with sub-second precision.
#[allow(clippy::disallowed_methods)] // the one reading of the wall clock
fn real_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Clock {
    /// The real clock.
    pub fn system() -> Clock {
        Clock {
            since: 0.0,
            base: 0.0,
            speed: 1.0,
        }
    }

    /// The clock `NIGHTCAST_CLOCK` describes, or the real one when it is unset or empty.
    pub fn from_env() -> Result<Clock, ClockError> {
        match std::env::var(ENV) {
            Ok(spec) if !spec.trim().is_empty() => Clock::parse(&spec, real_now()),
            _ => Ok(Clock::system()),
        }
    }

    /// A daemon's clock: [`Clock::from_env`], with a warning in the log when it is not the
    /// system's (a test clock in production would plan every night wrong).
    pub fn for_daemon() -> Result<Clock, ClockError> {
        let clock = Clock::from_env()?;
        if clock != Clock::system() {
            tracing::warn!(
                now = clock.now(),
                speed = clock.speed(),
                "running on a test clock"
            );
        }
        Ok(clock)
    }

    /// Parses a spec whose default `since` is now.
    pub fn parse_now(spec: &str) -> Result<Clock, ClockError> {
        Clock::parse(spec, real_now())
    }

    /// Parses a spec (see the module doc); `real_now` is the default for `since`.
    pub fn parse(spec: &str, real_now: f64) -> Result<Clock, ClockError> {
        let err = |why: String| ClockError {
            spec: spec.to_owned(),
            why,
        };
        let (mut start, mut offset, mut speed, mut since) = (None, None, 1.0f64, real_now);
        for part in spec.split([' ', ',']).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err(format!("{part:?} is not key=value")))?;
            let number = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err(format!("{key}: {value:?} is not a number")))
            };
            match key {
                "start" => {
                    let t: jiff::Timestamp = value
                        .parse()
                        .map_err(|e| err(format!("start: {value:?}: {e}")))?;
                    start = Some(t.as_millisecond() as f64 / 1000.0);
                }
                "offset" => offset = Some(number()?),
                "speed" => speed = number()?,
                "since" => since = number()?,
                other => return Err(err(format!("unknown key {other:?}"))),
            }
        }
        if !(speed > 0.0 && speed <= 1_000_000.0) {
            return Err(err(format!(
                "speed {speed} must be above 0 and at most 1e6"
            )));
        }
        let base = match (start, offset) {
            (Some(_), Some(_)) => return Err(err("give start or offset, not both".into())),
            (Some(s), None) => s,
            (None, Some(o)) => since + o,
            (None, None) => since,
        };
        Ok(Clock { since, base, speed })
    }

    /// The clock's reading at real Unix time `real`.
    pub fn at_real(&self, real: f64) -> f64 {
        self.base + (real - self.since) * self.speed
    }

    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        self.at_real(real_now()).floor() as i64
    }

    /// Unix seconds now, with sub-second precision.
    pub fn now_f64(&self) -> f64 {
        self.at_real(real_now())
    }

    /// How fast the clock runs against real time.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// The real time to wait until the clock shows `t` (zero if it already has).
    pub fn real_until(&self, t: i64) -> Duration {
        let ahead = (t as f64 - self.now_f64()) / self.speed;
        Duration::try_from_secs_f64(ahead.max(0.0)).unwrap_or(Duration::MAX)
    }

    /// The real duration of `secs` clock seconds.
    pub fn real(&self, secs: f64) -> Duration {
        Duration::try_from_secs_f64((secs / self.speed).max(0.0)).unwrap_or(Duration::MAX)
    }

    /// The spec that makes another process agree with this clock from now on.
    pub fn spec(&self) -> String {
        let since = real_now();
        format!(
            "start={} speed={} since={since:.3}",
            jiff::Timestamp::from_millisecond((self.at_real(since) * 1000.0) as i64)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            self.speed
        )
    }
}

/// TLS checks certificates' validity on the same clock as everything else, so that a test or the
/// demo on an accelerated clock sees certificates expire, and renewals happen, on that clock.
impl rustls::time_provider::TimeProvider for Clock {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            Duration::try_from_secs_f64(self.now_f64().max(0.0)).unwrap_or(Duration::ZERO),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_speed_map_real_time() {
        let c = Clock::parse("start=2026-11-23T21:59:00Z speed=60 since=1000", 0.0).unwrap();
        let start = 1_795_471_140.0; // 2026-11-23T21:59:00Z
        assert_eq!(c.at_real(1000.0), start);
        assert_eq!(c.at_real(1001.0), start + 60.0);
        assert_eq!(c.real(60.0), Duration::from_secs(1));
    }

    #[test]
    fn offset_shifts_from_since_and_defaults_to_now() {
        let c = Clock::parse("offset=3600", 500.0).unwrap();
        assert_eq!(c.at_real(500.0), 4100.0);
        assert_eq!(c.at_real(510.0), 4110.0);
        assert_eq!(Clock::parse("", 5.0).unwrap().at_real(7.0), 7.0);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, says) in [
            ("speed=0", "speed"),
            ("speed=fast", "not a number"),
            ("start=tomorrow", "start"),
            ("start=2026-11-23T21:59:00Z offset=5", "not both"),
            ("tz=UTC", "unknown key"),
            ("60", "key=value"),
        ] {
            let e = Clock::parse(spec, 0.0).unwrap_err().to_string();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn a_spec_round_trips_to_an_agreeing_clock() {
        let c = Clock::parse("start=2030-01-01T00:00:00Z speed=100", 1.0e9).unwrap();
        let copy = Clock::parse(&c.spec(), 0.0).unwrap();
        let now = real_now();
        assert!((c.at_real(now) - copy.at_real(now)).abs() < 1.0);
    }
}
