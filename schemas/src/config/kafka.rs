//! `[kafka]`: the collectors' cluster settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The Kafka cluster a collector (`allot ingest` without `--from-file`)
/// reads; its `--brokers`, `--topic` and `--group` flags win over these.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// The bootstrap servers, comma separated (`--brokers`).
    pub brokers: Option<String>,
    /// The topic usage events are read from (`--topic`).
    pub topic: Option<String>,
    /// The consumer group the collectors share the topic's partitions in
    /// (`--group`).
    pub group: Option<String>,
    /// librdkafka properties handed unchanged to every Kafka client, the
    /// consumer and the dead-letter producer alike: TLS, SASL and the like
    /// (docs/reference.md#configuration-file). They win over the collector's
    /// own `fetch.queue.backoff.ms = 10` and
    /// `queued.max.messages.kbytes = 8192`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Whether a rejected event is also sent to the dead-letter topic
    /// `<topic>.dlq`, which must then exist; the `rejected_events` table
    /// records it either way.
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
pub(super) fn enabled() -> bool {
    true
}
