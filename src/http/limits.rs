//! Rate limits at the edge: a token bucket (the `governor` crate, GCRA) per token subject and route class
//! (commands, queries, admin), and per client IP for requests without a valid token. Over the limit: 429
//! `rate_limited` with `Retry-After`, counted in `orderflow_http_rate_limited_total{class}`. Off unless
//! `rate_limit.enabled`; when on, a check is one hash-map lookup and an atomic compare-and-swap.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::Method;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::{Bucket, RateLimitSettings};

/// Which bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    // The discriminants index `RateLimits::limiters`.
    Command = 0,
    Query = 1,
    Admin = 2,
    /// A request whose token was missing or refused, keyed by client IP.
    Anonymous = 3,
}

impl RouteClass {
    /// Every class: the label values of `orderflow_http_rate_limited_total`, known at startup.
    pub const ALL: [RouteClass; 4] = [Self::Command, Self::Query, Self::Admin, Self::Anonymous];

    pub fn label(self) -> &'static str {
        match self {
            Self::Command => "commands",
            Self::Query => "queries",
            Self::Admin => "admin",
            Self::Anonymous => "anonymous",
        }
    }

    /// `/admin/*` and `/revenue/*` are admin routes; other POSTs are commands; the rest are queries.
    pub fn of(req: &HttpRequest) -> Self {
        let path = req.path();
        if path.starts_with("/admin/") || path.starts_with("/revenue/") {
            Self::Admin
        } else if req.method() == Method::POST {
            Self::Command
        } else {
            Self::Query
        }
    }
}

pub struct RateLimits {
    limiters: Option<[DefaultKeyedRateLimiter<String>; 4]>,
}

fn quota(bucket: &Bucket) -> Quota {
    let rate = NonZeroU32::new(bucket.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(bucket.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        let limiters = settings.enabled.then(|| {
            [&settings.commands, &settings.queries, &settings.admin, &settings.anonymous]
                .map(|bucket| DefaultKeyedRateLimiter::keyed(quota(bucket)))
        });
        Self { limiters }
    }

    pub fn enabled(&self) -> bool {
        self.limiters.is_some()
    }

    /// Takes one token from `key`'s bucket of `class`; `Err(wait)` when it is empty.
    pub fn check(&self, class: RouteClass, key: &str) -> Result<(), Duration> {
        let Some(limiters) = &self.limiters else { return Ok(()) };
        let limiter = &limiters[class as usize];
        // Keys are owned Strings: look up with a borrowed one first would need raw-entry APIs governor does
        // not expose; the allocation is small next to a request.
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            crate::telemetry::rate_limited(class.label());
            not_until.wait_time_from(DefaultClock::default().now())
        })
    }

    /// Forgets buckets that are full again, so that the maps hold only recently active keys.
    pub fn forget_idle(&self) {
        if let Some(limiters) = &self.limiters {
            for limiter in limiters {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

/// The client address a request came from (the TCP peer: `X-Forwarded-For` is not trusted, as any client
/// could set it).
pub fn client_ip(req: &HttpRequest) -> String {
    req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0])).to_string()
}

/// How long a search waits for a slot before it is answered 503 (with `Retry-After`).
const SEARCH_SLOT_WAIT: Duration = Duration::from_secs(5);

/// Searches running at once, at most one per core. A search can be costly (a full-text match over the whole
/// view), a point read (`GET /orders/{id}`) is not: bounding the searches keeps cores and read connections
/// free for the point reads however many searches arrive, so searches cannot starve them. Searches beyond the
/// bound wait their turn (for [`SEARCH_SLOT_WAIT`] at most).
pub struct SearchSlots {
    slots: tokio::sync::Semaphore,
    wait: Duration,
}

impl SearchSlots {
    /// One slot per core the process may use.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from), SEARCH_SLOT_WAIT)
    }

    fn new(slots: usize, wait: Duration) -> Self {
        Self { slots: tokio::sync::Semaphore::new(slots.max(1)), wait }
    }

    /// A slot, held until the permit is dropped; `None` when none came free in time.
    pub async fn acquire(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(self.wait, self.slots.acquire()).await.ok()?.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Searches beyond the slots wait their turn, and give up (503) when none comes free in time.
    #[tokio::test]
    async fn searches_beyond_the_slots_wait_then_give_up() {
        let slots = SearchSlots::new(2, Duration::from_millis(50));
        let first = slots.acquire().await.expect("a free slot");
        let _second = slots.acquire().await.expect("a free slot");
        assert!(slots.acquire().await.is_none(), "a third search gives up after the wait");
        drop(first);
        assert!(slots.acquire().await.is_some(), "a freed slot is taken");
    }

    fn settings(per_second: u32, burst: u32) -> RateLimitSettings {
        let bucket = Bucket { per_second, burst };
        RateLimitSettings {
            enabled: true,
            commands: bucket.clone(),
            queries: bucket.clone(),
            admin: bucket.clone(),
            anonymous: bucket,
        }
    }

    #[test]
    fn a_key_past_its_burst_waits_and_other_keys_do_not() {
        let limits = RateLimits::new(&settings(1, 3));
        for _ in 0..3 {
            assert!(limits.check(RouteClass::Command, "a").is_ok());
        }
        let wait = limits.check(RouteClass::Command, "a").expect_err("over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limits.check(RouteClass::Command, "b").is_ok(), "another subject is unaffected");
        assert!(limits.check(RouteClass::Query, "a").is_ok(), "another class has its own bucket");
    }

    #[test]
    fn disabled_limits_never_refuse() {
        let limits = RateLimits::new(&RateLimitSettings { enabled: false, ..settings(1, 1) });
        assert!((0..100).all(|_| limits.check(RouteClass::Command, "a").is_ok()));
    }
}
