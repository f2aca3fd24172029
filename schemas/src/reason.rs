//! Stable reason codes for rejected events (docs/reference.md#rejected-events).
//!
//! A reason code is part of the public contract: it is written to the
//! `rejected_events` table, to the `allot-error-code` header of dead letters and to
//! the collector's metrics. Codes are never renamed; new ones may be added.

use std::fmt;

/// Why an event was set aside instead of landing in `usage_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    /// The bytes are not valid UTF-8.
    InvalidUtf8,
    /// The text is not a JSON object (syntax error, other JSON type, duplicate key).
    InvalidJson,
    /// The event is larger than the configured maximum event size.
    EventTooLarge,
    /// A required field is absent or `null`.
    MissingField,
    /// A field has the wrong JSON type.
    InvalidType,
    /// `event_id` is empty or holds control characters.
    InvalidEventId,
    /// `tenant_id` does not match `^[a-z0-9][a-z0-9_-]{0,62}$`.
    InvalidTenantId,
    /// `ts` is not RFC 3339 with an offset.
    InvalidTimestamp,
    /// `ts` is further ahead of the collector's clock than `max_future_skew`.
    FutureTimestamp,
    /// `metric` is not in the metric catalog.
    UnknownMetric,
    /// `value` is negative or 10^20 or more.
    InvalidValue,
    /// A string field is longer than its limit.
    FieldTooLong,
    /// `labels` has more than 32 entries.
    TooManyLabels,
    /// `schema_version` is not one this build understands.
    UnsupportedSchemaVersion,
    /// A CloudEvents envelope with a wrong `specversion` or a `data` that is not an object.
    InvalidCloudEvent,
}

impl ReasonCode {
    /// Every reason code, in a stable order.
    pub const ALL: [ReasonCode; 15] = [
        ReasonCode::InvalidUtf8,
        ReasonCode::InvalidJson,
        ReasonCode::EventTooLarge,
        ReasonCode::MissingField,
        ReasonCode::InvalidType,
        ReasonCode::InvalidEventId,
        ReasonCode::InvalidTenantId,
        ReasonCode::InvalidTimestamp,
        ReasonCode::FutureTimestamp,
        ReasonCode::UnknownMetric,
        ReasonCode::InvalidValue,
        ReasonCode::FieldTooLong,
        ReasonCode::TooManyLabels,
        ReasonCode::UnsupportedSchemaVersion,
        ReasonCode::InvalidCloudEvent,
    ];

    /// The snake_case word stored in the lake and in dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::InvalidUtf8 => "invalid_utf8",
            ReasonCode::InvalidJson => "invalid_json",
            ReasonCode::EventTooLarge => "event_too_large",
            ReasonCode::MissingField => "missing_field",
            ReasonCode::InvalidType => "invalid_type",
            ReasonCode::InvalidEventId => "invalid_event_id",
            ReasonCode::InvalidTenantId => "invalid_tenant_id",
            ReasonCode::InvalidTimestamp => "invalid_timestamp",
            ReasonCode::FutureTimestamp => "future_timestamp",
            ReasonCode::UnknownMetric => "unknown_metric",
            ReasonCode::InvalidValue => "invalid_value",
            ReasonCode::FieldTooLong => "field_too_long",
            ReasonCode::TooManyLabels => "too_many_labels",
            ReasonCode::UnsupportedSchemaVersion => "unsupported_schema_version",
            ReasonCode::InvalidCloudEvent => "invalid_cloudevent",
        }
    }

    /// Looks a code up by its snake_case word.
    pub fn from_code(code: &str) -> Option<ReasonCode> {
        ReasonCode::ALL.into_iter().find(|r| r.as_str() == code)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_code(code.as_str()), Some(code));
            assert!(seen.insert(code.as_str()));
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
    }
}
