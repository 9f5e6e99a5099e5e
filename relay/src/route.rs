//! Where the relay reaches the controller (pure): the address in its configuration, or, when its
//! plan says the site's link is far (`nightcast site set --link far`), the same host at the
//! controller's far port (`far_listen`, where the controller sends with BBR); back to the
//! configured address while the far port cannot be reached, and tried again after
//! [`FAR_RETRY_SECS`].
//!
//! The far port comes only from a plan, and a plan only from the controller's authenticated
//! connection (or from `plan.json`, which the relay wrote from one); the host is always the one
//! the DSI configured, and the relay checks the controller's certificate there as anywhere.

use std::net::SocketAddr;

/// After the far port could not be reached, the relay uses its configured address this long
/// before it tries the far port again (seconds).
pub const FAR_RETRY_SECS: i64 = 600;

/// The address the link to the controller takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The `controller` address of the relay's configuration.
    Configured(SocketAddr),
    /// Its host at the far port of the plan.
    Far(SocketAddr),
}

impl Route {
    pub fn addr(self) -> SocketAddr {
        match self {
            Route::Configured(a) | Route::Far(a) => a,
        }
    }

    pub fn is_far(self) -> bool {
        matches!(self, Route::Far(_))
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Configured(a) => write!(f, "{a} (configured)"),
            Route::Far(a) => write!(f, "{a} (the controller's far port, BBR)"),
        }
    }
}

/// The route at `now`, for a relay configured with `configured`, whose plan names `far_port`
/// (none: a wired site, or a controller without `far_listen`), and whose last attempt at the far
/// port failed at `far_failed_at` (none: it has not failed since it last worked).
pub fn choose(
    configured: SocketAddr,
    far_port: Option<u16>,
    far_failed_at: Option<i64>,
    now: i64,
) -> Route {
    let retry_due = far_failed_at.is_none_or(|at| now - at >= FAR_RETRY_SECS);
    match far_port {
        Some(port) if port != 0 && retry_due => Route::Far(SocketAddr::new(configured.ip(), port)),
        _ => Route::Configured(configured),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_900_000_000;

    fn configured() -> SocketAddr {
        "192.0.2.10:4433".parse().unwrap()
    }

    #[test]
    fn a_wired_site_uses_the_configured_address() {
        assert_eq!(
            choose(configured(), None, None, NOW),
            Route::Configured(configured())
        );
    }

    #[test]
    fn a_far_site_uses_the_configured_host_at_the_far_port() {
        let route = choose(configured(), Some(4437), None, NOW);
        assert_eq!(route, Route::Far("192.0.2.10:4437".parse().unwrap()));
        assert!(route.is_far());
        let v6: SocketAddr = "[2001:db8::10]:4433".parse().unwrap();
        assert_eq!(
            choose(v6, Some(4437), None, NOW).addr(),
            "[2001:db8::10]:4437".parse().unwrap()
        );
    }

    #[test]
    fn an_unreachable_far_port_falls_back_then_is_tried_again() {
        let failed = NOW - 10;
        assert_eq!(
            choose(configured(), Some(4437), Some(failed), NOW),
            Route::Configured(configured())
        );
        assert_eq!(
            choose(
                configured(),
                Some(4437),
                Some(failed),
                failed + FAR_RETRY_SECS - 1
            ),
            Route::Configured(configured())
        );
        assert!(choose(
            configured(),
            Some(4437),
            Some(failed),
            failed + FAR_RETRY_SECS
        )
        .is_far());
    }

    #[test]
    fn port_zero_is_no_far_port() {
        assert_eq!(
            choose(configured(), Some(0), None, NOW),
            Route::Configured(configured())
        );
    }
}
