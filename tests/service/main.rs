//! The service tier of the end-to-end tests: the ones that need the real Kafka
//! brokers, the S3-compatible server or the Java programs `scripts/test` starts
//! or fetches, linked into one binary.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod collector;
mod flight_jdbc;
mod kafka_to_lake;
mod s3_lake;
