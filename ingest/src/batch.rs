//! Arrow batch builders for the lake's tables.
//!
//! [`UsageBatchBuilder`] appends validated events column by column (no row
//! structs in between) and [`RejectedBatchBuilder`] appends rejections; both
//! produce batches with exactly the schemas of `allot_schemas::table_schema`.

use std::fmt::Write as _;
use std::sync::Arc;

use allot_schemas::decimal::VALUE_SCALE;
use allot_schemas::event::{Rejection, UsageEvent};
use allot_schemas::layout::Provenance;
use allot_schemas::table_schema::{
    REJECTED_RAW_BYTES, VALUE_PRECISION, rejected_events_schema, usage_events_schema,
};
use allot_schemas::time::epoch_day_of_micros;
use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, Date32Builder, Decimal128Builder, Int32Builder,
    Int64Builder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::error::ArrowError;

/// Builds `usage_events` batches.
pub struct UsageBatchBuilder {
    event_id: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    metric: StringBuilder,
    value: Decimal128Builder,
    resource: StringBuilder,
    region: StringBuilder,
    service: StringBuilder,
    labels: MapBuilder<StringBuilder, StringBuilder>,
    schema_version: Int32Builder,
    source: StringBuilder,
    tenant_id: StringBuilder,
    day: Date32Builder,
    rows: usize,
    approx_bytes: usize,
}

/// Fixed per-row cost of the non-string columns, for the size estimate.
const FIXED_ROW_BYTES: usize = 8 + 16 + 4 + 8 + 4 + 5 * 4;

impl Default for UsageBatchBuilder {
    fn default() -> Self {
        UsageBatchBuilder::sized_for(&BatchSize::default())
    }
}

/// How many rows, label entries and string bytes a batch held: the next batch's
/// builders start at that size, so a batch like the last grows no buffer (no
/// copy on growth, no slack from doubling).
#[derive(Default)]
struct BatchSize {
    rows: usize,
    label_entries: usize,
    event_id: usize,
    metric: usize,
    resource: usize,
    region: usize,
    service: usize,
    label_keys: usize,
    label_values: usize,
    source: usize,
    tenant_id: usize,
}

impl UsageBatchBuilder {
    fn sized_for(size: &BatchSize) -> Self {
        let rows = size.rows;
        let strings = |bytes| StringBuilder::with_capacity(rows, bytes);
        let label_strings = |bytes| StringBuilder::with_capacity(size.label_entries, bytes);
        UsageBatchBuilder {
            event_id: strings(size.event_id),
            ts: TimestampMicrosecondBuilder::with_capacity(rows),
            metric: strings(size.metric),
            value: Decimal128Builder::with_capacity(rows),
            resource: strings(size.resource),
            region: strings(size.region),
            service: strings(size.service),
            labels: MapBuilder::with_capacity(
                Some(MapFieldNames {
                    entry: "key_value".to_string(),
                    key: "key".to_string(),
                    value: "value".to_string(),
                }),
                label_strings(size.label_keys),
                label_strings(size.label_values),
                rows,
            ),
            schema_version: Int32Builder::with_capacity(rows),
            source: strings(size.source),
            tenant_id: strings(size.tenant_id),
            day: Date32Builder::with_capacity(rows),
            rows: 0,
            approx_bytes: 0,
        }
    }

    /// The size of the rows buffered now.
    fn size(&mut self) -> BatchSize {
        BatchSize {
            rows: self.rows,
            label_entries: self.labels.keys().len(),
            event_id: self.event_id.values_slice().len(),
            metric: self.metric.values_slice().len(),
            resource: self.resource.values_slice().len(),
            region: self.region.values_slice().len(),
            service: self.service.values_slice().len(),
            label_keys: self.labels.keys().values_slice().len(),
            label_values: self.labels.values().values_slice().len(),
            source: self.source.values_slice().len(),
            tenant_id: self.tenant_id.values_slice().len(),
        }
    }

    /// Appends one validated event.
    pub fn append(&mut self, event: &UsageEvent<'_>, source: Provenance<'_>) {
        self.event_id.append_value(&event.event_id);
        self.ts.append_value(event.ts_micros);
        self.metric.append_value(&event.metric);
        self.value.append_value(event.value.scaled());
        self.resource.append_option(event.resource.as_deref());
        self.region.append_option(event.region.as_deref());
        self.service.append_option(event.service.as_deref());
        let mut label_bytes = 0;
        if event.labels.is_empty() {
            self.labels
                .append(false)
                .expect("keys and values stay aligned");
        } else {
            for (key, value) in &event.labels {
                self.labels.keys().append_value(key);
                self.labels.values().append_value(value);
                label_bytes += key.len() + value.len() + 8;
            }
            self.labels
                .append(true)
                .expect("keys and values stay aligned");
        }
        self.schema_version.append_value(event.schema_version);
        let source_start = self.source.values_slice().len();
        write!(self.source, "{source}").expect("writing to a builder cannot fail");
        self.source.append_value("");
        let source_len = self.source.values_slice().len() - source_start;
        self.tenant_id.append_value(&event.tenant_id);
        self.day.append_value(epoch_day_of_micros(event.ts_micros));
        self.rows += 1;
        self.approx_bytes += FIXED_ROW_BYTES
            + event.event_id.len()
            + event.metric.len()
            + event.tenant_id.len()
            + event.resource.as_deref().map_or(0, str::len)
            + event.region.as_deref().map_or(0, str::len)
            + event.service.as_deref().map_or(0, str::len)
            + label_bytes
            + source_len;
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// An estimate of the Arrow memory the buffered rows take.
    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    /// Takes the buffered rows as a batch, stamping `ingested_at`, and resets
    /// the builders to the size of this batch.
    pub fn finish(&mut self, ingested_at_micros: i64) -> Result<RecordBatch, ArrowError> {
        if self.rows == 0 {
            // Keeps the builders' size for the next batch.
            return Ok(RecordBatch::new_empty(usage_events_schema()));
        }
        let next = UsageBatchBuilder::sized_for(&self.size());
        let mut full = std::mem::replace(self, next);
        let ingested_at = TimestampMicrosecondArray::from_value(ingested_at_micros, full.rows)
            .with_timezone("UTC");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(full.event_id.finish()),
            Arc::new(full.ts.finish().with_timezone("UTC")),
            Arc::new(full.metric.finish()),
            Arc::new(
                full.value
                    .finish()
                    .with_precision_and_scale(VALUE_PRECISION, VALUE_SCALE as i8)?,
            ),
            Arc::new(full.resource.finish()),
            Arc::new(full.region.finish()),
            Arc::new(full.service.finish()),
            Arc::new(full.labels.finish()),
            Arc::new(full.schema_version.finish()),
            Arc::new(full.source.finish()),
            Arc::new(ingested_at),
            Arc::new(full.tenant_id.finish()),
            Arc::new(full.day.finish()),
        ];
        RecordBatch::try_new(usage_events_schema(), columns)
    }
}

/// Builds `rejected_events` batches.
#[derive(Default)]
pub struct RejectedBatchBuilder {
    tenant_id: StringBuilder,
    reason: StringBuilder,
    message: StringBuilder,
    raw: BinaryBuilder,
    raw_len: Int64Builder,
    source: StringBuilder,
    rows: usize,
    approx_bytes: usize,
}

/// Fixed per-row cost of a rejected row's non-string columns and offsets.
const FIXED_REJECTED_ROW_BYTES: usize = 8 + 5 * 4;

impl RejectedBatchBuilder {
    /// Appends one rejection with (the first 4 KiB of) the raw bytes.
    /// `raw_len` is the full length, which may exceed `raw.len()`.
    pub fn append(
        &mut self,
        rejection: &Rejection,
        raw: &[u8],
        raw_len: usize,
        source: Provenance<'_>,
    ) {
        let kept = &raw[..raw.len().min(REJECTED_RAW_BYTES)];
        self.tenant_id.append_option(rejection.tenant_id.as_deref());
        self.reason.append_value(rejection.reason.as_str());
        self.message.append_value(&rejection.message);
        self.raw.append_value(kept);
        self.raw_len.append_value(raw_len as i64);
        let source_start = self.source.values_slice().len();
        write!(self.source, "{source}").expect("writing to a builder cannot fail");
        self.source.append_value("");
        self.rows += 1;
        self.approx_bytes += FIXED_REJECTED_ROW_BYTES
            + kept.len()
            + rejection.message.len()
            + rejection.reason.as_str().len()
            + rejection.tenant_id.as_ref().map_or(0, String::len)
            + (self.source.values_slice().len() - source_start);
    }

    /// An estimate of the Arrow memory the buffered rows take: up to
    /// `REJECTED_RAW_BYTES` of raw bytes each, so a run of bad lines weighs on
    /// a batch's size as much as good ones.
    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes the buffered rows as a batch, stamping `rejected_at` and its day.
    pub fn finish(&mut self, rejected_at_micros: i64) -> Result<RecordBatch, ArrowError> {
        let rows = std::mem::take(&mut self.rows);
        self.approx_bytes = 0;
        let rejected_at =
            TimestampMicrosecondArray::from_value(rejected_at_micros, rows).with_timezone("UTC");
        let day =
            arrow::array::Date32Array::from_value(epoch_day_of_micros(rejected_at_micros), rows);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.tenant_id.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.raw_len.finish()),
            Arc::new(self.source.finish()),
            Arc::new(rejected_at),
            Arc::new(day),
        ];
        RecordBatch::try_new(rejected_events_schema(), columns)
    }
}
