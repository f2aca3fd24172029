//! `[health]`, `[reports]` and `[noisy]`: how reports are computed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::{ConfigDecimal, HumanDuration};

/// When a tenant's health is a warning or critical
/// (docs/reference.md#tenant-health).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A tenant that sent events in the previous 24 h and has been silent
    /// this long is stale.
    pub stale_after: HumanDuration,
    /// Quota use at or above this percentage is a warning.
    pub quota_warning_percent: ConfigDecimal,
    /// Quota use at or above this percentage is critical.
    pub quota_critical_percent: ConfigDecimal,
    /// Rejected events at or above this percentage of a tenant's events in
    /// 24 h are a warning.
    pub rejected_warning_percent: ConfigDecimal,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            stale_after: HumanDuration(Duration::from_secs(3600)),
            quota_warning_percent: ConfigDecimal::from_static("80"),
            quota_critical_percent: ConfigDecimal::from_static("100"),
            rejected_warning_percent: ConfigDecimal::from_static("1"),
        }
    }
}

/// How reports read the lake.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// Reports read whole days from their up-to-date rollups
    /// (`usage_hourly`); `false` reads every event raw: the same figures,
    /// more slowly.
    pub rollups: bool,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig { rollups: true }
    }
}

/// When a tenant is flagged as a noisy neighbour
/// (docs/reference.md#noisy-neighbours).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoisyConfig {
    /// The width of a bucket usage is compared in (above 0, at most `1d`).
    pub bucket: HumanDuration,
    /// How many buckets before each bucket make its baseline (at least 1;
    /// with a day of buckets, at most 5,000 buckets in all).
    pub baseline_buckets: u32,
    /// A flagged tenant has at least this share of the bucket's total.
    pub min_share: ConfigDecimal,
    /// A flagged tenant's usage has at least this z-score against its
    /// baseline.
    pub min_z: ConfigDecimal,
    /// No tenant is flagged in a bucket with fewer tenants using the
    /// metric than this.
    pub min_active_tenants: u32,
}

impl Default for NoisyConfig {
    fn default() -> Self {
        NoisyConfig {
            bucket: HumanDuration(Duration::from_secs(3600)),
            baseline_buckets: 168,
            min_share: ConfigDecimal::from_static("0.30"),
            min_z: ConfigDecimal::from_static("3.0"),
            min_active_tenants: 2,
        }
    }
}

/// The most buckets (the range's plus the baseline's) one noisy-neighbour
/// report may use: the detector holds every tenant's usage in every one of
/// them, so this bounds its memory (docs/reference.md#serving). A month in 10-minute buckets, or
/// half a year in hours, stays under it with the default baseline of 168.
pub const MAX_NOISY_BUCKETS: i64 = 5_000;

impl NoisyConfig {
    /// `[noisy]`: the bucket and baseline. Every health report flags the last
    /// day in these buckets, so that day's buckets and the baseline must fit
    /// in [`MAX_NOISY_BUCKETS`], and the bucket be at most a day.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        const DAY: Duration = Duration::from_secs(86_400);
        if self.bucket.0.is_zero() || self.bucket.0 > DAY {
            return Err(ConfigError::new(
                "noisy.bucket",
                "must be longer than 0 and at most 1d",
            ));
        }
        let day_buckets = DAY.as_micros().div_ceil(self.bucket.0.as_micros());
        let spanned = day_buckets.saturating_add(u128::from(self.baseline_buckets));
        if self.baseline_buckets == 0 || spanned > MAX_NOISY_BUCKETS as u128 {
            return Err(ConfigError::new(
                "noisy.baseline_buckets",
                format!(
                    "must be at least 1, and with the {day_buckets} buckets of a health report's \
                     last day at most {MAX_NOISY_BUCKETS} buckets in all"
                ),
            ));
        }
        Ok(())
    }
}
