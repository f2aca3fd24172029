//! Report requests as the front ends receive them, checked once.
//!
//! The CLI's flags and the API's query string hold the same text: instants,
//! a bucket width, a metric. Each front end copies that text into a raw
//! request ([`RawNoisyRequest`], [`RawUsageRequest`]) and converts it with
//! `TryFrom` into the request the report runs ([`NoisyRequest`],
//! [`UsageRequest`]). The conversion parses every field, fills in the defaults
//! and checks the range and the bucket, so the two front ends cannot differ in
//! a default or a bound; a refusal is a [`RequestError`] naming the field,
//! which the CLI prints as one line (exit status 2) and the API answers as a
//! 400 with the same message.
//!
//! The defaults (docs/reference.md#http-api and
//! docs/reference.md#noisy-neighbours):
//! - noisy neighbours: the bucket is `noisy.bucket` of the configuration; `to`
//!   is the first bucket boundary at or after `now`, `from` a day's worth of
//!   whole buckets before it;
//! - a usage series: the bucket is [`DEFAULT_USAGE_BUCKET`]; `to` is the first
//!   bucket boundary at or after `now`, `from` 24 hours before it.

use allot_schemas::config::{Config, HumanDuration};
use allot_schemas::tenant::TenantId;
use allot_schemas::time::{
    EARLIEST_REPORT_MICROS, LATEST_REPORT_MICROS, MICROS_PER_DAY, parse_report_instant,
};

use crate::noisy::Keep;
use crate::usage::ceil_to_grid;

/// Most buckets one series may have, so a request cannot ask for millions.
pub const MAX_USAGE_BUCKETS: i64 = 10_000;

/// The widest bucket of a usage series or a noisy-neighbour report: a leap year.
pub const MAX_BUCKET_MICROS: i64 = 366 * MICROS_PER_DAY;

/// The bucket of a usage series when none is given.
pub const DEFAULT_USAGE_BUCKET: &str = "1h";

/// How far back a report reaches when `from` is not given: a day.
const DEFAULT_WINDOW_MICROS: i64 = MICROS_PER_DAY;

/// A report request that cannot be run, and the field that makes it so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RequestError {
    /// The field as both front ends name it (`from`, `to`, `bucket`).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl RequestError {
    fn new(field: &'static str, problem: impl Into<String>) -> RequestError {
        RequestError {
            field,
            problem: problem.into(),
        }
    }
}

/// A noisy-neighbour request as given: `allot noisy`'s flags or the query
/// string of `GET /v1/noisy-neighbors`.
#[derive(Debug, Clone)]
pub struct RawNoisyRequest<'a> {
    /// Start of the first bucket (RFC 3339, or a date).
    pub from: Option<String>,
    /// End of the last bucket, exclusive.
    pub to: Option<String>,
    /// One counter metric, or every counter metric of the catalog.
    pub metric: Option<String>,
    /// Bucket width such as `1h`.
    pub bucket: Option<String>,
    /// Every tenant-bucket row, not only the flagged ones.
    pub all: bool,
    /// The instant a missing `to` is counted from: the CLI's clock, the
    /// instant the API's served lake was read at.
    pub now: i64,
    /// The configuration, whose `noisy.bucket` is the default bucket.
    pub config: &'a Config,
}

/// What `noisy` examines: a checked range on the grid of its bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoisyRequest {
    from: i64,
    to: i64,
    metric: Option<String>,
    bucket_micros: i64,
    keep: Keep,
}

impl NoisyRequest {
    /// Start of the first bucket, UTC microseconds.
    pub fn from(&self) -> i64 {
        self.from
    }

    /// End of the last bucket (exclusive).
    pub fn to(&self) -> i64 {
        self.to
    }

    /// One counter metric, or every counter metric of the catalog.
    pub fn metric(&self) -> Option<&str> {
        self.metric.as_deref()
    }

    /// Bucket width in microseconds.
    pub fn bucket_micros(&self) -> i64 {
        self.bucket_micros
    }

    /// Which rows to return: only the flagged ones spare computing the shown
    /// values (σ, z) of every other tenant and bucket.
    pub fn keep(&self) -> Keep {
        self.keep
    }
}

impl TryFrom<RawNoisyRequest<'_>> for NoisyRequest {
    type Error = RequestError;

    fn try_from(raw: RawNoisyRequest<'_>) -> Result<NoisyRequest, RequestError> {
        let bucket_micros = match raw.bucket.as_deref() {
            Some(text) => bucket(text)?,
            None => i64::try_from(raw.config.noisy.bucket.0.as_micros()).unwrap_or(i64::MAX),
        };
        let (from, to) = window(
            raw.from.as_deref(),
            raw.to.as_deref(),
            raw.now,
            bucket_micros,
            ceil_to_grid(DEFAULT_WINDOW_MICROS, bucket_micros),
        )?;
        Ok(NoisyRequest {
            from,
            to,
            metric: raw.metric,
            bucket_micros,
            keep: if raw.all { Keep::All } else { Keep::Flagged },
        })
    }
}

/// A usage-series request as given: the query string of
/// `GET /v1/tenants/{id}/usage` with its tenant.
#[derive(Debug, Clone)]
pub struct RawUsageRequest {
    /// The tenant, authorized by the caller.
    pub tenant: TenantId,
    /// Start of the first bucket (RFC 3339, or a date).
    pub from: Option<String>,
    /// End of the last bucket, exclusive.
    pub to: Option<String>,
    /// Bucket width such as `1h` (default [`DEFAULT_USAGE_BUCKET`]).
    pub bucket: Option<String>,
    /// One metric, or every metric of the catalog.
    pub metric: Option<String>,
    /// The instant a missing `to` is counted from.
    pub now: i64,
}

/// What a usage series covers: a checked range of at most
/// [`MAX_USAGE_BUCKETS`] buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRequest {
    tenant: TenantId,
    from: i64,
    to: i64,
    bucket: String,
    bucket_micros: i64,
    metric: Option<String>,
}

impl UsageRequest {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Start of the first bucket, UTC microseconds.
    pub fn from(&self) -> i64 {
        self.from
    }

    /// End of the last bucket (exclusive).
    pub fn to(&self) -> i64 {
        self.to
    }

    /// The bucket width as given (or the default), e.g. `1h`.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Bucket width in microseconds.
    pub fn bucket_micros(&self) -> i64 {
        self.bucket_micros
    }

    /// One metric, or every metric of the catalog.
    pub fn metric(&self) -> Option<&str> {
        self.metric.as_deref()
    }
}

impl TryFrom<RawUsageRequest> for UsageRequest {
    type Error = RequestError;

    fn try_from(raw: RawUsageRequest) -> Result<UsageRequest, RequestError> {
        let text = raw
            .bucket
            .unwrap_or_else(|| DEFAULT_USAGE_BUCKET.to_string());
        let bucket_micros = bucket(&text)?;
        let (from, to) = window(
            raw.from.as_deref(),
            raw.to.as_deref(),
            raw.now,
            bucket_micros,
            DEFAULT_WINDOW_MICROS,
        )?;
        if (to - from) / bucket_micros >= MAX_USAGE_BUCKETS {
            return Err(RequestError::new(
                "bucket",
                format!("at most {MAX_USAGE_BUCKETS} buckets per series; use a wider bucket"),
            ));
        }
        Ok(UsageRequest {
            tenant: raw.tenant,
            from,
            to,
            bucket: text,
            bucket_micros,
            metric: raw.metric,
        })
    }
}

/// A bucket width such as `1h` or `15m`, in microseconds: longer than 0 and
/// at most [`MAX_BUCKET_MICROS`].
fn bucket(text: &str) -> Result<i64, RequestError> {
    let duration: HumanDuration = text
        .parse()
        .map_err(|e| RequestError::new("bucket", format!("{text:?}: {e}")))?;
    match i64::try_from(duration.0.as_micros()) {
        Ok(micros) if (1..=MAX_BUCKET_MICROS).contains(&micros) => Ok(micros),
        _ => Err(RequestError::new(
            "bucket",
            "must be longer than 0 and at most 366d",
        )),
    }
}

fn instant(field: &'static str, text: Option<&str>) -> Result<Option<i64>, RequestError> {
    text.map(|t| parse_report_instant(t).map_err(|problem| RequestError::new(field, problem)))
        .transpose()
}

/// The range `[from, to)` asked for: a missing `to` is the bucket boundary at
/// or after `now`, a missing `from` `reach` before `to`. Both ends, given or
/// derived, lie within the instants reports support, so no bucket, however
/// wide, reaches past what the engine can represent.
fn window(
    from: Option<&str>,
    to: Option<&str>,
    now: i64,
    bucket_micros: i64,
    reach: i64,
) -> Result<(i64, i64), RequestError> {
    let to = instant("to", to)?.unwrap_or_else(|| ceil_to_grid(now, bucket_micros));
    let from = instant("from", from)?.unwrap_or_else(|| to.saturating_sub(reach));
    for (field, at) in [("from", from), ("to", to)] {
        if !(EARLIEST_REPORT_MICROS..=LATEST_REPORT_MICROS).contains(&at) {
            return Err(RequestError::new(
                field,
                "falls outside the supported range, 1970-01-01 to 2261-12-31",
            ));
        }
    }
    if to <= from {
        return Err(RequestError::new("to", "must be after from"));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ts;

    fn config() -> Config {
        Config::from_toml_str("", "test.toml", std::iter::empty()).unwrap()
    }

    fn noisy(config: &Config) -> RawNoisyRequest<'_> {
        RawNoisyRequest {
            from: None,
            to: None,
            metric: None,
            bucket: None,
            all: false,
            now: ts("2026-03-15T12:30:00Z"),
            config,
        }
    }

    fn usage() -> RawUsageRequest {
        RawUsageRequest {
            tenant: "acme".parse().unwrap(),
            from: None,
            to: None,
            bucket: None,
            metric: None,
            now: ts("2026-03-15T12:30:00Z"),
        }
    }

    #[test]
    fn noisy_defaults_to_the_configured_bucket_and_the_last_day() {
        let config = config();
        let request = NoisyRequest::try_from(noisy(&config)).unwrap();
        assert_eq!(request.bucket_micros(), 3_600_000_000);
        assert_eq!(request.to(), ts("2026-03-15T13:00:00Z"));
        assert_eq!(request.from(), ts("2026-03-14T13:00:00Z"));
        assert_eq!(request.keep(), Keep::Flagged);
        let configured = Config::from_toml_str(
            "[noisy]\nbucket = \"15m\"\n",
            "test.toml",
            std::iter::empty(),
        )
        .unwrap();
        let request = NoisyRequest::try_from(noisy(&configured)).unwrap();
        assert_eq!(request.bucket_micros(), 900_000_000);
        assert_eq!(request.to(), ts("2026-03-15T12:30:00Z"));
    }

    #[test]
    fn usage_defaults_to_an_hour_and_the_last_24_hours() {
        let request = UsageRequest::try_from(usage()).unwrap();
        assert_eq!(request.bucket(), DEFAULT_USAGE_BUCKET);
        assert_eq!(request.bucket_micros(), 3_600_000_000);
        assert_eq!(request.to(), ts("2026-03-15T13:00:00Z"));
        assert_eq!(request.from(), ts("2026-03-14T13:00:00Z"));
    }

    #[test]
    fn refusals_name_the_field() {
        let config = config();
        let refused = |raw: RawNoisyRequest<'_>| NoisyRequest::try_from(raw).unwrap_err();
        let error = refused(RawNoisyRequest {
            from: Some("yesterday".to_string()),
            ..noisy(&config)
        });
        assert_eq!(error.field, "from");
        assert!(error.to_string().starts_with("from: "), "{error}");
        for wide in ["0s", "367d", "99999999999d", "soon"] {
            let error = refused(RawNoisyRequest {
                bucket: Some(wide.to_string()),
                ..noisy(&config)
            });
            assert_eq!(error.field, "bucket", "{wide}");
        }
        let error = refused(RawNoisyRequest {
            from: Some("2026-03-02".to_string()),
            to: Some("2026-03-01".to_string()),
            ..noisy(&config)
        });
        assert_eq!(error.to_string(), "to: must be after from");
        // A derived end outside the supported range is refused, not run.
        let error = refused(RawNoisyRequest {
            bucket: Some("366d".to_string()),
            to: Some("1970-01-03".to_string()),
            ..noisy(&config)
        });
        assert_eq!(error.field, "from");
        let error = UsageRequest::try_from(RawUsageRequest {
            bucket: Some("1s".to_string()),
            ..usage()
        })
        .unwrap_err();
        assert_eq!(error.field, "bucket");
        assert!(error.problem.contains("10000 buckets"), "{error}");
    }
}
