//! allot-ingest: getting usage events into the lake, exactly once.
//!
//! Sources (JSON Lines files now, Kafka partitions too) feed raw events to an
//! [`assemble::EventAssembler`], which validates them into Arrow batches of
//! accepted and rejected rows; a [`writer::LakeWriter`] removes duplicates and
//! commits each batch to the Delta tables of the lake in one commit. Compaction
//! merges small files and keeps the hourly rollups up to date.
//!
//! This crate depends on `allot-query` for what must be computed exactly as the
//! reports read it: the rollups (through a query session over the deduplicated
//! view), the dedup window, the rows a period close commits and the closings that
//! vacuum keeps. It never depends on the server (see the README's architecture
//! section, which `scripts/check-deps` holds to the manifests).

pub mod append;
pub mod assemble;
pub mod batch;
pub mod client;
pub mod close;
pub mod compact;
pub mod dead_letters;
pub mod error;
pub mod file;
pub mod kafka;
pub mod lake;
pub mod lines;
pub mod offboard;
pub mod rollup;
pub mod summary;
pub mod telemetry;
pub mod vacuum;
pub mod writer;

pub use close::commit_closing;
pub use compact::{CompactOptions, CompactSummary, compact};
pub use error::IngestError;
pub use file::{FileIngestOptions, FileInput, ingest_file};
pub use kafka::{KafkaIngestOptions, run_collector};
pub use offboard::{DeleteOptions, DeleteSummary, delete_tenant};
pub use summary::IngestSummary;
pub use vacuum::{VacuumOptions, VacuumSummary, vacuum};
