//! `[[metrics]]`: the metric catalog, its kinds and units.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use bigdecimal::BigDecimal;
use serde::{Deserialize, Serialize};

use super::values::{ConfigDecimal, HumanDuration};

/// Whether a metric is summed or time-weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Summed over the period.
    Counter,
    /// Time-weighted over the period.
    Gauge,
}

/// One metric of the catalog (docs/reference.md#metric-catalog), added to
/// the built-in `compute_seconds` (counter, vCPU-hour), `egress_bytes`
/// (counter, GiB) and `storage_bytes` (gauge, GiB-month, 1 h hold), or
/// replacing the built-in of the same name. Names match
/// `^[a-z][a-z0-9_]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDefinition {
    /// A counter is summed over the period; a gauge is time-weighted.
    pub kind: MetricKind,
    /// The unit invoices bill the metric in, e.g. `GiB-month`.
    pub unit: String,
    /// The billing quantity is the raw quantity divided by this (above 0).
    pub divisor: ConfigDecimal,
    /// Gauges only: the longest one sample holds its value (above 0); unset,
    /// `1h`.
    #[serde(default)]
    pub hold: Option<HumanDuration>,
}

/// The metrics events may use: the built-in three plus those of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCatalog {
    pub(super) metrics: BTreeMap<String, MetricSpec>,
}

/// A resolved catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// Counter or gauge.
    pub kind: MetricKind,
    /// The billing unit.
    pub unit: String,
    /// Billing quantity = raw quantity / divisor.
    pub divisor: BigDecimal,
    /// For gauges, how long one sample holds at most; `None` for counters.
    pub hold: Option<Duration>,
}

/// How long a gauge sample holds when the catalog does not say.
pub const DEFAULT_GAUGE_HOLD: Duration = Duration::from_secs(3600);

impl Default for MetricCatalog {
    fn default() -> Self {
        let spec = |kind, unit: &str, divisor: &str, hold| MetricSpec {
            kind,
            unit: unit.to_string(),
            divisor: BigDecimal::from_str(divisor).expect("built-in divisor"),
            hold,
        };
        let metrics = BTreeMap::from([
            (
                "compute_seconds".to_string(),
                spec(MetricKind::Counter, "vCPU-hour", "3600", None),
            ),
            (
                "egress_bytes".to_string(),
                spec(MetricKind::Counter, "GiB", "1073741824", None),
            ),
            (
                "storage_bytes".to_string(),
                spec(
                    MetricKind::Gauge,
                    "GiB-month",
                    "1073741824",
                    Some(DEFAULT_GAUGE_HOLD),
                ),
            ),
        ]);
        MetricCatalog { metrics }
    }
}

impl MetricCatalog {
    /// Whether `metric` is in the catalog.
    pub fn contains(&self, metric: &str) -> bool {
        self.metrics.contains_key(metric)
    }

    /// The entry of `metric`.
    pub fn get(&self, metric: &str) -> Option<&MetricSpec> {
        self.metrics.get(metric)
    }

    /// All entries, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetricSpec)> {
        self.metrics
            .iter()
            .map(|(name, spec)| (name.as_str(), spec))
    }
}

/// Whether `name` is a valid metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_lowercase())
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
