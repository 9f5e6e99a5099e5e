//! The relay's pure decisions: when it may use the WAN, what it must keep, and what it evicts.
//! Time is passed in; nothing here touches the disk or the network.

use std::collections::{HashMap, HashSet};

use image_tools::windows::{Schedule, Window};
use image_tools::wire::{PlanEntry, SitePlan};
use image_tools::{Bandwidth, ChunkId};

/// The site's night windows from its plan, or `None` when the plan has none (or a bad one: the
/// relay then fetches only under an override, and says so).
pub fn schedule(plan: &SitePlan) -> Option<Schedule> {
    let windows: Vec<Window> = plan
        .windows
        .iter()
        .map(|w| w.parse::<Window>())
        .collect::<Result<_, _>>()
        .ok()?;
    if windows.is_empty() {
        return None;
    }
    Schedule::new(&plan.tz, windows).ok()
}

/// Whether the WAN may be used at `now`, and for which entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A night window is open until this time.
    Window { until: i64 },
    /// Only entries under an override, each until its own `override_until`.
    Overrides,
    /// Closed until this time (the next window), or with no window ahead at all.
    Closed { next: Option<i64> },
}

/// The gate at `now`.
pub fn gate(schedule: Option<&Schedule>, plan: &SitePlan, now: i64) -> Gate {
    if let Some(s) = schedule {
        // A window may have opened up to a day ago (across midnight); look two days ahead.
        let openings = s.openings(now - 86_400, now + 2 * 86_400);
        if let Some(&(_, until)) = openings.iter().find(|&&(a, b)| a <= now && now < b) {
            return Gate::Window { until };
        }
        if plan.entries.iter().any(|e| overridden(e, now)) {
            return Gate::Overrides;
        }
        return Gate::Closed {
            next: openings.iter().map(|&(a, _)| a).find(|&a| a > now),
        };
    }
    if plan.entries.iter().any(|e| overridden(e, now)) {
        Gate::Overrides
    } else {
        Gate::Closed { next: None }
    }
}

/// An emergency override lets this entry use the WAN now.
pub fn overridden(entry: &PlanEntry, now: i64) -> bool {
    entry.override_until.is_some_and(|u| now < u)
}

/// Until when `entry` may be fetched under `gate` (None: not now).
pub fn may_fetch_until(gate: Gate, entry: &PlanEntry, now: i64) -> Option<i64> {
    let by_override = entry.override_until.filter(|&u| now < u);
    match (gate, by_override) {
        (Gate::Window { until }, o) => Some(o.map_or(until, |o| o.max(until))),
        (_, o) => o,
    }
}

/// The WAN cap in force under `gate`: the night cap in a window; outside it, under an override,
/// the site's emergency cap (the night cap when the plan gives none, or comes from a controller
/// that knows none). The relay paces to [`Bandwidth::usable`] of it, as the planner counts.
pub fn cap_in_force(gate: Gate, plan: &SitePlan) -> Bandwidth {
    let mbit = match gate {
        Gate::Overrides if plan.emergency_cap_mbit > 0 => plan.emergency_cap_mbit,
        _ => plan.cap_mbit,
    };
    Bandwidth::site_cap(mbit)
}

/// When the relay expects to hold what it lacks, for the NUCs it answers "not yet": now in a
/// window; under an override, the latest of the controller's estimates for the pushes in force
/// (`SitePlan::pushes`; now when it gives none); otherwise the next window (`None`: none ahead).
pub fn expected(gate: Gate, plan: &SitePlan, now: i64) -> Option<i64> {
    match gate {
        Gate::Window { .. } => Some(now),
        Gate::Overrides => Some(
            plan.pushes
                .iter()
                .filter(|p| {
                    plan.entries
                        .iter()
                        .any(|e| e.master == p.master && overridden(e, now))
                })
                .map(|p| p.expected.max(now))
                .max()
                .unwrap_or(now),
        ),
        Gate::Closed { next } => next,
    }
}

/// What an eviction pass removes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// Unpinned chunks to remove, least recently used first.
    pub remove: Vec<ChunkId>,
    pub freed: u64,
    /// Bytes of pinned chunks on disk.
    pub pinned_bytes: u64,
    /// Bytes on disk after the pass.
    pub after: u64,
    /// How far the pinned chunks alone exceed the quota (0 when they fit).
    pub pinned_over_quota: u64,
}

/// Which chunks to evict so that the store (`chunks`: id and bytes on disk) fits `quota`, keeping
/// `room` bytes free for what is about to be fetched. Pinned chunks are never chosen; among the
/// others, those used longest ago go first (`last_used`: a tick per chunk, higher is more recent;
/// a chunk never served counts as oldest).
pub fn plan_eviction(
    chunks: &[(ChunkId, u64)],
    pinned: &HashSet<ChunkId>,
    last_used: &HashMap<ChunkId, u64>,
    quota: u64,
    room: u64,
) -> Eviction {
    let total: u64 = chunks.iter().map(|&(_, len)| len).sum();
    let pinned_bytes: u64 = chunks
        .iter()
        .filter(|(id, _)| pinned.contains(id))
        .map(|&(_, len)| len)
        .sum();
    let target = quota.saturating_sub(room);
    let mut out = Eviction {
        pinned_bytes,
        after: total,
        pinned_over_quota: pinned_bytes.saturating_sub(quota),
        ..Eviction::default()
    };
    if total <= target {
        return out;
    }
    let mut candidates: Vec<(u64, ChunkId, u64)> = chunks
        .iter()
        .filter(|(id, _)| !pinned.contains(id))
        .map(|&(id, len)| (last_used.get(&id).copied().unwrap_or(0), id, len))
        .collect();
    candidates.sort_unstable();
    for (_, id, len) in candidates {
        if out.after <= target {
            break;
        }
        out.remove.push(id);
        out.freed += len;
        out.after -= len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::wire::MasterRef;

    fn id(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    fn plan(windows: &[&str], overrides: &[Option<i64>]) -> SitePlan {
        SitePlan {
            tz: "Europe/Paris".into(),
            windows: windows.iter().map(|w| w.to_string()).collect(),
            cap_mbit: 20,
            entries: overrides
                .iter()
                .enumerate()
                .map(|(i, o)| PlanEntry {
                    master: MasterRef::new(&format!("m{i}"), "1").unwrap(),
                    deadline: 0,
                    pin_until: 0,
                    override_until: *o,
                })
                .collect(),
            ..SitePlan::default()
        }
    }

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn a_window_across_midnight_is_open_on_both_sides_and_closed_by_day() {
        let p = plan(&["22:00-06:00"], &[None]);
        let s = schedule(&p);
        // 23:30 and 05:00 Paris (UTC+1 in winter).
        let until = at("2026-11-24T05:00:00Z");
        assert_eq!(
            gate(s.as_ref(), &p, at("2026-11-23T22:30:00Z")),
            Gate::Window { until }
        );
        assert_eq!(
            gate(s.as_ref(), &p, at("2026-11-24T04:00:00Z")),
            Gate::Window { until }
        );
        assert_eq!(
            gate(s.as_ref(), &p, at("2026-11-24T12:00:00Z")),
            Gate::Closed {
                next: Some(at("2026-11-24T21:00:00Z"))
            }
        );
        // The window closes on the second: 06:00 Paris is closed.
        assert!(matches!(gate(s.as_ref(), &p, until), Gate::Closed { .. }));
    }

    #[test]
    fn an_override_opens_the_wan_for_its_entry_only_and_only_until_it_ends() {
        let noon = at("2026-11-24T11:00:00Z");
        let p = plan(&["22:00-06:00"], &[None, Some(noon + 3600)]);
        let s = schedule(&p);
        assert_eq!(gate(s.as_ref(), &p, noon), Gate::Overrides);
        assert_eq!(may_fetch_until(Gate::Overrides, &p.entries[0], noon), None);
        assert_eq!(
            may_fetch_until(Gate::Overrides, &p.entries[1], noon),
            Some(noon + 3600)
        );
        assert!(matches!(
            gate(s.as_ref(), &p, noon + 3600),
            Gate::Closed { .. }
        ));
        // No windows at all (a bad plan): overrides still work, nothing else does.
        let bare = plan(&[], &[Some(noon + 60)]);
        assert_eq!(gate(None, &bare, noon), Gate::Overrides);
        assert_eq!(gate(None, &bare, noon + 60), Gate::Closed { next: None });
    }

    #[test]
    fn in_the_daytime_an_override_paces_to_the_emergency_cap_and_at_night_to_the_night_cap() {
        let noon = at("2026-11-24T11:00:00Z");
        let mut p = plan(&["22:00-06:00"], &[Some(noon + 3600)]);
        p.emergency_cap_mbit = 8;
        let s = schedule(&p);
        let day = gate(s.as_ref(), &p, noon);
        assert_eq!(day, Gate::Overrides);
        assert_eq!(cap_in_force(day, &p), Bandwidth::from_mbit(8));
        let night = gate(s.as_ref(), &p, at("2026-11-23T22:30:00Z"));
        assert_eq!(cap_in_force(night, &p), Bandwidth::from_mbit(20));
        // No emergency cap (0, or a controller that sends none): the night cap.
        p.emergency_cap_mbit = 0;
        assert_eq!(cap_in_force(day, &p), Bandwidth::from_mbit(20));
    }

    #[test]
    fn a_nuc_is_told_the_pushs_estimate_under_an_override_and_the_next_window_otherwise() {
        let noon = at("2026-11-24T11:00:00Z");
        let mut p = plan(&["22:00-06:00"], &[Some(noon + 3600)]);
        let s = schedule(&p);
        p.pushes = vec![image_tools::wire::Push {
            master: p.entries[0].master.clone(),
            deadline: noon + 7200,
            expected: noon + 1200,
        }];
        let g = gate(s.as_ref(), &p, noon);
        assert_eq!(expected(g, &p, noon), Some(noon + 1200));
        // Past the estimate, and still not there: now, not a time gone by.
        assert_eq!(expected(g, &p, noon + 1800), Some(noon + 1800));
        // An override without an estimate: now.
        p.pushes.clear();
        assert_eq!(expected(g, &p, noon), Some(noon));
        // Closed: the next window; open: now.
        let night = plan(&["22:00-06:00"], &[None]);
        let g = gate(s.as_ref(), &night, noon);
        assert_eq!(expected(g, &night, noon), Some(at("2026-11-24T21:00:00Z")));
        let late = at("2026-11-23T22:30:00Z");
        assert_eq!(
            expected(gate(s.as_ref(), &night, late), &night, late),
            Some(late)
        );
    }

    #[test]
    fn eviction_keeps_pinned_chunks_and_drops_the_least_recently_used() {
        let chunks: Vec<_> = (0..6).map(|n| (id(n), 100)).collect();
        let pinned: HashSet<_> = [id(0), id(1)].into();
        let used: HashMap<_, _> = [(id(2), 9), (id(3), 1), (id(4), 5)].into();
        // 600 on disk, quota 400: two go, the never-used one (5) and then the oldest used (3).
        let e = plan_eviction(&chunks, &pinned, &used, 400, 0);
        assert_eq!(e.remove, vec![id(5), id(3)]);
        assert_eq!((e.freed, e.after, e.pinned_bytes), (200, 400, 200));
        assert_eq!(e.pinned_over_quota, 0);
        // Room for a fetch to come: 150 free under 400 means 250 on disk, all that is not pinned
        // goes, most recently used last.
        let e = plan_eviction(&chunks, &pinned, &used, 400, 150);
        assert_eq!(e.remove, vec![id(5), id(3), id(4), id(2)]);
        assert_eq!(e.after, 200);
        // Under quota: nothing.
        assert!(plan_eviction(&chunks, &pinned, &used, 600, 0)
            .remove
            .is_empty());
    }

    #[test]
    fn a_quota_below_the_pinned_set_evicts_everything_else_and_says_by_how_much() {
        let chunks: Vec<_> = (0..4).map(|n| (id(n), 100)).collect();
        let pinned: HashSet<_> = [id(0), id(1), id(2)].into();
        let e = plan_eviction(&chunks, &pinned, &HashMap::new(), 150, 0);
        assert_eq!(e.remove, vec![id(3)]);
        assert_eq!(
            (e.after, e.pinned_bytes, e.pinned_over_quota),
            (300, 300, 150)
        );
    }
}
