//! Writing a configuration back as TOML (what `allot demo` and period close
//! record), through the same serde types it is read with.

use std::collections::BTreeMap;

use serde::Serialize;

use super::metrics::MetricDefinition;
use super::pricing::{RateEntry, TenantConfig};
use super::values::{ConfigDecimal, HumanDuration};
use super::{Config, RawConfig};

/// The billing part of a configuration, in the shape of `allot.toml`.
#[derive(Serialize)]
struct BillingFile<'a> {
    currency: &'a str,
    metrics: BTreeMap<&'a str, MetricDefinition>,
    rates: &'a [RateEntry],
    tenants: BTreeMap<&'a str, TenantConfig>,
}

impl Config {
    /// The settings as the file they could have been read from, secrets included.
    pub fn to_raw(&self) -> RawConfig {
        RawConfig {
            currency: self.currency.clone(),
            lake: self.lake.clone(),
            kafka: self.kafka.clone(),
            ingest: self.ingest.clone(),
            metrics: self.metrics.clone(),
            rates: self.rates.clone(),
            tenants: self.tenants.clone(),
            health: self.health.clone(),
            noisy: self.noisy.clone(),
            api: self.api.clone(),
            reports: self.reports.clone(),
            alerts: self.alerts.clone(),
        }
    }

    /// The whole configuration as TOML text that [`Config::from_toml_str`] reads
    /// back to the same settings. It holds the secrets: it is for a file only
    /// its owner reads.
    pub fn to_toml(&self) -> String {
        to_toml(&self.to_raw())
    }

    /// The billing part of a configuration as canonical TOML text: the currency, the
    /// whole effective metric catalog (built-in metrics included), the global price
    /// book and every tenant (discount, quotas, rate overrides; not its labels,
    /// which bill nothing). A closing stores
    /// this text and its SHA-256, and `allot verify` parses it back with
    /// [`Config::from_toml_str`]: the same inputs always give the same text, and the
    /// text gives back the same catalog, price book and tenants.
    pub fn billing_toml(&self) -> String {
        let metrics = self
            .catalog
            .iter()
            .map(|(name, spec)| {
                let definition = MetricDefinition {
                    kind: spec.kind,
                    unit: spec.unit.clone(),
                    divisor: ConfigDecimal(spec.divisor.clone()),
                    hold: spec.hold.map(HumanDuration),
                    field: spec.distinct.as_ref().map(|d| d.field.to_string()),
                    max_distinct: spec.distinct.as_ref().map(|d| d.max_distinct),
                };
                (name, definition)
            })
            .collect();
        let tenants = self
            .tenants
            .iter()
            .map(|(id, settings)| {
                let billing = TenantConfig {
                    labels: BTreeMap::new(),
                    ..settings.clone()
                };
                (id.as_str(), billing)
            })
            .collect();
        to_toml(&BillingFile {
            currency: &self.currency,
            metrics,
            rates: &self.rates,
            tenants,
        })
    }
}

/// TOML text of a value of the configuration's own types, every one of which
/// TOML can hold (string keys, no bare `None` in an array).
fn to_toml(value: &impl Serialize) -> String {
    toml::to_string(value).expect("the configuration's types all have a TOML form")
}
