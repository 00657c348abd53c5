//! Requests per tenant: one limiter shared by the gRPC and HTTP front ends, so that a client
//! gets the same budget whichever protocol it speaks (docs/domain.md §2: 300 requests per minute per
//! client by default).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Requests a tenant may make per minute unless configured otherwise.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 300;

/// Checks between two sweeps of tenants whose budget is full again (they need no state).
const CHECKS_BETWEEN_SWEEPS: u64 = 1024;

/// governor's limiter keyed by tenant.
type KeyedLimiter<C> =
    RateLimiter<String, DashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A refused request: the tenant spent its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rate limit of {per_minute} requests per minute for tenant {tenant} exceeded; retry in {} s",
    self.retry_after_secs()
)]
pub struct RateLimited {
    pub tenant: String,
    /// The tenant's budget, requests per minute.
    pub per_minute: u32,
    /// Until the tenant's next request is allowed.
    pub wait: Duration,
}

impl RateLimited {
    /// The wait in whole seconds, rounded up and at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// The time the limiter reads: the process's monotonic clock, or one a test moves by hand.
#[derive(Debug, Clone)]
pub enum LimiterClock {
    Real(std::time::Instant),
    Manual(FakeRelativeClock),
}

impl LimiterClock {
    /// Monotonic time from now on.
    pub fn real() -> Self {
        LimiterClock::Real(std::time::Instant::now())
    }

    /// Time that stands still until [`LimiterClock::advance`] moves it.
    pub fn manual() -> Self {
        LimiterClock::Manual(FakeRelativeClock::default())
    }

    /// Moves a manual clock forward (a real one moves by itself).
    pub fn advance(&self, by: Duration) {
        if let LimiterClock::Manual(clock) = self {
            clock.advance(by);
        }
    }
}

impl Default for LimiterClock {
    fn default() -> Self {
        Self::real()
    }
}

impl Clock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            LimiterClock::Real(start) => Nanos::from(start.elapsed()),
            LimiterClock::Manual(clock) => clock.now(),
        }
    }
}

/// A budget of requests per minute for each tenant (GCRA: a burst of the whole budget, then one
/// request every `60 s / budget`). Cheap to clone; clones share the budgets.
#[derive(Clone)]
pub struct TenantLimiter<C: Clock = LimiterClock> {
    limiter: Arc<KeyedLimiter<C>>,
    per_minute: u32,
    checks: Arc<AtomicU64>,
}

impl TenantLimiter {
    /// `per_minute` requests per minute for each tenant.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self::with_clock(per_minute, LimiterClock::real())
    }
}

impl<C: Clock> TenantLimiter<C> {
    /// The same on a clock of the caller's (tests move a fake one).
    pub fn with_clock(per_minute: NonZeroU32, clock: C) -> Self {
        Self {
            limiter: Arc::new(RateLimiter::dashmap_with_clock(
                Quota::per_minute(per_minute),
                clock,
            )),
            per_minute: per_minute.get(),
            checks: Arc::default(),
        }
    }

    /// The configured budget.
    pub fn requests_per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Counts one request of `tenant`: allowed, or refused with the wait until the next one is.
    pub fn check(&self, tenant: &str) -> Result<(), RateLimited> {
        // Tenants whose budget refilled are dropped now and then, so that the map stays as
        // small as the set of recently active tenants.
        if self.checks.fetch_add(1, Ordering::Relaxed) % CHECKS_BETWEEN_SWEEPS
            == CHECKS_BETWEEN_SWEEPS - 1
        {
            self.sweep();
        }
        self.limiter
            .check_key(&tenant.to_owned())
            .map_err(|not_until| RateLimited {
                tenant: tenant.to_owned(),
                per_minute: self.per_minute,
                wait: not_until.wait_time_from(self.limiter.clock().now()),
            })
    }

    /// Forgets tenants whose budget is full again.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// How many tenants the limiter keeps state for.
    pub fn tracked_tenants(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(per_minute: u32) -> (TenantLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        (TenantLimiter::with_clock(n, clock.clone()), clock)
    }

    #[test]
    fn the_request_past_the_budget_is_refused_with_the_wait() {
        let (limiter, _) = limiter(300);
        for _ in 0..300 {
            assert_eq!(limiter.check("acme"), Ok(()));
        }
        let refused = limiter.check("acme").unwrap_err();
        // One request every 200 ms comes back.
        assert_eq!(refused.wait, Duration::from_millis(200));
        assert_eq!(refused.retry_after_secs(), 1);
        assert_eq!(
            refused.to_string(),
            "rate limit of 300 requests per minute for tenant acme exceeded; retry in 1 s"
        );
    }

    #[test]
    fn the_budget_refills_over_the_minute() {
        let (limiter, clock) = limiter(2);
        assert!(limiter.check("acme").is_ok());
        assert!(limiter.check("acme").is_ok());
        let refused = limiter.check("acme").unwrap_err();
        assert_eq!(refused.wait, Duration::from_secs(30));
        assert_eq!(refused.retry_after_secs(), 30);
        clock.advance(Duration::from_millis(29_500));
        assert_eq!(limiter.check("acme").unwrap_err().retry_after_secs(), 1);
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check("acme").is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        let refused = |wait| RateLimited {
            tenant: "t".into(),
            per_minute: 7,
            wait,
        };
        assert_eq!(refused(Duration::from_millis(8_571)).retry_after_secs(), 9);
        assert_eq!(refused(Duration::from_secs(8)).retry_after_secs(), 8);
        assert_eq!(refused(Duration::ZERO).retry_after_secs(), 1);
    }

    #[test]
    fn tenants_have_budgets_of_their_own() {
        let (limiter, _) = limiter(1);
        assert!(limiter.check("acme").is_ok());
        assert!(limiter.check("acme").is_err());
        assert!(limiter.check("globex").is_ok());
    }

    #[test]
    fn tenants_with_a_full_budget_are_forgotten() {
        let (limiter, clock) = limiter(60);
        for i in 0..CHECKS_BETWEEN_SWEEPS - 1 {
            assert!(limiter.check(&format!("tenant-{i}")).is_ok());
        }
        assert_eq!(limiter.tracked_tenants(), 1023);
        // Two seconds later every budget is full again (governor keeps a tenant one emission
        // interval longer): the next sweep, at the 1024th check, keeps only the one spending.
        clock.advance(Duration::from_secs(2));
        assert!(limiter.check("acme").is_ok());
        assert!(limiter.check("acme").is_ok());
        assert_eq!(limiter.tracked_tenants(), 1);
    }
}
