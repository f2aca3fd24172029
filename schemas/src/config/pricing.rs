//! The price book: `[[rates]]`, their tiers and `[tenants.<id>]`
//! overrides, and their checks.

use std::collections::BTreeMap;

use bigdecimal::BigDecimal;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::dimensions::{Dimension, Glob, RateMatch};
use super::metrics::{MetricCatalog, MetricKind};
use super::values::{ConfigDate, ConfigDecimal};

/// One entry of a price book (docs/reference.md#price-book-and-tenants): the
/// price of a metric from a date on, flat or in graduated tiers, for the
/// events its `match` selects. A metric has at most one entry per date and
/// `match`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateEntry {
    /// The metric priced, one of the catalog's.
    pub metric: String,
    /// The UTC date (`YYYY-MM-DD`) from whose 00:00 the rate applies, until
    /// the metric's next entry.
    pub effective_from: ConfigDate,
    /// A flat price per billing unit (not negative); give this or `tiers`.
    #[serde(default)]
    pub unit_price: Option<ConfigDecimal>,
    /// Graduated tiers by the month's billing quantity, in increasing
    /// `up_to` order, the last without `up_to`; give this or `unit_price`.
    #[serde(default)]
    pub tiers: Option<Vec<Tier>>,
    /// A dimensional rate: the event dimensions it prices, as
    /// `{ region = "eu-*", service = "gpu", "labels.instance_class" = "m7g.*" }`
    /// (keys `region`, `service` or `labels.KEY`; values exact or with `*`
    /// standing for any text). An event takes the matching rate with the most
    /// keys; two rates of the same metric with as many keys that one event could
    /// both match are refused. Counters only; unset, every event.
    #[serde(default)]
    pub r#match: BTreeMap<String, String>,
}

/// How an entry prices: the one of `unit_price` and `tiers` it has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RatePrice<'a> {
    /// One price per billing unit.
    Flat(&'a ConfigDecimal),
    /// Graduated bands, in increasing `up_to` order, the last unbounded.
    Tiers(&'a [Tier]),
}

impl RateEntry {
    /// The entry's price. Validation lets through exactly one of `unit_price`
    /// and a non-empty `tiers`, so an entry of a [`super::Config`] is one or
    /// the other.
    pub fn price(&self) -> RatePrice<'_> {
        match (&self.unit_price, &self.tiers) {
            (Some(price), _) => RatePrice::Flat(price),
            (None, tiers) => RatePrice::Tiers(tiers.as_deref().unwrap_or_default()),
        }
    }

    /// The entry's `match`. Validation lets through only known dimensions, so
    /// in a [`super::Config`] every key is one.
    pub fn rate_match(&self) -> RateMatch {
        RateMatch::new(
            self.r#match
                .iter()
                .filter_map(|(key, pattern)| Some((Dimension::parse(key)?, Glob::new(pattern))))
                .collect(),
        )
    }
}

/// One band of graduated pricing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Where the band ends, in billing units in the month; only the last
    /// band has none.
    #[serde(default)]
    pub up_to: Option<ConfigDecimal>,
    /// The price per billing unit inside the band (not negative).
    pub unit_price: ConfigDecimal,
}

/// One tenant's discount, quotas and own rates. Tenant ids match
/// `^[a-z0-9][a-z0-9_-]{0,62}$`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The discount on the invoice's subtotal, in percent (0 to 100); unset,
    /// none.
    #[serde(default)]
    pub discount_percent: Option<ConfigDecimal>,
    /// A quota per metric of the catalog, above 0: for a counter, raw units
    /// a month; for a gauge, a level; for a `max`, `unique_count` or `latest`
    /// metric, its month-to-date figure. Tenant health warns as usage nears it.
    #[serde(default)]
    pub quotas: BTreeMap<String, ConfigDecimal>,
    /// The tenant's own price-book entries, used in place of the global
    /// ones for the same metric.
    #[serde(default)]
    pub rates: Vec<RateEntry>,
    /// A commitment: the least the tenant pays a month (not negative). When
    /// subtotal + discount is below it, the invoice gets a
    /// `commitment_true_up` line of the difference; unset, none.
    #[serde(default)]
    pub minimum_monthly: Option<ConfigDecimal>,
    /// Prepaid credit grants, drawn down by the invoice totals
    /// (docs/reference.md#commitments-and-credits).
    #[serde(default)]
    pub credits: Vec<CreditGrant>,
    /// Labels of the tenant (`{ tier = "enterprise" }`), which alert rules
    /// select tenants by (`tenant_labels`): at most 32, keys of 1 to 64 bytes
    /// from `a-z`, `A-Z`, `0-9`, `_`, `-` and `.`, values at most 256 bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One prepaid credit grant of a tenant: an amount its invoice totals are paid
/// from, month after month, from `effective_from` until `expires`
/// (docs/reference.md#commitments-and-credits).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreditGrant {
    /// The grant's name, unique among the tenant's grants; invoices name it
    /// in the `adjusts` column of each draw. Letters, digits, `_`, `-` and
    /// `.`, starting with a letter or digit, at most 64 characters.
    pub id: String,
    /// The credit granted, above 0, in cents at most (`"500.00"`).
    pub amount: ConfigDecimal,
    /// The UTC date from whose 00:00 the grant pays invoices: from the month
    /// containing it on.
    pub effective_from: ConfigDate,
    /// The UTC date at whose 00:00 the grant lapses (exclusive), after
    /// `effective_from`: it pays the months that begin before that instant,
    /// and what is left after the last of them is reported expired. Unset,
    /// never.
    #[serde(default)]
    pub expires: Option<ConfigDate>,
    /// Among grants expiring together, the higher is drawn first, then by
    /// `id`; unset, 0.
    #[serde(default)]
    pub priority: Option<i64>,
}

/// Whether `id` names a credit grant: `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`.
pub fn is_valid_grant_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub(super) fn validate_credits(grants: &[CreditGrant], prefix: &str) -> Result<(), ConfigError> {
    let zero = BigDecimal::from(0);
    let mut seen = std::collections::BTreeSet::new();
    for (i, grant) in grants.iter().enumerate() {
        let key = |field: &str| format!("{prefix}[{i}].{field}");
        if !is_valid_grant_id(&grant.id) {
            return Err(ConfigError::new(
                key("id"),
                "grant ids match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
            ));
        }
        if !seen.insert(grant.id.as_str()) {
            return Err(ConfigError::new(
                key("id"),
                format!(
                    "{:?} is the id of an earlier grant of this tenant",
                    grant.id
                ),
            ));
        }
        if grant.amount.0 <= zero {
            return Err(ConfigError::new(key("amount"), "must be greater than 0"));
        }
        if grant.amount.0.with_scale(2) != grant.amount.0 {
            return Err(ConfigError::new(
                key("amount"),
                "is money: at most 2 decimals",
            ));
        }
        if let Some(expires) = grant.expires
            && expires <= grant.effective_from
        {
            return Err(ConfigError::new(
                key("expires"),
                "must be after effective_from",
            ));
        }
    }
    Ok(())
}

pub(super) fn validate_rates(
    rates: &[RateEntry],
    prefix: &str,
    catalog: &MetricCatalog,
) -> Result<(), ConfigError> {
    let zero = BigDecimal::from(0);
    let mut seen = std::collections::BTreeSet::new();
    for (i, rate) in rates.iter().enumerate() {
        let key = |field: &str| format!("{prefix}[{i}].{field}");
        let Some(spec) = catalog.get(&rate.metric) else {
            return Err(ConfigError::new(
                key("metric"),
                format!("{:?} is not a metric of the catalog", rate.metric),
            ));
        };
        for (dimension, pattern) in &rate.r#match {
            let key = key(&format!("match.{dimension}"));
            if Dimension::parse(dimension).is_none() {
                return Err(ConfigError::new(
                    key,
                    "a rate matches on region, service or labels.KEY",
                ));
            }
            if pattern.is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
            if spec.kind != MetricKind::Counter {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{} is a {} metric; only counters take a match",
                        rate.metric,
                        spec.kind.as_str()
                    ),
                ));
            }
        }
        let rate_match = rate.rate_match();
        if !seen.insert((rate.metric.as_str(), rate.effective_from, rate_match)) {
            return Err(ConfigError::new(
                key("effective_from"),
                format!(
                    "a rate for {} from {} with this match is already defined",
                    rate.metric, rate.effective_from.0
                ),
            ));
        }
        match (&rate.unit_price, &rate.tiers) {
            (Some(price), None) if price.0 < zero => {
                return Err(ConfigError::new(key("unit_price"), "must not be negative"));
            }
            (Some(_), None) => {}
            (None, Some(tiers)) => validate_tiers(tiers, &key("tiers"))?,
            _ => {
                return Err(ConfigError::new(
                    key("unit_price"),
                    "give exactly one of unit_price or tiers",
                ));
            }
        }
    }
    refuse_ties(rates, prefix)
}

/// Two rates of one metric whose different matches have as many keys and could
/// both match one event leave that event without a most specific rate: the
/// configuration is refused, naming both.
fn refuse_ties(rates: &[RateEntry], prefix: &str) -> Result<(), ConfigError> {
    let matches: Vec<RateMatch> = rates.iter().map(RateEntry::rate_match).collect();
    for (i, (rate, mine)) in rates.iter().zip(&matches).enumerate() {
        for (j, (other, theirs)) in rates.iter().zip(&matches).enumerate().skip(i + 1) {
            if rate.metric == other.metric
                && mine != theirs
                && mine.specificity() == theirs.specificity()
                && mine.overlaps(theirs)
            {
                return Err(ConfigError::new(
                    format!("{prefix}[{j}].match"),
                    format!(
                        "ties with {prefix}[{i}].match: an event of {} can match both \
                         ({mine} and {theirs}) with as many keys; make one more specific \
                         or keep their patterns apart",
                        rate.metric
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn validate_tiers(tiers: &[Tier], prefix: &str) -> Result<(), ConfigError> {
    let zero = BigDecimal::from(0);
    let mut previous = zero.clone();
    for (i, tier) in tiers.iter().enumerate() {
        let key = |field: &str| format!("{prefix}[{i}].{field}");
        if tier.unit_price.0 < zero {
            return Err(ConfigError::new(key("unit_price"), "must not be negative"));
        }
        let last = i + 1 == tiers.len();
        match (&tier.up_to, last) {
            (None, true) => {}
            (None, false) => {
                return Err(ConfigError::new(
                    key("up_to"),
                    "only the last tier may be unbounded",
                ));
            }
            (Some(_), true) => {
                return Err(ConfigError::new(
                    key("up_to"),
                    "the last tier must be unbounded (no up_to)",
                ));
            }
            (Some(up_to), false) if up_to.0 <= previous => {
                return Err(ConfigError::new(
                    key("up_to"),
                    "tiers must have increasing up_to bounds above 0",
                ));
            }
            (Some(up_to), false) => previous = up_to.0.clone(),
        }
    }
    if tiers.is_empty() {
        return Err(ConfigError::new(prefix, "needs at least one tier"));
    }
    Ok(())
}
