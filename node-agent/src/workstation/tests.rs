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
fn a_new_master_whose_guest_does_not_come_up_is_marked_bad_and_rolled_back_before_the_session() {
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
