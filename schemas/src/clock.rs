//! The notion of "now" of the collectors and the server, behind one trait so tests
//! and demos can fix it.
//!
//! Ingest stamps `ingested_at` and checks `future_timestamp` with it; the server
//! decides token expiry, the default instant of health reports and the default
//! window of usage and noisy-neighbour queries.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::time::MICROS_PER_SECOND;

/// A source of the current instant.
pub trait Clock: Send + Sync + 'static {
    /// Now, in UTC microseconds since the Unix epoch.
    fn now_micros(&self) -> i64;

    /// Now, in Unix seconds.
    fn now_secs(&self) -> i64 {
        self.now_micros().div_euclid(MICROS_PER_SECOND)
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        chrono::Utc::now().timestamp_micros()
    }
}

/// A clock that stays where it is set.
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock at `micros`.
    pub fn new(micros: i64) -> FixedClock {
        FixedClock(AtomicI64::new(micros))
    }

    /// Moves the clock to `micros`.
    pub fn set(&self, micros: i64) {
        self.0.store(micros, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
