//! Period close (docs/reference.md#period-close): what a closing freezes, how it is read
//! back, and how `allot verify` recomputes it.
//!
//! A closing of month M is one row of the `closings` table (the commit point)
//! plus the rows of `invoices` and `allocations` carrying its `close_id`. Rows
//! of those two tables whose `close_id` has no closings row (a close that died
//! between its commits) are never read. This module computes a closing
//! ([`plan_close`]), turns it into Arrow batches for the writer, reads closings
//! and their stored invoices back, and compares a recomputation with what was
//! stored ([`verify`]).
//!
//! The **completeness certificate** has one entry per tenant-day of M with
//! events: the number of distinct events, the raw sum per metric (9 decimals),
//! the SHA-256 of the day's sorted lines `event_id|ts_micros|metric|value`
//! (value with 9 decimals, lines sorted by their UTF-8 bytes, each followed by
//! `\n`, hex digest), and the sources covered: per Kafka topic-partition the
//! lowest and highest offset and the count, per file the name and the number of
//! lines. [`digest_lines`] is the recipe.
//!
//! One file per job: [`close`] the rules of a close, [`certificate`] what a
//! closing certifies, [`plan`] what a close computes, [`commit`] how it is written, [`store`] how closings are
//! read back, [`drafts`] a month's invoices as billed now, [`ledger`] the
//! credit balances earlier invoices leave, [`invoices`] a month's invoices
//! closed or not, [`verify`] the recomputation, [`margin`] revenue against cost.

pub mod certificate;
pub mod close;
pub mod commit;
pub mod drafts;
pub mod invoices;
pub mod ledger;
pub mod margin;
pub mod plan;
pub mod store;
pub mod verify;

pub use certificate::*;
pub use close::*;
pub use commit::*;
pub use drafts::*;
pub use invoices::*;
pub use ledger::*;
pub use margin::*;
pub use plan::*;
pub use store::*;
pub use verify::*;
