//! The service tier of the end-to-end tests: the ones that need the real Kafka
//! brokers and the S3-compatible server `scripts/test` starts, linked into one
//! binary.

#[path = "../common/mod.rs"]
mod common;

mod collector;
mod kafka_to_lake;
mod s3_lake;
