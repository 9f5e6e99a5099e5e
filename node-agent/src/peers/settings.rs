//! How a NUC serves its peers: the upload cap and whether it serves while a session runs. The
//! site sets them (`nightcast site set --peer-upload-mbit`, `--peer-share-in-session`, carried in
//! its plan); a plan without them (the site never set them, or an older relay) leaves the NUC's
//! own configuration in force. [`Settings::in_force`] decides (pure); [`UploadCap`] is the cap
//! the peer server pays into, changed in place when the plan changes (no restart).

use std::sync::atomic::{AtomicU64, Ordering};

use image_tools::exchange::RateLimit;
use image_tools::wire::SitePlan;

/// The peer settings in force on a NUC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Mbit/s; 0: uncapped.
    pub upload_mbit: u64,
    pub share_in_session: bool,
}

impl Settings {
    /// The site's value of each setting when its plan has one, else the NUC's own.
    pub fn in_force(plan: &SitePlan, own: Settings) -> Settings {
        Settings {
            upload_mbit: plan.peer_upload_mbit.unwrap_or(own.upload_mbit),
            share_in_session: plan.peer_share_in_session.unwrap_or(own.share_in_session),
        }
    }

    /// Whether the NUC serves its peers now.
    pub fn serving(&self, in_session: bool) -> bool {
        !in_session || self.share_in_session
    }
}

/// The upload cap of a NUC's peer server, changeable while it serves.
#[derive(Debug)]
pub struct UploadCap {
    /// Mbit/s; 0: uncapped.
    mbit: AtomicU64,
    limit: RateLimit,
}

impl UploadCap {
    pub fn new(mbit: u64) -> UploadCap {
        UploadCap {
            mbit: AtomicU64::new(mbit),
            limit: RateLimit::new(mbit.max(1) * 1_000_000),
        }
    }

    /// Changes the cap; returns whether it changed. Chunks already paid for go at the old rate.
    pub fn set(&self, mbit: u64) -> bool {
        if mbit > 0 {
            self.limit.set_rate(mbit * 1_000_000);
        }
        self.mbit.swap(mbit, Ordering::Relaxed) != mbit
    }

    pub fn mbit(&self) -> u64 {
        self.mbit.load(Ordering::Relaxed)
    }

    /// The limit to pay into before sending; none while uncapped.
    pub fn limit(&self) -> Option<&RateLimit> {
        (self.mbit() > 0).then_some(&self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: Settings = Settings {
        upload_mbit: 300,
        share_in_session: false,
    };

    #[test]
    fn the_sites_settings_win_and_the_nucs_own_fill_what_the_site_did_not_set() {
        // An older relay's plan, or a site that never set them: the NUC's own.
        assert_eq!(Settings::in_force(&SitePlan::default(), OWN), OWN);
        let plan = SitePlan {
            peer_upload_mbit: Some(20),
            ..SitePlan::default()
        };
        assert_eq!(
            Settings::in_force(&plan, OWN),
            Settings {
                upload_mbit: 20,
                share_in_session: false
            }
        );
        let plan = SitePlan {
            peer_upload_mbit: Some(0),
            peer_share_in_session: Some(true),
            ..SitePlan::default()
        };
        let site = Settings::in_force(&plan, OWN);
        assert_eq!(
            site,
            Settings {
                upload_mbit: 0,
                share_in_session: true
            }
        );
        // The site may also forbid what a NUC's configuration allows.
        let plan = SitePlan {
            peer_share_in_session: Some(false),
            ..SitePlan::default()
        };
        let own = Settings {
            share_in_session: true,
            ..OWN
        };
        assert!(!Settings::in_force(&plan, own).share_in_session);
    }

    #[test]
    fn a_nuc_serves_outside_sessions_and_in_one_only_if_allowed() {
        assert!(OWN.serving(false));
        assert!(!OWN.serving(true));
        let allowed = Settings {
            share_in_session: true,
            ..OWN
        };
        assert!(allowed.serving(true) && allowed.serving(false));
    }

    #[test]
    fn the_upload_cap_changes_in_place_and_zero_lifts_it() {
        let cap = UploadCap::new(300);
        assert_eq!(cap.limit().map(RateLimit::rate), Some(300_000_000));
        assert!(!cap.set(300));
        assert!(cap.set(20));
        assert_eq!(cap.limit().map(RateLimit::rate), Some(20_000_000));
        assert!(cap.set(0));
        assert!(cap.limit().is_none());
        assert!(cap.set(40));
        assert_eq!(cap.limit().map(RateLimit::rate), Some(40_000_000));
        let uncapped = UploadCap::new(0);
        assert!(uncapped.limit().is_none());
        uncapped.set(5);
        assert_eq!(uncapped.limit().map(RateLimit::rate), Some(5_000_000));
    }
}
