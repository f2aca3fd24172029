//! The ingest crate's error type.

use allot_lake::LakeError;
use allot_schemas::layout::LakeLocationError;

/// Everything that can stop an ingest run. Bad events never do: they become
/// rejected rows instead.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The lake location is unusable.
    #[error(transparent)]
    Location(#[from] LakeLocationError),
    /// Reading or writing the lake's tables failed.
    #[error(transparent)]
    Lake(allot_lake::LakeError),
    /// Reading the input failed.
    #[error("reading {name}: {source}")]
    Input {
        /// The input as named on the command line.
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Building an Arrow batch failed (a bug, not bad input).
    #[error("building a batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Kafka client operation failed.
    #[error("kafka {context}: {source}")]
    Kafka {
        /// What was being done (topic, partition, …).
        context: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The Kafka cluster could not be reached at start, or refused the client.
    #[error("cannot connect to Kafka at {brokers}: {reason}")]
    Connect {
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's last error (wrong credentials, an untrusted certificate, …).
        reason: String,
    },
    /// The dead-letter topic cannot be used.
    #[error(
        "the dead-letter topic {topic} {problem}: create it and let the collector's user write to it, or set kafka.dlq = false to keep rejected events in rejected_events only"
    )]
    DeadLetterTopic {
        /// The topic.
        topic: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Dead letters were not acknowledged; their flush records no offsets.
    #[error("{failed} dead letter(s) not delivered to {topic}: {source}")]
    DeadLetters {
        /// The dead-letter topic.
        topic: String,
        /// Letters not acknowledged.
        failed: usize,
        /// The first delivery error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Another collector recorded newer offsets for a partition of this commit.
    #[error("commit fenced: {0}")]
    Fenced(String),
    /// A task of the runtime (the collector's thread, a flush, a partition's
    /// writer) panicked or was cancelled.
    #[error("{worker} stopped: {source}")]
    Worker {
        /// Which task.
        worker: &'static str,
        /// The runtime's account of how it stopped.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A backfill's writer was used again after one of its writes or commits
    /// failed (that error said why); re-running the backfill adds what is missing.
    #[error("the backfill's writer stopped after an earlier failure")]
    WriterFailed,
    /// The thread decoding a file backfill panicked (its panic was printed).
    #[error("the thread decoding the input panicked")]
    DecoderPanicked,
}

/// A fenced commit stays [`IngestError::Fenced`], the outcome a collector acts
/// on; every other failure of the lake keeps its cause.
impl From<LakeError> for IngestError {
    fn from(error: LakeError) -> IngestError {
        match error {
            LakeError::Fenced(reason) => IngestError::Fenced(reason),
            LakeError::Location(error) => IngestError::Location(error),
            other => IngestError::Lake(other),
        }
    }
}
