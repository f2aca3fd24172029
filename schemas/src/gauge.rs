//! Gauge weighting (docs/reference.md#gauge-quantity): a gauge sample holds its value until
//! the next sample of its series or for the metric's `hold`, whichever ends first, and a
//! gauge's quantity over a range is the time-weighted sum of its samples there.
//!
//! Invoices, health and the hourly rollups all weigh gauges here, so a rollup's
//! pre-weighted sum is the same figure an invoice computes from raw samples.

use std::collections::BTreeMap;

use bigdecimal::{BigDecimal, Zero};

use crate::config::{DEFAULT_GAUGE_HOLD, MetricSpec};

/// One gauge reading.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GaugeSample {
    /// When it was taken, UTC microseconds.
    pub ts_micros: i64,
    /// The raw value (e.g. bytes).
    pub value: BigDecimal,
}

/// The samples of one gauge series `(tenant, metric, resource)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaugeSeries {
    /// The metric.
    pub metric: String,
    /// The resource keying the series (`None` when events carry none).
    pub resource: Option<String>,
    /// The samples in any order: those in the billed range, plus those from up to
    /// one `hold` before it (they carry in).
    pub samples: Vec<GaugeSample>,
    /// Parts of the weighted sum already computed from samples not listed (the
    /// rollups of whole days); empty when every sample is listed.
    pub held: Vec<HeldSum>,
}

/// The time-weighted sum of samples of one series inside `[from, to)`, each held
/// until the next sample, which is also inside (so nothing crosses the bounds).
/// The last sample of the range is listed as a sample instead, because how long
/// it holds depends on the next range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSum {
    /// Start of the range, UTC microseconds.
    pub from: i64,
    /// End of the range (exclusive).
    pub to: i64,
    /// Σ value × microseconds held.
    pub weighted: BigDecimal,
}

/// Σ value × held microseconds of the series of gauge `metric` within `[from, to)`
/// (raw units × µs): divided by the window's length it is the average level.
pub fn gauge_weighted_sum(
    spec: &MetricSpec,
    metric: &str,
    gauges: &[GaugeSeries],
    from: i64,
    to: i64,
) -> BigDecimal {
    let hold =
        i64::try_from(spec.hold.unwrap_or(DEFAULT_GAUGE_HOLD).as_micros()).unwrap_or(i64::MAX);
    let mut by_resource: BTreeMap<Option<&str>, ResourceGauge> = BTreeMap::new();
    for series in gauges.iter().filter(|s| s.metric == metric) {
        by_resource
            .entry(series.resource.as_deref())
            .or_default()
            .add(series);
    }
    by_resource
        .values_mut()
        .map(|gauge| {
            gauge.samples.sort();
            gauge_weight(gauge, hold, from, to)
        })
        .sum()
}

/// Everything known of one resource's gauge: its samples (sorted before use)
/// and the precomputed parts of its weighted sum.
#[derive(Debug, Clone, Default)]
pub struct ResourceGauge {
    /// The samples.
    pub samples: Vec<GaugeSample>,
    /// The precomputed parts of the weighted sum.
    pub held: Vec<HeldSum>,
}

impl ResourceGauge {
    /// Adds a series of the resource.
    pub fn add(&mut self, series: &GaugeSeries) {
        self.samples.extend(series.samples.iter().cloned());
        self.held.extend(series.held.iter().cloned());
    }
}

/// Σ value × |[ts, min(next ts, ts + hold)) ∩ [from, to)| in value·microseconds,
/// over samples sorted by (ts, value).
pub fn gauge_weight(gauge: &ResourceGauge, hold: i64, from: i64, to: i64) -> BigDecimal {
    let samples = &gauge.samples;
    let mut weighted = BigDecimal::zero();
    for (i, sample) in samples.iter().enumerate() {
        let overlap = held_until(samples, i, hold).min(to) - sample.ts_micros.max(from);
        if overlap > 0 {
            weighted += &sample.value * BigDecimal::from(overlap);
        }
    }
    for part in &gauge.held {
        debug_assert!(
            part.to <= from || part.from >= to || (part.from >= from && part.to <= to),
            "a held sum straddles a bound of the range"
        );
        if part.from >= from && part.to <= to {
            weighted += &part.weighted;
        }
    }
    weighted
}

/// When sample `i` of `samples` (sorted by time, then value) stops counting: at
/// the next sample, or `hold` after it was taken, whichever comes first.
pub fn held_until(samples: &[GaugeSample], i: usize, hold: i64) -> i64 {
    let until = samples[i].ts_micros.saturating_add(hold);
    samples
        .get(i + 1)
        .map_or(until, |next| until.min(next.ts_micros))
}

/// Σ value × microseconds held of every sample but the last, over samples sorted
/// by time, then value: the part of a series' weighted sum that the samples
/// decide on their own (see [`HeldSum`]).
pub fn weight_before_last(samples: &[GaugeSample], hold: i64) -> BigDecimal {
    let mut weighted = BigDecimal::zero();
    for i in 0..samples.len().saturating_sub(1) {
        weighted += &samples[i].value
            * BigDecimal::from(held_until(samples, i, hold) - samples[i].ts_micros);
    }
    weighted
}
