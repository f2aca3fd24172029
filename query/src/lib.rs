//! allot-query: the query engine over the usage lake.
//!
//! DataFusion sessions over the `usage_events` Delta table, and the reports built
//! on them (invoices, shared-cost allocation, noisy neighbours, tenant health,
//! sandboxed SQL). It reads the lake through `allot-lake` and depends on the
//! contract in `allot-schemas`, never on Kafka, the collectors or the server.
//!
//! The semantics of docs/reference.md#figures live in plain, exact Rust over in-memory inputs, so
//! the DataFusion layer only has to aggregate the lake into them:
//! - [`period`]: calendar months in UTC, instants in microseconds;
//! - [`rounding`]: quantities half-to-even to 12 places, money half away from zero
//!   to 2, shares shown with 6; every division exact;
//! - [`pricing`]: rate resolution with tenant overrides, rate segments, graduated
//!   tiers continued across segments, invoice lines, discount and total;
//! - [`allocation`]: costs-CSV validation and largest-remainder shared-cost splits;
//! - [`noisy`]: per-bucket share and z-score against each tenant's baseline;
//! - [`health`]: status and reasons, quota use, month-to-date cost and forecast.
//!
//! Over them sit the reports, reading the lake through `allot-lake` (its
//! snapshots, the dedup window and DataFusion sessions over the deduplicated
//! `usage_events`):
//! - [`usage`]: aggregations of the lake into the inputs of the semantics;
//! - [`reports`]: invoices, allocation, noisy neighbours and health, for the CLI
//!   and the API alike, [`request`] for the requests both front ends build
//!   from their text, and [`render`] for their CSV and JSON shapes;
//! - [`live_health`]: every tenant's health and the alert signals followed from
//!   one lake refresh to the next, read again only where the lake changed;
//! - [`sandbox`]: the SQL rules and limits of
//!   docs/reference.md#security-model;
//! - [`billed`] and [`closing`]: period close (docs/reference.md#period-close) —
//!   invoices as billed (draft or final, with adjustment lines), certificates,
//!   verify, margin and the commit of a closing to the lake;
//! - [`credits`]: prepaid credit grants drawn down by invoice totals (the walk
//!   over earlier months' invoices that gives their balances is in
//!   [`closing`]).
//!
//! Every quantity and amount is a `BigDecimal`; errors are [`QueryError`].

pub mod alerts;
pub mod allocation;
pub mod billed;
pub mod closing;
pub mod credits;
pub mod error;
pub mod export;
pub mod health;
pub mod live_health;
pub mod noisy;
pub mod period;
pub mod preview;
pub mod pricing;
pub mod render;
pub mod reports;
pub mod request;
pub mod rounding;
pub mod sandbox;
#[cfg(test)]
mod test_support;
pub mod usage;

pub use allot_schemas::layout::{LakeLocation, LakeTable};
pub use error::QueryError;
