//! The price book: rates resolved per tenant, metric, instant and event
//! dimensions (tenant overrides first, then the global entries; the most
//! specific `match` within them), and the rate segments of a period.
//!
//! The entries of one metric with the same `match` form a *rate line*: the
//! line's price changes at each of its entries' `effective_from`, and tiers
//! count the quantity of the line. Rates without `match` are the metric's
//! default line, which also takes the events no other line matches.

use std::collections::BTreeMap;

use allot_schemas::config::{Config, Dimension, MatchClasses, RateEntry, RateMatch, RatePrice};
use allot_schemas::time::day_start_micros;
use bigdecimal::{BigDecimal, Zero};
use chrono::NaiveDate;

use crate::credits::Grant;

/// Whether a rate came from the global price book or a tenant's overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSource {
    /// The global `[[rates]]`.
    Global,
    /// The tenant's `[[tenants.<id>.rates]]`.
    Tenant,
}

/// How a rate prices a billing quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Price {
    /// One price per billing unit.
    Flat(BigDecimal),
    /// Graduated bands by cumulative billing quantity in the period.
    Graduated(Vec<TierBand>),
}

/// One band `[from, to)` of graduated pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierBand {
    /// Lower bound (inclusive), in billing units.
    pub from: BigDecimal,
    /// Upper bound (exclusive); `None` for the last, unbounded band.
    pub to: Option<BigDecimal>,
    /// Price per billing unit inside the band.
    pub unit_price: BigDecimal,
}

/// A resolved price-book entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// The metric priced.
    pub metric: String,
    /// The UTC date from whose 00:00 the rate applies.
    pub effective_from: NaiveDate,
    /// Global or tenant override.
    pub source: RateSource,
    /// Flat or graduated.
    pub price: Price,
    /// The events it prices; empty for every event.
    pub rate_match: RateMatch,
}

impl Rate {
    /// The instant the rate starts, UTC microseconds.
    pub fn starts_micros(&self) -> i64 {
        day_start_micros(self.effective_from)
    }
}

#[derive(Debug, Clone, Default)]
struct TenantBook {
    discount_percent: BigDecimal,
    minimum_monthly: Option<BigDecimal>,
    credits: Vec<Grant>,
    rates: BTreeMap<String, Vec<Rate>>,
}

/// The price book of a config: global rates and per-tenant overrides and discounts,
/// indexed by metric and sorted by `effective_from`.
#[derive(Debug, Clone)]
pub struct PriceBook {
    currency: String,
    global: BTreeMap<String, Vec<Rate>>,
    tenants: BTreeMap<String, TenantBook>,
    /// Per metric whose rates (global or a tenant's) match on dimensions, the
    /// classes of events they tell apart (the catalog's).
    classes: BTreeMap<String, MatchClasses>,
}

/// The values of an event's dimensions, in the order of
/// [`PriceBook::dimensions`] for its metric (`None` where the event has none).
pub type DimensionValues = Vec<Option<String>>;

/// A stretch `[start, end)` of a period with one resolved rate (or none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSegment<'a> {
    /// Start instant, UTC microseconds.
    pub start: i64,
    /// End instant (exclusive), UTC microseconds.
    pub end: i64,
    /// The rate in force, `None` where no entry covers the stretch.
    pub rate: Option<&'a Rate>,
}

fn index_rates(entries: &[RateEntry], source: RateSource) -> BTreeMap<String, Vec<Rate>> {
    let mut by_metric: BTreeMap<String, Vec<Rate>> = BTreeMap::new();
    for entry in entries {
        let price = match entry.price() {
            RatePrice::Flat(price) => Price::Flat(price.0.clone()),
            RatePrice::Tiers(tiers) => {
                let mut bands = Vec::with_capacity(tiers.len());
                let mut from = BigDecimal::zero();
                for tier in tiers {
                    let to = tier.up_to.as_ref().map(|u| u.0.clone());
                    bands.push(TierBand {
                        from: from.clone(),
                        to: to.clone(),
                        unit_price: tier.unit_price.0.clone(),
                    });
                    if let Some(to) = to {
                        from = to;
                    }
                }
                Price::Graduated(bands)
            }
        };
        by_metric
            .entry(entry.metric.clone())
            .or_default()
            .push(Rate {
                metric: entry.metric.clone(),
                effective_from: entry.effective_from.0,
                source,
                price,
                rate_match: entry.rate_match(),
            });
    }
    for rates in by_metric.values_mut() {
        rates.sort_by_key(|rate| rate.effective_from);
    }
    by_metric
}

/// The entry of `rates` (sorted by `effective_from`) of rate line `line` in
/// force at `t`.
fn latest_at<'a>(rates: Option<&'a Vec<Rate>>, line: &RateMatch, t: i64) -> Option<&'a Rate> {
    rates?
        .iter()
        .rev()
        .find(|rate| rate.rate_match == *line && rate.starts_micros() <= t)
}

/// The most specific entry of `rates` in force at `t` whose match the event
/// with `values` (of `dimensions`) satisfies. Validation refused ties.
fn best_match<'a>(
    rates: Option<&'a Vec<Rate>>,
    dimensions: &[Dimension],
    values: &[Option<String>],
    t: i64,
) -> Option<&'a Rate> {
    let value_of = |dimension: &Dimension| {
        dimensions
            .iter()
            .position(|d| d == dimension)
            .and_then(|i| values.get(i)?.as_deref())
    };
    let mut best: Option<&Rate> = None;
    // Newest first: the first entry seen of a line is the one in force.
    let mut lines_seen: Vec<&RateMatch> = Vec::new();
    for rate in rates?.iter().rev().filter(|rate| rate.starts_micros() <= t) {
        if lines_seen.contains(&&rate.rate_match) {
            continue;
        }
        lines_seen.push(&rate.rate_match);
        if rate.rate_match.matches(value_of)
            && best.is_none_or(|b| rate.rate_match.specificity() > b.rate_match.specificity())
        {
            best = Some(rate);
        }
    }
    best
}

impl PriceBook {
    /// Indexes the price book of `config`, which its validation made whole.
    pub fn from_config(config: &Config) -> Self {
        let global = index_rates(&config.rates, RateSource::Global);
        let mut tenants = BTreeMap::new();
        for (tenant, settings) in &config.tenants {
            let rates = index_rates(&settings.rates, RateSource::Tenant);
            let discount_percent = settings
                .discount_percent
                .as_ref()
                .map_or_else(BigDecimal::zero, |d| d.0.clone());
            tenants.insert(
                tenant.clone(),
                TenantBook {
                    discount_percent,
                    minimum_monthly: settings.minimum_monthly.as_ref().map(|m| m.0.clone()),
                    credits: settings.credits.iter().map(Grant::from_config).collect(),
                    rates,
                },
            );
        }
        PriceBook {
            currency: config.currency.clone(),
            global,
            tenants,
            classes: config.catalog().dimensional_counters().clone(),
        }
    }

    /// Every metric whose rates match on dimensions, with the classes of its
    /// events those matches tell apart.
    pub fn all_classes(&self) -> impl Iterator<Item = (&str, &MatchClasses)> {
        self.classes
            .iter()
            .map(|(metric, classes)| (metric.as_str(), classes))
    }

    /// The tenant's monthly commitment, when it has one.
    pub fn minimum_monthly(&self, tenant: &str) -> Option<&BigDecimal> {
        self.tenants.get(tenant)?.minimum_monthly.as_ref()
    }

    /// The tenant's prepaid credit grants (none for most tenants).
    pub fn credit_grants(&self, tenant: &str) -> &[Grant] {
        self.tenants
            .get(tenant)
            .map_or(&[], |t| t.credits.as_slice())
    }

    /// The tenants with credit grants, with them.
    pub fn tenants_with_credits(&self) -> impl Iterator<Item = (&str, &[Grant])> {
        self.tenants
            .iter()
            .filter(|(_, t)| !t.credits.is_empty())
            .map(|(id, t)| (id.as_str(), t.credits.as_slice()))
    }

    /// The dimensions the rates of `metric` match on, in a fixed order: usage
    /// must be grouped by their values to be priced (none for most metrics).
    pub fn dimensions(&self, metric: &str) -> &[Dimension] {
        self.classes
            .get(metric)
            .map_or(&[], |classes| classes.dimensions())
    }

    /// The rate line an event of `metric` at `t` with `values` (of
    /// [`Self::dimensions`]) is priced on, and the line's rate then: the
    /// tenant's most specific matching entry, else the global one; an event
    /// nothing matches falls to the default line, whose rate may be `None`.
    pub fn resolve(
        &self,
        tenant: &str,
        metric: &str,
        t: i64,
        values: &[Option<String>],
    ) -> (RateMatch, Option<&Rate>) {
        let dimensions = self.dimensions(metric);
        let own = self
            .tenants
            .get(tenant)
            .and_then(|book| best_match(book.rates.get(metric), dimensions, values, t));
        match own.or_else(|| best_match(self.global.get(metric), dimensions, values, t)) {
            Some(rate) => (rate.rate_match.clone(), Some(rate)),
            None => (RateMatch::default(), None),
        }
    }

    /// The currency of every price.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The tenant's discount in percent (0 when it has none).
    pub fn discount_percent(&self, tenant: &str) -> BigDecimal {
        self.tenants
            .get(tenant)
            .map_or_else(BigDecimal::zero, |t| t.discount_percent.clone())
    }

    /// The rate of rate line `line` of `metric` for `tenant` at instant `t`:
    /// the tenant's entry of the line with the latest `effective_from ≤ t`, else
    /// the global one, else none.
    pub fn rate_at(&self, tenant: &str, metric: &str, line: &RateMatch, t: i64) -> Option<&Rate> {
        let own = self
            .tenants
            .get(tenant)
            .and_then(|book| latest_at(book.rates.get(metric), line, t));
        own.or_else(|| latest_at(self.global.get(metric), line, t))
    }

    /// The instants inside `(from, to)` where any rate of `metric` for `tenant`
    /// starts, ascending: between two of them, every event resolves as at the
    /// first.
    pub fn changes(&self, tenant: &str, metric: &str, from: i64, to: i64) -> Vec<i64> {
        let tenant_rates = self.tenants.get(tenant).and_then(|b| b.rates.get(metric));
        let mut cuts: Vec<i64> = tenant_rates
            .into_iter()
            .chain(self.global.get(metric))
            .flatten()
            .map(Rate::starts_micros)
            .filter(|&t| from < t && t < to)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// The days on which a rate of `metric` starts, global or any tenant's, in
    /// no order: between two of them no price of the metric changes for anyone.
    pub fn price_days<'a>(&'a self, metric: &'a str) -> impl Iterator<Item = NaiveDate> + 'a {
        self.tenants
            .values()
            .filter_map(move |book| book.rates.get(metric))
            .chain(self.global.get(metric))
            .flatten()
            .map(|rate| rate.effective_from)
    }

    /// Splits `[from, to)` into segments at the instants where the rate of rate
    /// line `line` of `metric` for `tenant` changes; adjacent stretches with the
    /// same rate are one segment.
    pub fn segments(
        &self,
        tenant: &str,
        metric: &str,
        line: &RateMatch,
        from: i64,
        to: i64,
    ) -> Vec<RateSegment<'_>> {
        if from >= to {
            return Vec::new();
        }
        let tenant_rates = self.tenants.get(tenant).and_then(|b| b.rates.get(metric));
        let mut cuts: Vec<i64> = tenant_rates
            .into_iter()
            .chain(self.global.get(metric))
            .flatten()
            .filter(|rate| rate.rate_match == *line)
            .map(Rate::starts_micros)
            .filter(|&t| from < t && t < to)
            .collect();
        cuts.push(from);
        cuts.push(to);
        cuts.sort_unstable();
        cuts.dedup();
        let mut segments: Vec<RateSegment<'_>> = Vec::new();
        for pair in cuts.windows(2) {
            let rate = self.rate_at(tenant, metric, line, pair[0]);
            match segments.last_mut() {
                Some(last) if same_rate(last.rate, rate) => last.end = pair[1],
                _ => segments.push(RateSegment {
                    start: pair[0],
                    end: pair[1],
                    rate,
                }),
            }
        }
        segments
    }
}

fn same_rate(a: Option<&Rate>, b: Option<&Rate>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        _ => false,
    }
}
