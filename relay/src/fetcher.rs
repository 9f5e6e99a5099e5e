//! The night fetcher's decisions, sans-IO: what to fetch, until when, and when to look again.
//!
//! [`Fetcher`] holds what the fetcher remembers between transfers (the window it last saw open,
//! the versions that failed, how often and when to try them again, a link that just failed); everything
//! else comes in with each call as a [`View`] (the plan, which versions the cache holds in full,
//! whether the controller is connected) and the time. [`Fetcher::poll`] says what to do now
//! ([`Action`]s); the shell (`daemon::fetching`) does it and tells the outcome of a transfer back
//! with [`Fetcher::handle`]. Nothing here reads a clock, a disk or the network, so a whole night,
//! a dead link or an override run in simulated time in the tests below.
//!
//! The rules:
//! - the WAN is used only while [`cache::gate`] opens it: inside a night window for every entry,
//!   under an override for that entry only, each until its window's or its override's end (the
//!   transfer is asked to stop then; what it has not fetched is fetched at the next opening);
//! - one transfer at a time, the first entry of the plan (earliest deadline first) that the cache
//!   does not hold in full, is allowed now and is not waiting to be retried;
//! - a transfer the link broke resumes as soon as the link changes, or after [`LINK_SETTLE_SECS`];
//!   one that failed for another reason (the controller lacks chunks, a full disk, a manifest that
//!   does not verify) waits [`RETRY_FIRST_SECS`], twice as long after each further failure of
//!   that version up to [`RETRY_MAX_SECS`], and the others go first meanwhile; the count starts
//!   again when a transfer of that version works or the plan drops it;
//! - a window that opens wakes the site's NUCs, once per window.
//!
//! Not here: how a transfer paces itself (`exchange::fetch_missing` under the relay's
//! `RateLimit`), and whether a master is complete (computed from the store by the shell).

use std::collections::HashMap;
use std::fmt;

use image_tools::windows::Schedule;
use image_tools::wire::{MasterRef, SitePlan};

use crate::cache::{self, Gate};

/// After a transfer failed for a reason other than the link: wait this long before trying that
/// version again; each further failure of that version doubles the wait.
pub const RETRY_FIRST_SECS: i64 = 60;

/// The longest wait between two tries of a version that keeps failing.
pub const RETRY_MAX_SECS: i64 = 3600;

/// The wait after the `failures`-th failure in a row: 1 min, 2, 4, ... up to an hour.
fn retry_delay(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(20);
    (RETRY_FIRST_SECS << doublings).min(RETRY_MAX_SECS)
}

/// A version that failed: how many times in a row, and when to try it again.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    retry_at: i64,
}

/// After the link broke a transfer: resume once the link changes, or after this long at most.
pub const LINK_SETTLE_SECS: i64 = 5;

/// The site's other relay, which crosses the WAN for this one, did not hold it all yet: ask it
/// again after this long (it fetches at the WAN's pace; each try walks the master's chunks).
pub const BEHIND_SECS: i64 = 30;

/// What the fetcher looks at, passed in at each call.
pub struct View<'a> {
    pub plan: &'a SitePlan,
    /// The plan's windows (`cache::schedule(plan)`).
    pub schedule: Option<&'a Schedule>,
    /// Whether the cache holds this version in full.
    pub complete: &'a dyn Fn(&MasterRef) -> bool,
    /// A connection to the controller is up.
    pub connected: bool,
}

impl fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("entries", &self.plan.entries.len())
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A night window opened (until `until`): wake the NUCs that lack a master.
    WindowOpened { until: i64 },
    /// The window closed.
    WindowClosed,
    /// Fetch what `master` lacks; stop asking at `until`; then tell [`Event::Done`] or a failure.
    Fetch { master: MasterRef, until: i64 },
    /// Nothing to fetch now: say `state`, and poll again at `until` (clock time) at the latest,
    /// or as soon as an input changes (a plan, the link, a dropped chunk).
    Wait { state: State, until: Option<i64> },
}

/// What the fetcher is doing, for `status.json` and the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Fetching(MasterRef),
    /// Something is to be fetched, but the controller is not connected (or the link just broke).
    WaitingForController,
    WaitingForWindow(i64),
    NoWindow,
    /// The site's other relay, which this one fetches from, does not hold it all yet.
    WaitingForSibling,
    /// Everything allowed failed; the first retry is at this time.
    Retrying(i64),
    Idle,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Fetching(m) => write!(f, "fetching {} {}", m.name, m.version),
            State::WaitingForController => f.write_str("waiting for the controller"),
            State::WaitingForSibling => {
                f.write_str("waiting for the site's other relay, which fetches over the WAN")
            }
            State::WaitingForWindow(t) => write!(f, "waiting for the window at {}", fmt_time(*t)),
            State::NoWindow => f.write_str("no night window in the plan"),
            State::Retrying(t) => write!(
                f,
                "retrying at {} after an error (see last_error)",
                fmt_time(*t)
            ),
            State::Idle => f.write_str("idle: the cache holds everything planned"),
        }
    }
}

/// A time for people: `2026-11-24 05:00:00 UTC`.
pub fn fmt_time(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// It fetched everything, or stopped at its `until` (the rest comes at the next opening).
    Done(MasterRef),
    /// The link broke: resume when it is back.
    LinkFailed(MasterRef),
    /// Something only time or a human fixes: try this version again later.
    Failed(MasterRef),
    /// The site's other relay, fetched from, lacks part of it still: ask it again soon
    /// ([`BEHIND_SECS`]), without counting a failure.
    Behind(MasterRef),
    /// The connection to the controller changed (up or down).
    LinkChanged,
}

/// The fetcher's memory between transfers.
#[derive(Debug, Default)]
pub struct Fetcher {
    /// The end of the window last seen open.
    window_seen: Option<i64>,
    /// Versions that failed, until a transfer of them works or the plan drops them.
    failed: HashMap<MasterRef, Failures>,
    /// The link broke a transfer at this time, and has not changed since.
    link_failed_at: Option<i64>,
    /// The transfer under way.
    fetching: Option<MasterRef>,
    /// The last transfer ended with the sibling relay behind (and the link has not changed since).
    behind: bool,
}

impl Fetcher {
    pub fn new() -> Fetcher {
        Fetcher::default()
    }

    /// What to do at `now`. While a transfer is under way, only window changes are reported.
    pub fn poll(&mut self, now: i64, view: &View<'_>) -> Vec<Action> {
        let mut actions = Vec::new();
        let gate = cache::gate(view.schedule, view.plan, now);
        match gate {
            Gate::Window { until } if self.window_seen != Some(until) => {
                self.window_seen = Some(until);
                actions.push(Action::WindowOpened { until });
            }
            Gate::Window { .. } => {}
            _ => {
                if self.window_seen.take().is_some() {
                    actions.push(Action::WindowClosed);
                }
            }
        }
        if self.fetching.is_some() {
            return actions;
        }
        self.failed
            .retain(|m, _| view.plan.entries.iter().any(|e| &e.master == m) && !(view.complete)(m));
        if self
            .link_failed_at
            .is_some_and(|t| now >= t + self.settle())
        {
            self.link_failed_at = None;
        }
        let job = view.plan.entries.iter().find_map(|e| {
            if (view.complete)(&e.master) || self.waiting(&e.master, now) {
                return None;
            }
            cache::may_fetch_until(gate, e, now).map(|until| (e.master.clone(), until))
        });
        match job {
            Some((master, until)) if view.connected && self.link_failed_at.is_none() => {
                self.fetching = Some(master.clone());
                actions.push(Action::Fetch { master, until });
            }
            job => {
                let state = match (job.is_some(), gate) {
                    (true, _) if self.behind => State::WaitingForSibling,
                    (true, _) => State::WaitingForController,
                    (false, Gate::Closed { next: Some(t) }) => State::WaitingForWindow(t),
                    (false, Gate::Closed { next: None }) => State::NoWindow,
                    (false, _) => match self.next_retry(now) {
                        Some(t) => State::Retrying(t),
                        None => State::Idle,
                    },
                };
                actions.push(Action::Wait {
                    state,
                    until: self.next_change(now, gate, view),
                });
            }
        }
        actions
    }

    /// How long a broken transfer waits before the next (unless the link changes first).
    fn settle(&self) -> i64 {
        if self.behind {
            BEHIND_SECS
        } else {
            LINK_SETTLE_SECS
        }
    }

    /// `master` failed and its next try is still to come.
    fn waiting(&self, master: &MasterRef, now: i64) -> bool {
        self.failed.get(master).is_some_and(|f| f.retry_at > now)
    }

    /// The first retry still to come.
    fn next_retry(&self, now: i64) -> Option<i64> {
        self.failed
            .values()
            .map(|f| f.retry_at)
            .filter(|&t| t > now)
            .min()
    }

    /// The earliest time at which `poll` may answer differently with the same inputs.
    fn next_change(&self, now: i64, gate: Gate, view: &View<'_>) -> Option<i64> {
        let gate_change = match gate {
            Gate::Closed { next } => next,
            Gate::Window { until } => Some(until),
            Gate::Overrides => None,
        };
        let override_end = view
            .plan
            .entries
            .iter()
            .filter_map(|e| e.override_until.filter(|&u| u > now))
            .min();
        let retry = self.next_retry(now);
        let link = self.link_failed_at.map(|t| t + self.settle());
        [gate_change, override_end, retry, link]
            .into_iter()
            .flatten()
            .min()
    }

    /// A transfer ended, or the link changed.
    pub fn handle(&mut self, event: Event, now: i64) {
        match event {
            Event::Done(master) => {
                self.failed.remove(&master);
                self.fetching = None;
                self.behind = false;
            }
            Event::LinkFailed(_) => {
                self.link_failed_at = Some(now);
                self.fetching = None;
                self.behind = false;
            }
            Event::Behind(_) => {
                self.link_failed_at = Some(now);
                self.fetching = None;
                self.behind = true;
            }
            Event::Failed(master) => {
                let f = self.failed.entry(master).or_insert(Failures {
                    count: 0,
                    retry_at: now,
                });
                f.count = f.count.saturating_add(1);
                f.retry_at = now + retry_delay(f.count);
                self.fetching = None;
            }
            Event::LinkChanged => {
                self.link_failed_at = None;
                self.behind = false;
            }
        }
    }

    /// The transfer under way, if any.
    pub fn fetching(&self) -> Option<&MasterRef> {
        self.fetching.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    use image_tools::wire::PlanEntry;

    fn master(name: &str) -> MasterRef {
        MasterRef::new(name, "1").unwrap()
    }

    fn entry(name: &str, override_until: Option<i64>) -> PlanEntry {
        PlanEntry {
            master: master(name),
            deadline: 0,
            pin_until: 0,
            override_until,
        }
    }

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    /// A simulated site: a plan with a 22:00-06:00 Paris window, a cache that holds what the
    /// transfers completed, a link that is up or down, and a controller that moves `rate` bytes
    /// a second of what each master lacks.
    struct Site {
        plan: SitePlan,
        schedule: Option<Schedule>,
        /// Bytes each master still lacks.
        lacking: HashMap<MasterRef, u64>,
        connected: bool,
        rate: u64,
        fetcher: Fetcher,
        now: i64,
        /// Everything the fetcher said, with the time.
        log: Vec<(i64, Action)>,
        /// Times at which transfers ran, and for which master.
        transfers: Vec<(i64, i64, MasterRef)>,
        /// The link is dead for transfers during these intervals (a WAN cut).
        dead: Vec<(i64, i64)>,
    }

    impl Site {
        fn new(entries: Vec<PlanEntry>, lacking: &[(&str, u64)], now: i64) -> Site {
            let plan = SitePlan {
                tz: "Europe/Paris".into(),
                windows: vec!["22:00-06:00".into()],
                cap_mbit: 10,
                entries,
                ..SitePlan::default()
            };
            Site {
                schedule: cache::schedule(&plan),
                plan,
                lacking: lacking.iter().map(|&(n, b)| (master(n), b)).collect(),
                connected: true,
                rate: 1_000_000,
                fetcher: Fetcher::new(),
                now,
                log: Vec::new(),
                transfers: Vec::new(),
                dead: Vec::new(),
            }
        }

        fn complete(&self) -> HashSet<MasterRef> {
            self.lacking
                .iter()
                .filter(|(_, &b)| b == 0)
                .map(|(m, _)| m.clone())
                .collect()
        }

        /// One turn of the shell: poll, do what it says, move the clock. Returns false once
        /// there is nothing left to wait for before `end`.
        fn step(&mut self, end: i64) -> bool {
            let complete = self.complete();
            let is_complete = |m: &MasterRef| complete.contains(m);
            let view = View {
                plan: &self.plan,
                schedule: self.schedule.as_ref(),
                complete: &is_complete,
                connected: self.connected,
            };
            let actions = self.fetcher.poll(self.now, &view);
            let mut next = None;
            for a in actions {
                self.log.push((self.now, a.clone()));
                match a {
                    Action::Fetch { master, until } => {
                        let event = self.transfer(&master, until);
                        self.fetcher.handle(event, self.now);
                        // The shell polls again at once after a transfer.
                        return self.now < end;
                    }
                    Action::Wait { until, .. } => next = until,
                    Action::WindowOpened { .. } | Action::WindowClosed => {}
                }
            }
            match next {
                Some(t) if t < end => {
                    // The shell sleeps at least a moment (it clamps its waits).
                    self.now = t.max(self.now + 1).min(end);
                    true
                }
                _ => false,
            }
        }

        /// A transfer of `m` until `until`: at `rate`, unless the link is dead (it then fails
        /// after 10 s, as a request timeout would).
        fn transfer(&mut self, m: &MasterRef, until: i64) -> Event {
            assert!(until > self.now, "a transfer allowed no time");
            if self
                .dead
                .iter()
                .any(|&(a, b)| a <= self.now && self.now < b)
            {
                self.now += 10;
                // The link task notices and drops the connection until it is back.
                self.connected = false;
                return Event::LinkFailed(m.clone());
            }
            let lacking = self.lacking.get(m).copied().unwrap_or(0);
            let secs = (lacking.div_ceil(self.rate) as i64).min(until - self.now);
            let moved = (secs as u64 * self.rate).min(lacking);
            self.transfers.push((self.now, self.now + secs, m.clone()));
            self.now += secs;
            self.lacking.insert(m.clone(), lacking - moved);
            Event::Done(m.clone())
        }

        fn run_until(&mut self, end: i64) {
            let mut turns = 0;
            while self.step(end) {
                // The link comes back once its dead interval is over.
                if !self.connected
                    && !self
                        .dead
                        .iter()
                        .any(|&(a, b)| a <= self.now && self.now < b)
                {
                    self.connected = true;
                    self.fetcher.handle(Event::LinkChanged, self.now);
                }
                turns += 1;
                assert!(turns < 10_000, "the fetcher spins");
            }
            self.now = end;
        }

        fn fetched_outside_windows(&self) -> bool {
            self.transfers.iter().any(|&(a, b, _)| {
                let open = |t: i64| {
                    matches!(
                        cache::gate(self.schedule.as_ref(), &self.plan, t),
                        Gate::Window { .. }
                    )
                };
                b > a && !(open(a) && open(b - 1))
            })
        }

        fn states(&self) -> Vec<String> {
            self.log
                .iter()
                .filter_map(|(_, a)| match a {
                    Action::Wait { state, .. } => Some(state.to_string()),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn a_night_fetches_in_plan_order_inside_the_window_only() {
        // Monday noon; the window opens at 22:00 Paris (21:00 UTC), closes at 05:00 UTC.
        let noon = at("2026-11-23T11:00:00Z");
        let mut site = Site::new(
            vec![entry("a", None), entry("b", None)],
            &[("a", 3_600_000_000), ("b", 1_800_000_000)],
            noon,
        );
        site.run_until(at("2026-11-24T11:00:00Z"));
        // Nothing before the window; then a (1 h) and b (30 min), in that order.
        assert_eq!(
            site.transfers,
            vec![
                (
                    at("2026-11-23T21:00:00Z"),
                    at("2026-11-23T22:00:00Z"),
                    master("a")
                ),
                (
                    at("2026-11-23T22:00:00Z"),
                    at("2026-11-23T22:30:00Z"),
                    master("b")
                ),
            ]
        );
        assert!(!site.fetched_outside_windows());
        // The NUCs are woken once, when the window opens; it is seen closing once.
        let opened: Vec<_> = site
            .log
            .iter()
            .filter(|(_, a)| matches!(a, Action::WindowOpened { .. }))
            .collect();
        assert_eq!(
            opened,
            vec![&(
                at("2026-11-23T21:00:00Z"),
                Action::WindowOpened {
                    until: at("2026-11-24T05:00:00Z")
                }
            )]
        );
        assert_eq!(
            site.log
                .iter()
                .filter(|(_, a)| *a == Action::WindowClosed)
                .count(),
            1
        );
        let states = site.states();
        assert_eq!(
            states.first().map(String::as_str),
            Some("waiting for the window at 2026-11-23 21:00:00 UTC")
        );
        assert!(states.contains(&"idle: the cache holds everything planned".to_owned()));
        // It woke only for the events that matter: no polling loop.
        assert!(site.log.len() < 12, "{:?}", site.log);
    }

    #[test]
    fn a_window_ending_mid_transfer_stops_it_and_the_next_night_resumes() {
        // 10 hours of transfer at 1 MB/s; a night holds 8 (21:00-05:00 UTC).
        let noon = at("2026-11-23T11:00:00Z");
        let mut site = Site::new(vec![entry("a", None)], &[("a", 36_000_000_000)], noon);
        site.run_until(at("2026-11-25T11:00:00Z"));
        assert_eq!(
            site.transfers,
            vec![
                (
                    at("2026-11-23T21:00:00Z"),
                    at("2026-11-24T05:00:00Z"),
                    master("a")
                ),
                (
                    at("2026-11-24T21:00:00Z"),
                    at("2026-11-24T23:00:00Z"),
                    master("a")
                ),
            ]
        );
        // The first transfer was told the window's end.
        assert!(site.log.contains(&(
            at("2026-11-23T21:00:00Z"),
            Action::Fetch {
                master: master("a"),
                until: at("2026-11-24T05:00:00Z")
            }
        )));
        assert_eq!(site.lacking[&master("a")], 0);
        assert!(!site.fetched_outside_windows());
    }

    #[test]
    fn a_dead_link_loses_the_window_and_the_next_night_resumes() {
        // The WAN is cut the whole first night; the relay waits for the controller without
        // spinning, never fetches by day, and catches up the next night.
        let noon = at("2026-11-23T11:00:00Z");
        let mut site = Site::new(vec![entry("a", None)], &[("a", 3_600_000_000)], noon);
        site.dead = vec![(at("2026-11-23T20:00:00Z"), at("2026-11-24T12:00:00Z"))];
        site.run_until(at("2026-11-25T11:00:00Z"));
        assert_eq!(
            site.transfers,
            vec![(
                at("2026-11-24T21:00:00Z"),
                at("2026-11-24T22:00:00Z"),
                master("a")
            )]
        );
        let failed: Vec<_> = site
            .log
            .iter()
            .filter(|(_, a)| matches!(a, Action::Fetch { .. }))
            .map(|(t, _)| *t)
            .collect();
        // One attempt in the dead night (then it waits for the link), one that works.
        assert_eq!(
            failed,
            vec![at("2026-11-23T21:00:00Z"), at("2026-11-24T21:00:00Z")]
        );
        assert!(site
            .states()
            .contains(&"waiting for the controller".to_owned()));
        assert!(!site.fetched_outside_windows());
    }

    #[test]
    fn a_link_that_breaks_a_transfer_is_retried_after_settling_or_when_it_changes() {
        let night = at("2026-11-23T22:00:00Z");
        let mut site = Site::new(vec![entry("a", None)], &[("a", 100)], night);
        let complete = |_: &MasterRef| false;
        let v = View {
            plan: &site.plan,
            schedule: site.schedule.as_ref(),
            complete: &complete,
            connected: true,
        };
        let first = site.fetcher.poll(night, &v);
        assert!(
            matches!(first.last(), Some(Action::Fetch { .. })),
            "{first:?}"
        );
        site.fetcher.handle(Event::LinkFailed(master("a")), night);
        // Still "connected" (the link task has not noticed yet): wait, do not hammer.
        assert_eq!(
            site.fetcher.poll(night + 1, &v),
            vec![Action::Wait {
                state: State::WaitingForController,
                until: Some(night + LINK_SETTLE_SECS)
            }]
        );
        assert!(matches!(
            site.fetcher.poll(night + LINK_SETTLE_SECS, &v).last(),
            Some(Action::Fetch { .. })
        ));
        // A link change ends the wait at once.
        site.fetcher
            .handle(Event::LinkFailed(master("a")), night + 10);
        site.fetcher.handle(Event::LinkChanged, night + 11);
        assert!(matches!(
            site.fetcher.poll(night + 11, &v).last(),
            Some(Action::Fetch { .. })
        ));
    }

    #[test]
    fn a_sibling_relay_that_is_behind_is_asked_again_soon_without_counting_a_failure() {
        let night = at("2026-11-23T22:00:00Z");
        let mut site = Site::new(vec![entry("a", None)], &[("a", 100)], night);
        let complete = |_: &MasterRef| false;
        let v = View {
            plan: &site.plan,
            schedule: site.schedule.as_ref(),
            complete: &complete,
            connected: true,
        };
        for round in 0..5 {
            let now = night + round * BEHIND_SECS;
            assert!(
                matches!(
                    site.fetcher.poll(now, &v).last(),
                    Some(Action::Fetch { .. })
                ),
                "round {round}: a sibling behind must not back off like a failure"
            );
            site.fetcher.handle(Event::Behind(master("a")), now);
            assert_eq!(
                site.fetcher.poll(now + 1, &v),
                vec![Action::Wait {
                    state: State::WaitingForSibling,
                    until: Some(now + BEHIND_SECS)
                }]
            );
        }
    }

    #[test]
    fn a_failed_version_waits_while_the_others_go_first() {
        let night = at("2026-11-23T22:00:00Z");
        let mut fetcher = Fetcher::new();
        let plan = SitePlan {
            tz: "Europe/Paris".into(),
            windows: vec!["22:00-06:00".into()],
            entries: vec![entry("a", None), entry("b", None)],
            ..SitePlan::default()
        };
        let schedule = cache::schedule(&plan);
        let done: std::cell::RefCell<HashSet<MasterRef>> = Default::default();
        let complete = |m: &MasterRef| done.borrow().contains(m);
        let view = View {
            plan: &plan,
            schedule: schedule.as_ref(),
            complete: &complete,
            connected: true,
        };
        let fetch = |m: &str, until: i64| Action::Fetch {
            master: master(m),
            until,
        };
        let end = at("2026-11-24T05:00:00Z");
        assert_eq!(
            fetcher.poll(night, &view),
            vec![Action::WindowOpened { until: end }, fetch("a", end)]
        );
        // While it runs, nothing else starts.
        assert_eq!(fetcher.poll(night + 1, &view), vec![]);
        assert_eq!(fetcher.fetching(), Some(&master("a")));
        fetcher.handle(Event::Failed(master("a")), night + 2);
        assert_eq!(fetcher.poll(night + 2, &view), vec![fetch("b", end)]);
        fetcher.handle(Event::Done(master("b")), night + 60);
        done.borrow_mut().insert(master("b"));
        assert_eq!(
            fetcher.poll(night + 60, &view),
            vec![Action::Wait {
                state: State::Retrying(night + 2 + RETRY_FIRST_SECS),
                until: Some(night + 2 + RETRY_FIRST_SECS)
            }]
        );
        assert_eq!(
            fetcher.poll(night + 2 + RETRY_FIRST_SECS, &view),
            vec![fetch("a", end)]
        );
    }

    #[test]
    fn a_version_that_keeps_failing_is_tried_less_and_less_often_until_it_works_or_leaves_the_plan()
    {
        let night = at("2026-11-23T22:00:00Z");
        let mut fetcher = Fetcher::new();
        let mut plan = SitePlan {
            tz: "Europe/Paris".into(),
            windows: vec!["22:00-06:00".into()],
            entries: vec![entry("a", None)],
            ..SitePlan::default()
        };
        let schedule = cache::schedule(&plan);
        let complete = |_: &MasterRef| false;
        // Fails at `now`; returns the time `poll` says to try again, checked against the polls
        // just before it (a wait) and at it (the transfer).
        let fail = |fetcher: &mut Fetcher, plan: &SitePlan, now: i64| -> i64 {
            let v = View {
                plan,
                schedule: schedule.as_ref(),
                complete: &complete,
                connected: true,
            };
            assert!(
                matches!(fetcher.poll(now, &v).last(), Some(Action::Fetch { .. })),
                "a transfer at {now}"
            );
            fetcher.handle(Event::Failed(master("a")), now);
            let Some(Action::Wait {
                state: State::Retrying(t),
                until: Some(u),
            }) = fetcher.poll(now, &v).pop()
            else {
                panic!("no retry after a failure at {now}");
            };
            assert_eq!(t, u);
            assert!(matches!(
                fetcher.poll(t - 1, &v).last(),
                Some(Action::Wait { .. })
            ));
            t
        };
        let mut now = night;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let next = fail(&mut fetcher, &plan, now);
            waits.push(next - now);
            now = next;
        }
        // A minute, doubling, at most an hour: a bad manifest costs the WAN a request an hour,
        // and a passing fault is tried again soon.
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        // A transfer that works starts the count again.
        let v = View {
            plan: &plan,
            schedule: schedule.as_ref(),
            complete: &complete,
            connected: true,
        };
        assert!(matches!(
            fetcher.poll(now, &v).last(),
            Some(Action::Fetch { .. })
        ));
        fetcher.handle(Event::Done(master("a")), now + 30);
        now += 30;
        assert_eq!(fail(&mut fetcher, &plan, now) - now, 60);
        now = fail(&mut fetcher, &plan, now + 60);
        // So does a plan that drops that version: when it comes back, it is a first failure.
        plan.entries = vec![entry("b", None)];
        let v = View {
            plan: &plan,
            schedule: schedule.as_ref(),
            complete: &complete,
            connected: true,
        };
        assert!(matches!(
            fetcher.poll(now, &v).last(),
            Some(Action::Fetch { master: m, .. }) if *m == master("b")
        ));
        fetcher.handle(Event::Done(master("b")), now + 1);
        plan.entries = vec![entry("a", None)];
        now += 10;
        assert_eq!(fail(&mut fetcher, &plan, now) - now, 60);
    }

    #[test]
    fn a_daytime_override_fetches_its_master_only_and_only_until_it_ends() {
        // Tuesday 12:00-14:00 Paris: a fixed master pushed at lunchtime; another one waits for
        // the night.
        let noon = at("2026-11-24T11:00:00Z");
        let until = noon + 2 * 3600;
        let mut site = Site::new(
            vec![entry("other", None), entry("fix", Some(until))],
            &[("other", 3_600_000_000), ("fix", 9_000_000_000)],
            noon,
        );
        site.run_until(at("2026-11-24T20:00:00Z"));
        // The override's two hours move 7.2 GB of 9; the rest waits for the window.
        assert_eq!(site.transfers, vec![(noon, until, master("fix"))]);
        assert_eq!(site.lacking[&master("fix")], 1_800_000_000);
        assert_eq!(site.lacking[&master("other")], 3_600_000_000);
        // At night both go, in plan order.
        site.run_until(at("2026-11-25T11:00:00Z"));
        let night = at("2026-11-24T21:00:00Z");
        assert_eq!(
            site.transfers[1..],
            [
                (night, night + 3600, master("other")),
                (night + 3600, night + 3600 + 1800, master("fix")),
            ]
        );
    }

    #[test]
    fn a_plan_without_windows_fetches_nothing_and_says_so() {
        let noon = at("2026-11-24T11:00:00Z");
        let mut site = Site::new(vec![entry("a", None)], &[("a", 10)], noon);
        site.plan.windows.clear();
        site.schedule = cache::schedule(&site.plan);
        site.run_until(noon + 86_400);
        assert!(site.transfers.is_empty());
        assert_eq!(
            site.states(),
            vec!["no night window in the plan".to_owned()]
        );
    }
}
