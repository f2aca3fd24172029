//! librdkafka clients as the collector makes them: every client (the consumer
//! and the dead-letter producer alike) gets the bootstrap servers and the
//! configuration's `[kafka.properties]` (TLS, SASL, …), and keeps the last error
//! librdkafka reported, so that a first connection that fails says why in one
//! line (wrong credentials, an untrusted certificate) instead of timing out.
//! librdkafka's own detailed reason arrives as a `FAIL` log line; the error
//! event that follows carries only a code, so both are kept.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaRespErr;

use crate::error::IngestError;

/// How long a collector tries to reach the cluster at start.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings of a collector's client: `brokers`, the client's own
/// `defaults`, then the configuration's librdkafka properties, which may
/// override anything.
pub fn client_config(
    brokers: &str,
    defaults: &[(&str, &str)],
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// The last error librdkafka reported to a client.
#[derive(Debug, Default)]
pub struct ClientErrors {
    last: Mutex<Option<ClientError>>,
}

/// One error librdkafka reported.
#[derive(Debug, Clone)]
pub struct ClientError {
    /// librdkafka's code, when the error has one.
    pub code: Option<RDKafkaErrorCode>,
    /// librdkafka's text (it names the broker and the mechanism, never a secret).
    pub reason: String,
}

impl ClientError {
    /// Whether retrying cannot help: the cluster refused the credentials or the
    /// TLS handshake failed.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.code,
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
            )
        )
    }
}

impl ClientErrors {
    /// Keeps `error` as the last one; `reason` replaces the last reason unless
    /// it is empty (an error event of a consumer has only its code).
    pub fn record(&self, error: &KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka reported an error");
        let mut last = self.last.lock().expect("not poisoned");
        let reason = match (reason, last.take()) {
            ("", Some(previous)) => previous.reason,
            ("", None) => error.to_string(),
            (reason, _) => reason.to_string(),
        };
        *last = Some(ClientError {
            code: error.rdkafka_error_code(),
            reason,
        });
    }

    /// Logs a line of librdkafka's; a connection failure (`FAIL`) becomes the
    /// reason of the last error.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
        if facility == "FAIL" {
            let mut last = self.last.lock().expect("not poisoned");
            let code = last.take().and_then(|previous| previous.code);
            *last = Some(ClientError {
                code,
                reason: message.to_string(),
            });
        }
    }

    /// The last error reported, if any.
    pub fn last(&self) -> Option<ClientError> {
        self.last.lock().expect("not poisoned").clone()
    }
}

/// A context that only keeps the client's errors (the dead-letter producer's).
#[derive(Debug, Default)]
pub struct RecordingContext {
    /// The errors librdkafka reported (shared: a producer wraps its context).
    pub errors: Arc<ClientErrors>,
}

impl ClientContext for RecordingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.errors.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }
}

/// Fetches `topic`'s metadata, retrying until [`CONNECT_TIMEOUT`], and fails at
/// once when librdkafka reports an error retrying cannot mend. `serve` lets the
/// client deliver its queued events (a consumer's errors wait in its queue
/// until it polls; a producer's background thread serves them by itself).
pub fn fetch_topic_metadata<C: ClientContext>(
    client: &Client<C>,
    errors: &ClientErrors,
    brokers: &str,
    topic: &str,
    mut serve: impl FnMut(),
) -> Result<Metadata, IngestError> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let attempt = client.fetch_metadata(Some(topic), Duration::from_secs(1));
        serve();
        let last = errors.last();
        match attempt {
            Ok(metadata) => return Ok(metadata),
            Err(_) if last.as_ref().is_some_and(ClientError::is_fatal) => {}
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => {}
        }
        let reason = last.map_or_else(
            || format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            |error| error.reason,
        );
        return Err(IngestError::Connect {
            brokers: brokers.to_string(),
            reason,
        });
    }
}

/// Whether `metadata` lists `topic` with partitions; if not, the broker's
/// error for it (`None` when it is not listed or has no partitions yet).
pub fn topic_usable(metadata: &Metadata, topic: &str) -> Result<(), Option<RDKafkaRespErr>> {
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(found) if found.error().is_none() && !found.partitions().is_empty() => Ok(()),
        Some(found) => Err(found.error()),
        None => Err(None),
    }
}
