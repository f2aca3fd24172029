//! allot-ingest: getting usage events into the lake, exactly once.
//!
//! Sources (JSON Lines files now, Kafka partitions too) feed raw events to an
//! [`assemble::EventAssembler`], which validates them into Arrow batches of
//! accepted and rejected rows; a [`writer::LakeWriter`] removes duplicates and
//! commits each batch to the Delta tables of the lake in one commit. This crate
//! never depends on the query engine or the server.

pub mod assemble;
pub mod batch;
pub mod compact;
pub mod error;
pub mod file;
pub mod kafka;
pub mod lake;
pub mod lines;
pub mod summary;
pub mod telemetry;
pub mod writer;

pub use compact::{CompactOptions, CompactSummary, compact};
pub use error::IngestError;
pub use file::{FileIngestOptions, FileInput, ingest_file};
pub use kafka::{KafkaIngestOptions, run_collector};
pub use summary::IngestSummary;
