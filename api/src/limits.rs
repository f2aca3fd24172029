//! Per-caller limits (docs/reference.md#security-model): a token bucket of requests and a number of
//! concurrent SQL queries, both keyed by the verified tenant claim (or the
//! subject of a finance or admin token), never by address, so one tenant cannot
//! starve the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Buckets beyond which idle, full ones are dropped.
const MAX_IDLE_BUCKETS: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per key: `rate` requests per second, bursts of `rate`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_second` requests per second per key (at least 1).
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `key`'s bucket, or says in how many whole seconds
    /// one will be there.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > MAX_IDLE_BUCKETS {
            let rate = self.rate;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < rate
            });
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.rate,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.rate);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            // Whole seconds, at least one (Retry-After has no fractions).
            Err((wait.ceil() as u64).max(1))
        }
    }
}

/// A semaphore of SQL slots per key.
#[derive(Debug)]
pub struct SqlSlots {
    per_key: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl SqlSlots {
    /// `per_key` concurrent queries per key (at least 1).
    pub fn new(per_key: u32) -> SqlSlots {
        SqlSlots {
            per_key: usize::try_from(per_key.max(1)).unwrap_or(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `key`, held until the permit is dropped, or `None` when all
    /// of its slots are taken.
    pub fn try_acquire(&self, key: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            slots
                .entry(key.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_key)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_empties_refills_and_is_per_key() {
        let limiter = RateLimiter::new(2);
        let start = Instant::now();
        assert!(limiter.check_at("a", start).is_ok());
        assert!(limiter.check_at("a", start).is_ok());
        assert_eq!(limiter.check_at("a", start), Err(1));
        assert!(limiter.check_at("b", start).is_ok());
        assert!(
            limiter
                .check_at("a", start + Duration::from_millis(500))
                .is_ok()
        );
    }

    #[test]
    fn sql_slots_are_per_key_and_come_back() {
        let slots = SqlSlots::new(1);
        let held = slots.try_acquire("a").unwrap();
        assert!(slots.try_acquire("a").is_none());
        assert!(slots.try_acquire("b").is_some());
        drop(held);
        assert!(slots.try_acquire("a").is_some());
    }
}
