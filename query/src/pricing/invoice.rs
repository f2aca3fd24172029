//! Invoice assembly: a tenant's usage, grouped by metric, priced segment by
//! segment and band by band, then discount and total.

use std::collections::{BTreeMap, HashMap};

use allot_schemas::config::{DEFAULT_GAUGE_HOLD, MetricCatalog, MetricKind, MetricSpec, RateMatch};
use allot_schemas::time::day_start_micros;
use bigdecimal::{BigDecimal, Zero};
use chrono::NaiveDate;

use allot_lake::LakeError;
use allot_schemas::gauge::{GaugeSeries, ResourceGauge, gauge_weight, gauge_weighted_sum};
use allot_schemas::meter::{MeterSummary, attributed_by_day};

use crate::error::QueryError;
use crate::period::{Period, format_micros};
use crate::rounding::{
    MONEY_SCALE, QUANTITY_SCALE, Rounding, div_quantity, div_round, format_fixed, round_money,
};

use super::price_book::{DimensionValues, Price, PriceBook, RateSegment};

/// The raw sum of a counter metric on one UTC day, for one tenant. A counter
/// whose rates match on dimensions has a sum per class of its events over a
/// stretch of days none of whose prices differ ([`crate::usage::ClassGrouping`]),
/// dated on the stretch's first day: pricing tells its days apart no further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDay {
    /// The metric.
    pub metric: String,
    /// The UTC date of the events (the first of its stretch).
    pub day: NaiveDate,
    /// Σ `value` of the tenant's distinct events of that metric that day or
    /// stretch (with these dimension values).
    pub raw_sum: BigDecimal,
    /// The events' values of the dimensions the metric's rates match on
    /// ([`PriceBook::dimensions`]); empty when they match on none.
    pub dimensions: DimensionValues,
}

/// What one tenant's events of a meter metric (`max`, `unique_count`,
/// `latest`) keep for one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterDay {
    /// The metric.
    pub metric: String,
    /// The UTC date of the events.
    pub day: NaiveDate,
    /// The day's summary of the tenant's distinct events of that metric.
    pub summary: MeterSummary,
}

/// One tenant's usage for a period, as the lake aggregates it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant_id: String,
    /// Counter sums per (metric, day), in any order.
    pub counters: Vec<CounterDay>,
    /// Gauge series, in any order.
    pub gauges: Vec<GaugeSeries>,
    /// Meter summaries per (metric, day), in any order.
    pub meters: Vec<MeterDay>,
}

impl TenantUsage {
    /// The raw figure of meter `metric` over the days of `[start, end)`
    /// (docs/reference.md#other-meter-kinds), placed on the days that
    /// determine it (see [`attributed_by_day`]).
    pub fn meter_figure_by_day(
        &self,
        spec: &MetricSpec,
        metric: &str,
        start: i64,
        end: i64,
    ) -> Result<BTreeMap<NaiveDate, BigDecimal>, QueryError> {
        let mut days: BTreeMap<NaiveDate, MeterSummary> = BTreeMap::new();
        for meter in &self.meters {
            if meter.metric == metric && (start..end).contains(&day_start_micros(meter.day)) {
                days.entry(meter.day)
                    .or_default()
                    .merge(meter.summary.clone());
            }
        }
        let bound = spec.distinct.as_ref().map_or(u64::MAX, |d| d.max_distinct);
        attributed_by_day(spec.kind, &days, bound).map_err(|too_many| {
            QueryError::Lake(LakeError::TooManyDistinct {
                tenant: self.tenant_id.clone(),
                metric: metric.to_string(),
                max_distinct: too_many.max_distinct,
            })
        })
    }
}

/// One invoice line: a metric × rate segment × tier band with quantity > 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    /// The tenant billed.
    pub tenant_id: String,
    /// The billing period.
    pub period: Period,
    /// The metric.
    pub metric: String,
    /// Its billing unit.
    pub unit: String,
    /// Segment start, UTC microseconds.
    pub segment_start: i64,
    /// Segment end (exclusive), UTC microseconds.
    pub segment_end: i64,
    /// Lower bound of the tier band; `None` for a flat rate.
    pub tier_from: Option<BigDecimal>,
    /// Upper bound of the tier band; `None` for a flat rate or the last band.
    pub tier_to: Option<BigDecimal>,
    /// Billing quantity in this segment and band (12 decimal places).
    pub quantity: BigDecimal,
    /// Price per billing unit, as written in the price book.
    pub unit_price: BigDecimal,
    /// quantity × unit_price rounded half away from zero to 2 places.
    pub amount: BigDecimal,
    /// The `match` of the rate line priced (`region=eu-*;service=gpu`); empty
    /// for the metric's rates without one.
    pub dimensions: String,
}

impl InvoiceLine {
    /// The line as CSV fields in the order of the first eleven
    /// [`allot_schemas::table_schema::INVOICE_CSV_COLUMNS`] (instants in RFC 3339,
    /// quantity with 12 places, amount with 2, empty tier bounds for flat rates);
    /// `kind`, `adjusts` and then [`Self::dimensions`] follow them.
    pub fn csv_record(&self) -> Vec<String> {
        let bound = |b: &Option<BigDecimal>| {
            b.as_ref()
                .map(BigDecimal::to_plain_string)
                .unwrap_or_default()
        };
        vec![
            self.tenant_id.clone(),
            self.period.to_string(),
            self.metric.clone(),
            self.unit.clone(),
            format_micros(self.segment_start),
            format_micros(self.segment_end),
            bound(&self.tier_from),
            bound(&self.tier_to),
            format_fixed(&self.quantity, QUANTITY_SCALE),
            self.unit_price.to_plain_string(),
            format_fixed(&self.amount, MONEY_SCALE),
        ]
    }
}

/// A tenant's invoice for a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// The tenant billed.
    pub tenant_id: String,
    /// The billing period.
    pub period: Period,
    /// The currency of every amount.
    pub currency: String,
    /// Lines ordered by metric, segment start, tier band.
    pub lines: Vec<InvoiceLine>,
    /// Σ line amounts.
    pub subtotal: BigDecimal,
    /// The tenant's discount in percent.
    pub discount_percent: BigDecimal,
    /// −round(subtotal × discount_percent / 100, 2), half away from zero.
    pub discount: BigDecimal,
    /// The commitment true-up: the tenant's `minimum_monthly` − (subtotal +
    /// discount) when that is above zero, else zero.
    pub true_up: BigDecimal,
    /// subtotal + discount + true_up.
    pub total: BigDecimal,
}

enum MetricUsage {
    /// Raw sums per day, per group of dimension values.
    Counter(BTreeMap<DimensionValues, BTreeMap<NaiveDate, BigDecimal>>),
    Gauge(BTreeMap<Option<String>, ResourceGauge>),
    /// A meter: priced like a counter on its figure placed by day.
    Meter,
}

/// The invoice of one tenant for a whole period.
pub fn invoice(
    book: &PriceBook,
    catalog: &MetricCatalog,
    period: Period,
    usage: &TenantUsage,
) -> Result<Invoice, QueryError> {
    invoice_until(book, catalog, period, usage, period.end_micros())
}

/// The invoice of one tenant for `[period start, until)` — month to date when
/// `until` is inside the period. Gauge holds are cut at `until`; counter sums must
/// only include events before `until`. Gauge quantities still divide by the whole
/// period's length, so a month-to-date figure is a part of the month's.
pub fn invoice_until(
    book: &PriceBook,
    catalog: &MetricCatalog,
    period: Period,
    usage: &TenantUsage,
    until: i64,
) -> Result<Invoice, QueryError> {
    let tenant = usage.tenant_id.as_str();
    let start = period.start_micros();
    let end = until.clamp(start, period.end_micros());
    let metrics = group_usage(usage, catalog)?;

    let mut lines = Vec::new();
    for (metric, metric_usage) in &metrics {
        let spec = catalog.get(metric).expect("checked by group_usage");
        // The quantity of each rate segment, per rate line.
        let priced: Vec<(RateMatch, Vec<(RateSegment<'_>, BigDecimal)>)> = match metric_usage {
            MetricUsage::Counter(groups) => counter_lines(book, tenant, metric, groups, start, end)
                .into_iter()
                .map(|(line, days)| {
                    let quantities =
                        segment_quantities(book, tenant, metric, &line, &days, spec, start, end);
                    (line, quantities)
                })
                .collect(),
            MetricUsage::Meter => {
                let days = usage.meter_figure_by_day(spec, metric, start, end)?;
                let line = RateMatch::default();
                let quantities =
                    segment_quantities(book, tenant, metric, &line, &days, spec, start, end);
                vec![(line, quantities)]
            }
            MetricUsage::Gauge(series) => {
                let hold = i64::try_from(spec.hold.unwrap_or(DEFAULT_GAUGE_HOLD).as_micros())
                    .unwrap_or(i64::MAX);
                let denominator = &spec.divisor * BigDecimal::from(period.length_micros());
                let line = RateMatch::default();
                let quantities = book
                    .segments(tenant, metric, &line, start, end)
                    .into_iter()
                    .map(|seg| {
                        let weighted: BigDecimal = series
                            .values()
                            .map(|gauge| gauge_weight(gauge, hold, seg.start, seg.end))
                            .sum();
                        (seg, div_quantity(&weighted, &denominator))
                    })
                    .collect();
                vec![(line, quantities)]
            }
        };

        for (line, segments) in priced {
            let dimensions = line.to_string();
            // Tiers count the cumulative quantity of the rate line.
            let mut cumulative = BigDecimal::zero();
            for (seg, quantity) in segments {
                if quantity <= BigDecimal::zero() {
                    continue;
                }
                let rate = seg.rate.ok_or_else(|| QueryError::NoRate {
                    tenant: tenant.to_string(),
                    metric: metric.clone(),
                    from: format_micros(seg.start),
                })?;
                let after = &cumulative + &quantity;
                for (tier_from, tier_to, band_quantity, unit_price) in
                    bands(&rate.price, &cumulative, &after)
                {
                    let amount = round_money(&(&band_quantity * unit_price));
                    lines.push(InvoiceLine {
                        tenant_id: tenant.to_string(),
                        period,
                        metric: metric.clone(),
                        unit: spec.unit.clone(),
                        segment_start: seg.start,
                        segment_end: seg.end,
                        tier_from,
                        tier_to,
                        quantity: band_quantity,
                        unit_price: unit_price.clone(),
                        amount,
                        dimensions: dimensions.clone(),
                    });
                }
                cumulative = after;
            }
        }
    }

    let subtotal: BigDecimal = lines.iter().map(|line| &line.amount).sum();
    let subtotal = subtotal.with_scale(MONEY_SCALE);
    let discount_percent = book.discount_percent(tenant);
    let discount = -div_round(
        &(&subtotal * &discount_percent),
        &BigDecimal::from(100),
        MONEY_SCALE,
        Rounding::HalfAwayFromZero,
    );
    let discounted = &subtotal + &discount;
    let true_up = book
        .minimum_monthly(tenant)
        .map(|minimum| minimum - &discounted)
        .filter(|short| *short > BigDecimal::zero())
        .map_or_else(BigDecimal::zero, |short| round_money(&short));
    let total = &discounted + &true_up;
    Ok(Invoice {
        tenant_id: tenant.to_string(),
        period,
        currency: book.currency().to_string(),
        lines,
        subtotal,
        discount_percent,
        discount,
        true_up,
        total,
    })
}

/// A counter's raw sums per day in `[start, end)`, per the rate line each
/// group of dimension values is priced on that day. Rates change only at
/// 00:00 UTC of a date, so a group resolves once per stretch between rate
/// changes; usage no rate matches goes to the default line, whose missing
/// rate the caller reports.
fn counter_lines(
    book: &PriceBook,
    tenant: &str,
    metric: &str,
    groups: &BTreeMap<DimensionValues, BTreeMap<NaiveDate, BigDecimal>>,
    start: i64,
    end: i64,
) -> BTreeMap<RateMatch, BTreeMap<NaiveDate, BigDecimal>> {
    let changes = book.changes(tenant, metric, start, end);
    let mut resolved: HashMap<(&DimensionValues, i64), RateMatch> = HashMap::new();
    let mut by_line: BTreeMap<RateMatch, BTreeMap<NaiveDate, BigDecimal>> = BTreeMap::new();
    for (values, days) in groups {
        for (day, raw) in days {
            let t = day_start_micros(*day);
            if !(start..end).contains(&t) {
                continue;
            }
            let stretch = changes
                .iter()
                .rev()
                .find(|&&change| change <= t)
                .copied()
                .unwrap_or(start);
            let line = resolved
                .entry((values, stretch))
                .or_insert_with(|| book.resolve(tenant, metric, stretch, values).0);
            *by_line
                .entry(line.clone())
                .or_default()
                .entry(*day)
                .or_insert_with(BigDecimal::zero) += raw;
        }
    }
    by_line
}

/// The billing quantity of each rate segment of `line` in `[start, end)`: the
/// raw figures of the days in the segment, summed, over the divisor.
#[allow(clippy::too_many_arguments)]
fn segment_quantities<'a>(
    book: &'a PriceBook,
    tenant: &str,
    metric: &str,
    line: &RateMatch,
    days: &BTreeMap<NaiveDate, BigDecimal>,
    spec: &MetricSpec,
    start: i64,
    end: i64,
) -> Vec<(RateSegment<'a>, BigDecimal)> {
    book.segments(tenant, metric, line, start, end)
        .into_iter()
        .map(|seg| {
            let raw: BigDecimal = days
                .iter()
                .filter(|(day, _)| (seg.start..seg.end).contains(&day_start_micros(**day)))
                .map(|(_, sum)| sum)
                .sum();
            (seg, div_quantity(&raw, &spec.divisor))
        })
        .collect()
}

/// The billing quantity of `metric` for a tenant over the whole `period`, rounded
/// to 12 places once: a counter's raw sum / divisor, a gauge's time-weighted
/// quotient (docs/reference.md#gauge-quantity), or a meter's figure / divisor
/// (docs/reference.md#other-meter-kinds). Allocation drivers use it.
pub fn period_quantity(
    spec: &MetricSpec,
    metric: &str,
    period: Period,
    usage: &TenantUsage,
) -> Result<BigDecimal, QueryError> {
    let (start, end) = (period.start_micros(), period.end_micros());
    Ok(match spec.kind {
        MetricKind::Counter => {
            let raw: BigDecimal = usage
                .counters
                .iter()
                .filter(|c| c.metric == metric && period.contains(day_start_micros(c.day)))
                .map(|c| &c.raw_sum)
                .sum();
            div_quantity(&raw, &spec.divisor)
        }
        MetricKind::Gauge => div_quantity(
            &gauge_weighted_sum(spec, metric, &usage.gauges, start, end),
            &(&spec.divisor * BigDecimal::from(period.length_micros())),
        ),
        MetricKind::Max | MetricKind::UniqueCount | MetricKind::Latest => {
            let raw: BigDecimal = usage
                .meter_figure_by_day(spec, metric, start, end)?
                .values()
                .sum();
            div_quantity(&raw, &spec.divisor)
        }
    })
}

/// Groups a tenant's usage by metric, checking each metric against the catalog.
fn group_usage(
    usage: &TenantUsage,
    catalog: &MetricCatalog,
) -> Result<BTreeMap<String, MetricUsage>, QueryError> {
    let tenant = &usage.tenant_id;
    let check = |metric: &str, want: MetricKind| -> Result<(), QueryError> {
        let spec = catalog
            .get(metric)
            .ok_or_else(|| QueryError::UnknownMetric {
                tenant: tenant.clone(),
                metric: metric.to_string(),
            })?;
        let given = match want {
            MetricKind::Counter => "daily counter sums were given",
            MetricKind::Gauge => "gauge samples were given",
            MetricKind::Max | MetricKind::UniqueCount | MetricKind::Latest => {
                "daily meter summaries were given"
            }
        };
        if spec.kind == want || (spec.kind.is_meter() && want.is_meter()) {
            Ok(())
        } else {
            Err(QueryError::WrongMetricKind {
                tenant: tenant.clone(),
                metric: metric.to_string(),
                kind: spec.kind.as_str(),
                problem: given,
            })
        }
    };
    let mut metrics: BTreeMap<String, MetricUsage> = BTreeMap::new();
    for counter in &usage.counters {
        check(&counter.metric, MetricKind::Counter)?;
        let entry = metrics
            .entry(counter.metric.clone())
            .or_insert_with(|| MetricUsage::Counter(BTreeMap::new()));
        if let MetricUsage::Counter(groups) = entry {
            *groups
                .entry(counter.dimensions.clone())
                .or_default()
                .entry(counter.day)
                .or_insert_with(BigDecimal::zero) += &counter.raw_sum;
        }
    }
    for series in &usage.gauges {
        check(&series.metric, MetricKind::Gauge)?;
        let entry = metrics
            .entry(series.metric.clone())
            .or_insert_with(|| MetricUsage::Gauge(BTreeMap::new()));
        if let MetricUsage::Gauge(by_resource) = entry {
            by_resource
                .entry(series.resource.clone())
                .or_default()
                .add(series);
        }
    }
    for meter in &usage.meters {
        check(&meter.metric, MetricKind::Max)?;
        metrics
            .entry(meter.metric.clone())
            .or_insert(MetricUsage::Meter);
    }
    for metric_usage in metrics.values_mut() {
        if let MetricUsage::Gauge(by_resource) = metric_usage {
            for gauge in by_resource.values_mut() {
                gauge.samples.sort();
            }
        }
    }
    Ok(metrics)
}

/// The tier bands a segment covering cumulative quantity `[before, after)` falls
/// into: `(tier_from, tier_to, quantity, unit_price)`.
fn bands<'a>(
    price: &'a Price,
    before: &BigDecimal,
    after: &BigDecimal,
) -> Vec<(
    Option<BigDecimal>,
    Option<BigDecimal>,
    BigDecimal,
    &'a BigDecimal,
)> {
    match price {
        Price::Flat(unit_price) => vec![(None, None, after - before, unit_price)],
        Price::Graduated(tiers) => tiers
            .iter()
            .filter_map(|band| {
                let low = if &band.from > before {
                    &band.from
                } else {
                    before
                };
                let high = match &band.to {
                    Some(to) if to < after => to,
                    _ => after,
                };
                (high > low).then(|| {
                    (
                        Some(band.from.clone()),
                        band.to.clone(),
                        high - low,
                        &band.unit_price,
                    )
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use allot_schemas::config::Config;
    use allot_schemas::gauge::GaugeSample;
    use proptest::prelude::*;

    use super::*;
    use crate::pricing::RateSource;
    use crate::test_support::{d, ts};

    fn config(text: &str) -> Config {
        Config::from_toml_str(text, "test.toml", std::iter::empty()).unwrap()
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn counters(tenant: &str, rows: &[(&str, &str, &str)]) -> TenantUsage {
        TenantUsage {
            meters: Vec::new(),
            tenant_id: tenant.to_string(),
            counters: rows
                .iter()
                .map(|(metric, date, sum)| CounterDay {
                    dimensions: Vec::new(),
                    metric: metric.to_string(),
                    day: day(date),
                    raw_sum: d(sum),
                })
                .collect(),
            gauges: Vec::new(),
        }
    }

    fn run(cfg: &Config, month: &str, usage: &TenantUsage) -> Result<Invoice, QueryError> {
        let book = PriceBook::from_config(cfg);
        invoice(&book, &cfg.catalog(), Period::parse(month).unwrap(), usage)
    }

    /// Lines as CSV text, then `subtotal,discount,total`.
    fn render(invoice: &Invoice) -> Vec<String> {
        let mut out: Vec<String> = invoice
            .lines
            .iter()
            .map(|l| l.csv_record().join(","))
            .collect();
        out.push(format!(
            "{},{},{}",
            invoice.subtotal.to_plain_string(),
            invoice.discount.to_plain_string(),
            invoice.total.to_plain_string()
        ));
        out
    }

    const MID_MONTH_CHANGE: &str = r#"
[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
unit_price = "0.0400"

[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-16"
unit_price = "0.0500"
"#;

    #[test]
    fn a_mid_month_price_change_splits_the_line() {
        // Segment 1 [01-01, 01-16): 36000 + 7200 s = 43200 s / 3600 = 12 vCPU-h × 0.04 = 0.48.
        // Segment 2 [01-16, 02-01): 3600.5 s / 3600 = 1.000138888…
        //   → 1.000138888889 (12 places) × 0.05 = 0.05000694… → 0.05.
        // The December day is outside the period and ignored. Subtotal 0.53, no discount.
        let usage = counters(
            "beta",
            &[
                ("compute_seconds", "2026-01-16", "3600.5"),
                ("compute_seconds", "2026-01-10", "36000"),
                ("compute_seconds", "2025-12-31", "99999"),
                ("compute_seconds", "2026-01-15", "7200"),
            ],
        );
        let inv = run(&config(MID_MONTH_CHANGE), "2026-01", &usage).unwrap();
        assert_eq!(
            render(&inv),
            [
                "beta,2026-01,compute_seconds,vCPU-hour,2026-01-01T00:00:00Z,2026-01-16T00:00:00Z,,,12.000000000000,0.0400,0.48",
                "beta,2026-01,compute_seconds,vCPU-hour,2026-01-16T00:00:00Z,2026-02-01T00:00:00Z,,,1.000138888889,0.0500,0.05",
                "0.53,0.00,0.53",
            ]
        );
        assert_eq!(inv.currency, "USD");
    }

    const TIERS_ACROSS_SEGMENTS: &str = r#"
[metrics.api_calls]
kind = "counter"
unit = "k-call"
divisor = "1000"

[[rates]]
metric = "api_calls"
effective_from = "2026-01-01"
tiers = [{ up_to = "100", unit_price = "0.10" }, { up_to = "300", unit_price = "0.08" }, { unit_price = "0.05" }]

[[rates]]
metric = "api_calls"
effective_from = "2026-01-15"
tiers = [{ up_to = "100", unit_price = "0.09" }, { up_to = "300", unit_price = "0.07" }, { unit_price = "0.04" }]
"#;

    #[test]
    fn tiers_continue_across_a_segment_boundary() {
        // Segment 1 [01-01, 01-15): 150000 / 1000 = 150 k-call, cumulative 0 → 150:
        //   band [0, 100):   100 × 0.10 = 10.00
        //   band [100, 300):  50 × 0.08 =  4.00
        // Segment 2 [01-15, 02-01): 250 k-call, cumulative 150 → 400, new price list:
        //   band [100, 300): 150 × 0.07 = 10.50
        //   band [300, ∞):   100 × 0.04 =  4.00
        // Subtotal 28.50.
        let usage = counters(
            "t1",
            &[
                ("api_calls", "2026-01-20", "250000"),
                ("api_calls", "2026-01-05", "150000"),
            ],
        );
        let inv = run(&config(TIERS_ACROSS_SEGMENTS), "2026-01", &usage).unwrap();
        let s1 = "t1,2026-01,api_calls,k-call,2026-01-01T00:00:00Z,2026-01-15T00:00:00Z";
        let s2 = "t1,2026-01,api_calls,k-call,2026-01-15T00:00:00Z,2026-02-01T00:00:00Z";
        assert_eq!(
            render(&inv),
            [
                format!("{s1},0,100,100.000000000000,0.10,10.00"),
                format!("{s1},100,300,50.000000000000,0.08,4.00"),
                format!("{s2},100,300,150.000000000000,0.07,10.50"),
                format!("{s2},300,,100.000000000000,0.04,4.00"),
                "28.50,0.00,28.50".to_string(),
            ]
        );
    }

    const OVERRIDES: &str = r#"
[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
unit_price = "0.0400"

[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
tiers = [
  { up_to = "10240", unit_price = "0.09" },
  { up_to = "51200", unit_price = "0.085" },
  { unit_price = "0.07" },
]

[tenants.acme]
discount_percent = "10"

[[tenants.acme.rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
unit_price = "0.05"

[[tenants.gamma.rates]]
metric = "compute_seconds"
effective_from = "2026-01-11"
unit_price = "0.03"

[tenants.delta]
discount_percent = "50"
"#;

    #[test]
    fn a_tenant_override_plus_discount() {
        // acme: compute 94500 s / 3600 = 26.25 vCPU-h × 0.04 (global) = 1.05;
        //       egress 107374182400 B / 2^30 = 100 GiB × 0.05 (acme's flat override) = 5.00.
        // Subtotal 6.05; discount −round(6.05 × 10 / 100 = 0.605) = −0.61 (half away
        // from zero: the tie goes down, away from zero, for a negative figure); total 5.44.
        let cfg = config(OVERRIDES);
        let acme = counters(
            "acme",
            &[
                ("egress_bytes", "2026-01-03", "107374182400"),
                ("compute_seconds", "2026-01-03", "94500"),
            ],
        );
        let full = "2026-01-01T00:00:00Z,2026-02-01T00:00:00Z";
        assert_eq!(
            render(&run(&cfg, "2026-01", &acme).unwrap()),
            [
                format!(
                    "acme,2026-01,compute_seconds,vCPU-hour,{full},,,26.250000000000,0.0400,1.05"
                ),
                format!("acme,2026-01,egress_bytes,GiB,{full},,,100.000000000000,0.05,5.00"),
                "6.05,-0.61,5.44".to_string(),
            ]
        );
        // The same egress without an override: 100 GiB in the first band × 0.09 = 9.00.
        let other = counters("other", &[("egress_bytes", "2026-01-03", "107374182400")]);
        assert_eq!(
            render(&run(&cfg, "2026-01", &other).unwrap()),
            [
                format!("other,2026-01,egress_bytes,GiB,{full},0,10240,100.000000000000,0.09,9.00"),
                "9.00,0.00,9.00".to_string(),
            ]
        );
    }

    #[test]
    fn an_override_starting_mid_period_leaves_the_global_rate_before_it() {
        // gamma: 3600 s every day of January = 1 vCPU-h a day.
        // [01-01, 01-11): no gamma entry yet → global 0.04: 10 × 0.04 = 0.40.
        // [01-11, 02-01): gamma's 0.03: 21 × 0.03 = 0.63. Total 1.03.
        let days: Vec<String> = (1..=31).map(|n| format!("2026-01-{n:02}")).collect();
        let rows: Vec<(&str, &str, &str)> = days
            .iter()
            .map(|day| ("compute_seconds", day.as_str(), "3600"))
            .collect();
        let inv = run(&config(OVERRIDES), "2026-01", &counters("gamma", &rows)).unwrap();
        assert_eq!(
            render(&inv),
            [
                "gamma,2026-01,compute_seconds,vCPU-hour,2026-01-01T00:00:00Z,2026-01-11T00:00:00Z,,,10.000000000000,0.0400,0.40",
                "gamma,2026-01,compute_seconds,vCPU-hour,2026-01-11T00:00:00Z,2026-02-01T00:00:00Z,,,21.000000000000,0.03,0.63",
                "1.03,0.00,1.03",
            ]
        );
        let book = PriceBook::from_config(&config(OVERRIDES));
        let rate = |t| {
            book.rate_at("gamma", "compute_seconds", &RateMatch::default(), ts(t))
                .map(|r| r.source)
        };
        assert_eq!(rate("2026-01-10T23:59:59Z"), Some(RateSource::Global));
        assert_eq!(rate("2026-01-11T00:00:00Z"), Some(RateSource::Tenant));
        assert_eq!(rate("2025-12-31T23:59:59Z"), None);
    }

    #[test]
    fn half_cents_round_away_from_zero_on_lines_and_discount() {
        // delta: 450 s / 3600 = 0.125 vCPU-h × 0.04 = 0.005 → 0.01 (half-even would give 0.00).
        // Discount 50 %: 0.01 × 50 / 100 = 0.005 → −0.01 (away from zero); total 0.00.
        let usage = counters("delta", &[("compute_seconds", "2026-01-31", "450")]);
        let inv = run(&config(OVERRIDES), "2026-01", &usage).unwrap();
        assert_eq!(
            render(&inv),
            [
                "delta,2026-01,compute_seconds,vCPU-hour,2026-01-01T00:00:00Z,2026-02-01T00:00:00Z,,,0.125000000000,0.0400,0.01",
                "0.01,-0.01,0.00",
            ]
        );
    }

    const STORAGE: &str = r#"
[[rates]]
metric = "storage_bytes"
effective_from = "2026-01-01"
unit_price = "126"
"#;

    #[test]
    fn a_storage_gauge_with_gaps_and_carried_in_samples() {
        // February 2026 is 28 days = 2419200 s; hold 1 h; 1 GiB = 2^30 bytes.
        // vol-a:
        //   01-31 23:30  2 GiB, next sample 02-01 01:00 is past the hold → holds to 00:30;
        //                inside February: 00:00–00:30 = 1800 s → 3600 GiB·s (carried in)
        //   02-01 01:00  1 GiB, next at 01:20 → 1200 s                → 1200 GiB·s
        //   02-01 01:20  1 GiB, next on 02-10 (a gap ≫ hold) → 3600 s  → 3600 GiB·s
        //   02-10 00:00  3 GiB, no next → 3600 s                       → 10800 GiB·s
        // vol-b:
        //   01-31 22:00  5 GiB, holds to 23:00, before the period      → 0
        // Σ = 19200 GiB·s; quantity = 19200 / 2419200 = 1/126 = 0.00793650793650…
        //   → 0.007936507937 (12 places, the 13th digit 5 is followed by 0793… so up).
        // Amount = 0.007936507937 × 126 = 1.000000000062 → 1.00.
        let gib = |n: i64| BigDecimal::from(n * (1 << 30));
        let sample = |t: &str, v: i64| GaugeSample {
            ts_micros: ts(t),
            value: gib(v),
        };
        let usage = TenantUsage {
            meters: Vec::new(),
            tenant_id: "epsilon".to_string(),
            counters: Vec::new(),
            gauges: vec![
                GaugeSeries {
                    metric: "storage_bytes".to_string(),
                    resource: Some("vol-a".to_string()),
                    samples: vec![
                        sample("2026-02-10T00:00:00Z", 3),
                        sample("2026-02-01T01:00:00Z", 1),
                        sample("2026-01-31T23:30:00Z", 2),
                        sample("2026-02-01T01:20:00Z", 1),
                    ],
                    held: Vec::new(),
                },
                GaugeSeries {
                    metric: "storage_bytes".to_string(),
                    resource: Some("vol-b".to_string()),
                    samples: vec![sample("2026-01-31T22:00:00Z", 5)],
                    held: Vec::new(),
                },
            ],
        };
        let inv = run(&config(STORAGE), "2026-02", &usage).unwrap();
        assert_eq!(
            render(&inv),
            [
                "epsilon,2026-02,storage_bytes,GiB-month,2026-02-01T00:00:00Z,2026-03-01T00:00:00Z,,,0.007936507937,126,1.00",
                "1.00,0.00,1.00",
            ]
        );

        // Month to date as of 02-01 01:10: 3600 GiB·s (carry-in) + 600 GiB·s (01:00–01:10)
        // = 4200 / 2419200 = 0.001736111111111… → 0.001736111111; × 126 = 0.218750000… → 0.22.
        let book = PriceBook::from_config(&config(STORAGE));
        let period = Period::parse("2026-02").unwrap();
        let mtd = invoice_until(
            &book,
            &config(STORAGE).catalog(),
            period,
            &usage,
            ts("2026-02-01T01:10:00Z"),
        )
        .unwrap();
        assert_eq!(mtd.lines.len(), 1);
        assert_eq!(mtd.lines[0].quantity.to_plain_string(), "0.001736111111");
        assert_eq!(
            format_micros(mtd.lines[0].segment_end),
            "2026-02-01T01:10:00Z"
        );
        assert_eq!(mtd.total.to_plain_string(), "0.22");
    }

    #[test]
    fn usage_without_a_rate_is_an_error_naming_tenant_and_metric() {
        // Egress has no rate at all in MID_MONTH_CHANGE.
        let usage = counters("zeta", &[("egress_bytes", "2026-01-02", "1")]);
        let err = run(&config(MID_MONTH_CHANGE), "2026-01", &usage).unwrap_err();
        assert!(
            matches!(
                &err,
                QueryError::NoRate { tenant, metric, from }
                    if tenant == "zeta" && metric == "egress_bytes" && from == "2026-01-01T00:00:00Z"
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("zeta") && err.to_string().contains("egress_bytes"));
        // Compute in December 2025 falls before the first compute rate (2026-01-01).
        let usage = counters("zeta", &[("compute_seconds", "2025-12-02", "1")]);
        assert!(matches!(
            run(&config(MID_MONTH_CHANGE), "2025-12", &usage),
            Err(QueryError::NoRate { .. })
        ));
        // No usage, no rate: an empty invoice, not an error.
        let empty = run(&config(MID_MONTH_CHANGE), "2025-12", &counters("zeta", &[])).unwrap();
        assert_eq!(render(&empty), ["0.00,0.00,0.00"]);
        // A metric outside the catalog, and a counter sum for a gauge, are errors too.
        let usage = counters("zeta", &[("gpu_seconds", "2026-01-02", "1")]);
        assert!(matches!(
            run(&config(MID_MONTH_CHANGE), "2026-01", &usage),
            Err(QueryError::UnknownMetric { .. })
        ));
        let usage = counters("zeta", &[("storage_bytes", "2026-01-02", "1")]);
        assert!(matches!(
            run(&config(MID_MONTH_CHANGE), "2026-01", &usage),
            Err(QueryError::WrongMetricKind { .. })
        ));
    }

    #[test]
    fn a_global_change_hidden_by_an_override_does_not_split() {
        let cfg = config(&format!(
            "{MID_MONTH_CHANGE}\n[[tenants.eta.rates]]\nmetric = \"compute_seconds\"\neffective_from = \"2025-06-01\"\nunit_price = \"0.01\"\n"
        ));
        let book = PriceBook::from_config(&cfg);
        let p = Period::parse("2026-01").unwrap();
        let all = RateMatch::default();
        let segs = book.segments(
            "eta",
            "compute_seconds",
            &all,
            p.start_micros(),
            p.end_micros(),
        );
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].rate.unwrap().source, RateSource::Tenant);
        assert_eq!(
            book.segments(
                "other",
                "compute_seconds",
                &all,
                p.start_micros(),
                p.end_micros()
            )
            .len(),
            2
        );
    }

    const DIMENSIONAL: &str = r#"
[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
unit_price = "0.02"
match = { region = "eu-*" }

[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
unit_price = "0.01"
match = { region = "eu-*", "labels.tier" = "cold" }

[[tenants.acme.rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
unit_price = "0.05"
"#;

    /// One GiB of egress on 2026-01-05 with the given (region, labels.tier).
    fn egress(tenant: &str, values: &[(Option<&str>, Option<&str>)]) -> TenantUsage {
        TenantUsage {
            meters: Vec::new(),
            tenant_id: tenant.to_string(),
            counters: values
                .iter()
                .map(|(region, tier)| CounterDay {
                    metric: "egress_bytes".to_string(),
                    day: day("2026-01-05"),
                    raw_sum: BigDecimal::from(1i64 << 30),
                    dimensions: vec![region.map(str::to_string), tier.map(str::to_string)],
                })
                .collect(),
            gauges: Vec::new(),
        }
    }

    #[test]
    fn dimensional_rates_pick_the_most_specific_match_or_refuse_unmatched_usage() {
        let cfg = config(DIMENSIONAL);
        let book = PriceBook::from_config(&cfg);
        // Dimensions in their fixed order: region, then the label.
        assert_eq!(
            book.dimensions("egress_bytes")
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["region", "labels.tier"]
        );
        assert!(book.dimensions("compute_seconds").is_empty());
        // eu + cold: two keys beat one (0.01); eu + hot: 0.02; two eu GiB add up
        // on one line.
        let usage = egress(
            "zeta",
            &[
                (Some("eu-west-1"), Some("cold")),
                (Some("eu-west-1"), Some("hot")),
                (Some("eu-central-1"), None),
            ],
        );
        let lines: Vec<(String, String, String)> = run(&cfg, "2026-01", &usage)
            .unwrap()
            .lines
            .iter()
            .map(|l| {
                (
                    l.dimensions.clone(),
                    l.quantity.to_plain_string(),
                    l.amount.to_plain_string(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("region=eu-*".into(), "2.000000000000".into(), "0.04".into()),
                (
                    "region=eu-*;labels.tier=cold".into(),
                    "1.000000000000".into(),
                    "0.01".into()
                ),
            ]
        );
        // No rate matches us-east-1 and there is no default line: unpriced.
        let err = run(
            &cfg,
            "2026-01",
            &egress("zeta", &[(Some("us-east-1"), None)]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, QueryError::NoRate { tenant, metric, .. } if tenant == "zeta" && metric == "egress_bytes"),
            "{err:?}"
        );
        // A missing region matches no pattern, not even the glob.
        assert!(run(&cfg, "2026-01", &egress("zeta", &[(None, Some("cold"))])).is_err());
        // acme's own rate (no match) comes before every global one.
        let acme = run(
            &cfg,
            "2026-01",
            &egress(
                "acme",
                &[(Some("eu-west-1"), Some("cold")), (Some("us-east-1"), None)],
            ),
        )
        .unwrap();
        assert_eq!(acme.lines.len(), 1);
        assert_eq!(acme.lines[0].dimensions, "");
        assert_eq!(acme.lines[0].amount.to_plain_string(), "0.10");
    }

    fn property_config() -> Config {
        config(&format!(
            "{TIERS_ACROSS_SEGMENTS}\n{STORAGE}\n[[rates]]\nmetric = \"compute_seconds\"\neffective_from = \"2026-01-09\"\nunit_price = \"0.0437\"\n[tenants.t]\ndiscount_percent = \"12.5\"\n[[tenants.t.rates]]\nmetric = \"api_calls\"\neffective_from = \"2026-01-20\"\nunit_price = \"0.011\"\n"
        ))
    }

    /// Random usage of tenant `t` in January 2026: counter sums and one storage series.
    fn usage_strategy() -> impl Strategy<Value = TenantUsage> {
        let counter = (
            prop_oneof![Just("api_calls"), Just("compute_seconds")],
            9u32..=31,
            0u64..50_000_000,
        )
            .prop_map(|(metric, day_of_month, thousandths)| CounterDay {
                dimensions: Vec::new(),
                metric: metric.to_string(),
                day: NaiveDate::from_ymd_opt(2026, 1, day_of_month).unwrap(),
                raw_sum: BigDecimal::new(thousandths.into(), 3),
            });
        let start = ts("2026-01-01T00:00:00Z");
        let sample = (-7_200i64..31 * 86_400, 0u64..1 << 40).prop_map(move |(s, v)| GaugeSample {
            ts_micros: start + s * 1_000_000,
            value: BigDecimal::from(v),
        });
        (
            prop::collection::vec(counter, 0..20),
            prop::collection::vec(sample, 0..20),
        )
            .prop_map(|(counters, samples)| TenantUsage {
                meters: Vec::new(),
                tenant_id: "t".to_string(),
                counters,
                gauges: vec![GaugeSeries {
                    metric: "storage_bytes".to_string(),
                    resource: Some("vol".to_string()),
                    samples,
                    held: Vec::new(),
                }],
            })
    }

    proptest! {
        #[test]
        fn total_is_the_sum_of_lines_plus_discount(usage in usage_strategy()) {
            let inv = run(&property_config(), "2026-01", &usage).unwrap();
            let sum: BigDecimal = inv.lines.iter().map(|l| &l.amount).sum();
            prop_assert_eq!(&inv.subtotal, &sum);
            prop_assert_eq!(&inv.total, &(&sum + &inv.discount));
            prop_assert!(inv.discount <= BigDecimal::zero());
            for line in &inv.lines {
                prop_assert!(line.quantity > BigDecimal::zero());
                prop_assert_eq!(&line.amount, &round_money(&(&line.quantity * &line.unit_price)));
            }
        }

        #[test]
        fn lines_do_not_depend_on_input_order_or_splitting(
            (usage, seed) in usage_strategy().prop_flat_map(|u| (Just(u), any::<u64>()))
        ) {
            let cfg = property_config();
            let expected = run(&cfg, "2026-01", &usage).unwrap();
            // Reverse and rotate every list, and split each daily sum in two parts.
            let mut shuffled = usage.clone();
            shuffled.counters.reverse();
            let n = shuffled.counters.len().max(1);
            shuffled.counters.rotate_left((seed as usize) % n);
            let mut split = Vec::new();
            for c in shuffled.counters {
                let half = round_money(&(&c.raw_sum / BigDecimal::from(2)));
                split.push(CounterDay { raw_sum: &c.raw_sum - &half, ..c.clone() });
                split.push(CounterDay { raw_sum: half, ..c });
            }
            shuffled.counters = split;
            for series in &mut shuffled.gauges {
                series.samples.reverse();
                let m = series.samples.len().max(1);
                series.samples.rotate_left((seed as usize / 7) % m);
            }
            prop_assert_eq!(run(&cfg, "2026-01", &shuffled).unwrap(), expected);
        }
    }
}
