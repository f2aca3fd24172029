//! DataFusion sessions over a lake snapshot.
//!
//! A [`LakeSession`] registers the tables queries see:
//! - `usage_events`: every accepted event, each `(tenant_id, event_id)` of a
//!   tenant-day once. A partition holding a single file needs no deduplication
//!   (the writer and compaction both guarantee it); in partitions with several
//!   files the first ingested copy of an event is kept (`ingested_at`, then
//!   `source`), exactly as compaction keeps it. Those partitions are read twice:
//!   once to find the ids present more than once (a hash aggregate), then to
//!   pass every other row through and rank only the copies.
//! - `rejected_events`: only in the all-tenant scope.
//!
//! In the tenant scope the tables are built from that tenant's files alone, so no
//! predicate, join or function in a query can read another tenant's rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use allot_schemas::config::MetricCatalog;
use allot_schemas::lake::LakeTable;
use allot_schemas::table_schema::{
    HOURLY_PARTITION_COLUMNS, REJECTED_PARTITION_COLUMNS, USAGE_PARTITION_COLUMNS,
    rejected_events_schema, usage_events_schema, usage_hourly_schema,
};
use arrow::array::{AsArray, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Date32Type, Field, Int64Type, Schema};
use chrono::NaiveDate;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::logical_expr::JoinType;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext, col, lit};
use url::Url;

use crate::error::QueryError;
use crate::lake::{LakeFile, LakeSnapshot, TableFiles, date_of_epoch_days, days_since_epoch};
use crate::provider::LakeFilesTable;
use crate::rollup::{PartitionKey, catalog_fingerprint, partition_bases};

/// Whose data a session may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant (finance, admin, the CLI).
    AllTenants,
    /// One tenant's files only.
    Tenant(String),
}

/// Resource limits of a session; `None` means unlimited.
#[derive(Debug, Clone, Default)]
pub struct SessionLimits {
    /// Memory that operators may reserve, in bytes; spilling to disk is disabled
    /// when set, so a query past it fails instead of filling the disk.
    pub memory_bytes: Option<usize>,
}

/// A DataFusion context with the lake's tables registered for one scope.
pub struct LakeSession {
    ctx: SessionContext,
    /// The `usage_events` files of the scope, and their store.
    usage: TableFiles,
    usage_url: ObjectStoreUrl,
    /// The rollups reports may use, once attached.
    rollups: Option<Rollups>,
}

/// The `usage_hourly` files and the partitions of the scope they are up to date for.
struct Rollups {
    url: ObjectStoreUrl,
    files: Vec<LakeFile>,
    current: BTreeMap<PartitionKey, i64>,
}

/// Names of the key columns of the rollup partitions joined with `usage_hourly`.
const WANTED_PREFIX: &str = "__allot_wanted_";

/// Name of the deduplicated events table.
pub const USAGE_EVENTS: &str = "usage_events";
/// Name of the rejected events table.
pub const REJECTED_EVENTS: &str = "rejected_events";

/// Column of the copy count and number used while deduplicating (never visible).
const COPY_COLUMN: &str = "__allot_copy";
/// Prefix of the key columns of repeated ids while deduplicating (never visible).
const REPEATED_PREFIX: &str = "__allot_repeated_";

impl LakeSession {
    /// A session over `snapshot` restricted to `scope`.
    pub fn new(
        snapshot: &LakeSnapshot,
        scope: &Scope,
        limits: &SessionLimits,
    ) -> Result<LakeSession, QueryError> {
        let snapshot = match scope {
            Scope::AllTenants => snapshot.clone(),
            Scope::Tenant(tenant) => snapshot.for_tenant(tenant),
        };
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = limits.memory_bytes {
            runtime = runtime
                .with_memory_limit(bytes, 1.0)
                .with_disk_manager_builder(
                    DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
                );
        }
        let runtime = runtime.build_arc().map_err(QueryError::engine)?;
        let mut config = SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
        // Lake files are one tenant-day each: small enough that page indexes and
        // bloom filters cost more to read than they save.
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.enable_page_index = false;
        parquet.bloom_filter_on_read = false;
        let ctx = SessionContext::new_with_config_rt(config, runtime);

        let usage_url = register_store(&ctx, &snapshot.usage)?;
        let usage = usage_events_frame(&ctx, &snapshot.usage, &usage_url)?;
        ctx.register_table(USAGE_EVENTS, usage.into_view())
            .map_err(QueryError::engine)?;
        if *scope == Scope::AllTenants {
            let rejected_url = register_store(&ctx, &snapshot.rejected)?;
            let rejected = LakeFilesTable::new(
                rejected_events_schema(),
                &REJECTED_PARTITION_COLUMNS,
                rejected_url,
                snapshot.rejected.files.clone(),
            );
            ctx.register_table(REJECTED_EVENTS, Arc::new(rejected))
                .map_err(QueryError::engine)?;
        }
        Ok(LakeSession {
            ctx,
            usage: snapshot.usage,
            usage_url,
            rollups: None,
        })
    }

    /// Lets the reports of this session read the rollups in `hourly` for every
    /// partition of the scope whose rollups were computed from its current files
    /// and from `catalog`'s gauge holds; the others stay raw.
    pub async fn attach_rollups(
        &mut self,
        hourly: &TableFiles,
        catalog: &MetricCatalog,
    ) -> Result<(), QueryError> {
        if hourly.files.is_empty() || self.usage.files.is_empty() {
            return Ok(());
        }
        let url = register_store(&self.ctx, hourly)?;
        let bases = partition_bases(&self.usage, catalog_fingerprint(catalog));
        let (first, last) = bases
            .keys()
            .map(|(_, day)| *day)
            .fold((NaiveDate::MAX, NaiveDate::MIN), |(lo, hi), d| {
                (lo.min(d), hi.max(d))
            });
        let files: Vec<LakeFile> = hourly
            .files
            .iter()
            .filter(|f| f.day >= first && f.day <= last)
            .cloned()
            .collect();
        let recorded = self
            .ctx
            .read_table(hourly_table(&url, files.clone()))
            .and_then(|f| f.aggregate(vec![col("tenant_id"), col("day"), col("basis")], Vec::new()))
            .map_err(QueryError::engine)?
            .collect()
            .await
            .map_err(QueryError::engine)?;
        let mut current = BTreeMap::new();
        for batch in recorded {
            let tenants = arrow::compute::cast(batch.column(0), &DataType::Utf8)
                .map_err(QueryError::engine)?;
            let tenants = tenants.as_string::<i32>();
            let days = arrow::compute::cast(batch.column(1), &DataType::Date32)
                .map_err(QueryError::engine)?;
            let days = days.as_primitive::<Date32Type>();
            let recorded_bases = arrow::compute::cast(batch.column(2), &DataType::Int64)
                .map_err(QueryError::engine)?;
            let recorded_bases = recorded_bases.as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                let key = (
                    tenants.value(row).to_string(),
                    date_of_epoch_days(days.value(row))?,
                );
                if bases.get(&key) == Some(&recorded_bases.value(row)) {
                    current.insert(key, recorded_bases.value(row));
                }
            }
        }
        self.rollups = Some(Rollups {
            url,
            files,
            current,
        });
        Ok(())
    }

    /// The partitions of the scope whose rollups are up to date, with their basis.
    pub fn current_rollups(&self) -> &BTreeMap<PartitionKey, i64> {
        static NONE: BTreeMap<PartitionKey, i64> = BTreeMap::new();
        self.rollups.as_ref().map_or(&NONE, |r| &r.current)
    }

    /// The deduplicated `usage_events` of the scope's partitions that `keep` selects.
    pub fn usage_events_where(
        &self,
        keep: impl Fn(&str, NaiveDate) -> bool,
    ) -> Result<DataFrame, QueryError> {
        let files = TableFiles {
            files: self
                .usage
                .files
                .iter()
                .filter(|f| f.tenant_id.as_deref().is_some_and(|t| keep(t, f.day)))
                .cloned()
                .collect(),
            ..self.usage.clone()
        };
        usage_events_frame(&self.ctx, &files, &self.usage_url)
    }

    /// The `usage_hourly` rows of `partitions` (each with its current basis), or
    /// `None` when there are none to read.
    pub fn rollup_rows(
        &self,
        partitions: &BTreeMap<PartitionKey, i64>,
    ) -> Result<Option<DataFrame>, QueryError> {
        let Some(rollups) = &self.rollups else {
            return Ok(None);
        };
        if partitions.is_empty() {
            return Ok(None);
        }
        let days: BTreeSet<NaiveDate> = partitions.keys().map(|(_, day)| *day).collect();
        let files: Vec<LakeFile> = rollups
            .files
            .iter()
            .filter(|f| days.contains(&f.day))
            .cloned()
            .collect();
        let key = ["tenant_id", "day", "basis"];
        let wanted_key: Vec<String> = key.iter().map(|c| format!("{WANTED_PREFIX}{c}")).collect();
        let wanted_schema = Arc::new(Schema::new(vec![
            Field::new(&wanted_key[0], DataType::Utf8, false),
            Field::new(&wanted_key[1], DataType::Date32, false),
            Field::new(&wanted_key[2], DataType::Int64, false),
        ]));
        let wanted = RecordBatch::try_new(
            wanted_schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    partitions.keys().map(|(tenant, _)| tenant.as_str()),
                )),
                Arc::new(Date32Array::from_iter_values(
                    partitions.keys().map(|(_, day)| days_since_epoch(*day)),
                )),
                Arc::new(Int64Array::from_iter_values(partitions.values().copied())),
            ],
        )
        .map_err(QueryError::engine)?;
        let wanted = self.ctx.read_batch(wanted).map_err(QueryError::engine)?;
        let wanted_key: Vec<&str> = wanted_key.iter().map(String::as_str).collect();
        let schema = usage_hourly_schema();
        self.ctx
            .read_table(hourly_table(&rollups.url, files))
            .and_then(|f| f.join(wanted, JoinType::LeftSemi, &key, &wanted_key, None))
            .and_then(|f| select_schema(f, &schema))
            .map(Some)
            .map_err(QueryError::engine)
    }

    /// The DataFusion context.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The deduplicated `usage_events` table as a DataFrame.
    pub async fn usage_events(&self) -> Result<DataFrame, QueryError> {
        self.ctx
            .table(USAGE_EVENTS)
            .await
            .map_err(QueryError::engine)
    }

    /// The `rejected_events` table (all-tenant sessions only).
    pub async fn rejected_events(&self) -> Result<DataFrame, QueryError> {
        self.ctx
            .table(REJECTED_EVENTS)
            .await
            .map_err(QueryError::engine)
    }
}

/// Keeps the columns of `schema`, in its order.
fn select_schema(frame: DataFrame, schema: &Schema) -> datafusion::error::Result<DataFrame> {
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    frame.select_columns(&columns)
}

/// Registers the table's object store under its own URL scheme and returns it.
fn register_store(ctx: &SessionContext, files: &TableFiles) -> Result<ObjectStoreUrl, QueryError> {
    let text = format!("allot-{}://lake/", files.table.dir_name().replace('_', "-"));
    let url = Url::parse(&text).map_err(|e| QueryError::Engine(e.to_string()))?;
    ctx.register_object_store(&url, files.store.clone());
    ObjectStoreUrl::parse(&text).map_err(QueryError::engine)
}

fn hourly_table(store: &ObjectStoreUrl, files: Vec<LakeFile>) -> Arc<LakeFilesTable> {
    Arc::new(LakeFilesTable::new(
        usage_hourly_schema(),
        &HOURLY_PARTITION_COLUMNS,
        store.clone(),
        files,
    ))
}

fn usage_table(store: &ObjectStoreUrl, files: Vec<LakeFile>) -> Arc<LakeFilesTable> {
    Arc::new(LakeFilesTable::new(
        usage_events_schema(),
        &USAGE_PARTITION_COLUMNS,
        store.clone(),
        files,
    ))
}

/// `usage_events` with each `(tenant_id, event_id)` of a tenant-day once.
fn usage_events_frame(
    ctx: &SessionContext,
    files: &TableFiles,
    store: &ObjectStoreUrl,
) -> Result<DataFrame, QueryError> {
    debug_assert_eq!(files.table, LakeTable::UsageEvents);
    let (single, shared) = files.split_single_and_shared();
    let single_frame = ctx
        .read_table(usage_table(store, single))
        .map_err(QueryError::engine)?;
    if shared.is_empty() {
        return Ok(single_frame);
    }
    let schema = usage_events_schema();
    // Ids present more than once in a shared partition: a hash aggregate, cheap
    // when (as nearly always) there are none.
    let key = ["tenant_id", "day", "event_id"];
    let shared_frame = ctx
        .read_table(usage_table(store, shared))
        .map_err(QueryError::engine)?;
    let repeated_key: Vec<String> = key
        .iter()
        .map(|c| format!("{REPEATED_PREFIX}{c}"))
        .collect();
    let repeated_key: Vec<&str> = repeated_key.iter().map(String::as_str).collect();
    let repeated = shared_frame
        .clone()
        .aggregate(
            key.iter().map(|c| col(*c)).collect(),
            vec![count(lit(1)).alias(COPY_COLUMN)],
        )
        .and_then(|f| f.filter(col(COPY_COLUMN).gt(lit(1i64))))
        .and_then(|f| {
            f.select(
                key.iter()
                    .zip(&repeated_key)
                    .map(|(c, alias)| col(*c).alias(*alias))
                    .collect::<Vec<_>>(),
            )
        })
        .map_err(QueryError::engine)?;
    let once = shared_frame
        .clone()
        .join(
            repeated.clone(),
            JoinType::LeftAnti,
            &key,
            &repeated_key,
            None,
        )
        .map_err(QueryError::engine)?;
    let copy_number = row_number()
        .partition_by(key.iter().map(|c| col(*c)).collect())
        .order_by(vec![
            col("ingested_at").sort(true, false),
            col("source").sort(true, false),
        ])
        .build()
        .map_err(QueryError::engine)?
        .alias(COPY_COLUMN);
    let first_copies = shared_frame
        .join(repeated, JoinType::LeftSemi, &key, &repeated_key, None)
        .and_then(|frame| frame.window(vec![copy_number]))
        .and_then(|frame| frame.filter(col(COPY_COLUMN).eq(lit(1u64))))
        .and_then(|frame| select_schema(frame, &schema))
        .and_then(|frame| once.union(frame))
        .map_err(QueryError::engine)?;
    single_frame.union(first_copies).map_err(QueryError::engine)
}
