//! `[api]`: the server, its tokens and its limits, and their checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::{ByteSize, HumanDuration, Secret};

/// The shortest secret accepted (`api.jwt_secret`, `api.metrics_token`): an
/// HS256 key as long as the hash it keys, so it cannot be guessed offline from
/// one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The smallest `api.sql_max_bytes` accepted: room for an error-free answer
/// of a few rows.
pub(super) const MIN_SQL_MAX_BYTES: u64 = 1 << 10;

/// The largest `api.clock_skew` accepted.
pub(super) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The bounds of `api.refresh_interval`: more often would spend a core on log
/// listings; less often would leave views an hour behind the lake.
pub(super) const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
pub(super) const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// The HTTP server (docs/reference.md#server-settings).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// Address of the Arrow Flight SQL endpoint (docs/reference.md#sql-over-the-wire);
    /// off when unset.
    pub flight_sql_listen: Option<String>,
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
            flight_sql_listen: None,
        }
    }
}

impl ApiConfig {
    /// `[api]`: the listen address, tokens, limits.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "api.listen",
                format!("{:?} is not an address such as 127.0.0.1:8080", self.listen),
            ));
        }
        if let Some(flight) = &self.flight_sql_listen
            && flight.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::new(
                "api.flight_sql_listen",
                format!("{flight:?} is not an address such as 127.0.0.1:50051"),
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
