//! Tenant health: status, reasons, month-to-date cost and forecast
//! (docs/reference.md#tenant-health).
//!
//! The lake layer computes a [`HealthInputs`] per tenant as of an instant `now`;
//! [`tenant_health`] turns it into a [`TenantHealth`]: `ok`, `warning` or
//! `critical`, the reasons, quota use and the month-end forecast.
//!
//! Decisions (see also `docs/decisions/0019-billing-semantics.md`):
//! - **Windows** are half-open and end at `now`: "the last 24 h" is
//!   `[now − 24 h, now)`, month to date is `[period start, now)`.
//! - **Quota use** compares, in raw units and exactly (`used × 100 ≥ threshold ×
//!   quota`), a counter's month-to-date sum or a gauge's current level (the sum
//!   over its series of the latest sample still held at `now`) with the quota.
//!   The percentage shown is floored to 2 places, so it never reads 80.00 % for a
//!   tenant that is not yet at 80 %.
//! - **Stale**: the tenant had accepted events in the last 24 h and none for at
//!   least `stale_after` (`now − last event ≥ stale_after`). A tenant silent for
//!   more than 24 h is dormant, not stale.
//! - **Rejected events**: "its events" are all it sent in the last 24 h, accepted
//!   plus rejected; the warning needs `rejected × 100 ≥ threshold × (accepted +
//!   rejected)` and at least one rejected event.
//! - **Forecast** = MTD cost × period length / elapsed, rounded half away from zero
//!   to the cent; at the very start of a period (nothing elapsed) it is the MTD cost.
//! - **Unpriced usage**: a metric no rate covers is left out of the month-to-date
//!   cost and named in an `unpriced_usage` warning, where the invoice refuses it.
//! - **Status** is the most severe reason: quota ≥ critical % is critical, every
//!   other reason is a warning.

use std::collections::BTreeMap;
use std::fmt;

use allot_schemas::config::{HealthConfig, MetricCatalog, MetricKind, TenantConfig};
use allot_schemas::time::{MICROS_PER_DAY, MICROS_PER_SECOND};
use bigdecimal::{BigDecimal, Zero};

use crate::error::QueryError;
use crate::period::{Period, format_micros};
use crate::pricing::TenantUsage;
use crate::rounding::{MONEY_SCALE, Rounding, div_round, format_fixed, round_money};

/// How healthy a tenant is, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthStatus {
    /// Nothing to look at.
    Ok,
    /// Something to look at.
    Warning,
    /// Act now.
    Critical,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        })
    }
}

/// One reason for a non-`ok` status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReason {
    /// A stable snake_case code: `quota_critical`, `quota_warning`,
    /// `noisy_neighbour`, `stale`, `unpriced_usage` or `rejected_events`.
    pub code: &'static str,
    /// `warning` or `critical`.
    pub severity: HealthStatus,
    /// A sentence for people.
    pub message: String,
}

/// What the lake says about a tenant as of `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthInputs {
    /// The tenant.
    pub tenant_id: String,
    /// The instant of the report, UTC microseconds.
    pub now_micros: i64,
    /// Month-to-date raw usage by counter metric (`[period start, now)`).
    pub mtd_usage: BTreeMap<String, BigDecimal>,
    /// Current level by gauge metric: the sum over the tenant's series of the
    /// latest sample still held at `now`. Every gauge of the catalog is listed,
    /// at zero when nothing is held, so that its quota reads as a level.
    pub gauge_levels: BTreeMap<String, BigDecimal>,
    /// Noisy-neighbour rows flagged for the tenant in the last 24 h.
    pub noisy_flags_24h: u32,
    /// The metrics of those rows.
    pub noisy_metrics: Vec<String>,
    /// Time of its latest accepted event before `now`, if any.
    pub last_event_micros: Option<i64>,
    /// Accepted events in the last 24 h.
    pub events_24h: u64,
    /// Rejected events attributed to it in the last 24 h.
    pub rejected_24h: u64,
    /// Month-to-date cost (the total of its invoice up to `now`), leaving out
    /// the metrics in `unpriced`.
    pub mtd_cost: BigDecimal,
    /// Metrics it used this month that no rate covers.
    pub unpriced: Vec<String>,
}

/// Quota use of one metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUse {
    /// The metric.
    pub metric: String,
    /// Month-to-date raw usage of a counter, or the current level of a gauge.
    pub used: BigDecimal,
    /// The quota in raw units: monthly for a counter, a level for a gauge.
    pub quota: BigDecimal,
    /// used × 100 / quota, floored to 2 places.
    pub percent: BigDecimal,
}

/// A tenant's health as of an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantHealth {
    /// The tenant.
    pub tenant_id: String,
    /// The instant of the report, UTC microseconds.
    pub as_of_micros: i64,
    /// The worst of the reasons' severities, `ok` without reasons.
    pub status: HealthStatus,
    /// Why the status is not `ok`, quota reasons first (by metric).
    pub reasons: Vec<HealthReason>,
    /// Use of every quota the tenant has, by metric.
    pub quota_use: Vec<QuotaUse>,
    /// Month-to-date cost.
    pub mtd_cost: BigDecimal,
    /// Month-end forecast: MTD cost × period length / elapsed, to the cent.
    pub forecast: BigDecimal,
    /// The metrics it was flagged a noisy neighbour on in the last 24 h.
    pub noisy_metrics: Vec<String>,
    /// Accepted events in the last 24 h.
    pub events_24h: u64,
}

/// Writes a duration of whole seconds as `1h 30m`, `45m`, `2d 3h` or `20s`.
fn human_duration(micros: i64) -> String {
    let seconds = micros / MICROS_PER_SECOND;
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3_600,
        seconds % 3_600 / 60,
        seconds % 60,
    );
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    }
}

/// The current level of every gauge metric of `catalog` for one tenant: per
/// series, the latest sample before `now` while its hold still covers `now`,
/// summed over the series (docs/reference.md#tenant-health). `usage` must list each series' latest
/// sample before `now`, as the month-to-date usage does.
pub fn gauge_levels(
    usage: &TenantUsage,
    catalog: &MetricCatalog,
    now: i64,
) -> BTreeMap<String, BigDecimal> {
    let mut levels: BTreeMap<String, BigDecimal> = catalog
        .iter()
        .filter(|(_, spec)| spec.kind == MetricKind::Gauge)
        .map(|(name, _)| (name.to_string(), BigDecimal::zero()))
        .collect();
    for series in &usage.gauges {
        let Some(spec) = catalog.get(&series.metric) else {
            continue;
        };
        let hold = spec.hold.map_or(i64::MAX, |h| {
            i64::try_from(h.as_micros()).unwrap_or(i64::MAX)
        });
        let latest = series
            .samples
            .iter()
            .filter(|sample| sample.ts_micros < now)
            .max_by_key(|sample| sample.ts_micros);
        if let Some(sample) = latest
            && now - sample.ts_micros < hold
            && let Some(level) = levels.get_mut(&series.metric)
        {
            *level += &sample.value;
        }
    }
    levels
}

/// The health of one tenant. `settings` is its `[tenants.<id>]` entry, if any.
pub fn tenant_health(
    inputs: &HealthInputs,
    settings: Option<&TenantConfig>,
    thresholds: &HealthConfig,
) -> Result<TenantHealth, QueryError> {
    let now = inputs.now_micros;
    let hundred = BigDecimal::from(100);
    let mut reasons = Vec::new();

    let mut quota_use = Vec::new();
    for (metric, quota) in settings.map(|s| &s.quotas).into_iter().flatten() {
        let quota = &quota.0;
        if *quota <= BigDecimal::zero() {
            continue;
        }
        let (used, what) = match inputs.gauge_levels.get(metric) {
            Some(level) => (level.clone(), "level quota"),
            None => (
                inputs
                    .mtd_usage
                    .get(metric)
                    .cloned()
                    .unwrap_or_else(BigDecimal::zero),
                "monthly quota",
            ),
        };
        let scaled = &used * &hundred;
        let percent = div_round(&scaled, quota, 2, Rounding::Floor);
        let level = if scaled >= &thresholds.quota_critical_percent.0 * quota {
            Some(("quota_critical", HealthStatus::Critical))
        } else if scaled >= &thresholds.quota_warning_percent.0 * quota {
            Some(("quota_warning", HealthStatus::Warning))
        } else {
            None
        };
        if let Some((code, severity)) = level {
            reasons.push(HealthReason {
                code,
                severity,
                message: format!(
                    "{metric} at {}% of its {what} ({} of {})",
                    percent.to_plain_string(),
                    used.to_plain_string(),
                    quota.to_plain_string()
                ),
            });
        }
        quota_use.push(QuotaUse {
            metric: metric.clone(),
            used,
            quota: quota.clone(),
            percent,
        });
    }

    if inputs.noisy_flags_24h > 0 {
        reasons.push(HealthReason {
            code: "noisy_neighbour",
            severity: HealthStatus::Warning,
            message: format!(
                "flagged as a noisy neighbour {} time(s) in the last 24 h",
                inputs.noisy_flags_24h
            ),
        });
    }

    let stale_after = i64::try_from(thresholds.stale_after.0.as_micros()).unwrap_or(i64::MAX);
    if let Some(last) = inputs.last_event_micros
        && inputs.events_24h > 0
        && now - last >= stale_after
    {
        reasons.push(HealthReason {
            code: "stale",
            severity: HealthStatus::Warning,
            message: format!(
                "no event for {} (last at {}) after events in the last 24 h",
                human_duration(now - last),
                format_micros(last)
            ),
        });
    }

    for metric in &inputs.unpriced {
        reasons.push(HealthReason {
            code: "unpriced_usage",
            severity: HealthStatus::Warning,
            message: format!(
                "{metric} was used this month where no rate covers it; the month-to-date \
                 cost and the forecast leave it out"
            ),
        });
    }

    let sent = BigDecimal::from(inputs.events_24h) + BigDecimal::from(inputs.rejected_24h);
    let rejected = BigDecimal::from(inputs.rejected_24h);
    if inputs.rejected_24h > 0
        && &rejected * &hundred >= &thresholds.rejected_warning_percent.0 * &sent
    {
        let percent = div_round(&(&rejected * &hundred), &sent, 2, Rounding::Floor);
        reasons.push(HealthReason {
            code: "rejected_events",
            severity: HealthStatus::Warning,
            message: format!(
                "{} of {} events ({}%) rejected in the last 24 h",
                inputs.rejected_24h,
                sent.to_plain_string(),
                percent.to_plain_string()
            ),
        });
    }

    let period = Period::containing(now)?;
    let elapsed = now - period.start_micros();
    let mtd_cost = round_money(&inputs.mtd_cost);
    let forecast = if elapsed > 0 {
        div_round(
            &(&mtd_cost * BigDecimal::from(period.length_micros())),
            &BigDecimal::from(elapsed),
            MONEY_SCALE,
            Rounding::HalfAwayFromZero,
        )
    } else {
        mtd_cost.clone()
    };

    Ok(TenantHealth {
        tenant_id: inputs.tenant_id.clone(),
        as_of_micros: now,
        status: reasons
            .iter()
            .map(|r| r.severity)
            .max()
            .unwrap_or(HealthStatus::Ok),
        reasons,
        quota_use,
        mtd_cost,
        forecast,
        noisy_metrics: inputs.noisy_metrics.clone(),
        events_24h: inputs.events_24h,
    })
}

impl TenantHealth {
    /// The reasons as `code: message` lines, for text output.
    pub fn reason_lines(&self) -> Vec<String> {
        self.reasons
            .iter()
            .map(|r| format!("{}: {}", r.code, r.message))
            .collect()
    }

    /// The forecast as text with 2 places.
    pub fn forecast_text(&self) -> String {
        format_fixed(&self.forecast, MONEY_SCALE)
    }
}

/// Microseconds in the "last 24 h" window of the health checks.
pub const HEALTH_WINDOW_MICROS: i64 = MICROS_PER_DAY;

#[cfg(test)]
mod tests {
    use allot_schemas::config::ConfigDecimal;

    use super::*;
    use crate::test_support::{d, ts};

    /// A healthy tenant as of 2026-01-15 12:00: an event a minute ago, nothing rejected.
    fn healthy() -> HealthInputs {
        HealthInputs {
            tenant_id: "acme".to_string(),
            now_micros: ts("2026-01-15T12:00:00Z"),
            mtd_usage: BTreeMap::new(),
            gauge_levels: BTreeMap::new(),
            noisy_flags_24h: 0,
            noisy_metrics: Vec::new(),
            last_event_micros: Some(ts("2026-01-15T11:59:00Z")),
            events_24h: 1_000,
            rejected_24h: 0,
            mtd_cost: d("0"),
            unpriced: Vec::new(),
        }
    }

    fn with_quota(metric: &str, quota: &str) -> TenantConfig {
        TenantConfig {
            quotas: BTreeMap::from([(metric.to_string(), ConfigDecimal(d(quota)))]),
            ..TenantConfig::default()
        }
    }

    fn check(inputs: &HealthInputs, settings: Option<&TenantConfig>) -> TenantHealth {
        tenant_health(inputs, settings, &HealthConfig::default()).unwrap()
    }

    #[test]
    fn a_healthy_tenant_is_ok() {
        let health = check(&healthy(), None);
        assert_eq!(health.status, HealthStatus::Ok);
        assert!(health.reasons.is_empty());
        assert_eq!(health.status.to_string(), "ok");
    }

    #[test]
    fn a_tenant_over_quota() {
        // Quota 2000000 compute-seconds. 2100000 × 100 = 210000000 ≥ 100 × 2000000 → critical,
        // 105.00 %. Exactly 1600000 is 80 % → warning; 1599999.999 is 79.99999… % → ok,
        // shown floored as 79.99 (never rounded up to 80.00).
        let settings = with_quota("compute_seconds", "2000000");
        let mut inputs = healthy();
        let mut run = |used: &str| {
            inputs.mtd_usage = BTreeMap::from([("compute_seconds".to_string(), d(used))]);
            check(&inputs, Some(&settings))
        };
        let over = run("2100000");
        assert_eq!(over.status, HealthStatus::Critical);
        assert_eq!(over.reasons[0].code, "quota_critical");
        assert_eq!(
            over.reasons[0].message,
            "compute_seconds at 105.00% of its monthly quota (2100000 of 2000000)"
        );
        assert_eq!(run("2000000").status, HealthStatus::Critical);
        let at80 = run("1600000");
        assert_eq!(
            (at80.status, at80.reasons[0].code),
            (HealthStatus::Warning, "quota_warning")
        );
        let below = run("1599999.999");
        assert_eq!(below.status, HealthStatus::Ok);
        assert_eq!(below.quota_use[0].percent.to_plain_string(), "79.99");
        // No usage at all: 0 % and ok.
        inputs.mtd_usage.clear();
        let idle = check(&inputs, Some(&settings));
        assert_eq!(idle.quota_use[0].percent.to_plain_string(), "0.00");
    }

    #[test]
    fn a_gauge_quota_reads_the_current_level() {
        // Two storage series: r1's latest sample (600) is 30 min old, within the
        // 1 h hold; r2's (900) is 2 h old and no longer held. Level 600 of a
        // 500 quota: 120.00 %, critical, even with no counter usage at all.
        let now = ts("2026-01-15T12:00:00Z");
        let sample = |at: &str, value: &str| allot_schemas::gauge::GaugeSample {
            ts_micros: ts(at),
            value: d(value),
        };
        let series = |resource: &str, samples| allot_schemas::gauge::GaugeSeries {
            metric: "storage_bytes".to_string(),
            resource: Some(resource.to_string()),
            samples,
            held: Vec::new(),
        };
        let usage = TenantUsage {
            meters: Vec::new(),
            tenant_id: "acme".to_string(),
            counters: Vec::new(),
            gauges: vec![
                series(
                    "r1",
                    vec![
                        sample("2026-01-15T11:00:00Z", "400"),
                        sample("2026-01-15T11:30:00Z", "600"),
                        sample("2026-01-15T12:00:00Z", "9999"),
                    ],
                ),
                series("r2", vec![sample("2026-01-15T10:00:00Z", "900")]),
            ],
        };
        let levels = gauge_levels(&usage, &MetricCatalog::default(), now);
        assert_eq!(
            levels,
            BTreeMap::from([("storage_bytes".to_string(), d("600"))])
        );
        let mut inputs = healthy();
        inputs.gauge_levels = levels;
        let health = check(&inputs, Some(&with_quota("storage_bytes", "500")));
        assert_eq!(health.status, HealthStatus::Critical);
        assert_eq!(
            health.reasons[0].message,
            "storage_bytes at 120.00% of its level quota (600 of 500)"
        );
    }

    #[test]
    fn a_stale_tenant() {
        // now 12:00, stale_after 1 h. Last event 10:30 with events in the last 24 h → stale.
        let mut inputs = healthy();
        inputs.last_event_micros = Some(ts("2026-01-15T10:30:00Z"));
        let health = check(&inputs, None);
        assert_eq!(health.status, HealthStatus::Warning);
        assert_eq!(health.reasons[0].code, "stale");
        assert_eq!(
            health.reasons[0].message,
            "no event for 1h 30m (last at 2026-01-15T10:30:00Z) after events in the last 24 h"
        );
        // Exactly 1 h of silence is stale; 59 min is not.
        inputs.last_event_micros = Some(ts("2026-01-15T11:00:00Z"));
        assert_eq!(check(&inputs, None).status, HealthStatus::Warning);
        inputs.last_event_micros = Some(ts("2026-01-15T11:01:00Z"));
        assert_eq!(check(&inputs, None).status, HealthStatus::Ok);
        // Silent for three days, no events in the last 24 h: dormant, not stale.
        inputs.last_event_micros = Some(ts("2026-01-12T12:00:00Z"));
        inputs.events_24h = 0;
        assert_eq!(check(&inputs, None).status, HealthStatus::Ok);
    }

    #[test]
    fn noisy_flags_and_rejected_events_warn() {
        let mut inputs = healthy();
        inputs.noisy_flags_24h = 2;
        let health = check(&inputs, None);
        assert_eq!(health.status, HealthStatus::Warning);
        assert_eq!(health.reasons[0].code, "noisy_neighbour");

        // 1 rejected of 99 + 1 = 100 sent: exactly 1 % → warning. 1 of 101: 0.99 % → ok.
        let mut inputs = healthy();
        inputs.events_24h = 99;
        inputs.rejected_24h = 1;
        let health = check(&inputs, None);
        assert_eq!(health.reasons[0].code, "rejected_events");
        assert_eq!(
            health.reasons[0].message,
            "1 of 100 events (1.00%) rejected in the last 24 h"
        );
        inputs.events_24h = 100;
        assert_eq!(check(&inputs, None).status, HealthStatus::Ok);
        // Only rejected events: 100 %.
        inputs.events_24h = 0;
        assert_eq!(
            check(&inputs, None).reasons.last().unwrap().code,
            "rejected_events"
        );
    }

    #[test]
    fn the_forecast_scales_mtd_cost_to_the_month() {
        // January has 31 days. As of 01-11 00:00, 10 days elapsed: 100.00 × 31 / 10 = 310.00.
        let mut inputs = healthy();
        inputs.now_micros = ts("2026-01-11T00:00:00Z");
        inputs.mtd_cost = d("100.00");
        assert_eq!(check(&inputs, None).forecast_text(), "310.00");
        // 3 days: 10.00 × 31 / 3 = 103.333… → 103.33.
        inputs.now_micros = ts("2026-01-04T00:00:00Z");
        inputs.mtd_cost = d("10.00");
        assert_eq!(check(&inputs, None).forecast_text(), "103.33");
        // 2 days: 0.01 × 31 / 2 = 0.155 → 0.16 (half away from zero).
        inputs.now_micros = ts("2026-01-03T00:00:00Z");
        inputs.mtd_cost = d("0.01");
        assert_eq!(check(&inputs, None).forecast_text(), "0.16");
        // At the very start of the month nothing has elapsed: the forecast is the MTD cost.
        inputs.now_micros = ts("2026-02-01T00:00:00Z");
        inputs.mtd_cost = d("0");
        assert_eq!(check(&inputs, None).forecast_text(), "0.00");
    }

    #[test]
    fn the_worst_reason_sets_the_status() {
        let settings = with_quota("egress_bytes", "100");
        let mut inputs = healthy();
        inputs.mtd_usage = BTreeMap::from([("egress_bytes".to_string(), d("150"))]);
        inputs.noisy_flags_24h = 1;
        let health = check(&inputs, Some(&settings));
        assert_eq!(health.status, HealthStatus::Critical);
        let codes: Vec<&str> = health.reasons.iter().map(|r| r.code).collect();
        assert_eq!(codes, ["quota_critical", "noisy_neighbour"]);
        assert_eq!(health.reason_lines().len(), 2);
    }
}
