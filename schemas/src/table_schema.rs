//! Arrow schemas of the lake's tables (docs/reference.md#lake-tables).
//!
//! The single definition of the columns of `usage_events` and `rejected_events`;
//! the writers build their batches against these schemas and the query engine
//! reads them back.

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

use crate::decimal::VALUE_SCALE;
use crate::layout::LakeTable;

/// Precision of the `value` column.
pub const VALUE_PRECISION: u8 = 38;

/// Columns `usage_events` is partitioned by, in order.
pub const USAGE_PARTITION_COLUMNS: [&str; 2] = ["tenant_id", "day"];

/// Columns `rejected_events` is partitioned by.
pub const REJECTED_PARTITION_COLUMNS: [&str; 1] = ["day"];

/// Most raw bytes of a rejected event that are kept.
pub const REJECTED_RAW_BYTES: usize = 4096;

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow type of the `labels` column: a map of strings, with the field names
/// Delta Lake uses, so that batches match what the table reports.
pub fn labels_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("key_value", DataType::Struct(entries), false)),
        false,
    )
}

static USAGE_EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("ts", utc_micros(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new(
            "value",
            DataType::Decimal128(VALUE_PRECISION, VALUE_SCALE as i8),
            false,
        ),
        Field::new("resource", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("service", DataType::Utf8, true),
        Field::new("labels", labels_type(), true),
        Field::new("schema_version", DataType::Int32, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("ingested_at", utc_micros(), false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("day", DataType::Date32, false),
    ]))
});

static REJECTED_EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("tenant_id", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
        Field::new("raw", DataType::Binary, false),
        Field::new("raw_len", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("rejected_at", utc_micros(), false),
        Field::new("day", DataType::Date32, false),
    ]))
});

static USAGE_HOURLY: LazyLock<SchemaRef> = LazyLock::new(|| {
    let decimal = DataType::Decimal128(VALUE_PRECISION, VALUE_SCALE as i8);
    Arc::new(Schema::new(vec![
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("basis", DataType::Int64, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("gauge", DataType::Boolean, false),
        Field::new("start", utc_micros(), false),
        Field::new("events", DataType::Int64, false),
        Field::new("value_sum", decimal.clone(), false),
        Field::new("first_ts", utc_micros(), false),
        Field::new("last_ts", utc_micros(), false),
        Field::new("resource", DataType::Utf8, true),
        Field::new("last_value", decimal.clone(), true),
        Field::new("value_max", decimal, true),
        Field::new("last_event_id", DataType::Utf8, true),
        Field::new("distinct_values", distinct_values_type(), true),
        Field::new("dimension_values", dimension_values_type(), true),
        Field::new("day", DataType::Date32, false),
    ]))
});

/// The type of `usage_hourly.distinct_values`: a list of texts, its items
/// named `element` as Delta Lake names them, so that batches match what the
/// table reports.
pub fn distinct_values_type() -> DataType {
    DataType::List(distinct_value_field())
}

/// The item field of [`distinct_values_type`].
pub fn distinct_value_field() -> FieldRef {
    Arc::new(Field::new("element", DataType::Utf8, true))
}

/// The type of `usage_hourly.dimension_values`: a list of texts, each null
/// or not, typed as [`distinct_values_type`].
pub fn dimension_values_type() -> DataType {
    distinct_values_type()
}

/// Columns of `usage_hourly` added after lakes had rollups (the meter kinds'
/// figures, the dimensional counters' classes): rollup files written before
/// lack them, so they are nullable and read as null; a table created before
/// gets them added to its schema when the rollups are next refreshed.
pub const HOURLY_COLUMNS_ADDED_LATER: [&str; 4] = [
    "value_max",
    "last_event_id",
    "distinct_values",
    "dimension_values",
];

/// The partition column of `usage_hourly`.
pub const HOURLY_PARTITION_COLUMNS: [&str; 1] = ["day"];

/// The schema of `usage_hourly`, the rollups of `usage_events`; the partition
/// column comes last. Two kinds of rows, both per tenant-day and keyed by the
/// `basis` they were computed from:
/// - `gauge = false`: per metric and UTC hour (`start`), the events, the sum of
///   their values and their first and last `ts`;
/// - `gauge = true`: per gauge metric and resource, for the day (`start` is its
///   midnight), the number of samples, `value_sum` = the time-weighted sum
///   (value × microseconds) of every sample but the last, each held until the
///   next sample or for the metric's hold, and the first and last samples'
///   times with the last sample's value.
///
/// The hourly rows of a `max`, `latest` or `unique_count` metric also keep
/// what its figure needs (docs/reference.md#other-meter-kinds): `value_max`
/// the hour's largest value; `last_event_id` and `last_value` its last event
/// by `ts` then `event_id` (whose `ts` is `last_ts`); `distinct_values` the
/// sorted distinct values of the counted field. The other rows leave them null.
///
/// A third kind of row sums a counter whose rates match on dimensions per
/// UTC day and match class (docs/reference.md#dimensional-rates):
/// `gauge = false`, `start` the day's midnight, `dimension_values` the values
/// of the dimensions the counter's rates match on (in their order) of the
/// class's least member; every other row leaves `dimension_values` null. The
/// counter's hourly rows are there as well, so readers of the hourly rows skip
/// these.
pub fn usage_hourly_schema() -> SchemaRef {
    USAGE_HOURLY.clone()
}

/// The schema of `usage_events`; partition columns come last.
pub fn usage_events_schema() -> SchemaRef {
    USAGE_EVENTS.clone()
}

/// The schema of `rejected_events`; the partition column comes last.
pub fn rejected_events_schema() -> SchemaRef {
    REJECTED_EVENTS.clone()
}

/// The columns of an invoice row as rendered in CSV (the line columns of
/// docs/reference.md#invoice-lines, then `kind` and `adjusts`,
/// docs/reference.md#late-events). The `invoices` table stores these as text, so
/// a final invoice renders byte for byte as it was closed.
pub const INVOICE_CSV_COLUMNS: [&str; 14] = [
    "tenant_id",
    "period",
    "metric",
    "unit",
    "segment_start",
    "segment_end",
    "tier_from",
    "tier_to",
    "quantity",
    "unit_price",
    "amount",
    "kind",
    "adjusts",
    "dimensions",
];

/// The columns of an allocation row (docs/reference.md#shared-cost-allocation).
pub const ALLOCATION_CSV_COLUMNS: [&str; 6] = [
    "period",
    "pool",
    "tenant_id",
    "driver_quantity",
    "share",
    "amount",
];

/// Columns of [`INVOICE_CSV_COLUMNS`] added after lakes had closed months: an
/// `invoices` table (and its files) written before may lack them, so they are
/// nullable, and a row without one reads as the empty text
/// (docs/reference.md#final-invoices).
pub const INVOICE_COLUMNS_ADDED_LATER: [&str; 1] = ["dimensions"];

/// Columns every row of `invoices` and `allocations` starts with: the closing it
/// belongs to and the row's position. Text columns named in `added_later` are
/// nullable, the others not.
fn closing_keyed(columns: &[&str], extra: &[(&str, DataType)], added_later: &[&str]) -> SchemaRef {
    let mut fields = vec![
        Field::new("close_id", DataType::Utf8, false),
        Field::new("month", DataType::Utf8, false),
        Field::new("revision", DataType::Int32, false),
        Field::new("row", DataType::Int32, false),
    ];
    fields.extend(
        extra
            .iter()
            .map(|(name, ty)| Field::new(*name, ty.clone(), false)),
    );
    fields.extend(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, added_later.contains(c))),
    );
    Arc::new(Schema::new(fields))
}

static INVOICES: LazyLock<SchemaRef> = LazyLock::new(|| {
    closing_keyed(
        &INVOICE_CSV_COLUMNS,
        &[
            ("currency", DataType::Utf8),
            ("discount_percent", DataType::Utf8),
        ],
        &INVOICE_COLUMNS_ADDED_LATER,
    )
});

static ALLOCATIONS: LazyLock<SchemaRef> =
    LazyLock::new(|| closing_keyed(&ALLOCATION_CSV_COLUMNS, &[], &[]));

static CLOSINGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("close_id", DataType::Utf8, false),
        Field::new("month", DataType::Utf8, false),
        Field::new("revision", DataType::Int32, false),
        Field::new("closed_at", DataType::Utf8, false),
        Field::new("who", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("usage_version", DataType::Int64, false),
        Field::new("config_sha256", DataType::Utf8, false),
        Field::new("config_text", DataType::Utf8, false),
        Field::new("costs_text", DataType::Utf8, true),
        Field::new("adjusts_revision", DataType::Int32, true),
        Field::new("txn_offsets", DataType::Utf8, false),
        Field::new("certificate", DataType::Utf8, false),
    ]))
});

static AUDIT: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("at", DataType::Utf8, false),
        Field::new("who", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("details", DataType::Utf8, false),
    ]))
});

static ALERTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("record", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("channel", DataType::Utf8, true),
        Field::new("recorded_at", DataType::Utf8, false),
        Field::new("details", DataType::Utf8, false),
    ]))
});

/// The schema of `alerts`, the alerts' state and outbox: one row per record,
/// each commit's rows under one sequence number `seq` (the `txn` offset the
/// commit is fenced on). `record` is `notice` (an alert to send: `details` is
/// its JSON body and channels), `claim` (a server takes a delivery) or
/// `attempt` (one delivery attempt and its outcome). Not partitioned.
pub fn alerts_schema() -> SchemaRef {
    ALERTS.clone()
}

/// The app id whose `txn` offset is the `alerts` table's sequence number: every
/// commit to `alerts` records it, fenced on the number its writer read.
pub const ALERTS_APP_ID: &str = "allot-alerts";

/// The idempotency key of the `number`th notice of (rule, tenant), the `key` of
/// every `alerts` row of that notice: `<rule>/<tenant_id>/<number>`.
pub fn notice_key(rule: &str, tenant_id: &str, number: u64) -> String {
    format!("{rule}/{tenant_id}/{number}")
}

/// The tenant (or `*`) a [`notice_key`] names. Neither a rule name nor a tenant
/// id holds a `/`, so the key splits back into its parts.
pub fn notice_key_tenant(key: &str) -> Option<&str> {
    let (_rule, rest) = key.split_once('/')?;
    let (tenant, _number) = rest.rsplit_once('/')?;
    Some(tenant)
}

/// The schema of `audit`: one row per administrative erasure, when (RFC 3339),
/// who ran it, what (`tenant_delete`), the tenant, and the details as JSON text
/// (rows and files removed per table, files deleted). Not partitioned.
pub fn audit_schema() -> SchemaRef {
    AUDIT.clone()
}

/// The schema of `invoices`: per closing, every CSV row of every tenant's final
/// invoice (lines, adjustment lines and the summary rows) as text, in order,
/// with the currency and discount percent of the tenant's invoice. Not
/// partitioned: a closing is a few rows per tenant.
pub fn invoices_schema() -> SchemaRef {
    INVOICES.clone()
}

/// The schema of `allocations`: per closing given costs, every allocation row as
/// text, in order.
pub fn allocations_schema() -> SchemaRef {
    ALLOCATIONS.clone()
}

/// The schema of `closings`: one row per closing of a month (revision 0, then
/// one per restatement). Only rows whose `close_id` appears here count in
/// `invoices` and `allocations`: the closings row is the commit point.
/// `txn_offsets` and `certificate` are JSON text (see `allot_query::closing`).
pub fn closings_schema() -> SchemaRef {
    CLOSINGS.clone()
}

/// The schema `table` is written with now and its partition columns.
pub fn table_schema(table: LakeTable) -> (SchemaRef, &'static [&'static str]) {
    match table {
        LakeTable::UsageEvents => (usage_events_schema(), &USAGE_PARTITION_COLUMNS),
        LakeTable::RejectedEvents => (rejected_events_schema(), &REJECTED_PARTITION_COLUMNS),
        LakeTable::UsageHourly => (usage_hourly_schema(), &HOURLY_PARTITION_COLUMNS),
        LakeTable::Invoices => (invoices_schema(), &[]),
        LakeTable::Allocations => (allocations_schema(), &[]),
        LakeTable::Closings => (closings_schema(), &[]),
        LakeTable::Audit => (audit_schema(), &[]),
        LakeTable::Alerts => (alerts_schema(), &[]),
    }
}
