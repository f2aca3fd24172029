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

use std::sync::Arc;

use allot_lake::append::{LogAppender, append_batch};
use allot_lake::txns::AppOffset;
use allot_schemas::layout::{LakeLocation, LakeTable, closing_app_id};
use allot_schemas::table_schema::{
    ALLOCATION_CSV_COLUMNS, INVOICE_CSV_COLUMNS, allocations_schema, closings_schema,
    invoices_schema,
};
use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};

use super::plan::ClosePlan;
use super::store::Closing;
use crate::allocation::AllocationRow;
use crate::billed::BilledInvoice;
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
        vec![AppOffset::new(&app_id, i64::from(closing.revision))],
        &[(app_id.clone(), before)],
    )
    .await?)
}

fn string_column(values: impl IntoIterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// The columns every stored row of a closing starts with, for `n` rows:
/// `close_id`, `month`, `revision` and the row number.
fn closing_row_columns(c: &Closing, n: usize) -> Vec<ArrayRef> {
    vec![
        string_column(std::iter::repeat_n(c.close_id.clone(), n)),
        string_column(std::iter::repeat_n(c.month.to_string(), n)),
        Arc::new(Int32Array::from(vec![c.revision; n])),
        Arc::new(Int32Array::from_iter_values(
            0..i32::try_from(n).unwrap_or(i32::MAX),
        )),
    ]
}

/// The `invoices` rows of a plan.
pub fn invoices_batch(plan: &ClosePlan) -> Result<RecordBatch, QueryError> {
    let c = &plan.closing;
    let rows: Vec<(&BilledInvoice, &Vec<String>)> = plan
        .invoices
        .iter()
        .flat_map(|i| i.rows.iter().map(move |r| (i, r)))
        .collect();
    let mut columns = closing_row_columns(c, rows.len());
    columns.push(string_column(rows.iter().map(|(i, _)| i.currency.clone())));
    columns.push(string_column(
        rows.iter().map(|(i, _)| i.discount_percent.clone()),
    ));
    for k in 0..INVOICE_CSV_COLUMNS.len() {
        columns.push(string_column(rows.iter().map(|(_, r)| r[k].clone())));
    }
    RecordBatch::try_new(invoices_schema(), columns).map_err(QueryError::from)
}

/// The `allocations` rows of a plan (`None` without costs).
pub fn allocations_batch(plan: &ClosePlan) -> Result<Option<RecordBatch>, QueryError> {
    let Some(rows) = &plan.allocation else {
        return Ok(None);
    };
    let c = &plan.closing;
    let records: Vec<Vec<String>> = rows.iter().map(AllocationRow::csv_record).collect();
    let mut columns = closing_row_columns(c, records.len());
    for k in 0..ALLOCATION_CSV_COLUMNS.len() {
        columns.push(string_column(records.iter().map(|r| r[k].clone())));
    }
    RecordBatch::try_new(allocations_schema(), columns)
        .map(Some)
        .map_err(QueryError::from)
}

/// The `closings` row of a plan.
pub fn closing_batch(closing: &Closing) -> Result<RecordBatch, QueryError> {
    let c = closing;
    let one = |s: &str| string_column([s.to_string()]);
    let nullable =
        |s: &Option<String>| -> ArrayRef { Arc::new(StringArray::from(vec![s.clone()])) };
    let columns: Vec<ArrayRef> = vec![
        one(&c.close_id),
        one(&c.month.to_string()),
        Arc::new(Int32Array::from(vec![c.revision])),
        one(&c.closed_at),
        one(&c.who),
        nullable(&c.reason),
        Arc::new(Int64Array::from(vec![
            i64::try_from(c.usage_version).unwrap_or(i64::MAX),
        ])),
        one(&c.config_sha256),
        one(&c.config_text),
        nullable(&c.costs_text),
        Arc::new(Int32Array::from(vec![c.adjusts_revision])),
        one(&serde_json::to_string(&c.txn_offsets).map_err(QueryError::from)?),
        one(&serde_json::to_string(&c.certificate).map_err(QueryError::from)?),
    ];
    RecordBatch::try_new(closings_schema(), columns).map_err(QueryError::from)
}
