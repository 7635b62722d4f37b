//! Limits on what anyone can make the proxy do before it knows who they are: a token bucket
//! per client address for TokenReviews of unknown tokens ([`RateLimiter`]), and a cap on the
//! connections open at once that have not sent an authenticated request
//! ([`UnauthenticatedConnections`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Clients tracked at most; beyond that (once idle ones are forgotten) new clients share one
/// bucket, so the map cannot grow without bound.
const MAX_CLIENTS: usize = 65_536;

/// Who a bucket is for: an IPv4 address, or an IPv6 /64 (one host usually holds a whole
/// /64, so single IPv6 addresses would give one attacker 2^64 buckets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    V6Prefix(u64),
    /// Everyone beyond [`MAX_CLIENTS`].
    Overflow,
}

impl Client {
    fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.into()),
                None => Self::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per client: `burst` at once, refilled at `rate` per second. A rate of
/// zero turns the limit off.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<Client, Bucket>>,
}

impl RateLimiter {
    /// `rate` per second per client, `burst` (at least one) at once; `rate` 0: unlimited.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate: rate.max(0.0),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `client`'s bucket, or says how long until one is there.
    pub fn take(&self, client: IpAddr) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        let mut key = Client::of(client);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_CLIENTS {
            // Full buckets are as good as none: forget them.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| refilled(b, now, rate, burst) < burst);
            if buckets.len() >= MAX_CLIENTS {
                key = Client::Overflow;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = refilled(bucket, now, self.rate, self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

fn refilled(bucket: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

/// Whole seconds for `Retry-After`: `wait` rounded up, at least one.
pub fn retry_after_seconds(wait: Duration) -> u32 {
    u32::try_from(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The connections open at once that have not yet sent an authenticated request, at most
/// `--max-unauthenticated-connections`: idle ones, ones trickling a request head or a TLS
/// handshake, ones whose requests carry no credential the proxy knows. One atomic counter
/// for every serving thread; a connection is counted from its accept until its first
/// authenticated request or its close, whichever comes first.
pub struct UnauthenticatedConnections {
    open: AtomicUsize,
    max: usize,
}

impl UnauthenticatedConnections {
    /// Room for `max` (at least one) unauthenticated connections at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max: max.max(1),
        })
    }

    /// A place for a newly accepted connection, or None when all are taken (the connection
    /// is then closed unread).
    pub fn admit(self: &Arc<Self>) -> Option<UnauthenticatedSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        Some(UnauthenticatedSlot(Arc::new(Held {
            connections: self.clone(),
            held: AtomicBool::new(true),
        })))
    }

    /// How many places are taken.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One connection's place among the [`UnauthenticatedConnections`]; clones share it. Given
/// back by [`Self::release`] (its first authenticated request) or when the last clone is
/// dropped (its close), once.
#[derive(Clone)]
pub struct UnauthenticatedSlot(Arc<Held>);

struct Held {
    connections: Arc<UnauthenticatedConnections>,
    held: AtomicBool,
}

impl Held {
    fn release(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.connections.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

impl UnauthenticatedSlot {
    /// Whether the connection still counts as unauthenticated.
    pub fn is_held(&self) -> bool {
        self.0.held.load(Ordering::Acquire)
    }

    /// Gives the place back: the connection has authenticated (or ended). Only the first call
    /// counts.
    pub fn release(&self) {
        self.0.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_connections_are_capped_until_released_or_closed() {
        let connections = UnauthenticatedConnections::new(2);
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        assert!(connections.admit().is_none());
        // Authenticating gives the place back, once however often it is said.
        first.release();
        first.clone().release();
        assert!(!first.is_held());
        assert_eq!(connections.open(), 1);
        let third = connections.admit().unwrap();
        assert!(connections.admit().is_none());
        // Closing does too: the last clone dropped.
        let copy = second.clone();
        drop(second);
        assert!(connections.admit().is_none());
        drop(copy);
        assert_eq!(connections.open(), 1);
        assert!(connections.admit().is_some());
        drop(first);
        drop(third);
        assert_eq!(connections.open(), 0);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_gets_its_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 20);
        for _ in 0..20 {
            limiter.take(ip("198.51.100.7")).unwrap();
        }
        let wait = limiter.take(ip("198.51.100.7")).unwrap_err();
        assert_eq!(retry_after_seconds(wait), 1);
        // Other clients have buckets of their own.
        limiter.take(ip("198.51.100.8")).unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        limiter.take(ip("198.51.100.7")).unwrap();
        assert!(limiter.take(ip("198.51.100.7")).is_err());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let limiter = RateLimiter::new(1.0, 1);
        limiter.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(limiter.take(ip("2001:db8:1:2::ffff")).is_err());
        limiter.take(ip("2001:db8:1:3::1")).unwrap();
        // IPv4-mapped addresses are the IPv4 client.
        limiter.take(ip("192.0.2.1")).unwrap();
        assert!(limiter.take(ip("::ffff:192.0.2.1")).is_err());
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let limiter = RateLimiter::new(0.0, 1);
        for _ in 0..100 {
            limiter.take(ip("192.0.2.1")).unwrap();
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
