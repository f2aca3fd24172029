//! Dead letters (SPEC §1.3): the original bytes of every event a collector
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

use crate::client::{
    RecordingContext, TopicState, client_config, fetch_topic_metadata, topic_state,
};
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
const TOPIC_CREATION_WAIT: Duration = Duration::from_secs(10);

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
        // A broker that creates topics on first use does so for this request;
        // give it a moment to elect a leader.
        let deadline = Instant::now() + TOPIC_CREATION_WAIT;
        loop {
            let metadata = fetch_topic_metadata(producer.client(), &errors, brokers, topic, || {})?;
            match topic_state(&metadata, topic) {
                TopicState::Exists => break,
                TopicState::Creating if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                TopicState::Creating | TopicState::Missing => {
                    return Err(IngestError::DeadLetterTopic {
                        topic: topic.to_string(),
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
