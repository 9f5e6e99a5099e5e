//! Finding the site's relay on the VLAN with nothing configured: the agent broadcasts a UDP
//! question, relays answer with where they serve and the fingerprint of the CA their certificate
//! comes from. See "Discovery" in `docs/PROTOCOL.md`.
//!
//! The answer is not authenticated (nothing is, before enrolment): an agent with a configured CA
//! fingerprint ignores answers that do not match it; one without takes the first answer on trust,
//! once, and pins that CA from then on.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where relays listen for discovery questions by default.
pub const PORT: u16 = 4435;

/// The question: exactly these bytes.
pub const QUESTION: &[u8] = b"NCDISCOVER 1\n";

/// Answers above this size are ignored.
const MAX_ANSWER: usize = 1024;

/// A relay's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Always 1 for this version.
    pub nightcast: u32,
    pub site: String,
    pub relay: String,
    /// The UDP port of its chunk-exchange service; the address is the one the answer came from.
    pub port: u16,
    /// Hex of the first 16 bytes of BLAKE3 of the CA certificate (`trust::fingerprint`).
    pub ca: String,
    /// During a CA rotation, the fingerprints of the other CAs the relay's bridge holds
    /// (`trust::bridge`): a NUC still on the other CA recognises its relay by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

impl Answer {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for anything that is not a well-formed answer of this version.
    pub fn decode(bytes: &[u8]) -> Option<Answer> {
        if bytes.len() > MAX_ANSWER {
            return None;
        }
        let a: Answer = serde_json::from_slice(bytes).ok()?;
        (a.nightcast == 1 && a.port != 0 && a.ca_fingerprint().is_some()).then_some(a)
    }

    pub fn ca_fingerprint(&self) -> Option<[u8; 16]> {
        crate::ids::unhex::<16>(&self.ca)
    }

    /// Whether the relay names a CA with one of these fingerprints (its own or, during a CA
    /// rotation, one its bridge holds).
    pub fn names_any(&self, fingerprints: &[[u8; 16]]) -> bool {
        std::iter::once(&self.ca)
            .chain(&self.also)
            .filter_map(|h| crate::ids::unhex::<16>(h))
            .any(|fp| fingerprints.contains(&fp))
    }
}

/// Answers a relay sends per second at most, on average.
pub const ANSWERS_PER_SEC: u32 = 20;
/// Answers a relay may send at once (a room of NUCs booting together).
pub const ANSWER_BURST: u32 = 60;

/// How many answers may go out: a token bucket, pure (time is passed in), without debt: a
/// question over the budget is not answered at all.
#[derive(Debug, Clone)]
pub struct AnswerBudget {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Option<Duration>,
}

impl AnswerBudget {
    pub fn new(per_sec: u32, burst: u32) -> AnswerBudget {
        AnswerBudget {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: None,
        }
    }

    /// Whether one more answer may go out at `now` (time since any fixed origin); takes it if so.
    pub fn allow(&mut self, now: Duration) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_sub(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Answers discovery questions on `socket` until the future is dropped: only the exact question,
/// and at most [`ANSWERS_PER_SEC`] answers a second (bursts of [`ANSWER_BURST`]), so a flood of
/// questions, or questions with a forged source, get a bounded trickle of answers.
pub async fn answer(socket: tokio::net::UdpSocket, answer: Answer) {
    answer_with(socket, move || answer.clone()).await
}

/// [`answer`], with the answer made afresh for each question (a relay's CA can change while it
/// runs: a CA rotation).
pub async fn answer_with(socket: tokio::net::UdpSocket, make: impl Fn() -> Answer) {
    let mut buf = [0u8; 64];
    let mut budget = AnswerBudget::new(ANSWERS_PER_SEC, ANSWER_BURST);
    let origin = tokio::time::Instant::now();
    let mut refused = 0u64;
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if &buf[..n] != QUESTION {
            continue;
        }
        if budget.allow(tokio::time::Instant::now() - origin) {
            tracing::debug!(%from, "discovery question answered");
            let _ = socket.send_to(&make().encode(), from).await;
        } else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%from, refused, "discovery questions over the answer budget: not answered");
            }
        }
    }
}

/// Asks `target` (a broadcast address, or a relay's address) and collects the answers that
/// arrive within `wait`, each with the relay's service address.
pub async fn discover(
    target: SocketAddr,
    wait: Duration,
) -> std::io::Result<Vec<(SocketAddr, Answer)>> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.set_broadcast(true)?;
    socket.send_to(QUESTION, target).await?;
    let mut out: Vec<(SocketAddr, Answer)> = Vec::new();
    let mut buf = vec![0u8; MAX_ANSWER + 1];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let got = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let Ok(Ok((n, from))) = got else { break };
        if let Some(a) = Answer::decode(&buf[..n]) {
            let service = SocketAddr::new(from.ip(), a.port);
            if !out.iter().any(|(s, _)| *s == service) {
                out.push((service, a));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_for(port: u16) -> Answer {
        Answer {
            nightcast: 1,
            site: "lyon".into(),
            relay: "relay-1".into(),
            port,
            ca: "00112233445566778899aabbccddeeff".into(),
            also: Vec::new(),
        }
    }

    #[test]
    fn answers_round_trip_and_junk_is_ignored() {
        let a = answer_for(4434);
        assert_eq!(Answer::decode(&a.encode()), Some(a.clone()));
        assert_eq!(a.ca_fingerprint().unwrap()[15], 0xff);
        for junk in [
            &b""[..],
            b"{}",
            b"NCDISCOVER 1\n",
            br#"{"nightcast":2,"site":"lyon","relay":"r","port":1,"ca":"00112233445566778899aabbccddeeff"}"#,
            br#"{"nightcast":1,"site":"lyon","relay":"r","port":1,"ca":"0011"}"#,
            br#"{"nightcast":1,"site":"lyon","relay":"r","port":0,"ca":"00112233445566778899aabbccddeeff"}"#,
        ] {
            assert_eq!(Answer::decode(junk), None, "{}", String::from_utf8_lossy(junk));
        }
        assert_eq!(Answer::decode(&vec![b' '; 5000]), None);
    }

    #[test]
    fn a_flood_of_questions_gets_a_bounded_trickle_of_answers() {
        let mut budget = AnswerBudget::new(ANSWERS_PER_SEC, ANSWER_BURST);
        // 10 000 questions in one second: the burst and the second's refill, no more.
        let answered = (0..10_000u64)
            .filter(|i| budget.allow(Duration::from_micros(i * 100)))
            .count() as u32;
        assert!(answered <= ANSWER_BURST + ANSWERS_PER_SEC, "{answered}");
        assert!(answered >= ANSWER_BURST, "{answered}");
        // After a quiet second, a room of NUCs booting together is answered again.
        let later = Duration::from_secs(10);
        assert!(
            (0..ANSWER_BURST).all(|i| budget.allow(later + Duration::from_millis(u64::from(i))))
        );
    }

    #[tokio::test]
    async fn a_question_gets_the_relays_answer() {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = socket.local_addr().unwrap();
        let server = tokio::spawn(answer(socket, answer_for(4999)));
        let found = discover(at, Duration::from_millis(500)).await.unwrap();
        server.abort();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "127.0.0.1:4999".parse().unwrap());
        assert_eq!(found[0].1.site, "lyon");
    }
}
