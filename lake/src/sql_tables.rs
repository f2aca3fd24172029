//! The tables analysts' SQL sees beside `usage_events` and `rejected_events`
//! (docs/reference.md#sql-tables), each scoped like them:
//!
//! - `usage_hourly` and `usage_monthly`: `usage_events` summed per tenant,
//!   metric and UTC hour (month). Views over the scope's `usage_events`, so
//!   they are exactly as current, deduplicated and tenant-scoped as it is.
//! - `closings`: one row per close of a month (revision 0, then one per
//!   restatement), without the frozen configuration, costs and certificate,
//!   which name every tenant.
//! - `invoices`: every row of every final invoice of those closings, with
//!   `amount` as an exact decimal. In a tenant's scope the table is built
//!   from that tenant's rows alone, so no query can reach another's.
//!
//! No table is registered under any other name: the raw `closings` and
//! `invoices` rows are reachable only through these views.

use allot_schemas::table_schema::{INVOICE_CSV_COLUMNS, closings_schema, invoices_schema};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::functions::expr_fn::{coalesce, nullif};
use datafusion::logical_expr::{JoinType, cast, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::LakeError;
use crate::session::{LakeSession, Scope, USAGE_EVENTS};
use crate::snapshot::ClosedBooks;

/// Hourly sums of `usage_events`.
pub const USAGE_HOURLY: &str = "usage_hourly";
/// Monthly sums of `usage_events`.
pub const USAGE_MONTHLY: &str = "usage_monthly";
/// The closes of months.
pub const CLOSINGS: &str = "closings";
/// The final invoices' rows.
pub const INVOICES: &str = "invoices";

/// The decimal type of invoice amounts, as `usage_events.value`.
const AMOUNT_TYPE: DataType = DataType::Decimal128(38, 9);

/// The columns of `closings` analysts see.
const CLOSING_COLUMNS: [&str; 8] = [
    "month",
    "revision",
    "close_id",
    "closed_at",
    "reason",
    "usage_version",
    "adjusts_revision",
    "config_sha256",
];

/// Registers those of the four tables `wanted` names in `session`, whose
/// `usage_events` is already the scope's. A statement registers only the
/// tables it names, so the others cost it nothing.
pub async fn register(
    session: &LakeSession,
    scope: &Scope,
    closed: &ClosedBooks,
    wanted: impl Fn(&str) -> bool,
) -> Result<(), LakeError> {
    let ctx = session.context();
    for (name, bucket) in [(USAGE_HOURLY, "hour"), (USAGE_MONTHLY, "month")] {
        if wanted(name) {
            let sums = usage_sums(ctx, bucket).await?;
            ctx.register_table(name, sums.into_view())?;
        }
    }
    if !wanted(CLOSINGS) && !wanted(INVOICES) {
        return Ok(());
    }
    let closings = table(ctx, closings_schema(), &closed.closings, None)?;
    if wanted(INVOICES) {
        let tenant = match scope {
            Scope::AllTenants => None,
            Scope::Tenant(tenant) => Some(tenant.as_str()),
        };
        let invoices = table(ctx, invoices_schema(), &closed.invoices, tenant)?;
        let invoices = invoices.join(
            closings.clone().select_columns(&["close_id"])?,
            JoinType::LeftSemi,
            &["close_id"],
            &["close_id"],
            None,
        )?;
        let mut columns = vec![col("month"), col("revision"), col("close_id"), col("row")];
        columns.extend(INVOICE_CSV_COLUMNS.iter().map(|name| match *name {
            "amount" => cast(nullif(col("amount"), lit("")), AMOUNT_TYPE).alias("amount"),
            // Rows closed before invoices had dimensions read it as null.
            "dimensions" => coalesce(vec![col("dimensions"), lit("")]).alias("dimensions"),
            other => col(other),
        }));
        columns.extend([col("currency"), col("discount_percent")]);
        ctx.register_table(INVOICES, invoices.select(columns)?.into_view())?;
    }
    if wanted(CLOSINGS) {
        ctx.register_table(
            CLOSINGS,
            closings.select_columns(&CLOSING_COLUMNS)?.into_view(),
        )?;
    }
    Ok(())
}

/// `usage_events` summed per tenant, metric and `bucket` (`hour`, `month`).
async fn usage_sums(ctx: &SessionContext, bucket: &str) -> Result<DataFrame, LakeError> {
    let start = format!("date_trunc('{bucket}', ts)");
    let sql = format!(
        "SELECT tenant_id, metric, {start} AS {bucket}, count(*) AS events, \
         sum(value) AS value_sum, min(ts) AS first_ts, max(ts) AS last_ts \
         FROM {USAGE_EVENTS} GROUP BY tenant_id, metric, {start}"
    );
    Ok(ctx.sql(&sql).await?)
}

/// An in-memory table of `batches` (an empty one of `schema` when there are
/// none), keeping only the rows of `tenant` when given.
fn table(
    ctx: &SessionContext,
    schema: SchemaRef,
    batches: &[RecordBatch],
    tenant: Option<&str>,
) -> Result<DataFrame, LakeError> {
    if batches.is_empty() {
        return Ok(ctx.read_batch(RecordBatch::new_empty(schema))?);
    }
    let mut kept = Vec::with_capacity(batches.len());
    for batch in batches {
        let batch = match tenant {
            None => batch.clone(),
            Some(tenant) => {
                let ids =
                    batch
                        .column_by_name("tenant_id")
                        .ok_or_else(|| LakeError::Unreadable {
                            table: "invoices",
                            message: "column tenant_id is missing".to_string(),
                        })?;
                let ids = ids.as_string::<i32>();
                let own: BooleanArray = (0..ids.len())
                    .map(|row| Some(ids.is_valid(row) && ids.value(row) == tenant))
                    .collect();
                filter_record_batch(batch, &own)?
            }
        };
        kept.push(batch);
    }
    Ok(ctx.read_batches(kept)?)
}
