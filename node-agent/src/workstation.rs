//! The workstation's decisions, pure: given the time, this seat's sessions, the VM's state, what
//! its health check says and the masters the NUC holds, what to do now. The daemon gathers the
//! inputs every tick, carries out the [`Action`]s in order, and tells the outcome back
//! ([`Workstation::started`], [`Workstation::booting`], [`Workstation::swapped`]); nothing here
//! touches a file, a process or the clock.
//!
//! The rules:
//! - the VM runs only inside a session of this seat's room; a session that ended, a guest that
//!   powered itself off, a VM that failed, and the end of the day each reset the workstation (the
//!   VM stopped, its writes thrown away);
//! - a new master comes in only between sessions, when it is ready and it is what the running or
//!   next session needs;
//! - a master just swapped in is **on trial** ([`Trial`], kept on disk by the daemon) until the
//!   guest proves it booted (its health check, `health`). Between sessions it is booted at once to
//!   find out (a trial boot, stopped again when healthy); a session that starts meanwhile takes
//!   that VM over. A trial master whose guest does not come up (time limit, kernel panic, QEMU
//!   exiting), or that was being booted when the NUC restarted [`MAX_TRIAL_BOOTS`] times, is
//!   marked bad and rolled back, and the session starts on the previous master;
//! - a guest that did not come up under KVM is tried again under TCG before the master is blamed;
//! - a VM that fails within the hour after a swap rolls the swap back too.

use image_tools::wire::{MasterRef, SessionEntry};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::health::{Failure, Health};
use crate::hypervisor::VmStatus;

/// A VM that fails this soon after a swap (seconds) is blamed on the new master.
pub const ROLLBACK_WINDOW_SECS: i64 = 3600;

/// A trial master whose boot was begun this many times without a verdict (the NUC restarted or
/// lost power during each) is blamed for it.
pub const MAX_TRIAL_BOOTS: u32 = 3;

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

/// A master swapped in that has not proven yet that its guest boots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub master: MasterRef,
    /// Boots of it begun so far (a session's or a trial boot).
    pub boots: u32,
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
    /// The health check of the VM's current boot (`None`: no VM running, or no check for it, as
    /// with a raw command line).
    pub boot: Option<Health>,
    pub held: &'a Held,
}

/// What the daemon does, in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop the VM, throw its overlay away and make a fresh one over `current`.
    Reset(&'static str),
    /// Report that the VM failed.
    VmFailed(Option<i32>),
    /// The master on trial came up: it is good (forget the trial).
    Proven(MasterRef),
    /// Remember on this NUC that `master` (`current`, now) is bad, and why: it is not prepared or
    /// swapped in again until the DSI republishes it.
    MarkBad { master: MasterRef, why: String },
    /// Roll the last swap back (`previous` becomes `current` again).
    Rollback,
    /// Stop the VM and swap `next` (this master) in, then reset.
    Swap(MasterRef),
    /// Boot the VM on `current` outside any session, to see whether it comes up
    /// ([`Workstation::booting`] once it runs).
    Boot,
    /// Start the VM on `current` for this session ([`Workstation::started`] once it runs).
    Start(SessionEntry),
}

/// The workstation's own state between ticks.
#[derive(Clone, Debug, Default)]
pub struct Workstation {
    /// The session the VM runs for.
    session: Option<SessionEntry>,
    /// The VM runs a trial boot (no session).
    trial_boot: bool,
    /// The master on trial.
    trial: Option<Trial>,
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

    /// Carries on the trial of a master that was on trial when the agent stopped (the daemon
    /// keeps [`Workstation::trial`] on disk).
    pub fn resume_trial(&mut self, trial: Option<Trial>) {
        self.trial = trial;
    }

    pub fn session(&self) -> Option<&SessionEntry> {
        self.session.as_ref()
    }

    /// The master on trial, to be kept on disk whenever it changes.
    pub fn trial(&self) -> Option<&Trial> {
        self.trial.as_ref()
    }

    /// A trial boot runs.
    pub fn is_trial_booting(&self) -> bool {
        self.trial_boot
    }

    /// The VM started for `s`.
    pub fn started(&mut self, s: SessionEntry) {
        self.session = Some(s);
        self.count_boot();
    }

    /// The VM started for a trial boot.
    pub fn booting(&mut self) {
        self.trial_boot = true;
        self.count_boot();
    }

    fn count_boot(&mut self) {
        if let Some(t) = &mut self.trial {
            t.boots += 1;
        }
    }

    /// `to` was swapped in at `now`: it is on trial.
    pub fn swapped(&mut self, now: i64, to: MasterRef) {
        self.last_swap = Some(now);
        self.trial = Some(Trial {
            master: to,
            boots: 0,
        });
    }

    /// The VM was stopped and reset by the daemon for a reason of its own (the agent stops, or the
    /// VM could not start).
    pub fn stopped(&mut self) {
        self.session = None;
        self.trial_boot = false;
    }

    /// What to do at this tick.
    pub fn step(&mut self, i: &Inputs) -> Vec<Action> {
        let mut out = Vec::new();
        let running = i
            .sessions
            .iter()
            .find(|s| s.start <= i.now && i.now < s.end)
            .cloned();
        if self
            .trial
            .as_ref()
            .is_some_and(|t| i.held.current.as_ref() != Some(&t.master))
        {
            // Rolled back by hand, or another master came in: nothing left to try.
            self.trial = None;
        }
        let failure = match &i.boot {
            Some(Health::Failed(f)) => Some(f),
            _ => None,
        };
        if self.trial_boot {
            if let Some(s) = &running {
                // A session starts during the trial boot: it takes the VM over.
                self.trial_boot = false;
                self.session = Some(s.clone());
            }
        }
        let vm_in_use = self.session.is_some() || self.trial_boot;
        if let Some(s) = self.session.clone() {
            if i.now >= s.end || running.as_ref() != Some(&s) {
                self.reset(&mut out, "the session ended");
            }
        }
        if vm_in_use && (self.session.is_some() || self.trial_boot) {
            self.judge_the_vm(&mut out, i, failure);
        }
        if let Some((day, minutes)) = i.local {
            if minutes >= self.end_of_day && self.reset_day != Some(day) {
                self.reset_day = Some(day);
                if self.session.is_some() || self.trial_boot || i.vm == VmStatus::Running {
                    self.reset(&mut out, "end of the day");
                }
            }
        }
        if self.session.is_none() && !self.trial_boot {
            if let Some(t) = self.trial.clone().filter(|t| t.boots >= MAX_TRIAL_BOOTS) {
                let why = format!(
                    "{} boots of it were begun and none came to an end (the NUC restarted during each)",
                    t.boots
                );
                self.fail_trial(&mut out, i, why);
            }
            // Between sessions: the only moment a new master may come in.
            let wanted = running.as_ref().or(i.sessions.first()).map(|s| &s.master);
            let mut swapping = false;
            if let Some(m) = wanted {
                let ready = i.held.next_ready && i.held.next.as_ref() == Some(m);
                if ready && i.held.current.as_ref() != Some(m) {
                    out.push(Action::Swap(m.clone()));
                    swapping = true;
                }
            }
            if let Some(s) = running {
                out.push(Action::Start(s));
            } else if self.trial.is_some() && !swapping {
                out.push(Action::Boot);
            }
        }
        out
    }

    /// The VM runs for a session or a trial boot: what its state and its health check say.
    fn judge_the_vm(&mut self, out: &mut Vec<Action>, i: &Inputs, failure: Option<&Failure>) {
        if failure.is_some_and(Failure::retry) {
            self.reset(out, "the guest did not come up under KVM: again under TCG");
            return;
        }
        if let (Some(f), Some(_)) = (failure, &self.trial) {
            self.fail_trial(out, i, f.to_string());
            return;
        }
        if let Some(t) = self.trial.clone() {
            let healthy = match &i.boot {
                Some(Health::Healthy) => true,
                // No health check (a raw command line): running is all such a VM can show.
                None => i.vm == VmStatus::Running,
                _ => false,
            };
            if healthy {
                self.trial = None;
                out.push(Action::Proven(t.master));
                if self.trial_boot {
                    self.reset(out, "the new master came up: ready for the session");
                    return;
                }
            }
        }
        let recent = self
            .last_swap
            .is_some_and(|t| i.now - t < ROLLBACK_WINDOW_SECS);
        match i.vm {
            VmStatus::PoweredOff if self.trial.is_some() => {
                self.fail_trial(out, i, "the guest powered off during its boot".into());
            }
            VmStatus::PoweredOff => self.reset(out, "the guest powered off"),
            VmStatus::Failed { code } => {
                out.push(Action::VmFailed(code));
                if self.trial.is_some() || recent {
                    self.fail_trial(out, i, format!("QEMU exited (code {code:?})"));
                } else {
                    self.reset(out, "the VM failed");
                }
            }
            _ => {}
        }
    }

    /// The master on trial (`current`) did not come up: marked bad, rolled back, reset.
    fn fail_trial(&mut self, out: &mut Vec<Action>, i: &Inputs, why: String) {
        let master = match self.trial.take() {
            Some(t) => Some(t.master),
            None => i.held.current.clone(),
        };
        if let Some(master) = master {
            out.push(Action::MarkBad { master, why });
        }
        if i.held.previous.is_some() {
            out.push(Action::Rollback);
        }
        self.last_swap = None;
        self.reset(out, "the new master did not come up");
    }

    fn reset(&mut self, out: &mut Vec<Action>, why: &'static str) {
        self.session = None;
        self.trial_boot = false;
        if !out.contains(&Action::Reset(why)) {
            out.push(Action::Reset(why));
        }
    }
}

/// The first upcoming master of `sessions` that is not `current`, not yet ready in `next`, and
/// not `bad` here (its guest did not come up on this NUC): what to prepare now.
pub fn to_prepare(sessions: &[SessionEntry], held: &Held, bad: &[MasterRef]) -> Option<MasterRef> {
    let target = sessions
        .iter()
        .map(|s| &s.master)
        .find(|m| held.current.as_ref() != Some(*m) && !bad.contains(m))?;
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

    /// The world the workstation acts on, simulated: what the NUC holds, the VM, its guest.
    struct Sim {
        held: Held,
        vm: VmStatus,
        /// The minute the VM started.
        started: Option<i64>,
        /// Versions whose guest panics a minute after it starts.
        panics: Vec<&'static str>,
        /// The next boots fail under KVM (the hypervisor then runs TCG).
        kvm_fails: u32,
        /// The health check of the running boot, as the hypervisor would judge it.
        boot: Option<Health>,
    }

    impl Default for Sim {
        fn default() -> Sim {
            Sim {
                held: Held::default(),
                vm: VmStatus::NotStarted,
                started: None,
                panics: Vec::new(),
                kvm_fails: 0,
                boot: None,
            }
        }
    }

    impl Sim {
        fn holding(current: &str) -> Sim {
            Sim {
                held: held(current),
                ..Sim::default()
            }
        }

        /// The guest comes up one minute after its start, or panics then.
        fn judge(&mut self, minute: i64) {
            self.boot = match (self.vm, self.started) {
                (VmStatus::Running, Some(t)) if minute > t => {
                    let v = self
                        .held
                        .current
                        .as_ref()
                        .map_or("", |m| m.version.as_str());
                    if self.kvm_fails > 0 {
                        self.kvm_fails -= 1;
                        Some(Health::Failed(Failure::UnderKvm(Box::new(Failure::Panic(
                            "stuck".into(),
                        )))))
                    } else if self.panics.contains(&v) {
                        Some(Health::Failed(Failure::Panic("Kernel panic".into())))
                    } else {
                        Some(Health::Healthy)
                    }
                }
                (VmStatus::Running, _) => Some(Health::Waiting { missing: vec![] }),
                _ => None,
            };
        }
    }

    /// Runs the workstation minute by minute from `from_h` to `to_h` (hours of day 0, UTC), as
    /// the daemon would: actions carried out at once, the VM running after a start. `at` changes
    /// what the NUC holds or the VM does at a given minute. Returns (minute, action) in order.
    fn day(
        ws: &mut Workstation,
        sessions: &[SessionEntry],
        sim: &mut Sim,
        from_h: i64,
        to_h: i64,
        at: impl Fn(i64, &mut Sim),
    ) -> Vec<(i64, Action)> {
        let mut log = Vec::new();
        for minute in from_h * 60..to_h * 60 {
            let now = DAY0 + minute * 60;
            at(minute, sim);
            sim.judge(minute);
            let upcoming: Vec<SessionEntry> =
                sessions.iter().filter(|s| s.end > now).cloned().collect();
            let date = Date::new(2030, 1, 8).unwrap();
            let inputs = Inputs {
                now,
                local: Some((date, minute as u32)),
                sessions: &upcoming,
                vm: sim.vm,
                boot: sim.boot.clone(),
                held: &sim.held.clone(),
            };
            for action in ws.step(&inputs) {
                match &action {
                    Action::Reset(_) => {
                        sim.vm = VmStatus::NotStarted;
                        sim.started = None;
                    }
                    Action::Swap(to) => {
                        let held = &mut sim.held;
                        held.previous = held.current.replace(to.clone());
                        held.next = None;
                        held.next_ready = false;
                        ws.swapped(now, to.clone());
                    }
                    Action::Rollback => {
                        let held = &mut sim.held;
                        std::mem::swap(&mut held.previous, &mut held.current);
                    }
                    Action::Start(s) => {
                        sim.vm = VmStatus::Running;
                        sim.started = Some(minute);
                        ws.started(s.clone());
                    }
                    Action::Boot => {
                        sim.vm = VmStatus::Running;
                        sim.started = Some(minute);
                        ws.booting();
                    }
                    Action::VmFailed(_) | Action::Proven(_) | Action::MarkBad { .. } => {}
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
        let log = day(&mut ws, &sessions, &mut Sim::holding("1"), 8, 21, |_, _| {});
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
            &mut Sim::holding("1"),
            8,
            21,
            |minute, sim| {
                if minute == 10 * 60 {
                    sim.vm = VmStatus::PoweredOff; // the trainee shut the guest down
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

    fn next_ready(sim: &mut Sim, v: &str) {
        sim.held.next = Some(m(v));
        sim.held.next_ready = true;
    }

    #[test]
    fn a_new_master_comes_in_between_sessions_never_during_one_and_is_booted_once_to_prove_it() {
        let sessions = [session("1", 9, 12), session("2", 14, 17)];
        let mut ws = Workstation::new(20 * 60);
        let mut sim = Sim::holding("1");
        let log = day(&mut ws, &sessions, &mut sim, 8, 18, |minute, sim| {
            if minute == 10 * 60 {
                next_ready(sim, "2"); // during the morning session
            }
        });
        assert_eq!(
            log,
            vec![
                (9 * 60, Action::Start(sessions[0].clone())),
                (12 * 60, Action::Reset("the session ended")),
                (12 * 60, Action::Swap(m("2"))),
                // On trial: booted at once, stopped again when it is healthy.
                (12 * 60 + 1, Action::Boot),
                (12 * 60 + 2, Action::Proven(m("2"))),
                (
                    12 * 60 + 2,
                    Action::Reset("the new master came up: ready for the session")
                ),
                (14 * 60, Action::Start(sessions[1].clone())),
                (17 * 60, Action::Reset("the session ended")),
            ]
        );
        assert_eq!(sim.held.current, Some(m("2")));
        assert_eq!(sim.held.previous, Some(m("1")));
        assert_eq!(ws.trial(), None);
    }

    #[test]
    fn a_new_master_whose_guest_does_not_come_up_is_marked_bad_and_rolled_back_before_the_session()
    {
        let sessions = [session("2", 14, 17)];
        let mut ws = Workstation::new(20 * 60);
        let mut sim = Sim::holding("1");
        sim.panics = vec!["2"];
        let log = day(&mut ws, &sessions, &mut sim, 8, 18, |minute, sim| {
            if minute == 10 * 60 {
                next_ready(sim, "2");
            }
        });
        let why = "the guest's kernel panicked: Kernel panic".to_owned();
        assert_eq!(
            log,
            vec![
                (10 * 60, Action::Swap(m("2"))),
                (10 * 60 + 1, Action::Boot),
                (
                    10 * 60 + 2,
                    Action::MarkBad {
                        master: m("2"),
                        why
                    }
                ),
                (10 * 60 + 2, Action::Rollback),
                (10 * 60 + 2, Action::Reset("the new master did not come up")),
                // Not booted again: the session runs version 1.
                (14 * 60, Action::Start(sessions[0].clone())),
                (17 * 60, Action::Reset("the session ended")),
            ]
        );
        assert_eq!(sim.held.current, Some(m("1")));
        assert_eq!(sim.held.previous, Some(m("2")));
        assert_eq!(ws.trial(), None);
    }

    #[test]
    fn a_master_swapped_in_at_its_session_start_is_judged_by_that_session_boot() {
        let sessions = [session("2", 9, 12)];
        let mut ws = Workstation::new(20 * 60);
        let mut sim = Sim::holding("1");
        next_ready(&mut sim, "2");
        sim.panics = vec!["2"];
        let log = day(&mut ws, &sessions, &mut sim, 9, 10, |_, _| {});
        let s = sessions[0].clone();
        assert_eq!(
            log,
            vec![
                (9 * 60, Action::Swap(m("2"))),
                (9 * 60, Action::Start(s.clone())),
                (
                    9 * 60 + 1,
                    Action::MarkBad {
                        master: m("2"),
                        why: "the guest's kernel panicked: Kernel panic".into()
                    }
                ),
                (9 * 60 + 1, Action::Rollback),
                (9 * 60 + 1, Action::Reset("the new master did not come up")),
                (9 * 60 + 1, Action::Start(s)),
            ]
        );
        assert_eq!(sim.held.current, Some(m("1")));
    }

    #[test]
    fn a_session_that_starts_during_a_trial_boot_takes_the_vm_over() {
        let sessions = [session("2", 9, 12)];
        let mut ws = Workstation::new(20 * 60);
        let mut sim = Sim::holding("1");
        let log = day(&mut ws, &sessions, &mut sim, 8, 10, |minute, sim| {
            if minute == 9 * 60 - 2 {
                next_ready(sim, "2");
            }
        });
        assert_eq!(
            log,
            vec![
                (9 * 60 - 2, Action::Swap(m("2"))),
                (9 * 60 - 1, Action::Boot),
                // The guest came up during the session: no second boot.
                (9 * 60, Action::Proven(m("2"))),
            ]
        );
        assert_eq!(ws.session(), Some(&sessions[0]));
    }

    #[test]
    fn a_guest_that_kvm_cannot_run_is_booted_again_before_its_master_is_blamed() {
        let sessions = [session("2", 14, 17)];
        let mut ws = Workstation::new(20 * 60);
        let mut sim = Sim::holding("1");
        sim.kvm_fails = 1;
        let log = day(&mut ws, &sessions, &mut sim, 10, 11, |minute, sim| {
            if minute == 10 * 60 {
                next_ready(sim, "2");
            }
        });
        assert_eq!(
            log,
            vec![
                (10 * 60, Action::Swap(m("2"))),
                (10 * 60 + 1, Action::Boot),
                (
                    10 * 60 + 2,
                    Action::Reset("the guest did not come up under KVM: again under TCG")
                ),
                (10 * 60 + 2, Action::Boot),
                (10 * 60 + 3, Action::Proven(m("2"))),
                (
                    10 * 60 + 3,
                    Action::Reset("the new master came up: ready for the session")
                ),
            ]
        );
    }

    #[test]
    fn a_trial_cut_short_by_restarts_is_resumed_and_blamed_after_three_boots() {
        let sessions = [session("2", 14, 17)];
        let mut sim = Sim::holding("2");
        sim.held.previous = Some(m("1"));
        // The NUC lost power during the first boot of version 2: the trial goes on.
        let mut ws = Workstation::new(20 * 60);
        ws.resume_trial(Some(Trial {
            master: m("2"),
            boots: 1,
        }));
        let log = day(&mut ws, &sessions, &mut sim, 10, 11, |_, _| {});
        assert_eq!(log[0], (10 * 60, Action::Boot));
        assert_eq!(log[1], (10 * 60 + 1, Action::Proven(m("2"))));
        // Three boots begun and none judged: blamed without a fourth.
        let mut ws = Workstation::new(20 * 60);
        ws.resume_trial(Some(Trial {
            master: m("2"),
            boots: MAX_TRIAL_BOOTS,
        }));
        let log = day(&mut ws, &sessions, &mut sim, 10, 11, |_, _| {});
        assert!(
            matches!(&log[0], (600, Action::MarkBad { master, why }) if *master == m("2") && why.contains("3 boots")),
            "{log:?}"
        );
        assert_eq!(log[1], (600, Action::Rollback));
        assert_eq!(sim.held.current, Some(m("1")));
        // A trial whose master is no longer current (rolled back by hand) is over.
        let mut ws = Workstation::new(20 * 60);
        ws.resume_trial(Some(Trial {
            master: m("2"),
            boots: 1,
        }));
        assert_eq!(day(&mut ws, &sessions, &mut sim, 10, 11, |_, _| {}), vec![]);
        assert_eq!(ws.trial(), None);
    }

    #[test]
    fn a_master_that_fails_right_after_its_swap_is_rolled_back_and_a_later_failure_is_not() {
        let sessions = [session("2", 9, 10), session("2", 12, 17)];
        let mut ws = Workstation::new(20 * 60);
        let mut sim = Sim::holding("1");
        next_ready(&mut sim, "2");
        let log = day(&mut ws, &sessions, &mut sim, 9, 18, |minute, sim| {
            if minute == 9 * 60 + 5 || minute == 16 * 60 {
                sim.vm = VmStatus::Failed { code: Some(1) };
            }
        });
        assert_eq!(
            log,
            vec![
                (9 * 60, Action::Swap(m("2"))),
                (9 * 60, Action::Start(sessions[0].clone())),
                (9 * 60 + 1, Action::Proven(m("2"))),
                // Five minutes in: the new master is blamed, version 1 comes back.
                (9 * 60 + 5, Action::VmFailed(Some(1))),
                (
                    9 * 60 + 5,
                    Action::MarkBad {
                        master: m("2"),
                        why: "QEMU exited (code Some(1))".into()
                    }
                ),
                (9 * 60 + 5, Action::Rollback),
                (9 * 60 + 5, Action::Reset("the new master did not come up")),
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
        assert_eq!(sim.held.current, Some(m("1")));
    }

    #[test]
    fn what_to_prepare_and_when_the_night_is_done() {
        let sessions = [
            session("1", 9, 12),
            session("2", 14, 17),
            session("3", 18, 19),
        ];
        let mut held = held("1");
        assert_eq!(to_prepare(&sessions, &held, &[]), Some(m("2")));
        assert_eq!(
            to_prepare(&sessions, &held, &[m("2")]),
            Some(m("3")),
            "2 failed here"
        );
        assert!(night_work_done(&sessions, &held));
        held.next = Some(m("2"));
        assert_eq!(
            to_prepare(&sessions, &held, &[]),
            Some(m("2")),
            "not ready yet"
        );
        held.next_ready = true;
        assert_eq!(to_prepare(&sessions, &held, &[]), None, "2 is ready");
        assert!(!night_work_done(&sessions[2..], &held));
        assert!(night_work_done(&sessions[1..], &held));
        assert_eq!(held.complete(), vec![m("1"), m("2")]);
        assert!(!night_work_done(&[], &Held::default()));
    }
}
