//! When the relay expects to hold a master version it does not have yet, from the plan it passed
//! on (pure): the controller's estimate for an emergency push, now when an override lets the
//! relay fetch it, else the opening of the site's next night window. The NUC says it while it
//! waits (its status, and the fleet through its report), so that no wait is silent.

use image_tools::windows::{Schedule, Window};
use image_tools::wire::{MasterRef, SitePlan};

/// When the relay should hold `master`, as far as `plan` says at `now` (`None`: no window ahead
/// and no override: only the DSI can tell).
pub fn expected(plan: &SitePlan, master: &MasterRef, now: i64) -> Option<i64> {
    if let Some(p) = plan.pushes.iter().find(|p| &p.master == master) {
        return Some(p.expected.max(now));
    }
    let overridden = plan
        .entries
        .iter()
        .any(|e| &e.master == master && e.override_until.is_some_and(|u| now < u));
    if overridden {
        return Some(now);
    }
    let windows: Vec<Window> = plan
        .windows
        .iter()
        .map(|w| w.parse())
        .collect::<Result<_, _>>()
        .ok()?;
    let schedule = Schedule::new(&plan.tz, windows).ok()?;
    schedule
        .openings(now - 86_400, now + 2 * 86_400)
        .iter()
        .find(|&&(start, end)| end > now && start <= now + 2 * 86_400)
        .map(|&(start, _)| start.max(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::wire::{PlanEntry, Push};

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn a_push_gives_its_estimate_an_override_now_and_otherwise_the_next_window() {
        let m = MasterRef::new("demo", "2").unwrap();
        let noon = at("2030-01-08T12:00:00Z");
        let mut plan = SitePlan {
            tz: "UTC".into(),
            windows: vec!["22:00-06:00".into()],
            cap_mbit: 20,
            entries: vec![PlanEntry {
                master: m.clone(),
                deadline: noon,
                pin_until: noon + 7200,
                override_until: None,
            }],
            ..SitePlan::default()
        };
        assert_eq!(expected(&plan, &m, noon), Some(at("2030-01-08T22:00:00Z")));
        // In the window: now.
        let night = at("2030-01-08T23:00:00Z");
        assert_eq!(expected(&plan, &m, night), Some(night));
        plan.entries[0].override_until = Some(noon + 3600);
        assert_eq!(expected(&plan, &m, noon), Some(noon));
        plan.pushes = vec![Push {
            master: m.clone(),
            deadline: noon + 7200,
            expected: noon + 900,
        }];
        assert_eq!(expected(&plan, &m, noon), Some(noon + 900));
        assert_eq!(expected(&plan, &m, noon + 1000), Some(noon + 1000));
        // No windows, no override: nobody knows.
        let bare = SitePlan::default();
        assert_eq!(expected(&bare, &m, noon), None);
    }
}
