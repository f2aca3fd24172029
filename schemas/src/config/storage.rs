//! `[lake]` and `[lake.storage]`: where the lake is and how its object
//! store is reached.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::HumanDuration;
use crate::layout::StorageOptions;

/// Where the lake is. `lake = "s3://bucket/lake"` at the top of the file is
/// short for this section with only `url` set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// The lake: a local directory or an object-store URL such as
    /// `s3://bucket/lake`. Commands that take `--lake` use it when the flag is
    /// not given.
    pub url: Option<String>,
    /// How the lake's object store is reached.
    #[serde(default)]
    pub storage: StorageConfig,
}

/// The object store's endpoint, region and credentials
/// (docs/reference.md#object-storage). A key left unset is taken from its
/// `AWS_*` environment variable, and credentials from the AWS credential
/// chain after that. Credentials are never printed and never taken from the
/// command line.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The endpoint of any S3-compatible store, e.g. `http://minio:9000`;
    /// unset, `AWS_ENDPOINT_URL` or AWS itself.
    pub endpoint: Option<String>,
    /// The store's region; unset, `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Whether an `http://` endpoint (no TLS) is accepted; unset,
    /// `AWS_ALLOW_HTTP`.
    pub allow_http: Option<bool>,
    /// The access key id; unset, `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// The secret access key; unset, `AWS_SECRET_ACCESS_KEY`. Printed as
    /// `<hidden>`.
    pub secret_access_key: Option<String>,
    /// The session token of temporary credentials; unset,
    /// `AWS_SESSION_TOKEN`. Printed as `<hidden>`.
    pub session_token: Option<String>,
    /// How long one request to the store is retried before the command
    /// fails with one error line.
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
