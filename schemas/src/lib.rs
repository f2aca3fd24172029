//! allot-schemas: the contract types every other crate shares.
//!
//! The event model (native JSON v1 and CloudEvents) with validation and stable
//! reason codes, exact decimal values, tenant ids, the lake's layout and Arrow
//! schemas, the `allot.toml` configuration, and the small facts every crate needs
//! alike: time units and day conversions ([`time`]) and the clock ([`clock`]).
//! This crate does no I/O beyond reading a config file, and depends on no runtime,
//! Kafka client or query engine.

pub mod clock;
pub mod config;
pub mod decimal;
pub mod event;
pub mod gauge;
pub mod layout;
pub mod meter;
pub mod reason;
pub mod table_schema;
pub mod tenant;
pub mod time;

/// The JSON Schema (draft 2020-12) of a native v1 event, as shipped in `schemas/`.
pub const EVENT_V1_JSON_SCHEMA: &str = include_str!("../event-v1.schema.json");
