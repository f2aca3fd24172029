//! `allot.toml`: configuration types, loading with environment overrides, validation.
//!
//! Loading is layered: built-in defaults, then the TOML file, then `ALLOT__SECTION__KEY`
//! environment variables (docs/reference.md#configuration-file). Every struct denies
//! unknown keys, and every error names the offending key (`api.listen`,
//! `rates[2].unit_price`) and, for an override, the variable it came from. Money and
//! quantities are exact decimals ([`ConfigDecimal`]): a TOML float is refused because it
//! has already been through a binary float.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bigdecimal::BigDecimal;
use chrono::NaiveDate;
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::decimal::parse_plain_decimal;
use crate::layout::StorageOptions;
use crate::tenant::is_valid_tenant_id;

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

/// The whole of `allot.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Currency of every price and invoice.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Where the lake is (`lake = "…"`, or `[lake] url`; `--lake` overrides
    /// it) and how to reach its object store (`[lake.storage]`).
    #[serde(default)]
    pub lake: LakeConfig,
    /// Kafka connection for collectors.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Collector batching and validation limits.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Metrics added to (or replacing by name) the built-in catalog.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricDefinition>,
    /// The global price book.
    #[serde(default)]
    pub rates: Vec<RateEntry>,
    /// Per-tenant overrides, discounts and quotas.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Tenant-health thresholds.
    #[serde(default)]
    pub health: HealthConfig,
    /// Noisy-neighbour detection thresholds.
    #[serde(default)]
    pub noisy: NoisyConfig,
    /// The HTTP server.
    #[serde(default)]
    pub api: ApiConfig,
    /// How reports read the lake.
    #[serde(default)]
    pub reports: ReportsConfig,
}

fn default_currency() -> String {
    "USD".to_string()
}

impl Default for Config {
    fn default() -> Self {
        Config {
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
        }
    }
}

/// The `[lake]` section; `lake = "s3://bucket/lake"` is short for `[lake] url`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// The lake URL or path; `--lake` overrides it.
    pub url: Option<String>,
    /// How to reach the lake's object store.
    #[serde(default)]
    pub storage: StorageConfig,
}

/// `[lake.storage]`: the object store's endpoint, region and credentials
/// (docs/reference.md#object-storage). A key left out falls back to its
/// `AWS_*` environment variable (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`). `Debug` hides the secrets.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The S3 endpoint of an S3-compatible store, e.g. `http://minio:9000`.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when neither this nor `AWS_REGION` is set).
    pub region: Option<String>,
    /// Whether a plain `http://` endpoint is allowed.
    pub allow_http: Option<bool>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
    /// How long one request to the store is retried before it fails (default 30s).
    pub retry_timeout: Option<HumanDuration>,
}

/// How long a request to the object store is retried unless
/// `lake.storage.retry_timeout` says otherwise: long enough to ride out a
/// store's brief unavailability, short enough that a wrong endpoint is reported
/// within a minute rather than after the store client's own three.
pub const DEFAULT_STORAGE_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

impl StorageConfig {
    /// The settings as delta-rs storage options. Keys not set here are left out,
    /// so that delta-rs reads them from the `AWS_*` environment.
    pub fn options(&self) -> StorageOptions {
        let mut options = BTreeMap::new();
        let mut set = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                options.insert(key.to_string(), value);
            }
        };
        set("aws_endpoint", self.endpoint.clone());
        set("aws_region", self.region.clone());
        set("aws_allow_http", self.allow_http.map(|b| b.to_string()));
        set("aws_access_key_id", self.access_key_id.clone());
        set("aws_secret_access_key", self.secret_access_key.clone());
        set("aws_session_token", self.session_token.clone());
        let retry = self
            .retry_timeout
            .map_or(DEFAULT_STORAGE_RETRY_TIMEOUT, |t| t.0);
        set("retry_timeout", Some(format!("{}ms", retry.as_millis())));
        StorageOptions::new(options)
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<hidden>");
        f.debug_struct("StorageConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

/// Kafka settings of a collector; the CLI flags override them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: Option<String>,
    /// The topic of usage events.
    pub topic: Option<String>,
    /// The consumer group of the collector fleet.
    pub group: Option<String>,
    /// Extra librdkafka properties passed through unchanged to every client
    /// (the consumer and the dead-letter producer).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Whether rejected events also go to the dead-letter topic `<topic>.dlq`
    /// (which must then exist); `rejected_events` records them either way.
    #[serde(default = "enabled")]
    pub dlq: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            topic: None,
            group: None,
            properties: BTreeMap::new(),
            dlq: true,
        }
    }
}

/// Serde's default of a setting that is on unless turned off.
fn enabled() -> bool {
    true
}

/// How collectors batch and validate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Flush a batch when it holds this many rows (Kafka collectors).
    pub flush_rows: usize,
    /// Rows per commit of a file backfill, which favours fewer, larger files
    /// over latency; `flush_bytes` still bounds its memory.
    pub backfill_flush_rows: usize,
    /// Flush a batch when its Arrow buffers reach this size.
    pub flush_bytes: ByteSize,
    /// Bytes per batch of a file backfill, whose tenant-days stay open across
    /// batches: smaller batches bound its memory at no cost in files.
    pub backfill_flush_bytes: ByteSize,
    /// Flush at least this often.
    pub flush_interval: HumanDuration,
    /// Cap on buffered data across all partitions.
    pub max_buffer_bytes: ByteSize,
    /// How far ahead of the collector's clock an event's `ts` may be.
    pub max_future_skew: HumanDuration,
    /// Largest accepted event.
    pub max_event_bytes: ByteSize,
    /// Target size of compacted files.
    pub compaction_target_bytes: ByteSize,
    /// How often a collector compacts the lake in the background; `0s` disables.
    pub compaction_interval: HumanDuration,
    /// Background compaction rewrites a tenant-day once it has this many small files.
    pub compaction_min_files: usize,
    /// Address a collector serves Prometheus metrics on (`--metrics-listen`).
    pub metrics_listen: Option<String>,
    /// Copies of a `(tenant_id, event_id)` whose `ts` lie closer than this are
    /// one event (docs/reference.md#duplicates); at least one day.
    pub dedup_window: HumanDuration,
    /// `allot vacuum` deletes files removed from `usage_events` longer ago than
    /// this.
    pub vacuum_retention: HumanDuration,
    /// `allot vacuum` keeps every file a closing's version needs while the
    /// closing is younger than this (docs/reference.md#verify).
    pub close_retention: HumanDuration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            flush_rows: 100_000,
            backfill_flush_rows: 1_000_000,
            flush_bytes: ByteSize(64 << 20),
            backfill_flush_bytes: ByteSize(32 << 20),
            flush_interval: HumanDuration(Duration::from_secs(10)),
            max_buffer_bytes: ByteSize(256 << 20),
            max_future_skew: HumanDuration(Duration::from_secs(86_400)),
            max_event_bytes: ByteSize(1 << 20),
            compaction_target_bytes: ByteSize(128 << 20),
            compaction_interval: HumanDuration(Duration::from_secs(600)),
            compaction_min_files: 10,
            metrics_listen: None,
            dedup_window: HumanDuration(DEFAULT_DEDUP_WINDOW),
            vacuum_retention: HumanDuration(Duration::from_secs(7 * 86_400)),
            close_retention: HumanDuration(Duration::from_secs(400 * 86_400)),
        }
    }
}

/// The default `ingest.dedup_window`: 35 days.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(35 * 86_400);

/// Whether a metric is summed or time-weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Summed over the period.
    Counter,
    /// Time-weighted over the period.
    Gauge,
}

/// One metric of the catalog (docs/reference.md#metric-catalog).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDefinition {
    /// Counter or gauge.
    pub kind: MetricKind,
    /// The billing unit, e.g. `GiB-month`.
    pub unit: String,
    /// Billing quantity = raw quantity / divisor.
    pub divisor: ConfigDecimal,
    /// For gauges: how long one sample holds at most.
    #[serde(default)]
    pub hold: Option<HumanDuration>,
}

/// The metrics events may use: the built-in three plus those of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCatalog {
    metrics: BTreeMap<String, MetricSpec>,
}

/// A resolved catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// Counter or gauge.
    pub kind: MetricKind,
    /// The billing unit.
    pub unit: String,
    /// Billing quantity = raw quantity / divisor.
    pub divisor: BigDecimal,
    /// For gauges, how long one sample holds at most; `None` for counters.
    pub hold: Option<Duration>,
}

/// How long a gauge sample holds when the catalog does not say.
pub const DEFAULT_GAUGE_HOLD: Duration = Duration::from_secs(3600);

/// The shortest secret accepted (`api.jwt_secret`, `api.metrics_token`): an
/// HS256 key as long as the hash it keys, so it cannot be guessed offline from
/// one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The smallest `api.sql_max_bytes` accepted: room for an error-free answer
/// of a few rows.
const MIN_SQL_MAX_BYTES: u64 = 1 << 10;

/// The largest `api.clock_skew` accepted.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The bounds of `api.refresh_interval`: more often would spend a core on log
/// listings; less often would leave views an hour behind the lake.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

impl Default for MetricCatalog {
    fn default() -> Self {
        let spec = |kind, unit: &str, divisor: &str, hold| MetricSpec {
            kind,
            unit: unit.to_string(),
            divisor: BigDecimal::from_str(divisor).expect("built-in divisor"),
            hold,
        };
        let metrics = BTreeMap::from([
            (
                "compute_seconds".to_string(),
                spec(MetricKind::Counter, "vCPU-hour", "3600", None),
            ),
            (
                "egress_bytes".to_string(),
                spec(MetricKind::Counter, "GiB", "1073741824", None),
            ),
            (
                "storage_bytes".to_string(),
                spec(
                    MetricKind::Gauge,
                    "GiB-month",
                    "1073741824",
                    Some(DEFAULT_GAUGE_HOLD),
                ),
            ),
        ]);
        MetricCatalog { metrics }
    }
}

impl MetricCatalog {
    /// Whether `metric` is in the catalog.
    pub fn contains(&self, metric: &str) -> bool {
        self.metrics.contains_key(metric)
    }

    /// The entry of `metric`.
    pub fn get(&self, metric: &str) -> Option<&MetricSpec> {
        self.metrics.get(metric)
    }

    /// All entries, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetricSpec)> {
        self.metrics
            .iter()
            .map(|(name, spec)| (name.as_str(), spec))
    }
}

/// One entry of a price book (docs/reference.md#price-book-and-tenants): a flat price or
/// graduated tiers.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Upper bound of the band in billing units; absent for the last band.
    #[serde(default)]
    pub up_to: Option<ConfigDecimal>,
    /// Price per billing unit inside the band.
    pub unit_price: ConfigDecimal,
}

/// Per-tenant settings.
#[derive(Debug, Clone, Default, Deserialize)]
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

/// Tenant-health thresholds (docs/reference.md#tenant-health).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A tenant silent this long, after events in the previous 24 h, is stale.
    pub stale_after: HumanDuration,
    /// Quota use at or above this percentage is a warning.
    pub quota_warning_percent: ConfigDecimal,
    /// Quota use at or above this percentage is critical.
    pub quota_critical_percent: ConfigDecimal,
    /// Rejected events at or above this percentage of a tenant's events in 24 h is a warning.
    pub rejected_warning_percent: ConfigDecimal,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            stale_after: HumanDuration(Duration::from_secs(3600)),
            quota_warning_percent: ConfigDecimal::from_static("80"),
            quota_critical_percent: ConfigDecimal::from_static("100"),
            rejected_warning_percent: ConfigDecimal::from_static("1"),
        }
    }
}

/// How reports read the lake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// Read whole days from their up-to-date rollups (`usage_hourly`); `false`
    /// reads every event raw, with the same figures, more slowly.
    pub rollups: bool,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig { rollups: true }
    }
}

/// Noisy-neighbour thresholds (docs/reference.md#noisy-neighbours).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoisyConfig {
    /// Bucket width.
    pub bucket: HumanDuration,
    /// Number of buckets in the baseline before each bucket.
    pub baseline_buckets: u32,
    /// Minimum share of the bucket's total.
    pub min_share: ConfigDecimal,
    /// Minimum z-score against the baseline.
    pub min_z: ConfigDecimal,
    /// Minimum number of tenants that used the metric in the bucket.
    pub min_active_tenants: u32,
}

impl Default for NoisyConfig {
    fn default() -> Self {
        NoisyConfig {
            bucket: HumanDuration(Duration::from_secs(3600)),
            baseline_buckets: 168,
            min_share: ConfigDecimal::from_static("0.30"),
            min_z: ConfigDecimal::from_static("3.0"),
            min_active_tenants: 2,
        }
    }
}

/// The HTTP server (docs/reference.md#server-settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on.
    pub listen: String,
    /// HS256 signing key.
    pub jwt_secret: Option<Secret>,
    /// Path of an Ed25519 public key (PEM) for EdDSA tokens.
    pub jwt_public_key: Option<String>,
    /// Path of the matching Ed25519 private key (PKCS#8 PEM), only for `allot token`.
    pub jwt_private_key: Option<String>,
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// Longest accepted token lifetime.
    pub max_token_ttl: HumanDuration,
    /// Clock skew tolerated between token issuers and the server, on `exp`,
    /// `nbf` and the lifetime cap.
    pub clock_skew: HumanDuration,
    /// Where denied attempts are written (JSON Lines).
    pub audit_log: String,
    /// Requests per second per tenant.
    pub rate_limit_per_s: u32,
    /// Concurrent SQL queries per tenant.
    pub sql_concurrency: u32,
    /// Time limit of one SQL query.
    pub sql_timeout: HumanDuration,
    /// Memory cap of one SQL query.
    pub sql_memory: ByteSize,
    /// Row cap of one SQL result.
    pub sql_max_rows: usize,
    /// Byte cap of one SQL result, its values counted as text.
    pub sql_max_bytes: ByteSize,
    /// The shared-costs CSV behind `GET /v1/allocation/{month}`.
    pub costs_file: Option<String>,
    /// Time limit of one HTTP request.
    pub request_timeout: HumanDuration,
    /// Largest accepted request body.
    pub max_body: ByteSize,
    /// How often the server reads the lake's new commits (docs/reference.md#serving): the
    /// longest a commit takes to show in every view.
    pub refresh_interval: HumanDuration,
    /// Memory of the server's report cache (least recently used answers are
    /// dropped first).
    pub cache_memory: ByteSize,
    /// Time a client has to send a request's headers; a connection still
    /// sending them (or silent after its last answer) is closed after it.
    pub header_read_timeout: HumanDuration,
    /// A connection with no request in flight and no byte read or written for
    /// this long is closed (a stalled body or a client that stopped reading).
    pub idle_timeout: HumanDuration,
    /// How long a stopping server lets the requests in flight finish before it
    /// closes their connections.
    pub shutdown_timeout: HumanDuration,
    /// Requests per second per source address that carry no valid token,
    /// counted before they are audited.
    pub anonymous_rate_limit_per_s: u32,
    /// A bearer token `GET /metrics` requires when set.
    pub metrics_token: Option<Secret>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".to_string(),
            jwt_secret: None,
            jwt_public_key: None,
            jwt_private_key: None,
            issuer: "allot".to_string(),
            audience: "allot".to_string(),
            max_token_ttl: HumanDuration(Duration::from_secs(3600)),
            clock_skew: HumanDuration(Duration::from_secs(30)),
            audit_log: "audit.jsonl".to_string(),
            rate_limit_per_s: 50,
            sql_concurrency: 2,
            sql_timeout: HumanDuration(Duration::from_secs(30)),
            sql_memory: ByteSize(512 << 20),
            sql_max_rows: 100_000,
            sql_max_bytes: ByteSize(64 << 20),
            costs_file: None,
            request_timeout: HumanDuration(Duration::from_secs(60)),
            max_body: ByteSize(64 << 10),
            refresh_interval: HumanDuration(Duration::from_secs(1)),
            cache_memory: ByteSize(256 << 20),
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(60)),
            shutdown_timeout: HumanDuration(Duration::from_secs(10)),
            anonymous_rate_limit_per_s: 5,
            metrics_token: None,
        }
    }
}

/// A secret string: deserialized like a string, printed as `***`. A value of
/// another type is refused without being shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl Visitor {
            fn refuse<E: de::Error>(self) -> Result<Secret, E> {
                Err(E::custom("must be a string (the value is not shown)"))
            }
        }
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Secret, E> {
                Ok(Secret(text.to_string()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                self.refuse()
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                self.refuse()
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                self.refuse()
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                self.refuse()
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                self.refuse()
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                self.refuse()
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret(secret)
    }
}

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An exact decimal read from a TOML string (`"0.0400"`) or integer (`3600`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDecimal(pub BigDecimal);

impl ConfigDecimal {
    fn from_static(text: &str) -> Self {
        ConfigDecimal(BigDecimal::from_str(text).expect("built-in decimal"))
    }
}

impl<'de> Deserialize<'de> for ConfigDecimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ConfigDecimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal as a string such as \"0.04\", or an integer")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigDecimal, E> {
                parse_plain_decimal(text)
                    .map(ConfigDecimal)
                    .ok_or_else(|| E::custom(format!("{text:?} is not a decimal number")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigDecimal, E> {
                Ok(ConfigDecimal(BigDecimal::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigDecimal, E> {
                Ok(ConfigDecimal(BigDecimal::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ConfigDecimal, E> {
                Err(E::custom(format!(
                    "write decimals as strings (\"{v}\"): a TOML float is not exact"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A duration written like `30s`, `15m`, `1h`, `1d` or `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{text:?} needs a unit (ms, s, m, h, d)"))?;
        let (number, unit) = text.split_at(split);
        let amount: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration such as \"30s\" or \"1h\""))?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "{text:?} has an unknown unit (use ms, s, m, h or d)"
                ));
            }
        };
        amount
            .checked_mul(millis_per_unit)
            .map(|ms| HumanDuration(Duration::from_millis(ms)))
            .ok_or_else(|| format!("{text:?} is too long"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A size in bytes written like `64MiB`, `512KiB`, `1GiB` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let amount: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size such as \"64MiB\""))?;
        let multiplier: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => {
                return Err(format!(
                    "{text:?} has an unknown unit (use B, KiB, MiB or GiB)"
                ));
            }
        };
        amount
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or an integer number of bytes")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        deserializer.deserialize_any(Visitor)
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
        let config: Config =
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
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The metric catalog: the built-in metrics plus (or replaced by) the configured ones.
    pub fn catalog(&self) -> MetricCatalog {
        let mut catalog = MetricCatalog::default();
        for (name, def) in &self.metrics {
            let hold = match def.kind {
                MetricKind::Counter => None,
                MetricKind::Gauge => Some(def.hold.map_or(DEFAULT_GAUGE_HOLD, |h| h.0)),
            };
            catalog.metrics.insert(
                name.clone(),
                MetricSpec {
                    kind: def.kind,
                    unit: def.unit.clone(),
                    divisor: def.divisor.0.clone(),
                    hold,
                },
            );
        }
        catalog
    }

    /// Checks what types alone cannot; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_currency()?;
        self.validate_metrics()?;
        let catalog = self.catalog();
        validate_rates(&self.rates, "rates", &catalog)?;
        self.validate_tenants(&catalog)?;
        self.ingest.validate()?;
        self.noisy.validate()?;
        self.api.validate()?;
        Ok(())
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

    /// `[metrics.*]`: names, divisors and gauge holds.
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
                (MetricKind::Counter, Some(_)) => {
                    return Err(ConfigError::new(key("hold"), "only gauges have a hold"));
                }
                (MetricKind::Gauge, Some(hold)) if hold.0.is_zero() => {
                    return Err(ConfigError::new(key("hold"), "must be greater than 0"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `[tenants.*]`: ids, discounts, quotas and rate overrides.
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
            validate_rates(&settings.rates, &key("rates"), catalog)?;
        }
        Ok(())
    }
}

impl IngestConfig {
    /// `[ingest]`: flush sizes, buffers, compaction, the dedup window.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.flush_rows == 0 {
            return Err(ConfigError::new("ingest.flush_rows", "must be at least 1"));
        }
        if self.backfill_flush_rows == 0 {
            return Err(ConfigError::new(
                "ingest.backfill_flush_rows",
                "must be at least 1",
            ));
        }
        if self.backfill_flush_bytes.0 == 0 {
            return Err(ConfigError::new(
                "ingest.backfill_flush_bytes",
                "must be above 0",
            ));
        }
        if self.flush_bytes.0 == 0 || self.max_buffer_bytes.0 < self.flush_bytes.0 {
            return Err(ConfigError::new(
                "ingest.max_buffer_bytes",
                "must be at least ingest.flush_bytes, which must be above 0",
            ));
        }
        if self.compaction_min_files < 2 {
            return Err(ConfigError::new(
                "ingest.compaction_min_files",
                "must be at least 2",
            ));
        }
        if self.dedup_window.0 < Duration::from_secs(86_400)
            || self.dedup_window.0 > Duration::from_secs(3650 * 86_400)
        {
            return Err(ConfigError::new(
                "ingest.dedup_window",
                "must be between 1d and 3650d: copies on the same UTC day are always one event",
            ));
        }
        if self.max_event_bytes.0 == 0 {
            return Err(ConfigError::new(
                "ingest.max_event_bytes",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// The most buckets (the range's plus the baseline's) one noisy-neighbour
/// report may use: the detector holds every tenant's usage in every one of
/// them, so this bounds its memory (docs/reference.md#serving). A month in 10-minute buckets, or
/// half a year in hours, stays under it with the default baseline of 168.
pub const MAX_NOISY_BUCKETS: i64 = 5_000;

impl NoisyConfig {
    /// `[noisy]`: the bucket and baseline. Every health report flags the last
    /// day in these buckets, so that day's buckets and the baseline must fit
    /// in [`MAX_NOISY_BUCKETS`], and the bucket be at most a day.
    fn validate(&self) -> Result<(), ConfigError> {
        const DAY: Duration = Duration::from_secs(86_400);
        if self.bucket.0.is_zero() || self.bucket.0 > DAY {
            return Err(ConfigError::new(
                "noisy.bucket",
                "must be longer than 0 and at most 1d",
            ));
        }
        let day_buckets = DAY.as_micros().div_ceil(self.bucket.0.as_micros());
        let spanned = day_buckets.saturating_add(u128::from(self.baseline_buckets));
        if self.baseline_buckets == 0 || spanned > MAX_NOISY_BUCKETS as u128 {
            return Err(ConfigError::new(
                "noisy.baseline_buckets",
                format!(
                    "must be at least 1, and with the {day_buckets} buckets of a health report's \
                     last day at most {MAX_NOISY_BUCKETS} buckets in all"
                ),
            ));
        }
        Ok(())
    }
}

impl ApiConfig {
    /// `[api]`: the listen address, tokens, limits.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "api.listen",
                format!("{:?} is not an address such as 127.0.0.1:8080", self.listen),
            ));
        }
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < MIN_SECRET_BYTES)
        {
            return Err(ConfigError::new(
                "api.jwt_secret",
                format!("must be at least {MIN_SECRET_BYTES} bytes for HS256"),
            ));
        }
        if self.request_timeout.0.is_zero() || self.max_body.0 == 0 {
            return Err(ConfigError::new(
                "api.request_timeout",
                "request_timeout and max_body must be greater than 0",
            ));
        }
        if !(MIN_REFRESH_INTERVAL..=MAX_REFRESH_INTERVAL).contains(&self.refresh_interval.0) {
            return Err(ConfigError::new(
                "api.refresh_interval",
                "must be between 100ms and 1h",
            ));
        }
        if self.max_token_ttl.0.is_zero() {
            return Err(ConfigError::new(
                "api.max_token_ttl",
                "must be greater than 0",
            ));
        }
        if self.clock_skew.0 > MAX_CLOCK_SKEW {
            return Err(ConfigError::new(
                "api.clock_skew",
                "must be at most 5m: a longer leeway keeps expired tokens valid",
            ));
        }
        for (key, timeout) in [
            ("api.header_read_timeout", self.header_read_timeout),
            ("api.idle_timeout", self.idle_timeout),
            ("api.shutdown_timeout", self.shutdown_timeout),
        ] {
            if timeout.0.is_zero() {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if self.anonymous_rate_limit_per_s == 0 {
            return Err(ConfigError::new(
                "api.anonymous_rate_limit_per_s",
                "must be at least 1",
            ));
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|token| token.expose().len() < MIN_SECRET_BYTES)
        {
            return Err(ConfigError::new(
                "api.metrics_token",
                format!("must be at least {MIN_SECRET_BYTES} bytes"),
            ));
        }
        if self.sql_max_rows == 0 || self.sql_concurrency == 0 || self.rate_limit_per_s == 0 {
            return Err(ConfigError::new(
                "api",
                "rate_limit_per_s, sql_concurrency and sql_max_rows must be at least 1",
            ));
        }
        if self.sql_max_bytes.0 < MIN_SQL_MAX_BYTES {
            return Err(ConfigError::new(
                "api.sql_max_bytes",
                "must be at least 1KiB",
            ));
        }
        Ok(())
    }
}

/// Whether `name` is a valid metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_lowercase())
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn validate_rates(
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

fn validate_tiers(tiers: &[Tier], prefix: &str) -> Result<(), ConfigError> {
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

/// Applies `ALLOT__A__B=value` variables to the table; returns which dotted key
/// prefix each variable set, for error messages.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError {
                key: path.join("."),
                message: "malformed override variable".to_string(),
                origin: Some(var),
            });
        }
        let (last, parents) = path.split_last().expect("split yields one part at least");
        let mut node = &mut *table;
        for part in parents {
            let entry = node
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = match entry {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(ConfigError {
                        key: path.join("."),
                        message: format!("`{part}` is not a section"),
                        origin: Some(var),
                    });
                }
            };
        }
        let value = if is_secret_key(last) {
            toml::Value::String(raw)
        } else {
            env_value(&raw)
        };
        node.insert(last.clone(), value);
        applied.push((path.join("."), var));
    }
    Ok(applied)
}

/// Whether an override of key `name` is a secret, taken verbatim as text: a
/// secret of digits stays the string it was (`007` is not `7`).
fn is_secret_key(name: &str) -> bool {
    name.contains("secret") || name.ends_with("_token")
}

/// Reads an override as a TOML value (`5000`, `true`, `"x"`), else as a plain string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

impl Config {
    /// The billing part of a configuration as canonical TOML text: the currency, the
    /// whole effective metric catalog (built-in metrics included), the global price
    /// book and every tenant (discount, quotas, rate overrides). A closing stores
    /// this text and its SHA-256, and `allot verify` parses it back with
    /// [`Config::from_toml_str`]: the same inputs always give the same text, and the
    /// text gives back the same catalog, price book and tenants.
    pub fn billing_toml(&self) -> String {
        let mut out = format!("currency = {}\n", toml_string(&self.currency));
        for (name, spec) in self.catalog().iter() {
            out.push_str(&format!("\n[metrics.{name}]\n"));
            let kind = match spec.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            out.push_str(&format!("kind = \"{kind}\"\n"));
            out.push_str(&format!("unit = {}\n", toml_string(&spec.unit)));
            out.push_str(&format!(
                "divisor = \"{}\"\n",
                spec.divisor.to_plain_string()
            ));
            if let Some(hold) = spec.hold {
                out.push_str(&format!("hold = \"{}ms\"\n", hold.as_millis()));
            }
        }
        let rates = |out: &mut String, header: &str, entries: &[RateEntry]| {
            for entry in entries {
                out.push_str(&format!("\n[[{header}]]\n"));
                out.push_str(&format!("metric = {}\n", toml_string(&entry.metric)));
                out.push_str(&format!(
                    "effective_from = {}\n",
                    toml_string(&entry.effective_from)
                ));
                if let Some(price) = &entry.unit_price {
                    out.push_str(&format!("unit_price = \"{}\"\n", price.0.to_plain_string()));
                }
                if let Some(tiers) = &entry.tiers {
                    let tiers: Vec<String> = tiers
                        .iter()
                        .map(|tier| match &tier.up_to {
                            Some(up_to) => format!(
                                "{{ up_to = \"{}\", unit_price = \"{}\" }}",
                                up_to.0.to_plain_string(),
                                tier.unit_price.0.to_plain_string()
                            ),
                            None => format!(
                                "{{ unit_price = \"{}\" }}",
                                tier.unit_price.0.to_plain_string()
                            ),
                        })
                        .collect();
                    out.push_str(&format!("tiers = [{}]\n", tiers.join(", ")));
                }
            }
        };
        rates(&mut out, "rates", &self.rates);
        for (tenant, settings) in &self.tenants {
            out.push_str(&format!("\n[tenants.{tenant}]\n"));
            if let Some(discount) = &settings.discount_percent {
                out.push_str(&format!(
                    "discount_percent = \"{}\"\n",
                    discount.0.to_plain_string()
                ));
            }
            if !settings.quotas.is_empty() {
                let quotas: Vec<String> = settings
                    .quotas
                    .iter()
                    .map(|(metric, quota)| format!("{metric} = \"{}\"", quota.0.to_plain_string()))
                    .collect();
                out.push_str(&format!("quotas = {{ {} }}\n", quotas.join(", ")));
            }
            rates(
                &mut out,
                &format!("tenants.{tenant}.rates"),
                &settings.rates,
            );
        }
        out
    }
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
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
                "[tenants.acme]\nquotas = { gpu = \"1\" }",
                "tenants.acme.quotas.gpu",
            ),
            (
                "[metrics.gpu]\nkind = \"counter\"\nunit = \"h\"\ndivisor = \"0\"",
                "metrics.gpu.divisor",
            ),
            ("[api]\nlisten = \"nowhere\"", "api.listen"),
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
    }
}
