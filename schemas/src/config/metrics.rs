//! `[[metrics]]`: the metric catalog, its kinds and units.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use bigdecimal::BigDecimal;
use serde::{Deserialize, Serialize};

use super::dimensions::{Dimension, MatchClasses};
use super::values::{ConfigDecimal, HumanDuration};

/// How a metric's events make its figure for a period
/// (docs/reference.md#other-meter-kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Summed over the period.
    Counter,
    /// Time-weighted over the period.
    Gauge,
    /// The period's largest single value.
    Max,
    /// How many distinct values the metric's `field` takes over the period.
    UniqueCount,
    /// The value of the period's last event (by `ts`, then `event_id`).
    Latest,
}

impl MetricKind {
    /// The kind as `allot.toml` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Max => "max",
            MetricKind::UniqueCount => "unique_count",
            MetricKind::Latest => "latest",
        }
    }

    /// Whether the kind is one of the meters of [`crate::meter`] (`max`,
    /// `unique_count`, `latest`), whose figure is not a sum.
    pub fn is_meter(self) -> bool {
        matches!(
            self,
            MetricKind::Max | MetricKind::UniqueCount | MetricKind::Latest
        )
    }
}

/// The event field a `unique_count` metric counts the distinct values of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CountedField {
    /// The event's `resource`.
    Resource,
    /// The event's `region`, `service` or a label.
    Dimension(Dimension),
}

impl CountedField {
    /// The field a `field` key names: `resource`, `region`, `service` or
    /// `labels.KEY` with a non-empty `KEY`; `None` for anything else.
    pub fn parse(text: &str) -> Option<CountedField> {
        match text {
            "resource" => Some(CountedField::Resource),
            other => Dimension::parse(other).map(CountedField::Dimension),
        }
    }
}

impl std::fmt::Display for CountedField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CountedField::Resource => f.write_str("resource"),
            CountedField::Dimension(dimension) => dimension.fmt(f),
        }
    }
}

/// How many distinct values one `unique_count` metric may count for one
/// tenant and month when its `max_distinct` is unset (docs/decisions/0033-meter-kinds.md).
pub const DEFAULT_MAX_DISTINCT: u64 = 100_000;

/// The highest `max_distinct` the configuration accepts.
pub const MAX_DISTINCT_LIMIT: u64 = 10_000_000;

/// One metric of the catalog (docs/reference.md#metric-catalog), added to
/// the built-in `compute_seconds` (counter, vCPU-hour), `egress_bytes`
/// (counter, GiB) and `storage_bytes` (gauge, GiB-month, 1 h hold), or
/// replacing the built-in of the same name. Names match
/// `^[a-z][a-z0-9_]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDefinition {
    /// A counter is summed over the period; a gauge is time-weighted; `max`
    /// is the period's largest value, `latest` its last value (by `ts`, then
    /// `event_id`) and `unique_count` the number of distinct values of `field`.
    pub kind: MetricKind,
    /// The unit invoices bill the metric in, e.g. `GiB-month`.
    pub unit: String,
    /// The billing quantity is the raw quantity divided by this (above 0).
    pub divisor: ConfigDecimal,
    /// Gauges only: the longest one sample holds its value (above 0); unset,
    /// `1h`.
    #[serde(default)]
    pub hold: Option<HumanDuration>,
    /// `unique_count` only, and required there: the event field whose
    /// distinct values are counted, `resource`, `region`, `service` or
    /// `labels.KEY`.
    #[serde(default)]
    pub field: Option<String>,
    /// `unique_count` only: the most distinct values one tenant's month may
    /// count (1 to 10000000); a month with more is refused, never estimated.
    /// Unset, 100000.
    #[serde(default)]
    pub max_distinct: Option<u64>,
}

/// The metrics events may use: the built-in three plus those of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCatalog {
    pub(super) metrics: BTreeMap<String, MetricSpec>,
    /// Per counter whose rates (global or a tenant's) match on dimensions, the
    /// classes of its events those matches tell apart: the rollups keep the
    /// counter's daily sums per class (docs/reference.md#dimensional-rates).
    pub(super) match_classes: BTreeMap<String, MatchClasses>,
}

/// A resolved catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// How its events make its figure.
    pub kind: MetricKind,
    /// The billing unit.
    pub unit: String,
    /// Billing quantity = raw quantity / divisor.
    pub divisor: BigDecimal,
    /// For gauges, how long one sample holds at most; `None` for counters.
    pub hold: Option<Duration>,
    /// For `unique_count`, the field counted and the most distinct values one
    /// tenant's month may have; `None` for the other kinds.
    pub distinct: Option<DistinctField>,
}

/// What a `unique_count` metric counts, and its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinctField {
    /// The field whose distinct values are counted.
    pub field: CountedField,
    /// The most distinct values one (tenant, month) may have.
    pub max_distinct: u64,
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
            distinct: None,
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
        MetricCatalog {
            metrics,
            match_classes: BTreeMap::new(),
        }
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

    /// The classes the rates of counter `metric` tell apart, when they match
    /// on dimensions.
    pub fn match_classes(&self, metric: &str) -> Option<&MatchClasses> {
        self.match_classes.get(metric)
    }

    /// Every counter whose rates match on dimensions, with its classes.
    pub fn dimensional_counters(&self) -> &BTreeMap<String, MatchClasses> {
        &self.match_classes
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
