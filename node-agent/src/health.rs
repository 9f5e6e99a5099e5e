//! Did the guest boot? A pure judgement over what was seen since QEMU started and how long ago
//! that was, and the reading of the guest's serial log that feeds it.
//!
//! The guest proves it booted with the signals its profile asks for ([`HealthCheck`]): the line
//! `NIGHTCAST-READY <hostname>` on its first serial port, and the QEMU guest agent answering
//! `guest-ping`. A kernel panic on the serial port, or QEMU exiting, fails it at once; a guest that
//! hangs fails when the time limit passes. Nothing here reads a clock, a file or a socket.

use std::time::Duration;

use crate::profile::HealthCheck;

/// What the serial log says (see [`read_serial`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serial {
    /// The hostname of the last `NIGHTCAST-READY` line.
    pub ready: Option<String>,
    /// The hostname of the last `NIGHTCAST-SHUTDOWN` line.
    pub shutdown: Option<String>,
    /// The kernel's `Kernel panic` line, if any.
    pub panic: Option<String>,
}

/// Reads the markers out of a serial log (terminal escapes and all).
pub fn read_serial(log: &[u8]) -> Serial {
    let text = String::from_utf8_lossy(log);
    let mut seen = Serial::default();
    for line in text.split(['\n', '\r']) {
        let word = |w: &str| {
            line.find(w).map(|at| {
                line[at + w.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
        };
        if let Some(host) = word("NIGHTCAST-READY ") {
            seen.ready = Some(host);
        }
        if let Some(host) = word("NIGHTCAST-SHUTDOWN ") {
            seen.shutdown = Some(host);
        }
        if let Some(at) = line.find("Kernel panic") {
            seen.panic = Some(line[at..].trim().chars().take(200).collect());
        }
    }
    seen
}

/// Everything observed since QEMU started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub serial: Serial,
    /// The guest agent answered `guest-ping` at least once.
    pub guest_ping: bool,
    /// QEMU is gone: its exit status, as text.
    pub exited: Option<String>,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Every required signal is in.
    Healthy,
    /// Not yet; still within the limit.
    Waiting {
        missing: Vec<&'static str>,
    },
    Failed(Failure),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the guest did not come up within {within:?}: no {}", missing.join(", no "))]
    TimedOut {
        within: Duration,
        missing: Vec<&'static str>,
    },
    #[error("the guest's kernel panicked: {0}")]
    Panic(String),
    #[error("QEMU exited during the boot: {0}")]
    Exited(String),
    /// The guest did not come up under KVM; the hypervisor runs it under TCG from now on, so the
    /// master is not to blame yet.
    #[error("under KVM: {0}; trying again under TCG")]
    UnderKvm(Box<Failure>),
}

impl Failure {
    /// Whether the hypervisor tries again another way (the master is not to blame yet).
    pub fn retry(&self) -> bool {
        matches!(self, Failure::UnderKvm(_))
    }
}

/// The verdict after `elapsed` since QEMU started.
pub fn judge(check: &HealthCheck, seen: &Seen, elapsed: Duration) -> Health {
    if let Some(p) = &seen.serial.panic {
        return Health::Failed(Failure::Panic(p.clone()));
    }
    let mut missing = Vec::new();
    if check.serial_marker && seen.serial.ready.is_none() {
        missing.push("serial marker");
    }
    if check.guest_agent && !seen.guest_ping {
        missing.push("guest agent");
    }
    if missing.is_empty() {
        return Health::Healthy;
    }
    if let Some(status) = &seen.exited {
        return Health::Failed(Failure::Exited(status.clone()));
    }
    if elapsed >= check.within() {
        return Health::Failed(Failure::TimedOut {
            within: check.within(),
            missing,
        });
    }
    Health::Waiting { missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: HealthCheck = HealthCheck {
        serial_marker: true,
        guest_agent: true,
        within_secs: 60,
    };

    fn ready() -> Serial {
        Serial {
            ready: Some("poste-1".into()),
            ..Serial::default()
        }
    }

    #[test]
    fn healthy_only_with_every_required_signal() {
        let s = |serial, guest_ping| Seen {
            serial,
            guest_ping,
            exited: None,
        };
        let t = Duration::from_secs(10);
        assert_eq!(judge(&BOTH, &s(ready(), true), t), Health::Healthy);
        assert_eq!(
            judge(&BOTH, &s(ready(), false), t),
            Health::Waiting {
                missing: vec!["guest agent"]
            }
        );
        assert_eq!(
            judge(&BOTH, &s(Serial::default(), true), t),
            Health::Waiting {
                missing: vec!["serial marker"]
            }
        );
        let marker_only = HealthCheck {
            guest_agent: false,
            ..BOTH
        };
        assert_eq!(judge(&marker_only, &s(ready(), false), t), Health::Healthy);
        let agent_only = HealthCheck {
            serial_marker: false,
            ..BOTH
        };
        assert_eq!(
            judge(&agent_only, &s(Serial::default(), true), t),
            Health::Healthy
        );
    }

    #[test]
    fn fails_at_the_limit_on_a_panic_or_an_exit() {
        let nothing = Seen::default();
        assert!(matches!(
            judge(&BOTH, &nothing, Duration::from_secs(59)),
            Health::Waiting { .. }
        ));
        assert_eq!(
            judge(&BOTH, &nothing, Duration::from_secs(60)),
            Health::Failed(Failure::TimedOut {
                within: Duration::from_secs(60),
                missing: vec!["serial marker", "guest agent"]
            })
        );
        let panicked = Seen {
            serial: read_serial(
                b"[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n",
            ),
            ..Seen::default()
        };
        assert!(matches!(
            judge(&BOTH, &panicked, Duration::from_secs(1)),
            Health::Failed(Failure::Panic(p)) if p.starts_with("Kernel panic - not syncing: VFS")
        ));
        let exited = Seen {
            exited: Some("exit status: 1".into()),
            ..Seen::default()
        };
        assert_eq!(
            judge(&BOTH, &exited, Duration::from_secs(1)),
            Health::Failed(Failure::Exited("exit status: 1".into()))
        );
    }

    #[test]
    fn reads_markers_through_terminal_noise() {
        let log = b"\x1b[H\x1b[J  Booting `Debian'\r\n\r\n\nNIGHTCAST-READY poste-7\n\
            Debian GNU/Linux 12 poste-7 ttyS0\r\n\nNIGHTCAST-SHUTDOWN poste-7\n[  9.1] reboot: Power down\n";
        let s = read_serial(log);
        assert_eq!(s.ready.as_deref(), Some("poste-7"));
        assert_eq!(s.shutdown.as_deref(), Some("poste-7"));
        assert_eq!(s.panic, None);
        assert_eq!(read_serial(b"NIGHTCAST-READ"), Serial::default());
    }
}
