//! allot-ingest: getting usage events into the lake, exactly once.
//!
//! Sources (JSON Lines files now, Kafka partitions too) feed raw events to an
//! [`assemble::EventAssembler`], which validates them into Arrow batches of
//! accepted and rejected rows; a [`writer::LakeWriter`] removes duplicates and
//! commits each batch to the Delta tables of the lake in one commit, through
//! `allot-lake` (the dedup window, the log appender, the tables); a collector
//! also runs `allot-lake`'s compaction in the background.
//!
//! It never depends on the query engine's reports or on the server (see the
//! README's architecture section, which `scripts/check-deps` holds to the
//! manifests).

pub mod assemble;
pub mod batch;
pub mod client;
pub mod dead_letters;
pub mod error;
pub mod file;
pub mod kafka;
pub mod lines;
mod open_days;
mod partitions;
pub mod stages;
pub mod summary;
pub mod telemetry;
pub mod writer;

pub use error::IngestError;
pub use file::{FileIngestOptions, FileInput, ingest_file};
pub use kafka::{KafkaIngestOptions, run_collector};
pub use summary::IngestSummary;
