//! Where and as whom a client talks to the API, how it retries, and the secret it must never
//! log.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// A value that must never reach a log: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How failed requests are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per page, the first included (at least 1).
    pub max_attempts: u32,
    /// The first backoff; each further one doubles, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a server asking for more ends the retries.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, 250 ms doubling to 30 s, `Retry-After` up to 10 minutes.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry): a random point in the upper
    /// half of `base · 2^retry` (capped at `max_backoff`), and never less than `retry_after`.
    pub fn backoff(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        jitter: &mut Jitter,
    ) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max_backoff);
        let half = exp / 2;
        let jittered = half + half.mul_f64(jitter.unit());
        retry_after.map_or(jittered, |after| after.max(jittered))
    }
}

/// A small generator for backoff jitter (xorshift64*), seeded per client so that pullers
/// restarted together do not retry in step.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Seeded from the process's hash keys (random per process).
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x6a69_7474_6572);
        Self::new(hasher.finish())
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where and as whom the client talks to the API.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://api.example.com` (no trailing slash needed).
    pub host: String,
    /// The lender's slug in the auth paths: `/admin/auth/{lender}/login`.
    pub lender: String,
    /// The `lenderPublicId` this client expects login to answer; `None` takes whatever it says.
    pub lender_public_id: Option<String>,
    pub email: String,
    pub password: Secret,
    /// Longest wait for one answer, body included.
    pub request_timeout: Duration,
    /// Requests per second to this lender's API, all datasets together (at least 1).
    pub requests_per_second: NonZeroU32,
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// A configuration with the defaults: 30 s per request, 10 requests per second, the default
    /// [`RetryPolicy`].
    pub fn new(host: &str, lender: &str, email: &str, password: Secret) -> Self {
        Self {
            host: host.trim_end_matches('/').to_owned(),
            lender: lender.to_owned(),
            lender_public_id: None,
            email: email.to_owned(),
            password,
            request_timeout: Duration::from_secs(30),
            requests_per_second: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            retry: RetryPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_cap_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 8,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
        };
        let mut jitter = Jitter::new(7);
        for retry in 0..12 {
            let exp = Duration::from_millis(100)
                .saturating_mul(1 << retry.min(20))
                .min(Duration::from_secs(1));
            let wait = policy.backoff(retry, None, &mut jitter);
            assert!(
                wait >= exp / 2 && wait <= exp,
                "retry {retry}: {wait:?} within {exp:?}"
            );
        }
        let wait = policy.backoff(0, Some(Duration::from_secs(5)), &mut jitter);
        assert_eq!(wait, Duration::from_secs(5));
    }

    #[test]
    fn secrets_do_not_print() {
        let config = ClientConfig::new("http://h/", "acme", "a@b.c", Secret::new("hunter2"));
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"));
        assert_eq!(config.host, "http://h");
    }
}
