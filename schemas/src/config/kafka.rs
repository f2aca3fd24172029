//! `[kafka]`: the collectors' cluster settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kafka settings of a collector; the CLI flags override them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
pub(super) fn enabled() -> bool {
    true
}
