//! Logins, pure: the sessions open (a random id in a cookie, a CSRF token, an expiry), the
//! decisions on a request's cookie and form token, and the brake on wrong passwords. Time is an
//! input (`now`, Unix seconds of the controller's clock); randomness is too (the caller draws the
//! bytes). Sessions live in memory: a restart of the controller logs everybody out.

use std::collections::HashMap;

use super::users::User;

/// The cookie's name. `__Host-` makes the browser insist on `Secure`, `Path=/` and no `Domain`.
pub const COOKIE: &str = "__Host-nightcast";
/// A session ends this long after its last request...
pub const IDLE_SECS: i64 = 3600;
/// ...and this long after the login at the latest (a working day).
pub const LIFETIME_SECS: i64 = 12 * 3600;
/// Wrong passwords for one name allowed within `FAILURE_WINDOW_SECS` before logins for that name
/// are refused until the window has passed.
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW_SECS: i64 = 15 * 60;
/// Sessions open at once; the oldest goes when one more logs in.
pub const MAX_SESSIONS: usize = 1000;

/// A logged-in user's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    /// The user's stored password hash when they logged in: a new password (or the user
    /// removed, or given another role or sites) ends their sessions at their next request.
    pub stamp: String,
    /// The token every form of this session carries (hex, 32 bytes).
    pub csrf: String,
    pub created: i64,
    pub last_used: i64,
}

impl Session {
    /// When it ends if nothing more is asked.
    pub fn expires(&self) -> i64 {
        (self.last_used + IDLE_SECS).min(self.created + LIFETIME_SECS)
    }
}

/// The open sessions, by id (hex of 32 random bytes).
#[derive(Debug, Default)]
pub struct Sessions {
    open: HashMap<String, Session>,
}

/// Why a request's cookie does not name a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// No cookie of ours, or one we never gave (or gave before a restart).
    Unknown,
    /// It was ours and has expired: the login page says so.
    Expired,
}

impl Sessions {
    /// Opens a session for `user` with the id and CSRF token drawn by the caller (32 random bytes
    /// each); returns the `Set-Cookie` value.
    pub fn open(
        &mut self,
        user: User,
        stamp: String,
        id: [u8; 32],
        csrf: [u8; 32],
        now: i64,
    ) -> String {
        self.open.retain(|_, s| s.expires() > now);
        if self.open.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                self.open.remove(&oldest);
            }
        }
        let id = image_tools::ids::hex(&id);
        self.open.insert(
            id.clone(),
            Session {
                user,
                stamp,
                csrf: image_tools::ids::hex(&csrf),
                created: now,
                last_used: now,
            },
        );
        set_cookie(&id, LIFETIME_SECS)
    }

    /// The session a request's `Cookie` header names, its use recorded; an expired one is
    /// closed.
    pub fn check(&mut self, cookie_header: Option<&str>, now: i64) -> Result<Session, NoSession> {
        let id = cookie_header
            .and_then(session_id)
            .ok_or(NoSession::Unknown)?;
        let Some(session) = self.open.get_mut(id) else {
            return Err(NoSession::Unknown);
        };
        if session.expires() <= now {
            self.open.remove(id);
            return Err(NoSession::Expired);
        }
        session.last_used = now;
        Ok(session.clone())
    }

    /// Ends the session the cookie names (logout); returns the `Set-Cookie` value that removes
    /// the cookie.
    pub fn close(&mut self, cookie_header: Option<&str>) -> String {
        if let Some(id) = cookie_header.and_then(session_id) {
            self.open.remove(id);
        }
        set_cookie("", 0)
    }

    /// Ends every session of `user` (after their password or role changed, or they were
    /// removed).
    pub fn close_user(&mut self, user: &str) {
        self.open.retain(|_, s| s.user.name != user);
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// The `Set-Cookie` value for session `id`, kept `max_age` seconds (0: removed). `Max-Age`
/// rather than `Expires`, so that the browser's clock does not matter.
fn set_cookie(id: &str, max_age: i64) -> String {
    format!("{COOKIE}={id}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict")
}

/// Our session id in a `Cookie` header (`a=b; c=d`), if it is there and has the form we give.
fn session_id(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether a form's CSRF token is the session's (compared in constant time).
pub fn csrf_ok(session: &Session, form_token: Option<&str>) -> bool {
    let Some(given) = form_token else {
        return false;
    };
    let (a, b) = (given.as_bytes(), session.csrf.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The cookie that ties a login form to the browser that asked for it (the form carries the same
/// random value: a page elsewhere cannot post a login in this browser's name).
pub const LOGIN_COOKIE: &str = "__Host-nightcast-login";

/// The `Set-Cookie` value of a login form's token (an hour to fill the form).
pub fn login_cookie(token: &str) -> String {
    format!("{LOGIN_COOKIE}={token}; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that removes the login form's token (once logged in).
pub fn login_cookie_removed() -> String {
    format!("{LOGIN_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict")
}

/// Whether a posted login form carries the token of the login cookie.
pub fn login_token_ok(cookie_header: Option<&str>, form_token: Option<&str>) -> bool {
    let cookie = cookie_header.and_then(|h| {
        h.split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == LOGIN_COOKIE)
            .map(|(_, v)| v)
    });
    match (cookie, form_token) {
        (Some(c), Some(f)) if c.len() == 64 => {
            c.len() == f.len()
                && c.bytes()
                    .zip(f.bytes())
                    .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                    == 0
        }
        _ => false,
    }
}

/// The brake on password guessing: wrong passwords by name.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: HashMap<String, Vec<i64>>,
}

impl Throttle {
    /// `None` if `name` may try a password at `now`, else the time from which it may again.
    pub fn blocked_until(&mut self, name: &str, now: i64) -> Option<i64> {
        let list = self.failures.get_mut(&key(name))?;
        list.retain(|t| *t > now - FAILURE_WINDOW_SECS);
        if list.len() >= MAX_FAILURES {
            list.iter().min().map(|first| first + FAILURE_WINDOW_SECS)
        } else {
            None
        }
    }

    /// Counts a wrong password (or an unknown name) for `name`.
    pub fn failed(&mut self, name: &str, now: i64) {
        // Bounded: names nobody has, tried once each, are forgotten when they are old.
        if self.failures.len() > 10_000 {
            self.failures
                .retain(|_, l| l.iter().any(|t| *t > now - FAILURE_WINDOW_SECS));
        }
        self.failures.entry(key(name)).or_default().push(now);
    }

    /// A right password clears the count.
    pub fn succeeded(&mut self, name: &str) {
        self.failures.remove(&key(name));
    }
}

fn key(name: &str) -> String {
    name.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::users::Role;

    fn alice() -> User {
        User {
            name: "alice".into(),
            role: Role::Admin,
            sites: Vec::new(),
        }
    }

    fn cookie_of(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[test]
    fn the_cookie_is_secure_http_only_strict_and_random() {
        let mut s = Sessions::default();
        let c = s.open(alice(), String::new(), [7; 32], [9; 32], 1000);
        for attr in [
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=43200",
        ] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(c.starts_with("__Host-nightcast=0707"), "{c}");
        let other = s.open(alice(), String::new(), [8; 32], [9; 32], 1000);
        assert_ne!(cookie_of(&c), cookie_of(&other));
    }

    #[test]
    fn a_session_is_found_by_its_cookie_among_others() {
        let mut s = Sessions::default();
        let c = cookie_of(&s.open(alice(), String::new(), [7; 32], [9; 32], 1000));
        let header = format!("theme=dark; {c}; other=1");
        assert_eq!(s.check(Some(&header), 1001).unwrap().user, alice());
        assert_eq!(s.check(None, 1001), Err(NoSession::Unknown));
        assert_eq!(
            s.check(Some(&format!("{COOKIE}={}", "ab".repeat(32))), 1001),
            Err(NoSession::Unknown)
        );
        assert_eq!(
            s.check(Some(&format!("{COOKIE}=../../x")), 1001),
            Err(NoSession::Unknown)
        );
    }

    #[test]
    fn a_session_expires_after_an_idle_hour_and_after_a_day_of_work() {
        let mut s = Sessions::default();
        let c = cookie_of(&s.open(alice(), String::new(), [7; 32], [9; 32], 0));
        // Used every 50 minutes: alive until the lifetime ends.
        let mut t = 0;
        while t + 3000 < LIFETIME_SECS {
            t += 3000;
            assert!(s.check(Some(&c), t).is_ok(), "at {t}");
        }
        assert_eq!(s.check(Some(&c), LIFETIME_SECS), Err(NoSession::Expired));
        // And gone after that: a second look does not know it.
        assert_eq!(s.check(Some(&c), LIFETIME_SECS), Err(NoSession::Unknown));

        let c = cookie_of(&s.open(alice(), String::new(), [8; 32], [9; 32], 0));
        assert!(s.check(Some(&c), IDLE_SECS - 1).is_ok());
        assert_eq!(
            s.check(Some(&c), 2 * IDLE_SECS - 1),
            Err(NoSession::Expired)
        );
    }

    #[test]
    fn logout_ends_the_session_and_removes_the_cookie() {
        let mut s = Sessions::default();
        let c = cookie_of(&s.open(alice(), String::new(), [7; 32], [9; 32], 0));
        let gone = s.close(Some(&c));
        assert!(gone.contains("Max-Age=0"), "{gone}");
        assert_eq!(s.check(Some(&c), 1), Err(NoSession::Unknown));
    }

    #[test]
    fn the_csrf_token_must_be_the_sessions_own() {
        let mut s = Sessions::default();
        let c = cookie_of(&s.open(alice(), String::new(), [7; 32], [9; 32], 0));
        let session = s.check(Some(&c), 1).unwrap();
        assert!(csrf_ok(&session, Some(&"09".repeat(32))));
        assert!(!csrf_ok(&session, Some(&"08".repeat(32))));
        assert!(!csrf_ok(&session, Some("09")));
        assert!(!csrf_ok(&session, Some("")));
        assert!(!csrf_ok(&session, None));
    }

    #[test]
    fn a_login_form_must_carry_its_cookies_token() {
        let t = "ab".repeat(32);
        let header = format!("x=1; {LOGIN_COOKIE}={t}");
        assert!(login_token_ok(Some(&header), Some(&t)));
        assert!(!login_token_ok(Some(&header), Some(&"ac".repeat(32))));
        assert!(!login_token_ok(Some(&header), None));
        assert!(!login_token_ok(None, Some(&t)));
        // An empty cookie and an empty field do not match each other.
        assert!(!login_token_ok(Some(&format!("{LOGIN_COOKIE}=")), Some("")));
        assert!(login_cookie(&t).contains("Secure; HttpOnly; SameSite=Strict"));
    }

    #[test]
    fn five_wrong_passwords_block_the_name_for_fifteen_minutes() {
        let mut t = Throttle::default();
        for i in 0..MAX_FAILURES as i64 {
            assert_eq!(t.blocked_until("Alice", 100 + i), None);
            t.failed("Alice", 100 + i);
        }
        // Any spelling of the name.
        assert_eq!(
            t.blocked_until(" alice", 200),
            Some(100 + FAILURE_WINDOW_SECS)
        );
        assert_eq!(t.blocked_until("bob", 200), None);
        assert_eq!(t.blocked_until("alice", 101 + FAILURE_WINDOW_SECS), None);
    }

    #[test]
    fn a_right_password_clears_the_count() {
        let mut t = Throttle::default();
        for i in 0..MAX_FAILURES as i64 - 1 {
            t.failed("alice", i);
        }
        t.succeeded("alice");
        t.failed("alice", 10);
        assert_eq!(t.blocked_until("alice", 11), None);
    }
}
