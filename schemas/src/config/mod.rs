//! `allot.toml`: configuration types, loading with environment overrides, and the
//! one validation pass that turns what was read into ready settings.
//!
//! ```text
//! TOML text ─parse─▶ table ─ALLOT__… overrides─▶ RawConfig ─validate─▶ Config
//! ```
//!
//! Loading is layered: built-in defaults, then the TOML file, then `ALLOT__SECTION__KEY`
//! environment variables (docs/reference.md#configuration-file). [`RawConfig`] is what
//! serde reads from them: every struct denies unknown keys, and serde fills the
//! defaults. [`RawConfig::validate`] is the only check of what types alone cannot say;
//! it gives a [`Config`], the settings every command, the server, the collectors and
//! the reports take as they are: they never check or default a key again. Every
//! error is a [`ConfigError`] naming the offending key (`api.listen`,
//! `rates[2].unit_price`) and, for an override, the variable it came from. Money and
//! quantities are exact decimals ([`ConfigDecimal`]): a TOML float is refused because
//! it has already been through a binary float.
//!
//! One file per section ([`storage`], [`kafka`], [`ingest`], [`metrics`],
//! [`pricing`], [`reports`], [`api`], [`alerts`]), the value types keys are written in
//! ([`values`]), the environment overrides ([`env`]), the raw file ([`raw`]), its
//! validation ([`validate`]), the TOML writer ([`write`]) and the generator of
//! `docs/configuration.md` (`reference`, a test); this file loads the whole.

use std::collections::BTreeMap;

mod alerts;
mod api;
mod dimensions;
mod env;
mod ingest;
mod kafka;
mod metrics;
mod pricing;
mod raw;
#[cfg(test)]
mod reference;
mod reports;
mod storage;
mod validate;
mod values;
mod write;

pub use alerts::*;
pub use api::*;
pub use dimensions::{Dimension, Glob, MatchClasses, RateMatch};
pub use ingest::*;
pub use kafka::*;
pub use metrics::*;
pub use pricing::*;
pub use raw::RawConfig;
pub use reports::*;
pub use storage::*;
pub use values::*;

use env::apply_env_overrides;

/// A configuration error: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`{}: {message}", origin.as_ref().map(|o| format!(" (from {o})")).unwrap_or_default())]
pub struct ConfigError {
    /// The dotted path of the key, e.g. `rates[1].unit_price`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
    /// The file or environment variable that set it, when known.
    pub origin: Option<String>,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
            origin: None,
        }
    }
}

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ALLOT__";

/// The validated settings of `allot.toml`, ready to use: built only by
/// [`RawConfig::validate`] (through [`Config::load`] or [`Config::from_toml_str`]),
/// with the metric catalog resolved once. The sections are those of
/// [`RawConfig`], where each key is documented.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Currency of every price and invoice.
    pub currency: String,
    /// Where the lake is and how its object store is reached.
    pub lake: LakeConfig,
    /// Kafka connection for collectors.
    pub kafka: KafkaConfig,
    /// Collector batching and validation limits.
    pub ingest: IngestConfig,
    /// The metrics the file defines (the catalog is [`Config::catalog`]).
    pub metrics: BTreeMap<String, MetricDefinition>,
    /// The global price book.
    pub rates: Vec<RateEntry>,
    /// Per-tenant overrides, discounts and quotas.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Tenant-health thresholds.
    pub health: HealthConfig,
    /// Noisy-neighbour detection thresholds.
    pub noisy: NoisyConfig,
    /// The HTTP server.
    pub api: ApiConfig,
    /// How reports read the lake.
    pub reports: ReportsConfig,
    /// Alert rules and channels as written (the checked rules are
    /// [`Config::alert_rules`]).
    pub alerts: AlertsConfig,
    /// The built-in metrics plus (or replaced by) `metrics`, gauge holds defaulted.
    catalog: MetricCatalog,
    /// `alerts.rules`, checked and typed.
    alert_rules: Vec<AlertRule>,
}

impl Default for Config {
    /// The settings of an empty file.
    fn default() -> Self {
        RawConfig::default()
            .validate()
            .expect("the built-in defaults are valid")
    }
}

impl Config {
    /// Loads `path` (or only the defaults when `None`), applies `ALLOT__…`
    /// overrides from `env`, and validates the result.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    key: "(file)".to_string(),
                    message: format!("cannot read {}: {e}", path.display()),
                    origin: None,
                })?;
                (text, path.display().to_string())
            }
            None => (String::new(), "defaults".to_string()),
        };
        Config::from_toml_str(&text, &origin, env)
    }

    /// Parses TOML text, applies overrides from `env` and validates.
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        RawConfig::from_toml_str(text, origin, env)?.validate()
    }

    /// This configuration's catalog and currency with the price book of `text`
    /// in place of its own (docs/reference.md#what-if-pricing): `text` holds only
    /// `[[rates]]` and `[tenants.*]` (either may be left out: none), checked like
    /// the same sections of `allot.toml`, so an error names the key. Every other
    /// setting of the result is a default: it is for pricing only.
    pub fn with_price_book(&self, text: &str, origin: &str) -> Result<Config, ConfigError> {
        let proposed: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            key: "(syntax)".to_string(),
            message: e.message().to_string(),
            origin: Some(origin.to_string()),
        })?;
        let mut merged: toml::Table = self
            .billing_toml()
            .parse()
            .expect("the billing TOML of a config parses");
        merged.remove("rates");
        merged.remove("tenants");
        for (key, value) in proposed {
            if key != "rates" && key != "tenants" {
                return Err(ConfigError {
                    key,
                    message: "a price book holds only [[rates]] and [tenants.*]".to_string(),
                    origin: Some(origin.to_string()),
                });
            }
            merged.insert(key, value);
        }
        let text = toml::to_string(&merged).expect("a TOML table serializes");
        Config::from_toml_str(&text, origin, std::iter::empty()).map_err(|mut e| {
            e.origin = Some(origin.to_string());
            e
        })
    }

    /// The metric catalog: the built-in metrics plus (or replaced by) the configured ones.
    pub fn catalog(&self) -> MetricCatalog {
        self.catalog.clone()
    }

    /// The alert rules, checked and typed.
    pub fn alert_rules(&self) -> &[AlertRule] {
        &self.alert_rules
    }
}

impl RawConfig {
    /// Parses TOML text and applies overrides from `env`, without validating:
    /// an error names the key serde could not read and where it was set.
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            key: "(syntax)".to_string(),
            message: e.message().to_string(),
            origin: Some(origin.to_string()),
        })?;
        // `lake = "…"` is short for `[lake] url = "…"`; spelled out here so that
        // `ALLOT__LAKE__STORAGE__…` overrides apply to either form.
        if let Some(toml::Value::String(url)) = table.get("lake") {
            let url = toml::Value::String(url.clone());
            table.insert(
                "lake".to_string(),
                toml::Value::Table([("url".to_string(), url)].into_iter().collect()),
            );
        }
        let overrides = apply_env_overrides(&mut table, env)?;
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let origin = overrides
                .iter()
                .find(|(path, _)| key.starts_with(path.as_str()))
                .map(|(_, var)| var.clone())
                .unwrap_or_else(|| origin.to_string());
            ConfigError {
                key,
                message: e.into_inner().message().to_string(),
                origin: Some(origin),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NO_ENV: [(String, String); 0] = [];

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "allot.toml", NO_ENV)
    }

    const SPEC_EXAMPLE: &str = r#"
currency = "USD"

[metrics.compute_seconds]
kind = "counter"
unit = "vCPU-hour"
divisor = "3600"

[metrics.storage_bytes]
kind = "gauge"
unit = "GiB-month"
divisor = "1073741824"
hold = "1h"

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
quotas = { compute_seconds = "2000000" }

[[tenants.acme.rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
unit_price = "0.05"

[api]
listen = "127.0.0.1:8080"
jwt_secret = "s3cret-s3cret-s3cret-s3cret-s3cret"
"#;

    #[test]
    fn loads_the_spec_example() {
        let config = load(SPEC_EXAMPLE).unwrap();
        assert_eq!(config.rates.len(), 2);
        assert_eq!(
            config.rates[0].unit_price.as_ref().unwrap().0.to_string(),
            "0.0400"
        );
        assert_eq!(config.tenants["acme"].rates[0].metric, "egress_bytes");
        assert!(config.catalog().contains("egress_bytes"));
        assert_eq!(
            config.catalog().get("storage_bytes").unwrap().hold,
            Some(Duration::from_secs(3600))
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn server_keys_parse_and_are_checked() {
        let config = load(
            "[api]\ncosts_file = \"costs.csv\"\njwt_private_key = \"ed.pem\"\nrequest_timeout = \"5s\"\nmax_body = \"1MiB\"",
        )
        .unwrap();
        assert_eq!(config.api.costs_file.as_deref(), Some("costs.csv"));
        assert_eq!(config.api.request_timeout.0, Duration::from_secs(5));
        assert_eq!(config.api.max_body.0, 1 << 20);
        assert_eq!(
            load("[api]\njwt_secret = \"\"").unwrap_err().key,
            "api.jwt_secret"
        );
        assert_eq!(
            load("[api]\nrequest_timeout = \"0s\"").unwrap_err().key,
            "api.request_timeout"
        );
        assert_eq!(config.api.refresh_interval.0, Duration::from_secs(1));
        assert_eq!(config.api.cache_memory.0, 256 << 20);
        for interval in ["0s", "50ms", "2h"] {
            let text = format!("[api]\nrefresh_interval = \"{interval}\"");
            assert_eq!(load(&text).unwrap_err().key, "api.refresh_interval");
        }
        let cacheless = load("[api]\ncache_memory = \"0B\"\nrefresh_interval = \"250ms\"").unwrap();
        assert_eq!(cacheless.api.cache_memory.0, 0);
        assert_eq!(cacheless.api.refresh_interval.0, Duration::from_millis(250));
        assert_eq!(config.api.clock_skew.0, Duration::from_secs(30));
        assert_eq!(
            load("[api]\nclock_skew = \"10m\"").unwrap_err().key,
            "api.clock_skew"
        );
    }

    #[test]
    fn unknown_keys_name_the_key() {
        let err = load("[api]\nlistn = \"x\"").unwrap_err();
        assert_eq!(err.key, "api.listn");
        assert!(err.to_string().contains("api.listn"), "{err}");
        let err = load("[[rates]]\nmetric = \"compute_seconds\"\neffective_from = \"2026-01-01\"\nunit_price = \"1\"\nprice = 2").unwrap_err();
        assert_eq!(err.key, "rates[0].price");
        let err = load("[ingest]\nflush_interval = \"10 parsecs\"").unwrap_err();
        assert_eq!(err.key, "ingest.flush_interval");
    }

    #[test]
    fn validate_names_the_offending_key() {
        let cases = [
            (
                "[[rates]]\nmetric = \"gpu\"\neffective_from = \"2026-01-01\"\nunit_price = \"1\"",
                "rates[0].metric",
            ),
            (
                "[[rates]]\nmetric = \"compute_seconds\"\neffective_from = \"2026-1-1x\"\nunit_price = \"1\"",
                "rates[0].effective_from",
            ),
            (
                "[[rates]]\nmetric = \"compute_seconds\"\neffective_from = \"2026-01-01\"\nunit_price = \"-1\"",
                "rates[0].unit_price",
            ),
            (
                "[tenants.acme]\ndiscount_percent = \"101\"",
                "tenants.acme.discount_percent",
            ),
            ("[tenants.Acme]", "tenants.Acme"),
            (
                "[tenants.acme]\nminimum_monthly = \"-1\"",
                "tenants.acme.minimum_monthly",
            ),
            (
                "[tenants.acme]\nminimum_monthly = \"ten\"",
                "tenants.acme.minimum_monthly",
            ),
            (
                "[tenants.acme]\nquotas = { gpu = \"1\" }",
                "tenants.acme.quotas.gpu",
            ),
            (
                "[tenants.acme]\nlabels = { \"tier name\" = \"gold\" }",
                "tenants.acme.labels.\"tier name\"",
            ),
            (
                "[tenants.acme]\nlabels = { \"\" = \"gold\" }",
                "tenants.acme.labels.\"\"",
            ),
            (
                "[tenants.acme]\nlabels = { tier = 1 }",
                "tenants.acme.labels.tier",
            ),
            (
                "[metrics.gpu]\nkind = \"counter\"\nunit = \"h\"\ndivisor = \"0\"",
                "metrics.gpu.divisor",
            ),
            ("[api]\nlisten = \"nowhere\"", "api.listen"),
            ("[api]\ntls_cert = \"server.pem\"", "api.tls_key"),
            ("[api]\ntls_key = \"server.key\"", "api.tls_cert"),
            ("[ingest]\ndedup_window = \"12h\"", "ingest.dedup_window"),
            (
                "[ingest]\nbackfill_flush_bytes = 0",
                "ingest.backfill_flush_bytes",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(load(text).unwrap_err().key, key, "{text}");
        }
    }

    #[test]
    fn credit_grants_parse_and_every_bad_one_names_its_key() {
        let grant = |body: &str| {
            format!("[tenants.acme]\n[[tenants.acme.credits]]\nid = \"promo\"\n{body}")
        };
        let good = load(&grant(
            "amount = \"500.00\"\neffective_from = \"2026-01-01\"\nexpires = \"2027-01-01\"\npriority = 2",
        ))
        .unwrap();
        let parsed = &good.tenants["acme"].credits[0];
        assert_eq!(parsed.amount.0.to_string(), "500.00");
        assert_eq!(parsed.priority, Some(2));
        let plain = load(&grant("amount = 5\neffective_from = \"2026-01-01\"")).unwrap();
        assert_eq!(plain.tenants["acme"].credits[0].priority, None);
        assert_eq!(plain.tenants["acme"].credits[0].expires, None);
        let from = "effective_from = \"2026-01-01\"";
        let cases = [
            (
                grant(&format!("amount = \"0\"\n{from}")),
                "tenants.acme.credits[0].amount",
            ),
            (
                grant(&format!("amount = \"-5\"\n{from}")),
                "tenants.acme.credits[0].amount",
            ),
            (
                grant(&format!("amount = \"5.001\"\n{from}")),
                "tenants.acme.credits[0].amount",
            ),
            (
                grant(&format!("amount = \"five\"\n{from}")),
                "tenants.acme.credits[0].amount",
            ),
            (
                grant(&format!("amount = 5.5\n{from}")),
                "tenants.acme.credits[0].amount",
            ),
            (grant("amount = \"5\""), "tenants.acme.credits[0]"),
            (
                grant("amount = \"5\"\neffective_from = \"2026-13-01\""),
                "tenants.acme.credits[0].effective_from",
            ),
            (
                grant(&format!("amount = \"5\"\n{from}\nexpires = \"2026-01-01\"")),
                "tenants.acme.credits[0].expires",
            ),
            (
                grant(&format!("amount = \"5\"\n{from}\nexpires = \"soon\"")),
                "tenants.acme.credits[0].expires",
            ),
            (
                grant(&format!("amount = \"5\"\n{from}\npriority = \"high\"")),
                "tenants.acme.credits[0].priority",
            ),
            (
                grant(&format!("amount = \"5\"\n{from}\nbalance = \"5\"")),
                "tenants.acme.credits[0].balance",
            ),
            (
                format!(
                    "[tenants.acme]\n[[tenants.acme.credits]]\nid = \"\"\namount = \"5\"\n{from}"
                ),
                "tenants.acme.credits[0].id",
            ),
            (
                format!(
                    "[tenants.acme]\n[[tenants.acme.credits]]\nid = \"a,b\"\namount = \"5\"\n{from}"
                ),
                "tenants.acme.credits[0].id",
            ),
            (
                format!(
                    "{}\n[[tenants.acme.credits]]\nid = \"promo\"\namount = \"7\"\n{from}",
                    grant(&format!("amount = \"5\"\n{from}"))
                ),
                "tenants.acme.credits[1].id",
            ),
        ];
        for (text, key) in cases {
            let err = load(&text).unwrap_err();
            assert_eq!(err.key, key, "{text}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn tenant_labels_are_bounded_like_event_labels() {
        let labels =
            |pairs: Vec<String>| format!("[tenants.acme]\nlabels = {{ {} }}", pairs.join(", "));
        let fine = labels(
            (0..32)
                .map(|i| format!("k{i} = \"{}\"", "v".repeat(256)))
                .collect(),
        );
        assert_eq!(load(&fine).unwrap().tenants["acme"].labels.len(), 32);
        let many = labels((0..33).map(|i| format!("k{i} = \"v\"")).collect());
        assert_eq!(load(&many).unwrap_err().key, "tenants.acme.labels");
        let long_value = labels(vec![format!("tier = \"{}\"", "v".repeat(257))]);
        assert_eq!(
            load(&long_value).unwrap_err().key,
            "tenants.acme.labels.tier"
        );
        let long_key = labels(vec![format!("{} = \"v\"", "k".repeat(65))]);
        assert_eq!(
            load(&long_key).unwrap_err().key,
            format!("tenants.acme.labels.\"{}\"", "k".repeat(65))
        );
    }

    #[test]
    fn bad_alert_rules_and_channels_name_the_key() {
        let channel = "[tenants.acme]\n[[alerts.channels]]\nname = \"hook\"\nkind = \"webhook\"\n\
                       url = \"https://hooks.example/allot\"\nsecret = \"0123456789abcdef\"\n";
        let rule = |body: &str| format!("{channel}[[alerts.rules]]\nname = \"r\"\n{body}");
        let good = rule(
            "kind = \"quota\"\nmetric = \"compute_seconds\"\nthreshold = \"90\"\nchannels = [\"hook\"]",
        );
        assert_eq!(load(&good).unwrap().alert_rules().len(), 1);
        let cases = [
            (rule("kind = \"quota\"\nmetric = \"gpu\"\nthreshold = \"90\"\nchannels = [\"hook\"]"), "alerts.rules[0].metric"),
            (rule("kind = \"quota\"\nmetric = \"compute_seconds\"\nthreshold = \"1000.01\"\nchannels = [\"hook\"]"), "alerts.rules[0].threshold"),
            (rule("kind = \"quota\"\nmetric = \"compute_seconds\"\nthreshold = \"-1\"\nchannels = [\"hook\"]"), "alerts.rules[0].threshold"),
            (rule("kind = \"quota\"\nmetric = \"compute_seconds\"\nchannels = [\"hook\"]"), "alerts.rules[0].threshold"),
            (rule("kind = \"quota\"\nmetric = \"compute_seconds\"\nthreshold = \"90\"\nresolve_below = \"95\"\nchannels = [\"hook\"]"), "alerts.rules[0].resolve_below"),
            (rule("kind = \"spend\"\nthreshold = \"10\"\ntenants = [\"nobody\"]\nchannels = [\"hook\"]"), "alerts.rules[0].tenants[0]"),
            (rule("kind = \"spend\"\nthreshold = \"10\"\ntenants = [\"acme\"]\ntenant_labels = { tier = \"gold\" }\nchannels = [\"hook\"]"), "alerts.rules[0].tenant_labels"),
            (rule("kind = \"spend\"\nthreshold = \"10\"\ntenant_labels = {}\nchannels = [\"hook\"]"), "alerts.rules[0].tenant_labels"),
            (rule("kind = \"spend\"\nthreshold = \"10\"\ntenant_labels = { \"a b\" = \"c\" }\nchannels = [\"hook\"]"), "alerts.rules[0].tenant_labels.\"a b\""),
            (rule("kind = \"spend\"\nthreshold = \"10\"\nchannels = [\"pager\"]"), "alerts.rules[0].channels[0]"),
            (rule("kind = \"spend\"\nthreshold = \"10\"\nchannels = []"), "alerts.rules[0].channels"),
            (rule("kind = \"spend\"\nthreshold = \"10\"\nper = \"team\"\nchannels = [\"hook\"]"), "alerts.rules[0].per"),
            (rule("kind = \"budget\"\nchannels = [\"hook\"]"), "alerts.rules[0].kind"),
            (rule("kind = \"health\"\nchannels = [\"hook\"]"), "alerts.rules[0].status"),
            (rule("kind = \"health\"\nstatus = \"bad\"\nchannels = [\"hook\"]"), "alerts.rules[0].status"),
            (rule("kind = \"health\"\nstatus = \"warning\"\nthreshold = \"1\"\nchannels = [\"hook\"]"), "alerts.rules[0].threshold"),
            (rule("kind = \"noisy\"\nmetric = \"storage_bytes\"\nchannels = [\"hook\"]"), "alerts.rules[0].metric"),
            (rule("kind = \"silent\"\nchannels = [\"hook\"]"), "alerts.rules[0].after"),
            (rule("kind = \"rejected\"\nthreshold = \"5\"\nrepeat = \"0s\"\nchannels = [\"hook\"]"), "alerts.rules[0].repeat"),
            (rule("kind = \"rejected\"\nthreshold = \"5\"\nchannels = [\"hook\"]\ncolour = \"red\""), "alerts.rules[0].colour"),
            ("[[alerts.channels]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"ftp://x/\"\nsecret = \"0123456789abcdef\"".to_string(), "alerts.channels[0].url"),
            ("[[alerts.channels]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"not a url\"\nsecret = \"0123456789abcdef\"".to_string(), "alerts.channels[0].url"),
            ("[[alerts.channels]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"https://x/\"".to_string(), "alerts.channels[0].secret"),
            ("[[alerts.channels]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"https://x/\"\nsecret = \"short\"".to_string(), "alerts.channels[0].secret"),
            ("[[alerts.channels]]\nname = \"h\"\nkind = \"email\"\nurl = \"https://x/\"".to_string(), "alerts.channels[0].kind"),
            ("[alerts]\nretry_initial = \"10m\"\nretry_max = \"1m\"".to_string(), "alerts.retry_max"),
            ("[alerts]\nclaim_lease = \"5s\"".to_string(), "alerts.claim_lease"),
            ("[alerts]\ngive_up_after = \"0s\"".to_string(), "alerts.give_up_after"),
            ("[alerts]\nevaluate_every = \"0s\"".to_string(), "alerts.evaluate_every"),
        ];
        for (text, key) in cases {
            assert_eq!(load(&text).unwrap_err().key, key, "{text}");
        }
        let secret = load(&format!("{channel}[alerts]\nclaim_lease = \"1s\"")).unwrap_err();
        assert!(!secret.to_string().contains("0123456789abcdef"), "{secret}");
        assert!(!format!("{:?}", load(channel).unwrap()).contains("0123456789abcdef"));
    }

    #[test]
    fn a_price_book_replaces_rates_and_tenants_only() {
        let current = load(
            "[metrics.api_calls]\nkind = \"counter\"\nunit = \"call\"\ndivisor = \"1\"\n\
             [[rates]]\nmetric = \"api_calls\"\neffective_from = \"2026-01-01\"\nunit_price = \"1\"\n\
             [tenants.acme]\ndiscount_percent = \"10\"\n",
        )
        .unwrap();
        // A rate of the current catalog's own metric is accepted.
        let proposed = current
            .with_price_book(
                "[[rates]]\nmetric = \"api_calls\"\neffective_from = \"2026-01-01\"\nunit_price = \"2\"\n",
                "book.toml",
            )
            .unwrap();
        assert_eq!(
            proposed.rates[0].unit_price.as_ref().unwrap().0,
            bigdecimal::BigDecimal::from(2)
        );
        assert!(
            proposed.tenants.is_empty(),
            "no [tenants] in the book: none"
        );
        assert!(proposed.catalog().contains("api_calls"));
        let refused = [
            ("[api]\nlisten = \"x\"", "api"),
            ("currency = \"EUR\"", "currency"),
            (
                "[[rates]]\nmetric = \"gpu\"\neffective_from = \"2026-01-01\"\nunit_price = \"1\"",
                "rates[0].metric",
            ),
            (
                "[tenants.acme]\nminimum_monthly = \"-5\"",
                "tenants.acme.minimum_monthly",
            ),
            ("[tenants.acme]\ncolour = \"red\"", "tenants.acme.colour"),
            ("[[rates]\n", "(syntax)"),
        ];
        for (text, key) in refused {
            let err = current.with_price_book(text, "book.toml").unwrap_err();
            assert_eq!(err.key, key, "{text}");
            assert_eq!(err.origin.as_deref(), Some("book.toml"));
        }
    }

    #[test]
    fn dimensional_rates_are_checked_and_ties_refused() {
        let rate = |extra: &str| {
            format!(
                "[[rates]]\nmetric = \"egress_bytes\"\neffective_from = \"2026-01-01\"\nunit_price = \"1\"\n{extra}\n"
            )
        };
        let refused = [
            (rate("match = { zone = \"a\" }"), "rates[0].match.zone"),
            (
                rate("match = { \"labels.\" = \"a\" }"),
                "rates[0].match.labels.",
            ),
            (rate("match = { region = \"\" }"), "rates[0].match.region"),
            (rate("match = { region = 1 }"), "rates[0].match.region"),
            (
                rate("").replace("egress_bytes", "storage_bytes") + "match = { region = \"eu-*\" }",
                "rates[0].match.region",
            ),
            // A glob and an exact value of one key: eu-west-1 matches both.
            (
                rate("match = { region = \"eu-*\" }") + &rate("match = { region = \"eu-west-1\" }"),
                "rates[1].match",
            ),
            // Different keys, as many of them: an event can have both values.
            (
                rate("match = { region = \"eu-*\" }") + &rate("match = { service = \"gpu\" }"),
                "rates[1].match",
            ),
            (
                rate("match = { region = \"eu-*\" }") + &rate("match = { region = \"eu-*\" }"),
                "rates[1].effective_from",
            ),
            (
                format!(
                    "[tenants.acme]\n{}",
                    rate("match = { region = \"*\" }")
                        .replace("[[rates]]", "[[tenants.acme.rates]]")
                ) + &rate("match = { \"labels.x\" = \"*\" }")
                    .replace("[[rates]]", "[[tenants.acme.rates]]"),
                "tenants.acme.rates[1].match",
            ),
        ];
        for (text, key) in &refused {
            assert_eq!(load(text).unwrap_err().key, *key, "{text}");
        }
        let err = load(&refused[5].0).unwrap_err();
        assert!(
            err.message.contains("rates[0].match") && err.message.contains("region=eu-west-1"),
            "{err}"
        );
        // Patterns that no one value matches, more keys, a default line, and the
        // same match at another date are all fine; so is a tenant's rate beside a
        // global one of the same shape.
        let accepted = [
            rate("match = { region = \"eu-*\" }") + &rate("match = { region = \"us-*\" }"),
            rate("match = { region = \"eu-*\" }")
                + &rate("match = { region = \"eu-west-1\", service = \"cdn\" }")
                + &rate(""),
            rate("match = { region = \"eu-*\" }")
                + &rate("match = { region = \"eu-*\" }").replace("2026-01-01", "2026-02-01"),
            rate("match = { region = \"eu-*\" }")
                + &rate("match = { \"labels.instance_class\" = \"m7g.*\" }")
                    .replace("[[rates]]", "[[tenants.acme.rates]]"),
        ];
        for text in &accepted {
            let config = load(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(config.rates.iter().any(|r| !r.r#match.is_empty()));
        }
    }

    #[test]
    fn meter_kinds_are_read_and_their_bad_keys_named() {
        let config = load(
            "[metrics.peak]\nkind = \"max\"\nunit = \"c\"\ndivisor = \"1\"\n\
             [metrics.users]\nkind = \"unique_count\"\nfield = \"labels.user\"\nunit = \"u\"\ndivisor = \"1\"\n\
             [metrics.seats]\nkind = \"latest\"\nunit = \"s\"\ndivisor = \"1\"\n\
             [metrics.hosts]\nkind = \"unique_count\"\nfield = \"resource\"\nmax_distinct = 7\nunit = \"h\"\ndivisor = \"1\"",
        )
        .unwrap();
        let catalog = config.catalog();
        assert_eq!(catalog.get("peak").unwrap().kind, MetricKind::Max);
        assert_eq!(catalog.get("seats").unwrap().distinct, None);
        let users = catalog.get("users").unwrap().distinct.clone().unwrap();
        assert_eq!(
            (users.field, users.max_distinct),
            (
                CountedField::Dimension(Dimension::Label("user".to_string())),
                DEFAULT_MAX_DISTINCT
            )
        );
        let hosts = catalog.get("hosts").unwrap().distinct.clone().unwrap();
        assert_eq!(
            (hosts.field, hosts.max_distinct),
            (CountedField::Resource, 7)
        );
        // A quota alert may watch a meter: health measures its quota.
        let watched = load(
            "[metrics.users]\nkind = \"unique_count\"\nfield = \"labels.user\"\nunit = \"u\"\ndivisor = \"1\"\n\
             [[alerts.channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://hooks.example/a\"\n\
             secret = \"0123456789abcdef\"\n\
             [[alerts.rules]]\nname = \"seats\"\nkind = \"quota\"\nmetric = \"users\"\nthreshold = \"90\"\n\
             channels = [\"hook\"]",
        );
        assert!(watched.is_ok(), "{watched:?}");
        // The billing text a closing records reads back to the same catalog.
        assert_eq!(
            Config::from_toml_str(&config.billing_toml(), "billing.toml", std::iter::empty())
                .unwrap()
                .catalog(),
            catalog
        );

        let metric = |body: &str| format!("[metrics.m]\nunit = \"u\"\ndivisor = \"1\"\n{body}");
        let cases = [
            (metric("kind = \"unique_count\""), "metrics.m.field"),
            (
                metric("kind = \"unique_count\"\nfield = \"labels.\""),
                "metrics.m.field",
            ),
            (
                metric("kind = \"unique_count\"\nfield = \"tenant_id\""),
                "metrics.m.field",
            ),
            (
                metric("kind = \"max\"\nfield = \"region\""),
                "metrics.m.field",
            ),
            (
                metric("kind = \"latest\"\nfield = \"resource\""),
                "metrics.m.field",
            ),
            (
                metric("kind = \"counter\"\nfield = \"region\""),
                "metrics.m.field",
            ),
            (metric("kind = \"max\"\nhold = \"1h\""), "metrics.m.hold"),
            (
                metric("kind = \"unique_count\"\nfield = \"region\"\nmax_distinct = 0"),
                "metrics.m.max_distinct",
            ),
            (
                metric("kind = \"unique_count\"\nfield = \"region\"\nmax_distinct = 10000001"),
                "metrics.m.max_distinct",
            ),
            (
                metric("kind = \"latest\"\nmax_distinct = 5"),
                "metrics.m.max_distinct",
            ),
            (metric("kind = \"maximum\""), "metrics.m.kind"),
            (
                format!(
                    "{}\n[[rates]]\nmetric = \"m\"\neffective_from = \"2026-01-01\"\n\
                     unit_price = \"1\"\nmatch = {{ region = \"eu-*\" }}",
                    metric("kind = \"max\"")
                ),
                "rates[0].match.region",
            ),
        ];
        for (text, key) in cases {
            let err = load(&text).unwrap_err();
            assert!(err.key.starts_with(key), "{text}: {err}");
        }
    }

    #[test]
    fn floats_are_refused_for_money() {
        let err = load("[[rates]]\nmetric = \"compute_seconds\"\neffective_from = \"2026-01-01\"\nunit_price = 0.04").unwrap_err();
        assert_eq!(err.key, "rates[0].unit_price");
        assert!(err.message.contains("not exact"), "{}", err.message);
    }

    #[test]
    fn the_noisy_bucket_and_baseline_fit_a_health_report() {
        assert_eq!(
            load("[noisy]\nbaseline_buckets = 100000").unwrap_err().key,
            "noisy.baseline_buckets"
        );
        assert_eq!(
            load("[noisy]\nbaseline_buckets = 0").unwrap_err().key,
            "noisy.baseline_buckets"
        );
        assert_eq!(
            load("[noisy]\nbucket = \"2d\"").unwrap_err().key,
            "noisy.bucket"
        );
        assert_eq!(
            load("[noisy]\nbucket = \"1m\"\nbaseline_buckets = 4000")
                .unwrap_err()
                .key,
            "noisy.baseline_buckets"
        );
        assert!(load("[noisy]\nbucket = \"1m\"\nbaseline_buckets = 3560").is_ok());
        assert!(load("[noisy]\nbucket = \"1d\"\nbaseline_buckets = 4999").is_ok());
    }

    #[test]
    fn secrets_are_long_enough_and_never_shown_in_an_error() {
        let short = load("[api]\njwt_secret = \"k\"").unwrap_err();
        assert_eq!(short.key, "api.jwt_secret");
        assert!(short.message.contains("32 bytes"), "{}", short.message);
        let token = load("[api]\nmetrics_token = \"short\"").unwrap_err();
        assert_eq!(token.key, "api.metrics_token");
        // A number in the file is refused without its digits.
        let number = load("[api]\njwt_secret = 1234567890123456789").unwrap_err();
        assert_eq!(number.key, "api.jwt_secret");
        assert!(!number.to_string().contains("1234567890"), "{number}");
        // A secret of digits in the environment is the text it was.
        let digits = "00123456789012345678901234567890123";
        let env = [("ALLOT__API__JWT_SECRET".to_string(), digits.to_string())];
        let config = Config::from_toml_str("", "allot.toml", env).unwrap();
        assert_eq!(config.api.jwt_secret.unwrap().expose(), digits);
        let env = [("ALLOT__API__JWT_SECRET".to_string(), "12345".to_string())];
        let err = Config::from_toml_str("", "allot.toml", env).unwrap_err();
        assert_eq!(err.key, "api.jwt_secret");
        assert!(!err.to_string().contains("12345"), "{err}");
    }

    #[test]
    fn environment_overrides_win_and_are_named() {
        let env = [
            ("ALLOT__API__LISTEN".to_string(), "0.0.0.0:9000".to_string()),
            ("ALLOT__INGEST__FLUSH_ROWS".to_string(), "5000".to_string()),
            ("OTHER".to_string(), "ignored".to_string()),
        ];
        let config = Config::from_toml_str(SPEC_EXAMPLE, "allot.toml", env).unwrap();
        assert_eq!(config.api.listen, "0.0.0.0:9000");
        assert_eq!(config.ingest.flush_rows, 5000);
        let err = Config::from_toml_str(
            "",
            "allot.toml",
            [("ALLOT__API__LISTN".to_string(), "x".to_string())],
        )
        .unwrap_err();
        assert_eq!(err.key, "api.listn");
        assert_eq!(err.origin.as_deref(), Some("ALLOT__API__LISTN"));
    }

    #[test]
    fn the_lake_is_a_url_or_a_section_with_storage_settings() {
        let short = load("lake = \"s3://b/l\"").unwrap();
        assert_eq!(short.lake.url.as_deref(), Some("s3://b/l"));
        let section = "[lake]\nurl = \"s3://b/l\"\n[lake.storage]\nendpoint = \"http://s3:9000\"\n\
                       allow_http = true\nsecret_access_key = \"hunter2\"\nretry_timeout = \"5s\"";
        let config = load(section).unwrap();
        let options = config.lake.storage.options().to_map();
        assert_eq!(options["aws_endpoint"], "http://s3:9000");
        assert_eq!(options["aws_allow_http"], "true");
        assert_eq!(options["aws_secret_access_key"], "hunter2");
        assert_eq!(options["retry_timeout"], "5000ms");
        assert!(
            !options.contains_key("aws_region"),
            "unset keys come from AWS_*"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(
            load("[lake.storage]\nendpont = \"x\"").unwrap_err().key,
            "lake.storage.endpont"
        );
        // An override reaches the storage settings of either form.
        let env = [(
            "ALLOT__LAKE__STORAGE__REGION".to_string(),
            "eu-west-1".to_string(),
        )];
        let config = Config::from_toml_str("lake = \"s3://b/l\"", "allot.toml", env).unwrap();
        assert_eq!(config.lake.url.as_deref(), Some("s3://b/l"));
        assert_eq!(
            config.lake.storage.options().to_map()["aws_region"],
            "eu-west-1"
        );
        assert_eq!(
            Config::default().lake.storage.options().to_map()["retry_timeout"],
            "30000ms"
        );
    }

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(
            "10s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(10)
        );
        assert_eq!(
            "1d".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(86_400)
        );
        assert!("10".parse::<HumanDuration>().is_err());
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert!("64MB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn the_whole_file_round_trips() {
        let env = [
            ("ALLOT__API__METRICS_TOKEN".to_string(), "t".repeat(40)),
            (
                "ALLOT__INGEST__FLUSH_INTERVAL".to_string(),
                "1500ms".to_string(),
            ),
        ];
        let text = format!(
            "{SPEC_EXAMPLE}\n[lake]\nurl = \"s3://b/l\"\n[lake.storage]\nregion = \"eu-west-1\"\n\
             [kafka]\nbrokers = \"k:9092\"\ndlq = false\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\
             [noisy]\nmin_z = \"2.50\"\n[reports]\nrollups = false\n"
        );
        for config in [
            Config::default(),
            Config::from_toml_str(&text, "allot.toml", env).unwrap(),
        ] {
            let written = config.to_toml();
            let again = Config::from_toml_str(&written, "written", NO_ENV).unwrap();
            assert_eq!(again, config, "{written}");
            assert_eq!(again.to_toml(), written);
        }
    }

    #[test]
    fn durations_and_sizes_are_written_in_their_largest_exact_unit() {
        let written: Vec<String> = [0, 1_500, 90_000, 3_600_000, 35 * 86_400_000]
            .map(|ms| HumanDuration(Duration::from_millis(ms)).to_string())
            .into();
        assert_eq!(written, ["0s", "1500ms", "90s", "1h", "35d"]);
        let written: Vec<String> = [0, 1_500, 64 << 10, 3 << 20, 1 << 30]
            .map(|bytes| ByteSize(bytes).to_string())
            .into();
        assert_eq!(written, ["0B", "1500B", "64KiB", "3MiB", "1GiB"]);
    }

    #[test]
    fn billing_text_round_trips() {
        let config = load(
            r#"
currency = "EUR"
[metrics.requests]
kind = "counter"
unit = "1k requests"
divisor = "1000"
[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
tiers = [{ up_to = "10", unit_price = "0.090" }, { unit_price = "0.07" }]
[tenants.acme]
discount_percent = "12.5"
quotas = { compute_seconds = "2000000" }
labels = { tier = "enterprise" }
[[tenants.acme.rates]]
metric = "compute_seconds"
effective_from = "2026-02-11"
unit_price = "0.0400"
"#,
        )
        .unwrap();
        let text = config.billing_toml();
        let again = Config::from_toml_str(&text, "closing", NO_ENV).unwrap();
        assert_eq!(again.billing_toml(), text);
        assert_eq!(again.catalog(), config.catalog());
        assert!(text.contains("unit_price = \"0.0400\""), "{text}");
        // Labels bill nothing: a closing does not record them.
        assert!(!text.contains("enterprise"), "{text}");
        assert!(config.to_toml().contains("enterprise"));
    }
}
