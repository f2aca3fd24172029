//! The lake as the query engine sees it: the active files of each Delta table at
//! its latest version, with their partition values.
//!
//! A CLI command starts from a fresh [`LakeSnapshot`]; the server keeps one in
//! memory and brings it forward with [`crate::follow`]. Either way a snapshot is
//! one set of table versions, never mixed. Files are read through the table's own object store (rooted
//! at the table), so paths stay relative to the table and a local directory and
//! an `s3://` lake are read alike.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use allot_schemas::layout::{DedupTags, LakeLocation, LakeTable, RollupRows};
use allot_schemas::table_schema::table_schema;
use allot_schemas::time::{date_of_epoch_days, days_since_epoch, is_supported_event_day};
use arrow::array::{RecordBatch, new_null_array};
use arrow::datatypes::{Schema, SchemaRef};
use chrono::NaiveDate;
use datafusion::common::ScalarValue;
use deltalake::logstore::object_store::memory::InMemory;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt};
use deltalake::{DeltaTable, DeltaTableBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::LakeError;

/// A builder for one table of the lake, with the lake's object-store settings:
/// the one way allot opens a Delta table, so that every command reaches an
/// `s3://` lake with the same endpoint and credentials.
pub fn table_builder(
    location: &LakeLocation,
    table: LakeTable,
) -> deltalake::DeltaResult<DeltaTableBuilder> {
    Ok(DeltaTableBuilder::from_url(location.table_url(table))?
        .with_storage_options(location.storage().to_map()))
}

/// One active data file of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeFile {
    /// Path relative to the table root, as an object-store path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The tenant of a `usage_events` file (`None` for `rejected_events`).
    pub tenant_id: Option<String>,
    /// The UTC day of the file's partition.
    pub day: NaiveDate,
    /// The earliest and latest `ingested_at` of its rows in microseconds, from the
    /// Delta statistics (`i64::MIN` and `i64::MAX` when the log has none): rows
    /// ingested later than all of a file's rows never make one of them a duplicate.
    pub ingested: (i64, i64),
    /// Its dedup tags: the version that added its rows, and the version its
    /// writer checked them against (no row of a file of that version or earlier
    /// beats one of them).
    pub dedup: DedupTags,
    /// Which rows a `usage_hourly` file holds (its tag; any for the other tables).
    pub rows: RollupRows,
}

impl LakeFile {
    /// The partition values in the order of the table's partition columns.
    pub fn partition_values(&self) -> Vec<ScalarValue> {
        let day = ScalarValue::Date32(Some(days_since_epoch(self.day)));
        match &self.tenant_id {
            Some(tenant) => vec![ScalarValue::Utf8(Some(tenant.clone())), day],
            None => vec![day],
        }
    }
}

/// The date of a stored `day` value (Arrow `Date32`), or an error naming it.
pub fn partition_date(days: i32) -> Result<NaiveDate, LakeError> {
    date_of_epoch_days(days).ok_or(LakeError::DayOutOfRange(days))
}

/// The active files of one table at one version.
#[derive(Clone)]
pub struct TableFiles {
    /// Which table.
    pub table: LakeTable,
    /// The table version read (`None` when the table does not exist yet).
    pub version: Option<u64>,
    /// The table's object store, rooted at the table directory.
    pub store: Arc<dyn ObjectStore>,
    /// Its active files, ordered by partition then path.
    pub files: Vec<LakeFile>,
}

impl std::fmt::Debug for TableFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableFiles")
            .field("table", &self.table)
            .field("version", &self.version)
            .field("files", &self.files.len())
            .finish()
    }
}

impl TableFiles {
    /// Only the files of `tenant_id` (for `usage_events`).
    pub fn for_tenant(&self, tenant_id: &str) -> TableFiles {
        TableFiles {
            files: self.files_of(tenant_id).to_vec(),
            table: self.table,
            version: self.version,
            store: Arc::clone(&self.store),
        }
    }

    /// The files of `tenant_id`, found by bisection (files are ordered by
    /// tenant first): a request's tenant check must not walk every file.
    pub fn files_of(&self, tenant_id: &str) -> &[LakeFile] {
        let tenant = Some(tenant_id);
        let start = self
            .files
            .partition_point(|f| f.tenant_id.as_deref() < tenant);
        let end = start + self.files[start..].partition_point(|f| f.tenant_id.as_deref() == tenant);
        &self.files[start..end]
    }

    /// Per tenant, a hash of its files (paths and sizes): what changes when a
    /// commit adds, rewrites or removes files of that tenant, and only then.
    pub fn fingerprints_by_tenant(&self) -> HashMap<String, u64> {
        let mut hashers: HashMap<String, DefaultHasher> = HashMap::new();
        for file in &self.files {
            if let Some(tenant) = &file.tenant_id {
                let hasher = hashers.entry(tenant.clone()).or_default();
                file.path.hash(hasher);
                file.size.hash(hasher);
            }
        }
        hashers
            .into_iter()
            .map(|(tenant, hasher)| (tenant, hasher.finish()))
            .collect()
    }

    /// The distinct tenants that have files, ascending.
    pub fn tenants(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .filter_map(|f| f.tenant_id.clone())
            .collect()
    }
}

/// The tables of a lake, each at its latest version.
#[derive(Debug, Clone)]
pub struct LakeSnapshot {
    /// `usage_events`.
    pub usage: TableFiles,
    /// `rejected_events`.
    pub rejected: TableFiles,
    /// `usage_hourly`, the rollups (no files until compaction has run).
    pub hourly: TableFiles,
    /// The closed months' `closings` and `invoices` rows, read whole.
    pub closed: Arc<ClosedBooks>,
}

/// The rows of `closings` and `invoices`, read whole (a few rows per tenant
/// per closed month), for the SQL tables of the same names. `closings` is read
/// first: a close writes its invoices before its closings row, so every
/// closing read here has all its invoice rows.
#[derive(Debug, Clone, Default)]
pub struct ClosedBooks {
    /// `closings`, at the version read.
    pub closings: Vec<RecordBatch>,
    /// `invoices`, read after `closings` (it may hold rows of a close whose
    /// closings row came later: they belong to no closing read here).
    pub invoices: Vec<RecordBatch>,
}

impl ClosedBooks {
    /// Reads both tables at their latest versions, `closings` first.
    pub async fn load(location: &LakeLocation) -> Result<ClosedBooks, LakeError> {
        let closings = read_small_table(location, LakeTable::Closings).await?;
        let invoices = read_small_table(location, LakeTable::Invoices).await?;
        Ok(ClosedBooks { closings, invoices })
    }
}

impl LakeSnapshot {
    /// Reads the latest version of both tables. A lake without any table yet is
    /// an error (nothing was ever ingested there); a missing `rejected_events`
    /// alone reads as empty.
    pub async fn load(location: &LakeLocation) -> Result<LakeSnapshot, LakeError> {
        LakeSnapshot::load_at(location, None).await
    }

    /// Like [`LakeSnapshot::load`], with `usage_events` as of `usage_version`
    /// (Delta time travel) when given. Rollups are read at their latest version;
    /// reports over an older version must not attach them (`use_rollups` off).
    pub async fn load_at(
        location: &LakeLocation,
        usage_version: Option<u64>,
    ) -> Result<LakeSnapshot, LakeError> {
        let usage = load_table_at(location, LakeTable::UsageEvents, usage_version).await?;
        if usage.version.is_none() {
            return Err(LakeError::NoLake);
        }
        let rejected = load_table(location, LakeTable::RejectedEvents).await?;
        let hourly = load_table(location, LakeTable::UsageHourly).await?;
        let closed = Arc::new(ClosedBooks::load(location).await?);
        Ok(LakeSnapshot {
            usage,
            rejected,
            hourly,
            closed,
        })
    }

    /// The same snapshot restricted to one tenant: its usage files only, and no
    /// rejected events (their table is not partitioned by tenant).
    pub fn for_tenant(&self, tenant_id: &str) -> LakeSnapshot {
        LakeSnapshot {
            usage: self.usage.for_tenant(tenant_id),
            rejected: TableFiles {
                files: Vec::new(),
                ..self.rejected.clone()
            },
            // Rollup files hold every tenant; sessions read only the rows of the
            // tenant's own partitions from them (`LakeSession::rollup_rows`).
            hourly: self.hourly.clone(),
            // Sessions keep only the tenant's own invoice rows
            // (`LakeSession::register_analyst_tables`).
            closed: Arc::clone(&self.closed),
        }
    }

    /// The same snapshot with the usage files of `tenants` only; the rejected
    /// events stay whole. Every report over it gives those tenants' figures as
    /// over the whole lake, since a tenant's events are deduplicated against
    /// its own copies only.
    pub fn for_tenants(&self, tenants: &BTreeSet<String>) -> LakeSnapshot {
        LakeSnapshot {
            usage: TableFiles {
                files: self
                    .usage
                    .files
                    .iter()
                    .filter(|f| f.tenant_id.as_ref().is_some_and(|t| tenants.contains(t)))
                    .cloned()
                    .collect(),
                ..self.usage.clone()
            },
            rejected: self.rejected.clone(),
            hourly: self.hourly.clone(),
            closed: Arc::clone(&self.closed),
        }
    }
}

async fn load_table(location: &LakeLocation, table: LakeTable) -> Result<TableFiles, LakeError> {
    load_table_at(location, table, None).await
}

/// Every row of a small unpartitioned table (`invoices`, `allocations`,
/// `closings`, `alerts`) at its latest version, read whole, files in path
/// order and each file's rows in order; no rows when it does not exist yet.
pub async fn read_small_table(
    location: &LakeLocation,
    table: LakeTable,
) -> Result<Vec<RecordBatch>, LakeError> {
    let delta = match open_table(location, table, None).await? {
        OpenedTable::Found(delta) => delta,
        OpenedTable::Missing(_) => return Ok(Vec::new()),
    };
    let mut paths: Vec<String> = active_paths_of(&delta, table)?;
    paths.sort();
    read_table_files(&delta, table, &paths).await
}

/// The active files of `delta` (`table`), as object-store paths.
pub(crate) fn active_paths_of(
    delta: &DeltaTable,
    table: LakeTable,
) -> Result<Vec<String>, LakeError> {
    let snapshot = delta.snapshot().map_err(|e| LakeError::Unreadable {
        table: table.dir_name(),
        message: e.to_string(),
    })?;
    Ok(snapshot
        .log_data()
        .iter()
        .map(|file| file.object_store_path().to_string())
        .collect())
}

/// The rows of the files `paths` of `delta` (`table`), in the order given,
/// with the columns the table gained since a file was written as nulls.
pub(crate) async fn read_table_files(
    delta: &DeltaTable,
    table: LakeTable,
    paths: &[String],
) -> Result<Vec<RecordBatch>, LakeError> {
    let lake_error = |message: String| LakeError::Unreadable {
        table: table.dir_name(),
        message,
    };
    let (schema, _) = table_schema(table);
    let store = delta.log_store().object_store(None);
    let mut batches = Vec::new();
    for path in paths {
        let bytes = store
            .get(&deltalake::Path::from(path.as_str()))
            .await
            .map_err(|e| lake_error(e.to_string()))?
            .bytes()
            .await
            .map_err(|e| lake_error(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|builder| builder.build())
            .map_err(|e| lake_error(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| lake_error(e.to_string()))?;
            batches.push(with_added_columns(&batch, &schema).map_err(lake_error)?);
        }
    }
    Ok(batches)
}

/// `batch`, a file's rows, with the nullable columns of `schema` it lacks (the
/// file was written before they were added to the table) as nulls.
fn with_added_columns(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    if schema
        .fields()
        .iter()
        .all(|f| batch.column_by_name(f.name()).is_some())
    {
        return Ok(batch.clone());
    }
    let mut fields = batch.schema().fields().to_vec();
    let mut columns = batch.columns().to_vec();
    for field in schema.fields() {
        if batch.column_by_name(field.name()).is_some() {
            continue;
        }
        if !field.is_nullable() {
            return Err(format!("column {} is missing", field.name()));
        }
        fields.push(field.clone());
        columns.push(new_null_array(field.data_type(), batch.num_rows()));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

async fn load_table_at(
    location: &LakeLocation,
    table: LakeTable,
    version: Option<u64>,
) -> Result<TableFiles, LakeError> {
    match open_table(location, table, version).await? {
        OpenedTable::Found(delta) => table_files(table, &delta),
        OpenedTable::Missing(store) => Ok(TableFiles::missing(table, store)),
    }
}

/// A table opened at a version, or the store where it does not exist yet.
pub(crate) enum OpenedTable {
    /// The loaded table.
    Found(DeltaTable),
    /// No table yet; the store it would be read through.
    Missing(Arc<dyn ObjectStore>),
}

/// Opens `table` at `version` (its latest when `None`), from its last
/// checkpoint.
pub(crate) async fn open_table(
    location: &LakeLocation,
    table: LakeTable,
    version: Option<u64>,
) -> Result<OpenedTable, LakeError> {
    if let Some(dir) = location
        .local_path()
        .map(|root| root.join(table.dir_name()))
        && !dir.is_dir()
    {
        return Ok(OpenedTable::Missing(Arc::new(InMemory::new())));
    }
    let mut delta: DeltaTable = table_builder(location, table)
        .and_then(|builder| builder.build())
        .map_err(|e| unreadable(table, e))?;
    let loaded = match version {
        Some(version) => delta.load_version(version).await,
        None => delta.load().await,
    };
    match loaded {
        Ok(()) => Ok(OpenedTable::Found(delta)),
        Err(deltalake::DeltaTableError::NotATable(_)) => {
            Ok(OpenedTable::Missing(delta.log_store().object_store(None)))
        }
        Err(e) => Err(unreadable(table, e)),
    }
}

/// The error of a table Delta cannot read.
pub(crate) fn unreadable(table: LakeTable, e: deltalake::DeltaTableError) -> LakeError {
    LakeError::Unreadable {
        table: table.dir_name(),
        message: e.to_string(),
    }
}

impl TableFiles {
    /// A table that does not exist yet: no version, no files.
    pub(crate) fn missing(table: LakeTable, store: Arc<dyn ObjectStore>) -> TableFiles {
        TableFiles {
            table,
            version: None,
            store,
            files: Vec::new(),
        }
    }
}

/// The active files of a loaded table, at the version it was loaded at.
pub(crate) fn table_files(table: LakeTable, delta: &DeltaTable) -> Result<TableFiles, LakeError> {
    let store = delta.log_store().object_store(None);
    let snapshot = delta.snapshot().map_err(|e| unreadable(table, e))?;
    let mut files = Vec::new();
    for file in snapshot.log_data().iter() {
        // Delta-rs offers a file's tags only through its Add action, which also
        // carries its partition values and statistics: each is copied once.
        #[allow(deprecated)]
        let add = matches!(table, LakeTable::UsageEvents | LakeTable::UsageHourly)
            .then(|| file.add_action());
        let values = match &add {
            Some(add) => add.partition_values.clone(),
            None => file.partition_values_map(),
        };
        let day = values
            .get("day")
            .cloned()
            .flatten()
            .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok());
        let Some(day) = day else {
            return Err(LakeError::Unreadable {
                table: table.dir_name(),
                message: "a data file has no valid `day` partition value".to_string(),
            });
        };
        if !is_supported_event_day(day) {
            // Rows stored before ingest refused their `ts`
            // (docs/reference.md#event-format): no report can ask about them and the query
            // engine cannot hold them, so no reader sees them (compaction skips and reports
            // them, an erasure still removes them).
            continue;
        }
        let tenant_id = match table {
            LakeTable::UsageEvents => match values.get("tenant_id").cloned().flatten() {
                Some(tenant) => Some(tenant),
                None => {
                    return Err(LakeError::Unreadable {
                        table: table.dir_name(),
                        message: "a data file has no `tenant_id` partition value".to_string(),
                    });
                }
            },
            _ => None,
        };
        // `usage_events` only: the other tables' files are read whole.
        let (ingested, dedup) = match &add {
            Some(add) if table == LakeTable::UsageEvents => {
                let tags = DedupTags::read(add.tags.as_ref());
                // The tag spares parsing the statistics' JSON.
                let ingested = tags.ingested.unwrap_or_else(|| {
                    add.stats
                        .as_deref()
                        .map_or((i64::MIN, i64::MAX), ingested_range)
                });
                (ingested, tags)
            }
            _ => ((i64::MIN, i64::MAX), DedupTags::default()),
        };
        let rows = match &add {
            Some(add) if table == LakeTable::UsageHourly => RollupRows::read(add.tags.as_ref()),
            _ => RollupRows::Any,
        };
        files.push(LakeFile {
            path: file.object_store_path().to_string(),
            size: u64::try_from(file.size()).unwrap_or(0),
            tenant_id,
            day,
            ingested,
            dedup,
            rows,
        });
    }
    files.sort_by(|a, b| (&a.tenant_id, a.day, &a.path).cmp(&(&b.tenant_id, b.day, &b.path)));
    Ok(TableFiles {
        table,
        version: delta.version(),
        store,
        files,
    })
}

/// The `ingested_at` bounds in a Delta `stats` text, widened to the unknown
/// bound (`i64::MIN`, `i64::MAX`) where absent. Delta writes timestamps with
/// millisecond precision, so the minimum is floored and the maximum ceiled to the
/// millisecond: the range always contains every row's value. Scanned rather than
/// parsed: a report loads tens of thousands of these.
fn ingested_range(stats: &str) -> (i64, i64) {
    let sections = ["\"minValues\"", "\"maxValues\"", "\"nullCount\""];
    let bound = |section: &str| -> Option<i64> {
        let start = stats.find(section)? + section.len();
        let rest = &stats[start..];
        // The section ends where the next one starts.
        let end = sections
            .iter()
            .filter_map(|s| rest.find(s))
            .min()
            .unwrap_or(rest.len());
        let rest = &rest[..end];
        let field = "\"ingested_at\":\"";
        let text = &rest[rest.find(field)? + field.len()..];
        let text = &text[..text.find('"')?];
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_micros())
    };
    let min = bound(sections[0]).map_or(i64::MIN, |t| t.div_euclid(1000) * 1000);
    let max = bound(sections[1]).map_or(i64::MAX, |t| {
        t.div_euclid(1000).saturating_mul(1000).saturating_add(999)
    });
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_files_are_found_by_bisection() {
        let file = |tenant: &str, path: &str| LakeFile {
            path: path.to_string(),
            size: 1,
            tenant_id: Some(tenant.to_string()),
            day: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            ingested: (i64::MIN, i64::MAX),
            dedup: DedupTags::default(),
            rows: RollupRows::Any,
        };
        let files = TableFiles {
            files: vec![
                file("a", "1"),
                file("b", "2"),
                file("b", "3"),
                file("c", "4"),
            ],
            ..TableFiles::missing(LakeTable::UsageEvents, Arc::new(InMemory::new()))
        };
        let paths = |tenant| {
            let found: Vec<&str> = files
                .files_of(tenant)
                .iter()
                .map(|f| f.path.as_str())
                .collect();
            found
        };
        assert_eq!(paths("a"), ["1"]);
        assert_eq!(paths("b"), ["2", "3"]);
        assert_eq!(paths("c"), ["4"]);
        assert!(paths("bb").is_empty() && paths("0").is_empty() && paths("d").is_empty());
        assert_eq!(files.for_tenant("b").files.len(), 2);
    }

    #[test]
    fn ingested_bounds_come_from_the_delta_stats() {
        let stats = r#"{"numRecords":2,"minValues":{"event_id":"a","ingested_at":"2026-01-05T10:00:00.123Z"},"maxValues":{"ingested_at":"2026-01-05T10:00:01.5Z","event_id":"b"},"nullCount":{"ingested_at":0}}"#;
        let base = chrono::DateTime::parse_from_rfc3339("2026-01-05T10:00:00Z")
            .unwrap()
            .timestamp_micros();
        assert_eq!(ingested_range(stats), (base + 123_000, base + 1_500_999));
        let no_max = r#"{"numRecords":2,"minValues":{"ingested_at":"2026-01-05T10:00:00Z"},"maxValues":{},"nullCount":{"ingested_at":0}}"#;
        assert_eq!(ingested_range(no_max), (base, i64::MAX));
        assert_eq!(ingested_range("{}"), (i64::MIN, i64::MAX));
    }
}
