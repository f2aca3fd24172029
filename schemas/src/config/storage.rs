//! `[lake]` and `[lake.storage]`: where the lake is and how its object
//! store is reached.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::HumanDuration;
use crate::layout::StorageOptions;

/// The `[lake]` section; `lake = "s3://bucket/lake"` is short for `[lake] url`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
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
#[derive(Clone, PartialEq, Deserialize, Serialize)]
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
    /// How long one request to the store is retried before it fails.
    #[serde(default = "default_retry_timeout")]
    pub retry_timeout: HumanDuration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            endpoint: None,
            region: None,
            allow_http: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            retry_timeout: default_retry_timeout(),
        }
    }
}

fn default_retry_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_STORAGE_RETRY_TIMEOUT)
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
        let retry = self.retry_timeout.0.as_millis();
        set("retry_timeout", Some(format!("{retry}ms")));
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
