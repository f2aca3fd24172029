//! The price book: `[[rates]]`, their tiers and `[tenants.<id>]`
//! overrides, and their checks.

use std::collections::BTreeMap;

use bigdecimal::BigDecimal;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::metrics::MetricCatalog;
use super::values::ConfigDecimal;

/// One entry of a price book (docs/reference.md#price-book-and-tenants): a flat price or
/// graduated tiers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateEntry {
    /// The metric priced.
    pub metric: String,
    /// UTC date from whose 00:00 the rate applies.
    pub effective_from: String,
    /// Flat price per billing unit.
    #[serde(default)]
    pub unit_price: Option<ConfigDecimal>,
    /// Graduated tiers by billing quantity in the month.
    #[serde(default)]
    pub tiers: Option<Vec<Tier>>,
}

/// One band of graduated pricing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Upper bound of the band in billing units; absent for the last band.
    #[serde(default)]
    pub up_to: Option<ConfigDecimal>,
    /// Price per billing unit inside the band.
    pub unit_price: ConfigDecimal,
}

/// Per-tenant settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Discount on the subtotal, in percent.
    #[serde(default)]
    pub discount_percent: Option<ConfigDecimal>,
    /// Monthly quotas in raw units, by metric.
    #[serde(default)]
    pub quotas: BTreeMap<String, ConfigDecimal>,
    /// Rates that override the global price book for this tenant.
    #[serde(default)]
    pub rates: Vec<RateEntry>,
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
        if !catalog.contains(&rate.metric) {
            return Err(ConfigError::new(
                key("metric"),
                format!("{:?} is not a metric of the catalog", rate.metric),
            ));
        }
        if NaiveDate::parse_from_str(&rate.effective_from, "%Y-%m-%d").is_err() {
            return Err(ConfigError::new(
                key("effective_from"),
                "must be a date YYYY-MM-DD",
            ));
        }
        if !seen.insert((rate.metric.as_str(), rate.effective_from.as_str())) {
            return Err(ConfigError::new(
                key("effective_from"),
                format!(
                    "a rate for {} from {} is already defined",
                    rate.metric, rate.effective_from
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
