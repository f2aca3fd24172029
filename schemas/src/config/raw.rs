//! The whole of `allot.toml` as serde reads it: every section, with its
//! defaults, before [`RawConfig::validate`] checks it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alerts::AlertsConfig;
use super::api::ApiConfig;
use super::ingest::IngestConfig;
use super::kafka::KafkaConfig;
use super::metrics::MetricDefinition;
use super::pricing::{RateEntry, TenantConfig};
use super::reports::{HealthConfig, NoisyConfig, ReportsConfig};
use super::storage::LakeConfig;

/// What the TOML file and the `ALLOT__…` overrides give, not yet validated.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The currency of every price and invoice: an ISO 4217 code, three
    /// capital letters.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Where the lake is and how its object store is reached. `lake = "…"` is
    /// short for `[lake] url = "…"`.
    #[serde(default)]
    pub lake: LakeConfig,
    /// The Kafka cluster of the collectors.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// How collectors and backfills batch, check and compact events, and how
    /// long files are kept.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Metrics added to the built-in catalog (`compute_seconds`,
    /// `egress_bytes`, `storage_bytes`), or replacing one of the same name.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricDefinition>,
    /// The global price book: one entry per metric and start date.
    #[serde(default)]
    pub rates: Vec<RateEntry>,
    /// Per-tenant discounts, quotas and rate overrides, by tenant id.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// When a tenant's health turns to warning or critical.
    #[serde(default)]
    pub health: HealthConfig,
    /// When a tenant is flagged as a noisy neighbour.
    #[serde(default)]
    pub noisy: NoisyConfig,
    /// The HTTP server: its address, tokens and limits.
    #[serde(default)]
    pub api: ApiConfig,
    /// How reports read the lake.
    #[serde(default)]
    pub reports: ReportsConfig,
    /// Alert rules, the channels they are sent to, and how delivery retries.
    #[serde(default)]
    pub alerts: AlertsConfig,
}

fn default_currency() -> String {
    "USD".to_string()
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            currency: default_currency(),
            lake: LakeConfig::default(),
            kafka: KafkaConfig::default(),
            ingest: IngestConfig::default(),
            metrics: BTreeMap::new(),
            rates: Vec::new(),
            tenants: BTreeMap::new(),
            health: HealthConfig::default(),
            noisy: NoisyConfig::default(),
            api: ApiConfig::default(),
            reports: ReportsConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}
