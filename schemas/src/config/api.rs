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

/// The HTTP server of `allot serve` (docs/reference.md#server-settings): its
/// address, the tokens it accepts and the limits that protect it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The address the server listens on, `host:port` (`--listen` wins).
    pub listen: String,
    /// The HS256 key tokens are signed with, at least 32 bytes. Serving
    /// needs this or `jwt_public_key`.
    pub jwt_secret: Option<Secret>,
    /// The path of an Ed25519 public key (PEM) that EdDSA tokens are checked
    /// with. Serving needs this or `jwt_secret`.
    pub jwt_public_key: Option<String>,
    /// The path of the matching Ed25519 private key (PKCS#8 PEM): `allot
    /// token` signs EdDSA tokens with it instead of HS256 ones.
    pub jwt_private_key: Option<String>,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// The longest lifetime a token may have (above 0).
    pub max_token_ttl: HumanDuration,
    /// How far the clocks of token issuers and the server may disagree, on
    /// a token's `exp`, `nbf` and lifetime cap (at most `5m`).
    pub clock_skew: HumanDuration,
    /// The file denied attempts are appended to, as JSON Lines.
    pub audit_log: String,
    /// Requests per second one tenant may make (at least 1).
    pub rate_limit_per_s: u32,
    /// SQL queries one tenant may run at once (at least 1).
    pub sql_concurrency: u32,
    /// The time one SQL query may take, from parsing to its last row;
    /// beyond it, 408.
    pub sql_timeout: HumanDuration,
    /// The memory one SQL query's operators and function results may use;
    /// beyond it, 400.
    pub sql_memory: ByteSize,
    /// The most rows one SQL answer may hold (at least 1); beyond it, 413.
    pub sql_max_rows: usize,
    /// The most bytes one SQL answer may hold, counting its values as text
    /// plus 4 bytes per value (at least `1KiB`); beyond it, 413.
    pub sql_max_bytes: ByteSize,
    /// The shared-costs CSV behind `GET /v1/allocation/{month}`, checked at
    /// start and read on every request; unset, no allocation.
    pub costs_file: Option<String>,
    /// The time one HTTP request may take (above 0); beyond it, 408.
    pub request_timeout: HumanDuration,
    /// The largest request body accepted (above 0); a larger one is 413.
    pub max_body: ByteSize,
    /// How often the server reads the lake's new commits, from `100ms` to
    /// `1h`: the longest a commit takes to show in every view
    /// (docs/reference.md#serving).
    pub refresh_interval: HumanDuration,
    /// The memory of the server's report cache, least recently used answers
    /// dropped first; `"0B"` turns the cache off.
    pub cache_memory: ByteSize,
    /// The time a client has to send a request's headers (above 0); a
    /// connection still sending them, or kept alive and silent this long, is
    /// closed.
    pub header_read_timeout: HumanDuration,
    /// A connection with no request in flight and no byte read or written
    /// this long is closed (above 0): a stalled body, or a client that stopped
    /// reading.
    pub idle_timeout: HumanDuration,
    /// How long a stopping server lets the requests in flight finish before
    /// it closes their connections (above 0).
    pub shutdown_timeout: HumanDuration,
    /// Requests per second without a valid token one source address (for
    /// IPv6, one /64) may make (at least 1); beyond it, 429, not audited.
    pub anonymous_rate_limit_per_s: u32,
    /// The bearer token `GET /metrics` requires, at least 32 bytes; unset,
    /// `/metrics` is open and must be kept private.
    pub metrics_token: Option<Secret>,
    /// Address of the Arrow Flight SQL endpoint (docs/reference.md#sql-over-the-wire);
    /// off when unset.
    pub flight_sql_listen: Option<String>,
    /// The path of the server's TLS certificate chain (PEM, leaf first).
    /// Set with `tls_key`, every listener (HTTP, Flight SQL, PostgreSQL)
    /// speaks TLS only (docs/reference.md#server-settings).
    pub tls_cert: Option<String>,
    /// The path of the private key (PEM: PKCS#8, PKCS#1 or SEC1) of
    /// `tls_cert`.
    pub tls_key: Option<String>,
    /// Address of the PostgreSQL wire endpoint (docs/reference.md#sql-over-the-wire);
    /// off when unset.
    pub pg_listen: Option<String>,
    /// Accept the PostgreSQL wire's cleartext password (the token) over a
    /// connection without TLS: for a loopback address in development only,
    /// since anyone on the path reads the token.
    pub pg_allow_plaintext: bool,
    /// A PostgreSQL wire connection with no statement for this long is closed
    /// (above 0).
    pub pg_idle_timeout: HumanDuration,
    /// The most PostgreSQL wire connections open at once (at least 1); one
    /// more is refused with SQLSTATE `53300`.
    pub pg_max_connections: usize,
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
            tls_cert: None,
            tls_key: None,
            pg_listen: None,
            pg_allow_plaintext: false,
            pg_idle_timeout: HumanDuration(Duration::from_secs(600)),
            pg_max_connections: 100,
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
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "api.tls_key",
                    "must be set with api.tls_cert",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "api.tls_cert",
                    "must be set with api.tls_key",
                ));
            }
            _ => {}
        }
        if let Some(pg) = &self.pg_listen {
            let address = pg.parse::<std::net::SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "api.pg_listen",
                    format!("{pg:?} is not an address such as 127.0.0.1:5432"),
                )
            })?;
            // The password is a token: without TLS it crosses the network
            // in clear, which only a loopback development setup may accept.
            if self.tls_cert.is_none() && !self.pg_allow_plaintext {
                return Err(ConfigError::new(
                    "api.pg_listen",
                    "needs api.tls_cert and api.tls_key (the password is a token), \
                     or api.pg_allow_plaintext = true on a loopback address",
                ));
            }
            if self.pg_allow_plaintext && !address.ip().is_loopback() {
                return Err(ConfigError::new(
                    "api.pg_allow_plaintext",
                    format!("only for a loopback api.pg_listen, not {address}"),
                ));
            }
        }
        if self.pg_idle_timeout.0.is_zero() {
            return Err(ConfigError::new(
                "api.pg_idle_timeout",
                "must be greater than 0",
            ));
        }
        if self.pg_max_connections == 0 {
            return Err(ConfigError::new(
                "api.pg_max_connections",
                "must be at least 1",
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
