//! allot-query: the query engine over the usage lake.
//!
//! DataFusion sessions over the `usage_events` Delta table, and the reports built
//! on them (invoices, shared-cost allocation, noisy neighbours, tenant health,
//! sandboxed SQL). It depends on the lake's contract in `allot-schemas`, never on
//! Kafka, the collectors or the server.

pub use allot_schemas::lake::{LakeLocation, LakeTable};
