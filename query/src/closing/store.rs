//! Closings as stored: the `closings`, `invoices` and `allocations` rows of a
//! close read back (the commit writes them).

use std::collections::BTreeMap;

use allot_lake::snapshot::read_small_table;
use allot_schemas::config::Config;
use allot_schemas::layout::{LakeLocation, LakeTable};
use allot_schemas::table_schema::{ALLOCATION_CSV_COLUMNS, INVOICE_CSV_COLUMNS};
use arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, Int64Type};
use arrow_schema::DataType;

use super::certificate::CertificateDay;
use crate::billed::{BilledInvoice, InvoiceStatus};
use crate::error::QueryError;
use crate::period::Period;
use crate::reports::ReportSettings;

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
        let mut settings = ReportSettings::new(config);
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
            // A column the row's file was written without
            // (`INVOICE_COLUMNS_ADDED_LATER`) reads as null: the empty text.
            entry.2.push((
                rows.value(row),
                columns
                    .iter()
                    .map(|c| optional(c, row).unwrap_or_default())
                    .collect(),
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
