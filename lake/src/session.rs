//! DataFusion sessions over a lake snapshot.
//!
//! A [`LakeSession`] registers the tables queries see:
//! - `usage_events`: every accepted event that counts under the dedup window
//!   (see [`crate::dedup`]): of the copies of a `(tenant_id, event_id)` whose
//!   `ts` are within the window of each other, the first ingested. Partitions
//!   that no earlier copy can reach are read as they are; the others are joined
//!   with the copies of their repeated ids, found among the tenant's files of
//!   the days within the window.
//! - `rejected_events`: only in the all-tenant scope.
//!
//! In the tenant scope the tables are built from that tenant's files alone, so no
//! predicate, join or function in a query can read another tenant's rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use allot_schemas::config::{MatchClasses, MetricCatalog};
use allot_schemas::layout::{RollupRows, TenantDay};
use allot_schemas::table_schema::{
    HOURLY_PARTITION_COLUMNS, REJECTED_PARTITION_COLUMNS, rejected_events_schema,
    usage_hourly_schema,
};
use allot_schemas::time::days_since_epoch;
use arrow::array::{AsArray, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Date32Type, Field, Int64Type, Schema};
use chrono::NaiveDate;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::JoinType;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext, col, lit};
use url::Url;

use crate::dedup::{DedupWindow, Neighbourhoods, Outcome, checked_rows, usage_table};
use crate::error::LakeError;
use crate::provider::LakeFilesTable;
use crate::rollup::{catalog_fingerprint, partition_bases_where};
use crate::snapshot::{LakeFile, LakeSnapshot, TableFiles, partition_date};

/// Whose data a session may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant (finance, admin, the CLI).
    AllTenants,
    /// One tenant's files only.
    Tenant(String),
}

/// Resource limits of a session (`None` means unlimited) and the dedup window
/// its `usage_events` applies.
#[derive(Debug, Clone, Default)]
pub struct SessionLimits {
    /// Memory that operators may reserve, in bytes; spilling to disk is disabled
    /// when set, so a query past it fails instead of filling the disk.
    pub memory_bytes: Option<usize>,
    /// The dedup window (`ingest.dedup_window`).
    pub dedup_window: DedupWindow,
}

/// A DataFusion context with the lake's tables registered for one scope.
pub struct LakeSession {
    ctx: SessionContext,
    /// The `usage_events` files of the scope, and their store.
    usage: TableFiles,
    usage_url: ObjectStoreUrl,
    dedup_window: DedupWindow,
    /// The rollups reports may use, once attached.
    rollups: Option<Rollups>,
}

/// The `usage_hourly` files, and the partitions of the scope found so far to
/// have rollups up to date. Partitions are checked a span of days at a time, as
/// reads ask for them: a report over a month of a year's lake checks (and reads
/// the `basis` of) that month's rollups only.
struct Rollups {
    url: ObjectStoreUrl,
    files: Vec<LakeFile>,
    fingerprint: u64,
    /// The first and last day of the scope's `usage_events` partitions.
    lake_days: (NaiveDate, NaiveDate),
    checked: Mutex<CheckedRollups>,
    /// The classes the current rollups sum each dimensional counter by.
    classes: BTreeMap<String, MatchClasses>,
}

impl Rollups {
    /// What was checked so far. A panic while the lock was held left it whole
    /// (each update is one `extend` of complete results), so it is used as is.
    fn lock_checked(&self) -> std::sync::MutexGuard<'_, CheckedRollups> {
        self.checked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The days from `first` to `last`, both included.
fn days_between(first: NaiveDate, last: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    first.iter_days().take_while(move |day| *day <= last)
}

/// What [`LakeSession::current_rollups_between`] has found so far.
#[derive(Default)]
struct CheckedRollups {
    /// The days whose partitions were checked.
    days: BTreeSet<NaiveDate>,
    /// Of their partitions, those whose rollups are up to date, with their basis.
    current: BTreeMap<TenantDay, i64>,
}

/// Names of the key columns of the rollup partitions joined with `usage_hourly`.
const WANTED_PREFIX: &str = "__allot_wanted_";

/// Name of the deduplicated events table.
pub const USAGE_EVENTS: &str = "usage_events";
/// Name of the rejected events table.
pub const REJECTED_EVENTS: &str = "rejected_events";

/// The catalog a session's tables are in, as SQL may name it
/// (`allot.public.usage_events`) and the wire protocols list it.
pub const SQL_CATALOG: &str = "allot";

/// The schema a session's tables are in (`public.usage_events`).
pub const SQL_SCHEMA: &str = "public";

impl LakeSession {
    /// A session over `snapshot` restricted to `scope`.
    pub fn new(
        snapshot: &LakeSnapshot,
        scope: &Scope,
        limits: &SessionLimits,
    ) -> Result<LakeSession, LakeError> {
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
        let runtime = runtime.build_arc().map_err(LakeError::from)?;
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(SQL_CATALOG, SQL_SCHEMA)
            .with_information_schema(false)
            .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
        // Lake files are one tenant-day each: small enough that page indexes and
        // bloom filters cost more to read than they save.
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.enable_page_index = false;
        parquet.bloom_filter_on_read = false;
        let ctx = SessionContext::new_with_config_rt(config, runtime);

        let usage_url = register_store(&ctx, &snapshot.usage)?;
        let usage = usage_events_frame(
            &ctx,
            &snapshot.usage.files,
            &usage_url,
            limits.dedup_window,
            |_, _| true,
        )?;
        ctx.register_table(USAGE_EVENTS, usage.into_view())
            .map_err(LakeError::from)?;
        if *scope == Scope::AllTenants {
            let rejected_url = register_store(&ctx, &snapshot.rejected)?;
            let rejected = LakeFilesTable::new(
                rejected_events_schema(),
                &REJECTED_PARTITION_COLUMNS,
                rejected_url,
                snapshot.rejected.files.clone(),
            );
            ctx.register_table(REJECTED_EVENTS, Arc::new(rejected))
                .map_err(LakeError::from)?;
        }
        Ok(LakeSession {
            ctx,
            usage: snapshot.usage,
            usage_url,
            dedup_window: limits.dedup_window,
            rollups: None,
        })
    }

    /// Lets the reports of this session read the rollups in `hourly` of every
    /// partition of the scope whose rollups were computed from its current files
    /// and from `catalog`'s gauge holds and meters; the others stay raw. Nothing
    /// is read here: [`LakeSession::current_rollups_between`] checks the
    /// partitions of the days a read asks for.
    pub fn attach_rollups(
        &mut self,
        hourly: &TableFiles,
        catalog: &MetricCatalog,
    ) -> Result<(), LakeError> {
        let (Some(first), Some(last)) = (
            self.usage.files.iter().map(|f| f.day).min(),
            self.usage.files.iter().map(|f| f.day).max(),
        ) else {
            return Ok(());
        };
        if hourly.files.is_empty() {
            return Ok(());
        }
        let url = register_store(&self.ctx, hourly)?;
        self.rollups = Some(Rollups {
            url,
            files: hourly.files.clone(),
            fingerprint: catalog_fingerprint(catalog),
            lake_days: (first, last),
            checked: Mutex::new(CheckedRollups::default()),
            classes: catalog.dimensional_counters().clone(),
        });
        Ok(())
    }

    /// The classes the current rollups sum counter `metric` by
    /// (`usage_hourly.dimension_values`), when its rates match on dimensions.
    pub fn rollup_classes(&self, metric: &str) -> Option<&MatchClasses> {
        self.rollups.as_ref()?.classes.get(metric)
    }

    /// The partitions of the scope whose rollups are up to date, with their
    /// basis: every day's ([`LakeSession::current_rollups_between`]).
    pub async fn current_rollups(&self) -> Result<BTreeMap<TenantDay, i64>, LakeError> {
        self.current_rollups_between(NaiveDate::MIN, NaiveDate::MAX)
            .await
    }

    /// The partitions of the scope from day `first` to day `last` (both
    /// included) whose rollups are up to date, with their basis (none when no
    /// rollups are attached). Only the rollups of those days are read, and each
    /// day is checked once per session.
    pub async fn current_rollups_between(
        &self,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Result<BTreeMap<TenantDay, i64>, LakeError> {
        let Some(rollups) = &self.rollups else {
            return Ok(BTreeMap::new());
        };
        let (first, last) = (
            first.max(rollups.lake_days.0),
            last.min(rollups.lake_days.1),
        );
        if first > last {
            return Ok(BTreeMap::new());
        }
        let unchecked = {
            let checked = rollups.lock_checked();
            let mut missing = days_between(first, last).filter(|d| !checked.days.contains(d));
            let missing_first = missing.next();
            missing_first.map(|from| (from, missing.last().unwrap_or(from)))
        };
        if let Some((from, to)) = unchecked {
            let found = self.check_rollups(rollups, from, to).await?;
            let mut checked = rollups.lock_checked();
            checked.days.extend(days_between(from, to));
            checked.current.extend(found);
        }
        Ok(rollups
            .lock_checked()
            .current
            .iter()
            .filter(|(key, _)| key.day >= first && key.day <= last)
            .map(|(key, basis)| (key.clone(), *basis))
            .collect())
    }

    /// The partitions from day `first` to day `last` whose rollups in
    /// `rollups` were computed from their current basis: only those days'
    /// rollup files are read (the table is partitioned by day), and only
    /// their partitions' bases computed.
    async fn check_rollups(
        &self,
        rollups: &Rollups,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Result<BTreeMap<TenantDay, i64>, LakeError> {
        let bases = partition_bases_where(
            &self.usage.files,
            rollups.fingerprint,
            self.dedup_window,
            |_, day| day >= first && day <= last,
        );
        // Every partition with rollups has hourly rows (its class rows come
        // from counter events, which have them too), each stamped with the
        // basis of all its rows.
        let files: Vec<LakeFile> = rollups
            .files
            .iter()
            .filter(|f| f.day >= first && f.day <= last && f.rows.may_hold(RollupRows::Hourly))
            .cloned()
            .collect();
        let mut current = BTreeMap::new();
        if bases.is_empty() || files.is_empty() {
            return Ok(current);
        }
        let mut recorded = self
            .ctx
            .read_table(hourly_table(&rollups.url, files))
            .map_err(LakeError::from)?;
        // One tenant's partitions (a tenant's session): its rows alone.
        let first_tenant = bases.first_key_value().map(|(key, _)| &key.tenant_id);
        let last_tenant = bases.last_key_value().map(|(key, _)| &key.tenant_id);
        if let Some(tenant) = first_tenant
            && last_tenant == Some(tenant)
        {
            recorded = recorded
                .filter(col("tenant_id").eq(lit(tenant.as_str())))
                .map_err(LakeError::from)?;
        }
        let recorded = recorded
            .aggregate(vec![col("tenant_id"), col("day"), col("basis")], Vec::new())
            .map_err(LakeError::from)?
            .collect()
            .await
            .map_err(LakeError::from)?;
        for batch in recorded {
            let tenants =
                arrow::compute::cast(batch.column(0), &DataType::Utf8).map_err(LakeError::from)?;
            let tenants = tenants.as_string::<i32>();
            let days = arrow::compute::cast(batch.column(1), &DataType::Date32)
                .map_err(LakeError::from)?;
            let days = days.as_primitive::<Date32Type>();
            let recorded_bases =
                arrow::compute::cast(batch.column(2), &DataType::Int64).map_err(LakeError::from)?;
            let recorded_bases = recorded_bases.as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                let key = TenantDay::new(tenants.value(row), partition_date(days.value(row))?);
                if bases.get(&key) == Some(&recorded_bases.value(row)) {
                    current.insert(key, recorded_bases.value(row));
                }
            }
        }
        Ok(current)
    }

    /// The deduplicated `usage_events` of the scope's partitions that `keep`
    /// selects (judged against every copy in the scope).
    pub fn usage_events_where(
        &self,
        keep: impl Fn(&str, NaiveDate) -> bool,
    ) -> Result<DataFrame, LakeError> {
        usage_events_frame(
            &self.ctx,
            &self.usage.files,
            &self.usage_url,
            self.dedup_window,
            keep,
        )
    }

    /// The rows of the partitions that `keep` selects which do not count: a copy
    /// ingested earlier is within the window (what compaction removes).
    pub fn beaten_events_where(
        &self,
        keep: impl Fn(&str, NaiveDate) -> bool,
    ) -> Result<Option<DataFrame>, LakeError> {
        let near = Neighbourhoods::of(&self.usage.files, self.dedup_window, keep);
        if near.checked.is_empty() {
            return Ok(None);
        }
        checked_rows(
            &self.ctx,
            &self.usage_url,
            &near,
            self.dedup_window,
            Outcome::Beaten,
        )
        .map(Some)
    }

    /// The dedup window of this session.
    pub fn dedup_window(&self) -> DedupWindow {
        self.dedup_window
    }

    /// The `usage_hourly` rows of `partitions` (each with its current basis)
    /// from the files that may hold `rows`, or `None` when there are none to
    /// read.
    pub fn rollup_rows(
        &self,
        partitions: &BTreeMap<TenantDay, i64>,
        rows: RollupRows,
    ) -> Result<Option<DataFrame>, LakeError> {
        let Some(rollups) = &self.rollups else {
            return Ok(None);
        };
        if partitions.is_empty() {
            return Ok(None);
        }
        let days: BTreeSet<NaiveDate> = partitions.keys().map(|key| key.day).collect();
        let files: Vec<LakeFile> = rollups
            .files
            .iter()
            .filter(|f| days.contains(&f.day) && f.rows.may_hold(rows))
            .cloned()
            .collect();
        if files.is_empty() {
            return Ok(None);
        }
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
                    partitions.keys().map(|key| key.tenant_id.as_str()),
                )),
                Arc::new(Date32Array::from_iter_values(
                    partitions.keys().map(|key| days_since_epoch(key.day)),
                )),
                Arc::new(Int64Array::from_iter_values(partitions.values().copied())),
            ],
        )
        .map_err(LakeError::from)?;
        let wanted = self.ctx.read_batch(wanted).map_err(LakeError::from)?;
        let wanted_key: Vec<&str> = wanted_key.iter().map(String::as_str).collect();
        let schema = usage_hourly_schema();
        self.ctx
            .read_table(hourly_table(&rollups.url, files))
            .and_then(|f| f.join(wanted, JoinType::LeftSemi, &key, &wanted_key, None))
            .and_then(|f| select_schema(f, &schema))
            .map(Some)
            .map_err(LakeError::from)
    }

    /// The DataFusion context.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The deduplicated `usage_events` table as a DataFrame.
    pub async fn usage_events(&self) -> Result<DataFrame, LakeError> {
        self.ctx.table(USAGE_EVENTS).await.map_err(LakeError::from)
    }

    /// The `rejected_events` table (all-tenant sessions only).
    pub async fn rejected_events(&self) -> Result<DataFrame, LakeError> {
        self.ctx
            .table(REJECTED_EVENTS)
            .await
            .map_err(LakeError::from)
    }
}

/// Keeps the columns of `schema`, in its order.
fn select_schema(frame: DataFrame, schema: &Schema) -> datafusion::error::Result<DataFrame> {
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    frame.select_columns(&columns)
}

/// Registers the table's object store under its own URL scheme and returns it.
fn register_store(ctx: &SessionContext, files: &TableFiles) -> Result<ObjectStoreUrl, LakeError> {
    let text = format!("allot-{}://lake/", files.table.dir_name().replace('_', "-"));
    let url = Url::parse(&text)?;
    ctx.register_object_store(&url, files.store.clone());
    ObjectStoreUrl::parse(&text).map_err(LakeError::from)
}

fn hourly_table(store: &ObjectStoreUrl, files: Vec<LakeFile>) -> Arc<LakeFilesTable> {
    Arc::new(LakeFilesTable::new(
        usage_hourly_schema(),
        &HOURLY_PARTITION_COLUMNS,
        store.clone(),
        files,
    ))
}

/// `usage_events` of the partitions `keep` selects among `files` (every file of
/// the scope), each row counting under the dedup window.
fn usage_events_frame(
    ctx: &SessionContext,
    files: &[LakeFile],
    store: &ObjectStoreUrl,
    window: DedupWindow,
    keep: impl Fn(&str, NaiveDate) -> bool,
) -> Result<DataFrame, LakeError> {
    let near = Neighbourhoods::of(files, window, keep);
    let alone = ctx
        .read_table(usage_table(store, near.alone.clone()))
        .map_err(LakeError::from)?;
    if near.checked.is_empty() {
        return Ok(alone);
    }
    let counted = checked_rows(ctx, store, &near, window, Outcome::Counted)?;
    alone.union(counted).map_err(LakeError::from)
}
