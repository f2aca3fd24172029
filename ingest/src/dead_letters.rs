//! Dead letters (docs/reference.md#rejected-events): the original bytes of every event a collector
//! rejects, set aside with headers naming the rule it broke.
//!
//! One trait, [`DeadLetterQueue`], and two kinds: the `<topic>.dlq` Kafka topic
//! ([`KafkaDeadLetters`]), or none ([`NoDeadLetters`], `kafka.dlq = false`, where
//! `rejected_events` alone records them). A collector keeps a flush's letters,
//! bytes and headers, until the flush lands, and hands them to the queue before
//! it commits: a flush whose letters the queue did not acknowledge fails, records
//! no offsets, and is read again from Kafka, so a dead letter is delivered at
//! least once and never lost. Waiting for room in a full producer queue keeps
//! the letter whole; it never goes out without its headers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;

use crate::client::{RecordingContext, client_config, fetch_topic_metadata, topic_usable};
use crate::error::IngestError;
use crate::telemetry;

/// Header naming the reason code of a dead letter.
pub const ERROR_CODE_HEADER: &str = "allot-error-code";
/// Header with the human-readable reason of a dead letter.
pub const ERROR_HEADER: &str = "allot-error";
/// Header naming where the event came from (`kafka:<topic>/<partition>@<offset>`).
pub const SOURCE_HEADER: &str = "allot-source";

/// How long the producer keeps trying to deliver one letter before the flush
/// that holds it fails (and is retried from Kafka).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a collector waits at start for a dead-letter topic being created.
const TOPIC_CREATION_WAIT: Duration = Duration::from_secs(5);

/// One rejected event, as it goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event's bytes as they arrived.
    pub payload: Vec<u8>,
    /// The reason code (`invalid_json`, …).
    pub code: &'static str,
    /// The reason, for a person.
    pub message: String,
    /// Where the event came from.
    pub source: String,
}

impl DeadLetter {
    /// The headers the letter carries on every attempt.
    fn headers(&self) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: ERROR_CODE_HEADER,
                value: Some(self.code),
            })
            .insert(Header {
                key: ERROR_HEADER,
                value: Some(self.message.as_str()),
            })
            .insert(Header {
                key: SOURCE_HEADER,
                value: Some(self.source.as_str()),
            })
    }
}

/// Where a collector's dead letters go.
pub trait DeadLetterQueue: Send + Sync {
    /// Delivers every letter and returns once the destination acknowledged them
    /// all. An error means some may not have arrived: the flush holding them
    /// must not record its offsets.
    fn deliver<'a>(&'a self, letters: &'a [DeadLetter]) -> BoxFuture<'a, Result<(), IngestError>>;
}

/// The dead letters of `topic` with the configured `kafka.dlq`: the topic
/// `<topic>.dlq`, reached with the same `[kafka.properties]` as the consumer.
pub fn open(
    enabled: bool,
    brokers: &str,
    topic: &str,
    properties: &BTreeMap<String, String>,
) -> Result<Arc<dyn DeadLetterQueue>, IngestError> {
    if !enabled {
        return Ok(Arc::new(NoDeadLetters));
    }
    let dlq_topic = dlq_topic(topic);
    Ok(Arc::new(KafkaDeadLetters::connect(
        brokers, &dlq_topic, properties,
    )?))
}

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// No dead-letter topic: the letters are only counted; `rejected_events` keeps
/// each rejection (and its first 4 KiB).
pub struct NoDeadLetters;

impl DeadLetterQueue for NoDeadLetters {
    fn deliver<'a>(&'a self, _: &'a [DeadLetter]) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A Kafka topic of dead letters.
pub struct KafkaDeadLetters {
    /// The producer's settings, to make a fresh one after a failed delivery.
    settings: ClientConfig,
    /// The producer of the next delivery.
    producer: Mutex<Arc<DeadLetterProducer>>,
    topic: String,
}

/// The producer of dead letters, keeping the errors librdkafka reports.
type DeadLetterProducer = FutureProducer<RecordingContext>;

impl KafkaDeadLetters {
    /// A producer for `topic`, which must exist: a collector whose dead letters
    /// have nowhere to go says so at start instead of stalling at its first flush.
    pub fn connect(
        brokers: &str,
        topic: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Self, IngestError> {
        let timeout_ms = DELIVERY_TIMEOUT.as_millis().to_string();
        let defaults = [
            ("enable.idempotence", "true"),
            ("message.timeout.ms", timeout_ms.as_str()),
        ];
        let settings = client_config(brokers, &defaults, properties);
        let context = RecordingContext::default();
        let errors = Arc::clone(&context.errors);
        let producer = create_producer(&settings, context)?;
        // A broker that creates topics on first use starts doing so for this
        // request and answers "unknown topic" until it has: ask again a while.
        let deadline = Instant::now() + TOPIC_CREATION_WAIT;
        loop {
            let metadata = fetch_topic_metadata(producer.client(), &errors, brokers, topic, || {})?;
            match topic_usable(&metadata, topic) {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => {
                    let problem = match error {
                        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
                            "is not visible to this user (topic authorization failed)"
                        }
                        _ => "does not exist",
                    };
                    return Err(IngestError::DeadLetterTopic {
                        topic: topic.to_string(),
                        problem,
                    });
                }
            }
        }
        Ok(KafkaDeadLetters {
            settings,
            producer: Mutex::new(Arc::new(producer)),
            topic: topic.to_string(),
        })
    }

    /// Replaces the producer after a failed delivery. librdkafka keeps a topic
    /// it was refused (an ACL, a deleted topic) marked as failed until its next
    /// metadata refresh, minutes later, and an idempotent producer may be left
    /// in an error state; a fresh one asks the cluster again on the next try.
    fn renew_producer(&self) {
        match create_producer(&self.settings, RecordingContext::default()) {
            Ok(fresh) => *self.producer.lock().expect("not poisoned") = Arc::new(fresh),
            Err(err) => tracing::warn!(%err, "cannot renew the dead-letter producer"),
        }
    }
}

/// A dead-letter producer with `settings`.
fn create_producer(
    settings: &ClientConfig,
    context: RecordingContext,
) -> Result<DeadLetterProducer, IngestError> {
    settings
        .create_with_context(context)
        .map_err(|source| IngestError::Kafka {
            context: "creating the dead-letter producer".to_string(),
            source,
        })
}

impl DeadLetterQueue for KafkaDeadLetters {
    fn deliver<'a>(&'a self, letters: &'a [DeadLetter]) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(async move {
            if letters.is_empty() {
                return Ok(());
            }
            let producer = Arc::clone(&self.producer.lock().expect("not poisoned"));
            // All in flight at once; `send` waits for room in a full queue and
            // sends the letter whole.
            let deliveries = letters.iter().map(|letter| {
                let record = FutureRecord::<(), [u8]>::to(&self.topic)
                    .payload(&letter.payload)
                    .headers(letter.headers());
                producer.send(record, DELIVERY_TIMEOUT)
            });
            let results = futures::future::join_all(deliveries).await;
            let failed = results.iter().filter(|r| r.is_err()).count();
            telemetry::record_dead_letters(letters.len() - failed, failed);
            let Some((source, _)) = results.into_iter().find_map(Result::err) else {
                return Ok(());
            };
            tracing::warn!(topic = %self.topic, failed, %source, "dead letters not delivered; the flush fails and is read again");
            drop(producer);
            self.renew_producer();
            Err(IngestError::DeadLetters {
                topic: self.topic.clone(),
                failed,
                source,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::mocking::MockCluster;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    use rdkafka::types::RDKafkaApiKey;

    use super::*;

    const TOPIC: &str = "usage.dlq";

    fn letter(i: usize) -> DeadLetter {
        DeadLetter {
            payload: format!("{{\"event_id\":\"e{i}\",").into_bytes(),
            code: "invalid_json",
            message: format!("EOF while parsing an object at column {i}"),
            source: format!("kafka:usage/0@{i}"),
        }
    }

    /// Reads `count` messages of the dead-letter topic back into letters.
    fn read_back(brokers: &str, count: usize) -> Vec<DeadLetter> {
        let consumer: BaseConsumer =
            client_config(brokers, &[("group.id", "reader")], &BTreeMap::new())
                .create()
                .unwrap();
        let mut partitions = TopicPartitionList::new();
        partitions
            .add_partition_offset(TOPIC, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&partitions).unwrap();
        let mut letters = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while letters.len() < count {
            assert!(Instant::now() < deadline, "read {letters:?}");
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.unwrap();
            let headers = message.headers().expect("headers");
            let header = |key: &str| {
                let value = headers.iter().find(|h| h.key == key).and_then(|h| h.value);
                String::from_utf8(value.expect(key).to_vec()).unwrap()
            };
            letters.push(DeadLetter {
                payload: message.payload().unwrap().to_vec(),
                code: match header(ERROR_CODE_HEADER).as_str() {
                    "invalid_json" => "invalid_json",
                    other => panic!("reason code {other}"),
                },
                message: header(ERROR_HEADER),
                source: header(SOURCE_HEADER),
            });
        }
        letters
    }

    #[test]
    fn a_refused_delivery_fails_and_the_next_one_sends_every_letter_whole() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let queue = KafkaDeadLetters::connect(&brokers, TOPIC, &BTreeMap::new()).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let letters: Vec<DeadLetter> = (0..5).map(letter).collect();

        let denied = RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
        cluster.request_errors(RDKafkaApiKey::Produce, &[denied; 8]);
        let err = runtime.block_on(queue.deliver(&letters)).unwrap_err();
        assert!(
            matches!(err, IngestError::DeadLetters { failed: 5, .. }),
            "{err}"
        );

        cluster.clear_request_errors(RDKafkaApiKey::Produce);
        runtime.block_on(queue.deliver(&letters)).unwrap();
        let mut delivered = read_back(&brokers, letters.len());
        delivered.sort_by(|a, b| a.source.cmp(&b.source));
        assert_eq!(delivered, letters);
    }

    #[test]
    fn a_missing_topic_is_an_error_at_start() {
        let cluster = MockCluster::new(1).unwrap();
        cluster
            .topic_error(
                TOPIC,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
            )
            .unwrap();
        let err = KafkaDeadLetters::connect(&cluster.bootstrap_servers(), TOPIC, &BTreeMap::new())
            .err()
            .expect("no dead-letter topic");
        assert!(matches!(err, IngestError::DeadLetterTopic { .. }), "{err}");
        assert!(err.to_string().contains("kafka.dlq = false"), "{err}");
    }

    #[test]
    fn no_queue_accepts_everything() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(NoDeadLetters.deliver(&[letter(1)]))
            .unwrap();
    }
}
