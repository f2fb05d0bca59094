//! Keyed rate limiters (GCRA, `governor`), per instance. A refusal says how long to wait.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

pub struct Limiter<K: Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// `count` requests per `period` per key, all of which may come in a burst.
    pub fn new(count: u32, period: Duration) -> Self {
        let burst = NonZeroU32::new(count.max(1)).unwrap_or(NonZeroU32::MIN);
        let per_one = period / burst.get();
        let quota = Quota::with_period(per_one.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        Self { inner: DefaultKeyedRateLimiter::keyed(quota), clock: DefaultClock::default() }
    }

    /// `Ok` if `key` may go on now; otherwise how long until it may.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.inner.check_key(key).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forget keys whose state is back to full (call periodically to bound memory).
    pub fn prune(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

/// Whole seconds to put in `Retry-After` (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.as_secs() == 0))
}

/// Which limit a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Token,
    Introspect,
    Revoke,
    Browser,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Introspect => "introspect",
            Self::Revoke => "revoke",
            Self::Browser => "browser",
        }
    }
}

/// Every per-instance limit.
pub struct RateLimits {
    token: (Limiter<std::net::IpAddr>, Limiter<String>),
    introspect: (Limiter<std::net::IpAddr>, Limiter<String>),
    revoke: (Limiter<std::net::IpAddr>, Limiter<String>),
    browser: Limiter<std::net::IpAddr>,
    /// Registrations per source address.
    pub registration: Limiter<std::net::IpAddr>,
}

impl RateLimits {
    pub fn new(s: &crate::config::RateLimitSettings, registration: crate::config::Rate) -> Self {
        let pair = |((a, ap), (c, cp)): ((u32, Duration), (u32, Duration))| (Limiter::new(a, ap), Limiter::new(c, cp));
        Self {
            token: pair(s.token),
            introspect: pair(s.introspect),
            revoke: pair(s.revoke),
            browser: Limiter::new(s.browser.0, s.browser.1),
            registration: Limiter::new(registration.0, registration.1),
        }
    }

    pub fn check_address(&self, route: Route, addr: std::net::IpAddr) -> Result<(), Duration> {
        match route {
            Route::Token => self.token.0.check(&addr),
            Route::Introspect => self.introspect.0.check(&addr),
            Route::Revoke => self.revoke.0.check(&addr),
            Route::Browser => self.browser.check(&addr),
        }
    }

    pub fn check_client(&self, route: Route, client_id: &str) -> Result<(), Duration> {
        let limiter = match route {
            Route::Token => &self.token.1,
            Route::Introspect => &self.introspect.1,
            Route::Revoke => &self.revoke.1,
            Route::Browser => return Ok(()),
        };
        limiter.check(&client_id.to_owned())
    }

    pub fn prune(&self) {
        for (a, c) in [&self.token, &self.introspect, &self.revoke] {
            a.prune();
            c.prune();
        }
        self.browser.prune();
        self.registration.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key() {
        let l = Limiter::new(3, Duration::from_secs(3600));
        for _ in 0..3 {
            assert!(l.check(&"a").is_ok());
        }
        let wait = l.check(&"a").unwrap_err();
        assert!(wait > Duration::from_secs(1000) && wait <= Duration::from_secs(1200), "{wait:?}");
        assert!(l.check(&"b").is_ok(), "another key has its own budget");
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }
}
