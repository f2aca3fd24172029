//! Helpers shared by the crate's unit tests.

use bigdecimal::BigDecimal;
use chrono::DateTime;

/// Microseconds since the epoch of an RFC 3339 timestamp.
pub fn ts(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

/// A decimal from its text.
pub fn d(text: &str) -> BigDecimal {
    text.parse().unwrap()
}
