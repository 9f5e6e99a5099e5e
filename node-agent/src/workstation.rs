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
mod tests;
