//! The fast tier of the end-to-end tests: everything in `tests/` that needs no
//! Kafka broker, no S3 server, no Java and no browser, linked into one binary
//! (each file below would otherwise be a binary linking the whole workspace).
//! `scripts/test --fast` runs it with the crates' unit tests.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod api;
mod dedup_window;
mod erasure;
mod flight_sql;
mod golden;
mod ingest_file;
mod maintenance;
mod meters;
mod offboard;
mod period_close;
mod pg_wire;
mod preview;
mod prometheus;
mod query_lake;
mod serving;
