//! Writing a closing of a month to the lake (docs/reference.md#closing-a-month).
//!
//! Delta commits are per table, so a close is three appends in a fixed order:
//! the final invoices to `invoices`, the frozen allocation to `allocations`,
//! then the row of `closings`, which is the commit point. Readers only take
//! `invoices` and `allocations` rows whose `close_id` has a closings row, so a
//! close that dies before its last commit leaves rows nobody reads, and
//! running it again writes a new `close_id`.
//!
//! The closings commit records the revision in a `txn` action under
//! [`closing_app_id`] and goes ahead only if the table still records the
//! revision before it (none for revision 0): of two closes of the same month
//! racing on several machines, exactly one commits, the other fails fenced.

use allot_lake::append::{LogAppender, append_batch};
use allot_schemas::layout::{LakeLocation, LakeTable, closing_app_id};
use deltalake::kernel::Transaction;

use super::{ClosePlan, allocations_batch, closing_batch, invoices_batch};
use crate::error::QueryError;

/// Commits `plan`: invoices, allocation, then the closings row (see the module
/// docs). Fails with [`allot_lake::LakeError::Fenced`] when another close of the month
/// committed this revision first. Returns the `closings` table version.
pub async fn commit_closing(location: &LakeLocation, plan: &ClosePlan) -> Result<u64, QueryError> {
    let closing = &plan.closing;
    let app_id = closing_app_id(&closing.month.to_string());
    let before = (closing.revision > 0).then(|| i64::from(closing.revision) - 1);
    // Refuse early, before writing any file, when the revision is taken.
    LogAppender::open(location, LakeTable::Closings)
        .await?
        .check_offsets(&[(app_id.clone(), before)])
        .await?;
    append_batch(
        location,
        LakeTable::Invoices,
        invoices_batch(plan)?,
        Vec::new(),
        &[],
    )
    .await?;
    if let Some(batch) = allocations_batch(plan)? {
        append_batch(location, LakeTable::Allocations, batch, Vec::new(), &[]).await?;
    }
    Ok(append_batch(
        location,
        LakeTable::Closings,
        closing_batch(closing)?,
        vec![Transaction::new(&app_id, i64::from(closing.revision))],
        &[(app_id.clone(), before)],
    )
    .await?)
}
