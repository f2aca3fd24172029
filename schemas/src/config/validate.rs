//! The one validation pass: [`RawConfig::validate`] checks what types alone
//! cannot, section by section, and resolves the metric catalog.

use std::collections::BTreeMap;

use bigdecimal::BigDecimal;

use super::dimensions::{MatchClasses, RateMatch};
use super::metrics::{
    CountedField, DEFAULT_GAUGE_HOLD, DEFAULT_MAX_DISTINCT, DistinctField, MAX_DISTINCT_LIMIT,
    MetricCatalog, MetricKind, MetricSpec, is_valid_metric_name,
};
use super::pricing::{validate_credits, validate_rates};
use super::raw::RawConfig;
use super::{Config, ConfigError};
use crate::event::{MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS};
use crate::tenant::is_valid_tenant_id;

impl RawConfig {
    /// Checks every key and gives the ready settings; the error names the
    /// first offending key.
    pub fn validate(self) -> Result<Config, ConfigError> {
        self.validate_currency()?;
        self.validate_metrics()?;
        let mut catalog = self.resolve_catalog();
        validate_rates(&self.rates, "rates", &catalog)?;
        self.validate_tenants(&catalog)?;
        catalog.match_classes = self.match_classes();
        self.ingest.validate()?;
        self.noisy.validate()?;
        self.api.validate()?;
        let alert_rules = self.alerts.validate(&catalog, &self.tenants)?;
        let RawConfig {
            currency,
            lake,
            kafka,
            ingest,
            metrics,
            rates,
            tenants,
            health,
            noisy,
            api,
            reports,
            alerts,
        } = self;
        Ok(Config {
            currency,
            lake,
            kafka,
            ingest,
            metrics,
            rates,
            tenants,
            health,
            noisy,
            api,
            reports,
            alerts,
            catalog,
            alert_rules,
        })
    }

    /// The built-in metrics plus (or replaced by) the configured ones, a
    /// gauge's hold defaulting to [`DEFAULT_GAUGE_HOLD`].
    fn resolve_catalog(&self) -> MetricCatalog {
        let mut catalog = MetricCatalog::default();
        for (name, def) in &self.metrics {
            let hold = (def.kind == MetricKind::Gauge)
                .then(|| def.hold.map_or(DEFAULT_GAUGE_HOLD, |h| h.0));
            // Checked by `validate_metrics`: a unique_count has a valid field.
            let distinct = def
                .field
                .as_deref()
                .and_then(CountedField::parse)
                .filter(|_| def.kind == MetricKind::UniqueCount)
                .map(|field| DistinctField {
                    field,
                    max_distinct: def.max_distinct.unwrap_or(DEFAULT_MAX_DISTINCT),
                });
            catalog.metrics.insert(
                name.clone(),
                MetricSpec {
                    kind: def.kind,
                    unit: def.unit.clone(),
                    divisor: def.divisor.0.clone(),
                    hold,
                    distinct,
                },
            );
        }
        catalog
    }

    /// Per metric whose rates (global or a tenant's) match on dimensions, the
    /// classes those matches tell apart. Validation allows `match` on
    /// counters only.
    fn match_classes(&self) -> BTreeMap<String, MatchClasses> {
        let mut matches: BTreeMap<String, Vec<RateMatch>> = BTreeMap::new();
        for rate in self
            .rates
            .iter()
            .chain(self.tenants.values().flat_map(|t| &t.rates))
        {
            matches
                .entry(rate.metric.clone())
                .or_default()
                .push(rate.rate_match());
        }
        matches
            .into_iter()
            .map(|(metric, matches)| (metric, MatchClasses::new(matches)))
            .filter(|(_, classes)| !classes.is_empty())
            .collect()
    }

    /// `currency`: a three-letter code.
    fn validate_currency(&self) -> Result<(), ConfigError> {
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::new(
                "currency",
                "must be a three-letter ISO 4217 code such as \"USD\"",
            ));
        }
        Ok(())
    }

    /// `[metrics.*]`: names, divisors, gauge holds and what a `unique_count`
    /// counts.
    fn validate_metrics(&self) -> Result<(), ConfigError> {
        let zero = BigDecimal::from(0);
        for (name, def) in &self.metrics {
            let key = |field: &str| format!("metrics.{name}.{field}");
            if !is_valid_metric_name(name) {
                return Err(ConfigError::new(
                    format!("metrics.{name}"),
                    "metric names match ^[a-z][a-z0-9_]{0,63}$",
                ));
            }
            if def.divisor.0 <= zero {
                return Err(ConfigError::new(key("divisor"), "must be greater than 0"));
            }
            match (def.kind, def.hold) {
                (MetricKind::Gauge, Some(hold)) if hold.0.is_zero() => {
                    return Err(ConfigError::new(key("hold"), "must be greater than 0"));
                }
                (MetricKind::Gauge, _) | (_, None) => {}
                (_, Some(_)) => {
                    return Err(ConfigError::new(key("hold"), "only gauges have a hold"));
                }
            }
            let unique = def.kind == MetricKind::UniqueCount;
            match (&def.field, unique) {
                (None, true) => {
                    return Err(ConfigError::new(
                        key("field"),
                        "a unique_count metric needs the field it counts: \
                         resource, region, service or labels.KEY",
                    ));
                }
                (Some(field), true) if CountedField::parse(field).is_none() => {
                    return Err(ConfigError::new(
                        key("field"),
                        format!("{field:?} is not resource, region, service or labels.KEY"),
                    ));
                }
                (Some(_), false) => {
                    return Err(ConfigError::new(
                        key("field"),
                        "only unique_count metrics have a field",
                    ));
                }
                _ => {}
            }
            match (def.max_distinct, unique) {
                (Some(limit), true) if !(1..=MAX_DISTINCT_LIMIT).contains(&limit) => {
                    return Err(ConfigError::new(
                        key("max_distinct"),
                        format!("must be between 1 and {MAX_DISTINCT_LIMIT}"),
                    ));
                }
                (Some(_), false) => {
                    return Err(ConfigError::new(
                        key("max_distinct"),
                        "only unique_count metrics have a max_distinct",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `[tenants.*]`: ids, discounts, quotas, rate overrides and labels.
    fn validate_tenants(&self, catalog: &MetricCatalog) -> Result<(), ConfigError> {
        let zero = BigDecimal::from(0);
        let hundred = BigDecimal::from(100);
        for (tenant, settings) in &self.tenants {
            let key = |field: &str| format!("tenants.{tenant}.{field}");
            if !is_valid_tenant_id(tenant) {
                return Err(ConfigError::new(
                    format!("tenants.{tenant}"),
                    "tenant ids match ^[a-z0-9][a-z0-9_-]{0,62}$",
                ));
            }
            if let Some(discount) = &settings.discount_percent
                && (discount.0 < zero || discount.0 > hundred)
            {
                return Err(ConfigError::new(
                    key("discount_percent"),
                    "must be between 0 and 100",
                ));
            }
            for (metric, quota) in &settings.quotas {
                if !catalog.contains(metric) {
                    return Err(ConfigError::new(
                        key(&format!("quotas.{metric}")),
                        "is not a metric of the catalog",
                    ));
                }
                if quota.0 <= zero {
                    return Err(ConfigError::new(
                        key(&format!("quotas.{metric}")),
                        "must be greater than 0",
                    ));
                }
            }
            if let Some(minimum) = &settings.minimum_monthly
                && minimum.0 < zero
            {
                return Err(ConfigError::new(
                    key("minimum_monthly"),
                    "must not be negative",
                ));
            }
            validate_rates(&settings.rates, &key("rates"), catalog)?;
            validate_credits(&settings.credits, &key("credits"))?;
            validate_tenant_labels(&settings.labels, &key("labels"))?;
        }
        Ok(())
    }
}

/// A tenant's `labels`: as many, and as long, as an event's may be; keys from
/// a small alphabet so that every one can be written unquoted.
fn validate_tenant_labels(
    labels: &BTreeMap<String, String>,
    prefix: &str,
) -> Result<(), ConfigError> {
    if labels.len() > MAX_LABELS {
        return Err(ConfigError::new(
            prefix,
            format!("at most {MAX_LABELS} labels, not {}", labels.len()),
        ));
    }
    for (label, value) in labels {
        if !is_valid_label_key(label) {
            return Err(ConfigError::new(
                format!("{prefix}.{label:?}"),
                format!(
                    "label keys are 1 to {MAX_LABEL_KEY_BYTES} bytes of a-z, A-Z, 0-9, _, - and ."
                ),
            ));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(ConfigError::new(
                format!("{prefix}.{label}"),
                format!("at most {MAX_LABEL_VALUE_BYTES} bytes, not {}", value.len()),
            ));
        }
    }
    Ok(())
}

/// True for a tenant label's key (`^[A-Za-z0-9_.-]{1,64}$`).
pub(super) fn is_valid_label_key(key: &str) -> bool {
    (1..=MAX_LABEL_KEY_BYTES).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
