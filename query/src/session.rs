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

use std::sync::Arc;

use allot_schemas::lake::LakeTable;
use allot_schemas::table_schema::{
    REJECTED_PARTITION_COLUMNS, USAGE_PARTITION_COLUMNS, rejected_events_schema,
    usage_events_schema,
};
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
use crate::lake::{LakeFile, LakeSnapshot, TableFiles};
use crate::provider::LakeFilesTable;

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
}

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
        Ok(LakeSession { ctx })
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

/// Registers the table's object store under its own URL scheme and returns it.
fn register_store(ctx: &SessionContext, files: &TableFiles) -> Result<ObjectStoreUrl, QueryError> {
    let text = format!("allot-{}://lake/", files.table.dir_name().replace('_', "-"));
    let url = Url::parse(&text).map_err(|e| QueryError::Engine(e.to_string()))?;
    ctx.register_object_store(&url, files.store.clone());
    ObjectStoreUrl::parse(&text).map_err(QueryError::engine)
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
    let columns: Vec<String> = usage_events_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
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
        .and_then(|frame| frame.select_columns(&columns))
        .and_then(|frame| once.union(frame))
        .map_err(QueryError::engine)?;
    single_frame.union(first_copies).map_err(QueryError::engine)
}
