//! Invoices: rates, rate segments, graduated tiers, discount (docs/reference.md#rates-and-segments,
//! docs/reference.md#invoice-lines).
//!
//! This is the exact core of billing over in-memory inputs; the DataFusion layer
//! only has to aggregate the lake into a [`TenantUsage`]:
//! - counters as raw sums per (metric, UTC day) — rates change only at 00:00 UTC
//!   of a date, so daily sums cut rate segments exactly;
//! - gauges as the samples of each series (metric, resource), including the
//!   samples of the `hold` before the period, which carry into it.
//!
//! Decisions (see also `docs/decisions/0019-billing-semantics.md`):
//! - **Rate resolution.** The rate of a metric for a tenant at `t` is the tenant's
//!   own entry for that metric with the latest `effective_from ≤ t`; when the tenant
//!   has none yet at `t` (its override starts later, or it has no override for the
//!   metric) the global entry with the latest `effective_from ≤ t` applies. So a
//!   tenant override that starts on the 11th leaves the 1st–10th at the global rate.
//! - **Dimensional rates.** Within the tenant's entries (then the global ones) the
//!   most specific `match` an event satisfies wins; the entries of one metric with
//!   the same `match` form a rate line, with its own segments and its own tier
//!   count. Usage no line matches falls to the default line (no `match`), so it is
//!   priced there or reported as having no rate. Counter sums arrive grouped by
//!   the dimensions the metric's rates use ([`PriceBook::dimensions`]).
//! - **Segments** are cut only where the resolved rate actually changes: a global
//!   change hidden by a tenant override does not split a line.
//! - **Usage without a rate is an error** ([`QueryError::NoRate`]) naming the
//!   tenant, the metric and the start of the uncovered segment. A finance report
//!   must not silently bill zero; the fix is a price-book entry (possibly `"0"`).
//! - **Tiers** count cumulative billing quantity from the period start across all
//!   segments of the metric (flat-priced segments included); a band is
//!   `[tier_from, tier_to)`. Flat-rate lines leave `tier_from`/`tier_to` empty.
//! - **Quantities** of a segment are rounded once to 12 places (half-to-even) and
//!   tier bands split those rounded quantities, so band quantities add up to the
//!   segment quantity exactly.
//! - Counter days outside the billed range are ignored; several sums for the same
//!   (metric, day) add up. Gauge samples at the same instant of the same series:
//!   the largest value holds (the others hold for zero time), so the result never
//!   depends on input order.
//!
//! The parts: `price_book` resolves rates and cuts a period into rate segments;
//! `invoice` assembles the lines, discount and total; gauges are weighed by
//! `allot_schemas::gauge` and the `max`, `unique_count` and `latest` meters
//! figured by `allot_schemas::meter`, both of which the hourly rollups share.

mod invoice;
mod price_book;

pub use invoice::{
    CounterDay, Invoice, InvoiceLine, MeterDay, TenantUsage, invoice, invoice_until,
    period_quantity,
};
pub use price_book::{DimensionValues, Price, PriceBook, Rate, RateSegment, RateSource, TierBand};
