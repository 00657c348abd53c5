//! Slowing down a peer that fails to authenticate again and again: a few failures are free,
//! then each request of that peer waits, twice as long per further failure, up to a cap. A
//! quiet window forgets the peer (a success does not: a peer could mix in calls that need no
//! credential). Memory is bounded: past `max_peers` the
//! quiet peers are forgotten, and if all are busy, all of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How failures turn into waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures within `window` before any wait.
    pub free: u32,
    /// A peer without failures for this long starts again.
    pub window: Duration,
    /// The wait after the first failure past `free`; doubles with each further one.
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// Peers remembered at most.
    pub max_peers: usize,
}

impl Default for ThrottleSettings {
    /// 5 free failures a minute, then 100 ms doubling to 5 s; 100,000 peers.
    fn default() -> Self {
        Self {
            free: 5,
            window: Duration::from_secs(60),
            first_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(5),
            max_peers: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
}

/// Failures per peer address.
#[derive(Debug, Default)]
pub struct Throttle {
    settings: ThrottleSettings,
    peers: Mutex<HashMap<IpAddr, Strikes>>,
    /// How many peers `peers` holds, read without the lock.
    remembered: AtomicUsize,
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Self {
        Self {
            settings,
            peers: Mutex::default(),
            remembered: AtomicUsize::new(0),
        }
    }

    /// How long a request of `peer` waits before it is handled.
    pub fn wait(&self, peer: IpAddr, now: Instant) -> Duration {
        // Every request asks: while no peer failed lately, the lock is not taken.
        if self.remembered.load(Ordering::Relaxed) == 0 {
            return Duration::ZERO;
        }
        let s = &self.settings;
        let mut peers = self.lock();
        let Some(strikes) = peers.get(&peer).copied() else {
            return Duration::ZERO;
        };
        if now.duration_since(strikes.last) > s.window {
            // Quiet long enough: forgotten.
            peers.remove(&peer);
            self.remembered.store(peers.len(), Ordering::Relaxed);
            return Duration::ZERO;
        }
        if strikes.failures <= s.free {
            return Duration::ZERO;
        }
        let doublings = (strikes.failures - s.free - 1).min(16);
        s.first_wait.saturating_mul(1 << doublings).min(s.max_wait)
    }

    /// `peer` failed to authenticate at `now`.
    pub fn failed(&self, peer: IpAddr, now: Instant) {
        let s = &self.settings;
        let mut peers = self.lock();
        if peers.len() >= s.max_peers && !peers.contains_key(&peer) {
            peers.retain(|_, strikes| now.duration_since(strikes.last) <= s.window);
            if peers.len() >= s.max_peers {
                peers.clear();
            }
        }
        let strikes = peers.entry(peer).or_insert(Strikes {
            failures: 0,
            last: now,
        });
        if now.duration_since(strikes.last) > s.window {
            strikes.failures = 0;
        }
        strikes.failures = strikes.failures.saturating_add(1);
        strikes.last = now;
        self.remembered.store(peers.len(), Ordering::Relaxed);
    }

    /// Peers remembered now.
    pub fn peers(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Strikes>> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
