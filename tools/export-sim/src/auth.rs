//! Logins, access tokens and refresh tokens of the simulated lender.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::rng::SplitMix64;

/// Mixed into the seed for the token generator, so tokens do not replay the rows' randomness.
const TOKENS_STREAM: u64 = 0x746F_6B65_6E73_2121;

/// What a bearer token turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

struct Issued {
    at: Instant,
    generation: u64,
}

/// Tokens issued so far (never forgotten, so an old token answers "expired", not "invalid").
pub(crate) struct Sessions {
    rng: SplitMix64,
    ttl: Duration,
    access: HashMap<String, Issued>,
    refresh: HashSet<String>,
    next_generation: u64,
    /// Tokens of an earlier generation are expired ([`Sessions::expire_all`]).
    expired_below: u64,
}

impl Sessions {
    pub(crate) fn new(seed: u64, ttl: Duration) -> Self {
        Self {
            rng: SplitMix64::new(seed ^ TOKENS_STREAM),
            ttl,
            access: HashMap::new(),
            refresh: HashSet::new(),
            next_generation: 0,
            expired_below: 0,
        }
    }

    /// A new access token and refresh token.
    pub(crate) fn login(&mut self, now: Instant) -> (String, String) {
        let refresh = format!("rt_{}", self.secret());
        self.refresh.insert(refresh.clone());
        (self.issue(now), refresh)
    }

    /// A new access token for a known refresh token.
    pub(crate) fn refresh(&mut self, refresh_token: &str, now: Instant) -> Option<String> {
        self.refresh
            .contains(refresh_token)
            .then(|| self.issue(now))
    }

    pub(crate) fn check(&self, token: &str, now: Instant) -> TokenCheck {
        match self.access.get(token) {
            None => TokenCheck::Unknown,
            Some(issued)
                if issued.generation < self.expired_below
                    || now.saturating_duration_since(issued.at) >= self.ttl =>
            {
                TokenCheck::Expired
            }
            Some(_) => TokenCheck::Valid,
        }
    }

    /// Every access token issued so far is expired; refresh tokens still work.
    pub(crate) fn expire_all(&mut self) {
        self.expired_below = self.next_generation;
    }

    fn issue(&mut self, now: Instant) -> String {
        let token = format!("at_{}", self.secret());
        let generation = self.next_generation;
        self.next_generation += 1;
        self.access.insert(
            token.clone(),
            Issued {
                at: now,
                generation,
            },
        );
        token
    }

    fn secret(&mut self) -> String {
        format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64())
    }
}
