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

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use allot_lake::session::{LakeSession, Scope, SessionLimits};
use allot_lake::snapshot::{LakeSnapshot, partition_date, read_small_table};
use allot_schemas::config::Config;
use allot_schemas::layout::{LakeLocation, LakeTable};
use allot_schemas::table_schema::{
    ALLOCATION_CSV_COLUMNS, INVOICE_CSV_COLUMNS, allocations_schema, closings_schema,
    invoices_schema,
};
use arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{
    Date32Type, Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_schema::{DataType, TimeUnit};
use bigdecimal::num_bigint::BigInt;
use bigdecimal::{BigDecimal, Zero};
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::allocation::{AllocationRow, CostPool};
use crate::billed::{BilledInvoice, InvoiceStatus, adjustment_rows, empty_invoice};
use crate::error::QueryError;
use crate::period::Period;
use crate::reports::{self, ReportSettings};
use crate::rounding::{MONEY_SCALE, format_fixed};

/// Kafka coverage of one topic-partition in a tenant-day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaCover {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Lowest offset of an event of the day.
    pub low: i64,
    /// Highest offset.
    pub high: i64,
    /// Number of events from this partition.
    pub count: u64,
}

/// File coverage of one backfill file in a tenant-day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCover {
    /// The file name as given to `allot ingest --from-file`.
    pub name: String,
    /// Number of its lines that became events of the day.
    pub lines: u64,
}

/// The certificate of one tenant-day; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateDay {
    /// The tenant.
    pub tenant_id: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Distinct events.
    pub events: u64,
    /// Raw sum per metric, 9 decimals.
    pub sums: BTreeMap<String, String>,
    /// SHA-256 (hex) of the sorted lines.
    pub digest: String,
    /// Kafka sources.
    pub kafka: Vec<KafkaCover>,
    /// File sources.
    pub files: Vec<FileCover>,
}

/// The columns of a certificate as CSV.
pub const CERTIFICATE_COLUMNS: [&str; 6] =
    ["tenant_id", "day", "events", "digest", "sums", "sources"];

impl CertificateDay {
    /// The day as CSV fields in [`CERTIFICATE_COLUMNS`] order: sums as
    /// `metric=sum` joined by `;`, sources as `kafka:topic/partition@low-high#count`
    /// and `file:name#lines` joined by `;`.
    pub fn csv_record(&self) -> Vec<String> {
        let sums: Vec<String> = self.sums.iter().map(|(m, s)| format!("{m}={s}")).collect();
        let sources: Vec<String> = self
            .kafka
            .iter()
            .map(|k| {
                format!(
                    "kafka:{}/{}@{}-{}#{}",
                    k.topic, k.partition, k.low, k.high, k.count
                )
            })
            .chain(
                self.files
                    .iter()
                    .map(|f| format!("file:{}#{}", f.name, f.lines)),
            )
            .collect();
        vec![
            self.tenant_id.clone(),
            self.day.clone(),
            self.events.to_string(),
            self.digest.clone(),
            sums.join(";"),
            sources.join(";"),
        ]
    }
}

/// The SHA-256 (lower-case hex) of `lines` sorted by their UTF-8 bytes, each
/// followed by a line feed: the certificate's digest of a tenant-day.
///
/// ```
/// use allot_query::closing::digest_lines;
/// let lines = vec!["b|2|m|1.000000000".to_string(), "a|1|m|2.500000000".to_string()];
/// // sha256("a|1|m|2.500000000\nb|2|m|1.000000000\n")
/// assert_eq!(digest_lines(lines).len(), 64);
/// ```
pub fn digest_lines(mut lines: Vec<String>) -> String {
    lines.sort_unstable();
    let mut hasher = Sha256::new();
    for line in &lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// The SHA-256 (hex) of a text.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[derive(Default)]
struct DayAccumulator {
    lines: Vec<String>,
    sums: BTreeMap<String, BigDecimal>,
    kafka: BTreeMap<(String, i32), (i64, i64, u64)>,
    files: BTreeMap<String, u64>,
}

fn cast(batch: &RecordBatch, i: usize, to: &DataType) -> Result<ArrayRef, QueryError> {
    arrow::compute::cast(batch.column(i), to).map_err(QueryError::from)
}

/// Parses a `source` value: `kafka:<topic>/<partition>@<offset>` or
/// `file:<name>:<line>`.
fn add_source(day: &mut DayAccumulator, source: &str) {
    if let Some(rest) = source.strip_prefix("kafka:")
        && let Some((topic_partition, offset)) = rest.rsplit_once('@')
        && let Some((topic, partition)) = topic_partition.rsplit_once('/')
        && let (Ok(partition), Ok(offset)) = (partition.parse::<i32>(), offset.parse::<i64>())
    {
        let entry = day
            .kafka
            .entry((topic.to_string(), partition))
            .or_insert((offset, offset, 0));
        entry.0 = entry.0.min(offset);
        entry.1 = entry.1.max(offset);
        entry.2 += 1;
    } else if let Some(rest) = source.strip_prefix("file:") {
        let name = rest.rsplit_once(':').map_or(rest, |(name, _)| name);
        *day.files.entry(name.to_string()).or_default() += 1;
    }
}

/// The certificate of every tenant-day of `period` in `snapshot`, ordered by
/// tenant and day.
pub async fn certificate(
    snapshot: &LakeSnapshot,
    period: Period,
) -> Result<Vec<CertificateDay>, QueryError> {
    let session = LakeSession::new(snapshot, &Scope::AllTenants, &SessionLimits::default())?;
    let ts = |micros| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(micros),
            Some("UTC".into()),
        ))
    };
    let frame = session
        .usage_events()
        .await?
        .filter(
            col("ts")
                .gt_eq(ts(period.start_micros()))
                .and(col("ts").lt(ts(period.end_micros()))),
        )
        .and_then(|f| {
            f.select(vec![
                col("tenant_id"),
                col("day"),
                col("event_id"),
                col("ts"),
                col("metric"),
                col("value"),
                col("source"),
            ])
        })
        .map_err(QueryError::from)?;
    let mut stream = frame.execute_stream().await.map_err(QueryError::from)?;
    let mut days: BTreeMap<(String, i32), DayAccumulator> = BTreeMap::new();
    let decimal = DataType::Decimal128(38, 9);
    let micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(QueryError::from)?;
        let tenants = cast(&batch, 0, &DataType::Utf8)?;
        let day_col = cast(&batch, 1, &DataType::Date32)?;
        let ids = cast(&batch, 2, &DataType::Utf8)?;
        let times = cast(&batch, 3, &micros)?;
        let metrics = cast(&batch, 4, &DataType::Utf8)?;
        let values = cast(&batch, 5, &decimal)?;
        let sources = cast(&batch, 6, &DataType::Utf8)?;
        let (tenants, ids, metrics, sources) = (
            tenants.as_string::<i32>(),
            ids.as_string::<i32>(),
            metrics.as_string::<i32>(),
            sources.as_string::<i32>(),
        );
        let day_col = day_col.as_primitive::<Date32Type>();
        let times = times.as_primitive::<TimestampMicrosecondType>();
        let values = values.as_primitive::<Decimal128Type>();
        for row in 0..batch.num_rows() {
            let value = BigDecimal::new(BigInt::from(values.value(row)), 9);
            let metric = metrics.value(row);
            let day = days
                .entry((tenants.value(row).to_string(), day_col.value(row)))
                .or_default();
            day.lines.push(format!(
                "{}|{}|{}|{}",
                ids.value(row),
                times.value(row),
                metric,
                format_fixed(&value, 9)
            ));
            *day.sums
                .entry(metric.to_string())
                .or_insert_with(BigDecimal::zero) += value;
            add_source(day, sources.value(row));
        }
    }
    let mut certificate = Vec::with_capacity(days.len());
    for ((tenant_id, day), acc) in days {
        certificate.push(CertificateDay {
            tenant_id,
            day: partition_date(day)?.format("%Y-%m-%d").to_string(),
            events: acc.lines.len() as u64,
            sums: acc
                .sums
                .iter()
                .map(|(m, s)| (m.clone(), format_fixed(s, 9)))
                .collect(),
            digest: digest_lines(acc.lines),
            kafka: acc
                .kafka
                .into_iter()
                .map(|((topic, partition), (low, high, count))| KafkaCover {
                    topic,
                    partition,
                    low,
                    high,
                    count,
                })
                .collect(),
            files: acc
                .files
                .into_iter()
                .map(|(name, lines)| FileCover { name, lines })
                .collect(),
        });
    }
    Ok(certificate)
}

/// One closing of a month, as stored in `closings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// Unique id of the close; rows of `invoices` and `allocations` carry it.
    pub close_id: String,
    /// The month closed.
    pub month: Period,
    /// 0, then one more per restatement.
    pub revision: i32,
    /// When (RFC 3339, UTC).
    pub closed_at: String,
    /// Who closed it.
    pub who: String,
    /// Why it was restated (`None` for revision 0).
    pub reason: Option<String>,
    /// The `usage_events` version read.
    pub usage_version: u64,
    /// SHA-256 (hex) of `config_text`.
    pub config_sha256: String,
    /// The effective catalog, price book and tenants ([`Config::billing_toml`]).
    pub config_text: String,
    /// The costs file given, when an allocation was frozen.
    pub costs_text: Option<String>,
    /// The revision of the month before that this closing's adjustments were
    /// taken against.
    pub adjusts_revision: Option<i32>,
    /// The `txn` offsets of `usage_events` at `usage_version` (app id → offset).
    pub txn_offsets: BTreeMap<String, i64>,
    /// The completeness certificate.
    pub certificate: Vec<CertificateDay>,
}

impl Closing {
    /// The report settings of the recorded configuration (raw events, no
    /// rollups: they are not versioned with the closing).
    pub fn settings(&self) -> Result<ReportSettings, QueryError> {
        let config = Config::from_toml_str(
            &self.config_text,
            "the closing's configuration",
            std::iter::empty::<(String, String)>(),
        )
        .map_err(|e| {
            QueryError::Stored(format!("closing {} {}: {e}", self.month, self.revision))
        })?;
        let mut settings = ReportSettings::new(config)?;
        settings.use_rollups = false;
        Ok(settings)
    }

    /// The status of the invoices it stored.
    pub fn status(&self) -> InvoiceStatus {
        InvoiceStatus::Final {
            revision: self.revision,
            closed_at: self.closed_at.clone(),
            version: self.usage_version,
        }
    }
}

/// Column `name` of a stored batch, cast to `data_type`.
fn column_as(
    batch: &RecordBatch,
    name: &str,
    data_type: &DataType,
) -> Result<ArrayRef, QueryError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| QueryError::Stored(format!("column {name} is missing")))?;
    arrow::compute::cast(column, data_type).map_err(QueryError::from)
}

fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray, QueryError> {
    Ok(column_as(batch, name, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

fn int32s(batch: &RecordBatch, name: &str) -> Result<Int32Array, QueryError> {
    Ok(column_as(batch, name, &DataType::Int32)?
        .as_primitive::<Int32Type>()
        .clone())
}

fn optional(array: &StringArray, row: usize) -> Option<String> {
    array.is_valid(row).then(|| array.value(row).to_string())
}

fn json_error(what: &str) -> impl Fn(serde_json::Error) -> QueryError + '_ {
    move |e| QueryError::Stored(format!("stored {what} is not valid JSON: {e}"))
}

/// The `usage_events` versions that `allot vacuum` must keep whole: those read
/// by closings younger than `close_retention` at `now_micros` (docs/reference.md#verify). A
/// closing whose time cannot be read is kept, never lost.
pub async fn versions_to_keep(
    location: &LakeLocation,
    now_micros: i64,
    close_retention: std::time::Duration,
) -> Result<Vec<u64>, QueryError> {
    let close_micros = i64::try_from(close_retention.as_micros()).unwrap_or(i64::MAX);
    let mut kept: Vec<u64> = closings(location)
        .await?
        .iter()
        .filter(|c| {
            chrono::DateTime::parse_from_rfc3339(&c.closed_at)
                .map(|t| now_micros.saturating_sub(t.timestamp_micros()) < close_micros)
                .unwrap_or(true)
        })
        .map(|c| c.usage_version)
        .collect();
    kept.sort_unstable();
    kept.dedup();
    Ok(kept)
}

/// Every closing of the lake, ordered by month then revision.
pub async fn closings(location: &LakeLocation) -> Result<Vec<Closing>, QueryError> {
    let mut found = Vec::new();
    for batch in read_small_table(location, LakeTable::Closings).await? {
        let [
            close_id,
            month,
            closed_at,
            who,
            reason,
            config_sha256,
            config_text,
            costs_text,
            txn,
            cert,
        ] = [
            "close_id",
            "month",
            "closed_at",
            "who",
            "reason",
            "config_sha256",
            "config_text",
            "costs_text",
            "txn_offsets",
            "certificate",
        ]
        .map(|name| strings(&batch, name));
        let revision = int32s(&batch, "revision")?;
        let adjusts = int32s(&batch, "adjusts_revision")?;
        let version = arrow::compute::cast(
            batch
                .column_by_name("usage_version")
                .ok_or_else(|| QueryError::Stored("column usage_version is missing".into()))?,
            &DataType::Int64,
        )
        .map_err(QueryError::from)?;
        let version = version.as_primitive::<Int64Type>();
        let (close_id, month, closed_at, who, reason) =
            (close_id?, month?, closed_at?, who?, reason?);
        let (config_sha256, config_text, costs_text, txn, cert) =
            (config_sha256?, config_text?, costs_text?, txn?, cert?);
        for row in 0..batch.num_rows() {
            found.push(Closing {
                close_id: close_id.value(row).to_string(),
                month: Period::parse(month.value(row))?,
                revision: revision.value(row),
                closed_at: closed_at.value(row).to_string(),
                who: who.value(row).to_string(),
                reason: optional(&reason, row),
                usage_version: u64::try_from(version.value(row)).unwrap_or(0),
                config_sha256: config_sha256.value(row).to_string(),
                config_text: config_text.value(row).to_string(),
                costs_text: optional(&costs_text, row),
                adjusts_revision: adjusts.is_valid(row).then(|| adjusts.value(row)),
                txn_offsets: serde_json::from_str(txn.value(row))
                    .map_err(json_error("txn_offsets"))?,
                certificate: serde_json::from_str(cert.value(row))
                    .map_err(json_error("certificate"))?,
            });
        }
    }
    found.sort_by_key(|c| (c.month, c.revision));
    Ok(found)
}

/// The newest revision of `month` among `closings`, or the given `revision`.
pub fn find_closing(
    closings: &[Closing],
    month: Period,
    revision: Option<i32>,
) -> Option<&Closing> {
    closings
        .iter()
        .rfind(|c| c.month == month && revision.is_none_or(|r| r == c.revision))
}

/// A stored invoice while it is read: currency, discount percent, numbered rows.
type StoredInvoice = (String, String, Vec<(i32, Vec<String>)>);

/// The final invoices `closing` stored (of `tenant` only, when given), ordered
/// by tenant, each with its rows in their stored order.
pub async fn stored_invoices(
    location: &LakeLocation,
    closing: &Closing,
    tenant: Option<&str>,
) -> Result<Vec<BilledInvoice>, QueryError> {
    let mut by_tenant: BTreeMap<String, StoredInvoice> = BTreeMap::new();
    for batch in read_small_table(location, LakeTable::Invoices).await? {
        let ids = strings(&batch, "close_id")?;
        let rows = int32s(&batch, "row")?;
        let currency = strings(&batch, "currency")?;
        let percent = strings(&batch, "discount_percent")?;
        let columns: Vec<StringArray> = INVOICE_CSV_COLUMNS
            .iter()
            .map(|name| strings(&batch, name))
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            let tenant_id = columns[0].value(row);
            if ids.value(row) != closing.close_id || tenant.is_some_and(|t| t != tenant_id) {
                continue;
            }
            let entry = by_tenant.entry(tenant_id.to_string()).or_insert_with(|| {
                (
                    currency.value(row).to_string(),
                    percent.value(row).to_string(),
                    Vec::new(),
                )
            });
            entry.2.push((
                rows.value(row),
                columns.iter().map(|c| c.value(row).to_string()).collect(),
            ));
        }
    }
    Ok(by_tenant
        .into_iter()
        .map(|(tenant_id, (currency, discount_percent, mut rows))| {
            rows.sort_by_key(|(n, _)| *n);
            BilledInvoice {
                tenant_id,
                period: closing.month.to_string(),
                currency,
                discount_percent,
                rows: rows.into_iter().map(|(_, r)| r).collect(),
                status: closing.status(),
            }
        })
        .collect())
}

/// The allocation rows `closing` froze, in their stored order (empty when it
/// was closed without costs).
pub async fn stored_allocation(
    location: &LakeLocation,
    closing: &Closing,
) -> Result<Vec<Vec<String>>, QueryError> {
    let mut found = Vec::new();
    for batch in read_small_table(location, LakeTable::Allocations).await? {
        let ids = strings(&batch, "close_id")?;
        let rows = int32s(&batch, "row")?;
        let columns: Vec<StringArray> = ALLOCATION_CSV_COLUMNS
            .iter()
            .map(|name| strings(&batch, name))
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            if ids.value(row) == closing.close_id {
                found.push((
                    rows.value(row),
                    columns
                        .iter()
                        .map(|c| c.value(row).to_string())
                        .collect::<Vec<_>>(),
                ));
            }
        }
    }
    found.sort_by_key(|(n, _)| *n);
    Ok(found.into_iter().map(|(_, r)| r).collect())
}

/// The closing of the month before, which a month's adjustments are taken
/// against: its recorded settings and final invoices.
pub struct PreviousClose {
    /// The closing.
    pub closing: Closing,
    /// Its recorded configuration.
    pub settings: ReportSettings,
    /// Its final invoices.
    pub invoices: Vec<BilledInvoice>,
}

impl PreviousClose {
    /// Loads `closing`'s settings and invoices.
    pub async fn load(
        location: &LakeLocation,
        closing: &Closing,
    ) -> Result<PreviousClose, QueryError> {
        Ok(PreviousClose {
            settings: closing.settings()?,
            invoices: stored_invoices(location, closing, None).await?,
            closing: closing.clone(),
        })
    }
}

/// The invoices of `period` as billed now (drafts): its usage with `settings`,
/// plus, when the month before is closed (`previous`), the adjustment lines of
/// its late events, for every tenant with usage or adjustments (or `tenant`).
pub async fn billed_invoices(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    tenant: Option<&str>,
    previous: Option<&PreviousClose>,
) -> Result<Vec<BilledInvoice>, QueryError> {
    let own = reports::invoices(snapshot, settings, period, tenant).await?;
    let mut own: BTreeMap<String, _> = own.into_iter().map(|i| (i.tenant_id.clone(), i)).collect();
    let mut adjustments: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    if let Some(previous) = previous {
        let adjusted = previous.closing.month;
        let recomputed = reports::invoices(snapshot, &previous.settings, adjusted, tenant).await?;
        let recomputed: BTreeMap<&str, _> = recomputed
            .iter()
            .map(|i| (i.tenant_id.as_str(), i))
            .collect();
        let finals: BTreeMap<&str, &BilledInvoice> = previous
            .invoices
            .iter()
            .filter(|i| tenant.is_none_or(|t| t == i.tenant_id))
            .map(|i| (i.tenant_id.as_str(), i))
            .collect();
        let tenants: std::collections::BTreeSet<&str> =
            recomputed.keys().chain(finals.keys()).copied().collect();
        for t in tenants {
            let rows = adjustment_rows(
                t,
                period,
                adjusted,
                recomputed.get(t).copied(),
                finals.get(t).copied(),
            )?;
            if !rows.is_empty() {
                adjustments.insert(t.to_string(), rows);
            }
        }
    }
    for t in adjustments.keys() {
        own.entry(t.clone()).or_insert_with(|| {
            empty_invoice(
                t,
                period,
                settings.book.currency(),
                settings.book.discount_percent(t),
            )
        });
    }
    Ok(own
        .into_values()
        .map(|invoice| {
            let rows = adjustments.remove(&invoice.tenant_id).unwrap_or_default();
            BilledInvoice::draft(&invoice, rows)
        })
        .collect())
}

/// One tenant's invoice of `period` as `view` shows it. A tenant without usage or
/// adjustments in the month owes nothing: it gets an empty invoice (no lines, total
/// `0.00`) with the month's status, final when a closing covers it.
pub async fn tenant_invoice(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    tenant: &str,
    view: InvoiceView,
) -> Result<BilledInvoice, QueryError> {
    let invoices = month_invoices(location, snapshot, settings, period, Some(tenant), view);
    if let Some(invoice) = invoices.await?.pop() {
        return Ok(invoice);
    }
    let all = closings(location).await?;
    let revision = match view {
        InvoiceView::Revision(r) => Some(r),
        _ => None,
    };
    let closed = find_closing(&all, period, revision).filter(|_| view != InvoiceView::Live);
    let (recorded, status) = match closed {
        Some(closing) => (Some(closing.settings()?), closing.status()),
        None => (None, InvoiceStatus::Draft),
    };
    let book = &recorded.as_ref().unwrap_or(settings).book;
    let empty = empty_invoice(
        tenant,
        period,
        book.currency(),
        book.discount_percent(tenant),
    );
    let mut invoice = BilledInvoice::draft(&empty, Vec::new());
    invoice.status = status;
    Ok(invoice)
}

/// Everything a close writes, before it is written.
pub struct ClosePlan {
    /// The closings row.
    pub closing: Closing,
    /// The final invoices.
    pub invoices: Vec<BilledInvoice>,
    /// The frozen allocation (costs given).
    pub allocation: Option<Vec<AllocationRow>>,
}

/// What a close is asked to do.
pub struct CloseRequest<'a> {
    /// The month.
    pub month: Period,
    /// The revision to write (0 for a first close).
    pub revision: i32,
    /// Unique id of this close.
    pub close_id: String,
    /// When, RFC 3339.
    pub closed_at: String,
    /// Who.
    pub who: String,
    /// Restatement reason.
    pub reason: Option<String>,
    /// The current configuration.
    pub config: &'a Config,
    /// The costs file text and its pools, when an allocation is frozen.
    pub costs: Option<(String, Vec<CostPool>)>,
    /// The closing of the month before, for adjustments.
    pub previous: Option<&'a PreviousClose>,
    /// App ids of `usage_events` whose `txn` offsets the certificate records.
    pub txn_offsets: BTreeMap<String, i64>,
}

/// Computes a closing of `request.month` over `snapshot` (whose `usage_events`
/// version is recorded).
pub async fn plan_close(
    snapshot: &LakeSnapshot,
    request: CloseRequest<'_>,
) -> Result<ClosePlan, QueryError> {
    let config_text = request.config.billing_toml();
    let recorded = Closing {
        close_id: request.close_id,
        month: request.month,
        revision: request.revision,
        closed_at: request.closed_at,
        who: request.who,
        reason: request.reason,
        usage_version: snapshot.usage.version.unwrap_or(0),
        config_sha256: sha256_hex(&config_text),
        config_text,
        costs_text: request.costs.as_ref().map(|(text, _)| text.clone()),
        adjusts_revision: request.previous.map(|p| p.closing.revision),
        txn_offsets: request.txn_offsets,
        certificate: Vec::new(),
    };
    let settings = recorded.settings()?;
    let (invoices, allocation, certificate) = recompute(
        snapshot,
        &settings,
        request.month,
        request.previous,
        request.costs.as_ref().map(|(_, p)| p.as_slice()),
    )
    .await?;
    let status = recorded.status();
    let closing = Closing {
        certificate,
        ..recorded
    };
    Ok(ClosePlan {
        invoices: invoices
            .into_iter()
            .map(|i| BilledInvoice {
                status: status.clone(),
                ..i
            })
            .collect(),
        allocation,
        closing,
    })
}

type Recomputed = (
    Vec<BilledInvoice>,
    Option<Vec<AllocationRow>>,
    Vec<CertificateDay>,
);

/// Invoices, allocation and certificate of `month`: what a close stores and
/// what verify compares.
async fn recompute(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    month: Period,
    previous: Option<&PreviousClose>,
    pools: Option<&[CostPool]>,
) -> Result<Recomputed, QueryError> {
    let invoices = billed_invoices(snapshot, settings, month, None, previous).await?;
    let allocation = match pools {
        Some(pools) => Some(reports::allocation(snapshot, settings, pools, month).await?),
        None => None,
    };
    let certificate = certificate(snapshot, month).await?;
    Ok((invoices, allocation, certificate))
}

fn string_column(values: impl IntoIterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// The `invoices` rows of a plan.
pub fn invoices_batch(plan: &ClosePlan) -> Result<RecordBatch, QueryError> {
    let c = &plan.closing;
    let rows: Vec<(&BilledInvoice, &Vec<String>)> = plan
        .invoices
        .iter()
        .flat_map(|i| i.rows.iter().map(move |r| (i, r)))
        .collect();
    let n = rows.len();
    let mut columns: Vec<ArrayRef> = vec![
        string_column(std::iter::repeat_n(c.close_id.clone(), n)),
        string_column(std::iter::repeat_n(c.month.to_string(), n)),
        Arc::new(Int32Array::from(vec![c.revision; n])),
        Arc::new(Int32Array::from_iter_values(
            0..i32::try_from(n).unwrap_or(i32::MAX),
        )),
        string_column(rows.iter().map(|(i, _)| i.currency.clone())),
        string_column(rows.iter().map(|(i, _)| i.discount_percent.clone())),
    ];
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
    let n = records.len();
    let mut columns: Vec<ArrayRef> = vec![
        string_column(std::iter::repeat_n(c.close_id.clone(), n)),
        string_column(std::iter::repeat_n(c.month.to_string(), n)),
        Arc::new(Int32Array::from(vec![c.revision; n])),
        Arc::new(Int32Array::from_iter_values(
            0..i32::try_from(n).unwrap_or(i32::MAX),
        )),
    ];
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

/// The outcome of `allot verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything recomputed equals what was stored, but for the tenants erased
    /// since the close (`allot tenant delete`), named here: their events are
    /// gone, so their figures and the allocation are not compared.
    Verified {
        /// Tenants erased after the close, in order.
        erased: Vec<String>,
    },
    /// The first difference found.
    Differs(String),
}

/// Recomputes `closing` from `snapshot` (which must be `usage_events` at the
/// recorded version) with the recorded configuration, and compares invoices,
/// allocation and certificate with what was stored.
pub async fn verify(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    closing: &Closing,
    all: &[Closing],
) -> Result<Verdict, QueryError> {
    let label = format!("{} revision {}", closing.month, closing.revision);
    if sha256_hex(&closing.config_text) != closing.config_sha256 {
        return Ok(Verdict::Differs(format!(
            "{label}: the recorded configuration text does not match its SHA-256"
        )));
    }
    let settings = closing.settings()?;
    let previous = match closing.adjusts_revision {
        Some(revision) => match find_closing(all, closing.month.prev(), Some(revision)) {
            Some(previous) => Some(PreviousClose::load(location, previous).await?),
            None => {
                return Ok(Verdict::Differs(format!(
                    "{label}: its adjustments were taken against {} revision {revision}, which is missing",
                    closing.month.prev()
                )));
            }
        },
        None => None,
    };
    let pools = match &closing.costs_text {
        Some(text) => Some(
            crate::allocation::parse_costs_csv(text, &settings.catalog, &settings.config.currency)
                .map_err(|e| QueryError::Stored(format!("{label}: recorded costs: {e}")))?,
        ),
        None => None,
    };
    // Tenants erased since the close: their files are gone from storage, so the
    // month is recomputed without them, from the raw events (rollup files held
    // their rows too), and the allocation, which shares costs over every
    // tenant, cannot be compared.
    let erased = erased_since(location, &closing.closed_at).await?;
    let mut kept = snapshot.clone();
    if !erased.is_empty() {
        kept.usage
            .files
            .retain(|f| !f.tenant_id.as_ref().is_some_and(|t| erased.contains(t)));
        kept.hourly.files.clear();
    }
    let (invoices, allocation, certificate) = recompute(
        &kept,
        &settings,
        closing.month,
        previous.as_ref(),
        pools.as_deref(),
    )
    .await?;
    let not_erased = |tenant: &str| !erased.contains(tenant);
    let mut stored = stored_invoices(location, closing, None).await?;
    stored.retain(|i| not_erased(&i.tenant_id));
    if let Some(difference) = first_invoice_difference(&stored, &invoices) {
        return Ok(Verdict::Differs(format!("{label}: {difference}")));
    }
    if let Some(rows) = allocation.filter(|_| erased.is_empty()) {
        let recomputed: Vec<Vec<String>> = rows.iter().map(AllocationRow::csv_record).collect();
        let frozen = stored_allocation(location, closing).await?;
        if recomputed != frozen {
            let at = recomputed
                .iter()
                .zip(&frozen)
                .position(|(a, b)| a != b)
                .unwrap_or(recomputed.len().min(frozen.len()));
            return Ok(Verdict::Differs(format!(
                "{label}: allocation row {} differs (stored {:?}, recomputed {:?})",
                at + 1,
                frozen.get(at).map(|r| r.join(",")),
                recomputed.get(at).map(|r| r.join(","))
            )));
        }
    }
    let certified: Vec<CertificateDay> = closing
        .certificate
        .iter()
        .filter(|d| not_erased(&d.tenant_id))
        .cloned()
        .collect();
    if let Some(difference) = first_certificate_difference(&certified, &certificate) {
        return Ok(Verdict::Differs(format!("{label}: {difference}")));
    }
    Ok(Verdict::Verified {
        erased: erased.into_iter().collect(),
    })
}

/// The tenants erased (`audit` rows of `tenant_delete`) after `closed_at`.
async fn erased_since(
    location: &LakeLocation,
    closed_at: &str,
) -> Result<BTreeSet<String>, QueryError> {
    let instant = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok();
    let closed = instant(closed_at);
    let mut erased = BTreeSet::new();
    for batch in read_small_table(location, LakeTable::Audit).await? {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok())
                .ok_or_else(|| {
                    QueryError::from(allot_lake::LakeError::Unreadable {
                        table: LakeTable::Audit.dir_name(),
                        message: format!("no {name} column"),
                    })
                })
        };
        let (at, action, tenant) = (column("at")?, column("action")?, column("tenant_id")?);
        let (at, action, tenant) = (
            at.as_string::<i32>(),
            action.as_string::<i32>(),
            tenant.as_string::<i32>(),
        );
        for row in 0..batch.num_rows() {
            // An erasure whose time cannot be read counts as after the close.
            let after = match (instant(at.value(row)), closed) {
                (Some(at), Some(closed)) => at > closed,
                _ => true,
            };
            if action.value(row) == "tenant_delete" && after {
                erased.insert(tenant.value(row).to_string());
            }
        }
    }
    Ok(erased)
}

fn first_invoice_difference(
    stored: &[BilledInvoice],
    recomputed: &[BilledInvoice],
) -> Option<String> {
    let stored_map: BTreeMap<&str, &BilledInvoice> =
        stored.iter().map(|i| (i.tenant_id.as_str(), i)).collect();
    let new_map: BTreeMap<&str, &BilledInvoice> = recomputed
        .iter()
        .map(|i| (i.tenant_id.as_str(), i))
        .collect();
    let tenants: std::collections::BTreeSet<&str> =
        stored_map.keys().chain(new_map.keys()).copied().collect();
    for tenant in tenants {
        match (stored_map.get(tenant), new_map.get(tenant)) {
            (Some(_), None) => {
                return Some(format!(
                    "invoice of tenant {tenant} is stored but recomputes to nothing"
                ));
            }
            (None, Some(_)) => {
                return Some(format!(
                    "tenant {tenant} has an invoice now but none was stored"
                ));
            }
            (Some(a), Some(b)) => {
                if a.currency != b.currency || a.discount_percent != b.discount_percent {
                    return Some(format!(
                        "invoice of tenant {tenant}: currency or discount differs"
                    ));
                }
                for (i, (x, y)) in a.rows.iter().zip(&b.rows).enumerate() {
                    if x != y {
                        return Some(format!(
                            "invoice of tenant {tenant}, row {}: stored {:?}, recomputed {:?}",
                            i + 1,
                            x.join(","),
                            y.join(",")
                        ));
                    }
                }
                if a.rows.len() != b.rows.len() {
                    return Some(format!(
                        "invoice of tenant {tenant}: {} rows stored, {} recomputed",
                        a.rows.len(),
                        b.rows.len()
                    ));
                }
            }
            (None, None) => {}
        }
    }
    None
}

fn first_certificate_difference(
    stored: &[CertificateDay],
    recomputed: &[CertificateDay],
) -> Option<String> {
    let key = |d: &CertificateDay| (d.tenant_id.clone(), d.day.clone());
    let stored_map: BTreeMap<_, _> = stored.iter().map(|d| (key(d), d)).collect();
    let new_map: BTreeMap<_, _> = recomputed.iter().map(|d| (key(d), d)).collect();
    let keys: std::collections::BTreeSet<_> =
        stored_map.keys().chain(new_map.keys()).cloned().collect();
    for (tenant, day) in keys {
        let k = (tenant.clone(), day.clone());
        match (stored_map.get(&k), new_map.get(&k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let what = if a.events != b.events {
                    format!("{} events certified, {} found", a.events, b.events)
                } else if a.sums != b.sums {
                    "raw sums differ".to_string()
                } else if a.digest != b.digest {
                    format!("digest {} certified, {} recomputed", a.digest, b.digest)
                } else {
                    "sources differ".to_string()
                };
                return Some(format!("certificate of tenant {tenant} on {day}: {what}"));
            }
            (Some(_), None) => {
                return Some(format!(
                    "certificate of tenant {tenant} on {day}: no events found"
                ));
            }
            (None, Some(_)) => {
                return Some(format!(
                    "tenant {tenant} has events on {day} that the certificate lacks"
                ));
            }
            (None, None) => {}
        }
    }
    None
}

/// The columns of the margin report.
pub const MARGIN_COLUMNS: [&str; 5] = ["tenant_id", "revenue", "cost", "margin", "margin_pct"];

/// Margin per tenant: revenue = invoice total, cost = Σ its allocated amounts,
/// margin = revenue − cost, margin % = margin / revenue × 100 rounded half away
/// from zero to 2 places (empty when revenue is 0). Rows by tenant id, every
/// tenant with an invoice or an allocation (`__unallocated__` included).
pub fn margin_rows(
    invoices: &[BilledInvoice],
    allocation: &[Vec<String>],
) -> Result<Vec<Vec<String>>, QueryError> {
    let mut figures: BTreeMap<String, (BigDecimal, BigDecimal)> = BTreeMap::new();
    for invoice in invoices {
        figures.entry(invoice.tenant_id.clone()).or_default().0 += invoice.total()?;
    }
    for row in allocation {
        let amount = BigDecimal::from_str(&row[5])
            .map_err(|_| QueryError::Stored(format!("allocation amount {:?}", row[5])))?;
        figures.entry(row[2].clone()).or_default().1 += amount;
    }
    Ok(figures
        .into_iter()
        .map(|(tenant, (revenue, cost))| {
            let margin = &revenue - &cost;
            let pct = if revenue.is_zero() {
                String::new()
            } else {
                format_fixed(
                    &crate::rounding::div_round(
                        &(&margin * BigDecimal::from(100)),
                        &revenue,
                        MONEY_SCALE,
                        crate::rounding::Rounding::HalfAwayFromZero,
                    ),
                    MONEY_SCALE,
                )
            };
            vec![
                tenant,
                format_fixed(&revenue, MONEY_SCALE),
                format_fixed(&cost, MONEY_SCALE),
                format_fixed(&margin, MONEY_SCALE),
                pct,
            ]
        })
        .collect())
}

/// Σ invoice totals, as money text.
pub fn sum_of_totals(invoices: &[BilledInvoice]) -> Result<String, QueryError> {
    let mut total = BigDecimal::zero();
    for invoice in invoices {
        total += invoice.total()?;
    }
    Ok(format_fixed(&total, MONEY_SCALE))
}

/// Which invoices of a month to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceView {
    /// The newest final revision when the month is closed, else a draft.
    Current,
    /// The final invoices of one revision.
    Revision(i32),
    /// Recomputed now (a draft), closed or not.
    Live,
}

/// The invoices of `period` (of `tenant` only, when given) as `view` asks: the
/// one function the CLI and the API read invoices through.
pub async fn month_invoices(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    tenant: Option<&str>,
    view: InvoiceView,
) -> Result<Vec<BilledInvoice>, QueryError> {
    let all = closings(location).await?;
    let revision = match view {
        InvoiceView::Revision(r) => Some(r),
        _ => None,
    };
    let found = find_closing(&all, period, revision);
    if let (Some(r), None) = (revision, found) {
        return Err(QueryError::InvalidInput(format!(
            "{period} has no closing of revision {r}"
        )));
    }
    match found {
        Some(closed) if view != InvoiceView::Live => {
            stored_invoices(location, closed, tenant).await
        }
        _ => {
            let previous = match find_closing(&all, period.prev(), None) {
                Some(closed) => Some(PreviousClose::load(location, closed).await?),
                None => None,
            };
            billed_invoices(snapshot, settings, period, tenant, previous.as_ref()).await
        }
    }
}
