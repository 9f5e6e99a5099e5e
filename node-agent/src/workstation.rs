//! The workstation's decisions, pure: given the time, this seat's sessions, the VM's state and the
//! masters the NUC holds, what to do now. The daemon gathers the inputs every tick, carries out the
//! [`Action`]s in order, and tells the outcome back ([`Workstation::started`],
//! [`Workstation::swapped`]); nothing here touches a file, a process or the clock.
//!
//! The rules:
//! - the VM runs only inside a session of this seat's room; a session that ended, a guest that
//!   powered itself off, a VM that failed, and the end of the day each reset the workstation (the
//!   VM stopped, its writes thrown away);
//! - a new master comes in only between sessions, when it is ready and it is what the running or
//!   next session needs;
//! - a VM that fails within the hour after a swap rolls the swap back.

use image_tools::wire::{MasterRef, SessionEntry};
use jiff::civil::Date;

use crate::hypervisor::VmStatus;

/// A VM that fails this soon after a swap (seconds) is blamed on the new master.
pub const ROLLBACK_WINDOW_SECS: i64 = 3600;

/// The masters the NUC holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub current: Option<MasterRef>,
    pub next: Option<MasterRef>,
    /// `next` is verified and may be swapped in.
    pub next_ready: bool,
    pub previous: Option<MasterRef>,
}

impl Held {
    /// Whether `m` is running or may be swapped in now.
    pub fn has_ready(&self, m: &MasterRef) -> bool {
        self.current.as_ref() == Some(m) || (self.next_ready && self.next.as_ref() == Some(m))
    }

    /// The versions held in full (what the NUC reports): current, previous, and next once ready.
    pub fn complete(&self) -> Vec<MasterRef> {
        let next = self.next.as_ref().filter(|_| self.next_ready);
        [self.current.as_ref(), self.previous.as_ref(), next]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// What the daemon gathered this tick.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub now: i64,
    /// The site's local date and minute of the day at `now` (`None` if its time zone is unknown).
    pub local: Option<(Date, u32)>,
    /// This seat's room's sessions not yet ended, in start order (empty for a spare).
    pub sessions: &'a [SessionEntry],
    pub vm: VmStatus,
    pub held: &'a Held,
}

/// What the daemon does, in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop the VM, throw its overlay away and make a fresh one over `current`.
    Reset(&'static str),
    /// Report that the VM failed.
    VmFailed(Option<i32>),
    /// Roll the last swap back (`previous` becomes `current` again).
    Rollback,
    /// Stop the VM and swap `next` (this master) in, then reset.
    Swap(MasterRef),
    /// Start the VM on `current` for this session ([`Workstation::started`] once it runs).
    Start(SessionEntry),
}

/// The workstation's own state between ticks.
#[derive(Clone, Debug, Default)]
pub struct Workstation {
    /// The session the VM runs for.
    session: Option<SessionEntry>,
    /// The local day whose end-of-day reset is done.
    reset_day: Option<Date>,
    last_swap: Option<i64>,
    /// Minutes after local midnight at which the day ends.
    end_of_day: u32,
}

impl Workstation {
    pub fn new(end_of_day: u32) -> Workstation {
        Workstation {
            end_of_day,
            ..Workstation::default()
        }
    }

    pub fn session(&self) -> Option<&SessionEntry> {
        self.session.as_ref()
    }

    /// The VM started for `s`.
    pub fn started(&mut self, s: SessionEntry) {
        self.session = Some(s);
    }

    /// A master was swapped in at `now`.
    pub fn swapped(&mut self, now: i64) {
        self.last_swap = Some(now);
    }

    /// The VM was stopped and reset by the daemon for a reason of its own (the agent stops).
    pub fn stopped(&mut self) {
        self.session = None;
    }

    /// What to do at this tick.
    pub fn step(&mut self, i: &Inputs) -> Vec<Action> {
        let mut out = Vec::new();
        let running = i
            .sessions
            .iter()
            .find(|s| s.start <= i.now && i.now < s.end)
            .cloned();
        if let Some(s) = self.session.clone() {
            if i.now >= s.end || running.as_ref() != Some(&s) {
                self.reset(&mut out, "the session ended");
            } else if i.vm == VmStatus::PoweredOff {
                self.reset(&mut out, "the guest powered off");
            } else if let VmStatus::Failed { code } = i.vm {
                out.push(Action::VmFailed(code));
                if self
                    .last_swap
                    .is_some_and(|t| i.now - t < ROLLBACK_WINDOW_SECS)
                {
                    out.push(Action::Rollback);
                }
                self.reset(&mut out, "the VM failed");
            }
        }
        if let Some((day, minutes)) = i.local {
            if minutes >= self.end_of_day && self.reset_day != Some(day) {
                self.reset_day = Some(day);
                if self.session.is_some() || i.vm == VmStatus::Running {
                    self.reset(&mut out, "end of the day");
                }
            }
        }
        if self.session.is_none() {
            // Between sessions: the only moment a new master may come in.
            let wanted = running.as_ref().or(i.sessions.first()).map(|s| &s.master);
            if let Some(m) = wanted {
                let ready = i.held.next_ready && i.held.next.as_ref() == Some(m);
                if ready && i.held.current.as_ref() != Some(m) {
                    out.push(Action::Swap(m.clone()));
                }
            }
            if let Some(s) = running {
                out.push(Action::Start(s));
            }
        }
        out
    }

    fn reset(&mut self, out: &mut Vec<Action>, why: &'static str) {
        self.session = None;
        out.push(Action::Reset(why));
    }
}

/// The first upcoming master of `sessions` that is not `current` and not yet ready in `next`:
/// what to prepare now.
pub fn to_prepare(sessions: &[SessionEntry], held: &Held) -> Option<MasterRef> {
    let target = sessions
        .iter()
        .map(|s| &s.master)
        .find(|m| held.current.as_ref() != Some(*m))?;
    (!(held.next_ready && held.next.as_ref() == Some(target))).then(|| target.clone())
}

/// The night's work is done: the next session's master is running or ready (or, with no session,
/// a master is here at all).
pub fn night_work_done(sessions: &[SessionEntry], held: &Held) -> bool {
    match sessions.first() {
        Some(s) => held.has_ready(&s.master),
        None => held.current.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    /// 2030-01-08 00:00 UTC.
    const DAY0: i64 = 1_894_060_800;

    fn m(v: &str) -> MasterRef {
        MasterRef::new("demo", v).unwrap()
    }

    fn session(v: &str, from_h: i64, to_h: i64) -> SessionEntry {
        SessionEntry {
            master: m(v),
            start: DAY0 + from_h * H,
            end: DAY0 + to_h * H,
        }
    }

    /// Runs the workstation minute by minute from `from_h` to `to_h` (hours of day 0, UTC), as
    /// the daemon would: actions carried out at once, the VM running after a start. `at` changes
    /// what the NUC holds or the VM does at a given minute. Returns (minute, action) in order.
    fn day(
        ws: &mut Workstation,
        sessions: &[SessionEntry],
        held: &mut Held,
        from_h: i64,
        to_h: i64,
        at: impl Fn(i64, &mut Held, &mut VmStatus),
    ) -> Vec<(i64, Action)> {
        let mut vm = VmStatus::NotStarted;
        let mut log = Vec::new();
        for minute in from_h * 60..to_h * 60 {
            let now = DAY0 + minute * 60;
            at(minute, held, &mut vm);
            let upcoming: Vec<SessionEntry> =
                sessions.iter().filter(|s| s.end > now).cloned().collect();
            let date = Date::new(2030, 1, 8).unwrap();
            let inputs = Inputs {
                now,
                local: Some((date, minute as u32)),
                sessions: &upcoming,
                vm,
                held,
            };
            for action in ws.step(&inputs) {
                match &action {
                    Action::Reset(_) => vm = VmStatus::NotStarted,
                    Action::Swap(to) => {
                        held.previous = held.current.replace(to.clone());
                        held.next = None;
                        held.next_ready = false;
                        ws.swapped(now);
                    }
                    Action::Rollback => {
                        std::mem::swap(&mut held.previous, &mut held.current);
                    }
                    Action::Start(s) => {
                        vm = VmStatus::Running;
                        ws.started(s.clone());
                    }
                    Action::VmFailed(_) => {}
                }
                log.push((minute, action));
            }
        }
        log
    }

    fn held(current: &str) -> Held {
        Held {
            current: Some(m(current)),
            ..Held::default()
        }
    }

    #[test]
    fn a_session_day_runs_each_session_on_a_fresh_workstation() {
        let sessions = [session("1", 9, 12), session("1", 14, 17)];
        let mut ws = Workstation::new(20 * 60);
        let log = day(&mut ws, &sessions, &mut held("1"), 8, 21, |_, _, _| {});
        assert_eq!(
            log,
            vec![
                (9 * 60, Action::Start(sessions[0].clone())),
                (12 * 60, Action::Reset("the session ended")),
                (14 * 60, Action::Start(sessions[1].clone())),
                (17 * 60, Action::Reset("the session ended")),
            ]
        );
        assert!(ws.session().is_none());
    }

    #[test]
    fn a_guest_that_powers_off_ends_its_session_and_the_end_of_the_day_resets_what_runs() {
        let sessions = [session("1", 9, 12), session("1", 14, 23)];
        let mut ws = Workstation::new(20 * 60);
        let log = day(
            &mut ws,
            &sessions,
            &mut held("1"),
            8,
            21,
            |minute, _, vm| {
                if minute == 10 * 60 {
                    *vm = VmStatus::PoweredOff; // the trainee shut the guest down
                }
            },
        );
        assert_eq!(
            log,
            vec![
                (9 * 60, Action::Start(sessions[0].clone())),
                // A fresh workstation at once: the session goes on until its end.
                (10 * 60, Action::Reset("the guest powered off")),
                (10 * 60, Action::Start(sessions[0].clone())),
                (12 * 60, Action::Reset("the session ended")),
                (14 * 60, Action::Start(sessions[1].clone())),
                // A session planned past the end of the day goes on, on a fresh workstation.
                (20 * 60, Action::Reset("end of the day")),
                (20 * 60, Action::Start(sessions[1].clone())),
            ]
        );
    }

    #[test]
    fn a_new_master_comes_in_between_sessions_never_during_one() {
        let sessions = [session("1", 9, 12), session("2", 14, 17)];
        let mut ws = Workstation::new(20 * 60);
        let mut held = held("1");
        let log = day(&mut ws, &sessions, &mut held, 8, 18, |minute, held, _| {
            if minute == 10 * 60 {
                // Version 2 is ready during the morning session.
                held.next = Some(m("2"));
                held.next_ready = true;
            }
        });
        assert_eq!(
            log,
            vec![
                (9 * 60, Action::Start(sessions[0].clone())),
                (12 * 60, Action::Reset("the session ended")),
                (12 * 60, Action::Swap(m("2"))),
                (14 * 60, Action::Start(sessions[1].clone())),
                (17 * 60, Action::Reset("the session ended")),
            ]
        );
        assert_eq!(held.current, Some(m("2")));
        assert_eq!(held.previous, Some(m("1")));
    }

    #[test]
    fn a_master_that_fails_right_after_its_swap_is_rolled_back_and_a_later_failure_is_not() {
        let sessions = [session("2", 9, 10), session("2", 12, 17)];
        let mut ws = Workstation::new(20 * 60);
        let mut held = Held {
            current: Some(m("1")),
            next: Some(m("2")),
            next_ready: true,
            previous: None,
        };
        let log = day(&mut ws, &sessions, &mut held, 9, 18, |minute, _, vm| {
            if minute == 9 * 60 + 5 || minute == 16 * 60 {
                *vm = VmStatus::Failed { code: Some(1) };
            }
        });
        assert_eq!(
            log,
            vec![
                (9 * 60, Action::Swap(m("2"))),
                (9 * 60, Action::Start(sessions[0].clone())),
                // Five minutes in: the new master is blamed, version 1 comes back.
                (9 * 60 + 5, Action::VmFailed(Some(1))),
                (9 * 60 + 5, Action::Rollback),
                (9 * 60 + 5, Action::Reset("the VM failed")),
                (9 * 60 + 5, Action::Start(sessions[0].clone())),
                (10 * 60, Action::Reset("the session ended")),
                (12 * 60, Action::Start(sessions[1].clone())),
                // Hours after the swap: not the master's fault; no rollback.
                (16 * 60, Action::VmFailed(Some(1))),
                (16 * 60, Action::Reset("the VM failed")),
                (16 * 60, Action::Start(sessions[1].clone())),
                (17 * 60, Action::Reset("the session ended")),
            ]
        );
        assert_eq!(held.current, Some(m("1")));
    }

    #[test]
    fn what_to_prepare_and_when_the_night_is_done() {
        let sessions = [
            session("1", 9, 12),
            session("2", 14, 17),
            session("3", 18, 19),
        ];
        let mut held = held("1");
        assert_eq!(to_prepare(&sessions, &held), Some(m("2")));
        assert!(night_work_done(&sessions, &held));
        held.next = Some(m("2"));
        assert_eq!(to_prepare(&sessions, &held), Some(m("2")), "not ready yet");
        held.next_ready = true;
        assert_eq!(to_prepare(&sessions, &held), None, "2 is ready");
        assert!(!night_work_done(&sessions[2..], &held));
        assert!(night_work_done(&sessions[1..], &held));
        assert_eq!(held.complete(), vec![m("1"), m("2")]);
        assert!(!night_work_done(&[], &Held::default()));
    }
}
